/*
 * waits.c - the stages no agent works: a wait stage awaits an event (a
 * human approval, an outside system's webhook), a sub-workflow stage a
 * child run of another workflow, and a map stage's own task its instances
 * (one task per element of an array, each worked by the stage's agent).  Once its dependencies are done such a
 * task is awaiting instead of ready, and this file owns that state:
 * beginning to await (an event row and a notification on
 * parflow_orchestrator; a signal kept for the run completes a wait stage
 * at once; a sub-workflow stage starts its child run, or retries its
 * blocked one; a map stage makes its instances and then waits, counting
 * them in pending, until the last one succeeds), parflow_signal (completes the run's stages awaiting the
 * event with its payload as their output, or keeps it for the next stage
 * to await it), parflow_reject (fails them; a wait stage that verifies a
 * stage sends that stage back with the reason), the wait timeouts and the
 * ends of child runs, which the dispatcher's pass hands to their parents
 * (never the child's own transaction: it holds the child's lock, and a
 * parent's operator locks the parent before its children), and who may
 * signal (operators, and roles given events with parflow_allow_signal,
 * which also grants them EXECUTE on the two functions).  Signals and
 * rejections take the run's lock exclusively, as operators do, before its
 * row and tasks.
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/xact.h"
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
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

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
 * Tasks $2 of run $1, still awaiting, succeed with output $3 (event detail
 * $4: the signal, or the child run), and leave the run's remaining count.
 * Returns their stage ords.
 */
static PfStmt st_wait_succeed = {
	"WITH u AS (UPDATE parflow.task tk SET state = 'succeeded', output = $3, error = NULL, "
	"                  finished_at = clock_timestamp() "
	"            WHERE tk.run_id = $1 AND tk.id = ANY ($2) AND tk.state = 'awaiting' "
	"           RETURNING tk.id, tk.stage_ord), "
	"e AS (INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"      SELECT $1, u.id, $5, $4 FROM u), "
	"c AS (SELECT parflow._shard(u.id) AS shard, count(*)::integer AS n FROM u GROUP BY 1), "
	"rr AS (UPDATE parflow.run_remaining x SET remaining = x.remaining - c.n FROM c "
	"        WHERE x.run_id = $1 AND x.shard = c.shard) "
	"SELECT coalesce(array_agg(u.stage_ord ORDER BY u.stage_ord), '{}') FROM u",
	5, {INT8OID, INT8ARRAYOID, JSONBOID, JSONBOID, TEXTOID}
};

/*
 * The event of the transition is kind: signalled (a signal), succeeded (a
 * child run, an empty map).
 */
static ArrayType *
wait_succeed(int64 run, int64 *ids, int n, Datum output, Datum detail, const char *kind)
{
	Datum		v[5];
	bool		isnull;

	v[0] = Int64GetDatum(run);
	v[1] = pf_int8_array(ids, n);
	v[2] = output;
	v[3] = detail;
	v[4] = CStringGetTextDatum(kind);
	pf_exec(&st_wait_succeed, v, NULL, 0);
	return DatumGetArrayTypePCopy(pf_datum(0, 1, &isnull));
}

/*
 * An event detail (or an output) as jsonb: a JSON object built in C, as
 * pf_payload builds a notification, rather than by a statement of its own.
 * Key i's value is strs[i] as a JSON string or, where strs[i] is NULL,
 * raw[i] as it is (a number or a boolean).
 */
static Datum
json_detail(int n, const char **keys, const char **strs, const char **raw)
{
	StringInfoData s;
	int			i;

	initStringInfo(&s);
	appendStringInfoChar(&s, '{');
	for (i = 0; i < n; i++)
	{
		if (i > 0)
			appendStringInfoString(&s, ", ");
		escape_json(&s, keys[i]);
		appendStringInfoString(&s, ": ");
		if (strs[i] != NULL)
			escape_json(&s, strs[i]);
		else
			appendStringInfoString(&s, raw[i]);
	}
	appendStringInfoChar(&s, '}');
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(s.data));
}

/* The event detail of a task a signal completes. */
static Datum
signal_detail(const char *event, const char *by, bool kept)
{
	const char *keys[3] = {"signal", "by", "kept"};
	const char *strs[3] = {event, by, NULL};
	const char *raw[3] = {NULL, NULL, kept ? "true" : "false"};

	return json_detail(3, keys, strs, raw);
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
	"s AS (SELECT u.id, u.stage_ord, st.name, st.wait_event, st.wait_timeout, st.sub_workflow, "
	"             st.map_over_ord IS NOT NULL AS maps FROM u"
	PF_STAGE_OF("st", "$2", "u.stage_ord", "name, wait_event, wait_timeout, sub_workflow, map_over_ord") "), "
	"e AS (INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"      SELECT $1, s.id, 'awaiting', "
	"             jsonb_strip_nulls(jsonb_build_object('event', s.wait_event, 'timeout', s.wait_timeout::text, "
	"                                                  'workflow', s.sub_workflow)) "
	"        FROM s) "
	"SELECT s.id, s.wait_event, "
	"       jsonb_strip_nulls(jsonb_build_object('kind', 'awaiting', 'run', $1, 'task', s.id, 'stage', s.name, "
	"                                            'event', s.wait_event, 'timeout', s.wait_timeout::text, "
	"                                            'workflow', s.sub_workflow))::text, "
	"       s.stage_ord, s.sub_workflow, s.maps "
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

static void start_child(int64 run, int64 task, const char *workflow);
static bool expand_map(int64 run, int64 version, int64 task);

/*
 * Tasks of stages ords of a run, which have just become awaiting: their
 * event rows, their notifications on parflow_orchestrator (sent at commit,
 * so that a person or a bot is asked), each wait stage that a kept signal
 * of its event completes at once, and each sub-workflow stage's child run
 * started (or its blocked one retried).  Returns the stage ords completed,
 * for the caller to release their dependents (pf_done).
 */
ArrayType *
pf_await(int64 run, int64 version, ArrayType *ords)
{
	Datum		v[3] = {Int64GetDatum(run), Int64GetDatum(version), PointerGetDatum(ords)};
	int			n,
				i;
	int64	   *ids;
	char	  **events;
	char	  **workflows;
	int32	   *ords_of;
	bool	   *maps;
	int32	   *took;
	int			ntook = 0;

	n = pf_exec(&st_await_begin, v, NULL, 0);
	maps = palloc(sizeof(bool) * Max(n, 1));
	ids = palloc(sizeof(int64) * Max(n, 1));
	ords_of = palloc(sizeof(int32) * Max(n, 1));
	events = palloc(sizeof(char *) * Max(n, 1));
	workflows = palloc(sizeof(char *) * Max(n, 1));
	took = palloc(sizeof(int32) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		ids[i] = pf_int8(i, 1);
		events[i] = pf_text(i, 2);
		ords_of[i] = pf_int4(i, 4);
		workflows[i] = pf_text(i, 5);
		maps[i] = pf_bool(i, 6);
		/* (a map stage is not announced: its instances go to its agent) */
		if (!maps[i])
			Async_Notify("parflow_orchestrator", pf_text(i, 3));
	}
	for (i = 0; i < n; i++)
	{
		Datum		kv[2];
		Datum		payload;
		char	   *by;
		bool		isnull;
		ArrayType  *done;

		if (workflows[i] != NULL)
		{
			start_child(run, ids[i], workflows[i]);
			continue;
		}
		if (maps[i])
		{
			if (expand_map(run, version, ids[i]))
				took[ntook++] = ords_of[i];
			continue;
		}
		kv[0] = Int64GetDatum(run);
		kv[1] = CStringGetTextDatum(events[i]);
		if (pf_exec(&st_take_kept, kv, NULL, 1) != 1)
			continue;
		payload = datumCopy(pf_datum(0, 1, &isnull), false, -1);
		by = pf_text(0, 2);
		done = wait_succeed(run, &ids[i], 1, payload, signal_detail(events[i], by, true), "signalled");
		if (ArrayGetNItems(ARR_NDIM(done), ARR_DIMS(done)) == 1)
			took[ntook++] = ords_of[i];
	}
	return DatumGetArrayTypeP(pf_int4_array(took, ntook));
}

/* ---- sub-workflows ---------------------------------------------------------- */

/* How deep sub-workflows may nest (a deeper chain is taken for a cycle). */
#define PF_MAX_NESTING 16

/* A task, with PF_TASK_COLS, by id. */
static PfStmt st_task = {
	"SELECT " PF_TASK_COLS " FROM parflow.task tk JOIN parflow.run r ON r.id = tk.run_id WHERE tk.id = $1",
	1, {INT8OID}
};

/* How many runs up the chain of parents from run $1 (itself included). */
static PfStmt st_depth = {
	"WITH RECURSIVE up (id, parent, d) AS ( "
	"    SELECT r.id, r.parent_run, 1 FROM parflow.run r WHERE r.id = $1 "
	"    UNION ALL "
	"    SELECT r.id, r.parent_run, up.d + 1 FROM parflow.run r JOIN up ON r.id = up.parent "
	"     WHERE up.d <= " CppAsString2(PF_MAX_NESTING) ") "
	"SELECT max(up.d)::integer FROM up",
	1, {INT8OID}
};

/* The latest child run of task $1, and its failed stages. */
static PfStmt st_child = {
	"SELECT c.id, c.state, ARRAY(SELECT s.name FROM parflow.task t "
	"                             " PF_STAGE_OF("s", "c.version_id", "t.stage_ord", "name")
	"                            WHERE t.run_id = c.id AND t.state = 'failed' ORDER BY t.stage_ord) "
	"  FROM parflow.run c WHERE c.parent_task = $1 ORDER BY c.id DESC LIMIT 1",
	1, {INT8OID}
};

/* What a child run of task $1 starts with: the stage's input, the parent's flags, priority and mode. */
static PfStmt st_child_args = {
	PF_TASK_INPUT_QUERY(", r.flags, r.priority, r.parallel ", ", rr.flags, rr.priority, rr.parallel"),
	2, {INT8OID, INT8OID}
};

static PfStmt st_adopt = {
	"WITH u AS (UPDATE parflow.run c SET parent_run = $1, parent_task = $2 WHERE c.id = $3 RETURNING c.id) "
	"INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"SELECT $1, $2, 'child_started', jsonb_build_object('child', u.id, 'workflow', $4) FROM u",
	4, {INT8OID, INT8OID, INT8OID, TEXTOID}
};

/*
 * Call a function of the extension (a PL/pgSQL one: it must see what this
 * transaction wrote, as a statement of SPI's would), arguments NULL where
 * nulls[i].
 */
static Datum
call_ext(const char *name, int nargs, Datum *args, bool *nulls, bool *isnull)
{
	FmgrInfo	flinfo;
	LOCAL_FCINFO(fcinfo, 8);
	Datum		result;
	int			i;

	Assert(nargs <= 8);
	fmgr_info(pf_ext_func(name, nargs), &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, nargs, InvalidOid, NULL, NULL);
	for (i = 0; i < nargs; i++)
	{
		fcinfo->args[i].value = args[i];
		fcinfo->args[i].isnull = nulls[i];
	}
	CommandCounterIncrement();
	PushActiveSnapshot(GetTransactionSnapshot());
	result = FunctionCallInvoke(fcinfo);
	PopActiveSnapshot();
	CommandCounterIncrement();
	*isnull = fcinfo->isnull;
	return result;
}

/*
 * A sub-workflow stage (task of run) begins to await: a child run of the
 * latest version of workflow starts, with the stage's input and the run's
 * flags, priority and mode; when the task's last child is blocked (the
 * stage failed with it and is retried), the child's failed stages are
 * retried instead.  Nested deeper than PF_MAX_NESTING, the stage fails.
 */
static void
start_child(int64 run, int64 task, const char *workflow)
{
	Datum		v[4];
	Datum		args[7];
	bool		nulls[7] = {false, false, false, false, false, true, true};
	bool		isnull;
	int64		child;

	v[0] = Int64GetDatum(task);
	if (pf_exec(&st_child, v, NULL, 1) == 1 && strcmp(pf_text(0, 2), "blocked") == 0)
	{
		int64		blocked = pf_int8(0, 1);
		ArrayType  *failed = DatumGetArrayTypePCopy(pf_datum(0, 3, &isnull));
		Datum	   *names;
		int			nnames,
					i;

		deconstruct_array(failed, TEXTOID, -1, false, TYPALIGN_INT, &names, NULL, &nnames);
		for (i = 0; i < nnames; i++)
		{
			Datum		rargs[2] = {Int64GetDatum(blocked), names[i]};
			bool		rnulls[2] = {false, false};

			(void) call_ext("parflow_retry", 2, rargs, rnulls, &isnull);
		}
		return;
	}

	v[0] = Int64GetDatum(run);
	pf_exec(&st_depth, v, NULL, 1);
	if (pf_int4(0, 1) >= PF_MAX_NESTING)
	{
		PfTask		t;

		v[0] = Int64GetDatum(task);
		if (pf_exec(&st_task, v, NULL, 1) != 1)
			elog(ERROR, "parflow: task " INT64_FORMAT " not found", task);
		pf_load_task(0, &t);
		pf_retry_or_fail(&t, "sub-workflow",
						 psprintf("sub-workflows nested deeper than %d runs: does workflow \"%s\" contain itself?",
								  PF_MAX_NESTING, workflow), false);
		return;
	}

	v[0] = Int64GetDatum(task);
	v[1] = Int64GetDatum(run);
	if (pf_exec(&st_child_args, v, NULL, 1) != 1)
		elog(ERROR, "parflow: task " INT64_FORMAT " not found", task);
	args[0] = CStringGetTextDatum(workflow);
	args[1] = datumCopy(pf_datum(0, 2, &isnull), false, -1);
	args[2] = pf_datum(0, 3, &isnull);
	args[3] = pf_datum(0, 4, &isnull);
	args[4] = datumCopy(pf_datum(0, 1, &isnull), false, -1);
	child = DatumGetInt64(call_ext("parflow_start", 7, args, nulls, &isnull));

	v[0] = Int64GetDatum(run);
	v[1] = Int64GetDatum(task);
	v[2] = Int64GetDatum(child);
	v[3] = CStringGetTextDatum(workflow);
	pf_exec(&st_adopt, v, NULL, 0);
}

/* ---- map stages ------------------------------------------------------------ */

/*
 * The array a map stage's task $3 (run $1, version $2) runs over: the
 * output of its "over" stage at its key (a skipped "over" gives nothing to
 * map), its limit (its max, within parflow.max_map_width $4), and what to
 * say when it is not an array or too long.
 */
static PfStmt st_map_source = {
	"SELECT x.v, jsonb_typeof(x.v) = 'array' AND jsonb_array_length(x.v) <= x.lim, "
	"       CASE WHEN jsonb_typeof(x.v) = 'array' "
	"            THEN format('map stage \"%s\": stage \"%s\" gave %s elements%s, more than its limit of %s', "
	"                        x.ms, x.os, jsonb_array_length(x.v), x.at, x.lim) "
	"            ELSE format('map stage \"%s\": the output of stage \"%s\"%s is %s, not an array', "
	"                        x.ms, x.os, x.at, parflow._json_kind(x.v)) END, "
	"       jsonb_typeof(x.v) = 'array' AND jsonb_array_length(x.v) = 0, x.agent "
	"  FROM (SELECT ms.name AS ms, os.name AS os, ms.agent, "
	"               coalesce(format(' at key \"%s\"', ms.map_key), '') AS at, least(coalesce(ms.map_max, $4), $4) AS lim, "
	"               CASE WHEN ot.state = 'skipped' THEN '[]'::jsonb WHEN ms.map_key IS NULL THEN ot.output "
	"                    ELSE ot.output -> ms.map_key END AS v "
	"          FROM parflow.task mt "
	"          JOIN parflow.stage ms ON ms.version_id = $2 AND ms.ord = mt.stage_ord "
	"          JOIN parflow.stage os ON os.version_id = $2 AND os.ord = ms.map_over_ord "
	"          JOIN parflow.task ot ON ot.run_id = $1 AND ot.stage_ord = ms.map_over_ord AND ot.item IS NULL "
	"         WHERE mt.id = $3) x",
	4, {INT8OID, INT8OID, INT8OID, INT4OID}
};

/*
 * The instances of map task $2 of run $1: one ready task of agent $3 per
 * element of $4 (its index in item, the element in map_item), counted in
 * the run's remaining shards; the map task waits for them in pending.
 */
static PfStmt st_map_expand = {
	"WITH t AS (SELECT tk.run_id, tk.stage_ord, tk.group_ord, tk.priority, tk.rank FROM parflow.task tk WHERE tk.id = $2), "
	"i AS (INSERT INTO parflow.task (run_id, stage_ord, group_ord, agent, state, pending, priority, rank, item, map_item) "
	"      SELECT t.run_id, t.stage_ord, t.group_ord, $3, 'ready', 0, t.priority, t.rank, (e.n - 1)::integer, e.v "
	"        FROM t, jsonb_array_elements($4) WITH ORDINALITY e(v, n) ORDER BY e.n "
	"      RETURNING id, item), "
	"ev AS (INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"       SELECT $1, i.id, 'ready', jsonb_build_object('item', i.item) FROM i ORDER BY i.id), "
	"rr AS (INSERT INTO parflow.run_remaining AS x (run_id, shard, remaining) "
	"       SELECT $1, parflow._shard(i.id), count(*)::integer FROM i GROUP BY 2 "
	"       ON CONFLICT (run_id, shard) DO UPDATE SET remaining = x.remaining + excluded.remaining), "
	"m AS (UPDATE parflow.task tk SET state = 'waiting', pending = (SELECT count(*) FROM i), started_at = NULL "
	"       WHERE tk.id = $2 RETURNING tk.id) "
	"INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"SELECT $1, m.id, 'expanded', jsonb_build_object('instances', jsonb_array_length($4)) FROM m",
	4, {INT8OID, INT8OID, TEXTOID, JSONBOID}
};

/*
 * A map stage's task (of run) begins to await: the array it maps over
 * becomes its instances, ready for its agent, and the task waits for them;
 * an empty array completes it at once with [] (returns true); what is not
 * an array, or longer than its limit, fails it for good.
 */
static bool
expand_map(int64 run, int64 version, int64 task)
{
	Datum		v[4];
	bool		isnull;
	Datum		arr;

	v[0] = Int64GetDatum(run);
	v[1] = Int64GetDatum(version);
	v[2] = Int64GetDatum(task);
	v[3] = Int32GetDatum(pf_max_map_width);
	if (pf_exec(&st_map_source, v, NULL, 1) != 1)
		elog(ERROR, "parflow: map task " INT64_FORMAT " has no source", task);
	if (!pf_bool(0, 2))
	{
		PfTask		t;
		char	   *msg = pf_text(0, 3);

		v[0] = Int64GetDatum(task);
		if (pf_exec(&st_task, v, NULL, 1) != 1)
			elog(ERROR, "parflow: task " INT64_FORMAT " not found", task);
		pf_load_task(0, &t);
		pf_retry_or_fail(&t, "map", msg, false);
		return false;
	}
	if (pf_bool(0, 4))
	{
		const char *keys[1] = {"instances"};
		const char *strs[1] = {NULL};
		const char *raw[1] = {"0"};
		Datum		empty = DirectFunctionCall1(jsonb_in, CStringGetDatum("[]"));
		ArrayType  *done;

		done = wait_succeed(run, &task, 1, empty, json_detail(1, keys, strs, raw), "succeeded");
		return ArrayGetNItems(ARR_NDIM(done), ARR_DIMS(done)) == 1;
	}
	arr = datumCopy(pf_datum(0, 1, &isnull), false, -1);
	v[0] = Int64GetDatum(run);
	v[1] = Int64GetDatum(task);
	v[2] = CStringGetTextDatum(pf_text(0, 5));
	v[3] = arr;
	pf_exec(&st_map_expand, v, NULL, 0);
	pf_wake_at_commit();
	return false;
}

/*
 * Instances $2 of run $1 succeeded: their map tasks count them off, and
 * those with none left are returned.
 */
static PfStmt st_instances_off = {
	"WITH i AS (SELECT t.stage_ord, count(*)::integer AS n FROM parflow.task t "
	"            WHERE t.id = ANY ($2) AND t.item IS NOT NULL GROUP BY 1), "
	"u AS (UPDATE parflow.task tm SET pending = tm.pending - i.n FROM i "
	"       WHERE tm.run_id = $1 AND tm.stage_ord = i.stage_ord AND tm.item IS NULL AND tm.state = 'waiting' "
	"      RETURNING tm.id, tm.pending) "
	"SELECT coalesce(array_agg(u.id ORDER BY u.id) FILTER (WHERE u.pending = 0), '{}') FROM u",
	2, {INT8OID, INT8ARRAYOID}
};

/* Map tasks $2 of run $1 succeed with their instances' outputs, in index order. */
static PfStmt st_map_succeed = {
	"WITH u AS (UPDATE parflow.task tm SET state = 'succeeded', finished_at = clock_timestamp(), error = NULL, "
	"                  output = (SELECT coalesce(jsonb_agg(x.output ORDER BY x.item), '[]') FROM parflow.task x "
	"                             WHERE x.run_id = $1 AND x.stage_ord = tm.stage_ord AND x.item IS NOT NULL) "
	"            WHERE tm.run_id = $1 AND tm.id = ANY ($2) AND tm.state = 'waiting' AND tm.pending = 0 "
	"           RETURNING tm.id, tm.stage_ord, jsonb_array_length(tm.output) AS n), "
	"e AS (INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"      SELECT $1, u.id, 'succeeded', jsonb_build_object('instances', u.n) FROM u), "
	"c AS (SELECT parflow._shard(u.id) AS shard, count(*)::integer AS n FROM u GROUP BY 1), "
	"rr AS (UPDATE parflow.run_remaining x SET remaining = x.remaining - c.n FROM c "
	"        WHERE x.run_id = $1 AND x.shard = c.shard) "
	"SELECT coalesce(array_agg(u.stage_ord ORDER BY u.stage_ord), '{}') FROM u",
	2, {INT8OID, INT8ARRAYOID}
};

/*
 * Map instances ids (an int8[] of tasks of run that just succeeded; other
 * tasks among them are ignored): each map task whose last instance this
 * was succeeds with the array of its instances' outputs, and its
 * dependents are released.  Concurrent completions of one map's instances
 * queue on the map task's row, so exactly one of them sees none left.
 */
void
pf_instances_done(int64 run, int64 version, Datum ids)
{
	ArrayType  *a = DatumGetArrayTypeP(ids);
	Datum		v[2];
	bool		isnull;
	Datum		maps;
	ArrayType  *done;

	if (ArrayGetNItems(ARR_NDIM(a), ARR_DIMS(a)) == 0)
		return;
	v[0] = Int64GetDatum(run);
	v[1] = ids;
	pf_exec(&st_instances_off, v, NULL, 1);
	maps = PointerGetDatum(DatumGetArrayTypePCopy(pf_datum(0, 1, &isnull)));
	if (ArrayGetNItems(ARR_NDIM(DatumGetArrayTypeP(maps)), ARR_DIMS(DatumGetArrayTypeP(maps))) == 0)
		return;
	v[1] = maps;
	pf_exec(&st_map_succeed, v, NULL, 1);
	done = DatumGetArrayTypePCopy(pf_datum(0, 1, &isnull));
	pf_done(run, version, PointerGetDatum(done));
	pf_finish_if_done(run);
}

static PfStmt st_any_awaiting = {
	"SELECT EXISTS (SELECT FROM parflow.task tk WHERE tk.state = 'awaiting')",
	0, {0}
};

/* Sub-workflow stages awaiting a child run that has ended (the latest child of each). */
static PfStmt st_children_done = {
	"SELECT " PF_TASK_COLS ", c.id, c.state, w.name "
	"  FROM parflow.task tk JOIN parflow.run r ON r.id = tk.run_id "
	" CROSS JOIN LATERAL (SELECT c.id, c.state, c.version_id FROM parflow.run c WHERE c.parent_task = tk.id "
	"                      ORDER BY c.id DESC LIMIT 1) c "
	"  JOIN parflow.workflow_version v ON v.id = c.version_id JOIN parflow.workflow w ON w.id = v.workflow_id "
	" WHERE tk.state = 'awaiting' AND tk.agent IS NULL AND c.state IN ('succeeded', 'blocked', 'cancelled') "
	"   AND parflow._lock_run(tk.run_id, false, true) "
	" ORDER BY tk.id FOR UPDATE OF tk SKIP LOCKED",
	0, {0}
};

/*
 * Sub-workflow stages whose child run ended complete with
 * parflow_result(child) as their output, or fail when it is blocked or
 * cancelled.  A parent run held by an operator is left to the next pass.
 */
static void
settle_children(void)
{
	int			n,
				i;
	PfTask	   *ts;
	int64	   *child;
	char	  **state;
	char	  **wf;

	n = pf_exec(&st_children_done, NULL, NULL, 0);
	ts = palloc(sizeof(PfTask) * Max(n, 1));
	child = palloc(sizeof(int64) * Max(n, 1));
	state = palloc(sizeof(char *) * Max(n, 1));
	wf = palloc(sizeof(char *) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		pf_load_task(i, &ts[i]);
		child[i] = pf_int8(i, PF_TASK_NCOLS + 1);
		state[i] = pf_text(i, PF_TASK_NCOLS + 2);
		wf[i] = pf_text(i, PF_TASK_NCOLS + 3);
	}
	for (i = 0; i < n; i++)
	{
		if (strcmp(state[i], "succeeded") == 0)
		{
			Datum		a[1] = {Int64GetDatum(child[i])};
			bool		an[1] = {false};
			bool		isnull;
			Datum		output = call_ext("parflow_result", 1, a, an, &isnull);
			const char *keys[2] = {"child", "workflow"};
			const char *strs[2] = {NULL, wf[i]};
			const char *raw[2] = {psprintf(INT64_FORMAT, child[i]), NULL};
			Datum		detail = json_detail(2, keys, strs, raw);
			ArrayType  *done;

			done = wait_succeed(ts[i].run_id, &ts[i].id, 1, output, detail, "succeeded");
			pf_done(ts[i].run_id, ts[i].version_id, PointerGetDatum(done));
			pf_finish_if_done(ts[i].run_id);
			pf_check_blocked(ts[i].run_id);
			pf_wake_at_commit();
		}
		else
			pf_retry_or_fail(&ts[i], "sub-workflow",
							 psprintf("child run " INT64_FORMAT " of workflow \"%s\" is %s", child[i], wf[i],
									  state[i]), false);
	}
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
		ArrayType  *done = wait_succeed(run, ids, n, payload, signal_detail(event, by, false), "signalled");

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
	const char *keys[3] = {"rejected", "reason", "by"};
	const char *strs[3];
	const char *raw[3] = {NULL, NULL, NULL};

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

	strs[0] = event;
	strs[1] = reason;
	strs[2] = caller_name();
	doc = json_detail(3, keys, strs, raw);

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
 * Wait tasks that awaited longer than their stage's timeout fail for good,
 * or, with on_timeout "skip", are skipped (which satisfies their
 * dependents).  A run an operator or a signal holds is left to the next
 * pass.
 */
static void
wait_timeouts(void)
{
	int			n,
				i;
	PfTask	   *ts;
	char	  **how;
	char	  **msgs;

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

/*
 * The dispatcher's pass over awaiting tasks, after one probe of
 * task_awaiting_idx (usually empty): child runs that ended are handed to
 * their sub-workflow stages, and, when times are looked at (with_times),
 * wait timeouts end.
 */
void
pf_waits_pass(bool with_times)
{
	pf_exec(&st_any_awaiting, NULL, NULL, 1);
	if (!pf_bool(0, 1))
		return;
	settle_children();
	if (with_times)
		wait_timeouts();
}
