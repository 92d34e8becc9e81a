-- test/pgtap/waits.sql -- bad input to wait, map and sub-workflow stages.
--
-- Every refusal the issue names, each with its SQLSTATE and a hint where
-- there is one: parflow_define refuses (22023) a stage with two of agent,
-- wait and workflow, a wait without an event, a map over a stage that is
-- not a dependency or with max < 1, a sub-workflow that does not exist or
-- forms a cycle; at run time parflow_signal refuses an unknown run (42704),
-- a finished one (55000) and an oversized payload (54000), parflow_reject
-- an empty reason (22023).  Then: nothing of it was written.

BEGIN;
CREATE EXTENSION IF NOT EXISTS parflow;
SELECT plan(25);

-- a one-group spec of these stages
CREATE FUNCTION pg_temp.wf(VARIADIC stages jsonb[]) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('groups', jsonb_build_array(jsonb_build_object('name', 'g', 'stages', to_jsonb(stages))))
$$;
-- the hint of the error a statement raises (NULL: none, or no error)
CREATE FUNCTION pg_temp.hint(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    h text;
BEGIN
    EXECUTE q;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
    RETURN nullif(h, '');
END
$$;

SELECT parflow_define('pw_qa', pg_temp.wf('{"name": "t", "agent": "pw", "estimate": "1 min"}'));
SELECT parflow_define('pw_outer', pg_temp.wf('{"name": "q", "workflow": "pw_qa"}'));
CREATE TEMP TABLE before AS
SELECT (SELECT count(*) FROM parflow.workflow) AS workflows, (SELECT count(*) FROM parflow.workflow_version) AS versions,
       (SELECT count(*) FROM parflow.stage) AS stages;

-- parflow_define
SELECT throws_ok($$ SELECT parflow_define('pw_bad', pg_temp.wf('{"name": "a", "agent": "x", "estimate": "1 min", "wait": {"event": "e"}}')) $$,
                 '22023', 'stage "a" has both "agent" and "wait"', 'define: agent and wait');
SELECT throws_ok($$ SELECT parflow_define('pw_bad', pg_temp.wf('{"name": "a", "agent": "x", "estimate": "1 min", "workflow": "pw_qa"}')) $$,
                 '22023', 'stage "a" has both "agent" and "workflow"', 'define: agent and workflow');
SELECT throws_ok($$ SELECT parflow_define('pw_bad', pg_temp.wf('{"name": "a", "wait": {"event": "e"}, "workflow": "pw_qa"}')) $$,
                 '22023', 'stage "a" has both "wait" and "workflow"', 'define: wait and workflow');
SELECT isnt(pg_temp.hint($$ SELECT parflow_define('pw_bad', pg_temp.wf('{"name": "a", "wait": {"event": "e"}, "workflow": "pw_qa"}')) $$),
            NULL, 'define: two of agent, wait and workflow: with a hint');
SELECT throws_ok($$ SELECT parflow_define('pw_bad', pg_temp.wf('{"name": "a", "wait": {}}')) $$,
                 '22023', 'wait of stage "a" lacks required key "event"', 'define: a wait without an event');
SELECT throws_ok($$ SELECT parflow_define('pw_bad', pg_temp.wf('{"name": "a", "wait": {"event": ""}}')) $$,
                 '22023', NULL, 'define: a wait with an empty event');
SELECT throws_ok($$ SELECT parflow_define('pw_bad', pg_temp.wf('{"name": "a", "agent": "x", "estimate": "1 min"}',
                     '{"name": "b", "agent": "x", "estimate": "1 min", "map": {"over": "a"}}')) $$,
                 '22023', 'map stage "b" maps over "a", which is not one of its dependencies', 'define: a map over a stage that is not a dependency');
SELECT isnt(pg_temp.hint($$ SELECT parflow_define('pw_bad', pg_temp.wf('{"name": "a", "agent": "x", "estimate": "1 min"}',
                     '{"name": "b", "agent": "x", "estimate": "1 min", "map": {"over": "a"}}')) $$),
            NULL, 'define: a map over a non-dependency: with a hint');
SELECT throws_ok($$ SELECT parflow_define('pw_bad', pg_temp.wf('{"name": "a", "agent": "x", "estimate": "1 min"}',
                     '{"name": "b", "agent": "x", "estimate": "1 min", "map": {"over": "a", "max": 0}, "depends_on": ["a"]}')) $$,
                 '22023', 'max of map of stage "b" must be between 1 and 10000', 'define: a map with max < 1');
SELECT throws_ok($$ SELECT parflow_define('pw_bad', pg_temp.wf('{"name": "a", "agent": "x", "estimate": "1 min"}',
                     '{"name": "b", "agent": "x", "estimate": "1 min", "map": {"over": "a", "max": 2.5}, "depends_on": ["a"]}')) $$,
                 '22023', NULL, 'define: a map with a fractional max');
SELECT throws_ok($$ SELECT parflow_define('pw_bad', pg_temp.wf('{"name": "a", "workflow": "pw_q"}')) $$,
                 '22023', 'stage "a" runs unknown workflow "pw_q"', 'define: a sub-workflow that does not exist');
SELECT is(pg_temp.hint($$ SELECT parflow_define('pw_bad', pg_temp.wf('{"name": "a", "workflow": "pw_q"}')) $$),
          'Did you mean "pw_qa"?', 'define: an unknown sub-workflow: the hint names the nearest');
SELECT throws_ok($$ SELECT parflow_define('pw_qa', pg_temp.wf('{"name": "t", "workflow": "pw_outer"}')) $$,
                 '22023', 'workflow "pw_qa" would contain itself: pw_qa -> pw_outer -> pw_qa', 'define: a cycle through another workflow, named');
SELECT throws_ok($$ SELECT parflow_define('pw_self', pg_temp.wf('{"name": "t", "workflow": "pw_self"}')) $$,
                 '22023', 'stage "t" runs its own workflow "pw_self"', 'define: a workflow that contains itself');
SELECT is((SELECT count(*) FROM parflow.workflow), (SELECT workflows FROM before),
          'define: the refused definitions wrote no workflow');
SELECT is((SELECT count(*) FROM parflow.workflow_version) + (SELECT count(*) FROM parflow.stage),
          (SELECT versions + stages FROM before), 'define: ... no version and no stage');

-- parflow_signal and parflow_reject
SELECT parflow_define('pw_wait', pg_temp.wf('{"name": "w", "wait": {"event": "go"}}'));
SELECT parflow_start('pw_wait') AS run \gset
SELECT parflow_start('pw_wait') AS done_run \gset
SELECT parflow_signal(:done_run, 'go');
SELECT throws_ok($$ SELECT parflow_signal(987654321, 'go') $$, '42704', 'run 987654321 does not exist', 'signal: an unknown run');
SELECT throws_ok(format($$ SELECT parflow_signal(%s, 'go') $$, :done_run), '55000', NULL, 'signal: a finished run');
SELECT throws_ok(format($$ SELECT parflow_reject(%s, 'go', 'late') $$, :done_run), '55000', NULL, 'reject: a finished run');
SELECT throws_ok(format($$ SELECT parflow_reject(%s, 'go', '') $$, :run), '22023', 'reason must not be empty', 'reject: an empty reason');
SELECT throws_ok(format($$ SELECT parflow_reject(%s, 'go', NULL) $$, :run), '22004', 'reason must not be null', 'reject: no reason');
SELECT throws_ok(format($$ SELECT parflow_signal(%s, 'og') $$, :run), '22023', NULL, 'signal: an event no stage awaits');
SET LOCAL parflow.max_output_size = 1024;
SELECT throws_ok(format($$ SELECT parflow_signal(%s, 'go', jsonb_build_object('x', repeat('y', 2000))) $$, :run),
                 '54000', NULL, 'signal: a payload over parflow.max_output_size');
RESET parflow.max_output_size;
SELECT is((SELECT state FROM parflow.tasks WHERE run = :run) || ' ' || (SELECT count(*) FROM parflow.signal WHERE run_id = :run),
          'awaiting 0', 'the refused signals and rejections changed nothing: the stage awaits, no signal kept');
SELECT is(parflow_signal(:run, 'go'), 1, 'a good signal then releases the stage');

SELECT * FROM finish();
ROLLBACK;
