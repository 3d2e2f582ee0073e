/*
 * pool.c - the parent of `joinq work`: it forks the workers and then only
 * watches.  It owns the slots (one place in the pool, filled by one worker
 * after another), the reports it reads from them, the restarts after a
 * backoff, the status line and log, the stop on signals, the drain check
 * of --exit-when-empty, and the end: strays killed, the summary.
 *
 * The parent's loop: one poll() over the report pipe and a self-pipe that
 * its signal handlers write to (SIGCHLD, SIGTERM, SIGINT, SIGHUP); the
 * timeout is the nearest of a worker's restart after backoff, the status
 * redraw, a drain re-check, and the kill deadline after a second signal.
 *
 * The pool's states: RUNNING (keeps N workers) -> STOPPING (first signal,
 * or the queue drained: each worker finishes what it runs and exits; none
 * is started) -> ABORTING (second signal: the CMDs are killed, their tasks
 * released) -> done once the last worker is reaped.  A drained stop looks
 * at the queue again when every worker is gone, and resumes if a task came
 * back meanwhile (one handed over as a worker was being stopped).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "joinq.h"
#include "workint.h"
#include "xalloc.h"

#define RESTART_MIN_MS 100      /* backoff before a dead worker's successor */
#define RESTART_MAX_MS 10000
#define LIVED_MS 10000          /* a worker that lived this long was fine */
#define ABORT_GRACE_MS 10000    /* second signal: then SIGKILL the workers */
#define STRAY_GRACE_MS 1000     /* at exit: SIGTERM, then SIGKILL strays */
#define STATUS_MS 200           /* the status line's redraw */
#define SUMMARY_MS 10000        /* a log line this often, off a terminal */
#define RATE_MS 2000            /* the status line's rate spans this */
#define DRAIN_SPACING_MS 50     /* qsize asked at most this often */
#define DRAIN_RETRY_MS 1000     /* and again this soon after a doubt */
#define REPORTS_AT_ONCE 64

/* ---- signals ------------------------------------------------------------- */

/* The parent's.  Its handlers only count and wake the loop. */
static volatile sig_atomic_t pool_stops;     /* SIGTERM, SIGINT, SIGHUP */
static volatile sig_atomic_t pool_last_signal;
static volatile sig_atomic_t pool_children;  /* SIGCHLD came */
static pid_t pool_pid;
static int pool_wake_fd = -1;

static void pool_on_signal(int sig)
{
	int saved = errno;
	/* Signals are blocked across fork, so a new worker never runs this;
	 * the check keeps it so should that change. */
	if (getpid() == pool_pid) {
		if (sig == SIGCHLD) {
			pool_children = 1;
		} else {
			pool_stops = pool_stops + 1;
			pool_last_signal = sig;
		}
		wake(pool_wake_fd);
	}
	errno = saved;
}

/* ---- the parent: slots --------------------------------------------------- */

/* One place in the pool, filled by one worker after another. */
enum slot_state {
	SLOT_EMPTY,                 /* no worker; one starts at restart_at */
	SLOT_STARTING,              /* forked, connecting: nothing reported */
	SLOT_WAITING,               /* in get, holding nothing */
	SLOT_BUSY,                  /* holding task, CMD in group pgid */
	SLOT_BETWEEN,               /* answered a task; about to wait again */
	SLOT_RETIRING,              /* --max-tasks reached: exiting */
};

struct slot {
	enum slot_state state;
	pid_t pid;                  /* 0: none */
	pid_t pgid;                 /* BUSY: CMD's group; 0: not started yet */
	uint64_t task;              /* BUSY */
	uint32_t deliveries;
	int64_t born;               /* when it was forked */
	int64_t restart_at;         /* EMPTY: when one starts; NEVER: none */
	int64_t backoff;            /* ms before a dead worker's successor */
	bool reaped;                /* waited for; its death not applied yet */
	int wstatus;
	char trouble[TEXT_MAX];     /* what it said before it exited */
};

enum pool_state {
	POOL_RUNNING,               /* keeps N workers */
	POOL_STOPPING,              /* workers finish what they run, and exit */
	POOL_ABORTING,              /* CMDs killed; workers release, exit */
};

struct pool {
	struct work *cfg;
	enum pool_state state;
	bool stop_drained;          /* stopping because the queue drained */
	struct slot *slots;
	int nslots;
	int signals_seen;
	int64_t started;
	int64_t abort_deadline;     /* ABORTING: then SIGKILL the workers */

	uint64_t done, failed;      /* CMD runs */
	uint64_t refused;           /* done, but task_done failed */
	uint64_t deaths;            /* workers lost */

	/* --exit-when-empty */
	uint64_t gen;               /* bumped by every change of a slot's state */
	uint64_t drain_gen;         /* gen when qsize was last asked */
	int64_t drain_last;         /* when */
	int64_t drain_retry_at;     /* ask again then, whatever gen says */

	/* progress */
	bool tty;
	bool line_shown;            /* the status line is on the terminal */
	int64_t next_status;
	int64_t next_summary;
	uint64_t summary_count;     /* done + failed at the last summary */
	int64_t rate_at;
	uint64_t rate_count;
	double rate;                /* runs per second, lately */

	char rbuf[REPORTS_AT_ONCE * sizeof(struct report)];
	size_t rlen;
};

static struct slot *slot_of(struct pool *p, pid_t pid)
{
	for (int i = 0; i < p->nslots; i++)
		if (p->slots[i].pid == pid && pid > 0)
			return &p->slots[i];
	return NULL;
}

static void set_state(struct pool *p, struct slot *s, enum slot_state st)
{
	s->state = st;
	p->gen++;
}

static int count_state(const struct pool *p, enum slot_state st)
{
	int n = 0;
	for (int i = 0; i < p->nslots; i++)
		n += p->slots[i].state == st && p->slots[i].pid;
	return n;
}

static int live_workers(const struct pool *p)
{
	int n = 0;
	for (int i = 0; i < p->nslots; i++)
		n += p->slots[i].pid != 0;
	return n;
}

/* ---- the parent: what it prints ------------------------------------------- */

static void clear_line(struct pool *p)
{
	if (p->line_shown)
		write_all(STDERR_FILENO, "\r\033[K", 4);
	p->line_shown = false;
}

/* A log line, "joinq: work: ...".  error: printed even with --quiet. */
static void pool_log(struct pool *p, bool error, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void pool_log(struct pool *p, bool error, const char *fmt, ...)
{
	char line[600];
	va_list ap;

	if (p->cfg->quiet && !error)
		return;
	int n = snprintf(line, sizeof line, "joinq: work: ");
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof line - 2)
		n = (int)sizeof line - 2;
	line[n++] = '\n';
	clear_line(p);
	write_all(STDERR_FILENO, line, (size_t)n);
	p->next_status = 0;             /* the status line back at once */
}

static void update_rate(struct pool *p, int64_t now)
{
	uint64_t count = p->done + p->failed;
	/* Until the first window closes, the average since the start. */
	if (p->rate_at == p->started && now - p->started >= 500)
		p->rate = (double)count * 1000 / (double)(now - p->started);
	if (now - p->rate_at >= RATE_MS) {
		p->rate = (double)(count - p->rate_count) * 1000 /
		          (double)(now - p->rate_at);
		p->rate_at = now;
		p->rate_count = count;
	}
}

static void figures(const struct pool *p, char *out, size_t size)
{
	snprintf(out, size, "%llu done, %llu failed, %d running, %d of %d "
	         "workers, %.1f/s", (unsigned long long)p->done,
	         (unsigned long long)p->failed, count_state(p, SLOT_BUSY),
	         live_workers(p), p->nslots, p->rate);
}

/* The status line on a terminal; a summary now and then elsewhere. */
static void progress(struct pool *p, int64_t now)
{
	char text[200], line[300];

	update_rate(p, now);
	if (p->cfg->quiet)
		return;
	if (p->tty && now >= p->next_status) {
		figures(p, text, sizeof text);
		int n = snprintf(line, sizeof line, "\r\033[Kjoinq work: %s%s",
		                 text, p->state == POOL_STOPPING ? ", stopping" :
		                 p->state == POOL_ABORTING ? ", aborting" : "");
		write_all(STDERR_FILENO, line, (size_t)n);
		p->line_shown = true;
		p->next_status = now + STATUS_MS;
	}
	if (!p->tty && now >= p->next_summary) {
		uint64_t count = p->done + p->failed;
		/* Quiet while nothing happens. */
		if (count != p->summary_count || count_state(p, SLOT_BUSY)) {
			figures(p, text, sizeof text);
			pool_log(p, false, "%s", text);
		}
		p->summary_count = count;
		p->next_summary = now + SUMMARY_MS;
	}
}

static int64_t progress_due(const struct pool *p)
{
	if (p->cfg->quiet)
		return NEVER;
	return p->tty ? p->next_status : p->next_summary;
}

/* ---- the parent: workers -------------------------------------------------- */

static void start_worker(struct pool *p, struct slot *s, int64_t now)
{
	sigset_t all, old;

	fflush(stdout);
	/* Blocked across fork: a signal to the new worker waits until its own
	 * handlers are in place. */
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	pid_t pid = fork();
	if (pid == 0)
		worker_main(p->cfg);
	int e = errno;
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (pid < 0) {
		pool_log(p, true, "cannot start a worker: fork: %s; trying again "
		         "in %.1f s", strerror(e), (double)s->backoff / 1000);
		s->restart_at = now + s->backoff;
		s->backoff = s->backoff * 2 > RESTART_MAX_MS ? RESTART_MAX_MS :
		             s->backoff * 2;
		return;
	}
	s->pid = pid;
	s->pgid = 0;
	s->task = 0;
	s->born = now;
	s->restart_at = NEVER;
	s->reaped = false;
	s->trouble[0] = '\0';
	set_state(p, s, SLOT_STARTING);
}

static void apply_report(struct pool *p, struct report *r)
{
	struct slot *s = slot_of(p, r->pid);

	r->text[TEXT_MAX - 1] = '\0';
	if (!s)
		return;                 /* cannot be: a worker reports, then dies */
	switch (r->type) {
	case R_WAITING:
		set_state(p, s, SLOT_WAITING);
		break;
	case R_TASK:
		s->task = r->task;
		s->deliveries = r->deliveries;
		s->pgid = 0;
		set_state(p, s, SLOT_BUSY);
		break;
	case R_RUNNING:
		s->pgid = r->pgid;
		/* Started as the abort went out: the worker kills it too. */
		if (p->state == POOL_ABORTING)
			kill(-s->pgid, SIGKILL);
		break;
	case R_DONE:
		p->done++;
		s->pgid = 0;
		s->backoff = RESTART_MIN_MS;    /* a worker that works */
		set_state(p, s, SLOT_BETWEEN);
		if (r->text[0]) {
			p->refused++;
			pool_log(p, true, "%s", r->text);
		}
		break;
	case R_FAILED:
		p->failed++;
		s->pgid = 0;
		s->backoff = RESTART_MIN_MS;
		set_state(p, s, SLOT_BETWEEN);
		pool_log(p, false, "%s", r->text);
		break;
	case R_RETIRED:
		set_state(p, s, SLOT_RETIRING);
		break;
	case R_TROUBLE:
		memcpy(s->trouble, r->text, sizeof s->trouble);
		break;
	}
}

/* Reads the reports in the pipe.  all: until it is empty (after a reap,
 * so that a dead worker's last words are heard before its death); else a
 * bounded batch, so that busy workers cannot starve the loop. */
static void read_reports(struct pool *p, bool all)
{
	for (int rounds = 0; all || rounds < 16; rounds++) {
		ssize_t n = read(p->cfg->report_r, p->rbuf + p->rlen,
		                 sizeof p->rbuf - p->rlen);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		p->rlen += (size_t)n;
		size_t off = 0;
		while (p->rlen - off >= sizeof(struct report)) {
			struct report r;
			memcpy(&r, p->rbuf + off, sizeof r);
			apply_report(p, &r);
			off += sizeof r;
		}
		memmove(p->rbuf, p->rbuf + off, p->rlen - off);
		p->rlen -= off;
		if (rounds > 100000)
			return;             /* a bound, never reached in practice */
	}
}

/* Waits for every child that ended: workers, and whatever came back to
 * us as subreaper (those need nothing more).  True if a worker ended. */
static bool reap(struct pool *p)
{
	bool any = false;
	for (;;) {
		int st;
		pid_t pid = waitpid(-1, &st, WNOHANG);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid <= 0)
			return any;
		struct slot *s = slot_of(p, pid);
		if (s) {
			s->reaped = true;
			s->wstatus = st;
			any = true;
		}
	}
}

/* A worker is gone: say so when it was not meant to go, and put another
 * in its place, at once or after the slot's backoff. */
static void apply_death(struct pool *p, struct slot *s, int64_t now)
{
	int st = s->wstatus;
	bool busy = s->state == SLOT_BUSY;
	bool retired = s->state == SLOT_RETIRING && WIFEXITED(st) &&
	               WEXITSTATUS(st) == WORKER_STOPPED;
	bool stopped = p->state != POOL_RUNNING && WIFEXITED(st) &&
	               WEXITSTATUS(st) == WORKER_STOPPED;
	char how[TEXT_MAX + 64], held[160] = "", next[64] = "";
	pid_t pid = s->pid;

	if (busy) {
		/* PDEATHSIG killed CMD; what it started lives on in its group. */
		if (s->pgid)
			kill(-s->pgid, SIGKILL);
		snprintf(held, sizeof held, "; its task %llu (delivery %lu) "
		         "comes back when %s", (unsigned long long)s->task,
		         (unsigned long)s->deliveries, p->cfg->lease > 0 ||
		         p->cfg->opt.transport == JQ_UDP ? "its lease runs out" :
		         "the daemon sees the connection close");
	}
	s->pid = 0;
	s->pgid = 0;
	s->reaped = false;
	set_state(p, s, SLOT_EMPTY);
	s->restart_at = NEVER;

	if (retired) {
		if (p->state == POOL_RUNNING)
			s->restart_at = now;
		return;
	}
	if (stopped && !busy)
		return;

	p->deaths++;
	if (WIFEXITED(st) && WEXITSTATUS(st) == WORKER_UNREACHABLE)
		snprintf(how, sizeof how, "cannot reach the daemon: %s",
		         s->trouble[0] ? s->trouble : "?");
	else if (WIFEXITED(st) && WEXITSTATUS(st) == WORKER_FATAL)
		snprintf(how, sizeof how, "gave up: %s",
		         s->trouble[0] ? s->trouble : "?");
	else if (WIFEXITED(st) && WEXITSTATUS(st) == WORKER_STOPPED)
		snprintf(how, sizeof how, "stopped (a signal sent to it alone?)");
	else if (WIFEXITED(st))
		snprintf(how, sizeof how, "ended with exit status %d",
		         WEXITSTATUS(st));
	else
		describe_wait_status(st, how, sizeof how);

	if (p->state == POOL_RUNNING) {
		if (now - s->born >= LIVED_MS)
			s->backoff = RESTART_MIN_MS;
		s->restart_at = now + s->backoff;
		snprintf(next, sizeof next, "; another starts in %.1f s",
		         (double)s->backoff / 1000);
		s->backoff = s->backoff * 2 > RESTART_MAX_MS ? RESTART_MAX_MS :
		             s->backoff * 2;
	}
	pool_log(p, true, "worker %d %s%s%s%s", (int)pid,
	         WIFSIGNALED(st) ? "was " : "", how, held, next);
}

static void signal_workers(struct pool *p, int sig)
{
	for (int i = 0; i < p->nslots; i++)
		if (p->slots[i].pid)
			kill(p->slots[i].pid, sig);
}

/* Take no more tasks: each worker finishes its CMD, answers, and exits. */
static void pool_stop(struct pool *p, bool drained)
{
	if (p->state != POOL_RUNNING)
		return;
	p->state = POOL_STOPPING;
	p->stop_drained = drained;
	for (int i = 0; i < p->nslots; i++)
		p->slots[i].restart_at = NEVER;
	signal_workers(p, SIGTERM);
}

/* Kill every CMD now; the workers release those tasks and exit. */
static void pool_abort(struct pool *p, int64_t now)
{
	p->state = POOL_ABORTING;
	p->abort_deadline = now + ABORT_GRACE_MS;
	for (int i = 0; i < p->nslots; i++) {
		struct slot *s = &p->slots[i];
		s->restart_at = NEVER;
		/* From here, so that a stuck worker cannot keep its CMD alive. */
		if (s->pid && s->state == SLOT_BUSY && s->pgid)
			kill(-s->pgid, SIGKILL);
	}
	signal_workers(p, SIGUSR1);
}

static const char *signal_name(int sig)
{
	switch (sig) {
	case SIGTERM: return "SIGTERM";
	case SIGINT: return "SIGINT";
	case SIGHUP: return "SIGHUP";
	default: return "a signal";
	}
}

static void on_signals(struct pool *p, int64_t now)
{
	while (p->signals_seen < pool_stops) {
		const char *name = signal_name(pool_last_signal);
		int running = count_state(p, SLOT_BUSY);
		p->signals_seen++;
		if (p->signals_seen == 1 && !running) {
			pool_log(p, false, "%s: stopping", name);
			pool_stop(p, false);
			p->stop_drained = false;    /* a signal stops for good */
		} else if (p->signals_seen == 1) {
			pool_log(p, false, "%s: stopping; %d running task%s first "
			         "(a second signal kills them)", name, running,
			         running == 1 ? " finishes" : "s finish");
			pool_stop(p, false);
			p->stop_drained = false;    /* a signal stops for good */
		} else if (p->signals_seen == 2) {
			pool_log(p, true, "%s again: killing %d running CMD%s; their "
			         "tasks go back to the queue", name, running,
			         running == 1 ? "" : "s");
			pool_abort(p, now);
		} else {
			pool_log(p, true, "%s again: killing the workers", name);
			signal_workers(p, SIGKILL);
		}
	}
}

/* ---- the parent: --exit-when-empty ---------------------------------------- */

/* True when no worker holds a task or is about to: every worker waits in
 * get (or its place is empty, restarting). */
static bool pool_idle(const struct pool *p)
{
	for (int i = 0; i < p->nslots; i++) {
		const struct slot *s = &p->slots[i];
		if (s->pid && s->state != SLOT_WAITING)
			return false;
	}
	return true;
}

/* qsize over a short connection of the parent's own. */
static int ask_qsize(const struct pool *p, struct jq_qsize *q,
                     struct jq_error *err)
{
	jq_client *c = jq_connect_tls(&p->cfg->opt, p->cfg->tls, err);
	if (!c)
		return err->code;
	int code = jq_qsize(c, p->cfg->queue, q, err);
	jq_close(c);
	return code;
}

/*
 * Asks the daemon whether the queue is drained: nothing queued, nothing
 * delayed, nothing in flight.  A delayed task comes back to a waiting
 * worker by itself, which changes its state and brings us here again.
 *
 * A task in flight while every worker waits in get may be one being
 * delivered to a worker right now: the daemon counts it as delivered
 * once it hands it over, and the worker reports it only once the whole
 * reply is in, which for a large item on a busy machine takes any time
 * at all.  Nothing in the reports tells that delivery from another
 * consumer's task, or from a dead worker's on its way back, so none of
 * them is drained: the question is asked again after DRAIN_RETRY_MS.
 *
 * 1: drained; 0: not; -1: the daemon did not say (the log says why).
 */
static int queue_drained(struct pool *p, int64_t now)
{
	struct jq_qsize q = { 0 };
	struct jq_error err;

	p->drain_gen = p->gen;
	p->drain_last = now;
	p->drain_retry_at = NEVER;
	if (ask_qsize(p, &q, &err)) {
		pool_log(p, true, "cannot ask whether the queue is empty: %s",
		         err.message);
		p->drain_retry_at = now + DRAIN_RETRY_MS;
		return -1;
	}
	if (q.qsize || q.delayed)
		return 0;
	if (q.inflight) {
		p->drain_retry_at = now + DRAIN_RETRY_MS;
		return 0;
	}
	return 1;
}

/* When the drain check is next due; NEVER if not wanted. */
static int64_t drain_due(const struct pool *p)
{
	if (!p->cfg->exit_when_empty || p->state != POOL_RUNNING ||
	    !pool_idle(p))
		return NEVER;
	int64_t due = p->gen != p->drain_gen ? p->drain_last + DRAIN_SPACING_MS
	                                     : NEVER;
	return earlier(due, p->drain_retry_at);
}

static void drain_check(struct pool *p, int64_t now)
{
	int64_t due = drain_due(p);
	if (due == NEVER || due > now)
		return;
	if (queue_drained(p, now) == 1) {
		pool_log(p, false, "the queue is empty: stopping");
		pool_stop(p, true);
	}
}

/* ---- the parent: the end -------------------------------------------------- */

/*
 * Children of ours that are not workers: CMDs' leftovers that left their
 * process group (setsid) and outlived it.  No orphans, ever: SIGTERM, a
 * grace, SIGKILL, and each one reaped.
 */
static int read_children(pid_t *out, int max)
{
	char path[64], text[4096];
	snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, text, sizeof text - 1);
	close(fd);
	if (n <= 0)
		return 0;
	text[n] = '\0';
	int count = 0;
	char *s = text, *end;
	while (count < max) {
		long v = strtol(s, &end, 10);
		if (end == s)
			break;
		out[count++] = (pid_t)v;
		s = end;
	}
	return count;
}

static void end_strays(struct pool *p)
{
	pid_t kids[256];
	int sig = SIGTERM;

	for (int round = 0; round < 2; round++, sig = SIGKILL) {
		reap(p);
		int n = read_children(kids, 256);
		if (n == 0)
			return;
		if (round == 0)
			pool_log(p, true, "killing %d process%s that CMDs left behind",
			         n, n == 1 ? "" : "es");
		for (int i = 0; i < n; i++)
			kill(kids[i], sig);
		int64_t until = net_now_ms() + STRAY_GRACE_MS;
		while (net_now_ms() < until && read_children(kids, 1) > 0) {
			struct pollfd pf = { .fd = p->cfg->sig_r, .events = POLLIN };
			poll(&pf, 1, 50);
			drain_fd(p->cfg->sig_r);
			reap(p);
		}
	}
	reap(p);
}

static void final_summary(struct pool *p, int64_t now)
{
	double secs = (double)(now - p->started) / 1000;
	uint64_t count = p->done + p->failed;
	char deaths[64] = "", refused[64] = "";

	clear_line(p);
	if (p->cfg->quiet && !p->failed)
		return;
	if (p->deaths)
		snprintf(deaths, sizeof deaths, "; %llu worker%s lost",
		         (unsigned long long)p->deaths, p->deaths == 1 ? "" : "s");
	if (p->refused)
		snprintf(refused, sizeof refused, " (task_done refused for %llu)",
		         (unsigned long long)p->refused);
	pool_log(p, p->failed > 0, "%llu done%s, %llu failed in %.2f s "
	         "(%.1f/s)%s", (unsigned long long)p->done, refused,
	         (unsigned long long)p->failed, secs,
	         secs > 0 ? (double)count / secs : 0.0, deaths);
}

/* ---- the parent: the loop -------------------------------------------------- */

static void run_pool(struct pool *p)
{
	for (;;) {
		int64_t now = net_now_ms();

		on_signals(p, now);
		if (pool_children) {
			pool_children = 0;
			if (reap(p)) {
				read_reports(p, true);
				for (int i = 0; i < p->nslots; i++)
					if (p->slots[i].reaped)
						apply_death(p, &p->slots[i], now);
			}
		}
		if (p->state == POOL_RUNNING)
			for (int i = 0; i < p->nslots; i++) {
				struct slot *s = &p->slots[i];
				if (!s->pid && s->restart_at != NEVER &&
				    s->restart_at <= now)
					start_worker(p, s, now);
			}
		if (p->state == POOL_ABORTING && p->abort_deadline != NEVER &&
		    now >= p->abort_deadline) {
			pool_log(p, true, "workers still there %d s after the second "
			         "signal: killing them", ABORT_GRACE_MS / 1000);
			signal_workers(p, SIGKILL);
			p->abort_deadline = NEVER;
		}
		drain_check(p, now);
		now = net_now_ms();
		progress(p, now);

		if (!live_workers(p) && p->state != POOL_RUNNING) {
			/* A drained stop: a task handed over as a worker was being
			 * stopped went back; if one did, carry on. */
			if (p->stop_drained && queue_drained(p, now) == 0) {
				pool_log(p, false, "tasks came back as the pool stopped: "
				         "resuming");
				p->state = POOL_RUNNING;
				p->stop_drained = false;
				for (int i = 0; i < p->nslots; i++)
					p->slots[i].restart_at = now;
				continue;
			}
			return;
		}

		int64_t until = NEVER;
		for (int i = 0; i < p->nslots; i++)
			if (!p->slots[i].pid && p->state == POOL_RUNNING)
				until = earlier(until, p->slots[i].restart_at);
		if (p->state == POOL_ABORTING)
			until = earlier(until, p->abort_deadline);
		until = earlier(until, drain_due(p));
		until = earlier(until, progress_due(p));

		struct pollfd pf[2] = {
			{ .fd = p->cfg->sig_r, .events = POLLIN },
			{ .fd = p->cfg->report_r, .events = POLLIN },
		};
		if (poll(pf, 2, poll_timeout(until, now)) < 0)
			continue;               /* EINTR: the flags say what came */
		if (pf[0].revents)
			drain_fd(p->cfg->sig_r);
		if (pf[1].revents)
			read_reports(p, false);
	}
}


/* ---- the parent: start and end ------------------------------------------- */

int pool_run(struct work *cfg)
{
	struct pool p;

	save_signals();
	pool_pid = getpid();
	pool_wake_fd = cfg->sig_w;
	set_handler(SIGCHLD, pool_on_signal);
	set_handler(SIGTERM, pool_on_signal);
	if (!ignored_at_start(SIGINT))
		set_handler(SIGINT, pool_on_signal);
	if (!ignored_at_start(SIGHUP))
		set_handler(SIGHUP, pool_on_signal);
	signal(SIGPIPE, SIG_IGN);

	memset(&p, 0, sizeof p);
	p.cfg = cfg;
	p.nslots = cfg->jobs;
	p.slots = xcalloc((size_t)cfg->jobs, sizeof *p.slots);
	p.started = net_now_ms();
	p.tty = isatty(STDERR_FILENO);
	p.rate_at = p.started;
	p.next_summary = p.started + SUMMARY_MS;
	p.drain_last = p.started - DRAIN_SPACING_MS;
	p.drain_gen = (uint64_t)-1;
	p.drain_retry_at = NEVER;
	p.abort_deadline = NEVER;
	for (int i = 0; i < p.nslots; i++) {
		p.slots[i].backoff = RESTART_MIN_MS;
		p.slots[i].restart_at = p.started;
	}

	run_pool(&p);
	end_strays(&p);
	final_summary(&p, net_now_ms());

	restore_signals();
	free(p.slots);
	return p.failed ? EXIT_ERROR : EXIT_OK;
}
