/*
 * ops.h - executing requests: the front end that TCP and UDP share.
 *
 * A transport hands in one frame and a description of its client; ops
 * decodes and checks it (request.h), authorises it, runs the op on the
 * engine and writes the reply.  A request that must wait is parked in the
 * transport's struct pending, and the reply comes later through
 * pending->finish.  The transports know nothing of queues; the engine
 * knows nothing of requests.
 */
#ifndef JQ_OPS_H
#define JQ_OPS_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "engine.h"
#include "request.h"

/* Who sent a request, as far as the ops need to know. */
struct client {
	const char *peer;       /* for log lines */
	bool *authorized;       /* TCP: the connection's state; UDP: NULL */
	bool nonblocking;       /* the peer closed its side: no op may wait */
	struct holder *holder;  /* TCP: keeps unleased deliveries */
	msec_t default_lease;   /* UDP: every delivery has a lease */
	size_t max_reply;       /* UDP: the largest reply; 0: no limit */
};

/* A parked request, embedded in the transport's own state. */
struct pending {
	struct waiter w;
	enum jq_op op;
	struct jtext id;        /* to echo; parked: text in id_copy */
	char *id_copy;
	bool noreply;
	size_t max_reply;
	/* The reply (NULL for noreply) is valid only during the call. */
	void (*finish)(struct pending *p, const struct buf *reply);
};

enum exec_status { EXEC_DONE, EXEC_PARKED };

/* Executes one frame, appending its reply (if any) to out.  On
 * EXEC_PARKED, p holds the request until p->finish is called. */
enum exec_status ops_execute(const char *frame, size_t len, struct client *c,
                             struct pending *p, struct buf *out);

/* Appends an error reply that is not about a request's content
 * (frame_too_large, too_many_connections) and counts it. */
void ops_error(struct buf *out, int code, const char *message);

/* Answers a parked request now, as if it had not blocked (its peer closed
 * its side). */
void ops_expire(struct pending *p);

/* Forgets a parked request whose client is gone; no reply. */
void ops_cancel(struct pending *p);

#endif
