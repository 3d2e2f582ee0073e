/*
 * failover.h - libjoinq's policy for several daemon addresses (failover.c):
 * the list, which address to try next, which requests may be sent again
 * after a lost reply, and how long to pause between rounds.  connection.c
 * does the connecting and the sending.
 */
#ifndef JQ_FAILOVER_H
#define JQ_FAILOVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hostlist.h"

#define FAILOVER_BACKOFF_MIN_MS 50     /* the pause after a first failed round */
#define FAILOVER_BACKOFF_MAX_MS 1000   /* doubling up to this */
#define FAILOVER_BUDGET_MS 5000        /* when io_timeout is 0 (no limit) */

struct failover {
	struct hostport addr[HOSTLIST_MAX];
	size_t n;
	size_t cur;                 /* the address connected last */
	struct hostport active;     /* a standby named it: tried first */
	bool has_active;
};

/* Reads the list in hosts (joinq.h: jq_options.host). */
int failover_init(struct failover *f, const char *hosts, const char *port,
                  char *why, size_t why_len);

/* The number of candidates in one round: the active a standby named, if
 * any (named true), then every address from the one after cur. */
size_t failover_round_len(const struct failover *f, bool named);
/* The i-th candidate of a round; *index is its place in the list, or -1
 * for the named active.  named: as at the start of the round, so that an
 * active named during it waits for the next. */
const struct hostport *failover_candidate(const struct failover *f,
                                          bool named, size_t i, long *index);

/* Remembers the "active" a standby named ("HOST:PORT"); false if it is
 * not an address. */
bool failover_name_active(struct failover *f, const char *hostport);

/* True if the request (its JSON text, as libjoinq builds it) changes
 * nothing when sent twice: ping, qsize, stats, join, auth; get, whose
 * task comes back as after any disconnect; and declare, which finds the
 * queue it made the first time. */
bool failover_resendable(const char *request, size_t len);

/* The pause after a round that found no daemon, given the last one (0 at
 * first). */
int64_t failover_backoff(int64_t last_ms);

#endif
