/* histogram.h - fixed-bucket histograms of closed connections, in the
 * Prometheus sense: per family, a count per bucket and a sum.
 *
 * The families and their bucket bounds are defined once, in histogram.c
 * (hist_defs): everything that names a family or a bound - the
 * exposition, the tests, the fuzzer - reads that table.  A value is
 * observed in the family's integer unit (microseconds, bytes) and shown
 * in its base unit (seconds, bytes): unit_scale units make one base unit.
 *
 * The counts live in the worker's counters (counters.h), on its own cache
 * lines; only the worker's thread observes (relaxed stores, no atomic
 * read-modify-write), the metrics endpoint reads (relaxed) and sums.
 * Observing is a linear scan of at most HIST_BOUNDS_MAX bounds and two
 * stores; nothing allocates.
 */
#ifndef ECHOD_HISTOGRAM_H
#define ECHOD_HISTOGRAM_H

#include <stdatomic.h>
#include <stdint.h>

struct mbuf;

enum hist_family {
	HIST_DURATION,    /* echod_connection_duration_seconds: accept to close, us */
	HIST_BYTES,       /* echod_connection_bytes: bytes echoed to the client */
	HIST_RTT,         /* echod_connection_rtt_seconds: TCP_INFO tcpi_rtt at close, us */
	HIST__COUNT
};

#define HIST_BOUNDS_MAX 20      /* finite bounds of any family */

struct hist_def {
	const char *name;           /* the family's name */
	const char *help;
	uint64_t unit_scale;        /* observed units per base unit: a power of 10 */
	unsigned n;                 /* finite bounds (<= HIST_BOUNDS_MAX) */
	const uint64_t *bounds;     /* upper bounds (le), observed units, ascending */
};

extern const struct hist_def hist_defs[HIST__COUNT];

/* A histogram's counts: count[k] observations in bucket k alone (k < n:
 * at most bounds[k] and more than bounds[k - 1]; k == n: above the last,
 * +Inf), not cumulative; sum of the values observed (mod 2^64). */
struct hist_counts {
	_Atomic uint64_t count[HIST_BOUNDS_MAX + 1];
	_Atomic uint64_t sum;
};

/* The bucket v falls in: the first k with v <= bounds[k], else n. */
unsigned hist_bucket(const struct hist_def *d, uint64_t v);

/* Observe v (observed units) into h, a histogram of family f.  Called by
 * the owning worker's thread only. */
void hist_observe(struct hist_counts *h, enum hist_family f, uint64_t v);

/* Format v observed units in base units ("0.0025", "3", 64-bit exact):
 * into buf, at least HIST_VALUE_MAX bytes. */
#define HIST_VALUE_MAX 32
void hist_format(char *buf, uint64_t v, uint64_t unit_scale);

/* Append one series of family d in text format 0.0.4: NAME_bucket lines
 * (cumulative, le ascending, then le="+Inf"), NAME_sum and NAME_count
 * (= the +Inf bucket).  labels: "" or the series' labels without braces,
 * e.g. worker="0"; count[0..d->n] and sum as in struct hist_counts (plain
 * numbers: the caller summed what it reads).  The family's # HELP and
 * # TYPE lines are the caller's. */
void hist_render(struct mbuf *b, const struct hist_def *d, const char *labels,
		 const uint64_t *count, uint64_t sum);

#endif
