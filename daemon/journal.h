/*
 * journal.h - durability, as the daemon sees it: every change the engine
 * makes (engine.h, struct engine_log) is recorded, and replayed at start.
 *
 * The journal is three parts, each in a file of its own: the record
 * format (record.h), the durable place the records go to (store.h; the
 * file store, store_file.c, is the one joinqd has today) and compaction
 * (compact.h).  journal.c joins them: records are appended to an
 * in-memory buffer as the engine changes; journal_commit() hands them to
 * the store once per event-loop turn, as one batch (under fsync=always
 * with one fdatasync for all of them: group commit).  A reply that reports
 * a change waits until journal_safe() has passed the change's record.
 * Space is reserved ahead, so a full disk refuses a change before it is
 * made.  When the store outgrows the live data, a forked child writes a
 * snapshot and the daemon switches to it.  A sync that fails anywhere
 * stops joinqd (exit 1): a restart recovers what is durable.  The journal
 * knows nothing of sockets or of the event loop: joinqd.c calls it at the
 * end of each turn, from its fsync timer and on SIGCHLD.
 */
#ifndef JQ_JOURNAL_H
#define JQ_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"

struct event_base;
struct journal;

enum fsync_policy { FSYNC_ALWAYS, FSYNC_INTERVAL, FSYNC_NEVER };

/* journal = off | on | nats: where the records go.  Off is 0, so that
 * `if (cfg.journal)` asks whether there is one. */
enum journal_kind { JOURNAL_OFF = 0, JOURNAL_FILE, JOURNAL_NATS };

/* journal = nats: the replicated stream, and how this daemon takes part. */
struct nats_conf {
	char *servers;              /* nats_servers: URLs, comma-separated */
	char *stream;               /* nats_stream: the stream's name */
	unsigned replicas;          /* nats_replicas, when it is created */
	unsigned failover_timeout;  /* ms of silence before a standby takes over */
	char *advertise;            /* HOST:PORT this daemon gives clients */
	char *creds;                /* nats_creds: a credentials file, or NULL */
	char *tls_ca;               /* nats_tls_ca, nats_tls_cert, nats_tls_key: */
	char *tls_cert;             /* NULL for none */
	char *tls_key;
};

/*
 * Who decides.  A file journal is always ACTIVE.  With journal = nats a
 * daemon starts STARTING (reaching NATS, reading the stream), follows the
 * stream as a STANDBY, and becomes ACTIVE when it takes over (it appended
 * its takeover record); an ACTIVE that finds the stream taken over
 * (fenced) goes back to STARTING with a fresh engine.  Only an ACTIVE
 * daemon answers anything but ping (PROTOCOL.md, Replication).
 */
enum journal_role { ROLE_STARTING, ROLE_STANDBY, ROLE_ACTIVE };

struct journal_conf {
	enum journal_kind kind;     /* JOURNAL_FILE or JOURNAL_NATS */
	const char *dir;            /* the state directory */
	enum fsync_policy fsync;
	uint64_t compact_size;      /* compact once the file is this big... */
	unsigned compact_ratio;     /* ...and this many times the live data */
	const struct nats_conf *nats;   /* JOURNAL_NATS */
	struct event_base *base;        /* JOURNAL_NATS: the daemon's loop */
	/* JOURNAL_NATS: the role changed (see enum journal_role); NULL opens
	 * the stream read-only (--check-journal: never created, never taken
	 * over).  Going from
	 * ACTIVE to STARTING, the daemon must drop every client and return
	 * a fresh engine from fresh_engine (the old one holds changes the
	 * stream refused). */
	void *ctx;
	void (*role_changed)(void *ctx, enum journal_role was,
	                     enum journal_role now);
	struct engine *(*fresh_engine)(void *ctx);
};

/* The role (a file journal, or none: ACTIVE). */
enum journal_role journal_role(const struct journal *j);
const char *journal_role_name(enum journal_role role);

/* The active daemon's advertised HOST:PORT as the stream last said, or
 * NULL when not known or when this daemon is the active one. */
const char *journal_active_addr(const struct journal *j);

/* For stats, /metrics and STATUS=: where this daemon stands in the log. */
struct journal_figures {
	uint64_t position;          /* the last stream sequence applied/appended */
	uint64_t lag;               /* standby: messages behind the stream's end;
	                               active: appends not yet acknowledged */
	uint64_t takeovers;         /* times this daemon took over */
	const char *store;          /* the file, or nats:STREAM */
};
void journal_figures(const struct journal *j, struct journal_figures *f);

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

/* Writes and syncs what is left, then closes; a failed sync stops joinqd
 * (exit 1). */
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
 * then not safe, and joinqd stops so that a restart recovers what is.  A
 * failed sync is never retried (on Linux it may have dropped the pages). */
int journal_commit(struct journal *j);

/* Records appended so far, and how many of them are as safe as the policy
 * promises: on disk (always), or written to the file (interval, never). */
uint64_t journal_appended(const struct journal *j);
uint64_t journal_safe(const struct journal *j);

/* fsync=interval: syncs what was written since the last sync.  0 or -1. */
int journal_sync(struct journal *j);

/* Starts a compaction if the file has outgrown the live data. */
void journal_maybe_compact(struct journal *j);

/* SIGCHLD: if the compacting child is done, switches to its snapshot.  A
 * sync that fails there (the snapshot's, in the child or here, or the
 * directory's after the rename) stops joinqd (exit 1) at once. */
void journal_reap(struct journal *j);

/*
 * joinqd --check-journal: reads the journal in dir and says what it holds
 * or where it is damaged; with repair, cuts it at the last good record.
 * Returns the exit status: 0 sound (or repaired), 1 damaged, 2 unreadable.
 */
int journal_check(const char *dir, bool repair);

/* The same with journal = nats: reads the stream (as a standby would,
 * never taking it over) and says what it holds.  0 sound, 1 damaged or not
 * a joinq journal, 2 unreachable. */
int journal_check_nats(const struct nats_conf *nats, const char *dir);

#endif
