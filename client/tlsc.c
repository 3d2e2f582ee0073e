/*
 * tlsc.c - the client side of TLS, for libjoinq and joinq bench (see
 * tlsc.h): the SSL_CTX a jq_tls holds, and one session on a non-blocking
 * socket.  OpenSSL's own I/O runs on the descriptor (SSL_set_fd); when it
 * would block, the caller polls the descriptor for what s->want says, with
 * its own deadlines, so that TLS keeps every bound plain TCP keeps.
 *
 * Why the failures get so many words: a TLS failure seen raw is "error:
 * 0A000086:SSL routines::certificate verify failed", which says neither
 * which certificate nor what to do.  The verify callback notes what the
 * certificate says (its names, the date it failed on), and describe()
 * turns OpenSSL's error and the verify result into one sentence.  A
 * daemon's plain port closes a TLS client at once (or answers it in plain
 * text): that shows as an end of stream or a "wrong version number"
 * during the handshake, and is told as such.
 *
 * SIGPIPE.  OpenSSL writes to the socket with write(), not send() with
 * MSG_NOSIGNAL as the plain path does, so a write to a daemon that has
 * gone would kill a program that did not ignore SIGPIPE: every call that
 * may write holds SIGPIPE blocked in the calling thread, and takes back
 * one it caused (as libcurl does).  A read writes only in rare cases (an
 * alert, a key update) and goes unguarded.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "netconnect.h"
#include "tlsc.h"

/* Says why OpenSSL could not use the file at path: the system's reason
 * when it cannot be opened (OpenSSL's would be "system lib"). */
static void openssl_why(char *why, size_t size, const char *doing,
                        const char *path)
{
	FILE *f = fopen(path, "r");
	unsigned long e = ERR_peek_last_error();
	const char *reason = e ? ERR_reason_error_string(e) : NULL;
	if (!f)
		reason = strerror(errno);
	else
		fclose(f);
	if (e && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
		reason = "it is not the certificate's key";
	snprintf(why, size, "%s %s: %s", doing, path,
	         reason ? reason : "no PEM data in it");
	ERR_clear_error();
}

/* ---- the configuration ---------------------------------------------------- */

static int verify_cb(int ok, X509_STORE_CTX *x);

int tlsc_config_init(struct jq_tls *t, char *why, size_t size)
{
	memset(t, 0, sizeof *t);
	ERR_clear_error();
	t->ctx = SSL_CTX_new(TLS_client_method());
	if (!t->ctx || !SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION)) {
		snprintf(why, size, "cannot set up TLS: %s",
		         ERR_reason_error_string(ERR_peek_last_error()));
		ERR_clear_error();
		SSL_CTX_free(t->ctx);
		t->ctx = NULL;
		return -1;
	}
	/* No system CA store is no error here: a connection then fails
	 * with "unable to get local issuer certificate", which says it. */
	SSL_CTX_set_default_verify_paths(t->ctx);
	SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, verify_cb);
	SSL_CTX_set_options(t->ctx, SSL_OP_NO_RENEGOTIATION |
	                    SSL_OP_NO_COMPRESSION);
	/* Writes may stop half way and go on from a moved buffer (ours grow);
	 * reads take what the socket holds, not one record at a time. */
	SSL_CTX_set_mode(t->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	                 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_read_ahead(t->ctx, 1);
	ERR_clear_error();
	return 0;
}

int tlsc_config_ca_file(struct jq_tls *t, const char *path, char *why,
                        size_t size)
{
	/* A store of its own, put in place only once it loaded: a failure
	 * leaves t as it was. */
	X509_STORE *store = X509_STORE_new();
	X509_LOOKUP *lookup = store ? X509_STORE_add_lookup(store,
	                                      X509_LOOKUP_file()) : NULL;
	if (!lookup || X509_LOOKUP_load_file(lookup, path,
	                                     X509_FILETYPE_PEM) <= 0) {
		openssl_why(why, size, "cannot read the CA file", path);
		X509_STORE_free(store);
		return -1;
	}
	SSL_CTX_set_cert_store(t->ctx, store);
	return 0;
}

int tlsc_config_cert(struct jq_tls *t, const char *cert_file,
                     const char *key_file, char *why, size_t size)
{
	if (SSL_CTX_use_certificate_chain_file(t->ctx, cert_file) != 1) {
		openssl_why(why, size, "cannot read the certificate", cert_file);
		return -1;
	}
	if (SSL_CTX_use_PrivateKey_file(t->ctx, key_file,
	                                SSL_FILETYPE_PEM) != 1) {
		openssl_why(why, size, "cannot read the key", key_file);
		return -1;
	}
	if (SSL_CTX_check_private_key(t->ctx) != 1) {
		snprintf(why, size, "the key %s is not the certificate %s's",
		         key_file, cert_file);
		ERR_clear_error();
		return -1;
	}
	return 0;
}

int tlsc_config_server_name(struct jq_tls *t, const char *name, char *why,
                            size_t size)
{
	char *copy = NULL;
	if (name && *name && !(copy = strdup(name))) {
		snprintf(why, size, "out of memory for the server name");
		return -1;
	}
	free(t->server_name);
	t->server_name = copy;
	return 0;
}

int tlsc_config_copy(struct jq_tls *to, const struct jq_tls *from)
{
	*to = *from;
	to->server_name = NULL;
	if (from->server_name && !(to->server_name = strdup(from->server_name)))
		return -1;
	SSL_CTX_up_ref(to->ctx);
	return 0;
}

void tlsc_config_free(struct jq_tls *t)
{
	SSL_CTX_free(t->ctx);
	free(t->server_name);
	t->ctx = NULL;
	t->server_name = NULL;
}

/* ---- what a failed certificate says --------------------------------------- */

static bool is_ip(const char *name)
{
	unsigned char a[16];
	return inet_pton(AF_INET, name, a) == 1 || inet_pton(AF_INET6, name, a) == 1;
}

static void add_name(char *out, size_t size, const char *name)
{
	size_t used = strlen(out);
	snprintf(out + used, size - used, "%s%s", used ? ", " : "", name);
}

/* The names a certificate is for: its DNS and IP subject alternative
 * names, else its common name. */
static void cert_names(X509 *cert, char *out, size_t size)
{
	GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name,
	                                        NULL, NULL);
	out[0] = '\0';
	for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
		char text[64];
		if (g->type == GEN_DNS) {
			snprintf(text, sizeof text, "%.*s",
			         ASN1_STRING_length(g->d.dNSName),
			         (const char *)ASN1_STRING_get0_data(g->d.dNSName));
			add_name(out, size, text);
		} else if (g->type == GEN_IPADD) {
			int len = ASN1_STRING_length(g->d.iPAddress);
			if ((len == 4 || len == 16) &&
			    inet_ntop(len == 4 ? AF_INET : AF_INET6,
			              ASN1_STRING_get0_data(g->d.iPAddress), text,
			              sizeof text))
				add_name(out, size, text);
		}
	}
	GENERAL_NAMES_free(names);
	if (!out[0] && X509_NAME_get_text_by_NID(X509_get_subject_name(cert),
	                                         NID_commonName, out,
	                                         (int)size) < 0)
		snprintf(out, size, "no name");
}

static void cert_time(const ASN1_TIME *when, char *out, size_t size)
{
	BIO *b = BIO_new(BIO_s_mem());
	int n = b && ASN1_TIME_print(b, when) ? BIO_read(b, out, (int)size - 1) : 0;
	out[n > 0 ? n : 0] = '\0';
	BIO_free(b);
}

/* Keeps what the first certificate that fails says; the verdict itself
 * is OpenSSL's. */
static int verify_cb(int ok, X509_STORE_CTX *x)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(x,
	                                   SSL_get_ex_data_X509_STORE_CTX_idx());
	struct tlsc *s = ssl ? SSL_get_app_data(ssl) : NULL;
	X509 *cert = X509_STORE_CTX_get_current_cert(x);

	if (ok || !s || !cert || s->cert[0])
		return ok;
	switch (X509_STORE_CTX_get_error(x)) {
	case X509_V_ERR_CERT_HAS_EXPIRED:
		cert_time(X509_get0_notAfter(cert), s->cert, sizeof s->cert);
		break;
	case X509_V_ERR_CERT_NOT_YET_VALID:
		cert_time(X509_get0_notBefore(cert), s->cert, sizeof s->cert);
		break;
	case X509_V_ERR_HOSTNAME_MISMATCH:
	case X509_V_ERR_IP_ADDRESS_MISMATCH:
		cert_names(cert, s->cert, sizeof s->cert);
		break;
	}
	return ok;
}

/* ---- failures, as one sentence -------------------------------------------- */

/* The certificate did not verify. */
static void describe_verify(struct tlsc *s, long v, const char *name)
{
	const char *peer = s->peer;
	const char *what = X509_verify_cert_error_string(v);
	switch (v) {
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_CERT_UNTRUSTED:
		snprintf(s->why, sizeof s->why, "certificate verify failed: %s: "
		         "%s's certificate is not from a CA trusted here; name the "
		         "CA that signed it (--cacert FILE)", what, peer);
		break;
	case X509_V_ERR_CERT_HAS_EXPIRED:
		snprintf(s->why, sizeof s->why, "certificate verify failed: %s's "
		         "certificate has expired (not after %s)", peer, s->cert);
		break;
	case X509_V_ERR_CERT_NOT_YET_VALID:
		snprintf(s->why, sizeof s->why, "certificate verify failed: %s's "
		         "certificate is not yet valid (not before %s)", peer,
		         s->cert);
		break;
	case X509_V_ERR_HOSTNAME_MISMATCH:
	case X509_V_ERR_IP_ADDRESS_MISMATCH:
		snprintf(s->why, sizeof s->why, "certificate verify failed: the "
		         "certificate of %s is for %s, not %s", peer,
		         s->cert[0] ? s->cert : "another name", name);
		break;
	default:
		snprintf(s->why, sizeof s->why, "certificate verify failed: %s: %s",
		         peer, what);
	}
}

/* True for the errors a peer that does not speak TLS causes. */
static bool not_tls(unsigned long e)
{
	if (ERR_GET_LIB(e) != ERR_LIB_SSL)
		return false;
	switch (ERR_GET_REASON(e)) {
	case SSL_R_WRONG_VERSION_NUMBER:
	case SSL_R_PACKET_LENGTH_TOO_LONG:
	case SSL_R_RECORD_LENGTH_MISMATCH:
	case SSL_R_HTTP_REQUEST:
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
	case SSL_R_UNEXPECTED_EOF_WHILE_READING:
#endif
		return true;
	}
	return false;
}

/*
 * Handles a failed SSL call of s (its return r): a wait (-1, errno
 * EAGAIN, s->want set), the end of the stream (0), or a failure (-1:
 * errno as the socket left it, or EPROTO with s->why told).
 */
static int failed(struct tlsc *s, int r, const char *port, const char *name)
{
	const char *peer = s->peer;
	int e = SSL_get_error(s->ssl, r);
	int saved = errno;
	unsigned long first = ERR_peek_error();

	switch (e) {
	case SSL_ERROR_WANT_READ:
		s->want = POLLIN;
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_WANT_WRITE:
		s->want = POLLOUT;
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		ERR_clear_error();
		return 0;
	}
	ERR_clear_error();
	bool eof = (e == SSL_ERROR_SYSCALL && !first && saved == 0) ||
	           (e == SSL_ERROR_SYSCALL && saved == ECONNRESET) ||
	           (first && not_tls(first));
	long v = s->handshaking ? SSL_get_verify_result(s->ssl) : X509_V_OK;
	if (s->handshaking && v != X509_V_OK) {
		describe_verify(s, v, name);
	} else if (s->handshaking && eof) {
		snprintf(s->why, sizeof s->why, "%s closed the connection during "
		         "the TLS handshake: is %s its TLS port?", peer, port);
	} else if (eof) {
		return 0;
	} else if (e == SSL_ERROR_SYSCALL && !first) {
		errno = saved;
		return -1;
	} else if (ERR_GET_LIB(first) == ERR_LIB_SSL &&
	           ERR_GET_REASON(first) >= SSL_AD_REASON_OFFSET) {
		/* The daemon sent an alert: it refused us (mutual TLS).  The
		 * reason reads "tlsv13 alert certificate required". */
		int alert = ERR_GET_REASON(first) - SSL_AD_REASON_OFFSET;
		/* Under TLS 1.3 the refusal of a client certificate comes
		 * after our handshake, but before the daemon's: it read none
		 * of what we sent. */
		s->refused = true;
		const char *text = ERR_reason_error_string(first);
		const char *tail = text ? strstr(text, "alert ") : NULL;
		snprintf(s->why, sizeof s->why, "the daemon at %s refused the TLS "
		         "%s: %s%s", peer, s->handshaking ? "handshake" : "session",
		         tail ? tail + 6 : text ? text : "an alert",
		         alert == TLS13_AD_CERTIFICATE_REQUIRED ||
		         alert == SSL_AD_HANDSHAKE_FAILURE ?
		         " (give a client certificate: --cert FILE --key FILE)" :
		         alert == SSL_AD_UNKNOWN_CA || alert == SSL_AD_BAD_CERTIFICATE ?
		         " (it does not trust the client certificate)" : "");
	} else {
		const char *reason = first ? ERR_reason_error_string(first) : NULL;
		snprintf(s->why, sizeof s->why, "TLS with %s failed: %s", peer,
		         reason ? reason : "an error OpenSSL does not name");
	}
	errno = EPROTO;
	return -1;
}

/* ---- SIGPIPE ---------------------------------------------------------------- */

struct pipe_guard {
	sigset_t old;
	bool pending;               /* a SIGPIPE was pending already: ours
	                               to leave alone */
};

static void guard_on(struct pipe_guard *g)
{
	sigset_t pipe, pending;
	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	sigpending(&pending);
	g->pending = sigismember(&pending, SIGPIPE) == 1;
	pthread_sigmask(SIG_BLOCK, &pipe, &g->old);
}

static void guard_off(const struct pipe_guard *g)
{
	sigset_t pipe, pending;
	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	if (!g->pending && sigpending(&pending) == 0 &&
	    sigismember(&pending, SIGPIPE) == 1) {
		static const struct timespec now = { 0, 0 };
		int saved = errno;
		while (sigtimedwait(&pipe, NULL, &now) < 0 && errno == EINTR)
			;
		errno = saved;
	}
	pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* ---- the session ---------------------------------------------------------- */

int tlsc_start(struct tlsc *s, const struct jq_tls *t, int fd,
               const char *host, const char *peer, const char *port,
               int64_t deadline_ms)
{
	const char *name = t->server_name ? t->server_name : host;

	memset(s, 0, sizeof *s);
	ERR_clear_error();
	if (!(s->ssl = SSL_new(t->ctx)) || !SSL_set_fd(s->ssl, fd)) {
		snprintf(s->why, sizeof s->why, "cannot start TLS with %s: %s",
		         peer, ERR_reason_error_string(ERR_peek_last_error()));
		tlsc_free(s);
		return -1;
	}
	SSL_set_app_data(s->ssl, s);
	s->peer = peer;
	bool ip = is_ip(name);
	/* Server Name Indication carries host names only (RFC 6066). */
	int set = ip ? 1 : SSL_set_tlsext_host_name(s->ssl, name);
	if (set && !t->any_name)
		set = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl),
		                                         name) :
		      SSL_set1_host(s->ssl, name);
	if (!set) {
		snprintf(s->why, sizeof s->why, "cannot verify the name '%s' "
		         "with TLS", name);
		tlsc_free(s);
		return -1;
	}
	s->handshaking = true;
	for (;;) {
		struct pipe_guard g;
		ERR_clear_error();
		guard_on(&g);
		errno = 0;
		int r = SSL_connect(s->ssl);
		int saved = errno;
		guard_off(&g);
		errno = saved;
		if (r == 1)
			break;
		if (failed(s, r, port, name) == 0)
			snprintf(s->why, sizeof s->why, "%s closed the connection "
			         "during the TLS handshake: is %s its TLS port?", peer,
			         port);
		else if (errno == EAGAIN) {
			int w = net_wait(fd, s->want, deadline_ms);
			if (w > 0)
				continue;
			if (w == 0)
				snprintf(s->why, sizeof s->why, "no TLS handshake with %s "
				         "within the connect timeout: is %s its TLS port?",
				         peer, port);
			else
				snprintf(s->why, sizeof s->why, "poll: %s",
				         strerror(errno));
		} else if (errno != EPROTO) {
			snprintf(s->why, sizeof s->why, "the TLS handshake with %s "
			         "failed: %s", peer, strerror(errno));
		}
		char why[sizeof s->why];
		memcpy(why, s->why, sizeof why);
		tlsc_free(s);
		memcpy(s->why, why, sizeof why);
		return -1;
	}
	s->handshaking = false;
	return 0;
}

ssize_t tlsc_read(struct tlsc *s, void *p, size_t len)
{
	size_t n;
	ERR_clear_error();
	errno = 0;
	int r = SSL_read_ex(s->ssl, p, len, &n);
	if (r > 0)
		return (ssize_t)n;
	return failed(s, r, "", "");
}

ssize_t tlsc_write(struct tlsc *s, const void *p, size_t len)
{
	size_t n;
	struct pipe_guard g;
	ERR_clear_error();
	guard_on(&g);
	errno = 0;
	int r = SSL_write_ex(s->ssl, p, len, &n);
	int saved = errno;
	guard_off(&g);
	errno = saved;
	if (r > 0)
		return (ssize_t)n;
	r = failed(s, r, "", "");
	if (r == 0) {
		/* A write cannot end a stream: the daemon has closed it. */
		errno = EPIPE;
		return -1;
	}
	return r;
}

bool tlsc_pending(const struct tlsc *s)
{
	return s->ssl && SSL_has_pending(s->ssl);
}

void tlsc_close_notify(struct tlsc *s)
{
	if (s->ssl) {
		struct pipe_guard g;
		ERR_clear_error();
		guard_on(&g);
		SSL_shutdown(s->ssl);
		guard_off(&g);
		ERR_clear_error();
	}
}

void tlsc_free(struct tlsc *s)
{
	SSL_free(s->ssl);
	memset(s, 0, sizeof *s);
}
