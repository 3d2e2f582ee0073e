/*
 * natspipe.c - our messages into the stream (see natspipe.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <jansson.h>

#include "jsapi.h"
#include "natspipe.h"
#include "store.h"
#include "xalloc.h"

#define ACK_WAIT_MS 3000             /* a PubAck not come: send again */
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 2000
#define MAX_APPENDS_OUT 4            /* then appends wait, and join up */
#define COMPRESS_MIN 512             /* smaller messages go as they are */
#define HEADER_ROOM ((size_t)1024)   /* our headers, within max_payload */
#define COMPRESS_LEVEL 1             /* zstd's fastest: JetStream's bytes,
                                        replicated, cost far more */

void natspipe_init(struct natspipe *q, struct natsconn *nc,
                   const char *subject, char *const *advertise,
                   const struct natspipe_events *ev)
{
	*q = (struct natspipe){ .nc = nc, .subject = subject,
	                        .advertise = advertise, .ev = *ev };
	q->zc = ZSTD_createCCtx();
	natspipe_new_term(q, 0);
}

void natspipe_drop(struct natspipe *q)
{
	while (q->head) {
		struct pub *p = q->head;
		q->head = p->next;
		free(p);
	}
	q->tail = NULL;
	q->count = 0;
	q->pending_bytes = 0;
	q->appends_out = 0;
	buf_reset(&q->waiting);
}

void natspipe_free(struct natspipe *q)
{
	natspipe_drop(q);
	buf_free(&q->waiting);
	ZSTD_freeCCtx(q->zc);
}

void natspipe_new_term(struct natspipe *q, uint64_t after)
{
	uint64_t r = 0;
	if (getrandom(&r, sizeof r, 0) != sizeof r)
		r = store_clock_ms() ^ ((uint64_t)getpid() << 32);
	snprintf(q->writer, sizeof q->writer, "%016" PRIx64, r);
	natspipe_drop(q);
	q->expect_next = after;
	q->term_first = q->next_id + 1;
}

static void publish(struct natspipe *q, struct pub *p)
{
	char reply[128], suffix[64], buf[48];
	natsMsg *m = NULL;
	snprintf(suffix, sizeof suffix, "a.%" PRIu64 ".%u", p->id, p->attempt);
	natsconn_inbox(q->nc, suffix, reply, sizeof reply);
	p->sent_at = q->sent_at = store_clock_ms();
	p->fate = PUB_WAITING;
	natsStatus st = natsMsg_Create(&m, q->subject, reply,
	                               (const char *)p->data, (int)p->len);
	if (st == NATS_OK)
		st = natsMsgHeader_Set(m, "Joinq-Kind", p->kind);
	if (st == NATS_OK)
		st = natsMsgHeader_Set(m, "Joinq-Writer", q->writer);
	if (st == NATS_OK && *q->advertise && strcmp(p->kind, "resign") != 0)
		st = natsMsgHeader_Set(m, "Joinq-Active", *q->advertise);
	if (st == NATS_OK && p->part[0])
		st = natsMsgHeader_Set(m, "Joinq-Part", p->part);
	if (st == NATS_OK && p->zstd)
		st = natsMsgHeader_Set(m, "Joinq-Encoding", "zstd");
	snprintf(buf, sizeof buf, "%" PRIu64, p->expect);
	if (st == NATS_OK)
		st = natsMsgHeader_Set(m, "Nats-Expected-Last-Sequence", buf);
	snprintf(buf, sizeof buf, "%s-%" PRIu64, q->writer, p->id);
	if (st == NATS_OK)
		st = natsMsgHeader_Set(m, "Nats-Msg-Id", buf);
	/* The sequence alone lets a late message of a replaced writer land
	 * when the new one happened to write as many messages as it had out
	 * before it: so each message after a term's first also names the
	 * message it must follow, which only we write. */
	snprintf(buf, sizeof buf, "%s-%" PRIu64, q->writer, p->id - 1);
	if (st == NATS_OK && p->id > q->term_first)
		st = natsMsgHeader_Set(m, "Nats-Expected-Last-Msg-Id", buf);
	if (st == NATS_OK)
		st = natsconn_publish(q->nc, m);
	natsMsg_Destroy(m);
	if (st != NATS_OK)
		p->fate = PUB_LOST;   /* sent again after a back-off */
}

/*
 * Messages go compressed when that saves a good part: every byte of the
 * stream is carried to, and stored by, each replica, which costs
 * JetStream far more CPU than zstd's fastest level costs us.
 */
struct pub *natspipe_send(struct natspipe *q, const char *kind,
                          const char *part, const void *data, size_t len,
                          uint64_t upto)
{
	size_t room = len >= COMPRESS_MIN ? ZSTD_compressBound(len) : len;
	struct pub *p = xmalloc(sizeof *p + room);
	*p = (struct pub){ .id = ++q->next_id, .expect = q->expect_next++,
	                   .upto = upto, .len = len };
	snprintf(p->kind, sizeof p->kind, "%s", kind);
	snprintf(p->part, sizeof p->part, "%s", part ? part : "");
	size_t z = len >= COMPRESS_MIN ? ZSTD_compressCCtx(q->zc, p->data, room,
	                                                   data, len,
	                                                   COMPRESS_LEVEL) : 0;
	if (len >= COMPRESS_MIN && !ZSTD_isError(z) && z < len - len / 8) {
		p->len = z;
		p->zstd = true;
	} else if (len) {
		memcpy(p->data, data, len);
	}
	if (q->tail)
		q->tail->next = p;
	else
		q->head = p;
	q->tail = p;
	q->count++;
	q->pending_bytes += len;
	q->appends_out += !strcmp(kind, "log");
	publish(q, p);
	return p;
}

struct pub *natspipe_send_parts(struct natspipe *q, const char *kind,
                                const void *data, size_t len, uint64_t upto)
{
	size_t max = natsconn_max_payload(q->nc);
	size_t most = max > 2 * HEADER_ROOM ? max - HEADER_ROOM : HEADER_ROOM;
	if (len <= most)
		return natspipe_send(q, kind, NULL, data, len, upto);
	const char *p = data;
	size_t n = (len + most - 1) / most;
	struct pub *first = NULL;
	for (size_t i = 0; i < n; i++) {
		char part[48];
		size_t off = i * most;
		size_t size = len - off < most ? len - off : most;
		snprintf(part, sizeof part, "%zu/%zu", i + 1, n);
		struct pub *pub = natspipe_send(q, kind, part, p + off, size,
		                                i == n - 1 ? upto : 0);
		if (!first)
			first = pub;
	}
	return first;
}

void natspipe_flush(struct natspipe *q)
{
	if (!q->waiting.len)
		return;
	q->pending_bytes -= q->waiting.len;
	natspipe_send_parts(q, "log", q->waiting.p, q->waiting.len,
	                    q->waiting_upto);
	buf_reset(&q->waiting);
}

/* Group commit across turns: while a few appends are out, the next turns'
 * batches wait and go as one message (sealed batches follow each other in
 * one append as well as in several), so the stream takes fewer, bigger
 * messages the busier the daemon is. */
void natspipe_append(struct natspipe *q, const void *p, size_t len,
                     uint64_t upto)
{
	buf_add(&q->waiting, p, len);
	q->pending_bytes += len;
	q->waiting_upto = upto;
	if (q->appends_out < MAX_APPENDS_OUT)
		natspipe_flush(q);
}

void natspipe_ack(struct natspipe *q, const char *suffix, natsMsg *m)
{
	char *end;
	uint64_t id = strtoull(suffix, &end, 10);
	unsigned attempt = *end == '.' ? (unsigned)strtoul(end + 1, NULL, 10) : 0;
	struct pub *p = q->head;
	while (p && p->id != id)
		p = p->next;
	if (!p || p->fate == PUB_ACKED)
		return;
	json_t *r = natsMsg_IsNoResponders(m) ? NULL :
	            json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m),
	                       0, NULL);
	const char *desc;
	int code = r ? jsapi_error(r, &desc) : -1;
	if (!code) {
		uint64_t seq = (uint64_t)json_integer_value(json_object_get(r, "seq"));
		if (seq == p->expect + 1) {
			p->fate = PUB_ACKED;
			q->backoff = 0;
		} else {
			char why[160];
			snprintf(why, sizeof why, "JetStream stored our message at "
			         "sequence %" PRIu64 ", not %" PRIu64, seq, p->expect + 1);
			q->ev.failed(q->ev.ctx, why);
		}
	} else if (attempt == p->attempt) {
		/* 10071, 10070: wrong last sequence or message id.  Others (no
		 * responders, a leader moving) are sent again; a stream deleted
		 * under us is the end. */
		bool refused = code == 10071 || code == 10070;
		p->fate = refused ? PUB_REFUSED : PUB_LOST;
		if (code == 10059)
			q->ev.failed(q->ev.ctx, "it was deleted while in use");
		else if (code > 0 && !refused)
			q->ev.warn(q->ev.ctx, "a message was not taken", desc);
	}
	json_decref(r);
}

static void back_off(struct natspipe *q, uint64_t now)
{
	q->backoff = store_backoff(q->backoff, RETRY_MIN_MS, RETRY_MAX_MS);
	q->retry_at = now + q->backoff;
}

void natspipe_settle(struct natspipe *q, uint64_t now)
{
	for (struct pub *p = q->head; p; p = p->next)
		if (p->fate == PUB_WAITING && now - p->sent_at >= ACK_WAIT_MS)
			p->fate = PUB_LOST;
	while (q->head && q->head->fate == PUB_ACKED) {
		struct pub *p = q->head;
		q->head = p->next;
		if (!q->head)
			q->tail = NULL;
		q->count--;
		q->pending_bytes -= p->len;
		q->appends_out -= !strcmp(p->kind, "log");
		if (p->upto > q->durable)   /* a beat or a part adds no record */
			q->durable = p->upto;
		q->ev.acked(q->ev.ctx, p, p->expect + 1);
		free(p);
	}
	if (q->head && q->head->fate == PUB_REFUSED) {
		q->ev.refused(q->ev.ctx);
		return;
	}
	if (q->appends_out < MAX_APPENDS_OUT)
		natspipe_flush(q);
	bool lost = false;
	for (struct pub *p = q->head; p && !lost; p = p->next)
		lost = p->fate == PUB_LOST;
	if (!lost || now < q->retry_at)
		return;
	/* Everything not acknowledged goes again, in order: what had landed
	 * comes back as a duplicate, the rest lands now. */
	back_off(q, now);
	for (struct pub *p = q->head; p; p = p->next)
		if (p->fate != PUB_ACKED) {
			p->attempt++;
			publish(q, p);
		}
}
