/*
 * utf8.h - strict UTF-8 validation (RFC 3629): no overlong forms, no
 * surrogates, nothing above U+10FFFF.  A frame is checked here before JSON
 * parsing so that bad_utf8 wins over bad_json, as PROTOCOL.md orders them.
 */
#ifndef JQ_UTF8_H
#define JQ_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* True if p[0..len) is valid UTF-8.  On false, *bad (if not NULL) is the
 * offset of the first byte of the first invalid sequence. */
bool utf8_valid(const char *p, size_t len, size_t *bad);

#endif
