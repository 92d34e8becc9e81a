#!/usr/bin/env bash
# test/bench/handoff.sh -- the hand-off latency benchmark (run by
# test/bench/run.sh, or alone: cd /work/main && make install && bash test/bench/handoff.sh).
#
# The hand-off: the time from the commit of a stage's completion
# (parflow_complete) to the arrival of its successor's dispatch NOTIFY at a
# listening agent connection.  Since 0.3.0 the completion hands its slot to
# the successor in its own transaction (parflow._handover) and the
# dispatcher, woken as the completion commits, only sends the NOTIFY; before
# it, the dispatcher's pass (parflow._dispatch()) marked the successor
# dispatched.  Measured by test/bench/handoff_client.c (mode chain) over
# 500-stage chains with tiny estimates, each agent connection claiming and
# completing each task as soon as it is notified:
#   relay       500 groups of one stage, the stages alternating between two
#               agent kinds served by two connections: the successor's
#               notification comes to the other, idle, listening connection
#               (as between agents of different kinds, and as in the raw
#               baseline, which is between two connections)
#   groups      the same chain with one kind and one connection: the
#               notification comes to the connection that is still finishing
#               the completion (its backend relays it only once that is done)
#   sequential  one group of 500 stages with "parallel": false, one kind
# Baseline, in the same run and interleaved with the chains: the raw NOTIFY
# round trip between two connections on the same server (mode raw; 500
# notifications).  The baseline of parflow_complete's time: a minimal SKIP
# LOCKED queue whose 500 jobs form a chain, one connection claiming and
# completing each job as its predecessor's completion notifies it (mode
# qchain: the completion marks the job done, makes the next one claimable
# and notifies), against parflow_complete in the one-connection chain
# (groups).  Each of PF_BENCH_HANDOFF_REPS runs (default 5) is raw, relay,
# groups, sequential, qchain, one after the other; a run's figure is a
# percentile over its samples (499 hand-offs), and the table prints the
# median over the runs with min..max, and the per-run ratios hand-off / raw.
#
# Two ways to time it:
#  - commit-anchored (needs track_commit_timestamp = on): from the commit
#    timestamp of the completion's transaction to the arrival (CLOCK_REALTIME
#    in the client, the clock the server stamps commits with), split into
#    completion commit -> commit of the transaction that marked the successor
#    dispatched (0 when the completion handed its slot over) and that commit
#    -> arrival.  The raw baseline is anchored the same way (commit of the
#    NOTIFY).
#  - client-side: from parflow_complete returning to the arrival; a
#    notification that arrived before parflow_complete returned counts as 0
#    ("early").  The raw baseline: from the NOTIFY
#    command returning to the arrival at the other connection.
#
# Planner statistics: with PF_BENCH_ANALYZE=1 (the default) the workflows'
# tables are ANALYZEd after parflow_define (as autovacuum would have done by
# the time a workflow defined once runs), and the client ANALYZEs
# parflow.task, parflow.run and parflow.run_group right after parflow_start,
# before any claim (not inside any sample), so that the run's statements plan
# with its rows counted; PF_BENCH_ANALYZE=0 leaves it to autovacuum.
#
# With pg_stat_statements loaded (a private cluster loads it), a last,
# separate chain runs with pg_stat_statements.track = all and the statements
# that take the time are printed (PF_BENCH_PROFILE=0 skips it).
#
# Cluster: the one run.sh exported when PF_BENCH_SHARED=1 (figures that need
# track_commit_timestamp or pg_stat_statements are skipped if it lacks them),
# else a private one (test/bench/handoff.common.bash).  Works in database
# postgres (the dispatcher's): workflows bench_handoff_relay,
# bench_handoff_groups and bench_handoff_sequential, agent kinds
# bench_handoff and bench_handoff_b.  Per-run summaries and
# samples go to test/bench/out/handoff.*.
set -euo pipefail

# shellcheck source=test/bench/handoff.common.bash
source "$(dirname "${BASH_SOURCE[0]}")/handoff.common.bash"
bench_setup
bench_cancel_live_runs_at_exit bench_handoff_relay bench_handoff_groups bench_handoff_sequential

reps=${PF_BENCH_HANDOFF_REPS:-5}
stages=${PF_BENCH_HANDOFF_STAGES:-500}
export PF_BENCH_ANALYZE=${PF_BENCH_ANALYZE:-1}
agent=bench_handoff
agent_b=bench_handoff_b
res="$out_dir/handoff"
rm -f "$res".*

# the two chains (a new version each time this runs: the runs use the latest)
q -q -v n="$stages" -v a="$agent" -v b="$agent_b" >/dev/null <<'SQL'
SELECT parflow_define('bench_handoff_relay', jsonb_build_object('groups',
         (SELECT jsonb_agg(jsonb_build_object('name', 'g' || i, 'stages', jsonb_build_array(
                     jsonb_build_object('name', 's' || i, 'agent', CASE WHEN i % 2 = 1 THEN :'a' ELSE :'b' END,
                                        'estimate', '1 s'))) ORDER BY i)
            FROM generate_series(1, :n) i)));
SELECT parflow_define('bench_handoff_groups', jsonb_build_object('groups',
         (SELECT jsonb_agg(jsonb_build_object('name', 'g' || i, 'stages', jsonb_build_array(
                     jsonb_build_object('name', 's' || i, 'agent', :'a', 'estimate', '1 s'))) ORDER BY i)
            FROM generate_series(1, :n) i)));
SELECT parflow_define('bench_handoff_sequential', jsonb_build_object('groups', jsonb_build_array(
         jsonb_build_object('name', 'chain', 'parallel', false, 'stages',
           (SELECT jsonb_agg(jsonb_build_object('name', 's' || i, 'agent', :'a', 'estimate', '1 s') ORDER BY i)
              FROM generate_series(1, :n) i)))));
SQL
if [ "$PF_BENCH_ANALYZE" = 1 ]; then
    # as autovacuum would have done by the time a workflow defined once runs
    q -q -c "ANALYZE parflow.workflow_version, parflow.stage_group, parflow.group_dep, parflow.stage, parflow.stage_dep" >/dev/null
fi

# one warm-up of each (not reported)
"$client" raw 100 "$res.warmup_raw.samples" >/dev/null
"$client" chain bench_handoff_relay "$agent,$agent_b" "$res.warmup_chain.samples" >/dev/null

for ((i = 1; i <= reps; i++)); do
    "$client" raw "$stages" "$res.raw.$i.samples" >>"$res.raw.txt"
    "$client" chain bench_handoff_relay "$agent,$agent_b" "$res.relay.$i.samples" >>"$res.relay.txt"
    "$client" chain bench_handoff_groups "$agent" "$res.groups.$i.samples" >>"$res.groups.txt"
    "$client" chain bench_handoff_sequential "$agent" "$res.sequential.$i.samples" >>"$res.sequential.txt"
    "$client" qchain "$stages" "$res.qchain.$i.samples" >>"$res.qchain.txt"
done

echo "== hand-off latency: ${stages}-stage chains; $reps runs (median over runs, min..max), ms"
bench_describe
if [ "$PF_BENCH_ANALYZE" = 1 ]; then
    echo "statistics: the workflow's tables ANALYZEd after parflow_define; parflow.task, run, run_group right after each parflow_start, before the first claim (PF_BENCH_ANALYZE=1)"
else
    echo "statistics: left to autovacuum (PF_BENCH_ANALYZE=0)"
fi
row() { printf '  %-40s %-22s %-22s %-22s %s\n' "$@"; }
dist() {   # FILE KEY: the four columns
    local f="$1" k="$2"
    row "$3" "$(bench_agg "$f" "${k}_p50")" "$(bench_agg "$f" "${k}_p95")" \
        "$(bench_agg "$f" "${k}_p99")" "$(bench_agg "$f" "${k}_max")"
}
ratio() {  # FILE_A KEY_A FILE_B KEY_B LABEL
    row "$5" "$(bench_ratio "$1" "${2}_p50" "$3" "${4}_p50")" "$(bench_ratio "$1" "${2}_p95" "$3" "${4}_p95")" \
        "$(bench_ratio "$1" "${2}_p99" "$3" "${4}_p99")" "$(bench_ratio "$1" "${2}_max" "$3" "${4}_max")"
}
label() {
    case "$1" in
        relay) echo "relay (2 kinds, 2 conns)" ;;
        groups) echo "groups (1 kind, 1 conn)" ;;
        *) echo "$1 (1 kind, 1 conn)" ;;
    esac
}
early_pct() {
    awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "early") e += kv[2]; if (kv[1] == "handoffs") h += kv[2] } }
         END { if (h) printf "%.0f%%", 100 * e / h }' "$1"
}

echo
if [ "$has_cts" = t ]; then
    echo "commit of parflow_complete -> successor's dispatch NOTIFY at the agent (commit-anchored):"
    row "" p50 p95 p99 max
    dist "$res.raw.txt" rawc "raw NOTIFY, commit -> arrival (baseline)"
    for shape in relay groups sequential; do
        dist "$res.$shape.txt" hc "$(label "$shape"): hand-off"
        ratio "$res.$shape.txt" hc "$res.raw.txt" rawc "  ratio hand-off / raw"
        dist "$res.$shape.txt" pass "  commit -> commit marking it dispatched"
        dist "$res.$shape.txt" deliv "  that commit -> arrival"
    done
    echo
else
    echo "(commit-anchored figures skipped: track_commit_timestamp is off on this cluster)"
fi
echo "client-side: command return -> arrival (a notification received during parflow_complete counts 0):"
row "" p50 p95 p99 max
dist "$res.raw.txt" raw "raw NOTIFY, return -> arrival (baseline)"
for shape in relay groups sequential; do
    dist "$res.$shape.txt" handoff "$(label "$shape"): hand-off ($(early_pct "$res.$shape.txt") early)"
    ratio "$res.$shape.txt" handoff "$res.raw.txt" raw "  ratio hand-off / raw"
done
echo
echo "the agent's calls in the chain (client-side, ms):"
row "" p50 p95 p99 max
for shape in relay groups sequential; do
    dist "$res.$shape.txt" claim "$(label "$shape"): parflow_claim"
    dist "$res.$shape.txt" complete "$(label "$shape"): parflow_complete"
    row "$(label "$shape"): wall per stage" \
        "$(awk -v n="$stages" '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "wall") print "wall=" kv[2] / n } }' \
           "$res.$shape.txt" | bench_agg /dev/stdin wall)"
done
dist "$res.qchain.txt" qclaim "SKIP LOCKED queue chain: claim (baseline)"
dist "$res.qchain.txt" qcomplete "SKIP LOCKED queue chain: complete (baseline)"
ratio "$res.groups.txt" complete "$res.qchain.txt" qcomplete "  ratio parflow_complete (groups) / queue's"

# the goals of the issue: on the relay (the successor's agent listening on
# its own connection, as the raw floor is measured), and the one-connection
# chain next to it
echo
key=handoff; base=raw
if [ "$has_cts" = t ]; then key=hc; base=rawc; fi
for shape in relay groups; do
    bench_summary "hand-off p50, ms (vs raw NOTIFY), $(label "$shape")" "$(bench_agg "$res.$shape.txt" "${key}_p50")" \
        "$(bench_agg "$res.raw.txt" "${base}_p50")" "$(bench_ratio "$res.$shape.txt" "${key}_p50" "$res.raw.txt" "${base}_p50")"
    bench_summary "hand-off p99, ms (vs raw NOTIFY), $(label "$shape")" "$(bench_agg "$res.$shape.txt" "${key}_p99")" \
        "$(bench_agg "$res.raw.txt" "${base}_p99")" "$(bench_ratio "$res.$shape.txt" "${key}_p99" "$res.raw.txt" "${base}_p99")"
done
bench_summary "parflow_complete p50 in a chain, ms (vs a minimal SKIP LOCKED queue's complete), groups (1 kind, 1 conn)" \
    "$(bench_agg "$res.groups.txt" complete_p50)" "$(bench_agg "$res.qchain.txt" qcomplete_p50)" \
    "$(bench_ratio "$res.groups.txt" complete_p50 "$res.qchain.txt" qcomplete_p50)"
for shape in relay groups; do
    p50=$(bench_med "$res.$shape.txt" "${key}_p50")
    p99=$(bench_med "$res.$shape.txt" "${key}_p99")
    r50=$(bench_ratio "$res.$shape.txt" "${key}_p50" "$res.raw.txt" "${base}_p50" "%.2f" | cut -d' ' -f1)
    awk -v p50="$p50" -v p99="$p99" -v r="$r50" -v what="$(label "$shape")" \
        -v how="$([ "$has_cts" = t ] && echo commit-anchored || echo client-side)" 'BEGIN {
        printf "goals, %s (%s, medians over runs): p50 %.3f ms <= 2 ms: %s; p99 %.3f ms <= 10 ms: %s; p50 within 3x raw: %.1fx: %s\n",
            what, how, p50, (p50 <= 2 ? "met" : "NOT met"), p99, (p99 <= 10 ? "met" : "NOT met"), r, (r <= 3 ? "met" : "NOT met") }'
done

# where the time goes: one more chain with pg_stat_statements tracking everything
if [ "${PF_BENCH_PROFILE:-1}" = 1 ]; then
    echo
    if [ "$has_pgss" = t ]; then
        bench_pgss_track all
        qv -c "SELECT pg_stat_statements_reset()" >/dev/null
        "$client" chain bench_handoff_relay "$agent,$agent_b" "$res.profile.samples" >"$res.profile.txt"
        bench_pgss_track reset
        echo "profile: one more chain 'relay' with pg_stat_statements.track = all (not in the figures above);"
        echo "% = share of the time of the agent's claims and completions and the dispatcher's passes:"
        bench_pgss_top '^SELECT (task, token FROM parflow_claim|parflow_complete|parflow._dispatch)' 16
    else
        echo "(profile skipped: pg_stat_statements is not loaded on this cluster)"
    fi
fi
