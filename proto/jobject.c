/*
 * jobject.c - jansson's reading of a JSON text, with the texts of its
 * members found in the text itself, and compaction (see jobject.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "joinq.h"
#include "jobject.h"

static int say(char *why, size_t why_len, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int say(char *why, size_t why_len, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, why_len, fmt, ap);
	va_end(ap);
	return code;
}

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/*
 * True if the JSON text nests deeper than max: brackets outside strings,
 * the outermost container counting as depth 1.  Runs before jansson so
 * that the configurable limit holds and jansson never recurses deeply.
 */
static bool too_deep(const char *p, size_t len, unsigned max)
{
	unsigned depth = 0;
	bool in_string = false;

	for (size_t i = 0; i < len; i++) {
		char c = p[i];
		if (in_string) {
			if (c == '\\')
				i++;            /* skip the escaped character */
			else if (c == '"')
				in_string = false;
		} else if (c == '"') {
			in_string = true;
		} else if (c == '{' || c == '[') {
			if (++depth > max)
				return true;
		} else if ((c == '}' || c == ']') && depth > 0) {
			depth--;
		}
	}
	return false;
}

/* ---- the JSON text of members ------------------------------------------ *
 * These run on texts jansson has accepted, or bound every step by n. */

static size_t skip_ws(const char *p, size_t i, size_t n)
{
	while (i < n && is_ws(p[i]))
		i++;
	return i;
}

/* p[i] is the opening quote: the index after the closing one. */
static size_t skip_string(const char *p, size_t i, size_t n)
{
	for (i++; i < n && p[i] != '"'; i++)
		if (p[i] == '\\')
			i++;
	return i + 1;
}

/* The index after the value that starts at p[i]. */
static size_t skip_value(const char *p, size_t i, size_t n)
{
	if (p[i] == '"')
		return skip_string(p, i, n);
	if (p[i] != '{' && p[i] != '[') {
		while (i < n && p[i] != ',' && p[i] != '}' && p[i] != ']' &&
		       !is_ws(p[i]))
			i++;
		return i;
	}
	for (unsigned depth = 0; i < n;) {
		if (p[i] == '"') {
			i = skip_string(p, i, n);
			continue;
		}
		if (p[i] == '{' || p[i] == '[')
			depth++;
		else if ((p[i] == '}' || p[i] == ']') && --depth == 0)
			return i + 1;
		i++;
	}
	return n;
}

static unsigned hex4(const char *p)
{
	unsigned v = 0;
	for (int k = 0; k < 4; k++) {
		char c = p[k];
		v = v * 16 + (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
	}
	return v;
}

/* True if the JSON string p[0..n), quotes included, decodes to the ASCII
 * word: escapes count as the characters they stand for. */
static bool string_is(const char *p, size_t n, const char *word)
{
	static const char unescape[128] = {
		['"'] = '"', ['\\'] = '\\', ['/'] = '/', ['b'] = '\b',
		['f'] = '\f', ['n'] = '\n', ['r'] = '\r', ['t'] = '\t',
	};
	size_t k = 0;

	for (size_t i = 1; i + 1 < n; i++) {
		unsigned c = (unsigned char)p[i];
		if (c == '\\') {
			char e = p[++i];
			if (e == 'u') {
				c = hex4(p + i + 1);
				i += 4;
			} else {
				c = (unsigned char)unescape[e & 127];
			}
		}
		if (c >= 0x80 || word[k] == '\0' || word[k] != (char)c)
			return false;
		k++;
	}
	return word[k] == '\0';
}

/* The texts of the object's members named in keys[], into out[k].text; the
 * last of duplicate keys wins, as in jansson. */
static void find_members(const char *p, size_t n, const char *const keys[],
                         size_t nkeys, struct jfield out[])
{
	size_t i = skip_ws(p, 0, n);
	if (i >= n || p[i] != '{')
		return;
	for (i = skip_ws(p, i + 1, n); i < n && p[i] == '"';) {
		size_t key = i;
		i = skip_string(p, i, n);
		size_t key_len = i - key;
		size_t value = skip_ws(p, skip_ws(p, i, n) + 1, n);  /* past ':' */
		i = skip_value(p, value, n);
		for (size_t k = 0; k < nkeys; k++)
			if (string_is(p + key, key_len, keys[k]))
				out[k].text = (struct jtext){ p + value, i - value };
		i = skip_ws(p, i, n);
		if (i >= n || p[i] != ',')
			break;
		i = skip_ws(p, i + 1, n);
	}
}

/*
 * jansson cannot hold an object key with a NUL in it, but PROTOCOL.md makes
 * "\u0000" data everywhere.  jansson only validates and reads the scalar
 * members, and no key a caller names has a control character in it, so
 * this copy of the text, with every such escape in a key turned into
 * "\u0001", parses to the same members; their texts are then taken from
 * the text itself (find_members), keys and all.  False if no key holds
 * "\u0000".
 */
static bool neuter_nul_keys(char *p, size_t n)
{
	bool changed = false;

	for (size_t i = 0; i < n; i++) {
		if (p[i] != '"')
			continue;
		size_t start = i;
		i = skip_string(p, i, n);
		if (skip_ws(p, i, n) >= n || p[skip_ws(p, i, n)] != ':') {
			i--;
			continue;          /* a value, not a key */
		}
		for (size_t k = start + 1; k + 5 < i; k++) {
			if (p[k] != '\\')
				continue;
			if (memcmp(p + k + 1, "u0000", 5) == 0) {
				p[k + 5] = '1';
				changed = true;
			}
			k++;               /* the escaped character */
		}
		i--;
	}
	return changed;
}

/*
 * jansson refuses an integer beyond int64 ("too big integer"); RFC 8259
 * allows any.  In this copy each is "0" and spaces, the same length, so
 * that the text is as valid as before and its columns the same; the
 * members' texts, taken from the original, keep the digits (field_of
 * marks them JK_BIGINT).  False if there is none.
 */
static bool neuter_big_integers(char *p, size_t n)
{
	bool changed = false;

	for (size_t i = 0; i < n;) {
		if (p[i] == '"') {
			i = skip_string(p, i, n);
			continue;
		}
		if (p[i] != '-' && !is_digit(p[i])) {
			i++;
			continue;
		}
		/* A number-like run; only a well-formed integer is touched. */
		size_t start = i, digits = i + (p[i] == '-');
		bool integer = true;
		for (; i < n && (is_digit(p[i]) || p[i] == '-' || p[i] == '+' ||
		                 p[i] == '.' || p[i] == 'e' || p[i] == 'E'); i++)
			if (i > start && !is_digit(p[i]))
				integer = false;
		int64_t v;
		if (!integer || digits >= i || (p[digits] == '0' && i - digits > 1) ||
		    jint_value(p + start, i - start, &v))
			continue;
		p[start] = '0';
		memset(p + start + 1, ' ', i - start - 1);
		changed = true;
	}
	return changed;
}

/* A member as jansson read it, its text t found in the JSON text. */
static struct jfield field_of(const json_t *v, struct jtext t)
{
	struct jfield f = { .text = t };

	switch (json_typeof(v)) {
	case JSON_NULL:
		f.kind = JK_NULL;
		break;
	case JSON_FALSE:
		f.kind = JK_FALSE;
		break;
	case JSON_TRUE:
		f.kind = JK_TRUE;
		break;
	case JSON_INTEGER:
		f.kind = JK_INT;
		f.integer = json_integer_value(v);
		if (t.p && !jint_value(t.p, t.len, &f.integer)) {
			f.kind = JK_BIGINT;   /* neutered: jansson saw 0 */
			f.integer = 0;
		}
		break;
	case JSON_REAL:
		f.kind = JK_REAL;
		f.real = json_real_value(v);
		break;
	case JSON_STRING:
		f.kind = JK_STRING;
		f.escaped = t.p && memchr(t.p, '\\', t.len) != NULL;
		break;
	default:
		f.kind = JK_OTHER;
		break;
	}
	return f;
}

/* jansson's reading of p[0..len), worked around as the comments above say
 * (at most once each way); NULL with jerr set if it is not JSON, or with
 * *nomem set if a copy could not be made. */
static json_t *load(const char *p, size_t len, size_t flags,
                    json_error_t *jerr, bool *nomem)
{
	json_t *root = json_loadb(p, len, flags, jerr);
	char *copy = NULL;

	*nomem = false;
	for (int tries = 0; !root && tries < 2; tries++) {
		int code = json_error_code(jerr);
		if (code != json_error_null_byte_in_key &&
		    code != json_error_numeric_overflow)
			break;
		if (!copy) {
			if (!(copy = malloc(len))) {
				*nomem = true;
				break;
			}
			memcpy(copy, p, len);
		}
		if (!(code == json_error_null_byte_in_key ?
		      neuter_nul_keys(copy, len) : neuter_big_integers(copy, len)))
			break;
		root = json_loadb(copy, len, flags, jerr);
	}
	free(copy);
	return root;
}

int jobject_slow(const char *p, size_t len, unsigned max_depth,
                 bool any_value, const char *const keys[], size_t nkeys,
                 struct jfield out[], char *why, size_t why_len)
{
	json_error_t jerr;
	bool nomem;

	/* JSON has no raw NUL byte anywhere (in a string it is \u0000), but
	 * jansson lets one pass after a number or literal: it would then
	 * come back raw in an echoed id. */
	if (memchr(p, '\0', len))
		return say(why, why_len, JQ_BAD_JSON, "is not valid JSON: a raw "
		           "NUL byte (inside a string, write \\u0000)");
	if (too_deep(p, len, max_depth))
		return say(why, why_len, JQ_BAD_JSON, "nests deeper than "
		           "max_depth (%u)", max_depth);
	json_t *root = load(p, len, JSON_ALLOW_NUL |
	                    (any_value ? JSON_DECODE_ANY : 0), &jerr, &nomem);
	if (!root && (nomem ||
	              json_error_code(&jerr) == json_error_out_of_memory))
		return say(why, why_len, JQ_ERR_NOMEM, "out of memory");
	if (!root)
		return say(why, why_len, JQ_BAD_JSON, "is not valid JSON: %s at "
		           "column %d", jerr.text, jerr.column);
	if (!any_value && !json_is_object(root)) {
		json_decref(root);
		return say(why, why_len, JQ_BAD_JSON, "is not a JSON object");
	}
	find_members(p, len, keys, nkeys, out);
	for (size_t k = 0; k < nkeys; k++) {
		json_t *v = json_object_get(root, keys[k]);
		out[k] = v ? field_of(v, out[k].text) : (struct jfield){ 0 };
	}
	json_decref(root);
	return JQ_OK;
}

int jvalue_check(const char *p, size_t len, unsigned max_depth, char *why,
                 size_t why_len)
{
	if (jscan_value(p, len, max_depth) == JSCAN_OK)
		return JQ_OK;
	return jobject_slow(p, len, max_depth, true, NULL, 0, NULL, why,
	                    why_len);
}

bool jtext_spaced(const char *p, size_t len)
{
	for (size_t i = 0; i < len;) {
		if (is_ws(p[i]))
			return true;
		i = p[i] == '"' ? skip_string(p, i, len) : i + 1;
	}
	return false;
}

size_t jtext_compact(const char *p, size_t len, char *out)
{
	size_t n = 0;

	for (size_t i = 0; i < len;) {
		if (p[i] == '"') {
			size_t end = skip_string(p, i, len);
			memcpy(out + n, p + i, end - i);
			n += end - i;
			i = end;
		} else {
			if (!is_ws(p[i]))
				out[n++] = p[i];
			i++;
		}
	}
	return n;
}
