/*
 * work.c - `joinq work`: a pool of consumer processes, what Python's
 * multiprocessing.Pool over a JoinableQueue gives, as one command.  This
 * file owns the pool: its parent (supervision, reports, progress, stopping),
 * its workers (get, run CMD, task_done or release) and the running of CMD.
 * All daemon I/O goes through libjoinq's public API (joinq.h).
 *
 * Processes.  The parent forks N workers and then only watches.  It is a
 * child subreaper, so whatever dies below it (a CMD whose worker died, what
 * a CMD left behind) comes back to it to be reaped.  Each worker connects
 * after the fork, on a connection of its own, and loops: get a task, run CMD
 * in a process group of its own with the item on its stdin, then task_done
 * (CMD exited 0) or release.  The parent talks to the daemon only for the
 * start check and, with --exit-when-empty, for a qsize on a short
 * connection of its own.
 *
 * Reports.  The workers tell the parent what they do on one pipe they
 * share, in fixed-size messages below PIPE_BUF so that every write is
 * atomic: waiting, got task T, CMD running in group G, done, failed (and
 * why), retired, trouble.  From them the parent knows each worker's state,
 * which gives the status line, the process groups to kill on a second
 * signal even when a worker is stuck, the task a dead worker held, and the
 * moment to ask whether the queue is drained.
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
 *
 * A worker's states: CONNECTING -> WAITING (in get; a stop signal cancels
 * the wait through jq_set_cancel_fd) -> RUNNING (CMD; a stop lets it
 * finish, an abort kills it) -> ANSWERING (task_done or release) -> WAITING
 * again, or gone: stopped, retired (--max-tasks), daemon unreachable.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "buf.h"
#include "joinq.h"
#include "work.h"
#include "xalloc.h"

/* joinq work's exit status (the help says the same). */
enum {
	EXIT_OK = 0,
	EXIT_FAILED = 1,            /* a CMD run failed, or an error reply */
	EXIT_USAGE = 2,
	EXIT_CONNECTION = 6,
};

/* How a worker ends, for the parent. */
enum {
	WORKER_STOPPED = 0,         /* told to stop, retired, parent gone */
	WORKER_FATAL = 70,          /* cannot work: an error reply, no pipe */
	WORKER_UNREACHABLE = 75,    /* cannot reach the daemon */
};

#define NEVER (-1)              /* a deadline that never comes */
#define JOBS_MAX 1024
#define RESTART_MIN_MS 100      /* backoff before a dead worker's successor */
#define RESTART_MAX_MS 10000
#define LIVED_MS 10000          /* a worker that lived this long was fine */
#define KILL_GRACE_MS 2000      /* --task-timeout: SIGTERM, then SIGKILL */
#define ABORT_GRACE_MS 10000    /* second signal: then SIGKILL the workers */
#define STRAY_GRACE_MS 1000     /* at exit: SIGTERM, then SIGKILL strays */
#define STATUS_MS 200           /* the status line's redraw */
#define SUMMARY_MS 10000        /* a log line this often, off a terminal */
#define RATE_MS 2000            /* the status line's rate spans this */
#define DRAIN_SPACING_MS 50     /* qsize asked at most this often */
#define DRAIN_RETRY_MS 1000     /* and again this soon after a doubt */
#define RETRY_DELAY_MAX 3600.0  /* --retry-delay's backoff stops at 1 h */
#define UDP_GET_WAIT 5.0        /* a UDP get's wait; then another */
#define TEXT_MAX 200            /* a report's sentence */
#define REPORTS_AT_ONCE 64

/* ---- options ------------------------------------------------------------ */

struct work {
	struct jq_options opt;      /* where the daemon is */
	const char *queue;          /* NULL: "default" */
	const char *queue_name;     /* for JOINQ_QUEUE and messages */
	int jobs;
	double lease;               /* seconds; 0: none */
	double task_timeout;        /* seconds; 0: none */
	double retry_delay;         /* seconds; 0: release at once */
	unsigned long max_tasks;    /* per worker; 0: no limit */
	bool exit_when_empty, quiet;
	char **cmd;                 /* CMD [ARG]..., NULL-terminated */
	pid_t parent;               /* the pool's parent */
	int report_r, report_w;     /* the report pipe */
	int sig_r, sig_w;           /* the parent's self-pipe */
};

const char work_help[] =
	"Run a pool of N worker processes that take tasks from the queue and\n"
	"run CMD once per task, like Python's multiprocessing.Pool over a\n"
	"JoinableQueue.  Each worker has a connection of its own: it gets a\n"
	"task, runs CMD (no shell; fork and exec), and answers task_done when\n"
	"CMD exits 0, release otherwise.  Put '--' before CMD when it starts\n"
	"with '-'.\n"
	"\n"
	"What CMD gets of its task:\n"
	"  stdin  the item: a string item as its raw bytes (a NUL included),\n"
	"         any other item as compact JSON; no newline is added, and CMD\n"
	"         need not read it\n"
	"  {}     in an ARG, anywhere in it (as xargs -I{}: out-{}.txt), the\n"
	"         item, the same way; a string item holding a NUL cannot go\n"
	"         into an argument, so that run fails\n"
	"  env    JOINQ_TASK (the task id), JOINQ_DELIVERIES (1 the first\n"
	"         time), JOINQ_QUEUE, JOINQ_HOST and JOINQ_PORT, so that CMD\n"
	"         can run joinq itself (joinq put ..., joinq task_done ...)\n"
	"CMD's stdout and stderr are joinq's.  CMD runs in a process group of\n"
	"its own and dies if its worker dies; once CMD exits, whatever it left\n"
	"running in its group is killed.\n"
	"\n"
	"      -j, --jobs N       N workers, 1 to 1024 (default: the number of\n"
	"                         online CPUs)\n"
	"      --lease S          take each task with a lease of S seconds\n"
	"                         (> 0): a task whose worker vanishes comes back\n"
	"                         when it runs out; nothing renews it, so a\n"
	"                         longer run loses its task (over TCP, without\n"
	"                         --lease, a task comes back when its worker's\n"
	"                         connection closes)\n"
	"      --task-timeout S   kill a CMD still running after S seconds\n"
	"                         (SIGTERM to its process group, SIGKILL 2 s\n"
	"                         later) and release its task\n"
	"      --retry-delay S    release a failed task with a delay of\n"
	"                         S x 2^(D-1) seconds, D its delivery count, at\n"
	"                         most one hour (default: back at once)\n"
	"      --max-tasks N      a worker exits after N tasks and a new one\n"
	"                         takes its place\n"
	"      --exit-when-empty  stop and exit once the queue is drained: no\n"
	"                         task queued, delayed or in flight (held by a\n"
	"                         worker or by any other consumer)\n"
	"      --quiet            print only errors, and the final summary if a\n"
	"                         run failed\n"
	"  -h, --help             show this help and exit\n"
	"\n"
	"A worker that dies (crash, kill -9) or cannot reach the daemon is\n"
	"replaced after a backoff (0.1 s doubling to 10 s) and its task comes\n"
	"back through the daemon.  How often a failing task is tried is the\n"
	"daemon's max_deliveries, after which it goes to the dead-letter queue.\n"
	"\n"
	"Progress: on a terminal, a status line on stderr (done, failed,\n"
	"running, rate); otherwise log lines: failed runs, replaced workers, a\n"
	"summary every 10 s and at the end.\n"
	"\n"
	"Signals: SIGTERM, SIGINT (Ctrl-C) or SIGHUP: take no more tasks, let\n"
	"the running CMDs finish and answer them, then exit.  A second signal:\n"
	"kill the running CMDs (SIGKILL to their process groups), release their\n"
	"tasks and exit.\n";

static const char *const work_exit_help =
	"Exit status:\n"
	"  0  every CMD run exited 0\n"
	"  1  some CMD run failed (non-zero exit, signal, timeout, or killed by\n"
	"     a second signal), or the daemon answered the start check with an\n"
	"     error (bad queue name, unauthorized)\n"
	"  2  usage error: a bad option or number, no CMD, or CMD not found\n"
	"  6  cannot connect to the daemon at start\n";

static int usage_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "joinq: work: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'joinq work --help'.\n");
	return EXIT_USAGE;
}

/* A number of seconds: finite, >= 0, nothing after it. */
static bool parse_seconds(const char *text, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(text, &end);
	if (end == text || *end || errno || !isfinite(v) || v < 0)
		return false;
	*out = v;
	return true;
}

/* A count from 1 to max, digits only. */
static bool parse_count(const char *text, unsigned long max,
                        unsigned long *out)
{
	if (!*text || strspn(text, "0123456789") != strlen(text))
		return false;
	errno = 0;
	unsigned long v = strtoul(text, NULL, 10);
	if (errno || v == 0 || v > max)
		return false;
	*out = v;
	return true;
}

static bool is_executable_file(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
	       access(path, X_OK) == 0;
}

/* True if execvp would find name: a path, or a file on $PATH. */
static bool find_program(const char *name)
{
	if (strchr(name, '/'))
		return is_executable_file(name);
	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/bin:/usr/bin";     /* execvp's default, near enough */
	struct buf full = { 0 };
	bool found = false;
	while (!found) {
		size_t n = strcspn(path, ":");
		buf_reset(&full);
		if (n)
			buf_add(&full, path, n);
		else
			buf_addc(&full, '.');   /* an empty entry is the cwd */
		buf_addc(&full, '/');
		buf_adds(&full, name);
		buf_addc(&full, '\0');
		found = is_executable_file(full.p);
		if (!path[n])
			break;
		path += n + 1;
	}
	buf_free(&full);
	return found;
}

enum {
	LONG_LEASE = 256,
	LONG_TASK_TIMEOUT,
	LONG_RETRY_DELAY,
	LONG_MAX_TASKS,
	LONG_EXIT_WHEN_EMPTY,
	LONG_QUIET,
};

static const struct option work_longopts[] = {
	{ "jobs", required_argument, NULL, 'j' },
	{ "lease", required_argument, NULL, LONG_LEASE },
	{ "task-timeout", required_argument, NULL, LONG_TASK_TIMEOUT },
	{ "retry-delay", required_argument, NULL, LONG_RETRY_DELAY },
	{ "max-tasks", required_argument, NULL, LONG_MAX_TASKS },
	{ "exit-when-empty", no_argument, NULL, LONG_EXIT_WHEN_EMPTY },
	{ "quiet", no_argument, NULL, LONG_QUIET },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* Fills w from the command line; *done says the run is over (--help or a
 * usage error) with the status returned. */
static int parse_work(struct work *w, int argc, char **argv, bool *done)
{
	unsigned long n;
	int ch;

	*done = true;
	optind = 0;   /* GNU getopt: start afresh on this argv */
	/* '+': options end at CMD, so CMD's own options stay CMD's. */
	while ((ch = getopt_long(argc, argv, "+j:h", work_longopts,
	                         NULL)) != -1) {
		switch (ch) {
		case 'h':
			printf("usage: joinq [OPTION]... %s\n%s\n%s", WORK_USAGE,
			       work_help, work_exit_help);
			return EXIT_OK;
		case 'j':
			if (!parse_count(optarg, JOBS_MAX, &n))
				return usage_error("--jobs wants a number from 1 to %d, "
				                   "not '%s'", JOBS_MAX, optarg);
			w->jobs = (int)n;
			break;
		case LONG_LEASE:
			if (!parse_seconds(optarg, &w->lease) || w->lease == 0)
				return usage_error("--lease wants seconds > 0, not '%s'",
				                   optarg);
			break;
		case LONG_TASK_TIMEOUT:
			if (!parse_seconds(optarg, &w->task_timeout) ||
			    w->task_timeout == 0 || w->task_timeout > 1e9)
				return usage_error("--task-timeout wants seconds > 0, not "
				                   "'%s'", optarg);
			break;
		case LONG_RETRY_DELAY:
			if (!parse_seconds(optarg, &w->retry_delay))
				return usage_error("--retry-delay wants seconds >= 0, not "
				                   "'%s'", optarg);
			break;
		case LONG_MAX_TASKS:
			if (!parse_count(optarg, ULONG_MAX, &w->max_tasks))
				return usage_error("--max-tasks wants a number > 0, not "
				                   "'%s'", optarg);
			break;
		case LONG_EXIT_WHEN_EMPTY:
			w->exit_when_empty = true;
			break;
		case LONG_QUIET:
			w->quiet = true;
			break;
		default:
			/* getopt has said what is wrong */
			fprintf(stderr, "Try 'joinq work --help'.\n");
			return EXIT_USAGE;
		}
	}
	if (optind >= argc)
		return usage_error("no CMD given: joinq %s", WORK_USAGE);
	w->cmd = argv + optind;
	/* A CMD that cannot run would fail every task until each went to the
	 * dead-letter queue: refuse it now.  "{}" as CMD is the item's to
	 * say. */
	if (!strstr(w->cmd[0], "{}") && !find_program(w->cmd[0]))
		return usage_error("cannot run '%s': %s", w->cmd[0],
		                   strchr(w->cmd[0], '/') ?
		                   "not an executable file" : "command not found");
	*done = false;
	return EXIT_OK;
}

/* ---- time and small helpers ---------------------------------------------- */

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t seconds_ms(double s)
{
	return (int64_t)ceil(s * 1000);
}

/* The earlier of two deadlines; NEVER is later than any. */
static int64_t earlier(int64_t a, int64_t b)
{
	if (a == NEVER)
		return b;
	if (b == NEVER)
		return a;
	return a < b ? a : b;
}

/* The poll() timeout that ends at deadline. */
static int poll_timeout(int64_t deadline, int64_t now)
{
	if (deadline == NEVER)
		return -1;
	if (deadline <= now)
		return 0;
	return deadline - now > INT_MAX ? INT_MAX : (int)(deadline - now);
}

static void write_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;     /* stderr gone: nothing better to do */
		p += n;
		len -= (size_t)n;
	}
}

static int make_pipe(int fds[2], bool nonblocking)
{
	if (pipe2(fds, O_CLOEXEC | (nonblocking ? O_NONBLOCK : 0)) < 0)
		return -1;
	return 0;
}

static void set_nonblocking(int fd)
{
	int flags = fcntl(fd, F_GETFL);
	if (flags >= 0)
		fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

static void drain_fd(int fd)
{
	char junk[256];
	while (read(fd, junk, sizeof junk) > 0)
		;
}

/* "exit status 3", "killed by signal 9 (Killed)". */
static void describe_wait_status(int status, char *out, size_t size)
{
	if (WIFEXITED(status))
		snprintf(out, size, "exit status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(out, size, "killed by signal %d (%s)", WTERMSIG(status),
		         strsignal(WTERMSIG(status)));
	else
		snprintf(out, size, "wait status %#x", (unsigned)status);
}

/* ---- signals ------------------------------------------------------------- */

/*
 * The signals the pool changes, and how joinq found them: CMD gets them
 * back before exec, so that it starts as it would from a shell (SIGPIPE
 * not ignored, SIGHUP still ignored under nohup).
 */
static const int changed_signals[] = {
	SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGCHLD, SIGPIPE,
};
#define NCHANGED (sizeof changed_signals / sizeof changed_signals[0])
static struct sigaction original_action[NCHANGED];
static sigset_t original_mask;

static void save_signals(void)
{
	for (size_t i = 0; i < NCHANGED; i++)
		sigaction(changed_signals[i], NULL, &original_action[i]);
	sigprocmask(SIG_SETMASK, NULL, &original_mask);
}

static void restore_signals(void)
{
	for (size_t i = 0; i < NCHANGED; i++)
		sigaction(changed_signals[i], &original_action[i], NULL);
	sigprocmask(SIG_SETMASK, &original_mask, NULL);
}

/* SIGINT and SIGHUP ignored when joinq started (a background job of a
 * script, nohup) stay ignored: whoever ran us wanted that. */
static bool ignored_at_start(int sig)
{
	for (size_t i = 0; i < NCHANGED; i++)
		if (changed_signals[i] == sig)
			return original_action[i].sa_handler == SIG_IGN;
	return false;
}

static void set_handler(int sig, void (*handler)(int))
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = handler;
	sigfillset(&sa.sa_mask);    /* handlers never nest */
	sa.sa_flags = SA_RESTART | (sig == SIGCHLD ? SA_NOCLDSTOP : 0);
	sigaction(sig, &sa, NULL);
}

/* A byte to wake a poll(); a full pipe is readable already. */
static void wake(int fd)
{
	char b = 0;
	ssize_t r = write(fd, &b, 1);
	(void)r;
}

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

/* ---- reports: worker to parent ------------------------------------------- */

enum report_type {
	R_WAITING = 1,      /* about to wait in get, holding nothing */
	R_TASK,             /* got task (task, deliveries) */
	R_RUNNING,          /* CMD started in process group pgid */
	R_DONE,             /* CMD exited 0; text: a task_done failure */
	R_FAILED,           /* CMD failed; text says how, and the release */
	R_RETIRED,          /* --max-tasks reached: exiting */
	R_TROUBLE,          /* text: why the worker is about to exit */
};

struct report {
	int32_t type;
	int32_t pid;        /* the worker's */
	int32_t pgid;
	uint32_t deliveries;
	uint64_t task;
	char text[TEXT_MAX];
};

/* One write() each, so that reports from many workers never mix. */
_Static_assert(sizeof(struct report) <= PIPE_BUF,
               "a report must be one atomic pipe write");

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
	int64_t start = now_ms();
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

		int64_t now = now_ms();
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

	out->seconds = (double)(now_ms() - start) / 1000;
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
	               jq_connect(&w->cfg->opt, &err);
	if (c)
		jq_release(c, t->task, 0, &err);
	if (c && c != w->c)
		jq_close(c);
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

/* A worker, from fork to exit.  Signals are blocked on entry. */
static void worker_main(const struct work *cfg)
	__attribute__((noreturn));

static void worker_main(const struct work *cfg)
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
	sigprocmask(SIG_SETMASK, &original_mask, NULL);

	setenv("JOINQ_QUEUE", cfg->queue_name, 1);
	setenv("JOINQ_HOST", cfg->opt.host ? cfg->opt.host : JQ_DEFAULT_HOST, 1);
	setenv("JOINQ_PORT", cfg->opt.port ? cfg->opt.port : JQ_DEFAULT_PORT, 1);

	if (worker_stop)
		_exit(WORKER_STOPPED);
	w.c = jq_connect(&cfg->opt, &err);
	if (!w.c)
		worker_fail(&w, "connect", &err);
	worker_loop(&w);
	_exit(WORKER_STOPPED);          /* not reached */
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
	jq_client *c = jq_connect(&p->cfg->opt, err);
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
		int64_t until = now_ms() + STRAY_GRACE_MS;
		while (now_ms() < until && read_children(kids, 1) > 0) {
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
		int64_t now = now_ms();

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
		now = now_ms();
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

/* The start check: the daemon answers, knows the queue name, takes our
 * token.  Returns 0 or the exit status. */
static int check_daemon(const struct work *cfg)
{
	struct jq_error err;
	struct jq_qsize q;
	char version[64];

	jq_client *c = jq_connect(&cfg->opt, &err);
	if (c && !jq_ping(c, version, sizeof version, &err))
		jq_qsize(c, cfg->queue, &q, &err);
	jq_close(c);
	if (!err.code)
		return 0;
	fprintf(stderr, "joinq: work: ");
	if (err.code > 0 && err.code < JQ_NERR)
		fprintf(stderr, "%s: ", jq_strcode(err.code));
	fprintf(stderr, "%s\n", err.message);
	switch (err.code) {
	case JQ_ERR_CONNECT:
	case JQ_ERR_CLOSED:
	case JQ_ERR_IO_TIMEOUT:
		return EXIT_CONNECTION;
	default:
		return EXIT_FAILED;
	}
}

int work_main(const struct jq_options *opt, const char *queue, int argc,
              char **argv)
{
	struct work cfg = { .opt = *opt, .queue = queue };
	struct pool p;
	bool done;
	int status, sigp[2], rep[2];

	cfg.queue_name = queue ? queue : "default";
	/* Pipes must not land on 0, 1 or 2, which CMD takes for its own. */
	for (int fd = 0; fd <= 2; fd++)
		if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) < 0)
			return EXIT_FAILED;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	cfg.jobs = cpus < 1 ? 1 : cpus > JOBS_MAX ? JOBS_MAX : (int)cpus;
	status = parse_work(&cfg, argc, argv, &done);
	if (done)
		return status;
	if ((status = check_daemon(&cfg)))
		return status;

	if (make_pipe(sigp, true) < 0 || make_pipe(rep, false) < 0) {
		fprintf(stderr, "joinq: work: pipe: %s\n", strerror(errno));
		return EXIT_FAILED;
	}
	/* The parent reads without blocking; workers write whole reports,
	 * blocking while the parent is behind. */
	set_nonblocking(rep[0]);
	cfg.sig_r = sigp[0];
	cfg.sig_w = sigp[1];
	cfg.report_r = rep[0];
	cfg.report_w = rep[1];
	cfg.parent = getpid();

	/* Orphaned descendants come back to us, so that we reap them. */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		fprintf(stderr, "joinq: work: cannot become a subreaper: %s\n",
		        strerror(errno));

	save_signals();
	pool_pid = getpid();
	pool_wake_fd = cfg.sig_w;
	set_handler(SIGCHLD, pool_on_signal);
	set_handler(SIGTERM, pool_on_signal);
	if (!ignored_at_start(SIGINT))
		set_handler(SIGINT, pool_on_signal);
	if (!ignored_at_start(SIGHUP))
		set_handler(SIGHUP, pool_on_signal);
	signal(SIGPIPE, SIG_IGN);

	memset(&p, 0, sizeof p);
	p.cfg = &cfg;
	p.nslots = cfg.jobs;
	p.slots = xcalloc((size_t)cfg.jobs, sizeof *p.slots);
	p.started = now_ms();
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
	final_summary(&p, now_ms());

	restore_signals();
	close(sigp[0]);
	close(sigp[1]);
	close(rep[0]);
	close(rep[1]);
	free(p.slots);
	return p.failed ? EXIT_FAILED : EXIT_OK;
}
