/* metrics_endpoint.h - the /metrics endpoint's socket and server: opened
 * on the socket systemd passed (echod-metrics.socket) or on one bound
 * here, moved to new settings on reload without a gap, closed at exit.
 * The HTTP(S) serving itself is http.c's. */
#ifndef ECHOD_METRICS_ENDPOINT_H
#define ECHOD_METRICS_ENDPOINT_H

#include "config.h"
#include "http.h"
#include "listen.h"
#include "metrics.h"

struct metrics_endpoint {
	struct http *http;          /* NULL: not serving */
	struct listener own;        /* the socket bound here, fd -1 if none */
};

/* Serve m per cfg (nothing if metrics are off): on inherited_fd when it is
 * a socket (>= 0), else on a socket bound to cfg's address.  e->own.fd
 * must be -1.  0 or -errno. */
int mep_open(struct metrics_endpoint *e, int inherited_fd, struct metrics_state *m,
	     const struct echod_config *cfg);

/* Move the endpoint from cur's settings to next's; on failure the old one
 * goes on as it was.  An inherited socket stays (TLS and basic auth are
 * applied to it).  0 or -errno. */
int mep_reopen(struct metrics_endpoint *e, int inherited_fd, struct metrics_state *m,
	       const struct echod_config *cur, const struct echod_config *next);

/* Stop serving and close the socket bound here. */
void mep_close(struct metrics_endpoint *e);

#endif
