/*
 * store_nats.c - the replicated store: a NATS JetStream stream (store.h).
 * (Being written: issue 12.)
 */
#include "store.h"
