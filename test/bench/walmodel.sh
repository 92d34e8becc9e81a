#!/usr/bin/env bash
# test/bench/walmodel.sh -- WAL bytes per stage of write patterns, an
# experiment for the design of the task path (not run by make bench; alone:
# cd /work/main && bash test/bench/walmodel.sh).
#
# test/bench/walmodel.sql takes PF_BENCH_WAL_N tasks (default 5000) through
# dispatch, claim and completion in plain SQL, one transaction per
# transition (their rows, and the "ready" events, inserted first in one
# statement each, as parflow_start and add_jobs do), under four write patterns: "now" (parflow 0.4.0's task and
# event tables and indexes), "hot" (state in no index of the task row, the
# ready and dispatched tasks in narrow queue tables, one index on events),
# "lean" (hot, with the columns a transition changes last in the row and
# events in the heap with a BRIN index), and "queue" (a job queue's least,
# in graphile-worker's shape, without an event log).  For each: WAL bytes
# per stage (pg_current_wal_lsn before the insert and after the last
# transition; a CHECKPOINT before, so full-page images count as they would) and the records that make them
# (pg_walinspect), and the ratio to "queue" in the same run.  A private
# cluster (test/cluster.sh), database parflow_bench_wal.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=test/cluster.sh
source test/cluster.sh
cd "$PF_ROOT"

n=${PF_BENCH_WAL_N:-5000}
db=parflow_bench_wal
pf_cluster_start
pf_psql -q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
q() { pf_psql -d "$db" -qAtX "$@"; }
q -c "CREATE EXTENSION pg_walinspect" -f test/bench/walmodel.sql >/dev/null

cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
echo "== WAL per stage of write patterns ($n tasks, dispatch + claim + completion, one transaction per transition)"
echo "machine: nproc $(nproc), CPU ${cpu:-unknown}; load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"
declare -A bytes
for p in now hot lean queue; do
    q -c "CHECKPOINT" >/dev/null
    s=$(q -c "SELECT pg_current_wal_lsn()")
    case $p in
        now) q -c "INSERT INTO wx.task_now (run_id, stage_ord, group_ord, agent, state, pending, priority, rank)
                   SELECT 1, i, 0, 'wp', 'ready', 0, 2, 0 FROM generate_series(1, $n) i" \
               -c "INSERT INTO wx.event_now (run_id, task_id, kind) SELECT 1, i, 'ready' FROM generate_series(1, $n) i" ;;
        hot|lean) q -c "INSERT INTO wx.task_$p (run_id, stage_ord, group_ord, agent, state, pending, priority, rank)
                        SELECT 1, i, 0, 'wp', 'ready', 0, 2, 0 FROM generate_series(1, $n) i" \
                    -c "INSERT INTO wx.ready_$p SELECT 2, 0, i, 1 FROM generate_series(1, $n) i" \
                    -c "INSERT INTO wx.event_$p (run_id, task_id, kind) SELECT 1, i, 'ready' FROM generate_series(1, $n) i" ;;
        queue) q -c "INSERT INTO wx.job_queue (task_identifier) SELECT 'wp' FROM generate_series(1, $n)" ;;
    esac
    case $p in
        hot|lean) call="wx.run_queued($n, '$p')" ;;
        *) call="wx.run_$p($n)" ;;
    esac
    q -c "SET search_path = wx, pg_catalog" -c "CALL $call"
    e=$(q -c "SELECT pg_current_wal_lsn()")
    bytes[$p]=$(q -c "SELECT round(('$e'::pg_lsn - '$s'::pg_lsn)::numeric / $n)")
    recs=$(q -F ' ' -c "SELECT string_agg(format('%s %s x%s', \"resource_manager/record_type\", round(combined_size::numeric / $n),
                                                 round(count::numeric / $n, 1)), ', ' ORDER BY combined_size DESC)
                          FROM pg_get_wal_stats('$s', '$e', true) WHERE combined_size::numeric / $n >= 5")
    printf '  %-6s %5s bytes/stage  (%s)\n' "$p" "${bytes[$p]}" "$recs"
done
for p in now hot lean; do
    printf '  %-6s / queue: %sx\n' "$p" "$(awk -v a="${bytes[$p]}" -v b="${bytes[queue]}" 'BEGIN { printf "%.2f", a / b }')"
done
echo "  (record bytes per stage, then records per stage; commits: 3 per stage here, 1 for a completion that claims the next task)"
pf_psql -q -d postgres -c "DROP DATABASE $db"
