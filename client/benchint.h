/*
 * benchint.h - what the parts of `joinq bench` share: its options, the
 * run's state (connections, requests in flight, counts, histograms), and
 * the entry points of the load generator (benchload.c) and of the
 * histograms and report (benchreport.c).  bench.c holds the design.
 */
#ifndef JQ_BENCHINT_H
#define JQ_BENCHINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include "buf.h"
#include "cli.h"
#include "joinq.h"
#include "tlsc.h"

#define MESSAGE_MAX 256

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
	bool reconnect;             /* latency mode: each cycle on a new
	                               connection */
	const struct tls_flags *tls;
};

/* ---- the histogram (benchreport.c) ---------------------------------------- */

struct histogram {
	uint64_t count, max;
	uint64_t *buckets;          /* NBUCKETS */
};

void hist_init(struct histogram *h);
void hist_free(struct histogram *h);
void hist_record(struct histogram *h, int64_t ns);

/* ---- the run's state -------------------------------------------------------- */

enum role { ROLE_PRODUCER, ROLE_CONSUMER, ROLE_CYCLER };
enum op { OP_AUTH, OP_PUT, OP_GET, OP_DONE };
enum phase { PHASE_PREFILL, PHASE_RUN, PHASE_DRAIN };
enum { HIST_PUT, HIST_GET, HIST_DONE, HIST_ALL, NHIST };

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
	struct tlsc sess;           /* TLS: the session on fd */
	enum role role;
	struct request *ring;       /* requests in flight, oldest first */
	unsigned ring_cap, head, count;
	struct buf out;             /* requests not yet written; UDP: one a
	                               line, each line a datagram */
	size_t out_off;
	struct buf in;              /* TCP: bytes read, not yet parsed */
	size_t in_off;
	size_t in_scanned;          /* of in's partial line, bytes with no LF */
	uint64_t next_id;           /* UDP */
	bool no_gso;                /* UDP: the kernel refused UDP_SEGMENT */
	int cycle_step;             /* latency mode: the op in flight, or -1 */
	int64_t cycle_start;
};

struct udp_rx;

struct bench {
	struct bench_options o;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	char peer[INET6_ADDRSTRLEN + 16];
	char host[256], port[32];   /* the address used, as given */
	bool udp;
	struct jq_tls *tls;         /* NULL: plain TCP */

	struct conn *conns;
	unsigned nconns;
	struct udp_rx *rx;          /* UDP: recvmmsg's buffers, shared */
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

/* Monotonic nanoseconds. */
int64_t now_ns(void);

/* Ends the run with status; the first reason given is the one reported
 * (benchload.c). */
void stop(struct bench *b, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* One reply line of c, its LF taken off (benchload.c). */
void on_line(struct bench *b, struct conn *c, const char *line, size_t len);

/* Writes what c has queued, as far as the socket takes it (benchio.c). */
void bench_flush(struct bench *b, struct conn *c);
/* Reads what c's socket holds, each reply line to on_line (benchio.c). */
void bench_read(struct bench *b, struct conn *c);

/* Runs the benchmark (benchload.c): finds the daemon, opens the
 * connections, and runs until done, --timeout, or a failure (b->status
 * and b->why say which).  Returns non-zero, the exit status, only when
 * it cannot start. */
int bench_run(struct bench *b);

/* Prints the report of a run (benchreport.c); returns the exit status. */
int bench_report(const struct bench *b);

#endif
