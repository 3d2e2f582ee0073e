/*
 * request.h - turning a frame into a checked request (PROTOCOL.md,
 * "Requests and replies").
 *
 * Two steps, so that the daemon can check authorisation between them in
 * the order PROTOCOL.md gives: request_decode() judges the frame (bad_utf8,
 * bad_json, nesting depth) and request_check() judges op, queue and the
 * op's own fields (unknown_op, bad_queue, bad_request).
 *
 * jansson validates the frame and gives the scalar fields; the id and the
 * item are kept as the client's own JSON text, whitespace removed, so they
 * travel by value without being re-encoded: even what jansson cannot hold
 * in a tree, such as an object key with a \u0000 in it.
 */
#ifndef JQ_REQUEST_H
#define JQ_REQUEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errcode.h"
#include "reply.h"

enum jq_op {
	OP_PUT,
	OP_GET,
	OP_TASK_DONE,
	OP_RELEASE,
	OP_JOIN,
	OP_QSIZE,
	OP_EMPTY,
	OP_FULL,
	OP_PING,
	OP_STATS,
	OP_AUTH,
	OP_NOPS
};

#define QUEUE_NAME_MAX 128        /* a queue name a client may choose */
#define QUEUE_DEAD_SUFFIX ".dead"
#define QUEUE_NAME_LIMIT 133      /* NAME.dead, a dead-letter queue */
#define DEFAULT_QUEUE "default"
/* Waits, leases and delays longer than this (about 31 years) are forever. */
#define JQ_SECONDS_MAX 1e9

struct request {
	json_t *root;           /* the decoded frame; request_free() drops it */
	enum jq_op op;
	struct jtext id;        /* as sent (compacted); "null" if sent as null */
	json_t *token;          /* the "token" field as sent, or NULL */
	bool noreply;
	const char *queue;      /* DEFAULT_QUEUE when absent */
	size_t queue_len;
	bool block;             /* default true */
	double timeout;         /* seconds; < 0 when absent: wait forever */
	double lease;           /* seconds; 0 when absent: no lease */
	double delay;           /* release: seconds, 0 when absent */
	uint64_t task;          /* task_done, release */
	struct jtext item;      /* put: the item as sent (compacted) */
	char *owned[2];         /* compacted copies of id and item */
};

struct errinfo {
	int code;               /* enum jq_err */
	char message[160];
};

/* Parses one frame into r.  Returns JQ_OK, or JQ_BAD_UTF8 / JQ_BAD_JSON with
 * e filled; on success r->id, r->item, r->token and r->noreply are set.  The
 * id and item may point into frame, which must outlive r.  The caller must
 * request_free(r) either way. */
int request_decode(const char *frame, size_t len, unsigned max_depth,
                   struct request *r, struct errinfo *e);

/* True if the decoded request's op is exactly the string "ping": the one op
 * that needs no authorisation. */
bool request_is_ping(const struct request *r);

/* Checks op, queue and the op's fields.  Returns JQ_OK or the error code,
 * with e filled. */
int request_check(struct request *r, struct errinfo *e);

void request_free(struct request *r);

/* True if name[0..len) is a valid queue name (PROTOCOL.md). */
bool queue_name_valid(const char *name, size_t len);

const char *op_name(enum jq_op op);

/* Sets e and returns code, for one-line error returns. */
int errinfo_set(struct errinfo *e, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
