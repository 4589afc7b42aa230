/* backend_epoll.h - what the epoll backend's two files share: its UDP
 * path (backend_epoll_udp.c) asks backend_epoll.c, which owns the epoll
 * set, to watch a UDP socket for reading and/or writing; backend_epoll.c
 * passes it the sockets' events and runs it.  Private to the backend. */
#ifndef ECHOD_BACKEND_EPOLL_H
#define ECHOD_BACKEND_EPOLL_H

#include <stdbool.h>

struct worker;
struct epu;

#define EPU_IN  (1u << 0)
#define EPU_OUT (1u << 1)

/* backend_epoll.c: watch UDP socket i of w (w->udp_fds[i]) for EPU_IN
 * and/or EPU_OUT, edge-triggered (0: neither; add: first registration).
 * 0 or -errno (logged). */
int ep_udp_watch(struct worker *w, unsigned i, unsigned events, bool add);

/* backend_epoll_udp.c: the UDP path of one worker.  epu_init allocates
 * every buffer it will use (recvmmsg/sendmmsg batches per socket) and
 * registers the sockets; 0 or -errno (init_error set). */
int epu_init(struct worker *w, struct epu **out);
/* Drop what is still queued (counted as send_error); free. */
void epu_fini(struct worker *w, struct epu *u);
/* Events of UDP socket i: readable and/or writable. */
void epu_event(struct worker *w, struct epu *u, unsigned i, bool in, bool out);
/* w->udp_reading changed. */
void epu_update(struct worker *w, struct epu *u);
/* Whether echoes are queued, not yet sent. */
bool epu_busy(const struct epu *u);
/* Whether a socket still has work this turn (its read budget ran out):
 * the loop must not sleep. */
bool epu_ready(const struct epu *u);
/* Give the sockets with work left another turn. */
void epu_run_ready(struct worker *w, struct epu *u);

#endif
