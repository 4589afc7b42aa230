/* fuzz_conn.c - the echo state machine (conn.c, bufpool.c) driven with
 * its context alone (struct conn_ctx) by a script of backend events read
 * from the fuzz input; the worker's part (time, drain, the slot) is
 * simulated here as worker.c does it.
 *
 * Input: one byte of pool geometry and limits, then events, each an op
 * byte (low 4 bits: the op, high 4 bits: its flags) and its arguments:
 * recv of N bytes (into a fresh buffer at some offset, or into the tail
 * room as the epoll backend does; "late" as an io_uring completion may
 * be, even when conn_next() did not ask for a read), a send the socket
 * takes whole, in part or not at all (EAGAIN), the client's EOF, a reset,
 * shutdown, close, the worker draining, time passing (idle timeout, drain
 * deadline), other connections holding buffers (exhaustion, the reserve)
 * and a hand-over to another worker (freeze, export, import).  At the end
 * the client reads everything and shuts its side.
 *
 * The oracle, checked after every event: what was sent is exactly the
 * stream the client sent, in order, from its first byte (nothing lost,
 * repeated or extra); the queue holds exactly the bytes received and not
 * yet sent; every buffer is either free, queued or held by the script;
 * reads are asked for only below the backpressure limits; the counters
 * agree.  At the end the connection must close (never hang): after
 * echoing everything received, unless it failed, and with every buffer
 * back in the pool.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "bufpool.h"
#include "conn.h"
#include "counters.h"

#define MAX_EVENTS 4096
#define MAX_STOLEN 64

static void sim_buf_release(struct conn_ctx *cc, uint32_t bid)
{
	bufpool_put(&cc->pool, bid);
}

/* The client's byte at stream position i: no period, so any loss,
 * repetition or reordering shows. */
static uint8_t stream_byte(uint64_t i)
{
	uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull;

	x ^= x >> 29;
	x *= 0xBF58476D1CE4E5B9ull;
	x ^= x >> 32;
	return (uint8_t)x;
}

static struct worker_counters ctr;

struct sim {
	struct conn_ctx cc;
	struct conn slot;
	struct conn *c;         /* &slot while open, else NULL */
	uint32_t idle_timeout_ms;   /* the worker's timers, 0: none */
	uint32_t shutdown_ms;
	bool draining;
	uint64_t drain_deadline_ms;
	int fd;
	uint64_t in_pos;        /* bytes the client sent */
	uint64_t accepted;      /* of those, queued to be echoed */
	uint64_t discarded;     /* of those, discarded (after our shut or a failure) */
	uint64_t out;           /* bytes echoed */
	uint64_t conn_errors;
	uint32_t stolen[MAX_STOLEN];
	unsigned n_stolen;
	bool client_eof;        /* the client shut its write side */
	bool shut;              /* we shut our write side */
	bool failed;            /* the connection failed (reset, idle, deadline) */
};

static int sock_fd(void)
{
	static int fd = -1;
	int sv[2];

	if (fd < 0) {
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
			abort();
		close(sv[1]);
		fd = sv[0];
	}
	return fd;
}

/* A fresh slot holds fd (as worker_conn_new() would give it). */
static struct conn *sim_open(struct sim *s)
{
	struct conn *c = &s->slot;

	memset(c, 0, sizeof(*c));
	c->fd = s->fd;
	c->flags = CONN_IN_USE;
	conn_start(&s->cc, c);
	return c;
}

static void sim_init(struct sim *s, uint8_t geometry)
{
	static const uint32_t counts[] = { 8, 16, 32, 64 };
	static const uint32_t sizes[] = { 512, 1024, 2048, 4096 };
	static const uint32_t pendings[] = { 1024, 3000, 8192, 65536 };
	struct conn_ctx *cc = &s->cc;
	uint32_t count = counts[geometry & 3], size = sizes[(geometry >> 2) & 3];
	uint32_t per_conn, share;

	memset(s, 0, sizeof(*s));
	memset(&ctr, 0, sizeof(ctr));
	cc->ctr = &ctr;
	if (bufpool_init(&cc->pool, count, size))
		abort();
	cc->buf_release = sim_buf_release;
	cc->now_ms = 1000000;
	/* as worker_apply_params() */
	cc->max_pending = pendings[(geometry >> 4) & 3];
	s->idle_timeout_ms = geometry & 0x40 ? 2000 : 0;
	s->shutdown_ms = geometry & 0x80 ? 500 : 10000;
	per_conn = 2 * ((cc->max_pending + size - 1) / size) + 2;
	share = count / 4 < 2 ? 2 : count / 4;
	cc->max_bufs = per_conn < share ? per_conn : share;
	cc->buf_reserve = count / 8 ? count / 8 : 1;
	s->fd = sock_fd();
	s->c = sim_open(s);
}

static void sim_fini(struct sim *s)
{
	bufpool_fini(&s->cc.pool);
}

/* Everything that must hold between two events. */
static void check_invariants(struct sim *s)
{
	struct conn_ctx *cc = &s->cc;
	struct conn *c = s->c;
	uint64_t queued = 0;
	uint32_t nbufs = 0;

	FUZZ_CHECK(ctr_get(&ctr.bytes_received) == s->accepted, "received counter %llu, queued %llu",
		   (unsigned long long)ctr_get(&ctr.bytes_received), (unsigned long long)s->accepted);
	FUZZ_CHECK(ctr_get(&ctr.bytes_sent) == s->out, "sent counter %llu, echoed %llu",
		   (unsigned long long)ctr_get(&ctr.bytes_sent), (unsigned long long)s->out);
	FUZZ_CHECK(ctr_get(&ctr.bytes_discarded) == s->discarded, "discarded counter %llu, expected %llu",
		   (unsigned long long)ctr_get(&ctr.bytes_discarded), (unsigned long long)s->discarded);
	FUZZ_CHECK(ctr_get(&ctr.conn_errors) == s->conn_errors, "connection errors %llu, expected %llu",
		   (unsigned long long)ctr_get(&ctr.conn_errors), (unsigned long long)s->conn_errors);
	FUZZ_CHECK(s->accepted + s->discarded == s->in_pos, "bytes lost on the way in");
	if (!c) {
		FUZZ_CHECK(cc->pool.nfree + s->n_stolen == cc->pool.count,
			   "closed: %u buffers free + %u held, pool of %u", cc->pool.nfree,
			   s->n_stolen, cc->pool.count);
		return;
	}
	FUZZ_CHECK(s->accepted - s->out == c->pending, "pending %u, received - echoed %llu",
		   c->pending, (unsigned long long)(s->accepted - s->out));
	if (c->carry) {
		FUZZ_CHECK(c->carry_off < c->carry_len, "empty carry kept (%u/%u)", c->carry_off,
			   c->carry_len);
		queued += c->carry_len - c->carry_off;
	}
	for (uint32_t b = c->q_head; b != BUF_NONE; b = cc->pool.meta[b].next) {
		const struct bufmeta *m = &cc->pool.meta[b];

		FUZZ_CHECK(b < cc->pool.count, "buffer id %u out of the pool", b);
		FUZZ_CHECK(m->off + m->len <= cc->pool.size, "buffer %u: %u + %u past its end", b,
			   m->off, m->len);
		FUZZ_CHECK(nbufs < cc->pool.count, "queue loops");
		if (m->next == BUF_NONE)
			FUZZ_CHECK(c->q_tail == b, "queue tail %u is not the last buffer %u", c->q_tail, b);
		queued += m->len;
		nbufs++;
	}
	FUZZ_CHECK(queued == c->pending, "queue holds %llu bytes, pending %u",
		   (unsigned long long)queued, c->pending);
	FUZZ_CHECK(nbufs == c->nbufs, "queue holds %u buffers, nbufs %u", nbufs, c->nbufs);
	FUZZ_CHECK(c->q_head != BUF_NONE || c->q_tail == BUF_NONE, "tail without head");
	FUZZ_CHECK(cc->pool.nfree + c->nbufs + s->n_stolen == cc->pool.count,
		   "buffers: %u free + %u queued + %u held != %u", cc->pool.nfree, c->nbufs,
		   s->n_stolen, cc->pool.count);
	FUZZ_CHECK(!(c->flags & CONN_WR_SHUT) || s->shut, "WR_SHUT without a shutdown");
}

/* Deliver n client bytes into buffer memory p (stream order). */
static void fill(struct sim *s, uint8_t *p, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		p[i] = stream_byte(s->in_pos + i);
	s->in_pos += n;
}

static void ev_recv(struct sim *s, unsigned flags, uint16_t want, uint8_t where)
{
	struct conn_ctx *cc = &s->cc;
	struct conn *c = s->c;
	bool late = flags & 8, tail = flags & 1;
	unsigned next = conn_next(cc, c);
	uint32_t bid, off, room, n;

	if (next & CONN_NEXT_READ) {
		/* backpressure: never asked to read at or over the limits */
		if (!(c->flags & CONN_WR_SHUT))
			FUZZ_CHECK(c->pending < cc->max_pending && c->nbufs < cc->max_bufs,
				   "read asked for with %u pending (max %u), %u buffers (max %u)",
				   c->pending, cc->max_pending, c->nbufs, cc->max_bufs);
		FUZZ_CHECK(!(c->flags & (CONN_EOF | CONN_FAILED)), "read asked for after EOF or failure");
	} else if (!late || (c->flags & CONN_EOF)) {
		return;    /* no read in flight; and nothing comes after the FIN */
	}
	if (s->client_eof) {
		conn_eof(cc, c);
		return;
	}
	room = tail && !late ? conn_tail_room(cc, c, &bid, &off) : 0;
	if (room) {
		FUZZ_CHECK(!(c->flags & (CONN_WR_SHUT | CONN_FAILED)), "tail room on a shut connection");
		n = 1 + want % room;
		fill(s, bufpool_ptr(&cc->pool, bid) + off, n);
		s->accepted += n;
		conn_received_tail(cc, c, n);
		return;
	}
	bid = bufpool_get(&cc->pool);
	if (bid == BUF_NONE)
		return;    /* exhausted: the backend waits for a buffer */
	off = flags & 2 ? (uint32_t)where * cc->pool.size / 512 : 0;
	n = 1 + want % (cc->pool.size - off);
	fill(s, bufpool_ptr(&cc->pool, bid) + off, n);
	if (c->flags & (CONN_WR_SHUT | CONN_FAILED)) {
		s->discarded += n;
	} else {
		FUZZ_CHECK(s->discarded == 0, "bytes queued after some were discarded");
		s->accepted += n;
	}
	conn_received(cc, c, bid, off, n);
}

static void ev_send(struct sim *s, unsigned flags, uint16_t max_bytes, uint8_t max_iov)
{
	struct conn_ctx *cc = &s->cc;
	struct conn *c = s->c;
	struct iovec iov[8];
	uint32_t offered = 0, done = 0, want;
	int k, max = 1 + max_iov % 8;

	if (!(conn_next(cc, c) & CONN_NEXT_SEND))
		return;
	FUZZ_CHECK(c->pending > 0, "send asked for with nothing pending");
	k = conn_send_iov(cc, c, iov, max);
	FUZZ_CHECK(k >= 1 && k <= max, "%d iov entries for at most %d", k, max);
	for (int i = 0; i < k; i++) {
		FUZZ_CHECK(iov[i].iov_len > 0, "empty iov entry %d", i);
		offered += (uint32_t)iov[i].iov_len;
	}
	FUZZ_CHECK(offered <= c->pending, "%u bytes offered, %u pending", offered, c->pending);
	if (flags & 1) {                        /* EAGAIN: the socket took nothing */
		conn_send_blocked(cc, c);
		return;
	}
	want = flags & 2 ? offered : 1 + max_bytes % offered;
	for (int i = 0; i < k && done < want; i++) {
		const uint8_t *p = iov[i].iov_base;
		uint32_t n = (uint32_t)iov[i].iov_len;

		if (n > want - done)
			n = want - done;
		for (uint32_t j = 0; j < n; j++)
			FUZZ_CHECK(p[j] == stream_byte(s->out + done + j),
				   "echo byte %llu is 0x%02x, the client sent 0x%02x",
				   (unsigned long long)(s->out + done + j), p[j],
				   stream_byte(s->out + done + j));
		done += n;
	}
	s->out += done;
	conn_sent(cc, c, done);
	if (done < offered)
		conn_send_blocked(cc, c);
	else
		conn_send_whole(cc, c);
}

static void ev_close(struct sim *s)
{
	struct conn_ctx *cc = &s->cc;
	struct conn *c = s->c;

	if (!s->failed) {
		FUZZ_CHECK(s->shut, "closed without shutting the write side first");
		FUZZ_CHECK(s->out == s->accepted, "closed after echoing %llu of %llu bytes",
			   (unsigned long long)s->out, (unsigned long long)s->accepted);
	}
	conn_drop(cc, c);
	s->c = NULL;
	FUZZ_CHECK(c->q_head == BUF_NONE && c->q_tail == BUF_NONE && !c->pending && !c->nbufs &&
		   !c->carry, "closed with a queue left (%u bytes, %u buffers)", c->pending, c->nbufs);
}

/* Hand the connection to "another worker": export, free the slot, import. */
static void ev_handover(struct sim *s)
{
	struct conn_ctx *cc = &s->cc;
	struct conn_export e;
	uint64_t queued = s->c->pending;

	if (s->draining || (s->c->flags & CONN_FAILED))
		return;
	FUZZ_CHECK(conn_export(cc, s->c, &e) == 0, "conn_export failed");
	FUZZ_CHECK(e.len == queued && e.fd == s->fd, "exported %u bytes of %llu", e.len,
		   (unsigned long long)queued);
	for (uint32_t i = 0; i < e.len; i++)
		FUZZ_CHECK(e.data[i] == stream_byte(s->out + i), "exported byte %u differs", i);
	conn_drop(cc, s->c);
	s->c = sim_open(s);
	conn_import(cc, s->c, &e);
	FUZZ_CHECK(e.data == NULL, "import left the data with the export");
}

static void fail(struct sim *s, int err)
{
	if (!(s->c->flags & CONN_FAILED) && err)
		s->conn_errors++;
	conn_fail(&s->cc, s->c, err);
}

static void ev_tick(struct sim *s, uint16_t ms)
{
	struct conn_ctx *cc = &s->cc;
	bool was_failed = s->c && (s->c->flags & CONN_FAILED);

	cc->now_ms += ms;
	/* as worker_tick(): the idle timeout, then the drain deadline */
	if (s->c && !was_failed && s->idle_timeout_ms &&
	    s->c->last_active + s->idle_timeout_ms <= cc->now_ms)
		conn_fail(cc, s->c, 0);
	if (s->c && s->draining && cc->now_ms >= s->drain_deadline_ms)
		conn_fail(cc, s->c, 0);
	if (s->c && (s->c->flags & CONN_FAILED) && !was_failed)
		s->failed = true;
}

/* One step of the end: the client reads everything and shuts its side.
 * Returns false when the connection is closed. */
static bool finish_step(struct sim *s)
{
	unsigned next = conn_next(&s->cc, s->c);

	if (next & CONN_NEXT_CLOSE) {
		ev_close(s);
		return false;
	}
	if (next & CONN_NEXT_SHUTDOWN) {
		FUZZ_CHECK(s->c->pending == 0, "shutdown asked for with %u bytes pending", s->c->pending);
		s->shut = true;
		conn_shut_done(&s->cc, s->c);
	} else if (next & CONN_NEXT_SEND) {
		ev_send(s, 2, 0, 7);
	} else if (next & CONN_NEXT_READ) {
		ev_recv(s, 0, 0, 0);
	} else {
		FUZZ_CHECK(0, "stuck: conn_next() says nothing to do, flags 0x%x, %u pending",
			   s->c->flags, s->c->pending);
	}
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size, 0 };
	struct sim s;
	unsigned events = 0;

	sim_init(&s, fuzz_u8(&in));
	while (fuzz_more(&in) && events++ < MAX_EVENTS && s.c) {
		uint8_t op = fuzz_u8(&in);
		unsigned flags = op >> 4;
		struct conn *c = s.c;

		switch (op & 0x0f) {
		case 0:
		case 1:
		case 2: {
			uint16_t want = fuzz_u16(&in);

			ev_recv(&s, flags, want, fuzz_u8(&in));
			break;
		}
		case 3:
		case 4:
		case 5: {
			uint16_t max_bytes = fuzz_u16(&in);

			ev_send(&s, flags, max_bytes, fuzz_u8(&in));
			break;
		}
		case 6:
			s.client_eof = true;
			break;
		case 7:                         /* reset, or a failed send or recv */
			fail(&s, flags & 1 ? -EPIPE : -ECONNRESET);
			s.failed = true;
			break;
		case 8:
			if (conn_next(&s.cc, c) & CONN_NEXT_SHUTDOWN) {
				FUZZ_CHECK(c->pending == 0 && s.out == s.accepted,
					   "shutdown asked for with %u bytes pending", c->pending);
				s.shut = true;
				conn_shut_done(&s.cc, c);
			}
			break;
		case 9:
			if (conn_next(&s.cc, c) & CONN_NEXT_CLOSE)
				ev_close(&s);
			break;
		case 10:                        /* SIGTERM: as worker_control() */
			if (!s.draining && !(c->flags & CONN_FREEZE)) {
				s.draining = true;
				s.drain_deadline_ms = s.cc.now_ms + s.shutdown_ms;
				c->flags |= CONN_DRAIN;
			}
			break;
		case 11: {                      /* other connections take buffers */
			unsigned n = fuzz_u8(&in) % 16;

			while (n-- && s.n_stolen < MAX_STOLEN) {
				uint32_t bid = bufpool_get(&s.cc.pool);

				if (bid == BUF_NONE)
					break;
				s.stolen[s.n_stolen++] = bid;
			}
			break;
		}
		case 12: {                      /* ... and give them back */
			unsigned n = fuzz_u8(&in) % 16;

			while (n-- && s.n_stolen)
				bufpool_put(&s.cc.pool, s.stolen[--s.n_stolen]);
			break;
		}
		case 13:
			ev_tick(&s, fuzz_u16(&in));
			break;
		case 14:                        /* hand-over: flush phase first */
			if (!s.draining)
				c->flags |= CONN_FREEZE;
			break;
		case 15:
			ev_handover(&s);
			break;
		}
		check_invariants(&s);
	}

	/* the end: buffers back, hand-over completed, the client reads
	 * everything and shuts its side; the connection must close */
	while (s.n_stolen)
		bufpool_put(&s.cc.pool, s.stolen[--s.n_stolen]);
	if (s.c && (s.c->flags & CONN_FREEZE) && !(s.c->flags & CONN_FAILED))
		ev_handover(&s);
	s.client_eof = true;
	for (unsigned steps = 0; s.c; steps++) {
		FUZZ_CHECK(steps < 100000, "connection never closes (flags 0x%x, %u pending)",
			   s.c->flags, s.c->pending);
		finish_step(&s);
		check_invariants(&s);
	}
	FUZZ_CHECK(s.cc.pool.nfree == s.cc.pool.count, "%u of %u buffers back in the pool",
		   s.cc.pool.nfree, s.cc.pool.count);
	sim_fini(&s);
	return 0;
}
