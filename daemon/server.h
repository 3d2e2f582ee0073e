/*
 * server.h - the daemon's one piece of global state.
 *
 * Everything joinqd holds while it runs hangs off `server`: the settings,
 * the event loop, the engine, the listeners and the clients.  Nothing else
 * in the daemon is global and mutable.
 */
#ifndef JQ_SERVER_H
#define JQ_SERVER_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "buf.h"
#include "config.h"
#include "engine.h"

struct conn;
struct evhttp;
struct held_datagram;
struct journal;
struct udp_pending;
struct listener;

struct server {
	struct config cfg;
	int argc;                       /* the command line, read again on */
	char **argv;                    /* SIGHUP */
	struct engine_conf engine_conf;
	struct engine *engine;
	struct journal *journal;        /* NULL: journal = off */
	struct event_base *base;

	struct listener *listeners;     /* TCP and UDP sockets */
	size_t nlisteners;
	bool activated;                 /* the sockets came from systemd */
	int metrics_fd;                 /* from systemd, named "metrics"; or -1 */
	struct evhttp *metrics;         /* the /metrics listener, or NULL */
	struct evconnlistener *metrics_lev;   /* its socket */
	struct event *metrics_retry;    /* re-enables it after EMFILE */

	struct conn *conns;             /* open TCP connections */
	unsigned nconns;
	struct conn *resume;            /* unblocked, to run before sleeping */
	struct conn *holding;           /* replies wait for the journal */
	struct held_datagram *udp_held, *udp_held_last;   /* likewise, UDP */
	struct event *resume_ev;
	struct udp_pending *udp_waiting;/* parked UDP requests */
	struct udp_pending *udp_spare;  /* ready for the next datagram */
	char *udp_buf;                  /* one datagram */

	struct event *tick;             /* the engine's next deadline */
	msec_t tick_at;                 /* when tick is armed for; NEVER: not */
	struct event *signals[3];       /* SIGTERM, SIGINT, SIGHUP */
	struct event *stop_timer;       /* bounds the shutdown */
	struct event *status_timer;     /* STATUS= for systemd, every few s */
	struct event *watchdog_timer;   /* WATCHDOG=1 at half the interval */
	struct event *child_ev;         /* SIGCHLD: a compaction is done */
	struct event *sync_timer;       /* fsync = interval */
	bool notify;                    /* NOTIFY_SOCKET is set */

	char *token;                    /* from auth_token_file; NULL: none */
	size_t token_len;

	struct buf scratch;             /* replies are built here */
	char *read_buf;                 /* TCP input is read here first */
	struct buf wake_buf;            /* replies of parked requests */
	time_t started;
	bool shutting_down;
	bool log_to_journal;
	uint64_t errors[JQ_NERR];       /* error replies by code */
	uint64_t udp_denied;            /* datagrams from outside udp_allow */
};

extern struct server server;

/* Monotonic milliseconds: the engine's clock. */
msec_t server_clock(void);

/* Points the tick timer at the engine's next deadline.  Every callback
 * that may have changed the engine calls it before returning. */
void server_rearm(void);

/* Begins the orderly stop (SIGTERM, SIGINT). */
void server_shutdown(void);

/* Called when a client goes away during shutdown: ends the loop when the
 * last one has. */
void server_maybe_done(void);

#endif
