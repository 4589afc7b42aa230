/* wset.c - a set of workers; see wset.h */
#include "wset.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/socket.h>

#include "log.h"

static void assign_listeners(struct worker *w, unsigned i, unsigned n,
			     struct listen_set *sets, unsigned nsets)
{
	w->n_listen = 0;
	for (unsigned j = 0; j < nsets; j++) {
		unsigned users;

		if (nsets >= n ? j % n != i : j != i % nsets)
			continue;
		/* workers sharing this set */
		users = nsets >= n ? 1 : n / nsets + (j < n % nsets);
		for (unsigned k = 0; k < sets[j].n && w->n_listen < LISTEN_MAX; k++) {
			int fd = sets[j].l[k].fd;

			w->listen_fds[w->n_listen] = fd;
			w->listen_own[w->n_listen] = !sets[j].l[k].inherited && users == 1;
			w->n_listen++;
			/* a socket of this pinned worker alone: the kernel's
			 * SO_REUSEPORT choice then prefers it for connections
			 * arriving on the worker's CPU, which keeps them there */
			if (users == 1 && nsets >= n && w->core >= 0 &&
			    setsockopt(fd, SOL_SOCKET, SO_INCOMING_CPU, &w->core, sizeof(w->core)) < 0)
				log_errno(LOG_WARNING, errno, "setsockopt SO_INCOMING_CPU %d on fd %d",
					  w->core, fd);
		}
		if (users > 1)
			w->shared_listeners = true;
	}
}

/* The UDP sockets of sets[0..nsets) go to one worker each: socket k of
 * set j to worker (j + k) % n.  A flow then stays on one worker (the
 * kernel's SO_REUSEPORT hash picks one socket of a group), and two loops
 * never read one socket (they could reorder a flow). */
static void assign_udp(struct worker *w, unsigned i, unsigned n, const struct listen_set *sets,
		       unsigned nsets)
{
	w->n_udp = 0;
	for (unsigned j = 0; j < nsets; j++)
		for (unsigned k = 0; k < sets[j].n_udp && w->n_udp < LISTEN_MAX; k++)
			if ((j + k) % n == i)
				w->udp_fds[w->n_udp++] = sets[j].udp[k].fd;
}

int wset_start(struct wset *s, const struct backend_ops *ops, const struct echod_config *cfg,
	       struct listen_set *sets, unsigned nsets, unsigned nudpsets, bool udp_hold,
	       struct echod_shared *shared, int exit_fd, struct policy *policy)
{
	struct worker_params params;
	unsigned n = cfg->n_cores ? cfg->n_cores : 1;
	int err = 0;

	memset(s, 0, sizeof(*s));
	s->ops = ops;
	s->w = calloc(n, sizeof(*s->w));
	s->ctr = aligned_alloc(CACHELINE, n * sizeof(*s->ctr));
	if (!s->w || !s->ctr) {
		log_errno(LOG_ERR, ENOMEM, "allocating %u workers", n);
		wset_free(s);
		return -ENOMEM;
	}
	memset(s->ctr, 0, n * sizeof(*s->ctr));
	worker_params_from_config(&params, cfg, policy);
	for (unsigned i = 0; i < n; i++) {
		struct worker *w = &s->w[i];

		w->id = i;
		w->core = cfg->n_cores ? cfg->cores[i] : -1;
		w->ops = ops;
		w->shared = shared;
		w->cc.ctr = &s->ctr[i];
		w->exit_fd = exit_fd;
		assign_listeners(w, i, n, sets, nsets);   /* after w->core */
		assign_udp(w, i, n, sets, nudpsets);
		w->udp_hold = udp_hold;
		w->buffer_count = cfg->buffer_count;
		w->buffer_size = cfg->buffer_size;
		w->conn_cap = CONFIG_MAX_CONNECTIONS_MAX;
		w->params = params;
		w->params.policy = NULL;
		err = worker_setup(w);
		if (err) {
			log_errno(LOG_ERR, err, "worker %u: set-up (eventfd, pthread_mutex_init)", i);
			break;
		}
		policy_ref(policy);             /* the worker's, dropped by worker_teardown() */
		w->params.policy = policy;
		err = worker_start(w);
		if (err) {
			log_error("worker %u: %s", i, w->init_error);
			worker_teardown(w);
			break;
		}
		s->n++;
	}
	if (err) {
		wset_stop(s);
		wset_free(s);
		return err;
	}
	return 0;
}

void wset_post_params(struct wset *s, const struct worker_params *p)
{
	for (unsigned i = 0; i < s->n; i++)
		worker_post_params(&s->w[i], p);
}

int wset_stop(struct wset *s)
{
	int status = 0;

	for (unsigned i = 0; i < s->n; i++)
		worker_post_stop(&s->w[i]);
	for (unsigned i = 0; i < s->n; i++) {
		int err = worker_join(&s->w[i]);

		if (err) {
			log_errno(LOG_ERR, err, "worker %u ended with an error", i);
			status = 1;
		}
		worker_teardown(&s->w[i]);
	}
	return status;     /* n stays: the counters are still read */
}

unsigned wset_handover(struct wset *s, unsigned flush_ms, struct conn_export **out)
{
	struct conn_export *all = NULL;
	unsigned total = 0;

	for (unsigned i = 0; i < s->n; i++)
		worker_post_handover(&s->w[i], flush_ms);
	for (unsigned i = 0; i < s->n; i++) {
		struct worker *w = &s->w[i];
		int err = worker_join(w);

		if (err)
			log_errno(LOG_ERR, err, "worker %u ended with an error", i);
		if (w->n_exports) {
			struct conn_export *m = realloc(all, (total + w->n_exports) * sizeof(*m));

			if (m) {
				all = m;
				memcpy(all + total, w->exports, w->n_exports * sizeof(*m));
				total += w->n_exports;
			} else {
				log_errno(LOG_ERR, ENOMEM, "hand-over: closing %u connection(s)",
					  w->n_exports);
				for (unsigned k = 0; k < w->n_exports; k++)
					worker_export_drop(w->shared, &w->exports[k]);
			}
		}
		free(w->exports);
		w->exports = NULL;
		w->n_exports = 0;
		worker_teardown(w);
	}
	*out = all;
	return total;
}

void wset_udp_release(struct wset *s, const struct wset *old)
{
	int fds[LISTEN_MAX];
	uint32_t ovfl[LISTEN_MAX];
	unsigned n = 0;

	for (unsigned i = 0; old && i < old->n; i++)
		for (unsigned k = 0; k < old->w[i].n_udp && k < DGRAM_MAX_SOCKETS && n < LISTEN_MAX;
		     k++, n++) {
			fds[n] = old->w[i].udp_fds[k];
			ovfl[n] = old->w[i].dc.ovfl_seen[k];
		}
	for (unsigned i = 0; i < s->n; i++)
		worker_post_udp_release(&s->w[i], fds, ovfl, n);
}

void wset_import(struct wset *s, struct conn_export *e, unsigned n)
{
	unsigned per = s->n ? (n + s->n - 1) / s->n : 0;

	for (unsigned i = 0, off = 0; i < s->n && off < n; i++) {
		unsigned k = n - off < per ? n - off : per;
		struct conn_export *part = malloc(k * sizeof(*part));

		if (!part) {
			log_errno(LOG_ERR, ENOMEM, "hand-over: closing %u connection(s)", k);
			for (unsigned j = 0; j < k; j++)
				worker_export_drop(s->w[i].shared, &e[off + j]);
		} else {
			memcpy(part, e + off, k * sizeof(*part));
			worker_post_imports(&s->w[i], part, k);
		}
		off += k;
	}
	free(e);
}

void wset_free(struct wset *s)
{
	free(s->w);
	free(s->ctr);
	s->w = NULL;
	s->ctr = NULL;
	s->n = 0;
}
