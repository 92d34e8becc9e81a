#!/usr/bin/env bash
# test/e2e/64_subworkflow.sh -- a sub-workflow stage with the dispatcher and
# real agents.
#
# A feature workflow (build -> qa -> ship) whose qa stage runs a shared QA
# workflow (two parallel suites, then a report) as a child run.  The child
# starts once build is done, with the parent's priority and flags; its end
# is handed to the parent by the
# dispatcher; the parent's qa output is the child's result; every agent
# stage of both runs is done once.  (That the child's stages see the run's
# input and build's output is checked in sql/wait.sql.)  A second feature run is cancelled while
# its child works: the child is cancelled with it.
set -u -o pipefail
# shellcheck source=test/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init 64_subworkflow 'e2e_sub%'

e2e_define e2e_sub_qa '{"groups": [
    {"name": "suites", "stages": [{"name": "unit", "agent": "e2e64_w", "estimate": "10 min"},
                                  {"name": "integration", "agent": "e2e64_w", "estimate": "20 min"}]},
    {"name": "report", "stages": [{"name": "report", "agent": "e2e64_w", "estimate": "5 min"}]}]}' >/dev/null ||
    e2e_die "define the child workflow"
e2e_define e2e_sub_feature '{"groups": [
    {"name": "build", "stages": [{"name": "build", "agent": "e2e64_w", "estimate": "10 min"}]},
    {"name": "qa", "stages": [{"name": "qa", "workflow": "e2e_sub_qa", "estimate": "35 min"}]},
    {"name": "ship", "stages": [{"name": "ship", "agent": "e2e64_w", "estimate": "5 min"}]}]}' >/dev/null ||
    e2e_die "define the parent workflow"
e2e_agent e2e64-a e2e64_w --simulate 0.001 --concurrency 2
sleep 0.3

run="$(e2e_start "SELECT parflow_start('e2e_sub_feature', '{fast}', 1, true, '{\"ticket\": 9}')")" || e2e_die "start"
e2e_log "run $run: $(e2e_wait_run "$run" 40)"
e2e_expect_run "$run" succeeded
child="$(e2e_q -c "SELECT run FROM parflow.runs WHERE parent_run = $run")"
e2e_check_eq "one child run, of the QA workflow, started by stage qa" "
    SELECT count(*) || ' ' || min(workflow) || ' ' || min(parent_stage) FROM parflow.runs WHERE parent_run = $run" \
    "1 e2e_sub_qa qa"
e2e_check_eq "the child: succeeded, with the parent's priority, flags and mode" "
    SELECT state || ' ' || priority || ' ' || flags::text || ' ' || parallel FROM parflow.runs WHERE run = ${child:-0}" \
    "succeeded 1 {fast} true"
e2e_check_eq "the child started after build, and the parent's qa ended after the child" "
    SELECT (SELECT started_at FROM parflow.runs WHERE run = ${child:-0})
             >= (SELECT finished_at FROM parflow.tasks WHERE run = $run AND stage = 'build')
           AND (SELECT finished_at FROM parflow.tasks WHERE run = $run AND stage = 'qa')
             >= (SELECT finished_at FROM parflow.runs WHERE run = ${child:-0})" t
e2e_check_eq "the child's three stages succeeded" "
    SELECT count(*) FROM parflow.event e JOIN parflow.tasks t ON t.task = e.task_id
     WHERE t.run = ${child:-0} AND e.kind = 'succeeded'" 3
e2e_check_eq "qa's output is the child's result (its state and every output)" "
    SELECT tk.output ->> 'state' || ' ' || (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_object_keys(tk.output -> 'outputs') k)
      FROM parflow.task tk JOIN parflow.tasks t ON t.task = tk.id WHERE t.run = $run AND t.stage = 'qa'" \
    "succeeded integration,report,unit"
e2e_check "every agent stage of both runs dispatched and done once" "
    SELECT t.run || ' ' || t.stage FROM parflow.tasks t
     WHERE t.run IN ($run, ${child:-0}) AND t.agent IS NOT NULL
       AND (SELECT count(*) FILTER (WHERE e.kind = 'dispatched') || ' ' || count(*) FILTER (WHERE e.kind = 'succeeded')
              FROM parflow.event e WHERE e.task_id = t.task) <> '1 1'"

# cancel a parent while its child works: the child goes with it
run2="$(e2e_start "SELECT parflow_start('e2e_sub_feature', parallel => true)")" || e2e_die "start 2"
if pf_wait_for "SELECT count(*) > 0 FROM parflow.runs WHERE parent_run = $run2" 20; then
    e2e_q -c "SELECT parflow_cancel($run2)" >/dev/null
    e2e_check_eq "cancelling the parent cancelled its child" "
        SELECT string_agg(state, ',') FROM parflow.runs WHERE run = $run2 OR parent_run = $run2" "cancelled,cancelled"
else
    e2e_fail "run $run2 started no child run"
fi
e2e_finish
