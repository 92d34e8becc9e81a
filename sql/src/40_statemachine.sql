-- parflow state machine: task transitions and dependency release, the agent
-- API (claim, heartbeat, complete with hand-over, fail, release) and the
-- dispatcher's pass (timeouts, leases, preemption, dispatch under every
-- cap).  Kept in one file: these are being moved to C together.

CREATE OR REPLACE FUNCTION parflow._wake() RETURNS void
    AS 'MODULE_PATHNAME', 'parflow_wake'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION parflow._wake() IS 'Internal: wake the dispatcher when the current transaction commits';

CREATE OR REPLACE FUNCTION parflow._event(p_run bigint, p_task bigint, p_kind text, p_detail jsonb DEFAULT '{}')
RETURNS void LANGUAGE sql AS $$
    INSERT INTO parflow.event (run_id, task_id, kind, detail) VALUES (p_run, p_task, p_kind, p_detail)
$$;
COMMENT ON FUNCTION parflow._event(bigint, bigint, text, jsonb) IS 'Internal: append to the event log';

-- Announce a run transition to integrations.  NOTIFY payloads are limited
-- to 8000 bytes: a transition whose detail is longer (a blocked run's
-- failure report with long errors) is announced without it, marked
-- "truncated"; its run_<kind> event keeps it whole (a payload too long would
-- roll back the failure that blocked the run).
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

-- Propagate the completion of tasks (succeeded, or skipped and passed
-- through) to their dependents, through stage edges and group barriers.
-- Dependents whose last dependency this was become ready; skipped ones are
-- passed through in turn.
-- Take N finished dependencies off each of the tasks ORDS of a run: those
-- left waiting on nothing become ready (freed), skipped ones left waiting on
-- nothing are passed through (passed).  A skipped task already passed
-- through is never counted again (route-backs).
CREATE OR REPLACE FUNCTION parflow._release(p_run bigint, ords integer[], ns integer[],
                                 OUT passed integer[], OUT freed bigint[])
LANGUAGE plpgsql AS $$
BEGIN
    WITH u AS (
        UPDATE parflow.task t SET pending = t.pending - s.n,
               state = CASE WHEN t.pending = s.n AND t.state = 'waiting' THEN 'ready' ELSE t.state END
          FROM unnest(ords, ns) s(stage_ord, n)
         WHERE t.run_id = p_run AND t.stage_ord = s.stage_ord
           AND NOT (t.state = 'skipped' AND t.pending = 0)
        RETURNING t.id, t.stage_ord, t.state, t.pending)
    SELECT coalesce(array_agg(u.stage_ord) FILTER (WHERE u.state = 'skipped' AND u.pending = 0), '{}'),
           coalesce(array_agg(u.id) FILTER (WHERE u.state = 'ready' AND u.pending = 0), '{}')
      INTO passed, freed FROM u;
END
$$;
COMMENT ON FUNCTION parflow._release(bigint, integer[], integer[]) IS
    'Internal: count finished dependencies off tasks of a run; returns the skipped tasks to pass through and the tasks made ready';

CREATE OR REPLACE FUNCTION parflow._done(p_run bigint, p_ords integer[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    ver bigint;
    ords integer[];
    ns integer[];
    done_groups integer[];
    passed integer[];
    freed bigint[];
    r record;
BEGIN
    SELECT version_id INTO ver FROM parflow.run WHERE id = p_run;
    WHILE cardinality(p_ords) > 0 LOOP
        -- dependents through stage edges
        SELECT array_agg(d.stage_ord), array_agg(d.n) INTO ords, ns
          FROM (SELECT d.stage_ord, count(*)::integer AS n FROM parflow.stage_dep d
                 WHERE d.version_id = ver AND d.dep_ord = ANY (p_ords) GROUP BY d.stage_ord) d;
        passed := '{}';
        freed := '{}';
        IF ords IS NOT NULL THEN
            r := parflow._release(p_run, ords, ns);
            passed := r.passed;
            freed := r.freed;
        END IF;

        -- Group barriers: a group is done when its last task is.  Every
        -- completion of a group updates its row, so this comes last: the row
        -- lock is held for as short a time as possible before the commit;
        -- and only groups that other groups wait for keep count.
        WITH c AS (SELECT t.group_ord, count(*)::integer AS n FROM parflow.task t
                    WHERE t.run_id = p_run AND t.stage_ord = ANY (p_ords) AND NOT t.skip_barrier
                      AND EXISTS (SELECT FROM parflow.group_dep gd
                                   WHERE gd.version_id = ver AND gd.dep_ord = t.group_ord)
                    GROUP BY t.group_ord),
        u AS (UPDATE parflow.run_group rg SET pending = rg.pending - c.n FROM c
               WHERE rg.run_id = p_run AND rg.group_ord = c.group_ord
              RETURNING rg.group_ord, rg.pending)
        SELECT array_agg(u.group_ord) FILTER (WHERE u.pending = 0) INTO done_groups FROM u;

        -- the groups that waited on finished groups
        IF cardinality(done_groups) > 0 THEN
            SELECT array_agg(x.stage_ord), array_agg(x.n) INTO ords, ns
              FROM (SELECT t.stage_ord, count(*)::integer AS n FROM parflow.group_dep gd
                      JOIN parflow.task t ON t.run_id = p_run AND t.group_ord = gd.group_ord
                     WHERE gd.version_id = ver AND gd.dep_ord = ANY (done_groups)
                     GROUP BY t.stage_ord) x;
            r := parflow._release(p_run, ords, ns);
            passed := passed || r.passed;
            freed := freed || r.freed;
        END IF;
        INSERT INTO parflow.event (run_id, task_id, kind)
        SELECT p_run, id, 'ready' FROM unnest(freed) id;
        p_ords := passed;
    END LOOP;
END
$$;
COMMENT ON FUNCTION parflow._done(bigint, integer[]) IS 'Internal: propagate finished tasks to their dependents (stage edges and group barriers)';

-- After a task failed for good: block the run when nothing more can run.
-- A failure and the completion of the run's last other task, committing at
-- the same moment, may each miss the other (the completion locks no row the
-- failure updates): the dispatcher's next pass, which both wake, checks
-- again (parflow._dispatch).  Only the update that changes the state
-- announces it.
CREATE OR REPLACE FUNCTION parflow._check_blocked(p_run bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM parflow.run r WHERE r.id = p_run AND r.state = 'running' AND r.failed > 0)
       AND NOT EXISTS (SELECT FROM parflow.task t WHERE t.run_id = p_run
                          AND t.state IN ('ready', 'dispatched', 'running')) THEN
        UPDATE parflow.run r SET state = 'blocked' WHERE r.id = p_run AND r.state = 'running' AND r.failed > 0;
        IF FOUND THEN
            PERFORM parflow._announce(p_run, 'blocked', jsonb_build_object('failures', @extschema@.parflow_failures(p_run)));
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION parflow._check_blocked(bigint) IS 'Internal: mark a run blocked, with its failure report, when a failure left nothing runnable';

-- The task held by (task, token), locked; raises unless the token holds it.
CREATE OR REPLACE FUNCTION parflow._held(task_id bigint, tok uuid) RETURNS parflow.task
LANGUAGE plpgsql AS $$
DECLARE
    t parflow.task;
BEGIN
    IF task_id IS NULL OR tok IS NULL THEN
        RAISE EXCEPTION 'task and token must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO t FROM parflow.task WHERE id = task_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task % does not exist', task_id USING ERRCODE = 'undefined_object';
    END IF;
    IF t.token IS DISTINCT FROM tok OR t.state <> 'running' THEN
        RAISE EXCEPTION 'task % is not held by this token', task_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = CASE WHEN t.state = 'running' THEN 'Another lease holds the task.'
                                ELSE format('The task is in state %s.', t.state) END,
                  HINT = 'The lease may have expired or the task was re-dispatched; claim new work with parflow_claim().';
    END IF;
    IF t.lease_until < clock_timestamp() THEN
        RAISE EXCEPTION 'lease of task % has expired', task_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('The lease ended at %s.', t.lease_until),
                  HINT = 'Send parflow_heartbeat() more often than the lease given to parflow_claim().';
    END IF;
    RETURN t;
END
$$;
COMMENT ON FUNCTION parflow._held(bigint, uuid) IS 'Internal: lock a task and check that the token holds its live lease (55000 otherwise)';

-- Back to ready (or failed for good) after a lost attempt.  A task that
-- fails for good in a fail_fast group stops the rest of its group: what has
-- not started yet is cancelled (tasks at work finish).
CREATE OR REPLACE FUNCTION parflow._retry_or_fail(t parflow.task, why text, err text, retryable boolean)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st parflow.stage;
    policy text;
    next_state text;
BEGIN
    SELECT s.* INTO st FROM parflow.stage s JOIN parflow.run r ON r.version_id = s.version_id
     WHERE r.id = t.run_id AND s.ord = t.stage_ord;
    next_state := CASE WHEN retryable AND t.attempt - t.base_attempt < st.max_attempts THEN 'ready' ELSE 'failed' END;
    UPDATE parflow.task SET state = next_state, token = NULL, lease_until = NULL, error = err,
           interrupted_at = NULL,
           not_before = CASE WHEN next_state = 'ready'
                             THEN clock_timestamp() + st.retry_backoff * power(2, least(greatest(t.attempt - t.base_attempt - 1, 0), 10)) END,
           finished_at = CASE WHEN next_state = 'failed' THEN clock_timestamp() END
     WHERE id = t.id;
    INSERT INTO parflow.event (run_id, task_id, kind, detail)
    VALUES (t.run_id, t.id, CASE next_state WHEN 'ready' THEN 'retry' ELSE 'failed' END,
            jsonb_build_object('why', why, 'attempt', t.attempt, 'max_attempts', st.max_attempts,
                               'worker', t.worker, 'error', err));
    IF next_state = 'failed' THEN
        UPDATE parflow.run r SET failed = r.failed + 1 WHERE r.id = t.run_id;
        SELECT g.on_failure INTO policy FROM parflow.stage_group g
         WHERE g.version_id = st.version_id AND g.ord = st.group_ord;
        IF policy = 'fail_fast' THEN
            WITH u AS (UPDATE parflow.task tk SET state = 'cancelled', finished_at = clock_timestamp()
                        WHERE tk.run_id = t.run_id AND tk.group_ord = t.group_ord
                          AND tk.state IN ('waiting', 'ready', 'dispatched')
                       RETURNING tk.id)
            INSERT INTO parflow.event (run_id, task_id, kind, detail)
            SELECT t.run_id, u.id, 'cancelled', jsonb_build_object('why', 'fail_fast', 'failed_stage', st.name)
              FROM u;
        END IF;
        PERFORM parflow._check_blocked(t.run_id);
    END IF;
    PERFORM parflow._wake();
    RETURN next_state;
END
$$;
COMMENT ON FUNCTION parflow._retry_or_fail(parflow.task, text, text, boolean) IS 'Internal: after a lost attempt, retry with backoff while attempts are left, else fail the task (and, in a fail_fast group, cancel what of the group has not started)';

-- A failed verification sends the stage it verifies back to its agent: the
-- verified task is re-opened with the failure as feedback (a new round of
-- attempts), everything that depends on it (the verification included) waits
-- for it again, and the verification runs once it is done.  After
-- max_route_backs the verification fails for good and the run is blocked.
CREATE OR REPLACE FUNCTION parflow._route_back(t parflow.task, st parflow.stage, err text, out_doc jsonb)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v parflow.task;
    vname text;
    barrier_open boolean;
BEGIN
    IF t.route_backs >= st.max_route_backs THEN
        PERFORM parflow._retry_or_fail(t, 'verification failed', err, false);
        UPDATE parflow.task tk SET output = out_doc WHERE tk.id = t.id;
        RETURN 'failed';
    END IF;
    SELECT tk.* INTO v FROM parflow.task tk
     WHERE tk.run_id = t.run_id AND tk.stage_ord = st.verifies_ord FOR UPDATE;
    SELECT s.name INTO vname FROM parflow.stage s WHERE s.version_id = st.version_id AND s.ord = st.verifies_ord;
    IF v.state = 'succeeded' THEN
        -- The verified stage is not done any more: its dependents (this
        -- verification among them) count it again, and so does its group
        -- barrier unless that has already passed.
        UPDATE parflow.run_group rg SET pending = rg.pending + 1
         WHERE rg.run_id = t.run_id AND rg.group_ord = v.group_ord AND rg.pending > 0;
        barrier_open := FOUND;
        UPDATE parflow.task tk SET pending = tk.pending + 1
          FROM parflow.stage_dep d
         WHERE d.version_id = st.version_id AND d.dep_ord = v.stage_ord
           AND tk.run_id = t.run_id AND tk.stage_ord = d.stage_ord AND tk.state <> 'skipped';
        UPDATE parflow.task tk SET state = 'ready', base_attempt = tk.attempt, finished_at = NULL,
               output = NULL, not_before = NULL, skip_barrier = NOT barrier_open,
               feedback = jsonb_build_object('verification', st.name, 'round', t.route_backs + 1,
                                             'error', err, 'output', out_doc)
         WHERE tk.id = v.id;
        UPDATE parflow.run_remaining rr SET remaining = rr.remaining + 1
         WHERE rr.run_id = t.run_id AND rr.shard = v.id % 16;
        INSERT INTO parflow.event (run_id, task_id, kind, detail)
        VALUES (t.run_id, v.id, 'routed_back',
                jsonb_build_object('verification', st.name, 'round', t.route_backs + 1, 'error', err));
    END IF;
    -- (Otherwise another verification sent it back already, and this one
    -- already counts it as pending.)
    UPDATE parflow.task tk SET state = CASE WHEN tk.pending > 0 THEN 'waiting' ELSE 'ready' END,
           token = NULL, lease_until = NULL, interrupted_at = NULL, route_backs = tk.route_backs + 1,
           base_attempt = tk.attempt, error = err, output = out_doc
     WHERE tk.id = t.id;
    INSERT INTO parflow.event (run_id, task_id, kind, detail)
    VALUES (t.run_id, t.id, 'route_back',
            jsonb_build_object('stage', vname, 'round', t.route_backs + 1, 'max_route_backs', st.max_route_backs,
                               'attempt', t.attempt, 'worker', t.worker, 'error', err));
    PERFORM parflow._wake();
    RETURN 'route_back';
END
$$;
COMMENT ON FUNCTION parflow._route_back(parflow.task, parflow.stage, text, jsonb) IS 'Internal: a verification failed: send the verified stage back to its agent with the failure, or fail for good after max_route_backs';

-- Mark a run succeeded once every task has succeeded or was skipped (its
-- run_remaining shards add up to 0).  When the last tasks of two shards
-- complete at once, each still sees the other's shard at 1 and neither
-- finishes the run: the dispatcher's next pass, which their commits wake,
-- does (parflow._dispatch).  Finishing twice is harmless: only the update
-- that changes the state announces it.
CREATE OR REPLACE FUNCTION parflow._finish_if_done(p_run bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT coalesce(sum(rr.remaining), 0) FROM parflow.run_remaining rr WHERE rr.run_id = p_run) = 0 THEN
        UPDATE parflow.run r SET state = 'succeeded', finished_at = clock_timestamp()
         WHERE r.id = p_run AND r.state IN ('running', 'paused');
        IF FOUND THEN
            PERFORM parflow._announce(p_run, 'succeeded');
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION parflow._finish_if_done(bigint) IS 'Internal: mark a run succeeded when nothing is left to do';

-- Refuse an output over parflow.max_output_size (54000).
CREATE OR REPLACE FUNCTION parflow._check_output(task_id bigint, doc jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    lim bigint := pg_size_bytes(current_setting('parflow.max_output_size', true));
BEGIN
    IF lim IS NOT NULL AND pg_column_size(doc) > lim THEN
        RAISE EXCEPTION 'output of task % is too large', task_id USING ERRCODE = 'program_limit_exceeded',
            DETAIL = format('It takes %s bytes; parflow.max_output_size is %s bytes.', pg_column_size(doc), lim),
            HINT = 'Store big artifacts elsewhere and return a reference to them.';
    END IF;
END
$$;
COMMENT ON FUNCTION parflow._check_output(bigint, jsonb) IS 'Internal: refuse an output larger than parflow.max_output_size';

-- An agent's error text is kept whole up to 65,536 characters; a longer one
-- (a whole log) keeps its first and last 32,768 with a marker between, so
-- that a failure is never refused for its size.
CREATE OR REPLACE FUNCTION parflow._error_text(e text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN e IS NULL THEN 'no error text'
                WHEN length(e) <= 65536 THEN e
                ELSE left(e, 32768) || format(E'\n[... %s characters cut ...]\n', length(e) - 65536) || right(e, 32768)
           END
$$;
COMMENT ON FUNCTION parflow._error_text(text) IS
    'Internal: an agent''s error text as stored: at most 65,536 characters kept (the first and last halves)';

CREATE OR REPLACE FUNCTION parflow._payload(task bigint, run bigint, stage text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT pg_catalog.jsonb_build_object('kind', 'dispatch', 'task', task, 'run', run, 'stage', stage)::text
$$;
COMMENT ON FUNCTION parflow._payload(bigint, bigint, text) IS
    'Internal: the payload of a dispatch notification on channel parflow_<agent>';

CREATE OR REPLACE FUNCTION parflow._note_dispatch(channel text, payload text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'parflow_note_dispatch'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION parflow._note_dispatch(text, text) IS
    'Internal: have the dispatcher send this NOTIFY when the current transaction commits; false (nothing queued) when no dispatcher serves this database';

-- Called by the dispatcher when notes may have been lost (a full queue, a
-- prepared transaction, a failed send, its own start).
CREATE OR REPLACE FUNCTION parflow._renotify() RETURNS integer
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
CREATE OR REPLACE FUNCTION parflow._handover(done parflow.task, OUT handed boolean, OUT more boolean)
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

-- Make room for P0 tasks (see _dispatch); returns the slots freed at once
-- (dispatched tasks taken back); running ones are sent an interrupt and free
-- theirs when their agents release them.
CREATE OR REPLACE FUNCTION parflow._preempt(global_free integer) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, parflow, pg_temp SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    want integer;
    freed integer := 0;
    t record;
BEGIN
    -- What P0 runs could start now under their own caps: ready P0 tasks,
    -- each affinity rule of their run letting through only as many as it
    -- has room for (room made beyond that would go back to lower
    -- priorities), each run at most its max_parallel less its tasks at work...
    WITH rt AS (
        SELECT tk.id, tk.run_id, tk.agent, r.version_id, r.max_parallel FROM parflow.task tk
          JOIN parflow.run r ON r.id = tk.run_id AND r.state = 'running'
         WHERE tk.state = 'ready' AND tk.priority = 0
           AND (tk.not_before IS NULL OR tk.not_before <= clock_timestamp())),
    cov AS (
        SELECT rt.id, a.max_concurrent - (SELECT count(*) FROM parflow.task b
                                            WHERE b.run_id = rt.run_id AND b.state IN ('dispatched', 'running')
                                              AND b.agent = ANY (a.agents)) AS room,
               row_number() OVER (PARTITION BY rt.run_id, a.ord ORDER BY rt.id) AS k
          FROM rt JOIN parflow.affinity a ON a.version_id = rt.version_id AND rt.agent = ANY (a.agents)),
    x AS (
        SELECT rt.run_id, rt.max_parallel, count(*)::integer AS n FROM rt
         WHERE NOT EXISTS (SELECT FROM cov WHERE cov.id = rt.id AND cov.k > cov.room)
         GROUP BY rt.run_id, rt.max_parallel)
    SELECT coalesce(sum(least(x.n, x.max_parallel - a.c)), 0) INTO want
      FROM x CROSS JOIN LATERAL (SELECT count(*)::integer AS c FROM parflow.task a
                                  WHERE a.run_id = x.run_id AND a.state IN ('dispatched', 'running')) a;
    -- ... less what is free and what interrupts already under way will free.
    want := least(want, current_setting('parflow.max_parallel_stages')::integer) - greatest(global_free, 0)
          - (SELECT count(*) FROM parflow.task tk WHERE tk.state = 'running' AND tk.interrupted_at IS NOT NULL);
    IF want <= 0 THEN
        RETURN 0;
    END IF;
    WITH v AS (SELECT tk.id FROM parflow.task tk WHERE tk.state = 'dispatched' AND tk.priority > 0
                ORDER BY tk.priority DESC, tk.dispatched_at DESC LIMIT want FOR UPDATE SKIP LOCKED),
    u AS (UPDATE parflow.task tk SET state = 'ready', dispatched_at = NULL FROM v WHERE tk.id = v.id
          RETURNING tk.id, tk.run_id)
    INSERT INTO parflow.event (run_id, task_id, kind, detail)
    SELECT u.run_id, u.id, 'preempted', '{"why": "P0 run waiting"}' FROM u;
    GET DIAGNOSTICS freed = ROW_COUNT;
    want := want - freed;
    FOR t IN SELECT tk.id, tk.run_id, tk.agent, tk.worker, s.name
               FROM parflow.task tk JOIN parflow.run r ON r.id = tk.run_id
               JOIN parflow.stage s ON s.version_id = r.version_id AND s.ord = tk.stage_ord
              WHERE tk.state = 'running' AND tk.priority > 0 AND tk.interrupted_at IS NULL
              ORDER BY tk.priority DESC, tk.started_at DESC
              LIMIT greatest(want, 0) FOR UPDATE OF tk SKIP LOCKED LOOP
        UPDATE parflow.task tk SET interrupted_at = clock_timestamp() WHERE tk.id = t.id;
        INSERT INTO parflow.event (run_id, task_id, kind, detail)
        VALUES (t.run_id, t.id, 'interrupt', jsonb_build_object('worker', t.worker, 'why', 'P0 run waiting'));
        PERFORM pg_notify('parflow_' || t.agent,
            jsonb_build_object('kind', 'interrupt', 'task', t.id, 'run', t.run_id, 'stage', t.name)::text);
    END LOOP;
    RETURN freed;
END
$$;
COMMENT ON FUNCTION parflow._preempt(integer) IS
    'Internal, part of the dispatcher''s pass: make room for waiting P0 tasks by taking back unclaimed lower-priority tasks and interrupting running ones';

-- A stage's timeout bounds each attempt, from its claim: the dispatcher's
-- pass ends an attempt that ran longer (a retry with backoff while attempts
-- are left, else the task fails) and tells its agent to stop (a "cancel"
-- notification; its token is refused from then on).
CREATE OR REPLACE FUNCTION parflow._expire_timeouts() RETURNS integer
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

-- Generic plans: the agent API and the pass run the same statements
-- thousands of times, and custom plans for a run just started (no
-- statistics yet) can scan the whole run per completion.
CREATE OR REPLACE FUNCTION parflow._dispatch_core() RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, parflow, pg_temp SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    global_free integer;
    expired parflow.task;
    t record;
    n integer := 0;
    run_active jsonb;
    rule_active jsonb;
    blocked boolean;
    ra integer;
    lim integer;
    seen integer;
    stage_name text;
BEGIN
    -- Dispatched tasks no agent claimed in time give their slot back for a
    -- while, so that a kind without agents cannot hold the caps.
    WITH u AS (UPDATE parflow.task tk SET state = 'ready',
                      not_before = clock_timestamp() + current_setting('parflow.claim_timeout')::interval
                WHERE tk.state = 'dispatched'
                  AND tk.dispatched_at < clock_timestamp() - current_setting('parflow.claim_timeout')::interval
               RETURNING tk.id, tk.run_id)
    INSERT INTO parflow.event (run_id, task_id, kind, detail)
    SELECT u.run_id, u.id, 'unclaimed', jsonb_build_object('claim_timeout', current_setting('parflow.claim_timeout'))
      FROM u;

    -- Expired leases: retry or fail.
    FOR expired IN SELECT tk.* FROM parflow.task tk
                    WHERE tk.state = 'running' AND tk.lease_until < clock_timestamp()
                      FOR UPDATE SKIP LOCKED LOOP
        PERFORM parflow._retry_or_fail(expired, 'lease expired',
                                       format('lease of worker %s expired', expired.worker), true);
    END LOOP;

    -- Interrupted tasks not given back within parflow.interrupt_grace lose
    -- their lease (an interrupt is not a failed attempt).
    WITH old AS (SELECT tk.id, tk.worker FROM parflow.task tk
                  WHERE tk.state = 'running' AND tk.interrupted_at IS NOT NULL
                    AND tk.interrupted_at < clock_timestamp() - current_setting('parflow.interrupt_grace')::interval
                    FOR UPDATE SKIP LOCKED),
    u AS (UPDATE parflow.task tk SET state = 'ready', attempt = tk.attempt - 1, token = NULL, worker = NULL,
                 lease_until = NULL, interrupted_at = NULL, not_before = NULL
            FROM old WHERE tk.id = old.id
          RETURNING tk.id, tk.run_id, old.worker)
    INSERT INTO parflow.event (run_id, task_id, kind, detail)
    SELECT u.run_id, u.id, 'interrupt_expired',
           jsonb_build_object('worker', u.worker, 'interrupt_grace', current_setting('parflow.interrupt_grace'))
      FROM u;

    -- Runs whose last tasks completed, or failed, at the same moment (see
    -- _finish_if_done and _check_blocked).
    PERFORM parflow._finish_if_done(r.id) FROM parflow.run r
      WHERE r.state IN ('running', 'paused')
        AND (SELECT coalesce(sum(rr.remaining), 0) FROM parflow.run_remaining rr WHERE rr.run_id = r.id) = 0;
    PERFORM parflow._check_blocked(r.id) FROM parflow.run r WHERE r.state = 'running' AND r.failed > 0;

    global_free := current_setting('parflow.max_parallel_stages')::integer
                 - (SELECT count(*) FROM parflow.task tk WHERE tk.state IN ('dispatched', 'running'));

    -- P0 preemption: when P0 tasks wait for capacity held by lower
    -- priorities, take back dispatched (unclaimed) ones and interrupt running
    -- ones, the lowest priority and least advanced first, enough to make room.
    IF EXISTS (SELECT FROM parflow.task tk WHERE tk.state = 'ready' AND tk.priority = 0) THEN
        global_free := global_free + parflow._preempt(global_free);
    END IF;
    IF global_free <= 0 THEN
        RETURN 0;
    END IF;

    -- Tasks at work per run, and per (run, affinity rule).
    SELECT coalesce(jsonb_object_agg(x.run_id::text, x.c), '{}') INTO run_active
      FROM (SELECT tk.run_id, count(*) c FROM parflow.task tk
             WHERE tk.state IN ('dispatched', 'running') GROUP BY tk.run_id) x;
    SELECT coalesce(jsonb_object_agg(x.k, x.c), '{}') INTO rule_active
      FROM (SELECT tk.run_id || ':' || a.ord AS k, count(*) c
              FROM parflow.task tk JOIN parflow.run r ON r.id = tk.run_id
              JOIN parflow.affinity a ON a.version_id = r.version_id AND tk.agent = ANY (a.agents)
             WHERE tk.state IN ('dispatched', 'running') GROUP BY 1) x;

    -- Walk ready tasks in dispatch order along task_dispatch_idx, a batch at
    -- a time; tasks held back by a run's cap or an affinity rule are passed
    -- over, and when a whole batch was, the walk goes on with a larger one.
    lim := global_free * 4 + 64;
    <<batches>>
    LOOP
    seen := 0;
    FOR t IN
        SELECT tk.id, tk.run_id, tk.agent, tk.stage_ord, r.max_parallel, r.version_id
          FROM parflow.task tk JOIN parflow.run r ON r.id = tk.run_id AND r.state = 'running'
         WHERE tk.state = 'ready' AND (tk.not_before IS NULL OR tk.not_before <= clock_timestamp())
         ORDER BY tk.priority, tk.rank DESC, tk.id
         LIMIT lim
         FOR UPDATE OF tk SKIP LOCKED
    LOOP
        seen := seen + 1;
        ra := coalesce((run_active->>t.run_id::text)::integer, 0);
        CONTINUE WHEN ra >= t.max_parallel;
        SELECT EXISTS (SELECT FROM parflow.affinity a
                        WHERE a.version_id = t.version_id AND t.agent = ANY (a.agents)
                          AND coalesce((rule_active->>(t.run_id || ':' || a.ord))::integer, 0) >= a.max_concurrent)
          INTO blocked;
        CONTINUE WHEN blocked;

        UPDATE parflow.task SET state = 'dispatched', dispatched_at = clock_timestamp() WHERE id = t.id;
        INSERT INTO parflow.event (run_id, task_id, kind) VALUES (t.run_id, t.id, 'dispatched');
        SELECT s.name INTO stage_name FROM parflow.stage s WHERE s.version_id = t.version_id AND s.ord = t.stage_ord;
        PERFORM pg_notify('parflow_' || t.agent,
            jsonb_build_object('kind', 'dispatch', 'task', t.id, 'run', t.run_id, 'stage', stage_name)::text);
        run_active := run_active || jsonb_build_object(t.run_id::text, ra + 1);
        SELECT rule_active || coalesce(jsonb_object_agg(t.run_id || ':' || a.ord,
                   coalesce((rule_active->>(t.run_id || ':' || a.ord))::integer, 0) + 1), '{}')
          INTO rule_active
          FROM parflow.affinity a WHERE a.version_id = t.version_id AND t.agent = ANY (a.agents);
        n := n + 1;
        global_free := global_free - 1;
        EXIT batches WHEN global_free = 0;
    END LOOP;
    EXIT batches WHEN seen < lim;
    lim := lim * 4;
    END LOOP batches;
    RETURN n;
END
$$;
COMMENT ON FUNCTION parflow._dispatch_core() IS
    'Internal, the dispatcher''s pass after the timeouts: expire leases, then dispatch ready tasks by run priority and rank under every cap, one NOTIFY per task';

-- (no SET clauses: both functions it calls set their own, and it runs on
-- every pass)
CREATE OR REPLACE FUNCTION parflow._dispatch() RETURNS integer
LANGUAGE sql AS $$
    SELECT parflow._expire_timeouts();
    SELECT parflow._dispatch_core();
$$;
COMMENT ON FUNCTION parflow._dispatch() IS
    'Internal, the dispatcher''s pass: end attempts past their stage''s timeout, expire leases, then dispatch ready tasks by run priority and rank under every cap, one NOTIFY per task';

CREATE OR REPLACE FUNCTION @extschema@.parflow_claim(agent text, worker text, lease interval DEFAULT '5 min')
RETURNS TABLE(task bigint, token uuid, run bigint, stage text, attempt integer, input jsonb,
              estimate interval, lease_until timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp
    SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    t parflow.task;
    r parflow.run;
    st parflow.stage;
    upstream jsonb;
    skipped jsonb;
BEGIN
    IF agent IS NULL OR worker IS NULL OR lease IS NULL THEN
        RAISE EXCEPTION 'agent, worker and lease must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF btrim(agent) = '' THEN
        RAISE EXCEPTION 'agent must be a non-empty name' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF btrim(worker) = '' THEN
        RAISE EXCEPTION 'worker must be a non-empty name' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Name the process that claims, for example host and pid.';
    END IF;
    IF lease <= interval '0' OR lease > interval '1 day' THEN
        RAISE EXCEPTION 'lease must be between 0 and 1 day' USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('Found %s.', coalesce(lease::text, 'NULL'));
    END IF;
    PERFORM parflow._may_claim(agent);

    SELECT tk.* INTO t FROM parflow.task tk
     WHERE tk.agent = parflow_claim.agent AND tk.state = 'dispatched'
     ORDER BY tk.priority, tk.rank DESC, tk.id
     LIMIT 1 FOR UPDATE OF tk SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    UPDATE parflow.task tk SET state = 'running', attempt = tk.attempt + 1, worker = parflow_claim.worker,
           token = gen_random_uuid(), lease = parflow_claim.lease,
           lease_until = clock_timestamp() + parflow_claim.lease, started_at = clock_timestamp(),
           finished_at = NULL, interrupted_at = NULL
     WHERE tk.id = t.id RETURNING * INTO t;
    SELECT * INTO r FROM parflow.run WHERE id = t.run_id;
    SELECT * INTO st FROM parflow.stage s WHERE s.version_id = r.version_id AND s.ord = t.stage_ord;
    INSERT INTO parflow.event (run_id, task_id, kind, detail)
    VALUES (t.run_id, t.id, 'running', jsonb_build_object('worker', t.worker, 'attempt', t.attempt));

    -- The input: the run's input, plus the outputs of the stages it depends
    -- on (skipped ones listed apart, with the reason), plus on a route-back
    -- the failing verification.
    SELECT jsonb_object_agg(ds.name, dt.output) FILTER (WHERE dt.state = 'succeeded'),
           jsonb_object_agg(ds.name, coalesce(dt.error, 'skipped')) FILTER (WHERE dt.state = 'skipped')
      INTO upstream, skipped
      FROM (SELECT d.dep_ord AS ord FROM parflow.stage_dep d
             WHERE d.version_id = r.version_id AND d.stage_ord = t.stage_ord
            UNION
            SELECT s.ord FROM parflow.group_dep gd
              JOIN parflow.stage s ON s.version_id = r.version_id AND s.group_ord = gd.dep_ord
             WHERE gd.version_id = r.version_id AND gd.group_ord = t.group_ord) dep
      JOIN parflow.task dt ON dt.run_id = r.id AND dt.stage_ord = dep.ord AND dt.state IN ('succeeded', 'skipped')
      JOIN parflow.stage ds ON ds.version_id = r.version_id AND ds.ord = dep.ord;

    RETURN QUERY SELECT t.id, t.token, t.run_id, st.name, t.attempt,
                        r.input || jsonb_build_object('upstream', coalesce(upstream, '{}'))
                        || CASE WHEN skipped IS NULL THEN '{}' ELSE jsonb_build_object('skipped', skipped) END
                        || CASE WHEN t.feedback IS NULL THEN '{}' ELSE jsonb_build_object('route_back', t.feedback) END,
                        st.estimate, t.lease_until;
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_claim(text, text, interval) IS
    'Claim one dispatched task of an agent kind: returns it with a fresh lease token, or no row';

CREATE OR REPLACE FUNCTION @extschema@.parflow_heartbeat(task bigint, token uuid) RETURNS timestamptz
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp
    SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    t parflow.task;
BEGIN
    t := parflow._held(task, token);
    UPDATE parflow.task tk SET lease_until = clock_timestamp() + tk.lease WHERE tk.id = t.id
        RETURNING tk.lease_until INTO t.lease_until;
    RETURN t.lease_until;
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_heartbeat(bigint, uuid) IS 'Extend the lease of a held task; returns the new lease end';

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
COMMENT ON FUNCTION @extschema@.parflow_complete(bigint, uuid, jsonb) IS 'Report a held task done with its output; its dependents become ready';

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
COMMENT ON FUNCTION @extschema@.parflow_fail(bigint, uuid, text, boolean, jsonb) IS
    'Report a held task failed: retried with backoff while attempts are left and the error is retryable, else failed for good; a failed verification sends the stage it verifies back to its agent with the error and output';

CREATE OR REPLACE FUNCTION @extschema@.parflow_release(task bigint, token uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp
    SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    t parflow.task;
BEGIN
    t := parflow._held(task, token);
    UPDATE parflow.task tk SET state = 'ready', attempt = tk.attempt - 1, token = NULL, worker = NULL,
           lease_until = NULL, not_before = NULL, interrupted_at = NULL
     WHERE tk.id = t.id;
    INSERT INTO parflow.event (run_id, task_id, kind, detail)
    VALUES (t.run_id, t.id, 'released',
            jsonb_build_object('worker', t.worker, 'interrupted', t.interrupted_at IS NOT NULL));
    PERFORM parflow._wake();
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_release(bigint, uuid) IS 'Give a held task back (after an interrupt or at shutdown); not counted as a failed attempt';

-- Whether the calling role may claim tasks of an agent kind: raises 42501 if
-- not.  Every agent role may while parflow.agent_role is empty; superusers
-- and operators always may.
CREATE OR REPLACE FUNCTION parflow._may_claim(agent text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM parflow.agent_role)
       OR (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = session_user)
       OR pg_catalog.pg_has_role(session_user, 'parflow_operator', 'MEMBER') THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT FROM parflow.agent_role ar
                    WHERE ar.agent IN (_may_claim.agent, '*')
                      AND EXISTS (SELECT FROM pg_catalog.pg_roles pr WHERE pr.rolname = ar.role_name)
                      AND pg_catalog.pg_has_role(session_user, ar.role_name, 'MEMBER')) THEN
        RAISE EXCEPTION 'role "%" may not claim tasks of agent kind "%"', session_user, agent
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'An operator grants it with parflow_allow_agent(role, agent).';
    END IF;
END
$$;
COMMENT ON FUNCTION parflow._may_claim(text) IS 'Internal: raise 42501 unless the session''s role may claim tasks of this agent kind (parflow.agent_role)';

CREATE OR REPLACE FUNCTION parflow._dispatcher_counts() RETURNS bigint[]
    AS 'MODULE_PATHNAME', 'parflow_dispatcher_counts'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION parflow._dispatcher_counts() IS
    'Internal: {dispatch passes run, hand-over notifications sent} since the server started; NULL when parflow is not preloaded';
