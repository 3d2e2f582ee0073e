/* udpseg.c - UDP segmentation offload's control messages (see udpseg.h). */
#include <errno.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/udp.h>

#include "udpseg.h"

void udpseg_set(struct msghdr *h, union udpseg_cmsg *ctl, uint16_t seg)
{
	struct cmsghdr *cm = &ctl->align;
	cm->cmsg_level = SOL_UDP;
	cm->cmsg_type = UDP_SEGMENT;
	cm->cmsg_len = CMSG_LEN(sizeof seg);
	memcpy(CMSG_DATA(cm), &seg, sizeof seg);
	h->msg_control = ctl->buf;
	h->msg_controllen = CMSG_SPACE(sizeof seg);
}

size_t udpseg_gro_size(const struct msghdr *h)
{
	for (const struct cmsghdr *cm = CMSG_FIRSTHDR(h); cm;
	     cm = CMSG_NXTHDR((struct msghdr *)h, (struct cmsghdr *)cm)) {
		if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO) {
			int seg;
			memcpy(&seg, CMSG_DATA(cm), sizeof seg);
			return seg > 0 ? (size_t)seg : 0;
		}
	}
	return 0;
}

int udpseg_gro_on(int fd)
{
	int one = 1;
	return setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof one);
}

bool udpseg_refused(int err)
{
	return err == EIO || err == EINVAL || err == EMSGSIZE ||
	       err == ENOPROTOOPT || err == EOPNOTSUPP;
}
