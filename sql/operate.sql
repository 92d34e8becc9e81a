-- Operating parflow (0.2.0 and on): monitoring views, the Gantt chart and the DOT
-- export, metrics, learned estimates, housekeeping, pg_cron when absent,
-- and the role -> agent kind mapping.  Times are made deterministic by
-- writing them into the tasks by hand (as superuser).
CREATE EXTENSION parflow;
SET client_min_messages = warning;
\set SHOW_CONTEXT never
\i test/demo/sdlc_spec.sql
SELECT parflow_define('sdlc', pg_temp.seed_spec());
SELECT extversion FROM pg_extension WHERE extname = 'parflow';

-- DOT export of the seed's plan: groups as clusters, critical path in red.
SELECT parflow_dot('sdlc', '{performance}');
SELECT parflow_dot('nope');

-- A run, driven by hand: why each task waits.
SELECT parflow_start('sdlc', '{performance,security}', parallel => true) AS run \gset
SELECT stage, state, why FROM parflow.waiting WHERE run = :run ORDER BY task, why;
SELECT parflow._dispatch();
SELECT task, token FROM parflow_claim('research', 'r-1') \gset
SELECT worker, agent, stage, attempt, lease_left > '0' AS lease_left, interrupted
  FROM parflow.agents_at_work WHERE run = :run;
SELECT parflow_complete(:task, :'token', '{"findings": 3}');
SELECT parflow._dispatch();
SELECT stage, state, regexp_replace(why, 'dispatched .* ago', 'dispatched some time ago') AS why FROM parflow.waiting
 WHERE run = :run AND state <> 'waiting' ORDER BY task;
SELECT parflow_pause(:run);
SELECT DISTINCT why FROM parflow.waiting WHERE run = :run;
SELECT parflow_resume(:run);
SELECT parflow_cancel(:run);
-- caps: the run's max_parallel and an affinity rule hold ready tasks back
SELECT parflow_define('caps', '{"max_parallel": 3, "affinity": [{"agents": ["x"], "max_concurrent": 1}],
  "groups": [{"name": "g", "stages": [
    {"name": "x1", "agent": "x", "estimate": "9 min"}, {"name": "x2", "agent": "x", "estimate": "8 min"},
    {"name": "y1", "agent": "y", "estimate": "7 min"}, {"name": "y2", "agent": "y", "estimate": "6 min"},
    {"name": "y3", "agent": "y", "estimate": "5 min"}]}]}');
SELECT parflow_start('caps', parallel => true) AS caps \gset
SELECT parflow._dispatch();
SELECT stage, state, why FROM parflow.waiting WHERE run = :caps AND state = 'ready' ORDER BY task, why;
SELECT parflow_start('caps', parallel => false) AS caps_seq \gset
SELECT stage, state, why FROM parflow.waiting WHERE run = :caps_seq AND state = 'ready' ORDER BY task, why;
SELECT parflow_cancel(:caps);
SELECT parflow_cancel(:caps_seq);

-- Synthetic history: three finished runs with known durations (workflow hist,
-- the seed's spec again, with no other runs).
SELECT parflow_define('hist', pg_temp.seed_spec());
CREATE TEMP TABLE seed_plan AS
SELECT p.stage, extract(epoch FROM p.est_start) / 60 AS st, s.minutes
  FROM parflow_plan('hist', '{performance,security}') p JOIN seed_stage s ON s.name = p.stage;
CREATE FUNCTION pg_temp.finish_run(r bigint, base timestamptz, scale float8) RETURNS void LANGUAGE sql AS $$
    UPDATE parflow.task t SET state = 'succeeded', attempt = 1,
           started_at = base + make_interval(secs => 60 * x.st * scale),
           finished_at = base + make_interval(secs => 60 * (x.st + x.minutes) * scale),
           output = jsonb_build_object('stage', s.name)
      FROM parflow.run rn, parflow.stage s, pg_temp.seed_plan x
     WHERE rn.id = r AND t.run_id = r AND s.version_id = rn.version_id AND s.ord = t.stage_ord
       AND x.stage = s.name AND t.state <> 'skipped';
    UPDATE parflow.run SET state = 'succeeded', started_at = base,
           finished_at = base + make_interval(secs => 60 * 375 * scale) WHERE id = r;
$$;
-- every stage takes half its estimate, except research which takes double
UPDATE seed_plan SET minutes = minutes * CASE WHEN stage = 'research' THEN 2 ELSE 0.5 END;
SELECT parflow_start('hist', '{performance,security}', parallel => true) AS h1 \gset
SELECT parflow_start('hist', '{performance,security}', parallel => true) AS h2 \gset
SELECT pg_temp.finish_run(:h1, '2026-01-01 10:00+00', 1);
SELECT pg_temp.finish_run(:h2, '2026-01-02 10:00+00', 1);

-- Two runs are not enough (parflow.learn_min_runs = 3): estimates declared.
SELECT stage, declared, observed, samples, used, source FROM parflow_estimates('hist') WHERE stage IN ('research', 'backend');
SELECT parallel FROM parflow_estimate('hist', '{performance,security}');
SELECT parflow_start('hist', '{performance,security}', parallel => true) AS h3 \gset
SELECT pg_temp.finish_run(:h3, '2026-01-03 10:00+00', 1);
-- Three: the observed medians replace the estimates in plans and ranks.
SELECT stage, declared, observed, samples, used, source FROM parflow_estimates('hist') ORDER BY stage;
SELECT * FROM parflow_estimate('hist', '{performance,security}');
SELECT stage, est_start, est_finish, critical FROM parflow_plan('hist', '{performance,security}') WHERE stage IN ('research', 'backend', 'documentation');
-- runs started now are ranked and planned with them
SELECT parflow_start('hist', '{performance,security}', parallel => true) AS h4 \gset
SELECT planned FROM parflow_report(:h4);
SELECT parflow_cancel(:h4);
SET parflow.learn_min_runs = 0;
SELECT parallel AS declared_again FROM parflow_estimate('hist', '{performance,security}');
RESET parflow.learn_min_runs;
-- Only the workflow's last parflow.learn_window runs count: the last three
-- (h4 cancelled, h3, h2) hold two successes of each stage, the last four
-- three (samples counts every run, as parflow.stage_stats does).
SET parflow.learn_window = 3;
SELECT stage, samples, source FROM parflow_estimates('hist') WHERE stage IN ('research', 'backend');
SET parflow.learn_window = 4;
SELECT stage, samples, source FROM parflow_estimates('hist') WHERE stage IN ('research', 'backend');
SET parflow.learn_window = 0;
RESET parflow.learn_window;
SELECT stage, runs, p50, p90, mean, last FROM parflow.stage_stats WHERE workflow = 'hist' ORDER BY stage;

-- The Gantt chart of a finished run.
SELECT parflow_gantt(:h1, 50);
SELECT parflow_gantt_svg(:h1) AS svg \gset
SELECT :'svg' LIKE '<svg %</svg>' || E'\n' AS is_svg,
       (length(:'svg') - length(replace(:'svg', '<rect ', ''))) / 6 AS bars,
       :'svg' LIKE '%run ' || :h1 || ': hist, parallel, succeeded, took 6h15m%' AS titled;
SELECT xml_is_well_formed_document(:'svg') AS well_formed;
SELECT parflow_gantt_svg(NULL);
SELECT parflow_gantt(:h1, 5);
SELECT parflow_gantt(NULL);
SELECT parflow_gantt(-1);

-- Metrics
SELECT metric, value FROM parflow_metrics() WHERE metric LIKE 'parflow_runs%' OR metric LIKE 'parflow_tasks{state="succeeded"}';
-- the dispatcher's counters are the server's (their presence only here)
SELECT metric, value >= 0 AS counted FROM parflow_metrics()
 WHERE metric IN ('parflow_dispatch_passes_total', 'parflow_handover_notifications_total') ORDER BY metric;
-- No dispatcher serves this database: a completion cannot hand its slot
-- over (its successor waits for a pass), and nothing is queued.
SELECT parflow._note_dispatch('parflow_x', '{"kind": "dispatch"}') AS queued;

-- Housekeeping: events of runs finished longer ago than parflow.retention go,
-- their counts stay in the counters.
SELECT value AS dispatched_before FROM parflow_metrics() WHERE metric = 'parflow_events_total{kind="dispatched"}' \gset
SELECT count(*) AS events_h1 FROM parflow.events WHERE run = :h1;
SELECT parflow_housekeeping() > 0 AS deleted_some;
SELECT count(*) AS events_h1_after FROM parflow.events WHERE run IN (:h1, :h2, :h3);
SELECT count(*) > 0 AS events_of_recent_runs_kept FROM parflow.events WHERE run = :run;
SELECT value = :dispatched_before AS counter_kept FROM parflow_metrics() WHERE metric = 'parflow_events_total{kind="dispatched"}';
SELECT count(*) AS stats_kept FROM parflow.stage_stats WHERE workflow = 'hist';
SELECT parflow_housekeeping() AS nothing_left;

-- An agent's warm-up runs the agent path on a throwaway run and leaves nothing.
SELECT (SELECT count(*) FROM parflow.workflow) AS wf, (SELECT count(*) FROM parflow.run) AS runs,
       (SELECT count(*) FROM parflow.task) AS tasks, (SELECT count(*) FROM parflow.event) AS events \gset before_
SELECT parflow_warm_up('backend');
SELECT (SELECT count(*) FROM parflow.workflow) = :before_wf AND (SELECT count(*) FROM parflow.run) = :before_runs
   AND (SELECT count(*) FROM parflow.task) = :before_tasks AND (SELECT count(*) FROM parflow.event) = :before_events
       AS nothing_left;
SELECT parflow_warm_up(NULL);

-- pg_cron is not installed in this database: a clear error with a hint.
SELECT parflow_schedule('nightly', '0 2 * * *', 'sdlc');
SELECT parflow_unschedule('nightly');
SELECT parflow_schedule_housekeeping();

-- Roles and agent kinds.
SET ROLE parflow_agent;
SELECT count(*) FROM parflow.task;
SELECT parflow_start('sdlc');
SELECT parflow_allow_agent('parflow_agent', 'qa');
RESET ROLE;
CREATE ROLE pf_test_agent LOGIN IN ROLE parflow_agent;
CREATE ROLE pf_test_other LOGIN IN ROLE parflow_agent;
SELECT parflow_allow_agent('pf_test_agent', 'backend');
SELECT parflow_allow_agent('pf_test_agent', 'backend');
SELECT parflow_allow_agent('no_such_role', 'backend');
SELECT parflow_allow_agent('pf_test_agent', NULL);
SELECT * FROM parflow.agent_role ORDER BY 1, 2;
\c - pf_test_agent
SET client_min_messages = warning;
SELECT count(*) AS backend_claims FROM parflow_claim('backend', 'w');
SELECT count(*) FROM parflow_claim('frontend', 'w');
\c - pf_test_other
SELECT count(*) FROM parflow_claim('backend', 'w');
\c - postgres
SET client_min_messages = warning;
SELECT parflow_allow_agent('pf_test_other', '*');
\c - pf_test_other
SELECT count(*) AS any_kind FROM parflow_claim('frontend', 'w');
\c - postgres
SET client_min_messages = warning;
SELECT parflow_disallow_agent('pf_test_other', '*');
SELECT parflow_disallow_agent('pf_test_other', '*');
SELECT parflow_disallow_agent('pf_test_agent', 'backend');
-- an empty mapping lets every agent role claim every kind again
\c - pf_test_other
SELECT count(*) AS open_again FROM parflow_claim('frontend', 'w');
\c - postgres
SET client_min_messages = warning;
DROP ROLE pf_test_agent;
DROP ROLE pf_test_other;
DROP EXTENSION parflow;
