/*
 * ops.c - executing requests on the engine (see ops.h).
 *
 * The order of checks is PROTOCOL.md's: the frame, then authorisation,
 * then op, queue and fields (request_check), then whether this daemon
 * takes requests at all (it is stopping, or it is not the active one: a
 * standby answers ping only), then the op itself.  Replies
 * that complete later are built in a buffer of their own, because a wake-up
 * happens in the middle of another client's request.
 */
#include <math.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

#include "conn.h"
#include "journal.h"
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
	case JQ_CONFLICT:
		return "the queue is not as the request needs it";
	default:
		return "the request failed";
	}
}

void ops_error(struct buf *out, int code, const char *message)
{
	count_error(code);
	reply_error(out, NULL, code, message);
}

/* ---- roles -------------------------------------------------------------- */

/* The role as the wire names it: PROTOCOL.md knows an active daemon and
 * standbys, and one still starting is a standby that has not caught up. */
static const char *wire_role(void)
{
	enum journal_role role = journal_role(server.journal);
	return journal_role_name(role == ROLE_STARTING ? ROLE_STANDBY : role);
}

/* Anything but ping on a daemon that is not active: unavailable, naming
 * the active daemon in *active when the stream has said which it is. */
static int refuse_standby(struct errinfo *e, const char **active)
{
	*active = journal_active_addr(server.journal);
	if (*active)
		return errinfo_set(e, JQ_UNAVAILABLE, "this daemon is a standby; "
		                   "the active daemon is %s", *active);
	return errinfo_set(e, JQ_UNAVAILABLE, "this daemon is a standby; the "
	                   "active daemon is not known yet");
}

/* ---- authorisation ------------------------------------------------------ */

/* Compares in time that does not depend on where the token differs.  A
 * token with escapes is decoded into a buffer just long enough for a match:
 * one that decodes longer than the daemon's token cannot match. */
static bool token_matches(const struct jfield *token)
{
	if (token->kind != JK_STRING)
		return false;
	char *decoded = token->escaped ? xmalloc(server.token_len) : NULL;
	const char *text;
	size_t n = request_string(token, decoded, server.token_len, &text);
	bool match = false;
	if (n != SIZE_MAX) {
		const unsigned char *s = (const unsigned char *)text;
		const unsigned char *want = (const unsigned char *)server.token;
		unsigned diff = n != server.token_len;
		for (size_t i = 0; i < n; i++)
			diff |= s[i] ^ want[i % server.token_len];
		match = diff == 0;
	}
	free(decoded);
	return match;
}

/*
 * With a token configured every op but ping needs it: a token field
 * authorises its own request (and a wrong one fails even on an authorised
 * connection); without one, the connection must have passed auth.
 */
static int authorize(const struct request *r, const struct client *c,
                     struct errinfo *e)
{
	const struct jfield *token = &r->field[RF_TOKEN];
	bool has_token = jfield_present(token);

	if (!server.token || request_is_ping(r))
		return JQ_OK;
	if (has_token ? token_matches(token) : c->authorized && *c->authorized)
		return JQ_OK;
	return errinfo_set(e, JQ_UNAUTHORIZED, has_token ?
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
 * UDP: the reply of an op that changes the queues (put, task_done, release,
 * join, purge, delete), judged before it runs so that a reply too large
 * changes nothing: a put's task id is the engine's next, a task_done's
 * count is its queue's less one, a purge's count its queue's qsize.  (A put
 * that waits takes its id later, perhaps one digit longer; that reply still
 * goes out.)  declare judges its own, op_declare.
 */
static size_t change_reply_len(const struct request *r)
{
	struct queue_stats s;
	size_t n = strlen("{\"ok\":true}\n") +
	           (r->id.p ? strlen(",\"id\":") + r->id.len : 0);

	if (r->op == OP_PURGE || r->op == OP_DELETE) {
		struct queue *named;
		engine_queue(server.engine, r->queue, r->queue_len, false, &named);
		engine_queue_stats(server.engine, named, r->queue, r->queue_len,
		                   &s);
		if (r->op == OP_PURGE)
			return n + strlen(",\"purged\":") + u64_digits(s.qsize);
		if (named && s.unfinished)
			return 0;   /* conflict: nothing changes */
		return n + strlen(",\"deleted\":") +
		       strlen(named ? "true" : "false");
	}
	if (r->op == OP_PUT) {
		n += strlen(",\"task\":") +
		     u64_digits(engine_next_task_id(server.engine));
	} else if (r->op == OP_TASK_DONE) {
		const struct queue *q = engine_task_queue(server.engine, r->task);
		if (!q)
			return 0;   /* unknown_task: nothing changes */
		engine_queue_stats(server.engine, q, NULL, 0, &s);
		n += strlen(",\"unfinished\":") + u64_digits(s.unfinished - 1);
	}
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

/* The settings of a queue, as declare answers them and stats shows them. */
static void settings_fields(struct buf *b, const struct queue_settings *s)
{
	reply_u64(b, "maxsize", s->maxsize);
	reply_u64(b, "max_deliveries", s->max_deliveries);
	if (s->dead_letter)
		reply_str(b, "dead_letter", s->dead_letter);
	else
		reply_raw(b, "dead_letter", "null", 4);
}

static void queue_figures(struct buf *b, const struct queue_stats *s,
                          const struct queue_settings *set)
{
	buf_adds(b, "{\"qsize\":");
	buf_add_u64(b, s->qsize);
	settings_fields(b, set);
	reply_u64(b, "unfinished", s->unfinished);
	reply_u64(b, "inflight", s->inflight);
	reply_u64(b, "delayed", s->delayed);
	reply_u64(b, "puts", s->puts);
	reply_u64(b, "gets", s->gets);
	reply_u64(b, "task_dones", s->task_dones);
	reply_u64(b, "releases", s->releases);
	reply_u64(b, "redeliveries", s->redeliveries);
	reply_u64(b, "dead_lettered", s->dead_lettered);
	reply_u64(b, "purged", s->purged);
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
	reply_str(b, "role", wire_role());
	reply_u64(b, "uptime", (uint64_t)(time(NULL) - server.started));
	reply_u64(b, "connections", conn_count());
	reply_u64(b, "udp_denied", server.udp_denied);
	if (server.journal) {
		struct journal_figures f;
		journal_figures(server.journal, &f);
		buf_adds(b, ",\"journal\":{\"store\":");
		json_append_string(b, f.store, strlen(f.store));
		reply_u64(b, "position", f.position);
		reply_u64(b, "lag", f.lag);
		reply_u64(b, "takeovers", f.takeovers);
		buf_addc(b, '}');
	}
	buf_adds(b, ",\"queues\":{");
	for (struct queue *q = engine_next_queue(server.engine, NULL); q;
	     q = engine_next_queue(server.engine, q)) {
		const char *name = queue_name(q);
		if (b->p[b->len - 1] != '{')
			buf_addc(b, ',');
		json_append_string(b, name, strlen(name));
		buf_addc(b, ':');
		engine_queue_stats(server.engine, q, NULL, 0, &s);
		struct queue_settings set = engine_queue_settings(server.engine, q);
		queue_figures(b, &s, &set);
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

/*
 * The ops.  Each gets the checked request and its client, writes its reply
 * to out, and returns JQ_OK, an error code with e filled, or JQ_PARKED when
 * it left p->w waiting (w is NULL when the request may not wait).
 */
struct call {
	struct request *r;
	struct client *c;
	struct pending *p;
	struct waiter *w;
	struct buf *out;
	struct errinfo *e;
};

/* An engine result: its message when it is an error. */
static int result(struct call *k, int code)
{
	if (code > 0)
		errinfo_set(k->e, code, "%s", engine_message(code));
	return code;
}

/* A change the journal cannot take now is refused before it is made. */
static int journal_room(struct call *k, size_t bytes, bool small)
{
	if (server.journal && journal_reserve(server.journal, bytes, small) < 0)
		return errinfo_set(k->e, JQ_UNAVAILABLE, "the journal cannot take "
		                   "this change now (the disk is full); nothing "
		                   "was changed");
	return JQ_OK;
}

static void ok_reply(struct call *k)
{
	reply_ok(k->out, &k->r->id);
	reply_end(k->out);
}

static int op_put(struct call *k)
{
	struct queue *q;
	uint64_t task;
	int code = journal_room(k, k->r->item.len + k->r->queue_len, false);
	if (code)
		return code;
	code = engine_queue(server.engine, k->r->queue, k->r->queue_len, true,
	                    &q);
	if (code == JQ_OK)
		code = engine_put(server.engine, q, k->r->item.p, k->r->item.len,
		                  k->w, &task);
	if (code == JQ_OK) {
		reply_ok(k->out, &k->r->id);
		reply_u64(k->out, "task", task);
		reply_end(k->out);
	}
	return result(k, code);
}

static int op_get(struct call *k)
{
	struct take tk = {
		.holder = k->c->holder,
		.lease = k->r->lease > 0 ? to_ms(k->r->lease) : k->c->default_lease,
		.fits = k->c->max_reply ? reply_fits : NULL,
		.ctx = k->p,
	};
	struct delivery d;
	struct queue *q;
	int code = journal_room(k, k->r->queue_len, true);
	if (code)
		return code;
	code = engine_queue(server.engine, k->r->queue, k->r->queue_len, true,
	                    &q);
	if (code == JQ_OK)
		code = engine_get(server.engine, q, &tk, k->w, &d);
	if (code == JQ_OK)
		get_reply(k->out, &k->r->id, &d);
	return result(k, code);
}

static int op_task_done(struct call *k)
{
	uint64_t left;
	int code = journal_room(k, 0, true);
	if (code)
		return code;
	code = engine_task_done(server.engine, k->r->task, &left);
	if (code == JQ_OK) {
		reply_ok(k->out, &k->r->id);
		reply_u64(k->out, "unfinished", left);
		reply_end(k->out);
	}
	return result(k, code);
}

static int op_release(struct call *k)
{
	int code = journal_room(k, 0, true);
	if (code)
		return code;
	code = engine_release(server.engine, k->r->task, to_ms(k->r->delay));
	if (code == JQ_OK)
		ok_reply(k);
	return result(k, code);
}

static int op_join(struct call *k)
{
	struct queue *q;
	engine_queue(server.engine, k->r->queue, k->r->queue_len, false, &q);
	int code = engine_join(server.engine, q, k->w);
	if (code == JQ_OK)
		ok_reply(k);
	return result(k, code);
}

/* qsize, empty and full: figures of a queue, which they never create. */
static int op_figures(struct call *k)
{
	const struct request *r = k->r;
	struct queue_stats s;
	struct queue *q;

	engine_queue(server.engine, r->queue, r->queue_len, false, &q);
	engine_queue_stats(server.engine, q, r->queue, r->queue_len, &s);
	reply_ok(k->out, &r->id);
	if (r->op == OP_QSIZE) {
		reply_u64(k->out, "qsize", s.qsize);
		reply_u64(k->out, "maxsize", s.maxsize);
		reply_u64(k->out, "unfinished", s.unfinished);
		reply_u64(k->out, "inflight", s.inflight);
		reply_u64(k->out, "delayed", s.delayed);
		reply_u64(k->out, "dead_lettered", s.dead_lettered);
	}
	if (r->op != OP_FULL)
		reply_bool(k->out, "empty", s.qsize == 0);
	if (r->op != OP_EMPTY)
		reply_bool(k->out, "full", s.maxsize && s.qsize >= s.maxsize);
	reply_end(k->out);
	return JQ_OK;
}

static void declare_reply(struct buf *b, const struct jtext *id,
                          const struct declare_result *d)
{
	reply_ok(b, id);
	reply_bool(b, "created", d->created);
	settings_fields(b, &d->settings);
	reply_end(b);
}

/* conflict names the setting, what the request asks and what it differs
 * from. */
static int declare_conflict(struct call *k, const struct declare_result *d)
{
	const struct request *r = k->r;
	const struct queue_settings *s = &d->settings;
	const char *where = d->configured ? "the configuration file sets" :
	                    "the queue has";
	const char *what = d->configured ? " for this queue" : "";

	if (!strcmp(d->conflict, "dead_letter"))
		return errinfo_set(k->e, JQ_CONFLICT, "field 'dead_letter' is not "
		                   "the dead-letter queue %s%s: %s", where, what,
		                   s->dead_letter ? s->dead_letter :
		                   "none (dropped)");
	bool maxsize = !strcmp(d->conflict, "maxsize");
	return errinfo_set(k->e, JQ_CONFLICT, "field '%s' is %llu, but %s %s "
	                   "%llu%s; nothing was changed", d->conflict,
	                   (unsigned long long)(maxsize ? r->maxsize :
	                                        r->max_deliveries),
	                   where, d->conflict,
	                   (unsigned long long)(maxsize ? s->maxsize :
	                                        s->max_deliveries), what);
}

/*
 * A declare is tried first without changing anything: one that would make
 * a queue needs room in the journal, and over UDP its reply must fit
 * before the queue is made.  The real one then does what the trial said.
 */
static int op_declare(struct call *k)
{
	const struct request *r = k->r;
	struct queue_conf want = {
		.name = (char *)r->queue,
		.has_maxsize = r->has_maxsize,
		.maxsize = r->maxsize,
		.has_max_deliveries = r->has_max_deliveries,
		.max_deliveries = (unsigned)r->max_deliveries,
		.dead_letter = (char *)r->dead_letter,
	};
	struct declare_result d;
	size_t start = k->out->len;

	int code = engine_declare(server.engine, &want, true, &d);
	if (code == JQ_CONFLICT)
		return declare_conflict(k, &d);
	if (code != JQ_OK)
		return result(k, code);
	if (d.created) {
		if ((code = journal_room(k, r->queue_len + QUEUE_NAME_LIMIT + 32,
		                         false)))
			return code;
		declare_reply(k->out, &r->id, &d);
		code = fits_built(k->out, start, k->c, k->e);
		k->out->len = start;
		if (code)
			return code;
		engine_declare(server.engine, &want, false, &d);
	}
	declare_reply(k->out, &r->id, &d);
	return JQ_OK;
}

static int op_purge(struct call *k)
{
	struct queue_stats s;
	struct queue *q;
	engine_queue(server.engine, k->r->queue, k->r->queue_len, false, &q);
	engine_queue_stats(server.engine, q, NULL, 0, &s);
	int code = s.qsize ? journal_room(k, 0, true) : JQ_OK;
	if (code)
		return code;
	uint64_t n = engine_purge(server.engine, q);
	reply_ok(k->out, &k->r->id);
	reply_u64(k->out, "purged", n);
	reply_end(k->out);
	return JQ_OK;
}

static int op_delete(struct call *k)
{
	struct queue_stats s;
	struct queue *q;
	engine_queue(server.engine, k->r->queue, k->r->queue_len, false, &q);
	if (q) {
		engine_queue_stats(server.engine, q, NULL, 0, &s);
		if (s.unfinished)
			return errinfo_set(k->e, JQ_CONFLICT, "the queue has %llu "
			                   "unfinished task%s; only a queue with none "
			                   "can be deleted", (unsigned long long)
			                   s.unfinished, s.unfinished == 1 ? "" : "s");
		int code = journal_room(k, 0, true);
		if (code)
			return code;
		engine_delete(server.engine, q);   /* answers its getters */
	}
	reply_ok(k->out, &k->r->id);
	reply_bool(k->out, "deleted", q != NULL);
	reply_end(k->out);
	return JQ_OK;
}

static int op_ping(struct call *k)
{
	reply_ok(k->out, &k->r->id);
	reply_str(k->out, "version", PACKAGE_VERSION);
	reply_u64(k->out, "protocol", 1);
	reply_str(k->out, "role", wire_role());
	reply_end(k->out);
	return JQ_OK;
}

static int op_stats(struct call *k)
{
	stats_reply(k->out, &k->r->id);
	return JQ_OK;
}

/* The token, if one is configured, was checked by authorize() already. */
static int op_auth(struct call *k)
{
	if (server.token && !jfield_present(&k->r->field[RF_TOKEN]))
		return errinfo_set(k->e, JQ_UNAUTHORIZED,
		                   "field 'token' is required for auth");
	ok_reply(k);
	return JQ_OK;
}

static int (*const op_table[OP_NOPS])(struct call *) = {
	[OP_PUT] = op_put,
	[OP_GET] = op_get,
	[OP_TASK_DONE] = op_task_done,
	[OP_RELEASE] = op_release,
	[OP_JOIN] = op_join,
	[OP_QSIZE] = op_figures,
	[OP_EMPTY] = op_figures,
	[OP_FULL] = op_figures,
	[OP_PING] = op_ping,
	[OP_STATS] = op_stats,
	[OP_AUTH] = op_auth,
	[OP_DECLARE] = op_declare,
	[OP_PURGE] = op_purge,
	[OP_DELETE] = op_delete,
};

/* Ops that change the queues, judged over UDP before they run (declare
 * judges itself: op_declare). */
static bool changes_queues(enum jq_op op)
{
	return op == OP_PUT || op == OP_TASK_DONE || op == OP_RELEASE ||
	       op == OP_JOIN || op == OP_PURGE || op == OP_DELETE;
}

static int run(struct request *r, struct client *c, struct pending *p,
               struct buf *out, struct errinfo *e)
{
	size_t start = out->len;

	p->op = r->op;
	p->id = r->id;
	p->noreply = r->noreply;
	p->max_reply = c->max_reply;
	p->w.timeout = to_ms(r->timeout);
	p->w.done = pending_done;

	struct call k = { r, c, p, NULL, out, e };
	if (r->block && r->timeout != 0 && !c->nonblocking)
		k.w = &p->w;

	if (c->max_reply && changes_queues(r->op) &&
	    change_reply_len(r) > c->max_reply)
		return errinfo_set(e, JQ_TOO_LARGE, "the reply would not fit in one "
		                   "datagram: field 'id' is too long for "
		                   "udp_max_reply (%zu)", c->max_reply);

	int code = op_table[r->op](&k);
	if (code == JQ_OK && !changes_queues(r->op) && r->op != OP_GET)
		code = fits_built(out, start, c, e);
	if (code == JQ_OK && r->op == OP_AUTH && server.token && c->authorized)
		*c->authorized = true;   /* only once its reply is sure to go */
	return code;
}

enum exec_status ops_execute(const char *frame, size_t len, struct client *c,
                             struct pending *p, struct buf *out)
{
	struct request r;
	struct errinfo e;
	size_t start = out->len;
	const char *active = NULL;   /* a standby's refusal names it */
	int code;

	code = request_decode(frame, len, server.cfg.max_depth, &r, &e);
	if (code == JQ_OK && (code = authorize(&r, c, &e)) == JQ_OK &&
	    (code = request_check(&r, &e)) == JQ_OK) {
		if (server.shutting_down)   /* what arrives while it stops */
			code = errinfo_set(&e, JQ_SHUTTING_DOWN, "%s",
			                   engine_message(JQ_SHUTTING_DOWN));
		else if (r.op != OP_PING &&
		         journal_role(server.journal) != ROLE_ACTIVE)
			code = refuse_standby(&e, &active);
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
		log_debug("%s: %s: %s", c->peer, errcode_name(code), e.message);
		if (!r.noreply) {
			reply_error_open(out, &r.id, code, e.message);
			if (active)
				reply_str(out, "active", active);
			reply_end(out);
		}
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
