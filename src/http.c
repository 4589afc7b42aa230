/* http.c - the metrics endpoint; see http.h */
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct http {
	struct MHD_Daemon *mhd;
	struct metrics_state *m;
	int fd;
};

static void mhd_logger(void *cls, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));
static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
	char line[512];
	size_t n;

	(void)cls;
	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n && line[n - 1] == '\n')
		line[--n] = '\0';
	log_warning("metrics http: %s", line);
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status,
			     const char *body, const char *allow)
{
	struct MHD_Response *r;
	enum MHD_Result ret;

	r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
	if (allow)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
	ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

enum http_route http_route(const char *method, const char *url, const char **body,
			   const char **allow)
{
	*allow = NULL;
	if (!url || strcmp(url, "/metrics") != 0) {
		*body = "Not found: try /metrics\n";
		return HTTP_ROUTE_NOT_FOUND;
	}
	if (!method || (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))) {
		*body = "Method not allowed\n";
		*allow = "GET, HEAD";
		return HTTP_ROUTE_NOT_ALLOWED;
	}
	*body = NULL;
	return HTTP_ROUTE_METRICS;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
			       const char *method, const char *version, const char *upload,
			       size_t *upload_len, void **state)
{
	struct http *h = cls;
	struct MHD_Response *r;
	struct mbuf b = { 0 };
	enum MHD_Result ret;
	const char *body, *allow;
	static int first;

	(void)version;
	(void)upload;
	/* answer once the whole request is in (a body, if any, is ignored) */
	if (*state == NULL) {
		*state = &first;
		return MHD_YES;
	}
	if (*upload_len) {
		*upload_len = 0;
		return MHD_YES;
	}
	switch (http_route(method, url, &body, &allow)) {
	case HTTP_ROUTE_METRICS:
		break;
	case HTTP_ROUTE_NOT_FOUND:
		return reply(conn, MHD_HTTP_NOT_FOUND, body, NULL);
	default:
		return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, body, allow);
	}
	if (metrics_render(h->m, NULL, &b) < 0) {
		mbuf_free(&b);
		return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "Out of memory\n", NULL);
	}
	r = MHD_create_response_from_buffer(b.len, b.p, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		mbuf_free(&b);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, METRICS_CONTENT_TYPE);
	ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	return ret;
}

int http_start(struct http **out, int fd, struct metrics_state *m)
{
	struct http *h = calloc(1, sizeof(*h));
	int fl;

	*out = NULL;
	if (!h)
		return -ENOMEM;
	h->m = m;
	h->fd = fd;
	/* libmicrohttpd wants a non-blocking listener in its epoll mode */
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		int err = -errno;

		log_errno(LOG_ERR, err, "metrics: fcntl O_NONBLOCK on fd %d", fd);
		free(h);
		return err;
	}
	h->mhd = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG,
				  0, NULL, NULL, handler, h,
				  MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
				  MHD_OPTION_LISTEN_SOCKET, fd,
				  MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_CONNECTION_LIMIT,
				  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_TIMEOUT_SECONDS,
				  MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(32 * 1024),
				  MHD_OPTION_END);
	if (!h->mhd) {
		log_error("metrics: MHD_start_daemon failed on fd %d", fd);
		free(h);
		return -EIO;
	}
	*out = h;
	return 0;
}

void http_stop(struct http *h)
{
	if (!h)
		return;
	/* quiesce first: libmicrohttpd then leaves the listening socket open */
	if (MHD_quiesce_daemon(h->mhd) < 0)
		log_warning("metrics: MHD_quiesce_daemon failed");
	MHD_stop_daemon(h->mhd);
	free(h);
}
