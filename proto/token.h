/*
 * token.h - the token file, read one way by joinqd (auth_token_file) and
 * by joinq (--token-file), so that a file that authorises the daemon
 * authorises its clients too.
 */
#ifndef JQ_TOKEN_H
#define JQ_TOKEN_H

#include <stddef.h>

#define TOKEN_MAX 4096          /* bytes of token, blanks trimmed */

/*
 * Reads the token in the file at path: its first line without the line
 * end (LF or CRLF) and without the blanks (spaces, tabs) around it.
 * Returns 0 with *token set (malloc'd, NUL-terminated; *len its length);
 * else *token is NULL and err holds a sentence that names the file as
 * "<what> <path>": -1 when the file cannot be read ("cannot read ...:
 * No such file or directory"), -2 when it holds no token or a first line
 * longer than TOKEN_MAX.
 */
int token_read(const char *what, const char *path, char **token,
               size_t *len, char *err, size_t errlen);

#endif
