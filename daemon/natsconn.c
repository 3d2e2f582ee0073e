/*
 * natsconn.c - the daemon's connection to NATS (see natsconn.h).
 *
 * nats.c reads and writes its socket from our loop (the adapter), but it
 * still runs threads of its own: the first connect (here, one we start),
 * reconnects, pings, and the connection-state callbacks.  Those callbacks
 * only set a flag and wake the loop (event_active is thread-safe once
 * natsconn_threads() ran); the loop then tells the owner, in order.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nats/adapters/libevent.h>

#include "journal.h"
#include "log.h"
#include "natsconn.h"
#include "xalloc.h"

#define CONNECT_TIMEOUT_MS 2000
#define RECONNECT_WAIT_MS 250
#define PING_INTERVAL_MS 1000        /* a silent server is found in ~3 s */
#define MAX_PINGS_OUT 3
#define RECONNECT_BUF (64 * 1024 * 1024)
#define DRAIN_MAX 4096               /* messages per poll, then a new turn */

struct natsconn {
	struct event_base *base;
	natsOptions *opts;
	natsConnection *conn;        /* NULL until the connect thread is done */
	natsSubscription *inbox_sub;
	natsSubscription *follow_sub;    /* a push consumer's deliveries */
	char follow_suffix[64];          /* what the owner hears them as */
	char *inbox;                 /* "_INBOX.<nuid>" */
	size_t inbox_len;
	struct natsconn_handlers h;
	struct event *wake;          /* raised by nats.c's threads */
	pthread_t connector;
	bool connecting;             /* the connect thread runs */
	natsStatus connect_status;   /* its result */
	atomic_int up, down, closed; /* flags from nats.c's threads */
	bool is_up;
};

void natsconn_threads(void)
{
	natsLibevent_Init();
}

/* ---- from nats.c's threads ---------------------------------------------- */

static void on_connected(natsConnection *c, void *arg)
{
	struct natsconn *nc = arg;
	(void)c;
	atomic_store(&nc->up, 1);
	event_active(nc->wake, EV_TIMEOUT, 0);
}

static void on_disconnected(natsConnection *c, void *arg)
{
	struct natsconn *nc = arg;
	(void)c;
	atomic_store(&nc->down, 1);
	event_active(nc->wake, EV_TIMEOUT, 0);
}

static void on_closed(natsConnection *c, void *arg)
{
	struct natsconn *nc = arg;
	(void)c;
	atomic_store(&nc->closed, 1);
	event_active(nc->wake, EV_TIMEOUT, 0);
}

/* The first connect waits for the network, so it never runs on the loop.
 * With retry-on-failed-connect it returns at once when no server answers
 * (NATS_NOT_YET_CONNECTED), and nats.c keeps trying on its own thread. */
static void *connect_thread(void *arg)
{
	struct natsconn *nc = arg;
	natsConnection *conn = NULL;
	natsStatus s = natsConnection_Connect(&conn, nc->opts);
	if (s == NATS_OK)
		atomic_store(&nc->up, 1);
	nc->connect_status = s;
	__atomic_store_n(&nc->conn, conn, __ATOMIC_RELEASE);
	event_active(nc->wake, EV_TIMEOUT, 0);
	return NULL;
}

/* The wake event only ends the loop's wait: natsconn_poll, after the
 * turn, does the work. */
static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* ---- settings ----------------------------------------------------------- */

static int set_servers(natsOptions *o, const char *list, char *err,
                       size_t errlen)
{
	char *copy = xstrdup(list), *save = NULL;
	const char *urls[32];
	int n = 0;
	for (char *t = strtok_r(copy, ", ", &save); t && n < 32;
	     t = strtok_r(NULL, ", ", &save))
		urls[n++] = t;
	natsStatus s = n ? natsOptions_SetServers(o, urls, n) : NATS_INVALID_ARG;
	if (s != NATS_OK)
		snprintf(err, errlen, "nats_servers '%s': %s", list,
		         natsStatus_GetText(s));
	free(copy);
	return s == NATS_OK ? 0 : -1;
}

static int set_options(struct natsconn *nc, const struct nats_conf *conf,
                       char *err, size_t errlen)
{
	natsOptions *o;
	char name[300];
	if (natsOptions_Create(&o) != NATS_OK) {
		snprintf(err, errlen, "cannot make the NATS options");
		return -1;
	}
	nc->opts = o;
	if (set_servers(o, conf->servers, err, errlen) < 0)
		return -1;
	snprintf(name, sizeof name, "joinqd %s", conf->advertise ?
	         conf->advertise : "");
	natsStatus s = natsOptions_SetName(o, name);
	if (s == NATS_OK)
		s = natsOptions_SetEventLoop(o, nc->base, natsLibevent_Attach,
		                             natsLibevent_Read, natsLibevent_Write,
		                             natsLibevent_Detach);
	/* Without it nats.c hands every publish to a flusher thread, which
	 * waits 1 ms for more before it wakes our loop to write: a delay on
	 * every append, and a lock shared across threads.  With it the write
	 * waits only for the loop's next turn, where group commit already
	 * gathers the turn's records. */
	if (s == NATS_OK)
		s = natsOptions_SetSendAsap(o, true);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(o, CONNECT_TIMEOUT_MS);
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(o, -1);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(o, RECONNECT_WAIT_MS);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectBufSize(o, RECONNECT_BUF);
	if (s == NATS_OK)
		s = natsOptions_SetPingInterval(o, PING_INTERVAL_MS);
	if (s == NATS_OK)
		s = natsOptions_SetMaxPingsOut(o, MAX_PINGS_OUT);
	if (s == NATS_OK)
		s = natsOptions_SetRetryOnFailedConnect(o, true, on_connected, nc);
	if (s == NATS_OK)
		s = natsOptions_SetDisconnectedCB(o, on_disconnected, nc);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectedCB(o, on_connected, nc);
	if (s == NATS_OK)
		s = natsOptions_SetClosedCB(o, on_closed, nc);
	if (s != NATS_OK) {
		snprintf(err, errlen, "NATS options: %s", natsStatus_GetText(s));
		return -1;
	}
	if (conf->creds &&
	    (s = natsOptions_SetUserCredentialsFromFiles(o, conf->creds,
	                                                 NULL)) != NATS_OK) {
		snprintf(err, errlen, "nats_creds %s: %s", conf->creds,
		         natsStatus_GetText(s));
		return -1;
	}
	if (conf->tls_ca || conf->tls_cert) {
		s = natsOptions_SetSecure(o, true);
		if (s == NATS_OK && conf->tls_ca)
			s = natsOptions_LoadCATrustedCertificates(o, conf->tls_ca);
		if (s == NATS_OK && conf->tls_cert)
			s = natsOptions_LoadCertificatesChain(o, conf->tls_cert,
			                                      conf->tls_key);
		if (s != NATS_OK) {
			snprintf(err, errlen, "NATS TLS (nats_tls_ca, nats_tls_cert, "
			         "nats_tls_key): %s", natsStatus_GetText(s));
			return -1;
		}
	}
	return 0;
}

/* ---- the connection ----------------------------------------------------- */

struct natsconn *natsconn_open(struct event_base *base,
                               const struct nats_conf *conf,
                               const struct natsconn_handlers *h, char *err,
                               size_t errlen)
{
	struct natsconn *nc = xcalloc(1, sizeof *nc);
	natsInbox *inbox = NULL;
	nc->base = base;
	nc->h = *h;
	if (set_options(nc, conf, err, errlen) < 0)
		goto fail;
	if (natsInbox_Create(&inbox) != NATS_OK) {
		snprintf(err, errlen, "cannot make a NATS inbox");
		goto fail;
	}
	nc->inbox = xstrdup(inbox);
	nc->inbox_len = strlen(nc->inbox);
	natsInbox_Destroy(inbox);
	nc->wake = event_new(base, -1, 0, on_wake, nc);
	nc->connecting = true;
	if (pthread_create(&nc->connector, NULL, connect_thread, nc) != 0) {
		nc->connecting = false;
		snprintf(err, errlen, "cannot start a thread to connect to NATS");
		goto fail;
	}
	return nc;
fail:
	natsconn_close(nc);
	return NULL;
}

void natsconn_inbox(const struct natsconn *nc, const char *suffix, char *out,
                    size_t outlen)
{
	snprintf(out, outlen, "%s.%s", nc->inbox, suffix);
}

natsStatus natsconn_follow(struct natsconn *nc, const char *suffix,
                           char *subject, size_t len)
{
	/* "INBOX_d.N": outside the inbox's wildcard, so never seen twice. */
	snprintf(subject, len, "%s_%s", nc->inbox, suffix);
	snprintf(nc->follow_suffix, sizeof nc->follow_suffix, "%s", suffix);
	if (nc->follow_sub)
		natsSubscription_Destroy(nc->follow_sub);   /* unsubscribed */
	nc->follow_sub = NULL;
	if (!nc->conn)
		return NATS_NOT_YET_CONNECTED;
	natsStatus s = natsConnection_SubscribeSync(&nc->follow_sub, nc->conn,
	                                            subject);
	if (s == NATS_OK)
		s = natsSubscription_SetPendingLimits(nc->follow_sub, -1, -1);
	return s;
}

natsStatus natsconn_publish(struct natsconn *nc, natsMsg *m)
{
	if (!nc->conn)
		return NATS_NOT_YET_CONNECTED;
	return natsConnection_PublishMsg(nc->conn, m);
}

natsStatus natsconn_send(struct natsconn *nc, const char *subject,
                         const char *suffix, const void *data, size_t len)
{
	char reply[128];
	if (!nc->conn)
		return NATS_NOT_YET_CONNECTED;
	if (!suffix)
		return natsConnection_Publish(nc->conn, subject, data, (int)len);
	natsconn_inbox(nc, suffix, reply, sizeof reply);
	return natsConnection_PublishRequest(nc->conn, subject, reply, data,
	                                     (int)len);
}

/* The connect thread is done: subscribe to the inbox (nats.c sends the
 * subscription once connected, and again after every reconnect). */
static void connected_first(struct natsconn *nc)
{
	char subject[128];
	pthread_join(nc->connector, NULL);
	nc->connecting = false;
	if (!nc->conn) {
		log_error("nats: cannot connect: %s",
		          natsStatus_GetText(nc->connect_status));
		atomic_store(&nc->closed, 1);
		return;
	}
	if (nc->connect_status == NATS_NOT_YET_CONNECTED)
		log_warning("nats: no server of nats_servers answers yet; "
		            "trying again every %d ms", RECONNECT_WAIT_MS);
	natsconn_inbox(nc, ">", subject, sizeof subject);
	natsStatus s = natsConnection_SubscribeSync(&nc->inbox_sub, nc->conn,
	                                            subject);
	if (s == NATS_OK)
		s = natsSubscription_SetPendingLimits(nc->inbox_sub, -1, -1);
	if (s != NATS_OK) {
		log_error("nats: cannot subscribe to %s: %s", subject,
		          natsStatus_GetText(s));
		atomic_store(&nc->closed, 1);
	}
}

/* Hands up to DRAIN_MAX messages of *sub to the owner; 1 if more wait.
 * The owner may replace *sub (natsconn_follow) from its handler. */
static int drain(struct natsconn *nc, natsSubscription **sub)
{
	natsMsg *m;
	for (int n = 0; *sub && n < DRAIN_MAX; n++) {
		if (natsSubscription_NextMsg(&m, *sub, 0) != NATS_OK)
			return 0;
		/* A stream's message keeps the subject it was stored under. */
		const char *subject = natsMsg_GetSubject(m);
		const char *suffix = *sub == nc->follow_sub ? nc->follow_suffix :
		                     strlen(subject) > nc->inbox_len ?
		                     subject + nc->inbox_len + 1 : "";
		nc->h.message(nc->h.ctx, suffix, m);
	}
	return *sub ? 1 : 0;
}

void natsconn_poll(struct natsconn *nc)
{
	if (nc->connecting) {
		if (!__atomic_load_n(&nc->conn, __ATOMIC_ACQUIRE) &&
		    nc->connect_status == NATS_OK)
			return;
		connected_first(nc);
	}
	if (atomic_exchange(&nc->down, 0) && nc->is_up) {
		nc->is_up = false;
		nc->h.event(nc->h.ctx, NATSCONN_DOWN);
	}
	if (atomic_exchange(&nc->up, 0) && !nc->is_up && nc->inbox_sub) {
		nc->is_up = true;
		nc->h.event(nc->h.ctx, NATSCONN_UP);
	}
	if (atomic_exchange(&nc->closed, 0)) {
		nc->is_up = false;
		nc->h.event(nc->h.ctx, NATSCONN_CLOSED);
		return;
	}
	int more = drain(nc, &nc->inbox_sub);
	more += drain(nc, &nc->follow_sub);
	if (!more)
		return;
	event_active(nc->wake, EV_TIMEOUT, 0);   /* more: another turn */
}

bool natsconn_up(const struct natsconn *nc)
{
	return nc->is_up;
}

size_t natsconn_max_payload(struct natsconn *nc)
{
	int64_t max = nc->conn ? natsConnection_GetMaxPayload(nc->conn) : 0;
	return max > 0 ? (size_t)max : (size_t)1 << 20;
}

const char *natsconn_server(struct natsconn *nc, char *buf, size_t len)
{
	if (!nc->conn || natsConnection_GetConnectedUrl(nc->conn, buf, len) !=
	    NATS_OK)
		snprintf(buf, len, "%s", "");
	return buf;
}

void natsconn_close(struct natsconn *nc)
{
	if (!nc)
		return;
	if (nc->connecting)
		pthread_join(nc->connector, NULL);
	if (nc->inbox_sub)
		natsSubscription_Destroy(nc->inbox_sub);
	if (nc->follow_sub)
		natsSubscription_Destroy(nc->follow_sub);
	/* What is still buffered goes out first, by our loop: nats.c's close
	 * would otherwise wait its flush timeout for a write only the loop
	 * makes. */
	for (int i = 0; nc->conn && i < 100 &&
	     natsConnection_Buffered(nc->conn) > 0; i++) {
		event_base_loop(nc->base, EVLOOP_NONBLOCK);
		usleep(1000);
	}
	if (nc->conn) {
		natsConnection_Close(nc->conn);
		natsConnection_Destroy(nc->conn);
	}
	if (nc->opts)
		natsOptions_Destroy(nc->opts);
	/* nats.c's threads may still call on_closed, which uses nc->wake:
	 * wait for them (a bounded wait, once, as the daemon exits). */
	if (nc->conn)
		nats_CloseAndWait(2000);
	if (nc->wake)
		event_free(nc->wake);
	free(nc->inbox);
	free(nc);
}
