/* http.c - the metrics endpoint; see http.h */
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_tls.h"
#include "log.h"
#include "metrics_auth.h"

#include <netdb.h>
#include <sys/socket.h>

/* TLS 1.2 and 1.3 only, as exporter-toolkit's default min_version */
#define HTTP_TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
#define HTTP_REALM "echod"

struct http {
	struct MHD_Daemon *mhd;
	struct metrics_state *m;
	int fd;
	char *cert, *key;               /* PEM, NUL-terminated; NULL: plain HTTP */
	size_t cert_len, key_len;
	struct metrics_auth *auth;      /* NULL: no basic auth */
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
	/* a client that fails the TLS handshake (plain HTTP, an unknown CA) is
	 * the client's problem, not the daemon's */
	log_msg(strstr(line, "andshake") || strstr(line, "TLS") ? LOG_INFO : LOG_WARNING,
		"metrics http: %s", line);
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

/* s with anything but printable ASCII as '?', cut to fit buf. */
static const char *printable(char *buf, size_t size, const char *s)
{
	size_t i;

	for (i = 0; s[i] && i + 1 < size; i++)
		buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	buf[i] = '\0';
	return buf;
}

static const char *peer_of(struct MHD_Connection *conn, char *buf, size_t size)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci ? ci->client_addr : NULL;
	socklen_t len = sa && sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
							: sizeof(struct sockaddr_in);

	if (!sa || getnameinfo(sa, len, buf, (socklen_t)size, NULL, 0, NI_NUMERICHOST))
		snprintf(buf, size, "unknown");
	return buf;
}

/* Basic auth: whether the request carries credentials the verifier takes.
 * bcrypt runs here, in libmicrohttpd's thread, never in an event loop. */
static bool authorized(struct http *h, struct MHD_Connection *conn)
{
	enum metrics_auth_result r;
	char *pass = NULL, *user;
	char shown[CONFIG_USER_MAX], peer[64];
	uint64_t before = metrics_auth_bcrypt_count(h->auth);

	user = MHD_basic_auth_get_username_password(conn, &pass);
	if (!user) {
		if (pass)
			MHD_free(pass);
		return false;   /* no credentials: the usual first request of a browser */
	}
	r = metrics_auth_check(h->auth, user, pass);
	if (metrics_auth_bcrypt_count(h->auth) != before)
		log_msg(r == METRICS_AUTH_DENIED ? LOG_NOTICE : LOG_DEBUG,
			"metrics: basic auth: bcrypt check %llu: user '%s' from %s %s",
			(unsigned long long)metrics_auth_bcrypt_count(h->auth),
			printable(shown, sizeof(shown), user), peer_of(conn, peer, sizeof(peer)),
			r == METRICS_AUTH_DENIED ? "refused" : "accepted");
	if (pass) {
		explicit_bzero(pass, strlen(pass));
		MHD_free(pass);
	}
	MHD_free(user);
	return r != METRICS_AUTH_DENIED;
}

/* 401 with WWW-Authenticate: Basic realm="echod". */
static enum MHD_Result unauthorized(struct MHD_Connection *conn)
{
	static const char body[] = "Unauthorized\n";
	struct MHD_Response *r;
	enum MHD_Result ret;

	r = MHD_create_response_from_buffer(sizeof(body) - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
	ret = MHD_queue_basic_auth_fail_response(conn, HTTP_REALM, r);
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
	if (h->auth && !authorized(h, conn))
		return unauthorized(conn);
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

/* Free what http_start() allocated (the key wiped first). */
static void http_free(struct http *h)
{
	if (h->key)
		explicit_bzero(h->key, h->key_len);
	free(h->key);
	free(h->cert);
	metrics_auth_free(h->auth);
	free(h);
}

/* The TLS certificate and key and the basic auth users of cfg into h. */
static int http_secure(struct http *h, const struct echod_config *cfg)
{
	const struct config_pem *c = &cfg->metrics.tls_certificate, *k = &cfg->metrics.tls_key;
	char desc[512];
	bool expired;

	if (c->len && k->len) {
		h->cert = malloc(c->len + 1);
		h->key = malloc(k->len + 1);
		if (!h->cert || !h->key)
			return -ENOMEM;
		memcpy(h->cert, c->data, c->len + 1);
		memcpy(h->key, k->data, k->len + 1);
		h->cert_len = c->len;
		h->key_len = k->len;
		if (http_tls_describe(h->cert, h->cert_len, desc, sizeof(desc), &expired) == 0)
			log_msg(expired ? LOG_WARNING : LOG_INFO, "metrics: TLS certificate %s%s",
				desc, expired ? ": outside its validity now" : "");
	}
	if (cfg->metrics.n_basic_auth) {
		h->auth = metrics_auth_new(cfg->metrics.basic_auth, cfg->metrics.n_basic_auth);
		if (!h->auth)
			return -ENOMEM;
		log_info("metrics: basic auth: %u user%s", cfg->metrics.n_basic_auth,
			 cfg->metrics.n_basic_auth == 1 ? "" : "s");
	}
	return 0;
}

int http_start(struct http **out, int fd, struct metrics_state *m, const struct echod_config *cfg)
{
	struct http *h = calloc(1, sizeof(*h));
	struct MHD_OptionItem none[] = { { MHD_OPTION_END, 0, NULL } };
	struct MHD_OptionItem tls[] = {
		{ MHD_OPTION_HTTPS_MEM_CERT, 0, NULL },
		{ MHD_OPTION_HTTPS_MEM_KEY, 0, NULL },
		{ MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)HTTP_TLS_PRIORITIES },
		{ MHD_OPTION_END, 0, NULL },
	};
	int fl, err;

	*out = NULL;
	if (!h)
		return -ENOMEM;
	h->m = m;
	h->fd = fd;
	err = http_secure(h, cfg);
	if (err) {
		log_errno(LOG_ERR, err, "metrics: TLS and basic auth");
		http_free(h);
		return err;
	}
	if (h->cert && !http_tls_supported()) {
		log_error("metrics: this libmicrohttpd was built without TLS: no HTTPS");
		http_free(h);
		return -ENOTSUP;
	}
	tls[0].ptr_value = h->cert;
	tls[1].ptr_value = h->key;
	/* libmicrohttpd wants a non-blocking listener in its epoll mode */
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		err = -errno;
		log_errno(LOG_ERR, err, "metrics: fcntl O_NONBLOCK on fd %d", fd);
		http_free(h);
		return err;
	}
	h->mhd = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG |
				  (h->cert ? MHD_USE_TLS : 0),
				  0, NULL, NULL, handler, h,
				  MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
				  MHD_OPTION_LISTEN_SOCKET, fd,
				  MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_CONNECTION_LIMIT,
				  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_TIMEOUT_SECONDS,
				  MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(32 * 1024),
				  MHD_OPTION_ARRAY, h->cert ? tls : none,
				  MHD_OPTION_END);
	if (!h->mhd) {
		log_error("metrics: MHD_start_daemon failed on fd %d", fd);
		http_free(h);
		return -EIO;
	}
	*out = h;
	return 0;
}

const char *http_scheme(const struct http *h)
{
	return h && h->cert ? "https" : "http";
}

/* Whether h serves what cfg asks for: the same certificate, key and users. */
static bool http_same(const struct http *h, const struct echod_config *cfg)
{
	const struct config_pem *c = &cfg->metrics.tls_certificate, *k = &cfg->metrics.tls_key;
	bool tls = c->len && k->len;

	if (tls != (h->cert != NULL))
		return false;
	if (tls && (c->len != h->cert_len || k->len != h->key_len ||
		    memcmp(c->data, h->cert, h->cert_len) || memcmp(k->data, h->key, h->key_len)))
		return false;
	if (!cfg->metrics.n_basic_auth)
		return h->auth == NULL;
	return metrics_auth_same(h->auth, cfg->metrics.basic_auth, cfg->metrics.n_basic_auth);
}

int http_update(struct http **hp, const struct echod_config *cfg)
{
	struct http *old = *hp, *h;
	int err;

	if (!old || http_same(old, cfg))
		return 0;
	/* the new daemon accepts on the socket before the old one stops:
	 * nothing waiting in the backlog is lost */
	err = http_start(&h, old->fd, old->m, cfg);
	if (err) {
		log_error("metrics: the endpoint keeps its TLS and basic auth");
		return err;
	}
	http_stop(old);
	*hp = h;
	log_info("metrics: TLS or basic auth changed: %s on the same socket", http_scheme(h));
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
	http_free(h);
}
