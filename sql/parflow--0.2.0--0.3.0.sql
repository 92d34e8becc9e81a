-- parflow 0.2.0 -> 0.3.0: the completion hands its slot over; a stage's
-- timeout is enforced; long error texts are cut instead of stored whole, and
-- a run announcement too long for a NOTIFY payload goes out without its detail.
--
-- A completion frees one slot: in the database's cap, in its run's cap and in
-- the affinity rules that cover its agent.  When the next task the dispatcher
-- would choose belongs to the same run and needs no other slot, the
-- completion gives it that slot in its own transaction (marks it dispatched,
-- with a "dispatched" event naming the completed task) and queues its
-- NOTIFY for the dispatcher, which sends it as soon as the completion
-- commits, without a dispatch pass.  The number of tasks at work does not
-- change, so every cap holds exactly as before; only the dispatcher sends
-- dispatch NOTIFYs.  `CREATE EXTENSION parflow` runs 0.1.0, 0.2.0 and then
-- this script, so a fresh install and an upgraded one are the same.
\echo Use "ALTER EXTENSION parflow UPDATE TO '0.3.0'" to load this file. \quit

-- A run's ready tasks in dispatch order: the hand-over finds the next task
-- of its run, and the first ready task of every other live run, in one index
-- probe each (the run's ready tasks were only indexed by run, unordered).
DROP INDEX parflow.task_ready_idx;
CREATE INDEX task_ready_idx ON parflow.task (run_id, priority, rank DESC, id) WHERE state = 'ready';

CREATE FUNCTION parflow._note_dispatch(channel text, payload text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'parflow_note_dispatch'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION parflow._note_dispatch(text, text) IS
    'Internal: have the dispatcher send this NOTIFY when the current transaction commits; false (nothing queued) when no dispatcher serves this database';

CREATE FUNCTION parflow._payload(task bigint, run bigint, stage text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT pg_catalog.jsonb_build_object('kind', 'dispatch', 'task', task, 'run', run, 'stage', stage)::text
$$;
COMMENT ON FUNCTION parflow._payload(bigint, bigint, text) IS
    'Internal: the payload of a dispatch notification on channel parflow_<agent>';

-- Called by the dispatcher when notes may have been lost (a full queue, a
-- prepared transaction, a failed send, its own start).
CREATE FUNCTION parflow._renotify() RETURNS integer
LANGUAGE sql SET search_path = pg_catalog, parflow, pg_temp AS $$
    SELECT count(pg_notify('parflow_' || t.agent, parflow._payload(t.id, t.run_id, s.name)))::integer
      FROM parflow.task t JOIN parflow.run r ON r.id = t.run_id
      JOIN parflow.stage s ON s.version_id = r.version_id AND s.ord = t.stage_ord
     WHERE t.state = 'dispatched'
$$;
COMMENT ON FUNCTION parflow._renotify() IS
    'Internal, called by the dispatcher: send the notification of every dispatched task again';

-- The slot of a completed task goes to the best ready task of its run when
-- the dispatcher would choose that task next and it needs no slot the
-- completed one did not hold.  handed: whether it did; more: whether a
-- dispatch pass could still do something (not handed, or room left under
-- the caps and another ready task in the run).
CREATE FUNCTION parflow._handover(done parflow.task, OUT handed boolean, OUT more boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, parflow, pg_temp SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    r parflow.run;
    b record;
    run_active integer;
    all_active integer;
    cap integer := current_setting('parflow.max_parallel_stages')::integer;
    stage_name text;
BEGIN
    handed := false;
    more := true;
    SELECT * INTO r FROM parflow.run WHERE id = done.run_id;
    IF r.state IS DISTINCT FROM 'running' THEN
        RETURN;
    END IF;
    -- the run's next task in dispatch order
    SELECT tk.id, tk.agent, tk.priority, tk.rank, tk.stage_ord INTO b FROM parflow.task tk
     WHERE tk.run_id = done.run_id AND tk.state = 'ready'
       AND (tk.not_before IS NULL OR tk.not_before <= clock_timestamp())
     ORDER BY tk.priority, tk.rank DESC, tk.id
     LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- No other slot: every affinity rule that covers it covered the
    -- completed task; and no cap lowered below the tasks at work.
    SELECT count(*) FILTER (WHERE a.run_id = done.run_id), count(*) INTO run_active, all_active
      FROM parflow.task a WHERE a.state IN ('dispatched', 'running');
    IF run_active >= r.max_parallel OR all_active >= cap
       OR EXISTS (SELECT FROM parflow.affinity a
                   WHERE a.version_id = r.version_id AND b.agent = ANY (a.agents) AND NOT done.agent = ANY (a.agents)) THEN
        RETURN;
    END IF;
    -- The dispatcher would choose it next: no other running run has a ready
    -- task before it in dispatch order (run priority, then rank, then id;
    -- each run's first one is enough).
    IF EXISTS (SELECT FROM parflow.run xr
                CROSS JOIN LATERAL (SELECT x.priority, x.rank, x.id FROM parflow.task x
                                     WHERE x.run_id = xr.id AND x.state = 'ready'
                                       AND (x.not_before IS NULL OR x.not_before <= clock_timestamp())
                                     ORDER BY x.priority, x.rank DESC, x.id LIMIT 1) x
                WHERE xr.state = 'running' AND xr.id <> done.run_id
                  AND (x.priority < b.priority
                       OR (x.priority = b.priority AND (x.rank > b.rank OR (x.rank = b.rank AND x.id < b.id))))) THEN
        RETURN;
    END IF;
    SELECT s.name INTO stage_name FROM parflow.stage s WHERE s.version_id = r.version_id AND s.ord = b.stage_ord;
    IF NOT parflow._note_dispatch('parflow_' || b.agent, parflow._payload(b.id, done.run_id, stage_name)) THEN
        RETURN;
    END IF;
    UPDATE parflow.task SET state = 'dispatched', dispatched_at = clock_timestamp() WHERE id = b.id;
    INSERT INTO parflow.event (run_id, task_id, kind, detail)
    VALUES (done.run_id, b.id, 'dispatched', jsonb_build_object('handover', done.id));
    handed := true;
    -- (the index's order, so that the first entry is enough)
    more := run_active + 1 < r.max_parallel AND all_active + 1 < cap
            AND (SELECT tk.id FROM parflow.task tk
                  WHERE tk.run_id = done.run_id AND tk.state = 'ready' AND tk.id <> b.id
                  ORDER BY tk.priority, tk.rank DESC, tk.id LIMIT 1) IS NOT NULL;
END
$$;
COMMENT ON FUNCTION parflow._handover(parflow.task) IS
    'Internal, part of a completion: give the completed task''s slot to the next task of its run when the dispatcher would choose it and it needs no other slot (its NOTIFY is sent by the dispatcher at commit); says whether it did and whether a dispatch pass could do more';

CREATE OR REPLACE FUNCTION @extschema@.parflow_complete(task bigint, token uuid, output jsonb DEFAULT '{}')
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp
    SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    t parflow.task;
BEGIN
    t := parflow._held(task, token);
    output := coalesce(output, '{}');
    PERFORM parflow._check_output(t.id, output);
    UPDATE parflow.task tk SET state = 'succeeded', output = parflow_complete.output, token = NULL,
           lease_until = NULL, finished_at = clock_timestamp(), error = NULL, interrupted_at = NULL
     WHERE tk.id = t.id;
    INSERT INTO parflow.event (run_id, task_id, kind, detail)
    VALUES (t.run_id, t.id, 'succeeded', jsonb_build_object('worker', t.worker, 'attempt', t.attempt));
    PERFORM parflow._done(t.run_id, ARRAY[t.stage_ord]);
    UPDATE parflow.run_remaining rr SET remaining = rr.remaining - 1
     WHERE rr.run_id = t.run_id AND rr.shard = t.id % 16;
    PERFORM parflow._finish_if_done(t.run_id);
    PERFORM parflow._check_blocked(t.run_id);
    -- A dispatch pass is wanted unless the slot was handed over and the pass
    -- could do nothing more (the handed-over task's NOTIFY wakes the
    -- dispatcher anyway, only to send it).
    IF (parflow._handover(t)).more THEN
        PERFORM parflow._wake();
    END IF;
END
$$;

CREATE FUNCTION parflow._dispatcher_counts() RETURNS bigint[]
    AS 'MODULE_PATHNAME', 'parflow_dispatcher_counts'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION parflow._dispatcher_counts() IS
    'Internal: {dispatch passes run, hand-over notifications sent} since the server started; NULL when parflow is not preloaded';

-- Two more counters: passes and hand-over notifications since the start.
CREATE OR REPLACE FUNCTION @extschema@.parflow_metrics() RETURNS TABLE(metric text, value double precision)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
    WITH ev AS (
        SELECT k.kind, coalesce((SELECT n FROM parflow.event_tally et WHERE et.kind = k.kind), 0)
                       + (SELECT count(*) FROM parflow.event e WHERE e.kind = k.kind) AS n
          FROM unnest(ARRAY['dispatched', 'succeeded', 'retry', 'failed', 'route_back', 'interrupt',
                            'preempted', 'released', 'unclaimed']) k(kind)),
    handoff AS (
        SELECT avg(extract(epoch FROM d.at - rd.at)) AS s
          FROM (SELECT e.id, e.run_id, e.task_id, e.at FROM parflow.event e
                 WHERE e.kind = 'dispatched' ORDER BY e.id DESC LIMIT 1000) d
          CROSS JOIN LATERAL (SELECT e2.at FROM parflow.event e2
                               WHERE e2.run_id = d.run_id AND e2.task_id = d.task_id AND e2.id < d.id
                                 AND e2.kind = 'ready' ORDER BY e2.id DESC LIMIT 1) rd)
    SELECT format('parflow_runs{state="%s"}', st), (SELECT count(*) FROM parflow.run r WHERE r.state = st)::float8
      FROM unnest(ARRAY['running', 'paused', 'blocked', 'succeeded', 'cancelled']) st
    UNION ALL
    SELECT format('parflow_tasks{state="%s"}', st), (SELECT count(*) FROM parflow.task t WHERE t.state = st)::float8
      FROM unnest(ARRAY['waiting', 'ready', 'dispatched', 'running', 'succeeded', 'failed', 'skipped', 'cancelled']) st
    UNION ALL
    SELECT format('parflow_events_total{kind="%s"}', ev.kind), ev.n::float8 FROM ev
    UNION ALL
    SELECT 'parflow_handoff_seconds_mean', coalesce((SELECT s FROM handoff), 0)
    UNION ALL
    SELECT 'parflow_max_parallel_stages', current_setting('parflow.max_parallel_stages')::float8
    UNION ALL
    SELECT 'parflow_dispatcher_up',
           (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'parflow dispatcher')::float8
    UNION ALL
    SELECT 'parflow_dispatch_passes_total', coalesce((parflow._dispatcher_counts())[1], 0)::float8
    UNION ALL
    SELECT 'parflow_handover_notifications_total', coalesce((parflow._dispatcher_counts())[2], 0)::float8
$$;
COMMENT ON FUNCTION @extschema@.parflow_metrics() IS
    'Counters for scraping (Prometheus-style names): runs and tasks by state, events by kind (dispatches, retries, route-backs, interrupts...), mean hand-off latency over the last 1000 dispatches, dispatcher up, dispatch passes and hand-over notifications since the server started';

-- A stage's timeout bounds each attempt, from its claim: the dispatcher's
-- pass ends an attempt that ran longer (a retry with backoff while attempts
-- are left, else the task fails) and tells its agent to stop (a "cancel"
-- notification; its token is refused from then on).
CREATE FUNCTION parflow._expire_timeouts() RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, parflow, pg_temp SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    x record;
    n integer := 0;
BEGIN
    FOR x IN SELECT tk AS t, s.timeout, s.name FROM parflow.task tk
               JOIN parflow.run r ON r.id = tk.run_id
               JOIN parflow.stage s ON s.version_id = r.version_id AND s.ord = tk.stage_ord
              WHERE tk.state = 'running' AND s.timeout IS NOT NULL
                AND tk.started_at + s.timeout < clock_timestamp()
                FOR UPDATE OF tk SKIP LOCKED LOOP
        PERFORM parflow._retry_or_fail(x.t, 'timeout',
            format('attempt %s of stage %s ran longer than its timeout of %s', (x.t).attempt, x.name, parflow._dur(x.timeout)), true);
        PERFORM pg_notify('parflow_' || (x.t).agent,
            jsonb_build_object('kind', 'cancel', 'task', (x.t).id, 'run', (x.t).run_id, 'stage', x.name,
                               'why', 'timeout')::text);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION parflow._expire_timeouts() IS
    'Internal, part of the dispatcher''s pass: end the attempts that ran longer than their stage''s timeout (retry or fail) and tell their agents to stop';

ALTER FUNCTION parflow._dispatch() RENAME TO _dispatch_core;
COMMENT ON FUNCTION parflow._dispatch_core() IS
    'Internal, the dispatcher''s pass after the timeouts: expire leases, then dispatch ready tasks by run priority and rank under every cap, one NOTIFY per task';
-- (no SET clauses: both functions it calls set their own, and it runs on
-- every pass)
CREATE FUNCTION parflow._dispatch() RETURNS integer
LANGUAGE sql AS $$
    SELECT parflow._expire_timeouts();
    SELECT parflow._dispatch_core();
$$;
COMMENT ON FUNCTION parflow._dispatch() IS
    'Internal, the dispatcher''s pass: end attempts past their stage''s timeout, expire leases, then dispatch ready tasks by run priority and rank under every cap, one NOTIFY per task';

-- An agent's error text is kept whole up to 65,536 characters; a longer one
-- (a whole log) keeps its first and last 32,768 with a marker between, so
-- that a failure is never refused for its size.
CREATE FUNCTION parflow._error_text(e text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN e IS NULL THEN 'no error text'
                WHEN length(e) <= 65536 THEN e
                ELSE left(e, 32768) || format(E'\n[... %s characters cut ...]\n', length(e) - 65536) || right(e, 32768)
           END
$$;
COMMENT ON FUNCTION parflow._error_text(text) IS
    'Internal: an agent''s error text as stored: at most 65,536 characters kept (the first and last halves)';

CREATE OR REPLACE FUNCTION @extschema@.parflow_fail(task bigint, token uuid, error text, retryable boolean DEFAULT true,
                                          output jsonb DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp
    SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    t parflow.task;
    st parflow.stage;
    err text := parflow._error_text(error);
BEGIN
    t := parflow._held(task, token);
    IF output IS NOT NULL THEN
        PERFORM parflow._check_output(t.id, output);
    END IF;
    SELECT s.* INTO st FROM parflow.stage s JOIN parflow.run r ON r.version_id = s.version_id
     WHERE r.id = t.run_id AND s.ord = t.stage_ord;
    IF st.verifies_ord IS NOT NULL THEN
        -- A verification that fails sends its stage back (rule 3).
        PERFORM parflow._route_back(t, st, err, output);
    ELSE
        PERFORM parflow._retry_or_fail(t, 'failed', err, coalesce(retryable, true));
        IF output IS NOT NULL THEN
            UPDATE parflow.task tk SET output = parflow_fail.output WHERE tk.id = t.id;
        END IF;
    END IF;
END
$$;

-- NOTIFY payloads are limited to 8000 bytes: a run transition whose detail
-- is longer (a blocked run's failure report with long errors) is announced
-- without it, marked "truncated"; its run_<kind> event keeps it whole.  (It
-- raised "payload string too long", and the failure that blocked the run
-- could not be reported.)
CREATE OR REPLACE FUNCTION parflow._announce(p_run bigint, p_kind text, p_detail jsonb DEFAULT '{}')
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    payload text := (jsonb_build_object('kind', p_kind, 'run', p_run) || p_detail)::text;
BEGIN
    PERFORM parflow._event(p_run, NULL, 'run_' || p_kind, p_detail);
    IF octet_length(payload) >= 8000 THEN
        payload := jsonb_build_object('kind', p_kind, 'run', p_run, 'truncated', true)::text;
    END IF;
    PERFORM pg_notify('parflow_orchestrator', payload);
END
$$;
COMMENT ON FUNCTION parflow._announce(bigint, text, jsonb) IS
    'Internal: log a run transition and NOTIFY parflow_orchestrator (without the detail, marked truncated, when it would not fit in a payload)';

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA parflow FROM PUBLIC;
