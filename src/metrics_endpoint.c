/* metrics_endpoint.c - the /metrics endpoint's socket and server; see
 * metrics_endpoint.h */
#include "metrics_endpoint.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* Serve per cfg on inherited_fd or a socket bound here (*own). */
static int open_on(int inherited_fd, struct metrics_state *m, const struct echod_config *cfg,
		   struct http **http, struct listener *own)
{
	int fd = inherited_fd, err;

	own->fd = -1;
	*http = NULL;
	if (!cfg->metrics.enabled)
		return 0;
	if (fd < 0) {
		err = listen_bind_addr(&cfg->metrics.address, 128, own);
		if (err)
			return err;
		fd = own->fd;
	}
	err = http_start(http, fd, m, cfg);
	if (err) {
		if (own->fd >= 0)
			close(own->fd);
		own->fd = -1;
		return err;
	}
	if (own->fd >= 0) {
		log_info("metrics: serving %s://%s/metrics", http_scheme(*http), own->name);
	} else {
		char name[64];

		listen_sockname(fd, name, sizeof(name));
		log_info("metrics: serving %s://%s/metrics (socket-activated)", http_scheme(*http), name);
	}
	return 0;
}

static void close_on(struct http *http, struct listener *own)
{
	http_stop(http);
	if (own->fd >= 0)
		close(own->fd);
	own->fd = -1;
}

int mep_open(struct metrics_endpoint *e, int inherited_fd, struct metrics_state *m,
	     const struct echod_config *cfg)
{
	return open_on(inherited_fd, m, cfg, &e->http, &e->own);
}

void mep_close(struct metrics_endpoint *e)
{
	close_on(e->http, &e->own);
	e->http = NULL;
}

int mep_reopen(struct metrics_endpoint *e, int inherited_fd, struct metrics_state *m,
	       const struct echod_config *cur, const struct echod_config *next)
{
	struct listener own = { .fd = -1 };
	struct http *http = NULL;
	int err;

	if (inherited_fd >= 0 || (cur->metrics.enabled && next->metrics.enabled &&
	    !memcmp(&cur->metrics.address.sa, &next->metrics.address.sa,
		    sizeof(next->metrics.address.sa))))
		return http_update(&e->http, next);      /* same socket: TLS, basic auth */
	err = open_on(inherited_fd, m, next, &http, &own);
	if (err == -EADDRINUSE && e->own.fd >= 0) {
		/* overlaps the old address: the old one must go first */
		http_stop(e->http);
		e->http = NULL;
		close(e->own.fd);
		e->own.fd = -1;
		err = open_on(inherited_fd, m, next, &http, &own);
		if (err && open_on(inherited_fd, m, cur, &e->http, &e->own) < 0)
			log_error("metrics: the old endpoint could not be restored");
		if (err)
			return err;
	} else if (err) {
		return err;
	}
	close_on(e->http, &e->own);
	e->http = http;
	e->own = own;
	return 0;
}
