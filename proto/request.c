/*
 * request.c - decoding a frame and checking a request's fields
 * (see request.h).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "request.h"
#include "utf8.h"

static const char *const op_names[OP_NOPS] = {
	[OP_PUT] = "put",
	[OP_GET] = "get",
	[OP_TASK_DONE] = "task_done",
	[OP_RELEASE] = "release",
	[OP_JOIN] = "join",
	[OP_QSIZE] = "qsize",
	[OP_EMPTY] = "empty",
	[OP_FULL] = "full",
	[OP_PING] = "ping",
	[OP_STATS] = "stats",
	[OP_AUTH] = "auth",
};

const char *jq_opname(enum jq_op op)
{
	return (unsigned)op < OP_NOPS ? op_names[op] : "?";
}

int errinfo_set(struct errinfo *e, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof e->message, fmt, ap);
	va_end(ap);
	e->code = code;
	return code;
}

/*
 * True if the JSON text nests deeper than max: brackets outside strings,
 * the outermost object counting as depth 1.  Runs before jansson so that
 * the configurable limit holds and jansson never recurses deeply.
 */
static bool too_deep(const char *p, size_t len, unsigned max)
{
	unsigned depth = 0;
	bool in_string = false;

	for (size_t i = 0; i < len; i++) {
		char c = p[i];
		if (in_string) {
			if (c == '\\')
				i++;            /* skip the escaped character */
			else if (c == '"')
				in_string = false;
		} else if (c == '"') {
			in_string = true;
		} else if (c == '{' || c == '[') {
			if (++depth > max)
				return true;
		} else if ((c == '}' || c == ']') && depth > 0) {
			depth--;
		}
	}
	return false;
}

int request_decode(const char *frame, size_t len, unsigned max_depth,
                   struct request *r, struct errinfo *e)
{
	size_t bad;
	json_error_t jerr;

	memset(r, 0, sizeof *r);
	if (!utf8_valid(frame, len, &bad))
		return errinfo_set(e, JQ_BAD_UTF8,
		                   "the frame is not valid UTF-8 (byte %zu)", bad);
	if (too_deep(frame, len, max_depth))
		return errinfo_set(e, JQ_BAD_JSON,
		                   "the frame nests deeper than max_depth (%u)",
		                   max_depth);
	r->root = json_loadb(frame, len, JSON_ALLOW_NUL, &jerr);
	if (!r->root)
		return errinfo_set(e, JQ_BAD_JSON,
		                   "the frame is not valid JSON: %s at column %d",
		                   jerr.text, jerr.column);
	if (!json_is_object(r->root)) {
		json_decref(r->root);
		r->root = NULL;
		return errinfo_set(e, JQ_BAD_JSON, "the frame is not a JSON object");
	}
	r->id = json_object_get(r->root, "id");
	r->token = json_object_get(r->root, "token");
	if (json_is_null(r->token))
		r->token = NULL;
	r->noreply = json_is_true(json_object_get(r->root, "noreply"));
	return JQ_OK;
}

void request_free(struct request *r)
{
	json_decref(r->root);
	r->root = NULL;
}

bool request_is_ping(const struct request *r)
{
	json_t *op = json_object_get(r->root, "op");
	return json_is_string(op) && json_string_length(op) == 4 &&
	       memcmp(json_string_value(op), "ping", 4) == 0;
}

bool queue_name_valid(const char *name, size_t len)
{
	static const size_t suffix = sizeof QUEUE_DEAD_SUFFIX - 1;

	if (len == 0 || len > QUEUE_NAME_LIMIT)
		return false;
	if (len > QUEUE_NAME_MAX &&
	    memcmp(name + len - suffix, QUEUE_DEAD_SUFFIX, suffix) != 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '.' ||
		      c == ':' || c == '-'))
			return false;
	}
	return true;
}

/* An optional field: absent and JSON null both give NULL. */
static json_t *field(const struct request *r, const char *key)
{
	json_t *v = json_object_get(r->root, key);
	return json_is_null(v) ? NULL : v;
}

static int get_bool(const struct request *r, const char *key, bool *out,
                    struct errinfo *e)
{
	json_t *v = field(r, key);
	if (!v)
		return JQ_OK;
	if (!json_is_boolean(v))
		return errinfo_set(e, JQ_BAD_REQUEST,
		                   "field '%s' must be true or false", key);
	*out = json_is_true(v);
	return JQ_OK;
}

/* A number of seconds: >= 0, or > 0 when positive is set; capped at
 * JQ_SECONDS_MAX.  Leaves *out alone when the field is absent. */
static int get_seconds(const struct request *r, const char *key, bool positive,
                       double *out, struct errinfo *e)
{
	json_t *v = field(r, key);
	if (!v)
		return JQ_OK;
	double s = json_is_number(v) ? json_number_value(v) : NAN;
	if (!(positive ? s > 0 : s >= 0))
		return errinfo_set(e, JQ_BAD_REQUEST,
		                   "field '%s' must be a number of seconds %s 0",
		                   key, positive ? ">" : ">=");
	*out = s > JQ_SECONDS_MAX ? JQ_SECONDS_MAX : s;
	return JQ_OK;
}

static int get_task(const struct request *r, uint64_t *out, struct errinfo *e)
{
	json_t *v = field(r, "task");
	if (!v)
		return errinfo_set(e, JQ_BAD_REQUEST,
		                   "field 'task' is required for %s", jq_opname(r->op));
	if (!json_is_integer(v) || json_integer_value(v) <= 0)
		return errinfo_set(e, JQ_BAD_REQUEST,
		                   "field 'task' must be a positive integer");
	*out = (uint64_t)json_integer_value(v);
	return JQ_OK;
}

static int check_op(struct request *r, struct errinfo *e)
{
	json_t *op = json_object_get(r->root, "op");
	if (!op)
		return errinfo_set(e, JQ_BAD_REQUEST, "field 'op' is required");
	if (!json_is_string(op))
		return errinfo_set(e, JQ_BAD_REQUEST, "field 'op' must be a string");
	const char *s = json_string_value(op);
	size_t n = json_string_length(op);
	for (int i = 0; i < OP_NOPS; i++)
		if (strlen(op_names[i]) == n && memcmp(op_names[i], s, n) == 0) {
			r->op = (enum jq_op)i;
			return JQ_OK;
		}
	return errinfo_set(e, JQ_UNKNOWN_OP,
	                   "field 'op' names no op of protocol 1 (put, get, "
	                   "task_done, release, join, qsize, empty, full, ping, "
	                   "stats, auth)");
}

static int check_queue(struct request *r, struct errinfo *e)
{
	json_t *q = field(r, "queue");
	if (!q) {
		r->queue = DEFAULT_QUEUE;
		r->queue_len = sizeof DEFAULT_QUEUE - 1;
		return JQ_OK;
	}
	if (!json_is_string(q) ||
	    !queue_name_valid(json_string_value(q), json_string_length(q)))
		return errinfo_set(e, JQ_BAD_QUEUE,
		                   "field 'queue' must be 1 to %d bytes of "
		                   "A-Z a-z 0-9 _ . : - (up to %d ending in .dead)",
		                   QUEUE_NAME_MAX, QUEUE_NAME_LIMIT);
	r->queue = json_string_value(q);
	r->queue_len = json_string_length(q);
	return JQ_OK;
}

int request_check(struct request *r, struct errinfo *e)
{
	int rc;

	r->block = true;
	r->timeout = -1;
	if ((rc = check_op(r, e)) || (rc = check_queue(r, e)))
		return rc;
	json_t *noreply = field(r, "noreply");
	if (noreply && !json_is_boolean(noreply))
		return errinfo_set(e, JQ_BAD_REQUEST,
		                   "field 'noreply' must be true or false");

	switch (r->op) {
	case OP_PUT:
		r->item = json_object_get(r->root, "item");
		if (!r->item)
			return errinfo_set(e, JQ_BAD_REQUEST,
			                   "field 'item' is required for put");
		break;
	case OP_GET:
		if (r->noreply)
			return errinfo_set(e, JQ_BAD_REQUEST,
			                   "get cannot be noreply: the item would be lost");
		if ((rc = get_seconds(r, "lease", true, &r->lease, e)))
			return rc;
		break;
	case OP_JOIN:
		break;
	case OP_TASK_DONE:
		return get_task(r, &r->task, e);
	case OP_RELEASE:
		if ((rc = get_task(r, &r->task, e)))
			return rc;
		return get_seconds(r, "delay", false, &r->delay, e);
	default:
		return JQ_OK;
	}
	/* The blocking ops: put, get and join. */
	if ((rc = get_bool(r, "block", &r->block, e)))
		return rc;
	return get_seconds(r, "timeout", false, &r->timeout, e);
}
