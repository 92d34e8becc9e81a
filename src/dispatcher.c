/*
 * dispatcher.c - the dispatcher background worker.  This file owns the
 * worker's life: registration at preload time, start-up (one copy only, its
 * latch published in shared memory), and the loop that sleeps on its latch
 * and runs one dispatch pass per wake-up, each in one short transaction.
 * The pass itself (expire leases, pick ready tasks under every cap, mark
 * them dispatched, NOTIFY their agents) is parflow._dispatch(), set-based
 * SQL; NOTIFYs are delivered when the pass commits.  A pass that fails is
 * rolled back whole and logged with its cause, and the next pass retries:
 * no task is marked dispatched without its notification.  The worker
 * tolerates a database where the extension does not exist yet, and the
 * postmaster restarts it after a crash.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/wait_event.h"

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
		pf_shared->dispatcher_pid = 0;
	}
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

void
parflow_dispatcher_main(Datum main_arg)
{
	MemoryContext pass_ctx;

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
	pgstat_report_appname("parflow dispatcher");
	ereport(LOG, (errmsg("parflow dispatcher started for database \"%s\"", pf_database)));

	pass_ctx = AllocSetContextCreate(TopMemoryContext, "parflow dispatch pass",
									 ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		MemoryContext old;
		int			n = 0;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		old = MemoryContextSwitchTo(pass_ctx);
		PG_TRY();
		{
			n = dispatch_pass();
		}
		PG_CATCH();
		{
			/* Roll the whole pass back, say why, and try again shortly. */
			MemoryContextSwitchTo(pass_ctx);
			EmitErrorReport();
			FlushErrorState();
			AbortCurrentTransaction();
			pgstat_report_activity(STATE_IDLE, NULL);
			ereport(LOG,
					(errmsg("parflow dispatch pass rolled back: nothing was dispatched"),
					 errdetail("The pass is retried in %d ms.", pf_naptime_ms)));
			n = 0;
		}
		PG_END_TRY();
		MemoryContextSwitchTo(old);
		MemoryContextReset(pass_ctx);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 n < 0 ? Max(pf_naptime_ms, 1000) : pf_naptime_ms,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
