/*
 * test/bench/stgexact.c -- the exact optimum of a task graph on m identical
 * processors (P|prec|Cmax), computed apart from parflow (no code shared with
 * src/), to check the planner's lower bound and the published STG optima.
 *
 *   cc -O2 -o stgexact stgexact.c && ./stgexact [-n] graph.stg m [T|0 [nodes]]
 *
 * Input: the STG format (`id cost npred pred...` a line, `#` lines ignored,
 * a leading task-count line and the dummy entry task 0 skipped; tasks of
 * cost 0 take no processor and no time).
 *
 * For T = max(critical path, ceil(work / m)), T + 1, ... (or T alone when
 * given and not 0) it decides whether a schedule of length <= T exists, by a depth
 * first search over every schedule whose starts are 0 or a finish time
 * (every schedule can be shifted left into one of those, so none is
 * missed): a node is a moment t (0 or a finish), and its children are ALL
 * the sets of ready tasks that fit the free processors, the empty set
 * included when a task runs -- a processor may stay idle while a task is
 * ready, unlike a list schedule.  A node is cut when it cannot meet T:
 *   - a task's earliest start (from its predecessors' starts and finishes)
 *     plus its bottom level exceeds T;
 *   - the work not done exceeds m * (T - t);
 *   - timetabling: the compulsory parts (a running task's [t, finish); a
 *     task with earliest start e, cost p and latest start l = T - bottom
 *     level must run in [l, e + p) when l < e + p) overlap more than m deep;
 *   - the same state (t, tasks started, the running tasks' finishes) failed
 *     before (a table of failed states, full keys, no hashing shortcuts).
 * With -n, only list schedules (non-delay: no processor idle while a task is
 * ready, which is what a dispatcher following ranks produces) are searched:
 * a ready task is left out only when the other ready ones fill the free
 * processors.  Its optimum is the best any dispatch order gives.
 * These are all necessary conditions, so "no schedule" is a proof; a
 * schedule found is printed and checked (precedence and processors) before
 * it is reported.  Output: one line per T tried, then the result:
 *
 *   T 133: infeasible (nodes 1)
 *   T 134: schedule (nodes 57)
 *   optimum 134
 *   task start finish processor, one a line
 *
 * nodes caps the search per T (default 50,000,000): "unknown" past it.
 * STGEXACT_NO_TIMETABLE=1 leaves the timetabling cut out (a slower search
 * that rests on the simplest cuts alone).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

#define MAXN 512
#define MAXM 64

static int	n;					/* tasks 0 .. n-1 (file ids 1 .. n) */
static int	cost[MAXN];
static int	npred[MAXN];
static int *pred[MAXN];
static int	nsucc[MAXN];
static int *succ[MAXN];
static int	topo[MAXN];
static int	bottom[MAXN];
static int	m;
static long T;

static long start[MAXN];		/* -1: not started */
static long fin[MAXN];
static long nodes;
static long node_cap = 50000000L;
static int	words;				/* 64-bit words of a task set */
static int	nondelay = 0;		/* -n: list schedules only */
static int	timetable = 1;		/* STGEXACT_NO_TIMETABLE=1 turns that cut off */

/* failed states: open addressing on full keys */
typedef struct
{
	uint64_t	h;
	long		t;
	uint64_t   *key;			/* words of the started set, then finishes */
	int			klen;
} Entry;

static Entry *table;
static long table_cap, table_len;

static uint64_t
mix(uint64_t h, uint64_t x)
{
	h ^= x + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
	return h;
}

/* The state at t: the started set, then each running task's finish. */
static int
state_key(long t, uint64_t *key)
{
	int			k = words;
	int			v;

	memset(key, 0, sizeof(uint64_t) * words);
	for (v = 0; v < n; v++)
		if (start[v] >= 0)
		{
			key[v / 64] |= 1ULL << (v % 64);
			if (fin[v] > t)
				key[k++] = ((uint64_t) v << 32) | (uint64_t) (fin[v] - t);
		}
	return k;
}

static uint64_t
key_hash(long t, const uint64_t *key, int klen)
{
	uint64_t	h = (uint64_t) t;
	int			i;

	for (i = 0; i < klen; i++)
		h = mix(h, key[i]);
	return h;
}

static Entry *
lookup(uint64_t h, long t, const uint64_t *key, int klen, int insert)
{
	long		i;

	if (insert && 2 * (table_len + 1) > table_cap)
	{
		Entry	   *old = table;
		long		oldcap = table_cap,
					j;

		table_cap = table_cap ? 2 * table_cap : 1 << 16;
		table = calloc(table_cap, sizeof(Entry));
		table_len = 0;
		for (j = 0; j < oldcap; j++)
			if (old[j].key)
			{
				long		p = (long) (old[j].h & (uint64_t) (table_cap - 1));

				while (table[p].key)
					p = (p + 1) & (table_cap - 1);
				table[p] = old[j];
				table_len++;
			}
		free(old);
	}
	if (table_cap == 0)
		return NULL;
	for (i = (long) (h & (uint64_t) (table_cap - 1));; i = (i + 1) & (table_cap - 1))
	{
		Entry	   *e = &table[i];

		if (!e->key)
		{
			if (!insert)
				return NULL;
			e->h = h;
			e->t = t;
			e->klen = klen;
			e->key = malloc(sizeof(uint64_t) * klen);
			memcpy(e->key, key, sizeof(uint64_t) * klen);
			table_len++;
			return e;
		}
		if (e->h == h && e->t == t && e->klen == klen &&
			memcmp(e->key, key, sizeof(uint64_t) * klen) == 0)
			return e;
	}
}

static void
table_clear(void)
{
	long		i;

	for (i = 0; i < table_cap; i++)
		free(table[i].key);
	free(table);
	table = NULL;
	table_cap = table_len = 0;
}

/* Whether the partial schedule at t can still meet T (necessary tests). */
static int
feasible(long t)
{
	static long est[MAXN];
	static int	delta[2 * MAXN + 2];
	static long at[2 * MAXN + 2];
	long		work = 0;
	int			nev = 0;
	int			i,
				j,
				v;

	for (i = 0; i < n; i++)
	{
		v = topo[i];
		if (start[v] >= 0)
		{
			est[v] = start[v];
			if (fin[v] > t)
			{
				work += fin[v] - t;
				if (cost[v] > 0)
				{
					at[nev] = t;
					delta[nev++] = 1;
					at[nev] = fin[v];
					delta[nev++] = -1;
				}
			}
			if (fin[v] - cost[v] + bottom[v] > T)
				return 0;
			continue;
		}
		est[v] = t;
		for (j = 0; j < npred[v]; j++)
		{
			int			u = pred[v][j];
			long		e = start[u] >= 0 ? fin[u] : est[u] + cost[u];

			if (e > est[v])
				est[v] = e;
		}
		if (est[v] + bottom[v] > T)
			return 0;
		work += cost[v];
		if (cost[v] > 0 && T - bottom[v] < est[v] + cost[v])
		{
			at[nev] = T - bottom[v];
			delta[nev++] = 1;
			at[nev] = est[v] + cost[v];
			delta[nev++] = -1;
		}
	}
	if (work > (long) m * (T - t))
		return 0;
	if (!timetable)
		return 1;
	/* the compulsory parts' depth, ends before starts at equal times */
	for (i = 1; i < nev; i++)
	{
		long		a = at[i];
		int			d = delta[i];

		for (j = i - 1; j >= 0 && (at[j] > a || (at[j] == a && delta[j] > d)); j--)
		{
			at[j + 1] = at[j];
			delta[j + 1] = delta[j];
		}
		at[j + 1] = a;
		delta[j + 1] = d;
	}
	{
		int			depth = 0;

		for (i = 0; i < nev; i++)
			if ((depth += delta[i]) > m)
				return 0;
	}
	return 1;
}

/* Tasks of cost 0 whose predecessors are done by t finish at t. */
static int
settle_zero(long t, int *list)
{
	int			k = 0;
	int			changed = 1;
	int			i,
				j;

	while (changed)
	{
		changed = 0;
		for (i = 0; i < n; i++)
		{
			int			v = topo[i],
						ok = 1;

			if (start[v] >= 0 || cost[v] != 0)
				continue;
			for (j = 0; j < npred[v] && ok; j++)
				ok = start[pred[v][j]] >= 0 && fin[pred[v][j]] <= t;
			if (ok)
			{
				start[v] = fin[v] = t;
				list[k++] = v;
				changed = 1;
			}
		}
	}
	return k;
}

static int	search(long t);

/* Choose which of ready[pos ..] start at t, free processors left. */
static int
pick(long t, int *ready, int nr, int pos, int free, int running)
{
	int			v;

	if (pos == nr || free == 0)
	{
		long		tnext = -1;
		int			i;

		if (running == 0)
			return 0;			/* nothing runs and nothing starts: no progress */
		for (i = 0; i < n; i++)
			if (start[i] >= 0 && fin[i] > t && (tnext < 0 || fin[i] < tnext))
				tnext = fin[i];
		return search(tnext);
	}
	v = ready[pos];
	start[v] = t;
	fin[v] = t + cost[v];
	if (pick(t, ready, nr, pos + 1, free - 1, running + 1))
		return 1;
	start[v] = -1;
	/* a list schedule leaves a ready task out only when others fill the slots */
	if (nondelay && nr - pos - 1 < free)
		return 0;
	return pick(t, ready, nr, pos + 1, free, running);
}

static int
cmp_latest(const void *a, const void *b)
{
	int			x = *(const int *) a,
				y = *(const int *) b;

	if (bottom[x] != bottom[y])
		return bottom[y] - bottom[x];
	return x - y;
}

static int
search(long t)
{
	int			zero[MAXN];
	int			ready[MAXN];
	uint64_t	key[MAXN / 64 + MAXM + 2];
	int			nz,
				nr = 0,
				running = 0,
				left = 0,
				klen,
				ok,
				i,
				j;
	uint64_t	h;

	if (++nodes > node_cap)
		return -1;
	nz = settle_zero(t, zero);
	for (i = 0; i < n; i++)
	{
		if (start[i] < 0)
		{
			left++;
			ok = 1;
			for (j = 0; j < npred[i] && ok; j++)
				ok = start[pred[i][j]] >= 0 && fin[pred[i][j]] <= t;
			if (ok)
				ready[nr++] = i;
		}
		else if (fin[i] > t)
			running++;
	}
	klen = state_key(t, key);
	h = key_hash(t, key, klen);
	ok = 0;
	if (left == 0)
		ok = feasible(t);		/* every task placed: the last ones end by T */
	else if (feasible(t) && !lookup(h, t, key, klen, 0))
	{
		qsort(ready, nr, sizeof(int), cmp_latest);
		ok = pick(t, ready, nr, 0, m - running, running);
		if (ok < 0)
			return -1;
		if (!ok)
			(void) lookup(h, t, key, klen, 1);
	}
	if (!ok)
		for (i = 0; i < nz; i++)
			start[zero[i]] = -1;
	return ok;
}

/* Check a complete schedule and give each task a processor. */
static int
check_and_print(int print)
{
	static int	proc[MAXN];
	long		busy_until[MAXM];
	int			order[MAXN];
	long		mk = 0;
	int			i,
				j,
				k;

	for (i = 0; i < n; i++)
	{
		if (start[i] < 0 || fin[i] != start[i] + cost[i])
			return 0;
		for (j = 0; j < npred[i]; j++)
			if (fin[pred[i][j]] > start[i])
				return 0;
		if (fin[i] > mk)
			mk = fin[i];
		order[i] = i;
	}
	if (mk > T)
		return 0;
	for (i = 1; i < n; i++)		/* by start */
	{
		int			x = order[i];

		for (j = i - 1; j >= 0 && start[order[j]] > start[x]; j--)
			order[j + 1] = order[j];
		order[j + 1] = x;
	}
	for (k = 0; k < m; k++)
		busy_until[k] = 0;
	for (i = 0; i < n; i++)
	{
		int			v = order[i];

		proc[v] = -1;
		if (cost[v] == 0)
			continue;
		for (k = 0; k < m; k++)
			if (busy_until[k] <= start[v])
			{
				busy_until[k] = fin[v];
				proc[v] = k;
				break;
			}
		if (proc[v] < 0)
			return 0;			/* more than m tasks at once */
	}
	if (print)
	{
		long		idle_at = -1,
					idle_ready = 0;
		int			idle_task = -1,
					idle_busy = 0;

		/* a processor idle while a task is ready: at its ready time or a finish before its start */
		for (i = 0; i < n && idle_task < 0; i++)
		{
			long		r = 0;

			if (cost[i] == 0)
				continue;
			for (j = 0; j < npred[i]; j++)
				if (fin[pred[i][j]] > r)
					r = fin[pred[i][j]];
			for (k = -1; k < n && idle_task < 0; k++)
			{
				long		x = k < 0 ? r : fin[k];
				int			busy = 0,
							u;

				if (x < r || x >= start[i])
					continue;
				for (u = 0; u < n; u++)
					if (cost[u] > 0 && start[u] <= x && fin[u] > x)
						busy++;
				if (busy < m)
				{
					idle_at = x;
					idle_ready = r;
					idle_task = i;
					idle_busy = busy;
				}
			}
		}
		if (idle_task < 0)
			printf("non-delay: no processor is idle while a task is ready\n");
		else
			printf("delay: task %d is ready at %ld and starts at %ld, but at %ld only %d of %d processors are busy\n",
				   idle_task + 1, idle_ready, start[idle_task], idle_at,
				   idle_busy, m);
		for (i = 0; i < n; i++)
			printf("%d %ld %ld %d\n", order[i] + 1, start[order[i]], fin[order[i]], proc[order[i]]);
	}
	return 1;
}

int
main(int argc, char **argv)
{
	FILE	   *f;
	char		line[8192];
	long		work = 0,
				cp = 0,
				lo,
				hi;
	int			indeg[MAXN];
	int			i,
				j,
				k;

	if (argc > 1 && strcmp(argv[1], "-n") == 0)
	{
		nondelay = 1;
		argv++;
		argc--;
	}
	if (argc < 3)
	{
		fprintf(stderr, "usage: %s [-n] graph.stg m [T|0 [nodes]]\n", argv[0]);
		return 2;
	}
	m = atoi(argv[2]);
	if (getenv("STGEXACT_NO_TIMETABLE") && atoi(getenv("STGEXACT_NO_TIMETABLE")))
		timetable = 0;
	if (m < 1 || m > MAXM)
		return 2;
	if (argc > 4)
		node_cap = atol(argv[4]);
	if (!(f = fopen(argv[1], "r")))
	{
		perror(argv[1]);
		return 2;
	}
	while (fgets(line, sizeof line, f))
	{
		int			id,
					c,
					np,
					off,
					p;
		char	   *s = line;

		if (line[0] == '#' || sscanf(s, "%d %d %d%n", &id, &c, &np, &off) < 3)
			continue;
		s += off;
		if (id == 0)
			continue;			/* the dummy entry */
		if (id > MAXN || np < 0)
			return 2;
		id--;
		cost[id] = c;
		pred[id] = malloc(sizeof(int) * (np + 1));
		npred[id] = 0;
		for (j = 0; j < np; j++)
		{
			if (sscanf(s, "%d%n", &p, &off) < 1)
				return 2;
			s += off;
			if (p > 0)
				pred[id][npred[id]++] = p - 1;
		}
		if (id + 1 > n)
			n = id + 1;
	}
	fclose(f);
	words = (n + 63) / 64;
	for (i = 0; i < n; i++)
		succ[i] = malloc(sizeof(int) * n);
	for (i = 0; i < n; i++)
		for (j = 0; j < npred[i]; j++)
			succ[pred[i][j]][nsucc[pred[i][j]]++] = i;
	/* topological order (Kahn), bottom levels */
	for (i = 0; i < n; i++)
		indeg[i] = npred[i];
	for (i = 0, k = 0; i < n; i++)
		if (indeg[i] == 0)
			topo[k++] = i;
	for (i = 0; i < k; i++)
		for (j = 0; j < nsucc[topo[i]]; j++)
			if (--indeg[succ[topo[i]][j]] == 0)
				topo[k++] = succ[topo[i]][j];
	if (k != n)
	{
		fprintf(stderr, "cycle\n");
		return 2;
	}
	for (i = n - 1; i >= 0; i--)
	{
		int			v = topo[i],
					b = 0;

		for (j = 0; j < nsucc[v]; j++)
			if (bottom[succ[v][j]] > b)
				b = bottom[succ[v][j]];
		bottom[v] = cost[v] + b;
		if (bottom[v] > cp)
			cp = bottom[v];
		work += cost[v];
	}
	lo = cp > (work + m - 1) / m ? cp : (work + m - 1) / m;
	printf("tasks %d work %ld critical_path %ld m %d simple_bound %ld schedules %s\n", n, work, cp, m, lo,
		   nondelay ? "non-delay" : "all");
	hi = work + 1;
	if (argc > 3 && atol(argv[3]) > 0)
		lo = hi = atol(argv[3]);
	for (T = lo; T <= hi; T++)
	{
		int			r;

		for (i = 0; i < n; i++)
			start[i] = -1;
		nodes = 0;
		table_clear();
		r = search(0);
		if (r > 0 && !check_and_print(0))
		{
			printf("T %ld: INTERNAL ERROR: the schedule found does not check\n", T);
			return 1;
		}
		printf("T %ld: %s (nodes %ld)\n", T, r > 0 ? "schedule" : r == 0 ? "infeasible" : "unknown: node cap", nodes);
		if (r < 0)
			return 3;
		if (r > 0)
		{
			printf("optimum %ld\n", T);
			(void) check_and_print(1);
			return 0;
		}
	}
	return 1;
}
