/*
 * waits.c - wait stages: a stage with no agent that, once its dependencies
 * are done, awaits an event (task state awaiting) instead of being
 * dispatched, as a human approval or an outside system's webhook.  This
 * file owns that state: beginning to await (an event row and a
 * notification on parflow_orchestrator naming the event, then a signal
 * kept for the run completes it at once), parflow_signal (completes the
 * run's stages awaiting the event with its payload as their output, or
 * keeps it for the next stage to await it), parflow_reject (fails them; a
 * wait stage that verifies a stage sends that stage back with the reason),
 * the timeout the dispatcher's pass enforces, and who may signal
 * (operators, and roles given events with parflow_allow_signal, which also
 * grants them EXECUTE on the two functions).  Signals and rejections take
 * the run's lock exclusively, as operators do, before its row and tasks.
 */
#include "postgres.h"

#include "access/detoast.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/parsenodes.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "core.h"
#include "guc.h"
#include "shmem.h"
#include "stmt.h"

PG_FUNCTION_INFO_V1(parflow_signal);
PG_FUNCTION_INFO_V1(parflow_reject);
PG_FUNCTION_INFO_V1(parflow_await);
PG_FUNCTION_INFO_V1(parflow_grant_signal);

static void
connect_spi(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "parflow: SPI_connect failed");
}

/* ---- completing wait tasks ---------------------------------------------- */

/*
 * Wait tasks $2 of run $1, still awaiting, succeed with output $3 (a
 * signal of event $4 sent by $5; $6: it was kept until they awaited), and
 * leave the run's remaining count.  Returns their stage ords.
 */
static PfStmt st_wait_succeed = {
	"WITH u AS (UPDATE parflow.task tk SET state = 'succeeded', output = $3, error = NULL, "
	"                  finished_at = clock_timestamp() "
	"            WHERE tk.run_id = $1 AND tk.id = ANY ($2) AND tk.state = 'awaiting' "
	"           RETURNING tk.id, tk.stage_ord), "
	"e AS (INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"      SELECT $1, u.id, 'succeeded', jsonb_build_object('signal', $4, 'by', $5, 'kept', $6) FROM u), "
	"c AS (SELECT parflow._shard(u.id) AS shard, count(*)::integer AS n FROM u GROUP BY 1), "
	"rr AS (UPDATE parflow.run_remaining x SET remaining = x.remaining - c.n FROM c "
	"        WHERE x.run_id = $1 AND x.shard = c.shard) "
	"SELECT coalesce(array_agg(u.stage_ord ORDER BY u.stage_ord), '{}') FROM u",
	6, {INT8OID, INT8ARRAYOID, JSONBOID, TEXTOID, TEXTOID, BOOLOID}
};

static ArrayType *
wait_succeed(int64 run, int64 *ids, int n, Datum payload, const char *event,
			 const char *by, bool kept)
{
	Datum		v[6];
	bool		isnull;

	v[0] = Int64GetDatum(run);
	v[1] = pf_int8_array(ids, n);
	v[2] = payload;
	v[3] = CStringGetTextDatum(event);
	v[4] = CStringGetTextDatum(by);
	v[5] = BoolGetDatum(kept);
	pf_exec(&st_wait_succeed, v, NULL, 0);
	return DatumGetArrayTypePCopy(pf_datum(0, 1, &isnull));
}

/* ---- beginning to await -------------------------------------------------- */

/*
 * Tasks $3 of run $1 (version $2) that just became awaiting: each await is
 * an attempt, and its clock (started_at) starts now.
 */
static PfStmt st_await_begin = {
	"WITH u AS (UPDATE parflow.task tk SET started_at = clock_timestamp(), finished_at = NULL, "
	"                  attempt = tk.attempt + 1 "
	"            WHERE tk.run_id = $1 AND tk.stage_ord = ANY ($3) AND tk.state = 'awaiting' "
	"           RETURNING tk.id, tk.stage_ord), "
	"s AS (SELECT u.id, u.stage_ord, st.name, st.wait_event, st.wait_timeout FROM u"
	PF_STAGE_OF("st", "$2", "u.stage_ord", "name, wait_event, wait_timeout") "), "
	"e AS (INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"      SELECT $1, s.id, 'awaiting', "
	"             jsonb_strip_nulls(jsonb_build_object('event', s.wait_event, 'timeout', s.wait_timeout::text)) "
	"        FROM s) "
	"SELECT s.id, s.wait_event, "
	"       jsonb_strip_nulls(jsonb_build_object('kind', 'awaiting', 'run', $1, 'task', s.id, 'stage', s.name, "
	"                                            'event', s.wait_event, 'timeout', s.wait_timeout::text))::text, "
	"       s.stage_ord "
	"  FROM s ORDER BY s.stage_ord",
	3, {INT8OID, INT8OID, INT4ARRAYOID}
};

/* The oldest signal kept for run $1 and event $2, taken. */
static PfStmt st_take_kept = {
	"DELETE FROM parflow.signal sg "
	" WHERE sg.id = (SELECT k.id FROM parflow.signal k WHERE k.run_id = $1 AND k.event = $2 "
	"                 ORDER BY k.id LIMIT 1 FOR UPDATE SKIP LOCKED) "
	"RETURNING sg.payload, sg.sent_by::text",
	2, {INT8OID, TEXTOID}
};

/*
 * Wait tasks of stages ords of a run, which have just become awaiting:
 * their event rows, their notifications on parflow_orchestrator (sent at
 * commit, so that a person or a bot is asked), and each one that a kept
 * signal of its event completes at once.  Returns the stage ords so
 * completed, for the caller to release their dependents (pf_done).
 */
ArrayType *
pf_await(int64 run, int64 version, ArrayType *ords)
{
	Datum		v[3] = {Int64GetDatum(run), Int64GetDatum(version), PointerGetDatum(ords)};
	int			n,
				i;
	int64	   *ids;
	char	  **events;
	int32	   *ords_of;
	int32	   *took;
	int			ntook = 0;

	n = pf_exec(&st_await_begin, v, NULL, 0);
	ids = palloc(sizeof(int64) * Max(n, 1));
	ords_of = palloc(sizeof(int32) * Max(n, 1));
	events = palloc(sizeof(char *) * Max(n, 1));
	took = palloc(sizeof(int32) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		ids[i] = pf_int8(i, 1);
		events[i] = pf_text(i, 2);
		ords_of[i] = pf_int4(i, 4);
		Async_Notify("parflow_orchestrator", pf_text(i, 3));
	}
	for (i = 0; i < n; i++)
	{
		Datum		kv[2] = {Int64GetDatum(run), CStringGetTextDatum(events[i])};
		Datum		payload;
		char	   *by;
		bool		isnull;
		ArrayType  *done;

		if (pf_exec(&st_take_kept, kv, NULL, 1) != 1)
			continue;
		payload = datumCopy(pf_datum(0, 1, &isnull), false, -1);
		by = pf_text(0, 2);
		done = wait_succeed(run, &ids[i], 1, payload, events[i], by, true);
		if (ArrayGetNItems(ARR_NDIM(done), ARR_DIMS(done)) == 1)
			took[ntook++] = ords_of[i];
	}
	return DatumGetArrayTypeP(pf_int4_array(took, ntook));
}

/* parflow._await(run bigint, ords integer[]): for parflow_start and retries */
Datum
parflow_await(PG_FUNCTION_ARGS)
{
	int64		run = PG_GETARG_INT64(0);
	static PfStmt st_version = {
		"SELECT version_id FROM parflow.run WHERE id = $1", 1, {INT8OID}
	};
	Datum		v[1] = {Int64GetDatum(run)};

	connect_spi();
	if (pf_exec(&st_version, v, NULL, 1) == 1)
	{
		int64		version = pf_int8(0, 1);
		ArrayType  *took = pf_await(run, version, PG_GETARG_ARRAYTYPE_P(1));

		if (ArrayGetNItems(ARR_NDIM(took), ARR_DIMS(took)) > 0)
		{
			pf_done(run, version, PointerGetDatum(took));
			pf_finish_if_done(run);
		}
	}
	SPI_finish();
	PG_RETURN_VOID();
}

/* ---- who may signal ------------------------------------------------------- */

/* Whether role $2 may signal or reject event $1. */
static PfStmt st_may_signal = {
	"SELECT coalesce((SELECT rolsuper FROM pg_catalog.pg_roles WHERE oid = $2), false) "
	"    OR pg_catalog.pg_has_role($2, 'parflow_operator', 'MEMBER') "
	"    OR EXISTS (SELECT FROM parflow.signal_role sr "
	"                WHERE sr.event IN ($1, '*') "
	"                  AND EXISTS (SELECT FROM pg_catalog.pg_roles pr WHERE pr.rolname = sr.role_name) "
	"                  AND pg_catalog.pg_has_role($2, sr.role_name, 'MEMBER'))",
	2, {TEXTOID, OIDOID}
};

/*
 * Raise 42501 unless the calling role may signal this event.  The role is
 * the one the caller acts as (SET ROLE included), not the functions'
 * owner they run as.
 */
static void
may_signal(const char *event, const char *action)
{
	Datum		v[2] = {CStringGetTextDatum(event), ObjectIdGetDatum(GetOuterUserId())};

	pf_exec(&st_may_signal, v, NULL, 1);
	if (!pf_bool(0, 1))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" may not %s event \"%s\"",
						GetUserNameFromId(GetOuterUserId(), false), action, event),
				 errhint("An operator allows it with parflow_allow_signal(role, event).")));
}

/*
 * parflow._grant_signal(role name, grant boolean): GRANT (or REVOKE)
 * EXECUTE on parflow_signal and parflow_reject to the role, as a statement
 * node rather than SQL text, so that no name is pasted into a query.
 */
Datum
parflow_grant_signal(PG_FUNCTION_ARGS)
{
	char	   *role = NameStr(*PG_GETARG_NAME(0));
	bool		grant = PG_GETARG_BOOL(1);
	char	   *schema;
	GrantStmt  *stmt = makeNode(GrantStmt);
	AccessPriv *priv = makeNode(AccessPriv);
	RoleSpec   *grantee = makeNode(RoleSpec);
	ObjectWithArgs *sig = makeNode(ObjectWithArgs);
	ObjectWithArgs *rej = makeNode(ObjectWithArgs);

	static PfStmt st_schema = {
		"SELECT n.nspname::text FROM pg_catalog.pg_extension e "
		"  JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'parflow'",
		0, {0}
	};

	connect_spi();
	if (pf_exec(&st_schema, NULL, NULL, 1) != 1)
		elog(ERROR, "parflow: the extension's schema was not found");
	schema = MemoryContextStrdup(CurTransactionContext, pf_text(0, 1));
	SPI_finish();

	sig->objname = list_make2(makeString(schema), makeString("parflow_signal"));
	sig->objargs = list_make3(makeTypeNameFromOid(INT8OID, -1), makeTypeNameFromOid(TEXTOID, -1),
							  makeTypeNameFromOid(JSONBOID, -1));
	rej->objname = list_make2(makeString(schema), makeString("parflow_reject"));
	rej->objargs = list_make3(makeTypeNameFromOid(INT8OID, -1), makeTypeNameFromOid(TEXTOID, -1),
							  makeTypeNameFromOid(TEXTOID, -1));
	priv->priv_name = pstrdup("execute");
	grantee->roletype = ROLESPEC_CSTRING;
	grantee->rolename = pstrdup(role);
	grantee->location = -1;

	stmt->is_grant = grant;
	stmt->targtype = ACL_TARGET_OBJECT;
	stmt->objtype = OBJECT_FUNCTION;
	stmt->objects = list_make2(sig, rej);
	stmt->privileges = list_make1(priv);
	stmt->grantees = list_make1(grantee);
	stmt->behavior = DROP_RESTRICT;
	ExecuteGrantStmt(stmt);
	PG_RETURN_VOID();
}

/* ---- signal and reject ------------------------------------------------------ */

/* The run's version and state, its row locked after its lock. */
static PfStmt st_run_locked = {
	"SELECT r.version_id, r.state FROM parflow.run r WHERE r.id = $1 FOR UPDATE",
	1, {INT8OID}
};

/* The stages of version $1 that await event $2, and every event its stages await. */
static PfStmt st_event_stages = {
	"SELECT coalesce(array_agg(s.ord) FILTER (WHERE s.wait_event = $2), '{}'), "
	"       parflow._nearest($2, array_agg(DISTINCT s.wait_event) FILTER (WHERE s.wait_event IS NOT NULL)), "
	"       string_agg(DISTINCT s.wait_event, ', ') "
	"  FROM parflow.stage s WHERE s.version_id = $1 AND s.wait_event IS NOT NULL",
	2, {INT8OID, TEXTOID}
};

/*
 * The common start of a signal or a rejection: the arguments checked, the
 * caller's right to the event, the run locked (its lock, exclusive, then
 * its row) and found in a state that can take it, and the stage ords of
 * its version that await the event.  Returns the run's version.
 */
static int64
lock_for_event(FunctionCallInfo fcinfo, const char *action, int64 *run, char **event,
			   ArrayType **ords)
{
	Datum		v[2];
	char	   *state;
	bool		isnull;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("run must not be null")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event must not be null"),
				 errhint("Name the event the wait stage awaits, as its spec's \"wait\": {\"event\": ...} does.")));
	*run = PG_GETARG_INT64(0);
	*event = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (strspn(*event, " \t\r\n") == strlen(*event))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event must not be empty"),
				 errhint("Name the event the wait stage awaits, as its spec's \"wait\": {\"event\": ...} does.")));
	may_signal(*event, action);

	(void) pf_lock_run(*run, true, false);
	v[0] = Int64GetDatum(*run);
	if (pf_exec(&st_run_locked, v, NULL, 1) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("run " INT64_FORMAT " does not exist", *run)));
	v[0] = Int64GetDatum(pf_int8(0, 1));
	state = pf_text(0, 2);
	if (strcmp(state, "succeeded") == 0 || strcmp(state, "cancelled") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot %s event \"%s\" of run " INT64_FORMAT " in state %s",
						action, *event, *run, state),
				 errdetail("Only a run that is running, paused or blocked awaits events.")));
	v[1] = CStringGetTextDatum(*event);
	pf_exec(&st_event_stages, v, NULL, 1);
	*ords = DatumGetArrayTypePCopy(pf_datum(0, 1, &isnull));
	if (ArrayGetNItems(ARR_NDIM(*ords), ARR_DIMS(*ords)) == 0)
	{
		char	   *near = pf_text(0, 2);
		char	   *all = pf_text(0, 3);

		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("no stage of run " INT64_FORMAT " awaits event \"%s\"", *run, *event),
				 all ? errdetail("Its wait stages await: %s.", all)
				 : errdetail("Its workflow has no wait stage."),
				 near ? errhint("Did you mean \"%s\"?", near) : 0));
	}
	return DatumGetInt64(v[0]);
}

/* Tasks of run $1 awaiting in stages $2, locked, oldest first. */
static PfStmt st_awaiting = {
	"SELECT " PF_TASK_COLS ", s.verifies_ord IS NOT NULL "
	"  FROM parflow.task tk JOIN parflow.run r ON r.id = tk.run_id "
	PF_STAGE_OF("s", "r.version_id", "tk.stage_ord", "verifies_ord")
	" WHERE tk.run_id = $1 AND tk.state = 'awaiting' AND tk.stage_ord = ANY ($2) "
	" ORDER BY tk.id FOR UPDATE OF tk",
	2, {INT8OID, INT4ARRAYOID}
};

static PfStmt st_keep = {
	"WITH k AS (INSERT INTO parflow.signal (run_id, event, payload, sent_by) VALUES ($1, $2, $3, $4) "
	"           RETURNING id) "
	"INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"SELECT $1, NULL, 'signal_kept', jsonb_build_object('event', $2, 'by', $4, 'signal', k.id) FROM k",
	4, {INT8OID, TEXTOID, JSONBOID, NAMEOID}
};

static char *
caller_name(void)
{
	return GetUserNameFromId(GetOuterUserId(), false);
}

/*
 * parflow_signal(run bigint, event text, payload jsonb DEFAULT '{}')
 * returns integer: the stages of the run awaiting the event succeed with
 * the payload as their output, and their dependents are released; when
 * none awaits it, the signal is kept for the next stage of the run that
 * awaits the event (returns 0).  Returns how many stages it released.
 */
Datum
parflow_signal(PG_FUNCTION_ARGS)
{
	int64		run;
	char	   *event;
	ArrayType  *ords;
	int64		version;
	Datum		payload;
	Datum		v[4];
	int			n,
				i;
	int64	   *ids;
	char	   *by;

	payload = PG_ARGISNULL(2) ? DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"))
		: PG_GETARG_DATUM(2);
	connect_spi();
	version = lock_for_event(fcinfo, "signal", &run, &event, &ords);
	if (toast_raw_datum_size(payload) > (Size) pf_max_output_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("payload of signal \"%s\" is too large", event),
				 errdetail("It takes %zu bytes; parflow.max_output_size is %d bytes.",
						   toast_raw_datum_size(payload), pf_max_output_size),
				 errhint("Store big artifacts elsewhere and signal a reference to them.")));
	by = caller_name();

	v[0] = Int64GetDatum(run);
	v[1] = PointerGetDatum(ords);
	n = pf_exec(&st_awaiting, v, NULL, 0);
	ids = palloc(sizeof(int64) * Max(n, 1));
	for (i = 0; i < n; i++)
		ids[i] = pf_int8(i, 1);
	if (n > 0)
	{
		ArrayType  *done = wait_succeed(run, ids, n, payload, event, by, false);

		pf_done(run, version, PointerGetDatum(done));
		pf_finish_if_done(run);
		pf_check_blocked(run);
		pf_wake_at_commit();
	}
	else
	{
		v[1] = CStringGetTextDatum(event);
		v[2] = payload;
		v[3] = CStringGetDatum(by);
		v[3] = DirectFunctionCall1(namein, v[3]);
		pf_exec(&st_keep, v, NULL, 0);
	}
	SPI_finish();
	PG_RETURN_INT32(n);
}

/*
 * parflow_reject(run bigint, event text, reason text) returns integer: the
 * stages of the run awaiting the event fail for good with the reason (a
 * failure like any other: parflow_retry re-opens them); one that verifies
 * a stage sends that stage back to its agent with the reason instead, up
 * to its max_route_backs.  A rejection is not kept: with no stage awaiting
 * the event, it changes nothing and returns 0.
 */
Datum
parflow_reject(PG_FUNCTION_ARGS)
{
	int64		run;
	char	   *event;
	char	   *reason;
	ArrayType  *ords;
	Datum		v[2];
	int			n,
				i;
	PfTask	   *ts;
	bool	   *verifies;
	Datum		doc;
	static PfStmt st_doc = {
		"SELECT jsonb_build_object('rejected', $1, 'reason', $2, 'by', $3)",
		3, {TEXTOID, TEXTOID, TEXTOID}
	};
	Datum		dv[3];
	bool		isnull;

	if (!PG_ARGISNULL(0) && !PG_ARGISNULL(1) && PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("reason must not be null"),
				 errhint("Say why, for the run's failure report (or the agent whose stage goes back).")));
	reason = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (reason != NULL && strspn(reason, " \t\r\n") == strlen(reason))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("reason must not be empty"),
				 errhint("Say why, for the run's failure report (or the agent whose stage goes back).")));
	if (reason != NULL && strlen(reason) > 65536)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("reason is too long"),
				 errdetail("It takes %zu bytes; the limit is 65536.", strlen(reason))));
	connect_spi();
	(void) lock_for_event(fcinfo, "reject", &run, &event, &ords);

	dv[0] = CStringGetTextDatum(event);
	dv[1] = CStringGetTextDatum(reason);
	dv[2] = CStringGetTextDatum(caller_name());
	pf_exec(&st_doc, dv, NULL, 1);
	doc = datumCopy(pf_datum(0, 1, &isnull), false, -1);

	v[0] = Int64GetDatum(run);
	v[1] = PointerGetDatum(ords);
	n = pf_exec(&st_awaiting, v, NULL, 0);
	ts = palloc(sizeof(PfTask) * Max(n, 1));
	verifies = palloc(sizeof(bool) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		pf_load_task(i, &ts[i]);
		verifies[i] = pf_bool(i, PF_TASK_NCOLS + 1);
	}
	for (i = 0; i < n; i++)
	{
		if (verifies[i])
			pf_route_back(&ts[i], reason, doc, true);
		else
		{
			pf_retry_or_fail(&ts[i], "rejected", reason, false);
			pf_set_output(ts[i].id, doc);
		}
	}
	SPI_finish();
	PG_RETURN_INT32(n);
}

/* ---- timeouts ------------------------------------------------------------------ */

static PfStmt st_any_awaiting = {
	"SELECT EXISTS (SELECT FROM parflow.task tk WHERE tk.state = 'awaiting')",
	0, {0}
};

static PfStmt st_wait_timeouts = {
	"SELECT " PF_TASK_COLS ", s.wait_on_timeout, "
	"       format('awaited event \"%s\" longer than its timeout of %s', s.wait_event, "
	"              parflow._dur(s.wait_timeout)) "
	"  FROM parflow.task tk JOIN parflow.run r ON r.id = tk.run_id "
	PF_STAGE_OF("s", "r.version_id", "tk.stage_ord", "wait_event, wait_timeout, wait_on_timeout")
	" WHERE tk.state = 'awaiting' AND s.wait_timeout IS NOT NULL "
	"   AND tk.started_at + s.wait_timeout < clock_timestamp() "
	"   AND parflow._lock_run(tk.run_id, false, true) "
	" ORDER BY tk.id FOR UPDATE OF tk SKIP LOCKED",
	0, {0}
};

static PfStmt st_wait_skip = {
	"WITH u AS (UPDATE parflow.task tk SET state = 'skipped', finished_at = clock_timestamp(), error = $3 "
	"            WHERE tk.id = $2 AND tk.state = 'awaiting' RETURNING tk.id), "
	"e AS (INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"      SELECT $1, u.id, 'skipped', jsonb_build_object('why', 'timeout', 'reason', $3) FROM u), "
	"rr AS (UPDATE parflow.run_remaining x SET remaining = x.remaining - 1 FROM u "
	"        WHERE x.run_id = $1 AND x.shard = parflow._shard(u.id)) "
	"SELECT count(*)::integer FROM u",
	3, {INT8OID, INT8OID, TEXTOID}
};

/*
 * For the dispatcher's pass: wait tasks that awaited longer than their
 * stage's timeout fail for good, or, with on_timeout "skip", are skipped
 * (which satisfies their dependents).  A run an operator or a signal holds
 * is left to the next pass.
 */
void
pf_wait_timeouts(void)
{
	int			n,
				i;
	PfTask	   *ts;
	char	  **how;
	char	  **msgs;

	pf_exec(&st_any_awaiting, NULL, NULL, 1);
	if (!pf_bool(0, 1))
		return;
	n = pf_exec(&st_wait_timeouts, NULL, NULL, 0);
	ts = palloc(sizeof(PfTask) * Max(n, 1));
	how = palloc(sizeof(char *) * Max(n, 1));
	msgs = palloc(sizeof(char *) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		pf_load_task(i, &ts[i]);
		how[i] = pf_text(i, PF_TASK_NCOLS + 1);
		msgs[i] = pf_text(i, PF_TASK_NCOLS + 2);
	}
	for (i = 0; i < n; i++)
	{
		if (strcmp(how[i], "skip") == 0)
		{
			Datum		v[3] = {Int64GetDatum(ts[i].run_id), Int64GetDatum(ts[i].id),
			CStringGetTextDatum(msgs[i])};
			int32		ord = ts[i].stage_ord;

			pf_exec(&st_wait_skip, v, NULL, 0);
			pf_done(ts[i].run_id, ts[i].version_id, pf_int4_array(&ord, 1));
			pf_finish_if_done(ts[i].run_id);
			pf_check_blocked(ts[i].run_id);
			pf_wake_at_commit();
		}
		else
			pf_retry_or_fail(&ts[i], "timeout", msgs[i], false);
	}
}
