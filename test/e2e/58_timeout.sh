#!/usr/bin/env bash
# test/e2e/58_timeout.sh -- a stage's timeout with real agents.
#
# A stage whose work (simulated, 3.6 s) outlasts its timeout (1 s), with two
# attempts: each attempt is ended by the dispatcher soon after the timeout
# (within parflow.naptime: a "retry", then a "failed" event, why = timeout),
# its agent is told to stop (a "cancel" notification: the agent stops the work
# and does not report it), and the run is blocked with the timeout as the
# stage's error, long before two full attempts would have ended.  A sibling
# stage with a generous timeout succeeds.
set -u -o pipefail
# shellcheck source=test/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init 58_timeout 'e2e_timeout%'

e2e_define e2e_timeout '{"groups": [{"name": "g", "stages": [
    {"name": "slow", "agent": "e2e58_w", "estimate": "60 min", "timeout": "1 s",
     "max_attempts": 2, "retry_backoff": "0 s"},
    {"name": "fine", "agent": "e2e58_w", "estimate": "5 min", "timeout": "1 h"}]}]}' >/dev/null ||
    e2e_die "define"
e2e_agent e2e58-w e2e58_w --simulate 0.001 --concurrency 2
sleep 0.3
t0=$SECONDS
run="$(e2e_start "SELECT parflow_start('e2e_timeout', parallel => true)")" || e2e_die "start"
e2e_log "run $run: $(e2e_wait_run "$run" 30)"
took=$((SECONDS - t0))
e2e_expect_run "$run" blocked
e2e_check_eq "slow: one retry and one failure, both for the timeout" "
    SELECT string_agg(e.kind || '/' || (e.detail->>'why'), ',' ORDER BY e.id)
      FROM parflow.event e JOIN parflow.tasks t ON t.task = e.task_id
     WHERE e.run_id = $run AND t.stage = 'slow' AND e.kind IN ('retry', 'failed')" "retry/timeout,failed/timeout"
e2e_check_true "slow: failed after 2 attempts, the timeout as its error" "
    SELECT t.state = 'failed' AND t.attempt = 2 AND tk.error LIKE '%ran longer than its timeout of 1.0s',
           t.state || ' ' || t.attempt || ' ' || tk.error
      FROM parflow.tasks t JOIN parflow.task tk ON tk.id = t.task WHERE t.run = $run AND t.stage = 'slow'"
e2e_check_true "slow: each attempt ended within 3 s of its claim (the work takes 3.6 s)" "
    SELECT bool_and(x.ended - x.claimed < interval '3 s'), string_agg(round(extract(epoch FROM x.ended - x.claimed)::numeric, 2)::text, ' s, ') || ' s'
      FROM (SELECT e.at AS ended,
                   (SELECT max(c.at) FROM parflow.event c WHERE c.task_id = e.task_id AND c.kind = 'running' AND c.id < e.id) AS claimed
              FROM parflow.event e JOIN parflow.tasks t ON t.task = e.task_id
             WHERE e.run_id = $run AND t.stage = 'slow' AND e.kind IN ('retry', 'failed')) x"
e2e_check_eq "fine: succeeded under its generous timeout" \
    "SELECT state FROM parflow.tasks WHERE run = $run AND stage = 'fine'" succeeded
if [ "$(grep -c 'cancelled' "$E2E_DIR/e2e58-w.log")" -ge 2 ]; then
    e2e_pass "the agent was told to stop both attempts"
else
    e2e_fail "the agent was not told to stop both attempts" "$(tail -20 "$E2E_DIR/e2e58-w.log")"
fi
if [ "$took" -lt 7 ]; then
    e2e_pass "the run was blocked in ${took} s, before two full attempts (7.2 s)"
else
    e2e_fail "the run took ${took} s"
fi
e2e_check_eq "no report of a timed-out attempt was accepted" "
    SELECT count(*) FROM parflow.event e JOIN parflow.tasks t ON t.task = e.task_id
     WHERE e.run_id = $run AND t.stage = 'slow' AND e.kind = 'succeeded'" 0
e2e_finish
