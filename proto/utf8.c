/* utf8.c - strict UTF-8 validation (see utf8.h). */
#include <stdint.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "utf8.h"

/* The length of the run of ASCII bytes p[0..n) starts with, or less by
 * under a word: a block at a time (SSE2 is every x86-64's, and needs no
 * check of the CPU), then eight bytes a time.  Requests and replies are
 * mostly ASCII. */
static size_t ascii_run(const unsigned char *p, size_t n)
{
	size_t i = 0;

#if defined(__SSE2__)
	for (; n - i >= 16; i += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
		if (_mm_movemask_epi8(v))
			break;
	}
#endif
	for (; n - i >= 8; i += 8) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		if (w & 0x8080808080808080ULL)
			break;
	}
	return i;
}

bool utf8_valid(const char *s, size_t len, size_t *bad)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (i < len) {
		i += ascii_run(p + i, len - i);
		if (i >= len)
			break;
		unsigned c = p[i];
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t n;        /* continuation bytes */
		unsigned lo = 0x80, hi = 0xBF;  /* range of the second byte */
		if (c >= 0xC2 && c <= 0xDF) {
			n = 1;
		} else if (c >= 0xE0 && c <= 0xEF) {
			n = 2;
			if (c == 0xE0)
				lo = 0xA0;      /* overlong */
			else if (c == 0xED)
				hi = 0x9F;      /* surrogates */
		} else if (c >= 0xF0 && c <= 0xF4) {
			n = 3;
			if (c == 0xF0)
				lo = 0x90;      /* overlong */
			else if (c == 0xF4)
				hi = 0x8F;      /* above U+10FFFF */
		} else {
			goto invalid;
		}
		if (len - i <= n)
			goto invalid;
		if (p[i + 1] < lo || p[i + 1] > hi)
			goto invalid;
		for (size_t k = 2; k <= n; k++)
			if ((p[i + k] & 0xC0) != 0x80)
				goto invalid;
		i += n + 1;
	}
	return true;

invalid:
	if (bad)
		*bad = i;
	return false;
}
