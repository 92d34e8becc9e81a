#!/usr/bin/env bash
# test/e2e/55_preempt.sh -- P0 preemption with real agents.
#
# A P2 run of 8 stages (10 estimated minutes each = 1.2 s) fills
# parflow.max_parallel_stages (4) with two agents of --concurrency 4; then a
# P0 run of one stage of the same kind starts.  Checks: the dispatcher
# interrupts exactly one P2 task (the P0 run needs one slot), its agent
# releases it (not a failed attempt), the P0 task is dispatched right after
# the release and before any other P2 task, the interrupted stage runs again
# later, both runs succeed, and the cap held throughout.  Prints the time from
# the P0 run's start to its dispatch.
set -u -o pipefail
# shellcheck source=test/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init 55_preempt 'e2e_preempt%'

SCALE=0.002           # 10 estimated minutes = 1.2 s
KIND=e2e55_w
GLOBAL_CAP="$(e2e_q -c "SHOW parflow.max_parallel_stages")"
e2e_check_idle
mark="$(e2e_event_mark)"

e2e_define e2e_preempt_low "{\"groups\": [{\"name\": \"g\", \"stages\": [
    $(for i in 1 2 3 4 5 6 7 8; do printf '{"name": "s%s", "agent": "%s", "estimate": "10 min"}%s' \
        "$i" "$KIND" "$([ "$i" -lt 8 ] && echo ,)"; done)]}]}" >/dev/null || e2e_die "define low"
e2e_define e2e_preempt_p0 "{\"groups\": [{\"name\": \"g\", \"stages\": [
    {\"name\": \"hotfix\", \"agent\": \"$KIND\", \"estimate\": \"1 min\"}]}]}" >/dev/null || e2e_die "define p0"

e2e_agent e2e55-w1 "$KIND" --simulate "$SCALE" --concurrency 4 -q
e2e_agent e2e55-w2 "$KIND" --simulate "$SCALE" --concurrency 4 -q
sleep 0.3

low="$(e2e_start "SELECT parflow_start('e2e_preempt_low', priority => 2, parallel => true)")" || e2e_die "start low"
pf_wait_for "SELECT count(*) = $GLOBAL_CAP FROM parflow.task WHERE run_id = $low AND state = 'running'" 10 ||
    e2e_die "the P2 run did not fill the cap"
hi="$(e2e_start "SELECT parflow_start('e2e_preempt_p0', priority => 0, parallel => true)")" || e2e_die "start P0"
e2e_log "P2 run $low, P0 run $hi: $(e2e_wait_runs 60 "$hi" "$low")"
e2e_expect_run "$hi" succeeded
e2e_expect_run "$low" succeeded

e2e_check_eq "one P2 task interrupted (the P0 run needs one slot)" \
    "SELECT count(*) FROM parflow.event WHERE run_id = $low AND kind = 'interrupt'" 1
e2e_check_true "its agent released it, not counted as a failure" "
    SELECT bool_and(e.detail->>'interrupted' = 'true') AND count(*) = 1, count(*) || ' release(s)'
      FROM parflow.event e WHERE e.run_id = $low AND e.kind = 'released'"
e2e_check_eq "no failed attempt, no expired interrupt, in either run" \
    "SELECT count(*) FROM parflow.event WHERE run_id IN ($low, $hi)
        AND kind IN ('retry', 'failed', 'interrupt_expired')" 0
e2e_check_true "the P0 task was dispatched after the release, before any other P2 task" "
    WITH rel AS (SELECT id FROM parflow.event WHERE run_id = $low AND kind = 'released'),
         p0 AS (SELECT id FROM parflow.event WHERE run_id = $hi AND kind = 'dispatched')
    SELECT (SELECT id FROM p0) > (SELECT id FROM rel)
       AND NOT EXISTS (SELECT FROM parflow.event e WHERE e.run_id = $low AND e.kind = 'dispatched'
                          AND e.id > (SELECT id FROM rel) AND e.id < (SELECT id FROM p0))"
e2e_check_true "the interrupted stage ran again and succeeded" "
    SELECT t.state = 'succeeded' AND t.attempt = 1, t.stage || ' ' || t.state || ' attempt ' || t.attempt
      FROM parflow.tasks t JOIN parflow.event e ON e.task_id = t.task AND e.kind = 'interrupt'
     WHERE t.run = $low"
e2e_check "every stage of both runs succeeded exactly once" "
    SELECT format('task %s succeeded %s times', t.id, count(e.id)) FROM parflow.task t
      LEFT JOIN parflow.event e ON e.task_id = t.id AND e.kind = 'succeeded'
     WHERE t.run_id IN ($low, $hi) GROUP BY t.id HAVING count(e.id) <> 1"
e2e_check_cap "parflow.max_parallel_stages held" "e.id > $mark" "$GLOBAL_CAP" "$GLOBAL_CAP"
e2e_log "P0 run start to its dispatch: $(e2e_q -c "
    SELECT round(1000 * extract(epoch FROM d.at - s.at))::int || ' ms (interrupt to release: '
           || round(1000 * extract(epoch FROM r.at - i.at))::int || ' ms)'
      FROM parflow.event s, parflow.event d, parflow.event i, parflow.event r
     WHERE s.run_id = $hi AND s.kind = 'run_started' AND d.run_id = $hi AND d.kind = 'dispatched'
       AND i.run_id = $low AND i.kind = 'interrupt' AND r.run_id = $low AND r.kind = 'released'")"
e2e_finish
