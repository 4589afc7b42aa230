/* worker.h - one event loop: its connections, buffers, clock, counters,
 * and the services every backend uses (accept policy, idle timeouts,
 * drain, control messages from the main thread).
 *
 * A worker runs in its own thread, pinned to its core when configured.
 * Everything in struct worker belongs to that thread, except the control
 * block (ctl_*), written by the main thread under ctl_lock, and the
 * counters, read (relaxed) by the metrics endpoint.
 */
#ifndef ECHOD_WORKER_H
#define ECHOD_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "conn.h"
#include "counters.h"
#include "dgram.h"
#include "listen.h"
#include "policy.h"
#include "srclog.h"

/* Settings a worker applies live (from the main thread, on reload). */
struct worker_params {
	uint32_t max_pending;       /* backpressure cap, bytes */
	uint32_t idle_timeout_ms;   /* 0 = never */
	uint32_t shutdown_ms;       /* drain deadline */
	uint32_t busy_poll_us;      /* busy_poll_us (0: off) */
	uint32_t batch_wait_us;     /* batch_wait_us (0: off) */
	bool udp_gro;               /* udp.gro (into dc.gro) */
	bool udp_coalesce;          /* udp.coalesce (into dc.coalesce) */
	unsigned n_loop_ports;      /* udp.loop_ports (into dc.loop_ports) */
	uint16_t loop_ports[CONFIG_MAX_LOOP_PORTS];
	bool proxy_enabled;         /* proxy_protocol.enabled */
	uint32_t proxy_timeout_ms;  /* proxy_protocol.timeout */
	struct policy *policy;      /* allow/deny and the trusted proxies, NULL: everyone
				       and no proxy; a counted reference,
				       held by the worker that stores these params
				       (w->params, or w->ctl_params while posted) */
};

/* State shared by all workers: the exact max_connections count, and the
 * per-source table (set before any worker starts, for the process's life;
 * NULL: none). */
struct echod_shared {
	_Atomic uint32_t nconns __attribute__((aligned(CACHELINE)));
	_Atomic uint32_t max_connections;
	struct persource *persource;
};

enum worker_state { WORKER_RUNNING, WORKER_DRAINING, WORKER_HANDOVER, WORKER_DONE };

struct backend_ops;

struct worker {
	/* set up by the main thread before the thread starts */
	unsigned id;
	int core;                           /* -1: not pinned */
	const struct backend_ops *ops;
	struct echod_shared *shared;
	int listen_fds[LISTEN_MAX];
	bool listen_own[LISTEN_MAX];        /* bound by echod for this worker alone */
	unsigned n_listen;
	bool shared_listeners;              /* other workers watch the same fds */
	int udp_fds[LISTEN_MAX];            /* UDP sockets this worker alone reads (a flow's
					       datagrams stay on one worker, in order) */
	unsigned n_udp;
	bool udp_hold;                      /* do not read the UDP sockets until released:
					       a reload's new worker, while the old ones flush */
	uint32_t buffer_count, buffer_size;
	uint32_t conn_cap;                  /* slots reserved (max_connections range) */
	struct worker_params params;
	int exit_fd;                        /* eventfd the thread writes when run() ends */

	/* owned by the worker thread */
	void *be;                           /* backend state */
	struct conn_ctx cc;                 /* the echo logic's: buffers, counters (cc.ctr,
					       set by the main thread), clock, limits;
					       the backend sets cc.buf_release */
	struct conn *conns;                 /* conn_cap slots, touched as used */
	size_t conns_maplen;
	uint32_t conn_hw;                   /* slots ever used */
	uint32_t conn_free;                 /* free list head (via lru.next) */
	uint32_t nconns;
	struct ilist lru;                   /* open connections, least recently active first */
	struct ilist hdr_wait;              /* those awaiting a PROXY header, oldest first */
	uint64_t accept_resume_ms;          /* accept paused until (EMFILE...) */
	uint64_t spin_until_us;             /* busy_poll_us: poll, not sleep, until (conn_now_us) */
	uint32_t batch_wait_seen;           /* batch_wait_us last judged by worker_batch_wait_us */
	int fd_ceiling;                     /* a client fd at or above this is refused */
	uint64_t drain_deadline_ms;         /* also the hand-over's flush deadline */
	bool quiesce_sent;                  /* hand-over: in-flight ops cancelled */
	unsigned handover_flush_ms;
	struct conn_export *exports;        /* hand-over: what the worker gave up */
	unsigned n_exports;
	enum worker_state state;
	bool accepting;                     /* backend has accepts armed */
	bool udp_reading;                   /* the backend reads the UDP sockets only while
					       true; worker.c sets it, then calls ops->update_udp */
	struct dgram_ctx dc;                /* the datagram logic's: counters (dc.ctr, set by
					       the main thread), clock, live settings */
	struct srclog deny_log;             /* TCP denials: a log line per source per minute */

	/* control block: main thread -> worker */
	int ctl_fd;                         /* eventfd, readable when ctl_* changed */
	pthread_mutex_t ctl_lock;
	bool ctl_has_params;
	bool ctl_stop;
	bool ctl_handover;
	struct worker_params ctl_params;
	struct conn_export *ctl_imports;    /* connections to adopt (malloc'd) */
	unsigned ctl_n_imports;
	bool ctl_udp_release;               /* clear udp_hold: start reading UDP */
	unsigned ctl_n_ovfl;                /* with it: the kernel drops last seen per fd */
	int ctl_ovfl_fd[LISTEN_MAX];
	uint32_t ctl_ovfl[LISTEN_MAX];

	/* thread plumbing */
	pthread_t thread;
	int init_status;                    /* 0, or -errno from init */
	char init_error[256];
	int exit_status;
};

#define CONN_IDX_NONE UINT32_MAX

/* The worker that owns cc (a backend's buf_release hook needs it). */
static inline struct worker *worker_of(struct conn_ctx *cc)
{
	return (struct worker *)((char *)cc - offsetof(struct worker, cc));
}

/* --- main thread side --- */

/* Prepare w (ctl eventfd, lock).  0 or -errno. */
int worker_setup(struct worker *w);
/* Start the thread: it pins itself, allocates, runs the backend's init
 * and reports through init_status before serving.  Returns once init is
 * done: 0 (serving) or -errno (thread joined, init_error says why). */
int worker_start(struct worker *w);
/* New live parameters (applied by the worker at its next wake-up); the
 * worker takes its own reference to p->policy and drops the one of the
 * parameters it replaces once it no longer uses them. */
void worker_post_params(struct worker *w, const struct worker_params *p);
/* Let a held worker (udp_hold) read its UDP sockets, once the workers it
 * replaces are gone: fds[i] is a UDP socket on which they had seen the
 * SO_RXQ_OVFL count ovfl[i] (so no kernel drop is counted twice). */
void worker_post_udp_release(struct worker *w, const int *fds, const uint32_t *ovfl,
			     unsigned n);
/* Ask the worker to drain and exit: it stops accepting and reading (TCP
 * and UDP), echoes what it holds (the UDP echoes queued until the
 * deadline), then exits. */
void worker_post_stop(struct worker *w);
/* Ask the worker to stop accepting and reading (TCP and UDP), flush what it
 * can within flush_ms (the UDP echoes it queued too), then export every
 * connection (w->exports) and exit. */
void worker_post_handover(struct worker *w, unsigned flush_ms);
/* Hand n connections to the worker (it takes the array). */
void worker_post_imports(struct worker *w, struct conn_export *e, unsigned n);
/* Close a connection handed over and not taken (its fd, its bytes), and
 * give back what it held: its place in the max_connections count and its
 * per-source count (e->src_slot). */
void worker_export_drop(struct echod_shared *shared, struct conn_export *e);
/* Join the thread; returns its exit status. */
int worker_join(struct worker *w);
void worker_teardown(struct worker *w);

/* Parameters derived from a config, with policy (not referenced here). */
void worker_params_from_config(struct worker_params *p, const struct echod_config *cfg,
			       struct policy *policy);

/* --- backend side: called from the worker thread --- */

/* Refresh cc.now_ms (cheap: CLOCK_MONOTONIC_COARSE). */
void worker_clock(struct worker *w);
/* The loop's wait returned with nevents events (0: a timeout or a signal):
 * worker_clock(), and with busy_poll_us the polling window (opened again
 * by every wait that returned events). */
void worker_woke(struct worker *w, unsigned nevents);
/* batch_wait_us as the backend applies it: the setting where the backend
 * can (supported), else 0; the log says so each time the setting changes
 * to a value that has no effect. */
uint32_t worker_batch_wait_us(struct worker *w, bool supported);

/* A connection was accepted on fd: returns its slot, or NULL when its
 * source is denied (the allow/deny lists, then the per-source limits:
 * closed with RST), max_connections is reached or the worker drains (fd
 * is then closed and counted).  Sets TCP_NODELAY.  Counts it in the
 * per-source table (c->src_slot).  This is where a TCP source is judged. */
struct conn *worker_conn_new(struct worker *w, int fd);
/* Close a connection: the one place a served connection ends.  Observes
 * it into the worker's histograms (its duration, the bytes echoed, and the
 * smoothed RTT the kernel has for c->fd, TCP_INFO: so c->fd must still be
 * open), closes c->fd (a failure counted as a close error and logged),
 * releases the queue's buffers, unlinks, bumps gen, frees the slot, gives
 * back the connection's max_connections and per-source counts and counts
 * it closed.  The backend has nothing in flight on c any more. */
void worker_conn_free(struct worker *w, struct conn *c);

/* Slot lookup by index and generation (stale -> NULL). */
struct conn *worker_conn_get(struct worker *w, uint32_t idx, uint32_t gen);

/* accept() failed with -err: counts it and pauses accepting when it is a
 * resource shortage (EMFILE, ENFILE, ENOBUFS, ENOMEM).  Returns true if
 * accepting must pause (the backend disarms until worker_accept_allowed). */
bool worker_accept_error(struct worker *w, int err);
/* Whether an accepted fd takes one of the last descriptors below
 * RLIMIT_NOFILE, kept for the metrics endpoint and reloads: the caller
 * closes it and handles it as accept4's EMFILE. */
bool worker_fd_reserved(struct worker *w, int fd);
/* Whether accepting is allowed now (not paused, not draining). */
bool worker_accept_allowed(struct worker *w);

/* Time the loop may sleep before worker_tick must run, in ms (-1 none). */
int worker_timeout_ms(struct worker *w);
/* The timeout of the loop's wait: 0 (poll, do not sleep) while in the
 * busy_poll_us window of worker_woke(), else worker_timeout_ms(). */
int worker_wait_ms(struct worker *w);
/* Run timers: idle timeouts, the accept pause and the drain deadline;
 * calls ops->update_conn / ops->update_accept for what changed. */
void worker_tick(struct worker *w);

/* The ctl eventfd was readable: apply params / start draining. */
void worker_control(struct worker *w);
/* True once the worker has drained (or hit its deadline): run() returns. */
bool worker_finished(struct worker *w);

/* Intrusive lists of connection slots: link is offsetof(struct conn, lru)
 * or offsetof(struct conn, wait). */
void ilist_init(struct ilist *l);
void ilist_push_tail(struct worker *w, struct ilist *l, struct conn *c, size_t link);
void ilist_remove(struct worker *w, struct ilist *l, struct conn *c, size_t link);
/* Remove and return the head, or NULL. */
struct conn *ilist_pop(struct worker *w, struct ilist *l, size_t link);
static inline bool ilist_empty(const struct ilist *l)
{
	return l->head == ILIST_NONE;
}

#endif
