/* counters.h - a worker's counters, on their own cache lines.
 *
 * Written by the worker's thread only (relaxed stores), read (relaxed)
 * and summed by the metrics endpoint and the totals logged at exit.
 */
#ifndef ECHOD_COUNTERS_H
#define ECHOD_COUNTERS_H

#include <stdatomic.h>
#include <stdint.h>

#include "histogram.h"
#include "proxy.h"

#define CACHELINE 64

enum worker_op { WOP_ACCEPT, WOP_RECV, WOP_SEND, WOP_SHUTDOWN, WOP_CLOSE, WOP_CANCEL, WOP__COUNT };
enum accept_err { AERR_EMFILE, AERR_ENFILE, AERR_ENOBUFS, AERR_ENOMEM, AERR_OTHER, AERR__COUNT };
/* Why a datagram was not echoed (metric label values: truncated, loop_port,
 * bad_source, send_error, denied, rate_limited, table_full); see dgram.h. */
enum dgram_drop { DDROP_TRUNCATED, DDROP_LOOP_PORT, DDROP_BAD_SOURCE, DDROP_SEND_ERROR,
		  DDROP_DENIED, DDROP_RATE_LIMITED, DDROP_TABLE_FULL, DDROP__COUNT };
/* Why a TCP connection was closed at once, unserved, for its source
 * (metric label values: list = the allow/deny lists, per_source_connections,
 * per_source_rate, table_full = the per-source limits; persource.h). */
enum conn_deny { CDENY_LIST, CDENY_PER_SOURCE_CONNECTIONS, CDENY_PER_SOURCE_RATE,
		 CDENY_TABLE_FULL, CDENY__COUNT };

/* One cache line apart from any other worker's. */
struct worker_counters {
	_Atomic uint64_t accepted;           /* connections accepted and served */
	_Atomic uint64_t rejected;           /* closed at once at max_connections */
	_Atomic uint64_t denied[CDENY__COUNT];  /* closed at once (RST) for their source */
	_Atomic uint64_t closed;             /* connections closed */
	_Atomic uint64_t bytes_received;
	_Atomic uint64_t bytes_sent;
	_Atomic uint64_t bytes_discarded;    /* read after our write side was shut (drain) */
	_Atomic uint64_t idle_timeouts;
	_Atomic uint64_t backpressure_pauses;
	_Atomic uint64_t conn_errors;        /* connections closed on an I/O error */
	_Atomic uint64_t accept_errors[AERR__COUNT];
	_Atomic uint64_t op_errors[WOP__COUNT];   /* failed syscalls / CQEs, by op */
	_Atomic uint64_t buf_exhausted;      /* times a connection found no free buffer */
	_Atomic uint64_t cq_overflow;        /* io_uring only */
	_Atomic uint64_t rearms;             /* io_uring only: multishot re-arms */
	_Atomic uint64_t recv_bundles;       /* io_uring only: receives filling several buffers */
	_Atomic uint64_t loop_wakeups;       /* waits of the event loop that brought events */
	_Atomic uint64_t loop_events;        /* the events (completions) they brought */
	_Atomic uint64_t udp_rx_datagrams;   /* UDP: datagrams received (a GRO receive: each) */
	_Atomic uint64_t udp_rx_bytes;
	_Atomic uint64_t udp_tx_datagrams;   /* UDP: datagrams echoed */
	_Atomic uint64_t udp_tx_bytes;
	_Atomic uint64_t udp_drops[DDROP__COUNT];  /* UDP: datagrams not echoed, by reason */
	_Atomic uint64_t udp_gro_receives;   /* UDP: receives that coalesced several datagrams */
	_Atomic uint64_t udp_coalesced_sends;     /* UDP: sends carrying several echoes received apart */
	_Atomic uint64_t udp_coalesced_datagrams; /* UDP: the echoes in them */
	_Atomic uint64_t udp_coalesce_fallbacks;  /* UDP: such sends refused, sent one by one */
	_Atomic uint64_t udp_kernel_drops;   /* UDP: the kernel's receive-queue drops (SO_RXQ_OVFL) */
	_Atomic uint64_t proxy_headers;      /* PROXY headers accepted (then the source judged) */
	/* connections refused over their PROXY header, by reason - 1
	 * (enum proxy_reason: proxy_reason_name() is the label) */
	_Atomic uint64_t proxy_refused[PROXY_REASON_COUNT - 1];
	/* connections closed (each counted in closed): their duration, bytes
	 * echoed and TCP RTT (histogram.h: enum hist_family) */
	struct hist_counts hist[HIST__COUNT];
	_Atomic uint64_t current;            /* connections open now (a gauge: last) */
} __attribute__((aligned(CACHELINE)));

static inline void ctr_add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

static inline uint64_t ctr_get(_Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

#endif
