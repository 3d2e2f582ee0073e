/*
 * buf.h - a growable byte buffer: replies are built in one, and the client
 * library reads into one.  Growth goes through xrealloc (xalloc.h).
 */
#ifndef JQ_BUF_H
#define JQ_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct buf {
	char *p;
	size_t len, cap;
};

/* Makes room for more bytes (out of line: the rare case of buf_reserve). */
void buf_grow(struct buf *b, size_t more);
void buf_add_u64(struct buf *b, uint64_t v);
/* Drops the first n bytes. */
void buf_consume(struct buf *b, size_t n);
void buf_free(struct buf *b);

static inline void buf_reset(struct buf *b) { b->len = 0; }

/* Inline: replies are built of many small appends, and with a constant
 * string buf_adds's strlen folds away. */
static inline void buf_reserve(struct buf *b, size_t more)
{
	if (b->cap - b->len < more)
		buf_grow(b, more);
}

static inline void buf_add(struct buf *b, const void *data, size_t len)
{
	if (len == 0)
		return;   /* b->p may still be NULL: memcpy(NULL, ...) is undefined */
	buf_reserve(b, len);
	memcpy(b->p + b->len, data, len);
	b->len += len;
}

static inline void buf_adds(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

static inline void buf_addc(struct buf *b, char c)
{
	buf_reserve(b, 1);
	b->p[b->len++] = c;
}

/* Decimal digits of v: the length buf_add_u64 writes. */
size_t u64_digits(uint64_t v);

#endif
