/*
 * shmem.c - parflow's shared memory and the commit-time wake-up.  This file
 * owns the small shared struct that tells backends where the dispatcher's
 * latch is, and the transaction callback through which any transaction that
 * changed task states (parflow._wake()) sets that latch when it commits, so
 * that the dispatcher reacts within a millisecond instead of at its next
 * safety-net poll.  Without shared_preload_libraries there is no shared
 * state and no dispatcher, and waking is a no-op.
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "shmem.h"

PG_FUNCTION_INFO_V1(parflow_wake);

PfShared   *pf_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static bool xact_callback_registered = false;
static bool wake_pending = false;

static void
pf_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(PfShared)));
}

static void
pf_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	pf_shared = ShmemInitStruct("parflow", sizeof(PfShared), &found);
	if (!found)
	{
		pf_shared->dispatcher_pid = 0;
		pf_shared->dispatcher_latch = NULL;
		pg_atomic_init_u64(&pf_shared->passes, 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Install the shared memory hooks; only while preloading. */
void
pf_shmem_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = pf_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = pf_shmem_startup;
}

static void
pf_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_pending && pf_shared != NULL)
			{
				Latch	   *latch = pf_shared->dispatcher_latch;

				if (latch != NULL)
					SetLatch(latch);
			}
			wake_pending = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			wake_pending = false;
			break;
		default:
			break;
	}
}

/* Wake the dispatcher when the current transaction commits. */
void
pf_wake_at_commit(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(pf_xact_callback, NULL);
		xact_callback_registered = true;
	}
	wake_pending = true;
}

/* parflow._wake(): SQL face of pf_wake_at_commit. */
Datum
parflow_wake(PG_FUNCTION_ARGS)
{
	pf_wake_at_commit();
	PG_RETURN_VOID();
}
