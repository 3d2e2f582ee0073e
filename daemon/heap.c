/* heap.c - min-heap of deadlines (see heap.h). */
#include <stdlib.h>

#include "heap.h"
#include "xalloc.h"

static void set(struct heap *h, size_t i, struct deadline *d)
{
	h->v[i] = d;
	d->slot = (uint32_t)i;
}

static void sift_up(struct heap *h, size_t i)
{
	struct deadline *d = h->v[i];
	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (h->v[parent]->at <= d->at)
			break;
		set(h, i, h->v[parent]);
		i = parent;
	}
	set(h, i, d);
}

static void sift_down(struct heap *h, size_t i)
{
	struct deadline *d = h->v[i];
	for (;;) {
		size_t child = 2 * i + 1;
		if (child >= h->len)
			break;
		if (child + 1 < h->len && h->v[child + 1]->at < h->v[child]->at)
			child++;
		if (d->at <= h->v[child]->at)
			break;
		set(h, i, h->v[child]);
		i = child;
	}
	set(h, i, d);
}

void heap_push(struct heap *h, struct deadline *d)
{
	if (h->len == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 64;
		h->v = xrealloc(h->v, cap * sizeof(struct deadline *));
		h->cap = cap;
	}
	set(h, h->len++, d);
	sift_up(h, h->len - 1);
}

void heap_remove(struct heap *h, struct deadline *d)
{
	size_t i = d->slot;
	struct deadline *last = h->v[--h->len];
	if (i == h->len)
		return;
	set(h, i, last);
	if (i > 0 && h->v[(i - 1) / 2]->at > last->at)
		sift_up(h, i);
	else
		sift_down(h, i);
}

void heap_free(struct heap *h)
{
	free(h->v);
	h->v = NULL;
	h->len = h->cap = 0;
}
