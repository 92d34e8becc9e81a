-- The batch agent calls: parflow_claim(..., max_tasks), parflow_complete_many
-- and parflow_complete_and_claim, with their bad input.  Driven by hand: the
-- dispatcher serves another database, so the test runs its pass,
-- parflow._dispatch(), itself.
CREATE EXTENSION parflow;
SET client_min_messages = warning;
\set SHOW_CONTEXT never
SELECT parflow_define('fan', '{"groups": [
  {"name": "work", "stages": [
    {"name": "a1", "agent": "w", "estimate": "1 min"},
    {"name": "a2", "agent": "w", "estimate": "2 min"},
    {"name": "a3", "agent": "w", "estimate": "3 min"},
    {"name": "a4", "agent": "w", "estimate": "4 min"}]},
  {"name": "end", "stages": [{"name": "z", "agent": "z", "estimate": "1 min"}]}]}');
SELECT parflow_start('fan', parallel => true) AS run \gset
SELECT parflow._dispatch();

-- (parflow.max_parallel_stages is 4: all four are dispatched)
-- A batch claim: up to max_tasks, in dispatch order (longest first), each
-- with its own token; item is NULL for stages that are not map instances.
CREATE TEMP TABLE held AS SELECT * FROM parflow_claim('w', 'b1', '1 min', 3);
SELECT stage, attempt, item, input FROM held ORDER BY stage;
SELECT count(DISTINCT token) AS tokens FROM held;
SELECT stage, state, worker FROM parflow.tasks WHERE run = :run ORDER BY task;

-- Bad input to a claim: refused, nothing claimed.
SELECT parflow_claim('w', 'b1', '1 min', 0);
SELECT parflow_claim('w', 'b1', '1 min', -5);
SELECT parflow_claim('w', 'b1', '1 min', NULL);
SELECT count(*) AS still_dispatched FROM parflow.tasks WHERE run = :run AND state = 'dispatched';
SELECT count(*) AS none_for_others FROM parflow_claim('z', 'b1', '1 min', 10);
-- An absurd max_tasks is capped (at 1000): it takes what there is.
INSERT INTO held SELECT * FROM parflow_claim('w', 'b2', '1 min', 2000000000);
SELECT count(*) AS held_now FROM held;

-- complete_many: one call, each task accepted or refused on its own.
SELECT h.task AS t_bad_token FROM held h WHERE h.stage = 'a1' \gset
SELECT h.task AS t_big FROM held h WHERE h.stage = 'a2' \gset
SET parflow.max_output_size = '1kB';
SELECT CASE WHEN r.task = :t_bad_token THEN 'a1' WHEN r.task = :t_big THEN 'a2'
            WHEN r.task = -1 THEN 'none' ELSE 'other' END AS which,
       r.accepted, r.sqlstate, r.message LIKE 'task % is not held by this token' AS not_held_msg
  FROM parflow_complete_many(
         ARRAY(SELECT h.task FROM held h ORDER BY h.stage) || ARRAY[-1::bigint],
         ARRAY(SELECT CASE WHEN h.stage = 'a1' THEN gen_random_uuid() ELSE h.token END
                 FROM held h ORDER BY h.stage) || gen_random_uuid(),
         ARRAY(SELECT CASE WHEN h.stage = 'a2' THEN jsonb_build_object('blob', repeat('x', 5000))
                           ELSE jsonb_build_object('done', h.stage) END
                 FROM held h ORDER BY h.stage) || '{}'::jsonb) r
 ORDER BY which;
RESET parflow.max_output_size;
-- the refused ones are as they were; the others succeeded with their outputs
SELECT stage, state, worker FROM parflow.tasks WHERE run = :run ORDER BY task;
SELECT s.name AS stage, t.output FROM parflow.task t JOIN parflow.stage s ON s.ord = t.stage_ord
  JOIN parflow.run r ON r.id = t.run_id AND s.version_id = r.version_id
 WHERE t.run_id = :run AND t.state = 'succeeded' ORDER BY s.name;

-- Bad input to complete_many: refused as a whole, nothing written.
SELECT count(*) AS events_before FROM parflow.event \gset
SELECT h.task AS t1, h.token AS k1 FROM held h WHERE h.stage = 'a1' \gset
SELECT h.task AS t2, h.token AS k2 FROM held h WHERE h.stage = 'a2' \gset
SELECT * FROM parflow_complete_many(ARRAY[:t1, :t2]::bigint[], ARRAY[:'k1']::uuid[]);
SELECT * FROM parflow_complete_many(ARRAY[:t1]::bigint[], ARRAY[:'k1']::uuid[], ARRAY['{}', '{}']::jsonb[]);
SELECT * FROM parflow_complete_many(NULL, ARRAY[:'k1']::uuid[]);
SELECT * FROM parflow_complete_many(ARRAY[:t1]::bigint[], NULL);
SELECT * FROM parflow_complete_many(ARRAY[:t1, NULL]::bigint[], ARRAY[:'k1', :'k2']::uuid[]);
SELECT * FROM parflow_complete_many(ARRAY[:t1, :t2]::bigint[], ARRAY[:'k1', NULL]::uuid[]);
SELECT * FROM parflow_complete_many(ARRAY[:t1, :t1]::bigint[], ARRAY[:'k1', :'k1']::uuid[]);
SELECT * FROM parflow_complete_many(ARRAY[[:t1]]::bigint[], ARRAY[[:'k1']]::uuid[]);
SELECT count(*) FROM parflow_complete_many(array_fill(1::bigint, ARRAY[1001]), array_fill(gen_random_uuid(), ARRAY[1001]));
SELECT count(*) = :events_before AS nothing_written FROM parflow.event;
SELECT count(*) AS still_running FROM parflow.tasks WHERE run = :run AND state = 'running';
-- an empty batch is a no-op
SELECT count(*) FROM parflow_complete_many('{}', '{}');
-- a NULL output element completes with {}
SELECT r.accepted FROM parflow_complete_many(ARRAY[:t1, :t2]::bigint[], ARRAY[:'k1', :'k2']::uuid[],
                                              ARRAY[NULL, '{"ok": 2}']::jsonb[]) r;
SELECT s.name AS stage, t.output FROM parflow.task t JOIN parflow.run r ON r.id = t.run_id
  JOIN parflow.stage s ON s.version_id = r.version_id AND s.ord = t.stage_ord
 WHERE t.id IN (:t1, :t2) ORDER BY s.name;
-- the barrier of group work is passed: z is ready, the run goes on
SELECT stage, state FROM parflow.tasks WHERE run = :run AND stage = 'z';

-- One batch that finishes two groups a third waits for: each barrier counts
-- its own tasks off, and the third is released once, with both counted.
SELECT parflow_define('two_barriers', '{"groups": [
    {"name": "a", "stages": [{"name": "a1", "agent": "tb", "estimate": "1 min"}]},
    {"name": "b", "depends_on": [], "stages": [{"name": "b1", "agent": "tb", "estimate": "1 min"},
                                               {"name": "b2", "agent": "tb", "estimate": "1 min"}]},
    {"name": "c", "depends_on": ["a", "b"], "stages": [{"name": "c1", "agent": "tc", "estimate": "1 min"}]},
    {"name": "d", "depends_on": ["b"], "stages": [{"name": "d1", "agent": "tc", "estimate": "1 min"}]}]}');
SELECT parflow_start('two_barriers', parallel => true) AS brun \gset
SELECT parflow._dispatch();
CREATE TEMP TABLE tb_claimed AS SELECT task, token, stage FROM parflow_claim('tb', 'bw', max_tasks => 10);
SELECT string_agg(stage, ' ' ORDER BY stage) AS claimed FROM tb_claimed;
-- b1 alone: b has a task left, nothing is released
SELECT r.accepted FROM tb_claimed c, parflow_complete_many(ARRAY[c.task], ARRAY[c.token], NULL) r WHERE c.stage = 'b1';
SELECT stage, state FROM parflow.tasks WHERE run = :brun AND stage IN ('c1', 'd1') ORDER BY stage;
-- a1 and b2 in one batch: a and b are done together
SELECT count(*) FILTER (WHERE r.accepted) AS accepted
  FROM parflow_complete_many((SELECT array_agg(task ORDER BY stage) FROM tb_claimed WHERE stage <> 'b1'),
                             (SELECT array_agg(token ORDER BY stage) FROM tb_claimed WHERE stage <> 'b1'), NULL) r;
SELECT stage, state FROM parflow.tasks WHERE run = :brun AND stage IN ('c1', 'd1') ORDER BY stage;
SELECT parflow_cancel(:brun);

-- complete_and_claim: completes, then claims the next task of the kind.
SELECT parflow_define('chain', '{"groups": [{"name": "g", "parallel": false, "stages": [
    {"name": "c1", "agent": "c", "estimate": "1 min"},
    {"name": "c2", "agent": "c", "estimate": "1 min"},
    {"name": "c3", "agent": "c", "estimate": "1 min"}]}]}');
SELECT parflow_start('chain', parallel => true) AS crun \gset
SELECT parflow._dispatch();
SELECT task AS c_task, token AS c_token FROM parflow_claim('c', 'cw') \gset
-- nothing of kind c is dispatched yet (c2 becomes ready with this
-- completion, and no dispatcher serves this database to hand it over)
SELECT count(*) AS claimed FROM parflow_complete_and_claim(:c_task, :'c_token', '{"n": 1}', 'c', 'cw');
SELECT parflow._dispatch();
SELECT task AS c_task, token AS c_token FROM parflow_claim('c', 'cw') \gset
-- a second run's first task is dispatched: the call below will claim it
SELECT parflow_start('chain', parallel => true) AS crun2 \gset
SELECT parflow._dispatch();
-- Bad input: refused before anything is completed.
SELECT * FROM parflow_complete_and_claim(:c_task, :'c_token', '{}', NULL, 'cw');
SELECT * FROM parflow_complete_and_claim(:c_task, :'c_token', '{}', 'c', '');
SELECT * FROM parflow_complete_and_claim(:c_task, :'c_token', '{}', 'c', 'cw', '0 s');
SELECT * FROM parflow_complete_and_claim(:c_task, gen_random_uuid(), '{}', 'c', 'cw');
-- a kind the role may not claim: 42501, and the task is still held
CREATE ROLE pf_batch_agent LOGIN IN ROLE parflow_agent;
SELECT parflow_allow_agent('pf_batch_agent', 'other');
SET SESSION AUTHORIZATION pf_batch_agent;
SELECT * FROM parflow_complete_and_claim(:c_task, :'c_token', '{}', 'c', 'cw');
RESET SESSION AUTHORIZATION;
SELECT stage, state FROM parflow.tasks WHERE task = :c_task;
SELECT parflow_disallow_agent('pf_batch_agent', 'other');
DROP ROLE pf_batch_agent;
SELECT run = :crun2 AS of_run2, stage, attempt FROM parflow_complete_and_claim(:c_task, :'c_token', '{"n": 2}', 'c', 'cw');
SELECT run = :crun AS of_run1, stage, state, worker FROM parflow.tasks WHERE run IN (:crun, :crun2) ORDER BY task;
DROP EXTENSION parflow;
