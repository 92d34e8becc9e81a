/*
 * schedule.c - the plans of a workflow graph under a cap.  This file owns
 * every schedule computed from a PfGraph: list scheduling (the dispatcher's
 * own rule: whenever capacity is free, the ready stage of highest rank that
 * no affinity rule or hold holds back starts), the lower bound a plan is
 * measured against (critical path, work / cap and per affinity rule, the
 * release and tail bound, energetic reasoning, all rounded up to the
 * estimates' common grain), and the search for the shortest plan within
 * parflow.plan_effort: forward-backward improvement (as list schedules, and
 * in the serial way, which may keep a slot idle), biased random sampling of
 * priorities, and for small graphs a branch and bound over dispatch orders,
 * then over every schedule, that proves a plan optimal when it runs to its
 * end.  A plan is ranks plus holds (a stage that does not start before
 * another has finished): a schedule that keeps a slot idle is realised with
 * holds (realise), so that the dispatcher, following them, reproduces it.
 */
#include "postgres.h"

#include "lib/binaryheap.h"
#include "miscadmin.h"
#include "port/pg_bitutils.h"

#include "guc.h"
#include "planner.h"

/*
 * The search's budget is counted in units of work, not read from a clock,
 * so that the same call plans the same way every time (parflow_start's
 * ranks and parflow_plan agree, and so do tests).  A unit is a few
 * nanoseconds: a list schedule costs 16 per node and edge, the bounds' and
 * the branch and bound's steps 1 or 2 per element they touch.  This many
 * make a millisecond on a 2-core AMD EPYC (measured with
 * test/bench/plan.sh on graphs of 100 to 100,000 stages).
 */
#define PF_UNITS_PER_MS		240000
#define PF_LS_UNITS(S)		(16 * ((int64) (S)->n + (S)->g->nedges))

/* Graphs up to this many nodes get the branch and bound. */
#define PF_BB_MAX_NODES		3000

/*
 * Graphs up to this many nodes get the serial justification; when no
 * branch and bound follows, the sampling leaves it this many list
 * schedules' and sorts' worth of budget.
 */
#define PF_SERIAL_MAX_NODES	20000
#define PF_SERIAL_RESERVE	24

/* Share of the budget for the strong lower bounds, and for sampling. */
#define PF_BOUND_SHARE		4	/* 1/4 */
#define PF_SAMPLE_SHARE		2	/* the sampling stops at 1/2 left */

/* One direction of the graph: forward, or reversed for backward passes. */
typedef struct PfDir
{
	const int  *succ_off;
	const int  *succ;
	const int  *pred_off;
	const int  *pred;
} PfDir;

typedef struct SchedState
{
	const int64 *key;			/* ready: larger first */
	const int64 *finish;		/* running: earlier first */
} SchedState;

/*
 * The scratch space of list schedules, allocated once per search; and the
 * holds a forward schedule honours when hold is set: node x does not start
 * before node hold[x] (-1: none) finishes, besides its dependencies (the
 * nodes that wait for u: hold_w[hold_off[u] .. hold_off[u + 1])).
 */
typedef struct LsWork
{
	const int  *hold;
	int		   *hold_off;
	int		   *hold_w;
	int		   *indeg;
	int		   *stack;
	int		   *deferred;
	int		   *rule_running;
	SchedState	st;
	binaryheap *ready;
	binaryheap *running;
} LsWork;

/*
 * A resource profile: usage u[i] on [t[i], t[i + 1]), 0 before t[0] and
 * from the last breakpoint on.
 */
typedef struct Profile
{
	int64	   *t;
	int		   *u;
	int			k;
	int			cap;
} Profile;

/* Everything one call of pf_schedule searches with. */
typedef struct Search
{
	PfGraph    *g;
	int			cap;
	int			n;				/* nodes */
	PfDir		fwd;
	PfDir		bwd;
	LsWork		w;
	const int64 *bottom;		/* longest path from a node's start to the end */
	int64	   *head;			/* longest path from the start to the node's start */
	int64		grain;			/* gcd of the positive costs */
	int64		lb;				/* the lower bound so far */
	int64		budget;			/* units left */
	int64		units_used;
	int64		schedules;		/* list schedules computed */
	uint64		rng;
	/*
	 * the best plan so far, the key that produced it and its holds (-1:
	 * none; nheld of them are not)
	 */
	int64		best;
	int64	   *best_start;
	int64	   *best_finish;
	int64	   *best_key;
	int		   *best_hold;
	int			nheld;
	bool	   *holdable;		/* a stage that may be held */
	bool	   *awaitable;		/* one a hold may wait for: holdable, and no
								 * wait, sub-workflow or map stage before it */
	int		   *topo_pos;
	/* scratch of realise and the serial justification */
	int64	   *rkey;
	int		   *rhold;
	int64	   *rstart;
	int64	   *rfinish;
	int64	   *tstart;
	int64	   *tfinish;
	int		   *order;
	Profile    *prof;			/* one per affinity rule, then the cap's */
	/* scratch */
	int64	   *key;
	int64	   *start;
	int64	   *finish;
	int64	   *bkey;
	int64	   *bstart;
	int64	   *bfinish;
} Search;

static int64
ceil_div(int64 a, int64 b)
{
	return (a + b - 1) / b;
}

/* The smallest multiple of grain that is at least x. */
static int64
round_up(int64 x, int64 grain)
{
	return grain > 1 ? ceil_div(x, grain) * grain : x;
}

static int64
gcd64(int64 a, int64 b)
{
	while (b != 0)
	{
		int64		r = a % b;

		a = b;
		b = r;
	}
	return a;
}

/* A small deterministic generator (splitmix64), so plans are repeatable. */
static uint64
next_rand(uint64 *state)
{
	uint64		z = (*state += UINT64CONST(0x9E3779B97F4A7C15));

	z = (z ^ (z >> 30)) * UINT64CONST(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64CONST(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

/* Spend units of the budget; false once it is spent. */
static bool
spend(Search *S, int64 units)
{
	S->budget -= units;
	S->units_used += units;
	return S->budget > 0;
}

/* Whether cost more units leave more than stop. */
static bool
affordable(Search *S, int64 stop, int64 cost)
{
	return S->budget - cost > stop;
}

/* Units of sorting n elements. */
static int64
sort_units(int64 n)
{
	return 2 * n * (1 + pg_leftmost_one_pos64((uint64) n + 1));
}

/* ----------------------------------------------------------------
 * List scheduling
 * ----------------------------------------------------------------
 */

static int
ready_cmp(Datum a, Datum b, void *arg)
{
	SchedState *st = (SchedState *) arg;
	int			x = DatumGetInt32(a);
	int			y = DatumGetInt32(b);

	if (st->key[x] != st->key[y])
		return st->key[x] > st->key[y] ? 1 : -1;
	return x < y ? 1 : (x > y ? -1 : 0);
}

static int
running_cmp(Datum a, Datum b, void *arg)
{
	SchedState *st = (SchedState *) arg;
	int			x = DatumGetInt32(a);
	int			y = DatumGetInt32(b);

	if (st->finish[x] != st->finish[y])
		return st->finish[x] < st->finish[y] ? 1 : -1;
	return x < y ? 1 : (x > y ? -1 : 0);
}

static void
ls_work_init(LsWork *w, PfGraph *g)
{
	int			n = Max(g->nnodes, 1);

	w->hold = NULL;
	w->hold_off = palloc(sizeof(int) * (n + 1));
	w->hold_w = palloc(sizeof(int) * n);
	w->indeg = palloc(sizeof(int) * n);
	w->stack = palloc(sizeof(int) * n);
	w->deferred = palloc(sizeof(int) * n);
	w->rule_running = palloc0(sizeof(int) * Max(g->nrules, 1));
	w->ready = binaryheap_allocate(n, ready_cmp, &w->st);
	w->running = binaryheap_allocate(n, running_cmp, &w->st);
}

/*
 * One greedy list schedule in direction d: whenever capacity is free, start
 * the ready stage with the highest key (the lowest node number among equal
 * keys, as the dispatcher takes the lowest task id) that no affinity rule
 * holds back.  With fifo, the key is the order in which stages became
 * ready.  Nodes that do not run finish as soon as they are released.
 * Returns the makespan.
 */
static int64
list_schedule(LsWork *w, PfGraph *g, const PfDir *d, int cap, int64 *key,
			  bool fifo, int64 *start, int64 *finish)
{
	int			n = g->nnodes;
	int		   *indeg = w->indeg;
	int		   *stack = w->stack;
	int		   *deferred = w->deferred;
	int		   *rule_running = w->rule_running;
	binaryheap *ready = w->ready;
	binaryheap *running = w->running;
	int64		t = 0;
	int64		seq = 0;
	int64		makespan = 0;
	int			nrun = 0;
	int			v;
	int			sp = 0;
	int			pass = 0;

	w->st.key = key;
	w->st.finish = finish;
	binaryheap_reset(ready);
	binaryheap_reset(running);
	memset(rule_running, 0, sizeof(int) * Max(g->nrules, 1));

	/*
	 * release(v): ready to start at time t (or done at once when it does not
	 * run; a wait stage starts at once and takes its time, but no capacity)
	 */
#define RELEASE(x) \
	do { \
		int rv_ = (x); \
		if (!g->runs[rv_]) \
		{ \
			start[rv_] = finish[rv_] = t; \
			stack[sp++] = rv_; \
		} \
		else if (g->wait[rv_]) \
		{ \
			start[rv_] = t; \
			finish[rv_] = t + g->cost[rv_]; \
			binaryheap_add(running, Int32GetDatum(rv_)); \
		} \
		else \
		{ \
			if (fifo) \
				key[rv_] = -(seq++); \
			binaryheap_add(ready, Int32GetDatum(rv_)); \
		} \
	} while (0)
#define DRAIN() \
	while (sp > 0) \
	{ \
		int du_ = stack[--sp]; \
		int dk_; \
		for (dk_ = d->succ_off[du_]; dk_ < d->succ_off[du_ + 1]; dk_++) \
			if (--indeg[d->succ[dk_]] == 0) \
				RELEASE(d->succ[dk_]); \
	}

	for (v = 0; v < n; v++)
		indeg[v] = d->pred_off[v + 1] - d->pred_off[v] + (w->hold != NULL && w->hold[v] >= 0);
	for (v = 0; v < n; v++)
		if (indeg[v] == 0)
			RELEASE(v);
	DRAIN();

	for (;;)
	{
		int			nd = 0;
		int			i;

		if ((++pass & 1023) == 0)
			CHECK_FOR_INTERRUPTS();

		while (nrun < cap && !binaryheap_empty(ready))
		{
			int			u = DatumGetInt32(binaryheap_remove_first(ready));
			bool		blocked = false;
			int			k;

			for (k = g->srule_off[u]; k < g->srule_off[u + 1] && !blocked; k++)
				blocked = rule_running[g->srule[k]] >= g->rule_cap[g->srule[k]];
			if (blocked)
			{
				deferred[nd++] = u;
				continue;
			}
			for (k = g->srule_off[u]; k < g->srule_off[u + 1]; k++)
				rule_running[g->srule[k]]++;
			start[u] = t;
			finish[u] = t + g->cost[u];
			binaryheap_add(running, Int32GetDatum(u));
			nrun++;
		}
		for (i = 0; i < nd; i++)
			binaryheap_add(ready, Int32GetDatum(deferred[i]));

		if (binaryheap_empty(running))
			break;

		t = finish[DatumGetInt32(binaryheap_first(running))];
		makespan = Max(makespan, t);
		while (!binaryheap_empty(running) &&
			   finish[DatumGetInt32(binaryheap_first(running))] == t)
		{
			int			u = DatumGetInt32(binaryheap_remove_first(running));
			int			k;

			if (!g->wait[u])
				nrun--;
			for (k = g->srule_off[u]; k < g->srule_off[u + 1]; k++)
				rule_running[g->srule[k]]--;
			for (k = d->succ_off[u]; k < d->succ_off[u + 1]; k++)
				if (--indeg[d->succ[k]] == 0)
					RELEASE(d->succ[k]);
			if (w->hold != NULL)
				for (k = w->hold_off[u]; k < w->hold_off[u + 1]; k++)
					if (--indeg[w->hold_w[k]] == 0)
						RELEASE(w->hold_w[k]);
			DRAIN();
		}
	}
#undef RELEASE
#undef DRAIN

	if (!binaryheap_empty(ready))
		elog(ERROR, "parflow: list scheduling stalled with ready stages left");
	return makespan;
}

/* The best plan is a list schedule: no holds. */
static void
forget_holds(Search *S)
{
	if (S->nheld > 0)
	{
		int			v;

		for (v = 0; v < S->n; v++)
			S->best_hold[v] = -1;
		S->nheld = 0;
	}
}

/*
 * A forward list schedule under key, into S->start/S->finish; kept as the
 * best plan when it is shorter than the best so far.
 */
static int64
forward(Search *S, int64 *key)
{
	int64		mk;

	mk = list_schedule(&S->w, S->g, &S->fwd, S->cap, key, false, S->start, S->finish);
	S->schedules++;
	spend(S, PF_LS_UNITS(S));
	if (mk < S->best)
	{
		S->best = mk;
		memcpy(S->best_start, S->start, sizeof(int64) * S->n);
		memcpy(S->best_finish, S->finish, sizeof(int64) * S->n);
		memcpy(S->best_key, key, sizeof(int64) * S->n);
		forget_holds(S);
	}
	return mk;
}

/*
 * Forward-backward improvement (justification) of the forward schedule in
 * S->start/S->finish, of makespan mk: schedule the reversed graph with the
 * stages that finish last first, then the graph again with the stages that
 * the backward pass started last (so finished first, in forward time) first;
 * repeat while the forward makespan shrinks.  Both passes are list
 * schedules, so every forward result is a plan the dispatcher can follow.
 */
static void
improve_fb(Search *S, int64 mk)
{
	int			round;

	for (round = 0; round < 16 && S->best > S->lb && S->budget >= 2 * PF_LS_UNITS(S); round++)
	{
		int64		mkf;
		int			v;

		for (v = 0; v < S->n; v++)
			S->bkey[v] = S->finish[v];
		list_schedule(&S->w, S->g, &S->bwd, S->cap, S->bkey, false, S->bstart, S->bfinish);
		S->schedules++;
		spend(S, PF_LS_UNITS(S));
		for (v = 0; v < S->n; v++)
			S->key[v] = S->bfinish[v];
		mkf = forward(S, S->key);
		if (mkf >= mk)
			break;
		mk = mkf;
	}
}

/* ----------------------------------------------------------------
 * Schedules that keep a slot idle, and the holds that realise them
 * ----------------------------------------------------------------
 */

/*
 * Set the holds list schedules honour (hold NULL: none): the waiters of
 * every node, as a CSR list in the scratch space.
 */
static void
set_holds(LsWork *w, int n, const int *hold)
{
	int			v;

	w->hold = hold;
	if (hold == NULL)
		return;
	memset(w->hold_off, 0, sizeof(int) * (n + 1));
	for (v = 0; v < n; v++)
		if (hold[v] >= 0)
			w->hold_off[hold[v] + 1]++;
	for (v = 0; v < n; v++)
		w->hold_off[v + 1] += w->hold_off[v];
	/* each waiter at its node's next place, which moves hold_off[u] to u + 1's start */
	for (v = 0; v < n; v++)
		if (hold[v] >= 0)
			w->hold_w[w->hold_off[hold[v]]++] = v;
	for (v = n; v > 0; v--)
		w->hold_off[v] = w->hold_off[v - 1];
	w->hold_off[0] = 0;
}

/* Whether stages x and y share an affinity rule. */
static bool
share_rule(PfGraph *g, int x, int y)
{
	int			a,
				b;

	for (a = g->srule_off[x]; a < g->srule_off[x + 1]; a++)
		for (b = g->srule_off[y]; b < g->srule_off[y + 1]; b++)
			if (g->srule[a] == g->srule[b])
				return true;
	return false;
}

/*
 * Realise a schedule (tstart, tfinish: any schedule under the caps) as
 * dispatch ranks and holds.  The ranks order the stages by their start in
 * it; a stage that the dispatcher, following them, would start earlier
 * than the schedule does (a slot is free and it is ready) is held until a
 * stage that finishes as it starts there (sharing an affinity rule with it
 * when one does) has finished.  Holds are added one at a time, for the
 * earliest such stage, and the schedule the dispatcher would follow is
 * computed again each time; that schedule, not the target, is the
 * candidate: kept as the best plan when it is shorter.  Holds only point
 * from a stage that starts earlier in the target to one that starts later,
 * as dependencies do, so they never make a cycle.  A hold never waits for a
 * stage behind a wait, sub-workflow or map stage, whose time is an event's
 * or a child run's (a signal may never come).  Returns the candidate's
 * makespan (PG_INT64_MAX when the budget allowed no schedule; when it runs
 * out later, the last schedule is the candidate).
 */
static int64
realise(Search *S, const int64 *tstart, const int64 *tfinish)
{
	PfGraph    *g = S->g;
	int			n = S->n;
	int64		mk_t = 0;
	int64		mk = PG_INT64_MAX;
	int			nheld = 0;
	int			v;

	for (v = 0; v < n; v++)
		mk_t = Max(mk_t, tfinish[v]);
	for (v = 0; v < n; v++)
	{
		S->rkey[v] = mk_t - tstart[v];
		S->rhold[v] = -1;
	}
	for (;;)
	{
		int			x = -1;
		int			y = -1;

		if (!affordable(S, 0, PF_LS_UNITS(S)))
		{
			if (mk == PG_INT64_MAX)
				return mk;
			break;				/* (the last schedule, with the holds so far) */
		}
		set_holds(&S->w, n, S->rhold);
		mk = list_schedule(&S->w, g, &S->fwd, S->cap, S->rkey, false, S->rstart, S->rfinish);
		set_holds(&S->w, n, NULL);
		S->schedules++;
		spend(S, PF_LS_UNITS(S));

		/* the earliest stage that starts before its time */
		for (v = 0; v < n; v++)
			if (S->holdable[v] && S->rstart[v] < tstart[v] &&
				(x < 0 || S->rstart[v] < S->rstart[x]))
				x = v;
		if (x < 0 || S->rhold[x] >= 0 || mk <= mk_t)
			break;
		/* a stage that finishes as it starts in the target */
		for (v = 0; v < n; v++)
			if (v != x && S->awaitable[v] && tfinish[v] == tstart[x] &&
				(y < 0 || (share_rule(g, x, v) && !share_rule(g, x, y))))
				y = v;
		spend(S, 2 * n);
		if (y < 0)
			break;
		S->rhold[x] = y;
		nheld++;
	}
	if (mk < S->best)
	{
		S->best = mk;
		memcpy(S->best_start, S->rstart, sizeof(int64) * n);
		memcpy(S->best_finish, S->rfinish, sizeof(int64) * n);
		memcpy(S->best_key, S->rkey, sizeof(int64) * n);
		memcpy(S->best_hold, S->rhold, sizeof(int) * n);
		S->nheld = nheld;
	}
	return mk;
}

/* The breakpoint at time x, inserted when missing. */
static int
profile_point(Search *S, Profile *p, int64 x)
{
	int			lo = 0;
	int			hi = p->k;

	while (lo < hi)
	{
		int			mid = (lo + hi) / 2;

		if (p->t[mid] < x)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < p->k && p->t[lo] == x)
		return lo;
	memmove(p->t + lo + 1, p->t + lo, sizeof(int64) * (p->k - lo));
	memmove(p->u + lo + 1, p->u + lo, sizeof(int) * (p->k - lo));
	spend(S, 1 + (p->k - lo) / 8);
	p->t[lo] = x;
	p->u[lo] = lo > 0 ? p->u[lo - 1] : 0;
	p->k++;
	return lo;
}

/* The earliest s >= e at which the profile has room throughout [s, s + d). */
static int64
profile_earliest(Search *S, const Profile *p, int64 e, int64 d)
{
	int64		s = e;
	int			lo = 0;
	int			hi = p->k;
	int			i;

	while (lo < hi)
	{
		int			mid = (lo + hi) / 2;

		if (p->t[mid] <= s)
			lo = mid + 1;
		else
			hi = mid;
	}
	/* segment lo - 1 contains s; a full one moves s to its end */
	for (i = Max(lo - 1, 0); i + 1 < p->k && p->t[i] < s + d; i++)
	{
		spend(S, 1);
		if (p->u[i] >= p->cap && p->t[i + 1] > s)
			s = p->t[i + 1];
	}
	return s;
}

static void
profile_add(Search *S, Profile *p, int64 s, int64 d)
{
	int			a = profile_point(S, p, s);
	int			b = profile_point(S, p, s + d);
	int			i;

	for (i = a; i < b; i++)
		p->u[i]++;
	spend(S, b - a);
}

typedef struct OrderKey
{
	const int64 *t;
	const int  *topo_pos;
	int			sign;
} OrderKey;

/* By t ascending (sign 1) or descending (-1), then topologically in that direction. */
static int
cmp_order(const void *a, const void *b, void *arg)
{
	const OrderKey *ok = (const OrderKey *) arg;
	int			x = *(const int *) a;
	int			y = *(const int *) b;

	if (ok->t[x] != ok->t[y])
		return (ok->t[x] < ok->t[y] ? -1 : 1) * ok->sign;
	return (ok->topo_pos[x] - ok->topo_pos[y]) * ok->sign;
}

/*
 * Serial schedule generation in direction d: the nodes in order, each at
 * the earliest time its predecessors in d and every resource it takes (the
 * cap, its affinity rules) allow, which may leave a slot idle while a
 * stage is ready.  Times are measured from the end backward.  Fills st and
 * fin; returns the makespan, or PG_INT64_MAX when the budget ran out.
 */
static int64
serial_schedule(Search *S, const PfDir *d, const int *order, int64 *st, int64 *fin)
{
	PfGraph    *g = S->g;
	int			n = S->n;
	int64		mk = 0;
	int			i;

	for (i = 0; i <= g->nrules; i++)
		S->prof[i].k = 0;
	for (i = 0; i < n; i++)
	{
		int			v = order[i];
		int64		e = 0;
		int			k;

		for (k = d->pred_off[v]; k < d->pred_off[v + 1]; k++)
			e = Max(e, fin[d->pred[k]]);
		if (g->runs[v] && !g->wait[v] && g->cost[v] > 0)
		{
			int64		s = e;
			int64		prev;

			do
			{
				prev = s;
				s = profile_earliest(S, &S->prof[g->nrules], s, g->cost[v]);
				for (k = g->srule_off[v]; k < g->srule_off[v + 1]; k++)
					s = profile_earliest(S, &S->prof[g->srule[k]], s, g->cost[v]);
			} while (s != prev);
			profile_add(S, &S->prof[g->nrules], s, g->cost[v]);
			for (k = g->srule_off[v]; k < g->srule_off[v + 1]; k++)
				profile_add(S, &S->prof[g->srule[k]], s, g->cost[v]);
			st[v] = s;
		}
		else
			st[v] = e;
		fin[v] = st[v] + (g->runs[v] ? g->cost[v] : 0);
		mk = Max(mk, fin[v]);
		if (S->budget <= 0)
			return PG_INT64_MAX;
	}
	return mk;
}

/*
 * Forward-backward improvement in the serial way (double justification):
 * from the schedule (start, finish), right-justify every stage in order of
 * decreasing finish, then left-justify in order of increasing start; repeat
 * while the makespan shrinks.  Each forward result is a schedule that may
 * keep a slot idle: it is realised as ranks and holds (realise), and kept
 * when that is the shortest plan so far.
 */
static void
improve_serial(Search *S, const int64 *start, const int64 *finish)
{
	int			n = S->n;
	int64		best_local;
	OrderKey	ok;
	int			round;
	int			v;

	if (S->n > PF_SERIAL_MAX_NODES)
		return;
	memcpy(S->tstart, start, sizeof(int64) * n);
	memcpy(S->tfinish, finish, sizeof(int64) * n);
	best_local = 0;
	for (v = 0; v < n; v++)
		best_local = Max(best_local, finish[v]);
	ok.topo_pos = S->topo_pos;
	for (round = 0; round < 16 && S->best > S->lb; round++)
	{
		int64		mkr;
		int64		mkl;

		if (!affordable(S, 0, 4 * PF_LS_UNITS(S) + 2 * sort_units(n)))
			return;
		for (v = 0; v < n; v++)
			S->order[v] = v;
		ok.t = S->tfinish;
		ok.sign = -1;
		qsort_arg(S->order, n, sizeof(int), cmp_order, &ok);
		spend(S, sort_units(n));
		mkr = serial_schedule(S, &S->bwd, S->order, S->bstart, S->bfinish);
		if (mkr == PG_INT64_MAX)
			return;
		for (v = 0; v < n; v++)
		{
			S->order[v] = v;
			S->bkey[v] = mkr - S->bfinish[v];	/* its start, in forward time */
		}
		ok.t = S->bkey;
		ok.sign = 1;
		qsort_arg(S->order, n, sizeof(int), cmp_order, &ok);
		spend(S, sort_units(n));
		mkl = serial_schedule(S, &S->fwd, S->order, S->tstart, S->tfinish);
		if (mkl >= best_local)
			return;
		best_local = mkl;
		if (mkl < S->best)
			(void) realise(S, S->tstart, S->tfinish);
	}
}

/* ----------------------------------------------------------------
 * Lower bounds
 * ----------------------------------------------------------------
 */

/* Tasks of one resource: every stage that runs, or those of one rule. */
typedef struct Resource
{
	int		   *task;
	int			ntask;
	int			cap;
} Resource;

static int
cmp_tail_desc(const void *a, const void *b, void *arg)
{
	Search	   *S = (Search *) arg;
	int			x = *(const int *) a;
	int			y = *(const int *) b;
	int64		tx = S->bottom[x] - S->g->cost[x];
	int64		ty = S->bottom[y] - S->g->cost[y];

	if (tx != ty)
		return tx > ty ? -1 : 1;
	return x - y;
}

static int
cmp_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return x < y ? -1 : (x > y ? 1 : 0);
}

/*
 * The release and tail bound: for any set J of stages, no plan is shorter
 * than min head(J) + work(J) / cap + min tail(J).  Every pair of thresholds
 * (head >= h, tail >= q) is tried: one scan of the stages by decreasing
 * tail per distinct head.  Stops when its share of the budget is spent (the
 * bound found so far holds).
 */
static int64
lb_release(Search *S, Resource *r, int64 share)
{
	int		   *order = palloc(sizeof(int) * Max(r->ntask, 1));
	int64	   *heads = palloc(sizeof(int64) * Max(r->ntask, 1));
	int			nh = 0;
	int64		best = 0;
	int64		stop = S->budget - share;
	int			i;

	if (!affordable(S, stop, 2 * sort_units(r->ntask) + 2 * (int64) r->ntask))
		return 0;
	spend(S, 2 * sort_units(r->ntask));
	memcpy(order, r->task, sizeof(int) * r->ntask);
	qsort_arg(order, r->ntask, sizeof(int), cmp_tail_desc, S);
	for (i = 0; i < r->ntask; i++)
		heads[i] = S->head[r->task[i]];
	qsort(heads, r->ntask, sizeof(int64), cmp_int64);
	for (i = 0; i < r->ntask; i++)
		if (i == 0 || heads[i] != heads[nh - 1])
			heads[nh++] = heads[i];

	for (i = 0; i < nh && affordable(S, stop, 2 * (int64) r->ntask); i++)
	{
		int64		h = heads[i];
		int64		work = 0;
		int			k;

		for (k = 0; k < r->ntask; k++)
		{
			int			v = order[k];

			if (S->head[v] < h)
				continue;
			work += S->g->cost[v];
			best = Max(best, h + ceil_div(work, r->cap) + S->bottom[v] - S->g->cost[v]);
		}
		spend(S, 2 * (int64) r->ntask);
		CHECK_FOR_INTERRUPTS();
	}
	pfree(order);
	pfree(heads);
	return best;
}

typedef struct Ramp
{
	int64		at;
	int			slope;			/* +1 where a ramp starts, -1 where it ends */
} Ramp;

static int
cmp_ramp(const void *a, const void *b)
{
	const Ramp *x = (const Ramp *) a;
	const Ramp *y = (const Ramp *) b;

	if (x->at != y->at)
		return x->at < y->at ? -1 : 1;
	return x->slope - y->slope;
}

/*
 * Energetic reasoning (Fernandez-Bussell, in Lopez and Erschler's form): if
 * every plan were as short as T, stage j would run inside [r_j, d_j] with
 * r_j its head and d_j = T - its tail, and within any window [a, b] at
 * least min(p_j, b - a, r_j + p_j - a, b - d_j + p_j) of it.  When the
 * stages' least work in a window exceeds cap * (b - a) by x, a plan of
 * length T + delta has the window [a, b + delta] for at least as much work,
 * so delta >= x / cap: the bound rises by the largest such step.  For each
 * window start a, the least work is a sum of ramps in b, swept in order.
 * Returns the raise over T (0 when T passes).
 */
static int64
lb_energetic(Search *S, Resource *r, int64 T, int64 share)
{
	PfGraph    *g = S->g;
	int			nt = r->ntask;
	int64	   *starts = palloc(sizeof(int64) * Max(3 * nt, 1));
	Ramp	   *ramp = palloc(sizeof(Ramp) * Max(2 * nt, 1));
	int			na = 0;
	int64		raise = 0;
	int64		stop = S->budget - share;
	int64		step = 2 * nt + sort_units(2 * (int64) nt);	/* one window start */
	int			i;

	if (!affordable(S, stop, sort_units(3 * (int64) nt) + step))
	{
		pfree(starts);
		pfree(ramp);
		return 0;
	}
	spend(S, sort_units(3 * (int64) nt));

	/* the window starts where the least work of a stage changes slope */
	for (i = 0; i < nt; i++)
	{
		int			v = r->task[i];

		starts[na++] = S->head[v];
		starts[na++] = S->head[v] + g->cost[v];
		starts[na++] = T - S->bottom[v];	/* latest start */
	}
	qsort(starts, na, sizeof(int64), cmp_int64);

	for (i = 0; i < na && affordable(S, stop, step); i++)
	{
		int64		a = starts[i];
		int			nr = 0;
		int64		work = 0;
		int64		last;
		int			slope = 0;
		int			k;

		if (i > 0 && a == starts[i - 1])
			continue;
		for (k = 0; k < nt; k++)
		{
			int			v = r->task[k];
			int64		p = g->cost[v];
			int64		c = Min(p, S->head[v] + p - a);
			int64		s = Max(a, T - S->bottom[v]);

			if (c <= 0)
				continue;
			ramp[nr].at = s;
			ramp[nr++].slope = 1;
			ramp[nr].at = s + c;
			ramp[nr++].slope = -1;
		}
		qsort(ramp, nr, sizeof(Ramp), cmp_ramp);
		last = a;
		for (k = 0; k < nr; k++)
		{
			int64		b = ramp[k].at;
			int64		excess;

			work += (int64) slope * (b - last);
			last = b;
			slope += ramp[k].slope;
			excess = work - (int64) r->cap * (b - a);
			if (b > a && excess > 0)
				raise = Max(raise, ceil_div(excess, r->cap));
		}
		spend(S, 2 * (int64) nt + sort_units(nr));
		CHECK_FOR_INTERRUPTS();
	}
	pfree(starts);
	pfree(ramp);
	return raise;
}

/*
 * The strong bounds, for the whole cap and for each affinity rule that can
 * bind, within share units.  Raises S->lb.
 */
static void
strong_bounds(Search *S, int64 share)
{
	PfGraph    *g = S->g;
	int			nres = 1 + g->nrules;
	Resource   *res = palloc0(sizeof(Resource) * nres);
	int64		stop = S->budget - share;
	int			i;
	int			k;

	res[0].task = palloc(sizeof(int) * Max(g->nstages, 1));
	res[0].cap = S->cap;
	for (i = 0; i < g->nrules; i++)
	{
		res[1 + i].task = palloc(sizeof(int) * Max(g->nstages, 1));
		res[1 + i].cap = Min(Max(g->rule_cap[i], 1), S->cap);
	}
	for (i = 0; i < g->nstages; i++)
	{
		if (!g->runs[i] || g->wait[i] || g->cost[i] <= 0)
			continue;
		res[0].task[res[0].ntask++] = i;
		for (k = g->srule_off[i]; k < g->srule_off[i + 1]; k++)
		{
			Resource   *r = &res[1 + g->srule[k]];

			r->task[r->ntask++] = i;
		}
	}

	for (i = 0; i < nres && S->budget > stop; i++)
	{
		Resource   *r = &res[i];
		int			round;

		if (r->ntask <= r->cap)
			continue;			/* never more stages than capacity */
		S->lb = Max(S->lb, round_up(lb_release(S, r, (S->budget - stop) / 2), S->grain));
		for (round = 0; round < 4 && S->budget > stop && S->best > S->lb; round++)
		{
			int64		raise = lb_energetic(S, r, S->lb, S->budget - stop);

			if (raise <= 0)
				break;
			S->lb = round_up(S->lb + raise, S->grain);
		}
	}
	for (i = 0; i < nres; i++)
		pfree(res[i].task);
	pfree(res);
}

/* ----------------------------------------------------------------
 * Branch and bound over dispatch orders
 * ----------------------------------------------------------------
 *
 * A node of the search is a moment t at which a stage finished (or time 0):
 * the stages running then, and the ready ones.  Its children are the ways
 * to fill the free capacity as a list schedule would: a set of ready stages
 * that fits (cap and affinity rules) and to which no other ready stage
 * could be added.  Every list schedule is a path from the root, and every
 * path is the list schedule whose key is its start times reversed (a stage
 * chosen at t outranks every stage left ready at t, which starts later), so
 * the search covers exactly the plans the dispatcher can follow.  Children
 * are tried in the order of the best plan's key, so the first path is that
 * plan; a node is pruned when its lower bound (the running stages' finish
 * plus tail, the waiting ones' earliest start plus bottom level, the work
 * left over the cap) reaches the best plan found.  Ready sets live in one
 * growing array (arena), by offset.
 */

typedef struct BB
{
	Search	   *S;
	PfGraph    *g;
	int			cap;
	bool		rules;			/* the graph has affinity rules */
	bool		delays;			/* a slot may stay idle while a stage is ready */
	int		   *npred;			/* unfinished predecessors */
	int64	   *start;			/* -1: not started */
	int64	   *finish;
	int		   *run;			/* running stages */
	int			nrun;
	int		   *rule_running;
	int64		work_left;		/* cost of the stages not started */
	int		   *fresh;			/* stages bb_release made ready */
	int			nfresh;
	int		   *arena;
	int			arena_len;
	int			arena_cap;
	const int64 *prio;
	int64		best;
	int64	   *best_start;
	bool		aborted;		/* the budget ran out: not exhaustive */
	int64		nodes;
} BB;

static void bb_level(BB *bb, int64 t, int rpos, int nr);

/* Reserve n ints of the arena; returns their offset. */
static int
bb_alloc(BB *bb, int n)
{
	int			pos = bb->arena_len;

	if (bb->arena_len + n > bb->arena_cap)
	{
		while (bb->arena_len + n > bb->arena_cap)
			bb->arena_cap *= 2;
		bb->arena = repalloc(bb->arena, sizeof(int) * bb->arena_cap);
	}
	bb->arena_len += n;
	return pos;
}

static int
cmp_prio(const void *a, const void *b, void *arg)
{
	const int64 *prio = (const int64 *) arg;
	int			x = *(const int *) a;
	int			y = *(const int *) b;

	if (prio[x] != prio[y])
		return prio[x] > prio[y] ? -1 : 1;
	return x - y;
}

static bool
bb_blocked(BB *bb, int v)
{
	int			k;

	for (k = bb->g->srule_off[v]; k < bb->g->srule_off[v + 1]; k++)
		if (bb->rule_running[bb->g->srule[k]] >= bb->g->rule_cap[bb->g->srule[k]])
			return true;
	return false;
}

static void
bb_rules(BB *bb, int v, int delta)
{
	int			k;

	for (k = bb->g->srule_off[v]; k < bb->g->srule_off[v + 1]; k++)
		bb->rule_running[bb->g->srule[k]] += delta;
}

/*
 * Release the successors of the nodes at arena[fpos .. fpos + nf), which
 * finished at t: nodes that do not run finish at once (appended to the
 * list, whose successors follow in turn), stages that run become ready (in
 * bb->fresh).  Returns how many nodes the list grew by.
 */
static int
bb_release(BB *bb, int64 t, int fpos, int nf)
{
	PfGraph    *g = bb->g;
	int			i;
	int			extra = 0;

	bb->nfresh = 0;
	for (i = 0; i < nf + extra; i++)
	{
		int			u = bb->arena[fpos + i];
		int			k;

		for (k = g->succ_off[u]; k < g->succ_off[u + 1]; k++)
		{
			int			v = g->succ[k];

			if (--bb->npred[v] != 0)
				continue;
			if (g->runs[v])
				bb->fresh[bb->nfresh++] = v;
			else
			{
				bb->arena[bb_alloc(bb, 1)] = v;
				bb->start[v] = bb->finish[v] = t;
				extra++;
			}
		}
	}
	return extra;
}

/* Undo bb_release for the same list. */
static void
bb_unrelease(BB *bb, int fpos, int nf, int extra)
{
	PfGraph    *g = bb->g;
	int			i;

	for (i = nf + extra - 1; i >= 0; i--)
	{
		int			u = bb->arena[fpos + i];
		int			k;

		for (k = g->succ_off[u]; k < g->succ_off[u + 1]; k++)
			bb->npred[g->succ[k]]++;
		if (i >= nf)
			bb->start[u] = -1;
	}
}

/*
 * The chosen stages have started at t: bound the node, move on to the next
 * finish, and search from there.
 */
static void
bb_advance(BB *bb, int64 t, int rpos, int nr)
{
	Search	   *S = bb->S;
	PfGraph    *g = bb->g;
	int64		tnext = PG_INT64_MAX;
	int64		lb = 0;
	int64		busy = 0;
	int			mark = bb->arena_len;
	int			savepos;
	int			nrun0;
	int			fpos;
	int			nf = 0;
	int			extra;
	int			cpos;
	int			nc = 0;
	int			i;

	Assert(bb->nrun > 0);
	if ((++bb->nodes & 255) == 0)
		CHECK_FOR_INTERRUPTS();
	if (!spend(S, 4 + nr + bb->nrun))
	{
		bb->aborted = true;
		return;
	}
	for (i = 0; i < bb->nrun; i++)
	{
		int			u = bb->run[i];

		tnext = Min(tnext, bb->finish[u]);
		lb = Max(lb, bb->finish[u] + S->bottom[u] - g->cost[u]);
		busy += bb->finish[u] - t;
	}
	for (i = 0; i < nr; i++)
	{
		int			v = bb->arena[rpos + i];

		if (bb->start[v] < 0)
			lb = Max(lb, tnext + S->bottom[v]);
	}
	lb = Max(lb, t + ceil_div(bb->work_left + busy, bb->cap));
	if (round_up(lb, S->grain) >= bb->best)
		return;

	/*
	 * The stages that finish at tnext leave the running set, which is saved
	 * first: bb_pick's undo expects its stages back in their places.
	 */
	nrun0 = bb->nrun;
	savepos = bb_alloc(bb, nrun0);
	memcpy(bb->arena + savepos, bb->run, sizeof(int) * nrun0);
	fpos = bb_alloc(bb, bb->nrun);
	for (i = 0; i < bb->nrun;)
	{
		int			u = bb->run[i];

		if (bb->finish[u] == tnext)
		{
			bb->arena[fpos + nf++] = u;
			bb->run[i] = bb->run[--bb->nrun];
			bb_rules(bb, u, -1);
		}
		else
			i++;
	}
	bb->arena_len = fpos + nf;
	extra = bb_release(bb, tnext, fpos, nf);

	/* the next ready set: the stages left ready, then the new ones, by priority */
	cpos = bb_alloc(bb, nr + bb->nfresh);
	for (i = 0; i < nr; i++)
	{
		int			v = bb->arena[rpos + i];

		if (bb->start[v] < 0)
			bb->arena[cpos + nc++] = v;
	}
	for (i = 0; i < bb->nfresh; i++)
		bb->arena[cpos + nc++] = bb->fresh[i];
	if (bb->nfresh > 0)
	{
		qsort_arg(bb->arena + cpos, nc, sizeof(int), cmp_prio, (void *) bb->prio);
		spend(S, (int64) nc * pg_leftmost_one_pos32(nc + 1));
	}
	spend(S, nc + nf);

	bb_level(bb, tnext, cpos, nc);

	/* undo */
	bb_unrelease(bb, fpos, nf, extra);
	for (i = 0; i < nf; i++)
		bb_rules(bb, bb->arena[fpos + i], 1);
	memcpy(bb->run, bb->arena + savepos, sizeof(int) * nrun0);
	bb->nrun = nrun0;
	bb->arena_len = mark;
}

/*
 * Choose, among the ready stages at arena[rpos + pos ..), the ones that
 * start at t besides the nch already chosen, with free slots in all.
 */
static void
bb_pick(BB *bb, int64 t, int rpos, int nr, int pos, int nch, int nfree)
{
	int			v;

	if (bb->aborted)
		return;
	if (nch == nfree || pos == nr)
	{
		int			i;

		/* a list schedule leaves no ready stage out that would fit */
		if (nch < nfree && bb->rules && !bb->delays)
			for (i = 0; i < nr; i++)
			{
				int			u = bb->arena[rpos + i];

				if (bb->start[u] < 0 && !bb_blocked(bb, u))
					return;
			}
		if (bb->nrun == 0)
			return;				/* (idle, with nothing running: no way on) */
		bb_advance(bb, t, rpos, nr);
		return;
	}

	v = bb->arena[rpos + pos];
	if (!bb_blocked(bb, v))
	{
		bb->start[v] = t;
		bb->finish[v] = t + bb->g->cost[v];
		bb->run[bb->nrun++] = v;
		bb->work_left -= bb->g->cost[v];
		bb_rules(bb, v, 1);
		bb_pick(bb, t, rpos, nr, pos + 1, nch + 1, nfree);
		bb_rules(bb, v, -1);
		bb->work_left += bb->g->cost[v];
		bb->nrun--;
		bb->start[v] = -1;
	}
	/*
	 * leave v ready: with delays, always; else, without rules, only while
	 * the others can fill the slots
	 */
	if (!bb->delays && !bb->rules && nr - pos - 1 < nfree - nch)
		return;
	bb_pick(bb, t, rpos, nr, pos + 1, nch, nfree);
}

static void
bb_level(BB *bb, int64 t, int rpos, int nr)
{
	Search	   *S = bb->S;

	check_stack_depth();
	if (bb->aborted)
		return;
	if (!spend(S, 4))
	{
		bb->aborted = true;
		return;
	}
	if (nr == 0 && bb->nrun == 0)
	{
		if (t < bb->best)
		{
			bb->best = t;
			memcpy(bb->best_start, bb->start, sizeof(int64) * S->n);
		}
		return;
	}
	bb_pick(bb, t, rpos, nr, 0, 0, Min(bb->cap - bb->nrun, nr));
}

/*
 * Search the dispatch orders (with delays, every schedule: a slot may stay
 * idle while a stage is ready) for a plan shorter than the best, within
 * the budget.  Returns true when the search ran to its end: no dispatch
 * order (with delays, no schedule) is shorter than the best one found,
 * which is then the plan, except when, with delays, its holds could not
 * reproduce it (realise).
 */
static bool
branch_and_bound(Search *S, bool delays)
{
	PfGraph    *g = S->g;
	BB			bb;
	int			fpos;
	int			nf = 0;
	int			cpos;
	int			v;

	memset(&bb, 0, sizeof(bb));
	bb.S = S;
	bb.g = g;
	bb.cap = S->cap;
	bb.rules = g->nrules > 0;
	bb.delays = delays;
	bb.npred = palloc(sizeof(int) * S->n);
	bb.start = palloc(sizeof(int64) * S->n);
	bb.finish = palloc(sizeof(int64) * S->n);
	bb.run = palloc(sizeof(int) * S->n);
	bb.fresh = palloc(sizeof(int) * S->n);
	bb.rule_running = palloc0(sizeof(int) * Max(g->nrules, 1));
	bb.arena_cap = 4 * S->n + 64;
	bb.arena = palloc(sizeof(int) * bb.arena_cap);
	bb.prio = S->best_key;
	bb.best = S->best;
	bb.best_start = palloc(sizeof(int64) * S->n);
	for (v = 0; v < S->n; v++)
	{
		bb.npred[v] = g->pred_off[v + 1] - g->pred_off[v];
		bb.start[v] = -1;
		if (g->runs[v])
			bb.work_left += g->cost[v];
	}

	/* time 0: the nodes without predecessors, as if released by a finish */
	fpos = bb_alloc(&bb, 0);
	for (v = 0; v < S->n; v++)
		if (bb.npred[v] == 0 && !g->runs[v])
		{
			bb.arena[bb_alloc(&bb, 1)] = v;
			bb.start[v] = bb.finish[v] = 0;
			nf++;
		}
	(void) bb_release(&bb, 0, fpos, nf);
	cpos = bb_alloc(&bb, 0);
	for (v = 0; v < S->n; v++)
		if (bb.npred[v] == 0 && g->runs[v])
			bb.arena[bb_alloc(&bb, 1)] = v;
	for (v = 0; v < bb.nfresh; v++)
		bb.arena[bb_alloc(&bb, 1)] = bb.fresh[v];
	qsort_arg(bb.arena + cpos, bb.arena_len - cpos, sizeof(int), cmp_prio, (void *) bb.prio);
	bb_level(&bb, 0, cpos, bb.arena_len - cpos);

	/* a schedule with delays: realised by ranks and holds */
	if (bb.best < S->best && delays)
	{
		for (v = 0; v < S->n; v++)
		{
			S->tstart[v] = bb.best_start[v];
			S->tfinish[v] = bb.best_start[v] + (g->runs[v] ? g->cost[v] : 0);
		}
		S->budget = Max(S->budget, PF_LS_UNITS(S) * 8);	/* (realising it is cheap) */
		if (realise(S, S->tstart, S->tfinish) > bb.best)
			bb.aborted = true;
	}
	/* a shorter plan: the list schedule whose key is its start times reversed */
	else if (bb.best < S->best)
	{
		int64		mk;

		for (v = 0; v < S->n; v++)
			S->key[v] = bb.best - bb.best_start[v];
		mk = forward(S, S->key);
		Assert(mk == bb.best);
		(void) mk;
	}
	pfree(bb.npred);
	pfree(bb.start);
	pfree(bb.finish);
	pfree(bb.run);
	pfree(bb.fresh);
	pfree(bb.rule_running);
	pfree(bb.arena);
	pfree(bb.best_start);
	return !bb.aborted;
}

/* ----------------------------------------------------------------
 * Slack
 * ----------------------------------------------------------------
 */

typedef struct SlackSort
{
	const int64 *start;
	const int  *topo_pos;
} SlackSort;

/* Later start first; among equal starts, later in topological order first. */
static int
cmp_start_desc(const void *a, const void *b, void *arg)
{
	SlackSort  *ss = (SlackSort *) arg;
	int			x = *(const int *) a;
	int			y = *(const int *) b;

	if (ss->start[x] != ss->start[y])
		return ss->start[x] > ss->start[y] ? -1 : 1;
	return ss->topo_pos[y] - ss->topo_pos[x];
}

static int
cmp_finish(const void *a, const void *b, void *arg)
{
	const int64 *finish = (const int64 *) arg;
	int			x = *(const int *) a;
	int			y = *(const int *) b;

	if (finish[x] != finish[y])
		return finish[x] < finish[y] ? -1 : 1;
	return x - y;
}

/*
 * Slack in the capped schedule: the latest start of each node such that the
 * makespan does not move, counting both its successors in the graph and the
 * stages that were waiting for the capacity it freed (a stage that started
 * later than its dependencies allowed, exactly when others finished, waited
 * for them).  Without contention this is the classic critical-path float.
 */
static void
compute_slack(PfGraph *g, PfSchedule *s)
{
	int			n = g->nnodes;
	int		   *order = palloc(sizeof(int) * Max(n, 1));
	int		   *byfin = palloc(sizeof(int) * Max(n, 1));
	int		   *topo_pos = palloc(sizeof(int) * Max(n, 1));
	int64	   *ls = palloc(sizeof(int64) * Max(n, 1));
	int64	   *rmin = palloc(sizeof(int64) * Max(n, 1));
	SlackSort	ss;
	int			i;

	for (i = 0; i < n; i++)
	{
		topo_pos[g->topo[i]] = i;
		order[i] = byfin[i] = i;
		rmin[i] = s->makespan;
	}
	ss.start = s->start;
	ss.topo_pos = topo_pos;
	qsort_arg(order, n, sizeof(int), cmp_start_desc, &ss);
	qsort_arg(byfin, n, sizeof(int), cmp_finish, s->finish);

	s->slack = palloc(sizeof(int64) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		int			v = order[i];
		int64		lf = rmin[v];
		int64		ready = 0;
		int			k;

		for (k = g->succ_off[v]; k < g->succ_off[v + 1]; k++)
			lf = Min(lf, ls[g->succ[k]]);
		ls[v] = lf - g->cost[v];
		s->slack[v] = Max(ls[v] - s->start[v], 0);

		for (k = g->pred_off[v]; k < g->pred_off[v + 1]; k++)
			ready = Max(ready, s->finish[g->pred[k]]);
		if (g->runs[v] && !g->wait[v] && s->start[v] > ready)
		{
			/* v waited for capacity: whatever finished as it started held it */
			int			lo = 0;
			int			hi = n;

			while (lo < hi)
			{
				int			mid = (lo + hi) / 2;

				if (s->finish[byfin[mid]] < s->start[v])
					lo = mid + 1;
				else
					hi = mid;
			}
			for (; lo < n && s->finish[byfin[lo]] == s->start[v]; lo++)
				if (g->runs[byfin[lo]] && !g->wait[byfin[lo]])
					rmin[byfin[lo]] = Min(rmin[byfin[lo]], ls[v]);
		}
	}
	pfree(order);
	pfree(byfin);
	pfree(topo_pos);
	pfree(ls);
	pfree(rmin);
}

/* ----------------------------------------------------------------
 * The plan
 * ----------------------------------------------------------------
 */

/* A perturbed priority for sample i: around the bottom levels or the best key. */
static void
sample_key(Search *S, int64 i)
{
	int			mode = (int) (i % 4);
	int			v;

	for (v = 0; v < S->n; v++)
	{
		int64		b = S->bottom[v];
		uint64		r = next_rand(&S->rng);

		switch (mode)
		{
			case 0:				/* small noise on the critical path */
				S->key[v] = b + (int64) (r % (uint64) (b / 6 + 1));
				break;
			case 1:				/* large noise */
				S->key[v] = b + (int64) (r % (uint64) (b + 1));
				break;
			case 2:				/* longer stages first among near equals */
				S->key[v] = b + (int64) (r % (uint64) (S->g->cost[v] + 1));
				break;
			default:			/* a neighbour of the best plan */
				S->key[v] = S->best_key[v] + (int64) (r % (uint64) (S->best / 16 + 1));
				break;
		}
	}
}

/*
 * Plan the graph under a cap.  PF_POLICY_CP is one list schedule in
 * critical-path order (bottom level first), PF_POLICY_FIFO one in the order
 * stages became ready.  PF_POLICY_BEST starts from the critical-path
 * schedule and, within parflow.plan_effort, raises the lower bound,
 * improves the schedule forward and backward, samples perturbed priorities
 * (each improved the same way), and searches the dispatch orders of small
 * graphs; it stops as soon as a plan meets the lower bound.  Every
 * schedule is a list schedule: the plan's ranks are the key of the best.
 */
PfSchedule *
pf_schedule(PfGraph *g, int cap, PfPolicy policy)
{
	PfSchedule *s = palloc0(sizeof(PfSchedule));
	Search		S;
	int			n = g->nnodes;
	int			sz = Max(n, 1);
	int64	   *rule_work = palloc0(sizeof(int64) * Max(g->nrules, 1));
	int		   *lvl = palloc0(sizeof(int) * sz);
	int64	   *bottom;
	int64		budget0;
	bool		exhaustive = false;
	int64		slot_work = 0;
	int			i;

	if (g->topo == NULL)
		pf_graph_check(g, NULL);

	s->cap = cap;
	s->bottom = bottom = palloc0(sizeof(int64) * sz);
	s->wave = palloc0(sizeof(int) * sz);

	memset(&S, 0, sizeof(S));
	S.g = g;
	S.cap = cap;
	S.n = n;
	S.fwd.succ_off = g->succ_off;
	S.fwd.succ = g->succ;
	S.fwd.pred_off = g->pred_off;
	S.fwd.pred = g->pred;
	S.bwd.succ_off = g->pred_off;
	S.bwd.succ = g->pred;
	S.bwd.pred_off = g->succ_off;
	S.bwd.pred = g->succ;
	S.bottom = bottom;
	S.head = palloc0(sizeof(int64) * sz);
	S.rng = UINT64CONST(0x5eed);

	/* bottom levels, in reverse topological order */
	for (i = n - 1; i >= 0; i--)
	{
		int			v = g->topo[i];
		int64		best = 0;
		int			k;

		for (k = g->succ_off[v]; k < g->succ_off[v + 1]; k++)
			best = Max(best, bottom[g->succ[k]]);
		bottom[v] = g->cost[v] + best;
		s->critical_path = Max(s->critical_path, bottom[v]);
	}
	/* heads, and waves: the number of running stages on the longest chain up to v */
	for (i = 0; i < n; i++)
	{
		int			v = g->topo[i];
		int			k;

		for (k = g->pred_off[v]; k < g->pred_off[v + 1]; k++)
		{
			int			p = g->pred[k];

			lvl[v] = Max(lvl[v], lvl[p] + (g->runs[p] ? 1 : 0));
			S.head[v] = Max(S.head[v], S.head[p] + g->cost[p]);
		}
		if (g->runs[v])
			s->wave[v] = lvl[v] + 1;
	}

	/*
	 * Work and the simple bounds.  Every start and finish of a plan is a sum
	 * of estimates (a stage starts at 0 or when another one finishes), so
	 * the shortest plan is a multiple of their greatest common divisor: a
	 * bound rounds up to it.
	 */
	S.grain = 0;
	for (i = 0; i < g->nstages; i++)
	{
		int			k;

		s->total_work += g->cost[i];
		if (!g->wait[i])
			slot_work += g->cost[i];
		if (g->cost[i] > 0)
			S.grain = gcd64(g->cost[i], S.grain);
		for (k = g->srule_off[i]; k < g->srule_off[i + 1]; k++)
			rule_work[g->srule[k]] += g->cost[i];
	}
	S.grain = Max(S.grain, 1);
	/* (a wait stage's time is sequential time, but takes no slot) */
	S.lb = Max(s->critical_path, ceil_div(slot_work, cap));
	for (i = 0; i < g->nrules; i++)
		if (g->rule_cap[i] > 0)
			S.lb = Max(S.lb, ceil_div(rule_work[i], Min(g->rule_cap[i], cap)));
	S.lb = round_up(S.lb, S.grain);

	/* the search's space */
	S.best = PG_INT64_MAX;
	S.best_start = palloc(sizeof(int64) * sz);
	S.best_finish = palloc(sizeof(int64) * sz);
	S.best_key = palloc(sizeof(int64) * sz);
	S.key = palloc(sizeof(int64) * sz);
	S.start = palloc(sizeof(int64) * sz);
	S.finish = palloc(sizeof(int64) * sz);
	S.bkey = palloc(sizeof(int64) * sz);
	S.bstart = palloc(sizeof(int64) * sz);
	S.bfinish = palloc(sizeof(int64) * sz);
	S.best_hold = palloc(sizeof(int) * sz);
	S.rkey = palloc(sizeof(int64) * sz);
	S.rhold = palloc(sizeof(int) * sz);
	S.rstart = palloc(sizeof(int64) * sz);
	S.rfinish = palloc(sizeof(int64) * sz);
	S.tstart = palloc(sizeof(int64) * sz);
	S.tfinish = palloc(sizeof(int64) * sz);
	S.order = palloc(sizeof(int) * sz);
	S.holdable = palloc0(sizeof(bool) * sz);
	S.topo_pos = palloc(sizeof(int) * sz);
	S.awaitable = palloc(sizeof(bool) * sz);
	for (i = 0; i < n; i++)
	{
		S.best_hold[i] = -1;
		S.topo_pos[g->topo[i]] = i;
		S.holdable[i] = i < g->nstages && g->runs[i] && !g->wait[i] && !g->map[i] && g->cost[i] > 0;
	}
	/* (in topological order: whether a wait, sub-workflow or map stage comes before) */
	{
		bool	   *behind = palloc0(sizeof(bool) * sz);

		for (i = 0; i < n; i++)
		{
			int			v = g->topo[i];
			int			k;

			for (k = g->pred_off[v]; k < g->pred_off[v + 1] && !behind[v]; k++)
			{
				int			p = g->pred[k];

				behind[v] = behind[p] || (g->runs[p] && (g->wait[p] || g->map[p]));
			}
			S.awaitable[v] = S.holdable[v] && !behind[v];
		}
		pfree(behind);
	}
	if (policy == PF_POLICY_BEST && n <= PF_SERIAL_MAX_NODES)
	{
		S.prof = palloc(sizeof(Profile) * (g->nrules + 1));
		for (i = 0; i <= g->nrules; i++)
		{
			S.prof[i].t = palloc(sizeof(int64) * (2 * sz + 2));
			S.prof[i].u = palloc(sizeof(int) * (2 * sz + 2));
			S.prof[i].k = 0;
			S.prof[i].cap = i < g->nrules ? g->rule_cap[i] : cap;
		}
	}
	ls_work_init(&S.w, g);
	budget0 = policy == PF_POLICY_BEST ? (int64) pf_plan_effort * PF_UNITS_PER_MS : 0;
	S.budget = budget0;

	/* 1. the critical-path order, or first come first served */
	for (i = 0; i < n; i++)
		S.key[i] = bottom[i];
	if (policy == PF_POLICY_FIFO)
	{
		S.best = list_schedule(&S.w, g, &S.fwd, cap, S.key, true, S.best_start, S.best_finish);
		memcpy(S.best_key, S.key, sizeof(int64) * sz);
		S.schedules = 1;
	}
	else
		(void) forward(&S, S.key);

	if (policy == PF_POLICY_BEST && S.best > S.lb && S.budget > 0)
	{
		int64		mk = S.best;
		int64	   *cp_start = palloc(sizeof(int64) * sz);
		int64	   *cp_finish = palloc(sizeof(int64) * sz);
		int			variant;
		int64		stop;
		int64		k;

		memcpy(cp_start, S.best_start, sizeof(int64) * sz);
		memcpy(cp_finish, S.best_finish, sizeof(int64) * sz);

		/* 2. a stronger bound may prove it optimal already */
		strong_bounds(&S, budget0 / PF_BOUND_SHARE);

		/* 3. forward-backward improvement of it and of two tie-breaking variants */
		improve_fb(&S, mk);
		for (variant = 1; variant <= 2 && S.best > S.lb && S.budget >= PF_LS_UNITS(&S); variant++)
		{
			int			v;

			for (v = 0; v < n; v++)
			{
				int64		out = 0;

				if (variant == 1)
					out = 2 * g->cost[v];	/* longer stages first among equals */
				else
				{
					int			e;

					for (e = g->succ_off[v]; e < g->succ_off[v + 1]; e++)
						out += g->cost[g->succ[e]];	/* stages that unlock more work */
				}
				S.key[v] = bottom[v] + out / 2;
			}
			improve_fb(&S, forward(&S, S.key));
		}

		/*
		 * 4. biased random sampling, each sample improved forward and
		 * backward; half the budget is kept for the exact search when the
		 * graph is small enough for it (step 4b takes from that half), else
		 * enough for step 4b
		 */
		stop = n <= PF_BB_MAX_NODES && !g->has_wait ? budget0 / PF_SAMPLE_SHARE : 0;
		if (stop == 0 && pf_plan_holds && n <= PF_SERIAL_MAX_NODES)
			stop = PF_SERIAL_RESERVE * (PF_LS_UNITS(&S) + sort_units(n));
		for (k = 0; S.best > S.lb && S.budget > stop + PF_LS_UNITS(&S); k++)
		{
			sample_key(&S, k);
			improve_fb(&S, forward(&S, S.key));
			CHECK_FOR_INTERRUPTS();
		}

		/*
		 * 4b. forward-backward improvement in the serial way, of the
		 * critical-path schedule and of the best list schedule: its
		 * schedules may keep a slot idle, realised with holds
		 */
		if (S.best > S.lb && pf_plan_holds)
			improve_serial(&S, cp_start, cp_finish);
		if (S.best > S.lb && S.nheld == 0 && pf_plan_holds)
		{
			memcpy(cp_start, S.best_start, sizeof(int64) * sz);
			memcpy(cp_finish, S.best_finish, sizeof(int64) * sz);
			improve_serial(&S, cp_start, cp_finish);
		}

		/*
		 * 5. branch and bound over the dispatch orders (its times are those
		 * of stages that take a slot), with half of what is left, then over
		 * every schedule, idle slots included, with the rest: only that one
		 * proves a plan optimal
		 */
		if (S.best > S.lb && n <= PF_BB_MAX_NODES && S.budget > 0 && !g->has_wait)
		{
			int64		kept = S.budget / 2;

			bool		orders_done;

			S.budget -= kept;
			orders_done = branch_and_bound(&S, false);
			S.budget = Max(S.budget, 0) + kept;
			if (!pf_plan_holds)
				exhaustive = orders_done;	/* (no plan without holds is shorter) */
			else if (S.best > S.lb && S.budget > 0)
				exhaustive = branch_and_bound(&S, true);
		}
		pfree(cp_start);
		pfree(cp_finish);
	}

	if (n == 0)
		S.best = 0;
	s->makespan = S.best;
	Assert(S.lb <= S.best);
	s->lower_bound = Min(S.lb, S.best);
	s->start = S.best_start;
	s->finish = S.best_finish;
	s->rank = S.best_key;
	s->hold = S.best_hold;
	s->nheld = S.nheld;
	s->proof = S.best <= S.lb ? PF_PROOF_BOUND : exhaustive ? PF_PROOF_SEARCH : PF_PROOF_NONE;
	s->schedules = S.schedules;
	s->units = S.units_used;
	compute_slack(g, s);

	pfree(rule_work);
	pfree(lvl);
	pfree(S.head);
	pfree(S.key);
	pfree(S.start);
	pfree(S.finish);
	pfree(S.bkey);
	pfree(S.bstart);
	pfree(S.bfinish);
	return s;
}
