/* worker.c - one event loop's shared services; see worker.h */
#include "worker.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <semaphore.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "log.h"

#define ACCEPT_PAUSE_MS   50     /* after EMFILE & co: retry this soon */
#define FD_RESERVE        16     /* last fds below the limit: never a client's */
#define DRAIN_GRACE_MS    2000   /* after the deadline: force the exit */
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

/* ---- parameters ---- */

void worker_params_from_config(struct worker_params *p, const struct echod_config *cfg)
{
	p->max_pending = cfg->max_pending;
	p->idle_timeout_ms = cfg->idle_timeout * 1000u;
	p->shutdown_ms = cfg->shutdown_timeout * 1000u;
}

static void worker_apply_params(struct worker *w, const struct worker_params *p)
{
	uint32_t per_conn, share;

	w->params = *p;
	/* enough buffers for max_pending bytes in partly filled buffers, but
	 * never more than a quarter of the pool: one slow reader must not
	 * starve the others */
	per_conn = 2 * ((p->max_pending + w->buffer_size - 1) / w->buffer_size) + 2;
	share = w->buffer_count / 4;
	if (share < 2)
		share = 2;
	w->max_bufs = per_conn < share ? per_conn : share;
	w->buf_reserve = w->buffer_count / 8 ? w->buffer_count / 8 : 1;
}

/* ---- clock ---- */

void worker_clock(struct worker *w)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	w->now_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

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

void worker_conn_touch(struct worker *w, struct conn *c)
{
	if (c->last_active == w->now_ms)
		return;           /* order kept: the clock has not moved */
	c->last_active = w->now_ms;
	if (w->lru.tail != c->idx) {
		ilist_remove(w, &w->lru, c, LRU);
		ilist_push_tail(w, &w->lru, c, LRU);
	}
}

static void reject(struct worker *w, int fd, const char *why)
{
	log_debug("worker %u: connection fd %d closed at once (%s)", w->id, fd, why);
	close(fd);
	ctr_add(&w->ctr->rejected, 1);
}

/* A fresh slot for fd, or NULL when the table is full. */
static struct conn *conn_alloc(struct worker *w, int fd)
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
	c->q_head = c->q_tail = BUF_NONE;
	c->pending = 0;
	c->nbufs = 0;
	c->bstate = 0;
	c->bdata = 0;
	c->carry = NULL;
	c->carry_off = c->carry_len = 0;
	c->wait.prev = c->wait.next = ILIST_NONE;
	c->last_active = w->now_ms;
	ilist_push_tail(w, &w->lru, c, LRU);
	if (w->state == WORKER_DRAINING)
		c->flags |= CONN_DRAIN;
	w->nconns++;
	ctr_add(&w->ctr->current, 1);
	return c;
}

struct conn *worker_conn_new(struct worker *w, int fd)
{
	struct conn *c;
	uint32_t n;
	int one = 1;

	/* a backend that accepts asynchronously (io_uring) may still
	 * complete an accept after its worker began a hand-over: that
	 * connection goes along with the others, never refused */
	if (w->state != WORKER_RUNNING && w->state != WORKER_HANDOVER) {
		reject(w, fd, "stopping");
		return NULL;
	}
	/* exact across workers: reserve a place, give it back if over */
	n = atomic_fetch_add_explicit(&w->shared->nconns, 1, memory_order_relaxed);
	if (n >= atomic_load_explicit(&w->shared->max_connections, memory_order_relaxed)) {
		atomic_fetch_sub_explicit(&w->shared->nconns, 1, memory_order_relaxed);
		reject(w, fd, "max_connections");
		return NULL;
	}
	c = conn_alloc(w, fd);
	if (!c) {
		atomic_fetch_sub_explicit(&w->shared->nconns, 1, memory_order_relaxed);
		reject(w, fd, "connection table full");
		return NULL;
	}
	if (w->state == WORKER_HANDOVER)
		c->flags |= CONN_FREEZE;
	ctr_add(&w->ctr->accepted, 1);
	/* echo replies must not wait for Nagle + delayed ACK */
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		log_errno(LOG_DEBUG, errno, "setsockopt TCP_NODELAY fd %d", fd);
	return c;
}

/* Unlink and free c's slot; the socket is someone else's now or closed. */
static void conn_release_slot(struct worker *w, struct conn *c)
{
	uint32_t b = c->q_head;

	while (b != BUF_NONE) {
		uint32_t next = w->pool.meta[b].next;

		w->pool.meta[b].next = BUF_NONE;
		w->buf_release(w, b);
		b = next;
	}
	c->q_head = c->q_tail = BUF_NONE;
	c->pending = 0;
	c->nbufs = 0;
	conn_carry_free(c);
	ilist_remove(w, &w->lru, c, LRU);
	c->flags = 0;
	c->fd = -1;
	c->gen = (c->gen + 1) & CONN_GEN_MASK;
	c->lru.next = w->conn_free;
	w->conn_free = c->idx;
	w->nconns--;
	atomic_store_explicit(&w->ctr->current,
			      ctr_get(&w->ctr->current) - 1, memory_order_relaxed);
}

void worker_conn_free(struct worker *w, struct conn *c)
{
	conn_release_slot(w, c);
	atomic_fetch_sub_explicit(&w->shared->nconns, 1, memory_order_relaxed);
	ctr_add(&w->ctr->closed, 1);
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
	if (w->accept_resume_ms + 1000 < w->now_ms)
		log_errno(LOG_WARNING, err, "worker %u: accept4 failed, pausing accepts for %d ms",
			  w->id, ACCEPT_PAUSE_MS);
	ctr_add(&w->ctr->accept_errors[kind], 1);
	w->accept_resume_ms = w->now_ms + ACCEPT_PAUSE_MS;
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
	return w->state == WORKER_RUNNING && w->now_ms >= w->accept_resume_ms;
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
	if (!w->accepting && w->state == WORKER_RUNNING && w->accept_resume_ms < at)
		at = w->accept_resume_ms;
	if (w->state == WORKER_DRAINING) {
		uint64_t d = w->drain_deadline_ms;

		if (d <= w->now_ms)
			d = w->drain_deadline_ms + DRAIN_GRACE_MS;
		if (d < at)
			at = d;
	}
	if (at == UINT64_MAX)
		return -1;
	if (at <= w->now_ms)
		return 1;    /* the coarse clock ticks every few ms */
	if (at - w->now_ms > TICK_MAX_MS)
		return TICK_MAX_MS;
	return (int)(at - w->now_ms) + 1;
}

static void fail_and_update(struct worker *w, struct conn *c)
{
	conn_fail(w, c, 0);
	w->ops->update_conn(w, c);
}

void worker_tick(struct worker *w)
{
	if (w->params.idle_timeout_ms) {
		uint32_t i = w->lru.head;

		while (i != ILIST_NONE) {
			struct conn *c = &w->conns[i];

			i = c->lru.next;
			if (c->flags & CONN_FAILED)
				continue;
			if (c->last_active + w->params.idle_timeout_ms > w->now_ms)
				break;
			log_debug("worker %u: connection fd %d idle for %u s, closing",
				  w->id, c->fd, w->params.idle_timeout_ms / 1000);
			ctr_add(&w->ctr->idle_timeouts, 1);
			fail_and_update(w, c);
		}
	}
	if (w->state == WORKER_RUNNING && !w->accepting && worker_accept_allowed(w))
		w->ops->update_accept(w);
	if (w->state == WORKER_DRAINING && w->now_ms >= w->drain_deadline_ms && w->nconns) {
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

/* Hand-over: once every connection is idle (nothing in flight, and
 * nothing unsent or the flush deadline passed), export them all. */
static bool handover_done(struct worker *w)
{
	bool late = w->now_ms >= w->drain_deadline_ms, idle = true;
	uint32_t i;

	if (late && !w->quiesce_sent) {
		/* what could not be flushed goes along: stop what is in flight */
		w->quiesce_sent = true;
		for (i = w->lru.head; i != ILIST_NONE; i = w->conns[i].lru.next)
			w->ops->conn_busy(w, &w->conns[i], true);
	}
	for (i = w->lru.head; i != ILIST_NONE; i = w->conns[i].lru.next) {
		struct conn *c = &w->conns[i];

		if ((c->flags & CONN_FAILED) || w->ops->conn_busy(w, c, false) ||
		    (c->pending && !late))
			idle = false;      /* (a failed one is being closed) */
	}
	/* an accept still in flight could complete after the export */
	if (!idle || (w->ops->accept_busy && w->ops->accept_busy(w)))
		return false;
	free(w->exports);
	w->exports = w->nconns ? calloc(w->nconns, sizeof(*w->exports)) : NULL;
	w->n_exports = 0;
	while (!ilist_empty(&w->lru)) {
		struct conn *c = &w->conns[w->lru.head];

		if (!w->exports || conn_export(w, c, &w->exports[w->n_exports]) < 0) {
			log_errno(LOG_ERR, ENOMEM, "worker %u: hand-over of fd %d failed, closing it",
				  w->id, c->fd);
			close(c->fd);
			worker_conn_free(w, c);
			continue;
		}
		w->n_exports++;
		conn_release_slot(w, c);       /* the fd goes on, open */
	}
	return true;
}

bool worker_finished(struct worker *w)
{
	if (w->state == WORKER_HANDOVER)
		return handover_done(w);
	if (w->state != WORKER_DRAINING)
		return false;
	return w->nconns == 0 || w->now_ms >= w->drain_deadline_ms + DRAIN_GRACE_MS;
}

/* ---- control ---- */

static void update_all_conns(struct worker *w)
{
	uint32_t i = w->lru.head;

	while (i != ILIST_NONE) {
		struct conn *c = &w->conns[i];

		i = c->lru.next;
		w->ops->update_conn(w, c);
	}
}

void worker_control(struct worker *w)
{
	struct worker_params p;
	struct conn_export *imports;
	unsigned n_imports;
	uint64_t v;
	bool has_params, stop, handover;

	if (read(w->ctl_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_errno(LOG_WARNING, errno, "worker %u: read eventfd", w->id);
	pthread_mutex_lock(&w->ctl_lock);
	has_params = w->ctl_has_params;
	stop = w->ctl_stop;
	handover = w->ctl_handover;
	p = w->ctl_params;
	imports = w->ctl_imports;
	n_imports = w->ctl_n_imports;
	w->ctl_has_params = false;
	w->ctl_imports = NULL;
	w->ctl_n_imports = 0;
	pthread_mutex_unlock(&w->ctl_lock);

	for (unsigned k = 0; k < n_imports; k++) {
		struct conn *c = conn_alloc(w, imports[k].fd);

		if (!c) {
			log_error("worker %u: no slot for a handed-over connection, closing fd %d",
				  w->id, imports[k].fd);
			close(imports[k].fd);
			free(imports[k].data);
			atomic_fetch_sub_explicit(&w->shared->nconns, 1, memory_order_relaxed);
			continue;
		}
		conn_import(w, c, &imports[k]);
		w->ops->adopt_conn(w, c);
	}
	free(imports);
	if (handover && w->state == WORKER_RUNNING) {
		w->state = WORKER_HANDOVER;
		w->drain_deadline_ms = w->now_ms + w->handover_flush_ms;
		w->quiesce_sent = false;
		for (uint32_t i = w->lru.head; i != ILIST_NONE; i = w->conns[i].lru.next)
			w->conns[i].flags |= CONN_FREEZE;
		w->ops->update_accept(w);
		log_debug("worker %u: handing over %u connection(s)", w->id, w->nconns);
		update_all_conns(w);
		return;
	}

	if (has_params)
		worker_apply_params(w, &p);
	if (stop && w->state == WORKER_RUNNING) {
		uint32_t i;

		w->state = WORKER_DRAINING;
		w->drain_deadline_ms = w->now_ms + w->params.shutdown_ms;
		for (i = w->lru.head; i != ILIST_NONE; i = w->conns[i].lru.next)
			w->conns[i].flags |= CONN_DRAIN;
		w->ops->update_accept(w);
		/* a listener of this worker's own stops listening now: new
		 * clients are refused instead of waiting in its backlog; the
		 * fd stays open (and inherited sockets are never touched) */
		for (unsigned k = 0; k < w->n_listen; k++)
			if (w->listen_own[k] && shutdown(w->listen_fds[k], SHUT_RDWR) < 0)
				log_errno(LOG_WARNING, errno, "worker %u: shutdown listener fd %d",
					  w->id, w->listen_fds[k]);
		log_debug("worker %u: draining %u connection(s)", w->id, w->nconns);
	}
	if (has_params || stop)
		update_all_conns(w);
}

static void ctl_kick(struct worker *w)
{
	uint64_t one = 1;

	if (write(w->ctl_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_errno(LOG_ERR, errno, "worker %u: write eventfd", w->id);
}

void worker_post_params(struct worker *w, const struct worker_params *p)
{
	pthread_mutex_lock(&w->ctl_lock);
	w->ctl_params = *p;
	w->ctl_has_params = true;
	pthread_mutex_unlock(&w->ctl_lock);
	ctl_kick(w);
}

void worker_post_handover(struct worker *w, unsigned flush_ms)
{
	pthread_mutex_lock(&w->ctl_lock);
	w->ctl_handover = true;
	w->handover_flush_ms = flush_ms;
	pthread_mutex_unlock(&w->ctl_lock);
	ctl_kick(w);
}

void worker_post_imports(struct worker *w, struct conn_export *e, unsigned n)
{
	pthread_mutex_lock(&w->ctl_lock);
	if (w->ctl_imports) {
		struct conn_export *m = realloc(w->ctl_imports,
						(w->ctl_n_imports + n) * sizeof(*m));

		if (m) {
			memcpy(m + w->ctl_n_imports, e, n * sizeof(*e));
			w->ctl_imports = m;
			w->ctl_n_imports += n;
		} else {
			for (unsigned k = 0; k < n; k++) {
				close(e[k].fd);
				free(e[k].data);
			}
			log_errno(LOG_ERR, ENOMEM, "worker %u: hand-over of %u connection(s)", w->id, n);
		}
		free(e);
	} else {
		w->ctl_imports = e;
		w->ctl_n_imports = n;
	}
	pthread_mutex_unlock(&w->ctl_lock);
	ctl_kick(w);
}

void worker_post_stop(struct worker *w)
{
	pthread_mutex_lock(&w->ctl_lock);
	w->ctl_stop = true;
	pthread_mutex_unlock(&w->ctl_lock);
	ctl_kick(w);
}

/* ---- thread ---- */

int worker_setup(struct worker *w)
{
	int err;

	w->ctl_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->ctl_fd < 0)
		return -errno;
	err = pthread_mutex_init(&w->ctl_lock, NULL);
	if (err) {
		close(w->ctl_fd);
		w->ctl_fd = -1;
		return -err;
	}
	return 0;
}

void worker_teardown(struct worker *w)
{
	for (unsigned k = 0; k < w->ctl_n_imports; k++) {
		close(w->ctl_imports[k].fd);
		free(w->ctl_imports[k].data);
	}
	free(w->ctl_imports);
	w->ctl_imports = NULL;
	w->ctl_n_imports = 0;
	if (w->ctl_fd >= 0)
		close(w->ctl_fd);
	w->ctl_fd = -1;
	pthread_mutex_destroy(&w->ctl_lock);
}

struct start_arg {
	struct worker *w;
	sem_t done;
};

static int worker_alloc(struct worker *w)
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
	err = bufpool_init(&w->pool, w->buffer_count, w->buffer_size);
	if (err) {
		snprintf(w->init_error, sizeof(w->init_error),
			 "allocating %u buffers of %u bytes: %s",
			 w->buffer_count, w->buffer_size, strerror(-err));
		munmap(w->conns, w->conns_maplen);
		w->conns = NULL;
		return err;
	}
	return 0;
}

static void worker_free(struct worker *w)
{
	bufpool_fini(&w->pool);
	if (w->conns)
		munmap(w->conns, w->conns_maplen);
	w->conns = NULL;
}

static int worker_pin(struct worker *w)
{
	cpu_set_t set;
	int err;

	if (w->core < 0)
		return 0;
	CPU_ZERO(&set);
	CPU_SET(w->core, &set);
	err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	if (err) {
		snprintf(w->init_error, sizeof(w->init_error),
			 "sched_setaffinity to core %d: %s", w->core, strerror(err));
		return -err;
	}
	return 0;
}

static void *worker_main(void *arg)
{
	struct start_arg *sa = arg;
	struct worker *w = sa->w;
	char name[16];
	int err;

	snprintf(name, sizeof(name), "echod-w%u", w->id);
	pthread_setname_np(pthread_self(), name);
	w->state = WORKER_RUNNING;
	w->accept_resume_ms = 0;
	fd_ceiling_init(w);
	worker_apply_params(w, &w->params);
	worker_clock(w);
	err = worker_pin(w);
	if (!err)
		err = worker_alloc(w);
	if (!err) {
		err = w->ops->init(w);
		if (err && !w->init_error[0])
			snprintf(w->init_error, sizeof(w->init_error), "%s backend init: %s",
				 w->ops->name, strerror(-err));
		if (err)
			worker_free(w);
	}
	w->init_status = err;
	sem_post(&sa->done);          /* sa is gone after this */
	if (err)
		return NULL;

	w->exit_status = w->ops->run(w);
	w->ops->fini(w);
	worker_free(w);
	w->state = WORKER_DONE;
	if (w->exit_fd >= 0) {
		uint64_t one = 1;

		if (write(w->exit_fd, &one, sizeof(one)) < 0)
			log_errno(LOG_ERR, errno, "worker %u: write exit eventfd", w->id);
	}
	return NULL;
}

int worker_start(struct worker *w)
{
	struct start_arg sa = { .w = w };
	int err;

	w->init_error[0] = '\0';
	if (sem_init(&sa.done, 0, 0) < 0) {
		err = -errno;
		snprintf(w->init_error, sizeof(w->init_error), "sem_init: %s", strerror(-err));
		return err;
	}
	err = pthread_create(&w->thread, NULL, worker_main, &sa);
	if (err) {
		sem_destroy(&sa.done);
		snprintf(w->init_error, sizeof(w->init_error), "pthread_create: %s", strerror(err));
		return -err;
	}
	while (sem_wait(&sa.done) < 0 && errno == EINTR)
		;
	sem_destroy(&sa.done);
	if (w->init_status) {
		pthread_join(w->thread, NULL);
		return w->init_status;
	}
	return 0;
}

int worker_join(struct worker *w)
{
	pthread_join(w->thread, NULL);
	return w->exit_status;
}
