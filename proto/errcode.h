/*
 * errcode.h - the wire names of PROTOCOL.md's error codes, shared by daemon
 * and clients.
 *
 * The codes themselves (enum jq_err: JQ_OK is 0, every failure positive)
 * are part of libjoinq's public API and live in its header, joinq.h.  The
 * engine returns them too, so a result travels from the queue to the reply
 * without translation.
 */
#ifndef JQ_ERRCODE_H
#define JQ_ERRCODE_H

#include <stddef.h>

#include "joinq.h"   /* enum jq_err */

/* The wire name of a code ("bad_json"), or "unknown" for a code out of range. */
const char *errcode_name(int code);

/* The code of a wire name, or -1 if the name is not one of PROTOCOL.md's. */
int errcode_of(const char *name, size_t len);

#endif
