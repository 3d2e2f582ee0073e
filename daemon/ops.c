/*
 * ops.c - executing requests on the engine (see ops.h).
 *
 * The order of checks is PROTOCOL.md's: the frame, then authorisation,
 * then op, queue and fields (request_check), then the op itself.  Replies
 * that complete later are built in a buffer of their own, because a wake-up
 * happens in the middle of another client's request.
 */
#include <math.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "ops.h"
#include "reply.h"
#include "server.h"
#include "xalloc.h"

#define container_of(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

static msec_t to_ms(double seconds)
{
	return seconds < 0 ? NEVER : (msec_t)ceil(seconds * 1000);
}

/* ---- messages ----------------------------------------------------------- */

static void count_error(int code)
{
	if (code > 0 && code < JQ_NERR)
		server.errors[code]++;
}

/* The message of an error the engine returned. */
static const char *engine_message(int code)
{
	switch (code) {
	case JQ_TOO_MANY_QUEUES:
		return "creating this queue would pass max_queues";
	case JQ_FULL:
		return "the queue is full (it holds maxsize items)";
	case JQ_EMPTY:
		return "the queue is empty";
	case JQ_TIMEOUT:
		return "the queue still has unfinished tasks";
	case JQ_UNKNOWN_TASK:
		return "field 'task' names no task that is delivered and undone";
	case JQ_TOO_LARGE:
		return "the reply would not fit in one datagram (udp_max_reply)";
	case JQ_SHUTTING_DOWN:
		return "the daemon is shutting down";
	case JQ_UNAVAILABLE:
		return "the daemon cannot take new tasks now";
	default:
		return "the request failed";
	}
}

void ops_error(struct buf *out, int code, const char *message)
{
	count_error(code);
	reply_error(out, NULL, code, message);
}

/* ---- authorisation ------------------------------------------------------ */

/* Compares in time that does not depend on where the token differs. */
static bool token_matches(const json_t *token)
{
	if (!json_is_string(token))
		return false;
	const unsigned char *s = (const unsigned char *)json_string_value(token);
	const unsigned char *want = (const unsigned char *)server.token;
	size_t n = json_string_length(token);
	unsigned diff = n != server.token_len;
	for (size_t i = 0; i < n; i++)
		diff |= s[i] ^ want[i % server.token_len];
	return diff == 0;
}

/*
 * With a token configured every op but ping needs it: a token field
 * authorises its own request (and a wrong one fails even on an authorised
 * connection); without one, the connection must have passed auth.
 */
static int authorize(const struct request *r, const struct client *c,
                     struct errinfo *e)
{
	if (!server.token || request_is_ping(r))
		return JQ_OK;
	if (r->token ? token_matches(r->token) : c->authorized && *c->authorized)
		return JQ_OK;
	return errinfo_set(e, JQ_UNAUTHORIZED, r->token ?
	                   "field 'token' does not match the daemon's token" :
	                   "this daemon needs a token: send auth first, or a "
	                   "'token' field");
}

/* ---- replies ------------------------------------------------------------ */

static size_t get_reply_len(bool has_id, size_t id_len, const struct delivery *d)
{
	return strlen("{\"ok\":true") +
	       (has_id ? strlen(",\"id\":") + id_len : 0) +
	       strlen(",\"item\":") + d->item_len +
	       strlen(",\"task\":") + u64_digits(d->task) +
	       strlen(",\"deliveries\":") + u64_digits(d->deliveries) +
	       strlen("}\n");
}

/* take.fits for UDP: the get reply must fit in one datagram. */
static bool reply_fits(void *ctx, const struct delivery *d)
{
	const struct pending *p = ctx;
	return get_reply_len(p->id.p != NULL, p->id.len, d) <= p->max_reply;
}

/*
 * UDP: the longest reply of an op that changes the queues (put, task_done,
 * release, join), judged before it runs so that a reply too large changes
 * nothing.  Only its one number is unknown, and is counted at its longest.
 */
static size_t change_reply_len(const struct request *r)
{
	size_t n = strlen("{\"ok\":true}\n") +
	           (r->id.p ? strlen(",\"id\":") + r->id.len : 0);
	if (r->op == OP_PUT)
		n += strlen(",\"task\":") + u64_digits(TASK_ID_MAX);
	else if (r->op == OP_TASK_DONE)
		n += strlen(",\"unfinished\":") + u64_digits(UINT64_MAX);
	return n;
}

/* UDP: the reply of an op that changed nothing is judged as built, from
 * start to the end of out; one too large is taken back. */
static int fits_built(struct buf *out, size_t start, const struct client *c,
                      struct errinfo *e)
{
	size_t n = out->len - start;
	if (!c->max_reply || n <= c->max_reply)
		return JQ_OK;
	out->len = start;
	return errinfo_set(e, JQ_TOO_LARGE, "the reply (%zu bytes) would not fit "
	                   "in one datagram (udp_max_reply %zu); ask over TCP",
	                   n, c->max_reply);
}

static void get_reply(struct buf *b, const struct jtext *id,
                      const struct delivery *d)
{
	reply_ok(b, id);
	reply_raw(b, "item", d->item, d->item_len);
	reply_u64(b, "task", d->task);
	reply_u64(b, "deliveries", d->deliveries);
	reply_end(b);
}

static void queue_figures(struct buf *b, const struct queue_stats *s)
{
	buf_adds(b, "{\"qsize\":");
	buf_add_u64(b, s->qsize);
	reply_u64(b, "maxsize", s->maxsize);
	reply_u64(b, "unfinished", s->unfinished);
	reply_u64(b, "inflight", s->inflight);
	reply_u64(b, "delayed", s->delayed);
	reply_u64(b, "puts", s->puts);
	reply_u64(b, "gets", s->gets);
	reply_u64(b, "task_dones", s->task_dones);
	reply_u64(b, "releases", s->releases);
	reply_u64(b, "redeliveries", s->redeliveries);
	reply_u64(b, "dead_lettered", s->dead_lettered);
	reply_u64(b, "waiting_puts", s->waiting_puts);
	reply_u64(b, "waiting_gets", s->waiting_gets);
	reply_u64(b, "waiting_joins", s->waiting_joins);
	buf_addc(b, '}');
}

static void stats_reply(struct buf *b, const struct jtext *id)
{
	struct queue_stats s;

	reply_ok(b, id);
	reply_str(b, "version", PACKAGE_VERSION);
	reply_u64(b, "uptime", (uint64_t)(time(NULL) - server.started));
	reply_u64(b, "connections", server.nconns);
	buf_adds(b, ",\"queues\":{");
	for (struct queue *q = engine_next_queue(server.engine, NULL); q;
	     q = engine_next_queue(server.engine, q)) {
		const char *name = queue_name(q);
		if (b->p[b->len - 1] != '{')
			buf_addc(b, ',');
		json_append_string(b, name, strlen(name));
		buf_addc(b, ':');
		engine_queue_stats(server.engine, q, NULL, 0, &s);
		queue_figures(b, &s);
	}
	buf_addc(b, '}');
	reply_end(b);
}

/* ---- ops ---------------------------------------------------------------- */

static void pending_done(struct waiter *w, int code, const struct delivery *d,
                         uint64_t task)
{
	struct pending *p = container_of(w, struct pending, w);
	struct buf *b = &server.wake_buf;

	buf_reset(b);
	if (code != JQ_OK) {
		count_error(code);
		reply_error(b, &p->id, code, engine_message(code));
	} else if (p->op == OP_GET) {
		get_reply(b, &p->id, d);
	} else {
		reply_ok(b, &p->id);
		if (p->op == OP_PUT)
			reply_u64(b, "task", task);
		reply_end(b);
	}
	free(p->id_copy);
	p->id_copy = NULL;
	p->finish(p, p->noreply ? NULL : b);
}

static int run(struct request *r, struct client *c, struct pending *p,
               struct buf *out, struct errinfo *e)
{
	struct engine *eng = server.engine;
	struct queue *q = NULL;
	struct queue_stats s;
	size_t start = out->len;
	uint64_t n;
	int code;

	p->op = r->op;
	p->id = r->id;
	p->noreply = r->noreply;
	p->max_reply = c->max_reply;
	p->w.timeout = to_ms(r->timeout);
	p->w.done = pending_done;
	struct waiter *w = r->block && r->timeout != 0 && !c->nonblocking &&
	                   !server.shutting_down ? &p->w : NULL;

	bool changes = r->op == OP_PUT || r->op == OP_TASK_DONE ||
	               r->op == OP_RELEASE || r->op == OP_JOIN;
	if (c->max_reply && changes &&
	    change_reply_len(r) > c->max_reply)
		return errinfo_set(e, JQ_TOO_LARGE, "the reply would not fit in one "
		                   "datagram: field 'id' is too long for "
		                   "udp_max_reply (%zu)", c->max_reply);

	switch (r->op) {
	case OP_PUT:
		if ((code = engine_queue(eng, r->queue, r->queue_len, true, &q)))
			break;
		code = engine_put(eng, q, r->item.p, r->item.len, w, &n);
		if (code == JQ_OK) {
			reply_ok(out, &r->id);
			reply_u64(out, "task", n);
			reply_end(out);
		}
		break;
	case OP_GET: {
		struct take tk = {
			.holder = c->holder,
			.lease = r->lease > 0 ? to_ms(r->lease) : c->default_lease,
			.fits = c->max_reply ? reply_fits : NULL,
			.ctx = p,
		};
		struct delivery d;
		if ((code = engine_queue(eng, r->queue, r->queue_len, true, &q)))
			break;
		code = engine_get(eng, q, &tk, w, &d);
		if (code == JQ_OK)
			get_reply(out, &r->id, &d);
		break;
	}
	case OP_TASK_DONE:
		code = engine_task_done(eng, r->task, &n);
		if (code == JQ_OK) {
			reply_ok(out, &r->id);
			reply_u64(out, "unfinished", n);
			reply_end(out);
		}
		break;
	case OP_RELEASE:
		code = engine_release(eng, r->task, to_ms(r->delay));
		if (code == JQ_OK) {
			reply_ok(out, &r->id);
			reply_end(out);
		}
		break;
	case OP_JOIN:
		engine_queue(eng, r->queue, r->queue_len, false, &q);
		code = engine_join(eng, q, w);
		if (code == JQ_OK) {
			reply_ok(out, &r->id);
			reply_end(out);
		}
		break;
	case OP_QSIZE:
	case OP_EMPTY:
	case OP_FULL:
		engine_queue(eng, r->queue, r->queue_len, false, &q);
		engine_queue_stats(eng, q, r->queue, r->queue_len, &s);
		bool empty = s.qsize == 0, full = s.maxsize && s.qsize >= s.maxsize;
		reply_ok(out, &r->id);
		if (r->op == OP_QSIZE) {
			reply_u64(out, "qsize", s.qsize);
			reply_u64(out, "maxsize", s.maxsize);
			reply_u64(out, "unfinished", s.unfinished);
			reply_u64(out, "inflight", s.inflight);
			reply_u64(out, "delayed", s.delayed);
		}
		if (r->op != OP_FULL)
			reply_bool(out, "empty", empty);
		if (r->op != OP_EMPTY)
			reply_bool(out, "full", full);
		reply_end(out);
		return fits_built(out, start, c, e);
	case OP_PING:
		reply_ok(out, &r->id);
		reply_str(out, "version", PACKAGE_VERSION);
		reply_u64(out, "protocol", 1);
		reply_end(out);
		return fits_built(out, start, c, e);
	case OP_STATS:
		stats_reply(out, &r->id);
		return fits_built(out, start, c, e);
	case OP_AUTH:
		if (server.token && !r->token)
			return errinfo_set(e, JQ_UNAUTHORIZED,
			                   "field 'token' is required for auth");
		reply_ok(out, &r->id);
		reply_end(out);
		if ((code = fits_built(out, start, c, e)))
			return code;
		if (server.token && c->authorized)
			*c->authorized = true;   /* the token was checked already */
		return JQ_OK;
	default:
		return errinfo_set(e, JQ_UNKNOWN_OP, "unknown op");
	}
	if (code > 0)
		errinfo_set(e, code, "%s", engine_message(code));
	return code;
}

enum exec_status ops_execute(const char *frame, size_t len, struct client *c,
                             struct pending *p, struct buf *out)
{
	struct request r;
	struct errinfo e;
	size_t start = out->len;
	int code;

	code = request_decode(frame, len, server.cfg.max_depth, &r, &e);
	if (code == JQ_OK && (code = authorize(&r, c, &e)) == JQ_OK &&
	    (code = request_check(&r, &e)) == JQ_OK) {
		if (server.shutting_down)   /* UDP datagrams of the last moments */
			code = errinfo_set(&e, JQ_SHUTTING_DOWN, "%s",
			                   engine_message(JQ_SHUTTING_DOWN));
		else
			code = run(&r, c, p, out, &e);
	}
	if (r.noreply)
		out->len = start;

	if (code == JQ_PARKED) {
		if (p->id.p) {   /* the frame goes; the reply echoes the id later */
			p->id_copy = xmalloc(p->id.len);
			memcpy(p->id_copy, p->id.p, p->id.len);
			p->id.p = p->id_copy;
		}
		request_free(&r);
		return EXEC_PARKED;
	}
	if (code != JQ_OK) {
		count_error(code);
		log_debug("%s: %s: %s", c->peer, jq_errname(code), e.message);
		if (!r.noreply)
			reply_error(out, &r.id, code, e.message);
	}
	request_free(&r);
	return EXEC_DONE;
}

void ops_expire(struct pending *p)
{
	engine_expire(server.engine, &p->w);
}

void ops_cancel(struct pending *p)
{
	engine_cancel(server.engine, &p->w);
	free(p->id_copy);
	p->id_copy = NULL;
}
