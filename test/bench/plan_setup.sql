-- test/bench/plan_setup.sql -- helpers of the planner benchmark (test/bench/plan.sh).
--
-- Run in the benchmark's own database, after CREATE EXTENSION parflow.
-- Everything lives in schema "bench"; nothing here touches the extension's
-- objects except through its public functions and by reading its tables.

CREATE SCHEMA bench;

-- A deterministic non-negative 63-bit hash of (key, seed): the generator of
-- the random DAGs (no setseed/random(), whose order of evaluation in a
-- set-based query is up to the executor).
CREATE FUNCTION bench.h(key bigint, seed bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS 'SELECT hashint8extended(key, seed) & 9223372036854775807';

-- The spec of a random DAG of n stages in one (parallel) group: stage s<i>
-- (i = 1..n) has an estimate of 1..60 minutes, one of 8 agents, and depends
-- on up to 3 distinct stages drawn uniformly among s1..s<i-1> (3 draws,
-- duplicates merged).  Only i decides stage i, so the graph of n stages is
-- the first n stages of every larger one.
CREATE FUNCTION bench.dag_spec(n integer) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('groups', jsonb_build_array(jsonb_build_object(
               'name', 'dag', 'stages', jsonb_agg(st ORDER BY i))))
      FROM (SELECT i, jsonb_build_object(
                       'name', 's' || i,
                       'agent', 'a' || (i % 8),
                       'estimate', (1 + bench.h(4 * i, 20260101) % 60) || ' min',
                       'depends_on', coalesce(
                           (SELECT jsonb_agg(DISTINCT 's' || (1 + bench.h(4 * i + k, 20260101) % (i - 1)))
                              FROM generate_series(1, 3) k WHERE i > 1),
                           '[]')) AS st
              FROM generate_series(1, n) i) s
$$;

-- Milliseconds between two timestamps.
CREATE FUNCTION bench.ms(t0 timestamptz, t1 timestamptz) RETURNS double precision
LANGUAGE sql IMMUTABLE AS 'SELECT extract(epoch FROM t1 - t0)::double precision * 1000';

------------------------------------------------------------------------------
-- Generated DAGs
------------------------------------------------------------------------------

CREATE TABLE bench.dag (
    size       integer PRIMARY KEY,
    workflow   text NOT NULL,
    define_ms  double precision,      -- parflow_define alone (spec generated before)
    gen_ms     double precision,      -- generating the spec (not part of parflow)
    deps       bigint                 -- rows of parflow.stage_dep
);

CREATE TABLE bench.sample (
    size  integer NOT NULL,
    rep   integer NOT NULL,           -- 0 is the warm-up, not reported
    what  text NOT NULL,              -- load, compute, compute_cp, stats, plan, scan
    ms    double precision NOT NULL,
    PRIMARY KEY (size, rep, what)
);

CREATE TABLE bench.makespan (
    size      integer PRIMARY KEY,
    stages    integer,
    edges     bigint,                 -- the planner's edge count (stage edges + barrier edges)
    makespan  interval,               -- policy best
    makespan_cp interval,             -- policy cp
    lower_bound interval              -- max(critical path, work / cap), from parflow_estimate
);

-- Generate the DAG of n stages and define it; returns the define time (ms).
CREATE FUNCTION bench.define_dag(n integer) RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    spec jsonb;
    t0 timestamptz;
    t1 timestamptz;
    t2 timestamptz;
    wf text := 'dag' || n;
BEGIN
    t0 := clock_timestamp();
    spec := bench.dag_spec(n);
    t1 := clock_timestamp();
    PERFORM parflow_define(wf, spec);
    t2 := clock_timestamp();
    INSERT INTO bench.dag (size, workflow, define_ms, gen_ms, deps)
    VALUES (n, wf, bench.ms(t1, t2), bench.ms(t0, t1),
            (SELECT count(*) FROM parflow.stage_dep d
              WHERE d.version_id = (SELECT v.id FROM parflow.workflow w
                                      JOIN parflow.workflow_version v ON v.workflow_id = w.id
                                     WHERE w.name = wf ORDER BY v.version DESC LIMIT 1)));
    RETURN bench.ms(t1, t2);
END
$$;

-- Time, reps times after one warm-up, interleaved:
--   stats: SELECT * FROM parflow._plan_stats(wf, '{}', NULL, 'best') (wall
--          time; load and compute are what it reports about itself),
--   compute_cp: the compute time _plan_stats reports under policy cp (one
--          list schedule, where best tries several orders),
--   plan:  SELECT count(*) FROM parflow_plan(wf),
--   scan:  SELECT count(*) FROM parflow.stage_dep WHERE version_id = <its version>,
--          the cost of just reading the edges (the baseline).
CREATE FUNCTION bench.measure_dag(n integer, reps integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    wf text;
    vid bigint;
    r record;
    c bigint;
    t0 timestamptz;
    t1 timestamptz;
    i integer;
BEGIN
    SELECT d.workflow INTO STRICT wf FROM bench.dag d WHERE d.size = n;
    SELECT v.id INTO STRICT vid FROM parflow.workflow w JOIN parflow.workflow_version v ON v.workflow_id = w.id
     WHERE w.name = wf ORDER BY v.version DESC LIMIT 1;
    FOR i IN 0..reps LOOP
        t0 := clock_timestamp();
        SELECT * INTO STRICT r FROM parflow._plan_stats(wf, '{}', NULL, 'best');
        t1 := clock_timestamp();
        INSERT INTO bench.sample VALUES (n, i, 'stats', bench.ms(t0, t1)),
                                        (n, i, 'load', r.load_ms),
                                        (n, i, 'compute', r.compute_ms);
        IF i = 0 THEN
            INSERT INTO bench.makespan VALUES (n, r.stages, r.edges, r.makespan);
        END IF;

        -- one plain critical-path list schedule: the cost of one pass
        SELECT * INTO STRICT r FROM parflow._plan_stats(wf, '{}', NULL, 'cp');
        INSERT INTO bench.sample VALUES (n, i, 'compute_cp', r.compute_ms);
        IF i = 0 THEN
            UPDATE bench.makespan m SET makespan_cp = r.makespan,
                   lower_bound = (SELECT e.lower_bound FROM parflow_estimate(wf) e)
             WHERE m.size = n;
        END IF;

        t0 := clock_timestamp();
        SELECT count(*) INTO c FROM parflow_plan(wf);
        t1 := clock_timestamp();
        INSERT INTO bench.sample VALUES (n, i, 'plan', bench.ms(t0, t1));
        IF c <> n THEN
            RAISE EXCEPTION 'parflow_plan(%) returned % rows, expected %', wf, c, n;
        END IF;

        t0 := clock_timestamp();
        SELECT count(*) INTO c FROM parflow.stage_dep WHERE version_id = vid;
        t1 := clock_timestamp();
        INSERT INTO bench.sample VALUES (n, i, 'scan', bench.ms(t0, t1));
    END LOOP;
END
$$;

-- Median, min and max of one measure over the reported reps.
CREATE VIEW bench.dag_stat AS
SELECT size, what,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS med,
       min(ms) AS lo, max(ms) AS hi, count(*) AS n
  FROM bench.sample WHERE rep > 0
 GROUP BY size, what;

-- "med (lo..hi)" with a precision that suits the magnitude.
CREATE FUNCTION bench.fmt(x double precision) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN x IS NULL THEN '-'
                WHEN x >= 100 THEN round(x::numeric, 0)::text
                WHEN x >= 10 THEN round(x::numeric, 1)::text
                ELSE round(x::numeric, 2)::text END
$$;
CREATE FUNCTION bench.fmt3(size integer, what_ text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT format('%s (%s..%s)', bench.fmt(med), bench.fmt(lo), bench.fmt(hi))
                       FROM bench.dag_stat WHERE dag_stat.size = fmt3.size AND what = what_), '-')
$$;
CREATE FUNCTION bench.med(size integer, what_ text) RETURNS double precision
LANGUAGE sql STABLE AS $$
    SELECT med FROM bench.dag_stat WHERE dag_stat.size = med.size AND what = what_
$$;

------------------------------------------------------------------------------
-- STG instances
------------------------------------------------------------------------------

CREATE TABLE bench.stg_graph (
    graph     text PRIMARY KEY,       -- e.g. 50/rand0000
    workflow  text NOT NULL UNIQUE,
    tasks     integer NOT NULL,       -- tasks with a positive cost (= stages)
    edges     integer NOT NULL,       -- dependencies kept (= depends_on entries)
    dropped   integer NOT NULL,       -- zero-cost tasks dropped (the dummy exit)
    work      integer NOT NULL,       -- sum of costs
    cp_file   integer,                -- "CP Length" from the file's statistics
    tasks_file integer,               -- "Tasks" from the file's statistics (dummies excluded)
    edges_file integer                -- "Edges" from the file's statistics (dummy edges excluded)
);

CREATE TABLE bench.stg_opt (
    graph  text NOT NULL,
    m      integer NOT NULL,
    opt    integer NOT NULL,
    PRIMARY KEY (graph, m)
);

-- The exact optima of test/bench/stgexact.c (no parflow code): over all
-- schedules, and over list schedules only (the best any dispatch order
-- gives); NULL when the search ran past its node cap.
CREATE TABLE bench.stg_exact (
    graph   text NOT NULL,
    m       integer NOT NULL,
    exact   integer,                  -- the shortest schedule
    exact_list integer,               -- the shortest list (non-delay) schedule
    nodes_below integer,              -- nodes that proved exact - 1 infeasible
    idle    text,                     -- how the shortest schedule idles, when it does
    PRIMARY KEY (graph, m)
);

CREATE TABLE bench.stg_result (
    graph   text NOT NULL,
    m       integer NOT NULL,
    policy  text NOT NULL,
    makespan integer NOT NULL,        -- minutes
    optimal boolean,                  -- proven (policy best)
    proof   text,                     -- bound, search or NULL
    held    integer NOT NULL,         -- stages the plan holds (a slot kept idle)
    PRIMARY KEY (graph, m, policy)
);

CREATE TABLE bench.stg_bound (
    graph   text NOT NULL,
    m       integer NOT NULL,
    critical_path integer NOT NULL,   -- minutes, from parflow_estimate
    lower_bound   integer NOT NULL,   -- minutes, parflow_estimate's (critical path, work / m, release, tail and energetic bounds)
    simple_bound  integer NOT NULL,   -- max(critical path, ceil(work / m))
    PRIMARY KEY (graph, m)
);

-- The baselines of test/bench/listsched.c (no parflow code): list
-- scheduling in critical-path and FIFO order, and critical-path list
-- scheduling followed by forward-backward improvement; for the STG pairs
-- (minutes) and the synthesized workflows (ms).
CREATE TABLE bench.baseline (
    graph   text NOT NULL,
    m       integer NOT NULL,
    tasks   integer NOT NULL,
    work    bigint NOT NULL,
    cp      bigint NOT NULL,          -- critical path
    lb      bigint NOT NULL,          -- max(critical path, ceil(work / m))
    ls_cp   bigint NOT NULL,
    ls_fifo bigint NOT NULL,
    fbi     bigint NOT NULL,
    fbi_order bigint NOT NULL,        -- list scheduling in the order of fbi's starts (= fbi unless fbi idles while work is ready)
    PRIMARY KEY (graph, m)
);

CREATE FUNCTION bench.minutes(i interval) RETURNS integer
LANGUAGE sql IMMUTABLE AS 'SELECT round(extract(epoch FROM i) / 60)::integer';

CREATE FUNCTION bench.msec(i interval) RETURNS bigint
LANGUAGE sql IMMUTABLE AS 'SELECT round(extract(epoch FROM i) * 1000)::bigint';

-- Plan every (graph, m) pair under every policy.
CREATE FUNCTION bench.run_stg() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    o record;
    p text;
    e record;
BEGIN
    FOR o IN SELECT s.graph, s.m, g.workflow FROM bench.stg_opt s JOIN bench.stg_graph g USING (graph)
              ORDER BY s.graph, s.m LOOP
        FOREACH p IN ARRAY ARRAY['best', 'cp', 'fifo'] LOOP
            INSERT INTO bench.stg_result
            SELECT o.graph, o.m, p, bench.minutes(st.makespan), st.optimal, st.proof, st.held
              FROM parflow._plan_stats(o.workflow, '{}', o.m, p) st;
        END LOOP;
        SELECT * INTO STRICT e FROM parflow_estimate(o.workflow, '{}', o.m);
        INSERT INTO bench.stg_bound
        SELECT o.graph, o.m, bench.minutes(e.critical_path), bench.minutes(e.lower_bound),
               greatest(bench.minutes(e.critical_path), ceil(g.work::numeric / o.m)::integer)
          FROM bench.stg_graph g WHERE g.graph = o.graph;
    END LOOP;
END
$$;

------------------------------------------------------------------------------
-- Synthesized workflows (test/bench/wfgen.awk)
------------------------------------------------------------------------------

CREATE TABLE bench.trace (
    name      text PRIMARY KEY,       -- e.g. montage 6x6
    workflow  text NOT NULL UNIQUE,
    ord       integer NOT NULL,       -- listing order
    tasks     integer,
    edges     integer
);

CREATE TABLE bench.trace_result (
    name      text NOT NULL,
    m         integer NOT NULL,
    makespan  bigint NOT NULL,        -- ms
    lower_bound bigint NOT NULL,      -- ms
    optimal   boolean NOT NULL,
    proof     text,
    compute_ms double precision NOT NULL,
    held      integer NOT NULL,       -- stages the plan holds (a slot kept idle)
    PRIMARY KEY (name, m)
);

-- Plan every synthesized workflow under every cap of caps (one warm-up
-- call first, so that the first plan does not pay for loading the library).
CREATE FUNCTION bench.run_traces(caps integer[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t record;
    m integer;
BEGIN
    PERFORM * FROM parflow._plan_stats((SELECT workflow FROM bench.trace ORDER BY ord LIMIT 1), '{}', caps[1], 'best');
    FOR t IN SELECT * FROM bench.trace ORDER BY ord LOOP
        FOREACH m IN ARRAY caps LOOP
            INSERT INTO bench.trace_result
            SELECT t.name, m, bench.msec(st.makespan), bench.msec(st.lower_bound), st.optimal, st.proof, st.compute_ms,
                   st.held
              FROM parflow._plan_stats(t.workflow, '{}', m, 'best') st;
        END LOOP;
    END LOOP;
END
$$;
