#!/usr/bin/env bash
# test/bootstrap.sh -- install what building and testing parflow needs.
#
# Checks the Debian packages (PostgreSQL 15 server and headers, pg_cron, pgTAP
# and pg_prove, pg_auto_failover for test/e2e/96_auto_failover.sh, a C
# toolchain and libpq, Node.js and npm, and psycopg 3, pytest and jsonschema
# for the system python3) and installs only the missing ones,
# with a single `apt-get update` first.  When everything is present it touches
# neither apt nor the network and returns at once.  Needs root, or sudo.
set -euo pipefail

pg_major="${PG_MAJOR:-15}"
packages=(
    "postgresql-${pg_major}"
    "postgresql-server-dev-${pg_major}"
    "postgresql-${pg_major}-cron"
    "postgresql-${pg_major}-pgtap"
    "postgresql-${pg_major}-auto-failover"
    libtap-parser-sourcehandler-pgtap-perl
    libpq-dev
    python3-psycopg
    python3-pytest
    python3-jsonschema
)
# Tools that may also come from outside dpkg: a command on PATH is enough.
# node and npm (the node client, the peers of the benchmarks) may come from
# another packaging of Node.js than Debian's.
declare -A tool_package=([make]=make [gcc]=gcc [pkg-config]=pkg-config [node]=nodejs [npm]=npm)

installed() {
    dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: this script installs packages with apt (Debian 12); on another" >&2
    echo "bootstrap: system install PostgreSQL ${pg_major} with server headers, pg_cron," >&2
    echo "bootstrap: pgTAP and pg_prove yourself, then pass PG_CONFIG=/path/to/pg_config." >&2
    exit 1
fi

missing=()
for p in "${packages[@]}"; do
    installed "$p" || missing+=("$p")
done
for tool in "${!tool_package[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${tool_package[$tool]}")
done

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "bootstrap: missing packages: ${missing[*]}" >&2
    echo "bootstrap: installing them needs root; run this as root or install sudo:" >&2
    echo "bootstrap:   apt-get install -y ${missing[*]}" >&2
    exit 1
fi

echo "bootstrap: installing ${missing[*]}"
apt_env=(env DEBIAN_FRONTEND=noninteractive)
"${as_root[@]}" "${apt_env[@]}" apt-get update -q
"${as_root[@]}" "${apt_env[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"

# Check the result rather than trusting apt's exit status alone.
still=()
for p in "${packages[@]}"; do
    installed "$p" || still+=("$p")
done
if [ "${#still[@]}" -ne 0 ]; then
    echo "bootstrap: still missing after apt-get: ${still[*]}" >&2
    exit 1
fi
echo "bootstrap: done"
