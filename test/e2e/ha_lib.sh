# shellcheck shell=bash
# test/e2e/ha_lib.sh -- helpers of the failover scripts (sourced, not run).
#
# A failover script starts a primary of its own (ha_primary_start, through
# test/cluster.sh, with replication on), a streaming standby from
# pg_basebackup -R (ha_standby_create), both stopped at exit; it runs a
# workflow whose every stage's work appends one line to a file
# (ha_agents: reference agents with --exec, connected with a multi-host
# conninfo and target_session_attrs=read-write, so that they find whichever
# server is the primary), breaks the primary mid-run and checks on the new
# primary what the run became (ha_check_*).
#
# shellcheck source=test/e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HA_STAGES="${HA_STAGES:-36}"
HA_WORK_S="${HA_WORK_S:-0.3}"
HA_AGENTS="${HA_AGENTS:-3}"
HA_LEASE="${HA_LEASE:-4 s}"    # longer than the outage, or leases expire in it
HA_WF=e2e_ha
HA_STANDBY_DIRS=()

# ha_primary_start [conf line...]: the primary, with what streaming needs.
ha_primary_start() {
    pf_cluster_start "parflow.database = ''" "parflow.naptime = 200ms" \
        "wal_level = replica" "max_wal_senders = 8" "hot_standby = on" \
        "wal_keep_size = '256MB'" "parflow.max_parallel_stages = 6" \
        "log_min_messages = log" "$@" ||
        { echo "FAIL: the primary did not start"; exit 1; }
    HA_PRIMARY_PORT="$PGPORT"
    pf_on_exit ha_log_on_fail
}

# shellcheck disable=SC2317 # run at exit, through pf_on_exit
ha_log_on_fail() {
    [ "$E2E_FAIL" -gt 0 ] || return 0
    pf_cluster_log_tail 40
    [ -n "${HA_STANDBY_LOG:-}" ] && { echo "---- standby log"; tail -n 40 "$HA_STANDBY_LOG"; }
}

# shellcheck disable=SC2317 # run at exit, through pf_on_exit
ha_stop_server() {
    local dir="$1"
    [ -f "$dir/postmaster.pid" ] || return 0
    pf_as_server "$PG_BIN/pg_ctl" -D "$dir" -m immediate -w -t 30 -s stop >/dev/null 2>&1 || true
}

# ha_standby_create NAME: a streaming standby of the primary, started; sets
# HA_STANDBY_PORT, HA_STANDBY_DIR, HA_STANDBY_LOG.
ha_standby_create() {
    local name="$1" dir port
    dir="$PF_TMP/$name"
    port="$(_pf_pick_port)" || return 1
    pf_as_server "$PG_BIN/pg_basebackup" -h "$PGHOST" -p "$HA_PRIMARY_PORT" -U postgres \
        -D "$dir" -R -X stream --checkpoint=fast >"$PF_TMP/$name.basebackup.log" 2>&1 || {
        cat "$PF_TMP/$name.basebackup.log"
        return 1
    }
    # postgresql.auto.conf is read last: it wins over pf_test.conf
    pf_as_server sh -c "printf '%s\n' \"port = $port\" \"cluster_name = '$name'\" >> '$dir/postgresql.auto.conf'"
    HA_STANDBY_DIRS+=("$dir")
    pf_on_exit ha_stop_server "$dir"
    pf_as_server "$PG_BIN/pg_ctl" -D "$dir" -l "$PF_TMP/$name.log" -w -t 60 -s start || {
        tail -n 30 "$PF_TMP/$name.log"
        return 1
    }
    HA_STANDBY_PORT="$port"
    HA_STANDBY_DIR="$dir"
    HA_STANDBY_LOG="$PF_TMP/$name.log"
}

# psql on a given port
ha_q() {
    local port="$1"
    shift
    PGPORT="$port" e2e_q "$@"
}

# ha_define: the workflow: HA_STAGES stages in groups of 6, each stage after
# one or two of the stages before it in its group, one agent kind.
ha_define() {
    e2e_q >/dev/null <<SQL || return 1
SET client_min_messages = warning;
SELECT parflow_define('$HA_WF', jsonb_build_object('groups', (
    SELECT jsonb_agg(jsonb_build_object('name', 'g' || g, 'stages', (
        SELECT jsonb_agg(jsonb_build_object('name', format('s%s_%s', g, s), 'agent', 'e2e_ha',
                                            'estimate', '1 min')
                         || CASE WHEN s > 0 THEN jsonb_build_object('depends_on',
                                jsonb_build_array(format('s%s_%s', g, s / 2))) ELSE '{}' END
                         ORDER BY s)
          FROM generate_series(0, 5) s)) ORDER BY g)
      FROM generate_series(0, $HA_STAGES / 6 - 1) g)));
SQL
}

# ha_agents CONNINFO: HA_AGENTS reference agents whose work appends
# "RUN STAGE ATTEMPT WORKER" to $E2E_DIR/work.log.
ha_agents() {
    local conninfo="$1" i
    : >"$E2E_DIR/work.log"
    chmod 666 "$E2E_DIR/work.log"
    for ((i = 1; i <= HA_AGENTS; i++)); do
        e2e_agent "ha$i" e2e_ha --concurrency 2 --lease "$HA_LEASE" --poll 0.5 \
            --exec "sleep $HA_WORK_S; echo \"\$PARFLOW_RUN \$PARFLOW_STAGE \$PARFLOW_ATTEMPT \$PARFLOW_WORKER\" >> $E2E_DIR/work.log; echo '{}'" \
            "$conninfo"
    done
}

# ha_wait_succeeded RUN N SECONDS: until N stages of RUN succeeded.
ha_wait_succeeded() {
    local run="$1" n="$2" limit="$3" deadline
    deadline=$((SECONDS + limit))
    while :; do
        [ "$(e2e_q -c "SELECT count(*) >= $n FROM parflow.task WHERE run_id = $run AND state = 'succeeded'" 2>/dev/null)" = t ] && return 0
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.05
    done
}

# Completions the agents saw accepted: "TASK" per line.
ha_accepted() {
    cat "$E2E_DIR"/ha*.log 2>/dev/null | sed -n 's/.* task=\([0-9]*\) .* completed (.*/\1/p' | sort -n | uniq
}

# ha_check_accepted RUN: every completion an agent saw accepted is on the new primary.
ha_check_accepted() {
    local ids n
    ids="$(ha_accepted | paste -sd, -)"
    n="$(ha_accepted | wc -l)"
    if [ "$n" -eq 0 ]; then
        e2e_fail "the agents logged accepted completions" "none in their logs"
        return
    fi
    e2e_check "every completion an agent saw accepted ($n) is on the new primary" \
        "SELECT format('task %s: %s', t, coalesce(k.state, 'missing'))
           FROM unnest('{$ids}'::bigint[]) t LEFT JOIN parflow.task k ON k.id = t
          WHERE k.state IS DISTINCT FROM 'succeeded'"
}

# ha_check_succeeded_once RUN: every stage has one succeeded event and ends succeeded.
ha_check_succeeded_once() {
    e2e_check "every stage of run $1 succeeded exactly once (one succeeded event each)" \
        "SELECT format('task %s: %s, %s succeeded events', t.id, t.state,
                       (SELECT count(*) FROM parflow.event e WHERE e.task_id = t.id AND e.kind = 'succeeded'))
           FROM parflow.task t WHERE t.run_id = $1
            AND (t.state <> 'succeeded'
                 OR (SELECT count(*) FROM parflow.event e WHERE e.task_id = t.id AND e.kind = 'succeeded') <> 1)"
}

# Stages of RUN whose work ran more than once, "STAGE COUNT" per line.
ha_work_twice() {
    awk -v r="$1" '$1 == r { n[$2]++ } END { for (s in n) if (n[s] > 1) print s, n[s] }' "$E2E_DIR/work.log" | sort
}

# Stages of RUN whose work ran at all.
ha_work_stages() {
    awk -v r="$1" '$1 == r { print $2 }' "$E2E_DIR/work.log" | sort -u | wc -l
}
