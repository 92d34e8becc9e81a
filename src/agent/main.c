/*
 * main.c -- parflow-agent: command line, signals and the event loop.
 *
 * parflow-agent is the reference agent of parflow: it LISTENs on channel
 * parflow_<KIND>, claims tasks of its kind with parflow_claim (on a
 * notification and every --poll seconds while it has free capacity; up to
 * --batch of them per call), works on at most --concurrency of them at once
 * (a simulated sleep or a shell command), heartbeats their leases and reports
 * each with parflow_complete (with --batch 1 by default together with the
 * next claim, parflow_complete_and_claim; with --batch N the successes
 * together, parflow_complete_many) or parflow_fail.  This file owns the options, the self-pipe that turns SIGTERM,
 * SIGINT and SIGCHLD into poll() events, the single-threaded poll() loop over
 * that pipe, the libpq socket and the children's pipes, and the ways out:
 * --max-tasks, --exit-when-idle, and a graceful shutdown that stops the
 * children and releases every task still held.
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define AGENT_VERSION "0.1"

Options     opt;
AgentState  st;

static int  sig_pipe[2] = {-1, -1};
static volatile sig_atomic_t got_term;
static volatile sig_atomic_t got_chld;
static struct pollfd *fds;      /* poll() set: signal pipe, children, socket */
static Task **owner;            /* the task of each child pipe in fds */

static void
usage(FILE *out)
{
	fprintf(out,
			"parflow-agent -- the reference agent of parflow.\n"
			"\n"
			"Usage: parflow-agent --agent KIND (--simulate SCALE | --exec CMD) [options] [CONNINFO]\n"
			"\n"
			"Listens on channel parflow_<KIND>, claims tasks of that kind, works on them\n"
			"and reports back.  CONNINFO is a libpq connection string or URI (default: the\n"
			"PG* environment variables); with several hosts and\n"
			"target_session_attrs=read-write it follows a failover to the new primary.\n"
			"\n"
			"Options:\n"
			"  --agent KIND           the agent kind to serve (required)\n"
			"  --simulate SCALE       work = sleep for the stage's estimate x SCALE\n"
			"  --jitter F             with --simulate: each sleep x a factor drawn uniformly\n"
			"                         from [1-F, 1+F] (fixed by the task id), for noisy runs\n"
			"  --exec CMD             work = /bin/sh -c CMD, input JSON on stdin; exit 0\n"
			"                         completes with stdout as output, else fails with stderr\n"
			"  --worker NAME          this worker's name (default <hostname>-<pid>)\n"
			"  --concurrency N        at most N tasks at once (default 1, or N of --batch)\n"
			"  --batch N              claim up to N tasks per parflow_claim call (1..1000,\n"
			"                         default 1); they work at once (--simulate: all sleep\n"
			"                         the longest of their durations) and their successes\n"
			"                         are reported together with parflow_complete_many\n"
			"                         (a lone one with parflow_complete)\n"
			"  --no-complete-and-claim  with --batch 1: report with parflow_complete, then\n"
			"                         claim apart (default: parflow_complete_and_claim,\n"
			"                         one round trip and one commit for both)\n"
			"  --lease INTERVAL       lease asked for at claim (default '5 min')\n"
			"  --poll SECONDS         claim at this interval while capacity is free (default 1)\n"
			"  --max-tasks N          exit 0 after finishing N tasks\n"
			"  --exit-when-idle SECS  exit 0 after being idle that long\n"
			"  -d, --dbname CONNINFO  the database to connect to\n"
			"  -v, --verbose          log heartbeats, notifications and empty claims too\n"
			"  -q, --quiet            log errors only\n"
			"  -h, --help             show this help and exit\n"
			"  -V, --version          show the version and exit\n"
			"\n"
			"The command's environment has PARFLOW_TASK, PARFLOW_RUN, PARFLOW_STAGE,\n"
			"PARFLOW_ATTEMPT, PARFLOW_AGENT and PARFLOW_WORKER.  SIGTERM or SIGINT stops\n"
			"the children, releases every held task and exits 0.\n");
}

/* Parse a number option or exit 2. */
static double
number_arg(const char *name, const char *s, double min)
{
	char       *end;
	double      v;

	errno = 0;
	v = strtod(s, &end);
	if (end == s || *end != '\0' || errno != 0 || !isfinite(v) || v < min)
		die(2, "invalid value \"%s\" for --%s (a number >= %g expected)", s, name, min);
	return v;
}

static long
integer_arg(const char *name, const char *s, long min)
{
	char       *end;
	long        v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (end == s || *end != '\0' || errno != 0 || v < min)
		die(2, "invalid value \"%s\" for --%s (an integer >= %ld expected)", s, name, min);
	return v;
}

static void
parse_options(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"agent", required_argument, NULL, 'a'},
		{"worker", required_argument, NULL, 'w'},
		{"concurrency", required_argument, NULL, 'c'},
		{"batch", required_argument, NULL, 'b'},
		{"complete-and-claim", no_argument, NULL, 'C'},
		{"no-complete-and-claim", no_argument, NULL, 'N'},
		{"simulate", required_argument, NULL, 's'},
		{"jitter", required_argument, NULL, 'j'},
		{"exec", required_argument, NULL, 'e'},
		{"lease", required_argument, NULL, 'l'},
		{"poll", required_argument, NULL, 'p'},
		{"max-tasks", required_argument, NULL, 'm'},
		{"exit-when-idle", required_argument, NULL, 'i'},
		{"dbname", required_argument, NULL, 'd'},
		{"verbose", no_argument, NULL, 'v'},
		{"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0}
	};
	int         c;
	const char *worker = NULL;
	bool        concurrency_given = false;

	opt.concurrency = 1;
	opt.batch = 1;
	opt.complete_and_claim = true;
	opt.lease = "5 min";
	opt.poll_ms = 1000;
	opt.verbosity = LOG_INFO;
	while ((c = getopt_long(argc, argv, "d:vqhV", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 'a':
				opt.agent = optarg;
				break;
			case 'w':
				worker = optarg;
				break;
			case 'c':
				opt.concurrency = (int) integer_arg("concurrency", optarg, 1);
				if (opt.concurrency > 10000)
					die(2, "--concurrency must be at most 10000");
				concurrency_given = true;
				break;
			case 'b':
				{
					char       *end;
					long        b;

					errno = 0;
					b = strtol(optarg, &end, 10);
					if (end == optarg || *end != '\0' || errno != 0 || b < 1 || b > 1000)
						die(2, "invalid value \"%s\" for --batch (an integer from 1 to 1000 expected)",
							optarg);
					opt.batch = (int) b;
				}
				break;
			case 'C':
				opt.complete_and_claim = true;
				break;
			case 'N':
				opt.complete_and_claim = false;
				break;
			case 's':
				opt.simulate = true;
				opt.scale = number_arg("simulate", optarg, 0);
				break;
			case 'j':
				opt.jitter = number_arg("jitter", optarg, 0);
				if (opt.jitter >= 1)
					die(2, "--jitter must be below 1");
				break;
			case 'e':
				opt.exec_cmd = optarg;
				break;
			case 'l':
				opt.lease = optarg;
				break;
			case 'p':
				opt.poll_ms = number_arg("poll", optarg, 0.001) * 1000.0;
				break;
			case 'm':
				opt.max_tasks = integer_arg("max-tasks", optarg, 1);
				break;
			case 'i':
				opt.idle_exit_ms = number_arg("exit-when-idle", optarg, 0) * 1000.0;
				break;
			case 'd':
				opt.conninfo = optarg;
				break;
			case 'v':
				opt.verbosity = LOG_DEBUG;
				break;
			case 'q':
				opt.verbosity = LOG_ERROR;
				break;
			case 'h':
				usage(stdout);
				exit(0);
			case 'V':
				printf("parflow-agent %s\n", AGENT_VERSION);
				exit(0);
			default:
				fprintf(stderr, "Try \"parflow-agent --help\" for more information.\n");
				exit(2);
		}
	}
	if (optind < argc)
	{
		if (opt.conninfo != NULL || optind + 1 < argc)
			die(2, "too many arguments: give one CONNINFO (or -d) at most");
		opt.conninfo = argv[optind];
	}
	if (opt.agent == NULL || opt.agent[0] == '\0')
		die(2, "--agent KIND is required (try --help)");
	if (opt.simulate == (opt.exec_cmd != NULL))
		die(2, "exactly one of --simulate SCALE and --exec CMD is required");
	if (opt.lease[0] == '\0')
		die(2, "--lease must not be empty");
	if (!concurrency_given)
		opt.concurrency = opt.batch;
	else if (opt.concurrency < opt.batch)
		agent_log(LOG_INFO, NULL, "--batch %d with --concurrency %d: a claim asks for "
				  "%d tasks at most (the tasks of a batch work at once)",
				  opt.batch, opt.concurrency, opt.concurrency);

	if (worker && worker[0])
		opt.worker = xstrdup(worker);
	else
	{
		char        host[256];

		if (gethostname(host, sizeof(host)) != 0)
			strcpy(host, "localhost");
		host[sizeof(host) - 1] = '\0';
		opt.worker = xprintf("%s-%ld", host, (long) getpid());
	}
	opt.channel = xprintf("parflow_%s", opt.agent);
	/* the server truncates identifiers to NAMEDATALEN - 1 = 63 bytes */
	if (strlen(opt.channel) > 63)
		agent_log(LOG_ERROR, NULL, "channel name \"%s\" is longer than 63 bytes: "
				  "notifications cannot reach it, only --poll finds work",
				  opt.channel);
}

/* Heartbeat every lease/3: at most 60 s, at least 1 s unless lease < 2 s. */
static double
heartbeat_interval(double lease_s)
{
	double      hb = lease_s / 3.0;

	if (hb > 60.0)
		hb = 60.0;
	if (hb < 1.0 && lease_s >= 2.0)
		hb = 1.0;
	return hb * 1000.0;
}

/* Tasks that may still be claimed now. */
int
free_capacity(void)
{
	long        n = opt.concurrency - st.ntasks;

	if (opt.max_tasks > 0 && opt.max_tasks - st.finished - st.ntasks < n)
		n = opt.max_tasks - st.finished - st.ntasks;
	return n > 0 ? (int) n : 0;
}

static void
on_signal(int sig)
{
	int         save = errno;
	char        c = 0;

	if (sig == SIGCHLD)
		got_chld = 1;
	else
		got_term++;
	if (write(sig_pipe[1], &c, 1) < 0)
	{
		/* the pipe is full: a wake-up is pending anyway */
	}
	errno = save;
}

static void
setup_signals(void)
{
	struct sigaction sa;
	int         i;

	if (pipe(sig_pipe) < 0)
		die(1, "could not create a pipe: %s", strerror(errno));
	for (i = 0; i < 2; i++)
	{
		fcntl(sig_pipe[i], F_SETFD, FD_CLOEXEC);
		fcntl(sig_pipe[i], F_SETFL, fcntl(sig_pipe[i], F_GETFL) | O_NONBLOCK);
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
	sigaction(SIGCHLD, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* Make sure fds 0-2 are open, so no pipe of ours gets one of those numbers. */
static void
guard_std_fds(void)
{
	int         fd;

	do
	{
		fd = open("/dev/null", O_RDWR);
	} while (fd >= 0 && fd <= 2);
	if (fd > 2)
		close(fd);
}

/* First SIGTERM/SIGINT: stop claiming, stop the work, release what is held. */
static void
begin_shutdown(double now)
{
	int         i;

	st.shutting_down = true;
	st.shutdown_deadline = now + SHUTDOWN_LIMIT_MS;
	agent_log(LOG_INFO, NULL, "shutting down: %d task%s held", st.ntasks,
			  st.ntasks == 1 ? "" : "s");
	for (i = 0; i < st.ntasks; i++)
		if (st.tasks[i]->state == TS_WORKING)
		{
			agent_log(LOG_DEBUG, st.tasks[i], "stopping for shutdown");
			work_stop(st.tasks[i], AFTER_RELEASE, now);
		}
}

/* Leave: kill what is left, close the connection, free everything. */
static PF_NORETURN void
finish(int code)
{
	if (st.ntasks > 0)
	{
		agent_log(LOG_ERROR, NULL, "exiting with %d task%s neither released nor "
				  "reported: %s lease%s will expire", st.ntasks,
				  st.ntasks == 1 ? "" : "s", st.ntasks == 1 ? "its" : "their",
				  st.ntasks == 1 ? "" : "s");
		work_kill_all();
		while (st.ntasks > 0)
			task_remove(st.tasks[0]);
	}
	db_close();
	agent_log(LOG_DEBUG, NULL, "exiting (%ld claimed, %ld finished)", st.claimed, st.finished);
	free(opt.worker);
	free(opt.channel);
	free(fds);
	free(owner);
	close(sig_pipe[0]);
	close(sig_pipe[1]);
	exit(code);
}

/* Whether this is the moment to exit; if so, exit. */
static void
check_exit(double now)
{
	if (st.shutting_down)
	{
		if (st.ntasks == 0)
		{
			agent_log(LOG_INFO, NULL, "stopped");
			finish(0);
		}
		if (now >= st.shutdown_deadline)
			finish(0);
		return;
	}
	if (opt.max_tasks > 0 && st.finished >= opt.max_tasks && st.ntasks == 0)
	{
		agent_log(LOG_INFO, NULL, "finished %ld task%s: exiting", st.finished,
				  st.finished == 1 ? "" : "s");
		finish(0);
	}
	if (opt.idle_exit_ms > 0 && st.ntasks == 0 && st.idle_since >= 0 &&
		now - st.idle_since >= opt.idle_exit_ms)
	{
		agent_log(LOG_INFO, NULL, "idle for %.1f s: exiting", opt.idle_exit_ms / 1000.0);
		finish(0);
	}
}

int
main(int argc, char **argv)
{
	int         maxfds;

	guard_std_fds();
	parse_options(argc, argv);
	/* the signal pipe, the socket, and three pipes per child */
	maxfds = 2 + 3 * opt.concurrency;
	fds = xmalloc(sizeof(struct pollfd) * maxfds);
	owner = xmalloc(sizeof(Task *) * maxfds);
	setup_signals();
	db_first_connect();
	opt.heartbeat_ms = heartbeat_interval(opt.lease_s);
	st.idle_since = -1;
	st.want_claim = true;
	st.next_poll = mono_ms();
	{
		char        mode[64];

		if (opt.batch > 1)
			snprintf(mode, sizeof(mode), "batches of up to %d", opt.batch);
		else
			snprintf(mode, sizeof(mode), "%s", opt.complete_and_claim ?
					 "complete-and-claim" : "separate complete and claim");
		agent_log(LOG_INFO, NULL, "listening on %s: %s, concurrency %d, %s, lease %s "
				  "(heartbeat every %.1f s)", opt.channel,
				  opt.simulate ? "simulate" : "exec", opt.concurrency, mode,
				  opt.lease, opt.heartbeat_ms / 1000.0);
	}

	for (;;)
	{
		double      now = mono_ms();
		double      deadline;
		int         nfds,
					nchild,
					dbslot = -1,
					timeout,
					i;

		if (got_chld)
		{
			got_chld = 0;
			work_reap(now);
		}
		if (got_term > 1)
		{
			agent_log(LOG_ERROR, NULL, "second signal: exiting now");
			finish(1);
		}
		if (got_term == 1 && !st.shutting_down)
			begin_shutdown(now);
		work_tick(now);
		db_tick(now);
		check_exit(now);

		fds[0].fd = sig_pipe[0];
		fds[0].events = POLLIN;
		nfds = 1;
		nchild = work_pollfds(fds + 1, owner + 1, maxfds - 2);
		nfds += nchild;
		if (db_pollfd(&fds[nfds]))
			dbslot = nfds++;

		deadline = work_deadline(now);
		if (db_deadline(now) < deadline)
			deadline = db_deadline(now);
		if (st.shutting_down && st.shutdown_deadline < deadline)
			deadline = st.shutdown_deadline;
		if (!st.shutting_down && opt.idle_exit_ms > 0 && st.idle_since >= 0 &&
			st.idle_since + opt.idle_exit_ms < deadline)
			deadline = st.idle_since + opt.idle_exit_ms;
		/* a one-second ceiling is a cheap safety net */
		timeout = deadline <= now ? 0 : deadline - now > 1000 ? 1000 :
			(int) (deadline - now) + 1;

		for (i = 0; i < nfds; i++)
			fds[i].revents = 0;
		if (poll(fds, nfds, timeout) < 0)
		{
			if (errno == EINTR)
				continue;
			die(1, "poll failed: %s", strerror(errno));
		}
		now = mono_ms();

		/* children first: db_io may drop tasks and close their pipes */
		for (i = 1; i <= nchild; i++)
			if (fds[i].revents)
				work_io(owner[i], fds[i].fd, fds[i].revents, now);
		if (fds[0].revents)
		{
			char        buf[64];

			while (read(sig_pipe[0], buf, sizeof(buf)) > 0)
				;
		}
		if (dbslot >= 0 && fds[dbslot].revents)
			db_io(fds[dbslot].revents, now);
	}
}
