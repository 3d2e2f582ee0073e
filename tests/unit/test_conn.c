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
 *
 * The role is the test's: journal_role() and journal_active_addr() are
 * wrapped at link time (-Wl,--wrap in Makefile.am), so that the daemon
 * plays a standby, as with journal = nats, without a NATS server.
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
#include "journal.h"
#include "loop.h"
#include "listen.h"
#include "server.h"
#include "udp.h"

#define TURN_MS 10          /* the longest a turn waits */
#define MAX_TURNS 1000      /* 10 s at most for anything to happen */
#define QUIET_TURNS 20      /* turns in which nothing must come */

static struct engine_conf engine_conf;
static struct event *turn_bound;

/* The role the daemon sees, and the active daemon's address. */
static enum journal_role role = ROLE_ACTIVE;
static const char *active_addr;

/* The names the linker's --wrap gives: reserved, on purpose. */
/* NOLINTBEGIN(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp) */
enum journal_role __wrap_journal_role(const struct journal *j);
const char *__wrap_journal_active_addr(const struct journal *j);

enum journal_role __wrap_journal_role(const struct journal *j)
{
	(void)j;
	return role;
}

const char *__wrap_journal_active_addr(const struct journal *j)
{
	(void)j;
	return active_addr;
}
/* NOLINTEND(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp) */

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
	role = ROLE_ACTIVE;
	active_addr = NULL;
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

/* The figures of queue "q". */
static struct queue_stats figures(void)
{
	struct queue *q;
	struct queue_stats s;
	engine_queue(server.engine, "q", 1, false, &q);
	engine_queue_stats(server.engine, q, "q", 1, &s);
	return s;
}

static uint64_t waiting_gets(void)
{
	return figures().waiting_gets;
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

/* Turns the loop QUIET_TURNS times: nothing may come on fd meanwhile. */
static void assert_quiet(int fd)
{
	char byte;
	for (int turn = 0; turn < QUIET_TURNS; turn++) {
		loop_turn();
		assert_int_equal(recv(fd, &byte, 1, MSG_DONTWAIT), -1);
		assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
	}
}

/* Turns the loop until the getters waiting on queue q number n. */
static void wait_for_getters(uint64_t n)
{
	for (int turn = 0; turn < MAX_TURNS && waiting_gets() != n; turn++)
		loop_turn();
	assert_int_equal(waiting_gets(), n);
}

/* A standby answers ping, with its role, over both transports. */
static void standby_answers_ping(void **state)
{
	(void)state;
	for (int udp = 0; udp < 2; udp++) {
		role = ROLE_STANDBY;
		check_reply(udp, "{\"op\":\"ping\",\"id\":1}",
		            "\"protocol\":1,\"role\":\"standby\"}");
		role = ROLE_STARTING;   /* the wire knows no "starting" */
		check_reply(udp, "{\"op\":\"ping\"}", "\"role\":\"standby\"}");
		role = ROLE_ACTIVE;
		check_reply(udp, "{\"op\":\"ping\"}", "\"role\":\"active\"}");
	}
}

/* Anything else: unavailable, naming the active daemon when it is known;
 * counted as every error is. */
static void standby_refuses_the_rest(void **state)
{
	static const char *const requests[] = {
		"{\"op\":\"put\",\"item\":1,\"id\":3}",
		"{\"op\":\"get\",\"queue\":\"q\",\"id\":3}",
		"{\"op\":\"stats\",\"id\":3}",
		"{\"op\":\"auth\",\"id\":3}",
		"{\"op\":\"qsize\",\"id\":3}",
		"{\"op\":\"declare\",\"queue\":\"d\",\"maxsize\":2,\"id\":3}",
		"{\"op\":\"purge\",\"id\":3}",
		"{\"op\":\"delete\",\"id\":3}",
	};
	(void)state;
	role = ROLE_STANDBY;
	active_addr = "192.0.2.7:7477";
	for (int udp = 0; udp < 2; udp++)
		for (size_t i = 0; i < sizeof requests / sizeof *requests; i++)
			check_reply(udp, requests[i], "{\"ok\":false,\"id\":3,"
			            "\"error\":\"unavailable\",\"message\":\"this daemon "
			            "is a standby; the active daemon is 192.0.2.7:7477\","
			            "\"active\":\"192.0.2.7:7477\"}\n");
	role = ROLE_STARTING;
	active_addr = NULL;
	check_reply(false, "{\"op\":\"put\",\"item\":1}", "{\"ok\":false,"
	            "\"error\":\"unavailable\",\"message\":\"this daemon is a "
	            "standby; the active daemon is not known yet\"}\n");
	assert_int_equal(server.errors[JQ_UNAVAILABLE], 17);
	/* the order of checks holds: a bad request is still told so */
	check_reply(true, "{\"op\":\"put\"}", "\"error\":\"bad_request\"");
	assert_int_equal(engine_queue_count(server.engine), 0);
}

/* A standby's engine keeps no time: the wait of a get parked while active
 * does not run out while the daemon is a standby, and does once it is
 * active again. */
static void standby_engine_timer_stopped(void **state)
{
	(void)state;
	int fd = client(false);
	send_text(fd, "{\"op\":\"get\",\"queue\":\"q\",\"timeout\":0.02}\n");
	wait_for_getters(1);
	role = ROLE_STANDBY;
	assert_quiet(fd);
	assert_int_equal(server.loop.tick_at, NEVER);
	assert_int_equal(waiting_gets(), 1);
	role = ROLE_ACTIVE;
	assert_non_null(strstr(reply(fd), "\"error\":\"empty\""));
	close(fd);
}

/* Fenced: every TCP client is closed without a reply, the requests they
 * wait on and UDP's are forgotten, and the tasks they hold are queued
 * again. */
static void fenced_drops_every_client(void **state)
{
	(void)state;
	int holder = client(false), waiter = client(false), udp = client(true);
	send_text(holder, "{\"op\":\"put\",\"queue\":\"q\",\"item\":1}\n");
	assert_non_null(strstr(reply(holder), "\"task\":1"));
	send_text(holder, "{\"op\":\"get\",\"queue\":\"q\"}\n");
	assert_non_null(strstr(reply(holder), "\"task\":1"));
	send_text(waiter, "{\"op\":\"get\",\"queue\":\"q\"}\n");
	send_text(udp, "{\"op\":\"get\",\"queue\":\"q\"}");
	wait_for_getters(2);
	assert_int_equal(conn_count(), 2);
	assert_int_equal(figures().qsize, 0);

	udp_drop_held();
	conn_drop_all();
	assert_int_equal(conn_count(), 0);
	assert_int_equal(waiting_gets(), 0);
	assert_int_equal(figures().qsize, 1);   /* the holder's task is back */
	assert_null(server.udp.waiting);
	assert_null(server.udp.held);
	assert_string_equal(reply(holder), "");   /* closed, nothing sent */
	assert_string_equal(reply(waiter), "");
	assert_quiet(udp);
	close(holder);
	close(waiter);
	close(udp);
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
		cmocka_unit_test_setup_teardown(standby_answers_ping, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(standby_refuses_the_rest, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(standby_engine_timer_stopped, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(fenced_drops_every_client, setup,
		                                teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
