/*
 * joinq.h - libjoinq, a client of joinqd (protocol 1, PROTOCOL.md).
 *
 * One jq_client is one TCP connection or one UDP socket.  Calls block;
 * every wait is bounded by the op's own timeout plus the client's
 * io_timeout.  Items travel as JSON text, never re-encoded: pass the JSON
 * of the value, e.g. "\"hello\"" or "{\"n\":1}" (whitespace between
 * tokens is removed, numbers go as spelt: 0.1 stays 0.1, and an integer of
 * any size is kept); jq_put_string() encodes a plain string for you; a get
 * returns the item's text as the daemon sent it.
 *
 * Errors.  Every call returns JQ_OK (0) or an error code and, when err is
 * not NULL, fills it with the code and a sentence; no call aborts or exits
 * the process, out of memory included (JQ_ERR_NOMEM).  Codes below JQ_NERR
 * are the daemon's (enum jq_err: JQ_FULL, JQ_EMPTY, ...): the request was
 * answered and the client stays usable.  The ones from JQ_ERR_SYSTEM up
 * are the library's own:
 *   - JQ_ERR_ARGUMENT: nothing was sent; the client stays usable;
 *   - JQ_ERR_NOMEM (memory ran out): if it struck while the request was
 *     built, nothing was sent; if it struck once the reply was in (reading
 *     it, or copying an item or reply out), the reply is dropped; either
 *     way the client stays usable.  Over TCP, if no buffer could be had to
 *     read the reply into, the stream is out of step, as below;
 *   - JQ_ERR_PROTOCOL: the reply was read and dropped;
 *     the client stays usable;
 *   - JQ_ERR_SYSTEM, JQ_ERR_CLOSED, JQ_ERR_IO_TIMEOUT over TCP: the stream
 *     is out of step, and every later call on the client fails the same
 *     way; jq_close() it and connect again.  Over UDP each call stands
 *     alone: the client stays usable;
 * When a reply is dropped, the request may still have taken effect: a put
 * may have queued its item, a get taken a task (with a lease it comes back
 * when the lease ends; without one, when the client closes).
 *   - JQ_ERR_CONNECT comes from jq_connect() and jq_connect_tls(), and
 *     from the first call on a TLS connection whose client certificate
 *     the daemon refused (TLS 1.3 says so only after the handshake): the
 *     daemon executed nothing that was sent, and the stream is broken;
 *   - JQ_ERR_CANCELLED: see jq_set_cancel_fd().
 *   - JQ_ERR_UNKNOWN_OUTCOME: see "Several addresses" below.
 * A call that fails leaves its outputs zeroed (a jq_task with item NULL,
 * *reply and *json NULL), so that freeing them is always safe.
 *
 * Several addresses.  jq_options.host may list several daemons, "a:7477,
 * b:7477" (PROTOCOL.md, "Replication": one active daemon and standbys).
 * Over TCP, jq_connect() connects to the first that answers, in order; the
 * JQ_ERR_CONNECT message names every address.  An op call then moves to
 * another daemon, and sends its request there, when the connection is
 * found closed before the request goes out, or when a standby refuses it
 * with unavailable (nothing was changed): to the active daemon the refusal
 * names first, else to the next address, round robin, with the token sent
 * again.  Rounds that find no daemon pause 50 ms, doubling to 1 s; all the
 * looking, from the first failure on, takes at most io_timeout (5 s when
 * io_timeout is 0) beyond the op's own wait, and then the call fails with
 * JQ_ERR_CONNECT.  When the connection is lost after the request went
 * out, the reply is lost, not the request's effect:
 *   - ping, qsize, stats and join are sent again to the next daemon; so is
 *     get, and the task the lost reply may have carried comes back as after
 *     any disconnect (at once without a lease, when the lease ends with
 *     one): a later get may receive it; so is declare, which then answers
 *     created false if the lost one made the queue;
 *   - put, task_done, release, purge and delete are not sent again: the
 *     call fails with JQ_ERR_UNKNOWN_OUTCOME (it may or may not have taken
 *     effect; a put may have queued its item), and the next call connects
 *     again.
 * A reply that does not come in time is JQ_ERR_IO_TIMEOUT as with one
 * address, and the next call connects again.  jq_send, jq_flush and
 * jq_recv (pipelining) never fail over: they work on the connection of
 * the moment.  With one address nothing of this applies: errors are as
 * described above and nothing is sent twice.  Over UDP the client uses the
 * first address that resolves, and stays with it.
 *
 * Threads.  A jq_client may be used by one thread at a time (calls on one
 * client must not overlap); different clients may be used from different
 * threads at once: the library keeps no state outside its jq_client and
 * has no mutable static data.  jansson, which it uses, must be built
 * thread-safe (its default).
 *
 *     struct jq_options o = JQ_OPTIONS_INIT;
 *     struct jq_error err;
 *     jq_client *c = jq_connect(&o, &err);
 *     uint64_t task;
 *     if (!c || jq_put_string(c, "jobs", "hello", NULL, &task, &err))
 *         fprintf(stderr, "%s\n", err.message);
 */
#ifndef JOINQ_H
#define JOINQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>


#ifdef __cplusplus
extern "C" {
#endif

#define JQ_DEFAULT_HOST "127.0.0.1"
#define JQ_DEFAULT_PORT "7477"
#define JQ_DEFAULT_TLS_PORT "7478"   /* jq_connect_tls without a port */

/* The daemon's error codes, PROTOCOL.md's table in its order but for
 * conflict, which came later and goes last so that the others keep their
 * numbers; on the wire each goes by its name, jq_strcode(code)
 * ("bad_json", "full", ...). */
enum jq_err {
	JQ_OK = 0,
	JQ_BAD_JSON,
	JQ_BAD_UTF8,
	JQ_FRAME_TOO_LARGE,
	JQ_BAD_REQUEST,
	JQ_UNKNOWN_OP,
	JQ_BAD_QUEUE,
	JQ_TOO_MANY_QUEUES,
	JQ_FULL,
	JQ_EMPTY,
	JQ_TIMEOUT,
	JQ_UNKNOWN_TASK,
	JQ_TOO_LARGE,
	JQ_UNAUTHORIZED,
	JQ_TOO_MANY_CONNECTIONS,
	JQ_SHUTTING_DOWN,
	JQ_UNAVAILABLE,
	JQ_CONFLICT,
	JQ_NERR
};

/* Library errors, above the daemon's codes. */
enum {
	JQ_ERR_SYSTEM = 100,   /* a system call failed; message names it */
	JQ_ERR_CONNECT,        /* cannot reach the daemon; message names the address */
	JQ_ERR_CLOSED,         /* the daemon closed the connection */
	JQ_ERR_IO_TIMEOUT,     /* no reply within the op's wait plus io_timeout */
	JQ_ERR_PROTOCOL,       /* the reply is not what protocol 1 says */
	JQ_ERR_ARGUMENT,       /* a bad argument (say, item is not JSON) */
	JQ_ERR_CANCELLED,      /* UDP: the cancel descriptor turned readable */
	JQ_ERR_NOMEM,          /* memory ran out (see "Errors" above) */
	JQ_ERR_UNKNOWN_OUTCOME,/* several addresses: the connection was lost
	                          after a put, task_done or release was sent
	                          (see "Several addresses" below) */
};

enum jq_transport { JQ_TCP, JQ_UDP };

struct jq_options {
	const char *host;           /* name or address, or a comma-separated
	                               list of them (HOST, HOST:PORT or
	                               [IPV6]:PORT; see "Several addresses"
	                               above); default 127.0.0.1 */
	const char *port;           /* for addresses without one; default
	                               "7477" */
	enum jq_transport transport;
	double connect_timeout;     /* seconds; default 5 */
	double io_timeout;          /* seconds a reply may take beyond the op's
	                               own wait; 0: no limit (TCP), default 5 */
	const char *token;          /* NULL: none.  TCP sends auth once;
	                               UDP adds it to every request */
};

#define JQ_OPTIONS_INIT { NULL, NULL, JQ_TCP, 5.0, 5.0, NULL }

struct jq_error {
	int code;                   /* JQ_OK, a daemon code or a JQ_ERR_* */
	char message[256];
};

/* How a blocking op waits: block false is the Python *_nowait; timeout < 0
 * waits forever.  NULL means block forever. */
struct jq_wait {
	bool block;
	double timeout;
};

/* A delivered task.  item is malloc'd compact JSON; jq_task_free() frees
 * it. */
struct jq_task {
	uint64_t task;
	uint32_t deliveries;
	char *item;
	size_t item_len;
};

/* What jq_declare names.  A setting not named is not compared with an
 * existing queue's, and a new queue takes it from the daemon's
 * configuration.  JQ_DECLARE_INIT names none. */
struct jq_declare {
	bool has_maxsize;
	uint64_t maxsize;           /* 0: unbounded; below 2^63 */
	bool has_max_deliveries;
	uint32_t max_deliveries;    /* 0: unlimited */
	const char *dead_letter;    /* a queue's name; NULL: not named */
};

#define JQ_DECLARE_INIT { false, 0, false, 0, NULL }

/* A queue's settings as jq_declare answers them. */
struct jq_settings {
	bool created;               /* the declare made the queue */
	uint64_t maxsize;
	uint64_t max_deliveries;
	char dead_letter[136];      /* "": none (tasks past max_deliveries
	                               are dropped) */
};

struct jq_qsize {
	uint64_t qsize, maxsize, unfinished, inflight, delayed;
	uint64_t dead_lettered;     /* tasks this queue sent to dead letters
	                               (joinqd; 0 from a daemon without it) */
	bool empty, full;
};

typedef struct jq_client jq_client;

/* Connects (TCP) or sets up a socket (UDP), and authenticates when a token
 * is given.  NULL on failure, with err filled; nothing is left open. */
jq_client *jq_connect(const struct jq_options *o, struct jq_error *err);
void jq_close(jq_client *c);
/*
 * TLS (PROTOCOL.md, "Transports": TCP in TLS 1.2 or later, on the daemon's
 * tls_port).  A jq_tls holds the settings; jq_connect_tls() connects as
 * jq_connect() does (failover, tokens, every call) and runs the TLS
 * handshake on each connection it makes, bounded by connect_timeout.  The
 * daemon's certificate must chain to a CA trusted here (the system's, or
 * jq_tls_set_ca_file's) and be for the name of the address connected to
 * (each address of a list its own host), or for jq_tls_set_server_name's.
 * A failed handshake is JQ_ERR_CONNECT with one sentence that says why (an
 * untrusted CA, an expired or not yet valid certificate, another name, a
 * port that does not speak TLS, the daemon refusing the client's
 * certificate); a refusal that TLS 1.3 sends after the handshake shows on
 * the first call, as JQ_ERR_CLOSED with the same kind of sentence.
 *
 * A jq_tls may serve many clients, in many threads; each client keeps
 * what it needs, so jq_tls_free() may come before their jq_close().  Do
 * not change a jq_tls while a jq_connect_tls() uses it.  The setters
 * return JQ_OK or JQ_ERR_ARGUMENT (a file that cannot be read or used,
 * named in the message) and leave the settings as they were on failure.
 */
typedef struct jq_tls jq_tls;

/* Settings that trust the system's CAs and verify the daemon's name;
 * NULL on failure, with err filled. */
jq_tls *jq_tls_new(struct jq_error *err);
/* Trust the CAs in path (PEM) instead of the system's. */
int jq_tls_set_ca_file(jq_tls *t, const char *path, struct jq_error *err);
/* Mutual TLS: present the certificate (PEM, its chain after it) in
 * cert_file, with the key in key_file. */
int jq_tls_set_cert(jq_tls *t, const char *cert_file, const char *key_file,
                    struct jq_error *err);
/* The name the daemon's certificate must be for (and the one sent as
 * Server Name Indication), whatever the address; NULL: each address's. */
int jq_tls_set_server_name(jq_tls *t, const char *name,
                           struct jq_error *err);
/* Accept a certificate for any name.  The chain is still verified against
 * the CAs trusted: only the name is not.  Anyone holding a certificate
 * from those CAs can then pose as the daemon. */
void jq_tls_insecure_any_name(jq_tls *t);
void jq_tls_free(jq_tls *t);

/* jq_connect() over TLS with tls (NULL: plain TCP, as jq_connect()); the
 * port defaults to JQ_DEFAULT_TLS_PORT.  TLS over UDP is JQ_ERR_ARGUMENT. */
jq_client *jq_connect_tls(const struct jq_options *o, const jq_tls *tls,
                          struct jq_error *err);

/* The address in use, "HOST:PORT" (numeric), for messages. */
const char *jq_peer(const jq_client *c);

/*
 * Makes a wait for a reply stoppable from elsewhere (a signal handler that
 * writes to a pipe, say): when fd turns readable during the wait, a TCP
 * client closes its sending side, so the daemon answers the request at once
 * as if it had not blocked (PROTOCOL.md, "Transports"): a waiting get
 * returns JQ_EMPTY, or the task it was being handed, which the caller must
 * then give back (jq_release on a new connection, or jq_close if it had no
 * lease).  The client is then good only for jq_close.  Over UDP the call
 * gives up at once with JQ_ERR_CANCELLED.  fd -1 (the default) turns this
 * off; the library never reads fd.
 */
void jq_set_cancel_fd(jq_client *c, int fd);

/* queue NULL means "default". */
int jq_put(jq_client *c, const char *queue, const char *item_json,
           size_t len, const struct jq_wait *w, uint64_t *task,
           struct jq_error *err);
int jq_put_string(jq_client *c, const char *queue, const char *s,
                  const struct jq_wait *w, uint64_t *task,
                  struct jq_error *err);
/* lease in seconds; 0: none (over UDP the daemon's udp_lease applies). */
int jq_get(jq_client *c, const char *queue, const struct jq_wait *w,
           double lease, struct jq_task *out, struct jq_error *err);
void jq_task_free(struct jq_task *t);
int jq_task_done(jq_client *c, uint64_t task, uint64_t *unfinished,
                 struct jq_error *err);
/* delay in seconds; 0: back to the head at once. */
int jq_release(jq_client *c, uint64_t task, double delay,
               struct jq_error *err);
int jq_join(jq_client *c, const char *queue, const struct jq_wait *w,
            struct jq_error *err);
int jq_qsize(jq_client *c, const char *queue, struct jq_qsize *out,
             struct jq_error *err);
/*
 * declare (PROTOCOL.md): makes the queue with the settings d names (NULL:
 * none), the others from the daemon's configuration, as
 * JoinableQueue(maxsize=N) does; or, when it exists, checks that each
 * setting d names is the queue's own.  JQ_CONFLICT when one differs or
 * the daemon's configuration file sets it otherwise (the message names
 * it): nothing changed.  out (may be NULL): the queue's settings.
 */
int jq_declare(jq_client *c, const char *queue, const struct jq_declare *d,
               struct jq_settings *out, struct jq_error *err);
/* purge: finishes every queued task of the queue (not those in flight or
 * delayed); *purged (may be NULL): how many. */
int jq_purge(jq_client *c, const char *queue, uint64_t *purged,
             struct jq_error *err);
/* delete: removes the queue and its settings, if it has no unfinished
 * task (else JQ_CONFLICT, nothing changed).  *deleted (may be NULL): false
 * when there was no such queue, which is no error. */
int jq_delete(jq_client *c, const char *queue, bool *deleted,
              struct jq_error *err);
/* version: the daemon's version string, at most len bytes with the NUL. */
int jq_ping(jq_client *c, char *version, size_t len, struct jq_error *err);
/* *json: the whole stats reply as malloc'd JSON text; free() it. */
int jq_stats(jq_client *c, char **json, struct jq_error *err);

/*
 * Raw requests, for pipelining: jq_send() queues one request object (JSON
 * text, no newline), jq_flush() writes what is queued, and jq_recv() reads
 * the next reply line (malloc'd, no newline; free() it) and returns JQ_OK
 * for {"ok":true...}, the daemon's code for an error reply, or a library
 * code.  Replies come in request order (TCP).  wait bounds jq_recv like an
 * op's wait (NULL: forever).
 */
int jq_send(jq_client *c, const char *request_json, size_t len,
            struct jq_error *err);
int jq_flush(jq_client *c, struct jq_error *err);
int jq_recv(jq_client *c, const struct jq_wait *w, char **reply, size_t *len,
            struct jq_error *err);

/* Flushes, then closes the sending side (TCP): the daemon still answers
 * every request sent, and one that would wait is answered at once as if
 * non-blocking (PROTOCOL.md, "Transports").  This ends a pipeline
 * promptly: only jq_recv and jq_close may follow.  Over UDP it only
 * flushes. */
int jq_shutdown(jq_client *c, struct jq_error *err);

/* The wire name of a code ("full", "unknown_task"), or of a library code
 * ("system", "connect", "closed", "io_timeout", "protocol", "argument",
 * "cancelled", "nomem", "unknown_outcome"). */
const char *jq_strcode(int code);

#ifdef __cplusplus
}
#endif

#endif
