-- parflow operations: what an operator does to a run by SQL (rule 4: all is
-- recoverable): cancel, pause, resume, retry a stage, restart a group.

-- A run by id; raises 22004 / 42704.
CREATE OR REPLACE FUNCTION parflow._run_get(p_run bigint) RETURNS parflow.run
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r parflow.run;
BEGIN
    IF p_run IS NULL THEN
        RAISE EXCEPTION 'run must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO r FROM parflow.run rn WHERE rn.id = p_run;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % does not exist', p_run USING ERRCODE = 'undefined_object';
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION parflow._run_get(bigint) IS 'Internal: a run by id; raises 22004 for NULL, 42704 when there is none';

-- The child runs of a run's sub-workflow stages in these states, the
-- latest of each stage (an earlier one was cancelled or retried past).
CREATE OR REPLACE FUNCTION parflow._children(p_run bigint, states text[]) RETURNS TABLE(id bigint)
LANGUAGE sql STABLE AS $$
    SELECT c.id FROM parflow.task tk
     CROSS JOIN LATERAL (SELECT c.id, c.state FROM parflow.run c WHERE c.parent_task = tk.id
                          ORDER BY c.id DESC LIMIT 1) c
     WHERE tk.run_id = p_run AND tk.agent IS NULL AND c.state = ANY (states)
     ORDER BY c.id
$$;
COMMENT ON FUNCTION parflow._children(bigint, text[]) IS 'Internal: the latest child run of each sub-workflow stage of a run, in the given states';

-- Lock a run and check its state; raises 42704 / 55000.
CREATE OR REPLACE FUNCTION parflow._run_in(p_run bigint, allowed text[], action text) RETURNS parflow.run
LANGUAGE plpgsql AS $$
DECLARE
    r parflow.run;
BEGIN
    IF p_run IS NULL THEN
        RAISE EXCEPTION 'run must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- the run's lock, then its row, then its tasks: the order of every path
    -- (agents' calls take the same lock, shared, before their task)
    PERFORM parflow._lock_run(p_run, true);
    SELECT * INTO r FROM parflow.run WHERE id = p_run FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % does not exist', p_run USING ERRCODE = 'undefined_object';
    END IF;
    IF NOT r.state = ANY (allowed) THEN
        RAISE EXCEPTION 'cannot % run % in state %', action, p_run, r.state
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Only a run that is %s can be %s.', array_to_string(allowed, ', '),
                                  CASE action WHEN 'cancel' THEN 'cancelled' WHEN 'pause' THEN 'paused'
                                              WHEN 'resume' THEN 'resumed' ELSE action || 'ed' END);
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION parflow._run_in(bigint, text[], text) IS 'Internal: lock a run and check that its state allows an action';

CREATE OR REPLACE FUNCTION @extschema@.parflow_cancel(run bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
DECLARE
    r parflow.run;
    t record;
BEGIN
    r := parflow._run_in(run, '{running,paused,blocked}', 'cancel');
    -- agents holding its tasks are told to stop
    FOR t IN SELECT tk.id, tk.agent, s.name FROM parflow.task tk
               JOIN parflow.stage s ON s.version_id = r.version_id AND s.ord = tk.stage_ord
              WHERE tk.run_id = r.id AND tk.state = ANY (parflow._active_states()) AND tk.group_ord IS NOT NULL LOOP
        PERFORM pg_notify('parflow_' || t.agent,
            jsonb_build_object('kind', 'cancel', 'task', t.id, 'run', r.id, 'stage', t.name)::text);
    END LOOP;
    WITH u AS (UPDATE parflow.task tk SET state = 'cancelled', token = NULL, lease_until = NULL,
                      finished_at = clock_timestamp()
                WHERE tk.run_id = r.id AND tk.state IN ('waiting', 'ready', 'dispatched', 'running', 'awaiting')
               RETURNING tk.id)
    INSERT INTO parflow.event (run_id, task_id, kind) SELECT r.id, u.id, 'cancelled' FROM u;
    UPDATE parflow.run rn SET state = 'cancelled', finished_at = clock_timestamp() WHERE rn.id = r.id;
    PERFORM parflow._announce(r.id, 'cancelled');
    -- and its sub-workflows' child runs (the parent's lock first, then theirs)
    PERFORM @extschema@.parflow_cancel(c.id) FROM parflow._children(r.id, '{running,paused,blocked}') c;
    PERFORM parflow._wake();
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_cancel(bigint) IS 'Cancel a run: its unfinished tasks are cancelled and agents holding them are told to stop; its sub-workflows'' child runs are cancelled too';

CREATE OR REPLACE FUNCTION @extschema@.parflow_pause(run bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
DECLARE
    r parflow.run;
BEGIN
    r := parflow._run_in(run, '{running}', 'pause');
    UPDATE parflow.run rn SET state = 'paused' WHERE rn.id = r.id;
    PERFORM parflow._announce(r.id, 'paused');
    PERFORM @extschema@.parflow_pause(c.id) FROM parflow._children(r.id, '{running}') c;
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_pause(bigint) IS 'Pause a run: nothing new is dispatched; tasks at work finish; its running child runs are paused too';

CREATE OR REPLACE FUNCTION @extschema@.parflow_resume(run bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
DECLARE
    r parflow.run;
BEGIN
    r := parflow._run_in(run, '{paused}', 'resume');
    UPDATE parflow.run rn SET state = 'running' WHERE rn.id = r.id;
    PERFORM parflow._announce(r.id, 'resumed');
    PERFORM @extschema@.parflow_resume(c.id) FROM parflow._children(r.id, '{paused}') c;
    PERFORM parflow._finish_if_done(r.id);
    PERFORM parflow._check_blocked(r.id);
    PERFORM parflow._wake();
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_resume(bigint) IS 'Resume a paused run, and its paused child runs';

-- Re-open failed tasks of a run with fresh attempts: their dependents never
-- started and wait for them as they were; a blocked run runs again.
-- Returns how many tasks were re-opened.
CREATE OR REPLACE FUNCTION parflow._reopen(r parflow.run, tasks bigint[], detail jsonb) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
    nfailed integer;
BEGIN
    SELECT count(*) INTO nfailed FROM parflow.task tk
     WHERE tk.run_id = r.id AND tk.id = ANY (tasks) AND tk.state = 'failed';
    WITH u AS (UPDATE parflow.task tk SET state = CASE WHEN tk.pending > 0 THEN 'waiting'
                                                       WHEN tk.agent IS NULL THEN 'awaiting' ELSE 'ready' END,
                      base_attempt = tk.attempt, route_backs = 0, error = NULL, not_before = NULL,
                      finished_at = NULL
                WHERE tk.run_id = r.id AND tk.id = ANY (tasks) AND tk.state IN ('failed', 'cancelled')
               RETURNING tk.id)
    INSERT INTO parflow.event (run_id, task_id, kind, detail) SELECT r.id, u.id, 'retried', detail FROM u;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        UPDATE parflow.run rn SET failed = rn.failed - nfailed,
               state = CASE WHEN rn.state = 'blocked' THEN 'running' ELSE rn.state END
         WHERE rn.id = r.id;
        IF r.state = 'blocked' THEN
            PERFORM parflow._announce(r.id, 'resumed', detail);
        END IF;
        -- a wait stage re-opened with nothing to wait for awaits its event again
        PERFORM parflow._await(r.id, ARRAY(SELECT tk.stage_ord FROM parflow.task tk
                                            WHERE tk.run_id = r.id AND tk.id = ANY (tasks) AND tk.state = 'awaiting'));
        PERFORM parflow._wake();
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION parflow._reopen(parflow.run, bigint[], jsonb) IS 'Internal: re-open failed (or fail_fast-cancelled) tasks with fresh attempts (retry, restart_group)';

CREATE OR REPLACE FUNCTION @extschema@.parflow_retry(run bigint, stage text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
DECLARE
    r parflow.run;
    t parflow.task;
BEGIN
    r := parflow._run_in(run, '{running,paused,blocked}', 'retry a stage of');
    IF stage IS NULL THEN
        RAISE EXCEPTION 'stage must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT tk.* INTO t FROM parflow.task tk JOIN parflow.stage s ON s.version_id = r.version_id AND s.ord = tk.stage_ord
     WHERE tk.run_id = r.id AND s.name = stage AND tk.item IS NULL FOR UPDATE OF tk;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % has no stage "%"', r.id, stage USING ERRCODE = 'undefined_object';
    END IF;
    -- a map stage waiting for its instances: its failed instances
    IF t.state IN ('waiting', 'cancelled') AND EXISTS (SELECT FROM parflow.task i WHERE i.run_id = r.id
                                AND i.stage_ord = t.stage_ord AND i.item IS NOT NULL AND i.state = 'failed') THEN
        PERFORM parflow._reopen(r, ARRAY(SELECT i.id FROM parflow.task i WHERE i.run_id = r.id AND i.stage_ord = t.stage_ord
                                            AND i.item IS NOT NULL AND i.state = 'failed')
                                   || ARRAY(SELECT tk.id FROM parflow.task tk
                                             WHERE tk.run_id = r.id AND tk.group_ord = t.group_ord
                                               AND tk.state = 'cancelled'),
                                jsonb_build_object('retried', stage));
        RETURN;
    END IF;
    IF t.state <> 'failed' THEN
        RAISE EXCEPTION 'stage "%" of run % has not failed', stage, r.id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('It is %s.', t.state);
    END IF;
    -- with it, what a fail_fast group cancelled when it failed
    PERFORM parflow._reopen(r, ARRAY[t.id] || ARRAY(SELECT tk.id FROM parflow.task tk
                                                    WHERE tk.run_id = r.id AND tk.group_ord = t.group_ord
                                                      AND tk.state = 'cancelled'),
                            jsonb_build_object('retried', stage));
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_retry(bigint, text) IS 'Re-open a failed stage of a run with fresh attempts; a blocked run runs again';

CREATE OR REPLACE FUNCTION @extschema@.parflow_restart_group(run bigint, group_name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
DECLARE
    r parflow.run;
    g integer;
    n integer;
BEGIN
    r := parflow._run_in(run, '{running,paused,blocked}', 'restart a group of');
    IF group_name IS NULL THEN
        RAISE EXCEPTION 'group name must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT sg.ord INTO g FROM parflow.stage_group sg WHERE sg.version_id = r.version_id AND sg.name = group_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % has no group "%"', r.id, group_name USING ERRCODE = 'undefined_object';
    END IF;
    -- Every stage of the group that failed gets fresh attempts; stages that
    -- succeeded keep their outputs.
    n := parflow._reopen(r, ARRAY(SELECT tk.id FROM parflow.task tk
                                   WHERE tk.run_id = r.id AND tk.group_ord = g
                                     AND tk.state IN ('failed', 'cancelled')),
                         jsonb_build_object('restarted_group', group_name));
    IF n = 0 THEN
        RAISE EXCEPTION 'group "%" of run % has no failed stage to restart', group_name, r.id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_restart_group(bigint, text) IS
    'Re-open every failed stage of a group of a run with fresh attempts; a blocked run runs again';
