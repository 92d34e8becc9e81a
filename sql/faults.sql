-- The seed's rules under fault, driven by hand (the dispatcher serves another
-- database; the test calls its pass, parflow._dispatch(), itself):
-- verification route-back, partial failure, fail_fast, P0 preemption and
-- interrupts, a dispatch pass that fails as a whole, stage timeouts, and
-- error texts too long to keep whole.
CREATE EXTENSION parflow;
SET client_min_messages = warning;
\set SHOW_CONTEXT never

-- claim one task of an agent kind into :tk_task / :tk_token
\set claim 'SELECT task AS tk_task, token AS tk_token, input AS tk_input, attempt AS tk_attempt FROM parflow_claim'

------------------------------------------------------------------------------
-- 1. Route-back: a verification that fails twice, then passes.
------------------------------------------------------------------------------
SELECT parflow_define('rb', '{"groups": [
  {"name": "build", "stages": [
    {"name": "backend",  "agent": "backend",  "estimate": "30 min"},
    {"name": "frontend", "agent": "frontend", "estimate": "20 min"},
    {"name": "build_check", "agent": "ci", "estimate": "5 min", "verifies": "backend", "max_route_backs": 2}]},
  {"name": "qa", "stages": [{"name": "qa", "agent": "qa", "estimate": "10 min"}]}]}');
SELECT parflow_start('rb', parallel => true) AS run \gset
SELECT parflow._dispatch();
:claim('backend', 'b1') \gset
SELECT parflow_complete(:tk_task, :'tk_token', '{"build": 1}');
:claim('frontend', 'f1') \gset
SELECT parflow_complete(:tk_task, :'tk_token', '{"ui": 1}');
SELECT parflow._dispatch();
-- the verification sees the stage it verifies
:claim('ci', 'c1') \gset
SELECT :'tk_input' AS check_input;
SELECT parflow_fail(:tk_task, :'tk_token', 'unit tests: 3 failed', output => '{"failed": ["t1", "t2", "t3"]}');
-- backend is back to ready with a new round; the check waits for it; qa still waits
SELECT stage, state, attempt FROM parflow.tasks WHERE run = :run ORDER BY task;
SELECT parflow._dispatch();
:claim('backend', 'b2') \gset
SELECT :tk_attempt AS backend_attempt, :'tk_input' AS backend_input;
SELECT parflow_complete(:tk_task, :'tk_token', '{"build": 2}');
SELECT parflow._dispatch();
:claim('ci', 'c2') \gset
SELECT :'tk_input'::jsonb->'upstream'->'backend' AS check_sees_new_build;
SELECT parflow_fail(:tk_task, :'tk_token', 'unit tests: 1 failed', false);
SELECT parflow._dispatch();
:claim('backend', 'b3') \gset
SELECT :tk_attempt AS backend_attempt, :'tk_input'::jsonb->'route_back' AS route_back;
SELECT parflow_complete(:tk_task, :'tk_token', '{"build": 3}');
SELECT parflow._dispatch();
SELECT stage, state FROM parflow.tasks WHERE run = :run AND stage = 'qa';
:claim('ci', 'c3') \gset
SELECT parflow_complete(:tk_task, :'tk_token', '{"passed": true}');
SELECT parflow._dispatch();
:claim('qa', 'q1') \gset
SELECT :'tk_input'::jsonb->'upstream' AS qa_upstream;
SELECT parflow_complete(:tk_task, :'tk_token');
SELECT state FROM parflow.runs WHERE run = :run;
-- the event log tells the story: backend ran three times, qa after the last check
SELECT t.stage, e.kind, e.detail->>'round' AS round
  FROM parflow.events e JOIN parflow.tasks t ON t.task = e.task
 WHERE e.run = :run AND e.kind IN ('succeeded', 'route_back', 'routed_back')
 ORDER BY e.event;
SELECT (SELECT max(event) FROM parflow.events e JOIN parflow.tasks t ON t.task = e.task
         WHERE e.run = :run AND t.stage = 'build_check' AND e.kind = 'succeeded')
     < (SELECT min(event) FROM parflow.events e JOIN parflow.tasks t ON t.task = e.task
         WHERE e.run = :run AND t.stage = 'qa' AND e.kind = 'ready') AS qa_waited_for_the_check;

------------------------------------------------------------------------------
-- 2. A verification that never passes: blocked after max_route_backs.
------------------------------------------------------------------------------
SELECT parflow_start('rb', parallel => true) AS run \gset
SELECT parflow._dispatch();
:claim('frontend', 'f1') \gset
SELECT parflow_complete(:tk_task, :'tk_token');
:claim('backend', 'b1') \gset
SELECT parflow_complete(:tk_task, :'tk_token');
SELECT parflow._dispatch();
:claim('ci', 'c1') \gset
SELECT parflow_fail(:tk_task, :'tk_token', 'red 1');
SELECT parflow._dispatch();
:claim('backend', 'b2') \gset
SELECT parflow_complete(:tk_task, :'tk_token');
SELECT parflow._dispatch();
:claim('ci', 'c2') \gset
SELECT parflow_fail(:tk_task, :'tk_token', 'red 2');
SELECT parflow._dispatch();
:claim('backend', 'b3') \gset
SELECT parflow_complete(:tk_task, :'tk_token');
SELECT parflow._dispatch();
:claim('ci', 'c3') \gset
SELECT parflow_fail(:tk_task, :'tk_token', 'red 3');
SELECT state FROM parflow.runs WHERE run = :run;
SELECT stage, state FROM parflow.tasks WHERE run = :run ORDER BY task;
SELECT f->>'stage' AS stage, f->>'attempts' AS attempts, f->>'last_error' AS last_error,
       jsonb_path_query_array(f->'errors', '$[*].why') AS whys
  FROM jsonb_array_elements(parflow_failures(:run)) f;
-- retry gives the verification fresh route-backs
SELECT parflow_retry(:run, 'build_check');
SELECT state FROM parflow.runs WHERE run = :run;
SELECT parflow._dispatch();
:claim('ci', 'c4') \gset
SELECT parflow_fail(:tk_task, :'tk_token', 'red 4');
SELECT stage, state FROM parflow.tasks WHERE run = :run ORDER BY task;
SELECT parflow_cancel(:run);

------------------------------------------------------------------------------
-- 3. Partial failure in a parallel group of four, then retry.
------------------------------------------------------------------------------
SELECT parflow_define('pf', '{"groups": [
  {"name": "four", "stages": [
    {"name": "a", "agent": "a", "estimate": "1 min", "max_attempts": 1},
    {"name": "b", "agent": "b", "estimate": "1 min"},
    {"name": "c", "agent": "c", "estimate": "1 min"},
    {"name": "d", "agent": "d", "estimate": "1 min"}]},
  {"name": "after", "stages": [{"name": "z", "agent": "z", "estimate": "1 min"}]}]}');
SELECT parflow_start('pf', parallel => true) AS run \gset
SELECT parflow._dispatch();
:claim('a', 'wa') \gset
SELECT parflow_fail(:tk_task, :'tk_token', 'boom');
SELECT state FROM parflow.runs WHERE run = :run;
:claim('b', 'wb') \gset
SELECT parflow_complete(:tk_task, :'tk_token');
:claim('c', 'wc') \gset
SELECT parflow_complete(:tk_task, :'tk_token');
SELECT state FROM parflow.runs WHERE run = :run;
:claim('d', 'wd') \gset
SELECT parflow_complete(:tk_task, :'tk_token');
SELECT state FROM parflow.runs WHERE run = :run;
SELECT stage, state FROM parflow.tasks WHERE run = :run ORDER BY task;
SELECT jsonb_array_length(parflow_failures(:run)) AS failures,
       parflow_failures(:run)->0->>'stage' AS stage, parflow_failures(:run)->0->>'last_error' AS error;
-- the blocked announcement carried the same report
SELECT detail->'failures'->0->>'stage' AS announced FROM parflow.events WHERE run = :run AND kind = 'run_blocked';
SELECT parflow_retry(:run, 'a');
SELECT parflow._dispatch();
:claim('a', 'wa2') \gset
SELECT :tk_attempt AS attempt_after_retry;
SELECT parflow_complete(:tk_task, :'tk_token');
SELECT parflow._dispatch();
:claim('z', 'wz') \gset
SELECT parflow_complete(:tk_task, :'tk_token');
SELECT state FROM parflow.runs WHERE run = :run;

------------------------------------------------------------------------------
-- 4. fail_fast: the rest of the group is not dispatched once one fails.
------------------------------------------------------------------------------
SELECT parflow_define('ff', '{"max_parallel": 2, "groups": [
  {"name": "four", "on_failure": "fail_fast", "stages": [
    {"name": "a", "agent": "a", "estimate": "4 min", "max_attempts": 1},
    {"name": "b", "agent": "b", "estimate": "3 min"},
    {"name": "c", "agent": "c", "estimate": "2 min"},
    {"name": "d", "agent": "d", "estimate": "1 min"}]}]}');
SELECT parflow_start('ff', parallel => true) AS run \gset
SELECT parflow._dispatch();
:claim('b', 'wb') \gset
\set b_task :tk_task
\set b_token :tk_token
:claim('a', 'wa') \gset
SELECT parflow_fail(:tk_task, :'tk_token', 'boom', false);
SELECT parflow._dispatch() AS dispatched_after_fail_fast;
SELECT stage, state FROM parflow.tasks WHERE run = :run ORDER BY task;
SELECT state FROM parflow.runs WHERE run = :run;
-- the task at work finishes; then nothing is left and the run is blocked
SELECT parflow_complete(:b_task, :'b_token');
SELECT state FROM parflow.runs WHERE run = :run;
-- restarting the group re-opens the failed and the cancelled stages
SELECT parflow_restart_group(:run, 'four');
SELECT stage, state FROM parflow.tasks WHERE run = :run ORDER BY task;
SELECT parflow_cancel(:run);

------------------------------------------------------------------------------
-- 5. P0 preemption: a P2 run fills the cap, a P0 run arrives.
------------------------------------------------------------------------------
-- (parflow.max_parallel_stages is 4 here: the P2 run takes all four slots)
SELECT current_setting('parflow.max_parallel_stages') AS cap;
SELECT parflow_define('wide', '{"groups": [{"name": "g", "stages": [
    {"name": "s1", "agent": "w", "estimate": "10 min"},
    {"name": "s2", "agent": "w", "estimate": "10 min"},
    {"name": "s3", "agent": "w", "estimate": "10 min"},
    {"name": "s4", "agent": "w", "estimate": "10 min"},
    {"name": "s5", "agent": "w", "estimate": "10 min"},
    {"name": "s6", "agent": "w", "estimate": "10 min"}]}]}');
SELECT parflow_define('urgent', '{"groups": [{"name": "g", "stages": [
    {"name": "hotfix", "agent": "w", "estimate": "5 min"}]}]}');
SELECT parflow_start('wide', priority => 2, parallel => true) AS low \gset
SELECT parflow._dispatch();
:claim('w', 'w1') \gset
:claim('w', 'w2') \gset
:claim('w', 'w3') \gset
:claim('w', 'w4') \gset
SELECT parflow_start('urgent', priority => 0, parallel => true) AS hi \gset
-- the pass interrupts one running task (the last one started) and dispatches nothing yet
SELECT parflow._dispatch() AS dispatched;
SELECT t.stage, t.worker, e.kind FROM parflow.events e JOIN parflow.tasks t ON t.task = e.task
 WHERE e.kind = 'interrupt' AND t.run = :low;
-- a second pass does not interrupt again
SELECT parflow._dispatch() AS dispatched;
SELECT count(*) AS interrupts FROM parflow.events WHERE run = :low AND kind = 'interrupt';
-- the agent gives it back: not a failed attempt; the P0 task takes the slot
SELECT parflow_release(:tk_task, :'tk_token');
SELECT parflow._dispatch() AS dispatched;
SELECT r.priority, t.stage, t.state, t.attempt FROM parflow.tasks t JOIN parflow.runs r USING (run)
 WHERE t.run IN (:low, :hi) ORDER BY t.task;
SELECT e.detail->>'interrupted' AS released_after_interrupt FROM parflow.events e
 WHERE e.task = :tk_task AND e.kind = 'released';
:claim('w', 'w5') \gset
SELECT parflow_complete(:tk_task, :'tk_token');
SELECT state FROM parflow.runs WHERE run = :hi;
-- the interrupted stage is dispatched again once the P0 run is done
SELECT parflow._dispatch() AS dispatched;
:claim('w', 'w6') \gset
SELECT stage, attempt FROM parflow.tasks WHERE task = :tk_task;
-- An agent that ignores the interrupt loses the task after parflow.interrupt_grace.
SELECT parflow_start('urgent', priority => 0, parallel => true) AS hi2 \gset
SET parflow.interrupt_grace = '10ms';
SELECT parflow._dispatch() AS dispatched;
SELECT pg_sleep(0.05);
SELECT parflow._dispatch() AS dispatched;
SELECT e.kind FROM parflow.events e WHERE e.task = :tk_task AND e.kind LIKE 'interrupt%' ORDER BY e.event;
\set VERBOSITY terse
SELECT parflow_complete(:tk_task, :'tk_token');
\set VERBOSITY default
RESET parflow.interrupt_grace;
SELECT t.stage, t.state, t.attempt FROM parflow.tasks t WHERE t.task = :tk_task;
SELECT stage, state FROM parflow.tasks WHERE run = :hi2;
SELECT parflow_cancel(:hi2);
SELECT parflow_cancel(:low);
-- Only P0 preempts: a P1 run waits for a P2 run's slots.
SELECT parflow_start('wide', priority => 2, parallel => true) AS a \gset
SELECT parflow._dispatch();
SELECT parflow_start('wide', priority => 1, parallel => true) AS b \gset
SELECT parflow._dispatch();
SELECT count(*) AS interrupts FROM parflow.events WHERE run = :a AND kind IN ('interrupt', 'preempted');
-- Dispatched but unclaimed P2 tasks are taken back at once for a P0 run.
SELECT parflow_start('urgent', priority => 0, parallel => true) AS hi3 \gset
SELECT parflow._dispatch() AS dispatched;
SELECT count(*) AS preempted FROM parflow.events e WHERE e.kind = 'preempted' AND e.run = :a;
SELECT stage, state FROM parflow.tasks WHERE run = :hi3;
SELECT parflow_cancel(:a);
SELECT parflow_cancel(:b);
SELECT parflow_cancel(:hi3);

-- A P0 task held back by an affinity rule of its own run makes no room:
-- interrupting would only hand the slot back to a lower priority, again and again.
SELECT parflow_define('urgent_pair', '{"affinity": [{"agents": ["w"], "max_concurrent": 1}],
  "groups": [{"name": "g", "stages": [
    {"name": "fix1", "agent": "w", "estimate": "5 min"}, {"name": "fix2", "agent": "w", "estimate": "5 min"}]}]}');
SELECT parflow_start('wide', priority => 2, parallel => true) AS low \gset
SELECT parflow._dispatch();
:claim('w', 'w1') \gset
:claim('w', 'w2') \gset
:claim('w', 'w3') \gset
SELECT parflow_start('urgent_pair', priority => 0, parallel => true) AS hi4 \gset
-- the rule lets one of them through: the unclaimed P2 task makes room for
-- fix1; fix2 waits for the rule, and no running task is interrupted
SELECT parflow._dispatch() AS dispatched;
SELECT parflow._dispatch() AS dispatched;
SELECT kind, count(*) FROM parflow.events WHERE run = :low AND kind IN ('interrupt', 'preempted') GROUP BY kind;
SELECT stage, state FROM parflow.tasks WHERE run = :hi4 ORDER BY task;
SELECT parflow_cancel(:hi4);
SELECT parflow_cancel(:low);

------------------------------------------------------------------------------
-- 6. A dispatch pass that cannot finish rolls back as a whole: no task is
--    marked dispatched without its notification.
------------------------------------------------------------------------------
SELECT parflow_start('pf', parallel => true) AS run \gset
CREATE FUNCTION pg_temp.broken() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind = 'dispatched' THEN
        RAISE EXCEPTION 'simulated infrastructure failure';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER broken BEFORE INSERT ON parflow.event FOR EACH ROW EXECUTE FUNCTION pg_temp.broken();
SELECT parflow._dispatch();
SELECT state, count(*) FROM parflow.tasks WHERE run = :run GROUP BY state ORDER BY state;
DROP TRIGGER broken ON parflow.event;
SELECT parflow._dispatch() AS dispatched_once_repaired;
SELECT parflow_cancel(:run);

------------------------------------------------------------------------------
-- A stage's timeout bounds each attempt from its claim: the pass ends an
-- attempt that ran longer (retry with backoff, then failed for good), the
-- late agent's token is refused, and a stage without timeout runs on.
-- (Attempts are made old by moving started_at back.)
SELECT parflow_define('slow', '{"groups": [{"name": "g", "stages": [
    {"name": "bounded", "agent": "tw", "estimate": "1 min", "timeout": "10 min", "max_attempts": 2, "retry_backoff": "0 s"},
    {"name": "free", "agent": "tw2", "estimate": "1 min"}]}]}');
SELECT parflow_start('slow', parallel => true) AS run \gset
SELECT parflow._dispatch();
:claim('tw', 'tw-1') \gset
SELECT task AS free_task, token AS free_token FROM parflow_claim('tw2', 'tw2-1') \gset
UPDATE parflow.task SET started_at = started_at - interval '9 min' WHERE run_id = :run;
SELECT parflow._dispatch() AS nothing_within_the_timeout;
SELECT state FROM parflow.tasks WHERE task = :tk_task;
UPDATE parflow.task SET started_at = started_at - interval '2 min' WHERE run_id = :run;
SELECT parflow._dispatch() AS redispatched;
SELECT e.kind, e.detail->>'why' AS why, e.detail->>'error' AS error
  FROM parflow.events e WHERE e.task = :tk_task AND e.kind IN ('retry', 'failed');
\set VERBOSITY terse
SELECT parflow_complete(:tk_task, :'tk_token', '{}');
\set VERBOSITY default
:claim('tw', 'tw-2') \gset
SELECT :tk_attempt AS second_attempt;
UPDATE parflow.task SET started_at = started_at - interval '11 min' WHERE id = :tk_task;
SELECT parflow._dispatch();
SELECT t.stage, t.state, t.attempt, tk.error FROM parflow.tasks t JOIN parflow.task tk ON tk.id = t.task WHERE t.run = :run ORDER BY t.task;
SELECT parflow_complete(:free_task, :'free_token', '{}');
SELECT state FROM parflow.runs WHERE run = :run;

------------------------------------------------------------------------------
-- An error text of a whole log: its first and last 32,768 characters are
-- kept, with a marker between; the failure itself is never refused (before
-- 0.3.0 the run's blocked announcement, a NOTIFY carrying the errors, was
-- too long and failed it).
SELECT parflow_define('loud', '{"groups": [{"name": "g", "stages": [
    {"name": "l", "agent": "tl", "estimate": "1 min", "max_attempts": 1}]}]}');
SELECT parflow_start('loud', parallel => true) AS run \gset
SELECT parflow._dispatch();
:claim('tl', 'tl-1') \gset
SELECT parflow_fail(:tk_task, :'tk_token', 'BEGIN' || repeat('x', 100000) || 'END');
SELECT length(tk.error) AS kept, left(tk.error, 5) AS head, right(tk.error, 3) AS tail,
       tk.error LIKE '%[... 34472 characters cut ...]%' AS marked,
       (SELECT e.detail->>'error' FROM parflow.event e WHERE e.task_id = tk.id AND e.kind = 'failed') = tk.error AS same_in_event
  FROM parflow.task tk WHERE tk.id = :tk_task;
-- the run is blocked; its announcement would not fit in a NOTIFY payload
-- (it went out marked truncated), its event has the whole report
SELECT state FROM parflow.runs WHERE run = :run;
SELECT length(e.detail->'failures'->0->>'last_error') AS reported
  FROM parflow.event e WHERE e.run_id = :run AND e.kind = 'run_blocked';
DROP EXTENSION parflow;
