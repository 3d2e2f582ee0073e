/*
 * request.c - decoding a frame and checking a request's fields
 * (see request.h).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "jscan.h"
#include "request.h"
#include "utf8.h"
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

/*
 * True if the JSON text nests deeper than max: brackets outside strings,
 * the outermost object counting as depth 1.  Runs before jansson so that
 * the configurable limit holds and jansson never recurses deeply.
 */
static bool too_deep(const char *p, size_t len, unsigned max)
{
	unsigned depth = 0;
	bool in_string = false;

	for (size_t i = 0; i < len; i++) {
		char c = p[i];
		if (in_string) {
			if (c == '\\')
				i++;            /* skip the escaped character */
			else if (c == '"')
				in_string = false;
		} else if (c == '"') {
			in_string = true;
		} else if (c == '{' || c == '[') {
			if (++depth > max)
				return true;
		} else if ((c == '}' || c == ']') && depth > 0) {
			depth--;
		}
	}
	return false;
}

/* ---- the JSON text of members ------------------------------------------ *
 * These run on frames jansson has accepted, so they need not check syntax. */

static size_t skip_ws(const char *p, size_t i, size_t n)
{
	while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' ||
	                 p[i] == '\n'))
		i++;
	return i;
}

/* p[i] is the opening quote: the index after the closing one. */
static size_t skip_string(const char *p, size_t i, size_t n)
{
	for (i++; i < n && p[i] != '"'; i++)
		if (p[i] == '\\')
			i++;
	return i + 1;
}

/* The index after the value that starts at p[i]. */
static size_t skip_value(const char *p, size_t i, size_t n)
{
	if (p[i] == '"')
		return skip_string(p, i, n);
	if (p[i] != '{' && p[i] != '[') {
		while (i < n && p[i] != ',' && p[i] != '}' && p[i] != ']' &&
		       p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n')
			i++;
		return i;
	}
	for (unsigned depth = 0; i < n;) {
		if (p[i] == '"') {
			i = skip_string(p, i, n);
			continue;
		}
		if (p[i] == '{' || p[i] == '[')
			depth++;
		else if ((p[i] == '}' || p[i] == ']') && --depth == 0)
			return i + 1;
		i++;
	}
	return n;
}

static unsigned hex4(const char *p)
{
	unsigned v = 0;
	for (int k = 0; k < 4; k++) {
		char c = p[k];
		v = v * 16 + (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
	}
	return v;
}

/* True if the JSON string p[0..n), quotes included, decodes to the ASCII
 * word: escapes count as the characters they stand for. */
static bool string_is(const char *p, size_t n, const char *word)
{
	static const char unescape[128] = {
		['"'] = '"', ['\\'] = '\\', ['/'] = '/', ['b'] = '\b',
		['f'] = '\f', ['n'] = '\n', ['r'] = '\r', ['t'] = '\t',
	};
	size_t k = 0;

	for (size_t i = 1; i + 1 < n; i++) {
		unsigned c = (unsigned char)p[i];
		if (c == '\\') {
			char e = p[++i];
			if (e == 'u') {
				c = hex4(p + i + 1);
				i += 4;
			} else {
				c = (unsigned char)unescape[e & 127];
			}
		}
		if (c >= 0x80 || word[k] == '\0' || word[k] != (char)c)
			return false;
		k++;
	}
	return word[k] == '\0';
}

/* The texts of the object's members that joinqd knows, by enum
 * request_field; the last of duplicate keys wins, as in jansson. */
static void find_members(const char *p, size_t n, struct jtext text[RF_COUNT])
{
	size_t i = skip_ws(p, 0, n);
	if (i >= n || p[i] != '{')
		return;
	for (i = skip_ws(p, i + 1, n); i < n && p[i] == '"';) {
		size_t key = i;
		i = skip_string(p, i, n);
		size_t key_len = i - key;
		size_t value = skip_ws(p, skip_ws(p, i, n) + 1, n);  /* past ':' */
		i = skip_value(p, value, n);
		for (int k = 0; k < RF_COUNT; k++)
			if (string_is(p + key, key_len, field_names[k]))
				text[k] = (struct jtext){ p + value, i - value };
		i = skip_ws(p, i, n);
		if (i >= n || p[i] != ',')
			break;
		i = skip_ws(p, i + 1, n);
	}
}

/* t without whitespace outside strings; a copy in *owned only if needed. */
static struct jtext compact(struct jtext t, char **owned)
{
	size_t i = 0;
	if (!t.p || (t.p[0] != '{' && t.p[0] != '['))
		return t;   /* a string, number or literal is one token */
	while (i < t.len && t.p[i] != ' ' && t.p[i] != '\t' && t.p[i] != '\r' &&
	       t.p[i] != '\n')
		i = t.p[i] == '"' ? skip_string(t.p, i, t.len) : i + 1;
	if (!t.p || i >= t.len)
		return t;

	char *out = *owned = xmalloc(t.len);
	size_t n = 0;
	for (i = 0; i < t.len;) {
		if (t.p[i] == '"') {
			size_t end = skip_string(t.p, i, t.len);
			memcpy(out + n, t.p + i, end - i);
			n += end - i;
			i = end;
		} else {
			if (t.p[i] != ' ' && t.p[i] != '\t' && t.p[i] != '\r' &&
			    t.p[i] != '\n')
				out[n++] = t.p[i];
			i++;
		}
	}
	return (struct jtext){ out, n };
}

/*
 * jansson cannot hold an object key with a NUL in it, but PROTOCOL.md makes
 * "\u0000" data everywhere.  jansson only validates and reads the scalar
 * fields, and no field joinqd knows has a control character in its name, so
 * this copy of the frame, with every such escape in a key turned into
 * "\u0001", parses to the same request; the id and item are then taken from
 * the frame itself (find_members), keys and all.  Returns NULL if no key
 * holds "\u0000".
 */
static char *neuter_nul_keys(const char *p, size_t n)
{
	char *copy = NULL;

	for (size_t i = 0; i < n; i++) {
		if (p[i] != '"')
			continue;
		size_t start = i;
		i = skip_string(p, i, n);
		if (skip_ws(p, i, n) >= n || p[skip_ws(p, i, n)] != ':') {
			i--;
			continue;          /* a value, not a key */
		}
		for (size_t k = start + 1; k + 5 < i; k++) {
			if (p[k] != '\\')
				continue;
			if (memcmp(p + k + 1, "u0000", 5) == 0) {
				if (!copy) {
					copy = xmalloc(n);
					memcpy(copy, p, n);
				}
				copy[k + 5] = '1';
			}
			k++;               /* the escaped character */
		}
		i--;
	}
	return copy;
}

/* What both paths do last: the id and item compacted, noreply read. */
static void finish_decode(struct request *r)
{
	r->id = compact(r->field[RF_ID].text, &r->owned[0]);
	r->item = compact(r->field[RF_ITEM].text, &r->owned[1]);
	r->noreply = r->field[RF_NOREPLY].kind == JK_TRUE;
}

enum jscan_verdict request_decode_fast(const char *frame, size_t len,
                                       unsigned max_depth, struct request *r)
{
	memset(r, 0, sizeof *r);
	enum jscan_verdict v = jscan_object(frame, len, max_depth, field_names,
	                                    RF_COUNT, r->field);
	if (v != JSCAN_OK) {
		memset(r->field, 0, sizeof r->field);
		return v;
	}
	finish_decode(r);
	return JSCAN_OK;
}

/* A member as jansson read it, its text t found in the frame. */
static struct jfield field_of(const json_t *v, struct jtext t)
{
	struct jfield f = { .text = t };

	switch (json_typeof(v)) {
	case JSON_NULL:
		f.kind = JK_NULL;
		break;
	case JSON_FALSE:
		f.kind = JK_FALSE;
		break;
	case JSON_TRUE:
		f.kind = JK_TRUE;
		break;
	case JSON_INTEGER:
		f.kind = JK_INT;
		f.integer = json_integer_value(v);
		break;
	case JSON_REAL:
		f.kind = JK_REAL;
		f.real = json_real_value(v);
		break;
	case JSON_STRING:
		f.kind = JK_STRING;
		f.escaped = t.p && memchr(t.p, '\\', t.len) != NULL;
		break;
	default:
		f.kind = JK_OTHER;
		break;
	}
	return f;
}

int request_decode_slow(const char *frame, size_t len, unsigned max_depth,
                        struct request *r, struct errinfo *e)
{
	json_error_t jerr;

	memset(r, 0, sizeof *r);
	/* JSON has no raw NUL byte anywhere (in a string it is \u0000), but
	 * jansson lets one pass after a number or literal: it would then
	 * come back raw in an echoed id. */
	if (memchr(frame, '\0', len))
		return errinfo_set(e, JQ_BAD_JSON, "the frame is not valid JSON: "
		                   "a raw NUL byte (inside a string, write \\u0000)");
	if (too_deep(frame, len, max_depth))
		return errinfo_set(e, JQ_BAD_JSON,
		                   "the frame nests deeper than max_depth (%u)",
		                   max_depth);
	json_t *root = json_loadb(frame, len, JSON_ALLOW_NUL, &jerr);
	if (!root && json_error_code(&jerr) == json_error_null_byte_in_key) {
		char *copy = neuter_nul_keys(frame, len);
		if (copy) {
			root = json_loadb(copy, len, JSON_ALLOW_NUL, &jerr);
			free(copy);
		}
	}
	if (!root)
		return errinfo_set(e, JQ_BAD_JSON,
		                   "the frame is not valid JSON: %s at column %d",
		                   jerr.text, jerr.column);
	if (!json_is_object(root)) {
		json_decref(root);
		return errinfo_set(e, JQ_BAD_JSON, "the frame is not a JSON object");
	}
	struct jtext text[RF_COUNT] = { { 0 } };
	find_members(frame, len, text);
	for (int k = 0; k < RF_COUNT; k++) {
		json_t *v = json_object_get(root, field_names[k]);
		if (v)
			r->field[k] = field_of(v, text[k]);
	}
	json_decref(root);
	finish_decode(r);
	return JQ_OK;
}

int request_decode(const char *frame, size_t len, unsigned max_depth,
                   struct request *r, struct errinfo *e)
{
	size_t bad;

	if (!utf8_valid(frame, len, &bad)) {
		memset(r, 0, sizeof *r);   /* both decoders clear r themselves */
		return errinfo_set(e, JQ_BAD_UTF8,
		                   "the frame is not valid UTF-8 (byte %zu)", bad);
	}
	/* Invalid frames go the slow way too, for jansson's error text. */
	if (request_decode_fast(frame, len, max_depth, r) == JSCAN_OK)
		return JQ_OK;
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
	                   "stats, auth)");
}

static int check_queue(struct request *r, struct errinfo *e)
{
	const struct jfield *q = field(r, RF_QUEUE);
	if (!q) {
		r->queue = DEFAULT_QUEUE;
		r->queue_len = sizeof DEFAULT_QUEUE - 1;
		return JQ_OK;
	}
	const char *name = NULL;
	size_t len = q->kind != JK_STRING ? SIZE_MAX :
	             request_string(q, r->queue_name, QUEUE_NAME_LIMIT, &name);
	if (len == SIZE_MAX || !queue_name_valid(name, len))
		return errinfo_set(e, JQ_BAD_QUEUE,
		                   "field 'queue' must be 1 to %d bytes of "
		                   "A-Z a-z 0-9 _ . : - (up to %d ending in .dead)",
		                   QUEUE_NAME_MAX, QUEUE_NAME_LIMIT);
	if (name != r->queue_name)
		memcpy(r->queue_name, name, len);
	r->queue_name[len] = '\0';
	r->queue = r->queue_name;
	r->queue_len = len;
	return JQ_OK;
}

int request_check(struct request *r, struct errinfo *e)
{
	int rc;

	r->block = true;
	r->timeout = -1;
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
	default:
		return JQ_OK;
	}
	/* The blocking ops: put, get and join. */
	if ((rc = get_bool(r, RF_BLOCK, &r->block, e)))
		return rc;
	return get_seconds(r, RF_TIMEOUT, false, &r->timeout, e);
}
