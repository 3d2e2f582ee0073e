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
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"

struct held_datagram;
struct listener;
struct udp_pending;
struct udp_reply;
struct udp_rx;

/* udp.c's own. */
struct udp_state {
	struct udp_pending *waiting;    /* parked requests */
	struct udp_pending *spare;      /* ready for the next datagram */
	struct held_datagram *held, *held_last;   /* replies wait for the
	                                             journal, in order */
	struct udp_rx *rx;              /* recvmmsg's buffers */
	struct udp_reply *out;          /* replies of this batch, in order */
	size_t nout, out_cap;
	struct buf out_data;            /* their bytes, one after another */
	bool batching;                  /* replies wait in out for udp_flush */
};

/* Readies a UDP socket before its first read: GRO on (a GSO train from a
 * client arrives as one buffer), GSO on for its replies. */
void udp_setup(struct listener *l);

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
