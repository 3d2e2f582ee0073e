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

/* "127.0.0.1:7477" or "[::1]:7477". */
void net_format_addr(const struct sockaddr *sa, socklen_t len, char *out,
                     size_t size);

#endif
