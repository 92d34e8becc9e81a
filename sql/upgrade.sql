-- ALTER EXTENSION parflow UPDATE from 0.1.0 (and from 0.2.0) keeps every
-- definition and run; the run goes on after the update; an upgraded
-- installation has the same objects as a fresh one.
SET client_min_messages = warning;
\set SHOW_CONTEXT never
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
UNION ALL SELECT 'stage', count(*), md5(string_agg(x::text, '|' ORDER BY x::text)) FROM parflow.stage x
UNION ALL SELECT 'run', count(*), md5(string_agg(x::text, '|' ORDER BY x::text)) FROM parflow.run x
UNION ALL SELECT 'task', count(*), md5(string_agg(x::text, '|' ORDER BY x::text)) FROM parflow.task x
UNION ALL SELECT 'event', count(*), md5(string_agg(x::text, '|' ORDER BY x::text)) FROM parflow.event x;
SELECT to_regproc('parflow_gantt') IS NULL AS no_gantt_in_010;

ALTER EXTENSION parflow UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'parflow';
-- every row is still there, unchanged
SELECT b.t, b.n, a.h = b.h AS unchanged
  FROM before b JOIN (
    SELECT 'workflow' AS t, md5(string_agg(x::text, '|' ORDER BY x::text)) AS h FROM parflow.workflow x
    UNION ALL SELECT 'version', md5(string_agg(x::text, '|' ORDER BY x::text)) FROM parflow.workflow_version x
    UNION ALL SELECT 'stage', md5(string_agg(x::text, '|' ORDER BY x::text)) FROM parflow.stage x
    UNION ALL SELECT 'run', md5(string_agg(x::text, '|' ORDER BY x::text)) FROM parflow.run x
    UNION ALL SELECT 'task', md5(string_agg(x::text, '|' ORDER BY x::text)) FROM parflow.task x
    UNION ALL SELECT 'event', md5(string_agg(x::text, '|' ORDER BY x::text)) FROM parflow.event x) a USING (t)
 ORDER BY b.t;
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
DROP EXTENSION parflow;
CREATE EXTENSION parflow;
SELECT extversion FROM pg_extension WHERE extname = 'parflow';
CREATE TEMP TABLE fresh AS
SELECT pg_describe_object(classid, objid, objsubid) AS obj FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'parflow');
SELECT obj AS only_upgraded FROM upgraded EXCEPT SELECT obj FROM fresh;
SELECT obj AS only_fresh FROM fresh EXCEPT SELECT obj FROM upgraded;
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
-- no update path to nowhere
ALTER EXTENSION parflow UPDATE TO '9.9.9';
DROP EXTENSION parflow;
