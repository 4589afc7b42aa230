/* backend_uring.h - the io_uring backend's private header, shared by
 * backend_uring.c (the event loop: submissions, completions, connection
 * state) and backend_uring_setup.c (the ring: probe, creation, op
 * restrictions, provided-buffer rings).  Nothing outside the io_uring
 * backend includes it (tests excepted). */
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
#include "listen.h"

struct worker;

#define UR_SQ_ENTRIES  1024
#define UR_CQ_ENTRIES  16384
#define UR_BGID_MAIN   0       /* most of the pool: multishot receives */
#define UR_BGID_RESV   1       /* the reserve: one buffer at a time, only for
				* connections holding none, so clients that
				* never read cannot pin every buffer */
#define UR_TX_IOV      8       /* buffers one send may gather (sendmsg) */


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

struct ur {
	struct io_uring ring;
	struct ur_group g[2];           /* UR_BGID_MAIN, UR_BGID_RESV */
	uint32_t resv_first;            /* bids from here on belong to the reserve */
	bool mshot_limit;               /* kernel takes a multishot recv byte limit */
	bool accept_armed[LISTEN_MAX];
	uint64_t ctl_val;               /* the eventfd read lands here */
	struct ilist starved;           /* connections waiting for buffers */
	struct ur_tx *tx;               /* one per connection slot, touched as used */
	size_t tx_maplen;
	char features[160];
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
/* Undo ur_setup: the ring's teardown cancels whatever is in flight. */
void ur_teardown(struct ur *ur);

#endif
