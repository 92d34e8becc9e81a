#!/usr/bin/env bash
# test/bench/share.sh -- dispatch throughput when runs share the capacity
# (run by test/bench/run.sh, or alone: make install && bash test/bench/share.sh).
#
# The same total work two ways, interleaved PF_BENCH_SHARE_REPS times
# (default 3): one run of PF_BENCH_SHARE_RUNS x PF_BENCH_SHARE_STAGES
# no-op stages (default 50 x 100 = 5,000), and PF_BENCH_SHARE_RUNS runs of
# PF_BENCH_SHARE_STAGES stages each, started in one transaction, so that
# they are live at once and share parflow.max_parallel_stages (64) under
# fair share (parflow.fair_share, on).  PF_BENCH_SHARE_AGENTS (default 8)
# reference agents (parflow-agent --simulate 0, one task at a time, complete-
# and-claim) serve both.  Time: from the commit of the starts to the last
# run's finished_at, both read on the server.  Goal: the 50 runs take at
# most 1.1x the time of the one run.
set -euo pipefail

# shellcheck source=test/bench/handoff.common.bash
source "$(dirname "${BASH_SOURCE[0]}")/handoff.common.bash"
bench_setup
bench_cancel_live_runs_at_exit bench_share_one bench_share_many

nruns=${PF_BENCH_SHARE_RUNS:-50}
per=${PF_BENCH_SHARE_STAGES:-100}
reps=${PF_BENCH_SHARE_REPS:-3}
nagents=${PF_BENCH_SHARE_AGENTS:-8}
total=$((nruns * per))
kind=bench_share
res="$out_dir/share"
rm -f "$res".*

bench_cap_at_least 64

# wf NAME N: a workflow of N independent stages of agent bench_share
wf() {
    q -q -v n="$2" -v a="$kind" -v w="$1" >/dev/null <<'SQL'
SET client_min_messages = warning;
SELECT parflow_define(:'w', jsonb_build_object('groups', jsonb_build_array(
         jsonb_build_object('name', 'all', 'stages',
           (SELECT jsonb_agg(jsonb_build_object('name', 's' || i, 'agent', :'a', 'estimate', '1 s') ORDER BY i)
              FROM generate_series(1, :n) i)))));
SQL
}
wf bench_share_one "$total"
wf bench_share_many "$per"
q -q -c "ANALYZE parflow.workflow_version, parflow.stage_group, parflow.group_dep, parflow.stage, parflow.stage_dep" >/dev/null

for ((i = 1; i <= nagents; i++)); do
    bench_agent "$res.agents.log" --agent "$kind" --worker "bench-share-$i" --simulate 0 -q
done
sleep 1

# measure FILE WORKFLOW COUNT: start COUNT runs of WORKFLOW in one
# transaction; append "ms=... runs=..." once all have finished.
measure() {
    local file="$1" w="$2" count="$3" t0 ids
    pf_wait_for "SELECT NOT EXISTS (SELECT FROM parflow.task WHERE state IN ('ready', 'dispatched', 'running'))" 60
    # the same starting point for both: earlier rounds' rows vacuumed away
    q -q -c "VACUUM ANALYZE parflow.task, parflow.event, parflow.run, parflow.run_remaining, parflow.run_group" >/dev/null
    ids=$(qv -c "BEGIN" -c "SELECT string_agg(parflow_start('$w', parallel => true)::text, ',') FROM generate_series(1, $count)" \
              -c "COMMIT" | grep -E '^[0-9,]+$')
    t0=$(qv -c "SELECT clock_timestamp()")
    pf_wait_for "SELECT NOT EXISTS (SELECT FROM parflow.run WHERE id IN ($ids) AND state = 'running')" 600 ||
        { echo "runs $w did not finish" >&2; return 1; }
    qv -c "SELECT format('ms=%s runs=%s ok=%s', round(1000 * extract(epoch FROM max(finished_at) - '$t0'::timestamptz)),
                         count(*), count(*) FILTER (WHERE state = 'succeeded'))
             FROM parflow.run WHERE id IN ($ids)" >>"$file"
}

for ((r = 1; r <= reps; r++)); do
    measure "$res.one.txt" bench_share_one 1
    measure "$res.many.txt" bench_share_many "$nruns"
done
bench_agents_stop

awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } printf "%s rate=%.1f\n", $0, '"$total"' / (v["ms"] / 1000) }' \
    "$res.one.txt" >"$res.one.txt.d"
awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } printf "%s rate=%.1f\n", $0, '"$total"' / (v["ms"] / 1000) }' \
    "$res.many.txt" >"$res.many.txt.d"

echo "== sharing the capacity: $total no-op stages as one run, and as $nruns runs of $per started at once (fair share $(qv -c "SHOW parflow.fair_share")), $nagents reference agents; $reps run(s) of each, interleaved (median, min..max)"
bench_describe
echo
row() { printf '  %-40s %-28s %s\n' "$@"; }
row "" "wall ms" "stages/s"
row "one run of $total stages (baseline)" "$(bench_agg "$res.one.txt.d" ms %.0f)" "$(bench_agg "$res.one.txt.d" rate %.0f)"
row "$nruns runs of $per stages" "$(bench_agg "$res.many.txt.d" ms %.0f)" "$(bench_agg "$res.many.txt.d" rate %.0f)"
row "  ratio $nruns runs / one run (goal <= 1.1x)" "$(bench_ratio "$res.many.txt.d" ms "$res.one.txt.d" ms %.2fx)" ""
echo "  runs that succeeded: $(awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "ok") s += kv[2]; if (kv[1] == "runs") n += kv[2] } } END { print s " of " n }' "$res.one.txt" "$res.many.txt")"
bench_summary "time, $nruns runs sharing the cap (vs one run, same stages)" "$(bench_agg "$res.many.txt.d" ms %.0f) ms" \
    "$(bench_agg "$res.one.txt.d" ms %.0f) ms" "$(bench_ratio "$res.many.txt.d" ms "$res.one.txt.d" ms %.2fx)"
