#!/usr/bin/env bash
# test/e2e/92_databases.sh -- one dispatcher per database, started by the
# launcher (parflow.database empty).
#
# A cluster of its own (parflow.database = '', parflow.max_databases = 4,
# naptime 200 ms): databases postgres, e92_a and e92_b with the extension
# from the start (beside four without it, looked at and left), e92_c
# created once the server runs; a run in each,
# finished by a reference agent per database, every stage exactly once, and
# parflow_metrics per database.  Then, each checked against the others:
# CREATE EXTENSION in a fifth database warns naming parflow.max_databases;
# DROP EXTENSION stops that database's dispatcher, CREATE EXTENSION serves it
# again at once (no restart); DROP DATABASE of a served database succeeds at
# once and leaves the others serving; ALTER DATABASE RENAME and CREATE
# DATABASE ... TEMPLATE of a served database succeed, and the copy (which has
# the extension) is served; a database marked a template, or that does not
# allow connections, is not served (one log line, no restart loop); a
# dispatcher terminated (pg_terminate_backend) is restarted while the
# others keep their PIDs and go on dispatching; kill -9 of one dispatcher
# makes the postmaster restart every process (PostgreSQL's rule for any
# backend dying that way), and every database is served again afterwards;
# parflow.max_databases out of range is refused; with too few background
# workers the databases not served get a WARNING naming max_worker_processes.
set -u -o pipefail
# shellcheck source=test/e2e/lib.sh
source "$(dirname "$0")/lib.sh"

pf_cluster_start "parflow.database = ''" "parflow.max_databases = 4" \
    "parflow.naptime = 200ms" "max_worker_processes = 16" ||
    { echo "FAIL: private cluster did not start"; exit 1; }
# shellcheck disable=SC2317 # run at exit, through pf_on_exit
log_on_fail() { [ "$E2E_FAIL" -eq 0 ] || pf_cluster_log_tail 60; }
pf_on_exit log_on_fail
e2e_init 92_databases 'e92%'

SCALE=0.001        # 1 estimated minute = 60 ms
SPEC='{"groups": [{"name": "g", "stages": [
    {"name": "a", "agent": "e92", "estimate": "1 min"},
    {"name": "b", "agent": "e92", "estimate": "1 min", "depends_on": ["a"]},
    {"name": "c", "agent": "e92", "estimate": "1 min", "depends_on": ["a"]},
    {"name": "d", "agent": "e92", "estimate": "1 min", "depends_on": ["b", "c"]}]}]}'

# dispatcher PID of a database ('' when none)
disp_pid() {
    e2e_q -d postgres -c "SELECT pid FROM pg_stat_activity
                           WHERE backend_type = 'parflow dispatcher' AND datname = '$1'"
}
# wait until database $1 has a dispatcher (or, with $2 = none, has none)
wait_disp() {
    local want="${2:-one}" limit="${3:-10}" deadline=$((SECONDS + ${3:-10})) p
    while :; do
        p="$(disp_pid "$1")"
        if [ "$want" = one ] && [ -n "$p" ]; then return 0; fi
        if [ "$want" = none ] && [ -z "$p" ]; then return 0; fi
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.05
    done
    : "$limit"
}
e2e_check_db() {   # e2e_check in another database
    local db="$1" desc="$2" sql="$3" out
    if ! out="$(e2e_q -d "$db" -c "$sql" 2>&1)"; then
        e2e_fail "$desc" "query failed: $out"
    elif [ -n "$out" ]; then
        e2e_fail "$desc" "$out"
    else
        e2e_pass "$desc"
    fi
}
# run_start DB: define the workflow in DB, start a run and an agent serving
# it; sets RUN.
run_start() {
    local db="$1"
    RUN=""
    e2e_q -d "$db" -c "SET client_min_messages = warning; SELECT parflow_define('e92', \$s\$$SPEC\$s\$::jsonb)" \
        >/dev/null || { e2e_fail "define in $db"; return 1; }
    RUN="$(e2e_q -d "$db" -c "SELECT parflow_start('e92', parallel => true)")" ||
        { e2e_fail "start in $db"; return 1; }
    e2e_agent "e92-$db-$RANDOM" e92 --simulate "$SCALE" --concurrency 2 --exit-when-idle 2 -q -d "dbname=$db"
}
# run_end DB RUN LABEL: the run succeeded, every stage exactly once.
run_end() {
    local db="$1" run="$2" label="$3" st
    st="$(PGDATABASE="$db" e2e_wait_run "$run" 30)"
    if [ "$st" = succeeded ]; then
        e2e_pass "$label: run $run in $db succeeded"
    else
        e2e_fail "$label: run $run in $db succeeded" "state: $st"
    fi
    e2e_check_db "$db" "$label: every stage of run $run in $db ran exactly once" "$(e2e_sql_once "{$run}")"
}
run_checked() {
    run_start "$1" && run_end "$1" "$RUN" "$2"
}

# shellcheck disable=SC2317 # run at exit, through pf_on_exit
drop_dbs() {
    local d
    for d in e92_a e92_a2 e92_b e92_c e92_e e92_x e92_t e92_n e92_p1 e92_p2 e92_p3 e92_p4; do
        e2e_q -d postgres -c "ALTER DATABASE $d IS_TEMPLATE false" >/dev/null 2>&1 || true
        e2e_q -d postgres -c "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true
    done
}
pf_on_exit drop_dbs

# --- three databases from the start, a fourth created later ----------------------
for d in e92_a e92_b; do
    e2e_q -d postgres -c "CREATE DATABASE $d" >/dev/null || e2e_die "create $d"
    e2e_q -d "$d" -c "SET client_min_messages = warning; CREATE EXTENSION parflow" >/dev/null ||
        e2e_die "extension in $d"
done
# databases without the extension: at start each is looked at (a dispatcher
# that finds no extension and exits), a few at a time
for d in e92_p1 e92_p2 e92_p3 e92_p4; do
    e2e_q -d postgres -c "CREATE DATABASE $d" >/dev/null || e2e_die "create $d"
done
pf_cluster_restart fast || e2e_die "restart"
for d in postgres e92_a e92_b; do
    wait_disp "$d" one 10 || e2e_fail "a dispatcher serves $d after a restart"
done
e2e_check_eq "one dispatcher per database with the extension, none elsewhere" \
    "SELECT string_agg(datname, ' ' ORDER BY datname) FROM pg_stat_activity
      WHERE backend_type = 'parflow dispatcher'" "e92_a e92_b postgres"
e2e_check_eq "and one launcher" \
    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'parflow launcher'" "1"

e2e_q -d postgres -c "CREATE DATABASE e92_c" >/dev/null || e2e_die "create e92_c"
t0=$(date +%s%N)
out="$(e2e_q -d e92_c -c "SET client_min_messages = warning; CREATE EXTENSION parflow" 2>&1)" ||
    e2e_die "extension in e92_c: $out"
if grep -q WARNING <<<"$out"; then
    e2e_fail "CREATE EXTENSION in a fourth database (of four slots) warns of nothing" "$out"
else
    e2e_pass "CREATE EXTENSION in a fourth database (of four slots) warns of nothing"
fi
if wait_disp e92_c one 2; then
    e2e_pass "CREATE EXTENSION in a database created after the start is served without a restart ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"
else
    e2e_fail "CREATE EXTENSION in a database created after the start is served without a restart"
fi

declare -A runs=()
for d in postgres e92_a e92_b e92_c; do
    run_start "$d" && runs[$d]="$RUN"
done
for d in "${!runs[@]}"; do
    run_end "$d" "${runs[$d]}" "four databases at once"
done

for d in e92_a e92_b; do
    PGDATABASE=$d e2e_check_eq "parflow_metrics in $d: its own dispatcher up, its own passes" \
        "SELECT (SELECT value FROM parflow_metrics() WHERE metric = 'parflow_dispatcher_up')::int || ' ' ||
                ((SELECT value FROM parflow_metrics() WHERE metric = 'parflow_dispatch_passes_total') > 0)" "1 true"
done

# --- max_databases: a fifth database warns at CREATE EXTENSION ---------------------
e2e_q -d postgres -c "CREATE DATABASE e92_e" >/dev/null || e2e_die "create e92_e"
out="$(e2e_q -d e92_e -c "CREATE EXTENSION parflow" 2>&1)"
if grep -q 'WARNING:.*no parflow dispatcher will serve database "e92_e"' <<<"$out" &&
    grep -q 'parflow.max_databases is 4' <<<"$out"; then
    e2e_pass "CREATE EXTENSION in a fifth database warns, naming parflow.max_databases"
else
    e2e_fail "CREATE EXTENSION in a fifth database warns, naming parflow.max_databases" "$out"
fi
sleep 0.5
e2e_check_eq "the fifth database has no dispatcher" \
    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'parflow dispatcher' AND datname = 'e92_e'" "0"
PGDATABASE=e92_e e2e_check_eq "... and its parflow_metrics say so (no dispatcher up, no passes)" \
    "SELECT (SELECT value FROM parflow_metrics() WHERE metric = 'parflow_dispatcher_up')::int || ' ' ||
            (SELECT value FROM parflow_metrics() WHERE metric = 'parflow_dispatch_passes_total')::int" "0 0"

# --- DROP EXTENSION stops the dispatcher; then the fifth database is served -------
pid_a="$(disp_pid e92_a)"
pid_c="$(disp_pid e92_c)"
e2e_q -d e92_b -c "DROP EXTENSION parflow CASCADE" >/dev/null 2>&1 || e2e_fail "DROP EXTENSION in e92_b"
if wait_disp e92_b none 3; then
    e2e_pass "DROP EXTENSION stops that database's dispatcher"
else
    e2e_fail "DROP EXTENSION stops that database's dispatcher" "still: $(disp_pid e92_b)"
fi
if wait_disp e92_e one "$((2 * 60 * 200 / 1000 + 3))"; then
    e2e_pass "the fifth database is served once a slot is free"
else
    e2e_fail "the fifth database is served once a slot is free"
fi
e2e_q -d e92_e -c "DROP EXTENSION parflow CASCADE" >/dev/null 2>&1 || true
wait_disp e92_e none 3 || e2e_fail "DROP EXTENSION in e92_e stops its dispatcher"
t0=$(date +%s%N)
e2e_q -d e92_b -c "SET client_min_messages = warning; CREATE EXTENSION parflow" >/dev/null ||
    e2e_fail "CREATE EXTENSION again in e92_b"
if wait_disp e92_b one 2; then
    e2e_pass "CREATE EXTENSION again: served again at once ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"
else
    e2e_fail "CREATE EXTENSION again: served again at once"
fi

# --- DROP DATABASE of a served database succeeds at once --------------------------
[ -n "$(disp_pid e92_c)" ] || e2e_fail "e92_c is served before the DROP DATABASE"
t0=$(date +%s%N)
if out="$(e2e_q -d postgres -c "DROP DATABASE e92_c" 2>&1)"; then
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    if [ "$ms" -lt 3000 ]; then
        e2e_pass "DROP DATABASE of a served database succeeds at once ($ms ms)"
    else
        e2e_fail "DROP DATABASE of a served database succeeds at once" "$ms ms"
    fi
else
    e2e_fail "DROP DATABASE of a served database succeeds" "$out"
fi
e2e_check_eq "the others keep their dispatchers" \
    "SELECT (SELECT pid FROM pg_stat_activity WHERE backend_type = 'parflow dispatcher' AND datname = 'e92_a') = $pid_a" "t"
: "$pid_c"

# --- RENAME, template copy, template, no connections -----------------------------
if out="$(e2e_q -d postgres -c "ALTER DATABASE e92_a RENAME TO e92_a2" 2>&1)"; then
    e2e_pass "ALTER DATABASE RENAME of a served database succeeds"
else
    e2e_fail "ALTER DATABASE RENAME of a served database succeeds" "$out"
fi
wait_disp e92_a2 one 3 && e2e_pass "the renamed database is served" ||
    e2e_fail "the renamed database is served"
if out="$(e2e_q -d postgres -c "CREATE DATABASE e92_x TEMPLATE e92_b" 2>&1)"; then
    e2e_pass "CREATE DATABASE ... TEMPLATE of a served database succeeds"
else
    e2e_fail "CREATE DATABASE ... TEMPLATE of a served database succeeds" "$out"
fi
wait_disp e92_b one 3 || e2e_fail "the template database is served again"
# four slots: postgres, e92_a2, e92_b, e92_x
wait_disp e92_x one 3 && e2e_pass "the copy, which has the extension, is served" ||
    e2e_fail "the copy, which has the extension, is served"

e2e_q -d postgres -c "ALTER DATABASE e92_x IS_TEMPLATE true" >/dev/null || e2e_fail "IS_TEMPLATE"
wait_disp e92_x none 3 && e2e_pass "a database marked a template is not served" ||
    e2e_fail "a database marked a template is not served"
e2e_q -d postgres -c "CREATE DATABASE e92_n TEMPLATE e92_x" >/dev/null || e2e_fail "copy e92_x"
wait_disp e92_n one 3 || e2e_fail "a copy of the template is served"
e2e_q -d postgres -c "ALTER DATABASE e92_n ALLOW_CONNECTIONS false" >/dev/null || e2e_fail "ALLOW_CONNECTIONS"
wait_disp e92_n none 3 && e2e_pass "a database that does not allow connections is not served" ||
    e2e_fail "a database that does not allow connections is not served"
sleep 1
n="$(grep -c 'parflow launcher skips database "e92_n"' "$PF_LOG" || true)"
e2e_check_eq "... with one log line, no restart loop" "SELECT $n" "1"

# --- a dispatcher terminated is restarted; the others go on -------------------------
pid_a="$(disp_pid e92_a2)"
pid_b="$(disp_pid e92_b)"
e2e_q -d postgres -c "SELECT pg_terminate_backend($pid_b)" >/dev/null
sleep 0.3
if wait_disp e92_b one 3 && [ "$(disp_pid e92_b)" != "$pid_b" ]; then
    e2e_pass "a terminated dispatcher is restarted by the launcher"
else
    e2e_fail "a terminated dispatcher is restarted by the launcher" "pid $(disp_pid e92_b) (was $pid_b)"
fi
e2e_check_eq "the other dispatchers keep their PIDs" \
    "SELECT pid FROM pg_stat_activity WHERE backend_type = 'parflow dispatcher' AND datname = 'e92_a2'" "$pid_a"
run_checked e92_a2 "after the terminate"
run_checked e92_b "after the terminate"

# --- kill -9: the postmaster restarts everything, every database is served again ----
kill -KILL "$(disp_pid e92_b)" 2>/dev/null
sleep 2
for d in postgres e92_a2 e92_b; do
    wait_disp "$d" one 20 || e2e_fail "after kill -9 of one dispatcher, $d is served again"
done
run_checked e92_a2 "after kill -9"
run_checked postgres "after kill -9"

# --- bad input: parflow.max_databases out of range --------------------------------
for v in 0 1025; do
    if out="$(e2e_q -d postgres -c "ALTER SYSTEM SET parflow.max_databases = $v" 2>&1)"; then
        e2e_fail "parflow.max_databases = $v is refused" "accepted"
        e2e_q -d postgres -c "ALTER SYSTEM RESET parflow.max_databases" >/dev/null 2>&1
    elif grep -q 'outside the valid range for parameter "parflow.max_databases" (1 .. 1024)' <<<"$out"; then
        e2e_pass "parflow.max_databases = $v is refused"
    else
        e2e_fail "parflow.max_databases = $v is refused" "$out"
    fi
done

# --- too few background workers: a WARNING that says which setting -------------
# the logical replication launcher, pg_cron's and parflow's take three of
# four: one database is served
e2e_q -d postgres -c "ALTER SYSTEM SET max_worker_processes = 4" >/dev/null || e2e_fail "ALTER SYSTEM max_worker_processes"
pf_cluster_restart fast || e2e_die "restart with max_worker_processes = 4"
sleep 2
n="$(e2e_q -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'parflow dispatcher'")"
e2e_check_eq "with max_worker_processes = 4, one database is served" "SELECT $n" "1"
if grep -q 'WARNING:  could not start the parflow dispatcher for database' "$PF_LOG" &&
    grep -q 'HINT:  Each database served takes one background worker, and the launcher one more: raise max_worker_processes' "$PF_LOG"; then
    e2e_pass "the others get a WARNING naming max_worker_processes"
else
    e2e_fail "the others get a WARNING naming max_worker_processes" "$(grep -i 'parflow' "$PF_LOG" | tail -n 5)"
fi
e2e_q -d postgres -c "ALTER SYSTEM RESET max_worker_processes" >/dev/null

e2e_finish
