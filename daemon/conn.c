/*
 * conn.c - one TCP client (see conn.h).
 *
 * A connection is in one of three states:
 *
 *   READY    frames are executed as they arrive, replies queued in order;
 *   BLOCKED  a request waits in the engine; the frames behind it wait in
 *            the input buffer, neither executed nor answered (as in Redis);
 *   CLOSING  nothing more is executed; the replies owed are written, then
 *            the connection is closed.
 *
 * READY -> BLOCKED when a request parks; BLOCKED -> READY when it completes
 * (conn_finish), and the connection is then run again from conn_resume, not
 * from inside the engine call that woke it.  READY -> CLOSING on a
 * frame_too_large, or when every complete frame is answered and the peer
 * has closed its side or the daemon is stopping (frames that arrive while
 * it stops are answered shutting_down).  When the peer closes its side while
 * BLOCKED, the waiting request is answered at once as if non-blocking; an
 * EV_CLOSED event notices the close even while reading is paused (below),
 * where the EOF would wait unread behind the held input.
 *
 * Reading stops by itself (a bufferevent high watermark) while input piles
 * up behind a blocked request, and executing pauses while more than
 * max_output is unsent, so a client that does not read cannot grow our
 * memory; one that takes none of its replies for output_timeout is closed
 * (the bufferevent's write timeout).  One timer per connection closes a
 * client that leaves a frame unfinished for frame_timeout (slowloris), or,
 * with idle_timeout set, one that has nothing pending for that long.
 *
 * With a journal, the replies of requests that changed something wait in
 * `held` until the journal says their records are safe (conn_release, at
 * the end of the loop's turn); the replies behind them wait too, so that
 * order holds.
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

#include <event2/buffer.h>
#include <event2/bufferevent.h>

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

#define READ_SLACK 65536         /* input held beyond one max_frame */

enum conn_state { CONN_READY, CONN_BLOCKED, CONN_CLOSING };

struct conn {
	struct bufferevent *bev;
	struct event *hup;         /* EV_CLOSED: the peer closed its side */
	enum conn_state state;
	bool eof;                  /* the peer closed its sending side */
	bool authorized;
	bool resume_queued;
	struct holder holder;      /* tasks delivered here without a lease */
	struct pending pending;    /* the request it is blocked on */
	struct client client;
	struct conn *prev, *next;  /* server.conns */
	struct conn *resume_next;  /* server.resume */
	struct event *timer;       /* frame_timeout, idle_timeout */
	msec_t frame_since;        /* when the unfinished frame began; 0 */
	msec_t idle_since;         /* when it was last seen idle; 0 */
	bool partial;              /* a frame is started and not finished */
	struct evbuffer *held;     /* replies waiting for the journal */
	uint64_t held_until;       /* the record they wait for */
	bool holding;              /* on server.holding */
	struct conn *held_next;
	char peer[64];
};

static void conn_free(struct conn *c)
{
	if (c->state == CONN_BLOCKED)
		ops_cancel(&c->pending);
	engine_drop_holder(server.engine, &c->holder);

	if (c->resume_queued)
		for (struct conn **pp = &server.resume; *pp; pp = &(*pp)->resume_next)
			if (*pp == c) {
				*pp = c->resume_next;
				break;
			}
	if (c->holding)
		for (struct conn **pp = &server.holding; *pp; pp = &(*pp)->held_next)
			if (*pp == c) {
				*pp = c->held_next;
				break;
			}
	if (c->held)
		evbuffer_free(c->held);
	if (c->timer)
		event_free(c->timer);
	if (c->prev)
		c->prev->next = c->next;
	else
		server.conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	server.nconns--;

	log_debug("%s: closed", c->peer);
	if (c->hup)
		event_free(c->hup);
	bufferevent_free(c->bev);
	free(c);
	server_maybe_done();
}

static void queue_resume(struct conn *c)
{
	if (c->resume_queued)
		return;
	c->resume_queued = true;
	c->resume_next = server.resume;
	server.resume = c;
	event_active(server.resume_ev, EV_TIMEOUT, 0);
}

/* CLOSING: closes once everything owed is written. */
static void close_when_flushed(struct conn *c)
{
	if (!c->holding &&
	    evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		conn_free(c);
}

/* Sends replies, or holds them while a change they report (or one before
 * them) is not yet safe in the journal. */
static void send_replies(struct conn *c, const char *p, size_t len,
                         bool changed)
{
	const struct journal *j = server.journal;
	if (!len)
		return;
	if (c->holding || (changed && j && journal_safe(j) < journal_appended(j))) {
		if (!c->held)
			c->held = evbuffer_new();
		evbuffer_add(c->held, p, len);
		c->held_until = journal_appended(j);
		if (!c->holding) {
			c->holding = true;
			c->held_next = server.holding;
			server.holding = c;
		}
		return;
	}
	evbuffer_add(bufferevent_get_output(c->bev), p, len);
}

void conn_release(uint64_t safe)
{
	struct conn **pp = &server.holding;
	while (*pp) {
		struct conn *c = *pp;
		if (c->held_until > safe) {
			pp = &c->held_next;
			continue;
		}
		*pp = c->held_next;
		c->holding = false;
		/* on_write closes a CLOSING connection once this is written */
		evbuffer_add_buffer(bufferevent_get_output(c->bev), c->held);
	}
}

static void start_closing(struct conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	c->state = CONN_CLOSING;
	bufferevent_disable(c->bev, EV_READ);
	evbuffer_drain(in, evbuffer_get_length(in));
}

static bool idle(const struct conn *c)
{
	return c->state == CONN_READY && !c->partial && !c->holder.tasks &&
	       !c->holding && !c->eof &&
	       evbuffer_get_length(bufferevent_get_output(c->bev)) == 0;
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
		log_debug("%s: a frame unfinished for frame_timeout (%g s); "
		          "closing", c->peer, server.cfg.frame_timeout);
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
	server_rearm();
}

/* READY: executes the complete frames in the input, in order. */
static void run(struct conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer *out = bufferevent_get_output(c->bev);
	struct buf *b = &server.scratch;
	size_t max = server.cfg.max_frame;
	bool drained = false;   /* no complete frame is left in the input */
	uint64_t before = server.journal ? journal_appended(server.journal) : 0;

	buf_reset(b);
	c->partial = false;
	c->idle_since = 0;
	while (c->state == CONN_READY) {
		size_t avail = evbuffer_get_length(in);
		if (!avail) {
			drained = true;
			break;
		}
		if (b->len + evbuffer_get_length(out) +
		    (c->held ? evbuffer_get_length(c->held) : 0) >=
		    server.cfg.max_output)
			break;   /* on_write runs us again once the output drains */
		size_t want = avail <= max ? avail : max + 1;
		const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)want);
		struct frame f;
		enum frame_status st = frame_next(p, want, max, &f);
		if (st == FRAME_NEED_MORE) {
			drained = true;
			c->partial = true;
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
		evbuffer_drain(in, f.consumed);
		c->frame_since = 0;   /* what follows is a frame of its own */
	}
	send_replies(c, b->p, b->len, server.journal &&
	             journal_appended(server.journal) > before);
	watch(c);
	/* A partial frame at close is dropped; at shutdown every complete
	 * frame was answered shutting_down by ops_execute. */
	if (c->state == CONN_READY && (c->eof || server.shutting_down) && drained)
		start_closing(c);
	if (c->state == CONN_CLOSING)
		close_when_flushed(c);
}

/* pending->finish: the blocked request completed; its reply goes out in
 * order and the frames behind it run from conn_resume. */
static void conn_finish(struct pending *p, const struct buf *reply)
{
	struct conn *c = container_of(p, struct conn, pending);
	if (reply)   /* the change that woke it may not be safe yet */
		send_replies(c, reply->p, reply->len, true);
	c->state = CONN_READY;
	queue_resume(c);
}

void conn_resume(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c;
	(void)fd;
	(void)what;
	(void)arg;
	while ((c = server.resume)) {
		server.resume = c->resume_next;
		c->resume_queued = false;
		if (c->state == CONN_CLOSING)
			close_when_flushed(c);
		else
			run(c);
	}
	server_rearm();
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	(void)bev;
	if (c->state == CONN_READY) {
		run(c);
		server_rearm();
	}
}

static void on_write(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	(void)bev;
	if (c->state == CONN_CLOSING)
		close_when_flushed(c);
	else if (c->state == CONN_READY)
		run(c);   /* executing may have paused for output */
	server_rearm();
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	(void)bev;
	if (what & BEV_EVENT_ERROR) {
		log_debug("%s: %s", c->peer, strerror(EVUTIL_SOCKET_ERROR()));
		conn_free(c);
	} else if (what & BEV_EVENT_TIMEOUT) {
		log_debug("%s: took none of its replies for output_timeout (%g s); "
		          "closing", c->peer, server.cfg.output_timeout);
		conn_free(c);
	} else if (what & BEV_EVENT_EOF) {
		/* The peer closed its side: what it sent is still answered, and
		 * nothing may wait any more. */
		c->eof = true;
		c->client.nonblocking = true;
		if (c->state == CONN_BLOCKED)
			ops_expire(&c->pending);   /* conn_finish queues a resume */
		else if (c->state == CONN_READY)
			run(c);
	}
	server_rearm();
}

/* The peer closed its side, seen before its EOF is read (EV_CLOSED, where
 * the backend has it): nothing may wait any more.  The frames before the
 * EOF are still read and answered; on_event closes after them. */
static void on_hup(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	(void)fd;
	(void)what;
	c->client.nonblocking = true;
	if (c->state == CONN_BLOCKED)
		ops_expire(&c->pending);   /* conn_finish queues a resume */
	server_rearm();
}

/* The settings a connection is held to: input held behind a blocked
 * request, and how long its replies may wait unread. */
static void set_limits(struct conn *c)
{
	double t = server.cfg.output_timeout;
	struct timeval tv = { (time_t)t,
	                      (suseconds_t)((t - (double)(time_t)t) * 1e6) };
	bufferevent_setwatermark(c->bev, EV_READ, 0,
	                         server.cfg.max_frame + READ_SLACK);
	bufferevent_set_timeouts(c->bev, NULL, t > 0 ? &tv : NULL);
}

/* Past max_connections: one error line, then close. */
static void turn_away(evutil_socket_t fd, const char *peer)
{
	struct buf b = { 0 };
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
	int one = 1;

	(void)lev;
	(void)arg;
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
	if (server.nconns >= server.cfg.max_connections) {
		turn_away(fd, peer);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

	struct conn *c = xcalloc(1, sizeof *c);
	c->bev = bufferevent_socket_new(server.base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!c->bev) {
		log_warning("%s: cannot set up the connection", peer);
		close(fd);
		free(c);
		return;
	}
	memcpy(c->peer, peer, sizeof peer);
	c->state = CONN_READY;
	c->client.peer = c->peer;
	c->client.authorized = &c->authorized;
	c->client.holder = &c->holder;
	c->pending.finish = conn_finish;
	bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
	set_limits(c);
	bufferevent_enable(c->bev, EV_READ);
	c->hup = event_new(server.base, fd, EV_CLOSED, on_hup, c);
	if (c->hup)
		event_add(c->hup, NULL);

	c->next = server.conns;
	if (server.conns)
		server.conns->prev = c;
	server.conns = c;
	server.nconns++;
	log_debug("%s: connected", c->peer);
}

void conn_shutdown_all(void)
{
	struct conn *c = server.conns, *next;
	for (; c; c = next) {
		next = c->next;
		/* What arrived is answered (shutting_down); nothing more is read. */
		bufferevent_disable(c->bev, EV_READ);
		if (c->state == CONN_READY)
			run(c);   /* may free c */
	}
}

void conn_reconfigure(bool new_token)
{
	for (struct conn *c = server.conns; c; c = c->next) {
		set_limits(c);
		if (new_token)
			c->authorized = false;
	}
}

void conn_free_all(void)
{
	while (server.conns)
		conn_free(server.conns);
}
