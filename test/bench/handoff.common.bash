# shellcheck shell=bash
# shellcheck disable=SC2034  # bench_dir, has_cts, ... are used by the scripts that source this
# test/bench/handoff.common.bash -- helpers shared by test/bench/handoff.sh and
# test/bench/throughput.sh (sourced, never run; not a benchmark of its own:
# run.sh only runs *.sh).
#
# bench_setup: sources test/cluster.sh, then either reuses the cluster that
# test/bench/run.sh exported (PF_BENCH_SHARED=1 and PGPORT set) or starts a
# private one with everything these benchmarks can use:
#   parflow.max_parallel_stages = 64, track_commit_timestamp = on (commit-
#   anchored hand-off times), pg_stat_statements preloaded with track = none
#   (switched to 'all' only for the profile passes).
# On a shared cluster without those, the figures that need them are skipped
# with a note.  Both benchmarks work in database postgres, the one the
# dispatcher serves (parflow.database), with their own workflow and agent
# names; they create the extension there if it is missing.
# Then builds the C client into test/bench/out/handoff_client.

bench_setup() {
    cd "$(dirname "${BASH_SOURCE[0]}")/../.." || return 1
    # shellcheck source=test/cluster.sh
    source test/cluster.sh
    cd "$PF_ROOT" || return 1
    bench_dir="$PF_ROOT/test/bench"
    out_dir="$bench_dir/out"
    mkdir -p "$out_dir"
    client="$out_dir/handoff_client"

    if [ -n "${PF_BENCH_SHARED:-}" ] && [ -n "${PGPORT:-}" ]; then
        bench_cluster="shared (run.sh)"
    else
        local pgss=""
        if [ -f "$("$PG_CONFIG" --pkglibdir)/pg_stat_statements.so" ]; then
            pgss=",pg_stat_statements"
        fi
        PF_PRELOAD="${PF_PRELOAD:-parflow,pg_cron}$pgss" \
            pf_cluster_start "parflow.max_parallel_stages = 64" "track_commit_timestamp = on" "parflow.learn_min_runs = 0" \
            ${pgss:+"pg_stat_statements.track = none"}
        bench_cluster="private (test/cluster.sh)"
    fi
    export PGDATABASE=postgres

    # the client, rebuilt when its source is newer
    if [ ! -x "$client" ] || [ "$bench_dir/handoff_client.c" -nt "$client" ]; then
        cc -O2 -Wall -Wextra -Wno-unused-parameter -o "$client" "$bench_dir/handoff_client.c" \
            -I"$("$PG_CONFIG" --includedir)" -L"$("$PG_CONFIG" --libdir)" -lpq
    fi

    q() { pf_psql -d postgres "$@"; }
    qv() { pf_psql -d postgres -qAt "$@"; }

    q -q -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS parflow" >/dev/null
    has_cts=$(qv -c "SELECT current_setting('track_commit_timestamp')::boolean")
    has_pgss=$(qv -c "SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'pg_stat_statements')
                        AND current_setting('shared_preload_libraries') ~ 'pg_stat_statements'")
    if [ "$has_pgss" = t ]; then
        q -q -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
    fi
    # the dispatcher must be serving this database
    if ! pf_wait_for "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'parflow dispatcher'
                                      AND datname = current_database())" 30; then
        echo "no parflow dispatcher serves database postgres: is parflow in shared_preload_libraries?" >&2
        return 1
    fi
}

# At exit, cancel the runs of these workflows that are still live (a client
# that failed half-way), so that their tasks do not hold the global cap.
bench_cancel_live_runs_at_exit() {
    _bench_live_wfs="$*"
    pf_on_exit bench_cancel_live_runs
}
bench_cancel_live_runs() {
    local wf list=""
    for wf in $_bench_live_wfs; do list="$list${list:+,}'$wf'"; done
    qv -c "SELECT count(parflow_cancel(run)) FROM parflow.runs
            WHERE workflow IN ($list) AND state IN ('running', 'paused', 'blocked')" >/dev/null 2>&1 || true
}

# Raise parflow.max_parallel_stages to at least $1 (ALTER SYSTEM, reload),
# and put it back at exit.
bench_cap_at_least() {
    local want="$1" cur
    cur=$(qv -c "SHOW parflow.max_parallel_stages")
    if [ "$cur" -lt "$want" ]; then
        q -q -c "ALTER SYSTEM SET parflow.max_parallel_stages = $want" -c "SELECT pg_reload_conf()" >/dev/null
        pf_on_exit bench_cap_reset
        pf_wait_for "SELECT current_setting('parflow.max_parallel_stages')::int >= $want" 10
        sleep 1     # the dispatcher reloads on its next wake-up
    fi
}
bench_cap_reset() {
    q -q -c "ALTER SYSTEM RESET parflow.max_parallel_stages" -c "SELECT pg_reload_conf()" >/dev/null 2>&1 || true
}

# The machine and the server, printed with every figure.
bench_describe() {
    local cpu
    cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
    echo "machine: nproc $(nproc), CPU ${cpu:-unknown}, load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"
    qv -c "SELECT format('server: PostgreSQL %s, synchronous_commit = %s, fsync = %s, track_commit_timestamp = %s, parflow.max_parallel_stages = %s; cluster: %s',
                         current_setting('server_version'), current_setting('synchronous_commit'),
                         current_setting('fsync'), current_setting('track_commit_timestamp'),
                         current_setting('parflow.max_parallel_stages'), '$bench_cluster')"
}

# Switch pg_stat_statements tracking for every session (the dispatcher too).
bench_pgss_track() {
    if [ "$1" = reset ]; then
        q -q -c "ALTER SYSTEM RESET pg_stat_statements.track" -c "SELECT pg_reload_conf()" >/dev/null
    else
        q -q -c "ALTER SYSTEM SET pg_stat_statements.track = '$1'" -c "SELECT pg_reload_conf()" >/dev/null
        pf_on_exit bench_pgss_track reset
    fi
    sleep 0.3
}

# The statements that take the time, by total execution time (nested ones
# included): calls, mean and total ms, share of the time of the top-level
# statements matching $1 (those of the agents and the dispatcher), text.
# The benchmark client's own bookkeeping queries are left out.
bench_pgss_top() {
    local top="$1" n="${2:-14}"
    qv -F $'\t' -c "
        WITH s AS (SELECT calls, total_exec_time AS tot, mean_exec_time AS mean,
                          regexp_replace(query, '\\s+', ' ', 'g') AS query, toplevel
                     FROM pg_stat_statements
                    WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'postgres')
                      AND query !~ 'pg_stat_statements|ANALYZE|pg_xact_commit_timestamp|count\\(\\*\\) FROM parflow.task WHERE run_id|SELECT state FROM parflow.run'),
             ref AS (SELECT sum(tot) AS t FROM s WHERE toplevel AND query ~ '$top')
        SELECT calls, round(mean::numeric, 3), round(tot::numeric, 1),
               round(100 * tot / nullif((SELECT t FROM ref), 0))::int,
               CASE WHEN toplevel THEN '' ELSE '  ' END || left(query, 110)
          FROM s ORDER BY tot DESC LIMIT $n" |
        awk -F'\t' 'BEGIN { printf "    %7s %9s %10s %5s  %s\n", "calls", "mean ms", "total ms", "%", "statement (indented: nested)" }
                    { printf "    %7s %9s %10s %4s%%  %s\n", $1, $2, $3, $4, $5 }'
}

# Aggregates over the summary lines of a file (one line of key=value per
# run):  bench_agg FILE KEY  ->  "median (min..max)";  bench_ratio FILE_A
# KEY_A FILE_B KEY_B -> the same over the per-run ratios A/B (line i of A
# with line i of B: the runs are interleaved).
bench_agg() {
    awk -v key="$2" -v fmt="${3:-%.3f}" '
        function isort(a, n,   i, j, t) { for (i = 1; i < n; i++) { t = a[i]; for (j = i - 1; j >= 0 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t } }
        { for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == key) v[n++] = kv[2] + 0 } }
        END { if (n == 0) { print "-"; exit }
              isort(v, n); med = (n % 2) ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2
              printf fmt " (" fmt ".." fmt ")\n", med, v[0], v[n - 1] }' "$1"
}
bench_med() {
    awk -v key="$2" '
        function isort(a, n,   i, j, t) { for (i = 1; i < n; i++) { t = a[i]; for (j = i - 1; j >= 0 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t } }
        { for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == key) v[n++] = kv[2] + 0 } }
        END { if (n == 0) { print ""; exit }
              isort(v, n); print (n % 2) ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2 }' "$1"
}
bench_ratio() {
    paste -d'|' "$1" "$3" | awk -F'|' -v ka="$2" -v kb="$4" -v fmt="${5:-%.1fx}" '
        function isort(a, n,   i, j, t) { for (i = 1; i < n; i++) { t = a[i]; for (j = i - 1; j >= 0 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t } }
        function get(s, k,   a, i, kv, n) { n = split(s, a, " ")
            for (i = 1; i <= n; i++) { split(a[i], kv, "="); if (kv[1] == k) return kv[2] + 0 }
            return "" }
        { x = get($1, ka); y = get($2, kb); if (x != "" && y != "" && y > 0) v[n++] = x / y }
        END { if (n == 0) { print "-"; exit }
              isort(v, n); med = (n % 2) ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2
              printf fmt " (" fmt ".." fmt ")\n", med, v[0], v[n - 1] }'
}

# bench_summary METRIC PARFLOW BASELINE RATIO: one row of the table that
# test/bench/run.sh prints at the end (test/bench/out/summary.tsv).
bench_summary() {
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$PF_ROOT/test/bench/out/summary.tsv"
}

# Reference agents a benchmark starts: bench_agent LOG ARG... starts
# parflow-agent ARG... in the background, its output appended to LOG;
# bench_agents_stop stops them all (SIGTERM: they release what they hold),
# and runs at exit too.
bench_agent() {
    local log="$1"
    shift
    if [ -z "${bench_agent_bin:-}" ]; then
        bench_agent_bin="$PF_ROOT/parflow-agent"
        [ -x "$bench_agent_bin" ] || bench_agent_bin="$(command -v parflow-agent)"
        bench_agent_pids=()
        pf_on_exit bench_agents_stop
    fi
    "$bench_agent_bin" "$@" >>"$log" 2>&1 &
    bench_agent_pids+=($!)
}
bench_agents_stop() {
    local p
    for p in "${bench_agent_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${bench_agent_pids[@]}"; do wait "$p" 2>/dev/null || true; done
    bench_agent_pids=()
}
