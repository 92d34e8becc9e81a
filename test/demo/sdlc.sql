-- make demo: the seed's SDLC workflow, planned.  (psql script)
\set QUIET on
\pset footer off
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS parflow;
\ir sdlc_spec.sql
SELECT parflow_define('sdlc', pg_temp.seed_spec()) AS version \gset
\echo
\echo '== The seed''s SDLC workflow (version' :version'), with both conditional stages (flags performance, security)'
\echo
SELECT stage, agent, group_name AS "group", wave, est_start AS start, est_finish AS finish,
       CASE WHEN critical THEN 'critical' ELSE 'slack ' || slack END AS "critical path"
  FROM parflow_plan('sdlc', '{performance,security}');
\echo '== Estimates: one stage at a time against the parallel plan (cap 4)'
\echo
SELECT 'performance, security' AS flags, * FROM parflow_estimate('sdlc', '{performance,security}')
UNION ALL
SELECT 'none', * FROM parflow_estimate('sdlc');
\echo 'The seed promised ~8.5 h -> ~5.5 h (35 %).  Its stage minutes add up to 9 h -> 6 h 15 min'
\echo '(30.6 %) with both conditional stages, and 7 h -> 5 h 15 min (25 %) without them.'
\echo
