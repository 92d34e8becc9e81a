/*
 * parflow.c - the module's entry point.  It declares the module magic and
 * initialises each area in turn: configuration parameters first, then (when
 * the library is preloaded) the shared state and the launcher, which starts
 * the dispatchers.  Everything
 * else lives in the file of its concern.
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "guc.h"
#include "launcher.h"
#include "shmem.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	pf_guc_init();
	pf_shmem_init();
	pf_launcher_init();
}
