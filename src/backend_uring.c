/* backend_uring.c - the io_uring backend.
 *
 * Multishot accept per listener; multishot recv per connection into a
 * registered provided-buffer ring (group 0) made of the worker's pool;
 * the echo is sent straight from the received buffer, which goes back
 * to the ring once its bytes are sent.  One send in flight per
 * connection.  Connection context packed into user_data:
 *     op (8 bits) | generation (24 bits) | slot index (32 bits)
 * and a slot is only freed once none of its ops can complete any more,
 * so a late completion never touches a reused slot.
 *
 * The ring is created in the worker's thread, disabled, with
 * SINGLE_ISSUER + DEFER_TASKRUN (or COOP_TASKRUN on older kernels),
 * restricted to the ops used here, then enabled; its fd is registered
 * (backend_uring_setup.c).
 * Buffer exhaustion (-ENOBUFS) ends a connection's multishot recv: the
 * connection waits on a list and is re-armed only as buffers come back.
 * The UDP sockets have their own buffer ring (backend_uring_udp.c).
 */
#include "backend_uring.h"

#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backend.h"
#include "conn.h"
#include "log.h"
#include "worker.h"

/* conn.bstate */
#define UB_RECV        (1u << 0)   /* multishot recv armed */
#define UB_SEND        (1u << 1)   /* a send in flight */
#define UB_RECV_CANCEL (1u << 2)   /* cancel of the recv issued */
#define UB_CLOSING     (1u << 3)   /* close once no op is left */
#define UB_CANCEL_ALL  (1u << 4)   /* cancel of every op in flight issued */
#define UB_STARVED     (1u << 5)   /* waiting for buffers (ENOBUFS) */
#define UB_ONCE        (1u << 6)   /* the recv is a single-shot from the reserve */
#define UB_CAPPED      (1u << 7)   /* the multishot recv carries a byte limit */
#define UB_POLL        (1u << 8)   /* a POLLOUT poll in flight: denied the reserve
				      while its socket was full, retried when writable */
#define UB_BUNDLE      (1u << 9)   /* the multishot recv is a bundle */
#define UB_INFLIGHT    (UB_RECV | UB_SEND | UB_POLL)

#define WAIT offsetof(struct conn, wait)


/* ---- submission helpers ---- */

struct io_uring_sqe *ur_sqe(struct worker *w)
{
	struct ur *ur = w->be;
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ur->ring);

	if (!sqe) {
		int ret = io_uring_submit(&ur->ring);

		if (ret < 0)
			log_errno(LOG_WARNING, ret, "worker %u: io_uring_submit", w->id);
		sqe = io_uring_get_sqe(&ur->ring);
		if (!sqe) {
			/* cannot happen with a drained SQ; fail loudly, never spin */
			log_error("worker %u: io_uring SQ full after submit", w->id);
			abort();
		}
	}
	return sqe;
}

static void ur_arm_accept(struct worker *w, unsigned i)
{
	struct ur *ur = w->be;
	struct io_uring_sqe *sqe = ur_sqe(w);

	io_uring_prep_multishot_accept(sqe, w->listen_fds[i], NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, ud_make(UOP_ACCEPT, 0, i));
	ur->accept_armed[i] = true;
}

/* Cancel the op(s) with user_data ud; flags: 0 or IORING_ASYNC_CANCEL_ALL. */
static void ur_cancel_ud(struct worker *w, uint64_t ud, int flags)
{
	struct io_uring_sqe *sqe = ur_sqe(w);

	io_uring_prep_cancel64(sqe, ud, flags);
	io_uring_sqe_set_data64(sqe, ud_make(UOP_CANCEL, 0, 0));
}

static void ur_arm_ctl(struct worker *w)
{
	struct ur *ur = w->be;
	struct io_uring_sqe *sqe = ur_sqe(w);

	io_uring_prep_read(sqe, w->ctl_fd, &ur->ctl_val, sizeof(ur->ctl_val), 0);
	io_uring_sqe_set_data64(sqe, ud_make(UOP_CTL, 0, 0));
}

/* Bytes c may still take before backpressure stops it. */
static uint32_t ur_allowance(struct worker *w, const struct conn *c)
{
	uint64_t by_bytes = w->cc.max_pending > c->pending ? w->cc.max_pending - c->pending : 0;
	uint64_t by_bufs = w->cc.max_bufs > c->nbufs ? (uint64_t)(w->cc.max_bufs - c->nbufs) * w->cc.pool.size : 0;
	uint64_t a = by_bytes < by_bufs ? by_bytes : by_bufs;

	return a > INT32_MAX ? INT32_MAX : (uint32_t)a;
}

/* A multishot recv from the main group, limited (where the kernel can)
 * to what backpressure allows: one client cannot drain the ring in one
 * kernel pass.  A bundle where the kernel has them (with the limit): what
 * the socket holds, up to that limit, in one completion. */
static void ur_arm_recv(struct worker *w, struct conn *c)
{
	struct ur *ur = w->be;
	struct io_uring_sqe *sqe = ur_sqe(w);

	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = UR_BGID_MAIN;
	c->bstate &= ~(UB_ONCE | UB_CAPPED | UB_BUNDLE);
	if (ur->bundle) {
		sqe->ioprio |= IORING_RECVSEND_BUNDLE;
		c->bstate |= UB_BUNDLE;
	}
	if (ur->mshot_limit) {
		uint32_t allow = ur_allowance(w, c);

		/* sqe->optlen in newer uapi headers: the same field */
		sqe->file_index = allow ? allow : 1;
		c->bstate |= UB_CAPPED;
	}
	io_uring_sqe_set_data64(sqe, ud_make(UOP_RECV, c->gen, c->idx));
	c->bstate |= UB_RECV;
}

/* One buffer from the reserve group, for a connection holding none. */
static void ur_arm_recv_reserve(struct worker *w, struct conn *c)
{
	struct io_uring_sqe *sqe = ur_sqe(w);

	io_uring_prep_recv(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = UR_BGID_RESV;
	io_uring_sqe_set_data64(sqe, ud_make(UOP_RECV, c->gen, c->idx));
	c->bstate = (c->bstate & ~(UB_CAPPED | UB_BUNDLE)) | UB_RECV | UB_ONCE;
}

/* Send the unsent bytes: the head buffer alone with send, or up to
 * UR_TX_IOV buffers in one sendmsg, so that a request spread over
 * several buffers goes out in one op (and one TCP push). */
static void ur_send(struct worker *w, struct conn *c)
{
	struct ur *ur = w->be;
	struct io_uring_sqe *sqe = ur_sqe(w);
	struct ur_tx *tx = &ur->tx[c->idx];
	int n = conn_send_iov(&w->cc, c, tx->iov, UR_TX_IOV);
	uint32_t len = 0;

	for (int i = 0; i < n; i++)
		len += (uint32_t)tx->iov[i].iov_len;
	if (n == 1) {
		io_uring_prep_send(sqe, c->fd, tx->iov[0].iov_base, len, MSG_NOSIGNAL);
	} else {
		memset(&tx->msg, 0, sizeof(tx->msg));
		tx->msg.msg_iov = tx->iov;
		tx->msg.msg_iovlen = (size_t)n;
		io_uring_prep_sendmsg(sqe, c->fd, &tx->msg, MSG_NOSIGNAL);
	}
	c->bdata = len;
	io_uring_sqe_set_data64(sqe, ud_make(UOP_SEND, c->gen, c->idx));
	c->bstate |= UB_SEND;
}

/* ---- connection state ---- */

/* Put c on the list of connections waiting for buffers (at its tail). */
static void ur_starve(struct worker *w, struct conn *c)
{
	struct ur *ur = w->be;

	if (!(c->bstate & UB_STARVED)) {
		c->bstate |= UB_STARVED;
		ilist_push_tail(w, &ur->starved, c, WAIT);
		ur->nstarved++;
	}
}

/* Take c off the list of connections waiting for buffers. */
static void ur_unstarve(struct worker *w, struct conn *c)
{
	struct ur *ur = w->be;

	if (c->bstate & UB_STARVED) {
		ilist_remove(w, &ur->starved, c, WAIT);
		c->bstate &= ~UB_STARVED;
		ur->nstarved--;
	}
}

static void ur_finish_close(struct worker *w, struct conn *c)
{
	ur_unstarve(w, c);
	worker_conn_free(w, c);         /* closes c->fd */
}

/* Cancel every op in flight on c (once); their completions follow.
 * By user_data, not by fd: the kernel looks a user_data up in its cancel
 * hash, but IORING_ASYNC_CANCEL_FD scans every armed request of the ring,
 * so closing N connections at once (an idle timeout, a drain) cost N x N
 * inside one io_uring_enter: seconds of stalled loop at 10,000. */
static void ur_cancel_all(struct worker *w, struct conn *c)
{
	if (c->bstate & UB_CANCEL_ALL)
		return;
	if (c->bstate & UB_RECV)
		ur_cancel_ud(w, ud_make(UOP_RECV, c->gen, c->idx), IORING_ASYNC_CANCEL_ALL);
	if (c->bstate & UB_SEND)
		ur_cancel_ud(w, ud_make(UOP_SEND, c->gen, c->idx), IORING_ASYNC_CANCEL_ALL);
	if (c->bstate & UB_POLL)
		ur_cancel_ud(w, ud_make(UOP_POLL, c->gen, c->idx), IORING_ASYNC_CANCEL_ALL);
	c->bstate |= UB_CANCEL_ALL;
}

/* Close c once no op of its can complete any more. */
static void ur_close(struct worker *w, struct conn *c)
{
	c->bstate |= UB_CLOSING;
	ur_unstarve(w, c);
	if (!(c->bstate & UB_INFLIGHT)) {
		ur_finish_close(w, c);
		return;
	}
	ur_cancel_all(w, c);
}

/* Whether c's socket takes more bytes now.  An io_uring send to a full
 * socket waits for room and then completes whole, so a client that does
 * not read is seldom seen to block (CONN_SLOW): before it is given one of
 * the pool's reserve buffers, ask the socket (this path runs only when the
 * main buffers are exhausted).  If it is full, a POLLOUT poll brings c
 * back when its client has read (c also waits for main buffers). */
static bool ur_sock_writable(struct worker *w, struct conn *c)
{
	struct pollfd p = { .fd = c->fd, .events = POLLOUT };
	struct io_uring_sqe *sqe;
	int n;

	/* a poll in flight completes when the socket becomes writable: no
	 * need to ask again each time the starved list is walked */
	if (c->bstate & UB_POLL)
		return false;
	n = poll(&p, 1, 0);
	if (n > 0 && (p.revents & POLLOUT))
		return true;
	if (n < 0)
		log_errno(LOG_DEBUG, errno, "worker %u: poll fd %d", w->id, c->fd);
	sqe = ur_sqe(w);
	io_uring_prep_poll_add(sqe, c->fd, POLLOUT);
	io_uring_sqe_set_data64(sqe, ud_make(UOP_POLL, c->gen, c->idx));
	c->bstate |= UB_POLL;
	return false;
}

/* Act on conn_next(). */
static void ur_process(struct worker *w, struct conn *c)
{
	struct ur *ur = w->be;
	unsigned next;

	if (c->bstate & UB_CLOSING) {
		if (!(c->bstate & UB_INFLIGHT))
			ur_finish_close(w, c);
		return;
	}
	if (w->state == WORKER_HANDOVER && w->quiesce_sent && !(c->flags & CONN_FAILED))
		return;     /* being handed over: no new op */
	next = conn_next(&w->cc, c);
	if (next & CONN_NEXT_SHUTDOWN) {
		if (shutdown(c->fd, SHUT_WR) < 0) {
			ctr_add(&w->cc.ctr->op_errors[WOP_SHUTDOWN], 1);
			log_errno(LOG_DEBUG, errno, "worker %u: shutdown fd %d", w->id, c->fd);
		}
		conn_shut_done(&w->cc, c);
		next = conn_next(&w->cc, c);
	}
	if (next & CONN_NEXT_CLOSE) {
		ur_close(w, c);
		return;
	}
	if ((next & CONN_NEXT_SEND) && !(c->bstate & UB_SEND))
		ur_send(w, c);
	if (next & CONN_NEXT_READ) {
		if (c->bstate & (UB_RECV | UB_STARVED))
			return;
		if (ur->g[UR_BGID_MAIN].nfree) {
			ur_arm_recv(w, c);
		} else if (conn_may_use_reserve(c) && ur->g[UR_BGID_RESV].nfree) {
			if (ur_sock_writable(w, c)) {
				ur_arm_recv_reserve(w, c);
			} else {
				/* its socket is full: its poll brings it back;
				 * off the list meanwhile, no one waits behind it */
				conn_no_buffer(&w->cc, c);
			}
		} else {
			conn_no_buffer(&w->cc, c);
			ur_starve(w, c);
		}
	} else if ((c->bstate & UB_RECV) && !(c->bstate & UB_RECV_CANCEL)) {
		/* backpressure (or drain): stop the multishot recv */
		ur_cancel_ud(w, ud_make(UOP_RECV, c->gen, c->idx), 0);
		c->bstate |= UB_RECV_CANCEL;
	} else {
		ur_unstarve(w, c);
	}
}

static void ur_update_conn(struct worker *w, struct conn *c)
{
	ur_process(w, c);
}

static void ur_adopt_conn(struct worker *w, struct conn *c)
{
	c->bstate = 0;
	ur_process(w, c);
}

static bool ur_conn_busy(struct worker *w, struct conn *c, bool cancel)
{
	bool busy = c->bstate & UB_INFLIGHT;

	ur_unstarve(w, c);
	if (busy && cancel)
		ur_cancel_all(w, c);
	return busy;
}

/* An armed or cancelled multishot accept has not posted its last CQE. */
static bool ur_accept_busy(struct worker *w)
{
	struct ur *ur = w->be;

	for (unsigned i = 0; i < w->n_listen; i++)
		if (ur->accept_armed[i])
			return true;
	return false;
}

static void ur_update_accept(struct worker *w)
{
	struct ur *ur = w->be;
	bool want = worker_accept_allowed(w);

	for (unsigned i = 0; i < w->n_listen; i++) {
		if (want && !ur->accept_armed[i])
			ur_arm_accept(w, i);
		else if (!want && ur->accept_armed[i])
			ur_cancel_ud(w, ud_make(UOP_ACCEPT, 0, i), 0);
	}
	w->accepting = want;
}

/* ---- completions ---- */

/* c's receive was refused with EINVAL: if it used the multishot byte
 * limit (6.15) or, failing that, a bundle (6.10), do without it from now
 * on (a kernel, or a filter, that refuses it) and say so once.  false:
 * it used neither, the error is c's. */
static bool ur_drop_feature(struct worker *w, const struct conn *c)
{
	struct ur *ur = w->be;

	if (c->bstate & UB_CAPPED) {
		if (ur->mshot_limit)
			log_info("worker %u: io_uring recv with a multishot byte limit: EINVAL; "
				 "going on without the limit", w->id);
		ur->mshot_limit = false;
	} else if (c->bstate & UB_BUNDLE) {
		if (ur->bundle)
			log_info("worker %u: io_uring recv bundle: EINVAL; going on without bundles",
				 w->id);
		ur->bundle = false;
	} else {
		return false;
	}
	return true;
}

static void ur_on_recv(struct worker *w, struct io_uring_cqe *cqe)
{
	struct conn *c = worker_conn_get(w, ud_idx(cqe->user_data), ud_gen(cqe->user_data));
	bool more = cqe->flags & IORING_CQE_F_MORE;
	int res = cqe->res;

	if (cqe->flags & IORING_CQE_F_BUFFER)
		ur_take_buffers(w, c, cqe->flags >> IORING_CQE_BUFFER_SHIFT, res);
	if (!c)
		return;
	if (!more)
		c->bstate &= ~(UB_RECV | UB_RECV_CANCEL);
	if (res == -EINVAL && ur_drop_feature(w, c)) {
		ur_process(w, c);
		return;
	}
	if (res == 0) {
		conn_eof(&w->cc, c);
	} else if (res == -ENOBUFS) {
		conn_no_buffer(&w->cc, c);
		if (!more && !(c->bstate & UB_CLOSING))
			ur_starve(w, c);
	} else if (res < 0 && res != -ECANCELED) {
		ctr_add(&w->cc.ctr->op_errors[WOP_RECV], 1);
		log_errno(LOG_DEBUG, res, "worker %u: recv fd %d", w->id, c->fd);
		conn_fail(&w->cc, c, res);
	} else if (res > 0 && !more && !(c->bstate & (UB_CLOSING | UB_ONCE))) {
		ctr_add(&w->cc.ctr->rearms, 1);   /* multishot ended (its byte limit, ...) */
	}
	ur_process(w, c);
}

static void ur_on_send(struct worker *w, struct io_uring_cqe *cqe)
{
	struct conn *c = worker_conn_get(w, ud_idx(cqe->user_data), ud_gen(cqe->user_data));
	int res = cqe->res;

	if (!c)
		return;
	c->bstate &= ~UB_SEND;
	if (res > 0) {
		if (!(c->flags & CONN_FAILED)) {
			conn_sent(&w->cc, c, (uint32_t)res);
			if ((uint32_t)res < c->bdata)
				conn_send_blocked(&w->cc, c);   /* the socket is full */
			else
				conn_send_whole(&w->cc, c);
		}
	} else if (res != -ECANCELED) {
		ctr_add(&w->cc.ctr->op_errors[WOP_SEND], 1);
		log_errno(LOG_DEBUG, res ? res : -EIO, "worker %u: send fd %d", w->id, c->fd);
		conn_fail(&w->cc, c, res ? res : -EIO);
	}
	ur_process(w, c);
}

/* c's socket became writable (or the poll ended): try the reserve again. */
static void ur_on_poll(struct worker *w, struct io_uring_cqe *cqe)
{
	struct conn *c = worker_conn_get(w, ud_idx(cqe->user_data), ud_gen(cqe->user_data));

	if (!c)
		return;
	c->bstate &= ~UB_POLL;
	if (cqe->res < 0 && cqe->res != -ECANCELED)
		log_errno(LOG_DEBUG, cqe->res, "worker %u: poll fd %d", w->id, c->fd);
	ur_unstarve(w, c);
	ur_process(w, c);
}

static void ur_on_accept(struct worker *w, struct io_uring_cqe *cqe)
{
	struct ur *ur = w->be;
	unsigned i = ud_idx(cqe->user_data);
	int res = cqe->res;

	if (i >= w->n_listen)
		return;
	if (!(cqe->flags & IORING_CQE_F_MORE))
		ur->accept_armed[i] = false;
	if (res >= 0 && w->state == WORKER_RUNNING && worker_fd_reserved(w, res)) {
		close(res);
		res = -EMFILE;
	}
	if (res >= 0) {
		struct conn *c = worker_conn_new(w, res);

		if (c)
			ur_process(w, c);
	} else if (res != -ECANCELED && w->state == WORKER_RUNNING) {
		if (worker_accept_error(w, res)) {
			w->accepting = false;
			if (ur->accept_armed[i])
				ur_cancel_ud(w, ud_make(UOP_ACCEPT, 0, i), 0);
			for (unsigned j = 0; j < w->n_listen; j++)
				if (j != i && ur->accept_armed[j])
					ur_cancel_ud(w, ud_make(UOP_ACCEPT, 0, j), 0);
			return;
		}
		if (res != -EAGAIN)
			ctr_add(&w->cc.ctr->op_errors[WOP_ACCEPT], 1);
	}
	if (!ur->accept_armed[i] && w->accepting && worker_accept_allowed(w)) {
		ctr_add(&w->cc.ctr->rearms, 1);
		ur_arm_accept(w, i);
	}
}

static void ur_handle(struct worker *w, struct io_uring_cqe *cqe)
{
	switch (ud_op(cqe->user_data)) {
	case UOP_RECV:
		ur_on_recv(w, cqe);
		break;
	case UOP_SEND:
		ur_on_send(w, cqe);
		break;
	case UOP_ACCEPT:
		ur_on_accept(w, cqe);
		break;
	case UOP_POLL:
		ur_on_poll(w, cqe);
		break;
	case UOP_URECV:
	case UOP_USEND:
	case UOP_UPOLL:
	case UOP_UTIMER:
		ur_udp_handle(w, cqe);
		break;
	case UOP_CTL:
		if (cqe->res < 0 && cqe->res != -ECANCELED)
			log_errno(LOG_WARNING, cqe->res, "worker %u: read eventfd", w->id);
		worker_control(w);
		ur_arm_ctl(w);
		break;
	case UOP_CANCEL:
		if (cqe->res < 0 && cqe->res != -ENOENT && cqe->res != -EALREADY) {
			ctr_add(&w->cc.ctr->op_errors[WOP_CANCEL], 1);
			log_errno(LOG_DEBUG, cqe->res, "worker %u: async cancel", w->id);
		}
		break;
	case UOP_NONE:
		break;
	}
}

/* Give returned buffers to the connections that ran out, oldest first.
 * Only a connection that arms a recv spends the budget (one buffer it
 * will take): one that may not take a buffer now (paused by backpressure,
 * denied the reserve) leaves the list or goes back to its tail, and the
 * walk goes on, so that a newcomer the reserve would serve never waits
 * behind them.  Each connection is visited once a walk. */
static void ur_feed_starved(struct worker *w)
{
	struct ur *ur = w->be;
	uint32_t budget = w->cc.pool.nfree;
	uint32_t visits = ur->nstarved;

	while (budget && visits-- && !ilist_empty(&ur->starved)) {
		struct conn *c = &w->conns[ur->starved.head];

		ur_unstarve(w, c);
		ur_process(w, c);
		if (c->bstate & UB_RECV) {
			ctr_add(&w->cc.ctr->rearms, 1);
			budget--;
		}
	}
}

/* ---- lifecycle ---- */

static int ur_init(struct worker *w)
{
	struct ur *ur;
	int err;

	err = ur_setup(w, &ur);
	if (err)
		return err;
	ilist_init(&ur->starved);
	ur->nstarved = 0;
	w->be = ur;
	w->cc.buf_release = ur_buf_release;
	/* every buffer to the kernel */
	w->cc.pool.nfree = 0;
	for (uint32_t b = 0; b < w->buffer_count; b++)
		ur_buf_release(&w->cc, b);
	ur_udp_init(w);
	ur_publish_buffers(ur);
	ur_arm_ctl(w);
	ur_update_accept(w);
	log_info("worker %u: io_uring: %s", w->id, ur->features);
	return 0;
}

static int ur_run(struct worker *w)
{
	struct ur *ur = w->be;
	unsigned last = 0;      /* completions the last wait brought */

	while (!worker_finished(w)) {
		struct __kernel_timespec ts, *tsp = NULL;
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		int timeout = worker_wait_ms(w);
		uint32_t batch_us = worker_batch_wait_us(w, ur->min_timeout);
		bool batch;
		int ret;

		ur_publish_buffers(ur);
		if (timeout >= 0) {
			ts.tv_sec = timeout / 1000;
			ts.tv_nsec = (long long)(timeout % 1000) * 1000000;
			tsp = &ts;
		}
		/* batch_wait_us: under load (the last wait brought several
		 * completions), wait for more; a lone connection's is not held */
		batch = batch_us && last >= UR_BATCH_FROM && timeout != 0;
		if (batch)
			ret = ur_wait_batch(ur, UR_BATCH_MAX, batch_us, tsp);
		else
			ret = io_uring_submit_and_wait_timeout(&ur->ring, &cqe, 1, tsp, NULL);
		last = io_uring_cq_ready(&ur->ring);
		worker_woke(w, last);
		if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY && ret != -EAGAIN) {
			log_errno(LOG_ERR, ret, "worker %u: %s", w->id,
				  batch ? "io_uring_enter (min-wait)" : "io_uring_submit_and_wait_timeout");
			return ret;
		}
		if (io_uring_cq_has_overflow(&ur->ring))
			ctr_add(&w->cc.ctr->cq_overflow, 1);
		io_uring_for_each_cqe(&ur->ring, head, cqe) {
			ur_handle(w, cqe);
			n++;
		}
		io_uring_cq_advance(&ur->ring, n);
		worker_tick(w);
		ur_feed_starved(w);     /* after the tick: its closes free buffers too */
		ur_udp_sync(w);
	}
	return 0;
}

static void ur_fini(struct worker *w)
{
	struct ur *ur = w->be;

	/* the ring's teardown cancels whatever is still in flight */
	while (!ilist_empty(&w->lru)) {
		struct conn *c = &w->conns[w->lru.head];

		ur_unstarve(w, c);
		conn_fail(&w->cc, c, 0);
		worker_conn_free(w, c);
	}
	ur_udp_fini(w);
	ur_teardown(ur);
	w->be = NULL;
}

const struct backend_ops backend_io_uring = {
	.name = "io_uring",
	.probe = ur_probe,
	.init = ur_init,
	.run = ur_run,
	.update_conn = ur_update_conn,
	.update_accept = ur_update_accept,
	.adopt_conn = ur_adopt_conn,
	.conn_busy = ur_conn_busy,
	.accept_busy = ur_accept_busy,
	.update_udp = ur_udp_sync,
	.udp_busy = ur_udp_busy,
	.fini = ur_fini,
};

