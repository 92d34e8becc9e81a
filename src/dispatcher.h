/*
 * dispatcher.h - the dispatcher background worker.
 */
#ifndef PARFLOW_DISPATCHER_H
#define PARFLOW_DISPATCHER_H

extern void pf_dispatcher_register(void);
extern PGDLLEXPORT void parflow_dispatcher_main(Datum main_arg);

#endif							/* PARFLOW_DISPATCHER_H */
