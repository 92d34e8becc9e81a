#!/usr/bin/env bash
# test/e2e/94_failover_sync.sh -- failover to a synchronous standby mid-run.
#
# A primary and a standby of their own (pg_basebackup -R, streaming, named in
# synchronous_standby_names, synchronous_commit on).  While a run of 36
# stages is under way, the hot standby answers the read paths for it
# (parflow.runs and the other views, parflow_gantt, parflow_report,
# parflow_dot, parflow_metrics) and runs no launcher or dispatcher.  Then
# the primary is stopped with -m immediate mid-run and the standby
# promoted; reference agents (multi-host conninfo, target_session_attrs=
# read-write) reconnect to it by themselves.  On the new primary: its
# launcher started a dispatcher, the run succeeds, every stage succeeded
# exactly once and its work ran exactly once, every completion an agent saw
# accepted is there, and a new run starts and finishes.  Prints how long the
# failover took, from the stop to the first completion on the new primary.
set -u -o pipefail
# shellcheck source=test/e2e/ha_lib.sh
source "$(dirname "$0")/ha_lib.sh"

ha_primary_start "synchronous_commit = on"
ha_standby_create e94_standby || { echo "FAIL: the standby"; exit 1; }
e2e_init 94_failover_sync 'e2e_ha%'
# named once it exists: until then every commit would wait for it
e2e_q -c "ALTER SYSTEM SET synchronous_standby_names = 'e94_standby'" -c "SELECT pg_reload_conf()" >/dev/null ||
    e2e_die "synchronous_standby_names"
pf_wait_for "SELECT count(*) = 1 FROM pg_stat_replication WHERE application_name = 'e94_standby' AND sync_state = 'sync'" 20 ||
    e2e_die "the standby is not a synchronous standby"
e2e_pass "the standby streams synchronously"
ha_define || e2e_die "define"
CONNINFO="host=$PGHOST,$PGHOST port=$HA_PRIMARY_PORT,$HA_STANDBY_PORT dbname=postgres target_session_attrs=read-write connect_timeout=2"

run="$(e2e_start "SELECT parflow_start('$HA_WF', parallel => true)")" || e2e_die "start"
ha_agents "$CONNINFO"
ha_wait_succeeded "$run" 6 60 || e2e_die "the run did not get going"
run0=$run

# --- the hot standby answers the read paths -----------------------------------
pf_wait_for "SELECT pg_last_wal_replay_lsn() IS NOT NULL" 5 >/dev/null 2>&1 || true
sleep 0.5
PGPORT=$HA_STANDBY_PORT e2e_check_eq "the standby is in recovery" "SELECT pg_is_in_recovery()" "t"
PGPORT=$HA_STANDBY_PORT e2e_check_eq "no launcher and no dispatcher run on the hot standby" \
    "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'parflow%'" "0"
PGPORT=$HA_STANDBY_PORT e2e_check_true "the standby answers parflow.runs for a run on the primary" \
    "SELECT workflow = '$HA_WF' AND state IN ('running', 'succeeded') FROM parflow.runs WHERE run = $run"
for q in "SELECT count(*) > 0 FROM parflow.tasks WHERE run = $run" \
    "SELECT count(*) > 0 FROM parflow.events WHERE run = $run" \
    "SELECT count(*) >= 0 FROM parflow.agents_at_work" \
    "SELECT count(*) >= 0 FROM parflow.waiting" \
    "SELECT count(*) >= 0 FROM parflow.stage_stats" \
    "SELECT string_agg(g, E'\\n') LIKE '%s0_0%' FROM parflow_gantt($run) g" \
    "SELECT parflow_gantt_svg($run) LIKE '<svg%'" \
    "SELECT count(*) = 1 FROM parflow_report($run) r WHERE r.workflow = '$HA_WF'" \
    "SELECT parflow_dot('$HA_WF') LIKE 'digraph%'" \
    "SELECT count(*) > 0 FROM parflow_plan('$HA_WF')" \
    "SELECT parflow_failures($run) IS NOT NULL" \
    "SELECT (SELECT value FROM parflow_metrics() WHERE metric = 'parflow_runs{state=\"succeeded\"}') >= 0"; do
    if out="$(ha_q "$HA_STANDBY_PORT" -c "$q" 2>&1)" && [ "$out" = t ]; then
        e2e_pass "on the hot standby: $q"
    else
        e2e_fail "on the hot standby: $q" "$out"
    fi
done

# --- the failover, in a run of its own -----------------------------------------------
e2e_check_eq "the first run succeeds" "SELECT '$(e2e_wait_run "$run0" 60)'" "succeeded"
run="$(e2e_start "SELECT parflow_start('$HA_WF', parallel => true)")" || e2e_die "start"
ha_wait_succeeded "$run" $((HA_STAGES / 3)) 60 || e2e_die "the run did not get to a third"
before="$(e2e_q -c "SELECT count(*) FROM parflow.task WHERE run_id = $run AND state = 'succeeded'")"
t0=$(date +%s%N)
pf_pg_ctl -m immediate -w -t 30 -s stop || e2e_die "stop the primary"
e2e_log "primary stopped (-m immediate) with $before of $HA_STAGES stages succeeded"
pf_as_server "$PG_BIN/pg_ctl" -D "$HA_STANDBY_DIR" -w -t 30 -s promote || e2e_die "promote"
PGPORT=$HA_STANDBY_PORT
export PGPORT
pf_wait_for "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'parflow dispatcher'" 15 &&
    e2e_pass "the new primary's launcher started a dispatcher ($(( ($(date +%s%N) - t0) / 1000000 )) ms after the stop)" ||
    e2e_fail "the new primary's launcher started a dispatcher"
after="$(e2e_q -c "SELECT count(*) FROM parflow.task WHERE run_id = $run AND state = 'succeeded'")"
deadline=$((SECONDS + 30))
while [ "$(e2e_q -c "SELECT count(*) FROM parflow.task WHERE run_id = $run AND state = 'succeeded'")" -le "$after" ] &&
    [ "$SECONDS" -lt "$deadline" ]; do
    sleep 0.05
done
failover_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
e2e_log "first completion on the new primary $failover_ms ms after the stop"
st="$(e2e_wait_run "$run" 90)"
e2e_check_eq "the run succeeds on the new primary" "SELECT '$st'" "succeeded"
ha_check_succeeded_once "$run"
twice="$(ha_work_twice "$run")"
if [ -z "$twice" ] && [ "$(ha_work_stages "$run")" = "$HA_STAGES" ]; then
    e2e_pass "every stage's work ran exactly once ($HA_STAGES stages)"
else
    e2e_fail "every stage's work ran exactly once" "ran twice: $twice; stages that ran: $(ha_work_stages "$run")"
fi
ha_check_accepted "$run"
lost="$(e2e_q -c "SELECT count(*) FROM parflow.event WHERE run_id = $run AND kind = 'retry'")"
e2e_log "retries after the failover (claims whose answer was lost with the connection): $lost"

run2="$(e2e_start "SELECT parflow_start('$HA_WF', parallel => true)")" || e2e_fail "a new run starts on the new primary"
if [ -n "${run2:-}" ]; then
    e2e_check_eq "the new run finishes on the new primary" "SELECT '$(e2e_wait_run "$run2" 60)'" "succeeded"
fi
echo "94_failover_sync: measured: $before of $HA_STAGES stages done at the stop, first completion on the new primary $failover_ms ms after it, $lost retries, $(printf '%s' "$twice" | grep -c .) stages ran twice"
e2e_finish
