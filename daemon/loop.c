/*
 * loop.c - the event loop's turn (see loop.h): the engine's timer and the
 * step after every turn.
 *
 * event_base_loop(EVLOOP_ONCE) waits for the first event, then runs
 * callbacks until none is active, without sleeping in between; a callback
 * that activates another (conn.c's resume) is run in the same turn.  So
 * the engine's timer may be stale while a turn runs: at worst it fires
 * early, and engine_advance finds nothing due.  It is right again before
 * the loop sleeps, which is all that matters.
 *
 * Only the active daemon's engine keeps time.  A standby's (or a starting
 * one's) follows the stream: the active daemon decides when a lease runs
 * out or a delay ends, and its records say so.  So the timer is off while
 * this daemon is not active, and on again after the turn that made it so.
 */
#include <stdlib.h>
#include <unistd.h>

#include "conn.h"
#include "journal.h"
#include "log.h"
#include "loop.h"
#include "server.h"
#include "udp.h"

static bool active(void)
{
	return journal_role(server.journal) == ROLE_ACTIVE;
}

/* Points the tick timer at the engine's next deadline, or disarms it. */
static void rearm(void)
{
	msec_t next = active() ? engine_next_deadline(server.engine) : NEVER;
	if (next == server.loop.tick_at)
		return;
	server.loop.tick_at = next;
	if (next == NEVER) {
		evtimer_del(server.loop.tick);
		return;
	}
	msec_t now = server_clock();
	msec_t wait = next > now ? next - now : 0;
	struct timeval tv = { (time_t)(wait / 1000),
	                      (suseconds_t)(wait % 1000) * 1000 };
	evtimer_add(server.loop.tick, &tv);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	server.loop.tick_at = NEVER;   /* spent: rearm must set it again */
	if (active())   /* the role may have changed in this turn */
		engine_advance(server.engine);
}

void loop_init(void)
{
	server.loop.tick = evtimer_new(server.base, on_tick, NULL);
	server.loop.tick_at = NEVER;
}

/*
 * After every turn of the loop, before it sleeps (Redis's beforeSleep):
 * what the turn's requests changed goes to the journal in one write and,
 * under fsync=always, one fdatasync for all clients (group commit); the
 * replies that waited for it go out.
 */
static void after_turn(void)
{
	if (server.journal) {
		if (journal_commit(server.journal) < 0) {
			/* The changes in memory are not on disk and never will be:
			 * stop as a crash would, and recover what is on disk. */
			log_error("journal: stopping now; a restart recovers what is "
			          "on disk");
			_exit(EXIT_FAILURE);
		}
		uint64_t safe = journal_safe(server.journal);
		conn_release(safe);
		udp_release(safe);
		journal_maybe_compact(server.journal);
	}
	rearm();
}

void loop_turn(void)
{
	event_base_loop(server.base, EVLOOP_ONCE);
	after_turn();
}

bool loop_done(void)
{
	return event_base_got_break(server.base) ||
	       (server.shutting_down && conn_count() == 0);
}

void loop_free(void)
{
	if (server.loop.tick)
		event_free(server.loop.tick);
	server.loop.tick = NULL;
}
