#!/usr/bin/env bash
# test/e2e/57_handover.sh -- a completion hands its slot to the next task.
#
# 1. A 40-stage chain whose stages alternate between two agent kinds, run by
#    two reference agents: every successor is dispatched by its
#    predecessor's completion (a "dispatched" event naming it), its agent is
#    notified (by the dispatcher) and the run succeeds, each stage exactly
#    once, in dependency order, and far fewer dispatch passes ran than
#    stages.
# 2. No hand-over when the successor needs a slot the completed task did not
#    hold: an affinity rule that covers the successor's kind but not the
#    completed one's.
# 3. No hand-over when a ready task of another run comes first in dispatch
#    order: the global cap is full and a run of a better priority waits; the
#    freed slot goes to that run's task, through the dispatcher's pass.
# 4. The notification of a hand-over is sent only if the completion commits:
#    a completion rolled back (whole, or to a savepoint) notifies nobody; the
#    same completion committed notifies the successor's kind once.
# 5. A completion whose commit waits (for a synchronous standby that never
#    answers) holds nothing else up: another run is dispatched meanwhile;
#    once the wait is cancelled (the commit stands locally), the handed-over
#    task's notification goes out.
# 6. parflow_complete_and_claim claims the task it hands the slot to when
#    that task is of the caller's kind and no dispatched task of that kind
#    comes first: ready to running in the completion's transaction, its
#    'dispatched' (naming the completed task) then 'running' events, and no
#    notification, since nobody else is to take it.  A dispatched task of
#    the kind that comes first is claimed instead, and the successor is
#    handed over as before (notified); so is one of another kind.
set -u -o pipefail
# shellcheck source=test/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init 57_handover 'e2e_handover%'

GLOBAL_CAP="$(e2e_q -c "SHOW parflow.max_parallel_stages")"
e2e_check_idle

# --- 1. a chain of two kinds, with real agents --------------------------------
N=40
e2e_define e2e_handover_chain "{\"groups\": [
    $(for ((i = 1; i <= N; i++)); do
        printf '{"name": "g%s", "stages": [{"name": "s%s", "agent": "e2e57_%s", "estimate": "1 min"}]}%s' \
            "$i" "$i" "$([ $((i % 2)) -eq 1 ] && echo a || echo b)" "$([ "$i" -lt "$N" ] && echo ,)"
    done)]}" >/dev/null || e2e_die "define chain"
e2e_agent e2e57-a e2e57_a --simulate 0.001 -q
e2e_agent e2e57-b e2e57_b --simulate 0.001 -q
sleep 0.3
passes0="$(e2e_q -c "SELECT value FROM parflow_metrics() WHERE metric = 'parflow_dispatch_passes_total'")"
run="$(e2e_start "SELECT parflow_start('e2e_handover_chain', parallel => true)")" || e2e_die "start chain"
e2e_log "chain run $run: $(e2e_wait_run "$run" 60)"
passes1="$(e2e_q -c "SELECT value FROM parflow_metrics() WHERE metric = 'parflow_dispatch_passes_total'")"
e2e_expect_run "$run" succeeded
e2e_check_once "chain: every stage exactly once" "{$run}"
e2e_check_deps "chain: no stage before its predecessor" "{$run}"
e2e_check_eq "chain: every successor was dispatched by its predecessor's completion" "
    SELECT count(*) FROM parflow.event d
      JOIN parflow.task t ON t.id = d.task_id
      JOIN parflow.task p ON p.run_id = t.run_id AND p.stage_ord = t.stage_ord - 1
     WHERE d.run_id = $run AND d.kind = 'dispatched' AND (d.detail->>'handover')::bigint = p.id" $((N - 1))
e2e_check_true "chain: each hand-over is in the completion's transaction (same commit as the 'succeeded')" "
    SELECT bool_and(d.xmin = s.xmin), count(*) || ' hand-overs'
      FROM parflow.event d JOIN parflow.event s
        ON s.task_id = (d.detail->>'handover')::bigint AND s.kind = 'succeeded'
     WHERE d.run_id = $run AND d.kind = 'dispatched' AND d.detail ? 'handover'"
e2e_check_true "chain: fewer dispatch passes than half the stages" "
    SELECT $passes1 - $passes0 < $N / 2, ($passes1 - $passes0) || ' passes for $N stages'"
e2e_stop_agents

# --- 2. an affinity rule the completed task was not under --------------------
e2e_define e2e_handover_affinity '{"groups": [
    {"name": "g1", "stages": [{"name": "a", "agent": "e2e57_m1", "estimate": "1 min"}]},
    {"name": "g2", "stages": [{"name": "b", "agent": "e2e57_m2", "estimate": "1 min"}]}],
    "affinity": [{"agents": ["e2e57_m2"], "max_concurrent": 1}]}' >/dev/null || e2e_die "define affinity"
run2="$(e2e_start "SELECT parflow_start('e2e_handover_affinity', parallel => true)")" || e2e_die "start affinity"
pf_wait_for "SELECT EXISTS (SELECT FROM parflow.task WHERE run_id = $run2 AND state = 'dispatched')" 10 ||
    e2e_die "affinity: first stage not dispatched"
e2e_q -c "SELECT parflow_complete(c.task, c.token) FROM parflow_claim('e2e57_m1', 'e2e57-m') c" >/dev/null ||
    e2e_die "affinity: claim and complete"
pf_wait_for "SELECT EXISTS (SELECT FROM parflow.tasks WHERE run = $run2 AND stage = 'b' AND state = 'dispatched')" 10 ||
    e2e_die "affinity: b not dispatched"
e2e_check_eq "affinity: b was dispatched by the dispatcher's pass, not handed over" "
    SELECT count(*) FILTER (WHERE e.detail ? 'handover') || '/' || count(*)
      FROM parflow.event e JOIN parflow.tasks t ON t.task = e.task_id
     WHERE e.run_id = $run2 AND t.stage = 'b' AND e.kind = 'dispatched'" "0/1"
e2e_q -c "SELECT parflow_cancel($run2)" >/dev/null

# --- 3. a better-priority run waits for the global cap -----------------------
e2e_define e2e_handover_low '{"groups": [
    {"name": "g1", "stages": [{"name": "a", "agent": "e2e57_x", "estimate": "1 min"}]},
    {"name": "g2", "stages": [{"name": "b", "agent": "e2e57_x", "estimate": "1 min"}]}]}' >/dev/null ||
    e2e_die "define low"
e2e_define e2e_handover_high "{\"groups\": [{\"name\": \"g\", \"stages\": [
    $(for ((i = 1; i <= GLOBAL_CAP; i++)); do
        printf '{"name": "z%s", "agent": "e2e57_z", "estimate": "1 min"}%s' "$i" "$([ "$i" -lt "$GLOBAL_CAP" ] && echo ,)"
    done)]}]}" >/dev/null || e2e_die "define high"
low="$(e2e_start "SELECT parflow_start('e2e_handover_low', priority => 2, parallel => true)")" || e2e_die "start low"
pf_wait_for "SELECT EXISTS (SELECT FROM parflow.task WHERE run_id = $low AND state = 'dispatched')" 10 ||
    e2e_die "low: a not dispatched"
e2e_q -c "SELECT count(*) FROM parflow_claim('e2e57_x', 'e2e57-x')" >/dev/null || e2e_die "low: claim a"
high="$(e2e_start "SELECT parflow_start('e2e_handover_high', priority => 1, parallel => true)")" || e2e_die "start high"
pf_wait_for "SELECT count(*) = $GLOBAL_CAP - 1 FROM parflow.task WHERE run_id = $high AND state = 'dispatched'" 10 ||
    e2e_die "high: the cap was not filled"
e2e_q -c "SELECT parflow_complete(t.id, t.token) FROM parflow.task t
           WHERE t.run_id = $low AND t.state = 'running'" >/dev/null || e2e_die "low: complete a"
pf_wait_for "SELECT count(*) = $GLOBAL_CAP FROM parflow.task WHERE run_id = $high AND state = 'dispatched'" 10 ||
    e2e_die "high: its last task did not get the freed slot"
e2e_check_eq "cap: the freed slot went to the better-priority run's task; b waits, ready" "
    SELECT t.state || ', ' || count(e.id) || ' dispatched event(s)'
      FROM parflow.tasks t LEFT JOIN parflow.event e ON e.task_id = t.task AND e.kind = 'dispatched'
     WHERE t.run = $low AND t.stage = 'b' GROUP BY t.state" "ready, 0 dispatched event(s)"
e2e_check_eq "cap: no hand-over in the high run either (its tasks came from passes)" "
    SELECT count(*) FROM parflow.event WHERE run_id = $high AND kind = 'dispatched' AND detail ? 'handover'" 0
e2e_q -c "SELECT parflow_cancel($high)" >/dev/null
pf_wait_for "SELECT EXISTS (SELECT FROM parflow.tasks WHERE run = $low AND stage = 'b' AND state = 'dispatched')" 10 ||
    e2e_die "low: b not dispatched once the high run was cancelled"
e2e_pass "cap: b dispatched once the high run was cancelled"
e2e_q -c "SELECT parflow_cancel($low)" >/dev/null

# --- 4. no notification from a completion that does not commit ---------------
# A run of WORKFLOW (stage a of kind KIND_A, then b of KIND_B) with a
# claimed: sets pair_run, task, token.
pair_claimed() {
    local wf="$1" ka="$2" kb="$3"
    e2e_define "$wf" "{\"groups\": [
        {\"name\": \"g1\", \"stages\": [{\"name\": \"a\", \"agent\": \"$ka\", \"estimate\": \"1 min\"}]},
        {\"name\": \"g2\", \"stages\": [{\"name\": \"b\", \"agent\": \"$kb\", \"estimate\": \"1 min\"}]}]}" \
        >/dev/null || e2e_die "define $wf"
    pair_run="$(e2e_start "SELECT parflow_start('$wf', parallel => true)")" || e2e_die "start $wf"
    pf_wait_for "SELECT EXISTS (SELECT FROM parflow.task WHERE run_id = $pair_run AND state = 'dispatched')" 10 ||
        e2e_die "$wf: a not dispatched"
    read -r task token <<<"$(e2e_q -F ' ' -c "SELECT task, token FROM parflow_claim('$ka', 'e2e57-pair')")"
    [ -n "$task" ] || e2e_die "$wf: claim a"
}
pair_claimed e2e_handover_tx e2e57_t1 e2e57_t2
run4=$pair_run
# one session listening on b's channel; psql prints notifications after each command
out="$("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 2>&1 <<SQL
LISTEN parflow_e2e57_t2;
BEGIN;
SELECT parflow_complete($task, '$token') \\g /dev/null
ROLLBACK;
SELECT pg_sleep(0.3) \\g /dev/null
\\echo after-rollback
BEGIN;
SAVEPOINT s;
SELECT parflow_complete($task, '$token') \\g /dev/null
ROLLBACK TO s;
COMMIT;
SELECT pg_sleep(0.3) \\g /dev/null
\\echo after-savepoint
SELECT parflow_complete($task, '$token') \\g /dev/null
SELECT pg_sleep(0.3) \\g /dev/null
\\echo after-commit
SQL
)" || e2e_die "tx: psql: $out"
before="$(printf '%s\n' "$out" | sed -n '/after-savepoint/q;p' | grep -c 'Asynchronous notification')"
after="$(printf '%s\n' "$out" | sed -n '/after-savepoint/,$p' | grep -c 'Asynchronous notification "parflow_e2e57_t2"')"
if [ "$before" -eq 0 ] && [ "$after" -eq 1 ]; then
    e2e_pass "tx: no notification from the rolled-back completions, one from the committed one"
else
    e2e_fail "tx: notifications before the commit: $before (want 0), after: $after (want 1)" "$out"
fi
e2e_check_eq "tx: b was handed over by the committed completion" "
    SELECT count(*) FROM parflow.event e JOIN parflow.tasks t ON t.task = e.task_id
     WHERE e.run_id = $run4 AND t.stage = 'b' AND e.kind = 'dispatched' AND (e.detail->>'handover')::bigint = $task" 1
e2e_q -c "SELECT parflow_cancel($run4)" >/dev/null

# --- 5. a commit that waits for a synchronous standby -------------------------
e2e_define e2e_handover_other '{"groups": [
    {"name": "g", "stages": [{"name": "o", "agent": "e2e57_o", "estimate": "1 min"}]}]}' >/dev/null ||
    e2e_die "define other"
pair_claimed e2e_handover_sync e2e57_s1 e2e57_s2
run5=$pair_run
sent0="$(e2e_q -c "SELECT value FROM parflow_metrics() WHERE metric = 'parflow_handover_notifications_total'")"
sync_reset() {
    PGOPTIONS="-c synchronous_commit=local" e2e_q -c "ALTER SYSTEM RESET synchronous_standby_names" \
        -c "SELECT pg_reload_conf()" >/dev/null 2>&1 || true
}
pf_on_exit sync_reset
e2e_q -c "ALTER SYSTEM SET synchronous_standby_names = 'e2e57_nobody'" -c "SELECT pg_reload_conf()" >/dev/null ||
    e2e_die "sync: set synchronous_standby_names"
sleep 0.3
PGAPPNAME=e2e57_waiter "$PG_BIN/psql" -X -qAt -c "SELECT parflow_complete($task, '$token')" \
    >"$E2E_DIR/waiter.log" 2>&1 &
waiter=$!
export PGOPTIONS="${PGOPTIONS:-} -c synchronous_commit=local"   # this script's own sessions
if pf_wait_for "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE application_name = 'e2e57_waiter'
                                  AND wait_event = 'SyncRep')" 10; then
    e2e_pass "sync: the completion's commit waits for the standby"
else
    e2e_fail "sync: the completion's commit does not wait for the standby" "$(cat "$E2E_DIR/waiter.log")"
fi
run6="$(e2e_start "SELECT parflow_start('e2e_handover_other', parallel => true)")" || e2e_die "start other"
if pf_wait_for "SELECT EXISTS (SELECT FROM parflow.task WHERE run_id = $run6 AND state = 'dispatched')" 5; then
    e2e_pass "sync: another run is dispatched while that commit waits"
else
    e2e_fail "sync: the dispatcher is held up by a commit waiting for a standby"
fi
e2e_q -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'e2e57_waiter'" >/dev/null
wait "$waiter" 2>/dev/null
if pf_wait_for "SELECT value > $sent0 FROM parflow_metrics() WHERE metric = 'parflow_handover_notifications_total'" 10; then
    e2e_pass "sync: once the commit stood, the hand-over's notification went out"
else
    e2e_fail "sync: no hand-over notification after the commit" "$(cat "$E2E_DIR/waiter.log")"
fi
e2e_check_eq "sync: b was handed over by that completion" "
    SELECT count(*) FROM parflow.event e JOIN parflow.tasks t ON t.task = e.task_id
     WHERE e.run_id = $run5 AND t.stage = 'b' AND e.kind = 'dispatched' AND (e.detail->>'handover')::bigint = $task" 1
sync_reset
e2e_q -c "SELECT parflow_cancel($run5)" -c "SELECT parflow_cancel($run6)" >/dev/null

# --- 6. complete-and-claim claims the task it hands over ----------------------
notes() { e2e_q -c "SELECT value FROM parflow_metrics() WHERE metric = 'parflow_handover_notifications_total'"; }
# handed_notified WHAT RUN STAGE BY: RUN's STAGE is dispatched, handed over by
# task BY, and a hand-over notification went out since n0 was read.
handed_notified() {
    e2e_check_eq "$1: dispatched, handed over by task $4 (not claimed)" "
        SELECT t.state || ' ' || (e.detail->>'handover') FROM parflow.tasks t JOIN parflow.event e
            ON e.task_id = t.task AND e.kind = 'dispatched'
         WHERE t.run = $2 AND t.stage = '$3'" "dispatched $4"
    if pf_wait_for "SELECT value > $n0 FROM parflow_metrics() WHERE metric = 'parflow_handover_notifications_total'" 10; then
        e2e_pass "$1: its hand-over was notified"
    else
        e2e_fail "$1: no notification of its hand-over"
    fi
}
e2e_define e2e_handover_fused '{"groups": [
    {"name": "g1", "stages": [{"name": "a", "agent": "e2e57_f", "estimate": "1 min"}]},
    {"name": "g2", "stages": [{"name": "b", "agent": "e2e57_f", "estimate": "1 min"}]},
    {"name": "g3", "stages": [{"name": "c", "agent": "e2e57_g", "estimate": "1 min"}]}]}' >/dev/null ||
    e2e_die "define fused"
run7="$(e2e_start "SELECT parflow_start('e2e_handover_fused', parallel => true)")" || e2e_die "start fused"
pf_wait_for "SELECT EXISTS (SELECT FROM parflow.task WHERE run_id = $run7 AND state = 'dispatched')" 10 ||
    e2e_die "fused: a not dispatched"
read -r ta tka <<<"$(e2e_q -F ' ' -c "SELECT task, token FROM parflow_claim('e2e57_f', 'e2e57-f')")"
[ -n "$ta" ] || e2e_die "fused: claim a"
sleep 0.3
n0="$(notes)"
read -r tb tkb up <<<"$(e2e_q -F ' ' -c "SELECT task, token, input->'upstream'->'a'
                                              FROM parflow_complete_and_claim($ta, '$tka', '{\"x\": 1}', 'e2e57_f', 'e2e57-f')")"
e2e_check_eq "fused: the call returned b, running under the caller, with a's output as input" "
    SELECT t.stage || ' ' || t.state || ' ' || t.worker || ' ' || '${up:-}' FROM parflow.tasks t WHERE t.task = ${tb:-0}" \
    'b running e2e57-f {"x": 1}'
e2e_check_eq "fused: b's events, in the completion's transaction: ready, dispatched (naming a), running" "
    SELECT string_agg(e.kind || coalesce(' ' || (e.detail->>'handover'), ''), ', ' ORDER BY e.id)
           || ' ' || bool_and(e.xmin = s.xmin)
      FROM parflow.event e, parflow.event s
     WHERE e.task_id = ${tb:-0} AND s.task_id = $ta AND s.kind = 'succeeded'" "ready, dispatched $ta, running true"
sleep 0.5
e2e_check_eq "fused: no notification for b" "SELECT $(notes) - $n0" 0
# c is of another kind: handed over as before, notified; nothing to claim
got="$(e2e_q -c "SELECT count(*) FROM parflow_complete_and_claim(${tb:-0}, '${tkb:-}', '{}', 'e2e57_f', 'e2e57-f')")"
e2e_check_eq "fused: completing b claims nothing (c is of another kind)" "SELECT $got" 0
handed_notified "fused: c" "$run7" c "${tb:-0}"
e2e_q -c "SELECT parflow_cancel($run7)" >/dev/null
# a dispatched task of the kind comes first: the claim takes it; b is handed over
e2e_define e2e_handover_first '{"groups": [
    {"name": "g", "stages": [{"name": "o", "agent": "e2e57_f", "estimate": "10 min"}]}]}' >/dev/null ||
    e2e_die "define first"
run8="$(e2e_start "SELECT parflow_start('e2e_handover_first', parallel => true)")" || e2e_die "start first"
pf_wait_for "SELECT EXISTS (SELECT FROM parflow.task WHERE run_id = $run8 AND state = 'dispatched')" 10 ||
    e2e_die "first: o not dispatched"
run9="$(e2e_start "SELECT parflow_start('e2e_handover_fused', parallel => true)")" || e2e_die "start fused 2"
pf_wait_for "SELECT EXISTS (SELECT FROM parflow.task WHERE run_id = $run9 AND state = 'dispatched')" 10 ||
    e2e_die "fused 2: a not dispatched"
read -r ta tka <<<"$(e2e_q -F ' ' -c "SELECT c.task, c.token FROM parflow_claim('e2e57_f', 'e2e57-f', max_tasks => 2) c
                                      WHERE c.run = $run9")"
e2e_q -c "SELECT parflow_release(c.task, c.token) FROM parflow.task t, LATERAL (SELECT t.id AS task, t.token) c
           WHERE t.run_id = $run8 AND t.state = 'running'" >/dev/null || e2e_die "first: release o"
pf_wait_for "SELECT EXISTS (SELECT FROM parflow.task WHERE run_id = $run8 AND state = 'dispatched')" 10 ||
    e2e_die "first: o not dispatched again"
sleep 0.3
n0="$(notes)"
got="$(e2e_q -c "SELECT r.run FROM parflow_complete_and_claim(${ta:-0}, '${tka:-}', '{}', 'e2e57_f', 'e2e57-f') r")"
e2e_check_eq "first: the claim took the dispatched task that came first" "SELECT '${got:-none}'" "$run8"
handed_notified "first: b" "$run9" b "${ta:-0}"
e2e_q -c "SELECT parflow_cancel($run8)" -c "SELECT parflow_cancel($run9)" >/dev/null
e2e_finish
