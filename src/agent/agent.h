/*
 * agent.h -- shared declarations of parflow-agent, the reference agent.
 *
 * The agent is one single-threaded process: main.c owns the options, the
 * signal handling and the poll() loop; db.c owns the libpq connection (connect,
 * reconnect, LISTEN, notifications) and the one SQL call in flight at a time;
 * work.c owns the table of held tasks and the work done for them (a simulated
 * sleep or a child process); util.c owns logging, clocks and text helpers.
 * This header holds the types and globals they share.
 */
#ifndef PARFLOW_AGENT_H
#define PARFLOW_AGENT_H

#define _POSIX_C_SOURCE 200809L

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#if defined(__GNUC__)
#define PF_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define PF_NORETURN __attribute__((noreturn))
#else
#define PF_PRINTF(f, a)
#define PF_NORETURN
#endif

#define STDERR_TAIL 4096                    /* bytes of stderr kept per task */
#define STDOUT_LIMIT (16 * 1024 * 1024)     /* largest stdout kept as output */
#define KILL_GRACE_MS 2000.0                /* SIGTERM, then SIGKILL after this */
#define SHUTDOWN_LIMIT_MS 10000.0           /* give up releasing after this */

/* Log levels: --quiet shows only LOG_ERROR, --verbose adds LOG_DEBUG. */
typedef enum
{
	LOG_ERROR = 0,
	LOG_INFO = 1,
	LOG_DEBUG = 2
} LogLevel;

/* A growable byte buffer, always NUL-terminated when data is not NULL. */
typedef struct
{
	char       *data;
	size_t      len;
	size_t      cap;
} Buf;

/*
 * Where a held task is.  WORKING: the sleep or the child runs.  STOPPING: its
 * child was told to stop (interrupt, cancel, lease lost, shutdown) and is not
 * reaped yet; then the task is released or dropped.  REPORT: the work ended
 * and parflow_complete or parflow_fail is to be sent (again after a
 * reconnect; several successes go in one parflow_complete_many with --batch,
 * and one success with the next claim in parflow_complete_and_claim with
 * --batch 1).  RELEASE: parflow_release is to be sent.
 */
typedef enum
{
	TS_WORKING,
	TS_STOPPING,
	TS_REPORT,
	TS_RELEASE
} TaskState;

/* What to do with a task once its stopped work is gone. */
typedef enum
{
	AFTER_RELEASE,
	AFTER_DROP
} AfterStop;

/* One task this agent holds a lease on. */
typedef struct
{
	long long   id;
	char        token[64];
	long long   run;
	char       *stage;
	int         attempt;
	char       *input;          /* the task's input JSON text */
	double      estimate;       /* seconds; < 0 when the server gave none */
	TaskState   state;
	AfterStop   after;          /* when STOPPING */
	double      claimed_at;     /* monotonic ms */
	double      next_heartbeat; /* monotonic ms */
	double      retry_at;       /* monotonic ms: earliest resend of a report */

	/* --simulate */
	bool        sim;
	double      sim_until;      /* monotonic ms */
	double      sim_ms;

	/* --exec: the child is a process group leader; pid 0 once reaped */
	pid_t       pid;
	int         in_fd;          /* -1 when closed */
	int         out_fd;
	int         err_fd;
	size_t      in_off;
	char       *in_data;
	size_t      in_len;
	Buf         out;
	bool        out_overflow;
	char        err_ring[STDERR_TAIL];
	size_t      err_len;        /* bytes held in err_ring (<= STDERR_TAIL) */
	size_t      err_pos;        /* next write position in err_ring */
	double      kill_at;        /* monotonic ms: SIGKILL if still alive */
	bool        sigkilled;

	/* the report: parflow_complete(output) or parflow_fail(error) */
	bool        report_fail;
	char       *report_text;
	bool        report_wrapped; /* output already wrapped as {"stdout": ...} */
	bool        report_final;   /* the failure is not retryable (a refused completion) */
	bool        report_resend;  /* a first try was lost with the connection */
	bool        report_plain;   /* send with plain parflow_complete (a combined
								 * call was refused as a whole) */
} Task;

/* The options, set once by main.c. */
typedef struct
{
	const char *agent;
	char       *channel;        /* "parflow_<agent>" */
	char       *worker;
	int         concurrency;
	int         batch;          /* --batch: tasks asked of one parflow_claim */
	bool        complete_and_claim; /* with --batch 1: parflow_complete_and_claim */
	bool        simulate;
	double      scale;
	double      jitter;			/* --jitter: relative spread of simulated work */
	const char *exec_cmd;
	const char *lease;
	double      lease_s;        /* the lease in seconds, asked of the server */
	double      heartbeat_ms;
	double      poll_ms;
	long        max_tasks;      /* 0: no limit */
	double      idle_exit_ms;   /* 0: never */
	int         verbosity;      /* LogLevel shown at most */
	const char *conninfo;
} Options;

/* The agent's state besides the connection (db.c keeps that). */
typedef struct
{
	Task      **tasks;
	int         ntasks;
	long        finished;       /* tasks whose report got an answer */
	long        claimed;        /* tasks claimed in all */
	bool        want_claim;     /* try parflow_claim as soon as possible */
	double      next_poll;      /* monotonic ms of the next periodic claim */
	bool        last_claim_empty;
	double      idle_since;     /* monotonic ms; < 0 when not idle */
	bool        shutting_down;
	double      shutdown_deadline;
} AgentState;

extern Options opt;
extern AgentState st;

/* util.c */
extern void agent_log(LogLevel level, const Task *t, const char *fmt,...) PF_PRINTF(3, 4);
extern PF_NORETURN void die(int code, const char *fmt,...) PF_PRINTF(2, 3);
extern double mono_ms(void);
extern void *xmalloc(size_t n);
extern char *xstrdup(const char *s);
extern char *xprintf(const char *fmt,...) PF_PRINTF(1, 2);
extern void buf_append(Buf *b, const char *data, size_t n);
extern void buf_free(Buf *b);
extern char *utf8_clean(const char *s, size_t n);
extern void json_escape(Buf *b, const char *s);
extern bool payload_scan(const char *payload, char *kind, size_t kindsize, long long *task);

/* work.c */
extern Task *task_find(long long id);
extern int  task_index(const Task *t);
extern void task_remove(Task *t);
extern Task *task_new(void);
extern void work_start(Task *t);
extern void work_start_batch(Task **ts, int n);
extern void work_stop(Task *t, AfterStop after, double now);
extern void work_tick(double now);
extern void work_reap(double now);
extern int  work_pollfds(struct pollfd *fds, Task **owner, int max);
extern void work_io(Task *t, int fd, short revents, double now);
extern void work_kill_all(void);
extern double work_deadline(double now);

/* db.c */
extern bool db_first_connect(void);
extern void db_tick(double now);
extern int  db_pollfd(struct pollfd *pfd);
extern void db_io(short revents, double now);
extern double db_deadline(double now);
extern void db_close(void);

/* main.c */
extern int  free_capacity(void);

#endif                          /* PARFLOW_AGENT_H */
