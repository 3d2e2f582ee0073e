/*
 * fuzz_request.c - libFuzzer harness of the wire code (proto/): framing,
 * UTF-8 validation, request decoding and checking, reply building.
 *
 * The input is two settings bytes and then the bytes a client sends:
 *     byte 0   max_frame: 0 means 1 MiB (the default), else 1 to 255 bytes,
 *              so that frame_too_large is reached often;
 *     byte 1   max_depth: 1 + (byte & 63);
 *     rest     a TCP byte stream, cut into frames by frame_next() as
 *              daemon/conn.c does, and also the whole of it as one UDP
 *              datagram, as daemon/udp.c takes it.
 * Every frame is decoded and checked, and the replies the daemon would
 * build for it are built.  Properties, not just the absence of crashes,
 * are checked against independent references: a UTF-8 decoder of our own
 * (and simdjson's, which the daemon uses), jansson on the frame itself, and
 * jansson on every reply.  The scanner's block finders (jscan_wide.h), each
 * this CPU has, must agree with a byte loop and with each other.  And every frame
 * is decoded by both paths of request.h, the fast scanner and jansson: when
 * the fast one takes a frame, every field, the id and the item, and what
 * request_check makes of them (code, message, values) must be the same;
 * when it calls a frame invalid, jansson must say bad_json.  A violation
 * abort()s with the property's line, which libFuzzer reports as a crash.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "buf.h"
#include "errcode.h"
#include "frame.h"
#include "jscan_wide.h"
#include "property.h"
#include "reply.h"
#include "request.h"
#include "utf8.h"
#include "utf8_simd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- references ---------------------------------------------------------- */

/*
 * UTF-8 (RFC 3629) decoded the long way: a sequence is valid when its
 * continuation bytes are there and the code point it spells is in range
 * for its length, not a surrogate and not above U+10FFFF.  *bad is the
 * offset of the lead byte of the first invalid sequence.
 */
static bool ref_utf8(const char *s, size_t n, size_t *bad)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (i < n) {
		unsigned c = p[i];
		size_t k;
		uint32_t cp, min;
		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xE0) == 0xC0) {
			k = 1, cp = c & 0x1F, min = 0x80;
		} else if ((c & 0xF0) == 0xE0) {
			k = 2, cp = c & 0x0F, min = 0x800;
		} else if ((c & 0xF8) == 0xF0) {
			k = 3, cp = c & 0x07, min = 0x10000;
		} else {
			break;
		}
		if (n - i - 1 < k)
			break;
		size_t j;
		for (j = 1; j <= k && (p[i + j] & 0xC0) == 0x80; j++)
			cp = cp << 6 | (p[i + j] & 0x3F);
		if (j <= k || cp < min || cp > 0x10FFFF ||
		    (cp >= 0xD800 && cp <= 0xDFFF))
			break;
		i += k + 1;
	}
	if (i < n) {
		if (bad)
			*bad = i;
		return false;
	}
	return true;
}

/*
 * A copy of the JSON text p[0..n) with "\u0000" turned into "\u0001" in
 * every object key, or NULL if no key holds one.  jansson refuses such
 * keys; the copy parses to the same value but for those keys.  Written
 * apart from request.c's neuter_nul_keys on purpose: it scans strings
 * with their escapes, and a string is a key when ':' follows it.
 */
static char *nul_keys_neutered(const char *p, size_t n)
{
	char *copy = NULL;

	for (size_t i = 0; i < n; i++) {
		if (p[i] != '"')
			continue;
		size_t start = i++, nuls[64], nnul = 0;
		bool many = false;
		for (; i < n && p[i] != '"'; i++) {
			if (p[i] != '\\')
				continue;
			if (i + 5 < n && memcmp(p + i + 1, "u0000", 5) == 0) {
				if (nnul < 64)
					nuls[nnul++] = i + 5;
				else
					many = true;
			}
			i++;
		}
		size_t after = i + 1;
		while (after < n && (p[after] == ' ' || p[after] == '\t' ||
		                     p[after] == '\r' || p[after] == '\n'))
			after++;
		if (after >= n || p[after] != ':' || !(nnul || many))
			continue;
		if (!copy) {
			copy = malloc(n ? n : 1);
			CHECK(copy);
			memcpy(copy, p, n);
		}
		if (many) {        /* rescan this key, every escape of it */
			for (size_t k = start + 1; k < i; k++)
				if (p[k] == '\\') {
					if (k + 5 < i && memcmp(p + k + 1, "u0000", 5) == 0)
						copy[k + 5] = '1';
					k++;
				}
		} else {
			for (size_t k = 0; k < nnul; k++)
				copy[nuls[k]] = '1';
		}
	}
	return copy;
}

/*
 * RFC 8259 allows integers of any size; jansson refuses one beyond int64.
 * The reference reads each as the string BIG_MARK followed by its text, so
 * that two big integers are equal exactly when their texts are.  A copy of
 * p[0..n) with them so written, its length in *len, and in *zeroed one
 * with each a 0 and spaces, of n bytes; NULL if there is none.  Written apart from proto/jobject.c on purpose: the range is
 * judged by comparing digit strings, not by arithmetic.
 */
#define BIG_MARK "\\u0000big:"
#define BIG_MARK_DECODED "\0big:"

static bool beyond_int64(const char *digits, size_t n, bool negative)
{
	const char *limit = negative ? "9223372036854775808"
	                             : "9223372036854775807";
	return n > 19 || (n == 19 && memcmp(digits, limit, 19) > 0);
}

static char *big_integers_marked(const char *p, size_t n, size_t *len,
                                 char **zeroed)
{
	struct buf out = { 0 };
	char *zero = malloc(n ? n : 1);
	CHECK(zero);
	memcpy(zero, p, n);
	bool any = false;
	size_t i = 0, copied = 0;

	while (i < n) {
		if (p[i] == '"') {              /* a string: to its closing quote */
			for (i++; i < n && p[i] != '"'; i++)
				if (p[i] == '\\')
					i++;
			i++;
			continue;
		}
		if (p[i] != '-' && !(p[i] >= '0' && p[i] <= '9')) {
			i++;
			continue;
		}
		size_t start = i;
		bool negative = p[i] == '-', plain = true;
		if (negative)
			i++;
		size_t digits = i;
		while (i < n && ((p[i] >= '0' && p[i] <= '9') || p[i] == '.' ||
		                 p[i] == 'e' || p[i] == 'E' || p[i] == '+' ||
		                 p[i] == '-')) {
			if (!(p[i] >= '0' && p[i] <= '9'))
				plain = false;
			i++;
		}
		if (!plain || i == digits || (p[digits] == '0' && i - digits > 1) ||
		    !beyond_int64(p + digits, i - digits, negative))
			continue;
		buf_add(&out, p + copied, start - copied);
		buf_adds(&out, "\"" BIG_MARK);
		buf_add(&out, p + start, i - start);
		buf_addc(&out, '"');
		zero[start] = '0';
		memset(zero + start + 1, ' ', i - start - 1);
		copied = i;
		any = true;
	}
	if (!any) {
		free(zero);
		return NULL;
	}
	buf_add(&out, p + copied, n - copied);
	*len = out.len;
	*zeroed = zero;
	return out.p;
}

/* True if v is the reference's reading of a big integer; *text, *n: its
 * digits as sent. */
static bool big_integer(const json_t *v, const char **text, size_t *n)
{
	size_t mark = sizeof BIG_MARK_DECODED - 1;
	if (!json_is_string(v) || json_string_length(v) <= mark ||
	    memcmp(json_string_value(v), BIG_MARK_DECODED, mark) != 0)
		return false;
	*text = json_string_value(v) + mark;
	*n = json_string_length(v) - mark;
	return true;
}

/* jansson's reading of text[0..len), big integers marked and keys with
 * \u0000 neutered as above if that is all that stops it.  NULL if it is
 * not JSON. */
static json_t *load(const char *p, size_t n, size_t flags)
{
	json_error_t err;
	json_t *v = json_loadb(p, n, flags | JSON_ALLOW_NUL, &err);
	if (!v && json_error_code(&err) == json_error_null_byte_in_key) {
		char *copy = nul_keys_neutered(p, n);
		if (copy) {
			v = json_loadb(copy, n, flags | JSON_ALLOW_NUL, &err);
			free(copy);
		}
	}
	return v;
}

static json_t *jparse(const char *text, size_t len, size_t flags)
{
	size_t n = len;
	char *zeroed = NULL;
	char *marked = big_integers_marked(text, len, &n, &zeroed);
	if (!marked)
		return load(text, len, flags);
	/* Valid as it stands, which a string in place of a number can change
	 * ({1e99...:0}): judged with each big integer a 0. */
	json_t *v = load(zeroed, len, flags);
	free(zeroed);
	if (v) {
		json_decref(v);
		v = load(marked, n, flags);
	}
	free(marked);
	return v;
}

/* The nesting depth of the JSON text p[0..n) as sent: an object or array
 * counts 1.  From the text, not jansson's tree, which keeps only the last
 * of a key given twice: {"a":[1],"a":1} is depth 2 to max_depth. */
static unsigned text_depth(const char *p, size_t n)
{
	unsigned d = 0, max = 0;
	bool in_string = false;
	for (size_t i = 0; i < n; i++) {
		if (in_string) {
			if (p[i] == '\\')
				i++;
			else if (p[i] == '"')
				in_string = false;
		} else if (p[i] == '"') {
			in_string = true;
		} else if (p[i] == '{' || p[i] == '[') {
			if (++d > max)
				max = d;
		} else if (p[i] == '}' || p[i] == ']') {
			d--;
		}
	}
	return max;
}

/* True if the JSON text has no whitespace outside its strings. */
static bool compacted(const char *p, size_t n)
{
	bool in_string = false;
	for (size_t i = 0; i < n; i++) {
		if (in_string) {
			if (p[i] == '\\')
				i++;
			else if (p[i] == '"')
				in_string = false;
		} else if (p[i] == '"') {
			in_string = true;
		} else if (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' ||
		           p[i] == '\n') {
			return false;
		}
	}
	return true;
}

/* Two optional values are the same: both absent, or equal. */
static bool same(const json_t *a, const json_t *b)
{
	if (!a || !b)
		return !a && !b;
	return json_equal((json_t *)a, (json_t *)b);
}

/* PROTOCOL.md's queue names, spelled out again. */
static bool ref_queue_name(const char *s, size_t n)
{
	if (n < 1 || n > 133)
		return false;
	if (n > 128 && memcmp(s + n - 5, ".dead", 5) != 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		            "0123456789_.:-", s[i]) || s[i] == '\0')
			return false;
	return true;
}

/* ---- replies ------------------------------------------------------------- */

/*
 * The reply line b->p[from..) is one line ended by one LF, valid UTF-8, and
 * one JSON object; returns that object (json_decref it).
 */
static json_t *check_reply(const struct buf *b, size_t from)
{
	const char *p = b->p + from;
	size_t n = b->len - from;

	CHECK(n >= 3 && p[n - 1] == '\n');
	CHECK(memchr(p, '\n', n - 1) == NULL);
	CHECK(ref_utf8(p, n, NULL));
	CHECK(utf8_valid(p, n, NULL));
	json_t *v = jparse(p, n - 1, 0);
	CHECK(v && json_is_object(v));
	CHECK(json_is_boolean(json_object_get(v, "ok")));
	return v;
}

/* An error code as PROTOCOL.md names it. */
static void check_code(int code)
{
	CHECK(code > JQ_OK && code < JQ_NERR);
	const char *name = errcode_name(code);
	CHECK(name && name[0] && strcmp(name, "unknown") != 0);
	CHECK(errcode_of(name, strlen(name)) == code);
}

/*
 * s[0..n) as json_append_string writes it: a JSON string, valid UTF-8, that
 * decodes to s byte for byte where s is valid, with '?' for each byte that
 * does not start a valid sequence.
 */
static void check_string(const char *s, size_t n)
{
	struct buf b = { 0 };
	json_append_string(&b, s, n);
	CHECK(b.len >= 2 && b.p[0] == '"' && b.p[b.len - 1] == '"');
	CHECK(ref_utf8(b.p, b.len, NULL));
	json_error_t err;
	json_t *v = json_loadb(b.p, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
	CHECK(v && json_is_string(v));
	CHECK(json_string_length(v) == n);
	const char *out = json_string_value(v);
	bool valid = ref_utf8(s, n, NULL);
	for (size_t i = 0; i < n; i++) {
		if ((unsigned char)s[i] < 0x80 || valid)
			CHECK(out[i] == s[i]);
		else
			CHECK(out[i] == s[i] || out[i] == '?');
	}
	json_decref(v);
	buf_free(&b);
}

/* ---- one frame ----------------------------------------------------------- */

static void check_error_reply(const struct request *r, const json_t *root,
                              int code, const char *message)
{
	struct buf b = { 0 };
	buf_adds(&b, "x");     /* replies are appended to what is there */
	reply_error(&b, &r->id, code, message);
	CHECK(b.p[0] == 'x');
	json_t *v = check_reply(&b, 1);
	CHECK(json_is_false(json_object_get(v, "ok")));
	json_t *err = json_object_get(v, "error");
	CHECK(json_is_string(err) &&
	      strcmp(json_string_value(err), errcode_name(code)) == 0);
	json_t *msg = json_object_get(v, "message");
	CHECK(json_is_string(msg) && json_string_length(msg) == strlen(message));
	CHECK(same(json_object_get(v, "id"), json_object_get(root, "id")));
	json_decref(v);
	buf_free(&b);
	check_string(message, strlen(message));
}

/* What request_check promised of a request it passed; root is jansson's
 * reading of the frame. */
static void check_fields(const struct request *r, const json_t *root)
{
	CHECK((unsigned)r->op < OP_NOPS);
	json_t *op = json_object_get(root, "op");
	CHECK(json_is_string(op) &&
	      json_string_length(op) == strlen(op_name(r->op)) &&
	      memcmp(json_string_value(op), op_name(r->op),
	             json_string_length(op)) == 0);
	CHECK(request_is_ping(r) == (r->op == OP_PING));

	json_t *q = json_object_get(root, "queue");
	CHECK(r->queue && r->queue[r->queue_len] == '\0');
	if (q && !json_is_null(q))
		CHECK(r->queue_len == json_string_length(q) &&
		      memcmp(r->queue, json_string_value(q), r->queue_len) == 0);
	else
		CHECK(strcmp(r->queue, DEFAULT_QUEUE) == 0);
	CHECK(queue_name_valid(r->queue, r->queue_len));
	CHECK(ref_queue_name(r->queue, r->queue_len));

	CHECK(r->timeout == -1 || (r->timeout >= 0 && r->timeout <= JQ_SECONDS_MAX));
	CHECK(r->lease >= 0 && r->lease <= JQ_SECONDS_MAX);
	CHECK(r->delay >= 0 && r->delay <= JQ_SECONDS_MAX);
	switch (r->op) {
	case OP_PUT:
		CHECK(r->item.p);
		break;
	case OP_GET:
		CHECK(!r->noreply);
		break;
	case OP_TASK_DONE:
	case OP_RELEASE: {
		json_t *t = json_object_get(root, "task");
		CHECK(json_is_integer(t) && json_integer_value(t) > 0 &&
		      r->task == (uint64_t)json_integer_value(t));
		break;
	}
	case OP_DECLARE: {
		/* each setting as jansson reads it; the dead-letter queue a
		 * valid name, not the queue's own */
		json_t *ms = json_object_get(root, "maxsize");
		json_t *md = json_object_get(root, "max_deliveries");
		json_t *dl = json_object_get(root, "dead_letter");
		CHECK(r->has_maxsize == (ms && !json_is_null(ms)));
		CHECK(!r->has_maxsize || (json_is_integer(ms) &&
		      json_integer_value(ms) >= 0 &&
		      r->maxsize == (uint64_t)json_integer_value(ms)));
		CHECK(r->has_max_deliveries == (md && !json_is_null(md)));
		CHECK(!r->has_max_deliveries || (json_is_integer(md) &&
		      json_integer_value(md) >= 0 &&
		      json_integer_value(md) <= UINT32_MAX &&
		      r->max_deliveries == (uint64_t)json_integer_value(md)));
		CHECK(!r->dead_letter == !(dl && !json_is_null(dl)));
		if (r->dead_letter) {
			size_t n = strlen(r->dead_letter);
			CHECK(json_is_string(dl) && json_string_length(dl) == n &&
			      memcmp(json_string_value(dl), r->dead_letter, n) == 0);
			CHECK(queue_name_valid(r->dead_letter, n));
			CHECK(n != r->queue_len ||
			      memcmp(r->dead_letter, r->queue, n) != 0);
		}
		break;
	}
	default:
		break;
	}
}

/* The replies of a request that passed: an ok line with the id and every
 * kind of member, the item spliced in as a get would. */
static void check_ok_reply(const struct request *r, const json_t *root)
{
	struct buf b = { 0 };
	reply_ok(&b, &r->id);
	reply_str(&b, "queue", r->queue);
	reply_bool(&b, "block", r->block);
	reply_u64(&b, "task", r->task);
	if (r->item.p)
		reply_raw(&b, "item", r->item.p, r->item.len);
	reply_end(&b);
	json_t *v = check_reply(&b, 0);
	CHECK(json_is_true(json_object_get(v, "ok")));
	CHECK(same(json_object_get(v, "id"), json_object_get(root, "id")));
	CHECK(same(json_object_get(v, "item"), json_object_get(root, "item")));
	json_t *q = json_object_get(v, "queue");
	CHECK(json_is_string(q) && json_string_length(q) == r->queue_len &&
	      memcmp(json_string_value(q), r->queue, r->queue_len) == 0);
	json_t *t = json_object_get(v, "task");
	CHECK(json_is_integer(t) && (uint64_t)json_integer_value(t) == r->task);
	json_decref(v);
	buf_free(&b);
}

/* The keys of enum request_field, spelled out again. */
static const char *const field_keys[RF_COUNT] = {
	[RF_OP] = "op", [RF_QUEUE] = "queue", [RF_ID] = "id",
	[RF_TOKEN] = "token", [RF_NOREPLY] = "noreply", [RF_BLOCK] = "block",
	[RF_TIMEOUT] = "timeout", [RF_LEASE] = "lease", [RF_DELAY] = "delay",
	[RF_TASK] = "task", [RF_ITEM] = "item", [RF_MAXSIZE] = "maxsize",
	[RF_MAX_DELIVERIES] = "max_deliveries", [RF_DEAD_LETTER] = "dead_letter",
};

/* A decoded field is jansson's member v (NULL: absent): the same kind and
 * value, and its text in the frame is that value. */
static void check_field(const struct jfield *f, const json_t *v,
                        const char *frame, size_t len)
{
	if (!v) {
		CHECK(f->kind == JK_ABSENT && !f->text.p);
		return;
	}
	CHECK(f->text.p >= frame && f->text.len > 0 &&
	      f->text.p + f->text.len <= frame + len);
	json_t *t = jparse(f->text.p, f->text.len, JSON_DECODE_ANY);
	CHECK(t && json_equal(t, (json_t *)v));
	json_decref(t);
	switch (json_typeof(v)) {
	case JSON_NULL:
		CHECK(f->kind == JK_NULL);
		break;
	case JSON_TRUE:
		CHECK(f->kind == JK_TRUE);
		break;
	case JSON_FALSE:
		CHECK(f->kind == JK_FALSE);
		break;
	case JSON_INTEGER:
		CHECK(f->kind == JK_INT && f->integer == json_integer_value(v));
		break;
	case JSON_REAL:
		CHECK(f->kind == JK_REAL && f->real == json_real_value(v));
		break;
	case JSON_STRING: {
		const char *digits;
		size_t n;
		if (big_integer(v, &digits, &n) && f->kind != JK_STRING) {
			CHECK(f->kind == JK_BIGINT && f->integer == 0);
			CHECK(f->text.len == n && memcmp(f->text.p, digits, n) == 0);
			break;
		}
		CHECK(f->kind == JK_STRING);
		CHECK(f->escaped == (memchr(f->text.p, '\\', f->text.len) != NULL));
		char *buf = malloc(f->text.len);
		CHECK(buf);
		const char *s;
		n = request_string(f, buf, f->text.len, &s);
		CHECK(n == json_string_length(v) &&
		      memcmp(s, json_string_value(v), n) == 0);
		/* one byte short of room is refused, not overrun */
		if (f->escaped && n > 0)
			CHECK(request_string(f, buf, n - 1, &s) == SIZE_MAX);
		free(buf);
		break;
	}
	default:
		CHECK(f->kind == JK_OTHER);
		break;
	}
}

static bool same_jtext(const struct jtext *a, const struct jtext *b)
{
	if (!a->p || !b->p)
		return !a->p && !b->p;
	return a->len == b->len && memcmp(a->p, b->p, a->len) == 0;
}

static bool same_field(const struct jfield *a, const struct jfield *b)
{
	return a->kind == b->kind && a->escaped == b->escaped &&
	       a->text.p == b->text.p && a->text.len == b->text.len &&
	       (a->kind != JK_INT || a->integer == b->integer) &&
	       (a->kind != JK_REAL ||
	        memcmp(&a->real, &b->real, sizeof a->real) == 0);
}

/* The fast path against the slow one, on a frame of valid UTF-8. */
static void differential(const char *frame, size_t len, unsigned max_depth)
{
	struct request fast, slow;
	struct errinfo fe = { 0 }, se = { 0 };

	enum jscan_verdict v = request_decode_fast(frame, len, max_depth, &fast);
	int code = request_decode_slow(frame, len, max_depth, &slow, &se);
	CHECK(v == JSCAN_OK || v == JSCAN_INVALID || v == JSCAN_UNSURE);
	if (v == JSCAN_INVALID)
		CHECK(code == JQ_BAD_JSON);
	if (v == JSCAN_OK) {
		CHECK(code == JQ_OK);
		for (int k = 0; k < RF_COUNT; k++)
			CHECK(same_field(&fast.field[k], &slow.field[k]));
		CHECK(same_jtext(&fast.id, &slow.id));
		CHECK(same_jtext(&fast.item, &slow.item));
		CHECK(fast.noreply == slow.noreply);
		CHECK(request_is_ping(&fast) == request_is_ping(&slow));
		int fc = request_check(&fast, &fe);
		int sc = request_check(&slow, &se);
		CHECK(fc == sc);
		if (fc != JQ_OK) {
			CHECK(fe.code == se.code);
			CHECK(strcmp(fe.message, se.message) == 0);
		} else {
			CHECK(fast.op == slow.op);
			CHECK(fast.queue_len == slow.queue_len &&
			      memcmp(fast.queue, slow.queue, fast.queue_len) == 0);
			CHECK(fast.block == slow.block);
			CHECK(memcmp(&fast.timeout, &slow.timeout,
			             sizeof fast.timeout) == 0);
			CHECK(memcmp(&fast.lease, &slow.lease, sizeof fast.lease) == 0);
			CHECK(memcmp(&fast.delay, &slow.delay, sizeof fast.delay) == 0);
			CHECK(fast.task == slow.task);
			CHECK(fast.has_maxsize == slow.has_maxsize &&
			      fast.maxsize == slow.maxsize);
			CHECK(fast.has_max_deliveries == slow.has_max_deliveries &&
			      fast.max_deliveries == slow.max_deliveries);
			CHECK(!fast.dead_letter == !slow.dead_letter &&
			      (!fast.dead_letter ||
			       strcmp(fast.dead_letter, slow.dead_letter) == 0));
		}
	} else {
		for (int k = 0; k < RF_COUNT; k++)
			CHECK(fast.field[k].kind == JK_ABSENT);
		CHECK(!fast.id.p && !fast.item.p && !fast.owned[0] &&
		      !fast.owned[1]);
	}
	request_free(&fast);
	request_free(&slow);
}

/* A member's text as request_decode kept it: present exactly when jansson
 * has the member, compacted, and the same value. */
static void check_member(const struct jtext *t, const json_t *want)
{
	CHECK(!t->p == !want);
	if (!t->p)
		return;
	CHECK(t->len > 0 && compacted(t->p, t->len));
	json_t *v = jparse(t->p, t->len, JSON_DECODE_ANY);
	CHECK(v && json_equal(v, (json_t *)want));
	json_decref(v);
}

/* The first quote, backslash or control byte of p[0..n), or n. */
static size_t ref_stop(const char *p, size_t n)
{
	size_t i = 0;
	while (i < n && p[i] != '"' && p[i] != '\\' &&
	       (unsigned char)p[i] >= 0x20)
		i++;
	return i;
}

/* Each block finder of jscan_wide.h on p[0..n): it stops short of the
 * first stop byte only in a tail shorter than a block (32 bytes at most),
 * and notes a byte >= 0x80 exactly when one is before where it stops. */
static void check_finders(const char *p, size_t n)
{
	size_t stop = ref_stop(p, n);
	for (int v = 0; v < JSCAN_NVARIANTS; v++) {
		jscan_finder *find = jscan_finder_of((enum jscan_variant)v);
		if (!find)
			continue;
		bool high = false;
		size_t k = find(p, n, &high);
		CHECK(k <= stop && (k == stop || n - k < 32));
		bool want = false;
		for (size_t i = 0; i < k; i++)
			want |= (unsigned char)p[i] >= 0x80;
		CHECK(high == want);
	}
}

/* Every variant of the scanner gives the same verdict, fields and ASCII
 * note as the one request_decode uses, on any bytes; a frame taken as
 * ASCII is ASCII, and one taken with a byte >= 0x80 has one. */
static void check_variants(const char *frame, size_t len, unsigned max_depth)
{
	struct jfield best[RF_COUNT] = { 0 };
	bool best_ascii;
	enum jscan_variant b = jscan_best();
	enum jscan_verdict want = jscan_object_in(b, frame, len, max_depth,
	                                          field_keys, RF_COUNT, best,
	                                          &best_ascii);
	if (want == JSCAN_OK) {
		bool high = false;
		for (size_t i = 0; i < len; i++)
			high |= (unsigned char)frame[i] >= 0x80;
		CHECK(best_ascii == !high);
	}
	for (int v = 0; v < JSCAN_NVARIANTS; v++) {
		if (v == (int)b || !jscan_finder_of((enum jscan_variant)v))
			continue;
		struct jfield f[RF_COUNT] = { 0 };
		bool ascii;
		enum jscan_verdict got = jscan_object_in((enum jscan_variant)v,
		                                         frame, len, max_depth,
		                                         field_keys, RF_COUNT, f,
		                                         &ascii);
		CHECK(got == want);
		if (got != JSCAN_OK)
			continue;
		CHECK(ascii == best_ascii);
		for (int k = 0; k < RF_COUNT; k++)
			CHECK(same_field(&f[k], &best[k]));
	}
}

static void one_frame(const char *frame, size_t len, unsigned max_depth)
{
	struct request r;
	struct errinfo e = { 0 };
	size_t bad = 0, ref_bad = 0;

	bool valid = utf8_valid(frame, len, &bad);
	CHECK(valid == ref_utf8(frame, len, &ref_bad));
	CHECK(valid || bad == ref_bad);
	CHECK(utf8_valid_simd(frame, len) == valid);
	check_variants(frame, len, max_depth);

	/* What the frame is, by jansson alone, but for a raw NUL byte: JSON
	 * has none, though jansson lets one pass after a number or literal. */
	json_t *want = valid && !memchr(frame, '\0', len) ?
	               jparse(frame, len, 0) : NULL;
	if (want && !json_is_object(want)) {
		json_decref(want);
		want = NULL;
	}

	if (valid)
		differential(frame, len, max_depth);

	/* A big integer is kept in the id and the item, and ignored in a
	 * field joinqd does not know; in one it reads, it is bad_json. */
	bool big_read = false;
	for (int k = 0; want && k < RF_COUNT; k++) {
		const char *digits;
		size_t n;
		if (k != RF_ID && k != RF_ITEM &&
		    big_integer(json_object_get(want, field_keys[k]), &digits, &n))
			big_read = true;
	}

	int code = request_decode(frame, len, max_depth, &r, &e);
	if (!valid)
		CHECK(code == JQ_BAD_UTF8);
	else if (!want || text_depth(frame, len) > max_depth || big_read)
		CHECK(code == JQ_BAD_JSON);
	else
		CHECK(code == JQ_OK);

	if (code == JQ_OK) {
		for (int k = 0; k < RF_COUNT; k++)
			check_field(&r.field[k], json_object_get(want, field_keys[k]),
			            frame, len);
		check_member(&r.id, json_object_get(want, "id"));
		check_member(&r.item, json_object_get(want, "item"));
		CHECK(r.noreply == json_is_true(json_object_get(want, "noreply")));

		code = request_check(&r, &e);
		if (code == JQ_OK) {
			check_fields(&r, want);
			check_ok_reply(&r, want);
		} else {
			CHECK(code == JQ_BAD_REQUEST || code == JQ_UNKNOWN_OP ||
			      code == JQ_BAD_QUEUE);
		}
	} else {
		CHECK(r.field[RF_OP].kind == JK_ABSENT && !r.id.p && !r.item.p);
	}
	if (code != JQ_OK) {
		CHECK(e.code == code);
		CHECK(e.message[0] != '\0');
		CHECK(memchr(e.message, '\0', sizeof e.message) != NULL);
		check_code(code);
		check_error_reply(&r, code == JQ_BAD_UTF8 || code == JQ_BAD_JSON ?
		                  NULL : want, code, e.message);
	}
	request_free(&r);
	CHECK(!r.owned[0] && !r.owned[1]);
	json_decref(want);
}

/* ---- the transports ------------------------------------------------------ */

/* A whole stream over TCP, as daemon/conn.c reads it: at most max_frame + 1
 * bytes are looked at for one frame. */
static void tcp(const char *p, size_t avail, size_t max_frame,
                unsigned max_depth)
{
	while (avail) {
		size_t want = avail <= max_frame ? avail : max_frame + 1;
		struct frame f;
		enum frame_status st = frame_next(p, want, max_frame, &f);
		const char *lf = memchr(p, '\n', want);

		switch (st) {
		case FRAME_NEED_MORE:
			CHECK(!lf && want <= max_frame);
			return;            /* a partial frame at close is dropped */
		case FRAME_TOO_LARGE:
			CHECK(!lf && want > max_frame);
			check_error_reply(&(struct request){ 0 }, NULL,
			                  JQ_FRAME_TOO_LARGE, "the frame passes "
			                  "max_frame; closing");
			return;            /* the connection closes */
		case FRAME_OK:
		case FRAME_EMPTY:
			CHECK(lf && f.consumed == (size_t)(lf - p) + 1);
			CHECK(f.consumed - 1 <= max_frame);
			CHECK(f.start == p);
			CHECK(f.len == f.consumed - 1 ||
			      (f.len == f.consumed - 2 && p[f.len] == '\r'));
			CHECK((st == FRAME_EMPTY) == frame_blank(f.start, f.len));
			if (st == FRAME_OK)
				one_frame(f.start, f.len, max_depth);
			break;
		default:
			CHECK(!"a frame status of frame.h");
		}
		p += f.consumed;
		avail -= f.consumed;
	}
}

/* The same bytes as one datagram, as daemon/udp.c takes it. */
static void udp(const char *p, size_t n, size_t max_frame, unsigned max_depth)
{
	if (n && p[n - 1] == '\n')
		n--;
	bool too_large = n > max_frame;
	if (n && p[n - 1] == '\r')
		n--;
	if (too_large)
		check_error_reply(&(struct request){ 0 }, NULL, JQ_FRAME_TOO_LARGE,
		                  "the datagram passes max_frame");
	else if (!frame_blank(p, n))
		one_frame(p, n, max_depth);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	size_t max_frame = data[0] ? data[0] : (size_t)1 << 20;
	unsigned max_depth = 1 + (data[1] & 63);
	const char *p = (const char *)data + 2;
	size_t n = size - 2;

	tcp(p, n, max_frame, max_depth);
	udp(p, n, max_frame, max_depth);
	/* The finders from each alignment of a block's start. */
	for (size_t off = 0; off < 32 && off <= n; off++)
		check_finders(p + off, n - off);
	/* Any bytes, such as jansson's error text cut anywhere, make a
	 * valid JSON string. */
	check_string(p, n);
	return 0;
}
