/*
 * listen.c - binding and serving the TCP and UDP sockets (see listen.h).
 *
 * Under socket activation (systemd's joinqd.socket), the sockets come ready
 * from systemd (sd_listen_fds_with_names) and nothing is bound here: every
 * listening stream socket is a TCP listener, every datagram socket a UDP
 * one, a stream socket named "metrics" serves /metrics, and one named
 * "tls" is a TLS listener.
 *
 * It owns server.listen (struct listen_state): the sockets.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "conn.h"
#include "listen.h"
#include "log.h"
#include "server.h"
#include "udp.h"
#include "xalloc.h"

#define BACKLOG 1024
#define PORT_TRIES 32      /* with port 0: tries for a port free for all */

static void set_port(struct sockaddr *sa, unsigned port)
{
	if (sa->sa_family == AF_INET)
		((struct sockaddr_in *)(void *)sa)->sin_port = htons((uint16_t)port);
	else
		((struct sockaddr_in6 *)(void *)sa)->sin6_port = htons((uint16_t)port);
}

static unsigned bound_port(int fd)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t len = sizeof ss;
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return 0;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return 0;   /* a socket systemd passed may be a Unix one */
}

static void name_of(const struct sockaddr *sa, socklen_t len, unsigned port,
                    char *out, size_t outlen)
{
	char host[NI_MAXHOST];
	if (getnameinfo(sa, len, host, sizeof host, NULL, 0, NI_NUMERICHOST))
		snprintf(host, sizeof host, "?");
	snprintf(out, outlen, sa->sa_family == AF_INET6 ? "[%s]:%u" : "%s:%u",
	         host, port);
}

/* A socket of the given type bound to ai at port.  Returns the descriptor
 * or -1 with errno set. */
static int bind_socket(const struct addrinfo *ai, int type, unsigned port)
{
	int one = 1;
	int fd = socket(ai->ai_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	set_port(ai->ai_addr, port);
	if (type == SOCK_STREAM)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (ai->ai_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		int err = errno;
		close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

static struct listener *new_listener(int fd, bool udp)
{
	server.listen.all = xrealloc(server.listen.all, (server.listen.count + 1) *
	                             sizeof *server.listen.all);
	struct listener *l = &server.listen.all[server.listen.count++];
	memset(l, 0, sizeof *l);
	l->fd = fd;
	l->udp = udp;
	return l;
}

static void add_listener(int fd, bool udp, bool tls,
                         const struct addrinfo *ai, unsigned port)
{
	struct listener *l = new_listener(fd, udp);
	l->tls = tls;
	server.listen.tls |= tls;
	name_of(ai->ai_addr, ai->ai_addrlen, port, l->name, sizeof l->name);
}

static void close_all(void)
{
	for (size_t i = 0; i < server.listen.count; i++) {
		struct listener *l = &server.listen.all[i];
		if (l->tcp)
			evconnlistener_free(l->tcp);   /* closes the socket */
		else if (l->fd >= 0)
			close(l->fd);
		if (l->ev)
			event_free(l->ev);
	}
	free(server.listen.all);
	server.listen.all = NULL;
	server.listen.count = 0;
	server.listen.tls = false;
}

/* An address the host lacks (no IPv6 at all, say) is skipped with a warning
 * when others remain; anything else is an error. */
static bool missing_family(int err)
{
	return err == EAFNOSUPPORT || err == EADDRNOTAVAIL || err == EPROTONOSUPPORT;
}

/*
 * One pass over the bind addresses at *port: TCP and UDP, or with tls the
 * TLS listeners (TCP only).  With port 0 the first socket picks the port
 * and the others follow it.  Returns 0, or -1 after logging, or 1 when
 * port 0 should try again (the picked port was taken elsewhere).
 */
static int bind_all(unsigned *port, bool tls)
{
	bool any_port = *port == 0;

	for (size_t i = 0; i < server.cfg.nbinds; i++) {
		const char *addr = server.cfg.binds[i];
		struct addrinfo hints = { .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
		                          .ai_family = AF_UNSPEC,
		                          .ai_socktype = SOCK_STREAM };
		struct addrinfo *res;
		const char *host = strcmp(addr, "*") == 0 ? NULL : addr;
		int rc = getaddrinfo(host, "0", &hints, &res);
		if (rc) {
			log_error("cannot listen on %s: %s", addr, gai_strerror(rc));
			return -1;
		}
		for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
			int tcp = bind_socket(ai, SOCK_STREAM, *port);
			if (tcp >= 0 && *port == 0)
				*port = bound_port(tcp);
			int udp = tcp < 0 || tls ? -1 :
			          bind_socket(ai, SOCK_DGRAM, *port);
			if (tcp >= 0 && (tls || udp >= 0)) {
				add_listener(tcp, false, tls, ai, *port);
				if (!tls)
					add_listener(udp, true, false, ai, *port);
				continue;
			}
			int err = errno;
			char name[64];
			name_of(ai->ai_addr, ai->ai_addrlen, *port, name, sizeof name);
			if (tcp >= 0)
				close(tcp);
			if (any_port && err == EADDRINUSE) {
				freeaddrinfo(res);
				return 1;
			}
			if (missing_family(err) && server.cfg.nbinds > 1) {
				log_warning("skipping %s: %s", name, strerror(err));
				continue;
			}
			log_error("cannot listen on %s (%s): %s", name,
			          tls ? "TLS" : tcp < 0 ? "TCP" : "UDP", strerror(err));
			freeaddrinfo(res);
			return -1;
		}
		freeaddrinfo(res);
	}
	if (!server.listen.count) {
		log_error("no address to listen on");
		return -1;
	}
	return 0;
}

static void name_bound(struct listener *l)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t len = sizeof ss;
	if (getsockname(l->fd, (struct sockaddr *)&ss, &len) == 0)
		name_of((struct sockaddr *)&ss, len, bound_port(l->fd), l->name,
		        sizeof l->name);
	else
		snprintf(l->name, sizeof l->name, "fd %d", l->fd);
}

/* Takes the n sockets systemd passed. */
static int adopt(int n, char **names)
{
	for (int i = 0; i < n; i++) {
		int fd = SD_LISTEN_FDS_START + i;
		const char *name = names && names[i] ? names[i] : "";
		bool stream = sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) > 0;
		bool dgram = sd_is_socket(fd, AF_UNSPEC, SOCK_DGRAM, -1) > 0;
		if (!stream && !dgram) {
			log_error("socket activation: descriptor %d (%s) is neither a "
			          "listening stream socket nor a datagram socket", fd,
			          name);
			return -1;
		}
		if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0 ||
		    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
			log_error("socket activation: descriptor %d: %s", fd,
			          strerror(errno));
			return -1;
		}
		if (stream && strcmp(name, "metrics") == 0) {
			server.listen.metrics_fd = fd;
			continue;
		}
		struct listener *l = new_listener(fd, dgram);
		l->tls = stream && strcmp(name, "tls") == 0;
		server.listen.tls |= l->tls;
		name_bound(l);
	}
	if (!server.listen.count) {
		log_error("socket activation: systemd passed no socket for queues");
		return -1;
	}
	return 0;
}

int listen_open(void)
{
	char **names = NULL;
	server.listen.metrics_fd = -1;
	int n = sd_listen_fds_with_names(1, &names);
	if (n < 0) {
		log_error("socket activation: %s", strerror(-n));
		return -1;
	}
	if (n > 0) {
		int rc = adopt(n, names);
		for (int i = 0; i < n; i++)
			free(names[i]);
		free(names);
		if (rc == 0) {
			server.listen.activated = true;
			log_info("socket-activated: %d socket%s from systemd; binding "
			         "nothing", n, n == 1 ? "" : "s");
		}
		return rc;
	}

	for (int tries = 0; tries < PORT_TRIES; tries++) {
		unsigned port = server.cfg.port;
		unsigned tls_port = (unsigned)server.cfg.tls.port;
		int rc = bind_all(&port, false);
		if (rc == 0 && server.cfg.tls.port >= 0)
			rc = bind_all(&tls_port, true);
		if (rc <= 0) {
			if (rc < 0)
				close_all();
			return rc;
		}
		close_all();
	}
	log_error("found no port free for TCP and UDP (and TLS) on every "
	          "address");
	return -1;
}

/* ---- accepting ---------------------------------------------------------- */

static void retry_accept(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct listener *l = arg;
	if (!server.shutting_down)
		evconnlistener_enable(l->tcp);
}

/* Out of descriptors (EMFILE, ENFILE): a listener that stays enabled would
 * wake the loop again at once, so it pauses for a second (as tmux does). */
static void accept_error(struct evconnlistener *lev, void *arg)
{
	struct listener *l = arg;
	int err = EVUTIL_SOCKET_ERROR();
	static const struct timeval pause = { 1, 0 };

	(void)lev;
	if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
		log_warning("%s: cannot accept: %s; pausing for a second",
		            l->name, strerror(err));
		evconnlistener_disable(l->tcp);
		evtimer_add(l->ev, &pause);
	} else if (err != EINTR && err != ECONNABORTED && err != EAGAIN) {
		log_warning("%s: accept: %s", l->name, strerror(err));
	}
}

int listen_start(void)
{
	for (size_t i = 0; i < server.listen.count; i++) {
		struct listener *l = &server.listen.all[i];
		if (l->udp) {
			udp_setup(l);
			l->ev = event_new(server.base, l->fd, EV_READ | EV_PERSIST,
			                  udp_read, l);
			event_add(l->ev, NULL);
			continue;
		}
		l->tcp = evconnlistener_new(server.base, conn_accept, l,
		                            LEV_OPT_CLOSE_ON_FREE |
		                            LEV_OPT_CLOSE_ON_EXEC, BACKLOG, l->fd);
		if (!l->tcp) {
			log_error("%s: cannot listen: %s", l->name, strerror(errno));
			return -1;
		}
		evconnlistener_set_error_cb(l->tcp, accept_error);
		l->ev = evtimer_new(server.base, retry_accept, l);
	}
	return 0;
}

/* Closes the TCP sockets, not just stops accepting: a client that connects
 * now is refused at once instead of waiting in the backlog for nothing. */
void listen_stop_tcp(void)
{
	for (size_t i = 0; i < server.listen.count; i++) {
		struct listener *l = &server.listen.all[i];
		if (l->udp)
			continue;
		if (l->tcp) {
			evconnlistener_free(l->tcp);   /* closes the socket */
			l->tcp = NULL;
		} else if (l->fd >= 0) {
			close(l->fd);
		}
		l->fd = -1;
		if (l->ev)
			evtimer_del(l->ev);
	}
}

void listen_close(void)
{
	close_all();
}

void listen_describe(char *out, size_t len)
{
	size_t n = 0;
	bool both = true;   /* every address serves TCP and UDP */
	out[0] = '\0';
	for (size_t i = 0; i < server.listen.count && n < len; i++) {
		const struct listener *l = &server.listen.all[i];
		bool twin = false;
		if (l->tls)
			continue;
		for (size_t k = 0; k < server.listen.count; k++)
			twin |= k != i && server.listen.all[k].udp != l->udp &&
			        strcmp(server.listen.all[k].name, l->name) == 0;
		both &= twin;
		if (!l->udp || !twin)
			n += (size_t)snprintf(out + n, len - n, "%s%s%s", n ? " " : "",
			                      l->name, twin ? "" : l->udp ? " (UDP)" :
			                      " (TCP)");
	}
	if (n < len)
		n += (size_t)snprintf(out + n, len - n, "%s",
		                      both ? " (TCP and UDP)" : "");
	/* After the plain ones, so that the first port named is the plain
	 * one (jqtest and scripts read it). */
	for (size_t i = 0; i < server.listen.count && n < len; i++)
		if (server.listen.all[i].tls)
			n += (size_t)snprintf(out + n, len - n, ", %s (TLS)",
			                      server.listen.all[i].name);
}
