/*
 * joinq.c - the joinq command: one queue op per run, from a shell or a
 * script.  Every network call goes through libjoinq (joinq.h); this file
 * owns the command line, the output formats and the exit status.
 *
 * put with no ITEM reads stdin, one item a line, and pipelines over TCP:
 * up to WINDOW requests stay in flight, so a million lines take seconds
 * rather than a million round trips.
 *
 * join --progress (and put --join --progress) watches the queue from a
 * thread of its own, on a second connection, while the main thread waits
 * in one plain join: polling with short joins instead could miss the
 * count touching zero between two of them, and the display must never
 * change when or how the join ends.
 *
 * Exit status (also in --help):
 *   0  success
 *   1  any other error: an error reply (unknown_task, bad_request, ...)
 *      or a request that failed
 *   2  usage error: a bad option, number or task id, or an item that is
 *      not valid JSON (--json) or not valid UTF-8
 *   3  empty: get found nothing
 *   4  full: put could not enqueue
 *   5  timeout: join timed out
 *   6  cannot connect, connection lost, or no reply in time
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "bench.h"
#include "buf.h"
#include "jobject.h"
#include "joinq.h"
#include "reply.h"
#include "utf8.h"
#include "work.h"
#include "xalloc.h"

enum {
	EXIT_OK = 0,
	EXIT_ERROR = 1,
	EXIT_USAGE = 2,
	EXIT_EMPTY = 3,
	EXIT_FULL = 4,
	EXIT_TIMEOUT = 5,
	EXIT_CONNECTION = 6,
};

#define WINDOW 1024                 /* put requests in flight at most */
#define WINDOW_BYTES (512u << 10)   /* and their bytes at most */
#define READ_CHUNK 65536
#define TOKEN_MAX 4096
#define WHY_MAX 256                 /* why an item is bad */

/* Command options; each command accepts some of them. */
enum {
	OPT_JSON = 1 << 0,
	OPT_NOWAIT = 1 << 1,
	OPT_TIMEOUT = 1 << 2,
	OPT_SHOW_TASK = 1 << 3,
	OPT_LEASE = 1 << 4,
	OPT_DELAY = 1 << 5,
	OPT_VERBOSE = 1 << 6,
	OPT_JOIN = 1 << 7,
	OPT_JOIN_TIMEOUT = 1 << 8,
	OPT_PROGRESS = 1 << 9,
	OPT_OWN_ARGS = 1 << 15,     /* the command parses its own argv (work) */
};

struct cmd_options {
	bool json, show_task, verbose;
	struct jq_wait wait;        /* --nowait, --timeout */
	double lease, delay;        /* 0: none */
	bool join, progress;        /* put --join, --progress */
	double join_timeout;        /* put --join-timeout; < 0: forever */
};

/* What every command gets: where the daemon is and which queue. */
struct session {
	struct jq_options opt;
	const char *queue;          /* NULL: the daemon's "default" */
	const char *cmd;            /* the command's name, for messages */
};

struct command {
	const char *name;
	int (*run)(struct session *s, const struct cmd_options *o, int argc,
	           char **argv);
	unsigned options;           /* OPT_* it accepts */
	int min_args, max_args;     /* max_args < 0: any number */
	const char *usage;
	const char *help;
};

static const char *const exit_status_help =
	"Exit status:\n"
	"  0  success\n"
	"  1  any other error: an error reply (unknown_task, bad_request, ...)\n"
	"     or a request that failed\n"
	"  2  usage error: bad option, number or task id; an item that is not\n"
	"     valid JSON (--json) or not valid UTF-8\n"
	"  3  empty: get found nothing\n"
	"  4  full: put could not enqueue\n"
	"  5  timeout: join timed out\n"
	"  6  cannot connect, connection lost, or no reply in time\n";

/* ---- errors ------------------------------------------------------------- */

static int exit_status(int code)
{
	switch (code) {
	case JQ_OK:
		return EXIT_OK;
	case JQ_EMPTY:
		return EXIT_EMPTY;
	case JQ_FULL:
		return EXIT_FULL;
	case JQ_TIMEOUT:
		return EXIT_TIMEOUT;
	case JQ_ERR_CONNECT:
	case JQ_ERR_CLOSED:
	case JQ_ERR_IO_TIMEOUT:
		return EXIT_CONNECTION;
	case JQ_ERR_ARGUMENT:
		return EXIT_USAGE;
	default:
		return EXIT_ERROR;
	}
}

/* "joinq: WHERE: CODE: message" for the daemon's errors (the code is what
 * scripts match on); the library's own messages stand alone. */
static int report(const char *where, const struct jq_error *e)
{
	fprintf(stderr, "joinq: %s%s", where ? where : "", where ? ": " : "");
	if (e->code > 0 && e->code < JQ_NERR)
		fprintf(stderr, "%s: ", jq_strcode(e->code));
	fprintf(stderr, "%s\n", e->message);
	return exit_status(e->code);
}

static int usage_error(const struct session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int usage_error(const struct session *s, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "joinq: %s%s", s->cmd ? s->cmd : "", s->cmd ? ": " : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'joinq %s%s--help'.\n", s->cmd ? s->cmd : "",
	        s->cmd ? " " : "");
	return EXIT_USAGE;
}

/* ---- numbers ------------------------------------------------------------ */

/* A number of seconds: finite, >= 0, nothing after it. */
static bool parse_seconds(const char *text, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(text, &end);
	if (end == text || *end || errno || !isfinite(v) || v < 0)
		return false;
	*out = v;
	return true;
}

/* A task id: digits only, positive, below 2^53 (PROTOCOL.md). */
static bool parse_task(const char *text, uint64_t *out)
{
	if (!*text || strspn(text, "0123456789") != strlen(text))
		return false;
	errno = 0;
	unsigned long long v = strtoull(text, NULL, 10);
	if (errno || v == 0 || v >= (1ULL << 53))
		return false;
	*out = v;
	return true;
}

static bool parse_port(const char *text)
{
	if (!*text || strspn(text, "0123456789") != strlen(text) ||
	    strlen(text) > 5)
		return false;
	long v = strtol(text, NULL, 10);
	return v >= 1 && v <= 65535;
}

/* ---- connecting --------------------------------------------------------- */

static jq_client *open_client(const struct session *s, int *status)
{
	struct jq_error err;
	jq_client *c = jq_connect(&s->opt, &err);
	if (!c)
		*status = report(NULL, &err);
	return c;
}

/* The token: the file's first line, without the line end. */
static int read_token(const struct session *s, const char *path, char **token)
{
	char buf[TOKEN_MAX + 1];
	FILE *f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "joinq: cannot open the token file %s: %s\n", path,
		        strerror(errno));
		return EXIT_ERROR;
	}
	size_t n = fread(buf, 1, TOKEN_MAX, f);
	bool failed = ferror(f);
	fclose(f);
	if (failed) {
		fprintf(stderr, "joinq: cannot read the token file %s\n", path);
		return EXIT_ERROR;
	}
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	if (!buf[0])
		return usage_error(s, "the token file %s is empty", path);
	*token = xstrdup(buf);
	return EXIT_OK;
}

/* ---- join, and its progress display ------------------------------------ */

#define TICK_MS 250                 /* progress: a sample, a bar redrawn */
#define LOG_EVERY 5.0               /* seconds between plain progress lines */
#define RATE_SAMPLES 21             /* the rate spans the last 5 s of ticks */
#define BAR_MAX 40                  /* the widest bar, in characters */

/*
 * The watcher of a join: a thread with its own connection asks qsize every
 * tick and draws what it sees.  It owns every field but stop[1], which the
 * joining thread closes when its join returns; it reads the rest only after
 * pthread_join.
 */
struct progress {
	struct session s;           /* a copy with an io_timeout of its own */
	jq_client *c;
	int stop[2];                /* a pipe; its write end closed: stop */
	pthread_t thread;
	bool tty;                   /* stderr is a terminal: draw a bar */
	bool drawn;                 /* a bar is on the terminal's last line */
	double start, logged;       /* when it began, and last printed a line */
	uint64_t peak;              /* the bar's 100%: most unfinished seen */
	struct sample {
		double t;
		uint64_t unfinished;
	} ring[RATE_SAMPLES];
	unsigned nsamples;          /* taken in all; ring holds the last ones */
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *queue_name(const struct session *s)
{
	return s->queue ? s->queue : "default";
}

/* n with a comma every three digits: 1234567 is "1,234,567". */
static void group_digits(uint64_t n, char *out, size_t size)
{
	char digits[24];
	int len = snprintf(digits, sizeof digits, "%llu", (unsigned long long)n);
	size_t j = 0;

	for (int i = 0; i < len && j + 2 < size; i++) {
		if (i && (len - i) % 3 == 0)
			out[j++] = ',';
		out[j++] = digits[i];
	}
	out[j] = '\0';
}

/* "45s", "2m05s", "3h02m". */
static void format_duration(double seconds, char *out, size_t size)
{
	if (!(seconds < 1e9))
		seconds = 1e9;      /* and beyond: all the same to a person */
	unsigned long long t = seconds > 0 ? (unsigned long long)(seconds + 0.5)
	                                   : 0;
	if (t >= 3600)
		snprintf(out, size, "%lluh%02llum", t / 3600, t / 60 % 60);
	else if (t >= 60)
		snprintf(out, size, "%llum%02llus", t / 60, t % 60);
	else
		snprintf(out, size, "%llus", t);
}

/* Tasks finished per second over the last few seconds of samples; a count
 * that grew (puts outran the workers) makes 0.  -1: not known yet. */
static double progress_rate(const struct progress *p)
{
	unsigned n = p->nsamples < RATE_SAMPLES ? p->nsamples : RATE_SAMPLES;
	if (n < 2)
		return -1;
	const struct sample *last = &p->ring[(p->nsamples - 1) % RATE_SAMPLES];
	const struct sample *first = &p->ring[(p->nsamples - n) % RATE_SAMPLES];
	double dt = last->t - first->t;
	if (dt < 0.2)
		return -1;
	if (first->unfinished <= last->unfinished)
		return 0;
	return (double)(first->unfinished - last->unfinished) / dt;
}

/* "4,321 unfinished, 1,234 done, 250/s, ETA 17s".  "done" is how far the
 * count has come down from its peak.  A log gets plain digits, which
 * scripts read more easily than grouped ones. */
static void progress_text(const struct progress *p, uint64_t unfinished,
                          char *out, size_t size)
{
	char left[32], done[32], rate_text[32], eta[32];
	double rate = progress_rate(p);

	if (p->tty) {
		group_digits(unfinished, left, sizeof left);
		group_digits(p->peak - unfinished, done, sizeof done);
	} else {
		snprintf(left, sizeof left, "%llu", (unsigned long long)unfinished);
		snprintf(done, sizeof done, "%llu",
		         (unsigned long long)(p->peak - unfinished));
	}
	if (rate < 0)
		snprintf(rate_text, sizeof rate_text, "-");
	else if (rate == 0 || rate >= 10)
		snprintf(rate_text, sizeof rate_text, "%.0f", rate);
	else
		snprintf(rate_text, sizeof rate_text, "%.1f", rate);
	if (!unfinished)
		snprintf(eta, sizeof eta, "0s");
	else if (rate > 0)
		format_duration(ceil((double)unfinished / rate), eta,
		                sizeof eta);
	else
		snprintf(eta, sizeof eta, "-");
	snprintf(out, size, "%s unfinished, %s done, %s/s, ETA %s", left, done,
	         rate_text, eta);
}

/* "[#########.........] 4,321 unfinished, ..." over the line the cursor is
 * on, in one write so that it never shows half drawn. */
static void progress_draw(struct progress *p, uint64_t unfinished)
{
	char text[160], line[256];
	struct winsize ws;
	int cols = 80;
	size_t n = 0;

	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
		cols = ws.ws_col;
	progress_text(p, unfinished, text, sizeof text);
	/* Keep off the last column: a full line may wrap, and the next \r
	 * would then redraw on the wrong line. */
	int room = cols - 1;
	int bar = room - 3 - (int)strlen(text);     /* 3: "[", "] " */
	if (bar > BAR_MAX)
		bar = BAR_MAX;
	line[n++] = '\r';
	if (bar >= 5) {
		int filled = bar;
		if (p->peak)
			filled = (int)((double)bar * (double)(p->peak - unfinished) /
			               (double)p->peak);
		line[n++] = '[';
		for (int i = 0; i < bar; i++)
			line[n++] = i < filled ? '#' : '.';
		line[n++] = ']';
		line[n++] = ' ';
		room -= bar + 3;
	}
	if (room < 0)
		room = 0;
	n += (size_t)snprintf(line + n, sizeof line - n, "%.*s\033[K", room,
	                      text);
	fwrite(line, 1, n, stderr);
	p->drawn = true;
}

static void progress_clear(struct progress *p)
{
	if (p->drawn)
		fputs("\r\033[K", stderr);
	p->drawn = false;
}

static void *progress_watch(void *arg)
{
	struct progress *p = arg;
	struct jq_error err;
	struct jq_qsize q;
	char text[160];

	for (;;) {
		if (jq_qsize(p->c, p->s.queue, &q, &err)) {
			/* The display is a nicety: say once why it stopped, and
			 * leave the join to its own outcome. */
			progress_clear(p);
			fprintf(stderr, "joinq: join %s: no more progress: %s\n",
			        queue_name(&p->s), err.message);
			return NULL;
		}
		double t = now_s();
		struct sample *k = &p->ring[p->nsamples++ % RATE_SAMPLES];
		k->t = t;
		k->unfinished = q.unfinished;
		if (q.unfinished > p->peak)
			p->peak = q.unfinished;
		if (p->tty) {
			progress_draw(p, q.unfinished);
		} else if (p->nsamples == 1 || t - p->logged >= LOG_EVERY) {
			progress_text(p, q.unfinished, text, sizeof text);
			fprintf(stderr, "joinq: join %s: %s\n", queue_name(&p->s),
			        text);
			p->logged = t;
		}
		struct pollfd stop = { .fd = p->stop[0], .events = POLLIN };
		int r = poll(&stop, 1, TICK_MS);
		if (r > 0 || (r < 0 && errno != EINTR))
			return NULL;
	}
}

/* Starts the watcher; NULL when it cannot, with the failure reported and
 * *status set. */
static struct progress *progress_start(const struct session *s, int *status)
{
	const struct jq_options defaults = JQ_OPTIONS_INIT;
	struct progress *p = xcalloc(1, sizeof *p);
	int e;

	/* put --join may have lifted the I/O limit for its puts; a qsize
	 * has no reason to wait long, and joinq's exit waits for the
	 * watcher's last one. */
	p->s = *s;
	p->s.opt.io_timeout = defaults.io_timeout;
	p->tty = isatty(STDERR_FILENO);
	p->start = now_s();
	if (!(p->c = open_client(&p->s, status))) {
		free(p);
		return NULL;
	}
	if (pipe(p->stop) < 0) {
		fprintf(stderr, "joinq: join: pipe: %s\n", strerror(errno));
		goto fail;
	}
	if ((e = pthread_create(&p->thread, NULL, progress_watch, p))) {
		fprintf(stderr, "joinq: join: cannot start a thread: %s\n",
		        strerror(e));
		close(p->stop[0]);
		close(p->stop[1]);
		goto fail;
	}
	return p;
fail:
	jq_close(p->c);
	free(p);
	*status = EXIT_ERROR;
	return NULL;
}

/* Stops the watcher and wipes its bar; a log gets a last line when the
 * join succeeded. */
static void progress_stop(struct progress *p, bool joined)
{
	char took[32];

	close(p->stop[1]);      /* the read end turns readable: stop */
	pthread_join(p->thread, NULL);
	close(p->stop[0]);
	progress_clear(p);
	if (!p->tty && joined) {
		format_duration(now_s() - p->start, took, sizeof took);
		fprintf(stderr, "joinq: join %s: 0 unfinished, %llu done, joined "
		        "after %s\n", queue_name(&p->s),
		        (unsigned long long)p->peak, took);
	}
	jq_close(p->c);
	free(p);
}

/* Waits on c until the queue's unfinished count is zero, as wait w allows,
 * watched when progress is asked for.  Returns the exit status. */
static int join_queue(const struct session *s, jq_client *c,
                      const struct jq_wait *w, bool progress)
{
	struct progress *p = NULL;
	struct jq_error err;
	int status = EXIT_OK;

	if (progress && !(p = progress_start(s, &status)))
		return status;
	int code = jq_join(c, s->queue, w, &err);
	if (p)
		progress_stop(p, code == JQ_OK);
	if (code)
		status = report(NULL, &err);
	return status;
}

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
		if (pl->answered < pl->sent)
			fprintf(stderr, "joinq: %ss %llu to %llu may or may not have "
			        "been queued\n", it->unit,
			        (unsigned long long)pl->answered + 1,
			        (unsigned long long)pl->sent);
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

/* Over UDP every put is a datagram and its reply; one at a time. */
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

static int cmd_put(struct session *s, const struct cmd_options *o, int argc,
                   char **argv)
{
	struct items it = { .unit = argc ? "item" : "line" };
	int status;

	if (!o->join && o->join_timeout >= 0)
		return usage_error(s, "--join-timeout needs --join");
	if (!o->join && o->progress)
		return usage_error(s, "--progress needs --join");
	if (argc) {
		/* Check every argument before anything is sent. */
		struct buf scratch = { 0 };
		char why[WHY_MAX];
		for (int i = 0; i < argc; i++) {
			buf_reset(&scratch);
			if (!encode_item(&scratch, argv[i], strlen(argv[i]), o->json,
			                 why, sizeof why)) {
				buf_free(&scratch);
				return usage_error(s, "item %d is %s", i + 1, why);
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
	if (s->opt.transport == JQ_UDP)
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

/* ---- the other commands ------------------------------------------------- */

static int cmd_get(struct session *s, const struct cmd_options *o, int argc,
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

static int cmd_task_done(struct session *s, const struct cmd_options *o,
                         int argc, char **argv)
{
	struct jq_error err;
	uint64_t task, unfinished;
	int status = EXIT_OK;

	(void)argc;
	if (!parse_task(argv[0], &task))
		return usage_error(s, "TASK must be a positive integer below 2^53, "
		                   "not '%s'", argv[0]);
	jq_client *c = open_client(s, &status);
	if (!c)
		return status;
	if (jq_task_done(c, task, &unfinished, &err))
		status = report(NULL, &err);
	else if (o->verbose)
		printf("unfinished %llu\n", (unsigned long long)unfinished);
	jq_close(c);
	return status;
}

static int cmd_release(struct session *s, const struct cmd_options *o,
                       int argc, char **argv)
{
	struct jq_error err;
	uint64_t task;
	int status = EXIT_OK;

	(void)argc;
	if (!parse_task(argv[0], &task))
		return usage_error(s, "TASK must be a positive integer below 2^53, "
		                   "not '%s'", argv[0]);
	jq_client *c = open_client(s, &status);
	if (!c)
		return status;
	if (jq_release(c, task, o->delay, &err))
		status = report(NULL, &err);
	jq_close(c);
	return status;
}

static int cmd_join(struct session *s, const struct cmd_options *o, int argc,
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

static int cmd_qsize(struct session *s, const struct cmd_options *o,
                     int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return show_qsize(s, o, "qsize");
}

static int cmd_empty(struct session *s, const struct cmd_options *o,
                     int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return show_qsize(s, o, "empty");
}

static int cmd_full(struct session *s, const struct cmd_options *o, int argc,
                    char **argv)
{
	(void)argc;
	(void)argv;
	return show_qsize(s, o, "full");
}

static int cmd_ping(struct session *s, const struct cmd_options *o, int argc,
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

static int cmd_stats(struct session *s, const struct cmd_options *o,
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

/* ---- the command line --------------------------------------------------- */

/* work: the pool is work.c's.  It reads its own options: CMD's options
 * after them must not be taken for joinq's. */
static int cmd_work(struct session *s, const struct cmd_options *o,
                    int argc, char **argv)
{
	(void)o;
	return work_main(&s->opt, s->queue, argc, argv);
}

/* bench: the load generator is bench.c's, with options of its own (-n,
 * -d, -P) that the other commands do not share. */
static int cmd_bench(struct session *s, const struct cmd_options *o,
                     int argc, char **argv)
{
	(void)o;
	return bench_main(&s->opt, argc, argv);
}

static const struct command commands[] = {
	{ "put", cmd_put, OPT_JSON | OPT_NOWAIT | OPT_TIMEOUT | OPT_SHOW_TASK |
	  OPT_JOIN | OPT_JOIN_TIMEOUT | OPT_PROGRESS, 0, -1,
	  "put [--json] [--nowait] [--timeout S] [--show-task]\n"
	  "      [--join [--join-timeout S] [--progress]] [ITEM...]",
	  "Put items on the queue.  Each ITEM is a string item; with --json each\n"
	  "is a JSON value instead.  With no ITEM, each line of stdin is one item\n"
	  "(the LF and a CR before it removed; an empty line is an empty string);\n"
	  "many are kept in flight at once, so big inputs go fast.  Prints\n"
	  "nothing unless --show-task.  On the first error reply nothing more is\n"
	  "sent and joinq says which line or item failed; items sent before it\n"
	  "stay queued.  Put '--' before an ITEM that starts with '-'.\n"
	  "\n"
	  "With --join, once every item is in, wait as 'joinq join' does until\n"
	  "every task on the queue is done, these and any others; exits 5 if the\n"
	  "join times out.  --timeout and --nowait are for the puts only; the join\n"
	  "waits for ever unless --join-timeout.\n"
	  "\n"
	  "      --json         items are JSON values (checked before sending)\n"
	  "      --nowait       fail with 'full' at once if the queue is full\n"
	  "      --timeout S    wait at most S seconds for room (default: no limit)\n"
	  "      --show-task    print each task id, one a line, in input order\n"
	  "      --join         then wait until the queue's tasks are all done\n"
	  "      --join-timeout S  wait at most S seconds for that\n"
	  "      --progress     show the join's progress (see join --help)\n" },
	{ "get", cmd_get, OPT_NOWAIT | OPT_TIMEOUT | OPT_LEASE | OPT_SHOW_TASK,
	  0, 0, "get [--nowait] [--timeout S] [--lease S] [--show-task]",
	  "Take the item at the head of the queue and print it, then a newline:\n"
	  "a string item as its raw text, any other item as compact JSON.  The\n"
	  "task id goes to stderr as 'task N'; with --show-task stdout gets\n"
	  "'N<TAB>ITEM' instead (for IFS=$'\\t' read -r task item) and stderr\n"
	  "nothing.\n"
	  "\n"
	  "Without --lease, a get over TCP holds its task only while joinq's\n"
	  "connection lives: when joinq exits the task goes back to the queue.\n"
	  "From a script, take it with a lease and finish it yourself:\n"
	  "    out=$(joinq get --lease 60 --show-task) || exit\n"
	  "    IFS=$'\\t' read -r task item <<<\"$out\"\n"
	  "    ... work on \"$item\" ...\n"
	  "    joinq task_done \"$task\"\n"
	  "(Over UDP every get has a lease: --lease, or the daemon's udp_lease.)\n"
	  "\n"
	  "      --nowait       fail with 'empty' at once if the queue is empty\n"
	  "      --timeout S    wait at most S seconds for an item (default: no limit)\n"
	  "      --lease S      keep the task S seconds (> 0) after joinq exits\n"
	  "      --show-task    print 'TASK<TAB>ITEM' on stdout\n" },
	{ "task_done", cmd_task_done, OPT_VERBOSE, 1, 1, "task_done [-v] TASK",
	  "Mark delivered task TASK finished.  Prints nothing unless -v.\n"
	  "\n"
	  "  -v, --verbose      print the queue's unfinished count after it\n" },
	{ "release", cmd_release, OPT_DELAY, 1, 1, "release [--delay S] TASK",
	  "Give delivered task TASK back undone: it returns to the head of its\n"
	  "queue, after S seconds with --delay.\n"
	  "\n"
	  "      --delay S      hold the task back S seconds first\n" },
	{ "join", cmd_join, OPT_NOWAIT | OPT_TIMEOUT | OPT_PROGRESS, 0, 0,
	  "join [--nowait] [--timeout S] [--progress]",
	  "Wait until every task put on the queue is done (task_done).\n"
	  "Exits 5 (timeout) if tasks are still unfinished when the wait ends.\n"
	  "\n"
	  "--progress watches the queue on a second connection meanwhile.  On a\n"
	  "terminal, stderr shows a bar redrawn 4 times a second and wiped at\n"
	  "the end:\n"
	  "    [#########.........] 4,321 unfinished, 1,234 done, 250/s, ETA 17s\n"
	  "'done' is how far the unfinished count has come down from the largest\n"
	  "seen (the bar's 100%); the rate is taken over the last 5 seconds.\n"
	  "When stderr is not a terminal it gets a plain line at the start,\n"
	  "every 5 seconds, and when the join returns:\n"
	  "    joinq: join QUEUE: 4321 unfinished, 1234 done, 250/s, ETA 17s\n"
	  "    joinq: join QUEUE: 0 unfinished, 5555 done, joined after 22s\n"
	  "\n"
	  "      --nowait       answer at once\n"
	  "      --timeout S    wait at most S seconds (default: forever)\n"
	  "      --progress     show progress on stderr\n" },
	{ "qsize", cmd_qsize, OPT_JSON, 0, 0, "qsize [--json]",
	  "Print the queue's figures: queued items, maxsize (0: unbounded),\n"
	  "unfinished tasks, tasks in flight, delayed tasks, and the tasks it\n"
	  "sent to its dead-letter queue (dead_lettered).\n"
	  "\n"
	  "      --json         print them as one JSON object\n" },
	{ "empty", cmd_empty, 0, 0, 0, "empty",
	  "Print true if the queue holds no queued item, else false.\n" },
	{ "full", cmd_full, 0, 0, 0, "full",
	  "Print true if the queue holds maxsize items, else false.\n" },
	{ "stats", cmd_stats, OPT_JSON, 0, 0, "stats [--json]",
	  "Print the daemon's version, uptime and connections, then one row of\n"
	  "figures per queue.\n"
	  "\n"
	  "      --json         print the daemon's reply as it is\n" },
	{ "ping", cmd_ping, 0, 0, 0, "ping",
	  "Ask the daemon for its version, and time the round trip.\n" },
	{ "work", cmd_work, OPT_OWN_ARGS, 0, -1, WORK_USAGE, work_help },
	{ "bench", cmd_bench, OPT_OWN_ARGS, 0, -1, BENCH_USAGE, bench_help },
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void print_help(void)
{
	printf("usage: joinq [OPTION]... COMMAND [ARG]...\n"
	       "Use the queues of a joinqd daemon, like Python's JoinableQueue.\n"
	       "\n"
	       "Options (before the command):\n"
	       "  -H, --host HOST        daemon host ($JOINQ_HOST, else %s)\n"
	       "  -p, --port PORT        daemon port ($JOINQ_PORT, else %s)\n"
	       "  -u, --udp              talk UDP instead of TCP\n"
	       "  -q, --queue NAME       the queue ($JOINQ_QUEUE, else default)\n"
	       "      --token-file FILE  the token is FILE's first line (default\n"
	       "                         $JOINQ_TOKEN)\n"
	       "  -h, --help             show this help and exit\n"
	       "  -V, --version          show the version and exit\n"
	       "\n"
	       "Commands:\n", JQ_DEFAULT_HOST, JQ_DEFAULT_PORT);
	for (size_t i = 0; i < NCOMMANDS; i++)
		printf("  %s\n", commands[i].usage);
	printf("\n'joinq COMMAND --help' tells more of each.\n\n%s",
	       exit_status_help);
}

static void print_command_help(const struct command *cmd)
{
	printf("usage: joinq [OPTION]... %s\n%s\n%s", cmd->usage, cmd->help,
	       exit_status_help);
}

/* Long options with no letter of their own. */
enum { LONG_JOIN = 300, LONG_JOIN_TIMEOUT, LONG_PROGRESS };

static const struct option cmd_longopts[] = {
	{ "json", no_argument, NULL, 'j' },
	{ "nowait", no_argument, NULL, 'n' },
	{ "timeout", required_argument, NULL, 't' },
	{ "show-task", no_argument, NULL, 's' },
	{ "lease", required_argument, NULL, 'l' },
	{ "delay", required_argument, NULL, 'd' },
	{ "verbose", no_argument, NULL, 'v' },
	{ "join", no_argument, NULL, LONG_JOIN },
	{ "join-timeout", required_argument, NULL, LONG_JOIN_TIMEOUT },
	{ "progress", no_argument, NULL, LONG_PROGRESS },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static const char *long_name(int ch)
{
	for (const struct option *lo = cmd_longopts; lo->name; lo++)
		if (lo->val == ch)
			return lo->name;
	return "?";
}

/* Parses the command's options; *done says the run is over (--help or a
 * usage error) with the status returned. */
static int parse_command(struct session *s, const struct command *cmd,
                         int argc, char **argv, struct cmd_options *o,
                         bool *done)
{
	int ch;

	*done = true;
	memset(o, 0, sizeof *o);
	o->wait.block = true;
	o->wait.timeout = -1;
	o->join_timeout = -1;
	optind = 0;   /* GNU getopt: start afresh on this argv */
	while ((ch = getopt_long(argc, argv, "hv", cmd_longopts, NULL)) != -1) {
		unsigned flag;
		switch (ch) {
		case 'h':
			print_command_help(cmd);
			return EXIT_OK;
		case 'j': flag = OPT_JSON; break;
		case 'n': flag = OPT_NOWAIT; break;
		case 't': flag = OPT_TIMEOUT; break;
		case 's': flag = OPT_SHOW_TASK; break;
		case 'l': flag = OPT_LEASE; break;
		case 'd': flag = OPT_DELAY; break;
		case 'v': flag = OPT_VERBOSE; break;
		case LONG_JOIN: flag = OPT_JOIN; break;
		case LONG_JOIN_TIMEOUT: flag = OPT_JOIN_TIMEOUT; break;
		case LONG_PROGRESS: flag = OPT_PROGRESS; break;
		default:
			/* getopt has said what is wrong */
			fprintf(stderr, "Try 'joinq %s --help'.\n", cmd->name);
			return EXIT_USAGE;
		}
		if (!(cmd->options & flag))
			return usage_error(s, "unknown option --%s", long_name(ch));
		switch (ch) {
		case 'j': o->json = true; break;
		case 'n': o->wait.block = false; break;
		case 's': o->show_task = true; break;
		case 'v': o->verbose = true; break;
		case LONG_JOIN: o->join = true; break;
		case LONG_PROGRESS: o->progress = true; break;
		case LONG_JOIN_TIMEOUT:
			if (!parse_seconds(optarg, &o->join_timeout))
				return usage_error(s, "--join-timeout wants seconds >= 0, "
				                   "not '%s'", optarg);
			break;
		case 't':
			if (!parse_seconds(optarg, &o->wait.timeout))
				return usage_error(s, "--timeout wants seconds >= 0, not "
				                   "'%s'", optarg);
			break;
		case 'l':
			if (!parse_seconds(optarg, &o->lease) || o->lease == 0)
				return usage_error(s, "--lease wants seconds > 0, not '%s'",
				                   optarg);
			break;
		case 'd':
			if (!parse_seconds(optarg, &o->delay))
				return usage_error(s, "--delay wants seconds >= 0, not "
				                   "'%s'", optarg);
			break;
		}
	}
	int nargs = argc - optind;
	if (nargs < cmd->min_args)
		return usage_error(s, "missing argument: joinq %s", cmd->usage);
	if (cmd->max_args >= 0 && nargs > cmd->max_args)
		return usage_error(s, "unexpected argument '%s'",
		                   argv[optind + cmd->max_args]);
	*done = false;
	return EXIT_OK;
}

enum { LONG_TOKEN_FILE = 256 };

static const struct option global_longopts[] = {
	{ "host", required_argument, NULL, 'H' },
	{ "port", required_argument, NULL, 'p' },
	{ "udp", no_argument, NULL, 'u' },
	{ "queue", required_argument, NULL, 'q' },
	{ "token-file", required_argument, NULL, LONG_TOKEN_FILE },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

static int finish_output(int status)
{
	if (fflush(stdout) == EOF || ferror(stdout)) {
		fprintf(stderr, "joinq: cannot write to stdout: %s\n",
		        strerror(errno));
		return status ? status : EXIT_ERROR;
	}
	return status;
}

int main(int argc, char **argv)
{
	struct session s = { .opt = JQ_OPTIONS_INIT };
	const char *token_file = NULL, *env;
	char *token = NULL;
	char label[64];
	int ch, status;

	argv[0] = (char *)"joinq";   /* getopt's messages name it so */
	s.opt.host = getenv("JOINQ_HOST");
	s.opt.port = getenv("JOINQ_PORT");
	s.queue = getenv("JOINQ_QUEUE");
	if ((env = getenv("JOINQ_TOKEN")) && *env)
		s.opt.token = env;
	if (s.queue && !*s.queue)
		s.queue = NULL;

	while ((ch = getopt_long(argc, argv, "+H:p:uq:hV", global_longopts,
	                         NULL)) != -1) {
		switch (ch) {
		case 'H': s.opt.host = optarg; break;
		case 'p': s.opt.port = optarg; break;
		case 'u': s.opt.transport = JQ_UDP; break;
		case 'q': s.queue = optarg; break;
		case LONG_TOKEN_FILE: token_file = optarg; break;
		case 'h':
			print_help();
			return finish_output(EXIT_OK);
		case 'V':
			printf("joinq %s\n", PACKAGE_VERSION);
			return finish_output(EXIT_OK);
		default:
			fprintf(stderr, "Try 'joinq --help'.\n");
			return EXIT_USAGE;
		}
	}
	if (s.opt.host && !*s.opt.host)
		s.opt.host = NULL;
	if (s.opt.port && *s.opt.port && !parse_port(s.opt.port))
		return usage_error(&s, "the port must be a number from 1 to 65535, "
		                   "not '%s'", s.opt.port);
	if (s.opt.port && !*s.opt.port)
		s.opt.port = NULL;
	if (optind >= argc)
		return usage_error(&s, "no command given");

	const struct command *cmd = NULL;
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (!strcmp(argv[optind], commands[i].name))
			cmd = &commands[i];
	if (!cmd)
		return usage_error(&s, "unknown command '%s'", argv[optind]);
	s.cmd = cmd->name;

	/* The command's argv starts at its name; getopt's messages then
	 * say "joinq put: ...". */
	int cargc = argc - optind;
	char **cargv = argv + optind;
	snprintf(label, sizeof label, "joinq %s", cmd->name);
	cargv[0] = label;
	struct cmd_options o;
	bool done;
	if (cmd->options & OPT_OWN_ARGS) {
		/* It gets its argv whole, its name first. */
		memset(&o, 0, sizeof o);
		status = EXIT_OK;
		done = false;
		optind = 0;
	} else {
		status = parse_command(&s, cmd, cargc, cargv, &o, &done);
	}
	if (done)
		return finish_output(status);

	if (token_file) {
		if ((status = read_token(&s, token_file, &token)))
			return status;
		s.opt.token = token;
	}
	status = cmd->run(&s, &o, cargc - optind, cargv + optind);
	free(token);
	return finish_output(status);
}
