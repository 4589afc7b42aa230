/* backend_uring_setup.c - the io_uring backend's ring: whether io_uring
 * can run here (probe), the ring's creation with the best task-run flags
 * the kernel takes, its restriction to the ops echod submits, and the
 * provided-buffer rings made of the worker's pool.  Part of the io_uring
 * backend (backend_uring.h); the event loop is in backend_uring.c. */
#include "backend_uring.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "log.h"
#include "worker.h"

static const unsigned ur_setup_flags[] = {
	IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
	IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
	0,
};

const char *ur_flags_name(unsigned flags)
{
	if (flags & IORING_SETUP_DEFER_TASKRUN)
		return "SINGLE_ISSUER+DEFER_TASKRUN";
	if (flags & IORING_SETUP_COOP_TASKRUN)
		return "COOP_TASKRUN";
	return "no task-run flags";
}

/* A tuning knob from the environment: name's value if in lo..hi, else
 * dflt (logged when set but out of range). */
static unsigned ur_env_uint(const char *name, unsigned lo, unsigned hi, unsigned dflt)
{
	const char *s = getenv(name);
	char *end;
	unsigned long v;

	if (!s || !*s)
		return dflt;
	v = strtoul(s, &end, 10);
	if (*end || v < lo || v > hi) {
		log_warning("%s=%s: not in %u..%u, using %u", name, s, lo, hi, dflt);
		return dflt;
	}
	return (unsigned)v;
}

/* CQ size: UR_CQ_ENTRIES, or ECHOD_URING_CQ_ENTRIES (16..65536), a knob
 * for tests (forcing CQ overflow) and for tuning. */
static unsigned ur_cq_entries(void)
{
	return ur_env_uint("ECHOD_URING_CQ_ENTRIES", 16, 65536, UR_CQ_ENTRIES);
}

int ur_ring_create(struct io_uring *ring, unsigned extra, unsigned *used)
{
	unsigned cq = ur_cq_entries(), sq = cq < UR_SQ_ENTRIES ? cq : UR_SQ_ENTRIES;
	int err = -EINVAL;

	for (size_t i = 0; i < sizeof(ur_setup_flags) / sizeof(ur_setup_flags[0]); i++) {
		struct io_uring_params p;

		memset(&p, 0, sizeof(p));
		p.flags = ur_setup_flags[i] | extra | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE;
		p.cq_entries = cq;
		err = io_uring_queue_init_params(sq, ring, &p);
		if (err == 0) {
			*used = p.flags;
			return 0;
		}
		if (err != -EINVAL)
			return err;
	}
	return err;
}

/* Debian's liburing 2.3 declares io_uring_register_restrictions() and
 * io_uring_enable_rings() but does not export them: call the syscall. */
int ur_register(struct io_uring *ring, unsigned op, const void *arg, unsigned nr)
{
	long ret = syscall(__NR_io_uring_register, ring->ring_fd, op, arg, nr);

	return ret < 0 ? -errno : 0;
}

/* The ops echod submits, and nothing else; the only SQE flags are
 * buffer selection (receives) and links (UDP echoes, in order). */
int ur_restrict(struct io_uring *ring)
{
	static const uint8_t ops[] = {
		IORING_OP_ACCEPT, IORING_OP_RECV, IORING_OP_SEND, IORING_OP_RECVMSG, IORING_OP_SENDMSG,
		IORING_OP_READ, IORING_OP_POLL_ADD, IORING_OP_ASYNC_CANCEL, IORING_OP_TIMEOUT,
	};
	struct io_uring_restriction res[sizeof(ops) + 2];
	unsigned n = 0;

	memset(res, 0, sizeof(res));
	for (size_t i = 0; i < sizeof(ops); i++) {
		res[n].opcode = IORING_RESTRICTION_SQE_OP;
		res[n++].sqe_op = ops[i];
	}
	res[n].opcode = IORING_RESTRICTION_SQE_FLAGS_ALLOWED;
	res[n++].sqe_flags = IOSQE_BUFFER_SELECT | IOSQE_IO_LINK;
	res[n].opcode = IORING_RESTRICTION_REGISTER_OP;
	res[n++].register_op = IORING_UNREGISTER_RING_FDS;
	return ur_register(ring, IORING_REGISTER_RESTRICTIONS, res, n);
}

static bool kernel_at_least(int major, int minor)
{
	struct utsname u;
	int ma = 0, mi = 0;

	if (uname(&u) < 0 || sscanf(u.release, "%d.%d", &ma, &mi) != 2)
		return false;
	return ma > major || (ma == major && mi >= minor);
}

static const char *errno_hint(int err)
{
	switch (err) {
	case -EPERM:  return " (kernel.io_uring_disabled, or a seccomp filter)";
	case -ENOSYS: return " (kernel without io_uring)";
	case -EINVAL: return " (kernel too old for the flags used)";
	case -ENOMEM: return " (locked memory limit, RLIMIT_MEMLOCK)";
	default:      return "";
	}
}

int ur_probe(const struct echod_config *cfg, char *why, size_t whylen)
{
	static const uint8_t needed[] = { IORING_OP_ACCEPT, IORING_OP_RECV, IORING_OP_SEND,
					  IORING_OP_READ, IORING_OP_ASYNC_CANCEL };
	struct io_uring ring;
	struct io_uring_probe *probe;
	unsigned flags;
	int err;

	(void)cfg;
	err = ur_ring_create(&ring, 0, &flags);
	if (err) {
		snprintf(why, whylen, "io_uring_queue_init: %s%s", strerror(-err), errno_hint(err));
		return err;
	}
	probe = io_uring_get_probe_ring(&ring);
	if (!probe) {
		snprintf(why, whylen, "IORING_REGISTER_PROBE failed");
		io_uring_queue_exit(&ring);
		return -ENOTSUP;
	}
	for (size_t i = 0; i < sizeof(needed); i++) {
		if (!io_uring_opcode_supported(probe, needed[i])) {
			snprintf(why, whylen, "io_uring op %u not supported by this kernel", needed[i]);
			io_uring_free_probe(probe);
			io_uring_queue_exit(&ring);
			return -ENOTSUP;
		}
	}
	io_uring_free_probe(probe);
	io_uring_queue_exit(&ring);
	/* multishot recv with provided buffer rings: 6.0 */
	if (!kernel_at_least(6, 0)) {
		snprintf(why, whylen, "kernel older than 6.0: no multishot recv");
		return -ENOTSUP;
	}
	return 0;
}

static void ur_free(struct ur *ur)
{
	for (int i = 0; i < UR_NGROUPS; i++)
		if (ur->g[i].br)
			munmap(ur->g[i].br, ur->g[i].maplen);
	if (ur->tx)
		munmap(ur->tx, ur->tx_maplen);
	if (ur->u.bufs)
		munmap(ur->u.bufs, ur->u.bufs_maplen);
	if (ur->u.tx)
		munmap(ur->u.tx, ur->u.tx_maplen);
	free(ur->slot);
	free(ur);
}

/* Map and register the ring of group bgid for up to n buffers. */
static int ur_group_setup(struct worker *w, struct ur *ur, int bgid, uint32_t n)
{
	struct ur_group *g = &ur->g[bgid];
	struct io_uring_buf_reg reg;
	unsigned entries = 1;
	int err;

	while (entries < n)
		entries <<= 1;
	g->mask = io_uring_buf_ring_mask(entries);
	g->maplen = entries * sizeof(struct io_uring_buf);
	g->br = mmap(NULL, g->maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (g->br == MAP_FAILED) {
		err = -errno;
		g->br = NULL;
		snprintf(w->init_error, sizeof(w->init_error), "mmap buffer ring: %s", strerror(-err));
		return err;
	}
	io_uring_buf_ring_init(g->br);
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (unsigned long)g->br;
	reg.ring_entries = entries;
	reg.bgid = (uint16_t)bgid;
	err = io_uring_register_buf_ring(&ur->ring, &reg, 0);
	if (err)
		snprintf(w->init_error, sizeof(w->init_error), "io_uring_register_buf_ring: %s",
			 strerror(-err));
	return err;
}

/* Recv bundles where the kernel has them (6.10) in the shape echod's
 * buffer accounting relies on, every buffer of a bundle full but the
 * last (6.16: earlier kernels could add buffers to a bundle after a short
 * transfer), and with the multishot byte limit (6.15) that keeps a bundle
 * within a connection's allowance; unless ECHOD_URING_BUNDLE=0 (a knob
 * for tests of the fallback, and for measuring what bundles save). */
static bool ur_bundle(const struct ur *ur)
{
	return (ur->ring.features & IORING_FEAT_RECVSEND_BUNDLE) && kernel_at_least(6, 16) &&
	       ur_env_uint("ECHOD_URING_BUNDLE", 0, 1, 1);
}

/* UDP buffers per worker: UR_UDP_BUFS, or ECHOD_URING_UDP_BUFFERS
 * (8..4096), a knob for tests (forcing exhaustion) and for tuning. */
static uint32_t ur_udp_bufs(void)
{
	return ur_env_uint("ECHOD_URING_UDP_BUFFERS", 8, 4096, UR_UDP_BUFS);
}

/* Anonymous memory for len bytes, reserved now, touched as used. */
static void *ur_map(struct worker *w, size_t len, const char *what)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED) {
		snprintf(w->init_error, sizeof(w->init_error), "mmap of %zu bytes for %s: %s",
			 len, what, strerror(errno));
		return NULL;
	}
	return p;
}

/* The UDP sockets' buffers (each holds the largest datagram after the
 * recvmsg_out header, name and control data), their send areas and
 * their ring.  None without UDP sockets. */
static int ur_udp_setup(struct worker *w, struct ur *ur)
{
	size_t need = sizeof(struct io_uring_recvmsg_out) + UR_UDP_NAMELEN + DGRAM_RX_CMSG_SPACE +
		      DGRAM_MAX_PAYLOAD;
	long page = sysconf(_SC_PAGESIZE);

	if (!w->n_udp)
		return 0;
	if (page <= 0)
		page = 4096;
	ur->u.nbufs = ur_udp_bufs();
	ur->u.size = (uint32_t)((need + (size_t)page - 1) / (size_t)page * (size_t)page);
	ur->u.bufs_maplen = (size_t)ur->u.nbufs * ur->u.size;
	ur->u.bufs = ur_map(w, ur->u.bufs_maplen, "UDP buffers");
	if (!ur->u.bufs)
		return -ENOMEM;
	ur->u.tx_maplen = (size_t)ur->u.nbufs * sizeof(struct ur_utx);
	ur->u.tx = ur_map(w, ur->u.tx_maplen, "UDP send areas");
	if (!ur->u.tx)
		return -ENOMEM;
	return ur_group_setup(w, ur, UR_BGID_UDP, ur->u.nbufs);
}

int ur_setup(struct worker *w, struct ur **out)
{
	struct ur *ur;
	unsigned flags;
	int err;

	if (w->buffer_count > 32768) {
		snprintf(w->init_error, sizeof(w->init_error),
			 "buffer_count %u above the io_uring limit 32768", w->buffer_count);
		return -EINVAL;
	}
	ur = calloc(1, sizeof(*ur));
	if (!ur)
		return -ENOMEM;
	err = ur_ring_create(&ur->ring, IORING_SETUP_R_DISABLED, &flags);
	if (err) {
		snprintf(w->init_error, sizeof(w->init_error), "io_uring_queue_init: %s%s",
			 strerror(-err), errno_hint(err));
		free(ur);
		return err;
	}
	ur->tx_maplen = (size_t)w->conn_cap * sizeof(struct ur_tx);
	ur->tx = ur_map(w, ur->tx_maplen, "send slots");
	if (!ur->tx) {
		err = -ENOMEM;
		goto fail;
	}
	ur->slot = calloc(w->buffer_count, sizeof(*ur->slot));
	if (!ur->slot) {
		err = -ENOMEM;
		snprintf(w->init_error, sizeof(w->init_error), "calloc of %u buffer slots: %s",
			 w->buffer_count, strerror(-err));
		goto fail;
	}
	ur->resv_first = w->buffer_count - w->cc.buf_reserve;
	err = ur_group_setup(w, ur, UR_BGID_MAIN, ur->resv_first);
	if (!err)
		err = ur_group_setup(w, ur, UR_BGID_RESV, w->cc.buf_reserve);
	if (!err)
		err = ur_udp_setup(w, ur);
	if (err)
		goto fail;
	ur->mshot_limit = true;     /* until the kernel says otherwise */
	ur->bundle = ur_bundle(ur);
	bool regfd = io_uring_register_ring_fd(&ur->ring) == 1;

	ur->regfd = regfd;
	ur->min_timeout = ur->ring.features & IORING_FEAT_MIN_TIMEOUT;

	err = ur_restrict(&ur->ring);
	if (err) {
		snprintf(w->init_error, sizeof(w->init_error), "io_uring_register IORING_REGISTER_RESTRICTIONS: %s",
			 strerror(-err));
		goto fail;
	}
	err = ur_register(&ur->ring, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
	if (err) {
		snprintf(w->init_error, sizeof(w->init_error), "io_uring_register IORING_REGISTER_ENABLE_RINGS: %s",
			 strerror(-err));
		goto fail;
	}
	snprintf(ur->features, sizeof(ur->features),
		 "%s, %s, %s, %s, buffer rings %u + %u reserve x %u bytes, UDP %u x %u bytes%s, restricted",
		 ur_flags_name(flags),
		 ur->ring.features & IORING_FEAT_EXT_ARG ? "EXT_ARG" : "no EXT_ARG",
		 ur->bundle ? "recv bundles" : "no recv bundles",
		 ur->min_timeout ? "min-wait timeouts" : "no min-wait timeouts",
		 ur->resv_first, w->cc.buf_reserve, w->buffer_size, ur->u.nbufs, ur->u.size,
		 regfd ? ", registered ring fd" : "");
	*out = ur;
	return 0;
fail:
	io_uring_queue_exit(&ur->ring);
	ur_free(ur);
	return err;
}

int ur_wait_batch(struct ur *ur, unsigned wait_nr, unsigned min_wait_us,
		  struct __kernel_timespec *ts)
{
	struct io_uring_sq *sq = &ur->ring.sq;
	struct io_uring_getevents_arg arg;
	unsigned flags = IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG;
	int fd = ur->ring.ring_fd;

	/* what io_uring_submit does first: the queued SQEs to the kernel */
	if (sq->sqe_head != sq->sqe_tail) {
		sq->sqe_head = sq->sqe_tail;
		io_uring_smp_store_release(sq->ktail, sq->sqe_tail);
	}
	memset(&arg, 0, sizeof(arg));
	arg.pad = min_wait_us;          /* min_wait_usec */
	arg.ts = (uint64_t)(uintptr_t)ts;
	if (ur->regfd) {
		flags |= IORING_ENTER_REGISTERED_RING;
		fd = ur->ring.enter_ring_fd;
	}
	return io_uring_enter2((unsigned)fd, sq->sqe_tail - *sq->khead, wait_nr, flags,
			       (sigset_t *)&arg, sizeof(arg));
}

void ur_teardown(struct ur *ur)
{
	io_uring_queue_exit(&ur->ring);
	ur_free(ur);
}
