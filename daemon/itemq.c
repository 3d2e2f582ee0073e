/*
 * itemq.c - a FIFO of queued items packed in chunks (see itemq.h).
 *
 * A chunk holds entries end to end between its start and end offsets: a
 * 16-byte header (id, text length, deliveries), then the text, padded to 8
 * so the next header is aligned.  push_back writes at the tail chunk's end,
 * push_front just before the head chunk's start, pop_front moves the head
 * chunk's start on; when the room runs out a new chunk goes at that end.
 * Only the head chunk loses entries, so every chunk but the sole chunk of
 * an empty queue holds at least one.
 *
 * Chunk sizes follow the queue: a new chunk is about as big as what is
 * queued now (a power of two from 256 B to 64 KiB), so a long queue has
 * few big chunks (64 KiB hold 546 items of 100 bytes, the slack at the end
 * well under one item) while 10,000 queues of a few items take a few
 * hundred bytes each.  An entry bigger than a quarter of that size gets a
 * chunk of exactly its own size instead (so an item bigger than 64 KiB
 * fits, and big entries leave no big holes at the ends of shared chunks).
 * An emptied chunk is kept as a spare for the next new chunk when it is
 * not bigger than the queue now needs, so a queue that is both filled and
 * drained does not malloc and free a chunk every few hundred items; an
 * empty queue keeps only a smallest-size chunk, and no spare.
 *
 * An entry whose text lies in a block of the caller's holds, in place of
 * its text, the block's address and the text's (16 bytes), and says so by
 * the top bit of its length (texts are below 2^31 bytes: max_frame is at
 * most 1 GiB).  The block's bytes count in `held`, not in `used`: chunk
 * sizes follow the entries in chunks.
 */
#include <stdlib.h>
#include <string.h>

#include "itemq.h"
#include "xalloc.h"

#define CHUNK_MIN ((size_t)256)
#define CHUNK_MAX ((size_t)64 * 1024)

struct itemq_chunk {
	struct itemq_chunk *next;    /* toward the tail */
	uint32_t size;               /* bytes of data */
	uint32_t start, end;         /* the entries lie between */
	uint64_t data[];             /* uint64_t: entries are 8-aligned */
};

struct entry {
	uint64_t id;
	uint32_t len;
	uint32_t deliveries;
	char text[];
};

#define IN_BLOCK ((uint32_t)1 << 31)   /* entry.len: the text is a block's */

struct block_ref {
	void *block;
	const char *text;
};

static size_t entry_size(size_t len)
{
	return sizeof(struct entry) + ((len + 7) & ~(size_t)7);
}

#define BLOCK_ENTRY (sizeof(struct entry) + sizeof(struct block_ref))

static struct entry *entry_at(const struct itemq_chunk *c, uint32_t off)
{
	return (struct entry *)(void *)((char *)(void *)c->data + off);
}

static struct block_ref *ref_of(struct entry *en)
{
	return (struct block_ref *)(void *)en->text;
}

/* The bytes an entry takes in its chunk. */
static size_t stored_size(const struct entry *en)
{
	return en->len & IN_BLOCK ? BLOCK_ENTRY : entry_size(en->len);
}

static size_t block_bytes(const struct block_ref *r, size_t len)
{
	return (size_t)(r->text + len - (const char *)r->block);
}

static void read_entry(const struct itemq_chunk *c, uint32_t off,
                       struct item *it)
{
	struct entry *en = entry_at(c, off);
	if (en->len & IN_BLOCK) {
		const struct block_ref *r = ref_of(en);
		*it = (struct item){ en->id, en->deliveries, en->len & ~IN_BLOCK,
		                     r->text, r->block };
	} else {
		*it = (struct item){ en->id, en->deliveries, en->len, en->text,
		                     NULL };
	}
}

/* The data size a new chunk gets when an entry of need bytes opens it. */
static size_t chunk_size_for(const struct itemq *q, size_t need)
{
	size_t size = CHUNK_MIN;
	while (size < CHUNK_MAX && size < q->used + need)
		size *= 2;
	return need > size / 4 ? need : size;
}

static void chunk_free(struct itemq *q, struct itemq_chunk *c)
{
	q->held -= sizeof *c + c->size;
	free(c);
}

/* A chunk for an entry of need bytes, linked nowhere yet. */
static struct itemq_chunk *chunk_new(struct itemq *q, size_t need)
{
	size_t size = chunk_size_for(q, need);
	struct itemq_chunk *c = q->spare;

	q->spare = NULL;
	if (c && c->size >= size)
		return c;
	if (c)
		chunk_free(q, c);
	c = xmalloc(sizeof *c + size);
	c->size = (uint32_t)size;
	q->held += sizeof *c + size;
	return c;
}

/* An emptied chunk, unlinked: a spare unless one is kept already or it is
 * bigger than the queue now needs. */
static void retire(struct itemq *q, struct itemq_chunk *c)
{
	if (!q->spare && c->size <= chunk_size_for(q, 0))
		q->spare = c;
	else
		chunk_free(q, c);
}

/* An empty queue's sole chunk (if any) when an entry of need bytes comes:
 * all its room put on the side the entry goes (at_end: a push_back), or
 * freed when the entry does not fit it. */
static void reuse_empty(struct itemq *q, size_t need, bool at_end)
{
	struct itemq_chunk *c = q->head;
	if (!c)
		return;
	if (c->size < need) {
		chunk_free(q, c);
		q->head = q->tail = NULL;
		return;
	}
	c->start = c->end = at_end ? 0 : c->size;
}

/* Room for an entry of need bytes at the tail. */
static struct entry *place_back(struct itemq *q, size_t need)
{
	if (!q->count)
		reuse_empty(q, need, true);
	struct itemq_chunk *c = q->tail;
	if (!c || c->size - c->end < need) {
		c = chunk_new(q, need);
		c->next = NULL;
		c->start = c->end = 0;
		if (q->tail)
			q->tail->next = c;
		else
			q->head = c;
		q->tail = c;
	}
	struct entry *en = entry_at(c, c->end);
	c->end += (uint32_t)need;
	q->count++;
	q->used += need;
	return en;
}

/* Room for an entry of need bytes at the head. */
static struct entry *place_front(struct itemq *q, size_t need)
{
	if (!q->count)
		reuse_empty(q, need, false);
	struct itemq_chunk *c = q->head;
	if (!c || c->start < need) {
		/* Its entries from the end, so that more returns fit before. */
		c = chunk_new(q, need);
		c->next = q->head;
		c->start = c->end = c->size;
		q->head = c;
		if (!q->tail)
			q->tail = c;
	}
	c->start -= (uint32_t)need;
	q->count++;
	q->used += need;
	return entry_at(c, c->start);
}

static void write_entry(struct entry *en, uint64_t id, uint32_t deliveries,
                        const char *text, size_t len)
{
	en->id = id;
	en->len = (uint32_t)len;
	en->deliveries = deliveries;
	memcpy(en->text, text, len);
}

static void write_ref(struct itemq *q, struct entry *en, uint64_t id,
                      uint32_t deliveries, void *block, const char *text,
                      size_t len)
{
	struct block_ref *r = ref_of(en);
	en->id = id;
	en->len = (uint32_t)len | IN_BLOCK;
	en->deliveries = deliveries;
	r->block = block;
	r->text = text;
	q->blocks++;
	q->held += block_bytes(r, len);
}

void itemq_push_back(struct itemq *q, uint64_t id, uint32_t deliveries,
                     const char *text, size_t len)
{
	write_entry(place_back(q, entry_size(len)), id, deliveries, text, len);
}

void itemq_push_front(struct itemq *q, uint64_t id, uint32_t deliveries,
                      const char *text, size_t len)
{
	write_entry(place_front(q, entry_size(len)), id, deliveries, text, len);
}

void itemq_push_back_block(struct itemq *q, uint64_t id, uint32_t deliveries,
                           void *block, const char *text, size_t len)
{
	write_ref(q, place_back(q, BLOCK_ENTRY), id, deliveries, block, text,
	          len);
}

void itemq_push_front_block(struct itemq *q, uint64_t id,
                            uint32_t deliveries, void *block,
                            const char *text, size_t len)
{
	write_ref(q, place_front(q, BLOCK_ENTRY), id, deliveries, block, text,
	          len);
}

bool itemq_peek(const struct itemq *q, struct item *it)
{
	if (!q->count)
		return false;
	read_entry(q->head, q->head->start, it);
	return true;
}

void itemq_pop_front(struct itemq *q)
{
	free(itemq_take_front(q));
}

void *itemq_take_front(struct itemq *q)
{
	struct itemq_chunk *c = q->head;
	struct entry *en = entry_at(c, c->start);
	size_t size = stored_size(en);
	void *block = NULL;

	if (en->len & IN_BLOCK) {
		const struct block_ref *r = ref_of(en);
		block = r->block;
		q->blocks--;
		q->held -= block_bytes(r, en->len & ~IN_BLOCK);
	}
	c->start += (uint32_t)size;
	q->count--;
	q->used -= size;
	if (c->start < c->end)
		return block;
	if (c != q->tail) {
		q->head = c->next;
		retire(q, c);
		return block;
	}
	/* The queue is empty: it keeps at most one small chunk. */
	if (q->spare) {
		chunk_free(q, q->spare);
		q->spare = NULL;
	}
	if (c->size > chunk_size_for(q, 0)) {
		chunk_free(q, c);
		q->head = q->tail = NULL;
	}
	return block;
}

void itemq_iter_init(const struct itemq *q, struct itemq_iter *i)
{
	i->chunk = q->count ? q->head : NULL;
	i->off = i->chunk ? i->chunk->start : 0;
}

bool itemq_next(struct itemq_iter *i, struct item *it)
{
	if (!i->chunk)
		return false;
	read_entry(i->chunk, i->off, it);
	i->off += (uint32_t)stored_size(entry_at(i->chunk, i->off));
	if (i->off == i->chunk->end) {
		i->chunk = i->chunk->next;
		i->off = i->chunk ? i->chunk->start : 0;
	}
	return true;
}

void itemq_free(struct itemq *q)
{
	if (q->blocks) {
		struct itemq_iter i;
		struct item it;
		itemq_iter_init(q, &i);
		while (itemq_next(&i, &it))
			free(it.block);
	}
	struct itemq_chunk *c = q->head;
	while (c) {
		struct itemq_chunk *next = c->next;
		free(c);
		c = next;
	}
	free(q->spare);
	memset(q, 0, sizeof *q);
}
