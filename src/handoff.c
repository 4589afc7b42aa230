/* handoff.c - connections through systemd's fd store; see handoff.h */
#include "handoff.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "log.h"

bool handoff_available(void)
{
	const char *s = getenv("NOTIFY_SOCKET");

	return s && *s;
}

static int store(int fd, const char *name)
{
	char msg[128];
	int r;

	snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s", name);
	r = sd_pid_notify_with_fds(0, 0, msg, &fd, 1);
	if (r <= 0) {
		log_errno(LOG_ERR, r ? r : -ENOTCONN, "sd_pid_notify_with_fds FDSTORE %s", name);
		return r ? r : -ENOTCONN;
	}
	return 0;
}

/* The unsent bytes in a memfd. */
static int data_fd(const struct conn_export *e)
{
	size_t off = 0;
	int fd = memfd_create("echod-pending", MFD_CLOEXEC);

	if (fd < 0)
		return -errno;
	while (off < e->len) {
		ssize_t n = write(fd, e->data + off, e->len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? -errno : -EIO;

			close(fd);
			return err;
		}
		off += (size_t)n;
	}
	return fd;
}

unsigned handoff_push(struct conn_export *e, unsigned n)
{
	unsigned stored = 0;

	for (unsigned i = 0; i < n; i++) {
		char name[64];
		int ok = 0;

		if (e[i].len) {
			int dfd = data_fd(&e[i]);

			snprintf(name, sizeof(name), "data.%u", i);
			if (dfd < 0) {
				log_errno(LOG_ERR, dfd, "memfd for %u unsent bytes", e[i].len);
				ok = dfd;
			} else {
				ok = store(dfd, name);
				close(dfd);
			}
		}
		if (ok == 0) {
			snprintf(name, sizeof(name), "conn.%u.%u", i, e[i].flags & CONN_EXPORTED_FLAGS);
			ok = store(e[i].fd, name);
		}
		if (ok == 0)
			stored++;
		else
			log_error("fd store: connection fd %d not kept, closing it", e[i].fd);
		close(e[i].fd);
		free(e[i].data);
		e[i].data = NULL;
	}
	return stored;
}

static void unstore(const char *name)
{
	char msg[128];

	snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s", name);
	if (sd_notify(0, msg) < 0)
		log_warning("fd store: could not remove %s", name);
}

/* Read a data.ID memfd; 0 or -errno. */
static int read_data(int fd, uint8_t **data, uint32_t *len)
{
	struct stat st;
	size_t off = 0;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_size < 0 || st.st_size > (off_t)UINT32_MAX)
		return -EINVAL;
	*len = (uint32_t)st.st_size;
	*data = *len ? malloc(*len) : NULL;
	if (*len && !*data)
		return -ENOMEM;
	while (off < *len) {
		ssize_t n = pread(fd, *data + off, *len - off, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			free(*data);
			*data = NULL;
			return n < 0 ? -errno : -EIO;
		}
		off += (size_t)n;
	}
	return 0;
}

unsigned handoff_collect(struct handed_fd *h, unsigned n, struct conn_export **out)
{
	struct conn_export *e = calloc(n ? n : 1, sizeof(*e));
	unsigned count = 0;

	*out = e;
	for (unsigned i = 0; i < n; i++) {
		unsigned id, flags;
		int r;

		if (sscanf(h[i].name, "conn.%u.%u", &id, &flags) != 2)
			continue;
		unstore(h[i].name);
		r = sd_is_socket_inet(h[i].fd, AF_UNSPEC, SOCK_STREAM, 0, 0);
		if (!e || r <= 0) {
			log_error("fd %d (%s): not a connected TCP socket, closing it", h[i].fd, h[i].name);
			close(h[i].fd);
			continue;
		}
		struct conn_export *x = &e[count];

		x->fd = h[i].fd;
		x->flags = flags & CONN_EXPORTED_FLAGS;
		r = 0;
		for (unsigned j = 0; j < n && r == 0; j++) {
			unsigned did;
			char tail;

			if (sscanf(h[j].name, "data.%u%c", &did, &tail) != 1 || did != id)
				continue;
			r = read_data(h[j].fd, &x->data, &x->len);
		}
		if (r < 0) {
			/* resuming it without its bytes would lose them: close it */
			log_errno(LOG_ERR, r, "fd %d (%s): reading its unsent bytes, closing it",
				  h[i].fd, h[i].name);
			close(x->fd);
			memset(x, 0, sizeof(*x));
			continue;
		}
		count++;
	}
	/* the data memfds are read: release them */
	for (unsigned i = 0; i < n; i++) {
		if (strncmp(h[i].name, "data.", 5) == 0) {
			unstore(h[i].name);
			close(h[i].fd);
		}
	}
	return count;
}
