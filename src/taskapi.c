/*
 * taskapi.c - the agent API: claim (one task or a batch), heartbeat,
 * complete (with the hand-over of its slot), complete_many, complete and
 * claim in one call, fail and release.  Each is a thin LANGUAGE C entry
 * point over prepared statements (stmt.c) and the shared transitions
 * (runstate.c).  A call that holds a task takes its run's lock (shared)
 * before the task's row, the order every path follows (pf_lock_run); every
 * check that can refuse a call runs before anything is written, so a
 * refused call changes nothing.
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/uuid.h"

#include "core.h"
#include "guc.h"
#include "shmem.h"
#include "stmt.h"

PG_FUNCTION_INFO_V1(parflow_claim);
PG_FUNCTION_INFO_V1(parflow_heartbeat);
PG_FUNCTION_INFO_V1(parflow_complete);
PG_FUNCTION_INFO_V1(parflow_complete_many);
PG_FUNCTION_INFO_V1(parflow_complete_and_claim);
PG_FUNCTION_INFO_V1(parflow_fail);
PG_FUNCTION_INFO_V1(parflow_release);
PG_FUNCTION_INFO_V1(parflow_may_claim);
PG_FUNCTION_INFO_V1(parflow_lock_run);

static void
connect_spi(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "parflow: SPI_connect failed");
}

/* ---- the run lock ------------------------------------------------------ */

/*
 * A run's lock, a heavyweight lock on the run id (no row is written to take
 * it): agents' calls and the pass take it shared before a task's row,
 * operators' functions exclusive before the run's row and its tasks.  So
 * every path locks a run before its tasks, and a cancel racing a
 * completion waits instead of deadlocking.  With nowait, returns false
 * instead of waiting.
 */
bool
pf_lock_run(int64 run, bool exclusive, bool nowait)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) ((uint64) run >> 32), (uint32) run,
						 PF_RUN_LOCK_CLASS);
	return LockAcquire(&tag, exclusive ? ExclusiveLock : ShareLock, false, nowait)
		!= LOCKACQUIRE_NOT_AVAIL;
}

/*
 * parflow._lock_run(run bigint, exclusive boolean DEFAULT false, nowait
 * boolean DEFAULT false) returns boolean: whether the lock is held.
 */
Datum
parflow_lock_run(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(pf_lock_run(PG_GETARG_INT64(0),
							   PG_NARGS() > 1 && !PG_ARGISNULL(1) && PG_GETARG_BOOL(1),
							   PG_NARGS() > 2 && !PG_ARGISNULL(2) && PG_GETARG_BOOL(2)));
}

/* ---- who may claim ----------------------------------------------------- */

/* Whether the session's role may claim tasks of agent kind $1. */
#define PF_MAY_CLAIM \
	"(NOT EXISTS (SELECT FROM parflow.agent_role) " \
	"    OR coalesce((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = session_user), false) " \
	"    OR pg_catalog.pg_has_role(session_user, 'parflow_operator', 'MEMBER') " \
	"    OR EXISTS (SELECT FROM parflow.agent_role ar " \
	"                WHERE ar.agent IN ($1, '*') " \
	"                  AND EXISTS (SELECT FROM pg_catalog.pg_roles pr WHERE pr.rolname = ar.role_name) " \
	"                  AND pg_catalog.pg_has_role(session_user, ar.role_name, 'MEMBER')))"

static PfStmt st_may_claim = {
	"SELECT " PF_MAY_CLAIM,
	1, {TEXTOID}
};

/* Raise 42501 unless the session's role may claim tasks of this agent kind. */
void
pf_may_claim(const char *agent)
{
	Datum		v[1] = {CStringGetTextDatum(agent)};

	pf_exec(&st_may_claim, v, NULL, 1);
	if (!pf_bool(0, 1))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" may not claim tasks of agent kind \"%s\"",
						GetUserNameFromId(GetSessionUserId(), false), agent),
				 errhint("An operator grants it with parflow_allow_agent(role, agent).")));
}

/* parflow._may_claim(agent text): SQL face of pf_may_claim */
Datum
parflow_may_claim(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_VOID();
	connect_spi();
	pf_may_claim(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	SPI_finish();
	PG_RETURN_VOID();
}

/* ---- claim -------------------------------------------------------------- */

static bool
blank(const char *s)
{
	/* as btrim() sees it: spaces only */
	for (; *s; s++)
		if (*s != ' ')
			return false;
	return true;
}

static void
check_claim_args(FunctionCallInfo fcinfo, int first, PfClaimArgs *a, bool with_max)
{
	Interval   *lease;
	Interval	day = {0};

	if (PG_ARGISNULL(first) || PG_ARGISNULL(first + 1) || PG_ARGISNULL(first + 2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("agent, worker and lease must not be null")));
	a->agent = text_to_cstring(PG_GETARG_TEXT_PP(first));
	a->worker = text_to_cstring(PG_GETARG_TEXT_PP(first + 1));
	lease = PG_GETARG_INTERVAL_P(first + 2);
	a->lease = PointerGetDatum(lease);
	if (blank(a->agent))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("agent must be a non-empty name")));
	if (blank(a->worker))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("worker must be a non-empty name"),
				 errhint("Name the process that claims, for example host and pid.")));
	day.day = 1;
	if (DatumGetInt32(DirectFunctionCall2(interval_cmp, PointerGetDatum(lease),
										  PointerGetDatum(&(Interval) {0}))) <= 0 ||
		DatumGetInt32(DirectFunctionCall2(interval_cmp, PointerGetDatum(lease),
										  PointerGetDatum(&day))) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lease must be between 0 and 1 day"),
				 errdetail("Found %s.",
						   DatumGetCString(DirectFunctionCall1(interval_out, PointerGetDatum(lease))))));
	a->max_tasks = 1;
	if (with_max)
	{
		if (PG_ARGISNULL(first + 3))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("max_tasks must not be null"),
					 errhint("Give the largest number of tasks to claim at once; the default is 1.")));
		a->max_tasks = PG_GETARG_INT32(first + 3);
		if (a->max_tasks < 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_tasks must be at least 1"),
					 errdetail("Found %d.", a->max_tasks)));
		/* a larger batch is no faster, and would hold its tasks' leases together */
		a->max_tasks = Min(a->max_tasks, PF_MAX_BATCH);
	}
}

/*
 * Claim up to max_tasks dispatched tasks of a kind, in dispatch order, each
 * with a fresh lease token (tasks another claim holds, or whose run an
 * operator holds, are passed over, and a wait PostgreSQL would make anyway
 * is cut short: see pf_exec); the input of each is PF_TASK_INPUT
 * (core.h).
 */
static PfStmt st_claim = {
	"WITH ok AS (SELECT " PF_MAY_CLAIM " AS ok), "
	"c AS (SELECT tk.id FROM parflow.task tk WHERE tk.agent = $1 AND tk.state = 'dispatched' "
	"              AND (SELECT ok.ok FROM ok) AND parflow._lock_run(tk.run_id, false, true) "
	"            ORDER BY " PF_DISPATCH_ORDER("tk") " LIMIT $4 FOR UPDATE SKIP LOCKED), "
	"u AS (UPDATE parflow.task tk SET " PF_CLAIM_SET("$2", "$3") " FROM c WHERE tk.id = c.id "
	"      RETURNING " PF_CLAIM_RETURNING "), "
	"e AS (INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"      SELECT u.run_id, u.id, 'running', " PF_RUNNING_DETAIL("u")
	"        FROM u ORDER BY " PF_DISPATCH_ORDER("u") ") "
	PF_CLAIM_RESULT
	" ORDER BY " PF_DISPATCH_ORDER("u"),
	4, {TEXTOID, TEXTOID, INTERVALOID, INT4OID}
};

/* The input of claimed task $1 of run $2, its upstream outputs included. */
static PfStmt st_claim_input = {
	PF_TASK_INPUT_QUERY("", ""),
	2, {INT8OID, INT8OID}
};

/*
 * Row row of result tt, a claim's from column col on, into the function's
 * result; the input made again with the upstream outputs when the task
 * depends on stages (see PF_CLAIM_RESULT).
 */
static void
put_claim_row(ReturnSetInfo *rsinfo, SPITupleTable *tt, int row, int col)
{
	Datum		out[PF_CLAIM_COLS];
	bool		nulls[PF_CLAIM_COLS];
	bool		isnull;
	int			c;

	for (c = 0; c < PF_CLAIM_COLS; c++)
		out[c] = SPI_getbinval(tt->vals[row], tt->tupdesc, col + c, &nulls[c]);
	if (DatumGetBool(SPI_getbinval(tt->vals[row], tt->tupdesc, col + PF_CLAIM_COLS, &isnull)) && !isnull)
	{
		Datum		v[2] = {out[0], out[2]};

		if (pf_exec(&st_claim_input, v, NULL, 1) != 1)
			elog(ERROR, "parflow: the input of task " INT64_FORMAT " was not found", DatumGetInt64(out[0]));
		out[5] = pf_datum(0, 1, &nulls[5]);
	}
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, nulls);
}

/*
 * Claim into the function's result (SPI connected, result set up); checked:
 * the caller has run pf_may_claim already.
 */
static int
claim_into(ReturnSetInfo *rsinfo, PfClaimArgs *a, int64 *first, bool checked)
{
	Datum		v[4] = {CStringGetTextDatum(a->agent), CStringGetTextDatum(a->worker),
	a->lease, Int32GetDatum(a->max_tasks)};
	int			n,
				i;

	SPITupleTable *tt;

	n = pf_exec(&st_claim, v, NULL, 0);
	tt = SPI_tuptable;
	/* the claim checks the role too: no row may mean it may not claim */
	if (n == 0 && !checked)
		pf_may_claim(a->agent);
	else if (n > 0 && first)
		*first = pf_int8(0, 1);
	for (i = 0; i < n; i++)
		put_claim_row(rsinfo, tt, i, 1);
	return n;
}

/*
 * parflow_claim(agent text, worker text, lease interval DEFAULT '5 min',
 * max_tasks integer DEFAULT 1): up to max_tasks rows.
 */
Datum
parflow_claim(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PfClaimArgs a;

	check_claim_args(fcinfo, 0, &a, PG_NARGS() > 3);
	InitMaterializedSRF(fcinfo, 0);
	connect_spi();
	claim_into(rsinfo, &a, NULL, false);
	SPI_finish();
	return (Datum) 0;
}

/* ---- the task a call holds --------------------------------------------- */

/*
 * The run's lock is taken in the WHERE clause, before the row is locked
 * (the locking happens above the scan): the one statement takes both, in
 * the one order.
 */
static PfStmt st_held = {
	"SELECT t.id, t.run_id, t.stage_ord, t.group_ord, t.agent, t.state, t.token = $2, "
	"       t.lease_until < clock_timestamp(), t.lease_until::text, t.attempt, t.base_attempt, "
	"       t.route_backs, t.worker, t.interrupted_at IS NOT NULL, r.version_id, r.state, "
	"       r.max_parallel, r.failed, s.verifies_ord IS NOT NULL "
	"  FROM parflow.task t JOIN parflow.run r ON r.id = t.run_id "
	PF_STAGE_OF("s", "r.version_id", "t.stage_ord", "verifies_ord")
	" WHERE t.id = $1 AND parflow._lock_run(t.run_id) "
	"   FOR UPDATE OF t",
	2, {INT8OID, UUIDOID}
};

/* Why a call was refused, for a batch to report instead of raising. */
typedef struct PfRefusal
{
	int			sqlerrcode;
	char	   *message;
	char	   *detail;
	char	   *hint;
} PfRefusal;

/* The task of row r of st_held (or of a statement with its columns). */
#define PF_HELD_COLS 19
static void
load_held(int r, PfTask *t, bool *is_verification)
{
	t->id = pf_int8(r, 1);
	t->run_id = pf_int8(r, 2);
	t->stage_ord = pf_int4(r, 3);
	t->group_ord = pf_int4(r, 4);
	t->agent = pf_text(r, 5);
	t->attempt = pf_int4(r, 10);
	t->base_attempt = pf_int4(r, 11);
	t->route_backs = pf_int4(r, 12);
	t->worker = pf_text(r, 13);
	t->interrupted = pf_bool(r, 14);
	t->version_id = pf_int8(r, 15);
	t->run_state = pf_text(r, 16);
	t->run_max_parallel = pf_int4(r, 17);
	t->run_failed = pf_int4(r, 18);
	if (is_verification)
		*is_verification = pf_bool(r, 19);
}

/*
 * Whether a token holds its task (found in state, the token equal, the
 * lease not expired); else why not, as every agent call says it.
 */
static bool
token_holds(int64 task, const char *state, bool token_ok, bool expired,
			const char *lease_end, PfRefusal *why)
{
	memset(why, 0, sizeof(*why));
	if (!token_ok || strcmp(state, "running") != 0)
	{
		why->sqlerrcode = ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE;
		why->message = psprintf("task " INT64_FORMAT " is not held by this token", task);
		why->detail = strcmp(state, "running") == 0 ? pstrdup("Another lease holds the task.")
			: psprintf("The task is in state %s.", state);
		why->hint = pstrdup("The lease may have expired or the task was re-dispatched; claim new work with parflow_claim().");
		return false;
	}
	if (expired)
	{
		why->sqlerrcode = ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE;
		why->message = psprintf("lease of task " INT64_FORMAT " has expired", task);
		why->detail = psprintf("The lease ended at %s.", lease_end);
		why->hint = pstrdup("Send parflow_heartbeat() more often than the lease given to parflow_claim().");
		return false;
	}
	return true;
}

/*
 * Lock the task held by (task, token) and its run; fill *t, or say in *why
 * why the token does not hold it (and lock nothing more).
 */
static bool
held_try(int64 task, Datum token, PfTask *t, PfRefusal *why, bool *is_verification)
{
	Datum		v[2] = {Int64GetDatum(task), token};

	memset(why, 0, sizeof(*why));
	if (pf_exec(&st_held, v, NULL, 1) != 1)
	{
		why->sqlerrcode = ERRCODE_UNDEFINED_OBJECT;
		why->message = psprintf("task " INT64_FORMAT " does not exist", task);
		return false;
	}
	if (!token_holds(task, pf_text(0, 6), pf_bool(0, 7), pf_bool(0, 8), pf_text(0, 9), why))
		return false;
	load_held(0, t, is_verification);
	return true;
}

static void
raise_refusal(PfRefusal *why)
{
	ereport(ERROR,
			(errcode(why->sqlerrcode),
			 errmsg_internal("%s", why->message),
			 why->detail ? errdetail_internal("%s", why->detail) : 0,
			 why->hint ? errhint("%s", why->hint) : 0));
}

/* The held task of (task, token) arguments 0 and 1, or raise. */
static void
held(FunctionCallInfo fcinfo, PfTask *t, bool *is_verification)
{
	PfRefusal	why;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task and token must not be null")));
	if (!held_try(PG_GETARG_INT64(0), PG_GETARG_DATUM(1), t, &why, is_verification))
		raise_refusal(&why);
}

/* Whether an output of size bytes is over parflow.max_output_size (and why). */
static bool
output_size_refused(int64 task, Size size, PfRefusal *why)
{
	if (size <= (Size) pf_max_output_size)
		return false;
	why->sqlerrcode = ERRCODE_PROGRAM_LIMIT_EXCEEDED;
	why->message = psprintf("output of task " INT64_FORMAT " is too large", task);
	why->detail = psprintf("It takes %zu bytes; parflow.max_output_size is %d bytes.",
						   size, pf_max_output_size);
	why->hint = pstrdup("Store big artifacts elsewhere and return a reference to them.");
	return true;
}

static bool
output_too_large(int64 task, Datum doc, PfRefusal *why)
{
	return output_size_refused(task, toast_datum_size(doc), why);
}

static Datum
empty_object(void)
{
	return DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
}

/* ---- heartbeat ----------------------------------------------------------- */

/* The lease extended in one statement, when (task, token) holds the task. */
static PfStmt st_heartbeat = {
	"UPDATE parflow.task tk SET lease_until = clock_timestamp() + tk.lease "
	" WHERE tk.id = $1 AND tk.token = $2 AND " PF_STATE_IS("tk", "running")
	"   AND tk.lease_until >= clock_timestamp() AND parflow._lock_run(tk.run_id) "
	"RETURNING tk.lease_until",
	2, {INT8OID, UUIDOID}
};

/* parflow_heartbeat(task bigint, token uuid) returns timestamptz */
Datum
parflow_heartbeat(PG_FUNCTION_ARGS)
{
	PfTask		t;
	Datum		v[2];
	TimestampTz until;
	bool		isnull;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task and token must not be null")));
	connect_spi();
	v[0] = PG_GETARG_DATUM(0);
	v[1] = PG_GETARG_DATUM(1);
	if (pf_exec(&st_heartbeat, v, NULL, 1) != 1)
	{
		held(fcinfo, &t, NULL);
		elog(ERROR, "parflow: the lease of task " INT64_FORMAT " could not be extended",
			 PG_GETARG_INT64(0));
	}
	until = DatumGetTimestampTz(pf_datum(0, 1, &isnull));
	SPI_finish();
	PG_RETURN_TIMESTAMPTZ(until);
}

/* ---- complete ------------------------------------------------------------ */


/*
 * After a held task was marked succeeded and taken off its run's remaining
 * count (left: what is left of the run): its dependents released (through
 * stage edges and holds when edges, through its group's barrier when
 * barriers), its run finished or found blocked; its slot given to the next
 * task of its run when the dispatcher would choose it (see pf_handover,
 * which claims it for claim, when not NULL, when it can), else a dispatch
 * pass asked for at commit.  *handed: the task handed the slot;
 * *claimed: whether claim claimed it (its row is the last result's).
 */
static void
complete_held(PfTask *t, int64 left, bool edges, bool barriers, bool instance,
			  const PfClaimArgs *claim, int64 *handed, bool *claimed)
{
	int32		ord = t->stage_ord;

	*handed = 0;
	*claimed = false;
	/* a map instance's dependents are its stage's: they wait for every instance */
	if (instance)
		pf_instances_done(t->run_id, t->version_id, pf_int8_array(&t->id, 1));
	else if (edges || barriers)
		pf_done_through(t->run_id, t->version_id, pf_int4_array(&ord, 1), edges, barriers);
	if (left <= 0)
		pf_finish_if_done(t->run_id);
	if (t->run_failed > 0)
		pf_check_blocked(t->run_id);

	/*
	 * A dispatch pass is wanted unless the slot was handed over and the pass
	 * could do nothing more (the handed-over task's NOTIFY wakes the
	 * dispatcher anyway, only to send it).  The last task of its run has
	 * no task of its run to hand the slot to: the pass gives it to another
	 * run, and a new session's first completion of a one-stage run does not
	 * plan the hand-over's statement.
	 */
	if (left <= 0 || pf_handover(t, claim, handed, claimed))
		pf_wake_at_commit();
}

/*
 * Complete a task in one statement, when (task, token) holds it: the row is
 * locked by the update itself (the run's lock taken first, in its WHERE
 * clause), and the event written with it.  The run's row and shards are
 * found by values (scalar subqueries), so that the plan looks them up
 * whatever the statistics said when it was made (a join on the task's
 * run_id alone was planned as a hash join over every run).  No row: the
 * token does not hold the task, and held() says why.
 */
static PfStmt st_complete = {
	"WITH u AS (UPDATE parflow.task tk SET state = 'succeeded', output = $3, token = NULL, "
	"                  lease_until = NULL, finished_at = clock_timestamp(), error = NULL, "
	"                  interrupted_at = NULL "
	"             FROM parflow.run r "
	"            WHERE tk.id = $1 AND tk.token = $2 AND " PF_STATE_IS("tk", "running")
	"              AND tk.lease_until >= clock_timestamp() AND r.id = tk.run_id "
	"              AND r.id = (SELECT t0.run_id FROM parflow.task t0 WHERE t0.id = $1) "
	"              AND parflow._lock_run(tk.run_id) "
	"        RETURNING tk.id, tk.run_id, tk.stage_ord, tk.group_ord, tk.agent, NULL::text, NULL::boolean, "
	"                  NULL::boolean, NULL::text, tk.attempt, tk.base_attempt, tk.route_backs, tk.worker, "
	"                  false, r.version_id, r.state, r.max_parallel, r.failed, NULL::boolean, tk.item), "
	"e AS (INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"      SELECT u.run_id, u.id, 'succeeded', jsonb_build_object('worker', u.worker, 'attempt', u.attempt) FROM u), "
	"rr AS (UPDATE parflow.run_remaining x SET remaining = x.remaining - 1 "
	"        WHERE x.run_id = (SELECT u.run_id FROM u) AND x.shard = (SELECT parflow._shard(u.id) FROM u) "
	"       RETURNING x.remaining) "
	"SELECT u.*, "
	"       coalesce((SELECT sum(rr.remaining) FROM rr), 0) "
	"       + coalesce((SELECT sum(x.remaining) FROM parflow.run_remaining x "
	"                    WHERE x.run_id = (SELECT u2.run_id FROM u u2) "
	"                      AND x.shard <> (SELECT parflow._shard(u2.id) FROM u u2)), 0), "
	"       EXISTS (SELECT FROM parflow.stage_dep d WHERE d.version_id = u.version_id AND d.dep_ord = u.stage_ord) "
	"       OR EXISTS (SELECT FROM parflow.task h WHERE h.run_id = u.run_id AND h.hold_ord = u.stage_ord AND h.item IS NULL), "
	"       u.item IS NOT NULL, "
	"       EXISTS (SELECT FROM parflow.group_dep gd WHERE gd.version_id = u.version_id AND gd.dep_ord = u.group_ord) "
	"  FROM u",
	3, {INT8OID, UUIDOID, JSONBOID}
};

/*
 * Complete (task, token) arguments 0 and 1 with output argument arg: its
 * dependents released, its run finished or found blocked, its slot handed
 * over when it can be (see complete_held), to a task claim claims when it
 * can (*claimed); or raise as held() would.  Returns the task handed the
 * slot, or 0.
 */
static int64
complete_call(FunctionCallInfo fcinfo, int arg, const PfClaimArgs *claim, bool *claimed)
{
	PfTask		t;
	PfRefusal	why;
	Datum		doc;
	Datum		v[3];
	int64		handed;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task and token must not be null")));
	doc = PG_ARGISNULL(arg) ? empty_object() : PG_GETARG_DATUM(arg);
	if (output_too_large(PG_GETARG_INT64(0), doc, &why))
	{
		held(fcinfo, &t, NULL);	/* a token that does not hold it says so first */
		raise_refusal(&why);
	}
	v[0] = PG_GETARG_DATUM(0);
	v[1] = PG_GETARG_DATUM(1);
	v[2] = doc;
	if (pf_exec(&st_complete, v, NULL, 1) != 1)
	{
		held(fcinfo, &t, NULL);
		elog(ERROR, "parflow: task " INT64_FORMAT " could not be completed", PG_GETARG_INT64(0));
	}
	load_held(0, &t, NULL);
	/* (column PF_HELD_COLS + 1 of st_complete is the task's item) */
	complete_held(&t, pf_int8(0, PF_HELD_COLS + 2), pf_bool(0, PF_HELD_COLS + 3), pf_bool(0, PF_HELD_COLS + 5),
				  pf_bool(0, PF_HELD_COLS + 4), claim, &handed, claimed);
	return handed;
}

/* parflow_complete(task bigint, token uuid, output jsonb DEFAULT '{}') */
Datum
parflow_complete(PG_FUNCTION_ARGS)
{
	bool		claimed;

	connect_spi();
	complete_call(fcinfo, 2, NULL, &claimed);
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * Whether this backend's next parflow_complete_and_claim tries the hand-over
 * that claims (st_handover_claim, a larger statement than the plain one):
 * not while its last claim took a dispatched task that came before the one
 * handed over, since then tasks of its kind wait unclaimed (a cap above the
 * agents at work) and the fused claim cannot apply.  Either way the result
 * is the same; only the cost differs.
 */
static bool try_fused_claim = true;

/*
 * parflow_complete_and_claim(task, token, output, agent, worker, lease
 * DEFAULT '5 min'): complete, then claim the agent's next task (0 or 1 row),
 * in one transaction.  The claim's arguments are checked first: a call that
 * could not claim completes nothing.
 */
Datum
parflow_complete_and_claim(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PfClaimArgs a;
	int64		handed;
	int64		first = 0;
	bool		claimed;

	check_claim_args(fcinfo, 3, &a, false);
	InitMaterializedSRF(fcinfo, 0);
	connect_spi();
	pf_may_claim(a.agent);
	handed = complete_call(fcinfo, 2, try_fused_claim ? &a : NULL, &claimed);
	if (claimed)
		put_claim_row(rsinfo, SPI_tuptable, 0, PF_HANDOVER_CLAIM_COL);
	else
	{
		int			n = claim_into(rsinfo, &a, &first, true);

		/*
		 * The task the completion handed its slot to may still be the one
		 * claimed here (the dispatched task before it was locked by another
		 * claim, or the fused claim not tried): its agent has it, so the
		 * dispatcher need not send its notification, nor commit to send it.
		 * (The hand-over's note is this transaction's last: one completion
		 * hands over at most one slot, and nothing after it makes notes.)
		 */
		if (n > 0 && handed != 0 && first == handed)
			(void) pf_note_forget_last();
		try_fused_claim = n == 0 || handed == 0 || first == handed;
	}
	SPI_finish();
	return (Datum) 0;
}

/* ---- complete_many ------------------------------------------------------- */

/*
 * Lock every task of a batch with its run, in task order (the run's lock is
 * taken in the WHERE clause, before the rows are locked), with what decides
 * whether its token holds it.
 */
static PfStmt st_held_many = {
	"SELECT t.id, t.state, t.token = x.token, t.lease_until < clock_timestamp(), "
	"       t.lease_until::text, pg_catalog.pg_column_size(o.output) "
	"  FROM unnest($1::bigint[], $2::uuid[]) x(id, token) "
	"  JOIN parflow.task t ON t.id = x.id "
	"  LEFT JOIN unnest($1::bigint[], $3::jsonb[]) o(id, output) ON o.id = x.id "
	" WHERE parflow._lock_run(t.run_id) "
	" ORDER BY t.id FOR UPDATE OF t",
	3, {INT8ARRAYOID, UUIDARRAYOID, JSONBARRAYOID}
};

/* Complete the accepted tasks of a batch; one row per run touched. */
static PfStmt st_succeed_many = {
	"WITH x AS (SELECT * FROM unnest($1::bigint[], $2::jsonb[]) x(id, output)), "
	"u AS (UPDATE parflow.task tk SET state = 'succeeded', output = coalesce(x.output, '{}'), "
	"             token = NULL, lease_until = NULL, finished_at = clock_timestamp(), error = NULL, "
	"             interrupted_at = NULL "
	"        FROM x WHERE tk.id = x.id AND tk.id = ANY ($1) "
	"      RETURNING tk.run_id, tk.id, tk.worker, tk.attempt, tk.stage_ord, tk.item), "
	"e AS (INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"      SELECT u.run_id, u.id, 'succeeded', jsonb_build_object('worker', u.worker, 'attempt', u.attempt) "
	"        FROM u ORDER BY u.id) "
	"SELECT u.run_id, r.version_id, r.failed, "
	"       coalesce(array_agg(u.stage_ord ORDER BY u.stage_ord) FILTER (WHERE u.item IS NULL), '{}'), "
	"       coalesce(array_agg(u.id ORDER BY u.id) FILTER (WHERE u.item IS NOT NULL), '{}') "
	"  FROM u JOIN parflow.run r ON r.id = u.run_id GROUP BY u.run_id, r.version_id, r.failed "
	" ORDER BY u.run_id",
	2, {INT8ARRAYOID, JSONBARRAYOID}
};

/* Take the batch's tasks off their shards; what is left of each run. */
static PfStmt st_remaining_many = {
	"WITH c AS (SELECT t.run_id, (t.id % " CppAsString2(PF_SHARDS) ")::smallint AS shard, "
	"                  count(*)::integer AS n "
	"             FROM parflow.task t WHERE t.id = ANY ($1) GROUP BY 1, 2), "
	"u AS (UPDATE parflow.run_remaining rr SET remaining = rr.remaining - c.n FROM c "
	"       WHERE rr.run_id = c.run_id AND rr.shard = c.shard RETURNING rr.run_id, rr.shard, rr.remaining) "
	"SELECT r.run_id, coalesce((SELECT sum(u.remaining) FROM u WHERE u.run_id = r.run_id), 0) "
	"       + coalesce((SELECT sum(rr.remaining) FROM parflow.run_remaining rr "
	"                    WHERE rr.run_id = r.run_id "
	"                      AND rr.shard NOT IN (SELECT u.shard FROM u WHERE u.run_id = r.run_id)), 0) "
	"  FROM (SELECT DISTINCT c.run_id FROM c) r ORDER BY r.run_id",
	1, {INT8ARRAYOID}
};

/* The elements of a one-dimensional array argument, NULLs refused. */
static int
array_arg(FunctionCallInfo fcinfo, int arg, const char *what, Oid elemtype, int elemlen,
		  bool byval, char align, Datum **elems, bool nulls_ok, bool **nulls)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(arg);
	bool	   *isnull;
	int			n,
				i;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%s must be a one-dimensional array", what)));
	deconstruct_array(arr, elemtype, elemlen, byval, align, elems, &isnull, &n);
	if (!nulls_ok)
		for (i = 0; i < n; i++)
			if (isnull[i])
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("%s must not contain nulls", what),
						 errdetail("Element %d is null.", i + 1)));
	if (nulls)
		*nulls = isnull;
	return n;
}

static int
cmp_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a,
				y = *(const int64 *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * Whether the token of a row of st_held_many holds its task (and its output
 * fits); else why not, as parflow_complete would say it.
 */
static bool
batch_row_ok(int row, int64 task, PfRefusal *why)
{
	if (!token_holds(task, pf_text(row, 2), pf_bool(row, 3), pf_bool(row, 4), pf_text(row, 5), why))
		return false;
	return pf_isnull(row, 6) || !output_size_refused(task, (Size) pf_int4(row, 6), why);
}

/*
 * Complete the n accepted tasks of a batch (locked, tokens checked): their
 * outputs stored, their dependents released run by run, their runs
 * finished or found blocked; a pass is asked for at commit.
 */
static void
complete_batch(int64 *ids, Datum *outputs, bool *nulls, int n)
{
	int			dims[1] = {n};
	int			lbs[1] = {1};
	Datum		v[2];
	int			nruns,
				r;
	int64	   *runs,
			   *versions;
	int32	   *failed;
	Datum	   *ords;
	Datum	   *instances;
	bool		isnull;

	v[0] = pf_int8_array(ids, n);
	v[1] = PointerGetDatum(construct_md_array(outputs, nulls, 1, dims, lbs,
											  JSONBOID, -1, false, TYPALIGN_INT));
	nruns = pf_exec(&st_succeed_many, v, NULL, 0);
	runs = palloc(sizeof(int64) * Max(nruns, 1));
	versions = palloc(sizeof(int64) * Max(nruns, 1));
	failed = palloc(sizeof(int32) * Max(nruns, 1));
	ords = palloc(sizeof(Datum) * Max(nruns, 1));
	instances = palloc(sizeof(Datum) * Max(nruns, 1));
	for (r = 0; r < nruns; r++)
	{
		runs[r] = pf_int8(r, 1);
		versions[r] = pf_int8(r, 2);
		failed[r] = pf_int4(r, 3);
		ords[r] = PointerGetDatum(DatumGetArrayTypePCopy(pf_datum(r, 4, &isnull)));
		instances[r] = PointerGetDatum(DatumGetArrayTypePCopy(pf_datum(r, 5, &isnull)));
	}
	for (r = 0; r < nruns; r++)
	{
		pf_done(runs[r], versions[r], ords[r]);
		pf_instances_done(runs[r], versions[r], instances[r]);
	}

	/* st_remaining_many returns the same runs, in the same order */
	if (pf_exec(&st_remaining_many, v, NULL, 0) != nruns)
		elog(ERROR, "parflow: a batch's runs changed while it completed");
	{
		bool	   *done = palloc(sizeof(bool) * Max(nruns, 1));

		for (r = 0; r < nruns; r++)
			done[r] = pf_int8(r, 2) <= 0;
		for (r = 0; r < nruns; r++)
		{
			if (done[r])
				pf_finish_if_done(runs[r]);
			if (failed[r] > 0)
				pf_check_blocked(runs[r]);
		}
	}
	pf_wake_at_commit();
}

/*
 * parflow_complete_many(tasks bigint[], tokens uuid[], outputs jsonb[]
 * DEFAULT NULL) returns table (task, accepted, sqlstate, message): every
 * task is locked and checked first; those refused (unknown, a token that
 * does not hold it, an expired lease, an output too large) are reported and
 * left as they are; the others are completed together, their dependents
 * released run by run.  A dispatch pass hands their slots out.
 */
Datum
parflow_complete_many(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum	   *tasks,
			   *tokens,
			   *outputs = NULL;
	bool	   *out_nulls = NULL;
	Datum		outputs_arg = (Datum) 0;
	int			n,
				i,
				found,
				nok = 0;
	int64	   *sorted;
	int64	   *ok_ids;
	Datum	   *ok_outputs;
	bool	   *ok_nulls;
	PfRefusal  *why;
	bool	   *ok;
	Datum		v[3];
	char		nulls[3] = {' ', ' ', ' '};

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("tasks and tokens must not be null")));
	n = array_arg(fcinfo, 0, "tasks", INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &tasks, false, NULL);
	found = array_arg(fcinfo, 1, "tokens", UUIDOID, UUID_LEN, false, TYPALIGN_CHAR, &tokens, false, NULL);
	if (found != n)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("tasks and tokens must have the same length"),
				 errdetail("Found %d tasks and %d tokens.", n, found)));
	if (!PG_ARGISNULL(2))
	{
		int			no = array_arg(fcinfo, 2, "outputs", JSONBOID, -1, false, TYPALIGN_INT,
								   &outputs, true, &out_nulls);

		if (no != n)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("outputs must have as many elements as tasks"),
					 errdetail("Found %d tasks and %d outputs.", n, no),
					 errhint("Pass NULL for outputs to complete every task with {}.")));
		outputs_arg = PG_GETARG_DATUM(2);
	}
	if (n > PF_MAX_BATCH)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("cannot complete more than %d tasks in one call", PF_MAX_BATCH),
				 errdetail("Found %d.", n)));
	sorted = palloc(sizeof(int64) * Max(n, 1));
	for (i = 0; i < n; i++)
		sorted[i] = DatumGetInt64(tasks[i]);
	qsort(sorted, n, sizeof(int64), cmp_int64);
	for (i = 1; i < n; i++)
		if (sorted[i] == sorted[i - 1])
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("task " INT64_FORMAT " appears more than once", sorted[i]),
					 errhint("Complete each task once per call.")));

	InitMaterializedSRF(fcinfo, 0);
	why = palloc0(sizeof(PfRefusal) * Max(n, 1));
	ok = palloc0(sizeof(bool) * Max(n, 1));
	ok_ids = palloc(sizeof(int64) * Max(n, 1));
	ok_outputs = palloc(sizeof(Datum) * Max(n, 1));
	ok_nulls = palloc(sizeof(bool) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		why[i].sqlerrcode = ERRCODE_UNDEFINED_OBJECT;
		why[i].message = psprintf("task " INT64_FORMAT " does not exist", DatumGetInt64(tasks[i]));
	}

	connect_spi();
	if (n > 0)
	{
		v[0] = PG_GETARG_DATUM(0);
		v[1] = PG_GETARG_DATUM(1);
		v[2] = outputs_arg;
		nulls[2] = outputs ? ' ' : 'n';
		found = pf_exec(&st_held_many, v, nulls, 0);
		for (i = 0; i < found; i++)
		{
			int64		id = pf_int8(i, 1);
			int			k;

			CHECK_FOR_INTERRUPTS();
			for (k = 0; k < n; k++)
				if (DatumGetInt64(tasks[k]) == id)
					break;
			ok[k] = batch_row_ok(i, id, &why[k]);
		}
	}
	for (i = 0; i < n; i++)
		if (ok[i])
		{
			ok_ids[nok] = DatumGetInt64(tasks[i]);
			ok_nulls[nok] = outputs == NULL || out_nulls[i];
			ok_outputs[nok] = ok_nulls[nok] ? (Datum) 0 : outputs[i];
			nok++;
		}
	if (nok > 0)
		complete_batch(ok_ids, ok_outputs, ok_nulls, nok);
	for (i = 0; i < n; i++)
	{
		Datum		out[4];
		bool		rnulls[4] = {false, false, ok[i], ok[i]};

		out[0] = tasks[i];
		out[1] = BoolGetDatum(ok[i]);
		if (!ok[i])
		{
			out[2] = CStringGetTextDatum(unpack_sql_state(why[i].sqlerrcode));
			out[3] = CStringGetTextDatum(why[i].message);
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, rnulls);
	}
	SPI_finish();
	return (Datum) 0;
}

/* ---- fail and release ---------------------------------------------------- */

/*
 * An agent's error text as stored: kept whole up to 65,536 characters; a
 * longer one (a whole log) keeps its first and last 32,768 with a marker
 * between, so that a failure is never refused for its size.
 */
static char *
error_text(FunctionCallInfo fcinfo, int arg)
{
	char	   *e;
	int			bytes,
				chars,
				head,
				tail;

	if (PG_ARGISNULL(arg))
		return pstrdup("no error text");
	e = text_to_cstring(PG_GETARG_TEXT_PP(arg));
	bytes = strlen(e);
	chars = pg_mbstrlen_with_len(e, bytes);
	if (chars <= 65536)
		return e;
	head = pg_mbcharcliplen(e, bytes, 32768);
	tail = pg_mbcharcliplen(e, bytes, chars - 32768);
	return psprintf("%.*s\n[... %d characters cut ...]\n%s", head, e, chars - 65536, e + tail);
}

/*
 * parflow_fail(task bigint, token uuid, error text, retryable boolean
 * DEFAULT true, output jsonb DEFAULT NULL): retried with backoff while
 * attempts are left and the error is retryable, else failed for good; a
 * failed verification sends the stage it verifies back to its agent.
 */
Datum
parflow_fail(PG_FUNCTION_ARGS)
{
	PfTask		t;
	bool		verification;
	char	   *err = error_text(fcinfo, 2);
	bool		retryable = PG_ARGISNULL(3) ? true : PG_GETARG_BOOL(3);
	bool		has_out = !PG_ARGISNULL(4);
	Datum		out = has_out ? PG_GETARG_DATUM(4) : (Datum) 0;
	PfRefusal	why;

	connect_spi();
	held(fcinfo, &t, &verification);
	if (has_out && output_too_large(t.id, out, &why))
		raise_refusal(&why);
	if (verification)
		/* a verification that fails sends its stage back (rule 3) */
		pf_route_back(&t, err, out, has_out);
	else
	{
		pf_retry_or_fail(&t, "failed", err, retryable);
		if (has_out)
			pf_set_output(t.id, out);
	}
	SPI_finish();
	PG_RETURN_VOID();
}

static PfStmt st_release = {
	"WITH u AS (UPDATE parflow.task tk SET state = 'ready', attempt = tk.attempt - 1, token = NULL, "
	"                  worker = NULL, lease_until = NULL, not_before = NULL, interrupted_at = NULL "
	"            WHERE tk.id = $1 RETURNING tk.run_id, tk.id) "
	"INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"SELECT u.run_id, u.id, 'released', jsonb_build_object('worker', $2, 'interrupted', $3) FROM u",
	3, {INT8OID, TEXTOID, BOOLOID}
};

/* parflow_release(task bigint, token uuid): not counted as a failed attempt */
Datum
parflow_release(PG_FUNCTION_ARGS)
{
	PfTask		t;
	Datum		v[3];
	char		n[3] = {' ', ' ', ' '};

	connect_spi();
	held(fcinfo, &t, NULL);
	v[0] = Int64GetDatum(t.id);
	v[1] = t.worker ? CStringGetTextDatum(t.worker) : (Datum) 0;
	n[1] = t.worker ? ' ' : 'n';
	v[2] = BoolGetDatum(t.interrupted);
	pf_exec(&st_release, v, n, 0);
	pf_wake_at_commit();
	SPI_finish();
	PG_RETURN_VOID();
}
