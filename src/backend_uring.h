/* backend_uring.h - the io_uring backend's private header, shared by
 * backend_uring.c (the event loop: submissions, completions, connection
 * state), backend_uring_bufs.c (the TCP receive buffers and their rings),
 * backend_uring_udp.c (the UDP echo) and backend_uring_setup.c (the ring:
 * probe, creation, op restrictions, provided-buffer rings).
 * Nothing outside the io_uring backend includes it (tests excepted). */
#ifndef ECHOD_BACKEND_URING_H
#define ECHOD_BACKEND_URING_H

#include <liburing.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "config.h"
#include "conn.h"
#include "dgram.h"
#include "listen.h"

struct worker;

#define UR_SQ_ENTRIES  1024
#define UR_CQ_ENTRIES  16384
#define UR_BGID_MAIN   0       /* most of the pool: multishot receives */
#define UR_BGID_RESV   1       /* the reserve: one buffer at a time, only for
				* connections holding none, so clients that
				* never read cannot pin every buffer */
#define UR_BGID_UDP    2       /* the UDP sockets' datagram buffers */
#define UR_NGROUPS     3
#define UR_TX_IOV      8       /* buffers one send may gather (sendmsg) */

/* Recv bundles (6.10): one receive fills several buffers of the ring, in
 * ring order, and its completion names the first.  Liburing 2.3's
 * header predates them. */
#ifndef IORING_RECVSEND_BUNDLE
#define IORING_RECVSEND_BUNDLE      (1U << 4)
#endif
#ifndef IORING_FEAT_RECVSEND_BUNDLE
#define IORING_FEAT_RECVSEND_BUNDLE (1U << 14)
#endif
/* Min-wait timeouts (6.12): a wait for n completions that returns once
 * min_wait_usec has passed with at least one (io_uring_getevents_arg's
 * field after sigmask_sz, "pad" in liburing 2.3's header). */
#ifndef IORING_FEAT_MIN_TIMEOUT
#define IORING_FEAT_MIN_TIMEOUT     (1U << 15)
#endif
#define UR_BATCH_FROM  3       /* batch_wait_us: only after a wait that brought this many */
#define UR_BATCH_MAX   64      /* ... and for at most this many */

/* UDP: each buffer holds the largest datagram (or GRO-coalesced receive)
 * after the recvmsg_out header, the source address and the control data.
 * Fixed count and size, set up with the ring, touched as used. */
#define UR_UDP_BUFS     256     /* per worker; ECHOD_URING_UDP_BUFFERS (8..4096) */
#define UR_UDP_NAMELEN  ((unsigned)sizeof(struct sockaddr_storage))

/* What a completion is for, in the top 8 bits of its user_data. */
enum ur_op {
	UOP_NONE = 0, UOP_ACCEPT, UOP_RECV, UOP_SEND, UOP_CTL, UOP_CANCEL, UOP_POLL,
	UOP_URECV,      /* UDP multishot recvmsg: idx = socket */
	UOP_USEND,      /* UDP echo sendmsg: gen = socket, idx = buffer */
	UOP_UPOLL,      /* UDP POLLOUT heading a chain after -EAGAIN: idx = socket */
	UOP_UTIMER,     /* UDP re-arm delayed after recv errors: idx = socket */
};

static inline uint64_t ud_make(enum ur_op op, uint32_t gen, uint32_t idx)
{
	return (uint64_t)op << 56 | (uint64_t)(gen & CONN_GEN_MASK) << 32 | idx;
}

static inline enum ur_op ud_op(uint64_t ud) { return (enum ur_op)(ud >> 56); }
static inline uint32_t ud_gen(uint64_t ud) { return (uint32_t)(ud >> 32) & CONN_GEN_MASK; }
static inline uint32_t ud_idx(uint64_t ud) { return (uint32_t)ud; }


/* A send gathering several buffers: the kernel reads msg and iov while
 * the send is in flight, so each connection slot has its own. */
struct ur_tx {
	struct msghdr msg;
	struct iovec iov[UR_TX_IOV];
};

/* A provided-buffer ring registered as one buffer group. */
struct ur_group {
	struct io_uring_buf_ring *br;
	size_t maplen;
	int mask;
	int pending;                    /* buffers added, not yet published */
	uint32_t nfree;                 /* buffers the kernel may pick */
};

/* The echo of one received UDP buffer: the kernel reads msg, iov and
 * cbuf while its sendmsg is in flight, so each buffer has its own.  A
 * buffer that leads a run (the next n - 1 of its FIFO coalesced into its
 * send) points its msg at run_iov, one iovec per echo of the run. */
struct ur_utx {
	struct msghdr msg;
	struct iovec iov;               /* its own echo */
	uint32_t next;                  /* the socket's FIFO: next buffer, or UR_UNONE */
	uint16_t gso;                   /* GRO segment size, 0 if none */
	uint8_t state;                  /* UT_* (backend_uring_udp.c) */
	uint8_t n;                      /* sent by it: echoes of its run (1: its own) */
	uint16_t seg;                   /* sent by it: UDP_SEGMENT (0: none) */
	uint32_t bytes;                 /* sent by it: the payload */
	char cbuf[DGRAM_CMSG_SPACE] __attribute__((aligned(8)));
	struct iovec run_iov[DGRAM_COALESCE_MAX];   /* touched only by a run */
};
#define UR_UNONE UINT32_MAX

/* One UDP socket of the worker. */
struct ur_usock {
	struct msghdr rmsg;             /* the multishot recvmsg's layout: name and
					   control lengths (the kernel reads it at prep) */
	uint32_t q_head, q_tail;        /* echoes, in receive order */
	uint32_t chain;                 /* ops of the chain in flight */
	unsigned errs;                  /* receive errors in a row */
	bool armed;                     /* multishot recvmsg armed (or its cancel pending) */
	bool cancelling;                /* its cancel issued */
	bool starved;                   /* ended on -ENOBUFS: re-armed once buffers return */
	bool timer;                     /* a delayed re-arm pending */
	bool poll_first;                /* a send saw -EAGAIN: the next chain waits for POLLOUT */
	uint32_t held;                  /* buffers in its FIFO (queued or being sent) */
	bool capped;                    /* its receive stopped: it held its share of the ring */
};

struct ur_udp {
	char *bufs;                     /* nbufs x size */
	size_t bufs_maplen;
	uint32_t nbufs, size;
	uint32_t returned;              /* buffers back since the last ur_udp_sync */
	struct ur_utx *tx;              /* one per buffer */
	size_t tx_maplen;
	struct ur_usock s[LISTEN_MAX];
	bool exhausted;                 /* the ring ran dry: counted once, until re-armed */
	struct __kernel_timespec delay; /* a delayed re-arm's timeout */
};

struct ur {
	struct io_uring ring;
	struct ur_group g[UR_NGROUPS];  /* UR_BGID_MAIN, UR_BGID_RESV, UR_BGID_UDP */
	uint32_t resv_first;            /* bids from here on belong to the reserve */
	bool mshot_limit;               /* kernel takes a multishot recv byte limit */
	bool bundle;                    /* multishot recvs fill several buffers */
	bool min_timeout;               /* waits take a min-wait timeout (batch_wait_us) */
	bool regfd;                     /* the ring fd is registered */
	uint32_t *slot;                 /* per buffer id: the ring entry it was last
					   added at (a bundle's next buffers follow it) */
	bool accept_armed[LISTEN_MAX];
	uint64_t ctl_val;               /* the eventfd read lands here */
	struct ilist starved;           /* connections waiting for buffers */
	uint32_t nstarved;              /* how many */
	struct ur_tx *tx;               /* one per connection slot, touched as used */
	size_t tx_maplen;
	struct ur_udp u;
	char features[256];
};


/* Create a ring with the best flags the kernel takes.  extra is OR'ed
 * in (R_DISABLED).  Returns 0 or -errno; *used gets the flags. */
int ur_ring_create(struct io_uring *ring, unsigned extra, unsigned *used);
/* The set-up flags' name, for the log. */
const char *ur_flags_name(unsigned flags);
/* io_uring_register(2) on ring: 0 or -errno. */
int ur_register(struct io_uring *ring, unsigned op, const void *arg, unsigned nr);
/* Restrict the (disabled) ring to the ops echod submits.  0 or -errno. */
int ur_restrict(struct io_uring *ring);
/* backend_ops.probe. */
int ur_probe(const struct echod_config *cfg, char *why, size_t whylen);
/* The worker's ring, enabled and restricted, its send slots and its two
 * buffer rings (registered, empty): *out, or -errno with w->init_error. */
int ur_setup(struct worker *w, struct ur **out);
/* Submit what is queued and wait for wait_nr completions, or min_wait_us
 * if at least one came by then, or ts (NULL: no limit) if none did:
 * io_uring_enter(2) with a min-wait timeout (ur->min_timeout).  The number
 * submitted, or -errno (-ETIME: ts passed). */
int ur_wait_batch(struct ur *ur, unsigned wait_nr, unsigned min_wait_us,
		  struct __kernel_timespec *ts);
/* Undo ur_setup: the ring's teardown cancels whatever is in flight. */
void ur_teardown(struct ur *ur);

/* TCP receive buffers (backend_uring_bufs.c).  Make the buffers given
 * back since the last call visible to the kernel. */
void ur_publish_buffers(struct ur *ur);
/* conn_ctx.buf_release: buffer bid back to its ring. */
void ur_buf_release(struct conn_ctx *cc, uint32_t bid);
/* A receive of res bytes (or an error, res <= 0) into buffer bid and,
 * with a bundle, the ring's next ones: queue each for c's echo in order,
 * or give it back (no bytes, or c gone: NULL). */
void ur_take_buffers(struct worker *w, struct conn *c, uint32_t bid, int res);

/* A free SQE, submitting what is queued when the SQ is full. */
struct io_uring_sqe *ur_sqe(struct worker *w);

/* UDP (backend_uring_udp.c).  Give every UDP buffer to the kernel and
 * arm the sockets' receives (if w->udp_reading). */
void ur_udp_init(struct worker *w);
/* A completion of a UOP_U* op. */
void ur_udp_handle(struct worker *w, struct io_uring_cqe *cqe);
/* Once per loop pass, after the completions: start or stop reading per
 * w->udp_reading, re-arm ended receives (starved ones once buffers came
 * back), submit each socket's queued echoes as one linked chain. */
void ur_udp_sync(struct worker *w);
/* backend_ops.udp_busy: a receive still armed, or echoes queued or in flight. */
bool ur_udp_busy(struct worker *w);
/* Before the ring's teardown: count the echoes that will not go out. */
void ur_udp_fini(struct worker *w);

#endif
