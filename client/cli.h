/*
 * cli.h - what joinq's commands share (cli.c): the exit statuses, the
 * mapping from an error code to one, the usage-error message, and the
 * parsers of numbers on the command line.
 */
#ifndef JQ_CLI_H
#define JQ_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "joinq.h"

/* joinq's exit status, every command alike (joinq --help says the same;
 * work and bench use the ones that apply to them). */
enum {
	EXIT_OK = 0,
	EXIT_ERROR = 1,             /* an error reply, a failed run or check */
	EXIT_USAGE = 2,
	EXIT_EMPTY = 3,
	EXIT_FULL = 4,
	EXIT_TIMEOUT = 5,
	EXIT_CONNECTION = 6,        /* cannot connect, lost, no reply in time */
	EXIT_CONFLICT = 7,          /* declare or delete refused (conflict) */
};

/* TLS as joinq's options and environment ask it (joinq.c): the files
 * and names, kept for joinq bench's own connections and for the
 * environment of work's CMD. */
struct tls_flags {
	bool on;                    /* --tls, $JOINQ_TLS */
	const char *cacert;         /* --cacert, $JOINQ_CACERT; NULL: none */
	const char *cert, *key;     /* --cert/--key, $JOINQ_CERT/$JOINQ_KEY */
	const char *server_name;    /* --tls-server-name, $JOINQ_TLS_SERVER_NAME */
	bool any_name;              /* --tls-insecure-any-name */
};

/* "joinq: WHERE: CODE: message" for the daemon's errors (the code is what
 * scripts match on); the library's own messages stand alone.  where may
 * be NULL.  Returns the exit status for e->code. */
int report(const char *where, const struct jq_error *e);

/* "joinq: CMD: <message>" and "Try 'joinq CMD --help'." on stderr (cmd
 * NULL: joinq's own options); returns EXIT_USAGE. */
int usage_error(const char *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* A number of seconds: finite, >= 0, nothing after it. */
bool parse_seconds(const char *text, double *out);

/* A whole number from lo to hi, digits only. */
bool parse_count(const char *text, uint64_t lo, uint64_t hi, uint64_t *out);

#endif
