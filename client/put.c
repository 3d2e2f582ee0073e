/*
 * put.c - `joinq put`: items from the arguments or from stdin, one a
 * line.  From stdin over TCP it pipelines: up to WINDOW requests stay in
 * flight, so a million lines take seconds rather than a million round
 * trips.  put --join then waits as `joinq join` does (join.c).
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "buf.h"
#include "cli.h"
#include "commands.h"
#include "jobject.h"
#include "joinq.h"
#include "reply.h"
#include "utf8.h"
#include "xalloc.h"

#define WINDOW 1024                 /* put requests in flight at most */
#define WINDOW_BYTES (512u << 10)   /* and their bytes at most */
#define READ_CHUNK 65536
#define WHY_MAX 256                 /* why an item is bad */

/* ---- put: items --------------------------------------------------------- */

/* Where items come from: the arguments, or stdin one per line. */
struct items {
	char **argv;                /* NULL: read stdin */
	int argc, next_arg;
	const char *unit;           /* "item" or "line", for messages */
	uint64_t number;            /* of the item last taken, from 1 */

	struct buf in;              /* stdin bytes read, not yet taken */
	size_t in_off;
	bool eof;
};

/* True if the next item can be taken without waiting for stdin. */
static bool items_ready(struct items *it)
{
	size_t avail = it->in.len - it->in_off;
	if (it->argv || it->eof ||
	    (avail && memchr(it->in.p + it->in_off, '\n', avail)))
		return true;
	struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
	return poll(&p, 1, 0) != 0;
}

/* The next item's text.  Returns 1, 0 at the end, -1 on a read error. */
static int items_next(struct items *it, const char **text, size_t *len)
{
	if (it->argv) {
		if (it->next_arg >= it->argc)
			return 0;
		*text = it->argv[it->next_arg++];
		*len = strlen(*text);
		it->number++;
		return 1;
	}
	for (;;) {
		char *p = it->in.p + it->in_off;
		size_t avail = it->in.len - it->in_off;
		char *lf = avail ? memchr(p, '\n', avail) : NULL;
		if (lf || (it->eof && avail)) {
			size_t n = lf ? (size_t)(lf - p) : avail;
			it->in_off += lf ? n + 1 : n;
			if (n && p[n - 1] == '\r')
				n--;
			*text = p;
			*len = n;
			it->number++;
			return 1;
		}
		if (it->eof)
			return 0;
		/* Keep the partial line, drop what was taken, read more. */
		buf_consume(&it->in, it->in_off);
		it->in_off = 0;
		buf_reserve(&it->in, READ_CHUNK);
		ssize_t r = read(STDIN_FILENO, it->in.p + it->in.len, READ_CHUNK);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			it->eof = true;
		it->in.len += (size_t)r;
	}
}

/*
 * Appends item text[0..len) as JSON to b: a string item is quoted, a --json
 * item is checked and packed onto one line, its numbers as the user spelt
 * them (0.1 stays 0.1).  On a bad item returns false with why filled.
 */
static bool encode_item(struct buf *b, const char *text, size_t len,
                        bool json, char *why, size_t why_len)
{
	size_t bad;
	if (!utf8_valid(text, len, &bad)) {
		snprintf(why, why_len, "not valid UTF-8 (byte %zu)", bad + 1);
		return false;
	}
	if (!json) {
		json_append_string(b, text, len);
		return true;
	}
	char jwhy[160];
	if (jvalue_check(text, len, UINT_MAX, jwhy, sizeof jwhy)) {
		/* jwhy: "is not valid JSON: ..." */
		snprintf(why, why_len, "%s", jwhy + strlen("is "));
		return false;
	}
	buf_reserve(b, len);
	b->len += jtext_compact(text, len, b->p + b->len);
	return true;
}

/* ---- put: the pipeline -------------------------------------------------- */

struct pipeline {
	jq_client *c;
	const struct jq_wait *wait;
	bool show_task;
	const char *unit;
	uint64_t sent, answered;    /* requests; reply k answers item k */
	size_t sizes[WINDOW];       /* bytes of the requests in flight */
	size_t bytes;
	struct jq_error first;      /* the first error reply; code 0: none */
	uint64_t first_at;          /* its item number */
	uint64_t failed;            /* error replies in all */
	struct jq_error lost;       /* the connection failed; code 0: fine */
};

static void print_task_of(const char *reply)
{
	json_t *r = json_loads(reply, JSON_ALLOW_NUL, NULL);
	json_t *task = json_object_get(r, "task");
	if (json_is_integer(task))
		printf("%lld\n", (long long)json_integer_value(task));
	json_decref(r);
}

/* Reads the reply of the oldest request in flight. */
static void pipeline_recv(struct pipeline *pl)
{
	struct jq_error err;
	char *reply = NULL;
	int code = jq_recv(pl->c, pl->wait, pl->show_task ? &reply : NULL, NULL,
	                   &err);

	if (code >= JQ_ERR_SYSTEM) {
		pl->lost = err;
		return;
	}
	pl->answered++;
	pl->bytes -= pl->sizes[pl->answered % WINDOW];
	if (code == JQ_OK) {
		if (pl->show_task)
			print_task_of(reply);
	} else if (pl->failed++ == 0) {
		pl->first = err;
		pl->first_at = pl->answered;
	}
	free(reply);
}

/* Reads every reply still owed. */
static void pipeline_drain(struct pipeline *pl)
{
	while (pl->answered < pl->sent && !pl->lost.code)
		pipeline_recv(pl);
	if (pl->show_task)
		fflush(stdout);
}

/* Sends one request, first making room in the window. */
static void pipeline_send(struct pipeline *pl, const struct buf *req)
{
	struct jq_error err;
	while (!pl->lost.code && !pl->failed && pl->answered < pl->sent &&
	       (pl->sent - pl->answered >= WINDOW ||
	        pl->bytes + req->len > WINDOW_BYTES))
		pipeline_recv(pl);
	if (pl->lost.code || pl->failed)
		return;
	if (jq_send(pl->c, req->p, req->len, &err)) {
		pl->lost = err;
		return;
	}
	pl->sent++;
	pl->sizes[pl->sent % WINDOW] = req->len;
	pl->bytes += req->len;
}

/* {"op":"put","queue":Q and the wait fields: the part every put shares. */
static void put_prefix(struct buf *b, const struct session *s,
                       const struct jq_wait *w)
{
	char num[40];
	buf_adds(b, "{\"op\":\"put\"");
	if (s->queue) {
		buf_adds(b, ",\"queue\":");
		json_append_string(b, s->queue, strlen(s->queue));
	}
	if (!w->block) {
		buf_adds(b, ",\"block\":false");
	} else if (w->timeout >= 0) {
		snprintf(num, sizeof num, ",\"timeout\":%.15g", w->timeout);
		buf_adds(b, num);
	}
	buf_adds(b, ",\"item\":");
}

/*
 * Puts every item over TCP, WINDOW at a time in flight.  Before waiting
 * on stdin it reads every reply owed, so that a slow producer (tail -f)
 * sees its items queued, and errors reported, without delay.  On the first
 * error reply it stops sending and shuts its side down: the daemon then
 * answers what is still in flight at once instead of letting each put wait
 * out its timeout.
 */
static int put_pipelined(const struct session *s, const struct cmd_options *o,
                         struct items *it, jq_client *c)
{
	struct pipeline *pl = xcalloc(1, sizeof *pl);
	struct buf req = { 0 };
	size_t prefix_len;
	const char *text;
	size_t len;
	char why[WHY_MAX] = "";
	uint64_t bad_at = 0;        /* the item that could not be encoded */
	int r, status = EXIT_OK;

	pl->c = c;
	pl->wait = &o->wait;
	pl->show_task = o->show_task;
	put_prefix(&req, s, &o->wait);
	prefix_len = req.len;

	while (!pl->lost.code && !pl->failed) {
		if (!items_ready(it)) {
			struct jq_error err;
			if (jq_flush(c, &err))
				pl->lost = err;
			pipeline_drain(pl);
			if (pl->lost.code || pl->failed)
				break;
		}
		if ((r = items_next(it, &text, &len)) <= 0) {
			if (r < 0) {
				fprintf(stderr, "joinq: put: cannot read stdin: %s\n",
				        strerror(errno));
				status = EXIT_ERROR;
			}
			break;
		}
		req.len = prefix_len;
		if (!encode_item(&req, text, len, o->json, why, sizeof why)) {
			bad_at = it->number;
			break;
		}
		buf_addc(&req, '}');
		pipeline_send(pl, &req);
	}

	if (pl->failed && !pl->lost.code) {
		struct jq_error err;
		if (jq_shutdown(c, &err))
			pl->lost = err;
	}
	pipeline_drain(pl);

	if (pl->failed) {
		char where[48];
		snprintf(where, sizeof where, "%s %llu", it->unit,
		         (unsigned long long)pl->first_at);
		status = report(where, &pl->first);
		if (pl->failed > 1)
			fprintf(stderr, "joinq: %llu later %s%s failed too\n",
			        (unsigned long long)(pl->failed - 1), it->unit,
			        pl->failed > 2 ? "s" : "");
	}
	/* A connection lost after the first error and its last reply
	 * changes nothing worth saying. */
	if (pl->lost.code && (!pl->failed || pl->answered < pl->sent)) {
		int st = report(NULL, &pl->lost);
		/* JQ_ERR_CONNECT: refused before the daemon read a request. */
		if (pl->answered < pl->sent)
			fprintf(stderr, "joinq: %ss %llu to %llu %s been queued\n",
			        it->unit, (unsigned long long)pl->answered + 1,
			        (unsigned long long)pl->sent,
			        pl->lost.code == JQ_ERR_CONNECT ? "have not" :
			        "may or may not have");
		if (!status)
			status = st;
	}
	if (bad_at) {
		fprintf(stderr, "joinq: %s %llu: %s; it and what follows were not "
		        "sent\n", it->unit, (unsigned long long)bad_at, why);
		if (!status)
			status = EXIT_USAGE;
	}
	buf_free(&req);
	free(pl);
	return status;
}

/* Over UDP every put is a datagram and its reply; one at a time.  So
 * with several addresses, for jq_put to fail over. */
static int put_one_by_one(const struct session *s, const struct cmd_options *o,
                          struct items *it, jq_client *c)
{
	struct buf item = { 0 };
	struct jq_error err;
	const char *text;
	size_t len;
	char why[WHY_MAX], where[48];
	int r, status = EXIT_OK;

	while ((r = items_next(it, &text, &len)) > 0) {
		uint64_t task;
		snprintf(where, sizeof where, "%s %llu", it->unit,
		         (unsigned long long)it->number);
		buf_reset(&item);
		if (!encode_item(&item, text, len, o->json, why, sizeof why)) {
			fprintf(stderr, "joinq: %s: %s; it and what follows were not "
			        "sent\n", where, why);
			status = EXIT_USAGE;
			break;
		}
		if (jq_put(c, s->queue, item.p, item.len, &o->wait, &task, &err)) {
			status = report(where, &err);
			break;
		}
		if (o->show_task)
			printf("%llu\n", (unsigned long long)task);
	}
	if (r < 0) {
		fprintf(stderr, "joinq: put: cannot read stdin: %s\n",
		        strerror(errno));
		status = EXIT_ERROR;
	}
	buf_free(&item);
	return status;
}

int cmd_put(struct session *s, const struct cmd_options *o, int argc,
            char **argv)
{
	struct items it = { .unit = argc ? "item" : "line" };
	int status;

	if (!o->join && o->join_timeout >= 0)
		return usage_error(s->cmd, "--join-timeout needs --join");
	if (!o->join && o->progress)
		return usage_error(s->cmd, "--progress needs --join");
	if (argc) {
		/* Check every argument before anything is sent. */
		struct buf scratch = { 0 };
		char why[WHY_MAX];
		for (int i = 0; i < argc; i++) {
			buf_reset(&scratch);
			if (!encode_item(&scratch, argv[i], strlen(argv[i]), o->json,
			                 why, sizeof why)) {
				buf_free(&scratch);
				return usage_error(s->cmd, "item %d is %s", i + 1,
				                   why);
			}
		}
		buf_free(&scratch);
		it.argv = argv;
		it.argc = argc;
	}

	/* A put that may wait for room for ever may also find the daemon not
	 * reading our pipeline for that long: no I/O limit then (TCP). */
	if (o->wait.block && o->wait.timeout < 0)
		s->opt.io_timeout = 0;
	jq_client *c = open_client(s, &status);
	if (!c)
		return status;
	/* Over UDP, and with several daemons (libjoinq moves each put to the
	 * active one, and says when a put's outcome is unknown), one by one. */
	if (s->opt.transport == JQ_UDP || (s->opt.host &&
	                                   strchr(s->opt.host, ',')))
		status = put_one_by_one(s, o, &it, c);
	else
		status = put_pipelined(s, o, &it, c);
	/* Only once every item is in: a join after a failed put would wait
	 * for tasks that were never queued, or for ever. */
	if (o->join && status == EXIT_OK) {
		struct jq_wait w = { .block = true, .timeout = o->join_timeout };
		status = join_queue(s, c, &w, o->progress);
	}
	jq_close(c);
	buf_free(&it.in);
	return status;
}

