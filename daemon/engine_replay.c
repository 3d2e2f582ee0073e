/*
 * engine_replay.c - the engine's side of the journal (see engine.h):
 * replay, which rebuilds the state record by record into a fresh engine,
 * and the dump that a snapshot is written from.  The state is taken as
 * recorded, never decided again; a record that does not fit it is -1.
 */
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "xalloc.h"

static struct queue *queue_by_id(const struct engine *e, uint32_t qid)
{
	return qid < e->nids ? e->by_id[qid] : NULL;
}

static void note_id(struct engine *e, uint64_t task)
{
	if (task >= e->next_id)
		e->next_id = task + 1;
}

int engine_replay_queue(struct engine *e, uint32_t qid, const char *name,
                        size_t len)
{
	if (len == 0) {   /* a free id */
		if (qid != e->nids)
			return -1;
		eng_grow_ids(e, qid);
		return 0;
	}
	if (qid > e->nids || (qid < e->nids && e->by_id[qid]) ||
	    eng_find_queue(e, name, len))
		return -1;
	eng_add_queue(e, qid, name, len);
	return 0;
}

int engine_replay_settings(struct engine *e, uint32_t qid,
                           const struct queue_conf *d)
{
	struct queue *q = queue_by_id(e, qid);
	if (!q || declares_any(&q->declared) || !declares_any(d))
		return -1;
	eng_declare_settings(e, q, d);
	return 0;
}

int engine_replay_task(struct engine *e, uint32_t qid, uint64_t task,
                       uint32_t deliveries, enum engine_task_state state,
                       msec_t until, const char *item, size_t len)
{
	struct queue *q = queue_by_id(e, qid);
	if (!q || task == 0 || task > TASK_ID_MAX || idmap_get(&e->out, task))
		return -1;
	note_id(e, task);
	e->live_bytes += ITEM_BYTES(len);
	if (state == ENGINE_QUEUED) {
		itemq_push_back(&q->items, task, deliveries, item, len);
		return 0;
	}
	struct task *t = eng_task_new(item, len);
	t->id = task;
	t->qid = qid;
	t->deliveries = deliveries;
	idmap_put(&e->out, task, t);
	if (state == ENGINE_INFLIGHT) {
		t->state = TASK_INFLIGHT;
		q->inflight++;
	} else {
		t->state = TASK_DELAYED;
		t->u.timer.kind = DL_TASK;
		t->u.timer.at = until;
		heap_push(&e->deadlines, &t->u.timer);
		q->delayed++;
	}
	return 0;
}

int engine_replay_take(struct engine *e, uint32_t qid, uint64_t task)
{
	struct queue *q = queue_by_id(e, qid);
	struct item head;
	if (!q || !itemq_peek(&q->items, &head) || head.id != task)
		return -1;
	eng_take_head(e, q);   /* no lease, no holder: task_new zeroed them */
	return 0;
}

int engine_replay_done(struct engine *e, uint64_t task)
{
	struct task *t = eng_inflight(e, task);
	if (!t)
		return -1;
	idmap_del(&e->out, task);
	queue_of(e, t)->inflight--;
	eng_task_free(e, t);
	return 0;
}

int engine_replay_back(struct engine *e, uint64_t task)
{
	struct task *t = idmap_del(&e->out, task);
	if (!t)
		return -1;
	if (t->state == TASK_DELAYED) {
		heap_remove(&e->deadlines, &t->u.timer);
		queue_of(e, t)->delayed--;
	} else {
		queue_of(e, t)->inflight--;
	}
	eng_push_head(e, t);
	return 0;
}

int engine_replay_delay(struct engine *e, uint64_t task, msec_t until)
{
	struct task *t = eng_inflight(e, task);
	if (!t)
		return -1;
	t->state = TASK_DELAYED;
	t->u.timer.kind = DL_TASK;
	t->u.timer.at = until;
	heap_push(&e->deadlines, &t->u.timer);
	queue_of(e, t)->inflight--;
	queue_of(e, t)->delayed++;
	return 0;
}

int engine_replay_dead(struct engine *e, uint64_t task, uint64_t new_task,
                       int64_t dqid)
{
	struct task *t = eng_inflight(e, task);
	struct queue *dq = dqid < 0 ? NULL : queue_by_id(e, (uint32_t)dqid);
	if (!t || (dqid >= 0 && (!dq || new_task == 0 || new_task > TASK_ID_MAX)))
		return -1;
	idmap_del(&e->out, task);
	queue_of(e, t)->inflight--;
	if (!dq) {
		eng_task_free(e, t);
		return 0;
	}
	itemq_push_back(&dq->items, new_task, 0, t->item, t->len);
	free(t);   /* its item lives on in dq, still counted live */
	note_id(e, new_task);
	return 0;
}

void engine_replay_next_id(struct engine *e, uint64_t next)
{
	if (next > e->next_id)
		e->next_id = next;
}

int engine_replay_purge(struct engine *e, uint32_t qid)
{
	struct queue *q = queue_by_id(e, qid);
	if (!q || !qsize(q))
		return -1;
	eng_purge(e, q);
	return 0;
}

int engine_replay_drop(struct engine *e, uint32_t qid)
{
	struct queue *q = queue_by_id(e, qid);
	if (!q || unfinished(q))
		return -1;
	eng_remove_queue(e, q);
	return 0;
}

static int newest_first(const void *a, const void *b)
{
	const struct task *x = *(struct task *const *)a;
	const struct task *y = *(struct task *const *)b;
	return x->id < y->id ? 1 : x->id > y->id ? -1 : 0;
}

void engine_replay_end(struct engine *e)
{
	size_t n = 0;
	struct task **v = xmalloc((e->out.len + 1) * sizeof(struct task *));
	for (size_t i = 0; e->out.slots && i <= e->out.mask; i++) {
		struct task *t = e->out.slots[i].val;
		if (e->out.slots[i].key && t->state == TASK_INFLIGHT)
			v[n++] = t;
	}
	/* Each goes to the head in turn, newest first: the oldest ends up
	 * first in line, as when a connection closes. */
	qsort(v, n, sizeof(struct task *), newest_first);
	for (size_t i = 0; i < n; i++) {
		uint64_t id = v[i]->id;
		idmap_del(&e->out, id);
		queue_of(e, v[i])->inflight--;
		eng_push_head(e, v[i]);
		LOG(e, back, id);
	}
	free(v);
}

void engine_dump(const struct engine *e, const struct engine_dump *d)
{
	uint32_t end = e->nids;   /* past the highest id in use */
	while (end && !e->by_id[end - 1])
		end--;
	for (uint32_t id = 0; id < end; id++) {
		const struct queue *q = e->by_id[id];
		if (!q) {
			d->queue(d->ctx, id, "", 0);
			continue;
		}
		d->queue(d->ctx, q->id, q->name, q->len);
		if (declares_any(&q->declared))
			d->settings(d->ctx, q->id, &q->declared);
	}
	d->next_id(d->ctx, e->next_id);
	for (const struct queue *q = engine_next_queue(e, NULL); q;
	     q = engine_next_queue(e, q)) {
		struct itemq_iter i;
		struct item it;
		itemq_iter_init(&q->items, &i);
		while (itemq_next(&i, &it))
			d->task(d->ctx, q->id, it.id, it.deliveries, ENGINE_QUEUED, 0,
			        it.text, it.len);
	}
	for (size_t i = 0; e->out.slots && i <= e->out.mask; i++) {
		const struct task *t = e->out.slots[i].val;
		if (!e->out.slots[i].key)
			continue;
		d->task(d->ctx, t->qid, t->id, t->deliveries,
		        (enum engine_task_state)t->state,
		        t->state == TASK_DELAYED ? t->u.timer.at : 0, t->item, t->len);
	}
}

uint64_t engine_live_bytes(const struct engine *e)
{
	return e->live_bytes;
}
