/* worker_proxy.c - a worker's side of the PROXY protocol: who may send a
 * header (proxy_protocol.trusted, checked at accept), the connections
 * awaiting theirs (a list, oldest first, reset at proxy_protocol.timeout),
 * and what a complete header leads to: the source it names judged as a
 * direct client's would be at accept (allow/deny, then the per-source
 * limits, which count it from then on).  The echo logic (conn.c) parses
 * the header and calls worker_proxy_done(); see worker.h. */
#include "worker.h"

#include <string.h>

#include <errno.h>
#include <stddef.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backend.h"
#include "log.h"
#include "persource.h"
#include "policy.h"
#include "worker_int.h"

#define HDR offsetof(struct conn, hdr)

/* Count and log a connection refused over its header (reason: enum
 * proxy_reason); the log at most once a minute per peer and event loop. */
static void refused(struct worker *w, int fd, int reason)
{
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	char shown[48], more[80];
	uint8_t a[16];
	uint16_t port;

	ctr_add(&w->cc.ctr->proxy_refused[reason - 1], 1);
	if (getpeername(fd, (struct sockaddr *)&ss, &sslen) < 0 ||
	    !policy_source((struct sockaddr *)&ss, sslen, a, &port) ||
	    !srclog_may(&w->deny_log, a, w->cc.now_ms))
		return;
	policy_source_text(a, shown, sizeof(shown));
	srclog_take_suppressed(&w->deny_log, "denial(s)", more, sizeof(more));
	log_warning("worker %u: TCP connection from %s port %u reset: PROXY header %s%s",
		    w->id, shown, port, proxy_reason_name(reason), more);
}

bool worker_proxy_untrusted(struct worker *w, int fd)
{
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	uint8_t a[16];
	uint16_t port;

	if (getpeername(fd, (struct sockaddr *)&ss, &sslen) < 0) {
		/* ENOTCONN: reset before it was accepted; the echo logic sees it */
		log_errno(LOG_DEBUG, errno, "worker %u: getpeername fd %d", w->id, fd);
		return false;
	}
	if (policy_source((struct sockaddr *)&ss, sslen, a, &port) &&
	    policy_trusted(w->params.policy, a))
		return false;
	refused(w, fd, PROXY_ERR_UNTRUSTED);
	worker_reset_close(w, fd);
	return true;
}

void worker_proxy_wait(struct worker *w, struct conn *c)
{
	c->flags |= CONN_PROXY_WAIT;
	c->hdr_since = w->cc.now_ms;
	ilist_push_tail(w, &w->hdr_wait, c, HDR);
}

void worker_proxy_forget(struct worker *w, struct conn *c)
{
	if (c->hdr.prev != ILIST_NONE || w->hdr_wait.head == c->idx)
		ilist_remove(w, &w->hdr_wait, c, HDR);
}

/* RST when the backend closes c (a refused client leaves no TIME_WAIT). */
static void linger_reset(struct worker *w, const struct conn *c)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	if (setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) < 0)
		log_errno(LOG_DEBUG, errno, "worker %u: setsockopt SO_LINGER fd %d", w->id, c->fd);
}

void worker_proxy_done(struct conn_ctx *cc, struct conn *c, int n, const struct proxy_header *h)
{
	struct worker *w = worker_of(cc);
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	uint32_t slot = PERSOURCE_NONE;
	uint8_t a[16];
	uint16_t port;

	worker_proxy_forget(w, c);
	if (n < 0) {
		refused(w, c->fd, -n);
		linger_reset(w, c);
		return;                           /* conn.c fails it */
	}
	ctr_add(&cc->ctr->proxy_headers, 1);
	if (h->has_source) {
		memcpy(a, h->src, sizeof(a));
		port = h->src_port;
		memcpy(c->src, h->src, sizeof(c->src));
		c->flags |= CONN_PROXIED;
	} else if (getpeername(c->fd, (struct sockaddr *)&ss, &sslen) < 0 ||
		   !policy_source((struct sockaddr *)&ss, sslen, a, &port)) {
		return;                           /* LOCAL from a peer gone: the echo sees it */
	}
	if (worker_source_refused(w, a, port, &slot)) {
		linger_reset(w, c);
		conn_fail(cc, c, 0);
		return;
	}
	c->src_slot = slot;
}

uint64_t worker_proxy_next_expiry(struct worker *w)
{
	if (w->hdr_wait.head == ILIST_NONE)
		return UINT64_MAX;
	return w->conns[w->hdr_wait.head].hdr_since + w->params.proxy_timeout_ms;
}

void worker_proxy_tick(struct worker *w)
{
	struct conn *c;

	while (w->hdr_wait.head != ILIST_NONE) {
		c = &w->conns[w->hdr_wait.head];
		if (c->flags & CONN_FAILED) {      /* closing already */
			ilist_remove(w, &w->hdr_wait, c, HDR);
			continue;
		}
		if (c->hdr_since + w->params.proxy_timeout_ms > w->cc.now_ms)
			break;
		ilist_remove(w, &w->hdr_wait, c, HDR);
		c->flags &= ~CONN_PROXY_WAIT;
		refused(w, c->fd, PROXY_ERR_TIMEOUT);
		linger_reset(w, c);
		conn_fail(&w->cc, c, 0);
		w->ops->update_conn(w, c);
	}
}
