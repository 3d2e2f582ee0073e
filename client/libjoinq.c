/*
 * libjoinq.c - the client library of joinqd (see joinq.h): the ops
 * (jq_put, jq_get, ...) built on one call (jqcall.c), and the raw
 * requests of the pipelining API (jq_send, jq_flush, jq_recv).
 * connection.c holds the connection itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "buf.h"
#include "errcode.h"
#include "failover.h"
#include "frame.h"
#include "jobject.h"
#include "joinq.h"
#include "netconnect.h"
#include "jscan.h"
#include "reply.h"
#include "utf8.h"

#include "jqclient.h"

/* The answer to an op that does not wait: it may take io_timeout. */
static const struct jq_wait no_wait = { .block = false, .timeout = 0 };

/* ---- ops ---------------------------------------------------------------- */

int jqc_authenticate(jq_client *c, const char *token, struct jq_error *err)
{
	struct reply r;
	jqc_req_begin(c, "auth", NULL);
	buf_adds(&c->req, ",\"token\":");
	json_append_string(&c->req, token, strlen(token));
	return jqc_call(c, &no_wait, &r, err);
}

/* The put request in c->req up to its item: {"op":"put",...,"item": */
static int put_begin(jq_client *c, const char *queue, const struct jq_wait *w,
                     struct jq_error *err)
{
	jqc_req_begin(c, "put", queue);
	if (jqc_req_wait(c, w, err))
		return err->code;
	buf_adds(&c->req, ",\"item\":");
	return JQ_OK;
}

/* Sends the put in c->req, its item added, and reads the task id. */
static int put_end(jq_client *c, const struct jq_wait *w, uint64_t *task,
                   struct jq_error *err)
{
	struct reply r;
	uint64_t t = 0;

	if (jqc_call(c, w, &r, err))
		return err->code;
	if (jqc_reply_u64_field(c, &r, RM_TASK, &t, err) == JQ_OK && task)
		*task = t;
	return err->code;
}

int jq_put(jq_client *c, const char *queue, const char *item_json,
           size_t len, const struct jq_wait *w, uint64_t *task,
           struct jq_error *err)
{
	struct jq_error spare;
	char why[160];
	size_t bad;

	if (!err)
		err = &spare;
	if (!item_json)
		return jqc_fail(err, JQ_ERR_ARGUMENT, "the item is missing");
	if (!utf8_valid(item_json, len, &bad))
		return jqc_fail(err, JQ_ERR_ARGUMENT, "the item is not valid UTF-8 "
		                "(byte %zu)", bad);
	int code = jvalue_check(item_json, len, UINT_MAX, why, sizeof why);
	if (code == JQ_ERR_NOMEM)
		return jqc_out_of_memory(err, "checking the item");
	if (code)
		return jqc_fail(err, JQ_ERR_ARGUMENT, "the item %s", why);
	if (put_begin(c, queue, w, err))
		return err->code;
	/* The item goes as the caller spelt it, numbers included; only the
	 * whitespace between its tokens goes, so that it fits on one line. */
	if (buf_reserve(&c->req, len))
		c->req.len += jtext_compact(item_json, len, c->req.p + c->req.len);
	return put_end(c, w, task, err);
}

int jq_put_string(jq_client *c, const char *queue, const char *s,
                  const struct jq_wait *w, uint64_t *task,
                  struct jq_error *err)
{
	struct jq_error spare;
	size_t bad;

	if (!err)
		err = &spare;
	if (!s)
		return jqc_fail(err, JQ_ERR_ARGUMENT, "the item is missing");
	size_t len = strlen(s);
	if (!utf8_valid(s, len, &bad))
		return jqc_fail(err, JQ_ERR_ARGUMENT, "the item is not valid UTF-8 "
		                "(byte %zu)", bad);
	if (put_begin(c, queue, w, err))
		return err->code;
	json_append_string(&c->req, s, len);
	return put_end(c, w, task, err);
}

int jq_get(jq_client *c, const char *queue, const struct jq_wait *w,
           double lease, struct jq_task *out, struct jq_error *err)
{
	struct jq_error spare;
	struct reply r;
	uint64_t task = 0, deliveries = 0;

	if (!err)
		err = &spare;
	memset(out, 0, sizeof *out);
	if (isnan(lease) || lease < 0)
		return jqc_fail(err, JQ_ERR_ARGUMENT, "lease must be a number of "
		                "seconds > 0, or 0 for none");
	jqc_req_begin(c, "get", queue);
	if (jqc_req_wait(c, w, err) || (lease > 0 &&
	    jqc_req_seconds(c, "lease", lease, err)))
		return err->code;
	if (jqc_call(c, w, &r, err))
		return err->code;

	/* The item's text as the daemon sent it, not re-encoded. */
	const struct jtext *item = &r.m[RM_ITEM].text;
	if (r.m[RM_ITEM].kind == JK_ABSENT)
		return jqc_fail(err, JQ_ERR_PROTOCOL, "%s sent a get reply without "
		                "an item", c->peer);
	if (jqc_reply_u64_field(c, &r, RM_TASK, &task, err) ||
	    jqc_reply_u64_field(c, &r, RM_DELIVERIES, &deliveries, err))
		return err->code;
	if (!(out->item = malloc(item->len + 1)))
		return jqc_fail(err, JQ_ERR_NOMEM, "out of memory for the item of "
		                "task %llu", (unsigned long long)task);
	out->item_len = jtext_compact(item->p, item->len, out->item);
	out->item[out->item_len] = '\0';
	out->task = task;
	out->deliveries = deliveries > UINT32_MAX ? UINT32_MAX :
	                  (uint32_t)deliveries;
	return JQ_OK;
}

void jq_task_free(struct jq_task *t)
{
	if (!t)
		return;
	free(t->item);
	t->item = NULL;
	t->item_len = 0;
}

/* Begins a request about one delivered task (task_done, release). */
static int task_request(jq_client *c, const char *op, uint64_t task,
                        struct jq_error *err)
{
	/* Task ids are positive and below 2^53 (PROTOCOL.md, put). */
	if (task == 0 || task >= (UINT64_C(1) << 53))
		return jqc_fail(err, JQ_ERR_ARGUMENT, "task must be a positive integer "
		                "below 2^53");
	jqc_req_begin(c, op, NULL);
	jqc_req_u64(c, "task", task);
	return JQ_OK;
}

int jq_task_done(jq_client *c, uint64_t task, uint64_t *unfinished,
                 struct jq_error *err)
{
	struct jq_error spare;
	struct reply r;

	if (!err)
		err = &spare;
	if (task_request(c, "task_done", task, err) ||
	    jqc_call(c, &no_wait, &r, err))
		return err->code;
	return jqc_reply_u64_field(c, &r, RM_UNFINISHED, unfinished, err);
}

int jq_release(jq_client *c, uint64_t task, double delay,
               struct jq_error *err)
{
	struct jq_error spare;
	struct reply r;

	if (!err)
		err = &spare;
	if (task_request(c, "release", task, err))
		return err->code;
	if (delay != 0 && jqc_req_seconds(c, "delay", delay, err))
		return err->code;
	return jqc_call(c, &no_wait, &r, err);
}

int jq_join(jq_client *c, const char *queue, const struct jq_wait *w,
            struct jq_error *err)
{
	struct jq_error spare;
	struct reply r;

	if (!err)
		err = &spare;
	jqc_req_begin(c, "join", queue);
	if (jqc_req_wait(c, w, err))
		return err->code;
	return jqc_call(c, w, &r, err);
}

int jq_qsize(jq_client *c, const char *queue, struct jq_qsize *out,
             struct jq_error *err)
{
	struct jq_error spare;
	struct reply r;

	if (!err)
		err = &spare;
	memset(out, 0, sizeof *out);
	jqc_req_begin(c, "qsize", queue);
	if (jqc_call(c, &no_wait, &r, err))
		return err->code;
	/* Each check fills err when it fails, and the first failure stops. */
	if (!jqc_reply_u64_field(c, &r, RM_QSIZE, &out->qsize, err) &&
	    !jqc_reply_u64_field(c, &r, RM_MAXSIZE, &out->maxsize, err) &&
	    !jqc_reply_u64_field(c, &r, RM_UNFINISHED, &out->unfinished, err) &&
	    !jqc_reply_u64_field(c, &r, RM_INFLIGHT, &out->inflight, err) &&
	    !jqc_reply_u64_field(c, &r, RM_DELAYED, &out->delayed, err) &&
	    !jqc_reply_bool_field(c, &r, RM_EMPTY, &out->empty, err))
		jqc_reply_bool_field(c, &r, RM_FULL, &out->full, err);
	/* joinqd adds dead_lettered to PROTOCOL.md's fields; another daemon
	 * may not send it. */
	const struct jfield *dl = &r.m[RM_DEAD_LETTERED];
	if (dl->kind == JK_INT && dl->integer > 0)
		out->dead_lettered = (uint64_t)dl->integer;
	return err->code;
}

int jq_declare(jq_client *c, const char *queue, const struct jq_declare *d,
               struct jq_settings *out, struct jq_error *err)
{
	static const struct jq_declare none = JQ_DECLARE_INIT;
	struct jq_error spare;
	struct jq_settings ignored;
	struct reply r;

	if (!err)
		err = &spare;
	if (!out)
		out = &ignored;
	if (!d)
		d = &none;
	memset(out, 0, sizeof *out);
	if (d->has_maxsize && d->maxsize > INT64_MAX)
		return jqc_fail(err, JQ_ERR_ARGUMENT, "maxsize must be below 2^63");
	jqc_req_begin(c, "declare", queue);
	if (d->has_maxsize)
		jqc_req_u64(c, "maxsize", d->maxsize);
	if (d->has_max_deliveries)
		jqc_req_u64(c, "max_deliveries", d->max_deliveries);
	if (d->dead_letter) {
		buf_adds(&c->req, ",\"dead_letter\":");
		json_append_string(&c->req, d->dead_letter, strlen(d->dead_letter));
	}
	if (jqc_call(c, &no_wait, &r, err))
		return err->code;
	const struct jfield *dl = &r.m[RM_DEAD_LETTER];
	if (!jqc_reply_bool_field(c, &r, RM_CREATED, &out->created, err) &&
	    !jqc_reply_u64_field(c, &r, RM_MAXSIZE, &out->maxsize, err) &&
	    !jqc_reply_u64_field(c, &r, RM_MAX_DELIVERIES, &out->max_deliveries,
	                         err) &&
	    dl->kind != JK_NULL &&
	    !jqc_member_string(dl, out->dead_letter, sizeof out->dead_letter))
		jqc_fail(err, JQ_ERR_PROTOCOL, "%s sent a declare reply without "
		         "a dead_letter", c->peer);
	if (err->code)
		memset(out, 0, sizeof *out);
	return err->code;
}

int jq_purge(jq_client *c, const char *queue, uint64_t *purged,
             struct jq_error *err)
{
	struct jq_error spare;
	struct reply r;

	if (!err)
		err = &spare;
	if (purged)
		*purged = 0;
	jqc_req_begin(c, "purge", queue);
	if (jqc_call(c, &no_wait, &r, err))
		return err->code;
	return jqc_reply_u64_field(c, &r, RM_PURGED, purged, err);
}

int jq_delete(jq_client *c, const char *queue, bool *deleted,
              struct jq_error *err)
{
	struct jq_error spare;
	struct reply r;
	bool ignored;

	if (!err)
		err = &spare;
	if (!deleted)
		deleted = &ignored;
	*deleted = false;
	jqc_req_begin(c, "delete", queue);
	if (jqc_call(c, &no_wait, &r, err))
		return err->code;
	return jqc_reply_bool_field(c, &r, RM_DELETED, deleted, err);
}

int jq_ping(jq_client *c, char *version, size_t len, struct jq_error *err)
{
	struct jq_error spare;
	struct reply r;
	uint64_t protocol = 0;
	char v[128];

	if (!err)
		err = &spare;
	jqc_req_begin(c, "ping", NULL);
	if (jqc_call(c, &no_wait, &r, err))
		return err->code;
	if (jqc_reply_u64_field(c, &r, RM_PROTOCOL, &protocol, err)) {
		/* err says what is missing */
	} else if (protocol != 1) {
		jqc_fail(err, JQ_ERR_PROTOCOL, "%s speaks protocol %llu; this client "
		         "speaks 1", c->peer, (unsigned long long)protocol);
	} else if (!jqc_member_string(&r.m[RM_VERSION], v, sizeof v)) {
		jqc_fail(err, JQ_ERR_PROTOCOL, "%s sent a ping reply without a "
		         "version", c->peer);
	} else if (version && len) {
		snprintf(version, len, "%s", v);
	}
	return err->code;
}

int jq_stats(jq_client *c, char **json, struct jq_error *err)
{
	struct jq_error spare;
	struct reply r;
	json_error_t jerr;

	if (!err)
		err = &spare;
	*json = NULL;
	jqc_req_begin(c, "stats", NULL);
	if (jqc_call(c, &no_wait, &r, err))
		return err->code;
	/* Over UDP the reply echoes our id: leave it out, so that both
	 * transports give the same text.  (Stats hold no items: jansson's
	 * re-encoding changes nothing there.) */
	json_t *root = json_loadb(r.line, r.len, JSON_ALLOW_NUL, &jerr);
	if (!root)
		return json_error_code(&jerr) == json_error_out_of_memory ?
		       jqc_out_of_memory(err, "reading the stats") :
		       jqc_fail(err, JQ_ERR_PROTOCOL, "%s sent stats jansson cannot "
		                "read: %s", c->peer, jerr.text);
	json_object_del(root, "id");
	*json = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	if (!*json)
		return jqc_out_of_memory(err, "for the stats");
	return JQ_OK;
}

/* ---- raw requests: pipelining ------------------------------------------- */

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/*
 * Over UDP the token goes into each request: a "token" member is added at
 * the end of the object, where it wins over one the request may hold (the
 * last of duplicate keys wins).  The rest goes as it is, and so does text
 * that is not a JSON object, for the daemon to answer.
 */
static int udp_queue(jq_client *c, const char *request, size_t len,
                     struct jq_error *err)
{
	size_t mark = c->out.len;
	int code = JQ_BAD_JSON;
	char why[160];

	if (c->token)
		code = jscan_object(request, len, UINT_MAX, NULL, 0, NULL) ==
		       JSCAN_OK ? JQ_OK :
		       jobject_slow(request, len, UINT_MAX, false, NULL, 0, NULL,
		                    why, sizeof why);
	if (code == JQ_ERR_NOMEM)
		return jqc_out_of_memory(err, "checking the request");
	if (code == JQ_OK) {
		size_t open = 0, close = len - 1, k;
		while (is_ws(request[open]))
			open++;
		while (is_ws(request[close]))
			close--;
		for (k = open + 1; k < close && is_ws(request[k]); k++)
			;
		buf_add(&c->out, request, close);
		if (k < close)
			buf_addc(&c->out, ',');   /* the object has members */
		buf_adds(&c->out, "\"token\":");
		json_append_string(&c->out, c->token, strlen(c->token));
		buf_addc(&c->out, '}');
	} else {
		buf_add(&c->out, request, len);
	}
	buf_addc(&c->out, '\n');
	if (c->out.failed) {
		c->out.len = mark;
		c->out.failed = false;
		return jqc_out_of_memory(err, "queueing the request");
	}
	return jqc_ok(err);
}

/* With several addresses a lost connection is dropped, for the next op
 * call to connect again: the raw calls, which never fail over, say so. */
static int check_stream(jq_client *c, struct jq_error *err)
{
	if (c->broken.code) {
		*err = c->broken;
		return err->code;
	}
	if (c->fd < 0)
		return jqc_fail(err, JQ_ERR_CLOSED, "the connection to %s is lost",
		                c->peer);
	return JQ_OK;
}

int jq_send(jq_client *c, const char *request_json, size_t len,
            struct jq_error *err)
{
	struct jq_error spare;

	if (!err)
		err = &spare;
	if (check_stream(c, err))
		return err->code;
	if (c->shut)
		return jqc_fail(err, JQ_ERR_ARGUMENT, "the sending side is shut down");
	if (memchr(request_json, '\n', len))
		return jqc_fail(err, JQ_ERR_ARGUMENT, "a request must be one line: it "
		                "holds a LF");
	if (c->transport == JQ_UDP)
		return udp_queue(c, request_json, len, err);
	size_t mark = c->out.len;
	buf_reserve(&c->out, len + 1);
	buf_add(&c->out, request_json, len);
	buf_addc(&c->out, '\n');
	if (c->out.failed) {
		c->out.len = mark;
		c->out.failed = false;
		return jqc_out_of_memory(err, "queueing the request");
	}
	if (c->out.len - c->out_off >= FLUSH_AT)
		return jqc_tcp_flush(c, err);
	return jqc_ok(err);
}

int jq_flush(jq_client *c, struct jq_error *err)
{
	struct jq_error spare;

	if (!err)
		err = &spare;
	if (check_stream(c, err))
		return err->code;
	if (c->transport == JQ_TCP)
		return jqc_tcp_flush(c, err);

	/* UDP: each queued line is one datagram. */
	while (c->out_off < c->out.len) {
		const char *p = c->out.p + c->out_off;
		const char *lf = memchr(p, '\n', c->out.len - c->out_off);
		size_t n = (size_t)(lf - p);
		c->out_off += n + 1;
		if (jqc_udp_send(c, p, n, err)) {
			buf_reset(&c->out);   /* the rest is dropped with the error */
			c->out_off = 0;
			return err->code;
		}
	}
	buf_reset(&c->out);
	c->out_off = 0;
	return jqc_ok(err);
}

int jq_recv(jq_client *c, const struct jq_wait *w, char **reply, size_t *len,
            struct jq_error *err)
{
	struct jq_error spare;
	const char *line = "";
	size_t n = 0;
	struct reply r;
	int code;

	if (!err)
		err = &spare;
	if (reply)
		*reply = NULL;
	if (len)
		*len = 0;
	if (c->fd < 0)
		return check_stream(c, err);
	int64_t deadline = jqc_reply_deadline(c, w);
	if (c->transport == JQ_UDP) {
		if (jq_flush(c, err) || jqc_udp_recv(c, deadline, &line, &n, err))
			return err->code;
	} else if (jqc_tcp_next_line(c, deadline, &line, &n, err)) {
		return err->code;
	}

	code = jqc_parse_reply(c, line, n, &r, err);
	if (code == JQ_ERR_NOMEM)
		return code;
	if (code == JQ_OK)
		code = jqc_judge_reply(c, &r, err);
	if (reply) {
		if (!(*reply = malloc(n + 1)))
			return jqc_out_of_memory(err, "for the reply");
		memcpy(*reply, line, n);
		(*reply)[n] = '\0';
	}
	if (len)
		*len = n;
	return code;
}

int jq_shutdown(jq_client *c, struct jq_error *err)
{
	struct jq_error spare;

	if (!err)
		err = &spare;
	if (c->shut)
		return jqc_ok(err);
	if (jq_flush(c, err))
		return err->code;
	c->shut = true;
	/* ENOTCONN: the daemon has closed already, which is as good. */
	if (c->transport == JQ_TCP && jqc_shut_wr(c) < 0 &&
	    errno != ENOTCONN) {
		jqc_fail(err, JQ_ERR_CLOSED, "the connection to %s is lost: %s",
		         c->peer, strerror(errno));
		return jqc_broke(c, err);
	}
	return jqc_ok(err);
}
