/* errcode.c - wire names of the error codes (see errcode.h). */
#include <string.h>

#include "errcode.h"

static const char *const names[JQ_NERR] = {
	[JQ_OK] = "ok",
	[JQ_BAD_JSON] = "bad_json",
	[JQ_BAD_UTF8] = "bad_utf8",
	[JQ_FRAME_TOO_LARGE] = "frame_too_large",
	[JQ_BAD_REQUEST] = "bad_request",
	[JQ_UNKNOWN_OP] = "unknown_op",
	[JQ_BAD_QUEUE] = "bad_queue",
	[JQ_TOO_MANY_QUEUES] = "too_many_queues",
	[JQ_FULL] = "full",
	[JQ_EMPTY] = "empty",
	[JQ_TIMEOUT] = "timeout",
	[JQ_UNKNOWN_TASK] = "unknown_task",
	[JQ_TOO_LARGE] = "too_large",
	[JQ_UNAUTHORIZED] = "unauthorized",
	[JQ_TOO_MANY_CONNECTIONS] = "too_many_connections",
	[JQ_SHUTTING_DOWN] = "shutting_down",
	[JQ_UNAVAILABLE] = "unavailable",
	[JQ_CONFLICT] = "conflict",
};

const char *errcode_name(int code)
{
	if (code < 0 || code >= JQ_NERR)
		return "unknown";
	return names[code];
}

int errcode_of(const char *name, size_t len)
{
	for (int i = 1; i < JQ_NERR; i++)
		if (strlen(names[i]) == len && memcmp(names[i], name, len) == 0)
			return i;
	return -1;
}
