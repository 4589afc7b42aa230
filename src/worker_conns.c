/* worker_conns.c - a worker's connection slots and the services around
 * them: the slot table (generations, free list), the idle list and the
 * intrusive lists over slots, the accept policy (the source's judgement:
 * the allow/deny lists and the per-source limits; max_connections, the fd
 * reserve, pausing on EMFILE & co) and the timers (idle timeouts, the
 * accept pause, the drain deadline).  See worker.h. */
#include "worker.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backend.h"
#include "log.h"
#include "worker_int.h"

#define ACCEPT_PAUSE_MS   50     /* after EMFILE & co: retry this soon */
#define FD_RESERVE        16     /* last fds below the limit: never a client's */
#define TICK_MAX_MS       1000

/* ---- intrusive lists ---- */

static inline struct ilink *ilink_of(struct conn *c, size_t link)
{
	return (struct ilink *)((char *)c + link);
}

void ilist_init(struct ilist *l)
{
	l->head = l->tail = ILIST_NONE;
}

void ilist_push_tail(struct worker *w, struct ilist *l, struct conn *c, size_t link)
{
	struct ilink *k = ilink_of(c, link);

	k->next = ILIST_NONE;
	k->prev = l->tail;
	if (l->tail == ILIST_NONE)
		l->head = c->idx;
	else
		ilink_of(&w->conns[l->tail], link)->next = c->idx;
	l->tail = c->idx;
}

void ilist_remove(struct worker *w, struct ilist *l, struct conn *c, size_t link)
{
	struct ilink *k = ilink_of(c, link);

	if (k->prev == ILIST_NONE)
		l->head = k->next;
	else
		ilink_of(&w->conns[k->prev], link)->next = k->next;
	if (k->next == ILIST_NONE)
		l->tail = k->prev;
	else
		ilink_of(&w->conns[k->next], link)->prev = k->prev;
	k->prev = k->next = ILIST_NONE;
}

struct conn *ilist_pop(struct worker *w, struct ilist *l, size_t link)
{
	struct conn *c;

	if (l->head == ILIST_NONE)
		return NULL;
	c = &w->conns[l->head];
	ilist_remove(w, l, c, link);
	return c;
}

#define LRU offsetof(struct conn, lru)

/* ---- connections ---- */

struct conn *worker_conn_get(struct worker *w, uint32_t idx, uint32_t gen)
{
	struct conn *c;

	if (idx >= w->conn_hw)
		return NULL;
	c = &w->conns[idx];
	if (!(c->flags & CONN_IN_USE) || c->gen != gen)
		return NULL;
	return c;
}

/* The echo logic's touch hook: c was active, first time this tick. */
static void conn_touched(struct conn_ctx *cc, struct conn *c)
{
	struct worker *w = worker_of(cc);

	if (w->lru.tail != c->idx) {
		ilist_remove(w, &w->lru, c, LRU);
		ilist_push_tail(w, &w->lru, c, LRU);
	}
}

static void reject(struct worker *w, int fd, const char *why)
{
	log_debug("worker %u: connection fd %d closed at once (%s)", w->id, fd, why);
	close(fd);
	ctr_add(&w->cc.ctr->rejected, 1);
}

static const char *const deny_why[CDENY__COUNT] = {
	[CDENY_LIST] = "allow/deny", [CDENY_PER_SOURCE_CONNECTIONS] = "per_source_connections",
	[CDENY_PER_SOURCE_RATE] = "per_source_rate", [CDENY_TABLE_FULL] = "table_full",
};

/* A denial's log line: the lists' and a full table's at most once a minute
 * per source and event loop (srclog); a per-source limit's at most once a
 * minute per source (the table remembers), naming the limit as inetd does. */
static void log_denial(struct worker *w, const uint8_t a[16], uint16_t port, enum conn_deny why,
		       const struct persource_refusal *r)
{
	char shown[48], more[80] = "", limit[80] = "";
	bool by_entry = why == CDENY_PER_SOURCE_CONNECTIONS || why == CDENY_PER_SOURCE_RATE;

	if (by_entry ? !r->log : !srclog_may(&w->deny_log, a, w->cc.now_ms))
		return;
	policy_source_text(a, shown, sizeof(shown));
	if (!by_entry)
		srclog_take_suppressed(&w->deny_log, "denial(s)", more, sizeof(more));
	else if (r->unlogged)
		snprintf(more, sizeof(more), "; %u refusal(s) of this source not logged", r->unlogged);
	if (why == CDENY_PER_SOURCE_CONNECTIONS)
		snprintf(limit, sizeof(limit), ": exceeded connections (limit %u)", r->limit);
	else if (why == CDENY_PER_SOURCE_RATE)
		snprintf(limit, sizeof(limit), ": exceeded connections/s (limit %u/s, burst %u)",
			 r->limit, r->burst);
	else if (why == CDENY_TABLE_FULL)
		snprintf(limit, sizeof(limit), ": the per-source table's %u entries all hold "
			 "connections", r->limit);
	log_warning("worker %u: TCP connection from %s port %u denied (%s)%s%s",
		    w->id, shown, port, deny_why[why], limit, more);
}

/* The one place a TCP source is judged, before a byte is echoed: whether
 * the allow/deny lists let it in, then the per-source limits (which count
 * it: *slot).  Counted by reason and logged when refused. */
bool worker_source_refused(struct worker *w, const uint8_t a[16], uint16_t port,
			   uint32_t *slot)
{
	struct persource_refusal r = { 0 };
	enum conn_deny why;

	*slot = PERSOURCE_NONE;
	if (!policy_allows(w->params.policy, a)) {
		why = CDENY_LIST;
	} else {
		switch (persource_conn_open(w->shared->persource, a, w->cc.now_ms, slot, &r)) {
		case PS_PASS:        return false;
		case PS_CONNECTIONS: why = CDENY_PER_SOURCE_CONNECTIONS; break;
		case PS_RATE:        why = CDENY_PER_SOURCE_RATE; break;
		default:             why = CDENY_TABLE_FULL; break;
		}
	}
	ctr_add(&w->cc.ctr->denied[why], 1);
	log_denial(w, a, port, why, &r);
	return true;
}

void worker_reset_close(struct worker *w, int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) < 0)
		log_errno(LOG_DEBUG, errno, "worker %u: setsockopt SO_LINGER fd %d", w->id, fd);
	close(fd);
}

/* A direct client, judged at accept by its peer address; a source denied
 * is closed with RST. */
static bool source_denied(struct worker *w, int fd, uint32_t *slot)
{
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	uint8_t a[16];
	uint16_t port;

	*slot = PERSOURCE_NONE;
	if (!w->params.policy && !w->shared->persource)
		return false;           /* nothing to judge by: no syscall either */
	if (getpeername(fd, (struct sockaddr *)&ss, &sslen) < 0) {
		/* ENOTCONN: reset before it was accepted; the echo logic sees it */
		log_errno(LOG_DEBUG, errno, "worker %u: getpeername fd %d", w->id, fd);
		return false;
	}
	if (!policy_source((struct sockaddr *)&ss, sslen, a, &port) ||
	    !worker_source_refused(w, a, port, slot))
		return false;
	worker_reset_close(w, fd);
	return true;
}

struct conn *worker_slot_alloc(struct worker *w, int fd)
{
	struct conn *c;
	uint32_t idx;

	if (w->conn_free != CONN_IDX_NONE) {
		idx = w->conn_free;
		w->conn_free = w->conns[idx].lru.next;
	} else if (w->conn_hw < w->conn_cap) {
		idx = w->conn_hw++;
		w->conns[idx].gen = 0;
	} else {
		return NULL;
	}
	c = &w->conns[idx];
	c->fd = fd;
	c->idx = idx;
	c->flags = CONN_IN_USE;
	c->bstate = 0;
	c->bdata = 0;
	c->wait.prev = c->wait.next = ILIST_NONE;
	c->hdr.prev = c->hdr.next = ILIST_NONE;
	conn_start(&w->cc, c);
	ilist_push_tail(w, &w->lru, c, LRU);
	if (w->state == WORKER_DRAINING)
		c->flags |= CONN_DRAIN;
	w->nconns++;
	ctr_add(&w->cc.ctr->current, 1);
	return c;
}

struct conn *worker_conn_new(struct worker *w, int fd)
{
	struct conn *c;
	uint32_t n, slot;
	int one = 1;

	/* a backend that accepts asynchronously (io_uring) may still
	 * complete an accept after its worker began a hand-over: that
	 * connection goes along with the others, never refused */
	if (w->state != WORKER_RUNNING && w->state != WORKER_HANDOVER) {
		reject(w, fd, "stopping");
		return NULL;
	}
	if (w->params.proxy_enabled) {
		/* only a trusted proxy; the source is judged once its header
		 * names it */
		if (worker_proxy_untrusted(w, fd))
			return NULL;
		slot = PERSOURCE_NONE;
	} else if (source_denied(w, fd, &slot)) {
		return NULL;
	}
	/* exact across workers: reserve a place, give it back if over */
	n = atomic_fetch_add_explicit(&w->shared->nconns, 1, memory_order_relaxed);
	if (n >= atomic_load_explicit(&w->shared->max_connections, memory_order_relaxed)) {
		atomic_fetch_sub_explicit(&w->shared->nconns, 1, memory_order_relaxed);
		persource_conn_close(w->shared->persource, slot);
		reject(w, fd, "max_connections");
		return NULL;
	}
	c = worker_slot_alloc(w, fd);
	if (!c) {
		atomic_fetch_sub_explicit(&w->shared->nconns, 1, memory_order_relaxed);
		persource_conn_close(w->shared->persource, slot);
		reject(w, fd, "connection table full");
		return NULL;
	}
	c->src_slot = slot;
	if (w->params.proxy_enabled)
		worker_proxy_wait(w, c);
	if (w->state == WORKER_HANDOVER)
		c->flags |= CONN_FREEZE;
	ctr_add(&w->cc.ctr->accepted, 1);
	/* echo replies must not wait for Nagle + delayed ACK */
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		log_errno(LOG_DEBUG, errno, "setsockopt TCP_NODELAY fd %d", fd);
	return c;
}

void worker_slot_release(struct worker *w, struct conn *c)
{
	worker_proxy_forget(w, c);
	conn_drop(&w->cc, c);
	ilist_remove(w, &w->lru, c, LRU);
	c->flags = 0;
	c->fd = -1;
	c->gen = (c->gen + 1) & CONN_GEN_MASK;
	c->lru.next = w->conn_free;
	w->conn_free = c->idx;
	w->nconns--;
	atomic_store_explicit(&w->cc.ctr->current,
			      ctr_get(&w->cc.ctr->current) - 1, memory_order_relaxed);
}

/* c closes (its fd still open): its duration, the bytes echoed and the
 * kernel's smoothed RTT into the worker's histograms.  tcpi_rtt 0 is no
 * sample (the kernel takes one from the handshake's SYN-ACK unless it was
 * retransmitted, then from each ACK of data): not observed, so the RTT
 * histogram counts at most the connections closed. */
static void conn_observe(struct worker *w, struct conn *c)
{
	struct hist_counts *h = w->cc.ctr->hist;
	uint64_t now = conn_now_us();
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	hist_observe(&h[HIST_DURATION], HIST_DURATION, now > c->start_us ? now - c->start_us : 0);
	hist_observe(&h[HIST_BYTES], HIST_BYTES, c->sent);
	if (getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0) {
		log_errno(LOG_DEBUG, errno, "worker %u: getsockopt TCP_INFO fd %d", w->id, c->fd);
		return;
	}
	if (len >= offsetof(struct tcp_info, tcpi_rtt) + sizeof(ti.tcpi_rtt) && ti.tcpi_rtt)
		hist_observe(&h[HIST_RTT], HIST_RTT, ti.tcpi_rtt);
}

void worker_conn_free(struct worker *w, struct conn *c)
{
	conn_observe(w, c);
	if (close(c->fd) < 0) {
		ctr_add(&w->cc.ctr->op_errors[WOP_CLOSE], 1);
		log_errno(LOG_WARNING, errno, "worker %u: close fd %d", w->id, c->fd);
	}
	persource_conn_close(w->shared->persource, c->src_slot);
	worker_slot_release(w, c);
	atomic_fetch_sub_explicit(&w->shared->nconns, 1, memory_order_relaxed);
	ctr_add(&w->cc.ctr->closed, 1);
}

/* ---- accept policy ---- */

bool worker_accept_error(struct worker *w, int err)
{
	enum accept_err kind;

	switch (err) {
	case -EAGAIN:
	case -EINTR:
	case -ECONNABORTED:
	case -EPROTO:
	case -EPERM:           /* a firewall said no to this one */
	case -ENETDOWN:        /* accept4(2): already-pending network errors */
	case -ENOPROTOOPT:
	case -EHOSTDOWN:
	case -ENONET:
	case -EHOSTUNREACH:
	case -EOPNOTSUPP:
	case -ENETUNREACH:
		return false;
	case -EMFILE:  kind = AERR_EMFILE;  break;
	case -ENFILE:  kind = AERR_ENFILE;  break;
	case -ENOBUFS: kind = AERR_ENOBUFS; break;
	case -ENOMEM:  kind = AERR_ENOMEM;  break;
	default:       kind = AERR_OTHER;   break;
	}
	/* log the first of a run only; the counter says how many */
	if (w->accept_resume_ms + 1000 < w->cc.now_ms)
		log_errno(LOG_WARNING, err, "worker %u: accept4 failed, pausing accepts for %d ms",
			  w->id, ACCEPT_PAUSE_MS);
	ctr_add(&w->cc.ctr->accept_errors[kind], 1);
	w->accept_resume_ms = w->cc.now_ms + ACCEPT_PAUSE_MS;
	return true;
}

bool worker_fd_reserved(struct worker *w, int fd)
{
	return fd >= w->fd_ceiling;
}

/* Clients may use the fds below the limit but the last FD_RESERVE (a
 * quarter of a small limit): out of fds, /metrics still answers (an
 * accept, /proc/self files) and a reload can still start its parser. */
static void fd_ceiling_init(struct worker *w)
{
	struct rlimit rl;

	w->fd_ceiling = INT_MAX;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur < (rlim_t)INT_MAX) {
		int lim = (int)rl.rlim_cur;

		w->fd_ceiling = lim - (lim / 4 < FD_RESERVE ? lim / 4 : FD_RESERVE);
	}
}

bool worker_accept_allowed(struct worker *w)
{
	/* RUNNING only: not while draining or handing over */
	return w->state == WORKER_RUNNING && w->cc.now_ms >= w->accept_resume_ms;
}

/* ---- the table ---- */

int worker_conns_alloc(struct worker *w)
{
	void *mem;
	int err;

	w->conns_maplen = (size_t)w->conn_cap * sizeof(struct conn);
	mem = mmap(NULL, w->conns_maplen, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem == MAP_FAILED) {
		err = -errno;
		snprintf(w->init_error, sizeof(w->init_error),
			 "mmap of %u connection slots: %s", w->conn_cap, strerror(-err));
		return err;
	}
	w->conns = mem;
	w->conn_hw = 0;
	w->conn_free = CONN_IDX_NONE;
	w->nconns = 0;
	ilist_init(&w->lru);
	ilist_init(&w->hdr_wait);
	w->cc.touch = conn_touched;
	w->cc.proxy_done = worker_proxy_done;
	fd_ceiling_init(w);
	return 0;
}

void worker_conns_free(struct worker *w)
{
	if (w->conns)
		munmap(w->conns, w->conns_maplen);
	w->conns = NULL;
}

/* ---- timers ---- */

static uint64_t idle_next_expiry(struct worker *w)
{
	uint32_t i = w->lru.head;

	/* a failed connection may linger while its ops are cancelled */
	while (i != ILIST_NONE && (w->conns[i].flags & CONN_FAILED))
		i = w->conns[i].lru.next;
	if (i == ILIST_NONE)
		return UINT64_MAX;
	return w->conns[i].last_active + w->params.idle_timeout_ms;
}

int worker_timeout_ms(struct worker *w)
{
	uint64_t at = UINT64_MAX;

	if (w->state == WORKER_HANDOVER)
		return 5;      /* short: the hand-over checks its connections */
	if (w->params.idle_timeout_ms && w->nconns)
		at = idle_next_expiry(w);
	if (worker_proxy_next_expiry(w) < at)
		at = worker_proxy_next_expiry(w);
	if (!w->accepting && w->state == WORKER_RUNNING && w->accept_resume_ms < at)
		at = w->accept_resume_ms;
	if (w->state == WORKER_DRAINING) {
		uint64_t d = w->drain_deadline_ms;

		if (d <= w->cc.now_ms)
			d = w->drain_deadline_ms + DRAIN_GRACE_MS;
		if (d < at)
			at = d;
	}
	if (at == UINT64_MAX)
		return -1;
	if (at <= w->cc.now_ms)
		return 1;    /* the coarse clock ticks every few ms */
	if (at - w->cc.now_ms > TICK_MAX_MS)
		return TICK_MAX_MS;
	return (int)(at - w->cc.now_ms) + 1;
}

static void fail_and_update(struct worker *w, struct conn *c)
{
	conn_fail(&w->cc, c, 0);
	w->ops->update_conn(w, c);
}

void worker_tick(struct worker *w)
{
	worker_proxy_tick(w);
	if (w->params.idle_timeout_ms) {
		uint32_t i = w->lru.head;

		while (i != ILIST_NONE) {
			struct conn *c = &w->conns[i];

			i = c->lru.next;
			if (c->flags & CONN_FAILED)
				continue;
			if (c->last_active + w->params.idle_timeout_ms > w->cc.now_ms)
				break;
			log_debug("worker %u: connection fd %d idle for %u s, closing",
				  w->id, c->fd, w->params.idle_timeout_ms / 1000);
			ctr_add(&w->cc.ctr->idle_timeouts, 1);
			fail_and_update(w, c);
		}
	}
	if (w->state == WORKER_RUNNING && !w->accepting && worker_accept_allowed(w))
		w->ops->update_accept(w);
	if (w->state == WORKER_DRAINING && w->cc.now_ms >= w->drain_deadline_ms && w->nconns) {
		uint32_t i = w->lru.head;
		unsigned n = 0;

		while (i != ILIST_NONE) {
			struct conn *c = &w->conns[i];

			i = c->lru.next;
			if (c->flags & CONN_FAILED)
				continue;
			n++;
			fail_and_update(w, c);
		}
		if (n)
			log_warning("worker %u: shutdown deadline reached, closing %u connection(s)",
				    w->id, n);
	}
}

