/*
 * store.h - where the journal's records are kept: the one interface
 * between the journal (journal.c: which records, when) and a durable place
 * for them.  store_file.c is the first implementation, a local file; a
 * replicated log (NATS JetStream, issue 12) is the next.  This comment is
 * the contract an implementation keeps.
 *
 * Bytes.  The store keeps opaque bytes in the format of record.h, which it
 * never looks inside: a snapshot (the live state, written by compaction)
 * followed by the appends made after it.  The journal hands it:
 *
 *  - appends: one per event-loop turn that changed something, holding that
 *    turn's records as one sealed batch (record_batch_open/seal), so that
 *    an append is the unit that is torn, lost or kept as a whole;
 *  - snapshots: written by a forked child (compaction), then installed by
 *    the daemon, after which the store may drop every append before it
 *    (the file: a new file renamed over the old; a log: purged up to it).
 *
 * Positions.  The journal numbers its records (1, 2, ...); every append
 * carries `upto`, the number of the last record in it, increasing from one
 * append to the next.  durable() is the highest position whose records,
 * and every one before them, the store has made as safe as it promises:
 * on the disk (file, fsync=always), written to the file (interval, never:
 * they survive a crash of joinqd), acknowledged by a quorum of replicas
 * (the replicated log).  Replies that report a change are held until
 * durable() reaches the change's record; the daemon reads durable() after
 * every turn of its loop.  Positions count from 0 at each start (what was
 * replayed is durable already); they are not stored, and a store that
 * needs its own (a stream sequence) maps them.
 *
 * Asynchrony.  append() returns once the append is under way; it need not
 * be durable yet.  Appends are pipelined: the journal makes the next one
 * without waiting for the last to be confirmed, and the store confirms
 * them in order (durable() never passes an append that is not yet
 * confirmed).  A store that learns of durability on the event loop (a
 * JetStream PubAck, in a callback of the loop's) raises durable() there;
 * the daemon's next turn releases the replies.  Nothing in a store may
 * block the loop on the network or on another process.  The file store
 * confirms within append itself (written, and synced under fsync=always),
 * which is the same contract with no delay.
 *
 * Errors.  Every call that can fail returns one of enum store_status.
 * STORE_FAILED is fatal: the store cannot say what survived (a failed
 * fsync may have dropped pages a later one would call safe, "fsyncgate";
 * a write failed; a replica set refused), so joinqd stops with exit 1 and
 * a restart replays what is durable.  The store logs the cause (one line,
 * naming the file or stream) before it returns STORE_FAILED; it never
 * retries a failed sync.  STORE_FENCED says that another daemon has taken
 * the log over (a replicated log refused an append whose expected last
 * sequence no longer holds): this one must answer no more changes.  An
 * error learnt asynchronously is kept and returned by check(), which the
 * journal calls after every turn of the loop, and by every later call.
 * STORE_AGAIN means "not now, nothing lost": the disk is full (reserve),
 * or a snapshot could not be written or installed (the old one stays
 * whole; compaction tries again later).
 *
 * Processes.  Every call is made by the daemon on its loop thread, except
 * snapshot_write, which the compacting child makes (a fork of the daemon:
 * it owns a copy of the store and exits when done); the store must not
 * rely on anything a fork does not copy (a network connection of the
 * parent's) in snapshot_write.  load() and loaded() run before the daemon
 * serves anyone, and may wait for what they need.
 */
#ifndef JQ_STORE_H
#define JQ_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* The monotonic clock in ms, for the timers of the journal and its stores. */
static inline uint64_t store_clock_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The next wait of a back-off that doubles from min to max (prev 0: the
 * first), for a store's retries on the network. */
static inline unsigned store_backoff(unsigned prev, unsigned min, unsigned max)
{
	return !prev ? min : prev * 2 > max ? max : prev * 2;
}

enum store_status {
	STORE_OK = 0,
	STORE_AGAIN = -1,    /* not done, nothing lost: try again later */
	STORE_FAILED = -2,   /* fatal: stop, a restart recovers what is durable */
	STORE_FENCED = -3,   /* another writer owns the log: answer no change */
};

struct store;

struct store_ops {
	/* ---- replay, once, at start, before anything is appended ----------- */

	/*
	 * What the store holds, as one image for record_replay(): the
	 * snapshot, then every append after it, in order, byte for byte as
	 * they were given (*p NULL and *len 0 for an empty store).  The image
	 * stays valid until loaded() or close().  Returns 0, or -1 with err
	 * (joinqd does not start).
	 */
	int (*load)(struct store *s, const unsigned char **p, size_t *len,
	            char *err, size_t errlen);

	/*
	 * Replay is over, and the first keep bytes of the image were sound:
	 * the rest is the torn last append of a crash, which the store drops
	 * (a store whose appends cannot tear may refuse anything but the
	 * whole image).  An empty store then begins with first, the format's
	 * header, made durable before this returns.  Frees the image.
	 * Returns 0, or -1 with err.
	 */
	int (*loaded)(struct store *s, uint64_t keep, const void *first,
	              size_t first_len, char *err, size_t errlen);

	/* ---- the log -------------------------------------------------------- */

	/*
	 * Room for `bytes` more than what was appended: STORE_OK, or
	 * STORE_AGAIN when there is none, and the change must be refused
	 * (unavailable) before it is made.  `small` (a get, task_done,
	 * release) may use a reserve kept for changes the engine makes by
	 * itself, so that those keep working longest.  A store with no notion
	 * of space returns STORE_OK.
	 */
	int (*reserve)(struct store *s, uint64_t bytes, bool small);

	/* Appends p[0..len), one sealed batch whose last record is number
	 * upto.  STORE_OK once under way, or STORE_FAILED/FENCED. */
	int (*append)(struct store *s, const void *p, size_t len, uint64_t upto);

	/* The position up to which appends are durable (see Positions). */
	uint64_t (*durable)(const struct store *s);

	/* STORE_OK, or the error learnt asynchronously since the last call
	 * (STORE_FAILED, STORE_FENCED).  Cheap: after every turn. */
	int (*check)(struct store *s);

	/* Makes what was appended durable now, or reports what an
	 * asynchronous confirmation said: the file under fsync=interval, on
	 * the daemon's timer.  STORE_OK, or STORE_FAILED/FENCED. */
	int (*sync)(struct store *s);

	/* Bytes held since the last snapshot, snapshot included: compaction
	 * starts when they outgrow the live data. */
	uint64_t (*size)(const struct store *s);

	/* ---- snapshots ------------------------------------------------------ */

	/*
	 * In the compacting child: the next len bytes of the snapshot (the
	 * first call begins it, last ends it and makes it durable).
	 * STORE_OK, STORE_AGAIN (it cannot be written: compaction fails and
	 * is tried later) or STORE_FAILED (a sync failed: joinqd stops).
	 */
	int (*snapshot_write)(struct store *s, const void *p, size_t len,
	                      bool last);

	/*
	 * In the daemon, once the child has written the snapshot: the
	 * snapshot holds every record up to position upto; tail[0..len) is
	 * one sealed batch of the records appended since (empty if none),
	 * which a store keeping snapshot and log apart already has, and a
	 * store keeping them in one file writes after the snapshot.  From
	 * then on, replay starts at the snapshot.  STORE_OK; STORE_AGAIN when
	 * nothing changed (the old snapshot and log stay whole); STORE_FAILED.
	 */
	int (*snapshot_install)(struct store *s, uint64_t upto, const void *tail,
	                        size_t len);

	/* The child failed or was killed: clears what it left. */
	void (*snapshot_abandon)(struct store *s);

	/* ---- the end -------------------------------------------------------- */

	/* Makes what was appended durable, and frees the store.  STORE_OK or
	 * STORE_FAILED (then joinqd exits 1). */
	int (*close)(struct store *s);
};

/* Every implementation's struct begins with this. */
struct store {
	const struct store_ops *ops;
	const char *name;            /* for the log: the file, the stream */
};

/* ---- implementations ---------------------------------------------------- */

/*
 * The file store (store_file.c): joinq.journal in dir (dir created if need
 * be), locked against a second joinqd.  sync_each_append: fsync=always
 * (durable = synced); else interval or never (durable = written).
 * NULL with err if it cannot be opened.
 */
#define STORE_FILE_NAME "joinq.journal"
struct store *store_file_open(const char *dir, bool sync_each_append,
                              char *err, size_t errlen);

/* joinqd --check-journal on the file store in dir (see journal_check). */
int store_file_check(const char *dir, bool repair);

/*
 * The replicated store (store_nats.c): the records in a NATS JetStream
 * stream that one daemon, the active, appends to and the others, the
 * standbys, read as it grows.  It has no load() of its own: from the
 * start it reads the stream and hands what it reads to its reader, on the
 * loop, in order; then it follows the stream, and takes it over when the
 * active falls silent.  Its appends are refused once another daemon has
 * taken over (STORE_FENCED), after which it reads the stream again from
 * its start.
 */
enum store_news {
	STORE_CAUGHT_UP,     /* read to the end: a standby now */
	STORE_TOOK_OVER,     /* our takeover record is in: we append now */
	STORE_REPLACED,      /* fenced: reading again from the start */
};

struct store_reader {
	void *ctx;
	/* Bytes of the log: a whole image (start: the format header, then a
	 * snapshot and its tail, or nothing more), to apply to a fresh engine;
	 * or one append, to apply after what came before.  0, or -1 when
	 * they do not replay (logged; the store fails). */
	int (*apply)(void *ctx, const unsigned char *p, size_t len, bool start);
	void (*news)(void *ctx, enum store_news what);
};

struct nats_conf;
struct event_base;

/* header: the format's first record, which a new stream begins with.
 * read_only (--check-journal): never create the stream, never take it
 * over. */
struct store *store_nats_open(const struct nats_conf *conf,
                              struct event_base *base, const char *dir,
                              const void *header, size_t header_len,
                              bool read_only,
                              const struct store_reader *reader, char *err,
                              size_t errlen);

/* The active daemon's advertised address as the stream last said (NULL:
 * not known, or this one). */
const char *store_nats_active(const struct store *s);

/* Where this daemon stands: the last stream sequence it read or had
 * acknowledged, how far it is behind (a standby: messages not read yet;
 * the active: appends not yet acknowledged), and its takeovers. */
void store_nats_figures(const struct store *s, uint64_t *position,
                        uint64_t *lag, uint64_t *takeovers);

/* True when the store failed (check-journal's loop ends). */
bool store_nats_failed(const struct store *s);

#endif
