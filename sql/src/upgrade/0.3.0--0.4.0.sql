-- parflow 0.3.0 -> 0.4.0: the DDL an upgrade needs before the topic files.
--
-- 0.4.0 changes no object: its scripts are built from sql/src/ (every
-- function, view and grant written once), and the upgrade script is this
-- file followed by every topic file but 00_schema.sql, which re-create the
-- functions and views as they are (CREATE OR REPLACE) and grant again.
--
-- What goes here: what CREATE OR REPLACE cannot do, in the order it must be
-- done: ALTER TABLE (a new column goes last: write it last in its table in
-- 00_schema.sql too), new tables and indexes (also in 00_schema.sql), DROP
-- FUNCTION for a function that is gone or whose signature, result type or
-- argument names change, DROP VIEW for a view whose columns change other
-- than by new ones at the end.

-- The state machine's PL/pgSQL goes: claim, heartbeat, complete (with the
-- hand-over), fail, release, the release of dependents, finishing and
-- blocking runs and the dispatcher's pass are C (src/taskapi.c,
-- src/runstate.c, src/pass.c).  The helpers only they called go with them;
-- parflow_claim gains max_tasks and an item column.
DROP FUNCTION parflow._dispatch_core();
DROP FUNCTION parflow._expire_timeouts();
DROP FUNCTION parflow._preempt(integer);
DROP FUNCTION parflow._handover(parflow.task);
DROP FUNCTION parflow._route_back(parflow.task, parflow.stage, text, jsonb);
DROP FUNCTION parflow._retry_or_fail(parflow.task, text, text, boolean);
DROP FUNCTION parflow._held(bigint, uuid);
DROP FUNCTION parflow._release(bigint, integer[], integer[]);
DROP FUNCTION parflow._check_output(bigint, jsonb);
DROP FUNCTION parflow._error_text(text);
DROP FUNCTION parflow._event(bigint, bigint, text, jsonb);
DROP FUNCTION parflow._payload(bigint, bigint, text);
DROP FUNCTION @extschema@.parflow_claim(text, text, interval);
-- plpgsql and sql functions that become C keep their signatures: CREATE OR
-- REPLACE in 40_statemachine.sql turns them into C.

-- A task's group is looked up by run (the run's tasks through
-- task_run_id_stage_ord_key) only when a group fails fast or restarts: one
-- index less to write on every transition.
DROP INDEX parflow.task_run_group_idx;

-- The stages a dispatch pass must watch for attempts that run too long.
CREATE INDEX stage_timeout_idx ON parflow.stage (version_id) WHERE timeout IS NOT NULL;

-- Sharing the database between runs: concurrency rules, idempotent and
-- delayed starts (parflow_start gains key and not_before).
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
SELECT pg_catalog.pg_extension_config_dump('parflow.concurrency', '');
ALTER TABLE parflow.run ADD COLUMN key text CONSTRAINT run_key_key UNIQUE, ADD COLUMN not_before timestamptz;
COMMENT ON TABLE parflow.run IS 'One execution of a workflow version; failed counts its tasks failed for good; key makes its start idempotent; nothing is dispatched before not_before';
DROP FUNCTION @extschema@.parflow_start(text, text[], integer, boolean, jsonb);

-- The planner says whether its plan is proven shortest (parflow_plan and
-- parflow_estimate gain a last column optimal; _plan_stats reports the
-- lower bound, the proof and the search's work): new result types.
DROP FUNCTION @extschema@.parflow_plan(text, text[], integer);
DROP FUNCTION @extschema@.parflow_estimate(text, text[], integer);
DROP FUNCTION parflow._plan_stats(text, text[], integer, text);

-- All ready tasks in dispatch order: the predicate names priority, so that
-- no query about one run's ready tasks can use it (see 00_schema.sql).
DROP INDEX parflow.task_dispatch_idx;
CREATE INDEX task_dispatch_idx ON parflow.task (priority, rank DESC, id) WHERE state = 'ready' AND priority >= 0;

-- Wait stages: a stage awaits an event (parflow_signal, parflow_reject)
-- instead of an agent; its task goes through state awaiting.  Signals that
-- find no stage awaiting are kept; roles besides operators may be let
-- signal.
ALTER TABLE parflow.stage ALTER COLUMN agent DROP NOT NULL,
    DROP CONSTRAINT stage_estimate_check,
    ADD CONSTRAINT stage_estimate_check CHECK (estimate >= interval '0'),
    ADD COLUMN wait_event text,
    ADD COLUMN wait_timeout interval CHECK (wait_timeout > interval '0'),
    ADD COLUMN wait_on_timeout text CHECK (wait_on_timeout IN ('fail', 'skip')),
    ADD COLUMN sub_workflow text,
    ADD COLUMN map_over_ord integer, ADD COLUMN map_key text,
    ADD COLUMN map_max integer CHECK (map_max >= 1), ADD COLUMN map_expect integer CHECK (map_expect >= 1),
    ADD CONSTRAINT stage_work_check CHECK (num_nonnulls(agent, wait_event, sub_workflow) = 1
                                           AND (estimate > interval '0' OR agent IS NULL));
COMMENT ON COLUMN parflow.stage.map_over_ord IS 'A map stage: the stage (one of its dependencies) whose output, at map_key (NULL: the output itself), is the array it runs once per element of, up to map_max; planned as map_expect instances';
COMMENT ON COLUMN parflow.stage.sub_workflow IS 'A sub-workflow stage: the workflow whose latest version it runs as a child run, instead of an agent';
COMMENT ON COLUMN parflow.stage.wait_event IS 'A wait stage: the event it awaits (parflow_signal, parflow_reject) instead of an agent';
COMMENT ON COLUMN parflow.stage.wait_timeout IS 'A wait stage: how long it awaits its event before wait_on_timeout applies (NULL: for ever)';
ALTER TABLE parflow.task ALTER COLUMN agent DROP NOT NULL,
    DROP CONSTRAINT task_state_check,
    ADD CONSTRAINT task_state_check
        CHECK (state IN ('waiting', 'ready', 'dispatched', 'running', 'succeeded',
                         'failed', 'skipped', 'cancelled', 'awaiting'));
COMMENT ON COLUMN parflow.task.agent IS 'The agent kind that works the task; NULL for a wait stage or a sub-workflow stage, which awaits an event or a child run instead (its started_at is when it began to await)';
-- Sub-workflows: a stage that runs another workflow as a child run.
ALTER TABLE parflow.run ADD COLUMN parent_run bigint REFERENCES parflow.run, ADD COLUMN parent_task bigint;
CREATE INDEX run_parent_task_idx ON parflow.run (parent_task, id) WHERE parent_task IS NOT NULL;
COMMENT ON COLUMN parflow.run.parent_task IS 'A child run: the task of the sub-workflow stage (of run parent_run) that started it and awaits it';
CREATE INDEX task_awaiting_idx ON parflow.task (run_id) WHERE state = 'awaiting';
-- Map stages: a task per element (item, map_item), beside the stage's own task.
ALTER TABLE parflow.task ADD COLUMN item integer, ADD COLUMN map_item jsonb,
    DROP CONSTRAINT task_run_id_stage_ord_key,
    ADD CONSTRAINT task_run_id_stage_ord_item_key UNIQUE NULLS NOT DISTINCT (run_id, stage_ord, item);
COMMENT ON COLUMN parflow.task.item IS 'A map instance: its index in the array it was made from (map_item is the element); NULL for every other task, a map stage''s own (which counts its instances left in pending) included';
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
CREATE TABLE parflow.signal_role (
    role_name  name NOT NULL,
    event      text NOT NULL CHECK (btrim(event) <> ''),
    PRIMARY KEY (role_name, event)
);
COMMENT ON TABLE parflow.signal_role IS
    'Which database roles may signal or reject which events (event * = every event), besides parflow_operator';
SELECT pg_catalog.pg_extension_config_dump('parflow.signal', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.signal_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('parflow.signal_role', '');
-- Plans that keep a slot idle: the planner's holds (parflow._ranks gains
-- hold_ord, written into the new task.hold_ord).
DROP FUNCTION parflow._ranks(bigint, text[], integer);
ALTER TABLE parflow.task ADD COLUMN hold_ord integer;
COMMENT ON COLUMN parflow.task.hold_ord IS 'A hold of the run''s plan: the task does not start before the task of this stage has finished (it counts in pending until then), so that the dispatcher keeps a slot free for a later stage as the plan does; NULL when none or released';
-- The tasks a plan holds for a stage (task.hold_ord): found when that
-- stage's task finishes; only held tasks are in it.
CREATE INDEX task_hold_idx ON parflow.task (run_id, hold_ord) WHERE hold_ord IS NOT NULL;
-- The groups that wait for a group, found as its last task finishes (a
-- completion's barrier count and the release of the groups it opens):
-- without it each completion reads every barrier of the version.
CREATE INDEX group_dep_dep_idx ON parflow.group_dep (version_id, dep_ord);
-- task.run_id loses its foreign key (see the table in 00_schema.sql): its
-- per-row check was a third of parflow_start's time.
ALTER TABLE parflow.task DROP CONSTRAINT task_run_id_fkey;

-- Only statements that name group_ord IS NOT NULL use the index of tasks at
-- work (a claim walks task_claim_idx in claim order).
DROP INDEX parflow.task_active_idx;
CREATE INDEX task_active_idx ON parflow.task (run_id) WHERE state IN ('dispatched', 'running') AND group_ord IS NOT NULL;

-- The event log loses its primary key for a BRIN index on id (see the table
-- in 00_schema.sql): one B-tree insert fewer per event.
ALTER TABLE parflow.event DROP CONSTRAINT event_pkey;
CREATE INDEX event_id_idx ON parflow.event USING brin (id);
ALTER TABLE parflow.event REPLICA IDENTITY FULL;
