/*
 * loop.h - one turn of the event loop, and what follows every turn.
 *
 * A turn runs the callbacks that are due (waiting until one is); after it,
 * before the loop can sleep again, the journal commits what the turn
 * changed, the replies that waited for it go out, and the engine's timer is
 * pointed at its next deadline (off while the daemon is not the active
 * one: a standby's engine only follows the stream).  So no callback re-arms the timer or
 * decides that the daemon is done: the loop does, between turns.
 */
#ifndef JQ_LOOP_H
#define JQ_LOOP_H

#include <event2/event.h>
#include <stdbool.h>

#include "engine.h"

/* loop.c's own. */
struct loop_state {
	struct event *tick;             /* the engine's next deadline */
	msec_t tick_at;                 /* when tick is armed for; NEVER: not */
};

/* Creates the engine's timer (server.base and server.engine exist). */
void loop_init(void);

/* One turn, then the step after it. */
void loop_turn(void);

/* True when the loop must end: it was broken (a second signal, the stop
 * timer), or the daemon is stopping and its last client has gone. */
bool loop_done(void);

void loop_free(void);

#endif
