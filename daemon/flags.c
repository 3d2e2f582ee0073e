/*
 * flags.c - joinqd's command line (see config.h): the usage text, the
 * option table, --help and --version (config_init), and the flags applied
 * over the config file.  A flag names a config-file key (flag_key) and is
 * checked by the same function as the key (cfg_set_main in config.c), so
 * the two cannot disagree.
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "config_int.h"
#include "request.h"
#include "xalloc.h"

static const char usage[] =
"usage: joinqd [OPTION]...\n"
"Serve named, bounded, joinable queues over TCP and UDP (JSON lines).\n"
"\n"
"  -c, --config FILE          read settings from FILE (INI; see joinqd.conf(5))\n"
"  -p, --port PORT            TCP and UDP port (default 7477; 0: any free port)\n"
"  -b, --bind ADDR            listen on ADDR; repeat for more (default:\n"
"                             127.0.0.1 and ::1)\n"
"      --queue NAME:MAXSIZE   bound queue NAME to MAXSIZE items (repeatable)\n"
"      --default-maxsize N    bound every other queue to N items (default 0:\n"
"                             unbounded)\n"
"      --max-deliveries N     deliveries a task gets before it goes to the\n"
"                             dead-letter queue NAME.dead (default 0: no limit)\n"
"      --max-queues N         most queues that may exist (default 10000)\n"
"      --max-frame BYTES      longest request line (default 1M)\n"
"      --max-depth N          deepest JSON nesting of a request (default 64)\n"
"      --udp-max-reply BYTES  largest reply datagram (default 65000)\n"
"      --udp-lease SECONDS    lease of a UDP get that names none (default 30)\n"
"      --max-connections N    most TCP clients at once (default 10000)\n"
"      --frame-timeout S      close a client that takes longer than S to\n"
"                             finish a request line (default 30; 0: never)\n"
"      --idle-timeout S       close a client idle for S with nothing\n"
"                             pending (default 0: never)\n"
"      --max-output BYTES     unsent replies at which a client's requests\n"
"                             wait (default 4M)\n"
"      --output-timeout S     close a client that takes none of its\n"
"                             replies for S (default 60; 0: never)\n"
"      --udp-allow LIST       UDP senders served (default: 127.0.0.0/8\n"
"                             ::1/128; * for all)\n"
"      --auth-token-file FILE require the token in FILE from every client\n"
"      --log-level LEVEL      error, warning, info or debug (default info)\n"
"      --metrics-listen ADDR:PORT  serve Prometheus metrics on\n"
"                             http://ADDR:PORT/metrics (default: off)\n"
"      --tls-port PORT        also serve TCP inside TLS on PORT (default\n"
"                             off; 0: any free port)\n"
"      --tls-cert-file FILE   the server certificate (PEM; its chain may\n"
"                             follow it)\n"
"      --tls-key-file FILE    its private key (PEM)\n"
"      --tls-ca-file FILE     CA certificates to verify clients by\n"
"      --tls-client-auth none|request|require  ask TLS clients for a\n"
"                             certificate (default none)\n"
"      --tls-ciphers LIST     TLS 1.2 ciphers (default: OpenSSL's)\n"
"      --tls-ciphersuites LIST  TLS 1.3 cipher suites (default: OpenSSL's)\n"
"      --tls-min-version 1.2|1.3  oldest TLS version served (default 1.2)\n"
"      --metrics-tls yes|no   serve /metrics over TLS, with the same\n"
"                             certificate (default no)\n"
"      --journal on|off|nats  keep tasks in a journal across restarts and\n"
"                             crashes: on, a file in --state-dir; nats, a\n"
"                             replicated NATS JetStream stream, one active\n"
"                             daemon and standbys (default off)\n"
"      --fsync always|interval|never  when the journal reaches the disk:\n"
"                             before each reply that reports a change\n"
"                             (default), every --fsync-interval MS\n"
"                             (default 1000), or when the OS decides\n"
"      --state-dir DIR        the journal's directory (default\n"
"                             $STATE_DIRECTORY, else /var/lib/joinq)\n"
"      --nats-servers URLS    journal = nats: the NATS servers, nats:// or\n"
"                             tls:// URLs separated by commas (default\n"
"                             nats://127.0.0.1:4222)\n"
"      --nats-stream NAME     the JetStream stream (default joinq)\n"
"      --nats-replicas N      its replicas when joinqd creates it, 1 to 5\n"
"                             (default 3)\n"
"      --failover-timeout S   seconds of silence in the stream before a\n"
"                             standby takes over (default 3; at least 0.2)\n"
"      --advertise HOST:PORT  the address a standby gives clients for this\n"
"                             daemon (default: the first --bind and the\n"
"                             port; the host name for a wildcard bind)\n"
"      --nats-creds FILE      NATS credentials file (user JWT and NKey)\n"
"      --nats-tls-ca FILE     CA certificates to check the NATS servers by\n"
"      --nats-tls-cert FILE   client certificate for NATS (with\n"
"                             --nats-tls-key FILE, its private key)\n"
"      --nats-tls-key FILE    the client certificate's private key\n"
"      --check-journal        check the journal in the state directory,\n"
"                             say what it holds or where it is damaged,\n"
"                             and exit; with --repair, cut it at the last\n"
"                             good record\n"
"  -h, --help                 show this help and exit\n"
"  -V, --version              show the version and exit\n"
"\n"
"Flags win over the config file.  SIGTERM or SIGINT stops the daemon;\n"
"SIGHUP reads the config file again.\n";

enum {
	OPT_QUEUE = 256, OPT_DEFAULT_MAXSIZE, OPT_MAX_DELIVERIES, OPT_MAX_QUEUES,
	OPT_MAX_FRAME,
	OPT_MAX_DEPTH, OPT_UDP_MAX_REPLY, OPT_UDP_LEASE, OPT_MAX_CONNECTIONS,
	OPT_AUTH_TOKEN_FILE, OPT_LOG_LEVEL, OPT_METRICS_LISTEN, OPT_JOURNAL,
	OPT_FSYNC, OPT_FSYNC_INTERVAL, OPT_STATE_DIR, OPT_CHECK_JOURNAL,
	OPT_REPAIR, OPT_FRAME_TIMEOUT, OPT_IDLE_TIMEOUT, OPT_MAX_OUTPUT,
	OPT_OUTPUT_TIMEOUT, OPT_UDP_ALLOW, OPT_NATS_SERVERS, OPT_NATS_STREAM,
	OPT_NATS_REPLICAS, OPT_FAILOVER_TIMEOUT, OPT_ADVERTISE, OPT_NATS_CREDS,
	OPT_NATS_TLS_CA, OPT_NATS_TLS_CERT, OPT_NATS_TLS_KEY, OPT_TLS_PORT,
	OPT_TLS_CERT_FILE, OPT_TLS_KEY_FILE, OPT_TLS_CA_FILE, OPT_TLS_CLIENT_AUTH,
	OPT_TLS_CIPHERS, OPT_TLS_CIPHERSUITES, OPT_TLS_MIN_VERSION,
	OPT_METRICS_TLS,
};

static const struct option options[] = {
	{ "config", required_argument, NULL, 'c' },
	{ "port", required_argument, NULL, 'p' },
	{ "bind", required_argument, NULL, 'b' },
	{ "queue", required_argument, NULL, OPT_QUEUE },
	{ "default-maxsize", required_argument, NULL, OPT_DEFAULT_MAXSIZE },
	{ "max-deliveries", required_argument, NULL, OPT_MAX_DELIVERIES },
	{ "max-queues", required_argument, NULL, OPT_MAX_QUEUES },
	{ "max-frame", required_argument, NULL, OPT_MAX_FRAME },
	{ "max-depth", required_argument, NULL, OPT_MAX_DEPTH },
	{ "udp-max-reply", required_argument, NULL, OPT_UDP_MAX_REPLY },
	{ "udp-lease", required_argument, NULL, OPT_UDP_LEASE },
	{ "max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS },
	{ "auth-token-file", required_argument, NULL, OPT_AUTH_TOKEN_FILE },
	{ "log-level", required_argument, NULL, OPT_LOG_LEVEL },
	{ "metrics-listen", required_argument, NULL, OPT_METRICS_LISTEN },
	{ "journal", required_argument, NULL, OPT_JOURNAL },
	{ "fsync", required_argument, NULL, OPT_FSYNC },
	{ "fsync-interval", required_argument, NULL, OPT_FSYNC_INTERVAL },
	{ "state-dir", required_argument, NULL, OPT_STATE_DIR },
	{ "check-journal", no_argument, NULL, OPT_CHECK_JOURNAL },
	{ "repair", no_argument, NULL, OPT_REPAIR },
	{ "frame-timeout", required_argument, NULL, OPT_FRAME_TIMEOUT },
	{ "idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT },
	{ "max-output", required_argument, NULL, OPT_MAX_OUTPUT },
	{ "output-timeout", required_argument, NULL, OPT_OUTPUT_TIMEOUT },
	{ "udp-allow", required_argument, NULL, OPT_UDP_ALLOW },
	{ "nats-servers", required_argument, NULL, OPT_NATS_SERVERS },
	{ "nats-stream", required_argument, NULL, OPT_NATS_STREAM },
	{ "nats-replicas", required_argument, NULL, OPT_NATS_REPLICAS },
	{ "failover-timeout", required_argument, NULL, OPT_FAILOVER_TIMEOUT },
	{ "advertise", required_argument, NULL, OPT_ADVERTISE },
	{ "nats-creds", required_argument, NULL, OPT_NATS_CREDS },
	{ "nats-tls-ca", required_argument, NULL, OPT_NATS_TLS_CA },
	{ "nats-tls-cert", required_argument, NULL, OPT_NATS_TLS_CERT },
	{ "nats-tls-key", required_argument, NULL, OPT_NATS_TLS_KEY },
	{ "tls-port", required_argument, NULL, OPT_TLS_PORT },
	{ "tls-cert-file", required_argument, NULL, OPT_TLS_CERT_FILE },
	{ "tls-key-file", required_argument, NULL, OPT_TLS_KEY_FILE },
	{ "tls-ca-file", required_argument, NULL, OPT_TLS_CA_FILE },
	{ "tls-client-auth", required_argument, NULL, OPT_TLS_CLIENT_AUTH },
	{ "tls-ciphers", required_argument, NULL, OPT_TLS_CIPHERS },
	{ "tls-ciphersuites", required_argument, NULL, OPT_TLS_CIPHERSUITES },
	{ "tls-min-version", required_argument, NULL, OPT_TLS_MIN_VERSION },
	{ "metrics-tls", required_argument, NULL, OPT_METRICS_TLS },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

/* The config-file key a flag stands for. */
static const char *flag_key(int opt)
{
	switch (opt) {
	case 'p': return "port";
	case OPT_DEFAULT_MAXSIZE: return "default_maxsize";
	case OPT_MAX_DELIVERIES: return "max_deliveries";
	case OPT_MAX_QUEUES: return "max_queues";
	case OPT_MAX_FRAME: return "max_frame";
	case OPT_MAX_DEPTH: return "max_depth";
	case OPT_UDP_MAX_REPLY: return "udp_max_reply";
	case OPT_UDP_LEASE: return "udp_lease";
	case OPT_MAX_CONNECTIONS: return "max_connections";
	case OPT_AUTH_TOKEN_FILE: return "auth_token_file";
	case OPT_LOG_LEVEL: return "log_level";
	case OPT_METRICS_LISTEN: return "metrics_listen";
	case OPT_JOURNAL: return "journal";
	case OPT_FSYNC: return "fsync";
	case OPT_FSYNC_INTERVAL: return "fsync_interval";
	case OPT_STATE_DIR: return "state_dir";
	case OPT_FRAME_TIMEOUT: return "frame_timeout";
	case OPT_IDLE_TIMEOUT: return "idle_timeout";
	case OPT_MAX_OUTPUT: return "max_output";
	case OPT_OUTPUT_TIMEOUT: return "output_timeout";
	case OPT_UDP_ALLOW: return "udp_allow";
	case OPT_NATS_SERVERS: return "nats_servers";
	case OPT_NATS_STREAM: return "nats_stream";
	case OPT_NATS_REPLICAS: return "nats_replicas";
	case OPT_FAILOVER_TIMEOUT: return "failover_timeout";
	case OPT_ADVERTISE: return "advertise";
	case OPT_NATS_CREDS: return "nats_creds";
	case OPT_NATS_TLS_CA: return "nats_tls_ca";
	case OPT_NATS_TLS_CERT: return "nats_tls_cert";
	case OPT_NATS_TLS_KEY: return "nats_tls_key";
	case OPT_TLS_PORT: return "tls_port";
	case OPT_TLS_CERT_FILE: return "tls_cert_file";
	case OPT_TLS_KEY_FILE: return "tls_key_file";
	case OPT_TLS_CA_FILE: return "tls_ca_file";
	case OPT_TLS_CLIENT_AUTH: return "tls_client_auth";
	case OPT_TLS_CIPHERS: return "tls_ciphers";
	case OPT_TLS_CIPHERSUITES: return "tls_ciphersuites";
	case OPT_TLS_MIN_VERSION: return "tls_min_version";
	case OPT_METRICS_TLS: return "metrics_tls";
	default: return NULL;
	}
}

/* --queue NAME:MAXSIZE; the name may hold colons, so split at the last. */
static const char *queue_flag(struct config *c, const char *arg)
{
	const char *colon = strrchr(arg, ':');
	if (!colon || !queue_name_valid(arg, (size_t)(colon - arg)))
		return "expected NAME:MAXSIZE with a valid queue name";
	char *name = xstrndup(arg, (size_t)(colon - arg));
	const char *err = cfg_set_queue(c, name, "maxsize", colon + 1);
	free(name);
	return err;
}

/* The flag as the user knows it, for messages: "--max-queues", "-p". */
static void flag_name(int opt, int longindex, char *out, size_t len)
{
	if (longindex >= 0)
		snprintf(out, len, "--%s", options[longindex].name);
	else
		snprintf(out, len, "-%c", opt);
}

int cfg_apply_flags(struct config *c, int argc, char **argv, char *errbuf,
                    size_t errlen)
{
	bool binds_from_flags = false;
	int opt, longindex = -1;

	optind = 0;   /* glibc: a full rescan */
	while ((opt = getopt_long(argc, argv, "c:p:b:hV", options,
	                          &longindex)) != -1) {
		const char *err = NULL;
		char name[32];
		if (opt == 'c' || opt == 'h' || opt == 'V')
			continue;          /* handled by config_init */
		if (opt == '?')
			return -1;
		if (opt == OPT_CHECK_JOURNAL || opt == OPT_REPAIR) {
			c->check_journal = true;
			c->repair |= opt == OPT_REPAIR;
			continue;
		}
		if (opt == 'b') {
			if (!binds_from_flags)
				cfg_free_binds(c);
			binds_from_flags = true;
			size_t n = strlen(optarg);
			if (n)
				cfg_add_bind(c, optarg, n);
			else
				err = "expected an address";
		} else if (opt == OPT_QUEUE) {
			err = queue_flag(c, optarg);
		} else {
			err = cfg_set_main(c, flag_key(opt), optarg);
		}
		if (err) {
			flag_name(opt, longindex, name, sizeof name);
			snprintf(errbuf, errlen, "%s: %.*s%s: %s", name, VALUE_SHOWN,
			         optarg, strlen(optarg) > VALUE_SHOWN ? "..." : "",
			         err);
			return -1;
		}
		longindex = -1;
	}
	if (optind < argc) {
		snprintf(errbuf, errlen, "unexpected argument '%s'", argv[optind]);
		return -1;
	}
	return 0;
}

/* -c FILE into c->file, wherever -c stands among the flags (the file is
 * read before any flag); argv was checked by config_init, so getopt has
 * nothing to say here. */
void cfg_file_flag(struct config *c, int argc, char **argv)
{
	int opt, was_opterr = opterr;
	opterr = 0;
	optind = 0;
	while ((opt = getopt_long(argc, argv, "c:p:b:hV", options, NULL)) != -1)
		if (opt == 'c') {
			free(c->file);
			c->file = xstrdup(optarg);
		}
	opterr = was_opterr;
}

int config_init(struct config *c, int argc, char **argv)
{
	char err[CONFIG_ERR_MAX];
	int opt;

	memset(c, 0, sizeof *c);
	opterr = 1;
	while ((opt = getopt_long(argc, argv, "c:p:b:hV", options, NULL)) != -1) {
		switch (opt) {
		case 'h':
			fputs(usage, stdout);
			return 0;
		case 'V':
			printf("joinqd %s (protocol 1)\n", PACKAGE_VERSION);
			return 0;
		case '?':
			fputs("Try 'joinqd --help'.\n", stderr);
			return 2;
		}
	}
	if (config_load(c, argc, argv, err, sizeof err) < 0) {
		fprintf(stderr, "joinqd: %s\nTry 'joinqd --help'.\n", err);
		return 2;
	}
	return -1;
}
