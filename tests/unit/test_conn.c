/*
 * test_conn.c - the transports (daemon/conn.c, daemon/udp.c) driven
 * through the loop's turn (daemon/loop.c), without daemon/joinqd.c.
 *
 * daemon/libjoinqd.la holds every module of the daemon but main(), and
 * this program links it without joinqd.c: a transport that calls back up
 * into the file that holds main (a re-arm, a shutdown callback, a clock)
 * fails to link here.  What the transports used to ask of main is the
 * loop's now, and the tests check it: a get with a timeout is answered
 * only if the loop re-arms the engine's timer after the turn, and the
 * loop is done once the last client has gone during a shutdown.
 *
 * Each test serves on 127.0.0.1, port 0, speaks over loopback sockets,
 * and turns the loop by hand.  A persistent timer ends every turn within
 * TURN_MS, so that every wait is bounded by MAX_TURNS turns.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "loop.h"
#include "listen.h"
#include "server.h"
#include "udp.h"

#define TURN_MS 10          /* the longest a turn waits */
#define MAX_TURNS 1000      /* 10 s at most for anything to happen */

static struct engine_conf engine_conf;
static struct event *turn_bound;

static void nothing(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* What joinqd.c's start() does, without signals, systemd or a journal. */
static int setup(void **state)
{
	char *argv[] = { "test_conn", "--bind", "127.0.0.1", "--port", "0",
	                 "--log-level", "error", NULL };
	char err[CONFIG_ERR_MAX];
	static const struct timeval bound = { 0, (suseconds_t)TURN_MS * 1000 };

	(void)state;
	memset(&server, 0, sizeof server);
	if (config_load(&server.cfg, 7, argv, err, sizeof err) < 0) {
		fprintf(stderr, "%s\n", err);
		return -1;
	}
	server.base = event_base_new();
	engine_conf = (struct engine_conf){
		.clock = server_clock,
		.default_maxsize = server.cfg.default_maxsize,
		.default_max_deliveries = server.cfg.max_deliveries,
		.max_queues = server.cfg.max_queues,
	};
	server.engine = engine_new(&engine_conf);
	server.started = time(NULL);
	loop_init();
	conn_init();
	if (listen_open() < 0 || listen_start() < 0)
		return -1;
	turn_bound = event_new(server.base, -1, EV_PERSIST, nothing, NULL);
	event_add(turn_bound, &bound);
	return 0;
}

/* What joinqd.c's stop() does. */
static int teardown(void **state)
{
	(void)state;
	conn_free_all();
	udp_free_all();
	listen_close();
	loop_free();
	engine_free(server.engine);
	event_free(turn_bound);
	event_base_free(server.base);
	buf_free(&server.scratch);
	buf_free(&server.wake_buf);
	config_free(&server.cfg);
	memset(&server, 0, sizeof server);
	return 0;
}

/* A loopback socket of the given type, connected to the listener of that
 * type. */
static int client(bool udp)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof sin;
	int fd = -1;

	for (size_t i = 0; i < server.listen.count; i++) {
		const struct listener *l = &server.listen.all[i];
		if (l->udp != udp)
			continue;
		assert_int_equal(getsockname(l->fd, (struct sockaddr *)&sin, &len),
		                 0);
		fd = socket(AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
		assert_true(fd >= 0);
		/* The listen backlog completes a loopback connect at once. */
		assert_int_equal(connect(fd, (struct sockaddr *)&sin, len), 0);
		return fd;
	}
	fail_msg("no %s listener", udp ? "UDP" : "TCP");
	return -1;
}

static void send_text(int fd, const char *text)
{
	assert_int_equal(send(fd, text, strlen(text), 0), (ssize_t)strlen(text));
}

/* Turns the loop until a whole reply (up to its LF, or one datagram) has
 * come on fd, and returns it; or "" at EOF. */
static const char *reply(int fd)
{
	static char line[4096];
	size_t n = 0;
	int type = 0;
	socklen_t tlen = sizeof type;

	assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen), 0);
	for (int turn = 0; turn < MAX_TURNS; turn++) {
		loop_turn();
		ssize_t got = recv(fd, line + n, sizeof line - 1 - n, MSG_DONTWAIT);
		if (got == 0)
			break;
		if (got < 0) {
			assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
			continue;
		}
		n += (size_t)got;
		line[n] = '\0';
		if (type == SOCK_DGRAM || memchr(line, '\n', n) ||
		    n == sizeof line - 1)
			return line;
	}
	line[n] = '\0';
	return line;
}

/* Sends one request (a line on TCP, a datagram on UDP) on a new client and
 * checks that its reply holds want. */
static void check_reply(bool udp, const char *request, const char *want)
{
	char frame[256];
	int fd = client(udp);
	snprintf(frame, sizeof frame, "%s%s", request, udp ? "" : "\n");
	send_text(fd, frame);
	const char *r = reply(fd);
	if (!strstr(r, want))
		fail_msg("%s: the reply '%s' has no '%s'", request, r, want);
	close(fd);
}

static void tcp_ping(void **state)
{
	(void)state;
	check_reply(false, "{\"op\":\"ping\",\"id\":7}", "{\"ok\":true,\"id\":7");
	assert_int_equal(conn_count(), 1);   /* closed: not seen yet */
}

static void udp_ping(void **state)
{
	(void)state;
	check_reply(true, "{\"op\":\"ping\",\"id\":8}", "{\"ok\":true,\"id\":8");
}

/* Nothing but the tick that loop.c re-arms after the turn can end the
 * wait: no transport re-arms it any more. */
static void tcp_get_times_out(void **state)
{
	(void)state;
	check_reply(false, "{\"op\":\"get\",\"queue\":\"q\",\"timeout\":0.05}",
	            "\"error\":\"empty\"");
}

static void udp_get_times_out(void **state)
{
	(void)state;
	check_reply(true, "{\"op\":\"get\",\"queue\":\"q\",\"timeout\":0.05}",
	            "\"error\":\"empty\"");
}

static uint64_t waiting_gets(void)
{
	struct queue *q;
	struct queue_stats s;
	engine_queue(server.engine, "q", 1, false, &q);
	engine_queue_stats(server.engine, q, "q", 1, &s);
	return s.waiting_gets;
}

/* The stop as joinqd.c begins it: a blocked client is answered
 * shutting_down, its connection closes once the reply is written, and the
 * loop, not a callback, sees that the last client has gone. */
static void shutdown_ends_with_the_last_client(void **state)
{
	(void)state;
	int fd = client(false);
	send_text(fd, "{\"op\":\"get\",\"queue\":\"q\",\"id\":1}\n");
	for (int turn = 0; turn < MAX_TURNS && waiting_gets() == 0; turn++)
		loop_turn();
	assert_int_equal(waiting_gets(), 1);
	assert_false(loop_done());

	server.shutting_down = true;
	engine_cancel_waiters(server.engine, JQ_SHUTTING_DOWN);
	conn_shutdown_all();
	assert_non_null(strstr(reply(fd), "\"error\":\"shutting_down\""));
	assert_string_equal(reply(fd), "");   /* then the daemon closes */
	assert_int_equal(conn_count(), 0);
	assert_true(loop_done());
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(tcp_ping, setup, teardown),
		cmocka_unit_test_setup_teardown(udp_ping, setup, teardown),
		cmocka_unit_test_setup_teardown(tcp_get_times_out, setup, teardown),
		cmocka_unit_test_setup_teardown(udp_get_times_out, setup, teardown),
		cmocka_unit_test_setup_teardown(shutdown_ends_with_the_last_client,
		                                setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
