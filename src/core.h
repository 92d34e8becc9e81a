/*
 * core.h - the rules the runtime core's parts share, each defined here once:
 * which task states hold a slot, the order in which ready tasks are chosen,
 * the shards of a run's remaining count, the room a cap leaves, the payload
 * of an agent notification, and how a statement must be written so that a
 * generic plan stays an index probe.  The SQL indexes on parflow.task
 * (task_dispatch_idx, task_ready_idx, task_claim_idx, task_active_idx) are
 * built on the same order and states: change both together.
 */
#ifndef PARFLOW_CORE_H
#define PARFLOW_CORE_H

#include "fmgr.h"
#include "datatype/timestamp.h"
#include "utils/array.h"

/* States of a task that hold a slot under the caps. */
#define PF_ACTIVE_STATE_1 "dispatched"
#define PF_ACTIVE_STATE_2 "running"
#define PF_ACTIVE_STATES "('" PF_ACTIVE_STATE_1 "', '" PF_ACTIVE_STATE_2 "')"

/*
 * Task t holds a slot: the condition of task_active_idx, whose predicate
 * adds group_ord IS NOT NULL (always true) so that only a statement that
 * says so can use it.  A claim (state = 'dispatched') implies the states
 * alone, and a generic plan made while few tasks were at work would scan
 * and sort every task at work in the database for each claim instead of
 * walking task_claim_idx in claim order.  A statement about running tasks
 * only adds PF_ON_ACTIVE_IDX to its state = 'running'.
 */
#define PF_ON_ACTIVE_IDX(t) " AND " t ".group_ord IS NOT NULL "
#define PF_ACTIVE(t) " " t ".state IN " PF_ACTIVE_STATES PF_ON_ACTIVE_IDX(t)

/*
 * The dispatch order among ready tasks (and the claim order), for ORDER BY.
 * Under fair share (parflow.fair_share) it orders the tasks within a run,
 * and across runs of equal priority the run with the fewest tasks at work
 * goes first (pass.c pick_fair, runstate.c st_handover).
 */
#define PF_DISPATCH_ORDER(t) t ".priority, " t ".rank DESC, " t ".id"

/* Whether task a comes before task b in that order. */
#define PF_BEFORE(a, b) \
	"(" a ".priority < " b ".priority OR (" a ".priority = " b ".priority AND (" a ".rank > " b \
	".rank OR (" a ".rank = " b ".rank AND " a ".id < " b ".id))))"

/*
 * Ready tasks of every run, for a walk in dispatch order over all runs: the
 * only condition that lets a query use task_dispatch_idx (whose predicate
 * names priority).  A query about one run's ready tasks leaves it out and
 * gets task_ready_idx.
 */
#define PF_ALL_READY(t) " " t ".state = 'ready' AND " t ".priority >= 0 "

/* A ready task whose retry backoff or claim-timeout pause is over. */
#define PF_READY_NOW(t) "(" t ".not_before IS NULL OR " t ".not_before <= clock_timestamp())"

/*
 * A task's stage, looked up through the stage table's unique (version_id,
 * ord) index: written as a plain join, a generic plan can read every stage
 * of the version for each task (the LIMIT keeps the subquery from being
 * flattened back into a join).  cols are stage columns.
 */
#define PF_STAGE_OF(alias, version, ord, cols) \
	" CROSS JOIN LATERAL (SELECT " cols " FROM parflow.stage st_ WHERE st_.version_id = " version \
	" AND st_.ord = " ord " LIMIT 1) " alias " "

/*
 * The input a task's work is given (an agent's claim, a sub-workflow's
 * child run): the run's input, the outputs of the stages it depends on
 * (skipped ones listed apart, with the reason) and, on a route-back, the
 * failing verification; a map instance's, its element (item) and index.
 * The upstream outputs add to those the run's input brings (a child run's
 * input is its parent stage's), its own first.  PF_TASK_INPUT is the
 * expression; it needs the join PF_TASK_UPSTREAM (alias up: a stage that is
 * both a dependency and in a group depended on comes twice, with the same
 * output, which jsonb_object_agg keeps once; UNION would build a hash
 * table for every claim), a task u
 * (stage_ord, group_ord, feedback, item, map_item) and its run r (id,
 * version_id, input).  PF_TASK_INPUT_OF is the expression for other
 * upstream and skipped maps; PF_TASK_INPUT_QUERY(cols, run_cols) the input
 * of task $1 of run $2, then cols (the run's run_cols selected too).
 */
#define PF_TASK_INPUT_OF(upstream, skipped) \
	"r.input || jsonb_build_object('upstream', " \
	"    CASE WHEN jsonb_typeof(r.input -> 'upstream') = 'object' THEN r.input -> 'upstream' ELSE '{}' END " \
	"    || coalesce(" upstream ", '{}')) " \
	"|| CASE WHEN " skipped " IS NULL THEN '{}' ELSE jsonb_build_object('skipped', " skipped ") END " \
	"|| CASE WHEN u.feedback IS NULL THEN '{}' ELSE jsonb_build_object('route_back', u.feedback) END " \
	"|| CASE WHEN u.item IS NULL THEN '{}' ELSE jsonb_build_object('item', u.map_item, 'index', u.item) END"
#define PF_TASK_INPUT PF_TASK_INPUT_OF("up.upstream", "up.skipped")
/* Whether task u of run r depends on any stage (else PF_TASK_UPSTREAM finds nothing). */
#define PF_TASK_HAS_UPSTREAM \
	"(EXISTS (SELECT FROM parflow.stage_dep d WHERE d.version_id = r.version_id AND d.stage_ord = u.stage_ord) " \
	" OR EXISTS (SELECT FROM parflow.group_dep gd WHERE gd.version_id = r.version_id AND gd.group_ord = u.group_ord))"
#define PF_TASK_UPSTREAM \
	" CROSS JOIN LATERAL ( " \
	"   SELECT jsonb_object_agg(ds.name, dt.output) FILTER (WHERE dt.state = 'succeeded') AS upstream, " \
	"          jsonb_object_agg(ds.name, coalesce(dt.error, 'skipped')) FILTER (WHERE dt.state = 'skipped') AS skipped " \
	"     FROM (SELECT d.dep_ord AS ord FROM parflow.stage_dep d " \
	"            WHERE d.version_id = r.version_id AND d.stage_ord = u.stage_ord " \
	"           UNION ALL " \
	"           SELECT s2.ord FROM parflow.group_dep gd " \
	"            CROSS JOIN LATERAL (SELECT st_.ord FROM parflow.stage st_ WHERE st_.version_id = r.version_id " \
	"                                   AND st_.group_ord = gd.dep_ord OFFSET 0) s2 " \
	"            WHERE gd.version_id = r.version_id AND gd.group_ord = u.group_ord) dep " \
	"    CROSS JOIN LATERAL (SELECT t2.state, t2.output, t2.error FROM parflow.task t2 " \
	"                         WHERE t2.run_id = r.id AND t2.stage_ord = dep.ord AND t2.item IS NULL LIMIT 1) dt " \
	"   " PF_STAGE_OF("ds", "r.version_id", "dep.ord", "name") \
	"    WHERE dt.state IN ('succeeded', 'skipped')) up "
#define PF_TASK_INPUT_QUERY(cols, run_cols) \
	"SELECT " PF_TASK_INPUT cols \
	"  FROM (SELECT tk.id, tk.stage_ord, tk.group_ord, tk.feedback, tk.item, tk.map_item " \
	"          FROM parflow.task tk WHERE tk.id = $1) u " \
	" CROSS JOIN LATERAL (SELECT rr.id, rr.version_id, rr.input" run_cols \
	"                       FROM parflow.run rr WHERE rr.id = $2 LIMIT 1) r " \
	PF_TASK_UPSTREAM

/*
 * A claim, shared by parflow_claim and the hand-over that claims the task it
 * hands the slot to (parflow_complete_and_claim): what a task claimed by
 * worker w with lease l is set to (alias tk), what the update returns, the
 * detail of its 'running' event (for a row u of what it returned), and the
 * claim's result rows, one per row of a CTE u: PF_CLAIM_COLS columns, then
 * whether the task depends on any stage.  The input in them has no
 * upstream outputs: a task that depends on stages has its input made again
 * with them (taskapi.c put_claim_row), so that a claim of tasks without
 * dependencies neither plans nor runs PF_TASK_UPSTREAM.
 */
#define PF_CLAIM_SET(w, l) \
	"state = 'running', attempt = tk.attempt + 1, worker = " w ", token = gen_random_uuid(), " \
	"lease = " l ", lease_until = clock_timestamp() + " l ", started_at = clock_timestamp(), " \
	"finished_at = NULL, interrupted_at = NULL"
#define PF_CLAIM_RETURNING \
	"tk.id, tk.token, tk.run_id, tk.stage_ord, tk.group_ord, tk.attempt, tk.lease_until, " \
	"tk.feedback, tk.priority, tk.rank, tk.worker, tk.item, tk.map_item"
#define PF_RUNNING_DETAIL(u) "jsonb_build_object('worker', " u ".worker, 'attempt', " u ".attempt)"
#define PF_CLAIM_RESULT \
	"SELECT u.id, u.token, u.run_id, s.name, u.attempt, " PF_TASK_INPUT_OF("NULL::jsonb", "NULL::jsonb") ", " \
	"       s.estimate, u.lease_until, u.item, " PF_TASK_HAS_UPSTREAM \
	"  FROM u CROSS JOIN LATERAL (SELECT rr.id, rr.version_id, rr.input FROM parflow.run rr " \
	"                             WHERE rr.id = u.run_id LIMIT 1) r " \
	PF_STAGE_OF("s", "r.version_id", "u.stage_ord", "name, estimate")
#define PF_CLAIM_COLS 9

/* The arguments of a claim, checked before anything else happens. */
typedef struct PfClaimArgs
{
	char	   *agent;
	char	   *worker;
	Datum		lease;
	int32		max_tasks;
} PfClaimArgs;

/*
 * A task's state checked on a row found by its id: written so that no
 * partial index on state matches (a generic plan, with statistics from when
 * no task was in that state, would scan such an index for the id instead of
 * probing the primary key).
 */
#define PF_STATE_IS(t, state) " (" t ".state || '') = '" state "' "

/* A run's remaining count is kept in this many shards (task id % PF_SHARDS). */
#define PF_SHARDS 16

/* The most tasks one batch call claims or completes. */
#define PF_MAX_BATCH 1000

/* Lock classes (field 4 of an advisory lock tag, apart from user locks' 1 and 2). */
#define PF_RUN_LOCK_CLASS 0x5046	/* a run: see pf_lock_run */
#define PF_PASS_LOCK_CLASS 0x5047	/* one dispatch pass at a time */

/* Room a cap leaves with this many tasks at work (never below 0). */
static inline int
pf_room(int cap, int active)
{
	return cap > active ? cap - active : 0;
}

/* A task as the call that holds it, or the pass, sees it (taskapi.c held(), pass.c load_task()). */
typedef struct PfTask
{
	int64		id;
	int64		run_id;
	int32		stage_ord;
	int32		group_ord;
	char	   *agent;
	int32		attempt;
	int32		base_attempt;
	int32		route_backs;
	char	   *worker;
	bool		interrupted;
	int64		version_id;
	char	   *run_state;
	int32		run_max_parallel;
	int32		run_failed;
} PfTask;

/*
 * The columns of a task (alias tk) and its run (alias r) that fill a PfTask,
 * for a query whose row pf_load_task reads.
 */
#define PF_TASK_COLS \
	"tk.id, tk.run_id, tk.stage_ord, tk.group_ord, tk.agent, tk.attempt, tk.base_attempt, " \
	"tk.route_backs, tk.worker, tk.interrupted_at IS NOT NULL, r.version_id, r.state, " \
	"r.max_parallel, r.failed"
#define PF_TASK_NCOLS 14

/* runstate.c: the agent notification */
extern char *pf_payload(const char *kind, int64 task, int64 run,
						const char *stage, const char *why);
extern void pf_notify_agent(const char *agent, const char *payload);

/* runstate.c: transitions shared by the agent calls, operators and the pass */
extern void pf_load_task(int row, PfTask *t);
extern Oid	pf_ext_func(const char *name, int nargs);
extern void pf_event(int64 run, int64 task, const char *kind, Datum detail, bool has_detail);
extern void pf_announce(int64 run, const char *kind, Datum detail, bool has_detail);
extern void pf_done(int64 run, int64 version, Datum ords);
extern void pf_done_through(int64 run, int64 version, Datum ords, bool edges, bool barriers);
extern void pf_finish_if_done(int64 run);
extern void pf_check_blocked(int64 run);
extern char *pf_retry_or_fail(PfTask *t, const char *why, const char *err, bool retryable);
extern bool pf_handover(PfTask *t, const PfClaimArgs *claim, int64 *handed_task, bool *claimed);
/* the column of pf_handover's result where a claim's result row starts */
#define PF_HANDOVER_CLAIM_COL 8
extern void pf_route_back(PfTask *t, const char *err, Datum out_doc, bool has_out);
extern void pf_set_output(int64 task, Datum output);
extern Datum pf_int4_array(int32 *v, int n);
extern Datum pf_int8_array(int64 *v, int n);

/* waits.c: stages no agent works (wait stages, sub-workflow stages) */
extern ArrayType *pf_await(int64 run, int64 version, ArrayType *ords);
extern void pf_waits_pass(bool with_times);
extern void pf_instances_done(int64 run, int64 version, Datum ids);

/* pass.c: when the last pass in this process wants the next one (0: none sooner than naptime) */
extern TimestampTz pf_pass_next_due(void);

/* taskapi.c */
extern void pf_may_claim(const char *agent);
extern bool pf_lock_run(int64 run, bool exclusive, bool nowait);

#endif							/* PARFLOW_CORE_H */
