/*
 * tlsc.h - the client side of TLS (tlsc.c), shared by libjoinq and
 * joinq bench: a configuration (struct jq_tls: the SSL_CTX with the CAs
 * trusted and the client certificate, and which name to verify) and one
 * TLS session over a connected non-blocking socket: the handshake bounded
 * by a deadline, reads and writes that say which way they wait, and every
 * failure told as one sentence a user can act on.  OpenSSL does the
 * cryptography; nothing here touches the bytes.
 */
#ifndef JQ_TLSC_H
#define JQ_TLSC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#define TLSC_WHY 224              /* room for a failure's sentence */

/* joinq.h's jq_tls: a client's TLS settings, shared by many sessions. */
struct jq_tls {
	SSL_CTX *ctx;
	char *server_name;            /* NULL: each address's own host */
	bool any_name;                /* the chain is verified, not the name */
};

/* One TLS session on a socket; ssl NULL: none (plain TCP). */
struct tlsc {
	SSL *ssl;
	short want;                   /* POLLIN or POLLOUT: what the last
	                                 read or write that could not go on
	                                 waits for */
	bool handshaking;
	const char *peer;             /* "127.0.0.1:7478", for messages: the
	                                 caller's string, kept as long as s */
	char cert[96];                /* the verify callback's account of
	                                 the certificate that failed: its
	                                 names or the date it is judged by */
	char why[TLSC_WHY];           /* the last hard failure */
	bool refused;                 /* the daemon's alert refused this
	                                 client: nothing sent was executed */
};

/* A configuration trusting the system's CAs, verifying names; 0, or -1
 * with why filled. */
int tlsc_config_init(struct jq_tls *t, char *why, size_t size);
/* Trust the CAs in path (PEM) instead of the system's. */
int tlsc_config_ca_file(struct jq_tls *t, const char *path, char *why,
                        size_t size);
/* Present the certificate (chain) in cert_file with the key in key_file. */
int tlsc_config_cert(struct jq_tls *t, const char *cert_file,
                     const char *key_file, char *why, size_t size);
int tlsc_config_server_name(struct jq_tls *t, const char *name, char *why,
                            size_t size);
/* A copy that shares the SSL_CTX (a reference of its own). */
int tlsc_config_copy(struct jq_tls *to, const struct jq_tls *from);
void tlsc_config_free(struct jq_tls *t);

/*
 * Runs the handshake on fd (connected, non-blocking) with t, verifying
 * the server's name as host (unless t names another, or any_name), until
 * deadline_ms (CLOCK_MONOTONIC ms; < 0: none).  peer ("127.0.0.1:7478")
 * and port name the daemon in messages.  0, or -1 with s->why filled
 * (and the session freed).
 */
int tlsc_start(struct tlsc *s, const struct jq_tls *t, int fd,
               const char *host, const char *peer, const char *port,
               int64_t deadline_ms);

/* Like recv() and send() on a non-blocking socket: -1 with errno EAGAIN
 * when the session must wait (s->want says for what), EPROTO for a TLS
 * failure (s->why tells it); 0 from read is the end of the stream. */
ssize_t tlsc_read(struct tlsc *s, void *p, size_t len);
ssize_t tlsc_write(struct tlsc *s, const void *p, size_t len);
/* True if bytes are held inside the session: poll() cannot see them. */
bool tlsc_pending(const struct tlsc *s);
/* Sends close_notify if the socket takes it now (the sending side's end). */
void tlsc_close_notify(struct tlsc *s);
void tlsc_free(struct tlsc *s);

#endif
