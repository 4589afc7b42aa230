/* histogram.c - fixed-bucket histograms; see histogram.h */
#include "histogram.h"

#include <stdio.h>
#include <string.h>

#include "mbuf.h"

#define US_PER_S 1000000u
#define MS(x) ((uint64_t)(x) * 1000u)           /* in microseconds */
#define S(x) ((uint64_t)(x) * US_PER_S)
#define KIB(x) ((uint64_t)(x) << 10)
#define MIB(x) ((uint64_t)(x) << 20)
#define GIB(x) ((uint64_t)(x) << 30)
#define N(a) (sizeof(a) / sizeof((a)[0]))

/* The bucket bounds, one table per family. */

/* A probe's connect/echo/close to an hour-long session. */
static const uint64_t duration_bounds[] = {
	MS(1), MS(5), MS(10), MS(25), MS(50), MS(100), MS(250), MS(500),
	S(1), MS(2500), S(5), S(10), S(30), S(60), S(300), S(900), S(3600),
};

/* Nothing echoed (a health check's connect and close), then by fours. */
static const uint64_t bytes_bounds[] = {
	0, 64, 256, KIB(1), KIB(4), KIB(16), KIB(64), KIB(256),
	MIB(1), MIB(4), MIB(16), MIB(64), MIB(256), GIB(1),
};

/* Loopback and a LAN (tens of us) to a satellite link (about 600 ms). */
static const uint64_t rtt_bounds[] = {
	10, 25, 50, 100, 250, 500, MS(1), 2500, MS(5), MS(10), MS(25), MS(50),
	MS(100), MS(250), MS(500), S(1), MS(2500),
};

_Static_assert(N(duration_bounds) <= HIST_BOUNDS_MAX, "duration_bounds");
_Static_assert(N(bytes_bounds) <= HIST_BOUNDS_MAX, "bytes_bounds");
_Static_assert(N(rtt_bounds) <= HIST_BOUNDS_MAX, "rtt_bounds");

const struct hist_def hist_defs[HIST__COUNT] = {
	[HIST_DURATION] = {
		"echod_connection_duration_seconds",
		"Client connections closed, by how long they were open (accept to close).",
		US_PER_S, N(duration_bounds), duration_bounds,
	},
	[HIST_BYTES] = {
		"echod_connection_bytes",
		"Client connections closed, by the bytes echoed to them.",
		1, N(bytes_bounds), bytes_bounds,
	},
	[HIST_RTT] = {
		"echod_connection_rtt_seconds",
		"Client connections closed, by the kernel's smoothed round-trip time "
		"(TCP_INFO tcpi_rtt) at close; those without an RTT sample are not counted.",
		US_PER_S, N(rtt_bounds), rtt_bounds,
	},
};

unsigned hist_bucket(const struct hist_def *d, uint64_t v)
{
	unsigned k = 0;

	while (k < d->n && v > d->bounds[k])
		k++;
	return k;
}

void hist_observe(struct hist_counts *h, enum hist_family f, uint64_t v)
{
	_Atomic uint64_t *c = &h->count[hist_bucket(&hist_defs[f], v)];

	/* the worker's thread is the only writer: no read-modify-write */
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
			      memory_order_relaxed);
	atomic_store_explicit(&h->sum, atomic_load_explicit(&h->sum, memory_order_relaxed) + v,
			      memory_order_relaxed);
}

void hist_format(char *buf, uint64_t v, uint64_t unit_scale)
{
	int digits = 0, n;
	uint64_t frac;

	n = snprintf(buf, HIST_VALUE_MAX, "%llu", (unsigned long long)(v / unit_scale));
	frac = v % unit_scale;
	if (!frac || n < 0)
		return;
	for (uint64_t s = unit_scale; s > 1; s /= 10)
		digits++;
	while (frac % 10 == 0) {       /* no trailing zeros: 0.0025, not 0.002500 */
		frac /= 10;
		digits--;
	}
	snprintf(buf + n, HIST_VALUE_MAX - (size_t)n, ".%0*llu", digits, (unsigned long long)frac);
}

void hist_render(struct mbuf *b, const struct hist_def *d, const char *labels,
		 const uint64_t *count, uint64_t sum)
{
	const char *sep = *labels ? "," : "";
	char le[HIST_VALUE_MAX];
	uint64_t cum = 0;

	for (unsigned k = 0; k < d->n; k++) {
		cum += count[k];
		hist_format(le, d->bounds[k], d->unit_scale);
		mbuf_printf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", d->name, labels, sep, le,
			    (unsigned long long)cum);
	}
	cum += count[d->n];
	mbuf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", d->name, labels, sep,
		    (unsigned long long)cum);
	hist_format(le, sum, d->unit_scale);
	if (*labels) {
		mbuf_printf(b, "%s_sum{%s} %s\n", d->name, labels, le);
		mbuf_printf(b, "%s_count{%s} %llu\n", d->name, labels, (unsigned long long)cum);
	} else {
		mbuf_printf(b, "%s_sum %s\n", d->name, le);
		mbuf_printf(b, "%s_count %llu\n", d->name, (unsigned long long)cum);
	}
}
