#!/usr/bin/env bash
# test/bench/throughput_batch.sh -- the reference agent's ways of calling the
# server, on no-op stages (run by test/bench/run.sh after peers.sh, whose
# graphile-worker figures of the same run it shows beside its own; or alone:
# cd /work/main && make install && bash test/bench/throughput_batch.sh).
#
# One run of a workflow of PF_BENCH_BATCH_STAGES (default 20000) independent
# no-op stages (one group, one agent kind, estimate 1 s) per configuration,
# served by PF_BENCH_BATCH_AGENTS (default 8) reference agents
# (`parflow-agent --simulate 0`, through mode reference of
# test/bench/handoff_client.c), in this order:
#   separate        --no-complete-and-claim: parflow_claim, then
#                   parflow_complete, one task per call (the agent before 0.4.0)
#   complete+claim  the default: parflow_complete_and_claim completes a task
#                   and claims the next in one call, one transaction
#   cap = agents    complete+claim with the cap at the number of agents: no
#                   dispatched task waits unclaimed, so the completion's
#                   claim takes the task it hands its slot to (no notification)
#   batch 100       --batch 100: parflow_claim(..., max_tasks => 100), the
#                   successes in one parflow_complete_many
#   batch 500       --batch 500 (PF_BENCH_BATCH_SIZES="100 500" sets the sizes)
# parflow.max_parallel_stages bounds the tasks dispatched at once, so that a
# batch can only be as large as the cap leaves: each configuration runs with
# the cap at max(64, agents x batch) (64 as in throughput.sh for one task per
# call), cap = agents at the number of agents (PF_BENCH_BATCH_CAP=N sets one
# cap for all), set with ALTER SYSTEM and put back at exit.  Wall time: from parflow_start to the run's "succeeded"
# notification.  Per stage: WAL bytes (pg_current_wal_insert_lsn before and
# after; everything the server wrote meanwhile) and commits
# (pg_stat_database.xact_commit of database postgres, read once the agents'
# backends have exited), as throughput.sh measures them.
#
# PF_BENCH_BATCH_REPS rounds of all configurations (default 2), interleaved;
# another round is not started when the time spent plus the last round would
# exceed PF_BENCH_BATCH_BUDGET seconds (default 300).  PF_BENCH_ANALYZE as in
# throughput.sh (default 1).  A server without the calls of 0.4.0
# (parflow_complete_and_claim, parflow_complete_many, parflow_claim with
# max_tasks) runs only the first configuration and says so.
#
# The peers: when peers.sh ran earlier in the same `make bench` (its rows are
# in test/bench/out/summary.tsv, which run.sh empties first), its
# graphile-worker figures (10000 jobs, 8 workers, default and batched) are
# printed under the table and compared in the summary rows.
#
# Cluster: the one run.sh exported when PF_BENCH_SHARED=1, else a private one.
# Works in database postgres: workflow bench_tpb, agent kind bench_tpb.
# Summary lines of each run go to test/bench/out/throughput_batch.*.
set -euo pipefail

# shellcheck source=test/bench/handoff.common.bash
source "$(dirname "${BASH_SOURCE[0]}")/handoff.common.bash"
bench_setup
bench_cancel_live_runs_at_exit bench_tpb

stages=${PF_BENCH_BATCH_STAGES:-20000}
nproc=${PF_BENCH_BATCH_AGENTS:-8}
reps=${PF_BENCH_BATCH_REPS:-2}
budget=${PF_BENCH_BATCH_BUDGET:-300}
sizes=${PF_BENCH_BATCH_SIZES:-100 500}
fixed_cap=${PF_BENCH_BATCH_CAP:-}
export PF_BENCH_ANALYZE=${PF_BENCH_ANALYZE:-1}
agent=bench_tpb
agent_bin="$PF_BIN/parflow-agent"
res="$out_dir/throughput_batch"
rm -f "$res".*

if [ ! -x "$agent_bin" ]; then
    echo "== throughput_batch: SKIPPED: $agent_bin is not built (make)"
    exit 0
fi

# the configurations: name, agent flags, batch size
names=(separate cac caca)
declare -A flags=([separate]="--no-complete-and-claim" [cac]="" [caca]="")
declare -A bsize=([separate]=1 [cac]=1 [caca]=1)
declare -A label=([separate]="one task per call, separate claim + complete"
                  [cac]="one task per call, complete-and-claim"
                  [caca]="complete-and-claim, cap = agents")
have_new=$(qv -c "SELECT to_regprocedure('parflow_complete_and_claim(bigint, uuid, jsonb, text, text, interval)') IS NOT NULL
                     AND to_regprocedure('parflow_complete_many(bigint[], uuid[], jsonb[])') IS NOT NULL
                     AND EXISTS (SELECT FROM pg_proc WHERE proname = 'parflow_claim'
                                   AND 'max_tasks' = ANY (proargnames))")
if [ "$have_new" = t ]; then
    for b in $sizes; do
        names+=("b$b")
        flags[b$b]="--batch $b"
        bsize[b$b]=$b
        label[b$b]="--batch $b"
    done
else
    names=(separate)
fi

cap_of() {
    local c=$((nproc * ${bsize[$1]}))
    [ "$c" -lt 64 ] && c=64
    [ "$1" = caca ] && c=$nproc
    echo "${fixed_cap:-$c}"
}
set_cap() {
    if [ "$(qv -c "SHOW parflow.max_parallel_stages")" != "$1" ]; then
        q -q -c "ALTER SYSTEM SET parflow.max_parallel_stages = $1" -c "SELECT pg_reload_conf()" >/dev/null
        pf_wait_for "SELECT current_setting('parflow.max_parallel_stages')::int = $1" 10
        sleep 1     # the dispatcher reloads on its next wake-up
    fi
}
pf_on_exit bench_cap_reset

q -q -v n="$stages" -v a="$agent" >/dev/null <<'SQL'
SET client_min_messages = warning;
SELECT parflow_define('bench_tpb', jsonb_build_object('groups', jsonb_build_array(
         jsonb_build_object('name', 'all', 'stages',
           (SELECT jsonb_agg(jsonb_build_object('name', 's' || i, 'agent', :'a', 'estimate', '1 s') ORDER BY i)
              FROM generate_series(1, :n) i)))));
SQL
if [ "$PF_BENCH_ANALYZE" = 1 ]; then
    q -q -c "ANALYZE parflow.workflow_version, parflow.stage_group, parflow.group_dep, parflow.stage, parflow.stage_dep" >/dev/null
fi

lsn() { qv -c "SELECT pg_current_wal_insert_lsn()"; }
commits() { qv -c "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'"; }
settle() {
    pf_wait_for "SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE application_name LIKE 'pf_bench%'
                                      OR application_name = 'parflow-agent')" 30
    sleep 0.5
}

# measure NAME: one run of configuration NAME; appends its summary line with
# wal=, xacts=, stages=, cap= to $res.NAME.txt
measure() {
    local name="$1" c0 c1 l0 l1 out cap
    cap=$(cap_of "$name")
    set_cap "$cap"
    settle
    # full-page images of a checkpoint falling inside one configuration's
    # run would count as its WAL: start each from a fresh checkpoint
    q -q -c "CHECKPOINT" >/dev/null
    c0=$(commits)
    l0=$(lsn)
    # shellcheck disable=SC2086 # the flags are words
    out=$("$client" reference bench_tpb "$agent" "$nproc" "$agent_bin" ${flags[$name]} 2>>"$res.$name.err")
    l1=$(lsn)
    settle
    c1=$(commits)
    echo "$out wal=$(qv -c "SELECT pg_wal_lsn_diff('$l1', '$l0')::bigint") xacts=$((c1 - c0)) stages=$stages cap=$cap" >>"$res.$name.txt"
}

start=$SECONDS
last=0
ran=0
for ((i = 1; i <= reps; i++)); do
    if [ "$i" -gt 1 ] && [ $((SECONDS - start + last)) -gt "$budget" ]; then
        break
    fi
    t0=$SECONDS
    for n in "${names[@]}"; do measure "$n"; done
    last=$((SECONDS - t0))
    ran=$i
done

for n in "${names[@]}"; do
    awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
           n = v["stages"]
           printf "%s rate=%.1f walps=%.1f cps=%.3f ws=%.2f\n", $0, n / (v["wall"] / 1000), v["wal"] / n, v["xacts"] / n,
               v["wall"] / 1000 }' "$res.$n.txt" >"$res.$n.txt.d"
done

echo "== throughput_batch: $stages independent no-op stages, $nproc reference agents (parflow-agent --simulate 0), per way of calling; $ran round(s), interleaved (median, min..max)"
bench_describe
[ "$ran" -lt "$reps" ] && echo "note: $ran of $reps rounds: another would overrun the ${budget} s budget (PF_BENCH_BATCH_BUDGET, PF_BENCH_BATCH_REPS)"
if [ "$have_new" != t ]; then
    echo "note: this server has no parflow_complete_and_claim / parflow_complete_many / parflow_claim(max_tasks) (parflow before 0.4.0):"
    echo "      only the separate calls are measured"
fi
echo "parflow.max_parallel_stages per configuration: ${fixed_cap:-max(64, $nproc x batch), or $nproc (cap = agents)} (a batch is bounded by the tasks dispatched at once)"
echo
row() { printf '  %-48s %-8s %-22s %-20s %-20s %s\n' "$@"; }
row "" "cap" "stages/s" "wall s" "WAL bytes/stage" "commits/stage"
for n in "${names[@]}"; do
    row "${label[$n]}" "$(cap_of "$n")" "$(bench_agg "$res.$n.txt.d" rate %.0f)" "$(bench_agg "$res.$n.txt.d" ws %.2f)" \
        "$(bench_agg "$res.$n.txt.d" walps %.0f)" "$(bench_agg "$res.$n.txt.d" cps %.3f)"
done
for n in "${names[@]:1}"; do
    row "  ratio ${label[$n]} / separate" "" "$(bench_ratio "$res.$n.txt.d" rate "$res.separate.txt.d" rate %.2fx)" "" \
        "$(bench_ratio "$res.$n.txt.d" walps "$res.separate.txt.d" walps %.2fx)" \
        "$(bench_ratio "$res.$n.txt.d" cps "$res.separate.txt.d" cps %.3fx)"
done

# graphile-worker's figures, when peers.sh ran in this same make bench
peers_ran=0
peer_f() { echo "$out_dir/peers.10000.$1.txt.d"; }
if [ -s "$out_dir/summary.tsv" ] && grep -q 'graphile-worker' "$out_dir/summary.tsv" &&
    [ -s "$(peer_f gw_default)" ] && [ -s "$(peer_f gw_batched)" ]; then
    peers_ran=1
    echo "  graphile-worker, from peers.sh in this run (10000 jobs, 8 workers; its clock starts once the jobs are in):"
    row "    concurrency 8 (defaults)" "" "$(bench_agg "$(peer_f gw_default)" rate %.0f)" "" \
        "$(bench_agg "$(peer_f gw_default)" walps %.0f)" "$(bench_agg "$(peer_f gw_default)" cps %.3f)"
    row "    concurrency 8, batched" "" "$(bench_agg "$(peer_f gw_batched)" rate %.0f)" "" \
        "$(bench_agg "$(peer_f gw_batched)" walps %.0f)" "$(bench_agg "$(peer_f gw_batched)" cps %.3f)"
else
    echo "  (graphile-worker: no figures of peers.sh from this run; make bench runs it before this script)"
fi

# summary rows: medians of the per-run ratios against the separate calls, and
# against graphile-worker (medians over its runs: different runs, same server)
best="${names[${#names[@]}-1]}"
kstages=$(awk -v n="$stages" 'BEGIN { if (n % 1000 == 0) printf "%dk", n / 1000; else print n }')
for n in "${names[@]:1}"; do
    bench_summary "stages/s, ${kstages} no-op, $nproc parflow-agents, ${label[$n]} (vs separate calls)" \
        "$(bench_agg "$res.$n.txt.d" rate %.0f)" "$(bench_agg "$res.separate.txt.d" rate %.0f)" \
        "$(bench_ratio "$res.$n.txt.d" rate "$res.separate.txt.d" rate %.2fx)"
done
for n in "${names[@]:1}"; do
    bench_summary "commits/stage, $nproc parflow-agents, ${label[$n]} (vs separate calls)" \
        "$(bench_agg "$res.$n.txt.d" cps %.3f)" "$(bench_agg "$res.separate.txt.d" cps %.3f)" \
        "$(bench_ratio "$res.$n.txt.d" cps "$res.separate.txt.d" cps %.3fx)"
    bench_summary "WAL bytes/stage, $nproc parflow-agents, ${label[$n]} (vs separate calls)" \
        "$(bench_agg "$res.$n.txt.d" walps %.0f)" "$(bench_agg "$res.separate.txt.d" walps %.0f)" \
        "$(bench_ratio "$res.$n.txt.d" walps "$res.separate.txt.d" walps %.2fx)"
done
if [ "$peers_ran" = 1 ]; then
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
    # graphile-worker's clock starts once its jobs are in, parflow's before
    # parflow_start: rate_e is graphile-worker's counting its addJobs() call
    for pair in "separate gw_default" "cac gw_default" "caca gw_default" "$best gw_batched" \
        "caca gw_default rate_e" "$best gw_batched rate_e"; do
        # shellcheck disable=SC2086 # two words
        set -- $pair
        [ -s "$res.$1.txt.d" ] || continue
        pl=$([ "$2" = gw_default ] && echo "graphile-worker, concurrency 8" || echo "graphile-worker, concurrency 8, batched")
        pr=${3:-rate}
        if [ "$pr" = rate_e ]; then
            bench_summary "stages/s, $nproc parflow-agents, ${label[$1]} (vs $pl, 10k, its clock counting addJobs() as parflow's counts parflow_start)" \
                "$(bench_agg "$res.$1.txt.d" rate %.0f)" "$(bench_agg "$(peer_f "$2")" rate_e %.0f)" \
                "$(ratio "$(bench_med "$res.$1.txt.d" rate)" "$(bench_med "$(peer_f "$2")" rate_e)")"
            continue
        fi
        bench_summary "stages/s, $nproc parflow-agents, ${label[$1]} (vs $pl, 10k)" \
            "$(bench_agg "$res.$1.txt.d" rate %.0f)" "$(bench_agg "$(peer_f "$2")" rate %.0f)" \
            "$(ratio "$(bench_med "$res.$1.txt.d" rate)" "$(bench_med "$(peer_f "$2")" rate)")"
        bench_summary "WAL bytes/stage, $nproc parflow-agents, ${label[$1]} (vs $pl, 10k)" \
            "$(bench_agg "$res.$1.txt.d" walps %.0f)" "$(bench_agg "$(peer_f "$2")" walps %.0f)" \
            "$(ratio "$(bench_med "$res.$1.txt.d" walps)" "$(bench_med "$(peer_f "$2")" walps)")"
    done
fi
echo "details: test/bench/out/throughput_batch.* (one line per run; *.err: the agents' stderr)"
