#!/usr/bin/env bash
# test/bench/run.sh -- what `make bench` runs, once parflow is built and installed.
#
# Prints the machine and the server settings, starts one throwaway cluster
# (test/cluster.sh) with parflow.max_parallel_stages = 64, and runs every
# benchmark script test/bench/<name>.sh (in name order; this file and
# files starting with "_" excluded) against it, each as its own process with
# the cluster's environment exported plus PF_BENCH_SHARED=1.  A benchmark
# prints its own table(s) and keeps details under test/bench/out/ (made
# here; not committed); it uses its own database when it writes, so that
# benchmarks do not see each other's workflows.  A benchmark that needs other
# server settings starts a private cluster when PF_BENCH_SHARED is unset, and
# is then also runnable alone: `bash test/bench/<name>.sh`.
#
# The whole output is also kept in test/bench/out/bench.log; a complete run
# (no PF_BENCH_ONLY, no benchmark failed) turns it into doc/performance.md
# (test/bench/_perfdoc.sh), a partial one into test/bench/out/performance.md.
#
# Knobs: PF_BENCH_ONLY="plan ..." (run only these), PF_BENCH_TIMEOUT (seconds
# per benchmark, default 1800), and those of the benchmarks (plan.sh:
# PF_BENCH_SIZES, PF_BENCH_REPS, PF_BENCH_DEFINE_TIMEOUT, PF_STG_DIR) and of
# test/cluster.sh.  Exit status: non-zero if a benchmark failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

# Run the benchmarks in a child whose output is also written to the log, then
# make the performance page from the log.
if [ -z "${_PF_BENCH_CHILD:-}" ]; then
    mkdir -p test/bench/out
    set +e
    _PF_BENCH_CHILD=1 bash test/bench/run.sh "$@" | tee test/bench/out/bench.log
    rc=${PIPESTATUS[0]}
    set -e
    if [ "$rc" -eq 0 ] && [ -z "${PF_BENCH_ONLY:-}" ]; then
        bash test/bench/_perfdoc.sh test/bench/out/bench.log doc/performance.md
    else
        bash test/bench/_perfdoc.sh test/bench/out/bench.log test/bench/out/performance.md
        echo "(doc/performance.md is written only by a complete run in which no benchmark failed)"
    fi
    exit "$rc"
fi

# shellcheck source=test/cluster.sh
source test/cluster.sh
cd "$PF_ROOT"

# We may run under `make bench`: keep its flags and jobserver out of sub-makes.
unset MAKEFLAGS MFLAGS MAKELEVEL

mkdir -p test/bench/out

benches=()
for f in test/bench/*.sh; do
    name=$(basename "$f" .sh)
    case "$name" in run | _*) continue ;; esac
    if [ -n "${PF_BENCH_ONLY:-}" ] && [[ " $PF_BENCH_ONLY " != *" $name "* ]]; then
        continue
    fi
    benches+=("$name")
done

PF_PRELOAD="${PF_PRELOAD:-parflow,pg_cron},pg_stat_statements" pf_cluster_start "parflow.max_parallel_stages = 64" \
    "track_commit_timestamp = on" "pg_stat_statements.track = none" "parflow.learn_min_runs = 0"
export PF_BENCH_SHARED=1

cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
rev=$(git -C "$PF_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ "$rev" != unknown ] && ! git -C "$PF_ROOT" diff --quiet HEAD -- src sql 2>/dev/null; then
    rev="$rev + uncommitted changes in src/ or sql/"
fi
echo "== parflow benchmarks ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $rev)"
echo "machine: nproc $(nproc), CPU ${cpu:-unknown}, $(awk '/^MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo 2>/dev/null)"
pf_psql -qAt -c "SELECT version()" | sed 's/^/server: /'
pf_psql -qAt -c "SELECT format('settings: synchronous_commit = %s, fsync = %s, shared_buffers = %s, parflow.max_parallel_stages = %s, jit = %s',
                         current_setting('synchronous_commit'), current_setting('fsync'),
                         current_setting('shared_buffers'), current_setting('parflow.max_parallel_stages'),
                         current_setting('jit'))"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown) (other work on the machine skews the times)"

ok=0
failed=()
rm -f test/bench/out/summary.tsv
for name in "${benches[@]}"; do
    echo
    start=$SECONDS
    set +e
    timeout --foreground -k 10 "${PF_BENCH_TIMEOUT:-1800}" bash "test/bench/$name.sh"
    rc=$?
    set -e
    if [ "$rc" -eq 0 ]; then
        ok=$((ok + 1))
        echo "-- $name: done in $((SECONDS - start)) s"
    else
        failed+=("$name")
        echo "-- $name: FAILED (exit $rc) after $((SECONDS - start)) s"
    fi
done

# one table of the headline figures (each benchmark adds its rows with
# bench_summary; medians over its runs, min..max)
if [ -s test/bench/out/summary.tsv ]; then
    echo
    echo "== summary: metric | parflow | baseline or peer | ratio (same run, same server; machine above)"
    awk -F'\t' '{ printf "  %-70s | %-24s | %-24s | %s\n", $1, $2, $3, $4 }' test/bench/out/summary.tsv
fi

echo
if [ "${#failed[@]}" -gt 0 ]; then
    pf_cluster_log_tail 40
    echo "benchmarks: $ok done, ${#failed[@]} failed (${failed[*]})"
    exit 1
fi
echo "benchmarks: $ok done"
