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

/* ---- PROXY protocol header before the echo ---- */

static struct {
	unsigned calls;
	int n;
	struct proxy_header h;
	bool deny;
} pd;

static void sim_proxy_done(struct conn_ctx *cc, struct conn *c, int n, const struct proxy_header *h)
{
	pd.calls++;
	pd.n = n;
	if (h)
		pd.h = *h;
	if (n > 0 && pd.deny)
		conn_fail(cc, c, 0);
}

/* input = header (hlen bytes) + payload, read max_read bytes at a time by
 * a connection awaiting its header: the echo is the payload alone. */
static void proxy_case(const char *name, const uint8_t *in, size_t len, size_t hlen,
		       unsigned max_read, int want_n, bool deny)
{
	struct conn_ctx cc;
	struct sim s = { .in = in, .in_len = len, .max_read = max_read, .max_write = 3000 };
	uint8_t *out = malloc(len + 1);
	struct conn slot, *c;
	bool done;
	int fd;

	memset(&pd, 0, sizeof(pd));
	pd.deny = deny;
	s.out = out;
	ctx_make(&cc, 64, 512, 4096);
	cc.proxy_done = sim_proxy_done;
	c = conn_open(&cc, &slot, sockfd());
	c->flags |= CONN_PROXY_WAIT;
	fd = c->fd;
	done = sim_run(&cc, c, &s);
	close(fd);
	tap_ok(done && s.closed, "proxy %s: finished", name);
	tap_ok(pd.calls == 1 && pd.n == want_n, "proxy %s: the hook heard once, %d (want %d)",
	       name, pd.n, want_n);
	if (want_n > 0 && !deny) {
		tap_ok(s.out_len == len - hlen && memcmp(out, in + hlen, len - hlen) == 0,
		       "proxy %s: the %zu bytes after the %zu-byte header echoed exactly, the "
		       "header never (got %zu)", name, len - hlen, hlen, s.out_len);
		tap_ok(ctr_get(&ctr.bytes_discarded) == hlen && ctr_get(&ctr.bytes_received) == len &&
		       ctr_get(&ctr.bytes_sent) == len - hlen,
		       "proxy %s: received %zu = sent %zu + discarded %zu (the header)", name, len,
		       len - hlen, hlen);
	} else {
		tap_ok(s.out_len == 0, "proxy %s: nothing echoed (%zu bytes)", name, s.out_len);
	}
	tap_ok(cc.pool.nfree == 64, "proxy %s: every buffer back in the pool", name);
	ctx_unmake(&cc);
	free(out);
}

static void test_proxy(void)
{
	static const char v1[] = "PROXY TCP4 192.0.2.7 198.51.100.1 51000 7\r\n";
	static const uint8_t v2[] = {
		0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
		0x21, 0x21, 0x00, 0x2a,                       /* PROXY, TCP6, 36 + 6 */
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x09,  /* src */
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,  /* dst */
		0xc3, 0x50, 0x00, 0x07,                       /* ports 50000, 7 */
		0x04, 0x00, 0x03, 'a', 'b', 'c',              /* NOOP TLV */
	};
	size_t plen = 100000, l1 = sizeof(v1) - 1;
	uint8_t *in = malloc(sizeof(v2) + plen);
	static const uint8_t mapped[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
					    192, 0, 2, 7 };

	for (size_t i = 0; i < plen; i++)
		in[sizeof(v2) + i] = (uint8_t)rnd(256);
	memcpy(in + sizeof(v2) - l1, v1, l1);
	proxy_case("v1, one-byte reads", in + sizeof(v2) - l1, l1 + plen, l1, 1, (int)l1, false);
	tap_ok(pd.h.version == 1 && pd.h.has_source && memcmp(pd.h.src, mapped, 16) == 0 &&
	       pd.h.src_port == 51000, "proxy v1: the hook was given 192.0.2.7 port 51000");
	proxy_case("v1, large reads", in + sizeof(v2) - l1, l1 + plen, l1, 5000, (int)l1, false);
	memcpy(in, v2, sizeof(v2));
	proxy_case("v2 + TLV, one-byte reads", in, sizeof(v2) + plen, sizeof(v2), 1,
		   (int)sizeof(v2), false);
	tap_ok(pd.h.version == 2 && pd.h.has_source && pd.h.src[15] == 9 && pd.h.src_port == 50000,
	       "proxy v2: the hook was given 2001:db8::9 port 50000");
	proxy_case("v2 + TLV, random reads", in, sizeof(v2) + plen, sizeof(v2), 700,
		   (int)sizeof(v2), false);
	proxy_case("v2, header alone", in, sizeof(v2), sizeof(v2), 9, (int)sizeof(v2), false);
	proxy_case("v2, the source denied by the hook", in, sizeof(v2) + plen, sizeof(v2), 700,
		   (int)sizeof(v2), true);
	proxy_case("partial v2 then EOF", in, sizeof(v2) - 1, 0, 5, -PROXY_ERR_PARTIAL, false);
	proxy_case("no bytes then EOF", in, 0, 0, 5, -PROXY_ERR_PARTIAL, false);
	memcpy(in, "GET / HTTP/1.0\r\n\r\n", 18);
	proxy_case("HTTP instead of a header", in, 18 + 1000, 0, 3, -PROXY_ERR_BAD_SIGNATURE, false);
	memset(in, 'x', 2000);
	memcpy(in, "PROXY UNKNOWN ", 14);
	proxy_case("v1 without CRLF", in, 2000, 0, 64, -PROXY_ERR_OVERSIZED, false);
	free(in);
}

/* A connection handed over with half its header: the rest arrives at the
 * importer, which finds the header whole and echoes what follows. */
static void test_proxy_handover(void)
{
	static const char hdr[] = "PROXY TCP4 192.0.2.7 198.51.100.1 51000 7\r\nhello";
	struct conn_ctx a, b;
	struct conn sa, sb, *c, *d;
	struct conn_export e;
	struct iovec iov[4];
	uint32_t bid;
	int fd = sockfd(), k;

	memset(&pd, 0, sizeof(pd));
	ctx_make(&a, 16, 512, 4096);
	a.proxy_done = sim_proxy_done;
	c = conn_open(&a, &sa, fd);
	c->flags |= CONN_PROXY_WAIT;
	bid = bufpool_get(&a.pool);
	memcpy(bufpool_ptr(&a.pool, bid), hdr, 20);
	conn_received(&a, c, bid, 0, 20);
	tap_ok(pd.calls == 0 && conn_next(&a, c) == CONN_NEXT_READ,
	       "proxy hand-over: 20 bytes of the header: read more, send nothing");
	tap_ok(conn_export(&a, c, &e) == 0 && (e.flags & CONN_PROXY_WAIT) && e.len == 20,
	       "proxy hand-over: exported awaiting its header, with its 20 bytes");
	conn_drop(&a, c);
	ctx_make(&b, 16, 512, 4096);        /* ctx_make clears the counters: fine */
	b.proxy_done = sim_proxy_done;
	d = conn_open(&b, &sb, fd);
	conn_import(&b, d, &e);
	tap_ok((d->flags & CONN_PROXY_WAIT) && conn_next(&b, d) == CONN_NEXT_READ,
	       "proxy hand-over: imported still awaiting it");
	bid = bufpool_get(&b.pool);
	memcpy(bufpool_ptr(&b.pool, bid), hdr + 20, sizeof(hdr) - 1 - 20);
	conn_received(&b, d, bid, 0, sizeof(hdr) - 1 - 20);
	k = conn_send_iov(&b, d, iov, 4);
	tap_ok(pd.calls == 1 && pd.n == 43 && !(d->flags & CONN_PROXY_WAIT) && k == 1 &&
	       iov[0].iov_len == 5 && memcmp(iov[0].iov_base, "hello", 5) == 0,
	       "proxy hand-over: the header completes across carry and queue; 'hello' to echo");
	conn_drop(&b, d);
	close(fd);
	ctx_unmake(&a);
	ctx_unmake(&b);
}

/* A connection awaiting its header when the worker drains: closed, as
 * it has nothing to flush. */
static void test_proxy_drain(void)
{
	struct conn_ctx cc;
	struct conn slot, *c;
	uint32_t bid;
	int fd = sockfd();

	ctx_make(&cc, 16, 512, 4096);
	c = conn_open(&cc, &slot, fd);
	c->flags |= CONN_PROXY_WAIT;
	bid = bufpool_get(&cc.pool);
	memcpy(bufpool_ptr(&cc.pool, bid), "PROXY TCP4 ", 11);
	conn_received(&cc, c, bid, 0, 11);
	c->flags |= CONN_DRAIN;
	tap_ok(conn_next(&cc, c) == CONN_NEXT_CLOSE, "proxy drain: awaiting its header: closed");
	c->flags |= CONN_FREEZE;
	tap_ok(conn_next(&cc, c) == 0, "proxy drain: frozen for a hand-over: left alone");
	conn_drop(&cc, c);
	close(fd);
	tap_ok(cc.pool.nfree == 16, "proxy drain: its buffer back in the pool");
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
	test_proxy();
	test_proxy_handover();
	test_proxy_drain();
	return tap_done();
}
