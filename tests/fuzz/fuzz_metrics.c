/* fuzz_metrics.c - the metrics endpoint's request dispatch (http_route)
 * and the Prometheus text renderer (metrics_render) with fuzzed counters.
 *
 * Input: the number of workers and flags, then counter values (every
 * worker's counters, their predecessors' base, the control thread's
 * figures), then "METHOD\0URL" for the dispatcher.
 *
 * The oracle: the dispatcher answers 200 exactly for GET or HEAD of
 * "/metrics", 404 for any other path and 405 (Allow: GET, HEAD) for any
 * other method on it.  The rendering is valid text format 0.0.4: every
 * line is "# HELP name text", "# TYPE name counter|gauge|histogram" or a
 * sample "name{label="value",...} value" of the family just typed (of a
 * histogram: name_bucket, name_sum, name_count), with legal names, no
 * family typed twice, no series twice; and each per-worker series carries
 * its worker's counter plus its base (mod 2^64), the workers' series
 * numbered 0..n-1; a histogram's (the families of histogram.h, hist_defs)
 * buckets in the order of its bounds, then le="+Inf", each the sum of
 * the counts up to it (mod 2^64), _count the +Inf bucket's, _sum the
 * summed sum in the family's base unit.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "histogram.h"
#include "http.h"
#include "metrics.h"
#include "worker.h"

#define MAX_WORKERS 12

/* The per-worker families and the counter each must show. */
static const struct {
	const char *name;
	size_t off;
} families[] = {
	{ "echod_connections_accepted_total", offsetof(struct worker_counters, accepted) },
	{ "echod_connections_current", offsetof(struct worker_counters, current) },
	{ "echod_connections_rejected_total", offsetof(struct worker_counters, rejected) },
	{ "echod_connections_closed_total", offsetof(struct worker_counters, closed) },
	{ "echod_connection_errors_total", offsetof(struct worker_counters, conn_errors) },
	{ "echod_idle_timeouts_total", offsetof(struct worker_counters, idle_timeouts) },
	{ "echod_received_bytes_total", offsetof(struct worker_counters, bytes_received) },
	{ "echod_sent_bytes_total", offsetof(struct worker_counters, bytes_sent) },
	{ "echod_discarded_bytes_total", offsetof(struct worker_counters, bytes_discarded) },
	{ "echod_backpressure_pauses_total", offsetof(struct worker_counters, backpressure_pauses) },
	{ "echod_buffer_exhaustion_total", offsetof(struct worker_counters, buf_exhausted) },
	{ "echod_cq_overflow_total", offsetof(struct worker_counters, cq_overflow) },
	{ "echod_multishot_rearms_total", offsetof(struct worker_counters, rearms) },
};

static const char *const op_label[WOP__COUNT] = {
	"accept", "recv", "send", "shutdown", "close", "cancel",
};
static const char *const errno_label[AERR__COUNT] = {
	"EMFILE", "ENFILE", "ENOBUFS", "ENOMEM", "other",
};

static struct worker_counters ctr[MAX_WORKERS], base[MAX_WORKERS];

static uint64_t counter_at(unsigned i, size_t off, bool with_base)
{
	uint64_t v = ctr_get((_Atomic uint64_t *)((char *)&ctr[i] + off));

	if (with_base)
		v += ctr_get((_Atomic uint64_t *)((char *)&base[i] + off));
	return v;
}

static void check_route(const char *method, const char *url)
{
	const char *body = "unset", *allow = "unset";
	enum http_route r = http_route(method, url, &body, &allow);
	bool path = strcmp(url, "/metrics") == 0;
	bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;

	if (path && get) {
		FUZZ_CHECK(r == HTTP_ROUTE_METRICS && !allow, "%s %s: %d", method, url, r);
	} else if (!path) {
		FUZZ_CHECK(r == HTTP_ROUTE_NOT_FOUND && body && !allow, "%s %s: %d", method, url, r);
	} else {
		FUZZ_CHECK(r == HTTP_ROUTE_NOT_ALLOWED && body && allow && !strcmp(allow, "GET, HEAD"),
			   "%s %s: %d", method, url, r);
	}
}

static bool name_ok(const char *s, size_t n)
{
	if (!n || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') ||
		    s[0] == '_' || s[0] == ':'))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == ':'))
			return false;
	return true;
}

struct family_seen {
	char name[128];
};

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A per-worker counter's value: 1 with *v set. */
static int expected_counter(const char *name, const char *labels, unsigned w, bool with_base,
			    char *lv, uint64_t *v)
{
	for (size_t k = 0; k < sizeof(families) / sizeof(families[0]); k++) {
		if (strcmp(name, families[k].name))
			continue;
		*v = counter_at(w, families[k].off, with_base);
		return 1;
	}
	if (!strcmp(name, "echod_io_errors_total") &&
	    sscanf(labels, "worker=\"%*u\",op=\"%31[a-z]\"", lv) == 1) {
		for (int k = 0; k < WOP__COUNT; k++)
			if (!strcmp(lv, op_label[k])) {
				*v = counter_at(w, offsetof(struct worker_counters, op_errors) +
						(size_t)k * 8, with_base);
				return 1;
			}
		FUZZ_CHECK(0, "%s{%s}: unknown op", name, labels);
	}
	if (!strcmp(name, "echod_accept_errors_total") &&
	    sscanf(labels, "worker=\"%*u\",errno=\"%31[A-Za-z]\"", lv) == 1) {
		for (int k = 0; k < AERR__COUNT; k++)
			if (!strcmp(lv, errno_label[k])) {
				*v = counter_at(w, offsetof(struct worker_counters, accept_errors) +
						(size_t)k * 8, with_base);
				return 1;
			}
		FUZZ_CHECK(0, "%s{%s}: unknown errno", name, labels);
	}
	return 0;
}

/* Histogram buckets seen so far, per family and worker (check_text). */
static unsigned buckets_seen[HIST__COUNT][MAX_WORKERS];

/* The family of a histogram sample name (NAME_bucket, _sum, _count): its
 * index in hist_defs and the suffix, or -1. */
static int hist_of(const char *name, const char **suffix)
{
	for (int f = 0; f < HIST__COUNT; f++) {
		size_t n = strlen(hist_defs[f].name);

		if (!strncmp(name, hist_defs[f].name, n) &&
		    (!strcmp(name + n, "_bucket") || !strcmp(name + n, "_sum") ||
		     !strcmp(name + n, "_count"))) {
			*suffix = name + n;
			return f;
		}
	}
	return -1;
}

/* A histogram sample's value: 1 with want set. */
static int expected_hist(int f, const char *suffix, const char *name, const char *labels,
			 unsigned w, bool with_base, char *want, size_t size)
{
	const struct hist_def *d = &hist_defs[f];
	const size_t off = offsetof(struct worker_counters, hist) +
			   (size_t)f * sizeof(struct hist_counts);
	uint64_t cum = 0;
	unsigned upto = d->n;     /* _count: every bucket */
	char le[HIST_VALUE_MAX], bound[HIST_VALUE_MAX];

	if (!strcmp(suffix, "_sum")) {
		FUZZ_CHECK(!strchr(labels, ','), "%s{%s}: labels", name, labels);
		hist_format(want, counter_at(w, off + offsetof(struct hist_counts, sum), with_base),
			    d->unit_scale);
		return 1;
	}
	if (!strcmp(suffix, "_bucket")) {
		unsigned k = buckets_seen[f][w]++;

		FUZZ_CHECK(sscanf(labels, "worker=\"%*u\",le=\"%31[^\"]\"", le) == 1,
			   "%s{%s}: no le", name, labels);
		FUZZ_CHECK(k <= d->n, "%s{%s}: %u buckets", name, labels, k + 1);
		if (k < d->n)
			hist_format(bound, d->bounds[k], d->unit_scale);
		else
			strcpy(bound, "+Inf");
		FUZZ_CHECK(!strcmp(le, bound), "%s{%s}: bucket %u is le=\"%s\"", name, labels,
			   k, bound);
		upto = k;
	} else {
		FUZZ_CHECK(!strchr(labels, ','), "%s{%s}: labels", name, labels);
		FUZZ_CHECK(buckets_seen[f][w] == d->n + 1, "%s{%s} after %u buckets", name, labels,
			   buckets_seen[f][w]);
	}
	for (unsigned k = 0; k <= upto; k++)
		cum += counter_at(w, off + offsetof(struct hist_counts, count) + (size_t)k * 8,
				  with_base);
	snprintf(want, size, "%llu", (unsigned long long)cum);
	return 1;
}

/* The value a sample must have, if the fuzzer knows it: 1 if so (as text,
 * into want). */
static int expected(const char *name, const char *labels, unsigned nworkers, bool with_base,
		    char *want, size_t size)
{
	const char *suffix;
	unsigned w;
	char lv[32];
	uint64_t v;
	int f;

	if (sscanf(labels, "worker=\"%u\"", &w) != 1)
		return 0;
	FUZZ_CHECK(w < nworkers, "%s: worker %u of %u", name, w, nworkers);
	f = hist_of(name, &suffix);
	if (f >= 0)
		return expected_hist(f, suffix, name, labels, w, with_base, want, size);
	if (expected_counter(name, labels, w, with_base, lv, &v)) {
		snprintf(want, size, "%llu", (unsigned long long)v);
		return 1;
	}
	return 0;
}

/* Check the whole exposition; returns the number of samples. */
static unsigned check_text(const char *text, size_t len, unsigned nworkers, bool with_base,
			   uint64_t workers_value)
{
	char *copy = malloc(len + 1), *line, *save = NULL;
	char family[128] = "", help_for[128] = "";
	char **series = NULL, **typed = NULL;
	unsigned nseries = 0, ntyped = 0, per_worker_samples = 0, hist_samples = 0;
	bool workers_seen = false, histogram = false;

	FUZZ_CHECK(copy, "malloc");
	FUZZ_CHECK(len > 0 && text[len - 1] == '\n', "text does not end with a newline");
	FUZZ_CHECK(strlen(text) == len, "NUL byte in the text");
	FUZZ_CHECK(!strstr(text, "\n\n") && text[0] != '\n', "empty line in the text");
	memcpy(copy, text, len + 1);
	memset(buckets_seen, 0, sizeof(buckets_seen));
	for (int f = 0; f < HIST__COUNT; f++)      /* buckets, _sum, _count */
		hist_samples += hist_defs[f].n + 1 + 2;
	for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		size_t n = strlen(line);

		if (!strncmp(line, "# HELP ", 7)) {
			const char *sp = strchr(line + 7, ' ');

			FUZZ_CHECK(sp && name_ok(line + 7, (size_t)(sp - line - 7)) && sp[1],
				   "bad HELP line: %s", line);
			snprintf(help_for, sizeof(help_for), "%.*s", (int)(sp - line - 7), line + 7);
			continue;
		}
		if (!strncmp(line, "# TYPE ", 7)) {
			const char *sp = strchr(line + 7, ' ');

			FUZZ_CHECK(sp && name_ok(line + 7, (size_t)(sp - line - 7)) &&
				   (!strcmp(sp + 1, "counter") || !strcmp(sp + 1, "gauge") ||
				    !strcmp(sp + 1, "histogram")),
				   "bad TYPE line: %s", line);
			histogram = !strcmp(sp + 1, "histogram");
			snprintf(family, sizeof(family), "%.*s", (int)(sp - line - 7), line + 7);
			FUZZ_CHECK(!strcmp(family, help_for), "TYPE %s after HELP %s", family, help_for);
			for (unsigned i = 0; i < ntyped; i++)
				FUZZ_CHECK(strcmp(typed[i], family), "family %s typed twice", family);
			typed = realloc(typed, (ntyped + 1) * sizeof(*typed));
			FUZZ_CHECK(typed, "realloc");
			typed[ntyped++] = strdup(family);
			continue;
		}
		FUZZ_CHECK(line[0] != '#', "unknown comment: %s", line);
		/* a sample: name[{labels}] value */
		size_t nl = strcspn(line, "{ ");
		char name[128], labels[256] = "";
		const char *rest = line + nl;

		FUZZ_CHECK(name_ok(line, nl) && nl < sizeof(name), "bad metric name: %s", line);
		snprintf(name, sizeof(name), "%.*s", (int)nl, line);
		if (histogram) {
			const char *suffix;
			int f = hist_of(name, &suffix);

			FUZZ_CHECK(f >= 0 && !strncmp(name, family, strlen(family)) &&
				   suffix == name + strlen(family),
				   "sample %s outside its family (%s)", name, family);
		} else {
			FUZZ_CHECK(!strcmp(name, family), "sample %s outside its family (%s)", name,
				   family);
		}
		if (*rest == '{') {
			const char *p = rest + 1;

			for (;;) {      /* label="value" (no escapes are ever needed here) */
				size_t ln = strcspn(p, "=");

				FUZZ_CHECK(name_ok(p, ln) && p[ln] == '=' && p[ln + 1] == '"',
					   "bad label in: %s", line);
				p += ln + 2;
				p += strcspn(p, "\"\\\n");
				FUZZ_CHECK(*p == '"', "bad label value in: %s", line);
				p++;
				if (*p == ',') {
					p++;
					continue;
				}
				FUZZ_CHECK(*p == '}', "labels not closed in: %s", line);
				break;
			}
			snprintf(labels, sizeof(labels), "%.*s", (int)(p - rest - 1), rest + 1);
			rest = p + 1;
		}
		FUZZ_CHECK(*rest == ' ' && rest[1], "no value in: %s", line);
		char *end;
		double d = strtod(rest + 1, &end);

		(void)d;
		FUZZ_CHECK(*end == '\0' && end != rest + 1, "bad value in: %s", line);
		char want[64];

		if (expected(name, labels, nworkers, with_base, want, sizeof(want))) {
			FUZZ_CHECK(!strcmp(rest + 1, want), "%s{%s} is %s, counted %s", name,
				   labels, rest + 1, want);
			per_worker_samples++;
		}
		if (!strcmp(name, "echod_workers")) {
			FUZZ_CHECK(strtoull(rest + 1, NULL, 10) == workers_value, "%s", line);
			workers_seen = true;
		}
		series = realloc(series, (nseries + 1) * sizeof(*series));
		FUZZ_CHECK(series, "realloc");
		series[nseries] = malloc(n + 1);
		FUZZ_CHECK(series[nseries], "malloc");
		snprintf(series[nseries], n + 1, "%s{%s}", name, labels);
		nseries++;
		FUZZ_CHECK(n < 4096, "line too long");
	}
	FUZZ_CHECK(workers_seen, "no echod_workers sample");
	for (unsigned w = 0; w < nworkers; w++)
		for (int f = 0; f < HIST__COUNT; f++)
			FUZZ_CHECK(buckets_seen[f][w] == hist_defs[f].n + 1, "%s{worker=\"%u\"}: "
				   "%u buckets", hist_defs[f].name, w, buckets_seen[f][w]);
	FUZZ_CHECK(per_worker_samples == nworkers * (sizeof(families) / sizeof(families[0]) +
						     WOP__COUNT + AERR__COUNT + hist_samples),
		   "%u per-worker samples for %u workers", per_worker_samples, nworkers);
	qsort(series, nseries, sizeof(*series), cmp_str);
	for (unsigned i = 1; i < nseries; i++)
		FUZZ_CHECK(strcmp(series[i - 1], series[i]), "series %s twice", series[i]);
	for (unsigned i = 0; i < nseries; i++)
		free(series[i]);
	for (unsigned i = 0; i < ntyped; i++)
		free(typed[i]);
	free(series);
	free(typed);
	free(copy);
	return nseries;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const backends[] = { "epoll", "io_uring", NULL };
	struct fuzz_in in = { data, size, 0 };
	struct metrics_state m;
	struct mbuf b = { 0 };
	uint8_t head = fuzz_u8(&in);
	unsigned nworkers = head % (MAX_WORKERS + 1);
	bool with_base = head & 0x80;
	const size_t words = sizeof(struct worker_counters) / sizeof(uint64_t);

	memset(&m, 0, sizeof(m));
	FUZZ_CHECK(metrics_state_init(&m) == 0, "metrics_state_init");
	memset(ctr, 0, sizeof(ctr));
	memset(base, 0, sizeof(base));
	for (unsigned i = 0; i < nworkers; i++) {
		for (size_t k = 0; k < words; k++) {
			ctr_add((_Atomic uint64_t *)&ctr[i] + k, fuzz_u64(&in));
			if (with_base)
				ctr_add((_Atomic uint64_t *)&base[i] + k, fuzz_u64(&in));
		}
	}
	for (unsigned i = 0; i < nworkers; i++)   /* metrics_fold never carries the gauge */
		atomic_store(&base[i].current, 0);
	m.nworkers = nworkers;
	m.ctr = ctr;
	m.base = with_base ? base : NULL;
	m.backend = backends[(head >> 4) % 3];
	atomic_store(&m.max_connections, (uint32_t)fuzz_u64(&in));
	atomic_store(&m.reloads, fuzz_u64(&in));
	atomic_store(&m.reload_failures, fuzz_u64(&in));
	atomic_store(&m.last_reload_ok, (int)(fuzz_u8(&in) & 1));
	atomic_store(&m.last_reload_success, fuzz_u64(&in));
	atomic_store(&m.scrapes, fuzz_u64(&in));

	FUZZ_CHECK(metrics_render(&m, NULL, &b) == 0 && !b.oom, "metrics_render failed");
	check_text(b.p, b.len, nworkers, with_base, nworkers);
	mbuf_free(&b);
	metrics_state_destroy(&m);

	/* the rest: METHOD NUL URL (NUL ...) for the dispatcher */
	if (in.off < in.n) {
		size_t rest = in.n - in.off;
		char *req = malloc(rest + 2);
		const char *url;

		FUZZ_CHECK(req, "malloc");
		memcpy(req, in.p + in.off, rest);
		req[rest] = req[rest + 1] = '\0';
		url = req + strlen(req) + 1;
		if (url > req + rest)
			url = req + rest;
		check_route(req, url);
		free(req);
	}
	return 0;
}
