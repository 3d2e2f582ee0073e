/*
 * bench.h - `joinq bench`, the load generator (bench.c): producers and
 * consumers on connections of their own, a latency histogram, and a check
 * that every item put was delivered exactly once.
 */
#ifndef JQ_BENCH_H
#define JQ_BENCH_H

#include "cli.h"
#include "joinq.h"

/* For joinq's command list; `joinq bench --help` tells the rest. */
#define BENCH_USAGE "bench [--producers N] [--consumers N] [-n N] [-d BYTES]\n" \
	"      [-P N] [--mode throughput|latency] [--queue NAME] [--prefill N]\n" \
	"      [--no-drain] [--reconnect] [--timeout S] [--json]"
extern const char bench_help[];

/*
 * Runs `joinq bench`.  argv[0] names the command for messages ("joinq
 * bench"); the rest are its options.  opt says where the daemon is and how
 * to talk to it (TCP or UDP, the token).  Returns the exit status: 0 every
 * item delivered exactly once and no error, 1 an error reply, a lost
 * datagram, a missing or duplicate item, 2 usage, 5 --timeout ran out,
 * 6 cannot connect or connection lost.
 */
int bench_main(const struct jq_options *opt, const struct tls_flags *tls,
               int argc, char **argv);

#endif
