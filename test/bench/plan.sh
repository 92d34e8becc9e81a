#!/usr/bin/env bash
# test/bench/plan.sh -- the planner benchmark (run by test/bench/run.sh).
#
# All figures are ratios against baselines computed in the same run, on the
# machine named in the first line (nproc, CPU model, load average).
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
#    (${PF_STG_DIR:-test/bench/stg}, README.md there): each graph becomes a
#    workflow (test/bench/stg2sql.awk), and each (graph, m) pair is planned
#    under policies best (the search, at the default parflow.plan_effort),
#    cp and fifo with parflow._plan_stats(wf, '{}', m, policy); the
#    baselines of test/bench/listsched.c (critical-path and FIFO list
#    scheduling, and critical-path list scheduling with forward-backward
#    improvement; no parflow code) run on the same files, and so does
#    test/bench/stgexact.c (no parflow code either), which gives each pair's
#    exact optimum over all schedules and over list schedules (the best a
#    dispatcher following ranks alone can do; a plan that holds stages can
#    do better).  Prints one line per policy and
#    baseline against the published, the exact and the list optimum, the
#    proofs, and sanity checks (the conversion against the files' own
#    statistics, no makespan below a lower bound, no lower bound above the
#    exact optimum, no plan below it, none below the best list schedule
#    unless it holds stages);
#    per-pair details go to test/bench/out/stg.txt (test/bench/out/ is made
#    at run time and is not committed).
# 3. Synthesized scientific workflows in the shapes of Pegasus workflow
#    families (test/bench/wfgen.awk: Montage, Epigenomics, CyberShake, LIGO
#    Inspiral, SIPHT, 1000Genome, Seismology, SoyKB; 38 to 1,742 tasks,
#    runtimes drawn with a fixed seed: NOT traces of real runs, see that
#    file), planned under caps PF_BENCH_CAPS (default 4 16 64) at the
#    default effort.  Prints makespan / lower bound for parflow, for
#    critical-path list scheduling and for forward-backward-improved list
#    scheduling (listsched.c), parflow / fbi, the proofs and plan times.
#
# Uses its own database (parflow_bench_plan) on the cluster run.sh exported
# (PF_BENCH_SHARED=1), or starts a private cluster when run alone:
#   cd /work/main && make install && bash test/bench/plan.sh
# The cluster needs parflow.max_parallel_stages >= 64 (run.sh sets 64) so
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
stg_dir=${PF_STG_DIR:-$PF_ROOT/test/bench/stg}
caps=${PF_BENCH_CAPS:-4 16 64}
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
effort=$(qv -c "SHOW parflow.plan_effort")
cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
echo "machine: nproc $(nproc), CPU ${cpu:-unknown}; load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown); parflow.plan_effort = $effort"

# The baselines, built from their one C file (a compiler is there: make built parflow).
${CC:-cc} -O2 -o "$tmp/listsched" "$bench_dir/listsched.c"
${CC:-cc} -O2 -o "$tmp/stgexact" "$bench_dir/stgexact.c"

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
    exit 1
fi
if [ "$gcap" -lt 64 ]; then
    echo "  skipped: parflow.max_parallel_stages = $gcap, but m goes up to 64 (start the cluster with 64)"
    exit 1
fi

awk -f "$bench_dir/stg_opt.awk" "$stg_dir/README.md" >"$tmp/stg.sql"
shopt -s nullglob
ngraphs=0
: >"$tmp/stg_base.txt"
for f in "$stg_dir"/*/*.stg; do
    size=$(basename "$(dirname "$f")")
    base=$(basename "$f" .stg)
    awk -v graph="$size/$base" -v wf="stg${size}_$base" -f "$bench_dir/stg2sql.awk" "$f" >>"$tmp/stg.sql"
    "$tmp/listsched" "$f" 2 4 8 16 | sed "s/ /|/g; s#^#$size/$base|#" >>"$tmp/stg_base.txt"
    ngraphs=$((ngraphs + 1))
done
q -q -o /dev/null -f "$tmp/stg.sql"
# the exact optima (test/bench/stgexact.c), of every pair with a published one
: >"$tmp/stg_exact.txt"
te0=$(date +%s%N)
while IFS='|' read -r graph m; do
    "$tmp/stgexact" "$stg_dir/$graph.stg" "$m" 0 5000000 >"$tmp/ex.txt" || true
    "$tmp/stgexact" -n "$stg_dir/$graph.stg" "$m" 0 5000000 >"$tmp/exn.txt" || true
    ex=$(awk '/^optimum/ { print $2 }' "$tmp/ex.txt")
    exn=$(awk '/^optimum/ { print $2 }' "$tmp/exn.txt")
    below=$(awk -v t="$((${ex:-1} - 1))" '$1 == "T" && $2 == t ":" && $3 == "infeasible" { gsub(/[^0-9]/, "", $5); print $5 }' "$tmp/ex.txt")
    idle=$(awk '/^delay:/ { sub(/^delay: /, ""); print }' "$tmp/ex.txt")
    printf '%s|%s|%s|%s|%s|%s\n' "$graph" "$m" "${ex:-\N}" "${exn:-\N}" "${below:-\N}" "${idle:-\N}" >>"$tmp/stg_exact.txt"
done < <(qv -F '|' -c "SELECT o.graph, o.m FROM bench.stg_opt o JOIN bench.stg_graph g USING (graph) ORDER BY 1, 2")
te1=$(date +%s%N)
q -q -c "\copy bench.stg_exact FROM '$tmp/stg_exact.txt' WITH (DELIMITER '|')"
q -q -c "\copy bench.baseline (graph, m, tasks, work, cp, lb, ls_cp, ls_fifo, fbi, fbi_order) FROM '$tmp/stg_base.txt' WITH (DELIMITER '|')"
t0=$(date +%s%N)
q -q -o /dev/null -c "SELECT bench.run_stg()"
t1=$(date +%s%N)

# Per-pair details.
{
    echo "# STG instances: makespans (minutes) per (graph, m) under each policy and baseline, against the published"
    echo "# optimum from $stg_dir; lb = parflow_estimate's lower bound, simple = max(critical path, ceil(work / m));"
    echo "# exact, list: test/bench/stgexact.c's optimum over all schedules and over list schedules."
    q -P footer=off <<'SQL'
SELECT o.graph, g.tasks, g.edges, g.work, g.cp_file AS "cp(file)", b.critical_path AS "cp(parflow)",
       o.m, b.simple_bound AS simple, b.lower_bound AS lb, o.opt AS published, e.exact, e.exact_list AS list,
       max(r.makespan) FILTER (WHERE r.policy = 'best') AS best,
       max(r.proof) FILTER (WHERE r.policy = 'best') AS proof,
       max(r.makespan) FILTER (WHERE r.policy = 'cp') AS cp,
       max(r.makespan) FILTER (WHERE r.policy = 'fifo') AS fifo,
       max(x.fbi) AS "fbi(bench)",
       concat_ws(' ',
           CASE WHEN max(r.makespan) FILTER (WHERE r.policy = 'best') = e.exact THEN 'best=exact' END,
           CASE WHEN e.exact_list > e.exact THEN 'list>exact' END,
           CASE WHEN e.exact <> o.opt THEN 'exact<>published' END,
           CASE WHEN b.lower_bound > e.exact THEN 'LOWER-BOUND-ABOVE-EXACT' END,
           CASE WHEN max(r.makespan) FILTER (WHERE r.policy = 'best') > max(r.makespan) FILTER (WHERE r.policy = 'cp')
                THEN 'BEST-WORSE-THAN-CP' END,
           CASE WHEN max(r.makespan) FILTER (WHERE r.policy = 'best') > max(x.fbi) THEN 'fbi-shorter' END,
           CASE WHEN min(r.makespan) < b.lower_bound THEN 'BELOW-LOWER-BOUND' END,
           CASE WHEN b.lower_bound > o.opt THEN 'published-opt-below-lower-bound' END,
           CASE WHEN b.critical_path IS DISTINCT FROM g.cp_file THEN 'CP-MISMATCH' END,
           CASE WHEN max(x.ls_cp) <> max(r.makespan) FILTER (WHERE r.policy = 'cp') THEN 'CP-BASELINE-MISMATCH' END) AS notes
  FROM bench.stg_opt o
  JOIN bench.stg_graph g USING (graph)
  JOIN bench.stg_bound b USING (graph, m)
  JOIN bench.stg_result r USING (graph, m)
  LEFT JOIN bench.baseline x USING (graph, m)
  LEFT JOIN bench.stg_exact e USING (graph, m)
 GROUP BY o.graph, g.tasks, g.edges, g.work, g.cp_file, b.critical_path, o.m, b.simple_bound, b.lower_bound, o.opt,
          e.exact, e.exact_list
 ORDER BY split_part(o.graph, '/', 1)::int, o.graph, o.m;
SQL
} >"$out_dir/stg.txt"

# opt: the exact optimum (stgexact), or, past its node cap, the published one or the lower bound where that is above it
q -q -c "CREATE VIEW bench.stg_o AS
SELECT o.graph, o.m, o.opt AS published, coalesce(e.exact, greatest(o.opt, b.lower_bound)) AS opt, e.exact_list AS list
  FROM bench.stg_opt o JOIN bench.stg_bound b USING (graph, m) LEFT JOIN bench.stg_exact e USING (graph, m)"
q -P footer=off <<'SQL'
WITH r AS (SELECT graph, m, 'parflow ' || policy AS who, makespan FROM bench.stg_result
      UNION ALL SELECT graph, m, 'bench fbi', fbi FROM bench.baseline
      UNION ALL SELECT graph, m, 'bench cp', ls_cp FROM bench.baseline
      UNION ALL SELECT graph, m, 'bench fifo', ls_fifo FROM bench.baseline)
SELECT r.who AS "policy / baseline",
       format('%s of %s', count(*) FILTER (WHERE r.makespan = o.published), count(*)) AS "at published optimum",
       format('%s of %s', count(*) FILTER (WHERE r.makespan = o.opt), count(*)) AS "at optimum",
       format('%s of %s', count(*) FILTER (WHERE r.makespan <= o.list), count(*)) AS "at best list schedule",
       round(avg(r.makespan::numeric / o.opt), 4) AS "mean makespan/opt",
       round(max(r.makespan::numeric / o.opt), 4) AS "max makespan/opt",
       sum(r.makespan - o.opt) AS "total excess min"
  FROM r JOIN bench.stg_o o USING (graph, m)
 GROUP BY r.who
 ORDER BY array_position(ARRAY['parflow best', 'parflow cp', 'parflow fifo', 'bench fbi', 'bench cp', 'bench fifo'], r.who);
SQL
ms=$(( (t1 - t0) / 1000000 ))
exms=$(( (te1 - te0) / 1000000 ))
q -qAt -v ngraphs="$ngraphs" -v ms="$ms" -v exms="$exms" <<'SQL'
SELECT '  opt: the exact optimum, from test/bench/stgexact.c (a search over all schedules, idle processors included; no parflow code);';
SELECT '  best list schedule: the shortest schedule that keeps no processor idle while a task is ready (stgexact -n), the best any dispatch order';
SELECT '  gives, so the best a dispatcher following ranks can do; bench: test/bench/listsched.c, no parflow code';
SELECT format('  %s graphs (%s files), %s (graph, m) pairs with an optimum, %s without a graph; planning all pairs under 3 policies + estimates: %s ms; stgexact, all pairs twice: %s ms',
              (SELECT count(*) FROM bench.stg_graph), :ngraphs,
              (SELECT count(*) FROM bench.stg_opt o WHERE EXISTS (SELECT FROM bench.stg_graph g WHERE g.graph = o.graph)),
              (SELECT count(*) FROM bench.stg_opt o WHERE NOT EXISTS (SELECT FROM bench.stg_graph g WHERE g.graph = o.graph)),
              :ms, :exms);
SELECT format('  exact optimum = published optimum on %s of %s pairs (exact search past its node cap: %s); differs: %s',
              count(*) FILTER (WHERE e.exact = o.opt), count(*), count(*) FILTER (WHERE e.exact IS NULL),
              coalesce(string_agg(format('%s m=%s: published %s, exact %s (no schedule of %s: stgexact''s search over all schedules ends after %s nodes; parflow''s lower bound %s)',
                                         o.graph, o.m, o.opt, e.exact, e.exact - 1, coalesce(e.nodes_below::text, '?'), b.lower_bound), '; ')
                       FILTER (WHERE e.exact <> o.opt), 'none'))
  FROM bench.stg_opt o JOIN bench.stg_bound b USING (graph, m) LEFT JOIN bench.stg_exact e USING (graph, m);
SELECT format('  best list schedule = exact optimum on %s of %s pairs; longer: %s',
              count(*) FILTER (WHERE e.exact_list = e.exact), count(*),
              coalesce(string_agg(format('%s m=%s: %s > %s (the shortest schedule: %s)', e.graph, e.m, e.exact_list, e.exact, e.idle), '; ')
                       FILTER (WHERE e.exact_list > e.exact), 'none'))
  FROM bench.stg_exact e;
SELECT format('  parflow best: proven optimal on %s of %s pairs (%s by the lower bound, %s by the exhaustive search of all schedules); plans that hold stages (a slot kept idle): %s%s',
              count(*) FILTER (WHERE optimal), count(*), count(*) FILTER (WHERE proof = 'bound'), count(*) FILTER (WHERE proof = 'search'),
              count(*) FILTER (WHERE held > 0),
              coalesce(' (' || string_agg(format('%s m=%s: %s held', graph, m, held), ', ') FILTER (WHERE held > 0) || ')', ''))
  FROM bench.stg_result WHERE policy = 'best';
SELECT format('  parflow best above the optimum: %s', coalesce(string_agg(format('%s m=%s: %s > %s (%s)',
                  o.graph, o.m, r.makespan, o.opt,
                  CASE WHEN r.makespan = o.list THEN 'the best list schedule: no hold found'
                       ELSE 'longer than the best list schedule ' || coalesce(o.list::text, '?') END), '; '), 'none'))
  FROM bench.stg_o o JOIN bench.stg_result r USING (graph, m)
 WHERE r.policy = 'best' AND r.makespan > o.opt;
SELECT format('  parflow best against bench fbi: shorter on %s pairs, equal on %s, longer on %s%s',
              count(*) FILTER (WHERE r.makespan < x.fbi), count(*) FILTER (WHERE r.makespan = x.fbi),
              count(*) FILTER (WHERE r.makespan > x.fbi),
              coalesce(' (' || string_agg(format('%s m=%s: %s > %s%s', r.graph, r.m, r.makespan, x.fbi,
                                                 CASE WHEN x.fbi_order > x.fbi
                                                      THEN format(', fbi''s schedule keeps a processor idle while a task is ready; in its order, list scheduling gives %s',
                                                                  x.fbi_order) ELSE '' END), ', ')
                       FILTER (WHERE r.makespan > x.fbi) || ')', ''))
  FROM bench.stg_result r JOIN bench.baseline x USING (graph, m) WHERE r.policy = 'best';
SELECT format('  best against cp: better on %s pairs, equal on %s, worse on %s; parflow cp = bench cp on %s of %s pairs',
              count(*) FILTER (WHERE b.makespan < c.makespan),
              count(*) FILTER (WHERE b.makespan = c.makespan),
              count(*) FILTER (WHERE b.makespan > c.makespan),
              count(*) FILTER (WHERE c.makespan = x.ls_cp), count(*))
  FROM bench.stg_result b JOIN bench.stg_result c USING (graph, m) JOIN bench.baseline x USING (graph, m)
 WHERE b.policy = 'best' AND c.policy = 'cp';
SELECT format('  conversion check, against the files'' statistics: tasks %s of %s graphs, edges %s, critical path (parflow_estimate) %s; zero-cost tasks dropped: %s',
              count(*) FILTER (WHERE g.tasks = g.tasks_file), count(*),
              count(*) FILTER (WHERE g.edges = g.edges_file),
              count(*) FILTER (WHERE b.critical_path = g.cp_file), sum(g.dropped))
  FROM bench.stg_graph g
  JOIN LATERAL (SELECT critical_path FROM bench.stg_bound b WHERE b.graph = g.graph LIMIT 1) b ON true;
SELECT format('  lower bound = exact optimum on %s of %s pairs (max(cp, work / m) alone: %s)', count(*) FILTER (WHERE b.lower_bound = o.opt), count(*),
              count(*) FILTER (WHERE b.simple_bound = o.opt))
  FROM bench.stg_bound b JOIN bench.stg_o o USING (graph, m);
SELECT format('  sanity (each must be 0): makespans below the lower bound %s, lower bounds above the exact optimum %s, parflow best plans below the exact optimum %s, below the best list schedule without a hold %s',
              (SELECT count(*) FROM bench.stg_result r JOIN bench.stg_bound b2 USING (graph, m) WHERE r.makespan < b2.lower_bound),
              (SELECT count(*) FROM bench.stg_bound b JOIN bench.stg_exact e USING (graph, m) WHERE b.lower_bound > e.exact),
              (SELECT count(*) FROM bench.stg_result r JOIN bench.stg_exact e USING (graph, m) WHERE r.policy = 'best' AND r.makespan < e.exact),
              (SELECT count(*) FROM bench.stg_result r JOIN bench.stg_exact e USING (graph, m)
                WHERE r.policy = 'best' AND r.makespan < e.exact_list AND r.held = 0));
SQL
echo "  per-pair details: ${out_dir#"$PF_ROOT"/}/stg.txt"
# rows of the summary table of test/bench/run.sh
q -qAt -F $'\t' >>"$PF_ROOT/test/bench/out/summary.tsv" <<'SQL'
SELECT 'STG: (graph, m) pairs planned at the optimum (best vs critical-path list scheduling)',
       count(*) FILTER (WHERE b.makespan = o.opt) || ' of ' || count(*),
       count(*) FILTER (WHERE c.makespan = o.opt) || ' of ' || count(*),
       'mean makespan/opt ' || round(avg(b.makespan::numeric / o.opt), 4) || ' vs '
           || round(avg(c.makespan::numeric / o.opt), 4)
  FROM bench.stg_result b JOIN bench.stg_result c USING (graph, m) JOIN bench.stg_o o USING (graph, m)
 WHERE b.policy = 'best' AND c.policy = 'cp';
SQL

# --- 3. synthesized scientific workflows ------------------------------------------

echo
echo "== planner: synthesized workflows in the shapes of Pegasus families (NOT traces of real runs: test/bench/wfgen.awk), caps $caps"
# family a b: the size parameters of wfgen.awk, small to large
cat >"$tmp/traces.txt" <<'LIST'
montage 3 3
epigenomics 2 4
cybershake 2 10
ligo 2 5
genome 2 10
sipht 2 20
soykb 10 20
seismology 100 0
montage 6 6
sipht 5 30
epigenomics 4 24
soykb 60 60
genome 10 40
cybershake 10 40
ligo 10 24
montage 16 18
epigenomics 8 52
cybershake 20 43
LIST
: >"$tmp/traces.sql"
: >"$tmp/trace_base.txt"
ord=0
mkdir -p "$tmp/traces"
while read -r family a b; do
    ord=$((ord + 1))
    name="$family ${a}x$b"
    [ "$family" = seismology ] && name="$family $a"
    file="$tmp/traces/${family}_${a}_$b.stg"
    awk -v family="$family" -v a="$a" -v b="$b" -v seed=1 -f "$bench_dir/wfgen.awk" >"$file"
    awk -v graph="$name" -v wf="wf_${family}_${a}_$b" -v unit=ms -f "$bench_dir/stg2sql.awk" "$file" |
        grep -v '^INSERT INTO bench.stg_graph' >>"$tmp/traces.sql"
    echo "INSERT INTO bench.trace VALUES ('$name', 'wf_${family}_${a}_$b', $ord);" >>"$tmp/traces.sql"
    # shellcheck disable=SC2086 # caps is a list
    "$tmp/listsched" "$file" $caps | sed "s/ /|/g; s#^#$name|#" >>"$tmp/trace_base.txt"
done <"$tmp/traces.txt"
q -q -o /dev/null -f "$tmp/traces.sql"
q -q -c "\copy bench.baseline (graph, m, tasks, work, cp, lb, ls_cp, ls_fifo, fbi, fbi_order) FROM '$tmp/trace_base.txt' WITH (DELIMITER '|')"
q -q -c "UPDATE bench.trace t SET tasks = (SELECT count(*) FROM parflow_plan(t.workflow))"
q -q -o /dev/null -c "SELECT bench.run_traces('{$(echo "$caps" | tr ' ' ',')}')"

q -P footer=off <<'SQL'
SELECT t.name AS workflow, t.tasks, r.m AS cap,
       round(r.makespan::numeric / r.lower_bound, 4) AS "parflow/lb",
       round(x.ls_cp::numeric / r.lower_bound, 4) AS "cp/lb",
       round(x.fbi::numeric / r.lower_bound, 4) AS "fbi/lb",
       round(r.makespan::numeric / x.fbi, 4) AS "parflow/fbi",
       round(r.makespan::numeric / x.ls_cp, 4) AS "parflow/cp",
       coalesce(r.proof, '-') AS proven,
       r.held,
       round(r.compute_ms::numeric, 1) AS "plan ms"
  FROM bench.trace t JOIN bench.trace_result r USING (name) JOIN bench.baseline x ON x.graph = t.name AND x.m = r.m
 ORDER BY t.ord, r.m;
SQL
q -qAt <<'SQL'
SELECT '  lb: parflow_estimate''s lower bound (no schedule is shorter); cp, fbi: critical-path list scheduling, and it followed by';
SELECT '  forward-backward improvement (double justification), both from test/bench/listsched.c (no parflow code);';
SELECT '  proven: bound (the plan meets lb) or search (no schedule is shorter, idle slots included); held: stages the plan holds (a slot kept idle); plan ms: _plan_stats compute time (graph loaded)';
WITH j AS (SELECT r.*, x.ls_cp, x.fbi, x.fbi_order FROM bench.trace_result r JOIN bench.baseline x ON x.graph = r.name AND x.m = r.m)
SELECT format('  parflow against fbi: shorter on %s of %s, equal on %s, longer on %s%s; mean parflow/fbi %s (geometric %s), best %s',
              count(*) FILTER (WHERE makespan < fbi), count(*), count(*) FILTER (WHERE makespan = fbi),
              count(*) FILTER (WHERE makespan > fbi),
              coalesce(' (' || string_agg(format('%s cap %s: x%s%s', name, m, round(makespan::numeric / fbi, 4),
                                                 CASE WHEN fbi_order > fbi
                                                      THEN format('; fbi''s schedule keeps a slot idle while a stage is ready, which no dispatch order does: in its order, list scheduling gives x%s',
                                                                  round(fbi_order::numeric / fbi, 4)) ELSE '' END), ', ')
                       FILTER (WHERE makespan > fbi) || ')', ''),
              round(avg(makespan::numeric / fbi), 4), round(exp(avg(ln(makespan::numeric / fbi))), 4),
              round(min(makespan::numeric / fbi), 4))
  FROM j;
WITH j AS (SELECT r.*, x.ls_cp, x.fbi FROM bench.trace_result r JOIN bench.baseline x ON x.graph = r.name AND x.m = r.m)
SELECT format('  parflow against cp: shorter on %s, equal on %s, longer on %s; mean parflow/cp %s, mean fbi/cp %s',
              count(*) FILTER (WHERE makespan < ls_cp), count(*) FILTER (WHERE makespan = ls_cp),
              count(*) FILTER (WHERE makespan > ls_cp),
              round(avg(makespan::numeric / ls_cp), 4), round(avg(fbi::numeric / ls_cp), 4))
  FROM j;
WITH j AS (SELECT r.*, x.ls_cp, x.fbi, x.lb AS simple FROM bench.trace_result r JOIN bench.baseline x ON x.graph = r.name AND x.m = r.m)
SELECT format('  mean makespan/lb: parflow %s, cp %s, fbi %s; proven optimal: %s of %s (bound %s, search %s); lb above max(cp, work/cap) on %s; plans that hold stages: %s',
              round(avg(makespan::numeric / lower_bound), 4), round(avg(ls_cp::numeric / lower_bound), 4),
              round(avg(fbi::numeric / lower_bound), 4),
              count(*) FILTER (WHERE optimal), count(*), count(*) FILTER (WHERE proof = 'bound'),
              count(*) FILTER (WHERE proof = 'search'), count(*) FILTER (WHERE lower_bound > simple),
              count(*) FILTER (WHERE held > 0))
  FROM j;
SELECT format('  plan time (compute): median %s ms, max %s ms, total %s ms for %s plans; sanity: plans below lb: %s (must be 0)',
              round(percentile_cont(0.5) WITHIN GROUP (ORDER BY compute_ms)::numeric, 1), round(max(compute_ms)::numeric, 1),
              round(sum(compute_ms)::numeric), count(*), count(*) FILTER (WHERE makespan < lower_bound))
  FROM bench.trace_result;
SQL
q -qAt -F $'\t' >>"$PF_ROOT/test/bench/out/summary.tsv" <<'SQL'
SELECT 'synthesized workflows (caps 4/16/64): mean makespan / forward-backward-improved list scheduling',
       round(avg(r.makespan::numeric / x.fbi), 4)::text,
       '1 (fbi); cp ' || round(avg(x.ls_cp::numeric / x.fbi), 4),
       count(*) FILTER (WHERE r.makespan > x.fbi) || ' longer, ' || count(*) FILTER (WHERE r.makespan < x.fbi) || ' shorter of ' || count(*)
  FROM bench.trace_result r JOIN bench.baseline x ON x.graph = r.name AND x.m = r.m;
SQL
exit "$status"
