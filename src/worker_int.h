/* worker_int.h - what worker.c and worker_conns.c share, and nothing
 * else uses (tests excepted): the slot table's set-up, slots taken and
 * given up without the max_connections accounting (a hand-over), and the
 * drain's grace period.  Declared on struct worker from worker.h. */
#ifndef ECHOD_WORKER_INT_H
#define ECHOD_WORKER_INT_H

struct worker;
struct conn;

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

#endif
