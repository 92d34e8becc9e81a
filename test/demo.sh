#!/usr/bin/env bash
# test/demo.sh -- what `make demo` runs, once parflow is built and installed.
#
# Starts a throwaway cluster (test/cluster.sh), defines and plans the seed's
# SDLC workflow (test/demo/sdlc.sql), then runs it for real with one
# simulated parflow-agent per agent kind, in parallel mode and in sequential
# mode, printing stages as they start and finish and the realised times next
# to the plan.  The cluster and the agents stop on every way out.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=test/cluster.sh
source test/cluster.sh
cd "$PF_ROOT"

# Time scale: one estimated minute lasts PF_DEMO_MS_PER_MIN milliseconds.
ms_per_min=${PF_DEMO_MS_PER_MIN:-10}
scale=$(awk -v m="$ms_per_min" 'BEGIN { printf "%.8f", m / 60000 }')

pf_cluster_start "parflow.learn_min_runs = 0"   # simulated agents finish in ms: plan with the declared estimates
echo "demo: server on port $PGPORT (socket $PGHOST)"
if ! pf_psql -f test/demo/sdlc.sql; then
    echo "demo: test/demo/sdlc.sql failed" >&2
    pf_cluster_log_tail 40 >&2
    exit 1
fi

agent_pids=()
stop_agents() {
    local p
    for p in "${agent_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${agent_pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
pf_on_exit stop_agents
for kind in $(pf_psql -Atc "SELECT DISTINCT agent FROM parflow.stage ORDER BY 1"); do
    parflow-agent --agent "$kind" --simulate "$scale" --concurrency 2 --quiet &
    agent_pids+=($!)
done
# agents are up before work arrives: let them connect and warm their sessions
pf_wait_for "SELECT count(*) >= ${#agent_pids[@]} FROM pg_stat_activity WHERE query LIKE 'LISTEN%' OR query LIKE 'SELECT parflow_warm_up%' OR query LIKE '%parflow_claim%'" 20 || true
sleep 0.5
echo "demo: ${#agent_pids[@]} simulated agents, one per kind; 1 estimated minute = $ms_per_min ms"

# run_mode PARALLEL: start a run, print its stages as they start and finish.
run_mode() {
    local parallel=$1 run state last=0 line
    run=$(pf_psql -Atc "SELECT parflow_start('sdlc', '{performance,security}', 2, $parallel)")
    echo
    echo "== Run $run, parallel = $parallel"
    for _ in $(seq 1 3000); do
        while IFS='|' read -r id line; do
            [ -n "$id" ] || continue
            echo "$line"
            last=$id
        done < <(pf_psql -Atc "
            SELECT e.event, format('  %s  %-9s %s', to_char(e.at - r.started_at, 'MI:SS.MS'),
                   CASE e.kind WHEN 'running' THEN 'start' WHEN 'succeeded' THEN 'done' ELSE e.kind END, t.stage)
              FROM parflow.events e JOIN parflow.tasks t ON t.task = e.task JOIN parflow.run r ON r.id = e.run
             WHERE e.run = $run AND e.event > $last AND e.kind IN ('running', 'succeeded', 'failed')
             ORDER BY e.event")
        state=$(pf_psql -Atc "SELECT state FROM parflow.runs WHERE run = $run")
        [ "$state" = running ] || break
        sleep 0.05
    done
    echo "   run $run: $state"
    [ "$state" = succeeded ] || { echo "demo: run $run did not succeed" >&2; exit 1; }
    eval "run_$parallel=$run"
}
run_mode true
run_mode false

echo
echo "== Realised against planned (1 estimated minute = $ms_per_min ms)"
pf_psql -v par="$run_true" -v seq="$run_false" -v ms="$ms_per_min" <<'SQL'
\pset footer off
SELECT CASE WHEN r.parallel THEN 'parallel' ELSE 'sequential' END AS mode,
       r.planned AS planned,
       justify_interval(make_interval(secs => extract(epoch FROM r.finished_at - r.started_at) * 60000 / :ms))
           ::interval(0) AS realised,
       round(100 * (extract(epoch FROM r.finished_at - r.started_at) * 60000 / :ms
                    / extract(epoch FROM r.planned) - 1), 2) AS "off plan %"
  FROM parflow.run r WHERE r.id IN (:par, :seq) ORDER BY r.parallel DESC;
SELECT round(100 * (1 - extract(epoch FROM p.finished_at - p.started_at)
                      / extract(epoch FROM s.finished_at - s.started_at)), 1) AS "realised savings %",
       (SELECT savings_pct FROM parflow_estimate('sdlc', '{performance,security}')) AS "estimated savings %",
       35 AS "seed's claim %"
  FROM parflow.run p, parflow.run s WHERE p.id = :par AND s.id = :seq;
SQL

echo
echo "== Gantt chart of the parallel run $run_true (# = a stage at work)"
pf_psql -XAtc "SELECT parflow_gantt($run_true, 64)"
out_dir="${PF_DEMO_OUT:-$PF_ROOT/test/demo/out}"
mkdir -p "$out_dir"
pf_psql -XAtc "SELECT parflow_gantt_svg($run_true)" >"$out_dir/gantt-parallel.svg"
pf_psql -XAtc "SELECT parflow_gantt_svg($run_false)" >"$out_dir/gantt-sequential.svg"
echo "demo: SVG charts in $out_dir/gantt-parallel.svg and gantt-sequential.svg"
