/*
 * buf.h - a growable byte buffer: replies are built in one, and the client
 * library reads into one.  Growth goes through xrealloc (xalloc.h).
 */
#ifndef JQ_BUF_H
#define JQ_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
	char *p;
	size_t len, cap;
};

void buf_reserve(struct buf *b, size_t more);
void buf_add(struct buf *b, const void *data, size_t len);
void buf_adds(struct buf *b, const char *s);
void buf_addc(struct buf *b, char c);
void buf_add_u64(struct buf *b, uint64_t v);
/* Drops the first n bytes. */
void buf_consume(struct buf *b, size_t n);
void buf_free(struct buf *b);

static inline void buf_reset(struct buf *b) { b->len = 0; }

/* Decimal digits of v: the length buf_add_u64 writes. */
size_t u64_digits(uint64_t v);

#endif
