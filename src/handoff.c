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
	char msg[32 + HANDOFF_NAME_MAX];
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

void handoff_conn_name(char *buf, size_t size, unsigned id, const struct conn_export *e)
{
	int n = snprintf(buf, size, "conn.%u.%u", id, e->flags & CONN_EXPORTED_FLAGS);

	if (!e->src_known || n < 0 || (size_t)n + 1 + 32 >= size)
		return;           /* a source whole or none */
	buf[n++] = '.';
	for (unsigned k = 0; k < 16; k++, n += 2)
		snprintf(buf + n, size - (size_t)n, "%02x", e->src[k]);
}

bool handoff_parse_conn_name(const char *name, unsigned *id, unsigned *flags, uint8_t src[16],
			     bool *src_known)
{
	int end = -1;

	*src_known = false;
	if (sscanf(name, "conn.%u.%u%n", id, flags, &end) != 2 || end < 0)
		return false;
	name += end;
	if (*name != '.' || strlen(name + 1) != 32 ||
	    strspn(name + 1, "0123456789abcdef") != 32)
		return true;         /* no source: the peer address is its source */
	for (unsigned k = 0; k < 16; k++) {
		unsigned v;

		sscanf(name + 1 + 2 * k, "%2x", &v);
		src[k] = (uint8_t)v;
	}
	*src_known = true;
	return true;
}

unsigned handoff_push(struct conn_export *e, unsigned n)
{
	unsigned stored = 0;

	for (unsigned i = 0; i < n; i++) {
		char name[HANDOFF_NAME_MAX];
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
			handoff_conn_name(name, sizeof(name), i, &e[i]);
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
	char msg[32 + HANDOFF_NAME_MAX];

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
		uint8_t src[16];
		bool known;
		int r;

		if (!handoff_parse_conn_name(h[i].name, &id, &flags, src, &known))
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
		x->src_slot = PERSOURCE_NONE;        /* the worker that takes it counts it */
		x->src_known = known;
		memcpy(x->src, src, sizeof(x->src));
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
