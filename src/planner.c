/*
 * planner.c - the planner's graph and SQL functions.  This file owns the
 * in-memory dependency graph of a workflow version (loaded once from the
 * definition tables into compact arrays), its validation (cycles are found
 * and named), the cap a plan honours, and the SQL functions parflow_plan,
 * parflow_estimate and their helpers (parflow._ranks hands the dispatch
 * ranks of the best plan to parflow_start).  The schedules themselves,
 * their lower bound and the search for the best one are schedule.c's.
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "portability/instr_time.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "guc.h"
#include "planner.h"
#include "util.h"

PG_FUNCTION_INFO_V1(parflow_plan);
PG_FUNCTION_INFO_V1(parflow_estimate);
PG_FUNCTION_INFO_V1(parflow_plan_stats);
PG_FUNCTION_INFO_V1(parflow_check_version);
PG_FUNCTION_INFO_V1(parflow_ranks);
PG_FUNCTION_INFO_V1(parflow_run_plan);

/* ----------------------------------------------------------------
 * Loading
 * ----------------------------------------------------------------
 */

/* Run a query with one bigint parameter; rows stay in SPI_tuptable. */
static void
spi_exec_int8(const char *sql, int64 arg)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1];
	int			rc;

	values[0] = Int64GetDatum(arg);
	rc = SPI_execute_with_args(sql, 1, argtypes, values, NULL, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "parflow: query failed (%s): %s", SPI_result_code_string(rc), sql);
}

static int
get_int4(HeapTuple tup, TupleDesc desc, int col, bool *isnull)
{
	Datum		d = SPI_getbinval(tup, desc, col, isnull);

	return *isnull ? 0 : DatumGetInt32(d);
}

/* Whether parflow._observed(bigint) exists (0.2.0 on; the library also serves 0.1.0). */
static bool
observed_available(void)
{
	Oid			argtypes[1] = {INT8OID};

	return OidIsValid(LookupFuncName(list_make2(makeString("parflow"), makeString("_observed")),
									 1, argtypes, true));
}

/*
 * Whether parflow.stage knows wait stages (from 0.4.0 on: a server may
 * load this library before ALTER EXTENSION parflow UPDATE).
 */
static bool
waits_available(void)
{
	Oid			rel = get_relname_relid("stage", get_namespace_oid("parflow", false));

	return OidIsValid(rel) && get_attnum(rel, "wait_event") != InvalidAttrNumber;
}

/* Build CSR arrays from an edge list (from[i] -> to[i]). */
static void
build_csr(int n, int64 m, const int *from, const int *to,
		  int **off_out, int **adj_out, bool by_from)
{
	int		   *off = palloc0(sizeof(int) * (n + 1));
	int		   *adj = palloc(sizeof(int) * Max(m, 1));
	int		   *fill = palloc(sizeof(int) * (n + 1));
	int64		i;

	for (i = 0; i < m; i++)
		off[(by_from ? from[i] : to[i]) + 1]++;
	for (i = 0; i < n; i++)
		off[i + 1] += off[i];
	memcpy(fill, off, sizeof(int) * (n + 1));
	for (i = 0; i < m; i++)
	{
		int			k = by_from ? from[i] : to[i];

		adj[fill[k]++] = by_from ? to[i] : from[i];
	}
	pfree(fill);
	*off_out = off;
	*adj_out = adj;
}

/* How many graphs of sub-workflows are being loaded, one inside the other. */
static int	load_depth = 0;

/* A run whose expanded map stages count as their real widths (0: none). */
static int64 load_run = 0;

/*
 * Load the graph of a workflow version.  flags decides which conditional
 * stages run (NULL: all of them, as for validation).  Allocates in the
 * caller's memory context.
 */
PfGraph *
pf_graph_load(int64 version_id, ArrayType *flags)
{
	MemoryContext outer = CurrentMemoryContext;
	PfGraph    *g = palloc0(sizeof(PfGraph));
	char	  **flagv = NULL;
	int			nflags = 0;
	int		   *from;
	int		   *to;
	int64		m = 0;
	int64		cap_edges;
	int		   *gstart;
	int		   *gend;
	int		   *verifies;
	int		   *expect;
	char	  **child;
	uint64		i;
	int			j;

	if (flags != NULL)
		flagv = pf_text_array(flags, "flags", &nflags);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "parflow: SPI_connect failed");

	spi_exec_int8("SELECT coalesce(max_parallel, 0) FROM parflow.workflow_version WHERE id = $1",
				  version_id);
	if (SPI_processed != 1)
		elog(ERROR, "parflow: workflow version " INT64_FORMAT " does not exist", version_id);
	{
		bool		isnull;

		g->wf_max_parallel = get_int4(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	}

	/* groups */
	spi_exec_int8("SELECT ord, name FROM parflow.stage_group WHERE version_id = $1 ORDER BY ord",
				  version_id);
	g->ngroups = (int) SPI_processed;
	g->group_name = MemoryContextAlloc(outer, sizeof(char *) * Max(g->ngroups, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		char	   *name = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);

		g->group_name[i] = MemoryContextStrdup(outer, name);
	}

	/* stages, in spec order; group_ord never decreases along ord */
	spi_exec_int8(waits_available()
				  ? "SELECT ord, group_ord, name, agent, estimate, when_flag, verifies_ord, "
				  "       wait_event IS NOT NULL OR sub_workflow IS NOT NULL, coalesce(map_expect, 1), "
				  "       CASE WHEN estimate = '0' THEN sub_workflow END, map_over_ord IS NOT NULL "
				  "FROM parflow.stage WHERE version_id = $1 ORDER BY ord"
				  : "SELECT ord, group_ord, name, agent, estimate, when_flag, verifies_ord, false, 1, NULL, false "
				  "FROM parflow.stage WHERE version_id = $1 ORDER BY ord",
				  version_id);
	g->nstages = (int) SPI_processed;
	g->nnodes = g->nstages + g->ngroups;
	g->cost = MemoryContextAllocZero(outer, sizeof(int64) * g->nnodes);
	g->runs = MemoryContextAllocZero(outer, sizeof(bool) * g->nnodes);
	g->wait = MemoryContextAllocZero(outer, sizeof(bool) * g->nnodes);
	g->map = MemoryContextAllocZero(outer, sizeof(bool) * g->nnodes);
	expect = palloc(sizeof(int) * Max(g->nstages, 1));
	child = MemoryContextAllocZero(outer, sizeof(char *) * Max(g->nstages, 1));
	g->group_of = MemoryContextAlloc(outer, sizeof(int) * Max(g->nstages, 1));
	g->stage_name = MemoryContextAlloc(outer, sizeof(char *) * Max(g->nstages, 1));
	g->agent = MemoryContextAlloc(outer, sizeof(char *) * Max(g->nstages, 1));
	gstart = palloc(sizeof(int) * Max(g->ngroups, 1));
	verifies = palloc(sizeof(int) * Max(g->nstages, 1));
	gend = palloc0(sizeof(int) * Max(g->ngroups, 1));
	for (j = 0; j < g->ngroups; j++)
		gstart[j] = -1;
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int			grp = get_int4(tup, desc, 2, &isnull);
		Interval   *est = DatumGetIntervalP(SPI_getbinval(tup, desc, 5, &isnull));
		char	   *when = SPI_getvalue(tup, desc, 6);
		bool		vnull;
		int			vord = get_int4(tup, desc, 7, &vnull);
		bool		runs = true;
		char	   *agent;

		if ((int) i != get_int4(tup, desc, 1, &isnull) || grp < 0 || grp >= g->ngroups)
			elog(ERROR, "parflow: stage numbering of version " INT64_FORMAT " is corrupt", version_id);
		g->group_of[i] = grp;
		if (gstart[grp] < 0)
			gstart[grp] = (int) i;
		gend[grp] = (int) i + 1;
		g->stage_name[i] = MemoryContextStrdup(outer, SPI_getvalue(tup, desc, 3));
		agent = SPI_getvalue(tup, desc, 4);
		g->agent[i] = agent ? MemoryContextStrdup(outer, agent) : NULL;
		g->wait[i] = DatumGetBool(SPI_getbinval(tup, desc, 8, &isnull));
		g->map[i] = DatumGetBool(SPI_getbinval(tup, desc, 11, &isnull));
		expect[i] = get_int4(tup, desc, 9, &isnull);
		{
			char	   *c = SPI_getvalue(tup, desc, 10);

			child[i] = c ? MemoryContextStrdup(outer, c) : NULL;
		}
		if (when != NULL && flags != NULL)
		{
			runs = false;
			for (j = 0; j < nflags && !runs; j++)
				runs = (strcmp(flagv[j], when) == 0);
		}
		g->runs[i] = runs;
		g->cost[i] = runs ? pf_interval_usec(est) : 0;
		verifies[i] = vnull ? -1 : vord;
	}
	/*
	 * A verification of a stage that its flag skips is skipped too (as
	 * parflow_start decides it: by the verified stage's own flag).
	 */
	{
		bool	   *own = palloc(sizeof(bool) * Max(g->nstages, 1));

		for (j = 0; j < g->nstages; j++)
			own[j] = g->runs[j];
		for (j = 0; j < g->nstages; j++)
			if (verifies[j] >= 0 && verifies[j] < g->nstages && !own[verifies[j]])
			{
				g->runs[j] = false;
				g->cost[j] = 0;
			}
		pfree(own);
	}

	/*
	 * Learned estimates: stages that finished in enough runs of this
	 * workflow are planned with their observed median (parflow._observed,
	 * from version 0.2.0 on; it applies parflow.learn_min_runs).
	 */
	if (pf_learn_min_runs > 0 && observed_available())
	{
		spi_exec_int8("SELECT o.stage_ord, o.usec FROM parflow._observed($1) o", version_id);
		for (i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			int			ord = get_int4(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
			Datum		usec = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull);

			if (ord >= 0 && ord < g->nstages && g->runs[ord] && !isnull)
				g->cost[ord] = Max(DatumGetInt64(usec), 0);
		}
	}

	for (j = 0; j < g->nstages; j++)
		g->has_wait |= g->runs[j] && g->wait[j];

	/*
	 * A map stage runs as many instances as its array has elements, known
	 * only at run time: it is planned as "expect" instances (1 by default;
	 * once it expanded in enough runs of the workflow, their median,
	 * parflow._observed_width) sharing the caps, as one stage that takes
	 * ceil(expect / width) times as long, width being as many as can run at
	 * once.
	 */
	if (pf_learn_min_runs > 0 && waits_available())
	{
		spi_exec_int8("SELECT o.stage_ord, o.width FROM parflow._observed_width($1) o", version_id);
		for (i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			int			ord = get_int4(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
			int			w = get_int4(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull);

			if (ord >= 0 && ord < g->nstages && !isnull)
				expect[ord] = Max(w, 1);
		}
	}
	if (load_run != 0)
	{
		/* a run's map stages that expanded: their real widths */
		spi_exec_int8("SELECT t.stage_ord, "
					  "       CASE WHEN t.state = 'succeeded' THEN jsonb_array_length(t.output) "
					  "            ELSE (SELECT count(*) FROM parflow.task i WHERE i.run_id = t.run_id "
					  "                     AND i.stage_ord = t.stage_ord AND i.item IS NOT NULL) END::integer "
					  "  FROM parflow.task t WHERE t.run_id = $1 AND t.item IS NULL AND t.agent IS NULL "
					  "   AND EXISTS (SELECT FROM parflow.event e WHERE e.run_id = t.run_id AND e.task_id = t.id "
					  "                  AND e.kind IN ('expanded', 'succeeded'))",
					  load_run);
		for (i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			int			ord = get_int4(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
			int			w = get_int4(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull);

			if (ord >= 0 && ord < g->nstages && !isnull && expect[ord] > 0)
			{
				expect[ord] = w;
				if (w == 0)
					g->cost[ord] = 0;
			}
		}
	}
	{
		int			width = pf_max_parallel_stages;

		if (g->wf_max_parallel > 0)
			width = Min(width, g->wf_max_parallel);
		width = Max(width, 1);
		for (j = 0; j < g->nstages; j++)
			if (expect[j] > 1)
				g->cost[j] *= (expect[j] + Min(expect[j], width) - 1) / Min(expect[j], width);
	}

	/* Every schedule's times stay below the total work: it must fit. */
	{
		int64		total = 0;

		for (j = 0; j < g->nstages; j++)
			if (pg_add_s64_overflow(total, g->cost[j], &total) || total > PG_INT64_MAX / 4)
				ereport(ERROR,
						(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
						 errmsg("the estimates of workflow version " INT64_FORMAT " add up to more than can be planned",
								version_id),
						 errhint("Estimates are durations of work, at most a year each; split or shorten them.")));
	}

	/* affinity rules, and the rules that bound each stage */
	spi_exec_int8("SELECT a.ord, a.max_concurrent, s.ord "
				  "FROM parflow.affinity a JOIN parflow.stage s "
				  "  ON s.version_id = a.version_id AND s.agent = ANY (a.agents) "
				  "WHERE a.version_id = $1 ORDER BY s.ord, a.ord",
				  version_id);
	{
		int		   *rs = palloc(sizeof(int) * Max(SPI_processed, 1));
		int		   *rr = palloc(sizeof(int) * Max(SPI_processed, 1));

		g->nrules = 0;
		for (i = 0; i < SPI_processed; i++)
		{
			bool		isnull;

			rr[i] = get_int4(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
			rs[i] = get_int4(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull);
			g->nrules = Max(g->nrules, rr[i] + 1);
		}
		g->rule_cap = MemoryContextAllocZero(outer, sizeof(int) * Max(g->nrules, 1));
		for (i = 0; i < SPI_processed; i++)
		{
			bool		isnull;

			g->rule_cap[rr[i]] = get_int4(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull);
		}
		{
			MemoryContext old = MemoryContextSwitchTo(outer);

			build_csr(g->nstages, (int64) SPI_processed, rs, rr, &g->srule_off, &g->srule, true);
			MemoryContextSwitchTo(old);
		}
	}

	/*
	 * Edges: every stage -> its group's barrier; a group's prerequisite
	 * barriers -> each of its stages; stage edges.
	 */
	spi_exec_int8("SELECT group_ord, dep_ord FROM parflow.group_dep WHERE version_id = $1",
				  version_id);
	{
		SPITupleTable *gd = SPI_tuptable;
		uint64		ngd = SPI_processed;

		cap_edges = g->nstages;
		for (i = 0; i < ngd; i++)
		{
			bool		isnull;
			int			go = get_int4(gd->vals[i], gd->tupdesc, 1, &isnull);

			if (go < 0 || go >= g->ngroups || gstart[go] < 0)
				elog(ERROR, "parflow: group numbering of version " INT64_FORMAT " is corrupt", version_id);
			cap_edges += gend[go] - gstart[go];
		}

		/* keep the group edges while the stage edges are read */
		spi_exec_int8("SELECT stage_ord, dep_ord FROM parflow.stage_dep WHERE version_id = $1",
					  version_id);
		cap_edges += SPI_processed;
		from = MemoryContextAlloc(outer, sizeof(int) * Max(cap_edges, 1));
		to = MemoryContextAlloc(outer, sizeof(int) * Max(cap_edges, 1));

		for (j = 0; j < g->nstages; j++)
		{
			from[m] = j;
			to[m] = g->nstages + g->group_of[j];
			m++;
		}
		for (i = 0; i < ngd; i++)
		{
			bool		isnull;
			int			go = get_int4(gd->vals[i], gd->tupdesc, 1, &isnull);
			int			dep = get_int4(gd->vals[i], gd->tupdesc, 2, &isnull);
			int			k;

			for (k = gstart[go]; k < gend[go]; k++)
			{
				from[m] = g->nstages + dep;
				to[m] = k;
				m++;
			}
		}
		for (i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			int			s = get_int4(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
			int			d = get_int4(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull);

			if (s < 0 || s >= g->nstages || d < 0 || d >= g->nstages)
				elog(ERROR, "parflow: stage edges of version " INT64_FORMAT " are corrupt", version_id);
			from[m] = d;
			to[m] = s;
			m++;
		}
	}
	SPI_finish();

	g->nedges = m;
	build_csr(g->nnodes, m, from, to, &g->succ_off, &g->succ, true);
	build_csr(g->nnodes, m, from, to, &g->pred_off, &g->pred, false);
	/* gstart and gend went with SPI's memory context */
	pfree(from);
	pfree(to);

	/*
	 * A sub-workflow stage without an estimate of its own is planned as its
	 * child's planned makespan (critical-path order, the same flags; parflow_define
	 * refuses cycles of workflows, and the depth is bounded besides).
	 */
	for (j = 0; j < g->nstages; j++)
		if (child[j] != NULL && g->runs[j] && load_depth < 16)
		{
			PfGraph    *cg;
			PfSchedule *cs;
			int64		run = load_run;

			/* (a run's real map widths are its own version's, not its children's) */
			load_run = 0;
			load_depth++;
			PG_TRY();
			{
				cg = pf_graph_load(pf_current_version(child[j]), flags);
				pf_graph_check(cg, child[j]);
				cs = pf_schedule(cg, pf_effective_cap(cg, 0), PF_POLICY_CP);
				g->cost[j] = cs->makespan;
			}
			PG_FINALLY();
			{
				load_depth--;
				load_run = run;
			}
			PG_END_TRY();
		}
	return g;
}

/*
 * Order the graph topologically (into g->topo) or raise an error that names
 * a cycle, in the order its dependencies run: a -> b -> a.
 */
void
pf_graph_check(PfGraph *g, const char *workflow)
{
	int			n = g->nnodes;
	int		   *indeg = palloc(sizeof(int) * Max(n, 1));
	int			head = 0;
	int			tail = 0;
	int			v;

	g->topo = palloc(sizeof(int) * Max(n, 1));
	for (v = 0; v < n; v++)
	{
		indeg[v] = g->pred_off[v + 1] - g->pred_off[v];
		if (indeg[v] == 0)
			g->topo[tail++] = v;
	}
	while (head < tail)
	{
		int			u = g->topo[head++];
		int			k;

		for (k = g->succ_off[u]; k < g->succ_off[u + 1]; k++)
			if (--indeg[g->succ[k]] == 0)
				g->topo[tail++] = g->succ[k];
	}

	if (tail < n)
	{
		/*
		 * Every node left has a predecessor that is left too: walk backwards
		 * until a node repeats; the walk from there is a cycle.
		 */
		int		   *seen = palloc(sizeof(int) * n);
		int		   *path = palloc(sizeof(int) * (n + 1));
		int			len = 0;
		int			start;
		StringInfoData cyc;
		StringInfoData via;
		int			i;

		for (v = 0; v < n; v++)
			seen[v] = -1;
		for (v = 0; v < n && indeg[v] == 0; v++)
			;
		while (seen[v] < 0)
		{
			int			k;

			seen[v] = len;
			path[len++] = v;
			for (k = g->pred_off[v]; k < g->pred_off[v + 1]; k++)
				if (indeg[g->pred[k]] > 0)
					break;
			v = g->pred[k];
		}
		start = seen[v];

		/*
		 * path[start..len) walks the cycle backwards.  Print it forwards,
		 * starting from the stage that comes first in the spec.
		 */
		{
			int			clen = len - start;
			int			first = -1;
			int			nvia = 0;
			int			j;

			for (j = start; j < len; j++)
				if (path[j] < g->nstages && (first < 0 || path[j] < path[first]))
					first = j;
			initStringInfo(&cyc);
			initStringInfo(&via);
			for (j = 0; j < clen; j++)
			{
				/* backwards from first, wrapping around the cycle */
				i = start + ((first - start) - j + clen) % clen;
				if (path[i] >= g->nstages)
				{
					appendStringInfo(&via, "%s\"%s\"", nvia++ ? ", " : "",
									 g->group_name[path[i] - g->nstages]);
					continue;
				}
				appendStringInfo(&cyc, "%s%s", cyc.len ? " -> " : "", g->stage_name[path[i]]);
			}
			appendStringInfo(&cyc, " -> %s", g->stage_name[path[first]]);

			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("dependency cycle: %s", cyc.data),
					 nvia == 0 ? errdetail("Each of these stages waits for the one before it.") :
					 nvia == 1 ? errdetail("The cycle passes through the barrier of group %s.", via.data) :
					 errdetail("The cycle passes through the barriers of groups %s.", via.data),
					 errhint("Remove one of the dependencies on the cycle: an explicit depends_on, a consumed artifact, or a group's depends_on.")));
		}
	}
	pfree(indeg);
}

/* The cap a plan honours: the global cap, the workflow's and the call's. */
int
pf_effective_cap(PfGraph *g, int call_max_parallel)
{
	int			cap = pf_max_parallel_stages;

	if (g->wf_max_parallel > 0)
		cap = Min(cap, g->wf_max_parallel);
	if (call_max_parallel > 0)
		cap = Min(cap, call_max_parallel);
	return cap;
}

/* ----------------------------------------------------------------
 * SQL-callable functions
 * ----------------------------------------------------------------
 */

/* The id of the latest version of a workflow; 42704 when there is none. */
int64
pf_current_version(const char *workflow)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	int64		vid = 0;
	bool		found;

	values[0] = CStringGetTextDatum(workflow);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "parflow: SPI_connect failed");
	if (SPI_execute_with_args("SELECT v.id FROM parflow.workflow w "
							  "JOIN parflow.workflow_version v ON v.workflow_id = w.id "
							  "WHERE w.name = $1 ORDER BY v.version DESC LIMIT 1",
							  1, argtypes, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "parflow: could not look up workflow");
	found = (SPI_processed == 1);
	if (found)
	{
		bool		isnull;

		vid = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		SPI_finish();
		return vid;
	}

	/* not found: look for a near miss to suggest */
	if (SPI_execute("SELECT name FROM parflow.workflow ORDER BY name LIMIT 10000", true, 0) == SPI_OK_SELECT)
	{
		char	  **names = palloc(sizeof(char *) * Max(SPI_processed, 1));
		const char *near;
		uint64		i;

		for (i = 0; i < SPI_processed; i++)
			names[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		near = pf_nearest(workflow, names, (int) SPI_processed);
		if (near != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("workflow \"%s\" does not exist", workflow),
					 errhint("Did you mean \"%s\"?", near)));
	}
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("workflow \"%s\" does not exist", workflow),
			 errhint("Define it with parflow_define(), or list the defined ones with SELECT name FROM parflow.workflow.")));
	return 0;					/* keep the compiler quiet */
}

/* Common argument handling of parflow_plan and parflow_estimate. */
static PfGraph *
plan_args(FunctionCallInfo fcinfo, char **workflow, int *call_cap)
{
	ArrayType  *flags = NULL;
	int64		vid;
	PfGraph    *g;
	int			i;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("workflow name must not be null")));
	*workflow = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (!PG_ARGISNULL(1))
		flags = PG_GETARG_ARRAYTYPE_P(1);
	*call_cap = 0;
	if (PG_NARGS() > 2 && !PG_ARGISNULL(2))
	{
		*call_cap = PG_GETARG_INT32(2);
		if (*call_cap < 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_parallel must be at least 1"),
					 errdetail("Found %d.", *call_cap),
					 errhint("Pass NULL to use the workflow's own cap.")));
	}
	vid = pf_current_version(*workflow);
	g = pf_graph_load(vid, flags != NULL ? flags : construct_empty_array(TEXTOID));
	pf_graph_check(g, *workflow);
	for (i = 0; i < g->nstages; i++)
		if (g->runs[i] && g->wait[i] && g->cost[i] == 0)
			ereport(NOTICE,
					(errmsg("stage \"%s\", which no agent works, is planned as taking no time",
							g->stage_name[i]),
					 errdetail("It has no estimate, and no run of the workflow has finished it yet."),
					 errhint("Give it an \"estimate\" of how long its event or its child run usually takes.")));
	return g;
}

static int
cmp_by_start(const void *a, const void *b, void *arg)
{
	PfSchedule *s = (PfSchedule *) arg;
	int			x = *(const int *) a;
	int			y = *(const int *) b;

	if (s->start[x] != s->start[y])
		return s->start[x] < s->start[y] ? -1 : 1;
	return x - y;
}

Datum
parflow_plan(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *workflow;
	int			call_cap;
	PfGraph    *g;
	PfSchedule *s;
	int		   *order;
	int			n = 0;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	g = plan_args(fcinfo, &workflow, &call_cap);
	s = pf_schedule(g, pf_effective_cap(g, call_cap), PF_POLICY_BEST);

	order = palloc(sizeof(int) * Max(g->nstages, 1));
	for (i = 0; i < g->nstages; i++)
		if (g->runs[i])
			order[n++] = i;
	qsort_arg(order, n, sizeof(int), cmp_by_start, s);

	for (i = 0; i < n; i++)
	{
		int			v = order[i];
		int64		slack = s->slack[v];
		Datum		values[10];
		bool		nulls[10] = {0};

		values[0] = CStringGetTextDatum(g->stage_name[v]);
		if (g->agent[v] != NULL)
			values[1] = CStringGetTextDatum(g->agent[v]);
		else
			nulls[1] = true;
		values[2] = CStringGetTextDatum(g->group_name[g->group_of[v]]);
		values[3] = Int32GetDatum(s->wave[v]);
		values[4] = IntervalPGetDatum(pf_usec_interval(s->start[v]));
		values[5] = IntervalPGetDatum(pf_usec_interval(s->finish[v]));
		values[6] = IntervalPGetDatum(pf_usec_interval(slack));
		values[7] = BoolGetDatum(slack <= 0);
		values[8] = BoolGetDatum(s->proof != PF_PROOF_NONE);
		if (s->hold[v] >= 0)
			values[9] = CStringGetTextDatum(g->stage_name[s->hold[v]]);
		else
			nulls[9] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

Datum
parflow_estimate(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *workflow;
	int			call_cap;
	PfGraph    *g;
	PfSchedule *s;
	Datum		values[6];
	bool		nulls[6] = {0};
	double		pct = 0;

	InitMaterializedSRF(fcinfo, 0);
	g = plan_args(fcinfo, &workflow, &call_cap);
	s = pf_schedule(g, pf_effective_cap(g, call_cap), PF_POLICY_BEST);

	if (s->total_work > 0)
		pct = 100.0 * (double) (s->total_work - s->makespan) / (double) s->total_work;
	values[0] = IntervalPGetDatum(pf_usec_interval(s->total_work));
	values[1] = IntervalPGetDatum(pf_usec_interval(s->makespan));
	values[2] = DirectFunctionCall2(numeric_round,
									DirectFunctionCall1(float8_numeric, Float8GetDatum(pct)),
									Int32GetDatum(1));
	values[3] = IntervalPGetDatum(pf_usec_interval(s->critical_path));
	values[4] = IntervalPGetDatum(pf_usec_interval(s->lower_bound));
	values[5] = BoolGetDatum(s->proof != PF_PROOF_NONE);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	return (Datum) 0;
}

/* parflow._plan_stats: sizes, makespan and timings under a given policy. */
Datum
parflow_plan_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *workflow;
	int			call_cap;
	char	   *policy_name;
	PfPolicy	policy;
	PfGraph    *g;
	PfSchedule *s;
	instr_time	t0,
				t1,
				t2;
	Datum		values[11];
	bool		nulls[11] = {0};

	InitMaterializedSRF(fcinfo, 0);
	policy_name = PG_ARGISNULL(3) ? "best" : text_to_cstring(PG_GETARG_TEXT_PP(3));
	if (strcmp(policy_name, "best") == 0)
		policy = PF_POLICY_BEST;
	else if (strcmp(policy_name, "cp") == 0)
		policy = PF_POLICY_CP;
	else if (strcmp(policy_name, "fifo") == 0)
		policy = PF_POLICY_FIFO;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown planning policy \"%s\"", policy_name),
				 errhint("Use \"best\", \"cp\" or \"fifo\".")));

	INSTR_TIME_SET_CURRENT(t0);
	g = plan_args(fcinfo, &workflow, &call_cap);
	INSTR_TIME_SET_CURRENT(t1);
	s = pf_schedule(g, pf_effective_cap(g, call_cap), policy);
	INSTR_TIME_SET_CURRENT(t2);
	INSTR_TIME_SUBTRACT(t2, t1);
	INSTR_TIME_SUBTRACT(t1, t0);

	values[0] = Int32GetDatum(g->nstages);
	values[1] = Int64GetDatum(g->nedges);
	values[2] = IntervalPGetDatum(pf_usec_interval(s->makespan));
	values[3] = Float8GetDatum(INSTR_TIME_GET_MILLISEC(t1));
	values[4] = Float8GetDatum(INSTR_TIME_GET_MILLISEC(t2));
	values[5] = IntervalPGetDatum(pf_usec_interval(s->lower_bound));
	values[6] = BoolGetDatum(s->proof != PF_PROOF_NONE);
	if (s->proof == PF_PROOF_BOUND)
		values[7] = CStringGetTextDatum("bound");
	else if (s->proof == PF_PROOF_SEARCH)
		values[7] = CStringGetTextDatum("search");
	else
		nulls[7] = true;
	values[8] = Int64GetDatum(s->schedules);
	values[9] = Int64GetDatum(s->units);
	values[10] = Int32GetDatum(s->nheld);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	return (Datum) 0;
}

/* parflow._check_version: reject a version whose graph has a cycle. */
Datum
parflow_check_version(PG_FUNCTION_ARGS)
{
	PfGraph    *g = pf_graph_load(PG_GETARG_INT64(0), NULL);

	pf_graph_check(g, NULL);
	PG_RETURN_VOID();
}

/*
 * parflow._ranks(version, flags, cap): the dispatch rank of every stage, from
 * the best plan under the cap (NULL: the workflow's and the global cap), the
 * planned makespan, and the stage whose finish the plan holds it for (NULL:
 * none).  Ranks are what the dispatcher orders ready tasks by; holds keep it
 * from starting a stage early where the plan keeps a slot free.
 */
Datum
parflow_ranks(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PfGraph    *g;
	PfSchedule *s;
	int			cap;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		elog(ERROR, "parflow: _ranks needs a version and flags");
	g = pf_graph_load(PG_GETARG_INT64(0), PG_GETARG_ARRAYTYPE_P(1));
	pf_graph_check(g, NULL);
	cap = pf_effective_cap(g, PG_ARGISNULL(2) ? 0 : PG_GETARG_INT32(2));
	s = pf_schedule(g, cap, PF_POLICY_BEST);
	for (i = 0; i < g->nstages; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {0};

		values[0] = Int32GetDatum(i);
		values[1] = Int64GetDatum(s->rank[i]);
		values[2] = IntervalPGetDatum(pf_usec_interval(s->makespan));
		values[3] = Int32GetDatum(s->hold[i]);
		nulls[3] = s->hold[i] < 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * parflow._run_plan(run bigint) returns interval: the planned makespan of a
 * run's workflow version under its flags and mode, its map stages that
 * expanded counted as their real widths (the others as planned).
 */
Datum
parflow_run_plan(PG_FUNCTION_ARGS)
{
	int64		run = PG_GETARG_INT64(0);
	int64		version;
	ArrayType  *flags;
	bool		parallel;
	PfGraph    *g;
	PfSchedule *s;
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(run)};
	bool		isnull;
	MemoryContext outer = CurrentMemoryContext;
	MemoryContext old;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "parflow: SPI_connect failed");
	if (SPI_execute_with_args("SELECT version_id, flags, parallel FROM parflow.run WHERE id = $1",
							  1, argtypes, values, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "parflow: run " INT64_FORMAT " not found", run);
	version = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	old = MemoryContextSwitchTo(outer);
	flags = DatumGetArrayTypePCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	MemoryContextSwitchTo(old);
	parallel = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	SPI_finish();

	load_run = run;
	PG_TRY();
	{
		g = pf_graph_load(version, flags);
	}
	PG_FINALLY();
	{
		load_run = 0;
	}
	PG_END_TRY();
	pf_graph_check(g, NULL);
	s = pf_schedule(g, pf_effective_cap(g, parallel ? 0 : 1), PF_POLICY_BEST);
	PG_RETURN_INTERVAL_P(pf_usec_interval(s->makespan));
}
