/*
 * journal.h - durability: an append-only file of every change the engine
 * makes (engine.h, struct engine_log), replayed at start.
 *
 * Records are framed with their length and a CRC-32C and appended to an
 * in-memory buffer as the engine changes; journal_commit() writes them once
 * per event-loop turn, with one fdatasync for all of them under
 * fsync=always (group commit).  A reply that reports a change waits until
 * journal_safe() has passed the change's record.  Space is reserved ahead
 * (fallocate), so a full disk refuses a change before it is made.  When
 * the file outgrows the live data, a forked child writes a snapshot and the
 * parent switches to it (rename and directory fsync), as Redis rewrites its
 * AOF.  journal.c knows nothing of sockets or of the event loop: joinqd.c
 * calls it at the end of each turn, from its fsync timer and on SIGCHLD.
 */
#ifndef JQ_JOURNAL_H
#define JQ_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"

#define JOURNAL_FILE "joinq.journal"

enum fsync_policy { FSYNC_ALWAYS, FSYNC_INTERVAL, FSYNC_NEVER };

struct journal_conf {
	const char *dir;            /* the state directory */
	enum fsync_policy fsync;
	uint64_t compact_size;      /* compact once the file is this big... */
	unsigned compact_ratio;     /* ...and this many times the live data */
};

struct journal;

/*
 * Opens the journal in conf->dir (creating both if need be) and replays it
 * into e, a fresh engine; then e tells every change to the journal.  A
 * torn last record (a crash in mid-write) is cut off with a warning naming
 * its offset.  Damage before it returns NULL with err naming the file and
 * the offset: joinqd must not start on a journal it cannot trust.
 */
struct journal *journal_open(const struct journal_conf *conf, struct engine *e,
                             char *err, size_t errlen);

/* Writes and syncs what is left, then closes. */
void journal_close(struct journal *j);

/*
 * Room for a change of len bytes: 0, or -1 when the disk is full, and the
 * change must be refused (unavailable) before it is made.  A small change
 * (get, task_done, release) may use the reserve kept for changes the
 * engine makes by itself (leases, delays), so those keep working longest.
 */
int journal_reserve(struct journal *j, size_t len, bool small);

/* Writes the records appended since the last commit, with one fdatasync
 * under fsync=always.  Once per event-loop turn.  Returns 0, or -1 when
 * the file cannot be written or synced (logged): the changes in memory are
 * then not safe, and joinqd stops so that a restart recovers what is. */
int journal_commit(struct journal *j);

/* Records appended so far, and how many of them are as safe as the policy
 * promises: on disk (always), or written to the file (interval, never). */
uint64_t journal_appended(const struct journal *j);
uint64_t journal_safe(const struct journal *j);

/* fsync=interval: syncs what was written since the last sync.  0 or -1. */
int journal_sync(struct journal *j);

/* Starts a compaction if the file has outgrown the live data. */
void journal_maybe_compact(struct journal *j);

/* SIGCHLD: if the compacting child is done, switches to its snapshot. */
void journal_reap(struct journal *j);

/*
 * joinqd --check-journal: reads the journal in dir and says what it holds
 * or where it is damaged; with repair, cuts it at the last good record.
 * Returns the exit status: 0 sound (or repaired), 1 damaged, 2 unreadable.
 */
int journal_check(const char *dir, bool repair);

#endif
