-- Wait stages: a stage that awaits an event instead of an agent (state
-- awaiting), parflow_signal (kept when nothing awaits yet), parflow_reject
-- (a verifying wait stage sends its stage back), timeouts enforced by the
-- pass, who may signal, the planner's view of them, and every refusal.
-- The dispatcher serves another database: the test calls the pass itself.
CREATE EXTENSION parflow;
SET client_min_messages = warning;
\set SHOW_CONTEXT never
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text; m text; d text; h text;
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
    RETURN st || ': ' || m || CASE WHEN d <> '' THEN E'\n  DETAIL: ' || d ELSE '' END
                           || CASE WHEN h <> '' THEN E'\n  HINT: ' || h ELSE '' END;
END
$$;
-- A stage spec, a one-group workflow of them, and a run's task states.
CREATE FUNCTION pg_temp.wf(VARIADIC stages jsonb[]) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('groups', jsonb_build_array(jsonb_build_object('name', 'g', 'stages', to_jsonb(stages))))
$$;
CREATE FUNCTION pg_temp.states(r bigint) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(stage || '=' || state, ' ' ORDER BY task) FROM parflow.tasks WHERE run = r
$$;
-- Claim and complete every dispatched task of an agent kind.
CREATE FUNCTION pg_temp.work(a text, out_doc jsonb DEFAULT '{}') RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    c record;
    n integer := 0;
BEGIN
    PERFORM parflow._dispatch();
    FOR c IN SELECT * FROM parflow_claim(a, 'w', '5 min', 100) LOOP
        PERFORM parflow_complete(c.task, c.token, out_doc);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;

-- Definitions: what a wait stage is, and every refusal.
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a"}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "agent": "x", "estimate": "1 min", "wait": {"event": "e"}}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "agent": "x"}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "wait": "e"}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "wait": {}}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "wait": {"event": "e", "timout": "1 h"}}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "wait": {"event": " "}}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "wait": {"event": "*"}}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "wait": {"event": 7}}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "wait": {"event": "e", "timeout": "soon"}}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "wait": {"event": "e", "timeout": "0 s"}}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "wait": {"event": "e", "on_timeout": "skip"}}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "wait": {"event": "e", "timeout": "1 h", "on_timeout": "retry"}}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "wait": {"event": "e"}, "timeout": "1 h"}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "wait": {"event": "e"}, "max_attempts": 2}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "wait": {"event": "e"}, "estimate": "-1 min"}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "wait": {"event": "e"}}',
                                                               '{"name": "b", "agent": "x", "estimate": "1 min", "verifies": "a"}')) $$);
SELECT count(*) AS nothing_written FROM parflow.workflow;

-- The plan: a wait stage takes its estimate (or no time, and says so), but
-- no slot: two parallel approvals beside two builds under a cap of 2.
SELECT parflow_define('approve', '{"max_parallel": 2, "groups": [
  {"name": "design", "stages": [{"name": "research", "agent": "research", "estimate": "10 min"}]},
  {"name": "signoff", "stages": [{"name": "approve", "wait": {"event": "design_approved", "timeout": "2 days"}}]},
  {"name": "build", "stages": [
     {"name": "backend", "agent": "backend", "estimate": "20 min"},
     {"name": "frontend", "agent": "frontend", "estimate": "20 min"},
     {"name": "legal", "wait": {"event": "legal_ok"}, "estimate": "30 min"},
     {"name": "code_review", "wait": {"event": "review"}, "verifies": "backend", "estimate": "5 min"}]}]}') > 0 AS defined;
SET client_min_messages = notice;
SELECT stage, agent, est_start, est_finish, critical FROM parflow_plan('approve');
SELECT sequential, parallel, critical_path, lower_bound, optimal FROM parflow_estimate('approve');
SET client_min_messages = warning;
SELECT s.name, s.agent, s.estimate, s.wait_event, s.wait_timeout, s.wait_on_timeout FROM parflow.stage s ORDER BY s.ord;

-- A run: the approval awaits once research is done, announced with its event.
SELECT parflow_start('approve', parallel => true) AS r \gset
SELECT pg_temp.work('research', '{"design": "v1"}');
SELECT pg_temp.states(:r);
SELECT regexp_replace(why, '\d{4}-\d\d-\d\d [0-9:.+]+|\w{3} \w{3} \d\d [0-9:.]+ \d{4} \w+', 'T', 'g') AS why
  FROM parflow.waiting WHERE run = :r AND stage = 'approve';
SELECT kind, detail FROM parflow.events WHERE run = :r AND kind = 'awaiting';
-- nothing dispatches it, and the run is not blocked while it awaits
SELECT parflow._dispatch() AS dispatched, pg_temp.states(:r);

-- Refusals of parflow_signal, which change nothing.
SELECT pg_temp.err($$ SELECT parflow_signal(NULL, 'design_approved') $$);
SELECT pg_temp.err($$ SELECT parflow_signal(1, NULL) $$);
SELECT pg_temp.err($$ SELECT parflow_signal(1, '  ') $$);
SELECT pg_temp.err($$ SELECT parflow_signal(424242, 'design_approved') $$);
SELECT pg_temp.err(format($$ SELECT parflow_signal(%s, 'design_aproved') $$, :r));
SET parflow.max_output_size = '1kB';
SELECT pg_temp.err(format($$ SELECT parflow_signal(%s, 'design_approved', to_jsonb(repeat('x', 2000))) $$, :r));
RESET parflow.max_output_size;
SELECT pg_temp.err($$ SELECT parflow_reject(1, 'design_approved', NULL) $$);
SELECT pg_temp.err($$ SELECT parflow_reject(1, 'design_approved', ' ') $$);
SELECT pg_temp.states(:r);

-- The signal completes it with its payload; dependents see it as upstream.
SELECT parflow_signal(:r, 'design_approved', '{"approved_by": "alice"}') AS released;
SELECT pg_temp.states(:r);
SELECT parflow._dispatch();
SELECT stage, input -> 'upstream' -> 'approve' AS approval FROM parflow_claim('backend', 'w') \gset
SELECT :'stage', :'approval';
-- a signal that finds none awaiting is kept (0), and the next to await takes it
SELECT parflow_signal(:r, 'review', '{"lgtm": true}') AS released_early;
SELECT parflow_complete(tk.id, tk.token) FROM parflow.task tk WHERE tk.run_id = :r AND tk.state = 'running';
SELECT pg_temp.states(:r);
SELECT count(*) AS kept_left FROM parflow.signal WHERE run_id = :r;
SELECT kind, detail - 'by' AS detail FROM parflow.events WHERE run = :r AND kind IN ('signal_kept') ;
SELECT pg_temp.work('frontend');
-- two kinds of end: legal signs off; the run succeeds
SELECT parflow_signal(:r, 'legal_ok');
SELECT state FROM parflow.runs WHERE run = :r;
SELECT pg_temp.err(format($$ SELECT parflow_signal(%s, 'legal_ok') $$, :r));

-- A rejection of a verifying wait stage sends the verified stage back.
SELECT parflow_start('approve', parallel => true) AS r2 \gset
SELECT pg_temp.work('research'), parflow_signal(:r2, 'design_approved'), parflow_signal(:r2, 'legal_ok');
SELECT pg_temp.work('backend', '{"code": 1}'), pg_temp.work('frontend');
SELECT pg_temp.states(:r2);
SELECT parflow_reject(:r2, 'review', 'needs tests') AS rejected;
SELECT pg_temp.states(:r2);
SELECT parflow._dispatch();
SELECT (input -> 'route_back') - 'output'::text AS route_back, task, token FROM parflow_claim('backend', 'w') \gset
SELECT :'route_back';
-- a rejection is not kept: nothing awaits now
SELECT parflow_reject(:r2, 'review', 'still no tests') AS rejected_nothing;
SELECT parflow_complete(:task, :'token', '{"code": 2}');
SELECT pg_temp.states(:r2);
SELECT parflow_signal(:r2, 'review');
SELECT state FROM parflow.runs WHERE run = :r2;

-- A rejection of a plain wait stage fails it for good: the run blocks, and
-- parflow_retry makes it await again.
SELECT parflow_start('approve', parallel => true) AS r3 \gset
SELECT pg_temp.work('research');
SELECT parflow_reject(:r3, 'design_approved', 'out of scope');
SELECT pg_temp.states(:r3), (SELECT state FROM parflow.runs WHERE run = :r3);
SELECT jsonb_path_query(parflow_failures(:r3), '$[*].last_error') AS last_error;
SELECT parflow_signal(:r3, 'design_approved') AS kept_for_retry;
SELECT parflow_retry(:r3, 'approve');
SELECT pg_temp.states(:r3), (SELECT state FROM parflow.runs WHERE run = :r3);

-- Cancelling a run cancels its awaiting stages; a finished run takes no signal.
SELECT parflow_start('approve', parallel => true) AS r4 \gset
SELECT pg_temp.work('research');
SELECT parflow_cancel(:r4);
SELECT pg_temp.states(:r4);
SELECT pg_temp.err(format($$ SELECT parflow_reject(%s, 'design_approved', 'late') $$, :r4));

-- Timeouts, enforced by the pass: fail, or skip (which satisfies dependents).
SELECT parflow_define('timed', '{"groups": [
  {"name": "a", "stages": [{"name": "ok", "wait": {"event": "go", "timeout": "50 ms", "on_timeout": "skip"}},
                           {"name": "must", "wait": {"event": "sure", "timeout": "50 ms"}},
                           {"name": "after", "agent": "x", "estimate": "1 min", "depends_on": ["ok"]}]}]}') > 0 AS defined;
SELECT parflow_start('timed', parallel => true) AS t1 \gset
SELECT pg_temp.states(:t1);
SELECT pg_sleep(0.1);
SELECT parflow._dispatch();
SELECT pg_temp.states(:t1), (SELECT state FROM parflow.runs WHERE run = :t1);
SELECT t.stage, tk.error FROM parflow.task tk JOIN parflow.tasks t ON t.task = tk.id WHERE t.run = :t1 ORDER BY t.task;
SELECT pg_temp.work('x');
SELECT state FROM parflow.runs WHERE run = :t1;

-- Sub-workflows: a stage that runs another workflow as a child run.
SELECT parflow_define('qa_suite', '{"groups": [{"name": "qa", "stages": [{"name": "qa", "agent": "qa", "estimate": "15 min"}]}]}') > 0 AS defined;
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "workflow": "qa_suit"}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "workflow": "bad"}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "workflow": "qa_suite", "agent": "x"}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "workflow": "qa_suite", "wait": {"event": "e"}}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "workflow": "qa_suite", "max_attempts": 2}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "workflow": 7}')) $$);
SELECT parflow_define('cyc_a', pg_temp.wf('{"name": "a", "agent": "x", "estimate": "1 min"}')) > 0 AS defined;
SELECT parflow_define('cyc_b', pg_temp.wf('{"name": "b", "workflow": "cyc_a"}')) > 0 AS defined;
SELECT pg_temp.err($$ SELECT parflow_define('cyc_a', pg_temp.wf('{"name": "a", "workflow": "cyc_b"}')) $$);
SELECT parflow_define('feature', '{"groups": [
  {"name": "build", "stages": [{"name": "build", "agent": "backend", "estimate": "30 min"}]},
  {"name": "check", "stages": [{"name": "qa", "workflow": "qa_suite"}]},
  {"name": "ship", "stages": [{"name": "ship", "agent": "devops", "estimate": "5 min"}]}]}') > 0 AS defined;
-- qa has no estimate: it is planned as qa_suite's plan (15 min)
SET client_min_messages = notice;
SELECT stage, agent, est_start, est_finish FROM parflow_plan('feature');
SET client_min_messages = warning;
SELECT parflow_start('feature', '{fast}', 1, true, '{"ticket": 7}') AS f1 \gset
SELECT pg_temp.work('backend', '{"artifact": "b1"}');
SELECT pg_temp.states(:f1);
SELECT run AS c1 FROM parflow.runs WHERE parent_run = :f1 \gset
SELECT workflow, state, priority, parallel, flags, parent_run = :f1 AS of_f1, parent_stage FROM parflow.runs WHERE run = :c1;
SELECT regexp_replace(regexp_replace(why, 'since .*', 'since T'), 'run \d+', 'run N') AS why
  FROM parflow.waiting WHERE run = :f1;
SELECT parflow._dispatch();
SELECT input -> 'ticket' AS ticket, input -> 'upstream' AS upstream FROM parflow_claim('qa', 'w') \gset
SELECT :'ticket', :'upstream';
SELECT parflow_complete(tk.id, tk.token, '{"passed": 12}') FROM parflow.task tk WHERE tk.run_id = :c1 AND tk.state = 'running';
SELECT state FROM parflow.runs WHERE run = :c1;
-- the pass hands the child's end to its parent
SELECT pg_temp.states(:f1);
SELECT parflow._dispatch();
SELECT pg_temp.states(:f1);
SELECT output -> 'state' AS state, output -> 'outputs' AS outputs FROM parflow.task tk
 WHERE tk.run_id = :f1 AND tk.stage_ord = 1;
SELECT pg_temp.work('devops');
SELECT state FROM parflow.runs WHERE run = :f1;

-- A blocked child fails its stage; parflow_retry of the stage retries the child's failed stages.
SELECT parflow_start('feature', parallel => true) AS f2 \gset
SELECT pg_temp.work('backend');
SELECT run AS c2 FROM parflow.runs WHERE parent_run = :f2 \gset
SELECT parflow._dispatch();
SELECT parflow_fail(task, token, 'flaky suite', false) FROM parflow_claim('qa', 'w');
SELECT state FROM parflow.runs WHERE run = :c2;
SELECT parflow._dispatch();
SELECT pg_temp.states(:f2), (SELECT state FROM parflow.runs WHERE run = :f2);
SELECT jsonb_path_query(parflow_failures(:f2), '$[*].last_error') AS last_error;
SELECT parflow_retry(:f2, 'qa');
SELECT pg_temp.states(:f2), (SELECT state FROM parflow.runs WHERE run = :f2) AS parent,
       (SELECT state FROM parflow.runs WHERE run = :c2) AS child,
       (SELECT count(*) FROM parflow.runs WHERE parent_run = :f2) AS children;
SELECT pg_temp.work('qa');
SELECT parflow._dispatch();
SELECT pg_temp.states(:f2);

-- Pausing or cancelling the parent does the same to its child; a child cancelled alone fails its stage.
SELECT parflow_start('feature', parallel => true) AS f3 \gset
SELECT pg_temp.work('backend');
SELECT run AS c3 FROM parflow.runs WHERE parent_run = :f3 \gset
SELECT parflow_pause(:f3);
SELECT state FROM parflow.runs WHERE run = :c3;
SELECT parflow_resume(:f3);
SELECT state FROM parflow.runs WHERE run = :c3;
SELECT parflow_cancel(:f3);
SELECT state FROM parflow.runs WHERE run = :c3;
SELECT parflow_start('feature', parallel => true) AS f4 \gset
SELECT pg_temp.work('backend');
SELECT run AS c4 FROM parflow.runs WHERE parent_run = :f4 \gset
SELECT parflow_cancel(:c4);
SELECT parflow._dispatch();
SELECT pg_temp.states(:f4), (SELECT state FROM parflow.runs WHERE run = :f4);
SELECT parflow_cancel(:f4);

-- Map stages: one task per element of an array another stage's output holds.
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "agent": "x", "estimate": "1 min"}',
    '{"name": "b", "wait": {"event": "e"}, "map": {"over": "a"}, "depends_on": ["a"]}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "agent": "x", "estimate": "1 min"}',
    '{"name": "b", "agent": "x", "estimate": "1 min", "map": {"key": "k"}, "depends_on": ["a"]}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "agent": "x", "estimate": "1 min"}',
    '{"name": "b", "agent": "x", "estimate": "1 min", "map": {"over": "aa"}, "depends_on": ["a"]}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "agent": "x", "estimate": "1 min"}',
    '{"name": "b", "agent": "x", "estimate": "1 min", "map": {"over": "b"}, "depends_on": ["a"]}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "agent": "x", "estimate": "1 min"}',
    '{"name": "b", "agent": "x", "estimate": "1 min", "map": {"over": "a"}}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "agent": "x", "estimate": "1 min"}',
    '{"name": "b", "agent": "x", "estimate": "1 min", "map": {"over": "a", "max": 20000}, "depends_on": ["a"]}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "agent": "x", "estimate": "1 min"}',
    '{"name": "b", "agent": "x", "estimate": "1 min", "map": {"over": "a", "max": 5, "expect": 6}, "depends_on": ["a"]}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "agent": "x", "estimate": "1 min"}',
    '{"name": "b", "agent": "x", "estimate": "1 min", "map": {"over": "a", "key": " "}, "depends_on": ["a"]}')) $$);
SELECT pg_temp.err($$ SELECT parflow_define('bad', pg_temp.wf('{"name": "a", "agent": "x", "estimate": "1 min"}',
    '{"name": "b", "agent": "x", "estimate": "1 min", "map": {"over": "a"}, "depends_on": ["a"]}',
    '{"name": "c", "agent": "x", "estimate": "1 min", "verifies": "b"}')) $$);
SELECT parflow_define('split', '{"groups": [
  {"name": "plan", "stages": [{"name": "research", "agent": "mr", "estimate": "10 min"}]},
  {"name": "work", "stages": [{"name": "impl", "agent": "mb", "estimate": "10 min",
                               "map": {"over": "research", "key": "subtasks", "max": 6, "expect": 6}}]},
  {"name": "done", "stages": [{"name": "merge", "agent": "mm", "estimate": "5 min"}]}]}') > 0 AS defined;
-- planned as 6 instances of 10 min under the cap of 4: two rounds
SELECT stage, est_start, est_finish FROM parflow_plan('split');

-- three elements: three instances, each with its item and index; the
-- dependents see the outputs in index order, whatever order they came in
-- (the earlier runs are cancelled: their tasks at work would hold slots)
SELECT count(parflow_cancel(run)) >= 0 AS cleared FROM parflow.runs WHERE state IN ('running', 'paused', 'blocked');
SELECT parflow_start('split', parallel => true) AS m1 \gset
SELECT pg_temp.work('mr', '{"subtasks": ["auth", {"svc": "billing"}, 7]}');
SELECT stage, state, agent, item FROM parflow.tasks WHERE run = :m1 ORDER BY task;
SELECT item, why FROM parflow.waiting WHERE run = :m1 AND stage = 'impl' ORDER BY task;
SELECT parflow._dispatch();
CREATE TEMP TABLE held AS SELECT * FROM parflow_claim('mb', 'w', '5 min', 10);
SELECT stage, item, input -> 'item' AS elem, input -> 'index' AS idx, input -> 'upstream' ? 'research' AS sees_research
  FROM held ORDER BY item;
SELECT parflow_complete(task, token, jsonb_build_object('done', item)) FROM held WHERE item = 2;
SELECT * FROM parflow_complete_many((SELECT array_agg(task ORDER BY item DESC) FROM held WHERE item < 2),
                                    (SELECT array_agg(token ORDER BY item DESC) FROM held WHERE item < 2),
                                    (SELECT array_agg(jsonb_build_object('done', item) ORDER BY item DESC) FROM held WHERE item < 2));
SELECT pg_temp.states(:m1);
SELECT output FROM parflow.task WHERE run_id = :m1 AND stage_ord = 1 AND item IS NULL;
SELECT parflow._dispatch();
SELECT input -> 'upstream' -> 'impl' AS impl FROM parflow_claim('mm', 'w');
DROP TABLE held;

-- drawn: a map stage twice in DOT, its instances one Gantt row each; a wait
-- stage a diamond, a sub-workflow stage a box3d (D: the planned duration,
-- learned from the runs above, and whether it is critical, left out)
SELECT regexp_replace(regexp_replace(line, ', [0-9][0-9a-z.]*"', ', D"'), ', color=red, penwidth=2', '') AS line
  FROM regexp_split_to_table(parflow_dot('split'), E'\n') line WHERE line ~ 'impl';
SELECT regexp_replace(regexp_replace(line, ', [0-9][0-9a-z.]*"', ', D"'), ', color=red, penwidth=2', '') AS line
  FROM regexp_split_to_table(parflow_dot('approve'), E'\n') line WHERE line ~ 'diamond';
SELECT regexp_replace(regexp_replace(line, ', [0-9][0-9a-z.]*"', ', D"'), ', color=red, penwidth=2', '') AS line
  FROM regexp_split_to_table(parflow_dot('feature'), E'\n') line WHERE line ~ 'box3d';
SELECT count(*) AS gantt_instance_rows FROM parflow_gantt(:m1) g WHERE g ~ '^impl\[[0-9]\]';
-- parflow_report's plan counts the 3 instances it ran (25 min), where the
-- plan at its start counted on 6 (35 min); without learned estimates
SET parflow.learn_min_runs = 0;
SELECT planned, (SELECT planned FROM parflow.run WHERE id = :m1) AS at_start FROM parflow_report(:m1);
RESET parflow.learn_min_runs;

-- an empty array succeeds at once with []; too many, or not an array, fails the stage
SELECT parflow_start('split', parallel => true) AS m2 \gset
SELECT pg_temp.work('mr', '{"subtasks": []}');
SELECT pg_temp.states(:m2), (SELECT output FROM parflow.task WHERE run_id = :m2 AND stage_ord = 1);
SELECT parflow_start('split', parallel => true) AS m3 \gset
SELECT pg_temp.work('mr', '{"subtasks": [1, 2, 3, 4, 5, 6, 7]}');
SELECT parflow_start('split', parallel => true) AS m4 \gset
SELECT pg_temp.work('mr', '{"subtasks": {"a": 1}}');
SELECT parflow_start('split', parallel => true) AS m5 \gset
SELECT pg_temp.work('mr', '{"other": 1}');
SET parflow.max_map_width = 2;
SELECT parflow_start('split', parallel => true) AS m6 \gset
SELECT pg_temp.work('mr', '{"subtasks": [1, 2, 3]}');
RESET parflow.max_map_width;
SELECT t.run, t.state, tk.error FROM parflow.tasks t JOIN parflow.task tk ON tk.id = t.task
 WHERE t.run IN (:m3, :m4, :m5, :m6) AND t.stage = 'impl' ORDER BY t.run;
SELECT count(*) AS no_instances FROM parflow.tasks WHERE run IN (:m2, :m3, :m4, :m5, :m6) AND item IS NOT NULL;

-- an instance that fails for good: the others go on, the dependents never
-- start, the run blocks; parflow_retry re-opens the failed instance
SELECT parflow_start('split', parallel => true) AS m7 \gset
SELECT pg_temp.work('mr', '{"subtasks": ["x", "y"]}');
SELECT parflow._dispatch();
CREATE TEMP TABLE held AS SELECT * FROM parflow_claim('mb', 'w', '5 min', 10);
SELECT parflow_fail(task, token, 'cannot build y', false) FROM held WHERE item = 1;
SELECT parflow_complete(task, token, '{"ok": 0}') FROM held WHERE item = 0;
DROP TABLE held;
SELECT pg_temp.states(:m7), (SELECT state FROM parflow.runs WHERE run = :m7);
SELECT jsonb_path_query(parflow_failures(:m7), '$[*] ? (@.item == 1).last_error') AS instance_error;
SELECT item, why FROM parflow.waiting WHERE run = :m7 AND stage = 'impl' ORDER BY task;
SELECT parflow_retry(:m7, 'impl');
SELECT pg_temp.states(:m7), (SELECT state FROM parflow.runs WHERE run = :m7);
SELECT pg_temp.work('mb', '{"ok": 1}');
SELECT pg_temp.work('mm');
SELECT state FROM parflow.runs WHERE run = :m7;
SELECT stage, item, state FROM parflow.tasks WHERE run = :m7 ORDER BY task;
-- once it expanded in parflow.learn_min_runs runs (3, 0 and 2 instances), the
-- plan counts on the median width instead of expect
SELECT o.stage_ord, o.samples, o.width
  FROM parflow._observed_width((SELECT max(id) FROM parflow.workflow_version
                                 WHERE workflow_id = (SELECT id FROM parflow.workflow WHERE name = 'split'))) o;

-- Who may signal: operators, and roles given events (* for all).
CREATE ROLE pf_wait_bot LOGIN;
CREATE ROLE pf_wait_ci LOGIN;
SELECT parflow_start('approve', parallel => true) AS r5 \gset
SELECT pg_temp.work('research');
GRANT USAGE ON SCHEMA parflow TO pf_wait_bot;
SET ROLE pf_wait_bot;
SELECT pg_temp.err(format($$ SELECT parflow_signal(%s, 'design_approved') $$, :r5));
RESET ROLE;
SELECT parflow_allow_signal('pf_wait_bot', 'legal_ok');
SELECT parflow_allow_signal('pf_wait_ci', '*');
SET ROLE pf_wait_bot;
SELECT pg_temp.err(format($$ SELECT parflow_signal(%s, 'design_approved') $$, :r5));
SELECT pg_temp.err(format($$ SELECT parflow_signal(%s, 'legal_ok') $$, :r5));
RESET ROLE;
SET ROLE pf_wait_ci;
SELECT parflow_signal(:r5, 'design_approved') AS ci_released;
RESET ROLE;
SELECT parflow_disallow_signal('pf_wait_bot', 'legal_ok'), parflow_disallow_signal('pf_wait_bot', 'legal_ok');
SELECT has_function_privilege('pf_wait_bot', 'parflow_signal(bigint,text,jsonb)', 'EXECUTE') AS bot_may_call,
       has_function_privilege('pf_wait_ci', 'parflow_signal(bigint,text,jsonb)', 'EXECUTE') AS ci_may_call;
SELECT pg_temp.err($$ SELECT parflow_allow_signal('pf_no_such_role', 'e') $$);
SELECT pg_temp.err($$ SELECT parflow_allow_signal('pf_wait_bot', ' ') $$);
SELECT pg_temp.err($$ SELECT parflow_allow_signal(NULL, 'e') $$);
SELECT parflow_disallow_signal('pf_wait_ci', '*');
-- housekeeping deletes what is kept for runs finished past parflow.retention
SELECT parflow_start('approve', parallel => true) AS rk \gset
SELECT parflow_signal(:rk, 'review') AS kept;
SELECT parflow_cancel(:rk);
SELECT count(*) AS kept_before FROM parflow.signal WHERE run_id = :rk;
UPDATE parflow.run SET finished_at = finished_at - interval '400 days' WHERE id = :rk;
SELECT parflow_housekeeping() > 0 AS events_deleted;
SELECT count(*) AS kept_after FROM parflow.signal WHERE run_id = :rk;

REVOKE USAGE ON SCHEMA parflow FROM pf_wait_bot;
DROP ROLE pf_wait_bot;
DROP ROLE pf_wait_ci;
DROP EXTENSION parflow;
