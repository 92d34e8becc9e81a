-- The demo's SDLC workflow (11 stages, 10 agent kinds, 9 groups), defined from a table of its stages:
-- the way an integration builds the spec from its own tables.  Included by
-- the demo, the regression tests and the end-to-end tests; it leaves the
-- table seed_stage and the function pg_temp.seed_spec() in the session.
CREATE TEMP TABLE seed_stage (ord int, grp text, name text, agent text, minutes int, flag text);
INSERT INTO seed_stage VALUES
 (1, 'research',  'research',     'research',      45, NULL),
 (2, 'critique',  'critique',     'critique',      30, NULL),
 (3, 'build',     'backend',      'backend',       60, NULL),
 (4, 'build',     'frontend',     'frontend',      60, NULL),
 (5, 'qa',        'backend_qa',   'qa',            45, NULL),
 (6, 'qa',        'frontend_qa',  'qa',            45, NULL),
 (7, 'hardening', 'performance',  'performance',   60, 'performance'),
 (8, 'hardening', 'security',     'security',      60, 'security'),
 (9, 'statistics','statistics',   'statistics',    90, NULL),
 (10,'devops',    'devops',       'devops',        15, NULL),
 (11,'docs',      'documentation','documentation', 30, NULL);
-- One group per seed box, in order; the seed's MAX_PARALLEL_STAGES = 4.
CREATE FUNCTION pg_temp.seed_spec() RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object('max_parallel', 4, 'groups',
    (SELECT jsonb_agg(jsonb_build_object('name', grp, 'stages', st) ORDER BY o)
       FROM (SELECT grp, min(ord) o, jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                    'name', name, 'agent', agent, 'estimate', minutes || ' min', 'when', flag)) ORDER BY ord) st
               FROM seed_stage GROUP BY grp) g))
$$;
