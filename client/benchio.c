/*
 * benchio.c - the sockets of `joinq bench`: writing what a connection has
 * queued and reading its replies, over TCP, TLS and UDP; each reply line
 * goes to benchload.c's on_line.
 *
 * Over UDP the kernel's cost is per call, so a connection's queued
 * datagrams leave in one sendmmsg, each run of equal-sized ones (a
 * bench's puts are, and its gets but for their ids' digits) as one
 * UDP_SEGMENT send that the daemon reads back as one GRO buffer; replies
 * are read with recvmmsg and UDP_GRO, and cut by the segment size.
 * Nothing is padded: a datagram of another size starts another send.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "benchint.h"
#include "buf.h"
#include "cli.h"
#include "frame.h"
#include "udpseg.h"
#include "xalloc.h"

#define READ_CHUNK 65536
#define REPLY_MAX (64u << 20) /* the longest reply line we take */
#define UDP_MSGS 64           /* messages per sendmmsg/recvmmsg */
#define UDP_BUF 65536         /* a datagram, or a GRO train of them */
#define UDP_RX_BUFS 8

struct udp_rx {
	struct mmsghdr msg[UDP_RX_BUFS];
	struct iovec iov[UDP_RX_BUFS];
	union udpseg_cmsg ctl[UDP_RX_BUFS];
	char data[UDP_RX_BUFS][UDP_BUF];
};

static void connection_lost(struct bench *b, const char *how)
{
	stop(b, EXIT_CONNECTION, "the connection to %s is lost: %s", b->peer,
	     how);
}

/* The length of the line at p (its LF included), at most n bytes. */
static size_t line_len(const char *p, size_t n)
{
	const char *lf = memchr(p, '\n', n);
	return lf ? (size_t)(lf - p) + 1 : n;
}

/* UDP: c's queued lines (each a datagram, its LF kept) as far as the
 * socket takes them; see the header comment. */
static void flush_udp(struct bench *b, struct conn *c)
{
	struct mmsghdr msg[UDP_MSGS];
	struct iovec iov[UDP_MSGS];
	union udpseg_cmsg ctl[UDP_MSGS];
	size_t end[UDP_MSGS];

	while (c->out_off < c->out.len) {
		unsigned k = 0;
		size_t off = c->out_off;
		memset(msg, 0, sizeof msg);
		while (off < c->out.len && k < UDP_MSGS) {
			const char *p = c->out.p + off;
			size_t seg = line_len(p, c->out.len - off), len = seg;
			unsigned segs = 1;
			while (!c->no_gso && off + len < c->out.len &&
			       segs < UDPSEG_MAX_SEGMENTS) {
				size_t n = line_len(p + len, c->out.len - off - len);
				if (n > seg || len + n > UDPSEG_MAX_BYTES)
					break;
				len += n;
				segs++;
				if (n < seg)
					break;
			}
			iov[k].iov_base = (void *)p;
			iov[k].iov_len = len;
			msg[k].msg_hdr.msg_iov = &iov[k];
			msg[k].msg_hdr.msg_iovlen = 1;
			if (segs > 1)
				udpseg_set(&msg[k].msg_hdr, &ctl[k], (uint16_t)seg);
			off += len;
			end[k++] = off;
		}
		int n = sendmmsg(c->fd, msg, k, MSG_NOSIGNAL);
		if (n > 0) {
			c->out_off = end[n - 1];
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;   /* poll says when to go on */
		if (msg[0].msg_hdr.msg_controllen && udpseg_refused(errno)) {
			c->no_gso = true;   /* one by one from now on */
			continue;
		}
		if (errno == ECONNREFUSED)
			stop(b, EXIT_CONNECTION, "cannot reach %s over UDP: %s",
			     b->peer, strerror(errno));
		else
			connection_lost(b, strerror(errno));
		return;
	}
	buf_reset(&c->out);
	c->out_off = 0;
}

void bench_flush(struct bench *b, struct conn *c)
{
	if (b->udp) {
		flush_udp(b, c);
		return;
	}
	while (c->out_off < c->out.len) {
		const char *p = c->out.p + c->out_off;
		size_t n = c->out.len - c->out_off;
		ssize_t w = c->sess.ssl ? tlsc_write(&c->sess, p, n) :
		            send(c->fd, p, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;   /* poll says when to go on */
			if (errno == EPROTO && c->sess.ssl)
				connection_lost(b, c->sess.why);
			else
				connection_lost(b, strerror(errno));
			return;
		}
		c->out_off += (size_t)w;
	}
	buf_reset(&c->out);
	c->out_off = 0;
}

static void read_tcp(struct bench *b, struct conn *c)
{
	for (;;) {
		if (c->in_off > 0) {
			buf_consume(&c->in, c->in_off);
			c->in_off = 0;
		}
		buf_reserve(&c->in, READ_CHUNK);
		void *p = c->in.p + c->in.len;
		size_t room = c->in.cap - c->in.len;
		ssize_t n = c->sess.ssl ? tlsc_read(&c->sess, p, room) :
		            recv(c->fd, p, room, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n < 0 && errno == EPROTO && c->sess.ssl) {
			connection_lost(b, c->sess.why);
			return;
		}
		if (n <= 0) {
			connection_lost(b, n == 0 ? "the daemon closed it" :
			                strerror(errno));
			return;
		}
		c->in.len += (size_t)n;

		/* A long reply comes in many reads: its LF is searched for in
		 * the new bytes only. */
		struct frame f;
		enum frame_status s;
		while (!b->status &&
		       (s = frame_resume(c->in.p + c->in_off, c->in.len - c->in_off,
		                         c->in_scanned, REPLY_MAX, &f)) !=
		       FRAME_NEED_MORE) {
			c->in_scanned = 0;
			if (s == FRAME_TOO_LARGE) {
				stop(b, EXIT_ERROR, "%s sent a reply longer than %u bytes",
				     b->peer, REPLY_MAX);
				return;
			}
			if (s == FRAME_OK)
				on_line(b, c, f.start, f.len);
			c->in_off += f.consumed;
		}
		if (b->status)
			return;
		c->in_scanned = c->in.len - c->in_off;   /* s: FRAME_NEED_MORE */
	}
}

/* One reply datagram: its line, without the LF (or CR LF). */
static void on_datagram(struct bench *b, struct conn *c, const char *p,
                        size_t len)
{
	while (len && (p[len - 1] == '\n' || p[len - 1] == '\r'))
		len--;
	on_line(b, c, p, len);
}

static void read_udp(struct bench *b, struct conn *c)
{
	struct udp_rx *rx = b->rx;
	if (!rx)
		rx = b->rx = xmalloc(sizeof *rx);
	for (;;) {
		for (int k = 0; k < UDP_RX_BUFS; k++) {
			struct msghdr *h = &rx->msg[k].msg_hdr;
			memset(h, 0, sizeof *h);
			rx->iov[k].iov_base = rx->data[k];
			rx->iov[k].iov_len = UDP_BUF;
			h->msg_iov = &rx->iov[k];
			h->msg_iovlen = 1;
			h->msg_control = rx->ctl[k].buf;
			h->msg_controllen = sizeof rx->ctl[k].buf;
		}
		int n = recvmmsg(c->fd, rx->msg, UDP_RX_BUFS, 0, NULL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n < 0) {
			stop(b, EXIT_CONNECTION, "cannot reach %s over UDP: %s",
			     b->peer, strerror(errno));
			return;
		}
		b->last_reply = now_ns();
		for (int k = 0; k < n && !b->status; k++) {
			size_t len = rx->msg[k].msg_len;
			size_t seg = udpseg_gro_size(&rx->msg[k].msg_hdr);
			if (!seg || seg > len)
				seg = len;
			for (size_t off = 0; off < len && !b->status; off += seg)
				on_datagram(b, c, rx->data[k] + off,
				            len - off < seg ? len - off : seg);
			if (!len)
				on_datagram(b, c, rx->data[k], 0);
		}
		if (b->status || n < UDP_RX_BUFS)
			return;
	}
}

void bench_read(struct bench *b, struct conn *c)
{
	if (b->udp)
		read_udp(b, c);
	else
		read_tcp(b, c);
}
