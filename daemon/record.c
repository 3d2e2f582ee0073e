/*
 * record.c - the journal's record format (see record.h): encoding and
 * replay.
 *
 * A journal is a sequence of records, each [u32 length][u32 CRC-32C of the
 * payload][payload], little-endian.  A payload starts with its type:
 *
 *   HEADER  "joinq-journal" NUL, u32 version        first, once
 *   QUEUE   u32 qid, name                            a queue's id; in a
 *                                                    snapshot an empty
 *                                                    name is an id no
 *                                                    queue holds
 *   SETTINGS u32 qid, u8 named (1 maxsize,           what a declare gave
 *           2 max_deliveries, 4 dead_letter),        a new queue
 *           u64 maxsize, u32 max_deliveries,
 *           dead_letter's name
 *   PUT     u32 qid, u64 task, item                  a new task at the tail
 *   TASK    u32 qid, u64 task, u32 deliveries,       a task as a snapshot
 *           u8 state, u64 until (wall ms), item      holds it
 *   TAKE    u32 qid, u64 task                        the head delivered
 *   DONE    u64 task                                 finished
 *   BACK    u64 task                                 back to the head
 *   DELAY   u64 task, u64 until (wall ms)            released with a delay
 *   DEAD    u64 task, u64 new task, u32 dqid         to dead letters
 *           (dqid 0xffffffff: dropped)
 *   NEXTID  u64 next                                 the id counter
 *   BATCH   u32 bytes                                the records of one
 *                                                    commit follow
 *   PURGE   u32 qid                                  its queued tasks
 *                                                    finished
 *   DROP    u32 qid                                  the queue deleted
 *
 * SETTINGS, PURGE and DROP came with declare, purge and delete; a journal
 * without them reads as before, and an older joinqd refuses one with them
 * (a record of unknown type).
 *
 * Delays are kept in wall-clock time, since a restart loses the monotonic
 * clock.  A snapshot (compaction) is a HEADER, the QUEUEs by id (with the
 * free ids below the highest, and each queue's SETTINGS), a NEXTID and
 * one TASK per task, closed by an empty BATCH; replaying it gives the
 * state it was taken from.  A new journal is a HEADER alone.  So a journal
 * is a snapshot part (QUEUE, SETTINGS, NEXTID, TASK: each task once) up to
 * its first BATCH, then a log part (QUEUE, SETTINGS and the engine's
 * changes, in batches, each new task with an id above every id before
 * it); replay holds every journal to that, so that damage cannot build a
 * state no history makes.
 *
 * Replay tells a torn tail from damage by where the first bad record lies.
 * Every commit writes its records behind a BATCH record that gives their
 * length, and only a commit that has reached the disk is acknowledged; a
 * crash (or a power loss, which may keep a later page of the last write
 * and lose an earlier one) can thus only spoil the last batch.  A bad
 * record inside the batch that runs to the end of the file is a torn tail,
 * cut off; one that other batches follow is damage, and joinqd refuses to
 * start on it.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "crc32c.h"
#include "idmap.h"
#include "record.h"
#include "request.h"

#define FORMAT_VERSION 1
#define MAGIC "joinq-journal"
#define HEADER_BYTES 8               /* length and CRC */
#define RECORD_MAX ((1u << 30) + 64) /* a 1 GiB item and its fields */
#define DROPPED UINT32_MAX           /* DEAD: no dead-letter queue */

enum record_type {
	R_HEADER = 1, R_QUEUE, R_PUT, R_TASK, R_TAKE, R_DONE, R_BACK, R_DELAY,
	R_DEAD, R_NEXTID, R_BATCH, R_SETTINGS, R_PURGE, R_DROP,
};
#define R_LAST R_DROP

/* SETTINGS: which settings a declare named. */
enum { NAMED_MAXSIZE = 1, NAMED_MAX_DELIVERIES = 2, NAMED_DEAD_LETTER = 4 };

/* ---- time --------------------------------------------------------------- */

/* The two clocks read together: a monotonic deadline becomes wall-clock
 * time in a record, and back at replay. */
struct clocks {
	msec_t mono;
	uint64_t wall;
};

static struct clocks clocks_now(void)
{
	struct timespec m, w;
	clock_gettime(CLOCK_MONOTONIC, &m);
	clock_gettime(CLOCK_REALTIME, &w);
	return (struct clocks){
		(msec_t)m.tv_sec * 1000 + (msec_t)m.tv_nsec / 1000000,
		(uint64_t)w.tv_sec * 1000 + (uint64_t)w.tv_nsec / 1000000,
	};
}

/* NEVER, and a deadline further than a clock can say, is the end of the
 * other clock: never. */
static uint64_t to_wall(msec_t until)
{
	struct clocks c = clocks_now();
	if (until <= c.mono)
		return c.wall;
	return until - c.mono >= UINT64_MAX - c.wall ? UINT64_MAX
	                                              : c.wall + (until - c.mono);
}

static msec_t to_mono(const struct clocks *c, uint64_t wall)
{
	if (wall <= c->wall)
		return c->mono;
	return wall - c->wall >= NEVER - c->mono ? NEVER
	                                           : c->mono + (wall - c->wall);
}

/* ---- writing ------------------------------------------------------------ */

static void put_u8(struct buf *b, uint8_t v) { buf_addc(b, (char)v); }

static void put_u32(struct buf *b, uint32_t v)
{
	unsigned char le[4] = { (unsigned char)v, (unsigned char)(v >> 8),
	                        (unsigned char)(v >> 16), (unsigned char)(v >> 24) };
	buf_add(b, le, 4);
}

static void put_u64(struct buf *b, uint64_t v)
{
	put_u32(b, (uint32_t)v);
	put_u32(b, (uint32_t)(v >> 32));
}

static uint32_t get_u32_at(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static void set_u32_at(char *p, uint32_t v)
{
	p[0] = (char)v;
	p[1] = (char)(v >> 8);
	p[2] = (char)(v >> 16);
	p[3] = (char)(v >> 24);
}

/* A record is built in place: its header is filled in once the payload is
 * there. */
static size_t rec_begin(struct buf *b, enum record_type type)
{
	size_t at = b->len;
	buf_add(b, "\0\0\0\0\0\0\0\0", HEADER_BYTES);
	put_u8(b, (uint8_t)type);
	return at;
}

static void rec_end(struct buf *b, size_t at)
{
	uint32_t len = (uint32_t)(b->len - at - HEADER_BYTES);
	set_u32_at(b->p + at, len);
	set_u32_at(b->p + at + 4, crc32c(b->p + at + HEADER_BYTES, len));
}

void record_header(struct buf *b)
{
	size_t at = rec_begin(b, R_HEADER);
	buf_add(b, MAGIC, sizeof MAGIC);
	put_u32(b, FORMAT_VERSION);
	rec_end(b, at);
}

size_t record_batch_open(struct buf *b)
{
	size_t at = rec_begin(b, R_BATCH);
	put_u32(b, 0);   /* the length, filled in by seal */
	return at;
}

/* The BATCH record's own frame covers only itself. */
void record_batch_seal(struct buf *b, size_t at)
{
	char *p = b->p + at;
	set_u32_at(p + HEADER_BYTES + 1,
	           (uint32_t)(b->len - at - RECORD_BATCH_BYTES));
	set_u32_at(p, RECORD_BATCH_BYTES - HEADER_BYTES);
	set_u32_at(p + 4, crc32c(p + HEADER_BYTES,
	                         RECORD_BATCH_BYTES - HEADER_BYTES));
}

void record_queue(struct buf *b, uint32_t qid, const char *name, size_t len)
{
	size_t at = rec_begin(b, R_QUEUE);
	put_u32(b, qid);
	buf_add(b, name, len);
	rec_end(b, at);
}

void record_settings(struct buf *b, uint32_t qid, const struct queue_conf *d)
{
	size_t at = rec_begin(b, R_SETTINGS);
	put_u32(b, qid);
	put_u8(b, (uint8_t)((d->has_maxsize ? NAMED_MAXSIZE : 0) |
	                    (d->has_max_deliveries ? NAMED_MAX_DELIVERIES : 0) |
	                    (d->dead_letter ? NAMED_DEAD_LETTER : 0)));
	put_u64(b, d->has_maxsize ? d->maxsize : 0);
	put_u32(b, d->has_max_deliveries ? d->max_deliveries : 0);
	if (d->dead_letter)
		buf_adds(b, d->dead_letter);
	rec_end(b, at);
}

static void queue_record(struct buf *b, enum record_type type, uint32_t qid)
{
	size_t at = rec_begin(b, type);
	put_u32(b, qid);
	rec_end(b, at);
}

void record_purge(struct buf *b, uint32_t qid)
{
	queue_record(b, R_PURGE, qid);
}

void record_drop(struct buf *b, uint32_t qid)
{
	queue_record(b, R_DROP, qid);
}

void record_put(struct buf *b, uint32_t qid, uint64_t task, const char *item,
                size_t len)
{
	size_t at = rec_begin(b, R_PUT);
	put_u32(b, qid);
	put_u64(b, task);
	buf_add(b, item, len);
	rec_end(b, at);
}

void record_take(struct buf *b, uint32_t qid, uint64_t task)
{
	size_t at = rec_begin(b, R_TAKE);
	put_u32(b, qid);
	put_u64(b, task);
	rec_end(b, at);
}

static void task_record(struct buf *b, enum record_type type, uint64_t task)
{
	size_t at = rec_begin(b, type);
	put_u64(b, task);
	rec_end(b, at);
}

void record_done(struct buf *b, uint64_t task)
{
	task_record(b, R_DONE, task);
}

void record_back(struct buf *b, uint64_t task)
{
	task_record(b, R_BACK, task);
}

void record_delay(struct buf *b, uint64_t task, msec_t until)
{
	size_t at = rec_begin(b, R_DELAY);
	put_u64(b, task);
	put_u64(b, to_wall(until));
	rec_end(b, at);
}

void record_dead(struct buf *b, uint64_t task, uint64_t new_task,
                 int64_t dqid)
{
	size_t at = rec_begin(b, R_DEAD);
	put_u64(b, task);
	put_u64(b, new_task);
	put_u32(b, dqid < 0 ? DROPPED : (uint32_t)dqid);
	rec_end(b, at);
}

void record_task(struct buf *b, uint32_t qid, uint64_t task,
                 uint32_t deliveries, enum engine_task_state state,
                 msec_t until, const char *item, size_t len)
{
	size_t at = rec_begin(b, R_TASK);
	put_u32(b, qid);
	put_u64(b, task);
	put_u32(b, deliveries);
	put_u8(b, (uint8_t)state);
	put_u64(b, state == ENGINE_DELAYED ? to_wall(until) : 0);
	buf_add(b, item, len);
	rec_end(b, at);
}

void record_next_id(struct buf *b, uint64_t next)
{
	size_t at = rec_begin(b, R_NEXTID);
	put_u64(b, next);
	rec_end(b, at);
}

/* ---- reading ------------------------------------------------------------ */

struct reader {
	const unsigned char *p;
	size_t len, off;
	bool short_read;
};

static uint8_t get_u8(struct reader *r)
{
	if (r->off + 1 > r->len) {
		r->short_read = true;
		return 0;
	}
	return r->p[r->off++];
}

static uint32_t get_u32(struct reader *r)
{
	if (r->off + 4 > r->len) {
		r->short_read = true;
		return 0;
	}
	uint32_t v = get_u32_at(r->p + r->off);
	r->off += 4;
	return v;
}

static uint64_t get_u64(struct reader *r)
{
	uint64_t lo = get_u32(r);
	return lo | (uint64_t)get_u32(r) << 32;
}

static const char *names[] = {
	[R_HEADER] = "HEADER", [R_QUEUE] = "QUEUE", [R_PUT] = "PUT",
	[R_TASK] = "TASK", [R_TAKE] = "TAKE", [R_DONE] = "DONE",
	[R_BACK] = "BACK", [R_DELAY] = "DELAY", [R_DEAD] = "DEAD",
	[R_NEXTID] = "NEXTID", [R_BATCH] = "BATCH", [R_SETTINGS] = "SETTINGS",
	[R_PURGE] = "PURGE", [R_DROP] = "DROP",
};

/* What a replay has seen so far. */
struct seen {
	struct clocks clocks;        /* read once, at the start */
	bool first;                  /* no record yet: the header comes */
	bool log;                    /* past the snapshot part (a BATCH seen) */
	struct idmap tasks;          /* the snapshot's TASK ids */
};

/* Where each type of record may stand: the snapshot part, the log part. */
static bool in_place(const struct seen *s, uint8_t type)
{
	switch (type) {
	case R_NEXTID:
	case R_TASK:
		return !s->log;
	case R_PUT: case R_TAKE: case R_DONE: case R_BACK: case R_DELAY:
	case R_DEAD: case R_PURGE: case R_DROP:
		return s->log;
	}
	return true;
}

/* A task id no task has had yet, as a PUT and a DEAD give one. */
static bool fresh(const struct engine *e, uint64_t task)
{
	return task >= engine_next_task_id(e);
}

/* A SETTINGS record, read past its type: what it names, each in range. */
static int apply_settings(struct engine *e, struct reader *r)
{
	uint32_t qid = get_u32(r);
	uint8_t named = get_u8(r);
	uint64_t maxsize = get_u64(r);
	uint32_t max_deliveries = get_u32(r);
	if (r->short_read || (named & ~(NAMED_MAXSIZE | NAMED_MAX_DELIVERIES |
	                                NAMED_DEAD_LETTER)))
		return -1;
	const char *name = (const char *)r->p + r->off;
	size_t n = r->len - r->off;
	char dead_letter[QUEUE_NAME_LIMIT + 1];
	if ((named & NAMED_DEAD_LETTER) ? !queue_name_valid(name, n) : n != 0)
		return -1;
	memcpy(dead_letter, name, n);
	dead_letter[n] = '\0';
	struct queue_conf d = {
		.has_maxsize = named & NAMED_MAXSIZE,
		.maxsize = maxsize,
		.has_max_deliveries = named & NAMED_MAX_DELIVERIES,
		.max_deliveries = max_deliveries,
		.dead_letter = (named & NAMED_DEAD_LETTER) ? dead_letter : NULL,
	};
	return engine_replay_settings(e, qid, &d);
}

/* Applies one record's payload to e.  Returns 0, or -1 with why. */
static int apply(struct engine *e, struct seen *s, const unsigned char *p,
                 size_t len, char *why, size_t whylen)
{
	struct reader r = { p, len, 0, false };
	uint8_t type = get_u8(&r);
	const char *rest = (const char *)p + (len < 13 ? len : 13);
	const struct clocks *c = &s->clocks;
	int rc = 0;

	if (type < R_HEADER || type > R_LAST) {
		snprintf(why, whylen, "a record of unknown type %u", type);
		return -1;
	}
	if (s->first != (type == R_HEADER)) {
		snprintf(why, whylen, s->first ? "not a joinq journal (no header)" :
		         "a second header");
		return -1;
	}
	s->first = false;
	if (!in_place(s, type)) {
		snprintf(why, whylen, "a %s record %s", names[type], s->log ?
		         "after the snapshot" : "before the first batch");
		return -1;
	}
	switch (type) {
	case R_HEADER:
		if (len < 1 + sizeof MAGIC + 4 ||
		    memcmp(p + 1, MAGIC, sizeof MAGIC) != 0) {
			snprintf(why, whylen, "not a joinq journal");
			return -1;
		}
		r.off = 1 + sizeof MAGIC;
		if (get_u32(&r) != FORMAT_VERSION) {
			snprintf(why, whylen, "a journal of another version");
			return -1;
		}
		return 0;
	case R_QUEUE: {
		uint32_t qid = get_u32(&r);
		const char *name = (const char *)p + r.off;
		size_t n = r.short_read ? 0 : len - r.off;
		/* An empty name, a free id, only in a snapshot. */
		rc = r.short_read || (n ? !queue_name_valid(name, n) : s->log) ? -1 :
		     engine_replay_queue(e, qid, name, n);
		break;
	}
	case R_SETTINGS:
		rc = apply_settings(e, &r);
		break;
	case R_PURGE:
		rc = engine_replay_purge(e, get_u32(&r));
		break;
	case R_DROP:
		rc = engine_replay_drop(e, get_u32(&r));
		break;
	case R_PUT: {
		uint32_t qid = get_u32(&r);
		uint64_t task = get_u64(&r);
		rc = r.short_read || !fresh(e, task) ? -1 : engine_replay_task(e,
		        qid, task, 0, ENGINE_QUEUED, 0, rest, len - 13);
		break;
	}
	case R_TASK: {
		uint32_t qid = get_u32(&r);
		uint64_t task = get_u64(&r);
		uint32_t deliveries = get_u32(&r);
		uint8_t state = get_u8(&r);
		uint64_t until = get_u64(&r);
		if (r.short_read || state > ENGINE_DELAYED || task == 0 ||
		    idmap_get(&s->tasks, task))
			rc = -1;
		else if ((rc = engine_replay_task(e, qid, task, deliveries,
			                        (enum engine_task_state)state,
			                        to_mono(c, until),
			                        (const char *)p + r.off,
			                        len - r.off)) == 0)
			idmap_put(&s->tasks, task, &s->tasks);
		break;
	}
	case R_TAKE: {
		uint32_t qid = get_u32(&r);
		uint64_t task = get_u64(&r);
		rc = r.short_read ? -1 : engine_replay_take(e, qid, task);
		break;
	}
	case R_DONE:
		rc = engine_replay_done(e, get_u64(&r));
		break;
	case R_BACK:
		rc = engine_replay_back(e, get_u64(&r));
		break;
	case R_DELAY: {
		uint64_t task = get_u64(&r);
		uint64_t until = get_u64(&r);
		rc = r.short_read ? -1 : engine_replay_delay(e, task,
		                                             to_mono(c, until));
		break;
	}
	case R_DEAD: {
		uint64_t task = get_u64(&r);
		uint64_t new_task = get_u64(&r);
		uint32_t dqid = get_u32(&r);
		rc = r.short_read || (dqid != DROPPED && !fresh(e, new_task)) ? -1 :
		     engine_replay_dead(e, task, new_task,
		                        dqid == DROPPED ? -1 : (int64_t)dqid);
		break;
	}
	case R_NEXTID:
		engine_replay_next_id(e, get_u64(&r));
		break;
	case R_BATCH:
		get_u32(&r);   /* record_replay reads it */
		s->log = true;
		break;
	}
	if (rc < 0 || r.short_read)
		snprintf(why, whylen, "a %s record that does not fit the state "
		         "before it", names[type]);
	return rc < 0 || r.short_read ? -1 : 0;
}

/* The length of a whole, sound record at off, or 0. */
static size_t frame_at(const unsigned char *map, size_t size, size_t off)
{
	if (size - off < HEADER_BYTES + 1)
		return 0;
	uint32_t len = get_u32_at(map + off);
	if (len == 0 || len > RECORD_MAX || len > size - off - HEADER_BYTES)
		return 0;
	if (crc32c(map + off + HEADER_BYTES, len) != get_u32_at(map + off + 4))
		return 0;
	return HEADER_BYTES + len;
}

/* True if a sound BATCH record starts somewhere in map(off..size): a
 * write that came after the one that holds off. */
static bool later_batch(const unsigned char *map, size_t size, size_t off)
{
	for (size_t k = off + 1; k + RECORD_BATCH_BYTES <= size; k++)
		if (map[k + HEADER_BYTES] == R_BATCH &&
		    get_u32_at(map + k) == RECORD_BATCH_BYTES - HEADER_BYTES &&
		    frame_at(map, size, k) == RECORD_BATCH_BYTES)
			return true;
	return false;
}

/* A bad record at off, with the current batch ending at batch_end (0: off
 * is between batches): the tail of the last write, or damage? */
static enum record_end judge(const unsigned char *map, size_t size,
                             size_t off, size_t batch_end,
                             struct record_replay *r)
{
	r->good = off;
	if (off == 0) {
		/* No header: a file cut while it was made holds a part of one;
		 * anything else is not ours to cut. */
		struct buf h = { 0 };
		record_header(&h);
		bool part = size < h.len && memcmp(map, h.p, size) == 0;
		buf_free(&h);
		if (!part) {
			snprintf(r->why, sizeof r->why, "not a joinq journal");
			return RECORD_DAMAGED;
		}
	} else if (batch_end > off ? batch_end < size
	                           : later_batch(map, size, off)) {
		/* Inside a batch that others follow, or at a batch's own record
		 * with a later batch after it: an earlier write is spoilt. */
		snprintf(r->why, sizeof r->why, "a record that does not frame (bad "
		         "length or checksum) before the last write");
		return RECORD_DAMAGED;
	}
	snprintf(r->why, sizeof r->why, "the last write is torn (%zu bytes)",
	         size - off);
	return RECORD_TORN;
}

static enum record_end scan(const unsigned char *map, size_t size,
                            struct engine *e, struct seen *s,
                            struct record_replay *r)
{
	size_t off = 0, batch_end = 0;

	while (off < size) {
		size_t n = frame_at(map, size, off);
		if (!n)
			return judge(map, size, off, batch_end, r);
		if (map[off + HEADER_BYTES] == R_BATCH && n == RECORD_BATCH_BYTES)
			batch_end = off + n + get_u32_at(map + off + HEADER_BYTES + 1);
		if (apply(e, s, map + off + HEADER_BYTES, n - HEADER_BYTES, r->why,
		          sizeof r->why) < 0) {
			r->good = off;
			return RECORD_DAMAGED;
		}
		r->records++;
		off += n;
	}
	r->good = off;
	return RECORD_CLEAN;
}

enum record_end record_replay(const unsigned char *map, size_t size,
                              struct engine *e, struct record_replay *r)
{
	struct seen s = { .clocks = clocks_now(), .first = true };
	memset(r, 0, sizeof *r);
	enum record_end end = scan(map, size, e, &s, r);
	idmap_free(&s.tasks);
	return end;
}

enum record_end record_replay_more(const unsigned char *map, size_t size,
                                   struct engine *e, struct record_replay *r)
{
	struct seen s = { .clocks = clocks_now(), .first = false, .log = true };
	memset(r, 0, sizeof *r);
	enum record_end end = scan(map, size, e, &s, r);
	idmap_free(&s.tasks);
	if (end == RECORD_TORN) {   /* a whole append that does not frame */
		snprintf(r->why, sizeof r->why, "an append that does not frame "
		         "(bad length or checksum)");
		end = RECORD_DAMAGED;
	}
	return end;
}
