/*
 * libjoinq.c - the client library of joinqd (see joinq.h): connecting,
 * writing requests, waiting for replies, and the ops built on those.
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

#define NEVER (-1)                /* a deadline that never comes */
#define READ_CHUNK 65536          /* bytes asked of each read */
#define FLUSH_AT 65536            /* jq_send writes once this much is queued */
#define DATAGRAM_MAX 65536        /* above any UDP payload */
#define UDP_REQUEST_MAX 65507     /* the largest IPv4 UDP payload */
#define UDP_IO_TIMEOUT_MS 5000    /* UDP's io_timeout when none is given */

struct jq_client {
	int fd;
	enum jq_transport transport;
	int64_t io_ms;            /* a reply's allowance beyond the op's wait;
	                             NEVER: none */
	char *token;              /* UDP: sent in every request; TCP: sent
	                             again on each new connection */
	double connect_timeout;
	struct failover fo;       /* the daemon addresses (several: TCP
	                             fails over, failover.c) */
	bool req_written;         /* TCP: the last request went out, whole or
	                             in part */
	char peer[INET6_ADDRSTRLEN + 16];   /* "127.0.0.1:7477", for messages */

	struct buf out;           /* TCP: request lines not yet written; UDP:
	                             datagrams, one a line, not yet sent */
	size_t out_off;           /* bytes of out written already */
	struct buf in;            /* TCP: bytes read, not yet returned; UDP:
	                             the datagram buffer */
	size_t in_off;            /* bytes of in returned already */
	struct buf req;           /* the request an op is building */
	uint64_t next_id;         /* UDP: the id of the next request */
	struct jq_error broken;   /* TCP: why the stream is unusable; code 0
	                             while it is fine */
	bool shut;                /* jq_shutdown closed the sending side */
	int cancel_fd;            /* jq_set_cancel_fd; -1: none */
	bool cancelled;           /* cancel_fd fired: no more watching it */
};

/* ---- errors ------------------------------------------------------------- */

static int fail(struct jq_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct jq_error *err, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof err->message, fmt, ap);
	va_end(ap);
	err->code = code;
	return code;
}

/* Records an I/O failure on a TCP stream: every later call reports it. */
static int broke(jq_client *c, struct jq_error *err)
{
	if (c->transport == JQ_TCP)
		c->broken = *err;
	return err->code;
}

static int out_of_memory(struct jq_error *err, const char *doing)
{
	return fail(err, JQ_ERR_NOMEM, "out of memory %s", doing);
}

static int ok(struct jq_error *err)
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

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A deadline ms milliseconds from now; NEVER stays NEVER. */
static int64_t after_ms(int64_t ms)
{
	return ms < 0 ? NEVER : now_ms() + ms;
}

/* The poll() timeout that ends at deadline. */
static int poll_ms(int64_t deadline)
{
	if (deadline == NEVER)
		return -1;
	int64_t left = deadline - now_ms();
	if (left < 0)
		return 0;
	return left > INT_MAX ? INT_MAX : (int)left;
}

/*
 * When the reply to a request made with wait w must have come: the op may
 * take its own timeout, and the reply io_timeout more.  Waiting for ever
 * (w NULL, or a blocking wait without timeout) has no deadline.
 */
static int64_t reply_deadline(const jq_client *c, const struct jq_wait *w)
{
	if (c->io_ms == NEVER || !w || (w->block && w->timeout < 0))
		return NEVER;
	double op = w->block ? w->timeout : 0;
	if (!(op < 1e9))
		return NEVER;    /* more than 31 years: for ever */
	return now_ms() + (int64_t)ceil(op * 1000) + c->io_ms;
}

/* Waits until fd is ready for events or deadline passes.  Returns the
 * revents, 0 on timeout, -1 with errno set. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		struct pollfd p = { .fd = fd, .events = events };
		int n = poll(&p, 1, poll_ms(deadline));
		if (n > 0)
			return p.revents;
		if (n == 0)
			return 0;
		if (errno != EINTR)
			return -1;
	}
}

/*
 * Waits until the socket is readable or deadline passes, like wait_fd, but
 * also watches the cancel descriptor.  When it fires, TCP closes its
 * sending side so that the daemon answers now, and the wait goes on for
 * that answer, bounded as for an op that does not block; UDP returns -2.
 */
static int wait_reply(jq_client *c, int64_t *deadline)
{
	for (;;) {
		struct pollfd p[2] = {
			{ .fd = c->fd, .events = POLLIN },
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
		if (!c->shut && shutdown(c->fd, SHUT_WR) < 0 && errno != ENOTCONN)
			return -1;
		c->shut = true;
		int64_t soon = after_ms(c->io_ms == NEVER ? UDP_IO_TIMEOUT_MS
		                                          : c->io_ms);
		if (*deadline == NEVER || *deadline > soon)
			*deadline = soon;
	}
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
		return fail(err, JQ_ERR_CONNECT, "cannot connect to %s port %s: %s",
		            host, port, r == EAI_SYSTEM ? strerror(errno) :
		            gai_strerror(r));

	struct buf why = { .may_fail = true };   /* "ADDR: error; ADDR: error" */
	c->fd = -1;
	for (struct addrinfo *ai = res; ai && c->fd < 0; ai = ai->ai_next) {
		net_format_addr(ai->ai_addr, ai->ai_addrlen, c->peer,
		                sizeof c->peer);
		c->fd = net_connect(ai->ai_addr, ai->ai_addrlen,
		                    c->transport == JQ_UDP, timeout_ms);
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
		fail(err, JQ_ERR_CONNECT, "cannot connect to %s",
		     why.failed ? host : why.p);
		buf_free(&why);
		return JQ_ERR_CONNECT;
	}
	buf_free(&why);
	return JQ_OK;
}

static int authenticate(jq_client *c, const char *token, struct jq_error *err);
static int connect_any(jq_client *c, int64_t until, struct jq_error *err);

jq_client *jq_connect(const struct jq_options *o, struct jq_error *err)
{
	static const struct jq_options defaults = JQ_OPTIONS_INIT;
	struct jq_error spare;

	if (!err)
		err = &spare;
	if (!o)
		o = &defaults;
	if (o->transport != JQ_TCP && o->transport != JQ_UDP) {
		fail(err, JQ_ERR_ARGUMENT, "transport must be JQ_TCP or JQ_UDP");
		return NULL;
	}
	if (o->token && !utf8_valid(o->token, strlen(o->token), NULL)) {
		fail(err, JQ_ERR_ARGUMENT, "the token is not valid UTF-8");
		return NULL;
	}

	jq_client *c = calloc(1, sizeof *c);
	if (!c) {
		out_of_memory(err, "for a client");
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
	if (failover_init(&c->fo, hosts, o->port ? o->port : JQ_DEFAULT_PORT,
	                  why, sizeof why)) {
		fail(err, JQ_ERR_CONNECT, "cannot connect: %s", why);
		free(c);
		return NULL;
	}
	if (o->token && !(c->token = strdup(o->token))) {
		out_of_memory(err, "for the token");
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
	    authenticate(c, c->token, err)) {
		jq_close(c);
		return NULL;
	}
	ok(err);
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
	if (c->fd >= 0)
		close(c->fd);
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
		ssize_t n = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
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
		fail(err, JQ_ERR_CLOSED, "%s closed the connection", c->peer);
	else if (errno == ENOMEM)
		out_of_memory(err, "reading a reply: the stream is out of step");
	else
		fail(err, JQ_ERR_CLOSED, "the connection to %s is lost: %s",
		     c->peer, strerror(errno));
	return broke(c, err);
}

/* Writes everything queued in c->out.  While the socket is full it reads
 * replies into c->in, so that the daemon never waits on us. */
static int tcp_flush(jq_client *c, struct jq_error *err)
{
	while (c->out_off < c->out.len) {
		ssize_t n = send(c->fd, c->out.p + c->out_off,
		                 c->out.len - c->out_off, MSG_NOSIGNAL);
		if (n > 0) {
			c->out_off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			fail(err, JQ_ERR_CLOSED, "the connection to %s is lost: %s",
			     c->peer, strerror(errno));
			return broke(c, err);
		}
		int r = wait_fd(c->fd, POLLIN | POLLOUT, after_ms(c->io_ms));
		if (r < 0) {
			fail(err, JQ_ERR_SYSTEM, "poll: %s", strerror(errno));
			return broke(c, err);
		}
		if (r == 0) {
			fail(err, JQ_ERR_IO_TIMEOUT, "%s takes no requests: nothing "
			     "could be sent for %.3g s", c->peer,
			     (double)c->io_ms / 1000);
			return broke(c, err);
		}
		if (r & POLLIN) {
			n = tcp_read_some(c);
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
				return read_failed(c, n, err);
		}
	}
	buf_reset(&c->out);
	c->out_off = 0;
	return ok(err);
}

/* The next non-blank line in c->in, without its LF and CR, if a whole one
 * is there. */
static bool take_line(jq_client *c, const char **line, size_t *len)
{
	while (c->in_off < c->in.len) {
		const char *p = c->in.p + c->in_off;
		const char *lf = memchr(p, '\n', c->in.len - c->in_off);
		if (!lf)
			return false;
		size_t n = (size_t)(lf - p);
		c->in_off += n + 1;
		if (n > 0 && p[n - 1] == '\r')
			n--;
		if (frame_blank(p, n))
			continue;
		*line = p;
		*len = n;
		return true;
	}
	return false;
}

/* The next reply line, waiting until deadline.  The line stays valid until
 * the next read from c. */
static int tcp_next_line(jq_client *c, int64_t deadline, const char **line,
                         size_t *len, struct jq_error *err)
{
	for (;;) {
		/* Replies that came before a failure are still handed out. */
		if (take_line(c, line, len))
			return ok(err);
		if (c->broken.code) {
			*err = c->broken;
			return err->code;
		}
		if (c->out_off < c->out.len) {
			tcp_flush(c, err);   /* a failure shows on the next turn */
			continue;
		}
		int r = wait_reply(c, &deadline);
		if (r < 0) {
			fail(err, JQ_ERR_SYSTEM, "poll: %s", strerror(errno));
			return broke(c, err);
		}
		if (r == 0) {
			fail(err, JQ_ERR_IO_TIMEOUT, "no reply from %s in time",
			     c->peer);
			return broke(c, err);
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
		return fail(err, JQ_ERR_CONNECT, "cannot reach %s over UDP: %s",
		            c->peer, strerror(errno));
	return fail(err, JQ_ERR_SYSTEM, "%s %s: %s", what, c->peer,
	            strerror(errno));
}

static int udp_send(jq_client *c, const char *p, size_t len,
                    struct jq_error *err)
{
	if (len > UDP_REQUEST_MAX)
		return fail(err, JQ_ERR_ARGUMENT, "the request (%zu bytes) does not "
		            "fit in one UDP datagram; use TCP", len);
	int64_t deadline = after_ms(c->io_ms);
	for (;;) {
		if (send(c->fd, p, len, MSG_NOSIGNAL) >= 0)
			return ok(err);
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return udp_failed(c, "sending to", err);
		int r = wait_fd(c->fd, POLLOUT, deadline);
		if (r < 0)
			return fail(err, JQ_ERR_SYSTEM, "poll: %s", strerror(errno));
		if (r == 0)
			return fail(err, JQ_ERR_IO_TIMEOUT, "cannot send to %s: the "
			            "socket stays full", c->peer);
	}
}

/* The next datagram, in c->in, waiting until deadline. */
static int udp_recv(jq_client *c, int64_t deadline, const char **data,
                    size_t *len, struct jq_error *err)
{
	buf_reset(&c->in);
	if (!buf_reserve(&c->in, DATAGRAM_MAX)) {
		buf_reset(&c->in);
		return out_of_memory(err, "for a datagram");
	}
	for (;;) {
		ssize_t n = recv(c->fd, c->in.p, DATAGRAM_MAX, MSG_TRUNC);
		if (n >= 0) {
			if ((size_t)n > DATAGRAM_MAX)
				return fail(err, JQ_ERR_PROTOCOL, "a reply from %s is "
				            "larger than any datagram", c->peer);
			*data = c->in.p;
			*len = (size_t)n;
			while (*len && ((*data)[*len - 1] == '\n' ||
			                (*data)[*len - 1] == '\r'))
				(*len)--;
			return ok(err);
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return udp_failed(c, "receiving from", err);
		int r = wait_reply(c, &deadline);
		if (r == -2)
			return fail(err, JQ_ERR_CANCELLED, "the wait for %s was "
			            "cancelled", c->peer);
		if (r < 0)
			return fail(err, JQ_ERR_SYSTEM, "poll: %s", strerror(errno));
		if (r == 0)
			return fail(err, JQ_ERR_IO_TIMEOUT, "no reply from %s in time "
			            "(UDP; the request is not sent again)", c->peer);
	}
}

/* ---- replies ------------------------------------------------------------ */

/* The members of a reply the library reads, by enum reply_member. */
enum reply_member {
	RM_OK, RM_ERROR, RM_MESSAGE, RM_ID, RM_TASK, RM_DELIVERIES, RM_ITEM,
	RM_UNFINISHED, RM_QSIZE, RM_MAXSIZE, RM_INFLIGHT, RM_DELAYED, RM_EMPTY,
	RM_FULL, RM_DEAD_LETTERED, RM_PROTOCOL, RM_VERSION, RM_ROLE, RM_ACTIVE,
	RM_COUNT
};

static const char *const reply_names[RM_COUNT] = {
	[RM_OK] = "ok", [RM_ERROR] = "error", [RM_MESSAGE] = "message",
	[RM_ID] = "id", [RM_TASK] = "task", [RM_DELIVERIES] = "deliveries",
	[RM_ITEM] = "item", [RM_UNFINISHED] = "unfinished",
	[RM_QSIZE] = "qsize", [RM_MAXSIZE] = "maxsize",
	[RM_INFLIGHT] = "inflight", [RM_DELAYED] = "delayed",
	[RM_EMPTY] = "empty", [RM_FULL] = "full",
	[RM_DEAD_LETTERED] = "dead_lettered", [RM_PROTOCOL] = "protocol",
	[RM_VERSION] = "version", [RM_ROLE] = "role", [RM_ACTIVE] = "active",
};

/* A reply line and its members as sent: the texts point into the line,
 * which stays valid until the next read from the client. */
struct reply {
	const char *line;
	size_t len;
	struct jfield m[RM_COUNT];
};

/*
 * Reads the reply line[0..len) into r the way joinqd reads requests
 * (proto/jscan.h, then jansson where the scanner is unsure), so that an
 * item keeps its text: 0.1 stays 0.1, and an integer of any size is kept.
 * JQ_OK, or JQ_ERR_PROTOCOL if it is not one JSON object.
 */
static int parse_reply(const jq_client *c, const char *line, size_t len,
                       struct reply *r, struct jq_error *err)
{
	char why[160];

	memset(r, 0, sizeof *r);
	r->line = line;
	r->len = len;
	if (!utf8_valid(line, len, NULL))
		return fail(err, JQ_ERR_PROTOCOL, "%s sent a reply that is not "
		            "UTF-8", c->peer);
	if (jscan_object(line, len, UINT_MAX, reply_names, RM_COUNT,
	                 r->m) == JSCAN_OK)
		return ok(err);
	memset(r->m, 0, sizeof r->m);
	int code = jobject_slow(line, len, UINT_MAX, false, reply_names,
	                        RM_COUNT, r->m, why, sizeof why);
	if (code == JQ_ERR_NOMEM)
		return out_of_memory(err, "reading a reply");
	if (code)
		return fail(err, JQ_ERR_PROTOCOL, "%s sent a reply that %s",
		            c->peer, why);
	return ok(err);
}

/* The string member f decoded into buf[0..cap) with a NUL; false if it is
 * not a string or does not fit. */
static bool member_string(const struct jfield *f, char *buf, size_t cap)
{
	if (f->kind != JK_STRING || cap == 0)
		return false;
	size_t n = jstring_unescape(f->text.p + 1, f->text.len - 2, buf, cap - 1);
	if (n == SIZE_MAX)
		return false;
	buf[n] = '\0';
	return true;
}

/*
 * Judges a reply: JQ_OK for {"ok":true,...}; the daemon's code with err
 * filled from the reply for {"ok":false,...}; JQ_ERR_PROTOCOL for anything
 * else.
 */
static int judge_reply(const jq_client *c, const struct reply *r,
                       struct jq_error *err)
{
	char name[32], text[sizeof err->message - 64];

	if (r->m[RM_OK].kind == JK_TRUE)
		return ok(err);
	if (r->m[RM_OK].kind != JK_FALSE)
		return fail(err, JQ_ERR_PROTOCOL, "%s sent a reply without a "
		            "boolean 'ok'", c->peer);
	bool named = member_string(&r->m[RM_ERROR], name, sizeof name);
	int code = named ? errcode_of(name, strlen(name)) : -1;
	if (!member_string(&r->m[RM_MESSAGE], text, sizeof text))
		text[0] = '\0';
	if (code < 0)
		return fail(err, JQ_ERR_PROTOCOL, "%s answered with an unknown "
		            "error '%s': %s", c->peer, named ? name : "?", text);
	return fail(err, code, "%s", *text ? text : errcode_name(code));
}

/* True if reply r is the answer to UDP request id: it echoes id, or it
 * has no id at all (the daemon leaves the id out of an error it could not
 * tie to a request, such as a too_large that replaced a reply). */
static bool udp_reply_matches(const struct reply *r, uint64_t id)
{
	const struct jfield *v = &r->m[RM_ID];
	if (v->kind != JK_ABSENT)
		return v->kind == JK_INT && (uint64_t)v->integer == id;
	return r->m[RM_OK].kind == JK_FALSE;
}

/* ---- requests ------------------------------------------------------------ */

/* {"op":OP and, unless queue is NULL, "queue":QUEUE. */
static void req_begin(jq_client *c, const char *op, const char *queue)
{
	struct buf *b = &c->req;
	buf_reset(b);
	buf_adds(b, "{\"op\":\"");
	buf_adds(b, op);
	buf_addc(b, '"');
	if (queue) {
		buf_adds(b, ",\"queue\":");
		json_append_string(b, queue, strlen(queue));
	}
}

static void req_u64(jq_client *c, const char *key, uint64_t v)
{
	buf_adds(&c->req, ",\"");
	buf_adds(&c->req, key);
	buf_adds(&c->req, "\":");
	buf_add_u64(&c->req, v);
}

/* ,"key":SECONDS; seconds must be a finite number >= 0. */
static int req_seconds(jq_client *c, const char *key, double s,
                       struct jq_error *err)
{
	char num[40];
	if (!isfinite(s) || s < 0)
		return fail(err, JQ_ERR_ARGUMENT, "%s must be a number of seconds "
		            ">= 0", key);
	/* 15 digits: 0.2 goes out as 0.2, not 0.20000000000000001. */
	snprintf(num, sizeof num, "%.15g", s);
	buf_adds(&c->req, ",\"");
	buf_adds(&c->req, key);
	buf_adds(&c->req, "\":");
	buf_adds(&c->req, num);
	return JQ_OK;
}

/* The block and timeout fields of wait w (NULL: block for ever). */
static int req_wait(jq_client *c, const struct jq_wait *w,
                    struct jq_error *err)
{
	if (!w)
		return JQ_OK;
	if (!w->block) {
		buf_adds(&c->req, ",\"block\":false");
		return JQ_OK;
	}
	if (isnan(w->timeout))
		return fail(err, JQ_ERR_ARGUMENT, "timeout is not a number");
	if (w->timeout < 0 || isinf(w->timeout))
		return JQ_OK;   /* for ever */
	return req_seconds(c, "timeout", w->timeout, err);
}

/* Sends the request line p[0..len) and waits for its reply until
 * deadline.  JQ_OK with *r read, or an error as judge_reply gives it. */
static int call_tcp(jq_client *c, const char *p, size_t len,
                    int64_t deadline, struct reply *r, struct jq_error *err)
{
	const char *line;
	size_t mark = c->out.len;

	buf_add(&c->out, p, len);
	if (c->out.failed) {
		c->out.failed = false;
		return out_of_memory(err, "queueing the request");
	}
	/* A failure to write is reported by tcp_next_line, after any reply
	 * that came before it (frame_too_large, say). */
	c->req_written = tcp_flush(c, err) == JQ_OK || c->out_off > mark;
	if (tcp_next_line(c, deadline, &line, &len, err) ||
	    parse_reply(c, line, len, r, err))
		return err->code;
	return judge_reply(c, r, err);
}

static int call_udp(jq_client *c, int64_t deadline, struct reply *r,
                    struct jq_error *err)
{
	uint64_t id = c->next_id++;
	const char *data;
	size_t len;

	req_u64(c, "id", id);
	if (c->token) {
		buf_adds(&c->req, ",\"token\":");
		json_append_string(&c->req, c->token, strlen(c->token));
	}
	buf_addc(&c->req, '}');
	if (c->req.failed)
		return out_of_memory(err, "building the request");
	if (udp_send(c, c->req.p, c->req.len, err))
		return err->code;
	do {
		if (udp_recv(c, deadline, &data, &len, err) ||
		    parse_reply(c, data, len, r, err))
			return err->code;
	} while (!udp_reply_matches(r, id));
	return judge_reply(c, r, err);
}

/* ---- several addresses: failing over (TCP) ------------------------------ */

/* Forgets the connection, so that the next call makes a new one. */
static void drop_connection(jq_client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	buf_reset(&c->out);
	buf_reset(&c->in);
	c->out_off = c->in_off = 0;
	c->broken.code = JQ_OK;
}

/* True if the daemon closed the connection while it was idle: a request
 * sent now would go nowhere, and may go elsewhere instead. */
static bool peer_gone(jq_client *c)
{
	char byte;
	if (c->in_off < c->in.len || c->out_off < c->out.len)
		return false;
	ssize_t n = recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
	return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
	                  errno != EINTR);
}

/* Remembers the active daemon a refusal names, if it names one. */
static bool note_active(jq_client *c, const struct reply *r)
{
	char active[sizeof c->fo.active.host + sizeof c->fo.active.port];
	return member_string(&r->m[RM_ACTIVE], active, sizeof active) &&
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
		return ok(err);
	buf_adds(&b, "{\"op\":\"auth\",\"token\":");
	json_append_string(&b, c->token, strlen(c->token));
	buf_adds(&b, "}\n");
	int code = b.failed ? out_of_memory(err, "building the request") :
	           call_tcp(c, b.p, b.len, reply_deadline(c, &now), &r, err);
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
				return ok(err);
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
		if (now_ms() + pause > until)
			break;
		poll(NULL, 0, (int)pause);
	}
	struct buf msg = { .may_fail = true };
	list_addresses(c, &msg);
	buf_addc(&msg, '\0');
	buf_addc(&why, '\0');
	fail(err, JQ_ERR_CONNECT, "no daemon answers at %s (%s)",
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
	bool standby = call_tcp(c, ping, sizeof ping - 1,
	                        reply_deadline(c, &now), &pong, err) == JQ_OK &&
	               member_string(&pong.m[RM_ROLE], role, sizeof role) &&
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
static int call_failover(jq_client *c, const struct jq_wait *w,
                         struct reply *r, struct jq_error *err)
{
	int64_t until = 0, pause = 0;
	size_t tries = 0;

	for (;;) {
		if (c->fd >= 0 && !c->broken.code && peer_gone(c))
			drop_connection(c);
		if (c->fd < 0 || c->broken.code) {
			int64_t now = now_ms();
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
		int code = call_tcp(c, c->req.p, c->req.len, reply_deadline(c, w),
		                    r, err);
		if (code == JQ_UNAVAILABLE && from_standby(c, r, err)) {
			drop_connection(c);
			continue;
		}
		if (code != JQ_ERR_CLOSED || c->cancelled)
			return code;
		bool written = c->req_written;
		drop_connection(c);
		if (written && !failover_resendable(c->req.p, c->req.len))
			return fail(err, JQ_ERR_UNKNOWN_OUTCOME, "outcome unknown: the "
			            "connection to %s was lost after the request was "
			            "sent; it may or may not have taken effect", c->peer);
	}
}

/* Finishes the request in c->req, sends it, and decodes its reply, waiting
 * as long as wait w allows. */
static int call(jq_client *c, const struct jq_wait *w, struct reply *r,
                struct jq_error *err)
{
	memset(r, 0, sizeof *r);
	if (c->broken.code && c->fo.n < 2) {
		*err = c->broken;
		return err->code;
	}
	if (c->shut)
		return fail(err, JQ_ERR_ARGUMENT, "the sending side is shut down");
	int64_t deadline = reply_deadline(c, w);
	if (c->transport == JQ_UDP)
		return call_udp(c, deadline, r, err);
	buf_addc(&c->req, '}');
	buf_addc(&c->req, '\n');
	if (c->req.failed)
		return out_of_memory(err, "building the request");
	if (c->fo.n > 1)
		return call_failover(c, w, r, err);
	return call_tcp(c, c->req.p, c->req.len, deadline, r, err);
}

/* The answer to an op that does not wait: it may take io_timeout. */
static const struct jq_wait no_wait = { .block = false, .timeout = 0 };

/* An unsigned integer member of a reply, or JQ_ERR_PROTOCOL. */
static int reply_u64_field(const jq_client *c, const struct reply *r,
                           enum reply_member k, uint64_t *v,
                           struct jq_error *err)
{
	const struct jfield *f = &r->m[k];
	if (f->kind != JK_INT || f->integer < 0)
		return fail(err, JQ_ERR_PROTOCOL, "%s sent a reply without a "
		            "number '%s'", c->peer, reply_names[k]);
	if (v)
		*v = (uint64_t)f->integer;
	return JQ_OK;
}

static int reply_bool_field(const jq_client *c, const struct reply *r,
                            enum reply_member k, bool *v,
                            struct jq_error *err)
{
	const struct jfield *f = &r->m[k];
	if (f->kind != JK_TRUE && f->kind != JK_FALSE)
		return fail(err, JQ_ERR_PROTOCOL, "%s sent a reply without a "
		            "boolean '%s'", c->peer, reply_names[k]);
	*v = f->kind == JK_TRUE;
	return JQ_OK;
}

/* ---- ops ---------------------------------------------------------------- */

static int authenticate(jq_client *c, const char *token, struct jq_error *err)
{
	struct reply r;
	req_begin(c, "auth", NULL);
	buf_adds(&c->req, ",\"token\":");
	json_append_string(&c->req, token, strlen(token));
	return call(c, &no_wait, &r, err);
}

/* The put request in c->req up to its item: {"op":"put",...,"item": */
static int put_begin(jq_client *c, const char *queue, const struct jq_wait *w,
                     struct jq_error *err)
{
	req_begin(c, "put", queue);
	if (req_wait(c, w, err))
		return err->code;
	buf_adds(&c->req, ",\"item\":");
	return JQ_OK;
}

/* Sends the put in c->req, its item added, and reads the task id. */
static int put_end(jq_client *c, const struct jq_wait *w, uint64_t *task,
                   struct jq_error *err)
{
	struct reply r;
	uint64_t t = 0;

	if (call(c, w, &r, err))
		return err->code;
	if (reply_u64_field(c, &r, RM_TASK, &t, err) == JQ_OK && task)
		*task = t;
	return err->code;
}

int jq_put(jq_client *c, const char *queue, const char *item_json,
           size_t len, const struct jq_wait *w, uint64_t *task,
           struct jq_error *err)
{
	struct jq_error spare;
	char why[160];
	size_t bad;

	if (!err)
		err = &spare;
	if (!item_json)
		return fail(err, JQ_ERR_ARGUMENT, "the item is missing");
	if (!utf8_valid(item_json, len, &bad))
		return fail(err, JQ_ERR_ARGUMENT, "the item is not valid UTF-8 "
		            "(byte %zu)", bad);
	int code = jvalue_check(item_json, len, UINT_MAX, why, sizeof why);
	if (code == JQ_ERR_NOMEM)
		return out_of_memory(err, "checking the item");
	if (code)
		return fail(err, JQ_ERR_ARGUMENT, "the item %s", why);
	if (put_begin(c, queue, w, err))
		return err->code;
	/* The item goes as the caller spelt it, numbers included; only the
	 * whitespace between its tokens goes, so that it fits on one line. */
	if (buf_reserve(&c->req, len))
		c->req.len += jtext_compact(item_json, len, c->req.p + c->req.len);
	return put_end(c, w, task, err);
}

int jq_put_string(jq_client *c, const char *queue, const char *s,
                  const struct jq_wait *w, uint64_t *task,
                  struct jq_error *err)
{
	struct jq_error spare;
	size_t bad;

	if (!err)
		err = &spare;
	if (!s)
		return fail(err, JQ_ERR_ARGUMENT, "the item is missing");
	size_t len = strlen(s);
	if (!utf8_valid(s, len, &bad))
		return fail(err, JQ_ERR_ARGUMENT, "the item is not valid UTF-8 "
		            "(byte %zu)", bad);
	if (put_begin(c, queue, w, err))
		return err->code;
	json_append_string(&c->req, s, len);
	return put_end(c, w, task, err);
}

int jq_get(jq_client *c, const char *queue, const struct jq_wait *w,
           double lease, struct jq_task *out, struct jq_error *err)
{
	struct jq_error spare;
	struct reply r;
	uint64_t task = 0, deliveries = 0;

	if (!err)
		err = &spare;
	memset(out, 0, sizeof *out);
	if (isnan(lease) || lease < 0)
		return fail(err, JQ_ERR_ARGUMENT, "lease must be a number of "
		            "seconds > 0, or 0 for none");
	req_begin(c, "get", queue);
	if (req_wait(c, w, err) || (lease > 0 &&
	    req_seconds(c, "lease", lease, err)))
		return err->code;
	if (call(c, w, &r, err))
		return err->code;

	/* The item's text as the daemon sent it, not re-encoded. */
	const struct jtext *item = &r.m[RM_ITEM].text;
	if (r.m[RM_ITEM].kind == JK_ABSENT)
		return fail(err, JQ_ERR_PROTOCOL, "%s sent a get reply without "
		            "an item", c->peer);
	if (reply_u64_field(c, &r, RM_TASK, &task, err) ||
	    reply_u64_field(c, &r, RM_DELIVERIES, &deliveries, err))
		return err->code;
	if (!(out->item = malloc(item->len + 1)))
		return fail(err, JQ_ERR_NOMEM, "out of memory for the item of "
		            "task %llu", (unsigned long long)task);
	out->item_len = jtext_compact(item->p, item->len, out->item);
	out->item[out->item_len] = '\0';
	out->task = task;
	out->deliveries = deliveries > UINT32_MAX ? UINT32_MAX :
	                  (uint32_t)deliveries;
	return JQ_OK;
}

void jq_task_free(struct jq_task *t)
{
	if (!t)
		return;
	free(t->item);
	t->item = NULL;
	t->item_len = 0;
}

/* Begins a request about one delivered task (task_done, release). */
static int task_request(jq_client *c, const char *op, uint64_t task,
                        struct jq_error *err)
{
	/* Task ids are positive and below 2^53 (PROTOCOL.md, put). */
	if (task == 0 || task >= (UINT64_C(1) << 53))
		return fail(err, JQ_ERR_ARGUMENT, "task must be a positive integer "
		            "below 2^53");
	req_begin(c, op, NULL);
	req_u64(c, "task", task);
	return JQ_OK;
}

int jq_task_done(jq_client *c, uint64_t task, uint64_t *unfinished,
                 struct jq_error *err)
{
	struct jq_error spare;
	struct reply r;

	if (!err)
		err = &spare;
	if (task_request(c, "task_done", task, err) ||
	    call(c, &no_wait, &r, err))
		return err->code;
	return reply_u64_field(c, &r, RM_UNFINISHED, unfinished, err);
}

int jq_release(jq_client *c, uint64_t task, double delay,
               struct jq_error *err)
{
	struct jq_error spare;
	struct reply r;

	if (!err)
		err = &spare;
	if (task_request(c, "release", task, err))
		return err->code;
	if (delay != 0 && req_seconds(c, "delay", delay, err))
		return err->code;
	return call(c, &no_wait, &r, err);
}

int jq_join(jq_client *c, const char *queue, const struct jq_wait *w,
            struct jq_error *err)
{
	struct jq_error spare;
	struct reply r;

	if (!err)
		err = &spare;
	req_begin(c, "join", queue);
	if (req_wait(c, w, err))
		return err->code;
	return call(c, w, &r, err);
}

int jq_qsize(jq_client *c, const char *queue, struct jq_qsize *out,
             struct jq_error *err)
{
	struct jq_error spare;
	struct reply r;

	if (!err)
		err = &spare;
	memset(out, 0, sizeof *out);
	req_begin(c, "qsize", queue);
	if (call(c, &no_wait, &r, err))
		return err->code;
	/* Each check fills err when it fails, and the first failure stops. */
	if (!reply_u64_field(c, &r, RM_QSIZE, &out->qsize, err) &&
	    !reply_u64_field(c, &r, RM_MAXSIZE, &out->maxsize, err) &&
	    !reply_u64_field(c, &r, RM_UNFINISHED, &out->unfinished, err) &&
	    !reply_u64_field(c, &r, RM_INFLIGHT, &out->inflight, err) &&
	    !reply_u64_field(c, &r, RM_DELAYED, &out->delayed, err) &&
	    !reply_bool_field(c, &r, RM_EMPTY, &out->empty, err))
		reply_bool_field(c, &r, RM_FULL, &out->full, err);
	/* joinqd adds dead_lettered to PROTOCOL.md's fields; another daemon
	 * may not send it. */
	const struct jfield *dl = &r.m[RM_DEAD_LETTERED];
	if (dl->kind == JK_INT && dl->integer > 0)
		out->dead_lettered = (uint64_t)dl->integer;
	return err->code;
}

int jq_ping(jq_client *c, char *version, size_t len, struct jq_error *err)
{
	struct jq_error spare;
	struct reply r;
	uint64_t protocol = 0;
	char v[128];

	if (!err)
		err = &spare;
	req_begin(c, "ping", NULL);
	if (call(c, &no_wait, &r, err))
		return err->code;
	if (reply_u64_field(c, &r, RM_PROTOCOL, &protocol, err)) {
		/* err says what is missing */
	} else if (protocol != 1) {
		fail(err, JQ_ERR_PROTOCOL, "%s speaks protocol %llu; this client "
		     "speaks 1", c->peer, (unsigned long long)protocol);
	} else if (!member_string(&r.m[RM_VERSION], v, sizeof v)) {
		fail(err, JQ_ERR_PROTOCOL, "%s sent a ping reply without a "
		     "version", c->peer);
	} else if (version && len) {
		snprintf(version, len, "%s", v);
	}
	return err->code;
}

int jq_stats(jq_client *c, char **json, struct jq_error *err)
{
	struct jq_error spare;
	struct reply r;
	json_error_t jerr;

	if (!err)
		err = &spare;
	*json = NULL;
	req_begin(c, "stats", NULL);
	if (call(c, &no_wait, &r, err))
		return err->code;
	/* Over UDP the reply echoes our id: leave it out, so that both
	 * transports give the same text.  (Stats hold no items: jansson's
	 * re-encoding changes nothing there.) */
	json_t *root = json_loadb(r.line, r.len, JSON_ALLOW_NUL, &jerr);
	if (!root)
		return json_error_code(&jerr) == json_error_out_of_memory ?
		       out_of_memory(err, "reading the stats") :
		       fail(err, JQ_ERR_PROTOCOL, "%s sent stats jansson cannot "
		            "read: %s", c->peer, jerr.text);
	json_object_del(root, "id");
	*json = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	if (!*json)
		return out_of_memory(err, "for the stats");
	return JQ_OK;
}

/* ---- raw requests: pipelining ------------------------------------------- */

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/*
 * Over UDP the token goes into each request: a "token" member is added at
 * the end of the object, where it wins over one the request may hold (the
 * last of duplicate keys wins).  The rest goes as it is, and so does text
 * that is not a JSON object, for the daemon to answer.
 */
static int udp_queue(jq_client *c, const char *request, size_t len,
                     struct jq_error *err)
{
	size_t mark = c->out.len;
	int code = JQ_BAD_JSON;
	char why[160];

	if (c->token)
		code = jscan_object(request, len, UINT_MAX, NULL, 0, NULL) ==
		       JSCAN_OK ? JQ_OK :
		       jobject_slow(request, len, UINT_MAX, false, NULL, 0, NULL,
		                    why, sizeof why);
	if (code == JQ_ERR_NOMEM)
		return out_of_memory(err, "checking the request");
	if (code == JQ_OK) {
		size_t open = 0, close = len - 1, k;
		while (is_ws(request[open]))
			open++;
		while (is_ws(request[close]))
			close--;
		for (k = open + 1; k < close && is_ws(request[k]); k++)
			;
		buf_add(&c->out, request, close);
		if (k < close)
			buf_addc(&c->out, ',');   /* the object has members */
		buf_adds(&c->out, "\"token\":");
		json_append_string(&c->out, c->token, strlen(c->token));
		buf_addc(&c->out, '}');
	} else {
		buf_add(&c->out, request, len);
	}
	buf_addc(&c->out, '\n');
	if (c->out.failed) {
		c->out.len = mark;
		c->out.failed = false;
		return out_of_memory(err, "queueing the request");
	}
	return ok(err);
}

/* With several addresses a lost connection is dropped, for the next op
 * call to connect again: the raw calls, which never fail over, say so. */
static int check_stream(jq_client *c, struct jq_error *err)
{
	if (c->broken.code) {
		*err = c->broken;
		return err->code;
	}
	if (c->fd < 0)
		return fail(err, JQ_ERR_CLOSED, "the connection to %s is lost",
		            c->peer);
	return JQ_OK;
}

int jq_send(jq_client *c, const char *request_json, size_t len,
            struct jq_error *err)
{
	struct jq_error spare;

	if (!err)
		err = &spare;
	if (check_stream(c, err))
		return err->code;
	if (c->shut)
		return fail(err, JQ_ERR_ARGUMENT, "the sending side is shut down");
	if (memchr(request_json, '\n', len))
		return fail(err, JQ_ERR_ARGUMENT, "a request must be one line: it "
		            "holds a LF");
	if (c->transport == JQ_UDP)
		return udp_queue(c, request_json, len, err);
	size_t mark = c->out.len;
	buf_reserve(&c->out, len + 1);
	buf_add(&c->out, request_json, len);
	buf_addc(&c->out, '\n');
	if (c->out.failed) {
		c->out.len = mark;
		c->out.failed = false;
		return out_of_memory(err, "queueing the request");
	}
	if (c->out.len - c->out_off >= FLUSH_AT)
		return tcp_flush(c, err);
	return ok(err);
}

int jq_flush(jq_client *c, struct jq_error *err)
{
	struct jq_error spare;

	if (!err)
		err = &spare;
	if (check_stream(c, err))
		return err->code;
	if (c->transport == JQ_TCP)
		return tcp_flush(c, err);

	/* UDP: each queued line is one datagram. */
	while (c->out_off < c->out.len) {
		const char *p = c->out.p + c->out_off;
		const char *lf = memchr(p, '\n', c->out.len - c->out_off);
		size_t n = (size_t)(lf - p);
		c->out_off += n + 1;
		if (udp_send(c, p, n, err)) {
			buf_reset(&c->out);   /* the rest is dropped with the error */
			c->out_off = 0;
			return err->code;
		}
	}
	buf_reset(&c->out);
	c->out_off = 0;
	return ok(err);
}

int jq_recv(jq_client *c, const struct jq_wait *w, char **reply, size_t *len,
            struct jq_error *err)
{
	struct jq_error spare;
	const char *line = "";
	size_t n = 0;
	struct reply r;
	int code;

	if (!err)
		err = &spare;
	if (reply)
		*reply = NULL;
	if (len)
		*len = 0;
	if (c->fd < 0)
		return check_stream(c, err);
	int64_t deadline = reply_deadline(c, w);
	if (c->transport == JQ_UDP) {
		if (jq_flush(c, err) || udp_recv(c, deadline, &line, &n, err))
			return err->code;
	} else if (tcp_next_line(c, deadline, &line, &n, err)) {
		return err->code;
	}

	code = parse_reply(c, line, n, &r, err);
	if (code == JQ_ERR_NOMEM)
		return code;
	if (code == JQ_OK)
		code = judge_reply(c, &r, err);
	if (reply) {
		if (!(*reply = malloc(n + 1)))
			return out_of_memory(err, "for the reply");
		memcpy(*reply, line, n);
		(*reply)[n] = '\0';
	}
	if (len)
		*len = n;
	return code;
}

int jq_shutdown(jq_client *c, struct jq_error *err)
{
	struct jq_error spare;

	if (!err)
		err = &spare;
	if (c->shut)
		return ok(err);
	if (jq_flush(c, err))
		return err->code;
	c->shut = true;
	/* ENOTCONN: the daemon has closed already, which is as good. */
	if (c->transport == JQ_TCP && shutdown(c->fd, SHUT_WR) < 0 &&
	    errno != ENOTCONN) {
		fail(err, JQ_ERR_CLOSED, "the connection to %s is lost: %s",
		     c->peer, strerror(errno));
		return broke(c, err);
	}
	return ok(err);
}
