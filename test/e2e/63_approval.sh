#!/usr/bin/env bash
# test/e2e/63_approval.sh -- the seed's workflow with a human approval after
# critique, with the dispatcher and real agents of every kind.
#
# The seed's SDLC workflow (test/demo/sdlc_spec.sql) with a group "signoff"
# after critique: one wait stage, design_signoff, awaiting event
# design_approved.  Three runs: one signalled early (before the stage
# awaits: the signal is kept, and taken the moment it awaits), one
# signalled late (the build waits for the approval), one rejected (the run
# blocks with the reason in its failure report, and nothing after the
# approval starts).  In the two approved runs every agent stage runs once.
set -u -o pipefail
# shellcheck source=test/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init 63_approval 'e2e_appr%'

SCALE=0.0002          # 1 estimated minute = 12 ms
e2e_q -f "$PF_ROOT/test/demo/sdlc_spec.sql" \
    -c "SELECT parflow_define('e2e_appr', jsonb_insert(pg_temp.seed_spec(), '{groups,2}',
          '{\"name\": \"signoff\", \"stages\": [{\"name\": \"design_signoff\", \"estimate\": \"10 min\",
                                              \"wait\": {\"event\": \"design_approved\"}}]}'))" \
    >/dev/null || e2e_die "define e2e_appr"
for kind in research critique backend frontend qa performance security statistics devops documentation; do
    e2e_agent "e2e63-$kind" "$kind" --simulate "$SCALE" --concurrency 2 -q
done
sleep 0.3

# agent_once RUN: every agent stage of RUN dispatched and done once (none listed = ok)
agent_once() {
    e2e_check "run $1: every agent stage dispatched and done once" "
        SELECT t.stage FROM parflow.tasks t WHERE t.run = $1 AND t.agent IS NOT NULL AND t.state <> 'skipped'
           AND (SELECT count(*) FILTER (WHERE e.kind = 'dispatched') || ' ' || count(*) FILTER (WHERE e.kind = 'succeeded')
                  FROM parflow.event e WHERE e.task_id = t.task) <> '1 1'"
}
awaits() {
    pf_wait_for "SELECT state = 'awaiting' FROM parflow.tasks WHERE run = $1 AND stage = 'design_signoff'" 30
}

# --- signalled early -----------------------------------------------------------
early="$(e2e_start "SELECT parflow_start('e2e_appr', parallel => true)")" || e2e_die "start early"
e2e_check_eq "early: the signal finds nothing awaiting and is kept" \
    "SELECT parflow_signal($early, 'design_approved', '{\"by\": \"early\"}')" 0
e2e_log "run $early: $(e2e_wait_run "$early" 60)"
e2e_expect_run "$early" succeeded
e2e_check_eq "early: the kept signal completed the approval as it began to await" "
    SELECT (e.detail ->> 'kept') || ' ' || (tk.output ->> 'by') FROM parflow.event e JOIN parflow.task tk ON tk.id = e.task_id
     JOIN parflow.tasks t ON t.task = tk.id WHERE t.run = $early AND t.stage = 'design_signoff' AND e.kind = 'signalled'" \
    "true early"
e2e_check_eq "early: no signal left kept" "SELECT count(*) FROM parflow.signal WHERE run_id = $early" 0
agent_once "$early"

# --- signalled late ------------------------------------------------------------
late="$(e2e_start "SELECT parflow_start('e2e_appr', parallel => true)")" || e2e_die "start late"
awaits "$late" || e2e_die "late: design_signoff never awaited"
sleep 0.5
e2e_check_eq "late: while it awaits, nothing of the build is dispatched" "
    SELECT count(*) FROM parflow.event e JOIN parflow.tasks t ON t.task = e.task_id
     WHERE t.run = $late AND t.stage IN ('backend', 'frontend') AND e.kind = 'dispatched'" 0
e2e_check_eq "late: parflow.waiting says what it awaits" "
    SELECT why LIKE 'awaiting event design_approved since %' FROM parflow.waiting
     WHERE run = $late AND stage = 'design_signoff'" t
e2e_check_eq "late: the signal releases it" "SELECT parflow_signal($late, 'design_approved', '{\"by\": \"late\"}')" 1
e2e_log "run $late: $(e2e_wait_run "$late" 60)"
e2e_expect_run "$late" succeeded
e2e_check_eq "late: the build started after the approval" "
    SELECT (SELECT min(started_at) FROM parflow.tasks WHERE run = $late AND stage IN ('backend', 'frontend'))
           >= (SELECT finished_at FROM parflow.tasks WHERE run = $late AND stage = 'design_signoff')" t
agent_once "$late"

# --- rejected ------------------------------------------------------------------
rej="$(e2e_start "SELECT parflow_start('e2e_appr', parallel => true)")" || e2e_die "start rejected"
awaits "$rej" || e2e_die "rejected: design_signoff never awaited"
e2e_check_eq "rejected: the rejection fails the stage" \
    "SELECT parflow_reject($rej, 'design_approved', 'scope too large')" 1
e2e_log "run $rej: $(e2e_wait_run "$rej" 30)"
e2e_expect_run "$rej" blocked
e2e_check_eq "rejected: the failure report names the stage and the reason" "
    SELECT string_agg(f ->> 'stage' || ': ' || (f ->> 'last_error'), ', ') FROM jsonb_array_elements(parflow_failures($rej)) f" \
    "design_signoff: scope too large"
e2e_check_eq "rejected: nothing after the approval started" "
    SELECT count(*) FROM parflow.tasks WHERE run = $rej AND stage NOT IN ('research', 'critique', 'design_signoff')
       AND state NOT IN ('waiting', 'skipped')" 0
e2e_finish
