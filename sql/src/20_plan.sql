-- parflow planning: the planner's SQL entry points (C), the dispatch ranks a
-- run is started with, and learned estimates (observed median durations).

-- The planner reads run history (learned estimates): like every other public
-- function it runs as the extension's owner with a fixed path.
CREATE OR REPLACE FUNCTION @extschema@.parflow_plan(workflow text, flags text[] DEFAULT '{}', max_parallel integer DEFAULT NULL)
RETURNS TABLE(stage text, agent text, group_name text, wave integer,
              est_start interval, est_finish interval, slack interval, critical boolean,
              optimal boolean, held_for text)
    AS 'MODULE_PATHNAME', 'parflow_plan'
    LANGUAGE C STABLE PARALLEL RESTRICTED
    SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp;
COMMENT ON FUNCTION @extschema@.parflow_plan(text, text[], integer) IS
    'The parallel plan of the latest version of a workflow: one row per stage that runs, with its wave, planned start and finish under every cap, slack, whether it is critical, whether the plan is proven shortest (see parflow_estimate.optimal), and the stage whose finish the plan holds it for (it keeps a slot free rather than start this stage earlier; NULL: none)';

CREATE OR REPLACE FUNCTION @extschema@.parflow_estimate(workflow text, flags text[] DEFAULT '{}', max_parallel integer DEFAULT NULL)
RETURNS TABLE(sequential interval, parallel interval, savings_pct numeric,
              critical_path interval, lower_bound interval, optimal boolean)
    AS 'MODULE_PATHNAME', 'parflow_estimate'
    LANGUAGE C STABLE PARALLEL RESTRICTED
    SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp;
COMMENT ON FUNCTION @extschema@.parflow_estimate(text, text[], integer) IS
    'Estimated one-at-a-time total, planned parallel makespan, savings, critical path, a lower bound on any schedule under the caps (critical path, work per cap and per affinity rule, release and tail bounds, energetic reasoning), and whether no schedule is shorter than the plan (it meets the lower bound, or the search within parflow.plan_effort tried every schedule, idle slots included)';

CREATE OR REPLACE FUNCTION parflow._plan_stats(workflow text, flags text[] DEFAULT '{}', max_parallel integer DEFAULT NULL,
                                    policy text DEFAULT 'best')
RETURNS TABLE(stages integer, edges bigint, makespan interval, load_ms double precision,
              compute_ms double precision, lower_bound interval, optimal boolean, proof text,
              schedules bigint, units bigint, held integer)
    AS 'MODULE_PATHNAME', 'parflow_plan_stats'
    LANGUAGE C STABLE;
COMMENT ON FUNCTION parflow._plan_stats(text, text[], integer, text) IS
    'Internal, for benchmarks: plan under a policy (best, cp, fifo) and report sizes, makespan, the time spent loading and computing, the lower bound, whether and how the plan is proven shortest (proof: bound, search or NULL), the list schedules computed, the units of parflow.plan_effort spent and the stages the plan holds';

CREATE OR REPLACE FUNCTION parflow._ranks(version_id bigint, flags text[], cap integer)
RETURNS TABLE(stage_ord integer, rank bigint, makespan interval, hold_ord integer)
    AS 'MODULE_PATHNAME', 'parflow_ranks'
    LANGUAGE C STABLE;
COMMENT ON FUNCTION parflow._ranks(bigint, text[], integer) IS 'Internal: dispatch rank of each stage from the plan under a cap, the planned makespan, and the stage whose finish the plan holds it for (NULL: none)';

-- The runs of the workflow of a version that learned estimates look at: its
-- last parflow.learn_window runs (a start reads their tasks, not every task
-- the workflow ever ran).
CREATE OR REPLACE FUNCTION parflow._learn_runs(p_version bigint)
RETURNS TABLE(run_id bigint, version_id bigint)
LANGUAGE sql STABLE AS $$
    SELECT r.id, r.version_id FROM parflow.run r
     WHERE r.version_id IN (SELECT v2.id FROM parflow.workflow_version v2
                             WHERE v2.workflow_id = (SELECT v.workflow_id FROM parflow.workflow_version v
                                                      WHERE v.id = p_version))
     ORDER BY r.id DESC
     LIMIT current_setting('parflow.learn_window')::integer
$$;
COMMENT ON FUNCTION parflow._learn_runs(bigint) IS
    'Internal: the last parflow.learn_window runs of the workflow of a version, whose tasks learned estimates come from';

-- The observed median of each stage of a version, over the last runs of its
-- workflow (parflow._learn_runs; matched by stage name), when it finished in
-- at least parflow.learn_min_runs of them; nothing when that is 0.
CREATE OR REPLACE FUNCTION parflow._observed(p_version bigint)
RETURNS TABLE(stage_ord integer, samples integer, median interval, usec bigint)
LANGUAGE sql STABLE AS $$
    SELECT s.ord, o.n, o.med, (extract(epoch FROM o.med) * 1000000)::bigint
      FROM parflow.stage s
      JOIN (SELECT s2.name, count(*)::integer AS n,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY t.finished_at - t.started_at) AS med
              FROM parflow._learn_runs(p_version) lr
              -- index probes per run and per task (joins can be planned as scans of every task, or of
              -- every stage of every version)
             CROSS JOIN LATERAL (SELECT t.stage_ord, t.started_at, t.finished_at FROM parflow.task t
                                  WHERE t.run_id = lr.run_id AND t.state = 'succeeded'
                                    AND t.started_at IS NOT NULL OFFSET 0) t
             CROSS JOIN LATERAL (SELECT st.name FROM parflow.stage st
                                  WHERE st.version_id = lr.version_id AND st.ord = t.stage_ord LIMIT 1) s2
             GROUP BY s2.name) o ON o.name = s.name
     WHERE s.version_id = p_version
       AND current_setting('parflow.learn_min_runs')::integer > 0
       AND o.n >= current_setting('parflow.learn_min_runs')::integer
$$;
COMMENT ON FUNCTION parflow._observed(bigint) IS
    'Internal: the observed median duration of the stages of a version that finished in at least parflow.learn_min_runs of the last parflow.learn_window runs of its workflow';

CREATE OR REPLACE FUNCTION parflow._run_plan(run bigint) RETURNS interval
    AS 'MODULE_PATHNAME', 'parflow_run_plan'
    LANGUAGE C STRICT STABLE;
COMMENT ON FUNCTION parflow._run_plan(bigint) IS
    'Internal: the planned makespan of a run, its map stages that expanded counted as their real widths';

-- How many instances each map stage of a version ran (the median over the
-- last runs of its workflow, parflow._learn_runs, by stage name), once it
-- expanded in at least parflow.learn_min_runs of them; nothing when that is 0.
CREATE OR REPLACE FUNCTION parflow._observed_width(p_version bigint)
RETURNS TABLE(stage_ord integer, samples integer, width integer)
LANGUAGE sql STABLE AS $$
    SELECT s.ord, o.n, o.w
      FROM parflow.stage s
      JOIN (SELECT s2.name, count(*)::integer AS n,
                   percentile_disc(0.5) WITHIN GROUP (ORDER BY jsonb_array_length(t.output))::integer AS w
              FROM parflow._learn_runs(p_version) lr
              JOIN parflow.task t ON t.run_id = lr.run_id AND t.state = 'succeeded' AND t.item IS NULL
                                 AND t.agent IS NULL AND jsonb_typeof(t.output) = 'array'
             CROSS JOIN LATERAL (SELECT st.name FROM parflow.stage st
                                  WHERE st.version_id = lr.version_id AND st.ord = t.stage_ord
                                    AND st.map_over_ord IS NOT NULL LIMIT 1) s2
              -- a version without map stages reads no task
             WHERE EXISTS (SELECT FROM parflow.stage m WHERE m.version_id = p_version AND m.map_over_ord IS NOT NULL)
             GROUP BY s2.name) o ON o.name = s.name
     WHERE s.version_id = p_version AND s.map_over_ord IS NOT NULL
       AND current_setting('parflow.learn_min_runs')::integer > 0
       AND o.n >= current_setting('parflow.learn_min_runs')::integer
$$;
COMMENT ON FUNCTION parflow._observed_width(bigint) IS
    'Internal: the median number of instances of the map stages of a version that expanded in at least parflow.learn_min_runs of the last parflow.learn_window runs of its workflow';

CREATE OR REPLACE FUNCTION @extschema@.parflow_estimates(workflow text)
RETURNS TABLE(stage text, agent text, declared interval, observed interval, samples integer,
              used interval, source text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
DECLARE
    ver bigint := parflow._current_version(workflow);
BEGIN
    RETURN QUERY
    SELECT s.name, s.agent, s.estimate, st.p50, coalesce(st.runs, 0),
           coalesce(o.median, s.estimate), CASE WHEN o.median IS NULL THEN 'declared' ELSE 'observed' END
      FROM parflow.stage s
      LEFT JOIN parflow._observed(ver) o ON o.stage_ord = s.ord
      LEFT JOIN parflow.stage_stats st ON st.workflow = parflow_estimates.workflow AND st.stage = s.name
                                      AND st.agent = s.agent
     WHERE s.version_id = ver
     ORDER BY s.ord;
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_estimates(text) IS
    'Per stage of the latest version: declared estimate, observed median and samples, and the estimate plans use (source observed once parflow.learn_min_runs runs finished it)';
