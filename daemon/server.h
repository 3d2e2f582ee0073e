/*
 * server.h - the daemon's one piece of global state.
 *
 * Everything joinqd holds while it runs hangs off `server`.  The fields
 * at the top are shared by several modules; each module's own fields are
 * grouped in a struct that the module's header declares (conn_state in
 * conn.h, udp_state in udp.h, ...), and only that module touches them.
 * Nothing else in the daemon is global and mutable.
 *
 * server.c defines `server` and the clock, so that every module but
 * joinqd.c (main) links and runs without main: tests/unit/test_conn.c
 * drives the transports that way.
 */
#ifndef JQ_SERVER_H
#define JQ_SERVER_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "buf.h"
#include "config.h"
#include "conn.h"
#include "engine.h"
#include "listen.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "tls.h"
#include "udp.h"

struct journal;

/* joinqd.c's own: the command line, signals, systemd and the journal's
 * timers. */
struct main_state {
	int argc;                       /* the command line, read again on */
	char **argv;                    /* SIGHUP */
	struct engine_conf engine_conf;
	struct event *signals[3];       /* SIGTERM, SIGINT, SIGHUP */
	struct event *stop_timer;       /* bounds the shutdown */
	struct event *status_timer;     /* STATUS= for systemd, every few s */
	struct event *watchdog_timer;   /* WATCHDOG=1 at half the interval */
	struct event *child_ev;         /* SIGCHLD: a compaction is done */
	struct event *sync_timer;       /* fsync = interval */
	bool notify;                    /* NOTIFY_SOCKET is set */
	bool ready;                     /* READY=1 was sent */
};

struct server {
	/* Shared. */
	struct config cfg;
	struct event_base *base;
	struct engine *engine;
	struct journal *journal;        /* NULL: journal = off */
	char *token;                    /* from auth_token_file; NULL: none */
	size_t token_len;
	struct buf scratch;             /* replies are built here */
	struct buf wake_buf;            /* replies of parked requests */
	time_t started;
	bool shutting_down;
	uint64_t errors[JQ_NERR];       /* error replies by code */
	uint64_t udp_denied;            /* datagrams from outside udp_allow */

	/* Each module's own. */
	struct main_state main;         /* joinqd.c */
	struct loop_state loop;         /* loop.c */
	struct listen_state listen;     /* listen.c */
	struct conn_state conn;         /* conn.c */
	struct udp_state udp;           /* udp.c */
	struct metrics_state metrics;   /* metrics.c */
	struct tls_state tls;           /* tls.c */
	struct log_state log;           /* log.c */
};

extern struct server server;

/* Monotonic milliseconds: the engine's clock, and the transports'. */
msec_t server_clock(void);

#endif
