#!/usr/bin/env bash
# test/bench/databases.sh -- dispatch throughput with four databases served
# at once against one database (run by test/bench/run.sh, or alone:
# bash test/bench/databases.sh).
#
# A private cluster (parflow.database = '': the launcher serves every
# database with the extension; parflow.max_parallel_stages = 64 in each)
# with databases bench_db1..bench_db4.  The same work both ways, interleaved,
# PF_BENCH_DB_REPS times (default 3): PF_BENCH_DB_STAGES (default 4000)
# independent no-op stages and PF_BENCH_DB_AGENTS (default 8) reference
# agents (parflow-agent --simulate 0 --concurrency 4), either all in
# bench_db1 (one run), or spread over the four databases (a run of a quarter
# of the stages and a quarter of the agents in each, started together).
# Wall time: from the first parflow_start to the last run succeeded (polled
# every 20 ms).  The four databases have four dispatchers, four notification
# rings and four caps; what they share is the server (CPU, WAL, locks on
# shared catalogs).  Summary lines go to test/bench/out/databases.*.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=test/cluster.sh
source test/cluster.sh
cd "$PF_ROOT"
# shellcheck source=test/bench/handoff.common.bash
source test/bench/handoff.common.bash   # bench_agg, bench_ratio, bench_summary, bench_agent

stages=${PF_BENCH_DB_STAGES:-4000}
nagents=${PF_BENCH_DB_AGENTS:-8}
reps=${PF_BENCH_DB_REPS:-3}
out_dir="$PF_ROOT/test/bench/out"
mkdir -p "$out_dir"
res="$out_dir/databases"
rm -f "$res".*

pf_cluster_start "parflow.database = ''" "parflow.max_parallel_stages = 64" \
    "parflow.learn_min_runs = 0" "max_worker_processes = 16"
dbs=(bench_db1 bench_db2 bench_db3 bench_db4)
for d in "${dbs[@]}"; do
    pf_psql -q -d postgres -c "CREATE DATABASE $d" >/dev/null
    pf_psql -q -d "$d" -c "SET client_min_messages = warning" -c "CREATE EXTENSION parflow" >/dev/null
done
for d in "${dbs[@]}"; do
    PGDATABASE=$d pf_wait_for "SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'parflow dispatcher'
                                AND datname = current_database()" 30 ||
        { echo "databases.sh: no dispatcher serves $d" >&2; exit 1; }
done

# define DB WORKFLOW N AGENT: N independent no-op stages of kind AGENT
define() {
    pf_psql -q -d "$1" -v w="$2" -v n="$3" -v a="$4" >/dev/null <<'SQL'
SET client_min_messages = warning;
SELECT parflow_define(:'w', jsonb_build_object('groups', jsonb_build_array(
         jsonb_build_object('name', 'all', 'stages',
           (SELECT jsonb_agg(jsonb_build_object('name', 's' || i, 'agent', :'a', 'estimate', '1 s') ORDER BY i)
              FROM generate_series(1, :n) i)))));
ANALYZE parflow.workflow_version, parflow.stage_group, parflow.stage;
SQL
}
# the one-database runs are served by kind bench_db, the others by bench_dbq
define bench_db1 bench_one "$stages" bench_db
for d in "${dbs[@]}"; do
    define "$d" bench_quarter $((stages / 4)) bench_dbq
done

# agents: all of them on bench_db1 for the one-database runs, a quarter on
# each database for the four-database runs; started once, idle between runs
for ((i = 0; i < nagents; i++)); do
    bench_agent "$out_dir/databases.agents.log" --agent bench_db --simulate 0 --concurrency 4 -q -d "dbname=bench_db1"
done
for d in "${dbs[@]}"; do
    for ((i = 0; i < nagents / 4; i++)); do
        bench_agent "$out_dir/databases.agents.log" --agent bench_dbq --simulate 0 --concurrency 4 -q -d "dbname=$d"
    done
done
sleep 1

now_ms() { date +%s%3N; }
# wait until run $2 of database $1 has succeeded
wait_run() {
    while [ "$(pf_psql -qAt -d "$1" -c "SELECT state FROM parflow.runs WHERE run = $2")" != succeeded ]; do
        sleep 0.02
    done
}
one() {
    local t0 r
    t0=$(now_ms)
    r=$(pf_psql -qAt -d bench_db1 -c "SELECT parflow_start('bench_one', parallel => true)")
    wait_run bench_db1 "$r"
    echo "wall=$(($(now_ms) - t0)) stages=$stages" >>"$res.one.txt"
}
four() {
    local t0 d runs=() i=0
    t0=$(now_ms)
    for d in "${dbs[@]}"; do
        runs+=("$(pf_psql -qAt -d "$d" -c "SELECT parflow_start('bench_quarter', parallel => true)")")
    done
    for d in "${dbs[@]}"; do
        wait_run "$d" "${runs[$i]}"
        i=$((i + 1))
    done
    echo "wall=$(($(now_ms) - t0)) stages=$stages" >>"$res.four.txt"
}
for ((k = 1; k <= reps; k++)); do
    one
    four
done
for f in "$res.one.txt" "$res.four.txt"; do
    awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
           printf "%s rate=%.1f\n", $0, v["stages"] / (v["wall"] / 1000) }' "$f" >"$f.d"
done

echo "== databases: $stages no-op stages, $nagents reference agents (--simulate 0 --concurrency 4), in one database or spread over four served at once; $reps runs each, interleaved (median, min..max)"
printf '  %-44s %s\n' "" "stages/s"
printf '  %-44s %s\n' "one database (one run, $nagents agents)" "$(bench_agg "$res.one.txt.d" rate %.0f)"
printf '  %-44s %s\n' "four databases ($((stages / 4)) stages, $((nagents / 4)) agents each)" "$(bench_agg "$res.four.txt.d" rate %.0f)"
printf '  %-44s %s\n' "  ratio four / one" "$(bench_ratio "$res.four.txt.d" rate "$res.one.txt.d" rate %.2fx)"
bench_summary "stages/s, 4 databases at once (vs one database)" "$(bench_agg "$res.four.txt.d" rate %.0f)" \
    "$(bench_agg "$res.one.txt.d" rate %.0f)" "$(bench_ratio "$res.four.txt.d" rate "$res.one.txt.d" rate %.2fx)"
echo
