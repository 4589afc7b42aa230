/* backend.h - the contract every event-loop backend implements.
 *
 * A backend does the I/O of one worker; the echo semantics live in
 * conn.c and the policies (accept limits, idle timeouts, drain) in
 * worker.c and worker_conns.c.  Nothing outside a backend's own files
 * (backend_NAME*.c and its private header) includes sys/epoll.h or
 * liburing.h.  All functions run in the worker's thread, except
 * probe(), which the main thread calls before workers start.
 *
 * The backend's loop, in outline:
 *     init(w): create the event set; watch w->listen_fds (accept only while
 *              worker_accept_allowed) and w->ctl_fd; set w->buf_release.
 *     run(w):  until worker_finished(w):
 *                wait at most worker_timeout_ms(w); worker_clock(w);
 *                on ctl_fd: worker_control(w);
 *                accept: worker_conn_new() / worker_accept_error();
 *                I/O: report to conn_*(), then act on conn_next();
 *                worker_tick(w).
 *     update_conn(w, c): conn_next(c) may have changed from outside the
 *              backend's own I/O (drain, new limits, a timeout failed it):
 *              act on it now (e.g. close a failed connection).
 *     update_accept(w): arm or disarm accepting per worker_accept_allowed().
 *     adopt_conn(w, c), conn_busy(w, c, cancel), accept_busy(w):
 *              connections handed from one worker to another (a reload
 *              that changes the backend, the buffers or the cores; a
 *              restart through systemd's fd store) leave one backend idle
 *              and join the other.
 *     fini(w): close every connection still open, free the event set.
 */
#ifndef ECHOD_BACKEND_H
#define ECHOD_BACKEND_H

#include <stddef.h>

#include "config.h"

struct worker;
struct conn;

struct backend_ops {
	const char *name;               /* "epoll", "io_uring" */
	/* Can this backend run here?  0, or -errno with a reason in why. */
	int (*probe)(const struct echod_config *cfg, char *why, size_t whylen);
	int (*init)(struct worker *w);  /* 0 or -errno (logged) */
	int (*run)(struct worker *w);   /* 0 or -errno */
	void (*update_conn)(struct worker *w, struct conn *c);
	void (*update_accept)(struct worker *w);
	/* Hand-over: a connection taken from another worker; register it. */
	void (*adopt_conn)(struct worker *w, struct conn *c);
	/* Hand-over: whether an op on c is in flight; with cancel, cancel
	 * every one (their completions still arrive). */
	bool (*conn_busy)(struct worker *w, struct conn *c, bool cancel);
	/* Hand-over: whether an accept may still complete (NULL: never, the
	 * backend accepts synchronously).  A connection it accepts then is
	 * handed over with the others. */
	bool (*accept_busy)(struct worker *w);
	void (*fini)(struct worker *w);
};

extern const struct backend_ops backend_epoll;
extern const struct backend_ops backend_io_uring;

/* The backend for a configured choice.  For "auto", the first that
 * probes usable; why receives the reason a preferred one was skipped.
 * NULL (with why set) if the choice cannot run. */
const struct backend_ops *backend_select(enum config_backend choice,
					 const struct echod_config *cfg,
					 char *why, size_t whylen);

#endif
