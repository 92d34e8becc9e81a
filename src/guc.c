/*
 * guc.c - parflow's configuration parameters.  This file owns every
 * parflow.* GUC: their variables, defaults, ranges and contexts.  Settings
 * that only the postmaster can change (which databases are served, how many
 * at most) are defined only while the library is preloaded; the others are defined
 * whenever the library is loaded, so that the SQL functions see them too.
 */
#include "postgres.h"

#include <limits.h>

#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "guc.h"

char	   *pf_database = NULL;
int			pf_max_databases = 16;
int			pf_max_parallel_stages = 4;
bool		pf_parallel_default = false;
bool		pf_fair_share = true;
int			pf_naptime_ms = 1000;
int			pf_max_output_size = 4 * 1024 * 1024;
int			pf_claim_timeout_ms = 30000;
int			pf_interrupt_grace_ms = 30000;
int			pf_retention_min = 30 * 24 * 60;
int			pf_learn_min_runs = 3;
int			pf_learn_window = 20;
int			pf_plan_effort = 50;
bool		pf_plan_holds = true;
int			pf_max_map_width = 10000;

/* Define the parflow.* parameters; called once from _PG_init. */
void
pf_guc_init(void)
{
	if (process_shared_preload_libraries_in_progress)
	{
		DefineCustomStringVariable("parflow.database",
								   "Database whose runs the parflow dispatchers serve.",
								   "Empty: every database in which the extension exists, each with a dispatcher of its own.",
								   &pf_database,
								   "",
								   PGC_POSTMASTER,
								   GUC_SUPERUSER_ONLY,
								   NULL, NULL, NULL);

		/*
		 * Bounded because each served database has a slot in shared memory
		 * (its notification ring, about 280 kB) sized at server start.
		 */
		DefineCustomIntVariable("parflow.max_databases",
								"Maximum number of databases served by a dispatcher at once.",
								"Each dispatcher also takes one of max_worker_processes.",
								&pf_max_databases,
								16, 1, 1024,
								PGC_POSTMASTER,
								0,
								NULL, NULL, NULL);
	}

	DefineCustomIntVariable("parflow.max_parallel_stages",
							"Maximum number of tasks dispatched or running at once in the database.",
							"Plans and the dispatcher both honour it; a workflow or run may set a lower max_parallel.",
							&pf_max_parallel_stages,
							4, 1, 10000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("parflow.fair_share",
							 "Whether runs of equal priority share the capacity when a cap binds.",
							 "On, the run with the fewest tasks at work goes first (by rank within a run); off keeps strict priority-then-rank order.",
							 &pf_fair_share,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("parflow.parallel_default",
							 "Whether runs are parallel when parflow_start() is not told.",
							 "Off runs stages one at a time in plan order, the baseline before rollout.",
							 &pf_parallel_default,
							 false,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("parflow.naptime",
							"Longest time the dispatcher sleeps between passes when nothing wakes it.",
							"Commits that change task states wake it at once; this is only a safety net.",
							&pf_naptime_ms,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("parflow.max_output_size",
							"Largest output a task may report, in bytes.",
							"parflow_complete() refuses bigger outputs; store big artifacts elsewhere.",
							&pf_max_output_size,
							4 * 1024 * 1024, 1024, MaxAllocSize / 2,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("parflow.claim_timeout",
							"How long a dispatched task waits for an agent to claim it.",
							"An unclaimed task gives its slot back and is not dispatched again for as long.",
							&pf_claim_timeout_ms,
							30000, 10, 24 * 3600 * 1000,
							PGC_SUSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("parflow.interrupt_grace",
							"How long an interrupted task's agent has to release it.",
							"After it, the task is taken back (not counted as a failed attempt) and its token no longer holds it.",
							&pf_interrupt_grace_ms,
							30000, 0, 24 * 3600 * 1000,
							PGC_SUSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("parflow.retention",
							"How long the events of finished runs are kept.",
							"parflow_housekeeping() deletes older ones; runs, tasks and the duration statistics stay.",
							&pf_retention_min,
							30 * 24 * 60, 1, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_MIN,
							NULL, NULL, NULL);

	DefineCustomIntVariable("parflow.learn_min_runs",
							"Finished runs of a stage after which its observed median replaces its declared estimate.",
							"0 turns learned estimates off: plans use the declared estimates only.",
							&pf_learn_min_runs,
							3, 0, 1000000,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("parflow.learn_window",
							"How many of a workflow's last runs learned estimates are taken from.",
							"A start reads the tasks of these runs only, however long the workflow's history.",
							&pf_learn_window,
							20, 1, 1000000,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("parflow.plan_effort",
							"Work the planner may spend searching for a shorter plan, in milliseconds.",
							"Counted in units of work (about a millisecond each on the machine the planner was tuned on), so that a plan is the same every time; 0 plans in critical-path order only.",
							&pf_plan_effort,
							50, 0, 60000,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("parflow.plan_holds",
							 "Whether plans may hold a stage back while a slot is free.",
							 "A plan that holds keeps a slot idle where that makes the run shorter: the held stage waits for the finish of another stage.  Off, every plan is a list schedule.",
							 &pf_plan_holds,
							 true,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("parflow.max_map_width",
							"Most instances a map stage may run.",
							"A map stage's own \"max\" may not exceed it; an array longer than either fails the stage.",
							&pf_max_map_width,
							10000, 1, 1000000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("parflow");
}
