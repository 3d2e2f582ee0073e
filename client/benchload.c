/*
 * benchload.c - the load generator of `joinq bench` (bench.c tells the
 * design): the connections to the daemon, requests formatted by hand into
 * each connection's output, replies parsed as they come, and the one
 * poll() loop that drives them through the phases of a run.  The
 * sockets' reads and writes are benchio.c's.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "benchint.h"
#include "buf.h"
#include "cli.h"
#include "frame.h"
#include "hostlist.h"
#include "joinq.h"
#include "netconnect.h"
#include "reply.h"
#include "udpseg.h"
#include "xalloc.h"

#define BULK_WINDOW 256       /* requests in flight to prefill and drain (TCP) */
#define CONNECT_TIMEOUT_MS 5000
#define UDP_REPLY_WAIT_MS 2000    /* a datagram's reply may take this */
#define UDP_GET_WAIT "1"          /* seconds a UDP get waits for an item */
#define UDP_GET_WAIT_MS 1000
#define UDP_SILENCE_MS 5000      /* losses and no reply this long: gone */
#define TICK_MS 100               /* the loop wakes at least this often */

static const char *const op_names[] = { "auth", "put", "get", "task_done" };

/* ---- time --------------------------------------------------------------- */

int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void stop(struct bench *b, int status, const char *fmt, ...)
{
	va_list ap;
	if (b->status)
		return;
	b->status = status;
	va_start(ap, fmt);
	vsnprintf(b->why, sizeof b->why, fmt, ap);
	va_end(ap);
}

static void note_error(struct bench *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void note_error(struct bench *b, const char *fmt, ...)
{
	va_list ap;
	if (b->first_error[0])
		return;
	va_start(ap, fmt);
	vsnprintf(b->first_error, sizeof b->first_error, fmt, ap);
	va_end(ap);
}

/* ---- connecting --------------------------------------------------------- */

/* Tries every address host:port resolves to; the first that takes a TCP
 * connection (UDP: that the name resolves) is kept for every connection.
 * NULL, or why not. */
static const char *resolve_one(struct bench *b, const struct hostport *hp)
{
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = b->udp ? SOCK_DGRAM : SOCK_STREAM,
	}, *res, *ai;
	int r = getaddrinfo(hp->host, hp->port, &hints, &res), saved = 0;

	if (r)
		return r == EAI_SYSTEM ? strerror(errno) : gai_strerror(r);
	for (ai = res; ai; ai = ai->ai_next) {
		int fd = net_connect(ai->ai_addr, ai->ai_addrlen, b->udp,
		                     CONNECT_TIMEOUT_MS);
		if (fd >= 0) {
			close(fd);
			break;
		}
		saved = errno;
	}
	if (!ai) {
		freeaddrinfo(res);
		return saved == ETIMEDOUT ? "timed out" : strerror(saved);
	}
	_Static_assert(sizeof b->host == sizeof hp->host &&
	               sizeof b->port == sizeof hp->port, "struct hostport");
	memcpy(b->host, hp->host, sizeof b->host);
	memcpy(b->port, hp->port, sizeof b->port);
	memcpy(&b->addr, ai->ai_addr, ai->ai_addrlen);
	b->addrlen = ai->ai_addrlen;
	freeaddrinfo(res);
	net_format_addr((struct sockaddr *)&b->addr, b->addrlen, b->peer,
	                sizeof b->peer);
	return NULL;
}

/* Finds the daemon: the first address of the list (-H a,b) that answers;
 * the run does not move to another one. */
static int resolve(struct bench *b)
{
	struct hostport hp[HOSTLIST_MAX];
	char why[256];
	int n = hostlist_parse(b->o.opt.host ? b->o.opt.host : JQ_DEFAULT_HOST,
	                       b->o.opt.port ? b->o.opt.port : b->tls ?
	                       JQ_DEFAULT_TLS_PORT : JQ_DEFAULT_PORT,
	                       hp, HOSTLIST_MAX, why, sizeof why);

	if (n < 0) {
		fprintf(stderr, "joinq bench: cannot connect: %s\n", why);
		return EXIT_CONNECTION;
	}
	const char *fault[HOSTLIST_MAX];
	for (int i = 0; i < n; i++)
		if (!(fault[i] = resolve_one(b, &hp[i])))
			return EXIT_OK;
	for (int i = 0; i < n; i++)
		fprintf(stderr, "joinq bench: cannot connect to %s port %s: %s\n",
		        hp[i].host, hp[i].port, fault[i]);
	return EXIT_CONNECTION;
}

/* ---- requests ----------------------------------------------------------- */

static struct request *ring_at(struct conn *c, unsigned k)
{
	return &c->ring[(c->head + k) % c->ring_cap];
}

/* Queues the request now in c->out (its text appended by the caller
 * after this) and records it in flight. */
static struct request *begin_request(struct conn *c, enum op op,
                                     uint64_t arg)
{
	struct request *r = ring_at(c, c->count++);
	r->op = op;
	r->arg = arg;
	r->id = c->next_id++;
	r->sent = now_ns();
	r->answered = false;
	return r;
}

/* Closes a request's text: the UDP id and token, the brace, the LF. */
static void end_request(struct bench *b, struct conn *c,
                        const struct request *r)
{
	if (b->udp) {
		buf_adds(&c->out, ",\"id\":");
		buf_add_u64(&c->out, r->id);
		buf_add(&c->out, b->tail.p, b->tail.len);
	}
	buf_adds(&c->out, "}\n");
}

static void send_auth(struct bench *b, struct conn *c);

/* Opens c's connection: TCP (UDP: its socket), the TLS handshake, the
 * auth.  0, or -1 with why filled. */
static int open_conn(struct bench *b, struct conn *c, char *why,
                     size_t size)
{
	c->fd = net_connect((struct sockaddr *)&b->addr, b->addrlen, b->udp,
	                    CONNECT_TIMEOUT_MS);
	if (c->fd < 0) {
		snprintf(why, size, "cannot connect to %s: %s", b->peer,
		         errno == ETIMEDOUT ? "timed out" : strerror(errno));
		return -1;
	}
	if (b->tls && tlsc_start(&c->sess, b->tls, c->fd, b->host, b->peer,
	                         b->port, now_ns() / 1000000 +
	                         CONNECT_TIMEOUT_MS)) {
		snprintf(why, size, "%s", c->sess.why);
		close(c->fd);
		c->fd = -1;
		return -1;
	}
	if (!b->udp && b->o.opt.token)
		send_auth(b, c);
	if (b->udp)   /* without it the kernel cuts GSO replies itself */
		(void)udpseg_gro_on(c->fd);
	return 0;
}

/* Closes c's connection, its requests all answered. */
static void close_conn(struct conn *c)
{
	tlsc_close_notify(&c->sess);
	tlsc_free(&c->sess);
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	buf_reset(&c->out);
	buf_reset(&c->in);
	c->out_off = c->in_off = c->in_scanned = 0;
}

static void send_auth(struct bench *b, struct conn *c)
{
	const struct request *r = begin_request(c, OP_AUTH, 0);
	buf_adds(&c->out, "{\"op\":\"auth\",\"token\":");
	json_append_string(&c->out, b->o.opt.token, strlen(b->o.opt.token));
	end_request(b, c, r);
}

/* The item of seq: "b<run>:<seq>:" padded with x to item_size. */
static void send_put(struct bench *b, struct conn *c, uint64_t seq)
{
	char head[48];
	const struct request *r = begin_request(c, OP_PUT, seq);
	int n = snprintf(head, sizeof head, "b%s:%" PRIu64 ":", b->run_tag, seq);
	size_t pad = b->o.item_size > (size_t)n ? b->o.item_size - (size_t)n : 0;

	buf_add(&c->out, b->put_head.p, b->put_head.len);
	buf_adds(&c->out, ",\"item\":\"");
	buf_add(&c->out, head, (size_t)n);
	buf_add(&c->out, b->padding, pad);
	buf_addc(&c->out, '"');
	end_request(b, c, r);
}

static void send_get(struct bench *b, struct conn *c)
{
	const struct request *r = begin_request(c, OP_GET, 0);
	buf_add(&c->out, b->get_line.p, b->get_line.len);
	end_request(b, c, r);
	b->gets_outstanding++;
}

static void send_done(struct bench *b, struct conn *c, uint64_t task)
{
	const struct request *r = begin_request(c, OP_DONE, task);
	buf_adds(&c->out, "{\"op\":\"task_done\",\"task\":");
	buf_add_u64(&c->out, task);
	end_request(b, c, r);
	b->dones_in_flight++;
}

/* How many requests a connection keeps in flight in this phase. */
static unsigned window(const struct bench *b, const struct conn *c)
{
	unsigned bulk = b->udp ? b->o.pipeline :
	                b->o.pipeline > BULK_WINDOW ? b->o.pipeline : BULK_WINDOW;
	if (b->phase != PHASE_RUN)
		return bulk;
	return c->role == ROLE_CYCLER ? 1 : b->o.pipeline;
}

/* The last seq the current phase puts, plus one. */
static uint64_t put_limit(const struct bench *b)
{
	return b->phase == PHASE_PREFILL ? b->o.prefill : b->total;
}

/* True if another get can be outstanding: each one must be sure of an
 * item (see the header comment). */
static bool may_get(const struct bench *b)
{
	return b->gets_outstanding + b->delivered + b->puts_failed < b->total;
}

/* Queues what c may send now. */
static void fill(struct bench *b, struct conn *c)
{
	unsigned w = window(b, c);
	bool puts = c->role == ROLE_PRODUCER ||
	            (c->role == ROLE_CYCLER && b->phase == PHASE_PREFILL);
	bool gets = (c->role == ROLE_CONSUMER && b->phase != PHASE_PREFILL) ||
	            (c->role == ROLE_CYCLER && b->phase == PHASE_DRAIN);

	if (c->role == ROLE_CYCLER && b->phase == PHASE_RUN) {
		/* A cycle starts once the last one is over and every prefill
		 * put is answered. */
		if (c->count == 0 && c->cycle_step < 0 &&
		    b->next_seq < b->total && b->cycles < b->o.items) {
			c->cycle_start = now_ns();
			char why[MESSAGE_MAX - 40];
			if (b->o.reconnect) {
				close_conn(c);
				if (open_conn(b, c, why, sizeof why)) {
					stop(b, EXIT_CONNECTION, "%s", why);
					return;
				}
			}
			c->cycle_step = OP_PUT;
			send_put(b, c, b->next_seq++);
		}
		return;
	}
	if (puts)
		while (c->count < w && b->next_seq < put_limit(b))
			send_put(b, c, b->next_seq++);
	if (b->phase == PHASE_DRAIN && b->o.no_drain)
		return;
	if (gets)
		while (c->count < w && may_get(b))
			send_get(b, c);
}

/* ---- replies ------------------------------------------------------------ */

/* The unsigned number after "key": in line, searched from from. */
static bool find_u64(const char *line, size_t len, const char *from,
                     const char *key, uint64_t *v)
{
	size_t klen = strlen(key);
	const char *end = line + len;
	const char *p = memmem(from, (size_t)(end - from), key, klen);
	if (!p)
		return false;
	p += klen;
	if (p >= end || *p < '0' || *p > '9')
		return false;
	uint64_t x = 0;
	while (p < end && *p >= '0' && *p <= '9')
		x = x * 10 + (uint64_t)(*p++ - '0');
	*v = x;
	return true;
}

/* An error reply's code and message, for the report. */
static void describe_error(const char *line, size_t len, char *code,
                           size_t code_size, char *msg, size_t msg_size)
{
	json_t *r = json_loadb(line, len, JSON_ALLOW_NUL, NULL);
	json_t *e = json_object_get(r, "error"), *m = json_object_get(r, "message");
	snprintf(code, code_size, "%s", json_is_string(e) ? json_string_value(e) :
	         "protocol");
	if (json_is_string(m))
		snprintf(msg, msg_size, "%s", json_string_value(m));
	else
		snprintf(msg, msg_size, "the reply is not what protocol 1 says: "
		         "%.*s", len > 120 ? 120 : (int)len, line);
	json_decref(r);
}

/*
 * The seq of the item in a get reply, or -1 for an item this run did not
 * put; *task its task.  Our own items are found with memmem (their text
 * has no quote or backslash); anything else is parsed whole.  Returns -2
 * for a reply that is not a get's.
 */
static int64_t get_reply_item(const struct bench *b, const char *line,
                              size_t len, uint64_t *task)
{
	static const char key[] = "\"item\":\"b";
	const char *end = line + len;
	const char *p = memmem(line, len, key, sizeof key - 1);

	if (p && (size_t)(end - p) > sizeof key + 9 &&
	    !memcmp(p + sizeof key - 1, b->run_tag, 8) &&
	    p[sizeof key - 1 + 8] == ':') {
		p += sizeof key - 1 + 9;
		uint64_t seq = 0;
		const char *digits = p;
		while (p < end && *p >= '0' && *p <= '9')
			seq = seq * 10 + (uint64_t)(*p++ - '0');
		const char *q = p < end ? memchr(p, '"', (size_t)(end - p)) : NULL;
		if (p > digits && p < end && *p == ':' && q && seq < b->total &&
		    find_u64(line, len, q, "\"task\":", task))
			return (int64_t)seq;
	}
	json_t *r = json_loadb(line, len, JSON_ALLOW_NUL, NULL);
	json_t *t = json_object_get(r, "task");
	int64_t result = -2;
	if (json_object_get(r, "item") && json_is_integer(t) &&
	    json_integer_value(t) > 0) {
		*task = (uint64_t)json_integer_value(t);
		result = -1;
	}
	json_decref(r);
	return result;
}

static void record(struct bench *b, int which, int64_t sent, int64_t now)
{
	if (b->phase != PHASE_RUN || sent < b->run_start)
		return;
	hist_record(&b->hist[which], now - sent);
	if (b->o.mode == MODE_THROUGHPUT)
		hist_record(&b->hist[HIST_ALL], now - sent);
}

static void got_item(struct bench *b, struct conn *c, const char *line,
                     size_t len)
{
	uint64_t task = 0;
	int64_t seq = get_reply_item(b, line, len, &task);

	if (seq == -2) {
		b->error_replies++;
		note_error(b, "get: the reply has no item and task: %.*s",
		           len > 120 ? 120 : (int)len, line);
		stop(b, EXIT_ERROR, "%s sent a reply this client cannot read",
		     b->peer);
		return;
	}
	if (seq == -1) {
		b->foreign++;
	} else if (b->seen[seq / 8] & (1u << (seq % 8))) {
		b->duplicates++;
	} else {
		b->seen[seq / 8] |= (uint8_t)(1u << (seq % 8));
		b->delivered++;
	}
	send_done(b, c, task);
}

static void end_run(struct bench *b, int64_t now)
{
	b->run_end = now;
	b->phase = PHASE_DRAIN;
}

/* Handles the reply to request r of c. */
static void on_reply(struct bench *b, struct conn *c, struct request *r,
                     const char *line, size_t len)
{
	static const char ok_prefix[] = "{\"ok\":true";
	int64_t now = now_ns();
	bool ok = len >= sizeof ok_prefix - 1 &&
	          !memcmp(line, ok_prefix, sizeof ok_prefix - 1);

	if (r->op == OP_GET)
		b->gets_outstanding--;
	else if (r->op == OP_DONE)
		b->dones_in_flight--;

	if (!ok) {
		char code[64], msg[MESSAGE_MAX - 80];
		describe_error(line, len, code, sizeof code, msg, sizeof msg);
		/* A UDP get waits a little only, and is asked again: by fill()
		 * for a consumer, here for a cycle waiting on it. */
		if (r->op == OP_GET && b->udp && !strcmp(code, "empty")) {
			if (c->cycle_step == OP_GET)
				send_get(b, c);
			return;
		}
		if (r->op == OP_PUT)
			b->puts_failed++;
		b->error_replies++;
		note_error(b, "%s: %s: %s", op_names[r->op], code, msg);
		stop(b, EXIT_ERROR, "%s answered an error", b->peer);
		return;
	}
	switch (r->op) {
	case OP_AUTH:
		break;
	case OP_PUT:
		b->puts_ok++;
		record(b, HIST_PUT, r->sent, now);
		if (c->cycle_step == OP_PUT) {
			c->cycle_step = OP_GET;
			send_get(b, c);
		}
		break;
	case OP_GET:
		record(b, HIST_GET, r->sent, now);
		got_item(b, c, line, len);
		if (c->cycle_step == OP_GET)
			c->cycle_step = OP_DONE;
		break;
	case OP_DONE:
		b->acked++;
		record(b, HIST_DONE, r->sent, now);
		if (c->cycle_step == OP_DONE) {
			c->cycle_step = -1;
			b->cycles++;
			if (b->phase == PHASE_RUN)
				hist_record(&b->hist[HIST_ALL], now - c->cycle_start);
		}
		/* The clock stops at the n-th item, not at the end of the read
		 * that brought it. */
		if (b->phase == PHASE_RUN &&
		    ((b->o.mode == MODE_THROUGHPUT && ++b->acked_run >= b->o.items) ||
		     (b->o.mode != MODE_THROUGHPUT && b->cycles >= b->o.items)))
			end_run(b, now);
		break;
	}
}

/* Drops answered requests from the head of c's ring. */
static void pop_answered(struct conn *c)
{
	while (c->count && c->ring[c->head].answered) {
		c->head = (c->head + 1) % c->ring_cap;
		c->count--;
	}
}

/* One reply line of c: TCP answers the oldest request, UDP the one whose
 * id it echoes (a late answer to a request counted lost is dropped). */
void on_line(struct bench *b, struct conn *c, const char *line,
                    size_t len)
{
	struct request *r = NULL;

	if (!b->udp) {
		if (!c->count) {
			stop(b, EXIT_ERROR, "%s sent a reply to no request", b->peer);
			return;
		}
		r = &c->ring[c->head];
		r->answered = true;
		on_reply(b, c, r, line, len);
		pop_answered(c);
		return;
	}
	uint64_t id;
	const char *comma = memchr(line, ',', len);
	if (!comma || !find_u64(line, len, comma, "\"id\":", &id))
		id = 0;   /* an error without our id: it can only be counted */
	for (unsigned k = 0; k < c->count; k++) {
		struct request *q = ring_at(c, k);
		if (!q->answered && q->id == id) {
			r = q;
			break;
		}
	}
	if (!r) {
		if (len < 10 || memcmp(line, "{\"ok\":true", 10) != 0) {
			char code[64], msg[MESSAGE_MAX - 80];
			describe_error(line, len, code, sizeof code, msg, sizeof msg);
			b->error_replies++;
			note_error(b, "%s: %s", code, msg);
		}
		return;
	}
	r->answered = true;
	on_reply(b, c, r, line, len);
	pop_answered(c);
}

/* A UDP request with no reply in time is lost: an error, not sent again. */
static void expire_lost(struct bench *b, struct conn *c, int64_t now)
{
	for (unsigned k = 0; k < c->count; k++) {
		struct request *r = ring_at(c, k);
		int64_t wait = (int64_t)UDP_REPLY_WAIT_MS +
		               (r->op == OP_GET ? UDP_GET_WAIT_MS : 0);
		if (r->answered || now - r->sent < wait * 1000000)
			continue;
		r->answered = true;
		b->lost++;
		note_error(b, "%s: no reply within %.1f s (UDP; lost, not sent "
		           "again)", op_names[r->op], (double)wait / 1000);
		switch (r->op) {
		case OP_PUT:
			b->puts_failed++;
			break;
		case OP_GET:
			b->gets_outstanding--;
			break;
		case OP_DONE:
			b->dones_in_flight--;
			break;
		case OP_AUTH:
			break;
		}
		if (c->cycle_step >= 0) {
			/* A lost step ends its cycle; the next one starts afresh. */
			c->cycle_step = -1;
			b->cycles++;
		}
	}
	pop_answered(c);
}

/* ---- the run ------------------------------------------------------------ */

static bool all_puts_answered(const struct bench *b)
{
	return b->puts_ok + b->puts_failed >= b->next_seq;
}

/* Moves on from a phase once its work is done; true when all is. */
static bool advance(struct bench *b)
{
	int64_t now = now_ns();

	if (b->phase == PHASE_PREFILL && b->next_seq >= b->o.prefill &&
	    all_puts_answered(b)) {
		b->phase = PHASE_RUN;
		b->run_start = now;
	}
	if (b->phase == PHASE_RUN) {
		/* The run normally ends in on_reply; this is the end of one
		 * whose lost puts leave fewer than n items to take. */
		bool over = b->o.mode == MODE_LATENCY ? b->cycles >= b->o.items :
		            b->puts_failed && b->next_seq >= b->total &&
		            all_puts_answered(b) && !b->gets_outstanding &&
		            !b->dones_in_flight;
		if (over)
			end_run(b, now);
	}
	if (b->o.no_drain)
		/* Gets still out are dropped with their connection: an item
		 * one of them takes meanwhile goes back to the queue. */
		return b->phase == PHASE_DRAIN && all_puts_answered(b) &&
		       !b->dones_in_flight;
	return b->phase == PHASE_DRAIN && b->next_seq >= b->total &&
	       all_puts_answered(b) &&
	       b->delivered + b->puts_failed >= b->total &&
	       !b->dones_in_flight && !b->gets_outstanding;
}

static void loop(struct bench *b)
{
	struct pollfd *pfd = xcalloc(b->nconns, sizeof *pfd);
	int64_t last_expiry = now_ns();

	while (!b->status && !advance(b)) {
		bool held = false;   /* TLS: a session holds bytes poll cannot see */
		for (unsigned i = 0; i < b->nconns && !b->status; i++) {
			struct conn *c = &b->conns[i];
			fill(b, c);
			bench_flush(b, c);
			pfd[i].fd = c->fd;
			pfd[i].events = POLLIN |
			                (c->out_off < c->out.len ? POLLOUT : 0) |
			                (c->sess.ssl ? c->sess.want : 0);
			held = held || tlsc_pending(&c->sess);
		}
		if (b->status)
			break;
		int64_t now = now_ns();
		if (now >= b->deadline) {
			stop(b, EXIT_TIMEOUT, "--timeout ran out (%g s)", b->o.timeout);
			break;
		}
		int64_t left_ms = (b->deadline - now) / 1000000 + 1;
		int r = poll(pfd, b->nconns, held ? 0 : left_ms < TICK_MS ?
		             (int)left_ms : TICK_MS);
		if (r < 0 && errno != EINTR) {
			stop(b, EXIT_ERROR, "poll: %s", strerror(errno));
			break;
		}
		for (unsigned i = 0; (r > 0 || held) && i < b->nconns && !b->status;
		     i++) {
			if (!pfd[i].revents && !tlsc_pending(&b->conns[i].sess))
				continue;
			bench_read(b, &b->conns[i]);
		}
		now = now_ns();
		if (b->udp && now - last_expiry >= TICK_MS * 1000000LL) {
			last_expiry = now;
			for (unsigned i = 0; i < b->nconns; i++)
				expire_lost(b, &b->conns[i], now);
			/* Losses and then silence: the daemon is gone, and waiting
			 * out each request in turn would take for ever. */
			if (b->lost && now - b->last_reply >= UDP_SILENCE_MS * 1000000LL)
				stop(b, EXIT_CONNECTION, "no reply from %s for %d s over "
				     "UDP", b->peer, UDP_SILENCE_MS / 1000);
		}
	}
	free(pfd);
}

/* Opens every connection; TCP ones with a token authenticate first. */
static int open_conns(struct bench *b)
{
	unsigned max_window = BULK_WINDOW > b->o.pipeline ? BULK_WINDOW :
	                      b->o.pipeline;

	b->nconns = b->o.mode == MODE_LATENCY ? 1 :
	            b->o.producers + b->o.consumers;
	b->conns = xcalloc(b->nconns, sizeof *b->conns);
	for (unsigned i = 0; i < b->nconns; i++) {
		struct conn *c = &b->conns[i];
		c->fd = -1;
		c->role = b->o.mode == MODE_LATENCY ? ROLE_CYCLER :
		          i < b->o.producers ? ROLE_PRODUCER : ROLE_CONSUMER;
		/* The window, an auth ahead of it, and a task_done queued while
		 * the get it answers is still in the ring. */
		c->ring_cap = max_window + 2;
		c->ring = xcalloc(c->ring_cap, sizeof *c->ring);
		c->next_id = 1;
		c->cycle_step = -1;
	}
	for (unsigned i = 0; i < b->nconns; i++) {
		char why[MESSAGE_MAX];
		if (open_conn(b, &b->conns[i], why, sizeof why)) {
			fprintf(stderr, "joinq bench: %s (connection %u of %u)\n", why,
			        i + 1, b->nconns);
			return EXIT_CONNECTION;
		}
	}
	return EXIT_OK;
}

/* The fixed parts of the requests. */
static void build_requests(struct bench *b)
{
	buf_adds(&b->put_head, "{\"op\":\"put\",\"queue\":");
	json_append_string(&b->put_head, b->o.queue, strlen(b->o.queue));
	buf_adds(&b->get_line, "{\"op\":\"get\",\"queue\":");
	json_append_string(&b->get_line, b->o.queue, strlen(b->o.queue));
	if (b->udp) {
		buf_adds(&b->get_line, ",\"timeout\":" UDP_GET_WAIT);
		if (b->o.opt.token) {
			buf_adds(&b->tail, ",\"token\":");
			json_append_string(&b->tail, b->o.opt.token,
			                   strlen(b->o.opt.token));
		}
	}
	b->padding = xmalloc(b->o.item_size + 1);
	memset(b->padding, 'x', b->o.item_size);
	b->padding[b->o.item_size] = '\0';
}

/* A tag of this run, so that its items are told from any others. */
static void pick_run_tag(struct bench *b)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint32_t x = (uint32_t)ts.tv_nsec ^ ((uint32_t)ts.tv_sec << 7) ^
	             ((uint32_t)getpid() << 16) ^ (uint32_t)getpid();
	snprintf(b->run_tag, sizeof b->run_tag, "%08" PRIx32, x);
}


int bench_run(struct bench *b)
{
	int status;

	pick_run_tag(b);
	build_requests(b);
	b->phase = PHASE_PREFILL;
	if ((status = resolve(b)) || (status = open_conns(b)))
		return status;
	b->deadline = now_ns() + (int64_t)(b->o.timeout * 1e9);
	b->last_reply = now_ns();
	loop(b);
	return EXIT_OK;
}
