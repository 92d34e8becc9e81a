#!/usr/bin/env bash
# test/e2e/20_random_dag.sh -- a random workflow of 200+ stages (fixed seed)
# run end to end by real agents with --concurrency.
#
# The workflow: 10 groups (two of them "parallel": false, one independent
# "depends_on": [], one waiting for two earlier groups, the others waiting
# for the group before them or for a random set of earlier groups), 4 agent
# kinds, random explicit stage dependencies, artifacts (produces/consumes),
# conditional stages on flags fx and fy, workflow max_parallel 3, an
# affinity rule {e2e20_c, e2e20_d} max_concurrent 2.
#
# Two runs at once (flags {fx} and {fx,fy}).  Checks: the extension's edges
# are the ones the spec means; both runs succeed; every stage exactly once
# (skipped ones never); no stage dispatched before its dependencies
# succeeded; never more than parflow.max_parallel_stages tasks at work in
# all, 3 per run, 2 of the affinity rule per run, 1 per sequential group.
set -u -o pipefail
# shellcheck source=test/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init 20_random_dag 'e2e_random_dag'

SCALE=0.0001          # 1 estimated minute = 6 ms
WF=e2e_random_dag
GLOBAL_CAP="$(e2e_q -c "SHOW parflow.max_parallel_stages")"
e2e_check_idle
mark="$(e2e_event_mark)"

# The generator: PL/pgSQL with a fixed seed (every edge points to an earlier
# stage or group, so the graph is acyclic).
e2e_q >/dev/null <<SQL || e2e_die "define $WF"
DO \$gen\$
DECLARE
    kinds  text[] := ARRAY['e2e20_a', 'e2e20_a', 'e2e20_a', 'e2e20_b', 'e2e20_b', 'e2e20_c', 'e2e20_d'];
    groups jsonb := '[]';
    stages jsonb;
    names  text[] := '{}';
    arts   text[] := '{}';
    st     jsonb;
    gd     jsonb;
    deps   text[];
    n      int;
    k      int;
BEGIN
    PERFORM setseed(0.2025);
    FOR gi IN 0..9 LOOP
        n := CASE gi WHEN 0 THEN 10 WHEN 3 THEN 8 WHEN 7 THEN 6 ELSE 21 + floor(random() * 12)::int END;
        stages := '[]';
        FOR si IN 0..n - 1 LOOP
            st := jsonb_build_object('name', format('s%s_%s', lpad(gi::text, 2, '0'), lpad(si::text, 2, '0')),
                                     'agent', kinds[1 + floor(random() * cardinality(kinds))::int],
                                     'estimate', (1 + floor(random() * 10)::int) || ' min');
            IF random() < 0.08 THEN
                st := st || '{"when": "fx"}';
            ELSIF random() < 0.09 THEN
                st := st || '{"when": "fy"}';
            END IF;
            IF cardinality(names) > 0 AND random() < 0.3 THEN
                deps := '{}';
                FOR k IN 1..1 + floor(random() * 2)::int LOOP
                    deps := deps || names[1 + floor(random() * cardinality(names))::int];
                END LOOP;
                st := st || jsonb_build_object('depends_on', (SELECT jsonb_agg(DISTINCT d) FROM unnest(deps) d));
            END IF;
            IF cardinality(arts) > 0 AND random() < 0.08 THEN
                st := st || jsonb_build_object('consumes', jsonb_build_array(arts[1 + floor(random() * cardinality(arts))::int]));
            END IF;
            IF random() < 0.06 THEN
                arts := arts || format('art%s', cardinality(arts));
                st := st || jsonb_build_object('produces', jsonb_build_array(arts[cardinality(arts)]));
            END IF;
            stages := stages || jsonb_build_array(st);
            names := names || (st->>'name');
        END LOOP;
        gd := NULL;
        IF gi = 5 THEN
            gd := '[]';                                  -- independent
        ELSIF gi = 8 THEN
            gd := '["g02", "g06"]';
        ELSIF gi > 1 AND random() < 0.6 THEN
            SELECT jsonb_agg(format('g%s', lpad(j::text, 2, '0')) ORDER BY j) INTO gd
              FROM generate_series(0, gi - 1) j WHERE random() < 0.35 OR j = gi - 2;
        END IF;
        groups := groups || jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
            'name', format('g%s', lpad(gi::text, 2, '0')),
            'parallel', gi NOT IN (3, 7),
            'depends_on', gd,
            'stages', stages)));
    END LOOP;
    PERFORM parflow_define('$WF', jsonb_build_object(
        'max_parallel', 3,
        'groups', groups,
        'affinity', '[{"agents": ["e2e20_c", "e2e20_d"], "max_concurrent": 2}]'::jsonb));
END
\$gen\$;
SQL

e2e_log "$(e2e_q -c "SELECT format('%s: %s stages in %s groups, %s stage edges, %s group barriers, kinds %s',
                        w.name, (SELECT count(*) FROM parflow.stage s WHERE s.version_id = v.id),
                        (SELECT count(*) FROM parflow.stage_group g WHERE g.version_id = v.id),
                        (SELECT count(*) FROM parflow.stage_dep d WHERE d.version_id = v.id),
                        (SELECT count(*) FROM parflow.group_dep d WHERE d.version_id = v.id),
                        (SELECT string_agg(agent || '=' || c, ' ' ORDER BY agent) FROM
                            (SELECT agent, count(*) c FROM parflow.stage s WHERE s.version_id = v.id GROUP BY 1) x))
                   FROM parflow.workflow w JOIN parflow.workflow_version v ON v.workflow_id = w.id
                  WHERE w.name = '$WF' ORDER BY v.version DESC LIMIT 1")"
e2e_check_true "$WF has 200+ stages, sequential groups, conditional stages, artifacts" "
    SELECT count(*) >= 200 AND count(*) FILTER (WHERE s.when_flag = 'fx') > 0
           AND count(*) FILTER (WHERE s.when_flag = 'fy') > 0 AND count(*) FILTER (WHERE s.consumes <> '{}') > 0
           AND (SELECT count(*) FROM parflow.stage_group g WHERE g.version_id = v.id AND NOT g.parallel) = 2,
           count(*) || ' stages'
      FROM parflow.stage s JOIN parflow.workflow_version v ON v.id = s.version_id
      JOIN parflow.workflow w ON w.id = v.workflow_id
     WHERE w.name = '$WF' AND v.version = (SELECT max(version) FROM parflow.workflow_version x WHERE x.workflow_id = w.id)
     GROUP BY v.id"
e2e_check_spec_edges "$WF: the extension's edges are the ones the spec means" "$WF"

e2e_agent e2e20-a1 e2e20_a --simulate "$SCALE" --concurrency 2 -q
e2e_agent e2e20-a2 e2e20_a --simulate "$SCALE" --concurrency 2 -q
e2e_agent e2e20-b1 e2e20_b --simulate "$SCALE" --concurrency 3 -q
e2e_agent e2e20-c1 e2e20_c --simulate "$SCALE" --concurrency 2 -q
e2e_agent e2e20-d1 e2e20_d --simulate "$SCALE" --concurrency 1 -q
e2e_agent e2e20-d2 e2e20_d --simulate "$SCALE" --concurrency 1 -q

t0=$SECONDS
r1="$(e2e_start "SELECT parflow_start('$WF', '{fx}', parallel => true)")" || e2e_die "start run 1"
r2="$(e2e_start "SELECT parflow_start('$WF', '{fx,fy}', parallel => true)")" || e2e_die "start run 2"
e2e_log "runs $r1 {fx} and $r2 {fx,fy}: $(e2e_wait_runs 120 "$r1" "$r2") after $((SECONDS - t0)) s"
e2e_expect_run "$r1" succeeded
e2e_expect_run "$r2" succeeded
e2e_check_eq "runs $r1, $r2: tasks succeeded/skipped as the flags say" \
    "SELECT string_agg(format('%s: %s/%s', run, ok, sk), ', ' ORDER BY run)
       FROM (SELECT run, count(*) FILTER (WHERE state = 'succeeded') ok, count(*) FILTER (WHERE state = 'skipped') sk
               FROM parflow.tasks WHERE run IN ($r1, $r2) GROUP BY run) x" \
    "$(e2e_q -c "SELECT string_agg(format('%s: %s/%s', r, ok, sk), ', ' ORDER BY r)
                   FROM (SELECT x.r, count(*) FILTER (WHERE s.when_flag IS NULL OR s.when_flag = ANY (x.f)) ok,
                                count(*) FILTER (WHERE NOT (s.when_flag IS NULL OR s.when_flag = ANY (x.f))) sk
                           FROM (VALUES ($r1, '{fx}'::text[]), ($r2, '{fx,fy}'::text[])) x(r, f)
                           JOIN parflow.run rn ON rn.id = x.r JOIN parflow.stage s ON s.version_id = rn.version_id
                          GROUP BY x.r) y")"
e2e_check_true "run $r1 passes skipped stages through to their dependents" "
    SELECT count(*) > 0, count(*) || ' skipped stages that others depend on (stage edges or barriers)'
      FROM parflow.task t JOIN parflow.run r ON r.id = t.run_id
     WHERE t.run_id = $r1 AND t.state = 'skipped'
       AND (EXISTS (SELECT FROM parflow.stage_dep d WHERE d.version_id = r.version_id AND d.dep_ord = t.stage_ord)
            OR EXISTS (SELECT FROM parflow.group_dep g WHERE g.version_id = r.version_id AND g.dep_ord = t.group_ord))"
e2e_check_once "runs $r1, $r2: every stage exactly once" "{$r1,$r2}"
e2e_check_deps "runs $r1, $r2: no stage before its dependencies" "{$r1,$r2}"
e2e_check_cap "runs $r1, $r2: parflow.max_parallel_stages" "e.run_id IN ($r1, $r2)" "$GLOBAL_CAP" "$GLOBAL_CAP"
for r in "$r1" "$r2"; do
    e2e_check_cap "run $r: the workflow's max_parallel" "e.run_id = $r" 3 2
    e2e_check_cap "run $r: affinity rule {e2e20_c,e2e20_d}" "e.run_id = $r AND t.agent IN ('e2e20_c', 'e2e20_d')" 2
    for g in 3 7; do
        e2e_check_cap "run $r: sequential group g0$g" "e.run_id = $r AND t.group_ord = $g" 1
    done
done
e2e_check_cap "every task since the start of this script: parflow.max_parallel_stages" \
    "e.id > $mark" "$GLOBAL_CAP"
e2e_log "run $r1: $(e2e_run_seconds "$r1") s, run $r2: $(e2e_run_seconds "$r2") s"
e2e_finish
