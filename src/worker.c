/* worker.c - a worker's thread and its control: start-up (pinning,
 * allocation, the backend's init), live parameters, drain and hand-over
 * as the main thread asks, and the exit.  The connection slots, accept
 * policy and timers are in worker_conns.c.  See worker.h. */
#include "worker.h"

#include <errno.h>
#include <sched.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "log.h"
#include "worker_int.h"


/* ---- parameters ---- */

void worker_params_from_config(struct worker_params *p, const struct echod_config *cfg,
			       struct policy *policy)
{
	p->policy = policy;
	p->max_pending = cfg->max_pending;
	p->idle_timeout_ms = cfg->idle_timeout * 1000u;
	p->shutdown_ms = cfg->shutdown_timeout * 1000u;
	p->busy_poll_us = cfg->busy_poll_us;
	p->batch_wait_us = cfg->batch_wait_us;
	p->udp_gro = cfg->udp.gro;
	p->udp_coalesce = cfg->udp.coalesce;
	p->proxy_enabled = cfg->proxy_protocol.enabled;
	p->proxy_timeout_ms = cfg->proxy_protocol.timeout * 1000u;
	p->n_loop_ports = cfg->udp.n_loop_ports;
	memcpy(p->loop_ports, cfg->udp.loop_ports, sizeof(p->loop_ports));
}

static void worker_apply_params(struct worker *w, const struct worker_params *p)
{
	uint32_t per_conn, share;

	w->params = *p;
	w->cc.max_pending = p->max_pending;
	/* enough buffers for max_pending bytes in partly filled buffers, but
	 * never more than a quarter of the pool: one slow reader must not
	 * starve the others */
	per_conn = 2 * ((p->max_pending + w->buffer_size - 1) / w->buffer_size) + 2;
	share = w->buffer_count / 4;
	if (share < 2)
		share = 2;
	w->cc.max_bufs = per_conn < share ? per_conn : share;
	w->cc.buf_reserve = w->buffer_count / 8 ? w->buffer_count / 8 : 1;
	dgram_set_params(&w->dc, p->udp_gro, p->udp_coalesce, p->loop_ports, p->n_loop_ports,
			 p->policy);
}

/* ---- UDP ---- */

static bool udp_busy(struct worker *w)
{
	return w->n_udp && w->ops->udp_busy && w->ops->udp_busy(w);
}

/* Read the UDP sockets or not, and tell the backend. */
static void udp_set_reading(struct worker *w, bool on)
{
	if (w->udp_reading == on)
		return;
	w->udp_reading = on;
	if (w->n_udp && w->ops->update_udp)
		w->ops->update_udp(w);
}

/* ---- clock ---- */

void worker_clock(struct worker *w)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	w->cc.now_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
	w->dc.now_ms = w->cc.now_ms;
}

/* busy_poll_us: after a wait that brought events, the loop polls (waits
 * with a zero timeout) until busy_poll_us has passed without one, then
 * sleeps again.  The fine clock is read only then: off, it costs nothing. */
void worker_woke(struct worker *w, unsigned nevents)
{
	worker_clock(w);
	if (nevents) {
		ctr_add(&w->cc.ctr->loop_wakeups, 1);
		ctr_add(&w->cc.ctr->loop_events, nevents);
	}
	if (w->params.busy_poll_us) {
		uint64_t now = conn_now_us();

		if (nevents)
			w->spin_until_us = now + w->params.busy_poll_us;
		else if (now >= w->spin_until_us)
			w->spin_until_us = 0;
	} else {
		w->spin_until_us = 0;
	}
}

uint32_t worker_batch_wait_us(struct worker *w, bool supported)
{
	uint32_t want = w->params.batch_wait_us;

	if (want != w->batch_wait_seen) {
		w->batch_wait_seen = want;
		if (want && !supported)
			log_notice("worker %u: batch_wait_us = %u has no effect with the %s backend "
				   "here (it needs io_uring's min-wait timeouts, kernel 6.12)",
				   w->id, want, w->ops->name);
	}
	return supported ? want : 0;
}

int worker_wait_ms(struct worker *w)
{
	return w->spin_until_us ? 0 : worker_timeout_ms(w);
}

/* Hand-over: once every connection is idle (nothing in flight, and
 * nothing unsent or the flush deadline passed), export them all. */
static bool handover_done(struct worker *w)
{
	bool late = w->cc.now_ms >= w->drain_deadline_ms, idle = true;
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
	/* an accept still in flight could complete after the export; the
	 * datagrams received go out before the new workers read the sockets */
	if (!idle || (w->ops->accept_busy && w->ops->accept_busy(w)) || (udp_busy(w) && !late))
		return false;
	if (udp_busy(w))
		log_warning("worker %u: hand-over: UDP echoes not sent within %u ms, dropped",
			    w->id, w->handover_flush_ms);
	free(w->exports);
	w->exports = w->nconns ? calloc(w->nconns, sizeof(*w->exports)) : NULL;
	w->n_exports = 0;
	while (!ilist_empty(&w->lru)) {
		struct conn *c = &w->conns[w->lru.head];

		if (!w->exports || conn_export(&w->cc, c, &w->exports[w->n_exports]) < 0) {
			log_errno(LOG_ERR, ENOMEM, "worker %u: hand-over of fd %d failed, closing it",
				  w->id, c->fd);
			worker_conn_free(w, c);
			continue;
		}
		w->n_exports++;
		worker_slot_release(w, c);       /* the fd goes on, open */
	}
	return true;
}

bool worker_finished(struct worker *w)
{
	if (w->state == WORKER_HANDOVER)
		return handover_done(w);
	if (w->state != WORKER_DRAINING)
		return false;
	if (w->cc.now_ms >= w->drain_deadline_ms + DRAIN_GRACE_MS)
		return true;
	/* the UDP echoes queued go out until the deadline (then fini drops them) */
	return w->nconns == 0 && (!udp_busy(w) || w->cc.now_ms >= w->drain_deadline_ms);
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

/* A connection taken over uncounted (from the fd store, or untracked
 * before): counted by its source, whatever the limits say -- the one it
 * came with, else its peer's address. */
static void import_count(struct worker *w, struct conn_export *e)
{
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	uint16_t port;

	if (!w->shared->persource)
		return;
	if (!e->src_known) {
		if (getpeername(e->fd, (struct sockaddr *)&ss, &sslen) < 0) {
			log_errno(LOG_DEBUG, errno, "worker %u: getpeername fd %d", w->id, e->fd);
			return;
		}
		if (!policy_source((struct sockaddr *)&ss, sslen, e->src, &port))
			return;
	}
	e->src_slot = persource_conn_adopt(w->shared->persource, e->src, w->cc.now_ms);
}

void worker_export_drop(struct echod_shared *shared, struct conn_export *e)
{
	close(e->fd);
	free(e->data);
	e->data = NULL;
	atomic_fetch_sub_explicit(&shared->nconns, 1, memory_order_relaxed);
	persource_conn_close(shared->persource, e->src_slot);
	e->src_slot = PERSOURCE_NONE;
}

void worker_control(struct worker *w)
{
	struct worker_params p;
	struct conn_export *imports;
	unsigned n_imports;
	uint64_t v;
	bool has_params, stop, handover, udp_release;

	if (read(w->ctl_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_errno(LOG_WARNING, errno, "worker %u: read eventfd", w->id);
	pthread_mutex_lock(&w->ctl_lock);
	has_params = w->ctl_has_params;
	stop = w->ctl_stop;
	handover = w->ctl_handover;
	p = w->ctl_params;
	imports = w->ctl_imports;
	n_imports = w->ctl_n_imports;
	udp_release = w->ctl_udp_release;
	if (udp_release) {
		/* the kernel drops the old workers counted on these sockets */
		for (unsigned k = 0; k < w->ctl_n_ovfl; k++)
			for (unsigned i = 0; i < w->n_udp && i < DGRAM_MAX_SOCKETS; i++)
				if (w->udp_fds[i] == w->ctl_ovfl_fd[k])
					w->dc.ovfl_seen[i] = w->ctl_ovfl[k];
	}
	w->ctl_udp_release = false;
	w->ctl_has_params = false;
	w->ctl_imports = NULL;
	w->ctl_n_imports = 0;
	pthread_mutex_unlock(&w->ctl_lock);

	for (unsigned k = 0; k < n_imports; k++) {
		struct conn *c = worker_slot_alloc(w, imports[k].fd);

		if (!c) {
			log_error("worker %u: no slot for a handed-over connection, closing fd %d",
				  w->id, imports[k].fd);
			worker_export_drop(w->shared, &imports[k]);
			continue;
		}
		/* one awaiting its PROXY header is counted once the header names
		 * its source */
		if (imports[k].src_slot == PERSOURCE_NONE && !(imports[k].flags & CONN_PROXY_WAIT))
			import_count(w, &imports[k]);
		conn_import(&w->cc, c, &imports[k]);
		if (c->flags & CONN_PROXY_WAIT)
			worker_proxy_wait(w, c);         /* a fresh timeout */
		w->ops->adopt_conn(w, c);
	}
	free(imports);
	if (handover && w->state == WORKER_RUNNING) {
		w->state = WORKER_HANDOVER;
		w->drain_deadline_ms = w->cc.now_ms + w->handover_flush_ms;
		w->quiesce_sent = false;
		for (uint32_t i = w->lru.head; i != ILIST_NONE; i = w->conns[i].lru.next)
			w->conns[i].flags |= CONN_FREEZE;
		w->ops->update_accept(w);
		udp_set_reading(w, false);
		log_debug("worker %u: handing over %u connection(s)", w->id, w->nconns);
		update_all_conns(w);
		if (has_params)
			policy_unref(p.policy);       /* not applied: it accepts no more */
		return;
	}

	if (has_params) {
		struct policy *old = w->params.policy;

		worker_apply_params(w, &p);     /* takes the reference p held */
		policy_unref(old);              /* this worker no longer looks at it */
	}
	if (udp_release) {
		w->udp_hold = false;
		udp_set_reading(w, w->state == WORKER_RUNNING);
	}
	if (stop && w->state == WORKER_RUNNING) {
		uint32_t i;

		w->state = WORKER_DRAINING;
		w->drain_deadline_ms = w->cc.now_ms + w->params.shutdown_ms;
		for (i = w->lru.head; i != ILIST_NONE; i = w->conns[i].lru.next)
			w->conns[i].flags |= CONN_DRAIN;
		w->ops->update_accept(w);
		udp_set_reading(w, false);      /* then the queued echoes go out */
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
	struct policy *replaced = NULL;

	policy_ref(p->policy);
	pthread_mutex_lock(&w->ctl_lock);
	if (w->ctl_has_params)
		replaced = w->ctl_params.policy;    /* posted, never applied */
	w->ctl_params = *p;
	w->ctl_has_params = true;
	pthread_mutex_unlock(&w->ctl_lock);
	policy_unref(replaced);
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
			for (unsigned k = 0; k < n; k++)
				worker_export_drop(w->shared, &e[k]);
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

void worker_post_udp_release(struct worker *w, const int *fds, const uint32_t *ovfl,
			     unsigned n)
{
	pthread_mutex_lock(&w->ctl_lock);
	w->ctl_udp_release = true;
	w->ctl_n_ovfl = n < LISTEN_MAX ? n : LISTEN_MAX;
	memcpy(w->ctl_ovfl_fd, fds, w->ctl_n_ovfl * sizeof(*fds));
	memcpy(w->ctl_ovfl, ovfl, w->ctl_n_ovfl * sizeof(*ovfl));
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
	for (unsigned k = 0; k < w->ctl_n_imports; k++)
		worker_export_drop(w->shared, &w->ctl_imports[k]);
	free(w->ctl_imports);
	w->ctl_imports = NULL;
	w->ctl_n_imports = 0;
	if (w->ctl_has_params)
		policy_unref(w->ctl_params.policy);
	w->ctl_has_params = false;
	policy_unref(w->params.policy);
	w->params.policy = NULL;
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
	int err;

	err = worker_conns_alloc(w);
	if (err)
		return err;
	err = bufpool_init(&w->cc.pool, w->buffer_count, w->buffer_size);
	if (err) {
		snprintf(w->init_error, sizeof(w->init_error),
			 "allocating %u buffers of %u bytes: %s",
			 w->buffer_count, w->buffer_size, strerror(-err));
		worker_conns_free(w);
		return err;
	}
	return 0;
}

static void worker_free(struct worker *w)
{
	bufpool_fini(&w->cc.pool);
	worker_conns_free(w);
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
	dgram_init(&w->dc, w->cc.ctr, w->id);
	w->dc.persource = w->shared->persource;
	for (unsigned i = 0; i < w->n_udp && i < DGRAM_MAX_SOCKETS; i++)
		dgram_attach_socket(&w->dc, i, w->udp_fds[i]);
	w->udp_reading = !w->udp_hold;
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

