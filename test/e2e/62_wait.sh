#!/usr/bin/env bash
# test/e2e/62_wait.sh -- wait stages with the dispatcher and real agents.
#
# research (an agent) -> approve (awaits design_approved) -> build (an agent)
# and review (awaits "review", verifies build), beside a stage that awaits an
# event nobody sends (1 s timeout, on_timeout skip).  A listener on
# parflow_orchestrator sees each wait stage's "awaiting" with its event; the
# test answers like a person would: it approves the design, rejects the first
# review (build goes back to its agent with the reason) and approves the
# second.  The run succeeds with every agent stage done once per round, and
# nothing was dispatched to an agent for a wait stage.  Then a crash while a
# stage awaits (kill -9 of the dispatcher, then an immediate shutdown and a
# start): the signal sent after the restart still completes the stage, and
# the run finishes.
set -u -o pipefail
# shellcheck source=test/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
# shellcheck source=test/cluster.sh
source "$PF_ROOT/test/cluster.sh"
e2e_init 62_wait 'e2e_wait%'

e2e_define e2e_wait '{"groups": [
    {"name": "design", "stages": [{"name": "research", "agent": "e2e62_w", "estimate": "10 min"},
                                  {"name": "ping", "wait": {"event": "never", "timeout": "1 s", "on_timeout": "skip"}}]},
    {"name": "signoff", "stages": [{"name": "approve", "wait": {"event": "design_approved"}}]},
    {"name": "build", "stages": [{"name": "build", "agent": "e2e62_w", "estimate": "20 min"},
                                 {"name": "review", "wait": {"event": "review"}, "verifies": "build"}]}]}' >/dev/null ||
    e2e_die "define"

# The listener: every notification on parflow_orchestrator, as psql prints them.
# (psql prints them after each statement it runs: one every 0.1 s)
{ echo 'LISTEN parflow_orchestrator;'; while sleep 0.1; do echo 'SELECT;'; done; } |
    timeout 60 "$PG_BIN/psql" -X -qAt >"$E2E_DIR/orchestrator.log" 2>&1 &
E2E_AGENT_PIDS+=("$!")
e2e_agent e2e62-w e2e62_w --simulate 0.001
sleep 0.3

# wait_for_awaiting N EVENT: until the listener has seen N "awaiting" of EVENT.
wait_for_awaiting() {
    local i
    for ((i = 0; i < 200; i++)); do
        [ "$(grep -c "\"kind\": \"awaiting\".*\"event\": \"$2\"" "$E2E_DIR/orchestrator.log")" -ge "$1" ] && return 0
        sleep 0.1
    done
    return 1
}

run="$(e2e_start "SELECT parflow_start('e2e_wait', parallel => true)")" || e2e_die "start"
if wait_for_awaiting 1 design_approved; then
    e2e_pass "approve: announced on parflow_orchestrator as awaiting design_approved"
else
    e2e_fail "approve: no awaiting notification" "$(tail -5 "$E2E_DIR/orchestrator.log")"
fi
e2e_check_eq "approve: research done first, nothing else of the build started" "
    SELECT string_agg(stage || '=' || state, ' ' ORDER BY task) FROM parflow.tasks
     WHERE run = $run AND stage IN ('research', 'approve', 'build')" \
    "research=succeeded approve=awaiting build=waiting"
e2e_check_eq "approve: parflow.waiting says what it awaits" "
    SELECT why LIKE 'awaiting event design_approved since %' FROM parflow.waiting
     WHERE run = $run AND stage = 'approve'" t
e2e_check_eq "signal: one stage released" \
    "SELECT parflow_signal($run, 'design_approved', '{\"by\": \"alice\"}')" 1

wait_for_awaiting 1 review || e2e_fail "review: no awaiting notification" "$(tail -5 "$E2E_DIR/orchestrator.log")"
e2e_check_eq "reject: the review refuses the build" "SELECT parflow_reject($run, 'review', 'add tests')" 1
if wait_for_awaiting 2 review; then
    e2e_pass "review: awaits again once the build is redone"
else
    e2e_fail "review: not awaiting a second time" "$(tail -5 "$E2E_DIR/orchestrator.log")"
fi
e2e_check_eq "signal: the second review approves" "SELECT parflow_signal($run, 'review', '{\"lgtm\": true}')" 1
e2e_log "run $run: $(e2e_wait_run "$run" 30)"
e2e_expect_run "$run" succeeded
e2e_check_eq "build: two attempts, the second with the reason of the rejection" "
    SELECT t.attempt || ' ' || (tk.feedback ->> 'error')
      FROM parflow.tasks t JOIN parflow.task tk ON tk.id = t.task WHERE t.run = $run AND t.stage = 'build'" \
    "2 add tests"
e2e_check_eq "ping: skipped by its timeout" "
    SELECT t.state || ' ' || (e.detail ->> 'why') FROM parflow.tasks t
      JOIN parflow.event e ON e.task_id = t.task AND e.kind = 'skipped'
     WHERE t.run = $run AND t.stage = 'ping'" "skipped timeout"
e2e_check_eq "the outputs: the payloads of the signals" "
    SELECT string_agg(stage || '=' || (SELECT output::text FROM parflow.task WHERE id = task), ' ' ORDER BY task)
      FROM parflow.tasks WHERE run = $run AND stage IN ('approve', 'review')" \
    'approve={"by": "alice"} review={"lgtm": true}'
e2e_check_eq "no wait stage was ever dispatched to an agent" "
    SELECT count(*) FROM parflow.event e JOIN parflow.tasks t ON t.task = e.task_id
     WHERE e.run_id = $run AND t.agent IS NULL AND e.kind IN ('dispatched', 'running')" 0
e2e_check_eq "research: dispatched and done once" "
    SELECT count(*) FILTER (WHERE e.kind = 'dispatched') || ' ' || count(*) FILTER (WHERE e.kind = 'succeeded')
      FROM parflow.event e JOIN parflow.tasks t ON t.task = e.task_id
     WHERE e.run_id = $run AND t.stage = 'research'" "1 1"

# --- a crash while stages await ------------------------------------------------
run3="$(e2e_start "SELECT parflow_start('e2e_wait', parallel => true)")" || e2e_die "start 3"
pf_wait_for "SELECT state = 'awaiting' FROM parflow.tasks WHERE run = $run3 AND stage = 'approve'" 30 ||
    e2e_die "run $run3: approve never awaited"
pid="$(e2e_q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'parflow dispatcher'")"
kill -KILL "$pid" || e2e_die "kill -9 dispatcher $pid"
sleep 1
pf_wait_for "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'parflow dispatcher'" 30 ||
    e2e_fail "the dispatcher did not come back after kill -9"
e2e_log "server: pg_ctl stop -m immediate"
pf_cluster_restart immediate || e2e_die "restart"
e2e_check_eq "after the crashes: approve still awaits" "
    SELECT state FROM parflow.tasks WHERE run = $run3 AND stage = 'approve'" awaiting
e2e_check_eq "after the crashes: a signal completes it" "SELECT parflow_signal($run3, 'design_approved')" 1
pf_wait_for "SELECT state = 'awaiting' FROM parflow.tasks WHERE run = $run3 AND stage = 'review'" 30 ||
    e2e_fail "run $run3: review never awaited after the restart"
e2e_check_eq "after the crashes: the review is signalled" "SELECT parflow_signal($run3, 'review')" 1
e2e_log "run $run3: $(e2e_wait_run "$run3" 30)"
e2e_expect_run "$run3" succeeded
e2e_finish
