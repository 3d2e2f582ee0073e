/*
 * joinqd.c - the daemon's main: settings and their reload, the journal's
 * timers and role changes, signals (stop, reload), systemd notification
 * and the watchdog.
 * It owns server.main (struct main_state, in server.h); the loop's turn
 * is loop.c's.  Nothing else in the daemon calls into this file, so every
 * other module links without it.
 */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "conn.h"
#include "journal.h"
#include "listen.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "natsconn.h"
#include "server.h"
#include "token.h"
#include "udp.h"
#include "xalloc.h"

#define STOP_GRACE 5        /* seconds for clients to take their last replies */
#define STATUS_PERIOD 5     /* seconds between STATUS= lines for systemd */

/* ---- the journal -------------------------------------------------------- */

static void on_child(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	if (server.journal)
		journal_reap(server.journal);
}

static void on_sync_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	if (journal_sync(server.journal) < 0) {
		log_error("journal: stopping now; a restart recovers what is on "
		          "disk");
		_exit(EXIT_FAILURE);
	}
}

static void send_status(void);

/* READY=1, once: at start, or with journal = nats once the daemon has
 * read the stream (a standby) or taken it over; never while starting, so
 * that an unreachable NATS keeps the unit unready. */
static void notify_ready(void)
{
	if (server.main.ready)
		return;
	server.main.ready = true;
	sd_notify(0, "READY=1");
}

/* journal = nats: the journal says the role changed (journal.h).  Fenced,
 * the clients are dropped here; the journal asks for a fresh engine next. */
static void role_changed(void *ctx, enum journal_role was,
                         enum journal_role now)
{
	(void)ctx;
	if (was == ROLE_ACTIVE && now == ROLE_STARTING) {
		log_info("fenced: another daemon took the stream over; dropping "
		         "every client");
		udp_drop_held();
		conn_drop_all();
	} else if (now == ROLE_ACTIVE) {
		log_info("now active");
	} else if (now == ROLE_STANDBY) {
		const char *active = journal_active_addr(server.journal);
		log_info("now a standby of %s",
		         active ? active : "an active daemon not known yet");
	} else {
		log_info("starting again: reaching NATS, reading the stream");
	}
	if (now != ROLE_STARTING)
		notify_ready();
	send_status();
}

/* journal = nats, fenced: the engine holds changes the stream refused; the
 * journal replays the stream into a new one.  The clients go first, since
 * their waiters and the tasks they hold are the old engine's (role_changed
 * dropped them already; this makes sure of it). */
static struct engine *fresh_engine(void *ctx)
{
	(void)ctx;
	udp_drop_held();
	conn_drop_all();
	engine_cancel_waiters(server.engine, JQ_UNAVAILABLE);
	engine_free(server.engine);
	server.engine = engine_new(&server.main.engine_conf);
	return server.engine;
}

static int open_journal(void)
{
	char err[CONFIG_ERR_MAX];
	struct journal_conf jc = {
		.kind = server.cfg.journal,
		.dir = server.cfg.state_dir,
		.fsync = server.cfg.fsync,
		.compact_size = server.cfg.compact_size,
		.compact_ratio = server.cfg.compact_ratio,
		.nats = &server.cfg.nats,
		.base = server.base,
		.ctx = NULL,
		.role_changed = role_changed,
		.fresh_engine = fresh_engine,
	};

	if (!server.cfg.journal)
		return 0;
	server.journal = journal_open(&jc, server.engine, err, sizeof err);
	if (!server.journal) {
		log_error("journal: %s", err);
		return -1;
	}
	server.main.child_ev = evsignal_new(server.base, SIGCHLD, on_child, NULL);
	evsignal_add(server.main.child_ev, NULL);
	if (server.cfg.fsync == FSYNC_INTERVAL) {
		unsigned ms = server.cfg.fsync_interval;
		struct timeval tv = { ms / 1000, (suseconds_t)(ms % 1000) * 1000 };
		server.main.sync_timer = event_new(server.base, -1, EV_PERSIST,
		                                   on_sync_timer, NULL);
		event_add(server.main.sync_timer, &tv);
	}
	return 0;
}

/* advertise = HOST:0 (the default with -p 0): the port the kernel chose,
 * which a standby gives clients.  Sets *advertise to it (the old string
 * freed) when it ends in ":0".  The journal reads the setting at each
 * append, so it may change once the sockets are bound. */
static void advertise_bound_port(char **advertise)
{
	char *a = *advertise;
	size_t n = a ? strlen(a) : 0;
	if (n < 2 || strcmp(a + n - 2, ":0") != 0)
		return;
	for (size_t i = 0; i < server.listen.count; i++) {
		const struct listener *l = &server.listen.all[i];
		const char *port = strrchr(l->name, ':');
		if (l->udp || !port)
			continue;
		char *next = xmalloc(n + 8);
		snprintf(next, n + 8, "%.*s%s", (int)(n - 2), a, port);
		*advertise = next;
		free(a);
		return;
	}
}

/* ---- systemd ------------------------------------------------------------ */

/* STATUS=: what systemctl status shows, refreshed every few seconds.
 * With journal = nats it begins with the role. */
static void send_status(void)
{
	bool nats = server.cfg.journal == JOURNAL_NATS;
	uint64_t unfinished = 0;
	struct queue_stats s;

	if (!server.main.notify)
		return;
	enum journal_role role = journal_role(server.journal);
	if (nats && role == ROLE_STARTING) {
		sd_notify(0, "STATUS=starting: reaching NATS/reading the stream");
		return;
	}
	if (nats && role == ROLE_STANDBY) {
		struct journal_figures f;
		const char *active = journal_active_addr(server.journal);
		journal_figures(server.journal, &f);
		sd_notifyf(0, "STATUS=standby of %s, lag %llu",
		           active ? active : "an active daemon not known yet",
		           (unsigned long long)f.lag);
		return;
	}
	for (struct queue *q = engine_next_queue(server.engine, NULL); q;
	     q = engine_next_queue(server.engine, q)) {
		engine_queue_stats(server.engine, q, NULL, 0, &s);
		unfinished += s.unfinished;
	}
	size_t queues = engine_queue_count(server.engine);
	unsigned clients = conn_count();
	sd_notifyf(0, "STATUS=%s%zu queue%s, %llu unfinished task%s, %u client%s",
	           nats ? "active, " : "", queues, queues == 1 ? "" : "s",
	           (unsigned long long)unfinished, unfinished == 1 ? "" : "s",
	           clients, clients == 1 ? "" : "s");
}

static void on_status_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	send_status();
}

static void on_watchdog_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	sd_notify(0, "WATCHDOG=1");
}

/* With WatchdogSec= set, systemd restarts a joinqd that stops pinging: a
 * timer on the loop itself pings, so a stuck loop is what stops it. */
static void start_watchdog(void)
{
	uint64_t usec;
	if (sd_watchdog_enabled(0, &usec) <= 0)
		return;
	struct timeval half = { (time_t)(usec / 2000000),
	                        (suseconds_t)(usec / 2 % 1000000) };
	server.main.watchdog_timer = event_new(server.base, -1, EV_PERSIST,
	                                       on_watchdog_timer, NULL);
	event_add(server.main.watchdog_timer, &half);
	sd_notify(0, "WATCHDOG=1");
	log_info("watchdog: pinging systemd every %.3f s",
	         (double)usec / 2e6);
}

/* ---- stopping ----------------------------------------------------------- */

static void on_stop_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	log_warning("%u clients did not take their last replies in %d s; "
	            "closing them", conn_count(), STOP_GRACE);
	event_base_loopbreak(server.base);
}

/* SIGTERM, SIGINT: the orderly stop.  The loop ends once the last client
 * has gone (loop_done), or when stop_timer fires. */
static void begin_shutdown(void)
{
	static const struct timeval grace = { STOP_GRACE, 0 };

	server.shutting_down = true;
	sd_notify(0, "STOPPING=1");
	listen_stop_tcp();
	metrics_stop();
	engine_cancel_waiters(server.engine, JQ_SHUTTING_DOWN);
	conn_shutdown_all();
	evtimer_add(server.main.stop_timer, &grace);
}

/* ---- settings ----------------------------------------------------------- */

/* The token (token.h): sets *token to it (malloc'd; *len its length), or
 * to NULL for no file, and returns 0; or returns -1 with why in err. */
static int read_token(const char *path, char **token, size_t *len, char *err,
                      size_t errlen)
{
	*token = NULL;
	*len = 0;
	if (!path)
		return 0;
	return token_read("auth_token_file", path, token, len, err, errlen);
}

static void forget_token(void)
{
	if (server.token)
		explicit_bzero(server.token, server.token_len);
	free(server.token);
	server.token = NULL;
	server.token_len = 0;
}

static void set_engine_conf(void)
{
	server.main.engine_conf = (struct engine_conf){
		.clock = server_clock,
		.default_maxsize = server.cfg.default_maxsize,
		.default_max_deliveries = server.cfg.max_deliveries,
		.max_queues = server.cfg.max_queues,
		.queues = server.cfg.queues,
		.nqueues = server.cfg.nqueues,
	};
}

static bool same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Settings a reload cannot change, since the sockets are bound already:
 * says so, and keeps in next what is bound, so that server.cfg always
 * tells what is served. */
static void keep_bound(struct config *next)
{
	bool binds = next->port != server.cfg.port ||
	             next->nbinds != server.cfg.nbinds;
	for (size_t i = 0; !binds && i < next->nbinds; i++)
		binds = strcmp(next->binds[i], server.cfg.binds[i]) != 0;
	if (binds && !server.listen.activated)
		log_warning("reload: bind and port take effect at the next start");
	if (!same_str(next->metrics_listen, server.cfg.metrics_listen))
		log_warning("reload: metrics_listen takes effect at the next start");
	if (next->tls.port != server.cfg.tls.port && !server.listen.activated)
		log_warning("reload: tls_port takes effect at the next start");
	if (next->tls.metrics != server.cfg.tls.metrics)
		log_warning("reload: metrics_tls takes effect at the next start");
	next->tls.port = server.cfg.tls.port;
	next->tls.metrics = server.cfg.tls.metrics;
	/* A port 0 was made the bound one at the start: so it is here. */
	advertise_bound_port(&next->nats.advertise);
	if (next->journal != server.cfg.journal || next->fsync != server.cfg.fsync ||
	    next->fsync_interval != server.cfg.fsync_interval ||
	    strcmp(next->state_dir, server.cfg.state_dir) != 0 ||
	    next->compact_size != server.cfg.compact_size ||
	    next->compact_ratio != server.cfg.compact_ratio ||
	    !config_same_nats(&next->nats, &server.cfg.nats))
		log_warning("reload: the journal's settings take effect at the "
		            "next start");
	struct config bound = server.cfg;
	server.cfg.binds = next->binds;
	server.cfg.nbinds = next->nbinds;
	server.cfg.metrics_listen = next->metrics_listen;
	server.cfg.nats = next->nats;     /* the journal may point into it */
	next->binds = bound.binds;
	next->nbinds = bound.nbinds;
	next->port = bound.port;
	next->metrics_listen = bound.metrics_listen;
	next->nats = bound.nats;
}

/*
 * SIGHUP: the file and the flags again.  Queue bounds, max_deliveries,
 * limits, the log level and the token change at once; a file with an error
 * changes nothing.
 */
static void reload(void)
{
	struct config next;
	char err[CONFIG_ERR_MAX];
	size_t token_len = 0;
	char *token;

	if (server.main.ready)   /* systemd knows a reload of a started unit */
		sd_notify(0, "RELOADING=1");
	if (config_load(&next, server.main.argc, server.main.argv, err,
	                sizeof err) < 0) {
		log_error("reload: %s; the running configuration stays", err);
		goto done;
	}
	if (read_token(next.auth_token_file, &token, &token_len, err,
	               sizeof err) < 0) {
		log_error("reload: %s; the running configuration stays", err);
		config_free(&next);
		goto done;
	}
	keep_bound(&next);

	/* A new token ends what the old one opened: a leaked token must stop
	 * working on connections that authenticated with it. */
	bool new_token = token && (token_len != server.token_len ||
	                           memcmp(token, server.token, token_len) != 0);
	config_free(&server.cfg);
	server.cfg = next;
	forget_token();
	server.token = token;
	server.token_len = token_len;
	set_engine_conf();
	engine_reconfigure(server.engine, &server.main.engine_conf);
	conn_reconfigure(new_token);
	tls_reload();   /* new connections get the new certificate */
	if (new_token)
		log_info("reload: a new token; connected clients must authenticate "
		         "again");
	log_info("reloaded %s", server.cfg.file ? server.cfg.file :
	         "the settings (no config file)");
done:
	if (server.main.ready)   /* a daemon still starting is not ready */
		sd_notify(0, "READY=1");
	send_status();
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	(void)arg;
	if (sig == SIGHUP) {
		if (!server.shutting_down)
			reload();
		return;
	}
	if (server.shutting_down) {
		log_warning("%s again: stopping now", strsignal((int)sig));
		event_base_loopbreak(server.base);
		return;
	}
	log_info("%s: shutting down", strsignal((int)sig));
	begin_shutdown();
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

/* ---- life --------------------------------------------------------------- */

static int start(void)
{
	static const int signals[] = { SIGTERM, SIGINT, SIGHUP };
	static const struct timeval status_period = { STATUS_PERIOD, 0 };

	/* epoll's millisecond timeouts are precise enough for leases and
	 * waits; EVENT_BASE_FLAG_PRECISE_TIMER would cost a timerfd_settime
	 * every turn of the loop. */
	if (server.cfg.journal == JOURNAL_NATS)
		natsconn_threads();   /* before the base: nats.c's threads */
	server.base = event_base_new();
	if (!server.base) {
		log_error("cannot create the event loop");
		return -1;
	}

	set_engine_conf();
	server.engine = engine_new(&server.main.engine_conf);
	if (open_journal() < 0)
		return -1;
	loop_init();
	conn_init();
	server.main.stop_timer = evtimer_new(server.base, on_stop_timer, NULL);
	for (size_t i = 0; i < 3; i++) {
		server.main.signals[i] = evsignal_new(server.base, signals[i],
		                                      on_signal, NULL);
		evsignal_add(server.main.signals[i], NULL);
	}

	if (listen_open() < 0 ||
	    tls_open(server.cfg.tls.port >= 0 || server.cfg.tls.metrics ||
	             server.listen.tls) < 0 ||
	    listen_start() < 0 || metrics_start(server.listen.metrics_fd) < 0)
		return -1;
	advertise_bound_port(&server.cfg.nats.advertise);

	if (server.main.notify) {
		server.main.status_timer = event_new(server.base, -1, EV_PERSIST,
		                                     on_status_timer, NULL);
		event_add(server.main.status_timer, &status_period);
	}
	start_watchdog();
	return 0;
}

static void stop(void)
{
	/* The loop is over: a late SIGTERM must not kill the cleanup (freeing
	 * the signal events gives the default action back), so block them. */
	sigset_t late;
	sigemptyset(&late);
	sigaddset(&late, SIGTERM);
	sigaddset(&late, SIGINT);
	sigaddset(&late, SIGHUP);
	sigprocmask(SIG_BLOCK, &late, NULL);

	conn_free_all();
	udp_free_all();
	listen_close();
	metrics_stop();
	tls_close();
	loop_free();
	journal_close(server.journal);
	engine_free(server.engine);
	struct main_state *m = &server.main;
	struct event *events[] = {
		m->signals[0], m->signals[1], m->signals[2], m->stop_timer,
		m->status_timer, m->watchdog_timer, m->child_ev, m->sync_timer,
	};
	for (size_t i = 0; i < sizeof events / sizeof events[0]; i++)
		if (events[i])
			event_free(events[i]);
	if (server.base)
		event_base_free(server.base);
	buf_free(&server.scratch);
	buf_free(&server.wake_buf);
	forget_token();
	log_info("stopped");
	config_free(&server.cfg);
}

/*
 * Big items (a task's block, a connection's input) are malloc'd and freed
 * at the rate they pass.  glibc would give each one fresh pages: blocks
 * past its mmap threshold are mmapped, and freed memory at the heap's top
 * past its trim threshold goes back to the kernel, so the next block is
 * faulted in and zeroed again (a tenth of the daemon's time at 1 MiB
 * items).  Blocks up to 32 MiB come from the heap instead, and up to
 * 64 MiB freed at its top is kept for them.
 */
static void keep_freed_memory(void)
{
	mallopt(M_MMAP_THRESHOLD, 32 << 20);
	mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

int main(int argc, char **argv)
{
	char addrs[512], err[CONFIG_ERR_MAX];

	int rc = config_init(&server.cfg, argc, argv);
	if (rc < 0 && server.cfg.check_journal)
		rc = server.cfg.journal == JOURNAL_NATS ?
		     journal_check_nats(&server.cfg.nats, server.cfg.state_dir) :
		     journal_check(server.cfg.state_dir, server.cfg.repair);
	if (rc >= 0) {
		config_free(&server.cfg);
		return rc;
	}
	server.main.argc = argc;
	server.main.argv = argv;
	server.main.notify = getenv("NOTIFY_SOCKET") != NULL;
	log_init();
	signal(SIGPIPE, SIG_IGN);
	if (read_token(server.cfg.auth_token_file, &server.token,
	               &server.token_len, err, sizeof err) < 0) {
		fprintf(stderr, "joinqd: %s\n", err);
		config_free(&server.cfg);
		return 2;
	}
	raise_nofile();
	keep_freed_memory();
	server.started = time(NULL);

	if (start() < 0) {
		sd_notifyf(0, "STATUS=failed to start; see the log\nERRNO=%d", EINVAL);
		stop();
		return 1;
	}
	listen_describe(addrs, sizeof addrs);
	log_info("joinqd %s listening on %s%s", PACKAGE_VERSION, addrs,
	         server.token ? "; clients must authenticate" : "");
	if (server.cfg.journal != JOURNAL_NATS)   /* else role_changed says */
		notify_ready();
	send_status();

	while (!loop_done())
		loop_turn();

	stop();
	return 0;
}
