/* test_uring_restrict.c - the io_uring backend's ring is restricted to
 * the ops echod uses: anything else is refused by the kernel (-EACCES),
 * while the allowed ops work.  Uses the backend's own set-up functions
 * (its private header), as the daemon runs them. */
#include "backend_uring.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "tap.h"

static int submit_one(struct io_uring *ring, struct io_uring_sqe *sqe, uint64_t ud)
{
	struct io_uring_cqe *cqe;
	int res;

	io_uring_sqe_set_data64(sqe, ud);
	if (io_uring_submit_and_wait(ring, 1) < 0)
		return -9999;
	if (io_uring_peek_cqe(ring, &cqe) < 0)
		return -9998;
	res = cqe->res;
	io_uring_cqe_seen(ring, cqe);
	return res;
}

/* The UDP echo's ops: a sendmsg linked (IOSQE_IO_LINK) to a recvmsg, on
 * a UDP socket sending to itself.  Both must complete whole. */
static void udp_ops(struct io_uring *ring)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	char out[5] = "ping", in[16];
	struct iovec siov = { out, sizeof(out) }, riov = { in, sizeof(in) };
	struct msghdr sm = { .msg_iov = &siov, .msg_iovlen = 1 }, rm = { .msg_iov = &riov, .msg_iovlen = 1 };
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), res[2] = { -9999, -9999 };

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &alen) < 0) {
		tap_ok(0, "UDP socket on 127.0.0.1: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	sm.msg_name = &a;
	sm.msg_namelen = alen;
	sqe = io_uring_get_sqe(ring);
	io_uring_prep_sendmsg(sqe, fd, &sm, 0);
	sqe->flags |= IOSQE_IO_LINK;
	io_uring_sqe_set_data64(sqe, 0);
	sqe = io_uring_get_sqe(ring);
	io_uring_prep_recvmsg(sqe, fd, &rm, 0);
	io_uring_sqe_set_data64(sqe, 1);
	if (io_uring_submit_and_wait(ring, 2) >= 0) {
		for (int k = 0; k < 2 && io_uring_peek_cqe(ring, &cqe) == 0; k++) {
			if (cqe->user_data < 2)
				res[cqe->user_data] = cqe->res;
			io_uring_cqe_seen(ring, cqe);
		}
	}
	tap_ok(res[0] == (int)sizeof(out), "allowed: IORING_OP_SENDMSG with IOSQE_IO_LINK (res %d)",
	       res[0]);
	tap_ok(res[1] == (int)sizeof(out) && memcmp(in, out, sizeof(out)) == 0,
	       "allowed: IORING_OP_RECVMSG, linked after it (res %d)", res[1]);
	close(fd);
}

int main(void)
{
	struct io_uring ring;
	struct io_uring_sqe *sqe;
	struct io_uring_probe *probe;
	unsigned flags = 0;
	uint64_t one = 1, val = 0;
	char buf[16];
	int err, efd, res;

	err = ur_ring_create(&ring, IORING_SETUP_R_DISABLED, &flags);
	if (err) {
		printf("1..0 # SKIP io_uring unavailable: %s\n", strerror(-err));
		return 0;
	}
	tap_diag("ring flags: %s", ur_flags_name(flags));
	tap_ok(ur_restrict(&ring) == 0, "restrictions registered on the disabled ring");
	tap_ok(ur_register(&ring, IORING_REGISTER_ENABLE_RINGS, NULL, 0) == 0, "ring enabled");

	/* an allowed op works */
	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (write(efd, &one, sizeof(one)) != sizeof(one))
		return 1;
	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_read(sqe, efd, &val, sizeof(val), 0);
	res = submit_one(&ring, sqe, 1);
	tap_ok(res == 8 && val == 1, "allowed: IORING_OP_READ (res %d)", res);

	udp_ops(&ring);

	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_nop(sqe);
	res = submit_one(&ring, sqe, 2);
	tap_ok(res == -EACCES, "refused: IORING_OP_NOP (res %d)", res);

	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_openat(sqe, AT_FDCWD, "/etc/hostname", O_RDONLY, 0);
	res = submit_one(&ring, sqe, 3);
	tap_ok(res == -EACCES, "refused: IORING_OP_OPENAT (res %d)", res);
	if (res >= 0)
		close(res);

	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_write(sqe, efd, &one, sizeof(one), 0);
	res = submit_one(&ring, sqe, 4);
	tap_ok(res == -EACCES, "refused: IORING_OP_WRITE (res %d)", res);

	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_read(sqe, efd, buf, sizeof(buf), 0);
	sqe->flags |= IOSQE_ASYNC;
	res = submit_one(&ring, sqe, 5);
	tap_ok(res == -EACCES, "refused: an allowed op with a flag not allowed, IOSQE_ASYNC (res %d)",
	       res);

	probe = io_uring_get_probe_ring(&ring);
	tap_ok(probe == NULL, "refused: register op IORING_REGISTER_PROBE");
	if (probe)
		io_uring_free_probe(probe);

	close(efd);
	io_uring_queue_exit(&ring);
	return tap_done();
}
