-- test/e2e/agent_mock.sql -- a PL/pgSQL stand-in for parflow's agent API.
--
-- For testing parflow-agent on its own, in a scratch database WITHOUT the
-- parflow extension: it defines the five agent functions (parflow_claim,
-- parflow_heartbeat, parflow_complete, parflow_fail, parflow_release) over a
-- table mock_task, with the same signatures, the same lease tokens and the
-- same SQLSTATE 55000 when a token no longer holds its task.  Inserting a
-- mock_task sends {"kind":"dispatch",...} on channel parflow_<agent>; the
-- helpers mock_interrupt, mock_cancel, mock_steal and mock_expire play the
-- server's other moves.  Every call is written to mock_event (with
-- clock_timestamp()) so a test can check what happened and when.
--
-- Not the real thing: no dispatcher, no caps, no retries (a failed task stays
-- failed), leases expire lazily (at claim time and when a call checks them).

CREATE TABLE mock_task (
    task        bigserial PRIMARY KEY,
    run         bigint NOT NULL DEFAULT 1,
    stage       text NOT NULL DEFAULT 'stage',
    agent       text NOT NULL,
    estimate    interval NOT NULL DEFAULT '1 min',
    input       jsonb NOT NULL DEFAULT '{}',
    state       text NOT NULL DEFAULT 'ready'
                CHECK (state IN ('ready', 'running', 'succeeded', 'failed', 'cancelled')),
    held        boolean NOT NULL DEFAULT false,   -- not claimable (after an interrupt)
    attempt     int NOT NULL DEFAULT 0,
    token       uuid,
    worker      text,
    lease       interval,
    lease_until timestamptz,
    claimed_at  timestamptz,
    finished_at timestamptz,
    heartbeats  int NOT NULL DEFAULT 0,
    releases    int NOT NULL DEFAULT 0,
    output      jsonb,
    error       text,
    retryable   boolean,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE mock_event (
    event   bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    task    bigint,
    kind    text NOT NULL,       -- claimed heartbeat completed failed released expired interrupt cancel stolen
    worker  text,
    detail  text
);

CREATE FUNCTION _mock_notify(t mock_task, kind text) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_notify('parflow_' || t.agent,
                     json_build_object('kind', kind, 'task', t.task,
                                       'run', t.run, 'stage', t.stage)::text)
$$;

CREATE FUNCTION _mock_dispatch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM _mock_notify(NEW, 'dispatch');
    RETURN NULL;
END
$$;

CREATE TRIGGER mock_task_dispatch AFTER INSERT ON mock_task
    FOR EACH ROW EXECUTE FUNCTION _mock_dispatch();

-- Leases past their end go back to ready (as the real dispatcher would).
CREATE FUNCTION _mock_expire_leases() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r mock_task;
BEGIN
    FOR r IN UPDATE mock_task SET state = 'ready', token = NULL, lease_until = NULL
             WHERE state = 'running' AND lease_until < clock_timestamp()
             RETURNING * LOOP
        INSERT INTO mock_event (task, kind, worker) VALUES (r.task, 'expired', r.worker);
    END LOOP;
END
$$;

-- The task row if TOKEN holds it, else SQLSTATE 55000.
CREATE FUNCTION _mock_check(p_task bigint, p_token uuid, p_call text) RETURNS mock_task
LANGUAGE plpgsql AS $$
DECLARE
    r mock_task;
BEGIN
    SELECT * INTO r FROM mock_task WHERE task = p_task FOR UPDATE;
    IF NOT FOUND OR r.state <> 'running' OR r.token IS DISTINCT FROM p_token
       OR r.lease_until < clock_timestamp() THEN
        RAISE EXCEPTION 'task % is not held by this token', p_task
            USING ERRCODE = '55000',
                  DETAIL = format('call %s; task state %s', p_call, coalesce(r.state, 'missing'));
    END IF;
    RETURN r;
END
$$;

CREATE FUNCTION parflow_claim(agent text, worker text, lease interval DEFAULT '5 min')
RETURNS TABLE(task bigint, token uuid, run bigint, stage text, attempt int,
              input jsonb, estimate interval, lease_until timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r mock_task;
BEGIN
    PERFORM _mock_expire_leases();
    SELECT * INTO r FROM mock_task m
     WHERE m.agent = parflow_claim.agent AND m.state = 'ready' AND NOT m.held
     ORDER BY m.task
     LIMIT 1
       FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE mock_task m
       SET state = 'running', attempt = m.attempt + 1, token = gen_random_uuid(),
           worker = parflow_claim.worker, lease = parflow_claim.lease,
           lease_until = clock_timestamp() + parflow_claim.lease,
           claimed_at = clock_timestamp(), finished_at = NULL
     WHERE m.task = r.task
    RETURNING * INTO r;
    INSERT INTO mock_event (task, kind, worker, detail)
    VALUES (r.task, 'claimed', r.worker, 'attempt ' || r.attempt);
    RETURN QUERY SELECT r.task, r.token, r.run, r.stage, r.attempt, r.input,
                        r.estimate, r.lease_until;
END
$$;

CREATE FUNCTION parflow_heartbeat(task bigint, token uuid) RETURNS timestamptz
LANGUAGE plpgsql AS $$
DECLARE
    r mock_task := _mock_check(task, token, 'heartbeat');
BEGIN
    UPDATE mock_task m SET lease_until = clock_timestamp() + m.lease,
                           heartbeats = m.heartbeats + 1
     WHERE m.task = r.task
    RETURNING * INTO r;
    INSERT INTO mock_event (task, kind, worker) VALUES (r.task, 'heartbeat', r.worker);
    RETURN r.lease_until;
END
$$;

CREATE FUNCTION parflow_complete(task bigint, token uuid, output jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r mock_task := _mock_check(task, token, 'complete');
BEGIN
    UPDATE mock_task m SET state = 'succeeded', output = parflow_complete.output,
                           token = NULL, finished_at = clock_timestamp()
     WHERE m.task = r.task;
    INSERT INTO mock_event (task, kind, worker, detail)
    VALUES (r.task, 'completed', r.worker, output::text);
END
$$;

CREATE FUNCTION parflow_fail(task bigint, token uuid, error text, retryable boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r mock_task := _mock_check(task, token, 'fail');
BEGIN
    UPDATE mock_task m SET state = 'failed', error = parflow_fail.error,
                           retryable = parflow_fail.retryable,
                           token = NULL, finished_at = clock_timestamp()
     WHERE m.task = r.task;
    INSERT INTO mock_event (task, kind, worker, detail)
    VALUES (r.task, 'failed', r.worker, error);
END
$$;

CREATE FUNCTION parflow_release(task bigint, token uuid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r mock_task := _mock_check(task, token, 'release');
BEGIN
    UPDATE mock_task m SET state = 'ready', token = NULL, lease_until = NULL,
                           releases = m.releases + 1
     WHERE m.task = r.task;
    INSERT INTO mock_event (task, kind, worker) VALUES (r.task, 'released', r.worker);
END
$$;

-- The server's moves, for tests.

-- Ask the holder to give the task back; it is not claimable until unheld.
CREATE FUNCTION mock_interrupt(p_task bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r mock_task;
BEGIN
    UPDATE mock_task SET held = true WHERE task = p_task RETURNING * INTO r;
    INSERT INTO mock_event (task, kind) VALUES (p_task, 'interrupt');
    PERFORM _mock_notify(r, 'interrupt');
END
$$;

-- Cancel: the token stops holding the task at once, then the holder is told.
CREATE FUNCTION mock_cancel(p_task bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r mock_task;
BEGIN
    UPDATE mock_task SET state = 'cancelled', token = NULL, finished_at = clock_timestamp()
     WHERE task = p_task RETURNING * INTO r;
    INSERT INTO mock_event (task, kind) VALUES (p_task, 'cancel');
    PERFORM _mock_notify(r, 'cancel');
END
$$;

-- Re-dispatch behind the holder's back: its token no longer holds the task
-- (the next heartbeat or report gets SQLSTATE 55000).  No notification.
CREATE FUNCTION mock_steal(p_task bigint) RETURNS void
LANGUAGE sql AS $$
    UPDATE mock_task SET token = gen_random_uuid(), held = true WHERE task = p_task;
    INSERT INTO mock_event (task, kind) VALUES (p_task, 'stolen');
$$;

-- End a lease now (the next call with its token gets SQLSTATE 55000).
CREATE FUNCTION mock_expire(p_task bigint) RETURNS void
LANGUAGE sql AS $$
    UPDATE mock_task SET lease_until = clock_timestamp() - interval '1 s', held = true
     WHERE task = p_task;
$$;

-- Most tasks of AGENT running at one moment, from claimed_at/finished_at.
CREATE FUNCTION mock_max_overlap(p_agent text) RETURNS int
LANGUAGE sql AS $$
    SELECT coalesce(max(n), 0)::int FROM (
        SELECT sum(d) OVER (ORDER BY at, d) AS n FROM (
            SELECT claimed_at AS at, 1 AS d FROM mock_task
             WHERE agent = p_agent AND claimed_at IS NOT NULL
            UNION ALL
            SELECT finished_at, -1 FROM mock_task
             WHERE agent = p_agent AND finished_at IS NOT NULL) e) s
$$;
