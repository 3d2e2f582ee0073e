/*
 * jsapi.c - JetStream's JSON API, asynchronously (see jsapi.h).  The
 * subjects and fields are those of nats-server 2.9's jetstream_api.go.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsapi.h"
#include "store.h"

#define DUPLICATE_WINDOW_NS INT64_C(120000000000)   /* Nats-Msg-Id memory */

void jsapi_init(struct jsapi *a, struct natsconn *nc, const char *stream,
                void *ctx)
{
	*a = (struct jsapi){ .nc = nc, .stream = stream, .ctx = ctx };
}

int jsapi_request(struct jsapi *a, const char *verb, const char *tail,
                  json_t *body, jsapi_done *done, unsigned arg)
{
	char subject[400], suffix[40];
	struct jsapi_call *c = NULL;
	for (int i = 0; i < JSAPI_MAX && !c && done; i++)
		if (!a->calls[i].token)
			c = &a->calls[i];
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	if (done && !c) {
		free(text);
		return -1;
	}
	snprintf(subject, sizeof subject, "$JS.API.%s.%s%s%s", verb, a->stream,
	         tail ? "." : "", tail ? tail : "");
	if (c) {
		*c = (struct jsapi_call){ ++a->token,
		                          store_clock_ms() + JSAPI_WAIT_MS, done,
		                          arg };
		snprintf(suffix, sizeof suffix, "r.%" PRIu64, c->token);
	}
	natsStatus st = natsconn_send(a->nc, subject, c ? suffix : NULL, text,
	                              text ? strlen(text) : 0);
	free(text);
	if (c && st != NATS_OK)
		c->deadline = 0;   /* lost at once: the next expiry says so */
	return 0;
}

void jsapi_reply(struct jsapi *a, const char *token, natsMsg *m)
{
	uint64_t t = strtoull(token, NULL, 10);
	for (int i = 0; i < JSAPI_MAX; i++) {
		struct jsapi_call *c = &a->calls[i];
		if (!t || c->token != t)
			continue;
		c->token = 0;
		json_t *reply = natsMsg_IsNoResponders(m) ? NULL :
		                json_loadb(natsMsg_GetData(m),
		                           (size_t)natsMsg_GetDataLength(m), 0, NULL);
		c->done(a->ctx, reply, c->arg);
		json_decref(reply);
		return;
	}
}

void jsapi_expire(struct jsapi *a, uint64_t now)
{
	for (int i = 0; i < JSAPI_MAX; i++) {
		struct jsapi_call *c = &a->calls[i];
		if (c->token && now >= c->deadline) {
			c->token = 0;
			c->done(a->ctx, NULL, c->arg);
		}
	}
}

int jsapi_error(json_t *reply, const char **desc)
{
	json_t *e = json_object_get(reply, "error");
	*desc = json_string_value(json_object_get(e, "description"));
	if (!*desc)
		*desc = "no description";
	return e ? (int)json_integer_value(json_object_get(e, "err_code")) : 0;
}

json_t *jsapi_stream_config(const char *stream, const char *subject,
                            unsigned replicas)
{
	return json_pack("{s:s, s:[s], s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:s, "
	                 "s:b, s:b, s:s, s:I}",
	                 "name", stream, "subjects", subject,
	                 "retention", "limits", "storage", "file",
	                 "num_replicas", (int)replicas,
	                 "max_msgs", -1, "max_bytes", -1, "max_age", 0,
	                 "max_msg_size", -1, "discard", "old",
	                 "deny_delete", 1, "deny_purge", 0,
	                 "description", "joinq journal",
	                 "duplicate_window", (json_int_t)DUPLICATE_WINDOW_NS);
}

/* Limits would drop journal records; other retentions delete them. */
const char *jsapi_unfit(json_t *cfg, const char *subject, char *why,
                        size_t len)
{
	const char *retention = json_string_value(json_object_get(cfg,
	                                                          "retention"));
	const char *storage = json_string_value(json_object_get(cfg, "storage"));
	bool has_subject = false;
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(cfg, "subjects"), i, v)
		has_subject |= json_string_value(v) &&
		               !strcmp(json_string_value(v), subject);
	if (!retention || strcmp(retention, "limits") != 0)
		snprintf(why, len, "its retention is %s; a journal needs limits",
		         retention ? retention : "unknown");
	else if (!storage || strcmp(storage, "file") != 0)
		snprintf(why, len, "its storage is %s; a journal needs file",
		         storage ? storage : "unknown");
	else if (!has_subject)
		snprintf(why, len, "it does not take subject %s", subject);
	else if (json_integer_value(json_object_get(cfg, "max_msgs")) > 0 ||
	         json_integer_value(json_object_get(cfg, "max_bytes")) > 0 ||
	         json_integer_value(json_object_get(cfg, "max_age")) > 0 ||
	         json_integer_value(json_object_get(cfg,
	                                            "max_msgs_per_subject")) > 0)
		snprintf(why, len, "it has limits (max_msgs, max_bytes, max_age or "
		         "max_msgs_per_subject) that would drop records");
	else if (json_is_true(json_object_get(cfg, "sealed")) ||
	         json_is_true(json_object_get(cfg, "deny_purge")))
		snprintf(why, len, "it is sealed or denies purges");
	else
		return NULL;
	return why;
}

json_t *jsapi_consumer(const char *stream, const char *deliver,
                       uint64_t from, unsigned heartbeat_ms)
{
	json_t *cfg = json_pack("{s:s, s:s, s:s, s:b, s:I, s:b, s:i}",
	                        "deliver_subject", deliver,
	                        "ack_policy", "none", "replay_policy", "instant",
	                        "flow_control", 1,
	                        "idle_heartbeat",
	                        (json_int_t)heartbeat_ms * 1000000,
	                        "mem_storage", 1, "num_replicas", 1);
	if (from > 1) {
		json_object_set_new(cfg, "deliver_policy",
		                    json_string("by_start_sequence"));
		json_object_set_new(cfg, "opt_start_seq",
		                    json_integer((json_int_t)from));
	} else {
		json_object_set_new(cfg, "deliver_policy", json_string("all"));
	}
	return json_pack("{s:s, s:o}", "stream_name", stream, "config", cfg);
}

/* $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>,
 * or with <domain>.<account hash> before the stream and a token after. */
bool jsapi_delivery(const char *reply, uint64_t *sseq, uint64_t *dseq,
                    uint64_t *pending)
{
	const char *tok[16];
	int n = 0;
	if (!reply || strncmp(reply, "$JS.ACK.", 8) != 0)
		return false;
	for (const char *p = reply; p && n < 16; p = strchr(p, '.'))
		tok[n++] = *p == '.' ? ++p : p;
	int base = n == 9 ? 4 : n >= 12 ? 6 : -1;
	if (base < 0)
		return false;
	*sseq = strtoull(tok[base + 1], NULL, 10);
	*dseq = strtoull(tok[base + 2], NULL, 10);
	*pending = strtoull(tok[base + 4], NULL, 10);
	return true;
}
