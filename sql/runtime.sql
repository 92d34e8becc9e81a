-- Runs, tasks and the agent API, driven by hand: the dispatcher serves
-- another database, so the test calls its pass, parflow._dispatch(), itself.
CREATE EXTENSION parflow;
SET client_min_messages = warning;
\set SHOW_CONTEXT never
SELECT parflow_define('rt', '{"max_parallel": 2, "groups": [
  {"name": "build", "stages": [
    {"name": "backend",  "agent": "backend",  "estimate": "30 min", "max_attempts": 2, "retry_backoff": "0 s"},
    {"name": "frontend", "agent": "frontend", "estimate": "20 min", "retry_backoff": "0 s"},
    {"name": "perf",     "agent": "perf",     "estimate": "10 min", "when": "perf"}]},
  {"name": "qa", "stages": [
    {"name": "qa", "agent": "qa", "estimate": "15 min"}]}]}');

-- Start: conditional stage skipped, the build group ready, qa waiting.
SELECT parflow_start('rt', input => '{"ticket": 42}', parallel => true) AS run \gset
SELECT stage, agent, group_name, state, attempt FROM parflow.tasks WHERE run = :run ORDER BY task;
SELECT workflow, version, state, priority, parallel, flags FROM parflow.runs WHERE run = :run;
-- Nothing dispatched yet: claims find nothing.
SELECT count(*) FROM parflow_claim('backend', 'w1');
-- One pass: both ready tasks dispatched (cap 2).
SELECT parflow._dispatch();
SELECT stage, state FROM parflow.tasks WHERE run = :run ORDER BY task;
-- A claim by another agent kind finds nothing; the right kind gets the task.
SELECT count(*) FROM parflow_claim('qa', 'w1');
SELECT task, token, stage, attempt, input, estimate FROM parflow_claim('backend', 'w1', '1 min') \gset be_
SELECT :'be_stage' AS stage, :be_attempt AS attempt, :'be_input' AS input, :'be_estimate' AS estimate;
SELECT parflow_heartbeat(:be_task, :'be_token') > now() AS lease_extended;
-- Wrong token, unknown task, NULLs: refused, nothing changes.
SELECT parflow_complete(:be_task, gen_random_uuid(), '{}');
SELECT parflow_complete(-1, gen_random_uuid(), '{}');
SELECT parflow_complete(NULL, NULL, '{}');
SELECT parflow_heartbeat(:be_task, gen_random_uuid());
SELECT parflow_fail(:be_task, gen_random_uuid(), 'x');
SELECT parflow_release(:be_task, gen_random_uuid());
SELECT state, attempt FROM parflow.tasks WHERE task = :be_task;
-- A retryable failure with attempts left goes back to ready (backoff 0).
SELECT parflow_fail(:be_task, :'be_token', 'compile error', true);
SELECT state, attempt FROM parflow.tasks WHERE task = :be_task;
-- The old token no longer holds the task.
SELECT parflow_complete(:be_task, :'be_token', '{}');
SELECT parflow._dispatch();
SELECT task, token, attempt FROM parflow_claim('backend', 'w2') \gset be_
SELECT :be_attempt AS second_attempt;
-- Release: back to ready, the attempt not counted.
SELECT parflow_release(:be_task, :'be_token');
SELECT state, attempt FROM parflow.tasks WHERE task = :be_task;
SELECT parflow._dispatch();
SELECT task, token, attempt FROM parflow_claim('backend', 'w3') \gset be_
SELECT :be_attempt AS attempt_after_release;
SELECT parflow_complete(:be_task, :'be_token', '{"api": "v1"}');
SELECT parflow_complete(:be_task, :'be_token', '{}');
-- An expired lease: refused, and the next pass puts the task back to ready.
SELECT task, token FROM parflow_claim('frontend', 'w4', '10 ms') \gset fe_
SELECT pg_sleep(0.05);
\set VERBOSITY terse
SELECT parflow_heartbeat(:fe_task, :'fe_token');
\set VERBOSITY default
SELECT parflow._dispatch() AS redispatched;
SELECT e.kind, e.detail->>'why' AS why FROM parflow.events e WHERE e.task = :fe_task AND e.kind = 'retry';
SELECT task, token FROM parflow_claim('frontend', 'w5') \gset fe_
SELECT parflow_complete(:fe_task, :'fe_token', '{"ui": "ok"}');
-- The build group is done: qa becomes ready and sees both outputs.
SELECT parflow._dispatch();
SELECT task, token, input FROM parflow_claim('qa', 'w6') \gset qa_
SELECT :'qa_input' AS qa_input;
-- Output size limit
SET parflow.max_output_size = '1kB';
SELECT parflow_complete(:qa_task, :'qa_token', jsonb_build_object('blob', repeat('x', 5000)));
RESET parflow.max_output_size;
SELECT parflow_complete(:qa_task, :'qa_token', '{"passed": 12}');
SELECT state FROM parflow.runs WHERE run = :run;
SELECT stage, state, attempt FROM parflow.tasks WHERE run = :run ORDER BY task;
SELECT kind, count(*) FROM parflow.events WHERE run = :run GROUP BY kind ORDER BY kind;

-- A permanent failure blocks the run once nothing else can run.
SELECT parflow_start('rt', parallel => true) AS run2 \gset
SELECT parflow._dispatch();
SELECT task, token FROM parflow_claim('frontend', 'w7') \gset fe_
SELECT parflow_fail(:fe_task, :'fe_token', 'disk full', false);
SELECT state FROM parflow.runs WHERE run = :run2;
SELECT task, token FROM parflow_claim('backend', 'w8') \gset be_
SELECT parflow_complete(:be_task, :'be_token', '{}');
SELECT state FROM parflow.runs WHERE run = :run2;
SELECT jsonb_path_query(parflow_failures(:run2), '$[*] ? (@.stage == "frontend")') - 'task' - 'failed_at' #- '{errors,0,at}' AS report;
SELECT stage, state FROM parflow.tasks WHERE run = :run2 ORDER BY task;
-- restart_group re-opens the failed stages of a group; then fail it again.
SELECT parflow_restart_group(:run2, 'qa');
SELECT parflow_restart_group(:run2, 'nope');
SELECT parflow_restart_group(:run2, 'build');
SELECT state FROM parflow.runs WHERE run = :run2;
SELECT parflow._dispatch();
SELECT task, token FROM parflow_claim('frontend', 'w7') \gset fe_
SELECT parflow_fail(:fe_task, :'fe_token', 'disk full again', false);
SELECT state FROM parflow.runs WHERE run = :run2;
-- Retry brings the blocked run back; a second retry of the same stage is refused.
SELECT parflow_retry(:run2, 'frontend');
SELECT parflow_retry(:run2, 'frontend');
SELECT parflow_retry(:run2, 'nope');
SELECT state FROM parflow.runs WHERE run = :run2;
SELECT parflow._dispatch();
SELECT task, token FROM parflow_claim('frontend', 'w9') \gset fe_
SELECT parflow_complete(:fe_task, :'fe_token', '{}');
SELECT parflow._dispatch();
SELECT task, token FROM parflow_claim('qa', 'w9') \gset qa_
-- Pause: nothing new is dispatched; work in hand finishes (here, the last task ends the run).
SELECT parflow_pause(:run2);
SELECT parflow_pause(:run2);
SELECT parflow_complete(:qa_task, :'qa_token', '{}');
SELECT state FROM parflow.runs WHERE run = :run2;
SELECT parflow_resume(:run2);
SELECT state FROM parflow.runs WHERE run = :run2;
SELECT parflow_resume(:run2);
SELECT parflow_cancel(:run2);
-- The report of a finished run (times vary: show what does not).
SELECT workflow, version, state, parallel, planned, actual > '0' AS took_time, work > '0' AS did_work,
       realised_savings_pct IS NOT NULL AS has_savings, off_plan_pct IS NOT NULL AS has_off_plan
  FROM parflow_report(:run2);
SELECT parflow_report(NULL);
SELECT parflow_report(-1);

-- Sequential mode: one task at a time, whatever the caps.
SELECT parflow_start('rt', '{perf}', parallel => false) AS run3 \gset
SELECT parflow._dispatch();
SELECT stage, state FROM parflow.tasks WHERE run = :run3 AND state = 'dispatched';
SELECT parallel FROM parflow.runs WHERE run = :run3;
-- A dispatched task nobody claims gives its slot back after parflow.claim_timeout.
SET parflow.claim_timeout = '10ms';
SELECT pg_sleep(0.05);
SELECT parflow._dispatch() AS dispatched_again;
SELECT stage, state FROM parflow.tasks WHERE run = :run3 ORDER BY task;
SELECT e.kind FROM parflow.events e JOIN parflow.tasks t ON t.task = e.task
 WHERE t.run = :run3 AND t.stage = 'backend' ORDER BY e.event;
RESET parflow.claim_timeout;
-- Cancel: unfinished tasks cancelled, the dispatched one too.
SELECT parflow_cancel(:run3);
SELECT stage, state FROM parflow.tasks WHERE run = :run3 ORDER BY task;
SELECT state FROM parflow.runs WHERE run = :run3;
SELECT parflow_cancel(:run3);
SELECT parflow_cancel(NULL);
SELECT parflow_pause(-1);
SET parflow.parallel_default = on;
SELECT parflow_start('rt') AS run4 \gset
SELECT parallel FROM parflow.runs WHERE run = :run4;
RESET parflow.parallel_default;

-- Bad input to parflow_start: clear errors, no run written.
SELECT count(*) AS runs_before FROM parflow.run \gset
SELECT parflow_start(NULL);
SELECT parflow_start('nope');
SELECT parflow_start('rt', priority => 4);
SELECT parflow_start('rt', priority => NULL);
SELECT parflow_start('rt', input => '[1, 2]');
SELECT parflow_start('rt', ARRAY['perf', NULL]);
SELECT parflow_claim(NULL, 'w');
SELECT parflow_claim('qa', '');
SELECT parflow_claim('qa', 'w', '0 s');
SELECT parflow_failures(NULL);
SELECT parflow_failures(-5);
SELECT count(*) = :runs_before AS no_run_written FROM parflow.run;

-- Aggregation: a group's outputs and state, the whole run's outputs.
SELECT jsonb_pretty(parflow_group_result(:run, 'build'));
SELECT parflow_group_result(:run, 'qa')->>'state' AS qa_state;
SELECT parflow_result(:run) - 'run' - 'groups' AS result,
       jsonb_path_query_array(parflow_result(:run), '$.groups[*].state') AS group_states;
SELECT parflow_group_result(:run3, 'build')->'stages' AS stages_of_cancelled_run,
       parflow_group_result(:run3, 'build')->>'state' AS state;
SELECT parflow_group_result(:run4, 'qa')->>'state' AS waiting_group;
SELECT parflow_group_result(:run, 'nope');
SELECT parflow_group_result(NULL, 'qa');
SELECT parflow_group_result(-1, 'qa');
SELECT parflow_result(NULL);
SELECT parflow_result(-1);
DROP EXTENSION parflow;
