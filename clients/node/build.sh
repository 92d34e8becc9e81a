#!/usr/bin/env bash
# clients/node/build.sh -- install the node client's packages from its lockfile
# (npm ci, only when package-lock.json changed since the last install) and
# build it (types generated from schema/workflow.schema.json, then tsc into
# dist/).  Used by test/run.sh, `make demo-node` and the client benchmark.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
command -v node >/dev/null 2>&1 || { echo "clients/node: node is not installed (test/bootstrap.sh installs it)" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "clients/node: npm is not installed (test/bootstrap.sh installs it)" >&2; exit 1; }
stamp=node_modules/.parflow-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    timeout -k 5 300 npm ci --no-audit --no-fund --loglevel=error
    echo "$want" >"$stamp"
fi
npm run --silent build
