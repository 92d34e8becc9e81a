-- parflow 0.1.0: workflow definitions, the planner, runs, tasks and the agent API.
--
-- Tables and views live in schema "parflow"; the public functions, all named
-- parflow_*, live in the schema the extension is created in (normally
-- "public") so that SELECT parflow_start(...) works with the default
-- search_path.

\echo Use "CREATE EXTENSION parflow" to load this file. \quit

CREATE SCHEMA parflow;
COMMENT ON SCHEMA parflow IS 'parflow: workflow definitions, runs, tasks and the event log';

-- Roles (cluster-wide, so created only when missing).
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'parflow_reader') THEN
        CREATE ROLE parflow_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'parflow_operator') THEN
        CREATE ROLE parflow_operator NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'parflow_agent') THEN
        CREATE ROLE parflow_agent NOLOGIN;
    END IF;
END
$roles$;

GRANT USAGE ON SCHEMA parflow TO parflow_reader, parflow_operator, parflow_agent;

------------------------------------------------------------------------------
-- Definitions
------------------------------------------------------------------------------

CREATE TABLE parflow.workflow (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE parflow.workflow IS 'One row per workflow name; its definitions are in parflow.workflow_version';

CREATE TABLE parflow.workflow_version (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id   bigint NOT NULL REFERENCES parflow.workflow,
    version       integer NOT NULL CHECK (version >= 1),
    spec          jsonb NOT NULL,
    max_parallel  integer CHECK (max_parallel >= 1),
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workflow_id, version)
);
COMMENT ON TABLE parflow.workflow_version IS 'An immutable version of a workflow, as given to parflow_define()';

CREATE TABLE parflow.stage_group (
    version_id  bigint NOT NULL REFERENCES parflow.workflow_version,
    ord         integer NOT NULL,
    name        text NOT NULL,
    parallel    boolean NOT NULL DEFAULT true,
    on_failure  text NOT NULL DEFAULT 'continue' CHECK (on_failure IN ('continue', 'fail_fast')),
    PRIMARY KEY (version_id, ord),
    UNIQUE (version_id, name)
);
COMMENT ON TABLE parflow.stage_group IS 'Stage groups of a workflow version, in spec order (ord from 0); a group is a barrier';

CREATE TABLE parflow.group_dep (
    version_id  bigint NOT NULL,
    group_ord   integer NOT NULL,
    dep_ord     integer NOT NULL,
    PRIMARY KEY (version_id, group_ord, dep_ord),
    FOREIGN KEY (version_id, group_ord) REFERENCES parflow.stage_group,
    FOREIGN KEY (version_id, dep_ord) REFERENCES parflow.stage_group,
    CHECK (group_ord <> dep_ord)
);
COMMENT ON TABLE parflow.group_dep IS 'Group barriers: group group_ord starts when group dep_ord is done';

CREATE TABLE parflow.stage (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version_id       bigint NOT NULL,
    ord              integer NOT NULL,
    group_ord        integer NOT NULL,
    pos              integer NOT NULL,
    name             text NOT NULL,
    agent            text NOT NULL,
    estimate         interval NOT NULL CHECK (estimate > interval '0'),
    when_flag        text,
    depends_on       text[] NOT NULL DEFAULT '{}',
    verifies         text,
    verifies_ord     integer,
    produces         text[] NOT NULL DEFAULT '{}',
    consumes         text[] NOT NULL DEFAULT '{}',
    max_attempts     integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    retry_backoff    interval NOT NULL DEFAULT '5 s' CHECK (retry_backoff >= interval '0'),
    timeout          interval CHECK (timeout > interval '0'),
    max_route_backs  integer NOT NULL DEFAULT 3 CHECK (max_route_backs >= 0),
    description      text,
    UNIQUE (version_id, ord),
    UNIQUE (version_id, name),
    UNIQUE (version_id, group_ord, pos),
    FOREIGN KEY (version_id, group_ord) REFERENCES parflow.stage_group,
    FOREIGN KEY (version_id, verifies_ord) REFERENCES parflow.stage (version_id, ord)
);
COMMENT ON TABLE parflow.stage IS 'Stages of a workflow version; ord is the position in the whole spec (plan order)';

CREATE TABLE parflow.stage_dep (
    version_id  bigint NOT NULL,
    stage_ord   integer NOT NULL,
    dep_ord     integer NOT NULL,
    kind        "char" NOT NULL CHECK (kind IN ('e', 'a', 's', 'v')),
    PRIMARY KEY (version_id, stage_ord, dep_ord),
    CHECK (stage_ord <> dep_ord)
);
-- No foreign keys to parflow.stage: parflow_define, the only writer, joins
-- every edge to its stages, and per-row checks would triple its cost.
COMMENT ON TABLE parflow.stage_dep IS 'Stage-level edges beside group barriers: e = explicit depends_on, a = inferred from artifacts, s = order in a sequential group, v = verification after its work';

CREATE TABLE parflow.affinity (
    version_id        bigint NOT NULL REFERENCES parflow.workflow_version,
    ord               integer NOT NULL,
    agents            text[] NOT NULL,
    max_concurrent    integer NOT NULL CHECK (max_concurrent >= 1),
    resource_profile  text CHECK (resource_profile IN ('cpu', 'memory', 'io')),
    PRIMARY KEY (version_id, ord)
);
COMMENT ON TABLE parflow.affinity IS 'Affinity rules: at most max_concurrent tasks of the named agents at once';

------------------------------------------------------------------------------
-- Internal helpers (C)
------------------------------------------------------------------------------

CREATE FUNCTION parflow._nearest(word text, candidates text[]) RETURNS text
    AS 'MODULE_PATHNAME', 'parflow_nearest'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION parflow._nearest(text, text[]) IS 'Internal: the candidate closest to word by edit distance, or NULL when none is close';

CREATE FUNCTION parflow._check_version(version_id bigint) RETURNS void
    AS 'MODULE_PATHNAME', 'parflow_check_version'
    LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION parflow._check_version(bigint) IS 'Internal: load a version''s graph and reject cycles, naming them';

------------------------------------------------------------------------------
-- Spec validation (PL/pgSQL, set-based so that 100k stages validate fast)
------------------------------------------------------------------------------

-- Raise 22023 for a spec problem.
CREATE FUNCTION parflow._spec_error(msg text, detail text DEFAULT NULL, hint text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF detail IS NULL AND hint IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = msg;
    ELSIF hint IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = msg, DETAIL = detail;
    ELSIF detail IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = msg, HINT = hint;
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = msg, DETAIL = detail, HINT = hint;
END
$$;
COMMENT ON FUNCTION parflow._spec_error(text, text, text) IS 'Internal: raise an invalid_parameter_value error about a workflow spec';

-- A readable name for the JSON type of a value.
CREATE FUNCTION parflow._json_kind(v jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(v)
        WHEN 'object' THEN 'an object' WHEN 'array' THEN 'an array'
        WHEN 'string' THEN 'a string' WHEN 'number' THEN 'a number'
        WHEN 'boolean' THEN 'a boolean' ELSE 'null' END
$$;
COMMENT ON FUNCTION parflow._json_kind(jsonb) IS 'Internal: "a string", "an array"... for error details';

-- Check a list of JSON objects against a shape: {key: type} with types
-- string, boolean, integer, strings (array of strings), array, interval.
-- labels[i] names objs[i] in messages.  Raises the first problem found.
CREATE FUNCTION parflow._check_shape(labels text[], objs jsonb[], shape jsonb, required text[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r record;
    want text;
BEGIN
    SELECT i INTO r FROM unnest(objs) WITH ORDINALITY u(o, i)
     WHERE jsonb_typeof(o) IS DISTINCT FROM 'object' ORDER BY i LIMIT 1;
    IF FOUND THEN
        PERFORM parflow._spec_error(format('%s must be a JSON object', labels[r.i]),
            format('Found %s.', parflow._json_kind(objs[r.i])));
    END IF;

    SELECT i, k INTO r FROM unnest(objs) WITH ORDINALITY u(o, i), jsonb_object_keys(o) k
     WHERE NOT shape ? k ORDER BY i LIMIT 1;
    IF FOUND THEN
        want := parflow._nearest(r.k, ARRAY(SELECT jsonb_object_keys(shape)));
        PERFORM parflow._spec_error(format('unknown key "%s" in %s', r.k, labels[r.i]),
            format('Valid keys are: %s.', (SELECT string_agg(k, ', ' ORDER BY k) FROM jsonb_object_keys(shape) k)),
            CASE WHEN want IS NOT NULL THEN format('Did you mean "%s"?', want) END);
    END IF;

    SELECT i, k INTO r FROM unnest(objs) WITH ORDINALITY u(o, i), unnest(required) k
     WHERE NOT o ? k ORDER BY i LIMIT 1;
    IF FOUND THEN
        PERFORM parflow._spec_error(format('%s lacks required key "%s"', labels[r.i], r.k));
    END IF;

    SELECT i, e.key, e.value, shape->>e.key AS want INTO r
      FROM unnest(objs) WITH ORDINALITY u(o, i), jsonb_each(o) e
     WHERE NOT CASE shape->>e.key
            WHEN 'string' THEN jsonb_typeof(e.value) = 'string'
            WHEN 'interval' THEN jsonb_typeof(e.value) = 'string'
            WHEN 'boolean' THEN jsonb_typeof(e.value) = 'boolean'
            WHEN 'array' THEN jsonb_typeof(e.value) = 'array'
            WHEN 'integer' THEN jsonb_typeof(e.value) = 'number'
                AND e.value::numeric = trunc(e.value::numeric)
                AND abs(e.value::numeric) <= 2147483647
            WHEN 'strings' THEN jsonb_typeof(e.value) = 'array'
                AND NOT EXISTS (SELECT FROM jsonb_array_elements(e.value) x
                                 WHERE jsonb_typeof(x) <> 'string')
            ELSE true END
     ORDER BY i LIMIT 1;
    IF FOUND THEN
        PERFORM parflow._spec_error(
            format('key "%s" of %s must be %s', r.key, labels[r.i],
                CASE r.want WHEN 'string' THEN 'a string'
                            WHEN 'interval' THEN 'an interval string, such as "45 min"'
                            WHEN 'boolean' THEN 'a boolean'
                            WHEN 'array' THEN 'an array'
                            WHEN 'integer' THEN 'an integer'
                            WHEN 'strings' THEN 'an array of strings' END),
            format('Found %s.', CASE WHEN r.want = 'strings' AND jsonb_typeof(r.value) = 'array'
                                     THEN 'an array with an element that is not a string'
                                     ELSE parflow._json_kind(r.value) END));
    END IF;
END
$$;
COMMENT ON FUNCTION parflow._check_shape(text[], jsonb[], jsonb, text[]) IS 'Internal: check keys and JSON types of spec objects';

-- Check a name: not empty, not too long, no control characters.
CREATE FUNCTION parflow._check_names(kind text, labels text[], names text[], maxlen integer)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    SELECT i, n INTO r FROM unnest(names) WITH ORDINALITY u(n, i)
     WHERE n IS NULL OR btrim(n) = '' OR octet_length(n) > maxlen OR n ~ '[[:cntrl:]]'
     ORDER BY i LIMIT 1;
    IF FOUND THEN
        PERFORM parflow._spec_error(
            CASE WHEN r.n IS NULL OR btrim(r.n) = '' THEN format('%s has an empty name', labels[r.i])
                 WHEN octet_length(r.n) > maxlen THEN format('%s name "%s" is too long', kind, left(r.n, 20) || '...')
                 ELSE format('%s has a name with a control character', labels[r.i]) END,
            CASE WHEN octet_length(r.n) > maxlen THEN format('The limit is %s bytes.', maxlen) END);
    END IF;
    SELECT n INTO r FROM unnest(names) n GROUP BY n HAVING count(*) > 1 ORDER BY min(n) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '% name "%" is used more than once', kind, r.n
            USING ERRCODE = 'unique_violation',
                  HINT = format('Each %s of a workflow needs its own name.', kind);
    END IF;
END
$$;
COMMENT ON FUNCTION parflow._check_names(text, text[], text[], integer) IS 'Internal: reject empty, overlong, control-character and duplicate names';

-- Cast a spec interval, or raise naming where it came from.
CREATE FUNCTION parflow._interval(v text, what text, allow_zero boolean DEFAULT false,
                                  maxv interval DEFAULT '365 days')
RETURNS interval LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    i interval;
BEGIN
    BEGIN
        i := v::interval;
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow THEN
        PERFORM parflow._spec_error(format('%s is not a valid interval', what),
            format('Found "%s".', v), 'Write a duration such as "45 min" or "1 hour 30 min".');
    END;
    IF i < interval '0' OR (i = interval '0' AND NOT allow_zero) THEN
        PERFORM parflow._spec_error(format('%s must be positive', what),
            format('Found "%s".', v), 'Write a duration such as "45 min".');
    END IF;
    IF i > maxv THEN
        PERFORM parflow._spec_error(format('%s is too long', what),
            format('Found "%s"; the limit is %s.', v, maxv));
    END IF;
    RETURN i;
END
$$;
COMMENT ON FUNCTION parflow._interval(text, text, boolean, interval) IS 'Internal: parse a positive interval, at most maxv, from a spec';

------------------------------------------------------------------------------
-- parflow_define
------------------------------------------------------------------------------

-- enable_nestloop is off because the rows just written have no statistics
-- yet: the planner would pick nested loops that are quadratic in stages.
CREATE FUNCTION @extschema@.parflow_define(name text, spec jsonb) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp
    SET enable_nestloop = off SET jit = off AS $$
DECLARE
    wf_name   ALIAS FOR $1;
    groups    jsonb[];
    glabels   text[];
    gnames    text[];
    stages    jsonb[];
    slabels   text[];
    snames    text[];
    rules     jsonb[];
    rlabels   text[];
    wf_id     bigint;
    ver       integer;
    ver_id    bigint;
    r         record;
    near      text;
    mp        integer;
BEGIN
    IF wf_name IS NULL THEN
        RAISE EXCEPTION 'workflow name must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF spec IS NULL THEN
        RAISE EXCEPTION 'workflow spec must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM parflow._check_names('workflow', ARRAY['the workflow'], ARRAY[wf_name], 200);

    -- Top level.
    PERFORM parflow._check_shape(ARRAY['the workflow spec'], ARRAY[spec],
        '{"groups": "array", "max_parallel": "integer", "affinity": "array", "description": "string"}',
        ARRAY['groups']);
    IF jsonb_array_length(spec->'groups') = 0 THEN
        PERFORM parflow._spec_error('workflow spec has no groups', NULL,
            'Give "groups" at least one group with at least one stage.');
    END IF;
    mp := (spec->>'max_parallel')::numeric::integer;
    IF mp < 1 THEN
        PERFORM parflow._spec_error('max_parallel must be at least 1', format('Found %s.', mp));
    END IF;

    -- Groups.
    SELECT array_agg(g ORDER BY i),
           array_agg(CASE WHEN jsonb_typeof(g->'name') = 'string' AND btrim(g->>'name') <> ''
                          THEN format('group "%s"', g->>'name') ELSE format('group #%s', i) END ORDER BY i),
           array_agg(g->>'name' ORDER BY i)
      INTO groups, glabels, gnames
      FROM jsonb_array_elements(spec->'groups') WITH ORDINALITY e(g, i);
    PERFORM parflow._check_shape(glabels, groups,
        '{"name": "string", "stages": "array", "parallel": "boolean", "depends_on": "strings",
          "on_failure": "string", "description": "string"}',
        ARRAY['name', 'stages']);
    PERFORM parflow._check_names('group', glabels, gnames, 200);
    SELECT i INTO r FROM unnest(groups) WITH ORDINALITY u(g, i)
     WHERE jsonb_array_length(g->'stages') = 0 ORDER BY i LIMIT 1;
    IF FOUND THEN
        PERFORM parflow._spec_error(format('%s has no stages', glabels[r.i]), NULL,
            'Give every group at least one stage, or remove the group.');
    END IF;
    SELECT i, g->>'on_failure' AS v INTO r FROM unnest(groups) WITH ORDINALITY u(g, i)
     WHERE g ? 'on_failure' AND g->>'on_failure' NOT IN ('continue', 'fail_fast') ORDER BY i LIMIT 1;
    IF FOUND THEN
        PERFORM parflow._spec_error(format('on_failure of %s must be "continue" or "fail_fast"', glabels[r.i]),
            format('Found "%s".', r.v));
    END IF;
    SELECT u.i, d.d INTO r FROM unnest(groups) WITH ORDINALITY u(g, i),
           jsonb_array_elements_text(coalesce(g->'depends_on', '[]')) d(d)
     WHERE d.d = g->>'name' OR NOT d.d = ANY (gnames) ORDER BY u.i LIMIT 1;
    IF FOUND THEN
        IF r.d = gnames[r.i] THEN
            PERFORM parflow._spec_error(format('%s depends on itself', glabels[r.i]), NULL,
                'Remove the group''s own name from its depends_on.');
        END IF;
        near := parflow._nearest(r.d, gnames);
        PERFORM parflow._spec_error(format('%s depends on unknown group "%s"', glabels[r.i], r.d), NULL,
            CASE WHEN near IS NOT NULL THEN format('Did you mean "%s"?', near) END);
    END IF;

    -- Stages, flattened in spec order.
    SELECT array_agg(s ORDER BY gi, si),
           array_agg(CASE WHEN jsonb_typeof(s->'name') = 'string' AND btrim(s->>'name') <> ''
                          THEN format('stage "%s"', s->>'name')
                          ELSE format('stage #%s of group "%s"', si, g->>'name') END ORDER BY gi, si),
           array_agg(s->>'name' ORDER BY gi, si)
      INTO stages, slabels, snames
      FROM unnest(groups) WITH ORDINALITY u(g, gi), jsonb_array_elements(g->'stages') WITH ORDINALITY e(s, si);
    PERFORM parflow._check_shape(slabels, stages,
        '{"name": "string", "agent": "string", "estimate": "interval", "depends_on": "strings",
          "when": "string", "verifies": "string", "produces": "strings", "consumes": "strings",
          "max_attempts": "integer", "retry_backoff": "interval", "timeout": "interval",
          "max_route_backs": "integer", "description": "string"}',
        ARRAY['name', 'agent', 'estimate']);
    PERFORM parflow._check_names('stage', slabels, snames, 200);
    SELECT i, s->>'agent' AS a INTO r FROM unnest(stages) WITH ORDINALITY u(s, i)
     WHERE btrim(s->>'agent') = '' OR octet_length(s->>'agent') > 55 OR s->>'agent' ~ '[[:cntrl:]]'
     ORDER BY i LIMIT 1;
    IF FOUND THEN
        PERFORM parflow._spec_error(format('agent of %s must be a non-empty name of at most 55 bytes without control characters', slabels[r.i]),
            format('Found "%s".', r.a), 'Agents listen on channel "parflow_<agent>", and a channel name is at most 63 bytes.');
    END IF;
    SELECT i, s->>'when' AS w INTO r FROM unnest(stages) WITH ORDINALITY u(s, i)
     WHERE btrim(s->>'when') = '' ORDER BY i LIMIT 1;
    IF FOUND THEN
        PERFORM parflow._spec_error(format('when of %s must not be empty', slabels[r.i]), NULL,
            'Name the run flag that enables the stage, or remove "when".');
    END IF;
    SELECT i, k, (s->>k)::numeric AS v INTO r
      FROM unnest(stages) WITH ORDINALITY u(s, i), unnest(ARRAY['max_attempts', 'max_route_backs']) k
     WHERE (k = 'max_attempts' AND (s->>k)::numeric < 1) OR (k = 'max_route_backs' AND (s->>k)::numeric < 0)
     ORDER BY i LIMIT 1;
    IF FOUND THEN
        PERFORM parflow._spec_error(format('%s of %s must be at least %s', r.k, slabels[r.i],
            CASE r.k WHEN 'max_attempts' THEN 1 ELSE 0 END), format('Found %s.', r.v));
    END IF;
    -- Intervals (the casts raise clear errors themselves).
    PERFORM parflow._interval(s->>'estimate', format('estimate of %s', l))
       FROM unnest(stages, slabels) u(s, l);
    PERFORM parflow._interval(s->>'retry_backoff', format('retry_backoff of %s', l), true, '1 day')
       FROM unnest(stages, slabels) u(s, l) WHERE s ? 'retry_backoff';
    PERFORM parflow._interval(s->>'timeout', format('timeout of %s', l))
       FROM unnest(stages, slabels) u(s, l) WHERE s ? 'timeout';
    -- Every object has the right shape: write the new version, then check
    -- the references between its parts with joins against what was written
    -- (an error rolls all of it back).  Lock the workflow row so that
    -- concurrent definitions get consecutive version numbers.
    INSERT INTO parflow.workflow AS w (name) VALUES (wf_name)
        ON CONFLICT ON CONSTRAINT workflow_name_key DO NOTHING;
    SELECT w.id INTO wf_id FROM parflow.workflow w WHERE w.name = wf_name FOR UPDATE;
    SELECT coalesce(max(v.version), 0) + 1 INTO ver FROM parflow.workflow_version v WHERE v.workflow_id = wf_id;
    INSERT INTO parflow.workflow_version (workflow_id, version, spec, max_parallel)
        VALUES (wf_id, ver, spec, mp) RETURNING id INTO ver_id;

    INSERT INTO parflow.stage_group (version_id, ord, name, parallel, on_failure)
    SELECT ver_id, i - 1, g->>'name', coalesce((g->>'parallel')::boolean, true),
           coalesce(g->>'on_failure', 'continue')
      FROM unnest(groups) WITH ORDINALITY u(g, i);

    -- A group without depends_on depends on the group before it.
    INSERT INTO parflow.group_dep (version_id, group_ord, dep_ord)
    SELECT ver_id, i - 1, i - 2 FROM unnest(groups) WITH ORDINALITY u(g, i)
     WHERE NOT g ? 'depends_on' AND i > 1
    UNION
    SELECT ver_id, i - 1, array_position(gnames, d) - 1
      FROM unnest(groups) WITH ORDINALITY u(g, i), jsonb_array_elements_text(g->'depends_on') d
     WHERE g ? 'depends_on';

    INSERT INTO parflow.stage (version_id, ord, group_ord, pos, name, agent, estimate, when_flag,
                               depends_on, verifies,
                               produces, consumes, max_attempts, retry_backoff, timeout,
                               max_route_backs, description)
    SELECT ver_id, (row_number() OVER (ORDER BY gi, si)) - 1, gi - 1, si - 1,
           s->>'name', s->>'agent', (s->>'estimate')::interval, s->>'when',
           ARRAY(SELECT jsonb_array_elements_text(coalesce(s->'depends_on', '[]'))), s->>'verifies',
           ARRAY(SELECT jsonb_array_elements_text(coalesce(s->'produces', '[]'))),
           ARRAY(SELECT jsonb_array_elements_text(coalesce(s->'consumes', '[]'))),
           coalesce((s->>'max_attempts')::numeric::integer, 3),
           coalesce((s->>'retry_backoff')::interval, interval '5 s'),
           (s->>'timeout')::interval,
           coalesce((s->>'max_route_backs')::numeric::integer, 3),
           s->>'description'
      FROM unnest(groups) WITH ORDINALITY u(g, gi), jsonb_array_elements(g->'stages') WITH ORDINALITY e(s, si);

    -- Explicit stage dependencies must name other, existing stages.
    SELECT st.ord, st.name, st.d AS dep, dep.ord AS dep_ord INTO r
      FROM (SELECT s.ord, s.name, unnest(s.depends_on) d FROM parflow.stage s
             WHERE s.version_id = ver_id) st
      LEFT JOIN parflow.stage dep ON dep.version_id = ver_id AND dep.name = st.d
     WHERE dep.ord IS NULL OR dep.ord = st.ord
     ORDER BY st.ord LIMIT 1;
    IF FOUND THEN
        IF r.dep_ord IS NOT NULL THEN
            PERFORM parflow._spec_error(format('stage "%s" depends on itself', r.name), NULL,
                'Remove the stage''s own name from its depends_on.');
        END IF;
        near := parflow._nearest(r.dep, snames);
        PERFORM parflow._spec_error(format('stage "%s" depends on unknown stage "%s"', r.name, r.dep), NULL,
            CASE WHEN near IS NOT NULL THEN format('Did you mean "%s"?', near) END);
    END IF;

    -- verifies: another, existing stage.
    UPDATE parflow.stage st SET verifies_ord = v.ord
      FROM parflow.stage v
     WHERE st.version_id = ver_id AND st.verifies IS NOT NULL
       AND v.version_id = ver_id AND v.name = st.verifies;
    SELECT st.name, st.verifies AS v INTO r
      FROM parflow.stage st
     WHERE st.version_id = ver_id AND st.verifies IS NOT NULL
       AND (st.verifies_ord IS NULL OR st.verifies_ord = st.ord)
     ORDER BY st.ord LIMIT 1;
    IF FOUND THEN
        IF r.v = r.name THEN
            PERFORM parflow._spec_error(format('stage "%s" verifies itself', r.name), NULL,
                'A verification stage checks the work of another stage.');
        END IF;
        near := parflow._nearest(r.v, snames);
        PERFORM parflow._spec_error(format('stage "%s" verifies unknown stage "%s"', r.name, r.v), NULL,
            CASE WHEN near IS NOT NULL THEN format('Did you mean "%s"?', near) END);
    END IF;

    -- Every consumed artifact has a producer other than the consumer.
    SELECT c.name, c.a INTO r
      FROM (SELECT st.ord, st.name, unnest(st.consumes) a FROM parflow.stage st WHERE st.version_id = ver_id) c
     WHERE NOT EXISTS (SELECT FROM (SELECT st.ord, unnest(st.produces) a FROM parflow.stage st
                                     WHERE st.version_id = ver_id) p
                        WHERE p.a = c.a AND p.ord <> c.ord)
     ORDER BY c.ord LIMIT 1;
    IF FOUND THEN
        PERFORM parflow._spec_error(format('stage "%s" consumes artifact "%s", which no other stage produces', r.name, r.a),
            NULL, format('Add "%s" to the produces list of the stage that makes it, or remove it from consumes.', r.a));
    END IF;

    -- Affinity rules: every agent they name is the agent of a stage.
    IF spec ? 'affinity' THEN
        SELECT array_agg(a ORDER BY i), array_agg(format('affinity rule #%s', i) ORDER BY i)
          INTO rules, rlabels FROM jsonb_array_elements(spec->'affinity') WITH ORDINALITY e(a, i);
        PERFORM parflow._check_shape(rlabels, rules,
            '{"agents": "strings", "max_concurrent": "integer", "resource_profile": "string"}',
            ARRAY['agents', 'max_concurrent']);
        SELECT i INTO r FROM unnest(rules) WITH ORDINALITY u(a, i)
         WHERE jsonb_array_length(a->'agents') = 0 ORDER BY i LIMIT 1;
        IF FOUND THEN
            PERFORM parflow._spec_error(format('%s names no agents', rlabels[r.i]), NULL,
                'List the agents the rule bounds in "agents".');
        END IF;
        SELECT i, x AS agent INTO r FROM unnest(rules) WITH ORDINALITY u(a, i), jsonb_array_elements_text(a->'agents') x
         WHERE NOT EXISTS (SELECT FROM parflow.stage s WHERE s.version_id = ver_id AND s.agent = x)
         ORDER BY i LIMIT 1;
        IF FOUND THEN
            near := parflow._nearest(r.agent, ARRAY(SELECT DISTINCT s.agent FROM parflow.stage s WHERE s.version_id = ver_id));
            PERFORM parflow._spec_error(format('%s names agent "%s", which no stage uses', rlabels[r.i], r.agent), NULL,
                CASE WHEN near IS NOT NULL THEN format('Did you mean "%s"?', near)
                     ELSE 'Name the agent of at least one stage.' END);
        END IF;
        SELECT i, (a->>'max_concurrent')::numeric::integer AS v INTO r FROM unnest(rules) WITH ORDINALITY u(a, i)
         WHERE (a->>'max_concurrent')::numeric < 1 ORDER BY i LIMIT 1;
        IF FOUND THEN
            PERFORM parflow._spec_error(format('max_concurrent of %s must be at least 1', rlabels[r.i]), format('Found %s.', r.v));
        END IF;
        SELECT i, a->>'resource_profile' AS v INTO r FROM unnest(rules) WITH ORDINALITY u(a, i)
         WHERE a ? 'resource_profile' AND a->>'resource_profile' NOT IN ('cpu', 'memory', 'io') ORDER BY i LIMIT 1;
        IF FOUND THEN
            PERFORM parflow._spec_error(format('resource_profile of %s must be "cpu", "memory" or "io"', rlabels[r.i]),
                format('Found "%s".', r.v));
        END IF;
    END IF;

    -- Stage edges: explicit, artifacts, sequential order, verifications.
    INSERT INTO parflow.stage_dep (version_id, stage_ord, dep_ord, kind)
    SELECT DISTINCT ON (stage_ord, dep_ord) ver_id, stage_ord, dep_ord, kind FROM (
        SELECT st.ord AS stage_ord, dep.ord AS dep_ord, 'e'::"char" AS kind, 1 AS pref
          FROM (SELECT s.ord, unnest(s.depends_on) d FROM parflow.stage s
                 WHERE s.version_id = ver_id) st
          JOIN parflow.stage dep ON dep.version_id = ver_id AND dep.name = st.d
        UNION ALL
        SELECT c.ord, p.ord, 'a', 2
          FROM (SELECT st.ord, unnest(st.consumes) a FROM parflow.stage st WHERE st.version_id = ver_id) c
          JOIN (SELECT st.ord, unnest(st.produces) a FROM parflow.stage st
                 WHERE st.version_id = ver_id AND st.produces <> '{}') p
            ON p.a = c.a AND p.ord <> c.ord
        UNION ALL
        -- (stages of a group are numbered consecutively)
        SELECT st.ord, st.ord - 1, 's', 3
          FROM parflow.stage st JOIN parflow.stage_group g ON g.version_id = st.version_id AND g.ord = st.group_ord
         WHERE st.version_id = ver_id AND NOT g.parallel AND st.pos > 0
        UNION ALL
        -- A verification runs after the stage it verifies...
        SELECT st.ord, st.verifies_ord, 'v', 4
          FROM parflow.stage st
         WHERE st.version_id = ver_id AND st.verifies_ord IS NOT NULL
        UNION ALL
        -- ... and after the work (non-verification) stages of its group.
        -- (LATERAL: driven by the few verification stages)
        SELECT st.ord, w.ord, 'v', 5
          FROM parflow.stage st
         CROSS JOIN LATERAL (SELECT w.ord FROM parflow.stage w
                              WHERE w.version_id = ver_id AND w.group_ord = st.group_ord
                                AND w.verifies IS NULL OFFSET 0) w
         WHERE st.version_id = ver_id AND st.verifies IS NOT NULL
    ) e
    ORDER BY stage_ord, dep_ord, pref;

    INSERT INTO parflow.affinity (version_id, ord, agents, max_concurrent, resource_profile)
    SELECT ver_id, i - 1, ARRAY(SELECT jsonb_array_elements_text(a->'agents')),
           (a->>'max_concurrent')::numeric::integer, a->>'resource_profile'
      FROM unnest(rules) WITH ORDINALITY u(a, i);

    -- Cycles, through group barriers and stage edges alike (raises).
    PERFORM parflow._check_version(ver_id);
    RETURN ver;
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_define(text, jsonb) IS
    'Create a new version of a workflow from a JSON spec, after validating all of it; returns the version number';

-- The id of the current (latest) version of a workflow, or an error.
CREATE FUNCTION parflow._current_version(workflow text) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    vid bigint;
    near text;
BEGIN
    IF workflow IS NULL THEN
        RAISE EXCEPTION 'workflow name must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT v.id INTO vid FROM parflow.workflow w JOIN parflow.workflow_version v ON v.workflow_id = w.id
     WHERE w.name = workflow ORDER BY v.version DESC LIMIT 1;
    IF vid IS NULL THEN
        near := parflow._nearest(workflow, ARRAY(SELECT name FROM parflow.workflow));
        RAISE EXCEPTION 'workflow "%" does not exist', workflow
            USING ERRCODE = 'undefined_object',
                  HINT = CASE WHEN near IS NOT NULL THEN format('Did you mean "%s"?', near)
                              ELSE 'Define it with parflow_define().' END;
    END IF;
    RETURN vid;
END
$$;
COMMENT ON FUNCTION parflow._current_version(text) IS 'Internal: id of the latest version of a workflow; raises 42704 when there is none';

------------------------------------------------------------------------------
-- Planning (C)
------------------------------------------------------------------------------

CREATE FUNCTION @extschema@.parflow_plan(workflow text, flags text[] DEFAULT '{}', max_parallel integer DEFAULT NULL)
RETURNS TABLE(stage text, agent text, group_name text, wave integer,
              est_start interval, est_finish interval, slack interval, critical boolean)
    AS 'MODULE_PATHNAME', 'parflow_plan'
    LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.parflow_plan(text, text[], integer) IS
    'The parallel plan of the latest version of a workflow: one row per stage that runs, with its wave, planned start and finish under every cap, slack and whether it is critical';

CREATE FUNCTION @extschema@.parflow_estimate(workflow text, flags text[] DEFAULT '{}', max_parallel integer DEFAULT NULL)
RETURNS TABLE(sequential interval, parallel interval, savings_pct numeric,
              critical_path interval, lower_bound interval)
    AS 'MODULE_PATHNAME', 'parflow_estimate'
    LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.parflow_estimate(text, text[], integer) IS
    'Estimated one-at-a-time total, planned parallel makespan, savings, critical path and the lower bound max(critical path, work / cap)';

CREATE FUNCTION parflow._plan_stats(workflow text, flags text[] DEFAULT '{}', max_parallel integer DEFAULT NULL,
                                    policy text DEFAULT 'best')
RETURNS TABLE(stages integer, edges bigint, makespan interval, load_ms double precision,
              compute_ms double precision)
    AS 'MODULE_PATHNAME', 'parflow_plan_stats'
    LANGUAGE C STABLE;
COMMENT ON FUNCTION parflow._plan_stats(text, text[], integer, text) IS
    'Internal, for benchmarks: plan under a policy (best, cp, fifo) and report sizes, makespan and the time spent loading and computing';

------------------------------------------------------------------------------
-- Runs, tasks and the event log
------------------------------------------------------------------------------

CREATE TABLE parflow.run (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version_id    bigint NOT NULL REFERENCES parflow.workflow_version,
    state         text NOT NULL DEFAULT 'running'
                  CHECK (state IN ('running', 'paused', 'blocked', 'succeeded', 'cancelled')),
    priority      integer NOT NULL CHECK (priority BETWEEN 0 AND 3),
    parallel      boolean NOT NULL,
    flags         text[] NOT NULL,
    input         jsonb NOT NULL,
    max_parallel  integer NOT NULL CHECK (max_parallel >= 1),
    failed        integer NOT NULL DEFAULT 0,
    planned       interval NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at    timestamptz,
    finished_at   timestamptz
);
COMMENT ON TABLE parflow.run IS 'One execution of a workflow version; failed counts its tasks failed for good';
CREATE INDEX run_live_idx ON parflow.run (id) WHERE state IN ('running', 'paused');

CREATE TABLE parflow.task (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id         bigint NOT NULL REFERENCES parflow.run,
    stage_ord      integer NOT NULL,
    group_ord      integer NOT NULL,
    agent          text NOT NULL,
    state          text NOT NULL
                   CHECK (state IN ('waiting', 'ready', 'dispatched', 'running', 'succeeded',
                                    'failed', 'skipped', 'cancelled')),
    pending        integer NOT NULL,
    priority       integer NOT NULL,
    rank           bigint NOT NULL,
    attempt        integer NOT NULL DEFAULT 0,
    base_attempt   integer NOT NULL DEFAULT 0,
    route_backs    integer NOT NULL DEFAULT 0,
    worker         text,
    token          uuid,
    lease          interval,
    lease_until    timestamptz,
    not_before     timestamptz,
    dispatched_at  timestamptz,
    started_at     timestamptz,
    finished_at    timestamptz,
    interrupted_at timestamptz,
    output         jsonb,
    error          text,
    feedback       jsonb,
    skip_barrier   boolean NOT NULL DEFAULT false,
    UNIQUE (run_id, stage_ord)
);
COMMENT ON TABLE parflow.task IS 'One stage inside one run: the row that moves through the state machine; pending counts unfinished dependencies';
COMMENT ON COLUMN parflow.task.base_attempt IS 'Attempts made before the current round (a route-back or an operator retry starts a new round with max_attempts fresh attempts)';
COMMENT ON COLUMN parflow.task.route_backs IS 'On a verification task: how many times its failure sent the verified stage back';
COMMENT ON COLUMN parflow.task.feedback IS 'On a routed-back task: the failing verification (name, error, output), given to the next attempt in its input as route_back';
COMMENT ON COLUMN parflow.task.skip_barrier IS 'Set when a route-back re-opened a task whose group barrier had already passed: its next completion does not count against the barrier again';
COMMENT ON COLUMN parflow.task.interrupted_at IS 'When the dispatcher asked the holder to give the task back for a P0 run; the lease is lost after parflow.interrupt_grace';
CREATE INDEX task_ready_idx ON parflow.task (run_id) WHERE state = 'ready';
CREATE INDEX task_dispatch_idx ON parflow.task (priority, rank DESC, id) WHERE state = 'ready';
CREATE INDEX task_active_idx ON parflow.task (run_id) WHERE state IN ('dispatched', 'running');
CREATE INDEX task_claim_idx ON parflow.task (agent) WHERE state = 'dispatched';
CREATE INDEX task_run_group_idx ON parflow.task (run_id, group_ord);
CREATE INDEX stage_dep_dep_idx ON parflow.stage_dep (version_id, dep_ord);

-- What is left of a run, as 16 counters (a task counts in shard id % 16):
-- concurrent completions of one run seldom update the same row.
CREATE TABLE parflow.run_remaining (
    run_id     bigint NOT NULL REFERENCES parflow.run,
    shard      smallint NOT NULL,
    remaining  integer NOT NULL,
    PRIMARY KEY (run_id, shard)
);
COMMENT ON TABLE parflow.run_remaining IS 'Tasks of a run not yet succeeded or skipped, counted in 16 shards (task id % 16) so that completions of one run do not all lock one row';

CREATE TABLE parflow.run_group (
    run_id     bigint NOT NULL REFERENCES parflow.run,
    group_ord  integer NOT NULL,
    pending    integer NOT NULL,
    PRIMARY KEY (run_id, group_ord)
);
COMMENT ON TABLE parflow.run_group IS 'Group barriers of a run: pending counts the group''s tasks not yet done (kept only for groups that other groups wait for)';

CREATE TABLE parflow.event (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    run_id   bigint NOT NULL,
    task_id  bigint,
    kind     text NOT NULL,
    detail   jsonb NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE parflow.event IS 'The event log: one row per run or task transition, written in the transaction that made it';
CREATE INDEX event_run_idx ON parflow.event (run_id, id);

CREATE VIEW parflow.runs AS
SELECT r.id AS run, w.name AS workflow, v.version, r.state, r.priority, r.parallel, r.flags,
       r.created_at, r.started_at, r.finished_at
  FROM parflow.run r JOIN parflow.workflow_version v ON v.id = r.version_id
  JOIN parflow.workflow w ON w.id = v.workflow_id;
COMMENT ON VIEW parflow.runs IS 'Runs: workflow, version, state, priority, mode, flags and times';

CREATE VIEW parflow.tasks AS
SELECT t.id AS task, t.run_id AS run, s.name AS stage, t.agent, g.name AS group_name, t.state,
       t.attempt, t.worker, t.dispatched_at, t.started_at, t.finished_at
  FROM parflow.task t JOIN parflow.run r ON r.id = t.run_id
  JOIN parflow.stage s ON s.version_id = r.version_id AND s.ord = t.stage_ord
  JOIN parflow.stage_group g ON g.version_id = r.version_id AND g.ord = t.group_ord;
COMMENT ON VIEW parflow.tasks IS 'Tasks: one per stage of each run, with state, attempt, worker and times';

CREATE VIEW parflow.events AS
SELECT e.id AS event, e.at, e.run_id AS run, e.task_id AS task, e.kind, e.detail
  FROM parflow.event e;
COMMENT ON VIEW parflow.events IS 'The event log: every run and task transition';

------------------------------------------------------------------------------
-- The state machine (internal)
------------------------------------------------------------------------------

CREATE FUNCTION parflow._wake() RETURNS void
    AS 'MODULE_PATHNAME', 'parflow_wake'
    LANGUAGE C VOLATILE;
COMMENT ON FUNCTION parflow._wake() IS 'Internal: wake the dispatcher when the current transaction commits';

CREATE FUNCTION parflow._ranks(version_id bigint, flags text[], cap integer)
RETURNS TABLE(stage_ord integer, rank bigint, makespan interval)
    AS 'MODULE_PATHNAME', 'parflow_ranks'
    LANGUAGE C STABLE;
COMMENT ON FUNCTION parflow._ranks(bigint, text[], integer) IS 'Internal: dispatch rank of each stage from the plan under a cap, and the planned makespan';

CREATE FUNCTION parflow._event(p_run bigint, p_task bigint, p_kind text, p_detail jsonb DEFAULT '{}')
RETURNS void LANGUAGE sql AS $$
    INSERT INTO parflow.event (run_id, task_id, kind, detail) VALUES (p_run, p_task, p_kind, p_detail)
$$;
COMMENT ON FUNCTION parflow._event(bigint, bigint, text, jsonb) IS 'Internal: append to the event log';

-- Announce a run transition to integrations.
CREATE FUNCTION parflow._announce(p_run bigint, p_kind text, p_detail jsonb DEFAULT '{}')
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM parflow._event(p_run, NULL, 'run_' || p_kind, p_detail);
    PERFORM pg_notify('parflow_orchestrator',
                      (jsonb_build_object('kind', p_kind, 'run', p_run) || p_detail)::text);
END
$$;
COMMENT ON FUNCTION parflow._announce(bigint, text, jsonb) IS 'Internal: log a run transition and NOTIFY parflow_orchestrator';

-- Propagate the completion of tasks (succeeded, or skipped and passed
-- through) to their dependents, through stage edges and group barriers.
-- Dependents whose last dependency this was become ready; skipped ones are
-- passed through in turn.
-- Take N finished dependencies off each of the tasks ORDS of a run: those
-- left waiting on nothing become ready (freed), skipped ones left waiting on
-- nothing are passed through (passed).  A skipped task already passed
-- through is never counted again (route-backs).
CREATE FUNCTION parflow._release(p_run bigint, ords integer[], ns integer[],
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

CREATE FUNCTION parflow._done(p_run bigint, p_ords integer[]) RETURNS void
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
CREATE FUNCTION parflow._check_blocked(p_run bigint) RETURNS void
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
CREATE FUNCTION parflow._held(task_id bigint, tok uuid) RETURNS parflow.task
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
CREATE FUNCTION parflow._retry_or_fail(t parflow.task, why text, err text, retryable boolean)
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
CREATE FUNCTION parflow._route_back(t parflow.task, st parflow.stage, err text, out_doc jsonb)
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

------------------------------------------------------------------------------
-- Runs: start and report
------------------------------------------------------------------------------

-- Why a stage is skipped in a run with these flags (NULL when it runs).
CREATE FUNCTION parflow._skip_reason(s parflow.stage, vs parflow.stage, flags text[]) RETURNS jsonb
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

CREATE FUNCTION @extschema@.parflow_start(workflow text, flags text[] DEFAULT '{}', priority integer DEFAULT 2,
                                           parallel boolean DEFAULT NULL, input jsonb DEFAULT '{}')
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
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
BEGIN
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

    SELECT array_agg(rk.stage_ord), array_agg(rk.rank), max(rk.makespan)
      INTO rk_ords, rk_ranks, plan_len
      FROM parflow._ranks(ver, flags, CASE WHEN par THEN NULL ELSE 1 END) rk;

    INSERT INTO parflow.run (version_id, priority, parallel, flags, input, max_parallel, planned, started_at)
    VALUES (ver, priority, par, flags, input, cap, coalesce(plan_len, '0'), clock_timestamp())
    RETURNING id INTO new_run;

    -- pending: stage edges, plus one per group barrier the task's group waits for
    -- (a skipped task keeps the reason in error)
    INSERT INTO parflow.task (run_id, stage_ord, group_ord, agent, state, error, pending, priority, rank)
    SELECT new_run, s.ord, s.group_ord, s.agent,
           CASE WHEN sk.why IS NULL THEN 'waiting' ELSE 'skipped' END, sk.why->>'reason',
           (SELECT count(*) FROM parflow.stage_dep d WHERE d.version_id = ver AND d.stage_ord = s.ord)
           + (SELECT count(*) FROM parflow.group_dep gd WHERE gd.version_id = ver AND gd.group_ord = s.group_ord),
           parflow_start.priority, rk.rank
      FROM parflow.stage s JOIN unnest(rk_ords, rk_ranks) rk(ord, rank) ON rk.ord = s.ord
      LEFT JOIN parflow.stage vs ON vs.version_id = ver AND vs.ord = s.verifies_ord
      CROSS JOIN LATERAL (SELECT parflow._skip_reason(s, vs, flags) AS why) sk
     WHERE s.version_id = ver;

    INSERT INTO parflow.run_remaining (run_id, shard, remaining)
    SELECT new_run, t.id % 16, count(*) FROM parflow.task t
     WHERE t.run_id = new_run AND t.state <> 'skipped' GROUP BY t.id % 16;

    INSERT INTO parflow.run_group (run_id, group_ord, pending)
    SELECT new_run, g.ord, (SELECT count(*) FROM parflow.stage s WHERE s.version_id = ver AND s.group_ord = g.ord)
      FROM parflow.stage_group g WHERE g.version_id = ver;

    PERFORM parflow._announce(new_run, 'started',
        jsonb_build_object('workflow', workflow, 'parallel', par, 'priority', priority));
    INSERT INTO parflow.event (run_id, task_id, kind, detail)
    SELECT new_run, t.id, 'skipped', parflow._skip_reason(s, vs, flags)
      FROM parflow.task t JOIN parflow.stage s ON s.version_id = ver AND s.ord = t.stage_ord
      LEFT JOIN parflow.stage vs ON vs.version_id = ver AND vs.ord = s.verifies_ord
     WHERE t.run_id = new_run AND t.state = 'skipped';

    -- Tasks with nothing to wait for are ready; skipped ones pass through.
    WITH u AS (UPDATE parflow.task t SET state = 'ready'
                WHERE t.run_id = new_run AND t.pending = 0 AND t.state = 'waiting' RETURNING t.id)
    INSERT INTO parflow.event (run_id, task_id, kind) SELECT new_run, u.id, 'ready' FROM u;
    SELECT array_agg(t.stage_ord) INTO start_ords FROM parflow.task t
     WHERE t.run_id = new_run AND t.pending = 0 AND t.state = 'skipped';
    PERFORM parflow._done(new_run, coalesce(start_ords, '{}'));
    -- the run's clock starts when its first tasks can be dispatched
    UPDATE parflow.run rn SET started_at = clock_timestamp() WHERE rn.id = new_run;
    PERFORM parflow._finish_if_done(new_run);
    PERFORM parflow._wake();
    RETURN new_run;
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_start(text, text[], integer, boolean, jsonb) IS
    'Start a run of the latest version of a workflow: one task per stage, conditional stages without their flag skipped; returns the run id';

-- Mark a run succeeded once every task has succeeded or was skipped (its
-- run_remaining shards add up to 0).  When the last tasks of two shards
-- complete at once, each still sees the other's shard at 1 and neither
-- finishes the run: the dispatcher's next pass, which their commits wake,
-- does (parflow._dispatch).  Finishing twice is harmless: only the update
-- that changes the state announces it.
CREATE FUNCTION parflow._finish_if_done(p_run bigint) RETURNS void
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

CREATE FUNCTION @extschema@.parflow_failures(run bigint) RETURNS jsonb
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
                             AND e.kind IN ('retry', 'failed')))
             ORDER BY t.stage_ord), '[]')
      INTO rep
      FROM parflow.task t JOIN parflow.run r ON r.id = t.run_id
      JOIN parflow.stage s ON s.version_id = r.version_id AND s.ord = t.stage_ord
     WHERE t.run_id = run AND t.state = 'failed';
    RETURN rep;
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_failures(bigint) IS
    'The aggregated failure report of a run: every failed stage with its agent, attempts and each attempt''s error';

------------------------------------------------------------------------------
-- Operator control
------------------------------------------------------------------------------

-- A run by id; raises 22004 / 42704.
CREATE FUNCTION parflow._run_get(p_run bigint) RETURNS parflow.run
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

-- Lock a run and check its state; raises 42704 / 55000.
CREATE FUNCTION parflow._run_in(p_run bigint, allowed text[], action text) RETURNS parflow.run
LANGUAGE plpgsql AS $$
DECLARE
    r parflow.run;
BEGIN
    IF p_run IS NULL THEN
        RAISE EXCEPTION 'run must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
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

CREATE FUNCTION @extschema@.parflow_cancel(run bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
DECLARE
    r parflow.run;
    t record;
BEGIN
    r := parflow._run_in(run, '{running,paused,blocked}', 'cancel');
    -- agents holding its tasks are told to stop
    FOR t IN SELECT tk.id, tk.agent, s.name FROM parflow.task tk
               JOIN parflow.stage s ON s.version_id = r.version_id AND s.ord = tk.stage_ord
              WHERE tk.run_id = r.id AND tk.state IN ('dispatched', 'running') LOOP
        PERFORM pg_notify('parflow_' || t.agent,
            jsonb_build_object('kind', 'cancel', 'task', t.id, 'run', r.id, 'stage', t.name)::text);
    END LOOP;
    WITH u AS (UPDATE parflow.task tk SET state = 'cancelled', token = NULL, lease_until = NULL,
                      finished_at = clock_timestamp()
                WHERE tk.run_id = r.id AND tk.state IN ('waiting', 'ready', 'dispatched', 'running')
               RETURNING tk.id)
    INSERT INTO parflow.event (run_id, task_id, kind) SELECT r.id, u.id, 'cancelled' FROM u;
    UPDATE parflow.run rn SET state = 'cancelled', finished_at = clock_timestamp() WHERE rn.id = r.id;
    PERFORM parflow._announce(r.id, 'cancelled');
    PERFORM parflow._wake();
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_cancel(bigint) IS 'Cancel a run: its unfinished tasks are cancelled and agents holding them are told to stop';

CREATE FUNCTION @extschema@.parflow_pause(run bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
DECLARE
    r parflow.run;
BEGIN
    r := parflow._run_in(run, '{running}', 'pause');
    UPDATE parflow.run rn SET state = 'paused' WHERE rn.id = r.id;
    PERFORM parflow._announce(r.id, 'paused');
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_pause(bigint) IS 'Pause a run: nothing new is dispatched; tasks at work finish';

CREATE FUNCTION @extschema@.parflow_resume(run bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
DECLARE
    r parflow.run;
BEGIN
    r := parflow._run_in(run, '{paused}', 'resume');
    UPDATE parflow.run rn SET state = 'running' WHERE rn.id = r.id;
    PERFORM parflow._announce(r.id, 'resumed');
    PERFORM parflow._finish_if_done(r.id);
    PERFORM parflow._check_blocked(r.id);
    PERFORM parflow._wake();
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_resume(bigint) IS 'Resume a paused run';

-- Re-open failed tasks of a run with fresh attempts: their dependents never
-- started and wait for them as they were; a blocked run runs again.
-- Returns how many tasks were re-opened.
CREATE FUNCTION parflow._reopen(r parflow.run, tasks bigint[], detail jsonb) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
    nfailed integer;
BEGIN
    SELECT count(*) INTO nfailed FROM parflow.task tk
     WHERE tk.run_id = r.id AND tk.id = ANY (tasks) AND tk.state = 'failed';
    WITH u AS (UPDATE parflow.task tk SET state = CASE WHEN tk.pending = 0 THEN 'ready' ELSE 'waiting' END,
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
        PERFORM parflow._wake();
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION parflow._reopen(parflow.run, bigint[], jsonb) IS 'Internal: re-open failed (or fail_fast-cancelled) tasks with fresh attempts (retry, restart_group)';

CREATE FUNCTION @extschema@.parflow_retry(run bigint, stage text) RETURNS void
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
     WHERE tk.run_id = r.id AND s.name = stage FOR UPDATE OF tk;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % has no stage "%"', r.id, stage USING ERRCODE = 'undefined_object';
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

CREATE FUNCTION @extschema@.parflow_restart_group(run bigint, group_name text) RETURNS void
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

-- The state of a group of a run from the states of its tasks.
CREATE FUNCTION parflow._group_state(states text[]) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN 'failed' = ANY (states) THEN 'failed'
        WHEN states <@ ARRAY['succeeded', 'skipped'] THEN 'succeeded'
        WHEN states && ARRAY['dispatched', 'running'] THEN 'running'
        WHEN 'cancelled' = ANY (states) AND NOT states && ARRAY['waiting', 'ready'] THEN 'cancelled'
        WHEN states && ARRAY['succeeded', 'ready'] THEN 'running'
        ELSE 'waiting' END
$$;
COMMENT ON FUNCTION parflow._group_state(text[]) IS 'Internal: a group''s state from its tasks'' states (failed, succeeded, running, cancelled, waiting)';

-- One group of a run as JSON: its state, each stage's state, the outputs of
-- the stages that succeeded, the skipped ones with their reason.
CREATE FUNCTION parflow._group_json(p_run bigint, ver bigint, p_group integer) RETURNS jsonb
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
      JOIN parflow.task t ON t.run_id = p_run AND t.group_ord = g.ord
      JOIN parflow.stage s ON s.version_id = ver AND s.ord = t.stage_ord
     WHERE g.version_id = ver AND g.ord = p_group
     GROUP BY g.name
$$;
COMMENT ON FUNCTION parflow._group_json(bigint, bigint, integer) IS 'Internal: a group of a run as JSON (state, stage states, outputs, skipped stages)';

CREATE FUNCTION @extschema@.parflow_group_result(run bigint, group_name text) RETURNS jsonb
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

CREATE FUNCTION @extschema@.parflow_result(run bigint) RETURNS jsonb
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
                            WHERE t.run_id = r.id AND t.state = 'succeeded'),
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

CREATE FUNCTION @extschema@.parflow_report(run bigint)
RETURNS TABLE(workflow text, version integer, state text, parallel boolean,
              planned interval, actual interval, work interval,
              realised_savings_pct numeric, off_plan_pct numeric)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp AS $$
DECLARE
    r parflow.run;
BEGIN
    r := parflow._run_get(run);
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
    'Planned against actual makespan of a run, the work it did (the one-at-a-time time) and the savings realised';

------------------------------------------------------------------------------
-- The agent API
------------------------------------------------------------------------------

-- Whether the calling role may claim tasks of an agent kind: raises if not.
-- Every role may in this version; later versions map roles to kinds.
CREATE FUNCTION parflow._may_claim(agent text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
END
$$;
COMMENT ON FUNCTION parflow._may_claim(text) IS 'Internal: raise unless the calling role may claim tasks of this agent kind (every role may, in 0.1.0)';

CREATE FUNCTION @extschema@.parflow_claim(agent text, worker text, lease interval DEFAULT '5 min')
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

CREATE FUNCTION @extschema@.parflow_heartbeat(task bigint, token uuid) RETURNS timestamptz
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

-- Refuse an output over parflow.max_output_size (54000).
CREATE FUNCTION parflow._check_output(task_id bigint, doc jsonb) RETURNS void
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

CREATE FUNCTION @extschema@.parflow_complete(task bigint, token uuid, output jsonb DEFAULT '{}')
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
    PERFORM parflow._wake();
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_complete(bigint, uuid, jsonb) IS 'Report a held task done with its output; its dependents become ready';

CREATE FUNCTION @extschema@.parflow_fail(task bigint, token uuid, error text, retryable boolean DEFAULT true,
                                          output jsonb DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, parflow, pg_temp
    SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    t parflow.task;
    st parflow.stage;
    err text := coalesce(error, 'no error text');
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

CREATE FUNCTION @extschema@.parflow_release(task bigint, token uuid) RETURNS void
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

------------------------------------------------------------------------------
-- The dispatcher's pass (called by the background worker)
------------------------------------------------------------------------------

-- Make room for P0 tasks (see _dispatch); returns the slots freed at once
-- (dispatched tasks taken back); running ones are sent an interrupt and free
-- theirs when their agents release them.
CREATE FUNCTION parflow._preempt(global_free integer) RETURNS integer
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

-- Generic plans: the agent API and the pass run the same statements
-- thousands of times, and custom plans for a run just started (no
-- statistics yet) can scan the whole run per completion.
CREATE FUNCTION parflow._dispatch() RETURNS integer
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
COMMENT ON FUNCTION parflow._dispatch() IS
    'Internal, the dispatcher''s pass: expire leases, then dispatch ready tasks by run priority and rank under every cap, one NOTIFY per task';

------------------------------------------------------------------------------
-- Privileges
------------------------------------------------------------------------------

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA parflow FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.parflow_define(text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.parflow_define(text, jsonb) TO parflow_operator;
GRANT SELECT ON parflow.workflow, parflow.workflow_version, parflow.stage_group, parflow.group_dep,
                parflow.stage, parflow.stage_dep, parflow.affinity,
                parflow.runs, parflow.tasks, parflow.events
   TO parflow_reader, parflow_operator;

-- Operators start runs and read reports; agents only call the agent API.
REVOKE ALL ON FUNCTION @extschema@.parflow_start(text, text[], integer, boolean, jsonb),
                       @extschema@.parflow_failures(bigint),
                       @extschema@.parflow_cancel(bigint), @extschema@.parflow_pause(bigint),
                       @extschema@.parflow_resume(bigint), @extschema@.parflow_retry(bigint, text),
                       @extschema@.parflow_restart_group(bigint, text), @extschema@.parflow_report(bigint),
                       @extschema@.parflow_claim(text, text, interval),
                       @extschema@.parflow_heartbeat(bigint, uuid),
                       @extschema@.parflow_complete(bigint, uuid, jsonb),
                       @extschema@.parflow_fail(bigint, uuid, text, boolean, jsonb),
                       @extschema@.parflow_release(bigint, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.parflow_start(text, text[], integer, boolean, jsonb),
                          @extschema@.parflow_failures(bigint),
                          @extschema@.parflow_cancel(bigint), @extschema@.parflow_pause(bigint),
                          @extschema@.parflow_resume(bigint), @extschema@.parflow_retry(bigint, text),
                          @extschema@.parflow_restart_group(bigint, text), @extschema@.parflow_report(bigint)
   TO parflow_operator;
REVOKE ALL ON FUNCTION @extschema@.parflow_group_result(bigint, text), @extschema@.parflow_result(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.parflow_report(bigint), @extschema@.parflow_failures(bigint),
                          @extschema@.parflow_group_result(bigint, text), @extschema@.parflow_result(bigint)
   TO parflow_reader, parflow_operator;
GRANT EXECUTE ON FUNCTION @extschema@.parflow_claim(text, text, interval),
                          @extschema@.parflow_heartbeat(bigint, uuid),
                          @extschema@.parflow_complete(bigint, uuid, jsonb),
                          @extschema@.parflow_fail(bigint, uuid, text, boolean, jsonb),
                          @extschema@.parflow_release(bigint, uuid) TO parflow_agent;

SELECT pg_catalog.pg_extension_config_dump('parflow.workflow', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.workflow_version', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.stage_group', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.group_dep', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.stage', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.stage_dep', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.affinity', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.run', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.task', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.run_group', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.run_remaining', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.event', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.workflow_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.workflow_version_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.stage_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.run_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.task_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.event_id_seq', '');
