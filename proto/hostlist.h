/*
 * hostlist.h - a list of daemon addresses as users write it: "a,b:7478,
 * [::1]:7479" (-H, JOINQ_HOST, jq_options.host), split into host and port
 * pairs for getaddrinfo.  Shared by libjoinq and joinq bench.
 */
#ifndef JQ_HOSTLIST_H
#define JQ_HOSTLIST_H

#include <stddef.h>

#define HOSTLIST_MAX 16           /* addresses in one list */

struct hostport {
	char host[256];
	char port[32];
};

/*
 * Splits list at its commas; each entry is HOST, HOST:PORT, [IPV6] or
 * [IPV6]:PORT (a bare IPv6 address, with more than one colon, is a host),
 * and takes default_port when it names none.  Returns how many entries it
 * found (1 to max), or -1 with why filled.
 */
int hostlist_parse(const char *list, const char *default_port,
                   struct hostport *out, size_t max, char *why,
                   size_t why_len);

#endif
