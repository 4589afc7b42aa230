/* test_uring_restrict.c - the io_uring backend's ring is restricted to
 * the ops echod uses: anything else is refused by the kernel (-EACCES),
 * while the allowed ops work.  Uses the backend's own set-up functions
 * (its private header), as the daemon runs them. */
#include "backend_uring.h"

#include <errno.h>
#include <fcntl.h>
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
