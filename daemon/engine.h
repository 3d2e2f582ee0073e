/*
 * engine.h - the queue engine: named, bounded, joinable queues.
 *
 * Owns the queues (made, declared with settings of their own, purged,
 * deleted), their tasks (queued, kept in an itemq.h store per queue; in
 * flight; delayed), task ids, the in-flight table, leases, delays, dead
 * letters, the per-queue counters, and the waiters of blocked put, get and
 * join with their timeouts.  It knows
 * nothing of sockets, JSON or the event loop: it reads the time from the
 * clock it is given (monotonic milliseconds), the caller runs
 * engine_advance() when engine_next_deadline() comes, and learns of
 * completed waits through a waiter's callback.
 *
 * Invariant, per queue, at every return: unfinished = queued + inflight +
 * delayed.  Task ids only grow and are never reused.
 *
 * Wake-ups are synchronous: a put that meets a waiting getter delivers to it
 * before engine_put() returns, by calling the getter's done().  A done()
 * callback may record the result and schedule work, but must not call back
 * into the engine.
 */
#ifndef JQ_ENGINE_H
#define JQ_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errcode.h"

typedef uint64_t msec_t;
#define NEVER UINT64_MAX
#define JQ_PARKED (-1)   /* an op's result: the waiter was parked */
/* Task ids are positive integers below 2^53 (PROTOCOL.md, put). */
#define TASK_ID_MAX ((UINT64_C(1) << 53) - 1)

struct engine;
struct queue;
struct task;

/* Per-queue settings from the configuration, or named by a declare.  Each
 * has_ flag stands by its value for the reader; a config holds a few, so
 * the padding costs nothing.  A queue's setting in force is the
 * configuration's, else the declared one, else the default. */
struct queue_conf {   /* NOLINT(clang-analyzer-optin.performance.Padding) */
	char *name;
	bool has_maxsize;          /* else default_maxsize applies */
	uint64_t maxsize;          /* 0: unbounded */
	bool has_max_deliveries;   /* else default_max_deliveries applies */
	unsigned max_deliveries;   /* 0: unlimited, no dead letters */
	/* NULL: NAME.dead.  In the configuration "" or "off" is none (the
	 * task is dropped); a declared one is always a queue's name. */
	char *dead_letter;
};

struct engine_conf {
	msec_t (*clock)(void);             /* monotonic milliseconds */
	uint64_t default_maxsize;
	/* For queues with no max_deliveries of their own, except dead-letter
	 * queues (names ending in ".dead"), so that letters do not cascade. */
	unsigned default_max_deliveries;
	unsigned max_queues;
	const struct queue_conf *queues;   /* per-queue settings, borrowed */
	size_t nqueues;
};

/* One entry of the engine's deadline heap (heap.h). */
struct deadline {
	msec_t at;
	uint32_t slot;             /* index in the heap, for removal */
	uint32_t kind;             /* what holds it: a task or a waiter */
};

/* What a get hands out.  item points into the engine and is valid until
 * the next engine call. */
struct delivery {
	uint64_t task;
	uint32_t deliveries;
	const char *item;          /* compact JSON text */
	size_t item_len;
};

/* Holds the tasks delivered without a lease to one TCP connection: they
 * return to their queues when the holder is dropped. */
struct holder {
	struct task *tasks;
};

/* How a get takes its task. */
struct take {
	struct holder *holder;     /* keeps an unleased task; may be NULL */
	msec_t lease;              /* ms; 0: no lease */
	/* Optional: may refuse the head item (JQ_TOO_LARGE, nothing changes). */
	bool (*fits)(void *ctx, const struct delivery *d);
	void *ctx;
};

enum wait_kind { WAIT_PUT, WAIT_GET, WAIT_JOIN };

/*
 * A blocked put, get or join, embedded in the caller's own state.  The
 * caller sets timeout and done and passes it to engine_put/get/join; if the op
 * cannot complete now the waiter is parked and, later, done() is called
 * exactly once: with JQ_OK, with JQ_FULL/JQ_EMPTY/JQ_TIMEOUT when its
 * timeout runs out, with JQ_TOO_LARGE when fits() refuses the head item,
 * or with the code given to engine_cancel_waiters().
 */
struct waiter {
	msec_t timeout;            /* in: ms to wait; NEVER: forever */
	/* out: WAIT_PUT: task; WAIT_GET: delivery */
	void (*done)(struct waiter *w, int code, const struct delivery *d,
	             uint64_t task);

	/* engine-private */
	enum wait_kind kind;
	struct queue *queue;
	struct waiter *prev, *next;
	struct deadline timer;
	struct task *put_task;     /* WAIT_PUT: the item, ready to enqueue */
	struct take take;          /* WAIT_GET */
};

/* Where a task is. */
enum engine_task_state { ENGINE_QUEUED, ENGINE_INFLIGHT, ENGINE_DELAYED };

/*
 * What the engine tells a journal (journal.c) of every change, right after
 * making it in memory.  Queues are named by id, tasks by task id; times are
 * the engine clock's.  A new queue takes the lowest id no queue holds (ids
 * count from 0; a deleted queue's id is taken again), so that ids stay as
 * few as the queues that exist at once.  An id names one queue from its
 * queue() to its drop(); a task id is never taken again.
 */
struct engine_log {
	void *ctx;
	void (*queue)(void *ctx, uint32_t qid, const char *name, size_t len);
	/* the settings a declare gave queue qid as it made it (the name of
	 * d is not set) */
	void (*settings)(void *ctx, uint32_t qid, const struct queue_conf *d);
	/* a new task at the tail (a put, or a blocked put let in) */
	void (*put)(void *ctx, uint32_t qid, uint64_t task, const char *item,
	            size_t len);
	/* the head task of queue qid delivered: its deliveries + 1 */
	void (*take)(void *ctx, uint32_t qid, uint64_t task);
	void (*done)(void *ctx, uint64_t task);
	/* back to the head of its queue: released, lease out, holder gone,
	 * delay over */
	void (*back)(void *ctx, uint64_t task);
	/* released with a delay, back at until */
	void (*delay)(void *ctx, uint64_t task, msec_t until);
	/* past max_deliveries: finished in its queue and, unless dqid is -1
	 * (dropped), put on queue dqid as new_task */
	void (*dead)(void *ctx, uint64_t task, uint64_t new_task, int64_t dqid);
	/* every queued task of queue qid finished (there was one at least) */
	void (*purge)(void *ctx, uint32_t qid);
	/* queue qid deleted (it had nothing unfinished): its id is free */
	void (*drop)(void *ctx, uint32_t qid);
};

/* From now on, every change is told to log (NULL: none). */
void engine_set_log(struct engine *e, const struct engine_log *log);

/*
 * Replay: record.c rebuilds the state record by record into a fresh
 * engine, with no log set and no waiters.  Each call returns 0, or -1 when
 * the record does not fit the state (the journal is damaged).  The state
 * is taken as recorded, never decided again: a max_deliveries changed
 * since does not rewrite history.
 */
/* A queue takes qid: the lowest free id or any other no queue holds, as a
 * snapshot gives them.  With len 0 (a snapshot only), qid is an id no
 * queue holds, the next after those replayed: below the highest id in
 * use, ids need not be taken in order. */
int engine_replay_queue(struct engine *e, uint32_t qid, const char *name,
                        size_t len);
/* Declared settings of a queue that has none yet. */
int engine_replay_settings(struct engine *e, uint32_t qid,
                           const struct queue_conf *d);
/* A task as a snapshot or a put records it: queued ones at the tail. */
int engine_replay_task(struct engine *e, uint32_t qid, uint64_t task,
                       uint32_t deliveries, enum engine_task_state state,
                       msec_t until, const char *item, size_t len);
int engine_replay_take(struct engine *e, uint32_t qid, uint64_t task);
int engine_replay_done(struct engine *e, uint64_t task);
int engine_replay_back(struct engine *e, uint64_t task);
int engine_replay_delay(struct engine *e, uint64_t task, msec_t until);
int engine_replay_dead(struct engine *e, uint64_t task, uint64_t new_task,
                       int64_t dqid);
void engine_replay_next_id(struct engine *e, uint64_t next);
int engine_replay_purge(struct engine *e, uint32_t qid);
/* The queue must have nothing unfinished. */
int engine_replay_drop(struct engine *e, uint32_t qid);
/* Ends the replay: tasks that were in flight when the journal stopped go
 * back to the heads of their queues, oldest first, deliveries kept; this
 * is told to the log, so set it first. */
void engine_replay_end(struct engine *e);

/* The whole state, for a snapshot that a replay turns back into it. */
struct engine_dump {
	void *ctx;
	/* each queue by id, each followed by its declared settings if it has
	 * any; an id below the highest in use that no queue holds comes with
	 * the empty name "" */
	void (*queue)(void *ctx, uint32_t qid, const char *name, size_t len);
	void (*settings)(void *ctx, uint32_t qid, const struct queue_conf *d);
	void (*next_id)(void *ctx, uint64_t next);
	/* each queue's queued tasks in order, then its others */
	void (*task)(void *ctx, uint32_t qid, uint64_t task, uint32_t deliveries,
	             enum engine_task_state state, msec_t until, const char *item,
	             size_t len);
};
void engine_dump(const struct engine *e, const struct engine_dump *d);

/* Bytes the tasks' items and ids take: what a snapshot would hold. */
uint64_t engine_live_bytes(const struct engine *e);

/* Figures of one queue, for qsize and stats. */
struct queue_stats {
	uint64_t qsize, inflight, delayed, unfinished, maxsize, max_deliveries;
	uint64_t puts, gets, task_dones, releases, redeliveries, dead_lettered;
	uint64_t purged;           /* tasks finished by purge */
	uint64_t waiting_puts, waiting_gets, waiting_joins;
};

/* The settings of a queue in force. */
struct queue_settings {
	uint64_t maxsize;          /* 0: unbounded */
	unsigned max_deliveries;   /* 0: unlimited */
	/* Where tasks past max_deliveries go, NUL-terminated (NULL: nowhere,
	 * dropped); valid until the next engine call. */
	const char *dead_letter;
};

/* The conf (and what it points to) must outlive the engine. */
struct engine *engine_new(const struct engine_conf *conf);
void engine_free(struct engine *e);

/* Takes new settings (a reload): every queue's maxsize, max_deliveries and
 * dead-letter queue follow them (over the declared ones, as always), and
 * blocked puts that now fit go in.  The same rule as engine_new: conf must
 * outlive the engine. */
void engine_reconfigure(struct engine *e, const struct engine_conf *conf);

/*
 * Finds a queue by name.  With create, makes it on first use (JQ_OK) or
 * answers JQ_TOO_MANY_QUEUES; without, *q is NULL for an unknown name and
 * the caller answers as for an empty queue.
 */
int engine_queue(struct engine *e, const char *name, size_t len, bool create,
                 struct queue **q);

/* What a declare found. */
struct declare_result {
	struct queue *queue;       /* JQ_OK without dry: the queue */
	bool created;              /* JQ_OK: the queue is new (dry: would be) */
	/* JQ_CONFLICT: the setting that differs ("maxsize", "max_deliveries",
	 * "dead_letter"), and whether the configuration sets it */
	const char *conflict;
	bool configured;
	/* JQ_OK: the queue's settings; JQ_CONFLICT: those it has, or for a
	 * queue that does not exist, those the configuration gives */
	struct queue_settings settings;
};

/*
 * declare: the queue named want->name with the settings want names (its
 * has_ flags; dead_letter NULL: not named).  When it exists, each named
 * setting must be the one it has; when it does not, each one the
 * configuration sets for that name must be the configuration's; else
 * JQ_CONFLICT, and nothing changes.  A queue that does not exist is made
 * with the named settings as its declared ones (JQ_TOO_MANY_QUEUES past
 * max_queues).  With dry, nothing changes: r says what a declare would do,
 * for a reply judged before the change.
 */
int engine_declare(struct engine *e, const struct queue_conf *want, bool dry,
                   struct declare_result *r);

/* purge: every queued task of q (NULL: none) finished; how many.  Blocked
 * puts and joins are let go as room and the unfinished count allow. */
uint64_t engine_purge(struct engine *e, struct queue *q);

/* delete: q, which must have no unfinished task (else JQ_CONFLICT and
 * nothing changes), is gone with its settings and counters; its waiting
 * getters are answered JQ_EMPTY (no put or join can be waiting on it).
 * JQ_OK: q is freed, and its name free for a new queue. */
int engine_delete(struct engine *e, struct queue *q);

/*
 * put: enqueues a copy of item (compact JSON) at the tail.  JQ_OK with
 * *task set; JQ_FULL when the queue holds maxsize items and w is NULL;
 * JQ_UNAVAILABLE when task ids have run out; with w, a full queue parks
 * w and returns JQ_PARKED (w->done() reports).
 */
int engine_put(struct engine *e, struct queue *q, const char *item,
               size_t len, struct waiter *w, uint64_t *task);

/*
 * get: delivers the head item into *d, taken as t says: a holder keeps an
 * unleased task until it is finished, released or the holder dropped; a
 * lease returns it when it runs out.  JQ_EMPTY when nothing is queued and
 * w is NULL; with w, parks it and returns JQ_PARKED.  JQ_TOO_LARGE when
 * t->fits refuses the head item.
 */
int engine_get(struct engine *e, struct queue *q, const struct take *t,
               struct waiter *w, struct delivery *d);

/* join: JQ_OK when the queue has no unfinished task; JQ_TIMEOUT when it
 * has and w is NULL; with w, parks it and returns JQ_PARKED. */
int engine_join(struct engine *e, struct queue *q, struct waiter *w);

/* task_done: JQ_OK with *unfinished of the task's queue, or
 * JQ_UNKNOWN_TASK when the task is not delivered and undone. */
int engine_task_done(struct engine *e, uint64_t task, uint64_t *unfinished);

/* release: the task goes back to the head of its queue, or, with a delay
 * (ms), after the delay; or to the dead-letter queue when its deliveries
 * are used up.  JQ_OK or JQ_UNKNOWN_TASK. */
int engine_release(struct engine *e, uint64_t task, msec_t delay);

/* Ends a parked wait now, as if its timeout had run out. */
void engine_expire(struct engine *e, struct waiter *w);

/* Removes a parked waiter without calling its done(). */
void engine_cancel(struct engine *e, struct waiter *w);

/* Calls done(code) for every parked waiter and removes it (shutdown). */
void engine_cancel_waiters(struct engine *e, int code);

/* Returns the holder's tasks to the heads of their queues, oldest
 * delivery first in line (connection closed). */
void engine_drop_holder(struct engine *e, struct holder *h);

/* Fires every deadline that has come: leases, delays, wait timeouts. */
void engine_advance(struct engine *e);
msec_t engine_next_deadline(const struct engine *e);

/* Figures of q; a NULL q (unknown name) reads as an empty queue of that
 * name, whose maxsize is what the configuration would give it. */
void engine_queue_stats(const struct engine *e, const struct queue *q,
                        const char *name, size_t len, struct queue_stats *s);

/* The settings of q in force. */
struct queue_settings engine_queue_settings(struct engine *e,
                                            const struct queue *q);

/* The id the next new task will take. */
uint64_t engine_next_task_id(const struct engine *e);

/* The queue of a task that is delivered and undone, else NULL. */
const struct queue *engine_task_queue(const struct engine *e, uint64_t task);

/* Queues by id (the order they were made in, but for a queue that took a
 * deleted one's id): q = NULL gives the first, NULL at the end. */
struct queue *engine_next_queue(const struct engine *e, const struct queue *q);
const char *queue_name(const struct queue *q);
/* The queues that exist: what max_queues bounds. */
size_t engine_queue_count(const struct engine *e);

#endif
