/*
 * itemq.h - a FIFO of queued items: their task id, delivery count and JSON
 * text, packed in chunks.
 *
 * The storage of one queue's queued items, and nothing else: it knows no
 * engine policy (maxsize, dead letters, waiters, the journal).  Items go in
 * at the tail (a put) or at the head (a task given back), and leave at the
 * head.  Entries lie end to end in a chain of chunks, so an item costs its
 * text, a 16-byte header and at most 7 bytes of padding instead of a malloc
 * of its own; every operation is O(1) (amortized for the allocations).
 *
 * A big item may instead stay in a block of the caller's (the engine's
 * task): the entry then holds a reference to it, and the block passes in
 * and out of the itemq without its text being copied (itemq_push_*_block,
 * itemq_take_front).  The itemq owns a block while it holds its entry, and
 * frees it with free() if the entry is dropped with the queue.
 *
 * This is the seam where another backend (journal-backed, replicated)
 * could sit: the engine only uses what is declared here.
 */
#ifndef JQ_ITEMQ_H
#define JQ_ITEMQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct itemq_chunk;

struct itemq {
	struct itemq_chunk *head, *tail;
	struct itemq_chunk *spare;   /* an emptied chunk kept for reuse */
	uint64_t count;              /* entries */
	uint64_t used;               /* bytes the entries take in chunks */
	uint64_t held;               /* bytes the chunks take, spare included,
	                                and the blocks */
	uint64_t blocks;             /* entries that refer to a block */
};

/* One queued item, as peek and iteration show it.  text points into the
 * itemq and is valid until the itemq next changes. */
struct item {
	uint64_t id;
	uint32_t deliveries;
	uint32_t len;
	const char *text;
	void *block;                 /* the block text lies in; NULL: a chunk */
};

/* Where an iteration is: set by itemq_iter_init. */
struct itemq_iter {
	const struct itemq_chunk *chunk;
	uint32_t off;
};

/* A zeroed struct itemq is an empty one.  len must be below 2^32 - 32. */
void itemq_push_back(struct itemq *q, uint64_t id, uint32_t deliveries,
                     const char *text, size_t len);
void itemq_push_front(struct itemq *q, uint64_t id, uint32_t deliveries,
                      const char *text, size_t len);
/* As push_back and push_front, for an item whose text (len bytes, below
 * 2^31) lies in block, a malloc'd block of text + len - block bytes: the
 * itemq takes the block over, and copies nothing. */
void itemq_push_back_block(struct itemq *q, uint64_t id, uint32_t deliveries,
                           void *block, const char *text, size_t len);
void itemq_push_front_block(struct itemq *q, uint64_t id,
                            uint32_t deliveries, void *block,
                            const char *text, size_t len);
/* The head item into *it; false when the queue is empty. */
bool itemq_peek(const struct itemq *q, struct item *it);
/* Removes the head item (the queue must not be empty): peek first to
 * copy what is needed, since its text goes with it. */
void itemq_pop_front(struct itemq *q);
/* Removes the head item (the queue must not be empty) and hands its block
 * over to the caller: NULL if its text lay in a chunk (copy it first). */
void *itemq_take_front(struct itemq *q);

/* Every item, head first; the itemq must not change meanwhile. */
void itemq_iter_init(const struct itemq *q, struct itemq_iter *i);
bool itemq_next(struct itemq_iter *i, struct item *it);

static inline uint64_t itemq_count(const struct itemq *q)
{
	return q->count;
}

/* Bytes the itemq holds from malloc: its chunks, slack and spare included,
 * and its blocks (malloc's own bookkeeping excluded). */
static inline uint64_t itemq_bytes(const struct itemq *q)
{
	return q->held;
}

/* Frees every chunk; q is empty again. */
void itemq_free(struct itemq *q);

#endif
