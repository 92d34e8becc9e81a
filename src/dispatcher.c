/*
 * dispatcher.c - a database's dispatcher background worker.  This file owns
 * the worker's life: its start by the launcher (launcher.c) for one database
 * and one slot of shared memory, start-up (one copy per database, its latch
 * published in the database's slot), and the loop that sleeps on its latch
 * and, woken, sends the notifications handed to it and runs a dispatch pass
 * when one is wanted, each in one short transaction.  The pass itself (end
 * attempts past their timeout, expire leases, pick ready tasks under every
 * cap, mark them dispatched, NOTIFY their agents) is parflow._dispatch();
 * NOTIFYs are delivered when the pass commits.  A pass that fails is rolled
 * back whole and logged with its cause, and the next pass retries: no task
 * is marked dispatched without its notification.  Before each pass the
 * worker sends, in a transaction of their own, the notifications that
 * committing completions handed over to it (a completion that passed its
 * slot straight to the next task, see shmem.c), each once its completion
 * has committed: that is the shortest way from a completion to its
 * successor's agent.  When notes were lost (a full ring, a prepared
 * transaction, a failed send, a restart) it resends the notification of
 * every dispatched task.  A pass runs when a commit asked for one
 * (parflow._wake()), at the start time of a delayed run, and at least every
 * parflow.naptime.  Its commits never wait for a synchronous standby.  When
 * the extension is not (or no longer) in its database, or a utility command
 * holds the database, the worker says so in its slot and exits; the
 * launcher decides what comes next.
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "commands/async.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/s_lock.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "core.h"
#include "dispatcher.h"
#include "guc.h"
#include "launcher.h"
#include "shmem.h"

/*
 * Start the dispatcher of database dboid in shared memory slot slot_no, for
 * the launcher (which the postmaster tells when it stops: the worker is
 * never restarted by the postmaster, the launcher decides).  Returns false
 * when no background worker slot is free.
 */
bool
pf_dispatcher_start(int slot_no, Oid dboid, const char *dbname,
					BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "parflow");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "parflow_dispatcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "parflow dispatcher for database %s", dbname);
	snprintf(worker.bgw_type, BGW_MAXLEN, "parflow dispatcher");
	worker.bgw_main_arg = Int32GetDatum(slot_no);
	memcpy(worker.bgw_extra, &dboid, sizeof(Oid));
	worker.bgw_notify_pid = MyProcPid;
	return RegisterDynamicBackgroundWorker(&worker, handle);
}

static PfDbSlot *my_slot = NULL;

static void
dispatcher_detach(int code, Datum arg)
{
	if (my_slot != NULL && my_slot->dispatcher_pid == MyProcPid)
	{
		my_slot->dispatcher_latch = NULL;
		my_slot->dispatcher_pid = 0;
	}
}

/* Leave, saying why in the slot, for the launcher. */
static void
dispatcher_exit(PfDispState why)
{
	my_slot->state = why;
	proc_exit(0);
}

/* What became of a transaction that handed notes over before its commit. */
typedef enum XactFate
{
	XACT_COMMITTED,
	XACT_ABORTED,
	XACT_STILL_RUNNING
} XactFate;

/*
 * Its commit is usually done within microseconds of handing the notes over,
 * so look a few times more (spin) before calling it still running.  A
 * transaction found still running sets the latch again when it has
 * committed or aborted, and its notes are looked at then; a commit that
 * waits long (for a synchronous standby, a slow disk) holds nothing else up.
 */
static XactFate
xact_fate(TransactionId xid, bool spin)
{
	int			spins = 0;

	while (TransactionIdIsInProgress(xid))
	{
		int			i;

		if (!spin || ++spins > 10)
			return XACT_STILL_RUNNING;
		for (i = 0; i < 50; i++)
			pg_spin_delay();
	}
	return TransactionIdDidCommit(xid) ? XACT_COMMITTED : XACT_ABORTED;
}

/* Set when notes may have been lost: resend every dispatched task's. */
static bool resend_all = true;

/* Notes whose transactions were still committing come first, then new ones. */
static PfNote *note_buf = NULL;
static int	n_held = 0;

/*
 * Send the notifications that committing transactions handed over, in one
 * transaction, once their transactions have committed (those that aborted
 * are dropped, those still committing are kept for the next call); with
 * resend_all, also the notification of every dispatched task
 * (parflow._renotify(), from extension version 0.3.0 on).  Returns the
 * number of notes kept.
 */
static int
send_notes(void)
{
	bool		lost;
	int			n,
				i,
				kept = 0,
				sent = 0,
				was_held = n_held;
	bool		resend;
	XactFate   *fate;

	if (note_buf == NULL)
		note_buf = MemoryContextAlloc(TopMemoryContext, sizeof(PfNote) * PF_NOTE_RING);
	n = n_held + pf_notes_take(note_buf + n_held, PF_NOTE_RING - n_held, &lost);
	n_held = 0;					/* until this call has done its work */
	resend = resend_all || lost;
	if (n == 0 && !resend)
		return 0;

	fate = palloc(sizeof(XactFate) * Max(n, 1));
	for (i = 0; i < n; i++)
		fate[i] = TransactionIdIsValid(note_buf[i].xid) ?
			xact_fate(note_buf[i].xid, i >= was_held) : XACT_COMMITTED;
	for (i = 0; i < n; i++)
		sent += fate[i] == XACT_COMMITTED;

	if (sent > 0 || resend)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		pgstat_report_activity(STATE_RUNNING, "parflow dispatch notifications");
		/* if this transaction fails, the notes are lost */
		resend_all = true;
		for (i = 0; i < n; i++)
			if (fate[i] == XACT_COMMITTED)
				Async_Notify(note_buf[i].channel, note_buf[i].payload);
		if (resend && OidIsValid(get_extension_oid("parflow", true)) &&
			OidIsValid(LookupFuncName(list_make2(makeString("parflow"), makeString("_renotify")),
									  0, NULL, true)))
		{
			PushActiveSnapshot(GetTransactionSnapshot());
			if (SPI_connect() != SPI_OK_CONNECT)
				elog(ERROR, "parflow: SPI_connect failed");
			if (SPI_execute("SELECT parflow._renotify()", false, 1) != SPI_OK_SELECT)
				elog(ERROR, "parflow: resending notifications failed");
			SPI_finish();
			PopActiveSnapshot();
		}
		CommitTransactionCommand();
		resend_all = false;
		pgstat_report_activity(STATE_IDLE, NULL);
		pg_atomic_fetch_add_u64(&my_slot->notes_sent, sent);
	}

	for (i = 0; i < n; i++)
	{
		if (fate[i] != XACT_STILL_RUNNING)
			continue;
		if (kept != i)
			memcpy(&note_buf[kept], &note_buf[i], sizeof(PfNote));
		kept++;
	}
	n_held = kept;
	return kept;
}

/*
 * One pass in one transaction.  Returns the number of tasks dispatched, or
 * -1 when the extension is not installed in this database.
 */
static int
dispatch_pass(void)
{
	int			n = -1;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "parflow dispatch pass");

	if (OidIsValid(get_extension_oid("parflow", true)))
	{
		bool		isnull;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "parflow: SPI_connect failed");
		if (SPI_execute("SELECT parflow._dispatch()", false, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "parflow: dispatch pass returned no result");
		n = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		SPI_finish();
	}

	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	pg_atomic_fetch_add_u64(&my_slot->passes, 1);
	return n;
}

/*
 * Run one step of the loop; when it fails, roll its transaction back, log
 * what it means (what_then), and return 0 (the next wake-up tries again).
 */
static int
guarded(int (*step) (void), MemoryContext ctx, const char *failed, const char *what_then)
{
	int			n = 0;

	PG_TRY();
	{
		n = step();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(ctx);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		pgstat_report_activity(STATE_IDLE, NULL);
		ereport(LOG, (errmsg("%s", failed), errdetail("%s", what_then)));
		n = 0;
	}
	PG_END_TRY();
	return n;
}

static char db_name[NAMEDATALEN] = "?";	/* for log lines */

/*
 * Whether the extension exists in this database, in a transaction of its
 * own; also notes the database's name.
 */
static bool
extension_here(void)
{
	bool		here;
	char	   *name;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	here = OidIsValid(get_extension_oid("parflow", true));
	name = get_database_name(MyDatabaseId);
	if (name != NULL)
		strlcpy(db_name, name, NAMEDATALEN);
	CommitTransactionCommand();
	return here;
}

void
parflow_dispatcher_main(Datum main_arg)
{
	MemoryContext pass_ctx;
	TimestampTz last_pass;
	bool		pass_due = true;	/* one pass at start */
	int			n = 0;			/* the last pass's result */
	int			nap_ms = pf_naptime_ms; /* the longest time between passes */
	int			slot_no = DatumGetInt32(main_arg);
	Oid			dboid;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	if (pf_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("parflow dispatcher started without shared memory"),
				 errhint("Add parflow to shared_preload_libraries in postgresql.conf and restart the server.")));
	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	if (slot_no < 0 || slot_no >= pf_shared->n_slots)
		elog(ERROR, "parflow dispatcher started for slot %d of %d", slot_no, pf_shared->n_slots);

	/* One dispatcher per database: the slot the launcher gave us. */
	LWLockAcquire(pf_shared->lock, LW_EXCLUSIVE);
	my_slot = &pf_shared->slots[slot_no];
	if (my_slot->dboid != dboid ||
		(my_slot->dispatcher_pid != 0 && my_slot->dispatcher_pid != MyProcPid &&
		 kill(my_slot->dispatcher_pid, 0) == 0))
	{
		LWLockRelease(pf_shared->lock);
		ereport(LOG,
				(errmsg("parflow dispatcher for database OID %u is not needed; it exits", dboid)));
		my_slot = NULL;
		proc_exit(0);
	}
	my_slot->dispatcher_pid = MyProcPid;
	my_slot->state = PF_DISP_STARTING;
	LWLockRelease(pf_shared->lock);
	before_shmem_exit(dispatcher_detach, (Datum) 0);

	/*
	 * By OID, so that a rename does not matter; a database dropped meanwhile
	 * ends this process here (FATAL), and the launcher forgets it.
	 */
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname("parflow dispatcher");

	/* DROP or RENAME DATABASE waits for us to go (see launcher.c) */
	if (pf_db_held(dboid))
		dispatcher_exit(PF_DISP_HELD);
	if (!extension_here())
		dispatcher_exit(PF_DISP_NO_EXTENSION);

	my_slot->dispatcher_latch = MyLatch;
	my_slot->state = PF_DISP_SERVING;

	/*
	 * Never wait for a synchronous standby: what the dispatcher writes is
	 * recomputed by a later pass if lost, and an agent's claim, which waits
	 * for the standby, brings it there first.
	 */
	SetConfigOption("synchronous_commit", "local", PGC_SUSET, PGC_S_OVERRIDE);
	ereport(LOG, (errmsg("parflow dispatcher started for database \"%s\"", db_name)));

	pass_ctx = AllocSetContextCreate(TopMemoryContext, "parflow dispatch pass",
									 ALLOCSET_DEFAULT_SIZES);
	last_pass = GetCurrentTimestamp();

	for (;;)
	{
		MemoryContext old;
		TimestampTz now;
		long		wait_ms;
		bool		wanted;
		int			held;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			pass_due = true;
		}

		old = MemoryContextSwitchTo(pass_ctx);
		held = guarded(send_notes, pass_ctx,
					   "parflow dispatcher could not send queued notifications",
					   "Every dispatched task's notification is sent again at the next wake-up.");

		/*
		 * A pass when a commit asked for one (parflow._wake()), and at least
		 * every parflow.naptime: a wake-up that only brought notes to send
		 * (a completion that handed its slot over) needs none.
		 */
		wanted = pg_atomic_exchange_u32(&my_slot->pass_wanted, 0) != 0;
		now = GetCurrentTimestamp();
		if (wanted || pass_due || TimestampDifferenceExceeds(last_pass, now, nap_ms))
		{
			n = guarded(dispatch_pass, pass_ctx,
						"parflow dispatch pass rolled back: nothing was dispatched",
						"The pass is retried within parflow.naptime.");
			if (n < 0)
			{
				ereport(LOG,
						(errmsg("parflow dispatcher for database \"%s\" stops: the extension is gone",
								db_name)));
				dispatcher_exit(PF_DISP_NO_EXTENSION);
			}
			nap_ms = pf_naptime_ms;
			last_pass = GetCurrentTimestamp();
			pass_due = false;
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(pass_ctx);

		wait_ms = nap_ms - TimestampDifferenceMilliseconds(last_pass, GetCurrentTimestamp());
		/* a delayed run starting sooner than that: a pass at its time */
		if (pf_pass_next_due() != 0)
		{
			long		due_ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), pf_pass_next_due());

			if (due_ms < wait_ms)
			{
				wait_ms = due_ms;
				pass_due = true;
			}
		}
		if (held > 0)
			wait_ms = Min(wait_ms, 10); /* a backstop: their commits wake us */
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(wait_ms, 1), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
