/*
 * config.h - joinqd's settings: built-in defaults, then the config file
 * (-c FILE, INI syntax read with inih), then command-line flags, which win.
 * conf/joinqd.conf documents every setting with its default.
 */
#ifndef JQ_CONFIG_H
#define JQ_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "journal.h"

#define JOINQ_DEFAULT_PORT 7477
#define NATS_STREAM_MAX 32          /* bytes of a nats_stream name */
#define NATS_SERVERS_MAX 32         /* URLs in nats_servers */

/* An address block: udp_allow. */
struct cidr {
	int family;                 /* AF_INET or AF_INET6 */
	unsigned char addr[16];
	unsigned bits;
};

/* True if the address (a sockaddr) lies in one of the blocks. */
bool cidr_match(const struct cidr *v, size_t n, const void *sockaddr);

/* tls_client_auth: whether a TLS client must show a certificate. */
enum tls_client_auth { TLS_AUTH_NONE, TLS_AUTH_REQUEST, TLS_AUTH_REQUIRE };

/* TLS on TCP (tls.c): the listener's port and the SSL_CTX's settings. */
struct tls_conf {
	int port;                   /* tls_port; -1: off, 0: any free port */
	char *cert_file;            /* PEM, the chain may follow the cert */
	char *key_file;
	char *ca_file;              /* verifies client certificates */
	enum tls_client_auth client_auth;
	char *ciphers;              /* TLS 1.2 cipher list; NULL: OpenSSL's */
	char *ciphersuites;         /* TLS 1.3; NULL: OpenSSL's */
	bool min_13;                /* tls_min_version = 1.3 (else 1.2) */
	bool metrics;               /* metrics_tls: /metrics over TLS */
};

struct config {
	char *file;                 /* -c, or NULL: defaults and flags only */
	char **binds;               /* addresses to listen on */
	size_t nbinds;
	unsigned port;
	uint64_t default_maxsize;   /* 0: unbounded */
	unsigned max_deliveries;    /* default per queue; 0: unlimited */
	unsigned max_queues;
	size_t max_frame;           /* bytes before the LF */
	unsigned max_depth;         /* JSON nesting, the request object is 1 */
	size_t udp_max_reply;       /* bytes in one reply datagram */
	double udp_lease;           /* seconds */
	unsigned max_connections;
	double frame_timeout;       /* s a started frame may take; 0: none */
	double idle_timeout;        /* s an idle client may stay; 0: ever */
	size_t max_output;          /* unsent reply bytes before reading stops */
	double output_timeout;      /* s replies may wait unread; 0: ever */
	struct cidr *udp_allow;     /* UDP senders served */
	size_t nudp_allow;
	bool udp_allow_any;         /* "*": every sender */
	int log_level;              /* enum log_level */
	char *auth_token_file;      /* NULL: no authentication */
	char *metrics_listen;       /* ADDR:PORT for /metrics; NULL: off */
	enum journal_kind journal;  /* off, on (the file), nats */
	enum fsync_policy fsync;
	unsigned fsync_interval;    /* ms, for fsync = interval */
	char *state_dir;            /* where the journal lives */
	uint64_t compact_size;      /* compact a journal at least this big */
	unsigned compact_ratio;     /* and this many times the live data */
	struct nats_conf nats;      /* journal = nats: the stream and its role */
	struct tls_conf tls;        /* tls_port and the tls_* settings */
	bool check_journal;         /* --check-journal: check, then exit */
	bool repair;                /* --repair: cut at the last good record */
	struct queue_conf *queues;  /* [queue NAME] sections and --queue */
	size_t nqueues;
};

#define CONFIG_ERR_MAX 512

/*
 * Fills c from defaults, the file named by -c and the flags.  Returns -1 to
 * go on, or an exit status: 0 after --help or --version, 2 for a usage or
 * configuration error (already reported on stderr).
 */
int config_init(struct config *c, int argc, char **argv);

/*
 * The same settings again (SIGHUP): defaults, the file, then the flags,
 * which still win.  Returns 0, or -1 with why in err (file and line, or the
 * flag) and c left empty.
 */
int config_load(struct config *c, int argc, char **argv, char *err,
                size_t errlen);

void config_free(struct config *c);

/* True if a and b are the same journal = nats settings (a reload compares
 * them: they take effect at the next start). */
bool config_same_nats(const struct nats_conf *a, const struct nats_conf *b);

#endif
