------------------------------------------------------------------------------
-- The runtime core (C, src/taskapi.c, src/runstate.c, src/pass.c): the agent
-- API, the transitions it shares with parflow_start and the operators'
-- functions, and the dispatcher's pass.  These are thin entry points; the
-- rules they share (dispatch order, the states that hold a slot, cap
-- arithmetic, notification payloads) are defined once, in src/core.h.
-- Each runs with jit off: its statements are planned once per backend, and
-- a generic plan whose estimate passed jit_above_cost would be compiled by
-- LLVM at every call (a claim took 250 ms so in a benchmark).
------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION parflow._wake() RETURNS void
    AS 'MODULE_PATHNAME', 'parflow_wake'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION parflow._wake() IS 'Internal: wake the dispatcher when the current transaction commits';

CREATE OR REPLACE FUNCTION parflow._shard(task bigint) RETURNS smallint
    AS 'MODULE_PATHNAME', 'parflow_shard'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION parflow._shard(bigint) IS
    'Internal: the shard of parflow.run_remaining a task counts in';

CREATE OR REPLACE FUNCTION parflow._active_states() RETURNS text[]
    AS 'MODULE_PATHNAME', 'parflow_active_states'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION parflow._active_states() IS
    'Internal: the task states that hold a slot under the caps ({dispatched,running})';

-- What a concurrency rule counts (the pass counts the same for every rule
-- at once, src/pass.c st_conc_active): tasks at work, in runs of every
-- state, of the stages that rules of this name list, whose run input has
-- this value at the rule's key.
CREATE OR REPLACE FUNCTION parflow._conc_at_work(p_name text, p_value jsonb) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT count(*) FROM parflow.task b
      JOIN parflow.run br ON br.id = b.run_id
      JOIN parflow.concurrency bc ON bc.version_id = br.version_id AND bc.name = p_name
                                 AND (bc.stage_ords IS NULL OR b.stage_ord = ANY (bc.stage_ords))
     WHERE b.state = ANY (parflow._active_states()) AND b.group_ord IS NOT NULL AND br.input -> bc.key = p_value
$$;
COMMENT ON FUNCTION parflow._conc_at_work(text, jsonb) IS
    'Internal: tasks at work under the concurrency rules of a name for one value of their key';

-- Evaluated last among the conditions of a query that calls it (COST), so
-- that it locks only the runs of the rows that qualify.
CREATE OR REPLACE FUNCTION parflow._lock_run(run bigint, exclusive boolean DEFAULT false,
                                             nowait boolean DEFAULT false) RETURNS boolean
    AS 'MODULE_PATHNAME', 'parflow_lock_run'
    LANGUAGE C VOLATILE COST 1000;
COMMENT ON FUNCTION parflow._lock_run(bigint, boolean, boolean) IS
    'Internal: take a run''s lock until the end of the transaction (shared by agents'' calls and the pass, exclusive by operators), always before its rows; with nowait, false instead of waiting';

CREATE OR REPLACE FUNCTION parflow._announce(p_run bigint, p_kind text, p_detail jsonb DEFAULT '{}')
RETURNS void
    AS 'MODULE_PATHNAME', 'parflow_announce'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION parflow._announce(bigint, text, jsonb) IS
    'Internal: log a run transition and NOTIFY parflow_orchestrator (without the detail, marked truncated, when it would not fit in a payload)';

CREATE OR REPLACE FUNCTION parflow._done(p_run bigint, p_ords integer[]) RETURNS void
    AS 'MODULE_PATHNAME', 'parflow_done'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION parflow._done(bigint, integer[]) IS 'Internal: propagate finished tasks to their dependents (stage edges and group barriers)';

CREATE OR REPLACE FUNCTION parflow._check_blocked(p_run bigint) RETURNS void
    AS 'MODULE_PATHNAME', 'parflow_check_blocked'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION parflow._check_blocked(bigint) IS 'Internal: mark a run blocked, with its failure report, when a failure left nothing runnable';

CREATE OR REPLACE FUNCTION parflow._finish_if_done(p_run bigint) RETURNS void
    AS 'MODULE_PATHNAME', 'parflow_finish_if_done'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION parflow._finish_if_done(bigint) IS 'Internal: mark a run succeeded when nothing is left to do';

CREATE OR REPLACE FUNCTION parflow._may_claim(agent text) RETURNS void
    AS 'MODULE_PATHNAME', 'parflow_may_claim'
    LANGUAGE C STABLE;
COMMENT ON FUNCTION parflow._may_claim(text) IS 'Internal: raise 42501 unless the session''s role may claim tasks of this agent kind (parflow.agent_role)';

CREATE OR REPLACE FUNCTION parflow._dispatcher_counts() RETURNS bigint[]
    AS 'MODULE_PATHNAME', 'parflow_dispatcher_counts'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION parflow._dispatcher_counts() IS
    'Internal: {dispatch passes run, hand-over notifications sent} since the server started; NULL when parflow is not preloaded';

CREATE OR REPLACE FUNCTION parflow._note_dispatch(channel text, payload text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'parflow_note_dispatch'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION parflow._note_dispatch(text, text) IS
    'Internal: have the dispatcher send this NOTIFY when the current transaction commits; false (nothing queued) when no dispatcher serves this database';

CREATE OR REPLACE FUNCTION parflow._renotify() RETURNS integer
    AS 'MODULE_PATHNAME', 'parflow_renotify'
    LANGUAGE C VOLATILE SET search_path = pg_catalog, parflow, pg_temp SET jit = off;
COMMENT ON FUNCTION parflow._renotify() IS
    'Internal, called by the dispatcher: send the notification of every dispatched task again';

CREATE OR REPLACE FUNCTION parflow._dispatch() RETURNS integer
    AS 'MODULE_PATHNAME', 'parflow_dispatch'
    LANGUAGE C VOLATILE SET search_path = pg_catalog, parflow, pg_temp SET jit = off;
COMMENT ON FUNCTION parflow._dispatch() IS
    'Internal, the dispatcher''s pass: settle runs, end attempts past their timeout, take back unclaimed tasks and expired leases, make room for P0 runs, then dispatch ready tasks by run priority and rank under every cap, one NOTIFY per task; returns how many it dispatched';

-- The agent API
CREATE OR REPLACE FUNCTION @extschema@.parflow_claim(agent text, worker text, lease interval DEFAULT '5 min',
                                                     max_tasks integer DEFAULT 1)
RETURNS TABLE(task bigint, token uuid, run bigint, stage text, attempt integer, input jsonb,
              estimate interval, lease_until timestamptz, item integer)
    AS 'MODULE_PATHNAME', 'parflow_claim'
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp SET jit = off;
COMMENT ON FUNCTION @extschema@.parflow_claim(text, text, interval, integer) IS
    'Claim up to max_tasks (at most 1000) dispatched tasks of an agent kind, in dispatch order: each with a fresh lease token; no row when there is none';

CREATE OR REPLACE FUNCTION @extschema@.parflow_heartbeat(task bigint, token uuid) RETURNS timestamptz
    AS 'MODULE_PATHNAME', 'parflow_heartbeat'
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp SET jit = off;
COMMENT ON FUNCTION @extschema@.parflow_heartbeat(bigint, uuid) IS 'Extend the lease of a held task; returns the new lease end';

CREATE OR REPLACE FUNCTION @extschema@.parflow_complete(task bigint, token uuid, output jsonb DEFAULT '{}')
RETURNS void
    AS 'MODULE_PATHNAME', 'parflow_complete'
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp SET jit = off;
COMMENT ON FUNCTION @extschema@.parflow_complete(bigint, uuid, jsonb) IS 'Report a held task done with its output; its dependents become ready';

CREATE OR REPLACE FUNCTION @extschema@.parflow_complete_and_claim(task bigint, token uuid, output jsonb,
                                                                  agent text, worker text,
                                                                  lease interval DEFAULT '5 min')
RETURNS TABLE(task bigint, token uuid, run bigint, stage text, attempt integer, input jsonb,
              estimate interval, lease_until timestamptz, item integer)
    AS 'MODULE_PATHNAME', 'parflow_complete_and_claim'
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp SET jit = off;
COMMENT ON FUNCTION @extschema@.parflow_complete_and_claim(bigint, uuid, jsonb, text, text, interval) IS
    'Report a held task done and claim the agent''s next dispatched task, in one transaction: no row when there is none';

CREATE OR REPLACE FUNCTION @extschema@.parflow_complete_many(tasks bigint[], tokens uuid[], outputs jsonb[] DEFAULT NULL)
RETURNS TABLE(task bigint, accepted boolean, sqlstate text, message text)
    AS 'MODULE_PATHNAME', 'parflow_complete_many'
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp SET jit = off;
COMMENT ON FUNCTION @extschema@.parflow_complete_many(bigint[], uuid[], jsonb[]) IS
    'Report up to 1000 held tasks done (outputs NULL: {} each), in one transaction: one row per task, accepted, or refused with the SQLSTATE and message parflow_complete would raise (a refused task is left as it was)';

CREATE OR REPLACE FUNCTION @extschema@.parflow_fail(task bigint, token uuid, error text, retryable boolean DEFAULT true,
                                                    output jsonb DEFAULT NULL)
RETURNS void
    AS 'MODULE_PATHNAME', 'parflow_fail'
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp SET jit = off;
COMMENT ON FUNCTION @extschema@.parflow_fail(bigint, uuid, text, boolean, jsonb) IS
    'Report a held task failed: retried with backoff while attempts are left and the error is retryable, else failed for good; a failed verification sends the stage it verifies back to its agent with the error and output';

CREATE OR REPLACE FUNCTION @extschema@.parflow_release(task bigint, token uuid) RETURNS void
    AS 'MODULE_PATHNAME', 'parflow_release'
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp SET jit = off;
COMMENT ON FUNCTION @extschema@.parflow_release(bigint, uuid) IS 'Give a held task back (after an interrupt or at shutdown); not counted as a failed attempt';
