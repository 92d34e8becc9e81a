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

-- The agent path is C: a new session needs no warm-up.  Agents written
-- to call this once after connecting keep working: it checks what their
-- first claim would check, and changes nothing.
CREATE OR REPLACE FUNCTION @extschema@.parflow_warm_up(agent text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
BEGIN
    IF agent IS NULL OR btrim(agent) = '' THEN
        RAISE EXCEPTION 'agent must be a non-empty name' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM parflow._may_claim(agent);
    RETURN true;
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_warm_up(text) IS
    'Harmless, for agents that call it after connecting: checks that the session may claim tasks of this agent kind and returns true (the agent path needs no warm-up)';