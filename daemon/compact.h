/*
 * compact.h - compaction of the journal: when its store has outgrown the
 * live data, a forked child writes the engine's state, as it was at the
 * fork, as a snapshot (record.h) into the store (store.h, snapshot_write);
 * the daemon then installs it with the records appended meanwhile, so
 * that a replay reads the snapshot and a short tail.  The loop never waits
 * for the snapshot: the fork shares the state copy-on-write.
 */
#ifndef JQ_COMPACT_H
#define JQ_COMPACT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "engine.h"
#include "store.h"

struct compaction {
	uint64_t min_size;           /* compact once the store is this big... */
	unsigned ratio;              /* ...and this many times the live data */
	pid_t child;                 /* writing a snapshot, or 0 */
	msec_t started, next_try;
	uint64_t upto;               /* the journal's position at the fork */
	struct buf tail;             /* records appended since the fork */
};

/*
 * Starts a compaction if the store has outgrown the live data of e.
 * Called with nothing appended and not yet committed: upto is the
 * position of the last record, which the snapshot will hold.
 */
void compact_maybe(struct compaction *c, struct store *s, struct engine *e,
                   uint64_t upto);

/* While a child writes, the journal hands every record it appends here
 * too: they follow the snapshot. */
static inline bool compact_running(const struct compaction *c)
{
	return c->child > 0;
}

static inline void compact_note(struct compaction *c, const void *p,
                                size_t len)
{
	buf_add(&c->tail, p, len);
}

/* SIGCHLD: true if the child has ended (*status: its wait status). */
bool compact_reaped(struct compaction *c, int *status);

/*
 * Installs the snapshot of the child that ended with status, or gives it
 * up (tried again later).  Call it with every record up to now committed.
 * Returns STORE_OK (installed), STORE_AGAIN (given up) or STORE_FAILED (a
 * sync failed, in the child or here: joinqd must stop).
 */
int compact_finish(struct compaction *c, struct store *s, int status);

/* At close: kills a child still writing and clears what it left. */
void compact_stop(struct compaction *c, struct store *s);

#endif
