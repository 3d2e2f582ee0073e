/*
 * fuzz_engine.c - libFuzzer harness of the queue engine (daemon/engine.c).
 *
 * The input is a program: one settings byte, then ops of a few bytes each
 * on one engine with a fake clock, eight queue names (four configured with
 * small maxsizes, one with max_deliveries and a named dead-letter queue,
 * one whose dead letters are dropped, and the dead-letter queues) and
 * max_queues of 2 to 6: put, get (leased or held, blocking or not, with a
 * fits() that may refuse), task_done, release (with or without a delay),
 * join, clock advances, dropping a holder, cancelling or expiring one
 * waiter, cancelling all of them, declare (dry or not, with settings of
 * its own that the configuration's win over), purge, delete, and
 * replaying the log so far.  At the end every waiter is cancelled and
 * every task finished.
 *
 * A model follows every task id ever issued through the engine's log hooks
 * (engine_set_log), each change checked against the op that caused it, and
 * after every step the engine's figures, its dump, its deadline and its
 * byte count are checked against the model: per queue U == Q + F + D, every
 * id in exactly one place (queued, in flight, delayed, finished, or dead-
 * lettered as a new id), FIFO order, new ids strictly increasing, waiters
 * completing at most once and in arrival order, nothing due left undone,
 * queues by id (a new one takes the lowest free id), each with its
 * settings in force, and a replay of the recorded log (and of a dump)
 * into a fresh engine giving the same state.  A violation abort()s with
 * its line.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "errcode.h"
#include "log_recorder.h"
#include "property.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LEN(a) (sizeof (a) / sizeof (a)[0])
#define container_of(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

/* ---- the configuration --------------------------------------------------- */

static char n_a[] = "a", n_b[] = "b", n_c[] = "c", n_d[] = "d", n_e[] = "e";
static char dl_d[] = "d", dl_off[] = "off";

/* The names ops use, and every dead-letter queue the settings can name. */
static const char *const names[] = {
	"a", "b", "c", "d", "e", "a.dead", "b.dead", "d.dead",
};
#define NNAMES ((int)LEN(names))

static const struct queue_conf qconf[] = {
	{ .name = n_a, .has_maxsize = true, .maxsize = 2 },
	{ .name = n_b, .has_maxsize = true, .maxsize = 3,
	  .has_max_deliveries = true, .max_deliveries = 2 },       /* b.dead */
	{ .name = n_c, .has_maxsize = true, .maxsize = 1,
	  .has_max_deliveries = true, .max_deliveries = 1, .dead_letter = dl_d },
	{ .name = n_d, .has_maxsize = true, .maxsize = 1 },
	{ .name = n_e, .has_max_deliveries = true, .max_deliveries = 1,
	  .dead_letter = dl_off },
};
#define DEFAULT_MAXSIZE 1

static msec_t now;
static msec_t fake_clock(void) { return now; }

static struct engine_conf conf;

static msec_t after(msec_t ms)
{
	return ms >= NEVER - now ? NEVER : now + ms;
}

static const struct queue_conf *conf_of(int n)
{
	for (size_t i = 0; i < LEN(qconf); i++)
		if (strcmp(qconf[i].name, names[n]) == 0)
			return &qconf[i];
	return NULL;
}

/* PROTOCOL.md: a queue's settings in force are the configuration's for
 * its name n, else those declared (d, may be NULL), else the defaults. */
static uint64_t maxsize_of(int n, const struct queue_conf *d)
{
	const struct queue_conf *c = conf_of(n);
	if (c && c->has_maxsize)
		return c->maxsize;
	return d && d->has_maxsize ? d->maxsize : conf.default_maxsize;
}

/* ... and the default max_deliveries spares dead-letter queues. */
static unsigned max_deliveries_of(int n, const struct queue_conf *d)
{
	const struct queue_conf *c = conf_of(n);
	size_t len = strlen(names[n]);
	if (c && c->has_max_deliveries)
		return c->max_deliveries;
	if (d && d->has_max_deliveries)
		return d->max_deliveries;
	if (len > 5 && strcmp(names[n] + len - 5, ".dead") == 0)
		return 0;
	return conf.default_max_deliveries;
}

/* The name index of the queue that takes n's dead letters, -1: none, or
 * -2: NAME.dead of a name that has none in names[] (a dead-letter queue;
 * the harness never lets one send dead letters). */
#define DL_OTHER (-2)
static int dead_letter_of(int n, const struct queue_conf *d)
{
	const struct queue_conf *c = conf_of(n);
	char want[64];
	if (c && c->dead_letter) {
		if (!*c->dead_letter || strcmp(c->dead_letter, "off") == 0)
			return -1;
		snprintf(want, sizeof want, "%s", c->dead_letter);
	} else if (d && d->dead_letter) {
		snprintf(want, sizeof want, "%s", d->dead_letter);
	} else {
		snprintf(want, sizeof want, "%s.dead", names[n]);
	}
	for (int i = 0; i < NNAMES; i++)
		if (strcmp(names[i], want) == 0)
			return i;
	return DL_OTHER;
}

/* ---- the model ------------------------------------------------------------ */

enum mstate {
	M_NONE, M_QUEUED, M_INFLIGHT, M_DELAYED, M_FINISHED, M_DEAD, M_PURGED,
};

struct mtask {
	uint8_t state;
	int qid;
	uint32_t deliveries;
	char item[16];
	size_t len;
	uint64_t dead_as;          /* M_DEAD: the new id, 0 if dropped */
	int holder;                /* M_INFLIGHT: holder index, or -1 */
	bool leased;
	msec_t lease_at, until;
	unsigned taken_step;       /* the step of its last delivery */
	unsigned seen;             /* dump generation that named it */
};

/* A queue id: the queue that holds it, if one does. */
struct mqueue {
	bool exists;
	int name;                  /* index in names[] */
	struct queue_conf declared;   /* dead_letter: one of names[] */
	struct queue *q;           /* the engine's */
	uint64_t *fifo;            /* queued ids, head first */
	size_t n, cap;
	uint64_t inflight, delayed;
};

#define NHOLDERS 3
#define NSLOTS 8

enum slot_state { S_FREE, S_CALLING, S_PARKED, S_CANCELLING };
enum fit_mode { FIT_NONE, FIT_ALL, FIT_NOTHING, FIT_FIRST_ONLY, FIT_SHORT,
                FIT_MODES };

struct fit {
	enum fit_mode mode;
	int qid;
	bool refused;              /* the last call refused */
};

struct slot {
	struct waiter w;
	enum slot_state state;
	enum wait_kind kind;
	int qid;
	msec_t deadline;
	unsigned seq;              /* arrival order */
	struct fit fit;            /* get */
	int holder;                /* get: -1 none */
	msec_t lease;              /* get */
	char item[16];             /* put */
	size_t len;
};

enum op {
	OP_PUT, OP_PUT_WAIT, OP_GET, OP_GET_WAIT, OP_TASK_DONE, OP_RELEASE,
	OP_JOIN, OP_JOIN_WAIT, OP_ADVANCE, OP_DROP_HOLDER, OP_CANCEL,
	OP_EXPIRE, OP_CANCEL_ALL, OP_REPLAY, OP_DECLARE, OP_PURGE, OP_DELETE,
	OP_NOPS,
	OP_DRAIN
};

static struct {
	struct engine *e;
	struct mtask *t;           /* by task id */
	size_t tcap;
	uint64_t last_id;          /* the highest id issued */
	struct mqueue mq[NNAMES];  /* by qid: at most NNAMES queues at once */
	int nq;                    /* the queues that exist */
	int nids;                  /* the ids handed out */
	int qid_of[NNAMES];        /* by name index; -1: no such queue */
	struct holder holders[NHOLDERS];
	struct slot slots[NSLOTS];
	unsigned seq;
	struct log_record rec;     /* the log calls so far */
	uint64_t unclaimed_put, unclaimed_take;
	/* what the op under way is */
	enum op op;
	uint64_t op_task;
	msec_t op_delay;
	int op_holder;
	int op_qid;                /* purge, delete: the queue */
	struct slot *op_slot;
	unsigned step;
	unsigned gen;
} m;

static char log_token;

static struct mtask *task_of(uint64_t id)
{
	CHECK(id >= 1 && id <= m.last_id);
	return &m.t[id];
}

static void new_id(uint64_t id)
{
	CHECK(id > m.last_id);       /* ids strictly increase */
	CHECK(id <= TASK_ID_MAX);
	if (id >= m.tcap) {
		size_t cap = m.tcap ? m.tcap : 64;
		while (cap <= id)
			cap *= 2;
		m.t = realloc(m.t, cap * sizeof *m.t);
		CHECK(m.t);
		memset(m.t + m.tcap, 0, (cap - m.tcap) * sizeof *m.t);
		m.tcap = cap;
	}
	for (uint64_t i = m.last_id + 1; i < id; i++)
		m.t[i].state = M_NONE;   /* skipped: never issued */
	m.last_id = id;
}

static void fifo_push(struct mqueue *q, uint64_t id, bool head)
{
	if (q->n == q->cap) {
		q->cap = q->cap ? 2 * q->cap : 16;
		q->fifo = realloc(q->fifo, q->cap * sizeof *q->fifo);
		CHECK(q->fifo);
	}
	if (head) {
		memmove(q->fifo + 1, q->fifo, q->n * sizeof *q->fifo);
		q->fifo[0] = id;
	} else {
		q->fifo[q->n] = id;
	}
	q->n++;
}

static uint64_t unfinished(int qid)
{
	if (qid < 0)
		return 0;
	return m.mq[qid].n + m.mq[qid].inflight + m.mq[qid].delayed;
}

static unsigned waiting(int qid, enum wait_kind kind)
{
	unsigned n = 0;
	for (int i = 0; i < NSLOTS; i++)
		if (m.slots[i].state == S_PARKED && m.slots[i].kind == kind &&
		    m.slots[i].qid == qid)
			n++;
	return n;
}

static bool full(int qid)
{
	uint64_t max = maxsize_of(m.mq[qid].name, &m.mq[qid].declared);
	return max && m.mq[qid].n >= max;
}

static bool exists(uint32_t qid)
{
	return qid < NNAMES && m.mq[qid].exists;
}

static struct lev *record(enum lkind kind, const char *text, size_t len)
{
	return log_record_add(&m.rec, kind, text, len);
}

/* An in-flight task leaves its holder or lease, for whatever reason. */
static void out_of_flight(struct mtask *t)
{
	CHECK(t->state == M_INFLIGHT);
	m.mq[t->qid].inflight--;
	t->holder = -1;
	t->leased = false;
}

/* Why an in-flight task may come back now: released, its lease out, or
 * its holder dropped. */
static void check_comes_back(uint64_t id, const struct mtask *t)
{
	if (m.op == OP_RELEASE && m.op_task == id)
		return;
	if (m.op == OP_ADVANCE && t->leased && t->lease_at <= now)
		return;
	if (m.op == OP_DROP_HOLDER && !t->leased && t->holder == m.op_holder)
		return;
	CHECK(!"an in-flight task comes back only by release, lease or holder");
}

static bool deliveries_used_up(const struct mtask *t)
{
	const struct mqueue *q = &m.mq[t->qid];
	unsigned max = max_deliveries_of(q->name, &q->declared);
	return max && t->deliveries >= max;
}

/* ---- the log hooks ------------------------------------------------------- */

static int name_index(const char *name, size_t len)
{
	for (int i = 0; i < NNAMES; i++)
		if (strlen(names[i]) == len && memcmp(names[i], name, len) == 0)
			return i;
	CHECK(!"a queue name the harness knows");
	return -1;
}

/* A new queue takes the lowest id no queue holds. */
static void l_queue(void *ctx, uint32_t qid, const char *name, size_t len)
{
	CHECK(ctx == &log_token);
	uint32_t lowest = 0;
	while (exists(lowest))
		lowest++;
	CHECK(qid == lowest && qid < NNAMES);
	int n = name_index(name, len);
	CHECK(m.qid_of[n] < 0);
	struct mqueue *q = &m.mq[qid];
	uint64_t *fifo = q->fifo;
	size_t cap = q->cap;
	memset(q, 0, sizeof *q);
	q->fifo = fifo;                  /* its room kept for the next */
	q->cap = cap;
	q->exists = true;
	q->name = n;
	m.qid_of[n] = (int)qid;
	m.nq++;
	if ((int)qid == m.nids)
		m.nids++;
	record(L_QUEUE, name, len)->qid = qid;
}

/* A declare's settings, as the queue it made gets them. */
static void l_settings(void *ctx, uint32_t qid, const struct queue_conf *d)
{
	CHECK(ctx == &log_token);
	CHECK(m.op == OP_DECLARE && exists(qid));
	CHECK(d->has_maxsize || d->has_max_deliveries || d->dead_letter);
	struct mqueue *q = &m.mq[qid];
	CHECK(!q->declared.has_maxsize && !q->declared.has_max_deliveries &&
	      !q->declared.dead_letter);
	q->declared = *d;
	q->declared.name = NULL;
	if (d->dead_letter)
		q->declared.dead_letter = (char *)names[name_index(
			d->dead_letter, strlen(d->dead_letter))];
	log_record_settings(&m.rec, qid, d);
}

static void l_purge(void *ctx, uint32_t qid)
{
	CHECK(ctx == &log_token);
	CHECK(m.op == OP_PURGE && (int)qid == m.op_qid && exists(qid));
	struct mqueue *q = &m.mq[qid];
	CHECK(q->n > 0);
	for (size_t i = 0; i < q->n; i++) {
		struct mtask *t = task_of(q->fifo[i]);
		CHECK(t->state == M_QUEUED && t->qid == (int)qid);
		t->state = M_PURGED;
	}
	q->n = 0;
	record(L_PURGE, NULL, 0)->qid = qid;
}

/* The queue leaves; its getters were answered empty before. */
static void l_drop(void *ctx, uint32_t qid)
{
	CHECK(ctx == &log_token);
	CHECK(m.op == OP_DELETE && (int)qid == m.op_qid && exists(qid));
	CHECK(unfinished((int)qid) == 0);
	for (int i = 0; i < NSLOTS; i++)
		CHECK(!(m.slots[i].state == S_PARKED && m.slots[i].qid == (int)qid));
	struct mqueue *q = &m.mq[qid];
	m.qid_of[q->name] = -1;
	q->exists = false;
	q->q = NULL;
	m.nq--;
	record(L_DROP, NULL, 0)->qid = qid;
}

static void l_put(void *ctx, uint32_t qid, uint64_t task, const char *item,
                  size_t len)
{
	CHECK(ctx == &log_token);
	CHECK(exists(qid));
	CHECK(m.unclaimed_put == 0);     /* each put is answered before the next */
	CHECK(len <= sizeof m.t[0].item);
	new_id(task);
	struct mtask *t = &m.t[task];
	memset(t, 0, sizeof *t);
	t->state = M_QUEUED;
	t->qid = (int)qid;
	t->holder = -1;
	memcpy(t->item, item, len);
	t->len = len;
	fifo_push(&m.mq[qid], task, false);
	m.unclaimed_put = task;
	struct lev *ev = record(L_PUT, item, len);
	ev->qid = qid;
	ev->task = task;
}

static void l_take(void *ctx, uint32_t qid, uint64_t task)
{
	CHECK(ctx == &log_token);
	CHECK(exists(qid));
	struct mqueue *q = &m.mq[qid];
	CHECK(q->n > 0 && q->fifo[0] == task);   /* FIFO: the head */
	CHECK(m.unclaimed_take == 0);
	memmove(q->fifo, q->fifo + 1, --q->n * sizeof *q->fifo);
	struct mtask *t = task_of(task);
	CHECK(t->state == M_QUEUED && t->qid == (int)qid);
	t->state = M_INFLIGHT;
	t->deliveries++;
	t->holder = -1;
	t->leased = false;
	t->taken_step = m.step;
	q->inflight++;
	m.unclaimed_take = task;
	struct lev *ev = record(L_TAKE, NULL, 0);
	ev->qid = qid;
	ev->task = task;
}

static void l_done(void *ctx, uint64_t task)
{
	CHECK(ctx == &log_token);
	CHECK(m.op == OP_TASK_DONE && m.op_task == task);
	struct mtask *t = task_of(task);
	out_of_flight(t);
	t->state = M_FINISHED;
	record(L_DONE, NULL, 0)->task = task;
}

static void l_back(void *ctx, uint64_t task)
{
	CHECK(ctx == &log_token);
	struct mtask *t = task_of(task);
	if (t->state == M_DELAYED) {
		CHECK(m.op == OP_ADVANCE && t->until <= now);
		m.mq[t->qid].delayed--;
	} else {
		CHECK(t->state == M_INFLIGHT);
		check_comes_back(task, t);
		CHECK(!deliveries_used_up(t));
		CHECK(!(m.op == OP_RELEASE && m.op_delay));
		out_of_flight(t);
	}
	t->state = M_QUEUED;
	fifo_push(&m.mq[t->qid], task, true);
	record(L_BACK, NULL, 0)->task = task;
}

static void l_delay(void *ctx, uint64_t task, msec_t until)
{
	CHECK(ctx == &log_token);
	CHECK(m.op == OP_RELEASE && m.op_task == task && m.op_delay);
	struct mtask *t = task_of(task);
	CHECK(!deliveries_used_up(t));
	out_of_flight(t);
	CHECK(until == after(m.op_delay));
	t->state = M_DELAYED;
	t->until = until;
	m.mq[t->qid].delayed++;
	struct lev *ev = record(L_DELAY, NULL, 0);
	ev->task = task;
	ev->until = until;
}

static void l_dead(void *ctx, uint64_t task, uint64_t new_task, int64_t dqid)
{
	CHECK(ctx == &log_token);
	struct mtask *t = task_of(task);
	check_comes_back(task, t);
	CHECK(deliveries_used_up(t));
	out_of_flight(t);
	int dl = dead_letter_of(m.mq[t->qid].name, &m.mq[t->qid].declared);
	CHECK(dl != DL_OTHER);
	t->state = M_DEAD;
	if (dl < 0) {
		CHECK(dqid == -1 && new_task == 0);
		t->dead_as = 0;
	} else {
		CHECK(dqid >= 0 && exists((uint32_t)dqid) && m.qid_of[dl] == dqid);
		new_id(new_task);
		t = task_of(task);          /* new_id may move the table */
		t->dead_as = new_task;
		struct mtask *n = &m.t[new_task];
		memset(n, 0, sizeof *n);
		n->state = M_QUEUED;
		n->qid = (int)dqid;
		n->holder = -1;
		memcpy(n->item, t->item, t->len);
		n->len = t->len;
		fifo_push(&m.mq[dqid], new_task, false);
	}
	struct lev *ev = record(L_DEAD, NULL, 0);
	ev->task = task;
	ev->new_task = new_task;
	ev->dqid = dqid;
}

static const struct engine_log rec_log = {
	.ctx = &log_token, .queue = l_queue, .settings = l_settings, .put = l_put,
	.take = l_take, .done = l_done, .back = l_back, .delay = l_delay,
	.dead = l_dead, .purge = l_purge, .drop = l_drop,
};

/* ---- fits() and waiters' done() ----------------------------------------- */

/* What fits mode f says of the head of qid as its next delivery. */
static bool fit_verdict(enum fit_mode f, uint32_t deliveries, size_t len)
{
	switch (f) {
	case FIT_NOTHING: return false;
	case FIT_FIRST_ONLY: return deliveries == 1;
	case FIT_SHORT: return len <= 3;
	default: return true;
	}
}

static bool fits(void *ctx, const struct delivery *d)
{
	struct fit *f = ctx;
	CHECK(f->mode != FIT_NONE);
	struct mqueue *q = &m.mq[f->qid];
	CHECK(q->n > 0 && q->fifo[0] == d->task);   /* the head, previewed */
	struct mtask *t = task_of(d->task);
	CHECK(d->deliveries == t->deliveries + 1);
	CHECK(d->item_len == t->len && memcmp(d->item, t->item, t->len) == 0);
	bool ok = fit_verdict(f->mode, d->deliveries, d->item_len);
	f->refused = !ok;
	return ok;
}

/* A delivery d of a get with this lease and holder: the model's task. */
static void claim_take(const struct delivery *d, int qid, msec_t lease,
                       int holder)
{
	CHECK(d && d->task == m.unclaimed_take);
	m.unclaimed_take = 0;
	struct mtask *t = task_of(d->task);
	CHECK(t->state == M_INFLIGHT && t->qid == qid);
	CHECK(d->deliveries == t->deliveries);
	CHECK(d->item_len == t->len && memcmp(d->item, t->item, t->len) == 0);
	if (lease) {
		t->leased = true;
		t->lease_at = after(lease);
	} else {
		t->holder = holder;
	}
}

static void claim_put(uint64_t task, int qid, const char *item, size_t len)
{
	CHECK(task && task == m.unclaimed_put);
	m.unclaimed_put = 0;
	struct mtask *t = task_of(task);
	CHECK(t->len == len && memcmp(t->item, item, len) == 0);
	/* it may have been delivered to a waiting getter already */
	CHECK(t->qid == qid && (t->state == M_QUEUED || t->state == M_INFLIGHT));
}

static void on_done(struct waiter *w, int code, const struct delivery *d,
                    uint64_t task)
{
	struct slot *s = container_of(w, struct slot, w);
	CHECK(s->state == S_PARKED);        /* parked, once, and not cancelled */
	s->state = S_FREE;

	if (code == JQ_OK || code == JQ_TOO_LARGE)   /* served in arrival order */
		for (int i = 0; i < NSLOTS; i++)
			CHECK(!(m.slots[i].state == S_PARKED &&
			        m.slots[i].kind == s->kind &&
			        m.slots[i].qid == s->qid && m.slots[i].seq < s->seq));

	static const int timeout_code[] = {
		[WAIT_PUT] = JQ_FULL, [WAIT_GET] = JQ_EMPTY, [WAIT_JOIN] = JQ_TIMEOUT,
	};
	if (code == JQ_OK) {
		switch (s->kind) {
		case WAIT_PUT:
			CHECK(!d);
			claim_put(task, s->qid, s->item, s->len);
			break;
		case WAIT_GET:
			CHECK(d && task == d->task);
			CHECK(s->fit.mode == FIT_NONE || !s->fit.refused);
			claim_take(d, s->qid, s->lease, s->holder);
			break;
		case WAIT_JOIN:
			CHECK(unfinished(s->qid) == 0);
			break;
		}
	} else if (code == timeout_code[s->kind]) {
		/* or a getter of a queue deleted */
		CHECK((m.op == OP_ADVANCE && s->deadline <= now) ||
		      (m.op == OP_EXPIRE && m.op_slot == s) ||
		      (m.op == OP_DELETE && s->kind == WAIT_GET &&
		       s->qid == m.op_qid));
	} else if (code == JQ_TOO_LARGE) {
		CHECK(s->kind == WAIT_GET && s->fit.mode != FIT_NONE &&
		      s->fit.refused);
	} else {
		CHECK(code == JQ_SHUTTING_DOWN && m.op == OP_CANCEL_ALL);
	}
	if (m.op == OP_DELETE)   /* a getter answered empty: all, in order */
		for (int i = 0; i < NSLOTS; i++)
			CHECK(!(m.slots[i].state == S_PARKED &&
			        m.slots[i].qid == s->qid && m.slots[i].seq < s->seq));
}

static struct slot *free_slot(void)
{
	for (int i = 0; i < NSLOTS; i++)
		if (m.slots[i].state == S_FREE)
			return &m.slots[i];
	return NULL;
}

/* The k-th parked waiter, counting round; NULL if none is parked. */
static struct slot *parked_slot(unsigned k)
{
	unsigned n = 0;
	for (int i = 0; i < NSLOTS; i++)
		n += m.slots[i].state == S_PARKED;
	if (!n)
		return NULL;
	k %= n;
	for (int i = 0; i < NSLOTS; i++)
		if (m.slots[i].state == S_PARKED && k-- == 0)
			return &m.slots[i];
	return NULL;
}

static void arm(struct slot *s, enum wait_kind kind, int qid, msec_t timeout)
{
	memset(&s->w, 0, sizeof s->w);
	s->w.timeout = timeout;
	s->w.done = on_done;
	s->kind = kind;
	s->qid = qid;
	s->state = S_CALLING;    /* done() must not come for this call */
	s->fit = (struct fit){ FIT_NONE, qid, false };
	s->holder = -1;
	s->lease = 0;
	s->len = 0;
}

static void parked(struct slot *s, msec_t timeout)
{
	s->state = S_PARKED;
	s->deadline = after(timeout);
	s->seq = ++m.seq;
}

/* ---- checking the whole state --------------------------------------------- */

static bool is_live(const struct mtask *t)
{
	return t->state == M_QUEUED || t->state == M_INFLIGHT ||
	       t->state == M_DELAYED;
}

struct snap_task {
	uint32_t qid;
	uint64_t task;
	uint32_t deliveries;
	enum engine_task_state state;
	msec_t until;
	char item[16];
	size_t len;
	size_t order;
};

struct snap {
	char names[NNAMES][16];    /* by qid; "": a free id */
	struct queue_conf declared[NNAMES];   /* dead_letter: one of names[] */
	size_t nq;
	uint64_t next_id;
	unsigned next_id_calls;
	struct snap_task *t;
	size_t nt, cap;
};

static void s_queue(void *ctx, uint32_t qid, const char *name, size_t len)
{
	struct snap *s = ctx;
	CHECK(qid == s->nq && s->nq < NNAMES && len < sizeof s->names[0]);
	CHECK(s->nt == 0 && s->next_id_calls == 0);
	memcpy(s->names[s->nq], name, len);
	s->names[s->nq][len] = '\0';
	s->nq++;
}

/* The declared settings of the queue dumped last. */
static void s_settings(void *ctx, uint32_t qid, const struct queue_conf *d)
{
	struct snap *s = ctx;
	CHECK(s->nq && qid == s->nq - 1 && s->names[qid][0]);
	struct queue_conf *c = &s->declared[qid];
	CHECK(!c->has_maxsize && !c->has_max_deliveries && !c->dead_letter);
	*c = *d;
	c->name = NULL;
	if (d->dead_letter)
		c->dead_letter = (char *)names[name_index(d->dead_letter,
		                                          strlen(d->dead_letter))];
}

static bool same_settings(const struct queue_conf *a,
                          const struct queue_conf *b)
{
	return a->has_maxsize == b->has_maxsize && a->maxsize == b->maxsize &&
	       a->has_max_deliveries == b->has_max_deliveries &&
	       a->max_deliveries == b->max_deliveries &&
	       a->dead_letter == b->dead_letter;   /* both names[] or NULL */
}

static void s_next_id(void *ctx, uint64_t next)
{
	struct snap *s = ctx;
	s->next_id = next;
	s->next_id_calls++;
}

static void s_task(void *ctx, uint32_t qid, uint64_t task, uint32_t deliveries,
                   enum engine_task_state state, msec_t until, const char *item,
                   size_t len)
{
	struct snap *s = ctx;
	if (s->nt == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 64;
		s->t = realloc(s->t, s->cap * sizeof *s->t);
		CHECK(s->t);
	}
	CHECK(len <= sizeof s->t[0].item);
	struct snap_task *t = &s->t[s->nt];
	memset(t, 0, sizeof *t);
	*t = (struct snap_task){ qid, task, deliveries, state, until, "", len,
	                         s->nt };
	memcpy(t->item, item, len);
	s->nt++;
}

/* Queued tasks as dumped (queue by queue, in order), then the others by id. */
static int snap_order(const void *a, const void *b)
{
	const struct snap_task *x = a, *y = b;
	bool xq = x->state == ENGINE_QUEUED, yq = y->state == ENGINE_QUEUED;
	if (xq != yq)
		return xq ? -1 : 1;
	if (xq)
		return x->order < y->order ? -1 : x->order > y->order;
	return x->task < y->task ? -1 : x->task > y->task;
}

static void take_snap(const struct engine *e, struct snap *s)
{
	memset(s, 0, sizeof *s);
	const struct engine_dump cb = {
		.ctx = s, .queue = s_queue, .settings = s_settings,
		.next_id = s_next_id, .task = s_task,
	};
	engine_dump(e, &cb);
	CHECK(s->next_id_calls == 1);
	if (s->nt)
		qsort(s->t, s->nt, sizeof *s->t, snap_order);
}

static void same_snap(const struct snap *a, const struct snap *b)
{
	CHECK(a->nq == b->nq && a->next_id == b->next_id && a->nt == b->nt);
	for (size_t i = 0; i < a->nq; i++)
		CHECK(strcmp(a->names[i], b->names[i]) == 0 &&
		      same_settings(&a->declared[i], &b->declared[i]));
	for (size_t i = 0; i < a->nt; i++) {
		const struct snap_task *x = &a->t[i], *y = &b->t[i];
		CHECK(x->qid == y->qid && x->task == y->task &&
		      x->deliveries == y->deliveries && x->state == y->state &&
		      x->until == y->until && x->len == y->len &&
		      memcmp(x->item, y->item, x->len) == 0);
	}
}

/* The engine's dump is the model: every live task once, in its place. */
static void check_dump(const struct snap *s)
{
	size_t pos[NNAMES] = { 0 }, live = 0;
	int end = m.nids;   /* past the highest id in use */

	while (end && !m.mq[end - 1].exists)
		end--;
	CHECK(s->nq == (size_t)end);
	for (int i = 0; i < end; i++) {
		const struct mqueue *q = &m.mq[i];
		CHECK(strcmp(s->names[i], q->exists ? names[q->name] : "") == 0);
		if (q->exists)
			CHECK(same_settings(&s->declared[i], &q->declared));
	}
	CHECK(s->next_id > m.last_id);
	m.gen++;
	for (size_t i = 0; i < s->nt; i++) {
		const struct snap_task *d = &s->t[i];
		CHECK(exists(d->qid));
		struct mtask *t = task_of(d->task);
		CHECK(t->seen != m.gen);          /* in one place only */
		t->seen = m.gen;
		CHECK(t->qid == (int)d->qid && t->deliveries == d->deliveries);
		CHECK(t->len == d->len && memcmp(t->item, d->item, d->len) == 0);
		switch (d->state) {
		case ENGINE_QUEUED:
			CHECK(t->state == M_QUEUED);
			CHECK(pos[d->qid] < m.mq[d->qid].n &&
			      m.mq[d->qid].fifo[pos[d->qid]] == d->task);
			pos[d->qid]++;
			break;
		case ENGINE_INFLIGHT:
			CHECK(t->state == M_INFLIGHT);
			break;
		case ENGINE_DELAYED:
			CHECK(t->state == M_DELAYED && t->until == d->until);
			break;
		default:
			CHECK(!"a task state of engine.h");
		}
	}
	for (int q = 0; q < NNAMES; q++)
		CHECK(pos[q] == (m.mq[q].exists ? m.mq[q].n : 0));
	for (uint64_t id = 1; id <= m.last_id; id++)
		live += is_live(&m.t[id]);
	CHECK(live == s->nt);                 /* none lost */
}

/* The engine's name of a dead-letter queue is the model's dl for the
 * queue of name n. */
static void check_dead_letter(const char *got, int dl, int n)
{
	char other[32];
	snprintf(other, sizeof other, "%s.dead", names[n]);
	if (dl == -1)
		CHECK(got == NULL);
	else
		CHECK(got && !strcmp(got, dl == DL_OTHER ? other : names[dl]));
}

static void check_all(void)
{
	struct engine *e = m.e;
	CHECK(m.unclaimed_put == 0 && m.unclaimed_take == 0);
	CHECK(engine_queue_count(e) == (size_t)m.nq);

	/* The engine lists its queues by id: the model's, in order. */
	int qid = -1;
	for (struct queue *q = engine_next_queue(e, NULL); q;
	     q = engine_next_queue(e, q)) {
		while (++qid < NNAMES && !m.mq[qid].exists)
			;
		CHECK(qid < NNAMES);
		struct mqueue *mq = &m.mq[qid];
		if (!mq->q)    /* a dead-letter queue, made by the engine */
			mq->q = q;
		CHECK(mq->q == q);
		CHECK(strcmp(queue_name(q), names[mq->name]) == 0);
		struct queue_stats s;
		engine_queue_stats(e, q, NULL, 0, &s);
		CHECK(s.unfinished == s.qsize + s.inflight + s.delayed);
		CHECK(s.qsize == mq->n && s.inflight == mq->inflight &&
		      s.delayed == mq->delayed);
		CHECK(s.maxsize == maxsize_of(mq->name, &mq->declared));
		CHECK(s.max_deliveries == max_deliveries_of(mq->name,
		                                            &mq->declared));
		struct queue_settings set = engine_queue_settings(e, q);
		check_dead_letter(set.dead_letter,
		                  dead_letter_of(mq->name, &mq->declared), mq->name);
		CHECK(s.puts == s.task_dones + s.dead_lettered + s.purged +
		      s.unfinished);
		CHECK(s.gets >= s.redeliveries);
		CHECK(s.waiting_puts == waiting(qid, WAIT_PUT));
		CHECK(s.waiting_gets == waiting(qid, WAIT_GET));
		CHECK(s.waiting_joins == waiting(qid, WAIT_JOIN));
		/* nobody waits for what is there */
		CHECK(!(s.waiting_gets && s.qsize));
		CHECK(!(s.waiting_puts && !full(qid)));
		CHECK(!(s.waiting_joins && s.unfinished == 0));
	}
	while (++qid < NNAMES)
		CHECK(!m.mq[qid].exists);
	for (int n = 0; n < NNAMES; n++) {
		if (m.qid_of[n] >= 0)
			continue;
		struct queue *q = (struct queue *)1;
		CHECK(engine_queue(e, names[n], strlen(names[n]), false, &q) ==
		      JQ_OK && q == NULL);
		struct queue_stats s;
		engine_queue_stats(e, NULL, names[n], strlen(names[n]), &s);
		CHECK(s.maxsize == maxsize_of(n, NULL) && s.qsize == 0 &&
		      s.unfinished == 0);
	}

	/* every id in one place */
	struct snap s;
	take_snap(e, &s);
	check_dump(&s);
	CHECK(engine_next_task_id(e) == s.next_id);
	free(s.t);

	/* the deadline is the earliest the model knows of, and nothing due is
	 * left undone once the clock has been read */
	msec_t next = NEVER;
	bool live = false;
	for (uint64_t id = 1; id <= m.last_id; id++) {
		const struct mtask *t = &m.t[id];
		live |= is_live(t);
		if (t->state == M_INFLIGHT && t->leased && t->lease_at < next)
			next = t->lease_at;
		if (t->state == M_DELAYED && t->until < next)
			next = t->until;
		bool sampled = m.last_id <= 256 || id + 64 > m.last_id;
		if (sampled) {
			const struct queue *tq = engine_task_queue(e, id);
			CHECK((tq != NULL) == (t->state == M_INFLIGHT));
			CHECK(!tq || tq == m.mq[t->qid].q);
		}
		if (t->state == M_INFLIGHT && m.op == OP_ADVANCE)
			CHECK(!t->leased || t->lease_at > now);
		if (t->state == M_DELAYED && m.op == OP_ADVANCE)
			CHECK(t->until > now);
	}
	for (int i = 0; i < NSLOTS; i++) {
		const struct slot *sl = &m.slots[i];
		CHECK(sl->state == S_FREE || sl->state == S_PARKED);
		if (sl->state != S_PARKED)
			continue;
		if (sl->deadline < next)
			next = sl->deadline;
		if (m.op == OP_ADVANCE)
			CHECK(sl->deadline > now);
	}
	CHECK(engine_next_deadline(e) == next);
	CHECK((engine_live_bytes(e) == 0) == !live);

	for (int h = 0; h < NHOLDERS; h++) {
		bool holds = false;
		for (uint64_t id = 1; id <= m.last_id; id++)
			holds |= m.t[id].state == M_INFLIGHT && m.t[id].holder == h;
		CHECK((m.holders[h].tasks != NULL) == holds);
	}
}

/* ---- replay ----------------------------------------------------------------- */

static void same_counts(struct engine *a, struct engine *b, bool ended)
{
	CHECK(engine_queue_count(a) == engine_queue_count(b));
	for (struct queue *x = engine_next_queue(a, NULL),
	     *y = engine_next_queue(b, NULL); x || y;
	     x = engine_next_queue(a, x), y = engine_next_queue(b, y)) {
		CHECK(x && y && strcmp(queue_name(x), queue_name(y)) == 0);
		struct queue_stats sx, sy;
		engine_queue_stats(a, x, NULL, 0, &sx);
		engine_queue_stats(b, y, NULL, 0, &sy);
		CHECK(sx.max_deliveries == sy.max_deliveries);
		CHECK(sy.unfinished == sy.qsize + sy.inflight + sy.delayed);
		if (ended)   /* in flight back at the head */
			CHECK(sy.qsize == sx.qsize + sx.inflight && sy.inflight == 0);
		else
			CHECK(sy.qsize == sx.qsize && sy.inflight == sx.inflight);
		CHECK(sy.delayed == sx.delayed && sy.maxsize == sx.maxsize);
	}
	CHECK(engine_next_task_id(a) == engine_next_task_id(b));
}

/* The log recorded so far, and a dump, each replayed into a fresh engine,
 * give the state of the live one. */
static void check_replay(void)
{
	struct snap live, got;
	take_snap(m.e, &live);

	struct engine *r = engine_new(&conf);
	for (size_t i = 0; i < m.rec.n; i++)
		CHECK(log_record_replay(r, &m.rec.v[i]) == 0);
	same_counts(m.e, r, false);
	take_snap(r, &got);
	same_snap(&live, &got);
	free(got.t);
	engine_replay_end(r);
	same_counts(m.e, r, true);
	engine_free(r);

	r = engine_new(&conf);
	for (size_t i = 0; i < live.nq; i++) {
		const struct queue_conf *d = &live.declared[i];
		CHECK(engine_replay_queue(r, (uint32_t)i, live.names[i],
		                          strlen(live.names[i])) == 0);
		if (d->has_maxsize || d->has_max_deliveries || d->dead_letter)
			CHECK(engine_replay_settings(r, (uint32_t)i, d) == 0);
	}
	engine_replay_next_id(r, live.next_id);
	for (size_t i = 0; i < live.nt; i++) {
		const struct snap_task *t = &live.t[i];
		CHECK(engine_replay_task(r, t->qid, t->task, t->deliveries, t->state,
		                         t->until, t->item, t->len) == 0);
	}
	same_counts(m.e, r, false);
	take_snap(r, &got);
	same_snap(&live, &got);
	free(got.t);
	engine_free(r);
	free(live.t);
}

/* ---- the ops ----------------------------------------------------------------- */

/* The queue of name n, made as put and get make it; -1 when max_queues
 * refuses it. */
static int open_queue(int n)
{
	bool known = m.qid_of[n] >= 0;
	bool room = m.nq < (int)conf.max_queues;
	struct queue *q = NULL;
	int rc = engine_queue(m.e, names[n], strlen(names[n]), true, &q);
	if (!known && !room) {
		CHECK(rc == JQ_TOO_MANY_QUEUES && q == NULL);
		return -1;
	}
	CHECK(rc == JQ_OK && q);
	CHECK(m.qid_of[n] >= 0);           /* told to the log if new */
	int qid = m.qid_of[n];
	if (known)
		CHECK(m.mq[qid].q == q);
	m.mq[qid].q = q;
	return qid;
}

static void do_put(int n, const char *item, size_t len, bool wait,
                   msec_t timeout)
{
	int qid = open_queue(n);
	if (qid < 0)
		return;
	struct slot *s = wait ? free_slot() : NULL;
	if (wait && !s)
		return;
	bool blocked = full(qid) || waiting(qid, WAIT_PUT);
	size_t nev = m.rec.n;
	uint64_t task = 0;
	if (s) {
		arm(s, WAIT_PUT, qid, timeout);
		memcpy(s->item, item, len);
		s->len = len;
	}
	int rc = engine_put(m.e, m.mq[qid].q, item, len, s ? &s->w : NULL, &task);
	if (blocked) {
		CHECK(rc == (s ? JQ_PARKED : JQ_FULL));
		CHECK(m.rec.n == nev);
		if (s)
			parked(s, timeout);
	} else {
		CHECK(rc == JQ_OK);
		claim_put(task, qid, item, len);
		if (s)
			s->state = S_FREE;
	}
}

static void do_get(int n, int holder, msec_t lease, enum fit_mode fm,
                   bool wait, msec_t timeout)
{
	int qid = open_queue(n);
	if (qid < 0)
		return;
	struct slot *s = wait ? free_slot() : NULL;
	if (wait && !s)
		return;
	struct fit local = { fm, qid, false };
	struct fit *f = s ? &s->fit : &local;
	if (s) {
		arm(s, WAIT_GET, qid, timeout);
		s->fit = local;
		s->holder = lease ? -1 : holder;
		s->lease = lease;
	}
	struct take tk = {
		.holder = holder >= 0 ? &m.holders[holder] : NULL,
		.lease = lease,
		.fits = fm == FIT_NONE ? NULL : fits,
		.ctx = f,
	};
	struct mqueue *q = &m.mq[qid];
	bool empty = q->n == 0 || waiting(qid, WAIT_GET);
	bool refused = !empty && fm != FIT_NONE &&
	               !fit_verdict(fm, task_of(q->fifo[0])->deliveries + 1,
	                            task_of(q->fifo[0])->len);
	uint64_t head = empty ? 0 : q->fifo[0];
	size_t nev = m.rec.n;
	struct delivery d = { 0 };

	int rc = engine_get(m.e, q->q, &tk, s ? &s->w : NULL, &d);
	if (empty) {
		CHECK(rc == (s ? JQ_PARKED : JQ_EMPTY));
		CHECK(m.rec.n == nev);
		if (s)
			parked(s, timeout);
		return;
	}
	if (s)
		s->state = S_FREE;
	if (refused) {
		CHECK(rc == JQ_TOO_LARGE && m.rec.n == nev && f->refused);
		return;
	}
	CHECK(rc == JQ_OK && d.task == head);
	claim_take(&d, qid, lease, lease ? -1 : holder);
}

static void do_task_done(uint64_t id)
{
	bool in = id >= 1 && id <= m.last_id && m.t[id].state == M_INFLIGHT;
	const struct queue *tq = engine_task_queue(m.e, id);
	CHECK((tq != NULL) == in);
	int qid = in ? m.t[id].qid : -1;
	size_t nev = m.rec.n;
	uint64_t left = UINT64_MAX;

	m.op_task = id;
	int rc = engine_task_done(m.e, id, &left);
	if (!in) {
		CHECK(rc == JQ_UNKNOWN_TASK && m.rec.n == nev);
		return;
	}
	CHECK(rc == JQ_OK && m.t[id].state == M_FINISHED);
	CHECK(left == unfinished(qid));
}

static void do_release(uint64_t id, msec_t delay)
{
	bool in = id >= 1 && id <= m.last_id && m.t[id].state == M_INFLIGHT;
	size_t nev = m.rec.n;
	uint32_t deliveries = in ? m.t[id].deliveries : 0;
	bool dead = in && deliveries_used_up(&m.t[id]);

	m.op_task = id;
	m.op_delay = delay;
	int rc = engine_release(m.e, id, delay);
	if (!in) {
		CHECK(rc == JQ_UNKNOWN_TASK && m.rec.n == nev);
		return;
	}
	CHECK(rc == JQ_OK);
	const struct mtask *t = &m.t[id];
	if (dead)
		CHECK(t->state == M_DEAD);
	else if (delay)
		CHECK(t->state == M_DELAYED);
	else   /* back at the head, or at once to a waiting getter */
		CHECK(t->state == M_QUEUED ||
		      (t->state == M_INFLIGHT && t->deliveries == deliveries + 1));
}

static void do_join(int n, bool wait, msec_t timeout)
{
	int qid = m.qid_of[n];
	struct queue *q = (struct queue *)1;
	CHECK(engine_queue(m.e, names[n], strlen(names[n]), false, &q) == JQ_OK);
	CHECK(q == (qid >= 0 ? m.mq[qid].q : NULL));
	CHECK(m.qid_of[n] == qid);         /* join makes no queue */
	struct slot *s = wait ? free_slot() : NULL;
	if (wait && !s)
		return;
	if (s)
		arm(s, WAIT_JOIN, qid, timeout);
	int rc = engine_join(m.e, q, s ? &s->w : NULL);
	if (unfinished(qid) == 0) {
		CHECK(rc == JQ_OK);
		if (s)
			s->state = S_FREE;
	} else if (s) {
		CHECK(rc == JQ_PARKED);
		parked(s, timeout);
	} else {
		CHECK(rc == JQ_TIMEOUT);
	}
}

/* declare: how's bits name maxsize (1), max_deliveries (2), dead_letter
 * (4; always with a max_deliveries above 0, so that dead letters go to a
 * queue the harness names), and make it dry (8); v holds their values. */
static void do_declare(int n, uint8_t how, const uint8_t v[3])
{
	struct queue_conf w = { .name = (char *)names[n] };
	int want_dl = -1;
	if (how & 1) {
		w.has_maxsize = true;
		w.maxsize = v[0] % 4;
	}
	if (how & 2) {
		w.has_max_deliveries = true;
		w.max_deliveries = v[1] % 3;
	}
	if (how & 4 || w.max_deliveries) {
		want_dl = v[2] % NNAMES;
		if (want_dl == n)
			want_dl = (n + 1) % NNAMES;
		w.dead_letter = (char *)names[want_dl];
	}
	bool dry = how & 8;

	/* Held to the queue's own settings, or to the configuration's. */
	int qid = m.qid_of[n];
	const struct queue_conf *c = conf_of(n);
	const struct queue_conf *d = qid >= 0 ? &m.mq[qid].declared : NULL;
	bool held = qid >= 0;
	const char *conflict =
		w.has_maxsize && w.maxsize != maxsize_of(n, d) &&
		(held || (c && c->has_maxsize)) ? "maxsize" :
		w.has_max_deliveries &&
		w.max_deliveries != max_deliveries_of(n, d) &&
		(held || (c && c->has_max_deliveries)) ? "max_deliveries" :
		w.dead_letter && want_dl != dead_letter_of(n, d) &&
		(held || (c && c->dead_letter)) ? "dead_letter" : NULL;
	bool room = held || m.nq < (int)conf.max_queues;
	size_t nev = m.rec.n;
	struct declare_result r;

	int rc = engine_declare(m.e, &w, dry, &r);
	if (conflict) {
		CHECK(rc == JQ_CONFLICT && !strcmp(r.conflict, conflict));
		CHECK(r.configured == (!held || (c && (
		      !strcmp(conflict, "maxsize") ? c->has_maxsize :
		      !strcmp(conflict, "max_deliveries") ? c->has_max_deliveries :
		      c->dead_letter != NULL))));
	} else if (!room) {
		CHECK(rc == JQ_TOO_MANY_QUEUES);
	}
	if (conflict || !room) {
		CHECK(r.queue == NULL && m.rec.n == nev && m.qid_of[n] == qid);
		return;
	}
	CHECK(rc == JQ_OK && r.created == !held);
	if (dry || held)
		CHECK(m.rec.n == nev);
	if (dry) {
		CHECK(r.queue == NULL && m.qid_of[n] == qid);
		d = held ? d : &w;
	} else {
		qid = m.qid_of[n];
		CHECK(qid >= 0 && r.queue);
		if (!held) {
			m.mq[qid].q = r.queue;
			CHECK(same_settings(&m.mq[qid].declared, &w));
		}
		CHECK(m.mq[qid].q == r.queue);
		d = &m.mq[qid].declared;
	}
	CHECK(r.settings.maxsize == maxsize_of(n, d));
	CHECK(r.settings.max_deliveries == max_deliveries_of(n, d));
	check_dead_letter(r.settings.dead_letter, dead_letter_of(n, d), n);
}

static void do_purge(int n)
{
	int qid = m.qid_of[n];
	uint64_t queued = qid >= 0 ? m.mq[qid].n : 0;
	size_t nev = m.rec.n;
	m.op_qid = qid;
	CHECK(engine_purge(m.e, qid >= 0 ? m.mq[qid].q : NULL) == queued);
	if (queued)   /* told, then blocked puts and joins may go on */
		CHECK(m.rec.n > nev && m.rec.v[nev].kind == L_PURGE);
	else
		CHECK(m.rec.n == nev);
}

static void do_delete(int n)
{
	int qid = m.qid_of[n];
	if (qid < 0)
		return;
	bool idle = unfinished(qid) == 0;
	size_t nev = m.rec.n;
	m.op_qid = qid;
	int rc = engine_delete(m.e, m.mq[qid].q);
	if (!idle) {
		CHECK(rc == JQ_CONFLICT && m.rec.n == nev && m.qid_of[n] == qid);
		return;
	}
	CHECK(rc == JQ_OK && m.rec.n == nev + 1 && m.qid_of[n] == -1);
}

static void do_advance(msec_t delta)
{
	now = delta >= NEVER - 1 - now ? NEVER - 1 : now + delta;
	engine_advance(m.e);
	CHECK(engine_next_deadline(m.e) > now);
}

static void do_drop_holder(int h)
{
	m.op_holder = h;
	engine_drop_holder(m.e, &m.holders[h]);
	for (uint64_t id = 1; id <= m.last_id; id++)   /* or taken again */
		CHECK(!(m.t[id].state == M_INFLIGHT && m.t[id].holder == h &&
		        m.t[id].taken_step != m.step));
}

static void do_cancel(struct slot *s)
{
	size_t nev = m.rec.n;
	s->state = S_CANCELLING;           /* done() must not come */
	engine_cancel(m.e, &s->w);
	s->state = S_FREE;
	CHECK(m.rec.n == nev);
}

static void do_expire(struct slot *s)
{
	size_t nev = m.rec.n;
	m.op_slot = s;
	engine_expire(m.e, &s->w);
	CHECK(s->state == S_FREE);         /* done() came, once */
	CHECK(m.rec.n == nev);
}

static void do_cancel_all(void)
{
	size_t nev = m.rec.n;
	engine_cancel_waiters(m.e, JQ_SHUTTING_DOWN);
	for (int i = 0; i < NSLOTS; i++)
		CHECK(m.slots[i].state == S_FREE);
	CHECK(m.rec.n == nev);
}

/* ---- the program ------------------------------------------------------------ */

struct input {
	const uint8_t *p;
	size_t n;
};

static uint8_t byte(struct input *in)
{
	if (!in->n)
		return 0;
	in->n--;
	return *in->p++;
}

static msec_t wait_ms(uint8_t b)
{
	return b >= 0xC0 ? NEVER : (msec_t)b * 4;
}

static uint64_t pick_task(uint8_t b, struct input *in)
{
	if (b < 0xF0) {
		uint64_t span = m.last_id < 0xF0 ? m.last_id : 0xF0;
		return span ? m.last_id - b % span : 1;
	}
	switch (b & 7) {
	case 0: return 0;
	case 1: return m.last_id + 1;
	case 2: return TASK_ID_MAX;
	case 3: return UINT64_MAX;
	default: return 1 + byte(in);
	}
}

static void step(enum op op, struct input *in)
{
	m.op = op;
	m.op_task = 0;
	m.op_delay = 0;
	m.op_holder = -1;
	m.op_slot = NULL;
	m.op_qid = -1;
	m.step++;

	switch (op) {
	case OP_PUT:
	case OP_PUT_WAIT: {
		int n = byte(in) % NNAMES;
		char item[16];
		size_t len = byte(in) % 9;
		for (size_t i = 0; i < len; i++)
			item[i] = (char)byte(in);
		msec_t timeout = op == OP_PUT_WAIT ? wait_ms(byte(in)) : 0;
		do_put(n, item, len, op == OP_PUT_WAIT, timeout);
		break;
	}
	case OP_GET:
	case OP_GET_WAIT: {
		int n = byte(in) % NNAMES;
		uint8_t how = byte(in);
		int holder = (int)(how & 3) - 1;           /* -1: none */
		msec_t lease = how & 4 ? 1 + byte(in) : 0;
		if (how & 8 && lease)
			lease = lease * 100000;
		enum fit_mode fm = (enum fit_mode)((how >> 4) % FIT_MODES);
		msec_t timeout = op == OP_GET_WAIT ? wait_ms(byte(in)) : 0;
		do_get(n, holder, lease, fm, op == OP_GET_WAIT, timeout);
		break;
	}
	case OP_TASK_DONE: {
		uint8_t b = byte(in);
		do_task_done(pick_task(b, in));
		break;
	}
	case OP_RELEASE: {
		uint8_t b = byte(in);
		uint64_t id = pick_task(b, in);
		uint8_t d = byte(in);
		msec_t delay = d < 0x80 ? 0 : d == 0xFF ? NEVER - 1 : (msec_t)(d & 0x7F);
		do_release(id, delay);
		break;
	}
	case OP_JOIN:
	case OP_JOIN_WAIT: {
		int n = byte(in) % NNAMES;
		msec_t timeout = op == OP_JOIN_WAIT ? wait_ms(byte(in)) : 0;
		do_join(n, op == OP_JOIN_WAIT, timeout);
		break;
	}
	case OP_ADVANCE: {
		uint8_t b = byte(in);
		do_advance(b < 0xF0 ? b : (msec_t)(b & 0xF) << 20);
		break;
	}
	case OP_DROP_HOLDER:
		do_drop_holder(byte(in) % NHOLDERS);
		break;
	case OP_CANCEL:
	case OP_EXPIRE: {
		struct slot *s = parked_slot(byte(in));
		if (s && op == OP_CANCEL)
			do_cancel(s);
		else if (s)
			do_expire(s);
		break;
	}
	case OP_CANCEL_ALL:
		do_cancel_all();
		break;
	case OP_REPLAY:
		check_replay();
		break;
	case OP_DECLARE: {
		int n = byte(in) % NNAMES;
		uint8_t how = byte(in);
		uint8_t v[3] = { byte(in), byte(in), byte(in) };
		do_declare(n, how, v);
		break;
	}
	case OP_PURGE:
		do_purge(byte(in) % NNAMES);
		break;
	case OP_DELETE:
		do_delete(byte(in) % NNAMES);
		break;
	default:
		break;
	}
	check_all();
	if (m.step % 64 == 0)
		check_replay();
}

/* Every waiter answered, every task finished: the engine holds nothing. */
static void drain(void)
{
	step(OP_CANCEL_ALL, NULL);
	m.op = OP_ADVANCE;
	now = NEVER - 1;
	engine_advance(m.e);
	check_all();

	for (bool more = true; more;) {
		more = false;
		for (int qid = 0; qid < NNAMES; qid++)
			while (m.mq[qid].exists && m.mq[qid].n) {
				m.op = OP_GET;
				do_get(m.mq[qid].name, -1, 0, FIT_NONE, false, 0);
				check_all();
				more = true;
			}
		for (uint64_t id = 1; id <= m.last_id; id++)
			if (m.t[id].state == M_INFLIGHT) {
				m.op = OP_TASK_DONE;
				do_task_done(id);
				check_all();
				more = true;
			}
	}
	bool live = false;
	for (uint64_t id = 1; id <= m.last_id; id++)
		live |= is_live(&m.t[id]);   /* delayed till NEVER: never back */
	CHECK(live || engine_live_bytes(m.e) == 0);
	for (int qid = 0; qid < NNAMES; qid++)
		CHECK(live || !m.mq[qid].exists ||
		      engine_join(m.e, m.mq[qid].q, NULL) == JQ_OK);
	for (int h = 0; h < NHOLDERS; h++)
		CHECK(m.holders[h].tasks == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };

	memset(&m, 0, sizeof m);
	for (int i = 0; i < NNAMES; i++)
		m.qid_of[i] = -1;
	uint8_t settings = byte(&in);
	now = settings & 0x80 ? NEVER - 100000 : 1000;
	conf = (struct engine_conf){
		.clock = fake_clock,
		.default_maxsize = DEFAULT_MAXSIZE,
		.default_max_deliveries = (settings >> 3) & 3,
		.max_queues = 2 + (settings & 7) % 5,
		.queues = qconf,
		.nqueues = LEN(qconf),
	};
	m.e = engine_new(&conf);
	engine_set_log(m.e, &rec_log);
	check_all();

	while (in.n && m.step < 3000)
		step((enum op)(byte(&in) % OP_NOPS), &in);
	check_replay();
	drain();
	check_replay();

	engine_free(m.e);
	for (int i = 0; i < NNAMES; i++)
		free(m.mq[i].fifo);
	free(m.t);
	log_record_free(&m.rec);
	memset(&m, 0, sizeof m);
	return 0;
}
