/*
 * joinqd.c - the daemon's main: settings, the event loop, the engine's
 * timer, signals and the orderly stop.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "conn.h"
#include "listen.h"
#include "log.h"
#include "server.h"
#include "udp.h"
#include "xalloc.h"

#define STOP_GRACE 5   /* seconds for clients to take their last replies */

struct server server;

msec_t server_clock(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (msec_t)ts.tv_sec * 1000 + (msec_t)ts.tv_nsec / 1000000;
}

void server_rearm(void)
{
	msec_t next = engine_next_deadline(server.engine);
	if (next == server.tick_at)
		return;
	server.tick_at = next;
	if (next == NEVER) {
		evtimer_del(server.tick);
		return;
	}
	msec_t now = server_clock();
	msec_t wait = next > now ? next - now : 0;
	struct timeval tv = { (time_t)(wait / 1000),
	                      (suseconds_t)(wait % 1000) * 1000 };
	evtimer_add(server.tick, &tv);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	server.tick_at = NEVER;   /* spent: server_rearm must set it again */
	engine_advance(server.engine);
	server_rearm();
}

void server_maybe_done(void)
{
	if (server.shutting_down && server.nconns == 0)
		event_base_loopexit(server.base, NULL);
}

static void on_stop_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	log_warning("%u clients did not take their last replies in %d s; "
	            "closing them", server.nconns, STOP_GRACE);
	event_base_loopbreak(server.base);
}

void server_shutdown(void)
{
	static const struct timeval grace = { STOP_GRACE, 0 };

	server.shutting_down = true;
	sd_notify(0, "STOPPING=1");
	listen_stop_tcp();
	engine_cancel_waiters(server.engine, JQ_SHUTTING_DOWN);
	conn_shutdown_all();
	evtimer_add(server.stop_timer, &grace);
	server_maybe_done();
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	(void)arg;
	if (server.shutting_down) {
		log_warning("%s again: stopping now", strsignal((int)sig));
		event_base_loopbreak(server.base);
		return;
	}
	log_info("%s: shutting down", strsignal((int)sig));
	server_shutdown();
}

/* The token is the file's first line, without surrounding blanks. */
static int load_token(void)
{
	const char *path = server.cfg.auth_token_file;
	char line[4096];

	if (!path)
		return 0;
	FILE *f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "joinqd: cannot read auth_token_file %s: %s\n", path,
		        strerror(errno));
		return -1;
	}
	char *s = fgets(line, sizeof line, f);
	fclose(f);
	size_t n = s ? strlen(s) : 0;
	while (n && strchr(" \t\r\n", s[n - 1]))
		n--;
	while (n && strchr(" \t", *s)) {
		s++;
		n--;
	}
	if (!n) {
		fprintf(stderr, "joinqd: auth_token_file %s holds no token\n", path);
		return -1;
	}
	server.token = xstrndup(s, n);
	server.token_len = n;
	explicit_bzero(line, sizeof line);
	return 0;
}

/* Every client is a descriptor: raise the soft limit toward what
 * max_connections needs, as far as the hard limit lets us. */
static void raise_nofile(void)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)server.cfg.max_connections + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want)
		return;
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ?
	              want : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < want)
		log_warning("the open-file limit (%llu) holds fewer clients than "
		            "max_connections (%u)", (unsigned long long)rl.rlim_cur,
		            server.cfg.max_connections);
}

static int start(void)
{
	struct event_config *ec = event_config_new();
	event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
	server.base = event_base_new_with_config(ec);
	event_config_free(ec);
	if (!server.base) {
		log_error("cannot create the event loop");
		return -1;
	}

	server.engine_conf = (struct engine_conf){
		.clock = server_clock,
		.default_maxsize = server.cfg.default_maxsize,
		.default_max_deliveries = server.cfg.max_deliveries,
		.max_queues = server.cfg.max_queues,
		.queues = server.cfg.queues,
		.nqueues = server.cfg.nqueues,
	};
	server.engine = engine_new(&server.engine_conf);
	server.tick = evtimer_new(server.base, on_tick, NULL);
	server.tick_at = NEVER;
	server.resume_ev = event_new(server.base, -1, 0, conn_resume, NULL);
	server.stop_timer = evtimer_new(server.base, on_stop_timer, NULL);
	server.signals[0] = evsignal_new(server.base, SIGTERM, on_signal, NULL);
	server.signals[1] = evsignal_new(server.base, SIGINT, on_signal, NULL);
	for (size_t i = 0; i < 2; i++)
		evsignal_add(server.signals[i], NULL);

	if (listen_open() < 0 || listen_start() < 0)
		return -1;
	return 0;
}

static void stop(void)
{
	conn_free_all();
	udp_free_all();
	listen_close();
	engine_free(server.engine);
	for (size_t i = 0; i < 2; i++)
		if (server.signals[i])
			event_free(server.signals[i]);
	if (server.tick)
		event_free(server.tick);
	if (server.resume_ev)
		event_free(server.resume_ev);
	if (server.stop_timer)
		event_free(server.stop_timer);
	if (server.base)
		event_base_free(server.base);
	buf_free(&server.scratch);
	buf_free(&server.wake_buf);
	if (server.token)
		explicit_bzero(server.token, server.token_len);
	free(server.token);
	log_info("stopped");
	config_free(&server.cfg);
}

int main(int argc, char **argv)
{
	char addrs[512];

	int rc = config_init(&server.cfg, argc, argv);
	if (rc >= 0) {
		config_free(&server.cfg);
		return rc;
	}
	log_init();
	signal(SIGPIPE, SIG_IGN);
	if (load_token() < 0) {
		config_free(&server.cfg);
		return 2;
	}
	raise_nofile();
	server.started = time(NULL);

	if (start() < 0) {
		stop();
		return 1;
	}
	listen_describe(addrs, sizeof addrs);
	log_info("joinqd %s listening on %s (TCP and UDP)%s", PACKAGE_VERSION,
	         addrs, server.token ? "; clients must authenticate" : "");
	sd_notify(0, "READY=1");

	event_base_dispatch(server.base);

	stop();
	return 0;
}
