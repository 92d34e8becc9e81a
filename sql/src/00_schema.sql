-- parflow schema: the schema, the roles, every table and index, and which
-- tables pg_dump keeps.  Run by a fresh install only (`CREATE EXTENSION`);
-- an upgrade changes these objects in sql/src/upgrade/<from>--<to>.sql.
-- Column order must stay that of an upgraded installation: a column added
-- by an upgrade script (ALTER TABLE ... ADD COLUMN, which puts it last) is
-- written last in its table here too.

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
    agent            text,
    estimate         interval NOT NULL CHECK (estimate >= interval '0'),
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
    wait_event       text,
    wait_timeout     interval CHECK (wait_timeout > interval '0'),
    wait_on_timeout  text CHECK (wait_on_timeout IN ('fail', 'skip')),
    sub_workflow     text,
    map_over_ord     integer,
    map_key          text,
    map_max          integer CHECK (map_max >= 1),
    map_expect       integer CHECK (map_expect >= 1),
    UNIQUE (version_id, ord),
    UNIQUE (version_id, name),
    UNIQUE (version_id, group_ord, pos),
    CONSTRAINT stage_work_check CHECK (num_nonnulls(agent, wait_event, sub_workflow) = 1
                                       AND (estimate > interval '0' OR agent IS NULL)),
    FOREIGN KEY (version_id, group_ord) REFERENCES parflow.stage_group,
    FOREIGN KEY (version_id, verifies_ord) REFERENCES parflow.stage (version_id, ord)
);
COMMENT ON TABLE parflow.stage IS 'Stages of a workflow version; ord is the position in the whole spec (plan order)';
COMMENT ON COLUMN parflow.stage.wait_event IS 'A wait stage: the event it awaits (parflow_signal, parflow_reject) instead of an agent';
COMMENT ON COLUMN parflow.stage.map_over_ord IS 'A map stage: the stage (one of its dependencies) whose output, at map_key (NULL: the output itself), is the array it runs once per element of, up to map_max; planned as map_expect instances';
COMMENT ON COLUMN parflow.stage.sub_workflow IS 'A sub-workflow stage: the workflow whose latest version it runs as a child run, instead of an agent';
COMMENT ON COLUMN parflow.stage.wait_timeout IS 'A wait stage: how long it awaits its event before wait_on_timeout applies (NULL: for ever)';

-- The stages a dispatch pass must watch for attempts that run too long.
CREATE INDEX stage_timeout_idx ON parflow.stage (version_id) WHERE timeout IS NOT NULL;

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

CREATE TABLE parflow.concurrency (
    version_id      bigint NOT NULL REFERENCES parflow.workflow_version,
    ord             integer NOT NULL,
    name            text NOT NULL,
    key             text NOT NULL,
    max_concurrent  integer NOT NULL CHECK (max_concurrent >= 1),
    stage_ords      integer[],
    PRIMARY KEY (version_id, ord)
);
CREATE INDEX concurrency_name_idx ON parflow.concurrency (name);
COMMENT ON TABLE parflow.concurrency IS 'Concurrency rules: at most max_concurrent tasks of the stages stage_ords (NULL: all) at once among the live runs whose input has one value at key; rules of one name share the limit';

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
    finished_at   timestamptz,
    key           text CONSTRAINT run_key_key UNIQUE,
    not_before    timestamptz,
    parent_run    bigint REFERENCES parflow.run,
    parent_task   bigint
);
COMMENT ON TABLE parflow.run IS 'One execution of a workflow version; failed counts its tasks failed for good; key makes its start idempotent; nothing is dispatched before not_before';
CREATE INDEX run_live_idx ON parflow.run (id) WHERE state IN ('running', 'paused');
CREATE INDEX run_version_idx ON parflow.run (version_id);
-- A sub-workflow stage's child runs (the latest is the one it awaits).
CREATE INDEX run_parent_task_idx ON parflow.run (parent_task, id) WHERE parent_task IS NOT NULL;
COMMENT ON COLUMN parflow.run.parent_task IS 'A child run: the task of the sub-workflow stage (of run parent_run) that started it and awaits it';

-- run_id has no foreign key, as event.run_id: tasks are written only by
-- parflow's functions, in the transaction that creates or locks their run,
-- and runs are never deleted.  The check cost a third of parflow_start's
-- time (one RI query per task), and it ran again, with a FOR KEY SHARE lock
-- on the run (a MultiXact under concurrent agents), whenever a transaction
-- updated a task it had already updated.
CREATE TABLE parflow.task (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id         bigint NOT NULL,
    stage_ord      integer NOT NULL,
    group_ord      integer NOT NULL,
    agent          text,
    state          text NOT NULL
                   CHECK (state IN ('waiting', 'ready', 'dispatched', 'running', 'succeeded',
                                    'failed', 'skipped', 'cancelled', 'awaiting')),
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
    item           integer,
    map_item       jsonb,
    hold_ord       integer,
    UNIQUE NULLS NOT DISTINCT (run_id, stage_ord, item)
);
COMMENT ON TABLE parflow.task IS 'One stage inside one run: the row that moves through the state machine; pending counts unfinished dependencies';
COMMENT ON COLUMN parflow.task.base_attempt IS 'Attempts made before the current round (a route-back or an operator retry starts a new round with max_attempts fresh attempts)';
COMMENT ON COLUMN parflow.task.route_backs IS 'On a verification task: how many times its failure sent the verified stage back';
COMMENT ON COLUMN parflow.task.feedback IS 'On a routed-back task: the failing verification (name, error, output), given to the next attempt in its input as route_back';
COMMENT ON COLUMN parflow.task.skip_barrier IS 'Set when a route-back re-opened a task whose group barrier had already passed: its next completion does not count against the barrier again';
COMMENT ON COLUMN parflow.task.agent IS 'The agent kind that works the task; NULL for a wait stage or a sub-workflow stage, which awaits an event or a child run instead (its started_at is when it began to await)';
COMMENT ON COLUMN parflow.task.item IS 'A map instance: its index in the array it was made from (map_item is the element); NULL for every other task, a map stage''s own (which counts its instances left in pending) included';
COMMENT ON COLUMN parflow.task.hold_ord IS 'A hold of the run''s plan: the task does not start before the task of this stage has finished (it counts in pending until then), so that the dispatcher keeps a slot free for a later stage as the plan does; NULL when none or released';
COMMENT ON COLUMN parflow.task.interrupted_at IS 'When the dispatcher asked the holder to give the task back for a P0 run; the lease is lost after parflow.interrupt_grace';
-- A run's ready tasks in dispatch order: the hand-over finds the next task
-- of its run, and the first ready task of every other live run, in one index
-- probe each.
CREATE INDEX task_ready_idx ON parflow.task (run_id, priority, rank DESC, id) WHERE state = 'ready';
-- All ready tasks in dispatch order, for walks over every run (PF_ALL_READY
-- in src/core.h): its predicate names priority so that a query about one
-- run's ready tasks, which does not, can only use task_ready_idx (a generic
-- plan made while no task was ready would otherwise scan this one for a
-- run's tasks).
CREATE INDEX task_dispatch_idx ON parflow.task (priority, rank DESC, id) WHERE state = 'ready' AND priority >= 0;
-- Tasks at work (PF_ACTIVE in src/core.h): group_ord IS NOT NULL is always
-- true, and there so that only statements that say it use this index, not a
-- claim, whose state = 'dispatched' implies the states alone.
CREATE INDEX task_active_idx ON parflow.task (run_id) WHERE state IN ('dispatched', 'running') AND group_ord IS NOT NULL;
-- Claims walk the dispatched tasks of a kind in claim order instead of
-- sorting them all (a fan-out of thousands under a high cap).
CREATE INDEX task_claim_idx ON parflow.task (agent, priority, rank DESC, id) WHERE state = 'dispatched';
-- Wait stages awaiting their event: a signal finds a run's, the pass their
-- timeouts (no agent task is ever in this state: it costs them nothing).
CREATE INDEX task_awaiting_idx ON parflow.task (run_id) WHERE state = 'awaiting';
-- The tasks a plan holds for a stage (task.hold_ord): found when that
-- stage's task finishes; only held tasks are in it.
CREATE INDEX task_hold_idx ON parflow.task (run_id, hold_ord) WHERE hold_ord IS NOT NULL;
CREATE INDEX stage_dep_dep_idx ON parflow.stage_dep (version_id, dep_ord);
-- The groups that wait for a group, found as its last task finishes (a
-- completion's barrier count and the release of the groups it opens):
-- without it each completion reads every barrier of the version.
CREATE INDEX group_dep_dep_idx ON parflow.group_dep (version_id, dep_ord);

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
    id       bigint GENERATED ALWAYS AS IDENTITY,
    at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    run_id   bigint NOT NULL,
    task_id  bigint,
    kind     text NOT NULL,
    detail   jsonb NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE parflow.event IS 'The event log: one row per run or task transition, written in the transaction that made it';
CREATE INDEX event_run_idx ON parflow.event (run_id, id);
-- Events are only appended, their ids from the identity alone (GENERATED
-- ALWAYS), so the ids are unique without a unique index, and in the order
-- of the heap: a range of ids (the events since one) is found through a
-- BRIN index, which costs an append nothing, where a primary key cost each
-- of a stage's four events a B-tree insert (266 of 1,039 WAL bytes for the
-- four, measured alone).  Without a key, logical
-- replication identifies a deleted row (parflow_housekeeping) by its whole
-- old row.
CREATE INDEX event_id_idx ON parflow.event USING brin (id);
ALTER TABLE parflow.event REPLICA IDENTITY FULL;

-- Signals that found no stage awaiting their event: the next stage of the
-- run to await it takes the oldest (and the row goes), so none is lost.
CREATE TABLE parflow.signal (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id   bigint NOT NULL REFERENCES parflow.run,
    event    text NOT NULL,
    payload  jsonb NOT NULL,
    sent_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_by  name NOT NULL DEFAULT session_user
);
CREATE INDEX signal_run_event_idx ON parflow.signal (run_id, event, id);
COMMENT ON TABLE parflow.signal IS 'Signals kept for a run until one of its stages awaits their event; the first to await takes the oldest';

------------------------------------------------------------------------------
-- Housekeeping counters and agent roles
------------------------------------------------------------------------------

-- Event counts of events deleted by housekeeping, so that counters only grow.
CREATE TABLE parflow.event_tally (
    kind  text PRIMARY KEY,
    n     bigint NOT NULL
);
COMMENT ON TABLE parflow.event_tally IS 'Counts of events deleted by parflow_housekeeping(), per kind: the counters of parflow_metrics() keep them';

CREATE TABLE parflow.agent_role (
    role_name  name NOT NULL,
    agent      text NOT NULL CHECK (btrim(agent) <> ''),
    PRIMARY KEY (role_name, agent)
);
COMMENT ON TABLE parflow.agent_role IS
    'Which database roles may claim which agent kinds (agent * = every kind). Empty: every agent role may claim every kind; once it has a row, only the roles listed may claim, and only their kinds';

CREATE TABLE parflow.signal_role (
    role_name  name NOT NULL,
    event      text NOT NULL CHECK (btrim(event) <> ''),
    PRIMARY KEY (role_name, event)
);
COMMENT ON TABLE parflow.signal_role IS
    'Which database roles may signal or reject which events (event * = every event), besides parflow_operator';

------------------------------------------------------------------------------
-- What pg_dump keeps: definitions, runs and their history
------------------------------------------------------------------------------

SELECT pg_catalog.pg_extension_config_dump('parflow.workflow', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.workflow_version', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.stage_group', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.group_dep', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.stage', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.stage_dep', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.affinity', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.concurrency', '');
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
SELECT pg_catalog.pg_extension_config_dump('parflow.event_tally', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.agent_role', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.signal', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.signal_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.signal_role', '');
