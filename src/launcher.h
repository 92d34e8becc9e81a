/*
 * launcher.h - the launcher that starts one dispatcher per database, and the
 * utility hook that keeps it informed.
 */
#ifndef PARFLOW_LAUNCHER_H
#define PARFLOW_LAUNCHER_H

#include "fmgr.h"

extern void pf_launcher_init(void);
extern bool pf_db_held(Oid dboid);
extern PGDLLEXPORT void parflow_launcher_main(Datum main_arg);

#endif							/* PARFLOW_LAUNCHER_H */
