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

/* evconnlistener callback: takes a new client, or turns it away with
 * too_many_connections. */
void conn_accept(struct evconnlistener *lev, evutil_socket_t fd,
                 struct sockaddr *sa, int salen, void *arg);

/* Event callback of server.resume_ev: runs the connections whose blocked
 * request completed, outside the call that completed it. */
void conn_resume(evutil_socket_t fd, short what, void *arg);

/* Shutdown: every connection stops executing, writes what it owes, closes. */
void conn_shutdown_all(void);

/* The journal is safe up to record `safe`: the replies waiting for it go. */
void conn_release(uint64_t safe);

/* A reload changed the settings: max_frame bounds every connection's
 * held input anew, and with a new token every client must authenticate
 * again. */
void conn_reconfigure(bool new_token);

/* Frees every connection at once (exit). */
void conn_free_all(void);

#endif
