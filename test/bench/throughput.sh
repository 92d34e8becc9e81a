#!/usr/bin/env bash
# test/bench/throughput.sh -- the claim+complete throughput benchmark (run by
# test/bench/run.sh, or alone: cd /work/main && make install && bash test/bench/throughput.sh).
#
# One run of a workflow of PF_BENCH_TP_STAGES (default 10000) independent
# no-op stages (one group, one agent kind, estimate 1 s), served by
# PF_BENCH_TP_AGENTS (default 8) agent processes of test/bench/handoff_client.c
# (mode throughput: each claims until parflow_claim returns nothing,
# completing every task at once, then waits for a dispatch notification),
# with parflow.max_parallel_stages >= 64 (raised with ALTER SYSTEM if lower,
# and put back at exit).  Wall time: from parflow_start to the run's
# "succeeded" notification.  Per stage: WAL bytes (pg_current_wal_insert_lsn
# before and after; everything the server wrote meanwhile, autovacuum
# included) and commits (pg_stat_database.xact_commit of database postgres,
# read once the agents' backends have exited and flushed their counts).
#
# Baseline, interleaved with the parflow runs: a minimal SKIP LOCKED job queue
# in plain SQL on the same server (mode queue): table bench_tp.jobs(id primary
# key, state) with a partial index on id WHERE state = 'new', the same number
# of rows and processes, two transactions per job (claim: UPDATE ... SET
# state = 'running' WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING
# id; complete: UPDATE ... SET state = 'done'), from the go to the last
# process finishing.  The table is refilled and VACUUM ANALYZEd before each
# run (not timed).
#
# PF_BENCH_TP_REPS runs of each (default 3), but another parflow run is not
# started when the time spent plus 1.5 times the last parflow run would exceed
# PF_BENCH_TP_BUDGET seconds (default 90): the output says how many ran.  Then
# one run with PF_BENCH_TP_AGENTS reference agents (parflow-agent --simulate
# 0, mode reference of the client) if the budget allows (PF_BENCH_TP_REFERENCE=1
# forces it, 0 skips it).  PF_BENCH_ANALYZE=1 (default): the workflow's tables
# are ANALYZEd after parflow_define (as autovacuum would have done by the time
# a workflow defined once runs), and parflow.task, run and run_group right
# after parflow_start, before the agents start claiming (inside the wall
# time), so that the run's statements plan with its rows counted; 0 leaves
# statistics to autovacuum (the plans then vary from run to run; see the
# findings reported with this benchmark).  PF_BENCH_PROFILE=1 adds a
# last parflow run with pg_stat_statements.track = all and prints where the
# time goes (needs pg_stat_statements loaded; a private cluster loads it).
#
# Cluster: the one run.sh exported when PF_BENCH_SHARED=1, else a private one
# (test/bench/handoff.common.bash).  Works in database postgres (the
# dispatcher's): workflow bench_tp, agent kind bench_tp, schema bench_tp
# (dropped at exit).  Summary lines of each run go to test/bench/out/throughput.*.
set -euo pipefail

# shellcheck source=test/bench/handoff.common.bash
source "$(dirname "${BASH_SOURCE[0]}")/handoff.common.bash"
bench_setup
bench_cancel_live_runs_at_exit bench_tp

stages=${PF_BENCH_TP_STAGES:-10000}
nproc=${PF_BENCH_TP_AGENTS:-8}
reps=${PF_BENCH_TP_REPS:-3}
budget=${PF_BENCH_TP_BUDGET:-90}
export PF_BENCH_ANALYZE=${PF_BENCH_ANALYZE:-1}
agent=bench_tp
agent_bin="$PF_BIN/parflow-agent"
res="$out_dir/throughput"
rm -f "$res".*

bench_cap_at_least 64

q -q -v n="$stages" -v a="$agent" >/dev/null <<'SQL'
SET client_min_messages = warning;
SELECT parflow_define('bench_tp', jsonb_build_object('groups', jsonb_build_array(
         jsonb_build_object('name', 'all', 'stages',
           (SELECT jsonb_agg(jsonb_build_object('name', 's' || i, 'agent', :'a', 'estimate', '1 s') ORDER BY i)
              FROM generate_series(1, :n) i)))));
DROP SCHEMA IF EXISTS bench_tp CASCADE;
CREATE SCHEMA bench_tp;
CREATE TABLE bench_tp.jobs (id bigint PRIMARY KEY, state text NOT NULL);
CREATE INDEX jobs_new_idx ON bench_tp.jobs (id) WHERE state = 'new';
SQL
if [ "$PF_BENCH_ANALYZE" = 1 ]; then
    # as autovacuum would have done by the time a workflow defined once runs
    q -q -c "ANALYZE parflow.workflow_version, parflow.stage_group, parflow.group_dep, parflow.stage, parflow.stage_dep" >/dev/null
fi
drop_schema() { q -q -c "DROP SCHEMA IF EXISTS bench_tp CASCADE" >/dev/null 2>&1 || true; }
pf_on_exit drop_schema

lsn() { qv -c "SELECT pg_current_wal_insert_lsn()"; }
commits() { qv -c "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'"; }
# the benchmark's backends are gone (their counts flushed at exit)
settle() {
    pf_wait_for "SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE application_name LIKE 'pf_bench%')" 30
    sleep 0.5
}

# measure FILE CMD...: run CMD (a client mode printing one summary line) and
# append that line with wal=BYTES xacts=N (and for parflow runs passes=N, the
# dispatcher passes that dispatched some of the run's tasks).
measure() {
    local file="$1" c0 c1 out runid passes=""
    shift
    settle
    c0=$(commits)
    l0=$(lsn)
    out=$("$@")
    l1=$(lsn)
    settle
    c1=$(commits)
    runid=$(sed -n 's/^run=\([0-9]*\) .*/\1/p' <<<"$out")
    if [ -n "$runid" ]; then
        passes=" passes=$(qv -c "SELECT count(DISTINCT xmin::text) FROM parflow.event
                                   WHERE run_id = $runid AND kind = 'dispatched'")"
    fi
    echo "$out wal=$(qv -c "SELECT pg_wal_lsn_diff('$l1', '$l0')::bigint") xacts=$((c1 - c0))$passes stages=$stages" >>"$file"
}

# waldump FILE: WAL record statistics of the last measured range (kept in
# $l0..$l1 by measure), while the segments are still there.
waldump() {
    if [ -n "${PF_DATA:-}" ] && [ -d "$PF_DATA/pg_wal" ]; then
        pf_as_server "$PG_BIN/pg_waldump" --stats=record -p "$PF_DATA/pg_wal" -s "$l0" -e "$l1" \
            >"$1" 2>&1 || true
    fi
}

fill_queue() {
    q -q -c "TRUNCATE bench_tp.jobs" \
        -c "INSERT INTO bench_tp.jobs SELECT i, 'new' FROM generate_series(1, $stages) i" \
        -c "VACUUM ANALYZE bench_tp.jobs" >/dev/null
}

start=$SECONDS
last=0
ran=0
for ((i = 1; i <= reps; i++)); do
    if [ "$i" -gt 1 ] && [ $((SECONDS - start + last * 3 / 2)) -gt "$budget" ]; then
        break
    fi
    fill_queue
    measure "$res.queue.txt" "$client" queue "$nproc"
    t0=$SECONDS
    measure "$res.parflow.txt" "$client" throughput bench_tp "$agent" "$nproc"
    last=$((SECONDS - t0))
    waldump "$res.waldump.txt"
    ran=$i
done

ref_ran=0
if [ "${PF_BENCH_TP_REFERENCE:-}" = 1 ] ||
    { [ "${PF_BENCH_TP_REFERENCE:-}" != 0 ] && [ $((SECONDS - start + last * 3 / 2)) -le "$budget" ]; }; then
    if [ -x "$agent_bin" ]; then
        measure "$res.reference.txt" "$client" reference bench_tp "$agent" "$nproc" "$agent_bin"
        ref_ran=1
    fi
fi

# per-stage and rate figures from the summary lines
derive() {  # FILE: adds rate=, walps=, cps= to each line
    awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
           n = v["stages"]
           printf "%s rate=%.1f walps=%.1f cps=%.3f xps=%.3f pps=%.4f tpp=%.2f nps=%.2f eps=%.3f\n", $0,
               n / (v["wall"] / 1000), v["wal"] / n, v["xacts"] / n,
               (v["client_xacts"] != "" ? v["client_xacts"] / n : 0),
               (v["passes"] != "" ? v["passes"] / n : 0),
               (v["passes"] > 0 ? n / v["passes"] : 0),
               (v["notifications"] != "" ? v["notifications"] / n : 0),
               (v["empty_claims"] != "" ? v["empty_claims"] / n : 0) }' "$1" >"$1.d"
}
derive "$res.queue.txt"
derive "$res.parflow.txt"
[ "$ref_ran" = 1 ] && derive "$res.reference.txt"

echo "== throughput: $stages independent no-op stages (one group, one agent kind), $nproc agent processes; $ran run(s) of parflow and of the baseline, interleaved (median, min..max)"
bench_describe
if [ "$PF_BENCH_ANALYZE" = 1 ]; then
    echo "statistics: the workflow's tables ANALYZEd after parflow_define; parflow.task, run, run_group right after parflow_start, before the agents claim (inside the wall time; PF_BENCH_ANALYZE=1)"
else
    echo "statistics: left to autovacuum (PF_BENCH_ANALYZE=0)"
fi
if [ "$ran" -lt "$reps" ]; then
    echo "note: $ran of $reps runs: the last parflow run took ${last} s, another would overrun the ${budget} s budget (PF_BENCH_TP_BUDGET, PF_BENCH_TP_REPS)"
fi
echo
row() { printf '  %-36s %-26s %-26s %-24s %s\n' "$@"; }
row "" "stages/s" "wall s" "WAL bytes/stage" "commits/stage"
line() {  # FILE LABEL
    row "$2" "$(bench_agg "$1.d" rate %.0f)" \
        "$(awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "wall") print "w=" kv[2] / 1000 } }' "$1.d" | bench_agg /dev/stdin w %.2f)" \
        "$(bench_agg "$1.d" walps %.0f)" "$(bench_agg "$1.d" cps %.2f)"
}
line "$res.queue.txt" "SKIP LOCKED queue (baseline)"
line "$res.parflow.txt" "parflow, C client agents"
row "  ratio parflow / baseline" "$(bench_ratio "$res.parflow.txt.d" rate "$res.queue.txt.d" rate %.3fx)" \
    "" "$(bench_ratio "$res.parflow.txt.d" walps "$res.queue.txt.d" walps %.1fx)" \
    "$(bench_ratio "$res.parflow.txt.d" cps "$res.queue.txt.d" cps %.2fx)"
bench_summary "stages/s, 10k no-op, 8 agents (vs SKIP LOCKED queue)" "$(bench_agg "$res.parflow.txt.d" rate %.0f)" \
    "$(bench_agg "$res.queue.txt.d" rate %.0f)" "$(bench_ratio "$res.parflow.txt.d" rate "$res.queue.txt.d" rate %.3fx)"
if [ "$ref_ran" = 1 ]; then
    line "$res.reference.txt" "parflow, reference parflow-agent (1 run)"
elif [ -x "$agent_bin" ]; then
    echo "  (reference parflow-agent run skipped: over the budget; PF_BENCH_TP_REFERENCE=1 forces it)"
else
    echo "  (reference parflow-agent run skipped: $agent_bin not built)"
fi
echo
echo "parflow run details (median, min..max; commits/stage above counts every commit in the database: the agents' calls,"
echo "the dispatcher's passes, and the transactions in which listening backends read the notification queue):"
printf '  %-44s %s\n' "agent transactions per stage" "$(bench_agg "$res.parflow.txt.d" xps %.3f) (claims that found nothing per stage: $(bench_agg "$res.parflow.txt.d" eps %.3f))"
printf '  %-44s %s\n' "dispatcher passes that dispatched, per stage" "$(bench_agg "$res.parflow.txt.d" pps %.4f) (tasks per pass: $(bench_agg "$res.parflow.txt.d" tpp %.1f))"
printf '  %-44s %s\n' "notifications received per stage (all agents)" "$(bench_agg "$res.parflow.txt.d" nps %.2f)"
printf '  %-44s %s\n' "parflow_start call, ms" "$(bench_agg "$res.parflow.txt.d" start_call %.1f)"
printf '  %-44s %s\n' "ANALYZE after the start, ms" "$(bench_agg "$res.parflow.txt.d" analyze %.1f)"
for k in claim complete; do
    printf '  %-44s p50 %s  p99 %s  max %s\n' "parflow_$k call, ms" "$(bench_agg "$res.parflow.txt.d" "${k}_p50" %.2f)" \
        "$(bench_agg "$res.parflow.txt.d" "${k}_p99" %.2f)" "$(bench_agg "$res.parflow.txt.d" "${k}_max" %.1f)"
done
for k in claim complete; do
    printf '  %-44s p50 %s  p99 %s\n' "baseline $k call, ms" "$(bench_agg "$res.queue.txt.d" "${k}_p50" %.2f)" \
        "$(bench_agg "$res.queue.txt.d" "${k}_p99" %.2f)"
done

# where the WAL goes (the last parflow run): record types by bytes
if [ -s "$res.waldump.txt" ] && grep -q '^Total' "$res.waldump.txt"; then
    echo
    echo "WAL of the last parflow run by record type (pg_waldump --stats=record), per stage:"
    awk -v n="$stages" '
        { gsub(/\([^)]*\)/, ""); gsub(/\[[^]]*\]/, "") }
        $1 ~ /\// && $5 + 0 > 0 { printf "%s %.2f %.0f %.0f %.0f\n", $1, $2 / n, $3 / n, $4 / n, $5 / n }
        $1 == "Total" { printf "TOTAL %.2f %.0f %.0f %.0f\n", $2 / n, $3 / n, $4 / n, $5 / n }' "$res.waldump.txt" |
        sort -k5,5nr | head -11 |
        awk 'BEGIN { printf "    %-28s %10s %14s %12s %14s\n", "record type", "records", "record bytes", "FPI bytes", "total bytes" }
             { printf "    %-28s %10s %14s %12s %14s\n", $1 == "TOTAL" ? "(all)" : $1, $2, $3, $4, $5 }'
fi

if [ "${PF_BENCH_PROFILE:-0}" = 1 ]; then
    echo
    if [ "$has_pgss" = t ]; then
        bench_pgss_track all
        qv -c "SELECT pg_stat_statements_reset()" >/dev/null
        "$client" throughput bench_tp "$agent" "$nproc" >"$res.profile.txt"
        bench_pgss_track reset
        echo "profile: one more parflow run with pg_stat_statements.track = all (not in the figures above): $(sed 's/ claim_p50.*//' "$res.profile.txt")"
        echo "% = share of the time of the agents' claims and completions and the dispatcher's passes (lock waits included):"
        bench_pgss_top '^SELECT (task, token FROM parflow_claim|parflow_complete|parflow._dispatch)' 16
    else
        echo "(profile skipped: pg_stat_statements is not loaded on this cluster)"
    fi
fi
