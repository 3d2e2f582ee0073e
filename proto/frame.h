/*
 * frame.h - splitting a TCP byte stream into frames (PROTOCOL.md,
 * "Transports"): one LF-terminated line per frame, a CR before the LF
 * ignored, lines of only spaces, tabs or CR ignored, and at most max_frame
 * bytes before the LF (a CR included).
 *
 * It works on a contiguous buffer and keeps no state: the caller drops
 * f.consumed bytes after each FRAME_OK or FRAME_EMPTY and calls again.
 * A caller that completes a long frame over many reads remembers that the
 * len bytes of a FRAME_NEED_MORE hold no LF and resumes the search after
 * them (frame_resume), so that each byte is searched once.
 */
#ifndef JQ_FRAME_H
#define JQ_FRAME_H

#include <stddef.h>

enum frame_status {
	FRAME_NEED_MORE,   /* no complete line yet; keep the bytes */
	FRAME_OK,          /* f->start, f->len: the frame, CR and LF removed */
	FRAME_EMPTY,       /* a blank line: drop f->consumed bytes */
	FRAME_TOO_LARGE,   /* more than max_frame bytes and no LF among them */
};

struct frame {
	const char *start;
	size_t len;
	size_t consumed;   /* bytes to drop, the LF included */
};

enum frame_status frame_next(const char *buf, size_t len, size_t max_frame,
                             struct frame *f);

/* frame_next, where buf[0..from) is known to hold no LF (from <= len):
 * the search starts at from. */
enum frame_status frame_resume(const char *buf, size_t len, size_t from,
                               size_t max_frame, struct frame *f);

/* True if p[0..len) is only spaces, tabs, CRs and LFs. */
int frame_blank(const char *p, size_t len);

#endif
