/*
 * netconnect.c - a client socket to one address (see netconnect.h),
 * shared by libjoinq and joinq bench.
 */
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "netconnect.h"

int64_t net_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int net_wait(int fd, short events, int64_t deadline_ms)
{
	struct pollfd p = { .fd = fd, .events = events };
	for (;;) {
		int64_t left = deadline_ms < 0 ? -1 : deadline_ms - net_now_ms();
		if (deadline_ms >= 0 && left < 0)
			left = 0;
		int r = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (r > 0)
			return p.revents;
		if (r == 0 || errno != EINTR)
			return r;
	}
}

/* Waits until the connect in progress on fd ends; 0, or -1 with errno. */
static int connect_wait(int fd, int64_t timeout_ms)
{
	int r = net_wait(fd, POLLOUT, timeout_ms < 0 ? -1 :
	                 net_now_ms() + timeout_ms);
	if (r < 0)
		return -1;
	if (r == 0) {
		errno = ETIMEDOUT;
		return -1;
	}
	int soerr = 0;
	socklen_t sl = sizeof soerr;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
		return -1;
	if (soerr) {
		errno = soerr;
		return -1;
	}
	return 0;
}

int net_connect(const struct sockaddr *sa, socklen_t len, bool udp,
                int64_t timeout_ms)
{
	int fd = socket(sa->sa_family, (udp ? SOCK_DGRAM : SOCK_STREAM) |
	                SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, sa, len) < 0 &&
	    (udp || (errno != EINPROGRESS && errno != EINTR) ||
	     connect_wait(fd, timeout_ms) < 0)) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	if (!udp) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	}
	return fd;
}

void net_format_addr(const struct sockaddr *sa, socklen_t len, char *out,
                     size_t size)
{
	char host[NI_MAXHOST], port[NI_MAXSERV];
	if (getnameinfo(sa, len, host, sizeof host, port, sizeof port,
	                NI_NUMERICHOST | NI_NUMERICSERV)) {
		snprintf(out, size, "an address of unknown form");
		return;
	}
	snprintf(out, size, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s",
	         host, port);
}
