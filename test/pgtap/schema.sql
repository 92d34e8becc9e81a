-- test/pgtap/schema.sql -- the structure of the parflow extension: schema,
-- definition tables and their keys, the public functions and their
-- signatures, SECURITY DEFINER hygiene, comments, roles, privileges and
-- pg_dump registration.
--
-- Where an assertion is about a rule ("every function of the extension ...")
-- it is written over pg_depend (the objects that belong to the extension), not
-- over a fixed list, so that it keeps holding, and keeps checking, as the
-- extension grows.  Such assertions use is_empty() on a query that returns the
-- offending objects, so that a failure lists them.

BEGIN;
CREATE EXTENSION IF NOT EXISTS parflow;

SELECT plan(62);

-- The schema the extension was created in (where the public functions live).
SELECT extnamespace::regnamespace::name AS extschema
  FROM pg_extension WHERE extname = 'parflow' \gset

-- Every object that belongs to the extension, with its catalog, for the
-- generic checks below.
CREATE TEMP VIEW pf_ext_objects AS
SELECT d.classid, d.objid, pg_describe_object(d.classid, d.objid, 0) AS object
  FROM pg_depend d
  JOIN pg_extension e ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid
 WHERE e.extname = 'parflow' AND d.deptype = 'e';

-- Functions and relations of the extension.
CREATE TEMP VIEW pf_ext_functions AS
SELECT p.oid, p.oid::regprocedure AS func, n.nspname AS schema, p.proname, p.prosecdef, p.proconfig
  FROM pf_ext_objects o
  JOIN pg_proc p ON o.classid = 'pg_proc'::regclass AND p.oid = o.objid
  JOIN pg_namespace n ON n.oid = p.pronamespace;

CREATE TEMP VIEW pf_ext_relations AS
SELECT c.oid, c.oid::regclass AS rel, n.nspname AS schema, c.relname, c.relkind
  FROM pf_ext_objects o
  JOIN pg_class c ON o.classid = 'pg_class'::regclass AND c.oid = o.objid
  JOIN pg_namespace n ON n.oid = c.relnamespace;

------------------------------------------------------------------------------
-- Schema and definition tables (9)
------------------------------------------------------------------------------

SELECT has_schema('parflow', 'schema parflow exists');
SELECT has_table('parflow', t, format('table parflow.%s exists', t))
  FROM unnest(ARRAY['workflow', 'workflow_version', 'stage_group', 'group_dep',
                    'stage', 'stage_dep', 'affinity']) t;
SELECT is(:'extschema'::name, 'public'::name, 'the extension is created in schema public here');

------------------------------------------------------------------------------
-- Keys and key columns (22)
------------------------------------------------------------------------------

-- Primary keys.
SELECT col_is_pk('parflow', 'workflow', ARRAY['id'], 'workflow: primary key (id)');
SELECT col_is_pk('parflow', 'workflow_version', ARRAY['id'], 'workflow_version: primary key (id)');
SELECT col_is_pk('parflow', 'stage_group', ARRAY['version_id', 'ord'], 'stage_group: primary key (version_id, ord)');
SELECT col_is_pk('parflow', 'group_dep', ARRAY['version_id', 'group_ord', 'dep_ord'],
                 'group_dep: primary key (version_id, group_ord, dep_ord)');
SELECT col_is_pk('parflow', 'stage', ARRAY['id'], 'stage: primary key (id)');
SELECT col_is_pk('parflow', 'stage_dep', ARRAY['version_id', 'stage_ord', 'dep_ord'],
                 'stage_dep: primary key (version_id, stage_ord, dep_ord)');
SELECT col_is_pk('parflow', 'affinity', ARRAY['version_id', 'ord'], 'affinity: primary key (version_id, ord)');

-- Natural keys.
SELECT col_is_unique('parflow', 'workflow', ARRAY['name'], 'workflow names are unique');
SELECT col_is_unique('parflow', 'workflow_version', ARRAY['workflow_id', 'version'],
                     'one row per (workflow, version number)');
SELECT col_is_unique('parflow', 'stage', ARRAY['version_id', 'ord'], 'stage: unique (version_id, ord)');
SELECT col_is_unique('parflow', 'stage', ARRAY['version_id', 'name'], 'stage names are unique within a version');

-- References between definition tables.  (stage_dep has none on purpose:
-- parflow_define, its only writer, joins every edge to its stages;
-- plan_invariants.sql checks its rows against the specs.)
SELECT fk_ok('parflow', 'workflow_version', ARRAY['workflow_id'], 'parflow', 'workflow', ARRAY['id'],
             'workflow_version.workflow_id references workflow');
SELECT fk_ok('parflow', 'stage', ARRAY['version_id', 'group_ord'], 'parflow', 'stage_group', ARRAY['version_id', 'ord'],
             'stage (version_id, group_ord) references stage_group');
SELECT fk_ok('parflow', 'stage_group', ARRAY['version_id'], 'parflow', 'workflow_version', ARRAY['id'],
             'stage_group.version_id references workflow_version');
SELECT fk_ok('parflow', 'group_dep', ARRAY['version_id', 'group_ord'], 'parflow', 'stage_group', ARRAY['version_id', 'ord'],
             'group_dep (version_id, group_ord) references stage_group');
SELECT fk_ok('parflow', 'group_dep', ARRAY['version_id', 'dep_ord'], 'parflow', 'stage_group', ARRAY['version_id', 'ord'],
             'group_dep (version_id, dep_ord) references stage_group');
SELECT fk_ok('parflow', 'affinity', ARRAY['version_id'], 'parflow', 'workflow_version', ARRAY['id'],
             'affinity.version_id references workflow_version');

-- The columns the planner reads, with their types.
SELECT col_type_is('parflow', 'workflow_version', 'spec', 'jsonb', 'workflow_version.spec is jsonb');
SELECT col_type_is('parflow', 'workflow_version', 'max_parallel', 'integer', 'workflow_version.max_parallel is integer');
SELECT col_type_is('parflow', 'stage', 'estimate', 'interval', 'stage.estimate is an interval');
SELECT col_type_is('parflow', 'stage', 'when_flag', 'text', 'stage.when_flag is text');
SELECT col_type_is('parflow', 'affinity', 'agents', 'text[]', 'affinity.agents is text[]');

------------------------------------------------------------------------------
-- Public functions: existence, schema, signatures (9)
------------------------------------------------------------------------------

SELECT has_function(:'extschema', 'parflow_define', ARRAY['text', 'jsonb'],
                    'parflow_define(text, jsonb) is in the extension''s schema');
SELECT function_returns(:'extschema', 'parflow_define', ARRAY['text', 'jsonb'], 'bigint',
                        'parflow_define returns bigint');
SELECT has_function(:'extschema', 'parflow_plan', ARRAY['text', 'text[]', 'integer'],
                    'parflow_plan(text, text[], integer) is in the extension''s schema');
SELECT is(pg_get_function_result(format('%I.parflow_plan(text, text[], integer)', :'extschema')::regprocedure),
          'TABLE(stage text, agent text, group_name text, wave integer, est_start interval, est_finish interval, slack interval, critical boolean, optimal boolean, held_for text)',
          'parflow_plan returns the contract''s columns, then optimal and held_for (0.4.0)');
SELECT is(pg_get_function_arguments(format('%I.parflow_plan(text, text[], integer)', :'extschema')::regprocedure),
          'workflow text, flags text[] DEFAULT ''{}''::text[], max_parallel integer DEFAULT NULL::integer',
          'parflow_plan: flags defaults to {} and max_parallel to NULL');
SELECT has_function(:'extschema', 'parflow_estimate', ARRAY['text', 'text[]', 'integer'],
                    'parflow_estimate(text, text[], integer) is in the extension''s schema');
SELECT is(pg_get_function_result(format('%I.parflow_estimate(text, text[], integer)', :'extschema')::regprocedure),
          'TABLE(sequential interval, parallel interval, savings_pct numeric, critical_path interval, lower_bound interval, optimal boolean)',
          'parflow_estimate returns the contract''s columns, then optimal (0.4.0)');
SELECT is(pg_get_function_arguments(format('%I.parflow_estimate(text, text[], integer)', :'extschema')::regprocedure),
          'workflow text, flags text[] DEFAULT ''{}''::text[], max_parallel integer DEFAULT NULL::integer',
          'parflow_estimate: flags defaults to {} and max_parallel to NULL');

-- Every function of the extension outside schema parflow is a public API
-- function named parflow_* (nothing else lands in the user's schema).
SELECT is_empty($$
    SELECT func FROM pf_ext_functions
     WHERE schema <> 'parflow' AND proname NOT LIKE 'parflow\_%'
     ORDER BY 1
$$, 'every extension function outside schema parflow is named parflow_*');

------------------------------------------------------------------------------
-- SECURITY DEFINER hygiene (5)
------------------------------------------------------------------------------

SELECT is_definer(:'extschema', 'parflow_define', ARRAY['text', 'jsonb'], 'parflow_define is SECURITY DEFINER');

-- parflow_define: search_path is fixed by the function itself.
SELECT ok(EXISTS (SELECT FROM pg_proc p, unnest(p.proconfig) c
                   WHERE p.oid = format('%I.parflow_define(text, jsonb)', :'extschema')::regprocedure
                     AND c LIKE 'search\_path=%'),
          'parflow_define sets its own search_path (pg_proc.proconfig)');

-- Every SECURITY DEFINER function of the extension fixes a search_path that
-- names no schema an ordinary user can create objects in ("$user", public)
-- and lists pg_temp explicitly, last: when pg_temp is not listed it is
-- searched FIRST for relations and types, so a caller's temporary type (e.g.
-- a domain pg_temp.text with a CHECK calling the caller's function) would be
-- used inside the function, running the caller's code as the owner.
SELECT is_empty($$
    SELECT func, coalesce(sp, '(no search_path set)') AS search_path
      FROM (SELECT f.func, (SELECT substr(c, length('search_path=') + 1)
                              FROM unnest(f.proconfig) c WHERE c LIKE 'search\_path=%') AS sp
              FROM pf_ext_functions f WHERE f.prosecdef) d
     WHERE sp IS NULL
        OR sp ~* '(^|[ ,])("?\$user"?|"?public"?)([ ,]|$)'
        OR sp !~ '(^|[ ,])"?pg_temp"?\s*$'
     ORDER BY 1
$$, 'every SECURITY DEFINER function of the extension fixes search_path without $user/public and with pg_temp last');

-- The same, by behaviour: a member of parflow_operator whose session has a
-- temporary domain named "text" must not get its code run as the owner of
-- parflow_define.  The probe records current_user whenever it runs as
-- anyone but the caller.
CREATE ROLE pf_tap_schema_caller NOLOGIN;
GRANT parflow_operator TO pf_tap_schema_caller;
CREATE FUNCTION pg_temp.pf_tap_probe(v pg_catalog.text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF current_user <> 'pf_tap_schema_caller' THEN
        PERFORM pg_catalog.set_config('pf_tap.hijacked_as', current_user, true);
    END IF;
    RETURN true;
END
$$;
SET ROLE pf_tap_schema_caller;
DO $$
BEGIN
    CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (pg_temp.pf_tap_probe(VALUE));
    BEGIN
        PERFORM parflow_define('pf_tap_schema_probe',
            '{"groups": [{"name": "g", "stages": [{"name": "s", "agent": "a", "estimate": "1 min"}]}]}');
    EXCEPTION WHEN OTHERS THEN
        RAISE NOTICE 'parflow_define failed under the temporary domain: %', SQLERRM;
    END;
    DROP DOMAIN pg_temp.text;
END
$$;
RESET ROLE;
SELECT is(coalesce(nullif(current_setting('pf_tap.hijacked_as', true), ''), '(nobody)'), '(nobody)',
          'a caller''s temporary type is not used inside parflow_define (no code runs as its owner)');

-- No SECURITY DEFINER function is executable by PUBLIC.
SELECT is_empty($$
    SELECT func FROM pf_ext_functions
     WHERE prosecdef AND has_function_privilege('public', oid, 'EXECUTE')
     ORDER BY 1
$$, 'PUBLIC cannot execute any SECURITY DEFINER function of the extension');

------------------------------------------------------------------------------
-- Comments (1)
------------------------------------------------------------------------------

-- Every schema, function, table, view and materialized view of the extension
-- has a COMMENT.
SELECT is_empty($$
    SELECT o.object FROM pf_ext_objects o
     WHERE (o.classid = 'pg_proc'::regclass
            OR o.classid = 'pg_namespace'::regclass
            OR (o.classid = 'pg_class'::regclass
                AND (SELECT relkind FROM pg_class WHERE oid = o.objid) IN ('r', 'p', 'v', 'm', 'f')))
       AND NOT EXISTS (SELECT FROM pg_description d
                        WHERE d.classoid = o.classid AND d.objoid = o.objid AND d.objsubid = 0
                          AND btrim(d.description) <> '')
     ORDER BY 1
$$, 'every schema, function, table and view of the extension has a COMMENT');

------------------------------------------------------------------------------
-- Roles and privileges (14)
------------------------------------------------------------------------------

SELECT has_role(r, format('role %s exists', r))
  FROM unnest(ARRAY['parflow_agent', 'parflow_operator', 'parflow_reader']) r;
SELECT is_empty($$
    SELECT rolname FROM pg_roles
     WHERE rolname IN ('parflow_agent', 'parflow_operator', 'parflow_reader')
       AND (rolcanlogin OR rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls)
$$, 'the parflow roles are plain NOLOGIN group roles');

-- Who may define workflows.
SELECT ok(NOT has_function_privilege('public', format('%I.parflow_define(text, jsonb)', :'extschema'), 'EXECUTE'),
          'PUBLIC cannot execute parflow_define');
SELECT ok(has_function_privilege('parflow_operator', format('%I.parflow_define(text, jsonb)', :'extschema'), 'EXECUTE'),
          'parflow_operator can execute parflow_define');
SELECT ok(NOT has_function_privilege('parflow_reader', format('%I.parflow_define(text, jsonb)', :'extschema'), 'EXECUTE'),
          'parflow_reader cannot execute parflow_define');

-- Internal helpers (schema parflow) are not callable by PUBLIC.
SELECT is_empty($$
    SELECT func FROM pf_ext_functions
     WHERE schema = 'parflow' AND has_function_privilege('public', oid, 'EXECUTE')
     ORDER BY 1
$$, 'PUBLIC cannot execute any function in schema parflow');

-- No table of the extension is writable by the parflow roles or PUBLIC:
-- every change goes through the extension's functions.
SELECT is_empty($$
    SELECT r.rolname, t.rel, p.priv
      FROM pf_ext_relations t
     CROSS JOIN (VALUES ('parflow_agent'), ('parflow_operator'), ('parflow_reader'), ('public')) r(rolname)
     CROSS JOIN (VALUES ('INSERT'), ('UPDATE'), ('DELETE'), ('TRUNCATE')) p(priv)
     WHERE t.relkind IN ('r', 'p')
       AND has_table_privilege(r.rolname, t.oid, p.priv)
     ORDER BY 1, 2, 3
$$, 'no table of the extension is writable by parflow_agent, parflow_operator, parflow_reader or PUBLIC');

-- ... nor any of its sequences usable to burn identities.
SELECT is_empty($$
    SELECT r.rolname, t.rel
      FROM pf_ext_relations t
     CROSS JOIN (VALUES ('parflow_agent'), ('parflow_operator'), ('parflow_reader'), ('public')) r(rolname)
     WHERE t.relkind = 'S'
       AND (has_sequence_privilege(r.rolname, t.oid, 'USAGE') OR has_sequence_privilege(r.rolname, t.oid, 'UPDATE'))
     ORDER BY 1, 2
$$, 'no sequence of the extension is usable by the parflow roles or PUBLIC');

-- Readers and operators read the definitions.
SELECT table_privs_are('parflow', t, 'parflow_reader', ARRAY['SELECT'],
                       format('parflow_reader may only SELECT parflow.%s', t))
  FROM unnest(ARRAY['workflow', 'stage', 'stage_dep']) t;
SELECT is_empty($$
    SELECT r.rolname, t.t
      FROM unnest(ARRAY['workflow', 'workflow_version', 'stage_group', 'group_dep',
                        'stage', 'stage_dep', 'affinity']) t(t)
     CROSS JOIN (VALUES ('parflow_reader'), ('parflow_operator')) r(rolname)
     WHERE NOT has_table_privilege(r.rolname, format('parflow.%I', t.t), 'SELECT')
     ORDER BY 1, 2
$$, 'parflow_reader and parflow_operator can SELECT every definition table');

------------------------------------------------------------------------------
-- pg_dump: definitions are user data (2)
------------------------------------------------------------------------------

-- Every definition table is registered with pg_extension_config_dump, so
-- that pg_dump dumps its rows.
SELECT is_empty($$
    SELECT format('parflow.%I', t) AS table_not_in_extconfig
      FROM unnest(ARRAY['workflow', 'workflow_version', 'stage_group', 'group_dep',
                        'stage', 'stage_dep', 'affinity']) t
     WHERE NOT EXISTS (SELECT FROM pg_extension e
                        WHERE e.extname = 'parflow'
                          AND format('parflow.%I', t)::regclass = ANY (e.extconfig))
     ORDER BY 1
$$, 'every definition table is in pg_extension.extconfig');

-- The sequence behind an identity or serial column of a dumped table must
-- be registered too (marking the table is not enough, says the manual),
-- or after a dump and restore new rows collide with restored ids.
SELECT is_empty($$
    SELECT s.oid::regclass AS sequence_not_in_extconfig, t.oid::regclass AS of_table
      FROM pg_extension e
      JOIN pg_class t ON t.oid = ANY (e.extconfig)
      JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid
                      AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
      JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
     WHERE e.extname = 'parflow' AND s.oid <> ALL (e.extconfig)
     ORDER BY 1
$$, 'every sequence owned by a dumped table is in pg_extension.extconfig too');

SELECT * FROM finish();
ROLLBACK;
