-- parflow privileges: who may call and read what.  Every GRANT and REVOKE of
-- the extension, for a fresh install and an upgrade alike (granting again
-- what is granted changes nothing).  Functions are not executable by PUBLIC:
-- readers (parflow_reader) see plans, results and the monitoring views;
-- operators (parflow_operator) define, start and steer runs; agents
-- (parflow_agent) only call the agent API.  Everything runs as the
-- extension's owner (SECURITY DEFINER) with a fixed search_path.

GRANT USAGE ON SCHEMA parflow TO parflow_reader, parflow_operator, parflow_agent;

-- The internals of schema parflow are called only from parflow's own
-- functions; _why from the view parflow.waiting, as its reader.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA parflow FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parflow._why(parflow.task, parflow.run)
   TO parflow_reader, parflow_operator;

REVOKE ALL ON FUNCTION @extschema@.parflow_define(text, jsonb),
                       @extschema@.parflow_plan(text, text[], integer),
                       @extschema@.parflow_estimate(text, text[], integer),
                       @extschema@.parflow_estimates(text),
                       @extschema@.parflow_start(text, text[], integer, boolean, jsonb, text, timestamptz),
                       @extschema@.parflow_failures(bigint),
                       @extschema@.parflow_cancel(bigint), @extschema@.parflow_pause(bigint),
                       @extschema@.parflow_resume(bigint), @extschema@.parflow_retry(bigint, text),
                       @extschema@.parflow_restart_group(bigint, text), @extschema@.parflow_report(bigint),
                       @extschema@.parflow_group_result(bigint, text), @extschema@.parflow_result(bigint),
                       @extschema@.parflow_claim(text, text, interval, integer),
                       @extschema@.parflow_heartbeat(bigint, uuid),
                       @extschema@.parflow_complete(bigint, uuid, jsonb),
                       @extschema@.parflow_complete_and_claim(bigint, uuid, jsonb, text, text, interval),
                       @extschema@.parflow_complete_many(bigint[], uuid[], jsonb[]),
                       @extschema@.parflow_fail(bigint, uuid, text, boolean, jsonb),
                       @extschema@.parflow_release(bigint, uuid),
                       @extschema@.parflow_warm_up(text),
                       @extschema@.parflow_gantt(bigint, integer), @extschema@.parflow_gantt_svg(bigint),
                       @extschema@.parflow_dot(text, text[]), @extschema@.parflow_metrics(),
                       @extschema@.parflow_housekeeping(),
                       @extschema@.parflow_schedule(text, text, text, text[], integer),
                       @extschema@.parflow_unschedule(text), @extschema@.parflow_schedule_housekeeping(text),
                       @extschema@.parflow_allow_agent(name, text), @extschema@.parflow_disallow_agent(name, text),
                       @extschema@.parflow_signal(bigint, text, jsonb), @extschema@.parflow_reject(bigint, text, text),
                       @extschema@.parflow_allow_signal(name, text), @extschema@.parflow_disallow_signal(name, text)
  FROM PUBLIC;

-- Operators define workflows, start and steer runs, keep house.
GRANT EXECUTE ON FUNCTION @extschema@.parflow_define(text, jsonb),
                          @extschema@.parflow_start(text, text[], integer, boolean, jsonb, text, timestamptz),
                          @extschema@.parflow_failures(bigint),
                          @extschema@.parflow_cancel(bigint), @extschema@.parflow_pause(bigint),
                          @extschema@.parflow_resume(bigint), @extschema@.parflow_retry(bigint, text),
                          @extschema@.parflow_restart_group(bigint, text), @extschema@.parflow_report(bigint),
                          @extschema@.parflow_housekeeping(),
                          @extschema@.parflow_schedule(text, text, text, text[], integer),
                          @extschema@.parflow_unschedule(text), @extschema@.parflow_schedule_housekeeping(text),
                          @extschema@.parflow_allow_agent(name, text), @extschema@.parflow_disallow_agent(name, text),
                          @extschema@.parflow_signal(bigint, text, jsonb), @extschema@.parflow_reject(bigint, text, text),
                          @extschema@.parflow_allow_signal(name, text), @extschema@.parflow_disallow_signal(name, text)
   TO parflow_operator;
-- (parflow_allow_signal grants parflow_signal and parflow_reject to the
-- roles it names, and parflow_disallow_signal takes them back.)

-- Readers (and operators) read plans, reports, results and counters.
GRANT EXECUTE ON FUNCTION @extschema@.parflow_plan(text, text[], integer),
                          @extschema@.parflow_estimate(text, text[], integer),
                          @extschema@.parflow_estimates(text),
                          @extschema@.parflow_report(bigint), @extschema@.parflow_failures(bigint),
                          @extschema@.parflow_group_result(bigint, text), @extschema@.parflow_result(bigint),
                          @extschema@.parflow_gantt(bigint, integer), @extschema@.parflow_gantt_svg(bigint),
                          @extschema@.parflow_dot(text, text[]), @extschema@.parflow_metrics()
   TO parflow_reader, parflow_operator;

-- Agents call the agent API only.
GRANT EXECUTE ON FUNCTION @extschema@.parflow_claim(text, text, interval, integer),
                          @extschema@.parflow_heartbeat(bigint, uuid),
                          @extschema@.parflow_complete(bigint, uuid, jsonb),
                          @extschema@.parflow_complete_and_claim(bigint, uuid, jsonb, text, text, interval),
                          @extschema@.parflow_complete_many(bigint[], uuid[], jsonb[]),
                          @extschema@.parflow_fail(bigint, uuid, text, boolean, jsonb),
                          @extschema@.parflow_release(bigint, uuid),
                          @extschema@.parflow_warm_up(text)
   TO parflow_agent;

-- Definitions and the monitoring views are readable; runs, tasks and events
-- through their views only.
GRANT SELECT ON parflow.workflow, parflow.workflow_version, parflow.stage_group, parflow.group_dep,
                parflow.stage, parflow.stage_dep, parflow.affinity, parflow.agent_role, parflow.event_tally,
                parflow.signal_role,
                parflow.runs, parflow.tasks, parflow.events,
                parflow.stage_stats, parflow.agents_at_work, parflow.waiting
   TO parflow_reader, parflow_operator;
