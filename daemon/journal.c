/*
 * journal.c - the journal (see journal.h): the engine's changes as
 * records (record.h), batched per loop turn into one append to the store
 * (store.h), the positions the held replies wait on, compaction
 * (compact.h) started and finished, and what happens when a sync fails.
 * With journal = nats it also keeps the daemon's role: a standby's engine
 * is built from what the replicated store reads, and the log is set on it
 * only once the store has taken the stream over.
 */
#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "compact.h"
#include "journal.h"
#include "log.h"
#include "natsconn.h"
#include "record.h"
#include "store.h"
#include "xalloc.h"

struct journal {
	struct store *store;
	struct engine *engine;
	struct engine_log log;
	struct buf out;              /* records appended, not yet committed */
	uint64_t appended;           /* records (the position of the last) */
	struct compaction compaction;
	struct journal_conf conf;    /* nats: the daemon's callbacks */
	enum journal_role role;
	bool engine_used;            /* nats: the engine holds what was read */
	uint64_t replayed;           /* nats: records applied */
};

/*
 * A store that failed cannot say what survived (store.h, Errors): on Linux
 * a failed fsync may have dropped the dirty pages, and a later one then
 * succeeds with the data gone (PostgreSQL's "fsyncgate").  Where the
 * daemon does not see the error (SIGCHLD, close) the journal stops it
 * itself, as a crash would; a restart recovers what is durable.
 */
static void stop_now(void)
{
	log_error("journal: stopping now; a restart recovers what is on disk");
	_exit(EXIT_FAILURE);
}

/* ---- the engine's changes ----------------------------------------------- */

/* A record of the engine's goes into the current batch (the first of a
 * commit opens it); begin returns where it starts. */
static size_t begin(struct journal *j)
{
	if (j->out.len == 0)
		record_batch_open(&j->out);
	return j->out.len;
}

/* The record that begins at `at` is in: while a child writes a snapshot,
 * it also follows the snapshot. */
static void appended(struct journal *j, size_t at)
{
	if (compact_running(&j->compaction))
		compact_note(&j->compaction, j->out.p + at, j->out.len - at);
	j->appended++;
}

static void on_queue(void *ctx, uint32_t qid, const char *name, size_t len)
{
	struct journal *j = ctx;
	size_t at = begin(j);
	record_queue(&j->out, qid, name, len);
	appended(j, at);
}

static void on_settings(void *ctx, uint32_t qid, const struct queue_conf *d)
{
	struct journal *j = ctx;
	size_t at = begin(j);
	record_settings(&j->out, qid, d);
	appended(j, at);
}

static void on_purge(void *ctx, uint32_t qid)
{
	struct journal *j = ctx;
	size_t at = begin(j);
	record_purge(&j->out, qid);
	appended(j, at);
}

static void on_drop(void *ctx, uint32_t qid)
{
	struct journal *j = ctx;
	size_t at = begin(j);
	record_drop(&j->out, qid);
	appended(j, at);
}

static void on_put(void *ctx, uint32_t qid, uint64_t task, const char *item,
                   size_t len)
{
	struct journal *j = ctx;
	size_t at = begin(j);
	record_put(&j->out, qid, task, item, len);
	appended(j, at);
}

static void on_take(void *ctx, uint32_t qid, uint64_t task)
{
	struct journal *j = ctx;
	size_t at = begin(j);
	record_take(&j->out, qid, task);
	appended(j, at);
}

static void on_done(void *ctx, uint64_t task)
{
	struct journal *j = ctx;
	size_t at = begin(j);
	record_done(&j->out, task);
	appended(j, at);
}

static void on_back(void *ctx, uint64_t task)
{
	struct journal *j = ctx;
	size_t at = begin(j);
	record_back(&j->out, task);
	appended(j, at);
}

static void on_delay(void *ctx, uint64_t task, msec_t until)
{
	struct journal *j = ctx;
	size_t at = begin(j);
	record_delay(&j->out, task, until);
	appended(j, at);
}

static void on_dead(void *ctx, uint64_t task, uint64_t new_task, int64_t dqid)
{
	struct journal *j = ctx;
	size_t at = begin(j);
	record_dead(&j->out, task, new_task, dqid);
	appended(j, at);
}

/* ---- commits ------------------------------------------------------------ */

int journal_reserve(struct journal *j, size_t len, bool small)
{
	if (j->role != ROLE_ACTIVE)
		return -1;
	return j->store->ops->reserve(j->store, j->out.len + len, small) ==
	       STORE_OK ? 0 : -1;
}

int journal_commit(struct journal *j)
{
	struct store *s = j->store;
	/* First what the store learnt since (a replicated store may change
	 * the role here, and the records of a takeover follow). */
	if (s->ops->check(s) != STORE_OK)
		return -1;
	if (j->out.len == 0)
		return 0;
	record_batch_seal(&j->out, 0);
	int rc = s->ops->append(s, j->out.p, j->out.len, j->appended);
	buf_reset(&j->out);
	return rc == STORE_OK ? 0 : -1;
}

int journal_sync(struct journal *j)
{
	return j->store->ops->sync(j->store) == STORE_OK ? 0 : -1;
}

uint64_t journal_appended(const struct journal *j)
{
	return j->appended;
}

uint64_t journal_safe(const struct journal *j)
{
	return j->store->ops->durable(j->store);
}

/* ---- compaction --------------------------------------------------------- */

void journal_maybe_compact(struct journal *j)
{
	if (j->role != ROLE_ACTIVE)
		return;
	compact_maybe(&j->compaction, j->store, j->engine, j->appended);
}

void journal_reap(struct journal *j)
{
	struct store *s = j->store;
	int status;
	if (!compact_reaped(&j->compaction, &status))
		return;
	msec_t took = store_clock_ms() - j->compaction.started;
	uint64_t before = s->ops->size(s);

	/* The old snapshot and log first get what is pending, so that they
	 * stay whole until the switch. */
	msec_t t0 = store_clock_ms();
	if (journal_commit(j) < 0)
		stop_now();
	int rc = compact_finish(&j->compaction, s, status);
	if (rc == STORE_FAILED)
		stop_now();
	if (rc == STORE_OK) {
		log_info("journal: compacted %s from %" PRIu64 " to %" PRIu64
		         " bytes (snapshot %llu ms, switch %llu ms)", s->name, before,
		         s->ops->size(s), (unsigned long long)took,
		         (unsigned long long)(store_clock_ms() - t0));
		journal_reserve(j, 0, true);
	}
}

/* ---- opening and closing ------------------------------------------------ */

/* Replays what the store holds into e; -1 with err if it is damaged. */
static int replay(struct journal *j, struct engine *e, char *err,
                  size_t errlen)
{
	struct store *s = j->store;
	const unsigned char *p;
	size_t len;
	struct record_replay r;
	struct buf header = { 0 };
	msec_t t0 = store_clock_ms();

	if (s->ops->load(s, &p, &len, err, errlen) < 0)
		return -1;
	enum record_end end = record_replay(p, len, e, &r);
	if (end == RECORD_DAMAGED) {
		snprintf(err, errlen, "%s is damaged at offset %" PRIu64 ": %s; "
		         "see joinqd --check-journal", s->name, r.good, r.why);
		return -1;
	}
	if (end == RECORD_TORN)
		log_warning("journal: %s: %s at offset %" PRIu64 "; cut off",
		            s->name, r.why, r.good);
	record_header(&header);
	int rc = s->ops->loaded(s, r.good, header.p, header.len, err, errlen);
	buf_free(&header);
	if (rc == 0)
		log_info("journal: %s: %" PRIu64 " records, %" PRIu64 " bytes "
		         "replayed in %llu ms", s->name, r.records, s->ops->size(s),
		         (unsigned long long)(store_clock_ms() - t0));
	return rc;
}

/* ---- journal = nats ----------------------------------------------------- */

/* What the replicated store read, into the engine: a whole image to a
 * fresh engine, or one append. */
static int nats_apply(void *ctx, const unsigned char *p, size_t len,
                      bool start)
{
	struct journal *j = ctx;
	struct record_replay r;
	if (start && j->engine_used)
		j->engine = j->conf.fresh_engine(j->conf.ctx);
	j->engine_used = true;
	enum record_end end = start ? record_replay(p, len, j->engine, &r) :
	                      record_replay_more(p, len, j->engine, &r);
	if (end != RECORD_CLEAN) {
		log_error("journal: %s: %s at offset %" PRIu64 " of %s",
		          j->store->name, end == RECORD_TORN ? "a torn snapshot" :
		          r.why, r.good, start ? "a snapshot" : "an append");
		return -1;
	}
	j->replayed += r.records;
	return 0;
}

static void nats_news(void *ctx, enum store_news what)
{
	struct journal *j = ctx;
	enum journal_role was = j->role;
	switch (what) {
	case STORE_CAUGHT_UP:
		j->role = ROLE_STANDBY;
		break;
	case STORE_TOOK_OVER:
		/* As after a restart: tasks in flight go back to their heads,
		 * and those records follow the takeover. */
		engine_set_log(j->engine, &j->log);
		engine_replay_end(j->engine);
		j->role = ROLE_ACTIVE;
		break;
	case STORE_REPLACED:
		/* What the engine holds past the stream was refused: no record
		 * more, and a fresh engine once the daemon dropped its clients. */
		engine_set_log(j->engine, NULL);
		buf_reset(&j->out);
		compact_stop(&j->compaction, j->store);
		j->role = ROLE_STARTING;
		break;
	}
	if (j->role != was && j->conf.role_changed)
		j->conf.role_changed(j->conf.ctx, was, j->role);
	if (what == STORE_REPLACED) {   /* it may hold what we appended */
		j->engine = j->conf.fresh_engine(j->conf.ctx);
		j->engine_used = false;
	}
}

static struct store *open_nats(struct journal *j, const struct journal_conf *conf,
                               char *err, size_t errlen)
{
	struct buf header = { 0 };
	struct store_reader reader = { j, nats_apply, nats_news };
	record_header(&header);
	struct store *s = store_nats_open(conf->nats, conf->base, conf->dir,
	                                  header.p, header.len,
	                                  !conf->role_changed, &reader, err,
	                                  errlen);
	buf_free(&header);
	return s;
}

struct journal *journal_open(const struct journal_conf *conf, struct engine *e,
                             char *err, size_t errlen)
{
	struct journal *j = xcalloc(1, sizeof *j);
	j->engine = e;
	j->conf = *conf;
	j->role = ROLE_ACTIVE;
	j->compaction.min_size = conf->compact_size;
	j->compaction.ratio = conf->compact_ratio;
	j->log = (struct engine_log){
		.ctx = j, .queue = on_queue, .settings = on_settings, .put = on_put,
		.take = on_take, .done = on_done, .back = on_back, .delay = on_delay,
		.dead = on_dead, .purge = on_purge, .drop = on_drop,
	};
	if (conf->kind == JOURNAL_NATS) {
		/* Nothing to replay now: the store reads the stream as the loop
		 * runs, and says when this daemon is a standby, or active. */
		j->role = ROLE_STARTING;
		j->store = open_nats(j, conf, err, errlen);
		if (!j->store)
			goto fail;
		return j;
	}
	j->store = store_file_open(conf->dir, conf->fsync == FSYNC_ALWAYS, err,
	                           errlen);
	if (!j->store || replay(j, e, err, errlen) < 0)
		goto fail;
	engine_set_log(e, &j->log);
	engine_replay_end(e);   /* tasks in flight back to their heads */
	if (journal_commit(j) < 0) {
		snprintf(err, errlen, "cannot write %s", j->store->name);
		engine_set_log(e, NULL);
		goto fail;
	}
	journal_reserve(j, 0, true);
	return j;

fail:
	if (j->store)
		j->store->ops->close(j->store);
	buf_free(&j->out);
	free(j);
	return NULL;
}

void journal_close(struct journal *j)
{
	if (!j)
		return;
	compact_stop(&j->compaction, j->store);
	int rc = journal_commit(j);
	engine_set_log(j->engine, NULL);
	if (j->store->ops->close(j->store) != STORE_OK || rc < 0)
		stop_now();
	buf_free(&j->out);
	free(j);
}

/* ---- roles ------------------------------------------------------------- */

enum journal_role journal_role(const struct journal *j)
{
	return j ? j->role : ROLE_ACTIVE;
}

const char *journal_role_name(enum journal_role role)
{
	switch (role) {
	case ROLE_STARTING: return "starting";
	case ROLE_STANDBY: return "standby";
	case ROLE_ACTIVE: return "active";
	}
	return "?";
}

const char *journal_active_addr(const struct journal *j)
{
	return j && j->conf.kind == JOURNAL_NATS ? store_nats_active(j->store) :
	       NULL;
}

void journal_figures(const struct journal *j, struct journal_figures *f)
{
	*f = (struct journal_figures){ .store = j ? j->store->name : "" };
	if (j && j->conf.kind == JOURNAL_NATS)
		store_nats_figures(j->store, &f->position, &f->lag, &f->takeovers);
	else if (j)
		f->position = j->appended;
}

int journal_check(const char *dir, bool repair)
{
	return store_file_check(dir, repair);
}

/* ---- joinqd --check-journal with journal = nats ------------------------- */

struct check {
	struct engine_conf conf;
	struct engine *engine;
};

static struct engine *check_fresh_engine(void *ctx)
{
	struct check *c = ctx;
	engine_free(c->engine);
	c->engine = engine_new(&c->conf);
	return c->engine;
}

static void check_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

int journal_check_nats(const struct nats_conf *nats, const char *dir)
{
	char err[512];
	struct check c = { .conf = { .clock = store_clock_ms } };
	natsconn_threads();
	struct event_base *base = event_base_new();
	c.engine = engine_new(&c.conf);
	struct journal_conf jc = {
		/* No role_changed: the store reads, never creates or takes over. */
		.kind = JOURNAL_NATS, .dir = dir, .nats = nats, .base = base,
		.ctx = &c, .fresh_engine = check_fresh_engine,
	};
	struct journal *j = journal_open(&jc, c.engine, err, sizeof err);
	if (!j) {
		fprintf(stderr, "joinqd: %s\n", err);
		event_base_free(base);
		engine_free(c.engine);
		return 2;
	}
	struct event *tick = event_new(base, -1, EV_PERSIST, check_tick, NULL);
	struct timeval tv = { 0, 50000 };
	event_add(tick, &tv);
	uint64_t until = store_clock_ms() + 15000;
	while (j->role == ROLE_STARTING && !store_nats_failed(j->store) &&
	       store_clock_ms() < until) {
		event_base_loop(base, EVLOOP_ONCE);
		j->store->ops->check(j->store);
	}
	int rc = 0;
	struct journal_figures f;
	journal_figures(j, &f);
	if (store_nats_failed(j->store)) {
		fprintf(stderr, "joinqd: stream %s is missing, damaged or not a "
		        "joinq journal (see the log above)\n", nats->stream);
		rc = 1;
	} else if (j->role == ROLE_STARTING) {
		fprintf(stderr, "joinqd: stream %s could not be read in 15 s "
		        "(see the log above)\n", nats->stream);
		rc = 2;
	} else {
		printf("stream %s: sound: read to sequence %" PRIu64 ", %" PRIu64
		       " records applied, %zu queues, next task id %" PRIu64 "\n",
		       nats->stream, f.position, j->replayed,
		       engine_queue_count(c.engine), engine_next_task_id(c.engine));
	}
	j->store->ops->close(j->store);
	buf_free(&j->out);
	free(j);
	event_free(tick);
	engine_free(c.engine);
	event_base_free(base);
	return rc;
}
