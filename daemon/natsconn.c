/*
 * natsconn.c - the daemon's connection to NATS (see natsconn.h).
 */
#include "natsconn.h"
