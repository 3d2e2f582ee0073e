/*
 * test_engine.c - unit tests of the queue engine (daemon/engine.c) and its
 * two containers, the deadline heap (heap.c) and the in-flight table
 * (idmap.c).
 *
 * The engine reads a fake clock that the tests move by hand, so every
 * lease, delay and wait timeout fires at a moment the test chooses.  Every
 * step goes through a helper that afterwards checks each queue's
 * invariants (check_engine), so a test that breaks one fails at the step
 * that broke it.  The engine treats items as opaque bytes: short words keep
 * the tests readable.
 *
 * The last engine test drives the engine with thousands of random steps
 * and compares every answer, every wake-up and every figure with a small
 * reference model written from PROTOCOL.md.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "heap.h"
#include "idmap.h"
#include "log_recorder.h"

#define container_of(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))
#define LEN(a) (sizeof(a) / sizeof(a)[0])

/* ---- the fake clock and the standard configuration ----------------------- */

static msec_t now;

static msec_t fake_clock(void)
{
	return now;
}

static struct queue_conf std_queues[] = {
	{ .name = "small", .has_maxsize = true, .maxsize = 2 },
	{ .name = "one", .has_maxsize = true, .maxsize = 1 },
	{ .name = "jobs", .has_max_deliveries = true, .max_deliveries = 2 },
	{ .name = "jobs.dead", .has_maxsize = true, .maxsize = 1 },
	{ .name = "drop", .has_max_deliveries = true, .max_deliveries = 1,
	  .dead_letter = "off" },
	{ .name = "nodl", .has_max_deliveries = true, .max_deliveries = 1,
	  .dead_letter = "" },
	{ .name = "custom", .has_max_deliveries = true, .max_deliveries = 1,
	  .dead_letter = "morgue" },
	{ .name = "unbounded", .has_maxsize = true, .maxsize = 0 },
};

static const struct engine_conf std_conf = {
	.clock = fake_clock,
	.default_maxsize = 0,
	.max_queues = 64,
	.queues = std_queues,
	.nqueues = LEN(std_queues),
};

static int setup(void **state)
{
	now = 1000;
	*state = engine_new(&std_conf);
	return 0;
}

static int teardown(void **state)
{
	engine_free(*state);
	return 0;
}

/* Swaps the test's engine for one made from another configuration. */
static struct engine *restart(void **state, const struct engine_conf *conf)
{
	engine_free(*state);
	*state = engine_new(conf);
	return *state;
}

/* Items of this many bytes or more are queued in their tasks' blocks
 * (engine_int.h's TASK_BLOCK_MIN), smaller ones packed in chunks: the
 * random tests mix both. */
#define BIG_TEXT 4096
#define BIG_TEXT_MAX (BIG_TEXT + 64)

/* Pads the string in out (size bytes) to BIG_TEXT + seed % 64 bytes, with
 * letters that follow seed so that items stay told apart. */
static void make_big(char *out, size_t size, unsigned seed)
{
	size_t n = strlen(out), want = BIG_TEXT + seed % 64;
	for (; n < want && n + 1 < size; n++)
		out[n] = (char)('a' + (seed + n) % 26);
	out[n] = '\0';
}

/* ---- invariants, checked after every step -------------------------------- */

static void check_engine(const struct engine *e)
{
	size_t n = 0;
	for (struct queue *q = engine_next_queue(e, NULL); q;
	     q = engine_next_queue(e, q)) {
		struct queue_stats s;
		engine_queue_stats(e, q, NULL, 0, &s);
		assert_int_equal(s.unfinished,
		                 s.qsize + s.inflight + s.delayed);
		/* Each task a queue took is finished, sent on, purged, or
		 * here. */
		assert_int_equal(s.puts, s.task_dones + s.dead_lettered +
		                 s.purged + s.unfinished);
		/* Wake-ups are synchronous: nobody is left waiting for what is
		 * there already. */
		if (s.waiting_gets)
			assert_int_equal(s.qsize, 0);
		if (s.waiting_puts)
			assert_true(s.maxsize && s.qsize >= s.maxsize);
		if (s.waiting_joins)
			assert_true(s.unfinished > 0);
		assert_true(s.gets >= s.redeliveries);
		assert_true(++n <= engine_queue_count(e));
	}
	assert_int_equal(n, engine_queue_count(e));
}

/* ---- steps --------------------------------------------------------------- */

/* A test waiter: records what done() reported. */
struct tw {
	struct waiter w;
	int calls;
	int code;
	uint64_t task;
	uint32_t deliveries;
	char item[64];
	int seq;                   /* order among all done() calls */
};

static int done_seq;

static void tw_done(struct waiter *w, int code, const struct delivery *d,
                    uint64_t task)
{
	struct tw *t = container_of(w, struct tw, w);
	t->calls++;
	t->code = code;
	t->task = task;
	t->seq = ++done_seq;
	t->deliveries = 0;
	t->item[0] = '\0';
	if (d) {
		t->deliveries = d->deliveries;
		snprintf(t->item, sizeof t->item, "%.*s", (int)d->item_len,
		         d->item);
		if (d->task != task)
			t->code = -1000;   /* flagged: checked by the tests */
	}
}

static struct waiter *tw_init(struct tw *t, msec_t timeout)
{
	memset(t, 0, sizeof *t);
	t->w.timeout = timeout;
	t->w.done = tw_done;
	return &t->w;
}

/* What a get gave, with the item copied out of the engine. */
struct got {
	int code;
	uint64_t task;
	uint32_t deliveries;
	char item[64];
};

static struct queue *mkq(struct engine *e, const char *name)
{
	struct queue *q = NULL;
	assert_int_equal(engine_queue(e, name, strlen(name), true, &q), JQ_OK);
	assert_non_null(q);
	check_engine(e);
	return q;
}

static struct queue *findq(struct engine *e, const char *name)
{
	struct queue *q = (struct queue *)1;
	assert_int_equal(engine_queue(e, name, strlen(name), false, &q), JQ_OK);
	return q;
}

static struct queue_stats qstats(struct engine *e, const char *name)
{
	struct queue_stats s;
	engine_queue_stats(e, findq(e, name), name, strlen(name), &s);
	return s;
}

static int try_put(struct engine *e, struct queue *q, const char *item,
                   struct tw *w, uint64_t *task)
{
	*task = 0;
	int rc = engine_put(e, q, item, strlen(item), w ? &w->w : NULL, task);
	check_engine(e);
	return rc;
}

static uint64_t put(struct engine *e, struct queue *q, const char *item)
{
	uint64_t task;
	assert_int_equal(try_put(e, q, item, NULL, &task), JQ_OK);
	assert_true(task > 0);
	return task;
}

static struct got try_get(struct engine *e, struct queue *q,
                          const struct take *tk, struct tw *w)
{
	static const struct take plain;
	struct delivery d;
	struct got g = { 0 };

	memset(&d, 0, sizeof d);
	g.code = engine_get(e, q, tk ? tk : &plain, w ? &w->w : NULL, &d);
	if (g.code == JQ_OK) {
		g.task = d.task;
		g.deliveries = d.deliveries;
		snprintf(g.item, sizeof g.item, "%.*s", (int)d.item_len,
		         d.item);
	}
	check_engine(e);
	return g;
}

static struct got get(struct engine *e, struct queue *q)
{
	struct got g = try_get(e, q, NULL, NULL);
	assert_int_equal(g.code, JQ_OK);
	return g;
}

static struct got get_held(struct engine *e, struct queue *q, struct holder *h)
{
	struct take tk = { .holder = h };
	struct got g = try_get(e, q, &tk, NULL);
	assert_int_equal(g.code, JQ_OK);
	return g;
}

static struct got get_leased(struct engine *e, struct queue *q, msec_t lease)
{
	struct take tk = { .lease = lease };
	struct got g = try_get(e, q, &tk, NULL);
	assert_int_equal(g.code, JQ_OK);
	return g;
}

/* A get that must deliver item, the deliveries-th time. */
static uint64_t expect_get(struct engine *e, struct queue *q, const char *item,
                           uint32_t deliveries)
{
	struct got g = get(e, q);
	assert_string_equal(g.item, item);
	assert_int_equal(g.deliveries, deliveries);
	return g.task;
}

static int park_get(struct engine *e, struct queue *q, struct tw *w,
                    msec_t timeout)
{
	struct take tk = { 0 };
	tw_init(w, timeout);
	return try_get(e, q, &tk, w).code;
}

static int join(struct engine *e, struct queue *q, struct tw *w)
{
	int rc = engine_join(e, q, w ? &w->w : NULL);
	check_engine(e);
	return rc;
}

static int task_done(struct engine *e, uint64_t task, uint64_t *left)
{
	uint64_t dummy;
	int rc = engine_task_done(e, task, left ? left : &dummy);
	check_engine(e);
	return rc;
}

static uint64_t done_ok(struct engine *e, uint64_t task)
{
	uint64_t left = UINT64_MAX;
	assert_int_equal(task_done(e, task, &left), JQ_OK);
	return left;
}

static int release(struct engine *e, uint64_t task, msec_t delay)
{
	int rc = engine_release(e, task, delay);
	check_engine(e);
	return rc;
}

static void drop_holder(struct engine *e, struct holder *h)
{
	engine_drop_holder(e, h);
	assert_null(h->tasks);
	check_engine(e);
}

/* Ends the waits still parked: the waiters live on the test's stack, and
 * the engine must not hold them past the test. */
static void end_waits(struct engine *e)
{
	engine_cancel_waiters(e, JQ_SHUTTING_DOWN);
	check_engine(e);
}

static void advance_to(struct engine *e, msec_t t)
{
	assert_true(t >= now);
	now = t;
	engine_advance(e);
	check_engine(e);
	assert_true(engine_next_deadline(e) > now);
}

static void expect_done(const struct tw *w, int code, uint64_t task,
                        const char *item, uint32_t deliveries)
{
	assert_int_equal(w->calls, 1);
	assert_int_equal(w->code, code);
	assert_int_equal(w->task, task);
	if (item)
		assert_string_equal(w->item, item);
	assert_int_equal(w->deliveries, deliveries);
}

/* ---- put and get --------------------------------------------------------- */

static void put_get_is_fifo(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	uint64_t a = put(e, q, "a"), b = put(e, q, "b"), c = put(e, q, "c");

	assert_int_equal(expect_get(e, q, "a", 1), a);
	assert_int_equal(expect_get(e, q, "b", 1), b);
	put(e, q, "d");
	assert_int_equal(expect_get(e, q, "c", 1), c);
	expect_get(e, q, "d", 1);
	assert_int_equal(try_get(e, q, NULL, NULL).code, JQ_EMPTY);
}

static void task_ids_start_at_one_and_increase(void **state)
{
	struct engine *e = *state;
	struct queue *q1 = mkq(e, "q1"), *q2 = mkq(e, "q2");

	/* One counter for the whole engine, not one per queue. */
	assert_int_equal(put(e, q1, "a"), 1);
	assert_int_equal(put(e, q2, "b"), 2);
	assert_int_equal(put(e, q1, "c"), 3);
	struct got g = get(e, q1);
	done_ok(e, g.task);
	/* A finished id is not given out again. */
	assert_int_equal(put(e, q1, "d"), 4);
}

static void task_ids_never_reused_across_redeliveries_and_dead_letters(
	void **state)
{
	struct engine *e = *state;
	struct queue *jobs = mkq(e, "jobs");
	uint64_t t = put(e, jobs, "x");
	assert_int_equal(t, 1);

	/* A redelivery keeps its id. */
	struct got g = get(e, jobs);
	assert_int_equal(release(e, g.task, 0), JQ_OK);
	g = get(e, jobs);
	assert_int_equal(g.task, t);
	assert_int_equal(g.deliveries, 2);
	/* A dead letter is a new task with a new id. */
	assert_int_equal(release(e, g.task, 0), JQ_OK);
	g = get(e, findq(e, "jobs.dead"));
	assert_int_equal(g.task, 2);
	assert_int_equal(g.deliveries, 1);
	assert_string_equal(g.item, "x");
	assert_int_equal(put(e, jobs, "y"), 3);
}

static void deliveries_count_each_redelivery(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	uint64_t t = put(e, q, "a");

	for (uint32_t n = 1; n <= 5; n++) {
		struct got g = get(e, q);
		assert_int_equal(g.task, t);
		assert_int_equal(g.deliveries, n);
		assert_int_equal(release(e, t, 0), JQ_OK);
	}
}

static void items_are_stored_by_copy(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	char item[] = "{\"k\":\"original\"}";
	uint64_t task;

	put(e, q, item);
	memset(item, 'X', sizeof item - 1);
	expect_get(e, q, "{\"k\":\"original\"}", 1);

	/* Bytes, not C strings: an empty item and one holding a NUL. */
	assert_int_equal(engine_put(e, q, "", 0, NULL, &task), JQ_OK);
	assert_int_equal(engine_put(e, q, "a\0b", 3, NULL, &task), JQ_OK);
	check_engine(e);
	struct take tk = { 0 };
	struct delivery d;
	assert_int_equal(engine_get(e, q, &tk, NULL, &d), JQ_OK);
	assert_int_equal(d.item_len, 0);
	assert_int_equal(engine_get(e, q, &tk, NULL, &d), JQ_OK);
	assert_int_equal(d.item_len, 3);
	assert_memory_equal(d.item, "a\0b", 3);
	check_engine(e);
}

static void get_on_empty_queue_is_empty(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	assert_int_equal(try_get(e, q, NULL, NULL).code, JQ_EMPTY);
	struct queue_stats s = qstats(e, "default");
	assert_int_equal(s.gets, 0);
	assert_int_equal(s.waiting_gets, 0);
}

/* ---- maxsize and blocked puts -------------------------------------------- */

static void put_on_full_queue_is_full_without_waiter(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "small");
	uint64_t task;

	put(e, q, "a");
	put(e, q, "b");
	assert_int_equal(try_put(e, q, "c", NULL, &task), JQ_FULL);
	struct queue_stats s = qstats(e, "small");
	assert_int_equal(s.qsize, 2);
	assert_int_equal(s.maxsize, 2);
	assert_int_equal(s.puts, 2);
	assert_int_equal(s.unfinished, 2);
	/* Delivered items do not count against maxsize. */
	get(e, q);
	put(e, q, "c");
	assert_int_equal(try_put(e, q, "d", NULL, &task), JQ_FULL);
	assert_int_equal(qstats(e, "small").unfinished, 3);
}

static void put_on_full_queue_parks_waiter(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "one");
	struct tw w;
	uint64_t task;

	put(e, q, "a");
	tw_init(&w, NEVER);
	assert_int_equal(try_put(e, q, "b", &w, &task), JQ_PARKED);
	assert_int_equal(w.calls, 0);
	struct queue_stats s = qstats(e, "one");
	assert_int_equal(s.waiting_puts, 1);
	assert_int_equal(s.qsize, 1);
	assert_int_equal(s.unfinished, 1);   /* a parked put: no task yet */
	assert_int_equal(s.puts, 1);
	end_waits(e);
	expect_done(&w, JQ_SHUTTING_DOWN, 0, "", 0);
}

static void blocked_puts_admitted_in_arrival_order(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "one"), *other = mkq(e, "other");
	struct tw w1, w2;
	uint64_t task;

	assert_int_equal(put(e, q, "a"), 1);
	tw_init(&w1, NEVER);
	tw_init(&w2, NEVER);
	assert_int_equal(try_put(e, q, "b", &w1, &task), JQ_PARKED);
	assert_int_equal(try_put(e, q, "c", &w2, &task), JQ_PARKED);
	/* Ids are given at admission, not when the put arrived. */
	assert_int_equal(put(e, other, "z"), 2);

	expect_get(e, q, "a", 1);
	expect_done(&w1, JQ_OK, 3, "", 0);
	assert_int_equal(w2.calls, 0);
	assert_int_equal(expect_get(e, q, "b", 1), 3);
	expect_done(&w2, JQ_OK, 4, "", 0);
	assert_int_equal(expect_get(e, q, "c", 1), 4);
	assert_int_equal(qstats(e, "one").waiting_puts, 0);
}

static void get_on_full_queue_admits_exactly_one_blocked_put(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "small");
	struct tw w1, w2;
	uint64_t task;

	put(e, q, "a");
	put(e, q, "b");
	tw_init(&w1, NEVER);
	tw_init(&w2, NEVER);
	assert_int_equal(try_put(e, q, "c", &w1, &task), JQ_PARKED);
	assert_int_equal(try_put(e, q, "d", &w2, &task), JQ_PARKED);

	expect_get(e, q, "a", 1);
	assert_int_equal(w1.calls, 1);
	assert_int_equal(w2.calls, 0);
	struct queue_stats s = qstats(e, "small");
	assert_int_equal(s.qsize, 2);
	assert_int_equal(s.waiting_puts, 1);
	/* Finishing a task makes no room: only queued items count. */
	done_ok(e, 1);
	assert_int_equal(w2.calls, 0);
	end_waits(e);
}

static void put_behind_waiting_puts_waits_its_turn(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "one");
	struct tw w1, w2;
	uint64_t task;

	put(e, q, "a");
	tw_init(&w1, NEVER);
	tw_init(&w2, NEVER);
	assert_int_equal(try_put(e, q, "b", &w1, &task), JQ_PARKED);
	assert_int_equal(try_put(e, q, "x", NULL, &task), JQ_FULL);
	assert_int_equal(try_put(e, q, "c", &w2, &task), JQ_PARKED);
	expect_get(e, q, "a", 1);
	expect_get(e, q, "b", 1);
	expect_get(e, q, "c", 1);
	assert_int_equal(w1.seq + 1, w2.seq);
}

static void put_waiter_times_out_with_full(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "one");
	struct tw w;
	uint64_t task;

	put(e, q, "a");
	tw_init(&w, 100);
	assert_int_equal(try_put(e, q, "b", &w, &task), JQ_PARKED);
	assert_int_equal(engine_next_deadline(e), 1100);
	advance_to(e, 1099);
	assert_int_equal(w.calls, 0);
	advance_to(e, 1100);
	expect_done(&w, JQ_FULL, 0, "", 0);
	assert_int_equal(qstats(e, "one").waiting_puts, 0);
	assert_int_equal(engine_next_deadline(e), NEVER);
	/* Its item is gone: room admits nothing. */
	expect_get(e, q, "a", 1);
	assert_int_equal(qstats(e, "one").qsize, 0);
	assert_int_equal(w.calls, 1);
}

/* ---- waiting getters ----------------------------------------------------- */

static void getters_served_in_arrival_order(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct tw g[3];

	for (int i = 0; i < 3; i++)
		assert_int_equal(park_get(e, q, &g[i], NEVER), JQ_PARKED);
	assert_int_equal(qstats(e, "default").waiting_gets, 3);
	uint64_t a = put(e, q, "a");
	expect_done(&g[0], JQ_OK, a, "a", 1);
	assert_int_equal(g[1].calls + g[2].calls, 0);
	uint64_t b = put(e, q, "b");
	expect_done(&g[1], JQ_OK, b, "b", 1);
	uint64_t c = put(e, q, "c");
	expect_done(&g[2], JQ_OK, c, "c", 1);
	struct queue_stats s = qstats(e, "default");
	assert_int_equal(s.qsize, 0);
	assert_int_equal(s.inflight, 3);
	assert_int_equal(s.gets, 3);
}

static void put_wakes_oldest_getter_synchronously(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct tw g;
	uint64_t task;

	assert_int_equal(park_get(e, q, &g, NEVER), JQ_PARKED);
	assert_int_equal(engine_put(e, q, "a", 1, NULL, &task), JQ_OK);
	/* Delivered inside engine_put, before it returned. */
	assert_int_equal(g.calls, 1);
	check_engine(e);
	expect_done(&g, JQ_OK, task, "a", 1);
	struct queue_stats s = qstats(e, "default");
	assert_int_equal(s.qsize, 0);
	assert_int_equal(s.inflight, 1);
	assert_int_equal(s.waiting_gets, 0);
}

static void new_getter_waits_behind_parked_getters(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct tw g1, g2;

	assert_int_equal(park_get(e, q, &g1, NEVER), JQ_PARKED);
	assert_int_equal(try_get(e, q, NULL, NULL).code, JQ_EMPTY);
	assert_int_equal(park_get(e, q, &g2, NEVER), JQ_PARKED);
	put(e, q, "a");
	assert_int_equal(g1.calls, 1);
	assert_int_equal(g2.calls, 0);
	end_waits(e);
}

static void get_waiter_times_out_at_exact_deadline(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct tw g;

	assert_int_equal(park_get(e, q, &g, 250), JQ_PARKED);
	assert_int_equal(engine_next_deadline(e), 1250);
	advance_to(e, 1249);
	assert_int_equal(g.calls, 0);
	advance_to(e, 1250);
	expect_done(&g, JQ_EMPTY, 0, "", 0);
	assert_int_equal(qstats(e, "default").waiting_gets, 0);
	/* Gone: a later put stays queued. */
	put(e, q, "a");
	assert_int_equal(qstats(e, "default").qsize, 1);
	assert_int_equal(g.calls, 1);
}

static void join_waiter_times_out_with_timeout(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct tw j;

	put(e, q, "a");
	tw_init(&j, 40);
	assert_int_equal(join(e, q, &j), JQ_PARKED);
	advance_to(e, 1039);
	assert_int_equal(j.calls, 0);
	advance_to(e, 1040);
	expect_done(&j, JQ_TIMEOUT, 0, "", 0);
	assert_int_equal(qstats(e, "default").waiting_joins, 0);
}

static void zero_timeout_waiter_expires_on_next_advance(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct tw g;

	assert_int_equal(park_get(e, q, &g, 0), JQ_PARKED);
	assert_int_equal(engine_next_deadline(e), now);
	advance_to(e, now);
	expect_done(&g, JQ_EMPTY, 0, "", 0);
}

static void next_deadline_is_the_earliest(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default"), *o = mkq(e, "one");
	struct tw g, j, p;
	uint64_t task;

	assert_int_equal(engine_next_deadline(e), NEVER);
	assert_int_equal(park_get(e, q, &g, 500), JQ_PARKED);
	assert_int_equal(engine_next_deadline(e), 1500);
	put(e, o, "x");
	tw_init(&p, 300);
	assert_int_equal(try_put(e, o, "y", &p, &task), JQ_PARKED);
	assert_int_equal(engine_next_deadline(e), 1300);
	tw_init(&j, 200);
	assert_int_equal(join(e, o, &j), JQ_PARKED);
	assert_int_equal(engine_next_deadline(e), 1200);
	/* A lease is a deadline too. */
	get_leased(e, o, 100);
	assert_int_equal(p.calls, 1);             /* room: y admitted */
	assert_int_equal(engine_next_deadline(e), 1100);
	advance_to(e, 1100);                      /* x comes back */
	assert_int_equal(engine_next_deadline(e), 1200);
	advance_to(e, 1200);
	expect_done(&j, JQ_TIMEOUT, 0, "", 0);
	assert_int_equal(engine_next_deadline(e), 1500);
	advance_to(e, 5000);
	expect_done(&g, JQ_EMPTY, 0, "", 0);
	assert_int_equal(engine_next_deadline(e), NEVER);
}

static void never_timeout_never_fires(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct tw g, j, far;

	assert_int_equal(park_get(e, q, &g, NEVER), JQ_PARKED);
	put(e, mkq(e, "busy"), "x");
	tw_init(&j, NEVER);
	assert_int_equal(join(e, findq(e, "busy"), &j), JQ_PARKED);
	/* A timeout so long that now + timeout would overflow is forever. */
	assert_int_equal(park_get(e, q, &far, NEVER - 10), JQ_PARKED);
	assert_int_equal(engine_next_deadline(e), NEVER);
	advance_to(e, UINT64_C(1) << 62);
	advance_to(e, NEVER - 1);
	assert_int_equal(g.calls + j.calls + far.calls, 0);
	assert_int_equal(qstats(e, "default").waiting_gets, 2);
	end_waits(e);
}

/* ---- join ---------------------------------------------------------------- */

static void join_ok_when_nothing_unfinished(void **state)
{
	struct engine *e = *state;
	struct tw j;

	tw_init(&j, NEVER);
	assert_int_equal(join(e, NULL, &j), JQ_OK);     /* unknown queue */
	assert_int_equal(join(e, NULL, NULL), JQ_OK);
	struct queue *q = mkq(e, "default");
	assert_int_equal(join(e, q, &j), JQ_OK);
	assert_int_equal(j.calls, 0);
	assert_int_equal(qstats(e, "default").waiting_joins, 0);
}

static void join_without_waiter_is_timeout(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");

	put(e, q, "a");
	assert_int_equal(join(e, q, NULL), JQ_TIMEOUT);
	get(e, q);
	assert_int_equal(join(e, q, NULL), JQ_TIMEOUT);   /* still in flight */
}

static void parked_joiners_complete_on_last_task_done(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct tw j1, j2;

	put(e, q, "a");
	put(e, q, "b");
	tw_init(&j1, NEVER);
	tw_init(&j2, 1000000);
	assert_int_equal(join(e, q, &j1), JQ_PARKED);
	assert_int_equal(join(e, q, &j2), JQ_PARKED);
	uint64_t a = get(e, q).task, b = get(e, q).task;
	assert_int_equal(j1.calls + j2.calls, 0);
	assert_int_equal(done_ok(e, a), 1);
	assert_int_equal(j1.calls + j2.calls, 0);
	assert_int_equal(done_ok(e, b), 0);
	expect_done(&j1, JQ_OK, 0, "", 0);
	expect_done(&j2, JQ_OK, 0, "", 0);
	assert_true(j1.seq < j2.seq);
	assert_int_equal(qstats(e, "default").waiting_joins, 0);
	assert_int_equal(engine_next_deadline(e), NEVER);
}

static void join_waits_for_delayed_and_released_tasks(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct tw j;

	put(e, q, "a");
	uint64_t t = get(e, q).task;
	tw_init(&j, NEVER);
	assert_int_equal(join(e, q, &j), JQ_PARKED);
	assert_int_equal(release(e, t, 50), JQ_OK);
	advance_to(e, 1050);
	assert_int_equal(j.calls, 0);            /* back in the queue */
	t = get(e, q).task;
	assert_int_equal(j.calls, 0);
	done_ok(e, t);
	expect_done(&j, JQ_OK, 0, "", 0);
}

static void join_after_put_get_task_done(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");

	for (int i = 0; i < 3; i++) {
		put(e, q, "a");
		done_ok(e, get(e, q).task);
		assert_int_equal(join(e, q, NULL), JQ_OK);
	}
}

/* ---- task_done ----------------------------------------------------------- */

static void task_done_returns_unfinished(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");

	put(e, q, "a");
	put(e, q, "b");
	put(e, q, "c");
	uint64_t a = get(e, q).task, b = get(e, q).task;
	assert_int_equal(done_ok(e, b), 2);
	assert_int_equal(done_ok(e, a), 1);
	struct queue_stats s = qstats(e, "default");
	assert_int_equal(s.task_dones, 2);
	assert_int_equal(s.inflight, 0);
	assert_int_equal(s.qsize, 1);
}

static void task_done_finds_task_in_any_queue(void **state)
{
	struct engine *e = *state;
	struct queue *q1 = mkq(e, "q1"), *q2 = mkq(e, "q2");

	put(e, q1, "a");
	put(e, q2, "b");
	put(e, q2, "c");
	uint64_t b = get(e, q2).task;
	get(e, q1);
	assert_int_equal(done_ok(e, b), 1);     /* q2's unfinished */
	assert_int_equal(qstats(e, "q1").unfinished, 1);
	assert_int_equal(qstats(e, "q2").task_dones, 1);
}

static void task_done_unknown_task(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");

	assert_int_equal(task_done(e, 1, NULL), JQ_UNKNOWN_TASK);   /* never */
	uint64_t a = put(e, q, "a");
	assert_int_equal(task_done(e, a, NULL), JQ_UNKNOWN_TASK);   /* queued */
	assert_int_equal(task_done(e, a + 1, NULL), JQ_UNKNOWN_TASK);
	assert_int_equal(task_done(e, 0, NULL), JQ_UNKNOWN_TASK);
	assert_int_equal(task_done(e, UINT64_MAX, NULL), JQ_UNKNOWN_TASK);
	get(e, q);
	done_ok(e, a);
	assert_int_equal(task_done(e, a, NULL), JQ_UNKNOWN_TASK);   /* done */
	uint64_t b = put(e, q, "b");
	get(e, q);
	assert_int_equal(release(e, b, 100), JQ_OK);
	assert_int_equal(task_done(e, b, NULL), JQ_UNKNOWN_TASK); /* delayed */
	assert_int_equal(qstats(e, "default").task_dones, 1);
}

/* Task 0 is never issued.  Asking for it must leave the in-flight table
 * as it was, however often: the table then still grows and shrinks right. */
static void task_zero_is_unknown_and_harmless(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	uint64_t t[200];

	for (int i = 0; i < 3; i++) {
		assert_int_equal(task_done(e, 0, NULL), JQ_UNKNOWN_TASK);
		assert_int_equal(release(e, 0, 0), JQ_UNKNOWN_TASK);
	}
	for (int i = 0; i < 200; i++)
		put(e, q, "x");
	for (int i = 0; i < 200; i++)
		t[i] = get(e, q).task;
	assert_int_equal(task_done(e, 0, NULL), JQ_UNKNOWN_TASK);
	for (int i = 0; i < 200; i++)
		assert_int_equal(done_ok(e, t[i]), (uint64_t)(199 - i));
}

/* ---- release and delays -------------------------------------------------- */

static void release_puts_task_at_head(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");

	put(e, q, "a");
	put(e, q, "b");
	put(e, q, "c");
	uint64_t a = get(e, q).task, b = get(e, q).task;
	/* Each release goes before the items queued before it. */
	assert_int_equal(release(e, b, 0), JQ_OK);
	assert_int_equal(release(e, a, 0), JQ_OK);
	assert_int_equal(expect_get(e, q, "a", 2), a);
	assert_int_equal(expect_get(e, q, "b", 2), b);
	expect_get(e, q, "c", 1);
	struct queue_stats s = qstats(e, "default");
	assert_int_equal(s.releases, 2);
	assert_int_equal(s.redeliveries, 2);
	assert_int_equal(s.gets, 5);
}

static void release_unknown_task(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");

	assert_int_equal(release(e, 7, 0), JQ_UNKNOWN_TASK);
	uint64_t a = put(e, q, "a");
	assert_int_equal(release(e, a, 0), JQ_UNKNOWN_TASK);       /* queued */
	get(e, q);
	assert_int_equal(release(e, a, 0), JQ_OK);
	assert_int_equal(release(e, a, 0), JQ_UNKNOWN_TASK);       /* again */
	get(e, q);
	done_ok(e, a);
	assert_int_equal(release(e, a, 0), JQ_UNKNOWN_TASK);       /* done */
	assert_int_equal(qstats(e, "default").releases, 1);
}

static void release_with_delay_counts_delayed(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");

	uint64_t a = put(e, q, "a");
	get(e, q);
	assert_int_equal(release(e, a, 100), JQ_OK);
	struct queue_stats s = qstats(e, "default");
	assert_int_equal(s.delayed, 1);
	assert_int_equal(s.inflight, 0);
	assert_int_equal(s.qsize, 0);
	assert_int_equal(s.unfinished, 1);
	assert_int_equal(s.releases, 1);
	/* Not deliverable, not delivered. */
	assert_int_equal(try_get(e, q, NULL, NULL).code, JQ_EMPTY);
	assert_int_equal(task_done(e, a, NULL), JQ_UNKNOWN_TASK);
	assert_int_equal(release(e, a, 0), JQ_UNKNOWN_TASK);
	assert_int_equal(engine_next_deadline(e), 1100);
	advance_to(e, 1099);
	assert_int_equal(qstats(e, "default").delayed, 1);
	advance_to(e, 1100);
	s = qstats(e, "default");
	assert_int_equal(s.delayed, 0);
	assert_int_equal(s.qsize, 1);
	assert_int_equal(expect_get(e, q, "a", 2), a);
}

static void delayed_task_enters_head_even_if_full(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "one");
	struct tw p;
	uint64_t task;

	uint64_t a = put(e, q, "a");
	get(e, q);
	put(e, q, "b");
	tw_init(&p, NEVER);
	assert_int_equal(try_put(e, q, "c", &p, &task), JQ_PARKED);
	assert_int_equal(release(e, a, 10), JQ_OK);
	advance_to(e, 1010);
	struct queue_stats s = qstats(e, "one");
	assert_int_equal(s.qsize, 2);          /* past maxsize 1 */
	assert_int_equal(s.delayed, 0);
	expect_get(e, q, "a", 2);
	assert_int_equal(p.calls, 0);          /* still full: b is queued */
	expect_get(e, q, "b", 1);
	assert_int_equal(p.calls, 1);
	expect_get(e, q, "c", 1);
}

static void delayed_task_wakes_waiting_getter(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct tw g;

	uint64_t a = put(e, q, "a");
	get(e, q);
	assert_int_equal(release(e, a, 30), JQ_OK);
	assert_int_equal(park_get(e, q, &g, NEVER), JQ_PARKED);
	advance_to(e, 1030);
	expect_done(&g, JQ_OK, a, "a", 2);
	assert_int_equal(qstats(e, "default").inflight, 1);
}

static void release_wakes_waiting_getter(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct tw g;

	uint64_t a = put(e, q, "a");
	get(e, q);
	assert_int_equal(park_get(e, q, &g, NEVER), JQ_PARKED);
	assert_int_equal(release(e, a, 0), JQ_OK);
	expect_done(&g, JQ_OK, a, "a", 2);
}

/* ---- leases -------------------------------------------------------------- */

static void lease_expiry_returns_task_to_head(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");

	uint64_t a = put(e, q, "a");
	put(e, q, "b");
	get_leased(e, q, 100);
	assert_int_equal(engine_next_deadline(e), 1100);
	advance_to(e, 1099);
	assert_int_equal(qstats(e, "default").inflight, 1);
	advance_to(e, 1100);
	struct queue_stats s = qstats(e, "default");
	assert_int_equal(s.inflight, 0);
	assert_int_equal(s.qsize, 2);
	assert_int_equal(s.releases, 0);       /* a lease is not a release */
	assert_int_equal(expect_get(e, q, "a", 2), a);
	assert_int_equal(qstats(e, "default").redeliveries, 1);
}

static void lease_expiry_wakes_waiting_getter(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct tw g;

	uint64_t a = put(e, q, "a");
	get_leased(e, q, 20);
	assert_int_equal(park_get(e, q, &g, NEVER), JQ_PARKED);
	advance_to(e, 1020);
	expect_done(&g, JQ_OK, a, "a", 2);
}

/* A parked getter's lease runs from the delivery, not from the park. */
static void parked_getter_lease_starts_at_delivery(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct take tk = { .lease = 100 };
	struct tw g;

	tw_init(&g, NEVER);
	assert_int_equal(try_get(e, q, &tk, &g).code, JQ_PARKED);
	advance_to(e, 1500);
	uint64_t a = put(e, q, "a");
	expect_done(&g, JQ_OK, a, "a", 1);
	assert_int_equal(engine_next_deadline(e), 1600);
	advance_to(e, 1599);
	assert_int_equal(qstats(e, "default").inflight, 1);
	advance_to(e, 1600);
	assert_int_equal(expect_get(e, q, "a", 2), a);
}

static void parked_getter_with_holder_holds_task(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct holder h = { 0 };
	struct take tk = { .holder = &h };
	struct tw g;

	tw_init(&g, 100);
	assert_int_equal(try_get(e, q, &tk, &g).code, JQ_PARKED);
	uint64_t a = put(e, q, "a");
	expect_done(&g, JQ_OK, a, "a", 1);
	assert_non_null(h.tasks);
	assert_int_equal(engine_next_deadline(e), NEVER);
	drop_holder(e, &h);
	assert_int_equal(expect_get(e, q, "a", 2), a);
}

static void task_done_before_lease_expiry_cancels_it(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");

	put(e, q, "a");
	uint64_t a = get_leased(e, q, 100).task;
	done_ok(e, a);
	assert_int_equal(engine_next_deadline(e), NEVER);
	advance_to(e, 5000);
	struct queue_stats s = qstats(e, "default");
	assert_int_equal(s.unfinished, 0);
	assert_int_equal(s.qsize, 0);
	assert_int_equal(s.gets, 1);
}

static void release_of_leased_task_cancels_lease(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct holder h = { 0 };

	uint64_t a = put(e, q, "a");
	get_leased(e, q, 100);
	assert_int_equal(release(e, a, 0), JQ_OK);
	assert_int_equal(engine_next_deadline(e), NEVER);
	get_held(e, q, &h);
	advance_to(e, 1200);                   /* past the old lease */
	assert_int_equal(qstats(e, "default").inflight, 1);
	drop_holder(e, &h);
	expect_get(e, q, "a", 3);
}

static void lease_wins_over_holder(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct holder h = { 0 };
	struct take tk = { .holder = &h, .lease = 100 };

	put(e, q, "a");
	assert_int_equal(try_get(e, q, &tk, NULL).code, JQ_OK);
	assert_null(h.tasks);                  /* leased tasks are not held */
	drop_holder(e, &h);
	assert_int_equal(qstats(e, "default").inflight, 1);
	advance_to(e, 1100);
	assert_int_equal(qstats(e, "default").qsize, 1);
}

/* ---- holders ------------------------------------------------------------- */

static void drop_holder_returns_oldest_delivery_first(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct holder h = { 0 };

	put(e, q, "a");
	put(e, q, "b");
	put(e, q, "c");
	uint64_t a = get_held(e, q, &h).task, b = get_held(e, q, &h).task;
	drop_holder(e, &h);
	struct queue_stats s = qstats(e, "default");
	assert_int_equal(s.qsize, 3);
	assert_int_equal(s.inflight, 0);
	assert_int_equal(s.releases, 0);
	assert_int_equal(expect_get(e, q, "a", 2), a);
	assert_int_equal(expect_get(e, q, "b", 2), b);
	expect_get(e, q, "c", 1);
}

static void drop_holder_across_queues(void **state)
{
	struct engine *e = *state;
	struct queue *q1 = mkq(e, "q1"), *q2 = mkq(e, "q2");
	struct holder h = { 0 }, other = { 0 };

	put(e, q1, "a1");
	put(e, q2, "a2");
	put(e, q1, "b1");
	put(e, q2, "b2");
	get_held(e, q1, &h);
	get_held(e, q2, &h);
	get_held(e, q1, &h);
	get_held(e, q2, &other);
	drop_holder(e, &h);
	assert_int_equal(qstats(e, "q1").qsize, 2);
	assert_int_equal(qstats(e, "q2").qsize, 1);
	assert_int_equal(qstats(e, "q2").inflight, 1);   /* other's */
	expect_get(e, q1, "a1", 2);
	expect_get(e, q1, "b1", 2);
	expect_get(e, q2, "a2", 2);
	assert_non_null(other.tasks);
}

/*
 * A waiting getter takes the first in line: the oldest delivery of the
 * dropped holder, not whichever task happened to come back first.
 */
static void drop_holder_serves_waiting_getters_oldest_first(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct holder h = { 0 };
	struct tw g1, g2;

	uint64_t a = put(e, q, "a"), b = put(e, q, "b");
	put(e, q, "c");
	get_held(e, q, &h);
	get_held(e, q, &h);
	get_held(e, q, &h);
	assert_int_equal(park_get(e, q, &g1, NEVER), JQ_PARKED);
	assert_int_equal(park_get(e, q, &g2, NEVER), JQ_PARKED);
	drop_holder(e, &h);
	expect_done(&g1, JQ_OK, a, "a", 2);
	expect_done(&g2, JQ_OK, b, "b", 2);
	expect_get(e, q, "c", 2);
}

static void leased_tasks_survive_drop_holder(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct holder h = { 0 };

	put(e, q, "a");
	put(e, q, "b");
	uint64_t a = get_leased(e, q, 500).task;
	get_held(e, q, &h);
	drop_holder(e, &h);
	struct queue_stats s = qstats(e, "default");
	assert_int_equal(s.inflight, 1);
	assert_int_equal(s.qsize, 1);
	done_ok(e, a);                         /* still a delivered task */
}

static void unheld_unleased_task_stays_in_flight(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct holder h = { 0 };

	put(e, q, "a");
	uint64_t a = get(e, q).task;           /* neither holder nor lease */
	drop_holder(e, &h);
	advance_to(e, 1000000);
	assert_int_equal(qstats(e, "default").inflight, 1);
	assert_int_equal(release(e, a, 0), JQ_OK);
}

/* A held task finished or released leaves its holder's list: dropping the
 * holder later must not touch it (AddressSanitizer watches). */
static void finished_tasks_leave_their_holder(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct holder h = { 0 };
	uint64_t t[5];

	for (int i = 0; i < 5; i++) {
		char item[2] = { (char)('a' + i), '\0' };
		put(e, q, item);
	}
	for (int i = 0; i < 5; i++)
		t[i] = get_held(e, q, &h).task;
	/* The list runs newest first: t[4] heads it, t[0] ends it. */
	done_ok(e, t[2]);                      /* the middle */
	done_ok(e, t[4]);                      /* the head */
	done_ok(e, t[0]);                      /* the tail */
	assert_int_equal(release(e, t[3], 0), JQ_OK);
	expect_get(e, q, "d", 2);              /* now unheld */
	drop_holder(e, &h);                    /* only t[1] is left */
	struct queue_stats s = qstats(e, "default");
	assert_int_equal(s.qsize, 1);
	assert_int_equal(s.inflight, 1);
	expect_get(e, q, "b", 2);
}

static void delayed_release_leaves_its_holder(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct holder h = { 0 };

	put(e, q, "a");
	put(e, q, "b");
	uint64_t a = get_held(e, q, &h).task;
	get_held(e, q, &h);
	assert_int_equal(release(e, a, 100), JQ_OK);
	drop_holder(e, &h);
	struct queue_stats s = qstats(e, "default");
	assert_int_equal(s.delayed, 1);
	assert_int_equal(s.qsize, 1);
	advance_to(e, 1100);
	expect_get(e, q, "a", 2);
	expect_get(e, q, "b", 2);
}

static void holder_is_reusable_after_drop(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct holder h = { 0 };

	drop_holder(e, &h);                    /* empty: nothing happens */
	put(e, q, "a");
	get_held(e, q, &h);
	drop_holder(e, &h);
	get_held(e, q, &h);
	drop_holder(e, &h);
	expect_get(e, q, "a", 3);
}

static void returned_tasks_enter_full_queue(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "one");
	struct holder h = { 0 };

	uint64_t a = put(e, q, "a");
	get(e, q);
	uint64_t b = put(e, q, "b");
	get_held(e, q, &h);
	uint64_t c = put(e, q, "c");
	get_leased(e, q, 10);
	put(e, q, "d");
	/* The queue is full (d); each way back still gets in. */
	assert_int_equal(release(e, a, 0), JQ_OK);
	drop_holder(e, &h);
	advance_to(e, 1010);
	assert_int_equal(qstats(e, "one").qsize, 4);
	assert_int_equal(expect_get(e, q, "c", 2), c);
	assert_int_equal(expect_get(e, q, "b", 2), b);
	assert_int_equal(expect_get(e, q, "a", 2), a);
	expect_get(e, q, "d", 1);
}

/* ---- dead letters -------------------------------------------------------- */

/* Delivers jobs' head twice (max_deliveries) and returns its task id. */
static uint64_t use_up_deliveries(struct engine *e, struct queue *jobs)
{
	uint64_t t = get(e, jobs).task;
	assert_int_equal(release(e, t, 0), JQ_OK);
	struct got g = get(e, jobs);
	assert_int_equal(g.task, t);
	assert_int_equal(g.deliveries, 2);
	return t;
}

static void expect_dead_lettered(struct engine *e, const char *item,
                                 uint64_t old_id)
{
	struct queue_stats s = qstats(e, "jobs");
	assert_int_equal(s.dead_lettered, 1);
	assert_int_equal(s.unfinished, 0);
	assert_int_equal(s.inflight, 0);
	assert_int_equal(s.delayed, 0);
	assert_int_equal(s.task_dones, 0);
	struct queue *dq = findq(e, "jobs.dead");
	assert_non_null(dq);
	s = qstats(e, "jobs.dead");
	assert_int_equal(s.puts, 1);
	assert_int_equal(s.qsize, 1);
	struct got g = get(e, dq);
	assert_string_equal(g.item, item);
	assert_true(g.task > old_id);
	assert_int_equal(g.deliveries, 1);
	assert_int_equal(task_done(e, old_id, NULL), JQ_UNKNOWN_TASK);
}

static void task_within_max_deliveries_comes_back(void **state)
{
	struct engine *e = *state;
	struct queue *jobs = mkq(e, "jobs");

	put(e, jobs, "x");
	uint64_t t = get(e, jobs).task;
	assert_int_equal(release(e, t, 0), JQ_OK);
	assert_int_equal(qstats(e, "jobs").qsize, 1);
	assert_int_equal(qstats(e, "jobs").dead_lettered, 0);
	assert_null(findq(e, "jobs.dead"));
}

static void release_after_max_deliveries_dead_letters(void **state)
{
	struct engine *e = *state;
	struct queue *jobs = mkq(e, "jobs");

	put(e, jobs, "x");
	uint64_t t = use_up_deliveries(e, jobs);
	assert_int_equal(release(e, t, 0), JQ_OK);
	assert_int_equal(qstats(e, "jobs").releases, 2);
	expect_dead_lettered(e, "x", t);
}

static void lease_expiry_after_max_deliveries_dead_letters(void **state)
{
	struct engine *e = *state;
	struct queue *jobs = mkq(e, "jobs");

	put(e, jobs, "x");
	uint64_t t = get_leased(e, jobs, 10).task;
	advance_to(e, 1010);
	assert_int_equal(get_leased(e, jobs, 10).task, t);
	advance_to(e, 1020);
	expect_dead_lettered(e, "x", t);
}

static void drop_holder_after_max_deliveries_dead_letters(void **state)
{
	struct engine *e = *state;
	struct queue *jobs = mkq(e, "jobs");
	struct holder h = { 0 };

	put(e, jobs, "x");
	uint64_t t = get_held(e, jobs, &h).task;
	drop_holder(e, &h);
	assert_int_equal(get_held(e, jobs, &h).task, t);
	drop_holder(e, &h);
	expect_dead_lettered(e, "x", t);
}

static void delayed_release_after_max_deliveries_dead_letters_at_once(
	void **state)
{
	struct engine *e = *state;
	struct queue *jobs = mkq(e, "jobs");

	put(e, jobs, "x");
	uint64_t t = use_up_deliveries(e, jobs);
	assert_int_equal(release(e, t, 60000), JQ_OK);
	assert_int_equal(engine_next_deadline(e), NEVER);
	expect_dead_lettered(e, "x", t);
}

static void dead_letter_wakes_joiners(void **state)
{
	struct engine *e = *state;
	struct queue *jobs = mkq(e, "jobs");
	struct tw j;

	put(e, jobs, "x");
	uint64_t t = use_up_deliveries(e, jobs);
	tw_init(&j, NEVER);
	assert_int_equal(join(e, jobs, &j), JQ_PARKED);
	assert_int_equal(release(e, t, 0), JQ_OK);
	expect_done(&j, JQ_OK, 0, "", 0);
}

static void dead_letter_wakes_getter_of_dead_queue(void **state)
{
	struct engine *e = *state;
	struct queue *jobs = mkq(e, "jobs"), *dq = mkq(e, "jobs.dead");
	struct tw g;

	put(e, jobs, "x");
	uint64_t t = use_up_deliveries(e, jobs);
	assert_int_equal(park_get(e, dq, &g, NEVER), JQ_PARKED);
	assert_int_equal(release(e, t, 0), JQ_OK);
	assert_int_equal(g.calls, 1);
	assert_int_equal(g.code, JQ_OK);
	assert_true(g.task > t);
	assert_int_equal(g.deliveries, 1);
	assert_string_equal(g.item, "x");
	assert_int_equal(qstats(e, "jobs.dead").inflight, 1);
}

static void dead_letter_off_drops_task(void **state)
{
	struct engine *e = *state;
	static const char *const names[] = { "drop", "nodl" };

	for (size_t i = 0; i < LEN(names); i++) {
		struct queue *q = mkq(e, names[i]);
		size_t queues = engine_queue_count(e);
		put(e, q, "x");
		uint64_t t = get(e, q).task;
		assert_int_equal(release(e, t, 0), JQ_OK);
		struct queue_stats s = qstats(e, names[i]);
		assert_int_equal(s.dead_lettered, 1);
		assert_int_equal(s.unfinished, 0);
		assert_int_equal(engine_queue_count(e), queues);
		assert_int_equal(task_done(e, t, NULL), JQ_UNKNOWN_TASK);
	}
	assert_null(findq(e, "drop.dead"));
	assert_null(findq(e, "nodl.dead"));
}

static void dead_letter_custom_name(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "custom");

	put(e, q, "x");
	uint64_t t = get(e, q).task;
	assert_int_equal(release(e, t, 0), JQ_OK);
	assert_null(findq(e, "custom.dead"));
	assert_non_null(findq(e, "morgue"));
	struct queue_stats s = qstats(e, "morgue");
	assert_int_equal(s.qsize, 1);
	assert_int_equal(s.puts, 1);
	expect_get(e, findq(e, "morgue"), "x", 1);
}

/* The daemon-wide max_deliveries: for queues without their own, not for
 * dead-letter queues, and never over a queue's own setting (even 0). */
static void default_max_deliveries_spares_dead_queues(void **state)
{
	static struct queue_conf qc[] = {
		{ .name = "own", .has_max_deliveries = true, .max_deliveries = 0 },
	};
	static const struct engine_conf conf = {
		.clock = fake_clock, .max_queues = 64, .default_max_deliveries = 1,
		.queues = qc, .nqueues = LEN(qc),
	};
	struct engine *e = restart(state, &conf);

	struct queue *q = mkq(e, "plain");
	put(e, q, "x");
	assert_int_equal(release(e, get(e, q).task, 0), JQ_OK);
	assert_int_equal(qstats(e, "plain").dead_lettered, 1);
	struct queue *dq = findq(e, "plain.dead");
	assert_non_null(dq);
	for (int i = 0; i < 3; i++)   /* no limit: it keeps coming back */
		assert_int_equal(release(e, get(e, dq).task, 0), JQ_OK);
	assert_int_equal(qstats(e, "plain.dead").qsize, 1);
	assert_null(findq(e, "plain.dead.dead"));

	q = mkq(e, "own");            /* its own 0 wins over the default 1 */
	put(e, q, "y");
	for (int i = 0; i < 3; i++)
		assert_int_equal(release(e, get(e, q).task, 0), JQ_OK);
	assert_int_equal(qstats(e, "own").dead_lettered, 0);
	check_engine(e);
}

static void dead_letter_enters_past_max_queues_and_when_full(void **state)
{
	static struct queue_conf qc[] = {
		{ .name = "jobs", .has_max_deliveries = true, .max_deliveries = 1 },
		{ .name = "jobs.dead", .has_maxsize = true, .maxsize = 1 },
	};
	static const struct engine_conf conf = {
		.clock = fake_clock, .max_queues = 1,
		.queues = qc, .nqueues = LEN(qc),
	};
	struct engine *e = restart(state, &conf);
	struct queue *jobs = mkq(e, "jobs"), *q = NULL;

	assert_int_equal(engine_queue(e, "other", 5, true, &q),
	                 JQ_TOO_MANY_QUEUES);
	put(e, jobs, "x");
	put(e, jobs, "y");
	uint64_t x = get(e, jobs).task, y = get(e, jobs).task;
	assert_int_equal(release(e, x, 0), JQ_OK);
	assert_int_equal(release(e, y, 0), JQ_OK);
	assert_int_equal(engine_queue_count(e), 2);
	struct queue_stats s = qstats(e, "jobs.dead");
	assert_int_equal(s.maxsize, 1);
	assert_int_equal(s.qsize, 2);
	assert_int_equal(qstats(e, "jobs").dead_lettered, 2);
	expect_get(e, findq(e, "jobs.dead"), "x", 1);
	expect_get(e, findq(e, "jobs.dead"), "y", 1);
}

/* ---- queues -------------------------------------------------------------- */

static void too_many_queues(void **state)
{
	static const struct engine_conf conf = {
		.clock = fake_clock, .max_queues = 2,
	};
	struct engine *e = restart(state, &conf);
	struct queue *a = mkq(e, "a"), *q = (struct queue *)1;

	mkq(e, "b");
	assert_int_equal(engine_queue(e, "c", 1, true, &q), JQ_TOO_MANY_QUEUES);
	assert_null(q);
	assert_int_equal(engine_queue_count(e), 2);
	/* Existing queues are still found, with create or without. */
	assert_ptr_equal(mkq(e, "a"), a);
	assert_ptr_equal(findq(e, "a"), a);
}

static void lookup_without_create_gives_null(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "abc");

	assert_null(findq(e, "nope"));
	assert_null(findq(e, "ab"));
	assert_null(findq(e, "abcd"));
	assert_ptr_equal(findq(e, "abc"), q);
	assert_int_equal(engine_queue_count(e), 1);
	assert_string_equal(queue_name(q), "abc");
}

static void stats_of_unknown_queue_use_configured_maxsize(void **state)
{
	struct engine *e = *state;
	struct queue_stats s = qstats(e, "small");
	assert_int_equal(s.maxsize, 2);
	assert_int_equal(s.qsize + s.unfinished + s.puts, 0);
	assert_int_equal(qstats(e, "whatever").maxsize, 0);

	static const struct engine_conf conf = {
		.clock = fake_clock, .default_maxsize = 7, .max_queues = 8,
		.queues = std_queues, .nqueues = LEN(std_queues),
	};
	e = restart(state, &conf);
	assert_int_equal(qstats(e, "whatever").maxsize, 7);
	assert_int_equal(qstats(e, "small").maxsize, 2);
	assert_int_equal(qstats(e, "unbounded").maxsize, 0);   /* explicit 0 */
	assert_int_equal(qstats(e, "jobs").maxsize, 7);   /* no maxsize set */
	mkq(e, "whatever");
	assert_int_equal(qstats(e, "whatever").maxsize, 7);
	assert_int_equal(engine_queue_count(e), 1);
}

static void queues_listed_in_creation_order(void **state)
{
	static const struct engine_conf conf = {
		.clock = fake_clock, .max_queues = 1000,
	};
	struct engine *e = restart(state, &conf);
	char name[16];

	/* Enough to make the name table grow more than once. */
	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof name, "q%d", i);
		put(e, mkq(e, name), name);
	}
	int i = 0;
	for (struct queue *q = engine_next_queue(e, NULL); q;
	     q = engine_next_queue(e, q), i++) {
		snprintf(name, sizeof name, "q%d", i);
		assert_string_equal(queue_name(q), name);
		assert_ptr_equal(findq(e, name), q);
		expect_get(e, q, name, 1);
	}
	assert_int_equal(i, 300);
}

/* ---- take.fits ----------------------------------------------------------- */

struct fits_log {
	bool answer;
	int calls;
	struct delivery seen;
	char item[64];
};

static bool log_fits(void *ctx, const struct delivery *d)
{
	struct fits_log *l = ctx;
	l->calls++;
	l->seen = *d;
	snprintf(l->item, sizeof l->item, "%.*s", (int)d->item_len, d->item);
	return l->answer;
}

static void fits_refusal_on_immediate_get_changes_nothing(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct fits_log log = { .answer = false };
	struct take tk = { .fits = log_fits, .ctx = &log, .lease = 100 };
	struct tw w;

	uint64_t a = put(e, q, "a");
	put(e, q, "b");
	assert_int_equal(try_get(e, q, &tk, NULL).code, JQ_TOO_LARGE);
	/* With a waiter too: answered now, not parked. */
	tw_init(&w, NEVER);
	assert_int_equal(try_get(e, q, &tk, &w).code, JQ_TOO_LARGE);
	assert_int_equal(w.calls, 0);
	assert_int_equal(log.calls, 2);
	assert_int_equal(log.seen.task, a);
	assert_int_equal(log.seen.deliveries, 1);
	assert_string_equal(log.item, "a");
	struct queue_stats s = qstats(e, "default");
	assert_int_equal(s.qsize, 2);
	assert_int_equal(s.inflight, 0);
	assert_int_equal(s.gets, 0);
	assert_int_equal(s.waiting_gets, 0);
	assert_int_equal(engine_next_deadline(e), NEVER);
	assert_int_equal(expect_get(e, q, "a", 1), a);
}

static void fits_sees_the_next_delivery_count(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct fits_log log = { .answer = true };
	struct take tk = { .fits = log_fits, .ctx = &log };

	uint64_t a = put(e, q, "a");
	get(e, q);
	assert_int_equal(release(e, a, 0), JQ_OK);
	struct got g = try_get(e, q, &tk, NULL);
	assert_int_equal(g.code, JQ_OK);
	assert_int_equal(log.seen.deliveries, 2);
	assert_int_equal(g.deliveries, 2);
}

static void fits_refusal_on_parked_getter_keeps_item_for_next(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct fits_log no = { .answer = false };
	struct take picky = { .fits = log_fits, .ctx = &no };
	struct tw g1, g2, g3;

	tw_init(&g1, 100);
	assert_int_equal(try_get(e, q, &picky, &g1).code, JQ_PARKED);
	assert_int_equal(park_get(e, q, &g2, NEVER), JQ_PARKED);
	uint64_t a = put(e, q, "a");
	expect_done(&g1, JQ_TOO_LARGE, 0, "", 0);
	expect_done(&g2, JQ_OK, a, "a", 1);
	assert_int_equal(engine_next_deadline(e), NEVER);   /* g1's timer */

	/* Alone, the picky getter leaves the item queued. */
	tw_init(&g3, NEVER);
	assert_int_equal(try_get(e, q, &picky, &g3).code, JQ_PARKED);
	uint64_t b = put(e, q, "b");
	expect_done(&g3, JQ_TOO_LARGE, 0, "", 0);
	struct queue_stats s = qstats(e, "default");
	assert_int_equal(s.qsize, 1);
	assert_int_equal(s.waiting_gets, 0);
	assert_int_equal(expect_get(e, q, "b", 1), b);
}

/* ---- cancelling and expiring waiters ------------------------------------- */

static void cancel_removes_waiter_silently(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "one"), *d = mkq(e, "default");
	struct tw p, g, j;
	uint64_t task;

	put(e, q, "a");
	tw_init(&p, 100);
	assert_int_equal(try_put(e, q, "b", &p, &task), JQ_PARKED);
	assert_int_equal(park_get(e, d, &g, 200), JQ_PARKED);
	tw_init(&j, 300);
	assert_int_equal(join(e, q, &j), JQ_PARKED);

	engine_cancel(e, &p.w);                /* its item is freed */
	engine_cancel(e, &g.w);
	engine_cancel(e, &j.w);
	check_engine(e);
	assert_int_equal(engine_next_deadline(e), NEVER);
	struct queue_stats s = qstats(e, "one");
	assert_int_equal(s.waiting_puts + s.waiting_joins, 0);
	assert_int_equal(qstats(e, "default").waiting_gets, 0);
	/* Nothing reaches them any more. */
	put(e, d, "x");
	done_ok(e, get(e, q).task);
	advance_to(e, 2000);
	assert_int_equal(p.calls + g.calls + j.calls, 0);
	assert_int_equal(qstats(e, "one").qsize, 0);
	assert_int_equal(qstats(e, "default").qsize, 1);
}

static void expire_ends_wait_with_timeout_code(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "one"), *d = mkq(e, "default");
	struct tw p, g, j;
	uint64_t task;

	put(e, q, "a");
	tw_init(&p, NEVER);
	assert_int_equal(try_put(e, q, "b", &p, &task), JQ_PARKED);
	assert_int_equal(park_get(e, d, &g, 500), JQ_PARKED);
	tw_init(&j, NEVER);
	assert_int_equal(join(e, q, &j), JQ_PARKED);

	engine_expire(e, &p.w);
	check_engine(e);
	expect_done(&p, JQ_FULL, 0, "", 0);
	engine_expire(e, &g.w);
	check_engine(e);
	expect_done(&g, JQ_EMPTY, 0, "", 0);
	engine_expire(e, &j.w);
	check_engine(e);
	expect_done(&j, JQ_TIMEOUT, 0, "", 0);
	assert_int_equal(engine_next_deadline(e), NEVER);
	advance_to(e, 5000);
	assert_int_equal(p.calls + g.calls + j.calls, 3);
}

static void cancel_waiters_reaches_every_waiter_once(void **state)
{
	struct engine *e = *state;
	struct queue *q1 = mkq(e, "one"), *q2 = mkq(e, "small");
	struct queue *q3 = mkq(e, "default");
	struct tw w[8];
	uint64_t task;
	int n = 0;

	put(e, q1, "a");
	put(e, q2, "a");
	put(e, q2, "b");
	for (int i = 0; i < 2; i++) {
		tw_init(&w[n], i ? 50 : NEVER);
		assert_int_equal(try_put(e, q1, "p", &w[n++], &task),
		                 JQ_PARKED);
		tw_init(&w[n], NEVER);
		assert_int_equal(try_put(e, q2, "p", &w[n++], &task),
		                 JQ_PARKED);
		assert_int_equal(park_get(e, q3, &w[n++], i ? 70 : NEVER),
		                 JQ_PARKED);
		tw_init(&w[n], 90);
		assert_int_equal(join(e, i ? q1 : q2, &w[n++]), JQ_PARKED);
	}
	engine_cancel_waiters(e, JQ_SHUTTING_DOWN);
	check_engine(e);
	for (int i = 0; i < n; i++)
		expect_done(&w[i], JQ_SHUTTING_DOWN, 0, "", 0);
	static const char *const names[] = { "one", "small", "default" };
	for (size_t i = 0; i < LEN(names); i++) {
		struct queue_stats s = qstats(e, names[i]);
		assert_int_equal(s.waiting_puts, 0);
		assert_int_equal(s.waiting_gets, 0);
		assert_int_equal(s.waiting_joins, 0);
	}
	assert_int_equal(engine_next_deadline(e), NEVER);
	advance_to(e, 10000);
	put(e, q3, "x");
	for (int i = 0; i < n; i++)
		assert_int_equal(w[i].calls, 1);
}

/* ---- figures ------------------------------------------------------------- */

static void stats_count_every_op(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct holder h = { 0 };

	put(e, q, "a");
	put(e, q, "b");
	put(e, q, "c");
	uint64_t a = get(e, q).task;                     /* gets 1 */
	assert_int_equal(release(e, a, 0), JQ_OK);       /* releases 1 */
	get_held(e, q, &h);                              /* 2, redel 1 */
	drop_holder(e, &h);                              /* not a release */
	get_leased(e, q, 5);                             /* 3, redel 2 */
	advance_to(e, 1005);
	done_ok(e, get(e, q).task);                      /* 4, redel 3 */
	done_ok(e, get(e, q).task);                      /* 5 (b) */
	assert_int_equal(release(e, get(e, q).task, 10), JQ_OK);  /* 6 (c) */
	struct queue_stats s = qstats(e, "default");
	assert_int_equal(s.puts, 3);
	assert_int_equal(s.gets, 6);
	assert_int_equal(s.redeliveries, 3);
	assert_int_equal(s.task_dones, 2);
	assert_int_equal(s.releases, 2);
	assert_int_equal(s.dead_lettered, 0);
	assert_int_equal(s.delayed, 1);
	assert_int_equal(s.unfinished, 1);
}

static void stats_count_waiters(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "one"), *d = mkq(e, "default");
	struct tw w[6];
	uint64_t task;

	put(e, q, "a");
	for (int i = 0; i < 3; i++) {
		tw_init(&w[i], NEVER);
		assert_int_equal(try_put(e, q, "p", &w[i], &task), JQ_PARKED);
	}
	assert_int_equal(park_get(e, d, &w[3], NEVER), JQ_PARKED);
	tw_init(&w[4], NEVER);
	assert_int_equal(join(e, q, &w[4]), JQ_PARKED);
	tw_init(&w[5], NEVER);
	assert_int_equal(join(e, q, &w[5]), JQ_PARKED);
	struct queue_stats s = qstats(e, "one");
	assert_int_equal(s.waiting_puts, 3);
	assert_int_equal(s.waiting_gets, 0);
	assert_int_equal(s.waiting_joins, 2);
	s = qstats(e, "default");
	assert_int_equal(s.waiting_gets, 1);
	get(e, q);
	assert_int_equal(qstats(e, "one").waiting_puts, 2);
	engine_cancel_waiters(e, JQ_SHUTTING_DOWN);
}

/* engine_free with something everywhere: LeakSanitizer checks it all. */
static void free_with_everything_outstanding(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "one"), *d = mkq(e, "default");
	struct queue *jobs = mkq(e, "jobs");
	struct holder h = { 0 };
	struct tw p1, p2, g, j;
	uint64_t task;

	put(e, d, "queued");
	put(e, d, "held");
	put(e, d, "leased");
	put(e, d, "delayed");
	put(e, d, "plain");
	get_held(e, d, &h);
	put(e, d, "more");
	get_held(e, d, &h);        /* "leased" item, but held */
	get_leased(e, d, 1000);
	uint64_t t = get(e, d).task;
	assert_int_equal(release(e, t, 5000), JQ_OK);
	get(e, d);

	put(e, q, "full");
	tw_init(&p1, 100);
	tw_init(&p2, NEVER);
	assert_int_equal(try_put(e, q, "waiting1", &p1, &task), JQ_PARKED);
	assert_int_equal(try_put(e, q, "waiting2", &p2, &task), JQ_PARKED);
	assert_int_equal(park_get(e, mkq(e, "empty"), &g, 300), JQ_PARKED);
	tw_init(&j, 400);
	assert_int_equal(join(e, d, &j), JQ_PARKED);

	put(e, jobs, "dead");
	assert_int_equal(release(e, get(e, jobs).task, 0), JQ_OK);
	assert_int_equal(release(e, get(e, jobs).task, 0), JQ_OK);
	assert_int_equal(qstats(e, "jobs.dead").qsize, 1);

	/* Freed here, while the parked waiters still exist. */
	engine_free(e);
	*state = NULL;
}

/* ---- the journal's hooks: engine_log, replay, dump ----------------------- */

/*
 * The engine tells a journal of every change through struct engine_log,
 * rebuilds its state from the records with engine_replay_*, and writes a
 * snapshot through engine_dump.  A recording log keeps every call; replay
 * tests build states record by record; the round trips replay what a log
 * recorded or a dump gave into a fresh engine and compare the two.
 *
 * A replayed engine starts its counters (puts, gets, ...) from zero, so
 * check_engine's "puts = task_dones + dead_lettered + unfinished" does not
 * hold for it: replayed engines are checked with check_counts instead and
 * driven through the engine's calls directly.
 */

static struct log_record lr;   /* log_recorder.h */
static unsigned lr_bad_ctx;     /* calls with another ctx than ours */
static char lr_token;           /* the ctx the recording log is given */

static void lr_reset(void)
{
	log_record_reset(&lr);
	lr_bad_ctx = 0;
}

static void lr_free(void)
{
	lr_reset();
	log_record_free(&lr);
}

static struct lev *lev_add(void *ctx, enum lkind kind, const char *text,
                           size_t len)
{
	if (ctx != &lr_token)
		lr_bad_ctx++;
	return log_record_add(&lr, kind, text, len);
}

static void l_queue(void *ctx, uint32_t qid, const char *name, size_t len)
{
	lev_add(ctx, L_QUEUE, name, len)->qid = qid;
}

static void l_put(void *ctx, uint32_t qid, uint64_t task, const char *item,
                  size_t len)
{
	struct lev *ev = lev_add(ctx, L_PUT, item, len);
	ev->qid = qid;
	ev->task = task;
}

static void l_take(void *ctx, uint32_t qid, uint64_t task)
{
	struct lev *ev = lev_add(ctx, L_TAKE, NULL, 0);
	ev->qid = qid;
	ev->task = task;
}

static void l_done(void *ctx, uint64_t task)
{
	lev_add(ctx, L_DONE, NULL, 0)->task = task;
}

static void l_back(void *ctx, uint64_t task)
{
	lev_add(ctx, L_BACK, NULL, 0)->task = task;
}

static void l_delay(void *ctx, uint64_t task, msec_t until)
{
	struct lev *ev = lev_add(ctx, L_DELAY, NULL, 0);
	ev->task = task;
	ev->until = until;
}

static void l_dead(void *ctx, uint64_t task, uint64_t new_task, int64_t dqid)
{
	struct lev *ev = lev_add(ctx, L_DEAD, NULL, 0);
	ev->task = task;
	ev->new_task = new_task;
	ev->dqid = dqid;
}

static void l_settings(void *ctx, uint32_t qid, const struct queue_conf *d)
{
	if (ctx != &lr_token)
		lr_bad_ctx++;
	log_record_settings(&lr, qid, d);
}

static void l_purge(void *ctx, uint32_t qid)
{
	lev_add(ctx, L_PURGE, NULL, 0)->qid = qid;
}

static void l_drop(void *ctx, uint32_t qid)
{
	lev_add(ctx, L_DROP, NULL, 0)->qid = qid;
}

static const struct engine_log rec_log = {
	.ctx = &lr_token, .queue = l_queue, .settings = l_settings, .put = l_put,
	.take = l_take, .done = l_done, .back = l_back, .delay = l_delay,
	.dead = l_dead, .purge = l_purge, .drop = l_drop,
};

/* From now on e's changes are recorded, from an empty record. */
static void record_log(struct engine *e)
{
	lr_reset();
	engine_set_log(e, &rec_log);
}

/* The i-th call recorded was of this kind for this task. */
static const struct lev *expect_ev(size_t i, enum lkind kind, uint64_t task)
{
	if (i >= lr.n)
		fail_msg("only %zu log calls, expected a %s as call %zu", lr.n,
		         lkind_name(kind), i);
	const struct lev *ev = &lr.v[i];
	if (ev->kind != kind)
		fail_msg("log call %zu is a %s, expected a %s", i,
		         lkind_name(ev->kind), lkind_name(kind));
	assert_int_equal(ev->task, task);
	assert_int_equal(lr_bad_ctx, 0);
	return ev;
}

static void expect_no_more_ev(size_t n)
{
	if (lr.n != n)
		fail_msg("%zu log calls, expected %zu (call %zu is a %s)", lr.n, n,
		         n, n < lr.n ? lkind_name(lr.v[n].kind) : "-");
}

static uint32_t qid_of(struct engine *e, const char *name);

/* U = Q + F + D for every queue, and nobody waits for what is there. */
static void check_counts(const struct engine *e)
{
	for (struct queue *q = engine_next_queue(e, NULL); q;
	     q = engine_next_queue(e, q)) {
		struct queue_stats s;
		engine_queue_stats(e, q, NULL, 0, &s);
		assert_int_equal(s.unfinished, s.qsize + s.inflight + s.delayed);
		if (s.waiting_gets)
			assert_int_equal(s.qsize, 0);
	}
}

static void expect_counts(struct engine *e, const char *name, uint64_t qsize,
                          uint64_t inflight, uint64_t delayed)
{
	struct queue_stats s = qstats(e, name);
	check_counts(e);
	assert_int_equal(s.qsize, qsize);
	assert_int_equal(s.inflight, inflight);
	assert_int_equal(s.delayed, delayed);
	assert_int_equal(s.unfinished, qsize + inflight + delayed);
}

/* ---- what engine_dump gives ---------------------------------------------- */

struct dtask {
	uint32_t qid;
	uint64_t task;
	uint32_t deliveries;
	enum engine_task_state state;
	msec_t until;
	char item[BIG_TEXT_MAX];
	size_t len;
};

struct dqueue {
	uint32_t qid;
	char name[140];
	bool declared;                /* settings came for it */
	struct queue_conf settings;   /* dead_letter: dead_letter[] */
	char dead_letter[140];
};

struct dumped {
	struct dqueue q[64];
	size_t nq;
	bool settings_astray;      /* settings not right after their queue */
	uint64_t next_id;
	unsigned next_id_calls;
	struct dtask *t;
	size_t nt, cap;
	bool queue_after_task;     /* a queue came after a task */
};

static void d_queue(void *ctx, uint32_t qid, const char *name, size_t len)
{
	struct dumped *d = ctx;
	assert_true(d->nq < LEN(d->q));
	assert_true(len < sizeof d->q[0].name);
	if (d->nt || d->next_id_calls)
		d->queue_after_task = true;
	d->q[d->nq].qid = qid;
	memcpy(d->q[d->nq].name, name, len);
	d->q[d->nq].name[len] = '\0';
	d->nq++;
}

static void d_settings(void *ctx, uint32_t qid, const struct queue_conf *c)
{
	struct dumped *d = ctx;
	if (!d->nq || d->q[d->nq - 1].qid != qid || d->q[d->nq - 1].declared ||
	    !d->q[d->nq - 1].name[0]) {
		d->settings_astray = true;
		return;
	}
	struct dqueue *q = &d->q[d->nq - 1];
	q->declared = true;
	q->settings = *c;
	q->settings.name = NULL;
	if (c->dead_letter) {
		assert_true(strlen(c->dead_letter) < sizeof q->dead_letter);
		snprintf(q->dead_letter, sizeof q->dead_letter, "%s",
		         c->dead_letter);
		q->settings.dead_letter = q->dead_letter;
	}
}

static void d_next_id(void *ctx, uint64_t next)
{
	struct dumped *d = ctx;
	d->next_id = next;
	d->next_id_calls++;
}

static void d_task(void *ctx, uint32_t qid, uint64_t task, uint32_t deliveries,
                   enum engine_task_state state, msec_t until, const char *item,
                   size_t len)
{
	struct dumped *d = ctx;
	if (d->nt == d->cap) {
		d->cap = d->cap ? 2 * d->cap : 64;
		d->t = realloc(d->t, d->cap * sizeof *d->t);
		assert_non_null(d->t);
	}
	struct dtask *t = &d->t[d->nt++];
	memset(t, 0, sizeof *t);
	assert_true(len < sizeof t->item);
	*t = (struct dtask){ qid, task, deliveries, state, until, "", len };
	memcpy(t->item, item, len);
}

static void dumped_free(struct dumped *d)
{
	free(d->t);
	d->t = NULL;
}

static void dump(const struct engine *e, struct dumped *d)
{
	memset(d, 0, sizeof *d);
	const struct engine_dump cb = {
		.ctx = d, .queue = d_queue, .settings = d_settings,
		.next_id = d_next_id, .task = d_task,
	};
	engine_dump(e, &cb);
	assert_int_equal(d->next_id_calls, 1);
	assert_false(d->queue_after_task);
	assert_false(d->settings_astray);
	/* Every id up to the highest in use, in order; the last one in use. */
	for (size_t i = 0; i < d->nq; i++)
		assert_int_equal(d->q[i].qid, i);
	if (d->nq)
		assert_true(d->q[d->nq - 1].name[0] != '\0');
}

static uint32_t qid_of(struct engine *e, const char *name)
{
	struct dumped d;
	dump(e, &d);
	for (size_t i = 0; i < d.nq; i++)
		if (strcmp(d.q[i].name, name) == 0) {
			uint32_t id = d.q[i].qid;
			dumped_free(&d);
			return id;
		}
	dumped_free(&d);
	fail_msg("no queue %s", name);
	return 0;
}

/* The dumped tasks of queue qid in state st, in the dump's order. */
static size_t dumped_of(const struct dumped *d, uint32_t qid,
                        enum engine_task_state st, const struct dtask **out,
                        size_t max)
{
	size_t n = 0;
	for (size_t i = 0; i < d->nt; i++)
		if (d->t[i].qid == qid && d->t[i].state == st) {
			assert_true(n < max);
			out[n++] = &d->t[i];
		}
	return n;
}

static int by_task(const void *a, const void *b)
{
	const struct dtask *x = *(const struct dtask *const *)a;
	const struct dtask *y = *(const struct dtask *const *)b;
	return x->task < y->task ? -1 : x->task > y->task;
}

static void expect_same_dtask(const struct dtask *a, const struct dtask *b)
{
	assert_int_equal(a->qid, b->qid);
	assert_int_equal(a->task, b->task);
	assert_int_equal(a->deliveries, b->deliveries);
	assert_int_equal(a->state, b->state);
	assert_int_equal(a->until, b->until);
	assert_int_equal(a->len, b->len);
	assert_memory_equal(a->item, b->item, a->len);
}

/*
 * Two engines hold the same state: the same queues by id, next id and
 * live bytes, the same queued tasks in the same order, the same tasks in
 * flight and delayed (until included), the same figures.
 */
static void expect_same_tasks(struct engine *a, struct engine *b);

static void expect_same_state(struct engine *a, struct engine *b)
{
	expect_same_tasks(a, b);
	/* Last, so that a wrong count does not hide the rest. */
	assert_int_equal(engine_live_bytes(a), engine_live_bytes(b));
}

/* All of expect_same_state but the live bytes. */
static void expect_same_tasks(struct engine *a, struct engine *b)
{
	struct dumped da, db;
	dump(a, &da);
	dump(b, &db);
	assert_int_equal(da.nq, db.nq);
	for (size_t i = 0; i < da.nq; i++) {
		assert_string_equal(da.q[i].name, db.q[i].name);
		assert_int_equal(da.q[i].declared, db.q[i].declared);
		const struct queue_conf *ca = &da.q[i].settings;
		const struct queue_conf *cb = &db.q[i].settings;
		assert_int_equal(ca->has_maxsize, cb->has_maxsize);
		assert_int_equal(ca->maxsize, cb->maxsize);
		assert_int_equal(ca->has_max_deliveries, cb->has_max_deliveries);
		assert_int_equal(ca->max_deliveries, cb->max_deliveries);
		assert_string_equal(da.q[i].dead_letter, db.q[i].dead_letter);
	}
	assert_int_equal(da.next_id, db.next_id);
	assert_int_equal(engine_next_task_id(a), engine_next_task_id(b));
	assert_int_equal(da.nt, db.nt);

	size_t max = da.nt + 1;
	const struct dtask **xa = malloc(max * sizeof(struct dtask *));
	const struct dtask **xb = malloc(max * sizeof(struct dtask *));
	assert_non_null(xa);
	assert_non_null(xb);
	for (uint32_t qid = 0; qid < da.nq; qid++) {
		for (int st = ENGINE_QUEUED; st <= ENGINE_DELAYED; st++) {
			size_t na = dumped_of(&da, qid, st, xa, max);
			size_t nb = dumped_of(&db, qid, st, xb, max);
			assert_int_equal(na, nb);
			if (st != ENGINE_QUEUED) {   /* no order among these */
				qsort(xa, na, sizeof(struct dtask *), by_task);
				qsort(xb, nb, sizeof(struct dtask *), by_task);
			}
			for (size_t i = 0; i < na; i++)
				expect_same_dtask(xa[i], xb[i]);
		}
		const char *name = da.q[qid].name;
		if (!*name)
			continue;   /* a free id */
		struct queue_stats sa, sb;
		struct queue *qa = findq(a, name), *qb = findq(b, name);
		engine_queue_stats(a, qa, NULL, 0, &sa);
		engine_queue_stats(b, qb, NULL, 0, &sb);
		assert_int_equal(sa.qsize, sb.qsize);
		assert_int_equal(sa.inflight, sb.inflight);
		assert_int_equal(sa.delayed, sb.delayed);
		assert_int_equal(sa.unfinished, sb.unfinished);
		assert_int_equal(sa.maxsize, sb.maxsize);
		assert_int_equal(sa.max_deliveries, sb.max_deliveries);
		struct queue_settings seta = engine_queue_settings(a, qa);
		char dla[140];
		snprintf(dla, sizeof dla, "%s", seta.dead_letter ? seta.dead_letter :
		         "(none)");
		struct queue_settings setb = engine_queue_settings(b, qb);
		assert_string_equal(dla, setb.dead_letter ? setb.dead_letter :
		                    "(none)");
	}
	free(xa);
	free(xb);
	dumped_free(&da);
	dumped_free(&db);
}

/* A fresh engine (std_conf) holding what d gave, as a snapshot replays. */
static struct engine *replay_dump(const struct dumped *d)
{
	struct engine *e = engine_new(&std_conf);
	for (size_t i = 0; i < d->nq; i++) {
		assert_int_equal(engine_replay_queue(e, d->q[i].qid, d->q[i].name,
		                                     strlen(d->q[i].name)), 0);
		if (d->q[i].declared)
			assert_int_equal(engine_replay_settings(e, d->q[i].qid,
			                 &d->q[i].settings), 0);
	}
	engine_replay_next_id(e, d->next_id);
	for (size_t i = 0; i < d->nt; i++) {
		const struct dtask *t = &d->t[i];
		assert_int_equal(engine_replay_task(e, t->qid, t->task,
		                                    t->deliveries, t->state, t->until,
		                                    t->item, t->len), 0);
	}
	check_counts(e);
	return e;
}

/* A fresh engine holding what the recorded log tells, record by record. */
static struct engine *replay_log(void)
{
	struct engine *e = engine_new(&std_conf);
	for (size_t i = 0; i < lr.n; i++)
		if (log_record_replay(e, &lr.v[i]) != 0)
			fail_msg("log call %zu (a %s of task %llu) does not replay", i,
			         lkind_name(lr.v[i].kind),
			         (unsigned long long)lr.v[i].task);
	check_counts(e);
	return e;
}

/* ---- declare, purge, delete ----------------------------------------------- */

/*
 * A declare as the daemon makes it: a dry one first, which must say what
 * the real one then does and change nothing.  r's dead_letter is copied
 * into dl (the engine's is good only until its next call).
 */
static int declare(struct engine *e, const struct queue_conf *want,
                   struct declare_result *r, char dl[140])
{
	struct declare_result dry;
	char dry_dl[140];
	size_t n = engine_queue_count(e);
	int dry_rc = engine_declare(e, want, true, &dry);
	snprintf(dry_dl, 140, "%s", dry.settings.dead_letter ?
	         dry.settings.dead_letter : "(none)");
	assert_null(dry.queue);
	assert_int_equal(engine_queue_count(e), n);

	int rc = engine_declare(e, want, false, r);
	snprintf(dl, 140, "%s", r->settings.dead_letter ?
	         r->settings.dead_letter : "(none)");
	check_engine(e);
	assert_int_equal(rc, dry_rc);
	assert_int_equal(r->created, dry.created);
	assert_int_equal(r->settings.maxsize, dry.settings.maxsize);
	assert_int_equal(r->settings.max_deliveries, dry.settings.max_deliveries);
	assert_string_equal(dl, dry_dl);
	assert_ptr_equal(r->conflict, dry.conflict);
	assert_int_equal(r->configured, dry.configured);
	if (rc == JQ_OK) {
		assert_non_null(r->queue);
		assert_ptr_equal(findq(e, want->name), r->queue);
		assert_int_equal(engine_queue_count(e), n + r->created);
	} else {
		assert_null(r->queue);
		assert_int_equal(engine_queue_count(e), n);
	}
	return rc;
}

/* A declare that must answer conflict over setting, changing nothing. */
static void expect_conflict(struct engine *e, const struct queue_conf *want,
                            const char *setting, bool configured)
{
	struct declare_result r;
	char dl[140];
	struct queue *before = findq(e, want->name);
	assert_int_equal(declare(e, want, &r, dl), JQ_CONFLICT);
	assert_string_equal(r.conflict, setting);
	assert_int_equal(r.configured, configured);
	assert_ptr_equal(findq(e, want->name), before);
}

static void declare_makes_a_queue_with_the_settings_named(void **state)
{
	struct engine *e = *state;
	struct declare_result r;
	char dl[140];
	struct queue_conf w = { .name = "fresh", .has_maxsize = true,
	                        .maxsize = 5 };

	assert_int_equal(declare(e, &w, &r, dl), JQ_OK);
	assert_true(r.created);
	assert_int_equal(r.settings.maxsize, 5);
	assert_int_equal(r.settings.max_deliveries, 0);   /* the default */
	assert_string_equal(dl, "fresh.dead");
	assert_int_equal(qstats(e, "fresh").maxsize, 5);
	/* The bound holds as one from the configuration does. */
	uint64_t t;
	for (int i = 0; i < 5; i++)
		put(e, r.queue, "x");
	assert_int_equal(try_put(e, r.queue, "y", NULL, &t), JQ_FULL);

	/* Again: nothing new, the same answer. */
	struct queue *fresh = r.queue;
	assert_int_equal(declare(e, &w, &r, dl), JQ_OK);
	assert_false(r.created);
	assert_ptr_equal(r.queue, fresh);
	assert_int_equal(qstats(e, "fresh").qsize, 5);

	/* All three named: a task past max_deliveries goes where it says. */
	struct queue_conf all = {
		.name = "all", .has_maxsize = true, .maxsize = 1,
		.has_max_deliveries = true, .max_deliveries = 1,
		.dead_letter = "graveyard",
	};
	assert_int_equal(declare(e, &all, &r, dl), JQ_OK);
	assert_true(r.created);
	assert_int_equal(r.settings.max_deliveries, 1);
	assert_string_equal(dl, "graveyard");
	put(e, r.queue, "poison");
	assert_int_equal(release(e, get(e, r.queue).task, 0), JQ_OK);
	assert_int_equal(qstats(e, "all").dead_lettered, 1);
	expect_get(e, findq(e, "graveyard"), "poison", 1);

	/* "off" declared is a queue's name, not "none" as in the
	 * configuration. */
	struct queue_conf off = { .name = "offq", .has_max_deliveries = true,
	                          .max_deliveries = 1, .dead_letter = "off" };
	assert_int_equal(declare(e, &off, &r, dl), JQ_OK);
	assert_string_equal(dl, "off");
	put(e, r.queue, "to-off");
	assert_int_equal(release(e, get(e, r.queue).task, 0), JQ_OK);
	expect_get(e, findq(e, "off"), "to-off", 1);

	/* Nothing named: made as put makes it. */
	struct queue_conf bare = { .name = "bare" };
	assert_int_equal(declare(e, &bare, &r, dl), JQ_OK);
	assert_true(r.created);
	assert_int_equal(r.settings.maxsize, 0);
	assert_string_equal(dl, "bare.dead");
}

static void declare_of_an_existing_queue_compares_what_it_names(void **state)
{
	struct engine *e = *state;
	struct declare_result r;
	char dl[140];
	struct queue *q = mkq(e, "plain");   /* as put makes it: defaults */
	put(e, q, "x");

	struct queue_conf same = {
		.name = "plain", .has_maxsize = true, .maxsize = 0,
		.has_max_deliveries = true, .max_deliveries = 0,
		.dead_letter = "plain.dead",
	};
	assert_int_equal(declare(e, &same, &r, dl), JQ_OK);
	assert_false(r.created);
	assert_ptr_equal(r.queue, q);
	struct queue_conf none = { .name = "plain" };
	assert_int_equal(declare(e, &none, &r, dl), JQ_OK);

	struct queue_conf w = { .name = "plain", .has_maxsize = true,
	                        .maxsize = 3 };
	expect_conflict(e, &w, "maxsize", false);
	w = (struct queue_conf){ .name = "plain", .has_max_deliveries = true,
	                         .max_deliveries = 2 };
	expect_conflict(e, &w, "max_deliveries", false);
	w = (struct queue_conf){ .name = "plain", .dead_letter = "other" };
	expect_conflict(e, &w, "dead_letter", false);
	/* The first named setting that differs is the one named. */
	w = (struct queue_conf){ .name = "plain", .has_maxsize = true,
	                         .has_max_deliveries = true,
	                         .max_deliveries = 9, .dead_letter = "zz" };
	expect_conflict(e, &w, "max_deliveries", false);
	/* Nothing changed. */
	struct queue_stats s = qstats(e, "plain");
	assert_int_equal(s.maxsize, 0);
	assert_int_equal(s.max_deliveries, 0);
	assert_int_equal(s.qsize, 1);

	/* A declare that matches changes nothing either: the settings stay
	 * the defaults', and follow them. */
	static const struct engine_conf seven = {
		.clock = fake_clock, .default_maxsize = 7, .max_queues = 64,
	};
	engine_reconfigure(e, &seven);
	assert_int_equal(qstats(e, "plain").maxsize, 7);
	engine_reconfigure(e, &std_conf);

	/* Declared settings are compared the same way. */
	struct queue_conf d = { .name = "d", .has_maxsize = true, .maxsize = 4 };
	assert_int_equal(declare(e, &d, &r, dl), JQ_OK);
	d.dead_letter = "d.dead";
	assert_int_equal(declare(e, &d, &r, dl), JQ_OK);
	assert_false(r.created);
	d.maxsize = 5;
	expect_conflict(e, &d, "maxsize", false);
}

static void declare_never_changes_what_the_configuration_sets(void **state)
{
	struct engine *e = *state;
	struct declare_result r;
	char dl[140];

	/* Whether or not the queue exists yet. */
	struct queue_conf w = { .name = "small", .has_maxsize = true,
	                        .maxsize = 3 };
	expect_conflict(e, &w, "maxsize", true);
	assert_null(findq(e, "small"));
	w.maxsize = 2;
	assert_int_equal(declare(e, &w, &r, dl), JQ_OK);
	assert_true(r.created);
	w.maxsize = 3;
	expect_conflict(e, &w, "maxsize", true);

	w = (struct queue_conf){ .name = "jobs", .has_max_deliveries = true,
	                         .max_deliveries = 5 };
	expect_conflict(e, &w, "max_deliveries", true);
	w = (struct queue_conf){ .name = "drop", .dead_letter = "drop.dead" };
	expect_conflict(e, &w, "dead_letter", true);
	struct declare_result c;
	assert_int_equal(engine_declare(e, &w, true, &c), JQ_CONFLICT);
	assert_null(c.settings.dead_letter);   /* off: dropped */
	w = (struct queue_conf){ .name = "custom", .dead_letter = "morgue" };
	assert_int_equal(declare(e, &w, &r, dl), JQ_OK);

	/* What the configuration leaves alone may be declared, and the
	 * reply holds the configuration's settings too. */
	w = (struct queue_conf){ .name = "jobs", .has_maxsize = true,
	                         .maxsize = 7 };
	assert_int_equal(declare(e, &w, &r, dl), JQ_OK);
	assert_true(r.created);
	assert_int_equal(r.settings.maxsize, 7);
	assert_int_equal(r.settings.max_deliveries, 2);
	assert_string_equal(dl, "jobs.dead");
	/* The defaults are not the configuration's to keep. */
	static const struct engine_conf conf = {
		.clock = fake_clock, .default_maxsize = 9,
		.default_max_deliveries = 4, .max_queues = 8,
	};
	e = restart(state, &conf);
	w = (struct queue_conf){ .name = "q", .has_maxsize = true, .maxsize = 1,
	                         .has_max_deliveries = true,
	                         .max_deliveries = 0 };
	assert_int_equal(declare(e, &w, &r, dl), JQ_OK);
	assert_int_equal(r.settings.maxsize, 1);
	assert_int_equal(r.settings.max_deliveries, 0);
}

static void reload_puts_the_configuration_over_declared_settings(void **state)
{
	static struct queue_conf mine[] = {
		{ .name = "mine", .has_maxsize = true, .maxsize = 1 },
	};
	static const struct engine_conf with_mine = {
		.clock = fake_clock, .max_queues = 8, .queues = mine,
		.nqueues = LEN(mine),
	};
	struct engine *e = *state;
	struct declare_result r;
	char dl[140];
	struct tw w;
	uint64_t t;
	struct queue_conf d = { .name = "mine", .has_maxsize = true,
	                        .maxsize = 3, .has_max_deliveries = true,
	                        .max_deliveries = 2 };
	assert_int_equal(declare(e, &d, &r, dl), JQ_OK);
	struct queue *q = r.queue;

	engine_reconfigure(e, &with_mine);
	struct queue_stats s = qstats(e, "mine");
	assert_int_equal(s.maxsize, 1);          /* the configuration's */
	assert_int_equal(s.max_deliveries, 2);   /* still the declared one */
	expect_conflict(e, &d, "maxsize", true);
	put(e, q, "a");
	tw_init(&w, NEVER);
	assert_int_equal(try_put(e, q, "b", &w, &t), JQ_PARKED);

	/* The configuration says no more: the declared maxsize is back, and
	 * lets the blocked put in. */
	engine_reconfigure(e, &std_conf);
	assert_int_equal(qstats(e, "mine").maxsize, 3);
	expect_done(&w, JQ_OK, 2, NULL, 0);
	assert_int_equal(declare(e, &d, &r, dl), JQ_OK);
	assert_false(r.created);
}

static void declare_counts_against_max_queues(void **state)
{
	static const struct engine_conf conf = {
		.clock = fake_clock, .max_queues = 2, .queues = std_queues,
		.nqueues = LEN(std_queues),
	};
	struct engine *e = restart(state, &conf);
	struct declare_result r;
	char dl[140];
	struct queue_conf a = { .name = "a" }, b = { .name = "b" };
	struct queue_conf c = { .name = "c", .has_maxsize = true, .maxsize = 1 };

	assert_int_equal(declare(e, &a, &r, dl), JQ_OK);
	assert_int_equal(declare(e, &b, &r, dl), JQ_OK);
	assert_int_equal(declare(e, &c, &r, dl), JQ_TOO_MANY_QUEUES);
	assert_false(r.created);
	assert_int_equal(declare(e, &a, &r, dl), JQ_OK);   /* exists */
	/* A conflict is told first: nothing would change either way. */
	struct queue_conf small = { .name = "small", .has_maxsize = true,
	                            .maxsize = 9 };
	expect_conflict(e, &small, "maxsize", true);
}

static void dry_declare_changes_nothing(void **state)
{
	struct engine *e = *state;
	struct declare_result r;
	struct queue_conf w = { .name = "n", .has_maxsize = true, .maxsize = 2,
	                        .dead_letter = "x" };
	record_log(e);
	assert_int_equal(engine_declare(e, &w, true, &r), JQ_OK);
	assert_true(r.created);
	assert_null(r.queue);
	assert_int_equal(r.settings.maxsize, 2);
	assert_string_equal(r.settings.dead_letter, "x");
	assert_null(findq(e, "n"));
	assert_int_equal(engine_queue_count(e), 0);
	expect_no_more_ev(0);
	lr_free();
}

static void purge_finishes_queued_tasks_only(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "jobs");   /* max_deliveries 2 */
	const char *items[] = { "a", "b", "c", "d", "e" };
	for (size_t i = 0; i < LEN(items); i++)
		put(e, q, items[i]);
	uint64_t ta = get(e, q).task;
	uint64_t tb = get(e, q).task;
	assert_int_equal(release(e, tb, 100), JQ_OK);
	uint64_t tc = get(e, q).task;
	assert_int_equal(release(e, tc, 0), JQ_OK);   /* c, back at the head */
	uint64_t live = engine_live_bytes(e);

	assert_int_equal(engine_purge(e, q), 3);      /* c, d, e */
	check_engine(e);
	expect_counts(e, "jobs", 0, 1, 1);
	struct queue_stats s = qstats(e, "jobs");
	assert_int_equal(s.purged, 3);
	assert_int_equal(s.task_dones, 0);
	assert_int_equal(s.dead_lettered, 0);        /* not dead letters */
	assert_null(findq(e, "jobs.dead"));
	assert_int_equal(engine_live_bytes(e), live - UINT64_C(3) * (1 + 24));

	/* What was in flight or delayed goes on. */
	assert_int_equal(done_ok(e, ta), 1);
	advance_to(e, now + 100);
	assert_int_equal(expect_get(e, q, "b", 2), tb);
	done_ok(e, tb);
	assert_int_equal(engine_live_bytes(e), 0);

	assert_int_equal(engine_purge(e, q), 0);      /* empty */
	assert_int_equal(engine_purge(e, NULL), 0);   /* no such queue */
	assert_int_equal(qstats(e, "jobs").purged, 3);
}

static void purge_wakes_blocked_puts_and_joins(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "one");   /* maxsize 1 */
	struct tw p1, p2, j;
	uint64_t t;

	put(e, q, "a");
	tw_init(&p1, NEVER);
	tw_init(&p2, NEVER);
	assert_int_equal(try_put(e, q, "b", &p1, &t), JQ_PARKED);
	assert_int_equal(try_put(e, q, "c", &p2, &t), JQ_PARKED);
	tw_init(&j, NEVER);
	assert_int_equal(join(e, q, &j), JQ_PARKED);

	/* Room for one: the oldest blocked put goes in, as after a get. */
	assert_int_equal(engine_purge(e, q), 1);
	check_engine(e);
	expect_done(&p1, JQ_OK, 2, NULL, 0);
	assert_int_equal(p2.calls, 0);
	assert_int_equal(j.calls, 0);
	assert_int_equal(engine_purge(e, q), 1);
	expect_done(&p2, JQ_OK, 3, NULL, 0);
	assert_int_equal(j.calls, 0);
	/* Nothing unfinished: the join returns, as after a task_done. */
	assert_int_equal(engine_purge(e, q), 1);
	check_engine(e);
	expect_done(&j, JQ_OK, 0, NULL, 0);
	assert_int_equal(qstats(e, "one").purged, 3);
}

static void delete_needs_a_queue_with_nothing_unfinished(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "q");

	put(e, q, "a");
	assert_int_equal(engine_delete(e, q), JQ_CONFLICT);       /* queued */
	uint64_t t = get(e, q).task;
	assert_int_equal(engine_delete(e, q), JQ_CONFLICT);       /* in flight */
	assert_int_equal(release(e, t, 50), JQ_OK);
	assert_int_equal(engine_delete(e, q), JQ_CONFLICT);       /* delayed */
	check_engine(e);
	assert_ptr_equal(findq(e, "q"), q);
	expect_counts(e, "q", 0, 0, 1);
	advance_to(e, now + 50);
	done_ok(e, get(e, q).task);
	assert_int_equal(engine_delete(e, q), JQ_OK);
	check_engine(e);
	assert_null(findq(e, "q"));
	assert_int_equal(engine_queue_count(e), 0);
	assert_null(engine_next_queue(e, NULL));
}

static void delete_answers_waiting_getters_empty(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "q"), *other = mkq(e, "other");
	struct tw g1, g2, g3;

	assert_int_equal(park_get(e, q, &g1, NEVER), JQ_PARKED);
	assert_int_equal(park_get(e, q, &g2, 500), JQ_PARKED);
	assert_int_equal(park_get(e, other, &g3, NEVER), JQ_PARKED);
	assert_int_equal(engine_delete(e, q), JQ_OK);
	check_engine(e);
	expect_done(&g1, JQ_EMPTY, 0, "", 0);
	expect_done(&g2, JQ_EMPTY, 0, "", 0);
	assert_true(g1.seq < g2.seq);            /* in arrival order */
	assert_int_equal(g3.calls, 0);           /* other queues' wait on */
	assert_int_equal(engine_next_deadline(e), NEVER);   /* g2's timer */
	put(e, other, "x");
	expect_done(&g3, JQ_OK, 1, "x", 1);
}

static void deleted_queue_frees_its_name_id_and_place(void **state)
{
	static const struct engine_conf conf = {
		.clock = fake_clock, .max_queues = 2,
	};
	struct engine *e = restart(state, &conf);
	struct declare_result r;
	char dl[140];
	struct queue *a = mkq(e, "a"), *b = mkq(e, "b"), *q;

	uint64_t last = put(e, a, "x");
	done_ok(e, get(e, a).task);
	assert_int_equal(engine_queue(e, "c", 1, true, &q), JQ_TOO_MANY_QUEUES);
	/* max_queues bounds the queues that exist. */
	assert_int_equal(engine_delete(e, a), JQ_OK);
	assert_int_equal(engine_queue_count(e), 1);
	struct queue *c = mkq(e, "c");
	assert_int_equal(qid_of(e, "c"), 0);     /* a's id */
	assert_ptr_equal(engine_next_queue(e, NULL), c);
	assert_ptr_equal(engine_next_queue(e, c), b);
	assert_null(engine_next_queue(e, b));

	/* The name again: a new queue, its counters from zero, task ids on. */
	assert_int_equal(engine_delete(e, b), JQ_OK);
	struct queue_conf w = { .name = "a", .has_maxsize = true, .maxsize = 3 };
	assert_int_equal(declare(e, &w, &r, dl), JQ_OK);
	assert_true(r.created);
	assert_int_equal(qid_of(e, "a"), 1);
	struct queue_stats s = qstats(e, "a");
	assert_int_equal(s.puts + s.gets + s.task_dones, 0);
	assert_int_equal(s.maxsize, 3);
	assert_true(put(e, r.queue, "y") > last);

	/* The settings go with the queue. */
	assert_int_equal(engine_purge(e, r.queue), 1);
	assert_int_equal(engine_delete(e, r.queue), JQ_OK);
	assert_int_equal(mkq(e, "a") != NULL, true);
	assert_int_equal(qstats(e, "a").maxsize, 0);
	w.maxsize = 0;
	assert_int_equal(declare(e, &w, &r, dl), JQ_OK);
	assert_false(r.created);
}

/* ---- a long queue --------------------------------------------------------- */

/* The queue's items are packed in chunks (itemq.c); thousands of them, of
 * assorted lengths, cross many chunk boundaries.  FIFO order, ids,
 * deliveries, returns to the head (here a holder closing on 300 tasks),
 * the dump and a replay of it must not notice. */
static void long_queue_keeps_order_across_chunks(void **state)
{
	enum { N = 5000, HELD = 300 };
	static const char pad[] = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
	struct engine *e = *state;
	struct queue *q = mkq(e, "unbounded");
	struct holder h = { 0 };
	char item[64];
	uint64_t first = 0;

	for (int i = 0; i < N; i++) {
		snprintf(item, sizeof item, "\"%d%.*s\"", i, i % 50, pad);
		uint64_t t = put(e, q, item);
		if (i == 0)
			first = t;
		assert_int_equal(t, first + (uint64_t)i);
	}
	for (int i = 0; i < HELD; i++)
		assert_int_equal(get_held(e, q, &h).task, first + (uint64_t)i);
	drop_holder(e, &h);
	assert_int_equal(qstats(e, "unbounded").qsize, N);

	struct dumped d;
	dump(e, &d);
	struct engine *r = replay_dump(&d);
	expect_same_state(e, r);
	engine_free(r);
	dumped_free(&d);

	for (int i = 0; i < N; i++) {
		snprintf(item, sizeof item, "\"%d%.*s\"", i, i % 50, pad);
		uint64_t t = expect_get(e, q, item, i < HELD ? 2 : 1);
		assert_int_equal(t, first + (uint64_t)i);
		if (i % 3 == 0) {   /* and again, from the head */
			assert_int_equal(release(e, t, 0), JQ_OK);
			assert_int_equal(expect_get(e, q, item, i < HELD ? 3 : 2), t);
		}
		done_ok(e, t);
	}
	assert_int_equal(qstats(e, "unbounded").unfinished, 0);
	assert_int_equal(engine_live_bytes(e), 0);
}

/* ---- the log: every kind of change, with its arguments ------------------ */

static void log_tells_new_queues_and_puts(void **state)
{
	struct engine *e = *state;
	record_log(e);
	struct queue *a = mkq(e, "a");
	const struct lev *ev = expect_ev(0, L_QUEUE, 0);
	assert_int_equal(ev->qid, 0);
	assert_string_equal(ev->text, "a");
	uint64_t t = put(e, a, "{\"k\":1}");
	ev = expect_ev(1, L_PUT, t);
	assert_int_equal(ev->qid, 0);
	assert_int_equal(ev->len, 7);
	assert_string_equal(ev->text, "{\"k\":1}");
	struct queue *b = mkq(e, "bee");
	ev = expect_ev(2, L_QUEUE, 0);
	assert_int_equal(ev->qid, 1);
	assert_string_equal(ev->text, "bee");
	/* Bytes, not strings. */
	uint64_t u;
	assert_int_equal(engine_put(e, b, "a\0b", 3, NULL, &u), JQ_OK);
	ev = expect_ev(3, L_PUT, u);
	assert_int_equal(ev->qid, 1);
	assert_int_equal(ev->len, 3);
	assert_memory_equal(ev->text, "a\0b", 3);
	/* Finding a queue that exists tells nothing. */
	mkq(e, "a");
	expect_no_more_ev(4);
	lr_free();
}

static void log_tells_blocked_put_when_admitted(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "one");
	uint64_t a = put(e, q, "a"), task;
	struct tw w;
	record_log(e);
	tw_init(&w, NEVER);
	assert_int_equal(try_put(e, q, "b", &w, &task), JQ_PARKED);
	expect_no_more_ev(0);                /* parked: nothing changed */
	get(e, q);
	/* The get takes a; then b gets in, with the next id. */
	expect_ev(0, L_TAKE, a);
	expect_done(&w, JQ_OK, a + 1, NULL, 0);
	const struct lev *ev = expect_ev(1, L_PUT, a + 1);
	assert_int_equal(ev->qid, qid_of(e, "one"));
	assert_string_equal(ev->text, "b");
	expect_no_more_ev(2);
	lr_free();
}

static void log_tells_take_and_done(void **state)
{
	struct engine *e = *state;
	struct queue *d = mkq(e, "default"), *o = mkq(e, "other");
	uint64_t a = put(e, d, "a");
	uint64_t b = put(e, o, "b");
	record_log(e);
	get(e, o);
	const struct lev *ev = expect_ev(0, L_TAKE, b);
	assert_int_equal(ev->qid, 1);
	get_leased(e, d, 100);
	ev = expect_ev(1, L_TAKE, a);
	assert_int_equal(ev->qid, 0);
	done_ok(e, a);
	expect_ev(2, L_DONE, a);
	done_ok(e, b);
	expect_ev(3, L_DONE, b);
	/* A getter that waited is told as a take when served. */
	struct tw w;
	assert_int_equal(park_get(e, d, &w, NEVER), JQ_PARKED);
	uint64_t c = put(e, d, "c");
	expect_ev(4, L_PUT, c);
	ev = expect_ev(5, L_TAKE, c);
	assert_int_equal(ev->qid, 0);
	expect_no_more_ev(6);
	lr_free();
}

static void log_tells_back_for_each_way_back(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	struct holder h = { 0 };
	uint64_t a = put(e, q, "a"), b = put(e, q, "b"), c = put(e, q, "c");
	uint64_t d = put(e, q, "d");
	record_log(e);

	/* release */
	get(e, q);
	assert_int_equal(release(e, a, 0), JQ_OK);
	expect_ev(1, L_BACK, a);
	/* lease out */
	assert_int_equal(get_leased(e, q, 50).task, a);
	advance_to(e, now + 50);
	expect_ev(3, L_BACK, a);
	/* holder gone: the newest goes back first, so that the oldest ends up
	 * first in line, in a replay too */
	get_held(e, q, &h);
	get_held(e, q, &h);
	assert_int_equal(lr.n, 6);
	drop_holder(e, &h);
	expect_ev(6, L_BACK, b);
	expect_ev(7, L_BACK, a);
	/* delay over */
	assert_int_equal(get(e, q).task, a);
	assert_int_equal(release(e, a, 30), JQ_OK);
	expect_ev(9, L_DELAY, a);
	advance_to(e, now + 30);
	expect_ev(10, L_BACK, a);
	expect_no_more_ev(11);
	(void)c;
	(void)d;
	lr_free();
}

static void log_tells_delay_with_its_deadline(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "default");
	uint64_t a = put(e, q, "a");
	get(e, q);
	record_log(e);
	assert_int_equal(release(e, a, 250), JQ_OK);
	const struct lev *ev = expect_ev(0, L_DELAY, a);
	assert_int_equal(ev->until, now + 250);
	/* A zero delay is a plain release. */
	advance_to(e, now + 250);
	expect_ev(1, L_BACK, a);
	get(e, q);
	assert_int_equal(release(e, a, 0), JQ_OK);
	expect_ev(3, L_BACK, a);
	/* A delay that never ends. */
	get(e, q);
	assert_int_equal(release(e, a, NEVER), JQ_OK);
	ev = expect_ev(5, L_DELAY, a);
	assert_int_equal(ev->until, NEVER);
	expect_no_more_ev(6);
	lr_free();
}

static void log_tells_dead_letters_with_and_without_a_queue(void **state)
{
	struct engine *e = *state;
	struct queue *jobs = mkq(e, "jobs"), *drop = mkq(e, "drop");
	struct queue *custom = mkq(e, "custom");
	struct holder h = { 0 };

	/* Released after its last delivery: to jobs.dead, made then. */
	uint64_t t = put(e, jobs, "x");
	use_up_deliveries(e, jobs);
	record_log(e);
	assert_int_equal(release(e, t, 0), JQ_OK);
	const struct lev *ev = expect_ev(0, L_QUEUE, 0);
	assert_string_equal(ev->text, "jobs.dead");
	uint32_t dq = ev->qid;
	assert_int_equal(dq, qid_of(e, "jobs.dead"));
	ev = expect_ev(1, L_DEAD, t);
	assert_int_equal(ev->dqid, dq);
	assert_int_equal(ev->new_task, t + 1);
	expect_no_more_ev(2);

	/* Dropped (dead_letter = off): no new task, dqid -1. */
	uint64_t u = put(e, drop, "y");
	get(e, drop);
	record_log(e);
	assert_int_equal(release(e, u, 0), JQ_OK);
	ev = expect_ev(0, L_DEAD, u);
	assert_int_equal(ev->dqid, -1);
	assert_int_equal(ev->new_task, 0);
	expect_no_more_ev(1);

	/* By a lease that runs out, a holder that goes, a delayed release
	 * (at once); the dead-letter queue exists by then. */
	uint64_t v = put(e, custom, "l"), w = put(e, custom, "m");
	uint64_t x = put(e, custom, "n");
	get_leased(e, custom, 10);
	get_held(e, custom, &h);
	get(e, custom);
	record_log(e);
	advance_to(e, now + 10);
	ev = expect_ev(0, L_QUEUE, 0);
	assert_string_equal(ev->text, "morgue");
	uint32_t mq = ev->qid;
	ev = expect_ev(1, L_DEAD, v);
	assert_int_equal(ev->dqid, mq);
	uint64_t next = ev->new_task;
	drop_holder(e, &h);
	ev = expect_ev(2, L_DEAD, w);
	assert_int_equal(ev->dqid, mq);
	assert_int_equal(ev->new_task, next + 1);
	assert_int_equal(release(e, x, 1000), JQ_OK);
	ev = expect_ev(3, L_DEAD, x);
	assert_int_equal(ev->dqid, mq);
	assert_int_equal(ev->new_task, next + 2);
	expect_no_more_ev(4);
	lr_free();
}

static void log_tells_nothing_of_what_changes_nothing(void **state)
{
	struct engine *e = *state;
	struct queue *q = mkq(e, "one"), *empty = mkq(e, "empty");
	struct tw g, j, p;
	uint64_t task, left;
	uint64_t a = put(e, q, "a");
	record_log(e);
	assert_int_equal(try_put(e, q, "full", NULL, &task), JQ_FULL);
	assert_int_equal(try_get(e, empty, NULL, NULL).code, JQ_EMPTY);
	assert_int_equal(task_done(e, a, &left), JQ_UNKNOWN_TASK);
	assert_int_equal(release(e, 99, 0), JQ_UNKNOWN_TASK);
	assert_int_equal(join(e, q, NULL), JQ_TIMEOUT);
	assert_int_equal(park_get(e, empty, &g, 10), JQ_PARKED);
	tw_init(&p, 10);
	assert_int_equal(try_put(e, q, "waits", &p, &task), JQ_PARKED);
	tw_init(&j, 10);
	assert_int_equal(join(e, q, &j), JQ_PARKED);
	advance_to(e, now + 10);                  /* all three time out */
	assert_int_equal(g.code, JQ_EMPTY);
	assert_int_equal(p.code, JQ_FULL);
	assert_int_equal(j.code, JQ_TIMEOUT);
	struct fits_log fl = { .answer = false };
	struct take tk = { .fits = log_fits, .ctx = &fl };
	assert_int_equal(try_get(e, q, &tk, NULL).code, JQ_TOO_LARGE);
	engine_queue_stats(e, q, NULL, 0, &(struct queue_stats){ 0 });
	expect_no_more_ev(0);

	/* With no log, changes tell nothing; the engine works the same. */
	engine_set_log(e, NULL);
	get(e, q);
	done_ok(e, a);
	put(e, mkq(e, "new"), "b");
	expect_no_more_ev(0);
	lr_free();
}

static void log_tells_settings_purges_and_drops(void **state)
{
	struct engine *e = *state;
	struct declare_result r;
	char dl[140];
	struct queue_conf d = { .name = "d", .has_maxsize = true, .maxsize = 3,
	                        .dead_letter = "dl" };
	struct queue_conf bare = { .name = "bare" };

	record_log(e);
	assert_int_equal(declare(e, &d, &r, dl), JQ_OK);
	const struct lev *ev = expect_ev(0, L_QUEUE, 0);
	assert_int_equal(ev->qid, 0);
	assert_string_equal(ev->text, "d");
	ev = expect_ev(1, L_SETTINGS, 0);
	assert_int_equal(ev->qid, 0);
	assert_true(ev->settings.has_maxsize);
	assert_int_equal(ev->settings.maxsize, 3);
	assert_false(ev->settings.has_max_deliveries);
	assert_string_equal(ev->text, "dl");
	expect_no_more_ev(2);
	/* What changes nothing tells nothing: a declare of what is there, a
	 * conflict, a purge of nothing, a delete refused. */
	assert_int_equal(declare(e, &d, &r, dl), JQ_OK);
	d.maxsize = 4;
	expect_conflict(e, &d, "maxsize", false);
	assert_int_equal(engine_purge(e, r.queue), 0);
	put(e, r.queue, "a");
	assert_int_equal(engine_delete(e, r.queue), JQ_CONFLICT);
	assert_int_equal(declare(e, &bare, &r, dl), JQ_OK);   /* no settings */
	expect_ev(2, L_PUT, 1);
	expect_ev(3, L_QUEUE, 0);
	assert_int_equal(lr.v[3].qid, 1);
	expect_no_more_ev(4);

	struct queue *q = findq(e, "d");
	put(e, q, "b");
	assert_int_equal(engine_purge(e, q), 2);
	ev = expect_ev(5, L_PURGE, 0);
	assert_int_equal(ev->qid, 0);
	assert_int_equal(engine_delete(e, q), JQ_OK);
	ev = expect_ev(6, L_DROP, 0);
	assert_int_equal(ev->qid, 0);
	/* The lowest free id again. */
	mkq(e, "new");
	ev = expect_ev(7, L_QUEUE, 0);
	assert_int_equal(ev->qid, 0);
	expect_no_more_ev(8);

	struct engine *copy = replay_log();
	expect_same_state(e, copy);
	engine_free(copy);
	lr_free();
}

/* ---- replay: each call's effect and the records that do not fit --------- */

static void replay_queue_takes_ids_in_order(void **state)
{
	struct engine *e = *state;
	assert_int_equal(engine_replay_queue(e, 1, "a", 1), -1);   /* skips 0 */
	assert_int_equal(engine_replay_queue(e, 0, "small", 5), 0);
	assert_int_equal(engine_replay_queue(e, 0, "b", 1), -1);   /* taken */
	assert_int_equal(engine_replay_queue(e, 1, "small", 5), -1); /* name */
	assert_int_equal(engine_replay_queue(e, 1, "b", 1), 0);
	assert_int_equal(engine_queue_count(e), 2);
	assert_int_equal(qid_of(e, "small"), 0);
	assert_int_equal(qid_of(e, "b"), 1);
	/* The queue's settings come from the configuration. */
	assert_int_equal(qstats(e, "small").maxsize, 2);
	struct queue *q = findq(e, "small");
	assert_non_null(q);
	uint64_t t;
	assert_int_equal(engine_put(e, q, "x", 1, NULL, &t), JQ_OK);
	assert_int_equal(t, 1);
}

static void replay_task_places_each_state(void **state)
{
	struct engine *e = *state;
	assert_int_equal(engine_replay_queue(e, 0, "q", 1), 0);
	assert_int_equal(engine_replay_task(e, 0, 7, 0, ENGINE_QUEUED, 0, "a", 1),
	                 0);
	assert_int_equal(engine_replay_task(e, 0, 3, 2, ENGINE_QUEUED, 0, "b", 1),
	                 0);
	assert_int_equal(engine_replay_task(e, 0, 9, 1, ENGINE_INFLIGHT, 0, "c",
	                                    1), 0);
	assert_int_equal(engine_replay_task(e, 0, 5, 3, ENGINE_DELAYED, 1500,
	                                    "d", 1), 0);
	expect_counts(e, "q", 2, 1, 1);
	assert_int_equal(engine_next_task_id(e), 10);
	assert_int_equal(engine_live_bytes(e), 4 * (1 + 24));
	assert_int_equal(engine_next_deadline(e), 1500);
	assert_ptr_equal(engine_task_queue(e, 9), findq(e, "q"));
	assert_null(engine_task_queue(e, 5));   /* delayed: not in flight */

	/* Queued ones at the tail, in the order given, deliveries kept. */
	struct queue *q = findq(e, "q");
	struct take plain = { 0 };
	struct delivery d;
	assert_int_equal(engine_get(e, q, &plain, NULL, &d), JQ_OK);
	assert_int_equal(d.task, 7);
	assert_int_equal(d.deliveries, 1);
	assert_int_equal(engine_get(e, q, &plain, NULL, &d), JQ_OK);
	assert_int_equal(d.task, 3);
	assert_int_equal(d.deliveries, 3);
	/* The one in flight can be finished; the delayed one comes back at
	 * its time, deliveries kept. */
	uint64_t left;
	assert_int_equal(engine_task_done(e, 9, &left), JQ_OK);
	assert_int_equal(left, 3);
	now = 1500;
	engine_advance(e);
	expect_counts(e, "q", 1, 2, 0);
	assert_int_equal(engine_get(e, q, &plain, NULL, &d), JQ_OK);
	assert_int_equal(d.task, 5);
	assert_int_equal(d.deliveries, 4);
	check_counts(e);
}

static void replay_task_rejects_what_does_not_fit(void **state)
{
	struct engine *e = *state;
	assert_int_equal(engine_replay_task(e, 0, 1, 0, ENGINE_QUEUED, 0, "a", 1),
	                 -1);                               /* no queue 0 yet */
	assert_int_equal(engine_replay_queue(e, 0, "q", 1), 0);
	assert_int_equal(engine_replay_task(e, 1, 1, 0, ENGINE_QUEUED, 0, "a", 1),
	                 -1);                               /* no queue 1 */
	assert_int_equal(engine_replay_task(e, UINT32_MAX, 1, 0, ENGINE_QUEUED, 0,
	                                    "a", 1), -1);
	assert_int_equal(engine_replay_task(e, 0, 0, 0, ENGINE_QUEUED, 0, "a", 1),
	                 -1);                               /* task 0 */
	assert_int_equal(engine_replay_task(e, 0, TASK_ID_MAX + 1, 0,
	                                    ENGINE_QUEUED, 0, "a", 1), -1);
	assert_int_equal(engine_replay_task(e, 0, TASK_ID_MAX, 0, ENGINE_INFLIGHT,
	                                    0, "a", 1), 0);
	/* An id in flight (or delayed) already. */
	assert_int_equal(engine_replay_task(e, 0, TASK_ID_MAX, 0, ENGINE_QUEUED,
	                                    0, "b", 1), -1);
	assert_int_equal(engine_replay_task(e, 0, 4, 0, ENGINE_DELAYED, 2000, "c",
	                                    1), 0);
	assert_int_equal(engine_replay_task(e, 0, 4, 0, ENGINE_INFLIGHT, 0, "d",
	                                    1), -1);
	expect_counts(e, "q", 0, 1, 1);
	/* The ids are used up: a put cannot be given one. */
	uint64_t t;
	assert_int_equal(engine_put(e, findq(e, "q"), "x", 1, NULL, &t),
	                 JQ_UNAVAILABLE);
}

static void replay_take_delivers_the_head_only(void **state)
{
	struct engine *e = *state;
	assert_int_equal(engine_replay_take(e, 0, 1), -1);     /* no queue */
	assert_int_equal(engine_replay_queue(e, 0, "q", 1), 0);
	assert_int_equal(engine_replay_queue(e, 1, "r", 1), 0);
	assert_int_equal(engine_replay_take(e, 0, 1), -1);     /* empty */
	assert_int_equal(engine_replay_task(e, 0, 1, 0, ENGINE_QUEUED, 0, "a", 1),
	                 0);
	assert_int_equal(engine_replay_task(e, 0, 2, 0, ENGINE_QUEUED, 0, "b", 1),
	                 0);
	assert_int_equal(engine_replay_take(e, 0, 2), -1);     /* not the head */
	assert_int_equal(engine_replay_take(e, 1, 1), -1);     /* other queue */
	assert_int_equal(engine_replay_take(e, 2, 1), -1);     /* no queue 2 */
	expect_counts(e, "q", 2, 0, 0);
	assert_int_equal(engine_replay_take(e, 0, 1), 0);
	expect_counts(e, "q", 1, 1, 0);
	assert_int_equal(engine_replay_take(e, 0, 1), -1);     /* taken */
	assert_ptr_equal(engine_task_queue(e, 1), findq(e, "q"));
	assert_int_equal(engine_replay_take(e, 0, 2), 0);
	expect_counts(e, "q", 0, 2, 0);
	/* Each take is one more delivery. */
	assert_int_equal(engine_replay_back(e, 1), 0);
	assert_int_equal(engine_replay_take(e, 0, 1), 0);
	assert_int_equal(engine_replay_back(e, 1), 0);
	struct take plain = { 0 };
	struct delivery d;
	assert_int_equal(engine_get(e, findq(e, "q"), &plain, NULL, &d), JQ_OK);
	assert_int_equal(d.task, 1);
	assert_int_equal(d.deliveries, 3);
}

static void replay_done_needs_a_task_in_flight(void **state)
{
	struct engine *e = *state;
	assert_int_equal(engine_replay_queue(e, 0, "q", 1), 0);
	assert_int_equal(engine_replay_task(e, 0, 1, 0, ENGINE_QUEUED, 0, "a", 1),
	                 0);
	assert_int_equal(engine_replay_task(e, 0, 2, 1, ENGINE_DELAYED, 5000,
	                                    "b", 1), 0);
	assert_int_equal(engine_replay_task(e, 0, 3, 0, ENGINE_QUEUED, 0, "c", 1),
	                 0);
	assert_int_equal(engine_replay_done(e, 1), -1);       /* queued */
	assert_int_equal(engine_replay_done(e, 2), -1);       /* delayed */
	assert_int_equal(engine_replay_done(e, 4), -1);       /* never issued */
	assert_int_equal(engine_replay_done(e, 0), -1);
	expect_counts(e, "q", 2, 0, 1);
	uint64_t live = engine_live_bytes(e);
	assert_int_equal(engine_replay_take(e, 0, 1), 0);
	assert_int_equal(engine_replay_done(e, 1), 0);
	expect_counts(e, "q", 1, 0, 1);
	assert_int_equal(engine_live_bytes(e), live - 25);
	assert_int_equal(engine_replay_done(e, 1), -1);       /* done already */
	assert_null(engine_task_queue(e, 1));
	/* Its id is not given again. */
	assert_int_equal(engine_next_task_id(e), 4);
}

static void replay_back_returns_to_the_head(void **state)
{
	struct engine *e = *state;
	assert_int_equal(engine_replay_queue(e, 0, "q", 1), 0);
	for (uint64_t t = 1; t <= 4; t++)
		assert_int_equal(engine_replay_task(e, 0, t, 0, ENGINE_QUEUED, 0,
		                                    (const char *[]){ "a", "b", "c",
		                                                      "d" }[t - 1], 1),
		                 0);
	assert_int_equal(engine_replay_back(e, 1), -1);       /* queued */
	assert_int_equal(engine_replay_back(e, 9), -1);       /* unknown */
	assert_int_equal(engine_replay_take(e, 0, 1), 0);
	assert_int_equal(engine_replay_take(e, 0, 2), 0);
	assert_int_equal(engine_replay_take(e, 0, 3), 0);
	assert_int_equal(engine_replay_delay(e, 2, 7000), 0);
	expect_counts(e, "q", 1, 2, 1);
	/* In flight: to the head. */
	assert_int_equal(engine_replay_back(e, 3), 0);
	expect_counts(e, "q", 2, 1, 1);
	/* Delayed: to the head, its deadline gone. */
	assert_int_equal(engine_next_deadline(e), 7000);
	assert_int_equal(engine_replay_back(e, 2), 0);
	assert_int_equal(engine_next_deadline(e), NEVER);
	expect_counts(e, "q", 3, 1, 0);
	assert_int_equal(engine_replay_back(e, 2), -1);       /* back already */
	assert_int_equal(engine_replay_back(e, 1), 0);
	expect_counts(e, "q", 4, 0, 0);
	/* Each to the head in turn: 1, 2, 3, then 4. */
	struct take plain = { 0 };
	struct delivery d;
	uint64_t want[] = { 1, 2, 3, 4 };
	for (size_t i = 0; i < LEN(want); i++) {
		assert_int_equal(engine_get(e, findq(e, "q"), &plain, NULL, &d),
		                 JQ_OK);
		assert_int_equal(d.task, want[i]);
		assert_int_equal(d.deliveries, want[i] == 4 ? 1 : 2);
	}
}

static void replay_delay_needs_a_task_in_flight(void **state)
{
	struct engine *e = *state;
	assert_int_equal(engine_replay_queue(e, 0, "q", 1), 0);
	assert_int_equal(engine_replay_task(e, 0, 1, 0, ENGINE_QUEUED, 0, "a", 1),
	                 0);
	assert_int_equal(engine_replay_task(e, 0, 2, 0, ENGINE_QUEUED, 0, "b", 1),
	                 0);
	assert_int_equal(engine_replay_delay(e, 1, 2000), -1);   /* queued */
	assert_int_equal(engine_replay_delay(e, 3, 2000), -1);   /* unknown */
	assert_int_equal(engine_replay_take(e, 0, 1), 0);
	assert_int_equal(engine_replay_delay(e, 1, 2000), 0);
	expect_counts(e, "q", 1, 0, 1);
	assert_int_equal(engine_replay_delay(e, 1, 3000), -1);   /* delayed */
	assert_null(engine_task_queue(e, 1));
	assert_int_equal(engine_next_deadline(e), 2000);
	/* The delay ends at its time: back to the head. */
	now = 1999;
	engine_advance(e);
	expect_counts(e, "q", 1, 0, 1);
	now = 2000;
	engine_advance(e);
	expect_counts(e, "q", 2, 0, 0);
	struct take plain = { 0 };
	struct delivery d;
	assert_int_equal(engine_get(e, findq(e, "q"), &plain, NULL, &d), JQ_OK);
	assert_int_equal(d.task, 1);
	assert_int_equal(d.deliveries, 2);
	/* A deadline already past at replay comes at the next advance. */
	assert_int_equal(engine_replay_take(e, 0, 2), 0);
	assert_int_equal(engine_replay_delay(e, 2, 10), 0);
	engine_advance(e);
	expect_counts(e, "q", 1, 1, 0);
}

static void replay_dead_moves_or_drops(void **state)
{
	struct engine *e = *state;
	assert_int_equal(engine_replay_queue(e, 0, "jobs", 4), 0);
	assert_int_equal(engine_replay_queue(e, 1, "jobs.dead", 9), 0);
	assert_int_equal(engine_replay_task(e, 0, 1, 0, ENGINE_QUEUED, 0, "x", 1),
	                 0);
	assert_int_equal(engine_replay_task(e, 0, 2, 0, ENGINE_QUEUED, 0, "y", 1),
	                 0);
	assert_int_equal(engine_replay_task(e, 1, 3, 0, ENGINE_QUEUED, 0, "z", 1),
	                 0);
	assert_int_equal(engine_replay_take(e, 0, 1), 0);
	assert_int_equal(engine_replay_take(e, 0, 2), 0);
	uint64_t live = engine_live_bytes(e);
	/* To the dead-letter queue's tail as a new task, deliveries 0. */
	assert_int_equal(engine_replay_dead(e, 1, 4, 1), 0);
	expect_counts(e, "jobs", 0, 1, 0);
	expect_counts(e, "jobs.dead", 2, 0, 0);
	assert_null(engine_task_queue(e, 1));
	assert_int_equal(engine_next_task_id(e), 5);
	assert_int_equal(engine_live_bytes(e), live);
	/* Dropped. */
	assert_int_equal(engine_replay_dead(e, 2, 0, -1), 0);
	expect_counts(e, "jobs", 0, 0, 0);
	assert_int_equal(engine_live_bytes(e), live - 25);
	assert_int_equal(engine_next_task_id(e), 5);
	struct take plain = { 0 };
	struct delivery d;
	struct queue *dq = findq(e, "jobs.dead");
	assert_int_equal(engine_get(e, dq, &plain, NULL, &d), JQ_OK);
	assert_int_equal(d.task, 3);
	assert_int_equal(engine_get(e, dq, &plain, NULL, &d), JQ_OK);
	assert_int_equal(d.task, 4);
	assert_int_equal(d.deliveries, 1);
	assert_int_equal(d.item_len, 1);
	assert_memory_equal(d.item, "x", 1);
}

static void replay_dead_rejects_what_does_not_fit(void **state)
{
	struct engine *e = *state;
	assert_int_equal(engine_replay_queue(e, 0, "jobs", 4), 0);
	assert_int_equal(engine_replay_task(e, 0, 1, 0, ENGINE_QUEUED, 0, "x", 1),
	                 0);
	assert_int_equal(engine_replay_task(e, 0, 2, 2, ENGINE_DELAYED, 9000, "y",
	                                    1), 0);
	assert_int_equal(engine_replay_dead(e, 1, 5, 0), -1);   /* queued */
	assert_int_equal(engine_replay_dead(e, 1, 0, -1), -1);
	assert_int_equal(engine_replay_dead(e, 2, 5, 0), -1);   /* delayed */
	assert_int_equal(engine_replay_dead(e, 7, 5, 0), -1);   /* unknown */
	assert_int_equal(engine_replay_take(e, 0, 1), 0);
	assert_int_equal(engine_replay_dead(e, 1, 5, 1), -1);   /* no queue 1 */
	assert_int_equal(engine_replay_dead(e, 1, 5, 0x7fffffff), -1);
	assert_int_equal(engine_replay_dead(e, 1, 0, 0), -1);   /* no new id */
	/* Nothing changed by the refusals. */
	expect_counts(e, "jobs", 0, 1, 1);
	assert_int_equal(engine_next_task_id(e), 3);
	assert_int_equal(engine_replay_dead(e, 1, 5, 0), 0);    /* to itself */
	expect_counts(e, "jobs", 1, 0, 1);
}

/* A new id past the last one a put may take does not fit, as for
 * engine_replay_task: it would leave the engine unable to take a put. */
static void replay_dead_rejects_a_new_id_past_the_limit(void **state)
{
	struct engine *e = *state;
	assert_int_equal(engine_replay_queue(e, 0, "jobs", 4), 0);
	assert_int_equal(engine_replay_task(e, 0, 1, 0, ENGINE_QUEUED, 0, "x", 1),
	                 0);
	assert_int_equal(engine_replay_take(e, 0, 1), 0);
	assert_int_equal(engine_replay_dead(e, 1, TASK_ID_MAX + 1, 0), -1);
	expect_counts(e, "jobs", 0, 1, 0);
	assert_int_equal(engine_next_task_id(e), 2);
}

static void replay_queue_takes_free_ids(void **state)
{
	struct engine *e = *state;
	assert_int_equal(engine_replay_queue(e, 0, "a", 1), 0);
	assert_int_equal(engine_replay_queue(e, 2, "", 0), -1);  /* skips 1 */
	assert_int_equal(engine_replay_queue(e, 1, "", 0), 0);   /* free */
	assert_int_equal(engine_replay_queue(e, 0, "", 0), -1);  /* not next */
	assert_int_equal(engine_replay_queue(e, 2, "", 0), 0);
	assert_int_equal(engine_replay_queue(e, 3, "d", 1), 0);
	assert_int_equal(engine_queue_count(e), 2);
	assert_int_equal(engine_replay_queue(e, 3, "x", 1), -1);  /* taken */
	assert_int_equal(engine_replay_queue(e, 5, "x", 1), -1);  /* past */
	assert_int_equal(engine_replay_queue(e, 2, "a", 1), -1);  /* name */
	assert_int_equal(engine_replay_queue(e, 2, "c", 1), 0);   /* a free id */
	assert_int_equal(qid_of(e, "c"), 2);
	/* A new queue takes the lowest free id. */
	mkq(e, "b");
	assert_int_equal(qid_of(e, "b"), 1);
	mkq(e, "e");
	assert_int_equal(qid_of(e, "e"), 4);
	/* Listed by id. */
	const char *order[] = { "a", "b", "c", "d", "e" };
	size_t i = 0;
	for (struct queue *q = engine_next_queue(e, NULL); q;
	     q = engine_next_queue(e, q))
		assert_string_equal(queue_name(q), order[i++]);
	assert_int_equal(i, 5);
}

static void replay_settings_purge_and_drop_need_their_queue(void **state)
{
	struct engine *e = *state;
	struct queue_conf d = { .has_maxsize = true, .maxsize = 5,
	                        .dead_letter = "x" };
	struct queue_conf none = { 0 };
	assert_int_equal(engine_replay_settings(e, 0, &d), -1);   /* no queue */
	assert_int_equal(engine_replay_queue(e, 0, "q", 1), 0);
	assert_int_equal(engine_replay_settings(e, 0, &none), -1);  /* empty */
	assert_int_equal(engine_replay_settings(e, 0, &d), 0);
	assert_int_equal(engine_replay_settings(e, 0, &d), -1);   /* again */
	assert_int_equal(qstats(e, "q").maxsize, 5);
	assert_string_equal(engine_queue_settings(e, findq(e, "q")).dead_letter,
	                    "x");
	/* Settings of the configuration still win. */
	assert_int_equal(engine_replay_queue(e, 1, "small", 5), 0);
	assert_int_equal(engine_replay_settings(e, 1, &d), 0);
	assert_int_equal(qstats(e, "small").maxsize, 2);

	assert_int_equal(engine_replay_purge(e, 0), -1);          /* nothing */
	assert_int_equal(engine_replay_purge(e, 7), -1);
	assert_int_equal(engine_replay_task(e, 0, 3, 0, ENGINE_QUEUED, 0, "a",
	                                    1), 0);
	assert_int_equal(engine_replay_task(e, 0, 4, 1, ENGINE_INFLIGHT, 0, "b",
	                                    1), 0);
	assert_int_equal(engine_replay_drop(e, 0), -1);           /* unfinished */
	assert_int_equal(engine_replay_purge(e, 0), 0);
	expect_counts(e, "q", 0, 1, 0);
	assert_int_equal(engine_live_bytes(e), 1 + 24);
	assert_int_equal(engine_replay_drop(e, 0), -1);           /* in flight */
	assert_int_equal(engine_replay_done(e, 4), 0);
	assert_int_equal(engine_replay_drop(e, 0), 0);
	assert_null(findq(e, "q"));
	assert_int_equal(engine_replay_drop(e, 0), -1);           /* gone */
	assert_int_equal(engine_replay_settings(e, 0, &d), -1);
	assert_int_equal(engine_replay_queue(e, 0, "q", 1), 0);   /* again */
	assert_int_equal(qstats(e, "q").maxsize, 0);   /* without its settings */
	assert_int_equal(engine_next_task_id(e), 5);
}

static void replay_next_id_only_raises(void **state)
{
	struct engine *e = *state;
	assert_int_equal(engine_next_task_id(e), 1);
	engine_replay_next_id(e, 50);
	assert_int_equal(engine_next_task_id(e), 50);
	engine_replay_next_id(e, 20);
	assert_int_equal(engine_next_task_id(e), 50);
	assert_int_equal(engine_replay_queue(e, 0, "q", 1), 0);
	assert_int_equal(engine_replay_task(e, 0, 10, 0, ENGINE_QUEUED, 0, "a", 1),
	                 0);
	assert_int_equal(engine_next_task_id(e), 50);
	assert_int_equal(engine_replay_task(e, 0, 70, 0, ENGINE_QUEUED, 0, "b", 1),
	                 0);
	assert_int_equal(engine_next_task_id(e), 71);
	uint64_t t;
	assert_int_equal(engine_put(e, findq(e, "q"), "c", 1, NULL, &t), JQ_OK);
	assert_int_equal(t, 71);
}

static void replay_end_returns_tasks_in_flight_oldest_first(void **state)
{
	struct engine *e = *state;
	assert_int_equal(engine_replay_queue(e, 0, "q", 1), 0);
	assert_int_equal(engine_replay_queue(e, 1, "r", 1), 0);
	const char *items[] = { "", "a", "b", "c", "d", "e", "f", "g" };
	for (uint64_t t = 1; t <= 5; t++)
		assert_int_equal(engine_replay_task(e, 0, t, 0, ENGINE_QUEUED, 0,
		                                    items[t], 1), 0);
	for (uint64_t t = 6; t <= 7; t++)
		assert_int_equal(engine_replay_task(e, 1, t, 0, ENGINE_QUEUED, 0,
		                                    items[t], 1), 0);
	/* In flight: 1 (twice delivered), 2, 4 (taken after a back), 6; 3
	 * delayed; 5 and 7 queued. */
	assert_int_equal(engine_replay_take(e, 0, 1), 0);
	assert_int_equal(engine_replay_back(e, 1), 0);
	assert_int_equal(engine_replay_take(e, 0, 1), 0);
	assert_int_equal(engine_replay_take(e, 0, 2), 0);
	assert_int_equal(engine_replay_take(e, 0, 3), 0);
	assert_int_equal(engine_replay_delay(e, 3, 5000), 0);
	assert_int_equal(engine_replay_take(e, 0, 4), 0);
	assert_int_equal(engine_replay_take(e, 1, 6), 0);
	expect_counts(e, "q", 1, 3, 1);
	expect_counts(e, "r", 1, 1, 0);

	record_log(e);
	engine_replay_end(e);
	expect_counts(e, "q", 4, 0, 1);
	expect_counts(e, "r", 2, 0, 0);
	/* The log hears of each, newest first, so that a replay of these
	 * records puts the oldest first in line too. */
	expect_ev(0, L_BACK, 6);
	expect_ev(1, L_BACK, 4);
	expect_ev(2, L_BACK, 2);
	expect_ev(3, L_BACK, 1);
	expect_no_more_ev(4);
	assert_int_equal(engine_next_deadline(e), 5000);

	struct take plain = { 0 };
	struct delivery d;
	uint64_t want_q[][2] = { { 1, 3 }, { 2, 2 }, { 4, 2 }, { 5, 1 } };
	for (size_t i = 0; i < LEN(want_q); i++) {
		assert_int_equal(engine_get(e, findq(e, "q"), &plain, NULL, &d),
		                 JQ_OK);
		assert_int_equal(d.task, want_q[i][0]);
		assert_int_equal(d.deliveries, want_q[i][1]);
	}
	assert_int_equal(engine_get(e, findq(e, "r"), &plain, NULL, &d), JQ_OK);
	assert_int_equal(d.task, 6);
	assert_int_equal(d.deliveries, 2);
	assert_memory_equal(d.item, "f", 1);
	/* Nothing in flight: replay_end tells nothing. */
	struct engine *f = engine_new(&std_conf);
	record_log(f);
	engine_replay_end(f);
	expect_no_more_ev(0);
	engine_free(f);
	lr_free();
}

/* ---- dump: a snapshot that replays into the same state ------------------- */

static void dump_then_replay_gives_the_same_state(void **state)
{
	struct engine *e = *state;
	struct queue *d = mkq(e, "default"), *jobs = mkq(e, "jobs");
	struct queue *one = mkq(e, "one");
	struct holder h = { 0 };
	mkq(e, "empty");

	for (int i = 0; i < 8; i++) {
		char item[8];
		snprintf(item, sizeof item, "d%d", i);
		put(e, d, item);
	}
	uint64_t t1 = get(e, d).task;          /* d0: released, twice */
	assert_int_equal(release(e, t1, 0), JQ_OK);
	assert_int_equal(get(e, d).task, t1);
	assert_int_equal(release(e, t1, 0), JQ_OK);
	get_held(e, d, &h);                    /* d0, held */
	get_leased(e, d, 5000);                /* d1, leased past the test */
	uint64_t t3 = get(e, d).task;          /* d2, delayed */
	assert_int_equal(release(e, t3, 700), JQ_OK);
	done_ok(e, get(e, d).task);            /* d3, finished */
	uint64_t x = put(e, jobs, "x");        /* dead-lettered: jobs.dead */
	use_up_deliveries(e, jobs);
	assert_int_equal(release(e, x, 0), JQ_OK);
	put(e, one, "last");
	uint64_t last = put(e, jobs, "gone");  /* the newest id, finished */
	done_ok(e, get(e, jobs).task);
	assert_int_equal(last, engine_next_task_id(e) - 1);

	struct dumped dd;
	dump(e, &dd);
	assert_int_equal(dd.nq, 5);
	assert_string_equal(dd.q[4].name, "jobs.dead");
	assert_int_equal(dd.next_id, last + 1);
	/* Each queue's queued tasks in order, as gets would deliver them. */
	const struct dtask *v[16];
	size_t n = dumped_of(&dd, 0, ENGINE_QUEUED, v, LEN(v));
	assert_int_equal(n, 4);
	const char *want[] = { "d4", "d5", "d6", "d7" };
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(v[i]->len, 2);
		assert_memory_equal(v[i]->item, want[i], 2);
		assert_int_equal(v[i]->deliveries, 0);
	}
	n = dumped_of(&dd, 0, ENGINE_INFLIGHT, v, LEN(v));
	assert_int_equal(n, 2);
	n = dumped_of(&dd, 0, ENGINE_DELAYED, v, LEN(v));
	assert_int_equal(n, 1);
	assert_int_equal(v[0]->task, t3);
	assert_int_equal(v[0]->until, now + 700);
	assert_int_equal(v[0]->deliveries, 1);
	/* Queued tasks come first (snapshot order: each queue's FIFO). */
	bool others = false;
	for (size_t i = 0; i < dd.nt; i++) {
		if (dd.t[i].state != ENGINE_QUEUED)
			others = true;
		else
			assert_false(others);
	}

	struct engine *copy = replay_dump(&dd);
	expect_same_state(e, copy);
	/* The copy works on: the delay ends at the same time, new ids follow,
	 * and at the end of the replay the tasks in flight go back. */
	now += 700;
	engine_advance(e);
	engine_advance(copy);
	expect_same_state(e, copy);
	uint64_t te, tc;
	assert_int_equal(engine_put(copy, findq(copy, "jobs"), "n", 1, NULL,
	                            &tc), JQ_OK);
	assert_int_equal(engine_put(e, jobs, "n", 1, NULL, &te), JQ_OK);
	assert_int_equal(tc, te);
	engine_replay_end(copy);
	expect_counts(copy, "default", 7, 0, 0);
	dumped_free(&dd);
	engine_free(copy);
}

static void dump_of_an_empty_engine(void **state)
{
	struct engine *e = *state;
	struct dumped dd;
	dump(e, &dd);
	assert_int_equal(dd.nq, 0);
	assert_int_equal(dd.nt, 0);
	assert_int_equal(dd.next_id, 1);
	struct queue *a = mkq(e, "a");
	put(e, a, "x");
	done_ok(e, get(e, a).task);
	dumped_free(&dd);
	dump(e, &dd);
	assert_int_equal(dd.nq, 1);
	assert_int_equal(dd.nt, 0);
	assert_int_equal(dd.next_id, 2);   /* the finished id is not reused */
	struct engine *copy = replay_dump(&dd);
	expect_same_state(e, copy);
	dumped_free(&dd);
	engine_free(copy);
}

/* Free ids below the highest in use and declared settings go into the
 * dump, so that its replay gives the same ids to the queues made next. */
static void dump_keeps_free_ids_and_declared_settings(void **state)
{
	struct engine *e = *state;
	struct declare_result r;
	char dl[140];
	struct queue_conf w = { .name = "b", .has_max_deliveries = true,
	                        .max_deliveries = 4, .dead_letter = "grave" };
	const char *names[] = { "a", "b", "c", "d", "e" };
	for (size_t i = 0; i < LEN(names); i++)
		mkq(e, names[i]);
	assert_int_equal(engine_delete(e, findq(e, "b")), JQ_OK);
	assert_int_equal(declare(e, &w, &r, dl), JQ_OK);   /* b: id 1 again */
	put(e, r.queue, "x");
	assert_int_equal(engine_delete(e, findq(e, "c")), JQ_OK);
	assert_int_equal(engine_delete(e, findq(e, "a")), JQ_OK);
	assert_int_equal(engine_delete(e, findq(e, "e")), JQ_OK);   /* last */

	struct dumped dd;
	dump(e, &dd);
	assert_int_equal(dd.nq, 4);   /* the free id past the last is not */
	assert_string_equal(dd.q[0].name, "");
	assert_string_equal(dd.q[1].name, "b");
	assert_true(dd.q[1].declared);
	assert_int_equal(dd.q[1].settings.max_deliveries, 4);
	assert_string_equal(dd.q[1].dead_letter, "grave");
	assert_string_equal(dd.q[2].name, "");
	assert_string_equal(dd.q[3].name, "d");
	assert_false(dd.q[3].declared);

	struct engine *copy = replay_dump(&dd);
	expect_same_state(e, copy);
	const char *next[] = { "n0", "n2", "n4" };
	for (size_t i = 0; i < LEN(next); i++) {
		struct queue *q;
		mkq(e, next[i]);
		/* (A replayed engine's counters start at 0: no check_engine.) */
		assert_int_equal(engine_queue(copy, next[i], 2, true, &q), JQ_OK);
		assert_int_equal(qid_of(e, next[i]), 2 * i);
		assert_int_equal(qid_of(copy, next[i]), 2 * i);
	}
	expect_same_state(e, copy);
	dumped_free(&dd);
	engine_free(copy);
}

/* engine_live_bytes counts the tasks held: none held, none counted,
 * whichever way they went (finished, dropped, dead-lettered and then
 * finished).  The journal compacts by it. */
static void live_bytes_come_back_to_zero(void **state)
{
	struct engine *e = *state;
	struct queue *d = mkq(e, "default"), *jobs = mkq(e, "jobs");
	struct queue *drop = mkq(e, "drop");
	assert_int_equal(engine_live_bytes(e), 0);
	put(e, d, "abc");
	assert_true(engine_live_bytes(e) > 0);
	done_ok(e, get(e, d).task);
	assert_int_equal(engine_live_bytes(e), 0);
	/* Dropped past max_deliveries. */
	put(e, drop, "abc");
	assert_int_equal(release(e, get(e, drop).task, 0), JQ_OK);
	assert_int_equal(engine_live_bytes(e), 0);
	/* Dead-lettered, then finished in the dead-letter queue. */
	uint64_t x = put(e, jobs, "abc");
	uint64_t one = engine_live_bytes(e);
	use_up_deliveries(e, jobs);
	assert_int_equal(release(e, x, 0), JQ_OK);
	assert_int_equal(engine_live_bytes(e), one);     /* the same task */
	done_ok(e, get(e, findq(e, "jobs.dead")).task);
	assert_int_equal(engine_live_bytes(e), 0);
}

/* ---- the log and the replay agree, over a random history ----------------- */

static uint64_t lrng = 88172645463325252ull;

static unsigned lrnd(unsigned n)
{
	lrng ^= lrng << 13;
	lrng ^= lrng >> 7;
	lrng ^= lrng << 17;
	return (unsigned)(lrng % n);
}

#define LR_WAITERS 12
#define LR_RECENT 32

/* A random declare of the queue name, dead letters to a queue in names: it
 * may make the queue with settings of its own, or find it, or conflict.
 * The queue, or NULL. */
static struct queue *random_declare(struct engine *e, const char *name,
                                    const char *const *names, size_t n)
{
	struct queue_conf w = { .name = (char *)name };
	struct declare_result r;
	char dl[140];
	if (lrnd(2)) {
		w.has_maxsize = true;
		w.maxsize = lrnd(4);
	}
	if (lrnd(2)) {
		w.has_max_deliveries = true;
		w.max_deliveries = lrnd(3);
	}
	if (lrnd(2))
		w.dead_letter = (char *)names[lrnd((unsigned)n)];
	if (w.dead_letter && !strcmp(w.dead_letter, w.name))
		w.dead_letter = NULL;
	declare(e, &w, &r, dl);
	return findq(e, name);
}

/*
 * Thousands of random steps (puts, blocked puts, gets held, leased and
 * plain, waiting getters, task_done, release with and without delay,
 * holders dropped, leases and delays running out, dead letters with and
 * without a queue, declares, purges, deletes of queues that are empty,
 * and the names taken again), the log recording every change.  Every so
 * often the log so far is replayed into a fresh engine, which must hold
 * exactly the same state; a dump of it must replay into the same state
 * again.
 */
static void log_replay_reproduces_a_random_history(void **state)
{
	/* The first ones are made by put and get, the others only by a
	 * declare (and as dead-letter queues). */
	static const char *const names[] = {
		"small", "one", "jobs", "drop", "custom", "plain", "nodl",
		"mine", "morgue", "d1", "d2",
	};
	enum { MADE_BY_PUT = 7 };
	struct engine *e = *state;
	struct holder h[2] = { { 0 }, { 0 } };
	struct tw w[LR_WAITERS];
	uint64_t recent[LR_RECENT] = { 0 };
	unsigned checks = 0, dead = 0;

	memset(w, 0, sizeof w);
	for (size_t i = 0; i < LR_WAITERS; i++)
		w[i].calls = 1;                       /* free */
	record_log(e);
	for (unsigned step = 1; step <= 6000; step++) {
		/* A queue made as put and get make it, or by a declare, unless
		 * the op is a declare, a purge or a delete. */
		unsigned ni = lrnd(LEN(names));
		const char *name = names[ni];
		unsigned op = lrnd(112);
		struct queue *q = findq(e, name);
		if (!q && op < 100)
			q = ni < MADE_BY_PUT ? mkq(e, name) :
			    random_declare(e, name, names, LEN(names));
		if (!q && op < 100)
			continue;   /* a conflict */
		struct tw *free_w = NULL;
		for (size_t i = 0; i < LR_WAITERS; i++)
			if (w[i].calls)
				free_w = &w[i];
		if (op < 30) {                        /* put */
			char item[BIG_TEXT_MAX];
			uint64_t t;
			snprintf(item, sizeof item, "s%u", step);
			if (step % 5 == 0)
				make_big(item, sizeof item, step);
			if (free_w && lrnd(2)) {
				tw_init(free_w, lrnd(3) ? NEVER : lrnd(40));
				if (try_put(e, q, item, free_w, &t) != JQ_PARKED)
					free_w->calls = 1;
			} else {
				try_put(e, q, item, NULL, &t);
			}
		} else if (op < 55) {                 /* get */
			struct take tk = { 0 };
			unsigned how = lrnd(3);
			if (how == 0)
				tk.holder = &h[lrnd(2)];
			else if (how == 1)
				tk.lease = 1 + lrnd(40);
			if (free_w && lrnd(4) == 0) {
				tw_init(free_w, lrnd(2) ? NEVER : lrnd(40));
				struct got g = try_get(e, q, &tk, free_w);
				if (g.code != JQ_PARKED)
					free_w->calls = 1;
				if (g.code == JQ_OK)
					recent[lrnd(LR_RECENT)] = g.task;
			} else {
				struct got g = try_get(e, q, &tk, NULL);
				if (g.code == JQ_OK)
					recent[lrnd(LR_RECENT)] = g.task;
			}
		} else if (op < 70) {                 /* task_done */
			uint64_t left;
			task_done(e, recent[lrnd(LR_RECENT)], &left);
		} else if (op < 85) {                 /* release */
			release(e, recent[lrnd(LR_RECENT)],
			        lrnd(2) ? 0 : 1 + lrnd(40));
		} else if (op < 88) {
			drop_holder(e, &h[lrnd(2)]);
		} else if (op < 100) {
			advance_to(e, now + lrnd(12));
		} else if (op < 104) {
			random_declare(e, name, names, LEN(names));
		} else if (op < 106) {
			engine_purge(e, q);
			check_engine(e);
		} else if (q) {   /* purged first, so that more can go */
			if (lrnd(2))
				engine_purge(e, q);
			int rc = engine_delete(e, q);
			check_engine(e);
			assert_int_equal(rc == JQ_OK, findq(e, name) == NULL);
		}
		/* Tasks that waiting getters got are recent too. */
		for (size_t i = 0; i < LR_WAITERS; i++)
			if (w[i].calls == 1 && w[i].code == JQ_OK && w[i].deliveries) {
				recent[lrnd(LR_RECENT)] = w[i].task;
				w[i].deliveries = 0;
			}
		assert_int_equal(lr_bad_ctx, 0);

		if (step % 500 == 0) {
			/* The live bytes are compared at the end only, so that a
			 * wrong count does not stop the other checks. */
			struct engine *copy = replay_log();
			expect_same_tasks(e, copy);
			struct dumped dd;
			dump(copy, &dd);
			struct engine *again = replay_dump(&dd);
			expect_same_state(copy, again);
			expect_same_tasks(e, again);
			dumped_free(&dd);
			engine_free(again);
			engine_free(copy);
			checks++;
		}
	}
	for (size_t i = 0; i < lr.n; i++)
		dead += lr.v[i].kind == L_DEAD;
	assert_true(checks >= 10);
	assert_true(dead > 0);
	/* Each kind of change happened. */
	for (int k = L_QUEUE; k <= L_LAST; k++) {
		bool seen = false;
		for (size_t i = 0; i < lr.n && !seen; i++)
			seen = lr.v[i].kind == (enum lkind)k;
		if (!seen)
			fail_msg("no %s in the random history", lkind_name((enum lkind)k));
	}
	end_waits(e);
	drop_holder(e, &h[0]);
	drop_holder(e, &h[1]);
	struct engine *copy = replay_log();
	expect_same_state(e, copy);
	engine_free(copy);
	lr_free();
}

/* ---- the reference model ------------------------------------------------- */

/*
 * The model keeps, per queue, the FIFO of task ids, its counts, counters
 * and waiter lists, and per task its state; it is the behaviour PROTOCOL.md
 * and engine.h describe, written as plainly as possible.  The test applies
 * each random step to both, collects the done() calls each makes, and
 * compares answers, wake-ups and every queue's figures.
 *
 * Queues come and go: declare makes one with settings of its own (the
 * configuration's win), purge finishes its queued tasks, delete removes a
 * queue with nothing unfinished; its name is then free, and its figures
 * start again from zero.
 *
 * To make the outcome exact, no two leases or delays share a deadline:
 * the clock moves in steps of 4 ms, leases end at 4k+1, delays at 4k+2 and
 * wait timeouts at 4k+3, and a lease or delay never reuses a deadline.
 * Leases are taken only by immediate gets, whose deadline is known then.
 */
#define M_QUEUES 6
#define M_TASKS 60000
#define M_WAITERS 40
#define M_HOLDERS 3
#define M_STEPS 20000
#define M_TIME_SLOTS (1u << 21)
#define M_NONE (-1)
#define M_OTHER (-2)               /* dead letters to a queue not modelled */

enum mstate { M_UNUSED, M_QUEUED, M_INFLIGHT, M_DELAYED, M_GONE };

struct mtask {
	int q;
	int state;
	uint32_t deliveries;
	int holder;                /* M_NONE or a holder index */
	bool leased;
	msec_t at;                 /* lease or delay deadline */
	uint64_t seq;              /* delivery order, for holders */
	unsigned item;
};

struct mqueue {
	const char *name;
	bool exists;
	uint64_t maxsize;
	unsigned max_deliveries;
	int dead;                  /* dead-letter queue, M_NONE or M_OTHER */
	uint64_t fifo[M_TASKS];    /* fifo[0] is the head */
	size_t n;
	uint64_t inflight, delayed;
	uint64_t puts, gets, task_dones, releases, redeliveries, dead_lettered;
	uint64_t purged;
	int waits[3][M_WAITERS];   /* by enum wait_kind, oldest first */
	size_t nwaits[3];
	bool dirty;                /* to serve after a holder drop */
};

struct mwaiter {
	struct waiter w;
	int idx;
	bool parked;
	int kind, q;
	unsigned item;             /* put */
	int holder;                /* get: M_NONE or a holder */
	bool picky;                /* get: refuses every fifth task */
	msec_t at;
};

struct event {
	int waiter, code;
	uint64_t task;
	uint32_t deliveries;
	char item[16];
};

static struct model {
	struct mqueue q[M_QUEUES];
	struct mtask t[M_TASKS];
	struct mwaiter w[M_WAITERS];
	struct holder h[M_HOLDERS];
	uint64_t next_id, seq;
	uint64_t dl_puts;          /* tasks put by dead-lettering */
	uint64_t dropped;          /* tasks past max_deliveries dropped */
	uint64_t redeliveries, deletes, declared;
	/* the figures of queues deleted */
	uint64_t gone_puts, gone_task_dones, gone_purged;
	size_t nexist;
	bool defer;
	unsigned char used[M_TIME_SLOTS / 8];    /* deadlines given out */
	struct event want[2 * M_WAITERS], got[2 * M_WAITERS];
	size_t nwant, ngot;
	uint64_t rng;
} *m;

static struct queue_conf model_queues[] = {
	{ .name = "a", .has_maxsize = true, .maxsize = 2,
	  .has_max_deliveries = true, .max_deliveries = 3 },
	{ .name = "b", .has_maxsize = true, .maxsize = 1,
	  .has_max_deliveries = true, .max_deliveries = 2,
	  .dead_letter = "off" },
	{ .name = "c", .has_maxsize = true, .maxsize = 0 },
	{ .name = "d", .has_maxsize = true, .maxsize = 3,
	  .has_max_deliveries = true, .max_deliveries = 1,
	  .dead_letter = "grave" },
	{ .name = "a.dead", .has_maxsize = true, .maxsize = 1 },
};

static const struct engine_conf model_conf = {
	.clock = fake_clock, .default_maxsize = 2, .max_queues = 5,
	.queues = model_queues, .nqueues = LEN(model_queues),
};

static const char *const m_names[M_QUEUES] = {
	"a", "b", "c", "d", "a.dead", "grave",
};

/* xorshift64: the same run on every machine. */
static unsigned rnd(unsigned n)
{
	m->rng ^= m->rng << 13;
	m->rng ^= m->rng >> 7;
	m->rng ^= m->rng << 17;
	return (unsigned)(m->rng % n);
}

/* The model's index of a queue name, or M_OTHER. */
static int m_index(const char *name)
{
	for (int i = 0; i < M_QUEUES; i++)
		if (!strcmp(m_names[i], name))
			return i;
	return M_OTHER;
}

static const struct queue_conf *m_conf(int qi)
{
	for (size_t c = 0; c < LEN(model_queues); c++)
		if (!strcmp(model_queues[c].name, m_names[qi]))
			return &model_queues[c];
	return NULL;
}

/* A queue's settings from the configuration, over those declared (d may
 * be NULL), over the defaults: PROTOCOL.md's order. */
static void m_settings(int qi, const struct queue_conf *d)
{
	struct mqueue *q = &m->q[qi];
	const struct queue_conf *c = m_conf(qi);
	char dead[32];
	q->maxsize = c && c->has_maxsize ? c->maxsize :
	             d && d->has_maxsize ? d->maxsize :
	             model_conf.default_maxsize;
	/* default_max_deliveries is 0: dead-letter queues or not. */
	q->max_deliveries = c && c->has_max_deliveries ? c->max_deliveries :
	                    d && d->has_max_deliveries ? d->max_deliveries : 0;
	snprintf(dead, sizeof dead, "%s.dead", q->name);
	if (c && c->dead_letter)
		q->dead = !strcmp(c->dead_letter, "off") ? M_NONE :
		          m_index(c->dead_letter);
	else
		q->dead = m_index(d && d->dead_letter ? d->dead_letter : dead);
}

static bool m_full(const struct mqueue *q)
{
	return q->maxsize && q->n >= q->maxsize;
}

static uint64_t m_unfinished(const struct mqueue *q)
{
	return q->n + q->inflight + q->delayed;
}

/* Every fourth item is big, so that the model covers items queued in
 * their tasks' blocks along with packed ones, through every move. */
static void m_item_text(unsigned item, char *out, size_t size)
{
	snprintf(out, size, "i%u", item);
	if (item % 4 == 0)
		make_big(out, size, item);
}

static void m_expect(int waiter, int code, uint64_t task)
{
	assert_true(m->nwant < LEN(m->want));
	struct event *ev = &m->want[m->nwant++];
	memset(ev, 0, sizeof *ev);
	ev->waiter = waiter;
	ev->code = code;
	ev->task = task;
	if (code == JQ_OK && task && m->w[waiter].kind == WAIT_GET) {
		ev->deliveries = m->t[task].deliveries;
		m_item_text(m->t[task].item, ev->item, sizeof ev->item);
	}
}

static void m_engine_done(struct waiter *w, int code, const struct delivery *d,
                          uint64_t task)
{
	struct mwaiter *mw = container_of(w, struct mwaiter, w);
	assert_true(m->ngot < LEN(m->got));
	struct event *ev = &m->got[m->ngot++];
	memset(ev, 0, sizeof *ev);
	ev->waiter = mw->idx;
	ev->code = code;
	ev->task = task;
	if (d) {
		ev->deliveries = d->deliveries;
		snprintf(ev->item, sizeof ev->item, "%.*s", (int)d->item_len,
		         d->item);
	}
}

static void m_unwait(struct mwaiter *w)
{
	struct mqueue *q = &m->q[w->q];
	int *list = q->waits[w->kind];
	size_t *n = &q->nwaits[w->kind];
	for (size_t i = 0; i < *n; i++)
		if (list[i] == w->idx) {
			memmove(list + i, list + i + 1,
			        (*n - i - 1) * sizeof *list);
			(*n)--;
			w->parked = false;
			return;
		}
	fail_msg("waiter %d not on its list", w->idx);
}

static void m_park(struct mwaiter *w, int kind, int qi, msec_t timeout)
{
	struct mqueue *q = &m->q[qi];
	w->parked = true;
	w->kind = kind;
	w->q = qi;
	w->at = timeout == NEVER ? NEVER : now + timeout;
	q->waits[kind][q->nwaits[kind]++] = w->idx;
}

static uint64_t m_enqueue_new(int qi, unsigned item)
{
	struct mqueue *q = &m->q[qi];
	uint64_t id = m->next_id++;
	assert_true(id < M_TASKS);
	m->t[id] = (struct mtask){ .q = qi, .state = M_QUEUED,
	                           .holder = M_NONE, .item = item };
	q->fifo[q->n++] = id;
	q->puts++;
	return id;
}

static void m_push_head(int qi, uint64_t id)
{
	struct mqueue *q = &m->q[qi];
	memmove(q->fifo + 1, q->fifo, q->n * sizeof *q->fifo);
	q->fifo[0] = id;
	q->n++;
	m->t[id].state = M_QUEUED;
}

static uint64_t m_deliver(int qi, int holder, msec_t lease)
{
	struct mqueue *q = &m->q[qi];
	uint64_t id = q->fifo[0];
	struct mtask *t = &m->t[id];
	memmove(q->fifo, q->fifo + 1, (q->n - 1) * sizeof *q->fifo);
	q->n--;
	t->state = M_INFLIGHT;
	t->deliveries++;
	q->inflight++;
	q->gets++;
	if (t->deliveries > 1) {
		q->redeliveries++;
		m->redeliveries++;
	}
	t->leased = lease != 0;
	t->at = lease ? now + lease : NEVER;
	t->holder = lease ? M_NONE : holder;
	t->seq = ++m->seq;
	return id;
}

static bool m_fits(bool picky, uint64_t id)
{
	return !picky || id % 5 != 0;
}

static void m_service(int qi)
{
	struct mqueue *q = &m->q[qi];
	bool admitted;

	if (m->defer) {
		q->dirty = true;
		return;
	}
	do {
		while (q->nwaits[WAIT_GET] && q->n) {
			struct mwaiter *w = &m->w[q->waits[WAIT_GET][0]];
			m_unwait(w);
			if (!m_fits(w->picky, q->fifo[0])) {
				m_expect(w->idx, JQ_TOO_LARGE, 0);
				continue;
			}
			m_expect(w->idx, JQ_OK, m_deliver(qi, w->holder, 0));
		}
		admitted = false;
		while (q->nwaits[WAIT_PUT] && !m_full(q)) {
			struct mwaiter *w = &m->w[q->waits[WAIT_PUT][0]];
			m_unwait(w);
			m_expect(w->idx, JQ_OK, m_enqueue_new(qi, w->item));
			admitted = true;
		}
	} while (admitted);
	while (q->nwaits[WAIT_JOIN] && m_unfinished(q) == 0) {
		struct mwaiter *w = &m->w[q->waits[WAIT_JOIN][0]];
		m_unwait(w);
		m_expect(w->idx, JQ_OK, 0);
	}
}

/* A delivered task comes back undone: head, delay, or dead letters. */
static void m_come_back(uint64_t id, msec_t delay)
{
	struct mtask *t = &m->t[id];
	int qi = t->q;
	struct mqueue *q = &m->q[qi];

	q->inflight--;
	t->leased = false;
	t->holder = M_NONE;
	if (q->max_deliveries && t->deliveries >= q->max_deliveries) {
		q->dead_lettered++;
		t->state = M_GONE;
		assert_int_not_equal(q->dead, M_OTHER);
		if (q->dead == M_NONE)
			m->dropped++;
		if (q->dead != M_NONE) {
			if (!m->q[q->dead].exists) {
				m->q[q->dead].exists = true;
				m->nexist++;
			}
			m_enqueue_new(q->dead, t->item);
			m->dl_puts++;
			m_service(q->dead);
		}
		m_service(qi);
	} else if (delay) {
		t->state = M_DELAYED;
		t->at = now + delay;
		q->delayed++;
	} else {
		m_push_head(qi, id);
		m_service(qi);
	}
}

static msec_t m_next_deadline(int *waiter, uint64_t *task)
{
	msec_t best = NEVER;
	*waiter = M_NONE;
	*task = 0;
	for (uint64_t id = 1; id < m->next_id; id++) {
		struct mtask *t = &m->t[id];
		bool timed = t->state == M_DELAYED ||
		             (t->state == M_INFLIGHT && t->leased);
		if (timed && t->at < best) {
			best = t->at;
			*task = id;
		}
	}
	for (int i = 0; i < M_WAITERS; i++)
		if (m->w[i].parked && m->w[i].at < best) {
			best = m->w[i].at;
			*waiter = i;
			*task = 0;
		}
	return best;
}

/* A fresh deadline now + 4k + residue, or 0 if none is found. */
static msec_t m_fresh(unsigned residue)
{
	for (int tries = 0; tries < 20; tries++) {
		msec_t d = 4 * (1 + rnd(60)) + residue;
		msec_t at = now + d;
		if (at >= M_TIME_SLOTS)
			return 0;
		if (!(m->used[at / 8] & (1u << (at % 8)))) {
			m->used[at / 8] |= (unsigned char)(1u << (at % 8));
			return d;
		}
	}
	return 0;
}

static struct mwaiter *m_free_waiter(void)
{
	int i = (int)rnd(M_WAITERS);
	for (int k = 0; k < M_WAITERS; k++) {
		struct mwaiter *w = &m->w[(i + k) % M_WAITERS];
		if (!w->parked) {
			memset(&w->w, 0, sizeof w->w);
			w->w.done = m_engine_done;
			return w;
		}
	}
	return NULL;
}

static struct mwaiter *m_parked_waiter(void)
{
	int i = (int)rnd(M_WAITERS);
	for (int k = 0; k < M_WAITERS; k++) {
		struct mwaiter *w = &m->w[(i + k) % M_WAITERS];
		if (w->parked)
			return w;
	}
	return NULL;
}

static msec_t m_wait_timeout(void)
{
	return rnd(3) ? 4 * rnd(40) + 3 : NEVER;
}

/* A task id to finish or release: mostly one in flight, else any. */
static uint64_t m_pick_task(void)
{
	uint64_t n = m->next_id - 1;
	if (n && rnd(5)) {
		uint64_t start = rnd((unsigned)n);
		for (uint64_t k = 0; k < n; k++) {
			uint64_t id = 1 + (start + k) % n;
			if (m->t[id].state == M_INFLIGHT)
				return id;
		}
	}
	return rnd((unsigned)m->next_id + 3);
}

/* engine_queue as the model sees it: M_NONE for too_many_queues. */
static int m_queue(struct engine *e, int qi, bool create, struct queue **q)
{
	const char *name = m_names[qi];
	int rc = engine_queue(e, name, strlen(name), create, q);
	if (m->q[qi].exists || !create) {
		assert_int_equal(rc, JQ_OK);
		assert_int_equal(*q != NULL, m->q[qi].exists);
		return m->q[qi].exists ? qi : M_NONE;
	}
	if (m->nexist >= model_conf.max_queues) {
		assert_int_equal(rc, JQ_TOO_MANY_QUEUES);
		return M_NONE;
	}
	assert_int_equal(rc, JQ_OK);
	m->q[qi].exists = true;
	m->nexist++;
	return qi;
}

static bool m_picky_fits(void *ctx, const struct delivery *d)
{
	(void)ctx;
	return m_fits(true, d->task);
}

static void m_step_put(struct engine *e)
{
	int qi = (int)rnd(M_QUEUES);
	struct queue *eq;
	if (m_queue(e, qi, true, &eq) == M_NONE)
		return;
	struct mqueue *q = &m->q[qi];
	static unsigned items;
	unsigned item = ++items;
	char text[BIG_TEXT_MAX];
	m_item_text(item, text, sizeof text);
	struct mwaiter *w = rnd(5) < 2 ? m_free_waiter() : NULL;
	msec_t timeout = m_wait_timeout();
	if (w)
		w->w.timeout = timeout;
	uint64_t task = 0;
	int rc = engine_put(e, eq, text, strlen(text), w ? &w->w : NULL, &task);

	if (m_full(q) || q->nwaits[WAIT_PUT]) {
		if (!w) {
			assert_int_equal(rc, JQ_FULL);
			return;
		}
		assert_int_equal(rc, JQ_PARKED);
		w->item = item;
		m_park(w, WAIT_PUT, qi, timeout);
		return;
	}
	assert_int_equal(rc, JQ_OK);
	assert_int_equal(task, m_enqueue_new(qi, item));
	m_service(qi);
}

static void m_step_get(struct engine *e)
{
	int qi = (int)rnd(M_QUEUES);
	struct queue *eq;
	if (m_queue(e, qi, true, &eq) == M_NONE)
		return;
	struct mqueue *q = &m->q[qi];
	struct mwaiter *w = rnd(2) ? m_free_waiter() : NULL;
	int holder = rnd(3) ? (int)rnd(M_HOLDERS) : M_NONE;
	bool picky = rnd(5) == 0;
	msec_t lease = !w && rnd(3) == 0 ? m_fresh(1) : 0;
	msec_t timeout = m_wait_timeout();
	struct take tk = {
		.holder = holder == M_NONE ? NULL : &m->h[holder],
		.lease = lease,
		.fits = picky ? m_picky_fits : NULL,
	};
	struct delivery d;
	if (w)
		w->w.timeout = timeout;
	int rc = engine_get(e, eq, &tk, w ? &w->w : NULL, &d);

	if (!q->n || q->nwaits[WAIT_GET]) {
		if (!w) {
			assert_int_equal(rc, JQ_EMPTY);
			return;
		}
		assert_int_equal(rc, JQ_PARKED);
		w->holder = holder;
		w->picky = picky;
		m_park(w, WAIT_GET, qi, timeout);
		return;
	}
	if (!m_fits(picky, q->fifo[0])) {
		assert_int_equal(rc, JQ_TOO_LARGE);
		return;
	}
	assert_int_equal(rc, JQ_OK);
	uint64_t id = m_deliver(qi, holder, lease);
	char text[BIG_TEXT_MAX];
	m_item_text(m->t[id].item, text, sizeof text);
	assert_int_equal(d.task, id);
	assert_int_equal(d.deliveries, m->t[id].deliveries);
	assert_int_equal(d.item_len, strlen(text));
	assert_memory_equal(d.item, text, d.item_len);
	m_service(qi);
}

static void m_step_task_done(struct engine *e)
{
	uint64_t id = m_pick_task(), left = UINT64_MAX;
	int rc = engine_task_done(e, id, &left);
	if (id == 0 || id >= m->next_id || m->t[id].state != M_INFLIGHT) {
		assert_int_equal(rc, JQ_UNKNOWN_TASK);
		return;
	}
	assert_int_equal(rc, JQ_OK);
	struct mtask *t = &m->t[id];
	struct mqueue *q = &m->q[t->q];
	t->state = M_GONE;
	t->leased = false;
	t->holder = M_NONE;
	q->inflight--;
	q->task_dones++;
	assert_int_equal(left, m_unfinished(q));
	m_service(t->q);
}

static void m_step_release(struct engine *e)
{
	uint64_t id = m_pick_task();
	msec_t delay = rnd(3) ? 0 : m_fresh(2);
	int rc = engine_release(e, id, delay);
	if (id == 0 || id >= m->next_id || m->t[id].state != M_INFLIGHT) {
		assert_int_equal(rc, JQ_UNKNOWN_TASK);
		return;
	}
	assert_int_equal(rc, JQ_OK);
	m->q[m->t[id].q].releases++;
	m_come_back(id, delay);
}

static void m_step_advance(struct engine *e)
{
	now += 4 * (msec_t)rnd(13);
	engine_advance(e);
	for (int guard = 0; guard < 100000; guard++) {
		int wi;
		uint64_t id;
		msec_t at = m_next_deadline(&wi, &id);
		if (at > now)
			return;
		if (wi != M_NONE) {
			static const int code[] = {
				[WAIT_PUT] = JQ_FULL, [WAIT_GET] = JQ_EMPTY,
				[WAIT_JOIN] = JQ_TIMEOUT,
			};
			m_unwait(&m->w[wi]);
			m_expect(wi, code[m->w[wi].kind], 0);
		} else if (m->t[id].state == M_DELAYED) {
			m->q[m->t[id].q].delayed--;
			m_push_head(m->t[id].q, id);
			m_service(m->t[id].q);
		} else {
			m_come_back(id, 0);
		}
	}
	fail_msg("deadlines do not end");
}

static int by_seq_desc(const void *a, const void *b)
{
	uint64_t x = m->t[*(const uint64_t *)a].seq;
	uint64_t y = m->t[*(const uint64_t *)b].seq;
	return x < y ? 1 : x > y ? -1 : 0;
}

static void m_drop_holder(struct engine *e, int h)
{
	static uint64_t held[M_TASKS];
	size_t n = 0;

	engine_drop_holder(e, &m->h[h]);
	for (uint64_t id = 1; id < m->next_id; id++)
		if (m->t[id].state == M_INFLIGHT && m->t[id].holder == h)
			held[n++] = id;
	qsort(held, n, sizeof *held, by_seq_desc);
	/* All come back before anyone is served: the oldest is first. */
	m->defer = true;
	for (size_t i = 0; i < n; i++)
		m_come_back(held[i], 0);
	m->defer = false;
	for (int qi = 0; qi < M_QUEUES; qi++)
		if (m->q[qi].dirty) {
			m->q[qi].dirty = false;
			m_service(qi);
		}
}

static void m_step_join(struct engine *e)
{
	int qi = (int)rnd(M_QUEUES);
	struct queue *eq;
	struct mwaiter *w = rnd(2) ? m_free_waiter() : NULL;
	msec_t timeout = m_wait_timeout();
	if (w)
		w->w.timeout = timeout;
	m_queue(e, qi, false, &eq);
	int rc = engine_join(e, eq, w ? &w->w : NULL);
	struct mqueue *q = &m->q[qi];
	if (!q->exists || m_unfinished(q) == 0) {
		assert_int_equal(rc, JQ_OK);
	} else if (!w) {
		assert_int_equal(rc, JQ_TIMEOUT);
	} else {
		assert_int_equal(rc, JQ_PARKED);
		m_park(w, WAIT_JOIN, qi, timeout);
	}
}

static void m_step_end_wait(struct engine *e, bool expire)
{
	static const int code[] = {
		[WAIT_PUT] = JQ_FULL, [WAIT_GET] = JQ_EMPTY,
		[WAIT_JOIN] = JQ_TIMEOUT,
	};
	struct mwaiter *w = m_parked_waiter();
	if (!w)
		return;
	if (expire) {
		engine_expire(e, &w->w);
		m_expect(w->idx, code[w->kind], 0);
	} else {
		engine_cancel(e, &w->w);
	}
	m_unwait(w);
}

static void m_step_cancel_all(struct engine *e)
{
	engine_cancel_waiters(e, JQ_SHUTTING_DOWN);
	for (int i = 0; i < M_WAITERS; i++)
		if (m->w[i].parked) {
			m_unwait(&m->w[i]);
			m_expect(i, JQ_SHUTTING_DOWN, 0);
		}
}

/* A declare with random settings; a max_deliveries always comes with a
 * dead-letter queue the model knows. */
static void m_step_declare(struct engine *e)
{
	int qi = (int)rnd(M_QUEUES);
	struct mqueue *q = &m->q[qi];
	const struct queue_conf *c = m_conf(qi);
	struct queue_conf w = { .name = (char *)q->name };
	int dead = M_NONE;
	if (rnd(2)) {
		w.has_maxsize = true;
		w.maxsize = rnd(4);
	}
	if (rnd(2)) {
		w.has_max_deliveries = true;
		w.max_deliveries = rnd(3);
	}
	if (rnd(2) || w.max_deliveries) {
		dead = (qi + 1 + (int)rnd(M_QUEUES - 1)) % M_QUEUES;
		w.dead_letter = (char *)m_names[dead];
	}

	struct declare_result r;
	char dl[140];
	int rc = declare(e, &w, &r, dl);

	/* What it is held to: the queue's own, or the configuration's. */
	struct mqueue was = *q;
	if (!q->exists)
		m_settings(qi, NULL);
	const char *conflict =
		w.has_maxsize && w.maxsize != q->maxsize &&
		(q->exists || (c && c->has_maxsize)) ? "maxsize" :
		w.has_max_deliveries && w.max_deliveries != q->max_deliveries &&
		(q->exists || (c && c->has_max_deliveries)) ? "max_deliveries" :
		w.dead_letter && dead != q->dead &&
		(q->exists || (c && c->dead_letter)) ? "dead_letter" : NULL;
	if (conflict) {
		assert_int_equal(rc, JQ_CONFLICT);
		assert_string_equal(r.conflict, conflict);
	} else if (!q->exists && m->nexist >= model_conf.max_queues) {
		assert_int_equal(rc, JQ_TOO_MANY_QUEUES);
	} else {
		assert_int_equal(rc, JQ_OK);
		assert_int_equal(r.created, !q->exists);
		if (!q->exists) {
			q->exists = true;
			m->nexist++;
			m->declared++;
			m_settings(qi, &w);
		}
		assert_int_equal(r.settings.maxsize, q->maxsize);
		assert_int_equal(r.settings.max_deliveries, q->max_deliveries);
		return;
	}
	if (!was.exists) {   /* as it was: nothing changed */
		q->maxsize = was.maxsize;
		q->max_deliveries = was.max_deliveries;
		q->dead = was.dead;
	}
}

static void m_step_purge(struct engine *e)
{
	int qi = (int)rnd(M_QUEUES);
	struct mqueue *q = &m->q[qi];
	struct queue *eq;
	m_queue(e, qi, false, &eq);
	uint64_t n = engine_purge(e, eq);
	assert_int_equal(n, q->exists ? q->n : 0);
	for (size_t i = 0; i < q->n; i++)
		m->t[q->fifo[i]].state = M_GONE;
	q->purged += q->n;
	q->n = 0;
	if (q->exists)
		m_service(qi);
}

static void m_step_delete(struct engine *e)
{
	int qi = (int)rnd(M_QUEUES);
	struct mqueue *q = &m->q[qi];
	struct queue *eq;
	if (m_queue(e, qi, false, &eq) == M_NONE)
		return;
	int rc = engine_delete(e, eq);
	if (m_unfinished(q)) {
		assert_int_equal(rc, JQ_CONFLICT);
		return;
	}
	assert_int_equal(rc, JQ_OK);
	assert_int_equal(q->nwaits[WAIT_PUT] + q->nwaits[WAIT_JOIN], 0);
	while (q->nwaits[WAIT_GET]) {
		struct mwaiter *w = &m->w[q->waits[WAIT_GET][0]];
		m_unwait(w);
		m_expect(w->idx, JQ_EMPTY, 0);
	}
	m->gone_puts += q->puts;
	m->gone_task_dones += q->task_dones;
	m->gone_purged += q->purged;
	m->deletes++;
	m->nexist--;
	struct mqueue fresh = { .name = q->name };
	memcpy(q, &fresh, sizeof fresh);   /* its figures from zero */
	m_settings(qi, NULL);
}

static int by_waiter(const void *a, const void *b)
{
	const struct event *x = a, *y = b;
	return x->waiter - y->waiter;
}

/* The done() calls of one step, in any order across waiters. */
static void m_compare_events(unsigned step)
{
	qsort(m->want, m->nwant, sizeof *m->want, by_waiter);
	qsort(m->got, m->ngot, sizeof *m->got, by_waiter);
	if (m->nwant != m->ngot)
		fail_msg("step %u: %zu wake-ups, the model wants %zu", step,
		         m->ngot, m->nwant);
	for (size_t i = 0; i < m->nwant; i++) {
		struct event *w = &m->want[i], *g = &m->got[i];
		if (w->waiter != g->waiter || w->code != g->code ||
		    w->task != g->task || w->deliveries != g->deliveries ||
		    strcmp(w->item, g->item) != 0)
			fail_msg("step %u: waiter %d got %d task %llu "
			         "(%u, %s); model: waiter %d %d task %llu "
			         "(%u, %s)", step,
			         g->waiter, g->code,
			         (unsigned long long)g->task, g->deliveries,
			         g->item, w->waiter, w->code,
			         (unsigned long long)w->task, w->deliveries,
			         w->item);
	}
	m->nwant = m->ngot = 0;
}

static void m_compare_queues(struct engine *e, unsigned step)
{
	for (int qi = 0; qi < M_QUEUES; qi++) {
		struct mqueue *q = &m->q[qi];
		struct queue *eq;
		struct queue_stats s;
		m_queue(e, qi, false, &eq);
		engine_queue_stats(e, eq, q->name, strlen(q->name), &s);
		/* A queue that does not exist reads as empty, with the maxsize
		 * of its configuration: what a new one would get. */
		uint64_t want[] = {
			q->n, q->inflight, q->delayed, m_unfinished(q),
			q->maxsize, q->exists ? q->max_deliveries : 0,
			q->puts, q->gets, q->task_dones,
			q->releases, q->redeliveries, q->dead_lettered,
			q->purged, q->nwaits[WAIT_PUT], q->nwaits[WAIT_GET],
			q->nwaits[WAIT_JOIN],
		};
		uint64_t got[] = {
			s.qsize, s.inflight, s.delayed, s.unfinished,
			s.maxsize, s.max_deliveries, s.puts, s.gets,
			s.task_dones, s.releases, s.redeliveries,
			s.dead_lettered, s.purged, s.waiting_puts,
			s.waiting_gets, s.waiting_joins,
		};
		for (size_t i = 0; i < LEN(want); i++)
			if (want[i] != got[i])
				fail_msg("step %u: queue %s figure %zu is "
				         "%llu, the model says %llu", step,
				         q->name, i,
				         (unsigned long long)got[i],
				         (unsigned long long)want[i]);
		if (eq) {
			struct queue_settings set = engine_queue_settings(e, eq);
			char dead[32];
			snprintf(dead, sizeof dead, "%s.dead", q->name);
			const char *want_dl = q->dead == M_NONE ? NULL :
			                      q->dead == M_OTHER ? dead :
			                      m_names[q->dead];
			if (!want_dl || !set.dead_letter)
				assert_ptr_equal(set.dead_letter, want_dl);
			else
				assert_string_equal(set.dead_letter, want_dl);
		}
	}
	int wi;
	uint64_t id;
	assert_int_equal(engine_next_deadline(e), m_next_deadline(&wi, &id));
	check_engine(e);
}

static struct engine *m_init(void **state)
{
	m = calloc(1, sizeof *m);
	assert_non_null(m);
	m->rng = UINT64_C(0x2545F4914F6CDD1D);
	m->next_id = 1;
	for (int qi = 0; qi < M_QUEUES; qi++) {
		m->q[qi].name = m_names[qi];
		m_settings(qi, NULL);
	}
	assert_int_equal(m->q[0].dead, 4);   /* a -> a.dead */
	assert_int_equal(m->q[1].dead, M_NONE);   /* b's are dropped */
	assert_int_equal(m->q[3].dead, 5);   /* d -> grave */
	for (int i = 0; i < M_WAITERS; i++)
		m->w[i].idx = i;
	now = 4000;
	struct engine *e = restart(state, &model_conf);
	for (int qi = 0; qi < 4; qi++) {
		struct queue *q;
		assert_int_equal(m_queue(e, qi, true, &q), qi);
	}
	return e;
}

static void random_ops_match_model(void **state)
{
	struct engine *e = m_init(state);

	for (unsigned step = 0; step < M_STEPS; step++) {
		unsigned r = rnd(106);
		if (r >= 104)
			m_step_delete(e);
		else if (r >= 102)
			m_step_purge(e);
		else if (r >= 100)
			m_step_declare(e);
		else if (r < 20)
			m_step_put(e);
		else if (r < 40)
			m_step_get(e);
		else if (r < 52)
			m_step_task_done(e);
		else if (r < 62)
			m_step_release(e);
		else if (r < 78)
			m_step_advance(e);
		else if (r < 83)
			m_drop_holder(e, (int)rnd(M_HOLDERS));
		else if (r < 89)
			m_step_join(e);
		else if (r < 93)
			m_step_end_wait(e, true);
		else if (r < 97)
			m_step_end_wait(e, false);
		else if (r < 98)
			m_step_cancel_all(e);
		else if (m->nexist >= model_conf.max_queues) {
			struct queue *q;
			assert_int_equal(engine_queue(e, "zz", 2, true, &q),
			                 JQ_TOO_MANY_QUEUES);
		}
		m_compare_events(step);
		m_compare_queues(e, step);
	}

	/*
	 * Drain: every wait ends, every lease and delay runs out, every holder
	 * lets go, and every task is finished.  Then the totals balance: each
	 * id was one put somewhere, and each ended finished, dead-lettered on
	 * to another queue (a put there) or dropped.
	 */
	m_step_cancel_all(e);
	now += 4 * (msec_t)100000;
	engine_advance(e);
	m_step_advance(e);    /* the model's side of the same deadlines */
	for (int h = 0; h < M_HOLDERS; h++)
		m_drop_holder(e, h);
	m_compare_events(M_STEPS);
	m_compare_queues(e, M_STEPS);
	for (uint64_t id = 1; id < m->next_id; id++)
		if (m->t[id].state == M_INFLIGHT) {
			uint64_t left;
			assert_int_equal(engine_task_done(e, id, &left), JQ_OK);
		}
	uint64_t puts = m->gone_puts, finished = m->gone_task_dones;
	uint64_t purged = m->gone_purged;
	for (int qi = 0; qi < M_QUEUES; qi++) {
		struct queue *eq;
		if (m_queue(e, qi, false, &eq) == M_NONE)
			continue;
		struct take tk = { 0 };
		struct delivery d;
		for (int guard = 0; guard < M_TASKS; guard++) {
			uint64_t left;
			int rc = engine_get(e, eq, &tk, NULL, &d);
			if (rc == JQ_EMPTY)
				break;
			assert_int_equal(rc, JQ_OK);
			assert_int_equal(engine_task_done(e, d.task, &left),
			                 JQ_OK);
		}
		struct queue_stats s;
		engine_queue_stats(e, eq, NULL, 0, &s);
		assert_int_equal(s.unfinished, 0);
		puts += s.puts;
		finished += s.task_dones;
		purged += s.purged;
	}
	check_engine(e);
	assert_int_equal(puts, m->next_id - 1);
	assert_int_equal(finished + purged + m->dropped,
	                 m->next_id - 1 - m->dl_puts);
	/* The run reached the interesting places. */
	assert_true(m->dl_puts > 0);
	assert_true(m->dropped > 0);
	assert_true(m->redeliveries > 0);
	assert_true(purged > 0);
	assert_true(m->deletes > 10);
	assert_true(m->declared > 0);
	engine_free(e);
	*state = NULL;
	free(m);
	m = NULL;
}

/* ---- heap ---------------------------------------------------------------- */

static void heap_check(const struct heap *h)
{
	for (size_t i = 0; i < h->len; i++) {
		assert_int_equal(h->v[i]->slot, i);
		if (i)
			assert_true(h->v[(i - 1) / 2]->at <= h->v[i]->at);
	}
}

static void heap_random_push_remove_keeps_min_on_top(void **state)
{
	(void)state;
	enum { N = 500 };
	static struct deadline d[N];
	static bool in[N];
	struct heap h = { 0 };
	uint64_t rng = 88172645463325252ULL;

	memset(in, 0, sizeof in);
	for (int step = 0; step < 100000; step++) {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		size_t i = rng % N;
		unsigned op = (unsigned)(rng >> 32) % 3;
		if (!in[i] && op) {
			d[i].at = (rng >> 16) % 64;       /* many ties */
			heap_push(&h, &d[i]);
			in[i] = true;
		} else if (in[i] && op == 0) {
			heap_remove(&h, &d[i]);
			in[i] = false;
		} else if (h.len) {                    /* pop the top */
			struct deadline *top = heap_top(&h);
			heap_remove(&h, top);
			in[top - d] = false;
		}
		msec_t min = NEVER;
		size_t n = 0;
		for (size_t k = 0; k < N; k++)
			if (in[k]) {
				n++;
				if (d[k].at < min)
					min = d[k].at;
			}
		assert_int_equal(h.len, n);
		if (n)
			assert_int_equal(heap_top(&h)->at, min);
		else
			assert_null(heap_top(&h));
		if (step % 97 == 0)
			heap_check(&h);
	}
	heap_check(&h);
	heap_free(&h);
	assert_null(h.v);
}

static void heap_pops_in_order(void **state)
{
	(void)state;
	struct deadline d[200];
	struct heap h = { 0 };

	for (int i = 0; i < 200; i++) {
		d[i].at = (msec_t)((i * 7919) % 200);
		heap_push(&h, &d[i]);
	}
	for (msec_t want = 0; want < 200; want++) {
		assert_int_equal(heap_top(&h)->at, want);
		heap_remove(&h, heap_top(&h));
		heap_check(&h);
	}
	assert_null(heap_top(&h));
	heap_free(&h);
}

/* ---- idmap --------------------------------------------------------------- */

static void *val_of(uint64_t key)
{
	/* The idmap never dereferences its values: a made-up pointer a key. */
	return (void *)(uintptr_t)(key * 16 + 8); // NOLINT(performance-no-int-to-ptr): never dereferenced
}

/* Key i of the random test: small sequential ids like the engine's for odd
 * i, huge ones for even i, never 0. */
static uint64_t key_of(size_t i)
{
	return i % 2 ? i + 1 : (uint64_t)i * 0x100000001ULL + 1;
}

static void idmap_random_ops_match_reference(void **state)
{
	(void)state;
	enum { KEYS = 5000 };
	static bool in[KEYS];
	struct idmap m_ = { 0 };
	uint64_t rng = 0x9E3779B97F4A7C15ULL;
	size_t n = 0;

	memset(in, 0, sizeof in);
	assert_null(idmap_get(&m_, 1));
	assert_null(idmap_del(&m_, 1));
	for (int step = 0; step < 100000; step++) {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		size_t i = rng % KEYS;
		uint64_t key = key_of(i);
		unsigned op = (unsigned)(rng >> 40) % 10;
		/* Phases that fill and drain: the table grows and shrinks. */
		bool filling = (step / 20000) % 2 == 0;
		if (op < (filling ? 6u : 1u)) {
			if (!in[i]) {
				idmap_put(&m_, key, val_of(key));
				in[i] = true;
				n++;
			}
		} else if (op < 8) {
			void *v = idmap_del(&m_, key);
			assert_ptr_equal(v, in[i] ? val_of(key) : NULL);
			if (in[i])
				n--;
			in[i] = false;
		} else {
			assert_ptr_equal(idmap_get(&m_, key),
			                 in[i] ? val_of(key) : NULL);
		}
		assert_int_equal(m_.len, n);
		assert_true(m_.len * 4 <= (m_.mask + 1) * 3);
		if (step % 5000 == 0)
			for (size_t k = 0; k < KEYS; k++) {
				uint64_t kk = key_of(k);
				assert_ptr_equal(idmap_get(&m_, kk),
				                 in[k] ? val_of(kk) : NULL);
			}
	}
	idmap_free(&m_);
	assert_null(m_.slots);
}

static void idmap_grows_and_shrinks(void **state)
{
	(void)state;
	struct idmap m_ = { 0 };

	for (uint64_t k = 1; k <= 10000; k++) {
		idmap_put(&m_, k, val_of(k));
		assert_true(m_.len * 4 <= (m_.mask + 1) * 3);
	}
	assert_int_equal(m_.len, 10000);
	assert_true(m_.mask + 1 >= 16384);
	for (uint64_t k = 1; k <= 9990; k++)
		assert_ptr_equal(idmap_del(&m_, k), val_of(k));
	assert_true(m_.mask + 1 <= 128);
	for (uint64_t k = 9991; k <= 10000; k++)
		assert_ptr_equal(idmap_get(&m_, k), val_of(k));
	for (uint64_t k = 9991; k <= 10000; k++)
		assert_ptr_equal(idmap_del(&m_, k), val_of(k));
	assert_int_equal(m_.len, 0);
	assert_int_equal(m_.mask + 1, 64);     /* never below the start */
	idmap_free(&m_);
}

/* 0 marks an empty slot: it is never a key, and looking it up or deleting
 * it changes nothing. */
static void idmap_zero_key_is_never_found(void **state)
{
	(void)state;
	struct idmap m_ = { 0 };

	assert_null(idmap_del(&m_, 0));
	for (uint64_t k = 1; k <= 10; k++)
		idmap_put(&m_, k, val_of(k));
	for (int i = 0; i < 5; i++) {
		assert_null(idmap_get(&m_, 0));
		assert_null(idmap_del(&m_, 0));
		assert_int_equal(m_.len, 10);
	}
	for (uint64_t k = 1; k <= 10; k++)
		assert_ptr_equal(idmap_del(&m_, k), val_of(k));
	assert_int_equal(m_.len, 0);
	idmap_free(&m_);
}

/* The home slot idmap.c computes (Fibonacci hashing), for a 64-slot table. */
static size_t home64(uint64_t key)
{
	return (size_t)((key * UINT64_C(0x9E3779B97F4A7C15)) >> 32) & 63;
}

#define RUN 12

/* RUN keys: half homed at slot, half at the slot after it. */
static void colliding_keys(size_t slot, uint64_t keys[RUN])
{
	size_t n = 0;
	for (uint64_t k = 1; n < RUN && k < 1000000; k++)
		if (home64(k) == (n < RUN / 2 ? slot : (slot + 1) & 63))
			keys[n++] = k;
	assert_int_equal(n, RUN);
}

/* Deletes keys one by one, the pick-th (0 first, 1 middle, 2 last) of
 * those left each time, and checks every key after each deletion. */
static void delete_run(const uint64_t keys[RUN], int pick)
{
	struct idmap m_ = { 0 };
	bool in[RUN];

	for (size_t i = 0; i < RUN; i++) {
		idmap_put(&m_, keys[i], val_of(keys[i]));
		in[i] = true;
	}
	assert_int_equal(m_.mask, 63);   /* one table, so one run */
	for (size_t left = RUN; left > 0; left--) {
		size_t nth = pick == 0 ? 0 : pick == 1 ? left / 2 : left - 1;
		size_t i = 0;
		for (size_t seen = 0;; i++)
			if (in[i] && seen++ == nth)
				break;
		assert_ptr_equal(idmap_del(&m_, keys[i]), val_of(keys[i]));
		in[i] = false;
		for (size_t k = 0; k < RUN; k++)
			assert_ptr_equal(idmap_get(&m_, keys[k]),
			                 in[k] ? val_of(keys[k]) : NULL);
	}
	idmap_free(&m_);
}

/*
 * Keys that share a home slot, and keys homed just after it, form one run;
 * deleting from the run's start, middle or end must shift the rest back so
 * that every other key is still found.  Slot 63 makes the run wrap.
 */
static void idmap_delete_keeps_colliding_keys_findable(void **state)
{
	(void)state;
	uint64_t keys[RUN];

	for (size_t slot = 61; slot < 64; slot++) {
		colliding_keys(slot, keys);
		for (int pick = 0; pick < 3; pick++)
			delete_run(keys, pick);
	}
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(put_get_is_fifo),
		T(long_queue_keeps_order_across_chunks),
		T(task_ids_start_at_one_and_increase),
		T(task_ids_never_reused_across_redeliveries_and_dead_letters),
		T(deliveries_count_each_redelivery),
		T(items_are_stored_by_copy),
		T(get_on_empty_queue_is_empty),

		T(put_on_full_queue_is_full_without_waiter),
		T(put_on_full_queue_parks_waiter),
		T(blocked_puts_admitted_in_arrival_order),
		T(get_on_full_queue_admits_exactly_one_blocked_put),
		T(put_behind_waiting_puts_waits_its_turn),
		T(put_waiter_times_out_with_full),

		T(getters_served_in_arrival_order),
		T(put_wakes_oldest_getter_synchronously),
		T(new_getter_waits_behind_parked_getters),
		T(get_waiter_times_out_at_exact_deadline),
		T(join_waiter_times_out_with_timeout),
		T(zero_timeout_waiter_expires_on_next_advance),
		T(next_deadline_is_the_earliest),
		T(never_timeout_never_fires),

		T(join_ok_when_nothing_unfinished),
		T(join_without_waiter_is_timeout),
		T(parked_joiners_complete_on_last_task_done),
		T(join_waits_for_delayed_and_released_tasks),
		T(join_after_put_get_task_done),

		T(task_done_returns_unfinished),
		T(task_done_finds_task_in_any_queue),
		T(task_done_unknown_task),
		T(task_zero_is_unknown_and_harmless),

		T(release_puts_task_at_head),
		T(release_unknown_task),
		T(release_with_delay_counts_delayed),
		T(delayed_task_enters_head_even_if_full),
		T(delayed_task_wakes_waiting_getter),
		T(release_wakes_waiting_getter),

		T(lease_expiry_returns_task_to_head),
		T(lease_expiry_wakes_waiting_getter),
		T(parked_getter_lease_starts_at_delivery),
		T(parked_getter_with_holder_holds_task),
		T(task_done_before_lease_expiry_cancels_it),
		T(release_of_leased_task_cancels_lease),
		T(lease_wins_over_holder),

		T(drop_holder_returns_oldest_delivery_first),
		T(drop_holder_across_queues),
		T(drop_holder_serves_waiting_getters_oldest_first),
		T(leased_tasks_survive_drop_holder),
		T(unheld_unleased_task_stays_in_flight),
		T(finished_tasks_leave_their_holder),
		T(delayed_release_leaves_its_holder),
		T(holder_is_reusable_after_drop),
		T(returned_tasks_enter_full_queue),

		T(task_within_max_deliveries_comes_back),
		T(release_after_max_deliveries_dead_letters),
		T(lease_expiry_after_max_deliveries_dead_letters),
		T(drop_holder_after_max_deliveries_dead_letters),
		T(delayed_release_after_max_deliveries_dead_letters_at_once),
		T(dead_letter_wakes_joiners),
		T(dead_letter_wakes_getter_of_dead_queue),
		T(dead_letter_off_drops_task),
		T(dead_letter_custom_name),
		T(default_max_deliveries_spares_dead_queues),
		T(dead_letter_enters_past_max_queues_and_when_full),

		T(too_many_queues),
		T(lookup_without_create_gives_null),
		T(stats_of_unknown_queue_use_configured_maxsize),
		T(queues_listed_in_creation_order),

		T(declare_makes_a_queue_with_the_settings_named),
		T(declare_of_an_existing_queue_compares_what_it_names),
		T(declare_never_changes_what_the_configuration_sets),
		T(reload_puts_the_configuration_over_declared_settings),
		T(declare_counts_against_max_queues),
		T(dry_declare_changes_nothing),
		T(purge_finishes_queued_tasks_only),
		T(purge_wakes_blocked_puts_and_joins),
		T(delete_needs_a_queue_with_nothing_unfinished),
		T(delete_answers_waiting_getters_empty),
		T(deleted_queue_frees_its_name_id_and_place),

		T(fits_refusal_on_immediate_get_changes_nothing),
		T(fits_sees_the_next_delivery_count),
		T(fits_refusal_on_parked_getter_keeps_item_for_next),

		T(cancel_removes_waiter_silently),
		T(expire_ends_wait_with_timeout_code),
		T(cancel_waiters_reaches_every_waiter_once),

		T(stats_count_every_op),
		T(stats_count_waiters),
		T(free_with_everything_outstanding),

		T(log_tells_new_queues_and_puts),
		T(log_tells_blocked_put_when_admitted),
		T(log_tells_take_and_done),
		T(log_tells_back_for_each_way_back),
		T(log_tells_delay_with_its_deadline),
		T(log_tells_dead_letters_with_and_without_a_queue),
		T(log_tells_nothing_of_what_changes_nothing),
		T(log_tells_settings_purges_and_drops),
		T(replay_queue_takes_ids_in_order),
		T(replay_task_places_each_state),
		T(replay_task_rejects_what_does_not_fit),
		T(replay_take_delivers_the_head_only),
		T(replay_done_needs_a_task_in_flight),
		T(replay_back_returns_to_the_head),
		T(replay_delay_needs_a_task_in_flight),
		T(replay_dead_moves_or_drops),
		T(replay_dead_rejects_what_does_not_fit),
		T(replay_dead_rejects_a_new_id_past_the_limit),
		T(replay_queue_takes_free_ids),
		T(replay_settings_purge_and_drop_need_their_queue),
		T(replay_next_id_only_raises),
		T(replay_end_returns_tasks_in_flight_oldest_first),
		T(dump_then_replay_gives_the_same_state),
		T(dump_of_an_empty_engine),
		T(dump_keeps_free_ids_and_declared_settings),
		T(live_bytes_come_back_to_zero),
		T(log_replay_reproduces_a_random_history),

		T(random_ops_match_model),

		cmocka_unit_test(heap_random_push_remove_keeps_min_on_top),
		cmocka_unit_test(heap_pops_in_order),
		cmocka_unit_test(idmap_random_ops_match_reference),
		cmocka_unit_test(idmap_grows_and_shrinks),
		cmocka_unit_test(idmap_zero_key_is_never_found),
		cmocka_unit_test(idmap_delete_keeps_colliding_keys_findable),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
