/* backend.c - choosing a backend; see backend.h */
#include "backend.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

const struct backend_ops *backend_select(enum config_backend choice,
					 const struct echod_config *cfg,
					 char *why, size_t whylen)
{
	char reason[256];

	why[0] = '\0';
	switch (choice) {
	case CONFIG_BACKEND_EPOLL:
		if (backend_epoll.probe(cfg, reason, sizeof(reason)) == 0)
			return &backend_epoll;
		snprintf(why, whylen, "epoll unavailable: %s", reason);
		return NULL;
	case CONFIG_BACKEND_IO_URING:
		if (backend_io_uring.probe(cfg, reason, sizeof(reason)) == 0)
			return &backend_io_uring;
		snprintf(why, whylen, "io_uring unavailable: %s", reason);
		return NULL;
	case CONFIG_BACKEND_AUTO:
		if (backend_io_uring.probe(cfg, reason, sizeof(reason)) == 0)
			return &backend_io_uring;
		snprintf(why, whylen, "io_uring unavailable: %s", reason);
		if (backend_epoll.probe(cfg, reason, sizeof(reason)) == 0)
			return &backend_epoll;
		snprintf(why + strlen(why) , whylen - strlen(why), "; epoll unavailable: %s", reason);
		return NULL;
	}
	snprintf(why, whylen, "unknown backend %d", (int)choice);
	return NULL;
}
