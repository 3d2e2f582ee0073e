/*
 * record.h - the journal's record format: how each change of the engine
 * and each part of a snapshot is written as bytes, and how those bytes are
 * read back into an engine (replay), telling a torn last write from damage.
 *
 * The format is the same wherever the bytes are kept (store.h): a file
 * today, a replicated log next.  Nothing here does I/O.
 */
#ifndef JQ_RECORD_H
#define JQ_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "engine.h"

/* The frame of a BATCH record: the bytes a sealed batch adds. */
#define RECORD_BATCH_BYTES (8 + 1 + 4)

/* ---- writing: each call appends one whole record to b ------------------ */

/* The first record of every journal and of every snapshot. */
void record_header(struct buf *b);

/* A batch: the records of one commit follow a BATCH record that gives
 * their length once they are in.  Open returns the BATCH record's offset in
 * b; seal fills it in with the bytes that follow it. */
size_t record_batch_open(struct buf *b);
void record_batch_seal(struct buf *b, size_t at);

/* The engine's changes (engine.h, struct engine_log).  Times are the
 * engine clock's (monotonic); the record keeps them as wall-clock time,
 * which survives a restart. */
void record_queue(struct buf *b, uint32_t qid, const char *name, size_t len);
void record_settings(struct buf *b, uint32_t qid, const struct queue_conf *d);
void record_purge(struct buf *b, uint32_t qid);
void record_drop(struct buf *b, uint32_t qid);
void record_put(struct buf *b, uint32_t qid, uint64_t task, const char *item,
                size_t len);
void record_take(struct buf *b, uint32_t qid, uint64_t task);
void record_done(struct buf *b, uint64_t task);
void record_back(struct buf *b, uint64_t task);
void record_delay(struct buf *b, uint64_t task, msec_t until);
void record_dead(struct buf *b, uint64_t task, uint64_t new_task,
                 int64_t dqid);

/* A snapshot's parts (engine.h, struct engine_dump). */
void record_task(struct buf *b, uint32_t qid, uint64_t task,
                 uint32_t deliveries, enum engine_task_state state,
                 msec_t until, const char *item, size_t len);
void record_next_id(struct buf *b, uint64_t next);

/* ---- reading ------------------------------------------------------------ */

enum record_end {
	RECORD_CLEAN,     /* every byte replayed */
	RECORD_TORN,      /* the last write is torn: cut it at `good` */
	RECORD_DAMAGED,   /* a bad record before the last write: refuse */
};

struct record_replay {
	uint64_t records;        /* records replayed */
	uint64_t good;           /* bytes before the first bad record */
	char why[200];           /* what is wrong there */
};

/*
 * Replays p[0..size), a journal as a store holds it (a snapshot and the
 * batches after it), into e, a fresh engine with no log, as far as it is
 * sound.  A bad record inside the batch that runs to the end is a torn
 * tail; one that other batches follow, a record that does not fit the
 * state, or bytes that are not a joinq journal are damage.  Never reads
 * outside p[0..size); the engine then holds the records before `good`
 * (the caller ends the replay, engine_replay_end, or frees the engine).
 */
enum record_end record_replay(const unsigned char *p, size_t size,
                              struct engine *e, struct record_replay *r);

/*
 * Replays p[0..size), whole batches that follow what was replayed into e
 * before (a standby applying the appends it reads, store.h): no header,
 * no snapshot part.  RECORD_CLEAN, or RECORD_DAMAGED with why (a batch
 * from a log is never torn: it is kept or lost as a whole).
 */
enum record_end record_replay_more(const unsigned char *p, size_t size,
                                   struct engine *e, struct record_replay *r);

#endif
