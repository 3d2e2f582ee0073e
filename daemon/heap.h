/*
 * heap.h - a binary min-heap of deadlines.
 *
 * Every lease, delay and wait timeout of the engine is one entry here, so
 * the event loop needs one timer, set to the earliest entry, however many
 * deadlines there are (beanstalkd keeps its deadlines the same way).
 * Entries are embedded in their owners and know their slot, so removal of
 * any entry is O(log n).
 */
#ifndef JQ_HEAP_H
#define JQ_HEAP_H

#include <stddef.h>

#include "engine.h"

struct heap {
	struct deadline **v;
	size_t len, cap;
};

void heap_push(struct heap *h, struct deadline *d);
void heap_remove(struct heap *h, struct deadline *d);
static inline struct deadline *heap_top(const struct heap *h)
{
	return h->len ? h->v[0] : NULL;
}
void heap_free(struct heap *h);

#endif
