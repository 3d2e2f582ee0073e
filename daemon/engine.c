/*
 * engine.c - the queue engine (see engine.h).
 *
 * A queued item lives in its queue's itemq (itemq.h): id, deliveries and
 * JSON text packed in chunks, about 16 bytes over its text.  Only an item
 * out of its queue is a struct task, one allocation holding a copy of its
 * text: in the in-flight table (delivered and undone; also on its holder's
 * list or, with a lease, in the deadline heap), and in the deadline heap
 * too while released with a delay.  A get makes the task from the head
 * entry; a return to the head (release, lease out, holder gone, delay over)
 * pushes it back as an entry and frees the task.  The per-queue counts
 * follow every move, so unfinished = qsize + inflight + delayed by
 * construction.
 *
 * A big item (TASK_BLOCK_MIN bytes or more) is queued as its task's block
 * instead (itemq_push_*_block): the put copies its text once, into a task
 * block, and the block then passes between the itemq and the task state
 * without another copy.  Below that size the copy costs less than the
 * block's ~70 bytes over a packed entry would cost each queued item.
 *
 * After any change to a queue, service() lets its waiters act, oldest
 * first: getters take items, blocked puts fill free room, and joiners return
 * once nothing is unfinished.
 *
 * Queues are found by name in a hash table and by id in by_id, where a
 * deleted queue leaves a hole (NULL) that the next new queue fills: the
 * lowest free id, so that the ids a journal names stay as few as the
 * queues that exist at once, and a replay that gives the same holes gives
 * the same ids to the queues made next.
 *
 * The engine's state is in engine_int.h, which it shares with its
 * journal's side, engine_replay.c (replay and dump).
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "xalloc.h"

#define container_of(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

static void service(struct engine *e, struct queue *q);

static bool full(const struct queue *q)
{
	return q->maxsize && qsize(q) >= q->maxsize;
}

static msec_t deadline_after(struct engine *e, msec_t ms)
{
	msec_t now = e->conf->clock();
	return ms >= NEVER - now ? NEVER : now + ms;
}

/* ---- configuration and queues ------------------------------------------ */

static const struct queue_conf *find_conf(const struct engine *e,
                                          const char *name, size_t len)
{
	for (size_t i = 0; i < e->conf->nqueues; i++) {
		const struct queue_conf *c = &e->conf->queues[i];
		if (strlen(c->name) == len && memcmp(c->name, name, len) == 0)
			return c;
	}
	return NULL;
}

/*
 * The settings in force of a queue named name, from its configuration c
 * and its declared settings d (either may be NULL): the configuration's,
 * else the declared, else the defaults.  The default max_deliveries spares
 * dead-letter queues, so that letters do not cascade.  A dead-letter queue
 * NAME.dead is built in e->scratch.
 */
static struct queue_settings settings_of(struct engine *e, const char *name,
                                         size_t len,
                                         const struct queue_conf *c,
                                         const struct queue_conf *d)
{
	static const char dead[] = ".dead";
	const size_t ndead = sizeof dead - 1;
	struct queue_settings s;

	if (c && c->has_maxsize)
		s.maxsize = c->maxsize;
	else
		s.maxsize = d && d->has_maxsize ? d->maxsize :
		            e->conf->default_maxsize;
	if (c && c->has_max_deliveries)
		s.max_deliveries = c->max_deliveries;
	else if (d && d->has_max_deliveries)
		s.max_deliveries = d->max_deliveries;
	else if (len >= ndead && memcmp(name + len - ndead, dead, ndead) == 0)
		s.max_deliveries = 0;
	else
		s.max_deliveries = e->conf->default_max_deliveries;
	if (c && c->dead_letter) {
		bool none = !*c->dead_letter || !strcmp(c->dead_letter, "off");
		s.dead_letter = none ? NULL : c->dead_letter;
	} else if (d && d->dead_letter) {
		s.dead_letter = d->dead_letter;
	} else {
		if (e->scratch_cap < len + sizeof dead) {
			e->scratch_cap = len + sizeof dead;
			e->scratch = xrealloc(e->scratch, e->scratch_cap);
		}
		memcpy(e->scratch, name, len);
		memcpy(e->scratch + len, dead, sizeof dead);
		s.dead_letter = e->scratch;
	}
	return s;
}

static struct queue_settings queue_settings(struct engine *e,
                                            const struct queue *q)
{
	return settings_of(e, q->name, q->len, find_conf(e, q->name, q->len),
	                   &q->declared);
}

static size_t name_hash(const char *name, size_t len)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);   /* FNV-1a */
	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)name[i]) * UINT64_C(0x100000001b3);
	return (size_t)h;
}

struct queue *eng_find_queue(const struct engine *e, const char *name,
                                size_t len)
{
	if (!e->nbuckets)
		return NULL;
	struct queue *q = e->buckets[name_hash(name, len) & (e->nbuckets - 1)];
	for (; q; q = q->hnext)
		if (q->len == len && memcmp(q->name, name, len) == 0)
			return q;
	return NULL;
}

static struct queue **bucket_of(const struct engine *e, const struct queue *q)
{
	return &e->buckets[name_hash(q->name, q->len) & (e->nbuckets - 1)];
}

static void rehash(struct engine *e, size_t nbuckets)
{
	free(e->buckets);
	e->buckets = xcalloc(nbuckets, sizeof(struct queue *));
	e->nbuckets = nbuckets;
	for (uint32_t id = 0; id < e->nids; id++) {
		struct queue *q = e->by_id[id];
		if (q) {
			struct queue **b = bucket_of(e, q);
			q->hnext = *b;
			*b = q;
		}
	}
}

/* A queue's settings in force: at creation, declare and reload. */
static void apply_conf(struct engine *e, struct queue *q)
{
	struct queue_settings s = queue_settings(e, q);
	q->maxsize = s.maxsize;
	q->max_deliveries = s.max_deliveries;
}

/* d's settings as q's own, the strings copied. */
void eng_declare_settings(struct engine *e, struct queue *q,
                             const struct queue_conf *d)
{
	q->declared = *d;
	q->declared.name = NULL;
	if (d->dead_letter)
		q->declared.dead_letter = xstrdup(d->dead_letter);
	apply_conf(e, q);
}

/* The lowest id no queue holds: a hole, or the next new one. */
static uint32_t free_id(struct engine *e)
{
	while (e->free_hint < e->nids && e->by_id[e->free_hint])
		e->free_hint++;
	return e->free_hint;
}

/* qid, a free id or the next new one, has its place in by_id. */
void eng_grow_ids(struct engine *e, uint32_t qid)
{
	if (qid < e->nids)
		return;
	if (e->nids == e->ids_cap) {
		e->ids_cap = e->ids_cap ? 2 * e->ids_cap : 64;
		e->by_id = xrealloc(e->by_id, e->ids_cap * sizeof(struct queue *));
	}
	e->by_id[e->nids++] = NULL;
}

/* Makes queue name with id qid, a free id or the next new one. */
struct queue *eng_add_queue(struct engine *e, uint32_t qid,
                               const char *name, size_t len)
{
	struct queue *q = xcalloc(1, sizeof *q + len + 1);
	memcpy(q->name, name, len);
	q->len = len;
	q->id = qid;
	apply_conf(e, q);

	eng_grow_ids(e, qid);
	e->by_id[qid] = q;
	e->nqueues++;
	if (e->nqueues > e->nbuckets) {
		rehash(e, e->nbuckets ? e->nbuckets * 2 : 64);
	} else {
		struct queue **b = bucket_of(e, q);
		q->hnext = *b;
		*b = q;
	}
	return q;
}

/* A new queue: the lowest free id, told to the journal.  (name may be in
 * e->scratch: it is copied before settings_of writes there again.) */
static struct queue *new_queue(struct engine *e, const char *name, size_t len)
{
	struct queue *q = eng_add_queue(e, free_id(e), name, len);
	LOG(e, queue, q->id, q->name, q->len);
	return q;
}

/* A queue with nothing unfinished and no waiter leaves: its id is free. */
void eng_remove_queue(struct engine *e, struct queue *q)
{
	struct queue **p = bucket_of(e, q);
	while (*p != q)
		p = &(*p)->hnext;
	*p = q->hnext;
	e->by_id[q->id] = NULL;
	if (q->id < e->free_hint)
		e->free_hint = q->id;
	e->nqueues--;
	itemq_free(&q->items);
	free(q->declared.dead_letter);
	free(q);
}

int engine_queue(struct engine *e, const char *name, size_t len, bool create,
                 struct queue **out)
{
	*out = eng_find_queue(e, name, len);
	if (*out || !create)
		return JQ_OK;
	if (e->nqueues >= e->conf->max_queues)
		return JQ_TOO_MANY_QUEUES;
	*out = new_queue(e, name, len);
	return JQ_OK;
}

void engine_reconfigure(struct engine *e, const struct engine_conf *conf)
{
	e->conf = conf;
	for (uint32_t id = 0; id < e->nids; id++)
		if (e->by_id[id])
			apply_conf(e, e->by_id[id]);
	/* A larger maxsize lets blocked puts in now. */
	for (uint32_t id = 0; id < e->nids; id++)
		if (e->by_id[id])
			service(e, e->by_id[id]);
}

struct queue *engine_next_queue(const struct engine *e, const struct queue *q)
{
	for (uint32_t id = q ? q->id + 1 : 0; id < e->nids; id++)
		if (e->by_id[id])
			return e->by_id[id];
	return NULL;
}

const char *queue_name(const struct queue *q)
{
	return q->name;
}

size_t engine_queue_count(const struct engine *e)
{
	return e->nqueues;
}

/* ---- tasks -------------------------------------------------------------- */


/* A task leaves the state (finished, or dropped as a dead letter). */
void eng_task_free(struct engine *e, struct task *t)
{
	e->live_bytes -= ITEM_BYTES(t->len);
	free(t);
}

struct task *eng_task_new(const char *item, size_t len)
{
	struct task *t = xmalloc(sizeof *t + len);
	memset(t, 0, sizeof *t);
	t->len = (uint32_t)len;
	memcpy(t->item, item, len);
	return t;
}

/* A task goes back to the head of its queue as an entry (a big one as
 * itself); its item stays live there. */
void eng_push_head(struct engine *e, struct task *t)
{
	struct itemq *items = &queue_of(e, t)->items;
	if (t->len >= TASK_BLOCK_MIN) {
		itemq_push_front_block(items, t->id, t->deliveries, t, t->item,
		                       t->len);
		return;
	}
	itemq_push_front(items, t->id, t->deliveries, t->item, t->len);
	free(t);
}

/* The head entry of q (there is one) out of the queue as a task in
 * flight, one more delivery counted, in the in-flight table; the caller
 * puts it on a holder or in the heap. */
struct task *eng_take_head(struct engine *e, struct queue *q)
{
	struct item it;
	itemq_peek(&q->items, &it);
	struct task *t = it.block;
	if (t)
		memset(t, 0, offsetof(struct task, item));
	else
		t = eng_task_new(it.text, it.len);
	t->len = it.len;
	t->id = it.id;
	t->qid = q->id;
	t->deliveries = it.deliveries + 1;
	t->state = TASK_INFLIGHT;
	itemq_take_front(&q->items);   /* its block is t's, or NULL */
	q->inflight++;
	idmap_put(&e->out, t->id, t);
	return t;
}

/* A new task (a put, or a dead letter) takes the next id and the tail.
 * own (or NULL) is a task holding the item: a big item is queued as it,
 * which the queue then owns (or as a new block), and a small one is
 * copied (the caller then frees own, by release_copied). */
static uint64_t enqueue_new(struct engine *e, struct queue *q,
                            const char *item, size_t len, struct task *own)
{
	uint64_t id = e->next_id++;
	if (len >= TASK_BLOCK_MIN) {
		if (!own)
			own = eng_task_new(item, len);
		itemq_push_back_block(&q->items, id, 0, own, own->item, len);
	} else {
		itemq_push_back(&q->items, id, 0, item, len);
	}
	q->n_puts++;
	return id;
}

/* A task given to enqueue_new: freed unless it is queued itself. */
static void release_copied(struct task *t)
{
	if (t->len < TASK_BLOCK_MIN)
		free(t);
}

/* A put's item enters the state: counted live, and told to the journal.
 * (A dead letter enters by enqueue_new alone: it was live already.) */
static uint64_t put_new(struct engine *e, struct queue *q, const char *item,
                        size_t len, struct task *own)
{
	uint64_t id = enqueue_new(e, q, item, len, own);
	e->live_bytes += ITEM_BYTES(len);
	LOG(e, put, q->id, id, item, len);
	return id;
}

static void hold(struct holder *h, struct task *t)
{
	t->u.held.holder = h;
	t->u.held.prev = NULL;
	t->u.held.next = h->tasks;
	if (h->tasks)
		h->tasks->u.held.prev = t;
	h->tasks = t;
}

/* Takes an in-flight task off its holder list or out of the heap. */
static void detach(struct engine *e, struct task *t)
{
	if (t->leased) {
		heap_remove(&e->deadlines, &t->u.timer);
		t->leased = false;
		return;
	}
	struct holder *h = t->u.held.holder;
	if (!h)
		return;
	if (t->u.held.prev)
		t->u.held.prev->u.held.next = t->u.held.next;
	else
		h->tasks = t->u.held.next;
	if (t->u.held.next)
		t->u.held.next->u.held.prev = t->u.held.prev;
}

static void deliver(struct engine *e, struct queue *q, const struct take *tk,
                    struct delivery *d)
{
	struct task *t = eng_take_head(e, q);
	q->n_gets++;
	if (t->deliveries > 1)
		q->n_redeliveries++;
	LOG(e, take, q->id, t->id);
	if (tk->lease) {
		t->leased = true;
		t->u.timer.kind = DL_TASK;
		t->u.timer.at = deadline_after(e, tk->lease);
		heap_push(&e->deadlines, &t->u.timer);
	} else {
		t->leased = false;
		t->u.held.next = t->u.held.prev = NULL;
		t->u.held.holder = NULL;
		if (tk->holder)
			hold(tk->holder, t);
	}
	*d = (struct delivery){ t->id, t->deliveries, t->item, t->len };
}

/* The head item as a get would deliver it, for take.fits. */
static struct delivery preview(const struct queue *q)
{
	struct item it;
	itemq_peek(&q->items, &it);
	return (struct delivery){ it.id, it.deliveries + 1, it.text, it.len };
}

/* A task past its queue's max_deliveries leaves it: finished there, and put
 * as a new task on the dead-letter queue, which takes it even when full or
 * past max_queues. */
static void dead_letter(struct engine *e, struct task *t)
{
	struct queue *q = queue_of(e, t);
	const char *name = queue_settings(e, q).dead_letter;
	uint64_t id = t->id;
	q->n_dead_lettered++;
	if (!name) {
		eng_task_free(e, t);
		LOG(e, dead, id, 0, -1);
	} else {
		size_t len = strlen(name);
		struct queue *dq = eng_find_queue(e, name, len);
		if (!dq)
			dq = new_queue(e, name, len);
		uint64_t new_id = enqueue_new(e, dq, t->item, t->len, t);
		release_copied(t);   /* its item lives on in dq, still live */
		LOG(e, dead, id, new_id, (int64_t)dq->id);
		service(e, dq);
	}
	service(e, q);
}

/* An in-flight task comes back undone (release, lease expiry, holder
 * dropped; detached already): to the head of its queue, after a delay, or
 * to dead letters. */
static void come_back(struct engine *e, struct task *t, msec_t delay)
{
	struct queue *q = queue_of(e, t);
	uint64_t id = t->id;
	q->inflight--;
	if (q->max_deliveries && t->deliveries >= q->max_deliveries) {
		idmap_del(&e->out, id);
		dead_letter(e, t);
	} else if (delay) {
		t->state = TASK_DELAYED;   /* stays in e->out */
		t->u.timer.kind = DL_TASK;
		t->u.timer.at = deadline_after(e, delay);
		heap_push(&e->deadlines, &t->u.timer);
		q->delayed++;
		LOG(e, delay, id, t->u.timer.at);
	} else {
		idmap_del(&e->out, id);
		eng_push_head(e, t);
		LOG(e, back, id);
		service(e, q);
	}
}

/* An in-flight task, or NULL for an id that names none. */
struct task *eng_inflight(const struct engine *e, uint64_t id)
{
	struct task *t = idmap_get(&e->out, id);
	return t && t->state == TASK_INFLIGHT ? t : NULL;
}

/* ---- waiters ------------------------------------------------------------ */

static void park(struct engine *e, struct queue *q, struct waitlist *l,
                 struct waiter *w)
{
	w->queue = q;
	w->next = NULL;
	w->prev = l->tail;
	if (l->tail)
		l->tail->next = w;
	else
		l->head = w;
	l->tail = w;
	w->timer.kind = DL_WAITER;
	w->timer.at = deadline_after(e, w->timeout);
	if (w->timer.at != NEVER)
		heap_push(&e->deadlines, &w->timer);
}

static struct waitlist *list_of(struct waiter *w)
{
	switch (w->kind) {
	case WAIT_PUT: return &w->queue->puts;
	case WAIT_GET: return &w->queue->gets;
	default: return &w->queue->joins;
	}
}

static void unpark(struct engine *e, struct waiter *w)
{
	struct waitlist *l = list_of(w);
	if (w->prev)
		w->prev->next = w->next;
	else
		l->head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		l->tail = w->prev;
	w->prev = w->next = NULL;
	if (w->timer.at != NEVER)
		heap_remove(&e->deadlines, &w->timer);
}

static void service(struct engine *e, struct queue *q)
{
	bool admitted;

	if (e->defer) {
		if (!q->deferred) {
			q->deferred = true;
			q->dnext = e->deferred;
			e->deferred = q;
		}
		return;
	}
	do {
		while (q->gets.head && qsize(q)) {
			struct waiter *w = q->gets.head;
			struct delivery d = preview(q);
			unpark(e, w);
			if (w->take.fits && !w->take.fits(w->take.ctx, &d)) {
				w->done(w, JQ_TOO_LARGE, NULL, 0);
				continue;
			}
			deliver(e, q, &w->take, &d);
			w->done(w, JQ_OK, &d, d.task);
		}
		admitted = false;
		while (q->puts.head && !full(q)) {
			struct waiter *w = q->puts.head;
			struct task *t = w->put_task;
			unpark(e, w);
			w->put_task = NULL;
			uint64_t id = put_new(e, q, t->item, t->len, t);
			release_copied(t);   /* its item is in the queue */
			w->done(w, JQ_OK, NULL, id);
			admitted = true;
		}
	} while (admitted);   /* admitted items may be for waiting getters */

	while (q->joins.head && unfinished(q) == 0) {
		struct waiter *w = q->joins.head;
		unpark(e, w);
		w->done(w, JQ_OK, NULL, 0);
	}
}

/* ---- ops ---------------------------------------------------------------- */

int engine_put(struct engine *e, struct queue *q, const char *item,
               size_t len, struct waiter *w, uint64_t *task)
{
	if (e->next_id > TASK_ID_MAX)
		return JQ_UNAVAILABLE;
	if (full(q) || q->puts.head) {   /* waiting puts go first */
		if (!w)
			return JQ_FULL;
		w->kind = WAIT_PUT;
		w->put_task = eng_task_new(item, len);
		park(e, q, &q->puts, w);
		return JQ_PARKED;
	}
	*task = put_new(e, q, item, len, NULL);
	service(e, q);
	return JQ_OK;
}

int engine_get(struct engine *e, struct queue *q, const struct take *tk,
               struct waiter *w, struct delivery *d)
{
	if (!qsize(q) || q->gets.head) {   /* waiting getters go first */
		if (!w)
			return JQ_EMPTY;
		w->kind = WAIT_GET;
		w->put_task = NULL;
		w->take = *tk;
		park(e, q, &q->gets, w);
		return JQ_PARKED;
	}
	if (tk->fits) {
		struct delivery p = preview(q);
		if (!tk->fits(tk->ctx, &p))
			return JQ_TOO_LARGE;
	}
	deliver(e, q, tk, d);
	service(e, q);
	return JQ_OK;
}

int engine_join(struct engine *e, struct queue *q, struct waiter *w)
{
	if (!q || unfinished(q) == 0)
		return JQ_OK;
	if (!w)
		return JQ_TIMEOUT;
	w->kind = WAIT_JOIN;
	w->put_task = NULL;
	park(e, q, &q->joins, w);
	return JQ_PARKED;
}

/* A named setting differs from what is in force (or configured). */
static bool conflicts(struct declare_result *r, const char *setting,
                      bool differs, bool configured)
{
	if (!differs)
		return false;
	r->conflict = setting;
	r->configured = configured;
	return true;
}

int engine_declare(struct engine *e, const struct queue_conf *want, bool dry,
                   struct declare_result *r)
{
	size_t len = strlen(want->name);
	struct queue *q = eng_find_queue(e, want->name, len);
	const struct queue_conf *c = find_conf(e, want->name, len);
	struct queue_settings *s = &r->settings;

	memset(r, 0, sizeof *r);
	/* A queue that does not exist yet is held to its configuration only:
	 * the defaults are what a declare may change. */
	*s = q ? queue_settings(e, q) : settings_of(e, want->name, len, c, NULL);
	if (conflicts(r, "maxsize", want->has_maxsize &&
	              want->maxsize != s->maxsize && (q || (c && c->has_maxsize)),
	              c && c->has_maxsize) ||
	    conflicts(r, "max_deliveries", want->has_max_deliveries &&
	              want->max_deliveries != s->max_deliveries &&
	              (q || (c && c->has_max_deliveries)),
	              c && c->has_max_deliveries) ||
	    conflicts(r, "dead_letter", want->dead_letter &&
	              (!s->dead_letter || strcmp(want->dead_letter,
	                                         s->dead_letter) != 0) &&
	              (q || (c && c->dead_letter)), c && c->dead_letter))
		return JQ_CONFLICT;
	if (q) {
		r->queue = dry ? NULL : q;
		return JQ_OK;
	}
	if (e->nqueues >= e->conf->max_queues)
		return JQ_TOO_MANY_QUEUES;
	r->created = true;
	if (dry) {
		*s = settings_of(e, want->name, len, c, want);
		return JQ_OK;
	}
	q = new_queue(e, want->name, len);
	if (declares_any(want)) {
		eng_declare_settings(e, q, want);
		LOG(e, settings, q->id, &q->declared);
	}
	r->queue = q;
	*s = queue_settings(e, q);
	return JQ_OK;
}

/* Every queued task of q finished: out of the state and the live bytes. */
uint64_t eng_purge(struct engine *e, struct queue *q)
{
	struct itemq_iter i;
	struct item it;
	uint64_t n = qsize(q);
	itemq_iter_init(&q->items, &i);
	while (itemq_next(&i, &it))
		e->live_bytes -= ITEM_BYTES(it.len);
	itemq_free(&q->items);
	q->n_purged += n;
	return n;
}

uint64_t engine_purge(struct engine *e, struct queue *q)
{
	if (!q || !qsize(q))
		return 0;
	uint64_t n = eng_purge(e, q);
	LOG(e, purge, q->id);
	service(e, q);   /* room for blocked puts; joins may end */
	return n;
}

int engine_delete(struct engine *e, struct queue *q)
{
	struct waiter *w;
	if (unfinished(q))
		return JQ_CONFLICT;
	/* A put waits only on a full queue and a join only while something
	 * is unfinished: getters are all that can wait here. */
	while ((w = q->gets.head)) {
		engine_cancel(e, w);
		w->done(w, JQ_EMPTY, NULL, 0);
	}
	LOG(e, drop, q->id);
	eng_remove_queue(e, q);
	return JQ_OK;
}

int engine_task_done(struct engine *e, uint64_t id, uint64_t *left)
{
	struct task *t = eng_inflight(e, id);
	if (!t)
		return JQ_UNKNOWN_TASK;
	struct queue *q = queue_of(e, t);
	idmap_del(&e->out, id);
	detach(e, t);
	eng_task_free(e, t);
	LOG(e, done, id);
	q->inflight--;
	q->n_task_dones++;
	*left = unfinished(q);
	service(e, q);
	return JQ_OK;
}

int engine_release(struct engine *e, uint64_t id, msec_t delay)
{
	struct task *t = eng_inflight(e, id);
	if (!t)
		return JQ_UNKNOWN_TASK;
	detach(e, t);
	queue_of(e, t)->n_releases++;
	come_back(e, t, delay);
	return JQ_OK;
}

void engine_drop_holder(struct engine *e, struct holder *h)
{
	/* The holder list runs newest first; each return goes to the head,
	 * so the oldest delivery ends up first in line.  Waiters are served
	 * once all are back: served in between, a getter would take the
	 * newest. */
	struct task *t;
	struct queue *q;

	e->defer = true;
	while ((t = h->tasks)) {
		/* Off the list it is on (tasks on a holder have no lease). */
		h->tasks = t->u.held.next;
		if (h->tasks)
			h->tasks->u.held.prev = NULL;
		t->u.held.holder = NULL;
		come_back(e, t, 0);
	}
	e->defer = false;
	while ((q = e->deferred)) {
		e->deferred = q->dnext;
		q->deferred = false;
		service(e, q);
	}
}

void engine_cancel(struct engine *e, struct waiter *w)
{
	unpark(e, w);
	free(w->put_task);
	w->put_task = NULL;
}

void engine_cancel_waiters(struct engine *e, int code)
{
	for (struct queue *q = engine_next_queue(e, NULL); q;
	     q = engine_next_queue(e, q)) {
		struct waitlist *lists[] = { &q->puts, &q->gets, &q->joins };
		for (size_t i = 0; i < 3; i++) {
			struct waiter *w;
			while ((w = lists[i]->head)) {
				engine_cancel(e, w);
				w->done(w, code, NULL, 0);
			}
		}
	}
}

/* ---- deadlines ---------------------------------------------------------- */

static void task_deadline(struct engine *e, struct task *t)
{
	if (t->state == TASK_DELAYED) {     /* the delay is over */
		struct queue *q = queue_of(e, t);
		uint64_t id = t->id;
		idmap_del(&e->out, id);
		q->delayed--;
		eng_push_head(e, t);
		LOG(e, back, id);
		service(e, q);
	} else {                            /* the lease ran out */
		t->leased = false;
		come_back(e, t, 0);
	}
}

void engine_expire(struct engine *e, struct waiter *w)
{
	static const int timeout_code[] = {
		[WAIT_PUT] = JQ_FULL, [WAIT_GET] = JQ_EMPTY, [WAIT_JOIN] = JQ_TIMEOUT,
	};
	engine_cancel(e, w);
	w->done(w, timeout_code[w->kind], NULL, 0);
}

void engine_advance(struct engine *e)
{
	msec_t now = e->conf->clock();
	struct deadline *d;

	while ((d = heap_top(&e->deadlines)) && d->at <= now) {
		heap_remove(&e->deadlines, d);
		if (d->kind == DL_TASK) {
			task_deadline(e, container_of(d, struct task, u.timer));
		} else {
			struct waiter *w = container_of(d, struct waiter, timer);
			w->timer.at = NEVER;   /* out of the heap already */
			engine_expire(e, w);
		}
	}
}

msec_t engine_next_deadline(const struct engine *e)
{
	struct deadline *d = heap_top(&e->deadlines);
	return d ? d->at : NEVER;
}

/* ---- figures ------------------------------------------------------------ */

static uint64_t list_len(const struct waitlist *l)
{
	uint64_t n = 0;
	for (const struct waiter *w = l->head; w; w = w->next)
		n++;
	return n;
}

void engine_queue_stats(const struct engine *e, const struct queue *q,
                        const char *name, size_t len, struct queue_stats *s)
{
	memset(s, 0, sizeof *s);
	if (!q) {
		const struct queue_conf *c = find_conf(e, name, len);
		s->maxsize = c && c->has_maxsize ? c->maxsize :
		             e->conf->default_maxsize;
		return;
	}
	s->qsize = qsize(q);
	s->inflight = q->inflight;
	s->delayed = q->delayed;
	s->unfinished = unfinished(q);
	s->maxsize = q->maxsize;
	s->max_deliveries = q->max_deliveries;
	s->purged = q->n_purged;
	s->puts = q->n_puts;
	s->gets = q->n_gets;
	s->task_dones = q->n_task_dones;
	s->releases = q->n_releases;
	s->redeliveries = q->n_redeliveries;
	s->dead_lettered = q->n_dead_lettered;
	s->waiting_puts = list_len(&q->puts);
	s->waiting_gets = list_len(&q->gets);
	s->waiting_joins = list_len(&q->joins);
}

struct queue_settings engine_queue_settings(struct engine *e,
                                            const struct queue *q)
{
	return queue_settings(e, q);
}

uint64_t engine_next_task_id(const struct engine *e)
{
	return e->next_id;
}

const struct queue *engine_task_queue(const struct engine *e, uint64_t id)
{
	const struct task *t = eng_inflight(e, id);
	return t ? queue_of(e, t) : NULL;
}

/* ---- the journal's log ----------------------------------------------- */

void engine_set_log(struct engine *e, const struct engine_log *log)
{
	e->log = log;
}

/* ---- life --------------------------------------------------------------- */

struct engine *engine_new(const struct engine_conf *conf)
{
	struct engine *e = xcalloc(1, sizeof *e);
	e->conf = conf;
	e->next_id = 1;
	return e;
}

void engine_free(struct engine *e)
{
	if (!e)
		return;
	/* Parked waiters belong to their owners; their put items to us. */
	for (size_t i = 0; e->out.slots && i <= e->out.mask; i++)
		if (e->out.slots[i].key)
			free(e->out.slots[i].val);
	for (uint32_t id = 0; id < e->nids; id++) {
		struct queue *q = e->by_id[id];
		if (!q)
			continue;
		itemq_free(&q->items);
		for (struct waiter *w = q->puts.head; w; w = w->next) {
			free(w->put_task);
			w->put_task = NULL;
		}
		free(q->declared.dead_letter);
		free(q);
	}
	heap_free(&e->deadlines);
	idmap_free(&e->out);
	free(e->by_id);
	free(e->buckets);
	free(e->scratch);
	free(e);
}
