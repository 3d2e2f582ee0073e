/*
 * join.c - `joinq join`'s wait, and its progress display (join
 * --progress, put --join --progress).  The display watches the queue
 * from a thread of its own, on a second connection, while the main
 * thread waits in one plain join: polling with short joins instead could
 * miss the count touching zero between two of them, and the display must
 * never change when or how the join ends.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "commands.h"
#include "joinq.h"
#include "xalloc.h"

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
int join_queue(const struct session *s, jq_client *c,
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

