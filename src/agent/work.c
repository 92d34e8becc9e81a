/*
 * work.c -- the tasks parflow-agent holds and the work it does for them.
 *
 * Owns the task table (one Task per lease held) and the two kinds of work:
 * --simulate, a timer of estimate x scale (with --batch, the longest of the
 * batch for all its tasks); and --exec, `/bin/sh -c CMD` in a
 * process group of its own, with the task's input on stdin, stdout kept as
 * the output and the last 4 KB of stderr kept as the error.  When work ends
 * this file turns it into a report (state TS_REPORT) for db.c to send; when
 * work must stop (interrupt, cancel, lost lease, shutdown) it sends SIGTERM to
 * the process group, SIGKILL after two seconds, and once the child is reaped
 * hands the task on to be released or drops it.
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

Task *
task_new(void)
{
	Task       *t = xmalloc(sizeof(Task));
	Task      **grown;

	memset(t, 0, sizeof(Task));
	t->in_fd = t->out_fd = t->err_fd = -1;
	t->estimate = -1;
	grown = realloc(st.tasks, sizeof(Task *) * (st.ntasks + 1));
	if (grown == NULL)
		die(1, "out of memory");
	st.tasks = grown;
	st.tasks[st.ntasks++] = t;
	return t;
}

Task *
task_find(long long id)
{
	int         i;

	for (i = 0; i < st.ntasks; i++)
		if (st.tasks[i]->id == id)
			return st.tasks[i];
	return NULL;
}

int
task_index(const Task *t)
{
	int         i;

	for (i = 0; i < st.ntasks; i++)
		if (st.tasks[i] == t)
			return i;
	return -1;
}

static void
close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Forget a task: its lease is given back, reported, or no longer ours. */
void
task_remove(Task *t)
{
	int         i = task_index(t);

	if (i < 0)
		return;
	memmove(&st.tasks[i], &st.tasks[i + 1], sizeof(Task *) * (st.ntasks - i - 1));
	st.ntasks--;
	if (st.ntasks == 0)
	{
		free(st.tasks);
		st.tasks = NULL;
	}
	close_fd(&t->in_fd);
	close_fd(&t->out_fd);
	close_fd(&t->err_fd);
	free(t->stage);
	free(t->input);
	free(t->in_data);
	buf_free(&t->out);
	free(t->report_text);
	free(t);
	/* capacity is free again */
	st.want_claim = true;
}

static void
set_flags(int fd, bool nonblock)
{
	int         fl = fcntl(fd, F_GETFD);

	if (fl >= 0)
		fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
	if (nonblock)
	{
		fl = fcntl(fd, F_GETFL);
		if (fl >= 0)
			fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	}
}

/* In the forked child: become a group leader, wire the pipes, exec sh. */
static PF_NORETURN void
child_exec(Task *t, int in[2], int out[2], int err[2], const sigset_t *mask)
{
	char        num[32];
	const char *msg;

	setpgid(0, 0);
	signal(SIGPIPE, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	sigprocmask(SIG_SETMASK, mask, NULL);
	if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0 || dup2(err[1], 2) < 0)
		_exit(127);
	snprintf(num, sizeof(num), "%lld", t->id);
	setenv("PARFLOW_TASK", num, 1);
	snprintf(num, sizeof(num), "%lld", t->run);
	setenv("PARFLOW_RUN", num, 1);
	snprintf(num, sizeof(num), "%d", t->attempt);
	setenv("PARFLOW_ATTEMPT", num, 1);
	setenv("PARFLOW_STAGE", t->stage, 1);
	setenv("PARFLOW_AGENT", opt.agent, 1);
	setenv("PARFLOW_WORKER", opt.worker, 1);
	execl("/bin/sh", "sh", "-c", opt.exec_cmd, (char *) NULL);
	msg = "parflow-agent: could not execute /bin/sh\n";
	if (write(2, msg, strlen(msg)) < 0)
		_exit(127);
	_exit(127);
}

/* Fork the --exec command for T; on failure return a malloc'ed error. */
static char *
spawn(Task *t)
{
	int         in[2] = {-1, -1},
				out[2] = {-1, -1},
				err[2] = {-1, -1};
	sigset_t    all,
				old;
	pid_t       pid;
	int         i;

	if (pipe(in) < 0 || pipe(out) < 0 || pipe(err) < 0)
	{
		char       *msg = xprintf("could not create a pipe: %s", strerror(errno));

		close_fd(&in[0]), close_fd(&in[1]);
		close_fd(&out[0]), close_fd(&out[1]);
		close_fd(&err[0]), close_fd(&err[1]);
		return msg;
	}
	for (i = 0; i < 2; i++)
	{
		set_flags(in[i], false);
		set_flags(out[i], false);
		set_flags(err[i], false);
	}

	/* no signal handler of ours may run in the child before exec */
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	pid = fork();
	if (pid == 0)
		child_exec(t, in, out, err, &old);
	sigprocmask(SIG_SETMASK, &old, NULL);

	close(in[0]);
	close(out[1]);
	close(err[1]);
	if (pid < 0)
	{
		close(in[1]);
		close(out[0]);
		close(err[0]);
		return xprintf("could not fork: %s", strerror(errno));
	}
	/* both sides set the group, so a kill right away reaches it */
	setpgid(pid, pid);
	t->pid = pid;
	t->in_fd = in[1];
	t->out_fd = out[0];
	t->err_fd = err[0];
	set_flags(t->in_fd, true);
	set_flags(t->out_fd, true);
	set_flags(t->err_fd, true);
	t->in_data = xprintf("%s\n", t->input ? t->input : "{}");
	t->in_len = strlen(t->in_data);
	t->in_off = 0;
	return NULL;
}

/* Begin the work of a freshly claimed task. */
void
work_start(Task *t)
{
	double      now = mono_ms();

	t->state = TS_WORKING;
	if (opt.simulate)
	{
		t->sim = true;
		t->sim_ms = (t->estimate > 0 ? t->estimate : 0) * opt.scale * 1000.0;
		if (opt.jitter > 0)
		{
			/* splitmix64 of the task id: the same task always draws the same */
			uint64_t	z = (uint64_t) t->id + 0x9E3779B97F4A7C15ULL;

			z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
			z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
			z ^= z >> 31;
			t->sim_ms *= 1.0 + opt.jitter * (2.0 * ((double) (z >> 11) / 9007199254740992.0) - 1.0);
		}
		t->sim_until = now + t->sim_ms;
		agent_log(LOG_DEBUG, t, "started: simulating %.0f ms", t->sim_ms);
	}
	else
	{
		char       *err = spawn(t);

		if (err)
		{
			agent_log(LOG_ERROR, t, "%s", err);
			t->report_fail = true;
			t->report_text = err;
			t->state = TS_REPORT;
			return;
		}
		agent_log(LOG_DEBUG, t, "started: pid %d", (int) t->pid);
	}
}

/*
 * Begin the work of the N tasks one claim brought (--batch).  --exec: a child
 * each, all at once.  --simulate: the batch is one unit of work, as a worker
 * that handles a batch in one go: every task of it sleeps the longest of
 * their simulated durations, so that they end together and their successes
 * go in one parflow_complete_many.
 */
void
work_start_batch(Task **ts, int n)
{
	double      until = 0,
				ms = 0;
	int         i;

	for (i = 0; i < n; i++)
		work_start(ts[i]);
	if (!opt.simulate || n < 2)
		return;
	for (i = 0; i < n; i++)
		if (ts[i]->state == TS_WORKING && ts[i]->sim && ts[i]->sim_until > until)
		{
			until = ts[i]->sim_until;
			ms = ts[i]->sim_ms;
		}
	for (i = 0; i < n; i++)
		if (ts[i]->state == TS_WORKING && ts[i]->sim)
		{
			ts[i]->sim_until = until;
			ts[i]->sim_ms = ms;
		}
	agent_log(LOG_DEBUG, NULL, "batch of %d started: simulating %.0f ms", n, ms);
}

/* The --simulate output, now that its sleep is over. */
static void
sim_finish(Task *t)
{
	Buf         b = {0};

	buf_append(&b, "{\"simulated\": true, \"worker\": ", 30);
	json_escape(&b, opt.worker);
	t->report_text = xprintf("%s, \"slept_ms\": %.0f}", b.data, t->sim_ms);
	buf_free(&b);
	t->report_fail = false;
	t->state = TS_REPORT;
}

/* Stopped work is gone: release the task or drop it. */
static void
stop_done(Task *t)
{
	if (t->after == AFTER_RELEASE)
		t->state = TS_RELEASE;
	else
		task_remove(t);
}

/*
 * Stop the work of T (in TS_WORKING) for an interrupt, cancel, lost lease or
 * shutdown, then release it (AFTER_RELEASE) or drop it (AFTER_DROP).
 */
void
work_stop(Task *t, AfterStop after, double now)
{
	if (t->state != TS_WORKING)
		return;
	t->after = after;
	if (t->pid > 0)
	{
		t->state = TS_STOPPING;
		kill(-t->pid, SIGTERM);
		t->kill_at = now + KILL_GRACE_MS;
		/* its output no longer matters; a writer gets SIGPIPE */
		close_fd(&t->in_fd);
		close_fd(&t->out_fd);
		close_fd(&t->err_fd);
		return;
	}
	stop_done(t);
}

/* Timers: simulated work that is done, children that outlived SIGTERM. */
void
work_tick(double now)
{
	int         i;

	for (i = 0; i < st.ntasks; i++)
	{
		Task       *t = st.tasks[i];

		if (t->state == TS_WORKING && t->sim && t->sim_until <= now)
			sim_finish(t);
		else if (t->state == TS_STOPPING && t->pid > 0 && !t->sigkilled &&
				 t->kill_at <= now)
		{
			agent_log(LOG_DEBUG, t, "still running %.0f ms after SIGTERM: SIGKILL",
					  KILL_GRACE_MS);
			kill(-t->pid, SIGKILL);
			t->sigkilled = true;
		}
	}
}

/* The earliest timer of work_tick, or now + 1 h if none. */
double
work_deadline(double now)
{
	double      d = now + 3600e3;
	int         i;

	for (i = 0; i < st.ntasks; i++)
	{
		Task       *t = st.tasks[i];

		if (t->state == TS_WORKING && t->sim && t->sim_until < d)
			d = t->sim_until;
		else if (t->state == TS_STOPPING && t->pid > 0 && !t->sigkilled &&
				 t->kill_at < d)
			d = t->kill_at;
	}
	return d;
}

/* Append newly read stderr bytes to T's ring of the last STDERR_TAIL bytes. */
static void
err_keep(Task *t, const char *data, size_t n)
{
	size_t      i;

	for (i = 0; i < n; i++)
	{
		t->err_ring[t->err_pos] = data[i];
		t->err_pos = (t->err_pos + 1) % STDERR_TAIL;
		if (t->err_len < STDERR_TAIL)
			t->err_len++;
	}
}

/* Read what FD has now into T; close it on end of file or error. */
static void
drain(Task *t, int *fd)
{
	char        chunk[8192];
	ssize_t     n;

	while (*fd >= 0)
	{
		n = read(*fd, chunk, sizeof(chunk));
		if (n > 0)
		{
			if (fd == &t->err_fd)
				err_keep(t, chunk, (size_t) n);
			else if (t->out.len + (size_t) n <= STDOUT_LIMIT)
				buf_append(&t->out, chunk, (size_t) n);
			else
				t->out_overflow = true;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		close_fd(fd);
	}
}

/* Length of S without trailing blanks and newlines. */
static size_t
rtrim_len(const char *s, size_t n)
{
	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' ||
					 s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	return n;
}

/* The child of T exited with STATUS: make its report. */
static void
exec_finish(Task *t, int status)
{
	double      ms = mono_ms() - t->claimed_at;

	t->state = TS_REPORT;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
	{
		size_t      n = t->out.data ? rtrim_len(t->out.data, t->out.len) : 0;
		size_t      lead = 0;

		agent_log(LOG_DEBUG, t, "command exited with status 0 after %.0f ms", ms);
		t->report_fail = false;
		while (lead < n && (t->out.data[lead] == ' ' || t->out.data[lead] == '\n' ||
							t->out.data[lead] == '\t' || t->out.data[lead] == '\r'))
			lead++;
		if (t->out_overflow)
		{
			t->report_fail = true;
			t->report_text = xprintf("stdout is larger than %d bytes", STDOUT_LIMIT);
		}
		else if (lead == n)
			t->report_text = xstrdup("{}");
		else
			t->report_text = utf8_clean(t->out.data, n);
	}
	else
	{
		char        tail[STDERR_TAIL];
		size_t      n = t->err_len,
					start = 0,
					i;

		/* the ring in order, oldest byte first */
		for (i = 0; i < n; i++)
			tail[i] = t->err_ring[(t->err_pos + STDERR_TAIL - n + i) % STDERR_TAIL];
		/* a cut UTF-8 sequence at the start is not the command's fault */
		if (n == STDERR_TAIL)
			while (start < n && start < 3 && (tail[start] & 0xC0) == 0x80)
				start++;
		n = rtrim_len(tail + start, n - start);
		t->report_fail = true;
		if (n > 0)
			t->report_text = utf8_clean(tail + start, n);
		else if (WIFEXITED(status))
			t->report_text = xprintf("exited with status %d", WEXITSTATUS(status));
		else if (WIFSIGNALED(status))
			t->report_text = xprintf("killed by signal %d", WTERMSIG(status));
		else
			t->report_text = xprintf("ended with wait status %d", status);
		if (WIFEXITED(status))
			agent_log(LOG_DEBUG, t, "command exited with status %d after %.0f ms",
					  WEXITSTATUS(status), ms);
		else
			agent_log(LOG_DEBUG, t, "command killed by signal %d after %.0f ms",
					  WTERMSIG(status), ms);
	}
	buf_free(&t->out);
}

/* Reap every child that ended (called after SIGCHLD). */
void
work_reap(double now)
{
	int         status;
	pid_t       pid;
	int         i;

	(void) now;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
	{
		Task       *t = NULL;

		for (i = 0; i < st.ntasks; i++)
			if (st.tasks[i]->pid == pid)
				t = st.tasks[i];
		if (t == NULL)
			continue;
		t->pid = 0;
		/* whatever the leader wrote before it exited is in the pipes */
		drain(t, &t->out_fd);
		drain(t, &t->err_fd);
		close_fd(&t->out_fd);
		close_fd(&t->err_fd);
		close_fd(&t->in_fd);
		if (t->state == TS_STOPPING)
		{
			/* leave no stragglers of a stopped task behind */
			kill(-pid, SIGKILL);
			stop_done(t);
		}
		else if (t->state == TS_WORKING)
			exec_finish(t, status);
	}
}

/* Fill FDS with the pipes of running children; OWNER gets their tasks. */
int
work_pollfds(struct pollfd *fds, Task **owner, int max)
{
	int         n = 0,
				i;

	for (i = 0; i < st.ntasks; i++)
	{
		Task       *t = st.tasks[i];

		if (t->in_fd >= 0 && n < max)
		{
			fds[n].fd = t->in_fd;
			fds[n].events = POLLOUT;
			owner[n++] = t;
		}
		if (t->out_fd >= 0 && n < max)
		{
			fds[n].fd = t->out_fd;
			fds[n].events = POLLIN;
			owner[n++] = t;
		}
		if (t->err_fd >= 0 && n < max)
		{
			fds[n].fd = t->err_fd;
			fds[n].events = POLLIN;
			owner[n++] = t;
		}
	}
	return n;
}

/* A child's pipe FD is ready: feed stdin or read stdout/stderr. */
void
work_io(Task *t, int fd, short revents, double now)
{
	(void) now;
	if (fd == t->in_fd)
	{
		while (t->in_off < t->in_len)
		{
			ssize_t     n = write(fd, t->in_data + t->in_off, t->in_len - t->in_off);

			if (n > 0)
				t->in_off += (size_t) n;
			else if (n < 0 && errno == EINTR)
				continue;
			else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return;
			else
				break;          /* EPIPE: the command does not read its input */
		}
		close_fd(&t->in_fd);
	}
	else if (fd == t->out_fd)
		drain(t, &t->out_fd);
	else if (fd == t->err_fd)
		drain(t, &t->err_fd);
	(void) revents;
}

/* Second signal: kill every child's group at once. */
void
work_kill_all(void)
{
	int         i;

	for (i = 0; i < st.ntasks; i++)
		if (st.tasks[i]->pid > 0)
			kill(-st.tasks[i]->pid, SIGKILL);
}
