/*
 * runstate.c - the transitions of tasks and runs that the agent calls, the
 * operators' functions and the dispatcher's pass share: the event log, run
 * announcements, the release of dependents when tasks finish (stage edges
 * and group barriers), finishing and blocking runs, a lost attempt (retry
 * with backoff or fail for good), a failed verification sending its stage
 * back, and the hand-over of a completed task's slot.  Every function here
 * runs inside an SPI connection opened by its caller and writes its event
 * rows in the caller's transaction.  Lock order, everywhere: a run before
 * its tasks (agents' paths hold their run FOR KEY SHARE, taken with their
 * task); a run row is updated only after the tasks a path changes.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "miscadmin.h"
#include "lib/stringinfo.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"

#include "core.h"
#include "guc.h"
#include "shmem.h"
#include "stmt.h"

PG_FUNCTION_INFO_V1(parflow_done);
PG_FUNCTION_INFO_V1(parflow_finish_if_done);
PG_FUNCTION_INFO_V1(parflow_check_blocked);
PG_FUNCTION_INFO_V1(parflow_announce);
PG_FUNCTION_INFO_V1(parflow_payload);
PG_FUNCTION_INFO_V1(parflow_shard);
PG_FUNCTION_INFO_V1(parflow_active_states);

/* Payload of a notification on channel parflow_<agent>, as jsonb prints it. */
char *
pf_payload(const char *kind, int64 task, int64 run, const char *stage, const char *why)
{
	StringInfoData s;

	initStringInfo(&s);
	appendStringInfo(&s, "{\"run\": " INT64_FORMAT ", ", run);
	if (why != NULL)
	{
		appendStringInfoString(&s, "\"why\": ");
		escape_json(&s, why);
		appendStringInfoString(&s, ", ");
	}
	appendStringInfoString(&s, "\"kind\": ");
	escape_json(&s, kind);
	appendStringInfo(&s, ", \"task\": " INT64_FORMAT ", \"stage\": ", task);
	escape_json(&s, stage);
	appendStringInfoChar(&s, '}');
	return s.data;
}

/* NOTIFY an agent kind's channel, delivered when the transaction commits. */
void
pf_notify_agent(const char *agent, const char *payload)
{
	char	   *channel = psprintf("parflow_%s", agent);

	Async_Notify(channel, payload);
}

Datum
pf_int4_array(int32 *v, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));
	int			i;

	for (i = 0; i < n; i++)
		d[i] = Int32GetDatum(v[i]);
	return PointerGetDatum(construct_array(d, n, INT4OID, 4, true, TYPALIGN_INT));
}

Datum
pf_int8_array(int64 *v, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));
	int			i;

	for (i = 0; i < n; i++)
		d[i] = Int64GetDatum(v[i]);
	return PointerGetDatum(construct_array(d, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/* Row row of the last result, with the columns PF_TASK_COLS, as a task. */
void
pf_load_task(int row, PfTask *t)
{
	t->id = pf_int8(row, 1);
	t->run_id = pf_int8(row, 2);
	t->stage_ord = pf_int4(row, 3);
	t->group_ord = pf_int4(row, 4);
	t->agent = pf_text(row, 5);
	t->attempt = pf_int4(row, 6);
	t->base_attempt = pf_int4(row, 7);
	t->route_backs = pf_int4(row, 8);
	t->worker = pf_text(row, 9);
	t->interrupted = pf_bool(row, 10);
	t->version_id = pf_int8(row, 11);
	t->run_state = pf_text(row, 12);
	t->run_max_parallel = pf_int4(row, 13);
	t->run_failed = pf_int4(row, 14);
}

/* ---- the event log and announcements ---------------------------------- */

static PfStmt st_event = {
	"INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"VALUES ($1, $2, $3, coalesce($4, '{}'))",
	4, {INT8OID, INT8OID, TEXTOID, JSONBOID}
};

/* Append to the event log (task 0: a run event). */
void
pf_event(int64 run, int64 task, const char *kind, Datum detail, bool has_detail)
{
	Datum		v[4] = {Int64GetDatum(run), Int64GetDatum(task), CStringGetTextDatum(kind), detail};
	char		n[4] = {' ', task == 0 ? 'n' : ' ', ' ', has_detail ? ' ' : 'n'};

	pf_exec(&st_event, v, n, 0);
}

static PfStmt st_announce = {
	"WITH e AS (INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"           VALUES ($1, NULL, 'run_' || $2, coalesce($3, '{}'))) "
	"SELECT (jsonb_build_object('kind', $2, 'run', $1) || coalesce($3, '{}'))::text, "
	"       jsonb_build_object('kind', $2, 'run', $1, 'truncated', true)::text",
	3, {INT8OID, TEXTOID, JSONBOID}
};

/*
 * Log a run transition and NOTIFY parflow_orchestrator; a detail too long
 * for a payload (8000 bytes) is left out of the notification, which says
 * so ("truncated"); the run_<kind> event keeps it whole.
 */
void
pf_announce(int64 run, const char *kind, Datum detail, bool has_detail)
{
	Datum		v[3] = {Int64GetDatum(run), CStringGetTextDatum(kind), detail};
	char		n[3] = {' ', ' ', has_detail ? ' ' : 'n'};
	char	   *payload;

	pf_exec(&st_announce, v, n, 0);
	payload = pf_text(0, 1);
	if (strlen(payload) >= 8000)
		payload = pf_text(0, 2);
	Async_Notify("parflow_orchestrator", payload);
}

/* ---- releasing dependents --------------------------------------------- */

/*
 * Count n finished dependencies off each task of the CTE "d" (stage_ord,
 * n), the tasks found through the run's (run_id, stage_ord) index and n
 * through a map (a join of the update to d can be planned as a nested loop
 * over d: quadratic in a wide fan-out): those left waiting on nothing
 * become ready (with their event), or, wait stages (no agent), awaiting;
 * the skipped ones left waiting on nothing are returned, to be passed
 * through, and the awaiting ones, for pf_await.  set: more assignments of
 * the update (each followed by a comma), or "".
 * A skipped task already passed through is never counted again.
 */
#define PF_RELEASE_TAIL(set) \
	"m AS (SELECT jsonb_object_agg(d.stage_ord::text, d.n) AS n, array_agg(d.stage_ord) AS ords FROM d), " \
	"u AS (UPDATE parflow.task t SET " set "pending = t.pending - ((SELECT m.n FROM m) ->> t.stage_ord::text)::integer, " \
	"             state = CASE WHEN t.pending = ((SELECT m.n FROM m) ->> t.stage_ord::text)::integer " \
	"                           AND t.state = 'waiting' " \
	"                          THEN CASE WHEN t.agent IS NULL THEN 'awaiting' ELSE 'ready' END " \
	"                          ELSE t.state END " \
	"       WHERE t.run_id = $1 AND t.stage_ord = ANY ((SELECT m.ords FROM m)::integer[]) AND t.item IS NULL " \
	"         AND NOT (t.state = 'skipped' AND t.pending = 0) " \
	"      RETURNING t.id, t.stage_ord, t.state, t.pending), " \
	"e AS (INSERT INTO parflow.event (run_id, task_id, kind) " \
	"      SELECT $1, u.id, 'ready' FROM u WHERE u.state = 'ready' AND u.pending = 0) " \
	"SELECT coalesce(array_agg(u.stage_ord ORDER BY u.stage_ord) " \
	"                FILTER (WHERE u.state = 'skipped' AND u.pending = 0), '{}'), " \
	"       coalesce(array_agg(u.stage_ord ORDER BY u.stage_ord) " \
	"                FILTER (WHERE u.state = 'awaiting' AND u.pending = 0), '{}') FROM u"

/*
 * Through stage edges, and the plan's holds (task.hold_ord: the task does
 * not start before that stage's task has finished, counted in its pending),
 * released like an edge when the awaited task succeeds or is passed
 * through; the tasks held for one are found through task_hold_idx.
 */
static PfStmt st_release_edges = {
	"WITH d AS (SELECT x.stage_ord, count(*)::integer AS n "
	"             FROM (SELECT d.stage_ord FROM parflow.stage_dep d "
	"                    WHERE d.version_id = $2 AND d.dep_ord = ANY ($3) "
	"                   UNION ALL "
	"                   SELECT h.stage_ord FROM parflow.task h "
	"                    WHERE h.run_id = $1 AND h.hold_ord = ANY ($3) AND h.item IS NULL) x "
	"            GROUP BY x.stage_ord), "
	PF_RELEASE_TAIL("hold_ord = CASE WHEN t.hold_ord = ANY ($3) THEN NULL ELSE t.hold_ord END, "),
	3, {INT8OID, INT8OID, INT4ARRAYOID}
};

/* every hold of the plan of a run that has a task failed for good */
static PfStmt st_release_holds = {
	"WITH d AS (SELECT h.stage_ord, 1 AS n FROM parflow.task h "
	"            WHERE h.run_id = $1 AND h.hold_ord IS NOT NULL AND h.item IS NULL), "
	PF_RELEASE_TAIL("hold_ord = NULL, "),
	1, {INT8OID}
};

/*
 * Group barriers: a group is done when its last task is (only groups that
 * other groups wait for keep count).  Every completion of a group updates
 * its row, so this comes after the stage edges: the row lock is held for as
 * short a time as possible before the commit.  Each task's group is probed
 * in group_dep_dep_idx and the counts applied through a map, so that a
 * generic plan reads neither every barrier of the version nor every group
 * of the run (a join of the update to c was planned as a hash of them).
 */
static PfStmt st_barriers = {
	"WITH c AS (SELECT t.group_ord, count(*)::integer AS n FROM parflow.task t "
	"            CROSS JOIN LATERAL (SELECT FROM parflow.group_dep gd "
	"                                 WHERE gd.version_id = $2 AND gd.dep_ord = t.group_ord LIMIT 1) w "
	"            WHERE t.run_id = $1 AND t.stage_ord = ANY ($3) AND t.item IS NULL AND NOT t.skip_barrier "
	"            GROUP BY t.group_ord), "
	"m AS (SELECT jsonb_object_agg(c.group_ord::text, c.n) AS n, array_agg(c.group_ord) AS ords FROM c), "
	"u AS (UPDATE parflow.run_group rg SET pending = rg.pending - ((SELECT m.n FROM m) ->> rg.group_ord::text)::integer "
	"       WHERE rg.run_id = $1 AND rg.group_ord = ANY ((SELECT m.ords FROM m)::integer[]) "
	"      RETURNING rg.group_ord, rg.pending) "
	"SELECT coalesce(array_agg(u.group_ord) FILTER (WHERE u.pending = 0), '{}') FROM u",
	3, {INT8OID, INT8OID, INT4ARRAYOID}
};

/*
 * Through the barriers of groups just done: the stages of the groups that
 * wait for them, from the definition (the tasks of a run have no index by
 * group, and reading every task of the run made each completion in a chain
 * of groups cost as much as the run is long), each done group probed in
 * group_dep_dep_idx (with "= ANY" a generic plan read every barrier of the
 * version); a stage with no task in the run counts nothing, since the
 * update finds no row for it.
 */
static PfStmt st_release_groups = {
	"WITH d AS (SELECT s.ord AS stage_ord, count(*)::integer AS n FROM unnest($3::integer[]) g(ord) "
	"            CROSS JOIN LATERAL (SELECT gd.group_ord FROM parflow.group_dep gd "
	"                                 WHERE gd.version_id = $2 AND gd.dep_ord = g.ord OFFSET 0) gd "
	"            CROSS JOIN LATERAL (SELECT st_.ord FROM parflow.stage st_ WHERE st_.version_id = $2 "
	"                                   AND st_.group_ord = gd.group_ord OFFSET 0) s "
	"            GROUP BY s.ord), "
	PF_RELEASE_TAIL(""),
	3, {INT8OID, INT8OID, INT4ARRAYOID}
};

static ArrayType *
array_result(int c)
{
	bool		isnull;
	Datum		d = pf_datum(0, c, &isnull);

	return DatumGetArrayTypePCopy(d);
}

static ArrayType *
array_cat2(ArrayType *a, ArrayType *b)
{
	if (ArrayGetNItems(ARR_NDIM(b), ARR_DIMS(b)) == 0)
		return a;
	return DatumGetArrayTypeP(DirectFunctionCall2(array_cat, PointerGetDatum(a), PointerGetDatum(b)));
}

/*
 * Release every hold of a run's plan once one of its tasks failed for good:
 * the plan is void then (the stage a hold waits for may never run, as when
 * its dependency failed or a fail-fast group cancelled it), and the run goes
 * on as it would without holds.  Only stages an agent works are held
 * (schedule.c, holdable), so a released task becomes ready: none is passed
 * through or begins to await.
 */
static void
release_holds(int64 run)
{
	Datum		v[1] = {Int64GetDatum(run)};

	pf_exec(&st_release_holds, v, NULL, 0);
}

/*
 * Propagate the completion of tasks ords (stage ords: succeeded, or skipped
 * and passed through) of a run to their dependents, through stage edges and
 * group barriers; skipped dependents left waiting on nothing are passed
 * through in turn, and so are wait stages that a kept signal completes as
 * they begin to await (pf_await).
 */
void
pf_done(int64 run, int64 version, Datum ords)
{
	pf_done_through(run, version, ords, true, true);
}

/*
 * pf_done for tasks whose dependents are known to be only through stage
 * edges or holds (edges) or only through their groups' barriers (barriers):
 * a completion knows which of the two it has (st_complete), and skips the
 * other's statement.  Tasks passed through are looked at both ways.
 */
void
pf_done_through(int64 run, int64 version, Datum ords, bool edges, bool barriers)
{
	ArrayType  *cur = DatumGetArrayTypeP(ords);
	bool		signalled = false;

	while (ArrayGetNItems(ARR_NDIM(cur), ARR_DIMS(cur)) > 0)
	{
		Datum		v[3] = {Int64GetDatum(run), Int64GetDatum(version), PointerGetDatum(cur)};
		ArrayType  *passed;
		ArrayType  *awaiting;
		ArrayType  *groups;

		CHECK_FOR_INTERRUPTS();
		passed = awaiting = groups = construct_empty_array(INT4OID);
		if (edges)
		{
			pf_exec(&st_release_edges, v, NULL, 0);
			passed = array_result(1);
			awaiting = array_result(2);
		}
		if (barriers)
		{
			pf_exec(&st_barriers, v, NULL, 0);
			groups = array_result(1);
		}
		edges = barriers = true;
		if (ArrayGetNItems(ARR_NDIM(groups), ARR_DIMS(groups)) > 0)
		{
			v[2] = PointerGetDatum(groups);
			pf_exec(&st_release_groups, v, NULL, 0);
			passed = array_cat2(passed, array_result(1));
			awaiting = array_cat2(awaiting, array_result(2));
		}
		if (ArrayGetNItems(ARR_NDIM(awaiting), ARR_DIMS(awaiting)) > 0)
		{
			ArrayType  *took = pf_await(run, version, awaiting);

			signalled |= ArrayGetNItems(ARR_NDIM(took), ARR_DIMS(took)) > 0;
			passed = array_cat2(passed, took);
		}
		cur = passed;
	}
	/* (the run's remaining count did not include what signals completed) */
	if (signalled)
		pf_finish_if_done(run);
}

/* ---- finishing and blocking runs -------------------------------------- */

static PfStmt st_finish = {
	"UPDATE parflow.run r SET state = 'succeeded', finished_at = clock_timestamp() "
	" WHERE r.id = $1 AND r.state IN ('running', 'paused') "
	"   AND (SELECT coalesce(sum(rr.remaining), 0) FROM parflow.run_remaining rr "
	"         WHERE rr.run_id = $1) = 0",
	1, {INT8OID}
};

/*
 * Mark a run succeeded once every task has succeeded or was skipped (its
 * run_remaining shards add up to 0).  When the last tasks of two shards
 * complete at once, each still sees the other's shard at 1 and neither
 * finishes the run: the dispatcher's next pass, which their commits wake,
 * does.  Finishing twice is harmless: only the update that changes the
 * state announces it.
 */
void
pf_finish_if_done(int64 run)
{
	Datum		v[1] = {Int64GetDatum(run)};

	if (pf_exec(&st_finish, v, NULL, 0) > 0)
	{
		pf_announce(run, "succeeded", (Datum) 0, false);
		/* (a child run's end is for the pass to hand to its parent) */
		pf_wake_at_commit();
	}
}

static PfStmt st_block = {
	"UPDATE parflow.run r SET state = 'blocked' "
	" WHERE r.id = $1 AND r.state = 'running' AND r.failed > 0 "
	"   AND NOT EXISTS (SELECT FROM parflow.task t WHERE t.run_id = $1 "
	"                      AND t.state IN ('ready', 'dispatched', 'running', 'awaiting'))",
	1, {INT8OID}
};

static PfStmt st_failures_detail = {
	"SELECT jsonb_build_object('failures', $1)",
	1, {JSONBOID}
};

static PfStmt st_ext_func = {
	"SELECT p.oid FROM pg_catalog.pg_proc p "
	"  JOIN pg_catalog.pg_extension e ON e.extnamespace = p.pronamespace "
	" WHERE e.extname = 'parflow' AND p.proname = $1 AND p.pronargs = $2",
	2, {TEXTOID, INT4OID}
};

/*
 * A function of the extension's own schema (whatever it is: the callers'
 * search_path does not name it), by name and number of arguments.
 */
Oid
pf_ext_func(const char *name, int nargs)
{
	Datum		v[2] = {CStringGetTextDatum(name), Int32GetDatum(nargs)};
	bool		isnull;

	if (pf_exec(&st_ext_func, v, NULL, 1) != 1)
		elog(ERROR, "parflow: function %s of %d arguments not found", name, nargs);
	return DatumGetObjectId(pf_datum(0, 1, &isnull));
}

/*
 * After a task failed for good: mark the run blocked, announced with its
 * failure report, when nothing more can run (no task ready, at work or
 * awaiting an event, which a signal may still bring).  A failure and the completion
 * of the run's last other task, committing at the same moment, may each
 * miss the other: the dispatcher's next pass checks again.  Only the update
 * that changes the state announces it.
 */
void
pf_check_blocked(int64 run)
{
	Datum		v[1] = {Int64GetDatum(run)};
	Datum		report;
	bool		isnull;

	if (pf_exec(&st_block, v, NULL, 0) == 0)
		return;
	/* it must see what this transaction wrote, as a statement of SPI's would */
	CommandCounterIncrement();
	PushActiveSnapshot(GetTransactionSnapshot());
	report = OidFunctionCall1(pf_ext_func("parflow_failures", 1), Int64GetDatum(run));
	PopActiveSnapshot();
	v[0] = report;
	pf_exec(&st_failures_detail, v, NULL, 0);
	pf_announce(run, "blocked", pf_datum(0, 1, &isnull), true);
	pf_wake_at_commit();
}

/* ---- a lost attempt ---------------------------------------------------- */

static PfStmt st_stage_retry = {
	"SELECT s.max_attempts, s.retry_backoff, s.name, g.on_failure = 'fail_fast' "
	"  FROM parflow.stage s JOIN parflow.stage_group g "
	"    ON g.version_id = s.version_id AND g.ord = s.group_ord "
	" WHERE s.version_id = $1 AND s.ord = $2",
	2, {INT8OID, INT4OID}
};

static PfStmt st_retry_task = {
	"WITH u AS (UPDATE parflow.task SET state = $2, token = NULL, lease_until = NULL, error = $3, "
	"                  interrupted_at = NULL, "
	"                  not_before = CASE WHEN $2 = 'ready' THEN clock_timestamp() + $4 * power(2, $5) END, "
	"                  finished_at = CASE WHEN $2 = 'failed' THEN clock_timestamp() END "
	"            WHERE id = $1 RETURNING run_id, id) "
	"INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"SELECT u.run_id, u.id, CASE WHEN $2 = 'ready' THEN 'retry' WHEN $6 = 'rejected' THEN 'rejected' ELSE 'failed' END, "
	"       jsonb_build_object('why', $6, 'attempt', $7, 'max_attempts', $8, 'worker', $9, 'error', $3) "
	"  FROM u",
	9, {INT8OID, TEXTOID, TEXTOID, INTERVALOID, FLOAT8OID, TEXTOID, INT4OID, INT4OID, TEXTOID}
};

static PfStmt st_fail_fast = {
	"WITH u AS (UPDATE parflow.task tk SET state = 'cancelled', finished_at = clock_timestamp() "
	"            WHERE tk.run_id = $1 AND tk.group_ord = $2 "
	"              AND tk.state IN ('waiting', 'ready', 'dispatched', 'awaiting') "
	"           RETURNING tk.id) "
	"INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"SELECT $1, u.id, 'cancelled', jsonb_build_object('why', 'fail_fast', 'failed_stage', $3) FROM u",
	3, {INT8OID, INT4OID, TEXTOID}
};

static PfStmt st_run_failed = {
	"UPDATE parflow.run r SET failed = r.failed + 1 WHERE r.id = $1",
	1, {INT8OID}
};

/*
 * Back to ready (with backoff) after a lost attempt while attempts are left
 * and the error is retryable, else failed for good.  A task that fails for
 * good in a fail_fast group stops the rest of its group: what has not
 * started yet is cancelled (tasks at work finish).  Returns the new state.
 */
char *
pf_retry_or_fail(PfTask *t, const char *why, const char *err, bool retryable)
{
	Datum		v[9];
	char		n[9];
	int32		max_attempts;
	Datum		backoff;
	char	   *stage;
	bool		fail_fast;
	bool		retry;
	bool		isnull;
	int			used;

	v[0] = Int64GetDatum(t->version_id);
	v[1] = Int32GetDatum(t->stage_ord);
	if (pf_exec(&st_stage_retry, v, NULL, 1) != 1)
		elog(ERROR, "parflow: stage %d of version " INT64_FORMAT " not found",
			 t->stage_ord, t->version_id);
	max_attempts = pf_int4(0, 1);
	backoff = datumCopy(pf_datum(0, 2, &isnull), false, sizeof(Interval));
	stage = pf_text(0, 3);
	fail_fast = pf_bool(0, 4);

	used = t->attempt - t->base_attempt;
	retry = retryable && used < max_attempts;
	memset(n, ' ', sizeof(n));
	v[0] = Int64GetDatum(t->id);
	v[1] = CStringGetTextDatum(retry ? "ready" : "failed");
	v[2] = CStringGetTextDatum(err);
	v[3] = backoff;
	v[4] = Float8GetDatum((double) Min(Max(used - 1, 0), 10));
	v[5] = CStringGetTextDatum(why);
	v[6] = Int32GetDatum(t->attempt);
	v[7] = Int32GetDatum(max_attempts);
	v[8] = t->worker ? CStringGetTextDatum(t->worker) : (Datum) 0;
	n[8] = t->worker ? ' ' : 'n';
	pf_exec(&st_retry_task, v, n, 0);

	if (!retry)
	{
		if (fail_fast)
		{
			v[0] = Int64GetDatum(t->run_id);
			v[1] = Int32GetDatum(t->group_ord);
			v[2] = CStringGetTextDatum(stage);
			pf_exec(&st_fail_fast, v, NULL, 0);
		}
		v[0] = Int64GetDatum(t->run_id);
		pf_exec(&st_run_failed, v, NULL, 0);
		release_holds(t->run_id);
		pf_check_blocked(t->run_id);
	}
	pf_wake_at_commit();
	return retry ? "ready" : "failed";
}

/* ---- a failed verification --------------------------------------------- */

static PfStmt st_verification = {
	"SELECT s.name, s.max_route_backs, s.verifies_ord, vs.name "
	"  FROM parflow.stage s" PF_STAGE_OF("vs", "s.version_id", "s.verifies_ord", "name")
	" WHERE s.version_id = $1 AND s.ord = $2",
	2, {INT8OID, INT4OID}
};

static PfStmt st_set_output = {
	"UPDATE parflow.task SET output = $2 WHERE id = $1",
	2, {INT8OID, JSONBOID}
};

/* Keep the output a failed attempt reported (its findings, for people). */
void
pf_set_output(int64 task, Datum output)
{
	Datum		v[2] = {Int64GetDatum(task), output};

	pf_exec(&st_set_output, v, NULL, 0);
}

static PfStmt st_lock_verified = {
	"SELECT tk.id, tk.state, tk.group_ord FROM parflow.task tk "
	" WHERE tk.run_id = $1 AND tk.stage_ord = $2 FOR UPDATE",
	2, {INT8OID, INT4OID}
};

static PfStmt st_reopen_barrier = {
	"UPDATE parflow.run_group rg SET pending = rg.pending + 1 "
	" WHERE rg.run_id = $1 AND rg.group_ord = $2 AND rg.pending > 0",
	2, {INT8OID, INT4OID}
};

static PfStmt st_recount_dependents = {
	"UPDATE parflow.task tk SET pending = tk.pending + 1 FROM parflow.stage_dep d "
	" WHERE d.version_id = $2 AND d.dep_ord = $3 "
	"   AND tk.run_id = $1 AND tk.stage_ord = d.stage_ord AND tk.item IS NULL AND tk.state <> 'skipped'",
	3, {INT8OID, INT8OID, INT4OID}
};

static PfStmt st_reopen_verified = {
	"WITH u AS (UPDATE parflow.task tk SET state = 'ready', base_attempt = tk.attempt, finished_at = NULL, "
	"                  output = NULL, not_before = NULL, skip_barrier = NOT $3, "
	"                  feedback = jsonb_build_object('verification', $4, 'round', $5, 'error', $6, 'output', $7) "
	"            WHERE tk.id = $2 RETURNING tk.id), "
	"r AS (UPDATE parflow.run_remaining rr SET remaining = rr.remaining + 1 "
	"       WHERE rr.run_id = $1 AND rr.shard = $2 % " CppAsString2(PF_SHARDS) ") "
	"INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"SELECT $1, u.id, 'routed_back', jsonb_build_object('verification', $4, 'round', $5, 'error', $6) FROM u",
	7, {INT8OID, INT8OID, BOOLOID, TEXTOID, INT4OID, TEXTOID, JSONBOID}
};

static PfStmt st_route_back = {
	"WITH u AS (UPDATE parflow.task tk SET state = CASE WHEN tk.pending > 0 THEN 'waiting' ELSE 'ready' END, "
	"                  token = NULL, lease_until = NULL, interrupted_at = NULL, "
	"                  route_backs = tk.route_backs + 1, base_attempt = tk.attempt, error = $3, output = $4 "
	"            WHERE tk.id = $2 RETURNING tk.id) "
	"INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"SELECT $1, u.id, 'route_back', "
	"       jsonb_build_object('stage', $5, 'round', $6, 'max_route_backs', $7, "
	"                          'attempt', $8, 'worker', $9, 'error', $3) FROM u",
	9, {INT8OID, INT8OID, TEXTOID, JSONBOID, TEXTOID, INT4OID, INT4OID, INT4OID, TEXTOID}
};

/*
 * A failed verification sends the stage it verifies back to its agent: the
 * verified task is re-opened with the failure as feedback (a new round of
 * attempts), everything that depends on it (the verification included)
 * waits for it again, and the verification runs once it is done.  After
 * max_route_backs the verification fails for good.
 */
void
pf_route_back(PfTask *t, const char *err, Datum out_doc, bool has_out)
{
	Datum		v[9];
	char		n[9];
	char	   *name;
	char	   *vname;
	int32		max_route_backs;
	int32		verifies_ord;
	int32		round = t->route_backs + 1;

	v[0] = Int64GetDatum(t->version_id);
	v[1] = Int32GetDatum(t->stage_ord);
	if (pf_exec(&st_verification, v, NULL, 1) != 1)
		elog(ERROR, "parflow: verification stage %d not found", t->stage_ord);
	name = pf_text(0, 1);
	max_route_backs = pf_int4(0, 2);
	verifies_ord = pf_int4(0, 3);
	vname = pf_text(0, 4);

	if (t->route_backs >= max_route_backs)
	{
		pf_retry_or_fail(t, "verification failed", err, false);
		if (has_out)
			pf_set_output(t->id, out_doc);
		else
		{
			v[0] = Int64GetDatum(t->id);
			pf_exec(&st_set_output, v, " n", 0);
		}
		return;
	}

	v[0] = Int64GetDatum(t->run_id);
	v[1] = Int32GetDatum(verifies_ord);
	if (pf_exec(&st_lock_verified, v, NULL, 1) == 1 &&
		strcmp(pf_text(0, 2), "succeeded") == 0)
	{
		int64		vid = pf_int8(0, 1);
		int32		vgroup = pf_int4(0, 3);
		bool		barrier_open;

		/*
		 * The verified stage is not done any more: its dependents (this
		 * verification among them) count it again, and so does its group
		 * barrier unless that has already passed.
		 */
		v[0] = Int64GetDatum(t->run_id);
		v[1] = Int32GetDatum(vgroup);
		barrier_open = pf_exec(&st_reopen_barrier, v, NULL, 0) > 0;
		v[1] = Int64GetDatum(t->version_id);
		v[2] = Int32GetDatum(verifies_ord);
		pf_exec(&st_recount_dependents, v, NULL, 0);
		memset(n, ' ', sizeof(n));
		v[1] = Int64GetDatum(vid);
		v[2] = BoolGetDatum(barrier_open);
		v[3] = CStringGetTextDatum(name);
		v[4] = Int32GetDatum(round);
		v[5] = CStringGetTextDatum(err);
		v[6] = out_doc;
		n[6] = has_out ? ' ' : 'n';
		pf_exec(&st_reopen_verified, v, n, 0);
	}
	/* (else another verification sent it back already, and this one counts it) */

	memset(n, ' ', sizeof(n));
	v[0] = Int64GetDatum(t->run_id);
	v[1] = Int64GetDatum(t->id);
	v[2] = CStringGetTextDatum(err);
	v[3] = out_doc;
	n[3] = has_out ? ' ' : 'n';
	v[4] = CStringGetTextDatum(vname);
	v[5] = Int32GetDatum(round);
	v[6] = Int32GetDatum(max_route_backs);
	v[7] = Int32GetDatum(t->attempt);
	v[8] = t->worker ? CStringGetTextDatum(t->worker) : (Datum) 0;
	n[8] = t->worker ? ' ' : 'n';
	pf_exec(&st_route_back, v, n, 0);
	pf_wake_at_commit();
}

/* ---- the hand-over ----------------------------------------------------- */

/*
 * The hand-over in one statement: the run's next ready task in dispatch
 * order is locked (skipped when another transaction holds it), the caps and
 * rules are looked at, and the task is marked dispatched when it may be.
 * $1 run, $2 version, $3 the completed task's agent, $4 the run's
 * max_parallel, $5 whether a note can be queued, $6 the database's cap, $7
 * the completed task, $8 parflow.fair_share, $9 the completed task's stage.
 * Another run's ready task comes first when it does in dispatch order, or,
 * under fair share, when its run has fewer tasks at work at equal priority:
 * on a tie the completing run keeps its slot (both have the fewest; the
 * pass would break the tie by dispatch order, but handing over saves a
 * pass per completion when many runs share the cap).  A concurrency rule
 * the completed task's stage was not counted in leaves the choice to the
 * pass.  HANDOVER_PICK(fuse) is the choice (CTE k, its column fuse the
 * expression fuse), HANDOVER_MAY whether the slot may go to k's task.
 */
#define HANDOVER_PICK(fuse) \
	"WITH b AS (SELECT tk.id, tk.agent, tk.priority, tk.rank, tk.stage_ord FROM parflow.task tk " \
	"            WHERE tk.run_id = $1 AND tk.state = 'ready' AND " PF_READY_NOW("tk") \
	"            ORDER BY " PF_DISPATCH_ORDER("tk") " LIMIT 1 FOR UPDATE SKIP LOCKED), " \
	"ra AS (SELECT count(*)::integer AS n FROM parflow.task a " \
	"        WHERE" PF_ACTIVE("a") " AND a.run_id = $1), " \
	"k AS (SELECT b.id, b.agent, s.name, (SELECT ra.n FROM ra) AS run_active, " \
	"       (SELECT count(*)::integer FROM parflow.task a WHERE" PF_ACTIVE("a") ") AS all_active, " \
	"       EXISTS (SELECT FROM parflow.affinity a WHERE a.version_id = $2 " \
	"                  AND b.agent = ANY (a.agents) AND NOT $3 = ANY (a.agents)) " \
	"       OR EXISTS (SELECT FROM parflow.concurrency c WHERE c.version_id = $2 " \
	"                  AND c.stage_ords IS NOT NULL AND b.stage_ord = ANY (c.stage_ords) " \
	"                  AND NOT $9 = ANY (c.stage_ords)) AS other_slot, " \
	"       CASE WHEN NOT $8 THEN " \
	"            EXISTS (SELECT FROM parflow.run xr " \
	"                     CROSS JOIN LATERAL (SELECT x.priority, x.rank, x.id FROM parflow.task x " \
	"                                          WHERE x.run_id = xr.id AND x.state = 'ready' AND " PF_READY_NOW("x") \
	"                                          ORDER BY " PF_DISPATCH_ORDER("x") " LIMIT 1) x " \
	"                     WHERE xr.state = 'running' AND xr.id <> $1 AND " PF_BEFORE("x", "b") ") " \
	"       ELSE EXISTS (SELECT FROM (SELECT x.run_id FROM parflow.task x " \
	"                                  WHERE " PF_ALL_READY("x") " AND x.priority < b.priority AND " PF_READY_NOW("x") \
	"                                    AND EXISTS (SELECT FROM parflow.run xr WHERE xr.id = x.run_id AND xr.state = 'running') " \
	"                                  ORDER BY " PF_DISPATCH_ORDER("x") " LIMIT 1) x) " \
	"            OR ((SELECT ra.n FROM ra) > 0 AND EXISTS ( " \
	"                SELECT FROM parflow.run xr " \
	"                 WHERE xr.state = 'running' AND xr.id <> $1 AND xr.priority = b.priority " \
	"                   AND EXISTS (SELECT FROM (SELECT x.id FROM parflow.task x " \
	"                                             WHERE x.run_id = xr.id AND x.state = 'ready' AND " PF_READY_NOW("x") \
	"                                             ORDER BY " PF_DISPATCH_ORDER("x") " LIMIT 1) x) " \
	"                   AND (SELECT count(*)::integer FROM parflow.task xa " \
	"                         WHERE" PF_ACTIVE("xa") " AND xa.run_id = xr.id) < (SELECT ra.n FROM ra))) " \
	"       END AS not_next, " \
	"       EXISTS (SELECT FROM (SELECT tk.id FROM parflow.task tk WHERE tk.run_id = $1 AND tk.state = 'ready' " \
	"                             ORDER BY " PF_DISPATCH_ORDER("tk") " LIMIT 2) m WHERE m.id <> b.id) AS more_ready, " \
	"       " fuse " AS fuse " \
	"      FROM b" PF_STAGE_OF("s", "$2", "b.stage_ord", "name") "), "
#define HANDOVER_MAY \
	" k.run_active < $4 AND k.all_active < $6 AND NOT k.other_slot AND NOT k.not_next "
#define HANDOVER_TO_DISPATCHED \
	"uh AS (UPDATE parflow.task t SET state = 'dispatched', dispatched_at = clock_timestamp() FROM k " \
	"        WHERE t.id = k.id AND $5 AND NOT k.fuse AND " HANDOVER_MAY " RETURNING t.id), "
#define HANDOVER_COLS "k.id, k.agent, k.name, k.run_active, k.all_active, k.more_ready"

static PfStmt st_handover = {
	HANDOVER_PICK("false")
	HANDOVER_TO_DISPATCHED
	"e AS (INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"      SELECT $1, uh.id, 'dispatched', jsonb_build_object('handover', $7) FROM uh) "
	"SELECT " HANDOVER_COLS ", EXISTS (SELECT FROM uh) FROM k",
	9, {INT8OID, INT8OID, TEXTOID, INT4OID, BOOLOID, INT4OID, INT8OID, BOOLOID, INT4OID},
	.own_xid = true
};

/*
 * The hand-over that claims the task it hands the slot to, for claim args
 * $10 agent, $11 worker, $12 lease: when that task is of the claiming
 * agent's kind and no dispatched task of that kind comes before it (the
 * claim would have taken that one), it goes from ready to running in one
 * update, with both its events, and the claim's result row follows the
 * hand-over's columns; else the hand-over is st_handover's.
 */
static PfStmt st_handover_claim = {
	HANDOVER_PICK("(b.agent = $10 AND NOT EXISTS (SELECT FROM parflow.task d WHERE d.agent = $10 "
				  "AND d.state = 'dispatched' AND " PF_BEFORE("d", "b") "))")
	HANDOVER_TO_DISPATCHED
	"u AS (UPDATE parflow.task tk SET " PF_CLAIM_SET("$11", "$12") ", dispatched_at = clock_timestamp() "
	"        FROM k WHERE tk.id = k.id AND k.fuse AND " HANDOVER_MAY
	"      RETURNING " PF_CLAIM_RETURNING "), "
	"e AS (INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"      SELECT $1, x.id, x.kind, x.detail "
	"        FROM (SELECT d.id, 1, 'dispatched', jsonb_build_object('handover', $7) "
	"                FROM (TABLE uh UNION ALL SELECT u.id FROM u) d "
	"              UNION ALL SELECT u.id, 2, 'running', " PF_RUNNING_DETAIL("u") " FROM u) x(id, n, kind, detail) "
	"       ORDER BY x.n) "
	"SELECT " HANDOVER_COLS ", EXISTS (SELECT FROM uh) OR EXISTS (SELECT FROM u), c.* "
	"  FROM k LEFT JOIN (" PF_CLAIM_RESULT ") c ON true",
	12, {INT8OID, INT8OID, TEXTOID, INT4OID, BOOLOID, INT4OID, INT8OID, BOOLOID, INT4OID,
	TEXTOID, TEXTOID, INTERVALOID},
	.own_xid = true
};

/*
 * The slot of completed task t goes to the best ready task of its run when
 * the dispatcher would choose that task next and it needs no slot the
 * completed one did not hold (every affinity rule that covers it covered t,
 * and no cap was lowered below the tasks at work): one task leaves, one
 * enters, so the caps hold by construction.  Its NOTIFY is sent by the
 * dispatcher once this transaction has committed; with claim (the
 * completing agent's next claim), a task the claim would take is claimed
 * here instead, and needs none (*claimed: the last result's row 0 holds,
 * from column PF_HANDOVER_CLAIM_COL, the claim's result row).  Returns
 * whether a dispatch pass could still do something (nothing handed over,
 * or room left and more ready tasks in the run); *handed_task is the task
 * handed the slot, or 0.
 */
bool
pf_handover(PfTask *t, const PfClaimArgs *claim, int64 *handed_task, bool *claimed)
{
	Datum		v[12];
	int64		b;
	int			run_active,
				all_active;
	char	   *agent;
	char	   *stage;
	char	   *payload;
	bool		more_ready;

	*handed_task = 0;
	*claimed = false;
	if (strcmp(t->run_state, "running") != 0 || !pf_note_possible())
		return true;
	v[0] = Int64GetDatum(t->run_id);
	v[1] = Int64GetDatum(t->version_id);
	v[2] = CStringGetTextDatum(t->agent);
	v[3] = Int32GetDatum(t->run_max_parallel);
	v[4] = BoolGetDatum(true);
	v[5] = Int32GetDatum(pf_max_parallel_stages);
	v[6] = Int64GetDatum(t->id);
	v[7] = BoolGetDatum(pf_fair_share);
	v[8] = Int32GetDatum(t->stage_ord);
	if (claim != NULL)
	{
		v[9] = CStringGetTextDatum(claim->agent);
		v[10] = CStringGetTextDatum(claim->worker);
		v[11] = claim->lease;
	}
	if (pf_exec(claim ? &st_handover_claim : &st_handover, v, NULL, 1) != 1 || !pf_bool(0, 7))
		return true;
	b = pf_int8(0, 1);
	agent = pf_text(0, 2);
	stage = pf_text(0, 3);
	run_active = pf_int4(0, 4);
	all_active = pf_int4(0, 5);
	more_ready = pf_bool(0, 6);
	*handed_task = b;
	if (claim != NULL && !pf_isnull(0, PF_HANDOVER_CLAIM_COL))
		*claimed = true;
	else
	{
		payload = pf_payload("dispatch", b, t->run_id, stage, NULL);
		/* (a note too long for the ring: the agent is told at once instead) */
		if (!pf_note_at_commit(psprintf("parflow_%s", agent), payload))
			pf_notify_agent(agent, payload);
	}
	return pf_room(t->run_max_parallel, run_active + 1) > 0 &&
		pf_room(pf_max_parallel_stages, all_active + 1) > 0 && more_ready;
}

/* ---- SQL faces, for parflow_start and the operators' functions --------- */

static void
connect_spi(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "parflow: SPI_connect failed");
}

/* parflow._done(run bigint, ords integer[]) */
Datum
parflow_done(PG_FUNCTION_ARGS)
{
	int64		run = PG_GETARG_INT64(0);
	Datum		ords = PG_GETARG_DATUM(1);
	static PfStmt st_version = {
		"SELECT version_id FROM parflow.run WHERE id = $1", 1, {INT8OID}
	};
	Datum		v[1] = {Int64GetDatum(run)};

	connect_spi();
	if (pf_exec(&st_version, v, NULL, 1) == 1)
		pf_done(run, pf_int8(0, 1), ords);
	SPI_finish();
	PG_RETURN_VOID();
}

/* parflow._finish_if_done(run bigint) */
Datum
parflow_finish_if_done(PG_FUNCTION_ARGS)
{
	connect_spi();
	pf_finish_if_done(PG_GETARG_INT64(0));
	SPI_finish();
	PG_RETURN_VOID();
}

/* parflow._check_blocked(run bigint) */
Datum
parflow_check_blocked(PG_FUNCTION_ARGS)
{
	connect_spi();
	pf_check_blocked(PG_GETARG_INT64(0));
	SPI_finish();
	PG_RETURN_VOID();
}

/* parflow._announce(run bigint, kind text, detail jsonb DEFAULT '{}') */
Datum
parflow_announce(PG_FUNCTION_ARGS)
{
	int64		run = PG_GETARG_INT64(0);
	char	   *kind = text_to_cstring(PG_GETARG_TEXT_PP(1));

	connect_spi();
	pf_announce(run, kind, PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2), !PG_ARGISNULL(2));
	SPI_finish();
	PG_RETURN_VOID();
}

/* parflow._payload(task bigint, run bigint, stage text): for SQL callers */
Datum
parflow_payload(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(pf_payload("dispatch", PG_GETARG_INT64(0), PG_GETARG_INT64(1),
												text_to_cstring(PG_GETARG_TEXT_PP(2)), NULL)));
}

/* parflow._shard(task bigint) returns smallint: for parflow_start */
Datum
parflow_shard(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT16((int16) (PG_GETARG_INT64(0) % PF_SHARDS));
}

/* parflow._active_states() returns text[]: for the SQL reports and views */
Datum
parflow_active_states(PG_FUNCTION_ARGS)
{
	Datum		states[2] = {CStringGetTextDatum(PF_ACTIVE_STATE_1), CStringGetTextDatum(PF_ACTIVE_STATE_2)};

	PG_RETURN_ARRAYTYPE_P(construct_array(states, 2, TEXTOID, -1, false, TYPALIGN_INT));
}
