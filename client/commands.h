/*
 * commands.h - joinq's queue commands, one run each: what every command
 * gets from the command line (joinq.c), and the entry points of the
 * commands (put.c, join.c, commands.c).
 */
#ifndef JQ_COMMANDS_H
#define JQ_COMMANDS_H

#include <stdbool.h>

#include "cli.h"
#include "joinq.h"

/* Command options; each command accepts some of them. */
enum {
	OPT_JSON = 1 << 0,
	OPT_NOWAIT = 1 << 1,
	OPT_TIMEOUT = 1 << 2,
	OPT_SHOW_TASK = 1 << 3,
	OPT_LEASE = 1 << 4,
	OPT_DELAY = 1 << 5,
	OPT_VERBOSE = 1 << 6,
	OPT_JOIN = 1 << 7,
	OPT_JOIN_TIMEOUT = 1 << 8,
	OPT_PROGRESS = 1 << 9,
	OPT_SETTINGS = 1 << 10,     /* declare's --maxsize, --max-deliveries,
	                               --dead-letter */
	OPT_OWN_ARGS = 1 << 15,     /* the command parses its own argv (work) */
};

struct cmd_options {
	bool json, show_task, verbose;
	struct jq_wait wait;        /* --nowait, --timeout */
	double lease, delay;        /* 0: none */
	bool join, progress;        /* put --join, --progress */
	double join_timeout;        /* put --join-timeout; < 0: forever */
	struct jq_declare settings; /* declare */
};

/* What every command gets: where the daemon is and which queue. */
struct session {
	struct jq_options opt;
	jq_tls *tls;                /* NULL: plain TCP */
	struct tls_flags tls_flags; /* what made tls */
	const char *queue;          /* NULL: the daemon's "default" */
	const char *cmd;            /* the command's name, for messages */
};

/* A command: parses nothing itself (but OPT_OWN_ARGS), gets its
 * arguments, returns the exit status. */
typedef int command_fn(struct session *s, const struct cmd_options *o,
                       int argc, char **argv);

/* A client for s, or NULL with the error reported and *status set
 * (joinq.c). */
jq_client *open_client(const struct session *s, int *status);

/* Waits on c until the queue's unfinished count is zero, as wait w allows,
 * watched when progress is asked for (join.c).  Returns the exit status. */
int join_queue(const struct session *s, jq_client *c,
               const struct jq_wait *w, bool progress);

command_fn cmd_put;                                     /* put.c */
command_fn cmd_get, cmd_task_done, cmd_release, cmd_join,
           cmd_qsize, cmd_empty, cmd_full, cmd_ping, cmd_stats,
           cmd_declare, cmd_purge, cmd_delete;          /* commands.c */

#endif
