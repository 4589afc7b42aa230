/* wset.h - a set of workers: one per configured core, on one backend,
 * over the listening sockets; started, stopped, or replaced by another
 * set with the connections handed over (a reload that changes the
 * backend, the buffers or the cores; a restart through the fd store). */
#ifndef ECHOD_WSET_H
#define ECHOD_WSET_H

#include "backend.h"
#include "conn.h"
#include "listen.h"
#include "worker.h"

struct wset {
	const struct backend_ops *ops;
	unsigned n;
	struct worker *w;              /* n workers */
	struct worker_counters *ctr;   /* n, each on its own cache lines */
};

/* Start one worker per cfg core (one unpinned if none) on ops.  Worker i
 * watches the listener sets j with j % n == i (or set i % nsets when
 * there are fewer sets than workers), and alone reads UDP socket k of set
 * j < nudpsets when (j + k) % n == i.  With udp_hold, the workers read no
 * UDP socket until wset_udp_release().  On error every worker started is
 * drained and s is left empty; 0 or -errno (logged).  Each worker takes
 * its own reference to policy (the allow/deny lists, or NULL). */
int wset_start(struct wset *s, const struct backend_ops *ops, const struct echod_config *cfg,
	       struct listen_set *sets, unsigned nsets, unsigned nudpsets, bool udp_hold,
	       struct echod_shared *shared, int exit_fd, struct policy *policy);

/* Let held workers read their UDP sockets, once old (the set they
 * replace, stopped or handed over, not yet freed; or NULL) is gone: the
 * kernel drops old saw are not counted again. */
void wset_udp_release(struct wset *s, const struct wset *old);

void wset_post_params(struct wset *s, const struct worker_params *p);

/* Drain every worker and join it: 0, or 1 if one ended with an error.
 * The counters stay readable until wset_free(). */
int wset_stop(struct wset *s);

/* Hand over: every worker stops accepting and reading, flushes for up
 * to flush_ms, exports its connections and ends.  Returns how many
 * connections (*out, malloc'd, the caller's). */
unsigned wset_handover(struct wset *s, unsigned flush_ms, struct conn_export **out);

/* Give n connections to the workers, round robin (takes e). */
void wset_import(struct wset *s, struct conn_export *e, unsigned n);

/* Free the arrays of a stopped set. */
void wset_free(struct wset *s);

#endif
