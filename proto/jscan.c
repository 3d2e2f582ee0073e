/*
 * jscan.c - the fast, allocation-free JSON object scanner (see jscan.h).
 *
 * The grammar is jansson's reading of RFC 8259 (its load.c): whitespace is
 * space, tab, CR and LF; a string holds no raw byte below 0x20 and only the
 * escapes \" \\ \/ \b \f \n \r \t \uXXXX, where a high surrogate must be
 * followed by an escaped low one and a low one may not stand alone; a
 * number is -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, an integer
 * when it has neither fraction nor exponent.  Whatever the scanner cannot
 * be sure of, it leaves to jansson (JSCAN_UNSURE).
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jscan.h"
#include "jscan_wide.h"

struct scan {
	const char *p;          /* the next byte */
	const char *end;
	unsigned max_depth;
	jscan_finder *find;     /* the block step of scan_string */
	bool high;              /* a string held a byte >= 0x80 */
};

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static void skip_ws(struct scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' ||
	                         *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

/* True if the next byte is c; a way to peek past the end safely. */
static bool next_is(const struct scan *s, char c)
{
	return s->p < s->end && *s->p == c;
}

/* The value of four hex digits at p, or -1 if they are not there. */
static long hex4(const char *p, const char *end)
{
	long v = 0;
	if (end - p < 4)
		return -1;
	for (int k = 0; k < 4; k++) {
		char c = p[k];
		int d = is_digit(c) ? c - '0' :
		        (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10 :
		        -1;
		if (d < 0)
			return -1;
		v = v * 16 + d;
	}
	return v;
}

/* A string, s->p at its opening quote; *escaped tells if it has escapes. */
static enum jscan_verdict scan_string(struct scan *s, bool *escaped)
{
	const char *p = s->p + 1, *end = s->end;

	*escaped = false;
	for (;;) {
		/* Plain bytes a block at a time (jscan_wide.c): items are
		 * mostly such bytes.  Then a byte at a time to the quote,
		 * backslash or control byte it stopped at, or through the
		 * tail shorter than a block. */
		p += s->find(p, (size_t)(end - p), &s->high);
		unsigned char c = 0, seen = 0;
		while (p < end && (c = (unsigned char)*p) != '"' && c != '\\' &&
		       c >= 0x20) {
			seen |= c;
			p++;
		}
		if (seen & 0x80)
			s->high = true;
		if (p >= end || c < 0x20)
			return JSCAN_INVALID;
		if (c == '"')
			break;
		*escaped = true;
		if (end - p < 2)
			return JSCAN_INVALID;
		switch (p[1]) {
		case '"': case '\\': case '/': case 'b': case 'f': case 'n':
		case 'r': case 't':
			p += 2;
			continue;
		case 'u':
			break;
		default:
			return JSCAN_INVALID;
		}
		long u = hex4(p + 2, end);
		p += 6;
		if (u < 0 || (u >= 0xDC00 && u <= 0xDFFF))
			return JSCAN_INVALID;
		if (u >= 0xD800 && u <= 0xDBFF) {
			/* jansson wants the low half at once, escaped */
			if (end - p < 2 || p[0] != '\\' || p[1] != 'u')
				return JSCAN_INVALID;
			long low = hex4(p + 2, end);
			if (low < 0xDC00 || low > 0xDFFF)
				return JSCAN_INVALID;
			p += 6;
		}
	}
	s->p = p + 1;
	return JSCAN_OK;
}

/* Integers of any size are taken: one beyond int64 is a JK_BIGINT, kept as
 * text (jansson refuses it; jobject.c works around that).
 * Reals: strtod on a short copy, as jansson does; one that might overflow
 * (jansson: "real number overflow") is left to it. */
static enum jscan_verdict scan_number(struct scan *s, struct jfield *out)
{
	const char *p = s->p, *end = s->end;
	bool negative = p < end && *p == '-';

	if (negative)
		p++;
	if (p >= end || !is_digit(*p))
		return JSCAN_INVALID;
	const char *digits = p;
	if (*p == '0')
		p++;            /* a leading zero stands alone: "01" is invalid */
	else
		while (p < end && is_digit(*p))
			p++;
	size_t int_digits = (size_t)(p - digits);

	bool real = false;
	long exponent = 0;      /* saturates: only its size matters here */
	if (p < end && *p == '.') {
		real = true;
		if (++p >= end || !is_digit(*p))
			return JSCAN_INVALID;
		while (p < end && is_digit(*p))
			p++;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		real = true;
		bool minus = false;
		if (++p < end && (*p == '+' || *p == '-'))
			minus = *p++ == '-';
		if (p >= end || !is_digit(*p))
			return JSCAN_INVALID;
		for (; p < end && is_digit(*p); p++)
			if (exponent < 1000000)
				exponent = exponent * 10 + (*p - '0');
		if (minus)
			exponent = -exponent;
	}

	if (!real) {
		if (out) {
			out->integer = 0;
			out->kind = jint_value(s->p, (size_t)(p - s->p),
			                       &out->integer) ? JK_INT : JK_BIGINT;
		}
	} else {
		/* Below 10^(int_digits + exponent) <= 10^308 < DBL_MAX: no
		 * overflow.  (int_digits is checked alone first so that the
		 * sum cannot wrap.) */
		if (int_digits > 308 || (long)int_digits + exponent > 308)
			return JSCAN_UNSURE;
		if (out) {
			char copy[64];
			size_t n = (size_t)(p - s->p);
			if (n >= sizeof copy)
				return JSCAN_UNSURE;
			memcpy(copy, s->p, n);
			copy[n] = '\0';
			errno = 0;
			double d = strtod(copy, NULL);
			if (errno == ERANGE && isinf(d))
				return JSCAN_UNSURE;
			out->kind = JK_REAL;
			out->real = d;
		}
	}
	s->p = p;
	return JSCAN_OK;
}

/* A literal true, false or null.  What follows it is judged by the
 * caller, so "truex" is invalid as jansson has it. */
static enum jscan_verdict scan_word(struct scan *s, const char *word,
                                    size_t n)
{
	if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
		return JSCAN_INVALID;
	s->p += n;
	return JSCAN_OK;
}

static enum jscan_verdict scan_value(struct scan *s, unsigned depth,
                                     struct jfield *out);

/* An object or array below the top level, s->p at its bracket; depth is
 * its own.  Keys with escapes are left to jansson. */
/* NOLINTNEXTLINE(misc-no-recursion): depth is bounded (JSCAN_MAX_DEPTH) */
static enum jscan_verdict scan_container(struct scan *s, unsigned depth)
{
	bool object = *s->p == '{';
	char close = object ? '}' : ']';
	enum jscan_verdict v;

	if (depth > s->max_depth)
		return JSCAN_INVALID;     /* as the depth check before jansson */
	if (depth > JSCAN_MAX_DEPTH)
		return JSCAN_UNSURE;
	s->p++;
	skip_ws(s);
	if (next_is(s, close)) {
		s->p++;
		return JSCAN_OK;
	}
	for (;;) {
		if (object) {
			bool escaped;
			if (!next_is(s, '"'))
				return JSCAN_INVALID;
			if ((v = scan_string(s, &escaped)) != JSCAN_OK)
				return v;
			if (escaped)
				return JSCAN_UNSURE;
			skip_ws(s);
			if (!next_is(s, ':'))
				return JSCAN_INVALID;
			s->p++;
			skip_ws(s);
		}
		if ((v = scan_value(s, depth, NULL)) != JSCAN_OK)
			return v;
		skip_ws(s);
		if (next_is(s, close)) {
			s->p++;
			return JSCAN_OK;
		}
		if (!next_is(s, ','))
			return JSCAN_INVALID;
		s->p++;
		skip_ws(s);
	}
}

/* Any value, s->p at its first byte; depth is that of its container.
 * out, if not NULL, gets its kind, number and text. */
/* NOLINTNEXTLINE(misc-no-recursion): depth is bounded (JSCAN_MAX_DEPTH) */
static enum jscan_verdict scan_value(struct scan *s, unsigned depth,
                                     struct jfield *out)
{
	const char *start = s->p;
	enum jscan_verdict v;
	enum jkind kind = JK_OTHER;
	bool escaped = false;

	if (s->p >= s->end)
		return JSCAN_INVALID;
	switch (*s->p) {
	case '"':
		v = scan_string(s, &escaped);
		kind = JK_STRING;
		break;
	case '{':
	case '[':
		v = scan_container(s, depth + 1);
		break;
	case 't':
		v = scan_word(s, "true", 4);
		kind = JK_TRUE;
		break;
	case 'f':
		v = scan_word(s, "false", 5);
		kind = JK_FALSE;
		break;
	case 'n':
		v = scan_word(s, "null", 4);
		kind = JK_NULL;
		break;
	default:
		v = scan_number(s, out);    /* sets out's kind and number */
		if (v == JSCAN_OK && out)
			kind = out->kind;
		break;
	}
	if (v == JSCAN_OK && out) {
		out->kind = kind;
		out->escaped = escaped;
		out->text = (struct jtext){ start, (size_t)(s->p - start) };
	}
	return v;
}

/* The index of the key p[0..n) in keys[], or -1. */
static int key_index(const char *p, size_t n, const char *const keys[],
                     size_t nkeys)
{
	for (size_t k = 0; k < nkeys; k++)
		if (keys[k][0] == p[0] && strncmp(keys[k], p, n) == 0 &&
		    keys[k][n] == '\0')
			return (int)k;
	return -1;
}

static enum jscan_verdict scan_object(struct scan *sp,
                                      const char *const keys[], size_t nkeys,
                                      struct jfield out[])
{
	struct scan s = *sp;
	enum jscan_verdict v;
	uint64_t seen = 0;              /* the keys met, by index */

	if (nkeys > JSCAN_MAX_KEYS)
		return JSCAN_UNSURE;
	skip_ws(&s);
	if (!next_is(&s, '{') || s.max_depth < 1)
		return JSCAN_INVALID;
	s.p++;
	skip_ws(&s);
	for (bool more = !next_is(&s, '}'); more;) {
		bool escaped;
		if (!next_is(&s, '"'))
			return JSCAN_INVALID;
		const char *key = s.p + 1;
		if ((v = scan_string(&s, &escaped)) != JSCAN_OK)
			return v;
		if (escaped)            /* it may spell a known key, or hold a NUL */
			return JSCAN_UNSURE;
		int k = key_index(key, (size_t)(s.p - 1 - key), keys, nkeys);
		if (k >= 0) {
			if (seen >> k & 1)
				return JSCAN_UNSURE; /* a duplicate: jansson keeps
				                        the last */
			seen |= (uint64_t)1 << k;
			out[k] = (struct jfield){ 0 };
		}
		skip_ws(&s);
		if (!next_is(&s, ':'))
			return JSCAN_INVALID;
		s.p++;
		skip_ws(&s);
		if ((v = scan_value(&s, 1, k >= 0 ? &out[k] : NULL)) != JSCAN_OK)
			return v;
		skip_ws(&s);
		more = next_is(&s, ',');
		if (more) {
			s.p++;
			skip_ws(&s);
		} else if (!next_is(&s, '}')) {
			return JSCAN_INVALID;
		}
	}
	s.p++;                          /* the closing brace */
	skip_ws(&s);
	sp->high = s.high;
	if (s.p != s.end)
		return JSCAN_INVALID;
	/* Each field written once, here or above: zeroing them all first
	 * (hundreds of bytes by rep stos) cost a request more than this. */
	for (size_t k = 0; k < nkeys; k++)
		if (!(seen >> k & 1))
			out[k] = (struct jfield){ 0 };
	return JSCAN_OK;
}

/*
 * jansson drops a NUL byte that follows a number or a literal (it ungets
 * the byte after the token, and a NUL in its one-character buffer reads as
 * "empty"), so {"op":1\0} is valid to it.  The scanner never takes a NUL
 * outside a string; a frame it finds invalid that holds one is left to
 * jansson.
 */
static enum jscan_verdict object_with(jscan_finder *find, const char *p,
                                      size_t len, unsigned max_depth,
                                      const char *const keys[], size_t nkeys,
                                      struct jfield out[], bool *ascii)
{
	struct scan s = { p, p + len, max_depth, find, false };
	enum jscan_verdict v = scan_object(&s, keys, nkeys, out);
	*ascii = !s.high;
	if (v == JSCAN_INVALID && memchr(p, '\0', len))
		return JSCAN_UNSURE;
	return v;
}

enum jscan_verdict jscan_object_ascii(const char *p, size_t len,
                                      unsigned max_depth,
                                      const char *const keys[], size_t nkeys,
                                      struct jfield out[], bool *ascii)
{
	return object_with(jscan_best_finder(), p, len, max_depth, keys, nkeys,
	                   out, ascii);
}

enum jscan_verdict jscan_object(const char *p, size_t len, unsigned max_depth,
                                const char *const keys[], size_t nkeys,
                                struct jfield out[])
{
	bool ascii;
	return object_with(jscan_best_finder(), p, len, max_depth, keys, nkeys,
	                   out, &ascii);
}

enum jscan_verdict jscan_object_in(enum jscan_variant variant, const char *p,
                                   size_t len, unsigned max_depth,
                                   const char *const keys[], size_t nkeys,
                                   struct jfield out[], bool *ascii)
{
	return object_with(jscan_finder_of(variant), p, len, max_depth, keys,
	                   nkeys, out, ascii);
}

/* Any one JSON value with whitespace around it. */
enum jscan_verdict jscan_value(const char *p, size_t len, unsigned max_depth)
{
	struct scan s = { p, p + len, max_depth, jscan_best_finder(), false };

	skip_ws(&s);
	enum jscan_verdict v = scan_value(&s, 0, NULL);
	skip_ws(&s);
	if (v == JSCAN_OK && s.p != s.end)
		v = JSCAN_INVALID;
	if (v == JSCAN_INVALID && memchr(p, '\0', len))
		return JSCAN_UNSURE;     /* as in jscan_object */
	return v;
}

bool jint_value(const char *p, size_t len, int64_t *out)
{
	bool negative = len > 0 && *p == '-';
	uint64_t v = 0, limit = negative ? (uint64_t)INT64_MAX + 1
	                                 : (uint64_t)INT64_MAX;

	for (size_t i = negative; i < len; i++) {
		unsigned digit = (unsigned)(p[i] - '0');
		if (v > (limit - digit) / 10)
			return false;
		v = v * 10 + digit;
	}
	*out = !negative ? (int64_t)v :
	       v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
	return true;
}

/* Appends code point c to out as UTF-8; false if out is full. */
static bool put_utf8(uint32_t c, char *out, size_t cap, size_t *n)
{
	unsigned char b[4];
	size_t k;
	if (c < 0x80) {
		b[0] = (unsigned char)c, k = 1;
	} else if (c < 0x800) {
		b[0] = (unsigned char)(0xC0 | c >> 6);
		b[1] = (unsigned char)(0x80 | (c & 0x3F)), k = 2;
	} else if (c < 0x10000) {
		b[0] = (unsigned char)(0xE0 | c >> 12);
		b[1] = (unsigned char)(0x80 | (c >> 6 & 0x3F));
		b[2] = (unsigned char)(0x80 | (c & 0x3F)), k = 3;
	} else {
		b[0] = (unsigned char)(0xF0 | c >> 18);
		b[1] = (unsigned char)(0x80 | (c >> 12 & 0x3F));
		b[2] = (unsigned char)(0x80 | (c >> 6 & 0x3F));
		b[3] = (unsigned char)(0x80 | (c & 0x3F)), k = 4;
	}
	if (cap - *n < k)
		return false;
	memcpy(out + *n, b, k);
	*n += k;
	return true;
}

size_t jstring_unescape(const char *p, size_t len, char *out, size_t cap)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		uint32_t c = (unsigned char)p[i];
		if (c == '\\') {
			char e = p[++i];
			if (e == 'u') {
				c = (uint32_t)hex4(p + i + 1, p + len);
				i += 4;
				if (c >= 0xD800 && c <= 0xDBFF) {  /* valid: a pair */
					uint32_t low = (uint32_t)hex4(p + i + 3, p + len);
					c = 0x10000 + ((c - 0xD800) << 10) + (low - 0xDC00);
					i += 6;
				}
				if (!put_utf8(c, out, cap, &n))
					return SIZE_MAX;
				continue;
			}
			c = e == 'b' ? '\b' : e == 'f' ? '\f' : e == 'n' ? '\n' :
			    e == 'r' ? '\r' : e == 't' ? '\t' : (unsigned char)e;
		}
		if (n >= cap)
			return SIZE_MAX;
		out[n++] = (char)c;
	}
	return n;
}
