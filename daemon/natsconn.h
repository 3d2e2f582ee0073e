/*
 * natsconn.h - the daemon's connection to NATS, on its own event loop.
 * (Being written: issue 12.)
 */
#ifndef JQ_NATSCONN_H
#define JQ_NATSCONN_H
#endif
