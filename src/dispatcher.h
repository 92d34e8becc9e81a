/*
 * dispatcher.h - a database's dispatcher background worker.
 */
#ifndef PARFLOW_DISPATCHER_H
#define PARFLOW_DISPATCHER_H

#include "postmaster/bgworker.h"

extern bool pf_dispatcher_start(int slot_no, Oid dboid, const char *dbname,
								BackgroundWorkerHandle **handle);
extern PGDLLEXPORT void parflow_dispatcher_main(Datum main_arg);

#endif							/* PARFLOW_DISPATCHER_H */
