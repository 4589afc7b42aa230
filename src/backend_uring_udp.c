/* backend_uring_udp.c - the io_uring backend's UDP echo.
 *
 * Each UDP socket of the worker has one multishot recvmsg drawing from
 * the worker's UDP buffer ring (group UR_BGID_UDP, buffers sized for the
 * largest datagram).  A received buffer is parsed with liburing's
 * recvmsg_out helpers, checked (dgram_check), and queued on its socket's
 * FIFO; the echo is a sendmsg straight from that buffer (its own
 * msghdr, iovec and UDP_SEGMENT control area), and the buffer goes back
 * to the ring when the send completes.  When a chain is built, runs of
 * consecutive echoes to one peer (dgram_coalesce) go out as one sendmsg
 * led by the run's first buffer, UDP_SEGMENT = its length, with an iovec
 * per buffer of the run (the leader's run_iov, allocated with the send
 * areas); the whole run completes, is retried or is dropped with that one
 * CQE.  A run the kernel refuses (dgram_coalesce_failed) stays queued and
 * goes out one by one in the next chain.
 *
 * Order within a flow: a flow's datagrams all arrive on one socket, so
 * the sends of one socket go out in receive order.  Each socket has at
 * most one chain of sends in flight, linked (IOSQE_IO_LINK) so that the
 * kernel issues each only once the one before it completed; what
 * arrives meanwhile waits in the FIFO for the next chain.  A send
 * cancelled in a broken chain (-ECANCELED) or refused for now (-EAGAIN)
 * stays at its place in the FIFO and goes out in the next chain, which
 * after -EAGAIN starts with a POLLOUT poll instead of spinning.
 *
 * A receive that finds the ring empty ends with -ENOBUFS: the socket is
 * not re-armed until buffers have come back (the kernel's receive queue
 * holds the datagrams meanwhile), and each exhaustion is counted once.
 * A send the socket cannot take now does not come back as -EAGAIN: the
 * kernel waits for room and the chain behind it waits too, holding its
 * buffers; reading goes on only while the socket holds less than its
 * share of the ring (uu_share), so the overload ends up in that socket's
 * receive queue, not in echod's memory nor in the other sockets' way.
 * Drain and hand-over clear w->udp_reading (update_udp): the receives are
 * cancelled, what they had received and the queued echoes still go out,
 * and ur_udp_busy says when all is done.
 */
#include "backend_uring.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

#include "dgram.h"
#include "log.h"
#include "worker.h"

/* ur_utx.state */
enum { UT_FREE, UT_QUEUED, UT_INFLIGHT, UT_DONE };

#define UR_UDP_RETRY_MS 100     /* re-arm delay after repeated receive errors */

_Static_assert(DGRAM_COALESCE_MAX <= UINT8_MAX, "ur_utx.n holds a run's length");

static inline char *uu_buf(struct ur *ur, uint32_t bid)
{
	return ur->u.bufs + (size_t)bid * ur->u.size;
}

static void uu_buf_release(struct ur *ur, uint32_t bid)
{
	struct ur_group *g = &ur->g[UR_BGID_UDP];

	ur->u.tx[bid].state = UT_FREE;
	io_uring_buf_ring_add(g->br, uu_buf(ur, bid), ur->u.size, (unsigned short)bid,
			      g->mask, g->pending++);
	g->nfree++;
	ur->u.returned++;
}

static void uu_arm_recv(struct worker *w, unsigned i)
{
	struct ur *ur = w->be;
	struct ur_usock *s = &ur->u.s[i];
	struct io_uring_sqe *sqe = ur_sqe(w);

	io_uring_prep_recvmsg_multishot(sqe, w->udp_fds[i], &s->rmsg, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = UR_BGID_UDP;
	io_uring_sqe_set_data64(sqe, ud_make(UOP_URECV, 0, i));
	s->armed = true;
	s->cancelling = false;
}

static void uu_cancel_recv(struct worker *w, unsigned i)
{
	struct io_uring_sqe *sqe = ur_sqe(w);

	io_uring_prep_cancel64(sqe, ud_make(UOP_URECV, 0, i), 0);
	io_uring_sqe_set_data64(sqe, ud_make(UOP_CANCEL, 0, 0));
	((struct ur *)w->be)->u.s[i].cancelling = true;
}

/* ---- receive ---- */

/* A received buffer: queue its echo, or drop it (counted) and give the
 * buffer back. */
static void uu_received(struct worker *w, unsigned i, uint32_t bid, int res)
{
	struct ur *ur = w->be;
	struct ur_usock *s = &ur->u.s[i];
	struct ur_utx *tx = &ur->u.tx[bid];
	struct io_uring_recvmsg_out *o = io_uring_recvmsg_validate(uu_buf(ur, bid), res, &s->rmsg);
	struct msghdr cm;
	uint16_t gso = 0;
	uint32_t ovfl = 0;
	bool has_ovfl = false;
	void *payload;
	unsigned len;

	if (!o) {
		ctr_add(&w->cc.ctr->op_errors[WOP_RECV], 1);
		log_warning("worker %u: recvmsg fd %d: %d bytes, shorter than its header",
			    w->id, w->udp_fds[i], res);
		uu_buf_release(ur, bid);
		return;
	}
	payload = io_uring_recvmsg_payload(o, &s->rmsg);
	len = io_uring_recvmsg_payload_length(o, res, &s->rmsg);
	memset(&cm, 0, sizeof(cm));
	cm.msg_control = (char *)io_uring_recvmsg_name(o) + s->rmsg.msg_namelen;
	cm.msg_controllen = io_uring_recvmsg_cmsg_firsthdr(o, &s->rmsg) ? o->controllen : 0;
	cm.msg_flags = (int)o->flags;
	dgram_parse_cmsg(&cm, &gso, &ovfl, &has_ovfl);
	if (has_ovfl)
		dgram_kernel_drops(&w->dc, i, ovfl);
	dgram_received(&w->dc, len, gso);
	/* cut short: the payload (MSG_TRUNC), or the control data, which
	 * could have held the GRO segment size (MSG_CTRUNC) */
	if (o->flags & (MSG_TRUNC | MSG_CTRUNC)) {
		dgram_drop(&w->dc, DDROP_TRUNCATED, dgram_count(len, gso));
		uu_buf_release(ur, bid);
		return;
	}
	if (o->namelen > s->rmsg.msg_namelen) {
		/* a source address cut short (not IPv4 or IPv6): no reply */
		dgram_drop(&w->dc, DDROP_BAD_SOURCE, dgram_count(len, gso));
		uu_buf_release(ur, bid);
		return;
	}
	if (dgram_check(&w->dc, io_uring_recvmsg_name(o), (socklen_t)o->namelen,
			dgram_count(len, gso))) {
		uu_buf_release(ur, bid);
		return;
	}
	tx->iov.iov_base = payload;
	tx->iov.iov_len = len;
	memset(&tx->msg, 0, sizeof(tx->msg));
	tx->msg.msg_name = io_uring_recvmsg_name(o);
	tx->msg.msg_namelen = o->namelen;
	tx->gso = gso && len > gso ? gso : 0;
	tx->state = UT_QUEUED;
	tx->next = UR_UNONE;
	s->held++;
	if (s->q_tail == UR_UNONE)
		s->q_head = bid;
	else
		ur->u.tx[s->q_tail].next = bid;
	s->q_tail = bid;
}

static void uu_on_recv(struct worker *w, struct io_uring_cqe *cqe)
{
	struct ur *ur = w->be;
	unsigned i = ud_idx(cqe->user_data);
	struct ur_usock *s;
	int res = cqe->res;

	if (i >= w->n_udp)
		return;
	s = &ur->u.s[i];
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		uint32_t bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;

		ur->g[UR_BGID_UDP].nfree--;
		if (bid >= ur->u.nbufs) {
			log_error("worker %u: recvmsg fd %d: buffer id %u out of range",
				  w->id, w->udp_fds[i], bid);
		} else if (res <= 0) {
			uu_buf_release(ur, bid);     /* never lose a buffer */
		} else {
			s->errs = 0;
			uu_received(w, i, bid, res);
		}
	}
	if (cqe->flags & IORING_CQE_F_MORE)
		return;
	/* the multishot receive ended: ur_udp_sync re-arms it */
	s->armed = false;
	s->cancelling = false;
	if (res == -ENOBUFS) {
		s->starved = true;
		if (!ur->u.exhausted) {
			ur->u.exhausted = true;
			ctr_add(&w->cc.ctr->buf_exhausted, 1);
		}
	} else if (res < 0 && res != -ECANCELED) {
		ctr_add(&w->cc.ctr->op_errors[WOP_RECV], 1);
		if (s->errs++ == 0)
			log_errno(LOG_WARNING, res, "worker %u: recvmsg fd %d", w->id, w->udp_fds[i]);
	} else if (res >= 0 && w->udp_reading) {
		ctr_add(&w->cc.ctr->rearms, 1);
	}
}

/* ---- send ---- */

/* Give back the buffers of the FIFO's finished echoes (sent, or failed
 * for good): the kernel is done with them.  They are a prefix of the
 * FIFO: one chain in flight at a time, its head first, and its links
 * complete in order (a send cancelled or refused for now stays queued,
 * and so do all behind it), so the walk stops at the first unfinished. */
static void uu_reap(struct ur *ur, struct ur_usock *s)
{
	uint32_t b = s->q_head;

	while (b != UR_UNONE && ur->u.tx[b].state == UT_DONE) {
		uint32_t next = ur->u.tx[b].next;

		s->q_head = next;
		if (s->q_tail == b)
			s->q_tail = UR_UNONE;
		s->held--;
		uu_buf_release(ur, b);
		b = next;
	}
}

static void uu_desc(const struct ur_utx *tx, struct dgram_desc *d)
{
	d->peer = tx->msg.msg_name;
	d->peerlen = tx->msg.msg_namelen;
	d->len = tx->iov.iov_len;
	d->gso = tx->gso;
}

/* Make tx's send: its own echo, or the run of it and the queued echoes
 * after it (in flight with it).  Returns the buffer after the send's. */
static uint32_t uu_prep_run(struct ur *ur, struct dgram_ctx *dc, struct ur_utx *tx,
			    size_t seg_max)
{
	uint32_t b = tx->next;
	struct dgram_run run;
	struct dgram_desc d;
	uint16_t seg = tx->gso;
	size_t clen;

	uu_desc(tx, &d);
	if (dgram_run_begin(&run, &d, seg_max)) {
		for (; b != UR_UNONE; b = ur->u.tx[b].next) {
			struct ur_utx *m = &ur->u.tx[b];

			uu_desc(m, &d);
			if (!dgram_run_join(&run, &d))
				break;
			if (run.n == 2)
				tx->run_iov[0] = tx->iov;    /* touched only by a run */
			tx->run_iov[run.n - 1] = m->iov;
			m->state = UT_INFLIGHT;
		}
	}
	if (run.n > 1) {
		seg = (uint16_t)run.seg;
		tx->msg.msg_iov = tx->run_iov;
	} else {
		tx->msg.msg_iov = &tx->iov;
	}
	tx->msg.msg_iovlen = run.n;
	clen = dgram_put_segment(dc, tx->cbuf, seg, run.bytes);
	tx->msg.msg_controllen = clen;
	tx->msg.msg_control = clen ? tx->cbuf : NULL;
	tx->n = (uint8_t)run.n;
	tx->seg = clen ? seg : 0;
	tx->bytes = (uint32_t)run.bytes;
	tx->state = UT_INFLIGHT;
	return b;
}

/* Submit the socket's queued echoes as one chain, in order, unless a
 * chain is still in flight.  The chain is put in the SQ whole: a submit
 * in its middle would cut the link. */
static void uu_flush(struct worker *w, unsigned i)
{
	struct ur *ur = w->be;
	struct ur_usock *s = &ur->u.s[i];
	struct io_uring_sqe *sqe = NULL;
	/* a chain takes at most half the SQ (smaller when the CQ knob shrank it) */
	unsigned n = 0, need = 0, most = ur->ring.sq.ring_entries / 2;
	size_t seg_max = dgram_coalesce_limit(&w->dc, i);

	if (s->chain || s->q_head == UR_UNONE)
		return;
	for (uint32_t b = s->q_head; b != UR_UNONE && need < most; b = ur->u.tx[b].next)
		need++;
	need += s->poll_first;
	if (io_uring_sq_space_left(&ur->ring) < need) {
		int ret = io_uring_submit(&ur->ring);

		if (ret < 0)
			log_errno(LOG_WARNING, ret, "worker %u: io_uring_submit", w->id);
		if (io_uring_sq_space_left(&ur->ring) < need)
			return;     /* the next pass sends them */
	}
	if (s->poll_first) {
		sqe = ur_sqe(w);
		io_uring_prep_poll_add(sqe, w->udp_fds[i], POLLOUT);
		io_uring_sqe_set_data64(sqe, ud_make(UOP_UPOLL, 0, i));
		s->poll_first = false;
		s->chain++;
	}
	for (uint32_t b = s->q_head, next; b != UR_UNONE && n < most; b = next) {
		struct ur_utx *tx = &ur->u.tx[b];

		next = uu_prep_run(ur, &w->dc, tx, seg_max);
		if (sqe)
			sqe->flags |= IOSQE_IO_LINK;
		sqe = ur_sqe(w);
		io_uring_prep_sendmsg(sqe, w->udp_fds[i], &tx->msg, 0);
		io_uring_sqe_set_data64(sqe, ud_make(UOP_USEND, i, b));
		s->chain++;
		n++;
	}
}

/* The n buffers of a send, from its leader bid on: in state. */
static void uu_mark(struct ur *ur, uint32_t bid, unsigned n, uint8_t state)
{
	for (; n-- && bid != UR_UNONE; bid = ur->u.tx[bid].next)
		ur->u.tx[bid].state = state;
}

static void uu_on_send(struct worker *w, struct io_uring_cqe *cqe)
{
	struct ur *ur = w->be;
	unsigned i = ud_gen(cqe->user_data);
	uint32_t bid = ud_idx(cqe->user_data);
	struct ur_utx *tx;
	int res = cqe->res;

	if (i >= w->n_udp || bid >= ur->u.nbufs)
		return;
	tx = &ur->u.tx[bid];
	ur->u.s[i].chain--;
	if (res >= 0) {
		dgram_sent(&w->dc, tx->bytes, tx->seg);
		if (tx->n > 1)
			dgram_coalesced(&w->dc, tx->n);
		uu_mark(ur, bid, tx->n, UT_DONE);
	} else if (res == -ECANCELED || res == -EAGAIN || res == -EINTR) {
		/* a broken chain, or the socket cannot take it now: again,
		 * in its place */
		uu_mark(ur, bid, tx->n, UT_QUEUED);
		if (res == -EAGAIN)
			ur->u.s[i].poll_first = true;
	} else if (dgram_coalesce_failed(&w->dc, i, w->udp_fds[i], "sendmsg", tx->seg, tx->n,
					 -res)) {
		/* a run refused: the next chain sends its echoes one by one */
		uu_mark(ur, bid, tx->n, UT_QUEUED);
	} else {
		ctr_add(&w->cc.ctr->op_errors[WOP_SEND], 1);
		log_errno(LOG_DEBUG, res, "worker %u: sendmsg fd %d, %u bytes", w->id,
			  w->udp_fds[i], tx->bytes);
		dgram_drop(&w->dc, DDROP_SEND_ERROR, dgram_count(tx->bytes, tx->seg));
		uu_mark(ur, bid, tx->n, UT_DONE);
	}
}

/* ---- ops ---- */

void ur_udp_handle(struct worker *w, struct io_uring_cqe *cqe)
{
	struct ur *ur = w->be;
	unsigned i = ud_idx(cqe->user_data);

	switch (ud_op(cqe->user_data)) {
	case UOP_URECV:
		uu_on_recv(w, cqe);
		break;
	case UOP_USEND:
		uu_on_send(w, cqe);
		break;
	case UOP_UPOLL:
		if (i < w->n_udp) {
			ur->u.s[i].chain--;
			if (cqe->res < 0 && cqe->res != -ECANCELED)
				log_errno(LOG_DEBUG, cqe->res, "worker %u: poll fd %d",
					  w->id, w->udp_fds[i]);
		}
		break;
	case UOP_UTIMER:
		if (i < w->n_udp)
			ur->u.s[i].timer = false;
		break;
	default:
		break;
	}
}

/* Whether a starved receive may be re-armed: once a quarter of the
 * buffers are back, or whatever is free when none came back since the
 * last pass (the sends holding the rest are stuck: do not wait on
 * them).  Never on an empty ring. */
static bool uu_may_rearm(const struct ur *ur)
{
	uint32_t nfree = ur->g[UR_BGID_UDP].nfree;

	return nfree && (nfree >= ur->u.nbufs / 4 || ur->u.returned == 0);
}

/* A socket's share of the ring: the buffers its FIFO may hold before its
 * receive stops.  A socket whose echoes cannot go out (its sends wait for
 * room) would otherwise take every buffer and starve the worker's other
 * UDP sockets: with its receive stopped, its own kernel queue takes the
 * overload, as the contract asks.  It reads again once its FIFO is down
 * to half its share. */
static uint32_t uu_share(const struct worker *w, const struct ur *ur)
{
	uint32_t share = w->n_udp ? ur->u.nbufs / w->n_udp : ur->u.nbufs;

	return share < 8 ? 8 : share;
}

/* A receive that failed again right after its re-arm waits a moment. */
static void uu_arm_timer(struct worker *w, unsigned i)
{
	struct ur *ur = w->be;
	struct io_uring_sqe *sqe = ur_sqe(w);

	ur->u.delay.tv_sec = 0;
	ur->u.delay.tv_nsec = UR_UDP_RETRY_MS * 1000000LL;
	io_uring_prep_timeout(sqe, &ur->u.delay, 0, 0);
	io_uring_sqe_set_data64(sqe, ud_make(UOP_UTIMER, 0, i));
	ur->u.s[i].timer = true;
}

void ur_udp_sync(struct worker *w)
{
	struct ur *ur = w->be;
	struct ur_group *g = &ur->g[UR_BGID_UDP];
	bool rearmed = false;

	/* the echoes sent: their buffers back before any receive is armed
	 * (and published before it is submitted) */
	for (unsigned i = 0; i < w->n_udp; i++)
		uu_reap(ur, &ur->u.s[i]);
	if (g->pending) {
		io_uring_buf_ring_advance(g->br, g->pending);
		g->pending = 0;
	}
	for (unsigned i = 0; i < w->n_udp; i++) {
		struct ur_usock *s = &ur->u.s[i];

		if (w->n_udp > 1) {
			if (s->held >= uu_share(w, ur))
				s->capped = true;
			else if (s->held <= uu_share(w, ur) / 2)
				s->capped = false;
		}
		if (!w->udp_reading || s->capped) {
			if (s->armed && !s->cancelling)
				uu_cancel_recv(w, i);
		} else if (!s->armed && !s->timer) {
			if (s->errs > 1) {
				uu_arm_timer(w, i);
				s->errs = 1;
			} else if (!s->starved || uu_may_rearm(ur)) {
				if (s->starved) {
					s->starved = false;
					ctr_add(&w->cc.ctr->rearms, 1);
					rearmed = true;
				}
				uu_arm_recv(w, i);
			}
		}
		uu_flush(w, i);
	}
	if (rearmed)
		ur->u.exhausted = false;
	ur->u.returned = 0;
}

bool ur_udp_busy(struct worker *w)
{
	struct ur *ur = w->be;

	for (unsigned i = 0; i < w->n_udp; i++) {
		const struct ur_usock *s = &ur->u.s[i];

		if (s->armed || s->chain || s->q_head != UR_UNONE)
			return true;
	}
	return false;
}

void ur_udp_init(struct worker *w)
{
	struct ur *ur = w->be;

	for (unsigned i = 0; i < w->n_udp; i++) {
		struct ur_usock *s = &ur->u.s[i];

		memset(s, 0, sizeof(*s));
		s->rmsg.msg_namelen = UR_UDP_NAMELEN;
		s->rmsg.msg_controllen = DGRAM_RX_CMSG_SPACE;
		s->q_head = s->q_tail = UR_UNONE;
	}
	for (uint32_t b = 0; b < ur->u.nbufs; b++)
		uu_buf_release(ur, b);
	ur->u.returned = 0;
	ur_udp_sync(w);
}

/* What is still queued will not be sent: count it, as the contract says. */
void ur_udp_fini(struct worker *w)
{
	struct ur *ur = w->be;

	for (unsigned i = 0; i < w->n_udp; i++) {
		struct ur_usock *s = &ur->u.s[i];

		for (uint32_t b = s->q_head; b != UR_UNONE; b = ur->u.tx[b].next) {
			struct ur_utx *tx = &ur->u.tx[b];

			if (tx->state != UT_DONE)
				dgram_drop(&w->dc, DDROP_SEND_ERROR, dgram_count(tx->iov.iov_len, tx->gso));
		}
		s->q_head = s->q_tail = UR_UNONE;
		s->held = 0;
	}
}
