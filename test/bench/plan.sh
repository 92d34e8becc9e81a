#!/usr/bin/env bash
# test/bench/plan.sh -- the planner benchmark (run by test/bench/run.sh).
#
# 1. Generated DAGs of PF_BENCH_SIZES stages (default 1000 10000 100000; one
#    group, each stage depends on up to 3 random earlier stages, generated
#    deterministically in SQL by hashing).  Times parflow_define once per
#    size, then PF_BENCH_REPS times (default 5, after one warm-up) and
#    interleaved: parflow._plan_stats(wf, '{}', NULL, 'best') (its own load
#    and compute split, and its wall time), the compute time of the same
#    under policy cp (one list schedule), SELECT count(*) FROM
#    parflow_plan(wf), and the baseline SELECT count(*) FROM parflow.stage_dep
#    WHERE version_id = ... (just reading the edges).  Prints median (min..max)
#    in ms, the plan/scan ratio, makespans against the lower bound, the growth
#    ratio between the two largest sizes, and whether the largest plans in
#    under 1 s.  A size whose parflow_define takes over
#    PF_BENCH_DEFINE_TIMEOUT seconds (default 120) is skipped (exit 1).
# 2. The 20 STG instances with published optimal makespans
#    (${PF_STG_DIR:-$PF_ROOT/../shared/bench/stg}, README.md there): each graph
#    becomes a workflow (test/bench/stg2sql.awk), and each (graph, m) pair is
#    planned under policies best, cp and fifo with
#    parflow._plan_stats(wf, '{}', m, policy).  Prints one line per policy
#    and sanity checks (the conversion against the files' own statistics, no
#    makespan below an optimum); per-pair details go to test/bench/out/stg.txt
#    (test/bench/out/ is made at run time and is not committed).
#
# Uses its own database (parflow_bench_plan) on the cluster run.sh exported
# (PF_BENCH_SHARED=1), or starts a private cluster when run alone:
#   cd /work/main && make install && bash test/bench/plan.sh
# The cluster needs parflow.max_parallel_stages >= 16 (run.sh sets 64) so
# that the m of each call is the cap that binds.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=test/cluster.sh
source test/cluster.sh
cd "$PF_ROOT"

bench_dir="$PF_ROOT/test/bench"
out_dir="$bench_dir/out"
mkdir -p "$out_dir"

sizes=${PF_BENCH_SIZES:-1000 10000 100000}
reps=${PF_BENCH_REPS:-5}
define_timeout=${PF_BENCH_DEFINE_TIMEOUT:-120}
stg_dir=${PF_STG_DIR:-$PF_ROOT/../shared/bench/stg}
db=parflow_bench_plan

if [ -z "${PF_BENCH_SHARED:-}" ]; then
    pf_cluster_start "parflow.max_parallel_stages = 64" "parflow.learn_min_runs = 0"
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/parflow-bench-plan.XXXXXX")"
# shellcheck disable=SC2317 # run at exit, by pf_on_exit
cleanup_tmp() { rm -rf "$tmp"; }
pf_on_exit cleanup_tmp

pf_psql -q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
# shellcheck disable=SC2317 # run at exit, by pf_on_exit
drop_db() { pf_psql -q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true; }
pf_on_exit drop_db

q() { pf_psql -d "$db" "$@"; }
qv() { pf_psql -d "$db" -qAt "$@"; }   # one value, no decoration

q -q -c "CREATE EXTENSION parflow" -f "$bench_dir/plan_setup.sql" >/dev/null
gcap=$(qv -c "SHOW parflow.max_parallel_stages")

# --- 1. generated DAGs ----------------------------------------------------------

echo "== planner: generated DAGs (one group, <= 3 random earlier dependencies per stage; cap = parflow.max_parallel_stages = $gcap; $reps runs after a warm-up)"
status=0
done_sizes=()
for n in $sizes; do
    if ! qv -c "SET statement_timeout = '${define_timeout}s'" -c "SELECT bench.define_dag($n)" \
        >"$tmp/define.out" 2>"$tmp/define.err"; then
        echo "  $n stages: parflow_define failed or took over ${define_timeout} s (PF_BENCH_DEFINE_TIMEOUT): size skipped"
        sed 's/^/    /' "$tmp/define.err"
        status=1
        continue
    fi
    if ! q -q -c "SET statement_timeout = '600s'" -c "SELECT bench.measure_dag($n, $reps)" \
        >/dev/null 2>"$tmp/measure.err"; then
        echo "  $n stages: planning failed:"
        sed 's/^/    /' "$tmp/measure.err"
        status=1
        continue
    fi
    done_sizes+=("$n")
done

if [ "${#done_sizes[@]}" -gt 0 ]; then
    q -P footer=off <<'SQL'
SELECT d.size AS stages,
       d.deps AS "deps",
       round((d.define_ms / 1000)::numeric, 2) AS "define s",
       bench.fmt3(d.size, 'load') AS "load ms",
       bench.fmt3(d.size, 'compute') AS "compute ms",
       bench.fmt3(d.size, 'compute_cp') AS "cp compute ms",
       bench.fmt3(d.size, 'stats') AS "_plan_stats ms",
       bench.fmt3(d.size, 'plan') AS "parflow_plan ms",
       bench.fmt3(d.size, 'scan') AS "edge scan ms",
       round((bench.med(d.size, 'plan') / nullif(bench.med(d.size, 'scan'), 0))::numeric, 1) AS "plan/scan"
  FROM bench.dag d
 WHERE EXISTS (SELECT FROM bench.sample s WHERE s.size = d.size)
 ORDER BY d.size;
SQL
    q -qAt <<'SQL'
SELECT '  ms: median (min..max) of the runs.  load, compute: the split _plan_stats(wf, ''{}'', NULL, ''best'') reports; '
       '_plan_stats ms: its wall time;';
SELECT '  cp compute: the compute part under policy cp (one list schedule); edge scan: SELECT count(*) FROM parflow.stage_dep '
       'of the version, the baseline; plan/scan: parflow_plan / edge scan, of the medians;';
SELECT format('  define s: one parflow_define call (the spec is generated before it: %s s for the largest)',
              round((max(gen_ms) / 1000)::numeric, 1))
  FROM bench.dag;
SELECT format('  makespans (best / cp / lower bound): %s', string_agg(format('%s stages %s / %s / %s', m.size,
                                                                 to_char(m.makespan, 'FMHH24"h"MI'),
                                                                 to_char(m.makespan_cp, 'FMHH24"h"MI'),
                                                                 to_char(m.lower_bound, 'FMHH24"h"MI')), ', ' ORDER BY m.size)
                                         || format(' (planner edges incl. one per stage to its group barrier: %s)',
                                                   string_agg(m.edges::text, ', ' ORDER BY m.size)))
  FROM bench.makespan m;
WITH s AS (SELECT DISTINCT size FROM bench.sample ORDER BY size DESC LIMIT 2),
     big AS (SELECT max(size) AS b, min(size) AS a FROM s)
SELECT format('  growth t(%s)/t(%s) of the medians (%s = linear): parflow_plan x%s, _plan_stats x%s, load x%s, compute x%s, cp compute x%s, edge scan x%s',
              b, a, round(b::numeric / a, 1),
              round((bench.med(b, 'plan') / bench.med(a, 'plan'))::numeric, 1),
              round((bench.med(b, 'stats') / bench.med(a, 'stats'))::numeric, 1),
              round((bench.med(b, 'load') / bench.med(a, 'load'))::numeric, 1),
              round((bench.med(b, 'compute') / bench.med(a, 'compute'))::numeric, 1),
              round((bench.med(b, 'compute_cp') / bench.med(a, 'compute_cp'))::numeric, 1),
              round((bench.med(b, 'scan') / bench.med(a, 'scan'))::numeric, 1))
  FROM big WHERE a < b;
SELECT format('  compute best / cp: %s (best''s search budget depends on the size: its growth is not one schedule''s)',
              string_agg(format('%s stages x%s', size, round((bench.med(size, 'compute') / nullif(bench.med(size, 'compute_cp'), 0))::numeric, 1)),
                         ', ' ORDER BY size))
  FROM (SELECT DISTINCT size FROM bench.sample) s;
SELECT format('  %s stages plan in under 1 s: %s (parflow_plan median %s ms, max %s ms; _plan_stats median %s ms)',
              p.size, CASE WHEN p.hi < 1000 THEN 'yes' WHEN p.med < 1000 THEN 'median yes, max no' ELSE 'NO' END,
              bench.fmt(p.med), bench.fmt(p.hi), bench.fmt(bench.med(p.size, 'stats')))
  FROM bench.dag_stat p WHERE p.what = 'plan' AND p.size = (SELECT max(size) FROM bench.sample);
SQL
q -qAt -F $'\t' >>"$PF_ROOT/test/bench/out/summary.tsv" <<'SQL'
SELECT format('parflow_plan of %s generated stages, ms (vs a count(*) scan of its edges)', size),
       bench.fmt(bench.med(size, 'plan')), bench.fmt(bench.med(size, 'scan')),
       round((bench.med(size, 'plan') / nullif(bench.med(size, 'scan'), 0))::numeric, 1) || 'x'
  FROM (SELECT max(size) AS size FROM bench.sample) s;
SQL
fi

# --- 2. STG instances -------------------------------------------------------------

echo
echo "== planner: STG instances with known optimal makespans (P|prec|Cmax, m = the call's cap)"
if [ ! -f "$stg_dir/README.md" ]; then
    echo "  skipped: no STG set at $stg_dir (set PF_STG_DIR)"
    exit "$status"
fi
if [ "$gcap" -lt 16 ]; then
    echo "  skipped: parflow.max_parallel_stages = $gcap, but m goes up to 16 (start the cluster with 64)"
    exit 1
fi

awk -f "$bench_dir/stg_opt.awk" "$stg_dir/README.md" >"$tmp/stg.sql"
shopt -s nullglob
ngraphs=0
for f in "$stg_dir"/*/*.stg; do
    size=$(basename "$(dirname "$f")")
    base=$(basename "$f" .stg)
    awk -v graph="$size/$base" -v wf="stg${size}_$base" -f "$bench_dir/stg2sql.awk" "$f" >>"$tmp/stg.sql"
    ngraphs=$((ngraphs + 1))
done
q -q -o /dev/null -f "$tmp/stg.sql"
t0=$(date +%s%N)
q -q -o /dev/null -c "SELECT bench.run_stg()"
t1=$(date +%s%N)

# Per-pair details.
{
    echo "# STG instances: makespans (minutes) per (graph, m) under each policy, against the published optimum"
    echo "# from $stg_dir; lb = max(critical path, ceil(work / m)) as parflow_estimate reports it."
    q -P footer=off <<'SQL'
SELECT o.graph, g.tasks, g.edges, g.work, g.cp_file AS "cp(file)", b.critical_path AS "cp(parflow)",
       o.m, b.lower_bound AS lb, o.opt,
       max(r.makespan) FILTER (WHERE r.policy = 'best') AS best,
       max(r.makespan) FILTER (WHERE r.policy = 'cp') AS cp,
       max(r.makespan) FILTER (WHERE r.policy = 'fifo') AS fifo,
       concat_ws(' ',
           CASE WHEN max(r.makespan) FILTER (WHERE r.policy = 'best') = o.opt THEN 'best=opt' END,
           CASE WHEN max(r.makespan) FILTER (WHERE r.policy = 'best') > max(r.makespan) FILTER (WHERE r.policy = 'cp')
                THEN 'BEST-WORSE-THAN-CP' END,
           CASE WHEN min(r.makespan) < o.opt THEN 'BELOW-OPTIMUM' END,
           CASE WHEN b.lower_bound > o.opt THEN 'LB-ABOVE-OPTIMUM' END,
           CASE WHEN b.critical_path IS DISTINCT FROM g.cp_file THEN 'CP-MISMATCH' END) AS notes
  FROM bench.stg_opt o
  JOIN bench.stg_graph g USING (graph)
  JOIN bench.stg_bound b USING (graph, m)
  JOIN bench.stg_result r USING (graph, m)
 GROUP BY o.graph, g.tasks, g.edges, g.work, g.cp_file, b.critical_path, o.m, b.lower_bound, o.opt
 ORDER BY split_part(o.graph, '/', 1)::int, o.graph, o.m;
SQL
} >"$out_dir/stg.txt"

q -P footer=off <<'SQL'
SELECT r.policy,
       format('%s of %s', count(*) FILTER (WHERE r.makespan = o.opt), count(*)) AS "optimum reached",
       round(avg(100.0 * (r.makespan - o.opt) / o.opt), 2) AS "mean gap %",
       round(max(100.0 * (r.makespan - o.opt) / o.opt), 2) AS "max gap %",
       sum(r.makespan - o.opt) AS "total excess min"
  FROM bench.stg_result r JOIN bench.stg_opt o USING (graph, m)
 GROUP BY r.policy
 ORDER BY array_position(ARRAY['best', 'cp', 'fifo'], r.policy);
SQL
ms=$(( (t1 - t0) / 1000000 ))
q -qAt -v ngraphs="$ngraphs" -v ms="$ms" <<'SQL'
SELECT format('  %s graphs (%s files), %s (graph, m) pairs with an optimum, %s without a graph; planning all pairs under 3 policies + estimates: %s ms',
              (SELECT count(*) FROM bench.stg_graph), :ngraphs,
              (SELECT count(*) FROM bench.stg_opt o WHERE EXISTS (SELECT FROM bench.stg_graph g WHERE g.graph = o.graph)),
              (SELECT count(*) FROM bench.stg_opt o WHERE NOT EXISTS (SELECT FROM bench.stg_graph g WHERE g.graph = o.graph)),
              :ms);
SELECT format('  conversion check, against the files'' statistics: tasks %s of %s graphs, edges %s, critical path (parflow_estimate) %s; zero-cost tasks dropped: %s',
              count(*) FILTER (WHERE g.tasks = g.tasks_file), count(*),
              count(*) FILTER (WHERE g.edges = g.edges_file),
              count(*) FILTER (WHERE b.critical_path = g.cp_file), sum(g.dropped))
  FROM bench.stg_graph g
  JOIN LATERAL (SELECT critical_path FROM bench.stg_bound b WHERE b.graph = g.graph LIMIT 1) b ON true;
SELECT format('  best against cp: better on %s pairs, equal on %s, worse on %s%s',
              count(*) FILTER (WHERE b.makespan < c.makespan),
              count(*) FILTER (WHERE b.makespan = c.makespan),
              count(*) FILTER (WHERE b.makespan > c.makespan),
              coalesce(' (' || string_agg(format('%s m=%s: %s > %s', b.graph, b.m, b.makespan, c.makespan), ', ')
                       FILTER (WHERE b.makespan > c.makespan) || ')', ''))
  FROM bench.stg_result b JOIN bench.stg_result c USING (graph, m)
 WHERE b.policy = 'best' AND c.policy = 'cp';
SELECT format('  sanity: makespans below the published optimum: %s; lower bounds above it: %s (both must be 0)',
              (SELECT count(*) FROM bench.stg_result r JOIN bench.stg_opt o USING (graph, m) WHERE r.makespan < o.opt),
              (SELECT count(*) FROM bench.stg_bound b JOIN bench.stg_opt o USING (graph, m) WHERE b.lower_bound > o.opt));
SELECT format('  the lower bound max(cp, work/m) is the optimum on %s of %s pairs; the README says cp reaches the optimum on 56 of 70',
              count(*) FILTER (WHERE b.lower_bound = o.opt), count(*))
  FROM bench.stg_bound b JOIN bench.stg_opt o USING (graph, m);
SQL
echo "  per-pair details: ${out_dir#"$PF_ROOT"/}/stg.txt"
# rows of the summary table of test/bench/run.sh
q -qAt -F $'\t' >>"$PF_ROOT/test/bench/out/summary.tsv" <<'SQL'
SELECT 'STG: (graph, m) pairs planned at the optimum (best vs critical-path list scheduling)',
       count(*) FILTER (WHERE b.makespan = o.opt) || ' of ' || count(*),
       count(*) FILTER (WHERE c.makespan = o.opt) || ' of ' || count(*),
       'mean gap ' || round(avg(100.0 * (b.makespan - o.opt) / o.opt), 2) || ' % vs ' || round(avg(100.0 * (c.makespan - o.opt) / o.opt), 2) || ' %'
  FROM bench.stg_result b JOIN bench.stg_result c USING (graph, m) JOIN bench.stg_opt o USING (graph, m)
 WHERE b.policy = 'best' AND c.policy = 'cp';
SQL
exit "$status"
