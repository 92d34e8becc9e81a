-- ALTER EXTENSION parflow UPDATE from 0.1.0 (and from 0.2.0, 0.3.0) keeps
-- every definition and run; the run goes on after the update; an upgraded
-- installation has the same objects as a fresh one, with the same
-- definitions, privileges and comments.
SET client_min_messages = warning;
\set SHOW_CONTEXT never
-- Every object of the extension and what defines it, one row per (kind,
-- name): functions (definition, privileges, comment), tables (columns in
-- order with type, default, not null, identity; constraints; indexes;
-- privileges; comments of the table and its columns), views (definition,
-- columns), sequences, the schema, what pg_dump keeps (extconfig) and the
-- initial privileges pg_dump restores (pg_init_privs).
CREATE FUNCTION pg_temp.pf_objects() RETURNS TABLE(kind text, name text, def text)
LANGUAGE sql STABLE AS $$
  WITH ext AS (SELECT oid, extconfig, extcondition FROM pg_extension WHERE extname = 'parflow'),
  mem AS (SELECT d.classid, d.objid FROM pg_depend d, ext
           WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'),
  fn AS (SELECT p.* FROM pg_proc p JOIN mem ON mem.classid = 'pg_proc'::regclass AND mem.objid = p.oid),
  rel AS (SELECT c.* FROM pg_class c JOIN mem ON mem.classid = 'pg_class'::regclass AND mem.objid = c.oid)
  SELECT 'function', p.oid::regprocedure::text, pg_get_functiondef(p.oid) FROM fn p
  UNION ALL SELECT 'function acl', p.oid::regprocedure::text, p.proacl::text FROM fn p
  UNION ALL SELECT 'function comment', p.oid::regprocedure::text, obj_description(p.oid, 'pg_proc') FROM fn p
  UNION ALL SELECT 'relation', c.oid::regclass::text, c.relkind::text || ' ' || c.relpersistence::text FROM rel c
  UNION ALL SELECT 'relation acl', c.oid::regclass::text, c.relacl::text FROM rel c
  UNION ALL SELECT 'relation comment', c.oid::regclass::text, obj_description(c.oid, 'pg_class') FROM rel c
  UNION ALL
  SELECT 'column', c.oid::regclass::text || '.' || a.attname,
         format('#%s %s %s%s default %s identity "%s" generated "%s" acl %s comment %s',
                row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
                format_type(a.atttypid, a.atttypmod),
                CASE WHEN a.attnotnull THEN 'not null' ELSE 'null' END,
                CASE WHEN a.attcollation <> 0 THEN ' collate ' || a.attcollation::regcollation::text ELSE '' END,
                pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated, a.attacl::text,
                col_description(c.oid, a.attnum))
    FROM rel c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
  UNION ALL
  SELECT 'constraint', c.oid::regclass::text || '.' || co.conname, co.contype::text || ' ' || pg_get_constraintdef(co.oid)
    FROM rel c JOIN pg_constraint co ON co.conrelid = c.oid
  UNION ALL
  SELECT 'index', i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
    FROM rel c JOIN pg_index i ON i.indrelid = c.oid
  UNION ALL
  SELECT 'trigger', c.oid::regclass::text || '.' || t.tgname, pg_get_triggerdef(t.oid)
    FROM rel c JOIN pg_trigger t ON t.tgrelid = c.oid AND NOT t.tgisinternal
  UNION ALL
  SELECT 'view', c.oid::regclass::text, pg_get_viewdef(c.oid) FROM rel c WHERE c.relkind IN ('v', 'm')
  UNION ALL
  SELECT 'sequence', c.oid::regclass::text,
         format('%s start %s increment %s min %s max %s cache %s cycle %s owned by %s', s.seqtypid::regtype,
                s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
                (SELECT d.refobjid::regclass::text || '.' || d.refobjsubid FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')
                    AND d.refclassid = 'pg_class'::regclass))
    FROM rel c JOIN pg_sequence s ON s.seqrelid = c.oid
  UNION ALL
  SELECT 'schema', n.nspname, format('acl %s comment %s', n.nspacl, obj_description(n.oid, 'pg_namespace'))
    FROM pg_namespace n JOIN mem ON mem.classid = 'pg_namespace'::regclass AND mem.objid = n.oid
  UNION ALL
  SELECT 'extconfig', x.cfg::regclass::text, x.cond FROM ext, unnest(ext.extconfig, ext.extcondition) x(cfg, cond)
  UNION ALL
  SELECT 'init privs', pg_describe_object(ip.classoid, ip.objoid, ip.objsubid), ip.privtype::text || ' ' || ip.initprivs::text
    FROM pg_init_privs ip JOIN mem ON mem.classid = ip.classoid AND mem.objid = ip.objoid
$$;
CREATE EXTENSION parflow VERSION '0.1.0';
\i test/demo/sdlc_spec.sql
SELECT parflow_define('sdlc', pg_temp.seed_spec());
SELECT parflow_start('sdlc', '{security}', parallel => true, input => '{"ticket": 7}') AS run \gset
SELECT parflow._dispatch();
SELECT task, token FROM parflow_claim('research', 'w1') \gset
SELECT parflow_complete(:task, :'token', '{"findings": 1}');
SELECT parflow._dispatch();
SELECT task, token FROM parflow_claim('critique', 'w2') \gset
-- what 0.1.0 holds
CREATE TEMP TABLE before AS
SELECT 'workflow' AS t, count(*) AS n, md5(string_agg(x::text, '|' ORDER BY x::text)) AS h FROM parflow.workflow x
UNION ALL SELECT 'version', count(*), md5(string_agg(x::text, '|' ORDER BY x::text)) FROM parflow.workflow_version x
UNION ALL SELECT 'stage', count(*), md5(string_agg(x.r::text, '|' ORDER BY x.r::text))
            FROM (SELECT to_jsonb(x) - '{wait_event,wait_timeout,wait_on_timeout,sub_workflow,map_over_ord,map_key,map_max,map_expect}'::text[] AS r FROM parflow.stage x) x
UNION ALL SELECT 'run', count(*), md5(string_agg(x.r::text, '|' ORDER BY x.r::text))
            FROM (SELECT to_jsonb(x) - '{key,not_before,parent_run,parent_task}'::text[] AS r FROM parflow.run x) x
UNION ALL SELECT 'task', count(*), md5(string_agg(x.r::text, '|' ORDER BY x.r::text))
            FROM (SELECT to_jsonb(x) - '{item,map_item,hold_ord}'::text[] AS r FROM parflow.task x) x
UNION ALL SELECT 'event', count(*), md5(string_agg(x::text, '|' ORDER BY x::text)) FROM parflow.event x;
SELECT to_regproc('parflow_gantt') IS NULL AS no_gantt_in_010;

ALTER EXTENSION parflow UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'parflow';
-- every row is still there, unchanged (the columns new in 0.4.0 are
-- compared apart: a run's key, not_before, parent_run and parent_task, a
-- stage's wait_*, sub_workflow and map_*, a task's item, map_item and
-- hold_ord; NULL for what was there before)
SELECT b.t, b.n, a.h = b.h AS unchanged
  FROM before b JOIN (
    SELECT 'workflow' AS t, md5(string_agg(x::text, '|' ORDER BY x::text)) AS h FROM parflow.workflow x
    UNION ALL SELECT 'version', md5(string_agg(x::text, '|' ORDER BY x::text)) FROM parflow.workflow_version x
    UNION ALL SELECT 'stage', md5(string_agg(x.r::text, '|' ORDER BY x.r::text))
                FROM (SELECT to_jsonb(x) - '{wait_event,wait_timeout,wait_on_timeout,sub_workflow,map_over_ord,map_key,map_max,map_expect}'::text[] AS r FROM parflow.stage x) x
    UNION ALL SELECT 'run', md5(string_agg(x.r::text, '|' ORDER BY x.r::text))
                FROM (SELECT to_jsonb(x) - '{key,not_before,parent_run,parent_task}'::text[] AS r FROM parflow.run x) x
    UNION ALL SELECT 'task', md5(string_agg(x.r::text, '|' ORDER BY x.r::text))
                FROM (SELECT to_jsonb(x) - '{item,map_item,hold_ord}'::text[] AS r FROM parflow.task x) x
    UNION ALL SELECT 'event', md5(string_agg(x::text, '|' ORDER BY x::text)) FROM parflow.event x) a USING (t)
 ORDER BY b.t;
SELECT count(*) AS runs_with_key_or_delay FROM parflow.run WHERE key IS NOT NULL OR not_before IS NOT NULL;
SELECT count(*) AS wait_stages FROM parflow.stage WHERE wait_event IS NOT NULL OR wait_timeout IS NOT NULL
    OR wait_on_timeout IS NOT NULL;
SELECT count(*) AS held_or_instances FROM parflow.task WHERE hold_ord IS NOT NULL OR item IS NOT NULL;
-- the run goes on: the lease taken under 0.1.0 still holds
SELECT worker, stage FROM parflow.agents_at_work WHERE run = :run;
SELECT parflow_complete(:task, :'token', '{"ok": true}');
SELECT parflow._dispatch();
SELECT stage, state FROM parflow.tasks WHERE run = :run AND state <> 'waiting' ORDER BY task;
SELECT stage, regexp_replace(why, 'dispatched .* ago', 'dispatched some time ago') AS why FROM parflow.waiting WHERE run = :run AND state = 'dispatched' ORDER BY stage;
SELECT parflow_cancel(:run);
SELECT count(*) AS gantt_lines FROM parflow_gantt(:run);

-- The same objects as a fresh installation.
CREATE TEMP TABLE upgraded AS
SELECT pg_describe_object(classid, objid, objsubid) AS obj FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'parflow');
SELECT count(*) > 0 AS has_members FROM upgraded;
CREATE TEMP TABLE upgraded_def AS SELECT * FROM pg_temp.pf_objects();
DROP EXTENSION parflow;
CREATE EXTENSION parflow;
SELECT extversion FROM pg_extension WHERE extname = 'parflow';
CREATE TEMP TABLE fresh AS
SELECT pg_describe_object(classid, objid, objsubid) AS obj FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'parflow');
CREATE TEMP TABLE fresh_def AS SELECT * FROM pg_temp.pf_objects();
SELECT obj AS only_upgraded FROM upgraded EXCEPT SELECT obj FROM fresh;
SELECT obj AS only_fresh FROM fresh EXCEPT SELECT obj FROM upgraded;
-- ... with the same definitions: what differs, by kind and name (nothing)
SELECT kind, count(*) > 0 AS compared FROM fresh_def GROUP BY kind ORDER BY kind;
SELECT kind, name AS differs_upgraded FROM (SELECT * FROM upgraded_def EXCEPT SELECT * FROM fresh_def) x ORDER BY 1, 2;
SELECT kind, name AS differs_fresh FROM (SELECT * FROM fresh_def EXCEPT SELECT * FROM upgraded_def) x ORDER BY 1, 2;
-- from 0.2.0: a lease taken before the update holds after it
DROP EXTENSION parflow;
CREATE EXTENSION parflow VERSION '0.2.0';
SELECT parflow_define('sdlc', pg_temp.seed_spec());
SELECT parflow_start('sdlc', '{}', parallel => true) AS run \gset
SELECT parflow._dispatch();
SELECT task, token FROM parflow_claim('research', 'w1') \gset
ALTER EXTENSION parflow UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'parflow';
SELECT parflow_complete(:task, :'token', '{"ok": true}');
SELECT parflow._dispatch();
SELECT stage, state FROM parflow.tasks WHERE run = :run AND state NOT IN ('waiting', 'skipped') ORDER BY task;
-- from 0.3.0: the same
DROP EXTENSION parflow;
CREATE EXTENSION parflow VERSION '0.3.0';
SELECT parflow_define('sdlc', pg_temp.seed_spec());
SELECT parflow_start('sdlc', '{}', parallel => true) AS run \gset
SELECT parflow._dispatch();
SELECT task, token FROM parflow_claim('research', 'w1') \gset
ALTER EXTENSION parflow UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'parflow';
SELECT parflow_complete(:task, :'token', '{"ok": true}');
SELECT parflow._dispatch();
SELECT stage, state FROM parflow.tasks WHERE run = :run AND state NOT IN ('waiting', 'skipped') ORDER BY task;
-- no update path to nowhere
ALTER EXTENSION parflow UPDATE TO '9.9.9';
DROP EXTENSION parflow;
