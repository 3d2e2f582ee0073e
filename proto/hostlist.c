/*
 * hostlist.c - parses a list of daemon addresses (hostlist.h).
 */
#include <stdio.h>
#include <string.h>

#include "hostlist.h"

static int copy(char *dst, size_t cap, const char *p, size_t len)
{
	if (len >= cap)
		return -1;
	memcpy(dst, p, len);
	dst[len] = '\0';
	return 0;
}

/* One entry, p[0..len), spaces around it already gone. */
static int parse_entry(const char *p, size_t len, const char *default_port,
                       struct hostport *hp)
{
	const char *host = p, *port = NULL;
	size_t host_len = len, port_len = 0;

	if (len && p[0] == '[') {
		const char *close = memchr(p, ']', len);
		if (!close)
			return -1;
		host = p + 1;
		host_len = (size_t)(close - host);
		size_t rest = len - (size_t)(close + 1 - p);
		if (rest) {
			if (close[1] != ':')
				return -1;
			port = close + 2;
			port_len = rest - 1;
		}
	} else {
		const char *colon = memchr(p, ':', len);
		/* One colon separates the port; more make a bare IPv6 host. */
		if (colon && !memchr(colon + 1, ':', len - (size_t)(colon + 1 - p))) {
			host_len = (size_t)(colon - p);
			port = colon + 1;
			port_len = len - host_len - 1;
		}
	}
	if (host_len == 0 || (port && port_len == 0))
		return -1;
	if (copy(hp->host, sizeof hp->host, host, host_len))
		return -1;
	if (port)
		return copy(hp->port, sizeof hp->port, port, port_len);
	return copy(hp->port, sizeof hp->port, default_port, strlen(default_port));
}

int hostlist_parse(const char *list, const char *default_port,
                   struct hostport *out, size_t max, char *why,
                   size_t why_len)
{
	size_t n = 0;
	const char *p = list;

	for (;;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *q = p;
		while (len && (*q == ' ' || *q == '\t'))
			q++, len--;
		while (len && (q[len - 1] == ' ' || q[len - 1] == '\t'))
			len--;
		if (n == max) {
			snprintf(why, why_len, "more than %zu addresses in '%s'", max,
			         list);
			return -1;
		}
		if (parse_entry(q, len, default_port, &out[n])) {
			snprintf(why, why_len, "'%.*s' in '%s' is not HOST, HOST:PORT "
			         "or [IPV6]:PORT", (int)len, q, list);
			return -1;
		}
		n++;
		if (!end)
			return (int)n;
		p = end + 1;
	}
}
