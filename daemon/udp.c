/*
 * udp.c - requests in datagrams (see udp.h).
 *
 * A datagram is one frame; a request that blocks is parked in a struct
 * udp_pending that remembers the sender, and its reply is sent when it
 * completes.  One struct is kept ready so that the common, non-blocking
 * request allocates nothing.  Each wake-up reads a bounded batch, so a
 * datagram flood cannot keep the loop from its TCP clients.
 *
 * The kernel's cost is per send and per receive, not per byte, so a batch
 * is read with recvmmsg and its replies leave together at its end with
 * sendmmsg.  Both sides use UDP segmentation offload: with UDP_GRO a
 * client's GSO train (equal-sized datagrams sent in one call) arrives as
 * one buffer, cut here by the segment size into the datagrams it was, each
 * served as if it came alone; and a run of equal-sized replies to one peer
 * (the last may be shorter) leaves as one UDP_SEGMENT send, which the
 * receiver still sees as separate datagrams.  Nothing is padded, and each
 * peer's replies keep their order.  A socket whose kernel or route refuses
 * GSO sends plainly from then on (above the refused size; all of them when
 * small segments are refused).  Replies outside a batch (a parked request
 * finished by a TCP put or a timer) are sent at once, as before.
 *
 * It owns server.udp (struct udp_state): the parked requests, the spare
 * one, the replies held for the journal, the batch's replies and the
 * receive buffers.
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
#include "udpseg.h"
#include "xalloc.h"

#define container_of(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

#define UDP_BATCH 64            /* datagrams per wake-up (a GRO train
                                   is finished once begun) */
#define RECV_BUFS 16            /* buffers per recvmmsg */
#define DATAGRAM_MAX 65536      /* above any UDP payload or GRO train */
#define GSO_SMALL 512           /* a refused segment this small: no GSO */

struct udp_rx {
	struct mmsghdr msg[RECV_BUFS];
	struct iovec iov[RECV_BUFS];
	struct sockaddr_storage peer[RECV_BUFS];
	union udpseg_cmsg ctl[RECV_BUFS];
	char data[RECV_BUFS][DATAGRAM_MAX];
};

/* A reply of this batch, sent by udp_flush. */
struct udp_reply {
	int fd;
	socklen_t peer_len;
	struct sockaddr_storage peer;
	size_t off, len;            /* in server.udp.out_data */
};

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

/* Sends a datagram now, or at the batch's end while one is read. */
static void send_datagram(int fd, const struct sockaddr *peer, socklen_t len,
                          const char *data, size_t n)
{
	struct udp_state *s = &server.udp;
	if (!s->batching) {
		if (sendto(fd, data, n, MSG_DONTWAIT, peer, len) < 0)
			log_debug("udp: cannot send a reply: %s", strerror(errno));
		return;
	}
	if (s->nout == s->out_cap) {
		s->out_cap = s->out_cap ? 2 * s->out_cap : UDP_BATCH;
		s->out = xrealloc(s->out, s->out_cap * sizeof *s->out);
	}
	struct udp_reply *r = &s->out[s->nout++];
	r->fd = fd;
	r->peer_len = len;
	memcpy(&r->peer, peer, len);
	r->off = s->out_data.len;
	r->len = n;
	buf_add(&s->out_data, data, n);
}

static struct listener *listener_of(int fd)
{
	for (size_t i = 0; i < server.listen.count; i++)
		if (server.listen.all[i].fd == fd && server.listen.all[i].udp)
			return &server.listen.all[i];
	return NULL;
}

/* How many replies from out[i] on may leave as one GSO send: the same
 * socket and peer, equal lengths but for a shorter last one. */
static size_t gso_run(size_t i, size_t gso_max)
{
	const struct udp_state *s = &server.udp;
	const struct udp_reply *a = &s->out[i];
	size_t n = 1, total = a->len;
	if (a->len > gso_max)
		return 1;
	while (i + n < s->nout && n < UDPSEG_MAX_SEGMENTS) {
		const struct udp_reply *b = &s->out[i + n];
		if (b->fd != a->fd || b->peer_len != a->peer_len ||
		    memcmp(&b->peer, &a->peer, a->peer_len) != 0 ||
		    b->len > a->len ||
		    total + b->len > UDPSEG_MAX_BYTES)
			break;
		total += b->len;
		n++;
		if (b->len < a->len)
			break;
	}
	return n;
}

/* GSO was refused for segments of size seg: none that big again on l. */
static void gso_refused(struct listener *l, size_t seg, int err)
{
	l->gso_max = seg <= GSO_SMALL ? 0 : seg - 1;
	log_debug("udp: %s: GSO refused for %zu-byte replies (%s); %s", l->name,
	          seg, strerror(err), l->gso_max ? "larger ones go one by one" :
	          "replies go one by one");
}

/* Sends the batch's replies: each socket's, in order, in sendmmsg calls of
 * up to UDP_BATCH messages, a message a GSO run or a single reply. */
static void udp_flush(void)
{
	struct udp_state *s = &server.udp;
	struct mmsghdr msg[UDP_BATCH];
	struct iovec iov[UDP_BATCH];
	union udpseg_cmsg ctl[UDP_BATCH];
	size_t first[UDP_BATCH];
	size_t i = 0;

	while (i < s->nout) {
		int fd = s->out[i].fd;
		struct listener *l = listener_of(fd);
		size_t gso_max = l ? l->gso_max : 0;
		unsigned k = 0;
		memset(msg, 0, sizeof msg);
		while (i < s->nout && s->out[i].fd == fd && k < UDP_BATCH) {
			struct udp_reply *r = &s->out[i];
			size_t run = gso_run(i, gso_max), len = 0;
			for (size_t j = 0; j < run; j++)
				len += r[j].len;
			iov[k].iov_base = s->out_data.p + r->off;
			iov[k].iov_len = len;
			msg[k].msg_hdr.msg_name = &r->peer;
			msg[k].msg_hdr.msg_namelen = r->peer_len;
			msg[k].msg_hdr.msg_iov = &iov[k];
			msg[k].msg_hdr.msg_iovlen = 1;
			if (run > 1)
				udpseg_set(&msg[k].msg_hdr, &ctl[k], (uint16_t)r->len);
			first[k++] = i;
			i += run;
		}
		for (unsigned m = 0; m < k;) {
			int n = sendmmsg(fd, msg + m, k - m, MSG_DONTWAIT);
			if (n > 0) {
				m += (unsigned)n;
				continue;
			}
			if (errno == EINTR)
				continue;
			if (msg[m].msg_hdr.msg_controllen && l &&
			    udpseg_refused(errno)) {
				gso_refused(l, s->out[first[m]].len, errno);
				i = first[m];   /* the rest again, as gso_max allows */
				break;
			}
			log_debug("udp: cannot send a reply: %s", strerror(errno));
			m++;   /* lost, as a datagram may be */
		}
	}
	s->nout = 0;
	buf_reset(&s->out_data);
}

void udp_setup(struct listener *l)
{
	l->gso_max = DATAGRAM_MAX;
	if (udpseg_gro_on(l->fd) < 0)
		log_debug("udp: %s: no UDP_GRO: %s", l->name, strerror(errno));
}

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
	} else {
		send_datagram(fd, peer, len, b->p, b->len);
	}
	buf_free(&small);
}

void udp_release(uint64_t safe)
{
	struct held_datagram *h;
	bool outer = !server.udp.batching;
	server.udp.batching = true;
	while ((h = server.udp.held) && h->until <= safe) {
		server.udp.held = h->next;
		if (!h->next)
			server.udp.held_last = NULL;
		send_datagram(h->fd, (struct sockaddr *)&h->peer, h->peer_len,
		              h->data, h->len);
		free(h);
	}
	if (outer) {
		server.udp.batching = false;
		udp_flush();
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

/* Serves what one receive buffer holds: a datagram, or a GRO train cut
 * into the datagrams it was; all from one sender.  Returns how many,
 * served or denied. */
static int serve_buffer(int fd, const struct msghdr *h, const char *data,
                        size_t len)
{
	size_t seg = udpseg_gro_size(h);
	int count = 0;
	if (!seg || seg > len)
		seg = len;
	/* Only senders udp_allow names are served; the rest are dropped
	 * unanswered (a whole train: one sender), so joinqd cannot be made to
	 * send anywhere else. */
	if (!server.cfg.udp_allow_any &&
	    !cidr_match(server.cfg.udp_allow, server.cfg.nudp_allow, h->msg_name)) {
		count = len ? (int)((len + seg - 1) / seg) : 1;
		server.udp_denied += (uint64_t)count;
		return count;
	}
	size_t off = 0;
	do {
		if (!server.udp.spare) {
			server.udp.spare = xcalloc(1, sizeof *server.udp.spare);
			server.udp.spare->p.finish = udp_finish;
		}
		struct udp_pending *u = server.udp.spare;
		size_t n = len - off < seg ? len - off : seg;
		u->peer_len = h->msg_namelen;
		memcpy(&u->peer, h->msg_name, h->msg_namelen);
		handle(fd, data + off, n, u);
		off += n;
		count++;
	} while (off < len);
	return count;
}

void udp_read(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	(void)arg;
	struct udp_rx *rx = server.udp.rx;
	if (!rx)
		rx = server.udp.rx = xmalloc(sizeof *rx);
	server.udp.batching = true;
	for (int done = 0; done < UDP_BATCH;) {
		int want = UDP_BATCH - done < RECV_BUFS ? UDP_BATCH - done : RECV_BUFS;
		for (int k = 0; k < want; k++) {
			struct msghdr *h = &rx->msg[k].msg_hdr;
			rx->iov[k].iov_base = rx->data[k];
			rx->iov[k].iov_len = DATAGRAM_MAX;
			h->msg_name = &rx->peer[k];
			h->msg_namelen = sizeof rx->peer[k];
			h->msg_iov = &rx->iov[k];
			h->msg_iovlen = 1;
			h->msg_control = rx->ctl[k].buf;
			h->msg_controllen = sizeof rx->ctl[k].buf;
			h->msg_flags = 0;
		}
		int n = recvmmsg(fd, rx->msg, (unsigned)want, MSG_DONTWAIT, NULL);
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				log_debug("udp: recvmmsg: %s", strerror(errno));
			break;
		}
		for (int k = 0; k < n; k++)
			done += serve_buffer(fd, &rx->msg[k].msg_hdr, rx->data[k],
			                     rx->msg[k].msg_len);
		if (n < want)
			break;   /* drained */
	}
	server.udp.batching = false;
	udp_flush();
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
	free(server.udp.rx);
	server.udp.rx = NULL;
	free(server.udp.out);
	server.udp.out = NULL;
	server.udp.nout = server.udp.out_cap = 0;
	buf_free(&server.udp.out_data);
}
