/* backend_uring_bufs.c - the io_uring backend's TCP receive buffers: the
 * worker's pool, given to the kernel through two provided-buffer rings
 * (the main group and the reserve, backend_uring.h), taken back as
 * receives complete and given again once their bytes are echoed.
 *
 * A buffer's ring entry is remembered when it is added, because a recv
 * bundle (6.10) names only its first buffer: the others are the ring
 * entries that follow it, in order. */
#include "backend_uring.h"

#include "conn.h"
#include "counters.h"
#include "worker.h"

static inline struct ur_group *ur_group_of(struct ur *ur, uint32_t bid)
{
	return &ur->g[bid >= ur->resv_first ? UR_BGID_RESV : UR_BGID_MAIN];
}

/* Make the buffers added since the last call visible to the kernel. */
void ur_publish_buffers(struct ur *ur)
{
	for (int i = 0; i < UR_NGROUPS; i++) {
		if (ur->g[i].pending) {
			io_uring_buf_ring_advance(ur->g[i].br, ur->g[i].pending);
			ur->g[i].pending = 0;
		}
	}
}

/* conn_ctx.buf_release: bid back to its ring (published by the next
 * ur_publish_buffers). */
void ur_buf_release(struct conn_ctx *cc, uint32_t bid)
{
	struct ur *ur = worker_of(cc)->be;
	struct ur_group *g = ur_group_of(ur, bid);

	ur->slot[bid] = (g->br->tail + (unsigned)g->pending) & (unsigned)g->mask;
	io_uring_buf_ring_add(g->br, bufpool_ptr(&cc->pool, bid), cc->pool.size,
			      (unsigned short)bid, g->mask, g->pending++);
	g->nfree++;
	cc->pool.nfree++;
}

/* The buffers a receive of res bytes filled, the first one bid: one, or
 * with a bundle ceil(res / size) of them, every one full but the last,
 * taken from the ring in order: the ring entries after the one bid was
 * added at.  None of them is written again before this completion is
 * handled, as long as completions are handled in the order their
 * buffers left the ring (a completion is posted as its receive takes its
 * buffers, in the worker's own thread with DEFER_TASKRUN): the ring has
 * an entry for every buffer, and a buffer is added again only once given
 * back, at the tail, which stays behind every entry taken but not yet
 * handled.  Each is queued for the echo, in order, or (no connection, no
 * bytes) given back. */
void ur_take_buffers(struct worker *w, struct conn *c, uint32_t bid, int res)
{
	struct ur *ur = w->be;
	struct ur_group *g = ur_group_of(ur, bid);
	uint32_t size = w->cc.pool.size;
	uint32_t left = res > 0 ? (uint32_t)res : 0;
	uint32_t slot = ur->slot[bid];

	if (left > size)
		ctr_add(&w->cc.ctr->recv_bundles, 1);
	do {
		uint32_t len = left < size ? left : size;

		g->nfree--;
		w->cc.pool.nfree--;
		if (!c || !len)
			ur_buf_release(&w->cc, bid);     /* never lose a buffer */
		else
			conn_received(&w->cc, c, bid, 0, len);
		left -= len;
		slot = (slot + 1) & (unsigned)g->mask;
		bid = g->br->bufs[slot].bid;
	} while (left);
}
