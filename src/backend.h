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
 *                wait at most worker_wait_ms(w); worker_woke(w, events);
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
 *
 * UDP.  w->udp_fds[0..n_udp) are datagram sockets (non-blocking, options
 * set by listen.c) that this worker alone reads.  The datagram logic is in
 * dgram.c; the backend's part:
 *     init(w): watch them too, but read them only while w->udp_reading.
 *     the datagram path, per receive (buffers of DGRAM_MAX_PAYLOAD bytes,
 *              DGRAM_RX_CMSG_SPACE of control data, the source address):
 *              dgram_parse_cmsg(); dgram_kernel_drops() when it carried
 *              SO_RXQ_OVFL; dgram_received(); MSG_TRUNC: dgram_drop(
 *              DDROP_TRUNCATED, 1), never echoed short; dgram_check()
 *              (nonzero: not echoed, counted already); else the echo: the
 *              same bytes to the source, with dgram_put_segment()'s control
 *              data, then dgram_sent().  Echoes of one socket leave in the
 *              order received; a send the socket cannot take now (EAGAIN,
 *              or a batch sent short) is retried later in order, and that
 *              socket is not read meanwhile (its receive queue, not echod's
 *              memory, absorbs the overload: no busy loop, no allocation);
 *              any other send error: dgram_drop(DDROP_SEND_ERROR,
 *              dgram_count()).  No allocation after init().
 *     update_udp(w): w->udp_reading changed (worker.c: false when the
 *              worker drains or hands over, true when a held worker is
 *              released): stop or start reading.  Once it is false, no
 *              datagram is received that is not then echoed or dropped.
 *     udp_busy(w): whether any datagram received is still to be echoed,
 *              or an op on a UDP socket is in flight (io_uring: an armed
 *              receive counts until its cancellation completes).  A drain
 *              and a hand-over end only once it is false (or at their
 *              deadline), so the workers of a reload read a socket only
 *              after the old ones have sent what they had received.
 *     fini(w): what is still queued is dropped, counted DDROP_SEND_ERROR.
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
	/* UDP: w->udp_reading changed; stop or start reading the sockets. */
	void (*update_udp)(struct worker *w);
	/* UDP: datagrams received and not yet echoed or dropped, or ops in
	 * flight on the UDP sockets. */
	bool (*udp_busy)(struct worker *w);
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
