/*
 * store_file.c - the journal's records in a local file (store.h): the
 * file joinq.journal in the state directory, locked (flock) against a
 * second joinqd, appended with pwrite and synced with fdatasync.
 *
 * Space is reserved ahead (fallocate), so that a full disk refuses a
 * change before it is made rather than failing a write.  A snapshot is
 * written by the compacting child to joinq.journal.new; installing it
 * appends the records that came meanwhile, syncs it and renames it over
 * the journal, then syncs the directory, as Redis rewrites its AOF.  Every
 * failed sync is STORE_FAILED, never retried.  Also here: joinqd
 * --check-journal, which reads and repairs this file.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "record.h"
#include "store.h"
#include "xalloc.h"

#define PREALLOC_CHUNK (16u << 20)   /* space reserved ahead at a time */
#define SMALL_RESERVE (1u << 20)     /* kept for small and engine changes */
#define FULL_RETRY_MS 100            /* a full disk is asked again after */
#define LOCK_WAIT_MS 3000u           /* a dying compaction may hold the lock */
#define LOCK_PAUSE_MS 20u            /* between two asks for it */

struct file_store {
	struct store store;
	char *dir, *path, *tmp_path;
	int fd, dirfd;
	bool sync_each_append;
	const unsigned char *map;    /* the image, while replay reads it */
	size_t map_len;
	uint64_t written, synced;    /* positions */
	uint64_t end;                /* bytes in the file */
	uint64_t reserved;           /* bytes of the file allocated ahead */
	bool can_reserve;            /* the file system preallocates */
	bool full;                   /* the disk is full: puts refused */
	msec_t full_retry;
	int snap_fd;                 /* in the child: the snapshot, or -1 */
	off_t snap_at;
};

static struct file_store *of(struct store *s)
{
	return (struct file_store *)s;
}

static int write_all(int fd, const void *data, size_t len, off_t at)
{
	const char *p = data;
	while (len) {
		ssize_t n = pwrite(fd, p, len, at);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
		at += n;
	}
	return 0;
}

/* A failed sync: logged, and fatal (store.h, Errors). */
static int sync_failed(const char *path)
{
	log_error("journal: cannot sync %s: %s", path, strerror(errno));
	return STORE_FAILED;
}

static char *join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = xmalloc(n);
	snprintf(p, n, "%s/%s", dir, name);
	return p;
}

/* Maps the whole file for reading; *map NULL for an empty file. */
static int map_file(int fd, const unsigned char **map, size_t *size)
{
	struct stat st;
	*map = NULL;
	*size = 0;
	if (fstat(fd, &st) < 0)
		return -1;
	if (st.st_size == 0)
		return 0;
	void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (m == MAP_FAILED)
		return -1;
	*map = m;
	*size = (size_t)st.st_size;
	return 0;
}

static void unmap(struct file_store *f)
{
	if (f->map)
		munmap((void *)f->map, f->map_len);
	f->map = NULL;
	f->map_len = 0;
}

/* ---- replay ------------------------------------------------------------- */

static int file_load(struct store *s, const unsigned char **p, size_t *len,
                     char *err, size_t errlen)
{
	struct file_store *f = of(s);
	if (map_file(f->fd, &f->map, &f->map_len) < 0) {
		snprintf(err, errlen, "cannot read %s: %s", f->path, strerror(errno));
		return -1;
	}
	*p = f->map;
	*len = f->map_len;
	return 0;
}

static int file_loaded(struct store *s, uint64_t keep, const void *first,
                       size_t first_len, char *err, size_t errlen)
{
	struct file_store *f = of(s);
	bool cut = keep < f->map_len;
	unmap(f);
	if (cut && (ftruncate(f->fd, (off_t)keep) < 0 || fdatasync(f->fd) < 0)) {
		snprintf(err, errlen, "cannot cut %s: %s", f->path, strerror(errno));
		return -1;
	}
	f->end = f->reserved = keep;
	if (keep == 0) {   /* a new journal */
		if (write_all(f->fd, first, first_len, 0) < 0 ||
		    fdatasync(f->fd) < 0 || fsync(f->dirfd) < 0) {
			snprintf(err, errlen, "cannot write %s: %s", f->path,
			         strerror(errno));
			return -1;
		}
		f->end = f->reserved = first_len;
	}
	return 0;
}

/* ---- the log ------------------------------------------------------------ */

/* Allocates the file up to at least upto bytes ahead of need, so that a
 * full disk shows here, before a change is made, and not in a write. */
static int extend(struct file_store *f, uint64_t upto)
{
	if (f->full && store_clock_ms() < f->full_retry)
		return STORE_AGAIN;
	uint64_t chunk = upto + PREALLOC_CHUNK;
	int rc = fallocate(f->fd, FALLOC_FL_KEEP_SIZE, (off_t)f->reserved,
	                   (off_t)(chunk - f->reserved));
	if (rc < 0 && errno == ENOSPC)
		rc = fallocate(f->fd, FALLOC_FL_KEEP_SIZE, (off_t)f->reserved,
		               (off_t)(upto - f->reserved));
	else
		upto = chunk;
	if (rc == 0) {
		f->reserved = upto;
		if (f->full)
			log_info("journal: space is back; taking changes again");
		f->full = false;
		return STORE_OK;
	}
	if (errno == EOPNOTSUPP || errno == ENOSYS) {
		log_warning("journal: %s cannot allocate ahead; a full disk will "
		            "stop joinqd instead of refusing changes", f->path);
		f->can_reserve = false;
		return STORE_OK;
	}
	if (!f->full)
		log_error("journal: cannot allocate space in %s (%s): changes are "
		          "refused (unavailable) until there is room", f->path,
		          strerror(errno));
	f->full = true;
	f->full_retry = store_clock_ms() + FULL_RETRY_MS;
	return STORE_AGAIN;
}

static int file_reserve(struct store *s, uint64_t bytes, bool small)
{
	struct file_store *f = of(s);
	if (!f->can_reserve)
		return STORE_OK;
	uint64_t need = f->end + bytes + 64;
	if (!small)
		need += SMALL_RESERVE;
	if (need <= f->reserved && !(f->full && !small))
		return STORE_OK;
	return extend(f, need < f->reserved ? f->reserved : need);
}

static int file_sync(struct store *s)
{
	struct file_store *f = of(s);
	if (f->synced == f->written)
		return STORE_OK;
	if (fdatasync(f->fd) < 0)
		return sync_failed(f->path);
	f->synced = f->written;
	return STORE_OK;
}

static int file_append(struct store *s, const void *p, size_t len,
                       uint64_t upto)
{
	struct file_store *f = of(s);
	if (write_all(f->fd, p, len, (off_t)f->end) < 0) {
		log_error("journal: cannot write %s: %s", f->path, strerror(errno));
		return STORE_FAILED;
	}
	f->end += len;
	f->written = upto;
	return f->sync_each_append ? file_sync(s) : STORE_OK;
}

static uint64_t file_durable(const struct store *s)
{
	const struct file_store *f = (const struct file_store *)s;
	return f->sync_each_append ? f->synced : f->written;
}

/* The file's errors are all synchronous: append and sync return them. */
static int file_check(struct store *s)
{
	(void)s;
	return STORE_OK;
}

static uint64_t file_size(const struct store *s)
{
	return ((const struct file_store *)s)->end;
}

/* ---- snapshots ---------------------------------------------------------- */

static int file_snapshot_write(struct store *s, const void *p, size_t len,
                               bool last)
{
	struct file_store *f = of(s);
	if (f->snap_fd < 0) {
		f->snap_fd = open(f->tmp_path, O_WRONLY | O_CREAT | O_TRUNC |
		                  O_CLOEXEC, 0600);
		f->snap_at = 0;
		if (f->snap_fd < 0)
			return STORE_AGAIN;
	}
	if (write_all(f->snap_fd, p, len, f->snap_at) < 0)
		return STORE_AGAIN;
	f->snap_at += (off_t)len;
	if (!last)
		return STORE_OK;
	if (fdatasync(f->snap_fd) < 0)
		return sync_failed(f->tmp_path);
	return close(f->snap_fd) < 0 ? STORE_AGAIN : STORE_OK;
}

static int file_snapshot_install(struct store *s, uint64_t upto,
                                 const void *tail, size_t len)
{
	struct file_store *f = of(s);
	struct stat st;
	(void)upto;   /* the file's positions go on: tail follows the snapshot */
	int fd = open(f->tmp_path, O_RDWR | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0 ||
	    write_all(fd, tail, len, st.st_size) < 0) {
		if (fd >= 0)
			close(fd);
		return STORE_AGAIN;
	}
	if (fdatasync(fd) < 0) {
		close(fd);
		return sync_failed(f->tmp_path);
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0 || rename(f->tmp_path, f->path) < 0) {
		close(fd);
		return STORE_AGAIN;
	}
	close(f->fd);
	f->fd = fd;
	f->end = f->reserved = (uint64_t)st.st_size + len;
	if (fsync(f->dirfd) < 0)   /* the rename itself */
		return sync_failed(f->dir);
	return STORE_OK;
}

static void file_snapshot_abandon(struct store *s)
{
	unlink(of(s)->tmp_path);
}

/* ---- opening and closing ------------------------------------------------ */

static void free_store(struct file_store *f)
{
	unmap(f);
	if (f->fd >= 0)
		close(f->fd);
	if (f->dirfd >= 0)
		close(f->dirfd);
	free(f->dir);
	free(f->path);
	free(f->tmp_path);
	free(f);
}

static int file_close(struct store *s)
{
	int rc = file_sync(s);
	free_store(of(s));
	return rc;
}

static const struct store_ops file_ops = {
	.load = file_load,
	.loaded = file_loaded,
	.reserve = file_reserve,
	.append = file_append,
	.durable = file_durable,
	.check = file_check,
	.sync = file_sync,
	.size = file_size,
	.snapshot_write = file_snapshot_write,
	.snapshot_install = file_snapshot_install,
	.snapshot_abandon = file_snapshot_abandon,
	.close = file_close,
};

static int open_dir(const char *dir, char *err, size_t errlen)
{
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "cannot create state_dir %s: %s", dir,
		         strerror(errno));
		return -1;
	}
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		snprintf(err, errlen, "cannot open state_dir %s: %s", dir,
		         strerror(errno));
	return fd;
}

/* Whether fd is still the file at path (a compaction renames over it). */
static bool is_current(int fd, const char *path)
{
	struct stat a, b;
	return fstat(fd, &a) == 0 && stat(path, &b) == 0 &&
	       a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/*
 * Opens the journal and takes its lock: the descriptor, or -1 with err.
 * A joinqd killed a moment ago may have left a compacting child that
 * shares the lock (a fork shares the open file) until it runs again,
 * closes what it inherited and dies with its parent: on a busy machine
 * that can take a while, so the lock is asked for again for up to
 * LOCK_WAIT_MS before the journal counts as another joinqd's.  A lock
 * won on a file that a running joinqd's compaction has renamed over in
 * the meantime is a lock on nothing: the journal is opened again.
 */
static int open_locked(const char *path, char *err, size_t errlen)
{
	for (unsigned waited = 0;; waited += LOCK_PAUSE_MS) {
		int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0) {
			snprintf(err, errlen, "cannot open %s: %s", path,
			         strerror(errno));
			return -1;
		}
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			if (is_current(fd, path))
				return fd;
		} else if (errno != EWOULDBLOCK || waited >= LOCK_WAIT_MS) {
			snprintf(err, errlen, "%s is in use by another joinqd (%s)",
			         path, strerror(errno));
			close(fd);
			return -1;
		} else if (waited == 0) {
			log_info("journal: %s is locked; waiting up to %u ms for a "
			         "compaction of a joinqd that is gone", path,
			         LOCK_WAIT_MS);
		}
		close(fd);
		if (waited >= LOCK_WAIT_MS) {
			snprintf(err, errlen, "%s is in use by another joinqd (it "
			         "keeps being replaced)", path);
			return -1;
		}
		nanosleep(&(struct timespec){ 0, LOCK_PAUSE_MS * 1000000L }, NULL);
	}
}

struct store *store_file_open(const char *dir, bool sync_each_append,
                              char *err, size_t errlen)
{
	struct file_store *f = xcalloc(1, sizeof *f);
	f->store.ops = &file_ops;
	f->dir = xstrdup(dir);
	f->path = join(dir, STORE_FILE_NAME);
	f->tmp_path = join(dir, STORE_FILE_NAME ".new");
	f->store.name = f->path;
	f->fd = f->snap_fd = -1;
	f->sync_each_append = sync_each_append;
	f->can_reserve = true;
	if ((f->dirfd = open_dir(dir, err, errlen)) < 0)
		goto fail;
	if ((f->fd = open_locked(f->path, err, errlen)) < 0)
		goto fail;
	/* Ours now: a snapshot left over is from a compaction that died. */
	if (unlink(f->tmp_path) == 0)
		log_info("journal: removed %s, left by a compaction that did not "
		         "finish", f->tmp_path);
	return &f->store;

fail:
	free_store(f);
	return NULL;
}

/* ---- joinqd --check-journal --------------------------------------------- */

int store_file_check(const char *dir, bool repair)
{
	char *path = join(dir, STORE_FILE_NAME);
	const unsigned char *map;
	size_t size;
	struct record_replay r;
	int status = 2;

	int fd = open(path, (repair ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (fd < 0 || map_file(fd, &map, &size) < 0) {
		fprintf(stderr, "joinqd: cannot read %s: %s\n", path, strerror(errno));
		goto out;
	}
	/* Cutting a journal that a running joinqd appends to would lose what
	 * it writes next: repair only what nobody holds. */
	if (repair && flock(fd, LOCK_EX | LOCK_NB) < 0) {
		fprintf(stderr, "joinqd: %s is in use by a running joinqd; stop it "
		        "first\n", path);
		if (map)
			munmap((void *)map, size);
		goto out;
	}
	struct engine_conf conf = {
		.clock = store_clock_ms, .max_queues = UINT32_MAX,
	};
	struct engine *e = engine_new(&conf);
	enum record_end end = record_replay(map, size, e, &r);
	size_t queues = engine_queue_count(e);
	uint64_t live = engine_live_bytes(e);
	engine_free(e);
	if (map)
		munmap((void *)map, size);

	if (end == RECORD_CLEAN) {
		printf("%s: sound: %" PRIu64 " records, %zu bytes; %zu queues, %"
		       PRIu64 " bytes of live tasks\n", path, r.records, size, queues,
		       live);
		status = 0;
	} else {
		printf("%s: %s: %s at offset %" PRIu64 "; the %" PRIu64 " records "
		       "before it are sound\n", path, end == RECORD_TORN ? "torn" :
		       "damaged", r.why, r.good, r.records);
		status = 1;
		if (repair) {
			if (ftruncate(fd, (off_t)r.good) < 0 || fdatasync(fd) < 0) {
				fprintf(stderr, "joinqd: cannot cut %s: %s\n", path,
				        strerror(errno));
				status = 2;
			} else {
				printf("%s: cut at offset %" PRIu64 " (%zu bytes dropped)\n",
				       path, r.good, size - (size_t)r.good);
				status = 0;
			}
		} else {
			printf("joinqd --check-journal --repair cuts it there%s\n",
			       end == RECORD_TORN ? " (joinqd also does so when it "
			       "starts)" : ", dropping what follows");
		}
	}
out:
	if (fd >= 0)
		close(fd);
	free(path);
	return status;
}
