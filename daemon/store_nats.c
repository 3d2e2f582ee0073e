/*
 * store_nats.c - the replicated store (store.h): the journal in a NATS
 * JetStream stream.  It owns the stream (its creation and the check that
 * it is one of ours), the reading of it (a push consumer, from the start
 * or from where we are), the appends (pipelined, fenced, sent again when
 * their PubAck is lost), the heartbeat of the active, the takeover of a
 * standby, and snapshots kept in the stream itself.
 *
 * The messages.  Every message joinqd writes names its kind in the header
 * Joinq-Kind, its writer (a random id per term) in Joinq-Writer and the
 * writer's address for clients in Joinq-Active:
 *   head      the format's header record: a new stream's first message
 *   log       one append: a sealed batch of records (record.h)
 *   snap      part i of n (Joinq-Part: i/n) of a snapshot image: the
 *             header, the live state and the tail batch (compact.c)
 *   beat      the active is alive and has had nothing to write
 *   takeover  a standby takes the stream over
 *   resign    the active stops in order: a standby may take over at once
 * A reader applies, in order, from the first head or complete snapshot
 * it meets at the start of the stream; once it has a state it skips later
 * snapshots (it holds that state already).  After a snapshot is in, the
 * stream is purged up to it, so a reader starts with one snapshot and a
 * short tail.
 *
 * Fencing.  Every message carries Nats-Expected-Last-Sequence, the
 * sequence the message before it got (pipelined: each expects the one
 * before it in our pipeline), so only one writer can extend the stream,
 * and ours land only in order.  Each also carries Nats-Msg-Id, so that a
 * message sent again after a lost PubAck is recognised (JetStream checks
 * duplicates before the expected sequence).  The first message of the
 * pipeline refused for its expected sequence means another daemon wrote:
 * we were replaced.  A PubAck that does not come, or a "no responders"
 * (the stream's leader moving), sends everything unacknowledged again.
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
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "buf.h"
#include "journal.h"
#include "log.h"
#include "natsconn.h"
#include "store.h"
#include "xalloc.h"

#define CHUNK_BYTES (256 * 1024)     /* snapshot parts: NATS's max_payload
                                        is 1 MB unless raised */
#define ACK_WAIT_MS 3000             /* a PubAck not come: send again */
#define API_WAIT_MS 3000             /* a JetStream API reply not come */
#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 2000
#define IDLE_HEARTBEAT_MS 1000       /* the consumer's, while reading */
#define CONSUMER_LOST_MS (3 * IDLE_HEARTBEAT_MS)
#define DUPLICATE_WINDOW_NS "120000000000"
#define MAX_PENDING_BYTES (64u << 20)   /* unacknowledged: refuse changes */
#define MAX_APPENDS_OUT 4            /* then appends wait, and join up */
#define COMPRESS_MIN 512             /* smaller appends go as they are */
#define COMPRESS_LEVEL 1             /* zstd's fastest: JetStream's bytes,
                                        replicated, cost far more */
#define NAPI 4                       /* API requests at once */

enum ns_state {
	NS_CONNECTING,     /* nats.c reaching a server */
	NS_INFO,           /* asking for the stream (creating it) */
	NS_READING,        /* the consumer delivers the stream: not at its end */
	NS_STANDBY,        /* at the end, following; watching for silence */
	NS_TAKING_OVER,    /* our takeover is out, its PubAck awaited */
	NS_ACTIVE,         /* we append */
	NS_FAILED,         /* see error */
};

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
	char part[24];               /* snap: "i/n" */
	size_t len;
	unsigned char data[];        /* kept to be sent again */
};

struct store_nats;

/* A JetStream API request out: done() hears its reply (NULL: none came,
 * or no responders), with the arg it was sent with. */
typedef void api_done(struct store_nats *s, json_t *reply, unsigned arg);

struct api_call {
	uint64_t token;              /* 0: free */
	uint64_t deadline;
	api_done *done;
	unsigned arg;
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
	char writer[20];             /* this term's Joinq-Writer */
	unsigned char *header;       /* a new stream's first message */
	size_t header_len;
	struct event *tick;
	uint64_t retry_at;           /* API requests and resends wait */
	unsigned backoff;
	uint64_t api_token;
	struct api_call api[NAPI];
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
	struct buf image;            /* a snapshot's parts so far */
	struct buf plain;            /* a compressed message, decompressed */
	ZSTD_CCtx *zc;
	ZSTD_DCtx *zd;
	unsigned parts, nparts;
	char active[256];

	/* The appends. */
	struct pub *head, *tail;
	uint64_t next_id, expect_next, durable, upto;
	unsigned appends_out;        /* log messages not yet acknowledged */
	struct buf waiting;          /* appends held back, joined into one */
	uint64_t sent_at;            /* the last message sent, for the beat */
	size_t pending_bytes;
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
	s->backoff = s->backoff ? s->backoff * 2 : RETRY_MIN_MS;
	if (s->backoff > RETRY_MAX_MS)
		s->backoff = RETRY_MAX_MS;
	s->retry_at = now_ms() + s->backoff;
}

/* ---- JetStream API requests --------------------------------------------- */

static void api(struct store_nats *s, const char *verb, const char *tail,
                json_t *body, api_done *done, unsigned arg)
{
	char subject[400], suffix[40];
	struct api_call *c = NULL;
	for (int i = 0; i < NAPI && !c; i++)
		if (!s->api[i].token)
			c = &s->api[i];
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	if (!c) {   /* never: each state has at most two requests out */
		free(text);
		fail(s, "too many JetStream requests at once");
		return;
	}
	*c = (struct api_call){ ++s->api_token, now_ms() + API_WAIT_MS, done,
	                        arg };
	snprintf(subject, sizeof subject, "$JS.API.%s.%s%s%s", verb,
	         s->conf->stream, tail ? "." : "", tail ? tail : "");
	snprintf(suffix, sizeof suffix, "r.%" PRIu64, c->token);
	natsStatus st = natsconn_send(s->nc, subject, done ? suffix : NULL, text,
	                              text ? strlen(text) : 0);
	free(text);
	if (!done)
		c->token = 0;
	else if (st != NATS_OK)
		c->deadline = 0;   /* lost at once: the next tick says so */
}

/* A reply's JetStream error: its code (e.g. 10059, stream not found) and
 * description; 0 when it is not an error. */
static int api_error(json_t *reply, const char **desc)
{
	json_t *e = json_object_get(reply, "error");
	*desc = json_string_value(json_object_get(e, "description"));
	if (!*desc)
		*desc = "no description";
	return e ? (int)json_integer_value(json_object_get(e, "err_code")) : 0;
}

static void on_api_reply(struct store_nats *s, uint64_t token, natsMsg *m)
{
	for (int i = 0; i < NAPI; i++) {
		struct api_call *c = &s->api[i];
		if (c->token != token)
			continue;
		c->token = 0;
		json_t *reply = natsMsg_IsNoResponders(m) ? NULL :
		                json_loadb(natsMsg_GetData(m),
		                           (size_t)natsMsg_GetDataLength(m), 0, NULL);
		c->done(s, reply, c->arg);
		json_decref(reply);
		return;
	}
}

static void api_timeouts(struct store_nats *s)
{
	for (int i = 0; i < NAPI; i++) {
		struct api_call *c = &s->api[i];
		if (c->token && now_ms() >= c->deadline) {
			c->token = 0;
			c->done(s, NULL, c->arg);
		}
	}
}

/* ---- the stream --------------------------------------------------------- */

static void start_reading(struct store_nats *s, uint64_t from);
static void ask_info(struct store_nats *s);

/* Limits would drop journal records; other retentions delete them. */
static const char *not_ours(json_t *cfg, const char *subject)
{
	static char why[400];
	const char *retention = json_string_value(json_object_get(cfg,
	                                                          "retention"));
	const char *storage = json_string_value(json_object_get(cfg, "storage"));
	bool has_subject = false;
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(cfg, "subjects"), i, v)
		has_subject |= json_string_value(v) &&
		               !strcmp(json_string_value(v), subject);
	if (!retention || strcmp(retention, "limits") != 0)
		snprintf(why, sizeof why, "its retention is %s; a journal needs "
		         "limits", retention ? retention : "unknown");
	else if (!storage || strcmp(storage, "file") != 0)
		snprintf(why, sizeof why, "its storage is %s; a journal needs file",
		         storage ? storage : "unknown");
	else if (!has_subject)
		snprintf(why, sizeof why, "it does not take subject %s", subject);
	else if (json_integer_value(json_object_get(cfg, "max_msgs")) > 0 ||
	         json_integer_value(json_object_get(cfg, "max_bytes")) > 0 ||
	         json_integer_value(json_object_get(cfg, "max_age")) > 0 ||
	         json_integer_value(json_object_get(cfg,
	                                            "max_msgs_per_subject")) > 0)
		snprintf(why, sizeof why, "it has limits (max_msgs, max_bytes, "
		         "max_age or max_msgs_per_subject) that would drop records");
	else if (json_is_true(json_object_get(cfg, "sealed")) ||
	         json_is_true(json_object_get(cfg, "deny_purge")))
		snprintf(why, sizeof why, "it is sealed or denies purges");
	else
		return NULL;
	return why;
}

static void on_info(struct store_nats *s, json_t *reply, unsigned arg);

/* What a missing reply most likely means, for the log. */
#define NO_REPLY "no reply: is JetStream enabled, with a leader elected?"

static void on_created(struct store_nats *s, json_t *reply, unsigned arg)
{
	const char *desc;
	int code = reply ? api_error(reply, &desc) : -1;
	if (code == 10058) {   /* another daemon made it first */
		ask_info(s);
		return;
	}
	if (code) {
		/* Too few servers for the replicas is an error of the settings;
		 * no answer is NATS still starting. */
		if (code > 0 && code != 10008) {
			fail(s, "cannot create it: %s (error %d)", desc, code);
			return;
		}
		warn(s, "JetStream does not answer its creation", code < 0 ?
		     NO_REPLY : desc);
		back_off(s);
		s->state = NS_CONNECTING;
		return;
	}
	log_info("journal: created stream %s (subject %s, %u replicas)",
	         s->conf->stream, s->subject, s->conf->replicas);
	on_info(s, reply, arg);
}

static void create_stream(struct store_nats *s)
{
	json_t *cfg = json_pack("{s:s, s:[s], s:s, s:s, s:i, s:i, s:i, s:i, "
	                        "s:i, s:s, s:b, s:b, s:s}",
	                        "name", s->conf->stream, "subjects", s->subject,
	                        "retention", "limits", "storage", "file",
	                        "num_replicas", (int)s->conf->replicas,
	                        "max_msgs", -1, "max_bytes", -1, "max_age", 0,
	                        "max_msg_size", -1, "discard", "old",
	                        "deny_delete", 1, "deny_purge", 0,
	                        "description", "joinq journal");
	json_object_set_new(cfg, "duplicate_window",
	                    json_integer(atoll(DUPLICATE_WINDOW_NS)));
	api(s, "STREAM.CREATE", NULL, cfg, on_created, 0);
}

static void on_info(struct store_nats *s, json_t *reply, unsigned arg)
{
	const char *desc;
	(void)arg;
	int code = reply ? api_error(reply, &desc) : -1;
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
	const char *why = not_ours(json_object_get(reply, "config"), s->subject);
	if (why) {
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
	api(s, "STREAM.INFO", NULL, NULL, on_info, 0);
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
}

static void drop_consumer(struct store_nats *s)
{
	if (s->consumer[0])
		api(s, "CONSUMER.DELETE", s->consumer, NULL, NULL, 0);
	s->consumer[0] = '\0';
	s->gen++;
}

static void on_consumer(struct store_nats *s, json_t *reply, unsigned gen)
{
	const char *desc;
	int code = reply ? api_error(reply, &desc) : -1;
	const char *name = json_string_value(json_object_get(reply, "name"));
	if (gen != s->gen || (s->state != NS_READING && s->state != NS_STANDBY &&
	                      s->state != NS_TAKING_OVER)) {
		if (!code && name)   /* one we no longer want */
			api(s, "CONSUMER.DELETE", name, NULL, NULL, 0);
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
	json_t *cfg = json_pack("{s:s, s:s, s:s, s:b, s:I, s:b, s:i}",
	                        "deliver_subject", deliver,
	                        "ack_policy", "none", "replay_policy", "instant",
	                        "flow_control", 1,
	                        "idle_heartbeat",
	                        (json_int_t)IDLE_HEARTBEAT_MS * 1000000,
	                        "mem_storage", 1, "num_replicas", 1);
	if (from > 1) {
		json_object_set_new(cfg, "deliver_policy",
		                    json_string("by_start_sequence"));
		json_object_set_new(cfg, "opt_start_seq", json_integer(
		                    (json_int_t)from));
	} else {
		json_object_set_new(cfg, "deliver_policy", json_string("all"));
	}
	api(s, "CONSUMER.CREATE", NULL, json_pack("{s:s, s:o}", "stream_name",
	    s->conf->stream, "config", cfg), on_consumer, s->gen);
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

/* The numbers in a delivery's reply subject:
 * $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>,
 * or with <domain>.<account hash> before the stream and a token after. */
static bool delivery_meta(const char *reply, uint64_t *sseq, uint64_t *dseq,
                          uint64_t *pending)
{
	const char *tok[16];
	int n = 0;
	if (!reply || strncmp(reply, "$JS.ACK.", 8) != 0)
		return false;
	for (const char *p = reply; p && n < 16; p = strchr(p, '.'))
		tok[n++] = *p == '.' ? ++p : p;
	int base = n == 9 ? 4 : n >= 12 ? 6 : -1;
	if (base < 0)
		return false;
	*sseq = strtoull(tok[base + 1], NULL, 10);
	*dseq = strtoull(tok[base + 2], NULL, 10);
	*pending = strtoull(tok[base + 4], NULL, 10);
	return true;
}

static const char *header(natsMsg *m, const char *key)
{
	const char *v = NULL;
	return natsMsgHeader_Get(m, key, &v) == NATS_OK ? v : NULL;
}

static void take_over(struct store_nats *s);

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
	if (!strcmp(writer, s->writer))
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
	s->size += len;
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
	} else if (!strcmp(kind, "snap") && !s->based) {
		unsigned i = 0, n = 0;
		const char *part = header(m, "Joinq-Part");
		if (!part || sscanf(part, "%u/%u", &i, &n) != 2 || i != s->parts + 1 ||
		    (s->nparts && n != s->nparts) || i > n) {
			fail(s, "a snapshot part out of order at sequence %" PRIu64,
			     seq);
			return;
		}
		s->nparts = n;
		s->parts = i;
		buf_add(&s->image, p, len);
		if (i == n) {
			s->based = true;
			s->size = s->image.len;
			rc = s->reader.apply(s->reader.ctx,
			                     (const unsigned char *)s->image.p,
			                     s->image.len, true);
			buf_free(&s->image);
		}
	}
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
	if (!delivery_meta(natsMsg_GetReply(m), &sseq, &dseq, &pending))
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

/* ---- appending ---------------------------------------------------------- */

static void send_pub(struct store_nats *s, struct pub *p)
{
	char reply[128], suffix[64], buf[32];
	natsMsg *m = NULL;
	snprintf(suffix, sizeof suffix, "a.%" PRIu64 ".%u", p->id, p->attempt);
	natsconn_inbox(s->nc, suffix, reply, sizeof reply);
	p->sent_at = now_ms();
	p->fate = PUB_WAITING;
	natsStatus st = natsMsg_Create(&m, s->subject, reply,
	                               (const char *)p->data, (int)p->len);
	if (st == NATS_OK)
		st = natsMsgHeader_Set(m, "Joinq-Kind", p->kind);
	if (st == NATS_OK)
		st = natsMsgHeader_Set(m, "Joinq-Writer", s->writer);
	if (st == NATS_OK && s->conf->advertise && strcmp(p->kind, "resign"))
		st = natsMsgHeader_Set(m, "Joinq-Active", s->conf->advertise);
	if (st == NATS_OK && p->part[0])
		st = natsMsgHeader_Set(m, "Joinq-Part", p->part);
	if (st == NATS_OK && p->zstd)
		st = natsMsgHeader_Set(m, "Joinq-Encoding", "zstd");
	snprintf(buf, sizeof buf, "%" PRIu64, p->expect);
	if (st == NATS_OK)
		st = natsMsgHeader_Set(m, "Nats-Expected-Last-Sequence", buf);
	snprintf(buf, sizeof buf, "%s-%" PRIu64, s->writer, p->id);
	if (st == NATS_OK)
		st = natsMsgHeader_Set(m, "Nats-Msg-Id", buf);
	if (st == NATS_OK)
		st = natsconn_publish(s->nc, m);
	natsMsg_Destroy(m);
	if (st != NATS_OK)
		p->fate = PUB_LOST;   /* sent again after a back-off */
	s->sent_at = now_ms();
}

/*
 * Appends and snapshot parts go compressed when that saves a good part:
 * every byte of the stream is carried to, and stored by, each replica,
 * which costs JetStream far more CPU than zstd's fastest level costs us.
 */
static struct pub *pub(struct store_nats *s, const char *kind,
                       const char *part, const void *data, size_t len)
{
	size_t room = len >= COMPRESS_MIN ? ZSTD_compressBound(len) : len;
	struct pub *p = xmalloc(sizeof *p + room);
	*p = (struct pub){ .id = ++s->next_id, .expect = s->expect_next++,
	                   .upto = s->upto, .len = len };
	snprintf(p->kind, sizeof p->kind, "%s", kind);
	snprintf(p->part, sizeof p->part, "%s", part ? part : "");
	size_t z = len >= COMPRESS_MIN ? ZSTD_compressCCtx(s->zc, p->data, room,
	                                                   data, len,
	                                                   COMPRESS_LEVEL) : 0;
	if (len >= COMPRESS_MIN && !ZSTD_isError(z) && z < len - len / 8) {
		p->len = z;
		p->zstd = true;
	} else if (len) {
		memcpy(p->data, data, len);
	}
	if (s->tail)
		s->tail->next = p;
	else
		s->head = p;
	s->tail = p;
	s->pending_bytes += len;
	if (!strcmp(kind, "log"))
		s->appends_out++;
	send_pub(s, p);
	return p;
}

static void free_pubs(struct store_nats *s)
{
	while (s->head) {
		struct pub *p = s->head;
		s->head = p->next;
		free(p);
	}
	s->tail = NULL;
	s->pending_bytes = 0;
	s->appends_out = 0;
	buf_reset(&s->waiting);
}

static void new_term(struct store_nats *s)
{
	uint64_t r = 0;
	if (getrandom(&r, sizeof r, 0) != sizeof r)
		r = (uint64_t)now_ms() ^ ((uint64_t)getpid() << 32);
	snprintf(s->writer, sizeof s->writer, "%016" PRIx64, r);
}

static void take_over(struct store_nats *s)
{
	if (!natsconn_up(s->nc) || s->read_only)
		return;
	s->state = NS_TAKING_OVER;
	new_term(s);
	s->expect_next = s->last_seq;
	log_info("journal: stream %s: no record for %u ms; taking over after "
	         "sequence %" PRIu64, s->conf->stream,
	         (unsigned)(now_ms() - s->heard_at), s->last_seq);
	pub(s, "takeover", NULL, NULL, 0);
	s->wrote_head = !s->based;
	if (s->wrote_head)   /* an empty stream: the journal begins */
		pub(s, "head", NULL, s->header, s->header_len);
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
static void refused(struct store_nats *s)
{
	free_pubs(s);
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
	new_term(s);
	s->reader.news(s->reader.ctx, STORE_REPLACED);
	read_from_start(s);
}

static void purge(struct store_nats *s);

/* The appends held back go, as one message. */
static void flush_waiting(struct store_nats *s)
{
	if (!s->waiting.len)
		return;
	s->pending_bytes -= s->waiting.len;
	pub(s, "log", NULL, s->waiting.p, s->waiting.len);
	buf_reset(&s->waiting);
}

/* The front of the pipeline, as far as it is decided. */
static void settle(struct store_nats *s)
{
	while (s->head && s->head->fate == PUB_ACKED) {
		struct pub *p = s->head;
		s->head = p->next;
		if (!s->head)
			s->tail = NULL;
		s->pending_bytes -= p->len;
		s->appends_out -= !strcmp(p->kind, "log");
		s->durable = p->upto;
		if (p->id == s->purge_id)
			purge(s);
		bool takeover = !strcmp(p->kind, "takeover");
		free(p);
		if (takeover && s->state == NS_TAKING_OVER)
			took_over(s);
	}
	if (s->head && s->head->fate == PUB_REFUSED) {
		refused(s);
		return;
	}
	if (s->appends_out < MAX_APPENDS_OUT && s->state == NS_ACTIVE)
		flush_waiting(s);
	bool lost = false;
	for (struct pub *p = s->head; p && !lost; p = p->next)
		lost = p->fate == PUB_LOST;
	if (!lost || now_ms() < s->retry_at)
		return;
	/* Everything not acknowledged goes again, in order: what had landed
	 * comes back as a duplicate, the rest lands now. */
	back_off(s);
	for (struct pub *p = s->head; p; p = p->next)
		if (p->fate != PUB_ACKED) {
			p->attempt++;
			send_pub(s, p);
		}
}

static void on_puback(struct store_nats *s, uint64_t id, unsigned attempt,
                      natsMsg *m)
{
	struct pub *p = s->head;
	while (p && p->id != id)
		p = p->next;
	if (!p || p->fate == PUB_ACKED)
		return;
	json_t *r = natsMsg_IsNoResponders(m) ? NULL :
	            json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m),
	                       0, NULL);
	const char *desc;
	int code = r ? api_error(r, &desc) : -1;
	if (!code) {
		uint64_t seq = (uint64_t)json_integer_value(json_object_get(r, "seq"));
		if (seq != p->expect + 1) {
			fail(s, "JetStream stored our append at sequence %" PRIu64
			     ", not %" PRIu64, seq, p->expect + 1);
		} else {
			p->fate = PUB_ACKED;
			if (seq > s->last_seq)
				s->last_seq = seq;
			s->backoff = 0;
		}
	} else if (attempt == p->attempt) {
		/* 10071: wrong last sequence.  Others (no responders, a leader
		 * moving, a stream gone) are sent again. */
		p->fate = code == 10071 ? PUB_REFUSED : PUB_LOST;
		if (code > 0 && code != 10071)
			warn(s, "an append was not taken", desc);
		if (code == 10059)
			fail(s, "it was deleted while joinqd was using it");
	}
	json_decref(r);
}

/* ---- snapshots and purges ----------------------------------------------- */

static void on_purged(struct store_nats *s, json_t *reply, unsigned arg)
{
	const char *desc;
	int code = reply ? api_error(reply, &desc) : -1;
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
	api(s, "STREAM.PURGE", NULL, json_pack("{s:I}", "seq",
	    (json_int_t)s->purge_seq), on_purged, 0);
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
	return s->pending_bytes + bytes > MAX_PENDING_BYTES ? STORE_AGAIN :
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
	/* Group commit across turns: while a few appends are out, the next
	 * turns' batches wait and go as one message (sealed batches follow
	 * each other in one append as well as in several), so the stream
	 * takes fewer, bigger messages the busier the daemon is. */
	s->upto = upto;
	s->size += len;
	s->pending_bytes += len;
	buf_add(&s->waiting, p, len);
	if (s->appends_out < MAX_APPENDS_OUT)
		flush_waiting(s);
	return STORE_OK;
}

static uint64_t nats_durable(const struct store *st)
{
	return ((const struct store_nats *)st)->durable;
}

static void on_message(void *ctx, const char *suffix, natsMsg *m)
{
	struct store_nats *s = ctx;
	char *end;
	if (suffix[0] == 'a' && suffix[1] == '.') {
		uint64_t id = strtoull(suffix + 2, &end, 10);
		unsigned attempt = *end == '.' ? (unsigned)strtoul(end + 1, NULL,
		                                                   10) : 0;
		on_puback(s, id, attempt, m);
	} else if (suffix[0] == 'r' && suffix[1] == '.') {
		on_api_reply(s, strtoull(suffix + 2, NULL, 10), m);
	} else if (suffix[0] == 'd' && suffix[1] == '.') {
		on_delivery(s, (unsigned)strtoul(suffix + 2, NULL, 10), m);
	}
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
	api_timeouts(s);
	for (struct pub *p = s->head; p; p = p->next)
		if (p->fate == PUB_WAITING && now - p->sent_at >= ACK_WAIT_MS)
			p->fate = PUB_LOST;
	settle(s);
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
	if (s->state == NS_ACTIVE && !s->head &&
	    now - s->sent_at >= s->conf->failover_timeout / 3)
		pub(s, "beat", NULL, NULL, 0);
}

static int nats_check(struct store *st)
{
	struct store_nats *s = (struct store_nats *)st;
	natsconn_poll(s->nc);
	if (s->state != NS_FAILED)
		settle(s);
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
	flush_waiting(s);   /* the tail's records land before the snapshot */
	buf_add(&image, tail, tail_len);
	unsigned n = (unsigned)((image.len + CHUNK_BYTES - 1) / CHUNK_BYTES);
	for (unsigned i = 0; i < n; i++) {
		size_t off = (size_t)i * CHUNK_BYTES;
		size_t len = image.len - off < CHUNK_BYTES ? image.len - off :
		             CHUNK_BYTES;
		char part[24];
		snprintf(part, sizeof part, "%u/%u", i + 1, n);
		struct pub *p = pub(s, "snap", part, image.p + off, len);
		if (i == 0)
			s->purge_seq = p->expect + 1;
		if (i == n - 1)
			s->purge_id = p->id;
	}
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
		flush_waiting(s);
		pub(s, "resign", NULL, NULL, 0);
		uint64_t until = now_ms() + ACK_WAIT_MS;
		while (s->head && !s->error && now_ms() < until) {
			natsconn_poll(s->nc);
			settle(s);
			usleep(2000);
		}
		if (s->head)
			log_warning("journal: stream %s: appends not acknowledged at "
			            "the stop; their replies were never sent",
			            s->conf->stream);
	}
	drop_consumer(s);
	if (s->tick)
		event_free(s->tick);
	natsconn_close(s->nc);
	free_pubs(s);
	buf_free(&s->waiting);
	buf_free(&s->image);
	buf_free(&s->plain);
	ZSTD_freeCCtx(s->zc);
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
	s->zc = ZSTD_createCCtx();
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
	new_term(s);
	s->nc = natsconn_open(base, conf, &h, err, errlen);
	if (!s->nc) {
		ZSTD_freeCCtx(s->zc);
		ZSTD_freeDCtx(s->zd);
		free(s->header);
		free(s->snap_path);
		free(s);
		return NULL;
	}
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
	uint64_t inflight = 0;
	for (const struct pub *p = s->head; p; p = p->next)
		inflight++;
	*position = s->last_seq;
	*lag = s->state == NS_ACTIVE ? inflight : s->lag;
	*takeovers = s->takeovers;
}

bool store_nats_failed(const struct store *st)
{
	return ((const struct store_nats *)st)->state == NS_FAILED;
}
