#!/usr/bin/env bash
# test/bench/peers.sh -- parflow against two real job queues that run on
# PostgreSQL, on the same server in the same run: graphile-worker 0.17 and
# pg-boss 10 (Node.js packages, pinned in test/bench/peers/package.json and
# package-lock.json; `npm ci` installs them into test/bench/peers/node_modules
# when that is missing or older than the lock file).  Run by test/bench/run.sh,
# or alone: cd /work/main && bash test/bench/peers.sh.  Without node (>= 20)
# or npm, or when npm ci fails (no registry), it prints why it skips the
# comparison and exits 0.
#
# 1. Throughput: PF_BENCH_PEERS_JOBS (default 10000) independent no-op jobs,
#    PF_BENCH_PEERS_WORKERS (default 8) workers, each system in its documented
#    fast configuration:
#      parflow           PF_BENCH_PEERS_WORKERS agent processes of
#                        test/bench/handoff_client.c, mode throughput (as in
#                        test/bench/throughput.sh: each claims until
#                        parflow_claim returns nothing, completing each task
#                        at once, then waits for a dispatch NOTIFY); one run of
#                        a workflow of N independent stages.  Clock: from
#                        parflow_start (which creates the N tasks) to the run's
#                        "succeeded" notification -- dispatch, claim, complete
#                        (and, with PF_BENCH_ANALYZE=1, the default, an ANALYZE
#                        of the run's tables, as in throughput.sh).  Defining
#                        the workflow is not counted.
#      graphile-worker   one runner with concurrency = the worker count (its
#      (default)         documented way to run that many jobs at once), pool at
#                        its default size (10); N jobs added with one addJobs()
#                        call once the runner listens.
#      graphile-worker   the same plus the batching options of its docs'
#      (batched)         "Performance" page: localQueue.size 500,
#                        completeJobBatchDelay 0, failJobBatchDelay 0.
#      pg-boss           the worker count of work() subscriptions on one queue
#                        (v10 has no teamSize: several work() calls with a
#                        batchSize, the handler running its batch's jobs
#                        concurrently, is the documented way), batchSize
#                        PF_BENCH_PEERS_PGBOSS_BATCH (default 500, graphile's
#                        local queue size above; with 100 pg-boss is bound by
#                        its polling: 8 x 100 jobs per 0.5 s), polling every
#                        0.5 s (the minimum pg-boss allows); N jobs inserted
#                        with one insert() call before the workers start, in a
#                        new queue each run.  Its completion UPDATE scans the
#                        queue's jobs (see peers/pgboss.js), so it slows down
#                        as the queue grows: compare its 10000 and 50000 rows.
#    The peers' clock starts once the jobs are in (the enqueue is reported
#    apart, and in a second jobs/s row that counts it) and stops when the last
#    completion is committed.  See test/bench/peers/*.js for the details.
# 2. Per job, machine-independent: WAL bytes (pg_current_wal_insert_lsn
#    before and after: parflow from parflow_start to the end, the peers from
#    before the enqueue to the end; everything the server wrote meanwhile,
#    autovacuum included) and commits (pg_stat_database.xact_commit of the
#    system's database -- postgres for parflow, whose dispatcher serves it,
#    parflow_bench_peers for the peers -- around the whole client process, read
#    once its backends have exited; for the peers that includes their start-up
#    and shut-down, a few dozen transactions).
# 3. Hand-off latency over a chain of PF_BENCH_PEERS_CHAIN (default 1000)
#    jobs: parflow as in test/bench/handoff.sh (a chain of single-stage groups,
#    one agent connection; from the commit of parflow_complete to the
#    successor's dispatch NOTIFY at the agent, commit-anchored, and to the
#    successor's claim returning), graphile-worker with a handler that adds
#    the next job (from the add's commit to the next handler's start; the
#    runner as in "default" above, so a free slot takes the next job).
#    pg-boss is left out: it polls (every 0.5 s at best), it has no
#    notification path to time.
#
# Each of PF_BENCH_PEERS_REPS runs (default 3) runs every system once, one
# after the other (interleaved); the table prints the median over the runs
# with min..max, and the ratios parflow / peer run by run.  Before them, one
# unreported warm-up of each with 1000 jobs.  Then, when PF_BENCH_PEERS_BIG=1,
# or unless it is 0 when the time spent so far plus the estimated run keeps
# within PF_BENCH_PEERS_BUDGET seconds from the script's start (default 330:
# the whole script then stays near 6 minutes on a 2-core machine), the same with
# PF_BENCH_PEERS_BIG_JOBS (default 50000) jobs, as many runs as fit (all of
# them with PF_BENCH_PEERS_BIG=1).  Every phase runs under timeout(1)
# (PF_BENCH_PEERS_PHASE_TIMEOUT seconds, default 120, scaled with the job
# count), in the background so that the exit hook stops it on any way out.
# PF_BENCH_PROFILE=1 adds a last parflow run with pg_stat_statements.track =
# all and prints where its time goes (as throughput.sh does).
#
# Cluster: the one run.sh exported when PF_BENCH_SHARED=1, else a private one
# (test/bench/handoff.common.bash).  parflow works in database postgres
# (workflows bench_peers_*, agent kinds bench_peers_tp and bench_peers_chain);
# the peers in database parflow_bench_peers (made afresh, dropped at exit),
# with their own schemas (graphile_worker, pgboss).  Summary lines of every
# run go to test/bench/out/peers.*.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
peers_dir="$here/peers"
mkdir -p "$here/out"

skip() {
    echo "== peers: comparison with graphile-worker and pg-boss SKIPPED: $*"
    exit 0
}
command -v node >/dev/null 2>&1 || skip "node is not installed (the peers are Node.js packages: install Node.js >= 20 and npm)"
command -v npm >/dev/null 2>&1 || skip "npm is not installed (needed to install the peers from test/bench/peers/package-lock.json)"
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
[ "$node_major" -ge 20 ] 2>/dev/null || skip "node $(node --version 2>/dev/null) is older than 20 (pg-boss 10 needs Node.js >= 20)"

# the peers, installed from the lock file unless already there (a stamp of the
# lock file in node_modules)
npm_log="$here/out/peers.npm.log"
stamp="$peers_dir/node_modules/.parflow-lock.sha256"
lock_sum=$(sha256sum "$peers_dir/package-lock.json" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_sum" ]; then
    if ! (cd "$peers_dir" && timeout -k 5 300 npm ci --no-audit --no-fund --loglevel=error) >"$npm_log" 2>&1; then
        tail -n 5 "$npm_log" | sed 's/^/  npm: /'
        skip "'npm ci' in test/bench/peers failed (no npm registry reachable?); log: test/bench/out/peers.npm.log"
    fi
    echo "$lock_sum" >"$stamp"
fi
version_of() { node -p "require('$peers_dir/node_modules/$1/package.json').version"; }
gw_version=$(version_of graphile-worker)
boss_version=$(version_of pg-boss)
pgjs_version=$(version_of pg)

# shellcheck source=test/bench/handoff.common.bash
source "$here/handoff.common.bash"
bench_setup
bench_cancel_live_runs_at_exit bench_peers_tp_1000 bench_peers_tp_10000 bench_peers_tp_50000 bench_peers_chain

jobs=${PF_BENCH_PEERS_JOBS:-10000}
big_jobs=${PF_BENCH_PEERS_BIG_JOBS:-50000}
big=${PF_BENCH_PEERS_BIG:-}
workers=${PF_BENCH_PEERS_WORKERS:-8}
reps=${PF_BENCH_PEERS_REPS:-3}
budget=${PF_BENCH_PEERS_BUDGET:-330}
chain_len=${PF_BENCH_PEERS_CHAIN:-1000}
boss_batch=${PF_BENCH_PEERS_PGBOSS_BATCH:-500}
phase_timeout=${PF_BENCH_PEERS_PHASE_TIMEOUT:-120}
export PF_BENCH_ANALYZE=${PF_BENCH_ANALYZE:-1}
peers_db=parflow_bench_peers
res="$out_dir/peers"
rm -f "$res".*.txt "$res".*.d "$res".*.samples "$res".*.err

bench_cap_at_least 64

# ---------------------------------------------------------------- phases

# run_phase SECONDS ERRFILE CMD...: CMD under timeout(1), in the background
# (the exit hook stops it); its stdout in $phase_out, its stderr appended to
# ERRFILE.  Fails, showing the end of ERRFILE, if CMD fails or times out.
phase_pid=""
phase_out="$out_dir/peers.phase.out"
run_phase() {
    local secs="$1" err="$2" rc=0
    shift 2
    echo "--- $(date -u +%T) $*" >>"$err"
    # the node scripts give up (with a message) just before timeout(1) would
    PF_BENCH_PEERS_PHASE_TIMEOUT=$((secs > 10 ? secs - 3 : secs)) \
        timeout -k 5 "$secs" "$@" >"$phase_out" 2>>"$err" &
    phase_pid=$!
    wait "$phase_pid" || rc=$?
    phase_pid=""
    if [ "$rc" -ne 0 ]; then
        echo "peers: '$*' failed (exit $rc$([ "$rc" -eq 124 ] && echo ", timed out after $secs s")); end of $err:" >&2
        tail -n 15 "$err" >&2
        return 1
    fi
}
stop_phase() {
    if [ -n "$phase_pid" ] && kill -0 "$phase_pid" 2>/dev/null; then
        kill -TERM "$phase_pid" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$phase_pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL "$phase_pid" 2>/dev/null || true
    fi
}

drop_peers_db() {
    q -q -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $peers_db WITH (FORCE)" >/dev/null 2>&1 || true
}
drop_peers_db
q -q -c "CREATE DATABASE $peers_db" >/dev/null
pf_on_exit drop_peers_db
pf_on_exit stop_phase   # runs first: hooks run last-registered first

gw=(env PGDATABASE="$peers_db" PGAPPNAME=pf_bench_peers_graphile node "$peers_dir/graphile.js")
boss=(env PGDATABASE="$peers_db" PGAPPNAME=pf_bench_peers_pgboss node "$peers_dir/pgboss.js")

# the peers' schemas, installed once (not measured)
run_phase "$phase_timeout" "$res.setup.err" "${gw[@]}" setup
run_phase "$phase_timeout" "$res.setup.err" "${boss[@]}" setup

# parflow's workflows: N independent stages (one group, one agent kind), and
# the chain of single-stage groups of handoff.sh
define_tp() {
    q -q -v n="$1" -v a=bench_peers_tp >/dev/null <<'SQL'
SET client_min_messages = warning;
SELECT parflow_define('bench_peers_tp_' || :n, jsonb_build_object('groups', jsonb_build_array(
         jsonb_build_object('name', 'all', 'stages',
           (SELECT jsonb_agg(jsonb_build_object('name', 's' || i, 'agent', :'a', 'estimate', '1 s') ORDER BY i)
              FROM generate_series(1, :n) i)))));
SQL
    if [ "$PF_BENCH_ANALYZE" = 1 ]; then
        # as autovacuum would have done by the time a workflow defined once runs
        q -q -c "ANALYZE parflow.workflow_version, parflow.stage_group, parflow.group_dep, parflow.stage, parflow.stage_dep" >/dev/null
    fi
}
define_tp 1000
define_tp "$jobs"
q -q -v n="$chain_len" -v a=bench_peers_chain >/dev/null <<'SQL'
SET client_min_messages = warning;
SELECT parflow_define('bench_peers_chain', jsonb_build_object('groups',
         (SELECT jsonb_agg(jsonb_build_object('name', 'g' || i, 'stages', jsonb_build_array(
                     jsonb_build_object('name', 's' || i, 'agent', :'a', 'estimate', '1 s'))) ORDER BY i)
            FROM generate_series(1, :n) i)));
SQL

lsn() { qv -c "SELECT pg_current_wal_insert_lsn()"; }
commits() { qv -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$1'"; }
# the benchmark's backends are gone (their counts flushed at exit)
settle() {
    pf_wait_for "SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE application_name LIKE 'pf_bench%')" 30
    sleep 0.5
}

# measure FILE DB N CMD...: run CMD (one summary line on stdout) as a phase,
# append that line with xacts= (commits in database DB meanwhile), jobs=N and,
# when CMD does not report it, wal= (WAL bytes meanwhile).
measure() {
    local file="$1" db="$2" n="$3" c0 c1 l0 l1 out secs
    shift 3
    secs=$((phase_timeout * (n > 10000 ? n / 10000 : 1)))
    settle
    # a checkpoint's full-page images inside one system's run would count as
    # its WAL: every system starts from a fresh checkpoint
    q -q -c "CHECKPOINT" >/dev/null
    c0=$(commits "$db")
    l0=$(lsn)
    run_phase "$secs" "$file.err" "$@"
    l1=$(lsn)
    out=$(cat "$phase_out")
    settle
    c1=$(commits "$db")
    if [[ " $out " != *" wal="* ]]; then
        out="$out wal=$(qv -c "SELECT pg_wal_lsn_diff('$l1', '$l0')::bigint")"
    fi
    echo "$out xacts=$((c1 - c0)) jobs=$n" >>"$file"
}

# one run of every system with N jobs, in this order
round() {
    local n="$1" f="$2"
    measure "$f.parflow.txt" postgres "$n" "$client" throughput "bench_peers_tp_$n" bench_peers_tp "$workers"
    measure "$f.gw_default.txt" "$peers_db" "$n" "${gw[@]}" throughput "$n" "$workers" default
    measure "$f.gw_batched.txt" "$peers_db" "$n" "${gw[@]}" throughput "$n" "$workers" batched
    measure "$f.pgboss.txt" "$peers_db" "$n" "${boss[@]}" throughput "$n" "$workers" "$boss_batch"
}

# rate= (jobs/s, the clock), rate_e= (jobs/s counting the enqueue; parflow's
# clock always counts parflow_start), walps= and cps= (per job)
derive() {
    awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
           n = v["jobs"]; e = (v["enqueue"] != "" ? v["enqueue"] : 0)
           printf "%s rate=%.1f rate_e=%.1f walps=%.1f cps=%.3f\n", $0,
               n / (v["wall"] / 1000), n / ((v["wall"] + e) / 1000), v["wal"] / n, v["xacts"] / n }' "$1" >"$1.d"
}

# ---------------------------------------------------------------- runs

# warm-up (not reported)
round 1000 "$res.warmup"

ran=0
t0=$SECONDS
for ((i = 1; i <= reps; i++)); do
    round "$jobs" "$res.$jobs"
    ran=$i
done
round_secs=$(((SECONDS - t0 + ran - 1) / ran))

# hand-off latency over a chain, interleaved the same way
for ((i = 1; i <= reps; i++)); do
    run_phase "$phase_timeout" "$res.chain.parflow.err" \
        "$client" chain bench_peers_chain bench_peers_chain "$res.chain.parflow.$i.samples"
    # commit -> successor's claim returned: hc + the claim call, per sample
    # (columns: task handoff claim complete hc pass deliv, us)
    extra=$(awk '$5 >= 0 && NF >= 7 { print $5 + $3 }' "$res.chain.parflow.$i.samples" | sort -n |
        awk '{ v[n++] = $1 }
             function pct(p,   k) { k = int(p / 100 * n + 0.999999) - 1; if (k < 0) k = 0; if (k >= n) k = n - 1; return v[k] }
             END { if (n) printf " hcc_p50=%.3f hcc_p95=%.3f hcc_p99=%.3f hcc_max=%.3f", pct(50) / 1000, pct(95) / 1000, pct(99) / 1000, v[n - 1] / 1000 }')
    echo "$(cat "$phase_out")$extra" >>"$res.chain.parflow.txt"
    run_phase "$phase_timeout" "$res.chain.graphile.err" "${gw[@]}" chain "$chain_len" "$workers"
    cat "$phase_out" >>"$res.chain.graphile.txt"
done

# the big size, if asked or if it fits in the budget
big_ran=0
big_note=""
if [ "$big" != 0 ]; then
    est=$((round_secs * big_jobs / jobs + 10))   # + defining the workflow
    if [ "$big" = 1 ] || [ $((SECONDS + est)) -le "$budget" ]; then
        define_tp "$big_jobs"
        for ((i = 1; i <= reps; i++)); do
            if [ "$big" != 1 ] && [ "$i" -gt 1 ] && [ $((SECONDS + est)) -gt "$budget" ]; then
                big_note="$big_ran of $reps runs with $big_jobs jobs: another would overrun the ${budget} s budget (PF_BENCH_PEERS_BUDGET; PF_BENCH_PEERS_BIG=1 runs them all)"
                break
            fi
            t0=$SECONDS
            round "$big_jobs" "$res.$big_jobs"
            est=$((SECONDS - t0))
            big_ran=$i
        done
    else
        big_note="$big_jobs jobs skipped: about $est s more would overrun the ${budget} s budget (PF_BENCH_PEERS_BUDGET; PF_BENCH_PEERS_BIG=1 forces them)"
    fi
fi

# ---------------------------------------------------------------- report

sizes=("$jobs")
[ "$big_ran" -gt 0 ] && sizes+=("$big_jobs")
for n in "${sizes[@]}"; do
    for s in parflow gw_default gw_batched pgboss; do derive "$res.$n.$s.txt"; done
done

peer_label() {
    case "$1" in
        gw_default) echo "graphile-worker, concurrency $workers" ;;
        gw_batched) echo "graphile-worker, concurrency $workers, batched" ;;
        pgboss) echo "pg-boss, $workers work() x batchSize $boss_batch" ;;
    esac
}

echo "== peers: parflow against graphile-worker $gw_version and pg-boss $boss_version on the same server, same run; $ran run(s) of each system, interleaved (median, min..max)"
bench_describe
qv -c "SELECT 'version(): ' || version()"
echo "node $(node --version); peers pinned in test/bench/peers/package-lock.json: graphile-worker $gw_version, pg-boss $boss_version (node-postgres $pgjs_version)"
echo "configurations ($workers workers each; details in the header of test/bench/peers.sh):"
echo "  parflow          $workers agent processes (handoff_client, mode throughput), one run of a workflow of N independent no-op stages;"
echo "                   clock: parflow_start (creates the N tasks) -> run 'succeeded'$([ "$PF_BENCH_ANALYZE" = 1 ] && echo ', ANALYZE of the run included (PF_BENCH_ANALYZE=1)')"
echo "  graphile-worker  one runner, concurrency $workers, pool 10 (defaults); 'batched': + localQueue.size 500, completeJobBatchDelay 0,"
echo "                   failJobBatchDelay 0 (the docs' Performance page); N jobs by one addJobs() once the runner listens"
echo "  pg-boss          $workers work() workers on one queue, batchSize $boss_batch, pollingIntervalSeconds 0.5 (the minimum), handler"
echo "                   Promise.allSettled over its batch; N jobs by one insert() before the workers start"
echo "  peers' clock: enqueue committed -> last completion committed (enqueue shown apart, and counted in the 'with enqueue' rows)"
[ -n "$big_note" ] && echo "note: $big_note"
echo
row() { printf '  %-52s %-24s %-24s %s\n' "$@"; }
row "metric" "parflow" "peer" "ratio parflow / peer"
for n in "${sizes[@]}"; do
    f="$res.$n"
    nr=$(wc -l <"$f.parflow.txt")
    echo "  -- $n jobs, $nr run(s)"
    for key in rate rate_e walps cps enqueue; do
        pkey=$key
        case "$key" in
            rate) title="jobs/s (higher is better)"; fmt=%.0f ;;
            rate_e) title="jobs/s counting the peers' enqueue (parflow: as above)"; fmt=%.0f ;;
            walps) title="WAL bytes per job (lower is better)"; fmt=%.0f ;;
            cps) title="commits per job (lower is better)"; fmt=%.3f ;;
            enqueue) title="enqueue ms (parflow: the parflow_start call, in its clock)"; fmt=%.0f; pkey=start_call ;;
        esac
        echo "  $title"
        for s in gw_default gw_batched pgboss; do
            row "    vs $(peer_label "$s")" "$(bench_agg "$f.parflow.txt.d" "$pkey" "$fmt")" \
                "$(bench_agg "$f.$s.txt.d" "$key" "$fmt")" \
                "$(bench_ratio "$f.parflow.txt.d" "$pkey" "$f.$s.txt.d" "$key" %.2fx)"
        done
    done
done
echo "  -- hand-off over a chain of $chain_len jobs, $(wc -l <"$res.chain.parflow.txt") run(s), ms (lower is better)"
echo "  parflow: commit of parflow_complete -> successor's parflow_claim returned (single-stage groups, one agent connection);"
echo "  graphile-worker: commit of the add_job -> that job's handler starts (runner as 'concurrency $workers' above):"
ckey=hcc
gkey=hc
if [ "$has_cts" != t ]; then
    echo "  (track_commit_timestamp is off: client-side times instead, from the call returning to the notification / handler start)"
    ckey=handoff
    gkey=handoff
fi
for p in p50 p95 p99 max; do
    row "    $p" "$(bench_agg "$res.chain.parflow.txt" "${ckey}_$p")" "$(bench_agg "$res.chain.graphile.txt" "${gkey}_$p")" \
        "$(bench_ratio "$res.chain.parflow.txt" "${ckey}_$p" "$res.chain.graphile.txt" "${gkey}_$p" %.2fx)"
done
bench_summary "hand-off to the successor's start p50, ms, $chain_len chain (vs graphile-worker)" \
    "$(bench_agg "$res.chain.parflow.txt" "${ckey}_p50")" "$(bench_agg "$res.chain.graphile.txt" "${gkey}_p50")" \
    "$(bench_ratio "$res.chain.parflow.txt" "${ckey}_p50" "$res.chain.graphile.txt" "${gkey}_p50" %.2fx)"
if [ "$has_cts" = t ]; then
    echo "  parflow's hand-off as handoff.sh measures it (commit of the completion -> successor's dispatch NOTIFY at the agent):"
    row "    p50 / p99" "$(bench_agg "$res.chain.parflow.txt" hc_p50) / $(bench_agg "$res.chain.parflow.txt" hc_p99)" "" ""
fi
echo "  parflow's calls, ms: p50 / p99 (median over runs)"
row "    parflow_claim in the chain" "$(bench_med "$res.chain.parflow.txt" claim_p50) / $(bench_med "$res.chain.parflow.txt" claim_p99)" "" ""
row "    parflow_complete in the chain" "$(bench_med "$res.chain.parflow.txt" complete_p50) / $(bench_med "$res.chain.parflow.txt" complete_p99)" "" ""
row "    parflow_claim, $jobs jobs, $workers agents" "$(bench_med "$res.$jobs.parflow.txt" claim_p50) / $(bench_med "$res.$jobs.parflow.txt" claim_p99)" "" ""
row "    parflow_complete, $jobs jobs, $workers agents" "$(bench_med "$res.$jobs.parflow.txt" complete_p50) / $(bench_med "$res.$jobs.parflow.txt" complete_p99)" "" ""

# the issue's goal: parflow >= 1.2x the faster peer, at the first size
f="$res.$jobs"
best=""
best_rate=0
for s in gw_default gw_batched pgboss; do
    r=$(bench_med "$f.$s.txt.d" rate)
    if awk -v a="$r" -v b="$best_rate" 'BEGIN { exit !(a > b) }'; then best=$s; best_rate=$r; fi
done
pf_rate=$(bench_med "$f.parflow.txt.d" rate)
echo
awk -v p="$pf_rate" -v b="$best_rate" -v who="$(peer_label "$best")" -v n="$jobs" 'BEGIN {
    r = p / b
    printf "goal (%d jobs, medians): parflow >= 1.2x the faster peer (%s, %.0f jobs/s): parflow %.0f jobs/s = %.2fx: %s\n",
        n, who, b, p, r, (r >= 1.2 ? "met" : "NOT met") }'
for s in gw_default gw_batched pgboss; do
    bench_summary "jobs/s, $jobs no-op, 8 workers (vs $(peer_label "$s"))" "$(bench_agg "$f.parflow.txt.d" rate %.0f)" \
        "$(bench_agg "$f.$s.txt.d" rate %.0f)" "$(bench_ratio "$f.parflow.txt.d" rate "$f.$s.txt.d" rate %.2fx)"
done
for n in "${sizes[@]}"; do
    bench_summary "parflow_start of $n stages vs graphile-worker addJobs() of $n jobs, ms (the call, client-side)" \
        "$(bench_agg "$res.$n.parflow.txt.d" start_call %.0f)" "$(bench_agg "$res.$n.gw_default.txt.d" enqueue %.0f)" \
        "$(bench_ratio "$res.$n.parflow.txt.d" start_call "$res.$n.gw_default.txt.d" enqueue %.2fx)"
done
for s in gw_default pgboss; do
    bench_summary "WAL bytes/job (vs $(peer_label "$s"))" "$(bench_agg "$f.parflow.txt.d" walps %.0f)" \
        "$(bench_agg "$f.$s.txt.d" walps %.0f)" "$(bench_ratio "$f.parflow.txt.d" walps "$f.$s.txt.d" walps %.2fx)"
done
echo "details: test/bench/out/peers.* (one line per run; *.err: the phases' stderr)"

# where parflow's time goes: one more run with pg_stat_statements tracking everything
if [ "${PF_BENCH_PROFILE:-0}" = 1 ]; then
    echo
    if [ "$has_pgss" = t ]; then
        bench_pgss_track all
        qv -c "SELECT pg_stat_statements_reset()" >/dev/null
        run_phase "$phase_timeout" "$res.profile.err" "$client" throughput "bench_peers_tp_$jobs" bench_peers_tp "$workers"
        bench_pgss_track reset
        echo "profile: one more parflow run with pg_stat_statements.track = all (not in the figures above): $(sed 's/ claim_p50.*//' "$phase_out")"
        echo "% = share of the time of the agents' claims and completions and the dispatcher's passes (lock waits included):"
        bench_pgss_top '^SELECT (task, token FROM parflow_claim|parflow_complete|parflow._dispatch)' 16
    else
        echo "(profile skipped: pg_stat_statements is not loaded on this cluster)"
    fi
fi
rm -f "$phase_out"
