/*
 * errcode.h - the error codes of PROTOCOL.md, shared by daemon and clients.
 *
 * JQ_OK is 0 and every failure is a positive code whose wire name is
 * jq_errname(code).  The engine returns these codes too, so a result travels
 * from the queue to the reply without translation.
 */
#ifndef JQ_ERRCODE_H
#define JQ_ERRCODE_H

#include <stddef.h>

enum jq_err {
	JQ_OK = 0,
	JQ_BAD_JSON,
	JQ_BAD_UTF8,
	JQ_FRAME_TOO_LARGE,
	JQ_BAD_REQUEST,
	JQ_UNKNOWN_OP,
	JQ_BAD_QUEUE,
	JQ_TOO_MANY_QUEUES,
	JQ_FULL,
	JQ_EMPTY,
	JQ_TIMEOUT,
	JQ_UNKNOWN_TASK,
	JQ_TOO_LARGE,
	JQ_UNAUTHORIZED,
	JQ_TOO_MANY_CONNECTIONS,
	JQ_SHUTTING_DOWN,
	JQ_UNAVAILABLE,
	JQ_NERR
};

/* The wire name of a code ("bad_json"), or "unknown" for a code out of range. */
const char *jq_errname(int code);

/* The code of a wire name, or -1 if the name is not one of PROTOCOL.md's. */
int jq_errcode(const char *name, size_t len);

#endif
