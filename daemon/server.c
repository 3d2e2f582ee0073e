/*
 * server.c - the one global (see server.h) and the daemon's clock.
 */
#include <time.h>

#include "server.h"

struct server server;

msec_t server_clock(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (msec_t)ts.tv_sec * 1000 + (msec_t)ts.tv_nsec / 1000000;
}
