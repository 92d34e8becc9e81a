#!/usr/bin/env bash
# test/e2e/90_share.sh -- runs sharing the database, with real agents.
#
#  1. Fair share: under parflow.max_parallel_stages (4), a 400-stage run
#     started 0.1 s before a 5-stage run; the small run finishes after fewer
#     than 30 of the big run's stages.  With parflow.fair_share off (ALTER
#     SYSTEM, reset at exit) the same pair runs in strict priority-then-rank
#     order: the small run waits for most of the big one.
#  2. Concurrency rules: five runs of two workflows sharing rule "deploys"
#     (max 1 per repository) over two repositories: never two deploys of one
#     repository at once, and every run succeeds.
#  3. Delayed start: a run with not_before 1.5 s ahead; no claim succeeds
#     before that time, and the first comes within 100 ms after it.
set -u -o pipefail
# shellcheck source=test/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
e2e_init 90_share 'e2e_share%'

GLOBAL_CAP="$(e2e_q -c "SHOW parflow.max_parallel_stages")"
[ "$GLOBAL_CAP" = 4 ] || e2e_die "this script expects parflow.max_parallel_stages = 4 (found $GLOBAL_CAP)"
e2e_check_idle

reset_fair_share() {
    e2e_q -c "ALTER SYSTEM RESET parflow.fair_share" -c "SELECT pg_reload_conf()" >/dev/null ||
        echo "could not reset parflow.fair_share" >&2
}
pf_on_exit reset_fair_share

# n stages of one parallel group, agent KIND, estimate EST
wide() {
    local n="$1" kind="$2" est="$3" i sep=""
    printf '{"groups": [{"name": "g", "stages": ['
    for ((i = 1; i <= n; i++)); do
        printf '%s{"name": "s%s", "agent": "%s", "estimate": "%s"}' "$sep" "$i" "$kind" "$est"
        sep=", "
    done
    printf ']}]}'
}

# ---- 1. fair share -------------------------------------------------------------
W=e2e90_w
e2e_define e2e_share_big "$(wide 400 "$W" "1 min")" >/dev/null || e2e_die "define big"
e2e_define e2e_share_small "$(wide 5 "$W" "1 min")" >/dev/null || e2e_die "define small"
# 1 estimated minute = 30 ms; four agents of one task each fill the cap
for i in 1 2 3 4; do
    e2e_agent "e2e90-w$i" "$W" --simulate 0.0005 -q
done
sleep 0.3

# big_then_small LABEL: start both 0.1 s apart, wait; prints "BIG SMALL N"
# with N the big run's stages that succeeded before the small run finished.
big_then_small() {
    local big small n
    big="$(e2e_start "SELECT parflow_start('e2e_share_big', parallel => true)")" || e2e_die "start big"
    sleep 0.1
    small="$(e2e_start "SELECT parflow_start('e2e_share_small', parallel => true)")" || e2e_die "start small"
    e2e_log "$1: big run $big, small run $small: $(e2e_wait_runs 120 "$big" "$small")" >&2
    n="$(e2e_q -c "SELECT count(*) FROM parflow.event e WHERE e.run_id = $big AND e.kind = 'succeeded'
                     AND e.id < (SELECT f.id FROM parflow.event f WHERE f.run_id = $small AND f.kind = 'run_succeeded')")"
    echo "$big $small $n"
}

read -r big small n < <(big_then_small "fair share on")
e2e_expect_run "$big" succeeded
e2e_expect_run "$small" succeeded
e2e_check_true "fair share: the small run finished after fewer than 30 of the big run's stages" \
    "SELECT $n < 30, '$n of 400'"
e2e_check_cap "fair share: parflow.max_parallel_stages held" "e.run_id IN ($big, $small)" "$GLOBAL_CAP" "$GLOBAL_CAP"
e2e_check_true "fair share: completions handed their slots over (not every dispatch waited for a pass)" "
    SELECT count(*) > 0, count(*) || ' hand-overs'
      FROM parflow.event WHERE run_id IN ($big, $small) AND kind = 'dispatched' AND detail ? 'handover'"

e2e_q -c "ALTER SYSTEM SET parflow.fair_share = off" -c "SELECT pg_reload_conf()" >/dev/null ||
    e2e_die "ALTER SYSTEM SET parflow.fair_share"
pf_wait_for "SELECT current_setting('parflow.fair_share') = 'off'" 10 || e2e_die "parflow.fair_share did not turn off"
sleep 0.3 # (the dispatcher and the agents' backends read it on SIGHUP)
read -r big small n < <(big_then_small "fair share off")
e2e_expect_run "$big" succeeded
e2e_expect_run "$small" succeeded
e2e_check_true "strict order (fair share off): the small run waited for most of the big run" \
    "SELECT $n > 300, '$n of 400'"
reset_fair_share
pf_wait_for "SELECT current_setting('parflow.fair_share') = 'on'" 10 || e2e_die "parflow.fair_share did not turn on"
sleep 0.3
e2e_stop_agents

# ---- 2. concurrency rules -------------------------------------------------------
RULE='"concurrency": [{"name": "e2e90_deploys", "key": "repo", "max": 1, "stages": ["deploy"]}]'
e2e_define e2e_share_app "{\"groups\": [
    {\"name\": \"build\", \"stages\": [{\"name\": \"build\", \"agent\": \"e2e90_b\", \"estimate\": \"1 min\"}]},
    {\"name\": \"ship\", \"stages\": [{\"name\": \"deploy\", \"agent\": \"e2e90_d\", \"estimate\": \"4 min\"},
                                    {\"name\": \"notes\", \"agent\": \"e2e90_b\", \"estimate\": \"1 min\"}]}],
    $RULE}" >/dev/null || e2e_die "define app"
e2e_define e2e_share_hotfix "{\"groups\": [
    {\"name\": \"ship\", \"stages\": [{\"name\": \"deploy\", \"agent\": \"e2e90_d\", \"estimate\": \"4 min\"}]}],
    $RULE}" >/dev/null || e2e_die "define hotfix"
e2e_agent e2e90-b "e2e90_b" --simulate 0.0005 --concurrency 4 -q
e2e_agent e2e90-d "e2e90_d" --simulate 0.0005 --concurrency 4 -q
sleep 0.3
runs=()
for spec in "app api" "app web" "hotfix api" "app api" "hotfix web"; do
    read -r wf repo <<<"$spec"
    runs+=("$(e2e_start "SELECT parflow_start('e2e_share_$wf', parallel => true, input => '{\"repo\": \"$repo\"}')")") ||
        e2e_die "start $wf $repo"
done
list="$(IFS=,; echo "${runs[*]}")"
e2e_log "runs $list: $(e2e_wait_runs 60 "${runs[@]}")"
for r in "${runs[@]}"; do
    e2e_expect_run "$r" succeeded
done
# each deploy attempt from its dispatch to its end, as event ids
deploys="WITH d AS (
    SELECT t.id, r.input->>'repo' AS repo, e.id AS s,
           (SELECT min(x.id) FROM parflow.event x WHERE x.task_id = t.id AND x.id > e.id
               AND x.kind IN ('succeeded', 'failed', 'retry', 'released', 'cancelled')) AS f
      FROM parflow.task t JOIN parflow.run r ON r.id = t.run_id
      JOIN parflow.stage st ON st.version_id = r.version_id AND st.ord = t.stage_ord AND st.name = 'deploy'
      JOIN parflow.event e ON e.task_id = t.id AND e.kind = 'dispatched'
     WHERE t.run_id IN ($list))"
e2e_check "concurrency rule: never two deploys of one repository at once" "
    $deploys
    SELECT format('deploys %s and %s of %s overlap', a.id, b.id, a.repo)
      FROM d a JOIN d b ON a.repo = b.repo AND a.id < b.id AND a.s < b.f AND b.s < a.f"
e2e_check_eq "concurrency rule: five deploys ran, each once" "
    $deploys SELECT count(*) || ' of ' || count(DISTINCT id) FROM d" "5 of 5"
e2e_log "deploys of different repositories at once: $(e2e_q -c "
    $deploys SELECT count(*) FROM d a JOIN d b ON a.repo <> b.repo AND a.id < b.id AND a.s < b.f AND b.s < a.f") pair(s)"
e2e_stop_agents

# ---- 3. delayed start -----------------------------------------------------------------
e2e_agent e2e90-late "$W" --simulate 0.0005 -q
sleep 0.3
late="$(e2e_start "SELECT parflow_start('e2e_share_small', parallel => true,
                                        not_before => clock_timestamp() + interval '1.5 s')")" || e2e_die "start late"
e2e_log "delayed run $late: $(e2e_wait_run "$late" 30)"
e2e_expect_run "$late" succeeded
e2e_check_true "delayed start: no claim before not_before, the first within 100 ms after it" "
    SELECT min(e.at) >= r.not_before AND min(e.at) < r.not_before + interval '100 ms',
           'first claim ' || round(1000 * extract(epoch FROM min(e.at) - r.not_before))::int || ' ms after not_before'
      FROM parflow.event e JOIN parflow.run r ON r.id = e.run_id
     WHERE e.run_id = $late AND e.kind = 'running' GROUP BY r.not_before"
e2e_finish
