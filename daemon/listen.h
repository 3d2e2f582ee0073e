/*
 * listen.h - the sockets joinqd serves on: for every bind address, one TCP
 * listener and one UDP socket on the same port, and with tls_port one
 * TCP listener more on that port whose clients speak TLS.  It binds them, hands TCP
 * clients to conn.c and datagrams to udp.c, and pauses accepting for a
 * second when the process runs out of descriptors instead of spinning.
 */
#ifndef JQ_LISTEN_H
#define JQ_LISTEN_H

#include <event2/listener.h>
#include <stdbool.h>

struct listener {
	int fd;
	bool udp;
	bool tls;                      /* TCP inside TLS (tls_port) */
	char name[64];                 /* "127.0.0.1:7477", "[::1]:7477" */
	struct evconnlistener *tcp;    /* TCP: accepts into conn.c */
	struct event *ev;              /* UDP: reads into udp.c; TCP: retry */
	size_t gso_max;                /* UDP: replies longer go one by one
	                                  (0: the kernel refused GSO) */
};

/* listen.c's own; joinqd.c reads activated and metrics_fd. */
struct listen_state {
	struct listener *all;           /* TCP and UDP sockets */
	size_t count;
	bool activated;                 /* the sockets came from systemd */
	int metrics_fd;                 /* from systemd, named "metrics"; or -1 */
	bool tls;                       /* a listener is a TLS one */
};

/* Binds every configured address; on failure logs why and returns -1. */
int listen_open(void);

/* Starts accepting and reading on the bound sockets; -1 after logging. */
int listen_start(void);

/* Stops accepting TCP clients and closes their sockets (shutdown). */
void listen_stop_tcp(void);

/* Closes every socket and frees the listeners. */
void listen_close(void);

/* The bound addresses as one line, for the start-up log. */
void listen_describe(char *out, size_t len);

#endif
