/*
 * test_proto.c - unit tests of the wire code shared by daemon and clients
 * (proto/): framing, UTF-8 validation, request decoding and checking, reply
 * building, the byte buffer and the error names.
 *
 * Requests are tested from tables, one row a frame, in the spirit of
 * jansson's test suites: every row runs, and every failing row is printed
 * with what it gave and what PROTOCOL.md wants, before the test fails.
 * Rows write JSON with ' for " to stay readable; a row marked raw is taken
 * byte for byte.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "errcode.h"
#include "frame.h"
#include "jobject.h"
#include "jscan_wide.h"
#include "reply.h"
#include "request.h"
#include "utf8.h"
#include "utf8_simd.h"

#define DEFAULT_DEPTH 64

/* ---- helpers ------------------------------------------------------------- */

/* A diagnostic line in the TAP stream, shown next to the failing case. */
static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
	va_list ap;
	print_message("# ");
	va_start(ap, fmt);
	vprint_message(fmt, ap);
	va_end(ap);
}

/* A table row's frame with ' turned into ", in a buffer the caller frees. */
static char *dq(const char *s, size_t len)
{
	char *p = malloc(len + 1);
	assert_non_null(p);
	for (size_t i = 0; i < len; i++)
		p[i] = (char)(s[i] == '\'' ? '"' : s[i]);
	p[len] = '\0';
	return p;
}

/* Decodes and checks one frame as the daemon does; the first failure wins. */
static int judge(const char *frame, size_t len, unsigned depth,
                 struct request *r, struct errinfo *e)
{
	e->code = JQ_OK;
	e->message[0] = '\0';
	int rc = request_decode(frame, len, depth, r, e);
	if (rc == JQ_OK)
		rc = request_check(r, e);
	return rc;
}

/* Decodes a frame (' for ") that must pass both steps.  Returns the frame,
 * which r's id and item may point into: release it with done(). */
static char *accept_frame(const char *frame, struct request *r)
{
	struct errinfo e;
	char *f = dq(frame, strlen(frame));
	int rc = judge(f, strlen(f), DEFAULT_DEPTH, r, &e);
	if (rc != JQ_OK)
		note("frame %s: %s: %s\n", f, errcode_name(rc), e.message);
	assert_int_equal(rc, JQ_OK);
	return f;
}

/* Frees a request and then the frame it was decoded from. */
static void done(struct request *r, char *frame)
{
	request_free(r);
	free(frame);
}

/* The code a frame (' for ") gets from decode and check; depth 0 is the
 * default max_depth. */
static int verdict(const char *frame, unsigned depth)
{
	struct request r;
	struct errinfo e;
	char *f = dq(frame, strlen(frame));
	int rc = judge(f, strlen(f), depth ? depth : DEFAULT_DEPTH, &r, &e);
	request_free(&r);
	free(f);
	return rc;
}

/* A request naming a queue of n bytes: n - strlen(tail) 'q's, then tail. */
static char *queue_frame(size_t n, const char *tail)
{
	size_t t = strlen(tail);
	char *name = malloc(n + 1);
	assert_non_null(name);
	assert_true(n >= t);
	memset(name, 'q', n - t);
	memcpy(name + n - t, tail, t + 1);
	char *f = malloc(n + 64);
	assert_non_null(f);
	snprintf(f, n + 64, "{\"op\":\"qsize\",\"queue\":\"%s\"}", name);
	free(name);
	return f;
}

static int queue_verdict(size_t n, const char *tail)
{
	struct request r;
	struct errinfo e;
	char *f = queue_frame(n, tail);
	int rc = judge(f, strlen(f), DEFAULT_DEPTH, &r, &e);
	if (rc == JQ_OK)
		assert_int_equal(r.queue_len, n);
	request_free(&r);
	free(f);
	return rc;
}

/* Frees a buf and checks that what it held was s, byte for byte. */
static void expect_buf(struct buf *b, const char *s, size_t len)
{
	if (b->len != len || memcmp(b->p, s, len) != 0)
		note("got  [%.*s]\nwant [%.*s]\n", (int)b->len, b->p,
		            (int)len, s);
	assert_int_equal(b->len, len);
	assert_memory_equal(b->p, s, len);
	buf_free(b);
}

#define EXPECT_BUF(b, lit) expect_buf((b), (lit), sizeof(lit) - 1)

static json_t *load(const char *text)
{
	json_error_t err;
	json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
	if (!v)
		note("%s: %s\n", text, err.text);
	assert_non_null(v);
	return v;
}

/* The decoded value of a request's token field, which must be a string, in
 * buf (at least 64 bytes); returns its length. */
static size_t token_of(const struct request *r, char *buf, const char **s)
{
	const struct jfield *t = &r->field[RF_TOKEN];
	assert_int_equal(t->kind, JK_STRING);
	size_t n = request_string(t, buf, 64, s);
	assert_true(n != SIZE_MAX);
	return n;
}

/* Checks that a jtext holds exactly want[0..len); want NULL: absent. */
static void expect_jtext(const char *what, const struct jtext *t,
                         const char *want, size_t len)
{
	if (!want) {
		if (t->p)
			note("%s: got [%.*s], want absent\n", what, (int)t->len,
			     t->p);
		assert_null(t->p);
		return;
	}
	if (!t->p) {
		note("%s: absent, want [%.*s]\n", what, (int)len, want);
		assert_non_null(t->p);
		return;
	}
	if (t->len != len || memcmp(t->p, want, len) != 0)
		note("%s: got  [%.*s]\n# want [%.*s]\n", what, (int)t->len,
		     t->p, (int)len, want);
	assert_int_equal(t->len, len);
	assert_memory_equal(t->p, want, len);
}

#define EXPECT_JTEXT(t, lit) expect_jtext(#t, (t), (lit), sizeof(lit) - 1)

/* The JSON value a jtext holds, parsed by jansson; the caller decrefs. */
static json_t *jtext_load(const struct jtext *t)
{
	json_error_t err;
	assert_non_null(t->p);
	json_t *v = json_loadb(t->p, t->len, JSON_DECODE_ANY | JSON_ALLOW_NUL,
	                       &err);
	if (!v)
		note("[%.*s]: %s\n", (int)t->len, t->p, err.text);
	assert_non_null(v);
	return v;
}

/* True if t points into frame[0..len) rather than into a copy. */
static bool in_frame(const struct jtext *t, const char *frame, size_t len)
{
	uintptr_t p = (uintptr_t)t->p, f = (uintptr_t)frame;
	return p >= f && p + t->len <= f + len;
}

/* ---- frame_next ---------------------------------------------------------- */

static enum frame_status frame_of(const char *s, size_t max, struct frame *f)
{
	memset(f, 0xAA, sizeof *f);
	return frame_next(s, strlen(s), max, f);
}

static void frame_single_line(void **state)
{
	(void)state;
	struct frame f;
	const char *s = "{\"op\":\"ping\"}\n";
	assert_int_equal(frame_of(s, 1024, &f), FRAME_OK);
	assert_ptr_equal(f.start, s);
	assert_int_equal(f.len, strlen(s) - 1);
	assert_int_equal(f.consumed, strlen(s));
}

static void frame_several_lines_in_one_buffer(void **state)
{
	(void)state;
	struct frame f;
	const char *s = "a\nbc\r\n\n  \r\nd";
	size_t off = 0;

	assert_int_equal(frame_of(s + off, 1024, &f), FRAME_OK);
	assert_int_equal(f.len, 1);
	assert_int_equal(f.consumed, 2);
	off += f.consumed;
	assert_int_equal(frame_of(s + off, 1024, &f), FRAME_OK);
	assert_ptr_equal(f.start, s + off);
	assert_memory_equal(f.start, "bc", 2);
	assert_int_equal(f.len, 2);
	assert_int_equal(f.consumed, 4);
	off += f.consumed;
	assert_int_equal(frame_of(s + off, 1024, &f), FRAME_EMPTY);
	assert_int_equal(f.consumed, 1);
	off += f.consumed;
	assert_int_equal(frame_of(s + off, 1024, &f), FRAME_EMPTY);
	assert_int_equal(f.consumed, 4);
	off += f.consumed;
	assert_int_equal(frame_of(s + off, 1024, &f), FRAME_NEED_MORE);
	assert_int_equal(off, strlen(s) - 1);
}

static void frame_strips_only_the_cr_before_lf(void **state)
{
	(void)state;
	struct frame f;
	assert_int_equal(frame_of("x\r\n", 1024, &f), FRAME_OK);
	assert_int_equal(f.len, 1);
	assert_int_equal(f.consumed, 3);
	/* Only one CR goes: an earlier one is the frame's (and bad JSON). */
	assert_int_equal(frame_of("x\r\r\n", 1024, &f), FRAME_OK);
	assert_int_equal(f.len, 2);
	assert_int_equal(frame_of("a\rb\n", 1024, &f), FRAME_OK);
	assert_int_equal(f.len, 3);
}

static void frame_blank_lines_are_empty(void **state)
{
	(void)state;
	static const char *const blank[] = {
		"\n", "\r\n", " \n", "\t\n", "   \t \n", "\r\r\n", " \r \t\r\n",
	};
	struct frame f;
	for (size_t i = 0; i < sizeof blank / sizeof *blank; i++) {
		assert_int_equal(frame_of(blank[i], 1024, &f), FRAME_EMPTY);
		assert_int_equal(f.consumed, strlen(blank[i]));
	}
	assert_int_equal(frame_of(" x \n", 1024, &f), FRAME_OK);
	assert_int_equal(frame_of("\v\n", 1024, &f), FRAME_OK); /* not blank */
	assert_true(frame_blank("", 0));
	assert_true(frame_blank(" \t\r\n", 4));
	assert_false(frame_blank(" \t0", 3));
}

static void frame_partial_needs_more(void **state)
{
	(void)state;
	struct frame f;
	assert_int_equal(frame_of("", 1024, &f), FRAME_NEED_MORE);
	assert_int_equal(frame_of("{\"op\"", 1024, &f), FRAME_NEED_MORE);
	assert_int_equal(frame_of("{}\r", 1024, &f), FRAME_NEED_MORE);
	assert_int_equal(frame_of("   ", 1024, &f), FRAME_NEED_MORE);
}

static void frame_max_frame_bytes_before_lf_pass(void **state)
{
	(void)state;
	struct frame f;
	assert_int_equal(frame_of("12345678\n", 8, &f), FRAME_OK);
	assert_int_equal(f.len, 8);
	assert_int_equal(f.consumed, 9);
	/* The CR counts: 7 bytes and a CR make 8. */
	assert_int_equal(frame_of("1234567\r\n", 8, &f), FRAME_OK);
	assert_int_equal(f.len, 7);
	assert_int_equal(f.consumed, 9);
	/* A legal frame with more bytes behind it in the buffer. */
	assert_int_equal(frame_of("12345678\nxxxxxxxxxxxx", 8, &f), FRAME_OK);
	assert_int_equal(f.len, 8);
	assert_int_equal(frame_of("ab\nxxxxxxxxxxxxxxxxxx", 8, &f), FRAME_OK);
	assert_int_equal(f.len, 2);
}

static void frame_max_frame_plus_one_is_too_large(void **state)
{
	(void)state;
	struct frame f;
	assert_int_equal(frame_of("123456789\n", 8, &f), FRAME_TOO_LARGE);
	assert_int_equal(frame_of("12345678\r\n", 8, &f), FRAME_TOO_LARGE);
	/* A line of only spaces past the limit cannot be known blank until
	 * its LF, which the limit says not to wait for. */
	assert_int_equal(frame_of("         \n", 8, &f), FRAME_TOO_LARGE);
}

static void frame_too_large_without_waiting_for_lf(void **state)
{
	(void)state;
	struct frame f;
	assert_int_equal(frame_of("12345678", 8, &f), FRAME_NEED_MORE);
	assert_int_equal(frame_of("123456789", 8, &f), FRAME_TOO_LARGE);
	assert_int_equal(frame_of("1234567\r", 8, &f), FRAME_NEED_MORE);
	assert_int_equal(frame_of("12345678\r", 8, &f), FRAME_TOO_LARGE);
	assert_int_equal(frame_of("1234567890123456789012345\n", 8, &f),
	                 FRAME_TOO_LARGE);
}

/* A frame completed over several reads: each resumed search starts where
 * the last stopped, and finds the same frame (CR, blank, limit) as one
 * search over the whole would. */
static void frame_resume_searches_only_new_bytes(void **state)
{
	(void)state;
	struct frame f;
	char s[] = "{\"op\":\"put\"}\r\nnext";
	size_t lf = strlen("{\"op\":\"put\"}\r");

	assert_int_equal(frame_resume(s, 5, 0, 1024, &f), FRAME_NEED_MORE);
	assert_int_equal(frame_resume(s, lf - 1, 5, 1024, &f), FRAME_NEED_MORE);
	assert_int_equal(frame_resume(s, lf - 1, lf - 1, 1024, &f),
	                 FRAME_NEED_MORE);
	assert_int_equal(frame_resume(s, strlen(s), lf - 1, 1024, &f), FRAME_OK);
	assert_ptr_equal(f.start, s);
	assert_int_equal(f.len, lf - 1);
	assert_int_equal(f.consumed, lf + 1);
	/* An LF before from is not looked for: the caller vouched for none. */
	assert_int_equal(frame_resume(s, strlen(s), lf + 1, 1024, &f),
	                 FRAME_NEED_MORE);
	/* The limit holds as for frame_next, wherever the search resumes. */
	assert_int_equal(frame_resume(s, lf - 1, 4, 8, &f), FRAME_TOO_LARGE);
	assert_int_equal(frame_resume(s, strlen(s), lf - 1, lf, &f), FRAME_OK);
	assert_int_equal(frame_resume(s, strlen(s), lf - 1, lf - 1, &f),
	                 FRAME_TOO_LARGE);
	assert_int_equal(frame_resume("  \r\n", 4, 2, 16, &f), FRAME_EMPTY);
	assert_int_equal(f.consumed, 4);
}

static void frame_max_frame_zero(void **state)
{
	(void)state;
	struct frame f;
	assert_int_equal(frame_of("\n", 0, &f), FRAME_EMPTY);
	assert_int_equal(f.consumed, 1);
	assert_int_equal(frame_of("", 0, &f), FRAME_NEED_MORE);
	assert_int_equal(frame_of("a", 0, &f), FRAME_TOO_LARGE);
	assert_int_equal(frame_of("\r\n", 0, &f), FRAME_TOO_LARGE);
}

static void frame_huge_max_frame(void **state)
{
	(void)state;
	struct frame f;
	assert_int_equal(frame_of("abc", SIZE_MAX, &f), FRAME_NEED_MORE);
	assert_int_equal(frame_of("abc\n", SIZE_MAX, &f), FRAME_OK);
	assert_int_equal(f.len, 3);
}

/* ---- utf8_valid ---------------------------------------------------------- */

/*
 * A plain reference validator: decodes one sequence and checks the code
 * point (RFC 3629, section 3).  Returns the offset of the first bad
 * sequence, or len.
 */
static size_t ref_utf8(const unsigned char *p, size_t len)
{
	size_t i = 0;
	while (i < len) {
		unsigned c = p[i];
		size_t n;
		uint32_t cp, min;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xE0) == 0xC0) {
			n = 1, cp = c & 0x1F, min = 0x80;
		} else if ((c & 0xF0) == 0xE0) {
			n = 2, cp = c & 0x0F, min = 0x800;
		} else if ((c & 0xF8) == 0xF0) {
			n = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return i;
		}
		if (i + n >= len)
			return i;
		for (size_t k = 1; k <= n; k++) {
			if ((p[i + k] & 0xC0) != 0x80)
				return i;
			cp = cp << 6 | (p[i + k] & 0x3F);
		}
		if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return i;
		i += n + 1;
	}
	return len;
}

/* utf8_valid on s, compared with the expected first bad offset (or -1). */
static void expect_utf8(const char *s, size_t len, long want_bad)
{
	size_t bad = 12345;
	bool ok = utf8_valid(s, len, &bad);
	if (ok != (want_bad < 0) || (!ok && (long)bad != want_bad)) {
		char hex[200] = "";
		for (size_t i = 0; i < len && i < 48; i++)
			snprintf(hex + 3 * i, 4, "%02x ", (unsigned char)s[i]);
		note("[%s]: valid %d bad %zu, want bad %ld\n", hex, ok,
		            bad, want_bad);
	}
	assert_int_equal(ok, want_bad < 0);
	if (!ok)
		assert_int_equal(bad, (size_t)want_bad);
	assert_int_equal(utf8_valid(s, len, NULL), ok);   /* bad may be NULL */
	assert_int_equal(utf8_valid_simd(s, len), ok);    /* simdjson agrees */
}

#define UTF8(lit, want) expect_utf8((lit), sizeof(lit) - 1, (want))

static void utf8_accepts_ascii_and_multibyte(void **state)
{
	(void)state;
	UTF8("", -1);
	UTF8("hello, world {\"op\":\"ping\"}", -1);
	UTF8("a\0b", -1);                       /* NUL is a character */
	UTF8("\x7f", -1);
	UTF8("\xc2\x80", -1);                   /* U+0080 */
	UTF8("\xc3\xa9", -1);                   /* é */
	UTF8("\xdf\xbf", -1);                   /* U+07FF */
	UTF8("\xe0\xa0\x80", -1);               /* U+0800 */
	UTF8("\xe2\x82\xac", -1);               /* € */
	UTF8("\xed\x9f\xbf", -1);               /* U+D7FF */
	UTF8("\xee\x80\x80", -1);               /* U+E000 */
	UTF8("\xef\xbf\xbf", -1);               /* U+FFFF */
	UTF8("\xf0\x90\x80\x80", -1);           /* U+10000 */
	UTF8("\xf0\x9d\x84\x9e", -1);           /* 𝄞 */
	UTF8("\xf4\x8f\xbf\xbf", -1);           /* U+10FFFF */
	UTF8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9d\x84\x9e!", -1);
}

static void utf8_rejects_overlongs(void **state)
{
	(void)state;
	UTF8("\xc0\x80", 0);
	UTF8("\xc1\xbf", 0);
	UTF8("ab\xe0\x80\x80", 2);
	UTF8("\xe0\x9f\xbf", 0);
	UTF8("\xf0\x80\x80\x80", 0);
	UTF8("x\xf0\x8f\xbf\xbf", 1);
}

static void utf8_rejects_surrogates_and_beyond_max(void **state)
{
	(void)state;
	UTF8("\xed\xa0\x80", 0);                /* U+D800 */
	UTF8("\xed\xbf\xbf", 0);                /* U+DFFF */
	UTF8("\xed\xa0\xbd\xed\xb8\x80", 0);    /* a CESU-8 pair */
	UTF8("\xf4\x90\x80\x80", 0);            /* U+110000 */
	UTF8("\xf5\x80\x80\x80", 0);
	UTF8("\xf7\xbf\xbf\xbf", 0);
	UTF8("\xf8\x88\x80\x80\x80", 0);
	UTF8("\xfc\x84\x80\x80\x80\x80", 0);
	UTF8("ok\xfe", 2);
	UTF8("ok\xff", 2);
}

static void utf8_rejects_truncated_sequences(void **state)
{
	(void)state;
	UTF8("\xc3", 0);
	UTF8("abc\xe2\x82", 3);
	UTF8("abc\xe2", 3);
	UTF8("\xf0\x9d\x84", 0);
	UTF8("\xf0\x9d", 0);
	UTF8("\xf0", 0);
	/* Cut short by an ASCII byte rather than by the end. */
	UTF8("\xc3" "A", 0);
	UTF8("\xe2" "A\xac", 0);
	UTF8("\xe2\x82" "A", 0);
	UTF8("\xf0\x9d" "A\x9e", 0);
	UTF8("\xf0\x9d\x84" "A", 0);
}

static void utf8_rejects_stray_continuation_bytes(void **state)
{
	(void)state;
	UTF8("\x80", 0);
	UTF8("\xbf", 0);
	UTF8("a\x80", 1);
	UTF8("\xc3\xa9\xa9", 2);                /* one continuation too many */
	UTF8("\xe2\x82\xac\x80", 3);
}

static void utf8_fast_path_reports_every_position(void **state)
{
	(void)state;
	char s[32];

	/* The memcpy()s copy bytes, not strings: no NUL wanted.
	 * NOLINTBEGIN(bugprone-not-null-terminated-result) */
	for (size_t pos = 0; pos < 18; pos++) {
		/* An invalid byte at pos in a longer ASCII buffer. */
		memset(s, 'a', sizeof s);
		s[pos] = (char)0xff;
		expect_utf8(s, 24, (long)pos);
		/* A valid 2-byte character there instead. */
		s[pos] = (char)0xc3;
		s[pos + 1] = (char)0xa9;
		expect_utf8(s, 24, -1);
		/* A 4-byte character, across an 8-byte boundary at times. */
		memcpy(s + pos, "\xf0\x9d\x84\x9e", 4);
		expect_utf8(s, 24, -1);
		/* Truncated at the very end of a buffer of pos + 2 bytes. */
		memset(s, 'a', sizeof s);
		memcpy(s + pos, "\xe2\x82", 2);
		expect_utf8(s, pos + 2, (long)pos);
		/* A valid multi-byte character, then a bad byte at pos + 2. */
		memset(s, 'a', sizeof s);
		memcpy(s + pos, "\xc3\xa9\x80", 3);
		expect_utf8(s, 24, (long)pos + 2);
	}
	/* NOLINTEND(bugprone-not-null-terminated-result) */
	/* Exactly eight and sixteen bytes, all ASCII, then one bad. */
	memset(s, 'a', sizeof s);
	expect_utf8(s, 8, -1);
	expect_utf8(s, 16, -1);
	s[16] = (char)0x80;
	expect_utf8(s, 17, 16);
}

/* Every sequence of one and two bytes, every three-byte sequence that
 * starts with a lead byte, and many random ones, against the reference. */
static void utf8_matches_reference_decoder(void **state)
{
	(void)state;
	unsigned char s[8];
	size_t bad;

	for (unsigned a = 0; a < 256; a++) {
		for (unsigned b = 0; b < 256; b++) {
			s[0] = (unsigned char)a;
			s[1] = (unsigned char)b;
			size_t want = ref_utf8(s, 2);
			bool ok = utf8_valid((char *)s, 2, &bad);
			assert_int_equal(ok, want == 2);
			if (!ok)
				assert_int_equal(bad, want);
			if (a < 0xE0 || a > 0xF4)
				continue;
			for (unsigned c = 0; c < 256; c++) {
				s[2] = (unsigned char)c;
				want = ref_utf8(s, 3);
				ok = utf8_valid((char *)s, 3, &bad);
				assert_int_equal(ok, want == 3);
				if (!ok)
					assert_int_equal(bad, want);
			}
		}
	}
	srand(7477);
	for (int round = 0; round < 200000; round++) {
		size_t n = 1 + (size_t)rand() % 8;
		for (size_t i = 0; i < n; i++) {
			/* Mostly bytes that make up multi-byte sequences. */
			int r = rand();
			s[i] = (unsigned char)(r % 4 == 0 ? r % 128 :
			                       r % 4 == 1 ? 0x80 + r % 64 :
			                       0xC0 + r % 64);
		}
		size_t want = ref_utf8(s, n);
		bool ok = utf8_valid((char *)s, n, &bad);
		assert_int_equal(ok, want == n);
		if (!ok)
			assert_int_equal(bad, want);
	}
}

/* ---- the wide string scan (jscan_wide.h) and one pass for ASCII --------- */

/* The bytes that end a plain run in a string, and some that do not. */
static const unsigned char special_bytes[] = {
	'"', '\\', 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09,
	0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15,
	0x16, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1D, 0x1E, 0x1F, 0x7F, 0x80,
	0xBF, 0xC3, 0xFF,
};

/* A string of len plain bytes with byte b at offset at (none if at >= len):
 * in a block of its own size, so that ASan sees a read past it. */
static char *plain_with(size_t len, size_t at, unsigned char b)
{
	char *p = malloc(len ? len : 1);
	assert_non_null(p);
	memset(p, 'a', len);
	if (at < len)
		p[at] = (char)b;
	return p;
}

/* Each finder on p[0..len): it stops at the first stop byte (at, if b is
 * one), or short of it only in the tail of less than a block, and notes a
 * byte >= 0x80 exactly when one is before where it stopped. */
static void check_finders_on(const char *p, size_t len, size_t at,
                             unsigned char b)
{
	static const size_t width[] = { 8, 16, 32 };
	bool stops = b == '"' || b == '\\' || b < 0x20;
	size_t stop = stops && at < len ? at : len;

	for (int v = 0; v < JSCAN_NVARIANTS; v++) {
		jscan_finder *find = jscan_finder_of((enum jscan_variant)v);
		if (!find)
			continue;
		bool high = false;
		size_t k = find(p, len, &high);
		if (k > stop || (k < stop && len - k >= width[v]) ||
		    high != (b >= 0x80 && at < k))
			fail_msg("variant %d, byte 0x%02x at %zu of %zu: stopped at "
			         "%zu, high %d", v, b, at, len, k, high);
	}
}

/* What the scanner makes of {"item":"STRING"}: every variant the same. */
static void check_scanners_on(const char *p, size_t len, size_t at,
                              unsigned char c)
{
	static const char *const keys[] = { "item" };
	struct buf b = { 0 };
	buf_adds(&b, "{\"item\":\"");
	buf_add(&b, p, len);
	buf_adds(&b, "\"}");
	const char *frame = b.p;
	size_t n = b.len;

	/* a quote ends the string early, a backslash makes \a or \", a
	 * control byte is refused (a NUL left to jansson); others pass */
	enum jscan_verdict want = at >= len || c == 0x7F || c >= 0x80 ? JSCAN_OK :
	                          c == 0 ? JSCAN_UNSURE : JSCAN_INVALID;
	for (int v = 0; v < JSCAN_NVARIANTS; v++) {
		if (!jscan_finder_of((enum jscan_variant)v))
			continue;
		struct jfield f[1] = { 0 };
		bool ascii;
		enum jscan_verdict got = jscan_object_in((enum jscan_variant)v,
		                                         frame, n, 8, keys, 1, f,
		                                         &ascii);
		if (got != want || (got == JSCAN_OK &&
		    (ascii != (at >= len || c < 0x80) || f[0].kind != JK_STRING ||
		     f[0].text.p != frame + 8 || f[0].text.len != len + 2)))
			fail_msg("variant %d, byte 0x%02x at %zu of %zu: verdict %d "
			         "(want %d)", v, c, at, len, got, want);
	}
	buf_free(&b);
}

/* Each special byte at each offset 0..70 of strings of 0..100 bytes, so
 * on both sides of every block boundary, through each variant. */
static void wide_scan_every_byte_at_every_offset(void **state)
{
	(void)state;
	for (size_t len = 0; len <= 100; len++)
		for (size_t k = 0; k < sizeof special_bytes; k++)
			for (size_t at = 0; at <= 70 && at <= len; at++) {
				/* at == len: the string is all plain bytes */
				unsigned char b = special_bytes[k];
				char *p = plain_with(len, at, b);
				/* a high byte just past a stop is not noted */
				if ((b == '"' || b == '\\' || b < 0x20) && at + 1 < len)
					p[at + 1] = (char)0xC3;
				check_finders_on(p, len, at, b);
				check_scanners_on(p, len, at, b);
				free(p);
			}
}

/* This CPU's widest finder is the one chosen, and SWAR is always there. */
static void wide_scan_variant_chosen(void **state)
{
	(void)state;
	assert_non_null(jscan_finder_of(JSCAN_SWAR));
	assert_non_null(jscan_finder_of(jscan_best()));
	assert_ptr_equal(jscan_best_finder(), jscan_finder_of(jscan_best()));
	for (int v = (int)jscan_best() + 1; v < JSCAN_NVARIANTS; v++)
		assert_null(jscan_finder_of((enum jscan_variant)v));
#if defined(__x86_64__)
	assert_non_null(jscan_finder_of(JSCAN_SSE2));
#endif
}

/* UTF-8 sequences, valid and not; bad: where the first invalid one starts
 * within it, or -1. */
static const struct {
	const char *bytes;
	long bad;
} sequences[] = {
	{ "\xC3\xA9", -1 },                   /* U+00E9 */
	{ "\xE2\x82\xAC", -1 },               /* U+20AC */
	{ "\xF0\x9D\x84\x9E", -1 },           /* U+1D11E */
	{ "\xF4\x8F\xBF\xBF", -1 },           /* U+10FFFF */
	{ "\xC3" "a", 0 },                    /* a lead byte without its tail */
	{ "\xE2\x82" "a", 0 },                /* cut short */
	{ "\xC0\x80", 0 },                    /* overlong */
	{ "\xED\xA0\x80", 0 },                /* a surrogate */
	{ "\xF4\x90\x80\x80", 0 },            /* above U+10FFFF */
	{ "a\x80", 1 },                       /* a stray continuation byte */
	{ "\xFF", 0 },
};

/* Each sequence at each offset 0..70 of strings of 0..100 bytes: utf8_valid
 * and simdjson agree, and request_decode takes the frame or says
 * bad_utf8 at the byte, whether the frame is ASCII or not. */
static void utf8_every_sequence_at_every_offset(void **state)
{
	(void)state;
	static const char head[] = "{\"op\":\"put\",\"item\":\"";
	size_t hn = sizeof head - 1;

	for (size_t k = 0; k < sizeof sequences / sizeof sequences[0]; k++) {
		size_t sn = strlen(sequences[k].bytes);
		long bad = sequences[k].bad;
		for (size_t len = sn; len <= 100; len++)
			for (size_t at = 0; at <= 70 && at + sn <= len; at++) {
				char *p = plain_with(len, len, 0);
				memcpy(p + at, sequences[k].bytes, sn);
				expect_utf8(p, len, bad < 0 ? -1 : (long)at + bad);

				struct buf frame = { 0 };
				buf_adds(&frame, head);
				buf_add(&frame, p, len);
				buf_adds(&frame, "\"}");
				struct request r;
				struct errinfo e = { 0 };
				int code = request_decode(frame.p, frame.len,
				                          DEFAULT_DEPTH, &r, &e);
				if (bad < 0) {
					assert_int_equal(code, JQ_OK);
					assert_int_equal(r.item.len, len + 2);
				} else {
					char want[64];
					snprintf(want, sizeof want, "(byte %zu)",
					         hn + at + (size_t)bad);
					assert_int_equal(code, JQ_BAD_UTF8);
					assert_non_null(strstr(e.message, want));
					assert_null(r.item.p);
				}
				request_free(&r);
				buf_free(&frame);
				free(p);
			}
	}
}

/* request_decode's verdicts, whichever path reads the frame first: bad
 * UTF-8 wins over bad JSON, and over a frame the fast path is unsure of. */
static void decode_ascii_and_not(void **state)
{
	(void)state;
	static const struct {
		const char *frame;
		int code;
	} rows[] = {
		{ "{\"op\":\"put\",\"item\":\"plain ASCII\"}", JQ_OK },
		{ "{\"op\":\"put\",\"item\":\"caf\xC3\xA9\"}", JQ_OK },
		{ "{\"op\":\"put\",\"item\":{\"\xE2\x82\xAC\":1}}", JQ_OK },
		/* the fast path is unsure (a key twice): jansson decides */
		{ "{\"op\":\"put\",\"item\":1,\"item\":\"\xC3\xA9\"}", JQ_OK },
		{ "{\"op\":\"put\",\"item\":\"caf\xC3\"}", JQ_BAD_UTF8 },
		{ "{\"op\":\"put\",\"item\":\"\xED\xA0\x80\"}", JQ_BAD_UTF8 },
		{ "{\"op\":\"put\",\"item\":1,\"item\":\"\xC3\"}", JQ_BAD_UTF8 },
		{ "{\"op\":\"put\",\"item\":\xC3\xA9}", JQ_BAD_JSON },
		{ "{\"op\":\"put\",\"item\":\xC3}", JQ_BAD_UTF8 },
		{ "{\"op\":\"put\",\"item\":\"\xC3\xA9\"", JQ_BAD_JSON },
		{ "{\"op\":\"put\",\"item\":\"\xC3\"", JQ_BAD_UTF8 },
		{ "{\"op\":\"put\",\"item\":\"a\"", JQ_BAD_JSON },
	};
	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		struct request r;
		struct errinfo e = { 0 };
		const char *f = rows[i].frame;
		int code = request_decode(f, strlen(f), DEFAULT_DEPTH, &r, &e);
		if (code != rows[i].code)
			fail_msg("row %zu: %d (want %d): %s", i, code, rows[i].code,
			         e.message);
		request_free(&r);
	}
}

/* ---- request_decode and request_check: tables ---------------------------- */

struct rcase {
	const char *frame;         /* ' stands for " unless raw */
	int code;
	const char *mention;       /* the message must name this, or NULL */
	unsigned depth;            /* max_depth; 0: DEFAULT_DEPTH */
	bool raw;                  /* frame taken byte for byte */
};

/* Runs every row and fails once at the end, having printed each bad row. */
static void run_cases(const struct rcase *c, size_t n)
{
	int failures = 0;

	for (size_t i = 0; i < n; i++) {
		struct request r;
		struct errinfo e;
		size_t len = strlen(c[i].frame);
		char *f = c[i].raw ? strdup(c[i].frame) : dq(c[i].frame, len);
		unsigned depth = c[i].depth ? c[i].depth : DEFAULT_DEPTH;
		int rc = judge(f, len, depth, &r, &e);
		const char *why = NULL;

		if (rc != c[i].code)
			why = "wrong code";
		else if (rc != JQ_OK && e.code != rc)
			why = "errinfo code differs from the return";
		else if (rc != JQ_OK && !e.message[0])
			why = "no message";
		else if (rc != JQ_OK &&
		         !utf8_valid(e.message, strlen(e.message), NULL))
			why = "message is not UTF-8";
		else if (c[i].mention && !strstr(e.message, c[i].mention))
			why = "message does not name the field";
		if (why) {
			note("row %zu %s: got %s (%s), want %s: %s\n", i, f,
			            errcode_name(rc), rc ? e.message : "",
			            errcode_name(c[i].code), why);
			failures++;
		}
		request_free(&r);
		free(f);
	}
	assert_int_equal(failures, 0);
}

#define RUN_CASES(t) run_cases((t), sizeof(t) / sizeof *(t))

/* A row; one whose message must name something; one with its own
 * max_depth; one taken byte for byte. */
#define ROW(frame, code) { (frame), (code), NULL, 0, false }
#define NAMES(frame, code, what) { (frame), (code), (what), 0, false }
#define DEPTH(frame, code, depth) { (frame), (code), NULL, (depth), false }
#define RAW(frame, code) { (frame), (code), NULL, 0, true }

static void request_bad_utf8(void **state)
{
	(void)state;
	static const struct rcase cases[] = {
		NAMES("{'op':'ping','x':'\xff'}", JQ_BAD_UTF8, "byte 18"),
		ROW("{'op':'ping','x':'\xc0\x80'}", JQ_BAD_UTF8),
		ROW("{'op':'ping','x':'\xed\xa0\x80'}", JQ_BAD_UTF8),
		ROW("{'op':'ping','x':'\xf4\x90\x80\x80'}", JQ_BAD_UTF8),
		ROW("{'op':'ping'}\xe2\x82", JQ_BAD_UTF8),
		ROW("{'op':'ping','\x80':1}", JQ_BAD_UTF8),
		/* bad_utf8 is judged before JSON: it wins over bad_json. */
		ROW("not json at all \xff", JQ_BAD_UTF8),
		/* And before the depth limit. */
		DEPTH("[[[[\xff", JQ_BAD_UTF8, 2),
		/* Valid UTF-8 everywhere is fine. */
		ROW("{'op':'ping','x':'caf\xc3\xa9 \xf0\x9d\x84\x9e'}", JQ_OK),
	};
	RUN_CASES(cases);
}

static void request_bad_json(void **state)
{
	(void)state;
	static const struct rcase cases[] = {
		ROW("", JQ_BAD_JSON),
		ROW("   ", JQ_BAD_JSON),
		/* Not an object. */
		NAMES("[]", JQ_BAD_JSON, "object"),
		ROW("[{'op':'ping'}]", JQ_BAD_JSON),
		ROW("1", JQ_BAD_JSON),
		ROW("'ping'", JQ_BAD_JSON),
		ROW("null", JQ_BAD_JSON),
		ROW("true", JQ_BAD_JSON),
		/* Trailing garbage, two objects. */
		ROW("{'op':'ping'} x", JQ_BAD_JSON),
		ROW("{'op':'ping'}{}", JQ_BAD_JSON),
		ROW("{'op':'ping'},", JQ_BAD_JSON),
		/* Not RFC 8259. */
		ROW("{'op':'put','item':NaN}", JQ_BAD_JSON),
		ROW("{'op':'put','item':Infinity}", JQ_BAD_JSON),
		ROW("{'op':'put','item':-Infinity}", JQ_BAD_JSON),
		ROW("{'op':'put','item':01}", JQ_BAD_JSON),
		ROW("{'op':'put','item':-01}", JQ_BAD_JSON),
		ROW("{'op':'put','item':+1}", JQ_BAD_JSON),
		ROW("{'op':'put','item':.5}", JQ_BAD_JSON),
		ROW("{'op':'put','item':1.}", JQ_BAD_JSON),
		ROW("{'op':'put','item':0x10}", JQ_BAD_JSON),
		ROW("{'op':'put','item':'a\x01'}", JQ_BAD_JSON),
		ROW("{'op':'put','item':'a\tb'}", JQ_BAD_JSON),
		ROW("{'op':'put','item':'a\x1f'}", JQ_BAD_JSON),
		ROW("{'op':'put','item':'\\x41'}", JQ_BAD_JSON),
		ROW("{'op':'put','item':'\\ud800'}", JQ_BAD_JSON),
		ROW("{'op':'ping'} // a comment", JQ_BAD_JSON),
		ROW("{/* a comment */'op':'ping'}", JQ_BAD_JSON),
		ROW("{'op':'ping',}", JQ_BAD_JSON),
		ROW("{op:'ping'}", JQ_BAD_JSON),
		RAW("{\"op\":'ping'}", JQ_BAD_JSON),   /* raw: quotes */
		ROW("{'op':'ping'", JQ_BAD_JSON),
		ROW("{'op':'ping", JQ_BAD_JSON),
		ROW("{'op' 'ping'}", JQ_BAD_JSON),
		ROW("{'op':'put','item':[1,]}", JQ_BAD_JSON),
		ROW("\xef\xbb\xbf{'op':'ping'}", JQ_BAD_JSON),  /* BOM */
		/* Whitespace around the object is allowed. */
		ROW(" \t{'op':'ping'}\t \r", JQ_OK),
		ROW("{ 'op' : 'ping' }", JQ_OK),
	};
	RUN_CASES(cases);
}

static void request_depth_limit(void **state)
{
	(void)state;
	static const struct rcase cases[] = {
		/* The request object itself is depth 1. */
		DEPTH("{'op':'ping'}", JQ_OK, 1),
		{ "{'op':'put','item':[]}",
		    JQ_BAD_JSON, "max_depth", 1, false },
		DEPTH("{'op':'put','item':{'a':[1]}}", JQ_OK, 3),
		{ "{'op':'put','item':{'a':[[1]]}}",
		    JQ_BAD_JSON, "max_depth", 3, false },
		DEPTH("{'op':'put','item':[[],[],[],{}]}", JQ_OK, 3),
		DEPTH("{'op':'put','item':[[[]],[]]}", JQ_BAD_JSON, 3),
		/* Brackets inside strings are data. */
		DEPTH("{'op':'put','item':'[[[[{{{{'}", JQ_OK, 1),
		DEPTH("{'op':'put','item':'}}]]'}", JQ_OK, 1),
		DEPTH("{'op':'put','item':'\\'[[[['}", JQ_OK, 1),
		DEPTH("{'op':'put','[[[[':1,'item':1}", JQ_OK, 1),
		/* An escaped backslash, then the closing quote. */
		DEPTH("{'op':'put','item':'\\\\','x':[[1]]}", JQ_BAD_JSON, 2),
		DEPTH("{'op':'put','item':'\\\\','x':[1]}", JQ_OK, 2),
	};
	RUN_CASES(cases);
}

/* The default limit: 64 deep passes, 65 does not. */
static void request_depth_at_default_limit(void **state)
{
	(void)state;
	char f[512];
	struct request r;
	struct errinfo e;

	for (unsigned depth = 62; depth <= 66; depth++) {
		size_t n = (size_t)snprintf(f, sizeof f,
		                            "{\"op\":\"put\",\"item\":");
		for (unsigned i = 1; i < depth; i++)
			f[n++] = '[';
		f[n++] = '1';
		for (unsigned i = 1; i < depth; i++)
			f[n++] = ']';
		f[n++] = '}';
		int rc = judge(f, n, DEFAULT_DEPTH, &r, &e);
		assert_int_equal(rc, depth <= DEFAULT_DEPTH ? JQ_OK
		                                            : JQ_BAD_JSON);
		request_free(&r);
	}
}

static void request_bad_request(void **state)
{
	(void)state;
	static const struct rcase cases[] = {
		/* op missing or not a string; null is absent. */
		NAMES("{}", JQ_BAD_REQUEST, "'op'"),
		NAMES("{'queue':'jobs'}", JQ_BAD_REQUEST, "'op'"),
		NAMES("{'op':null}", JQ_BAD_REQUEST, "'op'"),
		NAMES("{'op':1}", JQ_BAD_REQUEST, "'op'"),
		NAMES("{'op':true}", JQ_BAD_REQUEST, "'op'"),
		NAMES("{'op':['ping']}", JQ_BAD_REQUEST, "'op'"),
		NAMES("{'op':{'name':'ping'}}", JQ_BAD_REQUEST, "'op'"),
		/* block */
		NAMES("{'op':'get','block':1}", JQ_BAD_REQUEST, "'block'"),
		NAMES("{'op':'get','block':'true'}", JQ_BAD_REQUEST, "'block'"),
		NAMES("{'op':'put','item':1,'block':0}",
		    JQ_BAD_REQUEST, "'block'"),
		NAMES("{'op':'join','block':[]}", JQ_BAD_REQUEST, "'block'"),
		/* timeout */
		NAMES("{'op':'get','timeout':-1}", JQ_BAD_REQUEST, "'timeout'"),
		NAMES("{'op':'get','timeout':-0.001}",
		    JQ_BAD_REQUEST, "'timeout'"),
		NAMES("{'op':'get','timeout':'5'}",
		    JQ_BAD_REQUEST, "'timeout'"),
		NAMES("{'op':'get','timeout':true}",
		    JQ_BAD_REQUEST, "'timeout'"),
		NAMES("{'op':'put','item':1,'timeout':[]}",
		    JQ_BAD_REQUEST, "'timeout'"),
		NAMES("{'op':'join','timeout':-5}",
		    JQ_BAD_REQUEST, "'timeout'"),
		/* lease */
		NAMES("{'op':'get','lease':0}", JQ_BAD_REQUEST, "'lease'"),
		NAMES("{'op':'get','lease':0.0}", JQ_BAD_REQUEST, "'lease'"),
		NAMES("{'op':'get','lease':-1}", JQ_BAD_REQUEST, "'lease'"),
		NAMES("{'op':'get','lease':'30'}", JQ_BAD_REQUEST, "'lease'"),
		/* task */
		NAMES("{'op':'task_done'}", JQ_BAD_REQUEST, "'task'"),
		NAMES("{'op':'task_done','task':null}",
		    JQ_BAD_REQUEST, "'task'"),
		NAMES("{'op':'task_done','task':0}", JQ_BAD_REQUEST, "'task'"),
		NAMES("{'op':'task_done','task':-1}", JQ_BAD_REQUEST, "'task'"),
		NAMES("{'op':'task_done','task':1.5}",
		    JQ_BAD_REQUEST, "'task'"),
		NAMES("{'op':'task_done','task':'3'}",
		    JQ_BAD_REQUEST, "'task'"),
		NAMES("{'op':'task_done','task':true}",
		    JQ_BAD_REQUEST, "'task'"),
		NAMES("{'op':'release'}", JQ_BAD_REQUEST, "'task'"),
		NAMES("{'op':'release','task':0}", JQ_BAD_REQUEST, "'task'"),
		NAMES("{'op':'release','task':[3]}", JQ_BAD_REQUEST, "'task'"),
		/* delay */
		NAMES("{'op':'release','task':3,'delay':-1}",
		    JQ_BAD_REQUEST, "'delay'"),
		NAMES("{'op':'release','task':3,'delay':'1'}",
		    JQ_BAD_REQUEST, "'delay'"),
		/* item */
		NAMES("{'op':'put'}", JQ_BAD_REQUEST, "'item'"),
		NAMES("{'op':'put','items':1}", JQ_BAD_REQUEST, "'item'"),
		/* noreply */
		NAMES("{'op':'ping','noreply':1}", JQ_BAD_REQUEST, "'noreply'"),
		NAMES("{'op':'put','item':1,'noreply':'yes'}",
		    JQ_BAD_REQUEST, "'noreply'"),
		NAMES("{'op':'get','noreply':true}", JQ_BAD_REQUEST, "noreply"),
		/* declare's settings: integers in range, a queue name */
		NAMES("{'op':'declare','maxsize':-1}",
		    JQ_BAD_REQUEST, "'maxsize'"),
		NAMES("{'op':'declare','maxsize':2.0}",
		    JQ_BAD_REQUEST, "'maxsize'"),
		NAMES("{'op':'declare','maxsize':'3'}",
		    JQ_BAD_REQUEST, "'maxsize'"),
		NAMES("{'op':'declare','maxsize':true}",
		    JQ_BAD_REQUEST, "'maxsize'"),
		NAMES("{'op':'declare','max_deliveries':-1}",
		    JQ_BAD_REQUEST, "'max_deliveries'"),
		NAMES("{'op':'declare','max_deliveries':4294967296}",
		    JQ_BAD_REQUEST, "4294967295"),
		NAMES("{'op':'declare','max_deliveries':[1]}",
		    JQ_BAD_REQUEST, "'max_deliveries'"),
		NAMES("{'op':'declare','dead_letter':1}",
		    JQ_BAD_REQUEST, "'dead_letter'"),
		NAMES("{'op':'declare','dead_letter':['x']}",
		    JQ_BAD_REQUEST, "'dead_letter'"),
		NAMES("{'op':'declare','dead_letter':''}",
		    JQ_BAD_QUEUE, "'dead_letter'"),
		NAMES("{'op':'declare','dead_letter':'a b'}",
		    JQ_BAD_QUEUE, "'dead_letter'"),
		NAMES("{'op':'declare','queue':'q','dead_letter':'q'}",
		    JQ_BAD_REQUEST, "itself"),
		NAMES("{'op':'declare','dead_letter':'default'}",
		    JQ_BAD_REQUEST, "itself"),
		/* In the order the protocol names them: maxsize first, ... */
		ROW("{'op':'declare','maxsize':-1,'max_deliveries':-1}",
		    JQ_BAD_REQUEST),
		NAMES("{'op':'declare','dead_letter':'a b','maxsize':-1}",
		    JQ_BAD_REQUEST, "'maxsize'"),
		NAMES("{'op':'declare','dead_letter':'a b','max_deliveries':-1}",
		    JQ_BAD_REQUEST, "'max_deliveries'"),
		/* Fine: the same fields in range. */
		ROW("{'op':'declare','maxsize':0,'max_deliveries':0,"
		    "'dead_letter':'x'}", JQ_OK),
		ROW("{'op':'declare','maxsize':9223372036854775807,"
		    "'max_deliveries':4294967295}", JQ_OK),
		ROW("{'op':'declare','maxsize':null,'max_deliveries':null,"
		    "'dead_letter':null}", JQ_OK),
		ROW("{'op':'declare','dead_letter':'off'}", JQ_OK),
		/* Fields only declare takes. */
		ROW("{'op':'purge','maxsize':-1,'dead_letter':7}", JQ_OK),
		ROW("{'op':'put','item':1,'max_deliveries':'x'}", JQ_OK),
		ROW("{'op':'get','noreply':false}", JQ_OK),
		ROW("{'op':'get','block':false,'timeout':0,'lease':0.001}",
		    JQ_OK),
		ROW("{'op':'get','timeout':-0}", JQ_OK),
		ROW("{'op':'put','item':null}", JQ_OK),
		ROW("{'op':'put','item':1,'noreply':true}", JQ_OK),
		ROW("{'op':'release','task':3,'delay':0}", JQ_OK),
		ROW("{'op':'task_done','task':9007199254740991}", JQ_OK),
		/* A field an op does not take is ignored, whatever it holds. */
		ROW("{'op':'task_done','task':1,'block':'x','lease':-1}",
		    JQ_OK),
		ROW("{'op':'qsize','timeout':'x','item':[]}", JQ_OK),
		ROW("{'op':'ping','task':-1}", JQ_OK),
	};
	RUN_CASES(cases);
}

static void request_unknown_op(void **state)
{
	(void)state;
	static const struct rcase cases[] = {
		NAMES("{'op':'PING'}", JQ_UNKNOWN_OP, "'op'"),
		ROW("{'op':'Ping'}", JQ_UNKNOWN_OP),
		ROW("{'op':'ping\\u0000x'}", JQ_UNKNOWN_OP),
		ROW("{'op':'ping\\u0000'}", JQ_UNKNOWN_OP),
		ROW("{'op':''}", JQ_UNKNOWN_OP),
		ROW("{'op':' ping'}", JQ_UNKNOWN_OP),
		ROW("{'op':'pin'}", JQ_UNKNOWN_OP),
		ROW("{'op':'pingg'}", JQ_UNKNOWN_OP),
		ROW("{'op':'taskdone'}", JQ_UNKNOWN_OP),
		ROW("{'op':'get_nowait'}", JQ_UNKNOWN_OP),
		/* unknown_op is judged before the queue. */
		ROW("{'op':'nope','queue':''}", JQ_UNKNOWN_OP),
		ROW("{'op':'nope','queue':7}", JQ_UNKNOWN_OP),
		/* Every op of protocol 1 is known. */
		ROW("{'op':'put','item':1}", JQ_OK),
		ROW("{'op':'get'}", JQ_OK),
		ROW("{'op':'task_done','task':1}", JQ_OK),
		ROW("{'op':'release','task':1}", JQ_OK),
		ROW("{'op':'join'}", JQ_OK),
		ROW("{'op':'qsize'}", JQ_OK),
		ROW("{'op':'empty'}", JQ_OK),
		ROW("{'op':'full'}", JQ_OK),
		ROW("{'op':'ping'}", JQ_OK),
		ROW("{'op':'stats'}", JQ_OK),
		ROW("{'op':'auth','token':'x'}", JQ_OK),
		ROW("{'op':'declare'}", JQ_OK),
		ROW("{'op':'purge'}", JQ_OK),
		ROW("{'op':'delete'}", JQ_OK),
		NAMES("{'op':'drop'}", JQ_UNKNOWN_OP, "delete"),
	};
	RUN_CASES(cases);
}

static void request_bad_queue(void **state)
{
	(void)state;
	static const struct rcase cases[] = {
		NAMES("{'op':'qsize','queue':''}", JQ_BAD_QUEUE, "'queue'"),
		ROW("{'op':'qsize','queue':'a b'}", JQ_BAD_QUEUE),
		ROW("{'op':'qsize','queue':'a/b'}", JQ_BAD_QUEUE),
		ROW("{'op':'qsize','queue':'a*'}", JQ_BAD_QUEUE),
		ROW("{'op':'qsize','queue':'caf\xc3\xa9'}", JQ_BAD_QUEUE),
		ROW("{'op':'qsize','queue':'a\\u0000b'}", JQ_BAD_QUEUE),
		ROW("{'op':'qsize','queue':'a\\n'}", JQ_BAD_QUEUE),
		ROW("{'op':'qsize','queue':1}", JQ_BAD_QUEUE),
		ROW("{'op':'qsize','queue':true}", JQ_BAD_QUEUE),
		ROW("{'op':'qsize','queue':['a']}", JQ_BAD_QUEUE),
		ROW("{'op':'qsize','queue':{}}", JQ_BAD_QUEUE),
		/* For every op, even those that ignore the queue. */
		ROW("{'op':'ping','queue':''}", JQ_BAD_QUEUE),
		ROW("{'op':'stats','queue':'?'}", JQ_BAD_QUEUE),
		ROW("{'op':'auth','queue':'?'}", JQ_BAD_QUEUE),
		ROW("{'op':'task_done','task':1,'queue':'?'}", JQ_BAD_QUEUE),
		/* bad_queue is judged before the op's own fields. */
		ROW("{'op':'put','queue':''}", JQ_BAD_QUEUE),
		ROW("{'op':'get','queue':'a b','block':1}", JQ_BAD_QUEUE),
		ROW("{'op':'get','queue':'!','noreply':true}", JQ_BAD_QUEUE),
		ROW("{'op':'ping','queue':'!','noreply':7}", JQ_BAD_QUEUE),
		ROW("{'op':'task_done','queue':'!','task':-1}", JQ_BAD_QUEUE),
		ROW("{'op':'declare','queue':'!','maxsize':-1}", JQ_BAD_QUEUE),
		ROW("{'op':'purge','queue':'!'}", JQ_BAD_QUEUE),
		ROW("{'op':'delete','queue':''}", JQ_BAD_QUEUE),
		/* ... but after op. */
		ROW("{'queue':''}", JQ_BAD_REQUEST),
		ROW("{'op':5,'queue':''}", JQ_BAD_REQUEST),
		/* Valid names: every allowed character; null is absent. */
		ROW("{'op':'qsize','queue':'AZaz09_.:-'}", JQ_OK),
		ROW("{'op':'qsize','queue':'.'}", JQ_OK),
		ROW("{'op':'qsize','queue':null}", JQ_OK),
	};
	RUN_CASES(cases);
}

static void request_queue_name_lengths(void **state)
{
	(void)state;
	assert_int_equal(queue_verdict(1, ""), JQ_OK);
	assert_int_equal(queue_verdict(128, ""), JQ_OK);
	assert_int_equal(queue_verdict(129, ""), JQ_BAD_QUEUE);
	assert_int_equal(queue_verdict(130, ""), JQ_BAD_QUEUE);
	assert_int_equal(queue_verdict(128, ".dead"), JQ_OK);
	/* Past 128 bytes only a dead-letter name, NAME.dead, up to 133. */
	assert_int_equal(queue_verdict(129, ".dead"), JQ_OK);
	assert_int_equal(queue_verdict(133, ".dead"), JQ_OK);
	assert_int_equal(queue_verdict(134, ".dead"), JQ_BAD_QUEUE);
	assert_int_equal(queue_verdict(133, ".DEAD"), JQ_BAD_QUEUE);
	assert_int_equal(queue_verdict(130, ".deax"), JQ_BAD_QUEUE);
	assert_int_equal(queue_verdict(133, ".dea"), JQ_BAD_QUEUE);
	assert_int_equal(queue_verdict(133, "dead"), JQ_BAD_QUEUE);
	assert_int_equal(queue_verdict(131, "!.dead"), JQ_BAD_QUEUE);
	assert_int_equal(queue_verdict(1000, ""), JQ_BAD_QUEUE);
}

static void queue_name_valid_direct(void **state)
{
	(void)state;
	assert_true(queue_name_valid("jobs", 4));
	assert_true(queue_name_valid("jobs!", 4));   /* only len bytes count */
	assert_false(queue_name_valid("jobs", 0));
	assert_false(queue_name_valid("a\0b", 3));
	assert_false(queue_name_valid("a b", 3));
	assert_false(queue_name_valid("\xc3\xa9", 2));
}

/* ---- request fields ------------------------------------------------------ */

static void request_defaults_for_absent_fields(void **state)
{
	(void)state;
	struct request r;
	char *f = accept_frame("{'op':'get'}", &r);
	assert_int_equal(r.op, OP_GET);
	assert_int_equal(r.queue_len, strlen(DEFAULT_QUEUE));
	assert_memory_equal(r.queue, DEFAULT_QUEUE, r.queue_len);
	assert_string_equal(r.queue, "default");
	assert_true(r.block);
	assert_true(r.timeout < 0);                /* wait forever */
	assert_true(r.lease == 0);
	assert_true(r.delay == 0);
	assert_false(r.noreply);
	assert_null(r.id.p);
	assert_false(jfield_present(&r.field[RF_TOKEN]));
	assert_null(r.item.p);
	done(&r, f);
}

static void request_null_optional_fields_are_absent(void **state)
{
	(void)state;
	struct request r;
	char *f = accept_frame("{'op':'get','queue':null,'block':null,"
	       "'timeout':null,'lease':null,'noreply':null,'token':null,"
	       "'id':null}", &r);
	assert_string_equal(r.queue, "default");
	assert_true(r.block);
	assert_true(r.timeout < 0);
	assert_true(r.lease == 0);
	assert_false(r.noreply);
	assert_false(jfield_present(&r.field[RF_TOKEN]));
	/* id is the exception: a JSON null is kept, to be echoed. */
	EXPECT_JTEXT(&r.id, "null");
	done(&r, f);

	f = accept_frame("{'op':'release','task':4,'delay':null}", &r);
	assert_int_equal(r.task, 4);
	assert_true(r.delay == 0);
	done(&r, f);
}

static void request_put_keeps_item_of_any_type(void **state)
{
	(void)state;
	static const char *const items[] = {
		"null", "0", "-7", "1.5", "true", "false", "\"x\"", "[]", "{}",
		"[1,{\"a\":[null]}]", "\"a\\u0000b\"",
	};
	for (size_t i = 0; i < sizeof items / sizeof *items; i++) {
		char f[128];
		struct request r;
		struct errinfo e;
		snprintf(f, sizeof f, "{\"op\":\"put\",\"item\":%s}", items[i]);
		assert_int_equal(judge(f, strlen(f), DEFAULT_DEPTH, &r, &e),
		                 JQ_OK);
		assert_int_equal(r.op, OP_PUT);
		json_t *want = load(items[i]);
		json_t *got = jtext_load(&r.item);
		assert_true(json_equal(got, want));
		json_decref(got);
		json_decref(want);
		/* Compact already: the very text sent, not a copy. */
		expect_jtext("item", &r.item, items[i], strlen(items[i]));
		assert_true(in_frame(&r.item, f, strlen(f)));
		request_free(&r);
	}
}

static void request_item_with_nul_round_trips(void **state)
{
	(void)state;
	struct request r;
	struct buf b = { 0 };
	/* The frame outlives r: r.item points into it. */
	static const char frame[] = "{\"op\":\"put\",\"item\":\"a\\u0000b\"}";
	struct errinfo e;
	assert_int_equal(judge(frame, sizeof frame - 1, DEFAULT_DEPTH, &r, &e),
	                 JQ_OK);
	EXPECT_JTEXT(&r.item, "\"a\\u0000b\"");
	json_t *item = jtext_load(&r.item);
	assert_true(json_is_string(item));
	assert_int_equal(json_string_length(item), 3);
	assert_memory_equal(json_string_value(item), "a\0b", 3);
	json_decref(item);
	reply_raw(&b, "item", r.item.p, r.item.len);
	EXPECT_BUF(&b, ",\"item\":\"a\\u0000b\"");
	request_free(&r);
}

static void request_fields_parsed(void **state)
{
	(void)state;
	struct request r;
	char *f;

	f = accept_frame("{'op':'get','queue':'jobs','block':false,"
	       "'timeout':2.5,'lease':0.25}", &r);
	assert_int_equal(r.op, OP_GET);
	assert_int_equal(r.queue_len, 4);
	assert_memory_equal(r.queue, "jobs", 4);
	assert_false(r.block);
	assert_true(r.timeout == 2.5);
	assert_true(r.lease == 0.25);
	done(&r, f);

	f = accept_frame("{'op':'put','item':1,'timeout':0,'noreply':true}",
	                 &r);
	assert_true(r.timeout == 0);
	assert_true(r.noreply);
	done(&r, f);

	f = accept_frame("{'op':'release','task':12,'delay':1.5}", &r);
	assert_int_equal(r.op, OP_RELEASE);
	assert_int_equal(r.task, 12);
	assert_true(r.delay == 1.5);
	done(&r, f);

	f = accept_frame("{'op':'task_done','task':9223372036854775807}", &r);
	assert_int_equal(r.task, UINT64_C(9223372036854775807));
	done(&r, f);

	f = accept_frame("{'op':'declare','queue':'q','maxsize':3,"
	                 "'max_deliveries':4294967295,'dead_letter':'q\\u002edead'}",
	                 &r);
	assert_int_equal(r.op, OP_DECLARE);
	assert_true(r.has_maxsize);
	assert_int_equal(r.maxsize, 3);
	assert_true(r.has_max_deliveries);
	assert_int_equal(r.max_deliveries, UINT32_MAX);
	assert_string_equal(r.dead_letter, "q.dead");   /* escapes decoded */
	done(&r, f);
	f = accept_frame("{'op':'declare'}", &r);
	assert_false(r.has_maxsize);
	assert_false(r.has_max_deliveries);
	assert_null(r.dead_letter);
	done(&r, f);
	/* A queue name too long for NAME.dead needs its dead_letter named
	 * when it names max_deliveries. */
	char long_name[200];
	memset(long_name, 'x', 125);
	memcpy(long_name + 125, ".dead", sizeof ".dead");
	char frame[400];
	snprintf(frame, sizeof frame, "{'op':'declare','queue':'%s',"
	         "'max_deliveries':1}", long_name);
	assert_int_equal(verdict(frame, 0), JQ_BAD_REQUEST);
	snprintf(frame, sizeof frame, "{'op':'declare','queue':'%s',"
	         "'max_deliveries':1,'dead_letter':'dl'}", long_name);
	assert_int_equal(verdict(frame, 0), JQ_OK);
	snprintf(frame, sizeof frame, "{'op':'declare','queue':'%s',"
	         "'max_deliveries':0}", long_name);
	assert_int_equal(verdict(frame, 0), JQ_OK);

	f = accept_frame("{'op':'ping','token':'s3cret'}", &r);
	char buf[64];
	const char *tok;
	assert_int_equal(token_of(&r, buf, &tok), 6);
	assert_memory_equal(tok, "s3cret", 6);
	done(&r, f);
}

static void request_huge_seconds_are_capped(void **state)
{
	(void)state;
	struct request r;
	char *f = accept_frame("{'op':'get','timeout':1e300,'lease':1e12}", &r);
	assert_true(r.timeout == JQ_SECONDS_MAX);
	assert_true(r.lease == JQ_SECONDS_MAX);
	done(&r, f);
	f = accept_frame("{'op':'release','task':1,'delay':5000000000}", &r);
	assert_true(r.delay == JQ_SECONDS_MAX);
	done(&r, f);
	f = accept_frame("{'op':'join','timeout':999999999}", &r);
	assert_true(r.timeout == 999999999.0);
	done(&r, f);
}

static void request_escapes_equal_raw_characters(void **state)
{
	(void)state;
	struct request r;
	char *f;
	/* Keys, op and queue all spelled with \u escapes. */
	f = accept_frame("{'\\u006fp':'\\u0070ut','\\u0071ueue':'j\\u006fbs',"
	       "'\\u0069tem':1,'\\u0069d':'\\u00e9'}", &r);
	assert_int_equal(r.op, OP_PUT);
	assert_string_equal(r.queue, "jobs");
	EXPECT_JTEXT(&r.item, "1");
	/* The id means é, and is kept as it was spelled. */
	EXPECT_JTEXT(&r.id, "\"\\u00e9\"");
	json_t *id = jtext_load(&r.id);
	assert_true(json_is_string(id));
	assert_string_equal(json_string_value(id), "\xc3\xa9");
	json_decref(id);
	done(&r, f);

	f = accept_frame("{'op':'t\\u0061sk_done','t\\u0061sk':3}", &r);
	assert_int_equal(r.op, OP_TASK_DONE);
	assert_int_equal(r.task, 3);
	done(&r, f);

	/* An escaped character that is not allowed in a name stays bad. */
	assert_int_equal(verdict("{'op':'qsize','queue':'a\\u0020b'}", 0),
	                 JQ_BAD_QUEUE);
	assert_int_equal(verdict("{'op':'qsize','queue':'a\\u002fb'}", 0),
	                 JQ_BAD_QUEUE);
	/* "\/" is "/". */
	assert_int_equal(verdict("{'op':'qsize','queue':'a\\/b'}", 0),
	                 JQ_BAD_QUEUE);
}

static void request_unknown_fields_ignored(void **state)
{
	(void)state;
	struct request r;
	char *f = accept_frame("{'op':'ping','foo':[1,{'x':2}],'bar':null,"
	       "'Op':'nope','QUEUE':''}", &r);
	assert_int_equal(r.op, OP_PING);
	assert_string_equal(r.queue, "default");
	done(&r, f);
}

static void request_id_of_every_type_kept(void **state)
{
	(void)state;
	static const char *const ids[] = {
		"7", "-3", "0", "1.5", "\"abc\"", "\"\"", "null", "true",
		"false", "[1,\"a\"]", "{\"k\":[{}]}", "9007199254740993",
	};
	for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
		char f[128];
		struct request r;
		struct errinfo e;
		snprintf(f, sizeof f, "{\"op\":\"ping\",\"id\":%s}", ids[i]);
		assert_int_equal(judge(f, strlen(f), DEFAULT_DEPTH, &r, &e),
		                 JQ_OK);
		json_t *want = load(ids[i]);
		json_t *got = jtext_load(&r.id);
		assert_true(json_equal(got, want));
		assert_int_equal(json_typeof(got), json_typeof(want));
		json_decref(got);
		json_decref(want);
		expect_jtext("id", &r.id, ids[i], strlen(ids[i]));
		/* Echoed by value: the same text comes back. */
		struct buf b = { 0 };
		reply_ok(&b, &r.id);
		reply_end(&b);
		char want_line[160];
		int n = snprintf(want_line, sizeof want_line,
		                 "{\"ok\":true,\"id\":%s}\n", ids[i]);
		expect_buf(&b, want_line, (size_t)n);
		request_free(&r);
	}
}

/* The id survives a request that fails its check, for the error reply. */
static void request_id_kept_when_check_fails(void **state)
{
	(void)state;
	struct request r;
	struct errinfo e;
	const char *row = "{'op':'nope','id':42}";
	char *f = dq(row, strlen(row));
	assert_int_equal(judge(f, strlen(f), DEFAULT_DEPTH, &r, &e),
	                 JQ_UNKNOWN_OP);
	EXPECT_JTEXT(&r.id, "42");
	struct buf b = { 0 };
	reply_error(&b, &r.id, e.code, "x");
	EXPECT_BUF(&b, "{\"ok\":false,\"id\":42,\"error\":\"unknown_op\","
	           "\"message\":\"x\"}\n");
	request_free(&r);
	free(f);
}

static void request_is_ping_only_for_exact_ping(void **state)
{
	(void)state;
	static const struct {
		const char *frame;
		bool ping;
	} cases[] = {
		{ "{'op':'ping'}", true },
		{ "{'op':'p\\u0069ng'}", true },
		{ "{'op':'ping','queue':''}", true },   /* before the check */
		{ "{'op':'PING'}", false },
		{ "{'op':'ping\\u0000x'}", false },
		{ "{'op':'ping\\u0000'}", false },
		{ "{'op':'pin'}", false },
		{ "{'op':1}", false },
		{ "{'op':null}", false },
		{ "{}", false },
		{ "{'token':'x','op':'auth'}", false },
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		struct request r;
		struct errinfo e;
		char *f = dq(cases[i].frame, strlen(cases[i].frame));
		assert_int_equal(request_decode(f, strlen(f), DEFAULT_DEPTH, &r,
		                                &e), JQ_OK);
		if (request_is_ping(&r) != cases[i].ping)
			note("%s\n", f);
		assert_int_equal(request_is_ping(&r), cases[i].ping);
		request_free(&r);
		free(f);
	}
}

static void request_decode_failure_leaves_nothing(void **state)
{
	(void)state;
	struct request r;
	struct errinfo e;
	assert_int_equal(request_decode("[1]", 3, DEFAULT_DEPTH, &r, &e),
	                 JQ_BAD_JSON);
	for (int k = 0; k < RF_COUNT; k++)
		assert_int_equal(r.field[k].kind, JK_ABSENT);
	assert_null(r.id.p);
	assert_null(r.item.p);
	request_free(&r);            /* safe after a failure */
	assert_int_equal(request_decode("{", 1, DEFAULT_DEPTH, &r, &e),
	                 JQ_BAD_JSON);
	assert_int_equal(r.field[RF_OP].kind, JK_ABSENT);
	request_free(&r);
}

/* ---- the id and item as text --------------------------------------------- *
 * The id and the item are kept as the client's JSON text with whitespace
 * outside strings removed.  Each row names the frame, the id and item text
 * it must give, and which of them must be copies (whitespace removed)
 * rather than pointers into the frame.  Every row is also checked against
 * jansson's own reading of the frame: the same member, the same value. */

#define ID_COPY 1u
#define ITEM_COPY 2u

struct mcase {
	const char *frame;         /* ' stands for " unless raw */
	const char *id;            /* the id's text, ' for "; NULL: absent */
	const char *item;          /* the item's text, likewise */
	unsigned copied;           /* ID_COPY, ITEM_COPY */
	bool raw;                  /* frame, id and item taken byte for byte */
};

/* A row; one with copies; one taken byte for byte. */
#define M(frame, id, item) { (frame), (id), (item), 0, false }
#define MC(frame, id, item, copied) { (frame), (id), (item), (copied), false }
#define MRAW(frame, id, item, copied) { (frame), (id), (item), (copied), true }

static const char *member_text_wrong(const struct jtext *t, const char *owned,
                                     const char *f, size_t len,
                                     const char *want, bool copied,
                                     const json_t *root, json_t *j);

/* Why member k (0: id, 1: item) of r, decoded from f[0..len), is not want
 * (NULL: absent); NULL if it is. */
static const char *member_wrong(const struct request *r, int k, const char *f,
                                size_t len, const char *want, bool copied)
{
	const struct jtext *t = k ? &r->item : &r->id;
	/* jansson's reading of the frame; it cannot read one with a \u0000
	 * in a key, and then only the text is checked. */
	json_t *root = json_loadb(f, len, JSON_ALLOW_NUL, NULL);
	json_t *j = json_object_get(root, k ? "item" : "id");
	const char *why = member_text_wrong(t, r->owned[k], f, len, want,
	                                     copied, root, j);
	json_decref(root);
	return why;
}

static const char *member_text_wrong(const struct jtext *t, const char *owned,
                                     const char *f, size_t len,
                                     const char *want, bool copied,
                                     const json_t *root, json_t *j)
{
	if (!want)
		return t->p ? "present, want absent" :
		       j ? "absent, but jansson has it" : NULL;
	if (!t->p)
		return "absent";
	if (t->len != strlen(want) || memcmp(t->p, want, t->len) != 0)
		return "wrong text";
	if (copied && (!owned || t->p != owned))
		return "not a compacted copy";
	if (!copied && (owned || !in_frame(t, f, len)))
		return "copied, want a pointer into the frame";
	if (!root)
		return NULL;
	json_error_t err;
	json_t *v = json_loadb(t->p, t->len, JSON_DECODE_ANY | JSON_ALLOW_NUL,
	                       &err);
	if (!v)   /* only a \u0000 in a key is beyond jansson */
		return json_error_code(&err) == json_error_null_byte_in_key ?
		       NULL : "not JSON";
	bool same = j && json_equal(v, j);
	json_decref(v);
	return same ? NULL : "not the value jansson reads";
}

/* Runs every row and fails once at the end, having printed each bad row. */
static void run_member_cases(const struct mcase *c, size_t n)
{
	int failures = 0;

	for (size_t i = 0; i < n; i++) {
		struct request r;
		struct errinfo e;
		size_t len = strlen(c[i].frame);
		char *f = c[i].raw ? strdup(c[i].frame) : dq(c[i].frame, len);
		const char *want[2] = { c[i].id, c[i].item };
		char *wq[2] = { NULL, NULL };

		for (int k = 0; k < 2; k++)
			if (want[k] && !c[i].raw)
				want[k] = wq[k] = dq(want[k], strlen(want[k]));
		int rc = request_decode(f, len, DEFAULT_DEPTH, &r, &e);
		if (rc != JQ_OK) {
			note("row %zu %s: %s: %s\n", i, f, errcode_name(rc),
			     e.message);
			failures++;
		}
		for (int k = 0; k < 2 && rc == JQ_OK; k++) {
			bool copied = c[i].copied & (k ? ITEM_COPY : ID_COPY);
			const char *why = member_wrong(&r, k, f, len, want[k],
			                               copied);
			if (!why)
				continue;
			const struct jtext *t = k ? &r.item : &r.id;
			note("row %zu %s: %s: %s: got [%.*s], want [%s]\n", i,
			     f, k ? "item" : "id", why, t->p ? (int)t->len : 0,
			     t->p ? t->p : "", want[k] ? want[k] : "(absent)");
			failures++;
		}
		request_free(&r);
		free(wq[0]);
		free(wq[1]);
		free(f);
	}
	assert_int_equal(failures, 0);
}

#define RUN_MEMBERS(t) run_member_cases((t), sizeof(t) / sizeof *(t))

static void request_members_top_level_only(void **state)
{
	(void)state;
	static const struct mcase cases[] = {
		M("{}", NULL, NULL),
		M("{'op':'ping'}", NULL, NULL),
		/* Inside other members' values: not the request's. */
		M("{'op':'ping','x':{'id':1,'item':2}}", NULL, NULL),
		M("{'op':'ping','x':[{'id':1},{'item':2}]}", NULL, NULL),
		M("{'op':'ping','x':{'y':{'id':1}},'id':2}", "2", NULL),
		M("{'x':{'id':1},'op':'put','item':{'id':3,'item':4},"
		  "'y':[{'item':5}]}", NULL, "{'id':3,'item':4}"),
		M("{'op':'put','item':[{'item':1}],'id':{'id':{'id':0}}}",
		  "{'id':{'id':0}}", "[{'item':1}]"),
		/* A nested one after the top-level one does not replace it. */
		M("{'id':1,'op':'ping','x':{'id':2}}", "1", NULL),
		M("{'item':1,'op':'put','x':[{'item':2}],"
		  "'y':{'z':{'item':3}}}", NULL, "1"),
		/* Named in a string value, not as a key. */
		M("{'op':'ping','x':'id','y':['item']}", NULL, NULL),
		M("{'op':'ping','x':'\\'id\\':1,\\'item\\':2'}", NULL, NULL),
		M("{'op':'ping','x':'{\\'id\\':1}','id':'}'}", "'}'", NULL),
		/* Near misses. */
		M("{'op':'ping','ids':1,'Id':2,'ID':3,' id':4,'id ':5,'i':6,"
		  "'d':7,'':8}", NULL, NULL),
		M("{'op':'put','items':1,'Item':2,'ite':3,'itemx':4}",
		  NULL, NULL),
		M("{'op':'ping','id':{'item':1}}", "{'item':1}", NULL),
	};
	RUN_MEMBERS(cases);
}

static void request_members_escaped_key_names(void **state)
{
	(void)state;
	static const struct mcase cases[] = {
		M("{'op':'ping','\\u0069d':5}", "5", NULL),
		M("{'op':'ping','i\\u0064':5}", "5", NULL),
		M("{'op':'ping','\\u0069\\u0064':5}", "5", NULL),
		M("{'op':'put','it\\u0065m':[1]}", NULL, "[1]"),
		M("{'op':'put','\\u0069\\u0074\\u0065\\u006D':[1]}",
		  NULL, "[1]"),                          /* upper-case hex */
		M("{'\\u0069d':'x','op':'put','\\u0069tem':{}}", "'x'", "{}"),
		/* Escapes that spell other keys. */
		M("{'op':'ping','\\u0049d':5}", NULL, NULL),      /* Id */
		M("{'op':'ping','i\\/d':5}", NULL, NULL),         /* i/d */
		M("{'op':'ping','\\u0069d\\u0020':5}", NULL, NULL),
		M("{'op':'ping','\\u0131d':5}", NULL, NULL),      /* ıd */
		M("{'op':'ping','\\u0069\\u0000d':5}", NULL, NULL),
		M("{'op':'ping','id\\u0000':5}", NULL, NULL),
		M("{'op':'ping','\\u0000id':5}", NULL, NULL),
		M("{'op':'put','item\\u0000':5}", NULL, NULL),
		/* The value keeps its own escapes. */
		M("{'op':'ping','\\u0069d':'\\u0069d'}", "'\\u0069d'", NULL),
		M("{'op':'ping','\\u0069d':'\\ud834\\udd1e'}",
		  "'\\ud834\\udd1e'", NULL),
		M("{'op':'put','it\\u0065m':'\\/\\b\\f\\n\\r\\t\\\\\\''}",
		  NULL, "'\\/\\b\\f\\n\\r\\t\\\\\\''"),
	};
	RUN_MEMBERS(cases);
}

static void request_members_duplicates_last_wins(void **state)
{
	(void)state;
	static const struct mcase cases[] = {
		M("{'id':1,'op':'ping','id':2}", "2", NULL),
		M("{'id':1,'id':2,'id':3,'op':'ping'}", "3", NULL),
		M("{'id':[1],'op':'ping','\\u0069d':'two'}", "'two'", NULL),
		M("{'\\u0069d':1,'op':'ping','id':null}", "null", NULL),
		M("{'op':'put','item':1,'item':{'a':2}}", NULL, "{'a':2}"),
		M("{'op':'put','item':{'a':2},'it\\u0065m':false,"
		  "'x':{'item':9}}", NULL, "false"),
		/* Only the winner is compacted. */
		M("{'op':'put','item':[ 1 ],'item':[2]}", NULL, "[2]"),
		MC("{'op':'put','item':[1],'item':[ 2 ]}", NULL, "[2]",
		   ITEM_COPY),
		MC("{'op':'put','item':[ 1 ],'item':2,'id':3,'id':{ }}",
		   "{}", "2", ID_COPY),
		/* Another key, not a duplicate. */
		M("{'id':1,'op':'ping','id\\u0000':2}", "1", NULL),
	};
	RUN_MEMBERS(cases);
}

/* Every kind of value, as the id and as the item, in several places of
 * the frame: the exact text sent comes back, never a copy, and is echoed
 * as it is. */
static void request_members_values_of_every_type(void **state)
{
	(void)state;
	static const char *const values[] = {
		"0", "-0", "7", "-12", "1.5", "-0.25e-3", "1E+10",
		"9007199254740993", "1e300",
		"true", "false", "null",
		"''", "'x'", "' '", "'a b'", "'a,b'", "'}'", "']'", "'{'",
		"'['", "':'", "'\\''", "'\\\\'", "'\\\\\\''", "'\\\\\\\\'",
		"'a\\'b,c\\'}'",
		"'\\u0000'", "'\\u00e9'", "'caf\xc3\xa9'", "'\\ud834\\udd1e'",
		"'\\/\\b\\f\\n\\r\\t'",
		"[]", "{}", "[[]]", "[{}]", "{'a':{}}",
		"[1,'a',null,true,false,1.5,{}]",
		"{'k':'}],{[','l':[']',',','\\'']}",
		"[',',{'a':']'},'\\\\\\\\',{'}':'{'}]",
		"{'a':{'b':[[],{}]},'c':'x\\'y'}",
		"{'id':1,'item':2}", "[{'id':[{'item':{}}]}]",
		"{'\\u0069d':'\\'}\\'','\\'':'\\\\'}",
	};
	/* @ stands for the value. */
	static const char *const frames[] = {
		"{'id':@,'op':'put','item':@}",
		"{'op':'put','item':@,'id':@,'x':0}",
		"{ 'item' : @ , 'id' : @ , 'op' : 'put' }",
		"{'x':['id','item'],'item':@,'y':{'id':1},'id':@,'op':'put'}",
	};
	int failures = 0;

	for (size_t i = 0; i < sizeof values / sizeof *values; i++) {
		char *v = dq(values[i], strlen(values[i]));
		for (size_t k = 0; k < sizeof frames / sizeof *frames; k++) {
			char *t = dq(frames[k], strlen(frames[k]));
			char line[512];
			struct buf fb = { 0 };
			struct request r;
			struct errinfo e;
			for (const char *c = t; *c; c++)
				if (*c == '@')
					buf_adds(&fb, v);
				else
					buf_addc(&fb, *c);
			free(t);
			buf_addc(&fb, '\0');
			const char *f = fb.p;
			size_t n = fb.len - 1;
			int rc = judge(f, n, DEFAULT_DEPTH, &r, &e);
			const char *why = rc != JQ_OK ? "rejected" : NULL;
			for (int m = 0; m < 2 && !why; m++)
				why = member_wrong(&r, m, f, n, v, false);
			if (!why) {
				struct buf b = { 0 };
				reply_ok(&b, &r.id);
				reply_raw(&b, "item", r.item.p, r.item.len);
				reply_end(&b);
				int m = snprintf(line, sizeof line,
				                 "{\"ok\":true,\"id\":%s,"
				                 "\"item\":%s}\n", v, v);
				if (b.len != (size_t)m ||
				    memcmp(b.p, line, b.len) != 0)
					why = "echoed differently";
				buf_free(&b);
			}
			if (why) {
				note("%s: %s (%s)\n", f, why, e.message);
				failures++;
			}
			request_free(&r);
			buf_free(&fb);
		}
		free(v);
	}
	assert_int_equal(failures, 0);
}

static void request_members_compacted(void **state)
{
	(void)state;
	static const struct mcase cases[] = {
		MC("{'op':'put','item':[1, 2]}", NULL, "[1,2]", ITEM_COPY),
		MC("{'op':'put','id':{ 'a' : 1 , 'b' : [ true , null ] },"
		   "'item':0}", "{'a':1,'b':[true,null]}", "0", ID_COPY),
		MRAW("{\"op\":\"put\",\"item\":[\t1,\r2\t]}",
		     NULL, "[1,2]", ITEM_COPY),
		/* A datagram may hold a LF: whitespace too. */
		MRAW("{\"op\":\"put\",\"item\":{\n\"a\"\n:\n[\r\n]\n}}",
		     NULL, "{\"a\":[]}", ITEM_COPY),
		MC("{'op':'put','item':[ [ ] , { } ],'id':{ }}",
		   "{}", "[[],{}]", ID_COPY | ITEM_COPY),
		/* Whitespace inside strings stays, keys and values alike. */
		MC("{'op':'put','item':[ ' a , b ' , 'c\\td' ]}",
		   NULL, "[' a , b ','c\\td']", ITEM_COPY),
		MC("{'op':'put','item':{ 'k e y' : ' v ' }}",
		   NULL, "{'k e y':' v '}", ITEM_COPY),
		MC("{'op':'put','item':[ 'caf\xc3\xa9 ' , '\\u00e9' ]}",
		   NULL, "['caf\xc3\xa9 ','\\u00e9']", ITEM_COPY),
		/* An escaped quote does not end a string; an escaped backslash
		 * before the quote does not stop it ending one. */
		MC("{'op':'put','item':[ 'x\\' ' , 1 ]}",
		   NULL, "['x\\' ',1]", ITEM_COPY),
		MC("{'op':'put','item':[ '\\\\' , ' ' ]}",
		   NULL, "['\\\\',' ']", ITEM_COPY),
		MC("{'op':'put','item':[ '\\\\\\' ' , ' \\\\' ]}",
		   NULL, "['\\\\\\' ',' \\\\']", ITEM_COPY),
		MC("{'op':'put','item':{ 'a\\' :' : ' b\\' ' , '\\\\' : [ ] }}",
		   NULL, "{'a\\' :':' b\\' ','\\\\':[]}", ITEM_COPY),
		/* Compact already: pointers into the frame, strings with
		 * spaces or not. */
		M("{'op':'put','item':[1,' a , b '],'id':{'k e y':' '}}",
		  "{'k e y':' '}", "[1,' a , b ']"),
		M("{'op':'put','item':'   '}", NULL, "'   '"),
		M("{'op':'put','item':{'a':[1,{'b':null}]}}",
		  NULL, "{'a':[1,{'b':null}]}"),
	};
	RUN_MEMBERS(cases);
}

static void request_members_whitespace_in_request_object(void **state)
{
	(void)state;
	static const struct mcase cases[] = {
		M("{ 'op' : 'put' , 'id' : 7 , 'item' : 'x' }", "7", "'x'"),
		M(" \t{'id' :1,'op':'put','item': 2}\t ", "1", "2"),
		M("{'op':'put',   'item'   :   null   ,   'id'   :   true   }",
		  "true", "null"),
		M("{'item':'a' , 'id':'b' , 'op':'put'}", "'b'", "'a'"),
		M("{'op':'put','item':-1.5e3 ,'id':0 }", "0", "-1.5e3"),
		M("{'op':'put','item':true\t,'id':false\r}", "false", "true"),
		M("{'op':'put','item' :  5  ,'id'\t:\t'x'\t}", "'x'", "5"),
		M("{ 'op' : 'put' , 'item' : [1] , 'id' : {} }", "{}", "[1]"),
		MRAW("{\t\"id\"\t:\t[1]\r,\r\"op\":\"put\",\"item\"\n:\n{}\n}",
		     "[1]", "{}", 0),
		MC("{'op':'put' , 'item' : [ 1 ] , 'id' : [ 2 ] }",
		   "[2]", "[1]", ID_COPY | ITEM_COPY),
	};
	RUN_MEMBERS(cases);
}

static void request_members_escaped_quotes_in_keys(void **state)
{
	(void)state;
	static const struct mcase cases[] = {
		M("{'op':'ping','a\\'b':1,'id':2}", "2", NULL),
		M("{'op':'ping','\\'id\\'':1}", NULL, NULL),
		M("{'op':'ping','\\'':{'id':1},'id':'\\''}", "'\\''", NULL),
		/* A key holding ":"id": */
		M("{'op':'ping','x\\':\\'id\\':':5,'id':6}", "6", NULL),
		M("{'op':'ping','id\\\\':1}", NULL, NULL),
		M("{'op':'ping','\\\\':1,'id':2}", "2", NULL),
		M("{'op':'put','\\\\\\'':1,'item':[]}", NULL, "[]"),
		M("{'op':'put','item\\'':1}", NULL, NULL),
		M("{'a\\'\\u0000':1,'op':'ping','id':3}", "3", NULL),
		M("{'\\u0000\\'':1,'op':'ping','id':3}", "3", NULL),
		M("{'op':'put','item':{'\\'id\\'':'\\'','\\\\':{'id':1}},"
		  "'id':'\\\\'}",
		  "'\\\\'", "{'\\'id\\'':'\\'','\\\\':{'id':1}}"),
	};
	RUN_MEMBERS(cases);
}

/* ---- \u0000 in object keys ------------------------------------------------ *
 * jansson cannot hold such a key; the request decodes anyway, the key is
 * an unknown field of the request, and inside an id or item it is kept. */

static void request_nul_key_is_an_unknown_field(void **state)
{
	(void)state;
	static const struct rcase cases[] = {
		ROW("{'op':'ping','o\\u0000p':'nope'}", JQ_OK),
		ROW("{'o\\u0000p':'nope','op':'ping'}", JQ_OK),
		ROW("{'\\u0000':1,'op':'put','item':1}", JQ_OK),
		ROW("{'op':'put','item':1,'\\u0000\\u0000':{'\\u0000':[]}}",
		    JQ_OK),
		ROW("{'op':'qsize','queue\\u0000':'!'}", JQ_OK),
		ROW("{'op':'get','block\\u0000':1,'timeout\\u0000':-1}", JQ_OK),
		NAMES("{'op\\u0000':'ping'}", JQ_BAD_REQUEST, "'op'"),
		NAMES("{'op':'put','item\\u0000':1}", JQ_BAD_REQUEST, "'item'"),
		/* A NUL key hides no other fault of the frame. */
		ROW("{'\\u0000':1,'op':'ping',}", JQ_BAD_JSON),
		ROW("{'\\u0000':1,'op':'ping'} x", JQ_BAD_JSON),
		ROW("{'\\u0000' 1,'op':'ping'}", JQ_BAD_JSON),
		ROW("{'\\u0000':01,'op':'ping'}", JQ_BAD_JSON),
		DEPTH("{'\\u0000':[[1]],'op':'ping'}", JQ_BAD_JSON, 2),
		ROW("{'\\u0000':'\xff','op':'ping'}", JQ_BAD_UTF8),
		ROW("{'\\u0000':1,'op':'nope'}", JQ_UNKNOWN_OP),
		ROW("{'\\u0000':1,'op':'qsize','queue':''}", JQ_BAD_QUEUE),
		ROW("{'\\u0000':1,'op':'get','block':1}", JQ_BAD_REQUEST),
	};
	RUN_CASES(cases);

	/* The known fields around it are all read. */
	struct request r;
	char *f = accept_frame("{'a\\u0000':1,'op':'get','queue':'jobs',"
	       "'\\u0000b':2,'timeout':2,'id':3,'token':'t','lease':5}", &r);
	assert_int_equal(r.op, OP_GET);
	assert_string_equal(r.queue, "jobs");
	assert_true(r.timeout == 2);
	assert_true(r.lease == 5);
	char buf[64];
	const char *tok;
	assert_int_equal(token_of(&r, buf, &tok), 1);
	assert_memory_equal(tok, "t", 1);
	EXPECT_JTEXT(&r.id, "3");
	done(&r, f);
}

static void request_nul_key_kept_in_item(void **state)
{
	(void)state;
	static const struct mcase cases[] = {
		M("{'op':'put','item':{'a\\u0000b':1}}",
		  NULL, "{'a\\u0000b':1}"),
		MC("{'op':'put','item':{ 'a\\u0000b' : 1 }}",
		   NULL, "{'a\\u0000b':1}", ITEM_COPY),
		M("{'op':'put','item':[{'\\u0000':{'x\\u0000y':['\\u0000']}}]}",
		  NULL, "[{'\\u0000':{'x\\u0000y':['\\u0000']}}]"),
		M("{'op':'put','item':{'\\u0000':1,'\\u0000':2}}",
		  NULL, "{'\\u0000':1,'\\u0000':2}"),
		M("{'\\u0000':0,'op':'put','item':{'\\u0000':1},'id':9}",
		  "9", "{'\\u0000':1}"),
	};
	RUN_MEMBERS(cases);

	/* Beyond jansson, so only the text can carry it; it goes back out
	 * byte for byte. */
	static const char frame[] =
		"{\"op\":\"put\",\"item\":{\"a\\u0000b\":1}}";
	struct request r;
	struct errinfo e;
	struct buf b = { 0 };
	json_error_t err;
	assert_int_equal(judge(frame, sizeof frame - 1, DEFAULT_DEPTH, &r, &e),
	                 JQ_OK);
	EXPECT_JTEXT(&r.item, "{\"a\\u0000b\":1}");
	assert_null(json_loadb(r.item.p, r.item.len, JSON_ALLOW_NUL, &err));
	assert_int_equal(json_error_code(&err), json_error_null_byte_in_key);
	reply_ok(&b, &r.id);
	reply_raw(&b, "item", r.item.p, r.item.len);
	reply_end(&b);
	EXPECT_BUF(&b, "{\"ok\":true,\"item\":{\"a\\u0000b\":1}}\n");
	request_free(&r);
}

/* An id holding such a key is echoed as sent, on success and on error. */
static void request_nul_key_kept_in_id(void **state)
{
	(void)state;
	static const struct {
		const char *frame;
		const char *line;          /* the reply, ' for " */
	} cases[] = {
		{ "{'op':'ping','id':{'k\\u0000':'v'}}",
		  "{'ok':true,'id':{'k\\u0000':'v'}}\n" },
		{ "{'op':'ping','id':[ { '\\u0000' : 0 } ]}",
		  "{'ok':true,'id':[{'\\u0000':0}]}\n" },
		{ "{'op':'nope','id':{'\\u0000':0}}",
		  "{'ok':false,'id':{'\\u0000':0},'error':'unknown_op',"
		  "'message':'m'}\n" },
		{ "{'id':{'\\u0000':null},'op':'qsize','queue':7}",
		  "{'ok':false,'id':{'\\u0000':null},'error':'bad_queue',"
		  "'message':'m'}\n" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		struct request r;
		struct errinfo e;
		struct buf b = { 0 };
		char *f = dq(cases[i].frame, strlen(cases[i].frame));
		char *want = dq(cases[i].line, strlen(cases[i].line));
		int rc = judge(f, strlen(f), DEFAULT_DEPTH, &r, &e);
		if (rc == JQ_OK) {
			reply_ok(&b, &r.id);
			reply_end(&b);
		} else {
			reply_error(&b, &r.id, rc, "m");
		}
		expect_buf(&b, want, strlen(want));
		request_free(&r);
		free(want);
		free(f);
	}
}

/* A \u0000 in a string value is data, even where keys hold one too. */
static void request_nul_in_value_untouched(void **state)
{
	(void)state;
	static const struct {
		const char *frame;
		const char *token;         /* the token's bytes, 3 of them */
	} cases[] = {
		{ "{'op':'ping','token':'a\\u0000b'}", "a\0b" },
		{ "{'op':'ping','k\\u0000':'\\u0000','token':'a\\u0000b'}",
		  "a\0b" },
		{ "{'op':'ping','k\\u0000':1,'token':'\\u0000\\':'}", "\0\":" },
		{ "{'k\\u0000':['\\u0000',{'\\u0000':'\\u0000'}],'op':'ping',"
		  "'token':'\\u0000\\u0000\\u0000'}", "\0\0\0" },
		{ "{'op':'ping','token':'\\u0000 :','\\u0000':1}", "\0 :" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		struct request r;
		char *f = accept_frame(cases[i].frame, &r);
		char buf[64];
		const char *tok;
		size_t n = token_of(&r, buf, &tok);
		if (n != 3 || memcmp(tok, cases[i].token, 3) != 0)
			note("%s: the token changed\n", f);
		assert_int_equal(n, 3);
		assert_memory_equal(tok, cases[i].token, 3);
		done(&r, f);
	}

	static const struct mcase members[] = {
		M("{'op':'put','item':'\\u0000','id':['\\u0000']}",
		  "['\\u0000']", "'\\u0000'"),
		M("{'op':'put','k\\u0000':1,'item':'\\u0000','id':'a\\u0000'}",
		  "'a\\u0000'", "'\\u0000'"),
		M("{'op':'put','item':{'k':'\\u0000'},'\\u0000':0}",
		  NULL, "{'k':'\\u0000'}"),
	};
	RUN_MEMBERS(members);
}

/* "\\u0000" is a backslash and then "u0000": no NUL, nothing to neuter. */
static void request_escaped_backslash_u0000_is_not_nul(void **state)
{
	(void)state;
	struct request r;

	char *f = accept_frame("{'op':'ping','\\\\u0000':1,'task':4}", &r);
	assert_int_equal(r.field[RF_TASK].integer, 4);
	done(&r, f);

	/* Beside a real one, which sends the frame the other way. */
	f = accept_frame("{'op':'ping','\\u0000':1,'\\\\u0000':2,"
	                 "'\\\\\\\\u0000':3,'task':5}", &r);
	assert_int_equal(r.field[RF_TASK].integer, 5);
	done(&r, f);

	/* A backslash and then a real one. */
	assert_int_equal(verdict("{'op':'ping','\\\\\\u0000':1}", 0), JQ_OK);

	static const struct mcase members[] = {
		M("{'op':'put','item':{'\\\\u0000':1}}",
		  NULL, "{'\\\\u0000':1}"),
		M("{'op':'put','\\u0000':0,'item':{'\\\\u0000':1}}",
		  NULL, "{'\\\\u0000':1}"),
		M("{'op':'put','item':{'\\\\\\u0000':1},'id':{'\\\\u0000':2}}",
		  "{'\\\\u0000':2}", "{'\\\\\\u0000':1}"),
		M("{'op':'ping','\\\\':1,'u0000':2,'id':'\\\\u0000'}",
		  "'\\\\u0000'", NULL),
	};
	RUN_MEMBERS(members);
}

/* A big item, with every kind of value, spaced out and compact. */
static void build_big_item(struct buf *spaced, struct buf *compact,
                           bool nul_keys)
{
	char s[128], c[128];

	buf_adds(spaced, "[ ");
	buf_addc(compact, '[');
	for (int i = 0; compact->len < (size_t)100 * 1024; i++) {
		if (i) {
			buf_adds(spaced, " ,\t");
			buf_addc(compact, ',');
		}
		switch (i % 5) {
		case 0:
			snprintf(s, sizeof s, "\"v%d , } ] \\\" \\\\ \"", i);
			snprintf(c, sizeof c, "%s", s);
			break;
		case 1:
			snprintf(s, sizeof s,
			         "{ \"k %d\" : [ %d , true , null ] }", i, i);
			snprintf(c, sizeof c, "{\"k %d\":[%d,true,null]}",
			         i, i);
			break;
		case 2:
			snprintf(s, sizeof s, "\"\\u0000\\t\\u00e9 \"");
			snprintf(c, sizeof c, "%s", s);
			break;
		case 3:
			snprintf(s, sizeof s, "-%d.5e3", i);
			snprintf(c, sizeof c, "%s", s);
			break;
		default:
			snprintf(s, sizeof s, "{ \"%s%d\" :\r{ } }",
			         nul_keys ? "n\\u0000" : "id", i);
			snprintf(c, sizeof c, "{\"%s%d\":{}}",
			         nul_keys ? "n\\u0000" : "id", i);
			break;
		}
		buf_adds(spaced, s);
		buf_adds(compact, c);
	}
	buf_adds(spaced, " ]");
	buf_addc(compact, ']');
}

static void request_big_item_keeps_exact_text(void **state)
{
	(void)state;
	for (int nul_keys = 0; nul_keys < 2; nul_keys++) {
		for (int spaced = 0; spaced < 2; spaced++) {
			struct buf sp = { 0 }, co = { 0 }, f = { 0 }, b = { 0 };
			struct request r;
			struct errinfo e;
			build_big_item(&sp, &co, nul_keys);
			const struct buf *v = spaced ? &sp : &co;
			assert_true(co.len >= (size_t)100 * 1024);
			buf_adds(&f, "{\"op\":\"put\",\"item\":");
			buf_add(&f, v->p, v->len);
			buf_adds(&f, ",\"id\":");
			buf_add(&f, v->p, v->len);
			buf_addc(&f, '}');
			assert_int_equal(judge(f.p, f.len, DEFAULT_DEPTH, &r,
			                       &e), JQ_OK);
			for (int k = 0; k < 2; k++) {
				const struct jtext *t = k ? &r.item : &r.id;
				assert_non_null(t->p);
				assert_int_equal(t->len, co.len);
				assert_memory_equal(t->p, co.p, co.len);
				if (spaced)
					assert_ptr_equal(t->p, r.owned[k]);
				else
					assert_true(in_frame(t, f.p, f.len));
			}
			if (!nul_keys) {
				json_t *got = jtext_load(&r.item);
				json_t *root = json_loadb(f.p, f.len, JSON_ALLOW_NUL,
				                          NULL);
				assert_true(json_equal(got,
				            json_object_get(root, "item")));
				json_decref(root);
				json_decref(got);
			}
			static const char head[] = "{\"ok\":true,\"id\":";
			reply_ok(&b, &r.id);
			assert_int_equal(b.len, sizeof head - 1 + co.len);
			assert_memory_equal(b.p, head, sizeof head - 1);
			assert_memory_equal(b.p + sizeof head - 1, co.p,
			                    co.len);
			request_free(&r);
			buf_free(&b);
			buf_free(&f);
			buf_free(&sp);
			buf_free(&co);
		}
	}
}

/* request_free releases the compacted copies. */
static void request_free_releases_copies(void **state)
{
	(void)state;
	struct request r;
	char *f = accept_frame("{'op':'put','item':[ 1 ],'id':{ }}", &r);
	assert_non_null(r.owned[0]);
	assert_non_null(r.owned[1]);
	assert_ptr_equal(r.id.p, r.owned[0]);
	assert_ptr_equal(r.item.p, r.owned[1]);
	request_free(&r);
	assert_null(r.owned[0]);
	assert_null(r.owned[1]);
	request_free(&r);            /* twice is harmless */
	free(f);
}

/* ---- the fast path against the slow one ---------------------------------- *
 * request_decode_fast() may take a frame only if request_decode_slow()
 * (jansson) gives the very same fields, and request_check() then the same
 * verdict, message and values; it may call a frame invalid only if jansson
 * says bad_json.  Each row names what the fast path must answer. */

/* Why the two paths differ on f[0..len), or NULL; *verdict is the fast
 * path's answer. */
static const char *paths_differ(const char *f, size_t len, unsigned depth,
                                enum jscan_verdict *verdict)
{
	struct request a, b;
	struct errinfo ea = { 0 }, eb = { 0 };
	const char *why = NULL;

	enum jscan_verdict v = *verdict = request_decode_fast(f, len, depth, &a);
	int code = request_decode_slow(f, len, depth, &b, &eb);
	if (v == JSCAN_INVALID && code != JQ_BAD_JSON)
		why = "fast: invalid, slow: not bad_json";
	if (v == JSCAN_OK && code != JQ_OK)
		why = "fast: ok, slow: not ok";
	for (int k = 0; k < RF_COUNT && v == JSCAN_OK && !why; k++) {
		const struct jfield *x = &a.field[k], *y = &b.field[k];
		if (x->kind != y->kind || x->escaped != y->escaped ||
		    x->text.p != y->text.p || x->text.len != y->text.len ||
		    (x->kind == JK_INT && x->integer != y->integer) ||
		    (x->kind == JK_REAL && x->real != y->real))
			why = "a field differs";
	}
	if (v == JSCAN_OK && !why) {
		if (a.id.len != b.id.len || a.item.len != b.item.len ||
		    !a.id.p != !b.id.p || !a.item.p != !b.item.p ||
		    (a.id.p && memcmp(a.id.p, b.id.p, a.id.len) != 0) ||
		    (a.item.p && memcmp(a.item.p, b.item.p, a.item.len) != 0) ||
		    a.noreply != b.noreply)
			why = "id, item or noreply differ";
		else if (request_is_ping(&a) != request_is_ping(&b))
			why = "request_is_ping differs";
	}
	if (v == JSCAN_OK && !why) {
		int ca = request_check(&a, &ea), cb = request_check(&b, &eb);
		if (ca != cb || (ca && strcmp(ea.message, eb.message) != 0))
			why = "request_check differs";
		else if (!ca && (a.op != b.op || a.queue_len != b.queue_len ||
		                 memcmp(a.queue, b.queue, a.queue_len) != 0 ||
		                 a.block != b.block || a.timeout != b.timeout ||
		                 a.lease != b.lease || a.delay != b.delay ||
		                 a.task != b.task))
			why = "checked values differ";
	}
	request_free(&a);
	request_free(&b);
	return why;
}

struct fcase {
	const char *frame;         /* ' stands for " unless raw */
	enum jscan_verdict fast;   /* what the fast path must answer */
	unsigned depth;            /* max_depth; 0: DEFAULT_DEPTH */
	bool raw;
};

#define FAST(frame) { (frame), JSCAN_OK, 0, false }
#define UNSURE(frame) { (frame), JSCAN_UNSURE, 0, false }
#define INVALID(frame) { (frame), JSCAN_INVALID, 0, false }
#define FRAW(frame, v) { (frame), (v), 0, true }
#define FDEPTH(frame, v, depth) { (frame), (v), (depth), false }

static void run_fast_cases(const struct fcase *c, size_t n)
{
	static const char *const names[] = { "ok", "invalid", "unsure" };
	int failures = 0;

	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(c[i].frame);
		char *f = c[i].raw ? strdup(c[i].frame) : dq(c[i].frame, len);
		enum jscan_verdict v;
		const char *why = paths_differ(f, len, c[i].depth ? c[i].depth :
		                               DEFAULT_DEPTH, &v);
		if (!why && v != c[i].fast)
			why = "wrong fast verdict";
		if (why) {
			note("row %zu %s: fast %s, want %s: %s\n", i, f,
			     names[v], names[c[i].fast], why);
			failures++;
		}
		free(f);
	}
	assert_int_equal(failures, 0);
}

#define RUN_FAST(t) run_fast_cases((t), sizeof(t) / sizeof *(t))

static void fast_path_takes_every_field_type(void **state)
{
	(void)state;
	static const struct fcase cases[] = {
		FAST("{'op':'ping'}"),
		FAST("{}"),
		FAST("{'op':'put','queue':'jobs','item':1,'id':7}"),
		FAST("{'op':'get','queue':'a.b:c-d_9','block':false,"
		     "'timeout':2.5,'lease':30,'id':'x'}"),
		FAST("{'op':'get','block':true,'timeout':0,'lease':0.001}"),
		FAST("{'op':'release','task':12,'delay':1.5e1}"),
		FAST("{'op':'task_done','task':3,'noreply':true}"),
		FAST("{'op':'auth','token':'s3cret'}"),
		/* every type in every field, checked or not */
		FAST("{'op':null,'queue':null,'id':null,'token':null,"
		     "'noreply':null,'block':null,'timeout':null,'lease':null,"
		     "'delay':null,'task':null,'item':null}"),
		FAST("{'op':1,'queue':2,'id':3,'token':4,'noreply':5,'block':6,"
		     "'timeout':7,'lease':8,'delay':9,'task':10,'item':11}"),
		FAST("{'op':'get','queue':[],'id':{},'token':[1],'noreply':{},"
		     "'block':'x','timeout':true,'lease':false,'delay':[],"
		     "'task':'1','item':'1'}"),
		FAST("{'op':true}"), FAST("{'op':[]}"), FAST("{'op':{}}"),
		FAST("{'op':'get','block':1}"),
		FAST("{'op':'get','timeout':-1}"),
		FAST("{'op':'get','timeout':'5'}"),
		FAST("{'op':'get','lease':0}"),
		FAST("{'op':'task_done','task':1.0}"),
		FAST("{'op':'task_done','task':0}"),
		FAST("{'op':'task_done','task':-5}"),
		FAST("{'op':'get','noreply':true}"),
		FAST("{'op':'nope'}"), FAST("{'op':''}"),
		FAST("{'op':'qsize','queue':''}"),
		FAST("{'op':'qsize','queue':'a b'}"),
		/* ids and items of every shape, unknown fields */
		FAST("{'op':'put','item':[1,-2.5e-3,'x',true,false,null,{},[]],"
		     "'id':{'a':{'b':[{'c':'d'}]}},'zz':[{'q':1}]}"),
		FAST("{'op':'put','item':{'id':1,'item':2,'op':'get'}}"),
		FAST("{'op':'put','item':'a\\u0000b','x':'\\u0000'}"),
	};
	RUN_FAST(cases);
}

static void fast_path_takes_escapes_in_values(void **state)
{
	(void)state;
	static const struct fcase cases[] = {
		FAST("{'op':'p\\u0069ng'}"),
		FAST("{'op':'\\u0070\\u0075\\u0074','item':1}"),
		FAST("{'op':'ping\\u0000'}"),
		FAST("{'op':'ping\\n'}"),
		FAST("{'op':'\\u00e9'}"),
		FAST("{'op':'pppppppppppppppppppp\\u0070'}"),   /* long */
		FAST("{'op':'qsize','queue':'j\\u006fbs'}"),
		FAST("{'op':'qsize','queue':'a\\/b'}"),
		FAST("{'op':'qsize','queue':'a\\u0000b'}"),
		FAST("{'op':'qsize','queue':'\\ud834\\udd1e'}"),
		FAST("{'op':'ping','token':'\\u0000\\t\\'\\\\'}"),
		FAST("{'op':'put','item':'\\ud834\\udd1e\\uD834\\uDD1E\\/\\b\\f"
		     "\\n\\r\\t\\\\\\''}"),
		FAST("{'op':'put','item':['\\u00e9','caf\xc3\xa9']}"),
	};
	RUN_FAST(cases);

	/* A queue name spelled with escapes up to the longest allowed. */
	char f[1200];
	struct request r;
	struct errinfo e;
	for (int n = 132; n <= 134; n++) {
		size_t len = (size_t)snprintf(f, sizeof f,
		                              "{\"op\":\"qsize\",\"queue\":\"");
		for (int i = 0; i < n - 5; i++)
			len += (size_t)snprintf(f + len, sizeof f - len, "\\u0071");
		len += (size_t)snprintf(f + len, sizeof f - len, ".dead\"}");
		assert_int_equal(request_decode_fast(f, len, DEFAULT_DEPTH, &r),
		                 JSCAN_OK);
		int rc = request_check(&r, &e);
		assert_int_equal(rc, n <= QUEUE_NAME_LIMIT ? JQ_OK : JQ_BAD_QUEUE);
		if (rc == JQ_OK) {
			assert_int_equal(r.queue_len, n);
			assert_int_equal(strlen(r.queue), n);
		}
		request_free(&r);
		enum jscan_verdict v;
		const char *why = paths_differ(f, len, DEFAULT_DEPTH, &v);
		if (why)
			note("%s: %s\n", f, why);
		assert_null(why);
	}
}

static void fast_path_whitespace_everywhere(void **state)
{
	(void)state;
	static const struct fcase cases[] = {
		FAST(" \t\r\n{ 'op' : 'put' , 'item' : [ 1 , { 'a' : [ ] } ] ,"
		     "\t'id'\r:\n{ } } \t\r\n"),
		FAST("{\n'op'\n:\n'ping'\n}"),
		FAST("{ }"), FAST("{\t}"),
		FAST("{'op':'put','item':[ ],'id':{ }}"),
		/* not whitespace to JSON */
		INVALID("{'op':'ping'\v}"),
		INVALID("{'op':'ping'\f}"),
		FRAW("\xc2\xa0{\"op\":\"ping\"}", JSCAN_INVALID),  /* NBSP */
	};
	RUN_FAST(cases);
}

/* jansson skips a NUL byte right after a number or a literal (found by
 * fuzzing: corpus/request/regress-nul-after-number), which would echo a
 * raw NUL back in an id; the slow path refuses every raw NUL byte, and the
 * fast path leaves every frame with one to it. */
static void fast_path_leaves_nul_bytes_to_jansson(void **state)
{
	(void)state;
	static const struct {
		const char *frame;
		size_t len;
		int slow;               /* request_decode_slow's verdict */
	} cases[] = {
#define NUL_ROW(lit, slow) { (lit), sizeof (lit) - 1, (slow) }
		NUL_ROW("{\"op\":\"ping\",\"x\":1\0}", JQ_BAD_JSON),
		NUL_ROW("{\"op\":\"ping\",\"x\":true\0}", JQ_BAD_JSON),
		NUL_ROW("{\"op\":\"ping\",\"x\":[null\0]}", JQ_BAD_JSON),
		NUL_ROW("{\"op\":\"ping\"\0}", JQ_BAD_JSON),
		NUL_ROW("{\"op\":\"ping\"}\0", JQ_BAD_JSON),
		NUL_ROW("{\"op\":\"ping\",\"x\":1\0\0}", JQ_BAD_JSON),
		NUL_ROW("{\"op\":\"p\0\"}", JQ_BAD_JSON),
#undef NUL_ROW
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		struct request r;
		struct errinfo e;
		enum jscan_verdict v;
		const char *why = paths_differ(cases[i].frame, cases[i].len,
		                               DEFAULT_DEPTH, &v);
		if (why || v != JSCAN_UNSURE)
			note("row %zu: fast %d: %s\n", i, v, why ? why : "");
		assert_null(why);
		assert_int_equal(v, JSCAN_UNSURE);
		assert_int_equal(request_decode_slow(cases[i].frame,
		                 cases[i].len, DEFAULT_DEPTH, &r, &e),
		                 cases[i].slow);
		request_free(&r);
	}
}

static void fast_path_nesting(void **state)
{
	(void)state;
	static const struct fcase cases[] = {
		FDEPTH("{'op':'ping'}", JSCAN_OK, 1),
		FDEPTH("{'op':'put','item':[]}", JSCAN_INVALID, 1),
		FDEPTH("{'op':'put','item':{'a':[1]}}", JSCAN_OK, 3),
		FDEPTH("{'op':'put','item':{'a':[[1]]}}", JSCAN_INVALID, 3),
		FDEPTH("{'op':'put','item':[[],[],[],{}]}", JSCAN_OK, 3),
		FDEPTH("{'op':'put','item':'[[[[{{{{'}", JSCAN_OK, 1),
		/* too deep before it is invalid: still bad_json */
		FDEPTH("{'op':'put','item':[[[[ nonsense", JSCAN_INVALID, 3),
		FAST("{'op':'put','item':[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]}"),
	};
	RUN_FAST(cases);

	/* Past JSCAN_MAX_DEPTH the fast path leaves it to jansson. */
	struct buf b = { 0 };
	buf_adds(&b, "{\"op\":\"put\",\"item\":");
	for (int i = 0; i < JSCAN_MAX_DEPTH + 1; i++)
		buf_addc(&b, '[');
	for (int i = 0; i < JSCAN_MAX_DEPTH + 1; i++)
		buf_addc(&b, ']');
	buf_addc(&b, '}');
	enum jscan_verdict v;
	assert_null(paths_differ(b.p, b.len, JSCAN_MAX_DEPTH + 2, &v));
	assert_int_equal(v, JSCAN_UNSURE);
	assert_null(paths_differ(b.p, b.len, JSCAN_MAX_DEPTH, &v));
	assert_int_equal(v, JSCAN_INVALID);
	buf_free(&b);
}

static void fast_path_numbers_at_the_edges(void **state)
{
	(void)state;
	static const struct fcase cases[] = {
		FAST("{'op':'task_done','task':9223372036854775807}"),
		FAST("{'op':'ping','task':-9223372036854775808}"),
		FAST("{'op':'ping','id':-0,'item':0,'task':-0}"),
		FAST("{'op':'get','timeout':-0.0}"),
		FAST("{'op':'get','timeout':0e0,'lease':1E+2}"),
		FAST("{'op':'get','timeout':1e300,'lease':1e-400}"),
		FAST("{'op':'get','timeout':4.9e-324}"),
		FAST("{'op':'get','timeout':1.7976931348623157e300}"),
		FAST("{'op':'get','timeout':0.1000000000000000055511151231257827}"),
		FAST("{'op':'put','item':[1e300,-1e300,1e-99999999999]}"),
		/* beyond int64 (jansson's "too big integer"): kept in the id
		 * and the item, ignored in an unknown field, bad_json in a
		 * field joinqd reads */
		FAST("{'op':'put','item':[99999999999999999999]}"),
		FAST("{'op':'put','item':-9223372036854775809,"
		     "'id':9223372036854775808}"),
		FAST("{'op':'ping','x':1180591620717411303424}"),
		INVALID("{'op':'ping','task':9223372036854775808}"),
		INVALID("{'op':'ping','task':-9223372036854775809}"),
		INVALID("{'op':'get','timeout':1180591620717411303424}"),
		INVALID("{'op':99999999999999999999}"),
		/* a real that might overflow, or too long to copy */
		UNSURE("{'op':'get','timeout':1e400}"),
		UNSURE("{'op':'get','timeout':1e308}"),
		UNSURE("{'op':'get','timeout':0.5e309}"),
		UNSURE("{'op':'put','item':1.7976931348623157e308}"),
		UNSURE("{'op':'get','timeout':1.00000000000000000000000000000000"
		       "000000000000000000000000000000000}"),
		UNSURE("{'op':'put','item':-1e99999999999999999999}"),
		/* not numbers */
		INVALID("{'op':'put','item':01}"),
		INVALID("{'op':'put','item':-01}"),
		INVALID("{'op':'put','item':+1}"),
		INVALID("{'op':'put','item':.5}"),
		INVALID("{'op':'put','item':1.}"),
		INVALID("{'op':'put','item':1.e5}"),
		INVALID("{'op':'put','item':1e}"),
		INVALID("{'op':'put','item':1e+}"),
		INVALID("{'op':'put','item':-}"),
		INVALID("{'op':'put','item':0x10}"),
		INVALID("{'op':'put','item':NaN}"),
		INVALID("{'op':'put','item':-Infinity}"),
		INVALID("{'op':'put','item':1 2}"),
	};
	RUN_FAST(cases);
}

/* An integer beyond int64 (issue 11): RFC 8259 allows it and Python sends
 * one.  Both paths keep it as text in the id and the item, where jansson
 * alone refuses the frame; the slow path takes the frames the fast one
 * leaves to it (an escaped key, a duplicate). */
static void request_big_integers_kept_in_id_and_item(void **state)
{
	(void)state;
	static const struct {
		const char *frame, *id, *item;   /* ' for "; NULL: absent */
		bool big_id, big_item;
	} cases[] = {
		{ "{'op':'put','item':1180591620717411303424,"
		  "'id':-1180591620717411303424}", "-1180591620717411303424",
		  "1180591620717411303424", true, true },
		{ "{'op':'put','item':[ 99999999999999999999 , 0.1 ]}", NULL,
		  "[99999999999999999999,0.1]", false, false },
		{ "{'op':'put','item':{'k\\u0000':18446744073709551616},"
		  "'\\u0069d':9223372036854775808}", "9223372036854775808",
		  "{'k\\u0000':18446744073709551616}", true, false },
		{ "{'op':'put','x':-9223372036854775809,'item':1e300,"
		  "'item':-9223372036854775809}", NULL, "-9223372036854775809",
		  false, true },
	};

	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		char *f = dq(cases[i].frame, strlen(cases[i].frame));
		for (int slow = 0; slow < 2; slow++) {
			struct request r;
			struct errinfo e;
			if (!slow) {
				enum jscan_verdict v = request_decode_fast(f, strlen(f),
				                                           DEFAULT_DEPTH, &r);
				assert_int_not_equal(v, JSCAN_INVALID);
				if (v == JSCAN_UNSURE) {
					request_free(&r);
					continue;
				}
			} else {
				assert_int_equal(request_decode_slow(f, strlen(f),
				                                     DEFAULT_DEPTH, &r, &e),
				                 JQ_OK);
			}
			note("row %zu, %s path\n", i, slow ? "slow" : "fast");
			expect_jtext("id", &r.id, cases[i].id,
			             cases[i].id ? strlen(cases[i].id) : 0);
			char *item = dq(cases[i].item, strlen(cases[i].item));
			expect_jtext("item", &r.item, item, strlen(item));
			free(item);
			assert_int_equal(r.field[RF_ID].kind == JK_BIGINT,
			                 cases[i].big_id);
			assert_int_equal(r.field[RF_ITEM].kind == JK_BIGINT,
			                 cases[i].big_item);
			assert_int_equal(request_check(&r, &e), JQ_OK);
			request_free(&r);
		}
		free(f);
	}
}

/* Where joinqd reads a field, a big integer is bad_json, as before: the
 * message names the field. */
static void request_big_integers_in_read_fields_are_bad_json(void **state)
{
	(void)state;
	static const char *const fields[] = {
		"op", "queue", "token", "noreply", "block", "timeout", "lease",
		"delay", "task",
	};
	for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
		char f[160], want[64];
		struct request r;
		struct errinfo e;
		snprintf(f, sizeof f, "{%s\"%s\":-18446744073709551616}",
		         i ? "\"op\":\"release\"," : "", fields[i]);
		snprintf(want, sizeof want, "field '%s'", fields[i]);
		assert_int_equal(request_decode_fast(f, strlen(f), DEFAULT_DEPTH,
		                                     &r), JSCAN_INVALID);
		request_free(&r);
		assert_int_equal(request_decode(f, strlen(f), DEFAULT_DEPTH, &r, &e),
		                 JQ_BAD_JSON);
		request_free(&r);
		note("%s: %s\n", f, e.message);
		assert_non_null(strstr(e.message, "beyond 64 bits"));
		assert_non_null(strstr(e.message, want));
	}
}

static void fast_path_leaves_keys_and_duplicates_to_jansson(void **state)
{
	(void)state;
	static const struct fcase cases[] = {
		/* an escape in a key: it may spell a known one, or hold a NUL */
		UNSURE("{'\\u006fp':'ping'}"),
		UNSURE("{'op':'ping','\\u0000':1}"),
		UNSURE("{'op':'ping','a\\nb':1}"),
		UNSURE("{'op':'put','item':{'\\u0000':1}}"),
		UNSURE("{'op':'put','item':[{'k\\'':1}]}"),
		/* known keys twice: jansson keeps the last */
		UNSURE("{'op':'ping','op':'get'}"),
		UNSURE("{'op':'put','item':1,'item':2}"),
		UNSURE("{'id':1,'op':'ping','id':null}"),
		UNSURE("{'op':'ping','token':null,'token':'x'}"),
		/* unknown keys twice, or known ones nested: no matter */
		FAST("{'op':'ping','x':1,'x':2}"),
		FAST("{'op':'put','item':{'a':1,'a':2}}"),
		FAST("{'op':'ping','x':{'op':'get','op':'put'}}"),
		/* near misses of known keys */
		FAST("{'op':'ping','Op':1,'ops':2,'o':3,'':4,'id ':5}"),
	};
	RUN_FAST(cases);
}

static void fast_path_invalid_only_when_sure(void **state)
{
	(void)state;
	static const struct fcase cases[] = {
		INVALID(""), INVALID("   "), INVALID("[]"), INVALID("1"),
		INVALID("'ping'"), INVALID("null"),
		INVALID("{"), INVALID("{'op'"), INVALID("{'op':"),
		INVALID("{'op':'ping'"), INVALID("{'op':'ping"),
		INVALID("{'op':'ping',}"), INVALID("{,}"), INVALID("{op:1}"),
		INVALID("{'op' 'ping'}"), INVALID("{'op':'ping'}{}"),
		INVALID("{'op':'ping'} x"), INVALID("{'op':'ping'},"),
		INVALID("{'op':'put','item':[1,]}"),
		INVALID("{'op':'put','item':[,1]}"),
		INVALID("{'op':'put','item':{'a'}}"),
		INVALID("{'op':'put','item':{'a':1,}}"),
		INVALID("{'op':'put','item':[1}"),
		INVALID("{'op':'put','item':{'a':1]}"),
		INVALID("{'op':'put','item':tru}"),
		INVALID("{'op':'put','item':truex}"),
		INVALID("{'op':'put','item':nul}"),
		INVALID("{'op':'put','item':True}"),
		/* strings */
		INVALID("{'op':'put','item':'a\x01'}"),
		INVALID("{'op':'put','item':'a\tb'}"),
		INVALID("{'op':'put','item':'\\x41'}"),
		INVALID("{'op':'put','item':'\\u12'}"),
		INVALID("{'op':'put','item':'\\u12g4'}"),
		INVALID("{'op':'put','item':'\\ud800'}"),
		INVALID("{'op':'put','item':'\\udc00'}"),
		INVALID("{'op':'put','item':'\\ud800\\u0041'}"),
		INVALID("{'op':'put','item':'\\ud800\\ud800'}"),
		INVALID("{'op':'put','item':'\\ud800x'}"),
		INVALID("{'op':'put','item':'\\ud800\\n'}"),
		INVALID("{'op':'put','item':'\\"),
		INVALID("{'op':'put','item':'abc"),
		INVALID("{'op':'put','\x1f':1}"),
		FAST("{'op':'put','item':'\x7f'}"),       /* DEL is a character */
		INVALID("{'op':'ping'} // a comment"),
	};
	RUN_FAST(cases);
}

/* request_string: decoded into the buffer when escaped, refused when it
 * would not fit. */
static void request_string_decodes_within_cap(void **state)
{
	(void)state;
	struct request r;
	char buf[8];
	const char *s;
	char *f = dq("{'op':'ping','token':'a\\u00e9\\ud834\\udd1e'}",
	             strlen("{'op':'ping','token':'a\\u00e9\\ud834\\udd1e'}"));
	assert_int_equal(request_decode_fast(f, strlen(f), DEFAULT_DEPTH, &r),
	                 JSCAN_OK);
	assert_true(r.field[RF_TOKEN].escaped);
	assert_int_equal(request_string(&r.field[RF_TOKEN], buf, 7, &s), 7);
	assert_ptr_equal(s, buf);
	assert_memory_equal(s, "a\xc3\xa9\xf0\x9d\x84\x9e", 7);
	assert_int_equal(request_string(&r.field[RF_TOKEN], buf, 6, &s),
	                 SIZE_MAX);
	assert_int_equal(request_string(&r.field[RF_OP], buf, 0, &s), 4);
	assert_true(in_frame(&(struct jtext){ s, 4 }, f, strlen(f)));
	request_free(&r);
	free(f);
}

static void op_names(void **state)
{
	(void)state;
	assert_string_equal(op_name(OP_PUT), "put");
	assert_string_equal(op_name(OP_TASK_DONE), "task_done");
	assert_string_equal(op_name(OP_AUTH), "auth");
	assert_string_equal(op_name(OP_NOPS), "?");
}

/* ---- replies ------------------------------------------------------------- */

static void reply_ok_without_id(void **state)
{
	(void)state;
	struct buf b = { 0 };
	reply_ok(&b, NULL);
	reply_end(&b);
	EXPECT_BUF(&b, "{\"ok\":true}\n");
}

static void reply_fields_exact_bytes(void **state)
{
	(void)state;
	struct buf b = { 0 };
	const struct jtext id = { "7", 1 };

	reply_ok(&b, &id);
	reply_u64(&b, "task", 3);
	reply_end(&b);
	EXPECT_BUF(&b, "{\"ok\":true,\"id\":7,\"task\":3}\n");

	reply_ok(&b, NULL);
	reply_u64(&b, "qsize", 0);
	reply_u64(&b, "maxsize", UINT64_MAX);
	reply_bool(&b, "empty", true);
	reply_bool(&b, "full", false);
	reply_end(&b);
	EXPECT_BUF(&b, "{\"ok\":true,\"qsize\":0,"
	           "\"maxsize\":18446744073709551615,"
	           "\"empty\":true,\"full\":false}\n");

	reply_ok(&b, NULL);
	reply_str(&b, "version", "0.1.0");
	reply_raw(&b, "item", "{\"a\":[1,2]}", 11);
	reply_raw(&b, "x", "nullgarbage", 4);
	reply_end(&b);
	EXPECT_BUF(&b, "{\"ok\":true,\"version\":\"0.1.0\","
	           "\"item\":{\"a\":[1,2]},\"x\":null}\n");
}

static void reply_error_without_id(void **state)
{
	(void)state;
	struct buf b = { 0 };
	reply_error(&b, NULL, JQ_BAD_JSON, "the frame is not a JSON object");
	EXPECT_BUF(&b, "{\"ok\":false,\"error\":\"bad_json\","
	           "\"message\":\"the frame is not a JSON object\"}\n");
	reply_error(&b, NULL, JQ_UNKNOWN_TASK, "");
	EXPECT_BUF(&b, "{\"ok\":false,\"error\":\"unknown_task\","
	           "\"message\":\"\"}\n");
}

static void reply_error_with_id_of_each_type(void **state)
{
	(void)state;
	static const char *const ids[] = {
		"12", "-1", "2.5", "\"q\\\"x\"", "null", "true", "false", "[]",
		"{\"a\":1}",
	};
	for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
		struct buf b = { 0 };
		char want[160];
		const struct jtext id = { ids[i], strlen(ids[i]) };
		reply_error(&b, &id, JQ_FULL, "the queue is full");
		int n = snprintf(want, sizeof want,
		                 "{\"ok\":false,\"id\":%s,\"error\":\"full\","
		                 "\"message\":\"the queue is full\"}\n",
		                 ids[i]);
		expect_buf(&b, want, (size_t)n);
	}
}

/* Ids of every kind, as text, spliced in byte for byte by both builders. */
static void reply_id_text_spliced_as_is(void **state)
{
	(void)state;
	static const char *const ids[] = {
		"0", "12", "-1", "2.5e-3", "1E+400", "18446744073709551616",
		"null", "true", "false",
		"\"\"", "\"q\\\"x\"", "\"\\\\\"", "\"a b, } ]\"",
		"\"\\u0000\"", "\"caf\xc3\xa9\"", "\"\\ud834\\udd1e\"",
		"[]", "{}", "[1,{\"a\":[null,\"]}\"]}]",
		"{\"k\\u0000\":\"v\"}", "{\"\\\\u0000\":1}",
	};
	for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
		const struct jtext id = { ids[i], strlen(ids[i]) };
		struct buf b = { 0 };
		char want[200];
		int n;

		reply_ok(&b, &id);
		reply_u64(&b, "task", 7);
		reply_end(&b);
		n = snprintf(want, sizeof want,
		             "{\"ok\":true,\"id\":%s,\"task\":7}\n", ids[i]);
		expect_buf(&b, want, (size_t)n);

		reply_error(&b, &id, JQ_EMPTY, "the queue is empty");
		n = snprintf(want, sizeof want,
		             "{\"ok\":false,\"id\":%s,\"error\":\"empty\","
		             "\"message\":\"the queue is empty\"}\n", ids[i]);
		expect_buf(&b, want, (size_t)n);
	}
}

/* No id: a NULL jtext, or one whose p is NULL; and only len bytes of p
 * count. */
static void reply_id_absent_or_cut(void **state)
{
	(void)state;
	const struct jtext none = { NULL, 0 }, none_len = { NULL, 5 };
	const struct jtext cut = { "123garbage", 3 };
	struct buf b = { 0 };

	reply_ok(&b, &none);
	reply_end(&b);
	EXPECT_BUF(&b, "{\"ok\":true}\n");
	reply_ok(&b, &none_len);
	reply_end(&b);
	EXPECT_BUF(&b, "{\"ok\":true}\n");
	reply_error(&b, &none, JQ_BAD_JSON, "m");
	EXPECT_BUF(&b, "{\"ok\":false,\"error\":\"bad_json\","
	           "\"message\":\"m\"}\n");
	reply_error(&b, &none_len, JQ_BAD_JSON, "m");
	EXPECT_BUF(&b, "{\"ok\":false,\"error\":\"bad_json\","
	           "\"message\":\"m\"}\n");
	reply_ok(&b, &cut);
	reply_end(&b);
	EXPECT_BUF(&b, "{\"ok\":true,\"id\":123}\n");
	reply_error(&b, &cut, JQ_FULL, "m");
	EXPECT_BUF(&b, "{\"ok\":false,\"id\":123,\"error\":\"full\","
	           "\"message\":\"m\"}\n");
}

static void reply_is_valid_json(void **state)
{
	(void)state;
	struct buf b = { 0 };
	const struct jtext id = { "\"a\\\"b\"", 6 };
	reply_error(&b, &id, JQ_BAD_REQUEST, "field 'x' \"quoted\"\n");
	json_error_t err;
	json_t *v = json_loadb(b.p, b.len, 0, &err);
	assert_non_null(v);
	assert_true(json_is_false(json_object_get(v, "ok")));
	assert_string_equal(json_string_value(json_object_get(v, "id")),
	                    "a\"b");
	assert_string_equal(json_string_value(json_object_get(v, "error")),
	                    "bad_request");
	assert_string_equal(json_string_value(json_object_get(v, "message")),
	                    "field 'x' \"quoted\"\n");
	json_decref(v);
	buf_free(&b);
}

/* json_append_string of s, compared with the literal want. */
static void expect_jstr(const char *s, size_t len, const char *want)
{
	struct buf b = { 0 };
	json_append_string(&b, s, len);
	assert_true(utf8_valid(b.p, b.len, NULL));
	expect_buf(&b, want, strlen(want));
}

#define JSTR(lit, want) expect_jstr((lit), sizeof(lit) - 1, (want))

static void json_string_escapes(void **state)
{
	(void)state;
	JSTR("", "\"\"");
	JSTR("plain", "\"plain\"");
	JSTR("a\"b", "\"a\\\"b\"");
	JSTR("a\\b", "\"a\\\\b\"");
	JSTR("/", "\"/\"");
	JSTR("\n\t\r", "\"\\u000a\\u0009\\u000d\"");
	JSTR("\x01\x1f", "\"\\u0001\\u001f\"");
	JSTR("a\0b", "\"a\\u0000b\"");
	JSTR("\x7f", "\"\x7f\"");
	JSTR(" ~", "\" ~\"");
}

static void json_string_keeps_valid_utf8(void **state)
{
	(void)state;
	JSTR("caf\xc3\xa9", "\"caf\xc3\xa9\"");
	JSTR("\xe2\x82\xac", "\"\xe2\x82\xac\"");
	JSTR("\xf0\x9d\x84\x9e\"", "\"\xf0\x9d\x84\x9e\\\"\"");
	JSTR("\xf4\x8f\xbf\xbf", "\"\xf4\x8f\xbf\xbf\"");
}

static void json_string_replaces_invalid_bytes(void **state)
{
	(void)state;
	JSTR("ok\xff", "\"ok?\"");
	JSTR("\x80", "\"?\"");
	JSTR("abc\xe2\x82", "\"abc??\"");         /* a character cut in two */
	JSTR("a\xc0\x80" "b", "\"a??b\"");
	JSTR("\xed\xa0\x80", "\"???\"");
	JSTR("\xf4\x90\x80\x80", "\"????\"");
	JSTR("\xe2\x82\xc3\xa9", "\"??\xc3\xa9\"");
	JSTR("\xc3\xa9\xff\xc3\xa9", "\"\xc3\xa9?\xc3\xa9\"");
	JSTR("\xff\"\x01", "\"?\\\"\\u0001\"");
}

/* Random bytes always come out as one valid JSON string; valid UTF-8 comes
 * back unchanged. */
static void json_string_random_bytes(void **state)
{
	(void)state;
	srand(1234);
	for (int round = 0; round < 20000; round++) {
		char s[24];
		size_t n = (size_t)rand() % sizeof s;
		for (size_t i = 0; i < n; i++) {
			int r = rand();
			s[i] = (char)(r % 3 ? r % 256 : 0x20 + r % 95);
		}
		struct buf b = { 0 };
		json_append_string(&b, s, n);
		assert_true(utf8_valid(b.p, b.len, NULL));
		json_error_t err;
		json_t *v = json_loadb(b.p, b.len,
		                       JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
		if (!v)
			note("%.*s: %s\n", (int)b.len, b.p, err.text);
		assert_non_null(v);
		assert_true(json_is_string(v));
		if (utf8_valid(s, n, NULL)) {
			assert_int_equal(json_string_length(v), n);
			assert_memory_equal(json_string_value(v), s, n);
		} else {
			assert_int_equal(json_string_length(v) >= 1, 1);
		}
		json_decref(v);
		buf_free(&b);
	}
}

/* A value's text checked and packed without re-encoding (issue 11): what
 * libjoinq and the CLI send as a put's item. */
static void jtext_compact_keeps_every_token(void **state)
{
	(void)state;
	static const struct { const char *in, *out; } cases[] = {
		{ " 0.1 ", "0.1" },
		{ "1e300", "1e300" },
		{ "\t1180591620717411303424\r\n", "1180591620717411303424" },
		{ "{ \"a b\" : [ 1 , 2.50 , \"\\u00e9 \\\" x\" ] }",
		  "{\"a b\":[1,2.50,\"\\u00e9 \\\" x\"]}" },
		{ "[\n -0 ,\n 1E+2 ]", "[-0,1E+2]" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		const char *in = cases[i].in;
		char why[160], out[64];
		assert_int_equal(jvalue_check(in, strlen(in), 64, why, sizeof why),
		                 JQ_OK);
		size_t n = jtext_compact(in, strlen(in), out);
		assert_int_equal(n, strlen(cases[i].out));
		assert_memory_equal(out, cases[i].out, n);
		assert_int_equal(jtext_spaced(in, strlen(in)),
		                 strlen(in) != n);
	}
	static const char *const bad[] = {
		"", " ", "01", "1.", "[1,]", "{\"a\"}", "nul", "1 2", "\"\\ud800\"",
		"1e400", "[[1]]",
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		char why[160];
		assert_int_equal(jvalue_check(bad[i], strlen(bad[i]), 1, why,
		                              sizeof why), JQ_BAD_JSON);
		note("%s: %s\n", bad[i], why);
		assert_true(strncmp(why, "is not valid JSON", 17) == 0 ||
		            strncmp(why, "nests deeper", 12) == 0);
	}
}

/* ---- buf ----------------------------------------------------------------- */

static void buf_u64_digits(void **state)
{
	(void)state;
	static const struct {
		uint64_t v;
		const char *text;
	} cases[] = {
		{ 0, "0" }, { 9, "9" }, { 10, "10" }, { 99, "99" },
		{ 100, "100" },
		{ 9007199254740991ULL, "9007199254740991" },
		{ UINT64_C(10000000000000000000), "10000000000000000000" },
		{ UINT64_MAX, "18446744073709551615" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		struct buf b = { 0 };
		buf_adds(&b, "x=");
		buf_add_u64(&b, cases[i].v);
		assert_int_equal(u64_digits(cases[i].v), strlen(cases[i].text));
		char want[32];
		int n = snprintf(want, sizeof want, "x=%s", cases[i].text);
		expect_buf(&b, want, (size_t)n);
	}
}

static void buf_grows_and_consumes(void **state)
{
	(void)state;
	struct buf b = { 0 };
	for (int i = 0; i < 100000; i++)
		buf_addc(&b, (char)('a' + i % 26));
	assert_int_equal(b.len, 100000);
	assert_true(b.cap >= b.len);
	for (int i = 0; i < 100000; i++)
		assert_int_equal(b.p[i], 'a' + i % 26);

	buf_consume(&b, 3);
	assert_int_equal(b.len, 99997);
	assert_int_equal(b.p[0], 'd');
	buf_consume(&b, 99997 - 2);
	assert_int_equal(b.len, 2);
	assert_memory_equal(b.p, "cd", 2);   /* bytes 99998 and 99999 */
	buf_consume(&b, 10);
	assert_int_equal(b.len, 0);
	buf_reset(&b);
	buf_add(&b, "abc", 3);
	buf_add(&b, "", 0);
	EXPECT_BUF(&b, "abc");
	assert_null(b.p);
	assert_int_equal(b.cap, 0);
}

/* A may_fail buffer that cannot grow turns failed and drops appends
 * instead of aborting (libjoinq's, issue 11); reset takes appends again.
 * The growth asked here overflows size_t, so it fails without asking the
 * allocator. */
static void buf_may_fail_drops_appends(void **state)
{
	(void)state;
	struct buf b = { .may_fail = true };
	buf_adds(&b, "ab");
	assert_false(buf_reserve(&b, SIZE_MAX));
	assert_true(b.failed);
	buf_adds(&b, "cd");
	buf_addc(&b, 'e');
	buf_add_u64(&b, 12345);
	json_append_string(&b, "f", 1);
	reply_u64(&b, "task", 7);
	assert_int_equal(b.len, 2);
	assert_memory_equal(b.p, "ab", 2);
	buf_reset(&b);
	assert_false(b.failed);
	buf_adds(&b, "xyz");
	EXPECT_BUF(&b, "xyz");
}

/* ---- error names --------------------------------------------------------- */

static void errcode_names_round_trip(void **state)
{
	(void)state;
	for (int code = 1; code < JQ_NERR; code++) {
		const char *name = errcode_name(code);
		assert_string_not_equal(name, "unknown");
		assert_int_equal(errcode_of(name, strlen(name)), code);
		for (int other = 1; other < code; other++)
			assert_string_not_equal(name, errcode_name(other));
	}
	/* Spot checks against PROTOCOL.md's table. */
	assert_string_equal(errcode_name(JQ_BAD_JSON), "bad_json");
	assert_string_equal(errcode_name(JQ_FRAME_TOO_LARGE), "frame_too_large");
	assert_string_equal(errcode_name(JQ_TOO_MANY_CONNECTIONS),
	                    "too_many_connections");
	assert_string_equal(errcode_name(JQ_UNAVAILABLE), "unavailable");
	/* conflict came last, so that the codes before keep their numbers. */
	assert_string_equal(errcode_name(JQ_CONFLICT), "conflict");
	assert_int_equal(JQ_UNAVAILABLE, 16);
	assert_int_equal(JQ_NERR, 18);
}

static void errcode_unknown_names_and_codes(void **state)
{
	(void)state;
	assert_string_equal(errcode_name(JQ_OK), "ok");
	assert_string_equal(errcode_name(-1), "unknown");
	assert_string_equal(errcode_name(JQ_NERR), "unknown");
	assert_string_equal(errcode_name(1000), "unknown");
	assert_int_equal(errcode_of("ok", 2), -1);
	assert_int_equal(errcode_of("unknown", 7), -1);
	assert_int_equal(errcode_of("", 0), -1);
	assert_int_equal(errcode_of("bad", 3), -1);
	assert_int_equal(errcode_of("bad_json_", 9), -1);
	assert_int_equal(errcode_of("BAD_JSON", 8), -1);
	/* The name need not be NUL-terminated: only len bytes count. */
	assert_int_equal(errcode_of("fullness", 4), JQ_FULL);
	assert_int_equal(errcode_of("empty\0x", 5), JQ_EMPTY);
	assert_int_equal(errcode_of("empty\0x", 7), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(frame_single_line),
		cmocka_unit_test(frame_several_lines_in_one_buffer),
		cmocka_unit_test(frame_strips_only_the_cr_before_lf),
		cmocka_unit_test(frame_blank_lines_are_empty),
		cmocka_unit_test(frame_partial_needs_more),
		cmocka_unit_test(frame_max_frame_bytes_before_lf_pass),
		cmocka_unit_test(frame_max_frame_plus_one_is_too_large),
		cmocka_unit_test(frame_too_large_without_waiting_for_lf),
		cmocka_unit_test(frame_resume_searches_only_new_bytes),
		cmocka_unit_test(frame_max_frame_zero),
		cmocka_unit_test(frame_huge_max_frame),

		cmocka_unit_test(utf8_accepts_ascii_and_multibyte),
		cmocka_unit_test(utf8_rejects_overlongs),
		cmocka_unit_test(utf8_rejects_surrogates_and_beyond_max),
		cmocka_unit_test(utf8_rejects_truncated_sequences),
		cmocka_unit_test(utf8_rejects_stray_continuation_bytes),
		cmocka_unit_test(utf8_fast_path_reports_every_position),
		cmocka_unit_test(utf8_matches_reference_decoder),
		cmocka_unit_test(wide_scan_every_byte_at_every_offset),
		cmocka_unit_test(wide_scan_variant_chosen),
		cmocka_unit_test(utf8_every_sequence_at_every_offset),
		cmocka_unit_test(decode_ascii_and_not),

		cmocka_unit_test(request_bad_utf8),
		cmocka_unit_test(request_bad_json),
		cmocka_unit_test(request_depth_limit),
		cmocka_unit_test(request_depth_at_default_limit),
		cmocka_unit_test(request_bad_request),
		cmocka_unit_test(request_unknown_op),
		cmocka_unit_test(request_bad_queue),
		cmocka_unit_test(request_queue_name_lengths),
		cmocka_unit_test(queue_name_valid_direct),
		cmocka_unit_test(request_defaults_for_absent_fields),
		cmocka_unit_test(request_null_optional_fields_are_absent),
		cmocka_unit_test(request_put_keeps_item_of_any_type),
		cmocka_unit_test(request_item_with_nul_round_trips),
		cmocka_unit_test(request_fields_parsed),
		cmocka_unit_test(request_huge_seconds_are_capped),
		cmocka_unit_test(request_escapes_equal_raw_characters),
		cmocka_unit_test(request_unknown_fields_ignored),
		cmocka_unit_test(request_id_of_every_type_kept),
		cmocka_unit_test(request_id_kept_when_check_fails),
		cmocka_unit_test(request_is_ping_only_for_exact_ping),
		cmocka_unit_test(request_decode_failure_leaves_nothing),
		cmocka_unit_test(request_members_top_level_only),
		cmocka_unit_test(request_members_escaped_key_names),
		cmocka_unit_test(request_members_duplicates_last_wins),
		cmocka_unit_test(request_members_values_of_every_type),
		cmocka_unit_test(request_members_compacted),
		cmocka_unit_test(request_members_whitespace_in_request_object),
		cmocka_unit_test(request_members_escaped_quotes_in_keys),
		cmocka_unit_test(request_nul_key_is_an_unknown_field),
		cmocka_unit_test(request_nul_key_kept_in_item),
		cmocka_unit_test(request_nul_key_kept_in_id),
		cmocka_unit_test(request_nul_in_value_untouched),
		cmocka_unit_test(request_escaped_backslash_u0000_is_not_nul),
		cmocka_unit_test(request_big_item_keeps_exact_text),
		cmocka_unit_test(request_free_releases_copies),
		cmocka_unit_test(fast_path_takes_every_field_type),
		cmocka_unit_test(fast_path_takes_escapes_in_values),
		cmocka_unit_test(fast_path_whitespace_everywhere),
		cmocka_unit_test(fast_path_leaves_nul_bytes_to_jansson),
		cmocka_unit_test(fast_path_nesting),
		cmocka_unit_test(fast_path_numbers_at_the_edges),
		cmocka_unit_test(request_big_integers_kept_in_id_and_item),
		cmocka_unit_test(request_big_integers_in_read_fields_are_bad_json),
		cmocka_unit_test(fast_path_leaves_keys_and_duplicates_to_jansson),
		cmocka_unit_test(fast_path_invalid_only_when_sure),
		cmocka_unit_test(request_string_decodes_within_cap),
		cmocka_unit_test(op_names),

		cmocka_unit_test(reply_ok_without_id),
		cmocka_unit_test(reply_fields_exact_bytes),
		cmocka_unit_test(reply_error_without_id),
		cmocka_unit_test(reply_error_with_id_of_each_type),
		cmocka_unit_test(reply_id_text_spliced_as_is),
		cmocka_unit_test(reply_id_absent_or_cut),
		cmocka_unit_test(reply_is_valid_json),
		cmocka_unit_test(json_string_escapes),
		cmocka_unit_test(json_string_keeps_valid_utf8),
		cmocka_unit_test(json_string_replaces_invalid_bytes),
		cmocka_unit_test(json_string_random_bytes),
		cmocka_unit_test(jtext_compact_keeps_every_token),

		cmocka_unit_test(buf_u64_digits),
		cmocka_unit_test(buf_grows_and_consumes),
		cmocka_unit_test(buf_may_fail_drops_appends),

		cmocka_unit_test(errcode_names_round_trip),
		cmocka_unit_test(errcode_unknown_names_and_codes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
