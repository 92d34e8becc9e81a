#!/usr/bin/env bash
# test/e2e/80_dump_restore.sh -- pg_dump / pg_restore keep every workflow,
# run, task and event (the tables and identity sequences are marked with
# pg_extension_config_dump), and the restored database goes on working.
#
# A database of its own (the dispatcher serves another one, so the passes are
# called by hand): the seed workflow and a second version of it, a finished
# run, a blocked run and a run half done with a task held; pg_dump -Fc;
# pg_restore into a new database; every parflow table identical (row counts
# and a hash of the rows); the held lease still completes there, the blocked
# run can be retried, and new runs get new ids.
set -u -o pipefail
# shellcheck source=test/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init 80_dump_restore ''

SRC=parflow_e2e80_src
DST=parflow_e2e80_dst
# shellcheck disable=SC2317 # run at exit, through pf_on_exit
drop_dbs() {
    e2e_q -d postgres -c "DROP DATABASE IF EXISTS $SRC" -c "DROP DATABASE IF EXISTS $DST" >/dev/null 2>&1 || true
}
pf_on_exit drop_dbs
drop_dbs
e2e_q -c "CREATE DATABASE $SRC" >/dev/null || e2e_die "create $SRC"

src() { e2e_q -d "$SRC" "$@"; }
dst() { e2e_q -d "$DST" "$@"; }

src -v ON_ERROR_STOP=1 >/dev/null <<SQL || e2e_die "fill $SRC"
SET client_min_messages = warning;
CREATE EXTENSION parflow;
\i $PF_ROOT/test/demo/sdlc_spec.sql
SELECT parflow_define('sdlc', pg_temp.seed_spec());
SELECT parflow_define('sdlc', pg_temp.seed_spec() || '{"max_parallel": 2}');
SELECT parflow_define('tiny', '{"groups": [{"name": "g", "stages": [
    {"name": "a", "agent": "e2e80_a", "estimate": "1 min", "max_attempts": 1}]}]}');
-- a finished run
SELECT parflow_start('tiny', parallel => true) AS r1 \gset
SELECT parflow._dispatch();
SELECT task, token FROM parflow_claim('e2e80_a', 'w') \gset
SELECT parflow_complete(:task, :'token', '{"done": 1}');
-- a blocked run
SELECT parflow_start('tiny', parallel => true) AS r2 \gset
SELECT parflow._dispatch();
SELECT task, token FROM parflow_claim('e2e80_a', 'w') \gset
SELECT parflow_fail(:task, :'token', 'boom', false);
-- a run half done, with a task held
SELECT parflow_start('sdlc', '{security}', parallel => true, input => '{"ticket": 80}') AS r3 \gset
SELECT parflow._dispatch();
SELECT task, token FROM parflow_claim('research', 'w') \gset
SELECT parflow_complete(:task, :'token', '{"findings": 2}');
SELECT parflow._dispatch();
SELECT task, token FROM parflow_claim('critique', 'w', '1 hour') \gset
SQL
held="$(src -c "SELECT id || ' ' || token FROM parflow.task WHERE state = 'running'")"
read -r held_task held_token <<<"$held"

# every table of the extension: row count and a hash of its rows
TABLES_SQL="SELECT string_agg(c.relname, ' ' ORDER BY c.relname) FROM pg_class c
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'parflow' AND c.relkind = 'r'"
fingerprint() {
    local db="$1" t out=""
    for t in $(e2e_q -d "$db" -c "$TABLES_SQL"); do
        out="$out$t $(e2e_q -d "$db" -c "SELECT count(*) || ' ' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '-')
                                          FROM parflow.$t x")
"
    done
    printf '%s' "$out"
}
before="$(fingerprint "$SRC")"

dump="$E2E_DIR/src.dump"
if ! out="$("$PG_BIN/pg_dump" -Fc -d "$SRC" -f "$dump" 2>&1)"; then
    e2e_die "pg_dump: $out"
fi
e2e_q -c "CREATE DATABASE $DST" >/dev/null || e2e_die "create $DST"
if ! out="$("$PG_BIN/pg_restore" --exit-on-error -d "$DST" "$dump" 2>&1)"; then
    e2e_fail "pg_restore into a new database" "$out"
else
    e2e_pass "pg_restore into a new database"
fi
after="$(fingerprint "$DST")"
if [ "$before" = "$after" ] && [ -n "$before" ]; then
    e2e_pass "every parflow table identical after restore ($(printf '%s\n' "$before" | wc -l) tables: $(printf '%s' "$before" | awk '{printf "%s%s=%s", (NR > 1 ? ", " : ""), $1, $2}'))"
else
    e2e_fail "every parflow table identical after restore" "$(diff <(printf '%s\n' "$before") <(printf '%s\n' "$after"))"
fi
# the checks below query the restored database
export PGDATABASE=$DST
e2e_check_eq "restored: workflows and versions" \
    "SELECT string_agg(workflow || ' v' || version, ', ' ORDER BY workflow, version) FROM (
        SELECT w.name AS workflow, v.version FROM parflow.workflow w JOIN parflow.workflow_version v ON v.workflow_id = w.id) x" \
    "$(src -c "SELECT string_agg(workflow || ' v' || version, ', ' ORDER BY workflow, version) FROM (
        SELECT w.name AS workflow, v.version FROM parflow.workflow w JOIN parflow.workflow_version v ON v.workflow_id = w.id) x")"
if [ "$(dst -c "SELECT string_agg(state, ',' ORDER BY run) FROM parflow.runs")" = "succeeded,blocked,running" ]; then
    e2e_pass "restored: the three runs in their states (succeeded, blocked, running)"
else
    e2e_fail "restored: the three runs in their states" "$(dst -c "SELECT run, state FROM parflow.runs ORDER BY run")"
fi

# The restored database goes on working.
dst -c "SELECT parflow_complete($held_task, '$held_token', '{\"ok\": true}')" -c "SELECT parflow._dispatch()" >/dev/null 2>&1
e2e_check_eq "restored: the lease held before the dump completes, the next group is dispatched" \
    "SELECT string_agg(stage || '=' || state, ' ' ORDER BY task) FROM parflow.tasks
      WHERE run = (SELECT max(run) FROM parflow.runs) AND state IN ('succeeded', 'dispatched')" \
    "research=succeeded critique=succeeded backend=dispatched frontend=dispatched"
blocked="$(dst -c "SELECT run FROM parflow.runs WHERE state = 'blocked'")"
dst -c "SELECT parflow_retry($blocked, 'a')" >/dev/null 2>&1
e2e_check_eq "restored: the blocked run can be retried" \
    "SELECT state FROM parflow.runs WHERE run = ${blocked:-0}" "running"
e2e_check_true "restored: a new run gets a new id, and its tasks and events too" "
    SELECT parflow_start('tiny') > (SELECT max(id) FROM parflow.run WHERE id < (SELECT max(id) FROM parflow.run))
       AND (SELECT count(*) = count(DISTINCT id) FROM parflow.task)
       AND (SELECT count(*) = count(DISTINCT id) FROM parflow.event)"
e2e_check_eq "restored: the new run is planned like before" \
    "SELECT parallel FROM parflow_estimate('sdlc', '{performance,security}')" \
    "$(src -c "SELECT parallel FROM parflow_estimate('sdlc', '{performance,security}')")"
e2e_finish
