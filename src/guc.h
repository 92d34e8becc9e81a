/*
 * guc.h - parflow's configuration parameters (parflow.*).
 */
#ifndef PARFLOW_GUC_H
#define PARFLOW_GUC_H

extern char *pf_database;
extern int	pf_max_databases;
extern int	pf_max_parallel_stages;
extern bool pf_parallel_default;
extern bool pf_fair_share;
extern int	pf_naptime_ms;
extern int	pf_max_output_size;
extern int	pf_claim_timeout_ms;
extern int	pf_interrupt_grace_ms;
extern int	pf_retention_min;
extern int	pf_learn_min_runs;
extern int	pf_learn_window;
extern int	pf_plan_effort;
extern bool pf_plan_holds;
extern int	pf_max_map_width;

extern void pf_guc_init(void);

#endif							/* PARFLOW_GUC_H */
