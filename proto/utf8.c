/* utf8.c - strict UTF-8 validation (see utf8.h). */
#include <stdint.h>
#include <string.h>

#include "utf8.h"

bool utf8_valid(const char *s, size_t len, size_t *bad)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;

	while (i < len) {
		/* Requests are mostly ASCII: skip eight such bytes at a time. */
		while (i + 8 <= len) {
			uint64_t w;
			memcpy(&w, p + i, 8);
			if (w & 0x8080808080808080ULL)
				break;
			i += 8;
		}
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
