/* http.h - the metrics endpoint: libmicrohttpd on one listening socket.
 *
 * GET and HEAD /metrics answer 200 with the Prometheus text; any other
 * path 404; any other method 405.  libmicrohttpd runs one thread in its
 * epoll mode (no select(): fds above 1023 work), with a connection cap
 * and an idle/slow-client timeout.  The thread inherits the daemon's
 * blocked signal mask (start it after the signals are blocked).  The
 * listening socket is the caller's: it is never closed or shut down here
 * (an inherited socket must survive; the caller closes its own). */
#ifndef ECHOD_HTTP_H
#define ECHOD_HTTP_H

#include "metrics.h"

#define HTTP_CONNECTION_LIMIT   512
#define HTTP_TIMEOUT_SECONDS    10

struct http;

/* Serve /metrics on listening socket fd.  0 or -errno (logged). */
int http_start(struct http **out, int fd, struct metrics_state *m);
/* Stop serving; fd stays open.  NULL is a no-op. */
void http_stop(struct http *h);

#endif
