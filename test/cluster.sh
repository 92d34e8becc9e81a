# shellcheck shell=bash
# test/cluster.sh -- start and stop a throwaway PostgreSQL cluster for tests.
#
# Sourced (never run) by test/run.sh, test/demo.sh, the bench and the e2e
# scripts.  pf_cluster_start makes a cluster in a fresh directory under /tmp,
# owned by the postgres OS user when we are root (initdb refuses root), on a
# free port, with parflow and pg_cron preloaded, and exports the libpq
# variables that point every client at it.  The EXIT trap installed here stops
# the cluster and removes its directory on every way out: success, failure,
# Ctrl-C, SIGTERM.  Callers add their own cleanup with pf_on_exit, not with
# their own `trap ... EXIT` (that would replace this one).
#
# Knobs (environment): PF_PRELOAD (shared_preload_libraries, default
# 'parflow,pg_cron'), PG_CONFIG (default the PostgreSQL 15 one), PF_TMPDIR
# (parent of the cluster directory, default /tmp), PF_SERVER_USER (OS user
# that runs the server when we are root, default postgres), PF_KEEP_CLUSTER=1
# (stop the server but keep its directory, to read the log afterwards).
#
# Provides: pf_cluster_start [conf line...], pf_cluster_stop,
# pf_cluster_restart [fast|immediate], pf_cluster_log_tail [N], pf_on_exit
# CMD [ARG...], pf_psql ARG..., pf_wait_for SQL [SECONDS], pf_pg_ctl ARG...,
# pf_as_server CMD...; exports PF_ROOT PF_BIN PG_CONFIG PG_BIN (prepended to
# PATH) and, once started, PGHOST PGPORT PGUSER PGDATABASE PF_PORT PF_DATA
# PF_LOG PF_TMP.
#
# An e2e script (test/e2e/NN_name.sh, executable) is run by test/run.sh with
# the shared cluster already exported: it just uses psql/libpq, and may
# `source "$PF_ROOT/test/cluster.sh"` for the helpers (pf_cluster_restart
# then acts on the shared cluster).  One that needs its own settings or
# crashes the server on purpose calls pf_cluster_start for a private cluster.
# A bench script sources this file and calls pf_cluster_start with its
# settings, e.g.  pf_cluster_start "parflow.max_parallel_stages = 8".

if [ -n "${_PF_CLUSTER_SH_LOADED:-}" ] && [ "${_PF_CLUSTER_SH_LOADED}" = "$BASHPID" ]; then
    return 0
fi

PF_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
PF_BIN="${PF_BIN:-$PF_ROOT}"          # where `make` leaves parflow-agent
export PF_ROOT PF_BIN

: "${PG_CONFIG:=/usr/lib/postgresql/15/bin/pg_config}"
if [ -z "${PG_BIN:-}" ]; then
    if ! PG_BIN="$("$PG_CONFIG" --bindir 2>/dev/null)" || [ ! -x "$PG_BIN/initdb" ]; then
        echo "cluster.sh: no PostgreSQL server found via PG_CONFIG=$PG_CONFIG;" >&2
        echo "cluster.sh: run 'make test' (installs it) or 'bash test/bootstrap.sh'." >&2
        return 1
    fi
fi
export PG_CONFIG PG_BIN
case ":$PATH:" in
    *":$PG_BIN:"*) ;;
    *) PATH="$PG_BIN:$PATH" ;;
esac
export PATH

: "${PF_PRELOAD:=parflow,pg_cron}"
: "${PF_SERVER_USER:=postgres}"

_PF_DIR=""              # cluster directory, set while this shell owns a cluster
_PF_OWNER=""            # $BASHPID of the shell that started it
_PF_EXIT_HOOKS=()       # commands run (last registered first) before the stop

# Register a command (a function name and its arguments) to run at exit,
# before the cluster is stopped.  Hooks run last-registered first; a failing
# hook does not keep the others or the stop from running.
pf_on_exit() {
    local cmd
    cmd="$(printf '%q ' "$@")"
    _PF_EXIT_HOOKS+=("$cmd")
}

# Run a command as the OS user that owns the server files, from a directory
# that user can read (the repository may not be readable by it).
pf_as_server() {
    if [ "$(id -u)" -eq 0 ] && [ "$PF_SERVER_USER" != root ]; then
        (cd / && runuser -u "$PF_SERVER_USER" -- "$@")
    else
        (cd / && "$@")
    fi
}

# pg_ctl on the test cluster, as the server user.
pf_pg_ctl() {
    pf_as_server "$PG_BIN/pg_ctl" -D "$PF_DATA" "$@"
}

# psql on the test cluster: no psqlrc, stop at the first error, no pager.
pf_psql() {
    "$PG_BIN/psql" -X -v ON_ERROR_STOP=1 -P pager=off "$@"
}

# pf_wait_for SQL [SECONDS]: poll until SQL returns true (default 30 s).
pf_wait_for() {
    local sql="$1" limit="${2:-30}" deadline out
    deadline=$((SECONDS + limit))
    while :; do
        out="$("$PG_BIN/psql" -X -qAt -c "$sql" 2>/dev/null || true)"
        [ "$out" = t ] && return 0
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "pf_wait_for: timed out after ${limit}s waiting for: $sql" >&2
            return 1
        fi
        sleep 0.1
    done
}

# Last lines of the server log (default 50).
pf_cluster_log_tail() {
    local n="${1:-50}"
    if [ -n "${PF_LOG:-}" ] && [ -f "$PF_LOG" ]; then
        echo "---- last $n lines of the server log ($PF_LOG) ----"
        tail -n "$n" "$PF_LOG"
        echo "---- end of server log ----"
    else
        echo "(no server log)"
    fi
}

_pf_port_busy() {
    local port="$1"
    if command -v ss >/dev/null 2>&1; then
        [ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ] && return 0
    fi
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    return 1
}

# A TCP port in 20000-39999 nobody listens on, from a random start.
_pf_pick_port() {
    local start=$((RANDOM % 20000)) i port
    for ((i = 0; i < 20000; i++)); do
        port=$((20000 + (start + i * 7919) % 20000))
        if ! _pf_port_busy "$port"; then
            echo "$port"
            return 0
        fi
    done
    echo "cluster.sh: no free TCP port in 20000-39999" >&2
    return 1
}

_pf_write_conf() {
    local port="$1"
    shift
    {
        echo "# written by test/cluster.sh"
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = '$_PF_DIR'"
        echo "shared_preload_libraries = '$PF_PRELOAD'"
        echo "cron.database_name = 'postgres'"
        echo "cron.host = '$_PF_DIR'"
        echo "parflow.database = 'postgres'"
        echo "fsync = off"
        echo "max_worker_processes = 16"
        echo "log_min_messages = warning"
        echo "logging_collector = off"
        echo "timezone = 'UTC'"
        echo "log_timezone = 'UTC'"
        echo "# extra lines from the caller"
        local line
        for line in "$@"; do
            printf '%s\n' "$line"
        done
    } >"$PF_DATA/pf_test.conf"
}

# pf_cluster_start [postgresql.conf line...]: make and start a cluster, export
# PGHOST PGPORT PGUSER PGDATABASE PF_DATA PF_LOG PF_PORT PF_TMP.  Extra
# arguments are appended to the configuration (later lines win).
pf_cluster_start() {
    local attempt port locale
    if [ -n "$_PF_DIR" ]; then
        echo "pf_cluster_start: this shell already runs a cluster in $_PF_DIR" >&2
        return 1
    fi
    _pf_install_traps

    _PF_DIR="$(mktemp -d "${PF_TMPDIR:-/tmp}/parflow-pg.XXXXXX")" || return 1
    _PF_OWNER=$BASHPID
    chmod 755 "$_PF_DIR"
    if [ "$(id -u)" -eq 0 ] && [ "$PF_SERVER_USER" != root ]; then
        chown "$PF_SERVER_USER:" "$_PF_DIR" || return 1
    fi
    PF_TMP="$_PF_DIR"
    PF_DATA="$_PF_DIR/data"
    PF_LOG="$_PF_DIR/server.log"
    export PF_TMP PF_DATA PF_LOG

    # A UTF-8 C locale makes sorting and messages the same on every machine.
    locale=C
    if locale -a 2>/dev/null | grep -qix 'c\.utf-\?8'; then
        locale=C.UTF-8
    fi
    if ! pf_as_server "$PG_BIN/initdb" -D "$PF_DATA" -A trust -U postgres \
        --no-sync -E UTF8 --locale="$locale" >"$_PF_DIR/initdb.log" 2>&1; then
        echo "pf_cluster_start: initdb failed:" >&2
        cat "$_PF_DIR/initdb.log" >&2
        return 1
    fi
    echo "include 'pf_test.conf'" >>"$PF_DATA/postgresql.conf"

    # Another run may grab the port between the check and the bind: retry.
    for attempt in 1 2 3 4 5; do
        port="$(_pf_pick_port)" || return 1
        _pf_write_conf "$port" "$@"
        rm -f "$PF_LOG"
        if pf_pg_ctl -l "$PF_LOG" -w -t 60 -s start >"$_PF_DIR/pg_ctl.log" 2>&1; then
            break
        fi
        if [ "$attempt" -lt 5 ] && grep -q 'could not bind\|could not create any TCP/IP sockets' "$PF_LOG" 2>/dev/null; then
            continue
        fi
        echo "pf_cluster_start: the server did not start (port $port):" >&2
        cat "$_PF_DIR/pg_ctl.log" >&2
        echo "---- server log ($PF_LOG) ----" >&2
        cat "$PF_LOG" >&2 2>/dev/null || true
        return 1
    done

    # A PGHOSTADDR or service from the caller's environment would win over
    # PGHOST: drop them.
    unset PGHOSTADDR PGSERVICE PGSERVICEFILE PGPASSWORD PGREQUIRESSL PGSSLMODE
    PGHOST="$_PF_DIR"
    PGPORT="$port"
    PF_PORT="$port"
    PGUSER=postgres
    PGDATABASE=postgres
    export PGHOST PGPORT PGUSER PGDATABASE PF_PORT
}

# pf_cluster_restart [MODE]: restart the server (MODE fast, the default, or
# immediate, which simulates a crash of the whole server).
pf_cluster_restart() {
    local mode="${1:-fast}"
    pf_pg_ctl -m "$mode" -w -t 60 -s stop || return 1
    pf_pg_ctl -l "$PF_LOG" -w -t 60 -s start || {
        pf_cluster_log_tail 100 >&2
        return 1
    }
}

# Stop the cluster this shell started and remove its directory.  Safe to call
# more than once; the EXIT trap calls it.
pf_cluster_stop() {
    local pid i
    [ -n "$_PF_DIR" ] || return 0
    [ "$_PF_OWNER" = "$BASHPID" ] || return 0
    if [ -f "$PF_DATA/postmaster.pid" ]; then
        if ! pf_pg_ctl -m fast -w -t 30 -s stop >/dev/null 2>&1 &&
            ! pf_pg_ctl -m immediate -w -t 30 -s stop >/dev/null 2>&1; then
            pid="$(head -n 1 "$PF_DATA/postmaster.pid" 2>/dev/null || true)"
            if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
                echo "pf_cluster_stop: pg_ctl could not stop postmaster $pid: killing it" >&2
                kill -KILL "$pid" 2>/dev/null || true
                for ((i = 0; i < 50; i++)); do
                    kill -0 "$pid" 2>/dev/null || break
                    sleep 0.1
                done
            fi
        fi
    fi
    if [ "${PF_KEEP_CLUSTER:-0}" = 1 ]; then
        echo "pf_cluster_stop: keeping $_PF_DIR (PF_KEEP_CLUSTER=1)" >&2
    else
        rm -rf "$_PF_DIR"
    fi
    _PF_DIR=""
    _PF_OWNER=""
}

_pf_on_exit_trap() {
    local rc=$? i
    set +e
    trap - EXIT INT TERM HUP
    for ((i = ${#_PF_EXIT_HOOKS[@]} - 1; i >= 0; i--)); do
        eval "${_PF_EXIT_HOOKS[$i]}"
    done
    _PF_EXIT_HOOKS=()
    pf_cluster_stop
    exit "$rc"
}

_pf_on_signal() {
    local sig="$1" code="$2"
    echo "interrupted (SIG$sig): cleaning up" >&2
    exit "$code"
}

_pf_install_traps() {
    trap _pf_on_exit_trap EXIT
    trap '_pf_on_signal INT 130' INT
    trap '_pf_on_signal TERM 143' TERM
    trap '_pf_on_signal HUP 129' HUP
}

_pf_install_traps
_PF_CLUSTER_SH_LOADED=$BASHPID
