/* test_conn.c - the shared echo logic (conn.c, worker.c) driven by a
 * simulated backend: short reads, short writes, stalls, buffer
 * exhaustion, EOF, drain and failure.  Output must equal input. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tap.h"
#include "bufpool.h"
#include "backend.h"
#include "conn.h"
#include "worker.h"

/* ---- a simulated backend ---- */

static unsigned updates;

static void sim_buf_release(struct worker *w, uint32_t bid)
{
	bufpool_put(&w->pool, bid);
}

static void sim_update_conn(struct worker *w, struct conn *c)
{
	(void)w;
	(void)c;
	updates++;
}

static void sim_update_accept(struct worker *w)
{
	(void)w;
}

static const struct backend_ops sim_ops = {
	.name = "sim",
	.update_conn = sim_update_conn,
	.update_accept = sim_update_accept,
};

static struct worker_counters ctr;
static struct echod_shared shared;

static void worker_make(struct worker *w, uint32_t nbufs, uint32_t bufsize,
			uint32_t max_pending, uint32_t cap)
{
	struct worker_params p = { .max_pending = max_pending, .idle_timeout_ms = 0,
				   .shutdown_ms = 1000 };

	memset(w, 0, sizeof(*w));
	memset(&ctr, 0, sizeof(ctr));
	w->ops = &sim_ops;
	w->ctr = &ctr;
	w->shared = &shared;
	atomic_store(&shared.nconns, 0);
	atomic_store(&shared.max_connections, cap);
	w->buffer_count = nbufs;
	w->buffer_size = bufsize;
	w->conn_cap = 64;
	w->conns_maplen = w->conn_cap * sizeof(struct conn);
	w->conns = mmap(NULL, w->conns_maplen, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	w->conn_free = CONN_IDX_NONE;
	ilist_init(&w->lru);
	if (bufpool_init(&w->pool, nbufs, bufsize))
		abort();
	w->buf_release = sim_buf_release;
	w->ctl_fd = -1;
	w->exit_fd = -1;
	w->state = WORKER_RUNNING;
	w->accepting = true;
	/* what worker_apply_params does; reached through worker_control */
	w->params = p;
	w->max_bufs = 2 * ((max_pending + bufsize - 1) / bufsize) + 2;
	if (w->max_bufs > nbufs / 4)
		w->max_bufs = nbufs / 4 < 2 ? 2 : nbufs / 4;
	w->buf_reserve = nbufs / 8 ? nbufs / 8 : 1;
}

static void worker_unmake(struct worker *w)
{
	bufpool_fini(&w->pool);
	munmap(w->conns, w->conns_maplen);
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
static void sim_read(struct worker *w, struct conn *c, struct sim *s)
{
	uint32_t bid, off, room, n;
	bool tail = false;

	if (c->pending >= w->params.max_pending)
		s->reads_while_over++;
	if (s->in_off == s->in_len) {
		conn_eof(w, c);
		return;
	}
	room = conn_tail_room(w, c, &bid, &off);
	if (room >= w->pool.size / 4 && rnd(2)) {
		tail = true;
	} else {
		bid = bufpool_get(&w->pool);
		if (bid == BUF_NONE)
			return;           /* exhausted: wait for sends */
		off = rnd(2) ? rnd(w->pool.size / 2) : 0;   /* kernel may use any offset */
		room = w->pool.size - off;
	}
	n = 1 + rnd(s->max_read < room ? s->max_read : room);
	if (n > room)
		n = room;
	if (n > s->in_len - s->in_off)
		n = (uint32_t)(s->in_len - s->in_off);
	memcpy(bufpool_ptr(&w->pool, bid) + off, s->in + s->in_off, n);
	s->in_off += n;
	if (tail)
		conn_received_tail(w, c, n);
	else
		conn_received(w, c, bid, off, n);
}

static void sim_send(struct worker *w, struct conn *c, struct sim *s)
{
	struct iovec iov[8];
	int k = conn_send_iov(w, c, iov, 8);
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
	conn_sent(w, c, done);
}

/* Run a connection to completion; returns false if it never finished. */
static bool sim_run(struct worker *w, struct conn *c, struct sim *s)
{
	for (s->steps = 0; s->steps < 10000000; s->steps++) {
		unsigned next = conn_next(w, c);

		if (c->pending > s->max_pending_seen)
			s->max_pending_seen = c->pending;
		if (c->nbufs > s->max_nbufs_seen)
			s->max_nbufs_seen = c->nbufs;
		if (next & CONN_NEXT_CLOSE) {
			worker_conn_free(w, c);
			s->closed = true;
			return true;
		}
		if (next & CONN_NEXT_SHUTDOWN) {
			s->shut = true;
			conn_shut_done(w, c);
			continue;
		}
		/* the simulated kernel picks at random what is ready */
		if ((next & CONN_NEXT_READ) && (!(next & CONN_NEXT_SEND) || rnd(2)))
			sim_read(w, c, s);
		else if (next & CONN_NEXT_SEND)
			sim_send(w, c, s);
		else if (next & CONN_NEXT_READ)
			sim_read(w, c, s);
		else
			return false;     /* nothing to do and not closed: stuck */
	}
	return false;
}

static void test_echo(const char *name, size_t len, unsigned max_read, unsigned max_write,
		      unsigned stall, uint32_t nbufs, uint32_t bufsize, uint32_t max_pending)
{
	struct worker w;
	struct sim s = { .max_read = max_read, .max_write = max_write, .stall_every = stall };
	uint8_t *in = malloc(len + 1), *out = malloc(len + 1);
	struct conn *c;
	bool done;

	for (size_t i = 0; i < len; i++)
		in[i] = (uint8_t)rnd(256);
	s.in = in;
	s.in_len = len;
	s.out = out;
	worker_make(&w, nbufs, bufsize, max_pending, 10);
	c = worker_conn_new(&w, sockfd());
	tap_ok(c != NULL, "%s: connection slot", name);
	if (!c)
		return;
	int fd = c->fd;

	done = sim_run(&w, c, &s);
	close(fd);
	tap_ok(done && s.closed, "%s: finished in %u steps", name, s.steps);
	tap_ok(s.out_len == len && memcmp(in, out, len) == 0,
	       "%s: %zu bytes echoed exactly (got %zu)", name, len, s.out_len);
	tap_ok(s.shut, "%s: write side shut after the echo", name);
	tap_ok(s.reads_while_over == 0 && s.max_pending_seen < max_pending + bufsize,
	       "%s: backpressure: max pending %u < cap %u + one buffer, %u reads over cap",
	       name, s.max_pending_seen, max_pending, s.reads_while_over);
	tap_ok(s.max_nbufs_seen <= w.max_bufs + 1,
	       "%s: buffers held at most %u (limit %u)", name, s.max_nbufs_seen, w.max_bufs);
	tap_ok(w.pool.nfree == nbufs, "%s: every buffer back in the pool (%u/%u)",
	       name, w.pool.nfree, nbufs);
	tap_ok(ctr_get(&ctr.bytes_received) == len && ctr_get(&ctr.bytes_sent) == len,
	       "%s: counters received %llu sent %llu", name,
	       (unsigned long long)ctr_get(&ctr.bytes_received),
	       (unsigned long long)ctr_get(&ctr.bytes_sent));
	tap_ok(w.nconns == 0 && atomic_load(&shared.nconns) == 0 && ctr_get(&ctr.current) == 0,
	       "%s: connection accounted closed", name);
	worker_unmake(&w);
	free(in);
	free(out);
}

/* Tiny segments must be coalesced, not hold one buffer each. */
static void test_coalesce(void)
{
	struct worker w;
	struct conn *c;
	int fd;

	worker_make(&w, 64, 4096, 65536, 10);
	c = worker_conn_new(&w, fd = sockfd());
	for (int i = 0; i < 1000; i++) {
		uint32_t bid = bufpool_get(&w.pool);

		bufpool_ptr(&w.pool, bid)[0] = (uint8_t)i;
		conn_received(&w, c, bid, 0, 1);
	}
	tap_ok(c->pending == 1000 && c->nbufs == 1,
	       "coalesce: 1000 one-byte reads held in %u buffer(s), %u bytes", c->nbufs, c->pending);
	struct iovec iov[4];
	int k = conn_send_iov(&w, c, iov, 4);
	bool ok = k == 1 && iov[0].iov_len == 1000;

	for (int i = 0; ok && i < 1000; i++)
		ok = ((uint8_t *)iov[0].iov_base)[i] == (uint8_t)i;
	tap_ok(ok, "coalesce: bytes in order");
	conn_fail(&w, c, -ECONNRESET);
	tap_ok(conn_next(&w, c) == CONN_NEXT_CLOSE, "fail: next is close");
	worker_conn_free(&w, c);
	close(fd);
	tap_ok(w.pool.nfree == 64, "fail: queued buffers released on free");
	tap_ok(ctr_get(&ctr.conn_errors) == 1, "fail: counted as a connection error");
	worker_unmake(&w);
}

/* Backpressure pauses and resumes, and is counted once per pause. */
static void test_backpressure(void)
{
	struct worker w;
	struct conn *c;
	int fd;

	worker_make(&w, 64, 1024, 4096, 10);
	c = worker_conn_new(&w, fd = sockfd());
	for (int i = 0; i < 4; i++)
		conn_received(&w, c, bufpool_get(&w.pool), 0, 1024);
	tap_ok(!(conn_next(&w, c) & CONN_NEXT_READ) && (conn_next(&w, c) & CONN_NEXT_SEND),
	       "backpressure: at the cap, send but do not read");
	tap_ok(ctr_get(&ctr.backpressure_pauses) == 1, "backpressure: one pause counted");
	conn_sent(&w, c, 1);
	tap_ok(conn_next(&w, c) & CONN_NEXT_READ, "backpressure: below the cap, read again");
	tap_ok(!(c->flags & CONN_PAUSED), "backpressure: pause flag cleared");
	conn_eof(&w, c);
	tap_ok(conn_next(&w, c) == CONN_NEXT_SEND, "eof: pending bytes still sent, no read");
	conn_sent(&w, c, 4095);
	tap_ok(conn_next(&w, c) == CONN_NEXT_SHUTDOWN, "eof: shut once flushed");
	conn_shut_done(&w, c);
	tap_ok(conn_next(&w, c) == CONN_NEXT_CLOSE, "eof: close after shut");
	worker_conn_free(&w, c);
	close(fd);
	worker_unmake(&w);
}

/* Drain: stop reading, flush, shut, then discard until EOF. */
static void test_drain(void)
{
	struct worker w;
	struct conn *c;
	int fd;

	worker_make(&w, 64, 1024, 65536, 10);
	c = worker_conn_new(&w, fd = sockfd());
	conn_received(&w, c, bufpool_get(&w.pool), 0, 100);
	c->flags |= CONN_DRAIN;
	tap_ok(conn_next(&w, c) == CONN_NEXT_SEND, "drain: flush pending, no read");
	conn_sent(&w, c, 100);
	tap_ok(conn_next(&w, c) == CONN_NEXT_SHUTDOWN, "drain: shut when flushed");
	conn_shut_done(&w, c);
	tap_ok(conn_next(&w, c) == CONN_NEXT_READ, "drain: read to discard until EOF");
	conn_received(&w, c, bufpool_get(&w.pool), 0, 500);
	tap_ok(c->pending == 0 && ctr_get(&ctr.bytes_discarded) == 500 && w.pool.nfree == 64,
	       "drain: bytes after the shut discarded and buffer released");
	conn_eof(&w, c);
	tap_ok(conn_next(&w, c) == CONN_NEXT_CLOSE, "drain: close at EOF");
	worker_conn_free(&w, c);
	close(fd);
	worker_unmake(&w);
}

/* max_connections is exact; slots are reused with a new generation. */
static void test_limits(void)
{
	struct worker w;
	struct conn *c[4];
	int fds[4];
	uint32_t idx, gen;

	worker_make(&w, 64, 1024, 65536, 3);
	for (int i = 0; i < 3; i++)
		c[i] = worker_conn_new(&w, fds[i] = sockfd());
	tap_ok(c[0] && c[1] && c[2], "limits: 3 of max 3 accepted");
	c[3] = worker_conn_new(&w, sockfd());
	tap_ok(c[3] == NULL && ctr_get(&ctr.rejected) == 1, "limits: the 4th rejected and counted");
	idx = c[1]->idx;
	gen = c[1]->gen;
	worker_conn_free(&w, c[1]);
	close(fds[1]);
	tap_ok(worker_conn_get(&w, idx, gen) == NULL, "limits: a freed slot's old generation is stale");
	c[3] = worker_conn_new(&w, fds[3] = sockfd());
	tap_ok(c[3] && c[3]->idx == idx && c[3]->gen != gen,
	       "limits: slot reused with a new generation");
	tap_ok(worker_conn_get(&w, idx, c[3]->gen) == c[3], "limits: lookup by new generation");
	w.state = WORKER_DRAINING;
	tap_ok(worker_conn_new(&w, sockfd()) == NULL, "limits: no accept while draining");
	for (int i = 0; i < 4; i++) {
		if (i == 1)
			continue;
		worker_conn_free(&w, c[i]);
		close(fds[i]);
	}
	tap_ok(atomic_load(&shared.nconns) == 0, "limits: shared count back to 0");
	worker_unmake(&w);
}

/* EMFILE pauses accepting; EAGAIN and ECONNABORTED do not. */
static void test_accept_errors(void)
{
	struct worker w;

	worker_make(&w, 64, 1024, 65536, 3);
	w.now_ms = 10000;
	tap_ok(!worker_accept_error(&w, -ECONNABORTED), "accept: ECONNABORTED does not pause");
	tap_ok(worker_accept_allowed(&w), "accept: allowed");
	tap_ok(worker_accept_error(&w, -EMFILE), "accept: EMFILE pauses");
	tap_ok(!worker_accept_allowed(&w), "accept: paused right after EMFILE");
	w.accepting = false;
	int t = worker_timeout_ms(&w);

	tap_ok(t > 0 && t <= 51, "accept: loop wakes within the pause (%d ms)", t);
	w.now_ms += 60;
	tap_ok(worker_accept_allowed(&w), "accept: allowed again after the pause");
	tap_ok(ctr_get(&ctr.accept_errors[AERR_EMFILE]) == 1, "accept: EMFILE counted");
	worker_unmake(&w);
}

/* Idle connections time out, least recently active first. */
static void test_idle(void)
{
	struct worker w;
	struct conn *a, *b;
	int fa, fb;

	worker_make(&w, 64, 1024, 65536, 10);
	w.params.idle_timeout_ms = 1000;
	w.now_ms = 5000;
	a = worker_conn_new(&w, fa = sockfd());
	w.now_ms = 5500;
	b = worker_conn_new(&w, fb = sockfd());
	w.now_ms = 5800;
	worker_conn_touch(&w, a);          /* a is now the most recent */
	w.now_ms = 6600;
	updates = 0;
	worker_tick(&w);
	tap_ok((b->flags & CONN_FAILED) && !(a->flags & CONN_FAILED) && updates == 1,
	       "idle: only the connection idle for 1 s is failed");
	tap_ok(ctr_get(&ctr.idle_timeouts) == 1, "idle: counted");
	int t = worker_timeout_ms(&w);

	tap_ok(t >= 199 && t <= 201, "idle: next wake-up when a expires (%d ms)", t);
	worker_conn_free(&w, a);
	worker_conn_free(&w, b);
	close(fa);
	close(fb);
	worker_unmake(&w);
}

/* The pool's reserve: only for connections holding no buffer whose
 * client keeps up; a connection that blocked a send never gets it. */
static void test_reserve(void)
{
	struct worker w;
	struct conn *a, *b;
	uint32_t held[8];
	int fa, fb;

	worker_make(&w, 16, 1024, 65536, 10);      /* reserve: 2 buffers */
	a = worker_conn_new(&w, fa = sockfd());
	b = worker_conn_new(&w, fb = sockfd());
	for (int i = 0; i < 8; i++)
		held[i] = bufpool_get(&w.pool);
	for (int i = 0; i < 6; i++)
		bufpool_get(&w.pool);                  /* 14 of 16 taken */
	tap_ok(w.pool.nfree == w.buf_reserve, "reserve: pool down to its %u reserve buffers",
	       w.buf_reserve);
	tap_ok(conn_want_read(&w, a), "reserve: a connection holding none may read");
	conn_received(&w, a, bufpool_get(&w.pool), 0, 1000);
	tap_ok(!conn_want_read(&w, a), "reserve: holding one, it may not take another");
	conn_send_blocked(&w, b);
	tap_ok(!conn_want_read(&w, b), "reserve: a connection whose send blocked may not, "
	       "even holding none");
	conn_sent(&w, a, 1000);
	conn_send_whole(&w, a);
	tap_ok(conn_want_read(&w, a), "reserve: after a whole send, a reads again");
	conn_received(&w, b, held[0], 0, 10);
	conn_sent(&w, b, 10);
	conn_send_whole(&w, b);
	tap_ok(!(b->flags & CONN_SLOW), "reserve: a slow connection recovers once its queue "
	       "empties through a whole send");
	worker_conn_free(&w, a);
	worker_conn_free(&w, b);
	close(fa);
	close(fb);
	worker_unmake(&w);
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
	test_limits();
	test_accept_errors();
	test_idle();
	test_reserve();
	return tap_done();
}
