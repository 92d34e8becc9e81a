/*
 * stmt.c - the runtime core's way to run SQL: each statement is prepared on
 * its first use in a backend, with a generic plan (the tables the core reads
 * change fast, and a custom plan made for a run just started, before any
 * statistics, can scan the whole run), and kept; plus getters for the rows
 * it returns.  Every statement takes its values as parameters.  A statement
 * that locks with SKIP LOCKED runs so that it never waits long for a row.
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/resowner.h"

#include "stmt.h"

/*
 * SKIP LOCKED passes over a row another transaction holds, but when the
 * version a statement found was updated a moment before it locks it,
 * PostgreSQL locks the newer versions too and waits for their writer
 * whatever the wait policy (heap_lock_updated_tuple).  A claim or a
 * hand-over then waits for the agent completing the task it was about to
 * take; when that agent waits in turn for a row the claim's transaction
 * holds (a run's remaining count, a dependent task, a group barrier), the
 * two deadlock, and one of them fails with 40P01 after deadlock_timeout.
 * So a statement that locks with SKIP LOCKED runs in a subtransaction with a
 * lock_timeout of PF_SKIP_WAIT_MS: when it expires, the statement alone is
 * rolled back and run again with a new snapshot (the row it waited for has
 * moved on), and after PF_SKIP_TRIES it returns no rows, as when every row
 * it wanted was locked.  Only the statement's own waits are cut short.
 * The hand-over is not run so (PfStmt.own_xid): the rows it writes carry
 * the completion's own transaction id, by which its being part of the
 * completion is seen, and what it may wait for that way, a claim, is itself
 * cut short.
 */
#define PF_SKIP_WAIT_MS 20
#define PF_SKIP_TRIES 3

static int
run_plan(PfStmt *st, Datum *values, const char *nulls, long count)
{
	int			rc;

	if (st->plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare_cursor(st->sql, st->nargs, st->types,
											  CURSOR_OPT_GENERIC_PLAN);

		if (plan == NULL)
			elog(ERROR, "parflow: could not prepare \"%s\": %s", st->sql,
				 SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "parflow: could not keep a plan");
		st->plan = plan;
	}
	rc = SPI_execute_plan(st->plan, values, nulls, false, count);
	if (rc < 0)
		elog(ERROR, "parflow: statement failed (%s): %s",
			 SPI_result_code_string(rc), st->sql);
	return (int) SPI_processed;
}

/* One try of a skip_wait statement: false when its lock_timeout expired. */
static bool
try_skip_wait(PfStmt *st, Datum *values, const char *nulls, long count, int *n)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool done = false;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		/* as a function's SET clause: the caller's value is back after it */
		int			nest = NewGUCNestLevel();

		if (LockTimeout == 0 || LockTimeout > PF_SKIP_WAIT_MS)
			(void) set_config_option("lock_timeout", CppAsString2(PF_SKIP_WAIT_MS),
									 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
									 true, 0, false);
		*n = run_plan(st, values, nulls, count);
		AtEOXact_GUC(true, nest);
		ReleaseCurrentSubTransaction();
		done = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
		{
			FreeErrorData(edata);
			PG_RE_THROW();
		}
		FreeErrorData(edata);
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return done;
}

/*
 * Run a statement (non read-only: the core writes, and must see its own
 * writes) and return SPI_processed; an unexpected result is an internal
 * error.
 */
int
pf_exec(PfStmt *st, Datum *values, const char *nulls, long count)
{
	int			n = 0;
	int			tries;

	if (st->skip_wait == 0)
		st->skip_wait = strstr(st->sql, "SKIP LOCKED") != NULL && !st->own_xid ? 1 : -1;
	if (st->skip_wait < 0)
		return run_plan(st, values, nulls, count);
	for (tries = 1; tries <= PF_SKIP_TRIES; tries++)
	{
		CHECK_FOR_INTERRUPTS();
		if (try_skip_wait(st, values, nulls, count, &n))
			return n;
	}
	SPI_processed = 0;
	SPI_tuptable = NULL;
	return 0;
}

Datum
pf_datum(int r, int c, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, c, isnull);
}

bool
pf_isnull(int r, int c)
{
	bool		isnull;

	(void) pf_datum(r, c, &isnull);
	return isnull;
}

int64
pf_int8(int r, int c)
{
	bool		isnull;
	Datum		d = pf_datum(r, c, &isnull);

	return isnull ? 0 : DatumGetInt64(d);
}

int32
pf_int4(int r, int c)
{
	bool		isnull;
	Datum		d = pf_datum(r, c, &isnull);

	return isnull ? 0 : DatumGetInt32(d);
}

bool
pf_bool(int r, int c)
{
	bool		isnull;
	Datum		d = pf_datum(r, c, &isnull);

	return isnull ? false : DatumGetBool(d);
}

/* A text column as a palloc'd C string in the caller's context, or NULL. */
char *
pf_text(int r, int c)
{
	bool		isnull;
	Datum		d = pf_datum(r, c, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}
