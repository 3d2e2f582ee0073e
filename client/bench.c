/*
 * bench.c - `joinq bench`, a load generator in the spirit of
 * redis-benchmark.  This file owns the benchmark: its options, its
 * connections and their event loop, the latency histogram, the delivery
 * check and the report.
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
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "bench.h"
#include "buf.h"
#include "frame.h"
#include "joinq.h"
#include "reply.h"
#include "xalloc.h"

/* joinq bench's exit status (the help says the same). */
enum {
	EXIT_OK = 0,
	EXIT_FAILED = 1,
	EXIT_USAGE = 2,
	EXIT_TIMEOUT = 5,
	EXIT_CONNECTION = 6,
};

#define PRODUCERS_MAX 1024
#define CONSUMERS_MAX 1024
#define PIPELINE_MAX 4096
#define ITEMS_MAX (UINT64_C(1) << 32)     /* prefill + n: the bitmap's bits */
#define TCP_ITEM_MAX 1000000u              /* below the default max_frame */
#define UDP_ITEM_MAX 60000u               /* a put datagram stays below 64K */
#define BULK_WINDOW 256       /* requests in flight to prefill and drain (TCP) */
#define READ_CHUNK 65536
#define REPLY_MAX (64u << 20) /* the longest reply line we take */
#define CONNECT_TIMEOUT_MS 5000
#define UDP_REPLY_WAIT_MS 2000    /* a datagram's reply may take this */
#define UDP_GET_WAIT "1"          /* seconds a UDP get waits for an item */
#define UDP_GET_WAIT_MS 1000
#define UDP_SILENCE_MS 5000      /* losses and no reply this long: gone */
#define TICK_MS 100               /* the loop wakes at least this often */
#define MESSAGE_MAX 256

/* ---- options ------------------------------------------------------------ */

enum mode { MODE_THROUGHPUT, MODE_LATENCY };

struct bench_options {
	struct jq_options opt;
	unsigned producers, consumers, pipeline;
	uint64_t items, prefill;
	size_t item_size;
	enum mode mode;
	char queue[136];
	double timeout;
	bool json;
	bool no_drain;              /* leave what the run did not take */
};

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
	"no particular daemon setting; a maxsize on the queue is fine.\n"
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

/* ---- time --------------------------------------------------------------- */

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- the histogram ------------------------------------------------------ */

/*
 * Log-linear buckets, as HdrHistogram's: values below 2^SUB_BITS have a
 * bucket each; above, each power of two is cut into HALF equal steps, so a
 * bucket is never wider than 1/128 of its values.  Values are nanoseconds.
 */
#define SUB_BITS 8
#define SUB (1u << SUB_BITS)
#define HALF (SUB / 2)
#define NBUCKETS ((64 - SUB_BITS + 1) * HALF + HALF)

struct histogram {
	uint64_t count, max;
	uint64_t *buckets;          /* NBUCKETS */
};

static void hist_init(struct histogram *h)
{
	h->count = h->max = 0;
	h->buckets = xcalloc(NBUCKETS, sizeof *h->buckets);
}

static void hist_free(struct histogram *h)
{
	free(h->buckets);
}

static unsigned hist_index(uint64_t v)
{
	if (v < SUB)
		return (unsigned)v;
	unsigned msb = 63u - (unsigned)__builtin_clzll(v);
	unsigned shift = msb - (SUB_BITS - 1);
	return shift * HALF + (unsigned)(v >> shift);
}

/* The largest value bucket i holds. */
static uint64_t hist_upper(unsigned i)
{
	if (i < SUB)
		return i;
	unsigned shift = i / HALF - 1;
	uint64_t m = i - shift * HALF;
	return ((m + 1) << shift) - 1;
}

static void hist_record(struct histogram *h, int64_t ns)
{
	uint64_t v = ns > 0 ? (uint64_t)ns : 0;
	h->buckets[hist_index(v)]++;
	h->count++;
	if (v > h->max)
		h->max = v;
}

/* The value at quantile q (0 < q <= 1): the top of the bucket that holds
 * it, never above the largest value recorded. */
static uint64_t hist_quantile(const struct histogram *h, double q)
{
	if (!h->count)
		return 0;
	uint64_t rank = (uint64_t)ceil(q * (double)h->count), seen = 0;
	if (rank < 1)
		rank = 1;
	for (unsigned i = 0; i < NBUCKETS; i++) {
		seen += h->buckets[i];
		if (seen >= rank) {
			uint64_t v = hist_upper(i);
			return v < h->max ? v : h->max;
		}
	}
	return h->max;
}

/* ---- the run's state ---------------------------------------------------- */

enum role { ROLE_PRODUCER, ROLE_CONSUMER, ROLE_CYCLER };
enum op { OP_AUTH, OP_PUT, OP_GET, OP_DONE };
enum phase { PHASE_PREFILL, PHASE_RUN, PHASE_DRAIN };
enum { HIST_PUT, HIST_GET, HIST_DONE, HIST_ALL, NHIST };

static const char *const op_names[] = { "auth", "put", "get", "task_done" };

/* A request in flight. */
struct request {
	uint64_t id;                /* UDP: the id it carries */
	uint64_t arg;               /* put: the item's seq; task_done: task */
	int64_t sent;               /* ns */
	enum op op;
	bool answered;              /* UDP: answered (or lost) out of order */
};

struct conn {
	int fd;
	enum role role;
	struct request *ring;       /* requests in flight, oldest first */
	unsigned ring_cap, head, count;
	struct buf out;             /* requests not yet written; UDP: one a
	                               line, each line a datagram */
	size_t out_off;
	struct buf in;              /* TCP: bytes read, not yet parsed */
	size_t in_off;
	uint64_t next_id;           /* UDP */
	int cycle_step;             /* latency mode: the op in flight, or -1 */
	int64_t cycle_start;
};

struct bench {
	struct bench_options o;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	char peer[INET6_ADDRSTRLEN + 16];
	bool udp;

	struct conn *conns;
	unsigned nconns;
	struct buf put_head;        /* {"op":"put","queue":Q */
	struct buf get_line;        /* {"op":"get","queue":Q (UDP: wait) */
	struct buf tail;            /* UDP: the token member, if any */
	char *padding;              /* item_size x's */
	char run_tag[9];            /* eight hex digits */

	enum phase phase;
	uint64_t total;             /* prefill + items: the seqs */
	uint64_t next_seq;          /* the next item to put */
	uint64_t puts_ok, puts_failed;
	uint64_t gets_outstanding;
	uint64_t delivered;         /* distinct items of this run got */
	uint64_t duplicates, foreign;
	uint64_t acked, acked_run;  /* task_dones answered; in the run */
	uint64_t dones_in_flight;
	uint64_t cycles;            /* latency mode: cycles finished */
	uint64_t error_replies, lost;
	uint8_t *seen;              /* bitmap of seqs delivered */
	int64_t run_start, run_end; /* ns; run_end 0: not ended */
	int64_t deadline;
	int64_t last_reply;         /* ns: UDP, when a datagram last came */
	struct histogram hist[NHIST];

	int status;                 /* set once the run must stop */
	char why[MESSAGE_MAX];      /* what stopped it, for the report */
	char first_error[MESSAGE_MAX];
};

static void stop(struct bench *b, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Ends the run with status; the first reason given is the one reported. */
static void stop(struct bench *b, int status, const char *fmt, ...)
{
	va_list ap;
	if (b->status)
		return;
	b->status = status;
	va_start(ap, fmt);
	vsnprintf(b->why, sizeof b->why, fmt, ap);
	va_end(ap);
}

static void note_error(struct bench *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void note_error(struct bench *b, const char *fmt, ...)
{
	va_list ap;
	if (b->first_error[0])
		return;
	va_start(ap, fmt);
	vsnprintf(b->first_error, sizeof b->first_error, fmt, ap);
	va_end(ap);
}

/* ---- option parsing ----------------------------------------------------- */

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "joinq bench: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'joinq bench --help'.\n");
	return EXIT_USAGE;
}

/* A whole number from lo to hi, digits only. */
static bool parse_count(const char *text, uint64_t lo, uint64_t hi,
                        uint64_t *out)
{
	if (!*text || strspn(text, "0123456789") != strlen(text))
		return false;
	errno = 0;
	unsigned long long v = strtoull(text, NULL, 10);
	if (errno || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

static bool valid_queue(const char *q)
{
	size_t n = strlen(q);
	return n >= 1 && n <= 128 &&
	       strspn(q, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	                 "0123456789_.:-") == n;
}

enum {
	LONG_PRODUCERS = 256, LONG_CONSUMERS, LONG_MODE, LONG_QUEUE,
	LONG_PREFILL, LONG_TIMEOUT, LONG_JSON, LONG_NO_DRAIN,
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
				return usage_error("--producers wants a number from 1 to "
				                   "%d, not '%s'", PRODUCERS_MAX, optarg);
			o->producers = (unsigned)v;
			break;
		case LONG_CONSUMERS:
			if (!parse_count(optarg, 1, CONSUMERS_MAX, &v))
				return usage_error("--consumers wants a number from 1 to "
				                   "%d, not '%s'", CONSUMERS_MAX, optarg);
			o->consumers = (unsigned)v;
			break;
		case 'n':
			if (!parse_count(optarg, 1, ITEMS_MAX / 2, &v))
				return usage_error("-n wants a number of items from 1 to "
				                   "%" PRIu64 ", not '%s'", ITEMS_MAX / 2,
				                   optarg);
			o->items = v;
			break;
		case 'd':
			if (!parse_count(optarg, 0, TCP_ITEM_MAX, &v))
				return usage_error("-d wants a size in bytes from 0 to %u, "
				                   "not '%s'", TCP_ITEM_MAX, optarg);
			o->item_size = (size_t)v;
			break;
		case 'P':
			if (!parse_count(optarg, 1, PIPELINE_MAX, &v))
				return usage_error("-P wants a number from 1 to %d, not "
				                   "'%s'", PIPELINE_MAX, optarg);
			o->pipeline = (unsigned)v;
			break;
		case LONG_MODE:
			if (!strcmp(optarg, "throughput"))
				o->mode = MODE_THROUGHPUT;
			else if (!strcmp(optarg, "latency"))
				o->mode = MODE_LATENCY;
			else
				return usage_error("--mode wants throughput or latency, "
				                   "not '%s'", optarg);
			break;
		case LONG_QUEUE:
			if (!valid_queue(optarg))
				return usage_error("--queue wants 1 to 128 of A-Z a-z 0-9 "
				                   "_ . : -, not '%s'", optarg);
			snprintf(o->queue, sizeof o->queue, "%s", optarg);
			break;
		case LONG_PREFILL:
			if (!parse_count(optarg, 0, ITEMS_MAX / 2, &v))
				return usage_error("--prefill wants a number of items from "
				                   "0 to %" PRIu64 ", not '%s'",
				                   ITEMS_MAX / 2, optarg);
			o->prefill = v;
			break;
		case LONG_TIMEOUT:
			errno = 0;
			o->timeout = strtod(optarg, &end);
			if (end == optarg || *end || errno || !isfinite(o->timeout) ||
			    o->timeout <= 0 || o->timeout > 1e6)
				return usage_error("--timeout wants seconds > 0, not '%s'",
				                   optarg);
			break;
		case LONG_JSON:
			o->json = true;
			break;
		case LONG_NO_DRAIN:
			o->no_drain = true;
			break;
		default:
			/* getopt has said what is wrong */
			fprintf(stderr, "Try 'joinq bench --help'.\n");
			return EXIT_USAGE;
		}
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (o->opt.transport == JQ_UDP && o->item_size > UDP_ITEM_MAX)
		return usage_error("-d over UDP wants at most %u bytes: a put must "
		                   "fit in one datagram", UDP_ITEM_MAX);
	*done = false;
	return EXIT_OK;
}

/* ---- connecting --------------------------------------------------------- */

static void format_peer(struct bench *b)
{
	char host[NI_MAXHOST], port[NI_MAXSERV];
	if (getnameinfo((struct sockaddr *)&b->addr, b->addrlen, host,
	                sizeof host, port, sizeof port,
	                NI_NUMERICHOST | NI_NUMERICSERV)) {
		snprintf(b->peer, sizeof b->peer, "the daemon");
		return;
	}
	snprintf(b->peer, sizeof b->peer,
	         b->addr.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

/* A non-blocking socket connected to sa (TCP: within CONNECT_TIMEOUT_MS).
 * -1 with errno set on failure. */
static int open_socket(const struct sockaddr *sa, socklen_t len, bool udp)
{
	int fd = socket(sa->sa_family, (udp ? SOCK_DGRAM : SOCK_STREAM) |
	                SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, sa, len) < 0) {
		if (udp || (errno != EINPROGRESS && errno != EINTR))
			goto fail;
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		int r;
		while ((r = poll(&p, 1, CONNECT_TIMEOUT_MS)) < 0 && errno == EINTR)
			;
		if (r <= 0) {
			if (r == 0)
				errno = ETIMEDOUT;
			goto fail;
		}
		int soerr = 0;
		socklen_t sl = sizeof soerr;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
			goto fail;
		if (soerr) {
			errno = soerr;
			goto fail;
		}
	}
	if (!udp) {
		int one = 1;
		/* Batches are written whole; Nagle would only hold them back. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	}
	return fd;
fail: {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
}

/* Finds the daemon: the first address of host:port that takes a TCP
 * connection (UDP: that the name resolves), kept for every connection. */
static int resolve(struct bench *b)
{
	const char *host = b->o.opt.host ? b->o.opt.host : JQ_DEFAULT_HOST;
	const char *port = b->o.opt.port ? b->o.opt.port : JQ_DEFAULT_PORT;
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = b->udp ? SOCK_DGRAM : SOCK_STREAM,
	}, *res, *ai;
	int r = getaddrinfo(host, port, &hints, &res), saved = 0;

	if (r) {
		fprintf(stderr, "joinq bench: cannot connect to %s port %s: %s\n",
		        host, port, r == EAI_SYSTEM ? strerror(errno) :
		        gai_strerror(r));
		return EXIT_CONNECTION;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		int fd = open_socket(ai->ai_addr, ai->ai_addrlen, b->udp);
		if (fd >= 0) {
			close(fd);
			break;
		}
		saved = errno;
	}
	if (!ai) {
		freeaddrinfo(res);
		fprintf(stderr, "joinq bench: cannot connect to %s port %s: %s\n",
		        host, port, saved == ETIMEDOUT ? "timed out" :
		        strerror(saved));
		return EXIT_CONNECTION;
	}
	memcpy(&b->addr, ai->ai_addr, ai->ai_addrlen);
	b->addrlen = ai->ai_addrlen;
	freeaddrinfo(res);
	format_peer(b);
	return EXIT_OK;
}

/* ---- requests ----------------------------------------------------------- */

static struct request *ring_at(struct conn *c, unsigned k)
{
	return &c->ring[(c->head + k) % c->ring_cap];
}

/* Queues the request now in c->out (its text appended by the caller
 * after this) and records it in flight. */
static struct request *begin_request(struct conn *c, enum op op,
                                     uint64_t arg)
{
	struct request *r = ring_at(c, c->count++);
	r->op = op;
	r->arg = arg;
	r->id = c->next_id++;
	r->sent = now_ns();
	r->answered = false;
	return r;
}

/* Closes a request's text: the UDP id and token, the brace, the LF. */
static void end_request(struct bench *b, struct conn *c,
                        const struct request *r)
{
	if (b->udp) {
		buf_adds(&c->out, ",\"id\":");
		buf_add_u64(&c->out, r->id);
		buf_add(&c->out, b->tail.p, b->tail.len);
	}
	buf_adds(&c->out, "}\n");
}

static void send_auth(struct bench *b, struct conn *c)
{
	const struct request *r = begin_request(c, OP_AUTH, 0);
	buf_adds(&c->out, "{\"op\":\"auth\",\"token\":");
	json_append_string(&c->out, b->o.opt.token, strlen(b->o.opt.token));
	end_request(b, c, r);
}

/* The item of seq: "b<run>:<seq>:" padded with x to item_size. */
static void send_put(struct bench *b, struct conn *c, uint64_t seq)
{
	char head[48];
	const struct request *r = begin_request(c, OP_PUT, seq);
	int n = snprintf(head, sizeof head, "b%s:%" PRIu64 ":", b->run_tag, seq);
	size_t pad = b->o.item_size > (size_t)n ? b->o.item_size - (size_t)n : 0;

	buf_add(&c->out, b->put_head.p, b->put_head.len);
	buf_adds(&c->out, ",\"item\":\"");
	buf_add(&c->out, head, (size_t)n);
	buf_add(&c->out, b->padding, pad);
	buf_addc(&c->out, '"');
	end_request(b, c, r);
}

static void send_get(struct bench *b, struct conn *c)
{
	const struct request *r = begin_request(c, OP_GET, 0);
	buf_add(&c->out, b->get_line.p, b->get_line.len);
	end_request(b, c, r);
	b->gets_outstanding++;
}

static void send_done(struct bench *b, struct conn *c, uint64_t task)
{
	const struct request *r = begin_request(c, OP_DONE, task);
	buf_adds(&c->out, "{\"op\":\"task_done\",\"task\":");
	buf_add_u64(&c->out, task);
	end_request(b, c, r);
	b->dones_in_flight++;
}

/* How many requests a connection keeps in flight in this phase. */
static unsigned window(const struct bench *b, const struct conn *c)
{
	unsigned bulk = b->udp ? b->o.pipeline :
	                b->o.pipeline > BULK_WINDOW ? b->o.pipeline : BULK_WINDOW;
	if (b->phase != PHASE_RUN)
		return bulk;
	return c->role == ROLE_CYCLER ? 1 : b->o.pipeline;
}

/* The last seq the current phase puts, plus one. */
static uint64_t put_limit(const struct bench *b)
{
	return b->phase == PHASE_PREFILL ? b->o.prefill : b->total;
}

/* True if another get can be outstanding: each one must be sure of an
 * item (see the header comment). */
static bool may_get(const struct bench *b)
{
	return b->gets_outstanding + b->delivered + b->puts_failed < b->total;
}

/* Queues what c may send now. */
static void fill(struct bench *b, struct conn *c)
{
	unsigned w = window(b, c);
	bool puts = c->role == ROLE_PRODUCER ||
	            (c->role == ROLE_CYCLER && b->phase == PHASE_PREFILL);
	bool gets = (c->role == ROLE_CONSUMER && b->phase != PHASE_PREFILL) ||
	            (c->role == ROLE_CYCLER && b->phase == PHASE_DRAIN);

	if (c->role == ROLE_CYCLER && b->phase == PHASE_RUN) {
		/* A cycle starts once the last one is over and every prefill
		 * put is answered. */
		if (c->count == 0 && c->cycle_step < 0 &&
		    b->next_seq < b->total && b->cycles < b->o.items) {
			c->cycle_start = now_ns();
			c->cycle_step = OP_PUT;
			send_put(b, c, b->next_seq++);
		}
		return;
	}
	if (puts)
		while (c->count < w && b->next_seq < put_limit(b))
			send_put(b, c, b->next_seq++);
	if (b->phase == PHASE_DRAIN && b->o.no_drain)
		return;
	if (gets)
		while (c->count < w && may_get(b))
			send_get(b, c);
}

/* ---- replies ------------------------------------------------------------ */

/* The unsigned number after "key": in line, searched from from. */
static bool find_u64(const char *line, size_t len, const char *from,
                     const char *key, uint64_t *v)
{
	size_t klen = strlen(key);
	const char *end = line + len;
	const char *p = memmem(from, (size_t)(end - from), key, klen);
	if (!p)
		return false;
	p += klen;
	if (p >= end || *p < '0' || *p > '9')
		return false;
	uint64_t x = 0;
	while (p < end && *p >= '0' && *p <= '9')
		x = x * 10 + (uint64_t)(*p++ - '0');
	*v = x;
	return true;
}

/* An error reply's code and message, for the report. */
static void describe_error(const char *line, size_t len, char *code,
                           size_t code_size, char *msg, size_t msg_size)
{
	json_t *r = json_loadb(line, len, JSON_ALLOW_NUL, NULL);
	json_t *e = json_object_get(r, "error"), *m = json_object_get(r, "message");
	snprintf(code, code_size, "%s", json_is_string(e) ? json_string_value(e) :
	         "protocol");
	if (json_is_string(m))
		snprintf(msg, msg_size, "%s", json_string_value(m));
	else
		snprintf(msg, msg_size, "the reply is not what protocol 1 says: "
		         "%.*s", len > 120 ? 120 : (int)len, line);
	json_decref(r);
}

/*
 * The seq of the item in a get reply, or -1 for an item this run did not
 * put; *task its task.  Our own items are found with memmem (their text
 * has no quote or backslash); anything else is parsed whole.  Returns -2
 * for a reply that is not a get's.
 */
static int64_t get_reply_item(const struct bench *b, const char *line,
                              size_t len, uint64_t *task)
{
	static const char key[] = "\"item\":\"b";
	const char *end = line + len;
	const char *p = memmem(line, len, key, sizeof key - 1);

	if (p && (size_t)(end - p) > sizeof key + 9 &&
	    !memcmp(p + sizeof key - 1, b->run_tag, 8) &&
	    p[sizeof key - 1 + 8] == ':') {
		p += sizeof key - 1 + 9;
		uint64_t seq = 0;
		const char *digits = p;
		while (p < end && *p >= '0' && *p <= '9')
			seq = seq * 10 + (uint64_t)(*p++ - '0');
		const char *q = p < end ? memchr(p, '"', (size_t)(end - p)) : NULL;
		if (p > digits && p < end && *p == ':' && q && seq < b->total &&
		    find_u64(line, len, q, "\"task\":", task))
			return (int64_t)seq;
	}
	json_t *r = json_loadb(line, len, JSON_ALLOW_NUL, NULL);
	json_t *t = json_object_get(r, "task");
	int64_t result = -2;
	if (json_object_get(r, "item") && json_is_integer(t) &&
	    json_integer_value(t) > 0) {
		*task = (uint64_t)json_integer_value(t);
		result = -1;
	}
	json_decref(r);
	return result;
}

static void record(struct bench *b, int which, int64_t sent, int64_t now)
{
	if (b->phase != PHASE_RUN || sent < b->run_start)
		return;
	hist_record(&b->hist[which], now - sent);
	if (b->o.mode == MODE_THROUGHPUT)
		hist_record(&b->hist[HIST_ALL], now - sent);
}

static void got_item(struct bench *b, struct conn *c, const char *line,
                     size_t len)
{
	uint64_t task = 0;
	int64_t seq = get_reply_item(b, line, len, &task);

	if (seq == -2) {
		b->error_replies++;
		note_error(b, "get: the reply has no item and task: %.*s",
		           len > 120 ? 120 : (int)len, line);
		stop(b, EXIT_FAILED, "%s sent a reply this client cannot read",
		     b->peer);
		return;
	}
	if (seq == -1) {
		b->foreign++;
	} else if (b->seen[seq / 8] & (1u << (seq % 8))) {
		b->duplicates++;
	} else {
		b->seen[seq / 8] |= (uint8_t)(1u << (seq % 8));
		b->delivered++;
	}
	send_done(b, c, task);
}

static void end_run(struct bench *b, int64_t now)
{
	b->run_end = now;
	b->phase = PHASE_DRAIN;
}

/* Handles the reply to request r of c. */
static void on_reply(struct bench *b, struct conn *c, struct request *r,
                     const char *line, size_t len)
{
	static const char ok_prefix[] = "{\"ok\":true";
	int64_t now = now_ns();
	bool ok = len >= sizeof ok_prefix - 1 &&
	          !memcmp(line, ok_prefix, sizeof ok_prefix - 1);

	if (r->op == OP_GET)
		b->gets_outstanding--;
	else if (r->op == OP_DONE)
		b->dones_in_flight--;

	if (!ok) {
		char code[64], msg[MESSAGE_MAX - 80];
		describe_error(line, len, code, sizeof code, msg, sizeof msg);
		/* A UDP get waits a little only, and is asked again: by fill()
		 * for a consumer, here for a cycle waiting on it. */
		if (r->op == OP_GET && b->udp && !strcmp(code, "empty")) {
			if (c->cycle_step == OP_GET)
				send_get(b, c);
			return;
		}
		if (r->op == OP_PUT)
			b->puts_failed++;
		b->error_replies++;
		note_error(b, "%s: %s: %s", op_names[r->op], code, msg);
		stop(b, EXIT_FAILED, "%s answered an error", b->peer);
		return;
	}
	switch (r->op) {
	case OP_AUTH:
		break;
	case OP_PUT:
		b->puts_ok++;
		record(b, HIST_PUT, r->sent, now);
		if (c->cycle_step == OP_PUT) {
			c->cycle_step = OP_GET;
			send_get(b, c);
		}
		break;
	case OP_GET:
		record(b, HIST_GET, r->sent, now);
		got_item(b, c, line, len);
		if (c->cycle_step == OP_GET)
			c->cycle_step = OP_DONE;
		break;
	case OP_DONE:
		b->acked++;
		record(b, HIST_DONE, r->sent, now);
		if (c->cycle_step == OP_DONE) {
			c->cycle_step = -1;
			b->cycles++;
			if (b->phase == PHASE_RUN)
				hist_record(&b->hist[HIST_ALL], now - c->cycle_start);
		}
		/* The clock stops at the n-th item, not at the end of the read
		 * that brought it. */
		if (b->phase == PHASE_RUN &&
		    ((b->o.mode == MODE_THROUGHPUT && ++b->acked_run >= b->o.items) ||
		     (b->o.mode != MODE_THROUGHPUT && b->cycles >= b->o.items)))
			end_run(b, now);
		break;
	}
}

/* Drops answered requests from the head of c's ring. */
static void pop_answered(struct conn *c)
{
	while (c->count && c->ring[c->head].answered) {
		c->head = (c->head + 1) % c->ring_cap;
		c->count--;
	}
}

/* One reply line of c: TCP answers the oldest request, UDP the one whose
 * id it echoes (a late answer to a request counted lost is dropped). */
static void on_line(struct bench *b, struct conn *c, const char *line,
                    size_t len)
{
	struct request *r = NULL;

	if (!b->udp) {
		if (!c->count) {
			stop(b, EXIT_FAILED, "%s sent a reply to no request", b->peer);
			return;
		}
		r = &c->ring[c->head];
		r->answered = true;
		on_reply(b, c, r, line, len);
		pop_answered(c);
		return;
	}
	uint64_t id;
	const char *comma = memchr(line, ',', len);
	if (!comma || !find_u64(line, len, comma, "\"id\":", &id))
		id = 0;   /* an error without our id: it can only be counted */
	for (unsigned k = 0; k < c->count; k++) {
		struct request *q = ring_at(c, k);
		if (!q->answered && q->id == id) {
			r = q;
			break;
		}
	}
	if (!r) {
		if (len < 10 || memcmp(line, "{\"ok\":true", 10) != 0) {
			char code[64], msg[MESSAGE_MAX - 80];
			describe_error(line, len, code, sizeof code, msg, sizeof msg);
			b->error_replies++;
			note_error(b, "%s: %s", code, msg);
		}
		return;
	}
	r->answered = true;
	on_reply(b, c, r, line, len);
	pop_answered(c);
}

/* A UDP request with no reply in time is lost: an error, not sent again. */
static void expire_lost(struct bench *b, struct conn *c, int64_t now)
{
	for (unsigned k = 0; k < c->count; k++) {
		struct request *r = ring_at(c, k);
		int64_t wait = (int64_t)UDP_REPLY_WAIT_MS +
		               (r->op == OP_GET ? UDP_GET_WAIT_MS : 0);
		if (r->answered || now - r->sent < wait * 1000000)
			continue;
		r->answered = true;
		b->lost++;
		note_error(b, "%s: no reply within %.1f s (UDP; lost, not sent "
		           "again)", op_names[r->op], (double)wait / 1000);
		switch (r->op) {
		case OP_PUT:
			b->puts_failed++;
			break;
		case OP_GET:
			b->gets_outstanding--;
			break;
		case OP_DONE:
			b->dones_in_flight--;
			break;
		case OP_AUTH:
			break;
		}
		if (c->cycle_step >= 0) {
			/* A lost step ends its cycle; the next one starts afresh. */
			c->cycle_step = -1;
			b->cycles++;
		}
	}
	pop_answered(c);
}

/* ---- I/O ---------------------------------------------------------------- */

static void connection_lost(struct bench *b, const char *how)
{
	stop(b, EXIT_CONNECTION, "the connection to %s is lost: %s", b->peer,
	     how);
}

/* Writes what c has queued, as far as the socket takes it. */
static void flush(struct bench *b, struct conn *c)
{
	while (c->out_off < c->out.len) {
		const char *p = c->out.p + c->out_off;
		size_t n = c->out.len - c->out_off;
		if (b->udp)
			n = (size_t)((const char *)memchr(p, '\n', n) - p);
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;   /* poll says when to go on */
			if (b->udp && errno == ECONNREFUSED)
				stop(b, EXIT_CONNECTION, "cannot reach %s over UDP: %s",
				     b->peer, strerror(errno));
			else
				connection_lost(b, strerror(errno));
			return;
		}
		c->out_off += b->udp ? n + 1 : (size_t)w;
	}
	buf_reset(&c->out);
	c->out_off = 0;
}

static void read_tcp(struct bench *b, struct conn *c)
{
	for (;;) {
		if (c->in_off > 0) {
			buf_consume(&c->in, c->in_off);
			c->in_off = 0;
		}
		buf_reserve(&c->in, READ_CHUNK);
		ssize_t n = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len,
		                 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			connection_lost(b, n == 0 ? "the daemon closed it" :
			                strerror(errno));
			return;
		}
		c->in.len += (size_t)n;

		struct frame f;
		enum frame_status s;
		while (!b->status &&
		       (s = frame_next(c->in.p + c->in_off, c->in.len - c->in_off,
		                       REPLY_MAX, &f)) != FRAME_NEED_MORE) {
			if (s == FRAME_TOO_LARGE) {
				stop(b, EXIT_FAILED, "%s sent a reply longer than %u bytes",
				     b->peer, REPLY_MAX);
				return;
			}
			if (s == FRAME_OK)
				on_line(b, c, f.start, f.len);
			c->in_off += f.consumed;
		}
		if (b->status)
			return;
	}
}

static void read_udp(struct bench *b, struct conn *c)
{
	buf_reserve(&c->in, 65536);
	for (;;) {
		ssize_t n = recv(c->fd, c->in.p, c->in.cap, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n < 0) {
			stop(b, EXIT_CONNECTION, "cannot reach %s over UDP: %s",
			     b->peer, strerror(errno));
			return;
		}
		size_t len = (size_t)n;
		b->last_reply = now_ns();
		while (len && (c->in.p[len - 1] == '\n' || c->in.p[len - 1] == '\r'))
			len--;
		on_line(b, c, c->in.p, len);
		if (b->status)
			return;
	}
}

/* ---- the run ------------------------------------------------------------ */

static bool all_puts_answered(const struct bench *b)
{
	return b->puts_ok + b->puts_failed >= b->next_seq;
}

/* Moves on from a phase once its work is done; true when all is. */
static bool advance(struct bench *b)
{
	int64_t now = now_ns();

	if (b->phase == PHASE_PREFILL && b->next_seq >= b->o.prefill &&
	    all_puts_answered(b)) {
		b->phase = PHASE_RUN;
		b->run_start = now;
	}
	if (b->phase == PHASE_RUN) {
		/* The run normally ends in on_reply; this is the end of one
		 * whose lost puts leave fewer than n items to take. */
		bool over = b->o.mode == MODE_LATENCY ? b->cycles >= b->o.items :
		            b->puts_failed && b->next_seq >= b->total &&
		            all_puts_answered(b) && !b->gets_outstanding &&
		            !b->dones_in_flight;
		if (over)
			end_run(b, now);
	}
	if (b->o.no_drain)
		/* Gets still out are dropped with their connection: an item
		 * one of them takes meanwhile goes back to the queue. */
		return b->phase == PHASE_DRAIN && all_puts_answered(b) &&
		       !b->dones_in_flight;
	return b->phase == PHASE_DRAIN && b->next_seq >= b->total &&
	       all_puts_answered(b) &&
	       b->delivered + b->puts_failed >= b->total &&
	       !b->dones_in_flight && !b->gets_outstanding;
}

static void loop(struct bench *b)
{
	struct pollfd *pfd = xcalloc(b->nconns, sizeof *pfd);
	int64_t last_expiry = now_ns();

	while (!b->status && !advance(b)) {
		for (unsigned i = 0; i < b->nconns && !b->status; i++) {
			struct conn *c = &b->conns[i];
			fill(b, c);
			flush(b, c);
			pfd[i].fd = c->fd;
			pfd[i].events = POLLIN |
			                (c->out_off < c->out.len ? POLLOUT : 0);
		}
		if (b->status)
			break;
		int64_t now = now_ns();
		if (now >= b->deadline) {
			stop(b, EXIT_TIMEOUT, "--timeout ran out (%g s)", b->o.timeout);
			break;
		}
		int64_t left_ms = (b->deadline - now) / 1000000 + 1;
		int r = poll(pfd, b->nconns, left_ms < TICK_MS ? (int)left_ms :
		             TICK_MS);
		if (r < 0 && errno != EINTR) {
			stop(b, EXIT_FAILED, "poll: %s", strerror(errno));
			break;
		}
		for (unsigned i = 0; r > 0 && i < b->nconns && !b->status; i++) {
			if (!pfd[i].revents)
				continue;
			if (b->udp)
				read_udp(b, &b->conns[i]);
			else
				read_tcp(b, &b->conns[i]);
		}
		now = now_ns();
		if (b->udp && now - last_expiry >= TICK_MS * 1000000LL) {
			last_expiry = now;
			for (unsigned i = 0; i < b->nconns; i++)
				expire_lost(b, &b->conns[i], now);
			/* Losses and then silence: the daemon is gone, and waiting
			 * out each request in turn would take for ever. */
			if (b->lost && now - b->last_reply >= UDP_SILENCE_MS * 1000000LL)
				stop(b, EXIT_CONNECTION, "no reply from %s for %d s over "
				     "UDP", b->peer, UDP_SILENCE_MS / 1000);
		}
	}
	free(pfd);
}

/* Opens every connection; TCP ones with a token authenticate first. */
static int open_conns(struct bench *b)
{
	unsigned max_window = BULK_WINDOW > b->o.pipeline ? BULK_WINDOW :
	                      b->o.pipeline;

	b->nconns = b->o.mode == MODE_LATENCY ? 1 :
	            b->o.producers + b->o.consumers;
	b->conns = xcalloc(b->nconns, sizeof *b->conns);
	for (unsigned i = 0; i < b->nconns; i++) {
		struct conn *c = &b->conns[i];
		c->fd = -1;
		c->role = b->o.mode == MODE_LATENCY ? ROLE_CYCLER :
		          i < b->o.producers ? ROLE_PRODUCER : ROLE_CONSUMER;
		/* The window, an auth ahead of it, and a task_done queued while
		 * the get it answers is still in the ring. */
		c->ring_cap = max_window + 2;
		c->ring = xcalloc(c->ring_cap, sizeof *c->ring);
		c->next_id = 1;
		c->cycle_step = -1;
	}
	for (unsigned i = 0; i < b->nconns; i++) {
		struct conn *c = &b->conns[i];
		c->fd = open_socket((struct sockaddr *)&b->addr, b->addrlen, b->udp);
		if (c->fd < 0) {
			fprintf(stderr, "joinq bench: cannot connect to %s: %s "
			        "(connection %u of %u)\n", b->peer,
			        errno == ETIMEDOUT ? "timed out" : strerror(errno),
			        i + 1, b->nconns);
			return EXIT_CONNECTION;
		}
		if (!b->udp && b->o.opt.token)
			send_auth(b, c);
	}
	return EXIT_OK;
}

/* The fixed parts of the requests. */
static void build_requests(struct bench *b)
{
	buf_adds(&b->put_head, "{\"op\":\"put\",\"queue\":");
	json_append_string(&b->put_head, b->o.queue, strlen(b->o.queue));
	buf_adds(&b->get_line, "{\"op\":\"get\",\"queue\":");
	json_append_string(&b->get_line, b->o.queue, strlen(b->o.queue));
	if (b->udp) {
		buf_adds(&b->get_line, ",\"timeout\":" UDP_GET_WAIT);
		if (b->o.opt.token) {
			buf_adds(&b->tail, ",\"token\":");
			json_append_string(&b->tail, b->o.opt.token,
			                   strlen(b->o.opt.token));
		}
	}
	b->padding = xmalloc(b->o.item_size + 1);
	memset(b->padding, 'x', b->o.item_size);
	b->padding[b->o.item_size] = '\0';
}

/* A tag of this run, so that its items are told from any others. */
static void pick_run_tag(struct bench *b)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint32_t x = (uint32_t)ts.tv_nsec ^ ((uint32_t)ts.tv_sec << 7) ^
	             ((uint32_t)getpid() << 16) ^ (uint32_t)getpid();
	snprintf(b->run_tag, sizeof b->run_tag, "%08" PRIx32, x);
}

/* ---- the report --------------------------------------------------------- */

static double ms_of(uint64_t ns)
{
	return (double)ns / 1e6;
}

static void print_hist_row(const char *name, const struct histogram *h)
{
	printf("  %-10s %8.3f %8.3f %8.3f %8.3f %10" PRIu64 "\n", name,
	       ms_of(hist_quantile(h, 0.5)), ms_of(hist_quantile(h, 0.99)),
	       ms_of(hist_quantile(h, 0.999)), ms_of(h->max), h->count);
}

static double elapsed_s(const struct bench *b)
{
	if (!b->run_start)
		return 0;
	int64_t end = b->run_end ? b->run_end : now_ns();
	return (double)(end - b->run_start) / 1e9;
}

/* Items the timed run finished: cycles, or items acknowledged. */
static uint64_t items_done(const struct bench *b)
{
	return b->o.mode == MODE_LATENCY ? b->cycles : b->acked_run;
}

static void print_text(const struct bench *b, uint64_t missing,
                       uint64_t left)
{
	static const char *const names[NHIST] = { "put", "get", "task_done",
	                                          "all" };
	double el = elapsed_s(b);

	printf("joinq bench: %s, %s %s, queue %s\n",
	       b->o.mode == MODE_LATENCY ? "latency" : "throughput",
	       b->udp ? "udp" : "tcp", b->peer, b->o.queue);
	if (b->o.mode == MODE_LATENCY)
		printf("  1 connection, %" PRIu64 " cycles of put, get, task_done, "
		       "items of %zu bytes", b->o.items, b->o.item_size);
	else
		printf("  %u producers, %u consumers, %" PRIu64 " items of %zu "
		       "bytes, pipeline %u", b->o.producers, b->o.consumers,
		       b->o.items, b->o.item_size, b->o.pipeline);
	if (b->o.prefill)
		printf(", prefill %" PRIu64, b->o.prefill);
	printf("\n  elapsed %.3f s, %.0f items/s\n", el,
	       el > 0 ? (double)items_done(b) / el : 0.0);
	printf("  latency ms      p50      p99    p99.9      max      count\n");
	if (b->o.mode == MODE_LATENCY) {
		print_hist_row("cycle", &b->hist[HIST_ALL]);
	} else {
		for (int i = 0; i < NHIST; i++)
			print_hist_row(names[i], &b->hist[i]);
	}
	printf("  delivered %" PRIu64 " of %" PRIu64 ": %" PRIu64 " missing, %"
	       PRIu64 " duplicate, %" PRIu64 " foreign; %" PRIu64 " errors\n",
	       b->delivered, b->total, missing, b->duplicates, b->foreign,
	       b->error_replies + b->lost);
	if (left)
		printf("  left in the queue (--no-drain): %" PRIu64 "\n", left);
	if (b->first_error[0])
		printf("  first error: %s\n", b->first_error);
}

static json_t *hist_json(const struct histogram *h)
{
	return json_pack("{s:f, s:f, s:f, s:f, s:I}",
	                 "p50", (double)hist_quantile(h, 0.5) / 1e3,
	                 "p99", (double)hist_quantile(h, 0.99) / 1e3,
	                 "p999", (double)hist_quantile(h, 0.999) / 1e3,
	                 "max", (double)h->max / 1e3,
	                 "count", (json_int_t)h->count);
}

static void print_json(const struct bench *b, uint64_t missing,
                       uint64_t left, int status)
{
	double el = elapsed_s(b);
	json_t *ops = json_object();
	if (b->o.mode == MODE_THROUGHPUT) {
		json_object_set_new(ops, "put", hist_json(&b->hist[HIST_PUT]));
		json_object_set_new(ops, "get", hist_json(&b->hist[HIST_GET]));
		json_object_set_new(ops, "task_done",
		                    hist_json(&b->hist[HIST_DONE]));
	}
	json_t *r = json_pack(
		"{s:s, s:s, s:s, s:s, s:i, s:i, s:I, s:I, s:I, s:i, s:f, s:f,"
		" s:o, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:i}",
		"mode", b->o.mode == MODE_LATENCY ? "latency" : "throughput",
		"transport", b->udp ? "udp" : "tcp",
		"daemon", b->peer,
		"queue", b->o.queue,
		"producers", b->o.mode == MODE_LATENCY ? 1 : (int)b->o.producers,
		"consumers", b->o.mode == MODE_LATENCY ? 1 : (int)b->o.consumers,
		"items", (json_int_t)b->o.items,
		"item_size", (json_int_t)b->o.item_size,
		"prefill", (json_int_t)b->o.prefill,
		"pipeline", b->o.mode == MODE_LATENCY ? 1 : (int)b->o.pipeline,
		"elapsed_s", el,
		"items_per_s", el > 0 ? (double)items_done(b) / el : 0.0,
		"latency_us", hist_json(&b->hist[HIST_ALL]),
		"ops", ops,
		"delivered", (json_int_t)b->delivered,
		"missing", (json_int_t)missing,
		"left", (json_int_t)left,
		"duplicates", (json_int_t)b->duplicates,
		"foreign", (json_int_t)b->foreign,
		"errors", (json_int_t)b->error_replies + (json_int_t)b->lost,
		"lost", (json_int_t)b->lost,
		"items_done", (json_int_t)items_done(b),
		"ok", status == EXIT_OK,
		"exit_status", status);
	if (b->first_error[0])
		json_object_set_new(r, "first_error", json_string(b->first_error));
	if (b->why[0])
		json_object_set_new(r, "stopped", json_string(b->why));
	char *text = json_dumps(r, JSON_COMPACT | JSON_REAL_PRECISION(10));
	puts(text);
	free(text);
	json_decref(r);
}

/* Reports the run and returns the exit status. */
static int report(const struct bench *b)
{
	/* Without a drain, what the run did not take is left, not missing;
	 * items not yet put when a run stopped short are missing. */
	uint64_t left = b->o.no_drain && !b->status ?
	                b->total - b->delivered : 0;
	uint64_t missing = b->total - b->delivered - left;
	int status = b->status;

	if (!status && (missing || b->duplicates || b->foreign ||
	                b->error_replies || b->lost))
		status = EXIT_FAILED;
	if (b->o.json)
		print_json(b, missing, left, status);
	else
		print_text(b, missing, left);
	if (b->why[0])
		fprintf(stderr, "joinq bench: %s\n", b->why);
	if (b->first_error[0] && status)
		fprintf(stderr, "joinq bench: first error: %s\n", b->first_error);
	if (!b->status && status)
		fprintf(stderr, "joinq bench: the check failed: %" PRIu64
		        " missing, %" PRIu64 " duplicate, %" PRIu64 " foreign, %"
		        PRIu64 " errors\n", missing, b->duplicates, b->foreign,
		        b->error_replies + b->lost);
	return status;
}

static void bench_free(struct bench *b)
{
	for (unsigned i = 0; i < b->nconns; i++) {
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
	free(b->padding);
	free(b->seen);
}

int bench_main(const struct jq_options *opt, int argc, char **argv)
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
	b->udp = opt->transport == JQ_UDP;
	b->total = b->o.prefill + b->o.items;
	b->seen = xcalloc((size_t)(b->total / 8 + 1), 1);
	for (int i = 0; i < NHIST; i++)
		hist_init(&b->hist[i]);
	pick_run_tag(b);
	build_requests(b);
	b->phase = PHASE_PREFILL;

	if ((status = resolve(b)) || (status = open_conns(b))) {
		bench_free(b);
		free(b);
		return status;
	}
	b->deadline = now_ns() + (int64_t)(b->o.timeout * 1e9);
	b->last_reply = now_ns();
	loop(b);
	status = report(b);
	bench_free(b);
	free(b);
	return status;
}
