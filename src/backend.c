/* backend.c - choosing a backend; see backend.h */
#include "backend.h"

#include <errno.h>
#include <stdio.h>

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
		snprintf(why, whylen, "epoll backend unavailable: %s", reason);
		return NULL;
	case CONFIG_BACKEND_IO_URING:
		snprintf(why, whylen, "io_uring backend is not available in this build");
		return NULL;
	case CONFIG_BACKEND_AUTO:
		if (backend_epoll.probe(cfg, reason, sizeof(reason)) == 0) {
			snprintf(why, whylen, "io_uring backend is not available in this build");
			return &backend_epoll;
		}
		snprintf(why, whylen, "no backend can run here: epoll: %s", reason);
		return NULL;
	}
	snprintf(why, whylen, "unknown backend %d", (int)choice);
	return NULL;
}
