-- parflow agents: which roles may claim which agent kinds, and the warm-up
-- an agent runs once after connecting.

CREATE OR REPLACE FUNCTION @extschema@.parflow_allow_agent(role_name name, agent text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
BEGIN
    IF role_name IS NULL OR agent IS NULL OR btrim(agent) = '' THEN
        RAISE EXCEPTION 'role and agent kind must be given' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = role_name) THEN
        RAISE EXCEPTION 'role "%" does not exist', role_name USING ERRCODE = 'undefined_object';
    END IF;
    INSERT INTO parflow.agent_role (role_name, agent) VALUES (role_name, agent) ON CONFLICT DO NOTHING;
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_allow_agent(name, text) IS
    'Let a role claim tasks of an agent kind (* for all). Once any role is listed, unlisted agent roles may claim nothing';

CREATE OR REPLACE FUNCTION @extschema@.parflow_disallow_agent(role_name name, agent text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    IF role_name IS NULL OR agent IS NULL THEN
        RAISE EXCEPTION 'role and agent kind must be given' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    DELETE FROM parflow.agent_role ar WHERE ar.role_name = parflow_disallow_agent.role_name
       AND ar.agent = parflow_disallow_agent.agent;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n > 0;
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_disallow_agent(name, text) IS 'Take back what parflow_allow_agent gave; returns whether there was such a grant';

-- The first call of each agent function in a new session compiles it and
-- plans its statements (tens of ms, paid by the agent's first task).  An
-- agent calls this once after connecting: it runs the whole agent path on a
-- throwaway workflow of its own, inside a subtransaction that is rolled back,
-- so that nothing of it stays but the compiled functions and cached plans.
CREATE OR REPLACE FUNCTION @extschema@.parflow_warm_up(agent text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
DECLARE
    kind text := 'parflow warm-up ' || gen_random_uuid();
    r bigint;
    c record;
BEGIN
    IF agent IS NULL OR btrim(agent) = '' THEN
        RAISE EXCEPTION 'agent must be a non-empty name' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM parflow._may_claim(agent);
    BEGIN
        PERFORM @extschema@.parflow_define(kind, jsonb_build_object('groups', jsonb_build_array(
            jsonb_build_object('name', 'a', 'stages', jsonb_build_array(
                jsonb_build_object('name', 'a', 'agent', kind, 'estimate', '1 s'))),
            jsonb_build_object('name', 'b', 'stages', jsonb_build_array(
                jsonb_build_object('name', 'b', 'agent', kind, 'estimate', '1 s', 'max_attempts', 2))))));
        r := @extschema@.parflow_start(kind, parallel => true);
        UPDATE parflow.task SET state = 'dispatched', dispatched_at = clock_timestamp()
         WHERE run_id = r AND state = 'ready';
        SELECT * INTO c FROM @extschema@.parflow_claim(kind, 'warm-up', '1 min');
        PERFORM @extschema@.parflow_heartbeat(c.task, c.token);
        PERFORM @extschema@.parflow_complete(c.task, c.token, '{}');
        UPDATE parflow.task SET state = 'dispatched', dispatched_at = clock_timestamp()
         WHERE run_id = r AND state = 'ready';
        SELECT * INTO c FROM @extschema@.parflow_claim(kind, 'warm-up', '1 min');
        PERFORM @extschema@.parflow_fail(c.task, c.token, 'warm-up', true);
        RAISE EXCEPTION 'parflow warm-up done' USING ERRCODE = 'PF001';
    EXCEPTION WHEN SQLSTATE 'PF001' THEN
        NULL;   -- everything above is rolled back
    END;
    RETURN true;
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_warm_up(text) IS
    'For agents, once after connecting: run the agent path on a throwaway run that is rolled back, so that the first real task does not pay for compiling and planning';
