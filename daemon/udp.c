/*
 * udp.c - requests in datagrams (see udp.h).
 *
 * A datagram is one frame; a request that blocks is parked in a struct
 * udp_pending that remembers the sender, and its reply is sent when it
 * completes.  One struct is kept ready so that the common, non-blocking
 * request allocates nothing.  Each wake-up reads a bounded batch, so a
 * datagram flood cannot keep the loop from its TCP clients.
 *
 * It owns server.udp (struct udp_state): the parked requests, the spare
 * one, the replies held for the journal and the datagram buffer.
 */
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "listen.h"
#include "log.h"
#include "ops.h"
#include "frame.h"
#include "journal.h"
#include "reply.h"
#include "server.h"
#include "udp.h"
#include "xalloc.h"

#define container_of(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

#define UDP_BATCH 64            /* datagrams per wake-up */
#define DATAGRAM_MAX 65536      /* above any UDP payload */

struct udp_pending {
	struct pending p;
	struct udp_pending *prev, *next;   /* server.udp.waiting */
	int fd;
	socklen_t peer_len;
	struct sockaddr_storage peer;
};

/* A reply that waits until the journal has the change it reports. */
struct held_datagram {
	struct held_datagram *next;
	uint64_t until;             /* the journal record it waits for */
	int fd;
	socklen_t peer_len;
	struct sockaddr_storage peer;
	size_t len;
	char data[];
};

/* Sends a reply; one that passes udp_max_reply (an error echoing a huge
 * id, already counted as the too_large it is) is replaced by too_large
 * without the id.  A reply reporting a change that the journal does not
 * hold safely yet waits (udp_release). */
static void send_reply(int fd, const struct sockaddr *peer, socklen_t len,
                       const struct buf *b, bool changed)
{
	const struct journal *j = server.journal;
	struct buf small = { 0 };
	if (b->len > server.cfg.udp_max_reply) {
		reply_error(&small, NULL, JQ_TOO_LARGE, "the reply would not fit "
		            "in one datagram (udp_max_reply); its id is left out");
		b = &small;
	}
	if (changed && j && journal_safe(j) < journal_appended(j)) {
		struct held_datagram *h = xmalloc(sizeof *h + b->len);
		h->next = NULL;
		h->until = journal_appended(j);
		h->fd = fd;
		h->peer_len = len;
		memcpy(&h->peer, peer, len);
		h->len = b->len;
		memcpy(h->data, b->p, b->len);
		if (server.udp.held_last)
			server.udp.held_last->next = h;
		else
			server.udp.held = h;
		server.udp.held_last = h;
	} else if (sendto(fd, b->p, b->len, MSG_DONTWAIT, peer, len) < 0) {
		log_debug("udp: cannot send a reply: %s", strerror(errno));
	}
	buf_free(&small);
}

void udp_release(uint64_t safe)
{
	struct held_datagram *h;
	while ((h = server.udp.held) && h->until <= safe) {
		server.udp.held = h->next;
		if (!h->next)
			server.udp.held_last = NULL;
		if (sendto(h->fd, h->data, h->len, MSG_DONTWAIT,
		           (struct sockaddr *)&h->peer, h->peer_len) < 0)
			log_debug("udp: cannot send a reply: %s", strerror(errno));
		free(h);
	}
}

static void udp_finish(struct pending *p, const struct buf *reply)
{
	struct udp_pending *u = container_of(p, struct udp_pending, p);
	if (reply)
		send_reply(u->fd, (struct sockaddr *)&u->peer, u->peer_len, reply,
		           true);
	if (u->prev)
		u->prev->next = u->next;
	else
		server.udp.waiting = u->next;
	if (u->next)
		u->next->prev = u->prev;
	free(u);
}

static void park(struct udp_pending *u)
{
	u->prev = NULL;
	u->next = server.udp.waiting;
	if (u->next)
		u->next->prev = u;
	server.udp.waiting = u;
}

static void handle(int fd, const char *data, size_t n, struct udp_pending *u)
{
	struct buf *out = &server.scratch;
	uint64_t before = 0;
	char peer[NI_MAXHOST + NI_MAXSERV + 8] = "udp client";

	if (server.cfg.log_level >= LOG_DEBUG) {
		char host[NI_MAXHOST], port[NI_MAXSERV];
		if (!getnameinfo((struct sockaddr *)&u->peer, u->peer_len, host,
		                 sizeof host, port, sizeof port,
		                 NI_NUMERICHOST | NI_NUMERICSERV))
			snprintf(peer, sizeof peer, "udp %s:%s", host, port);
	}

	/* One frame: a trailing LF (and a CR before it) may end it.  As on
	 * TCP, max_frame counts the bytes before the LF, a CR included. */
	if (n && data[n - 1] == '\n')
		n--;
	bool too_large = n > server.cfg.max_frame;
	if (n && data[n - 1] == '\r')
		n--;
	buf_reset(out);
	if (!too_large && frame_blank(data, n))
		return;
	if (too_large) {
		ops_error(out, JQ_FRAME_TOO_LARGE, "the datagram passes max_frame");
	} else {
		struct client c = {
			.peer = peer,
			/* at least 1 ms: a lease of 0 would be none at all */
			.default_lease = (msec_t)ceil(server.cfg.udp_lease * 1000),
			.max_reply = server.cfg.udp_max_reply,
		};
		u->fd = fd;
		before = server.journal ? journal_appended(server.journal) : 0;
		if (ops_execute(data, n, &c, &u->p, out) == EXEC_PARKED) {
			park(u);
			server.udp.spare = NULL;
		}
	}
	if (out->len)
		send_reply(fd, (struct sockaddr *)&u->peer, u->peer_len, out,
		           server.journal && journal_appended(server.journal) > before);
}

void udp_read(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	(void)arg;
	if (!server.udp.buf)
		server.udp.buf = xmalloc(DATAGRAM_MAX);
	for (int i = 0; i < UDP_BATCH; i++) {
		if (!server.udp.spare) {
			server.udp.spare = xcalloc(1, sizeof *server.udp.spare);
			server.udp.spare->p.finish = udp_finish;
		}
		struct udp_pending *u = server.udp.spare;
		u->peer_len = sizeof u->peer;
		ssize_t n = recvfrom(fd, server.udp.buf, DATAGRAM_MAX, MSG_DONTWAIT,
		                     (struct sockaddr *)&u->peer, &u->peer_len);
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				log_debug("udp: recvfrom: %s", strerror(errno));
			break;
		}
		/* Only senders udp_allow names are served; the rest are dropped
		 * unanswered, so joinqd cannot be made to send anywhere else. */
		if (!server.cfg.udp_allow_any &&
		    !cidr_match(server.cfg.udp_allow, server.cfg.nudp_allow,
		                &u->peer)) {
			server.udp_denied++;
			continue;
		}
		handle(fd, server.udp.buf, (size_t)n, u);
	}
}

void udp_drop_held(void)
{
	struct udp_pending *u;
	while ((u = server.udp.waiting)) {
		server.udp.waiting = u->next;
		ops_cancel(&u->p);
		free(u);
	}
	struct held_datagram *h;
	while ((h = server.udp.held)) {
		server.udp.held = h->next;
		free(h);
	}
	server.udp.held_last = NULL;
}

void udp_free_all(void)
{
	udp_drop_held();
	free(server.udp.spare);
	server.udp.spare = NULL;
	free(server.udp.buf);
	server.udp.buf = NULL;
}
