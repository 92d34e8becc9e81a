#!/usr/bin/env bash
# test/demo_client.sh node|python -- what `make demo-node` and `make
# demo-python` run, once parflow is installed: a throwaway cluster, then the
# client's SDLC example (clients/node/examples/sdlc.ts,
# clients/python/examples/sdlc.py): its ten agents as handlers of one worker,
# one parallel and one sequential run, and the savings realised.
set -euo pipefail
lang="${1:?usage: test/demo_client.sh node|python}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=test/cluster.sh
source test/cluster.sh
cd "$PF_ROOT"
unset MAKEFLAGS MFLAGS MAKELEVEL

pf_cluster_start "parflow.learn_min_runs = 0"
pf_psql -q -c "SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS parflow"
export PF_DEMO_MS_PER_MIN="${PF_DEMO_MS_PER_MIN:-10}"
case "$lang" in
    node)
        bash clients/node/build.sh
        node clients/node/dist/examples/sdlc.js ;;
    python)
        PYTHONPATH="$PF_ROOT/clients/python" /usr/bin/python3 clients/python/examples/sdlc.py ;;
    *) echo "test/demo_client.sh: node or python, not $lang" >&2; exit 2 ;;
esac
