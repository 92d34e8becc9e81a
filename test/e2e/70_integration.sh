#!/usr/bin/env bash
# test/e2e/70_integration.sh -- the database as the integration point.
#
#  1. A team's own table, e2e70.requirements(id, title, run_id), that parflow
#     knows nothing about: a BEFORE INSERT trigger starts a run of workflow
#     e2e70_req for each new row, with {"requirement": id, "title": title} as
#     the run's input, and stores the run id in the row; a view
#     e2e70.requirement_status joins the rows to parflow.runs and
#     parflow_result(run_id)->'outputs'.  Three rows inserted at once, real
#     agents (an --exec command echoing the requirement from its input, and a
#     simulated one) run them; each run's input holds its requirement, the
#     echoed outputs match, the view shows 3 succeeded rows with outputs.  A
#     rolled-back insert leaves no run and announces nothing.
#  2. An integration listener: a background psql LISTENing on channel
#     parflow_orchestrator records every notification (psql prints them after
#     each command it runs; a feeder writes a cheap command into its stdin,
#     a fifo, every 100 ms).  Runs that succeed (the three above and one
#     more), one cancelled while its task runs (parflow_cancel), one blocked
#     (a command that exits non-zero, max_attempts 1): each run is announced
#     exactly "started" then its final transition, once each, with the right
#     run id -- and the event log agrees (NOTIFY folds identical payloads of
#     one transaction, so the log is checked too).
set -u -o pipefail
# shellcheck source=test/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init 70_integration 'e2e70%'

SCALE=0.0005          # 1 estimated minute = 30 ms
e2e_check_idle
perl -MJSON::PP -e 1 2>/dev/null || e2e_die "perl with JSON::PP (core perl) is needed"

# check_same DESC GOT EXPECTED: a check on values computed in the shell.
check_same() {
    if [ "$2" = "$3" ]; then
        e2e_pass "$1 ($2)"
    else
        e2e_fail "$1" "expected: $3
got:      $2"
    fi
}

# -----------------------------------------------------------------------------
# The listener
# -----------------------------------------------------------------------------
LISTEN_OUT="$E2E_DIR/listener.out"
LISTEN_FIFO="$E2E_DIR/listener.fifo"
LISTEN_PSQL=""
LISTEN_FEED=""

listener_start() {
    mkfifo "$LISTEN_FIFO" || e2e_die "mkfifo $LISTEN_FIFO"
    # (its stdin opens when the feeder opens the fifo for writing)
    "$PG_BIN/psql" -X -qAt <"$LISTEN_FIFO" >"$LISTEN_OUT" 2>&1 &
    LISTEN_PSQL=$!
    # psql prints the notifications that arrived once the command it runs
    # ends: feed it one cheap command every 100 ms (never faster, so that
    # nothing queues up in the fifo).
    (
        echo "LISTEN parflow_orchestrator;"
        echo "SELECT 'e2e70 listening';"
        while :; do
            echo "SELECT 1;"
            sleep 0.1
        done
    ) >"$LISTEN_FIFO" &
    LISTEN_FEED=$!
    pf_on_exit listener_stop
    local i
    for ((i = 0; i < 100; i++)); do
        grep -qx 'e2e70 listening' "$LISTEN_OUT" 2>/dev/null && return 0
        sleep 0.1
    done
    e2e_die "the listener did not start: $(cat "$LISTEN_OUT" 2>/dev/null)"
}

# Stop the feeder (psql then reads end of file and exits).  Our pids only.
listener_stop() {
    local i
    if [ -n "$LISTEN_FEED" ]; then
        kill -TERM "$LISTEN_FEED" 2>/dev/null
        wait "$LISTEN_FEED" 2>/dev/null
        LISTEN_FEED=""
    fi
    if [ -n "$LISTEN_PSQL" ]; then
        for ((i = 0; i < 30; i++)); do
            kill -0 "$LISTEN_PSQL" 2>/dev/null || break
            sleep 0.1
        done
        kill -TERM "$LISTEN_PSQL" 2>/dev/null
        wait "$LISTEN_PSQL" 2>/dev/null
        LISTEN_PSQL=""
    fi
    return 0
}

# The notifications received so far, one line each in arrival order:
# "RUN KIND WORKFLOW FAILED_STAGES" (- for a field the payload lacks), or
# "BAD <line>" for a notification whose payload is not {"kind", "run"} JSON.
listener_events() {
    perl -MJSON::PP -ne '
        next unless /^Asynchronous notification "parflow_orchestrator"/;
        if (/^Asynchronous notification "parflow_orchestrator" with payload "(.*)" received from server process with PID \d+\.$/) {
            my $j = eval { decode_json($1) };
            if (ref $j eq "HASH" && defined $j->{kind} && defined $j->{run}) {
                my $f = ref $j->{failures} eq "ARRAY" ? join(",", map { $_->{stage} // "?" } @{ $j->{failures} }) : "-";
                print join(" ", $j->{run}, $j->{kind}, $j->{workflow} // "-", $f eq "" ? "-" : $f), "\n";
                next;
            }
        }
        print "BAD $_";' "$LISTEN_OUT"
}

# The kinds announced for RUN, in arrival order, space-separated.
kinds_of() {
    listener_events | awk -v r="$1" '$1 == r { printf "%s%s", sep, $2; sep = " " }'
}

# -----------------------------------------------------------------------------
# Setup: workflows, agents, the listener
# -----------------------------------------------------------------------------
e2e_define e2e70_req '{"groups": [
    {"name": "analysis", "stages": [{"name": "spec", "agent": "e2e70_echo", "estimate": "1 min"}]},
    {"name": "build", "stages": [
        {"name": "impl", "agent": "e2e70_sim", "estimate": "2 min"},
        {"name": "tests", "agent": "e2e70_echo", "estimate": "1 min"}]}]}' >/dev/null || e2e_die "define e2e70_req"
e2e_define e2e70_ok '{"groups": [{"name": "g", "stages": [
    {"name": "work", "agent": "e2e70_sim", "estimate": "1 min"}]}]}' >/dev/null || e2e_die "define e2e70_ok"
e2e_define e2e70_cancel '{"groups": [{"name": "g", "stages": [
    {"name": "slow", "agent": "e2e70_slow", "estimate": "1 min"}]},
    {"name": "after", "stages": [{"name": "never", "agent": "e2e70_sim", "estimate": "1 min"}]}]}' \
    >/dev/null || e2e_die "define e2e70_cancel"
e2e_define e2e70_fail '{"groups": [{"name": "g", "stages": [
    {"name": "build", "agent": "e2e70_bad", "estimate": "1 min", "max_attempts": 1}]}]}' \
    >/dev/null || e2e_die "define e2e70_fail"

# The echo agent's command: its output names the requirement it was given.
cat >"$E2E_DIR/echo.pl" <<'PERL'
use strict;
use warnings;
use JSON::PP;
local $/;
my $in = decode_json(<STDIN>);
print JSON::PP->new->canonical->encode({requirement => $in->{requirement}, title => $in->{title},
                                        stage => $ENV{PARFLOW_STAGE}}), "\n";
PERL
e2e_agent e2e70-echo e2e70_echo --concurrency 3 -q --exec "perl '$E2E_DIR/echo.pl'"
e2e_agent e2e70-sim e2e70_sim --concurrency 3 -q --simulate "$SCALE"
e2e_agent e2e70-slow e2e70_slow --exec 'exec sleep 30'
# shellcheck disable=SC2016 # expanded by the agent's /bin/sh
e2e_agent e2e70-bad e2e70_bad -q --exec 'echo "integration: cannot build $PARFLOW_STAGE (exit 2)" >&2; exit 2'

listener_start
e2e_log "listener: psql pid $LISTEN_PSQL, feeder pid $LISTEN_FEED"

# -----------------------------------------------------------------------------
# 1. The team's table, its trigger and its view
# -----------------------------------------------------------------------------
e2e_log "1. requirements table, trigger, view"
e2e_q >/dev/null <<'SQL' || e2e_die "create the requirements table, trigger and view"
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS e2e70 CASCADE;
CREATE SCHEMA e2e70;

-- The team's own table: parflow does not know it.
CREATE TABLE e2e70.requirements (
    id     serial PRIMARY KEY,
    title  text NOT NULL,
    run_id bigint
);

-- (test only: requirement ids far from run ids, so that a mix-up shows)
SELECT setval('e2e70.requirements_id_seq', 100);

-- A BEFORE INSERT trigger rather than an AFTER one: an AFTER trigger cannot
-- change NEW, so it would need a second UPDATE of the row just written (one
-- more row version, and UPDATE triggers firing for it).  In a BEFORE trigger
-- NEW.id already holds its serial default, and NEW.run_id is set before the
-- row is written.  The run starts in the inserting transaction: if that
-- rolls back, so does the run (nothing is dispatched before the commit).
-- Triggers of one kind fire in name order: the zz_ name makes this one the
-- last BEFORE trigger, so that it sees what the others changed.
CREATE FUNCTION e2e70.start_requirement_run() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.run_id := parflow_start('e2e70_req', parallel => true,
                                input => jsonb_build_object('requirement', NEW.id, 'title', NEW.title));
    RETURN NEW;
END
$$;
CREATE TRIGGER zz_start_run BEFORE INSERT ON e2e70.requirements
    FOR EACH ROW EXECUTE FUNCTION e2e70.start_requirement_run();

-- Where each requirement stands, with what its stages produced.
CREATE VIEW e2e70.requirement_status AS
SELECT q.id, q.title, q.run_id, r.state, r.started_at, r.finished_at,
       CASE WHEN r.run IS NOT NULL THEN parflow_result(q.run_id)->'outputs' END AS outputs
  FROM e2e70.requirements q
  LEFT JOIN parflow.runs r ON r.run = q.run_id;
SQL
# shellcheck disable=SC2317 # run at exit, through pf_on_exit
drop_schema() {
    [ "${PF_KEEP_E2E:-0}" = 1 ] && return 0
    e2e_q -c "SET client_min_messages = warning" -c "DROP SCHEMA IF EXISTS e2e70 CASCADE" >/dev/null 2>&1 ||
        echo "could not drop schema e2e70" >&2
}
pf_on_exit drop_schema

# A rolled-back insert: no run, no row, nothing announced.
rolled="$(e2e_q -c "BEGIN" -c "INSERT INTO e2e70.requirements (title) VALUES ('rolled back') RETURNING run_id" -c "ROLLBACK")"
[[ "$rolled" =~ ^[0-9]+$ ]] || e2e_die "insert in a rolled-back transaction: $rolled"
e2e_check_eq "a rolled-back insert (its run would have been $rolled) leaves no run and no row" \
    "SELECT (SELECT count(*) FROM parflow.runs WHERE run = $rolled) || ',' || (SELECT count(*) FROM e2e70.requirements)" "0,0"

mapfile -t rows < <(e2e_q -F ' ' -c "INSERT INTO e2e70.requirements (title) VALUES
        ('export invoices as CSV'), ('single sign-on'), ('dark mode') RETURNING id, run_id")
[ "${#rows[@]}" -eq 3 ] || e2e_die "insert 3 requirements: ${rows[*]}"
req_runs=()
for row in "${rows[@]}"; do
    req_runs+=("${row#* }")
done
e2e_log "requirements -> runs: ${rows[*]}"
e2e_check_eq "every inserted requirement got its own run of e2e70_req" \
    "SELECT count(DISTINCT q.run_id) FROM e2e70.requirements q JOIN parflow.runs r ON r.run = q.run_id
      WHERE r.workflow = 'e2e70_req'" 3
e2e_log "requirement runs ${req_runs[*]}: $(e2e_wait_runs 30 "${req_runs[@]}")"
for r in "${req_runs[@]}"; do
    e2e_expect_run "$r" succeeded
done
e2e_check "each run's input is its requirement: {requirement: id, title: title}" "
    SELECT format('requirement %s: run %s input %s', q.id, q.run_id, parflow_result(q.run_id)->'input')
      FROM e2e70.requirements q
     WHERE parflow_result(q.run_id)->'input' IS DISTINCT FROM jsonb_build_object('requirement', q.id, 'title', q.title)
     ORDER BY q.id"
e2e_check "the stages' outputs echo the requirement their input carried" "
    SELECT format('requirement %s: %s', q.id, s.outputs)
      FROM e2e70.requirement_status s JOIN e2e70.requirements q ON q.id = s.id
     WHERE s.outputs->'spec' IS DISTINCT FROM jsonb_build_object('requirement', q.id, 'title', q.title, 'stage', 'spec')
        OR s.outputs->'tests' IS DISTINCT FROM jsonb_build_object('requirement', q.id, 'title', q.title, 'stage', 'tests')
     ORDER BY q.id"
e2e_check_eq "the view requirement_status: 3 succeeded rows, each with the outputs of spec, impl and tests" \
    "SELECT string_agg(format('%s:%s:%s', title, state, (SELECT string_agg(k, '+' ORDER BY k) FROM jsonb_object_keys(outputs) k)),
                       ' | ' ORDER BY id)
       FROM e2e70.requirement_status" \
    "export invoices as CSV:succeeded:impl+spec+tests | single sign-on:succeeded:impl+spec+tests | dark mode:succeeded:impl+spec+tests"

# -----------------------------------------------------------------------------
# 2. Runs that succeed, are cancelled, get blocked
# -----------------------------------------------------------------------------
e2e_log "2. a run that succeeds, one cancelled, one blocked"
ok="$(e2e_start "SELECT parflow_start('e2e70_ok', parallel => true)")" || e2e_die "start e2e70_ok"
cancel="$(e2e_start "SELECT parflow_start('e2e70_cancel', parallel => true)")" || e2e_die "start e2e70_cancel"
blocked="$(e2e_start "SELECT parflow_start('e2e70_fail', parallel => true)")" || e2e_die "start e2e70_fail"
if pf_wait_for "SELECT state = 'running' FROM parflow.tasks WHERE run = $cancel AND stage = 'slow'" 15; then
    e2e_q -c "SELECT parflow_cancel($cancel)" >/dev/null || e2e_fail "parflow_cancel($cancel)"
else
    e2e_fail "run $cancel: its slow task was claimed"
fi
e2e_log "runs ok $ok, cancel $cancel, blocked $blocked: $(e2e_wait_runs 30 "$ok" "$cancel" "$blocked")"
e2e_expect_run "$ok" succeeded
e2e_expect_run "$cancel" cancelled
e2e_expect_run "$blocked" blocked
e2e_check_eq "run $cancel: its tasks cancelled (the running one and the one waiting behind it)" \
    "SELECT string_agg(stage || '=' || state, ' ' ORDER BY task) FROM parflow.tasks WHERE run = $cancel" \
    "slow=cancelled never=cancelled"
for ((i = 0; i < 50; i++)); do
    grep -q 'cancelled' "$E2E_DIR/e2e70-slow.log" && break
    sleep 0.1
done
if grep -q 'cancelled' "$E2E_DIR/e2e70-slow.log"; then
    e2e_pass "run $cancel: the agent holding the slow task was told to stop (its log says cancelled)"
else
    e2e_fail "run $cancel: the agent holding the slow task was told to stop" "$(cat "$E2E_DIR/e2e70-slow.log")"
fi

# Every final transition has been announced (or 10 s passed); then a little
# longer, so that a late duplicate would be seen too.
all_runs=("${req_runs[@]}" "$ok" "$cancel" "$blocked")
for ((i = 0; i < 100; i++)); do
    n=0
    for r in "${all_runs[@]}"; do
        case " $(kinds_of "$r") " in
            *" succeeded "* | *" cancelled "* | *" blocked "*) n=$((n + 1)) ;;
        esac
    done
    [ "$n" -eq "${#all_runs[@]}" ] && break
    sleep 0.1
done
sleep 0.5
listener_stop
e2e_log "listener: $(listener_events | wc -l) notifications"

e2e_check_eq "every notification on parflow_orchestrator is JSON with a kind and a run" \
    "SELECT $(listener_events | grep -c '^BAD ')" 0
e2e_check_eq "a rolled-back run ($rolled) was never announced" "SELECT '$(kinds_of "$rolled")'" ""
for r in "${req_runs[@]}"; do
    check_same "listener: requirement run $r announced started, then succeeded, once each" "$(kinds_of "$r")" "started succeeded"
done
check_same "listener: run $ok announced started, then succeeded, once each" "$(kinds_of "$ok")" "started succeeded"
check_same "listener: run $cancel announced started, then cancelled, once each" "$(kinds_of "$cancel")" "started cancelled"
check_same "listener: run $blocked announced started, then blocked, once each" "$(kinds_of "$blocked")" "started blocked"
check_same "listener: the started notifications name their workflows" \
    "$(for r in "${all_runs[@]}"; do listener_events | awk -v r="$r" '$1 == r && $2 == "started" { printf "%s ", $3 }'; done)" \
    "e2e70_req e2e70_req e2e70_req e2e70_ok e2e70_cancel e2e70_fail "
check_same "listener: the blocked notification carries the failure report (stage build)" \
    "$(listener_events | awk -v r="$blocked" '$1 == r && $2 == "blocked" { print $4 }')" "build"
e2e_check_eq "run $blocked: the failure report names the command's stderr" \
    "SELECT f->0->>'stage' || ': ' || (f->0->>'last_error') FROM parflow_failures($blocked) f" \
    "build: integration: cannot build build (exit 2)"
# The event log agrees (one run_started and one final run_* event per run).
list="$(IFS=,; echo "${all_runs[*]}")"
e2e_check "the event log: exactly one run_started and one final run event per run, nothing else" "
    SELECT format('run %s: %s', run, string_agg(kind, ',' ORDER BY event))
      FROM parflow.events WHERE run IN ($list) AND kind LIKE 'run\\_%'
     GROUP BY run
    HAVING string_agg(kind, ',' ORDER BY event) NOT IN ('run_started,run_succeeded', 'run_started,run_cancelled',
                                                         'run_started,run_blocked')
     ORDER BY run"
e2e_finish
