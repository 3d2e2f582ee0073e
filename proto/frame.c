/* frame.c - LF framing with a size limit (see frame.h). */
#include <string.h>

#include "frame.h"

int frame_blank(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n')
			return 0;
	return 1;
}

enum frame_status frame_next(const char *buf, size_t len, size_t max_frame,
                             struct frame *f)
{
	return frame_resume(buf, len, 0, max_frame, f);
}

enum frame_status frame_resume(const char *buf, size_t len, size_t from,
                               size_t max_frame, struct frame *f)
{
	/* The LF of a legal frame stands at an offset of at most max_frame. */
	size_t scan = len;
	if (max_frame < len)
		scan = max_frame + 1;
	const char *lf = from < scan ? memchr(buf + from, '\n', scan - from)
	                             : NULL;
	if (!lf)
		return len > max_frame ? FRAME_TOO_LARGE : FRAME_NEED_MORE;

	size_t n = (size_t)(lf - buf);
	f->consumed = n + 1;
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	f->start = buf;
	f->len = n;
	return frame_blank(buf, n) ? FRAME_EMPTY : FRAME_OK;
}
