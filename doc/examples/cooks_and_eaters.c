/*
 * cooks_and_eaters.c - Python's JoinableQueue producer/consumer example,
 * done with libjoinq: a cook puts dishes on the queue "dishes", two eaters
 * take them, eat and say task_done, and the main program joins the queue:
 * it returns once every dish is eaten.
 *
 *     cooks_and_eaters [HOST [PORT]]
 *
 * HOST and PORT default to $JOINQ_HOST and $JOINQ_PORT, else 127.0.0.1
 * and 7477.  Exits 0 when every dish was eaten, 1 otherwise.
 *
 * Only joinq.h, the public API, is used.  Build it against an installed
 * libjoinq with
 *
 *     cc -o cooks_and_eaters cooks_and_eaters.c \
 *         $(pkg-config --cflags --libs libjoinq)
 *
 * In Python it would read:
 *
 *     def eater(q):
 *         while (dish := q.get()) is not None:
 *             eat(dish)
 *             q.task_done()
 *         q.task_done()
 *
 *     q = JoinableQueue()
 *     eaters = [Process(target=eater, args=(q,)) for _ in range(2)]
 *     for p in eaters: p.start()
 *     for n in range(1, DISHES + 1): q.put("dish %d" % n)
 *     q.join()
 *     for p in eaters: q.put(None)
 *     for p in eaters: p.join()
 */
#define _POSIX_C_SOURCE 200809L

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <joinq.h>

#define QUEUE "dishes"
#define DISHES 20
#define EATERS 2
#define EAT_MS 20               /* how long a dish takes to eat */
#define JOIN_TIMEOUT 60.0       /* seconds; this is a demo, not a service */

/* Everything but the wait of each call: where the daemon is. */
static struct jq_options options = JQ_OPTIONS_INIT;

static void eat(void)
{
	struct timespec ts = { 0, EAT_MS * 1000000L };
	nanosleep(&ts, NULL);
}

/*
 * An eater, in a child process.  A jq_client is one connection for one
 * thread: a child must never use its parent's, so each eater connects on
 * its own.  Its gets carry no lease: were the eater to die with a dish in
 * hand, the daemon would give that dish to the other eater when the
 * connection closes.  Returns the exit status.
 */
static int eater(int number)
{
	struct jq_error err;
	struct jq_task dish;
	int eaten = 0;

	jq_client *c = jq_connect(&options, &err);
	if (!c) {
		fprintf(stderr, "eater %d: %s\n", number, err.message);
		return 1;
	}
	for (;;) {
		/* NULL wait: block until there is a dish, like q.get(). */
		if (jq_get(c, QUEUE, NULL, 0, &dish, &err)) {
			fprintf(stderr, "eater %d: get: %s\n", number, err.message);
			jq_close(c);
			return 1;
		}
		/* Items are JSON text: the cook's strings arrive quoted, and
		 * the sentinel that says "no more dishes" is null. */
		int done = strcmp(dish.item, "null") == 0;
		if (!done) {
			printf("eater %d eats %s\n", number, dish.item);
			eat();
			eaten++;
		}
		/* The sentinel is a task too: every get needs its task_done,
		 * or the unfinished count never comes back to zero. */
		int failed = jq_task_done(c, dish.task, NULL, &err);
		jq_task_free(&dish);
		if (failed) {
			fprintf(stderr, "eater %d: task_done: %s\n", number,
			        err.message);
			jq_close(c);
			return 1;
		}
		if (done)
			break;
	}
	printf("eater %d ate %d dishes\n", number, eaten);
	jq_close(c);
	return 0;
}

/* Stops the eaters when the main program gives up: they would otherwise
 * wait in get for ever. */
static void stop_eaters(const pid_t *pids, int n)
{
	for (int i = 0; i < n; i++) {
		kill(pids[i], SIGTERM);
		waitpid(pids[i], NULL, 0);
	}
}

int main(int argc, char **argv)
{
	struct jq_error err;
	struct jq_wait join_wait = { .block = true, .timeout = JOIN_TIMEOUT };
	struct jq_qsize q;
	pid_t pids[EATERS];
	char dish[32];
	int i, status = 0;

	if (argc > 3) {
		fprintf(stderr, "usage: %s [HOST [PORT]]\n", argv[0]);
		return 1;
	}
	options.host = argc > 1 ? argv[1] : getenv("JOINQ_HOST");
	options.port = argc > 2 ? argv[2] : getenv("JOINQ_PORT");

	/* One line, one write: the processes share stdout, and whole lines
	 * do not get mixed. */
	setvbuf(stdout, NULL, _IOLBF, 0);

	/* The eaters start first and wait in get, as consumers usually do. */
	for (i = 0; i < EATERS; i++) {
		fflush(stdout);         /* or the child prints it again */
		pids[i] = fork();
		if (pids[i] < 0) {
			perror("fork");
			stop_eaters(pids, i);
			return 1;
		}
		if (pids[i] == 0)
			exit(eater(i + 1));
	}

	/* The cook.  Its connection is made after the forks, so no eater
	 * holds a copy of it. */
	jq_client *c = jq_connect(&options, &err);
	if (!c) {
		fprintf(stderr, "cook: %s\n", err.message);
		stop_eaters(pids, EATERS);
		return 1;
	}
	for (i = 1; i <= DISHES; i++) {
		snprintf(dish, sizeof dish, "dish %d", i);
		/* jq_put_string makes the JSON string for us; NULL wait: block
		 * while the queue is full, like q.put(). */
		if (jq_put_string(c, QUEUE, dish, NULL, NULL, &err)) {
			fprintf(stderr, "cook: put: %s\n", err.message);
			goto fail;
		}
	}
	printf("cook put %d dishes on %s\n", DISHES, QUEUE);

	/* q.join(): returns when every dish put has had its task_done.  A
	 * timeout turns a lost eater into an error instead of a hang. */
	if (jq_join(c, QUEUE, &join_wait, &err)) {
		fprintf(stderr, "join: %s: %s\n", jq_strcode(err.code),
		        err.message);
		goto fail;
	}
	if (jq_qsize(c, QUEUE, &q, &err)) {
		fprintf(stderr, "qsize: %s\n", err.message);
		goto fail;
	}
	printf("joined: %llu unfinished\n", (unsigned long long)q.unfinished);

	/* One sentinel per eater, put with jq_put: any JSON value is an
	 * item, and null is Python's None. */
	for (i = 0; i < EATERS; i++) {
		if (jq_put(c, QUEUE, "null", 4, NULL, NULL, &err)) {
			fprintf(stderr, "cook: put: %s\n", err.message);
			goto fail;
		}
	}
	for (i = 0; i < EATERS; i++) {
		int ws;
		if (waitpid(pids[i], &ws, 0) < 0 || !WIFEXITED(ws) ||
		    WEXITSTATUS(ws) != 0) {
			fprintf(stderr, "eater %d failed\n", i + 1);
			status = 1;
		}
	}
	/* The sentinels are finished too: the queue is back to nothing. */
	if (!status && jq_join(c, QUEUE, &join_wait, &err)) {
		fprintf(stderr, "join: %s\n", err.message);
		status = 1;
	}
	if (!status)
		printf("all %d dishes eaten by %d eaters\n", DISHES, EATERS);
	jq_close(c);
	return status;

fail:
	jq_close(c);
	stop_eaters(pids, EATERS);
	return 1;
}
