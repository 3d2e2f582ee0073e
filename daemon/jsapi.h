/*
 * jsapi.h - JetStream's JSON API, spoken asynchronously (nats.c 3.4.1 has
 * no asynchronous call for it): requests published with a reply subject
 * under our inbox, their replies matched by token, and the JSON that the
 * replicated store (store_nats.c) sends and reads: the stream it creates
 * and accepts, the consumer it reads with, a delivery's metadata.
 */
#ifndef JQ_JSAPI_H
#define JQ_JSAPI_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "natsconn.h"

#define JSAPI_MAX 8                  /* requests out at once */
#define JSAPI_WAIT_MS 3000           /* then a request counts as lost */

/* Hears a request's reply: NULL when none came in time, or nobody
 * answered (no JetStream, no leader). */
typedef void jsapi_done(void *ctx, json_t *reply, unsigned arg);

struct jsapi_call {
	uint64_t token;              /* 0: free */
	uint64_t deadline;
	jsapi_done *done;
	unsigned arg;
};

struct jsapi {
	struct natsconn *nc;
	const char *stream;
	void *ctx;
	uint64_t token;
	struct jsapi_call calls[JSAPI_MAX];
};

void jsapi_init(struct jsapi *a, struct natsconn *nc, const char *stream,
                void *ctx);

/*
 * Sends $JS.API.<verb>.<stream>[.<tail>] with body (taken; NULL: empty).
 * done NULL: no reply is wanted.  Replies come as inbox messages with the
 * suffix "r.<token>", for jsapi_reply.  -1 when JSAPI_MAX are out.
 */
int jsapi_request(struct jsapi *a, const char *verb, const char *tail,
                  json_t *body, jsapi_done *done, unsigned arg);

/* An inbox message whose suffix followed "r.". */
void jsapi_reply(struct jsapi *a, const char *token, natsMsg *m);

/* Requests out for too long hear NULL.  From a timer. */
void jsapi_expire(struct jsapi *a, uint64_t now);

/* A reply's JetStream error code (10059: stream not found, 10071: wrong
 * last sequence, ...) and its description; 0 when it is no error. */
int jsapi_error(json_t *reply, const char **desc);

/* The stream a journal lives in: limits retention, file storage, no limit
 * that drops messages, purges allowed, deletes denied. */
json_t *jsapi_stream_config(const char *stream, const char *subject,
                            unsigned replicas);

/* Why an existing stream cannot hold the journal (NULL: it can). */
const char *jsapi_unfit(json_t *config, const char *subject, char *why,
                        size_t len);

/* A push consumer of our own from sequence `from`, delivering to
 * `deliver`: no acks, flow control and idle heartbeats, in memory. */
json_t *jsapi_consumer(const char *stream, const char *deliver,
                       uint64_t from, unsigned heartbeat_ms);

/* A delivery's stream and consumer sequences and the messages still
 * pending, from its reply subject.  False if it is not a delivery's. */
bool jsapi_delivery(const char *reply, uint64_t *sseq, uint64_t *dseq,
                    uint64_t *pending);

#endif
