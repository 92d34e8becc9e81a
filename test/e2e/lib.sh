# shellcheck shell=bash
# test/e2e/lib.sh -- shared helpers of the end-to-end scripts (sourced, not run).
#
# An e2e script does:
#     source "$(dirname "$0")/lib.sh"      # also sources test/cluster.sh
#     e2e_init 10_sdlc 'e2e_sdlc%'          # extension, work directory, counters,
#                                           # cleanup (runs of these workflows)
#     ... e2e_agent NAME KIND ARGS...       # real parflow-agent processes
#     ... run="$(e2e_start "SQL returning a run id")" || e2e_die "start"
#     ... e2e_wait_run "$run" 60
#     ... e2e_check / e2e_check_eq / e2e_check_deps / e2e_check_cap ...
#     e2e_finish                            # summary line, exit status
#
# Every check prints one "PASS: ..." or "FAIL: ..." line (a FAIL with the
# offending rows under it).  Agents are stopped (SIGTERM, then SIGKILL) at
# exit through pf_on_exit; their logs are printed when something failed.
#
# The order checks compare event ids, not clocks: an event that a
# transaction could only write after another transaction committed (a
# dependent dispatched after its dependency succeeded, a task dispatched
# after another one finished and freed capacity) always has the higher id,
# since identity values are drawn at insert time.  A reordering by id can
# hide a violation only between events whose transactions overlapped, never
# invent one.

# shellcheck source=test/cluster.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)/cluster.sh"

E2E_NAME=""
E2E_DIR=""
E2E_PASS=0
E2E_FAIL=0
E2E_AGENT_PIDS=()
E2E_AGENT_NAMES=()
E2E_T0=$SECONDS

# psql, one value per line, fields separated by " | ".  No JIT: the checks'
# estimates over JSON and CTEs are huge, and compiling them costs seconds.
e2e_q() {
    PGOPTIONS="${PGOPTIONS:-} -c jit=off" "$PG_BIN/psql" -X -qAt -v ON_ERROR_STOP=1 -F ' | ' -P pager=off "$@"
}

e2e_log() { printf '[%s %s] %s\n' "$E2E_NAME" "$(date +%H:%M:%S.%3N)" "$*"; }

# Stop the script now (a setup step failed): counts as a failure.
e2e_die() {
    echo "FAIL: $*"
    E2E_FAIL=$((E2E_FAIL + 1))
    e2e_finish
}

e2e_pass() {
    echo "PASS: $1"
    E2E_PASS=$((E2E_PASS + 1))
}

# e2e_fail DESC [DETAILS]
e2e_fail() {
    echo "FAIL: $1"
    if [ -n "${2:-}" ]; then
        printf '%s\n' "$2" | head -n 25 | sed 's/^/      /'
        local n
        n=$(printf '%s\n' "$2" | wc -l)
        [ "$n" -gt 25 ] && echo "      ... ($n lines in all)"
    fi
    E2E_FAIL=$((E2E_FAIL + 1))
}

# e2e_check DESC SQL: passes when SQL returns no rows (each row is a violation).
e2e_check() {
    local out
    if ! out="$(e2e_q -c "$2" 2>&1)"; then
        e2e_fail "$1" "query failed: $out"
    elif [ -n "$out" ]; then
        e2e_fail "$1" "$out"
    else
        e2e_pass "$1"
    fi
}

# e2e_check_eq DESC SQL EXPECTED: passes when SQL returns exactly EXPECTED.
e2e_check_eq() {
    local out
    if ! out="$(e2e_q -c "$2" 2>&1)"; then
        e2e_fail "$1" "query failed: $out"
    elif [ "$out" != "$3" ]; then
        e2e_fail "$1" "expected: $3
got:      $out"
    else
        e2e_pass "$1 ($out)"
    fi
}

# e2e_check_true DESC SQL: passes when SQL returns t; prints the second
# column (if any) as a detail.
e2e_check_true() {
    local out
    if ! out="$(e2e_q -c "$2" 2>&1)"; then
        e2e_fail "$1" "query failed: $out"
    elif [ "${out%% | *}" != t ]; then
        e2e_fail "$1" "$out"
    else
        if [ "$out" = t ]; then e2e_pass "$1"; else e2e_pass "$1 (${out#t | })"; fi
    fi
}

# e2e_init NAME WORKFLOWS: the extension, a work directory, cleanup at exit.
# WORKFLOWS is a LIKE pattern naming this script's workflows: at exit, their
# runs still running or paused are cancelled, so that a script that failed
# or timed out leaves no work behind to disturb the next one.
e2e_init() {
    E2E_NAME="$1"
    E2E_WF_LIKE="${2:-}"
    E2E_DIR="$(mktemp -d "${TMPDIR:-/tmp}/parflow-e2e-$1.XXXXXX")" || exit 1
    chmod 755 "$E2E_DIR"
    pf_on_exit e2e_cleanup
    if [ -x "$PF_BIN/parflow-agent" ]; then
        E2E_AGENT_BIN="$PF_BIN/parflow-agent"
    elif command -v parflow-agent >/dev/null 2>&1; then
        E2E_AGENT_BIN="$(command -v parflow-agent)"
    else
        e2e_die "parflow-agent not found (PF_BIN=$PF_BIN): run make"
    fi
    if ! e2e_q -c "SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS parflow" >/dev/null; then
        e2e_die "CREATE EXTENSION parflow"
    fi
    # The dispatcher serves this database: it must be up.
    if ! pf_wait_for "SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'parflow dispatcher'" 15; then
        e2e_die "no parflow dispatcher in pg_stat_activity (is parflow preloaded?)"
    fi
    e2e_log "agent $E2E_AGENT_BIN, logs in $E2E_DIR, server ${PGHOST}:${PGPORT}"
}

# e2e_agent NAME KIND ARG...: start a parflow-agent in the background.
# NAME is its worker name and log file ($E2E_DIR/NAME.log).  Sets E2E_LAST_PID.
# PF_E2E_AGENT_ARGS (words, e.g. "--no-complete-and-claim" or "--batch 4")
# go before ARG... on every agent's command line, to run the suite with the
# agent's other ways of calling the server.
e2e_agent() {
    local name="$1" kind="$2"
    shift 2
    # shellcheck disable=SC2086 # words on purpose
    "$E2E_AGENT_BIN" --agent "$kind" --worker "$name" ${PF_E2E_AGENT_ARGS:-} "$@" \
        >"$E2E_DIR/$name.log" 2>&1 </dev/null &
    E2E_LAST_PID=$!
    E2E_AGENT_PIDS+=("$E2E_LAST_PID")
    E2E_AGENT_NAMES+=("$name")
}

# Stop every agent still alive: SIGTERM (they release held tasks), then
# SIGKILL after 5 s.  Only the pids this script started.
e2e_stop_agents() {
    local pid i alive
    for pid in "${E2E_AGENT_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for ((i = 0; i < 50; i++)); do
        alive=0
        for pid in "${E2E_AGENT_PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pid in "${E2E_AGENT_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            echo "agent $pid did not stop on SIGTERM: killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    E2E_AGENT_PIDS=()
}

# Cancel this script's unfinished runs (see e2e_init).
e2e_cancel_leftovers() {
    [ -n "${E2E_WF_LIKE:-}" ] || return 0
    e2e_q -c "DO \$\$
        DECLARE r bigint;
        BEGIN
            FOR r IN SELECT run FROM parflow.runs WHERE workflow LIKE '$E2E_WF_LIKE'
                        AND state IN ('running', 'paused') ORDER BY run LOOP
                BEGIN
                    PERFORM parflow_cancel(r);
                    RAISE WARNING 'cancelled unfinished run %', r;
                EXCEPTION WHEN OTHERS THEN
                    RAISE WARNING 'could not cancel run %: %', r, SQLERRM;
                END;
            END LOOP;
        END \$\$" 2>&1 | sed 's/^/cleanup: /' >&2
}

e2e_cleanup() {
    local f
    e2e_cancel_leftovers
    e2e_stop_agents
    if [ "$E2E_FAIL" -gt 0 ] && [ -n "$E2E_DIR" ]; then
        for f in "$E2E_DIR"/*.log; do
            [ -s "$f" ] || continue
            echo "---- last lines of $(basename "$f")"
            tail -n 15 "$f"
        done
    fi
    if [ -n "$E2E_DIR" ] && [ "${PF_KEEP_E2E:-0}" != 1 ]; then
        rm -rf "$E2E_DIR"
    fi
}

e2e_finish() {
    echo "$E2E_NAME: $E2E_PASS passed, $E2E_FAIL failed ($((SECONDS - E2E_T0)) s)"
    [ "$E2E_FAIL" -eq 0 ] && exit 0
    exit 1
}

# e2e_define NAME SPEC_JSON: define a workflow; prints the version, or the
# error on stderr and returns 1.
e2e_define() {
    local out
    if ! out="$(e2e_q -c "SELECT parflow_define('$1', \$spec\$$2\$spec\$::jsonb)" 2>&1)"; then
        echo "parflow_define($1): $out" >&2
        return 1
    fi
    echo "$out"
}

# e2e_start SQL: run SQL that returns a run id (parflow_start(...)); prints
# the id, or the error on stderr and returns 1.  Use: r="$(e2e_start ..)" || e2e_die ..
e2e_start() {
    local out
    if ! out="$(e2e_q -c "$1" 2>&1)" || ! [[ "$out" =~ ^[0-9]+$ ]]; then
        echo "$1: $out" >&2
        return 1
    fi
    echo "$out"
}

# e2e_wait_run RUN [SECONDS]: wait until the run is no longer running;
# prints its state (or "timeout:STATE").
e2e_wait_run() {
    local run="$1" limit="${2:-30}" deadline st
    deadline=$((SECONDS + limit))
    while :; do
        st="$(e2e_q -c "SELECT state FROM parflow.runs WHERE run = $run" 2>/dev/null || true)"
        case "$st" in
            succeeded | blocked | cancelled) echo "$st"; return 0 ;;
        esac
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "timeout:$st"
            return 1
        fi
        sleep 0.1
    done
}

# e2e_wait_runs SECONDS RUN...: wait for every run; prints "run=state" words.
e2e_wait_runs() {
    local limit="$1" deadline r st out=""
    shift
    deadline=$((SECONDS + limit))
    for r in "$@"; do
        st="$(e2e_wait_run "$r" $((deadline - SECONDS > 0 ? deadline - SECONDS : 1)))"
        out="$out $r=$st"
    done
    echo "${out# }"
}

# e2e_expect_run RUN STATE: one check on the final state of a run.
e2e_expect_run() {
    e2e_check_eq "run $1 ends $2" "SELECT state FROM parflow.runs WHERE run = $1" "$2"
}

# Elapsed seconds of a run, from its run_started to its last event.
e2e_run_seconds() {
    e2e_q -c "SELECT round(extract(epoch FROM max(at) - min(at))::numeric, 2)
                FROM parflow.events WHERE run = $1"
}

# Highest event id so far (a mark for the global cap check).
e2e_event_mark() {
    e2e_q -c "SELECT coalesce(max(id), 0) FROM parflow.event"
}

# ---------------------------------------------------------------------------
# SQL of the checks.  RUNS is an SQL array literal of run ids: '{1,2}'.
# ---------------------------------------------------------------------------

# Exactly once: every task that should run (no `when`, or its flag given)
# was dispatched, claimed and succeeded exactly once and ends succeeded;
# every other one is skipped with one 'skipped' event and nothing else.
# Rows: violations.
e2e_sql_once() {
    cat <<SQL
WITH t AS (
    SELECT t.id, t.run_id, t.state, s.name, s.when_flag, r.flags
      FROM parflow.task t JOIN parflow.run r ON r.id = t.run_id
      JOIN parflow.stage s ON s.version_id = r.version_id AND s.ord = t.stage_ord
     WHERE t.run_id = ANY ('$1'::bigint[])),
e AS (
    SELECT e.task_id,
           count(*) FILTER (WHERE e.kind = 'dispatched') AS nd,
           count(*) FILTER (WHERE e.kind = 'running') AS nr,
           count(*) FILTER (WHERE e.kind = 'succeeded') AS ns,
           count(*) FILTER (WHERE e.kind = 'skipped') AS nk,
           count(*) FILTER (WHERE e.kind NOT IN ('ready', 'dispatched', 'running', 'succeeded', 'skipped')) AS nx
      FROM parflow.event e
     WHERE e.run_id = ANY ('$1'::bigint[]) AND e.task_id IS NOT NULL
     GROUP BY e.task_id)
SELECT format('run %s stage %s: state %s, dispatched %s, running %s, succeeded %s, skipped %s, other %s (expected %s)',
              t.run_id, t.name, t.state, coalesce(nd, 0), coalesce(nr, 0), coalesce(ns, 0),
              coalesce(nk, 0), coalesce(nx, 0),
              CASE WHEN t.when_flag IS NULL OR t.when_flag = ANY (t.flags) THEN 'succeeded once' ELSE 'skipped' END)
  FROM t LEFT JOIN e ON e.task_id = t.id
 WHERE CASE WHEN t.when_flag IS NULL OR t.when_flag = ANY (t.flags)
            THEN NOT (t.state = 'succeeded' AND nd = 1 AND nr = 1 AND ns = 1 AND nk = 0 AND nx = 0)
            ELSE NOT (t.state = 'skipped' AND coalesce(nd, 0) = 0 AND coalesce(nr, 0) = 0
                      AND coalesce(ns, 0) = 0 AND nk = 1 AND nx = 0) END
 ORDER BY t.run_id, t.id
SQL
}

# The dependency pairs of the tasks of RUNS, by the extension's own tables:
# stage edges (parflow.stage_dep) and group barriers (parflow.group_dep: a
# stage of group G depends on every stage of every group H with G -> H).
# A skipped dependency is passed through: its own dependencies count.
# Columns: task, dep, why.  (Nested loops off: the estimates of the CTEs
# are far too low, and the recursion would rescan them for every row.)
e2e_sql_dep_pairs() {
    cat <<SQL
SET enable_nestloop = off;
WITH RECURSIVE
tk AS (SELECT t.id, t.run_id, t.stage_ord, t.group_ord, t.state, r.version_id
         FROM parflow.task t JOIN parflow.run r ON r.id = t.run_id
        WHERE t.run_id = ANY ('$1'::bigint[])),
direct AS (
    SELECT a.id AS task, b.id AS dep, 'stage edge (' || d.kind::text || ')' AS why
      FROM tk a JOIN parflow.stage_dep d ON d.version_id = a.version_id AND d.stage_ord = a.stage_ord
      JOIN tk b ON b.run_id = a.run_id AND b.stage_ord = d.dep_ord
    UNION
    SELECT a.id, b.id, 'group barrier'
      FROM tk a JOIN parflow.group_dep gd ON gd.version_id = a.version_id AND gd.group_ord = a.group_ord
      JOIN tk b ON b.run_id = a.run_id AND b.group_ord = gd.dep_ord),
pairs(task, dep, why) AS (
    SELECT task, dep, why FROM direct
    UNION
    SELECT p.task, d.dep, p.why || ' via skipped'
      FROM pairs p JOIN tk s ON s.id = p.dep AND s.state = 'skipped'
      JOIN direct d ON d.task = p.dep)
SQL
}

# Dependencies respected: no task was dispatched (let alone claimed) before
# every task it depends on succeeded (or was skipped, through its own
# dependencies).  Rows: violations.
e2e_sql_deps() {
    e2e_sql_dep_pairs "$1"
    cat <<SQL
, ev AS (
    SELECT e.task_id,
           min(e.id) FILTER (WHERE e.kind = 'dispatched') AS disp,
           min(e.id) FILTER (WHERE e.kind = 'running') AS run,
           min(e.id) FILTER (WHERE e.kind = 'succeeded') AS succ
      FROM parflow.event e WHERE e.run_id = ANY ('$1'::bigint[]) AND e.task_id IS NOT NULL
     GROUP BY e.task_id)
SELECT format('run %s: %s dispatched at event %s (running at %s) before its dependency %s (now %s) succeeded (at event %s) [%s]',
              a.run_id, sa.name, ea.disp, ea.run, sb.name, b.state, coalesce(eb.succ::text, 'never'), p.why)
  FROM pairs p
  JOIN tk a ON a.id = p.task JOIN tk b ON b.id = p.dep
  JOIN parflow.stage sa ON sa.version_id = a.version_id AND sa.ord = a.stage_ord
  JOIN parflow.stage sb ON sb.version_id = b.version_id AND sb.ord = b.stage_ord
  JOIN ev ea ON ea.task_id = a.id
  LEFT JOIN ev eb ON eb.task_id = b.id
 WHERE b.state <> 'skipped' AND ea.disp IS NOT NULL
   AND (eb.succ IS NULL OR eb.succ > ea.disp)
 ORDER BY a.run_id, a.id, b.id
SQL
}

# Number of dependency pairs checked (so that a pass is not vacuous).
e2e_sql_dep_count() {
    e2e_sql_dep_pairs "$1"
    echo "SELECT count(*) FROM (SELECT DISTINCT task, dep FROM pairs) x"
}

# Attempts as event-id intervals: from each 'dispatched' event of a task to
# its next end event (succeeded, failed, retry, released, cancelled); an
# attempt without an end is still active.  COND filters the events (alias
# e) and their tasks (alias t).  Result: the highest number of attempts
# active at once and the event id where it was first reached.
e2e_sql_cap() {
    cat <<SQL
WITH ev AS (
    SELECT e.id, e.task_id, e.kind,
           lead(e.id) OVER w AS next_id, lead(e.kind) OVER w AS next_kind
      FROM parflow.event e JOIN parflow.task t ON t.id = e.task_id
     WHERE e.kind IN ('dispatched', 'succeeded', 'failed', 'retry', 'released', 'cancelled')
       AND ($1)
    WINDOW w AS (PARTITION BY e.task_id ORDER BY e.id)),
pts AS (
    SELECT id, 1 AS d FROM ev WHERE kind = 'dispatched'
    UNION ALL
    SELECT next_id, -1 FROM ev WHERE kind = 'dispatched' AND next_id IS NOT NULL),
sw AS (SELECT id, sum(d) OVER (ORDER BY id) AS active FROM pts)
SELECT coalesce(max(active), 0) || ' at event ' || coalesce(min(id) FILTER (WHERE active = (SELECT max(active) FROM sw)), 0)
  FROM sw
SQL
}

# e2e_check_once DESC RUNS
e2e_check_once() {
    e2e_check "$1" "$(e2e_sql_once "$2")"
}

# e2e_check_deps DESC RUNS: dependencies respected, and how many pairs.
e2e_check_deps() {
    local n
    n="$(e2e_q -c "$(e2e_sql_dep_count "$2")" 2>&1)"
    e2e_check "$1 ($n dependency pairs)" "$(e2e_sql_deps "$2")"
}

# e2e_cap_max COND: the highest concurrency (dispatched or running) among
# the events and tasks matching COND.
e2e_cap_max() {
    local out
    out="$(e2e_q -c "$(e2e_sql_cap "$1")")" || return 1
    echo "${out%% at event *}"
}

# e2e_check_cap DESC COND CAP [MIN]: at most CAP tasks dispatched or
# running at once among COND (and, when MIN is given, at least MIN at some
# point, so that the cap was actually reached).
e2e_check_cap() {
    local out max
    if ! out="$(e2e_q -c "$(e2e_sql_cap "$2")" 2>&1)"; then
        e2e_fail "$1" "query failed: $out"
        return
    fi
    max="${out%% at event *}"
    if [ "$max" -gt "$3" ]; then
        e2e_fail "$1: at most $3 at once" "reached $out"
    elif [ -n "${4:-}" ] && [ "$max" -lt "$4" ]; then
        e2e_fail "$1: at most $3 at once, and at least $4 at some point" "only reached $out"
    else
        e2e_pass "$1: at most $3 at once (max $max)"
    fi
}

# No tasks of any run at work now: the global cap check starts from zero.
e2e_check_idle() {
    e2e_check "no task of any run is dispatched or running before the test" \
        "SELECT format('run %s task %s is %s', run_id, id, state) FROM parflow.task
          WHERE state IN ('dispatched', 'running')"
}

# The model, derived again from a workflow's spec (its latest version) by
# the rules of DESIGN.md, against the edges the extension keeps: a group
# without depends_on waits for the group before it, one with depends_on for
# those groups (none for []), a group barrier makes every stage of the group
# depend on every stage of the groups it waits for; explicit depends_on;
# consumes X -> every stage that produces X; "parallel": false orders a
# group's stages.  (No verifications.)  Rows: edges missing or extra; with
# a second argument "count", the number of edges expected instead.
e2e_sql_spec_edges() {
    cat <<SQL
WITH v AS (
    SELECT wv.id, wv.spec FROM parflow.workflow_version wv JOIN parflow.workflow w ON w.id = wv.workflow_id
     WHERE w.name = '$1' ORDER BY wv.version DESC LIMIT 1),
g AS (SELECT x.gi, x.g FROM v, jsonb_array_elements(v.spec->'groups') WITH ORDINALITY x(g, gi)),
s AS (SELECT g.gi, y.si, y.st->>'name' AS name, y.st
        FROM g, jsonb_array_elements(g.g->'stages') WITH ORDINALITY y(st, si)),
gdep AS (
    SELECT a.gi, b.gi AS dgi FROM g a JOIN g b
        ON CASE WHEN a.g ? 'depends_on' THEN a.g->'depends_on' ? (b.g->>'name') ELSE b.gi = a.gi - 1 END),
expected AS (
    SELECT a.name AS stage, b.name AS dep FROM s a JOIN gdep ON gdep.gi = a.gi JOIN s b ON b.gi = gdep.dgi
    UNION
    SELECT a.name, d.d FROM s a, jsonb_array_elements_text(coalesce(a.st->'depends_on', '[]')) d(d)
    UNION
    SELECT a.name, b.name FROM s a JOIN g ON g.gi = a.gi AND g.g->>'parallel' = 'false'
      JOIN s b ON b.gi = a.gi AND b.si = a.si - 1
    UNION
    SELECT a.name, b.name FROM s a, jsonb_array_elements_text(coalesce(a.st->'consumes', '[]')) c(c), s b
     WHERE coalesce(b.st->'produces', '[]') ? c.c AND b.name <> a.name),
actual AS (
    SELECT sa.name AS stage, sb.name AS dep FROM v JOIN parflow.stage_dep d ON d.version_id = v.id
      JOIN parflow.stage sa ON sa.version_id = v.id AND sa.ord = d.stage_ord
      JOIN parflow.stage sb ON sb.version_id = v.id AND sb.ord = d.dep_ord
    UNION
    SELECT sa.name, sb.name FROM v JOIN parflow.group_dep gd ON gd.version_id = v.id
      JOIN parflow.stage sa ON sa.version_id = v.id AND sa.group_ord = gd.group_ord
      JOIN parflow.stage sb ON sb.version_id = v.id AND sb.group_ord = gd.dep_ord)
SQL
    if [ "${2:-}" = count ]; then
        echo "SELECT count(*) FROM expected"
        return
    fi
    cat <<SQL
(SELECT 'missing: ' || stage || ' -> ' || dep FROM (SELECT * FROM expected EXCEPT SELECT * FROM actual) x ORDER BY 1)
UNION ALL
(SELECT 'extra: ' || stage || ' -> ' || dep FROM (SELECT * FROM actual EXCEPT SELECT * FROM expected) x ORDER BY 1)
SQL
}

# e2e_check_spec_edges DESC WORKFLOW
e2e_check_spec_edges() {
    local n
    n="$(e2e_q -c "$(e2e_sql_spec_edges "$2" count)" 2>&1)"
    e2e_check "$1 ($n edges)" "$(e2e_sql_spec_edges "$2")"
}
