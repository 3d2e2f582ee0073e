/*
 * cli.c - what joinq's commands share (see cli.h): exit statuses, error
 * and usage messages, numbers on the command line.  The commands are in
 * joinq.c (the command line), commands.c, put.c, work*.c and bench*.c.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The exit status for a libjoinq return code. */
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
	case JQ_CONFLICT:
		return EXIT_CONFLICT;
	case JQ_ERR_CONNECT:
	case JQ_ERR_CLOSED:
	case JQ_ERR_IO_TIMEOUT:
	case JQ_ERR_UNKNOWN_OUTCOME:
		return EXIT_CONNECTION;
	case JQ_ERR_ARGUMENT:
		return EXIT_USAGE;
	default:
		return EXIT_ERROR;
	}
}

int report(const char *where, const struct jq_error *e)
{
	fprintf(stderr, "joinq: %s%s", where ? where : "", where ? ": " : "");
	if (e->code > 0 && e->code < JQ_NERR)
		fprintf(stderr, "%s: ", jq_strcode(e->code));
	fprintf(stderr, "%s\n", e->message);
	return exit_status(e->code);
}

int usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "joinq: %s%s", cmd ? cmd : "", cmd ? ": " : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'joinq %s%s--help'.\n", cmd ? cmd : "",
	        cmd ? " " : "");
	return EXIT_USAGE;
}

bool parse_seconds(const char *text, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(text, &end);
	if (end == text || *end || errno || !isfinite(v) || v < 0)
		return false;
	*out = v;
	return true;
}

bool parse_count(const char *text, uint64_t lo, uint64_t hi, uint64_t *out)
{
	if (!*text || strspn(text, "0123456789") != strlen(text))
		return false;
	errno = 0;
	unsigned long long v = strtoull(text, NULL, 10);
	if (errno || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}
