/*
 * tls.h - TLS for TCP clients (tls_port) and /metrics (metrics_tls): the
 * server's SSL_CTX, made from the tls_* settings at the start and again on
 * SIGHUP, and the transform conn.c runs its TLS connections through.
 *
 * conn.c keeps its own I/O (one read per readable event, replies sent from
 * its out buffer); a TLS connection's SSL reads ciphertext from a memory
 * BIO that conn.c fills (tls_feed) and writes ciphertext to a memory BIO
 * that is emptied into the connection's out buffer (tls_take_output), so
 * that OpenSSL never touches the socket.
 */
#ifndef JQ_TLS_H
#define JQ_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "buf.h"

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

/* tls.c's own. */
struct tls_state {
	SSL_CTX *ctx;       /* new connections' settings; NULL: TLS off */
};

/* Makes server.tls.ctx when anything needs it (tls_port, metrics_tls, a
 * socket systemd passed as "tls": `needed`).  Returns 0, or -1 after
 * logging why (a file that cannot be read, a key that does not match the
 * certificate...). */
int tls_open(bool needed);

/* SIGHUP: a new SSL_CTX from the files as they are now, for the
 * connections to come; connections already open keep theirs.  If anything
 * fails the old one stays, and a warning says why. */
void tls_reload(void);

/* Frees the SSL_CTX (exit). */
void tls_close(void);

/* A server-side SSL for a new connection, on memory BIOs; NULL after
 * logging if it cannot be made. */
SSL *tls_new(void);

void tls_free(SSL *ssl);

/* Ciphertext held undecrypted: what the plaintext of the next tls_read
 * may exceed the ciphertext just fed by. */
size_t tls_held(SSL *ssl);

/* Ciphertext read from the socket, for the SSL to read. */
void tls_feed(SSL *ssl, const char *p, size_t n);

/* Advances the handshake: 1 done, 0 it needs more input, -1 failed (why
 * in tls_reason).  Its output waits for tls_take_output. */
int tls_handshake(SSL *ssl);

/* Decrypts what was fed into out (room bytes): the bytes, or -1 on a TLS
 * error (why in tls_reason).  *eof is set when the peer sent close_notify. */
ssize_t tls_read(SSL *ssl, char *out, size_t room, bool *eof);

/* Encrypts plaintext into out (all of it: the memory BIO takes any size). */
void tls_seal(SSL *ssl, const char *p, size_t n, struct buf *out);

/* close_notify into out, best effort. */
void tls_close_notify(SSL *ssl, struct buf *out);

/* Moves what the SSL wrote (handshake messages, alerts) into out. */
void tls_take_output(SSL *ssl, struct buf *out);

/* Why the last TLS call failed, in one line ("certificate verify failed",
 * "no shared cipher", "unexpected eof while reading"); clears OpenSSL's
 * error queue. */
const char *tls_reason(char *buf, size_t len);

/* "TLSv1.3 TLS_AES_256_GCM_SHA384", for the debug log. */
void tls_describe(SSL *ssl, char *buf, size_t len);

#endif
