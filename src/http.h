/* http.h - the metrics endpoint: libmicrohttpd on one listening socket.
 *
 * GET and HEAD /metrics answer 200 with the Prometheus text; any other
 * path 404; any other method 405.  libmicrohttpd runs one thread in its
 * epoll mode (no select(): fds above 1023 work), with a connection cap
 * and an idle/slow-client timeout.  The thread inherits the daemon's
 * blocked signal mask (start it after the signals are blocked).  The
 * listening socket is the caller's: it is never closed or shut down here
 * (an inherited socket must survive; the caller closes its own).
 * With "metrics.tls_certificate" and "metrics.tls_key" it serves HTTPS
 * (GnuTLS, TLS 1.2+; http_tls.h), with "metrics.basic_auth" it asks for
 * credentials (metrics_auth.h). */
#ifndef ECHOD_HTTP_H
#define ECHOD_HTTP_H

#include "config.h"
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

/* Serve /metrics on listening socket fd, with the TLS certificate and key
 * (HTTPS) and the basic auth users of cfg->metrics if set (a request
 * without valid credentials then gets 401 with WWW-Authenticate: Basic
 * realm="echod"; bcrypt runs in libmicrohttpd's thread).  The PEM data and
 * the users are copied.  0 or -errno (logged). */
int http_start(struct http **out, int fd, struct metrics_state *m,
	       const struct echod_config *cfg);
/* On the same socket, serve the TLS certificate, key and basic auth users
 * of cfg if they differ from *h's: a new libmicrohttpd daemon starts on the
 * socket, then the old one stops (its connections closed: the next scrape
 * gets the new certificate), *h replaced.  On failure *h serves on as it
 * was.  *h NULL (not serving): nothing.  0 or -errno (logged). */
int http_update(struct http **h, const struct echod_config *cfg);
/* "https" if h serves TLS, else "http". */
const char *http_scheme(const struct http *h);
/* Stop serving; fd stays open.  NULL is a no-op. */
void http_stop(struct http *h);

#endif
