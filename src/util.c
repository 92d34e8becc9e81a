/*
 * util.c - helpers shared by parflow's C files.  It owns the conversions
 * between intervals and microseconds (the planner's unit of time), the
 * checked unpacking of text[] arguments, and the "did you mean" lookup by
 * edit distance behind the hints of spec errors (parflow._nearest).
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/varlena.h"

#include "util.h"

PG_FUNCTION_INFO_V1(parflow_nearest);

/* An interval in microseconds, counting a month as 30 days. */
int64
pf_interval_usec(const Interval *iv)
{
	return iv->time + (int64) iv->day * USECS_PER_DAY +
		(int64) iv->month * DAYS_PER_MONTH * USECS_PER_DAY;
}

/* A palloc'd interval of usec microseconds (time field only). */
Interval *
pf_usec_interval(int64 usec)
{
	Interval   *iv = palloc0(sizeof(Interval));

	iv->time = usec;
	return iv;
}

/* The elements of a text[] as C strings; NULL elements are refused. */
char	  **
pf_text_array(ArrayType *arr, const char *what, int *n)
{
	Datum	   *elems;
	bool	   *nulls;
	char	  **out;
	int			i;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%s must be a one-dimensional array", what)));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, n);
	out = palloc(sizeof(char *) * Max(*n, 1));
	for (i = 0; i < *n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not contain nulls", what)));
		out[i] = TextDatumGetCString(elems[i]);
	}
	return out;
}

/* The candidate closest to word, or NULL when none is within a third of its length. */
const char *
pf_nearest(const char *word, char **candidates, int n)
{
	int			wlen = strlen(word);
	int			limit = Max(2, wlen / 3);
	int			best = limit + 1;
	const char *found = NULL;
	int			i;

	for (i = 0; i < n; i++)
	{
		int			clen = strlen(candidates[i]);
		int			d;

		if (clen > 255 || wlen > 255)
			continue;
		d = varstr_levenshtein_less_equal(word, wlen, candidates[i], clen,
										  1, 1, 1, limit, false);
		if (d < best)
		{
			best = d;
			found = candidates[i];
		}
	}
	return found;
}

/* parflow._nearest(word, candidates): SQL face of pf_nearest. */
Datum
parflow_nearest(PG_FUNCTION_ARGS)
{
	int			n;
	char	  **cands;
	const char *found;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	cands = pf_text_array(PG_GETARG_ARRAYTYPE_P(1), "candidates", &n);
	found = pf_nearest(text_to_cstring(PG_GETARG_TEXT_PP(0)), cands, n);
	if (found == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(found));
}
