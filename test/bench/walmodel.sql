-- test/bench/walmodel.sql -- write patterns of one no-op stage, for
-- test/bench/walmodel.sh: each pattern is a procedure that takes n tasks
-- through dispatch, claim and completion, one transaction per transition
-- (as the dispatcher and an agent do), on tables of its own in schema wx.
-- Nothing here is parflow's code: the tables copy parflow.task's and
-- parflow.event's shapes (pattern "now") or change them (the others).
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS wx CASCADE;
CREATE SCHEMA wx;
SET search_path = wx, pg_catalog;

-- now: parflow 0.4.0 (sql/src/00_schema.sql): the wide task row, its state
-- in the predicates of the queue indexes (every transition a non-HOT
-- update), three events with two indexes each.
CREATE TABLE task_now (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, run_id bigint NOT NULL, stage_ord integer NOT NULL,
    group_ord integer NOT NULL, agent text, state text NOT NULL, pending integer NOT NULL, priority integer NOT NULL,
    rank bigint NOT NULL, attempt integer NOT NULL DEFAULT 0, base_attempt integer NOT NULL DEFAULT 0,
    route_backs integer NOT NULL DEFAULT 0, worker text, token uuid, lease interval, lease_until timestamptz,
    not_before timestamptz, dispatched_at timestamptz, started_at timestamptz, finished_at timestamptz,
    interrupted_at timestamptz, output jsonb, error text, feedback jsonb, skip_barrier boolean NOT NULL DEFAULT false,
    item integer, map_item jsonb, hold_ord integer, UNIQUE NULLS NOT DISTINCT (run_id, stage_ord, item));
CREATE INDEX ON task_now (run_id, priority, rank DESC, id) WHERE state = 'ready';
CREATE INDEX ON task_now (priority, rank DESC, id) WHERE state = 'ready' AND priority >= 0;
CREATE INDEX ON task_now (run_id) WHERE state IN ('dispatched', 'running');
CREATE INDEX ON task_now (agent, priority, rank DESC, id) WHERE state = 'dispatched';
CREATE INDEX ON task_now (run_id) WHERE state = 'awaiting';
CREATE TABLE event_now (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp(),
    run_id bigint NOT NULL, task_id bigint, kind text NOT NULL, detail jsonb NOT NULL DEFAULT '{}');
CREATE INDEX ON event_now (run_id, id);

CREATE PROCEDURE run_now(n integer) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..n LOOP
        PERFORM 1 FROM task_now WHERE id = i FOR UPDATE;
        UPDATE task_now SET state = 'dispatched', dispatched_at = clock_timestamp() WHERE id = i;
        INSERT INTO event_now (run_id, task_id, kind) VALUES (1, i, 'dispatched');
        COMMIT;
        PERFORM 1 FROM task_now WHERE id = i FOR UPDATE;
        UPDATE task_now SET state = 'running', worker = 'host-12345', token = gen_random_uuid(), lease = '5 min',
                            lease_until = clock_timestamp() + '5 min', started_at = clock_timestamp(), attempt = attempt + 1
         WHERE id = i;
        INSERT INTO event_now (run_id, task_id, kind, detail) VALUES (1, i, 'running', '{"worker": "host-12345", "attempt": 1}');
        COMMIT;
        UPDATE task_now SET state = 'succeeded', output = '{}', token = NULL, lease_until = NULL, finished_at = clock_timestamp()
         WHERE id = i;
        INSERT INTO event_now (run_id, task_id, kind, detail) VALUES (1, i, 'succeeded', '{"worker": "host-12345", "attempt": 1}');
        COMMIT;
    END LOOP;
END $$;

-- hot: the same row, but state in no index of it (every update HOT, room
-- left by fillfactor 70); the ready and the dispatched tasks in narrow
-- queue tables of their own (a row in, a row out per transition); events
-- with one index (run_id, id) as primary key.
CREATE TABLE task_hot (LIKE task_now INCLUDING DEFAULTS INCLUDING IDENTITY) WITH (fillfactor = 70);
ALTER TABLE task_hot ADD PRIMARY KEY (id), ADD UNIQUE NULLS NOT DISTINCT (run_id, stage_ord, item);
CREATE TABLE ready_hot (priority integer, rank bigint, task_id bigint, run_id bigint);
CREATE INDEX ON ready_hot (priority, rank DESC, task_id);
CREATE TABLE claim_hot (agent text, priority integer, rank bigint, task_id bigint);
CREATE INDEX ON claim_hot (agent, priority, rank DESC, task_id);
CREATE TABLE event_hot (id bigint GENERATED ALWAYS AS IDENTITY, at timestamptz NOT NULL DEFAULT clock_timestamp(),
    run_id bigint NOT NULL, task_id bigint, kind text NOT NULL, detail jsonb, PRIMARY KEY (run_id, id));

-- lean: hot, with the columns a transition changes last in the row (a
-- same-page update logs only what differs from the old tuple's prefix and
-- suffix) and events in the heap alone, found by a BRIN index on run_id.
CREATE TABLE task_lean (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, run_id bigint NOT NULL, stage_ord integer NOT NULL,
    group_ord integer NOT NULL, agent text, pending integer NOT NULL, priority integer NOT NULL, rank bigint NOT NULL,
    base_attempt integer NOT NULL DEFAULT 0, route_backs integer NOT NULL DEFAULT 0, lease interval,
    not_before timestamptz, interrupted_at timestamptz, error text, feedback jsonb,
    skip_barrier boolean NOT NULL DEFAULT false, item integer, map_item jsonb, hold_ord integer, output jsonb,
    dispatched_at timestamptz, started_at timestamptz, finished_at timestamptz, attempt integer NOT NULL DEFAULT 0,
    worker text, token uuid, lease_until timestamptz, state text NOT NULL,
    UNIQUE NULLS NOT DISTINCT (run_id, stage_ord, item)) WITH (fillfactor = 70);
CREATE TABLE ready_lean (LIKE ready_hot);
CREATE INDEX ON ready_lean (priority, rank DESC, task_id);
CREATE TABLE claim_lean (LIKE claim_hot);
CREATE INDEX ON claim_lean (agent, priority, rank DESC, task_id);
CREATE TABLE event_lean (id bigint GENERATED ALWAYS AS IDENTITY, at timestamptz NOT NULL DEFAULT clock_timestamp(),
    run_id bigint NOT NULL, task_id bigint, kind text NOT NULL, detail jsonb);
CREATE INDEX ON event_lean USING brin (run_id);

-- hot and lean take their tasks through the same statements, on their own
-- tables (task_<layout>, ready_<layout>, claim_<layout>, event_<layout>).
CREATE PROCEDURE run_queued(n integer, layout text) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..n LOOP
        EXECUTE format('DELETE FROM %I WHERE task_id = $1 AND priority = 2 AND rank = 0', 'ready_' || layout) USING i;
        EXECUTE format('UPDATE %I SET state = ''dispatched'', dispatched_at = clock_timestamp() WHERE id = $1',
                       'task_' || layout) USING i;
        EXECUTE format('INSERT INTO %I VALUES (''wp'', 2, 0, $1)', 'claim_' || layout) USING i;
        EXECUTE format('INSERT INTO %I (run_id, task_id, kind) VALUES (1, $1, ''dispatched'')', 'event_' || layout) USING i;
        COMMIT;
        EXECUTE format('DELETE FROM %I WHERE agent = ''wp'' AND priority = 2 AND rank = 0 AND task_id = $1',
                       'claim_' || layout) USING i;
        EXECUTE format('UPDATE %I SET state = ''running'', worker = ''host-12345'', token = gen_random_uuid(), '
                       'lease = ''5 min'', lease_until = clock_timestamp() + ''5 min'', started_at = clock_timestamp(), '
                       'attempt = attempt + 1 WHERE id = $1', 'task_' || layout) USING i;
        EXECUTE format('INSERT INTO %I (run_id, task_id, kind, detail) '
                       'VALUES (1, $1, ''running'', ''{"worker": "host-12345", "attempt": 1}'')', 'event_' || layout) USING i;
        COMMIT;
        EXECUTE format('UPDATE %I SET state = ''succeeded'', output = ''{}'', token = NULL, lease_until = NULL, '
                       'finished_at = clock_timestamp() WHERE id = $1', 'task_' || layout) USING i;
        EXECUTE format('INSERT INTO %I (run_id, task_id, kind) VALUES (1, $1, ''succeeded'')', 'event_' || layout) USING i;
        COMMIT;
    END LOOP;
END $$;

-- queue: a job queue's least (graphile-worker's shape, roughly: a job row,
-- an index on the available ones; taken with a lock and an update that
-- makes it unavailable, deleted when done; no event log).
CREATE TABLE job_queue (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, task_identifier text NOT NULL,
    payload json NOT NULL DEFAULT '{}', priority smallint NOT NULL DEFAULT 0, run_at timestamptz NOT NULL DEFAULT now(),
    attempts smallint NOT NULL DEFAULT 0, max_attempts smallint NOT NULL DEFAULT 25, last_error text,
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(), key text UNIQUE,
    locked_at timestamptz, locked_by text, revision integer NOT NULL DEFAULT 0, flags jsonb,
    is_available boolean GENERATED ALWAYS AS (locked_at IS NULL AND attempts < max_attempts) STORED);
CREATE INDEX ON job_queue (priority, run_at) INCLUDE (id, task_identifier) WHERE is_available;

CREATE PROCEDURE run_queue(n integer) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..n LOOP
        PERFORM 1 FROM job_queue WHERE id = i FOR UPDATE;
        UPDATE job_queue SET attempts = attempts + 1, locked_by = 'host-12345', locked_at = now(), updated_at = now()
         WHERE id = i;
        COMMIT;
        DELETE FROM job_queue WHERE id = i;
        COMMIT;
    END LOOP;
END $$;
