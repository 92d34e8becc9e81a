#!/usr/bin/env bash
# test/e2e/30_claim_race.sh -- 2,000 independent tasks, 16 agents racing to
# claim them (every dispatch NOTIFY wakes all of them).
#
# One group of 2,000 stages of one agent kind with tiny estimates;
# parflow.max_parallel_stages raised to 64 (ALTER SYSTEM + reload, reset at
# exit); 12 agents with --concurrency 1 and 4 with --concurrency 2.
# Checks: the run succeeds; every task was dispatched, claimed ('running')
# and succeeded exactly once, on its first attempt, by the worker the task
# names; no retry or release; the cap of 64 held (and was reached); every
# agent got work.  Prints the elapsed time and the throughput.
set -u -o pipefail
# shellcheck source=test/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init 30_claim_race 'e2e_claim_race'

N=2000
CAP=64
SCALE=0.0001          # the 1-minute estimate = 6 ms
WF=e2e_claim_race
KIND=e2e30_worker

# shellcheck disable=SC2317 # run at exit, through pf_on_exit
restore_cap() {
    e2e_q -c "ALTER SYSTEM RESET parflow.max_parallel_stages" -c "SELECT pg_reload_conf()" >/dev/null ||
        echo "could not reset parflow.max_parallel_stages" >&2
}
e2e_check_idle
pf_on_exit restore_cap
e2e_q -c "ALTER SYSTEM SET parflow.max_parallel_stages = $CAP" -c "SELECT pg_reload_conf()" >/dev/null ||
    e2e_die "ALTER SYSTEM SET parflow.max_parallel_stages"
pf_wait_for "SELECT current_setting('parflow.max_parallel_stages') = '$CAP'" 10 ||
    e2e_die "parflow.max_parallel_stages did not become $CAP"
sleep 0.3   # the dispatcher reloads its configuration at its next wake-up
mark="$(e2e_event_mark)"

e2e_q -c "SELECT parflow_define('$WF', jsonb_build_object('groups', jsonb_build_array(jsonb_build_object(
              'name', 'all', 'stages',
              (SELECT jsonb_agg(jsonb_build_object('name', 't' || lpad(i::text, 4, '0'), 'agent', '$KIND',
                                                   'estimate', '1 min') ORDER BY i)
                 FROM generate_series(1, $N) i)))))" >/dev/null || e2e_die "define $WF"

for i in $(seq 1 16); do
    if [ "$i" -le 12 ]; then c=1; else c=2; fi
    e2e_agent "e2e30-w$i" "$KIND" --simulate "$SCALE" --concurrency "$c" -q
done
sleep 0.5   # let them LISTEN, so that they race on the first NOTIFYs too

t0=$(date +%s.%N)
run="$(e2e_start "SELECT parflow_start('$WF', parallel => true)")" || e2e_die "start a run"
state="$(e2e_wait_run "$run" 120)"
t1=$(date +%s.%N)
elapsed=$(echo "$t1 - $t0" | bc)
e2e_log "run $run: $state after $elapsed s (wall clock, start to state change seen)"
e2e_expect_run "$run" succeeded
e2e_check_eq "run $run: tasks" "SELECT count(*) FROM parflow.task WHERE run_id = $run" "$N"
e2e_check_once "run $run: every task dispatched, claimed and succeeded exactly once" "{$run}"
e2e_check "run $run: every task done on attempt 1 by the worker that claimed it" "
    SELECT format('task %s: attempt %s, worker %s, running event %s', t.id, t.attempt, t.worker, e.detail)
      FROM parflow.task t JOIN parflow.event e ON e.run_id = t.run_id AND e.task_id = t.id AND e.kind = 'running'
     WHERE t.run_id = $run
       AND (t.attempt <> 1 OR e.detail->>'worker' IS DISTINCT FROM t.worker OR (e.detail->>'attempt')::int <> 1)
     ORDER BY t.id"
e2e_check_eq "run $run: no retry, release or failure" \
    "SELECT count(*) FROM parflow.event WHERE run_id = $run AND kind IN ('retry', 'released', 'failed')" 0
e2e_check_cap "run $run: parflow.max_parallel_stages = $CAP" "e.id > $mark" "$CAP" "$CAP"
e2e_check_eq "run $run: all 16 agents got work" \
    "SELECT count(DISTINCT worker) FROM parflow.task WHERE run_id = $run" 16
e2e_log "$(e2e_q -c "SELECT 'tasks per worker: min ' || min(n) || ', max ' || max(n)
                      FROM (SELECT worker, count(*) n FROM parflow.task WHERE run_id = $run GROUP BY worker) x")"
e2e_log "$(e2e_q -c "SELECT format('run %s: %s tasks in %s s (%s tasks/s), event log span %s s',
                                  r.id, count(t.*), round(extract(epoch FROM r.finished_at - r.started_at)::numeric, 2),
                                  round(count(t.*) / extract(epoch FROM r.finished_at - r.started_at)::numeric),
                                  round(extract(epoch FROM (SELECT max(at) - min(at) FROM parflow.event WHERE run_id = r.id))::numeric, 2))
                      FROM parflow.run r JOIN parflow.task t ON t.run_id = r.id WHERE r.id = $run GROUP BY r.id")"
e2e_finish
