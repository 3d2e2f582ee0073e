/*
 * metrics.h - Prometheus metrics over HTTP (metrics_listen, off by
 * default): GET /metrics, everything else 404.
 */
#ifndef JQ_METRICS_H
#define JQ_METRICS_H

struct evconnlistener;
struct evhttp;
struct event;

/* metrics.c's own. */
struct metrics_state {
	struct evhttp *http;            /* the /metrics listener, or NULL */
	struct evconnlistener *lev;     /* its socket */
	struct event *retry;            /* re-enables it after EMFILE */
};

/* Starts serving: on activated_fd when systemd passed a socket named
 * "metrics", else on metrics_listen if set.  Returns 0, or -1 after
 * logging. */
int metrics_start(int activated_fd);

void metrics_stop(void);

/* True if spec is ADDR:PORT or [ADDR]:PORT. */
int metrics_valid_addr(const char *spec);

#endif
