/*
 * natspipe.h - our messages into the stream: pipelined, fenced, sent
 * again, joined up and compressed.  Owns every message this daemon has
 * published and not yet seen acknowledged, in order.
 *
 * Every message carries Nats-Expected-Last-Sequence, the sequence the one
 * before it in the pipeline will get, and, after a term's first,
 * Nats-Expected-Last-Msg-Id, the id of that one: so only one writer
 * extends the stream, and ours land only in order, right after each
 * other.  Each carries Nats-Msg-Id, so that one sent again after a lost
 * PubAck is known (JetStream checks duplicates before the expectations).  The front message refused for its expected
 * sequence means another daemon wrote.  A PubAck that does not come, or
 * a "no responders" (the stream's leader moving), sends everything not
 * yet acknowledged again, after a back-off.
 *
 * The headers it writes: Joinq-Kind, Joinq-Writer (this term's random id),
 * Joinq-Active (the writer's address for clients), Joinq-Part (part "i/n"
 * of a snapshot, or of an append too big for one message),
 * Joinq-Encoding ("zstd").  store_nats.c reads them.
 */
#ifndef JQ_NATSPIPE_H
#define JQ_NATSPIPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zstd.h>

#include "buf.h"
#include "natsconn.h"

/* What became of one message of ours. */
enum pub_fate { PUB_WAITING, PUB_ACKED, PUB_REFUSED, PUB_LOST };

struct pub {
	struct pub *next;
	uint64_t id;                 /* Nats-Msg-Id's number */
	uint64_t expect;             /* Nats-Expected-Last-Sequence */
	uint64_t upto;               /* journal position once acknowledged */
	uint64_t sent_at;
	unsigned attempt;
	enum pub_fate fate;
	bool zstd;                   /* data is one zstd frame */
	char kind[12];
	char part[48];               /* "i/n" of a message cut in parts */
	size_t len;
	unsigned char data[];        /* kept to be sent again */
};

/* What the owner hears, from natspipe_settle and natspipe_ack. */
struct natspipe_events {
	void *ctx;
	/* The front message is in, at seq; it is freed after the call. */
	void (*acked)(void *ctx, const struct pub *p, uint64_t seq);
	/* The front message was refused: another writer extended the stream.
	 * Call natspipe_drop. */
	void (*refused)(void *ctx);
	/* JetStream said something we cannot go on after (why). */
	void (*failed)(void *ctx, const char *why);
	/* A passing trouble, for the log (rate it). */
	void (*warn)(void *ctx, const char *what, const char *why);
};

struct natspipe {
	struct natsconn *nc;
	const char *subject;
	/* Joinq-Active: the setting's own pointer, read at each publish, since
	 * joinqd fills in a port 0 once it has bound one. */
	char *const *advertise;
	char writer[20];             /* this term's Joinq-Writer */
	struct natspipe_events ev;
	struct pub *head, *tail;
	unsigned count;
	uint64_t next_id;
	uint64_t term_first;         /* the id of this term's first message */
	uint64_t expect_next;        /* what the next message expects */
	uint64_t durable;            /* upto of the last acknowledged */
	unsigned appends_out;        /* "log" messages out */
	struct buf waiting;          /* appends held back, joined into one */
	uint64_t waiting_upto;
	size_t pending_bytes;        /* out and waiting */
	uint64_t sent_at;            /* the last publish, for the beat */
	uint64_t retry_at;
	unsigned backoff;
	ZSTD_CCtx *zc;
};

void natspipe_init(struct natspipe *q, struct natsconn *nc,
                   const char *subject, char *const *advertise,
                   const struct natspipe_events *ev);
void natspipe_free(struct natspipe *q);

/* A new writer id, nothing out, the next message expecting `after`. */
void natspipe_new_term(struct natspipe *q, uint64_t after);

/* Forgets every message out or waiting (refused: they never land). */
void natspipe_drop(struct natspipe *q);

/* Publishes one message of kind (with part, for a snapshot), reaching
 * journal position upto once in. */
struct pub *natspipe_send(struct natspipe *q, const char *kind,
                          const char *part, const void *data, size_t len,
                          uint64_t upto);

/* One turn's sealed batch, up to journal position upto: sent at once, or,
 * while a few appends are out, held back and joined to the next ones. */
void natspipe_append(struct natspipe *q, const void *p, size_t len,
                     uint64_t upto);

/* What is held back goes now (before a snapshot, a resign). */
void natspipe_flush(struct natspipe *q);

/* Sends data as one message of kind, or, when NATS would refuse one that
 * big (max_payload), as parts "i/n" that readers join; only the last
 * reaches upto.  Returns the first. */
struct pub *natspipe_send_parts(struct natspipe *q, const char *kind,
                                const void *data, size_t len, uint64_t upto);

/* A PubAck: the inbox suffix after "a.", and the message. */
void natspipe_ack(struct natspipe *q, const char *suffix, natsMsg *m);

/* The acknowledged front goes (acked), a refused front is said, a lost
 * message sends everything again; PubAcks not come by now are lost. */
void natspipe_settle(struct natspipe *q, uint64_t now);

#endif
