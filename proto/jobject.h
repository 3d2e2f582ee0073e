/*
 * jobject.h - JSON texts judged and read without re-encoding them: the
 * slow path of request decoding (jansson, where jscan.h is unsure) and the
 * helpers both daemon and libjoinq use to keep a value's text as sent.
 *
 * The slow path gives for each named member the same struct jfield as the
 * fast one (jscan_object): its kind, its number, and its text in p.  jansson
 * only validates and reads the scalars; the texts are found in p itself.
 * Two things valid JSON may hold that jansson refuses are worked around on
 * a copy of the text that parses to the same members: an object key with
 * \u0000 in it, and an integer beyond int64 (JK_BIGINT, as in jscan.h).
 */
#ifndef JQ_JOBJECT_H
#define JQ_JOBJECT_H

#include <stdbool.h>
#include <stddef.h>

#include "jscan.h"

/*
 * Judges p[0..len), valid UTF-8, with jansson: one JSON object (or, when
 * any_value is set, any one JSON value) nesting at most max_depth deep,
 * with no raw NUL byte.  For each top-level key equal to keys[k], out[k]
 * is filled (the last of duplicates wins, as in jansson); out[] must be
 * zeroed by the caller.  Returns JQ_OK; JQ_BAD_JSON with why filled with
 * what follows "the frame " or "the item " in a sentence ("is not valid
 * JSON: ..."); or JQ_ERR_NOMEM, if memory ran out.
 */
int jobject_slow(const char *p, size_t len, unsigned max_depth,
                 bool any_value, const char *const keys[], size_t nkeys,
                 struct jfield out[], char *why, size_t why_len);

/* Any one JSON value p[0..len), valid UTF-8, the fast way first: JQ_OK,
 * JQ_BAD_JSON or JQ_ERR_NOMEM, as jobject_slow. */
int jvalue_check(const char *p, size_t len, unsigned max_depth, char *why,
                 size_t why_len);

/* True if the valid JSON text p[0..len) has whitespace outside its
 * strings. */
bool jtext_spaced(const char *p, size_t len);

/* Copies the valid JSON text p[0..len) to out (len bytes of room) without
 * the whitespace outside its strings; returns the length written. */
size_t jtext_compact(const char *p, size_t len, char *out);

#endif
