/* metrics.h - Prometheus text exposition of echod's counters.
 *
 * The renderer is pure: it reads a struct metrics_state (the workers'
 * counters with relaxed loads, control-thread figures from atomics) and
 * /proc/self, and writes text format 0.0.4.  It never touches a backend
 * and takes no lock on the data path: workers never block on a scrape.
 * The lock in metrics_state only orders a scrape against the main thread
 * replacing the set of workers (on a reload that restarts them).
 */
#ifndef ECHOD_METRICS_H
#define ECHOD_METRICS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mbuf.h"

struct persource;
struct worker_counters;

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct metrics_state {
	pthread_mutex_t lock;                 /* guards the worker set below */
	unsigned nworkers;
	struct worker_counters *ctr;          /* nworkers entries */
	struct worker_counters *base;         /* nworkers entries: what replaced workers
						 counted, added so counters never go back */
	const char *backend;                  /* active backend's name */
	const struct persource *persource;    /* the per-source table (set once at start) */

	_Atomic uint32_t max_connections;
	_Atomic uint64_t reloads;             /* successful reloads */
	_Atomic uint64_t reload_failures;
	_Atomic int last_reload_ok;           /* 1 until a reload fails */
	_Atomic uint64_t last_reload_success; /* unix time; start time at first */
	_Atomic uint64_t scrapes;
	double start_time;                    /* unix time at start-up, if /proc/stat is hidden */
};

/* Add every counter of src[0..nsrc) (not the current-connections gauge)
 * into dst[i], or dst[0] for i >= ndst. */
void metrics_fold(struct worker_counters *dst, unsigned ndst,
		  const struct worker_counters *src, unsigned nsrc);

/* Initialise (lock, start time) / destroy. 0 or -errno. */
int metrics_state_init(struct metrics_state *m);
void metrics_state_destroy(struct metrics_state *m);

/* Render every metric into b (appended).  proc_self is the /proc/self
 * directory to read process_* metrics from (tests pass another).
 * 0, or -ENOMEM. */
int metrics_render(struct metrics_state *m, const char *proc_self, struct mbuf *b);

#endif
