/*
 * benchreport.c - what `joinq bench` measured: the latency histograms
 * (log-linear, as HdrHistogram's) and the report, as text or --json,
 * with the check that every item put was delivered exactly once.
 */
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "benchint.h"
#include "cli.h"
#include "xalloc.h"

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


void hist_init(struct histogram *h)
{
	h->count = h->max = 0;
	h->buckets = xcalloc(NBUCKETS, sizeof *h->buckets);
}

void hist_free(struct histogram *h)
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

void hist_record(struct histogram *h, int64_t ns)
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
	       b->udp ? "udp" : b->tls ? "tls" : "tcp", b->peer, b->o.queue);
	if (b->o.mode == MODE_LATENCY)
		printf("  %s, %" PRIu64 " cycles of put, get, task_done, "
		       "items of %zu bytes", b->o.reconnect ? "a new connection "
		       "per cycle" : "1 connection", b->o.items, b->o.item_size);
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
		"transport", b->udp ? "udp" : b->tls ? "tls" : "tcp",
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
	json_object_set_new(r, "reconnect", json_boolean(b->o.reconnect));
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
int bench_report(const struct bench *b)
{
	/* Without a drain, what the run did not take is left, not missing;
	 * items not yet put when a run stopped short are missing. */
	uint64_t left = b->o.no_drain && !b->status ?
	                b->total - b->delivered : 0;
	uint64_t missing = b->total - b->delivered - left;
	int status = b->status;

	if (!status && (missing || b->duplicates || b->foreign ||
	                b->error_replies || b->lost))
		status = EXIT_ERROR;
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

