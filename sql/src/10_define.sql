-- parflow definitions: spec validation and parflow_define.  The spec is
-- checked set-based in PL/pgSQL (keys, JSON types, names, intervals) so that
-- 100k stages validate fast; cycles are found and named in C
-- (parflow._check_version).

CREATE OR REPLACE FUNCTION parflow._nearest(word text, candidates text[]) RETURNS text
    AS 'MODULE_PATHNAME', 'parflow_nearest'
    LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION parflow._nearest(text, text[]) IS 'Internal: the candidate closest to word by edit distance, or NULL when none is close';

CREATE OR REPLACE FUNCTION parflow._check_version(version_id bigint) RETURNS void
    AS 'MODULE_PATHNAME', 'parflow_check_version'
    LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION parflow._check_version(bigint) IS 'Internal: load a version''s graph and reject cycles, naming them';

-- Raise 22023 for a spec problem.
CREATE OR REPLACE FUNCTION parflow._spec_error(msg text, detail text DEFAULT NULL, hint text DEFAULT NULL)
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
CREATE OR REPLACE FUNCTION parflow._json_kind(v jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(v)
        WHEN 'object' THEN 'an object' WHEN 'array' THEN 'an array'
        WHEN 'string' THEN 'a string' WHEN 'number' THEN 'a number'
        WHEN 'boolean' THEN 'a boolean' ELSE 'null' END
$$;
COMMENT ON FUNCTION parflow._json_kind(jsonb) IS 'Internal: "a string", "an array"... for error details';

-- Check a list of JSON objects against a shape: {key: type} with types
-- string, boolean, integer, strings (array of strings), array, object,
-- interval.
-- labels[i] names objs[i] in messages.  Raises the first problem found.
CREATE OR REPLACE FUNCTION parflow._check_shape(labels text[], objs jsonb[], shape jsonb, required text[])
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
            WHEN 'object' THEN jsonb_typeof(e.value) = 'object'
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
                            WHEN 'object' THEN 'a JSON object'
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
CREATE OR REPLACE FUNCTION parflow._check_names(kind text, labels text[], names text[], maxlen integer)
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
CREATE OR REPLACE FUNCTION parflow._interval(v text, what text, allow_zero boolean DEFAULT false,
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

-- enable_nestloop is off because the rows just written have no statistics
-- yet: the planner would pick nested loops that are quadratic in stages.
CREATE OR REPLACE FUNCTION @extschema@.parflow_define(name text, spec jsonb) RETURNS bigint
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
    crules    jsonb[];
    clabels   text[];
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
        '{"groups": "array", "max_parallel": "integer", "affinity": "array", "concurrency": "array",
          "description": "string"}',
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
          "max_route_backs": "integer", "description": "string", "wait": "object", "workflow": "string",
          "map": "object"}',
        ARRAY['name']);
    PERFORM parflow._check_names('stage', slabels, snames, 200);
    -- What does the work: an agent, an event (a wait stage), or a child run
    -- of another workflow (a sub-workflow stage).
    SELECT i, ARRAY(SELECT k FROM unnest(ARRAY['agent', 'wait', 'workflow']) k WHERE s ? k) AS ks INTO r
      FROM unnest(stages) WITH ORDINALITY u(s, i)
     WHERE (s ? 'agent')::integer + (s ? 'wait')::integer + (s ? 'workflow')::integer <> 1 ORDER BY i LIMIT 1;
    IF FOUND THEN
        IF cardinality(r.ks) > 1 THEN
            PERFORM parflow._spec_error(format('%s has both "%s" and "%s"', slabels[r.i], r.ks[1], r.ks[2]), NULL,
                'A stage is worked by an agent, awaits an event ("wait"), or runs another workflow ("workflow"): keep one.');
        END IF;
        PERFORM parflow._spec_error(format('%s lacks required key "agent"', slabels[r.i]), NULL,
            'Name the agent kind that works the stage, give "wait": {"event": ...} for a stage that awaits an approval or an outside event, or "workflow" for one that runs another workflow.');
    END IF;
    SELECT i, s->>'workflow' AS w INTO r FROM unnest(stages) WITH ORDINALITY u(s, i)
     WHERE s ? 'workflow' AND (s->>'workflow' = wf_name
           OR NOT EXISTS (SELECT FROM parflow.workflow w WHERE w.name = s->>'workflow'))
     ORDER BY i LIMIT 1;
    IF FOUND THEN
        IF r.w = wf_name THEN
            PERFORM parflow._spec_error(format('%s runs its own workflow "%s"', slabels[r.i], r.w), NULL,
                'A sub-workflow stage runs another workflow as a child run; a workflow cannot contain itself.');
        END IF;
        near := parflow._nearest(r.w, ARRAY(SELECT w.name FROM parflow.workflow w ORDER BY w.name LIMIT 10000));
        PERFORM parflow._spec_error(format('%s runs unknown workflow "%s"', slabels[r.i], r.w), NULL,
            coalesce(format('Did you mean "%s"?', near), 'Define the workflow it runs first.'));
    END IF;
    -- ... and no workflow it runs, through the latest versions, runs this one.
    WITH RECURSIVE latest AS (
        SELECT DISTINCT ON (w.name) w.name, v.id FROM parflow.workflow w
          JOIN parflow.workflow_version v ON v.workflow_id = w.id ORDER BY w.name, v.version DESC),
    walk (wf, path) AS (
        SELECT DISTINCT s->>'workflow', ARRAY[wf_name, s->>'workflow'] FROM unnest(stages) s WHERE s ? 'workflow'
        UNION ALL
        SELECT st.sub_workflow, walk.path || st.sub_workflow
          FROM walk JOIN latest l ON l.name = walk.wf
          JOIN parflow.stage st ON st.version_id = l.id AND st.sub_workflow IS NOT NULL
         WHERE walk.wf <> wf_name AND (st.sub_workflow = wf_name OR NOT st.sub_workflow = ANY (walk.path)))
    SELECT array_to_string(path, ' -> ') AS p INTO r FROM walk WHERE wf = wf_name LIMIT 1;
    IF FOUND THEN
        PERFORM parflow._spec_error(format('workflow "%s" would contain itself: %s', wf_name, r.p), NULL,
            'A sub-workflow stage runs another workflow as a child run: break the cycle.');
    END IF;
    SELECT i INTO r FROM unnest(stages) WITH ORDINALITY u(s, i)
     WHERE s ? 'agent' AND NOT s ? 'estimate' ORDER BY i LIMIT 1;
    IF FOUND THEN
        PERFORM parflow._spec_error(format('%s lacks required key "estimate"', slabels[r.i]), NULL,
            'Give how long the stage takes, such as "45 min": the plan is built from the estimates.');
    END IF;
    -- A wait stage: {"event": E, "timeout": T, "on_timeout": "fail" | "skip"}.
    PERFORM parflow._check_shape(ARRAY(SELECT format('wait of %s', l) FROM unnest(stages, slabels) u(s, l)
                                        WHERE s ? 'wait'),
                                 ARRAY(SELECT s->'wait' FROM unnest(stages) s WHERE s ? 'wait'),
                                 '{"event": "string", "timeout": "interval", "on_timeout": "string"}',
                                 ARRAY['event']);
    SELECT i, s->'wait'->>'event' AS e INTO r FROM unnest(stages) WITH ORDINALITY u(s, i)
     WHERE btrim(s->'wait'->>'event') = '' OR octet_length(s->'wait'->>'event') > 200
        OR s->'wait'->>'event' ~ '[[:cntrl:]]' OR s->'wait'->>'event' = '*'
     ORDER BY i LIMIT 1;
    IF FOUND THEN
        PERFORM parflow._spec_error(format('event of %s must be a non-empty name of at most 200 bytes without control characters, other than "*"', slabels[r.i]),
            format('Found "%s".', r.e), 'Name what the stage awaits, such as "design_approved"; parflow_signal(run, event) delivers it.');
    END IF;
    SELECT i, s->'wait'->>'on_timeout' AS v, s->'wait' ? 'timeout' AS has_timeout INTO r
      FROM unnest(stages) WITH ORDINALITY u(s, i)
     WHERE s->'wait' ? 'on_timeout'
       AND (s->'wait'->>'on_timeout' NOT IN ('fail', 'skip') OR NOT s->'wait' ? 'timeout')
     ORDER BY i LIMIT 1;
    IF FOUND THEN
        IF NOT r.has_timeout THEN
            PERFORM parflow._spec_error(format('on_timeout of %s needs a timeout', slabels[r.i]), NULL,
                'Give "timeout" in "wait", such as "2 days", or remove "on_timeout".');
        END IF;
        PERFORM parflow._spec_error(format('on_timeout of %s must be "fail" or "skip"', slabels[r.i]),
            format('Found "%s".', r.v));
    END IF;
    SELECT i, k, s ? 'wait' AS waits INTO r FROM unnest(stages) WITH ORDINALITY u(s, i),
           unnest(ARRAY['max_attempts', 'retry_backoff', 'timeout']) k
     WHERE (s ? 'wait' OR s ? 'workflow') AND s ? k ORDER BY i LIMIT 1;
    IF FOUND THEN
        PERFORM parflow._spec_error(format('%s %s: "%s" does not apply to it', slabels[r.i],
                                           CASE WHEN r.waits THEN 'awaits an event' ELSE 'runs a sub-workflow' END, r.k), NULL,
            CASE WHEN r.k = 'timeout' AND r.waits THEN 'Give how long it may await in "wait": {"timeout": ...}.'
                 WHEN r.waits THEN 'No agent works a wait stage, so it makes no attempts: remove the key.'
                 ELSE 'No agent works a sub-workflow stage: its child run''s stages have their own attempts and timeouts.' END);
    END IF;
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
    -- A map stage: {"over": S, "key": K, "max": M, "expect": E}, worked by an agent.
    PERFORM parflow._check_shape(ARRAY(SELECT format('map of %s', l) FROM unnest(stages, slabels) u(s, l)
                                        WHERE s ? 'map'),
                                 ARRAY(SELECT s->'map' FROM unnest(stages) s WHERE s ? 'map'),
                                 '{"over": "string", "key": "string", "max": "integer", "expect": "integer"}',
                                 ARRAY['over']);
    SELECT i INTO r FROM unnest(stages) WITH ORDINALITY u(s, i)
     WHERE s ? 'map' AND NOT s ? 'agent' ORDER BY i LIMIT 1;
    IF FOUND THEN
        PERFORM parflow._spec_error(format('map of %s needs an agent', slabels[r.i]), NULL,
            'A map stage runs its agent once per element of an array; wait and sub-workflow stages cannot be mapped.');
    END IF;
    SELECT i, k, (s->'map'->>k)::numeric AS v INTO r
      FROM unnest(stages) WITH ORDINALITY u(s, i), unnest(ARRAY['max', 'expect']) k
     WHERE s->'map' ? k AND ((s->'map'->>k)::numeric < 1
                             OR (k = 'max' AND (s->'map'->>k)::numeric > current_setting('parflow.max_map_width')::integer)
                             OR (k = 'expect' AND (s->'map'->>k)::numeric
                                 > coalesce((s->'map'->>'max')::numeric, current_setting('parflow.max_map_width')::integer)))
     ORDER BY i LIMIT 1;
    IF FOUND THEN
        PERFORM parflow._spec_error(format('%s of map of %s must be between 1 and %s', r.k, slabels[r.i],
                CASE WHEN r.k = 'max' THEN current_setting('parflow.max_map_width') ELSE 'its max' END),
            format('Found %s.', r.v),
            CASE WHEN r.k = 'max' THEN 'parflow.max_map_width bounds every map stage''s max.' END);
    END IF;
    SELECT i INTO r FROM unnest(stages) WITH ORDINALITY u(s, i)
     WHERE s ? 'map' AND btrim(s->'map'->>'key') = '' ORDER BY i LIMIT 1;
    IF FOUND THEN
        PERFORM parflow._spec_error(format('key of map of %s must not be empty', slabels[r.i]), NULL,
            'Name the key of the other stage''s output that holds the array, or leave "key" out to map over the output itself.');
    END IF;
    -- Intervals (the casts raise clear errors themselves).
    PERFORM parflow._interval(s->>'estimate', format('estimate of %s', l), NOT s ? 'agent')
       FROM unnest(stages, slabels) u(s, l) WHERE s ? 'estimate';
    PERFORM parflow._interval(s->>'retry_backoff', format('retry_backoff of %s', l), true, '1 day')
       FROM unnest(stages, slabels) u(s, l) WHERE s ? 'retry_backoff';
    PERFORM parflow._interval(s->>'timeout', format('timeout of %s', l))
       FROM unnest(stages, slabels) u(s, l) WHERE s ? 'timeout';
    PERFORM parflow._interval(s->'wait'->>'timeout', format('wait timeout of %s', l))
       FROM unnest(stages, slabels) u(s, l) WHERE s->'wait' ? 'timeout';
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
                               max_route_backs, description, wait_event, wait_timeout, wait_on_timeout,
                               sub_workflow, map_key, map_max, map_expect)
    SELECT ver_id, (row_number() OVER (ORDER BY gi, si)) - 1, gi - 1, si - 1,
           s->>'name', s->>'agent', coalesce((s->>'estimate')::interval, interval '0'), s->>'when',
           ARRAY(SELECT jsonb_array_elements_text(coalesce(s->'depends_on', '[]'))), s->>'verifies',
           ARRAY(SELECT jsonb_array_elements_text(coalesce(s->'produces', '[]'))),
           ARRAY(SELECT jsonb_array_elements_text(coalesce(s->'consumes', '[]'))),
           coalesce((s->>'max_attempts')::numeric::integer, 3),
           coalesce((s->>'retry_backoff')::interval, interval '5 s'),
           (s->>'timeout')::interval,
           coalesce((s->>'max_route_backs')::numeric::integer, 3),
           s->>'description', s->'wait'->>'event', (s->'wait'->>'timeout')::interval,
           CASE WHEN s->'wait' ? 'timeout' THEN coalesce(s->'wait'->>'on_timeout', 'fail') END,
           s->>'workflow', s->'map'->>'key', (s->'map'->>'max')::numeric::integer,
           CASE WHEN s ? 'map' THEN coalesce((s->'map'->>'expect')::numeric::integer, 1) END
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
    SELECT st.name, v.name AS v INTO r
      FROM parflow.stage st JOIN parflow.stage v ON v.version_id = ver_id AND v.ord = st.verifies_ord
     WHERE st.version_id = ver_id AND v.agent IS NULL
     ORDER BY st.ord LIMIT 1;
    IF FOUND THEN
        PERFORM parflow._spec_error(format('stage "%s" verifies stage "%s", which no agent works', r.name, r.v), NULL,
            'A failed verification sends the stage it verifies back to its agent, and a wait or sub-workflow stage has none: verify the stage whose work is checked.');
    END IF;

    -- map over: another, existing stage; a map stage neither verifies nor is verified.
    UPDATE parflow.stage st SET map_over_ord = o.ord
      FROM unnest(stages) WITH ORDINALITY u(s, i) JOIN parflow.stage o ON o.version_id = ver_id AND o.name = s->'map'->>'over'
     WHERE s ? 'map' AND st.version_id = ver_id AND st.ord = i - 1;
    SELECT u.i, s->'map'->>'over' AS o INTO r FROM unnest(stages) WITH ORDINALITY u(s, i)
      JOIN parflow.stage st ON st.version_id = ver_id AND st.ord = u.i - 1
     WHERE s ? 'map' AND (st.map_over_ord IS NULL OR st.map_over_ord = st.ord) ORDER BY u.i LIMIT 1;
    IF FOUND THEN
        IF r.o = snames[r.i] THEN
            PERFORM parflow._spec_error(format('%s maps over itself', slabels[r.i]), NULL,
                'A map stage runs once per element of an array in the output of a stage it depends on.');
        END IF;
        near := parflow._nearest(r.o, snames);
        PERFORM parflow._spec_error(format('%s maps over unknown stage "%s"', slabels[r.i], r.o), NULL,
            CASE WHEN near IS NOT NULL THEN format('Did you mean "%s"?', near) END);
    END IF;
    SELECT st.name, v.name AS v INTO r FROM parflow.stage st JOIN parflow.stage v ON v.version_id = ver_id
        AND (v.ord = st.verifies_ord OR st.ord = v.verifies_ord)
     WHERE st.version_id = ver_id AND st.map_over_ord IS NOT NULL ORDER BY st.ord LIMIT 1;
    IF FOUND THEN
        PERFORM parflow._spec_error(format('map stage "%s" cannot verify or be verified (by "%s")', r.name, r.v), NULL,
            'A route-back would send every instance back; verify the stage that maps over its output instead.');
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

    -- Concurrency rules: a name, a key of the run input, a max, and stages
    -- of this workflow; one name means one limit, so its key and max agree
    -- with the rule of that name in the latest version of every other
    -- workflow (names are unique within a spec).
    IF spec ? 'concurrency' THEN
        SELECT array_agg(c ORDER BY i),
               array_agg(CASE WHEN jsonb_typeof(c->'name') = 'string' AND btrim(c->>'name') <> ''
                              THEN format('concurrency rule "%s"', c->>'name')
                              ELSE format('concurrency rule #%s', i) END ORDER BY i)
          INTO crules, clabels FROM jsonb_array_elements(spec->'concurrency') WITH ORDINALITY e(c, i);
        PERFORM parflow._check_shape(clabels, crules,
            '{"name": "string", "key": "string", "max": "integer", "stages": "strings", "description": "string"}',
            '{}');
        SELECT i, k INTO r FROM unnest(crules) WITH ORDINALITY u(c, i), unnest(ARRAY['name', 'key', 'max']) k
         WHERE NOT c ? k ORDER BY i LIMIT 1;
        IF FOUND THEN
            PERFORM parflow._spec_error(format('%s lacks required key "%s"', clabels[r.i], r.k), NULL,
                'A concurrency rule needs "name", "key" (a top-level key of the run input) and "max", for example {"name": "deploys", "key": "repo", "max": 1}.');
        END IF;
        PERFORM parflow._check_names('concurrency rule', clabels, ARRAY(SELECT c->>'name' FROM unnest(crules) c), 200);
        SELECT i INTO r FROM unnest(crules) WITH ORDINALITY u(c, i)
         WHERE btrim(c->>'key') = '' ORDER BY i LIMIT 1;
        IF FOUND THEN
            PERFORM parflow._spec_error(format('key of %s must not be empty', clabels[r.i]), NULL,
                'Name the top-level key of the run input whose value the rule shares, for example "repo".');
        END IF;
        SELECT i, (c->>'max')::numeric AS v INTO r FROM unnest(crules) WITH ORDINALITY u(c, i)
         WHERE (c->>'max')::numeric < 1 ORDER BY i LIMIT 1;
        IF FOUND THEN
            PERFORM parflow._spec_error(format('max of %s must be at least 1', clabels[r.i]), format('Found %s.', r.v),
                'max is how many tasks of the rule''s stages may be at work at once per value of its key.');
        END IF;
        SELECT i INTO r FROM unnest(crules) WITH ORDINALITY u(c, i)
         WHERE jsonb_array_length(c->'stages') = 0 ORDER BY i LIMIT 1;
        IF FOUND THEN
            PERFORM parflow._spec_error(format('%s lists no stages', clabels[r.i]), NULL,
                'List the stages the rule bounds in "stages", or omit "stages" to bound every stage.');
        END IF;
        SELECT i, x AS stage INTO r FROM unnest(crules) WITH ORDINALITY u(c, i),
               jsonb_array_elements_text(coalesce(c->'stages', '[]')) x
         WHERE NOT x = ANY (snames) ORDER BY i LIMIT 1;
        IF FOUND THEN
            near := parflow._nearest(r.stage, snames);
            PERFORM parflow._spec_error(format('%s lists unknown stage "%s"', clabels[r.i], r.stage), NULL,
                CASE WHEN near IS NOT NULL THEN format('Did you mean "%s"?', near)
                     ELSE 'List stages of this workflow.' END);
        END IF;
        -- (definitions with rules one at a time, so two cannot disagree unseen)
        LOCK TABLE parflow.concurrency IN SHARE ROW EXCLUSIVE MODE;
        SELECT a.l, a.c->>'key' AS k1, (a.c->>'max')::numeric AS m1,
               oc.key AS k2, oc.max_concurrent AS m2, format('workflow "%s"', ow.name) AS other INTO r
          FROM unnest(crules, clabels) WITH ORDINALITY a(c, l, i)
          JOIN parflow.concurrency oc ON oc.name = a.c->>'name'
          JOIN parflow.workflow_version ov ON ov.id = oc.version_id
          JOIN parflow.workflow ow ON ow.id = ov.workflow_id
         WHERE ow.id <> wf_id
           AND ov.version = (SELECT max(v2.version) FROM parflow.workflow_version v2 WHERE v2.workflow_id = ow.id)
           AND (oc.key <> a.c->>'key' OR oc.max_concurrent <> (a.c->>'max')::numeric)
         ORDER BY a.i, ow.name LIMIT 1;
        IF FOUND THEN
            PERFORM parflow._spec_error(format('%s disagrees with the rule of that name in %s', r.l, r.other),
                format('This spec has key "%s" and max %s; %s has key "%s" and max %s.', r.k1, r.m1, r.other, r.k2, r.m2),
                'Rules of one name share one limit: give them the same key and max, or another name.');
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

    INSERT INTO parflow.concurrency (version_id, ord, name, key, max_concurrent, stage_ords)
    SELECT ver_id, i - 1, c->>'name', c->>'key', (c->>'max')::numeric::integer,
           CASE WHEN c ? 'stages' THEN ARRAY(SELECT DISTINCT array_position(snames, x) - 1
                                               FROM jsonb_array_elements_text(c->'stages') x ORDER BY 1) END
      FROM unnest(crules) WITH ORDINALITY u(c, i);

    -- A map stage's "over" is one of its dependencies: a stage edge, or a
    -- stage of a group its group waits for.
    SELECT st.name, o.name AS o INTO r FROM parflow.stage st JOIN parflow.stage o ON o.version_id = ver_id AND o.ord = st.map_over_ord
     WHERE st.version_id = ver_id AND st.map_over_ord IS NOT NULL
       AND NOT EXISTS (SELECT FROM parflow.stage_dep d WHERE d.version_id = ver_id AND d.stage_ord = st.ord AND d.dep_ord = o.ord)
       AND NOT EXISTS (SELECT FROM parflow.group_dep gd WHERE gd.version_id = ver_id AND gd.group_ord = st.group_ord
                          AND gd.dep_ord = o.group_ord)
     ORDER BY st.ord LIMIT 1;
    IF FOUND THEN
        PERFORM parflow._spec_error(format('map stage "%s" maps over "%s", which is not one of its dependencies', r.name, r.o), NULL,
            format('Add "%s" to its depends_on, or put it in a group its group depends on.', r.o));
    END IF;

    -- Cycles, through group barriers and stage edges alike (raises).
    PERFORM parflow._check_version(ver_id);
    RETURN ver;
END
$$;
COMMENT ON FUNCTION @extschema@.parflow_define(text, jsonb) IS
    'Create a new version of a workflow from a JSON spec, after validating all of it; returns the version number';

-- The id of the current (latest) version of a workflow, or an error.
CREATE OR REPLACE FUNCTION parflow._current_version(workflow text) RETURNS bigint
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
