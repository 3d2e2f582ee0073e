/* buf.c - growable byte buffer (see buf.h). */
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "xalloc.h"

bool buf_grow(struct buf *b, size_t more)
{
	size_t cap = b->cap ? b->cap : 256;
	if (b->failed)
		return false;
	while (cap - b->len < more) {
		if (cap > SIZE_MAX / 2) {
			cap = b->len + more < b->len ? 0 : b->len + more;
			break;
		}
		cap *= 2;
	}
	char *p = cap == 0 ? NULL : b->may_fail ? realloc(b->p, cap) :
	          xrealloc(b->p, cap);
	if (!p) {
		if (!b->may_fail)
			xalloc_failed();
		/* No room left, so that every later append comes here and is
		 * dropped (the block holds at least len bytes: it is safe). */
		b->cap = b->len;
		b->failed = true;
		return false;
	}
	b->p = p;
	b->cap = cap;
	return true;
}

size_t u64_digits(uint64_t v)
{
	size_t n = 1;
	while (v >= 10) {
		v /= 10;
		n++;
	}
	return n;
}

void buf_add_u64(struct buf *b, uint64_t v)
{
	char tmp[20];
	size_t n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	if (!buf_reserve(b, n))
		return;
	while (n)
		b->p[b->len++] = tmp[--n];
}

void buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
		return;
	}
	memmove(b->p, b->p + n, b->len - n);
	b->len -= n;
}

void buf_free(struct buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
	b->failed = false;
}
