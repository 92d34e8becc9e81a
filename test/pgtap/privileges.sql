-- Every role against every public function and every relation: the matrix
-- of who may do what (README "Roles and agent kinds"), checked exhaustively,
-- plus real calls under SET ROLE.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS parflow;
SELECT n.nspname AS extschema FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE e.extname = 'parflow' \gset

-- r = parflow_reader, o = parflow_operator, a = parflow_agent
CREATE TEMP TABLE fn_matrix (fn text PRIMARY KEY, r boolean, o boolean, a boolean);
INSERT INTO fn_matrix VALUES
 ('parflow_define(text,jsonb)',                              false, true,  false),
 ('parflow_plan(text,text[],integer)',                       true,  true,  false),
 ('parflow_estimate(text,text[],integer)',                   true,  true,  false),
 ('parflow_estimates(text)',                                 true,  true,  false),
 ('parflow_start(text,text[],integer,boolean,jsonb,text,timestamp with time zone)', false, true, false),
 ('parflow_cancel(bigint)',                                  false, true,  false),
 ('parflow_pause(bigint)',                                   false, true,  false),
 ('parflow_resume(bigint)',                                  false, true,  false),
 ('parflow_retry(bigint,text)',                              false, true,  false),
 ('parflow_restart_group(bigint,text)',                      false, true,  false),
 ('parflow_failures(bigint)',                                true,  true,  false),
 ('parflow_report(bigint)',                                  true,  true,  false),
 ('parflow_group_result(bigint,text)',                       true,  true,  false),
 ('parflow_result(bigint)',                                  true,  true,  false),
 ('parflow_gantt(bigint,integer)',                           true,  true,  false),
 ('parflow_gantt_svg(bigint)',                               true,  true,  false),
 ('parflow_dot(text,text[])',                                true,  true,  false),
 ('parflow_metrics()',                                       true,  true,  false),
 ('parflow_housekeeping()',                                  false, true,  false),
 ('parflow_schedule(text,text,text,text[],integer)',         false, true,  false),
 ('parflow_unschedule(text)',                                false, true,  false),
 ('parflow_schedule_housekeeping(text)',                     false, true,  false),
 ('parflow_allow_agent(name,text)',                          false, true,  false),
 ('parflow_disallow_agent(name,text)',                       false, true,  false),
 ('parflow_signal(bigint,text,jsonb)',                       false, true,  false),
 ('parflow_reject(bigint,text,text)',                        false, true,  false),
 ('parflow_allow_signal(name,text)',                         false, true,  false),
 ('parflow_disallow_signal(name,text)',                      false, true,  false),
 ('parflow_claim(text,text,interval,integer)',               false, false, true),
 ('parflow_heartbeat(bigint,uuid)',                          false, false, true),
 ('parflow_complete(bigint,uuid,jsonb)',                     false, false, true),
 ('parflow_complete_and_claim(bigint,uuid,jsonb,text,text,interval)', false, false, true),
 ('parflow_complete_many(bigint[],uuid[],jsonb[])',          false, false, true),
 ('parflow_fail(bigint,uuid,text,boolean,jsonb)',            false, false, true),
 ('parflow_release(bigint,uuid)',                            false, false, true),
 ('parflow_warm_up(text)',                                   false, false, true);

-- relations the reader and the operator may SELECT; nobody writes any
CREATE TEMP TABLE readable (rel text PRIMARY KEY);
INSERT INTO readable VALUES ('workflow'), ('workflow_version'), ('stage_group'), ('group_dep'), ('stage'),
    ('stage_dep'), ('affinity'), ('runs'), ('tasks'), ('events'), ('stage_stats'), ('agents_at_work'),
    ('waiting'), ('agent_role'), ('event_tally'), ('signal_role');

CREATE TEMP VIEW public_fns AS
SELECT p.oid, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS sig,
       regexp_replace(p.proname || '(' || oidvectortypes(p.proargtypes) || ')', ', ', ',', 'g') AS fn
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = :'extschema' AND p.proname LIKE 'parflow\_%'
   AND EXISTS (SELECT FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e'
                  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'parflow'));
CREATE TEMP VIEW rels AS
SELECT c.oid, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'parflow' AND c.relkind IN ('r', 'v');

SELECT plan(3 + 3 + 3 + 3 + 2 + 10);

-- every public function is in the matrix, and the matrix names no other
SELECT is_empty($$ SELECT sig FROM public_fns WHERE fn NOT IN (SELECT fn FROM fn_matrix) $$,
    'every public function has its row in the privilege matrix');
SELECT is_empty($$ SELECT fn FROM fn_matrix EXCEPT SELECT fn FROM public_fns $$,
    'the matrix names only functions that exist');
SELECT is_empty($$ SELECT sig FROM public_fns WHERE has_function_privilege('public', oid, 'EXECUTE') $$,
    'no public function is executable by PUBLIC');

-- each role against each function
SELECT is_empty(format($$ SELECT f.fn || ': ' || has_function_privilege(%L, p.oid, 'EXECUTE') || ', expected ' || f.%s
                            FROM fn_matrix f JOIN public_fns p USING (fn)
                           WHERE has_function_privilege(%L, p.oid, 'EXECUTE') <> f.%s $$,
                        r.role, r.col, r.role, r.col),
                 format('%s: EXECUTE on exactly the functions of its column', r.role))
  FROM (VALUES ('parflow_reader', 'r'), ('parflow_operator', 'o'), ('parflow_agent', 'a')) r(role, col);

-- each role against each relation: SELECT as listed, nothing else
SELECT is_empty(format($$ SELECT relname || ': SELECT ' || has_table_privilege(%L, oid, 'SELECT')
                            FROM rels
                           WHERE has_table_privilege(%L, oid, 'SELECT') <> (%L AND relname IN (SELECT rel FROM readable)) $$,
                        r.role, r.role, r.reads),
                 format('%s: SELECT on %s', r.role, CASE WHEN r.reads THEN 'the listed relations only' ELSE 'no relation' END))
  FROM (VALUES ('parflow_reader', true), ('parflow_operator', true), ('parflow_agent', false)) r(role, reads);
SELECT is_empty(format($$ SELECT relname || ': ' || p FROM rels, unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) p
                           WHERE has_table_privilege(%L, oid, p) $$, r.role),
                 format('%s: no INSERT, UPDATE, DELETE or TRUNCATE on any relation', r.role))
  FROM (VALUES ('parflow_reader'), ('parflow_operator'), ('parflow_agent')) r(role);
SELECT is_empty($$ SELECT f.fn FROM fn_matrix f JOIN public_fns p USING (fn)
                    WHERE NOT (SELECT prosecdef FROM pg_proc WHERE oid = p.oid)
                       OR NOT EXISTS (SELECT FROM unnest((SELECT proconfig FROM pg_proc WHERE oid = p.oid)) c
                                       WHERE c LIKE 'search\_path=%') $$,
    'every public function is SECURITY DEFINER with a fixed search_path');
SELECT is_empty($$ SELECT relname FROM rels WHERE relkind = 'r'
                    AND NOT EXISTS (SELECT FROM pg_extension e WHERE e.extname = 'parflow'
                                       AND rels.oid = ANY (e.extconfig)) $$,
    'every table is dumped with pg_dump (pg_extension_config_dump)');

-- Real calls under each role.
SELECT parflow_define('priv', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "pa", "estimate": "1 min"}]}]}');
SET LOCAL ROLE parflow_agent;
SELECT throws_ok($$ SELECT parflow_start('priv') $$, '42501', NULL, 'an agent cannot start runs');
SELECT throws_ok($$ SELECT count(*) FROM parflow.task $$, '42501', NULL, 'an agent cannot read tasks');
SELECT throws_ok($$ SELECT count(*) FROM parflow.tasks $$, '42501', NULL, 'an agent cannot read the views');
SELECT lives_ok($$ SELECT * FROM parflow_claim('pa', 'w') $$, 'an agent can claim');
RESET ROLE;
SET LOCAL ROLE parflow_reader;
SELECT throws_ok($$ SELECT parflow_start('priv') $$, '42501', NULL, 'a reader cannot start runs');
SELECT throws_ok($$ SELECT * FROM parflow_claim('pa', 'w') $$, '42501', NULL, 'a reader cannot claim');
SELECT lives_ok($$ SELECT * FROM parflow.waiting, parflow.agents_at_work, parflow.stage_stats LIMIT 1 $$,
                'a reader reads the monitoring views');
RESET ROLE;
SET LOCAL ROLE parflow_operator;
SELECT lives_ok($$ SELECT parflow_cancel(parflow_start('priv')) $$, 'an operator starts and cancels runs');
SELECT throws_ok($$ SELECT * FROM parflow_claim('pa', 'w') $$, '42501', NULL, 'an operator does not claim');
SELECT throws_ok($$ DELETE FROM parflow.event $$, '42501', NULL, 'an operator cannot rewrite the event log');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
