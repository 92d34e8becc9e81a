-- parflow runs: starting a run (its tasks, ranks and first ready tasks),
-- its failure report, its results by group and overall, and its report of
-- planned against actual time.

-- Why a stage is skipped in a run with these flags (NULL when it runs).
CREATE OR REPLACE FUNCTION parflow._skip_reason(s parflow.stage, vs parflow.stage, flags text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN s.when_flag IS NOT NULL AND NOT s.when_flag = ANY (flags)
            THEN jsonb_build_object('flag', s.when_flag,
                                    'reason', format('flag "%s" not set for this run', s.when_flag))
        WHEN vs.when_flag IS NOT NULL AND NOT vs.when_flag = ANY (flags)
            THEN jsonb_build_object('verifies', vs.name,
                                    'reason', format('the stage it verifies, "%s", is skipped', vs.name))
    END
$$;
COMMENT ON FUNCTION parflow._skip_reason(parflow.stage, parflow.stage, text[]) IS 'Internal: why a conditional stage (or the verification of one) is skipped in a run';

CREATE OR REPLACE FUNCTION @extschema@.parflow_start(workflow text, flags text[] DEFAULT '{}', priority integer DEFAULT 2,
                                           parallel boolean DEFAULT NULL, input jsonb DEFAULT '{}',
                                           key text DEFAULT NULL, not_before timestamptz DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp SET jit = off AS $$
DECLARE
    ver bigint;
    wf_cap integer;
    par boolean;
    cap integer;
    new_run bigint;
    plan_len interval;
    start_ords integer[];
    rk_ords integer[];
    rk_ranks bigint[];
    rk_holds integer[];
    vstages parflow.stage[];
    delay timestamptz;
BEGIN
    IF key IS NOT NULL THEN
        IF btrim(key) = '' OR octet_length(key) > 200 OR key ~ '[[:cntrl:]]' THEN
            RAISE EXCEPTION 'run key must be a non-empty string of at most 200 bytes without control characters'
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('Found "%s".', left(key, 40)),
                      HINT = 'A key names the request that starts the run, for example a ticket or webhook delivery id; omit it for a start that is not idempotent.';
        END IF;
        -- idempotent: a run with this key, in any state, is the answer
        SELECT rn.id INTO new_run FROM parflow.run rn WHERE rn.key = parflow_start.key;
        IF FOUND THEN
            RETURN new_run;
        END IF;
    END IF;
    ver := parflow._current_version(workflow);
    flags := coalesce(flags, '{}');
    IF array_ndims(flags) > 1 THEN
        RAISE EXCEPTION 'flags must be a one-dimensional array' USING ERRCODE = 'array_subscript_error';
    END IF;
    IF array_position(flags, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'flags must not contain nulls' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF EXISTS (SELECT FROM unnest(flags) f WHERE btrim(f) = '') THEN
        RAISE EXCEPTION 'flags must not be empty strings' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'A flag names the "when" of conditional stages, for example ''{performance,security}''.';
    END IF;
    IF priority IS NULL THEN
        RAISE EXCEPTION 'priority must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = '0 is the most urgent (P0); the default is 2.';
    END IF;
    IF priority NOT BETWEEN 0 AND 3 THEN
        RAISE EXCEPTION 'priority must be between 0 and 3' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('Found %s.', coalesce(priority::text, 'NULL')),
            HINT = '0 is the most urgent (P0); the default is 2.';
    END IF;
    input := coalesce(input, '{}');
    IF jsonb_typeof(input) <> 'object' THEN
        RAISE EXCEPTION 'run input must be a JSON object' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('Found %s.', parflow._json_kind(input));
    END IF;
    par := coalesce(parallel, current_setting('parflow.parallel_default', true)::boolean, false);
    SELECT v.max_parallel INTO wf_cap FROM parflow.workflow_version v WHERE v.id = ver;
    cap := CASE WHEN par THEN coalesce(wf_cap, 2147483647) ELSE 1 END;

    SELECT array_agg(rk.stage_ord), array_agg(rk.rank), array_agg(rk.hold_ord), max(rk.makespan)
      INTO rk_ords, rk_ranks, rk_holds, plan_len
      FROM parflow._ranks(ver, flags, CASE WHEN par THEN NULL ELSE 1 END) rk;

    -- The stages verifications verify, by ord (ords run from 0): a join to
    -- them, planned on a version defined a moment ago, before any
    -- statistics, scanned every stage of the version for each stage (a start
    -- of 10,000 stages took 54 s).
    IF EXISTS (SELECT FROM parflow.stage st WHERE st.version_id = ver AND st.verifies_ord IS NOT NULL) THEN
        vstages := ARRAY(SELECT st FROM parflow.stage st WHERE st.version_id = ver ORDER BY st.ord);
    END IF;

    -- a time already past starts at once
    delay := CASE WHEN not_before > clock_timestamp() THEN not_before END;

    -- Two starts with one key: the second waits here for the first to
    -- commit, then finds its run (a new snapshot per statement).
    INSERT INTO parflow.run (version_id, priority, parallel, flags, input, max_parallel, planned, started_at,
                             key, not_before)
    VALUES (ver, priority, par, flags, input, cap, coalesce(plan_len, '0'), clock_timestamp(), key, delay)
    ON CONFLICT ON CONSTRAINT run_key_key DO NOTHING
    RETURNING id INTO new_run;
    IF new_run IS NULL THEN
        SELECT rn.id INTO new_run FROM parflow.run rn WHERE rn.key = parflow_start.key;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'could not start run with key "%": a concurrent start holds it', key
                USING ERRCODE = 'serialization_failure',
                      HINT = 'Under REPEATABLE READ or SERIALIZABLE the other start''s run is not visible: retry the transaction.';
        END IF;
        RETURN new_run;
    END IF;

    -- pending: stage edges, plus one per group barrier the task's group waits
    -- for, plus the plan's hold; a task is written in its first state (a
    -- skipped one keeps the reason in error), so that nothing is written twice.
    -- The edges and barriers are counted once for the version (a count per
    -- stage probed an index each, the stage edges' through the wrong one
    -- while the version had none), and the skip reason is taken once per
    -- stage (OFFSET 0: pulled up, it was computed for each of its three uses).
    INSERT INTO parflow.task (run_id, stage_ord, group_ord, agent, state, error, pending, priority, rank, not_before,
                              hold_ord)
    SELECT new_run, x.ord, x.group_ord, x.agent,
           CASE WHEN x.why IS NOT NULL THEN 'skipped' WHEN x.pending > 0 THEN 'waiting'
                WHEN x.agent IS NULL THEN 'awaiting' ELSE 'ready' END,
           x.why->>'reason', x.pending, parflow_start.priority, x.rank,
           CASE WHEN x.why IS NULL AND x.pending = 0 THEN delay END,
           x.hold_ord
      -- (a map stage's own task has no agent: it waits for its instances)
      FROM (SELECT s.ord, s.group_ord, CASE WHEN s.map_over_ord IS NULL THEN s.agent END AS agent, rk.rank, sk.why,
                   rk.hold_ord,
                   coalesce(sd.n, 0) + coalesce(gd.n, 0) + (rk.hold_ord IS NOT NULL)::integer AS pending
              FROM parflow.stage s JOIN unnest(rk_ords, rk_ranks, rk_holds) rk(ord, rank, hold_ord) ON rk.ord = s.ord
              LEFT JOIN (SELECT d.stage_ord, count(*)::integer AS n FROM parflow.stage_dep d
                          WHERE d.version_id = ver GROUP BY d.stage_ord) sd ON sd.stage_ord = s.ord
              LEFT JOIN (SELECT g.group_ord, count(*)::integer AS n FROM parflow.group_dep g
                          WHERE g.version_id = ver GROUP BY g.group_ord) gd ON gd.group_ord = s.group_ord
             CROSS JOIN LATERAL (SELECT parflow._skip_reason(s, vstages[s.verifies_ord + 1], flags) AS why OFFSET 0) sk
             WHERE s.version_id = ver) x
     -- task ids in stage order: the dispatcher breaks ties between equal
     -- ranks by task id, as the planner does by stage
     ORDER BY x.ord;

    INSERT INTO parflow.run_remaining (run_id, shard, remaining)
    SELECT new_run, parflow._shard(t.id), count(*) FROM parflow.task t
     WHERE t.run_id = new_run AND t.state <> 'skipped' GROUP BY parflow._shard(t.id);

    INSERT INTO parflow.run_group (run_id, group_ord, pending)
    SELECT new_run, g.ord, (SELECT count(*) FROM parflow.stage s WHERE s.version_id = ver AND s.group_ord = g.ord)
      FROM parflow.stage_group g WHERE g.version_id = ver;

    PERFORM parflow._announce(new_run, 'started',
        jsonb_build_object('workflow', workflow, 'parallel', par, 'priority', priority));
    INSERT INTO parflow.event (run_id, task_id, kind, detail)
    SELECT new_run, t.id, 'skipped', parflow._skip_reason(s, vstages[s.verifies_ord + 1], flags)
      FROM parflow.task t JOIN parflow.stage s ON s.version_id = ver AND s.ord = t.stage_ord
     WHERE t.run_id = new_run AND t.state = 'skipped';

    -- Tasks with nothing to wait for are ready; skipped ones pass through.
    INSERT INTO parflow.event (run_id, task_id, kind)
    SELECT new_run, t.id, 'ready' FROM parflow.task t
     WHERE t.run_id = new_run AND t.state = 'ready' ORDER BY t.id;
    -- wait stages with nothing to wait for await their event from the start
    PERFORM parflow._await(new_run, ARRAY(SELECT t.stage_ord FROM parflow.task t
                                           WHERE t.run_id = new_run AND t.state = 'awaiting'));
    SELECT array_agg(t.stage_ord) INTO start_ords FROM parflow.task t
     WHERE t.run_id = new_run AND t.pending = 0 AND t.state = 'skipped';
    PERFORM parflow._done(new_run, coalesce(start_ords, '{}'));
    -- the run's clock starts when its first tasks can be dispatched
    UPDATE parflow.run rn SET started_at = coalesce(delay, clock_timestamp()) WHERE rn.id = new_run;
    PERFORM parflow._finish_if_done(new_run);
    PERFORM parflow._wake();
    RETURN new_run;
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_start(text, text[], integer, boolean, jsonb, text, timestamptz) IS
    'Start a run of the latest version of a workflow: one task per stage, conditional stages without their flag skipped; returns the run id. With key, a run that has the key already is returned and nothing is created; with not_before, nothing is dispatched before that time';

CREATE OR REPLACE FUNCTION @extschema@.parflow_failures(run bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
DECLARE
    rep jsonb;
BEGIN
    PERFORM parflow._run_get(run);
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'task', t.id, 'stage', s.name, 'agent', t.agent, 'attempts', t.attempt,
               'failed_at', t.finished_at, 'last_error', t.error,
               'errors', (SELECT coalesce(jsonb_agg(jsonb_build_object('at', e.at, 'attempt', e.detail->'attempt',
                                                              'worker', e.detail->'worker', 'why', e.detail->'why',
                                                              'error', e.detail->'error') ORDER BY e.id), '[]')
                            FROM parflow.event e WHERE e.run_id = run AND e.task_id = t.id
                             AND e.kind IN ('retry', 'failed', 'rejected')))
             -- a map instance: its index
             || CASE WHEN t.item IS NOT NULL THEN jsonb_build_object('item', t.item) ELSE '{}' END
             ORDER BY t.stage_ord, t.item NULLS FIRST), '[]')
      INTO rep
      FROM parflow.task t JOIN parflow.run r ON r.id = t.run_id
      JOIN parflow.stage s ON s.version_id = r.version_id AND s.ord = t.stage_ord
     WHERE t.run_id = run AND t.state = 'failed';
    RETURN rep;
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_failures(bigint) IS
    'The aggregated failure report of a run: every failed stage with its agent, attempts and each attempt''s error';

-- The state of a group of a run from the states of its tasks.
CREATE OR REPLACE FUNCTION parflow._group_state(states text[]) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN 'failed' = ANY (states) THEN 'failed'
        WHEN states <@ ARRAY['succeeded', 'skipped'] THEN 'succeeded'
        WHEN states && ARRAY['dispatched', 'running', 'awaiting'] THEN 'running'
        WHEN 'cancelled' = ANY (states) AND NOT states && ARRAY['waiting', 'ready'] THEN 'cancelled'
        WHEN states && ARRAY['succeeded', 'ready'] THEN 'running'
        ELSE 'waiting' END
$$;
COMMENT ON FUNCTION parflow._group_state(text[]) IS 'Internal: a group''s state from its tasks'' states (failed, succeeded, running, cancelled, waiting)';

-- One group of a run as JSON: its state, each stage's state, the outputs of
-- the stages that succeeded, the skipped ones with their reason.
CREATE OR REPLACE FUNCTION parflow._group_json(p_run bigint, ver bigint, p_group integer) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
               'group', g.name,
               'state', parflow._group_state(array_agg(t.state)),
               'stages', jsonb_object_agg(s.name, t.state ORDER BY s.ord),
               'outputs', coalesce(jsonb_object_agg(s.name, t.output ORDER BY s.ord)
                                   FILTER (WHERE t.state = 'succeeded'), '{}'),
               'skipped', coalesce(jsonb_object_agg(s.name, t.error ORDER BY s.ord)
                                   FILTER (WHERE t.state = 'skipped'), '{}'))
      FROM parflow.stage_group g
      JOIN parflow.task t ON t.run_id = p_run AND t.group_ord = g.ord AND t.item IS NULL
      JOIN parflow.stage s ON s.version_id = ver AND s.ord = t.stage_ord
     WHERE g.version_id = ver AND g.ord = p_group
     GROUP BY g.name
$$;
COMMENT ON FUNCTION parflow._group_json(bigint, bigint, integer) IS 'Internal: a group of a run as JSON (state, stage states, outputs, skipped stages)';

CREATE OR REPLACE FUNCTION @extschema@.parflow_group_result(run bigint, group_name text) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
DECLARE
    r parflow.run;
    g integer;
BEGIN
    IF run IS NULL OR group_name IS NULL THEN
        RAISE EXCEPTION 'run and group name must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    r := parflow._run_get(run);
    SELECT sg.ord INTO g FROM parflow.stage_group sg WHERE sg.version_id = r.version_id AND sg.name = group_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % has no group "%"', run, group_name USING ERRCODE = 'undefined_object',
            HINT = 'parflow.tasks lists the groups of a run (column group_name).';
    END IF;
    RETURN parflow._group_json(r.id, r.version_id, g);
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_group_result(bigint, text) IS
    'Every output of a group of a run, with the group''s state and each stage''s state: {"group", "state", "stages", "outputs", "skipped"}';

CREATE OR REPLACE FUNCTION @extschema@.parflow_result(run bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
DECLARE
    r parflow.run;
    res jsonb;
BEGIN
    r := parflow._run_get(run);
    SELECT jsonb_build_object(
               'run', r.id, 'workflow', w.name, 'version', v.version, 'state', r.state, 'input', r.input,
               'outputs', (SELECT coalesce(jsonb_object_agg(s.name, t.output ORDER BY s.ord), '{}')
                             FROM parflow.task t JOIN parflow.stage s ON s.version_id = r.version_id AND s.ord = t.stage_ord
                            WHERE t.run_id = r.id AND t.state = 'succeeded' AND t.item IS NULL),
               'groups', (SELECT jsonb_agg(parflow._group_json(r.id, r.version_id, g.ord) ORDER BY g.ord)
                            FROM parflow.stage_group g WHERE g.version_id = r.version_id))
      INTO res
      FROM parflow.workflow_version v JOIN parflow.workflow w ON w.id = v.workflow_id
     WHERE v.id = r.version_id;
    RETURN res;
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_result(bigint) IS
    'The whole run''s outputs: {"run", "workflow", "version", "state", "input", "outputs": {stage: output}, "groups": [group results]}';

CREATE OR REPLACE FUNCTION @extschema@.parflow_report(run bigint)
RETURNS TABLE(workflow text, version integer, state text, parallel boolean,
              planned interval, actual interval, work interval,
              realised_savings_pct numeric, off_plan_pct numeric)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
DECLARE
    r parflow.run;
BEGIN
    r := parflow._run_get(run);
    -- the plan of a run whose map stages expanded counts their real widths
    IF EXISTS (SELECT FROM parflow.event e WHERE e.run_id = r.id AND e.kind = 'expanded') THEN
        r.planned := parflow._run_plan(r.id);
    END IF;
    -- work: the sum of the succeeded tasks' last attempts, what one agent at
    -- a time would have taken; actual: start to finish (or to now).
    RETURN QUERY
    SELECT w.name, v.version, r.state, r.parallel, r.planned,
           coalesce(r.finished_at, clock_timestamp()) - r.started_at,
           t.work,
           CASE WHEN extract(epoch FROM t.work) > 0
                THEN round(100 * (1 - extract(epoch FROM coalesce(r.finished_at, clock_timestamp()) - r.started_at)
                                      / extract(epoch FROM t.work)), 1) END,
           CASE WHEN extract(epoch FROM r.planned) > 0 AND r.finished_at IS NOT NULL
                THEN round(100 * (extract(epoch FROM r.finished_at - r.started_at)
                                  / extract(epoch FROM r.planned) - 1), 1) END
      FROM parflow.workflow_version v JOIN parflow.workflow w ON w.id = v.workflow_id,
           LATERAL (SELECT coalesce(sum(tk.finished_at - tk.started_at), '0') AS work FROM parflow.task tk
                     WHERE tk.run_id = r.id AND tk.state = 'succeeded') t
     WHERE v.id = r.version_id;
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_report(bigint) IS
    'Planned against actual makespan of a run (the plan at its start; with map stages that expanded, counting their real widths), the work it did (the one-at-a-time time) and the savings realised';
