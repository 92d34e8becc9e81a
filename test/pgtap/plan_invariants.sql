-- test/pgtap/plan_invariants.sql -- property tests of the planner.
--
-- The file defines, inside its transaction, workflows generated in SQL
-- (deterministically: every "random" choice is an md5 hash of a seed and
-- indexes, never random()), plans each of them under several caps and flag
-- sets with parflow_plan / parflow_estimate, and checks properties that every
-- correct schedule has:
--
--   * no stage starts before all of its dependencies (stage edges, group
--     barriers, and edges through skipped conditional stages) have finished;
--   * the number of running stages never exceeds the effective cap, nor the
--     stages of an affinity rule its max_concurrent;
--   * parallel >= lower_bound >= critical_path, lower_bound >= max(critical
--     path, ceil(work / cap)), parallel <= sequential, Graham's bound;
--   * the search (parflow.plan_effort): the same plan on every call, never
--     worse than the critical-path order it starts from, no plan under any
--     effort or policy shorter than a lower bound or a plan proven optimal,
--     optimal exactly when proven; the dispatch ranks (parflow._ranks),
--     list-scheduled the way the dispatcher does it (in this file, in
--     PL/pgSQL, a stage the plan holds waiting for the stage it is held
--     for), start every stage when the plan says; on tiny graphs, the plan
--     is as short as the shortest of all schedules, idle slots included
--     (the serial schedule generation scheme over every permutation tried
--     here), and proven optimal, and the lower bound is at most that;
--   * the numbers agree with each other and with an independent computation
--     of the critical path and earliest starts in SQL;
--   * waves, slack and critical flags are consistent;
--   * stages of a "parallel": false group never overlap;
--   * a new version changes the plan and leaves the old version alone.
--
-- Each check is a query returning the violating rows (is_empty), so that a
-- failure lists the workflow, flags, cap and stages involved.

BEGIN;
CREATE EXTENSION IF NOT EXISTS parflow;

SELECT plan(81);

------------------------------------------------------------------------------
-- Generators
------------------------------------------------------------------------------

-- A deterministic pseudo-random number in 0 .. 2^28-1 from (seed, a, b).
CREATE FUNCTION pg_temp.h(seed integer, a integer, b integer) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT ('x' || substr(md5(format('%s:%s:%s', seed, a, b)), 1, 7))::bit(28)::integer
$$;

-- One stage object.
CREATE FUNCTION pg_temp.stage(name text, agent text, minutes integer, depends_on text[] DEFAULT '{}')
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('name', name, 'agent', agent, 'estimate', minutes || ' min',
                              'depends_on', to_jsonb(depends_on))
$$;

-- A random DAG of n stages s1..sn in one group: stage i depends on 0 to
-- max_deps random stages among the `span` stages before it (a small
-- span makes long chains, a large one wide graphs), takes 1..60 min, and
-- is done by one of `kinds` agents k0, k1, ...
CREATE FUNCTION pg_temp.dag_spec(n integer, seed integer, kinds integer, max_deps integer, span integer)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('groups', jsonb_build_array(jsonb_build_object('name', 'main', 'stages',
        (SELECT jsonb_agg(pg_temp.stage('s' || i, 'k' || pg_temp.h(seed, i, 1) % kinds,
                                        1 + pg_temp.h(seed, i, 2) % 60,
                                        ARRAY(SELECT DISTINCT 's' || (i - 1 - pg_temp.h(seed, i, 10 + j) % least(i - 1, span))
                                                FROM generate_series(1, pg_temp.h(seed, i, 3) % (max_deps + 1)) j
                                               WHERE i > 1 ORDER BY 1))
                          ORDER BY i)
           FROM generate_series(1, n) i))))
$$;

------------------------------------------------------------------------------
-- The workflows (6)
------------------------------------------------------------------------------

-- Random DAGs of 30, 60 and 200 stages in one group, 5 agent kinds, each
-- stage depending on up to 3 earlier ones: any earlier one (wide), one of
-- the 6 before (deep), one of the 25 before.
SELECT is(parflow_define('pti_dag30', pg_temp.dag_spec(30, 30, 5, 3, 1000)), 1::bigint, 'defined pti_dag30 (random DAG, 30 stages)');
SELECT is(parflow_define('pti_dag60', pg_temp.dag_spec(60, 60, 5, 3, 6)), 1::bigint, 'defined pti_dag60 (random DAG, 60 stages)');
SELECT is(parflow_define('pti_dag200', pg_temp.dag_spec(200, 200, 5, 3, 25)), 1::bigint, 'defined pti_dag200 (random DAG, 200 stages)');

-- Four chains with random links between them (each stage follows the stage
-- 4 before it, and sometimes also a random earlier one): the chains cover
-- every stage, so no more than 4 stages are ever independent of each other,
-- and under the default cap of 4 nothing ever waits for capacity.
SELECT is(parflow_define('pti_chains4', jsonb_build_object('groups', jsonb_build_array(jsonb_build_object(
    'name', 'chains', 'stages',
    (SELECT jsonb_agg(pg_temp.stage('c' || i, 'k' || (i - 1) % 4, 1 + pg_temp.h(4, i, 2) % 60,
                                    ARRAY(SELECT DISTINCT d FROM unnest(ARRAY[
                                              CASE WHEN i > 4 THEN 'c' || (i - 4) END,
                                              CASE WHEN i > 1 AND pg_temp.h(4, i, 5) % 3 = 0
                                                   THEN 'c' || (1 + pg_temp.h(4, i, 6) % (i - 1)) END]) d
                                           WHERE d IS NOT NULL ORDER BY 1))
                      ORDER BY i)
       FROM generate_series(1, 40) i))))), 1::bigint, 'defined pti_chains4 (4 linked chains, 40 stages)');

-- Several groups: a diamond of groups (prep -> left, right -> join), a
-- sequential group, a group with no dependencies declared after the others,
-- a group that depends on the one before it by default; explicit
-- cross-group depends_on (also on a later-declared group, and on a
-- conditional stage), artifacts, a verification stage, and stages that run
-- only with the flags "extra" or "docs".
SELECT is(parflow_define('pti_groups', $json$
{"groups": [
  {"name": "prep", "stages": [
     {"name": "p_fetch",  "agent": "fetch", "estimate": "20 min", "produces": ["src"]},
     {"name": "p_schema", "agent": "db",    "estimate": "35 min", "produces": ["schema"]},
     {"name": "p_docs",   "agent": "docs",  "estimate": "10 min", "when": "docs"}]},
  {"name": "left", "depends_on": ["prep"], "parallel": false, "stages": [
     {"name": "l_model", "agent": "backend", "estimate": "30 min", "consumes": ["schema"]},
     {"name": "l_extra", "agent": "backend", "estimate": "25 min", "when": "extra"},
     {"name": "l_api",   "agent": "backend", "estimate": "40 min", "produces": ["api"], "depends_on": ["x_lint"]}]},
  {"name": "right", "depends_on": ["prep"], "stages": [
     {"name": "r_ui",     "agent": "frontend", "estimate": "45 min"},
     {"name": "r_assets", "agent": "frontend", "estimate": "15 min"},
     {"name": "r_extra",  "agent": "frontend", "estimate": "50 min", "when": "extra"},
     {"name": "r_i18n",   "agent": "frontend", "estimate": "20 min", "when": "docs"}]},
  {"name": "join", "depends_on": ["left", "right"], "stages": [
     {"name": "j_integrate", "agent": "qa", "estimate": "30 min", "consumes": ["api"]},
     {"name": "j_e2e",       "agent": "qa", "estimate": "55 min"},
     {"name": "j_check",     "agent": "qa", "estimate": "5 min", "verifies": "j_integrate"}]},
  {"name": "side", "depends_on": [], "stages": [
     {"name": "x_lint",   "agent": "lint",     "estimate": "12 min", "consumes": ["src"]},
     {"name": "x_audit",  "agent": "security", "estimate": "33 min", "depends_on": ["l_extra"]},
     {"name": "x_report", "agent": "docs",     "estimate": "8 min",  "produces": ["report"], "when": "docs"}]},
  {"name": "final", "parallel": false, "stages": [
     {"name": "f_pkg",   "agent": "release", "estimate": "18 min", "consumes": ["report"]},
     {"name": "f_notes", "agent": "docs",    "estimate": "6 min",  "when": "docs"},
     {"name": "f_ship",  "agent": "release", "estimate": "9 min",  "depends_on": ["j_e2e"]}]}]}
$json$), 1::bigint, 'defined pti_groups (diamond of groups, sequential groups, artifacts, conditions)');

-- Affinity rules and a workflow cap: two independent groups of random DAGs
-- (agents a..d); at most one of a/b and two of c at once; max_parallel 3.
SELECT is(parflow_define('pti_affinity', jsonb_build_object(
    'max_parallel', 3,
    'groups', jsonb_build_array(
        jsonb_build_object('name', 'one', 'stages',
            (SELECT jsonb_agg(pg_temp.stage('u' || i, chr(97 + pg_temp.h(5, i, 1) % 4), 5 + pg_temp.h(5, i, 2) % 40,
                                            ARRAY(SELECT DISTINCT 'u' || (1 + pg_temp.h(5, i, 10 + j) % (i - 1))
                                                    FROM generate_series(1, pg_temp.h(5, i, 3) % 3) j
                                                   WHERE i > 1 ORDER BY 1)) ORDER BY i)
               FROM generate_series(1, 12) i)),
        jsonb_build_object('name', 'two', 'depends_on', '[]'::jsonb, 'stages',
            (SELECT jsonb_agg(pg_temp.stage('v' || i, chr(97 + pg_temp.h(6, i, 1) % 4), 5 + pg_temp.h(6, i, 2) % 40,
                                            ARRAY(SELECT DISTINCT 'v' || (1 + pg_temp.h(6, i, 10 + j) % (i - 1))
                                                    FROM generate_series(1, pg_temp.h(6, i, 3) % 3) j
                                                   WHERE i > 1 ORDER BY 1)) ORDER BY i)
               FROM generate_series(1, 12) i))),
    'affinity', '[{"agents": ["a", "b"], "max_concurrent": 1, "resource_profile": "cpu"},
                  {"agents": ["c"], "max_concurrent": 2}]'::jsonb)), 1::bigint,
    'defined pti_affinity (affinity rules, max_parallel 3)');

------------------------------------------------------------------------------
-- The definitions say what the specs say (2): the dependency tables, derived
-- again from the stored specs, so that the plan checks below, which read
-- them, check the planner against the specs.
------------------------------------------------------------------------------

CREATE TEMP TABLE pf_spec_stage AS
SELECT w.name AS wf, v.id AS vid, g.gi, g.g, s.si, s.s, s.s->>'name' AS name
  FROM parflow.workflow w
  JOIN parflow.workflow_version v ON v.workflow_id = w.id
 CROSS JOIN jsonb_array_elements(v.spec->'groups') WITH ORDINALITY g(g, gi)
 CROSS JOIN jsonb_array_elements(g.g->'stages') WITH ORDINALITY s(s, si)
 WHERE w.name LIKE 'pti\_%';

-- Stage edges (stage, dependency), by stage names: explicit depends_on,
-- consumed artifacts, order in a sequential group, verifications (after the
-- verified stage and the group's other work).
SELECT set_eq($$
    SELECT v.id AS vid, s.name AS stage, d.name AS dependency
      FROM parflow.stage_dep e
      JOIN parflow.workflow_version v ON v.id = e.version_id
      JOIN parflow.workflow w ON w.id = v.workflow_id
      JOIN parflow.stage s ON s.version_id = e.version_id AND s.ord = e.stage_ord
      JOIN parflow.stage d ON d.version_id = e.version_id AND d.ord = e.dep_ord
     WHERE w.name LIKE 'pti\_%'
$$, $$
    SELECT s.vid, s.name AS stage, d AS dependency
      FROM pf_spec_stage s, jsonb_array_elements_text(s.s->'depends_on') d
    UNION
    SELECT c.vid, c.name, p.name
      FROM pf_spec_stage c, jsonb_array_elements_text(c.s->'consumes') a
      JOIN pf_spec_stage p ON p.s->'produces' ? a
     WHERE p.vid = c.vid AND p.name <> c.name
    UNION
    SELECT s.vid, s.name, prev.name
      FROM pf_spec_stage s JOIN pf_spec_stage prev ON prev.vid = s.vid AND prev.gi = s.gi AND prev.si = s.si - 1
     WHERE s.g->'parallel' = 'false'
    UNION
    SELECT s.vid, s.name, s.s->>'verifies' FROM pf_spec_stage s WHERE s.s ? 'verifies'
    UNION
    SELECT s.vid, s.name, w.name
      FROM pf_spec_stage s JOIN pf_spec_stage w ON w.vid = s.vid AND w.gi = s.gi
     WHERE s.s ? 'verifies' AND NOT w.s ? 'verifies'
$$, 'parflow.stage_dep holds exactly the stage edges of the specs');

-- Group barriers: depends_on when given, else the group before.
SELECT set_eq($$
    SELECT v.id AS vid, g.name AS group_name, d.name AS dependency
      FROM parflow.group_dep e
      JOIN parflow.workflow_version v ON v.id = e.version_id
      JOIN parflow.workflow w ON w.id = v.workflow_id
      JOIN parflow.stage_group g ON g.version_id = e.version_id AND g.ord = e.group_ord
      JOIN parflow.stage_group d ON d.version_id = e.version_id AND d.ord = e.dep_ord
     WHERE w.name LIKE 'pti\_%'
$$, $$
    SELECT DISTINCT s.vid, s.g->>'name' AS group_name, d AS dependency FROM pf_spec_stage s, jsonb_array_elements_text(s.g->'depends_on') d
    UNION
    SELECT DISTINCT s.vid, s.g->>'name', p.g->>'name'
      FROM pf_spec_stage s JOIN pf_spec_stage p ON p.vid = s.vid AND p.gi = s.gi - 1
     WHERE NOT s.g ? 'depends_on'
$$, 'parflow.group_dep holds exactly the group barriers of the specs');

------------------------------------------------------------------------------
-- Plan every workflow under every cap (and flag set)
------------------------------------------------------------------------------

-- A graph whose shortest schedule under a cap of 3 keeps a slot idle (d,
-- ready at once, held until a is done; sql/hold.sql runs it).
SELECT parflow_define('pti_idle', '{"groups": [{"name": "g", "stages": [
  {"name": "a", "agent": "x", "estimate": "2 min"}, {"name": "b", "agent": "x", "estimate": "1 min"},
  {"name": "c", "agent": "x", "estimate": "4 min", "depends_on": ["b"]}, {"name": "d", "agent": "x", "estimate": "3 min"},
  {"name": "e", "agent": "x", "estimate": "4 min", "depends_on": ["b"]},
  {"name": "f", "agent": "x", "estimate": "1 min", "depends_on": ["a", "b", "e"]},
  {"name": "g", "agent": "x", "estimate": "1 min", "depends_on": ["c", "e"]}]}]}');

-- One case per (workflow, flags, call's max_parallel).  eff_cap is the cap
-- the plan must honour: min(parflow.max_parallel_stages, the workflow's
-- max_parallel, the call's max_parallel).
CREATE TEMP TABLE pf_case AS
SELECT row_number() OVER (ORDER BY w.wf, w.flags, c.cap NULLS LAST)::integer AS case_id,
       w.wf, w.flags, c.cap AS call_cap, v.id AS vid, v.max_parallel AS wf_cap,
       EXISTS (SELECT FROM parflow.affinity a WHERE a.version_id = v.id) AS has_affinity
  FROM (VALUES ('pti_dag30', '{}'::text[]), ('pti_dag60', '{}'), ('pti_dag200', '{}'),
               ('pti_chains4', '{}'), ('pti_affinity', '{}'), ('pti_idle', '{}'),
               ('pti_groups', '{}'), ('pti_groups', '{extra}'), ('pti_groups', '{extra,docs}')) w(wf, flags)
 CROSS JOIN (VALUES (1), (2), (3), (4), (50), (NULL)) c(cap)
  JOIN parflow.workflow wf ON wf.name = w.wf
  JOIN LATERAL (SELECT * FROM parflow.workflow_version v WHERE v.workflow_id = wf.id
                 ORDER BY v.version DESC LIMIT 1) v ON true;

CREATE TEMP TABLE pf_plan AS
SELECT c.case_id, p.* FROM pf_case c CROSS JOIN LATERAL parflow_plan(c.wf, c.flags, c.call_cap) p;
CREATE TEMP TABLE pf_est AS
SELECT c.case_id, e.* FROM pf_case c CROSS JOIN LATERAL parflow_estimate(c.wf, c.flags, c.call_cap) e;

-- (the GUC exists once the library is loaded, which the calls above did)
ALTER TABLE pf_case ADD COLUMN eff_cap integer;
UPDATE pf_case SET eff_cap = least(current_setting('parflow.max_parallel_stages')::integer, wf_cap, call_cap);

-- Microseconds of an interval, exactly.
CREATE FUNCTION pg_temp.us(i interval) RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT extract(epoch FROM i) * 1000000
$$;

-- Planned stages with their definition.
CREATE TEMP TABLE pf_pl AS
SELECT c.case_id, c.wf, c.flags, c.call_cap, c.eff_cap, c.vid, s.ord, s.name, s.agent, s.estimate,
       g.ord AS group_ord, g.parallel AS group_parallel,
       p.wave, p.est_start, p.est_finish, p.slack, p.critical
  FROM pf_plan p
  JOIN pf_case c USING (case_id)
  JOIN parflow.stage s ON s.version_id = c.vid AND s.name = p.stage
  JOIN parflow.stage_group g ON g.version_id = s.version_id AND g.ord = s.group_ord;
CREATE INDEX ON pf_pl (case_id, ord);
CREATE INDEX ON pf_plan (case_id);
ANALYZE pf_case, pf_plan, pf_est, pf_pl;

------------------------------------------------------------------------------
-- Dependencies, independently of the planner
------------------------------------------------------------------------------

-- Direct dependencies between stages: stage edges, plus group barriers (a
-- stage depends on every stage of every group its group depends on).
CREATE TEMP TABLE pf_direct AS
SELECT version_id AS vid, stage_ord, dep_ord FROM parflow.stage_dep
 WHERE version_id IN (SELECT vid FROM pf_case)
UNION
SELECT s.version_id, s.ord, d.ord
  FROM parflow.group_dep gd
  JOIN parflow.stage s ON s.version_id = gd.version_id AND s.group_ord = gd.group_ord
  JOIN parflow.stage d ON d.version_id = gd.version_id AND d.group_ord = gd.dep_ord
 WHERE gd.version_id IN (SELECT vid FROM pf_case);
CREATE INDEX ON pf_direct (vid, stage_ord);

-- All transitive dependencies: a skipped stage passes its own dependencies
-- on, so checking planned stages against their transitive dependencies that
-- are planned covers the edges through skipped stages.
CREATE TEMP TABLE pf_closure AS
WITH RECURSIVE c(vid, stage_ord, dep_ord) AS (
    SELECT vid, stage_ord, dep_ord FROM pf_direct
    UNION
    SELECT c.vid, c.stage_ord, d.dep_ord FROM c JOIN pf_direct d ON d.vid = c.vid AND d.stage_ord = c.dep_ord
)
SELECT * FROM c;
CREATE INDEX ON pf_closure (vid, stage_ord);
CREATE INDEX ON pf_closure (vid, dep_ord);
ANALYZE pf_direct, pf_closure;

-- The stages each flag set runs (when_flag absent or among the flags), with
-- their earliest start (es) and bottom level (longest path from their start
-- to the end) over the planned stages, computed here in SQL: stages are
-- processed in order of their number of ancestors (resp. descendants), which
-- is a topological order of a transitive closure.
CREATE TEMP TABLE pf_node AS
SELECT DISTINCT c.vid, c.flags, s.ord, pg_temp.us(s.estimate) AS est,
       0::numeric AS es, 0::numeric AS bottom, 0 AS anc, 0 AS des
  FROM pf_case c JOIN parflow.stage s ON s.version_id = c.vid
 WHERE s.when_flag IS NULL OR s.when_flag = ANY (c.flags);
CREATE INDEX ON pf_node (vid, flags, ord);
ANALYZE pf_node;

-- Transitive dependencies between stages of the same flag set.
CREATE TEMP TABLE pf_pcl AS
SELECT n.vid, n.flags, cl.stage_ord, cl.dep_ord
  FROM pf_node n
  JOIN pf_closure cl ON cl.vid = n.vid AND cl.stage_ord = n.ord
  JOIN pf_node d ON d.vid = n.vid AND d.flags = n.flags AND d.ord = cl.dep_ord;
CREATE INDEX ON pf_pcl (vid, flags, stage_ord);
CREATE INDEX ON pf_pcl (vid, flags, dep_ord);
ANALYZE pf_pcl;

UPDATE pf_node n SET
    anc = (SELECT count(*) FROM pf_pcl p WHERE p.vid = n.vid AND p.flags = n.flags AND p.stage_ord = n.ord),
    des = (SELECT count(*) FROM pf_pcl p WHERE p.vid = n.vid AND p.flags = n.flags AND p.dep_ord = n.ord);

DO $$
DECLARE
    k integer;
BEGIN
    FOR k IN SELECT DISTINCT anc FROM pf_node WHERE anc > 0 ORDER BY 1 LOOP
        UPDATE pf_node n SET es = (SELECT max(d.es + d.est) FROM pf_pcl p
                                     JOIN pf_node d ON d.vid = p.vid AND d.flags = p.flags AND d.ord = p.dep_ord
                                    WHERE p.vid = n.vid AND p.flags = n.flags AND p.stage_ord = n.ord)
         WHERE n.anc = k;
    END LOOP;
    UPDATE pf_node SET bottom = est WHERE des = 0;
    FOR k IN SELECT DISTINCT des FROM pf_node WHERE des > 0 ORDER BY 1 LOOP
        UPDATE pf_node n SET bottom = n.est + (SELECT max(s.bottom) FROM pf_pcl p
                                                 JOIN pf_node s ON s.vid = p.vid AND s.flags = p.flags AND s.ord = p.stage_ord
                                                WHERE p.vid = n.vid AND p.flags = n.flags AND p.dep_ord = n.ord)
         WHERE n.des = k;
    END LOOP;
END
$$;

-- Per case: the work, critical path and cap, as this file computes them,
-- beside what parflow_estimate and parflow_plan say.
CREATE TEMP VIEW pf_numbers AS
SELECT c.case_id, c.wf, c.flags, c.call_cap, c.eff_cap AS m, c.has_affinity,
       (SELECT sum(n.est) FROM pf_node n WHERE n.vid = c.vid AND n.flags = c.flags) AS work,
       (SELECT max(n.es + n.est) FROM pf_node n WHERE n.vid = c.vid AND n.flags = c.flags) AS cp,
       (SELECT max(pg_temp.us(p.est_finish)) FROM pf_plan p WHERE p.case_id = c.case_id) AS max_finish,
       pg_temp.us(e.sequential) AS sequential, pg_temp.us(e.parallel) AS parallel,
       pg_temp.us(e.critical_path) AS critical_path, pg_temp.us(e.lower_bound) AS lower_bound,
       e.savings_pct
  FROM pf_case c JOIN pf_est e USING (case_id);

------------------------------------------------------------------------------
-- Per workflow (6 x 4): dependencies, cap, estimate consistency, waves
------------------------------------------------------------------------------

-- 1. No stage starts before each of its (transitive, planned) dependencies
--    finishes.
CREATE TEMP VIEW pf_v_deps AS
SELECT v.wf, v.flags, v.call_cap, v.name AS stage, v.est_start, d.name AS dependency, d.est_finish
  FROM pf_pl v
  JOIN pf_closure cl ON cl.vid = v.vid AND cl.stage_ord = v.ord
  JOIN pf_pl d ON d.case_id = v.case_id AND d.ord = cl.dep_ord
 WHERE v.est_start < d.est_finish;

-- 2. At every start instant, the stages running number at most the
--    effective cap.
CREATE TEMP VIEW pf_v_cap AS
SELECT t.wf, t.flags, t.call_cap, t.eff_cap, t.est_start AS at, count(*) AS running,
       string_agg(r.name, ' ' ORDER BY r.name) AS stages
  FROM (SELECT DISTINCT case_id, wf, flags, call_cap, eff_cap, est_start FROM pf_pl) t
  JOIN pf_pl r ON r.case_id = t.case_id AND r.est_start <= t.est_start AND r.est_finish > t.est_start
 GROUP BY t.case_id, t.wf, t.flags, t.call_cap, t.eff_cap, t.est_start
HAVING count(*) > t.eff_cap;

-- 4. parallel >= lower_bound >= critical_path; parallel <= sequential;
--    sequential = the work of the planned stages; max(est_finish) =
--    parallel; critical_path = the longest path computed here.
CREATE TEMP VIEW pf_v_estimate AS
SELECT * FROM pf_numbers
 WHERE NOT (parallel >= lower_bound AND lower_bound >= critical_path AND parallel <= sequential
            AND sequential = work AND max_finish = parallel AND critical_path = cp)
    OR max_finish IS NULL;

-- 8. A stage's wave is greater than the wave of each planned dependency.
CREATE TEMP VIEW pf_v_waves AS
SELECT v.wf, v.flags, v.call_cap, v.name AS stage, v.wave, d.name AS dependency, d.wave AS dependency_wave
  FROM pf_pl v
  JOIN pf_closure cl ON cl.vid = v.vid AND cl.stage_ord = v.ord
  JOIN pf_pl d ON d.case_id = v.case_id AND d.ord = cl.dep_ord
 WHERE v.wave <= d.wave OR v.wave IS NULL OR v.wave < 1;

SELECT is_empty(format('SELECT * FROM pf_v_deps WHERE wf = %L ORDER BY 1, 2, 3, 4, 6', wf),
                format('%s: no stage starts before its dependencies finish (all caps and flags)', wf))
  FROM unnest(ARRAY['pti_dag30', 'pti_dag60', 'pti_dag200', 'pti_chains4', 'pti_groups', 'pti_affinity']) wf;
SELECT is_empty(format('SELECT * FROM pf_v_cap WHERE wf = %L ORDER BY 1, 2, 3, 5', wf),
                format('%s: running stages never exceed the effective cap', wf))
  FROM unnest(ARRAY['pti_dag30', 'pti_dag60', 'pti_dag200', 'pti_chains4', 'pti_groups', 'pti_affinity']) wf;
SELECT is_empty(format('SELECT * FROM pf_v_estimate WHERE wf = %L ORDER BY case_id', wf),
                format('%s: parallel >= lower_bound >= critical_path (= longest path), parallel <= sequential = work, max(est_finish) = parallel', wf))
  FROM unnest(ARRAY['pti_dag30', 'pti_dag60', 'pti_dag200', 'pti_chains4', 'pti_groups', 'pti_affinity']) wf;
SELECT is_empty(format('SELECT * FROM pf_v_waves WHERE wf = %L ORDER BY 1, 2, 3, 4, 6', wf),
                format('%s: a stage''s wave is above the waves of its dependencies', wf))
  FROM unnest(ARRAY['pti_dag30', 'pti_dag60', 'pti_dag200', 'pti_chains4', 'pti_groups', 'pti_affinity']) wf;

------------------------------------------------------------------------------
-- All cases (24)
------------------------------------------------------------------------------

-- The plan has one row per stage that runs: every unconditional stage, and
-- the conditional ones whose flag is given; nothing else, nothing twice.
SELECT is_empty($$
    SELECT c.wf, c.flags, c.call_cap, s.name, count(p.stage) AS rows_in_plan,
           (s.when_flag IS NULL OR s.when_flag = ANY (c.flags)) AS should_run
      FROM pf_case c
      JOIN parflow.stage s ON s.version_id = c.vid
      LEFT JOIN pf_plan p ON p.case_id = c.case_id AND p.stage = s.name
     GROUP BY c.case_id, c.wf, c.flags, c.call_cap, s.name, s.when_flag
    HAVING count(p.stage) <> CASE WHEN s.when_flag IS NULL OR s.when_flag = ANY (c.flags) THEN 1 ELSE 0 END
    UNION ALL
    SELECT c.wf, c.flags, c.call_cap, p.stage, 1, NULL
      FROM pf_plan p JOIN pf_case c USING (case_id)
     WHERE NOT EXISTS (SELECT FROM parflow.stage s WHERE s.version_id = c.vid AND s.name = p.stage)
     ORDER BY 1, 2, 3, 4
$$, 'every plan has exactly the stages that run under its flags, once each');

-- Agent and group columns come from the definition.
SELECT is_empty($$
    SELECT c.wf, c.flags, c.call_cap, p.stage, p.agent, p.group_name
      FROM pf_plan p JOIN pf_case c USING (case_id)
      JOIN parflow.stage s ON s.version_id = c.vid AND s.name = p.stage
      JOIN parflow.stage_group g ON g.version_id = s.version_id AND g.ord = s.group_ord
     WHERE p.agent IS DISTINCT FROM s.agent OR p.group_name IS DISTINCT FROM g.name
$$, 'plan rows carry the stage''s agent and group');

-- A stage takes its estimate, from a start at or after 0; the plan starts at 0.
SELECT is_empty($$
    SELECT wf, flags, call_cap, name, est_start, est_finish, estimate FROM pf_pl
     WHERE est_finish - est_start <> estimate OR est_start < interval '0'
    UNION ALL
    SELECT c.wf, c.flags, c.call_cap, NULL, min(p.est_start), NULL, NULL
      FROM pf_plan p JOIN pf_case c USING (case_id)
     GROUP BY c.case_id, c.wf, c.flags, c.call_cap HAVING min(p.est_start) <> interval '0'
$$, 'est_finish - est_start = estimate, est_start >= 0, and every plan starts at 0');

-- 3. The affinity rules are honoured at every start instant.
SELECT is_empty($$
    SELECT t.wf, t.call_cap, a.agents, a.max_concurrent, t.est_start AS at, count(*) AS running,
           string_agg(r.name, ' ' ORDER BY r.name) AS stages
      FROM (SELECT DISTINCT case_id, vid, wf, call_cap, est_start FROM pf_pl) t
      JOIN parflow.affinity a ON a.version_id = t.vid
      JOIN pf_pl r ON r.case_id = t.case_id AND r.est_start <= t.est_start AND r.est_finish > t.est_start
                  AND r.agent = ANY (a.agents)
     GROUP BY t.case_id, t.wf, t.call_cap, a.ord, a.agents, a.max_concurrent, t.est_start
    HAVING count(*) > a.max_concurrent
     ORDER BY 1, 2, 5
$$, 'the stages of an affinity rule never run more than max_concurrent at once');

-- ... and they bind: in pti_affinity, a/b stages never overlap.
SELECT is_empty($$
    SELECT x.wf, x.call_cap, x.name, y.name
      FROM pf_pl x JOIN pf_pl y ON y.case_id = x.case_id AND x.ord < y.ord
     WHERE x.wf = 'pti_affinity' AND x.agent IN ('a', 'b') AND y.agent IN ('a', 'b')
       AND x.est_start < y.est_finish AND y.est_start < x.est_finish
$$, 'pti_affinity: no two stages of agents a and b overlap (max_concurrent 1)');

-- The workflow's max_parallel caps the plan: pti_affinity never runs more
-- than 3 stages, whatever the call asks.
SELECT is_empty($$
    SELECT * FROM pf_v_cap WHERE wf = 'pti_affinity' AND running > 3
$$, 'pti_affinity: never more than its max_parallel (3) stages at once');

-- 4. lower_bound >= max(critical_path, ceil(work / cap)): the release,
--    tail and energetic bounds can only raise it (and parallel >= it, above).
SELECT is_empty($$
    SELECT case_id, wf, flags, call_cap, m, lower_bound, critical_path, work,
           greatest(critical_path, ceil(work / m)) AS simple_bound
      FROM pf_numbers
     WHERE lower_bound < greatest(critical_path, ceil(work / m))
$$, 'lower_bound >= max(critical_path, ceil(work / cap))');

-- savings_pct = 100 * (sequential - parallel) / sequential, to 0.1.
SELECT is_empty($$
    SELECT case_id, wf, flags, call_cap, sequential, parallel, savings_pct FROM pf_numbers
     WHERE savings_pct <> round(100 * (sequential - parallel) / sequential, 1)
$$, 'savings_pct = 100 * (sequential - parallel) / sequential, rounded to 0.1');

-- 5. Graham's bound for list schedules, without affinity rules:
--    makespan <= W/m + (1 - 1/m) * CP.
SELECT is_empty($$
    SELECT case_id, wf, flags, call_cap, m, parallel, work, cp,
           work / m + (1 - 1.0 / m) * cp AS graham_bound
      FROM pf_numbers
     WHERE NOT has_affinity AND parallel > work / m + (1 - 1.0 / m) * cp + 1
$$, 'Graham''s bound: parallel <= work/cap + (1 - 1/cap) * critical_path (no affinity)');

-- 6. One at a time, the parallel makespan is the sequential one and no two
--    stages overlap.
SELECT is_empty($$
    SELECT case_id, wf, flags, call_cap, sequential, parallel FROM pf_numbers
     WHERE m = 1 AND parallel <> sequential
$$, 'with an effective cap of 1, parallel = sequential');
SELECT cmp_ok((SELECT count(*) FROM pf_case WHERE eff_cap = 1), '>=', 8::bigint,
              'every workflow was planned with max_parallel 1');

-- ... and when capacity never binds (pti_chains4: width 4, cap 4), the plan
-- is the earliest-start schedule: parallel = critical_path, every stage
-- starts at its earliest start, and the critical stages are those on a
-- longest path.
SELECT is_empty($$
    SELECT case_id, call_cap, parallel, critical_path, cp FROM pf_numbers
     WHERE wf = 'pti_chains4' AND m = 4 AND NOT (parallel = critical_path AND critical_path = cp)
$$, 'pti_chains4, cap 4: parallel = critical_path');
SELECT is_empty($$
    SELECT p.call_cap, p.name, pg_temp.us(p.est_start) AS est_start_us, n.es AS earliest_us,
           p.critical, n.es + n.bottom = (SELECT max(x.es + x.est) FROM pf_node x
                                           WHERE x.vid = n.vid AND x.flags = n.flags) AS on_longest_path
      FROM pf_pl p JOIN pf_node n ON n.vid = p.vid AND n.flags = p.flags AND n.ord = p.ord
     WHERE p.wf = 'pti_chains4' AND p.eff_cap = 4
       AND (pg_temp.us(p.est_start) <> n.es
            OR p.critical <> (n.es + n.bottom = (SELECT max(x.es + x.est) FROM pf_node x
                                                  WHERE x.vid = n.vid AND x.flags = n.flags)))
     ORDER BY 1, 2
$$, 'pti_chains4, cap 4: every stage starts at its earliest start; critical = on a longest path');

-- 7. Slack is never negative, a stage is critical exactly when its slack is
--    0, and every plan has a critical stage, among them one that ends last.
SELECT is_empty($$
    SELECT wf, flags, call_cap, name, slack, critical FROM pf_pl
     WHERE slack IS NULL OR critical IS NULL OR slack < interval '0' OR critical <> (slack = interval '0')
$$, 'slack >= 0, and critical exactly when slack = 0');
SELECT is_empty($$
    SELECT c.wf, c.flags, c.call_cap FROM pf_case c
     WHERE NOT EXISTS (SELECT FROM pf_plan p
                        WHERE p.case_id = c.case_id AND p.critical
                          AND p.est_finish = (SELECT max(q.est_finish) FROM pf_plan q WHERE q.case_id = c.case_id))
$$, 'every plan has a critical stage that finishes last');

-- A stage's slack cannot let it finish after the makespan.
SELECT is_empty($$
    SELECT p.wf, p.flags, p.call_cap, p.name, p.est_finish, p.slack, e.parallel
      FROM pf_pl p JOIN pf_est e USING (case_id)
     WHERE p.est_finish + p.slack > e.parallel
$$, 'est_finish + slack <= parallel');

-- 8. Waves are the topological levels of the planned stages: 1 + the
--    highest wave among a stage's (transitive) planned dependencies.
SELECT is_empty($$
    SELECT v.wf, v.flags, v.call_cap, v.name, v.wave,
           1 + coalesce((SELECT max(d.wave) FROM pf_closure cl
                           JOIN pf_pl d ON d.case_id = v.case_id AND d.ord = cl.dep_ord
                          WHERE cl.vid = v.vid AND cl.stage_ord = v.ord), 0) AS expected
      FROM pf_pl v
     WHERE v.wave <> 1 + coalesce((SELECT max(d.wave) FROM pf_closure cl
                                     JOIN pf_pl d ON d.case_id = v.case_id AND d.ord = cl.dep_ord
                                    WHERE cl.vid = v.vid AND cl.stage_ord = v.ord), 0)
     ORDER BY 1, 2, 3, 4
$$, 'wave = 1 + the highest wave of the stage''s planned dependencies');

-- 9. No two stages of a "parallel": false group overlap.
SELECT is_empty($$
    SELECT x.wf, x.flags, x.call_cap, x.name, x.est_start, x.est_finish, y.name, y.est_start, y.est_finish
      FROM pf_pl x JOIN pf_pl y ON y.case_id = x.case_id AND y.group_ord = x.group_ord AND x.ord < y.ord
     WHERE NOT x.group_parallel
       AND x.est_start < y.est_finish AND y.est_start < x.est_finish
$$, 'stages of a sequential group never overlap');
-- ... and run in the order given.
SELECT is_empty($$
    SELECT x.wf, x.flags, x.call_cap, x.name, x.est_start, y.name, y.est_start
      FROM pf_pl x JOIN pf_pl y ON y.case_id = x.case_id AND y.group_ord = x.group_ord AND x.ord < y.ord
     WHERE NOT x.group_parallel AND y.est_start < x.est_finish
$$, 'stages of a sequential group run in spec order');

-- The plan depends on the effective cap only: calls whose caps come to the
-- same effective cap (e.g. 4, 50 and NULL under the default global cap of
-- 4; 3, 4, 50 and NULL for pti_affinity) get the same plan.
SELECT is_empty($$
    SELECT a.wf, a.flags, a.call_cap, b.call_cap, a.eff_cap
      FROM pf_case a JOIN pf_case b
        ON b.wf = a.wf AND b.flags = a.flags AND b.eff_cap = a.eff_cap AND b.case_id > a.case_id
     WHERE EXISTS (SELECT stage, agent, group_name, wave, est_start, est_finish, slack, critical
                     FROM pf_plan WHERE case_id = a.case_id
                   EXCEPT ALL
                   SELECT stage, agent, group_name, wave, est_start, est_finish, slack, critical
                     FROM pf_plan WHERE case_id = b.case_id)
        OR (SELECT count(*) FROM pf_plan WHERE case_id = a.case_id)
           <> (SELECT count(*) FROM pf_plan WHERE case_id = b.case_id)
$$, 'calls that come to the same effective cap get the same plan');

-- Planning is deterministic, NULL flags mean no flags, unknown flags change
-- nothing, and a cap below 1 is refused.
SELECT results_eq(
    $$SELECT * FROM parflow_plan('pti_dag200', '{}', 3)$$,
    $$SELECT * FROM parflow_plan('pti_dag200', '{}', 3)$$,
    'parflow_plan is deterministic (same call, same rows in the same order)');
SELECT results_eq(
    $$SELECT * FROM parflow_plan('pti_groups', NULL, 2)$$,
    $$SELECT * FROM parflow_plan('pti_groups', '{}', 2)$$,
    'flags NULL plans like no flags');
SELECT results_eq(
    $$SELECT * FROM parflow_estimate('pti_groups', '{extra,no_such_flag}')$$,
    $$SELECT * FROM parflow_estimate('pti_groups', '{extra}')$$,
    'a flag no stage names changes nothing');
SELECT throws_ok($$SELECT * FROM parflow_plan('pti_dag30', '{}', 0)$$, '22023', NULL,
                 'max_parallel 0 is refused');

------------------------------------------------------------------------------
-- 11. The search (9)
------------------------------------------------------------------------------

-- Every case again through parflow._plan_stats: at the default effort, with
-- no search (0), with more (200 ms), and in the plain orders cp and fifo.
CREATE TEMP TABLE pf_search (case_id integer, effort integer, policy text, makespan numeric,
                             lower_bound numeric, optimal boolean, proof text);
DO $$
DECLARE
    e integer;
    p text;
BEGIN
    FOR e, p IN SELECT * FROM (VALUES (50, 'best'), (0, 'best'), (200, 'best'), (50, 'cp'), (50, 'fifo')) x LOOP
        PERFORM set_config('parflow.plan_effort', e::text, true);
        INSERT INTO pf_search
        SELECT c.case_id, e, p, pg_temp.us(st.makespan), pg_temp.us(st.lower_bound), st.optimal, st.proof
          FROM pf_case c, LATERAL parflow._plan_stats(c.wf, c.flags, c.call_cap, p) st;
    END LOOP;
END
$$;
RESET parflow.plan_effort;

-- The budget is counted in units of work, not read from a clock: the same
-- call gives the same plan (as parflow_estimate gave it above).
SELECT is_empty($$
    SELECT n.case_id, n.wf, n.call_cap, n.parallel, s.makespan, n.lower_bound, s.lower_bound,
           e.optimal, s.optimal
      FROM pf_numbers n JOIN pf_est e USING (case_id)
      JOIN pf_search s ON s.case_id = n.case_id AND s.effort = 50 AND s.policy = 'best'
     WHERE (n.parallel, n.lower_bound, e.optimal) IS DISTINCT FROM (s.makespan, s.lower_bound, s.optimal)
$$, 'the search is repeatable: _plan_stats at the default effort = parflow_estimate');

-- optimal exactly when proven; proven by the bound exactly when the plan
-- meets it; a plan that is not proven is above the bound.
SELECT is_empty($$
    SELECT * FROM pf_search
     WHERE optimal <> (proof IS NOT NULL)
        OR (proof = 'bound') <> (makespan = lower_bound)
        OR (proof IS NULL AND makespan <= lower_bound)
        OR makespan < lower_bound
$$, 'optimal = proven; proof bound = the plan meets the lower bound; unproven plans are above it');

-- No plan, under any effort or policy, is shorter than any lower bound
-- reported, or than a plan proven optimal.
SELECT is_empty($$
    SELECT c.case_id, c.wf, c.flags, c.call_cap, min(s.makespan) AS shortest, max(s.lower_bound) AS best_bound,
           min(s.makespan) FILTER (WHERE s.optimal) AS proven
      FROM pf_case c JOIN pf_search s USING (case_id)
     GROUP BY c.case_id, c.wf, c.flags, c.call_cap
    HAVING min(s.makespan) < max(s.lower_bound)
        OR min(s.makespan) < min(s.makespan) FILTER (WHERE s.optimal)
        OR min(s.makespan) FILTER (WHERE s.optimal) <> max(s.makespan) FILTER (WHERE s.optimal)
$$, 'no plan beats a lower bound or a plan proven optimal, and proven plans agree');

-- The search starts from the critical-path order and keeps the best: never
-- worse than it; with no effort it is that order.
SELECT is_empty($$
    SELECT b.case_id, b.effort, b.makespan, cp.makespan AS cp
      FROM pf_search b JOIN pf_search cp ON cp.case_id = b.case_id AND cp.policy = 'cp'
     WHERE b.policy = 'best' AND (b.makespan > cp.makespan OR (b.effort = 0 AND b.makespan <> cp.makespan))
$$, 'the search is never worse than critical-path list scheduling, and is it at effort 0');

-- Graham's bound holds for every plan: each is a list schedule.
SELECT is_empty($$
    SELECT s.*, n.work, n.cp, n.m
      FROM pf_search s JOIN pf_numbers n USING (case_id)
     WHERE NOT n.has_affinity AND s.makespan > n.work / n.m + (1 - 1.0 / n.m) * n.cp + 1
$$, 'Graham''s bound for every effort and policy (no affinity)');

-- List scheduling the way the dispatcher does it: whenever fewer than cap
-- stages run, start the ready stage of highest rank (lowest position among
-- equal ranks) that no affinity rule holds back.  Stage i (1-based) takes
-- est[i]; dependency k: dep_from[k] before dep_to[k]; rule membership m:
-- stage mem_stage[m] counts towards rule mem_rule[m], of rule_cap[mem_rule[m]].
-- Returns the start of every stage.
CREATE FUNCTION pg_temp.simulate(est_ bigint[], dep_from integer[], dep_to integer[], cap integer,
                                 rnk_ bigint[], rule_cap_ integer[], mem_stage integer[], mem_rule integer[])
RETURNS bigint[] LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    -- local copies (expanded arrays: O(1) access); dependencies and rule
    -- memberships by stage, through offsets
    est bigint[] := est_;
    rnk bigint[] := rnk_;
    rule_cap integer[] := rule_cap_;
    n integer := coalesce(array_length(est_, 1), 0);
    nd integer := coalesce(array_length(dep_from, 1), 0);
    nm integer := coalesce(array_length(mem_stage, 1), 0);
    doff integer[] := array_fill(0, ARRAY[n + 1]);
    dadj integer[] := array_fill(0, ARRAY[greatest(nd, 1)]);
    moff integer[] := array_fill(0, ARRAY[n + 1]);
    madj integer[] := array_fill(0, ARRAY[greatest(nm, 1)]);
    fill integer[];
    st bigint[] := array_fill(NULL::bigint, ARRAY[greatest(n, 1)]);
    left_ integer[] := array_fill(0, ARRAY[greatest(n, 1)]);
    used integer[] := array_fill(0, ARRAY[greatest(coalesce(array_length(rule_cap_, 1), 0), 1)]);
    t bigint := 0;
    tn bigint;
    nrun integer := 0;
    best integer;
    ok boolean;
    i integer;
    k integer;
BEGIN
    FOR k IN 1..nd LOOP
        doff[dep_from[k] + 1] := doff[dep_from[k] + 1] + 1;
        left_[dep_to[k]] := left_[dep_to[k]] + 1;
    END LOOP;
    FOR k IN 1..nm LOOP
        moff[mem_stage[k] + 1] := moff[mem_stage[k] + 1] + 1;
    END LOOP;
    FOR i IN 1..n LOOP
        doff[i + 1] := doff[i + 1] + doff[i];
        moff[i + 1] := moff[i + 1] + moff[i];
    END LOOP;
    fill := doff;
    FOR k IN 1..nd LOOP
        fill[dep_from[k]] := fill[dep_from[k]] + 1;
        dadj[fill[dep_from[k]]] := dep_to[k];
    END LOOP;
    fill := moff;
    FOR k IN 1..nm LOOP
        fill[mem_stage[k]] := fill[mem_stage[k]] + 1;
        madj[fill[mem_stage[k]]] := mem_rule[k];
    END LOOP;
    LOOP
        -- start what fits, best rank first
        LOOP
            EXIT WHEN nrun >= cap;
            best := NULL;
            FOR i IN 1..n LOOP
                CONTINUE WHEN st[i] IS NOT NULL OR left_[i] > 0;
                ok := true;
                FOR k IN moff[i] + 1 .. moff[i + 1] LOOP
                    IF used[madj[k]] >= rule_cap[madj[k]] THEN
                        ok := false;
                    END IF;
                END LOOP;
                IF ok AND (best IS NULL OR rnk[i] > rnk[best]) THEN
                    best := i;
                END IF;
            END LOOP;
            EXIT WHEN best IS NULL;
            st[best] := t;
            nrun := nrun + 1;
            FOR k IN moff[best] + 1 .. moff[best + 1] LOOP
                used[madj[k]] := used[madj[k]] + 1;
            END LOOP;
        END LOOP;
        EXIT WHEN nrun = 0;
        -- the next finish: those stages end, their dependents may be ready
        tn := NULL;
        FOR i IN 1..n LOOP
            IF st[i] + est[i] > t AND (tn IS NULL OR st[i] + est[i] < tn) THEN
                tn := st[i] + est[i];
            END IF;
        END LOOP;
        t := tn;
        FOR i IN 1..n LOOP
            IF st[i] + est[i] = t THEN
                nrun := nrun - 1;
                FOR k IN moff[i] + 1 .. moff[i + 1] LOOP
                    used[madj[k]] := used[madj[k]] - 1;
                END LOOP;
                FOR k IN doff[i] + 1 .. doff[i + 1] LOOP
                    left_[dadj[k]] := left_[dadj[k]] - 1;
                END LOOP;
            END IF;
        END LOOP;
    END LOOP;
    RETURN st;
END
$$;

-- Each case's planned stages, numbered 1..n by stage order (the order that
-- breaks ties between equal ranks, as task ids do in a run), with their
-- dispatch rank; their transitive dependencies among planned stages; the
-- affinity rules' members.
-- A stage the plan holds (_ranks.hold_ord) waits for that stage as for a
-- dependency.
CREATE TEMP TABLE pf_sim_stage AS
SELECT p.case_id, p.ord, row_number() OVER (PARTITION BY p.case_id ORDER BY p.ord)::integer AS pos,
       pg_temp.us(p.estimate)::bigint AS est, p.agent, r.rank, pg_temp.us(p.est_start)::bigint AS est_start,
       r.hold_ord
  FROM pf_pl p
  JOIN pf_case c USING (case_id)
  JOIN LATERAL parflow._ranks(c.vid, c.flags, c.call_cap) r ON r.stage_ord = p.ord;
CREATE TEMP TABLE pf_sim_dep AS
SELECT c.case_id, s.pos AS s_pos, d.pos AS d_pos FROM pf_case c JOIN pf_closure cl ON cl.vid = c.vid
  JOIN pf_sim_stage s ON s.case_id = c.case_id AND s.ord = cl.stage_ord
  JOIN pf_sim_stage d ON d.case_id = c.case_id AND d.ord = cl.dep_ord
UNION
SELECT s.case_id, s.pos, d.pos FROM pf_sim_stage s
  JOIN pf_sim_stage d ON d.case_id = s.case_id AND d.ord = s.hold_ord;
SELECT ok((SELECT count(*) FROM pf_sim_stage WHERE hold_ord IS NOT NULL) > 0,
          'some of the generated plans hold a stage (keep a slot idle)');
CREATE TEMP TABLE pf_sim AS
SELECT c.case_id, c.eff_cap,
       (SELECT array_agg(s.est ORDER BY s.pos) FROM pf_sim_stage s WHERE s.case_id = c.case_id) AS est,
       (SELECT array_agg(s.rank ORDER BY s.pos) FROM pf_sim_stage s WHERE s.case_id = c.case_id) AS rnk,
       (SELECT array_agg(x.d_pos ORDER BY x.d_pos, x.s_pos) FROM pf_sim_dep x WHERE x.case_id = c.case_id) AS dep_from,
       (SELECT array_agg(x.s_pos ORDER BY x.d_pos, x.s_pos) FROM pf_sim_dep x WHERE x.case_id = c.case_id) AS dep_to,
       (SELECT coalesce(array_agg(a.max_concurrent ORDER BY a.ord), '{}') FROM parflow.affinity a
         WHERE a.version_id = c.vid) AS rule_cap,
       (SELECT coalesce(array_agg(s.pos ORDER BY s.pos, a.ord), '{}') FROM parflow.affinity a
          JOIN pf_sim_stage s ON s.case_id = c.case_id AND s.agent = ANY (a.agents)
         WHERE a.version_id = c.vid) AS mem_stage,
       (SELECT coalesce(array_agg(1 + (SELECT count(*) FROM parflow.affinity b
                                        WHERE b.version_id = a.version_id AND b.ord < a.ord)::integer
                                  ORDER BY s.pos, a.ord), '{}')
          FROM parflow.affinity a
          JOIN pf_sim_stage s ON s.case_id = c.case_id AND s.agent = ANY (a.agents)
         WHERE a.version_id = c.vid) AS mem_rule
  FROM pf_case c;

CREATE TEMP TABLE pf_sim_start AS
SELECT m.case_id, pg_temp.simulate(m.est, coalesce(m.dep_from, '{}'), coalesce(m.dep_to, '{}'), m.eff_cap,
                                   m.rnk, m.rule_cap, m.mem_stage, m.mem_rule) AS st
  FROM pf_sim m;
SELECT is_empty($$
    SELECT c.wf, c.flags, c.call_cap, s.ord, s.est_start AS planned_start, x.st[s.pos] AS dispatched_start
      FROM pf_sim_start x
      JOIN pf_case c USING (case_id)
      JOIN pf_sim_stage s ON s.case_id = x.case_id
     WHERE x.st[s.pos] IS DISTINCT FROM s.est_start
     ORDER BY 1, 2, 3, 4
$$, 'the dispatch ranks and holds, list-scheduled as the dispatcher does, start every stage when the plan says');

-- The serial schedule generation scheme: stages taken one at a time, the
-- eligible one (every dependency placed) of highest priority first, each
-- placed at the earliest time its dependencies and the cap allow, gaps
-- before stages placed earlier included.  Over all priority orders it gives
-- every active schedule, so its shortest is the shortest of all schedules,
-- those that hold a slot idle included (Kolisch 1996).  No affinity rules.
CREATE FUNCTION pg_temp.ssgs(est bigint[], dep_from integer[], dep_to integer[], cap integer, prio bigint[])
RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    n integer := coalesce(array_length(est, 1), 0);
    st bigint[] := array_fill(NULL::bigint, ARRAY[greatest(n, 1)]);
    v integer;
    t bigint;
    ok boolean;
    mk bigint := 0;
BEGIN
    FOR step IN 1 .. n LOOP
        -- the eligible stage of highest priority
        v := NULL;
        FOR i IN 1 .. n LOOP
            IF st[i] IS NULL AND (v IS NULL OR prio[i] > prio[v])
               AND NOT EXISTS (SELECT FROM generate_series(1, coalesce(array_length(dep_to, 1), 0)) k
                                WHERE dep_to[k] = i AND st[dep_from[k]] IS NULL) THEN
                v := i;
            END IF;
        END LOOP;
        -- the earliest start after its dependencies: that time or a finish of a placed stage
        t := coalesce((SELECT max(st[dep_from[k]] + est[dep_from[k]])
                         FROM generate_series(1, coalesce(array_length(dep_to, 1), 0)) k WHERE dep_to[k] = v), 0);
        LOOP
            -- the cap holds at t and at every start of a placed stage inside [t, t + est[v])
            ok := NOT EXISTS (
                SELECT FROM (SELECT t AS x
                             UNION SELECT st[a] FROM generate_series(1, n) a
                                    WHERE st[a] > t AND st[a] < t + est[v]) pts
                 WHERE (SELECT count(*) FROM generate_series(1, n) b
                         WHERE est[b] > 0 AND st[b] <= pts.x AND st[b] + est[b] > pts.x) >= cap);
            EXIT WHEN ok OR est[v] = 0;
            t := (SELECT min(st[a] + est[a]) FROM generate_series(1, n) a WHERE st[a] IS NOT NULL AND st[a] + est[a] > t);
        END LOOP;
        st[v] := t;
        mk := greatest(mk, t + est[v]);
    END LOOP;
    RETURN mk;
END
$$;

-- Tiny random DAGs (6 stages), and the graph of sql/plan.sql where the only
-- schedule as short as the lower bound holds a slot idle: under caps 2 and
-- 3, the plan is as short as the shortest of all schedules (the serial
-- scheme over all 720 orders), which the best of all 720 dispatch orders is
-- not always, and proven optimal; the lower bound is at most that.
SELECT parflow_define('pti_tiny' || k, pg_temp.dag_spec(6, 100 + k, 1, 2, 5)) FROM generate_series(1, 3) k;
SELECT parflow_define('pti_hold', '{"groups": [{"name": "g", "stages": [
  {"name": "a", "agent": "x", "estimate": "3 min"},
  {"name": "b", "agent": "x", "estimate": "4 min"},
  {"name": "a2", "agent": "x", "estimate": "1 min", "depends_on": ["a", "b"]},
  {"name": "c", "agent": "x", "estimate": "3 min", "depends_on": ["a"]},
  {"name": "b2", "agent": "x", "estimate": "1 min", "depends_on": ["b"]},
  {"name": "z", "agent": "x", "estimate": "3 min", "depends_on": ["a2", "b2"]}]}]}');
CREATE TEMP TABLE pf_tiny AS
WITH RECURSIVE perm(p) AS (
    SELECT ARRAY[]::bigint[]
    UNION ALL
    SELECT p || x FROM perm, generate_series(1, 6) x WHERE NOT x = ANY (p) AND cardinality(p) < 6
),
g AS (
    SELECT w.name AS wf, v.id AS vid, m AS cap,
           (SELECT array_agg(pg_temp.us(s.estimate)::bigint ORDER BY s.ord) FROM parflow.stage s WHERE s.version_id = v.id) AS est,
           (SELECT array_agg(d.dep_ord + 1 ORDER BY d.dep_ord, d.stage_ord) FROM parflow.stage_dep d WHERE d.version_id = v.id) AS dep_from,
           (SELECT array_agg(d.stage_ord + 1 ORDER BY d.dep_ord, d.stage_ord) FROM parflow.stage_dep d WHERE d.version_id = v.id) AS dep_to
      FROM parflow.workflow w JOIN parflow.workflow_version v ON v.workflow_id = w.id,
           (VALUES (2), (3)) caps(m)
     WHERE w.name LIKE 'pti\_tiny%' OR w.name = 'pti_hold'
)
SELECT g.wf, g.cap,
       (SELECT min((SELECT max(x.st[i] + g.est[i]) FROM generate_series(1, 6) i))
          FROM perm, LATERAL (SELECT pg_temp.simulate(g.est, coalesce(g.dep_from, '{}'), coalesce(g.dep_to, '{}'),
                                                      g.cap, perm.p, '{}', '{}', '{}') AS st) x
         WHERE cardinality(perm.p) = 6) AS best_order,
       (SELECT min(pg_temp.ssgs(g.est, coalesce(g.dep_from, '{}'), coalesce(g.dep_to, '{}'), g.cap, perm.p))
          FROM perm WHERE cardinality(perm.p) = 6) AS best_schedule,
       pg_temp.us(e.parallel) AS parallel, pg_temp.us(e.lower_bound) AS lower_bound, e.optimal
  FROM g, LATERAL parflow_estimate(g.wf, '{}', g.cap) e;

SELECT is_empty($$
    SELECT * FROM pf_tiny WHERE parallel <> best_schedule OR NOT optimal OR lower_bound > parallel
$$, 'tiny graphs: the plan is the shortest of all schedules, proven optimal, and lower_bound does not exceed it');
SELECT ok((SELECT bool_or(parallel < best_order) FROM pf_tiny),
          'among them, plans shorter than every dispatch order (a slot held idle)');
SELECT is_empty($$
    SELECT * FROM pf_tiny WHERE lower_bound > best_schedule OR best_schedule > best_order
$$, 'tiny graphs: lower_bound does not exceed the shortest of all schedules (idle slots included), nor that the best dispatch order');
SELECT results_eq($$SELECT best_order::bigint, best_schedule, lower_bound::bigint, parallel::bigint FROM pf_tiny WHERE wf = 'pti_hold' AND cap = 2$$,
                  $$VALUES (540000000::bigint, 480000000::bigint, 480000000::bigint, 480000000::bigint)$$,
                  'pti_hold under cap 2: 9 min by any dispatch order, 8 with a slot held idle, the lower bound and the plan are 8');

------------------------------------------------------------------------------
-- 10. A new version (14)
------------------------------------------------------------------------------

-- Snapshot version 1 of pti_groups, plan it, then define version 2: the
-- same groups with every stage in one chain (each stage depends on the one
-- before it).
CREATE TEMP TABLE pf_v1 AS SELECT * FROM pf_case WHERE wf = 'pti_groups' LIMIT 1;
CREATE TEMP TABLE pf_old_version AS SELECT * FROM parflow.workflow_version WHERE id = (SELECT vid FROM pf_v1);
CREATE TEMP TABLE pf_old_group AS SELECT * FROM parflow.stage_group WHERE version_id = (SELECT vid FROM pf_v1);
CREATE TEMP TABLE pf_old_group_dep AS SELECT * FROM parflow.group_dep WHERE version_id = (SELECT vid FROM pf_v1);
CREATE TEMP TABLE pf_old_stage AS SELECT * FROM parflow.stage WHERE version_id = (SELECT vid FROM pf_v1);
CREATE TEMP TABLE pf_old_stage_dep AS SELECT * FROM parflow.stage_dep WHERE version_id = (SELECT vid FROM pf_v1);
CREATE TEMP TABLE pf_old_plan AS SELECT * FROM parflow_plan('pti_groups', '{extra,docs}');
CREATE TEMP TABLE pf_old_est AS SELECT * FROM parflow_estimate('pti_groups', '{extra,docs}');
-- (and pti_affinity's rules, which version 2 of it drops)
CREATE TEMP TABLE pf_old_affinity AS
SELECT * FROM parflow.affinity WHERE version_id = (SELECT vid FROM pf_case WHERE wf = 'pti_affinity' LIMIT 1);

SELECT is(parflow_define('pti_groups', jsonb_build_object('groups', jsonb_build_array(jsonb_build_object(
    'name', 'all', 'stages',
    (SELECT jsonb_agg(pg_temp.stage(s.name, s.agent, (pg_temp.us(s.estimate) / 60000000)::integer,
                                    CASE WHEN s.ord > 0 THEN ARRAY[prev.name] ELSE '{}' END) ORDER BY s.ord)
       FROM parflow.stage s
       LEFT JOIN parflow.stage prev ON prev.version_id = s.version_id AND prev.ord = s.ord - 1
      WHERE s.version_id = (SELECT vid FROM pf_v1)))))),
   2::bigint, 'redefining pti_groups makes version 2');
SELECT is(parflow_define('pti_affinity', '{"groups": [{"name": "only", "stages": [
              {"name": "a1", "agent": "a", "estimate": "10 min"}, {"name": "b1", "agent": "b", "estimate": "10 min"},
              {"name": "a2", "agent": "a", "estimate": "10 min"}, {"name": "b2", "agent": "b", "estimate": "10 min"}]}]}'),
          2::bigint, 'redefining pti_affinity (4 independent a/b stages, no rules, no cap) makes version 2');

-- The plan follows the new version ...
SELECT isnt((SELECT parallel FROM parflow_estimate('pti_groups', '{extra,docs}')),
            (SELECT parallel FROM pf_old_est),
            'the new version changes the estimated makespan');
SELECT ok(EXISTS (SELECT * FROM parflow_plan('pti_groups', '{extra,docs}')
                  EXCEPT SELECT * FROM pf_old_plan),
          'the new version changes the plan');
SELECT is((SELECT parallel FROM parflow_estimate('pti_groups', '{extra,docs}')),
          (SELECT sequential FROM parflow_estimate('pti_groups', '{extra,docs}')),
          'version 2 is one chain: parallel = sequential');
SELECT is((SELECT sequential FROM parflow_estimate('pti_groups', '{extra,docs}')),
          (SELECT sequential FROM pf_old_est),
          'version 2 has the same stages, so the same sequential total');
SELECT is((SELECT max(wave) FROM parflow_plan('pti_groups', '{extra,docs}')),
          (SELECT count(*)::integer FROM parflow_plan('pti_groups', '{extra,docs}')),
          'version 2 is one chain: one wave per stage');

-- ... and version 1's rows are untouched.
SELECT bag_eq($$SELECT * FROM parflow.workflow_version WHERE id = (SELECT vid FROM pf_v1)$$,
              $$SELECT * FROM pf_old_version$$, 'version 1 of pti_groups: workflow_version row untouched');
SELECT bag_eq($$SELECT * FROM parflow.stage_group WHERE version_id = (SELECT vid FROM pf_v1)$$,
              $$SELECT * FROM pf_old_group$$, 'version 1 of pti_groups: stage_group rows untouched');
SELECT bag_eq($$SELECT * FROM parflow.group_dep WHERE version_id = (SELECT vid FROM pf_v1)$$,
              $$SELECT * FROM pf_old_group_dep$$, 'version 1 of pti_groups: group_dep rows untouched');
SELECT bag_eq($$SELECT * FROM parflow.stage WHERE version_id = (SELECT vid FROM pf_v1)$$,
              $$SELECT * FROM pf_old_stage$$, 'version 1 of pti_groups: stage rows untouched');
SELECT bag_eq($$SELECT * FROM parflow.stage_dep WHERE version_id = (SELECT vid FROM pf_v1)$$,
              $$SELECT * FROM pf_old_stage_dep$$, 'version 1 of pti_groups: stage_dep rows untouched');
SELECT bag_eq($$SELECT * FROM parflow.affinity WHERE version_id = (SELECT vid FROM pf_case WHERE wf = 'pti_affinity' LIMIT 1)$$,
              $$SELECT * FROM pf_old_affinity$$, 'version 1 of pti_affinity: affinity rows untouched');

-- The rules and the cap went with version 1: the four a/b stages of
-- version 2 all run at once (under version 1's rule a/b would run one at a
-- time, and its cap would allow 3).
SELECT results_eq($$SELECT parallel, critical_path, lower_bound FROM parflow_estimate('pti_affinity')$$,
                  $$VALUES (interval '10 min', interval '10 min', interval '10 min')$$,
                  'version 2 of pti_affinity: no affinity rule, no workflow cap (4 stages of 10 min take 10 min)');

SELECT * FROM finish();
ROLLBACK;
