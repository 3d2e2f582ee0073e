/*
 * buf.h - a growable byte buffer: replies are built in one, and the client
 * library reads into one.
 *
 * Growth that fails aborts through xalloc.h, as the daemon wants, unless
 * the buffer is set may_fail (libjoinq's are): then the buffer keeps what
 * it holds, turns failed, and every later append is dropped, so that a
 * whole request can be built and the failure checked once at the end.
 */
#ifndef JQ_BUF_H
#define JQ_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct buf {
	char *p;
	size_t len, cap;
	bool may_fail;          /* growth may fail without aborting */
	bool failed;            /* a growth failed: appends are dropped */
};

/* Makes room for more bytes (out of line: the rare case of buf_reserve).
 * False only for a may_fail buffer that could not grow. */
bool buf_grow(struct buf *b, size_t more);
void buf_add_u64(struct buf *b, uint64_t v);
/* Drops the first n bytes. */
void buf_consume(struct buf *b, size_t n);
void buf_free(struct buf *b);

/* Empties b, and forgets a failure: appends take again. */
static inline void buf_reset(struct buf *b)
{
	b->len = 0;
	b->failed = false;
}

/* Inline: replies are built of many small appends, and with a constant
 * string buf_adds's strlen folds away. */
static inline bool buf_reserve(struct buf *b, size_t more)
{
	return b->cap - b->len >= more || buf_grow(b, more);
}

static inline void buf_add(struct buf *b, const void *data, size_t len)
{
	/* len 0: b->p may still be NULL, and memcpy(NULL, ...) is undefined */
	if (len == 0 || !buf_reserve(b, len))
		return;
	memcpy(b->p + b->len, data, len);
	b->len += len;
}

static inline void buf_adds(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

static inline void buf_addc(struct buf *b, char c)
{
	if (buf_reserve(b, 1))
		b->p[b->len++] = c;
}

/* Decimal digits of v: the length buf_add_u64 writes. */
size_t u64_digits(uint64_t v);

#endif
