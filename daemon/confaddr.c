/*
 * confaddr.c - the addresses in joinqd's settings (see config_int.h): the
 * bind list and advertise's default drawn from it, the udp_allow blocks
 * and cidr_match on them, the nats_servers URLs and advertise's
 * HOST:PORT.  config.c's cfg_set_main calls them with a key's value.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "config_int.h"
#include "xalloc.h"

/* ---- binds -------------------------------------------------------------- */

void cfg_free_binds(struct config *c)
{
	for (size_t i = 0; i < c->nbinds; i++)
		free(c->binds[i]);
	free(c->binds);
	c->binds = NULL;
	c->nbinds = 0;
}

void cfg_add_bind(struct config *c, const char *addr, size_t len)
{
	c->binds = xrealloc(c->binds, (c->nbinds + 1) * sizeof *c->binds);
	c->binds[c->nbinds++] = xstrndup(addr, len);
}

/* A list of addresses separated by spaces or commas replaces the binds. */
int cfg_set_binds(struct config *c, const char *list)
{
	cfg_free_binds(c);
	for (const char *p = list; *p;) {
		size_t n = strcspn(p, " \t,");
		if (n)
			cfg_add_bind(c, p, n);
		p += n;
		p += strspn(p, " \t,");
	}
	return c->nbinds ? 0 : -1;
}

/* True for a bind address that names no one address: *, 0.0.0.0, ::. */
static bool wildcard(const char *addr)
{
	unsigned char a[16];
	static const unsigned char zero[16];
	if (!strcmp(addr, "*"))
		return true;
	if (inet_pton(AF_INET, addr, a) == 1)
		return memcmp(a, zero, 4) == 0;
	return inet_pton(AF_INET6, addr, a) == 1 && memcmp(a, zero, 16) == 0;
}

/* advertise unset: the first bind address and the port, which clients on
 * other hosts can reach only if the bind is not a loopback one; for a
 * wildcard bind, this host's name.  With port 0 the port is not known
 * yet: the daemon sets it once bound. */
void cfg_default_advertise(struct config *c)
{
	char host[256];
	const char *h = c->nbinds ? c->binds[0] : "*";
	size_t len;

	if (c->nats.advertise)
		return;
	if (wildcard(h)) {
		if (gethostname(host, sizeof host) != 0)
			host[0] = '\0';
		host[sizeof host - 1] = '\0';
		h = host[0] ? host : "localhost";
	}
	len = strlen(h) + 16;
	c->nats.advertise = xmalloc(len);
	snprintf(c->nats.advertise, len, strchr(h, ':') ? "[%s]:%u" : "%s:%u",
	         h, c->port);
}

/* ---- udp_allow ---------------------------------------------------------- */

/* "10.0.0.0/8", "::1", "192.168.1.7/32"; NULL for a bad one. */
static bool parse_cidr(const char *s, size_t len, struct cidr *out)
{
	char text[INET6_ADDRSTRLEN + 5];
	if (len >= sizeof text)
		return false;
	memcpy(text, s, len);
	text[len] = '\0';
	char *slash = strchr(text, '/');
	if (slash)
		*slash++ = '\0';
	memset(out, 0, sizeof *out);
	if (inet_pton(AF_INET, text, out->addr) == 1) {
		out->family = AF_INET;
		out->bits = 32;
	} else if (inet_pton(AF_INET6, text, out->addr) == 1) {
		out->family = AF_INET6;
		out->bits = 128;
	} else {
		return false;
	}
	if (slash) {
		char *end;
		unsigned long b = strtoul(slash, &end, 10);
		if (!*slash || *end || b > out->bits)
			return false;
		out->bits = (unsigned)b;
	}
	return true;
}

/* A list of blocks separated by spaces or commas; "*" or "any" admits
 * every sender, and an empty list none (UDP served to no one).  Returns
 * false (c unchanged) for a bad entry. */
bool cfg_set_udp_allow(struct config *c, const char *list)
{
	struct cidr *v = NULL;
	size_t n = 0;
	for (const char *p = list + strspn(list, " \t,"); *p;) {
		size_t len = strcspn(p, " \t,");
		if ((len == 1 && *p == '*') || (len == 3 && !strncmp(p, "any", 3))) {
			free(v);
			free(c->udp_allow);
			c->udp_allow = NULL;
			c->nudp_allow = 0;
			c->udp_allow_any = true;
			return true;
		}
		v = xrealloc(v, (n + 1) * sizeof *v);
		if (!parse_cidr(p, len, &v[n++])) {
			free(v);
			return false;
		}
		p += len;
		p += strspn(p, " \t,");
	}
	free(c->udp_allow);
	c->udp_allow = v;
	c->nudp_allow = n;
	c->udp_allow_any = false;
	return true;
}

bool cidr_match(const struct cidr *v, size_t n, const void *sockaddr)
{
	const struct sockaddr *sa = sockaddr;
	unsigned char addr[16];
	int family = sa->sa_family;

	if (family == AF_INET) {
		memcpy(addr, &((const struct sockaddr_in *)sockaddr)->sin_addr, 4);
	} else if (family == AF_INET6) {
		const struct sockaddr_in6 *s6 = sockaddr;
		memcpy(addr, &s6->sin6_addr, 16);
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {   /* ::ffff:a.b.c.d */
			family = AF_INET;
			memmove(addr, addr + 12, 4);
		}
	} else {
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		if (v[i].family != family)
			continue;
		unsigned whole = v[i].bits / 8, rest = v[i].bits % 8;
		if (memcmp(addr, v[i].addr, whole) != 0)
			continue;
		if (rest && ((addr[whole] ^ v[i].addr[whole]) &
		             (0xFF << (8 - rest)) & 0xFF))
			continue;
		return true;
	}
	return false;
}

/* ---- nats_servers, HOST:PORT -------------------------------------------- */

/* A port number from 1 to 65535, len bytes of digits. */
static bool valid_port(const char *s, size_t len)
{
	unsigned long v = 0;
	if (len == 0 || len > 5)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	return v >= 1 && v <= 65535;
}

/* HOST[:PORT], the port required when need_port: HOST a name, an IPv4
 * address, or an IPv6 address in brackets ("[::1]:7477"). */
bool cfg_valid_host_port(const char *s, size_t len, bool need_port)
{
	const char *end = s + len, *colon;

	if (len && *s == '[') {
		char text[INET6_ADDRSTRLEN];
		struct in6_addr a;
		const char *close = memchr(s, ']', len);
		size_t n = close ? (size_t)(close - s - 1) : 0;
		if (n == 0 || n >= sizeof text)
			return false;
		memcpy(text, s + 1, n);
		text[n] = '\0';
		if (inet_pton(AF_INET6, text, &a) != 1)
			return false;
		if (close + 1 == end)
			return !need_port;
		colon = close + 1;
		if (*colon != ':')
			return false;
	} else {
		colon = memrchr(s, ':', len);
		if (!colon && need_port)
			return false;
		const char *host_end = colon ? colon : end;
		if (host_end == s)
			return false;
		for (const char *p = s; p < host_end; p++)
			if (!isalnum((unsigned char)*p) && !strchr("-._", *p))
				return false;
		if (!colon)
			return true;
	}
	return valid_port(colon + 1, (size_t)(end - colon - 1));
}

/* nats://[USER[:PASSWORD]@]HOST[:PORT], or tls:// the same. */
static bool valid_nats_url(const char *s, size_t len)
{
	size_t scheme = !strncmp(s, "nats://", 7) ? 7 :
	                !strncmp(s, "tls://", 6) ? 6 : 0;
	if (scheme == 0 || len <= scheme)
		return false;
	s += scheme;
	len -= scheme;
	const char *at = memrchr(s, '@', len);
	if (at) {
		len -= (size_t)(at + 1 - s);
		s = at + 1;
	}
	return cfg_valid_host_port(s, len, false);
}

/* URLs separated by commas or spaces, kept as nats.c takes them: joined by
 * commas.  Returns false (c unchanged) for a bad one, none, or more than
 * NATS_SERVERS_MAX. */
bool cfg_set_nats_servers(struct config *c, const char *list)
{
	size_t cap = strlen(list) + 1, used = 0, n = 0;
	char *out = xmalloc(cap);

	for (const char *p = list + strspn(list, " \t,"); *p;) {
		size_t len = strcspn(p, " \t,");
		if (!valid_nats_url(p, len) || ++n > NATS_SERVERS_MAX) {
			free(out);
			return false;
		}
		if (used)
			out[used++] = ',';
		memcpy(out + used, p, len);
		used += len;
		p += len;
		p += strspn(p, " \t,");
	}
	out[used] = '\0';
	if (!used) {
		free(out);
		return false;
	}
	free(c->nats.servers);
	c->nats.servers = out;
	return true;
}
