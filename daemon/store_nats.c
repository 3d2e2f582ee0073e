/*
 * store_nats.c - the replicated store (store.h): the journal in a NATS
 * JetStream stream.  It owns the stream (its creation and the check that
 * it is one of ours), the reading of it (a push consumer, from the start
 * or from where we are), the appends (pipelined, fenced, sent again when
 * their PubAck is lost), the heartbeat of the active, the takeover of a
 * standby, and snapshots kept in the stream itself.
 *
 * The messages.  Every message joinqd writes names its kind in the header
 * Joinq-Kind (natspipe.h writes them):
 *   head      the format's header record: a new stream's first message
 *   log       appends: sealed batches of records (record.h)
 *   snap      part i of n (Joinq-Part: i/n) of a snapshot image: the
 *             header, the live state and the tail batch (compact.c)
 *   beat      the active is alive and has had nothing to write
 *   takeover  a standby takes the stream over
 *   resign    the active stops in order: a standby may take over at once
 * A reader applies, in order, from the first head or complete snapshot
 * it meets at the start of the stream; once it has a state it skips later
 * snapshots (it holds that state already).  After a snapshot is in, the
 * stream is purged up to it, so a reader starts with one snapshot and a
 * short tail.  Who may write is decided by the stream itself (natspipe.h,
 * fencing): a standby that hears nothing for failover_timeout appends a
 * takeover expecting the last sequence it read.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <event2/event.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "buf.h"
#include "journal.h"
#include "jsapi.h"
#include "log.h"
#include "natsconn.h"
#include "natspipe.h"
#include "store.h"
#include "xalloc.h"

#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 2000
#define IDLE_HEARTBEAT_MS 1000       /* the consumer's, while reading */
#define CONSUMER_LOST_MS ((uint64_t)3 * IDLE_HEARTBEAT_MS)
#define MAX_PENDING_BYTES (64u << 20)   /* not acknowledged: refuse changes */
#define CLOSE_WAIT_MS 3000           /* an orderly stop waits for PubAcks */
#define MESSAGE_BYTES 128            /* what a message costs the stream
                                        beyond its data (headers, index):
                                        beats too must end in compaction */

enum ns_state {
	NS_CONNECTING,     /* nats.c reaching a server */
	NS_INFO,           /* asking for the stream (creating it) */
	NS_READING,        /* the consumer delivers the stream: not at its end */
	NS_STANDBY,        /* at the end, following; watching for silence */
	NS_TAKING_OVER,    /* our takeover is out, its PubAck awaited */
	NS_ACTIVE,         /* we append */
	NS_FAILED,         /* see error */
};

struct store_nats {
	struct store base;
	const struct nats_conf *conf;
	struct natsconn *nc;
	struct store_reader reader;
	enum ns_state state;
	int error;                   /* STORE_OK, or what check() says */
	char name[300];              /* "nats:STREAM" */
	char subject[300];           /* joinq.STREAM */
	unsigned char *header;       /* a new stream's first message */
	size_t header_len;
	struct event *tick;
	struct event_base *evbase;
	uint64_t retry_at;           /* API requests wait */
	unsigned backoff;
	struct jsapi api;
	struct natspipe pipe;
	uint64_t warned_at;

	/* The stream as read. */
	uint64_t last_seq;           /* the last sequence read or acknowledged */
	uint64_t end_seq;            /* the stream's last at INFO */
	uint64_t lag;
	bool based;                  /* a state applied: later snapshots skip */
	unsigned gen;                /* the consumer's generation */
	char consumer[64];           /* its name, to delete it */
	uint64_t dseq;               /* its last delivery */
	uint64_t heard_at;           /* the last stream message, any writer */
	uint64_t consumer_at;        /* the last sign of the consumer */
	bool resigned;               /* the last message was a resign */
	bool wrote_head;             /* our takeover begins the journal */
	bool read_only;              /* --check-journal */
	struct buf image;            /* a message's parts so far */
	struct buf plain;            /* a compressed message, decompressed */
	ZSTD_DCtx *zd;
	unsigned parts, nparts;      /* of the message being joined */
	char part_kind[12];
	char active[256];

	uint64_t size, takeovers;

	/* Snapshots. */
	char *snap_path;
	int snap_fd;                 /* in the compacting child */
	uint64_t purge_id;           /* the first part's pub id; 0: none */
	uint64_t purge_seq;
};

static uint64_t now_ms(void)
{
	return store_clock_ms();
}

/* ---- failing ------------------------------------------------------------ */

static void fail(struct store_nats *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* A condition joinqd cannot go on with: logged once, then every call
 * returns STORE_FAILED and joinqd stops (a restart starts over). */
static void fail(struct store_nats *s, const char *fmt, ...)
{
	char why[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	if (s->state != NS_FAILED)
		log_error("journal: stream %s: %s", s->conf->stream, why);
	s->state = NS_FAILED;
	s->error = STORE_FAILED;
}

/* A condition that passes (NATS restarting, a leader moving): said at
 * most every few seconds. */
static void warn(struct store_nats *s, const char *what, const char *why)
{
	if (now_ms() - s->warned_at < 5000)
		return;
	s->warned_at = now_ms();
	log_warning("journal: stream %s: %s (%s); trying again", s->conf->stream,
	            what, why);
}

static void back_off(struct store_nats *s)
{
	s->backoff = store_backoff(s->backoff, RETRY_MIN_MS, RETRY_MAX_MS);
	s->retry_at = now_ms() + s->backoff;
}

/* ---- the stream --------------------------------------------------------- */

static void start_reading(struct store_nats *s, uint64_t from);
static void ask_info(struct store_nats *s);
static void take_over(struct store_nats *s);

static void on_info(void *ctx, json_t *reply, unsigned arg);

/* What a missing reply most likely means, for the log. */
#define NO_REPLY "no reply: is JetStream enabled, with a leader elected?"

static void on_created(void *ctx, json_t *reply, unsigned arg)
{
	struct store_nats *s = ctx;
	const char *desc;
	int code = reply ? jsapi_error(reply, &desc) : -1;
	if (code == 10058) {   /* another daemon made it first */
		ask_info(s);
		return;
	}
	if (code) {
		/* No answer, 10008 (cluster not available) and 10005 (no
		 * suitable peers) are NATS still starting: the meta leader
		 * learns its peers some time after /healthz says ready.  10005
		 * is also too few servers for nats_replicas, which the warning
		 * names every few seconds; the daemon waits for them, as it
		 * waits for NATS itself. */
		if (code > 0 && code != 10008 && code != 10005) {
			fail(s, "cannot create it: %s (error %d)", desc, code);
			return;
		}
		warn(s, "JetStream cannot create it yet", code < 0 ?
		     NO_REPLY : desc);
		back_off(s);
		s->state = NS_CONNECTING;
		return;
	}
	log_info("journal: created stream %s (subject %s, %u replicas)",
	         s->conf->stream, s->subject, s->conf->replicas);
	on_info(ctx, reply, arg);
}

static void create_stream(struct store_nats *s)
{
	jsapi_request(&s->api, "STREAM.CREATE", NULL,
	              jsapi_stream_config(s->conf->stream, s->subject,
	                                  s->conf->replicas), on_created, 0);
}

static void on_info(void *ctx, json_t *reply, unsigned arg)
{
	struct store_nats *s = ctx;
	const char *desc;
	char why[400];
	(void)arg;
	int code = reply ? jsapi_error(reply, &desc) : -1;
	if (code == 10059 && s->read_only) {
		fail(s, "there is no such stream");
		return;
	}
	if (code == 10059) {
		create_stream(s);
		return;
	}
	if (code) {
		warn(s, "JetStream does not answer", code < 0 ? NO_REPLY : desc);
		back_off(s);
		s->state = NS_CONNECTING;
		return;
	}
	if (jsapi_unfit(json_object_get(reply, "config"), s->subject, why,
	                sizeof why)) {
		fail(s, "it exists but is not a joinq journal: %s", why);
		return;
	}
	json_t *st = json_object_get(reply, "state");
	s->end_seq = (uint64_t)json_integer_value(json_object_get(st,
	                                                          "last_seq"));
	s->backoff = 0;
	start_reading(s, s->last_seq + 1);
}

static void ask_info(struct store_nats *s)
{
	s->state = NS_INFO;
	if (jsapi_request(&s->api, "STREAM.INFO", NULL, NULL, on_info, 0) < 0) {
		s->state = NS_CONNECTING;   /* the tick asks again */
		back_off(s);
	}
}

/* ---- reading ------------------------------------------------------------ */

static void caught_up(struct store_nats *s)
{
	if (s->state != NS_READING)
		return;
	s->state = NS_STANDBY;
	s->heard_at = now_ms();
	log_info("journal: stream %s read up to sequence %" PRIu64 "%s%s",
	         s->conf->stream, s->last_seq, s->active[0] ?
	         "; the active daemon is " : "", s->active);
	s->reader.news(s->reader.ctx, STORE_CAUGHT_UP);
	/* A stream with no journal in it has no active daemon to wait for:
	 * take it at once (two daemons that both try are fenced as ever). */
	if (!s->based && !s->read_only)
		take_over(s);
}

static void drop_consumer(struct store_nats *s)
{
	if (s->consumer[0])
		jsapi_request(&s->api, "CONSUMER.DELETE", s->consumer, NULL, NULL,
		              0);
	s->consumer[0] = '\0';
	s->gen++;
}

static void on_consumer(void *ctx, json_t *reply, unsigned gen)
{
	struct store_nats *s = ctx;
	const char *desc;
	int code = reply ? jsapi_error(reply, &desc) : -1;
	const char *name = json_string_value(json_object_get(reply, "name"));
	if (gen != s->gen || (s->state != NS_READING && s->state != NS_STANDBY &&
	                      s->state != NS_TAKING_OVER)) {
		if (!code && name)   /* one we no longer want */
			jsapi_request(&s->api, "CONSUMER.DELETE", name, NULL, NULL, 0);
		return;
	}
	if (code) {
		warn(s, "cannot start reading", code < 0 ? NO_REPLY : desc);
		back_off(s);
		s->consumer_at = 0;   /* the tick asks again */
		return;
	}
	snprintf(s->consumer, sizeof s->consumer, "%s", name ? name : "");
	s->consumer_at = now_ms();
	if (json_integer_value(json_object_get(reply, "num_pending")) == 0 &&
	    s->last_seq >= s->end_seq)
		caught_up(s);
}

/* A consumer of our own that pushes the stream from sequence `from` to
 * our inbox: no acks, flow control and idle heartbeats, so that a gap or
 * a lost consumer shows. */
static void start_reading(struct store_nats *s, uint64_t from)
{
	char deliver[128], suffix[32];
	drop_consumer(s);
	if (s->state != NS_STANDBY && s->state != NS_TAKING_OVER)
		s->state = NS_READING;
	s->dseq = 0;
	s->consumer_at = now_ms();
	snprintf(suffix, sizeof suffix, "d.%u", s->gen);
	natsStatus st = natsconn_follow(s->nc, suffix, deliver, sizeof deliver);
	if (st != NATS_OK) {
		warn(s, "cannot subscribe to read", natsStatus_GetText(st));
		back_off(s);
		return;
	}
	if (jsapi_request(&s->api, "CONSUMER.CREATE", NULL,
	                  jsapi_consumer(s->conf->stream, deliver, from,
	                                 IDLE_HEARTBEAT_MS), on_consumer,
	                  s->gen) < 0)
		back_off(s);   /* the tick asks again, the consumer unheard */
}

/* Reading again from the stream's start, with nothing applied. */
static void read_from_start(struct store_nats *s)
{
	s->based = false;
	s->last_seq = 0;
	s->end_seq = 0;
	buf_reset(&s->image);
	s->parts = s->nparts = 0;
	if (s->state != NS_FAILED) {
		s->state = NS_READING;
		ask_info(s);
	}
}

static const char *header(natsMsg *m, const char *key)
{
	const char *v = NULL;
	return natsMsgHeader_Get(m, key, &v) == NATS_OK ? v : NULL;
}


/* A compressed message's bytes, into s->plain. */
static int unzstd(struct store_nats *s, const unsigned char **p, size_t *len)
{
	unsigned long long n = ZSTD_getFrameContentSize(*p, *len);
	if (n == ZSTD_CONTENTSIZE_ERROR || n == ZSTD_CONTENTSIZE_UNKNOWN ||
	    n > (64ull << 20))
		return -1;
	buf_reset(&s->plain);
	buf_reserve(&s->plain, (size_t)n);
	size_t got = ZSTD_decompressDCtx(s->zd, s->plain.p, (size_t)n, *p, *len);
	if (ZSTD_isError(got) || got != n)
		return -1;
	*p = (const unsigned char *)s->plain.p;
	*len = got;
	return 0;
}

/*
 * Joins part "i/n" of kind into s->image: true once the last is in, or
 * when the message is whole (part NULL).  A message that is not the next
 * part drops what was joined so far (a writer replaced in the middle of
 * a message: its parts were never acknowledged).
 */
static bool join_part(struct store_nats *s, const char *part,
                      const char *kind, const unsigned char *p, size_t len)
{
	char *slash = NULL;
	unsigned long i = part ? strtoul(part, &slash, 10) : 0;
	unsigned long n = slash && *slash == '/' ? strtoul(slash + 1, NULL, 10) :
	                  0;
	bool next = part && s->nparts && i == s->parts + 1 && n == s->nparts &&
	            !strcmp(kind, s->part_kind);
	if (!next && s->nparts) {
		log_info("journal: stream %s: an unfinished %s (%u of %u parts) "
		         "left by a replaced writer is dropped", s->conf->stream,
		         s->part_kind, s->parts, s->nparts);
		buf_reset(&s->image);
		s->parts = s->nparts = 0;
	}
	if (!part)
		return true;
	if (!next && (i != 1 || n < 1 || n > 1000000)) {
		log_warning("journal: stream %s: part %s of a %s out of order; "
		            "skipped", s->conf->stream, part, kind);
		return false;
	}
	if (!next) {
		snprintf(s->part_kind, sizeof s->part_kind, "%s", kind);
		s->nparts = (unsigned)n;
	}
	s->parts = (unsigned)i;
	buf_add(&s->image, p, len);
	if (i < n)
		return false;
	s->parts = s->nparts = 0;
	return true;
}

/* One message of the stream, in order. */
static void on_record(struct store_nats *s, natsMsg *m, uint64_t seq)
{
	const char *kind = header(m, "Joinq-Kind");
	const char *writer = header(m, "Joinq-Writer");
	const char *active = header(m, "Joinq-Active");
	const char *encoding = header(m, "Joinq-Encoding");
	const unsigned char *p = (const unsigned char *)natsMsg_GetData(m);
	size_t len = (size_t)natsMsg_GetDataLength(m);

	s->heard_at = now_ms();
	if (!kind || !writer) {
		fail(s, "sequence %" PRIu64 " (subject %s) was not written by "
		     "joinqd: the stream must be joinq's alone", seq,
		     natsMsg_GetSubject(m));
		return;
	}
	s->resigned = !strcmp(kind, "resign");
	if (!strcmp(writer, s->pipe.writer))
		return;   /* ours: applied already */
	if (active)
		snprintf(s->active, sizeof s->active, "%s", active);
	if (s->resigned)
		s->active[0] = '\0';
	if (encoding && (strcmp(encoding, "zstd") != 0 ||
	                 unzstd(s, &p, &len) < 0)) {
		fail(s, "sequence %" PRIu64 " cannot be decoded (%s)", seq,
		     encoding);
		return;
	}
	s->size += len + MESSAGE_BYTES;
	if (!strcmp(kind, "snap") && s->based)
		return;   /* we hold its state already */
	const char *part = header(m, "Joinq-Part");
	if (part || s->nparts) {
		/* A part of a message too big for one, or what ends one: those
		 * that never got their last part (their writer was replaced)
		 * were never acknowledged, and go. */
		if (!join_part(s, part, kind, p, len))
			return;
		if (part) {
			p = (const unsigned char *)s->image.p;
			len = s->image.len;
		}
	}
	int rc = 0;
	if (!strcmp(kind, "head")) {
		if (s->based) {
			fail(s, "a second journal header at sequence %" PRIu64, seq);
			return;
		}
		s->based = true;
		rc = s->reader.apply(s->reader.ctx, p, len, true);
	} else if (!strcmp(kind, "log")) {
		if (!s->based) {
			fail(s, "it begins (sequence %" PRIu64 ") with an append and no "
			     "snapshot: its start was removed by something other than "
			     "joinqd", seq);
			return;
		}
		rc = s->reader.apply(s->reader.ctx, p, len, false);
	} else if (!strcmp(kind, "snap")) {
		s->based = true;
		s->size = len;
		rc = s->reader.apply(s->reader.ctx, p, len, true);
	}
	if (part)
		buf_free(&s->image);
	if (rc < 0)
		fail(s, "sequence %" PRIu64 " does not replay (see above); see "
		     "joinqd --check-journal", seq);
}

static void on_delivery(struct store_nats *s, unsigned gen, natsMsg *m)
{
	uint64_t sseq, dseq, pending;
	const char *status = header(m, "Status");

	if (gen != s->gen || s->state == NS_ACTIVE || s->state == NS_FAILED)
		return;
	s->consumer_at = now_ms();
	if (status && strncmp(status, "100", 3) != 0) {
		/* The consumer is gone (409) or worse: a new one. */
		start_reading(s, s->last_seq + 1);
		return;
	}
	if (status) {
		/* Flow control, or a heartbeat of a stalled consumer: answer.
		 * A heartbeat also says what was last delivered: a gap shows. */
		if (natsMsg_GetReply(m))
			natsconn_send(s->nc, natsMsg_GetReply(m), NULL, "", 0);
		const char *last = header(m, "Nats-Last-Consumer");
		if (last && strtoull(last, NULL, 10) > s->dseq)
			start_reading(s, s->last_seq + 1);
		return;
	}
	if (!jsapi_delivery(natsMsg_GetReply(m), &sseq, &dseq, &pending))
		return;
	if (dseq != s->dseq + 1) {   /* deliveries lost (a slow consumer) */
		start_reading(s, s->last_seq + 1);
		return;
	}
	s->dseq = dseq;
	s->lag = pending;
	if (sseq <= s->last_seq)
		return;
	if (sseq != s->last_seq + 1 && s->based) {
		/* Purged while we read it: what we applied lacks what went. */
		log_info("journal: stream %s was compacted while being read; "
		         "reading it again", s->conf->stream);
		drop_consumer(s);
		s->reader.news(s->reader.ctx, STORE_REPLACED);
		read_from_start(s);
		return;
	}
	s->last_seq = sseq;
	on_record(s, m, sseq);
	if (pending == 0 && s->last_seq >= s->end_seq)
		caught_up(s);
	if (s->resigned && s->state == NS_STANDBY)
		take_over(s);
}

/* ---- roles ------------------------------------------------------------- */

static void take_over(struct store_nats *s)
{
	if (!natsconn_up(s->nc) || s->read_only)
		return;
	s->state = NS_TAKING_OVER;
	natspipe_new_term(&s->pipe, s->last_seq);
	char why[64];
	snprintf(why, sizeof why, "no record for %u ms",
	         (unsigned)(now_ms() - s->heard_at));
	log_info("journal: stream %s: %s; taking over after sequence %" PRIu64,
	         s->conf->stream, !s->based ? "no journal in it yet" :
	         s->resigned ? "the active daemon resigned" : why, s->last_seq);
	natspipe_send(&s->pipe, "takeover", NULL, NULL, 0, 0);
	if (!s->based)   /* an empty stream: the journal begins */
		natspipe_send(&s->pipe, "head", NULL, s->header, s->header_len, 0);
}

/* Our takeover is in: we are the active daemon. */
static void took_over(struct store_nats *s)
{
	s->state = NS_ACTIVE;
	s->based = true;
	s->takeovers++;
	s->active[0] = '\0';
	s->lag = 0;
	drop_consumer(s);   /* the active reads nothing */
	log_info("journal: stream %s taken over at sequence %" PRIu64 "; "
	         "this daemon is active", s->conf->stream, s->last_seq);
	s->reader.news(s->reader.ctx, STORE_TOOK_OVER);
}

/* Another daemon wrote: lost a takeover race, or replaced as active. */
static void on_refused(void *ctx)
{
	struct store_nats *s = ctx;
	natspipe_drop(&s->pipe);
	s->purge_id = 0;
	if (s->state == NS_TAKING_OVER) {
		log_info("journal: stream %s: another daemon wrote first; "
		         "following it", s->conf->stream);
		s->state = NS_STANDBY;
		s->heard_at = now_ms();
		start_reading(s, s->last_seq + 1);
		return;
	}
	log_error("journal: stream %s: another daemon has taken it over; "
	          "this one answers no more changes and reads it again",
	          s->conf->stream);
	natspipe_new_term(&s->pipe, 0);
	s->reader.news(s->reader.ctx, STORE_REPLACED);
	read_from_start(s);
}

static void purge(struct store_nats *s);

/* Our message is in, at seq: the takeover makes us active; the last part
 * of a snapshot lets the log before it go. */
static void on_acked(void *ctx, const struct pub *p, uint64_t seq)
{
	struct store_nats *s = ctx;
	if (seq > s->last_seq)
		s->last_seq = seq;
	if (p->id == s->purge_id)
		purge(s);
	if (!strcmp(p->kind, "takeover") && s->state == NS_TAKING_OVER)
		took_over(s);
}

static void on_failed(void *ctx, const char *why)
{
	fail(ctx, "%s", why);
}

static void on_warn(void *ctx, const char *what, const char *why)
{
	warn(ctx, what, why);
}

/* ---- snapshots and purges ----------------------------------------------- */

static void on_purged(void *ctx, json_t *reply, unsigned arg)
{
	struct store_nats *s = ctx;
	const char *desc;
	int code = reply ? jsapi_error(reply, &desc) : -1;
	(void)arg;
	if (code)
		log_warning("journal: stream %s: cannot purge before the snapshot "
		            "(%s); the next compaction tries again", s->conf->stream,
		            code < 0 ? "no reply" : desc);
	else
		log_info("journal: stream %s purged before sequence %" PRIu64
		         " (its snapshot)", s->conf->stream, s->purge_seq);
}

/* The snapshot's first part is at purge_seq and all of it is in: what
 * came before can go. */
static void purge(struct store_nats *s)
{
	s->purge_id = 0;
	if (jsapi_request(&s->api, "STREAM.PURGE", NULL, json_pack("{s:I}",
	                  "seq", (json_int_t)s->purge_seq), on_purged, 0) < 0)
		on_purged(s, NULL, 0);
}

/* ---- the store's calls -------------------------------------------------- */

static int nats_load(struct store *st, const unsigned char **p, size_t *len,
                     char *err, size_t errlen)
{
	(void)st;
	*p = NULL;
	*len = 0;
	snprintf(err, errlen, "a stream is read as it grows, not loaded");
	return -1;
}

static int nats_loaded(struct store *st, uint64_t keep, const void *first,
                       size_t first_len, char *err, size_t errlen)
{
	(void)st; (void)keep; (void)first; (void)first_len;
	snprintf(err, errlen, "a stream is read as it grows, not loaded");
	return -1;
}

static int nats_reserve(struct store *st, uint64_t bytes, bool small)
{
	struct store_nats *s = (struct store_nats *)st;
	(void)small;
	if (s->state != NS_ACTIVE || s->error)
		return STORE_AGAIN;
	return s->pipe.pending_bytes + bytes > MAX_PENDING_BYTES ? STORE_AGAIN :
	       STORE_OK;
}

static int nats_append(struct store *st, const void *p, size_t len,
                       uint64_t upto)
{
	struct store_nats *s = (struct store_nats *)st;
	if (s->error)
		return s->error;
	if (s->state != NS_ACTIVE)
		return STORE_FENCED;
	s->size += len + MESSAGE_BYTES;
	natspipe_append(&s->pipe, p, len, upto);
	return STORE_OK;
}

static uint64_t nats_durable(const struct store *st)
{
	return ((const struct store_nats *)st)->pipe.durable;
}

static void on_message(void *ctx, const char *suffix, natsMsg *m)
{
	struct store_nats *s = ctx;
	if (suffix[0] == 'a' && suffix[1] == '.')
		natspipe_ack(&s->pipe, suffix + 2, m);
	else if (suffix[0] == 'r' && suffix[1] == '.')
		jsapi_reply(&s->api, suffix + 2, m);
	else if (suffix[0] == 'd' && suffix[1] == '.')
		on_delivery(s, (unsigned)strtoul(suffix + 2, NULL, 10), m);
	natsMsg_Destroy(m);
}

static void on_event(void *ctx, enum natsconn_event ev)
{
	struct store_nats *s = ctx;
	char url[256];
	switch (ev) {
	case NATSCONN_UP:
		log_info("journal: connected to NATS at %s",
		         natsconn_server(s->nc, url, sizeof url));
		if (s->state == NS_CONNECTING)
			ask_info(s);
		else if (s->state == NS_READING || s->state == NS_STANDBY)
			start_reading(s, s->last_seq + 1);   /* deliveries were lost */
		break;
	case NATSCONN_DOWN:
		log_warning("journal: lost the connection to NATS; reconnecting");
		break;
	case NATSCONN_CLOSED:
		fail(s, "the connection to NATS is closed for good");
		break;
	}
}

/* Timers: requests and PubAcks that did not come, the active's beat, the
 * standby's watch for silence, a consumer that fell silent. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct store_nats *s = arg;
	uint64_t now = now_ms();
	(void)fd;
	(void)what;
	if (s->state == NS_FAILED)
		return;
	jsapi_expire(&s->api, now);
	natspipe_settle(&s->pipe, now);
	bool up = natsconn_up(s->nc);
	if (s->state == NS_CONNECTING && up && now >= s->retry_at)
		ask_info(s);
	if ((s->state == NS_READING || s->state == NS_STANDBY) && up &&
	    now >= s->retry_at && now - s->consumer_at >= CONSUMER_LOST_MS)
		start_reading(s, s->last_seq + 1);
	/* Silence counts only while the consumer is heard: a standby cut off
	 * from the stream cannot tell a silent active from its own trouble. */
	if (s->state == NS_STANDBY && now - s->consumer_at < CONSUMER_LOST_MS &&
	    (s->resigned || now - s->heard_at >= s->conf->failover_timeout))
		take_over(s);
	if (s->state == NS_ACTIVE && !s->pipe.head &&
	    now - s->pipe.sent_at >= s->conf->failover_timeout / 3)
		natspipe_send(&s->pipe, "beat", NULL, NULL, 0, 0);
}

static int nats_check(struct store *st)
{
	struct store_nats *s = (struct store_nats *)st;
	natsconn_poll(s->nc);
	if (s->state != NS_FAILED)
		natspipe_settle(&s->pipe, now_ms());
	return s->error;
}

static int nats_sync(struct store *st)
{
	return nats_check(st);
}

static uint64_t nats_size(const struct store *st)
{
	return ((const struct store_nats *)st)->size;
}

/* In the compacting child: the image goes to a file of the state
 * directory, which the daemon publishes (a fork must not use the
 * parent's connection). */
static int nats_snapshot_write(struct store *st, const void *p, size_t len,
                               bool last)
{
	struct store_nats *s = (struct store_nats *)st;
	if (s->snap_fd < 0)
		s->snap_fd = open(s->snap_path, O_WRONLY | O_CREAT | O_TRUNC |
		                  O_CLOEXEC, 0600);
	const char *c = p;
	while (s->snap_fd >= 0 && len > 0) {
		ssize_t n = write(s->snap_fd, c, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			log_error("journal: cannot write %s: %s", s->snap_path,
			          strerror(errno));
			return STORE_AGAIN;
		}
		c += n;
		len -= (size_t)n;
	}
	if (s->snap_fd < 0) {
		log_error("journal: cannot write %s: %s", s->snap_path,
		          strerror(errno));
		return STORE_AGAIN;
	}
	if (last) {
		close(s->snap_fd);
		s->snap_fd = -1;
	}
	return STORE_OK;
}

static int read_file(const char *path, struct buf *b)
{
	char chunk[65536];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = 0;
	while (fd >= 0 && (n = read(fd, chunk, sizeof chunk)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		buf_add(b, chunk, (size_t)n);
	}
	if (fd >= 0)
		close(fd);
	return fd < 0 || n < 0 ? -1 : 0;
}

static int nats_snapshot_install(struct store *st, uint64_t upto,
                                 const void *tail, size_t tail_len)
{
	struct store_nats *s = (struct store_nats *)st;
	struct buf image = { 0 };
	(void)upto;
	if (s->state != NS_ACTIVE || read_file(s->snap_path, &image) < 0) {
		buf_free(&image);
		unlink(s->snap_path);
		return STORE_AGAIN;
	}
	unlink(s->snap_path);
	natspipe_flush(&s->pipe);   /* the tail's records land before it */
	buf_add(&image, tail, tail_len);
	struct pub *first = natspipe_send_parts(&s->pipe, "snap", image.p,
	                                        image.len, 0);
	s->purge_seq = first->expect + 1;
	s->purge_id = s->pipe.tail->id;
	s->size = image.len;
	buf_free(&image);
	return STORE_OK;
}

static void nats_snapshot_abandon(struct store *st)
{
	unlink(((struct store_nats *)st)->snap_path);
}

static int nats_close(struct store *st)
{
	struct store_nats *s = (struct store_nats *)st;
	if (s->state == NS_ACTIVE && !s->error) {
		/* An orderly stop: what is out lands, and a standby may take
		 * over at once. */
		natspipe_flush(&s->pipe);
		natspipe_send(&s->pipe, "resign", NULL, NULL, 0, 0);
		uint64_t until = now_ms() + CLOSE_WAIT_MS;
		while (s->pipe.head && !s->error && now_ms() < until) {
			/* The loop is over: read the socket ourselves. */
			event_base_loop(s->evbase, EVLOOP_NONBLOCK);
			natsconn_poll(s->nc);
			natspipe_settle(&s->pipe, now_ms());
			usleep(2000);
		}
		if (s->pipe.head)
			log_warning("journal: stream %s: appends not acknowledged at "
			            "the stop; their replies were never sent",
			            s->conf->stream);
	}
	drop_consumer(s);
	if (s->tick)
		event_free(s->tick);
	natsconn_close(s->nc);
	natspipe_free(&s->pipe);
	buf_free(&s->image);
	buf_free(&s->plain);
	ZSTD_freeDCtx(s->zd);
	free(s->header);
	free(s->snap_path);
	free(s);
	return STORE_OK;
}

static const struct store_ops nats_ops = {
	.load = nats_load,
	.loaded = nats_loaded,
	.reserve = nats_reserve,
	.append = nats_append,
	.durable = nats_durable,
	.check = nats_check,
	.sync = nats_sync,
	.size = nats_size,
	.snapshot_write = nats_snapshot_write,
	.snapshot_install = nats_snapshot_install,
	.snapshot_abandon = nats_snapshot_abandon,
	.close = nats_close,
};

struct store *store_nats_open(const struct nats_conf *conf,
                              struct event_base *base, const char *dir,
                              const void *header, size_t header_len,
                              bool read_only,
                              const struct store_reader *reader, char *err,
                              size_t errlen)
{
	struct store_nats *s = xcalloc(1, sizeof *s);
	struct natsconn_handlers h = { s, on_message, on_event };
	s->base.ops = &nats_ops;
	s->base.name = s->name;
	s->conf = conf;
	s->reader = *reader;
	s->read_only = read_only;
	s->snap_fd = -1;
	s->evbase = base;
	s->zd = ZSTD_createDCtx();
	snprintf(s->name, sizeof s->name, "nats:%s", conf->stream);
	snprintf(s->subject, sizeof s->subject, "joinq.%s", conf->stream);
	s->header = xmalloc(header_len);
	memcpy(s->header, header, header_len);
	s->header_len = header_len;
	size_t n = strlen(dir) + strlen(conf->stream) + 32;
	s->snap_path = xmalloc(n);
	snprintf(s->snap_path, n, "%s/joinq-%s.snapshot", dir, conf->stream);
	mkdir(dir, 0750);
	s->nc = natsconn_open(base, conf, &h, err, errlen);
	if (!s->nc) {
		ZSTD_freeDCtx(s->zd);
		free(s->header);
		free(s->snap_path);
		free(s);
		return NULL;
	}
	struct natspipe_events ev = { s, on_acked, on_refused, on_failed,
	                              on_warn };
	natspipe_init(&s->pipe, s->nc, s->subject, &conf->advertise, &ev);
	jsapi_init(&s->api, s->nc, conf->stream, s);
	unsigned every = conf->failover_timeout / 10;
	every = every < 20 ? 20 : every > 100 ? 100 : every;
	struct timeval tv = { 0, (suseconds_t)every * 1000 };
	s->tick = event_new(base, -1, EV_PERSIST, on_tick, s);
	event_add(s->tick, &tv);
	log_info("journal: stream %s on %s: connecting", conf->stream,
	         conf->servers);
	return &s->base;
}

const char *store_nats_active(const struct store *st)
{
	const struct store_nats *s = (const struct store_nats *)st;
	return s->state != NS_ACTIVE && s->active[0] ? s->active : NULL;
}

void store_nats_figures(const struct store *st, uint64_t *position,
                        uint64_t *lag, uint64_t *takeovers)
{
	const struct store_nats *s = (const struct store_nats *)st;
	*position = s->last_seq;
	*lag = s->state == NS_ACTIVE ? s->pipe.count : s->lag;
	*takeovers = s->takeovers;
}

bool store_nats_failed(const struct store *st)
{
	return ((const struct store_nats *)st)->state == NS_FAILED;
}
