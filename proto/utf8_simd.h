/*
 * utf8_simd.h - UTF-8 validation by simdjson, for the daemon's frames.
 *
 * simdjson::validate_utf8 checks what utf8_valid() checks (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF), many bytes a
 * step, choosing its SIMD code from the CPU at run time.  It says only
 * whether; utf8_valid() says where, for bad_utf8's message.
 *
 * simdjson is C++: utf8_simd.cc wraps the one call.  Only what links
 * request.c links it (joinqd and its tests, in proto/libjoinqreq.la),
 * never libjoinq, whose users gain no C++ runtime.
 */
#ifndef JQ_UTF8_SIMD_H
#define JQ_UTF8_SIMD_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* True if p[0..len) is valid UTF-8, as utf8_valid() would say. */
bool utf8_valid_simd(const char *p, size_t len);

#ifdef __cplusplus
}
#endif

#endif
