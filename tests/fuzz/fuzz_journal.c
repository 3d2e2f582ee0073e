/*
 * fuzz_journal.c - libFuzzer harness of the journal's record decoder and
 * replay (daemon/record.c).
 *
 * The input is a mode byte and a journal as a store holds it: any bytes,
 * so whole journals, torn ones, damaged ones and files that are not
 * journals at all.  With the mode byte odd, the harness first sets the
 * checksum of every record that frames, so that mutations reach the
 * records' meaning rather than stopping at a CRC that a fuzzer cannot
 * forge; even, the bytes go in as they are.  record_replay() must either
 * take it (clean, or a torn last write to cut) or refuse it (damaged),
 * never read outside it, crash, leak or hang.  When it takes it:
 *
 *  - the sound part it names is a journal of its own: replayed alone it is
 *    clean, with the same records and the same state (what joinqd starts
 *    on after cutting a torn tail);
 *  - the engine it built is consistent once the replay ends: per queue
 *    U == Q + F + D and nothing in flight, every task once in the dump,
 *    in a queue that exists and below the next id, the dump's counts
 *    matching the queue figures, the queues listed by id;
 *  - a snapshot of it written as compaction writes one (record_header,
 *    record_queue, free ids and record_settings, record_next_id,
 *    record_task, a closing batch) replays clean into a fresh engine that
 *    dumps the same state, queue ids and declared settings included
 *    (deadlines within 50 ms, or both due: they go through the wall clock
 *    and back).
 *
 * A property that does not hold abort()s with its line.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "crc32c.h"
#include "engine.h"
#include "property.h"
#include "record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SLACK_MS 50   /* a deadline through the wall clock and back */

static msec_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (msec_t)ts.tv_sec * 1000 + (msec_t)ts.tv_nsec / 1000000;
}

static const struct engine_conf conf = {
	.clock = mono_ms, .max_queues = UINT32_MAX,
};

/* ---- an engine's state, as engine_dump gives it ------------------------ */

struct dtask {
	uint32_t qid;
	uint64_t task;
	uint32_t deliveries;
	enum engine_task_state state;
	msec_t until;
	size_t at, len;          /* the item, in struct dumped's bytes */
};

struct dumped {
	struct buf names;        /* the queues' names by id, one after the
	                            other ("": a free id) */
	size_t *name_len;        /* and the length of each (they may hold NUL) */
	struct queue_conf *declared;   /* by id; dead_letter malloc'd */
	uint32_t nq;             /* ids, the free ones too */
	uint32_t live_queues;
	uint64_t next_id;
	uint64_t live;           /* engine_live_bytes */
	struct dtask *t;
	size_t nt, cap;
	struct buf items;
};

static void d_queue(void *ctx, uint32_t qid, const char *name, size_t len)
{
	struct dumped *d = ctx;
	CHECK(qid == d->nq);
	d->name_len = realloc(d->name_len, (d->nq + 1) * sizeof *d->name_len);
	d->declared = realloc(d->declared, (d->nq + 1) * sizeof *d->declared);
	CHECK(d->name_len && d->declared);
	memset(&d->declared[d->nq], 0, sizeof *d->declared);
	d->name_len[d->nq++] = len;
	d->live_queues += len > 0;
	buf_add(&d->names, name, len);
}

/* The declared settings of the queue dumped last. */
static void d_settings(void *ctx, uint32_t qid, const struct queue_conf *c)
{
	struct dumped *d = ctx;
	CHECK(d->nq && qid == d->nq - 1 && d->name_len[qid]);
	CHECK(c->has_maxsize || c->has_max_deliveries || c->dead_letter);
	struct queue_conf *x = &d->declared[qid];
	CHECK(!x->has_maxsize && !x->has_max_deliveries && !x->dead_letter);
	*x = *c;
	x->name = NULL;
	if (c->dead_letter)
		CHECK((x->dead_letter = strdup(c->dead_letter)));
}

static bool declares(const struct queue_conf *c)
{
	return c->has_maxsize || c->has_max_deliveries || c->dead_letter;
}

static void d_next_id(void *ctx, uint64_t next)
{
	((struct dumped *)ctx)->next_id = next;
}

static void d_task(void *ctx, uint32_t qid, uint64_t task, uint32_t deliveries,
                   enum engine_task_state state, msec_t until,
                   const char *item, size_t len)
{
	struct dumped *d = ctx;
	if (d->nt == d->cap) {
		d->cap = d->cap ? 2 * d->cap : 16;
		d->t = realloc(d->t, d->cap * sizeof *d->t);
		CHECK(d->t);
	}
	d->t[d->nt++] = (struct dtask){ qid, task, deliveries, state, until,
	                                d->items.len, len };
	buf_add(&d->items, item, len);
}

static void dump(const struct engine *e, struct dumped *d)
{
	struct engine_dump cb = {
		.ctx = d, .queue = d_queue, .settings = d_settings,
		.next_id = d_next_id, .task = d_task,
	};
	memset(d, 0, sizeof *d);
	engine_dump(e, &cb);
	d->live = engine_live_bytes(e);
}

static void dumped_free(struct dumped *d)
{
	buf_free(&d->names);
	free(d->name_len);
	for (uint32_t q = 0; q < d->nq; q++)
		free(d->declared[q].dead_letter);
	free(d->declared);
	buf_free(&d->items);
	free(d->t);
}

/* b's bytes from at: b->p is NULL while b is empty. */
static const char *bytes_at(const struct buf *b, size_t at)
{
	return b->p ? b->p + at : "";
}

static int by_task(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The same deadline, once through the wall clock and back: within a few
 * ms, or both due already (a past deadline becomes "now" each time). */
static bool same_deadline(msec_t a, msec_t b)
{
	msec_t now = mono_ms();
	if (a <= now && b <= now)
		return true;
	return a > b ? a - b <= SLACK_MS : b - a <= SLACK_MS;
}

static void same_state(const struct dumped *a, const struct dumped *b)
{
	CHECK(a->nq == b->nq && a->next_id == b->next_id && a->nt == b->nt);
	CHECK(a->live == b->live);
	for (uint32_t q = 0; q < a->nq; q++) {
		const struct queue_conf *x = &a->declared[q], *y = &b->declared[q];
		CHECK(a->name_len[q] == b->name_len[q]);
		CHECK(x->has_maxsize == y->has_maxsize && x->maxsize == y->maxsize &&
		      x->has_max_deliveries == y->has_max_deliveries &&
		      x->max_deliveries == y->max_deliveries);
		CHECK(!x->dead_letter == !y->dead_letter && (!x->dead_letter ||
		      strcmp(x->dead_letter, y->dead_letter) == 0));
	}
	CHECK(a->names.len == b->names.len && (a->names.len == 0 ||
	      memcmp(a->names.p, b->names.p, a->names.len) == 0));
	for (size_t i = 0; i < a->nt; i++) {
		const struct dtask *x = &a->t[i], *y = &b->t[i];
		CHECK(x->qid == y->qid && x->task == y->task &&
		      x->deliveries == y->deliveries && x->state == y->state);
		CHECK(x->state != ENGINE_DELAYED || same_deadline(x->until, y->until));
		CHECK(x->len == y->len && (x->len == 0 ||
		      memcmp(bytes_at(&a->items, x->at), bytes_at(&b->items, y->at),
		             x->len) == 0));
	}
}

/* ---- the checks --------------------------------------------------------- */

/* The engine after engine_replay_end: consistent in itself. */
static void check_engine(const struct engine *e, const struct dumped *d)
{
	CHECK(d->live_queues == engine_queue_count(e));
	CHECK(d->nq == 0 || d->name_len[d->nq - 1]);   /* the last id in use */
	CHECK(d->next_id == engine_next_task_id(e));
	uint64_t *ids = malloc((d->nt + 1) * sizeof *ids);
	CHECK(ids);
	for (size_t i = 0; i < d->nt; i++) {
		CHECK(d->t[i].qid < d->nq && d->name_len[d->t[i].qid]);
		CHECK(d->t[i].task < d->next_id);
		CHECK(d->t[i].state != ENGINE_INFLIGHT);   /* all back at the head */
		ids[i] = d->t[i].task;
	}
	qsort(ids, d->nt, sizeof *ids, by_task);
	for (size_t i = 1; i < d->nt; i++)
		CHECK(ids[i - 1] != ids[i]);
	free(ids);

	/* The queues by id: the dump's that have a name, in order. */
	uint32_t qid = 0;
	for (struct queue *q = engine_next_queue(e, NULL); q;
	     q = engine_next_queue(e, q), qid++) {
		while (qid < d->nq && !d->name_len[qid])
			qid++;
		CHECK(qid < d->nq);
		struct queue_stats s;
		uint64_t queued = 0, delayed = 0;
		engine_queue_stats(e, q, NULL, 0, &s);
		CHECK(s.unfinished == s.qsize + s.inflight + s.delayed);
		CHECK(s.inflight == 0);
		for (size_t i = 0; i < d->nt; i++)
			if (d->t[i].qid == qid) {
				queued += d->t[i].state == ENGINE_QUEUED;
				delayed += d->t[i].state == ENGINE_DELAYED;
			}
		CHECK(queued == s.qsize && delayed == s.delayed);
	}
	CHECK(qid == d->nq);
}

/* A snapshot of d, as compaction writes one. */
static void snapshot(const struct dumped *d, struct buf *b)
{
	size_t at = 0;
	record_header(b);
	for (uint32_t q = 0; q < d->nq; q++) {
		record_queue(b, q, bytes_at(&d->names, at), d->name_len[q]);
		if (declares(&d->declared[q]))
			record_settings(b, q, &d->declared[q]);
		at += d->name_len[q];
	}
	record_next_id(b, d->next_id);
	for (size_t i = 0; i < d->nt; i++) {
		const struct dtask *t = &d->t[i];
		record_task(b, t->qid, t->task, t->deliveries, t->state, t->until,
		            bytes_at(&d->items, t->at), t->len);
	}
	record_batch_seal(b, record_batch_open(b));
}

/* Replays p[0..len) into a fresh engine; must be clean.  Ends the replay
 * and dumps the state into d. */
static uint64_t replay_clean(const unsigned char *p, size_t len,
                             struct dumped *d)
{
	struct engine *e = engine_new(&conf);
	struct record_replay r;
	CHECK(record_replay(p, len, e, &r) == RECORD_CLEAN);
	CHECK(r.good == len);
	engine_replay_end(e);
	dump(e, d);
	check_engine(e, d);
	engine_free(e);
	return r.records;
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

/* Sets the CRC of each record in p[0..size) that frames, up to the first
 * that does not ([u32 length][u32 CRC-32C][payload], record.c). */
static void set_checksums(uint8_t *p, size_t size)
{
	size_t off = 0;
	while (size - off >= 9) {
		uint32_t len = le32(p + off);
		if (len == 0 || len > size - off - 8)
			return;
		uint32_t crc = crc32c(p + off + 8, len);
		for (int i = 0; i < 4; i++)
			p[off + 4 + i] = (uint8_t)(crc >> (8 * i));
		off += 8 + (size_t)len;
	}
}

static void replay_journal(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (!(data[0] & 1)) {
		replay_journal(data + 1, size - 1);
		return 0;
	}
	uint8_t *copy = malloc(size);
	CHECK(copy);
	memcpy(copy, data + 1, size - 1);
	set_checksums(copy, size - 1);
	replay_journal(copy, size - 1);
	free(copy);
	return 0;
}

static void replay_journal(const uint8_t *data, size_t size)
{
	struct engine *e = engine_new(&conf);
	struct record_replay r;
	enum record_end end = record_replay(data, size, e, &r);

	CHECK(r.good <= size);
	CHECK(end != RECORD_CLEAN || r.good == size);
	CHECK(end != RECORD_TORN || r.good < size);
	CHECK(end == RECORD_CLEAN || r.why[0]);
	CHECK(r.records <= size / 9);   /* a record takes 9 bytes or more */
	if (end == RECORD_DAMAGED) {
		engine_free(e);
		return;
	}
	engine_replay_end(e);
	struct dumped a, cut, again;
	dump(e, &a);
	check_engine(e, &a);

	/* What joinqd keeps of a torn journal replays clean, to the same. */
	if (end == RECORD_TORN) {
		CHECK(replay_clean(data, r.good, &cut) == r.records);
		same_state(&a, &cut);
		dumped_free(&cut);
	}

	/* A snapshot of the state gives the state back. */
	struct buf snap = { 0 };
	snapshot(&a, &snap);
	replay_clean((const unsigned char *)snap.p, snap.len, &again);
	same_state(&a, &again);
	buf_free(&snap);
	dumped_free(&again);
	dumped_free(&a);
	engine_free(e);
}
