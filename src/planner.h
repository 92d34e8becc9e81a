/*
 * planner.h - the dependency graph of a workflow version and its schedules.
 *
 * A graph has one node per stage (0 .. nstages-1, in spec order) and one
 * barrier node per group (nstages + group ord) that is done when every stage
 * of its group is done.  Barrier nodes and skipped stages cost nothing and
 * take no capacity: they only pass dependencies on.  A stage no agent
 * works (a wait stage awaits an event, a sub-workflow stage its child run)
 * takes its estimate, or no time, but no capacity either.  planner.c loads and
 * checks graphs and serves the SQL functions; schedule.c plans them.
 */
#ifndef PARFLOW_PLANNER_H
#define PARFLOW_PLANNER_H

#include "utils/array.h"

/* How the list scheduler orders ready stages. */
typedef enum PfPolicy
{
	PF_POLICY_BEST,				/* best of several bottom-level orders */
	PF_POLICY_CP,				/* plain bottom level (critical path) */
	PF_POLICY_FIFO				/* first ready, first served */
} PfPolicy;

/* Why a plan is known to be the shortest, if it is. */
typedef enum PfProof
{
	PF_PROOF_NONE,				/* not proven: the search ran out of budget */
	PF_PROOF_BOUND,				/* its makespan meets the lower bound */
	PF_PROOF_SEARCH				/* the branch and bound tried every schedule */
} PfProof;

typedef struct PfGraph
{
	int			nstages;
	int			ngroups;
	int			nnodes;			/* nstages + ngroups */
	int64		nedges;
	int64	   *cost;			/* microseconds; 0 for barriers and skipped */
	bool	   *runs;			/* a stage that runs (not a barrier, not skipped) */
	bool	   *wait;			/* no agent works it (it awaits an event or a
								 * child run): no capacity */
	bool		has_wait;		/* some stage that runs is such a stage */
	bool	   *map;			/* a map stage (its instances are made at run time) */
	int		   *group_of;		/* per stage */
	char	  **stage_name;		/* per stage */
	char	  **agent;			/* per stage; NULL for a wait stage */
	char	  **group_name;		/* per group */
	int		   *succ_off;		/* CSR successors: succ[succ_off[v] .. succ_off[v+1]) */
	int		   *succ;
	int		   *pred_off;		/* CSR predecessors */
	int		   *pred;
	int			nrules;			/* affinity rules */
	int		   *rule_cap;
	int		   *srule_off;		/* rules that bound each stage, CSR */
	int		   *srule;
	int			wf_max_parallel;	/* 0 when the workflow sets none */
	int		   *topo;			/* a topological order of all nodes */
} PfGraph;

typedef struct PfSchedule
{
	int			cap;			/* the effective cap used */
	int64		makespan;
	int64		critical_path;
	int64		total_work;
	int64		lower_bound;	/* no schedule under the caps is shorter */
	PfProof		proof;
	int64		schedules;		/* list schedules the search computed */
	int64		units;			/* units of parflow.plan_effort's budget spent */
	int64	   *start;			/* per node */
	int64	   *finish;
	int64	   *bottom;			/* bottom level: longest path from the node's start to the end */
	int64	   *rank;			/* the dispatch priority that produced the schedule */
	int		   *hold;			/* a stage held until this one finishes (-1: none) */
	int			nheld;			/* stages held */
	int64	   *slack;			/* how far a stage can slip before the makespan moves */
	int		   *wave;			/* 1-based topological wave of each stage that runs */
} PfSchedule;

extern PfGraph *pf_graph_load(int64 version_id, ArrayType *flags);
extern void pf_graph_check(PfGraph *g, const char *workflow);
extern int	pf_effective_cap(PfGraph *g, int call_max_parallel);
/* schedule.c */
extern PfSchedule *pf_schedule(PfGraph *g, int cap, PfPolicy policy);
extern int64 pf_current_version(const char *workflow);

#endif							/* PARFLOW_PLANNER_H */
