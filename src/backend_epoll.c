/* backend_epoll.c - the epoll backend.
 *
 * Connections are registered once, edge-triggered, for EPOLLIN, EPOLLOUT
 * and EPOLLRDHUP; the backend remembers readiness (EB_READABLE,
 * EB_WRITABLE) and acts on conn_next(), so a connection paused by
 * backpressure or waiting for a buffer costs no wake-up and no epoll_ctl.
 * The pool's reserve goes only to a connection whose socket takes more
 * bytes (asked with poll() on that path alone): one that is full waits for
 * its EPOLLOUT edge, off the wait list, so a newcomer is not queued behind
 * it.
 * Listeners are level-triggered (EPOLLEXCLUSIVE when several workers
 * share them) and removed from the set while accepting is paused.
 * The UDP sockets are served by backend_epoll_udp.c (backend_epoll.h):
 * edge-triggered, each watched for what it needs now (EPOLL_CTL_MOD).
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "backend.h"
#include "backend_epoll.h"
#include "conn.h"
#include "log.h"
#include "worker.h"

#define EP_EVENTS      256
#define EP_ACCEPT_MAX  64     /* accepts per listener wake-up */
#define EP_READ_BUDGET 16     /* reads per connection per turn */
#define EP_IOV_MAX     64

/* epoll_event.data.u64: kind in the top bits */
#define TAG_CONN   0ull
#define TAG_LISTEN 1ull
#define TAG_CTL    2ull
#define TAG_UDP    3ull
#define TAG_SHIFT  62

/* conn.bstate */
#define EB_READABLE  (1u << 0)
#define EB_WRITABLE  (1u << 1)
#define EB_WAITBUF   (1u << 2)   /* on the buffer-wait list */
#define EB_READY     (1u << 3)   /* on the ready list (budget spent) */
#define EB_RDHUP     (1u << 4)   /* the peer's FIN (or an error) is queued */

#define WAIT offsetof(struct conn, wait)

struct ep {
	int epfd;
	struct ilist waitbuf;        /* readable, no free buffer: served first come, first served */
	struct ilist ready;          /* readable, budget spent this turn */
	struct conn *feeding;        /* the waiter being given a buffer now */
	struct epu *udp;             /* the UDP path (backend_epoll_udp.c) */
	struct epoll_event ev[EP_EVENTS];
};

static inline uint64_t conn_key(const struct conn *c)
{
	return (uint64_t)c->idx | ((uint64_t)c->gen << 32);
}

static void ep_buf_release(struct conn_ctx *cc, uint32_t bid)
{
	bufpool_put(&cc->pool, bid);
}

static int ep_probe(const struct echod_config *cfg, char *why, size_t whylen)
{
	int fd = epoll_create1(EPOLL_CLOEXEC);

	(void)cfg;
	if (fd < 0) {
		int err = errno;

		snprintf(why, whylen, "epoll_create1: %s", strerror(err));
		return -err;
	}
	close(fd);
	return 0;
}

static void ep_listeners(struct worker *w, bool arm)
{
	struct ep *ep = w->be;

	for (unsigned i = 0; i < w->n_listen; i++) {
		struct epoll_event ev = {
			.events = EPOLLIN | (w->shared_listeners ? EPOLLEXCLUSIVE : 0),
			.data.u64 = (TAG_LISTEN << TAG_SHIFT) | i,
		};

		if (arm) {
			if (epoll_ctl(ep->epfd, EPOLL_CTL_ADD, w->listen_fds[i], &ev) < 0)
				log_errno(LOG_ERR, errno, "worker %u: epoll_ctl ADD listener fd %d",
					  w->id, w->listen_fds[i]);
		} else if (epoll_ctl(ep->epfd, EPOLL_CTL_DEL, w->listen_fds[i], NULL) < 0) {
			log_errno(LOG_ERR, errno, "worker %u: epoll_ctl DEL listener fd %d",
				  w->id, w->listen_fds[i]);
		}
	}
	w->accepting = arm;
}

int ep_udp_watch(struct worker *w, unsigned i, unsigned events, bool add)
{
	struct ep *ep = w->be;
	struct epoll_event ev = {
		.events = EPOLLET | (events & EPU_IN ? EPOLLIN : 0u) | (events & EPU_OUT ? EPOLLOUT : 0u),
		.data.u64 = (TAG_UDP << TAG_SHIFT) | i,
	};

	if (epoll_ctl(ep->epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, w->udp_fds[i], &ev) < 0) {
		int err = errno;

		log_errno(LOG_ERR, err, "worker %u: epoll_ctl %s UDP fd %d", w->id,
			  add ? "ADD" : "MOD", w->udp_fds[i]);
		return -err;
	}
	return 0;
}

static void ep_update_udp(struct worker *w)
{
	struct ep *ep = w->be;

	epu_update(w, ep->udp);
}

static bool ep_udp_busy(struct worker *w)
{
	struct ep *ep = w->be;

	return epu_busy(ep->udp);
}

static void ep_update_accept(struct worker *w)
{
	bool want = worker_accept_allowed(w);

	if (want != w->accepting)
		ep_listeners(w, want);
}

static void ep_close(struct worker *w, struct conn *c)
{
	struct ep *ep = w->be;

	if (c->bstate & EB_WAITBUF)
		ilist_remove(w, &ep->waitbuf, c, WAIT);
	if (c->bstate & EB_READY)
		ilist_remove(w, &ep->ready, c, WAIT);
	worker_conn_free(w, c);         /* closes c->fd */
}

/* Send what is queued; a short send means the socket is full. */
static void ep_send(struct worker *w, struct conn *c)
{
	struct iovec iov[EP_IOV_MAX];
	struct msghdr msg = { .msg_iov = iov };
	ssize_t n;

	msg.msg_iovlen = (size_t)conn_send_iov(&w->cc, c, iov, EP_IOV_MAX);
	n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			c->bstate &= ~EB_WRITABLE;
			conn_send_blocked(&w->cc, c);
		} else if (errno != EINTR) {
			ctr_add(&w->cc.ctr->op_errors[WOP_SEND], 1);
			log_errno(LOG_DEBUG, errno, "worker %u: sendmsg fd %d", w->id, c->fd);
			conn_fail(&w->cc, c, -errno);
		}
		return;
	}
	size_t want = 0;

	for (size_t i = 0; i < msg.msg_iovlen; i++)
		want += iov[i].iov_len;
	conn_sent(&w->cc, c, (uint32_t)n);
	if ((size_t)n < want) {
		c->bstate &= ~EB_WRITABLE;   /* short send: the socket is full */
		conn_send_blocked(&w->cc, c);
	} else {
		conn_send_whole(&w->cc, c);
	}
}

/* Whether c's socket takes more bytes now: asked only before c is given
 * one of the pool's reserve buffers (the main ones are exhausted).  c
 * holds none and was not seen slow, yet its client may not be reading: a
 * send goes out whole while the socket has any room, even once poll() no
 * longer reports POLLOUT, so neither CONN_SLOW nor EB_WRITABLE tells.
 * Given the reserve, such a c kept it, unsent, for as long as its client
 * did not read, and a newcomer found no buffer.  If the socket is full,
 * EB_WRITABLE is cleared: its EPOLLOUT edge (the poll armed it) brings c
 * back, and it is not asked again before. */
static bool ep_sock_writable(struct worker *w, struct conn *c)
{
	struct pollfd p = { .fd = c->fd, .events = POLLOUT };
	int n;

	if (!(c->bstate & EB_WRITABLE))
		return false;       /* full when last seen: its EPOLLOUT is to come */
	n = poll(&p, 1, 0);
	if (n < 0) {
		/* cannot tell: serve it, as before the reserve was guarded */
		log_errno(LOG_DEBUG, errno, "worker %u: poll fd %d", w->id, c->fd);
		return true;
	}
	if (n > 0 && (p.revents & (POLLOUT | POLLERR | POLLHUP)))
		return true;        /* room, or an error or EOF a read will tell */
	c->bstate &= ~EB_WRITABLE;
	return false;
}

/* Take c off the ready list (its link serves the wait list too). */
static void ep_unready(struct worker *w, struct conn *c)
{
	struct ep *ep = w->be;

	if (c->bstate & EB_READY) {
		ilist_remove(w, &ep->ready, c, WAIT);
		c->bstate &= ~EB_READY;
	}
}

/* One read.  Returns false when nothing was done: c may take no buffer
 * until its socket drains (its EPOLLOUT edge brings it back). */
static bool ep_read(struct worker *w, struct conn *c)
{
	struct ep *ep = w->be;
	uint32_t bid, off, room;
	bool tail = false;
	ssize_t n;

	room = conn_tail_room(&w->cc, c, &bid, &off);
	if (room >= w->cc.pool.size / 4) {
		tail = true;
	} else {
		/* waiters first: a running connection must not take back the
		 * buffer it just freed while others wait for one */
		bid = BUF_NONE;
		if (ilist_empty(&ep->waitbuf) || ep->feeding == c) {
			/* the reserve (conn_want_read let c in: it holds none
			 * and was not seen slow) only if its socket takes
			 * more; if not, c stays off the wait list, so that
			 * no one waits behind it */
			if (w->cc.pool.nfree && w->cc.pool.nfree <= w->cc.buf_reserve &&
			    !ep_sock_writable(w, c)) {
				conn_no_buffer(&w->cc, c);
				ep_unready(w, c);
				return false;
			}
			bid = bufpool_get(&w->cc.pool);
		}
		if (bid == BUF_NONE) {
			conn_no_buffer(&w->cc, c);
			ep_unready(w, c);
			if (!(c->bstate & EB_WAITBUF)) {
				c->bstate |= EB_WAITBUF;
				ilist_push_tail(w, &ep->waitbuf, c, WAIT);
			}
			return true;
		}
		conn_got_buffer(c);
		off = 0;
		room = w->cc.pool.size;
	}
	n = recv(c->fd, bufpool_ptr(&w->cc.pool, bid) + off, room, MSG_DONTWAIT);
	if (n > 0) {
		if (tail)
			conn_received_tail(&w->cc, c, (uint32_t)n);
		else
			conn_received(&w->cc, c, bid, 0, (uint32_t)n);
		/* a short read drained the socket, unless the FIN is still
		 * to be read: edge-triggered, no new event would announce it */
		if ((uint32_t)n < room && !(c->bstate & EB_RDHUP))
			c->bstate &= ~EB_READABLE;
		return true;
	}
	if (!tail)
		bufpool_put(&w->cc.pool, bid);
	if (n == 0) {
		conn_eof(&w->cc, c);
		c->bstate &= ~EB_READABLE;
	} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
		c->bstate &= ~EB_READABLE;
	} else if (errno != EINTR) {
		ctr_add(&w->cc.ctr->op_errors[WOP_RECV], 1);
		log_errno(LOG_DEBUG, errno, "worker %u: recv fd %d", w->id, c->fd);
		conn_fail(&w->cc, c, -errno);
	}
	return true;
}

/* Act on conn_next() until the connection has to wait for the socket. */
static void ep_process(struct worker *w, struct conn *c)
{
	struct ep *ep = w->be;
	unsigned budget = EP_READ_BUDGET;

	for (;;) {
		unsigned next = conn_next(&w->cc, c);
		bool progress = false;

		if (next & CONN_NEXT_CLOSE) {
			ep_close(w, c);
			return;
		}
		if ((next & CONN_NEXT_SEND) && (c->bstate & EB_WRITABLE)) {
			uint32_t before = c->pending;

			ep_send(w, c);
			progress = c->pending != before || (c->flags & CONN_FAILED);
		}
		if (next & CONN_NEXT_SHUTDOWN) {
			if (shutdown(c->fd, SHUT_WR) < 0) {
				ctr_add(&w->cc.ctr->op_errors[WOP_SHUTDOWN], 1);
				log_errno(LOG_DEBUG, errno, "worker %u: shutdown fd %d", w->id, c->fd);
			}
			conn_shut_done(&w->cc, c);
			progress = true;
		}
		if (!progress && (next & CONN_NEXT_READ) && (c->bstate & EB_READABLE)
		    && !(c->bstate & EB_WAITBUF)) {
			if (!budget) {
				if (!(c->bstate & EB_READY)) {
					c->bstate |= EB_READY;
					ilist_push_tail(w, &ep->ready, c, WAIT);
				}
				return;
			}
			budget--;
			progress = ep_read(w, c);
		}
		if (!progress)
			return;
	}
}

static void ep_update_conn(struct worker *w, struct conn *c)
{
	ep_process(w, c);
}

static void ep_adopt_conn(struct worker *w, struct conn *c)
{
	struct ep *ep = w->be;
	struct epoll_event ev = {
		.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
		.data.u64 = (TAG_CONN << TAG_SHIFT) | conn_key(c),
	};

	/* readiness unknown: try both; the next edges come from this set */
	c->bstate = EB_READABLE | EB_WRITABLE;
	if (epoll_ctl(ep->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
		log_errno(LOG_ERR, errno, "worker %u: epoll_ctl ADD handed-over fd %d", w->id, c->fd);
		conn_fail(&w->cc, c, -errno);
	}
	ep_process(w, c);
}

/* Nothing is ever in flight with epoll; leave the backend's lists. */
static bool ep_conn_busy(struct worker *w, struct conn *c, bool cancel)
{
	struct ep *ep = w->be;

	(void)cancel;
	if (c->bstate & EB_WAITBUF)
		ilist_remove(w, &ep->waitbuf, c, WAIT);
	if (c->bstate & EB_READY)
		ilist_remove(w, &ep->ready, c, WAIT);
	c->bstate &= ~(EB_WAITBUF | EB_READY);
	return false;
}

static void ep_accept(struct worker *w, int lfd)
{
	struct ep *ep = w->be;

	for (int i = 0; i < EP_ACCEPT_MAX && w->accepting; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct epoll_event ev;
		struct conn *c;

		if (fd < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (worker_accept_error(w, -errno))
				ep_listeners(w, false);
			continue;
		}
		if (worker_fd_reserved(w, fd)) {
			close(fd);
			if (worker_accept_error(w, -EMFILE))
				ep_listeners(w, false);
			continue;
		}
		c = worker_conn_new(w, fd);
		if (!c)
			continue;
		c->bstate = EB_WRITABLE;
		ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
		ev.data.u64 = (TAG_CONN << TAG_SHIFT) | conn_key(c);
		if (epoll_ctl(ep->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			ctr_add(&w->cc.ctr->op_errors[WOP_ACCEPT], 1);
			log_errno(LOG_ERR, errno, "worker %u: epoll_ctl ADD fd %d", w->id, fd);
			conn_fail(&w->cc, c, -errno);
			ep_close(w, c);
		}
	}
}

static void ep_conn_event(struct worker *w, uint64_t key, uint32_t events)
{
	struct conn *c = worker_conn_get(w, (uint32_t)key, (uint32_t)(key >> 32));

	if (!c)
		return;     /* closed since the event was queued */
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		c->bstate |= EB_READABLE;   /* a read will tell EOF or the error */
	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		c->bstate |= EB_RDHUP;
	if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		c->bstate |= EB_WRITABLE;
	ep_process(w, c);
}

/* Give freed buffers to the connections waiting for one. */
static void ep_feed_waiters(struct worker *w)
{
	struct ep *ep = w->be;

	while (w->cc.pool.nfree && !ilist_empty(&ep->waitbuf)) {
		struct conn *c = ilist_pop(w, &ep->waitbuf, WAIT);

		c->bstate &= ~EB_WAITBUF;
		ep->feeding = c;
		ep_process(w, c);
		ep->feeding = NULL;
	}
}

static void ep_run_ready(struct worker *w)
{
	struct ep *ep = w->be;
	struct ilist turn = ep->ready;

	/* only those queued before this turn: each gets one more budget */
	ilist_init(&ep->ready);
	while (!ilist_empty(&turn)) {
		struct conn *c = ilist_pop(w, &turn, WAIT);

		c->bstate &= ~EB_READY;
		ep_process(w, c);
	}
}

static int ep_init(struct worker *w)
{
	struct ep *ep = calloc(1, sizeof(*ep));
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = TAG_CTL << TAG_SHIFT };
	int err;

	if (!ep)
		return -ENOMEM;
	ep->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (ep->epfd < 0) {
		err = -errno;
		snprintf(w->init_error, sizeof(w->init_error), "epoll_create1: %s", strerror(-err));
		free(ep);
		return err;
	}
	ilist_init(&ep->waitbuf);
	ilist_init(&ep->ready);
	w->be = ep;
	w->cc.buf_release = ep_buf_release;
	if (epoll_ctl(ep->epfd, EPOLL_CTL_ADD, w->ctl_fd, &ev) < 0) {
		err = -errno;
		snprintf(w->init_error, sizeof(w->init_error), "epoll_ctl ADD eventfd: %s",
			 strerror(-err));
		close(ep->epfd);
		free(ep);
		w->be = NULL;
		return err;
	}
	ep_listeners(w, true);
	err = epu_init(w, &ep->udp);
	if (err) {
		ep_listeners(w, false);
		close(ep->epfd);
		free(ep);
		w->be = NULL;
		return err;
	}
	epu_update(w, ep->udp);
	return 0;
}

static int ep_run(struct worker *w)
{
	struct ep *ep = w->be;

	while (!worker_finished(w)) {
		int timeout = ilist_empty(&ep->ready) && !epu_ready(ep->udp) ? worker_wait_ms(w) : 0;
		int n;

		(void)worker_batch_wait_us(w, false);   /* no min-wait for epoll_wait: logged */
		n = epoll_wait(ep->epfd, ep->ev, EP_EVENTS, timeout);
		worker_woke(w, n > 0 ? (unsigned)n : 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_errno(LOG_ERR, errno, "worker %u: epoll_wait", w->id);
			return -errno;
		}
		for (int i = 0; i < n; i++) {
			uint64_t d = ep->ev[i].data.u64;

			switch (d >> TAG_SHIFT) {
			case TAG_CONN:
				ep_conn_event(w, d & ~(3ull << TAG_SHIFT), ep->ev[i].events);
				break;
			case TAG_LISTEN:
				if (w->accepting)
					ep_accept(w, w->listen_fds[d & 0xffff]);
				break;
			case TAG_CTL:
				worker_control(w);
				break;
			case TAG_UDP:
				epu_event(w, ep->udp, (unsigned)(d & 0xffff),
					  ep->ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP),
					  ep->ev[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP));
				break;
			}
		}
		ep_run_ready(w);
		epu_run_ready(w, ep->udp);
		worker_tick(w);
		ep_feed_waiters(w);     /* after the tick: its closes free buffers too */
	}
	return 0;
}

static void ep_fini(struct worker *w)
{
	struct ep *ep = w->be;

	while (!ilist_empty(&w->lru)) {
		struct conn *c = &w->conns[w->lru.head];

		conn_fail(&w->cc, c, 0);
		ep_close(w, c);
	}
	epu_fini(w, ep->udp);
	close(ep->epfd);
	free(ep);
	w->be = NULL;
}

const struct backend_ops backend_epoll = {
	.name = "epoll",
	.probe = ep_probe,
	.init = ep_init,
	.run = ep_run,
	.update_conn = ep_update_conn,
	.update_accept = ep_update_accept,
	.adopt_conn = ep_adopt_conn,
	.conn_busy = ep_conn_busy,
	.update_udp = ep_update_udp,
	.udp_busy = ep_udp_busy,
	.fini = ep_fini,
};
