/* backend_epoll_udp.c - the epoll backend's UDP path: recvmmsg and
 * sendmmsg in batches, per socket.
 *
 * Each UDP socket of the worker has a fixed area, allocated at init: a
 * batch of EPU_BATCH receive buffers (the largest datagram, or GRO
 * receive, fits one) with their source addresses and control data, and
 * the echoes built from them.  A socket alternates: receive a batch, echo
 * it (dgram.c decides what is echoed and counts), receive the next.  The
 * echoes go out with one sendmmsg whose messages are runs (dgram_coalesce:
 * consecutive echoes to one peer, one UDP_SEGMENT message with an iovec per
 * datagram; a lone echo is a message of its own); the messages are built
 * again from the first unsent echo after every partial sendmmsg.  When
 * the socket cannot take an echo now (EAGAIN), the rest of the batch waits
 * in order; the socket is then watched for writing only, not reading, so
 * the kernel's receive queue absorbs the overload (and counts what it
 * drops: SO_RXQ_OVFL), and no wake-up comes until it can send again.  A
 * run the kernel refuses (dgram_coalesce_failed) is sent again one by one;
 * any other send error drops that message's echoes (send_error) and the
 * batch goes on.
 * The socket is watched for reading only while w->udp_reading (not while
 * draining, handing over, or held before a hand-over completes).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "backend_epoll.h"
#include "dgram.h"
#include "log.h"
#include "worker.h"

#define EPU_BATCH   32        /* datagrams per recvmmsg / sendmmsg */
#define EPU_BUDGET  4         /* batches per socket per turn */
#define EPU_BUFSIZE 65536     /* > DGRAM_MAX_PAYLOAD: a larger one is flagged MSG_TRUNC */

_Static_assert(EPU_BUFSIZE > DGRAM_MAX_PAYLOAD, "a receive buffer holds any datagram");

union epu_rx_cmsg {
	char buf[DGRAM_RX_CMSG_SPACE];
	struct cmsghdr align;
};

union epu_tx_cmsg {
	char buf[DGRAM_CMSG_SPACE];
	struct cmsghdr align;
};

struct epu_sock {
	int fd;
	unsigned idx;                       /* in w->udp_fds */
	unsigned events;                    /* EPU_IN / EPU_OUT watched now */
	bool readable;                      /* may hold datagrams (edge seen, not drained) */
	bool blocked;                       /* a send met EAGAIN: waiting for EPU_OUT */
	bool ready;                         /* read budget ran out this turn */
	unsigned head, nq;                  /* echoes [head..nq) still to send */
	char *bufs;                         /* EPU_BATCH x EPU_BUFSIZE */
	struct mmsghdr in[EPU_BATCH];
	struct iovec in_iov[EPU_BATCH];
	struct sockaddr_storage src[EPU_BATCH];
	union epu_rx_cmsg rx[EPU_BATCH];
	/* the echoes, in receive order */
	struct iovec out_iov[EPU_BATCH];
	uint16_t out_gso[EPU_BATCH];        /* its receive's GRO segment size */
	uint8_t out_src[EPU_BATCH];         /* its receive's index: source address */
	/* the messages built from echoes [head..nq): message k sends
	 * msg_n[k] echoes, msg_bytes[k] bytes with UDP_SEGMENT msg_seg[k] */
	struct mmsghdr out[EPU_BATCH];
	union epu_tx_cmsg tx[EPU_BATCH];
	unsigned msg_n[EPU_BATCH];
	size_t msg_bytes[EPU_BATCH];
	uint16_t msg_seg[EPU_BATCH];
};

_Static_assert(EPU_BATCH <= UINT8_MAX, "out_src holds a receive index");

struct epu {
	unsigned n;
	struct epu_sock *s;                 /* n */
	char *bufs;                         /* n x EPU_BATCH x EPU_BUFSIZE, mmap'd */
	size_t bufs_len;
};

/* Watch s for what it needs now: reading while the worker reads UDP and
 * nothing is queued; writing while blocked. */
static void rewatch(struct worker *w, struct epu_sock *s)
{
	unsigned want = (w->udp_reading && s->head == s->nq ? EPU_IN : 0) |
			(s->blocked ? EPU_OUT : 0);

	if (want == s->events)
		return;
	if ((want & EPU_IN) && !(s->events & EPU_IN))
		s->readable = true;      /* edges were not watched meanwhile */
	if (ep_udp_watch(w, s->idx, want, false) == 0)
		s->events = want;
}

/* Build the messages of echoes [head..nq): one per run.  Returns their
 * number. */
static unsigned build(struct worker *w, struct epu_sock *s)
{
	struct dgram_desc d[EPU_BATCH];
	size_t seg_max = dgram_coalesce_limit(&w->dc, s->idx);
	unsigned nd = s->nq - s->head, m = 0;

	for (unsigned k = 0; k < nd; k++) {
		unsigned q = s->head + k;

		d[k].peer = (const struct sockaddr *)&s->src[s->out_src[q]];
		d[k].peerlen = s->in[s->out_src[q]].msg_hdr.msg_namelen;
		d[k].len = s->out_iov[q].iov_len;
		d[k].gso = s->out_gso[q];
	}
	for (unsigned k = 0; k < nd; m++) {
		unsigned q = s->head + k, run = dgram_coalesce(&d[k], nd - k, seg_max);
		struct msghdr *h = &s->out[m].msg_hdr;
		uint16_t seg = run > 1 ? (uint16_t)d[k].len : d[k].gso;
		size_t bytes = 0, clen;

		for (unsigned j = 0; j < run; j++)
			bytes += d[k + j].len;
		clen = dgram_put_segment(&w->dc, s->tx[m].buf, seg, bytes);
		memset(h, 0, sizeof(*h));
		h->msg_name = &s->src[s->out_src[q]];
		h->msg_namelen = d[k].peerlen;
		h->msg_iov = &s->out_iov[q];
		h->msg_iovlen = run;
		h->msg_control = clen ? s->tx[m].buf : NULL;
		h->msg_controllen = clen;
		s->msg_n[m] = run;
		s->msg_bytes[m] = bytes;
		s->msg_seg[m] = clen ? seg : 0;
		k += run;
	}
	return m;
}

/* Send the queued echoes, in order.  false: the socket is full (EAGAIN),
 * the rest waits for EPU_OUT. */
static bool flush(struct worker *w, struct epu_sock *s)
{
	while (s->head < s->nq) {
		unsigned m = build(w, s);
		int r = sendmmsg(s->fd, s->out, m, MSG_DONTWAIT);

		if (r > 0) {
			for (unsigned k = 0; k < (unsigned)r; k++) {
				dgram_sent(&w->dc, s->msg_bytes[k], s->msg_seg[k]);
				if (s->msg_n[k] > 1)
					dgram_coalesced(&w->dc, s->msg_n[k]);
				s->head += s->msg_n[k];
			}
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			s->blocked = true;
			return false;
		}
		/* a run refused: built again, one by one (its ceiling dropped) */
		if (dgram_coalesce_failed(&w->dc, s->idx, s->fd, "sendmmsg", s->msg_seg[0],
					  s->msg_n[0], errno))
			continue;
		/* this message cannot go: drop its echoes, go on with the next */
		ctr_add(&w->cc.ctr->op_errors[WOP_SEND], 1);
		log_errno(LOG_DEBUG, errno, "worker %u: sendmmsg UDP fd %d", w->id, s->fd);
		dgram_drop(&w->dc, DDROP_SEND_ERROR, dgram_count(s->msg_bytes[0], s->msg_seg[0]));
		s->head += s->msg_n[0];
	}
	s->head = s->nq = 0;
	s->blocked = false;
	return true;
}

/* Queue the echo of received datagram i. */
static void queue_echo(struct epu_sock *s, unsigned i, size_t len, uint16_t gso)
{
	unsigned j = s->nq++;

	s->out_iov[j].iov_base = s->in_iov[i].iov_base;
	s->out_iov[j].iov_len = len;
	s->out_gso[j] = gso && len > gso ? gso : 0;
	s->out_src[j] = (uint8_t)i;
}

/* One recvmmsg: every datagram counted, and echoed or dropped. */
static void receive(struct worker *w, struct epu_sock *s)
{
	int n;

	for (unsigned i = 0; i < EPU_BATCH; i++) {
		struct msghdr *m = &s->in[i].msg_hdr;

		m->msg_namelen = sizeof(s->src[i]);
		m->msg_controllen = sizeof(s->rx[i].buf);
		m->msg_flags = 0;
		s->in_iov[i].iov_len = EPU_BUFSIZE;
	}
	n = recvmmsg(s->fd, s->in, EPU_BATCH, MSG_DONTWAIT, NULL);
	if (n < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			ctr_add(&w->cc.ctr->op_errors[WOP_RECV], 1);
			log_errno(LOG_DEBUG, errno, "worker %u: recvmmsg UDP fd %d", w->id, s->fd);
		}
		if (errno != EINTR)
			s->readable = false;     /* the next datagram brings an edge */
		return;
	}
	for (unsigned i = 0; i < (unsigned)n; i++) {
		const struct msghdr *m = &s->in[i].msg_hdr;
		size_t len = s->in[i].msg_len;
		uint32_t ovfl = 0;
		uint16_t gso;
		bool has_ovfl;
		unsigned count;

		dgram_parse_cmsg(m, &gso, &ovfl, &has_ovfl);
		if (has_ovfl)
			dgram_kernel_drops(&w->dc, s->idx, ovfl);
		dgram_received(&w->dc, len, gso);
		count = dgram_count(len, gso);
		/* cut short: the payload, or the control data, which could
		 * have held the GRO segment size */
		if (m->msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
			dgram_drop(&w->dc, DDROP_TRUNCATED, count);
			continue;
		}
		if (dgram_check(&w->dc, (const struct sockaddr *)&s->src[i], m->msg_namelen, count))
			continue;
		queue_echo(s, i, len, gso);
	}
	if (n < EPU_BATCH)
		s->readable = false;             /* drained */
}

/* Echo what is queued, then read and echo while the socket has datagrams
 * and the budget lasts. */
static void pump(struct worker *w, struct epu_sock *s)
{
	unsigned budget = EPU_BUDGET;

	s->ready = false;
	for (;;) {
		if (s->head < s->nq) {
			if (!flush(w, s))
				break;
			s->readable = true;      /* not watched while the echoes were queued */
			continue;
		}
		if (!w->udp_reading || !s->readable)
			break;
		if (!budget--) {
			s->ready = true;
			break;
		}
		receive(w, s);
	}
	rewatch(w, s);
}

void epu_event(struct worker *w, struct epu *u, unsigned i, bool in, bool out)
{
	struct epu_sock *s;

	if (i >= u->n)
		return;
	s = &u->s[i];
	if (in)
		s->readable = true;
	if (out || s->head == s->nq)
		pump(w, s);
}

void epu_update(struct worker *w, struct epu *u)
{
	for (unsigned i = 0; i < u->n; i++)
		pump(w, &u->s[i]);
}

bool epu_busy(const struct epu *u)
{
	for (unsigned i = 0; u && i < u->n; i++)
		if (u->s[i].head < u->s[i].nq)
			return true;
	return false;
}

bool epu_ready(const struct epu *u)
{
	for (unsigned i = 0; u && i < u->n; i++)
		if (u->s[i].ready)
			return true;
	return false;
}

void epu_run_ready(struct worker *w, struct epu *u)
{
	for (unsigned i = 0; u && i < u->n; i++)
		if (u->s[i].ready)
			pump(w, &u->s[i]);
}

int epu_init(struct worker *w, struct epu **out)
{
	struct epu *u = calloc(1, sizeof(*u));
	int err = 0;

	*out = NULL;
	if (!u)
		return -ENOMEM;
	u->n = w->n_udp;
	if (!u->n) {
		*out = u;
		return 0;
	}
	u->s = calloc(u->n, sizeof(*u->s));
	u->bufs_len = (size_t)u->n * EPU_BATCH * EPU_BUFSIZE;
	/* touched as datagrams arrive: a small one uses one page */
	u->bufs = mmap(NULL, u->bufs_len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (!u->s || u->bufs == MAP_FAILED) {
		err = u->s ? -errno : -ENOMEM;
		snprintf(w->init_error, sizeof(w->init_error),
			 "allocating the UDP batches (%zu bytes): %s", u->bufs_len, strerror(-err));
		goto fail;
	}
	for (unsigned i = 0; i < u->n; i++) {
		struct epu_sock *s = &u->s[i];

		s->fd = w->udp_fds[i];
		s->idx = i;
		s->bufs = u->bufs + (size_t)i * EPU_BATCH * EPU_BUFSIZE;
		for (unsigned k = 0; k < EPU_BATCH; k++) {
			s->in_iov[k].iov_base = s->bufs + (size_t)k * EPU_BUFSIZE;
			s->in[k].msg_hdr.msg_name = &s->src[k];
			s->in[k].msg_hdr.msg_iov = &s->in_iov[k];
			s->in[k].msg_hdr.msg_iovlen = 1;
			s->in[k].msg_hdr.msg_control = s->rx[k].buf;
		}
		err = ep_udp_watch(w, i, 0, true);
		if (err) {
			snprintf(w->init_error, sizeof(w->init_error),
				 "epoll_ctl ADD UDP fd %d: %s", s->fd, strerror(-err));
			goto fail;
		}
	}
	*out = u;
	return 0;
fail:
	if (u->bufs && u->bufs != MAP_FAILED)
		munmap(u->bufs, u->bufs_len);
	free(u->s);
	free(u);
	return err;
}

void epu_fini(struct worker *w, struct epu *u)
{
	if (!u)
		return;
	for (unsigned i = 0; i < u->n; i++) {
		struct epu_sock *s = &u->s[i];

		for (unsigned k = s->head; k < s->nq; k++)
			dgram_drop(&w->dc, DDROP_SEND_ERROR,
				   dgram_count(s->out_iov[k].iov_len, s->out_gso[k]));
		if (s->nq > s->head)
			log_warning("worker %u: UDP fd %d: %u echo(es) not sent by the deadline, "
				    "dropped", w->id, s->fd, s->nq - s->head);
	}
	if (u->bufs)
		munmap(u->bufs, u->bufs_len);
	free(u->s);
	free(u);
}
