/*
 * db.c -- parflow-agent's libpq connection and the SQL calls it makes.
 *
 * Owns the one connection: the first connect (which also checks --lease and
 * LISTENs), losing it and reconnecting with backoff (100 ms doubling to 2 s,
 * asynchronously, so children keep being served meanwhile), and the single
 * query in flight at a time, sent with PQsendQueryPrepared (each call is
 * prepared on the connection at its first use) and read back when poll()
 * says the socket is readable.  What to send next is derived from the
 * task table, in this order: releases, reports (complete/fail), heartbeats
 * that are due, then a claim when capacity is free.  With --batch N a claim
 * asks for up to N tasks (parflow_claim's max_tasks) and the successes that
 * are due go in one parflow_complete_many (a lone one in parflow_complete,
 * which hands its slot over); with --batch 1 a success goes with
 * the next claim in one parflow_complete_and_claim (unless
 * --no-complete-and-claim).  A server without those calls (before 0.4.0)
 * answers 42883 once, and the agent uses the separate calls from then on.
 * A report whose outcome
 * was lost with the connection stays in the table and is sent again after the
 * reconnect (the server refuses a second report of the same lease with
 * SQLSTATE 55000).  Notifications on parflow_<KIND> are scanned here and turn
 * into a claim (dispatch), a release (interrupt) or a drop (cancel).
 */
#include "agent.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libpq-fe.h"

#define BACKOFF_MIN_MS 100.0
#define BACKOFF_MAX_MS 2000.0
#define CONNECT_TIMEOUT_MS 10000.0
#define RETRY_MS 1000.0         /* a transient error: try again after this */

/*
 * The claim.  The estimate is read through to_jsonb so that a parflow_claim
 * without an estimate column still works (the estimate is then NULL).  The
 * same columns come back from parflow_claim with max_tasks (--batch) and from
 * parflow_complete_and_claim (parflow 0.4.0 on).
 */
#define SQL_CLAIM_COLS \
	"SELECT c.task, c.token, c.run, c.stage, c.attempt, c.input, " \
	"extract(epoch FROM (to_jsonb(c) ->> 'estimate')::interval)::float8 "
#define SQL_CLAIM SQL_CLAIM_COLS \
	"FROM parflow_claim($1::text, $2::text, $3::text::interval) AS c"
#define SQL_CLAIM_MANY SQL_CLAIM_COLS \
	"FROM parflow_claim($1::text, $2::text, $3::text::interval, max_tasks => $4::int) AS c"
#define SQL_COMPLETE_AND_CLAIM SQL_CLAIM_COLS \
	"FROM parflow_complete_and_claim($1::bigint, $2::uuid, $3::jsonb, $4::text, $5::text, " \
	"$6::text::interval) AS c"
#define SQL_COMPLETE_MANY \
	"SELECT m.task, m.accepted, m.sqlstate, m.message " \
	"FROM parflow_complete_many($1::bigint[], $2::uuid[], $3::jsonb[]) AS m"
#define MANY_MAX_TASKS 1000             /* tasks per parflow_complete_many */
#define MANY_MAX_BYTES (8 * 1024 * 1024)    /* their outputs, roughly */
#define SQL_HEARTBEAT "SELECT parflow_heartbeat($1::bigint, $2::uuid)"
#define SQL_COMPLETE "SELECT parflow_complete($1::bigint, $2::uuid, $3::jsonb)"
#define SQL_FAIL "SELECT parflow_fail($1::bigint, $2::uuid, $3::text, $4::boolean)"
#define SQL_RELEASE "SELECT parflow_release($1::bigint, $2::uuid)"

typedef enum
{
	CS_DOWN,
	CS_CONNECTING,
	CS_UP
} ConnState;

typedef enum
{
	RQ_NONE,
	RQ_CLAIM,
	RQ_HEARTBEAT,
	RQ_REPORT,
	RQ_RELEASE,
	RQ_COMPLETE_CLAIM,          /* parflow_complete_and_claim */
	RQ_COMPLETE_MANY            /* parflow_complete_many */
} ReqKind;

static PGconn *conn;
static int  conn_epoch;         /* connections made: a new one prepares again */
static ConnState cstate = CS_DOWN;
static PostgresPollingStatusType cpoll;
static double connect_deadline;
static double retry_at;
static double backoff_ms = BACKOFF_MIN_MS;
static int  attempts;           /* reconnect attempts in this outage */

static ReqKind inflight = RQ_NONE;
static long long inflight_task;
static PGresult *inflight_res;
static long long inflight_ids[MANY_MAX_TASKS];  /* RQ_COMPLETE_MANY: its tasks */
static int  inflight_n;
static bool claim_again;        /* a dispatch arrived while a claim ran */
static int  claim_asked;        /* tasks asked of the claim in flight */
static bool claim_was_many;     /* ... with max_tasks */
static char *last_claim_error;

/*
 * The calls of parflow 0.4.0, used while the server has them: an older one
 * answers 42883 (undefined function), and the agent goes back, once and for
 * the rest of its life, to the calls it had before.
 */
static bool claim_many_ok = true;
static bool cac_ok = true;
static bool many_ok = true;

static double
dmin(double a, double b)
{
	return a < b ? a : b;
}

/* Whether a report or release of task ID is in flight. */
static bool
is_inflight(long long id)
{
	int         i;

	if (inflight == RQ_COMPLETE_MANY)
	{
		for (i = 0; i < inflight_n; i++)
			if (inflight_ids[i] == id)
				return true;
		return false;
	}
	return inflight != RQ_NONE && inflight_task == id;
}

/* SQLSTATE of a function the server does not have (an older parflow). */
static bool
missing_function(const char *state)
{
	return state && (strcmp(state, "42883") == 0 || strcmp(state, "42725") == 0);
}

/* Server notices (and the FATAL of a terminated backend) go to our log. */
static void
notice_processor(void *arg, const char *message)
{
	size_t      n = strlen(message);

	(void) arg;
	while (n > 0 && message[n - 1] == '\n')
		n--;
	agent_log(LOG_INFO, NULL, "server: %.*s", (int) n, message);
}

/* A malloc'ed one-line copy of libpq's error text: blanks and breaks collapsed. */
static char *
one_line(const char *msg)
{
	char       *s = xstrdup(msg ? msg : "");
	size_t      i,
				o = 0;

	for (i = 0; s[i]; i++)
	{
		char        c = s[i];

		if (c == '\n' || c == '\t' || c == '\r')
			c = ' ';
		if (c == ' ' && (o == 0 || s[o - 1] == ' '))
			continue;
		s[o++] = c;
	}
	while (o > 0 && s[o - 1] == ' ')
		o--;
	s[o] = '\0';
	return s;
}

/* A malloc'ed short text of the error in RES: message, detail, SQLSTATE. */
static char *
result_error(const PGresult *res)
{
	const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	char       *text,
			   *line;

	if (primary == NULL)
		return one_line(PQresultErrorMessage(res));
	if (detail)
		text = xprintf("%s (%s) [%s]", primary, detail, state ? state : "?");
	else
		text = xprintf("%s [%s]", primary, state ? state : "?");
	line = one_line(text);
	free(text);
	return line;
}

/* Start a connection (asynchronously unless SYNC). */
static PGconn *
open_conn(bool sync)
{
	const char *keys[] = {"dbname", "fallback_application_name", NULL};
	const char *vals[] = {opt.conninfo, "parflow-agent", NULL};

	if (sync)
		return PQconnectdbParams(keys, vals, 1);
	return PQconnectStartParams(keys, vals, 1);
}

/* Deliver the notifications libpq has read. */
static void
process_notifies(double now)
{
	PGnotify   *n;

	while (conn && (n = PQnotifies(conn)) != NULL)
	{
		char        kind[32];
		long long   id;
		Task       *t;

		if (!payload_scan(n->extra, kind, sizeof(kind), &id))
		{
			agent_log(LOG_DEBUG, NULL, "notification without a kind ignored: %s", n->extra);
			PQfreemem(n);
			continue;
		}
		agent_log(LOG_DEBUG, NULL, "notification: %s", n->extra);
		t = id ? task_find(id) : NULL;
		if (strcmp(kind, "dispatch") == 0)
		{
			st.want_claim = true;
			if (inflight == RQ_CLAIM || inflight == RQ_COMPLETE_CLAIM)
				claim_again = true;
		}
		else if (strcmp(kind, "interrupt") == 0 && t)
		{
			if (t->state == TS_WORKING)
			{
				agent_log(LOG_INFO, t, "interrupted");
				work_stop(t, AFTER_RELEASE, now);
			}
			else
				agent_log(LOG_DEBUG, t, "interrupt ignored: the work already ended");
		}
		else if (strcmp(kind, "cancel") == 0 && t)
		{
			agent_log(LOG_INFO, t, "cancelled");
			if (t->state == TS_WORKING || t->state == TS_STOPPING)
			{
				if (t->state == TS_STOPPING)
					t->after = AFTER_DROP;
				else
					work_stop(t, AFTER_DROP, now);
			}
			else if (!is_inflight(t->id))
				task_remove(t);
			/* else: the report or release in flight gets its answer */
		}
		PQfreemem(n);
	}
}

/* Set up a fresh connection: encoding, --lease check (FIRST), LISTEN. */
static bool
setup_session(bool first, char **err)
{
	PGresult   *res;
	char       *ident,
			   *sql;

	conn_epoch++;
	PQsetNoticeProcessor(conn, notice_processor, NULL);
	if (PQsetClientEncoding(conn, "UTF8") != 0)
	{
		*err = one_line(PQerrorMessage(conn));
		return false;
	}
	if (first)
	{
		const char *params[1] = {opt.lease};

		res = PQexecParams(conn, "SELECT extract(epoch FROM $1::text::interval)::float8",
						   1, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
		{
			*err = xprintf("invalid --lease \"%s\": %s", opt.lease,
						   PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) ?
						   PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) :
						   PQerrorMessage(conn));
			PQclear(res);
			return false;
		}
		opt.lease_s = atof(PQgetvalue(res, 0, 0));
		PQclear(res);
		if (!(opt.lease_s > 0))
		{
			*err = xprintf("invalid --lease \"%s\": must be positive", opt.lease);
			return false;
		}
	}
	ident = PQescapeIdentifier(conn, opt.channel, strlen(opt.channel));
	if (ident == NULL)
	{
		*err = one_line(PQerrorMessage(conn));
		return false;
	}
	sql = xprintf("LISTEN %s", ident);
	PQfreemem(ident);
	res = PQexec(conn, sql);
	free(sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		*err = one_line(PQerrorMessage(conn));
		PQclear(res);
		return false;
	}
	PQclear(res);

	/*
	 * Warm the session up (parflow 0.2.0 on): the first task then does not
	 * pay for compiling the agent functions.  Older versions have no such
	 * function; any error here only costs that warm-up.
	 */
	{
		const char *params[1] = {opt.agent};

		res = PQexecParams(conn, "SELECT parflow_warm_up($1::text)", 1, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
			agent_log(LOG_DEBUG, NULL, "no warm-up: %s",
					  PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) ?
					  PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : PQerrorMessage(conn));
		PQclear(res);
	}
	return true;
}

/* Connect at start-up; a failure there is fatal (exit 1). */
bool
db_first_connect(void)
{
	char       *err = NULL;

	conn = open_conn(true);
	if (conn == NULL)
		die(1, "out of memory");
	if (PQstatus(conn) != CONNECTION_OK)
	{
		err = one_line(PQerrorMessage(conn));
		PQfinish(conn);
		die(1, "could not connect: %s", err);
	}
	if (!setup_session(true, &err))
	{
		PQfinish(conn);
		die(1, "%s", err);
	}
	cstate = CS_UP;
	return true;
}

void
db_close(void)
{
	if (inflight_res)
		PQclear(inflight_res);
	inflight_res = NULL;
	if (conn)
		PQfinish(conn);
	conn = NULL;
	cstate = CS_DOWN;
	free(last_claim_error);
	last_claim_error = NULL;
}

/* Wait before the next connection attempt. */
static void
schedule_retry(double now)
{
	retry_at = now + backoff_ms;
	backoff_ms = dmin(backoff_ms * 2, BACKOFF_MAX_MS);
}

/* The connection broke: forget the query in flight and plan a reconnect. */
static void
conn_lost(const char *why, double now)
{
	char       *msg = one_line(why);

	if (inflight == RQ_REPORT || inflight == RQ_RELEASE || inflight == RQ_COMPLETE_CLAIM)
	{
		Task       *t = task_find(inflight_task);

		/* its outcome is unknown: send it again once reconnected */
		if (t)
			t->report_resend = true;
		if (inflight == RQ_COMPLETE_CLAIM)
			agent_log(LOG_DEBUG, NULL, "a task complete-and-claim may have claimed is lost "
					  "with the connection: its lease will expire");
	}
	else if (inflight == RQ_COMPLETE_MANY)
	{
		int         i;

		for (i = 0; i < inflight_n; i++)
		{
			Task       *t = task_find(inflight_ids[i]);

			if (t)
				t->report_resend = true;
		}
	}
	inflight = RQ_NONE;
	inflight_n = 0;
	if (inflight_res)
		PQclear(inflight_res);
	inflight_res = NULL;
	if (conn)
		PQfinish(conn);
	conn = NULL;
	cstate = CS_DOWN;
	attempts = 0;
	backoff_ms = BACKOFF_MIN_MS;
	agent_log(LOG_INFO, NULL, "reconnecting: %s", msg[0] ? msg : "connection lost");
	free(msg);
	schedule_retry(now);
}

/* An attempt to reconnect failed. */
static void
connect_failed(const char *why, double now)
{
	char       *msg = one_line(why);

	if (conn)
		PQfinish(conn);
	conn = NULL;
	cstate = CS_DOWN;
	schedule_retry(now);
	agent_log(LOG_DEBUG, NULL, "reconnecting: attempt %d failed, next in %.0f ms: %s",
			  attempts, retry_at - now, msg);
	free(msg);
}

/* Drive an asynchronous reconnect one step. */
static void
connect_step(double now)
{
	char       *err = NULL;

	cpoll = PQconnectPoll(conn);
	if (cpoll == PGRES_POLLING_FAILED)
	{
		connect_failed(PQerrorMessage(conn), now);
		return;
	}
	if (cpoll != PGRES_POLLING_OK)
		return;
	if (!setup_session(false, &err))
	{
		connect_failed(err, now);
		free(err);
		return;
	}
	cstate = CS_UP;
	agent_log(LOG_INFO, NULL, "reconnected after %d attempt%s", attempts,
			  attempts == 1 ? "" : "s");
	backoff_ms = BACKOFF_MIN_MS;
	st.want_claim = true;
	process_notifies(now);
}

/*
 * True if RES says the connection itself failed (or is going away), or that
 * the server is read-only (25006: a standby, or a primary demoted by a
 * failover): the reconnect finds the primary through a multi-host conninfo
 * with target_session_attrs=read-write, and the report is sent again there.
 */
static bool
conn_error(const PGresult *res)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	if (PQstatus(conn) == CONNECTION_BAD || state == NULL)
		return true;
	return strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
		strcmp(state, "25006") == 0;
}

/* Errors worth sending again: serialization, deadlock, resources. */
static bool
transient(const char *state)
{
	return state && (strncmp(state, "40", 2) == 0 || strncmp(state, "53", 2) == 0);
}

/*
 * The calls are prepared on the connection at their first use (a named
 * statement each), so that the server parses and plans them once per
 * session instead of at every call.  A statement the server cannot prepare
 * (an older parflow without the function) is sent unprepared, and its
 * error is handled as before.
 */
#define MAX_PREPARED 16
typedef struct Prepared
{
	const char *sql;
	int         epoch;          /* the connection it was prepared on */
	bool        ok;
} Prepared;
static Prepared prepared[MAX_PREPARED];
static int  nprepared;

/* The name of SQL's prepared statement on this connection, or NULL. */
static const char *
prepared_name(const char *sql, int n)
{
	static char name[32];
	PGresult   *res;
	int         i;

	for (i = 0; i < nprepared && prepared[i].sql != sql && strcmp(prepared[i].sql, sql) != 0; i++)
		;
	if (i == nprepared)
	{
		if (nprepared == MAX_PREPARED)
			return NULL;
		prepared[nprepared].sql = sql;
		prepared[nprepared].epoch = -1;
		nprepared++;
	}
	snprintf(name, sizeof(name), "parflow_agent_%d", i);
	if (prepared[i].epoch != conn_epoch)
	{
		prepared[i].epoch = conn_epoch;
		res = PQprepare(conn, name, sql, n, NULL);
		prepared[i].ok = PQresultStatus(res) == PGRES_COMMAND_OK;
		if (!prepared[i].ok)
			agent_log(LOG_DEBUG, NULL, "not prepared (sent as it is): %s",
					  PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) ?
					  PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : PQerrorMessage(conn));
		PQclear(res);
	}
	return prepared[i].ok ? name : NULL;
}

static bool
send_query(ReqKind kind, Task *t, const char *sql, int n, const char *const *params,
		   double now)
{
	const char *name = prepared_name(sql, n);

	if (!(name ? PQsendQueryPrepared(conn, name, n, params, NULL, NULL, 0)
		  : PQsendQueryParams(conn, sql, n, NULL, params, NULL, NULL, 0)))
	{
		conn_lost(PQerrorMessage(conn), now);
		return false;
	}
	inflight = kind;
	inflight_task = t ? t->id : 0;
	return true;
}

/* Tasks that may still be claimed once T is reported done (and forgotten). */
static long
capacity_after(void)
{
	long        n = opt.concurrency - (st.ntasks - 1);

	if (opt.max_tasks > 0 && opt.max_tasks - (st.finished + 1) - (st.ntasks - 1) < n)
		n = opt.max_tasks - (st.finished + 1) - (st.ntasks - 1);
	return n;
}

/*
 * Whether the success of T goes with the next claim in one
 * parflow_complete_and_claim: working one task per claim (--batch 1), unless
 * --no-complete-and-claim, the server lacks it, we are shutting down, no
 * capacity would be free for the claim, or the report is sent again after a
 * lost connection or a refusal of the combined call (then on its own).
 */
static bool
use_complete_and_claim(const Task *t)
{
	return opt.batch == 1 && opt.complete_and_claim && cac_ok && !st.shutting_down &&
		!t->report_fail && !t->report_resend && !t->report_plain && capacity_after() > 0;
}

/* Append S to B as an element of an array literal: "..." with \ escapes. */
static void
array_elem(Buf *b, const char *s)
{
	const char *p;

	buf_append(b, "\"", 1);
	for (p = s; *p; p++)
	{
		if (*p == '"' || *p == '\\')
			buf_append(b, "\\", 1);
		buf_append(b, p, 1);
	}
	buf_append(b, "\"", 1);
}

/* A success that parflow_complete_many may take now. */
static bool
many_due(const Task *t, double now)
{
	return t->state == TS_REPORT && t->retry_at <= now && !t->report_fail && !t->report_plain;
}

/*
 * --batch: send the successes that are due in one parflow_complete_many (at
 * most MANY_MAX_TASKS of them, about MANY_MAX_BYTES of output).  False if
 * fewer than two are due: a lone success goes with parflow_complete, which
 * also hands its slot over to the next task of its run (complete_many leaves
 * the slots it frees to a dispatch pass).
 */
static bool
send_many(double now)
{
	Buf         ids = {0},
				tokens = {0},
				outputs = {0};
	size_t      bytes = 0;
	const char *params[3];
	int         i,
				n = 0;

	for (i = 0; i < st.ntasks && n < 2; i++)
		if (many_due(st.tasks[i], now))
			n++;
	if (n < 2)
		return false;
	n = 0;
	for (i = 0; i < st.ntasks && n < MANY_MAX_TASKS; i++)
	{
		Task       *t = st.tasks[i];
		char        id[32];

		if (!many_due(t, now))
			continue;
		if (n > 0 && bytes + strlen(t->report_text) > MANY_MAX_BYTES)
			break;
		snprintf(id, sizeof(id), "%s%lld", n ? "," : "{", t->id);
		buf_append(&ids, id, strlen(id));
		buf_append(&tokens, n ? "," : "{", 1);
		buf_append(&tokens, t->token, strlen(t->token));
		buf_append(&outputs, n ? "," : "{", 1);
		array_elem(&outputs, t->report_text);
		bytes += strlen(t->report_text);
		inflight_ids[n++] = t->id;
	}
	if (n == 0)
		return false;
	buf_append(&ids, "}", 1);
	buf_append(&tokens, "}", 1);
	buf_append(&outputs, "}", 1);
	params[0] = ids.data;
	params[1] = tokens.data;
	params[2] = outputs.data;
	if (send_query(RQ_COMPLETE_MANY, NULL, SQL_COMPLETE_MANY, 3, params, now))
		inflight_n = n;
	buf_free(&ids);
	buf_free(&tokens);
	buf_free(&outputs);
	return true;
}

/* Send the one query the task table calls for first, if any. */
static void
send_next(double now)
{
	char        id[32],
				num[16];
	const char *params[6];
	int         i;

	for (i = 0; i < st.ntasks; i++)
	{
		Task       *t = st.tasks[i];

		if (t->state != TS_RELEASE || t->retry_at > now)
			continue;
		snprintf(id, sizeof(id), "%lld", t->id);
		params[0] = id;
		params[1] = t->token;
		send_query(RQ_RELEASE, t, SQL_RELEASE, 2, params, now);
		return;
	}
	if (opt.batch > 1 && many_ok && send_many(now))
		return;
	for (i = 0; i < st.ntasks; i++)
	{
		Task       *t = st.tasks[i];

		if (t->state != TS_REPORT || t->retry_at > now)
			continue;
		snprintf(id, sizeof(id), "%lld", t->id);
		params[0] = id;
		params[1] = t->token;
		params[2] = t->report_text;
		params[3] = t->report_final ? "false" : "true";
		if (t->report_fail)
			send_query(RQ_REPORT, t, SQL_FAIL, 4, params, now);
		else if (use_complete_and_claim(t))
		{
			params[3] = opt.agent;
			params[4] = opt.worker;
			params[5] = opt.lease;
			/* the claim of this call answers any wake-up so far */
			st.want_claim = false;
			claim_again = false;
			claim_asked = 1;
			st.next_poll = now + opt.poll_ms;
			send_query(RQ_COMPLETE_CLAIM, t, SQL_COMPLETE_AND_CLAIM, 6, params, now);
		}
		else
			send_query(RQ_REPORT, t, SQL_COMPLETE, 3, params, now);
		return;
	}
	if (st.shutting_down)
		return;
	for (i = 0; i < st.ntasks; i++)
	{
		Task       *t = st.tasks[i];

		if (t->state != TS_WORKING || t->next_heartbeat > now)
			continue;
		snprintf(id, sizeof(id), "%lld", t->id);
		params[0] = id;
		params[1] = t->token;
		send_query(RQ_HEARTBEAT, t, SQL_HEARTBEAT, 2, params, now);
		return;
	}
	if (free_capacity() > 0 && (st.want_claim || st.next_poll <= now))
	{
		int         n = free_capacity();

		if (n > opt.batch)
			n = opt.batch;
		params[0] = opt.agent;
		params[1] = opt.worker;
		params[2] = opt.lease;
		st.want_claim = false;
		claim_again = false;
		st.next_poll = now + opt.poll_ms;
		claim_asked = n;
		claim_was_many = n > 1 && claim_many_ok;
		if (claim_was_many)
		{
			snprintf(num, sizeof(num), "%d", n);
			params[3] = num;
			send_query(RQ_CLAIM, NULL, SQL_CLAIM_MANY, 4, params, now);
		}
		else
		{
			claim_asked = 1;
			send_query(RQ_CLAIM, NULL, SQL_CLAIM, 3, params, now);
		}
	}
}

/* Connection upkeep and the next query; called once per loop turn. */
void
db_tick(double now)
{
	if (cstate == CS_DOWN && now >= retry_at)
	{
		attempts++;
		conn = open_conn(false);
		if (conn == NULL)
			die(1, "out of memory");
		if (PQstatus(conn) == CONNECTION_BAD)
		{
			connect_failed(PQerrorMessage(conn), now);
			return;
		}
		cstate = CS_CONNECTING;
		cpoll = PGRES_POLLING_WRITING;
		connect_deadline = now + CONNECT_TIMEOUT_MS;
		return;
	}
	if (cstate == CS_CONNECTING && now >= connect_deadline)
	{
		connect_failed("timeout expired", now);
		return;
	}
	if (cstate == CS_UP && inflight == RQ_NONE)
		send_next(now);
}

/* When db_tick next has something to do. */
double
db_deadline(double now)
{
	double      d = now + 3600e3;
	int         i;

	if (cstate == CS_DOWN)
		return retry_at;
	if (cstate == CS_CONNECTING)
		return connect_deadline;
	if (inflight != RQ_NONE)
		return d;
	for (i = 0; i < st.ntasks; i++)
	{
		Task       *t = st.tasks[i];

		if (t->state == TS_RELEASE || t->state == TS_REPORT)
			d = dmin(d, t->retry_at);
		if (t->state == TS_WORKING && !st.shutting_down)
			d = dmin(d, t->next_heartbeat);
	}
	if (!st.shutting_down && free_capacity() > 0)
		d = dmin(d, st.want_claim ? now : st.next_poll);
	return d;
}

/* The socket to poll, with the events it waits for; false if none. */
int
db_pollfd(struct pollfd *pfd)
{
	if (conn == NULL || PQsocket(conn) < 0)
		return 0;
	pfd->fd = PQsocket(conn);
	if (cstate == CS_CONNECTING)
		pfd->events = cpoll == PGRES_POLLING_READING ? POLLIN : POLLOUT;
	else
		pfd->events = POLLIN;
	return 1;
}

/* The first line of an error report, at most 200 bytes, for the log. */
static const char *
brief(const char *text, char *out, size_t size)
{
	size_t      n = strcspn(text, "\n");

	if (n >= size)
		n = size - 1;
	memcpy(out, text, n);
	out[n] = '\0';
	return out;
}

/*
 * Take the tasks that a claim (or complete-and-claim) returned in RES: start
 * their work, or give them back unworked when shutting down.  Returns how
 * many.
 */
static int
take_claimed(PGresult *res, double now)
{
	Task      **batch;
	int         rows = PQntuples(res),
				n = 0,
				r;

	batch = xmalloc(sizeof(Task *) * (rows > 0 ? rows : 1));
	for (r = 0; r < rows; r++)
	{
		Task       *t;

		if (PQgetisnull(res, r, 0) || PQgetisnull(res, r, 1))
			continue;
		t = task_new();
		t->id = strtoll(PQgetvalue(res, r, 0), NULL, 10);
		snprintf(t->token, sizeof(t->token), "%s", PQgetvalue(res, r, 1));
		t->run = strtoll(PQgetvalue(res, r, 2), NULL, 10);
		t->stage = xstrdup(PQgetvalue(res, r, 3));
		t->attempt = atoi(PQgetvalue(res, r, 4));
		t->input = xstrdup(PQgetisnull(res, r, 5) ? "{}" : PQgetvalue(res, r, 5));
		if (!PQgetisnull(res, r, 6))
			t->estimate = atof(PQgetvalue(res, r, 6));
		t->claimed_at = now;
		t->next_heartbeat = now + opt.heartbeat_ms;
		st.claimed++;
		agent_log(LOG_INFO, t, "claimed (run %lld)", t->run);
		if (st.shutting_down)
			/* the claim was in flight when SIGTERM came: give it back unworked */
			t->state = TS_RELEASE;
		else
			batch[n] = t;
		n++;
	}
	if (n > 0)
	{
		st.last_claim_empty = false;
		st.idle_since = -1;
		if (!st.shutting_down)
			work_start_batch(batch, n);
	}
	free(batch);
	return n;
}

/* A claim came back with no task. */
static void
claim_empty(double now)
{
	agent_log(LOG_DEBUG, NULL, "nothing to claim");
	st.last_claim_empty = true;
	if (st.ntasks == 0 && st.idle_since < 0)
		st.idle_since = now;
	st.want_claim = claim_again;
}

static void
claim_result(PGresult *res, const char *state, double now)
{
	int         n;

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		char       *msg = result_error(res);

		if (claim_was_many && missing_function(state))
		{
			agent_log(LOG_INFO, NULL, "the server has no parflow_claim with max_tasks "
					  "(parflow before 0.4.0): claiming one task per call: %s", msg);
			claim_many_ok = false;
			st.want_claim = true;
			free(msg);
			return;
		}
		/* the same error every poll is logged once, then only in --verbose */
		if (last_claim_error == NULL || strcmp(last_claim_error, msg) != 0)
			agent_log(LOG_ERROR, NULL, "could not claim: %s", msg);
		else
			agent_log(LOG_DEBUG, NULL, "could not claim: %s", msg);
		free(last_claim_error);
		last_claim_error = msg;
		return;
	}
	free(last_claim_error);
	last_claim_error = NULL;
	n = take_claimed(res, now);
	if (n == 0)
	{
		claim_empty(now);
		return;
	}
	if (n > 1)
		agent_log(LOG_DEBUG, NULL, "claimed %d of %d asked", n, claim_asked);
	/*
	 * Keep claiming while capacity is free and full claims come back; fewer
	 * rows than asked means none was left a moment ago: wait for a dispatch.
	 */
	st.want_claim = n >= claim_asked || claim_again;
}

static void
heartbeat_result(PGresult *res, Task *t, const char *state, double now)
{
	if (t == NULL || t->state != TS_WORKING)
		return;
	if (PQresultStatus(res) == PGRES_TUPLES_OK)
	{
		t->next_heartbeat = now + opt.heartbeat_ms;
		agent_log(LOG_DEBUG, t, "heartbeat: lease until %s",
				  PQntuples(res) > 0 ? PQgetvalue(res, 0, 0) : "?");
		return;
	}
	if (state && strcmp(state, "55000") == 0)
	{
		char       *msg = result_error(res);

		agent_log(LOG_INFO, t, "lease-lost: %s", msg);
		free(msg);
		work_stop(t, AFTER_DROP, now);
		return;
	}
	{
		char       *msg = result_error(res);

		agent_log(LOG_ERROR, t, "heartbeat failed: %s", msg);
		free(msg);
		t->next_heartbeat = now + dmin(opt.heartbeat_ms, RETRY_MS);
	}
}

/* T's success or failure was recorded (or is no longer ours): forget it. */
static void
report_done(Task *t, double now)
{
	char        line[201];

	if (t->report_fail)
		agent_log(LOG_INFO, t, "failed: %s", brief(t->report_text, line, sizeof(line)));
	else
		agent_log(LOG_INFO, t, "completed (%.0f ms)", now - t->claimed_at);
	st.finished++;
	task_remove(t);
}

/*
 * The report of T was refused with STATE (NULL if unknown) and MSG: drop it,
 * resend it (wrapped, later, or as a failure), as the refusal calls for.
 */
static void
report_refused(Task *t, const char *state, const char *msg, double now)
{
	if (state && strcmp(state, "55000") == 0)
	{
		if (t->report_resend)
			agent_log(LOG_INFO, t, "lease-lost: report sent again after a reconnect "
					  "was refused (the first one may have been recorded): %s", msg);
		else
			agent_log(LOG_INFO, t, "lease-lost: result not recorded: %s", msg);
		st.finished++;
		task_remove(t);
	}
	else if (!t->report_fail && !t->report_wrapped && !t->sim &&
			 state && strncmp(state, "22", 2) == 0)
	{
		/* stdout is not JSON: send it as {"stdout": "<text>"} */
		Buf         b = {0};

		agent_log(LOG_DEBUG, t, "stdout is not JSON (%s): wrapping it", state);
		buf_append(&b, "{\"stdout\": ", 11);
		json_escape(&b, t->report_text);
		buf_append(&b, "}", 1);
		free(t->report_text);
		t->report_text = b.data;
		t->report_wrapped = true;
	}
	else if (transient(state))
	{
		agent_log(LOG_ERROR, t, "could not report, trying again: %s", msg);
		t->retry_at = now + RETRY_MS;
	}
	else if (!t->report_fail)
	{
		/*
		 * The completion was refused for good (output too large...): fail
		 * the task with the reason, not retryable, so that the run shows
		 * it instead of waiting for the lease to expire.
		 */
		agent_log(LOG_ERROR, t, "completion refused, failing the task: %s", msg);
		free(t->report_text);
		t->report_text = xprintf("parflow_complete refused the result: %s", msg);
		t->report_fail = true;
		t->report_final = true;
	}
	else
	{
		agent_log(LOG_ERROR, t, "could not report, dropping the task "
				  "(its lease will expire): %s", msg);
		st.finished++;
		task_remove(t);
	}
}

static void
report_result(PGresult *res, Task *t, const char *state, double now)
{
	char       *msg;

	if (t == NULL || t->state != TS_REPORT)
		return;
	if (PQresultStatus(res) == PGRES_TUPLES_OK)
	{
		report_done(t, now);
		return;
	}
	msg = result_error(res);
	report_refused(t, state, msg, now);
	free(msg);
}

/*
 * parflow_complete_and_claim answered: T completed and 0 or 1 task claimed
 * (one transaction), or nothing happened.
 */
static void
complete_claim_result(PGresult *res, Task *t, const char *state, double now)
{
	char       *msg;

	if (PQresultStatus(res) == PGRES_TUPLES_OK)
	{
		if (t && t->state == TS_REPORT)
			report_done(t, now);
		free(last_claim_error);
		last_claim_error = NULL;
		/* task_remove asked for a claim: this call made it */
		st.want_claim = false;
		if (take_claimed(res, now) == 0)
			claim_empty(now);
		else
			st.want_claim = true;
		return;
	}
	/* nothing was recorded, nothing claimed */
	st.want_claim = true;
	if (t == NULL || t->state != TS_REPORT)
		return;
	msg = result_error(res);
	if (state && strcmp(state, "55000") == 0)
		report_refused(t, state, msg, now);
	else if (transient(state))
	{
		agent_log(LOG_ERROR, t, "could not report, trying again: %s", msg);
		t->retry_at = now + RETRY_MS;
	}
	else if (missing_function(state))
	{
		agent_log(LOG_INFO, NULL, "the server has no parflow_complete_and_claim "
				  "(parflow before 0.4.0): completing and claiming in separate calls: %s", msg);
		cac_ok = false;
	}
	else
	{
		/* the completion or the claim refused: find out which on their own */
		agent_log(LOG_DEBUG, t, "complete-and-claim refused, reporting with "
				  "parflow_complete alone: %s", msg);
		t->report_plain = true;
	}
	free(msg);
}

/*
 * parflow_complete_many answered: one row per task, accepted or refused with
 * its SQLSTATE and message (the refused ones changed nothing); or the whole
 * call failed and nothing changed.
 */
static void
complete_many_result(PGresult *res, const char *state, double now)
{
	int         n = inflight_n,
				i,
				r;

	inflight_n = 0;
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		char       *msg = result_error(res);

		if (transient(state))
			agent_log(LOG_ERROR, NULL, "could not report %d task%s, trying again: %s",
					  n, n == 1 ? "" : "s", msg);
		else if (missing_function(state))
		{
			agent_log(LOG_INFO, NULL, "the server has no parflow_complete_many "
					  "(parflow before 0.4.0): reporting every task with parflow_complete: %s", msg);
			many_ok = false;
		}
		else
			agent_log(LOG_INFO, NULL, "parflow_complete_many refused %d task%s as a whole, "
					  "reporting them one by one: %s", n, n == 1 ? "" : "s", msg);
		for (i = 0; i < n; i++)
		{
			Task       *t = task_find(inflight_ids[i]);

			if (t == NULL || t->state != TS_REPORT)
				continue;
			if (transient(state))
				t->retry_at = now + RETRY_MS;
			else
				t->report_plain = true;
		}
		free(msg);
		return;
	}
	for (r = 0; r < PQntuples(res); r++)
	{
		long long   id;
		Task       *t;

		if (PQgetisnull(res, r, 0))
			continue;
		id = strtoll(PQgetvalue(res, r, 0), NULL, 10);
		for (i = 0; i < n; i++)
			if (inflight_ids[i] == id)
				break;
		if (i == n)
			continue;           /* not one we sent */
		inflight_ids[i] = 0;    /* answered */
		t = task_find(id);
		if (t == NULL || t->state != TS_REPORT)
			continue;
		if (!PQgetisnull(res, r, 1) && strcmp(PQgetvalue(res, r, 1), "t") == 0)
			report_done(t, now);
		else
		{
			const char *rstate = PQgetisnull(res, r, 2) ? NULL : PQgetvalue(res, r, 2);
			char       *msg = xprintf("%s [%s]",
									  PQgetisnull(res, r, 3) ? "refused" : PQgetvalue(res, r, 3),
									  rstate ? rstate : "?");
			char       *line = one_line(msg);

			report_refused(t, rstate, line, now);
			free(line);
			free(msg);
		}
	}
	for (i = 0; i < n; i++)
	{
		Task       *t = inflight_ids[i] ? task_find(inflight_ids[i]) : NULL;

		if (t == NULL || t->state != TS_REPORT)
			continue;
		agent_log(LOG_ERROR, t, "parflow_complete_many returned no row for the task: "
				  "reporting it with parflow_complete");
		t->report_plain = true;
	}
}

static void
release_result(PGresult *res, Task *t, const char *state, double now)
{
	char       *msg;

	if (t == NULL || t->state != TS_RELEASE)
		return;
	if (PQresultStatus(res) == PGRES_TUPLES_OK)
	{
		agent_log(LOG_INFO, t, "released");
		task_remove(t);
		return;
	}
	msg = result_error(res);
	if (state && strcmp(state, "55000") == 0)
	{
		agent_log(LOG_INFO, t, "lease-lost: nothing to release: %s", msg);
		task_remove(t);
	}
	else if (transient(state))
	{
		agent_log(LOG_ERROR, t, "could not release, trying again: %s", msg);
		t->retry_at = now + RETRY_MS;
	}
	else
	{
		agent_log(LOG_ERROR, t, "could not release, dropping the task "
				  "(its lease will expire): %s", msg);
		task_remove(t);
	}
	free(msg);
}

/* The query in flight is answered with RES. */
static void
finish_request(PGresult *res, double now)
{
	ReqKind     kind = inflight;
	Task       *t = inflight_task ? task_find(inflight_task) : NULL;
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	ExecStatusType status = PQresultStatus(res);

	if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK && conn_error(res))
	{
		conn_lost(PQresultErrorMessage(res), now);
		return;
	}
	inflight = RQ_NONE;
	switch (kind)
	{
		case RQ_CLAIM:
			claim_result(res, state, now);
			break;
		case RQ_COMPLETE_CLAIM:
			complete_claim_result(res, t, state, now);
			break;
		case RQ_COMPLETE_MANY:
			complete_many_result(res, state, now);
			break;
		case RQ_HEARTBEAT:
			heartbeat_result(res, t, state, now);
			break;
		case RQ_REPORT:
			report_result(res, t, state, now);
			break;
		case RQ_RELEASE:
			release_result(res, t, state, now);
			break;
		case RQ_NONE:
			break;
	}
}

/* The socket is ready: read, finish the query in flight, take notifications. */
void
db_io(short revents, double now)
{
	(void) revents;
	if (cstate == CS_CONNECTING)
	{
		connect_step(now);
		return;
	}
	if (conn == NULL)
		return;
	if (!PQconsumeInput(conn))
	{
		conn_lost(PQerrorMessage(conn), now);
		return;
	}
	while (inflight != RQ_NONE && !PQisBusy(conn))
	{
		PGresult   *res = PQgetResult(conn);

		if (res == NULL)
		{
			res = inflight_res;
			inflight_res = NULL;
			if (res == NULL)
			{
				conn_lost("no result from the server", now);
				return;
			}
			finish_request(res, now);
			PQclear(res);
			if (conn == NULL)
				return;
			continue;
		}
		/* keep the last result; the NULL after it ends the query */
		if (inflight_res)
			PQclear(inflight_res);
		inflight_res = res;
	}
	process_notifies(now);
	if (conn && PQstatus(conn) == CONNECTION_BAD)
		conn_lost(PQerrorMessage(conn), now);
}
