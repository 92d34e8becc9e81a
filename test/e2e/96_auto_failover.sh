#!/usr/bin/env bash
# test/e2e/96_auto_failover.sh -- failover under pg_auto_failover, decided by
# its monitor.
#
# A pg_auto_failover monitor and two Postgres nodes on this machine, each run
# by its own `pg_autoctl run`, all in a directory of their own and stopped at
# exit; parflow preloaded on the nodes, the monitor's health checks made
# quick (1 s periods, 2 s to call a node unhealthy or a primary gone).  The
# agents use the formation's URI (pg_autoctl show uri: both nodes,
# target_session_attrs=read-write).  Mid-run the primary node dies (SIGKILL
# of its pg_autoctl and its postmaster: the keeper would otherwise restart
# Postgres) and the monitor promotes the other node by itself.  On the new
# primary: a dispatcher runs, the run succeeds, every stage succeeded
# exactly once and its work ran once, every completion an agent saw
# accepted is there, and a new run starts and finishes.  pg_autoctl comes
# from the Debian package postgresql-15-auto-failover (test/bootstrap.sh
# installs it when missing).
set -u -o pipefail
# shellcheck source=test/e2e/ha_lib.sh
source "$(dirname "$0")/ha_lib.sh"
# the monitor takes seconds to decide: leases must outlast that
HA_LEASE='30 s'

if ! command -v pg_autoctl >/dev/null 2>&1; then
    bash "$PF_ROOT/test/bootstrap.sh" >&2 || true
fi
command -v pg_autoctl >/dev/null 2>&1 || { echo "FAIL: pg_autoctl not found (package postgresql-15-auto-failover)"; exit 1; }

# Servers of our own: the shared cluster's libpq settings (test/run.sh
# exports them) would point pg_autoctl at it.
unset PGHOST PGPORT PGDATABASE PGUSER PGHOSTADDR PGSERVICE
PAF="$(mktemp -d /tmp/parflow-paf.XXXXXX)" || exit 1
chmod 755 "$PAF"
[ "$(id -u)" -eq 0 ] && chown "$PF_SERVER_USER:" "$PAF"
P0="$(_pf_pick_port)" && P1="$(_pf_pick_port)" && P2="$(_pf_pick_port)" || exit 1
while [ "$P1" = "$P0" ]; do P1="$(_pf_pick_port)"; done
while [ "$P2" = "$P0" ] || [ "$P2" = "$P1" ]; do P2="$(_pf_pick_port)"; done

# pg_autoctl as the server user, its configuration and state under $PAF
paf() {
    pf_as_server env HOME="$PAF" XDG_CONFIG_HOME="$PAF/config" XDG_DATA_HOME="$PAF/share" \
        XDG_RUNTIME_DIR="$PAF/run" PATH="$PG_BIN:$PATH" pg_autoctl "$@"
}
# paf_run NAME: `pg_autoctl run` of $PAF/NAME in the background, in a
# process group of its own, with its services and Postgres; PAF_PID[NAME]
# is the group (killing it kills the node whole: its keeper, which would
# restart Postgres, and Postgres)
declare -A PAF_PID=()
paf_run() {
    local name="$1"
    pf_as_server env HOME="$PAF" XDG_CONFIG_HOME="$PAF/config" XDG_DATA_HOME="$PAF/share" \
        XDG_RUNTIME_DIR="$PAF/run" PATH="$PG_BIN:$PATH" \
        setsid pg_autoctl run --pgdata "$PAF/$name" >>"$PAF/$name.autoctl.log" 2>&1 &
    local i pid=""
    for ((i = 0; i < 50; i++)); do
        [ -n "$pid" ] && break
        sleep 0.1
        # the setsid'd pg_autoctl itself (not runuser or env, whose command
        # lines also name it): its pid is its process group's
        pid="$(pgrep -o -f "^pg_autoctl run --pgdata $PAF/$name\$" || true)"
    done
    PAF_PID[$name]="$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')"
}
# shellcheck disable=SC2317 # run at exit, through pf_on_exit
paf_cleanup() {
    local name pid groups=()
    for name in node1 node2 monitor; do
        pid="${PAF_PID[$name]:-}"
        [ -n "$pid" ] && groups+=("$pid")
    done
    # and any pg_autoctl of ours paf_run did not get to record
    for pid in $(pgrep -f "^pg_autoctl run --pgdata $PAF/" || true); do
        groups+=("$(ps -o pgid= -p "$pid" | tr -d ' ')")
    done
    for pid in "${groups[@]}"; do
        [ -n "$pid" ] && kill -TERM -- "-$pid" 2>/dev/null
    done
    [ "${#groups[@]}" -gt 0 ] && sleep 1
    for pid in "${groups[@]}"; do
        [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null
    done
    for name in node1 node2 monitor; do
        [ -f "$PAF/$name/postmaster.pid" ] &&
            pf_as_server "$PG_BIN/pg_ctl" -D "$PAF/$name" -m immediate -w -t 20 -s stop >/dev/null 2>&1
    done
    if [ "$E2E_FAIL" -gt 0 ]; then
        for name in monitor node1 node2; do
            echo "---- last lines of $name.autoctl.log"
            tail -n 25 "$PAF/$name.autoctl.log" 2>/dev/null
        done
    fi
    [ "${PF_KEEP_CLUSTER:-0}" = 1 ] || rm -rf "$PAF"
}
pf_on_exit paf_cleanup
mkdir -p "$PAF/config" "$PAF/share" "$PAF/run" && chmod 700 "$PAF/run" &&
    { [ "$(id -u)" -ne 0 ] || chown -R "$PF_SERVER_USER:" "$PAF"; }

# --- the monitor --------------------------------------------------------------------
paf create monitor --pgdata "$PAF/monitor" --pgport "$P0" --hostname 127.0.0.1 \
    --auth trust --no-ssl --pgctl "$PG_BIN/pg_ctl" >"$PAF/monitor.create.log" 2>&1 ||
    { cat "$PAF/monitor.create.log"; echo "FAIL: pg_autoctl create monitor"; exit 1; }
paf_run monitor
MON="postgres://autoctl_node@127.0.0.1:$P0/pg_auto_failover?sslmode=disable"
for ((i = 0; i < 100; i++)); do
    "$PG_BIN/psql" -X -qAt "$MON" -c "SELECT 1" >/dev/null 2>&1 && break
    sleep 0.2
done
"$PG_BIN/psql" -X -qAt -h 127.0.0.1 -p "$P0" -U postgres -d pg_auto_failover >/dev/null <<'SQL' ||
ALTER SYSTEM SET pgautofailover.health_check_period = 1000;
ALTER SYSTEM SET pgautofailover.health_check_timeout = 1000;
ALTER SYSTEM SET pgautofailover.health_check_max_retries = 1;
ALTER SYSTEM SET pgautofailover.health_check_retry_delay = 500;
ALTER SYSTEM SET pgautofailover.node_considered_unhealthy_timeout = 2000;
ALTER SYSTEM SET pgautofailover.primary_demote_timeout = 2000;
SELECT pg_reload_conf();
SQL
    { echo "FAIL: tune the monitor's health checks"; exit 1; }

# --- the nodes: parflow preloaded (set before pg_autoctl makes node1 a node;
# node2 is a pg_basebackup of it and inherits the settings) ----------------------
pf_as_server "$PG_BIN/initdb" -D "$PAF/node1" -A trust -U postgres --no-sync -E UTF8 --locale=C \
    >"$PAF/node1.initdb.log" 2>&1 || { cat "$PAF/node1.initdb.log"; echo "FAIL: initdb"; exit 1; }
pf_as_server sh -c "cat >> '$PAF/node1/postgresql.conf'" <<CONF
# written by test/e2e/96_auto_failover.sh
unix_socket_directories = '$PAF'
shared_preload_libraries = 'parflow'
parflow.database = ''
parflow.naptime = 200ms
parflow.max_parallel_stages = 6
fsync = off
max_worker_processes = 16
timezone = 'UTC'
log_timezone = 'UTC'
CONF
node_create() {
    local name="$1" port="$2"
    paf create postgres --pgdata "$PAF/$name" --pgport "$port" --pghost "$PAF" --hostname 127.0.0.1 --name "$name" \
        --auth trust --no-ssl --pgctl "$PG_BIN/pg_ctl" --monitor "$MON" \
        >"$PAF/$name.create.log" 2>&1 || { cat "$PAF/$name.create.log"; return 1; }
    paf_run "$name"
}
mon_q() { "$PG_BIN/psql" -X -qAt -h 127.0.0.1 -p "$P0" -U postgres -d pg_auto_failover -c "$1" 2>/dev/null; }
mon_wait() {   # mon_wait SQL SECONDS: until the monitor's SQL says t
    local deadline=$((SECONDS + $2))
    while [ "$(mon_q "$1")" != t ]; do
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.2
    done
}
node_create node1 "$P1" || { echo "FAIL: pg_autoctl create postgres node1"; exit 1; }
mon_wait "SELECT count(*) = 1 FROM pgautofailover.node WHERE nodename = 'node1' AND reportedstate = 'single'" 60 ||
    { echo "FAIL: node1 did not become a single node"; tail -n 30 "$PAF/node1.autoctl.log"; exit 1; }
node_create node2 "$P2" || { echo "FAIL: pg_autoctl create postgres node2"; exit 1; }

export PGHOST=127.0.0.1 PGPORT=$P1 PGUSER=postgres PGDATABASE=postgres
e2e_init 96_auto_failover 'e2e_ha%'
if mon_wait "SELECT count(*) = 2 FROM pgautofailover.node WHERE reportedstate IN ('primary', 'secondary')
               AND goalstate = reportedstate" 90; then
    e2e_pass "pg_auto_failover: node1 primary, node2 secondary ($(mon_q "SELECT string_agg(nodename || '=' || reportedstate, ' ' ORDER BY nodename) FROM pgautofailover.node"))"
else
    e2e_die "the formation did not reach primary + secondary: $(mon_q "SELECT string_agg(nodename || '=' || reportedstate || '/' || goalstate, ' ') FROM pgautofailover.node")"
fi
e2e_check_eq "the primary replicates synchronously to the secondary" \
    "SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')" "1"
URI="$(paf show uri --pgdata "$PAF/monitor" --formation default 2>/dev/null | tr -d ' ')"
e2e_log "formation URI: $URI"
[[ "$URI" == *target_session_attrs=read-write* ]] || e2e_die "pg_autoctl show uri gave no read-write URI: $URI"

ha_define || e2e_die "define"
run="$(e2e_start "SELECT parflow_start('$HA_WF', parallel => true)")" || e2e_die "start"
ha_agents "$URI"
ha_wait_succeeded "$run" $((HA_STAGES / 3)) 60 || e2e_die "the run did not get to a third"

# --- the primary node dies; the monitor decides ----------------------------------------
before="$(e2e_q -c "SELECT count(*) FROM parflow.task WHERE run_id = $run AND state = 'succeeded'")"
pm="$(head -n 1 "$PAF/node1/postmaster.pid")"
t0=$(date +%s%N)
[ -n "${PAF_PID[node1]}" ] || e2e_die "no process group for node1's pg_autoctl"
kill -KILL -- "-${PAF_PID[node1]}" 2>/dev/null
kill -KILL "$pm" 2>/dev/null
sleep 0.5
left="$(ps -o pid=,stat=,args= -g "${PAF_PID[node1]}" | awk '$2 !~ /^Z/')"
[ -z "$left" ] && e2e_pass "node1 is dead: no process of its group left" ||
    e2e_fail "node1 is dead: no process of its group left" "$left"
e2e_log "node1 (pg_autoctl ${PAF_PID[node1]}, postmaster $pm) killed with $before of $HA_STAGES stages succeeded"
export PGPORT=$P2
if mon_wait "SELECT count(*) = 1 FROM pgautofailover.node WHERE nodename = 'node2'
              AND reportedstate IN ('wait_primary', 'primary')" 90; then
    promote_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    e2e_pass "the monitor promoted node2 by itself ($promote_ms ms after the kill)"
else
    e2e_die "the monitor did not promote node2: $(mon_q "SELECT string_agg(nodename || '=' || reportedstate || '/' || goalstate, ' ') FROM pgautofailover.node")"
fi
pf_wait_for "SELECT NOT pg_is_in_recovery() AND count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'parflow dispatcher'" 30 &&
    e2e_pass "node2 is out of recovery and its dispatcher runs" ||
    e2e_fail "node2 is out of recovery and its dispatcher runs"
st="$(e2e_wait_run "$run" 120)"
e2e_check_eq "the run succeeds on the new primary" "SELECT '$st'" "succeeded"
total_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
ha_check_succeeded_once "$run"
twice="$(ha_work_twice "$run")"
if [ -z "$twice" ] && [ "$(ha_work_stages "$run")" = "$HA_STAGES" ]; then
    e2e_pass "every stage's work ran exactly once ($HA_STAGES stages)"
else
    e2e_fail "every stage's work ran exactly once" "ran twice: $twice; stages that ran: $(ha_work_stages "$run")"
fi
ha_check_accepted "$run"
run2="$(e2e_start "SELECT parflow_start('$HA_WF', parallel => true)")" || e2e_fail "a new run starts on the new primary"
if [ -n "${run2:-}" ]; then
    e2e_check_eq "the new run finishes on the new primary" "SELECT '$(e2e_wait_run "$run2" 60)'" "succeeded"
fi
echo "96_auto_failover: measured: $before of $HA_STAGES stages done at the kill, node2 promoted by the monitor ${promote_ms:-?} ms after it, the run finished ${total_ms} ms after it, $(printf '%s' "$twice" | grep -c .) stages ran twice"
e2e_finish
