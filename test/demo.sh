#!/usr/bin/env bash
# test/demo.sh -- what `make demo` runs, once parflow is built and installed.
#
# Starts a throwaway cluster (test/cluster.sh), plays test/demo/sdlc.sql in
# it with psql, and stops the cluster again, on every way out.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=test/cluster.sh
source test/cluster.sh
cd "$PF_ROOT"

demo_sql=test/demo/sdlc.sql
if [ ! -f "$demo_sql" ]; then
    echo "demo: $demo_sql is missing" >&2
    exit 1
fi

# shellcheck disable=SC2119 # no extra configuration
pf_cluster_start
echo "demo: server on port $PGPORT (socket $PGHOST)"
if ! pf_psql -f "$demo_sql"; then
    echo "demo: $demo_sql failed" >&2
    pf_cluster_log_tail 40 >&2
    exit 1
fi
