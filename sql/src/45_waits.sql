-- parflow wait stages: a stage that awaits an event (a person's approval,
-- an outside system's webhook) instead of an agent.  The state machine is C
-- (src/waits.c); who may signal is kept in parflow.signal_role.

CREATE OR REPLACE FUNCTION parflow._await(run bigint, ords integer[]) RETURNS void
    AS 'MODULE_PATHNAME', 'parflow_await'
    LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION parflow._await(bigint, integer[]) IS
    'Internal: wait tasks of these stages just began to await their event: log and announce it, and apply a signal kept for it';

CREATE OR REPLACE FUNCTION parflow._grant_signal(role_name name, grant_it boolean) RETURNS void
    AS 'MODULE_PATHNAME', 'parflow_grant_signal'
    LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION parflow._grant_signal(name, boolean) IS
    'Internal: grant (or revoke) EXECUTE on parflow_signal and parflow_reject to a role';

CREATE OR REPLACE FUNCTION @extschema@.parflow_signal(run bigint, event text, payload jsonb DEFAULT '{}')
RETURNS integer
    AS 'MODULE_PATHNAME', 'parflow_signal'
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp SET jit = off;
COMMENT ON FUNCTION @extschema@.parflow_signal(bigint, text, jsonb) IS
    'Deliver an event to a run: its stages awaiting it succeed with the payload as their output; with none awaiting, the signal is kept for the next stage to await it. Returns how many stages it released';

CREATE OR REPLACE FUNCTION @extschema@.parflow_reject(run bigint, event text, reason text) RETURNS integer
    AS 'MODULE_PATHNAME', 'parflow_reject'
    LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp SET jit = off;
COMMENT ON FUNCTION @extschema@.parflow_reject(bigint, text, text) IS
    'Refuse an event of a run: its stages awaiting it fail with the reason, and one that verifies a stage sends that stage back to its agent with it. Not kept: returns how many stages it refused (0 when none awaits)';

CREATE OR REPLACE FUNCTION @extschema@.parflow_allow_signal(role_name name, event text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
BEGIN
    IF role_name IS NULL OR event IS NULL THEN
        RAISE EXCEPTION 'role and event must be given' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Give the event a wait stage awaits, or * for every event.';
    END IF;
    IF btrim(event) = '' THEN
        RAISE EXCEPTION 'event must not be empty' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Give the event a wait stage awaits, or * for every event.';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = role_name) THEN
        RAISE EXCEPTION 'role "%" does not exist', role_name USING ERRCODE = 'undefined_object';
    END IF;
    INSERT INTO parflow.signal_role (role_name, event) VALUES (role_name, event) ON CONFLICT DO NOTHING;
    PERFORM parflow._grant_signal(role_name, true);
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_allow_signal(name, text) IS
    'Let a role signal and reject an event (* for every event) with parflow_signal and parflow_reject, besides parflow_operator';

CREATE OR REPLACE FUNCTION @extschema@.parflow_disallow_signal(role_name name, event text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    IF role_name IS NULL OR event IS NULL THEN
        RAISE EXCEPTION 'role and event must be given' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    DELETE FROM parflow.signal_role sr WHERE sr.role_name = parflow_disallow_signal.role_name
       AND sr.event = parflow_disallow_signal.event;
    GET DIAGNOSTICS n = ROW_COUNT;
    -- its last event gone, the role may not call the functions any more
    IF n > 0 AND NOT EXISTS (SELECT FROM parflow.signal_role sr WHERE sr.role_name = parflow_disallow_signal.role_name)
       AND EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = role_name) THEN
        PERFORM parflow._grant_signal(role_name, false);
    END IF;
    RETURN n > 0;
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_disallow_signal(name, text) IS
    'Take back what parflow_allow_signal gave; returns whether there was such a grant';
