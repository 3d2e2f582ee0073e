/*
 * failover.c - which daemon address libjoinq tries next, and what it may
 * send again (failover.h).  No I/O here: libjoinq.c connects and sends.
 */
#include <string.h>

#include "failover.h"
#include "joinq.h"

int failover_init(struct failover *f, const char *hosts, const char *port,
                  char *why, size_t why_len)
{
	memset(f, 0, sizeof *f);
	int n = hostlist_parse(hosts, port, f->addr, HOSTLIST_MAX, why, why_len);
	if (n < 0)
		return -1;
	f->n = (size_t)n;
	f->cur = f->n - 1;      /* so that the first round starts at the first */
	return 0;
}

size_t failover_round_len(const struct failover *f, bool named)
{
	return f->n + (named ? 1 : 0);
}

const struct hostport *failover_candidate(const struct failover *f,
                                          bool named, size_t i, long *index)
{
	if (named) {
		if (i == 0) {
			*index = -1;
			return &f->active;
		}
		i--;
	}
	*index = (long)((f->cur + 1 + i) % f->n);
	return &f->addr[*index];
}

bool failover_name_active(struct failover *f, const char *hostport)
{
	char why[8];
	f->has_active = hostlist_parse(hostport, JQ_DEFAULT_PORT, &f->active,
	                               1, why, sizeof why) == 1;
	return f->has_active;
}

bool failover_resendable(const char *request, size_t len)
{
	static const char *const safe[] = {
		"{\"op\":\"get\"", "{\"op\":\"ping\"", "{\"op\":\"qsize\"",
		"{\"op\":\"stats\"", "{\"op\":\"join\"", "{\"op\":\"auth\"",
		"{\"op\":\"declare\"",
	};
	for (size_t i = 0; i < sizeof safe / sizeof *safe; i++) {
		size_t n = strlen(safe[i]);
		if (len > n && !memcmp(request, safe[i], n) &&
		    (request[n] == ',' || request[n] == '}'))
			return true;
	}
	return false;
}

int64_t failover_backoff(int64_t last_ms)
{
	if (last_ms <= 0)
		return FAILOVER_BACKOFF_MIN_MS;
	return last_ms * 2 > FAILOVER_BACKOFF_MAX_MS ? FAILOVER_BACKOFF_MAX_MS :
	       last_ms * 2;
}
