/*
 * stmt.c - the runtime core's way to run SQL: each statement is prepared on
 * its first use in a backend, with a generic plan (the tables the core reads
 * change fast, and a custom plan made for a run just started, before any
 * statistics, can scan the whole run), and kept; plus getters for the rows
 * it returns.  Every statement takes its values as parameters.
 */
#include "postgres.h"

#include "executor/spi.h"
#include "nodes/parsenodes.h"
#include "utils/builtins.h"

#include "stmt.h"

/*
 * Run a statement (non read-only: the core writes, and must see its own
 * writes) and return SPI_processed; an unexpected result is an internal
 * error.
 */
int
pf_exec(PfStmt *st, Datum *values, const char *nulls, long count)
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
