-- parflow_define: a valid spec, versions, and every validation error.
-- Each failing call must leave no trace: the counts at the end prove it.
CREATE EXTENSION parflow;
SET client_min_messages = warning;

SELECT parflow_define('demo', '{"groups": [
  {"name": "g1", "stages": [{"name": "a", "agent": "x", "estimate": "10 min"}]},
  {"name": "g2", "parallel": false, "stages": [
     {"name": "b", "agent": "y", "estimate": "5 min", "produces": ["api"]},
     {"name": "c", "agent": "y", "estimate": "5 min", "consumes": ["api"]}]},
  {"name": "g3", "depends_on": ["g1"], "on_failure": "fail_fast", "stages": [
     {"name": "d", "agent": "z", "estimate": "1 hour", "when": "extra", "max_attempts": 5,
      "retry_backoff": "0 s", "timeout": "2 hours", "max_route_backs": 0, "description": "optional"},
     {"name": "d_check", "agent": "z", "estimate": "1 min", "verifies": "d"}]}],
  "max_parallel": 2, "description": "a small demo",
  "affinity": [{"agents": ["y", "z"], "max_concurrent": 1, "resource_profile": "io"}]}');
-- a second definition is a new version; the first is kept as it was
SELECT parflow_define('demo', '{"groups": [{"name": "only", "stages": [{"name": "a", "agent": "x", "estimate": "1 min"}]}]}');
SELECT w.name, v.version, v.max_parallel, (SELECT count(*) FROM parflow.stage s WHERE s.version_id = v.id) AS stages
  FROM parflow.workflow w JOIN parflow.workflow_version v ON v.workflow_id = w.id ORDER BY v.version;
SELECT g.ord, g.name, g.parallel, g.on_failure,
       ARRAY(SELECT d.dep_ord FROM parflow.group_dep d WHERE d.version_id = g.version_id AND d.group_ord = g.ord) AS deps
  FROM parflow.stage_group g JOIN parflow.workflow_version v ON v.id = g.version_id
 WHERE v.version = 1 ORDER BY g.ord;
SELECT s.ord, s.name, s.agent, s.estimate, s.when_flag, s.verifies_ord, s.max_attempts, s.retry_backoff, s.timeout, s.max_route_backs
  FROM parflow.stage s JOIN parflow.workflow_version v ON v.id = s.version_id
 WHERE v.version = 1 ORDER BY s.ord;
SELECT d.stage_ord, d.dep_ord, d.kind FROM parflow.stage_dep d JOIN parflow.workflow_version v ON v.id = d.version_id
 WHERE v.version = 1 ORDER BY 1, 2;
SELECT a.agents, a.max_concurrent, a.resource_profile FROM parflow.affinity a;

-- Remember what exists, to show that failed calls write nothing.
CREATE TEMP TABLE before AS
SELECT (SELECT count(*) FROM parflow.workflow) w, (SELECT count(*) FROM parflow.workflow_version) v,
       (SELECT count(*) FROM parflow.stage) s, (SELECT count(*) FROM parflow.stage_dep) d,
       (SELECT count(*) FROM parflow.stage_group) g, (SELECT count(*) FROM parflow.affinity) a;

-- err(sql): run sql and show the error it raised: SQLSTATE, message, detail, hint.
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text; m text; d text; h text;
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
    RETURN st || ': ' || m || CASE WHEN d <> '' THEN E'\n  DETAIL: ' || d ELSE '' END
                           || CASE WHEN h <> '' THEN E'\n  HINT: ' || h ELSE '' END;
END
$$;
\pset format unaligned
\pset tuples_only on
-- NULLs and names
SELECT pg_temp.err($q$SELECT parflow_define(NULL, '{}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', NULL)$q$);
SELECT pg_temp.err($q$SELECT parflow_define('', '{"groups": []}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define(repeat('w', 201), '{"groups": []}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define(E'tab\there', '{"groups": []}')$q$);
-- shapes and types
SELECT pg_temp.err($q$SELECT parflow_define('x', '[]')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": []}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": {}}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"grups": []}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [1]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g"}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": []}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stagse": []}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": 7, "stages": []}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "parallel": "yes", "stages": [{"name": "a", "agent": "x", "estimate": "1 min"}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "on_failure": "panic", "stages": [{"name": "a", "agent": "x", "estimate": "1 min"}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": ["a"]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "x"}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agnet": "x", "estimate": "1 min"}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "x", "estimate": 45}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "x", "estimate": "soon"}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "x", "estimate": "0 min"}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "x", "estimate": "-5 min"}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "x", "estimate": "1 min", "depends_on": "b"}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "x", "estimate": "1 min", "depends_on": [1]}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "x", "estimate": "1 min", "max_attempts": 0}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "x", "estimate": "1 min", "max_attempts": 1.5}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "x", "estimate": "1 min", "max_route_backs": -1}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "x", "estimate": "1 min", "timeout": "0 s"}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "x", "estimate": "1 min", "when": ""}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "", "agent": "x", "estimate": "1 min"}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": " ", "estimate": "1 min"}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', format('{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "%s", "estimate": "1 min"}]}]}', repeat('a', 56))::jsonb)$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"max_parallel": 0, "groups": [{"name": "g", "stages": [{"name": "a", "agent": "x", "estimate": "1 min"}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"max_parallel": "4", "groups": [{"name": "g", "stages": [{"name": "a", "agent": "x", "estimate": "1 min"}]}]}')$q$);
-- duplicates
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "x", "estimate": "1 min"}]},
                                       {"name": "g", "stages": [{"name": "b", "agent": "x", "estimate": "1 min"}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "x", "estimate": "1 min"}]},
                                       {"name": "h", "stages": [{"name": "a", "agent": "x", "estimate": "1 min"}]}]}')$q$);
-- references
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "build", "stages": [{"name": "a", "agent": "x", "estimate": "1 min"}]},
                                       {"name": "qa", "depends_on": ["biuld"], "stages": [{"name": "b", "agent": "x", "estimate": "1 min"}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "depends_on": ["g"], "stages": [{"name": "a", "agent": "x", "estimate": "1 min"}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "backend", "agent": "x", "estimate": "1 min"},
                                                                  {"name": "qa", "agent": "x", "estimate": "1 min", "depends_on": ["bakend"]}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "x", "estimate": "1 min", "depends_on": ["a"]}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "x", "estimate": "1 min", "verifies": "zzz"}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "x", "estimate": "1 min", "verifies": "a"}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "x", "estimate": "1 min", "consumes": ["api"]}]}]}')$q$);
-- cycles: explicit, through artifacts, through group barriers
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [
   {"name": "alpha", "agent": "x", "estimate": "1 min", "depends_on": ["omega"]},
   {"name": "omega", "agent": "x", "estimate": "1 min", "depends_on": ["alpha"]}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [
   {"name": "p", "agent": "x", "estimate": "1 min", "produces": ["a"], "consumes": ["b"]},
   {"name": "q", "agent": "x", "estimate": "1 min", "produces": ["b"], "depends_on": ["r"]},
   {"name": "r", "agent": "x", "estimate": "1 min", "consumes": ["a"]}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [
   {"name": "g1", "stages": [{"name": "a", "agent": "x", "estimate": "1 min", "depends_on": ["b"]}]},
   {"name": "g2", "stages": [{"name": "b", "agent": "x", "estimate": "1 min"}]}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [
   {"name": "g1", "depends_on": ["g2"], "stages": [{"name": "a", "agent": "x", "estimate": "1 min"}]},
   {"name": "g2", "stages": [{"name": "b", "agent": "x", "estimate": "1 min"}]}]}')$q$);
-- affinity rules
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "backend", "estimate": "1 min"}]}],
                            "affinity": [{"agents": ["bakend"], "max_concurrent": 1}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "x", "estimate": "1 min"}]}],
                            "affinity": [{"agents": [], "max_concurrent": 1}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "x", "estimate": "1 min"}]}],
                            "affinity": [{"agents": ["x"], "max_concurrent": 0}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "x", "estimate": "1 min"}]}],
                            "affinity": [{"agents": ["x"], "max_concurrent": 1, "resource_profile": "gpu"}]}')$q$);
SELECT pg_temp.err($q$SELECT parflow_define('x', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "x", "estimate": "1 min"}]}],
                            "affinity": [{"agents": ["x"]}]}')$q$);

\pset format aligned
\pset tuples_only off
-- Nothing was written by any failed call.
SELECT (SELECT count(*) FROM parflow.workflow) = w AS workflows_unchanged,
       (SELECT count(*) FROM parflow.workflow_version) = v AS versions_unchanged,
       (SELECT count(*) FROM parflow.stage) = s AS stages_unchanged,
       (SELECT count(*) FROM parflow.stage_dep) = d AS edges_unchanged,
       (SELECT count(*) FROM parflow.stage_group) = g AS groups_unchanged,
       (SELECT count(*) FROM parflow.affinity) = a AS rules_unchanged
  FROM before;

-- Names with quotes and unicode are just names.
SELECT parflow_define('qa "release" ☃', '{"groups": [{"name": "grüppe", "stages": [
   {"name": "it''s", "agent": "ägent-1", "estimate": "1 min"},
   {"name": "naïve \"x\"", "agent": "ägent-1", "estimate": "2 min", "depends_on": ["it''s"]}]}]}');
SELECT stage, agent, group_name, wave FROM parflow_plan('qa "release" ☃');

-- Direct writes to the definition tables are the owner's only.
CREATE ROLE pf_define_test_op LOGIN;
GRANT parflow_operator TO pf_define_test_op;
SET ROLE pf_define_test_op;
INSERT INTO parflow.workflow (name) VALUES ('sneaky');
SELECT parflow_define('by_operator', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "x", "estimate": "1 min"}]}]}');
RESET ROLE;
SET ROLE pf_define_test_op;
SELECT count(*) FROM parflow.workflow WHERE name = 'by_operator';
RESET ROLE;
DROP OWNED BY pf_define_test_op;
DROP ROLE pf_define_test_op;
DROP EXTENSION parflow;
