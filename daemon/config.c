/*
 * config.c - defaults, the config file and the flags (see config.h).
 *
 * The file is read first and the flags applied over it, so a flag always
 * wins.  Every value is checked here, with the file and line or the flag
 * named in the message, so the rest of the daemon can trust its settings.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <ini.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "request.h"
#include "xalloc.h"

#define SECTION_QUEUE "queue "
/* Bytes of a bad value an error message shows, so that a long one (a list
 * of URLs) leaves room for what is wrong with it. */
#define VALUE_SHOWN 100

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

/* "10.0.0.0/8", "::1", "192.168.1.7/32"; NULL for a bad one. */
static bool parse_cidr(const char *s, size_t len, struct cidr *out)
{
	char text[INET6_ADDRSTRLEN + 5];
	if (len >= sizeof text)
		return false;
	memcpy(text, s, len);
	text[len] = '\0';
	char *slash = strchr(text, '/');
	if (slash)
		*slash++ = '\0';
	memset(out, 0, sizeof *out);
	if (inet_pton(AF_INET, text, out->addr) == 1) {
		out->family = AF_INET;
		out->bits = 32;
	} else if (inet_pton(AF_INET6, text, out->addr) == 1) {
		out->family = AF_INET6;
		out->bits = 128;
	} else {
		return false;
	}
	if (slash) {
		char *end;
		unsigned long b = strtoul(slash, &end, 10);
		if (!*slash || *end || b > out->bits)
			return false;
		out->bits = (unsigned)b;
	}
	return true;
}

/* A list of blocks separated by spaces or commas; "*" or "any" admits
 * every sender, and an empty list none (UDP served to no one).  Returns
 * false (c unchanged) for a bad entry. */
static bool set_udp_allow(struct config *c, const char *list)
{
	struct cidr *v = NULL;
	size_t n = 0;
	for (const char *p = list + strspn(list, " \t,"); *p;) {
		size_t len = strcspn(p, " \t,");
		if ((len == 1 && *p == '*') || (len == 3 && !strncmp(p, "any", 3))) {
			free(v);
			free(c->udp_allow);
			c->udp_allow = NULL;
			c->nudp_allow = 0;
			c->udp_allow_any = true;
			return true;
		}
		v = xrealloc(v, (n + 1) * sizeof *v);
		if (!parse_cidr(p, len, &v[n++])) {
			free(v);
			return false;
		}
		p += len;
		p += strspn(p, " \t,");
	}
	free(c->udp_allow);
	c->udp_allow = v;
	c->nudp_allow = n;
	c->udp_allow_any = false;
	return true;
}

bool cidr_match(const struct cidr *v, size_t n, const void *sockaddr)
{
	const struct sockaddr *sa = sockaddr;
	unsigned char addr[16];
	int family = sa->sa_family;

	if (family == AF_INET) {
		memcpy(addr, &((const struct sockaddr_in *)sockaddr)->sin_addr, 4);
	} else if (family == AF_INET6) {
		const struct sockaddr_in6 *s6 = sockaddr;
		memcpy(addr, &s6->sin6_addr, 16);
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {   /* ::ffff:a.b.c.d */
			family = AF_INET;
			memmove(addr, addr + 12, 4);
		}
	} else {
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		if (v[i].family != family)
			continue;
		unsigned whole = v[i].bits / 8, rest = v[i].bits % 8;
		if (memcmp(addr, v[i].addr, whole) != 0)
			continue;
		if (rest && ((addr[whole] ^ v[i].addr[whole]) &
		             (0xFF << (8 - rest)) & 0xFF))
			continue;
		return true;
	}
	return false;
}

static void defaults(struct config *c)
{
	const char *state = getenv("STATE_DIRECTORY");   /* systemd's */

	memset(c, 0, sizeof *c);
	/* StateDirectory= may list several; the first is ours. */
	c->state_dir = state && *state ? xstrndup(state, strcspn(state, ":"))
	                               : xstrdup("/var/lib/joinq");
	c->fsync = FSYNC_ALWAYS;
	c->fsync_interval = 1000;
	c->compact_size = 64u << 20;
	c->compact_ratio = 4;
	c->port = JOINQ_DEFAULT_PORT;
	c->max_queues = 10000;
	c->max_frame = 1u << 20;
	c->max_depth = 64;
	c->udp_max_reply = 65000;
	c->udp_lease = 30;
	c->max_connections = 10000;
	c->frame_timeout = 30;
	c->max_output = 4u << 20;
	c->output_timeout = 60;
	set_udp_allow(c, "127.0.0.0/8 ::1/128");
	c->log_level = LOG_INFO;
	c->nats.servers = xstrdup("nats://127.0.0.1:4222");
	c->nats.stream = xstrdup("joinq");
	c->nats.replicas = 3;
	c->nats.failover_timeout = 3000;
	c->tls.port = -1;
}

static void free_binds(struct config *c)
{
	for (size_t i = 0; i < c->nbinds; i++)
		free(c->binds[i]);
	free(c->binds);
	c->binds = NULL;
	c->nbinds = 0;
}

static void add_bind(struct config *c, const char *addr, size_t len)
{
	c->binds = xrealloc(c->binds, (c->nbinds + 1) * sizeof *c->binds);
	c->binds[c->nbinds++] = xstrndup(addr, len);
}

/* A list of addresses separated by spaces or commas replaces the binds. */
static int set_binds(struct config *c, const char *list)
{
	free_binds(c);
	for (const char *p = list; *p;) {
		size_t n = strcspn(p, " \t,");
		if (n)
			add_bind(c, p, n);
		p += n;
		p += strspn(p, " \t,");
	}
	return c->nbinds ? 0 : -1;
}

/* The settings of the named queue, adding an entry if there is none. */
static struct queue_conf *config_queue(struct config *c, const char *name,
                                       size_t len)
{
	for (size_t i = 0; i < c->nqueues; i++)
		if (strlen(c->queues[i].name) == len &&
		    memcmp(c->queues[i].name, name, len) == 0)
			return &c->queues[i];
	c->queues = xrealloc(c->queues, (c->nqueues + 1) * sizeof *c->queues);
	struct queue_conf *q = &c->queues[c->nqueues++];
	memset(q, 0, sizeof *q);
	q->name = xstrndup(name, len);
	return q;
}

/* ---- values ------------------------------------------------------------- */

/* A whole number up to max, with an optional k, M or G (binary) suffix
 * when sized. */
static int parse_u64(const char *s, uint64_t max, bool sized, uint64_t *out)
{
	char *end;
	errno = 0;
	if (*s == '-' || *s == '+' || *s == '\0')
		return -1;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -1;
	unsigned shift = 0;
	if (sized && *end) {
		switch (*end++) {
		case 'k': case 'K': shift = 10; break;
		case 'm': case 'M': shift = 20; break;
		case 'g': case 'G': shift = 30; break;
		default: return -1;
		}
		if (*end == 'i' && end[1] == 'B')
			end += 2;
		else if (*end == 'B')
			end++;
	}
	if (*end || v > (max >> shift))
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

/* Seconds >= 0, 0 meaning none; at most a day's worth of a timeout. */
static int parse_timeout(const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < 0 || v > 86400)
		return -1;
	*out = v;
	return 0;
}

static int parse_seconds(const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v <= 0)
		return -1;
	*out = v;
	return 0;
}

/* ---- journal = nats ----------------------------------------------------- */

/* A port number from 1 to 65535, len bytes of digits. */
static bool valid_port(const char *s, size_t len)
{
	unsigned long v = 0;
	if (len == 0 || len > 5)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	return v >= 1 && v <= 65535;
}

/* HOST[:PORT], the port required when need_port: HOST a name, an IPv4
 * address, or an IPv6 address in brackets ("[::1]:7477"). */
static bool valid_host_port(const char *s, size_t len, bool need_port)
{
	const char *end = s + len, *colon;

	if (len && *s == '[') {
		char text[INET6_ADDRSTRLEN];
		struct in6_addr a;
		const char *close = memchr(s, ']', len);
		size_t n = close ? (size_t)(close - s - 1) : 0;
		if (n == 0 || n >= sizeof text)
			return false;
		memcpy(text, s + 1, n);
		text[n] = '\0';
		if (inet_pton(AF_INET6, text, &a) != 1)
			return false;
		if (close + 1 == end)
			return !need_port;
		colon = close + 1;
		if (*colon != ':')
			return false;
	} else {
		colon = memrchr(s, ':', len);
		if (!colon && need_port)
			return false;
		const char *host_end = colon ? colon : end;
		if (host_end == s)
			return false;
		for (const char *p = s; p < host_end; p++)
			if (!isalnum((unsigned char)*p) && !strchr("-._", *p))
				return false;
		if (!colon)
			return true;
	}
	return valid_port(colon + 1, (size_t)(end - colon - 1));
}

/* nats://[USER[:PASSWORD]@]HOST[:PORT], or tls:// the same. */
static bool valid_nats_url(const char *s, size_t len)
{
	size_t scheme = !strncmp(s, "nats://", 7) ? 7 :
	                !strncmp(s, "tls://", 6) ? 6 : 0;
	if (scheme == 0 || len <= scheme)
		return false;
	s += scheme;
	len -= scheme;
	const char *at = memrchr(s, '@', len);
	if (at) {
		len -= (size_t)(at + 1 - s);
		s = at + 1;
	}
	return valid_host_port(s, len, false);
}

/* URLs separated by commas or spaces, kept as nats.c takes them: joined by
 * commas.  Returns false (c unchanged) for a bad one, none, or more than
 * NATS_SERVERS_MAX. */
static bool set_nats_servers(struct config *c, const char *list)
{
	size_t cap = strlen(list) + 1, used = 0, n = 0;
	char *out = xmalloc(cap);

	for (const char *p = list + strspn(list, " \t,"); *p;) {
		size_t len = strcspn(p, " \t,");
		if (!valid_nats_url(p, len) || ++n > NATS_SERVERS_MAX) {
			free(out);
			return false;
		}
		if (used)
			out[used++] = ',';
		memcpy(out + used, p, len);
		used += len;
		p += len;
		p += strspn(p, " \t,");
	}
	out[used] = '\0';
	if (!used) {
		free(out);
		return false;
	}
	free(c->nats.servers);
	c->nats.servers = out;
	return true;
}

/* JetStream forbids . * > spaces and slashes in a stream name, and puts
 * the name in directory names on every server: NATS advises under 32
 * characters, so joinq takes 1 to 32 letters, digits, - and _. */
static bool valid_stream_name(const char *s)
{
	size_t len = strlen(s);
	if (len == 0 || len > NATS_STREAM_MAX)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_')
			return false;
	return true;
}

/* A file setting: empty for none; else a file joinqd can read now, so that
 * a wrong path is said at start rather than at the first connection. */
static const char *set_file(char **slot, const char *val)
{
	if (*val && access(val, R_OK) != 0)
		return "cannot read the file";
	free(*slot);
	*slot = *val ? xstrdup(val) : NULL;
	return NULL;
}

/* A text setting that may be empty (NULL). */
static void set_text(char **slot, const char *val)
{
	free(*slot);
	*slot = *val ? xstrdup(val) : NULL;
}

/* The tls_* settings and metrics_tls (see set_main); NULL, or what is
 * wrong.  Whether the files hold what they should is tls_open's to say. */
static const char *set_tls(struct config *c, const char *key, const char *val)
{
	struct tls_conf *t = &c->tls;
	uint64_t v;

	if (!strcmp(key, "tls_port")) {
		if (!strcmp(val, "off") || !*val)
			t->port = -1;
		else if (parse_u64(val, 65535, false, &v))
			return "expected a port number from 0 to 65535, or off";
		else
			t->port = (int)v;
	} else if (!strcmp(key, "tls_cert_file")) {
		return set_file(&t->cert_file, val);
	} else if (!strcmp(key, "tls_key_file")) {
		return set_file(&t->key_file, val);
	} else if (!strcmp(key, "tls_ca_file")) {
		return set_file(&t->ca_file, val);
	} else if (!strcmp(key, "tls_client_auth")) {
		if (!strcmp(val, "none"))
			t->client_auth = TLS_AUTH_NONE;
		else if (!strcmp(val, "request"))
			t->client_auth = TLS_AUTH_REQUEST;
		else if (!strcmp(val, "require"))
			t->client_auth = TLS_AUTH_REQUIRE;
		else
			return "expected none, request or require";
	} else if (!strcmp(key, "tls_ciphers")) {
		set_text(&t->ciphers, val);
	} else if (!strcmp(key, "tls_ciphersuites")) {
		set_text(&t->ciphersuites, val);
	} else if (!strcmp(key, "tls_min_version")) {
		if (strcmp(val, "1.2") != 0 && strcmp(val, "1.3") != 0)
			return "expected 1.2 or 1.3";
		t->min_13 = !strcmp(val, "1.3");
	} else if (!strcmp(key, "metrics_tls")) {
		if (!strcmp(val, "yes"))
			t->metrics = true;
		else if (!strcmp(val, "no"))
			t->metrics = false;
		else
			return "expected yes or no";
	} else {
		return "unknown setting";
	}
	return NULL;
}

/* The settings of journal = nats (see set_main); NULL, or what is wrong. */
static const char *set_nats(struct config *c, const char *key, const char *val)
{
	struct nats_conf *n = &c->nats;
	uint64_t v;

	if (!strcmp(key, "nats_servers")) {
		if (!set_nats_servers(c, val))
			return "expected 1 to 32 nats:// or tls:// URLs "
			       "(HOST[:PORT]) separated by commas";
	} else if (!strcmp(key, "nats_stream")) {
		if (!valid_stream_name(val))
			return "expected a stream name of 1 to 32 letters, digits, "
			       "- or _ (no . * > or spaces)";
		free(n->stream);
		n->stream = xstrdup(val);
	} else if (!strcmp(key, "nats_replicas")) {
		if (parse_u64(val, 5, false, &v) || v == 0)
			return "expected a whole number from 1 to 5";
		n->replicas = (unsigned)v;
	} else if (!strcmp(key, "failover_timeout")) {
		double s;
		if (parse_timeout(val, &s) || s < 0.2 || s > 3600)
			return "expected seconds from 0.2 to 3600";
		n->failover_timeout = (unsigned)lround(s * 1000);
	} else if (!strcmp(key, "advertise")) {
		if (*val && !valid_host_port(val, strlen(val), true))
			return "expected HOST:PORT, e.g. db1.example.com:7477, "
			       "10.0.0.5:7477 or [fd00::5]:7477";
		free(n->advertise);
		n->advertise = *val ? xstrdup(val) : NULL;
	} else if (!strcmp(key, "nats_creds")) {
		return set_file(&n->creds, val);
	} else if (!strcmp(key, "nats_tls_ca")) {
		return set_file(&n->tls_ca, val);
	} else if (!strcmp(key, "nats_tls_cert")) {
		return set_file(&n->tls_cert, val);
	} else if (!strcmp(key, "nats_tls_key")) {
		return set_file(&n->tls_key, val);
	} else {
		return "unknown setting";
	}
	return NULL;
}

/*
 * Settings shared by the file and the flags: one function checks a named
 * value for both.  Returns NULL or what is wrong with the value.
 */
static const char *set_main(struct config *c, const char *key, const char *val)
{
	uint64_t v;

	if (!strcmp(key, "bind")) {
		return set_binds(c, val) ? "expected one or more addresses" : NULL;
	} else if (!strcmp(key, "port")) {
		if (parse_u64(val, 65535, false, &v))
			return "expected a port number from 0 to 65535";
		c->port = (unsigned)v;
	} else if (!strcmp(key, "default_maxsize")) {
		if (parse_u64(val, UINT64_MAX, false, &v))
			return "expected a whole number of items (0: unbounded)";
		c->default_maxsize = v;
	} else if (!strcmp(key, "max_deliveries")) {
		if (parse_u64(val, UINT32_MAX, false, &v))
			return "expected a whole number (0: unlimited)";
		c->max_deliveries = (unsigned)v;
	} else if (!strcmp(key, "max_queues")) {
		if (parse_u64(val, 100000000, false, &v) || v == 0)
			return "expected a whole number from 1 to 100000000";
		c->max_queues = (unsigned)v;
	} else if (!strcmp(key, "max_frame")) {
		if (parse_u64(val, 1u << 30, true, &v) || v < 64)
			return "expected a size from 64 bytes to 1G";
		c->max_frame = (size_t)v;
	} else if (!strcmp(key, "max_depth")) {
		if (parse_u64(val, 1024, false, &v) || v == 0)
			return "expected a whole number from 1 to 1024";
		c->max_depth = (unsigned)v;
	} else if (!strcmp(key, "udp_max_reply")) {
		if (parse_u64(val, 65507, true, &v) || v < 512)
			return "expected a size from 512 to 65507 bytes";
		c->udp_max_reply = (size_t)v;
	} else if (!strcmp(key, "udp_lease")) {
		if (parse_seconds(val, &c->udp_lease))
			return "expected a number of seconds > 0";
	} else if (!strcmp(key, "max_connections")) {
		if (parse_u64(val, 10000000, false, &v) || v == 0)
			return "expected a whole number from 1 to 10000000";
		c->max_connections = (unsigned)v;
	} else if (!strcmp(key, "frame_timeout")) {
		if (parse_timeout(val, &c->frame_timeout))
			return "expected a number of seconds (0: none)";
	} else if (!strcmp(key, "idle_timeout")) {
		if (parse_timeout(val, &c->idle_timeout))
			return "expected a number of seconds (0: none)";
	} else if (!strcmp(key, "output_timeout")) {
		if (parse_timeout(val, &c->output_timeout))
			return "expected a number of seconds (0: none)";
	} else if (!strcmp(key, "max_output")) {
		if (parse_u64(val, 1u << 30, true, &v) || v < 4096)
			return "expected a size from 4k to 1G";
		c->max_output = (size_t)v;
	} else if (!strcmp(key, "udp_allow")) {
		if (!set_udp_allow(c, val))
			return "expected address blocks (127.0.0.0/8 ::1/128 ...) or *";
	} else if (!strcmp(key, "log_level")) {
		int level = log_level_parse(val);
		if (level < 0)
			return "expected error, warning, info or debug";
		c->log_level = level;
	} else if (!strcmp(key, "metrics_listen")) {
		if (*val && !metrics_valid_addr(val))
			return "expected ADDR:PORT, e.g. 127.0.0.1:9477 or [::1]:9477";
		free(c->metrics_listen);
		c->metrics_listen = *val ? xstrdup(val) : NULL;
	} else if (!strcmp(key, "journal")) {
		if (!strcmp(val, "off"))
			c->journal = JOURNAL_OFF;
		else if (!strcmp(val, "on"))
			c->journal = JOURNAL_FILE;
		else if (!strcmp(val, "nats"))
			c->journal = JOURNAL_NATS;
		else
			return "expected on, off or nats";
	} else if (!strcmp(key, "fsync")) {
		if (!strcmp(val, "always"))
			c->fsync = FSYNC_ALWAYS;
		else if (!strcmp(val, "interval"))
			c->fsync = FSYNC_INTERVAL;
		else if (!strcmp(val, "never"))
			c->fsync = FSYNC_NEVER;
		else
			return "expected always, interval or never";
	} else if (!strcmp(key, "fsync_interval")) {
		if (parse_u64(val, 3600000, false, &v) || v == 0)
			return "expected milliseconds from 1 to 3600000";
		c->fsync_interval = (unsigned)v;
	} else if (!strcmp(key, "state_dir")) {
		if (!*val)
			return "expected a directory";
		free(c->state_dir);
		c->state_dir = xstrdup(val);
	} else if (!strcmp(key, "compact_size")) {
		if (parse_u64(val, UINT64_MAX >> 1, true, &v) || v < 4096)
			return "expected a size of at least 4k";
		c->compact_size = v;
	} else if (!strcmp(key, "compact_ratio")) {
		if (parse_u64(val, 1000, false, &v) || v < 2)
			return "expected a whole number from 2 to 1000";
		c->compact_ratio = (unsigned)v;
	} else if (!strcmp(key, "auth_token_file")) {
		free(c->auth_token_file);
		c->auth_token_file = *val ? xstrdup(val) : NULL;
	} else if (!strncmp(key, "nats_", 5) || !strcmp(key, "advertise") ||
	           !strcmp(key, "failover_timeout")) {
		return set_nats(c, key, val);
	} else if (!strncmp(key, "tls_", 4) || !strcmp(key, "metrics_tls")) {
		return set_tls(c, key, val);
	} else {
		return "unknown setting";
	}
	return NULL;
}

static const char *set_queue(struct config *c, const char *name,
                             const char *key, const char *val)
{
	struct queue_conf *q = config_queue(c, name, strlen(name));
	uint64_t v;

	if (!strcmp(key, "maxsize")) {
		if (parse_u64(val, UINT64_MAX, false, &v))
			return "expected a whole number of items (0: unbounded)";
		q->maxsize = v;
		q->has_maxsize = true;
	} else if (!strcmp(key, "max_deliveries")) {
		if (parse_u64(val, UINT32_MAX, false, &v))
			return "expected a whole number (0: unlimited)";
		q->max_deliveries = (unsigned)v;
		q->has_max_deliveries = true;
	} else if (!strcmp(key, "dead_letter")) {
		if (strcmp(val, "off") != 0 && !queue_name_valid(val, strlen(val)))
			return "expected a queue name or off";
		if (!strcmp(val, name))
			return "a queue cannot be its own dead-letter queue";
		free(q->dead_letter);
		q->dead_letter = xstrdup(val);
	} else {
		return "unknown queue setting (maxsize, max_deliveries, dead_letter)";
	}
	return NULL;
}

/* ---- the file ----------------------------------------------------------- */

struct file_ctx {
	struct config *c;
	char error[256];        /* the first error, without its line */
};

static int on_entry(void *user, const char *section, const char *key,
                    const char *val)
{
	struct file_ctx *ctx = user;
	const char *err;

	if (!*section) {
		err = set_main(ctx->c, key, val);
	} else if (!strncmp(section, SECTION_QUEUE, strlen(SECTION_QUEUE))) {
		const char *name = section + strlen(SECTION_QUEUE);
		name += strspn(name, " ");
		if (!queue_name_valid(name, strlen(name)))
			err = "the section names an invalid queue";
		else
			err = set_queue(ctx->c, name, key, val);
	} else {
		err = "settings belong at the top or in a [queue NAME] section";
	}
	if (err && !ctx->error[0])
		snprintf(ctx->error, sizeof ctx->error, "%s = %.*s%s: %s", key,
		         VALUE_SHOWN, val, strlen(val) > VALUE_SHOWN ? "..." : "",
		         err);
	return err == NULL;
}

static int load_file(struct config *c, const char *path, char *err,
                     size_t errlen)
{
	struct file_ctx ctx = { .c = c };
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "cannot read config file %s: %s", path,
		         strerror(errno));
		return -1;
	}
	int line = ini_parse_file(f, on_entry, &ctx);
	fclose(f);
	if (line == 0)
		return 0;
	if (ctx.error[0])
		snprintf(err, errlen, "%s:%d: %s", path, line, ctx.error);
	else
		snprintf(err, errlen, "%s:%d: not a setting (expected key = value "
		         "or [queue NAME])", path, line);
	return -1;
}

/* ---- the flags ---------------------------------------------------------- */

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
	const char *err = set_queue(c, name, "maxsize", colon + 1);
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

static int apply_flags(struct config *c, int argc, char **argv, char *errbuf,
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
				free_binds(c);
			binds_from_flags = true;
			size_t n = strlen(optarg);
			if (n)
				add_bind(c, optarg, n);
			else
				err = "expected an address";
		} else if (opt == OPT_QUEUE) {
			err = queue_flag(c, optarg);
		} else {
			err = set_main(c, flag_key(opt), optarg);
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

/* Checks what no single value shows: dead-letter names that cannot be, a
 * client certificate without its key. */
static int check(const struct config *c, char *err, size_t errlen)
{
	if (!c->nats.tls_cert != !c->nats.tls_key) {
		snprintf(err, errlen, "nats_tls_cert and nats_tls_key go together: "
		         "the client certificate and its private key");
		return -1;
	}
	if ((c->tls.port >= 0 || c->tls.metrics) &&
	    (!c->tls.cert_file || !c->tls.key_file)) {
		snprintf(err, errlen, "%s needs tls_cert_file and tls_key_file: "
		         "the server certificate and its private key",
		         c->tls.port >= 0 ? "tls_port" : "metrics_tls");
		return -1;
	}
	if (c->tls.client_auth != TLS_AUTH_NONE && !c->tls.ca_file) {
		snprintf(err, errlen, "tls_client_auth = %s needs tls_ca_file: the "
		         "CA certificates to verify clients by",
		         c->tls.client_auth == TLS_AUTH_REQUIRE ? "require" :
		         "request");
		return -1;
	}
	for (size_t i = 0; i < c->nqueues; i++) {
		const struct queue_conf *q = &c->queues[i];
		size_t len = strlen(q->name);
		if (q->max_deliveries && !q->dead_letter &&
		    len + strlen(QUEUE_DEAD_SUFFIX) > QUEUE_NAME_LIMIT) {
			snprintf(err, errlen, "queue %s: its dead-letter queue %s%s "
			         "would be too long a name; set dead_letter",
			         q->name, q->name, QUEUE_DEAD_SUFFIX);
			return -1;
		}
	}
	return 0;
}

/* True for a bind address that names no one address: *, 0.0.0.0, ::. */
static bool wildcard(const char *addr)
{
	unsigned char a[16];
	static const unsigned char zero[16];
	if (!strcmp(addr, "*"))
		return true;
	if (inet_pton(AF_INET, addr, a) == 1)
		return memcmp(a, zero, 4) == 0;
	return inet_pton(AF_INET6, addr, a) == 1 && memcmp(a, zero, 16) == 0;
}

/* advertise unset: the first bind address and the port, which clients on
 * other hosts can reach only if the bind is not a loopback one; for a
 * wildcard bind, this host's name.  With port 0 the port is not known
 * yet: the daemon sets it once bound. */
static void default_advertise(struct config *c)
{
	char host[256];
	const char *h = c->nbinds ? c->binds[0] : "*";
	size_t len;

	if (c->nats.advertise)
		return;
	if (wildcard(h)) {
		if (gethostname(host, sizeof host) != 0)
			host[0] = '\0';
		host[sizeof host - 1] = '\0';
		h = host[0] ? host : "localhost";
	}
	len = strlen(h) + 16;
	c->nats.advertise = xmalloc(len);
	snprintf(c->nats.advertise, len, strchr(h, ':') ? "[%s]:%u" : "%s:%u",
	         h, c->port);
}

bool config_same_nats(const struct nats_conf *a, const struct nats_conf *b)
{
	const char *sa[] = { a->servers, a->stream, a->advertise, a->creds,
	                     a->tls_ca, a->tls_cert, a->tls_key };
	const char *sb[] = { b->servers, b->stream, b->advertise, b->creds,
	                     b->tls_ca, b->tls_cert, b->tls_key };

	if (a->replicas != b->replicas ||
	    a->failover_timeout != b->failover_timeout)
		return false;
	for (size_t i = 0; i < sizeof sa / sizeof *sa; i++)
		if ((!sa[i] || !sb[i]) ? sa[i] != sb[i] : strcmp(sa[i], sb[i]) != 0)
			return false;
	return true;
}

int config_load(struct config *c, int argc, char **argv, char *err,
                size_t errlen)
{
	defaults(c);
	add_bind(c, "127.0.0.1", 9);
	add_bind(c, "::1", 3);
	/* The file first, wherever -c stands among the flags; argv was
	 * checked by config_init, so getopt has nothing to say here. */
	int opt, was_opterr = opterr;
	opterr = 0;
	optind = 0;
	while ((opt = getopt_long(argc, argv, "c:p:b:hV", options, NULL)) != -1)
		if (opt == 'c') {
			free(c->file);
			c->file = xstrdup(optarg);
		}
	opterr = was_opterr;
	if ((c->file && load_file(c, c->file, err, errlen)) ||
	    apply_flags(c, argc, argv, err, errlen) || check(c, err, errlen)) {
		config_free(c);
		return -1;
	}
	default_advertise(c);
	return 0;
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

void config_free(struct config *c)
{
	free_binds(c);
	for (size_t i = 0; i < c->nqueues; i++) {
		free(c->queues[i].name);
		free(c->queues[i].dead_letter);
	}
	free(c->queues);
	free(c->auth_token_file);
	free(c->metrics_listen);
	free(c->state_dir);
	free(c->udp_allow);
	free(c->file);
	free(c->nats.servers);
	free(c->nats.stream);
	free(c->nats.advertise);
	free(c->nats.creds);
	free(c->nats.tls_ca);
	free(c->nats.tls_cert);
	free(c->nats.tls_key);
	free(c->tls.cert_file);
	free(c->tls.key_file);
	free(c->tls.ca_file);
	free(c->tls.ciphers);
	free(c->tls.ciphersuites);
	memset(c, 0, sizeof *c);
}
