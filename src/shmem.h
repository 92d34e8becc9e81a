/*
 * shmem.h - the shared state between backends and the dispatcher, and the
 * commit-time wake-up.
 */
#ifndef PARFLOW_SHMEM_H
#define PARFLOW_SHMEM_H

#include "port/atomics.h"
#include "storage/latch.h"

typedef struct PfShared
{
	pid_t		dispatcher_pid; /* 0 when no dispatcher runs */
	Latch	   *dispatcher_latch;	/* its latch, set to wake it */
	pg_atomic_uint64 passes;	/* dispatch passes done since start */
} PfShared;

extern PfShared *pf_shared;

extern void pf_shmem_init(void);
extern void pf_wake_at_commit(void);

#endif							/* PARFLOW_SHMEM_H */
