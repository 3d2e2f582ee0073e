/*
 * libjoinq_oom.c - libjoinq when memory runs out, and its items as sent.
 * Run by tests/integration/test_libjoinq.py against a joinqd:
 *
 *     libjoinq_oom HOST PORT
 *
 * It holds its own copy of libjoinq and of the proto code (linked with
 * -Wl,--wrap for malloc, calloc, realloc and strdup; jansson's allocator
 * is set to the same counting one), so that the allocation after the
 * first N fails.  For each transport it runs one session of every call
 * with no limit, checking that items come back byte for byte as put (0.1,
 * 1e300, integers beyond 64 bits); then the same session again for N = 0,
 * 1, 2, ... until a session runs through without reaching its limit.
 * Every call must return, never abort; a call during which an allocation
 * failed must fail, and JQ_ERR_NOMEM only when one did.  What the
 * sanitizers see (leaks included) fails the run too.  Prints one line a
 * transport and exits 0 when all held, else 1 with the failed check.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "joinq.h"

#define MAX_SESSIONS 2000   /* far above the allocations of one session */

/* The names the linker's --wrap gives: reserved, on purpose. */
/* NOLINTBEGIN(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp) */
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);

static long budget = -1;     /* allocations left to grant; -1: no limit */
static long refused;         /* allocations refused so far */

static bool grant(void)
{
	if (budget < 0)
		return true;
	if (budget == 0) {
		refused++;
		return false;
	}
	budget--;
	return true;
}

void *__wrap_malloc(size_t n) { return grant() ? __real_malloc(n) : NULL; }
void *__wrap_calloc(size_t n, size_t size)
{
	return grant() ? __real_calloc(n, size) : NULL;
}
void *__wrap_realloc(void *p, size_t n)
{
	return grant() ? __real_realloc(p, n) : NULL;
}
char *__wrap_strdup(const char *s) { return grant() ? __real_strdup(s) : NULL; }
/* NOLINTEND(bugprone-reserved-identifier,cert-dcl37-c,cert-dcl51-cpp) */

static void *json_alloc(size_t n) { return grant() ? __real_malloc(n) : NULL; }

static int failures;
static bool nomem_seen;      /* a call of this session said JQ_ERR_NOMEM */

#define CHECK(cond, ...) \
	do { \
		if (!(cond)) { \
			fprintf(stderr, "libjoinq_oom.c:%d: %s: ", __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__); \
			fputc('\n', stderr); \
			failures++; \
		} \
	} while (0)

/* One call's outcome: with allocations refused during it, it must fail;
 * JQ_ERR_NOMEM only then. */
static void judge(const char *what, long refused_before, int code,
                  const struct jq_error *err)
{
	bool hit = refused > refused_before;
	CHECK(!hit || code != JQ_OK, "%s succeeded though memory ran out",
	      what);
	/* A TCP stream broken by one says so again on every later call. */
	CHECK(code != JQ_ERR_NOMEM || hit || nomem_seen, "%s says nomem, but "
	      "nothing was refused: %s", what, err->message);
	nomem_seen |= code == JQ_ERR_NOMEM;
	CHECK(code == JQ_OK || err->code == code, "%s: err holds %d, not %d",
	      what, err->code, code);
}

#define CALL(what, expr) \
	do { \
		long before_ = refused; \
		code = (expr); \
		judge(what, before_, code, &err); \
	} while (0)

/* Items as put, and as the daemon gives them back (compacted). */
static const char *const items[][2] = {
	{ "0.1", "0.1" },
	{ "1e300", "1e300" },
	{ "1180591620717411303424", "1180591620717411303424" },
	{ " [ -1180591620717411303424 , { \"r\" : 0.1 } ] ",
	  "[-1180591620717411303424,{\"r\":0.1}]" },
};
#define NITEMS (sizeof items / sizeof *items)

/* Every call once, on queue q; exact: no limit is set, so every call must
 * succeed and items come back as put. */
static void session(const char *host, const char *port,
                    enum jq_transport transport, const char *q, bool exact)
{
	struct jq_options o = JQ_OPTIONS_INIT;
	struct jq_error err;
	struct jq_wait nowait = { .block = false, .timeout = 0 };
	int code;
	jq_client *c;

	nomem_seen = false;
	o.host = host;
	o.port = port;
	o.transport = transport;
	long before = refused;
	c = jq_connect(&o, &err);
	judge("jq_connect", before, c ? JQ_OK : err.code, &err);
	if (!c)
		return;

	for (size_t i = 0; i < NITEMS; i++) {
		uint64_t task;
		CALL("jq_put", jq_put(c, q, items[i][0], strlen(items[i][0]),
		                      &nowait, &task, &err));
		CHECK(!exact || code == JQ_OK, "put %s: %s", items[i][0],
		      err.message);
	}
	CALL("jq_put_string", jq_put_string(c, q, "s\"tring", &nowait, NULL,
	                                    &err));
	for (size_t i = 0; i < NITEMS; i++) {
		struct jq_task t;
		CALL("jq_get", jq_get(c, q, &nowait, 60, &t, &err));
		if (exact) {
			CHECK(code == JQ_OK && strcmp(t.item, items[i][1]) == 0,
			      "got %s, want %s (%s)", code ? "nothing" : t.item,
			      items[i][1], err.message);
		}
		if (code == JQ_OK) {
			uint64_t left;
			CALL("jq_task_done", jq_task_done(c, t.task, &left, &err));
		} else {
			CHECK(t.item == NULL, "a failed get leaves an item");
		}
		jq_task_free(&t);
	}
	struct jq_task t;
	CALL("jq_get", jq_get(c, q, &nowait, 60, &t, &err));
	CHECK(!exact || (code == JQ_OK && strcmp(t.item, "\"s\\\"tring\"") == 0),
	      "the string item: %s", code ? err.message : t.item);
	if (code == JQ_OK)
		CALL("jq_release", jq_release(c, t.task, 0, &err));
	jq_task_free(&t);

	struct jq_qsize qs;
	CALL("jq_qsize", jq_qsize(c, q, &qs, &err));
	char version[64];
	CALL("jq_ping", jq_ping(c, version, sizeof version, &err));
	char *stats;
	CALL("jq_stats", jq_stats(c, &stats, &err));
	CHECK(code == JQ_OK || stats == NULL, "failed stats leave text");
	free(stats);

	/* Raw requests: the item text goes and comes as it is. */
	char req[160];
	snprintf(req, sizeof req, "{\"op\":\"put\",\"queue\":\"%s\","
	         "\"item\":[1e300,0.1]}", q);
	CALL("jq_send", jq_send(c, req, strlen(req), &err));
	if (code == JQ_OK)
		CALL("jq_flush", jq_flush(c, &err));
	if (code == JQ_OK) {
		char *reply;
		size_t len;
		CALL("jq_recv", jq_recv(c, &nowait, &reply, &len, &err));
		CHECK(!exact || code == JQ_OK, "raw put: %s", err.message);
		free(reply);
	}
	CALL("jq_join", jq_join(c, q, &nowait, &err));

	/* A queue of its own declared, purged and deleted (the same settings
	 * each session, so that one left by a failed session is found). */
	char dq[128];
	struct jq_declare d = JQ_DECLARE_INIT;
	struct jq_settings set;
	uint64_t purged;
	bool deleted;
	snprintf(dq, sizeof dq, "%s.d", q);
	d.has_maxsize = true;
	d.maxsize = 5;
	d.dead_letter = "s\"d";   /* escaped, and no name: bad_queue */
	CALL("jq_declare", jq_declare(c, dq, &d, &set, &err));
	CHECK(code != JQ_OK, "a bad dead_letter was taken");
	d.dead_letter = NULL;
	CALL("jq_declare", jq_declare(c, dq, &d, &set, &err));
	CHECK(!exact || (code == JQ_OK && set.maxsize == 5 &&
	                 set.dead_letter[0] != '\0'),
	      "declare: %s", err.message);
	CALL("jq_purge", jq_purge(c, dq, &purged, &err));
	CALL("jq_delete", jq_delete(c, dq, &deleted, &err));
	CHECK(!exact || (code == JQ_OK && deleted), "delete: %s", err.message);
	CALL("jq_shutdown", jq_shutdown(c, &err));
	jq_close(c);
}

static int run(const char *host, const char *port, enum jq_transport tr)
{
	const char *name = tr == JQ_TCP ? "tcp" : "udp";
	char q[64];
	long n;

	long before = refused;
	budget = 1L << 40;        /* no limit, but counted */
	snprintf(q, sizeof q, "oom-%s-exact", name);
	session(host, port, tr, q, true);
	long used = (1L << 40) - budget;
	if (refused != before)
		return fprintf(stderr, "allocations refused with no limit\n"), 1;
	fprintf(stderr, "%s: a session makes %ld allocations\n", name, used);
	for (n = 0; n < MAX_SESSIONS; n++) {
		before = refused;
		budget = n;
		/* one queue for them all: stats grow with the queues */
		snprintf(q, sizeof q, "oom-%s", name);
		session(host, port, tr, q, false);
		budget = -1;
		if (refused == before)
			break;          /* the limit was never reached: done */
	}
	CHECK(n < MAX_SESSIONS, "every session ran out of memory");
	printf("%s: items as put; %ld sessions, each with its allocation "
	       "N failing, %ld allocations refused\n", name, n, refused);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: libjoinq_oom HOST PORT\n");
		return 2;
	}
	json_set_alloc_funcs(json_alloc, free);
	run(argv[1], argv[2], JQ_TCP);
	run(argv[1], argv[2], JQ_UDP);
	return failures ? 1 : 0;
}
