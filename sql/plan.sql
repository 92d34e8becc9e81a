-- parflow_plan and parflow_estimate on the seed's SDLC workflow, built from
-- a table of its stages the way an integration would, and their errors.
CREATE EXTENSION parflow;
SET client_min_messages = warning;
\i test/demo/sdlc_spec.sql
SELECT parflow_define('sdlc', pg_temp.seed_spec());

-- The seed's arithmetic, recomputed from the stage minutes: all eleven
-- stages add up to 540 min (9 h, not "~8.5 hours"); in parallel 375 min
-- (6 h 15, not "~5.5 hours"): 30.6 % faster, not 35 %.
SELECT sum(minutes) AS all_minutes,
       sum(minutes) FILTER (WHERE flag IS NULL) AS unconditional_minutes FROM seed_stage;
SELECT * FROM parflow_estimate('sdlc', '{performance,security}');
-- without the two conditional stages: 420 min against 315 min, 25 %
SELECT * FROM parflow_estimate('sdlc');
-- one conditional stage: the hardening group lasts 60 min either way
SELECT * FROM parflow_estimate('sdlc', '{security}');
-- one at a time, parallel equals sequential
SELECT * FROM parflow_estimate('sdlc', '{performance,security}', 1);
-- with a cap of 1 the plan is the spec order
SELECT stage, wave, est_start, est_finish, slack, critical FROM parflow_plan('sdlc', '{performance,security}', 1);
SELECT * FROM parflow_plan('sdlc', '{performance,security}');
SELECT * FROM parflow_plan('sdlc');

-- Stage-level edges beside barriers: qa_backend needs only backend, so it
-- starts while frontend is still running; an affinity rule holding the two
-- build agents to one at a time serialises them.
SELECT parflow_define('edges', '{"groups": [
  {"name": "build", "stages": [
    {"name": "backend",  "agent": "backend",  "estimate": "30 min", "produces": ["api"]},
    {"name": "frontend", "agent": "frontend", "estimate": "60 min"}]},
  {"name": "qa", "depends_on": [], "stages": [
    {"name": "qa_backend", "agent": "qa", "estimate": "20 min", "consumes": ["api"]}]},
  {"name": "release", "depends_on": ["build", "qa"], "parallel": false, "stages": [
    {"name": "notes", "agent": "docs", "estimate": "10 min"},
    {"name": "ship",  "agent": "devops", "estimate": "5 min"}]}]}');
SELECT * FROM parflow_plan('edges');
SELECT * FROM parflow_estimate('edges');
SELECT parflow_define('edges', '{"groups": [
  {"name": "build", "stages": [
    {"name": "backend",  "agent": "backend",  "estimate": "30 min"},
    {"name": "frontend", "agent": "frontend", "estimate": "60 min"}]}],
  "affinity": [{"agents": ["backend", "frontend"], "max_concurrent": 1, "resource_profile": "cpu"}]}');
SELECT stage, est_start, est_finish FROM parflow_plan('edges');
SELECT * FROM parflow_estimate('edges');

-- A list schedule that the plain critical-path order gets wrong: the best
-- plan tries other orders too and reaches the lower bound.
SELECT parflow_define('tricky', '{"groups": [{"name": "g", "stages": [
  {"name": "a", "agent": "x", "estimate": "3 min"},
  {"name": "b", "agent": "x", "estimate": "3 min"},
  {"name": "c", "agent": "x", "estimate": "2 min"},
  {"name": "d", "agent": "x", "estimate": "2 min"},
  {"name": "e", "agent": "x", "estimate": "2 min"}]}]}');
SELECT policy, makespan FROM unnest(ARRAY['fifo', 'cp', 'best']) policy,
       LATERAL parflow._plan_stats('tricky', '{}', 2, policy);
SELECT parallel, lower_bound, optimal FROM parflow_estimate('tricky', '{}', 2);
-- parflow.plan_effort bounds the search: at 0 the plan is the critical-path
-- order's, and nothing proves it shortest
SET parflow.plan_effort = 0;
SELECT parallel, lower_bound, optimal FROM parflow_estimate('tricky', '{}', 2);
SELECT makespan, lower_bound, optimal, proof, schedules FROM parflow._plan_stats('tricky', '{}', 2, 'best');
RESET parflow.plan_effort;
SHOW parflow.plan_effort;
SELECT makespan, lower_bound, optimal, proof FROM parflow._plan_stats('tricky', '{}', 2, 'best');

-- A lower bound above max(critical path, work / cap): four 3-minute stages,
-- each followed by a 7-minute one, on 3 slots.  The 7-minute stages start
-- at minute 3 at the earliest and two of them must share a slot, so no
-- schedule is shorter than 3 + 7 + 7 = 17 minutes; the release, tail and
-- energetic bounds prove it, where max(critical path, work / cap) says 14
-- (what policy cp, which computes no stronger bound, reports).
SELECT parflow_define('crowd', '{"groups": [{"name": "g", "stages": [
  {"name": "a", "agent": "x", "estimate": "3 min"}, {"name": "a2", "agent": "x", "estimate": "7 min", "depends_on": ["a"]},
  {"name": "b", "agent": "x", "estimate": "3 min"}, {"name": "b2", "agent": "x", "estimate": "7 min", "depends_on": ["b"]},
  {"name": "c", "agent": "x", "estimate": "3 min"}, {"name": "c2", "agent": "x", "estimate": "7 min", "depends_on": ["c"]},
  {"name": "d", "agent": "x", "estimate": "3 min"}, {"name": "d2", "agent": "x", "estimate": "7 min", "depends_on": ["d"]}]}]}');
SELECT critical_path, parallel, lower_bound, optimal FROM parflow_estimate('crowd', '{}', 3);
SELECT makespan, lower_bound, optimal, proof FROM parflow._plan_stats('crowd', '{}', 3, 'cp');

-- A plan can keep a slot idle.  Here every list schedule (the dispatcher
-- starting a ready stage whenever a slot is free) takes 9 minutes; the only
-- 8-minute schedule keeps a slot idle from minute 3 to 4, so that a2 and b2
-- take both slots at minute 4 and c comes after them.  The plan holds c for
-- a2 (held_for): the dispatcher does not start c before a2 has finished.
SELECT parflow_define('holdback', '{"groups": [{"name": "g", "stages": [
  {"name": "a", "agent": "x", "estimate": "3 min"},
  {"name": "b", "agent": "x", "estimate": "4 min"},
  {"name": "a2", "agent": "x", "estimate": "1 min", "depends_on": ["a", "b"]},
  {"name": "c", "agent": "x", "estimate": "3 min", "depends_on": ["a"]},
  {"name": "b2", "agent": "x", "estimate": "1 min", "depends_on": ["b"]},
  {"name": "z", "agent": "x", "estimate": "3 min", "depends_on": ["a2", "b2"]}]}]}');
SELECT parallel, lower_bound, optimal FROM parflow_estimate('holdback', '{}', 2);
SELECT makespan, lower_bound, optimal, proof FROM parflow._plan_stats('holdback', '{}', 2, 'best');
SELECT stage, est_start, est_finish, optimal, held_for FROM parflow_plan('holdback', '{}', 2);
SELECT makespan, optimal, held FROM parflow._plan_stats('holdback', '{}', 2, 'cp');

-- Errors
\set VERBOSITY default
SELECT * FROM parflow_plan(NULL);
SELECT * FROM parflow_plan('nope');
SELECT * FROM parflow_plan('sdcl');
SELECT * FROM parflow_plan('sdlc', '{}', 0);
SELECT * FROM parflow_plan('sdlc', ARRAY[NULL]::text[]);
SELECT * FROM parflow_plan('sdlc', '{{a,b},{c,d}}');
SELECT * FROM parflow_estimate(NULL);
SELECT * FROM parflow_estimate('nope');
SELECT * FROM parflow_estimate('sdlc', '{}', -3);
SELECT * FROM parflow._plan_stats('sdlc', '{}', NULL, 'random');
-- parflow.plan_effort: milliseconds from 0 to 60000
SET parflow.plan_effort = -1;
SET parflow.plan_effort = 60001;
SET parflow.plan_effort = 'lots';
SET parflow.plan_effort = '2min';
SET parflow.plan_effort = '1s';
SHOW parflow.plan_effort;
RESET parflow.plan_effort;
-- a NULL flags array means no flags
SELECT sequential FROM parflow_estimate('sdlc', NULL);
-- a verification of a stage its flag skips is not planned either (as a run skips it)
SELECT parflow_define('vskip', '{"groups": [{"name": "g", "stages": [
    {"name": "a", "agent": "x", "estimate": "10 min", "when": "f"},
    {"name": "chk", "agent": "y", "estimate": "5 min", "verifies": "a"},
    {"name": "b", "agent": "x", "estimate": "1 min"}]}]}');
SELECT string_agg(stage, ', ' ORDER BY stage) AS planned FROM parflow_plan('vskip');
SELECT string_agg(stage, ', ' ORDER BY stage) AS planned FROM parflow_plan('vskip', '{f}');
SELECT parflow_start('vskip', parallel => true) AS vrun \gset
SELECT stage, state FROM parflow.tasks WHERE run = :vrun ORDER BY task;
DROP EXTENSION parflow;
