/*
 * worker.c - a worker of `joinq work`, from fork to exit: its own
 * connection, the loop of get, run CMD, task_done or release, the running
 * of CMD (argv with {}, the item on stdin, its process group, the
 * timeout), and the reports to the parent (workint.h).
 *
 * A worker's states: CONNECTING -> WAITING (in get; a stop signal cancels
 * the wait through jq_set_cancel_fd) -> RUNNING (CMD; a stop lets it
 * finish, an abort kills it) -> ANSWERING (task_done or release) -> WAITING
 * again, or gone: stopped, retired (--max-tasks), daemon unreachable.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "buf.h"
#include "joinq.h"
#include "workint.h"
#include "xalloc.h"

#define KILL_GRACE_MS 2000      /* --task-timeout: SIGTERM, then SIGKILL */
#define RETRY_DELAY_MAX 3600.0  /* --retry-delay's backoff stops at 1 h */
#define UDP_GET_WAIT 5.0        /* a UDP get's wait; then another */

/* ---- signals ------------------------------------------------------------- */

/* A worker's.  The cancel pipe is libjoinq's cancel descriptor during a
 * get, so only a stop writes to it; the wake pipe wakes the wait for CMD. */
static volatile sig_atomic_t worker_stop;    /* finish the task, exit */
static volatile sig_atomic_t worker_abort;   /* kill CMD, release, exit */
static int worker_cancel_fd = -1, worker_wake_fd = -1;

static void worker_on_signal(int sig)
{
	int saved = errno;
	if (sig != SIGCHLD) {
		if (sig == SIGUSR1)
			worker_abort = 1;
		worker_stop = 1;
		wake(worker_cancel_fd);
	}
	wake(worker_wake_fd);
	errno = saved;
}

/* ---- a worker ------------------------------------------------------------ */

struct worker {
	const struct work *cfg;
	pid_t pid;
	jq_client *c;
	int cancel_r;               /* the cancel pipe's read end */
	int wake_r;                 /* the wake pipe's read end */
	unsigned long tasks;        /* runs so far, for --max-tasks */
};

static void send_report(const struct worker *w, int type,
                        const struct jq_task *t, pid_t pgid,
                        const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

static void send_report(const struct worker *w, int type,
                        const struct jq_task *t, pid_t pgid,
                        const char *fmt, ...)
{
	struct report r;
	va_list ap;

	memset(&r, 0, sizeof r);
	r.type = type;
	r.pid = w->pid;
	r.pgid = pgid;
	if (t) {
		r.task = t->task;
		r.deliveries = t->deliveries;
	}
	va_start(ap, fmt);
	vsnprintf(r.text, sizeof r.text, fmt, ap);
	va_end(ap);
	/* Blocks while the pipe is full: the parent is then behind, and the
	 * worker waits for it.  EPIPE: the parent is gone, and PDEATHSIG has
	 * told the worker to stop. */
	for (;;) {
		ssize_t n = write(w->cfg->report_w, &r, sizeof r);
		if (n >= 0 || errno != EINTR)
			break;
	}
}

static void worker_exit(struct worker *w, int status)
	__attribute__((noreturn));

static void worker_exit(struct worker *w, int status)
{
	/* Closing hands back a task held without a lease; there is none by
	 * now, except on the way out after a lost connection. */
	jq_close(w->c);
	_exit(status);
}

/* Says why the worker gives up, and exits: library codes mean the daemon
 * is out of reach (restarting, say), daemon codes that it refuses us. */
static void worker_fail(struct worker *w, const char *doing,
                        const struct jq_error *err)
	__attribute__((noreturn));

static void worker_fail(struct worker *w, const char *doing,
                        const struct jq_error *err)
{
	bool unreachable = err->code >= JQ_ERR_SYSTEM ||
	                   err->code == JQ_SHUTTING_DOWN ||
	                   err->code == JQ_TOO_MANY_CONNECTIONS ||
	                   err->code == JQ_UNAVAILABLE;
	send_report(w, R_TROUBLE, NULL, 0, "%s: %s%s%s", doing,
	            err->code < JQ_NERR ? jq_strcode(err->code) : "",
	            err->code < JQ_NERR ? ": " : "", err->message);
	worker_exit(w, unreachable ? WORKER_UNREACHABLE : WORKER_FATAL);
}

/* A task's item as CMD gets it: a string's raw bytes, else compact JSON. */
struct item_text {
	const char *p;
	size_t len;
	json_t *json;               /* owns p for a string */
};

static void item_text_of(const struct jq_task *t, struct item_text *it)
{
	it->json = json_loadb(t->item, t->item_len,
	                      JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	if (json_is_string(it->json)) {
		it->p = json_string_value(it->json);
		it->len = json_string_length(it->json);
	} else {
		it->p = t->item;
		it->len = t->item_len;
	}
}

static void free_argv(char **argv)
{
	for (size_t i = 0; argv && argv[i]; i++)
		free(argv[i]);
	free(argv);
}

/* CMD's argv with every "{}" replaced by the item.  NULL when an argument
 * wants an item that holds a NUL: no argument can carry one. */
static char **build_argv(char **cmd, const struct item_text *it)
{
	bool has_nul = memchr(it->p, '\0', it->len) != NULL;
	size_t n = 0;

	while (cmd[n])
		n++;
	char **argv = xcalloc(n + 1, sizeof *argv);
	for (size_t i = 0; i < n; i++) {
		const char *s = cmd[i], *hit;
		if (!strstr(s, "{}")) {
			argv[i] = xstrdup(s);
			continue;
		}
		if (has_nul) {
			free_argv(argv);
			return NULL;
		}
		struct buf b = { 0 };
		while ((hit = strstr(s, "{}"))) {
			buf_add(&b, s, (size_t)(hit - s));
			buf_add(&b, it->p, it->len);
			s = hit + 2;
		}
		buf_adds(&b, s);
		buf_addc(&b, '\0');
		argv[i] = b.p;
	}
	return argv;
}

/* What a run of CMD came to. */
enum run_end {
	RUN_EXITED,                 /* status: its exit code */
	RUN_SIGNALLED,              /* status: the signal that killed it */
	RUN_TIMED_OUT,              /* --task-timeout killed it */
	RUN_ABORTED,                /* a second signal killed it */
	RUN_NUL_ARG,                /* the item cannot go into an argument */
	RUN_NOT_STARTED,            /* status: errno of pipe or fork */
};

struct run {
	enum run_end end;
	int status;
	double seconds;
};

static bool run_ok(const struct run *r)
{
	return r->end == RUN_EXITED && r->status == 0;
}

/* CMD, between fork and exec.  Never returns. */
static void cmd_child(const struct worker *w, char **argv, int in)
	__attribute__((noreturn));

static void cmd_child(const struct worker *w, char **argv, int in)
{
	/* Die with the worker, which alone answers for the task; if it is
	 * gone already, PDEATHSIG came too late to fire. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != w->pid)
		_exit(127);
	/* A group of its own: the timeout and a second signal kill CMD with
	 * all it started, and Ctrl-C at a terminal (SIGINT to the foreground
	 * group: parent and workers) lets it finish. */
	setpgid(0, 0);
	restore_signals();
	if (in != STDIN_FILENO) {
		dup2(in, STDIN_FILENO);     /* dup2 clears FD_CLOEXEC */
		close(in);
	} else {
		fcntl(in, F_SETFD, 0);      /* cannot be: 0 is open at start */
	}
	execvp(argv[0], argv);
	int e = errno;
	fprintf(stderr, "joinq: work: cannot run %s: %s\n", argv[0],
	        strerror(e));
	_exit(e == ENOENT ? 127 : 126);
}

/*
 * Waits for CMD (pid, leader of its group) to end, meanwhile writing the
 * item to its stdin as it takes it (an item can be far larger than a pipe
 * holds, and CMD may never read it), killing it at --task-timeout, or
 * at once on an abort.  Then kills what CMD left in its group and reaps it.
 */
static void wait_cmd(struct worker *w, pid_t pid, int in,
                     const struct item_text *it, struct run *out)
{
	int64_t start = net_now_ms();
	int64_t deadline = w->cfg->task_timeout > 0 ?
	                   start + seconds_ms(w->cfg->task_timeout) : NEVER;
	int64_t kill_at = NEVER;
	bool timed_out = false, aborted = false;
	size_t off = 0;
	int status = 0;

	if (it->len == 0) {
		close(in);                  /* stdin at its end at once */
		in = -1;
	}
	for (;;) {
		/* WNOWAIT: CMD stays a zombie, so its pid, the group's id,
		 * cannot be reused before the group is killed below. */
		siginfo_t si;
		memset(&si, 0, sizeof si);
		if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0) {
			if (errno == EINTR)
				continue;
			break;                  /* ECHILD: cannot be; do not spin */
		}
		if (si.si_pid == pid)
			break;

		int64_t now = net_now_ms();
		if (worker_abort && !aborted) {
			kill(-pid, SIGKILL);
			aborted = true;
		}
		if (!timed_out && deadline != NEVER && now >= deadline) {
			kill(-pid, SIGTERM);
			timed_out = true;
			kill_at = now + KILL_GRACE_MS;
		}
		if (kill_at != NEVER && now >= kill_at) {
			kill(-pid, SIGKILL);
			kill_at = NEVER;
		}

		struct pollfd p[2] = {
			{ .fd = w->wake_r, .events = POLLIN },
			{ .fd = in, .events = POLLOUT },
		};
		int64_t until = earlier(timed_out ? NEVER : deadline, kill_at);
		int r = poll(p, in >= 0 ? 2 : 1, poll_timeout(until, now));
		if (r < 0)
			continue;               /* EINTR: a signal; look again */
		if (p[0].revents)
			drain_fd(w->wake_r);
		if (in >= 0 && p[1].revents) {
			ssize_t n = write(in, it->p + off, it->len - off);
			if (n > 0)
				off += (size_t)n;
			else if (n < 0 && errno != EAGAIN && errno != EINTR)
				off = it->len;      /* EPIPE: CMD wants no more */
			if (off == it->len) {
				close(in);
				in = -1;
			}
		}
	}
	/* The task ends with CMD: kill what it left behind in its group. */
	kill(-pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (in >= 0)
		close(in);

	out->seconds = (double)(net_now_ms() - start) / 1000;
	/* The parent's SIGKILL may reach CMD before the abort reaches us. */
	if (worker_abort && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		aborted = true;
	if (aborted) {
		out->end = RUN_ABORTED;
	} else if (timed_out) {
		out->end = RUN_TIMED_OUT;
	} else if (WIFEXITED(status)) {
		out->end = RUN_EXITED;
		out->status = WEXITSTATUS(status);
	} else {
		out->end = RUN_SIGNALLED;
		out->status = WTERMSIG(status);
	}
}

/* Runs CMD once for task t. */
static void run_cmd(struct worker *w, const struct jq_task *t,
                    struct run *out)
{
	struct item_text it;
	char num[24];
	int in[2];

	memset(out, 0, sizeof *out);
	item_text_of(t, &it);
	char **argv = build_argv(w->cfg->cmd, &it);
	if (!argv) {
		out->end = RUN_NUL_ARG;
		json_decref(it.json);
		return;
	}
	/* The worker is one thread: its own environment is CMD's to be. */
	snprintf(num, sizeof num, "%llu", (unsigned long long)t->task);
	setenv("JOINQ_TASK", num, 1);
	snprintf(num, sizeof num, "%lu", (unsigned long)t->deliveries);
	setenv("JOINQ_DELIVERIES", num, 1);

	if (make_pipe(in, false) < 0) {
		out->end = RUN_NOT_STARTED;
		out->status = errno;
		goto done;
	}
	/* Blocked across fork, so that CMD meets no handler of ours before
	 * restore_signals(). */
	sigset_t all, old;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	pid_t pid = fork();
	if (pid == 0)
		cmd_child(w, argv, in[0]);
	int fork_errno = errno;
	if (pid > 0)
		setpgid(pid, pid);      /* as the child does: whoever runs first */
	sigprocmask(SIG_SETMASK, &old, NULL);
	close(in[0]);
	if (pid < 0) {
		close(in[1]);
		out->end = RUN_NOT_STARTED;
		out->status = fork_errno;
		goto done;
	}
	set_nonblocking(in[1]);
	send_report(w, R_RUNNING, t, pid, "%s", "");
	wait_cmd(w, pid, in[1], &it, out);
done:
	free_argv(argv);
	json_decref(it.json);
}

/* --retry-delay S: S x 2^(deliveries-1), at most an hour. */
static double retry_delay(const struct work *cfg, uint32_t deliveries)
{
	if (cfg->retry_delay <= 0)
		return 0;
	int shift = deliveries > 1 ? (int)(deliveries > 64 ? 63 : deliveries - 1)
	                           : 0;
	double d = ldexp(cfg->retry_delay, shift);
	return d > RETRY_DELAY_MAX ? RETRY_DELAY_MAX : d;
}

static void describe_run(const struct run *r, const struct work *cfg,
                         char *out, size_t size)
{
	switch (r->end) {
	case RUN_EXITED:
		snprintf(out, size, "exit status %d", r->status);
		break;
	case RUN_SIGNALLED:
		snprintf(out, size, "killed by signal %d (%s)", r->status,
		         strsignal(r->status));
		break;
	case RUN_TIMED_OUT:
		snprintf(out, size, "timed out after %g s (--task-timeout): "
		         "killed", cfg->task_timeout);
		break;
	case RUN_ABORTED:
		snprintf(out, size, "killed: the pool was told to stop twice");
		break;
	case RUN_NUL_ARG:
		snprintf(out, size, "its item holds a NUL byte, which cannot go "
		         "into an argument ({} in CMD); CMD can read it on stdin");
		break;
	case RUN_NOT_STARTED:
		snprintf(out, size, "CMD could not start: %s",
		         strerror(r->status));
		break;
	}
}

/* "unknown_task: field 'task' names ...": the daemon's code first, which
 * is what scripts match on; a library error's sentence stands alone. */
static void error_text(const struct jq_error *err, char *out, size_t size)
{
	if (err->code > 0 && err->code < JQ_NERR)
		snprintf(out, size, "%s: %s", jq_strcode(err->code), err->message);
	else
		snprintf(out, size, "%s", err->message);
}

/* Runs CMD for task t and answers the daemon: task_done or release. */
static void do_task(struct worker *w, const struct jq_task *t)
{
	struct jq_error err;
	struct run run;
	char how[TEXT_MAX], why[sizeof err.message + 32];
	int code;

	send_report(w, R_TASK, t, 0, "%s", "");
	run_cmd(w, t, &run);
	w->tasks++;

	if (run_ok(&run)) {
		code = jq_task_done(w->c, t->task, NULL, &err);
		error_text(&err, why, sizeof why);
		if (code)
			send_report(w, R_DONE, t, 0, "task %llu: CMD exited 0 but "
			            "task_done failed: %s%s", (unsigned long long)t->task,
			            why, code == JQ_UNKNOWN_TASK && w->cfg->lease > 0 ?
			            " (the lease ran out first?)" : "");
		else
			send_report(w, R_DONE, t, 0, "%s", "");
	} else {
		/* An aborted run is not the task's fault: back at once. */
		double delay = run.end == RUN_ABORTED ? 0 :
		               retry_delay(w->cfg, t->deliveries);
		describe_run(&run, w->cfg, how, sizeof how);
		code = jq_release(w->c, t->task, delay, &err);
		error_text(&err, why, sizeof why);
		if (code)
			send_report(w, R_FAILED, t, 0, "task %llu (delivery %lu) "
			            "failed: %s; release failed: %s",
			            (unsigned long long)t->task,
			            (unsigned long)t->deliveries, how, why);
		else if (delay > 0)
			send_report(w, R_FAILED, t, 0, "task %llu (delivery %lu) "
			            "failed: %s; released, back in %g s",
			            (unsigned long long)t->task,
			            (unsigned long)t->deliveries, how, delay);
		else
			send_report(w, R_FAILED, t, 0, "task %llu (delivery %lu) "
			            "failed: %s; released",
			            (unsigned long long)t->task,
			            (unsigned long)t->deliveries, how);
	}
	if (code >= JQ_ERR_SYSTEM || code == JQ_SHUTTING_DOWN)
		worker_fail(w, run_ok(&run) ? "task_done" : "release", &err);
}

/*
 * Gives back a task that arrived as the worker was being stopped (the
 * daemon handed it over before it saw the cancel).  A release on a new
 * connection returns it now, with or without a lease; should that fail,
 * closing returns a task without lease, and a lease runs out.
 */
static void give_back(struct worker *w, const struct jq_task *t)
{
	struct jq_error err;
	jq_client *c = w->cfg->opt.transport == JQ_UDP ? w->c :
	               jq_connect_tls(&w->cfg->opt, w->cfg->tls, &err);
	if (c)
		jq_release(c, t->task, 0, &err);
	if (c && c != w->c)
		jq_close(c);
}

/* Sets or removes one variable of CMD's environment. */
static void set_env(const char *name, const char *value)
{
	if (value)
		setenv(name, value, 1);
	else
		unsetenv(name);
}

/* CMD's joinq (or libjoinq) reaches the daemon as the worker does: TLS
 * goes on through the environment as JOINQ_HOST and JOINQ_PORT do. */
static void tls_environment(const struct tls_flags *f)
{
	setenv("JOINQ_TLS", f->on ? "1" : "0", 1);
	set_env("JOINQ_CACERT", f->on ? f->cacert : NULL);
	set_env("JOINQ_CERT", f->on ? f->cert : NULL);
	set_env("JOINQ_KEY", f->on ? f->key : NULL);
	set_env("JOINQ_TLS_SERVER_NAME", f->on ? f->server_name : NULL);
	set_env("JOINQ_TLS_INSECURE_ANY_NAME", f->on && f->any_name ? "1" :
	        NULL);
}

static void worker_loop(struct worker *w)
{
	/* A blocking get waits for ever over TCP, where a stop cancels it;
	 * over UDP a lost datagram would leave it waiting, so it waits a
	 * while, then asks again. */
	static const struct jq_wait udp_wait = { true, UDP_GET_WAIT };
	const struct jq_wait *how = w->cfg->opt.transport == JQ_UDP ?
	                            &udp_wait : NULL;
	bool waiting = false;           /* R_WAITING sent since the last task */

	for (;;) {
		struct jq_error err;
		struct jq_task t;

		if (worker_stop)
			worker_exit(w, WORKER_STOPPED);
		if (w->cfg->max_tasks && w->tasks >= w->cfg->max_tasks) {
			send_report(w, R_RETIRED, NULL, 0, "%s", "");
			worker_exit(w, WORKER_STOPPED);
		}
		if (!waiting)
			send_report(w, R_WAITING, NULL, 0, "%s", "");
		waiting = true;

		/* Only a get is cancelled: a task_done cut short would leave the
		 * worker not knowing whether it counted. */
		jq_set_cancel_fd(w->c, w->cancel_r);
		int code = jq_get(w->c, w->cfg->queue, how, w->cfg->lease, &t, &err);
		jq_set_cancel_fd(w->c, -1);

		if (code == JQ_OK) {
			if (worker_stop) {
				give_back(w, &t);
				jq_task_free(&t);
				worker_exit(w, WORKER_STOPPED);
			}
			waiting = false;
			do_task(w, &t);
			jq_task_free(&t);
			continue;
		}
		if (worker_stop)
			worker_exit(w, WORKER_STOPPED);   /* cancelled, as asked */
		if (code == JQ_EMPTY && how)
			continue;                   /* the UDP wait ran out */
		worker_fail(w, "get", &err);
	}
}

void worker_main(const struct work *cfg)
{
	struct worker w = { .cfg = cfg, .pid = getpid() };
	struct jq_error err;
	int cancel[2], wakep[2];

	/* Leave when the parent does (SIGTERM: a graceful stop); if it is
	 * gone already, the PDEATHSIG came too late to fire. */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != cfg->parent)
		_exit(WORKER_STOPPED);

	close(cfg->report_r);
	close(cfg->sig_r);
	close(cfg->sig_w);
	if (make_pipe(cancel, true) < 0 || make_pipe(wakep, true) < 0) {
		send_report(&w, R_TROUBLE, NULL, 0, "pipe: %s", strerror(errno));
		_exit(WORKER_FATAL);
	}
	w.cancel_r = cancel[0];
	worker_cancel_fd = cancel[1];
	w.wake_r = wakep[0];
	worker_wake_fd = wakep[1];

	set_handler(SIGTERM, worker_on_signal);
	if (!ignored_at_start(SIGINT))
		set_handler(SIGINT, worker_on_signal);
	if (!ignored_at_start(SIGHUP))
		set_handler(SIGHUP, worker_on_signal);
	set_handler(SIGUSR1, worker_on_signal);
	set_handler(SIGCHLD, worker_on_signal);
	signal(SIGPIPE, SIG_IGN);    /* CMD may close its stdin unread */
	restore_signal_mask();

	setenv("JOINQ_QUEUE", cfg->queue_name, 1);
	setenv("JOINQ_HOST", cfg->opt.host ? cfg->opt.host : JQ_DEFAULT_HOST, 1);
	setenv("JOINQ_PORT", cfg->opt.port ? cfg->opt.port : cfg->tls ?
	       JQ_DEFAULT_TLS_PORT : JQ_DEFAULT_PORT, 1);
	tls_environment(cfg->tls_flags);

	if (worker_stop)
		_exit(WORKER_STOPPED);
	w.c = jq_connect_tls(&cfg->opt, cfg->tls, &err);
	if (!w.c)
		worker_fail(&w, "connect", &err);
	worker_loop(&w);
	_exit(WORKER_STOPPED);          /* not reached */
}

