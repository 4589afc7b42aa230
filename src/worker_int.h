/* worker_int.h - what worker.c, worker_conns.c and worker_proxy.c share,
 * and nothing else uses (tests excepted): the slot table's set-up, slots
 * taken and given up without the max_connections accounting (a
 * hand-over), the drain's grace period, the source's judgement and the
 * PROXY header's waits.  Declared on struct worker from worker.h. */
#ifndef ECHOD_WORKER_INT_H
#define ECHOD_WORKER_INT_H

#include <stdbool.h>
#include <stdint.h>

struct worker;
struct conn;
struct conn_ctx;
struct proxy_header;

#define DRAIN_GRACE_MS    2000   /* after the drain deadline: force the exit */

/* Map w->conn_cap slots (touched as used), empty the lists, hook the idle
 * list to the echo logic, set the fd ceiling.  0 or -errno (init_error set). */
int worker_conns_alloc(struct worker *w);
void worker_conns_free(struct worker *w);

/* A fresh slot for fd, or NULL when the table is full (not counted in
 * the shared connection count: the caller does that). */
struct conn *worker_slot_alloc(struct worker *w, int fd);
/* Drop c's queue, unlink it and free its slot; the socket is left as it
 * is (closed by the caller, or handed over). */
void worker_slot_release(struct worker *w, struct conn *c);

/* Judge source a (port: for the log): the allow/deny lists, then the
 * per-source limits, which count it from now on in *slot (PERSOURCE_NONE:
 * not counted).  true: refused (counted by reason and logged; the caller
 * resets the connection). */
bool worker_source_refused(struct worker *w, const uint8_t a[16], uint16_t port,
			   uint32_t *slot);
/* Close fd with an RST (SO_LINGER 0: no TIME_WAIT on echod's side). */
void worker_reset_close(struct worker *w, int fd);

/* PROXY protocol (proxy_protocol.enabled): fd, just accepted, is reset,
 * counted and logged unless its peer is a trusted proxy (true: it was). */
bool worker_proxy_untrusted(struct worker *w, int fd);
/* c awaits its header from now on (flag, list, timeout); and no longer
 * (forget: on the list or not). */
void worker_proxy_wait(struct worker *w, struct conn *c);
void worker_proxy_forget(struct worker *w, struct conn *c);
/* The echo logic's proxy_done hook (conn.h). */
void worker_proxy_done(struct conn_ctx *cc, struct conn *c, int n,
		       const struct proxy_header *h);
/* When the oldest wait times out (UINT64_MAX: none); reset those that did. */
uint64_t worker_proxy_next_expiry(struct worker *w);
void worker_proxy_tick(struct worker *w);

#endif
