/*
 * dispatcher.c - the dispatcher background worker.  This file owns the
 * worker's life: registration at preload time, start-up (one copy only, its
 * latch published in shared memory), and the loop that sleeps on its latch
 * and, woken, sends the notifications handed to it and runs a dispatch pass
 * when one is wanted, each in one short transaction. The pass itself (end
 * attempts past their timeout, expire leases, pick ready tasks under every
 * cap, mark them dispatched, NOTIFY their agents) is parflow._dispatch(),
 * set-based SQL; NOTIFYs are delivered when the pass commits.  A pass that
 * fails is rolled back whole and logged with its cause, and the next pass
 * retries: no task is marked dispatched without its notification.  Before
 * each pass the worker sends, in a transaction of their own, the
 * notifications that committing completions handed over to it (a completion
 * that passed its slot straight to the next task, see shmem.c), each once
 * its completion has committed: that is the shortest way from a completion
 * to its successor's agent.  When notes were lost (a full ring, a prepared
 * transaction, a failed send, a restart) it resends the notification of
 * every dispatched task.  A pass runs when a commit asked for one
 * (parflow._wake()), at the start time of a delayed run, and at least every
 * parflow.naptime. Its commits never
 * wait for a synchronous standby.  The worker tolerates a database where the
 * extension does not exist yet, and the postmaster restarts it after a
 * crash.
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "commands/async.h"
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
#include "shmem.h"

/* Register the worker; called from _PG_init while preloading. */
void
pf_dispatcher_register(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "parflow");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "parflow_dispatcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "parflow dispatcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "parflow dispatcher");
	worker.bgw_notify_pid = 0;
	RegisterBackgroundWorker(&worker);
}

static void
dispatcher_detach(int code, Datum arg)
{
	if (pf_shared != NULL && pf_shared->dispatcher_pid == MyProcPid)
	{
		pf_shared->dispatcher_latch = NULL;
		pf_shared->dispatcher_db = InvalidOid;
		pf_shared->dispatcher_pid = 0;
	}
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
		pg_atomic_fetch_add_u64(&pf_shared->notes_sent, sent);
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
	pg_atomic_fetch_add_u64(&pf_shared->passes, 1);
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

void
parflow_dispatcher_main(Datum main_arg)
{
	MemoryContext pass_ctx;
	TimestampTz last_pass;
	bool		pass_due = true;	/* one pass at start */
	int			n = 0;			/* the last pass's result */
	int			nap_ms = pf_naptime_ms; /* the longest time between passes */

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	if (pf_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("parflow dispatcher started without shared memory"),
				 errhint("Add parflow to shared_preload_libraries in postgresql.conf and restart the server.")));

	/* One dispatcher only. */
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	if (pf_shared->dispatcher_pid != 0 && pf_shared->dispatcher_pid != MyProcPid &&
		kill(pf_shared->dispatcher_pid, 0) == 0)
	{
		pid_t		other = pf_shared->dispatcher_pid;

		LWLockRelease(AddinShmemInitLock);
		ereport(LOG,
				(errmsg("parflow dispatcher already running with PID %d; this one exits", (int) other)));
		proc_exit(0);
	}
	pf_shared->dispatcher_pid = MyProcPid;
	pf_shared->dispatcher_latch = MyLatch;
	LWLockRelease(AddinShmemInitLock);
	before_shmem_exit(dispatcher_detach, (Datum) 0);

	BackgroundWorkerInitializeConnection(pf_database, NULL, 0);
	pf_shared->dispatcher_db = MyDatabaseId;
	pgstat_report_appname("parflow dispatcher");

	/*
	 * Never wait for a synchronous standby: what the dispatcher writes is
	 * recomputed by a later pass if lost, and an agent's claim, which waits
	 * for the standby, brings it there first.
	 */
	SetConfigOption("synchronous_commit", "local", PGC_SUSET, PGC_S_OVERRIDE);
	ereport(LOG, (errmsg("parflow dispatcher started for database \"%s\"", pf_database)));

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
		wanted = pg_atomic_exchange_u32(&pf_shared->pass_wanted, 0) != 0;
		now = GetCurrentTimestamp();
		if (wanted || pass_due || TimestampDifferenceExceeds(last_pass, now, nap_ms))
		{
			n = guarded(dispatch_pass, pass_ctx,
						"parflow dispatch pass rolled back: nothing was dispatched",
						"The pass is retried within parflow.naptime.");
			/* without the extension, look again less often */
			nap_ms = n < 0 ? Max(pf_naptime_ms, 1000) : pf_naptime_ms;
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
