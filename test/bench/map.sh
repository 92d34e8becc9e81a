#!/usr/bin/env bash
# test/bench/map.sh -- a map stage's fan-out against the same fan-out
# written out (run by test/bench/run.sh, or alone: cd /work/main && make
# install && bash test/bench/map.sh).
#
# Both workflows have a root stage and 1,000 tasks after it, under a cap
# raised above 1,000: "static" has 1,000 stages in the group after root's;
# "map" has one map stage over root's output, an array of 1,000 elements,
# which root's completion expands into 1,000 instances.  Timed alike: from
# root's "succeeded" event (written as its completion starts; the map's
# expansion comes after it, in that transaction) to the commit of the pass
# that dispatched the last of the 1,000 (commit timestamps,
# track_commit_timestamp).  No agent claims:
# what is timed is the release, the expansion and the dispatch.
# PF_BENCH_MAP_REPS repetitions (default 3), interleaved: median (min..max)
# of each, and of map/static.  Goal: map/static at most 1.2.
set -euo pipefail

# shellcheck source=test/bench/handoff.common.bash
source "$(dirname "${BASH_SOURCE[0]}")/handoff.common.bash"
bench_setup
bench_cancel_live_runs_at_exit bench_map_static bench_map_map

reps=${PF_BENCH_MAP_REPS:-3}
n=1000
res="$out_dir/map"
rm -f "$res".*

echo "== map fan-out: 1 -> $n instances of a map stage against 1 -> $n stages"
bench_describe
if [ "$has_cts" != t ]; then
    echo "map: track_commit_timestamp is off on this cluster: skipped"
    exit 0
fi
bench_cap_at_least $((n + 1000))
q -q -v n="$n" >/dev/null <<'SQL'
SELECT parflow_define('bench_map_static', jsonb_build_object('groups', jsonb_build_array(
    jsonb_build_object('name', 'root', 'stages', jsonb_build_array(
        jsonb_build_object('name', 'root', 'agent', 'bench_mroot', 'estimate', '1 min'))),
    jsonb_build_object('name', 'mid', 'stages',
        (SELECT jsonb_agg(jsonb_build_object('name', 'm' || i, 'agent', 'bench_mmid', 'estimate', '1 min') ORDER BY i)
           FROM generate_series(1, :n) i)))));
SELECT parflow_define('bench_map_map', jsonb_build_object('groups', jsonb_build_array(
    jsonb_build_object('name', 'root', 'stages', jsonb_build_array(
        jsonb_build_object('name', 'root', 'agent', 'bench_mroot', 'estimate', '1 min'))),
    jsonb_build_object('name', 'mid', 'stages', jsonb_build_array(
        jsonb_build_object('name', 'm', 'agent', 'bench_mmid', 'estimate', '1 min',
                           'map', jsonb_build_object('over', 'root', 'key', 'items', 'max', :n, 'expect', :n)))))));
ANALYZE parflow.stage, parflow.stage_group, parflow.group_dep, parflow.stage_dep;
SQL

# one_run WORKFLOW: ms from root's completion to the last of the n dispatched
one_run() {
    local wf="$1" run ms
    run=$(qv -c "SELECT parflow_start('$wf', parallel => true)")
    pf_wait_for "SELECT state = 'dispatched' FROM parflow.task WHERE run_id = $run AND agent = 'bench_mroot'" 30
    qv -v n="$n" >/dev/null <<'SQL'
SELECT parflow_complete(c.task, c.token, jsonb_build_object('items', (SELECT jsonb_agg(i) FROM generate_series(1, :n) i)))
  FROM parflow_claim('bench_mroot', 'w') c;
SQL
    pf_wait_for "SELECT count(*) = $n FROM parflow.task WHERE run_id = $run AND agent = 'bench_mmid' AND state = 'dispatched'" 120
    ms=$(qv -c "
        WITH e AS (SELECT e.kind, t.agent, e.at, pg_xact_commit_timestamp(e.xmin) AS c
                     FROM parflow.event e JOIN parflow.task t ON t.id = e.task_id WHERE e.run_id = $run)
        SELECT round(1000 * extract(epoch FROM (SELECT max(c) FROM e WHERE kind = 'dispatched' AND agent = 'bench_mmid')
                                              - (SELECT min(at) FROM e WHERE kind = 'succeeded' AND agent = 'bench_mroot')), 1)")
    qv -c "SELECT parflow_cancel($run)" >/dev/null
    echo "$ms"
}

for ((i = 1; i <= reps; i++)); do
    s=$(one_run bench_map_static)
    m=$(one_run bench_map_map)
    echo "static=$s map=$m" >>"$res.runs"
done
bench_cap_reset

awk '
function med(a, k,   i, j, t) { for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
                                 return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
{ split($1, x, "="); split($2, y, "="); s[NR] = x[2]; m[NR] = y[2]; r[NR] = y[2] / x[2] }
END {
    k = NR
    for (i = 1; i <= k; i++) { ss[i] = s[i]; mm[i] = m[i]; rr[i] = r[i] }
    smin = s[1]; smax = s[1]; mmin = m[1]; mmax = m[1]; rmin = r[1]; rmax = r[1]
    for (i = 2; i <= k; i++) { if (s[i] < smin) smin = s[i]; if (s[i] > smax) smax = s[i]
                               if (m[i] < mmin) mmin = m[i]; if (m[i] > mmax) mmax = m[i]
                               if (r[i] < rmin) rmin = r[i]; if (r[i] > rmax) rmax = r[i] }
    printf "  static 1 -> %d stages, root done to last dispatched: %.1f ms (%.1f..%.1f)\n", '"$n"', med(ss, k), smin, smax
    printf "  map 1 -> %d instances, root done to last dispatched: %.1f ms (%.1f..%.1f)\n", '"$n"', med(mm, k), mmin, mmax
    printf "  map / static: %.2fx (%.2fx..%.2fx), goal <= 1.2x\n", med(rr, k), rmin, rmax
}' "$res.runs"
