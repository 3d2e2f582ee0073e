/*
 * udp.h - the UDP transport: one request per datagram, one reply datagram
 * to its sender (PROTOCOL.md, "Transports").  Every UDP delivery has a
 * lease, since there is no connection whose close could return the task.
 * While the daemon stops, datagrams are still read and answered
 * shutting_down until the loop ends.
 */
#ifndef JQ_UDP_H
#define JQ_UDP_H

#include <event2/event.h>
#include <stdint.h>

struct held_datagram;
struct udp_pending;

/* udp.c's own. */
struct udp_state {
	struct udp_pending *waiting;    /* parked requests */
	struct udp_pending *spare;      /* ready for the next datagram */
	struct held_datagram *held, *held_last;   /* replies wait for the
	                                             journal, in order */
	char *buf;                      /* one datagram */
};

/* Read callback of a UDP socket (arg: its struct listener). */
void udp_read(evutil_socket_t fd, short what, void *arg);

/* The journal is safe up to record `safe`: the replies waiting for it go. */
void udp_release(uint64_t safe);

/* Fenced (another daemon took the stream over): every UDP reply owed is
 * dropped unsent, those held for the journal and those of parked requests
 * (cancelled): the changes they would report did not reach the stream. */
void udp_drop_held(void);

/* Forgets every parked UDP request and held reply, and frees what the
 * transport keeps (exit). */
void udp_free_all(void);

#endif
