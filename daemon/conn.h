/*
 * conn.h - TCP clients: one struct conn per connection, with its socket's
 * events and buffers, the replies it is owed in order, the request it
 * waits on, and the tasks it holds.
 */
#ifndef JQ_CONN_H
#define JQ_CONN_H

#include <event2/listener.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"

struct conn;

/* Input buffers big enough for a big frame, kept for reuse (conn.c). */
#define CONN_SPARE_INPUTS 4

/* conn.c's own. */
struct conn_state {
	struct conn *all;               /* open TCP connections */
	unsigned count;
	struct conn *resume;            /* unblocked, to run in this turn */
	struct event *resume_ev;        /* runs them */
	struct conn *holding;           /* replies wait for the journal */
	char *read_buf;                 /* TCP input is read here first */
	char *tls_buf;                  /* TLS: the ciphertext read */
	struct buf spare_in[CONN_SPARE_INPUTS];   /* emptied big inputs */
	unsigned spare_ins;
};

/* Sets up what the connections share (server.base exists). */
void conn_init(void);

/* The open connections. */
unsigned conn_count(void);

/* evconnlistener callback: takes a new client, or turns it away with
 * too_many_connections. */
void conn_accept(struct evconnlistener *lev, evutil_socket_t fd,
                 struct sockaddr *sa, int salen, void *arg);

/* Shutdown: every connection stops executing, writes what it owes, closes. */
void conn_shutdown_all(void);

/* Fenced (another daemon took the stream over): every connection is
 * closed at once.  The replies it is owed are never sent, since the changes
 * they report did not reach the stream; its waiting request is cancelled
 * and the tasks it holds go back to their queues.  Call udp_drop_held()
 * first, so that no UDP request waits for those tasks either. */
void conn_drop_all(void);

/* The journal is safe up to record `safe`: the replies waiting for it go. */
void conn_release(uint64_t safe);

/* A reload changed the settings: max_frame bounds every connection's
 * held input anew, and with a new token every client must authenticate
 * again. */
void conn_reconfigure(bool new_token);

/* Frees every connection at once, and what they share (exit). */
void conn_free_all(void);

#endif
