/*
 * jqcall.c - one call of libjoinq: building a request, sending it (with
 * failover when there are several addresses), and reading the reply the
 * way joinqd reads requests, judging it and taking its members.
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

/* ---- replies ------------------------------------------------------------ */

static const char *const reply_names[RM_COUNT] = {
	[RM_OK] = "ok", [RM_ERROR] = "error", [RM_MESSAGE] = "message",
	[RM_ID] = "id", [RM_TASK] = "task", [RM_DELIVERIES] = "deliveries",
	[RM_ITEM] = "item", [RM_UNFINISHED] = "unfinished",
	[RM_QSIZE] = "qsize", [RM_MAXSIZE] = "maxsize",
	[RM_INFLIGHT] = "inflight", [RM_DELAYED] = "delayed",
	[RM_EMPTY] = "empty", [RM_FULL] = "full",
	[RM_DEAD_LETTERED] = "dead_lettered", [RM_PROTOCOL] = "protocol",
	[RM_VERSION] = "version", [RM_ROLE] = "role", [RM_ACTIVE] = "active",
	[RM_CREATED] = "created", [RM_MAX_DELIVERIES] = "max_deliveries",
	[RM_DEAD_LETTER] = "dead_letter", [RM_PURGED] = "purged",
	[RM_DELETED] = "deleted",
};

/*
 * Reads the reply line[0..len) into r the way joinqd reads requests
 * (proto/jscan.h, then jansson where the scanner is unsure), so that an
 * item keeps its text: 0.1 stays 0.1, and an integer of any size is kept.
 * JQ_OK, or JQ_ERR_PROTOCOL if it is not one JSON object.
 */
int jqc_parse_reply(const jq_client *c, const char *line, size_t len,
                           struct reply *r, struct jq_error *err)
{
	char why[160];

	memset(r, 0, sizeof *r);
	r->line = line;
	r->len = len;
	if (!utf8_valid(line, len, NULL))
		return jqc_fail(err, JQ_ERR_PROTOCOL, "%s sent a reply that is not "
		                "UTF-8", c->peer);
	if (jscan_object(line, len, UINT_MAX, reply_names, RM_COUNT,
	                 r->m) == JSCAN_OK)
		return jqc_ok(err);
	memset(r->m, 0, sizeof r->m);
	int code = jobject_slow(line, len, UINT_MAX, false, reply_names,
	                        RM_COUNT, r->m, why, sizeof why);
	if (code == JQ_ERR_NOMEM)
		return jqc_out_of_memory(err, "reading a reply");
	if (code)
		return jqc_fail(err, JQ_ERR_PROTOCOL, "%s sent a reply that %s",
		                c->peer, why);
	return jqc_ok(err);
}

/* The string member f decoded into buf[0..cap) with a NUL; false if it is
 * not a string or does not fit. */
bool jqc_member_string(const struct jfield *f, char *buf, size_t cap)
{
	if (f->kind != JK_STRING || cap == 0)
		return false;
	size_t n = jstring_unescape(f->text.p + 1, f->text.len - 2, buf, cap - 1);
	if (n == SIZE_MAX)
		return false;
	buf[n] = '\0';
	return true;
}

/*
 * Judges a reply: JQ_OK for {"ok":true,...}; the daemon's code with err
 * filled from the reply for {"ok":false,...}; JQ_ERR_PROTOCOL for anything
 * else.
 */
int jqc_judge_reply(const jq_client *c, const struct reply *r,
                           struct jq_error *err)
{
	char name[32], text[sizeof err->message - 64];

	if (r->m[RM_OK].kind == JK_TRUE)
		return jqc_ok(err);
	if (r->m[RM_OK].kind != JK_FALSE)
		return jqc_fail(err, JQ_ERR_PROTOCOL, "%s sent a reply without a "
		                "boolean 'ok'", c->peer);
	bool named = jqc_member_string(&r->m[RM_ERROR], name, sizeof name);
	int code = named ? errcode_of(name, strlen(name)) : -1;
	if (!jqc_member_string(&r->m[RM_MESSAGE], text, sizeof text))
		text[0] = '\0';
	if (code < 0)
		return jqc_fail(err, JQ_ERR_PROTOCOL, "%s answered with an unknown "
		                "error '%s': %s", c->peer, named ? name : "?", text);
	return jqc_fail(err, code, "%s", *text ? text : errcode_name(code));
}

/* True if reply r is the answer to UDP request id: it echoes id, or it
 * has no id at all (the daemon leaves the id out of an error it could not
 * tie to a request, such as a too_large that replaced a reply). */
static bool udp_reply_matches(const struct reply *r, uint64_t id)
{
	const struct jfield *v = &r->m[RM_ID];
	if (v->kind != JK_ABSENT)
		return v->kind == JK_INT && (uint64_t)v->integer == id;
	return r->m[RM_OK].kind == JK_FALSE;
}

/* ---- requests ------------------------------------------------------------ */

/* {"op":OP and, unless queue is NULL, "queue":QUEUE. */
void jqc_req_begin(jq_client *c, const char *op, const char *queue)
{
	struct buf *b = &c->req;
	buf_reset(b);
	buf_adds(b, "{\"op\":\"");
	buf_adds(b, op);
	buf_addc(b, '"');
	if (queue) {
		buf_adds(b, ",\"queue\":");
		json_append_string(b, queue, strlen(queue));
	}
}

void jqc_req_u64(jq_client *c, const char *key, uint64_t v)
{
	buf_adds(&c->req, ",\"");
	buf_adds(&c->req, key);
	buf_adds(&c->req, "\":");
	buf_add_u64(&c->req, v);
}

/* ,"key":SECONDS; seconds must be a finite number >= 0. */
int jqc_req_seconds(jq_client *c, const char *key, double s,
                           struct jq_error *err)
{
	char num[40];
	if (!isfinite(s) || s < 0)
		return jqc_fail(err, JQ_ERR_ARGUMENT, "%s must be a number of seconds "
		                ">= 0", key);
	/* 15 digits: 0.2 goes out as 0.2, not 0.20000000000000001. */
	snprintf(num, sizeof num, "%.15g", s);
	buf_adds(&c->req, ",\"");
	buf_adds(&c->req, key);
	buf_adds(&c->req, "\":");
	buf_adds(&c->req, num);
	return JQ_OK;
}

/* The block and timeout fields of wait w (NULL: block for ever). */
int jqc_req_wait(jq_client *c, const struct jq_wait *w,
                        struct jq_error *err)
{
	if (!w)
		return JQ_OK;
	if (!w->block) {
		buf_adds(&c->req, ",\"block\":false");
		return JQ_OK;
	}
	if (isnan(w->timeout))
		return jqc_fail(err, JQ_ERR_ARGUMENT, "timeout is not a number");
	if (w->timeout < 0 || isinf(w->timeout))
		return JQ_OK;   /* for ever */
	return jqc_req_seconds(c, "timeout", w->timeout, err);
}

/* Sends the request line p[0..len) and waits for its reply until
 * deadline.  JQ_OK with *r read, or an error as judge_reply gives it. */
int jqc_call_tcp(jq_client *c, const char *p, size_t len,
                        int64_t deadline, struct reply *r, struct jq_error *err)
{
	const char *line;
	size_t mark = c->out.len;

	buf_add(&c->out, p, len);
	if (c->out.failed) {
		c->out.failed = false;
		return jqc_out_of_memory(err, "queueing the request");
	}
	/* A failure to write is reported by tcp_next_line, after any reply
	 * that came before it (frame_too_large, say). */
	c->req_written = jqc_tcp_flush(c, err) == JQ_OK || c->out_off > mark;
	if (jqc_tcp_next_line(c, deadline, &line, &len, err) ||
	    jqc_parse_reply(c, line, len, r, err))
		return err->code;
	return jqc_judge_reply(c, r, err);
}

static int call_udp(jq_client *c, int64_t deadline, struct reply *r,
                    struct jq_error *err)
{
	uint64_t id = c->next_id++;
	const char *data;
	size_t len;

	jqc_req_u64(c, "id", id);
	if (c->token) {
		buf_adds(&c->req, ",\"token\":");
		json_append_string(&c->req, c->token, strlen(c->token));
	}
	buf_addc(&c->req, '}');
	if (c->req.failed)
		return jqc_out_of_memory(err, "building the request");
	if (jqc_udp_send(c, c->req.p, c->req.len, err))
		return err->code;
	do {
		if (jqc_udp_recv(c, deadline, &data, &len, err) ||
		    jqc_parse_reply(c, data, len, r, err))
			return err->code;
	} while (!udp_reply_matches(r, id));
	return jqc_judge_reply(c, r, err);
}

/* Finishes the request in c->req, sends it, and decodes its reply, waiting
 * as long as wait w allows. */
int jqc_call(jq_client *c, const struct jq_wait *w, struct reply *r,
                    struct jq_error *err)
{
	memset(r, 0, sizeof *r);
	if (c->broken.code && c->fo.n < 2) {
		*err = c->broken;
		return err->code;
	}
	if (c->shut)
		return jqc_fail(err, JQ_ERR_ARGUMENT, "the sending side is shut down");
	int64_t deadline = jqc_reply_deadline(c, w);
	if (c->transport == JQ_UDP)
		return call_udp(c, deadline, r, err);
	buf_addc(&c->req, '}');
	buf_addc(&c->req, '\n');
	if (c->req.failed)
		return jqc_out_of_memory(err, "building the request");
	if (c->fo.n > 1)
		return jqc_call_failover(c, w, r, err);
	return jqc_call_tcp(c, c->req.p, c->req.len, deadline, r, err);
}

/* An unsigned integer member of a reply, or JQ_ERR_PROTOCOL. */
int jqc_reply_u64_field(const jq_client *c, const struct reply *r,
                               enum reply_member k, uint64_t *v,
                               struct jq_error *err)
{
	const struct jfield *f = &r->m[k];
	if (f->kind != JK_INT || f->integer < 0)
		return jqc_fail(err, JQ_ERR_PROTOCOL, "%s sent a reply without a "
		                "number '%s'", c->peer, reply_names[k]);
	if (v)
		*v = (uint64_t)f->integer;
	return JQ_OK;
}

int jqc_reply_bool_field(const jq_client *c, const struct reply *r,
                                enum reply_member k, bool *v,
                                struct jq_error *err)
{
	const struct jfield *f = &r->m[k];
	if (f->kind != JK_TRUE && f->kind != JK_FALSE)
		return jqc_fail(err, JQ_ERR_PROTOCOL, "%s sent a reply without a "
		                "boolean '%s'", c->peer, reply_names[k]);
	*v = f->kind == JK_TRUE;
	return JQ_OK;
}
