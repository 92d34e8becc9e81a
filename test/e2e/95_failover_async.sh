#!/usr/bin/env bash
# test/e2e/95_failover_async.sh -- failover to an asynchronous standby that
# lags: the last completions before the crash are lost, and their stages
# run again (at-least-once execution).
#
# A primary and an asynchronous streaming standby of their own.  Mid-run the
# primary's WAL sender is stopped (SIGSTOP) for a second while the agents
# go on completing tasks on the primary (a standby a second behind, as a
# slow network makes it); then the primary is stopped with -m immediate
# (the WAL sender sends nothing more) and the standby promoted.  On the new primary the
# run succeeds, every stage ends succeeded with one succeeded event, and
# every stage's work ran at least once.  Measured and printed: how many
# completions the agents saw accepted were lost, and how many stages' work
# ran twice; the test requires at least one lost completion (else the lag
# was not exercised) and that each lost one's stage ran again.
set -u -o pipefail
# shellcheck source=test/e2e/ha_lib.sh
source "$(dirname "$0")/ha_lib.sh"

LAG_S="${PF_E2E_LAG:-1}"
ha_primary_start "synchronous_commit = on" "parflow.claim_timeout = 2s"
ha_standby_create e95_standby || { echo "FAIL: the standby"; exit 1; }
e2e_init 95_failover_async 'e2e_ha%'
pf_wait_for "SELECT count(*) = 1 FROM pg_stat_replication WHERE application_name = 'e95_standby' AND sync_state = 'async'" 20 ||
    e2e_die "the standby does not stream"
e2e_pass "the standby streams asynchronously"
ha_define || e2e_die "define"
CONNINFO="host=$PGHOST,$PGHOST port=$HA_PRIMARY_PORT,$HA_STANDBY_PORT dbname=postgres target_session_attrs=read-write connect_timeout=2"

run="$(e2e_start "SELECT parflow_start('$HA_WF', parallel => true)")" || e2e_die "start"
ha_agents "$CONNINFO"
ha_wait_succeeded "$run" $((HA_STAGES / 4)) 60 || e2e_die "the run did not get going"

# --- the standby falls behind, the primary dies ---------------------------------
# The primary's WAL sender is stopped (SIGSTOP): what it has not sent yet
# stays on the primary (stopping the standby's receiver would not do: the
# kernel's socket buffers would still bring the WAL over).
walsnd="$(e2e_q -c "SELECT pid FROM pg_stat_replication WHERE application_name = 'e95_standby'")"
[ -n "$walsnd" ] || e2e_die "no WAL sender for the standby"
kill -STOP "$walsnd" || e2e_die "SIGSTOP the WAL sender"
# shellcheck disable=SC2317 # run at exit, through pf_on_exit
cont_walsnd() { kill -CONT "$walsnd" 2>/dev/null || true; }
pf_on_exit cont_walsnd
at_stop="$(e2e_q -c "SELECT count(*) FROM parflow.task WHERE run_id = $run AND state = 'succeeded'")"
sleep "$LAG_S"
before="$(e2e_q -c "SELECT count(*) FROM parflow.task WHERE run_id = $run AND state = 'succeeded'")"
accepted_before="$(ha_accepted | wc -l)"
# the immediate stop's SIGQUIT waits for the WAL sender to be continued; it
# then exits at once, sending nothing more
pf_pg_ctl -m immediate -w -t 30 -s stop &
stopper=$!
sleep 0.3
kill -CONT "$walsnd"
wait "$stopper" || e2e_die "stop the primary"
e2e_log "WAL sender stopped with $at_stop stages succeeded, primary stopped $LAG_S s later with $before"
pf_as_server "$PG_BIN/pg_ctl" -D "$HA_STANDBY_DIR" -w -t 30 -s promote || e2e_die "promote"
PGPORT=$HA_STANDBY_PORT
export PGPORT
survived="$(e2e_q -c "SELECT count(*) FROM parflow.task WHERE run_id = $run AND state = 'succeeded'")"
e2e_log "on the promoted standby: $survived stages succeeded (the primary had $before)"

st="$(e2e_wait_run "$run" 120)"
e2e_check_eq "the run succeeds on the new primary" "SELECT '$st'" "succeeded"
ha_check_succeeded_once "$run"
ran="$(ha_work_stages "$run")"
e2e_check_eq "every stage's work ran at least once" "SELECT $ran" "$HA_STAGES"

# completions the agents saw accepted on the old primary that the new one lost
lost_ids="$(cat "$E2E_DIR"/ha*.log | sed -n 's/.* task=\([0-9]*\) .* completed (.*/\1/p' | sort -n | uniq -d)"
lost="$(printf '%s' "$lost_ids" | grep -c . || true)"
twice="$(ha_work_twice "$run")"
n_twice="$(printf '%s' "$twice" | grep -c . || true)"
e2e_log "accepted completions lost in the failover: $lost (accepted before the stop: $accepted_before); stages whose work ran twice: $n_twice"
if [ "$lost" -ge 1 ]; then
    e2e_pass "the lag lost accepted completions ($lost), as asynchronous replication may"
else
    e2e_fail "the lag lost accepted completions" "none: the lag was not exercised (primary had $before, standby $survived)"
fi
e2e_check_true "lost completions >= stages the primary had done and the standby had not" \
    "SELECT $lost >= $((before - survived)), '$lost >= $before - $survived'"
bad=""
for id in $lost_ids; do
    stage="$(e2e_q -c "SELECT s.name FROM parflow.task t JOIN parflow.run r ON r.id = t.run_id
                         JOIN parflow.stage s ON s.version_id = r.version_id AND s.ord = t.stage_ord WHERE t.id = $id")"
    n="$(awk -v r="$run" -v s="$stage" '$1 == r && $2 == s' "$E2E_DIR/work.log" | wc -l)"
    [ "$n" -ge 2 ] || bad="$bad $stage($n)"
done
if [ -z "$bad" ]; then
    e2e_pass "each lost completion's stage ran again (at-least-once)"
else
    e2e_fail "each lost completion's stage ran again (at-least-once)" "ran once only:$bad"
fi
echo "95_failover_async: measured: standby ${LAG_S} s behind; $before of $HA_STAGES stages done on the primary at the stop, $survived on the promoted standby; $lost accepted completions lost; $n_twice stages ran twice"
e2e_finish
