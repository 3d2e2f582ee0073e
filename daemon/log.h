/*
 * log.h - one line per event that matters, on stderr.
 *
 * On a terminal or in a file each line carries a timestamp and the level;
 * when stderr is the systemd journal (JOURNAL_STREAM names it) each line
 * starts with the sd-daemon priority prefix ("<3>") instead, and the
 * journal adds the time.  Per-request events are debug only.
 */
#ifndef JQ_LOG_H
#define JQ_LOG_H

#include <stdbool.h>

enum log_level { LOG_ERROR, LOG_WARNING, LOG_INFO, LOG_DEBUG };

/* log.c's own; the level lives in server.cfg. */
struct log_state {
	bool to_journal;                /* stderr is the systemd journal */
};

/* Reads JOURNAL_STREAM to choose the line format; call once at start. */
void log_init(void);

/* The level of a name ("error", "warning", "info", "debug"), or -1. */
int log_level_parse(const char *name);

void log_write(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)
#define log_warning(...) log_write(LOG_WARNING, __VA_ARGS__)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)

#endif
