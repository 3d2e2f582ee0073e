/*
 * connection.c - libjoinq's connection to joinqd: errors, deadlines and
 * waits (with the cancel fd), connecting, writing and reading TCP, UDP
 * datagrams, and, with several addresses, failing over to the daemon
 * that answers.  jqcall.c builds the requests and reads the replies.
 *
 * Sockets are non-blocking and every wait is a poll() with a deadline, so
 * connect, send and receive all keep to the timeouts.  No global state:
 * everything lives in the jq_client.
 *
 * TCP.  Requests queue in an output buffer that is written in big chunks;
 * replies are read in big chunks into an input buffer and split into lines
 * there.  While the output is written, input is read too: the daemon stops
 * reading a client whose replies pile up unread, and a pipelining client
 * that only wrote would then wait on it for ever.  A reply that does not
 * come in time leaves the stream out of step (it may still arrive and be
 * taken for the next one), so after an I/O failure the connection is
 * marked broken and every later call fails the same way.
 *
 * TLS.  The same stream inside a TLS session (tlsc.c) on the same
 * non-blocking socket: the handshake follows the connect, bounded by
 * connect_timeout; reads and writes go through the session, and a wait
 * polls for what the session asks (a read may need to write) and does not
 * poll at all while the session holds decrypted bytes, which poll() cannot
 * see.
 *
 * UDP.  One request per datagram, sent once and never retried: the ops are
 * not idempotent (a put sent twice is two tasks), so a lost request or reply
 * is a JQ_ERR_IO_TIMEOUT for the caller to judge.  Each request carries an
 * "id" the library picks, and replies with another id (late answers to a
 * request that timed out) are skipped.  io_timeout bounds each wait and
 * defaults to 5 s; 0 is taken as that default, because a datagram can be
 * lost and an unbounded wait would then never end.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "buf.h"
#include "errcode.h"
#include "failover.h"
#include "frame.h"
#include "jobject.h"
#include "joinq.h"
#include "netconnect.h"
#include "jscan.h"
#include "reply.h"
#include "utf8.h"

#include "jqclient.h"

/* ---- errors ------------------------------------------------------------- */

int jqc_fail(struct jq_error *err, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof err->message, fmt, ap);
	va_end(ap);
	err->code = code;
	return code;
}

/* Records an I/O failure on a TCP stream: every later call reports it. */
int jqc_broke(jq_client *c, struct jq_error *err)
{
	if (c->transport == JQ_TCP)
		c->broken = *err;
	return err->code;
}

int jqc_out_of_memory(struct jq_error *err, const char *doing)
{
	return jqc_fail(err, JQ_ERR_NOMEM, "out of memory %s", doing);
}

int jqc_ok(struct jq_error *err)
{
	err->code = JQ_OK;
	err->message[0] = '\0';
	return JQ_OK;
}

const char *jq_strcode(int code)
{
	switch (code) {
	case JQ_ERR_SYSTEM:
		return "system";
	case JQ_ERR_CONNECT:
		return "connect";
	case JQ_ERR_CLOSED:
		return "closed";
	case JQ_ERR_IO_TIMEOUT:
		return "io_timeout";
	case JQ_ERR_PROTOCOL:
		return "protocol";
	case JQ_ERR_ARGUMENT:
		return "argument";
	case JQ_ERR_CANCELLED:
		return "cancelled";
	case JQ_ERR_NOMEM:
		return "nomem";
	case JQ_ERR_UNKNOWN_OUTCOME:
		return "unknown_outcome";
	default:
		return errcode_name(code);
	}
}

/* ---- time --------------------------------------------------------------- */

/* A deadline ms milliseconds from now; NEVER stays NEVER. */
static int64_t after_ms(int64_t ms)
{
	return ms < 0 ? NEVER : net_now_ms() + ms;
}

/* The poll() timeout that ends at deadline. */
static int poll_ms(int64_t deadline)
{
	if (deadline == NEVER)
		return -1;
	int64_t left = deadline - net_now_ms();
	if (left < 0)
		return 0;
	return left > INT_MAX ? INT_MAX : (int)left;
}

/*
 * When the reply to a request made with wait w must have come: the op may
 * take its own timeout, and the reply io_timeout more.  Waiting for ever
 * (w NULL, or a blocking wait without timeout) has no deadline.
 */
int64_t jqc_reply_deadline(const jq_client *c, const struct jq_wait *w)
{
	if (c->io_ms == NEVER || !w || (w->block && w->timeout < 0))
		return NEVER;
	double op = w->block ? w->timeout : 0;
	if (!(op < 1e9))
		return NEVER;    /* more than 31 years: for ever */
	return net_now_ms() + (int64_t)ceil(op * 1000) + c->io_ms;
}

/*
 * Waits until the socket is readable or deadline passes, like net_wait, but
 * also watches the cancel descriptor.  When it fires, TCP closes its
 * sending side so that the daemon answers now, and the wait goes on for
 * that answer, bounded as for an op that does not block; UDP returns -2.
 */
static int wait_reply(jq_client *c, int64_t *deadline)
{
	for (;;) {
		if (tlsc_pending(&c->sess))
			return POLLIN;
		struct pollfd p[2] = {
			{ .fd = c->fd, .events = POLLIN | (c->sess.ssl ?
			                                   c->sess.want : 0) },
			{ .fd = c->cancel_fd, .events = POLLIN },
		};
		nfds_t n = c->cancel_fd >= 0 && !c->cancelled ? 2 : 1;
		int r = poll(p, n, poll_ms(*deadline));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r;
		if (p[0].revents)
			return p[0].revents;
		c->cancelled = true;
		if (c->transport == JQ_UDP)
			return -2;
		if (!c->shut && jqc_shut_wr(c) < 0 && errno != ENOTCONN)
			return -1;
		c->shut = true;
		int64_t soon = after_ms(c->io_ms == NEVER ? UDP_IO_TIMEOUT_MS
		                                          : c->io_ms);
		if (*deadline == NEVER || *deadline > soon)
			*deadline = soon;
	}
}

/* Closes the sending side: TLS's close_notify first, then the socket's
 * (the daemon reads the end of the stream either way). */
int jqc_shut_wr(jq_client *c)
{
	tlsc_close_notify(&c->sess);
	return shutdown(c->fd, SHUT_WR);
}

void jq_set_cancel_fd(jq_client *c, int fd)
{
	c->cancel_fd = fd;
	c->cancelled = false;
}

/* ---- connecting --------------------------------------------------------- */

/* Tries every address host:port resolves to, in order; the first that
 * answers wins.  The error names each address tried with its failure. */
static int open_socket(jq_client *c, const char *host, const char *port,
                       double connect_timeout, struct jq_error *err)
{
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = c->transport == JQ_UDP ? SOCK_DGRAM : SOCK_STREAM,
	};
	struct addrinfo *res;
	int64_t timeout_ms = connect_timeout > 0 ?
	                     (int64_t)ceil(connect_timeout * 1000) : NEVER;

	int r = getaddrinfo(host, port, &hints, &res);
	if (r)
		return jqc_fail(err, JQ_ERR_CONNECT, "cannot connect to %s port %s: %s",
		                host, port, r == EAI_SYSTEM ? strerror(errno) :
		                gai_strerror(r));

	struct buf why = { .may_fail = true };   /* "ADDR: error; ADDR: error" */
	c->fd = -1;
	for (struct addrinfo *ai = res; ai && c->fd < 0; ai = ai->ai_next) {
		net_format_addr(ai->ai_addr, ai->ai_addrlen, c->peer,
		                sizeof c->peer);
		c->fd = net_connect(ai->ai_addr, ai->ai_addrlen,
		                    c->transport == JQ_UDP, timeout_ms);
		if (c->fd >= 0 && c->tls &&
		    tlsc_start(&c->sess, c->tls, c->fd, host, c->peer, port,
		               after_ms(timeout_ms))) {
			/* The daemon answered: the next address would say the
			 * same of its certificate. */
			close(c->fd);
			c->fd = -1;
			freeaddrinfo(res);
			buf_free(&why);
			return jqc_fail(err, JQ_ERR_CONNECT, "%s", c->sess.why);
		}
		if (c->fd < 0) {
			if (why.len)
				buf_adds(&why, "; ");
			buf_adds(&why, c->peer);
			buf_adds(&why, ": ");
			buf_adds(&why, errno == ETIMEDOUT ? "timed out" :
			         strerror(errno));
		}
	}
	freeaddrinfo(res);
	if (c->fd < 0) {
		buf_addc(&why, '\0');
		jqc_fail(err, JQ_ERR_CONNECT, "cannot connect to %s",
		         why.failed ? host : why.p);
		buf_free(&why);
		return JQ_ERR_CONNECT;
	}
	buf_free(&why);
	return JQ_OK;
}

static int connect_any(jq_client *c, int64_t until, struct jq_error *err);

jq_client *jq_connect(const struct jq_options *o, struct jq_error *err)
{
	return jq_connect_tls(o, NULL, err);
}

jq_client *jq_connect_tls(const struct jq_options *o, const jq_tls *tls,
                          struct jq_error *err)
{
	static const struct jq_options defaults = JQ_OPTIONS_INIT;
	struct jq_error spare;

	if (!err)
		err = &spare;
	if (!o)
		o = &defaults;
	if (o->transport != JQ_TCP && o->transport != JQ_UDP) {
		jqc_fail(err, JQ_ERR_ARGUMENT, "transport must be JQ_TCP or JQ_UDP");
		return NULL;
	}
	if (tls && o->transport == JQ_UDP) {
		jqc_fail(err, JQ_ERR_ARGUMENT, "TLS is for TCP only: UDP cannot "
		         "carry it");
		return NULL;
	}
	if (o->token && !utf8_valid(o->token, strlen(o->token), NULL)) {
		jqc_fail(err, JQ_ERR_ARGUMENT, "the token is not valid UTF-8");
		return NULL;
	}

	jq_client *c = calloc(1, sizeof *c);
	if (!c) {
		jqc_out_of_memory(err, "for a client");
		return NULL;
	}
	c->out.may_fail = c->in.may_fail = c->req.may_fail = true;
	c->transport = o->transport;
	c->next_id = 1;
	c->cancel_fd = -1;
	if (o->io_timeout > 0)
		c->io_ms = (int64_t)ceil(o->io_timeout * 1000);
	else
		c->io_ms = o->transport == JQ_UDP ? UDP_IO_TIMEOUT_MS : NEVER;
	c->connect_timeout = o->connect_timeout;
	c->fd = -1;

	const char *hosts = o->host ? o->host : JQ_DEFAULT_HOST;
	char why[sizeof err->message - 32];
	if (failover_init(&c->fo, hosts, o->port ? o->port : tls ?
	                  JQ_DEFAULT_TLS_PORT : JQ_DEFAULT_PORT,
	                  why, sizeof why)) {
		jqc_fail(err, JQ_ERR_CONNECT, "cannot connect: %s", why);
		free(c);
		return NULL;
	}
	if (tls && (!(c->tls = malloc(sizeof *c->tls)) ||
	            tlsc_config_copy(c->tls, tls))) {
		free(c->tls);
		c->tls = NULL;
		jqc_out_of_memory(err, "for the TLS settings");
		jq_close(c);
		return NULL;
	}
	if (o->token && !(c->token = strdup(o->token))) {
		jqc_out_of_memory(err, "for the token");
		jq_close(c);
		return NULL;
	}
	if (c->transport == JQ_TCP && c->fo.n > 1) {
		if (connect_any(c, 0, err)) {
			jq_close(c);
			return NULL;
		}
		return c;
	}
	/* One address, or UDP: the first address that resolves. */
	for (size_t i = 0; c->fd < 0 && i < c->fo.n; i++)
		open_socket(c, c->fo.addr[i].host, c->fo.addr[i].port,
		            o->connect_timeout, err);
	if (c->fd < 0) {
		jq_close(c);
		return NULL;
	}
	if (c->token && c->transport == JQ_TCP &&
	    jqc_authenticate(c, c->token, err)) {
		jq_close(c);
		return NULL;
	}
	jqc_ok(err);
	return c;
}

const char *jq_peer(const jq_client *c)
{
	return c->peer;
}

void jq_close(jq_client *c)
{
	if (!c)
		return;
	if (c->fd >= 0) {
		tlsc_close_notify(&c->sess);   /* if the socket takes it now */
		close(c->fd);
	}
	tlsc_free(&c->sess);
	if (c->tls)
		tlsc_config_free(c->tls);
	free(c->tls);
	free(c->token);
	buf_free(&c->out);
	buf_free(&c->in);
	buf_free(&c->req);
	free(c);
}

/* ---- TCP: writing and reading ------------------------------------------ */

/* Reads what the socket holds into c->in.  Returns the bytes read, 0 at
 * end of stream, -1 with errno set (EAGAIN: nothing there). */
static ssize_t tcp_read_some(jq_client *c)
{
	if (c->in_off > 0 && c->in_off >= c->in.len / 2) {
		/* Most of the buffer is returned already: move the rest down
		 * once here rather than after every line. */
		buf_consume(&c->in, c->in_off);
		c->in_off = 0;
	}
	if (!buf_reserve(&c->in, READ_CHUNK)) {
		c->in.failed = false;
		errno = ENOMEM;
		return -1;
	}
	for (;;) {
		void *p = c->in.p + c->in.len;
		size_t room = c->in.cap - c->in.len;
		ssize_t n = c->sess.ssl ? tlsc_read(&c->sess, p, room) :
		            recv(c->fd, p, room, 0);
		if (n >= 0 || errno != EINTR) {
			if (n > 0)
				c->in.len += (size_t)n;
			return n;
		}
	}
}

static int read_failed(jq_client *c, ssize_t n, struct jq_error *err)
{
	if (n == 0)
		jqc_fail(err, JQ_ERR_CLOSED, "%s closed the connection", c->peer);
	else if (errno == ENOMEM)
		jqc_out_of_memory(err, "reading a reply: the stream is out of step");
	else if (errno == EPROTO && c->sess.ssl)
		jqc_fail(err, c->sess.refused ? JQ_ERR_CONNECT : JQ_ERR_CLOSED,
		         "%s", c->sess.why);
	else
		jqc_fail(err, JQ_ERR_CLOSED, "the connection to %s is lost: %s",
		         c->peer, strerror(errno));
	return jqc_broke(c, err);
}

/* Writes everything queued in c->out.  While the socket is full it reads
 * replies into c->in, so that the daemon never waits on us. */
int jqc_tcp_flush(jq_client *c, struct jq_error *err)
{
	while (c->out_off < c->out.len) {
		const char *p = c->out.p + c->out_off;
		size_t len = c->out.len - c->out_off;
		ssize_t n = c->sess.ssl ? tlsc_write(&c->sess, p, len) :
		            send(c->fd, p, len, MSG_NOSIGNAL);
		if (n > 0) {
			c->out_off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EPROTO && c->sess.ssl) {
			jqc_fail(err, c->sess.refused ? JQ_ERR_CONNECT :
			         JQ_ERR_CLOSED, "%s", c->sess.why);
			return jqc_broke(c, err);
		}
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			jqc_fail(err, JQ_ERR_CLOSED, "the connection to %s is lost: %s",
			         c->peer, strerror(errno));
			return jqc_broke(c, err);
		}
		/* Replies are read meanwhile; those the session holds first. */
		int r = tlsc_pending(&c->sess) ? POLLIN :
		        net_wait(c->fd, POLLIN | POLLOUT, after_ms(c->io_ms));
		if (r < 0) {
			jqc_fail(err, JQ_ERR_SYSTEM, "poll: %s", strerror(errno));
			return jqc_broke(c, err);
		}
		if (r == 0) {
			jqc_fail(err, JQ_ERR_IO_TIMEOUT, "%s takes no requests: nothing "
			         "could be sent for %.3g s", c->peer,
			         (double)c->io_ms / 1000);
			return jqc_broke(c, err);
		}
		if (r & POLLIN) {
			n = tcp_read_some(c);
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
				return read_failed(c, n, err);
		}
	}
	buf_reset(&c->out);
	c->out_off = 0;
	return jqc_ok(err);
}

/* The next non-blank line in c->in, without its LF and CR, if a whole one
 * is there.  A long reply comes in many reads: its LF is searched for in
 * the new bytes only. */
static bool take_line(jq_client *c, const char **line, size_t *len)
{
	while (c->in_off < c->in.len) {
		struct frame f;
		enum frame_status s = frame_resume(c->in.p + c->in_off,
		                                   c->in.len - c->in_off,
		                                   c->in_scanned, SIZE_MAX, &f);
		if (s == FRAME_NEED_MORE) {
			c->in_scanned = c->in.len - c->in_off;
			return false;
		}
		c->in_scanned = 0;
		c->in_off += f.consumed;
		if (s == FRAME_OK) {
			*line = f.start;
			*len = f.len;
			return true;
		}
	}
	return false;
}

/* The next reply line, waiting until deadline.  The line stays valid until
 * the next read from c. */
int jqc_tcp_next_line(jq_client *c, int64_t deadline, const char **line,
                             size_t *len, struct jq_error *err)
{
	for (;;) {
		/* Replies that came before a failure are still handed out. */
		if (take_line(c, line, len))
			return jqc_ok(err);
		if (c->broken.code) {
			*err = c->broken;
			return err->code;
		}
		if (c->out_off < c->out.len) {
			jqc_tcp_flush(c, err);   /* a failure shows on the next turn */
			continue;
		}
		int r = wait_reply(c, &deadline);
		if (r < 0) {
			jqc_fail(err, JQ_ERR_SYSTEM, "poll: %s", strerror(errno));
			return jqc_broke(c, err);
		}
		if (r == 0) {
			jqc_fail(err, JQ_ERR_IO_TIMEOUT, "no reply from %s in time",
			         c->peer);
			return jqc_broke(c, err);
		}
		ssize_t n = tcp_read_some(c);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
			return read_failed(c, n, err);
	}
}

/* ---- UDP: datagrams ----------------------------------------------------- */

static int udp_failed(jq_client *c, const char *what, struct jq_error *err)
{
	if (errno == ECONNREFUSED)
		return jqc_fail(err, JQ_ERR_CONNECT, "cannot reach %s over UDP: %s",
		                c->peer, strerror(errno));
	return jqc_fail(err, JQ_ERR_SYSTEM, "%s %s: %s", what, c->peer,
	                strerror(errno));
}

int jqc_udp_send(jq_client *c, const char *p, size_t len,
                        struct jq_error *err)
{
	if (len > UDP_REQUEST_MAX)
		return jqc_fail(err, JQ_ERR_ARGUMENT, "the request (%zu bytes) "
		                "does not fit in one UDP datagram; use TCP", len);
	int64_t deadline = after_ms(c->io_ms);
	for (;;) {
		if (send(c->fd, p, len, MSG_NOSIGNAL) >= 0)
			return jqc_ok(err);
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return udp_failed(c, "sending to", err);
		int r = net_wait(c->fd, POLLOUT, deadline);
		if (r < 0)
			return jqc_fail(err, JQ_ERR_SYSTEM, "poll: %s", strerror(errno));
		if (r == 0)
			return jqc_fail(err, JQ_ERR_IO_TIMEOUT, "cannot send to %s: the "
			                "socket stays full", c->peer);
	}
}

/* The next datagram, in c->in, waiting until deadline. */
int jqc_udp_recv(jq_client *c, int64_t deadline, const char **data,
                        size_t *len, struct jq_error *err)
{
	buf_reset(&c->in);
	if (!buf_reserve(&c->in, DATAGRAM_MAX)) {
		buf_reset(&c->in);
		return jqc_out_of_memory(err, "for a datagram");
	}
	for (;;) {
		ssize_t n = recv(c->fd, c->in.p, DATAGRAM_MAX, MSG_TRUNC);
		if (n >= 0) {
			if ((size_t)n > DATAGRAM_MAX)
				return jqc_fail(err, JQ_ERR_PROTOCOL, "a reply from %s is "
				                "larger than any datagram", c->peer);
			*data = c->in.p;
			*len = (size_t)n;
			while (*len && ((*data)[*len - 1] == '\n' ||
			                (*data)[*len - 1] == '\r'))
				(*len)--;
			return jqc_ok(err);
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return udp_failed(c, "receiving from", err);
		int r = wait_reply(c, &deadline);
		if (r == -2)
			return jqc_fail(err, JQ_ERR_CANCELLED, "the wait for %s was "
			                "cancelled", c->peer);
		if (r < 0)
			return jqc_fail(err, JQ_ERR_SYSTEM, "poll: %s", strerror(errno));
		if (r == 0)
			return jqc_fail(err, JQ_ERR_IO_TIMEOUT, "no reply from %s in time "
			                "(UDP; the request is not sent again)", c->peer);
	}
}

/* ---- several addresses: failing over (TCP) ------------------------------ */

/* Forgets the connection, so that the next call makes a new one. */
static void drop_connection(jq_client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	tlsc_free(&c->sess);
	buf_reset(&c->out);
	buf_reset(&c->in);
	c->out_off = c->in_off = c->in_scanned = 0;
	c->broken.code = JQ_OK;
}

/* True if the daemon closed the connection while it was idle: a request
 * sent now would go nowhere, and may go elsewhere instead. */
static bool peer_gone(jq_client *c)
{
	char byte;
	if (c->in_off < c->in.len || c->out_off < c->out.len)
		return false;
	if (c->sess.ssl) {
		/* The socket may hold TLS records that are no reply (session
		 * tickets): the session reads them, and finds any end. */
		if (!tlsc_pending(&c->sess) && net_wait(c->fd, POLLIN, 0) <= 0)
			return false;
		ssize_t n = tcp_read_some(c);
		return n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
	}
	ssize_t n = recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
	return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
	                  errno != EINTR);
}

/* Remembers the active daemon a refusal names, if it names one. */
static bool note_active(jq_client *c, const struct reply *r)
{
	char active[sizeof c->fo.active.host + sizeof c->fo.active.port];
	return jqc_member_string(&r->m[RM_ACTIVE], active, sizeof active) &&
	       failover_name_active(&c->fo, active);
}

/* Sends the token on a new connection; a standby's refusal may name the
 * active daemon. */
static int login(jq_client *c, struct jq_error *err)
{
	struct buf b = { .may_fail = true };
	struct reply r = { 0 };
	static const struct jq_wait now = { false, 0 };

	if (!c->token)
		return jqc_ok(err);
	buf_adds(&b, "{\"op\":\"auth\",\"token\":");
	json_append_string(&b, c->token, strlen(c->token));
	buf_adds(&b, "}\n");
	int code = b.failed ? jqc_out_of_memory(err, "building the request") :
	           jqc_call_tcp(c, b.p, b.len, jqc_reply_deadline(c, &now), &r,
	                        err);
	if (code == JQ_UNAVAILABLE)
		note_active(c, &r);
	buf_free(&b);
	return code;
}

/* Adds ", HOST:PORT" for each address to b, for messages. */
static void list_addresses(const jq_client *c, struct buf *b)
{
	for (size_t i = 0; i < c->fo.n; i++) {
		buf_adds(b, i ? ", " : "");
		bool v6 = strchr(c->fo.addr[i].host, ':') != NULL;
		buf_adds(b, v6 ? "[" : "");
		buf_adds(b, c->fo.addr[i].host);
		buf_adds(b, v6 ? "]:" : ":");
		buf_adds(b, c->fo.addr[i].port);
	}
}

/*
 * Connects to the first address that answers and takes the token: the
 * active daemon a standby named first, then the list round robin from the
 * address after the last one used.  until 0: one round (and one more if a
 * standby named the active in it); else rounds with growing pauses, as
 * long as a pause ends before until.  A daemon that
 * refuses the token ends the search with its answer.
 */
static int connect_any(jq_client *c, int64_t until, struct jq_error *err)
{
	int64_t pause = 0;
	int rounds = 0;
	struct buf why = { .may_fail = true };

	for (;;) {
		bool named = c->fo.has_active;
		size_t n = failover_round_len(&c->fo, named);
		buf_reset(&why);
		for (size_t i = 0; i < n; i++) {
			long index;
			const struct hostport *hp = failover_candidate(&c->fo, named, i,
			                                               &index);
			if (index < 0)
				c->fo.has_active = false;   /* one try each time named */
			int code = open_socket(c, hp->host, hp->port,
			                       c->connect_timeout, err);
			if (!code)
				code = login(c, err);
			if (!code) {
				if (index >= 0)
					c->fo.cur = (size_t)index;
				buf_free(&why);
				return jqc_ok(err);
			}
			drop_connection(c);
			if (code < JQ_NERR && code != JQ_UNAVAILABLE &&
			    code != JQ_SHUTTING_DOWN && code != JQ_TOO_MANY_CONNECTIONS) {
				buf_free(&why);
				return code;    /* unauthorized, say: no use going on */
			}
			buf_adds(&why, why.len ? "; " : "");
			buf_adds(&why, err->message);
		}
		if (until == 0) {
			if (rounds++ || !c->fo.has_active)
				break;
			continue;   /* once more, the active named in this round first */
		}
		pause = failover_backoff(pause);
		if (net_now_ms() + pause > until)
			break;
		poll(NULL, 0, (int)pause);
	}
	struct buf msg = { .may_fail = true };
	list_addresses(c, &msg);
	buf_addc(&msg, '\0');
	buf_addc(&why, '\0');
	jqc_fail(err, JQ_ERR_CONNECT, "no daemon answers at %s (%s)",
	         msg.failed ? "any address" : msg.p, why.failed ? "" : why.p);
	buf_free(&msg);
	buf_free(&why);
	return JQ_ERR_CONNECT;
}

/* True if an unavailable reply r came from a standby: it names the active
 * daemon, or its ping says "role":"standby".  Nothing was changed. */
static bool from_standby(jq_client *c, const struct reply *r,
                         struct jq_error *err)
{
	static const char ping[] = "{\"op\":\"ping\"}\n";
	static const struct jq_wait now = { false, 0 };
	struct jq_error refusal = *err;
	struct reply pong = { 0 };
	char role[16];

	if (note_active(c, r))
		return true;
	bool standby = jqc_call_tcp(c, ping, sizeof ping - 1,
	                        jqc_reply_deadline(c, &now), &pong, err) == JQ_OK &&
	               jqc_member_string(&pong.m[RM_ROLE], role, sizeof role) &&
	               !strcmp(role, "standby");
	*err = refusal;
	return standby;
}

/*
 * A call with several addresses: the request in c->req goes to the daemon
 * connected, or to the next that answers when the connection is gone or a
 * standby refuses it.  Looking for a daemon may take io_timeout
 * (FAILOVER_BUDGET_MS without one) from the first failure on.  A request
 * that went out before the connection was lost is sent again only if that
 * is harmless (failover_resendable); else the outcome is unknown.
 */
int jqc_call_failover(jq_client *c, const struct jq_wait *w,
                             struct reply *r, struct jq_error *err)
{
	int64_t until = 0, pause = 0;
	size_t tries = 0;

	for (;;) {
		if (c->fd >= 0 && !c->broken.code && peer_gone(c))
			drop_connection(c);
		if (c->fd < 0 || c->broken.code) {
			int64_t now = net_now_ms();
			if (!until)
				until = now + (c->io_ms == NEVER ? FAILOVER_BUDGET_MS :
				               c->io_ms);
			else if (now > until)
				return err->code;       /* the last failure */
			if (++tries > failover_round_len(&c->fo, c->fo.has_active)) {
				/* A full round connected but found no active daemon. */
				pause = failover_backoff(pause);
				if (now + pause > until)
					return err->code;
				poll(NULL, 0, (int)pause);
			}
			drop_connection(c);
			if (connect_any(c, until, err))
				return err->code;
		}
		int code = jqc_call_tcp(c, c->req.p, c->req.len,
		                        jqc_reply_deadline(c, w), r, err);
		if (code == JQ_UNAVAILABLE && from_standby(c, r, err)) {
			drop_connection(c);
			continue;
		}
		if (code != JQ_ERR_CLOSED || c->cancelled)
			return code;
		bool written = c->req_written;
		drop_connection(c);
		if (written && !failover_resendable(c->req.p, c->req.len))
			return jqc_fail(err, JQ_ERR_UNKNOWN_OUTCOME, "outcome unknown: "
			                "the connection to %s was lost after the request "
			                "was sent; it may or may not have taken effect",
			                c->peer);
	}
}
