#!/usr/bin/env bash
# test/bench/shapes.sh -- DAG shapes (run by test/bench/run.sh, or alone:
# cd /work/main && make install && bash test/bench/shapes.sh).
#
# 1. Diamond 1 -> 5,000 -> 1 (groups root, mid, sink; the cap raised to 6000
#    for it): fan-out, from the commit of the root's completion to the commit
#    of the pass that dispatched the last of the 5,000 (commit timestamps,
#    track_commit_timestamp); fan-in, from the commit of the last leaf's
#    completion to the commit of the pass that dispatched the sink.  The
#    leaves are claimed and completed by 4 reference agents (--simulate 0,
#    --concurrency 8).  Baseline, same run: one transaction that updates 5,000
#    rows of a plain table one by one and sends 5,000 NOTIFYs (the least a
#    fan-out of 5,000 notified dispatches costs), timed the same way.
# 2. A 200-stage random DAG (fixed seed; 8 groups, random explicit
#    dependencies, 3 agent kinds) with max_parallel 4, run by simulated
#    reference agents at 1 estimated minute = PF_BENCH_SHAPES_MS_PER_MIN ms
#    (default 10): realised makespan against the plan and the lower bound
#    max(critical path, work / 4).
# 3. A plan that holds a stage (the 7-stage workflow of sql/hold.sql, cap 3:
#    6 estimated minutes with d held until a is done, 7 as the best list
#    schedule), run by simulated reference agents at 1 estimated minute =
#    PF_BENCH_SHAPES_HOLD_MS_PER_MIN ms (default 100): realised makespan
#    with the hold, against runs started with parflow.plan_holds = off (the
#    list plan), interleaved.
# PF_BENCH_SHAPES_REPS repetitions of each (default 3): median (min..max).
set -euo pipefail

# shellcheck source=test/bench/handoff.common.bash
source "$(dirname "${BASH_SOURCE[0]}")/handoff.common.bash"
bench_setup
bench_cancel_live_runs_at_exit bench_diamond bench_dag200 bench_hold

reps=${PF_BENCH_SHAPES_REPS:-3}
ms_per_min=${PF_BENCH_SHAPES_MS_PER_MIN:-10}
n_mid=5000
res="$out_dir/shapes"
rm -f "$res".*
if [ "$has_cts" != t ]; then
    echo "shapes: track_commit_timestamp is off on this cluster: the diamond figures are skipped"
fi

echo "== DAG shapes"
bench_describe

# --- 1. diamond ---------------------------------------------------------------
if [ "$has_cts" = t ]; then
    bench_cap_at_least $((n_mid + 1000))
    q -q -v n="$n_mid" >/dev/null <<'SQL'
SELECT parflow_define('bench_diamond', jsonb_build_object('groups', jsonb_build_array(
    jsonb_build_object('name', 'root', 'stages', jsonb_build_array(
        jsonb_build_object('name', 'root', 'agent', 'bench_droot', 'estimate', '1 min'))),
    jsonb_build_object('name', 'mid', 'stages',
        (SELECT jsonb_agg(jsonb_build_object('name', 'm' || i, 'agent', 'bench_dmid', 'estimate', '1 min') ORDER BY i)
           FROM generate_series(1, :n) i)),
    jsonb_build_object('name', 'sink', 'stages', jsonb_build_array(
        jsonb_build_object('name', 'sink', 'agent', 'bench_dsink', 'estimate', '1 min'))))));
ANALYZE parflow.stage, parflow.stage_group, parflow.group_dep, parflow.stage_dep;
CREATE UNLOGGED TABLE IF NOT EXISTS bench_shapes_jobs (id int PRIMARY KEY, state text);
SQL
    for ((i = 1; i <= reps; i++)); do
        # baseline: 5,000 single-row updates and NOTIFYs in one transaction
        q -q -v n="$n_mid" >/dev/null <<'SQL'
TRUNCATE bench_shapes_jobs;
INSERT INTO bench_shapes_jobs SELECT i, 'ready' FROM generate_series(1, :n) i;
VACUUM ANALYZE bench_shapes_jobs;
SQL
        base=$(qv -v n="$n_mid" <<'SQL'
CREATE TEMP TABLE t0 AS SELECT clock_timestamp() AS t0;
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT id FROM bench_shapes_jobs WHERE state = 'ready' ORDER BY id FOR UPDATE LOOP
        UPDATE bench_shapes_jobs SET state = 'dispatched' WHERE id = r.id;
        PERFORM pg_notify('bench_shapes', json_build_object('kind', 'dispatch', 'task', r.id)::text);
    END LOOP;
END $$;
SELECT round(1000 * extract(epoch FROM pg_xact_commit_timestamp(xmin) - (SELECT t0 FROM t0)), 3)
  FROM bench_shapes_jobs LIMIT 1;
SQL
)
        run=$(qv -c "SELECT parflow_start('bench_diamond', parallel => true)")
        pf_wait_for "SELECT state = 'dispatched' FROM parflow.task WHERE run_id = $run AND agent = 'bench_droot'" 30
        qv -c "SELECT parflow_complete(c.task, c.token) FROM parflow_claim('bench_droot', 'w') c" >/dev/null
        pf_wait_for "SELECT count(*) = $n_mid FROM parflow.task WHERE run_id = $run AND agent = 'bench_dmid' AND state = 'dispatched'" 60
        for ((k = 1; k <= 4; k++)); do
            bench_agent "$out_dir/shapes.agent.dmid.log" --agent bench_dmid --simulate 0 --concurrency 8 -q
        done
        pf_wait_for "SELECT state = 'dispatched' FROM parflow.task WHERE run_id = $run AND agent = 'bench_dsink'" 120
        bench_agents_stop
        line=$(qv -c "
            WITH e AS (SELECT e.kind, t.agent, pg_xact_commit_timestamp(e.xmin) AS c
                         FROM parflow.event e JOIN parflow.task t ON t.id = e.task_id WHERE e.run_id = $run),
            m AS (SELECT (SELECT max(c) FROM e WHERE kind = 'succeeded' AND agent = 'bench_droot') AS root_done,
                         (SELECT max(c) FROM e WHERE kind = 'dispatched' AND agent = 'bench_dmid') AS mid_out,
                         (SELECT max(c) FROM e WHERE kind = 'succeeded' AND agent = 'bench_dmid') AS mid_done,
                         (SELECT max(c) FROM e WHERE kind = 'dispatched' AND agent = 'bench_dsink') AS sink_out)
            SELECT format('fanout=%s fanin=%s base=$base',
                          round(1000 * extract(epoch FROM mid_out - root_done), 1),
                          round(1000 * extract(epoch FROM sink_out - mid_done), 1)) FROM m")
        echo "$line" >>"$res.diamond"
        qv -c "SELECT parflow_cancel($run)" >/dev/null
    done
    bench_cap_reset
    pf_wait_for "SELECT current_setting('parflow.max_parallel_stages')::int < $((n_mid + 1000))" 10 || true
fi

# --- 2. a 200-stage random DAG under a cap of 4 -------------------------------
q -q >/dev/null <<'SQL'
DO $gen$
DECLARE
    kinds text[] := ARRAY['bench_ka', 'bench_ka', 'bench_kb', 'bench_kc'];
    groups jsonb := '[]';
    stages jsonb;
    names text[] := '{}';
    st jsonb;
BEGIN
    PERFORM setseed(0.42);
    FOR gi IN 0..7 LOOP
        stages := '[]';
        FOR si IN 0..24 LOOP
            st := jsonb_build_object('name', format('s%s_%s', gi, si),
                                     'agent', kinds[1 + floor(random() * 4)::int],
                                     'estimate', (1 + floor(random() * 10)::int) || ' min');
            IF cardinality(names) > 0 AND random() < 0.35 THEN
                st := st || jsonb_build_object('depends_on', jsonb_build_array(names[1 + floor(random() * cardinality(names))::int]));
            END IF;
            stages := stages || jsonb_build_array(st);
            names := names || (st->>'name');
        END LOOP;
        groups := groups || jsonb_build_array(jsonb_build_object('name', format('g%s', gi), 'stages', stages)
                   || CASE WHEN gi > 0 AND random() < 0.5 THEN jsonb_build_object('depends_on', '[]'::jsonb) ELSE '{}' END);
    END LOOP;
    PERFORM parflow_define('bench_dag200', jsonb_build_object('max_parallel', 4, 'groups', groups));
END
$gen$;
SQL
scale=$(awk -v m="$ms_per_min" 'BEGIN { printf "%.8f", m / 60000 }')
for k in bench_ka bench_kb bench_kc; do
    bench_agent "$out_dir/shapes.agent.$k.log" --agent "$k" --simulate "$scale" --concurrency 4 -q
done
sleep 0.5
read -r plan_min lb_min < <(qv -F ' ' -c "SELECT round((extract(epoch FROM parallel) / 60)::numeric, 1), round((extract(epoch FROM lower_bound) / 60)::numeric, 1)
                                          FROM parflow_estimate('bench_dag200')")
# Wait (up to 60 s) for run $1 to end; print its makespan in estimated
# minutes of $2 ms each, or nothing when it did not succeed.
realised_min() {
    local st w
    for ((w = 0; w < 600; w++)); do
        st=$(qv -c "SELECT state FROM parflow.runs WHERE run = $1")
        [ "$st" = running ] || break
        sleep 0.1
    done
    qv -c "SELECT round((extract(epoch FROM finished_at - started_at) * 60000 / $2 / 60)::numeric, 4)
             FROM parflow.run WHERE id = $1 AND state = 'succeeded'"
}
for ((i = 1; i <= reps; i++)); do
    run=$(qv -c "SELECT parflow_start('bench_dag200', parallel => true)")
    m=$(realised_min "$run" "$ms_per_min")
    [ -n "$m" ] && awk -v m="$m" -v p="$plan_min" -v l="$lb_min" \
        'BEGIN { printf "realised=%.2f plan=%s lb=%s rp=%.4f rl=%.4f\n", m, p, l, m / p, m / l }' >>"$res.dag200"
done
bench_agents_stop

# --- 3. a plan that holds a stage ---------------------------------------------
hold_ms_per_min=${PF_BENCH_SHAPES_HOLD_MS_PER_MIN:-100}
q -q >/dev/null <<'SQL'
SELECT parflow_define('bench_hold', '{"max_parallel": 3, "groups": [{"name": "g", "stages": [
  {"name": "a", "agent": "bench_kh", "estimate": "2 min"},
  {"name": "b", "agent": "bench_kh", "estimate": "1 min"},
  {"name": "c", "agent": "bench_kh", "estimate": "4 min", "depends_on": ["b"]},
  {"name": "d", "agent": "bench_kh", "estimate": "3 min"},
  {"name": "e", "agent": "bench_kh", "estimate": "4 min", "depends_on": ["b"]},
  {"name": "f", "agent": "bench_kh", "estimate": "1 min", "depends_on": ["a", "b", "e"]},
  {"name": "g", "agent": "bench_kh", "estimate": "1 min", "depends_on": ["c", "e"]}]}]}');
SQL
hscale=$(awk -v m="$hold_ms_per_min" 'BEGIN { printf "%.8f", m / 60000 }')
bench_agent "$out_dir/shapes.agent.bench_kh.log" --agent bench_kh --simulate "$hscale" --concurrency 3 -q
sleep 0.5
hold_plan=$(qv -c "SELECT round((extract(epoch FROM parallel) / 60)::numeric, 1) FROM parflow_estimate('bench_hold')")
list_plan=$(qv -c "SET parflow.plan_holds = off" -c "SELECT round((extract(epoch FROM parallel) / 60)::numeric, 1) FROM parflow_estimate('bench_hold')")
hold_run() {    # $1: on or off; prints the realised makespan in estimated minutes
    realised_min "$(qv -c "SET parflow.plan_holds = $1" -c "SELECT parflow_start('bench_hold', parallel => true)")" \
        "$hold_ms_per_min"
}
for ((i = 1; i <= reps; i++)); do
    h=$(hold_run on)
    l=$(hold_run off)
    echo "held=$h list=$l" >>"$res.hold"
done
bench_agents_stop

echo
echo "diamond 1 -> $n_mid -> 1, commit to commit, ms ($reps runs: median (min..max)):"
printf '  %-52s %-26s %-26s %s\n' metric parflow baseline ratio
if [ -s "$res.diamond" ]; then
    printf '  %-52s %-26s %-26s %s\n' "fan-out: root done -> all $n_mid dispatched" \
        "$(bench_agg "$res.diamond" fanout %.1f)" "$(bench_agg "$res.diamond" base %.1f)" \
        "$(bench_ratio "$res.diamond" fanout "$res.diamond" base)"
    printf '  %-52s %-26s %-26s %s\n' "fan-in: last leaf done -> sink dispatched" \
        "$(bench_agg "$res.diamond" fanin %.1f)" "-" "-"
    echo "  (baseline: $n_mid single-row UPDATEs + NOTIFYs of a plain table in one transaction)"
    bench_summary "diamond: root done -> all $n_mid dispatched, ms (vs plain UPDATE+NOTIFY)" \
        "$(bench_agg "$res.diamond" fanout %.1f)" "$(bench_agg "$res.diamond" base %.1f)" \
        "$(bench_ratio "$res.diamond" fanout "$res.diamond" base)"
fi
echo
echo "200-stage random DAG, max_parallel 4, 1 estimated minute = $ms_per_min ms, makespans in estimated minutes ($reps runs):"
printf '  %-52s %s\n' "planned makespan (parflow_estimate)" "$plan_min"
printf '  %-52s %s\n' "lower bound max(critical path, work / 4)" "$lb_min"
printf '  %-52s %s\n' "realised makespan" "$(bench_agg "$res.dag200" realised %.1f)"
printf '  %-52s %s\n' "realised / plan" "$(bench_agg "$res.dag200" rp %.3f)"
printf '  %-52s %s\n' "realised / lower bound" "$(bench_agg "$res.dag200" rl %.3f)"
echo
echo "a plan that holds a stage (sql/hold.sql's workflow, cap 3), 1 estimated minute = $hold_ms_per_min ms, makespans in estimated minutes ($reps runs each, interleaved):"
printf '  %-52s %s\n' "planned makespan, with the hold" "$hold_plan"
printf '  %-52s %s\n' "planned makespan, parflow.plan_holds = off" "$list_plan"
printf '  %-52s %s\n' "realised, with the hold" "$(bench_agg "$res.hold" held %.2f)"
printf '  %-52s %s\n' "realised, parflow.plan_holds = off" "$(bench_agg "$res.hold" list %.2f)"
printf '  %-52s %s\n' "ratio held / off" "$(bench_ratio "$res.hold" held "$res.hold" list %.3fx)"
bench_summary "a plan that holds a stage (7 stages, cap 3): realised makespan, min (vs parflow.plan_holds = off)" \
    "$(bench_agg "$res.hold" held %.2f)" "$(bench_agg "$res.hold" list %.2f)" \
    "$(bench_ratio "$res.hold" held "$res.hold" list %.3fx)"
bench_summary "200-stage DAG, cap 4: realised / planned makespan" "$(bench_agg "$res.dag200" realised %.1f) min" \
    "$plan_min min" "$(bench_agg "$res.dag200" rp %.3f)"
