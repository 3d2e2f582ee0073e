/*
 * metrics.c - the optional HTTP listener that serves GET /metrics in the
 * Prometheus text format (libevent's evhttp); any other path is 404.  With
 * metrics_tls it speaks HTTPS with the TLS certificate (tls.c).
 *
 * It reads the engine's per-queue figures, the role, the journal's figures
 * and the daemon's counters when a scrape comes, so it costs nothing between scrapes.  Names follow the
 * Prometheus conventions: a joinq_ prefix, _total on counters, base units
 * (seconds, bytes), and the usual process_ metrics of an exporter.
 *
 * It owns server.metrics (struct metrics_state): the HTTP listener.
 */
#include <dirent.h>
#include <errno.h>
#include <netdb.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

#include "conn.h"
#include "journal.h"
#include "log.h"
#include "metrics.h"
#include "server.h"

/* One family of metrics: its help and type lines. */
static void family(struct evbuffer *b, const char *name, const char *type,
                   const char *help)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
	                    type);
}

/* Per-queue figures, one family at a time as the format wants. */
struct queue_metric {
	const char *name, *type, *help;
	size_t offset;                  /* of the figure in struct queue_stats */
};

#define QM(n, t, field, h) { n, t, h, offsetof(struct queue_stats, field) }
static const struct queue_metric queue_metrics[] = {
	QM("joinq_queue_items", "gauge", qsize, "Tasks queued, waiting for a get."),
	QM("joinq_queue_inflight", "gauge", inflight,
	   "Tasks delivered and not yet done or released."),
	QM("joinq_queue_delayed", "gauge", delayed,
	   "Tasks released with a delay, not yet back in the queue."),
	QM("joinq_queue_unfinished", "gauge", unfinished,
	   "Tasks put and not yet done: queued + inflight + delayed."),
	QM("joinq_queue_maxsize", "gauge", maxsize,
	   "Queued tasks at which put blocks; 0 is unbounded."),
	QM("joinq_queue_max_deliveries", "gauge", max_deliveries,
	   "Deliveries after which a task goes to dead letters; 0 is no limit."),
	QM("joinq_queue_puts_total", "counter", puts, "Tasks put."),
	QM("joinq_queue_gets_total", "counter", gets,
	   "Deliveries, redeliveries included."),
	QM("joinq_queue_task_dones_total", "counter", task_dones,
	   "Tasks finished with task_done."),
	QM("joinq_queue_releases_total", "counter", releases,
	   "Tasks given back with release."),
	QM("joinq_queue_redeliveries_total", "counter", redeliveries,
	   "Deliveries of a task delivered before."),
	QM("joinq_queue_dead_letters_total", "counter", dead_lettered,
	   "Tasks sent to the dead-letter queue after max_deliveries."),
	QM("joinq_queue_purged_total", "counter", purged,
	   "Queued tasks finished by purge."),
};

static void queue_families(struct evbuffer *b)
{
	for (size_t m = 0; m < sizeof queue_metrics / sizeof *queue_metrics; m++) {
		const struct queue_metric *qm = &queue_metrics[m];
		family(b, qm->name, qm->type, qm->help);
		for (struct queue *q = engine_next_queue(server.engine, NULL); q;
		     q = engine_next_queue(server.engine, q)) {
			struct queue_stats s;
			uint64_t v;
			engine_queue_stats(server.engine, q, NULL, 0, &s);
			memcpy(&v, (const char *)&s + qm->offset, sizeof v);
			/* Queue names are [A-Za-z0-9_.:-]: nothing to escape. */
			evbuffer_add_printf(b, "%s{queue=\"%s\"} %llu\n", qm->name,
			                    queue_name(q), (unsigned long long)v);
		}
	}
}

static unsigned open_fds(void)
{
	unsigned n = 0;
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return 0;
	for (struct dirent *e; (e = readdir(d));)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;   /* less the directory's own descriptor */
}

/* statm's second figure: the resident pages. */
static unsigned long long rss_bytes(void)
{
	char line[128];
	FILE *f = fopen("/proc/self/statm", "r");
	if (!f)
		return 0;
	const char *got = fgets(line, sizeof line, f);
	fclose(f);
	const char *p = got ? strchr(line, ' ') : NULL;
	if (!p)
		return 0;
	char *end;
	errno = 0;
	unsigned long long resident = strtoull(p, &end, 10);
	if (errno || end == p)
		return 0;
	return resident * (unsigned long long)sysconf(_SC_PAGESIZE);
}

/* The role as a label, one series a role, 1 for the one it has (the
 * usual way to export a state); the journal's figures when there is one. */
static void role_families(struct evbuffer *b)
{
	static const enum journal_role roles[] = {
		ROLE_ACTIVE, ROLE_STANDBY, ROLE_STARTING,
	};
	enum journal_role role = journal_role(server.journal);

	family(b, "joinq_role", "gauge",
	       "1 for the role this daemon has now: active, standby or starting.");
	for (size_t i = 0; i < sizeof roles / sizeof *roles; i++)
		evbuffer_add_printf(b, "joinq_role{role=\"%s\"} %d\n",
		                    journal_role_name(roles[i]), roles[i] == role);
	if (!server.journal)
		return;
	struct journal_figures f;
	journal_figures(server.journal, &f);
	family(b, "joinq_journal_position", "gauge",
	       "The last journal record this daemon appended or applied.");
	evbuffer_add_printf(b, "joinq_journal_position %llu\n",
	                    (unsigned long long)f.position);
	family(b, "joinq_journal_lag", "gauge",
	       "A standby: records of the stream not yet applied; the active "
	       "daemon: appends not yet acknowledged.");
	evbuffer_add_printf(b, "joinq_journal_lag %llu\n",
	                    (unsigned long long)f.lag);
	family(b, "joinq_takeovers_total", "counter",
	       "Times this daemon took over as the active one.");
	evbuffer_add_printf(b, "joinq_takeovers_total %llu\n",
	                    (unsigned long long)f.takeovers);
}

static void daemon_families(struct evbuffer *b)
{
	struct rusage ru;

	family(b, "joinq_protocol_errors_total", "counter",
	       "Error replies, by error code.");
	for (int code = 1; code < JQ_NERR; code++)
		evbuffer_add_printf(b, "joinq_protocol_errors_total{code=\"%s\"} "
		                    "%llu\n", errcode_name(code),
		                    (unsigned long long)server.errors[code]);
	family(b, "joinq_connections", "gauge", "Open TCP connections.");
	evbuffer_add_printf(b, "joinq_connections %u\n", conn_count());
	family(b, "joinq_udp_denied_total", "counter",
	       "Datagrams dropped: their sender is outside udp_allow.");
	evbuffer_add_printf(b, "joinq_udp_denied_total %llu\n",
	                    (unsigned long long)server.udp_denied);
	family(b, "joinq_queues", "gauge",
	       "Queues that exist (deleted ones do not): what max_queues bounds.");
	evbuffer_add_printf(b, "joinq_queues %zu\n",
	                    engine_queue_count(server.engine));
	family(b, "joinq_uptime_seconds", "gauge", "Seconds since joinqd started.");
	evbuffer_add_printf(b, "joinq_uptime_seconds %lld\n",
	                    (long long)(time(NULL) - server.started));
	family(b, "joinq_build_info", "gauge", "The running version, as a label.");
	evbuffer_add_printf(b, "joinq_build_info{version=\"%s\",protocol=\"1\"} 1\n",
	                    PACKAGE_VERSION);

	getrusage(RUSAGE_SELF, &ru);
	double cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	             (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
	family(b, "process_cpu_seconds_total", "counter",
	       "User and system CPU time spent in seconds.");
	evbuffer_add_printf(b, "process_cpu_seconds_total %.3f\n", cpu);
	family(b, "process_resident_memory_bytes", "gauge",
	       "Resident memory size in bytes.");
	evbuffer_add_printf(b, "process_resident_memory_bytes %llu\n", rss_bytes());
	family(b, "process_open_fds", "gauge", "Open file descriptors.");
	evbuffer_add_printf(b, "process_open_fds %u\n", open_fds());
	family(b, "process_start_time_seconds", "gauge",
	       "Start time of the process since the Unix epoch in seconds.");
	evbuffer_add_printf(b, "process_start_time_seconds %lld\n",
	                    (long long)server.started);
}

static void on_metrics(struct evhttp_request *req, void *arg)
{
	(void)arg;
	enum evhttp_cmd_type method = evhttp_request_get_command(req);
	if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
		                  "GET, HEAD");
		evhttp_send_error(req, 405, "Method Not Allowed");
		return;
	}
	struct evbuffer *b = evbuffer_new();
	queue_families(b);
	role_families(b);
	daemon_families(b);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	                  "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

static void on_other(struct evhttp_request *req, void *arg)
{
	(void)arg;
	evhttp_send_error(req, 404, "Not Found: joinqd serves /metrics only");
}

/* "127.0.0.1:9477" or "[::1]:9477" into host and port. */
static int split_addr(const char *spec, char *host, size_t len, unsigned *port)
{
	const char *colon = strrchr(spec, ':');
	const char *h = spec, *h_end = colon;
	char *end;

	if (!colon)
		return -1;
	if (*spec == '[') {
		h = spec + 1;
		h_end = colon - 1;
		if (h_end < h || *h_end != ']')
			return -1;
	}
	unsigned long p = strtoul(colon + 1, &end, 10);
	if (*end || end == colon + 1 || p > 65535 ||
	    (size_t)(h_end - h) + 1 > len)
		return -1;
	memcpy(host, h, (size_t)(h_end - h));
	host[h_end - h] = '\0';
	*port = (unsigned)p;
	return 0;
}

int metrics_valid_addr(const char *spec)
{
	char host[256];
	unsigned port;
	return split_addr(spec, host, sizeof host, &port) == 0 && *host;
}

static void retry_accept(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	if (!server.shutting_down)
		evconnlistener_enable(server.metrics.lev);
}

/* As for the queue listeners (listen.c): out of descriptors, the listener
 * pauses for a second rather than wake the loop again at once.  Without
 * this callback libevent would log every failed accept. */
static void accept_error(struct evconnlistener *lev, void *arg)
{
	static const struct timeval pause = { 1, 0 };
	int err = EVUTIL_SOCKET_ERROR();

	(void)arg;
	if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
		log_warning("metrics: cannot accept: %s; pausing for a second",
		            strerror(err));
		evconnlistener_disable(lev);
		evtimer_add(server.metrics.retry, &pause);
	} else if (err != EINTR && err != ECONNABORTED && err != EAGAIN) {
		log_warning("metrics: accept: %s", strerror(err));
	}
}

/* metrics_tls: each connection a bufferevent over an SSL from the current
 * SSL_CTX, so that a certificate rotated by SIGHUP serves here too. */
static struct bufferevent *tls_bev(struct event_base *base, void *arg)
{
	(void)arg;
	SSL *ssl = SSL_new(server.tls.ctx);
	if (!ssl)
		return NULL;
	struct bufferevent *bev = bufferevent_openssl_socket_new(base, -1, ssl,
		BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (!bev) {
		SSL_free(ssl);
		return NULL;
	}
	/* A scraper that closes without close_notify is no error. */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

static void on_bound(struct evhttp_bound_socket *bound)
{
	server.metrics.lev = evhttp_bound_socket_get_listener(bound);
	server.metrics.retry = evtimer_new(server.base, retry_accept, NULL);
	evconnlistener_set_error_cb(server.metrics.lev, accept_error);
}

int metrics_start(int activated_fd)
{
	const char *spec = server.cfg.metrics_listen;
	char host[256];
	unsigned port = 0;

	if (activated_fd < 0 && !spec)
		return 0;
	server.metrics.http = evhttp_new(server.base);
	if (!server.metrics.http) {
		log_error("metrics: cannot set up the HTTP listener");
		return -1;
	}
	evhttp_set_allowed_methods(server.metrics.http, EVHTTP_REQ_GET |
	                           EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
	                           EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
	evhttp_set_cb(server.metrics.http, "/metrics", on_metrics, NULL);
	evhttp_set_gencb(server.metrics.http, on_other, NULL);
	evhttp_set_timeout(server.metrics.http, 10);
	if (server.cfg.tls.metrics)
		evhttp_set_bevcb(server.metrics.http, tls_bev, NULL);

	if (activated_fd >= 0) {
		struct evhttp_bound_socket *bound =
			evhttp_accept_socket_with_handle(server.metrics.http,
			                                 activated_fd);
		if (!bound) {
			log_error("metrics: cannot serve the socket systemd passed");
			return -1;
		}
		on_bound(bound);
		log_info("metrics: serving /metrics%s on the socket from systemd",
		         server.cfg.tls.metrics ? " (TLS)" : "");
		return 0;
	}
	struct evhttp_bound_socket *bound = NULL;
	if (split_addr(spec, host, sizeof host, &port) == 0)
		bound = evhttp_bind_socket_with_handle(server.metrics.http, host,
		                                       (ev_uint16_t)port);
	if (!bound) {
		log_error("metrics: cannot listen on %s", spec);
		return -1;
	}
	on_bound(bound);
	/* The address as bound: with port 0 the kernel picked one. */
	struct sockaddr_storage ss = { 0 };
	socklen_t sslen = sizeof ss;
	char h[NI_MAXHOST], p[NI_MAXSERV];
	if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss,
	                &sslen) == 0 &&
	    getnameinfo((struct sockaddr *)&ss, sslen, h, sizeof h, p, sizeof p,
	                NI_NUMERICHOST | NI_NUMERICSERV) == 0)
		log_info(ss.ss_family == AF_INET6 ?
		         "metrics: serving %s://[%s]:%s/metrics" :
		         "metrics: serving %s://%s:%s/metrics",
		         server.cfg.tls.metrics ? "https" : "http", h, p);
	return 0;
}

void metrics_stop(void)
{
	if (server.metrics.retry)
		event_free(server.metrics.retry);
	if (server.metrics.http)
		evhttp_free(server.metrics.http);
	server.metrics.http = NULL;
	server.metrics.lev = NULL;
	server.metrics.retry = NULL;
}
