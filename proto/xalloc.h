/*
 * xalloc.h - allocation that cannot fail: on out-of-memory the process
 * says so and aborts, as Redis does.  A queue daemon that cannot get
 * memory for a task cannot keep its promises either.
 */
#ifndef JQ_XALLOC_H
#define JQ_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Says "out of memory" and aborts: for an allocation made another way. */
void xalloc_failed(void) __attribute__((noreturn));

#endif
