/*
 * request.h - turning a frame into a checked request (PROTOCOL.md,
 * "Requests and replies").
 *
 * Two steps, so that the daemon can check authorisation between them in
 * the order PROTOCOL.md gives: request_decode() judges the frame (bad_utf8,
 * bad_json, nesting depth) and request_check() judges op, queue and the
 * op's own fields (unknown_op, bad_queue, bad_request).
 *
 * Decoding leaves, for each field joinqd knows, a struct jfield: its kind,
 * its number, and its text in the frame (jscan.h).  Two paths give the same
 * fields, and request_check() and request_is_ping() read nothing else:
 *   - the fast path, request_decode_fast(): jscan.c, one pass over the
 *     frame, no allocation, no jansson.  It takes the common frames and
 *     answers "unsure" for what only jansson can say exactly (escaped keys,
 *     duplicate known keys, numbers near the limits, errors);
 *   - the slow path, request_decode_slow(): jobject.c, the depth check,
 *     then jansson validates the frame and gives the errors' texts and the
 *     members' kinds and numbers; the texts are found in the frame.  The
 *     tree is dropped before it returns.
 * request_decode() runs the fast path and, unless it succeeds, the slow.
 * tests/fuzz/fuzz_request.c checks that both give the same on every frame
 * the fast path takes.
 *
 * An integer beyond int64 is valid JSON (RFC 8259), but joinqd holds the
 * numbers it reads in 64 bits: both paths keep one in the id and the item
 * (JK_BIGINT, by its text) and ignore one in a field joinqd does not know;
 * in a field it reads, it is bad_json.
 *
 * The id and the item are kept as the client's own JSON text, whitespace
 * removed, so they travel by value without being re-encoded: even what
 * jansson cannot hold in a tree, such as an object key with a \u0000 in it.
 * String fields keep their escapes too; request_string() decodes one.
 */
#ifndef JQ_REQUEST_H
#define JQ_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errcode.h"
#include "jscan.h"
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
	OP_DECLARE,
	OP_PURGE,
	OP_DELETE,
	OP_NOPS
};

#define QUEUE_NAME_MAX 128        /* a queue name a client may choose */
#define QUEUE_DEAD_SUFFIX ".dead"
#define QUEUE_NAME_LIMIT 133      /* NAME.dead, a dead-letter queue */
#define DEFAULT_QUEUE "default"
/* Waits, leases and delays longer than this (about 31 years) are forever. */
#define JQ_SECONDS_MAX 1e9

/* The fields joinqd knows, indexes of request.field[]. */
enum request_field {
	RF_OP,
	RF_QUEUE,
	RF_ID,
	RF_TOKEN,
	RF_NOREPLY,
	RF_BLOCK,
	RF_TIMEOUT,
	RF_LEASE,
	RF_DELAY,
	RF_TASK,
	RF_ITEM,
	RF_MAXSIZE,
	RF_MAX_DELIVERIES,
	RF_DEAD_LETTER,
	RF_COUNT
};

struct request {
	/* Set by request_decode(): */
	struct jfield field[RF_COUNT];  /* as sent; texts point into the frame */
	struct jtext id;        /* as sent (compacted); "null" if sent as null */
	struct jtext item;      /* as sent (compacted) */
	bool noreply;
	char *owned[2];         /* compacted copies of id and item */
	/* Set by request_check() (each by name: add a field there too): */
	enum jq_op op;
	const char *queue;      /* DEFAULT_QUEUE or queue_name; NUL-terminated */
	size_t queue_len;
	bool block;             /* default true */
	double timeout;         /* seconds; < 0 when absent: wait forever */
	double lease;           /* seconds; 0 when absent: no lease */
	double delay;           /* release: seconds, 0 when absent */
	uint64_t task;          /* task_done, release */
	/* declare: the settings it names (dead_letter NULL: not named; it
	 * points to dead_letter_name) */
	bool has_maxsize, has_max_deliveries;
	uint64_t maxsize;
	uint64_t max_deliveries;    /* at most UINT32_MAX */
	const char *dead_letter;
	/* Last, and never cleared: what queue and dead_letter point to when
	 * not DEFAULT_QUEUE or NULL, written before they are.  Each decode
	 * clears only what it sets, a few hundred bytes fewer per frame. */
	char queue_name[QUEUE_NAME_LIMIT + 1];
	char dead_letter_name[QUEUE_NAME_LIMIT + 1];
};

struct errinfo {
	int code;               /* enum jq_err */
	char message[160];
};

/* Parses one frame into r.  Returns JQ_OK, or JQ_BAD_UTF8 / JQ_BAD_JSON with
 * e filled; on success r->field, r->id, r->item and r->noreply are set.
 * They may point into frame, which must outlive r.  The caller must
 * request_free(r) either way.
 *
 * Most frames are read once: the fast path runs first, on any bytes, and
 * notes a byte >= 0x80 in a string as it goes (jscan_object_ascii); a frame
 * it takes with none is ASCII, so valid UTF-8.  Only other frames are
 * validated (utf8_simd.h), and an invalid one is bad_utf8 whatever the
 * scanner said, before any bad_json, as PROTOCOL.md orders them. */
int request_decode(const char *frame, size_t len, unsigned max_depth,
                   struct request *r, struct errinfo *e);

/* The two paths of request_decode(), for tests; frame is valid UTF-8.
 * The fast one returns JSCAN_OK with r decoded, JSCAN_INVALID when the
 * frame is surely bad_json (the slow path says why), or JSCAN_UNSURE.  The
 * slow one returns as request_decode().  Either way request_free(r). */
enum jscan_verdict request_decode_fast(const char *frame, size_t len,
                                       unsigned max_depth, struct request *r);
int request_decode_slow(const char *frame, size_t len, unsigned max_depth,
                        struct request *r, struct errinfo *e);

/* The decoded value of the string field f (JK_STRING): *s points to it,
 * into the frame when f has no escapes, else into buf[0..cap).  Returns
 * its length, or SIZE_MAX if it has escapes and does not fit in buf. */
size_t request_string(const struct jfield *f, char *buf, size_t cap,
                      const char **s);

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
