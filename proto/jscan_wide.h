/*
 * jscan_wide.h - the block step of jscan.c's string scan, in a form tests
 * can reach: one finder per instruction set, and jscan_object_in(), which
 * runs the scanner with a finder named.  Not for other callers: jscan.h
 * is the scanner's interface, and picks the widest finder by itself.
 *
 * A finder looks through the body of a JSON string, a block at a time, for
 * the first byte that ends a plain run: a quote, a backslash or a control
 * byte (below 0x20).  It returns an offset k <= n such that p[0..k) holds
 * none of them; k is the first such byte's offset when a whole block holds
 * it, else the start of the last, partial block (fewer than the finder's
 * width of bytes from n), which the caller looks through a byte at a time.
 * *high is set if p[0..k) holds a byte >= 0x80, and left alone if not.
 */
#ifndef JQ_JSCAN_WIDE_H
#define JQ_JSCAN_WIDE_H

#include <stdbool.h>
#include <stddef.h>

#include "jscan.h"

enum jscan_variant {
	JSCAN_SWAR,             /* 8 bytes in a uint64_t: any CPU */
	JSCAN_SSE2,             /* 16 bytes: every x86-64 */
	JSCAN_AVX2,             /* 32 bytes: x86-64 that has AVX2 */
	JSCAN_NVARIANTS
};

typedef size_t jscan_finder(const char *p, size_t n, bool *high);

/* The finder of variant v, or NULL if this CPU (or build) lacks it. */
jscan_finder *jscan_finder_of(enum jscan_variant v);

/* The widest variant this CPU has, and its finder: the one jscan.c uses. */
enum jscan_variant jscan_best(void);
jscan_finder *jscan_best_finder(void);

/* jscan_object_ascii() with the finder of variant v (which must exist). */
enum jscan_verdict jscan_object_in(enum jscan_variant v, const char *p,
                                   size_t len, unsigned max_depth,
                                   const char *const keys[], size_t nkeys,
                                   struct jfield out[], bool *ascii);

#endif
