/*
 * tls.c - the server's SSL_CTX and the memory-BIO transform (see tls.h).
 *
 * Always: TLS 1.2 or later (tls_min_version may say 1.3), no
 * renegotiation, no compression, the server's cipher preference.  An
 * SSL_CTX is reference-counted: each SSL holds its own reference, so a
 * reload swaps server.tls.ctx while the connections made with the old one
 * keep it until they close.  SSL_MODE_RELEASE_BUFFERS gives an idle
 * connection's record buffers back; the memory BIOs are swapped for new
 * ones once they have grown past a record or two, for the same reason.
 *
 * It owns server.tls (struct tls_state).
 */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "server.h"
#include "tls.h"

#define BIO_KEEP (2 * 16384 + 1024)  /* a memory BIO grown past: renewed */

const char *tls_reason(char *buf, size_t len)
{
	unsigned long e = ERR_peek_last_error();
	const char *reason = e ? ERR_reason_error_string(e) : NULL;
	if (reason)
		snprintf(buf, len, "%s", reason);
	else if (e)
		ERR_error_string_n(e, buf, len);
	else
		snprintf(buf, len, "unknown error");
	ERR_clear_error();
	return buf;
}

/* Says what failed (with OpenSSL's reason) into err; returns NULL. */
static SSL_CTX *ctx_failed(SSL_CTX *ctx, char *err, size_t len,
                           const char *what, const char *file)
{
	char reason[256];
	tls_reason(reason, sizeof reason);
	if (file)
		snprintf(err, len, "%s %s: %s", what, file, reason);
	else
		snprintf(err, len, "%s: %s", what, reason);
	SSL_CTX_free(ctx);
	return NULL;
}

/* A new SSL_CTX from the settings t, or NULL with why in err. */
static SSL_CTX *new_ctx(const struct tls_conf *t, char *err, size_t len)
{
	ERR_clear_error();
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx)
		return ctx_failed(ctx, err, len, "cannot set up TLS", NULL);
	SSL_CTX_set_min_proto_version(ctx, t->min_13 ? TLS1_3_VERSION :
	                              TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
	                    SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	/* Resumed sessions must carry the client's verified certificate to the
	 * same context: OpenSSL refuses resumption without an id context. */
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"joinqd", 6);
	if (t->ciphers && !SSL_CTX_set_cipher_list(ctx, t->ciphers))
		return ctx_failed(ctx, err, len, "tls_ciphers", t->ciphers);
	if (t->ciphersuites && !SSL_CTX_set_ciphersuites(ctx, t->ciphersuites))
		return ctx_failed(ctx, err, len, "tls_ciphersuites",
		                  t->ciphersuites);
	if (SSL_CTX_use_certificate_chain_file(ctx, t->cert_file) != 1)
		return ctx_failed(ctx, err, len, "tls_cert_file", t->cert_file);
	if (SSL_CTX_use_PrivateKey_file(ctx, t->key_file, SSL_FILETYPE_PEM) != 1)
		return ctx_failed(ctx, err, len, "tls_key_file", t->key_file);
	if (SSL_CTX_check_private_key(ctx) != 1)
		return ctx_failed(ctx, err, len, "tls_key_file does not match "
		                  "tls_cert_file; key", t->key_file);
	if (t->ca_file) {
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(t->ca_file);
		if (!names || SSL_CTX_load_verify_locations(ctx, t->ca_file,
		                                            NULL) != 1) {
			sk_X509_NAME_pop_free(names, X509_NAME_free);
			return ctx_failed(ctx, err, len, "tls_ca_file", t->ca_file);
		}
		SSL_CTX_set_client_CA_list(ctx, names);
	}
	if (t->client_auth != TLS_AUTH_NONE)
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER |
		                   (t->client_auth == TLS_AUTH_REQUIRE ?
		                    SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
	const ASN1_TIME *end = X509_get0_notAfter(SSL_CTX_get0_certificate(ctx));
	if (end && X509_cmp_current_time(end) < 0)
		log_warning("tls_cert_file %s: the certificate has expired; "
		            "clients that verify it will refuse it", t->cert_file);
	return ctx;
}

int tls_open(bool needed)
{
	char err[512];
	if (!needed)
		return 0;
	if (!server.cfg.tls.cert_file || !server.cfg.tls.key_file) {
		log_error("TLS needs tls_cert_file and tls_key_file: the server "
		          "certificate and its private key");
		return -1;
	}
	server.tls.ctx = new_ctx(&server.cfg.tls, err, sizeof err);
	if (!server.tls.ctx) {
		log_error("%s", err);
		return -1;
	}
	return 0;
}

void tls_reload(void)
{
	char err[512];
	if (!server.tls.ctx)
		return;
	if (!server.cfg.tls.cert_file || !server.cfg.tls.key_file) {
		log_warning("reload: TLS needs tls_cert_file and tls_key_file; the "
		            "certificate in use stays");
		return;
	}
	SSL_CTX *ctx = new_ctx(&server.cfg.tls, err, sizeof err);
	if (!ctx) {
		log_warning("reload: %s; the certificate in use stays", err);
		return;
	}
	SSL_CTX_free(server.tls.ctx);   /* open connections hold their own */
	server.tls.ctx = ctx;
	log_info("reload: TLS certificate and settings from %s",
	         server.cfg.tls.cert_file);
}

void tls_close(void)
{
	SSL_CTX_free(server.tls.ctx);
	server.tls.ctx = NULL;
}

SSL *tls_new(void)
{
	SSL *ssl = server.tls.ctx ? SSL_new(server.tls.ctx) : NULL;
	BIO *rbio = BIO_new(BIO_s_mem()), *wbio = BIO_new(BIO_s_mem());
	if (!ssl || !rbio || !wbio) {
		char reason[256];
		log_warning("cannot set up a TLS connection: %s",
		            tls_reason(reason, sizeof reason));
		SSL_free(ssl);
		BIO_free(rbio);
		BIO_free(wbio);
		return NULL;
	}
	SSL_set_bio(ssl, rbio, wbio);
	SSL_set_accept_state(ssl);
	return ssl;
}

void tls_free(SSL *ssl)
{
	SSL_free(ssl);   /* and its BIOs */
}

/* A memory BIO that grew past BIO_KEEP bytes keeps them until freed. */
static bool grown(BIO *b)
{
	BUF_MEM *m = NULL;
	BIO_get_mem_ptr(b, &m);
	return m && m->max > BIO_KEEP;
}

size_t tls_held(SSL *ssl)
{
	return BIO_ctrl_pending(SSL_get_rbio(ssl)) + (size_t)SSL_pending(ssl);
}

void tls_feed(SSL *ssl, const char *p, size_t n)
{
	BIO *rbio = SSL_get_rbio(ssl);
	if (!BIO_ctrl_pending(rbio) && grown(rbio)) {
		rbio = BIO_new(BIO_s_mem());
		if (rbio)
			SSL_set0_rbio(ssl, rbio);
		else
			rbio = SSL_get_rbio(ssl);
	}
	/* A memory BIO takes any size (or the process is out of memory, and
	 * the record's MAC check fails the connection). */
	BIO_write(rbio, p, (int)n);
}

int tls_handshake(SSL *ssl)
{
	ERR_clear_error();
	int rc = SSL_do_handshake(ssl);
	if (rc == 1)
		return 1;
	int e = SSL_get_error(ssl, rc);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return 0;
	return -1;
}

ssize_t tls_read(SSL *ssl, char *out, size_t room, bool *eof)
{
	size_t got = 0;
	ERR_clear_error();
	while (got < room) {
		size_t n = 0;
		int rc = SSL_read_ex(ssl, out + got, room - got, &n);
		if (rc == 1) {
			got += n;
			continue;
		}
		int e = SSL_get_error(ssl, rc);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			break;
		if (e == SSL_ERROR_ZERO_RETURN) {
			*eof = true;
			break;
		}
		return -1;
	}
	return (ssize_t)got;
}

void tls_take_output(SSL *ssl, struct buf *out)
{
	BIO *wbio = SSL_get_wbio(ssl);
	char *p;
	long n = BIO_get_mem_data(wbio, &p);
	if (n <= 0)
		return;
	buf_add(out, p, (size_t)n);
	if (grown(wbio) && (wbio = BIO_new(BIO_s_mem())) != NULL)
		SSL_set0_wbio(ssl, wbio);   /* frees the grown one */
	else
		(void)BIO_reset(SSL_get_wbio(ssl));
}

void tls_seal(SSL *ssl, const char *p, size_t n, struct buf *out)
{
	size_t written;
	if (!n)
		return;
	/* Into a memory BIO a write does not stop part way: it fails only out
	 * of memory, and then the connection's next record fails too. */
	ERR_clear_error();
	if (SSL_write_ex(ssl, p, n, &written) != 1)
		ERR_clear_error();
	tls_take_output(ssl, out);
}

void tls_close_notify(SSL *ssl, struct buf *out)
{
	ERR_clear_error();
	if (SSL_is_init_finished(ssl))
		(void)SSL_shutdown(ssl);
	ERR_clear_error();
	tls_take_output(ssl, out);
}

void tls_describe(SSL *ssl, char *buf, size_t len)
{
	snprintf(buf, len, "%s %s", SSL_get_version(ssl),
	         SSL_get_cipher_name(ssl));
}
