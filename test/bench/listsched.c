/*
 * test/bench/listsched.c -- the planner benchmark's baselines, computed
 * apart from parflow (no code shared with src/): list scheduling of a task
 * graph on m identical processors in critical-path order and in FIFO order,
 * and critical-path list scheduling followed by forward-backward improvement
 * (double justification: Li and Willis 1992; Valls, Ballestin and Quintanilla,
 * "Justification and RCPSP: a technique that pays", EJOR 165(2), 2005).
 *
 *   cc -O2 -o listsched listsched.c && ./listsched graph.stg 4 16 64
 *
 * Input: a graph in the STG format (test/bench/stg2sql.awk describes it):
 * `id cost npred pred...` a line, `#` lines ignored, a leading task-count
 * line and the dummy entry task 0 skipped.  Tasks of cost 0 take no
 * processor.  Output, one line per m:
 *
 *   m tasks work critical_path lower_bound cp fifo fbi fbi_order
 *
 * lower_bound = max(critical path, ceil(work / m)).  cp and fifo are
 * non-delay list schedules (whenever a processor is free, the ready task of
 * highest priority starts: the largest bottom level, or the earliest ready;
 * lower id first among equals).  fbi starts from the cp schedule and
 * repeats, while the makespan shrinks: right-justify every task in order of
 * decreasing finish (as late as the processors and its successors allow,
 * in the serial way, which may leave a processor idle), then left-justify
 * in order of increasing start.  fbi_order is the non-delay list schedule
 * in the order of the fbi schedule's starts: equal to fbi when that schedule
 * never keeps a processor idle while a task is ready (a dispatcher that
 * starts work whenever it can then follows it), longer when it does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef long long ll;

static int n;					/* tasks, numbered 0..n-1 in file order */
static ll  *cost;
static int *poff, *pred, *soff, *succ;
static int *topo;				/* a topological order */
static int *topo_pos;

static void *
xalloc(size_t sz)
{
	void	   *p = calloc(1, sz ? sz : 1);

	if (!p)
	{
		fprintf(stderr, "listsched: out of memory\n");
		exit(1);
	}
	return p;
}

/* Read the graph; exits on malformed input. */
static void
read_graph(const char *path)
{
	FILE	   *f = fopen(path, "r");
	char		line[65536];
	int			cap = 1024;
	int			ecap = 4096;
	int			ne = 0;
	ll		   *ids = xalloc(sizeof(ll) * cap);
	ll		  **plist = xalloc(sizeof(ll *) * cap);
	int		   *pn = xalloc(sizeof(int) * cap);
	int		   *efrom, *eto;
	int			i, k;

	if (!f)
	{
		perror(path);
		exit(1);
	}
	cost = xalloc(sizeof(ll) * cap);
	n = 0;
	while (fgets(line, sizeof(line), f))
	{
		ll			v[4096];
		int			nv = 0;
		char	   *p = line, *end;

		if (line[0] == '#')
			continue;
		for (;;)
		{
			ll			x = strtoll(p, &end, 10);

			if (end == p)
				break;
			if (nv < 4096)
				v[nv++] = x;
			p = end;
		}
		if (nv == 0 || (nv == 1 && n == 0))
			continue;
		if (nv < 3 || v[2] != nv - 3)
		{
			fprintf(stderr, "listsched: %s: bad line: %s", path, line);
			exit(1);
		}
		if (v[0] == 0)
			continue;			/* the dummy entry task */
		if (n == cap)
		{
			cap *= 2;
			ids = realloc(ids, sizeof(ll) * cap);
			plist = realloc(plist, sizeof(ll *) * cap);
			pn = realloc(pn, sizeof(int) * cap);
			cost = realloc(cost, sizeof(ll) * cap);
			if (!ids || !plist || !pn || !cost)
				exit(1);
		}
		ids[n] = v[0];
		cost[n] = v[1];
		pn[n] = nv - 3;
		plist[n] = xalloc(sizeof(ll) * (nv - 3 + 1));
		memcpy(plist[n], v + 3, sizeof(ll) * (nv - 3));
		n++;
	}
	fclose(f);

	efrom = xalloc(sizeof(int) * ecap);
	eto = xalloc(sizeof(int) * ecap);
	for (i = 0; i < n; i++)
		for (k = 0; k < pn[i]; k++)
		{
			int			j;

			if (plist[i][k] == 0)
				continue;
			for (j = 0; j < n && ids[j] != plist[i][k]; j++)
				;
			if (j == n)
			{
				fprintf(stderr, "listsched: task %lld: unknown predecessor %lld\n", ids[i], plist[i][k]);
				exit(1);
			}
			if (ne == ecap)
			{
				ecap *= 2;
				efrom = realloc(efrom, sizeof(int) * ecap);
				eto = realloc(eto, sizeof(int) * ecap);
				if (!efrom || !eto)
					exit(1);
			}
			efrom[ne] = j;
			eto[ne++] = i;
		}
	poff = xalloc(sizeof(int) * (n + 1));
	soff = xalloc(sizeof(int) * (n + 1));
	pred = xalloc(sizeof(int) * ne);
	succ = xalloc(sizeof(int) * ne);
	for (i = 0; i < ne; i++)
	{
		poff[eto[i] + 1]++;
		soff[efrom[i] + 1]++;
	}
	for (i = 0; i < n; i++)
	{
		poff[i + 1] += poff[i];
		soff[i + 1] += soff[i];
	}
	{
		int		   *pf = xalloc(sizeof(int) * (n + 1));
		int		   *sf = xalloc(sizeof(int) * (n + 1));

		memcpy(pf, poff, sizeof(int) * (n + 1));
		memcpy(sf, soff, sizeof(int) * (n + 1));
		for (i = 0; i < ne; i++)
		{
			pred[pf[eto[i]]++] = efrom[i];
			succ[sf[efrom[i]]++] = eto[i];
		}
		free(pf);
		free(sf);
	}
	/* Kahn's algorithm */
	{
		int		   *indeg = xalloc(sizeof(int) * n);
		int			head = 0, tail = 0;

		topo = xalloc(sizeof(int) * n);
		topo_pos = xalloc(sizeof(int) * n);
		for (i = 0; i < n; i++)
			if ((indeg[i] = poff[i + 1] - poff[i]) == 0)
				topo[tail++] = i;
		while (head < tail)
		{
			int			u = topo[head++];

			for (k = soff[u]; k < soff[u + 1]; k++)
				if (--indeg[succ[k]] == 0)
					topo[tail++] = succ[k];
		}
		if (tail != n)
		{
			fprintf(stderr, "listsched: %s has a cycle\n", path);
			exit(1);
		}
		for (i = 0; i < n; i++)
			topo_pos[topo[i]] = i;
		free(indeg);
	}
}

/* ---- non-delay list scheduling (simple O(n^2): the graphs are small) ---- */

/*
 * prio: larger first (NULL: FIFO, the order in which tasks became ready).
 * Fills start; returns the makespan.
 */
static ll
list_schedule(int m, const ll *prio, ll *start)
{
	int		   *left = xalloc(sizeof(int) * n);
	int		   *ready = xalloc(sizeof(int) * n);
	ll		   *ready_seq = xalloc(sizeof(ll) * n);
	int		   *run = xalloc(sizeof(int) * n);
	int			nready = 0, nrun = 0, done = 0, i, k;
	ll			t = 0, seq = 0, mk = 0;

	for (i = 0; i < n; i++)
		left[i] = poff[i + 1] - poff[i];

	/* release: zero-cost tasks finish at once */
#define READY(v) do { ready[nready] = (v); ready_seq[(v)] = seq++; nready++; } while (0)
	for (i = 0; i < n; i++)
		if (left[i] == 0)
			READY(i);
	while (done < n)
	{
		int			progress = 1;

		while (progress)
		{
			progress = 0;
			/* zero-cost ready tasks complete now */
			for (i = 0; i < nready; i++)
				if (cost[ready[i]] == 0)
				{
					int			u = ready[i];

					ready[i] = ready[--nready];
					start[u] = t;
					done++;
					for (k = soff[u]; k < soff[u + 1]; k++)
						if (--left[succ[k]] == 0)
							READY(succ[k]);
					progress = 1;
					break;
				}
		}
		while (nrun < m && nready > 0)
		{
			int			best = 0;

			for (i = 1; i < nready; i++)
			{
				int			a = ready[i], b = ready[best];
				int			better;

				if (prio)
					better = prio[a] > prio[b] || (prio[a] == prio[b] && a < b);
				else
					better = ready_seq[a] < ready_seq[b];
				if (better)
					best = i;
			}
			run[nrun++] = ready[best];
			start[ready[best]] = t;
			ready[best] = ready[--nready];
		}
		if (nrun == 0)
		{
			if (done < n && nready == 0)
			{
				fprintf(stderr, "listsched: stalled\n");
				exit(1);
			}
			continue;
		}
		/* advance to the next finish */
		{
			ll			tn = -1;

			for (i = 0; i < nrun; i++)
				if (tn < 0 || start[run[i]] + cost[run[i]] < tn)
					tn = start[run[i]] + cost[run[i]];
			t = tn;
			if (t > mk)
				mk = t;
			for (i = 0; i < nrun;)
			{
				int			u = run[i];

				if (start[u] + cost[u] == t)
				{
					run[i] = run[--nrun];
					done++;
					for (k = soff[u]; k < soff[u + 1]; k++)
						if (--left[succ[k]] == 0)
							READY(succ[k]);
				}
				else
					i++;
			}
		}
	}
#undef READY
	free(left);
	free(ready);
	free(ready_seq);
	free(run);
	return mk;
}

/* ---- serial justification on a resource profile ---- */

/* A step function: usage u[i] on [t[i], t[i+1]); 0 before t[0] and after the last. */
typedef struct Profile
{
	ll		   *t;
	int		   *u;
	int			k;
} Profile;

/* Index of the breakpoint at time x, inserted if missing. */
static int
profile_point(Profile *p, ll x)
{
	int			lo = 0, hi = p->k;

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
	memmove(p->t + lo + 1, p->t + lo, sizeof(ll) * (p->k - lo));
	memmove(p->u + lo + 1, p->u + lo, sizeof(int) * (p->k - lo));
	p->t[lo] = x;
	p->u[lo] = lo > 0 ? p->u[lo - 1] : 0;
	p->k++;
	return lo;
}

/* The earliest s >= e such that usage < m throughout [s, s + d). */
static ll
profile_earliest(const Profile *p, ll e, ll d, int m)
{
	ll			s = e;
	int			lo = 0, hi = p->k;

	/* i: the segment that contains s (-1: before the first breakpoint) */
	while (lo < hi)
	{
		int			mid = (lo + hi) / 2;

		if (p->t[mid] <= s)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (int i = lo - 1;;)
	{
		int			j;
		int			blocked = -1;

		/* segments from i on end after s; those that start before s + d overlap */
		for (j = i < 0 ? 0 : i; j < p->k && p->t[j] < s + d; j++)
			if (p->u[j] >= m)
			{
				blocked = j;
				break;
			}
		if (blocked < 0)
			return s;
		/* the last segment has usage 0, so a blocked one has an end */
		s = p->t[blocked + 1];
		i = blocked + 1;
	}
}

static void
profile_add(Profile *p, ll s, ll d)
{
	int			a = profile_point(p, s);
	int			b = profile_point(p, s + d);
	int			i;

	for (i = a; i < b; i++)
		p->u[i]++;
}

typedef struct SortKey
{
	const ll   *t;
	int			sign;
} SortKey;

static SortKey sortkey;

/* By t ascending (sign 1) or descending (sign -1), then topological order in that direction. */
static int
cmp_order(const void *a, const void *b)
{
	int			x = *(const int *) a, y = *(const int *) b;

	if (sortkey.t[x] != sortkey.t[y])
		return (sortkey.t[x] < sortkey.t[y] ? -1 : 1) * sortkey.sign;
	return (topo_pos[x] - topo_pos[y]) * sortkey.sign;
}

/*
 * Serial schedule generation in one direction: tasks in order, each at the
 * earliest time its predecessors in that direction and the processors
 * allow.  Backward, times are measured from the end.  Fills st (start in
 * that direction's time); returns the makespan.
 */
static ll
serial(int m, const int *order, int backward, ll *st)
{
	Profile		p;
	ll			mk = 0;
	int			i, k;

	p.t = xalloc(sizeof(ll) * (2 * n + 2));
	p.u = xalloc(sizeof(int) * (2 * n + 2));
	p.k = 0;
	for (i = 0; i < n; i++)
	{
		int			v = order[i];
		ll			e = 0;
		const int  *off = backward ? soff : poff;
		const int  *adj = backward ? succ : pred;

		for (k = off[v]; k < off[v + 1]; k++)
			if (st[adj[k]] + cost[adj[k]] > e)
				e = st[adj[k]] + cost[adj[k]];
		if (cost[v] > 0)
		{
			st[v] = profile_earliest(&p, e, cost[v], m);
			profile_add(&p, st[v], cost[v]);
		}
		else
			st[v] = e;
		if (st[v] + cost[v] > mk)
			mk = st[v] + cost[v];
	}
	free(p.t);
	free(p.u);
	return mk;
}

int
main(int argc, char **argv)
{
	ll		   *bottom, *start, *rst, *fin, *best_start;
	int		   *order;
	ll			work = 0, cp = 0;
	int			a, i, k;

	if (argc < 3)
	{
		fprintf(stderr, "usage: listsched graph.stg m...\n");
		return 2;
	}
	read_graph(argv[1]);
	bottom = xalloc(sizeof(ll) * n);
	start = xalloc(sizeof(ll) * n);
	rst = xalloc(sizeof(ll) * n);
	fin = xalloc(sizeof(ll) * n);
	best_start = xalloc(sizeof(ll) * n);
	order = xalloc(sizeof(int) * n);
	for (i = n - 1; i >= 0; i--)
	{
		int			v = topo[i];
		ll			b = 0;

		for (k = soff[v]; k < soff[v + 1]; k++)
			if (bottom[succ[k]] > b)
				b = bottom[succ[k]];
		bottom[v] = b + cost[v];
		if (bottom[v] > cp)
			cp = bottom[v];
	}
	for (i = 0; i < n; i++)
		work += cost[i];

	for (a = 2; a < argc; a++)
	{
		int			m = atoi(argv[a]);
		ll			lb, mk_cp, mk_fifo, best, mk_order;

		if (m < 1)
		{
			fprintf(stderr, "listsched: m must be at least 1\n");
			return 2;
		}
		lb = (work + m - 1) / m;
		if (cp > lb)
			lb = cp;
		mk_fifo = list_schedule(m, NULL, start);
		mk_cp = list_schedule(m, bottom, start);
		best = mk_cp;
		memcpy(best_start, start, sizeof(ll) * n);
		for (;;)
		{
			ll			mkr, mkl;

			/* right-justify: by decreasing finish, in backward time */
			for (i = 0; i < n; i++)
			{
				order[i] = i;
				fin[i] = start[i] + cost[i];
			}
			sortkey.t = fin;
			sortkey.sign = -1;
			qsort(order, n, sizeof(int), cmp_order);
			mkr = serial(m, order, 1, rst);
			/* left-justify: by increasing start in forward time (mkr - finish backward) */
			for (i = 0; i < n; i++)
			{
				order[i] = i;
				fin[i] = mkr - (rst[i] + cost[i]);
			}
			sortkey.t = fin;
			sortkey.sign = 1;
			qsort(order, n, sizeof(int), cmp_order);
			mkl = serial(m, order, 0, start);
			if (mkl >= best)
				break;
			best = mkl;
			memcpy(best_start, start, sizeof(ll) * n);
		}
		for (i = 0; i < n; i++)
			rst[i] = -best_start[i];	/* earlier start, higher priority */
		mk_order = list_schedule(m, rst, start);
		printf("%d %d %lld %lld %lld %lld %lld %lld %lld\n", m, n, work, cp, lb, mk_cp, mk_fifo, best, mk_order);
	}
	return 0;
}
