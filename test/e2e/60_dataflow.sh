#!/usr/bin/env bash
# test/e2e/60_dataflow.sh -- what flows between stages, end to end with real
# parflow-agent --exec processes.
#
#  1. dataflow: a three-level workflow
#         g1:  a1, a2
#         g2:  b1 (group barrier: a1, a2) and opt (when "optional")
#         g2b: b2 ("depends_on": [] on the group, so that its explicit
#              "depends_on": ["a1"] is all it waits for: a group barrier
#              would make it wait for all of g1)
#         g3:  c1 (group barrier on g2 and g2b, plus "depends_on": ["a2"])
#     run twice at once, without the flag (opt skipped) and with it.  Every
#     stage runs test/e2e/dataflow_check.pl, which checks that the claimed
#     input holds the run's input, EXACTLY the outputs of the stages it
#     depends on (made in this run) under "upstream", and the skipped ones
#     with a reason under "skipped" -- nothing of stages it does not depend
#     on -- and fails the task (max_attempts 1: the run blocks) otherwise.
#     Then parflow_result() and parflow_group_result(run, 'g2') from SQL.
#  2. route-back: impl, and check ("verifies": "impl") failing once with a
#     message on stderr: impl runs again, and its second input carries
#     route_back {verification: "check", error: <check's stderr>}; the
#     second check sees impl's second output; the run succeeds.
#  3. output size: parflow.max_output_size lowered to 1kB (ALTER SYSTEM,
#     reset at exit); a command printing ~6 kB of JSON: the task must not
#     succeed, and the refusal must be visible in the database
#     (parflow_failures / parflow.events), not only in the agent's log.
#     Its sibling with a small output succeeds.
set -u -o pipefail
# shellcheck source=test/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init 60_dataflow 'e2e60%'

e2e_check_idle
CHECKER="$PF_ROOT/test/e2e/dataflow_check.pl"
[ -r "$CHECKER" ] || e2e_die "no checker $CHECKER"
perl -MJSON::PP -e 1 2>/dev/null || e2e_die "perl with JSON::PP (core perl) is needed"

# A run that did not succeed: its state and failure report.
expect_succeeded() {
    local run="$1" what="$2" st
    st="$(e2e_q -c "SELECT state FROM parflow.runs WHERE run = $run")"
    if [ "$st" = succeeded ]; then
        e2e_pass "$what: run $run succeeded"
    else
        e2e_fail "$what: run $run succeeded" "state: $st
failures: $(e2e_q -c "SELECT string_agg(format('%s (%s attempts): %s', f->>'stage', f->>'attempts', f->>'last_error'), E'\\n')
                        FROM jsonb_array_elements(parflow_failures($run)) f")
tasks: $(e2e_q -c "SELECT string_agg(stage || '=' || state || '/' || attempt, ' ' ORDER BY task) FROM parflow.tasks WHERE run = $run")"
    fi
}

# check_same DESC GOT EXPECTED: a check on values computed in the shell.
check_same() {
    if [ "$2" = "$3" ]; then
        e2e_pass "$1 ($2)"
    else
        e2e_fail "$1" "expected: $3
got:      $2"
    fi
}

# The stages whose input the checker saved for RUN, sorted, on one line.
checked_stages() {
    (cd "$E2E_DIR/inputs" && for f in "$1".*.json; do [ -e "$f" ] && echo "${f#"$1".}"; done) |
        sed 's/\.json$//' | sort | tr '\n' ' ' | sed 's/ $//'
}

# json_of FILE: its content as an SQL jsonb literal (NULL when there is no file).
json_of() {
    # shellcheck disable=SC2016 # $j$ is SQL dollar quoting
    if [ -s "$1" ]; then printf '$j$%s$j$::jsonb' "$(cat "$1")"; else echo "NULL::jsonb"; fi
}

# =============================================================================
# 1. dataflow
# =============================================================================
e2e_log "1. dataflow through stage edges, group barriers and a skipped stage"
e2e_define e2e60_flow '{"groups": [
    {"name": "g1", "stages": [
        {"name": "a1", "agent": "e2e60_flow", "estimate": "1 min", "max_attempts": 1},
        {"name": "a2", "agent": "e2e60_flow", "estimate": "1 min", "max_attempts": 1}]},
    {"name": "g2", "stages": [
        {"name": "b1", "agent": "e2e60_flow", "estimate": "1 min", "max_attempts": 1},
        {"name": "opt", "agent": "e2e60_flow", "estimate": "1 min", "max_attempts": 1, "when": "optional"}]},
    {"name": "g2b", "depends_on": [], "stages": [
        {"name": "b2", "agent": "e2e60_flow", "estimate": "1 min", "max_attempts": 1, "depends_on": ["a1"]}]},
    {"name": "g3", "depends_on": ["g2", "g2b"], "stages": [
        {"name": "c1", "agent": "e2e60_flow", "estimate": "1 min", "max_attempts": 1, "depends_on": ["a2"]}]}]}' \
    >/dev/null || e2e_die "define e2e60_flow"
e2e_check_spec_edges "e2e60_flow: the extension's edges are the ones the spec means" e2e60_flow

# What each stage must see, written by hand from the spec above (DESIGN.md:
# group barriers, explicit edges; a skipped stage is listed under "skipped").
cat >"$E2E_DIR/expect.json" <<'JSON'
{"plain": {
    "input": {"case": "plain", "ticket": "E2E-60", "n": 7, "nested": {"k": [1, "two", null]}},
    "stages": {
        "a1": {"upstream": [], "skipped": []},
        "a2": {"upstream": [], "skipped": []},
        "b1": {"upstream": ["a1", "a2"], "skipped": []},
        "b2": {"upstream": ["a1"], "skipped": []},
        "c1": {"upstream": ["a2", "b1", "b2"], "skipped": ["opt"]}}},
 "optional": {
    "input": {"case": "optional", "ticket": "E2E-60-opt"},
    "stages": {
        "a1": {"upstream": [], "skipped": []},
        "a2": {"upstream": [], "skipped": []},
        "b1": {"upstream": ["a1", "a2"], "skipped": []},
        "opt": {"upstream": ["a1", "a2"], "skipped": []},
        "b2": {"upstream": ["a1"], "skipped": []},
        "c1": {"upstream": ["a2", "b1", "b2", "opt"], "skipped": []}}}}
JSON
mkdir -p "$E2E_DIR/inputs"
export E2E60_INPUTS="$E2E_DIR/inputs"
e2e_agent e2e60-flow e2e60_flow --concurrency 3 -q --exec "perl '$CHECKER' '$E2E_DIR/expect.json'"

plain="$(e2e_start "SELECT parflow_start('e2e60_flow', '{}', parallel => true,
            input => '{\"case\": \"plain\", \"ticket\": \"E2E-60\", \"n\": 7, \"nested\": {\"k\": [1, \"two\", null]}}')")" ||
    e2e_die "start e2e60_flow"
withopt="$(e2e_start "SELECT parflow_start('e2e60_flow', '{optional}', parallel => true,
            input => '{\"case\": \"optional\", \"ticket\": \"E2E-60-opt\"}')")" ||
    e2e_die "start e2e60_flow {optional}"
e2e_log "runs $plain {} and $withopt {optional}: $(e2e_wait_runs 30 "$plain" "$withopt")"
expect_succeeded "$plain" "dataflow, opt skipped (every stage's checker accepted its input)"
expect_succeeded "$withopt" "dataflow, opt run (every stage's checker accepted its input)"
check_same "run $plain: the checker ran for each stage that should run, opt not (inputs it saved)" \
    "$(checked_stages "$plain")" "a1 a2 b1 b2 c1"
check_same "run $withopt: the checker ran for each stage" "$(checked_stages "$withopt")" "a1 a2 b1 b2 c1 opt"
e2e_check_once "runs $plain, $withopt: every stage exactly once (opt skipped in $plain)" "{$plain,$withopt}"
e2e_check_deps "runs $plain, $withopt: no stage before its dependencies" "{$plain,$withopt}"

# parflow_result: the whole run.
e2e_check "run $plain: parflow_result() has the run's state, input and every output (none for opt)" "
    WITH x AS (SELECT parflow_result($plain) AS d)
    SELECT jsonb_pretty(d) FROM x
     WHERE NOT (d->>'run' = '$plain' AND d->>'workflow' = 'e2e60_flow' AND d->>'state' = 'succeeded'
                AND d->'input' = '{\"case\": \"plain\", \"ticket\": \"E2E-60\", \"n\": 7, \"nested\": {\"k\": [1, \"two\", null]}}'
                AND d->'outputs' = (SELECT jsonb_object_agg(s, jsonb_build_object('from', s, 'run', $plain))
                                      FROM unnest('{a1,a2,b1,b2,c1}'::text[]) s)
                AND (SELECT string_agg(g->>'group' || ':' || (g->>'state'), ' ' ORDER BY o)
                       FROM jsonb_array_elements(d->'groups') WITH ORDINALITY a(g, o))
                    = 'g1:succeeded g2:succeeded g2b:succeeded g3:succeeded')"
e2e_check "run $withopt: parflow_result() outputs include opt's" "
    WITH x AS (SELECT parflow_result($withopt) AS d)
    SELECT jsonb_pretty(d->'outputs') FROM x
     WHERE d->'outputs' IS DISTINCT FROM (SELECT jsonb_object_agg(s, jsonb_build_object('from', s, 'run', $withopt))
                                            FROM unnest('{a1,a2,b1,b2,c1,opt}'::text[]) s)"
# parflow_group_result: one group, with the skipped stage and its reason.
e2e_check "run $plain: parflow_group_result(run, 'g2') = g2 succeeded, b1's output, opt skipped with its reason" "
    WITH x AS (SELECT parflow_group_result($plain, 'g2') AS d)
    SELECT jsonb_pretty(d) FROM x
     WHERE NOT (d->>'group' = 'g2' AND d->>'state' = 'succeeded'
                AND d->'stages' = '{\"b1\": \"succeeded\", \"opt\": \"skipped\"}'
                AND d->'outputs' = jsonb_build_object('b1', jsonb_build_object('from', 'b1', 'run', $plain))
                AND (SELECT array_agg(k) FROM jsonb_object_keys(d->'skipped') k) = '{opt}'
                AND d->'skipped'->>'opt' LIKE '%optional%')"
e2e_check "run $withopt: parflow_group_result(run, 'g2') = both outputs, nothing skipped" "
    WITH x AS (SELECT parflow_group_result($withopt, 'g2') AS d)
    SELECT jsonb_pretty(d) FROM x
     WHERE NOT (d->>'state' = 'succeeded' AND d->'stages' = '{\"b1\": \"succeeded\", \"opt\": \"succeeded\"}'
                AND d->'outputs' = jsonb_build_object('b1', jsonb_build_object('from', 'b1', 'run', $withopt),
                                                      'opt', jsonb_build_object('from', 'opt', 'run', $withopt))
                AND d->'skipped' = '{}')"
# The checker itself must be able to fail: feed it a wrong input by hand.
bad_out="$(printf '%s' '{"case": "plain", "ticket": "E2E-60", "n": 7, "nested": {"k": [1, "two", null]},
                         "upstream": {"a1": {"from": "a1", "run": 1}, "a2": {"from": "a2", "run": 1}}}' |
           PARFLOW_STAGE=b2 PARFLOW_RUN=1 E2E60_INPUTS='' perl "$CHECKER" "$E2E_DIR/expect.json" 2>&1)"
bad_rc=$?
if [ "$bad_rc" -eq 1 ] && grep -q 'upstream has "a2", which b2 does not depend on' <<<"$bad_out"; then
    e2e_pass "the checker rejects an input with a stage it does not depend on (exit 1, the difference on stderr)"
else
    e2e_fail "the checker rejects an input with a stage it does not depend on (exit 1, the difference on stderr)" \
        "exit $bad_rc: $bad_out"
fi

# =============================================================================
# 2. route-back: the second attempt sees the verification's failure
# =============================================================================
e2e_log "2. route-back"
e2e_define e2e60_route '{"groups": [{"name": "work", "stages": [
    {"name": "impl", "agent": "e2e60_impl", "estimate": "1 min", "max_attempts": 1},
    {"name": "check", "agent": "e2e60_check", "estimate": "1 min", "max_attempts": 1, "verifies": "impl"}]}]}' \
    >/dev/null || e2e_die "define e2e60_route"
mkdir -p "$E2E_DIR/route"
export E2E60_ROUTE="$E2E_DIR/route"
# impl: records its input (one file per time it runs), outputs its round.
# check: records its input; fails the first time, passes afterwards.
# shellcheck disable=SC2016 # expanded by the agent's /bin/sh
e2e_agent e2e60-impl e2e60_impl -q --exec '
    n=$(($(ls "$E2E60_ROUTE" | grep -c "^impl\.") + 1))
    cat >"$E2E60_ROUTE/impl.$n.json"
    echo "{\"round\": $n}"'
# shellcheck disable=SC2016
e2e_agent e2e60-check e2e60_check -q --exec '
    n=$(($(ls "$E2E60_ROUTE" | grep -c "^check\.") + 1))
    cat >"$E2E60_ROUTE/check.$n.json"
    if [ "$n" = 1 ]; then
        echo "unit tests: 3 of 12 failed (test_parse_empty, test_overflow, test_utf8)" >&2
        exit 1
    fi
    echo "{\"passed\": 12, \"round\": $n}"'
route="$(e2e_start "SELECT parflow_start('e2e60_route', parallel => true, input => '{\"ticket\": \"E2E-60-rb\"}')")" ||
    e2e_die "start e2e60_route"
e2e_log "run $route: $(e2e_wait_run "$route" 30)"
expect_succeeded "$route" "route-back"
check_same "run $route: impl ran twice, check twice (inputs recorded by the commands)" \
    "$(cd "$E2E_DIR/route" && printf '%s\n' * | sort | tr '\n' ' ' | sed 's/ $//')" "check.1.json check.2.json impl.1.json impl.2.json"
e2e_check_eq "run $route: impl's events (claimed twice, routed back once in between)" \
    "SELECT string_agg(kind, ',' ORDER BY id) FROM parflow.event
      WHERE task_id = (SELECT task FROM parflow.tasks WHERE run = $route AND stage = 'impl')" \
    "ready,dispatched,running,succeeded,routed_back,dispatched,running,succeeded"
in1="$(json_of "$E2E_DIR/route/impl.1.json")"
in2="$(json_of "$E2E_DIR/route/impl.2.json")"
e2e_check "run $route: impl's first input is the run's input, no upstream, no route_back" "
    SELECT coalesce($in1::text, 'no input recorded') WHERE $in1 IS DISTINCT FROM '{\"ticket\": \"E2E-60-rb\", \"upstream\": {}}'"
e2e_check "run $route: impl's second input has route_back.verification = check and check's stderr as route_back.error" "
    SELECT coalesce(jsonb_pretty($in2), 'no input recorded')
     WHERE NOT coalesce($in2->>'ticket' = 'E2E-60-rb'
                        AND $in2->'route_back'->>'verification' = 'check'
                        AND strpos($in2->'route_back'->>'error',
                                   'unit tests: 3 of 12 failed (test_parse_empty, test_overflow, test_utf8)') > 0, false)"
e2e_check "run $route: the second check saw impl's second output" "
    SELECT coalesce(jsonb_pretty(j), 'no input recorded') FROM (SELECT $(json_of "$E2E_DIR/route/check.2.json") AS j) x
     WHERE j->'upstream' IS DISTINCT FROM '{\"impl\": {\"round\": 2}}'"
e2e_check_eq "run $route: final outputs (impl's second, check's pass)" \
    "SELECT parflow_result($route)->'outputs'" '{"impl": {"round": 2}, "check": {"round": 2, "passed": 12}}'
e2e_check_eq "run $route: nothing failed" "SELECT parflow_failures($route)" "[]"

# =============================================================================
# 3. parflow.max_output_size end to end
# =============================================================================
e2e_log "3. an output over parflow.max_output_size"
# shellcheck disable=SC2317 # run at exit, through pf_on_exit
restore_output_size() {
    e2e_q -c "ALTER SYSTEM RESET parflow.max_output_size" -c "SELECT pg_reload_conf()" >/dev/null ||
        echo "could not reset parflow.max_output_size" >&2
}
pf_on_exit restore_output_size
e2e_q -c "ALTER SYSTEM SET parflow.max_output_size = '1kB'" -c "SELECT pg_reload_conf()" >/dev/null ||
    e2e_die "ALTER SYSTEM SET parflow.max_output_size"
pf_wait_for "SELECT pg_size_bytes(current_setting('parflow.max_output_size')) = 1024" 10 ||
    e2e_die "parflow.max_output_size did not become 1kB"
e2e_define e2e60_big '{"groups": [{"name": "g", "stages": [
    {"name": "big", "agent": "e2e60_big", "estimate": "1 min", "max_attempts": 1},
    {"name": "small", "agent": "e2e60_big", "estimate": "1 min", "max_attempts": 1}]}]}' \
    >/dev/null || e2e_die "define e2e60_big"
# big: {"blob": "<6000 hex digits>"}, well over 1 kB (and under the agent's
# own stdout limit); small: a few bytes.  The lease is short so that a task
# whose report the agent dropped comes back quickly.
# shellcheck disable=SC2016
e2e_agent e2e60-big e2e60_big --concurrency 2 --lease '2 s' --exec '
    if [ "$PARFLOW_STAGE" = big ]; then
        perl -e "print q({\"blob\": \"), join(q(), map { sprintf q(%04x), \$_ } 1 .. 1500), qq(\"}\n)"
    else
        echo "{\"small\": true}"
    fi'
big="$(e2e_start "SELECT parflow_start('e2e60_big', parallel => true)")" || e2e_die "start e2e60_big"
e2e_log "run $big: $(e2e_wait_run "$big" 30)"
big_task="$(e2e_q -c "SELECT task FROM parflow.tasks WHERE run = $big AND stage = 'big'")"
e2e_check_eq "run $big: the big output was never accepted (succeeded events, task succeeded or with an output)" \
    "SELECT (SELECT count(*) FROM parflow.event WHERE task_id = $big_task AND kind = 'succeeded') || ','
            || (SELECT count(*) FROM parflow.task WHERE id = $big_task AND (state = 'succeeded' OR output IS NOT NULL))" \
    "0,0"
e2e_check_eq "run $big: the small sibling succeeded with its output" \
    "SELECT parflow_group_result($big, 'g')->'outputs'->'small'" '{"small": true}'
e2e_expect_run "$big" blocked
if grep -q 'too large' "$E2E_DIR/e2e60-big.log"; then
    e2e_pass "run $big: parflow_complete refused the output (the agent logged: $(grep -o 'could not report.*' "$E2E_DIR/e2e60-big.log" | head -n 1 | cut -c1-160))"
else
    e2e_fail "run $big: parflow_complete refused the output (the agent logged it)" "$(cat "$E2E_DIR/e2e60-big.log")"
fi
e2e_check_true "run $big: the refusal (output too large / max_output_size) is in parflow_failures or parflow.events" "
    SELECT parflow_failures($big)::text ~* 'too large|max_output_size'
           OR EXISTS (SELECT FROM parflow.events WHERE run = $big AND detail::text ~* 'too large|max_output_size'),
           'parflow_failures: ' || (SELECT string_agg(format('%s attempt %s: %s', f->>'stage', e->>'attempt', e->>'error'), '; ')
                                     FROM jsonb_array_elements(parflow_failures($big)) f, jsonb_array_elements(f->'errors') e)"
restore_output_size
e2e_finish
