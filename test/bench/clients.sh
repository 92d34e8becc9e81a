#!/usr/bin/env bash
# test/bench/clients.sh -- the clients' overhead: N no-op stages (default
# 10,000, PF_BENCH_CLIENTS_STAGES) of one run, worked by one process of each
# agent: the C reference agent (parflow-agent --simulate 0), the node client
# (clients/node) and the python client (clients/python, asyncio), each with
# the same concurrency and batch (PF_BENCH_CLIENTS_CONC, default 8: claims of
# up to 8 tasks, successes together in parflow_complete_many); rounds
# interleaved (PF_BENCH_CLIENTS_ROUNDS, default 2).  Clock: parflow_start
# (which creates the N tasks) to the run's finish, from the run's own
# timestamps; the process is started before the run, connected and idle.
# Printed: stages/s per agent and the ratio to the C agent of the same round.
# A client that cannot be built or run (no node, no psycopg) is skipped with
# the reason.  Runs alone too: `bash test/bench/clients.sh`.
set -euo pipefail
# shellcheck source=test/bench/handoff.common.bash
source "$(dirname "${BASH_SOURCE[0]}")/handoff.common.bash"
bench_setup

n=${PF_BENCH_CLIENTS_STAGES:-10000}
rounds=${PF_BENCH_CLIENTS_ROUNDS:-2}
conc=${PF_BENCH_CLIENTS_CONC:-8}
wf=bench_clients
kind=bench_clients_noop
bench_cap_at_least "$conc"
bench_cancel_live_runs_at_exit "$wf"

agents=(c)
declare -A skip=()
if (bash clients/node/build.sh >"$out_dir/clients.node-build.log" 2>&1); then
    agents+=(node)
else
    skip[node]="clients/node did not build (log: test/bench/out/clients.node-build.log)"
fi
if /usr/bin/python3 -c 'import psycopg, jsonschema' 2>/dev/null; then
    agents+=(python)
else
    skip[python]="python3 lacks psycopg or jsonschema (test/bootstrap.sh installs them)"
fi

qv -c "SELECT parflow_define('$wf', jsonb_build_object('groups', jsonb_build_array(jsonb_build_object('name', 'g',
        'stages', (SELECT jsonb_agg(jsonb_build_object('name', 's' || i, 'agent', '$kind', 'estimate', '1 min'))
                     FROM generate_series(1, $n) i)))))" >/dev/null

echo "== clients: $n no-op stages of one run through one process of each agent, concurrency $conc, batch $conc; $rounds round(s), interleaved (median, min..max)"
bench_describe
for a in node python; do [ -n "${skip[$a]:-}" ] && echo "  $a: skipped: ${skip[$a]}"; done

agent_cmd() {
    case "$1" in
        c) echo "${bench_agent_bin:-$PF_ROOT/parflow-agent} --agent $kind --simulate 0 --batch $conc --concurrency $conc --quiet --exit-when-idle 600" ;;
        node) echo "node $bench_dir/clients_noop.mjs $kind RUN $conc $conc" ;;
        python) echo "env PYTHONPATH=$PF_ROOT/clients/python /usr/bin/python3 $bench_dir/clients_noop.py $kind RUN $conc $conc" ;;
    esac
}
[ -x "$PF_ROOT/parflow-agent" ] || bench_agent_bin="$(command -v parflow-agent)"

rm -f "$out_dir"/clients.*.tsv
for ((r = 1; r <= rounds; r++)); do
    for a in "${agents[@]}"; do
        qv -c "ANALYZE parflow.task" >/dev/null
        if [ "$a" = c ]; then
            # the reference agent serves until idle; it is stopped once the run is over
            $(agent_cmd c) >>"$out_dir/clients.c.err" 2>&1 &
            pid=$!
            pf_wait_for "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE query LIKE 'LISTEN %bench_clients_noop%' OR query LIKE '%parflow_claim%')" 20 || true
            run=$(qv -c "SELECT parflow_start('$wf', parallel => true)")
            pf_wait_for "SELECT state <> 'running' FROM parflow.runs WHERE run = $run" 600
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        else
            # a client waits for the run it is given: start it paused, let the client connect, resume it
            run=$(qv -c "SELECT parflow_start('$wf', parallel => true)")
            qv -c "SELECT parflow_pause($run)" >/dev/null
            cmd=$(agent_cmd "$a")
            ${cmd//RUN/$run} >>"$out_dir/clients.$a.err" 2>&1 &
            pid=$!
            pf_wait_for "SELECT count(*) >= 2 FROM pg_stat_activity WHERE application_name LIKE 'parflow-%-operator' OR query LIKE 'LISTEN%bench_clients_noop%'" 20 || true
            sleep 0.5
            start_sql="SELECT parflow_resume($run)"
            qv -c "$start_sql" >/dev/null
            wait "$pid" || echo "  $a: the client exited with $? (log: test/bench/out/clients.$a.err)"
        fi
        # the clock: from the start (or the resume, for a client) to the finish
        qv -F ' ' -c "SELECT 'state=' || r.state,
                             's=' || round(extract(epoch FROM r.finished_at - coalesce(
                                      (SELECT max(e.at) FROM parflow.events e WHERE e.run = r.run AND e.kind = 'run_resumed'),
                                      r.started_at))::numeric, 3)
                        FROM parflow.runs r WHERE r.run = $run" | tr '\n' ' ' >>"$out_dir/clients.$a.tsv"
        echo "n=$n" >>"$out_dir/clients.$a.tsv"
    done
done

# per round: stages/s, and the ratio to the C agent of the same round
awk -v n="$n" '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "s") print "rate=" n / kv[2] " s=" kv[2] } }' \
    "$out_dir/clients.c.tsv" >"$out_dir/clients.c.rate"
printf '  %-48s %-26s %-22s %s\n' agent "stages/s" "wall s" "ratio to the C agent (same round)"
for a in "${agents[@]}"; do
    awk -v n="$n" '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "s") print "rate=" n / kv[2] " s=" kv[2] } }' \
        "$out_dir/clients.$a.tsv" >"$out_dir/clients.$a.rate"
    paste -d' ' "$out_dir/clients.$a.rate" "$out_dir/clients.c.rate" |
        awk '{ split($1, a, "="); split($3, c, "="); print "r=" a[2] / c[2] }' >"$out_dir/clients.$a.ratio"
    case "$a" in
        c) label="parflow-agent (C, libpq), --batch $conc" ;;
        node) label="node client (node-postgres), concurrency $conc" ;;
        python) label="python client (psycopg 3, asyncio), concurrency $conc" ;;
    esac
    rate=$(bench_agg "$out_dir/clients.$a.rate" rate %.0f)
    wall=$(bench_agg "$out_dir/clients.$a.rate" s %.2f)
    ratio=$(bench_agg "$out_dir/clients.$a.ratio" r %.2fx)
    printf '  %-48s %-26s %-22s %s\n' "$label" "$rate" "$wall" "$ratio"
    if [ "$a" != c ]; then
        bench_summary "stages/s, ${n} no-op, one $a client process, concurrency $conc (vs parflow-agent, same settings)" \
            "$rate" "$(bench_agg "$out_dir/clients.c.rate" rate %.0f)" "$ratio"
    fi
    bad=$(grep -vc 'state=succeeded' "$out_dir/clients.$a.tsv" || true)
    [ "$bad" -eq 0 ] || echo "  $a: $bad run(s) did not succeed"
done
echo "details: test/bench/out/clients.* (one line per round; *.err: the agents' stderr)"
