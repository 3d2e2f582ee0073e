/*
 * bench.c - `joinq bench`, a load generator in the spirit of
 * redis-benchmark.  This file owns its options and help and the run from
 * start to end; the connections and their event loop are benchload.c's,
 * the latency histograms and the report benchreport.c's.
 *
 * Shape.  One thread and one poll() loop over non-blocking sockets: the
 * daemon is one event loop too, so a second core is better spent on it
 * than on more load threads.  Each producer and each consumer has a
 * connection (TCP) or a socket (UDP) of its own.  Requests are formatted
 * by hand (they have fixed shapes) into a connection's output buffer, up
 * to -P of them in flight, and written in one send() per batch; replies
 * are read in big chunks and split into lines with frame_next().  Replies
 * of our own fixed shapes are read with a few memmem()s; anything else (an
 * error, an item this run did not put) goes through jansson.
 *
 * Items.  Every item is a JSON string "b<run>:<seq>:xxx...", <run> eight
 * hex digits picked per run and <seq> the item's number, padded with x to
 * -d characters.  Consumers mark <seq> in a bitmap: a second delivery is a
 * duplicate, a seq never marked is missing, an item of another run is
 * foreign.  Each is a failed check.
 *
 * Phases.  PREFILL puts --prefill items before the clock starts (the queue
 * depth the run then works at).  RUN is timed: n items are put, and n
 * items got and acknowledged (task_done); consumers take the oldest items
 * first, so with a prefill the run works at that depth throughout.  DRAIN
 * (untimed) then takes what is left, so that every item put is checked.
 *
 * Consumers and blocking gets.  A TCP get waits for an item, and requests
 * behind it on its connection wait with it (PROTOCOL.md), a task_done
 * included.  So consumers never have more gets outstanding, together, than
 * items still to come: each outstanding get is then sure to be served, and
 * nothing stays stuck behind one at the end.
 *
 * UDP.  One request per datagram, each with an "id" so that replies (which
 * may come out of order: a waiting get is answered after the task_done
 * behind it) find their request.  Nothing is sent again: a put sent twice
 * would be two items.  A request without a reply within UDP_REPLY_WAIT
 * (plus its own wait) is lost: counted as an error, and the run goes on
 * without it.  Gets wait UDP_GET_WAIT at most and are asked again after an
 * "empty", so that a lost put cannot leave a get waiting for ever.
 *
 * Latency.  In throughput mode, each request's round trip: from the moment
 * it is queued for writing (the write follows in the same loop turn) to the
 * moment its reply is parsed, by op; a get's includes any wait for an item.
 * In latency mode, one connection runs put -> get -> task_done cycles, one
 * request at a time, and the latency is the whole cycle.  Both go into
 * log-linear histograms: 128 to 255 steps per power of two, so that every
 * value is kept within 0.8%, in a fixed 58 KiB whatever the run's length.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "benchint.h"
#include "buf.h"
#include "cli.h"
#include "joinq.h"
#include "xalloc.h"

#define PRODUCERS_MAX 1024
#define CONSUMERS_MAX 1024
#define PIPELINE_MAX 4096
#define ITEMS_MAX (UINT64_C(1) << 32)     /* prefill + n: the bitmap's bits */
#define TCP_ITEM_MAX 1000000u              /* below the default max_frame */
#define UDP_ITEM_MAX 60000u               /* a put datagram stays below 64K */

/* ---- options ------------------------------------------------------------ */

const char bench_help[] =
	"Measure the daemon: producers put items, consumers get each one and\n"
	"acknowledge it (task_done), each on a connection of its own, with up\n"
	"to -P requests in flight per connection.  Prints items per second,\n"
	"the elapsed time, latency percentiles (p50, p99, p99.9, max) and\n"
	"errors, and checks that every item put was delivered exactly once:\n"
	"each item carries its sequence number, and consumers mark them off.\n"
	"\n"
	"In throughput mode the latency is each request's round trip, from its\n"
	"write to its reply, by op (a get's includes waiting for an item).  In\n"
	"latency mode one connection runs put -> get -> task_done cycles one\n"
	"request at a time, and the latency is the whole cycle (-P, --producers\n"
	"and --consumers do not apply).  Latencies go into a log-linear\n"
	"histogram (within 0.8%), not a list of samples.\n"
	"\n"
	"--prefill N puts N items first, untimed, so that the timed run works\n"
	"at that queue depth (consumers take the oldest items first); the\n"
	"items left after it are then taken, untimed, and checked too, unless\n"
	"--no-drain: they then stay queued, counted as left, not missing (so\n"
	"a deep queue costs only its filling).\n"
	"\n"
	"The queue is --queue, default bench-PID (never -q or $JOINQ_QUEUE), so\n"
	"that runs do not mix with real work.  With -u (UDP) each request is a\n"
	"datagram with an id; one without a reply within 2 s (plus a get's 1 s\n"
	"wait) counts as an error and is not sent again.  Needs no journal and\n"
	"no particular daemon setting; a maxsize on the queue is fine.  With\n"
	"--tls (joinq's option) every connection is TLS, its handshake done\n"
	"before the clock starts (with --reconnect, each cycle's time holds its\n"
	"connection's).\n"
	"\n"
	"      --producers N   producer connections (default 4)\n"
	"      --consumers N   consumer connections (default 4)\n"
	"  -n N                items to put and get in the timed run (default\n"
	"                      100000)\n"
	"  -d BYTES            size of each item, a JSON string (default 100;\n"
	"                      at least its tag and number)\n"
	"  -P N                requests in flight per connection: the\n"
	"                      pipelining depth (default 1)\n"
	"      --mode MODE     throughput (default) or latency\n"
	"      --queue NAME    the queue (default bench-PID)\n"
	"      --prefill N     items put before the timed run (default 0)\n"
	"      --no-drain      do not take the items left after the run\n"
	"      --reconnect     latency mode: each cycle on a new connection\n"
	"                      (connect, TLS handshake with --tls, auth): the\n"
	"                      cycles per second are then connections per second\n"
	"      --timeout S     give up after S seconds in all (default 300)\n"
	"      --json          print one JSON object on stdout instead\n"
	"\n"
	"Example:\n"
	"    $ joinq bench -n 100000 -P 16\n"
	"    joinq bench: throughput, tcp 127.0.0.1:7477, queue bench-4242\n"
	"      4 producers, 4 consumers, 100000 items of 100 bytes, pipeline 16\n"
	"      elapsed 1.046 s, 95602 items/s\n"
	"      latency ms      p50      p99    p99.9      max      count\n"
	"      put           0.571    1.503    2.187    2.791     100000\n"
	"      get           0.623    1.651    2.343    2.937     100000\n"
	"      task_done     0.586    1.555    2.269    2.861     100000\n"
	"      all           0.592    1.579    2.311    2.937     300000\n"
	"      delivered 100000 of 100000: 0 missing, 0 duplicate, 0 foreign; "
	"0 errors\n";

static const char bench_exit_help[] =
	"Exit status:\n"
	"  0  every item delivered exactly once, no error\n"
	"  1  an error reply, a lost datagram, or an item missing, delivered\n"
	"     twice, or not put by this run\n"
	"  2  usage error\n"
	"  5  --timeout ran out\n"
	"  6  cannot connect, or the connection was lost\n";

/* ---- option parsing ----------------------------------------------------- */

static bool valid_queue(const char *q)
{
	size_t n = strlen(q);
	return n >= 1 && n <= 128 &&
	       strspn(q, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	                 "0123456789_.:-") == n;
}

enum {
	LONG_PRODUCERS = 256, LONG_CONSUMERS, LONG_MODE, LONG_QUEUE,
	LONG_PREFILL, LONG_TIMEOUT, LONG_JSON, LONG_NO_DRAIN, LONG_RECONNECT,
};

static const struct option bench_longopts[] = {
	{ "producers", required_argument, NULL, LONG_PRODUCERS },
	{ "consumers", required_argument, NULL, LONG_CONSUMERS },
	{ "mode", required_argument, NULL, LONG_MODE },
	{ "queue", required_argument, NULL, LONG_QUEUE },
	{ "prefill", required_argument, NULL, LONG_PREFILL },
	{ "timeout", required_argument, NULL, LONG_TIMEOUT },
	{ "json", no_argument, NULL, LONG_JSON },
	{ "no-drain", no_argument, NULL, LONG_NO_DRAIN },
	{ "reconnect", no_argument, NULL, LONG_RECONNECT },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static int parse_bench(struct bench_options *o, int argc, char **argv,
                       bool *done)
{
	uint64_t v;
	char *end;
	int ch;

	*done = true;
	o->producers = 4;
	o->consumers = 4;
	o->pipeline = 1;
	o->items = 100000;
	o->item_size = 100;
	o->mode = MODE_THROUGHPUT;
	o->timeout = 300;
	snprintf(o->queue, sizeof o->queue, "bench-%ld", (long)getpid());

	optind = 0;   /* GNU getopt: start afresh on this argv */
	while ((ch = getopt_long(argc, argv, "n:d:P:h", bench_longopts,
	                         NULL)) != -1) {
		switch (ch) {
		case 'h':
			printf("usage: joinq [OPTION]... %s\n%s\n%s", BENCH_USAGE,
			       bench_help, bench_exit_help);
			return EXIT_OK;
		case LONG_PRODUCERS:
			if (!parse_count(optarg, 1, PRODUCERS_MAX, &v))
				return usage_error("bench", "--producers wants a number from 1 to "
				                   "%d, not '%s'", PRODUCERS_MAX, optarg);
			o->producers = (unsigned)v;
			break;
		case LONG_CONSUMERS:
			if (!parse_count(optarg, 1, CONSUMERS_MAX, &v))
				return usage_error("bench", "--consumers wants a number from 1 to "
				                   "%d, not '%s'", CONSUMERS_MAX, optarg);
			o->consumers = (unsigned)v;
			break;
		case 'n':
			if (!parse_count(optarg, 1, ITEMS_MAX / 2, &v))
				return usage_error("bench", "-n wants a number of items from 1 to "
				                   "%" PRIu64 ", not '%s'", ITEMS_MAX / 2,
				                   optarg);
			o->items = v;
			break;
		case 'd':
			if (!parse_count(optarg, 0, TCP_ITEM_MAX, &v))
				return usage_error("bench", "-d wants a size in bytes from 0 to %u, "
				                   "not '%s'", TCP_ITEM_MAX, optarg);
			o->item_size = (size_t)v;
			break;
		case 'P':
			if (!parse_count(optarg, 1, PIPELINE_MAX, &v))
				return usage_error("bench", "-P wants a number from 1 to %d, not "
				                   "'%s'", PIPELINE_MAX, optarg);
			o->pipeline = (unsigned)v;
			break;
		case LONG_MODE:
			if (!strcmp(optarg, "throughput"))
				o->mode = MODE_THROUGHPUT;
			else if (!strcmp(optarg, "latency"))
				o->mode = MODE_LATENCY;
			else
				return usage_error("bench", "--mode wants throughput or latency, "
				                   "not '%s'", optarg);
			break;
		case LONG_QUEUE:
			if (!valid_queue(optarg))
				return usage_error("bench", "--queue wants 1 to 128 of A-Z a-z 0-9 "
				                   "_ . : -, not '%s'", optarg);
			snprintf(o->queue, sizeof o->queue, "%s", optarg);
			break;
		case LONG_PREFILL:
			if (!parse_count(optarg, 0, ITEMS_MAX / 2, &v))
				return usage_error("bench", "--prefill wants a number of items from "
				                   "0 to %" PRIu64 ", not '%s'",
				                   ITEMS_MAX / 2, optarg);
			o->prefill = v;
			break;
		case LONG_TIMEOUT:
			errno = 0;
			o->timeout = strtod(optarg, &end);
			if (end == optarg || *end || errno || !isfinite(o->timeout) ||
			    o->timeout <= 0 || o->timeout > 1e6)
				return usage_error("bench", "--timeout wants seconds > 0, not '%s'",
				                   optarg);
			break;
		case LONG_JSON:
			o->json = true;
			break;
		case LONG_NO_DRAIN:
			o->no_drain = true;
			break;
		case LONG_RECONNECT:
			o->reconnect = true;
			break;
		default:
			/* getopt has said what is wrong */
			fprintf(stderr, "Try 'joinq bench --help'.\n");
			return EXIT_USAGE;
		}
	}
	if (optind < argc)
		return usage_error("bench", "unexpected argument '%s'", argv[optind]);
	if (o->reconnect && (o->mode != MODE_LATENCY ||
	                     o->opt.transport == JQ_UDP))
		return usage_error("bench", "--reconnect is for --mode latency "
		                   "over TCP");
	if (o->opt.transport == JQ_UDP && o->item_size > UDP_ITEM_MAX)
		return usage_error("bench", "-d over UDP wants at most %u bytes: a put must "
		                   "fit in one datagram", UDP_ITEM_MAX);
	*done = false;
	return EXIT_OK;
}

/* ---- the run -------------------------------------------------------------- */

static void bench_free(struct bench *b)
{
	for (unsigned i = 0; i < b->nconns; i++) {
		tlsc_free(&b->conns[i].sess);
		if (b->conns[i].fd >= 0)
			close(b->conns[i].fd);
		free(b->conns[i].ring);
		buf_free(&b->conns[i].out);
		buf_free(&b->conns[i].in);
	}
	free(b->conns);
	for (int i = 0; i < NHIST; i++)
		hist_free(&b->hist[i]);
	buf_free(&b->put_head);
	buf_free(&b->get_line);
	buf_free(&b->tail);
	free(b->rx);
	free(b->padding);
	free(b->seen);
	if (b->tls)
		tlsc_config_free(b->tls);
	free(b->tls);
}

/* bench's own TLS settings, from the same flags as libjoinq's. */
static int bench_tls(struct bench *b, const struct tls_flags *f)
{
	char why[TLSC_WHY];

	if (!f->on)
		return EXIT_OK;
	b->tls = xcalloc(1, sizeof *b->tls);
	if (tlsc_config_init(b->tls, why, sizeof why) ||
	    (f->cacert && tlsc_config_ca_file(b->tls, f->cacert, why,
	                                      sizeof why)) ||
	    (f->cert && tlsc_config_cert(b->tls, f->cert, f->key, why,
	                                 sizeof why)) ||
	    (f->server_name && tlsc_config_server_name(b->tls, f->server_name,
	                                               why, sizeof why))) {
		fprintf(stderr, "joinq bench: %s\n", why);
		return EXIT_USAGE;
	}
	b->tls->any_name = f->any_name;
	return EXIT_OK;
}

int bench_main(const struct jq_options *opt, const struct tls_flags *tls,
               int argc, char **argv)
{
	struct bench *b = xcalloc(1, sizeof *b);
	bool done;
	int status;

	b->o.opt = *opt;
	status = parse_bench(&b->o, argc, argv, &done);
	if (done) {
		free(b);
		return status;
	}
	if ((status = bench_tls(b, tls))) {
		bench_free(b);
		free(b);
		return status;
	}
	b->udp = opt->transport == JQ_UDP;
	b->total = b->o.prefill + b->o.items;
	b->seen = xcalloc((size_t)(b->total / 8 + 1), 1);
	for (int i = 0; i < NHIST; i++)
		hist_init(&b->hist[i]);
	if (!(status = bench_run(b)))
		status = bench_report(b);
	bench_free(b);
	free(b);
	return status;
}
