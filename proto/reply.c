/* reply.c - reply line builders (see reply.h). */
#include <string.h>

#include "errcode.h"
#include "reply.h"
#include "utf8.h"

/*
 * Messages may quote jansson's error text, which can cut a multi-byte
 * character in two: a byte that does not start valid UTF-8 becomes '?', so
 * that a reply is always valid UTF-8.
 */
void json_append_string(struct buf *b, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t valid_to = 0;   /* s[i..valid_to) is known valid UTF-8 */

	buf_reserve(b, len + 2);
	buf_addc(b, '"');
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x80 && i >= valid_to) {
			size_t bad;
			if (utf8_valid(s + i, len - i, &bad)) {
				valid_to = len;
			} else if (bad > 0) {
				valid_to = i + bad;
			} else {
				buf_addc(b, '?');
				continue;
			}
		}
		if (c == '"' || c == '\\') {
			buf_addc(b, '\\');
			buf_addc(b, (char)c);
		} else if (c < 0x20) {
			char esc[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
			buf_add(b, esc, sizeof esc);
		} else {
			buf_addc(b, (char)c);
		}
	}
	buf_addc(b, '"');
}

static void key(struct buf *b, const char *k)
{
	size_t n = strlen(k);
	if (!buf_reserve(b, n + 4))
		return;
	char *p = b->p + b->len;
	*p++ = ',';
	*p++ = '"';
	memcpy(p, k, n);   // NOLINT(bugprone-not-null-terminated-result): a reply line has no NUL
	p += n;
	*p++ = '"';
	*p++ = ':';
	b->len = (size_t)(p - b->p);
}

static void id_member(struct buf *b, const struct jtext *id)
{
	if (id && id->p) {
		key(b, "id");
		buf_add(b, id->p, id->len);
	}
}

void reply_ok(struct buf *b, const struct jtext *id)
{
	buf_adds(b, "{\"ok\":true");
	id_member(b, id);
}

void reply_u64(struct buf *b, const char *k, uint64_t v)
{
	key(b, k);
	buf_add_u64(b, v);
}

void reply_bool(struct buf *b, const char *k, bool v)
{
	key(b, k);
	buf_adds(b, v ? "true" : "false");
}

void reply_str(struct buf *b, const char *k, const char *s)
{
	key(b, k);
	json_append_string(b, s, strlen(s));
}

void reply_raw(struct buf *b, const char *k, const char *json, size_t len)
{
	key(b, k);
	buf_add(b, json, len);
}

void reply_end(struct buf *b)
{
	buf_add(b, "}\n", 2);
}

void reply_error_open(struct buf *b, const struct jtext *id, int code,
                      const char *message)
{
	buf_adds(b, "{\"ok\":false");
	id_member(b, id);
	reply_str(b, "error", errcode_name(code));
	reply_str(b, "message", message);
}

void reply_error(struct buf *b, const struct jtext *id, int code,
                 const char *message)
{
	reply_error_open(b, id, code, message);
	reply_end(b);
}
