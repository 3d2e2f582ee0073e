/*
 * netconnect.h - opening a client socket to one address, the same way
 * for libjoinq and joinq bench: non-blocking, close-on-exec, a TCP
 * connect bounded in time, TCP_NODELAY.
 */
#ifndef JQ_NETCONNECT_H
#define JQ_NETCONNECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/*
 * A non-blocking socket connected to sa: TCP within timeout_ms (< 0: no
 * bound), with Nagle off, since requests are written whole and Nagle
 * would only hold them back; UDP (udp true) connect() only fixes the
 * peer, so that the kernel drops datagrams from anyone else and an ICMP
 * "port unreachable" comes back as ECONNREFUSED.  Returns the descriptor,
 * or -1 with errno set (ETIMEDOUT when the bound ran out).
 */
int net_connect(const struct sockaddr *sa, socklen_t len, bool udp,
                int64_t timeout_ms);

/* CLOCK_MONOTONIC in milliseconds: the clock of deadline_ms below. */
int64_t net_now_ms(void);

/* Waits until fd is ready for events or deadline_ms passes (< 0: no
 * deadline), going on after EINTR: the revents (> 0) when ready, 0 timed
 * out, -1 with errno set.  libjoinq's connect, its TLS handshake and its
 * requests wait with it. */
int net_wait(int fd, short events, int64_t deadline_ms);

/* "127.0.0.1:7477" or "[::1]:7477". */
void net_format_addr(const struct sockaddr *sa, socklen_t len, char *out,
                     size_t size);

#endif
