/*
 * reply.h - building reply lines (PROTOCOL.md, "Requests and replies").
 *
 * A reply is written field by field into a buf:
 *     reply_ok(b, id); reply_u64(b, "task", 7); reply_end(b);
 * gives {"ok":true,"id":...,"task":7} and a LF.  Ids and items are kept as
 * the JSON text the client sent (request.h), so they are spliced in as they
 * are and never re-encoded.
 */
#ifndef JQ_REPLY_H
#define JQ_REPLY_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"

/* A piece of JSON text, such as an id or an item as its client sent it.
 * p == NULL: absent. */
struct jtext {
	const char *p;
	size_t len;
};

/* {"ok":true, and the id when the request had one (NULL or id->p NULL:
 * none). */
void reply_ok(struct buf *b, const struct jtext *id);
void reply_u64(struct buf *b, const char *key, uint64_t v);
void reply_bool(struct buf *b, const char *key, bool v);
void reply_str(struct buf *b, const char *key, const char *s);
/* ,"key": followed by len bytes of JSON text as they are. */
void reply_raw(struct buf *b, const char *key, const char *json, size_t len);
/* Closes the object and ends the line. */
void reply_end(struct buf *b);

/* A whole error line: {"ok":false,"id":...,"error":CODE,"message":TEXT}. */
void reply_error(struct buf *b, const struct jtext *id, int code,
                 const char *message);
/* The same left open, for an error that carries fields of its own (a
 * standby's "active"): the caller adds them, then reply_end(). */
void reply_error_open(struct buf *b, const struct jtext *id, int code,
                      const char *message);

/* Appends s as a JSON string literal, quotes included; s is UTF-8. */
void json_append_string(struct buf *b, const char *s, size_t len);

#endif
