/* log.c - stderr logging (see log.h).  It owns server.log; the level lives
 * in server.cfg. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "server.h"

static const char *const names[] = { "error", "warning", "info", "debug" };
/* sd-daemon priorities: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG */
static const char *const prefixes[] = { "<3>", "<4>", "<6>", "<7>" };

/* True if JOURNAL_STREAM ("DEVICE:INODE") names our stderr. */
static bool stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	char *end;
	struct stat st;

	if (!js || fstat(STDERR_FILENO, &st) < 0)
		return false;
	errno = 0;
	unsigned long long dev = strtoull(js, &end, 10);
	if (end == js || *end != ':')
		return false;
	const char *ino_text = end + 1;
	unsigned long long ino = strtoull(ino_text, &end, 10);
	return errno == 0 && end != ino_text && !*end &&
	       st.st_dev == dev && st.st_ino == ino;
}

void log_init(void)
{
	server.log.to_journal = stderr_is_journal();
}

int log_level_parse(const char *name)
{
	for (int i = 0; i < (int)(sizeof names / sizeof *names); i++)
		if (strcmp(name, names[i]) == 0)
			return i;
	if (strcmp(name, "warn") == 0)
		return LOG_WARNING;
	return -1;
}

void log_write(enum log_level level, const char *fmt, ...)
{
	char line[1024];
	size_t n = 0;
	va_list ap;

	if ((int)level > server.cfg.log_level)
		return;
	if (server.log.to_journal) {
		n = (size_t)snprintf(line, sizeof line, "%s", prefixes[level]);
	} else {
		struct timespec ts;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		n = strftime(line, sizeof line, "%Y-%m-%d %H:%M:%S", &tm);
		n += (size_t)snprintf(line + n, sizeof line - n, ".%03ld %s: ",
		                      ts.tv_nsec / 1000000, names[level]);
	}
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof line - n, fmt, ap);
	va_end(ap);
	n = m < 0 ? n : n + (size_t)m;
	if (n > sizeof line - 2)
		n = sizeof line - 2;
	line[n++] = '\n';
	fwrite(line, 1, n, stderr);
}
