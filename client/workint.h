/*
 * workint.h - what the parts of `joinq work` share: its settings (struct
 * work), the reports a worker sends its parent, the helpers of time,
 * pipes and signals (work.c), and the entry points of the worker
 * (worker.c) and of the parent (pool.c).
 */
#ifndef JQ_WORKINT_H
#define JQ_WORKINT_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cli.h"
#include "joinq.h"
#include "netconnect.h"

/* How a worker ends, for the parent. */
enum {
	WORKER_STOPPED = 0,         /* told to stop, retired, parent gone */
	WORKER_FATAL = 70,          /* cannot work: an error reply, no pipe */
	WORKER_UNREACHABLE = 75,    /* cannot reach the daemon */
};

#define NEVER (-1)              /* a deadline that never comes */
#define TEXT_MAX 200            /* a report's sentence */

/* joinq work's settings and the pool's pipes (work.c); the workers get
 * a copy as they fork. */
struct work {
	struct jq_options opt;      /* where the daemon is */
	const jq_tls *tls;          /* NULL: plain TCP */
	const struct tls_flags *tls_flags;   /* for CMD's environment */
	const char *queue;          /* NULL: "default" */
	const char *queue_name;     /* for JOINQ_QUEUE and messages */
	int jobs;
	double lease;               /* seconds; 0: none */
	double task_timeout;        /* seconds; 0: none */
	double retry_delay;         /* seconds; 0: release at once */
	uint64_t max_tasks;         /* per worker; 0: no limit */
	bool exit_when_empty, quiet;
	char **cmd;                 /* CMD [ARG]..., NULL-terminated */
	pid_t parent;               /* the pool's parent */
	int report_r, report_w;     /* the report pipe */
	int sig_r, sig_w;           /* the parent's self-pipe */
};

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

/* ---- helpers (work.c) ---------------------------------------------------- */

int64_t seconds_ms(double s);
/* The earlier of two deadlines; NEVER is later than any. */
int64_t earlier(int64_t a, int64_t b);
/* The poll() timeout that ends at deadline. */
int poll_timeout(int64_t deadline, int64_t now);
int make_pipe(int fds[2], bool nonblocking);
void set_nonblocking(int fd);
void drain_fd(int fd);
void write_all(int fd, const char *p, size_t len);
/* "exit status 3", "killed by signal 9 (Killed)". */
void describe_wait_status(int status, char *out, size_t size);

/* The signals the pool changes: saved at start, given back to CMD. */
void save_signals(void);
void restore_signals(void);
void restore_signal_mask(void);
/* SIGINT and SIGHUP ignored when joinq started stay ignored. */
bool ignored_at_start(int sig);
void set_handler(int sig, void (*handler)(int));
/* A byte to wake a poll(); a full pipe is readable already. */
void wake(int fd);

/* A worker, from fork to exit (worker.c).  Signals are blocked on
 * entry. */
void worker_main(const struct work *cfg) __attribute__((noreturn));

/* The parent: runs the pool until it stops, and says how it went
 * (pool.c).  Returns the exit status. */
int pool_run(struct work *cfg);

#endif
