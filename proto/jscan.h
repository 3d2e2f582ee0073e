/*
 * jscan.h - the fast path of request decoding: one pass over a frame that
 * validates it as strict JSON (RFC 8259, as jansson reads it) and picks out
 * the top-level members a caller names, with no allocation and no tree.
 *
 * It decides only what it is sure jansson would decide the same way.  Where
 * matching jansson exactly would be delicate it answers JSCAN_UNSURE and the
 * caller decodes the frame with jansson instead (request.c): a key with an
 * escape in it (it may spell a known name, or hold a \u0000 that jansson
 * refuses), a named key given twice, a real that might overflow a double
 * or whose text is long, nesting past JSCAN_MAX_DEPTH.
 *
 * An integer beyond int64 is valid JSON (RFC 8259 sets no limit) that
 * jansson refuses: the scanner takes it, as JK_BIGINT when it is a named
 * member, and leaves it to the caller to judge (request.h).
 */
#ifndef JQ_JSCAN_H
#define JQ_JSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reply.h"

/* What a member holds.  JK_ABSENT: the object has no such key. */
enum jkind {
	JK_ABSENT,
	JK_NULL,
	JK_FALSE,
	JK_TRUE,
	JK_INT,
	JK_BIGINT,              /* an integer beyond int64: only its text */
	JK_REAL,
	JK_STRING,
	JK_OTHER,               /* an array or an object */
};

/* One top-level member's value, as decoded; the text points into the frame. */
struct jfield {
	enum jkind kind;
	bool escaped;           /* JK_STRING: its text holds a backslash escape */
	int64_t integer;        /* JK_INT */
	double real;            /* JK_REAL */
	struct jtext text;      /* the value as sent, not compacted; a string
	                           with its quotes */
};

/* Present: neither absent nor null. */
static inline bool jfield_present(const struct jfield *f)
{
	return f->kind > JK_NULL;
}

enum jscan_verdict {
	JSCAN_OK,               /* a JSON object; the named members are filled */
	JSCAN_INVALID,          /* jansson, or the depth limit, rejects it */
	JSCAN_UNSURE,           /* ask jansson */
};

/* Past this depth the scanner stops recursing and answers JSCAN_UNSURE. */
#define JSCAN_MAX_DEPTH 256

/* The most keys jscan_object() picks out (more: JSCAN_UNSURE). */
#define JSCAN_MAX_KEYS 64

/*
 * Scans p[0..len), valid UTF-8, as one JSON object with whitespace around
 * it, nesting at most max_depth deep (the object itself is depth 1).  For
 * each top-level key equal to keys[k] (nkeys of them), out[k] is filled,
 * and each other out[k] zeroed (JK_ABSENT); out[] need not be zeroed
 * first.  On anything but JSCAN_OK, out[] holds garbage.
 */
enum jscan_verdict jscan_object(const char *p, size_t len, unsigned max_depth,
                                const char *const keys[], size_t nkeys,
                                struct jfield out[]);

/*
 * As jscan_object(), on any bytes: p[0..len) need not be valid UTF-8.
 * *ascii tells whether no string held a byte >= 0x80; the scanner takes
 * none outside strings, so on JSCAN_OK with *ascii set the frame is ASCII,
 * and valid UTF-8 without a pass of its own.  Without it, the caller must
 * still check the frame's UTF-8 (the verdict holds only if it is valid).
 */
enum jscan_verdict jscan_object_ascii(const char *p, size_t len,
                                      unsigned max_depth,
                                      const char *const keys[], size_t nkeys,
                                      struct jfield out[], bool *ascii);

/* Scans p[0..len), valid UTF-8, as any one JSON value with whitespace
 * around it, nesting at most max_depth deep. */
enum jscan_verdict jscan_value(const char *p, size_t len, unsigned max_depth);

/* The value of the JSON integer p[0..len) (-?[0-9]+, known valid) in *out;
 * false if it is beyond int64. */
bool jint_value(const char *p, size_t len, int64_t *out);

/*
 * Decodes the body of a valid JSON string (p[0..len), no quotes) into
 * out[0..cap), UTF-8, \u0000 as a NUL byte.  Returns the decoded length, or
 * SIZE_MAX if it would pass cap.
 */
size_t jstring_unescape(const char *p, size_t len, char *out, size_t cap);

#endif
