/*
 * token.c - the token file (see token.h): the one reader that joinqd and
 * joinq share.  A line end and surrounding blanks are trimmed because
 * editors and `echo` add them; a token never holds them.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "token.h"
#include "xalloc.h"

static bool blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int token_read(const char *what, const char *path, char **token,
               size_t *len, char *err, size_t errlen)
{
	/* Room for the longest token, blanks around it, and one byte more
	 * to tell a line that is too long. */
	char line[TOKEN_MAX + 64];
	int rc = -1;

	*token = NULL;
	*len = 0;
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "cannot read %s %s: %s", what, path,
		         strerror(errno));
		return -1;
	}
	errno = 0;
	char *s = fgets(line, sizeof line, f);
	if (!s && ferror(f)) {
		snprintf(err, errlen, "cannot read %s %s: %s", what, path,
		         strerror(errno ? errno : EIO));
		goto done;
	}
	size_t n = s ? strlen(s) : 0;
	bool whole_line = n < sizeof line - 1 || s[n - 1] == '\n';
	while (n && blank(s[n - 1]))
		n--;
	while (n && blank(*s)) {
		s++;
		n--;
	}
	rc = -2;
	if (!whole_line || n > TOKEN_MAX)
		snprintf(err, errlen, "%s %s: its first line is longer than %d "
		         "bytes, the longest token", what, path, TOKEN_MAX);
	else if (n == 0)
		snprintf(err, errlen, "%s %s holds no token", what, path);
	else {
		*token = xstrndup(s, n);
		*len = n;
		rc = 0;
	}
done:
	fclose(f);
	explicit_bzero(line, sizeof line);
	return rc;
}
