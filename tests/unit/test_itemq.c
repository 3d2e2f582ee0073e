/*
 * test_itemq.c - unit tests of the queued-item store (daemon/itemq.c).
 *
 * The itemq is checked against a plain model, an array of items head
 * first: after every step its head, its count and (now and then) a full
 * iteration must equal the model's.  Besides order, the tests hold it to
 * its memory promises: a long queue costs about 16 bytes per item over
 * its text, an empty queue keeps at most one smallest chunk, and 10,000
 * queues of one item each stay small.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "itemq.h"

/* The smallest chunk itemq.c makes and its own bookkeeping per chunk: an
 * empty queue may keep one such chunk. */
#define EMPTY_MAX ((uint64_t)256 + 64)

/* ---- the model ---------------------------------------------------------- */

struct mitem {
	uint64_t id;
	uint32_t deliveries;
	size_t len;
	char *text;
	void *block;               /* queued by reference: the block given */
};

struct model {
	struct mitem *v;           /* a ring: item i at v[(head + i) & (cap - 1)] */
	size_t head, n, cap;       /* cap: a power of two */
	uint64_t text_bytes;
};

static struct mitem *m_at(struct model *m, size_t i)
{
	return &m->v[(m->head + i) & (m->cap - 1)];
}

static void m_grow(struct model *m)
{
	if (m->n < m->cap)
		return;
	size_t cap = m->cap ? 2 * m->cap : 64;
	struct mitem *v = malloc(cap * sizeof *v);
	assert_non_null(v);
	for (size_t i = 0; i < m->n; i++)
		v[i] = *m_at(m, i);
	free(m->v);
	m->v = v;
	m->head = 0;
	m->cap = cap;
}

/* Text of len bytes that tells items apart: its id, then a pattern. */
static char *make_text(uint64_t id, size_t len)
{
	char *t = malloc(len + 1);
	assert_non_null(t);
	for (size_t i = 0; i < len; i++)
		t[i] = (char)('a' + (id * 7 + i) % 26);
	if (len >= 8)
		snprintf(t, 9, "%08llu", (unsigned long long)(id % 100000000));
	return t;
}

/* Bytes of a block before its text: a task's header, say. */
#define BLOCK_HEAD 40

/* Pushes an item: copied, or (as_block) by reference to a block of its
 * own, which the itemq then owns. */
static void push_as(struct itemq *q, struct model *m, bool front,
                    uint64_t id, uint32_t deliveries, size_t len,
                    bool as_block)
{
	char *text = make_text(id, len);
	char *block = NULL;
	if (as_block) {
		block = malloc(BLOCK_HEAD + len + 1);
		assert_non_null(block);
		memcpy(block + BLOCK_HEAD, text, len);
		if (front)
			itemq_push_front_block(q, id, deliveries, block,
			                       block + BLOCK_HEAD, len);
		else
			itemq_push_back_block(q, id, deliveries, block,
			                      block + BLOCK_HEAD, len);
	} else if (front) {
		itemq_push_front(q, id, deliveries, text, len);
	} else {
		itemq_push_back(q, id, deliveries, text, len);
	}
	m_grow(m);
	struct mitem it = { id, deliveries, len, text, block };
	if (front) {
		m->head = (m->head - 1) & (m->cap - 1);
		m->v[m->head] = it;
	} else {
		*m_at(m, m->n) = it;
	}
	m->n++;
	m->text_bytes += len;
}

static void push(struct itemq *q, struct model *m, bool front, uint64_t id,
                 uint32_t deliveries, size_t len)
{
	push_as(q, m, front, id, deliveries, len, false);
}

static void same_item(const struct item *it, const struct mitem *mi)
{
	assert_int_equal(it->id, mi->id);
	assert_int_equal(it->deliveries, mi->deliveries);
	assert_int_equal(it->len, mi->len);
	assert_memory_equal(it->text, mi->text, mi->len);
	/* a block's text is shown where it lies, not copied */
	assert_ptr_equal(it->block, mi->block);
	if (mi->block)
		assert_ptr_equal(it->text, (char *)mi->block + BLOCK_HEAD);
}

static void check_head(const struct itemq *q, struct model *m)
{
	struct item it;
	assert_int_equal(itemq_count(q), m->n);
	if (!m->n) {
		assert_false(itemq_peek(q, &it));
		return;
	}
	assert_true(itemq_peek(q, &it));
	same_item(&it, m_at(m, 0));
}

static void check_all(const struct itemq *q, struct model *m)
{
	struct itemq_iter i;
	struct item it;
	size_t n = 0;

	check_head(q, m);
	itemq_iter_init(q, &i);
	while (itemq_next(&i, &it)) {
		assert_true(n < m->n);
		same_item(&it, m_at(m, n));
		n++;
	}
	assert_int_equal(n, m->n);
}

/* Pops the head: dropped (pop_front frees a block), or taken, when its
 * block must come back to the caller, the same block that went in. */
static void pop_as(struct itemq *q, struct model *m, bool take)
{
	check_head(q, m);
	struct mitem *mi = m_at(m, 0);
	if (take) {
		void *block = itemq_take_front(q);
		assert_ptr_equal(block, mi->block);
		if (block)
			assert_memory_equal((char *)block + BLOCK_HEAD, mi->text,
			                    mi->len);
		free(block);
	} else {
		itemq_pop_front(q);
	}
	m->text_bytes -= mi->len;
	free(mi->text);
	m->head = (m->head + 1) & (m->cap - 1);
	m->n--;
}

static void pop(struct itemq *q, struct model *m)
{
	pop_as(q, m, false);
}

static void model_free(struct model *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m_at(m, i)->text);
	free(m->v);
	memset(m, 0, sizeof *m);
}

/* ---- tests -------------------------------------------------------------- */

static void empty_queue(void **state)
{
	(void)state;
	struct itemq q = { 0 };
	struct itemq_iter i;
	struct item it;
	assert_false(itemq_peek(&q, &it));
	assert_int_equal(itemq_count(&q), 0);
	assert_int_equal(itemq_bytes(&q), 0);
	itemq_iter_init(&q, &i);
	assert_false(itemq_next(&i, &it));
	itemq_free(&q);
	assert_int_equal(itemq_bytes(&q), 0);
}

static void fifo_order_and_head_returns(void **state)
{
	(void)state;
	struct itemq q = { 0 };
	struct model m = { 0 };
	for (uint64_t id = 1; id <= 10; id++)
		push(&q, &m, false, id, 0, id);
	check_all(&q, &m);
	pop(&q, &m);
	pop(&q, &m);
	push(&q, &m, true, 2, 1, 2);      /* given back: first in line */
	push(&q, &m, true, 1, 3, 1);
	check_all(&q, &m);
	while (m.n)
		pop(&q, &m);
	check_all(&q, &m);
	itemq_free(&q);
	model_free(&m);
}

static void empty_text_round_trips(void **state)
{
	(void)state;
	struct itemq q = { 0 };
	struct model m = { 0 };
	push(&q, &m, false, 1, 0, 0);
	push(&q, &m, true, 2, 5, 0);
	check_all(&q, &m);
	pop(&q, &m);
	pop(&q, &m);
	check_all(&q, &m);
	itemq_free(&q);
	model_free(&m);
}

/* Items bigger than any chunk, among small ones, at both ends. */
static void large_items(void **state)
{
	(void)state;
	struct itemq q = { 0 };
	struct model m = { 0 };
	uint64_t id = 1;
	push(&q, &m, false, id++, 0, 10);
	push(&q, &m, false, id++, 0, 200000);
	push(&q, &m, false, id++, 0, 10);
	push(&q, &m, true, id++, 2, 1 << 20);
	push(&q, &m, true, id++, 1, 70000);
	push(&q, &m, false, id++, 0, 65536);
	push(&q, &m, false, id++, 0, 20000);
	push(&q, &m, false, id++, 0, 3);
	check_all(&q, &m);
	while (m.n) {
		pop(&q, &m);
		check_all(&q, &m);
	}
	assert_true(itemq_bytes(&q) <= EMPTY_MAX);
	itemq_free(&q);
	model_free(&m);
}

/* A long queue of 100-byte items: many chunks, about 16 bytes an item
 * over the text (the padding and the chunk ends included), and all of
 * it given back once drained. */
static void many_chunks(void **state)
{
	(void)state;
	struct itemq q = { 0 };
	struct model m = { 0 };
	const size_t n = 200000;
	for (uint64_t id = 1; id <= n; id++)
		push(&q, &m, false, id, 0, 100);
	check_all(&q, &m);
	uint64_t per_item = itemq_bytes(&q) / n;
	assert_true(per_item <= 100 + 24);
	for (size_t i = 0; i < n / 2; i++)
		pop(&q, &m);
	check_all(&q, &m);
	/* the front half's chunks are gone (a spare may be kept) */
	assert_true(itemq_bytes(&q) <= (n / 2) * 124 + 2 * (size_t)65600);
	while (m.n)
		pop(&q, &m);
	check_all(&q, &m);
	assert_true(itemq_bytes(&q) <= EMPTY_MAX);
	itemq_free(&q);
	model_free(&m);
}

/* Many returns to the head in a row (a connection holding many tasks
 * closes): each O(1), and the order kept. */
static void many_head_returns(void **state)
{
	(void)state;
	struct itemq q = { 0 };
	struct model m = { 0 };
	for (uint64_t id = 1; id <= 1000; id++)
		push(&q, &m, false, id, 0, 30);
	for (uint64_t id = 100000; id > 80000; id--)
		push(&q, &m, true, id, 1, 40);
	check_all(&q, &m);
	assert_true(itemq_bytes(&q) / m.n <= 40 + 24 + 8);
	while (m.n)
		pop(&q, &m);
	itemq_free(&q);
	model_free(&m);
}

/* Filling and draining again and again: memory does not creep, and an
 * empty queue keeps little. */
static void empty_refill_cycles(void **state)
{
	(void)state;
	struct itemq q = { 0 };
	struct model m = { 0 };
	uint64_t id = 1, most = 0;
	for (int round = 0; round < 50; round++) {
		size_t n = (size_t)(round % 7) * 300 + 1;
		for (size_t i = 0; i < n; i++)
			push(&q, &m, round % 3 == 0 && i % 2, id++, 0,
			     (size_t)(i % 150));
		check_all(&q, &m);
		if (round % 21 == 6) {   /* the same fill each time */
			if (most)
				assert_true(itemq_bytes(&q) <= most);
			most = itemq_bytes(&q);
		}
		while (m.n)
			pop(&q, &m);
		check_all(&q, &m);
		assert_true(itemq_bytes(&q) <= EMPTY_MAX);
	}
	itemq_free(&q);
	model_free(&m);
}

/* A queue holding one or two items while thousands pass through stays
 * in its smallest chunks. */
static void short_queue_stays_small(void **state)
{
	(void)state;
	struct itemq q = { 0 };
	struct model m = { 0 };
	uint64_t id = 1;
	push(&q, &m, false, id++, 0, 100);
	for (int i = 0; i < 20000; i++) {
		push(&q, &m, false, id++, 0, 100);
		pop(&q, &m);
		if (i % 10 == 0) {       /* a get and a release */
			struct item it;
			assert_true(itemq_peek(&q, &it));
			uint64_t hid = it.id;
			pop(&q, &m);
			push(&q, &m, true, hid, 1, 100);
		}
		assert_true(itemq_bytes(&q) <= 2 * EMPTY_MAX);
	}
	check_all(&q, &m);
	itemq_free(&q);
	model_free(&m);
}

/* 10,000 queues of one 100-byte item each: a few hundred bytes each. */
static void many_nearly_empty_queues(void **state)
{
	(void)state;
	enum { NQ = 10000 };
	struct itemq *qs = calloc(NQ, sizeof *qs);
	assert_non_null(qs);
	char text[100];
	memset(text, 'x', sizeof text);
	uint64_t total = 0;
	for (int i = 0; i < NQ; i++) {
		itemq_push_back(&qs[i], (uint64_t)i + 1, 0, text, sizeof text);
		total += itemq_bytes(&qs[i]);
	}
	assert_true(total / NQ <= 256);
	for (int i = 0; i < NQ; i++) {
		struct item it;
		assert_true(itemq_peek(&qs[i], &it));
		assert_int_equal(it.id, (uint64_t)i + 1);
		itemq_free(&qs[i]);
	}
	free(qs);
}

/* Items queued by reference to their blocks, among copied ones: in order
 * at both ends, shown where they lie, handed back (the same block) by
 * take_front and freed by pop_front and itemq_free (the sanitizer build
 * finds a leak or a double free); their blocks count in itemq_bytes. */
static void blocks_pass_without_copy(void **state)
{
	(void)state;
	struct itemq q = { 0 };
	struct model m = { 0 };

	push_as(&q, &m, false, 1, 0, 5000, true);
	push(&q, &m, false, 2, 0, 100);
	push_as(&q, &m, false, 3, 2, 70000, true);
	push_as(&q, &m, true, 4, 1, 0, true);
	push(&q, &m, true, 5, 0, 10);
	check_all(&q, &m);
	assert_true(itemq_bytes(&q) >= 2 * BLOCK_HEAD + 75000 + 110);
	pop_as(&q, &m, true);    /* 5: copied, nothing handed back */
	pop_as(&q, &m, true);    /* 4: an empty text in a block */
	pop_as(&q, &m, false);   /* 1: freed by the itemq */
	push_as(&q, &m, true, 6, 3, 4096, true);   /* back at the head */
	check_all(&q, &m);
	pop_as(&q, &m, true);
	pop_as(&q, &m, true);
	pop_as(&q, &m, true);
	check_all(&q, &m);
	assert_true(itemq_bytes(&q) <= EMPTY_MAX);

	/* itemq_free frees the blocks still queued */
	for (uint64_t id = 10; id < 400; id++)
		push_as(&q, &m, id % 2, id, 0, 100 + id * 10, id % 3 == 0);
	check_all(&q, &m);
	itemq_free(&q);
	model_free(&m);   /* the texts; the blocks were the itemq's */
}

/* Random pushes at both ends and pops, sizes from empty to past a chunk,
 * against the model. */
static void random_against_model(void **state)
{
	(void)state;
	struct itemq q = { 0 };
	struct model m = { 0 };
	uint64_t id = 1;
	srand(12345);
	for (int step = 0; step < 300000; step++) {
		int r = rand() % 100;
		/* phases: grow, shrink, churn, so the queue swings from empty
		 * to a few thousand items and back */
		int phase = (step / 20000) % 3;
		int push_share = phase == 0 ? 70 : phase == 1 ? 30 : 50;
		if (r < push_share || !m.n) {
			size_t len;
			int s = rand() % 1000;
			if (s < 2)
				len = 65536 + (size_t)(rand() % 100000);
			else if (s < 20)
				len = (size_t)(rand() % 20000);
			else
				len = (size_t)(rand() % 300);
			bool front = rand() % 4 == 0;
			push_as(&q, &m, front, id++, (uint32_t)(rand() % 5), len,
			        rand() % 8 == 0);
		} else {
			pop_as(&q, &m, rand() % 2);
		}
		check_head(&q, &m);
		if (step % 997 == 0)
			check_all(&q, &m);
		/* memory stays near what the entries need: chunk ends, the
		 * head and tail chunks and one spare at most */
		uint64_t need = m.text_bytes + (24 + 2 * BLOCK_HEAD) * m.n;
		assert_true(itemq_bytes(&q) <= 2 * need + 4 * ((uint64_t)65536 + 64) +
		                               EMPTY_MAX);
	}
	check_all(&q, &m);
	while (m.n)
		pop(&q, &m);
	check_all(&q, &m);
	assert_true(itemq_bytes(&q) <= EMPTY_MAX);
	itemq_free(&q);
	model_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(empty_queue),
		cmocka_unit_test(fifo_order_and_head_returns),
		cmocka_unit_test(empty_text_round_trips),
		cmocka_unit_test(large_items),
		cmocka_unit_test(many_chunks),
		cmocka_unit_test(many_head_returns),
		cmocka_unit_test(empty_refill_cycles),
		cmocka_unit_test(short_queue_stays_small),
		cmocka_unit_test(many_nearly_empty_queues),
		cmocka_unit_test(blocks_pass_without_copy),
		cmocka_unit_test(random_against_model),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
