/*
 * engine_int.h - the engine's own header: its state (struct engine, its
 * queues and tasks) and the few functions that engine.c, the queue
 * engine, shares with engine_replay.c, its journal's side (replay and
 * dump).  Nothing else includes it: the rest of joinqd knows the engine
 * by engine.h alone.
 */
#ifndef JQ_ENGINE_INT_H
#define JQ_ENGINE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "heap.h"
#include "idmap.h"
#include "itemq.h"

/* A struct task is never queued: its queued items are in the itemq. */
enum task_state {
	TASK_INFLIGHT = ENGINE_INFLIGHT,
	TASK_DELAYED = ENGINE_DELAYED,
};
enum deadline_kind { DL_TASK, DL_WAITER };

struct task {
	uint64_t id;
	union {
		struct {                  /* in flight without a lease */
			struct task *next, *prev;   /* its holder's list */
			struct holder *holder;
		} held;
		struct deadline timer;    /* in flight with a lease, or delayed */
	} u;
	uint32_t qid;                 /* its queue: engine.by_id[qid] */
	uint32_t deliveries;
	uint32_t len;
	uint8_t state;
	bool leased;
	char item[];
};

struct waitlist {
	struct waiter *head, *tail;
};

struct queue {
	uint32_t id;                  /* engine.by_id[id] */
	struct queue *hnext;          /* hash chain */
	struct itemq items;           /* the queued items, head first */
	uint64_t inflight, delayed;
	/* In force (apply_conf); the dead-letter queue is found when a task
	 * needs it (settings_of). */
	uint64_t maxsize;
	unsigned max_deliveries;
	struct queue_conf declared;   /* by declare; its name is not set */
	struct waitlist puts, gets, joins;
	uint64_t n_puts, n_gets, n_task_dones, n_releases, n_redeliveries,
	         n_dead_lettered, n_purged;
	struct queue *dnext;          /* engine.deferred */
	bool deferred;
	size_t len;
	char name[];
};

struct engine {
	const struct engine_conf *conf;
	struct queue **buckets;
	size_t nbuckets, nqueues;     /* nqueues: the queues that exist */
	struct queue **by_id;         /* queues by id; NULL: a free id */
	uint32_t nids, ids_cap;       /* ids handed out (by_id's length) */
	uint32_t free_hint;           /* no id below it is free */
	char *scratch;                /* a NAME.dead built for settings_of */
	size_t scratch_cap;
	struct idmap out;             /* tasks out of their queue: in flight
	                                 or delayed (task->state tells) */
	struct heap deadlines;
	const struct engine_log *log; /* told of every change, or NULL */
	uint64_t live_bytes;          /* items and ids of the tasks held */
	uint64_t next_id;
	bool defer;                   /* service() only notes the queue */
	struct queue *deferred;       /* queues to serve when defer ends */
};

/* Tells the journal (if any) of a change just made. */
#define LOG(e, fn, ...) \
	do { \
		if ((e)->log) \
			(e)->log->fn((e)->log->ctx, __VA_ARGS__); \
	} while (0)

/* An item's weight in live_bytes, queued or out: its text and its id and
 * counts.  It stays counted while it moves between the itemq and a task. */
#define ITEM_BYTES(len) ((uint64_t)(len) + 24)

/* Items of this many bytes or more are queued in their task's block
 * (engine.c's header says why). */
#define TASK_BLOCK_MIN 4096

static inline uint64_t qsize(const struct queue *q)
{
	return itemq_count(&q->items);
}

static inline uint64_t unfinished(const struct queue *q)
{
	return qsize(q) + q->inflight + q->delayed;
}

static inline struct queue *queue_of(const struct engine *e,
                                     const struct task *t)
{
	return e->by_id[t->qid];
}

static inline bool declares_any(const struct queue_conf *d)
{
	return d->has_maxsize || d->has_max_deliveries || d->dead_letter;
}

/* engine.c */
struct queue *eng_find_queue(const struct engine *e, const char *name,
                             size_t len);
/* qid, a free id or the next new one, has its place in by_id. */
void eng_grow_ids(struct engine *e, uint32_t qid);
/* Makes queue name with id qid, a free id or the next new one (not told
 * to the log). */
struct queue *eng_add_queue(struct engine *e, uint32_t qid, const char *name,
                            size_t len);
/* A queue with nothing unfinished and no waiter leaves: its id is free. */
void eng_remove_queue(struct engine *e, struct queue *q);
/* d's settings as q's own, the strings copied. */
void eng_declare_settings(struct engine *e, struct queue *q,
                          const struct queue_conf *d);
/* Every queued task of q finished: out of the state and the live bytes. */
uint64_t eng_purge(struct engine *e, struct queue *q);
struct task *eng_task_new(const char *item, size_t len);
/* A task leaves the state (finished, or dropped as a dead letter). */
void eng_task_free(struct engine *e, struct task *t);
/* The head entry of q (there is one) out of the queue as a task in
 * flight, one more delivery counted, in the in-flight table. */
struct task *eng_take_head(struct engine *e, struct queue *q);
/* A task goes back to the head of its queue as an entry. */
void eng_push_head(struct engine *e, struct task *t);
/* An in-flight task, or NULL for an id that names none. */
struct task *eng_inflight(const struct engine *e, uint64_t id);

#endif
