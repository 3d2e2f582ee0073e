/*
 * request.c - decoding a frame and checking a request's fields
 * (see request.h).
 */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "jobject.h"
#include "jscan.h"
#include "request.h"
#include "utf8.h"
#include "utf8_simd.h"
#include "xalloc.h"

static const char *const op_names[OP_NOPS] = {
	[OP_PUT] = "put",
	[OP_GET] = "get",
	[OP_TASK_DONE] = "task_done",
	[OP_RELEASE] = "release",
	[OP_JOIN] = "join",
	[OP_QSIZE] = "qsize",
	[OP_EMPTY] = "empty",
	[OP_FULL] = "full",
	[OP_PING] = "ping",
	[OP_STATS] = "stats",
	[OP_AUTH] = "auth",
	[OP_DECLARE] = "declare",
	[OP_PURGE] = "purge",
	[OP_DELETE] = "delete",
};

/* The keys of the fields joinqd knows, by enum request_field. */
static const char *const field_names[RF_COUNT] = {
	[RF_OP] = "op",
	[RF_QUEUE] = "queue",
	[RF_ID] = "id",
	[RF_TOKEN] = "token",
	[RF_NOREPLY] = "noreply",
	[RF_BLOCK] = "block",
	[RF_TIMEOUT] = "timeout",
	[RF_LEASE] = "lease",
	[RF_DELAY] = "delay",
	[RF_TASK] = "task",
	[RF_ITEM] = "item",
	[RF_MAXSIZE] = "maxsize",
	[RF_MAX_DELIVERIES] = "max_deliveries",
	[RF_DEAD_LETTER] = "dead_letter",
};

const char *op_name(enum jq_op op)
{
	return (unsigned)op < OP_NOPS ? op_names[op] : "?";
}

int errinfo_set(struct errinfo *e, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	/* cppcheck-suppress ctuuninitvar ; e->message is written, not read */
	vsnprintf(e->message, sizeof e->message, fmt, ap);
	va_end(ap);
	e->code = code;
	return code;
}

/* t without whitespace outside strings; a copy in *owned only if needed. */
static struct jtext compact(struct jtext t, char **owned)
{
	if (!t.p || (t.p[0] != '{' && t.p[0] != '[') || !jtext_spaced(t.p, t.len))
		return t;   /* a string, number or literal is one token */
	char *out = *owned = xmalloc(t.len);
	return (struct jtext){ out, jtext_compact(t.p, t.len, out) };
}

/* The field an integer beyond int64 (JK_BIGINT) may not be in: one joinqd
 * reads.  The id and the item are kept as text; other fields are
 * ignored.  RF_COUNT if there is none. */
static enum request_field big_integer_read(const struct request *r)
{
	for (int k = 0; k < RF_COUNT; k++)
		if (r->field[k].kind == JK_BIGINT && k != RF_ID && k != RF_ITEM)
			return (enum request_field)k;
	return RF_COUNT;
}

/* What both paths do last: the id and item compacted, noreply read. */
static void finish_decode(struct request *r)
{
	r->id = compact(r->field[RF_ID].text, &r->owned[0]);
	r->item = compact(r->field[RF_ITEM].text, &r->owned[1]);
	r->noreply = r->field[RF_NOREPLY].kind == JK_TRUE;
}

/* What request_decode() sets: all of r up to what request_check() sets. */
static void clear_decoded(struct request *r)
{
	memset(r, 0, offsetof(struct request, op));
}

/* The same but for the fields, which the scanner writes whole. */
static void clear_decoded_but_fields(struct request *r)
{
	memset(&r->id, 0, offsetof(struct request, op) -
	                  offsetof(struct request, id));
}

/* The fast path but for finish_decode(), on any bytes; *ascii as
 * jscan_object_ascii() says. */
static enum jscan_verdict scan_fast(const char *frame, size_t len,
                                    unsigned max_depth, struct request *r,
                                    bool *ascii)
{
	clear_decoded_but_fields(r);
	enum jscan_verdict v = jscan_object_ascii(frame, len, max_depth,
	                                          field_names, RF_COUNT,
	                                          r->field, ascii);
	if (v == JSCAN_OK && big_integer_read(r) != RF_COUNT)
		v = JSCAN_INVALID;      /* the slow path says why */
	if (v != JSCAN_OK)
		memset(r->field, 0, sizeof r->field);
	return v;
}

enum jscan_verdict request_decode_fast(const char *frame, size_t len,
                                       unsigned max_depth, struct request *r)
{
	bool ascii;
	enum jscan_verdict v = scan_fast(frame, len, max_depth, r, &ascii);
	if (v == JSCAN_OK)
		finish_decode(r);
	return v;
}

int request_decode_slow(const char *frame, size_t len, unsigned max_depth,
                        struct request *r, struct errinfo *e)
{
	char why[sizeof e->message - 16];

	clear_decoded(r);
	int code = jobject_slow(frame, len, max_depth, false, field_names,
	                        RF_COUNT, r->field, why, sizeof why);
	if (code == JQ_ERR_NOMEM)
		xalloc_failed();        /* the daemon's way with out-of-memory */
	if (code == JQ_OK) {
		enum request_field k = big_integer_read(r);
		if (k == RF_COUNT) {
			finish_decode(r);
			return JQ_OK;
		}
		code = JQ_BAD_JSON;
		snprintf(why, sizeof why, "holds an integer beyond 64 bits in "
		         "field '%s': only an id or an item may", field_names[k]);
	}
	memset(r->field, 0, sizeof r->field);
	return errinfo_set(e, code, "the frame %s", why);
}

int request_decode(const char *frame, size_t len, unsigned max_depth,
                   struct request *r, struct errinfo *e)
{
	bool ascii;
	enum jscan_verdict v = scan_fast(frame, len, max_depth, r, &ascii);
	bool valid = ascii && v == JSCAN_OK;    /* taken, ASCII: valid */

	if (!valid)
		valid = utf8_valid_simd(frame, len);
	if (v == JSCAN_OK && valid) {
		finish_decode(r);
		return JQ_OK;
	}
	if (!valid) {
		size_t bad = 0;
		utf8_valid(frame, len, &bad);   /* where, for the message */
		clear_decoded(r);
		return errinfo_set(e, JQ_BAD_UTF8,
		                   "the frame is not valid UTF-8 (byte %zu)", bad);
	}
	/* Invalid frames go the slow way too, for jansson's error text. */
	return request_decode_slow(frame, len, max_depth, r, e);
}

void request_free(struct request *r)
{
	free(r->owned[0]);
	free(r->owned[1]);
	r->owned[0] = r->owned[1] = NULL;
}

size_t request_string(const struct jfield *f, char *buf, size_t cap,
                      const char **s)
{
	const char *body = f->text.p + 1;
	size_t len = f->text.len - 2;

	if (!f->escaped) {
		*s = body;
		return len;
	}
	*s = buf;
	return jstring_unescape(body, len, buf, cap);
}

/* True if the string field f decodes to the ASCII word. */
static bool string_equals(const struct jfield *f, const char *word)
{
	char buf[16];
	const char *s;
	size_t n = request_string(f, buf, sizeof buf, &s);
	return n == strlen(word) && memcmp(s, word, n) == 0;
}

bool request_is_ping(const struct request *r)
{
	return r->field[RF_OP].kind == JK_STRING &&
	       string_equals(&r->field[RF_OP], "ping");
}

bool queue_name_valid(const char *name, size_t len)
{
	static const size_t suffix = sizeof QUEUE_DEAD_SUFFIX - 1;

	if (len == 0 || len > QUEUE_NAME_LIMIT)
		return false;
	if (len > QUEUE_NAME_MAX &&
	    memcmp(name + len - suffix, QUEUE_DEAD_SUFFIX, suffix) != 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '.' ||
		      c == ':' || c == '-'))
			return false;
	}
	return true;
}

/* An optional field: absent and JSON null both give NULL. */
static const struct jfield *field(const struct request *r,
                                  enum request_field k)
{
	return jfield_present(&r->field[k]) ? &r->field[k] : NULL;
}

static int get_bool(const struct request *r, enum request_field k, bool *out,
                    struct errinfo *e)
{
	const struct jfield *v = field(r, k);
	if (!v)
		return JQ_OK;
	if (v->kind != JK_TRUE && v->kind != JK_FALSE)
		return errinfo_set(e, JQ_BAD_REQUEST,
		                   "field '%s' must be true or false",
		                   field_names[k]);
	*out = v->kind == JK_TRUE;
	return JQ_OK;
}

/* A number of seconds: >= 0, or > 0 when positive is set; capped at
 * JQ_SECONDS_MAX.  Leaves *out alone when the field is absent. */
static int get_seconds(const struct request *r, enum request_field k,
                       bool positive, double *out, struct errinfo *e)
{
	const struct jfield *v = field(r, k);
	if (!v)
		return JQ_OK;
	double s = v->kind == JK_INT ? (double)v->integer :
	           v->kind == JK_REAL ? v->real : NAN;
	if (!(positive ? s > 0 : s >= 0))
		return errinfo_set(e, JQ_BAD_REQUEST,
		                   "field '%s' must be a number of seconds %s 0",
		                   field_names[k], positive ? ">" : ">=");
	*out = s > JQ_SECONDS_MAX ? JQ_SECONDS_MAX : s;
	return JQ_OK;
}

static int get_task(const struct request *r, uint64_t *out, struct errinfo *e)
{
	const struct jfield *v = field(r, RF_TASK);
	if (!v)
		return errinfo_set(e, JQ_BAD_REQUEST,
		                   "field 'task' is required for %s", op_name(r->op));
	if (v->kind != JK_INT || v->integer <= 0)
		return errinfo_set(e, JQ_BAD_REQUEST,
		                   "field 'task' must be a positive integer");
	*out = (uint64_t)v->integer;
	return JQ_OK;
}

static int check_op(struct request *r, struct errinfo *e)
{
	const struct jfield *op = &r->field[RF_OP];
	if (op->kind == JK_ABSENT)
		return errinfo_set(e, JQ_BAD_REQUEST, "field 'op' is required");
	if (op->kind != JK_STRING)
		return errinfo_set(e, JQ_BAD_REQUEST, "field 'op' must be a string");
	for (int i = 0; i < OP_NOPS; i++)
		if (string_equals(op, op_names[i])) {
			r->op = (enum jq_op)i;
			return JQ_OK;
		}
	return errinfo_set(e, JQ_UNKNOWN_OP,
	                   "field 'op' names no op of protocol 1 (put, get, "
	                   "task_done, release, join, qsize, empty, full, ping, "
	                   "stats, auth, declare, purge, delete)");
}

/* The queue name in field k (a string), decoded into buf (QUEUE_NAME_LIMIT
 * + 1 bytes) and NUL-terminated: its length, or bad_queue. */
static int get_name(const struct request *r, enum request_field k, char *buf,
                    size_t *len, struct errinfo *e)
{
	const struct jfield *f = &r->field[k];
	const char *name = NULL;
	size_t n = f->kind != JK_STRING ? SIZE_MAX :
	           request_string(f, buf, QUEUE_NAME_LIMIT, &name);
	if (n == SIZE_MAX || !queue_name_valid(name, n))
		return errinfo_set(e, JQ_BAD_QUEUE,
		                   "field '%s' must be 1 to %d bytes of "
		                   "A-Z a-z 0-9 _ . : - (up to %d ending in .dead)",
		                   field_names[k], QUEUE_NAME_MAX, QUEUE_NAME_LIMIT);
	if (name != buf)
		memcpy(buf, name, n);
	buf[n] = '\0';
	*len = n;
	return JQ_OK;
}

static int check_queue(struct request *r, struct errinfo *e)
{
	if (!field(r, RF_QUEUE)) {
		r->queue = DEFAULT_QUEUE;
		r->queue_len = sizeof DEFAULT_QUEUE - 1;
		return JQ_OK;
	}
	r->queue = r->queue_name;
	return get_name(r, RF_QUEUE, r->queue_name, &r->queue_len, e);
}

/* An optional whole number: a JSON integer from 0 to max. */
static int get_count(const struct request *r, enum request_field k,
                     uint64_t max, bool *has, uint64_t *out,
                     struct errinfo *e)
{
	const struct jfield *v = field(r, k);
	if (!v)
		return JQ_OK;
	if (v->kind != JK_INT || v->integer < 0 || (uint64_t)v->integer > max)
		return errinfo_set(e, JQ_BAD_REQUEST, max < INT64_MAX ?
		                   "field '%s' must be an integer from 0 to %llu" :
		                   "field '%s' must be an integer >= 0",
		                   field_names[k], (unsigned long long)max);
	*has = true;
	*out = (uint64_t)v->integer;
	return JQ_OK;
}

/* declare's settings, in the order PROTOCOL.md names them; a dead_letter
 * string that is not a queue name is bad_queue, as for queue. */
static int check_declare(struct request *r, struct errinfo *e)
{
	int rc;
	size_t len = 0;
	if ((rc = get_count(r, RF_MAXSIZE, INT64_MAX, &r->has_maxsize,
	                    &r->maxsize, e)) ||
	    (rc = get_count(r, RF_MAX_DELIVERIES, UINT32_MAX,
	                    &r->has_max_deliveries, &r->max_deliveries, e)))
		return rc;
	const struct jfield *dl = field(r, RF_DEAD_LETTER);
	if (dl) {
		if (dl->kind != JK_STRING)
			return errinfo_set(e, JQ_BAD_REQUEST, "field 'dead_letter' "
			                   "must be a queue name (a string)");
		if ((rc = get_name(r, RF_DEAD_LETTER, r->dead_letter_name, &len,
		                   e)))
			return rc;
		r->dead_letter = r->dead_letter_name;
		/* As in the configuration: a letter would come back forever. */
		if (len == r->queue_len && !memcmp(r->dead_letter, r->queue, len))
			return errinfo_set(e, JQ_BAD_REQUEST, "field 'dead_letter' "
			                   "names the queue itself");
	} else if (r->max_deliveries &&
	           r->queue_len + strlen(QUEUE_DEAD_SUFFIX) > QUEUE_NAME_LIMIT) {
		return errinfo_set(e, JQ_BAD_REQUEST, "a queue name this long has "
		                   "no NAME.dead: with max_deliveries, field "
		                   "'dead_letter' is required");
	}
	return JQ_OK;
}

int request_check(struct request *r, struct errinfo *e)
{
	int rc;

	/* All it sets but the name buffers, which are written before they
	 * are pointed to; one by one, as a memset of these hundred bytes is
	 * a rep stos, slower than the rest of the check on some CPUs. */
	r->op = OP_PUT;
	r->queue = r->dead_letter = NULL;
	r->queue_len = 0;
	r->block = true;
	r->timeout = -1;
	r->lease = r->delay = 0;
	r->task = r->maxsize = r->max_deliveries = 0;
	r->has_maxsize = r->has_max_deliveries = false;
	if ((rc = check_op(r, e)) || (rc = check_queue(r, e)))
		return rc;
	const struct jfield *noreply = field(r, RF_NOREPLY);
	if (noreply && noreply->kind != JK_TRUE && noreply->kind != JK_FALSE)
		return errinfo_set(e, JQ_BAD_REQUEST,
		                   "field 'noreply' must be true or false");

	switch (r->op) {
	case OP_PUT:
		if (!r->item.p)
			return errinfo_set(e, JQ_BAD_REQUEST,
			                   "field 'item' is required for put");
		break;
	case OP_GET:
		if (r->noreply)
			return errinfo_set(e, JQ_BAD_REQUEST,
			                   "get cannot be noreply: the item would be lost");
		if ((rc = get_seconds(r, RF_LEASE, true, &r->lease, e)))
			return rc;
		break;
	case OP_JOIN:
		break;
	case OP_TASK_DONE:
		return get_task(r, &r->task, e);
	case OP_RELEASE:
		if ((rc = get_task(r, &r->task, e)))
			return rc;
		return get_seconds(r, RF_DELAY, false, &r->delay, e);
	case OP_DECLARE:
		return check_declare(r, e);
	default:
		return JQ_OK;
	}
	/* The blocking ops: put, get and join. */
	if ((rc = get_bool(r, RF_BLOCK, &r->block, e)))
		return rc;
	return get_seconds(r, RF_TIMEOUT, false, &r->timeout, e);
}
