/* counters.h - a worker's counters, on their own cache lines.
 *
 * Written by the worker's thread only (relaxed stores), read (relaxed)
 * and summed by the metrics endpoint and the totals logged at exit.
 */
#ifndef ECHOD_COUNTERS_H
#define ECHOD_COUNTERS_H

#include <stdatomic.h>
#include <stdint.h>

#define CACHELINE 64

enum worker_op { WOP_ACCEPT, WOP_RECV, WOP_SEND, WOP_SHUTDOWN, WOP_CLOSE, WOP_CANCEL, WOP__COUNT };
enum accept_err { AERR_EMFILE, AERR_ENFILE, AERR_ENOBUFS, AERR_ENOMEM, AERR_OTHER, AERR__COUNT };

/* One cache line apart from any other worker's. */
struct worker_counters {
	_Atomic uint64_t accepted;           /* connections accepted and served */
	_Atomic uint64_t rejected;           /* closed at once at max_connections */
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
