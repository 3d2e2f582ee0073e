/*
 * metrics.h - Prometheus metrics over HTTP (metrics_listen, off by
 * default): GET /metrics, everything else 404.
 */
#ifndef JQ_METRICS_H
#define JQ_METRICS_H

/* Starts serving: on activated_fd when systemd passed a socket named
 * "metrics", else on metrics_listen if set.  Returns 0, or -1 after
 * logging. */
int metrics_start(int activated_fd);

void metrics_stop(void);

/* True if spec is ADDR:PORT or [ADDR]:PORT. */
int metrics_valid_addr(const char *spec);

#endif
