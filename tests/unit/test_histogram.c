/* test_histogram.c - the connection histograms (src/histogram.c): the
 * families' bucket tables (ascending, within HIST_BOUNDS_MAX, names in
 * their base unit), every bucket edge of every family (a bound is in its
 * own bucket, one unit more in the next, past the last one +Inf), counts
 * and sums observed, values shown in base units exactly, and the text
 * format: NAME_bucket{...,le="..."} cumulative and ascending, le="+Inf",
 * NAME_sum, NAME_count equal to the +Inf bucket, with and without labels. */
#include "histogram.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mbuf.h"
#include "tap.h"

static uint64_t get(const _Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

static bool ends_with(const char *s, const char *tail)
{
	size_t n = strlen(s), t = strlen(tail);

	return n >= t && strcmp(s + n - t, tail) == 0;
}

static void test_tables(void)
{
	for (int f = 0; f < HIST__COUNT; f++) {
		const struct hist_def *d = &hist_defs[f];
		bool ascending = true, scale10 = true;

		for (unsigned k = 1; k < d->n; k++)
			ascending &= d->bounds[k] > d->bounds[k - 1];
		for (uint64_t s = d->unit_scale; s > 1; s /= 10)
			scale10 &= s % 10 == 0;
		tap_ok(d->name && d->help && *d->help && d->n >= 8 && d->n <= HIST_BOUNDS_MAX &&
		       ascending && d->unit_scale >= 1 && scale10,
		       "%s: %u bounds, strictly ascending, a power-of-10 unit scale (%llu)",
		       d->name, d->n, (unsigned long long)d->unit_scale);
		tap_ok(strncmp(d->name, "echod_connection_", 17) == 0 &&
		       (d->unit_scale == 1 ? ends_with(d->name, "_bytes")
					   : ends_with(d->name, "_seconds")),
		       "%s: named in its base unit", d->name);
	}
	tap_ok(!strcmp(hist_defs[HIST_DURATION].name, "echod_connection_duration_seconds") &&
	       !strcmp(hist_defs[HIST_BYTES].name, "echod_connection_bytes") &&
	       !strcmp(hist_defs[HIST_RTT].name, "echod_connection_rtt_seconds"),
	       "the three families: duration, bytes, rtt");
	tap_ok(hist_defs[HIST_BYTES].bounds[0] == 0,
	       "bytes: a bucket for connections that echoed nothing (le=\"0\")");
}

/* Every edge of every family. */
static void test_edges(void)
{
	for (int f = 0; f < HIST__COUNT; f++) {
		const struct hist_def *d = &hist_defs[f];
		unsigned bad = 0;

		for (unsigned k = 0; k < d->n; k++) {
			uint64_t b = d->bounds[k];

			if (hist_bucket(d, b) != k || hist_bucket(d, b + 1) != k + 1)
				bad++;
			if (b > 0 && (k == 0 || b - 1 > d->bounds[k - 1]) &&
			    hist_bucket(d, b - 1) != k)
				bad++;
		}
		tap_ok(!bad && hist_bucket(d, 0) == 0 && hist_bucket(d, UINT64_MAX) == d->n,
		       "%s: a bound in its own bucket, one more in the next; 0 in the first, "
		       "2^64-1 in +Inf (%u wrong)", d->name, bad);
	}
}

static void test_observe(void)
{
	struct hist_counts h;
	const struct hist_def *d = &hist_defs[HIST_DURATION];
	uint64_t total = 0;

	memset(&h, 0, sizeof(h));
	hist_observe(&h, HIST_DURATION, 0);
	hist_observe(&h, HIST_DURATION, 1000);        /* 0.001 s: the first bucket */
	hist_observe(&h, HIST_DURATION, 1001);
	hist_observe(&h, HIST_DURATION, 300000);      /* 0.3 s: le 0.5 */
	hist_observe(&h, HIST_DURATION, 3600000001u); /* past an hour: +Inf */
	for (unsigned k = 0; k <= HIST_BOUNDS_MAX; k++)
		total += get(&h.count[k]);
	tap_ok(get(&h.count[0]) == 2 && get(&h.count[1]) == 1 &&
	       get(&h.count[hist_bucket(d, 500000)]) == 1 &&
	       d->bounds[hist_bucket(d, 300000)] == 500000 &&
	       get(&h.count[d->n]) == 1 && total == 5,
	       "observe: 0 and 0.001 s in le 0.001, 0.001001 in the next, 0.3 s in le 0.5, "
	       "an hour and a microsecond in +Inf");
	tap_ok(get(&h.sum) == 0 + 1000 + 1001 + 300000 + 3600000001u,
	       "observe: the sum in microseconds (%llu)", (unsigned long long)get(&h.sum));
	hist_observe(&h, HIST_BYTES, UINT64_MAX);
	hist_observe(&h, HIST_BYTES, 2);
	tap_ok(get(&h.sum) == 0 + 1000 + 1001 + 300000 + 3600000001u + 1,
	       "observe: the sum wraps at 2^64, as a counter does");
}

static void test_format(void)
{
	static const struct {
		uint64_t v, scale;
		const char *want;
	} cases[] = {
		{ 0, 1000000, "0" }, { 1000, 1000000, "0.001" }, { 2500000, 1000000, "2.5" },
		{ 1, 1000000, "0.000001" }, { 25, 1000000, "0.000025" },
		{ 3600000000u, 1000000, "3600" }, { 1234567, 1000000, "1.234567" },
		{ UINT64_MAX, 1000000, "18446744073709.551615" },
		{ UINT64_MAX, 1, "18446744073709551615" }, { 0, 1, "0" }, { 65536, 1, "65536" },
		{ 150, 1000, "0.15" },
	};
	char buf[HIST_VALUE_MAX];
	unsigned bad = 0;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(buf, 'x', sizeof(buf));
		hist_format(buf, cases[i].v, cases[i].scale);
		if (strcmp(buf, cases[i].want)) {
			bad++;
			tap_diag("%llu / %llu: \"%s\", want \"%s\"", (unsigned long long)cases[i].v,
				 (unsigned long long)cases[i].scale, buf, cases[i].want);
		}
	}
	tap_ok(!bad, "format: base units, exact, no trailing zeros (%u wrong)", bad);
}

static void test_render(void)
{
	static const uint64_t bounds[] = { 0, 1500, 2000000 };
	static const struct hist_def d = { "t_seconds", "help", 1000000, 3, bounds };
	static const uint64_t count[] = { 1, 2, 0, 4 };
	struct mbuf b = { 0 };

	hist_render(&b, &d, "worker=\"3\"", count, 7001500);
	tap_ok(b.p && !b.oom && !strcmp(b.p,
		"t_seconds_bucket{worker=\"3\",le=\"0\"} 1\n"
		"t_seconds_bucket{worker=\"3\",le=\"0.0015\"} 3\n"
		"t_seconds_bucket{worker=\"3\",le=\"2\"} 3\n"
		"t_seconds_bucket{worker=\"3\",le=\"+Inf\"} 7\n"
		"t_seconds_sum{worker=\"3\"} 7.0015\n"
		"t_seconds_count{worker=\"3\"} 7\n"),
	       "render: cumulative buckets, +Inf, sum in seconds, count = +Inf (labelled)");
	mbuf_free(&b);
	hist_render(&b, &d, "", count, 0);
	tap_ok(b.p && !strcmp(b.p,
		"t_seconds_bucket{le=\"0\"} 1\n"
		"t_seconds_bucket{le=\"0.0015\"} 3\n"
		"t_seconds_bucket{le=\"2\"} 3\n"
		"t_seconds_bucket{le=\"+Inf\"} 7\n"
		"t_seconds_sum 0\n"
		"t_seconds_count 7\n"),
	       "render: no labels: {le=...} alone, bare _sum and _count");
	mbuf_free(&b);

	/* a real family: its bounds in order, each once, cumulative */
	const struct hist_def *rd = &hist_defs[HIST_RTT];
	uint64_t rc[HIST_BOUNDS_MAX + 1];
	char *line, *save = NULL;
	unsigned nb = 0, wrong = 0;
	unsigned long long prev = 0, v;
	char le[HIST_VALUE_MAX], want[HIST_VALUE_MAX];

	for (unsigned k = 0; k <= rd->n; k++)
		rc[k] = k + 1;
	hist_render(&b, rd, "worker=\"0\"", rc, 123);
	for (line = strtok_r(b.p, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (sscanf(line, "echod_connection_rtt_seconds_bucket{worker=\"0\","
			   "le=\"%31[^\"]\"} %llu", le, &v) != 2)
			continue;
		if (nb < rd->n)
			hist_format(want, rd->bounds[nb], rd->unit_scale);
		else
			strcpy(want, "+Inf");
		if (strcmp(le, want) || v != prev + nb + 1)
			wrong++;
		prev = v;
		nb++;
	}
	tap_ok(nb == rd->n + 1 && !wrong && prev == (rd->n + 1) * (rd->n + 2) / 2,
	       "render %s: %u buckets, le as the table says, cumulative (%u wrong)",
	       rd->name, nb, wrong);
	mbuf_free(&b);
}

int main(void)
{
	test_tables();
	test_edges();
	test_observe();
	test_format();
	test_render();
	return tap_done();
}
