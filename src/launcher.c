/*
 * launcher.c - the launcher background worker and the utility hook that
 * keeps it informed.  The launcher, registered at preload and connected to
 * no database (it reads the shared catalog pg_database only), starts one
 * dispatcher per database in which the extension exists, up to
 * parflow.max_databases, each in a shared memory slot of its own; it cannot
 * see other databases' catalogs, so a database's dispatcher looks for the
 * extension itself and, when it is absent, says so in its slot and exits.
 * The launcher looks at such a database again when a backend tells it that
 * the extension may have appeared (CREATE EXTENSION parflow, CREATE
 * DATABASE, told at commit through the utility hook below) and otherwise
 * after a few naptimes, then every PF_ABSENT_NAPS.  A dispatcher that stops for any other
 * reason is restarted, at once the first time and then with a growing delay,
 * while the others go on.  The utility hook also makes DROP DATABASE, ALTER
 * DATABASE RENAME / SET TABLESPACE and CREATE DATABASE ... TEMPLATE work at
 * once: before the command runs, it holds the database (the launcher starts
 * no dispatcher there) and stops its dispatcher, and releases the hold when
 * the command is over.  The launcher starts only once recovery has ended:
 * on a hot standby no dispatcher runs, and the postmaster starts the
 * launcher on promotion.
 */
#include "postgres.h"

#include <signal.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/utility.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "dispatcher.h"
#include "guc.h"
#include "launcher.h"
#include "shmem.h"

/*
 * A database without the extension is looked at again after this many
 * naptimes; the first few times after a few only (a backend's word may have
 * crossed the look while the launcher was starting).
 */
#define PF_ABSENT_NAPS 60
#define PF_ABSENT_NAPS_FIRST 5
#define PF_ABSENT_FIRST_LOOKS 3

/* The longest delay before restarting a dispatcher that keeps stopping. */
#define PF_RESTART_MAX_MS 60000

/* A dispatcher that served this long before it stopped is restarted at once. */
#define PF_RESTART_RESET_MS 60000

/*
 * Dispatchers starting at once (most of them, at server start, only look
 * for the extension and exit): more wait for the next round, so that a
 * server with many databases does not run out of background workers.
 */
#define PF_MAX_STARTING 4

/* How long a utility command waits for a dispatcher to go. */
#define PF_STOP_WAIT_MS 10000

static ProcessUtility_hook_type prev_utility_hook = NULL;

/* --- holds: databases in which no dispatcher may run for a while --------- */

/* Whether a utility command holds the database free of dispatchers. */
bool
pf_db_held(Oid dboid)
{
	bool		held = false;
	int			i;

	if (pf_shared == NULL)
		return false;
	LWLockAcquire(pf_shared->lock, LW_SHARED);
	for (i = 0; i < PF_HOLD_MAX; i++)
		held |= pf_shared->hold_db[i] == dboid;
	LWLockRelease(pf_shared->lock);
	return held;
}

/* Take a hold on a database; false when every entry is taken. */
static bool
hold_take(Oid dboid)
{
	bool		taken = false;
	int			i;

	LWLockAcquire(pf_shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < PF_HOLD_MAX && !taken; i++)
	{
		if (OidIsValid(pf_shared->hold_db[i]))
			continue;
		pf_shared->hold_db[i] = dboid;
		pf_shared->hold_pid[i] = MyProcPid;
		taken = true;
	}
	LWLockRelease(pf_shared->lock);
	return taken;
}

/* Release this backend's hold on a database and have the launcher look. */
static void
hold_release(Oid dboid)
{
	Latch	   *latch;
	int			i;

	LWLockAcquire(pf_shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < PF_HOLD_MAX; i++)
	{
		if (pf_shared->hold_db[i] == dboid && pf_shared->hold_pid[i] == MyProcPid)
		{
			pf_shared->hold_db[i] = InvalidOid;
			pf_shared->hold_pid[i] = 0;
			break;
		}
	}
	latch = pf_shared->launcher_latch;
	LWLockRelease(pf_shared->lock);
	if (latch != NULL)
		SetLatch(latch);
}

/* Stop a process and wait until it has left the process array. */
static void
stop_and_wait(pid_t pid)
{
	TimestampTz deadline;

	if (pid == 0 || BackendPidGetProc(pid) == NULL)
		return;
	if (kill(pid, SIGTERM) != 0)
		return;
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), PF_STOP_WAIT_MS);
	while (BackendPidGetProc(pid) != NULL)
	{
		if (GetCurrentTimestamp() >= deadline)
		{
			ereport(WARNING,
					(errmsg("parflow dispatcher with PID %d did not stop within %d ms",
							(int) pid, PF_STOP_WAIT_MS)));
			break;
		}
		CHECK_FOR_INTERRUPTS();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* The dispatcher serving a database, 0 when none runs. */
static pid_t
dispatcher_of(Oid dboid)
{
	PfDbSlot   *slot;
	pid_t		pid = 0;

	LWLockAcquire(pf_shared->lock, LW_SHARED);
	slot = pf_slot_of(dboid);
	if (slot != NULL)
		pid = slot->dispatcher_pid;
	LWLockRelease(pf_shared->lock);
	return pid;
}

/* --- requests to look for the extension, sent at commit ------------------- */

#define PF_PENDING_MAX 4
static Oid	pending_probe[PF_PENDING_MAX];
static int	n_pending = 0;
static bool pending_all = false;
static bool probe_callback_registered = false;

static void
probe_xact_callback(XactEvent event, void *arg)
{
	Latch	   *latch;
	int			i;

	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (pf_shared == NULL || (n_pending == 0 && !pending_all))
				break;
			LWLockAcquire(pf_shared->lock, LW_EXCLUSIVE);
			pf_shared->probe_all |= pending_all;
			for (i = 0; i < n_pending; i++)
			{
				if (pf_shared->n_probe < PF_PROBE_MAX)
					pf_shared->probe_db[pf_shared->n_probe++] = pending_probe[i];
				else
					pf_shared->probe_all = true;
			}
			latch = pf_shared->launcher_latch;
			LWLockRelease(pf_shared->lock);
			if (latch != NULL)
				SetLatch(latch);
			break;
		default:
			break;
	}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		n_pending = 0;
		pending_all = false;
	}
}

/* Have the launcher look at a database (InvalidOid: every one) at commit. */
static void
probe_at_commit(Oid dboid)
{
	if (!probe_callback_registered)
	{
		RegisterXactCallback(probe_xact_callback, NULL);
		probe_callback_registered = true;
	}
	if (!OidIsValid(dboid) || n_pending >= PF_PENDING_MAX)
		pending_all = true;
	else
		pending_probe[n_pending++] = dboid;
}

/*
 * After CREATE EXTENSION parflow: warn when no dispatcher will serve this
 * database because every slot serves another one.
 */
static void
warn_if_not_served(void)
{
	int			used = 0;
	int			i;

	if (pf_database != NULL && pf_database[0] != '\0')
	{
		ereport(LOG,
				(errmsg("parflow extension created in database \"%s\"",
						get_database_name(MyDatabaseId)),
				 errdetail("Only database \"%s\" is served (parflow.database).", pf_database)));
		return;
	}
	LWLockAcquire(pf_shared->lock, LW_SHARED);
	/* slots that serve: one that only looks for the extension will be free */
	for (i = 0; i < pf_shared->n_slots; i++)
		used += OidIsValid(pf_shared->slots[i].dboid) &&
			pf_shared->slots[i].dboid != MyDatabaseId &&
			pf_shared->slots[i].state == PF_DISP_SERVING;
	LWLockRelease(pf_shared->lock);
	if (used >= pf_shared->n_slots)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("no parflow dispatcher will serve database \"%s\"",
						get_database_name(MyDatabaseId)),
				 errdetail("parflow.max_databases is %d, and as many other databases are served.",
						   pf_shared->n_slots),
				 errhint("Raise parflow.max_databases (and max_worker_processes) and restart the server, or drop the extension where it is not used.")));
}

/* --- the utility hook ------------------------------------------------------ */

/* The value of option name in a list of DefElems, NULL when absent. */
static char *
option_value(List *options, const char *name)
{
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *def = (DefElem *) lfirst(lc);

		if (strcmp(def->defname, name) == 0 && def->arg != NULL)
			return defGetString(def);
	}
	return NULL;
}

/*
 * The database a utility command needs no other sessions in (DROP
 * DATABASE, ALTER DATABASE RENAME and SET TABLESPACE, the template of
 * CREATE DATABASE): they fail with "database is being accessed by other
 * users" while a dispatcher is connected to it.
 */
static Oid
database_to_hold(Node *stmt)
{
	const char *name = NULL;

	switch (nodeTag(stmt))
	{
		case T_DropdbStmt:
			name = ((DropdbStmt *) stmt)->dbname;
			break;
		case T_RenameStmt:
			if (((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
				name = ((RenameStmt *) stmt)->subname;
			break;
		case T_AlterDatabaseStmt:
			if (option_value(((AlterDatabaseStmt *) stmt)->options, "tablespace") != NULL)
				name = ((AlterDatabaseStmt *) stmt)->dbname;
			break;
		case T_CreatedbStmt:
			name = option_value(((CreatedbStmt *) stmt)->options, "template");
			break;
		default:
			break;
	}
	return name == NULL ? InvalidOid : get_database_oid(name, true);
}

static void
pf_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
		   ProcessUtilityContext context, ParamListInfo params,
		   QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;
	Oid			hold = InvalidOid;
	bool		created_ext;
	bool		dropped_ext = false;

	created_ext = IsA(stmt, CreateExtensionStmt) &&
		strcmp(((CreateExtensionStmt *) stmt)->extname, "parflow") == 0;
	if (IsA(stmt, DropStmt) && ((DropStmt *) stmt)->removeType == OBJECT_EXTENSION)
	{
		ListCell   *lc;

		foreach(lc, ((DropStmt *) stmt)->objects)
			if (IsA(lfirst(lc), String) && strcmp(strVal(lfirst(lc)), "parflow") == 0)
				dropped_ext = true;
	}
	if (pf_shared != NULL)
	{
		hold = database_to_hold(stmt);
		/* with every entry taken, the command still waits 5 s for it to go */
		if (OidIsValid(hold) && !hold_take(hold))
			hold = InvalidOid;
	}

	PG_TRY();
	{
		if (OidIsValid(hold))
			stop_and_wait(dispatcher_of(hold));
		if (prev_utility_hook)
			prev_utility_hook(pstmt, queryString, readOnlyTree, context,
							  params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
									params, queryEnv, dest, qc);
	}
	PG_FINALLY();
	{
		if (OidIsValid(hold))
			hold_release(hold);
	}
	PG_END_TRY();

	if (pf_shared == NULL)
		return;
	if (created_ext)
	{
		probe_at_commit(MyDatabaseId);
		warn_if_not_served();
	}
	else if (IsA(stmt, CreatedbStmt))
		probe_at_commit(InvalidOid);	/* its template may have had the extension */
	else if (dropped_ext)
		pf_wake_at_commit();	/* its pass finds the extension gone and stops */
}

/* --- the launcher ---------------------------------------------------------- */

/* One database the launcher knows about. */
typedef struct DbEntry
{
	Oid			dboid;			/* hash key */
	char		name[NAMEDATALEN];
	bool		wanted;			/* in the latest scan, to be served */
	bool		absent;			/* the extension was not there at the last look */
	bool		skip_logged;	/* "cannot connect" was logged */
	bool		warned;			/* a WARNING about not starting it was logged */
	bool		probe_again;	/* told of the extension while a look was under way */
	int			looks;			/* looks that found no extension */
	BackgroundWorkerHandle *handle; /* its dispatcher, NULL when none */
	TimestampTz started;
	TimestampTz next_try;		/* no start before this */
	int			stops;			/* unexpected stops in a row */
} DbEntry;

static void
launcher_detach(int code, Datum arg)
{
	if (pf_shared != NULL && pf_shared->launcher_pid == MyProcPid)
	{
		LWLockAcquire(pf_shared->lock, LW_EXCLUSIVE);
		pf_shared->launcher_latch = NULL;
		pf_shared->launcher_pid = 0;
		LWLockRelease(pf_shared->lock);
	}
}

/*
 * Dispatchers that a previous launcher started are not ours to watch (we
 * have no handles): stop them, the scan starts them again.
 */
static void
stop_orphans(void)
{
	int			i;

	for (i = 0; i < pf_shared->n_slots; i++)
	{
		pid_t		pid = pf_shared->slots[i].dispatcher_pid;

		if (pid != 0)
			stop_and_wait(pid);
	}
}

/* Forget holds whose backends died without releasing them. */
static void
clear_stale_holds(void)
{
	int			i;

	LWLockAcquire(pf_shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < PF_HOLD_MAX; i++)
	{
		if (OidIsValid(pf_shared->hold_db[i]) &&
			BackendPidGetProc(pf_shared->hold_pid[i]) == NULL)
		{
			pf_shared->hold_db[i] = InvalidOid;
			pf_shared->hold_pid[i] = 0;
		}
	}
	LWLockRelease(pf_shared->lock);
}

static bool named_missing_logged = false;

/* Mark the databases to serve (wanted) from pg_database. */
static void
scan_databases(HTAB *dbs)
{
	bool		named_found = false;
	HASH_SEQ_STATUS seq;
	DbEntry    *e;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	hash_seq_init(&seq, dbs);
	while ((e = hash_seq_search(&seq)) != NULL)
		e->wanted = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		bool		found;

		CHECK_FOR_INTERRUPTS();
		if (pf_database[0] != '\0' && strcmp(NameStr(db->datname), pf_database) != 0)
			continue;
		named_found = true;
		if (db->datistemplate || database_is_invalid_form(db))
			continue;
		e = hash_search(dbs, &db->oid, HASH_ENTER, &found);
		if (!found)
		{
			memset(((char *) e) + sizeof(Oid), 0, sizeof(DbEntry) - sizeof(Oid));
			e->next_try = 0;
		}
		strlcpy(e->name, NameStr(db->datname), NAMEDATALEN);
		if (!db->datallowconn)
		{
			if (!e->skip_logged)
				ereport(LOG,
						(errmsg("parflow launcher skips database \"%s\": it does not allow connections",
								e->name)));
			e->skip_logged = true;
			continue;
		}
		e->skip_logged = false;
		e->wanted = true;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);

	if (pf_database[0] != '\0' && !named_found && !named_missing_logged)
		ereport(LOG,
				(errmsg("parflow launcher serves no database: database \"%s\" (parflow.database) does not exist",
						pf_database)));
	named_missing_logged = pf_database[0] != '\0' && !named_found;
}

/*
 * The extension may have appeared in a database: look at once, or, when a
 * dispatcher is starting there (it may have looked before the commit), once
 * it has stopped for want of the extension.
 */
static void
probe_soon(DbEntry *e)
{
	if (e->handle != NULL)
		e->probe_again = true;
	else if (e->absent)
	{
		e->absent = false;
		e->next_try = 0;
	}
}

/* Databases in which the extension may have appeared: look at once. */
static void
take_probe_requests(HTAB *dbs)
{
	Oid			probe[PF_PROBE_MAX];
	int			n,
				i;
	bool		all;
	HASH_SEQ_STATUS seq;
	DbEntry    *e;

	LWLockAcquire(pf_shared->lock, LW_EXCLUSIVE);
	n = pf_shared->n_probe;
	memcpy(probe, pf_shared->probe_db, sizeof(Oid) * n);
	all = pf_shared->probe_all;
	pf_shared->n_probe = 0;
	pf_shared->probe_all = false;
	LWLockRelease(pf_shared->lock);

	for (i = 0; i < n; i++)
	{
		e = hash_search(dbs, &probe[i], HASH_FIND, NULL);
		if (e != NULL)
			probe_soon(e);
	}
	if (!all)
		return;
	hash_seq_init(&seq, dbs);
	while ((e = hash_seq_search(&seq)) != NULL)
		probe_soon(e);
}

/* Free the slot of a database no dispatcher runs in any more. */
static void
free_slot(Oid dboid)
{
	PfDbSlot   *slot;

	LWLockAcquire(pf_shared->lock, LW_EXCLUSIVE);
	slot = pf_slot_of(dboid);
	if (slot != NULL && slot->dispatcher_pid == 0)
		pf_slot_reset(slot, InvalidOid);
	LWLockRelease(pf_shared->lock);
}

/* Its dispatcher has stopped: why, and when to start one again. */
static void
dispatcher_stopped(DbEntry *e, TimestampTz now)
{
	PfDbSlot   *slot = pf_slot_of(e->dboid);
	PfDispState state = slot != NULL ? slot->state : PF_DISP_STARTING;
	long		delay;

	pfree(e->handle);
	e->handle = NULL;
	if (state == PF_DISP_NO_EXTENSION)
	{
		e->absent = !e->probe_again;
		e->stops = 0;
		e->next_try = e->probe_again ? 0 :
			TimestampTzPlusMilliseconds(now, (int64) pf_naptime_ms *
										(e->looks < PF_ABSENT_FIRST_LOOKS ?
										 PF_ABSENT_NAPS_FIRST : PF_ABSENT_NAPS));
		e->looks++;
		e->probe_again = false;
		free_slot(e->dboid);
		return;
	}
	if (state == PF_DISP_HELD || pf_db_held(e->dboid) || !e->wanted)
	{
		e->next_try = 0;		/* the hold, or the scan, decides */
		return;
	}

	/* crashed or terminated: restart, at once unless it keeps stopping */
	if (TimestampDifferenceExceeds(e->started, now, PF_RESTART_RESET_MS))
		e->stops = 0;
	delay = e->stops == 0 ? 0 : Min((long) PF_RESTART_MAX_MS, 1000L << Min(e->stops - 1, 6));
	e->stops++;
	e->next_try = TimestampTzPlusMilliseconds(now, delay);
	ereport(LOG,
			(errmsg("parflow dispatcher for database \"%s\" stopped; it is started again in %ld ms",
					e->name, delay)));
}

/* Start the dispatcher of a database: a slot, then a background worker. */
static void
start_dispatcher(DbEntry *e, TimestampTz now)
{
	PfDbSlot   *slot;
	MemoryContext old;
	bool		started;
	int			i;

	LWLockAcquire(pf_shared->lock, LW_EXCLUSIVE);
	slot = pf_slot_of(e->dboid);
	for (i = 0; slot == NULL && i < pf_shared->n_slots; i++)
	{
		if (!OidIsValid(pf_shared->slots[i].dboid) && pf_shared->slots[i].dispatcher_pid == 0)
		{
			slot = &pf_shared->slots[i];
			pf_slot_reset(slot, e->dboid);
		}
	}
	if (slot != NULL)
		slot->state = PF_DISP_STARTING;
	LWLockRelease(pf_shared->lock);

	if (slot == NULL)
	{
		if (!e->warned)
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("no parflow dispatcher slot is free for database \"%s\"", e->name),
					 errdetail("All %d slots (parflow.max_databases) serve other databases.",
							   pf_shared->n_slots),
					 errhint("Raise parflow.max_databases (and max_worker_processes) and restart the server.")));
		e->warned = true;
		e->next_try = TimestampTzPlusMilliseconds(now, pf_naptime_ms);
		return;
	}

	e->probe_again = false;		/* it sees every commit made until now */
	old = MemoryContextSwitchTo(TopMemoryContext);
	started = pf_dispatcher_start((int) (slot - pf_shared->slots), e->dboid, e->name, &e->handle);
	elog(DEBUG1, "parflow launcher %s the dispatcher of database \"%s\" (slot %d)",
		 started ? "registered" : "could not register", e->name, (int) (slot - pf_shared->slots));
	MemoryContextSwitchTo(old);
	if (!started)
	{
		/* the slot goes back: it serves nothing */
		e->handle = NULL;
		free_slot(e->dboid);
		if (!e->warned)
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("could not start the parflow dispatcher for database \"%s\"", e->name),
					 errdetail("All max_worker_processes (%d) background worker slots are in use.",
							   max_worker_processes),
					 errhint("Each database served takes one background worker, and the launcher one more: raise max_worker_processes and restart the server.")));
		e->warned = true;
		e->next_try = TimestampTzPlusMilliseconds(now, pf_naptime_ms);
		return;
	}
	if (e->warned)
		ereport(LOG, (errmsg("parflow dispatcher for database \"%s\" started at last", e->name)));
	e->warned = false;
	e->started = now;
}

/*
 * Bring the dispatchers in line with the databases to serve; returns how
 * long to sleep before the next look (at most parflow.naptime).
 */
static long
reconcile(HTAB *dbs)
{
	HASH_SEQ_STATUS seq;
	DbEntry    *e;
	TimestampTz now = GetCurrentTimestamp();
	long		wait_ms = pf_naptime_ms;
	int			starting = 0;
	int			i;

	/* dispatchers not serving yet */
	hash_seq_init(&seq, dbs);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		PfDbSlot   *slot = e->handle != NULL ? pf_slot_of(e->dboid) : NULL;

		starting += slot != NULL && slot->state == PF_DISP_STARTING;
	}

	hash_seq_init(&seq, dbs);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		pid_t		pid;

		if (e->handle != NULL)
		{
			if (GetBackgroundWorkerPid(e->handle, &pid) == BGWH_STOPPED)
				dispatcher_stopped(e, now);
			else
			{
				if (!e->wanted)
					TerminateBackgroundWorker(e->handle);
				continue;
			}
		}
		if (!e->wanted)
		{
			free_slot(e->dboid);
			if (!e->skip_logged)
				(void) hash_search(dbs, &e->dboid, HASH_REMOVE, NULL);
			continue;
		}
		if (e->next_try <= now && !pf_db_held(e->dboid) && starting < PF_MAX_STARTING)
		{
			start_dispatcher(e, now);
			starting += e->handle != NULL;
		}
		/* the stop of one that is starting wakes us */
		if (e->handle == NULL && e->next_try > now)
			wait_ms = Min(wait_ms, Max(1, TimestampDifferenceMilliseconds(now, e->next_try)));
	}

	/* slots of databases the launcher no longer knows */
	LWLockAcquire(pf_shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < pf_shared->n_slots; i++)
	{
		PfDbSlot   *slot = &pf_shared->slots[i];

		if (OidIsValid(slot->dboid) && slot->dispatcher_pid == 0 &&
			hash_search(dbs, &slot->dboid, HASH_FIND, NULL) == NULL)
			pf_slot_reset(slot, InvalidOid);
	}
	LWLockRelease(pf_shared->lock);
	return wait_ms;
}

void
parflow_launcher_main(Datum main_arg)
{
	HASHCTL		ctl;
	HTAB	   *dbs;
	MemoryContext loop_ctx;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	if (pf_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("parflow launcher started without shared memory"),
				 errhint("Add parflow to shared_preload_libraries in postgresql.conf and restart the server.")));

	/* One launcher only. */
	LWLockAcquire(pf_shared->lock, LW_EXCLUSIVE);
	if (pf_shared->launcher_pid != 0 && pf_shared->launcher_pid != MyProcPid &&
		kill(pf_shared->launcher_pid, 0) == 0)
	{
		pid_t		other = pf_shared->launcher_pid;

		LWLockRelease(pf_shared->lock);
		ereport(LOG,
				(errmsg("parflow launcher already running with PID %d; this one exits", (int) other)));
		proc_exit(0);
	}
	pf_shared->launcher_pid = MyProcPid;
	pf_shared->launcher_latch = MyLatch;
	LWLockRelease(pf_shared->lock);
	before_shmem_exit(launcher_detach, (Datum) 0);

	/* no database: pg_database, a shared catalog, is all it reads */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("parflow launcher");
	stop_orphans();

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(DbEntry);
	dbs = hash_create("parflow launcher databases", 16, &ctl, HASH_ELEM | HASH_BLOBS);
	loop_ctx = AllocSetContextCreate(TopMemoryContext, "parflow launcher loop",
									 ALLOCSET_DEFAULT_SIZES);
	if (pf_database[0] != '\0')
		ereport(LOG, (errmsg("parflow launcher started: it serves database \"%s\" only",
							 pf_database)));
	else
		ereport(LOG, (errmsg("parflow launcher started: it serves every database with the extension, %d at most",
							 pf_shared->n_slots)));

	for (;;)
	{
		MemoryContext old;
		long		wait_ms;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		old = MemoryContextSwitchTo(loop_ctx);
		clear_stale_holds();
		scan_databases(dbs);
		take_probe_requests(dbs);
		wait_ms = reconcile(dbs);
		MemoryContextSwitchTo(old);
		MemoryContextReset(loop_ctx);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 wait_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* Register the launcher and install the utility hook; only while preloading. */
void
pf_launcher_init(void)
{
	BackgroundWorker worker;

	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = pf_utility;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	/* not on a hot standby: the postmaster starts it on promotion */
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "parflow");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "parflow_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "parflow launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "parflow launcher");
	RegisterBackgroundWorker(&worker);
}
