#!/usr/bin/env bash
# test/e2e/66_map.sh -- a map stage with the dispatcher and real agents.
#
# research (an --exec agent) splits the work into six subtasks; impl maps
# over them: six instances, served by two agents (one claiming in batches
# and reporting with parflow_complete_many, one complete-and-claim), each
# instance reading its element and index from its input; the workflow's
# cap of 3 bounds the instances; merge sees the six outputs in index
# order.  Every instance runs once.  A second run whose research gives no
# array fails its map stage with the reason, and no instance is made.
set -u -o pipefail
# shellcheck source=test/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init 66_map 'e2e_map%'

e2e_define e2e_map '{"max_parallel": 3, "groups": [
    {"name": "plan", "stages": [{"name": "research", "agent": "e2e66_r", "estimate": "5 min"}]},
    {"name": "work", "stages": [{"name": "impl", "agent": "e2e66_i", "estimate": "10 min",
                                 "map": {"over": "research", "key": "subtasks", "max": 10, "expect": 6}}]},
    {"name": "done", "stages": [{"name": "merge", "agent": "e2e66_m", "estimate": "5 min"}]}]}' >/dev/null ||
    e2e_die "define"

py='/usr/bin/python3 -c'
e2e_agent e2e66-r e2e66_r --exec "$py 'import json, sys; d = json.load(sys.stdin); print(json.dumps({\"subtasks\": [\"s\" + str(i) for i in range(d.get(\"n\", 6))]} if d.get(\"n\", 6) else {\"subtasks\": \"none\"}))'"
# (each instance takes 0.3 s, so that the cap is reached)
work="$py 'import json, sys, time; d = json.load(sys.stdin); time.sleep(0.3); print(json.dumps({\"done\": d[\"item\"], \"index\": d[\"index\"]}))'"
e2e_agent e2e66-i1 e2e66_i --exec "$work" --batch 3
e2e_agent e2e66-i2 e2e66_i --exec "$work"
e2e_agent e2e66-m e2e66_m --exec "$py 'import json, sys; d = json.load(sys.stdin); print(json.dumps({\"got\": [x[\"done\"] for x in d[\"upstream\"][\"impl\"]]}))'"
sleep 0.3

run="$(e2e_start "SELECT parflow_start('e2e_map', parallel => true)")" || e2e_die "start"
e2e_log "run $run: $(e2e_wait_run "$run" 40)"
e2e_expect_run "$run" succeeded
e2e_check_eq "impl: six instances, items 0..5, each dispatched and done once" "
    SELECT count(*) || ' ' || string_agg(t.item::text, ',' ORDER BY t.item)
      FROM parflow.tasks t WHERE t.run = $run AND t.stage = 'impl' AND t.item IS NOT NULL
       AND (SELECT count(*) FILTER (WHERE e.kind = 'dispatched') || ' ' || count(*) FILTER (WHERE e.kind = 'succeeded')
              FROM parflow.event e WHERE e.task_id = t.task) = '1 1'" "6 0,1,2,3,4,5"
e2e_check_eq "each instance read its element and index" "
    SELECT bool_and(tk.output = jsonb_build_object('done', tk.map_item, 'index', tk.item))
      FROM parflow.task tk WHERE tk.run_id = $run AND tk.item IS NOT NULL" t
e2e_check_eq "both agents worked instances (batch and one at a time)" "
    SELECT count(DISTINCT t.worker) FROM parflow.tasks t WHERE t.run = $run AND t.item IS NOT NULL" 2
e2e_check_cap "impl instances under the workflow's cap" "t.run_id = $run" 3 2
e2e_check_eq "merge saw the outputs in index order" "
    SELECT tk.output ->> 'got' FROM parflow.task tk JOIN parflow.tasks t ON t.task = tk.id
     WHERE t.run = $run AND t.stage = 'merge'" '["s0", "s1", "s2", "s3", "s4", "s5"]'
e2e_check_eq "merge started after the last instance ended" "
    SELECT (SELECT started_at FROM parflow.tasks WHERE run = $run AND stage = 'merge')
           >= (SELECT max(finished_at) FROM parflow.tasks WHERE run = $run AND item IS NOT NULL)" t

run2="$(e2e_start "SELECT parflow_start('e2e_map', parallel => true, input => '{\"n\": 0}')")" || e2e_die "start 2"
e2e_log "run $run2: $(e2e_wait_run "$run2" 30)"
e2e_expect_run "$run2" blocked
e2e_check_eq "no array: the map stage failed, saying why, and made no instance" "
    SELECT t.state || ': ' || tk.error || ' / ' || (SELECT count(*) FROM parflow.tasks WHERE run = $run2 AND item IS NOT NULL)
      FROM parflow.tasks t JOIN parflow.task tk ON tk.id = t.task WHERE t.run = $run2 AND t.stage = 'impl'" \
    'failed: map stage "impl": the output of stage "research" at key "subtasks" is a string, not an array / 0'
e2e_finish
