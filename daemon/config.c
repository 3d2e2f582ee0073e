/*
 * config.c - defaults, the config file and the value of every setting
 * (see config.h).  The command line is flags.c's, the address-shaped
 * values (binds, udp_allow, nats_servers) confaddr.c's.
 *
 * The file is read first and the flags applied over it, so a flag always
 * wins.  Every value is checked here, with the file and line or the flag
 * named in the message, so the rest of the daemon can trust its settings.
 */
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "config_int.h"
#include "log.h"
#include "metrics.h"
#include "request.h"
#include "xalloc.h"

#define SECTION_QUEUE "queue "

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
	cfg_set_udp_allow(c, "127.0.0.0/8 ::1/128");
	c->log_level = LOG_INFO;
	c->nats.servers = xstrdup("nats://127.0.0.1:4222");
	c->nats.stream = xstrdup("joinq");
	c->nats.replicas = 3;
	c->nats.failover_timeout = 3000;
	c->tls.port = -1;
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

/* The index of val in names (NULL-ended), or -1: the settings that name
 * one of a few words, in their enum's order. */
static int choice(const char *val, const char *const *names)
{
	for (int i = 0; names[i]; i++)
		if (!strcmp(val, names[i]))
			return i;
	return -1;
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
		static const char *const auth[] = { "none", "request", "require",
		                                    NULL };
		int i = choice(val, auth);
		if (i < 0)
			return "expected none, request or require";
		t->client_auth = (enum tls_client_auth)i;
	} else if (!strcmp(key, "tls_ciphers")) {
		set_text(&t->ciphers, val);
	} else if (!strcmp(key, "tls_ciphersuites")) {
		set_text(&t->ciphersuites, val);
	} else if (!strcmp(key, "tls_min_version")) {
		static const char *const versions[] = { "1.2", "1.3", NULL };
		int i = choice(val, versions);
		if (i < 0)
			return "expected 1.2 or 1.3";
		t->min_13 = i == 1;
	} else if (!strcmp(key, "metrics_tls")) {
		static const char *const no_yes[] = { "no", "yes", NULL };
		int i = choice(val, no_yes);
		if (i < 0)
			return "expected yes or no";
		t->metrics = i == 1;
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
		if (!cfg_set_nats_servers(c, val))
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
		if (*val && !cfg_valid_host_port(val, strlen(val), true))
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
const char *cfg_set_main(struct config *c, const char *key, const char *val)
{
	uint64_t v;

	if (!strcmp(key, "bind")) {
		return cfg_set_binds(c, val) ? "expected one or more addresses" : NULL;
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
		if (!cfg_set_udp_allow(c, val))
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
		static const char *const kinds[] = { "off", "on", "nats", NULL };
		int i = choice(val, kinds);   /* enum journal_kind's order */
		if (i < 0)
			return "expected on, off or nats";
		c->journal = (enum journal_kind)i;
	} else if (!strcmp(key, "fsync")) {
		static const char *const policies[] = { "always", "interval",
		                                        "never", NULL };
		int i = choice(val, policies);   /* enum fsync_policy's order */
		if (i < 0)
			return "expected always, interval or never";
		c->fsync = (enum fsync_policy)i;
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

const char *cfg_set_queue(struct config *c, const char *name,
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
		err = cfg_set_main(ctx->c, key, val);
	} else if (!strncmp(section, SECTION_QUEUE, strlen(SECTION_QUEUE))) {
		const char *name = section + strlen(SECTION_QUEUE);
		name += strspn(name, " ");
		if (!queue_name_valid(name, strlen(name)))
			err = "the section names an invalid queue";
		else
			err = cfg_set_queue(ctx->c, name, key, val);
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
	cfg_add_bind(c, "127.0.0.1", 9);
	cfg_add_bind(c, "::1", 3);
	/* The file first, wherever -c stands among the flags. */
	cfg_file_flag(c, argc, argv);
	if ((c->file && load_file(c, c->file, err, errlen)) ||
	    cfg_apply_flags(c, argc, argv, err, errlen) || check(c, err, errlen)) {
		config_free(c);
		return -1;
	}
	cfg_default_advertise(c);
	return 0;
}

void config_free(struct config *c)
{
	cfg_free_binds(c);
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
