#!/usr/bin/env bash
# test/bench/sdlc.sh -- the seed's promise, realised (run by test/bench/run.sh,
# or alone: cd /work/main && make install && bash test/bench/sdlc.sh).
#
# The seed's SDLC workflow (test/demo/sdlc_spec.sql, flags performance and
# security) run by one simulated reference agent per kind (--concurrency 2)
# at 1 estimated minute = PF_BENCH_SDLC_MS_PER_MIN ms (default 10):
#   exact   PF_BENCH_SDLC_REPS (default 5) parallel and as many sequential
#           runs, interleaved: realised times, realised savings against the
#           estimate and against the seed's claimed 35 %;
#   noisy   as many parallel runs with --jitter PF_BENCH_SDLC_JITTER (default
#           0.4: every stage lasts its estimate x a factor drawn from
#           [0.6, 1.4]), each compared with the best plan for the durations
#           that actually happened (the workflow redefined with them as
#           estimates: what a planner that knew the future would achieve)
#           and with that plan's lower bound.
# Then a Gantt chart of the last exact parallel run: text here, SVG in
# test/bench/out/sdlc-gantt.svg.
set -euo pipefail

# shellcheck source=test/bench/handoff.common.bash
source "$(dirname "${BASH_SOURCE[0]}")/handoff.common.bash"
bench_setup
bench_cancel_live_runs_at_exit bench_sdlc

reps=${PF_BENCH_SDLC_REPS:-5}
ms_per_min=${PF_BENCH_SDLC_MS_PER_MIN:-10}
jitter=${PF_BENCH_SDLC_JITTER:-0.4}
scale=$(awk -v m="$ms_per_min" 'BEGIN { printf "%.8f", m / 60000 }')
res="$out_dir/sdlc"
rm -f "$res".*

q -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
SET parflow.learn_min_runs = 0;
\i $PF_ROOT/test/demo/sdlc_spec.sql
SELECT parflow_define('bench_sdlc', pg_temp.seed_spec());
CREATE TABLE IF NOT EXISTS bench_sdlc_spec (spec jsonb);
TRUNCATE bench_sdlc_spec;
INSERT INTO bench_sdlc_spec SELECT pg_temp.seed_spec();
SQL

start_agents() {
    local k
    for k in $(qv -c "SELECT DISTINCT agent FROM parflow.stage s JOIN parflow.workflow_version v ON v.id = s.version_id
                        JOIN parflow.workflow w ON w.id = v.workflow_id WHERE w.name = 'bench_sdlc' ORDER BY 1"); do
        bench_agent "$out_dir/sdlc.agents.log" --agent "$k" --simulate "$scale" --concurrency 2 -q "$@"
    done
    sleep 0.5
}
run_one() {   # PARALLEL -> run id, once it ended
    local run st
    run=$(qv -c "SET parflow.learn_min_runs = 0; SELECT parflow_start('bench_sdlc', '{performance,security}', 2, $1)" | tail -n 1)
    for ((w = 0; w < 1200; w++)); do
        st=$(qv -c "SELECT state FROM parflow.runs WHERE run = $run")
        [ "$st" = running ] || break
        sleep 0.05
    done
    echo "$run"
}
# realised minutes of a run (from start to finish, in estimated minutes)
minutes() {
    qv -c "SELECT round((extract(epoch FROM finished_at - started_at) * 60000 / $ms_per_min / 60)::numeric, 2)
             FROM parflow.run WHERE id = $1 AND state = 'succeeded'"
}

read -r plan_par plan_seq est_pct < <(qv -F ' ' -c "
    SELECT round((extract(epoch FROM parallel) / 60)::numeric, 1), round((extract(epoch FROM sequential) / 60)::numeric, 1), savings_pct
      FROM parflow_estimate('bench_sdlc', '{performance,security}')")

start_agents
for ((i = 1; i <= reps; i++)); do
    p=$(run_one true)
    s=$(run_one false)
    mp=$(minutes "$p")
    ms=$(minutes "$s")
    echo "par=$mp seq=$ms save=$(awk -v a="$mp" -v b="$ms" 'BEGIN { printf "%.2f", 100 * (1 - a / b) }') poff=$(awk -v a="$mp" -v b="$plan_par" 'BEGIN { printf "%.2f", 100 * (a / b - 1) }') soff=$(awk -v a="$ms" -v b="$plan_seq" 'BEGIN { printf "%.2f", 100 * (a / b - 1) }')" >>"$res.exact"
    last_par=$p
done
bench_agents_stop

# noisy: the same with --jitter; the oracle plans with the durations that happened
start_agents --jitter "$jitter"
for ((i = 1; i <= reps; i++)); do
    p=$(run_one true)
    mp=$(minutes "$p")
    read -r oracle lb < <(qv -F ' ' -v ON_ERROR_STOP=1 <<SQL | tail -n 1
SET client_min_messages = warning;
SET parflow.learn_min_runs = 0;
-- the spec again, each stage's estimate replaced by what it really took
SELECT parflow_define('bench_sdlc_oracle', (
    SELECT jsonb_set(spec, '{groups}', (
        SELECT jsonb_agg(jsonb_set(g, '{stages}', (
                   SELECT jsonb_agg(st || jsonb_build_object('estimate',
                              coalesce((SELECT round((extract(epoch FROM t.finished_at - t.started_at) * 60000 / $ms_per_min)::numeric, 3)
                                        FROM parflow.tasks t WHERE t.run = $p AND t.stage = st->>'name') || ' s', st->>'estimate'))
                                    ORDER BY o)
                     FROM jsonb_array_elements(g->'stages') WITH ORDINALITY x(st, o))) ORDER BY go)
          FROM jsonb_array_elements(spec->'groups') WITH ORDINALITY y(g, go)))
      FROM bench_sdlc_spec)) IS NOT NULL;
SELECT round((extract(epoch FROM parallel) / 60)::numeric, 2), round((extract(epoch FROM lower_bound) / 60)::numeric, 2)
  FROM parflow_estimate('bench_sdlc_oracle', '{performance,security}');
SQL
)
    echo "par=$mp oracle=$oracle lb=$lb ro=$(awk -v a="$mp" -v b="$oracle" 'BEGIN { printf "%.4f", a / b }') rl=$(awk -v a="$mp" -v b="$lb" 'BEGIN { printf "%.4f", a / b }')" >>"$res.noisy"
done
bench_agents_stop

echo "== the seed's SDLC workflow, realised ($reps runs each, median (min..max); makespans in estimated minutes)"
bench_describe
echo "  1 estimated minute = $ms_per_min ms; one simulated agent per kind, --concurrency 2"
printf '  %-46s %-24s %-24s %s\n' metric parallel sequential "parallel / sequential"
printf '  %-46s %-24s %-24s %s\n' "planned (parflow_estimate)" "$plan_par" "$plan_seq" \
    "$(awk -v a="$plan_par" -v b="$plan_seq" 'BEGIN { printf "%.3f", a / b }')"
printf '  %-46s %-24s %-24s %s\n' "realised" "$(bench_agg "$res.exact" par %.1f)" "$(bench_agg "$res.exact" seq %.1f)" \
    "$(bench_ratio "$res.exact" par "$res.exact" seq %.3f)"
printf '  %-46s %-24s %-24s\n' "off plan %" "$(bench_agg "$res.exact" poff %.2f)" "$(bench_agg "$res.exact" soff %.2f)"
printf '  %-46s %s\n' "realised savings %" "$(bench_agg "$res.exact" save %.1f)"
printf '  %-46s %s\n' "estimated savings % (parflow_estimate)" "$est_pct"
printf '  %-46s %s\n' "the seed's claim %" "35 (its '8.5 h -> 5.5 h' does not add up: 540 -> 375 min is 30.6 %)"
echo
echo "  noisy durations (--jitter $jitter: each stage x [$(awk -v j="$jitter" 'BEGIN { printf "%.1f, %.1f", 1 - j, 1 + j }')]), parallel runs:"
printf '  %-46s %s\n' "realised" "$(bench_agg "$res.noisy" par %.1f)"
printf '  %-46s %s\n' "best plan knowing the real durations" "$(bench_agg "$res.noisy" oracle %.1f)"
printf '  %-46s %s\n' "its lower bound" "$(bench_agg "$res.noisy" lb %.1f)"
printf '  %-46s %s\n' "realised / best plan knowing the durations" "$(bench_agg "$res.noisy" ro %.3f)"
printf '  %-46s %s\n' "realised / lower bound" "$(bench_agg "$res.noisy" rl %.3f)"
echo
echo "  Gantt chart of parallel run $last_par (SVG: test/bench/out/sdlc-gantt.svg):"
qv -c "SELECT parflow_gantt($last_par, 64)" | sed 's/^/  /'
qv -c "SELECT parflow_gantt_svg($last_par)" >"$out_dir/sdlc-gantt.svg"
bench_summary "seed SDLC: realised savings % (vs parflow_estimate)" "$(bench_agg "$res.exact" save %.1f)" "$est_pct" \
    "$(awk -v a="$(bench_med "$res.exact" save)" -v b="$est_pct" 'BEGIN { printf "%.2fx", a / b }')"
bench_summary "seed SDLC parallel: realised / plan" "$(bench_agg "$res.exact" par %.1f) min" "$plan_par min" \
    "$(awk -v a="$(bench_med "$res.exact" par)" -v b="$plan_par" 'BEGIN { printf "%.3f", a / b }')"
bench_summary "seed SDLC, noisy durations: realised / best plan knowing them" "$(bench_agg "$res.noisy" par %.1f) min" \
    "$(bench_agg "$res.noisy" oracle %.1f) min" "$(bench_agg "$res.noisy" ro %.3f)"
