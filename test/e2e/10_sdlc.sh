#!/usr/bin/env bash
# test/e2e/10_sdlc.sh -- the seed's SDLC workflow, run end to end by real
# parflow-agent processes (one simulated agent per kind).
#
#  1. a parallel run with flags {performance,security};
#  2. a sequential run with the same flags: one task at a time, in plan order,
#     slower than the parallel run;
#  3. a variant with the affinity rule {"agents": ["backend","frontend"],
#     "max_concurrent": 1} and no flags (the whole hardening group skipped);
#  4. four parallel runs at once: the global cap parflow.max_parallel_stages
#     (4) is reached and never exceeded.
# Each run: succeeded, every stage exactly once (skipped ones never),
# no stage dispatched before its dependencies (stage edges and group
# barriers) succeeded, the caps never exceeded -- all read from the event log.
set -u -o pipefail
# shellcheck source=test/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init 10_sdlc 'e2e_sdlc%'

SCALE=0.0002          # 1 estimated minute = 12 ms
GLOBAL_CAP="$(e2e_q -c "SHOW parflow.max_parallel_stages")"
e2e_check_idle
mark="$(e2e_event_mark)"

# The seed's SDLC workflow, from the same table as the demo
# (test/demo/sdlc_spec.sql); the second version adds the affinity rule.
e2e_q -f "$PF_ROOT/test/demo/sdlc_spec.sql" \
    -c "SELECT parflow_define('e2e_sdlc', pg_temp.seed_spec())" \
    -c "SELECT parflow_define('e2e_sdlc_aff', pg_temp.seed_spec()
          || '{\"affinity\": [{\"agents\": [\"backend\", \"frontend\"], \"max_concurrent\": 1}]}'::jsonb)" \
    >/dev/null || e2e_die "define e2e_sdlc, e2e_sdlc_aff"

e2e_check_spec_edges "e2e_sdlc: the extension's edges are the seed's group chain" e2e_sdlc

for kind in research critique backend frontend qa performance security statistics devops documentation; do
    e2e_agent "e2e10-$kind" "$kind" --simulate "$SCALE" --concurrency 2 -q
done

# -- 1. parallel ---------------------------------------------------------------
e2e_log "parallel run, flags {performance,security}"
par="$(e2e_start "SELECT parflow_start('e2e_sdlc', '{performance,security}', parallel => true)")" || e2e_die "start a run"
e2e_log "run $par: $(e2e_wait_run "$par" 60)"
e2e_expect_run "$par" succeeded
e2e_check_once "parallel run $par: every stage exactly once" "{$par}"
e2e_check_deps "parallel run $par: no stage before its dependencies" "{$par}"
e2e_check_cap "parallel run $par: the workflow's max_parallel" "e.run_id = $par" 4 2
e2e_check_eq "parallel run $par: run_started, run_succeeded logged once each" \
    "SELECT count(*) FILTER (WHERE kind = 'run_started') || ',' || count(*) FILTER (WHERE kind = 'run_succeeded')
       FROM parflow.events WHERE run = $par" "1,1"
par_s="$(e2e_run_seconds "$par")"

# -- 2. sequential -------------------------------------------------------------
e2e_log "sequential run, flags {performance,security}"
seq="$(e2e_start "SELECT parflow_start('e2e_sdlc', '{performance,security}', parallel => false)")" || e2e_die "start a run"
e2e_log "run $seq: $(e2e_wait_run "$seq" 60)"
e2e_expect_run "$seq" succeeded
e2e_check_once "sequential run $seq: every stage exactly once" "{$seq}"
e2e_check_deps "sequential run $seq: no stage before its dependencies" "{$seq}"
e2e_check_cap "sequential run $seq: never two tasks at once" "e.run_id = $seq" 1 1
e2e_check "sequential run $seq: stages run in plan order (parflow_plan with max_parallel 1)" "
    WITH ran AS (SELECT s.name, row_number() OVER (ORDER BY e.id) AS n
                   FROM parflow.event e JOIN parflow.task t ON t.id = e.task_id
                   JOIN parflow.run r ON r.id = t.run_id
                   JOIN parflow.stage s ON s.version_id = r.version_id AND s.ord = t.stage_ord
                  WHERE e.run_id = $seq AND e.kind = 'running'),
    plan AS (SELECT p.stage, row_number() OVER (ORDER BY p.est_start, p.est_finish) AS n
               FROM parflow_plan('e2e_sdlc', '{performance,security}', 1) p)
    SELECT format('position %s: ran %s, planned %s', coalesce(ran.n, plan.n), ran.name, plan.stage)
      FROM ran FULL JOIN plan ON plan.n = ran.n
     WHERE ran.name IS DISTINCT FROM plan.stage ORDER BY 1"
seq_s="$(e2e_run_seconds "$seq")"
e2e_check_true "the parallel run ($par_s s) is faster than the sequential one ($seq_s s)" \
    "SELECT $par_s < $seq_s * 0.9"

# -- 3. affinity ---------------------------------------------------------------
e2e_log "affinity variant, no flags"
aff="$(e2e_start "SELECT parflow_start('e2e_sdlc_aff', '{}', parallel => true)")" || e2e_die "start a run"
e2e_log "run $aff: $(e2e_wait_run "$aff" 60)"
e2e_expect_run "$aff" succeeded
e2e_check_once "affinity run $aff: every stage exactly once, performance and security skipped" "{$aff}"
e2e_check_eq "affinity run $aff: skipped stages" \
    "SELECT string_agg(stage, ',' ORDER BY stage) FROM parflow.tasks WHERE run = $aff AND state = 'skipped'" \
    "performance,security"
e2e_check_deps "affinity run $aff: no stage before its dependencies (through the skipped group)" "{$aff}"
e2e_check_cap "affinity run $aff: rule {backend,frontend} max_concurrent 1" \
    "e.run_id = $aff AND t.agent IN ('backend', 'frontend')" 1 1

# -- 4. the global cap under load ------------------------------------------------
e2e_log "four parallel runs at once (global cap $GLOBAL_CAP)"
runs=()
for flags in '{performance,security}' '{}' '{security}' '{performance}'; do
    r="$(e2e_start "SELECT parflow_start('e2e_sdlc', '$flags', parallel => true)")" || e2e_die "start a run"
    runs+=("$r")
done
e2e_log "runs ${runs[*]}: $(e2e_wait_runs 120 "${runs[@]}")"
list="$(IFS=,; echo "${runs[*]}")"
for r in "${runs[@]}"; do
    e2e_expect_run "$r" succeeded
done
e2e_check_once "concurrent runs {$list}: every stage exactly once" "{$list}"
e2e_check_deps "concurrent runs {$list}: no stage before its dependencies" "{$list}"
for r in "${runs[@]}"; do
    e2e_check_cap "concurrent run $r: the workflow's max_parallel" "e.run_id = $r" 4
done
e2e_check_cap "concurrent runs {$list}: parflow.max_parallel_stages" \
    "e.run_id = ANY ('{$list}')" "$GLOBAL_CAP" "$GLOBAL_CAP"

# The whole script, every run of every workflow: the global cap held.
e2e_check_cap "every task since the start of this script: parflow.max_parallel_stages" \
    "e.id > $mark" "$GLOBAL_CAP"
e2e_log "parallel $par_s s, sequential $seq_s s (planned 6 h 15 min and 9 h at scale $SCALE: 4.5 s and 6.5 s)"
e2e_finish
