#!/usr/bin/env bash
# test/e2e/66_map.sh -- a map stage with the dispatcher and real agents.
#
# research (an --exec agent) splits the work into 30 subtasks (the run's
# input says how many); impl maps over them (max 100): 30 instances, served
# by two agents (one claiming in batches and reporting with
# parflow_complete_many, one complete-and-claim), each instance reading its
# element and index from its input; the workflow's cap of 3 bounds the
# instances; merge sees the 30 outputs in index order.  Every instance runs
# once.  A run with 0 subtasks succeeds (impl's output []), one with 150
# blocks with a clear report, one whose research gives no array too; they
# make no instance.
set -u -o pipefail
# shellcheck source=test/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init 66_map 'e2e_map%'

e2e_define e2e_map '{"max_parallel": 3, "groups": [
    {"name": "plan", "stages": [{"name": "research", "agent": "e2e66_r", "estimate": "5 min"}]},
    {"name": "work", "stages": [{"name": "impl", "agent": "e2e66_i", "estimate": "10 min",
                                 "map": {"over": "research", "key": "subtasks", "max": 100, "expect": 30}}]},
    {"name": "done", "stages": [{"name": "merge", "agent": "e2e66_m", "estimate": "5 min"}]}]}' >/dev/null ||
    e2e_die "define"

py='/usr/bin/python3 -c'
e2e_agent e2e66-r e2e66_r --exec "$py 'import json, sys; d = json.load(sys.stdin); n = d.get(\"n\", 30); print(json.dumps({\"subtasks\": [\"s\" + str(i) for i in range(n)] if n >= 0 else \"none\"}))'"
# (each instance takes 0.1 s, so that the cap is reached)
work="$py 'import json, sys, time; d = json.load(sys.stdin); time.sleep(0.1); print(json.dumps({\"done\": d[\"item\"], \"index\": d[\"index\"]}))'"
e2e_agent e2e66-i1 e2e66_i --exec "$work" --batch 3
e2e_agent e2e66-i2 e2e66_i --exec "$work"
e2e_agent e2e66-m e2e66_m --exec "$py 'import json, sys; d = json.load(sys.stdin); print(json.dumps({\"got\": [x[\"done\"] for x in d[\"upstream\"][\"impl\"]]}))'"
sleep 0.3

run="$(e2e_start "SELECT parflow_start('e2e_map', parallel => true)")" || e2e_die "start"
e2e_log "run $run: $(e2e_wait_run "$run" 40)"
e2e_expect_run "$run" succeeded
e2e_check_eq "impl: 30 instances, items 0..29, each dispatched and done once" "
    SELECT count(*) || ' ' || min(t.item) || '..' || max(t.item)
      FROM parflow.tasks t WHERE t.run = $run AND t.stage = 'impl' AND t.item IS NOT NULL
       AND (SELECT count(*) FILTER (WHERE e.kind = 'dispatched') || ' ' || count(*) FILTER (WHERE e.kind = 'succeeded')
              FROM parflow.event e WHERE e.task_id = t.task) = '1 1'" "30 0..29"
e2e_check_eq "each instance read its element and index" "
    SELECT bool_and(tk.output = jsonb_build_object('done', tk.map_item, 'index', tk.item))
      FROM parflow.task tk WHERE tk.run_id = $run AND tk.item IS NOT NULL" t
e2e_check_eq "both agents worked instances (batch and one at a time)" "
    SELECT count(DISTINCT t.worker) FROM parflow.tasks t WHERE t.run = $run AND t.item IS NOT NULL" 2
e2e_check_cap "impl instances under the workflow's cap" "t.run_id = $run" 3 2
e2e_check_eq "merge saw the 30 outputs in index order" "
    SELECT tk.output -> 'got' = (SELECT jsonb_agg('s' || i ORDER BY i) FROM generate_series(0, 29) i)
      FROM parflow.task tk JOIN parflow.tasks t ON t.task = tk.id WHERE t.run = $run AND t.stage = 'merge'" t
e2e_check_eq "merge started after the last instance ended" "
    SELECT (SELECT started_at FROM parflow.tasks WHERE run = $run AND stage = 'merge')
           >= (SELECT max(finished_at) FROM parflow.tasks WHERE run = $run AND item IS NOT NULL)" t

empty="$(e2e_start "SELECT parflow_start('e2e_map', parallel => true, input => '{\"n\": 0}')")" || e2e_die "start empty"
e2e_log "run $empty: $(e2e_wait_run "$empty" 30)"
e2e_expect_run "$empty" succeeded
e2e_check_eq "0 subtasks: impl succeeded with [], merge saw []" "
    SELECT (SELECT output::text FROM parflow.task WHERE run_id = $empty AND stage_ord = 1 AND item IS NULL) || ' '
           || (SELECT tk.output ->> 'got' FROM parflow.task tk JOIN parflow.tasks t ON t.task = tk.id
                WHERE t.run = $empty AND t.stage = 'merge')" "[] []"
big="$(e2e_start "SELECT parflow_start('e2e_map', parallel => true, input => '{\"n\": 150}')")" || e2e_die "start big"
e2e_log "run $big: $(e2e_wait_run "$big" 30)"
e2e_expect_run "$big" blocked
e2e_check_eq "150 subtasks: the failure report says why" "
    SELECT string_agg(f ->> 'stage' || ': ' || (f ->> 'last_error'), ', ') FROM jsonb_array_elements(parflow_failures($big)) f" \
    'impl: map stage "impl": stage "research" gave 150 elements at key "subtasks", more than its limit of 100'
run2="$(e2e_start "SELECT parflow_start('e2e_map', parallel => true, input => '{\"n\": -1}')")" || e2e_die "start 2"
e2e_log "run $run2: $(e2e_wait_run "$run2" 30)"
e2e_expect_run "$run2" blocked
e2e_check_eq "no array: the map stage failed, saying why" "
    SELECT t.state || ': ' || tk.error FROM parflow.tasks t JOIN parflow.task tk ON tk.id = t.task
     WHERE t.run = $run2 AND t.stage = 'impl'" \
    'failed: map stage "impl": the output of stage "research" at key "subtasks" is a string, not an array'
e2e_check_eq "no instance was made for 0, 150 or no array" "
    SELECT count(*) FROM parflow.tasks WHERE run IN ($empty, $big, $run2) AND item IS NOT NULL" 0
e2e_finish
