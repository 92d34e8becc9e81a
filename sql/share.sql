-- Sharing the database between runs: fair share under the global cap,
-- concurrency rules across runs and workflows, idempotent and delayed
-- starts.  The dispatcher serves another database: the test calls the pass,
-- parflow._dispatch(), itself.  parflow.max_parallel_stages is 4 here.
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
-- n parallel stages of agent w, each estimated at 10 min.
CREATE FUNCTION pg_temp.wide(n integer, extra jsonb DEFAULT '{}') RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('groups', jsonb_build_array(jsonb_build_object('name', 'g', 'stages',
           (SELECT jsonb_agg(jsonb_build_object('name', 's' || i, 'agent', 'w', 'estimate', '10 min') ORDER BY i)
              FROM generate_series(1, n) i)))) || extra
$$;
-- Tasks at work per run.
CREATE FUNCTION pg_temp.at_work(VARIADIC runs bigint[]) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(format('run %s: %s', r.i,
                             (SELECT count(*) FROM parflow.tasks t WHERE t.run = r.run
                                 AND t.state IN ('dispatched', 'running'))), ', ' ORDER BY r.i)
      FROM unnest(runs) WITH ORDINALITY r(run, i)
$$;
-- What agent1 holds: it claims every dispatched task of kind w.
CREATE TEMP TABLE held AS SELECT * FROM parflow_claim('w', 'agent1') WITH NO DATA;
CREATE FUNCTION pg_temp.claim_all() RETURNS integer LANGUAGE sql AS $$
    WITH c AS (INSERT INTO held SELECT * FROM parflow_claim('w', 'agent1', max_tasks => 100) RETURNING 1)
    SELECT count(*)::integer FROM c
$$;
SELECT current_setting('parflow.fair_share') AS fair_share, current_setting('parflow.max_parallel_stages') AS cap;

-- ---- fair share ---------------------------------------------------------------
SELECT parflow_define('big', pg_temp.wide(40)) AS v, parflow_define('small', pg_temp.wide(5)) AS v2;
SELECT parflow_start('big', parallel => true) AS big \gset
SELECT parflow_start('small', parallel => true) AS small \gset
-- Both runs wait with nothing at work: they take turns, the big run's
-- tasks do not take all four slots.
SELECT parflow._dispatch();
SELECT pg_temp.at_work(:big, :small);
-- The small run's remaining tasks say why they wait.
SELECT DISTINCT why FROM parflow.waiting WHERE run = :small AND state = 'ready' ORDER BY why;
-- No dispatcher serves this database, so a completion leaves its slot to
-- the pass (test/e2e/90_share.sh covers the hand-over): the slot a small-run
-- task frees goes back to the small run, which has fewer at work.
SELECT pg_temp.claim_all() AS claimed;
SELECT task, token FROM held WHERE run = :small ORDER BY task LIMIT 1 \gset s_
SELECT parflow_complete(:s_task, :'s_token', '{}');
SELECT parflow._dispatch();
SELECT pg_temp.at_work(:big, :small);
SELECT parflow_cancel(:big), parflow_cancel(:small);

-- A big run alone takes every slot; a slot it frees goes to a small run
-- started meanwhile, with nothing at work.
SELECT parflow_start('big', parallel => true) AS big \gset
SELECT parflow._dispatch();
SELECT parflow_start('small', parallel => true) AS small \gset
SELECT pg_temp.claim_all() AS claimed;
SELECT task, token FROM held WHERE run = :big ORDER BY task LIMIT 1 \gset b_
SELECT parflow_complete(:b_task, :'b_token', '{}');
SELECT parflow._dispatch();
SELECT pg_temp.at_work(:big, :small);
-- A P1 run comes before both, whatever they have at work.
SELECT parflow_start('small', parallel => true, priority => 1) AS urgent \gset
SELECT pg_temp.claim_all() AS claimed;
SELECT task, token FROM held h WHERE run = :big AND task <> :b_task ORDER BY task LIMIT 1 \gset b_
SELECT parflow_complete(:b_task, :'b_token', '{}');
SELECT parflow._dispatch();
SELECT pg_temp.at_work(:big, :small, :urgent);
SELECT parflow_cancel(:big), parflow_cancel(:small), parflow_cancel(:urgent);

-- ---- concurrency rules ----------------------------------------------------------
\pset format unaligned
\pset tuples_only on
SELECT pg_temp.err($q$SELECT parflow_define('x', pg_temp.wide(1, '{"concurrency": {}}'))$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', pg_temp.wide(1, '{"concurrency": [{"key": "repo", "max": 1}]}'))$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', pg_temp.wide(1, '{"concurrency": [{"name": "d", "max": 1}]}'))$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', pg_temp.wide(1, '{"concurrency": [{"name": "d", "key": "repo"}]}'))$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', pg_temp.wide(1, '{"concurrency": [{"name": "d", "key": "repo", "max": 0}]}'))$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', pg_temp.wide(1, '{"concurrency": [{"name": "d", "key": "repo", "max": 1.5}]}'))$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', pg_temp.wide(1, '{"concurrency": [{"name": "d", "key": " ", "max": 1}]}'))$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', pg_temp.wide(1, '{"concurrency": [{"name": "", "key": "repo", "max": 1}]}'))$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', pg_temp.wide(1, '{"concurrency": [{"name": "d", "key": "repo", "max": 1, "stages": ["s2"]}]}'))$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', pg_temp.wide(1, '{"concurrency": [{"name": "d", "key": "repo", "max": 1, "stages": []}]}'))$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', pg_temp.wide(1, '{"concurrency": [{"name": "d", "key": "repo", "max": 1, "stage": ["s1"]}]}'))$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', pg_temp.wide(1, '{"concurrency": [{"name": "d", "key": "repo", "max": 1}, {"name": "d", "key": "repo", "max": 1}]}'))$q$);
\pset format aligned
\pset tuples_only off
-- Two workflows share rule deploys; a third may not give it another max or key.
SELECT parflow_define('deploy', pg_temp.wide(2, '{"concurrency": [{"name": "deploys", "key": "repo", "max": 1, "stages": ["s1"]}]}'));
SELECT parflow_define('hotfix', pg_temp.wide(1, '{"concurrency": [{"name": "deploys", "key": "repo", "max": 1}]}'));
\pset format unaligned
\pset tuples_only on
SELECT pg_temp.err($q$SELECT parflow_define('other', pg_temp.wide(1, '{"concurrency": [{"name": "deploys", "key": "repo", "max": 2}]}'))$q$);
SELECT pg_temp.err($q$SELECT parflow_define('other', pg_temp.wide(1, '{"concurrency": [{"name": "deploys", "key": "service", "max": 1}]}'))$q$);
\pset format aligned
\pset tuples_only off
-- the refused definitions wrote nothing
SELECT count(*) AS workflows_named_x_or_other FROM parflow.workflow WHERE name IN ('x', 'other');
SELECT c.name, c.key, c.max_concurrent, c.stage_ords FROM parflow.concurrency c ORDER BY c.version_id, c.ord;
-- A new version of the same workflow may change its own rule.
SELECT parflow_define('hotfix', pg_temp.wide(1, '{"concurrency": [{"name": "deploys", "key": "repo", "max": 1}]}'));

SELECT parflow_start('deploy', parallel => true, input => '{"repo": "api"}') AS d1 \gset
SELECT parflow_start('deploy', parallel => true, input => '{"repo": "api"}') AS d2 \gset
SELECT parflow_start('deploy', parallel => true, input => '{"repo": "web"}') AS d3 \gset
SELECT parflow._dispatch();
-- s1 of d1 and of d3 are at work, d2's waits for api's deploy; s2 is not bound
SELECT t.run = :d1 AS d1, t.run = :d3 AS d3, t.stage, t.state FROM parflow.tasks t
 WHERE t.run IN (:d1, :d2, :d3) ORDER BY t.run, t.stage;
SELECT why FROM parflow.waiting WHERE run = :d2 AND stage = 's1';
-- the rule binds another workflow's runs of the same repository too; a run
-- whose input lacks the key is not bound
SELECT parflow_start('hotfix', parallel => true, input => '{"repo": "api"}') AS h1 \gset
SELECT parflow_start('hotfix', parallel => true, input => '{"ticket": 1}') AS h2 \gset
SELECT pg_temp.claim_all() AS claimed;
SELECT task, token FROM held WHERE run = :d1 AND stage = 's2' \gset x_
SELECT parflow_complete(:x_task, :'x_token', '{}');
SELECT task, token FROM held WHERE run = :d2 AND stage = 's2' \gset x_
SELECT parflow_complete(:x_task, :'x_token', '{}');
SELECT parflow._dispatch();
SELECT run = :h1 AS h1, stage, state FROM parflow.tasks WHERE run IN (:h1, :h2) ORDER BY run;
SELECT why FROM parflow.waiting WHERE run = :h1;
-- d1's deploy done: its slot under the rule goes to the next api deploy
SELECT pg_temp.claim_all() AS claimed;
SELECT task, token FROM held WHERE run = :d1 AND stage = 's1' \gset x_
SELECT parflow_complete(:x_task, :'x_token', '{}');
SELECT parflow._dispatch();
SELECT count(*) FILTER (WHERE t.state IN ('dispatched', 'running')) AS api_deploys_at_work,
       count(*) FILTER (WHERE t.state = 'succeeded') AS api_deploys_done
  FROM parflow.tasks t JOIN parflow.run r ON r.id = t.run
 WHERE r.input->>'repo' = 'api' AND (t.stage = 's1' OR r.id = :h1);
SELECT count(parflow_cancel(r.run)) AS cancelled FROM parflow.runs r WHERE r.state = 'running';

-- A P0 run whose task a full rule holds takes no slot back: the room would
-- go to lower priorities again, and the next pass would preempt again.
SELECT parflow_start('deploy', parallel => true, input => '{"repo": "api"}') AS d4 \gset
SELECT parflow_start('big', parallel => true) AS big \gset
SELECT parflow._dispatch();
SELECT parflow_start('hotfix', priority => 0, parallel => true, input => '{"repo": "api"}') AS p0 \gset
SELECT parflow._dispatch();
SELECT count(*) FILTER (WHERE kind IN ('preempted', 'interrupt')) AS taken_back,
       count(*) FILTER (WHERE kind = 'dispatched') AS dispatched
  FROM parflow.events WHERE run IN (:d4, :big, :p0);
SELECT why FROM parflow.waiting WHERE run = :p0;
SELECT count(parflow_cancel(r.run)) AS cancelled FROM parflow.runs r WHERE r.state = 'running';

-- ---- idempotent start -------------------------------------------------------------
SELECT parflow_start('small', key => 'REQ-1') AS k1 \gset
SELECT parflow_start('small', key => 'REQ-1') AS k2 \gset
SELECT :k1 = :k2 AS same_run, (SELECT count(*) FROM parflow.run WHERE key = 'REQ-1') AS runs_with_key;
SELECT key FROM parflow.runs WHERE run = :k1;
-- in any state: a cancelled run is still the answer
SELECT parflow_cancel(:k1);
SELECT parflow_start('small', key => 'REQ-1') = :k1 AS same_run_after_cancel;
\pset format unaligned
\pset tuples_only on
SELECT pg_temp.err($q$SELECT parflow_start('small', key => '')$q$);
SELECT pg_temp.err($q$SELECT parflow_start('small', key => E'a\tb')$q$);
\pset format aligned
\pset tuples_only off
SELECT count(*) AS runs FROM parflow.run;

-- ---- delayed start -------------------------------------------------------------------
SELECT parflow_start('small', parallel => true, not_before => clock_timestamp() + interval '1 hour') AS late \gset
SELECT parflow._dispatch();
SELECT count(*) FILTER (WHERE state = 'ready') AS ready, count(*) FILTER (WHERE state = 'dispatched') AS dispatched
  FROM parflow.tasks WHERE run = :late;
SELECT DISTINCT why LIKE 'not before %' AS not_before_reason FROM parflow.waiting WHERE run = :late;
SELECT not_before > now() AS delayed, started_at = not_before AS clock_starts_then FROM parflow.runs WHERE run = :late;
-- a time already past starts at once
SELECT parflow_start('small', parallel => true, not_before => clock_timestamp() - interval '1 minute') AS early \gset
SELECT not_before IS NULL AS not_delayed FROM parflow.runs WHERE run = :early;
SELECT parflow._dispatch() > 0 AS dispatched;
-- resumed or not, the delayed run's time holds
SELECT parflow_pause(:late), parflow_resume(:late);
SELECT parflow._dispatch();
SELECT count(*) AS late_dispatched FROM parflow.tasks WHERE run = :late AND state <> 'ready';
DROP EXTENSION parflow;
