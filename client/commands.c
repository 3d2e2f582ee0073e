/*
 * commands.c - joinq's one-request commands: get, task_done, release,
 * join, qsize, empty, full, ping, stats, declare, purge and delete; how
 * each asks, and how it prints the answer.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "buf.h"
#include "cli.h"
#include "commands.h"
#include "joinq.h"
#include "jscan.h"
#include "reply.h"
#include "xalloc.h"

/* task_done and release: TASK, a task id (digits only, positive, below
 * 2^53: PROTOCOL.md), and a client.  NULL with *status set when either
 * fails. */
static jq_client *open_for_task(const struct session *s, const char *arg,
                                uint64_t *task, int *status)
{
	if (!parse_count(arg, 1, (UINT64_C(1) << 53) - 1, task)) {
		*status = usage_error(s->cmd, "TASK must be a positive integer "
		                      "below 2^53, not '%s'", arg);
		return NULL;
	}
	return open_client(s, status);
}

/* ---- the other commands ------------------------------------------------- */

int cmd_get(struct session *s, const struct cmd_options *o, int argc,
            char **argv)
{
	struct jq_task t;
	struct jq_error err;
	int status;

	(void)argc;
	(void)argv;
	jq_client *c = open_client(s, &status);
	if (!c)
		return status;
	if (jq_get(c, s->queue, &o->wait, o->lease, &t, &err)) {
		jq_close(c);
		return report(NULL, &err);
	}
	if (o->show_task)
		printf("%llu\t", (unsigned long long)t.task);
	/* A string prints as its text, so that `item=$(joinq get)` needs no
	 * JSON decoding; anything else prints as the daemon sent it. */
	if (t.item[0] == '"') {
		/* decoded, it is never longer than its JSON text */
		size_t n = jstring_unescape(t.item + 1, t.item_len - 2, t.item,
		                            t.item_len);
		fwrite(t.item, 1, n, stdout);
	} else {
		fwrite(t.item, 1, t.item_len, stdout);
	}
	putchar('\n');
	if (!o->show_task)
		fprintf(stderr, "task %llu\n", (unsigned long long)t.task);
	jq_task_free(&t);
	jq_close(c);
	return EXIT_OK;
}

int cmd_task_done(struct session *s, const struct cmd_options *o,
                  int argc, char **argv)
{
	struct jq_error err;
	uint64_t task, unfinished;
	int status = EXIT_OK;

	(void)argc;
	jq_client *c = open_for_task(s, argv[0], &task, &status);
	if (!c)
		return status;
	if (jq_task_done(c, task, &unfinished, &err))
		status = report(NULL, &err);
	else if (o->verbose)
		printf("unfinished %llu\n", (unsigned long long)unfinished);
	jq_close(c);
	return status;
}

int cmd_release(struct session *s, const struct cmd_options *o,
                int argc, char **argv)
{
	struct jq_error err;
	uint64_t task;
	int status = EXIT_OK;

	(void)argc;
	jq_client *c = open_for_task(s, argv[0], &task, &status);
	if (!c)
		return status;
	if (jq_release(c, task, o->delay, &err))
		status = report(NULL, &err);
	jq_close(c);
	return status;
}

int cmd_join(struct session *s, const struct cmd_options *o, int argc,
             char **argv)
{
	int status = EXIT_OK;

	(void)argc;
	(void)argv;
	jq_client *c = open_client(s, &status);
	if (!c)
		return status;
	status = join_queue(s, c, &o->wait, o->progress);
	jq_close(c);
	return status;
}

/* qsize, empty and full: one reply, three views. */
static int show_qsize(struct session *s, const struct cmd_options *o,
                      const char *view)
{
	struct jq_error err;
	struct jq_qsize q;
	int status = EXIT_OK;

	jq_client *c = open_client(s, &status);
	if (!c)
		return status;
	if (jq_qsize(c, s->queue, &q, &err)) {
		status = report(NULL, &err);
	} else if (!strcmp(view, "empty")) {
		puts(q.empty ? "true" : "false");
	} else if (!strcmp(view, "full")) {
		puts(q.full ? "true" : "false");
	} else if (o->json) {
		printf("{\"qsize\":%llu,\"maxsize\":%llu,\"unfinished\":%llu,"
		       "\"inflight\":%llu,\"delayed\":%llu,"
		       "\"dead_lettered\":%llu,\"empty\":%s,\"full\":%s}\n",
		       (unsigned long long)q.qsize,
		       (unsigned long long)q.maxsize,
		       (unsigned long long)q.unfinished,
		       (unsigned long long)q.inflight,
		       (unsigned long long)q.delayed,
		       (unsigned long long)q.dead_lettered,
		       q.empty ? "true" : "false", q.full ? "true" : "false");
	} else {
		printf("qsize %llu maxsize %llu unfinished %llu inflight %llu "
		       "delayed %llu dead_lettered %llu\n",
		       (unsigned long long)q.qsize,
		       (unsigned long long)q.maxsize,
		       (unsigned long long)q.unfinished,
		       (unsigned long long)q.inflight,
		       (unsigned long long)q.delayed,
		       (unsigned long long)q.dead_lettered);
	}
	jq_close(c);
	return status;
}

int cmd_qsize(struct session *s, const struct cmd_options *o,
              int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return show_qsize(s, o, "qsize");
}

int cmd_empty(struct session *s, const struct cmd_options *o,
              int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return show_qsize(s, o, "empty");
}

int cmd_full(struct session *s, const struct cmd_options *o, int argc,
             char **argv)
{
	(void)argc;
	(void)argv;
	return show_qsize(s, o, "full");
}

int cmd_ping(struct session *s, const struct cmd_options *o, int argc,
             char **argv)
{
	struct jq_error err;
	struct timespec t0, t1;
	char version[64];
	int status = EXIT_OK;

	(void)o;
	(void)argc;
	(void)argv;
	jq_client *c = open_client(s, &status);
	if (!c)
		return status;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (jq_ping(c, version, sizeof version, &err)) {
		status = report(NULL, &err);
	} else {
		clock_gettime(CLOCK_MONOTONIC, &t1);
		double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 +
		            (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
		printf("PONG joinqd %s protocol 1 in %.2f ms\n", version, ms);
	}
	jq_close(c);
	return status;
}

/* ---- declare, purge, delete --------------------------------------------- */

int cmd_declare(struct session *s, const struct cmd_options *o,
                int argc, char **argv)
{
	struct jq_error err;
	struct jq_settings q;
	int status = EXIT_OK;

	(void)argc;
	(void)argv;
	jq_client *c = open_client(s, &status);
	if (!c)
		return status;
	if (jq_declare(c, s->queue, &o->settings, &q, &err)) {
		status = report(NULL, &err);
	} else if (o->json) {
		struct buf b = { 0 };
		if (q.dead_letter[0])
			json_append_string(&b, q.dead_letter, strlen(q.dead_letter));
		else
			buf_adds(&b, "null");
		printf("{\"created\":%s,\"maxsize\":%llu,\"max_deliveries\":%llu,"
		       "\"dead_letter\":%.*s}\n", q.created ? "true" : "false",
		       (unsigned long long)q.maxsize,
		       (unsigned long long)q.max_deliveries, (int)b.len, b.p);
		buf_free(&b);
	} else {
		printf("%s maxsize %llu max_deliveries %llu dead_letter %s\n",
		       q.created ? "created" : "exists",
		       (unsigned long long)q.maxsize,
		       (unsigned long long)q.max_deliveries,
		       q.dead_letter[0] ? q.dead_letter : "-");
	}
	jq_close(c);
	return status;
}

int cmd_purge(struct session *s, const struct cmd_options *o, int argc,
              char **argv)
{
	struct jq_error err;
	uint64_t purged;
	int status = EXIT_OK;

	(void)o;
	(void)argc;
	(void)argv;
	jq_client *c = open_client(s, &status);
	if (!c)
		return status;
	if (jq_purge(c, s->queue, &purged, &err))
		status = report(NULL, &err);
	else
		printf("purged %llu\n", (unsigned long long)purged);
	jq_close(c);
	return status;
}

int cmd_delete(struct session *s, const struct cmd_options *o, int argc,
               char **argv)
{
	struct jq_error err;
	bool deleted;
	int status = EXIT_OK;

	(void)o;
	(void)argc;
	(void)argv;
	jq_client *c = open_client(s, &status);
	if (!c)
		return status;
	if (jq_delete(c, s->queue, &deleted, &err))
		status = report(NULL, &err);
	else
		puts(deleted ? "deleted" : "nothing to delete: no such queue");
	jq_close(c);
	return status;
}

/* ---- stats -------------------------------------------------------------- */

static const char *const stats_columns[] = {
	"qsize", "maxsize", "unfinished", "inflight", "delayed", "puts", "gets",
	"task_dones", "releases", "redeliveries", "dead_lettered",
};
#define NCOLUMNS (sizeof stats_columns / sizeof stats_columns[0])

static int by_name(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* "45s", "1h02m03s", "3d04h05m". */
static void format_uptime(json_t *v, char *out, size_t size)
{
	if (!json_is_integer(v)) {
		snprintf(out, size, "?");
		return;
	}
	long long t = json_integer_value(v);
	long long d = t / 86400, h = t / 3600 % 24, m = t / 60 % 60, sec = t % 60;
	if (d)
		snprintf(out, size, "%lldd%02lldh%02lldm", d, h, m);
	else if (h)
		snprintf(out, size, "%lldh%02lldm%02llds", h, m, sec);
	else if (m)
		snprintf(out, size, "%lldm%02llds", m, sec);
	else
		snprintf(out, size, "%llds", sec);
}

static void cell(json_t *q, const char *column, char *out, size_t size)
{
	json_t *v = json_object_get(q, column);
	if (json_is_integer(v))
		snprintf(out, size, "%lld", (long long)json_integer_value(v));
	else
		snprintf(out, size, "-");
}

/* A header line, then one row per queue with the columns aligned. */
static void print_stats(json_t *r)
{
	json_t *queues = json_object_get(r, "queues");
	json_t *version = json_object_get(r, "version");
	json_t *conns = json_object_get(r, "connections");
	char uptime[48], text[32];
	size_t nq = json_is_object(queues) ? json_object_size(queues) : 0;
	const char **names = xcalloc(nq, sizeof *names);
	size_t width[NCOLUMNS + 1], i = 0;
	const char *name;
	json_t *q;

	format_uptime(json_object_get(r, "uptime"), uptime, sizeof uptime);
	printf("joinqd %s  uptime %s  connections %lld  queues %zu\n",
	       json_is_string(version) ? json_string_value(version) : "?",
	       uptime, json_is_integer(conns) ?
	       (long long)json_integer_value(conns) : -1LL, nq);
	if (!nq) {
		free(names);
		return;
	}
	json_object_foreach(queues, name, q)
		names[i++] = name;
	qsort(names, nq, sizeof *names, by_name);

	width[0] = strlen("queue");
	for (i = 0; i < NCOLUMNS; i++)
		width[i + 1] = strlen(stats_columns[i]);
	for (size_t k = 0; k < nq; k++) {
		q = json_object_get(queues, names[k]);
		if (strlen(names[k]) > width[0])
			width[0] = strlen(names[k]);
		for (i = 0; i < NCOLUMNS; i++) {
			cell(q, stats_columns[i], text, sizeof text);
			if (strlen(text) > width[i + 1])
				width[i + 1] = strlen(text);
		}
	}

	printf("%-*s", (int)width[0], "queue");
	for (i = 0; i < NCOLUMNS; i++)
		printf("  %*s", (int)width[i + 1], stats_columns[i]);
	putchar('\n');
	for (size_t k = 0; k < nq; k++) {
		q = json_object_get(queues, names[k]);
		printf("%-*s", (int)width[0], names[k]);
		for (i = 0; i < NCOLUMNS; i++) {
			cell(q, stats_columns[i], text, sizeof text);
			printf("  %*s", (int)width[i + 1], text);
		}
		putchar('\n');
	}
	free(names);
}

int cmd_stats(struct session *s, const struct cmd_options *o,
              int argc, char **argv)
{
	struct jq_error err;
	char *json;
	int status = EXIT_OK;

	(void)argc;
	(void)argv;
	jq_client *c = open_client(s, &status);
	if (!c)
		return status;
	if (jq_stats(c, &json, &err)) {
		jq_close(c);
		return report(NULL, &err);
	}
	if (o->json) {
		puts(json);
	} else {
		json_t *r = json_loads(json, JSON_ALLOW_NUL, NULL);
		print_stats(r);
		json_decref(r);
	}
	free(json);
	jq_close(c);
	return status;
}

