#!/usr/bin/env bash
# test/e2e/50_crash.sh -- nothing lost, nothing done twice when a process dies.
#
# A workflow of 220 stages (10 groups of 22, each group waiting for the one
# before, random explicit dependencies inside a group, two agent kinds) run
# by real agents (two per kind, --concurrency 3, lease 3 s).  Three ways to
# break it mid-run, each repeated PF_CRASH_REPEAT times (default 2) on a run
# of its own:
#   dispatcher  kill -9 of the dispatcher (the postmaster restarts every
#               backend; the agents reconnect),
#   agent       kill -9 of an agent holding a task (its lease expires, the
#               task is retried on another agent, and the dead agent's
#               late parflow_complete is refused by its token: 55000),
#   server      pg_ctl stop -m immediate, then start again.
# After each: the run succeeds; every stage succeeded exactly once; no stage
# before its dependencies; every task's events follow the state machine with
# nothing missing (ready, dispatched, running, then succeeded, or a retry
# after a lost lease and the same again); the dispatcher is back.
set -u -o pipefail
# shellcheck source=test/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init 50_crash 'e2e_crash'

REPEAT="${PF_CRASH_REPEAT:-2}"
SCALE=0.0005          # 1 estimated minute = 30 ms
CAP=8
WF=e2e_crash
LEASE='3 s'

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

e2e_q >/dev/null <<SQL || e2e_die "define $WF"
DO \$gen\$
DECLARE
    groups jsonb := '[]';
    stages jsonb;
    st jsonb;
BEGIN
    PERFORM setseed(0.5);
    FOR gi IN 0..9 LOOP
        stages := '[]';
        FOR si IN 0..21 LOOP
            st := jsonb_build_object('name', format('s%s_%s', gi, si),
                                     'agent', CASE WHEN random() < 0.5 THEN 'e2e50_a' ELSE 'e2e50_b' END,
                                     'estimate', (1 + floor(random() * 4)::int) || ' min');
            IF si > 0 AND random() < 0.4 THEN
                st := st || jsonb_build_object('depends_on',
                                               jsonb_build_array(format('s%s_%s', gi, floor(random() * si)::int)));
            END IF;
            stages := stages || jsonb_build_array(st);
        END LOOP;
        groups := groups || jsonb_build_array(jsonb_build_object('name', format('g%s', gi), 'stages', stages));
    END LOOP;
    PERFORM parflow_define('$WF', jsonb_build_object('groups', groups));
END
\$gen\$;
SQL

# agents: NAME -> pid
declare -A AGENT_PID
start_agent() {
    e2e_agent "$1" "$2" --simulate "$SCALE" --concurrency 3 --lease "$LEASE" -q
    AGENT_PID[$1]=$E2E_LAST_PID
}
start_agent e2e50-a1 e2e50_a
start_agent e2e50-a2 e2e50_a
start_agent e2e50-b1 e2e50_b
start_agent e2e50-b2 e2e50_b
sleep 0.3

# wait until N tasks of RUN succeeded (or the run ended)
wait_progress() {
    local run="$1" n="$2" i
    for ((i = 0; i < 600; i++)); do
        [ "$(e2e_q -c "SELECT count(*) >= $n OR bool_or(r.state <> 'running')
                         FROM parflow.task t JOIN parflow.run r ON r.id = t.run_id
                        WHERE t.run_id = $run AND t.state = 'succeeded'" 2>/dev/null)" = t ] && return 0
        sleep 0.05
    done
    return 1
}

# the per-task event sequences that break the state machine
sql_state_machine() {
    cat <<SQL
WITH e AS (
    SELECT e.task_id, e.id, e.kind, lag(e.kind) OVER (PARTITION BY e.task_id ORDER BY e.id) AS prev,
           lead(e.kind) OVER (PARTITION BY e.task_id ORDER BY e.id) AS next
      FROM parflow.event e WHERE e.run_id = $1 AND e.task_id IS NOT NULL)
SELECT format('task %s: %s -> %s', task_id, coalesce(prev, 'start'), kind) FROM e
 WHERE (coalesce(prev, 'start'), kind) NOT IN (('start', 'ready'), ('ready', 'dispatched'), ('dispatched', 'running'),
                                              ('dispatched', 'unclaimed'), ('unclaimed', 'dispatched'),
                                              ('running', 'succeeded'), ('running', 'retry'), ('retry', 'dispatched'),
                                              ('running', 'released'), ('released', 'dispatched'))
    OR (next IS NULL AND kind <> 'succeeded')
 ORDER BY task_id, id
SQL
}

check_run() {
    local run="$1" what="$2"
    e2e_log "$what: run $run $(e2e_wait_run "$run" 120)"
    e2e_expect_run "$run" succeeded
    e2e_check_eq "$what: run $run has its 220 tasks, all succeeded" \
        "SELECT count(*) FILTER (WHERE state = 'succeeded') || '/' || count(*) FROM parflow.tasks WHERE run = $run" \
        "220/220"
    e2e_check "$what: run $run: every stage succeeded exactly once" "
        SELECT format('task %s succeeded %s times', task_id, count(*)) FROM parflow.event
         WHERE run_id = $run AND kind = 'succeeded' GROUP BY task_id HAVING count(*) <> 1"
    e2e_check "$what: run $run: every task's events follow the state machine, none missing" \
        "$(sql_state_machine "$run")"
    e2e_check_deps "$what: run $run: no stage before its dependencies" "{$run}"
    e2e_check_true "$what: the dispatcher is back" \
        "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'parflow dispatcher'"
}

dispatcher_pid() {
    e2e_q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'parflow dispatcher'"
}

for ((rep = 1; rep <= REPEAT; rep++)); do
    # --- kill -9 of the dispatcher ------------------------------------------
    run="$(e2e_start "SELECT parflow_start('$WF', parallel => true)")" || e2e_die "start"
    wait_progress "$run" 60 || e2e_die "run $run made no progress"
    pid="$(dispatcher_pid)"
    e2e_log "dispatcher #$rep: kill -9 $pid with $(e2e_q -c "SELECT count(*) FROM parflow.task WHERE run_id = $run AND state = 'succeeded'") done"
    kill -KILL "$pid" || e2e_die "kill -9 dispatcher $pid"
    sleep 1
    pf_wait_for "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'parflow dispatcher'" 30 ||
        e2e_fail "dispatcher #$rep: the dispatcher did not come back"
    check_run "$run" "dispatcher #$rep"

    # --- kill -9 of an agent holding a task ---------------------------------
    run="$(e2e_start "SELECT parflow_start('$WF', parallel => true)")" || e2e_die "start"
    wait_progress "$run" 60 || e2e_die "run $run made no progress"
    # kill -9 an agent at work, then take a task it still held (one it did
    # not finish before dying); if it held none, try another agent
    task=""
    try=0
    while [ -z "$task" ] && [ "$try" -lt 10 ]; do
        try=$((try + 1))
        worker="$(e2e_q -c "SELECT worker FROM parflow.task WHERE run_id = $run AND state = 'running'
                              AND worker LIKE 'e2e50-%' LIMIT 1")"
        if [ -z "$worker" ]; then
            sleep 0.02
            continue
        fi
        kill -KILL "${AGENT_PID[$worker]}"
        wait "${AGENT_PID[$worker]}" 2>/dev/null
        sleep 0.3   # a report already sent by the dead agent may still commit
        held="$(e2e_q -c "SELECT id || ' ' || token FROM parflow.task
                           WHERE run_id = $run AND state = 'running' AND worker = '$worker' LIMIT 1")"
        if [ -n "$held" ]; then
            read -r task token <<<"$held"
        else
            e2e_log "agent #$rep: $worker held nothing when it died; trying another"
            start_agent "$worker" "$(e2e_q -c "SELECT agent FROM parflow.task WHERE worker = '$worker' LIMIT 1")"
        fi
    done
    [ -n "$task" ] || e2e_die "agent #$rep: no agent died holding a task"
    e2e_log "agent #$rep: killed $worker while it held task $task"
    check_run "$run" "agent #$rep"
    e2e_check_true "agent #$rep: task $task was retried after the lease of $worker expired" "
        SELECT bool_or(kind = 'retry' AND detail->>'why' = 'lease expired' AND detail->>'worker' = '$worker'),
               string_agg(kind, ' ' ORDER BY id)
          FROM parflow.event WHERE task_id = $task"
    late="$(e2e_q -v VERBOSITY=verbose -c "SELECT parflow_complete($task, '$token', '{\"late\": true}')" 2>&1)"
    if [[ "$late" == *"55000"* ]]; then
        e2e_pass "agent #$rep: the dead agent's late parflow_complete is refused (55000)"
    else
        e2e_fail "agent #$rep: the dead agent's late parflow_complete is refused (55000)" "$late"
    fi
    e2e_check_eq "agent #$rep: its output was not taken" \
        "SELECT coalesce(output->>'late', 'none') FROM parflow.task WHERE id = $task" "none"
    start_agent "$worker" "$(e2e_q -c "SELECT agent FROM parflow.task WHERE id = $task")"

    # --- immediate shutdown of the whole server -----------------------------
    run="$(e2e_start "SELECT parflow_start('$WF', parallel => true)")" || e2e_die "start"
    wait_progress "$run" 60 || e2e_die "run $run made no progress"
    e2e_log "server #$rep: pg_ctl stop -m immediate"
    pf_cluster_restart immediate || e2e_die "server #$rep: restart"
    check_run "$run" "server #$rep"
done

# --- an infrastructure error inside the dispatch pass -----------------------
# A trigger makes every pass fail while it inserts its 'dispatched' events
# (as a NOTIFY that cannot be queued would): the pass must roll back whole,
# say so in the server log, dispatch nothing, and succeed once repaired.
# shellcheck disable=SC2317 # run at exit, through pf_on_exit
drop_broken() {
    e2e_q -c "DROP TRIGGER IF EXISTS e2e50_broken ON parflow.event" \
          -c "DROP FUNCTION IF EXISTS e2e50_broken()" >/dev/null 2>&1 || true
}
pf_on_exit drop_broken
e2e_q >/dev/null <<'SQL' || e2e_die "create the failing trigger"
CREATE FUNCTION e2e50_broken() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind = 'dispatched' THEN
        RAISE EXCEPTION 'e2e50: simulated infrastructure failure';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER e2e50_broken BEFORE INSERT ON parflow.event FOR EACH ROW EXECUTE FUNCTION e2e50_broken();
SQL
run="$(e2e_start "SELECT parflow_start('$WF', parallel => true)")" || e2e_die "start"
sleep 2.5
e2e_check_eq "broken pass: nothing of run $run dispatched while every pass fails" \
    "SELECT count(*) FROM parflow.task WHERE run_id = $run AND state NOT IN ('waiting', 'ready')" 0
if grep -q 'e2e50: simulated infrastructure failure' "$PF_LOG" &&
    grep -q 'parflow dispatch pass rolled back' "$PF_LOG"; then
    e2e_pass "broken pass: the error and the rollback are in the server log"
else
    e2e_fail "broken pass: the error and the rollback are in the server log" "$(tail -n 20 "$PF_LOG")"
fi
drop_broken
check_run "$run" "repaired"
e2e_finish
