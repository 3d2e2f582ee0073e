/*
 * natsconn.h - the daemon's connection to NATS, on its own event loop.
 *
 * Owns the nats.c connection (its options: servers, credentials, TLS),
 * attached to the daemon's libevent loop through the adapter nats.c ships,
 * and one inbox: every reply and every delivery meant for this daemon
 * arrives on a subject under it, and is handed to the owner from the loop
 * thread, never from one of nats.c's threads.  Nothing here waits on the
 * network: the first connect runs on a thread of its own, requests are
 * publishes with a reply subject, and the inbox is drained without
 * blocking (see ../shared/notes/jetstream.md).  The owner (store_nats.c)
 * decides what the messages mean.
 */
#ifndef JQ_NATSCONN_H
#define JQ_NATSCONN_H

#include <stdbool.h>
#include <stddef.h>

#include <nats/nats.h>

struct event_base;
struct nats_conf;

/* Connection states the owner hears of. */
enum natsconn_event { NATSCONN_UP, NATSCONN_DOWN, NATSCONN_CLOSED };

struct natsconn_handlers {
	void *ctx;
	/* A message on the inbox: suffix is the subject after "INBOX." (the
	 * owner's own naming).  The message is the owner's to destroy. */
	void (*message)(void *ctx, const char *suffix, natsMsg *m);
	/* Connected (at first or again), lost, or given up for good. */
	void (*event)(void *ctx, enum natsconn_event ev);
};

struct natsconn;

/* Once, before the daemon's event_base is created: libevent must lock
 * for nats.c's threads (the adapter's requirement). */
void natsconn_threads(void);

/* Starts connecting (in the background: the handlers hear NATSCONN_UP).
 * NULL with err when the settings are unusable. */
struct natsconn *natsconn_open(struct event_base *base,
                               const struct nats_conf *conf,
                               const struct natsconn_handlers *h, char *err,
                               size_t errlen);

/* The inbox prefix's subject for suffix, in out (for reply subjects). */
void natsconn_inbox(const struct natsconn *nc, const char *suffix, char *out,
                    size_t outlen);

/*
 * Subscribes to the one subject a JetStream push consumer delivers to
 * (nats-server 2.9 sees no delivery interest in the inbox's wildcard), in
 * place of the last such subscription; its messages reach the owner as
 * inbox messages with this suffix.  subject gets the subject to give the
 * consumer.  NATS_OK or a status.
 */
natsStatus natsconn_follow(struct natsconn *nc, const char *suffix,
                           char *subject, size_t len);

/* Publishes m (the caller keeps it).  NATS_OK, or a status: not
 * connected and the reconnect buffer full, or the connection closed. */
natsStatus natsconn_publish(struct natsconn *nc, natsMsg *m);

/* Publishes data to subject with reply subject inbox.suffix (NULL: none). */
natsStatus natsconn_send(struct natsconn *nc, const char *subject,
                         const char *suffix, const void *data, size_t len);

/* Hands every message waiting on the inbox to the owner, and connection
 * events that nats.c's threads raised.  On the loop, after each turn. */
void natsconn_poll(struct natsconn *nc);

bool natsconn_up(const struct natsconn *nc);

/* The largest message the server takes (its max_payload; 1 MB, NATS's
 * default, until connected). */
size_t natsconn_max_payload(struct natsconn *nc);

/* The server this connection is on ("nats://host:port"), or "". */
const char *natsconn_server(struct natsconn *nc, char *buf, size_t len);

void natsconn_close(struct natsconn *nc);

#endif
