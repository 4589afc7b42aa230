/* metrics.c - Prometheus text exposition; see metrics.h */
#include "metrics.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "counters.h"
#include "histogram.h"
#include "persource.h"

/* ---- state ---- */

int metrics_state_init(struct metrics_state *m)
{
	int err = pthread_mutex_init(&m->lock, NULL);

	if (err)
		return -err;
	atomic_store(&m->last_reload_ok, 1);
	atomic_store(&m->last_reload_success, (uint64_t)time(NULL));
	m->start_time = (double)time(NULL);
	return 0;
}

void metrics_state_destroy(struct metrics_state *m)
{
	pthread_mutex_destroy(&m->lock);
}

/* ---- families ---- */

static void family(struct mbuf *b, const char *name, const char *type, const char *help)
{
	mbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One family with a series per worker. */
/* A worker's counter at byte offset off, plus what its predecessors counted. */
static unsigned long long counter(struct metrics_state *m, unsigned i, size_t off)
{
	uint64_t v = ctr_get((_Atomic uint64_t *)((char *)&m->ctr[i] + off));

	if (m->base)
		v += ctr_get((_Atomic uint64_t *)((char *)&m->base[i] + off));
	return (unsigned long long)v;
}

static void per_worker(struct mbuf *b, struct metrics_state *m, const char *name,
		       const char *type, const char *help, size_t off)
{
	family(b, name, type, help);
	for (unsigned i = 0; i < m->nworkers; i++)
		mbuf_printf(b, "%s{worker=\"%u\"} %llu\n", name, i, counter(m, i, off));
}

void metrics_fold(struct worker_counters *dst, unsigned ndst,
		  const struct worker_counters *src, unsigned nsrc)
{
	const size_t words = offsetof(struct worker_counters, current) / sizeof(uint64_t);

	for (unsigned i = 0; i < nsrc; i++) {
		_Atomic uint64_t *d = (_Atomic uint64_t *)&dst[i < ndst ? i : 0];
		_Atomic uint64_t *s = (_Atomic uint64_t *)&src[i];

		for (size_t k = 0; k < words; k++)
			ctr_add(&d[k], ctr_get(&s[k]));
	}
}

#define PW(b, m, name, type, field, help) \
	per_worker(b, m, name, type, help, offsetof(struct worker_counters, field))

static const char *const op_names[WOP__COUNT] = {
	[WOP_ACCEPT] = "accept", [WOP_RECV] = "recv", [WOP_SEND] = "send",
	[WOP_SHUTDOWN] = "shutdown", [WOP_CLOSE] = "close", [WOP_CANCEL] = "cancel",
};

static const char *const drop_names[DDROP__COUNT] = {
	[DDROP_TRUNCATED] = "truncated", [DDROP_LOOP_PORT] = "loop_port",
	[DDROP_BAD_SOURCE] = "bad_source", [DDROP_SEND_ERROR] = "send_error",
	[DDROP_DENIED] = "denied", [DDROP_RATE_LIMITED] = "rate_limited",
	[DDROP_TABLE_FULL] = "table_full",
};

static const char *const deny_names[CDENY__COUNT] = {
	[CDENY_LIST] = "list", [CDENY_PER_SOURCE_CONNECTIONS] = "per_source_connections",
	[CDENY_PER_SOURCE_RATE] = "per_source_rate", [CDENY_TABLE_FULL] = "table_full",
};

static const char *const aerr_names[AERR__COUNT] = {
	[AERR_EMFILE] = "EMFILE", [AERR_ENFILE] = "ENFILE", [AERR_ENOBUFS] = "ENOBUFS",
	[AERR_ENOMEM] = "ENOMEM", [AERR_OTHER] = "other",
};

/* A counter family with a series per worker and per label value: the
 * counters are an array of n at byte offset off. */
static void per_worker_by(struct mbuf *b, struct metrics_state *m, const char *name,
			  const char *help, const char *label, const char *const *values,
			  int n, size_t off)
{
	family(b, name, "counter", help);
	for (unsigned i = 0; i < m->nworkers; i++)
		for (int k = 0; k < n; k++)
			mbuf_printf(b, "%s{worker=\"%u\",%s=\"%s\"} %llu\n", name, i, label,
				    values[k], counter(m, i, off + (size_t)k * sizeof(uint64_t)));
}

/* A histogram family (histogram.h) with a series per worker: the worker's
 * counts plus its predecessors', rendered by the histogram module. */
static void per_worker_hist(struct mbuf *b, struct metrics_state *m, enum hist_family f)
{
	const struct hist_def *d = &hist_defs[f];
	const size_t off = offsetof(struct worker_counters, hist) +
			   (size_t)f * sizeof(struct hist_counts);
	uint64_t count[HIST_BOUNDS_MAX + 1];
	char labels[32];

	family(b, d->name, "histogram", d->help);
	for (unsigned i = 0; i < m->nworkers; i++) {
		for (unsigned k = 0; k <= d->n; k++)
			count[k] = counter(m, i, off + offsetof(struct hist_counts, count) +
					   (size_t)k * sizeof(uint64_t));
		snprintf(labels, sizeof(labels), "worker=\"%u\"", i);
		hist_render(b, d, labels, count,
			    counter(m, i, off + offsetof(struct hist_counts, sum)));
	}
}

/* ---- process_* from /proc ---- */

static int read_file(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "re");
	size_t n;

	if (!f)
		return -errno;
	n = fread(buf, 1, len - 1, f);
	buf[n] = '\0';
	fclose(f);
	return 0;
}

static void process_metrics(struct mbuf *b, const char *proc, double fallback_start)
{
	char path[512], buf[4096], *p;
	unsigned long long utime, stime, start, vsize;
	long long rss;
	long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);

	snprintf(path, sizeof(path), "%s/self/stat", proc);
	if (read_file(path, buf, sizeof(buf)) == 0 && (p = strrchr(buf, ')')) &&
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu "
		   "%*d %*d %*d %*d %*d %*d %llu %llu %lld", &utime, &stime, &start,
		   &vsize, &rss) == 5) {
		unsigned long long btime = 0;
		char sbuf[8192], *q;

		family(b, "process_cpu_seconds_total", "counter",
		       "Total user and system CPU time spent in seconds.");
		mbuf_printf(b, "process_cpu_seconds_total %.2f\n", (double)(utime + stime) / tck);
		family(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
		mbuf_printf(b, "process_resident_memory_bytes %lld\n", rss * page);
		family(b, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
		mbuf_printf(b, "process_virtual_memory_bytes %llu\n", vsize);
		snprintf(path, sizeof(path), "%s/stat", proc);
		if (read_file(path, sbuf, sizeof(sbuf)) == 0 && (q = strstr(sbuf, "\nbtime ")))
			btime = strtoull(q + 7, NULL, 10);
		family(b, "process_start_time_seconds", "gauge",
		       "Start time of the process since unix epoch in seconds.");
		/* /proc/stat is hidden under ProcSubset=pid: the time echod noted */
		mbuf_printf(b, "process_start_time_seconds %.2f\n",
			    btime ? (double)btime + (double)start / tck : fallback_start);
	}

	snprintf(path, sizeof(path), "%s/self/fd", proc);
	DIR *d = opendir(path);

	if (d) {
		struct dirent *e;
		long n = 0;

		while ((e = readdir(d)))
			if (e->d_name[0] != '.')
				n++;
		closedir(d);
		n--;      /* the directory stream's own fd */
		family(b, "process_open_fds", "gauge", "Number of open file descriptors.");
		mbuf_printf(b, "process_open_fds %ld\n", n);
	}
	snprintf(path, sizeof(path), "%s/self/limits", proc);
	if (read_file(path, buf, sizeof(buf)) == 0 && (p = strstr(buf, "Max open files"))) {
		unsigned long long soft;

		if (sscanf(p + strlen("Max open files"), "%llu", &soft) == 1) {
			family(b, "process_max_fds", "gauge",
			       "Maximum number of open file descriptors.");
			mbuf_printf(b, "process_max_fds %llu\n", soft);
		}
	}
}

/* ---- the exposition ---- */

int metrics_render(struct metrics_state *m, const char *proc, struct mbuf *b)
{
	const char *proxy_names[PROXY_REASON_COUNT - 1];

	for (int k = 0; k < PROXY_REASON_COUNT - 1; k++)
		proxy_names[k] = proxy_reason_name(k + 1);
	atomic_fetch_add_explicit(&m->scrapes, 1, memory_order_relaxed);
	family(b, "echod_build_info", "gauge", "Version of echod; the value is always 1.");
	mbuf_printf(b, "echod_build_info{version=\"%s\"} 1\n", PACKAGE_VERSION);

	pthread_mutex_lock(&m->lock);
	family(b, "echod_backend_info", "gauge", "Event loop backend in use; the value is always 1.");
	mbuf_printf(b, "echod_backend_info{backend=\"%s\"} 1\n", m->backend ? m->backend : "none");
	family(b, "echod_workers", "gauge", "Event loops (worker threads) running.");
	mbuf_printf(b, "echod_workers %u\n", m->nworkers);
	family(b, "echod_max_connections", "gauge", "Configured limit of open client connections.");
	mbuf_printf(b, "echod_max_connections %u\n", atomic_load(&m->max_connections));

	PW(b, m, "echod_connections_accepted_total", "counter", accepted,
	   "Client connections accepted and served.");
	PW(b, m, "echod_connections_current", "gauge", current, "Client connections open now.");
	PW(b, m, "echod_connections_rejected_total", "counter", rejected,
	   "Connections closed at once because max_connections was reached (or echod was stopping).");
	per_worker_by(b, m, "echod_connections_denied_total",
		      "Connections closed at once (RST) for their source, unserved, by reason "
		      "(list: the allow/deny lists; per_source_connections, per_source_rate, "
		      "table_full: the per-source limits).", "reason", deny_names, CDENY__COUNT,
		      offsetof(struct worker_counters, denied));
	PW(b, m, "echod_connections_closed_total", "counter", closed, "Client connections closed.");
	PW(b, m, "echod_connection_errors_total", "counter", conn_errors,
	   "Connections closed on an I/O error (reset by the peer, ...).");
	PW(b, m, "echod_idle_timeouts_total", "counter", idle_timeouts,
	   "Connections closed after idle_timeout without traffic.");
	PW(b, m, "echod_received_bytes_total", "counter", bytes_received,
	   "Bytes received from clients (to be echoed).");
	PW(b, m, "echod_sent_bytes_total", "counter", bytes_sent, "Bytes echoed back to clients.");
	PW(b, m, "echod_discarded_bytes_total", "counter", bytes_discarded,
	   "Bytes received after echod shut its write side while stopping, not echoed.");
	for (int f = 0; f < HIST__COUNT; f++)
		per_worker_hist(b, m, (enum hist_family)f);
	PW(b, m, "echod_backpressure_pauses_total", "counter", backpressure_pauses,
	   "Times a connection stopped being read because its unsent bytes reached max_pending.");
	PW(b, m, "echod_buffer_exhaustion_total", "counter", buf_exhausted,
	   "Times a connection found no free buffer (io_uring: provided-buffer ring empty, -ENOBUFS), "
	   "counted once until it is given one.");
	PW(b, m, "echod_cq_overflow_total", "counter", cq_overflow,
	   "Event loop iterations that found the io_uring completion queue overflowed.");
	PW(b, m, "echod_multishot_rearms_total", "counter", rearms,
	   "io_uring multishot accepts and receives armed again after they ended.");
	PW(b, m, "echod_loop_wakeups_total", "counter", loop_wakeups,
	   "Times an event loop came back from waiting with events to handle.");
	PW(b, m, "echod_loop_events_total", "counter", loop_events,
	   "Events (io_uring completions, epoll events) those wake-ups brought: "
	   "divided by the wake-ups, the batch each handled.");
	PW(b, m, "echod_recv_bundles_total", "counter", recv_bundles,
	   "io_uring receives that filled several buffers at once (recv bundles, kernel 6.16 and later).");

	PW(b, m, "echod_udp_received_datagrams_total", "counter", udp_rx_datagrams,
	   "UDP datagrams received (each datagram of a GRO receive), echoed or dropped.");
	PW(b, m, "echod_udp_received_bytes_total", "counter", udp_rx_bytes, "UDP bytes received.");
	PW(b, m, "echod_udp_sent_datagrams_total", "counter", udp_tx_datagrams,
	   "UDP datagrams echoed back to their source.");
	PW(b, m, "echod_udp_sent_bytes_total", "counter", udp_tx_bytes, "UDP bytes echoed.");
	per_worker_by(b, m, "echod_udp_dropped_datagrams_total",
		      "UDP datagrams received and not echoed, by reason.", "reason", drop_names,
		      DDROP__COUNT, offsetof(struct worker_counters, udp_drops));
	PW(b, m, "echod_udp_gro_receives_total", "counter", udp_gro_receives,
	   "UDP receives that coalesced several datagrams (UDP_GRO), echoed in one send.");
	PW(b, m, "echod_udp_coalesced_sends_total", "counter", udp_coalesced_sends,
	   "UDP sends that echoed several datagrams received apart (udp.coalesce, UDP_SEGMENT).");
	PW(b, m, "echod_udp_coalesced_datagrams_total", "counter", udp_coalesced_datagrams,
	   "UDP datagrams echoed in those sends.");
	PW(b, m, "echod_udp_coalesce_fallbacks_total", "counter", udp_coalesce_fallbacks,
	   "Coalesced UDP sends the kernel refused (EINVAL, EMSGSIZE, EIO), sent one by one.");
	PW(b, m, "echod_udp_kernel_drops_total", "counter", udp_kernel_drops,
	   "UDP datagrams the kernel dropped for lack of receive-buffer room (SO_RXQ_OVFL).");
	PW(b, m, "echod_proxy_headers_total", "counter", proxy_headers,
	   "PROXY protocol headers received whole and valid from a trusted proxy.");
	per_worker_by(b, m, "echod_proxy_refused_total",
		      "Connections reset over their PROXY protocol header, by reason (untrusted: "
		      "not from proxy_protocol.trusted; timeout: not whole in time; partial: EOF "
		      "first; the others: the header is invalid).", "reason", proxy_names,
		      PROXY_REASON_COUNT - 1, offsetof(struct worker_counters, proxy_refused));
	per_worker_by(b, m, "echod_accept_errors_total", "accept() failures, by errno.",
		      "errno", aerr_names, AERR__COUNT, offsetof(struct worker_counters, accept_errors));
	per_worker_by(b, m, "echod_io_errors_total",
		      "Failed I/O operations (io_uring CQEs with an error, or failed syscalls), by op.",
		      "op", op_names, WOP__COUNT, offsetof(struct worker_counters, op_errors));
	pthread_mutex_unlock(&m->lock);

	family(b, "echod_per_source_table_size", "gauge",
	       "Entries of the per-source table (per_source.table_size).");
	mbuf_printf(b, "echod_per_source_table_size %u\n", persource_size(m->persource));
	family(b, "echod_per_source_table_entries", "gauge",
	       "Entries of the per-source table in use (sources remembered).");
	mbuf_printf(b, "echod_per_source_table_entries %u\n", persource_used(m->persource));
	family(b, "echod_per_source_evictions_total", "counter",
	       "Per-source entries without open connections reused for another source.");
	mbuf_printf(b, "echod_per_source_evictions_total %llu\n",
		    (unsigned long long)persource_evictions(m->persource));
	family(b, "echod_reloads_total", "counter", "Configuration reloads applied.");
	mbuf_printf(b, "echod_reloads_total %llu\n", (unsigned long long)atomic_load(&m->reloads));
	family(b, "echod_reload_failures_total", "counter",
	       "Configuration reloads refused (the file had errors).");
	mbuf_printf(b, "echod_reload_failures_total %llu\n",
		    (unsigned long long)atomic_load(&m->reload_failures));
	family(b, "echod_config_last_reload_successful", "gauge",
	       "Whether the last configuration reload attempt succeeded.");
	mbuf_printf(b, "echod_config_last_reload_successful %d\n", atomic_load(&m->last_reload_ok));
	family(b, "echod_config_last_reload_success_timestamp_seconds", "gauge",
	       "Time of the last successful configuration load (start or reload), unix seconds.");
	mbuf_printf(b, "echod_config_last_reload_success_timestamp_seconds %llu\n",
		    (unsigned long long)atomic_load(&m->last_reload_success));
	family(b, "echod_metrics_scrapes_total", "counter", "Requests for /metrics served.");
	mbuf_printf(b, "echod_metrics_scrapes_total %llu\n",
		    (unsigned long long)atomic_load(&m->scrapes));

	process_metrics(b, proc ? proc : "/proc", m->start_time);
	return b->oom ? -ENOMEM : 0;
}
