/* fuzz_conn.c - the echo state machine (conn.c, worker.c, bufpool.c)
 * driven by a script of backend events read from the fuzz input.
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
#include "backend.h"
#include "bufpool.h"
#include "conn.h"
#include "log.h"
#include "worker.h"

#define MAX_EVENTS 4096
#define MAX_STOLEN 64

static void sim_buf_release(struct worker *w, uint32_t bid)
{
	bufpool_put(&w->pool, bid);
}

static void sim_update_conn(struct worker *w, struct conn *c)
{
	(void)w;
	(void)c;
}

static void sim_update_accept(struct worker *w)
{
	(void)w;
}

static const struct backend_ops sim_ops = {
	.name = "fuzz",
	.update_conn = sim_update_conn,
	.update_accept = sim_update_accept,
};

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
static struct echod_shared shared;

struct sim {
	struct worker w;
	struct conn *c;
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

static void sim_init(struct sim *s, uint8_t geometry)
{
	static const uint32_t counts[] = { 8, 16, 32, 64 };
	static const uint32_t sizes[] = { 512, 1024, 2048, 4096 };
	static const uint32_t pendings[] = { 1024, 3000, 8192, 65536 };
	struct worker *w = &s->w;
	uint32_t per_conn, share;

	log_set_level(LOG_EMERG);         /* deadline and idle messages */
	memset(s, 0, sizeof(*s));
	memset(&ctr, 0, sizeof(ctr));
	atomic_store(&shared.nconns, 0);
	atomic_store(&shared.max_connections, 4);
	w->ops = &sim_ops;
	w->ctr = &ctr;
	w->shared = &shared;
	w->buffer_count = counts[geometry & 3];
	w->buffer_size = sizes[(geometry >> 2) & 3];
	w->conn_cap = 4;
	w->conns = calloc(w->conn_cap, sizeof(*w->conns));
	if (!w->conns || bufpool_init(&w->pool, w->buffer_count, w->buffer_size))
		abort();
	w->conn_free = CONN_IDX_NONE;
	ilist_init(&w->lru);
	w->buf_release = sim_buf_release;
	w->ctl_fd = w->exit_fd = -1;
	w->state = WORKER_RUNNING;
	w->accepting = true;
	w->now_ms = 1000000;
	/* as worker_apply_params() */
	w->params.max_pending = pendings[(geometry >> 4) & 3];
	w->params.idle_timeout_ms = geometry & 0x40 ? 2000 : 0;
	w->params.shutdown_ms = geometry & 0x80 ? 500 : 10000;
	per_conn = 2 * ((w->params.max_pending + w->buffer_size - 1) / w->buffer_size) + 2;
	share = w->buffer_count / 4 < 2 ? 2 : w->buffer_count / 4;
	w->max_bufs = per_conn < share ? per_conn : share;
	w->buf_reserve = w->buffer_count / 8 ? w->buffer_count / 8 : 1;
	s->fd = sock_fd();
	s->c = worker_conn_new(w, s->fd);
	FUZZ_CHECK(s->c != NULL, "no slot for the connection");
}

static void sim_fini(struct sim *s)
{
	bufpool_fini(&s->w.pool);
	free(s->w.conns);
}

/* Everything that must hold between two events. */
static void check_invariants(struct sim *s)
{
	struct worker *w = &s->w;
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
		FUZZ_CHECK(w->pool.nfree + s->n_stolen == w->pool.count,
			   "closed: %u buffers free + %u held, pool of %u", w->pool.nfree,
			   s->n_stolen, w->pool.count);
		return;
	}
	FUZZ_CHECK(s->accepted - s->out == c->pending, "pending %u, received - echoed %llu",
		   c->pending, (unsigned long long)(s->accepted - s->out));
	if (c->carry) {
		FUZZ_CHECK(c->carry_off < c->carry_len, "empty carry kept (%u/%u)", c->carry_off,
			   c->carry_len);
		queued += c->carry_len - c->carry_off;
	}
	for (uint32_t b = c->q_head; b != BUF_NONE; b = w->pool.meta[b].next) {
		const struct bufmeta *m = &w->pool.meta[b];

		FUZZ_CHECK(b < w->pool.count, "buffer id %u out of the pool", b);
		FUZZ_CHECK(m->off + m->len <= w->pool.size, "buffer %u: %u + %u past its end", b,
			   m->off, m->len);
		FUZZ_CHECK(nbufs < w->pool.count, "queue loops");
		if (m->next == BUF_NONE)
			FUZZ_CHECK(c->q_tail == b, "queue tail %u is not the last buffer %u", c->q_tail, b);
		queued += m->len;
		nbufs++;
	}
	FUZZ_CHECK(queued == c->pending, "queue holds %llu bytes, pending %u",
		   (unsigned long long)queued, c->pending);
	FUZZ_CHECK(nbufs == c->nbufs, "queue holds %u buffers, nbufs %u", nbufs, c->nbufs);
	FUZZ_CHECK(c->q_head != BUF_NONE || c->q_tail == BUF_NONE, "tail without head");
	FUZZ_CHECK(w->pool.nfree + c->nbufs + s->n_stolen == w->pool.count,
		   "buffers: %u free + %u queued + %u held != %u", w->pool.nfree, c->nbufs,
		   s->n_stolen, w->pool.count);
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
	struct worker *w = &s->w;
	struct conn *c = s->c;
	bool late = flags & 8, tail = flags & 1;
	unsigned next = conn_next(w, c);
	uint32_t bid, off, room, n;

	if (next & CONN_NEXT_READ) {
		/* backpressure: never asked to read at or over the limits */
		if (!(c->flags & CONN_WR_SHUT))
			FUZZ_CHECK(c->pending < w->params.max_pending && c->nbufs < w->max_bufs,
				   "read asked for with %u pending (max %u), %u buffers (max %u)",
				   c->pending, w->params.max_pending, c->nbufs, w->max_bufs);
		FUZZ_CHECK(!(c->flags & (CONN_EOF | CONN_FAILED)), "read asked for after EOF or failure");
	} else if (!late || (c->flags & CONN_EOF)) {
		return;    /* no read in flight; and nothing comes after the FIN */
	}
	if (s->client_eof) {
		conn_eof(w, c);
		return;
	}
	room = tail && !late ? conn_tail_room(w, c, &bid, &off) : 0;
	if (room) {
		FUZZ_CHECK(!(c->flags & (CONN_WR_SHUT | CONN_FAILED)), "tail room on a shut connection");
		n = 1 + want % room;
		fill(s, bufpool_ptr(&w->pool, bid) + off, n);
		s->accepted += n;
		conn_received_tail(w, c, n);
		return;
	}
	bid = bufpool_get(&w->pool);
	if (bid == BUF_NONE)
		return;    /* exhausted: the backend waits for a buffer */
	off = flags & 2 ? (uint32_t)where * w->pool.size / 512 : 0;
	n = 1 + want % (w->pool.size - off);
	fill(s, bufpool_ptr(&w->pool, bid) + off, n);
	if (c->flags & (CONN_WR_SHUT | CONN_FAILED)) {
		s->discarded += n;
	} else {
		FUZZ_CHECK(s->discarded == 0, "bytes queued after some were discarded");
		s->accepted += n;
	}
	conn_received(w, c, bid, off, n);
}

static void ev_send(struct sim *s, unsigned flags, uint16_t max_bytes, uint8_t max_iov)
{
	struct worker *w = &s->w;
	struct conn *c = s->c;
	struct iovec iov[8];
	uint32_t offered = 0, done = 0, want;
	int k, max = 1 + max_iov % 8;

	if (!(conn_next(w, c) & CONN_NEXT_SEND))
		return;
	FUZZ_CHECK(c->pending > 0, "send asked for with nothing pending");
	k = conn_send_iov(w, c, iov, max);
	FUZZ_CHECK(k >= 1 && k <= max, "%d iov entries for at most %d", k, max);
	for (int i = 0; i < k; i++) {
		FUZZ_CHECK(iov[i].iov_len > 0, "empty iov entry %d", i);
		offered += (uint32_t)iov[i].iov_len;
	}
	FUZZ_CHECK(offered <= c->pending, "%u bytes offered, %u pending", offered, c->pending);
	if (flags & 1) {                        /* EAGAIN: the socket took nothing */
		conn_send_blocked(w, c);
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
	conn_sent(w, c, done);
	if (done < offered)
		conn_send_blocked(w, c);
	else
		conn_send_whole(w, c);
}

static void ev_close(struct sim *s)
{
	struct worker *w = &s->w;
	struct conn *c = s->c;

	if (!s->failed) {
		FUZZ_CHECK(s->shut, "closed without shutting the write side first");
		FUZZ_CHECK(s->out == s->accepted, "closed after echoing %llu of %llu bytes",
			   (unsigned long long)s->out, (unsigned long long)s->accepted);
	}
	worker_conn_free(w, c);
	s->c = NULL;
	FUZZ_CHECK(w->nconns == 0 && atomic_load(&shared.nconns) == 0 && ctr_get(&ctr.current) == 0,
		   "connection not accounted closed");
}

/* Hand the connection to "another worker": export, free the slot, import. */
static void ev_handover(struct sim *s)
{
	struct worker *w = &s->w;
	struct conn_export e;
	uint64_t queued = s->c->pending;

	if (w->state != WORKER_RUNNING || (s->c->flags & CONN_FAILED))
		return;
	FUZZ_CHECK(conn_export(w, s->c, &e) == 0, "conn_export failed");
	FUZZ_CHECK(e.len == queued && e.fd == s->fd, "exported %u bytes of %llu", e.len,
		   (unsigned long long)queued);
	for (uint32_t i = 0; i < e.len; i++)
		FUZZ_CHECK(e.data[i] == stream_byte(s->out + i), "exported byte %u differs", i);
	worker_conn_free(w, s->c);
	s->c = worker_conn_new(w, s->fd);
	FUZZ_CHECK(s->c != NULL, "no slot for the imported connection");
	conn_import(w, s->c, &e);
	FUZZ_CHECK(e.data == NULL, "import left the data with the export");
}

static void fail(struct sim *s, int err)
{
	if (!(s->c->flags & CONN_FAILED) && err)
		s->conn_errors++;
	conn_fail(&s->w, s->c, err);
}

static void ev_tick(struct sim *s, uint16_t ms)
{
	struct worker *w = &s->w;
	bool was_failed = s->c && (s->c->flags & CONN_FAILED);

	w->now_ms += ms;
	worker_tick(w);
	if (s->c && (s->c->flags & CONN_FAILED) && !was_failed)
		s->failed = true;
}

/* One step of the end: the client reads everything and shuts its side.
 * Returns false when the connection is closed. */
static bool finish_step(struct sim *s)
{
	unsigned next = conn_next(&s->w, s->c);

	if (next & CONN_NEXT_CLOSE) {
		ev_close(s);
		return false;
	}
	if (next & CONN_NEXT_SHUTDOWN) {
		FUZZ_CHECK(s->c->pending == 0, "shutdown asked for with %u bytes pending", s->c->pending);
		s->shut = true;
		conn_shut_done(&s->w, s->c);
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
			if (conn_next(&s.w, c) & CONN_NEXT_SHUTDOWN) {
				FUZZ_CHECK(c->pending == 0 && s.out == s.accepted,
					   "shutdown asked for with %u bytes pending", c->pending);
				s.shut = true;
				conn_shut_done(&s.w, c);
			}
			break;
		case 9:
			if (conn_next(&s.w, c) & CONN_NEXT_CLOSE)
				ev_close(&s);
			break;
		case 10:                        /* SIGTERM: as worker_control() */
			if (s.w.state == WORKER_RUNNING && !(c->flags & CONN_FREEZE)) {
				s.w.state = WORKER_DRAINING;
				s.w.drain_deadline_ms = s.w.now_ms + s.w.params.shutdown_ms;
				c->flags |= CONN_DRAIN;
			}
			break;
		case 11: {                      /* other connections take buffers */
			unsigned n = fuzz_u8(&in) % 16;

			while (n-- && s.n_stolen < MAX_STOLEN) {
				uint32_t bid = bufpool_get(&s.w.pool);

				if (bid == BUF_NONE)
					break;
				s.stolen[s.n_stolen++] = bid;
			}
			break;
		}
		case 12: {                      /* ... and give them back */
			unsigned n = fuzz_u8(&in) % 16;

			while (n-- && s.n_stolen)
				bufpool_put(&s.w.pool, s.stolen[--s.n_stolen]);
			break;
		}
		case 13:
			ev_tick(&s, fuzz_u16(&in));
			break;
		case 14:                        /* hand-over: flush phase first */
			if (s.w.state == WORKER_RUNNING)
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
		bufpool_put(&s.w.pool, s.stolen[--s.n_stolen]);
	if (s.c && (s.c->flags & CONN_FREEZE) && !(s.c->flags & CONN_FAILED))
		ev_handover(&s);
	s.client_eof = true;
	for (unsigned steps = 0; s.c; steps++) {
		FUZZ_CHECK(steps < 100000, "connection never closes (flags 0x%x, %u pending)",
			   s.c->flags, s.c->pending);
		finish_step(&s);
		check_invariants(&s);
	}
	FUZZ_CHECK(s.w.pool.nfree == s.w.pool.count, "%u of %u buffers back in the pool",
		   s.w.pool.nfree, s.w.pool.count);
	sim_fini(&s);
	return 0;
}
