/*
 * journal.c - the append-only journal (see journal.h).
 *
 * The file is a sequence of records, each [u32 length][u32 CRC-32C of the
 * payload][payload], little-endian.  A payload starts with its type:
 *
 *   HEADER  "joinq-journal" NUL, u32 version        first, once
 *   QUEUE   u32 qid, name                            a queue's id
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
 *
 * Delays are kept in wall-clock time, since a restart loses the monotonic
 * clock.  A snapshot (compaction) is a HEADER, the QUEUEs, a NEXTID and
 * one TASK per task; replaying it gives the state it was taken from.
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
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "crc32c.h"
#include "journal.h"
#include "log.h"
#include "xalloc.h"

#define FORMAT_VERSION 1
#define MAGIC "joinq-journal"
#define HEADER_BYTES 8               /* length and CRC */
#define RECORD_MAX ((1u << 30) + 64) /* a 1 GiB item and its fields */
#define PREALLOC_CHUNK (16u << 20)   /* space reserved ahead at a time */
#define SMALL_RESERVE (1u << 20)     /* kept for small and engine changes */
#define FULL_RETRY_MS 100            /* a full disk is asked again after */
#define COMPACT_RETRY_MS 60000       /* a failed compaction is tried again */
#define DROPPED UINT32_MAX           /* DEAD: no dead-letter queue */
#define CHILD_SYNC_FAILED 3          /* the compacting child's exit status */

enum record_type {
	R_HEADER = 1, R_QUEUE, R_PUT, R_TASK, R_TAKE, R_DONE, R_BACK, R_DELAY,
	R_DEAD, R_NEXTID, R_BATCH,
};

#define BATCH_BYTES (HEADER_BYTES + 1 + 4)   /* a BATCH record */

struct journal {
	struct journal_conf conf;
	char *path, *tmp_path;
	int fd, dirfd;
	struct engine *engine;
	struct engine_log log;
	struct buf out;              /* records appended, not yet written */
	struct buf tail;             /* records since the compacting fork */
	uint64_t appended, written, synced;   /* records */
	uint64_t end;                /* bytes in the file */
	uint64_t reserved;           /* bytes of the file allocated ahead */
	bool can_reserve;            /* the file system preallocates */
	bool full;                   /* the disk is full: puts refused */
	msec_t full_retry;
	pid_t child;                 /* writing a snapshot, or 0 */
	msec_t child_started, next_compact;
};

/*
 * A sync of the journal that fails is never retried: on Linux a failed
 * fsync may have dropped the dirty pages, and the next one then succeeds
 * with the data gone (PostgreSQL's "fsyncgate").  Every failed sync, of
 * the journal, of a snapshot or of the directory, stops joinqd at once,
 * as a crash would; a restart recovers what is on disk.
 */
static void sync_failed(const char *path)
{
	log_error("journal: cannot sync %s: %s", path, strerror(errno));
	log_error("journal: stopping now; a restart recovers what is on disk");
	_exit(EXIT_FAILURE);
}

/* ---- time --------------------------------------------------------------- */

static msec_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (msec_t)ts.tv_sec * 1000 + (msec_t)ts.tv_nsec / 1000000;
}

static uint64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A monotonic deadline as wall-clock time, and back. */
static uint64_t to_wall(msec_t until)
{
	msec_t now = mono_ms();
	return until <= now ? wall_ms() : wall_ms() + (until - now);
}

static msec_t to_mono(uint64_t wall)
{
	uint64_t now = wall_ms();
	return wall <= now ? mono_ms() : mono_ms() + (wall - now);
}

/* ---- writing records ---------------------------------------------------- */

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

/* A record of the engine's: the first of a commit opens its batch. */
static size_t jrec_begin(struct journal *j, enum record_type type)
{
	if (j->out.len == 0) {
		rec_begin(&j->out, R_BATCH);
		put_u32(&j->out, 0);   /* the length, filled in at commit */
	}
	return rec_begin(&j->out, type);
}

/* The BATCH record at `at` in b gets the length of the records after it,
 * and its own frame (which covers only itself). */
static void seal_batch(struct buf *b, size_t at)
{
	char *p = b->p + at;
	set_u32_at(p + HEADER_BYTES + 1, (uint32_t)(b->len - at - BATCH_BYTES));
	set_u32_at(p, BATCH_BYTES - HEADER_BYTES);
	set_u32_at(p + 4, crc32c(p + HEADER_BYTES, BATCH_BYTES - HEADER_BYTES));
}

/* The journal's own records go to the file and, while a child writes a
 * snapshot, to the tail that follows the snapshot. */
static void appended(struct journal *j, size_t at)
{
	rec_end(&j->out, at);
	if (j->child > 0)
		buf_add(&j->tail, j->out.p + at, j->out.len - at);
	j->appended++;
}

static void header_record(struct buf *b)
{
	size_t at = rec_begin(b, R_HEADER);
	buf_add(b, MAGIC, sizeof MAGIC);
	put_u32(b, FORMAT_VERSION);
	rec_end(b, at);
}

/* ---- the engine's changes ----------------------------------------------- */

static void on_queue(void *ctx, uint32_t qid, const char *name, size_t len)
{
	struct journal *j = ctx;
	size_t at = jrec_begin(j, R_QUEUE);
	put_u32(&j->out, qid);
	buf_add(&j->out, name, len);
	appended(j, at);
}

static void on_put(void *ctx, uint32_t qid, uint64_t task, const char *item,
                   size_t len)
{
	struct journal *j = ctx;
	size_t at = jrec_begin(j, R_PUT);
	put_u32(&j->out, qid);
	put_u64(&j->out, task);
	buf_add(&j->out, item, len);
	appended(j, at);
}

static void on_take(void *ctx, uint32_t qid, uint64_t task)
{
	struct journal *j = ctx;
	size_t at = jrec_begin(j, R_TAKE);
	put_u32(&j->out, qid);
	put_u64(&j->out, task);
	appended(j, at);
}

static void task_record(struct journal *j, enum record_type type,
                        uint64_t task)
{
	size_t at = jrec_begin(j, type);
	put_u64(&j->out, task);
	appended(j, at);
}

static void on_done(void *ctx, uint64_t task)
{
	task_record(ctx, R_DONE, task);
}

static void on_back(void *ctx, uint64_t task)
{
	task_record(ctx, R_BACK, task);
}

static void on_delay(void *ctx, uint64_t task, msec_t until)
{
	struct journal *j = ctx;
	size_t at = jrec_begin(j, R_DELAY);
	put_u64(&j->out, task);
	put_u64(&j->out, to_wall(until));
	appended(j, at);
}

static void on_dead(void *ctx, uint64_t task, uint64_t new_task, int64_t dqid)
{
	struct journal *j = ctx;
	size_t at = jrec_begin(j, R_DEAD);
	put_u64(&j->out, task);
	put_u64(&j->out, new_task);
	put_u32(&j->out, dqid < 0 ? DROPPED : (uint32_t)dqid);
	appended(j, at);
}

/* ---- reading records ---------------------------------------------------- */

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
	[R_NEXTID] = "NEXTID", [R_BATCH] = "BATCH",
};

/* Applies one record's payload to e.  Returns 0, or -1 with why. */
static int apply(struct engine *e, const unsigned char *p, size_t len,
                 bool first, char *why, size_t whylen)
{
	struct reader r = { p, len, 0, false };
	uint8_t type = get_u8(&r);
	const char *rest = (const char *)p + (len < 13 ? len : 13);
	int rc = 0;

	if (type < R_HEADER || type > R_BATCH) {
		snprintf(why, whylen, "a record of unknown type %u", type);
		return -1;
	}
	if (first != (type == R_HEADER)) {
		snprintf(why, whylen, first ? "not a joinq journal (no header)" :
		         "a second header");
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
		rc = r.short_read ? -1 : engine_replay_queue(e, qid,
		        (const char *)p + r.off, len - r.off);
		break;
	}
	case R_PUT: {
		uint32_t qid = get_u32(&r);
		uint64_t task = get_u64(&r);
		rc = r.short_read ? -1 : engine_replay_task(e, qid, task, 0,
		        ENGINE_QUEUED, 0, rest, len - 13);
		break;
	}
	case R_TASK: {
		uint32_t qid = get_u32(&r);
		uint64_t task = get_u64(&r);
		uint32_t deliveries = get_u32(&r);
		uint8_t state = get_u8(&r);
		uint64_t until = get_u64(&r);
		if (r.short_read || state > ENGINE_DELAYED)
			rc = -1;
		else
			rc = engine_replay_task(e, qid, task, deliveries,
			                        (enum engine_task_state)state,
			                        to_mono(until), (const char *)p + r.off,
			                        len - r.off);
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
		rc = r.short_read ? -1 : engine_replay_delay(e, task, to_mono(until));
		break;
	}
	case R_DEAD: {
		uint64_t task = get_u64(&r);
		uint64_t new_task = get_u64(&r);
		uint32_t dqid = get_u32(&r);
		rc = r.short_read ? -1 : engine_replay_dead(e, task, new_task,
		        dqid == DROPPED ? -1 : (int64_t)dqid);
		break;
	}
	case R_NEXTID:
		engine_replay_next_id(e, get_u64(&r));
		break;
	case R_BATCH:
		get_u32(&r);   /* scan() reads it */
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

enum scan_end { SCAN_CLEAN, SCAN_TORN, SCAN_DAMAGED };

struct scan {
	uint64_t records;
	uint64_t good;           /* bytes before the first bad record */
	char why[200];
};

/* True if a sound BATCH record starts somewhere in map(off..size): a
 * write that came after the one that holds off. */
static bool later_batch(const unsigned char *map, size_t size, size_t off)
{
	for (size_t k = off + 1; k + BATCH_BYTES <= size; k++)
		if (map[k + HEADER_BYTES] == R_BATCH &&
		    frame_at(map, size, k) == BATCH_BYTES)
			return true;
	return false;
}

/* A bad record at off, with the current batch ending at batch_end (0: off
 * is between batches): the tail of the last write, or damage? */
static enum scan_end judge(const unsigned char *map, size_t size, size_t off,
                           size_t batch_end, struct scan *s)
{
	s->good = off;
	if (off == 0) {
		/* No header: a file cut while it was made holds a part of one;
		 * anything else is not ours to cut. */
		struct buf h = { 0 };
		header_record(&h);
		bool part = size < h.len && memcmp(map, h.p, size) == 0;
		buf_free(&h);
		if (!part) {
			snprintf(s->why, sizeof s->why, "not a joinq journal");
			return SCAN_DAMAGED;
		}
	} else if (batch_end > off ? batch_end < size
	                           : later_batch(map, size, off)) {
		/* Inside a batch that others follow, or at a batch's own record
		 * with a later batch after it: an earlier write is spoilt. */
		snprintf(s->why, sizeof s->why, "a record that does not frame (bad "
		         "length or checksum) before the last write");
		return SCAN_DAMAGED;
	}
	snprintf(s->why, sizeof s->why, "the last write is torn (%zu bytes)",
	         size - off);
	return SCAN_TORN;
}

/* Replays map[0..size) into e as far as it is sound. */
static enum scan_end scan(const unsigned char *map, size_t size,
                          struct engine *e, struct scan *s)
{
	size_t off = 0, batch_end = 0;

	memset(s, 0, sizeof *s);
	while (off < size) {
		size_t n = frame_at(map, size, off);
		if (!n)
			return judge(map, size, off, batch_end, s);
		if (map[off + HEADER_BYTES] == R_BATCH && n == BATCH_BYTES)
			batch_end = off + n + get_u32_at(map + off + HEADER_BYTES + 1);
		if (apply(e, map + off + HEADER_BYTES, n - HEADER_BYTES,
		          s->records == 0, s->why, sizeof s->why) < 0) {
			s->good = off;
			return SCAN_DAMAGED;
		}
		s->records++;
		off += n;
	}
	s->good = off;
	return SCAN_CLEAN;
}

/* ---- files -------------------------------------------------------------- */

static int write_all(int fd, const char *p, size_t len, off_t at)
{
	while (len) {
		ssize_t n = pwrite(fd, p, len, at);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
		at += n;
	}
	return 0;
}

static char *join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = xmalloc(n);
	snprintf(p, n, "%s/%s", dir, name);
	return p;
}

/* Maps the whole file for reading; *map NULL for an empty file. */
static int map_file(int fd, const unsigned char **map, size_t *size)
{
	struct stat st;
	*map = NULL;
	*size = 0;
	if (fstat(fd, &st) < 0)
		return -1;
	if (st.st_size == 0)
		return 0;
	void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (m == MAP_FAILED)
		return -1;
	*map = m;
	*size = (size_t)st.st_size;
	return 0;
}

/* Allocates the file up to at least upto bytes ahead of need, so that a
 * full disk shows here, before a change is made, and not in a write. */
static int extend(struct journal *j, uint64_t upto)
{
	if (j->full && mono_ms() < j->full_retry)
		return -1;
	uint64_t chunk = upto + PREALLOC_CHUNK;
	int rc = fallocate(j->fd, FALLOC_FL_KEEP_SIZE, (off_t)j->reserved,
	                   (off_t)(chunk - j->reserved));
	if (rc < 0 && errno == ENOSPC)
		rc = fallocate(j->fd, FALLOC_FL_KEEP_SIZE, (off_t)j->reserved,
		               (off_t)(upto - j->reserved));
	else
		upto = chunk;
	if (rc == 0) {
		j->reserved = upto;
		if (j->full)
			log_info("journal: space is back; taking changes again");
		j->full = false;
		return 0;
	}
	if (errno == EOPNOTSUPP || errno == ENOSYS) {
		log_warning("journal: %s cannot allocate ahead; a full disk will "
		            "stop joinqd instead of refusing changes", j->path);
		j->can_reserve = false;
		return 0;
	}
	if (!j->full)
		log_error("journal: cannot allocate space in %s (%s): changes are "
		          "refused (unavailable) until there is room", j->path,
		          strerror(errno));
	j->full = true;
	j->full_retry = mono_ms() + FULL_RETRY_MS;
	return -1;
}

int journal_reserve(struct journal *j, size_t len, bool small)
{
	if (!j->can_reserve)
		return 0;
	uint64_t need = j->end + j->out.len + len + 64;
	if (!small)
		need += SMALL_RESERVE;
	if (need <= j->reserved && !(j->full && !small))
		return 0;
	return extend(j, need < j->reserved ? j->reserved : need);
}

int journal_commit(struct journal *j)
{
	if (j->out.len) {
		seal_batch(&j->out, 0);
		if (write_all(j->fd, j->out.p, j->out.len, (off_t)j->end) < 0) {
			log_error("journal: cannot write %s: %s", j->path,
			          strerror(errno));
			return -1;
		}
		j->end += j->out.len;
		buf_reset(&j->out);
		j->written = j->appended;
	}
	if (j->conf.fsync == FSYNC_ALWAYS)
		return journal_sync(j);
	return 0;
}

int journal_sync(struct journal *j)
{
	if (j->synced == j->written)
		return 0;
	if (fdatasync(j->fd) < 0)
		sync_failed(j->path);
	j->synced = j->written;
	return 0;
}

uint64_t journal_appended(const struct journal *j)
{
	return j->appended;
}

uint64_t journal_safe(const struct journal *j)
{
	return j->conf.fsync == FSYNC_ALWAYS ? j->synced : j->written;
}

/* ---- compaction --------------------------------------------------------- */

struct snapshot {
	int fd;
	struct buf b;
	off_t at;
	bool failed;
};

static void snap_flush(struct snapshot *s, size_t over)
{
	if (s->b.len < over || s->failed)
		return;
	if (write_all(s->fd, s->b.p, s->b.len, s->at) < 0)
		s->failed = true;
	s->at += (off_t)s->b.len;
	buf_reset(&s->b);
}

static void snap_queue(void *ctx, uint32_t qid, const char *name, size_t len)
{
	struct snapshot *s = ctx;
	size_t at = rec_begin(&s->b, R_QUEUE);
	put_u32(&s->b, qid);
	buf_add(&s->b, name, len);
	rec_end(&s->b, at);
	snap_flush(s, 1u << 20);
}

static void snap_next_id(void *ctx, uint64_t next)
{
	struct snapshot *s = ctx;
	size_t at = rec_begin(&s->b, R_NEXTID);
	put_u64(&s->b, next);
	rec_end(&s->b, at);
}

static void snap_task(void *ctx, uint32_t qid, uint64_t task,
                      uint32_t deliveries, enum engine_task_state state,
                      msec_t until, const char *item, size_t len)
{
	struct snapshot *s = ctx;
	size_t at = rec_begin(&s->b, R_TASK);
	put_u32(&s->b, qid);
	put_u64(&s->b, task);
	put_u32(&s->b, deliveries);
	put_u8(&s->b, (uint8_t)state);
	put_u64(&s->b, state == ENGINE_DELAYED ? to_wall(until) : 0);
	buf_add(&s->b, item, len);
	rec_end(&s->b, at);
	snap_flush(s, 1u << 20);
}

/* In the child: the engine's state, as it was at the fork, into tmp_path. */
static int write_snapshot(struct journal *j)
{
	struct snapshot s = { .at = 0 };
	struct engine_dump d = {
		.ctx = &s, .queue = snap_queue, .next_id = snap_next_id,
		.task = snap_task,
	};
	s.fd = open(j->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (s.fd < 0)
		return 1;
	header_record(&s.b);
	engine_dump(j->engine, &d);
	/* An empty batch closes the snapshot, so that damage inside it has a
	 * later batch after it and is never taken for a torn tail. */
	size_t at = rec_begin(&s.b, R_BATCH);
	put_u32(&s.b, 0);
	seal_batch(&s.b, at);
	snap_flush(&s, 0);
	if (s.failed)
		return 1;
	if (fdatasync(s.fd) < 0) {
		log_error("journal: cannot sync %s: %s", j->tmp_path,
		          strerror(errno));
		return CHILD_SYNC_FAILED;
	}
	return close(s.fd) < 0;
}

void journal_maybe_compact(struct journal *j)
{
	uint64_t live = engine_live_bytes(j->engine);
	if (j->child > 0 || j->end < j->conf.compact_size ||
	    j->end < j->conf.compact_ratio * (live ? live : 1) ||
	    mono_ms() < j->next_compact)
		return;
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid == 0) {
		/* The child holds nothing of the parent's: no listening socket
		 * may outlive a parent that crashed, so a restart can bind. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close_range(3, ~0u, 0);
		_exit(getppid() != parent ? 1 : write_snapshot(j));
	}
	if (pid < 0) {
		log_warning("journal: cannot fork to compact %s: %s", j->path,
		            strerror(errno));
		j->next_compact = mono_ms() + COMPACT_RETRY_MS;
		return;
	}
	j->child = pid;
	j->child_started = mono_ms();
	buf_reset(&j->tail);
	log_info("journal: compacting %s (%" PRIu64 " bytes, %" PRIu64
	         " live) in process %d", j->path, j->end, live, (int)pid);
}

/* The snapshot is written: the records since the fork follow it, as one
 * batch, and the new file takes the old one's name.  -1 if it cannot (the
 * old file stays, whole); a failed sync does not return. */
static int switch_to_snapshot(struct journal *j)
{
	int fd = open(j->tmp_path, O_RDWR | O_CLOEXEC);
	struct buf batch = { 0 };
	struct stat st;
	if (j->tail.len) {
		rec_begin(&batch, R_BATCH);
		put_u32(&batch, 0);
		buf_add(&batch, j->tail.p, j->tail.len);
		seal_batch(&batch, 0);
	}
	int rc = fd < 0 || fstat(fd, &st) < 0 ||
	         write_all(fd, batch.p, batch.len, st.st_size) < 0;
	buf_free(&batch);
	if (rc) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (fdatasync(fd) < 0)
		sync_failed(j->tmp_path);
	if (flock(fd, LOCK_EX | LOCK_NB) < 0 || rename(j->tmp_path, j->path) < 0) {
		close(fd);
		return -1;
	}
	if (fsync(j->dirfd) < 0)   /* the rename itself */
		sync_failed(j->conf.dir);
	close(j->fd);
	j->fd = fd;
	j->end = (uint64_t)st.st_size + (j->tail.len ? j->tail.len + BATCH_BYTES
	                                                : 0);
	j->reserved = j->end;
	return 0;
}

void journal_reap(struct journal *j)
{
	int status;
	if (j->child <= 0 || waitpid(j->child, &status, WNOHANG) != j->child)
		return;
	msec_t took = mono_ms() - j->child_started;
	uint64_t before = j->end;
	j->child = 0;

	if (WIFEXITED(status) && WEXITSTATUS(status) == CHILD_SYNC_FAILED) {
		errno = EIO;
		sync_failed(j->tmp_path);
	}
	/* The old file first gets what is pending, so it stays whole until
	 * the rename.  A write that fails here is what it is in any turn. */
	msec_t t0 = mono_ms();
	if (journal_commit(j) < 0) {
		log_error("journal: stopping now; a restart recovers what is on "
		          "disk");
		_exit(EXIT_FAILURE);
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
	    switch_to_snapshot(j) == 0) {
		log_info("journal: compacted %s from %" PRIu64 " to %" PRIu64
		         " bytes (snapshot %llu ms, switch %llu ms)", j->path, before,
		         j->end, (unsigned long long)took,
		         (unsigned long long)(mono_ms() - t0));
		journal_reserve(j, 0, true);
	} else {
		log_warning("journal: compacting %s failed (%s); trying again in "
		            "%d s", j->path, WIFEXITED(status) ?
		            "could not write the snapshot" : "the child was killed",
		            COMPACT_RETRY_MS / 1000);
		unlink(j->tmp_path);
		j->next_compact = mono_ms() + COMPACT_RETRY_MS;
	}
	buf_free(&j->tail);
}

/* ---- opening and closing ------------------------------------------------ */

static void free_journal(struct journal *j)
{
	if (j->fd >= 0)
		close(j->fd);
	if (j->dirfd >= 0)
		close(j->dirfd);
	buf_free(&j->out);
	buf_free(&j->tail);
	free(j->path);
	free(j->tmp_path);
	free(j);
}

static int open_dir(const char *dir, char *err, size_t errlen)
{
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "cannot create state_dir %s: %s", dir,
		         strerror(errno));
		return -1;
	}
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		snprintf(err, errlen, "cannot open state_dir %s: %s", dir,
		         strerror(errno));
	return fd;
}

struct journal *journal_open(const struct journal_conf *conf, struct engine *e,
                             char *err, size_t errlen)
{
	struct journal *j = xcalloc(1, sizeof *j);
	const unsigned char *map;
	size_t size;
	struct scan s;
	msec_t t0 = mono_ms();

	j->conf = *conf;
	j->engine = e;
	j->fd = -1;
	j->can_reserve = true;
	j->path = join(conf->dir, JOURNAL_FILE);
	j->tmp_path = join(conf->dir, JOURNAL_FILE ".new");
	j->log = (struct engine_log){
		.ctx = j, .queue = on_queue, .put = on_put, .take = on_take,
		.done = on_done, .back = on_back, .delay = on_delay, .dead = on_dead,
	};
	if ((j->dirfd = open_dir(conf->dir, err, errlen)) < 0)
		goto fail;
	j->fd = open(j->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (j->fd < 0) {
		snprintf(err, errlen, "cannot open %s: %s", j->path, strerror(errno));
		goto fail;
	}
	if (flock(j->fd, LOCK_EX | LOCK_NB) < 0) {
		snprintf(err, errlen, "%s is in use by another joinqd (%s)", j->path,
		         strerror(errno));
		goto fail;
	}
	/* Ours now: a snapshot left over is from a compaction that died. */
	if (unlink(j->tmp_path) == 0)
		log_info("journal: removed %s, left by a compaction that did not "
		         "finish", j->tmp_path);
	if (map_file(j->fd, &map, &size) < 0) {
		snprintf(err, errlen, "cannot read %s: %s", j->path, strerror(errno));
		goto fail;
	}
	enum scan_end end = scan(map, size, e, &s);
	if (map)
		munmap((void *)map, size);
	if (end == SCAN_DAMAGED) {
		snprintf(err, errlen, "%s is damaged at offset %" PRIu64 ": %s; "
		         "see joinqd --check-journal", j->path, s.good, s.why);
		goto fail;
	}
	if (end == SCAN_TORN) {
		log_warning("journal: %s: %s at offset %" PRIu64 "; cut off",
		            j->path, s.why, s.good);
		if (ftruncate(j->fd, (off_t)s.good) < 0 || fdatasync(j->fd) < 0) {
			snprintf(err, errlen, "cannot cut %s: %s", j->path,
			         strerror(errno));
			goto fail;
		}
	}
	j->end = s.good;
	j->reserved = s.good;
	if (j->end == 0) {   /* a new journal */
		struct buf h = { 0 };
		header_record(&h);
		int rc = write_all(j->fd, h.p, h.len, 0);
		j->end = j->reserved = h.len;
		buf_free(&h);
		if (rc < 0 || fdatasync(j->fd) < 0 || fsync(j->dirfd) < 0) {
			snprintf(err, errlen, "cannot write %s: %s", j->path,
			         strerror(errno));
			goto fail;
		}
	}
	engine_set_log(e, &j->log);
	engine_replay_end(e);   /* tasks in flight back to their heads */
	if (journal_commit(j) < 0) {
		snprintf(err, errlen, "cannot write %s: %s", j->path, strerror(errno));
		engine_set_log(e, NULL);
		goto fail;
	}
	journal_reserve(j, 0, true);
	log_info("journal: %s: %" PRIu64 " records, %" PRIu64 " bytes replayed "
	         "in %llu ms", j->path, s.records, j->end,
	         (unsigned long long)(mono_ms() - t0));
	return j;

fail:
	free_journal(j);
	return NULL;
}

void journal_close(struct journal *j)
{
	if (!j)
		return;
	if (j->child > 0) {
		kill(j->child, SIGKILL);
		waitpid(j->child, NULL, 0);
		unlink(j->tmp_path);
	}
	if (journal_commit(j) == 0)
		journal_sync(j);
	engine_set_log(j->engine, NULL);
	free_journal(j);
}

/* ---- checking ----------------------------------------------------------- */

static msec_t check_clock(void)
{
	return mono_ms();
}

int journal_check(const char *dir, bool repair)
{
	char *path = join(dir, JOURNAL_FILE);
	const unsigned char *map;
	size_t size;
	struct scan s;
	int status = 2;

	int fd = open(path, (repair ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (fd < 0 || map_file(fd, &map, &size) < 0) {
		fprintf(stderr, "joinqd: cannot read %s: %s\n", path, strerror(errno));
		goto out;
	}
	/* Cutting a journal that a running joinqd appends to would lose what
	 * it writes next: repair only what nobody holds. */
	if (repair && flock(fd, LOCK_EX | LOCK_NB) < 0) {
		fprintf(stderr, "joinqd: %s is in use by a running joinqd; stop it "
		        "first\n", path);
		if (map)
			munmap((void *)map, size);
		goto out;
	}
	struct engine_conf conf = { .clock = check_clock, .max_queues = UINT32_MAX };
	struct engine *e = engine_new(&conf);
	enum scan_end end = scan(map, size, e, &s);
	size_t queues = engine_queue_count(e);
	uint64_t live = engine_live_bytes(e);
	engine_free(e);
	if (map)
		munmap((void *)map, size);

	if (end == SCAN_CLEAN) {
		printf("%s: sound: %" PRIu64 " records, %zu bytes; %zu queues, %"
		       PRIu64 " bytes of live tasks\n", path, s.records, size, queues,
		       live);
		status = 0;
	} else {
		printf("%s: %s: %s at offset %" PRIu64 "; the %" PRIu64 " records "
		       "before it are sound\n", path, end == SCAN_TORN ? "torn" :
		       "damaged", s.why, s.good, s.records);
		status = 1;
		if (repair) {
			if (ftruncate(fd, (off_t)s.good) < 0 || fdatasync(fd) < 0) {
				fprintf(stderr, "joinqd: cannot cut %s: %s\n", path,
				        strerror(errno));
				status = 2;
			} else {
				printf("%s: cut at offset %" PRIu64 " (%zu bytes dropped)\n",
				       path, s.good, size - (size_t)s.good);
				status = 0;
			}
		} else {
			printf("joinqd --check-journal --repair cuts it there%s\n",
			       end == SCAN_TORN ? " (joinqd also does so when it "
			       "starts)" : ", dropping what follows");
		}
	}
out:
	if (fd >= 0)
		close(fd);
	free(path);
	return status;
}
