/* test_worker.c - a worker's services around the echo logic, driven
 * without a thread or a backend: connection slots and their accounting,
 * max_connections, generations, the accept policy, idle timeouts. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tap.h"
#include "backend.h"
#include "bufpool.h"
#include "conn.h"
#include "worker.h"
#include "worker_int.h"

/* ---- a simulated backend ---- */

static unsigned updates;

static void sim_buf_release(struct conn_ctx *cc, uint32_t bid)
{
	bufpool_put(&cc->pool, bid);
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
	w->cc.ctr = &ctr;
	w->shared = &shared;
	atomic_store(&shared.nconns, 0);
	atomic_store(&shared.max_connections, cap);
	w->buffer_count = nbufs;
	w->buffer_size = bufsize;
	w->conn_cap = 64;
	if (worker_conns_alloc(w) || bufpool_init(&w->cc.pool, nbufs, bufsize))
		abort();
	w->cc.buf_release = sim_buf_release;
	w->ctl_fd = -1;
	w->exit_fd = -1;
	w->state = WORKER_RUNNING;
	w->accepting = true;
	/* the limits matter to the echo logic only (test_conn) */
	w->params = p;
	w->cc.max_pending = max_pending;
}

static void worker_unmake(struct worker *w)
{
	bufpool_fini(&w->cc.pool);
	worker_conns_free(w);
}

/* A client's socket, as far as the worker's bookkeeping goes. */
static int sockfd(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		abort();
	return fd;
}

/* A connection's life as the worker accounts it: a slot, its buffers,
 * and every count back once it is freed. */
static void test_accounting(void)
{
	struct worker w;
	struct conn *c;
	int fd;

	worker_make(&w, 64, 1024, 65536, 10);
	c = worker_conn_new(&w, fd = sockfd());
	tap_ok(c != NULL && w.nconns == 1 && atomic_load(&shared.nconns) == 1 &&
	       ctr_get(&ctr.current) == 1 && ctr_get(&ctr.accepted) == 1,
	       "accounting: a connection slot, counted open");
	if (!c)
		return;
	conn_received(&w.cc, c, bufpool_get(&w.cc.pool), 0, 100);
	conn_received(&w.cc, c, bufpool_get(&w.cc.pool), 0, 1000);
	worker_conn_free(&w, c);
	tap_ok(fcntl(fd, F_GETFD) < 0 && errno == EBADF, "accounting: its socket closed");
	tap_ok(w.nconns == 0 && atomic_load(&shared.nconns) == 0 && ctr_get(&ctr.current) == 0 &&
	       ctr_get(&ctr.closed) == 1, "accounting: connection accounted closed");
	tap_ok(w.cc.pool.nfree == 64, "accounting: its queued buffers back in the pool");
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
	}
	tap_ok(atomic_load(&shared.nconns) == 0, "limits: shared count back to 0");
	worker_unmake(&w);
}

/* EMFILE pauses accepting; EAGAIN and ECONNABORTED do not. */
static void test_accept_errors(void)
{
	struct worker w;

	worker_make(&w, 64, 1024, 65536, 3);
	w.cc.now_ms = 10000;
	tap_ok(!worker_accept_error(&w, -ECONNABORTED), "accept: ECONNABORTED does not pause");
	tap_ok(worker_accept_allowed(&w), "accept: allowed");
	tap_ok(worker_accept_error(&w, -EMFILE), "accept: EMFILE pauses");
	tap_ok(!worker_accept_allowed(&w), "accept: paused right after EMFILE");
	w.accepting = false;
	int t = worker_timeout_ms(&w);

	tap_ok(t > 0 && t <= 51, "accept: loop wakes within the pause (%d ms)", t);
	w.cc.now_ms += 60;
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
	w.cc.now_ms = 5000;
	a = worker_conn_new(&w, fa = sockfd());
	w.cc.now_ms = 5500;
	b = worker_conn_new(&w, fb = sockfd());
	w.cc.now_ms = 5800;
	conn_touch(&w.cc, a);              /* a is now the most recent */
	w.cc.now_ms = 6600;
	updates = 0;
	worker_tick(&w);
	tap_ok((b->flags & CONN_FAILED) && !(a->flags & CONN_FAILED) && updates == 1,
	       "idle: only the connection idle for 1 s is failed");
	tap_ok(ctr_get(&ctr.idle_timeouts) == 1, "idle: counted");
	int t = worker_timeout_ms(&w);

	tap_ok(t >= 199 && t <= 201, "idle: next wake-up when a expires (%d ms)", t);
	worker_conn_free(&w, a);
	worker_conn_free(&w, b);
	worker_unmake(&w);
}

/* A loopback TCP connection: *client and the accepted end (returned). */
static int tcp_pair(int *client)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), s;

	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 1) < 0 ||
	    getsockname(l, (struct sockaddr *)&a, &len) < 0)
		abort();
	*client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (*client < 0 || connect(*client, (struct sockaddr *)&a, sizeof(a)) < 0)
		abort();
	s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	if (s < 0)
		abort();
	close(l);
	return s;
}

static uint64_t hist_total(const struct hist_counts *h)
{
	uint64_t n = 0;

	for (unsigned k = 0; k <= HIST_BOUNDS_MAX; k++)
		n += ctr_get((_Atomic uint64_t *)&h->count[k]);
	return n;
}

static uint64_t hist_in(const struct hist_counts *h, enum hist_family f, uint64_t v)
{
	return ctr_get((_Atomic uint64_t *)&h->count[hist_bucket(&hist_defs[f], v)]);
}

/* Closing observes the connection: its duration, the bytes echoed and
 * the loopback RTT (a real TCP connection with a round trip behind it);
 * a socket that never connected has no RTT sample and is not counted
 * there, but is in duration and bytes, as in closed. */
static void test_close_observed(void)
{
	struct worker w;
	struct conn *c;
	char buf[1100] = { 0 };
	int cl, fd, fd2;
	uint32_t bid;

	worker_make(&w, 64, 2048, 65536, 10);
	fd = tcp_pair(&cl);
	c = worker_conn_new(&w, fd);
	if (!c)
		abort();
	c->start_us -= 300000;                /* open for 0.3 s */
	/* 1100 bytes there and back: the kernel takes an RTT sample */
	if (write(cl, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
		abort();
	bid = bufpool_get(&w.cc.pool);
	if (read(fd, bufpool_ptr(&w.cc.pool, bid), sizeof(buf)) != (ssize_t)sizeof(buf))
		abort();
	conn_received(&w.cc, c, bid, 0, sizeof(buf));
	if (write(fd, bufpool_ptr(&w.cc.pool, bid), sizeof(buf)) != (ssize_t)sizeof(buf))
		abort();
	conn_sent(&w.cc, c, sizeof(buf));
	if (read(cl, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
		abort();
	worker_conn_free(&w, c);
	c = worker_conn_new(&w, fd2 = sockfd());
	if (!c)
		abort();
	worker_conn_free(&w, c);

	const struct hist_counts *h = ctr.hist;
	uint64_t dsum = ctr_get((_Atomic uint64_t *)&h[HIST_DURATION].sum);

	tap_ok(ctr_get(&ctr.closed) == 2 && hist_total(&h[HIST_DURATION]) == 2 &&
	       hist_total(&h[HIST_BYTES]) == 2, "close: 2 closed, 2 in duration and in bytes");
	tap_ok(hist_in(&h[HIST_DURATION], HIST_DURATION, 300000) == 1 &&
	       hist_in(&h[HIST_DURATION], HIST_DURATION, 0) == 1 && dsum >= 300000 &&
	       dsum < 400000, "close: durations 0.3 s and about 0 in their buckets (sum %llu us)",
	       (unsigned long long)dsum);
	tap_ok(hist_in(&h[HIST_BYTES], HIST_BYTES, 1100) == 1 &&
	       hist_in(&h[HIST_BYTES], HIST_BYTES, 0) == 1 &&
	       ctr_get((_Atomic uint64_t *)&h[HIST_BYTES].sum) == 1100,
	       "close: bytes echoed 1100 and 0 in their buckets, sum 1100");
	tap_ok(hist_total(&h[HIST_RTT]) == 1 && ctr_get((_Atomic uint64_t *)&h[HIST_RTT].sum) > 0 &&
	       ctr_get((_Atomic uint64_t *)&h[HIST_RTT].sum) < 100000,
	       "close: one RTT sample, the loopback's (%llu us); none for the unconnected socket",
	       (unsigned long long)ctr_get((_Atomic uint64_t *)&h[HIST_RTT].sum));
	tap_ok(fcntl(fd, F_GETFD) < 0 && fcntl(fd2, F_GETFD) < 0, "close: both sockets closed");
	close(cl);
	worker_unmake(&w);
}

int main(void)
{
	test_accounting();
	test_close_observed();
	test_limits();
	test_accept_errors();
	test_idle();
	return tap_done();
}
