#!/usr/bin/env bash
# test/e2e/40_agent_protocol.sh -- the agent protocol with real agents.
#
#  1. late start: the run is started (its tasks dispatched) before any agent
#     runs; an agent started 2 s later finds the work by claiming.
#  2. retry: an --exec command that fails once, then succeeds (a marker file
#     per task): a 'retry' event, then success on attempt 2.
#  3. permanent failure: a command that always fails, max_attempts 2: the task
#     fails after 2 attempts, its sibling still runs to the end, its
#     dependent never starts, the run is 'blocked' and parflow_failures()
#     lists exactly that stage with 2 attempts.
#  4. dead agent: an agent with --lease '2 s' is killed (SIGKILL) in the middle
#     of a task; the dispatcher expires the lease, a second agent takes the
#     task over and the run succeeds; the dead agent's token is refused
#     (SQLSTATE 55000) by complete, heartbeat and fail.
#  3b. a permanent failure and a sibling's success committed concurrently
#     (psql playing the agents): the run still ends 'blocked', in both orders.
#  5. shutdown: an agent stopped with SIGTERM gives its task back ('released',
#     not counted as an attempt); another agent finishes it on attempt 1.
set -u -o pipefail
# shellcheck source=test/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init 40_agent_protocol 'e2e40%'

SCALE=0.0002
e2e_check_idle

# e2e_sqlstate SQL: the SQLSTATE SQL fails with, or "ok"; the message on
# the next lines.
sqlstate() {
    local out
    if out="$(printf '\\set VERBOSITY verbose\n%s;\n' "$1" | e2e_q 2>&1)"; then
        echo ok
    else
        printf '%s\n' "$out" | sed -n 's/^.*ERROR:  \([0-9A-Z]\{5\}\): .*$/\1/p' | head -n 1
        printf '%s\n' "$out" | grep -E 'ERROR|DETAIL' | head -n 2
    fi
}

# -- 1. late start -------------------------------------------------------------
e2e_log "1. late start"
e2e_define e2e40_late '{"groups": [{"name": "g", "stages": [
    {"name": "a", "agent": "e2e40_late", "estimate": "5 min"},
    {"name": "b", "agent": "e2e40_late", "estimate": "5 min"},
    {"name": "c", "agent": "e2e40_late", "estimate": "5 min"}]}]}' >/dev/null || e2e_die "define e2e40_late"
late="$(e2e_start "SELECT parflow_start('e2e40_late', parallel => true)")" || e2e_die "start e2e40_late"
if pf_wait_for "SELECT count(*) = 3 FROM parflow.task WHERE run_id = $late AND state = 'dispatched'" 10; then
    e2e_pass "late run $late: its 3 tasks are dispatched with no agent listening"
else
    e2e_fail "late run $late: its 3 tasks are dispatched with no agent listening" \
        "$(e2e_q -c "SELECT stage || ': ' || state FROM parflow.tasks WHERE run = $late ORDER BY task")"
fi
sleep 2
e2e_check_eq "late run $late: nothing claimed after 2 s" \
    "SELECT count(*) FROM parflow.event WHERE run_id = $late AND kind = 'running'" 0
e2e_agent e2e40-late e2e40_late --simulate "$SCALE" --concurrency 3 -q
e2e_log "run $late: $(e2e_wait_run "$late" 60)"
e2e_expect_run "$late" succeeded
e2e_check_once "late run $late: every task exactly once" "{$late}"
e2e_check "late run $late: claimed by the late agent, 2 s or more after dispatch" "
    SELECT format('task %s: dispatched %s, running %s (%s)', t.id, d.at, r.at, r.detail)
      FROM parflow.task t
      JOIN parflow.event d ON d.task_id = t.id AND d.kind = 'dispatched'
      JOIN parflow.event r ON r.task_id = t.id AND r.kind = 'running'
     WHERE t.run_id = $late AND (r.at - d.at < interval '2 s' OR r.detail->>'worker' <> 'e2e40-late')"

# -- 2. fail once, then succeed ----------------------------------------------------
e2e_log "2. retry after a failure"
e2e_define e2e40_flaky '{"groups": [{"name": "g", "stages": [
    {"name": "flaky1", "agent": "e2e40_flaky", "estimate": "1 min", "retry_backoff": "0 s"},
    {"name": "flaky2", "agent": "e2e40_flaky", "estimate": "1 min", "retry_backoff": "0 s"}]}]}' >/dev/null ||
    e2e_die "define e2e40_flaky"
mkdir -p "$E2E_DIR/marks"
export E2E_MARKS="$E2E_DIR/marks"
# shellcheck disable=SC2016 # expanded by the agent's /bin/sh
e2e_agent e2e40-flaky e2e40_flaky --concurrency 2 -q --exec '
    m="$E2E_MARKS/$PARFLOW_TASK"
    if [ -e "$m" ]; then
        echo "{\"attempt\": $PARFLOW_ATTEMPT}"
    else
        : >"$m"
        echo "transient failure of $PARFLOW_STAGE" >&2
        exit 1
    fi'
flaky="$(e2e_start "SELECT parflow_start('e2e40_flaky', parallel => true)")" || e2e_die "start e2e40_flaky"
e2e_log "run $flaky: $(e2e_wait_run "$flaky" 60)"
e2e_expect_run "$flaky" succeeded
for stage in flaky1 flaky2; do
    tid="$(e2e_q -c "SELECT task FROM parflow.tasks WHERE run = $flaky AND stage = '$stage'")"
    e2e_check_eq "flaky run $flaky, $stage: events" "SELECT string_agg(kind, ',' ORDER BY id) FROM parflow.event WHERE task_id = $tid" \
        "ready,dispatched,running,retry,dispatched,running,succeeded"
    e2e_check_eq "flaky run $flaky, $stage: the retry event carries attempt 1 and the command's stderr" \
        "SELECT detail->>'attempt' || ' | ' || (detail->>'error') FROM parflow.event WHERE task_id = $tid AND kind = 'retry'" \
        "1 | transient failure of $stage"
    e2e_check_eq "flaky run $flaky, $stage: succeeded on attempt 2 with the command's output" \
        "SELECT state || ' ' || attempt || ' ' || output::text FROM parflow.task WHERE id = $tid" \
        'succeeded 2 {"attempt": 2}'
done
e2e_check_eq "flaky run $flaky: parflow_failures() is empty" "SELECT parflow_failures($flaky)" "[]"

# -- 3. permanent failure ----------------------------------------------------------
e2e_log "3. permanent failure"
e2e_define e2e40_perm '{"groups": [
    {"name": "work", "stages": [
        {"name": "doomed", "agent": "e2e40_bad", "estimate": "1 min", "max_attempts": 2, "retry_backoff": "0 s"},
        {"name": "sibling", "agent": "e2e40_good", "estimate": "60 min"}]},
    {"name": "after", "stages": [
        {"name": "dependent", "agent": "e2e40_good", "estimate": "1 min"}]}]}' >/dev/null ||
    e2e_die "define e2e40_perm"
# shellcheck disable=SC2016
e2e_agent e2e40-bad e2e40_bad -q --exec 'echo "permanent failure: cannot build $PARFLOW_STAGE" >&2; exit 3'
e2e_agent e2e40-good e2e40_good --simulate "$SCALE" -q
perm="$(e2e_start "SELECT parflow_start('e2e40_perm', parallel => true)")" || e2e_die "start e2e40_perm"
e2e_log "run $perm: $(e2e_wait_run "$perm" 60)"
e2e_expect_run "$perm" blocked
e2e_check_eq "perm run $perm: task states" \
    "SELECT string_agg(stage || '=' || state || '/' || attempt, ' ' ORDER BY task) FROM parflow.tasks WHERE run = $perm" \
    "doomed=failed/2 sibling=succeeded/1 dependent=waiting/0"
e2e_check_eq "perm run $perm: doomed's events" \
    "SELECT string_agg(kind, ',' ORDER BY id) FROM parflow.event WHERE task_id = (SELECT task FROM parflow.tasks WHERE run = $perm AND stage = 'doomed')" \
    "ready,dispatched,running,retry,dispatched,running,failed"
e2e_check_eq "perm run $perm: the dependent was never dispatched" \
    "SELECT count(*) FROM parflow.event WHERE task_id = (SELECT task FROM parflow.tasks WHERE run = $perm AND stage = 'dependent')" 0
e2e_check_true "perm run $perm: blocked only after the sibling finished (rule 1), announced once" "
    SELECT (SELECT count(*) FROM parflow.event WHERE run_id = $perm AND kind = 'run_blocked') = 1
       AND (SELECT id FROM parflow.event WHERE run_id = $perm AND kind = 'run_blocked')
         > (SELECT e.id FROM parflow.event e JOIN parflow.tasks t ON t.task = e.task_id
             WHERE t.run = $perm AND t.stage = 'sibling' AND e.kind = 'succeeded')"
e2e_check_eq "perm run $perm: parflow_failures() lists exactly doomed, 2 attempts, with its errors" "
    SELECT jsonb_array_length(f) || ' | ' || (f->0->>'stage') || ' | ' || (f->0->>'agent') || ' | ' || (f->0->>'attempts')
           || ' | ' || (f->0->>'last_error') || ' | ' || jsonb_array_length(f->0->'errors')
           || ' | ' || (SELECT string_agg(x->>'attempt', ',') FROM jsonb_array_elements(f->0->'errors') x)
      FROM parflow_failures($perm) f" \
    "1 | doomed | e2e40_bad | 2 | permanent failure: cannot build doomed | 2 | 1,2"
e2e_check_true "perm run $perm: the run_blocked event carries the same report" "
    SELECT detail->'failures' = parflow_failures($perm) FROM parflow.event WHERE run_id = $perm AND kind = 'run_blocked'"

# -- 3b. a failure and a success committed at the same time ---------------------------
# Two transactions, each seeing the other's task still running, must not
# leave the run 'running' with nothing left to run.  The agents are played
# by psql (no agent listens for these kinds); the first transaction waits
# 1.5 s before it commits, the second commits meanwhile.
e2e_log "3b. a failure and a sibling's success at the same time"
e2e_define e2e40_race '{"groups": [
    {"name": "work", "stages": [
        {"name": "doomed", "agent": "e2e40_rbad", "estimate": "1 min", "max_attempts": 1},
        {"name": "sibling", "agent": "e2e40_rgood", "estimate": "1 min"}]},
    {"name": "after", "stages": [{"name": "dependent", "agent": "e2e40_rgood", "estimate": "1 min"}]}]}' >/dev/null ||
    e2e_die "define e2e40_race"
for order in fail-first complete-first; do
    race="$(e2e_start "SELECT parflow_start('e2e40_race', parallel => true)")" || e2e_die "start e2e40_race"
    pf_wait_for "SELECT count(*) = 2 FROM parflow.task WHERE run_id = $race AND state = 'dispatched'" 10 ||
        e2e_die "race run $race: tasks not dispatched"
    read -r tb kb <<<"$(e2e_q -F ' ' -c "SELECT task, token FROM parflow_claim('e2e40_rbad', 'psql-bad')")"
    read -r tg kg <<<"$(e2e_q -F ' ' -c "SELECT task, token FROM parflow_claim('e2e40_rgood', 'psql-good')")"
    fail_sql="SELECT parflow_fail($tb, '$kb', 'boom', false)"
    done_sql="SELECT parflow_complete($tg, '$kg', '{}')"
    if [ "$order" = fail-first ]; then first="$fail_sql" second="$done_sql"; else first="$done_sql" second="$fail_sql"; fi
    e2e_q -c "BEGIN" -c "$first" -c "SELECT pg_sleep(1.5)" -c "COMMIT" >/dev/null &
    slow=$!
    sleep 0.5
    e2e_q -c "$second" >/dev/null
    wait "$slow"
    sleep 0.5
    e2e_check_eq "race run $race ($order, held open 1.5 s while the other is sent): blocked, once" \
        "SELECT r.state || ' ' || (SELECT count(*) FROM parflow.event WHERE run_id = $race AND kind = 'run_blocked')
           || ' ' || (SELECT string_agg(state, ',' ORDER BY id) FROM parflow.task WHERE run_id = $race)
           FROM parflow.run r WHERE r.id = $race" \
        "blocked 1 failed,succeeded,waiting"
done

# -- 4. dead agent ---------------------------------------------------------------
e2e_log "4. dead agent"
e2e_define e2e40_dead '{"groups": [{"name": "g", "stages": [
    {"name": "longjob", "agent": "e2e40_dead", "estimate": "1 min", "retry_backoff": "0 s"}]}]}' >/dev/null ||
    e2e_die "define e2e40_dead"
# Attempt 1 hangs; later attempts take 1.5 s, then report who did the work.
# shellcheck disable=SC2016
DEAD_CMD='if [ "$PARFLOW_ATTEMPT" = 1 ]; then exec sleep 60; fi
          sleep 1.5; echo "{\"done_by\": \"$PARFLOW_WORKER\"}"'
e2e_agent e2e40-deadA e2e40_dead --lease '2 s' -q --exec "$DEAD_CMD"
pidA=$E2E_LAST_PID
dead="$(e2e_start "SELECT parflow_start('e2e40_dead', parallel => true)")" || e2e_die "start e2e40_dead"
tid="$(e2e_q -c "SELECT task FROM parflow.tasks WHERE run = $dead")"
pf_wait_for "SELECT state = 'running' AND worker = 'e2e40-deadA' FROM parflow.task WHERE id = $tid" 10 ||
    e2e_die "agent A did not claim task $tid"
sleep 3.5   # longer than the lease: only heartbeats keep it
e2e_check_true "dead run $dead: agent A holds the task past its 2 s lease by heartbeats" "
    SELECT state = 'running' AND worker = 'e2e40-deadA' AND lease_until > clock_timestamp()
           AND NOT EXISTS (SELECT FROM parflow.event WHERE task_id = $tid AND kind = 'retry'),
           'lease until ' || lease_until
      FROM parflow.task WHERE id = $tid"
read -r token lease_end <<<"$(e2e_q -F ' ' -c "SELECT token, lease_until FROM parflow.task WHERE id = $tid")"
children="$(pgrep -P "$pidA" | tr '\n' ' ')"
{ kill -KILL "$pidA"; wait "$pidA"; } 2>/dev/null
for c in $children; do kill -KILL "$c" 2>/dev/null || true; done
killed_at="$(e2e_q -c "SELECT clock_timestamp()")"
e2e_log "killed agent A (pid $pidA, children: ${children:-none}) holding task $tid with token $token"
e2e_agent e2e40-deadB e2e40_dead -q --exec "$DEAD_CMD"
if pf_wait_for "SELECT state = 'running' AND worker = 'e2e40-deadB' FROM parflow.task WHERE id = $tid" 15; then
    e2e_pass "dead run $dead: agent B claimed the task after A's lease expired"
else
    e2e_fail "dead run $dead: agent B claimed the task after A's lease expired" \
        "$(e2e_q -c "SELECT state || ' ' || coalesce(worker, '-') || ' ' || attempt FROM parflow.task WHERE id = $tid")"
fi
# While B holds it: A's token is refused.
for call in "parflow_complete($tid, '$token', '{\"done_by\": \"a ghost\"}')" \
            "parflow_heartbeat($tid, '$token')" \
            "parflow_fail($tid, '$token', 'a ghost', false)"; do
    out="$(sqlstate "SELECT $call")"
    if [ "$(head -n 1 <<<"$out")" = 55000 ]; then
        e2e_pass "dead run $dead: the dead agent's token is refused by ${call%%(*} (55000)"
    else
        e2e_fail "dead run $dead: the dead agent's token is refused by ${call%%(*} (55000)" "$out"
    fi
done
e2e_log "run $dead: $(e2e_wait_run "$dead" 60)"
e2e_expect_run "$dead" succeeded
e2e_check_eq "dead run $dead: events" "SELECT string_agg(kind, ',' ORDER BY id) FROM parflow.event WHERE task_id = $tid" \
    "ready,dispatched,running,retry,dispatched,running,succeeded"
e2e_check_eq "dead run $dead: the lease expired (not before the kill, nor before A's last lease end), A's attempt counted" \
    "SELECT (detail->>'why') || ' | ' || (detail->>'worker') || ' | ' || (detail->>'attempt') || ' | '
            || (at > '$killed_at' AND at >= '$lease_end'::timestamptz)
       FROM parflow.event WHERE task_id = $tid AND kind = 'retry'" \
    "lease expired | e2e40-deadA | 1 | true"
e2e_check_eq "dead run $dead: done by B on attempt 2, the ghost's output ignored" \
    "SELECT state || ' ' || attempt || ' ' || worker || ' ' || (output->>'done_by') FROM parflow.task WHERE id = $tid" \
    "succeeded 2 e2e40-deadB e2e40-deadB"
out="$(sqlstate "SELECT parflow_complete($tid, '$token', '{}')")"
if [ "$(head -n 1 <<<"$out")" = 55000 ]; then
    e2e_pass "dead run $dead: the dead agent's token is refused after the task succeeded (55000)"
else
    e2e_fail "dead run $dead: the dead agent's token is refused after the task succeeded (55000)" "$out"
fi

# -- 5. SIGTERM releases ------------------------------------------------------------
e2e_log "5. SIGTERM releases held tasks"
e2e_define e2e40_term '{"groups": [{"name": "g", "stages": [
    {"name": "held", "agent": "e2e40_term", "estimate": "1 min"}]}]}' >/dev/null || e2e_die "define e2e40_term"
# shellcheck disable=SC2016
TERM_CMD='if [ "$PARFLOW_WORKER" = e2e40-term1 ]; then exec sleep 60; fi; echo "{\"done_by\": \"$PARFLOW_WORKER\"}"'
e2e_agent e2e40-term1 e2e40_term -q --exec "$TERM_CMD"
pid1=$E2E_LAST_PID
term="$(e2e_start "SELECT parflow_start('e2e40_term', parallel => true)")" || e2e_die "start e2e40_term"
tid="$(e2e_q -c "SELECT task FROM parflow.tasks WHERE run = $term")"
pf_wait_for "SELECT state = 'running' FROM parflow.task WHERE id = $tid" 10 || e2e_die "task $tid not claimed"
kill -TERM "$pid1"
for _ in $(seq 1 50); do kill -0 "$pid1" 2>/dev/null || break; sleep 0.1; done
wait "$pid1" 2>/dev/null
rc=$?
e2e_check_eq "term run $term: agent 1 exits 0 on SIGTERM" "SELECT $rc" 0
e2e_check_true "term run $term: the task is released, back to ready, the attempt not counted" "
    WITH k AS (SELECT string_agg(kind, ',' ORDER BY id) AS k FROM parflow.event WHERE task_id = $tid)
    SELECT t.attempt = 0 AND t.state IN ('ready', 'dispatched') AND t.token IS NULL
           AND k.k ~ '^ready,dispatched,running,released(,dispatched)?\$',
           t.state || ' ' || t.attempt || ' ' || k.k
      FROM parflow.task t, k WHERE t.id = $tid"
e2e_agent e2e40-term2 e2e40_term -q --exec "$TERM_CMD"
e2e_log "run $term: $(e2e_wait_run "$term" 60)"
e2e_expect_run "$term" succeeded
e2e_check_eq "term run $term: done by agent 2 on attempt 1" \
    "SELECT state || ' ' || attempt || ' ' || worker FROM parflow.task WHERE id = $tid" "succeeded 1 e2e40-term2"
e2e_finish
