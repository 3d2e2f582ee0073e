/*
 * jqclient.h - libjoinq's private header: struct jq_client, the reply as
 * the library reads it, and the functions its files share.  The split:
 * connection.c (errors, time, sockets, TCP and UDP, failing over),
 * jqcall.c (requests, reading and judging replies, one call), libjoinq.c
 * (the ops and the raw pipelining API).  Only joinq.h is public.
 */
#ifndef JQ_CLIENT_INT_H
#define JQ_CLIENT_INT_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "failover.h"
#include "joinq.h"
#include "jscan.h"
#include "tlsc.h"

#define NEVER (-1)                /* a deadline that never comes */
#define READ_CHUNK 65536          /* bytes asked of each read */
#define FLUSH_AT 65536            /* jq_send writes once this much is queued */
#define DATAGRAM_MAX 65536        /* above any UDP payload */
#define UDP_REQUEST_MAX 65507     /* the largest IPv4 UDP payload */
#define UDP_IO_TIMEOUT_MS 5000    /* UDP's io_timeout when none is given */

struct jq_client {
	int fd;
	enum jq_transport transport;
	int64_t io_ms;            /* a reply's allowance beyond the op's wait;
	                             NEVER: none */
	char *token;              /* UDP: sent in every request; TCP: sent
	                             again on each new connection */
	double connect_timeout;
	struct failover fo;       /* the daemon addresses (several: TCP
	                             fails over, failover.c) */
	bool req_written;         /* TCP: the last request went out, whole or
	                             in part */
	char peer[INET6_ADDRSTRLEN + 16];   /* "127.0.0.1:7477", for messages */

	struct buf out;           /* TCP: request lines not yet written; UDP:
	                             datagrams, one a line, not yet sent */
	size_t out_off;           /* bytes of out written already */
	struct buf in;            /* TCP: bytes read, not yet returned; UDP:
	                             the datagram buffer */
	size_t in_off;            /* bytes of in returned already */
	size_t in_scanned;        /* TCP: of the rest, bytes with no LF */
	struct buf req;           /* the request an op is building */
	uint64_t next_id;         /* UDP: the id of the next request */
	struct jq_error broken;   /* TCP: why the stream is unusable; code 0
	                             while it is fine */
	bool shut;                /* jq_shutdown closed the sending side */
	struct jq_tls *tls;       /* TCP over TLS: the settings (a copy of
	                             the caller's); NULL: plain TCP */
	struct tlsc sess;         /* the TLS session on fd, if any */
	int cancel_fd;            /* jq_set_cancel_fd; -1: none */
	bool cancelled;           /* cancel_fd fired: no more watching it */
};

/* The members of a reply the library reads, by enum reply_member. */
enum reply_member {
	RM_OK, RM_ERROR, RM_MESSAGE, RM_ID, RM_TASK, RM_DELIVERIES, RM_ITEM,
	RM_UNFINISHED, RM_QSIZE, RM_MAXSIZE, RM_INFLIGHT, RM_DELAYED, RM_EMPTY,
	RM_FULL, RM_DEAD_LETTERED, RM_PROTOCOL, RM_VERSION, RM_ROLE, RM_ACTIVE,
	RM_CREATED, RM_MAX_DELIVERIES, RM_DEAD_LETTER, RM_PURGED, RM_DELETED,
	RM_COUNT
};

/* A reply line and its members as sent: the texts point into the line,
 * which stays valid until the next read from the client. */
struct reply {
	const char *line;
	size_t len;
	struct jfield m[RM_COUNT];
};

/* connection.c */
int jqc_fail(struct jq_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int jqc_broke(jq_client *c, struct jq_error *err);
int jqc_out_of_memory(struct jq_error *err, const char *doing);
int jqc_ok(struct jq_error *err);
int jqc_shut_wr(jq_client *c);
int64_t jqc_reply_deadline(const jq_client *c, const struct jq_wait *w);
int jqc_tcp_flush(jq_client *c, struct jq_error *err);
int jqc_tcp_next_line(jq_client *c, int64_t deadline, const char **line,
                      size_t *len, struct jq_error *err);
int jqc_udp_send(jq_client *c, const char *p, size_t len, struct jq_error *err);
int jqc_udp_recv(jq_client *c, int64_t deadline, const char **data, size_t *len,
                 struct jq_error *err);
int jqc_call_failover(jq_client *c, const struct jq_wait *w, struct reply *r,
                      struct jq_error *err);

/* jqcall.c */
int jqc_parse_reply(const jq_client *c, const char *line, size_t len,
                    struct reply *r, struct jq_error *err);
bool jqc_member_string(const struct jfield *f, char *buf, size_t cap);
int jqc_judge_reply(const jq_client *c, const struct reply *r,
                    struct jq_error *err);
void jqc_req_begin(jq_client *c, const char *op, const char *queue);
void jqc_req_u64(jq_client *c, const char *key, uint64_t v);
int jqc_req_seconds(jq_client *c, const char *key, double s,
                    struct jq_error *err);
int jqc_req_wait(jq_client *c, const struct jq_wait *w, struct jq_error *err);
int jqc_call_tcp(jq_client *c, const char *p, size_t len, int64_t deadline,
                 struct reply *r, struct jq_error *err);
int jqc_call(jq_client *c, const struct jq_wait *w, struct reply *r,
             struct jq_error *err);
int jqc_reply_u64_field(const jq_client *c, const struct reply *r,
                        enum reply_member k, uint64_t *v, struct jq_error *err);
int jqc_reply_bool_field(const jq_client *c, const struct reply *r,
                         enum reply_member k, bool *v, struct jq_error *err);

/* libjoinq.c */
int jqc_authenticate(jq_client *c, const char *token, struct jq_error *err);

#endif
