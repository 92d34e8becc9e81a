/*
 * pass.c - the dispatcher's pass, parflow._dispatch(), in one transaction:
 * runs whose last tasks finished (or failed) at the same moment are
 * finished (or blocked); attempts past their stage's timeout end and their
 * agents are told to stop; dispatched tasks nobody claimed in time give
 * their slot back; expired leases are retried or failed; interrupted tasks
 * not given back in time are taken back; awaiting tasks are looked at
 * (waits.c: sub-workflow stages whose child run ended complete or fail,
 * wait stages past their timeout fail or are skipped); P0 runs get room (unclaimed
 * lower-priority tasks taken back, running ones interrupted); then ready
 * tasks are chosen under every cap (the database's, each run's, each
 * affinity rule's, each concurrency rule's across runs), in dispatch order
 * or, under fair share, the run with the fewest tasks at work first at
 * equal priority, marked dispatched and their agents notified, all NOTIFYs
 * going out when the pass commits; and the next delayed run's start time
 * is noted for the dispatcher to wake at.  Run rows are
 * updated first, before any task is locked, and a run an operator holds is
 * left to the next pass: the pass never waits on a lock an operator's or
 * an agent's transaction could wait on in turn.  Also parflow._renotify().
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "core.h"
#include "guc.h"
#include "stmt.h"

PG_FUNCTION_INFO_V1(parflow_dispatch);
PG_FUNCTION_INFO_V1(parflow_renotify);

/* ---- runs ----------------------------------------------------------------- */

static PfStmt st_runs_done = {
	"SELECT r.id FROM parflow.run r WHERE r.state IN ('running', 'paused') "
	"   AND (SELECT coalesce(sum(rr.remaining), 0) FROM parflow.run_remaining rr "
	"         WHERE rr.run_id = r.id) = 0",
	0, {0}
};

static PfStmt st_runs_failed = {
	"SELECT r.id FROM parflow.run r WHERE r.state = 'running' AND r.failed > 0",
	0, {0}
};

/*
 * Runs whose last tasks completed, or failed, at the same moment (see
 * pf_finish_if_done and pf_check_blocked).
 */
static void
settle_runs(void)
{
	int			n,
				i;
	int64	   *ids;

	n = pf_exec(&st_runs_done, NULL, NULL, 0);
	ids = palloc(sizeof(int64) * Max(n, 1));
	for (i = 0; i < n; i++)
		ids[i] = pf_int8(i, 1);
	for (i = 0; i < n; i++)
		if (pf_lock_run(ids[i], false, true))
			pf_finish_if_done(ids[i]);

	n = pf_exec(&st_runs_failed, NULL, NULL, 0);
	ids = palloc(sizeof(int64) * Max(n, 1));
	for (i = 0; i < n; i++)
		ids[i] = pf_int8(i, 1);
	for (i = 0; i < n; i++)
		if (pf_lock_run(ids[i], false, true))
			pf_check_blocked(ids[i]);
}

/* ---- attempts that ended ---------------------------------------------------- */

/*
 * A stage's timeout bounds each attempt, from its claim: an attempt that ran
 * longer ends (a retry with backoff while attempts are left, else the task
 * fails) and its agent is told to stop; its token is refused from then on.
 */
static PfStmt st_timeouts = {
	"SELECT " PF_TASK_COLS ", s.name, "
	"       format('attempt %s of stage %s ran longer than its timeout of %s', "
	"              tk.attempt, s.name, parflow._dur(s.timeout)) "
	"  FROM parflow.task tk JOIN parflow.run r ON r.id = tk.run_id "
	PF_STAGE_OF("s", "r.version_id", "tk.stage_ord", "name, timeout")
	" WHERE tk.state = 'running'" PF_ON_ACTIVE_IDX("tk") " AND s.timeout IS NOT NULL "
	"   AND tk.started_at + s.timeout < clock_timestamp() "
	"   AND parflow._lock_run(tk.run_id, false, true) "
	"   FOR UPDATE OF tk SKIP LOCKED",
	0, {0}
};

/* Whether any live run has a stage with a timeout (stage_timeout_idx). */
static PfStmt st_any_timeout = {
	"SELECT EXISTS (SELECT FROM parflow.run r WHERE r.state IN ('running', 'paused') "
	"                  AND EXISTS (SELECT FROM parflow.stage s "
	"                               WHERE s.version_id = r.version_id AND s.timeout IS NOT NULL))",
	0, {0}
};

static PfStmt st_leases = {
	"SELECT " PF_TASK_COLS ", format('lease of worker %s expired', tk.worker) "
	"  FROM parflow.task tk JOIN parflow.run r ON r.id = tk.run_id "
	" WHERE tk.state = 'running'" PF_ON_ACTIVE_IDX("tk") " AND tk.lease_until < clock_timestamp() "
	"   AND parflow._lock_run(tk.run_id, false, true) "
	"   FOR UPDATE OF tk SKIP LOCKED",
	0, {0}
};

/* Dispatched tasks no agent claimed in time give their slot back for a while. */
static PfStmt st_unclaimed = {
	"WITH c AS (SELECT tk.id FROM parflow.task tk WHERE tk.state = 'dispatched' "
	"              AND tk.dispatched_at < clock_timestamp() - $1 FOR UPDATE SKIP LOCKED), "
	"u AS (UPDATE parflow.task tk SET state = 'ready', not_before = clock_timestamp() + $1 "
	"        FROM c WHERE tk.id = c.id RETURNING tk.id, tk.run_id) "
	"INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"SELECT u.run_id, u.id, 'unclaimed', "
	"       jsonb_build_object('claim_timeout', current_setting('parflow.claim_timeout')) "
	"  FROM u ORDER BY u.id",
	1, {INTERVALOID}
};

/*
 * Interrupted tasks not given back within parflow.interrupt_grace lose
 * their lease (an interrupt is not a failed attempt).
 */
static PfStmt st_interrupts_over = {
	"WITH old AS (SELECT tk.id, tk.worker FROM parflow.task tk "
	"              WHERE tk.state = 'running'" PF_ON_ACTIVE_IDX("tk") " AND tk.interrupted_at IS NOT NULL "
	"                AND tk.interrupted_at < clock_timestamp() - $1 FOR UPDATE SKIP LOCKED), "
	"u AS (UPDATE parflow.task tk SET state = 'ready', attempt = tk.attempt - 1, token = NULL, "
	"             worker = NULL, lease_until = NULL, interrupted_at = NULL, not_before = NULL "
	"        FROM old WHERE tk.id = old.id RETURNING tk.id, tk.run_id, old.worker) "
	"INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"SELECT u.run_id, u.id, 'interrupt_expired', "
	"       jsonb_build_object('worker', u.worker, 'interrupt_grace', current_setting('parflow.interrupt_grace')) "
	"  FROM u ORDER BY u.id",
	1, {INTERVALOID}
};

static Datum
ms_interval(int ms)
{
	Interval   *iv = palloc0(sizeof(Interval));

	iv->time = (int64) ms * 1000;
	return PointerGetDatum(iv);
}

static void
end_attempts(void)
{
	int			n,
				i;
	PfTask	   *ts;
	char	  **names,
			  **msgs;
	Datum		v[1];

	pf_exec(&st_any_timeout, NULL, NULL, 1);
	n = pf_bool(0, 1) ? pf_exec(&st_timeouts, NULL, NULL, 0) : 0;
	ts = palloc(sizeof(PfTask) * Max(n, 1));
	names = palloc(sizeof(char *) * Max(n, 1));
	msgs = palloc(sizeof(char *) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		pf_load_task(i, &ts[i]);
		names[i] = pf_text(i, PF_TASK_NCOLS + 1);
		msgs[i] = pf_text(i, PF_TASK_NCOLS + 2);
	}
	for (i = 0; i < n; i++)
	{
		pf_retry_or_fail(&ts[i], "timeout", msgs[i], true);
		pf_notify_agent(ts[i].agent, pf_payload("cancel", ts[i].id, ts[i].run_id, names[i], "timeout"));
	}

	v[0] = ms_interval(pf_claim_timeout_ms);
	pf_exec(&st_unclaimed, v, NULL, 0);

	n = pf_exec(&st_leases, NULL, NULL, 0);
	ts = palloc(sizeof(PfTask) * Max(n, 1));
	msgs = palloc(sizeof(char *) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		pf_load_task(i, &ts[i]);
		msgs[i] = pf_text(i, PF_TASK_NCOLS + 1);
	}
	for (i = 0; i < n; i++)
		pf_retry_or_fail(&ts[i], "lease expired", msgs[i], true);

	v[0] = ms_interval(pf_interrupt_grace_ms);
	pf_exec(&st_interrupts_over, v, NULL, 0);
}

/* ---- P0 preemption ----------------------------------------------------------- */

static PfStmt st_p0_waiting = {
	"SELECT EXISTS (SELECT FROM parflow.task tk WHERE tk.state = 'ready' AND tk.priority = 0)",
	0, {0}
};

/*
 * What P0 runs could start now under their own caps: ready P0 tasks not
 * held by a full concurrency rule, each affinity rule of their run letting
 * through only as many as it has room for (room made beyond that would go
 * back to lower priorities, and the next pass would interrupt again), each
 * run at most its max_parallel less its tasks at work; less what is free
 * and what interrupts already under way will free.
 */
static PfStmt st_p0_want = {
	"WITH rt AS ( "
	"    SELECT tk.id, tk.run_id, tk.agent, r.version_id, r.max_parallel FROM parflow.task tk "
	"      JOIN parflow.run r ON r.id = tk.run_id AND r.state = 'running' "
	"     WHERE tk.state = 'ready' AND tk.priority = 0 AND " PF_READY_NOW("tk")
	"       AND NOT EXISTS (SELECT FROM parflow.concurrency c "
	"                        WHERE c.version_id = r.version_id AND r.input ? c.key "
	"                          AND (c.stage_ords IS NULL OR tk.stage_ord = ANY (c.stage_ords)) "
	"                          AND parflow._conc_at_work(c.name, r.input -> c.key) >= c.max_concurrent)), "
	"cov AS ( "
	"    SELECT rt.id, a.max_concurrent - (SELECT count(*) FROM parflow.task b "
	"                                        WHERE b.run_id = rt.run_id AND" PF_ACTIVE("b")
	"                                          AND b.agent = ANY (a.agents)) AS room, "
	"           row_number() OVER (PARTITION BY rt.run_id, a.ord ORDER BY rt.id) AS k "
	"      FROM rt JOIN parflow.affinity a ON a.version_id = rt.version_id AND rt.agent = ANY (a.agents)), "
	"x AS ( "
	"    SELECT rt.run_id, rt.max_parallel, count(*)::integer AS n FROM rt "
	"     WHERE NOT EXISTS (SELECT FROM cov WHERE cov.id = rt.id AND cov.k > cov.room) "
	"     GROUP BY rt.run_id, rt.max_parallel) "
	"SELECT (least(coalesce(sum(least(x.n, x.max_parallel - a.c)), 0), $2) - greatest($1, 0) "
	"        - (SELECT count(*) FROM parflow.task tk "
	"            WHERE tk.state = 'running'" PF_ON_ACTIVE_IDX("tk") " AND tk.interrupted_at IS NOT NULL))::integer "
	"  FROM x CROSS JOIN LATERAL (SELECT count(*)::integer AS c FROM parflow.task a "
	"                              WHERE a.run_id = x.run_id AND" PF_ACTIVE("a") ") a",
	2, {INT4OID, INT4OID}
};

static PfStmt st_take_back = {
	"WITH v AS (SELECT tk.id FROM parflow.task tk WHERE tk.state = 'dispatched' AND tk.priority > 0 "
	"            ORDER BY tk.priority DESC, tk.dispatched_at DESC LIMIT $1 FOR UPDATE SKIP LOCKED), "
	"u AS (UPDATE parflow.task tk SET state = 'ready', dispatched_at = NULL FROM v WHERE tk.id = v.id "
	"      RETURNING tk.id, tk.run_id) "
	"INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"SELECT u.run_id, u.id, 'preempted', '{\"why\": \"P0 run waiting\"}' FROM u ORDER BY u.id",
	1, {INT4OID}
};

static PfStmt st_interrupt = {
	"WITH v AS (SELECT tk.id FROM parflow.task tk "
	"            WHERE tk.state = 'running'" PF_ON_ACTIVE_IDX("tk") " AND tk.priority > 0 AND tk.interrupted_at IS NULL "
	"            ORDER BY tk.priority DESC, tk.started_at DESC LIMIT $1 FOR UPDATE SKIP LOCKED), "
	"u AS (UPDATE parflow.task tk SET interrupted_at = clock_timestamp() FROM v WHERE tk.id = v.id "
	"      RETURNING tk.id, tk.run_id, tk.agent, tk.worker, tk.stage_ord, tk.priority, tk.started_at), "
	"e AS (INSERT INTO parflow.event (run_id, task_id, kind, detail) "
	"      SELECT u.run_id, u.id, 'interrupt', jsonb_build_object('worker', u.worker, 'why', 'P0 run waiting') "
	"        FROM u ORDER BY u.priority DESC, u.started_at DESC) "
	"SELECT u.id, u.run_id, u.agent, s.name FROM u JOIN parflow.run r ON r.id = u.run_id "
	PF_STAGE_OF("s", "r.version_id", "u.stage_ord", "name")
	" ORDER BY u.priority DESC, u.started_at DESC",
	1, {INT4OID}
};

/*
 * Make room for P0 tasks: take back dispatched (unclaimed) lower-priority
 * tasks, the lowest priority and least advanced first; then interrupt
 * running ones, which free their slots when their agents release them.
 * Returns the slots freed at once.
 */
static int
preempt(int global_free)
{
	Datum		v[2] = {Int32GetDatum(global_free), Int32GetDatum(pf_max_parallel_stages)};
	int			want,
				freed,
				n,
				i;

	pf_exec(&st_p0_waiting, NULL, NULL, 1);
	if (!pf_bool(0, 1))
		return 0;
	pf_exec(&st_p0_want, v, NULL, 1);
	want = pf_int4(0, 1);
	if (want <= 0)
		return 0;
	v[0] = Int32GetDatum(want);
	freed = pf_exec(&st_take_back, v, NULL, 0);
	want -= freed;
	if (want > 0)
	{
		v[0] = Int32GetDatum(want);
		n = pf_exec(&st_interrupt, v, NULL, 0);
		for (i = 0; i < n; i++)
			pf_notify_agent(pf_text(i, 3), pf_payload("interrupt", pf_int8(i, 1), pf_int8(i, 2),
													  pf_text(i, 4), NULL));
	}
	return freed;
}

/* ---- choosing ready tasks under the caps ------------------------------------- */

/* Tasks at work per run (ord -1) and per (run, affinity rule ord). */
typedef struct PfSlotKey
{
	int64		run;
	int32		ord;
	int32		pad;
} PfSlotKey;

typedef struct PfSlot
{
	PfSlotKey	key;
	int			active;
} PfSlot;

static PfStmt st_active = {
	"SELECT tk.run_id, -1, count(*)::integer FROM parflow.task tk "
	" WHERE" PF_ACTIVE("tk") " GROUP BY tk.run_id "
	"UNION ALL "
	"SELECT tk.run_id, a.ord, count(*)::integer FROM parflow.task tk "
	"  JOIN parflow.run r ON r.id = tk.run_id "
	"  JOIN parflow.affinity a ON a.version_id = r.version_id AND tk.agent = ANY (a.agents) "
	" WHERE" PF_ACTIVE("tk") " GROUP BY tk.run_id, a.ord",
	0, {0}
};

/*
 * Ready tasks of running runs in dispatch order (strict order), or the
 * first $1 ready tasks of every running run (fair share: the walk must see
 * every run that waits, however many ready tasks a bigger run has before).
 */
#define PF_WALK_COLS "tk.id, tk.run_id, tk.agent, r.max_parallel, r.version_id, tk.priority, tk.stage_ord"

static PfStmt st_walk = {
	"SELECT " PF_WALK_COLS
	"  FROM parflow.task tk JOIN parflow.run r ON r.id = tk.run_id AND r.state = 'running' "
	" WHERE " PF_ALL_READY("tk") " AND " PF_READY_NOW("tk")
	" ORDER BY " PF_DISPATCH_ORDER("tk") " LIMIT $1",
	1, {INT4OID}
};

static PfStmt st_walk_runs = {
	"SELECT " PF_WALK_COLS
	"  FROM parflow.run r CROSS JOIN LATERAL ( "
	"       SELECT t.id, t.run_id, t.agent, t.priority, t.rank, t.stage_ord FROM parflow.task t "
	"        WHERE t.run_id = r.id AND t.state = 'ready' AND " PF_READY_NOW("t")
	"        ORDER BY " PF_DISPATCH_ORDER("t") " LIMIT $1) tk "
	" WHERE r.state = 'running' "
	" ORDER BY " PF_DISPATCH_ORDER("tk"),
	1, {INT4OID}
};

/* A ready task the walk found. */
typedef struct PfCand
{
	int64		id;
	int64		run;
	int64		version;
	char	   *agent;
	int32		max_parallel;
	int32		priority;
	int32		stage_ord;
} PfCand;

static void
load_cand(int row, PfCand *c)
{
	c->id = pf_int8(row, 1);
	c->run = pf_int8(row, 2);
	c->agent = pf_text(row, 3);
	c->max_parallel = pf_int4(row, 4);
	c->version = pf_int8(row, 5);
	c->priority = pf_int4(row, 6);
	c->stage_ord = pf_int4(row, 7);
}

/* The affinity rules of the versions of running runs. */
static PfStmt st_rules = {
	"SELECT a.version_id, a.ord, a.max_concurrent, a.agents FROM parflow.affinity a "
	" WHERE a.version_id IN (SELECT r.version_id FROM parflow.run r WHERE r.state = 'running') "
	" ORDER BY a.version_id, a.ord",
	0, {0}
};

typedef struct PfRule
{
	int64		version;
	int32		ord;
	int32		max_concurrent;
	int			nagents;
	char	  **agents;
} PfRule;

/* The rules of the running runs' versions, read once per pass. */
static PfRule *
load_rules(int *nrules)
{
	int			n = pf_exec(&st_rules, NULL, NULL, 0);
	PfRule	   *rules = palloc(sizeof(PfRule) * Max(n, 1));
	int			i;

	for (i = 0; i < n; i++)
	{
		bool		isnull;
		Datum	   *elems;
		int			k;

		rules[i].version = pf_int8(i, 1);
		rules[i].ord = pf_int4(i, 2);
		rules[i].max_concurrent = pf_int4(i, 3);
		deconstruct_array(DatumGetArrayTypeP(pf_datum(i, 4, &isnull)), TEXTOID, -1, false,
						  TYPALIGN_INT, &elems, NULL, &rules[i].nagents);
		rules[i].agents = palloc(sizeof(char *) * Max(rules[i].nagents, 1));
		for (k = 0; k < rules[i].nagents; k++)
			rules[i].agents[k] = TextDatumGetCString(elems[k]);
	}
	*nrules = n;
	return rules;
}

static bool
rule_covers(PfRule *rule, int64 version, const char *agent)
{
	int			k;

	if (rule->version != version)
		return false;
	for (k = 0; k < rule->nagents; k++)
		if (strcmp(rule->agents[k], agent) == 0)
			return true;
	return false;
}

/* ---- concurrency rules ---------------------------------------------------- */

/*
 * The concurrency rules that bind running runs: one row per (run, rule)
 * whose run input has the rule's key, with that key's value (as JSON text:
 * equal values, equal text).
 */
static PfStmt st_conc_rules = {
	"SELECT r.id, c.name, (r.input -> c.key)::text, c.max_concurrent, c.stage_ords "
	"  FROM parflow.run r JOIN parflow.concurrency c ON c.version_id = r.version_id "
	" WHERE r.state = 'running' AND r.input ? c.key "
	" ORDER BY r.id, c.ord",
	0, {0}
};

/*
 * Tasks at work per rule name and key value, in runs of every state: what
 * parflow._conc_at_work counts for one of them, for all at once.
 */
static PfStmt st_conc_active = {
	"SELECT c.name, (r.input -> c.key)::text, count(*)::integer "
	"  FROM parflow.task tk JOIN parflow.run r ON r.id = tk.run_id "
	"  JOIN parflow.concurrency c ON c.version_id = r.version_id "
	"   AND (c.stage_ords IS NULL OR tk.stage_ord = ANY (c.stage_ords)) "
	" WHERE" PF_ACTIVE("tk") " AND r.input ? c.key "
	" GROUP BY 1, 2",
	0, {0}
};

/* One limit: a rule name and a key value. */
typedef struct PfLimit
{
	char	   *name;
	char	   *value;
	int			active;
} PfLimit;

/* A rule as it binds one run. */
typedef struct PfConc
{
	int64		run;
	int32		max_concurrent;
	int			nstages;		/* -1: every stage */
	int32	   *stages;
	int			limit;			/* index in PfConcSet.limits */
} PfConc;

typedef struct PfConcSet
{
	PfConc	   *rules;			/* by run */
	int			nrules;
	PfLimit    *limits;
	int			nlimits;
} PfConcSet;

static int
find_limit(PfConcSet *cs, const char *name, const char *value)
{
	int			i;

	for (i = 0; i < cs->nlimits; i++)
		if (strcmp(cs->limits[i].name, name) == 0 && strcmp(cs->limits[i].value, value) == 0)
			return i;
	return -1;
}

/* Read the rules that bind running runs and what their limits have at work. */
static void
load_conc(PfConcSet *cs)
{
	int			n = pf_exec(&st_conc_rules, NULL, NULL, 0);
	int			i;

	cs->rules = palloc(sizeof(PfConc) * Max(n, 1));
	cs->limits = palloc(sizeof(PfLimit) * Max(n, 1));
	cs->nrules = n;
	cs->nlimits = 0;
	for (i = 0; i < n; i++)
	{
		PfConc	   *c = &cs->rules[i];
		char	   *name = pf_text(i, 2);
		char	   *value = pf_text(i, 3);
		bool		isnull;
		Datum		d = pf_datum(i, 5, &isnull);

		c->run = pf_int8(i, 1);
		c->max_concurrent = pf_int4(i, 4);
		c->nstages = -1;
		c->stages = NULL;
		if (!isnull)
		{
			Datum	   *elems;
			int			k;

			deconstruct_array(DatumGetArrayTypeP(d), INT4OID, 4, true, TYPALIGN_INT,
							  &elems, NULL, &c->nstages);
			c->stages = palloc(sizeof(int32) * Max(c->nstages, 1));
			for (k = 0; k < c->nstages; k++)
				c->stages[k] = DatumGetInt32(elems[k]);
		}
		c->limit = find_limit(cs, name, value);
		if (c->limit < 0)
		{
			c->limit = cs->nlimits++;
			cs->limits[c->limit].name = name;
			cs->limits[c->limit].value = value;
			cs->limits[c->limit].active = 0;
		}
	}
	if (n == 0)
		return;
	n = pf_exec(&st_conc_active, NULL, NULL, 0);
	for (i = 0; i < n; i++)
	{
		int			l = find_limit(cs, pf_text(i, 1), pf_text(i, 2));

		if (l >= 0)
			cs->limits[l].active = pf_int4(i, 3);
	}
}

static bool
conc_covers(PfConc *c, int32 stage_ord)
{
	int			k;

	if (c->nstages < 0)
		return true;
	for (k = 0; k < c->nstages; k++)
		if (c->stages[k] == stage_ord)
			return true;
	return false;
}

/* The first rule of run in cs (rules are sorted by run), or nrules. */
static int
conc_first(PfConcSet *cs, int64 run)
{
	int			lo = 0,
				hi = cs->nrules;

	while (lo < hi)
	{
		int			mid = (lo + hi) / 2;

		if (cs->rules[mid].run < run)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Whether every concurrency limit on candidate c has room. */
static bool
conc_room(PfConcSet *cs, PfCand *c)
{
	int			i;

	for (i = conc_first(cs, c->run); i < cs->nrules && cs->rules[i].run == c->run; i++)
		if (conc_covers(&cs->rules[i], c->stage_ord) &&
			pf_room(cs->rules[i].max_concurrent, cs->limits[cs->rules[i].limit].active) == 0)
			return false;
	return true;
}

static void
conc_take(PfConcSet *cs, PfCand *c)
{
	int			i;

	for (i = conc_first(cs, c->run); i < cs->nrules && cs->rules[i].run == c->run; i++)
		if (conc_covers(&cs->rules[i], c->stage_ord))
			cs->limits[cs->rules[i].limit].active++;
}

/* ---- choosing ------------------------------------------------------------- */

/*
 * Lock the chosen tasks that are still ready and that no other transaction
 * holds (a completion handing its slot over), one index probe each: an
 * array compared with every row of a scan would be quadratic.
 */
static PfStmt st_lock_chosen = {
	"SELECT l.id FROM unnest($1::bigint[]) x(id) "
	" CROSS JOIN LATERAL (SELECT t.id FROM parflow.task t WHERE t.id = x.id AND " PF_STATE_IS("t", "ready")
	"                      LIMIT 1 FOR UPDATE SKIP LOCKED) l",
	1, {INT8ARRAYOID}
};

/*
 * Mark the locked tasks dispatched, their events in the order given (the
 * dispatch order); the array is joined to the table, each element probing
 * the primary key.
 */
static PfStmt st_mark = {
	"WITH u AS (UPDATE parflow.task tk SET state = 'dispatched', dispatched_at = clock_timestamp() "
	"             FROM unnest($1::bigint[]) WITH ORDINALITY x(id, n) "
	"            WHERE tk.id = x.id RETURNING tk.id, tk.run_id, x.n) "
	"INSERT INTO parflow.event (run_id, task_id, kind) "
	"SELECT u.run_id, u.id, 'dispatched' FROM u ORDER BY u.n",
	1, {INT8ARRAYOID}
};

/* The stage names of a version, for the notifications (one read per version and pass). */
static PfStmt st_stage_names = {
	"SELECT s.ord, s.name FROM parflow.stage s WHERE s.version_id = $1",
	1, {INT8OID}
};

typedef struct PfNameKey
{
	int64		version;
	int32		ord;
	int32		pad;
} PfNameKey;

typedef struct PfName
{
	PfNameKey	key;
	char	   *name;
} PfName;

/* The name of stage ord of version, from names (filled a version at a time). */
static char *
stage_name(HTAB *names, int64 version, int32 ord)
{
	PfNameKey	key;
	PfName	   *e;
	bool		found;

	memset(&key, 0, sizeof(key));
	key.version = version;
	key.ord = -1;				/* marks a version already read */
	(void) hash_search(names, &key, HASH_ENTER, &found);
	if (!found)
	{
		Datum		v[1] = {Int64GetDatum(version)};
		int			n = pf_exec(&st_stage_names, v, NULL, 0);
		int			i;

		for (i = 0; i < n; i++)
		{
			key.ord = pf_int4(i, 1);
			e = hash_search(names, &key, HASH_ENTER, NULL);
			e->name = pf_text(i, 2);
		}
	}
	key.ord = ord;
	e = hash_search(names, &key, HASH_FIND, NULL);
	if (e == NULL)
		elog(ERROR, "parflow: stage %d of version " INT64_FORMAT " not found", ord, version);
	return e->name;
}

static int *
slot(HTAB *slots, int64 run, int32 ord)
{
	PfSlotKey	key;
	PfSlot	   *s;
	bool		found;

	memset(&key, 0, sizeof(key));
	key.run = run;
	key.ord = ord;
	s = hash_search(slots, &key, HASH_ENTER, &found);
	if (!found)
		s->active = 0;
	return &s->active;
}

/*
 * Count the tasks at work per run and per (run, rule) into a new table of
 * slots; returns how many are at work in all.
 */
static int
count_slots(HTAB **slots)
{
	HASHCTL		ctl;
	int			n,
				i,
				all = 0;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(PfSlotKey);
	ctl.entrysize = sizeof(PfSlot);
	ctl.hcxt = CurrentMemoryContext;
	*slots = hash_create("parflow slots", 256, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	n = pf_exec(&st_active, NULL, NULL, 0);
	for (i = 0; i < n; i++)
	{
		*slot(*slots, pf_int8(i, 1), pf_int4(i, 2)) = pf_int4(i, 3);
		if (pf_int4(i, 2) == -1)
			all += pf_int4(i, 3);
	}
	return all;
}

/*
 * Fair share: the walk's candidates queued per run, in dispatch order
 * within each run; a pick takes the next candidate of the run that comes
 * first by (priority, tasks at work, its next candidate's dispatch order).
 */
typedef struct PfRunQueue
{
	int64		run;
	int		   *cand;			/* indexes into the walk's candidates */
	int			n;
	int			pos;
	int		   *active;			/* the run's slot count, as choose() updates it */
} PfRunQueue;

typedef struct PfQueueKey
{
	int64		run;
	int			queue;
} PfQueueKey;

static PfRunQueue *
queue_runs(PfCand *cands, int ncands, HTAB *slots, int *nqueues)
{
	HASHCTL		ctl;
	HTAB	   *index;
	PfRunQueue *q = palloc(sizeof(PfRunQueue) * Max(ncands, 1));
	int			nq = 0;
	int			i;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(PfQueueKey);
	ctl.hcxt = CurrentMemoryContext;
	index = hash_create("parflow run queues", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	/* each run's candidates counted, then placed (in the walk's order) */
	for (i = 0; i < ncands; i++)
	{
		bool		found;
		PfQueueKey *k = hash_search(index, &cands[i].run, HASH_ENTER, &found);

		if (!found)
		{
			k->queue = nq++;
			q[k->queue].run = cands[i].run;
			q[k->queue].n = 0;
			q[k->queue].pos = 0;
			q[k->queue].active = slot(slots, cands[i].run, -1);
		}
		q[k->queue].n++;
	}
	for (i = 0; i < nq; i++)
	{
		q[i].cand = palloc(sizeof(int) * q[i].n);
		q[i].n = 0;
	}
	for (i = 0; i < ncands; i++)
	{
		PfQueueKey *k = hash_search(index, &cands[i].run, HASH_FIND, NULL);

		q[k->queue].cand[q[k->queue].n++] = i;
	}
	*nqueues = nq;
	return q;
}

static int
pick_fair(PfRunQueue *q, int nq, PfCand *cands)
{
	int			best = -1;
	int			i;

	for (i = 0; i < nq; i++)
	{
		PfRunQueue *b;
		int			ci,
					bi;

		if (q[i].pos >= q[i].n)
			continue;
		if (best < 0)
		{
			best = i;
			continue;
		}
		b = &q[best];
		ci = q[i].cand[q[i].pos];
		bi = b->cand[b->pos];
		if (cands[ci].priority < cands[bi].priority ||
			(cands[ci].priority == cands[bi].priority &&
			 (*q[i].active < *b->active || (*q[i].active == *b->active && ci < bi))))
			best = i;
	}
	return best < 0 ? -1 : q[best].cand[q[best].pos++];
}

/*
 * Dispatch up to free tasks under the counts in slots, nruns runs running;
 * returns how many.
 */
static int
choose(int free, HTAB *slots, int nruns)
{
	HASHCTL		ctl;
	HTAB	   *passed;
	HTAB	   *marked_ids;
	HTAB	   *names;
	PfRule	   *rules;
	int			nrules;
	PfConcSet	conc;
	bool		fair = pf_fair_share;
	int			lim = free * 4 + 64;
	int			dispatched = 0;
	int			i;

	memset(&ctl, 0, sizeof(ctl));
	ctl.hcxt = CurrentMemoryContext;
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(int64);
	passed = hash_create("parflow passed", 256, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	marked_ids = hash_create("parflow marked", 256, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	ctl.keysize = sizeof(PfNameKey);
	ctl.entrysize = sizeof(PfName);
	names = hash_create("parflow stage names", 256, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	rules = load_rules(&nrules);
	load_conc(&conc);

	/*
	 * Under fair share each run gets about its share of the free slots: the
	 * walk starts with twice that from each running run, and goes on with
	 * more when some run had as many (the others had fewer ready).
	 */
	if (fair)
	{
		nruns = Max(nruns, 1);
		lim = Min(free, (2 * free + nruns - 1) / nruns + 1);
	}

	/*
	 * Walk ready tasks a batch at a time; tasks held back by their run's
	 * cap, an affinity rule or a concurrency rule are passed over, and when
	 * the walk may have stopped short of tasks that could go, it goes on
	 * with a larger batch.
	 */
	while (free > 0)
	{
		Datum		v[1] = {Int32GetDatum(lim)};
		PfCand	   *cands;
		PfCand	  **chosen;
		PfRunQueue *queues = NULL;
		int			nqueues = 0;
		int			nchosen = 0;
		int			seen;
		int			next = 0;
		bool		exhausted;
		int64	   *ids;

		CHECK_FOR_INTERRUPTS();
		seen = pf_exec(fair ? &st_walk_runs : &st_walk, v, NULL, 0);
		cands = palloc(sizeof(PfCand) * Max(seen, 1));
		for (i = 0; i < seen; i++)
			load_cand(i, &cands[i]);
		exhausted = seen < lim;
		if (fair)
		{
			queues = queue_runs(cands, seen, slots, &nqueues);
			exhausted = true;
			for (i = 0; i < nqueues; i++)
				if (queues[i].n >= lim)
					exhausted = false;
		}
		chosen = palloc(sizeof(PfCand *) * Max(Min(seen, free), 1));
		while (nchosen < free)
		{
			int			ci = fair ? pick_fair(queues, nqueues, cands) : (next < seen ? next++ : -1);
			PfCand	   *c;
			int		   *run_active;
			int			r;
			bool		held_back = false;

			if (ci < 0)
				break;
			c = &cands[ci];
			if (hash_search(passed, &c->id, HASH_FIND, NULL) != NULL)
				continue;
			run_active = slot(slots, c->run, -1);
			if (pf_room(c->max_parallel, *run_active) == 0)
				continue;
			for (r = 0; r < nrules && !held_back; r++)
				held_back = rule_covers(&rules[r], c->version, c->agent) &&
					pf_room(rules[r].max_concurrent, *slot(slots, c->run, rules[r].ord)) == 0;
			if (held_back || !conc_room(&conc, c))
				continue;
			(*run_active)++;
			for (r = 0; r < nrules; r++)
				if (rule_covers(&rules[r], c->version, c->agent))
					(*slot(slots, c->run, rules[r].ord))++;
			conc_take(&conc, c);
			chosen[nchosen++] = c;
		}
		if (nchosen > 0)
		{
			int			marked,
						j;

			ids = palloc(sizeof(int64) * nchosen);
			for (i = 0; i < nchosen; i++)
				ids[i] = chosen[i]->id;
			v[0] = pf_int8_array(ids, nchosen);
			marked = pf_exec(&st_lock_chosen, v, NULL, 0);
			for (j = 0; j < marked; j++)
			{
				int64		id = pf_int8(j, 1);

				hash_search(marked_ids, &id, HASH_ENTER, NULL);
			}

			/*
			 * Those not marked (another transaction holds them) keep the
			 * slots counted for them: this pass gives out less, never more.
			 */
			j = 0;
			for (i = 0; i < nchosen; i++)
			{
				if (hash_search(marked_ids, &chosen[i]->id, HASH_FIND, NULL) != NULL)
					ids[j++] = chosen[i]->id;
				else
					hash_search(passed, &chosen[i]->id, HASH_ENTER, NULL);
			}
			if (j > 0)
			{
				v[0] = pf_int8_array(ids, j);
				pf_exec(&st_mark, v, NULL, 0);
			}
			for (i = 0; i < nchosen; i++)
				if (hash_search(marked_ids, &chosen[i]->id, HASH_FIND, NULL) != NULL)
					pf_notify_agent(chosen[i]->agent,
									pf_payload("dispatch", chosen[i]->id, chosen[i]->run,
											   stage_name(names, chosen[i]->version,
														  chosen[i]->stage_ord), NULL));
			dispatched += marked;
			free -= nchosen;
		}
		if (exhausted || free <= 0)
			break;
		lim *= 4;
	}
	return dispatched;
}

/*
 * The running runs: how many (fair share sizes its walk by them), and the
 * earliest time a delayed one may start, when later than now.
 */
static PfStmt st_runs_now = {
	"SELECT count(*)::integer, min(r.not_before) FILTER (WHERE r.not_before > clock_timestamp()) "
	"  FROM parflow.run r WHERE r.state = 'running'",
	0, {0}
};

static TimestampTz next_due = 0;

/* When the last pass in this process wants the next one (0: at naptime). */
TimestampTz
pf_pass_next_due(void)
{
	return next_due;
}

static TimestampTz last_ended = 0;

/* parflow._dispatch() returns integer: the pass; how many tasks it dispatched */
Datum
parflow_dispatch(PG_FUNCTION_ARGS)
{
	LOCKTAG		tag;
	int			global_free;
	int			n = 0;
	TimestampTz now;
	bool		times;
	HTAB	   *slots;
	int			nruns;
	Datum		due;
	bool		isnull;

	/* one pass at a time (a test may run one beside the dispatcher's) */
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, 0, 0, PF_PASS_LOCK_CLASS);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "parflow: SPI_connect failed");
	settle_runs();

	/*
	 * Timeouts, unclaimed tasks, leases and interrupts are times to look at,
	 * not events: the dispatcher, whose passes follow each other closely
	 * under load, looks at them at most every 100 ms (each look reads every
	 * task at work); a pass run by hand always does.
	 */
	now = GetCurrentTimestamp();
	times = !IsBackgroundWorker || TimestampDifferenceExceeds(last_ended, now, 100);
	if (times)
	{
		end_attempts();
		last_ended = now;
	}
	/* awaiting tasks: ended child runs, and (with the times) wait timeouts */
	pf_waits_pass(times);
	global_free = pf_max_parallel_stages - count_slots(&slots);
	/* tasks taken back for P0 runs free their slots: count again */
	if (preempt(global_free) > 0)
		global_free = pf_max_parallel_stages - count_slots(&slots);
	/* a delayed run's start is a time to wake for (see the dispatcher) */
	pf_exec(&st_runs_now, NULL, NULL, 1);
	nruns = pf_int4(0, 1);
	due = pf_datum(0, 2, &isnull);
	next_due = isnull ? 0 : DatumGetTimestampTz(due);
	if (global_free > 0)
		n = choose(global_free, slots, nruns);
	SPI_finish();
	PG_RETURN_INT32(n);
}

static PfStmt st_dispatched = {
	"SELECT t.id, t.run_id, t.agent, s.name FROM parflow.task t "
	"  JOIN parflow.run r ON r.id = t.run_id "
	PF_STAGE_OF("s", "r.version_id", "t.stage_ord", "name")
	" WHERE t.state = 'dispatched' ORDER BY t.id",
	0, {0}
};

/*
 * parflow._renotify() returns integer: send the notification of every
 * dispatched task again (the dispatcher calls it when notes may have been
 * lost).
 */
Datum
parflow_renotify(PG_FUNCTION_ARGS)
{
	int			n,
				i;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "parflow: SPI_connect failed");
	n = pf_exec(&st_dispatched, NULL, NULL, 0);
	for (i = 0; i < n; i++)
		pf_notify_agent(pf_text(i, 3), pf_payload("dispatch", pf_int8(i, 1), pf_int8(i, 2),
												  pf_text(i, 4), NULL));
	SPI_finish();
	PG_RETURN_INT32(n);
}
