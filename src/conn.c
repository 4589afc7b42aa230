/* conn.c - the echo logic; see conn.h */
#include "conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A segment this small is copied into the tail buffer's free room rather
 * than holding a buffer of its own, so that a client sending tiny pieces
 * cannot pin one buffer per piece. */
#define COALESCE_MAX 512

void conn_touch(struct conn_ctx *cc, struct conn *c)
{
	if (c->last_active == cc->now_ms)
		return;           /* order kept: the clock has not moved */
	c->last_active = cc->now_ms;
	if (cc->touch)
		cc->touch(cc, c);
}

/* The first bytes of c's stream (carry, then queue), at most size. */
static uint32_t conn_gather(const struct conn_ctx *cc, const struct conn *c, uint8_t *out,
			    uint32_t size)
{
	const struct bufpool *p = &cc->pool;
	uint32_t n = 0;

	if (c->carry) {
		n = c->carry_len - c->carry_off;
		if (n > size)
			n = size;
		memcpy(out, c->carry + c->carry_off, n);
	}
	for (uint32_t b = c->q_head; b != BUF_NONE && n < size; b = p->meta[b].next) {
		uint32_t k = p->meta[b].len;

		if (k > size - n)
			k = size - n;
		memcpy(out + n, bufpool_ptr(p, b) + p->meta[b].off, k);
		n += k;
	}
	return n;
}

static void conn_drop_head(struct conn_ctx *cc, struct conn *c, uint32_t n);

/* c awaits its PROXY header: decide it from the bytes queued so far. */
static void conn_proxy_step(struct conn_ctx *cc, struct conn *c)
{
	uint8_t buf[PROXY_HEADER_MAX];
	struct proxy_header h;
	int r = proxy_parse(buf, conn_gather(cc, c, buf, sizeof(buf)), &h);

	if (r == 0)
		return;                       /* keep reading, until the timeout */
	c->flags &= ~CONN_PROXY_WAIT;
	if (r > 0) {
		conn_drop_head(cc, c, (uint32_t)r);
		ctr_add(&cc->ctr->bytes_discarded, (uint32_t)r);
	}
	if (cc->proxy_done)
		cc->proxy_done(cc, c, r, r > 0 ? &h : NULL);
	if (r < 0)
		conn_fail(cc, c, 0);
}

static void conn_account_received(struct conn_ctx *cc, struct conn *c, uint32_t len)
{
	c->pending += len;
	ctr_add(&cc->ctr->bytes_received, len);
	conn_touch(cc, c);
	if (c->flags & CONN_PROXY_WAIT)
		conn_proxy_step(cc, c);
}

void conn_received(struct conn_ctx *cc, struct conn *c, uint32_t bid,
		   uint32_t off, uint32_t len)
{
	struct bufpool *p = &cc->pool;
	struct bufmeta *m;

	conn_got_buffer(c);
	if (!len || (c->flags & (CONN_WR_SHUT | CONN_FAILED))) {
		/* nothing to echo: discarded after shut, or on a dying conn */
		if (len)
			ctr_add(&cc->ctr->bytes_discarded, len);
		cc->buf_release(cc, bid);
		return;
	}
	if (c->q_tail != BUF_NONE && len <= COALESCE_MAX) {
		struct bufmeta *t = &p->meta[c->q_tail];
		uint32_t end = t->off + t->len;

		if (end + len <= p->size) {
			memcpy(bufpool_ptr(p, c->q_tail) + end,
			       bufpool_ptr(p, bid) + off, len);
			t->len += len;
			cc->buf_release(cc, bid);
			conn_account_received(cc, c, len);
			return;
		}
	}
	m = &p->meta[bid];
	m->off = off;
	m->len = len;
	m->next = BUF_NONE;
	if (c->q_tail == BUF_NONE)
		c->q_head = bid;
	else
		p->meta[c->q_tail].next = bid;
	c->q_tail = bid;
	c->nbufs++;
	conn_account_received(cc, c, len);
}

uint32_t conn_tail_room(struct conn_ctx *cc, struct conn *c, uint32_t *bid, uint32_t *off)
{
	struct bufmeta *t;
	uint32_t end;

	if (c->q_tail == BUF_NONE)
		return 0;
	t = &cc->pool.meta[c->q_tail];
	end = t->off + t->len;
	*bid = c->q_tail;
	*off = end;
	return cc->pool.size - end;
}

void conn_received_tail(struct conn_ctx *cc, struct conn *c, uint32_t n)
{
	conn_got_buffer(c);
	cc->pool.meta[c->q_tail].len += n;
	conn_account_received(cc, c, n);
}

int conn_send_iov(struct conn_ctx *cc, const struct conn *c, struct iovec *iov, int max)
{
	const struct bufpool *p = &cc->pool;
	int n = 0;

	if (c->carry && max > 0) {
		iov[0].iov_base = c->carry + c->carry_off;
		iov[0].iov_len = c->carry_len - c->carry_off;
		n = 1;
	}
	for (uint32_t b = c->q_head; b != BUF_NONE && n < max; b = p->meta[b].next) {
		iov[n].iov_base = bufpool_ptr(p, b) + p->meta[b].off;
		iov[n].iov_len = p->meta[b].len;
		n++;
	}
	return n;
}

void conn_sent(struct conn_ctx *cc, struct conn *c, uint32_t n)
{
	if (n > c->pending)
		n = c->pending;       /* cannot happen; never walk off the queue */
	ctr_add(&cc->ctr->bytes_sent, n);
	c->sent += n;
	if (n)
		conn_touch(cc, c);
	conn_drop_head(cc, c, n);
}

/* The first n bytes of c's stream (n <= pending) leave it: buffers
 * emptied go back to the pool. */
static void conn_drop_head(struct conn_ctx *cc, struct conn *c, uint32_t n)
{
	struct bufpool *p = &cc->pool;

	c->pending -= n;
	if (c->carry) {
		uint32_t k = c->carry_len - c->carry_off;

		if (n < k) {
			c->carry_off += n;
			return;
		}
		n -= k;
		conn_carry_free(c);
	}
	while (n) {
		uint32_t b = c->q_head;
		struct bufmeta *m = &p->meta[b];

		if (n < m->len) {
			m->off += n;
			m->len -= n;
			break;
		}
		n -= m->len;
		c->q_head = m->next;
		if (c->q_head == BUF_NONE)
			c->q_tail = BUF_NONE;
		m->next = BUF_NONE;
		c->nbufs--;
		cc->buf_release(cc, b);
	}
	/* an empty tail buffer stays queued only if it still has bytes */
}

void conn_no_buffer(struct conn_ctx *cc, struct conn *c)
{
	if (c->flags & CONN_NOBUF)
		return;       /* still starved: the same event */
	c->flags |= CONN_NOBUF;
	ctr_add(&cc->ctr->buf_exhausted, 1);
}

void conn_send_whole(struct conn_ctx *cc, struct conn *c)
{
	(void)cc;
	if (!c->pending)
		c->flags &= ~CONN_SLOW;
}

void conn_send_blocked(struct conn_ctx *cc, struct conn *c)
{
	(void)cc;
	c->flags |= CONN_SLOW;
}

void conn_eof(struct conn_ctx *cc, struct conn *c)
{
	c->flags |= CONN_EOF;
	if (c->flags & CONN_PROXY_WAIT) {     /* the header never came whole */
		c->flags &= ~CONN_PROXY_WAIT;
		if (cc->proxy_done)
			cc->proxy_done(cc, c, -PROXY_ERR_PARTIAL, NULL);
		conn_fail(cc, c, 0);
	}
}

void conn_shut_done(struct conn_ctx *cc, struct conn *c)
{
	(void)cc;
	c->flags |= CONN_WR_SHUT;
}

void conn_fail(struct conn_ctx *cc, struct conn *c, int err)
{
	if (!(c->flags & CONN_FAILED) && err)
		ctr_add(&cc->ctr->conn_errors, 1);
	c->flags |= CONN_FAILED;
}

bool conn_want_read(struct conn_ctx *cc, struct conn *c)
{
	if (c->flags & (CONN_EOF | CONN_FAILED | CONN_FREEZE))
		return false;
	if (c->flags & CONN_WR_SHUT)
		return true;          /* discarding until the peer's EOF */
	if (c->flags & CONN_DRAIN)
		return false;
	/* the last buffer_reserve buffers of the pool go only to connections
	 * holding none: clients that do not read cannot pin the whole pool */
	if (c->pending >= cc->max_pending || c->nbufs >= cc->max_bufs ||
	    (!conn_may_use_reserve(c) && cc->pool.nfree <= cc->buf_reserve)) {
		if (!(c->flags & CONN_PAUSED)) {
			c->flags |= CONN_PAUSED;
			ctr_add(&cc->ctr->backpressure_pauses, 1);
		}
		return false;
	}
	c->flags &= ~CONN_PAUSED;
	return true;
}

unsigned conn_next(struct conn_ctx *cc, struct conn *c)
{
	unsigned next = 0;

	if (c->flags & CONN_FAILED)
		return CONN_NEXT_CLOSE;
	if (c->flags & CONN_WR_SHUT) {
		if (c->flags & CONN_EOF)
			return CONN_NEXT_CLOSE;
		return CONN_NEXT_READ;
	}
	if (c->flags & CONN_PROXY_WAIT) {
		/* its queue is the header so far: nothing to echo; a drain has
		 * nothing to flush for a client not yet served */
		if ((c->flags & CONN_DRAIN) && !(c->flags & CONN_FREEZE))
			return CONN_NEXT_CLOSE;
		return conn_want_read(cc, c) ? CONN_NEXT_READ : 0;
	}
	if (c->pending)
		next |= CONN_NEXT_SEND;
	else if ((c->flags & (CONN_EOF | CONN_DRAIN)) && !(c->flags & CONN_FREEZE))
		return CONN_NEXT_SHUTDOWN;
	if (conn_want_read(cc, c))
		next |= CONN_NEXT_READ;
	return next;
}

void conn_carry_free(struct conn *c)
{
	free(c->carry);
	c->carry = NULL;
	c->carry_off = c->carry_len = 0;
}

int conn_export(struct conn_ctx *cc, const struct conn *c, struct conn_export *e)
{
	uint32_t off = 0;

	e->fd = c->fd;
	e->flags = c->flags & CONN_EXPORTED_FLAGS;
	e->len = c->pending;
	e->data = NULL;
	e->src_slot = c->src_slot;
	e->start_us = c->start_us;
	e->sent = c->sent;
	/* a PROXY header's source travels along (the peer address is the
	 * proxy's); any other is the peer's, read again by who counts it */
	e->src_known = (c->flags & CONN_PROXIED) != 0;
	if (e->src_known)
		memcpy(e->src, c->src, sizeof(e->src));
	else
		memset(e->src, 0, sizeof(e->src));
	if (!c->pending)
		return 0;
	e->data = malloc(c->pending);
	if (!e->data)
		return -ENOMEM;
	/* the carry first, then the queue's buffers, in order */
	const struct bufpool *p = &cc->pool;

	if (c->carry) {
		memcpy(e->data, c->carry + c->carry_off, c->carry_len - c->carry_off);
		off = c->carry_len - c->carry_off;
	}
	for (uint32_t b = c->q_head; b != BUF_NONE; b = p->meta[b].next) {
		memcpy(e->data + off, bufpool_ptr(p, b) + p->meta[b].off, p->meta[b].len);
		off += p->meta[b].len;
	}
	return 0;
}

void conn_import(struct conn_ctx *cc, struct conn *c, struct conn_export *e)
{
	(void)cc;
	c->flags |= e->flags & CONN_EXPORTED_FLAGS;
	c->src_slot = e->src_slot;
	if (e->start_us)
		c->start_us = e->start_us;
	c->sent = e->sent;
	if (e->src_known) {
		c->flags |= CONN_PROXIED;
		memcpy(c->src, e->src, sizeof(c->src));
	}
	if (e->len) {
		c->carry = e->data;
		c->carry_off = 0;
		c->carry_len = e->len;
		c->pending = e->len;
	} else {
		free(e->data);
	}
	e->data = NULL;
}

uint64_t conn_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void conn_start(struct conn_ctx *cc, struct conn *c)
{
	c->q_head = c->q_tail = BUF_NONE;
	c->pending = 0;
	c->nbufs = 0;
	c->carry = NULL;
	c->carry_off = c->carry_len = 0;
	c->src_slot = PERSOURCE_NONE;  /* the caller counts it */
	c->last_active = cc->now_ms;
	c->start_us = conn_now_us();
	c->sent = 0;
}

void conn_drop(struct conn_ctx *cc, struct conn *c)
{
	uint32_t b = c->q_head;

	while (b != BUF_NONE) {
		uint32_t next = cc->pool.meta[b].next;

		cc->pool.meta[b].next = BUF_NONE;
		cc->buf_release(cc, b);
		b = next;
	}
	c->q_head = c->q_tail = BUF_NONE;
	c->pending = 0;
	c->nbufs = 0;
	conn_carry_free(c);
}
