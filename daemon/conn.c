/*
 * conn.c - one TCP client (see conn.h).
 *
 * A connection is in one of four states:
 *
 *   HANDSHAKE  (a TLS client) its TLS handshake is under way: what it
 *            sends goes to OpenSSL, nothing is executed;
 *   READY    frames are executed as they arrive, replies queued in order;
 *   BLOCKED  a request waits in the engine; the frames behind it wait in
 *            the input buffer, neither executed nor answered (as in Redis);
 *   CLOSING  nothing more is executed; the replies owed are written, then
 *            the connection is closed.
 *
 * HANDSHAKE -> READY when the handshake is done (the frames that came
 * with its last message are executed at once); a handshake that fails is
 * logged (debug) and the connection closed, and one that stalls is an
 * unfinished frame for frame_timeout.
 * READY -> BLOCKED when a request parks; BLOCKED -> READY when it completes
 * (conn_finish), and the connection is then run again from resume(), in the
 * same turn of the loop but not from inside the engine call that woke it.
 * READY -> CLOSING on a frame_too_large, or when every complete frame is
 * answered and the peer has closed its side or the daemon is stopping
 * (frames that arrive while it stops are answered shutting_down).  When the
 * peer closes its side while BLOCKED, the waiting request is answered at
 * once as if non-blocking; an EV_CLOSED event notices the close even while
 * reading is paused (below), where the EOF would wait unread behind the
 * held input.
 *
 * I/O is plain read() and write() on a non-blocking socket, as in Redis: a
 * readable socket is read once (at most READ_CHUNK bytes, so a client that
 * pipelines small frames cannot starve the others; READ_BIG for one that
 * sends big frames, below), its complete frames are executed,
 * and their replies are written at once, in one write, straight from the
 * server's scratch buffer where they were built; only what the kernel does
 * not take is copied to the connection's `out` and waits for a writable
 * event.  A connection owns buffers only while something waits in them (a
 * partial frame, frames behind a blocked request, unsent replies): the
 * common exchange runs through the server's shared buffers, so ten
 * thousand idle clients cost little.
 *
 * Big frames: while a partial frame is being completed, each read appends
 * to the connection's `in`, and the search for its LF resumes where the
 * last one stopped (`scanned`), so a frame is searched once, not once a
 * read.  An emptied `in` of more than READ_CHUNK goes to a small
 * server-wide set of spares (CONN_SPARE_INPUTS) that the next big frame
 * takes, so that big frames do not grow a buffer by doubling and fault
 * fresh pages in each time.  A connection whose last frames were big
 * (`big_frames`: one of BIG_FRAME or more) reads READ_BIG at a time: with
 * 64 KiB items, READ_CHUNK reads cut nearly every frame in two, each first
 * half copied into `in` and each frame taking two turns, where READ_BIG
 * reads bring whole frames that run from the shared buffer (joinqd's CPU
 * per 64 KiB item fell by a quarter).  What bounds a client's turn is the
 * number of frames a read brings, and READ_BIG of frames of BIG_FRAME or
 * more is at most 256 of them, fewer than READ_CHUNK of 100-byte frames.
 *
 * Reading stops while input piles up behind a blocked request (past
 * max_frame + READ_SLACK), and executing pauses while more than max_output
 * is unsent, so a client that does not read cannot grow our memory; one
 * that takes none of its replies for output_timeout is closed.  One timer
 * per connection closes a client that leaves a frame unfinished for
 * frame_timeout (slowloris), or, with idle_timeout set, one that has
 * nothing pending for that long.
 *
 * With a journal, the replies of requests that changed something wait in
 * `held` until the journal says their records are safe (conn_release, at
 * the end of the loop's turn); the replies behind them wait too, so that
 * order holds.  A daemon that loses the stream to another (fenced) closes
 * every connection at once, and the held replies are never sent
 * (conn_drop_all): the changes they report are not in the stream.
 *
 * TLS (tls.c) is a transform on the same I/O: the ciphertext read is fed
 * to the connection's SSL and the plaintext it gives lands where a plain
 * read lands; replies are sealed as they are queued (add_output), so `out`
 * holds ciphertext and flush() sends it unchanged.  A connection closed
 * cleanly sends close_notify; a close_notify received is an EOF, as on
 * plain TCP.  A TLS ClientHello on the plain port, and a JSON frame on
 * the TLS port, are each told apart by their first byte and closed.
 *
 * It owns server.conn (struct conn_state): the list of connections, the
 * ones to resume, the ones holding replies, and the shared read buffer.
 * The loop (loop.c) re-arms the engine's timer after every turn and ends
 * the daemon's stop when the last connection has gone: no callback here
 * needs to.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "frame.h"
#include "journal.h"
#include "log.h"
#include "ops.h"
#include "reply.h"
#include "server.h"
#include "xalloc.h"

#define container_of(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

#define READ_CHUNK 65536         /* bytes read per readable event */
#define READ_BIG ((size_t)262144)  /* the same, for a client of big frames */
#define BIG_FRAME (READ_BIG / 256)  /* a frame this long is big */
#define READ_SLACK 65536         /* input held beyond one max_frame */
/* TLS: ciphertext a connection's SSL may hold undecrypted between reads
 * (less than one record), by which its plaintext may pass one read. */
#define TLS_HELD_MAX (16384 + 2048 + 5)

#define TLS_HANDSHAKE_RECORD 0x16   /* first byte of a ClientHello */

enum conn_phase { CONN_HANDSHAKE, CONN_READY, CONN_BLOCKED, CONN_CLOSING };

struct conn {
	int fd;
	struct event *rev;         /* readable */
	struct event *wev;         /* writable, while output waits */
	struct event *hup;         /* EV_CLOSED: the peer closed its side */
	enum conn_phase state;
	bool reading;              /* rev is added */
	bool eof;                  /* the peer closed its sending side */
	bool authorized;
	bool resume_queued;
	bool heard;                /* its first bytes arrived */
	bool notified;             /* TLS: close_notify is queued */
	SSL *ssl;                  /* a TLS client's session; NULL: plain */
	struct buf in;             /* input not yet executed */
	size_t in_off;             /* in.p[in_off..in.len) waits */
	size_t scanned;            /* of it, the bytes searched for no LF */
	struct buf out;            /* replies the kernel has not taken */
	size_t out_off;            /* out.p[out_off..out.len) waits */
	struct holder holder;      /* tasks delivered here without a lease */
	struct pending pending;    /* the request it is blocked on */
	struct client client;
	struct conn *prev, *next;  /* server.conn.all */
	struct conn *resume_next;  /* server.conn.resume */
	struct event *timer;       /* frame_timeout, idle_timeout */
	msec_t frame_since;        /* when the unfinished frame began; 0 */
	msec_t idle_since;         /* when it was last seen idle; 0 */
	bool partial;              /* a frame is started and not finished */
	bool big_frames;           /* its last frames were big: read READ_BIG */
	struct buf held;           /* replies waiting for the journal */
	uint64_t held_until;       /* the record they wait for */
	bool holding;              /* on server.conn.holding */
	struct conn *held_next;
	char peer[64];
};

static size_t unsent(const struct conn *c)
{
	return c->out.len - c->out_off;
}

static size_t waiting_input(const struct conn *c)
{
	return c->in.len - c->in_off;
}

/* An emptied buffer is given back: idle clients hold no memory. */
static void buf_drop(struct buf *b, size_t *off)
{
	buf_free(b);
	*off = 0;
}

/* The input is emptied: a big buffer is kept as a spare if there is room
 * among them. */
static void drop_input(struct conn *c)
{
	struct conn_state *s = &server.conn;
	if (c->in.cap > READ_CHUNK && s->spare_ins < CONN_SPARE_INPUTS) {
		c->in.len = 0;
		s->spare_in[s->spare_ins++] = c->in;
		c->in = (struct buf){ 0 };
		c->in_off = 0;
	} else {
		buf_drop(&c->in, &c->in_off);
	}
	c->scanned = 0;
}

/* Room for more bytes of input; an input that has no buffer yet and needs
 * a big one takes the biggest spare. */
static void reserve_input(struct conn *c, size_t more)
{
	struct conn_state *s = &server.conn;
	if (!c->in.p && more > READ_CHUNK / 2 && s->spare_ins) {
		unsigned best = 0;
		for (unsigned i = 1; i < s->spare_ins; i++)
			if (s->spare_in[i].cap > s->spare_in[best].cap)
				best = i;
		c->in = s->spare_in[best];
		s->spare_in[best] = s->spare_in[--s->spare_ins];
	}
	buf_reserve(&c->in, more);
}

static void conn_free(struct conn *c)
{
	if (c->state == CONN_BLOCKED)
		ops_cancel(&c->pending);
	engine_drop_holder(server.engine, &c->holder);

	if (c->resume_queued)
		for (struct conn **pp = &server.conn.resume; *pp;
		     pp = &(*pp)->resume_next)
			if (*pp == c) {
				*pp = c->resume_next;
				break;
			}
	if (c->holding)
		for (struct conn **pp = &server.conn.holding; *pp;
		     pp = &(*pp)->held_next)
			if (*pp == c) {
				*pp = c->held_next;
				break;
			}
	if (c->prev)
		c->prev->next = c->next;
	else
		server.conn.all = c->next;
	if (c->next)
		c->next->prev = c->prev;
	server.conn.count--;

	log_debug("%s: closed", c->peer);
	struct event *events[] = { c->rev, c->wev, c->hup, c->timer };
	for (size_t i = 0; i < sizeof events / sizeof events[0]; i++)
		if (events[i])
			event_free(events[i]);
	close(c->fd);
	if (c->ssl)
		tls_free(c->ssl);
	drop_input(c);
	buf_free(&c->out);
	buf_free(&c->held);
	free(c);
}

static void queue_resume(struct conn *c)
{
	if (c->resume_queued)
		return;
	c->resume_queued = true;
	c->resume_next = server.conn.resume;
	server.conn.resume = c;
	event_active(server.conn.resume_ev, EV_TIMEOUT, 0);
}

static void set_reading(struct conn *c, bool on)
{
	if (on == c->reading)
		return;
	c->reading = on;
	if (on)
		event_add(c->rev, NULL);
	else
		event_del(c->rev);
}

/* Reading goes on while the input held stays under its bound, the peer
 * has not closed its side, and the connection still executes. */
static void update_reading(struct conn *c)
{
	set_reading(c, c->state != CONN_CLOSING && !c->eof &&
	            !server.shutting_down &&
	            waiting_input(c) < server.cfg.max_frame + READ_SLACK);
}

/* Writes what waits; what the kernel does not take waits for a writable
 * event, at most output_timeout.  Returns -1 if the connection failed
 * (and was freed). */
static int flush(struct conn *c)
{
	while (unsent(c)) {
		ssize_t n = send(c->fd, c->out.p + c->out_off, unsent(c),
		                 MSG_NOSIGNAL);
		if (n > 0) {
			c->out_off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			/* The timeout runs from the last write the peer took:
			 * EV_PERSIST restarts it after each, and new replies do not. */
			if (!event_pending(c->wev, EV_WRITE, NULL)) {
				double t = server.cfg.output_timeout;
				struct timeval tv = { (time_t)t, (suseconds_t)
				                      ((t - (double)(time_t)t) * 1e6) };
				event_add(c->wev, t > 0 ? &tv : NULL);
			}
			return 0;
		}
		log_debug("%s: %s", c->peer, strerror(errno));
		conn_free(c);
		return -1;
	}
	buf_drop(&c->out, &c->out_off);
	event_del(c->wev);
	return 0;
}

/* Queues replies to be written (sealed, for a TLS client); the caller
 * flushes.  A plain connection with nothing unsent writes them at once,
 * from where they lie, and keeps only what the kernel does not take; a
 * failure is left for the caller's flush to meet again and report, since
 * c may not be freed here (conn_finish runs inside the engine). */
static void add_output(struct conn *c, const char *p, size_t len)
{
	if (c->out_off && c->out_off == c->out.len)
		buf_drop(&c->out, &c->out_off);
	if (c->ssl) {
		tls_seal(c->ssl, p, len, &c->out);
		return;
	}
	while (len && !unsent(c)) {
		ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		p += n;
		len -= (size_t)n;
	}
	buf_add(&c->out, p, len);
}

/* CLOSING: closes once everything owed is written; a TLS client gets a
 * close_notify after its replies, best effort. */
static void close_when_flushed(struct conn *c)
{
	if (c->holding || unsent(c))
		return;
	if (c->ssl && !c->notified) {
		c->notified = true;
		tls_close_notify(c->ssl, &c->out);
		if (flush(c) < 0 || unsent(c))
			return;   /* on_write closes it once sent */
	}
	conn_free(c);
}

/* Queues replies, or holds them while a change they report (or one before
 * them) is not yet safe in the journal. */
static void send_replies(struct conn *c, const char *p, size_t len,
                         bool changed)
{
	const struct journal *j = server.journal;
	if (!len)
		return;
	if (c->holding || (changed && j && journal_safe(j) < journal_appended(j))) {
		buf_add(&c->held, p, len);
		c->held_until = journal_appended(j);
		if (!c->holding) {
			c->holding = true;
			c->held_next = server.conn.holding;
			server.conn.holding = c;
		}
		return;
	}
	add_output(c, p, len);
}

void conn_release(uint64_t safe)
{
	struct conn **pp = &server.conn.holding;
	while (*pp) {
		struct conn *c = *pp;
		if (c->held_until > safe) {
			pp = &c->held_next;
			continue;
		}
		*pp = c->held_next;
		c->holding = false;
		add_output(c, c->held.p, c->held.len);
		buf_free(&c->held);
		if (flush(c) < 0)
			continue;
		if (c->state == CONN_CLOSING)
			close_when_flushed(c);
		else if (c->state == CONN_READY && !unsent(c) && waiting_input(c))
			queue_resume(c);   /* it may have paused for max_output */
	}
}

static void start_closing(struct conn *c)
{
	c->state = CONN_CLOSING;
	drop_input(c);
	update_reading(c);
}

static bool idle(const struct conn *c)
{
	return c->state == CONN_READY && !c->partial && !c->holder.tasks &&
	       !c->holding && !c->eof && !unsent(c);
}
static void on_timer(evutil_socket_t fd, short what, void *arg);

/* Arms the connection's timer for what it waits on now: the end of an
 * unfinished frame, or (idle_timeout) a connection with nothing pending.
 * Another client's task_done or release can leave a connection idle
 * without a word on it, so one that is not idle is looked at again every
 * idle_timeout; it is closed idle_timeout after first being seen idle. */
static void watch(struct conn *c)
{
	double wait = 0;
	msec_t now = server_clock();

	if (!c->partial) {
		c->frame_since = 0;
	} else if (server.cfg.frame_timeout > 0) {
		if (!c->frame_since)
			c->frame_since = now;
		msec_t end = c->frame_since +
		             (msec_t)(server.cfg.frame_timeout * 1000);
		wait = end > now ? (double)(end - now) / 1000 : 0.001;
	}
	if (!wait && server.cfg.idle_timeout > 0 && c->state != CONN_CLOSING) {
		wait = server.cfg.idle_timeout;
		if (!idle(c)) {
			c->idle_since = 0;
		} else if (!c->idle_since) {
			c->idle_since = now;
		} else {
			msec_t end = c->idle_since + (msec_t)(wait * 1000);
			wait = end > now ? (double)(end - now) / 1000 : 0.001;
		}
	}
	if (!wait) {
		if (c->timer)
			evtimer_del(c->timer);
		return;
	}
	if (!c->timer)
		c->timer = evtimer_new(server.base, on_timer, c);
	struct timeval tv = { (time_t)wait,
	                      (suseconds_t)((wait - (double)(time_t)wait) * 1e6) };
	evtimer_add(c->timer, &tv);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	msec_t now = server_clock();
	(void)fd;
	(void)what;
	if (c->partial && c->frame_since &&
	    now >= c->frame_since + (msec_t)(server.cfg.frame_timeout * 1000)) {
		log_debug("%s: %s unfinished for frame_timeout (%g s); closing",
		          c->peer, c->state == CONN_HANDSHAKE ? "a TLS handshake" :
		          "a frame", server.cfg.frame_timeout);
		conn_free(c);
	} else if (!c->partial && idle(c) && c->idle_since &&
	           now >= c->idle_since +
	                  (msec_t)(server.cfg.idle_timeout * 1000)) {
		log_debug("%s: idle for idle_timeout (%g s); closing", c->peer,
		          server.cfg.idle_timeout);
		conn_free(c);
	} else {
		watch(c);
	}
}

/* After executing: writes the replies, and decides what the connection
 * waits for next. */
static void settle(struct conn *c, bool drained)
{
	/* A partial frame at close is dropped; at shutdown every complete
	 * frame was answered shutting_down by ops_execute. */
	if (c->state == CONN_READY && (c->eof || server.shutting_down) && drained)
		start_closing(c);
	if (flush(c) < 0)
		return;
	if (c->state == CONN_CLOSING) {
		close_when_flushed(c);
		return;
	}
	/* Paused for max_output, and the kernel took it all at once: no
	 * writable event will come to go on, so run again (after the other
	 * clients of this turn). */
	if (c->state == CONN_READY && !drained && !unsent(c) && !c->holding)
		queue_resume(c);
	watch(c);
	update_reading(c);
}

/*
 * READY: executes the complete frames of p[0..len), in order, until one
 * blocks or the unsent replies pass max_output.  Returns the bytes used;
 * sets *drained when no complete frame is left.
 */
static size_t execute(struct conn *c, const char *p, size_t len,
                      bool *drained)
{
	struct buf *b = &server.scratch;
	size_t max = server.cfg.max_frame, off = 0, from = c->scanned;
	size_t biggest = 0;        /* the longest frame seen here */
	uint64_t before = server.journal ? journal_appended(server.journal) : 0;

	buf_reset(b);
	c->scanned = 0;
	c->partial = false;
	c->idle_since = 0;
	*drained = false;
	while (c->state == CONN_READY) {
		if (off == len) {
			*drained = true;
			break;
		}
		if (b->len + unsent(c) + c->held.len >= server.cfg.max_output)
			break;   /* on_write runs us again once the output drains */
		struct frame f;
		enum frame_status st = frame_resume(p + off, len - off, from,
		                                    max, &f);
		from = 0;
		if (st == FRAME_NEED_MORE) {
			*drained = true;
			c->partial = true;
			c->scanned = len - off;
			if (biggest < len - off)
				biggest = len - off;
			break;
		}
		if (st == FRAME_TOO_LARGE) {
			char msg[96];
			snprintf(msg, sizeof msg, "the frame passes max_frame (%zu "
			         "bytes before the LF); closing", max);
			ops_error(b, JQ_FRAME_TOO_LARGE, msg);
			log_debug("%s: frame_too_large", c->peer);
			start_closing(c);
			break;
		}
		if (st == FRAME_OK &&
		    ops_execute(f.start, f.len, &c->client, &c->pending, b) ==
		    EXEC_PARKED)
			c->state = CONN_BLOCKED;
		off += f.consumed;
		if (biggest < f.consumed)
			biggest = f.consumed;
		c->frame_since = 0;   /* what follows is a frame of its own */
	}
	if (off || c->partial)
		c->big_frames = biggest >= BIG_FRAME;
	send_replies(c, b->p, b->len, server.journal &&
	             journal_appended(server.journal) > before);
	return off;
}

/* Runs the input the connection holds. */
static void run(struct conn *c)
{
	bool drained;
	size_t used = execute(c, c->in.p + c->in_off, waiting_input(c),
	                      &drained);
	if (c->state != CONN_CLOSING) {
		c->in_off += used;
		if (c->in_off == c->in.len)
			drop_input(c);
	}
	settle(c, drained);
}

/* pending->finish: the blocked request completed; its reply goes out in
 * order and the frames behind it run from resume(). */
static void conn_finish(struct pending *p, const struct buf *reply)
{
	struct conn *c = container_of(p, struct conn, pending);
	if (reply)   /* the change that woke it may not be safe yet */
		send_replies(c, reply->p, reply->len, true);
	c->state = CONN_READY;
	queue_resume(c);
}

/* server.conn.resume_ev: runs the connections whose blocked request
 * completed, outside the call that completed it. */
static void resume(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c;
	(void)fd;
	(void)what;
	(void)arg;
	while ((c = server.conn.resume)) {
		server.conn.resume = c->resume_next;
		c->resume_queued = false;
		if (c->state == CONN_CLOSING)
			close_when_flushed(c);
		else
			run(c);
	}
}

/* The peer closed its side: what it sent is still answered, and nothing
 * may wait any more. */
static void on_eof(struct conn *c)
{
	if (c->state == CONN_HANDSHAKE) {
		log_debug("%s: TLS handshake failed: the client closed the "
		          "connection", c->peer);
		conn_free(c);
		return;
	}
	c->eof = true;
	c->client.nonblocking = true;
	set_reading(c, false);
	if (c->state == CONN_BLOCKED)
		ops_expire(&c->pending);   /* conn_finish queues a resume */
	else if (c->state == CONN_READY)
		run(c);
}

/* A TLS failure: logged with OpenSSL's reason, the alert sent if the
 * kernel takes it at once, and the connection closed. */
static void tls_failed(struct conn *c, const char *what)
{
	char reason[256];
	log_debug("%s: %s: %s", c->peer, what,
	          tls_reason(reason, sizeof reason));
	tls_take_output(c->ssl, &c->out);
	if (flush(c) == 0)
		conn_free(c);
}

/* The client's side of the TLS session closed (close_notify) along with
 * plaintext still to run: as on_eof, but the plaintext is executed next. */
static void tls_eof(struct conn *c)
{
	c->eof = true;
	c->client.nonblocking = true;
	set_reading(c, false);
	if (c->state == CONN_BLOCKED)
		ops_expire(&c->pending);   /* conn_finish queues a resume */
}

/*
 * TLS: one read of ciphertext (at most room bytes), fed to the SSL; the
 * handshake goes on, or the plaintext is decrypted into to, which has
 * cap bytes: room + tls_held() or more, as plaintext is never longer than
 * its ciphertext.  Returns the plaintext's length, 0 at the client's EOF, or
 * -1 when nothing is to be executed now (and -2 if c was freed).
 */
static ssize_t tls_input(struct conn *c, char *to, size_t room, size_t cap)
{
	bool eof = false;

	if (!server.conn.tls_buf)
		server.conn.tls_buf = xmalloc(READ_BIG);
	ssize_t n = read(c->fd, server.conn.tls_buf, room);
	if (n == 0)
		return 0;
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return -1;
		log_debug("%s: %s", c->peer, strerror(errno));
		conn_free(c);
		return -2;
	}
	if (!c->heard) {
		c->heard = true;
		if (server.conn.tls_buf[0] != TLS_HANDSHAKE_RECORD) {
			tls_not_a_handshake(c->fd, server.conn.tls_buf[0],
			                    c->peer);
			conn_free(c);
			return -2;
		}
	}
	tls_feed(c->ssl, server.conn.tls_buf, (size_t)n);
	if (c->state == CONN_HANDSHAKE) {
		int rc = tls_handshake(c->ssl);
		if (rc < 0) {
			tls_failed(c, "TLS handshake failed");
			return -2;
		}
		tls_take_output(c->ssl, &c->out);
		if (flush(c) < 0)
			return -2;
		if (rc == 0)
			return -1;
		char how[96];
		tls_describe(c->ssl, how, sizeof how);
		log_debug("%s: TLS handshake done: %s", c->peer, how);
		c->state = CONN_READY;
		c->partial = false;
		c->frame_since = 0;
	}
	n = tls_read(c->ssl, to, cap, &eof);
	if (n < 0) {
		tls_failed(c, "TLS error");
		return -2;
	}
	tls_take_output(c->ssl, &c->out);   /* a KeyUpdate's answer */
	if (eof && !n)
		return 0;
	if (eof)
		tls_eof(c);
	return n ? n : -1;
}

/*
 * Readable: one read.  With no input waiting, it goes into the server's
 * shared buffer and only what is left unexecuted is copied into the
 * connection's own; otherwise it is appended there.
 */
static void on_read(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	size_t room = server.cfg.max_frame + READ_SLACK - waiting_input(c);
	bool shared = !waiting_input(c);
	size_t extra = c->ssl ? tls_held(c->ssl) : 0;
	size_t cap;                /* bytes free at `to` */
	char *to;
	ssize_t n;
	(void)what;

	if (room > (c->big_frames ? READ_BIG : READ_CHUNK))
		room = c->big_frames ? READ_BIG : READ_CHUNK;
	if (shared) {
		if (!server.conn.read_buf)
			server.conn.read_buf = xmalloc(READ_BIG + TLS_HELD_MAX);
		to = server.conn.read_buf;
		cap = READ_BIG + TLS_HELD_MAX;
		if (room + extra > cap)   /* cannot be: extra is under a record */
			room = extra < cap ? cap - extra : 1;
	} else {
		if (c->in_off > c->in.cap / 2) {   /* make room at the end */
			memmove(c->in.p, c->in.p + c->in_off, waiting_input(c));
			c->in.len -= c->in_off;
			c->in_off = 0;
		}
		reserve_input(c, room + extra);
		to = c->in.p + c->in.len;
		cap = c->in.cap - c->in.len;
	}
	if (c->ssl) {
		n = tls_input(c, to, room, cap);
		if (n == -2)
			return;
		if (n == -1) {
			if (flush(c) == 0)
				watch(c);
			return;
		}
	} else {
		n = read(fd, to, room);
		if (n > 0 && !c->heard) {
			c->heard = true;
			if (to[0] == TLS_HANDSHAKE_RECORD) {
				log_debug("%s: a TLS handshake on the plain port; "
				          "closing", c->peer);
				conn_free(c);
				return;
			}
		}
	}
	if (n < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			log_debug("%s: %s", c->peer, strerror(errno));
			conn_free(c);
		}
		return;
	}
	if (n == 0) {
		on_eof(c);
		return;
	}
	if (!shared) {
		c->in.len += (size_t)n;
	} else if (c->state == CONN_READY) {
		bool drained;
		size_t used = execute(c, to, (size_t)n, &drained);
		if (c->state != CONN_CLOSING && used < (size_t)n) {
			reserve_input(c, (size_t)n - used);
			buf_add(&c->in, to + used, (size_t)n - used);
		}
		settle(c, drained);
		return;
	} else {
		buf_add(&c->in, to, (size_t)n);
	}
	if (c->state == CONN_READY)
		run(c);
	else
		update_reading(c);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	(void)fd;
	if (what & EV_TIMEOUT) {
		log_debug("%s: took none of its replies for output_timeout (%g s); "
		          "closing", c->peer, server.cfg.output_timeout);
		conn_free(c);
	} else if (flush(c) == 0 && !unsent(c)) {
		if (c->state == CONN_CLOSING)
			close_when_flushed(c);
		else if (c->state == CONN_READY)
			run(c);   /* executing may have paused for output */
	}
}

/* The peer closed its side, seen before its EOF is read (EV_CLOSED, where
 * the backend has it): nothing may wait any more.  The frames before the
 * EOF are still read and answered; on_read closes after them. */
static void on_hup(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	(void)fd;
	(void)what;
	c->client.nonblocking = true;
	if (c->state == CONN_BLOCKED)
		ops_expire(&c->pending);   /* conn_finish queues a resume */
}

/* Past max_connections: one error line, then close; a TLS client is
 * closed without a word (a plaintext line would only break its
 * handshake, and a handshake costs what the limit saves). */
static void turn_away(evutil_socket_t fd, const char *peer, bool tls)
{
	struct buf b = { 0 };
	if (tls) {
		close(fd);
		log_debug("%s: turned away (TLS, closed without a handshake): "
		          "max_connections (%u) reached", peer,
		          server.cfg.max_connections);
		return;
	}
	ops_error(&b, JQ_TOO_MANY_CONNECTIONS,
	          "the daemon holds max_connections clients already");
	if (send(fd, b.p, b.len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		log_debug("%s: %s", peer, strerror(errno));
	buf_free(&b);
	close(fd);
	log_debug("%s: turned away: max_connections (%u) reached", peer,
	          server.cfg.max_connections);
}

void conn_accept(struct evconnlistener *lev, evutil_socket_t fd,
                 struct sockaddr *sa, int salen, void *arg)
{
	char host[NI_MAXHOST], port[NI_MAXSERV], peer[64];
	const struct listener *l = arg;
	bool tls = l && l->tls;
	int one = 1;

	(void)lev;
	if (getnameinfo(sa, (socklen_t)salen, host, sizeof host, port, sizeof port,
	                NI_NUMERICHOST | NI_NUMERICSERV))
		snprintf(peer, sizeof peer, "tcp client");
	else
		snprintf(peer, sizeof peer, sa->sa_family == AF_INET6 ?
		         "[%s]:%s" : "%s:%s", host, port);

	if (server.shutting_down) {
		close(fd);
		return;
	}
	if (server.conn.count >= server.cfg.max_connections) {
		turn_away(fd, peer, tls);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

	struct conn *c = xcalloc(1, sizeof *c);
	c->fd = fd;
	c->rev = event_new(server.base, fd, EV_READ | EV_PERSIST, on_read, c);
	c->wev = event_new(server.base, fd, EV_WRITE | EV_PERSIST, on_write, c);
	c->hup = event_new(server.base, fd, EV_CLOSED, on_hup, c);
	c->ssl = tls ? tls_new() : NULL;   /* tls_new logs its failure */
	if (!c->rev || !c->wev || (tls && !c->ssl)) {
		if (!c->rev || !c->wev)
			log_warning("%s: cannot set up the connection", peer);
		struct event *events[] = { c->rev, c->wev, c->hup };
		for (size_t i = 0; i < sizeof events / sizeof events[0]; i++)
			if (events[i])
				event_free(events[i]);
		if (c->ssl)
			tls_free(c->ssl);
		close(fd);
		free(c);
		return;
	}
	memcpy(c->peer, peer, sizeof peer);
	c->state = tls ? CONN_HANDSHAKE : CONN_READY;
	c->partial = tls;   /* frame_timeout bounds the handshake */
	c->client.peer = c->peer;
	c->client.authorized = &c->authorized;
	c->client.holder = &c->holder;
	c->pending.finish = conn_finish;
	set_reading(c, true);
	if (c->hup)
		event_add(c->hup, NULL);

	c->next = server.conn.all;
	if (server.conn.all)
		server.conn.all->prev = c;
	server.conn.all = c;
	server.conn.count++;
	log_debug("%s: connected%s", c->peer, tls ? " (TLS)" : "");
	if (tls)
		watch(c);
}

void conn_init(void)
{
	server.conn.resume_ev = event_new(server.base, -1, 0, resume, NULL);
}

unsigned conn_count(void)
{
	return server.conn.count;
}

void conn_shutdown_all(void)
{
	struct conn *c = server.conn.all, *next;
	for (; c; c = next) {
		next = c->next;
		/* What arrived is answered (shutting_down); nothing more is read. */
		set_reading(c, false);
		if (c->state == CONN_HANDSHAKE)
			conn_free(c);   /* nothing was asked yet */
		else if (c->state == CONN_READY)
			run(c);   /* may free c */
	}
}

void conn_drop_all(void)
{
	/* The waiting requests go first, so that the tasks the connections
	 * give back as they close are handed to none of them. */
	for (struct conn *c = server.conn.all; c; c = c->next)
		if (c->state == CONN_BLOCKED) {
			ops_cancel(&c->pending);
			c->state = CONN_CLOSING;
		}
	while (server.conn.all)
		conn_free(server.conn.all);
}

void conn_reconfigure(bool new_token)
{
	for (struct conn *c = server.conn.all; c; c = c->next) {
		update_reading(c);   /* max_frame bounds the input held */
		if (new_token)
			c->authorized = false;
	}
}

void conn_free_all(void)
{
	conn_drop_all();
	while (server.conn.spare_ins)
		buf_free(&server.conn.spare_in[--server.conn.spare_ins]);
	free(server.conn.read_buf);
	server.conn.read_buf = NULL;
	free(server.conn.tls_buf);
	server.conn.tls_buf = NULL;
	if (server.conn.resume_ev)
		event_free(server.conn.resume_ev);
	server.conn.resume_ev = NULL;
}
