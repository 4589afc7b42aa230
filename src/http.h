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

/* Which answer a request gets: GET or HEAD /metrics the metrics (*body
 * NULL), any other path 404, any other method 405 (*allow: "GET, HEAD");
 * *body is the text of a 404 or 405.  The url is the path alone (the
 * query string is not part of it). */
enum http_route {
	HTTP_ROUTE_METRICS = 200,
	HTTP_ROUTE_NOT_FOUND = 404,
	HTTP_ROUTE_NOT_ALLOWED = 405,
};
enum http_route http_route(const char *method, const char *url, const char **body,
			   const char **allow);

/* Serve /metrics on listening socket fd.  0 or -errno (logged). */
int http_start(struct http **out, int fd, struct metrics_state *m);
/* Stop serving; fd stays open.  NULL is a no-op. */
void http_stop(struct http *h);

#endif
