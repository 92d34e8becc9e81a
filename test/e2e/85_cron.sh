#!/usr/bin/env bash
# test/e2e/85_cron.sh -- the optional pg_cron path, with the real pg_cron
# (preloaded by test/cluster.sh, cron.database_name = postgres).
#
# parflow_schedule creates a pg_cron job in this database whose command starts
# a run (names quoted as literals: a workflow name with a quote works);
# scheduling the same job name again replaces it; the job's command, run as
# pg_cron would run it, starts a run with the flags and priority asked for;
# parflow_schedule_housekeeping adds the housekeeping job; parflow_unschedule
# removes them; bad input is refused.  pg_cron's own firing (at most once a
# minute in this version) is not waited for.
set -u -o pipefail
# shellcheck source=test/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init 85_cron "e2e85%"

# shellcheck disable=SC2317 # run at exit, through pf_on_exit
drop_cron() {
    e2e_q -c "DROP EXTENSION IF EXISTS pg_cron" >/dev/null 2>&1 || true
}
had_cron="$(e2e_q -c "SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'")"
[ "$had_cron" = 0 ] && pf_on_exit drop_cron
e2e_q -c "CREATE EXTENSION IF NOT EXISTS pg_cron" >/dev/null 2>&1 ||
    e2e_die "CREATE EXTENSION pg_cron (is it in shared_preload_libraries?)"

WF="e2e85 it's \"quoted\""
WFQ="${WF//\'/\'\'}"
e2e_define "$WFQ" '{"groups": [{"name": "g", "stages": [
    {"name": "a", "agent": "e2e85_a", "estimate": "1 min"},
    {"name": "b", "agent": "e2e85_a", "estimate": "1 min", "when": "extra"}]}]}' >/dev/null || e2e_die "define"

e2e_check_eq "parflow_schedule creates a pg_cron job in this database" "
    SELECT parflow_schedule('e2e85-nightly', '0 2 * * *', '$WFQ', '{extra}', 1) > 0;
    SELECT count(*) FROM cron.job WHERE jobname = 'e2e85-nightly' AND database = current_database()
                                    AND schedule = '0 2 * * *'" "t
1"
e2e_check_eq "scheduling the same name again replaces the job" \
    "SELECT parflow_schedule('e2e85-nightly', '30 1 * * 1-5', '$WFQ', '{extra}', 1) IS NOT NULL;
     SELECT count(*) || ' ' || min(schedule) FROM cron.job WHERE jobname = 'e2e85-nightly'" \
    "t
1 30 1 * * 1-5"
before="$(e2e_q -c "SELECT coalesce(max(id), 0) FROM parflow.run")"
cmd="$(e2e_q -c "SELECT command FROM cron.job WHERE jobname = 'e2e85-nightly'")"
e2e_log "job command: $cmd"
if e2e_q -c "$cmd" >/dev/null 2>&1; then
    e2e_pass "the job's command runs"
else
    e2e_fail "the job's command runs" "$(e2e_q -c "$cmd" 2>&1)"
fi
e2e_check_eq "it started a run of the workflow with the flags and priority asked for" \
    "SELECT workflow || ' ' || flags::text || ' P' || priority FROM parflow.runs WHERE run > $before" \
    "$WF {extra} P1"
e2e_q -c "SELECT parflow_cancel(run) FROM parflow.runs WHERE run > $before" >/dev/null

e2e_check_eq "parflow_schedule_housekeeping adds the housekeeping job" "
    SELECT parflow_schedule_housekeeping('45 4 * * *') > 0;
    SELECT schedule || ' ' || command FROM cron.job WHERE jobname = 'parflow_housekeeping'" "t
45 4 * * * SELECT public.parflow_housekeeping()"
e2e_check_eq "parflow_unschedule removes both" \
    "SELECT parflow_unschedule('e2e85-nightly') AND parflow_unschedule('parflow_housekeeping');
     SELECT count(*) FROM cron.job WHERE jobname IN ('e2e85-nightly', 'parflow_housekeeping')" \
    "t
0"
for bad in "parflow_unschedule('e2e85-nightly')|42704" \
           "parflow_schedule('e2e85-x', '0 2 * * *', 'e2e85 no such workflow')|42704" \
           "parflow_schedule('e2e85-x', '0 2 * * *', '$WFQ', '{}', 9)|22023" \
           "parflow_schedule('', '0 2 * * *', '$WFQ')|22023" \
           "parflow_schedule('e2e85-x', '', '$WFQ')|22023" \
           "parflow_schedule('e2e85-x', 'not a schedule', '$WFQ')|22023"; do
    call="${bad%|*}"
    want="${bad##*|}"
    out="$(e2e_q -v VERBOSITY=verbose -c "SELECT $call" 2>&1)"
    if [[ "$out" == *"ERROR:  $want:"* ]]; then
        e2e_pass "refused with $want: $call"
    else
        e2e_fail "refused with $want: $call" "$out"
    fi
done
e2e_check_eq "nothing scheduled by the refused calls" \
    "SELECT count(*) FROM cron.job WHERE jobname LIKE 'e2e85%'" 0
e2e_finish
