-- Plans that keep a slot idle, realised by holds: a stage the plan starts
-- later than the dispatcher would (a slot free, the stage ready) waits for
-- the finish of the stage before it (task.hold_ord, counted in pending),
-- whatever that stage's duration; the hold goes when that task succeeds or
-- fails for good.  The dispatcher serves another database: the test runs
-- its pass, parflow._dispatch(), itself.
CREATE EXTENSION parflow;
SET client_min_messages = warning;
\set SHOW_CONTEXT never

-- Under a cap of 3, every list schedule takes 7 minutes (d, ready at 0,
-- takes the third slot, and c or e waits); the 6-minute plan starts b and
-- a, keeps the third slot free, starts c and e when b is done, and d when a
-- is done.
SELECT parflow_define('hold', '{"max_parallel": 3, "groups": [{"name": "g", "stages": [
  {"name": "a", "agent": "hk", "estimate": "2 min", "max_attempts": 1},
  {"name": "b", "agent": "hk", "estimate": "1 min"},
  {"name": "c", "agent": "hk", "estimate": "4 min", "depends_on": ["b"]},
  {"name": "d", "agent": "hk", "estimate": "3 min"},
  {"name": "e", "agent": "hk", "estimate": "4 min", "depends_on": ["b"]},
  {"name": "f", "agent": "hk", "estimate": "1 min", "depends_on": ["a", "b", "e"]},
  {"name": "g", "agent": "hk", "estimate": "1 min", "depends_on": ["c", "e"]}]}]}');
SELECT parallel, lower_bound, optimal FROM parflow_estimate('hold');
SELECT stage, est_start, est_finish, held_for FROM parflow_plan('hold');
SELECT makespan, held FROM parflow._plan_stats('hold', '{}', NULL, 'cp');
-- parflow.plan_holds off: the best list schedule, nothing held
SET parflow.plan_holds = off;
SELECT parallel, optimal FROM parflow_estimate('hold');
SELECT count(*) AS held FROM parflow_plan('hold') WHERE held_for IS NOT NULL;
RESET parflow.plan_holds;
-- A hold never waits for a stage behind a wait stage (its signal may never
-- come).  Under a cap of 1, holding a until b is done would take 26
-- minutes (w 0-5, b 5-6, a 6-16, c 6-26) against 31 (a 0-10, b 10-11, c
-- 11-31); but b needs w's signal: the plan does not hold a.
SELECT parflow_define('hold_wait', '{"max_parallel": 1, "groups": [{"name": "g", "stages": [
  {"name": "a", "agent": "hk", "estimate": "10 min"},
  {"name": "w", "wait": {"event": "ok"}, "estimate": "5 min"},
  {"name": "b", "agent": "hk", "estimate": "1 min", "depends_on": ["w"]},
  {"name": "c", "wait": {"event": "done"}, "estimate": "20 min", "depends_on": ["b"]}]}]}');
SELECT parallel, lower_bound FROM parflow_estimate('hold_wait');
SELECT count(*) AS held FROM parflow_plan('hold_wait') WHERE held_for IS NOT NULL;
-- one at a time, nothing is held
SELECT count(*) AS held_sequential FROM parflow._ranks(parflow._current_version('hold'), '{}', 1) WHERE hold_ord IS NOT NULL;

-- Task ids follow stage order (the dispatcher breaks rank ties by id, the
-- planner by stage), whatever order the start's join produced them in.
SELECT parflow_define('hold_ids', jsonb_build_object('groups', jsonb_build_array(jsonb_build_object('name', 'g', 'stages',
    (SELECT jsonb_agg(jsonb_build_object('name', 's' || i, 'agent', 'hk', 'estimate', '1 min')) FROM generate_series(1, 60) i)))));
SELECT parflow_start('hold_ids', parallel => true) AS ids_run \gset
SELECT bool_and(t.id = t.first + t.stage_ord) AS ids_in_stage_order
  FROM (SELECT t.id, t.stage_ord, min(t.id) OVER () AS first FROM parflow.task t WHERE t.run_id = :ids_run) t;
SELECT parflow_cancel(:ids_run);

-- A run: d waits for a although a slot is free.
SELECT parflow_start('hold', parallel => true) AS run \gset
SELECT planned FROM parflow.run WHERE id = :run;
SELECT stage, state FROM parflow.tasks WHERE run = :run ORDER BY task;
SELECT t.stage_ord, t.pending, t.hold_ord FROM parflow.task t WHERE t.run_id = :run ORDER BY t.stage_ord;
SELECT parflow._dispatch();
SELECT stage, state FROM parflow.tasks WHERE run = :run AND state <> 'waiting' ORDER BY task;
SELECT stage, why FROM parflow.waiting WHERE run = :run AND stage = 'd';
-- b done: c and e take the free slot and the one b had; d still waits.
CREATE TEMP TABLE held AS SELECT c.task, c.token, c.stage FROM parflow_claim('hk', 'w1', max_tasks => 3) c;
SELECT stage FROM held ORDER BY stage;
SELECT task AS a_task, token AS a_token FROM held WHERE stage = 'a' \gset
SELECT parflow_complete(task, token) FROM held WHERE stage = 'b';
SELECT parflow._dispatch();
SELECT stage, state FROM parflow.tasks WHERE run = :run AND state <> 'waiting' ORDER BY task;
-- a done: its slot goes to d.
SELECT parflow_complete(:a_task, :'a_token');
SELECT parflow._dispatch();
SELECT stage, state FROM parflow.tasks WHERE run = :run AND stage = 'd';
SELECT t.hold_ord, t.pending FROM parflow.task t WHERE t.run_id = :run AND t.stage_ord = 3;
SELECT kind FROM parflow.events WHERE run = :run AND task = (SELECT id FROM parflow.task WHERE run_id = :run AND stage_ord = 3) ORDER BY event;
-- the rest of the run
DO $$
DECLARE c record;
BEGIN
    FOR i IN 1..10 LOOP
        PERFORM parflow._dispatch();
        FOR c IN SELECT * FROM parflow_claim('hk', 'w3', max_tasks => 10) LOOP
            PERFORM parflow_complete(c.task, c.token);
        END LOOP;
    END LOOP;
END $$;
SELECT state FROM parflow.runs WHERE run = :run;

-- The stage a hold waits for fails for good: the held stage runs anyway
-- (once a task failed for good the plan is void: every hold of the run
-- goes, and the run goes on with what does not depend on the failure).
SELECT parflow_start('hold', parallel => true) AS run2 \gset
SELECT parflow._dispatch();
SELECT c.task AS a2_task, c.token AS a2_token FROM parflow_claim('hk', 'w4', max_tasks => 2) c
  JOIN parflow.task t ON t.id = c.task WHERE t.stage_ord = 0 \gset
SELECT parflow_fail(:a2_task, :'a2_token', 'broken', false);
SELECT t.stage_ord, t.state, t.pending, t.hold_ord FROM parflow.task t WHERE t.run_id = :run2 AND t.stage_ord IN (0, 3) ORDER BY 1;
SELECT kind FROM parflow.events WHERE run = :run2 AND task = (SELECT id FROM parflow.task WHERE run_id = :run2 AND stage_ord = 3) ORDER BY event;
SELECT parflow_cancel(:run2);
DROP EXTENSION parflow;
