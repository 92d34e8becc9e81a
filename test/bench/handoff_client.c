/*
 * test/bench/handoff_client.c -- the libpq client of the hand-off and
 * throughput benchmarks (test/bench/handoff.sh, test/bench/throughput.sh).
 *
 * Connects with the PG* environment variables (the database must be the one
 * the dispatcher serves).  Client times are CLOCK_MONOTONIC; times compared
 * with server commit timestamps (pg_xact_commit_timestamp, when
 * track_commit_timestamp is on) are CLOCK_REALTIME, the clock the server
 * stamps commits with on the same machine.  Every mode prints one summary
 * line of key=value pairs on stdout (times in ms); distributions are printed
 * as KEY_p50, KEY_p95, KEY_p99, KEY_max (nearest rank).
 *
 * With PF_BENCH_ANALYZE=1 in the environment, the modes that start a run
 * ANALYZE parflow.task, parflow.run and parflow.run_group right after
 * parflow_start returns and before any agent claims (time reported as
 * analyze=..., and included in the throughput wall time), so that the plans
 * of the run's statements see its rows.
 *
 * Modes:
 *
 *   raw N OUTFILE
 *       The baseline of the hand-off: the raw NOTIFY round trip between two
 *       connections.  B LISTENs on pf_bench_raw; N times, A sends
 *       `NOTIFY pf_bench_raw, 'i'; SELECT txid_current()` (one implicit
 *       transaction, autocommit).  raw = from A's command returning to B's
 *       client seeing the notification (poll() on B's socket, then
 *       PQconsumeInput and PQnotifies); rawc = from the commit of A's
 *       transaction (its commit timestamp) to the same arrival.
 *
 *   chain WORKFLOW AGENT[,AGENT2] OUTFILE
 *       The hand-off over a chain.  One connection per agent kind LISTENs on
 *       parflow_AGENT; the first starts a run of WORKFLOW (parallel mode)
 *       and, for each dispatch notification of that run, the connection that
 *       received it claims the task and completes it at once.  With one kind
 *       the successor's notification comes to the connection that is still
 *       finishing the completion; with two kinds whose stages alternate, it
 *       comes to the other, idle, listening connection (as between agents of
 *       different kinds, and as in the raw baseline).  Completions are sent
 *       asynchronously and every connection is polled meanwhile, so that
 *       arrivals are timed when their bytes arrive.  handoff = from
 *       parflow_complete returning (its transaction committed) to the arrival
 *       of the successor's dispatch notification (one that arrived before
 *       parflow_complete returned counts as 0, and as "early").  With commit
 *       timestamps: hc = from the commit of the completion (commit timestamp
 *       of the completed task's row version) to the arrival; pass = from
 *       that commit to the commit of the transaction that marked the
 *       successor dispatched (its "dispatched" event row: the dispatcher's
 *       pass, or the completion itself when it handed its slot over); deliv
 *       = from that commit to the arrival.  Also the claim and complete call
 *       times.
 *
 *   throughput WORKFLOW AGENT NPROC
 *       NPROC agent processes, each one connection LISTENing on
 *       parflow_AGENT, claim and complete no-op tasks: each claims until
 *       parflow_claim returns no row (completing each task at once), then
 *       waits for a notification (or 1 s, a safety net), and again.  Once every
 *       agent has connected, the parent starts a run of WORKFLOW, lets the
 *       agents go, and waits for the run's "succeeded" on
 *       parflow_orchestrator: the wall time.
 *
 *   reference WORKFLOW AGENT NPROC AGENT_BINARY [AGENT_ARG...]
 *       The same with NPROC reference agents: the parent starts the run,
 *       then starts NPROC `AGENT_BINARY --agent AGENT --simulate 0 --quiet
 *       [AGENT_ARG...]` processes (e.g. --batch 100), waits for "succeeded",
 *       then stops them with SIGTERM.
 *
 *   qchain N OUTFILE
 *       The baseline of parflow_complete in a chain: a minimal SKIP LOCKED
 *       queue whose jobs form a chain, on table bench_qchain_jobs(id,
 *       state) (made, filled and dropped here).  Job 1 is 'new', the others
 *       'waiting'; one connection LISTENs on bench_qchain and, N times,
 *       claims (the claim of mode queue) and completes: one statement
 *       marks the job done, makes its successor 'new' and notifies
 *         WITH d AS (UPDATE ... SET state = 'done' WHERE id = $1 AND
 *           state = 'running' RETURNING id)
 *         UPDATE ... n SET state = 'new' FROM d WHERE n.id = d.id + 1
 *           AND n.state = 'waiting' RETURNING pg_notify('bench_qchain', ...)
 *       (the least a chain's completion does), then it waits for the
 *       successor's notification, as an agent in mode chain does.  qclaim
 *       and qcomplete are the call times, as claim and complete there.
 *
 *   queue NPROC
 *       The baseline of the throughput: a minimal SKIP LOCKED job queue on
 *       table bench_tp.jobs(id, state) (made by the script).  NPROC
 *       processes each loop over two transactions per job, the claim
 *         UPDATE bench_tp.jobs SET state = 'running' WHERE id =
 *           (SELECT id FROM bench_tp.jobs WHERE state = 'new'
 *             LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id
 *       and the completion UPDATE bench_tp.jobs SET state = 'done' WHERE
 *       id = $1, until the claim returns no row.  Wall time from the go (all
 *       connected) to the last process finishing.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "libpq-fe.h"

#define WAIT_LIMIT_MS 60000		/* a chain step: give up after this long */
#define RUN_LIMIT_MS 900000		/* a whole run: give up after this long */
#define MAX_PROCS 64
#define MAX_SAMPLES 20000		/* per agent process */

static const char *progname = "handoff_client";

/* The claim of the minimal SKIP LOCKED queue (modes queue and qchain) on table t. */
#define QUEUE_CLAIM(t) \
	"UPDATE " t " SET state = 'running' WHERE id = " \
	"(SELECT id FROM " t " WHERE state = 'new' LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id"

static void
die(const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, "%s: ", progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static double
mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* Microseconds since the Unix epoch, as the server's commit timestamps. */
static double
real_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static PGconn *
connect_db(const char *appname)
{
	const char *keys[] = {"application_name", NULL};
	const char *vals[] = {appname, NULL};
	PGconn	   *c = PQconnectdbParams(keys, vals, 1);

	if (PQstatus(c) != CONNECTION_OK)
		die("connection failed: %s", PQerrorMessage(c));
	return c;
}

/* Run a statement (with text parameters if nparams > 0); die on error. */
static PGresult *
run(PGconn *c, const char *sql, int nparams, const char *const *params)
{
	PGresult   *r;

	if (nparams > 0)
		r = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
	else
		r = PQexec(c, sql);
	if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
		die("%s failed: %s", sql, PQerrorMessage(c));
	return r;
}

static void
run_void(PGconn *c, const char *sql)
{
	PQclear(run(c, sql, 0, NULL));
}

static void
prepare(PGconn *c, const char *name, const char *sql, int nparams)
{
	PGresult   *r = PQprepare(c, name, sql, nparams, NULL);

	if (PQresultStatus(r) != PGRES_COMMAND_OK)
		die("prepare %s failed: %s", name, PQerrorMessage(c));
	PQclear(r);
}

static PGresult *
exec_prepared(PGconn *c, const char *name, int nparams, const char *const *params)
{
	PGresult   *r = PQexecPrepared(c, name, nparams, params, NULL, NULL, 0);

	if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
		die("%s failed: %s", name, PQerrorMessage(c));
	return r;
}

/* Wait until c's socket is readable (die after limit_ms), then read it. */
static void
wait_input(PGconn *c, int limit_ms)
{
	struct pollfd p;
	int			rc;

	p.fd = PQsocket(c);
	p.events = POLLIN;
	p.revents = 0;
	do
		rc = poll(&p, 1, limit_ms);
	while (rc < 0 && errno == EINTR);
	if (rc < 0)
		die("poll failed: %s", strerror(errno));
	if (rc == 0)
		die("nothing came for %d s", limit_ms / 1000);
	if (!PQconsumeInput(c))
		die("connection lost: %s", PQerrorMessage(c));
}

/* A number in a notification's JSON payload: "key": N. */
static long long
json_num(const char *payload, const char *key)
{
	char		pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(payload, pat);
	if (p == NULL)
		return -1;
	p += strlen(pat);
	while (*p == ' ')
		p++;
	return strtoll(p, NULL, 10);
}

static int
json_kind_is(const char *payload, const char *kind)
{
	char		pat[64];

	snprintf(pat, sizeof(pat), "\"kind\": \"%s\"", kind);
	if (strstr(payload, pat))
		return 1;
	snprintf(pat, sizeof(pat), "\"kind\":\"%s\"", kind);
	return strstr(payload, pat) != NULL;
}

static int
cmp_double(const void *a, const void *b)
{
	double		x = *(const double *) a,
				y = *(const double *) b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array. */
static double
pct(const double *s, int n, double p)
{
	int			k;

	if (n == 0)
		return 0;
	k = (int) (p / 100.0 * n + 0.999999) - 1;
	if (k < 0)
		k = 0;
	if (k >= n)
		k = n - 1;
	return s[k];
}

/* " KEY_p50=.. KEY_p95=.. KEY_p99=.. KEY_max=.." in ms, from samples in us. */
static void
print_dist(const char *key, const double *v, int n)
{
	double	   *s;

	if (n <= 0)
		return;
	s = malloc(sizeof(double) * n);
	memcpy(s, v, sizeof(double) * n);
	qsort(s, n, sizeof(double), cmp_double);
	printf(" %s_p50=%.3f %s_p95=%.3f %s_p99=%.3f %s_max=%.3f", key, pct(s, n, 50) / 1000,
		   key, pct(s, n, 95) / 1000, key, pct(s, n, 99) / 1000, key, s[n - 1] / 1000);
	free(s);
}

static FILE *
open_out(const char *path)
{
	FILE	   *f = fopen(path, "w");

	if (f == NULL)
		die("cannot write %s: %s", path, strerror(errno));
	return f;
}

static int
commit_ts_on(PGconn *c)
{
	PGresult   *r = run(c, "SELECT current_setting('track_commit_timestamp')::boolean", 0, NULL);
	int			on = strcmp(PQgetvalue(r, 0, 0), "t") == 0;

	PQclear(r);
	return on;
}

static int
analyze_wanted(void)
{
	const char *v = getenv("PF_BENCH_ANALYZE");

	return v != NULL && strcmp(v, "1") == 0;
}

/* ANALYZE the tables a run's statements plan on; returns the time in us. */
static double
analyze_run_tables(PGconn *c)
{
	double		t0 = mono_us();

	run_void(c, "ANALYZE parflow.task, parflow.run, parflow.run_group");
	return mono_us() - t0;
}

/* Start a run of workflow in parallel mode; returns its id. */
static long long
start_run(PGconn *c, const char *workflow)
{
	const char *params[1] = {workflow};
	PGresult   *r = run(c, "SELECT parflow_start($1::text, '{}', 2, true)", 1, params);
	long long	runid = atoll(PQgetvalue(r, 0, 0));

	PQclear(r);
	return runid;
}

/* ---------------------------------------------------------------- raw */

static int
mode_raw(int n, const char *outpath)
{
	PGconn	   *a = connect_db("pf_bench_raw_notifier");
	PGconn	   *b = connect_db("pf_bench_raw_listener");
	double	   *lat = malloc(sizeof(double) * n);
	double	   *arr = malloc(sizeof(double) * n);	/* arrival, realtime */
	char	  **xid = malloc(sizeof(char *) * n);
	double	   *latc = malloc(sizeof(double) * n);
	int			nc = 0;
	FILE	   *out = open_out(outpath);
	int			i,
				cts = commit_ts_on(a);
	char		sql[96];

	run_void(b, "LISTEN pf_bench_raw");
	for (i = 0; i < n; i++)
	{
		PGnotify   *nt = NULL;
		PGresult   *r;
		double		t0,
					t1;

		snprintf(sql, sizeof(sql), "NOTIFY pf_bench_raw, '%d'; SELECT txid_current()", i);
		r = run(a, sql, 0, NULL);
		t0 = mono_us();
		xid[i] = strdup(PQgetvalue(r, 0, 0));
		PQclear(r);
		for (;;)
		{
			nt = PQnotifies(b);
			if (nt != NULL)
				break;
			wait_input(b, WAIT_LIMIT_MS);
		}
		t1 = mono_us();
		arr[i] = real_us();
		if (atoi(nt->extra) != i)
			die("raw: expected notification %d, got %s", i, nt->extra);
		PQfreemem(nt);
		lat[i] = t1 - t0;
	}
	if (cts)
	{
		for (i = 0; i < n; i++)
		{
			const char *params[1] = {xid[i]};
			PGresult   *r = run(a, "SELECT extract(epoch FROM pg_xact_commit_timestamp("
								"($1::bigint % 4294967296)::text::xid))::float8 * 1e6",
								1, params);

			if (!PQgetisnull(r, 0, 0))
				latc[nc++] = arr[i] - atof(PQgetvalue(r, 0, 0));
			PQclear(r);
		}
	}
	for (i = 0; i < n; i++)
		fprintf(out, "%.1f %.1f\n", lat[i], cts && i < nc ? latc[i] : -1.0);
	fclose(out);
	printf("n=%d commit_ts=%d", n, cts);
	print_dist("raw", lat, n);
	print_dist("rawc", latc, nc);
	printf("\n");
	PQfinish(a);
	PQfinish(b);
	return 0;
}

/* ---------------------------------------------------------------- chain */

/* A dispatch notification of the chain's run, as it arrived. */
typedef struct
{
	int			k;				/* the connection it came to, -1 if none yet */
	long long	task;
	double		mono;			/* arrival, CLOCK_MONOTONIC */
	double		real;			/* arrival, CLOCK_REALTIME */
} Arrival;

/* Read what connection k has received; note the first dispatch of runid. */
static void
chain_collect(PGconn *c, int k, long long runid, Arrival *a, int *other)
{
	PGnotify   *nt;

	if (!PQconsumeInput(c))
		die("connection lost: %s", PQerrorMessage(c));
	(void) PQisBusy(c);			/* parses what came in */
	while ((nt = PQnotifies(c)) != NULL)
	{
		if (a->k < 0 && json_kind_is(nt->extra, "dispatch") && json_num(nt->extra, "run") == runid)
		{
			a->k = k;
			a->task = json_num(nt->extra, "task");
			a->mono = mono_us();
			a->real = real_us();
		}
		else
			(*other)++;
		PQfreemem(nt);
	}
}

/*
 * Wait until one of the connections is readable (busy: connection busy has
 * a command running; its result is left for the caller), then collect.
 */
static void
chain_wait(PGconn **c, int nconn, long long runid, Arrival *a, int *other)
{
	struct pollfd p[2];
	int			k,
				rc;

	for (k = 0; k < nconn; k++)
	{
		p[k].fd = PQsocket(c[k]);
		p[k].events = POLLIN;
		p[k].revents = 0;
	}
	do
		rc = poll(p, nconn, WAIT_LIMIT_MS);
	while (rc < 0 && errno == EINTR);
	if (rc < 0)
		die("poll failed: %s", strerror(errno));
	if (rc == 0)
		die("nothing came for %d s", WAIT_LIMIT_MS / 1000);
	for (k = 0; k < nconn; k++)
		if (p[k].revents)
			chain_collect(c[k], k, runid, a, other);
}

static int
mode_chain(const char *workflow, const char *agent_list, const char *outpath)
{
	PGconn	   *c[2];
	char		agents[2][64];
	int			nconn = 0;
	PGresult   *r;
	char		sql[256],
				worker[64],
				runbuf[32];
	long long	runid;
	int			ntasks,
				nh = 0,
				nc = 0,
				early = 0,
				other = 0,
				cts,
				i,
				k;
	double	   *hand,
			   *claim,
			   *comp,
			   *arrive;			/* realtime arrival of task i's dispatch */
	long long  *task_id;
	double		t_done = -1,
				t_start,
				t_end,
				an_us = 0;
	FILE	   *out = open_out(outpath);
	const char *params[3];
	const char *comma = strchr(agent_list, ',');
	Arrival		a = {-1, 0, 0, 0};

	snprintf(agents[0], sizeof(agents[0]), "%.*s",
			 comma ? (int) (comma - agent_list) : (int) strlen(agent_list), agent_list);
	nconn = 1;
	if (comma)
	{
		snprintf(agents[1], sizeof(agents[1]), "%s", comma + 1);
		nconn = 2;
	}
	snprintf(worker, sizeof(worker), "bench-%ld", (long) getpid());
	for (k = 0; k < nconn; k++)
	{
		c[k] = connect_db("pf_bench_handoff");
		snprintf(sql, sizeof(sql), "LISTEN \"parflow_%s\"", agents[k]);
		run_void(c[k], sql);
		prepare(c[k], "claim", "SELECT task, token FROM parflow_claim($1::text, $2::text)", 2);
		prepare(c[k], "complete", "SELECT parflow_complete($1::bigint, $2::uuid)", 2);
	}
	cts = commit_ts_on(c[0]);

	t_start = mono_us();
	runid = start_run(c[0], workflow);
	snprintf(runbuf, sizeof(runbuf), "%lld", runid);
	if (analyze_wanted())
		an_us = analyze_run_tables(c[0]);
	/* how many stages to serve (before the first wait: not a sample) */
	params[0] = runbuf;
	r = run(c[0], "SELECT count(*) FROM parflow.task WHERE run_id = $1::bigint AND state <> 'skipped'",
			1, params);
	ntasks = atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	hand = malloc(sizeof(double) * (ntasks + 1));
	claim = malloc(sizeof(double) * (ntasks + 1));
	comp = malloc(sizeof(double) * (ntasks + 1));
	arrive = malloc(sizeof(double) * (ntasks + 1));
	task_id = malloc(sizeof(long long) * (ntasks + 1));

	for (k = 0; k < nconn; k++)
		chain_collect(c[k], k, runid, &a, &other);
	while (nc < ntasks)
	{
		double		t0;
		char		task[32],
					token[64];
		PGconn	   *ck;

		/* the next dispatch of our run */
		while (a.k < 0)
			chain_wait(c, nconn, runid, &a, &other);
		arrive[nc] = a.real;
		task_id[nc] = a.task;
		if (t_done >= 0)
		{
			/* arrived before parflow_complete returned: 0 */
			hand[nh++] = a.mono > t_done ? a.mono - t_done : 0;
			early += a.mono <= t_done;
		}
		ck = c[a.k];
		a.k = -1;

		/* claim it */
		params[0] = agents[ck == c[0] ? 0 : 1];
		params[1] = worker;
		t0 = mono_us();
		r = exec_prepared(ck, "claim", 2, params);
		claim[nc] = mono_us() - t0;
		if (PQntuples(r) != 1)
			die("chain: a dispatch notification came but parflow_claim returned %d rows",
				PQntuples(r));
		if (atoll(PQgetvalue(r, 0, 0)) != task_id[nc])
			die("chain: notified of task %lld but claimed %s", task_id[nc], PQgetvalue(r, 0, 0));
		snprintf(task, sizeof(task), "%s", PQgetvalue(r, 0, 0));
		snprintf(token, sizeof(token), "%s", PQgetvalue(r, 0, 1));
		PQclear(r);

		/* and complete it at once, watching every connection meanwhile */
		params[0] = task;
		params[1] = token;
		t0 = mono_us();
		if (!PQsendQueryPrepared(ck, "complete", 2, params, NULL, NULL, 0))
			die("complete failed: %s", PQerrorMessage(ck));
		for (;;)
		{
			PGresult   *res;
			int			done = 0;

			while (!PQisBusy(ck))
			{
				res = PQgetResult(ck);
				if (res == NULL)
				{
					done = 1;
					break;
				}
				if (PQresultStatus(res) != PGRES_TUPLES_OK)
					die("complete failed: %s", PQerrorMessage(ck));
				PQclear(res);
			}
			if (done)
				break;
			chain_wait(c, nconn, runid, &a, &other);
		}
		t_done = mono_us();
		comp[nc] = t_done - t0;
		/* what came with the result */
		for (k = 0; k < nconn; k++)
			chain_collect(c[k], k, runid, &a, &other);
		nc++;
	}
	t_end = mono_us();
	params[0] = runbuf;
	r = run(c[0], "SELECT state FROM parflow.run WHERE id = $1::bigint", 1, params);
	if (strcmp(PQgetvalue(r, 0, 0), "succeeded") != 0)
		die("chain: run %lld is %s after its last stage", runid, PQgetvalue(r, 0, 0));
	PQclear(r);

	/* commit-anchored: the commits of each completion and each dispatch */
	if (cts)
	{
		double	   *hc = malloc(sizeof(double) * ntasks),
				   *pass = malloc(sizeof(double) * ntasks),
				   *deliv = malloc(sizeof(double) * ntasks);
		int			m = 0;

		r = run(c[0], "SELECT t.id, extract(epoch FROM pg_xact_commit_timestamp(t.xmin))::float8 * 1e6, "
				"(SELECT extract(epoch FROM pg_xact_commit_timestamp(e.xmin))::float8 * 1e6 "
				"   FROM parflow.event e WHERE e.run_id = t.run_id AND e.task_id = t.id "
				"    AND e.kind = 'dispatched' ORDER BY e.id DESC LIMIT 1) "
				"FROM parflow.task t WHERE t.run_id = $1::bigint", 1, params);
		for (i = 0; i + 1 < nc; i++)
		{
			double		done_c = -1,
						disp_c = -1;
			int			k;

			for (k = 0; k < PQntuples(r); k++)
			{
				long long	id = atoll(PQgetvalue(r, k, 0));

				if (id == task_id[i] && !PQgetisnull(r, k, 1))
					done_c = atof(PQgetvalue(r, k, 1));
				if (id == task_id[i + 1] && !PQgetisnull(r, k, 2))
					disp_c = atof(PQgetvalue(r, k, 2));
			}
			if (done_c < 0 || disp_c < 0)
				continue;
			hc[m] = arrive[i + 1] - done_c;
			pass[m] = disp_c - done_c;
			deliv[m] = arrive[i + 1] - disp_c;
			m++;
		}
		PQclear(r);
		printf("run=%lld stages=%d handoffs=%d early=%d other_notifications=%d commit_ts=1 "
			   "analyze=%.1f wall=%.1f", runid, nc, nh, early, other, an_us / 1000,
			   (t_end - t_start) / 1000);
		print_dist("hc", hc, m);
		print_dist("pass", pass, m);
		print_dist("deliv", deliv, m);
		for (i = 0; i < nc; i++)
			fprintf(out, "%lld %.1f %.1f %.1f %.1f %.1f %.1f\n", task_id[i],
					i > 0 ? hand[i - 1] : -1.0, claim[i], comp[i],
					i > 0 && i - 1 < m ? hc[i - 1] : -1.0,
					i > 0 && i - 1 < m ? pass[i - 1] : -1.0,
					i > 0 && i - 1 < m ? deliv[i - 1] : -1.0);
	}
	else
	{
		printf("run=%lld stages=%d handoffs=%d early=%d other_notifications=%d commit_ts=0 "
			   "analyze=%.1f wall=%.1f", runid, nc, nh, early, other, an_us / 1000,
			   (t_end - t_start) / 1000);
		for (i = 0; i < nc; i++)
			fprintf(out, "%lld %.1f %.1f %.1f\n", task_id[i], i > 0 ? hand[i - 1] : -1.0,
					claim[i], comp[i]);
	}
	fclose(out);
	print_dist("handoff", hand, nh);
	print_dist("claim", claim, nc);
	print_dist("complete", comp, nc);
	printf("\n");
	for (k = 0; k < nconn; k++)
		PQfinish(c[k]);
	return 0;
}

/* ---------------------------------------------------------------- agents */

typedef struct
{
	long		claims;			/* claims that returned a task */
	long		empty;			/* claims that returned nothing */
	long		completes;
	long		notifies;		/* notifications received */
	long		wakeups;		/* wake-ups from waiting */
	int			nsamp;
} ChildStats;

static ChildStats *stats;		/* [MAX_PROCS], shared with the children */
static double *samp_claim;		/* [MAX_PROCS][MAX_SAMPLES] */
static double *samp_comp;

static void
shared_setup(void)
{
	size_t		hdr = sizeof(ChildStats) * MAX_PROCS;
	size_t		sz = hdr + 2 * sizeof(double) * MAX_PROCS * MAX_SAMPLES;
	char	   *p = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		die("mmap failed: %s", strerror(errno));
	memset(p, 0, hdr);
	stats = (ChildStats *) p;
	samp_claim = (double *) (p + hdr);
	samp_comp = samp_claim + MAX_PROCS * MAX_SAMPLES;
}

static void
record(int id, double claim_us, double comp_us)
{
	ChildStats *st = &stats[id];

	if (st->nsamp < MAX_SAMPLES)
	{
		samp_claim[id * MAX_SAMPLES + st->nsamp] = claim_us;
		samp_comp[id * MAX_SAMPLES + st->nsamp] = comp_us;
		st->nsamp++;
	}
}

/* Block until fd has a byte or is closed. */
static void
wait_fd(int fd)
{
	char		c;

	while (read(fd, &c, 1) < 0 && errno == EINTR)
		;
}

typedef void (*ChildFn) (int id, const char *agent, int ready_fd, int go_fd, int stop_fd);

/*
 * One agent: after the go, claims until nothing is left, then waits for a
 * notification (or 1 s), until the stop pipe closes.
 */
static void
tp_child(int id, const char *agent, int ready_fd, int go_fd, int stop_fd)
{
	PGconn	   *c = connect_db("pf_bench_tp_agent");
	ChildStats *st = &stats[id];
	char		sql[256],
				worker[64];
	const char *params[2];
	char		one = 'r';

	snprintf(worker, sizeof(worker), "bench-tp-%d-%ld", id, (long) getpid());
	snprintf(sql, sizeof(sql), "LISTEN \"parflow_%s\"", agent);
	run_void(c, sql);
	prepare(c, "claim", "SELECT task, token FROM parflow_claim($1::text, $2::text)", 2);
	prepare(c, "complete", "SELECT parflow_complete($1::bigint, $2::uuid)", 2);
	if (write(ready_fd, &one, 1) != 1)
		die("write failed");
	wait_fd(go_fd);

	for (;;)
	{
		struct pollfd p[2];
		PGnotify   *nt;
		int			rc;

		for (;;)
		{
			PGresult   *r;
			double		t0 = mono_us(),
						t1,
						t2;
			char		task[32],
						token[64];

			params[0] = agent;
			params[1] = worker;
			r = exec_prepared(c, "claim", 2, params);
			t1 = mono_us();
			if (PQntuples(r) == 0)
			{
				PQclear(r);
				st->empty++;
				break;
			}
			st->claims++;
			snprintf(task, sizeof(task), "%s", PQgetvalue(r, 0, 0));
			snprintf(token, sizeof(token), "%s", PQgetvalue(r, 0, 1));
			PQclear(r);
			params[0] = task;
			params[1] = token;
			PQclear(exec_prepared(c, "complete", 2, params));
			t2 = mono_us();
			st->completes++;
			record(id, t1 - t0, t2 - t1);
		}
		/* what came meanwhile was served by the claims above */
		while ((nt = PQnotifies(c)) != NULL)
		{
			st->notifies++;
			PQfreemem(nt);
		}
		p[0].fd = PQsocket(c);
		p[0].events = POLLIN;
		p[1].fd = stop_fd;
		p[1].events = POLLIN;
		p[0].revents = p[1].revents = 0;
		do
			rc = poll(p, 2, 1000);
		while (rc < 0 && errno == EINTR);
		if (rc < 0)
			die("poll failed: %s", strerror(errno));
		if (p[1].revents)
			break;
		st->wakeups++;
		if (p[0].revents && !PQconsumeInput(c))
			die("connection lost: %s", PQerrorMessage(c));
		while ((nt = PQnotifies(c)) != NULL)
		{
			st->notifies++;
			PQfreemem(nt);
		}
	}
	PQfinish(c);
	_exit(0);
}

/* One queue worker: two transactions per job until the queue is empty. */
static void
queue_child(int id, const char *unused, int ready_fd, int go_fd, int stop_fd)
{
	PGconn	   *c = connect_db("pf_bench_tp_queue");
	ChildStats *st = &stats[id];
	char		one = 'r';
	const char *params[1];

	prepare(c, "claim", QUEUE_CLAIM("bench_tp.jobs"), 0);
	prepare(c, "complete", "UPDATE bench_tp.jobs SET state = 'done' WHERE id = $1::bigint", 1);
	if (write(ready_fd, &one, 1) != 1)
		die("write failed");
	wait_fd(go_fd);
	for (;;)
	{
		PGresult   *r;
		double		t0 = mono_us(),
					t1,
					t2;
		char		id_s[32];

		r = exec_prepared(c, "claim", 0, NULL);
		t1 = mono_us();
		if (PQntuples(r) == 0)
		{
			PQclear(r);
			st->empty++;
			break;
		}
		st->claims++;
		snprintf(id_s, sizeof(id_s), "%s", PQgetvalue(r, 0, 0));
		PQclear(r);
		params[0] = id_s;
		PQclear(exec_prepared(c, "complete", 1, params));
		t2 = mono_us();
		st->completes++;
		record(id, t1 - t0, t2 - t1);
	}
	PQfinish(c);
	(void) unused;
	(void) stop_fd;
	_exit(0);
}

typedef struct
{
	int			n;
	pid_t		pids[MAX_PROCS];
	int			go_w;			/* close: the children start */
	int			stop_w;			/* close: the children stop */
} Children;

/* Fork n children running fn; returns once every one is connected. */
static void
fork_children(Children *ch, int n, ChildFn fn, const char *agent)
{
	int			ready[2],
				go[2],
				stop[2],
				i;

	if (n < 1 || n > MAX_PROCS)
		die("1..%d processes", MAX_PROCS);
	if (pipe(ready) < 0 || pipe(go) < 0 || pipe(stop) < 0)
		die("pipe failed: %s", strerror(errno));
	fflush(stdout);
	for (i = 0; i < n; i++)
	{
		pid_t		pid = fork();

		if (pid < 0)
			die("fork failed: %s", strerror(errno));
		if (pid == 0)
		{
			close(ready[0]);
			close(go[1]);
			close(stop[1]);
			fn(i, agent, ready[1], go[0], stop[0]);
			_exit(0);
		}
		ch->pids[i] = pid;
	}
	ch->n = n;
	close(ready[1]);
	close(go[0]);
	close(stop[0]);
	ch->go_w = go[1];
	ch->stop_w = stop[1];
	for (i = 0; i < n; i++)
	{
		char		c;

		if (read(ready[0], &c, 1) != 1)
			die("an agent process failed before it was ready");
	}
	close(ready[0]);
}

/* Wait for every child; returns how many failed. */
static int
reap(pid_t *pids, int n)
{
	int			i,
				bad = 0;

	for (i = 0; i < n; i++)
	{
		int			status;

		if (waitpid(pids[i], &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
			bad++;
	}
	return bad;
}

/* Wait for the "succeeded" of run runid on parflow_orchestrator. */
static void
wait_succeeded(PGconn *c, long long runid)
{
	for (;;)
	{
		PGnotify   *nt = PQnotifies(c);

		if (nt == NULL)
		{
			wait_input(c, RUN_LIMIT_MS);
			continue;
		}
		if (json_num(nt->extra, "run") == runid)
		{
			if (json_kind_is(nt->extra, "succeeded"))
			{
				PQfreemem(nt);
				return;
			}
			if (json_kind_is(nt->extra, "blocked") || json_kind_is(nt->extra, "cancelled"))
				die("run %lld: %s", runid, nt->extra);
		}
		PQfreemem(nt);
	}
}

static void
print_samples(int n)
{
	int			i,
				m = 0;
	double	   *cl,
			   *co;

	for (i = 0; i < n; i++)
		m += stats[i].nsamp;
	cl = malloc(sizeof(double) * (m + 1));
	co = malloc(sizeof(double) * (m + 1));
	m = 0;
	for (i = 0; i < n; i++)
	{
		memcpy(cl + m, samp_claim + i * MAX_SAMPLES, sizeof(double) * stats[i].nsamp);
		memcpy(co + m, samp_comp + i * MAX_SAMPLES, sizeof(double) * stats[i].nsamp);
		m += stats[i].nsamp;
	}
	print_dist("claim", cl, m);
	print_dist("complete", co, m);
	free(cl);
	free(co);
}

static void
print_totals(int n)
{
	ChildStats	t;
	int			i;

	memset(&t, 0, sizeof(t));
	for (i = 0; i < n; i++)
	{
		t.claims += stats[i].claims;
		t.empty += stats[i].empty;
		t.completes += stats[i].completes;
		t.notifies += stats[i].notifies;
		t.wakeups += stats[i].wakeups;
	}
	printf(" completes=%ld claims=%ld empty_claims=%ld notifications=%ld wakeups=%ld client_xacts=%ld",
		   t.completes, t.claims, t.empty, t.notifies, t.wakeups, t.claims + t.empty + t.completes);
}

static int
mode_throughput(const char *workflow, const char *agent, int nproc)
{
	PGconn	   *c;
	Children	ch;
	double		t0,
				t1,
				t_started,
				an_us = 0;
	long long	runid;
	int			bad;

	shared_setup();
	c = connect_db("pf_bench_tp_parent");
	run_void(c, "LISTEN parflow_orchestrator");
	fork_children(&ch, nproc, tp_child, agent);
	t0 = mono_us();
	runid = start_run(c, workflow);
	t_started = mono_us();
	if (analyze_wanted())
		an_us = analyze_run_tables(c);
	close(ch.go_w);
	wait_succeeded(c, runid);
	t1 = mono_us();
	close(ch.stop_w);
	bad = reap(ch.pids, ch.n);
	PQfinish(c);
	if (bad)
		die("throughput: %d agent process(es) failed", bad);
	printf("run=%lld procs=%d wall=%.1f start_call=%.1f analyze=%.1f", runid, nproc,
		   (t1 - t0) / 1000, (t_started - t0) / 1000, an_us / 1000);
	print_totals(nproc);
	print_samples(nproc);
	printf("\n");
	return 0;
}

static int
mode_reference(const char *workflow, const char *agent, int nproc, const char *binary,
			   int nextra, char **extra)
{
	PGconn	   *c = connect_db("pf_bench_tp_parent");
	pid_t		pids[MAX_PROCS];
	double		t0,
				t1,
				t_started,
				an_us = 0;
	long long	runid;
	int			i,
				bad;

	if (nproc < 1 || nproc > MAX_PROCS)
		die("reference: 1..%d processes", MAX_PROCS);
	run_void(c, "LISTEN parflow_orchestrator");
	t0 = mono_us();
	runid = start_run(c, workflow);
	t_started = mono_us();
	if (analyze_wanted())
		an_us = analyze_run_tables(c);
	fflush(stdout);
	for (i = 0; i < nproc; i++)
	{
		pid_t		pid = fork();

		if (pid < 0)
			die("fork failed: %s", strerror(errno));
		if (pid == 0)
		{
			char		wname[64];
			char	  **av = calloc(nextra + 10, sizeof(char *));
			int			k = 0,
						j;

			if (av == NULL)
				_exit(127);
			snprintf(wname, sizeof(wname), "bench-ref-%d", i);
			av[k++] = (char *) binary;
			av[k++] = "--agent";
			av[k++] = (char *) agent;
			av[k++] = "--simulate";
			av[k++] = "0";
			av[k++] = "--quiet";
			av[k++] = "--worker";
			av[k++] = wname;
			for (j = 0; j < nextra; j++)
				av[k++] = extra[j];
			av[k] = NULL;
			execv(binary, av);
			fprintf(stderr, "%s: cannot run %s: %s\n", progname, binary, strerror(errno));
			_exit(127);
		}
		pids[i] = pid;
	}
	wait_succeeded(c, runid);
	t1 = mono_us();
	for (i = 0; i < nproc; i++)
		kill(pids[i], SIGTERM);
	bad = reap(pids, nproc);
	PQfinish(c);
	if (bad)
		die("reference: %d agent process(es) failed", bad);
	printf("run=%lld procs=%d wall=%.1f start_call=%.1f analyze=%.1f\n", runid, nproc,
		   (t1 - t0) / 1000, (t_started - t0) / 1000, an_us / 1000);
	return 0;
}

static int
mode_qchain(int n, const char *outpath)
{
	PGconn	   *c = connect_db("pf_bench_qchain");
	double	   *claim = malloc(sizeof(double) * n),
			   *comp = malloc(sizeof(double) * n);
	FILE	   *out = open_out(outpath);
	char		nbuf[32];
	const char *params[1] = {nbuf};
	int			i;

	if (n < 2)
		die("qchain: N must be at least 2");
	snprintf(nbuf, sizeof(nbuf), "%d", n);
	run_void(c, "SET client_min_messages = warning");
	run_void(c, "DROP TABLE IF EXISTS bench_qchain_jobs");
	run_void(c, "CREATE TABLE bench_qchain_jobs (id integer PRIMARY KEY, state text NOT NULL)");
	run_void(c, "CREATE INDEX bench_qchain_jobs_new_idx ON bench_qchain_jobs (id) WHERE state = 'new'");
	PQclear(run(c, "INSERT INTO bench_qchain_jobs SELECT i, CASE WHEN i = 1 THEN 'new' ELSE 'waiting' END "
				"FROM generate_series(1, $1::integer) i", 1, params));
	run_void(c, "VACUUM ANALYZE bench_qchain_jobs");
	run_void(c, "LISTEN bench_qchain");
	prepare(c, "qclaim", QUEUE_CLAIM("bench_qchain_jobs"), 0);
	prepare(c, "qcomplete", "WITH d AS (UPDATE bench_qchain_jobs SET state = 'done' "
			"WHERE id = $1::integer AND state = 'running' RETURNING id) "
			"UPDATE bench_qchain_jobs n SET state = 'new' FROM d WHERE n.id = d.id + 1 "
			"AND n.state = 'waiting' RETURNING pg_notify('bench_qchain', n.id::text)", 1);
	for (i = 0; i < n; i++)
	{
		PGresult   *r;
		PGnotify   *nt;
		char		id[32];
		double		t0;

		t0 = mono_us();
		r = exec_prepared(c, "qclaim", 0, NULL);
		claim[i] = mono_us() - t0;
		if (PQntuples(r) != 1 || atoi(PQgetvalue(r, 0, 0)) != i + 1)
			die("qchain: claim %d returned %d rows", i + 1, PQntuples(r));
		snprintf(id, sizeof(id), "%s", PQgetvalue(r, 0, 0));
		PQclear(r);
		params[0] = id;
		t0 = mono_us();
		r = exec_prepared(c, "qcomplete", 1, params);
		comp[i] = mono_us() - t0;
		if (PQntuples(r) != (i + 1 < n ? 1 : 0))
			die("qchain: completing %s released %d jobs", id, PQntuples(r));
		PQclear(r);
		if (i + 1 == n)
			break;
		/* the successor's notification (to this connection: at its commit) */
		for (;;)
		{
			if (!PQconsumeInput(c))
				die("connection lost: %s", PQerrorMessage(c));
			nt = PQnotifies(c);
			if (nt != NULL)
				break;
			wait_input(c, WAIT_LIMIT_MS);
		}
		if (atoi(nt->extra) != i + 2)
			die("qchain: expected notification %d, got %s", i + 2, nt->extra);
		PQfreemem(nt);
	}
	for (i = 0; i < n; i++)
		fprintf(out, "%.1f %.1f\n", claim[i], comp[i]);
	fclose(out);
	run_void(c, "DROP TABLE bench_qchain_jobs");
	printf("n=%d", n);
	print_dist("qclaim", claim, n);
	print_dist("qcomplete", comp, n);
	printf("\n");
	PQfinish(c);
	return 0;
}

static int
mode_queue(int nproc)
{
	Children	ch;
	double		t0,
				t1;
	int			bad;

	shared_setup();
	fork_children(&ch, nproc, queue_child, NULL);
	t0 = mono_us();
	close(ch.go_w);
	bad = reap(ch.pids, ch.n);
	t1 = mono_us();
	close(ch.stop_w);
	if (bad)
		die("queue: %d process(es) failed", bad);
	printf("procs=%d wall=%.1f", nproc, (t1 - t0) / 1000);
	print_totals(nproc);
	print_samples(nproc);
	printf("\n");
	return 0;
}

int
main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	if (argc == 4 && strcmp(argv[1], "raw") == 0)
		return mode_raw(atoi(argv[2]), argv[3]);
	if (argc == 5 && strcmp(argv[1], "chain") == 0)
		return mode_chain(argv[2], argv[3], argv[4]);
	if (argc == 5 && strcmp(argv[1], "throughput") == 0)
		return mode_throughput(argv[2], argv[3], atoi(argv[4]));
	if (argc >= 6 && strcmp(argv[1], "reference") == 0)
		return mode_reference(argv[2], argv[3], atoi(argv[4]), argv[5], argc - 6, argv + 6);
	if (argc == 3 && strcmp(argv[1], "queue") == 0)
		return mode_queue(atoi(argv[2]));
	if (argc == 4 && strcmp(argv[1], "qchain") == 0)
		return mode_qchain(atoi(argv[2]), argv[3]);
	fprintf(stderr, "usage: %s raw N OUTFILE | chain WORKFLOW AGENT[,AGENT2] OUTFILE | qchain N OUTFILE | "
			"throughput WORKFLOW AGENT NPROC | reference WORKFLOW AGENT NPROC AGENT_BINARY [AGENT_ARG...] | "
			"queue NPROC\n", progname);
	return 2;
}
