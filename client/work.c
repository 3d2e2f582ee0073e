/*
 * work.c - `joinq work`: a pool of consumer processes, what Python's
 * multiprocessing.Pool over a JoinableQueue gives, as one command.  This
 * file owns its options and help, the start check, the setting up of the
 * pool's pipes, and the helpers of time, pipes and signals that the
 * parent (pool.c) and the workers (worker.c) share.  All daemon I/O goes
 * through libjoinq's public API (joinq.h).
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
 * atomic (workint.h): waiting, got task T, CMD running in group G, done,
 * failed (and why), retired, trouble.  From them the parent knows each
 * worker's state, which gives the status line, the process groups to kill
 * on a second signal even when a worker is stuck, the task a dead worker
 * held, and the moment to ask whether the queue is drained.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "cli.h"
#include "joinq.h"
#include "work.h"
#include "workint.h"

#define JOBS_MAX 1024

/* ---- options ------------------------------------------------------------ */


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
	uint64_t n;
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
			if (!parse_count(optarg, 1, JOBS_MAX, &n))
				return usage_error("work", "--jobs wants a number "
				                   "from 1 to %d, not '%s'", JOBS_MAX,
				                   optarg);
			w->jobs = (int)n;
			break;
		case LONG_LEASE:
			if (!parse_seconds(optarg, &w->lease) || w->lease == 0)
				return usage_error("work", "--lease wants seconds > "
				                   "0, not '%s'", optarg);
			break;
		case LONG_TASK_TIMEOUT:
			if (!parse_seconds(optarg, &w->task_timeout) ||
			    w->task_timeout == 0 || w->task_timeout > 1e9)
				return usage_error("work", "--task-timeout wants "
				                   "seconds > 0, not '%s'", optarg);
			break;
		case LONG_RETRY_DELAY:
			if (!parse_seconds(optarg, &w->retry_delay))
				return usage_error("work", "--retry-delay wants "
				                   "seconds >= 0, not '%s'", optarg);
			break;
		case LONG_MAX_TASKS:
			if (!parse_count(optarg, 1, UINT64_MAX, &w->max_tasks))
				return usage_error("work", "--max-tasks wants a "
				                   "number > 0, not '%s'", optarg);
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
		return usage_error("work", "no CMD given: joinq %s", WORK_USAGE);
	w->cmd = argv + optind;
	/* A CMD that cannot run would fail every task until each went to the
	 * dead-letter queue: refuse it now.  "{}" as CMD is the item's to
	 * say. */
	if (!strstr(w->cmd[0], "{}") && !find_program(w->cmd[0]))
		return usage_error("work", "cannot run '%s': %s", w->cmd[0],
		                   strchr(w->cmd[0], '/') ? "not an executable "
		                   "file" : "command not found");
	*done = false;
	return EXIT_OK;
}

/* ---- time and small helpers ---------------------------------------------- */

int64_t seconds_ms(double s)
{
	return (int64_t)ceil(s * 1000);
}

/* The earlier of two deadlines; NEVER is later than any. */
int64_t earlier(int64_t a, int64_t b)
{
	if (a == NEVER)
		return b;
	if (b == NEVER)
		return a;
	return a < b ? a : b;
}

/* The poll() timeout that ends at deadline. */
int poll_timeout(int64_t deadline, int64_t now)
{
	if (deadline == NEVER)
		return -1;
	if (deadline <= now)
		return 0;
	return deadline - now > INT_MAX ? INT_MAX : (int)(deadline - now);
}

int make_pipe(int fds[2], bool nonblocking)
{
	if (pipe2(fds, O_CLOEXEC | (nonblocking ? O_NONBLOCK : 0)) < 0)
		return -1;
	return 0;
}

void set_nonblocking(int fd)
{
	int flags = fcntl(fd, F_GETFL);
	if (flags >= 0)
		fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

void drain_fd(int fd)
{
	char junk[256];
	while (read(fd, junk, sizeof junk) > 0)
		;
}

void write_all(int fd, const char *p, size_t len)
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

/* "exit status 3", "killed by signal 9 (Killed)". */
void describe_wait_status(int status, char *out, size_t size)
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

void save_signals(void)
{
	for (size_t i = 0; i < NCHANGED; i++)
		sigaction(changed_signals[i], NULL, &original_action[i]);
	sigprocmask(SIG_SETMASK, NULL, &original_mask);
}

void restore_signals(void)
{
	for (size_t i = 0; i < NCHANGED; i++)
		sigaction(changed_signals[i], &original_action[i], NULL);
	sigprocmask(SIG_SETMASK, &original_mask, NULL);
}

void restore_signal_mask(void)
{
	sigprocmask(SIG_SETMASK, &original_mask, NULL);
}

/* SIGINT and SIGHUP ignored when joinq started (a background job of a
 * script, nohup) stay ignored: whoever ran us wanted that. */
bool ignored_at_start(int sig)
{
	for (size_t i = 0; i < NCHANGED; i++)
		if (changed_signals[i] == sig)
			return original_action[i].sa_handler == SIG_IGN;
	return false;
}

void set_handler(int sig, void (*handler)(int))
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = handler;
	sigfillset(&sa.sa_mask);    /* handlers never nest */
	sa.sa_flags = SA_RESTART | (sig == SIGCHLD ? SA_NOCLDSTOP : 0);
	sigaction(sig, &sa, NULL);
}

/* A byte to wake a poll(); a full pipe is readable already. */
void wake(int fd)
{
	char b = 0;
	ssize_t r = write(fd, &b, 1);
	(void)r;
}


/* ---- the start ----------------------------------------------------------- */

/* The start check: the daemon answers, knows the queue name, takes our
 * token.  Returns 0 or the exit status. */
static int check_daemon(const struct work *cfg)
{
	struct jq_error err;
	struct jq_qsize q;
	char version[64];

	jq_client *c = jq_connect_tls(&cfg->opt, cfg->tls, &err);
	if (c && !jq_ping(c, version, sizeof version, &err))
		jq_qsize(c, cfg->queue, &q, &err);
	jq_close(c);
	return err.code ? report("work", &err) : EXIT_OK;
}

int work_main(const struct jq_options *opt, const jq_tls *tls,
              const struct tls_flags *tls_flags, const char *queue, int argc,
              char **argv)
{
	struct work cfg = { .opt = *opt, .tls = tls, .tls_flags = tls_flags,
	                    .queue = queue };
	bool done;
	int status, sigp[2], rep[2];

	cfg.queue_name = queue ? queue : "default";
	/* Pipes must not land on 0, 1 or 2, which CMD takes for its own. */
	for (int fd = 0; fd <= 2; fd++)
		if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) < 0)
			return EXIT_ERROR;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	cfg.jobs = cpus < 1 ? 1 : cpus > JOBS_MAX ? JOBS_MAX : (int)cpus;
	status = parse_work(&cfg, argc, argv, &done);
	if (done)
		return status;
	if ((status = check_daemon(&cfg)))
		return status;

	if (make_pipe(sigp, true) < 0 || make_pipe(rep, false) < 0) {
		fprintf(stderr, "joinq: work: pipe: %s\n", strerror(errno));
		return EXIT_ERROR;
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

	status = pool_run(&cfg);
	close(sigp[0]);
	close(sigp[1]);
	close(rep[0]);
	close(rep[1]);
	return status;
}
