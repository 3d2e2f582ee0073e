/*
 * udpseg.h - Linux's UDP segmentation offload, as joinqd and joinq bench
 * use it: a run of equal-sized datagrams to one peer (the last may be
 * shorter) sent in one call with a UDP_SEGMENT control message, and
 * received, on a socket with UDP_GRO on, as one buffer whose control
 * message gives the segment size to cut it back into its datagrams.
 */
#ifndef JQ_UDPSEG_H
#define JQ_UDPSEG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define UDPSEG_MAX_SEGMENTS 64   /* the kernel's UDP_MAX_SEGMENTS */
#define UDPSEG_MAX_BYTES 65000   /* a GSO send stays within IP's 64 KiB */

/* Room for the control message: UDP_SEGMENT's uint16_t out, UDP_GRO's int
 * in. */
union udpseg_cmsg {
	char buf[CMSG_SPACE(sizeof(int))];
	struct cmsghdr align;
};

/* Makes h one GSO send of segments of seg bytes, its control message in
 * ctl. */
void udpseg_set(struct msghdr *h, union udpseg_cmsg *ctl, uint16_t seg);

/* The segment size of a buffer received with UDP_GRO on, or 0: it is one
 * datagram. */
size_t udpseg_gro_size(const struct msghdr *h);

/* Turns UDP_GRO on for fd; -1 with errno set if the kernel has none. */
int udpseg_gro_on(int fd);

/* True if err, from a GSO send, says the kernel, device or route refuses
 * it (the datagrams may still go one by one). */
bool udpseg_refused(int err);

#endif
