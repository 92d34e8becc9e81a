#!/usr/bin/env bash
# test/bench/start.sh -- parflow_start right after parflow_define, before
# the new version has statistics (run by test/bench/run.sh, or alone after
# make install: bash test/bench/start.sh).
#
# Each of PF_BENCH_START_REPS rounds (default 3): parflow_define makes a new
# version of a workflow of PF_BENCH_START_STAGES independent stages (default
# 10000; the versions before it are in the tables, analyzed, as on a server
# that has run workflows for a while), parflow_start starts it at once; then
# ANALYZE of the definition tables, and a second start of the same version.
# Each start is timed inside the server (clock_timestamp around the call)
# and its run cancelled.  The figure: the first start against the second,
# same round.  A start whose statements plan badly on a version without
# statistics shows here (one did: a join to the verified stages scanned the
# whole version per stage, 54 s for 10,000 stages).
# Cluster: test/bench/handoff.common.bash.
set -euo pipefail

# shellcheck source=test/bench/handoff.common.bash
source "$(dirname "${BASH_SOURCE[0]}")/handoff.common.bash"
bench_setup
bench_cancel_live_runs_at_exit bench_start

reps=${PF_BENCH_START_REPS:-3}
n=${PF_BENCH_START_STAGES:-10000}
res="$out_dir/start"
rm -f "$res".*

q -q >/dev/null <<'SQL'
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS bench_start CASCADE;
CREATE SCHEMA bench_start;
-- one timed start, its run cancelled: milliseconds
CREATE FUNCTION bench_start.timed(wf text) RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
    ms numeric;
    r bigint;
BEGIN
    r := parflow_start(wf, parallel => true);
    ms := round((1000 * extract(epoch FROM clock_timestamp() - t0))::numeric, 1);
    PERFORM parflow_cancel(r);
    RETURN ms;
END $$;
ANALYZE parflow.stage, parflow.stage_group, parflow.stage_dep, parflow.group_dep;
SQL

echo "== a start right after its define: $n independent stages, $reps round(s)"
bench_describe
for ((i = 1; i <= reps; i++)); do
    qv -v n="$n" >/dev/null <<'SQL'
SELECT parflow_define('bench_start', jsonb_build_object('groups', jsonb_build_array(jsonb_build_object('name', 'g', 'stages',
    (SELECT jsonb_agg(jsonb_build_object('name', 's' || i, 'agent', 'bench_start', 'estimate', '1 s'))
       FROM generate_series(1, :n) i)))));
SQL
    fresh=$(qv -c "SELECT bench_start.timed('bench_start')")
    qv -c "ANALYZE parflow.stage, parflow.stage_group, parflow.stage_dep, parflow.group_dep" >/dev/null
    analyzed=$(qv -c "SELECT bench_start.timed('bench_start')")
    echo "fresh=$fresh analyzed=$analyzed" >>"$res.txt"
done
echo
printf '  %-52s %-26s %-26s %s\n' metric "right after the define" "after ANALYZE" ratio
printf '  %-52s %-26s %-26s %s\n' "parflow_start of $n stages, ms" "$(bench_agg "$res.txt" fresh %.1f)" \
    "$(bench_agg "$res.txt" analyzed %.1f)" "$(bench_ratio "$res.txt" fresh "$res.txt" analyzed %.2fx)"
bench_summary "parflow_start of $n stages right after parflow_define, ms (vs the same version after ANALYZE)" \
    "$(bench_agg "$res.txt" fresh %.1f)" "$(bench_agg "$res.txt" analyzed %.1f)" \
    "$(bench_ratio "$res.txt" fresh "$res.txt" analyzed %.2fx)"
q -q -c "SET client_min_messages = warning" -c "DROP SCHEMA bench_start CASCADE" >/dev/null
