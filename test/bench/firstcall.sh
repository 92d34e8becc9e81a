#!/usr/bin/env bash
# test/bench/firstcall.sh -- what a new session's first claim and complete
# cost (run by test/bench/run.sh, or alone after make install).
#
# Each of PF_BENCH_FC_REPS (default 30) rounds, interleaved: a new psql
# session claims one dispatched task of a one-stage run and completes it
# (parflow_claim, then parflow_complete); another new session does the same
# with a minimal SKIP LOCKED queue in plain SQL (table bench_fc.jobs: claim
# = UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING id,
# complete = UPDATE ... SET state = 'done').  Each figure is the sum of the
# two statements' times as psql's \timing reports them (client round trips
# included, the connection itself not).  Cluster: test/bench/handoff.common.bash.
set -euo pipefail

# shellcheck source=test/bench/handoff.common.bash
source "$(dirname "${BASH_SOURCE[0]}")/handoff.common.bash"
bench_setup
bench_cancel_live_runs_at_exit bench_fc

reps=${PF_BENCH_FC_REPS:-30}
res="$out_dir/firstcall"
rm -f "$res".*

q -q >/dev/null <<'SQL'
SET client_min_messages = warning;
SELECT parflow_define('bench_fc', '{"groups": [{"name": "g", "stages": [{"name": "a", "agent": "bench_fc", "estimate": "1 s"}]}]}');
DROP SCHEMA IF EXISTS bench_fc CASCADE;
CREATE SCHEMA bench_fc;
CREATE TABLE bench_fc.jobs (id bigint PRIMARY KEY, state text NOT NULL);
CREATE INDEX jobs_new_idx ON bench_fc.jobs (id) WHERE state = 'new';
SQL
drop_schema() { q -q -c "DROP SCHEMA IF EXISTS bench_fc CASCADE" >/dev/null 2>&1 || true; }
pf_on_exit drop_schema

# the sum of the "Time: N ms" lines psql printed
times_sum() { awk '/^Time: / { s += $2 } END { printf "%.3f\n", s }'; }

for i in $(seq 1 "$reps"); do
    run=$(qv -c "SELECT parflow_start('bench_fc', parallel => true)")
    pf_wait_for "SELECT state = 'dispatched' FROM parflow.task WHERE run_id = $run" 10 >/dev/null
    pf=$(q -X -q <<'SQL' | times_sum
\timing on
SELECT task, token FROM parflow_claim('bench_fc', 'firstcall') \gset
SELECT parflow_complete(:task, :'token');
SQL
)
    qv -c "INSERT INTO bench_fc.jobs VALUES ($i, 'new')" >/dev/null
    base=$(q -X -q <<'SQL' | times_sum
\timing on
UPDATE bench_fc.jobs SET state = 'running'
 WHERE id = (SELECT id FROM bench_fc.jobs WHERE state = 'new' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id \gset
UPDATE bench_fc.jobs SET state = 'done' WHERE id = :id;
SQL
)
    echo "pf=$pf base=$base" >>"$res.txt"
done

echo "== first claim and complete of a new session: $reps rounds, interleaved (median, min..max)"
echo "machine: nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '  %-40s %s ms\n' "parflow (claim + complete)" "$(bench_agg "$res.txt" pf)"
printf '  %-40s %s ms\n' "SKIP LOCKED queue (claim + complete)" "$(bench_agg "$res.txt" base)"
ratio=$(awk -v a="$(bench_med "$res.txt" pf)" -v b="$(bench_med "$res.txt" base)" 'BEGIN { printf "%.2fx", a / b }')
printf '  %-40s %s\n' "ratio of the medians" "$ratio"
bench_summary "new session's first claim + complete, ms (vs SKIP LOCKED queue)" \
    "$(bench_agg "$res.txt" pf)" "$(bench_agg "$res.txt" base)" "$ratio"
