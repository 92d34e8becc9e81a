#!/usr/bin/env bash
# test/run.sh -- what `make test` runs, once parflow is built and installed.
#
# Starts a throwaway cluster (test/cluster.sh) and runs, against it:
#   1. the pg_regress suite (`make installcheck`: sql/*.sql against expected/),
#      then the isolation suite (test/isolation/specs/*.spec against
#      test/isolation/expected/, with pg_isolation_regress),
#   2. the pgTAP files test/pgtap/*.sql with pg_prove, in database parflow_tap,
#   3. every executable test/e2e/*.sh, in order, each with the cluster's
#      environment plus PF_ROOT (repository) and PF_BIN (built binaries),
#   4. the clients' suites: every clients/node/test/*.test.ts (built by
#      clients/node/build.sh, run with node --test) and every
#      clients/python/tests/test_*.py (pytest), each file one suite.
# Every suite runs even when an earlier one failed.  The last line is the
# summary "N passed, N failed", N counting suites (one per regression test,
# isolation spec, pgTAP file and e2e script); the exit status is non-zero if
# anything failed.
# The cluster is stopped and removed on every way out.
#
# Knobs: PF_E2E_TIMEOUT (seconds per e2e script, default 600), and those of
# test/cluster.sh (PF_PRELOAD, PF_KEEP_CLUSTER, ...).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=test/cluster.sh
source test/cluster.sh
cd "$PF_ROOT"

# We may run under `make test`: keep its flags and jobserver out of our makes.
unset MAKEFLAGS MFLAGS MAKELEVEL

passed=0
failed=0
failures=()

pass() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); failures+=("$1"); }

summary() {
    if [ "$failed" -ne 0 ]; then
        echo
        echo "failed: ${failures[*]}"
        pf_cluster_log_tail 60
    fi
    echo
    echo "$passed passed, $failed failed"
}

section() { printf '\n==== %s ====\n' "$*"; }

section "cluster"
# shellcheck disable=SC2119 # no extra configuration
if ! pf_cluster_start; then
    fail "cluster-start"
    summary
    exit 1
fi
echo "server on port $PGPORT, socket and data in $PF_TMP (preload: $PF_PRELOAD)"
work="$PF_TMP/run"
mkdir -p "$work"

shopt -s nullglob

# --- 1. regression and isolation tests (pg_regress, pg_isolation_regress) ---
# `make installcheck` runs both, but stops before the isolation tests when a
# regression test failed: each suite runs in its own make (REGRESS= or
# ISOLATION= on the command line switches the other off).  Both print one
# "test NAME ... ok|FAILED" line per test, counted here.
#   run_installcheck LABEL DIFFS MAKE-ARG...
run_installcheck() {
    local label="$1" diffs="$2" out rc ok bad
    shift 2
    out="$work/$label.out"
    set +e
    make -C "$PF_ROOT" --no-print-directory PG_CONFIG="$PG_CONFIG" installcheck "$@" 2>&1 |
        tee "$out"
    rc=${PIPESTATUS[0]}
    set -e
    ok=$(grep -Ec '^(test)? +[^ ]+ +\.\.\. +(ok|failed \(ignored\))' "$out" || true)
    bad=$(grep -Ec '^(test)? +[^ ]+ +\.\.\. +FAILED' "$out" || true)
    passed=$((passed + ok))
    failed=$((failed + bad))
    if [ "$bad" -gt 0 ]; then
        failures+=("$label($bad)")
    fi
    if [ "$rc" -ne 0 ]; then
        if [ -f "$diffs" ]; then
            echo "---- $diffs ----"
            cat "$diffs"
            echo "---- end of $diffs ----"
        fi
        # the tool failed without reporting a failed test: count it.
        if [ "$bad" -eq 0 ]; then
            fail "$label(exit $rc)"
        fi
    fi
}

section "regression (pg_regress)"
regress_sql=()
for f in sql/*.sql; do
    case "$f" in sql/parflow--*) ;; *) regress_sql+=("$f") ;; esac
done
if [ "${#regress_sql[@]}" -eq 0 ]; then
    echo "no regression tests yet (sql/*.sql besides the extension scripts): skipped"
else
    run_installcheck regression regression.diffs ISOLATION=
fi

section "isolation (pg_isolation_regress)"
iso_specs=(test/isolation/specs/*.spec)
if [ "${#iso_specs[@]}" -eq 0 ]; then
    echo "no isolation tests yet (test/isolation/specs/*.spec): skipped"
else
    run_installcheck isolation output_iso/regression.diffs REGRESS=
fi

# --- 2. pgTAP (pg_prove) ------------------------------------------------------
section "pgTAP (pg_prove)"
tap_files=(test/pgtap/*.sql)
if [ "${#tap_files[@]}" -eq 0 ]; then
    echo "no pgTAP tests yet (test/pgtap/*.sql): skipped"
else
    set +e
    {
        pf_psql -q -c 'CREATE DATABASE parflow_tap' &&
            pf_psql -q -d parflow_tap -c 'CREATE EXTENSION pgtap'
    } 2>&1
    setup_rc=$?
    if [ "$setup_rc" -eq 0 ]; then
        pg_prove --psql-bin "$PG_BIN/psql" -d parflow_tap "${tap_files[@]}" \
            </dev/null 2>&1 | tee "$work/pgtap.out"
        prove_rc=${PIPESTATUS[0]}
    fi
    set -e
    if [ "$setup_rc" -ne 0 ]; then
        echo "could not set up database parflow_tap"
        failed=$((failed + ${#tap_files[@]}))
        failures+=("pgtap-setup")
    else
        # Files that failed are listed in the "Test Summary Report" section:
        #   test/pgtap/x.sql (Wstat: 0 Tests: 3 Failed: 1)
        bad=0
        for f in "${tap_files[@]}"; do
            if grep -qF -- "$f (Wstat:" "$work/pgtap.out"; then
                bad=$((bad + 1))
                failures+=("$f")
            fi
        done
        if [ "$prove_rc" -ne 0 ] && [ "$bad" -eq 0 ]; then
            # pg_prove failed without naming a file: count them all as failed.
            bad=${#tap_files[@]}
            failures+=("pg_prove(exit $prove_rc)")
        fi
        failed=$((failed + bad))
        passed=$((passed + ${#tap_files[@]} - bad))
    fi
fi

# --- 3. end-to-end scripts ----------------------------------------------------
section "end-to-end (test/e2e)"
e2e_scripts=()
for f in test/e2e/*.sh; do
    if [ -x "$f" ]; then
        e2e_scripts+=("$f")
    else
        echo "$f: not executable, not run (a helper?)"
    fi
done
if [ "${#e2e_scripts[@]}" -eq 0 ]; then
    echo "no end-to-end tests yet (executable test/e2e/*.sh): skipped"
fi
for f in "${e2e_scripts[@]}"; do
    echo "---- $f"
    start=$SECONDS
    set +e
    timeout --kill-after=10 "${PF_E2E_TIMEOUT:-600}" "./$f" </dev/null
    rc=$?
    set -e
    if [ "$rc" -eq 0 ]; then
        echo "---- $f ... ok ($((SECONDS - start)) s)"
        pass
    else
        [ "$rc" -eq 124 ] && echo "$f: timed out after ${PF_E2E_TIMEOUT:-600} s"
        echo "---- $f ... FAILED (exit $rc, $((SECONDS - start)) s)"
        fail "$f"
    fi
done

# --- 4. the clients ---------------------------------------------------------
# run_client LABEL CMD...: one suite, passed when CMD exits 0.
run_client() {
    local label="$1" start=$SECONDS rc
    shift
    echo "---- $label"
    set +e
    timeout --kill-after=10 "${PF_CLIENT_TIMEOUT:-300}" "$@" </dev/null
    rc=$?
    set -e
    if [ "$rc" -eq 0 ]; then
        echo "---- $label ... ok ($((SECONDS - start)) s)"
        pass
    else
        echo "---- $label ... FAILED (exit $rc, $((SECONDS - start)) s)"
        fail "$label"
    fi
}

section "clients: node (node --test)"
node_tests=(clients/node/test/*.test.ts)
if [ "${#node_tests[@]}" -eq 0 ]; then
    echo "no node client tests: skipped"
elif ! bash clients/node/build.sh 2>&1; then
    echo "could not build clients/node"
    failed=$((failed + ${#node_tests[@]}))
    failures+=("clients/node(build)")
else
    for f in "${node_tests[@]}"; do
        js="clients/node/dist/test/$(basename "$f" .ts).js"
        run_client "$f" node --test --test-reporter=spec "$js"
    done
fi

section "clients: python (pytest)"
py_tests=(clients/python/tests/test_*.py)
if [ "${#py_tests[@]}" -eq 0 ]; then
    echo "no python client tests: skipped"
else
    for f in "${py_tests[@]}"; do
        # from clients/python: the repository's root holds parflow.so, which
        # python would import as the package parflow
        run_client "$f" env -C "$PF_ROOT/clients/python" PYTHONPATH="$PF_ROOT/clients/python" \
            /usr/bin/python3 -m pytest -q -p no:cacheprovider "tests/$(basename "$f")"
    done
fi

# --- server health ------------------------------------------------------------
# A backend or worker that crashed while the tests still passed is a failure.
if grep -Eq 'terminated by signal (6|7|8|11)|PANIC:|TRAP:' "$PF_LOG" 2>/dev/null; then
    section "server log"
    echo "the server log shows a crash:"
    grep -E 'terminated by signal (6|7|8|11)|PANIC:|TRAP:' "$PF_LOG" | head -n 20
    fail "server-crash"
fi

summary
[ "$failed" -eq 0 ]
