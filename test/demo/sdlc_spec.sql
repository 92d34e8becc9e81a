-- The seed's SDLC workflow (shared/seeds), defined from a table of its stages:
-- the way an integration builds the spec from its own tables.
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
