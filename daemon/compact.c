/*
 * compact.c - compaction of the journal (see compact.h): when to start
 * one, the forked child that writes the snapshot, and the switch to it.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "compact.h"
#include "log.h"
#include "record.h"

#define RETRY_MS 60000               /* a failed compaction is tried again */
#define FLUSH_BYTES (1u << 20)       /* the child writes this much at once */

/* The child's exit status for each store_status. */
enum { CHILD_OK = 0, CHILD_AGAIN = 1, CHILD_FAILED = 3 };

/* ---- in the child ------------------------------------------------------- */

struct snapshot {
	struct store *store;
	struct buf b;
	int rc;                      /* the first error, or STORE_OK */
};

static void snap_flush(struct snapshot *s, size_t over, bool last)
{
	if (s->b.len < over || s->rc != STORE_OK)
		return;
	s->rc = s->store->ops->snapshot_write(s->store, s->b.p, s->b.len, last);
	buf_reset(&s->b);
}

static void snap_queue(void *ctx, uint32_t qid, const char *name, size_t len)
{
	struct snapshot *s = ctx;
	record_queue(&s->b, qid, name, len);
	snap_flush(s, FLUSH_BYTES, false);
}

static void snap_settings(void *ctx, uint32_t qid, const struct queue_conf *d)
{
	record_settings(&((struct snapshot *)ctx)->b, qid, d);
}

static void snap_next_id(void *ctx, uint64_t next)
{
	record_next_id(&((struct snapshot *)ctx)->b, next);
}

static void snap_task(void *ctx, uint32_t qid, uint64_t task,
                      uint32_t deliveries, enum engine_task_state state,
                      msec_t until, const char *item, size_t len)
{
	struct snapshot *s = ctx;
	record_task(&s->b, qid, task, deliveries, state, until, item, len);
	snap_flush(s, FLUSH_BYTES, false);
}

/* The engine's state, as it was at the fork: the child's exit status. */
static int write_snapshot(struct store *store, struct engine *e)
{
	struct snapshot s = { .store = store, .rc = STORE_OK };
	struct engine_dump d = {
		.ctx = &s, .queue = snap_queue, .settings = snap_settings,
		.next_id = snap_next_id, .task = snap_task,
	};
	record_header(&s.b);
	engine_dump(e, &d);
	/* An empty batch closes the snapshot, so that damage inside it has a
	 * later batch after it and is never taken for a torn tail. */
	record_batch_seal(&s.b, record_batch_open(&s.b));
	snap_flush(&s, 0, true);
	return s.rc == STORE_OK ? CHILD_OK :
	       s.rc == STORE_FAILED ? CHILD_FAILED : CHILD_AGAIN;
}

/* ---- in the daemon ------------------------------------------------------ */

void compact_maybe(struct compaction *c, struct store *s, struct engine *e,
                   uint64_t upto)
{
	uint64_t size = s->ops->size(s);
	uint64_t live = engine_live_bytes(e);
	if (c->child > 0 || size < c->min_size ||
	    size < c->ratio * (live ? live : 1) || store_clock_ms() < c->next_try)
		return;
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid == 0) {
		/* The child holds nothing of the parent's: no listening socket
		 * may outlive a parent that crashed, so a restart can bind. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close_range(3, ~0u, 0);
		_exit(getppid() != parent ? CHILD_AGAIN : write_snapshot(s, e));
	}
	if (pid < 0) {
		log_warning("journal: cannot fork to compact %s: %s", s->name,
		            strerror(errno));
		c->next_try = store_clock_ms() + RETRY_MS;
		return;
	}
	c->child = pid;
	c->started = store_clock_ms();
	c->upto = upto;
	buf_reset(&c->tail);
	log_info("journal: compacting %s (%" PRIu64 " bytes, %" PRIu64
	         " live) in process %d", s->name, size, live, (int)pid);
}

bool compact_reaped(struct compaction *c, int *status)
{
	if (c->child <= 0 || waitpid(c->child, status, WNOHANG) != c->child)
		return false;
	c->child = 0;
	return true;
}

int compact_finish(struct compaction *c, struct store *s, int status)
{
	bool written = WIFEXITED(status) && WEXITSTATUS(status) == CHILD_OK;
	int rc = STORE_AGAIN;

	if (WIFEXITED(status) && WEXITSTATUS(status) == CHILD_FAILED) {
		/* The child said why; a failed sync is never retried. */
		log_error("journal: the snapshot of %s could not be synced",
		          s->name);
		rc = STORE_FAILED;
	} else if (written) {
		/* The records since the fork follow the snapshot as one batch. */
		struct buf batch = { 0 };
		if (c->tail.len) {
			size_t at = record_batch_open(&batch);
			buf_add(&batch, c->tail.p, c->tail.len);
			record_batch_seal(&batch, at);
		}
		rc = s->ops->snapshot_install(s, c->upto, batch.p, batch.len);
		buf_free(&batch);
	}
	if (rc == STORE_AGAIN) {
		log_warning("journal: compacting %s failed (%s); trying again in "
		            "%d s", s->name, WIFEXITED(status) ?
		            "could not write the snapshot" : "the child was killed",
		            RETRY_MS / 1000);
		s->ops->snapshot_abandon(s);
		c->next_try = store_clock_ms() + RETRY_MS;
	}
	buf_free(&c->tail);
	return rc;
}

void compact_stop(struct compaction *c, struct store *s)
{
	if (c->child > 0) {
		kill(c->child, SIGKILL);
		waitpid(c->child, NULL, 0);
		c->child = 0;
		s->ops->snapshot_abandon(s);
	}
	buf_free(&c->tail);
}
