/*
 * log_recorder.h - for the engine's tests (tests/unit/test_engine.c and
 * tests/fuzz/fuzz_engine.c): a record of the calls the engine makes to
 * its journal (engine.h, struct engine_log), and the replay of each one
 * into a fresh engine, as the journal's replay (daemon/record.c) does.
 * The tests' log hooks check what they must and add each call here.
 * Header-only; an allocation that fails aborts.
 */
#ifndef JQ_TEST_LOG_RECORDER_H
#define JQ_TEST_LOG_RECORDER_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

enum lkind {
	L_QUEUE, L_PUT, L_TAKE, L_DONE, L_BACK, L_DELAY, L_DEAD, L_SETTINGS,
	L_PURGE, L_DROP,
};
#define L_LAST L_DROP

/* One call: the fields its kind has, the others 0. */
struct lev {
	enum lkind kind;
	uint32_t qid;
	uint64_t task, new_task;
	int64_t dqid;
	msec_t until;
	/* a queue's name, an item or (L_SETTINGS) a dead-letter queue's name,
	 * NUL added */
	char *text;
	size_t len;
	struct queue_conf settings;   /* L_SETTINGS; dead_letter is text */
};

struct log_record {
	struct lev *v;
	size_t n, cap;
};

static inline const char *lkind_name(enum lkind kind)
{
	static const char *const names[] = {
		"QUEUE", "PUT", "TAKE", "DONE", "BACK", "DELAY", "DEAD", "SETTINGS",
		"PURGE", "DROP",
	};
	return names[kind];
}

/* Adds a call of kind, with a copy of text (NULL: none); the caller fills
 * in the rest. */
static inline struct lev *log_record_add(struct log_record *r,
                                         enum lkind kind, const char *text,
                                         size_t len)
{
	if (r->n == r->cap) {
		r->cap = r->cap ? 2 * r->cap : 64;
		r->v = realloc(r->v, r->cap * sizeof *r->v);
		if (!r->v)
			abort();
	}
	struct lev *ev = &r->v[r->n++];
	memset(ev, 0, sizeof *ev);
	ev->kind = kind;
	if (text) {
		ev->text = malloc(len + 1);
		if (!ev->text)
			abort();
		memcpy(ev->text, text, len);
		ev->text[len] = '\0';
		ev->len = len;
	}
	return ev;
}

/* A settings call: d copied, its dead-letter name in the text. */
static inline struct lev *log_record_settings(struct log_record *r,
                                              uint32_t qid,
                                              const struct queue_conf *d)
{
	const char *dl = d->dead_letter;
	struct lev *ev = log_record_add(r, L_SETTINGS, dl, dl ? strlen(dl) : 0);
	ev->qid = qid;
	ev->settings = *d;
	ev->settings.name = NULL;
	ev->settings.dead_letter = ev->text;
	return ev;
}

/* Empties the record, keeping its room. */
static inline void log_record_reset(struct log_record *r)
{
	for (size_t i = 0; i < r->n; i++)
		free(r->v[i].text);
	r->n = 0;
}

static inline void log_record_free(struct log_record *r)
{
	log_record_reset(r);
	free(r->v);
	r->v = NULL;
	r->cap = 0;
}

/* Applies one recorded call to a replaying engine: 0, or -1 if it does
 * not fit the engine's state. */
static inline int log_record_replay(struct engine *e, const struct lev *ev)
{
	switch (ev->kind) {
	case L_QUEUE:
		return engine_replay_queue(e, ev->qid, ev->text, ev->len);
	case L_PUT:
		return engine_replay_task(e, ev->qid, ev->task, 0, ENGINE_QUEUED, 0,
		                          ev->text, ev->len);
	case L_TAKE:
		return engine_replay_take(e, ev->qid, ev->task);
	case L_DONE:
		return engine_replay_done(e, ev->task);
	case L_BACK:
		return engine_replay_back(e, ev->task);
	case L_DELAY:
		return engine_replay_delay(e, ev->task, ev->until);
	case L_DEAD:
		return engine_replay_dead(e, ev->task, ev->new_task, ev->dqid);
	case L_SETTINGS:
		return engine_replay_settings(e, ev->qid, &ev->settings);
	case L_PURGE:
		return engine_replay_purge(e, ev->qid);
	case L_DROP:
		return engine_replay_drop(e, ev->qid);
	}
	return -1;
}

#endif
