/*
 * fault.c - a fault shim for the journal tests (tests/integration/
 * test_journal.py) and the UDP ones (test_udp.py), LD_PRELOADed into
 * joinqd (or joinq).
 *
 * It wraps the calls the journal makes to reserve, write and sync its
 * file, and the UDP transport's sendmmsg, and makes them fail while a control file exists, so that a test
 * can fill the disk or break it at the moment it chooses (create the file)
 * and mend it (remove the file), without root, a loop device or a full
 * file system:
 *
 *   JOINQ_FAULT_DISKFULL=PATH   fallocate, fallocate64, posix_fallocate
 *                               and posix_fallocate64 fail with ENOSPC
 *                               while PATH exists
 *   JOINQ_FAULT_EIO=PATH        pwrite, pwrite64, fdatasync and fsync on a
 *                               regular file fail with EIO while PATH
 *                               exists
 *   JOINQ_FAULT_EIO_ONLY=NAME   with JOINQ_FAULT_EIO: only this call
 *                               ("pwrite", "fdatasync" (fsync too) or
 *                               "fsync") fails
 *   JOINQ_FAULT_EIO_PATH=SUFFIX with JOINQ_FAULT_EIO: only on a file or a
 *                               directory whose path ends with SUFFIX
 *                               (the compaction's "joinq.journal.new",
 *                               or the state directory)
 *   JOINQ_FAULT_EIO_IN=WHO      with JOINQ_FAULT_EIO: only in the process
 *                               that started with the shim ("parent") or
 *                               in a process it forked ("child": the
 *                               compacting child)
 *   JOINQ_FAULT_SYNC_DELAY=PATH fdatasync first sleeps as many
 *                               milliseconds as PATH's first line says
 *                               (while PATH exists), so that a test can
 *                               see replies wait for the commit
 *   JOINQ_FAULT_NO_GSO=PATH     sendmmsg refuses a message carrying
 *                               UDP_SEGMENT with EIO (as a device without
 *                               checksum offload does) while PATH exists
 *
 * With none of them set, every call goes straight to the real one
 * (dlsym(RTLD_NEXT)).  Built by make check as a libtool module, without
 * the sanitizers: under the ASan build the tests preload it with
 * ASAN_OPTIONS=verify_asan_link_order=0.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* The prototypes, for -Wmissing-prototypes: these are the wrappers. */
int fallocate(int fd, int mode, off_t offset, off_t len);
int fallocate64(int fd, int mode, off_t offset, off_t len);
int posix_fallocate(int fd, off_t offset, off_t len);
int posix_fallocate64(int fd, off_t offset, off_t len);
ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset);
ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset);
int fdatasync(int fd);
int fsync(int fd);
int sendmmsg(int fd, struct mmsghdr *msgs, unsigned int n, int flags);

/* The real function behind a wrapper, looked up once. */
#define REAL(type, name) \
	static type real_##name; \
	if (!real_##name) \
		real_##name = (type)dlsym(RTLD_NEXT, #name)

/* The process the shim was loaded into; a fork has another pid. */
static pid_t first_pid;

__attribute__((constructor)) static void remember_pid(void)
{
	first_pid = getpid();
}

/* True while the control file that env names exists. */
static int armed(const char *env)
{
	const char *path = getenv(env);
	return path && *path && access(path, F_OK) == 0;
}

static int is_regular(int fd)
{
	struct stat st;
	return fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

/* True if fd's path ends with suffix. */
static int path_ends_with(int fd, const char *suffix)
{
	char link[64], path[4096];
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, path, sizeof path - 1);
	if (n < 0)
		return 0;
	path[n] = '\0';
	size_t len = strlen(suffix);
	return (size_t)n >= len && strcmp(path + n - len, suffix) == 0;
}

/* EIO for call on fd, now? */
static int eio(const char *call, int fd)
{
	if (!armed("JOINQ_FAULT_EIO"))
		return 0;
	const char *only = getenv("JOINQ_FAULT_EIO_ONLY");
	if (only && *only && strcmp(only, call) != 0 &&
	    !(strcmp(only, "fdatasync") == 0 && strcmp(call, "fsync") == 0) &&
	    !(strcmp(only, "pwrite") == 0 && strcmp(call, "pwrite64") == 0))
		return 0;
	const char *in = getenv("JOINQ_FAULT_EIO_IN");
	const char *here = getpid() == first_pid ? "parent" : "child";
	if (in && *in && strcmp(in, here) != 0)
		return 0;
	const char *suffix = getenv("JOINQ_FAULT_EIO_PATH");
	if (suffix && *suffix)
		return path_ends_with(fd, suffix);
	return is_regular(fd);
}

static void sync_delay(void)
{
	const char *path = getenv("JOINQ_FAULT_SYNC_DELAY");
	if (!path || !*path)
		return;
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	char line[32];
	long ms = fgets(line, sizeof line, f) ? strtol(line, NULL, 10) : 0;
	fclose(f);
	if (ms > 0) {
		struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
}

typedef int (*fallocate_fn)(int, int, off_t, off_t);
typedef int (*posix_fallocate_fn)(int, off_t, off_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef int (*sync_fn)(int);

int fallocate(int fd, int mode, off_t offset, off_t len)
{
	REAL(fallocate_fn, fallocate);
	if (armed("JOINQ_FAULT_DISKFULL")) {
		errno = ENOSPC;
		return -1;
	}
	return real_fallocate(fd, mode, offset, len);
}

int fallocate64(int fd, int mode, off_t offset, off_t len)
{
	REAL(fallocate_fn, fallocate64);
	if (armed("JOINQ_FAULT_DISKFULL")) {
		errno = ENOSPC;
		return -1;
	}
	return real_fallocate64(fd, mode, offset, len);
}

/* posix_fallocate returns the error instead of setting errno. */
int posix_fallocate(int fd, off_t offset, off_t len)
{
	REAL(posix_fallocate_fn, posix_fallocate);
	if (armed("JOINQ_FAULT_DISKFULL"))
		return ENOSPC;
	return real_posix_fallocate(fd, offset, len);
}

int posix_fallocate64(int fd, off_t offset, off_t len)
{
	REAL(posix_fallocate_fn, posix_fallocate64);
	if (armed("JOINQ_FAULT_DISKFULL"))
		return ENOSPC;
	return real_posix_fallocate64(fd, offset, len);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)
{
	REAL(pwrite_fn, pwrite);
	if (eio("pwrite", fd)) {
		errno = EIO;
		return -1;
	}
	return real_pwrite(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset)
{
	REAL(pwrite_fn, pwrite64);
	if (eio("pwrite64", fd)) {
		errno = EIO;
		return -1;
	}
	return real_pwrite64(fd, buf, count, offset);
}

int fdatasync(int fd)
{
	REAL(sync_fn, fdatasync);
	sync_delay();
	if (eio("fdatasync", fd)) {
		errno = EIO;
		return -1;
	}
	return real_fdatasync(fd);
}

int fsync(int fd)
{
	REAL(sync_fn, fsync);
	if (eio("fsync", fd)) {
		errno = EIO;
		return -1;
	}
	return real_fsync(fd);
}

/* True if h carries a UDP_SEGMENT control message. */
static int has_segment(struct msghdr *h)
{
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(h); cm; cm = CMSG_NXTHDR(h, cm))
		if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_SEGMENT)
			return 1;
	return 0;
}

typedef int (*sendmmsg_fn)(int, struct mmsghdr *, unsigned int, int);

/* Sends the messages before the first GSO one; that one fails. */
int sendmmsg(int fd, struct mmsghdr *msgs, unsigned int n, int flags)
{
	REAL(sendmmsg_fn, sendmmsg);
	unsigned int k = 0;
	if (armed("JOINQ_FAULT_NO_GSO"))
		while (k < n && !has_segment(&msgs[k].msg_hdr))
			k++;
	else
		k = n;
	if (n && k == 0) {
		errno = EIO;
		return -1;
	}
	return real_sendmmsg(fd, msgs, k, flags);
}
