/* test_conn.c - the echo logic (conn.c) driven by a simulated backend,
 * with nothing but its context (struct conn_ctx: a pool, counters, a
 * clock, the limits): short reads, short writes, stalls, buffer
 * exhaustion, EOF, drain and failure.  Output must equal input.  The
 * worker's own services (slots, limits, accept policy, timers) are
 * tested in test_worker.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tap.h"
#include "bufpool.h"
#include "conn.h"
#include "counters.h"

/* ---- the context a worker would own, and a simulated backend ---- */

static struct worker_counters ctr;

static void sim_buf_release(struct conn_ctx *cc, uint32_t bid)
{
	bufpool_put(&cc->pool, bid);
}

/* as worker_apply_params() derives the limits */
static void ctx_make(struct conn_ctx *cc, uint32_t nbufs, uint32_t bufsize, uint32_t max_pending)
{
	memset(cc, 0, sizeof(*cc));
	memset(&ctr, 0, sizeof(ctr));
	cc->ctr = &ctr;
	if (bufpool_init(&cc->pool, nbufs, bufsize))
		abort();
	cc->buf_release = sim_buf_release;
	cc->max_pending = max_pending;
	cc->max_bufs = 2 * ((max_pending + bufsize - 1) / bufsize) + 2;
	if (cc->max_bufs > nbufs / 4)
		cc->max_bufs = nbufs / 4 < 2 ? 2 : nbufs / 4;
	cc->buf_reserve = nbufs / 8 ? nbufs / 8 : 1;
}

static void ctx_unmake(struct conn_ctx *cc)
{
	bufpool_fini(&cc->pool);
}

/* A connection on fd, as a fresh slot would hold it. */
static struct conn *conn_open(struct conn_ctx *cc, struct conn *c, int fd)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->flags = CONN_IN_USE;
	conn_start(cc, c);
	return c;
}

/* Closed: the queue goes back to the pool. */
static void conn_close(struct conn_ctx *cc, struct conn *c)
{
	conn_drop(cc, c);
	c->flags = 0;
	c->fd = -1;
}

static int sockfd(void)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		abort();
	close(sv[1]);
	return sv[0];
}

static uint32_t rnd_state = 12345;

static uint32_t rnd(uint32_t n)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 17;
	rnd_state ^= rnd_state << 5;
	return n ? rnd_state % n : 0;
}

struct sim {
	const uint8_t *in;
	size_t in_len, in_off;
	uint8_t *out;
	size_t out_len;
	unsigned max_read, max_write;
	unsigned stall_every;      /* 1 in N sends writes nothing */
	uint32_t max_pending_seen;
	uint32_t max_nbufs_seen;
	unsigned reads_while_over;  /* reads done while over the cap: must be 0 */
	unsigned steps;
	bool shut, closed;
};

/* One read as a backend would do it: into fresh buffer or tail room. */
static void sim_read(struct conn_ctx *cc, struct conn *c, struct sim *s)
{
	uint32_t bid, off, room, n;
	bool tail = false;

	if (c->pending >= cc->max_pending)
		s->reads_while_over++;
	if (s->in_off == s->in_len) {
		conn_eof(cc, c);
		return;
	}
	room = conn_tail_room(cc, c, &bid, &off);
	if (room >= cc->pool.size / 4 && rnd(2)) {
		tail = true;
	} else {
		bid = bufpool_get(&cc->pool);
		if (bid == BUF_NONE)
			return;           /* exhausted: wait for sends */
		off = rnd(2) ? rnd(cc->pool.size / 2) : 0;   /* kernel may use any offset */
		room = cc->pool.size - off;
	}
	n = 1 + rnd(s->max_read < room ? s->max_read : room);
	if (n > room)
		n = room;
	if (n > s->in_len - s->in_off)
		n = (uint32_t)(s->in_len - s->in_off);
	memcpy(bufpool_ptr(&cc->pool, bid) + off, s->in + s->in_off, n);
	s->in_off += n;
	if (tail)
		conn_received_tail(cc, c, n);
	else
		conn_received(cc, c, bid, off, n);
}

static void sim_send(struct conn_ctx *cc, struct conn *c, struct sim *s)
{
	struct iovec iov[8];
	int k = conn_send_iov(cc, c, iov, 8);
	uint32_t want = 1 + rnd(s->max_write), done = 0;

	if (s->stall_every && rnd(s->stall_every) == 0)
		return;
	for (int i = 0; i < k && done < want; i++) {
		uint32_t n = (uint32_t)iov[i].iov_len;

		if (n > want - done)
			n = want - done;
		memcpy(s->out + s->out_len, iov[i].iov_base, n);
		s->out_len += n;
		done += n;
	}
	conn_sent(cc, c, done);
}

/* Run a connection to completion; returns false if it never finished. */
static bool sim_run(struct conn_ctx *cc, struct conn *c, struct sim *s)
{
	for (s->steps = 0; s->steps < 10000000; s->steps++) {
		unsigned next = conn_next(cc, c);

		if (c->pending > s->max_pending_seen)
			s->max_pending_seen = c->pending;
		if (c->nbufs > s->max_nbufs_seen)
			s->max_nbufs_seen = c->nbufs;
		if (next & CONN_NEXT_CLOSE) {
			conn_close(cc, c);
			s->closed = true;
			return true;
		}
		if (next & CONN_NEXT_SHUTDOWN) {
			s->shut = true;
			conn_shut_done(cc, c);
			continue;
		}
		/* the simulated kernel picks at random what is ready */
		if ((next & CONN_NEXT_READ) && (!(next & CONN_NEXT_SEND) || rnd(2)))
			sim_read(cc, c, s);
		else if (next & CONN_NEXT_SEND)
			sim_send(cc, c, s);
		else if (next & CONN_NEXT_READ)
			sim_read(cc, c, s);
		else
			return false;     /* nothing to do and not closed: stuck */
	}
	return false;
}

static void test_echo(const char *name, size_t len, unsigned max_read, unsigned max_write,
		      unsigned stall, uint32_t nbufs, uint32_t bufsize, uint32_t max_pending)
{
	struct conn_ctx cc;
	struct sim s = { .max_read = max_read, .max_write = max_write, .stall_every = stall };
	uint8_t *in = malloc(len + 1), *out = malloc(len + 1);
	struct conn slot, *c;
	bool done;

	for (size_t i = 0; i < len; i++)
		in[i] = (uint8_t)rnd(256);
	s.in = in;
	s.in_len = len;
	s.out = out;
	ctx_make(&cc, nbufs, bufsize, max_pending);
	cc.now_ms = 777;
	c = conn_open(&cc, &slot, sockfd());
	tap_ok(c->q_head == BUF_NONE && c->q_tail == BUF_NONE && !c->pending && !c->nbufs &&
	       !c->carry && c->last_active == 777, "%s: connection starts empty, active now", name);
	int fd = c->fd;

	done = sim_run(&cc, c, &s);
	close(fd);
	tap_ok(done && s.closed, "%s: finished in %u steps", name, s.steps);
	tap_ok(s.out_len == len && memcmp(in, out, len) == 0,
	       "%s: %zu bytes echoed exactly (got %zu)", name, len, s.out_len);
	tap_ok(s.shut, "%s: write side shut after the echo", name);
	tap_ok(s.reads_while_over == 0 && s.max_pending_seen < max_pending + bufsize,
	       "%s: backpressure: max pending %u < cap %u + one buffer, %u reads over cap",
	       name, s.max_pending_seen, max_pending, s.reads_while_over);
	tap_ok(s.max_nbufs_seen <= cc.max_bufs + 1,
	       "%s: buffers held at most %u (limit %u)", name, s.max_nbufs_seen, cc.max_bufs);
	tap_ok(cc.pool.nfree == nbufs, "%s: every buffer back in the pool (%u/%u)",
	       name, cc.pool.nfree, nbufs);
	tap_ok(ctr_get(&ctr.bytes_received) == len && ctr_get(&ctr.bytes_sent) == len,
	       "%s: counters received %llu sent %llu", name,
	       (unsigned long long)ctr_get(&ctr.bytes_received),
	       (unsigned long long)ctr_get(&ctr.bytes_sent));
	tap_ok(c->q_head == BUF_NONE && c->q_tail == BUF_NONE && !c->pending && !c->nbufs &&
	       !c->carry, "%s: connection closed with its queue dropped", name);
	ctx_unmake(&cc);
	free(in);
	free(out);
}

/* Tiny segments must be coalesced, not hold one buffer each. */
static void test_coalesce(void)
{
	struct conn_ctx cc;
	struct conn slot, *c;
	int fd;

	ctx_make(&cc, 64, 4096, 65536);
	c = conn_open(&cc, &slot, fd = sockfd());
	for (int i = 0; i < 1000; i++) {
		uint32_t bid = bufpool_get(&cc.pool);

		bufpool_ptr(&cc.pool, bid)[0] = (uint8_t)i;
		conn_received(&cc, c, bid, 0, 1);
	}
	tap_ok(c->pending == 1000 && c->nbufs == 1,
	       "coalesce: 1000 one-byte reads held in %u buffer(s), %u bytes", c->nbufs, c->pending);
	struct iovec iov[4];
	int k = conn_send_iov(&cc, c, iov, 4);
	bool ok = k == 1 && iov[0].iov_len == 1000;

	for (int i = 0; ok && i < 1000; i++)
		ok = ((uint8_t *)iov[0].iov_base)[i] == (uint8_t)i;
	tap_ok(ok, "coalesce: bytes in order");
	conn_fail(&cc, c, -ECONNRESET);
	tap_ok(conn_next(&cc, c) == CONN_NEXT_CLOSE, "fail: next is close");
	conn_close(&cc, c);
	close(fd);
	tap_ok(cc.pool.nfree == 64, "fail: queued buffers released on free");
	tap_ok(ctr_get(&ctr.conn_errors) == 1, "fail: counted as a connection error");
	ctx_unmake(&cc);
}

/* Backpressure pauses and resumes, and is counted once per pause. */
static void test_backpressure(void)
{
	struct conn_ctx cc;
	struct conn slot, *c;
	int fd;

	ctx_make(&cc, 64, 1024, 4096);
	c = conn_open(&cc, &slot, fd = sockfd());
	for (int i = 0; i < 4; i++)
		conn_received(&cc, c, bufpool_get(&cc.pool), 0, 1024);
	tap_ok(!(conn_next(&cc, c) & CONN_NEXT_READ) && (conn_next(&cc, c) & CONN_NEXT_SEND),
	       "backpressure: at the cap, send but do not read");
	tap_ok(ctr_get(&ctr.backpressure_pauses) == 1, "backpressure: one pause counted");
	conn_sent(&cc, c, 1);
	tap_ok(conn_next(&cc, c) & CONN_NEXT_READ, "backpressure: below the cap, read again");
	tap_ok(!(c->flags & CONN_PAUSED), "backpressure: pause flag cleared");
	conn_eof(&cc, c);
	tap_ok(conn_next(&cc, c) == CONN_NEXT_SEND, "eof: pending bytes still sent, no read");
	conn_sent(&cc, c, 4095);
	tap_ok(conn_next(&cc, c) == CONN_NEXT_SHUTDOWN, "eof: shut once flushed");
	conn_shut_done(&cc, c);
	tap_ok(conn_next(&cc, c) == CONN_NEXT_CLOSE, "eof: close after shut");
	conn_close(&cc, c);
	close(fd);
	ctx_unmake(&cc);
}

/* Drain: stop reading, flush, shut, then discard until EOF. */
static void test_drain(void)
{
	struct conn_ctx cc;
	struct conn slot, *c;
	int fd;

	ctx_make(&cc, 64, 1024, 65536);
	c = conn_open(&cc, &slot, fd = sockfd());
	conn_received(&cc, c, bufpool_get(&cc.pool), 0, 100);
	c->flags |= CONN_DRAIN;
	tap_ok(conn_next(&cc, c) == CONN_NEXT_SEND, "drain: flush pending, no read");
	conn_sent(&cc, c, 100);
	tap_ok(conn_next(&cc, c) == CONN_NEXT_SHUTDOWN, "drain: shut when flushed");
	conn_shut_done(&cc, c);
	tap_ok(conn_next(&cc, c) == CONN_NEXT_READ, "drain: read to discard until EOF");
	conn_received(&cc, c, bufpool_get(&cc.pool), 0, 500);
	tap_ok(c->pending == 0 && ctr_get(&ctr.bytes_discarded) == 500 && cc.pool.nfree == 64,
	       "drain: bytes after the shut discarded and buffer released");
	conn_eof(&cc, c);
	tap_ok(conn_next(&cc, c) == CONN_NEXT_CLOSE, "drain: close at EOF");
	conn_close(&cc, c);
	close(fd);
	ctx_unmake(&cc);
}

/* The pool's reserve: only for connections holding no buffer whose
 * client keeps up; a connection that blocked a send never gets it. */
static void test_reserve(void)
{
	struct conn_ctx cc;
	struct conn slots[2], *a, *b;
	uint32_t held[8];
	int fa, fb;

	ctx_make(&cc, 16, 1024, 65536);      /* reserve: 2 buffers */
	a = conn_open(&cc, &slots[0], fa = sockfd());
	b = conn_open(&cc, &slots[1], fb = sockfd());
	for (int i = 0; i < 8; i++)
		held[i] = bufpool_get(&cc.pool);
	for (int i = 0; i < 6; i++)
		bufpool_get(&cc.pool);                  /* 14 of 16 taken */
	tap_ok(cc.pool.nfree == cc.buf_reserve, "reserve: pool down to its %u reserve buffers",
	       cc.buf_reserve);
	tap_ok(conn_want_read(&cc, a), "reserve: a connection holding none may read");
	conn_received(&cc, a, bufpool_get(&cc.pool), 0, 1000);
	tap_ok(!conn_want_read(&cc, a), "reserve: holding one, it may not take another");
	conn_send_blocked(&cc, b);
	tap_ok(!conn_want_read(&cc, b), "reserve: a connection whose send blocked may not, "
	       "even holding none");
	conn_sent(&cc, a, 1000);
	conn_send_whole(&cc, a);
	tap_ok(conn_want_read(&cc, a), "reserve: after a whole send, a reads again");
	conn_received(&cc, b, held[0], 0, 10);
	conn_sent(&cc, b, 10);
	conn_send_whole(&cc, b);
	tap_ok(!(b->flags & CONN_SLOW), "reserve: a slow connection recovers once its queue "
	       "empties through a whole send");
	conn_close(&cc, a);
	conn_close(&cc, b);
	close(fa);
	close(fb);
	ctx_unmake(&cc);
}

/* Buffer exhaustion counts events: a connection that stays starved is
 * counted once, however often the backend looks for a buffer for it;
 * again only after it was given one. */
static void test_exhaustion_events(void)
{
	struct conn_ctx cc;
	struct conn slots[2], *a, *b;
	int fa, fb;

	ctx_make(&cc, 16, 1024, 65536);
	a = conn_open(&cc, &slots[0], fa = sockfd());
	b = conn_open(&cc, &slots[1], fb = sockfd());
	for (int i = 0; i < 100; i++)
		conn_no_buffer(&cc, a);            /* every walk of a starved list */
	tap_ok(ctr_get(&ctr.buf_exhausted) == 1, "exhaustion: a starved connection counts once "
	       "(%llu after 100 looks)", (unsigned long long)ctr_get(&ctr.buf_exhausted));
	conn_no_buffer(&cc, b);
	tap_ok(ctr_get(&ctr.buf_exhausted) == 2, "exhaustion: another connection is another event");
	conn_got_buffer(a);
	conn_no_buffer(&cc, a);
	conn_no_buffer(&cc, a);
	tap_ok(ctr_get(&ctr.buf_exhausted) == 3, "exhaustion: given a buffer, then starved again: "
	       "one more event");
	conn_received(&cc, a, bufpool_get(&cc.pool), 0, 10);
	conn_no_buffer(&cc, a);
	conn_no_buffer(&cc, b);                    /* b is still starved */
	conn_received(&cc, b, bufpool_get(&cc.pool), 0, 600);
	conn_no_buffer(&cc, b);
	conn_received_tail(&cc, b, 5);             /* a read into its tail room */
	conn_no_buffer(&cc, b);
	tap_ok(ctr_get(&ctr.buf_exhausted) == 6, "exhaustion: bytes received end the starvation too "
	       "(%llu)", (unsigned long long)ctr_get(&ctr.buf_exhausted));
	conn_close(&cc, a);
	conn_close(&cc, b);
	close(fa);
	close(fb);
	ctx_unmake(&cc);
}

int main(void)
{
	test_echo("1 byte", 1, 4096, 4096, 0, 64, 4096, 65536);
	test_echo("short reads and writes", 300000, 700, 300, 0, 64, 4096, 65536);
	test_echo("one-byte reads", 20000, 1, 5000, 0, 64, 4096, 65536);
	test_echo("one-byte writes", 20000, 5000, 1, 0, 64, 4096, 65536);
	test_echo("stalling writer", 500000, 9000, 9000, 3, 64, 4096, 16384);
	test_echo("tiny pool", 200000, 4096, 2000, 2, 8, 1024, 65536);
	test_echo("big buffers", 2000000, 100000, 30000, 5, 16, 65536, 131072);
	test_coalesce();
	test_backpressure();
	test_drain();
	test_reserve();
	test_exhaustion_events();
	return tap_done();
}
