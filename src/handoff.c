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

_Static_assert(HANDOFF_NAME_MAX <= sizeof(((struct handed_fd *)0)->name),
	       "a stored name comes back whole in struct handed_fd");

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

/* Append part to buf (holding *n bytes) if it fits whole. */
static void append(char *buf, size_t size, size_t *n, const char *part)
{
	size_t len = strlen(part);

	if (*n + len < size) {
		memcpy(buf + *n, part, len + 1);
		*n += len;
	}
}

void handoff_conn_name(char *buf, size_t size, unsigned id, const struct conn_export *e)
{
	char part[40];
	size_t n = 0;

	if (!size)
		return;
	buf[0] = '\0';
	snprintf(part, sizeof(part), "conn.%u.%u", id, e->flags & CONN_EXPORTED_FLAGS);
	append(buf, size, &n, part);
	if (e->src_known) {
		part[0] = '.';
		for (unsigned k = 0; k < 16; k++)
			snprintf(part + 1 + 2 * k, sizeof(part) - 1 - 2 * k, "%02x", e->src[k]);
		append(buf, size, &n, part);
	}
	if (e->start_us) {
		snprintf(part, sizeof(part), ".s%llu", (unsigned long long)e->start_us);
		append(buf, size, &n, part);
	}
	if (e->sent) {
		snprintf(part, sizeof(part), ".b%llu", (unsigned long long)e->sent);
		append(buf, size, &n, part);
	}
}

/* A decimal number of len bytes at p, all digits, within 64 bits. */
static bool parse_u64(const char *p, size_t len, uint64_t *v)
{
	uint64_t x = 0;

	if (!len || len > 20)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned d = (unsigned)(p[i] - '0');

		if (d > 9 || x > (UINT64_MAX - d) / 10)
			return false;
		x = x * 10 + d;
	}
	*v = x;
	return true;
}

bool handoff_parse_conn_name(const char *name, unsigned *id, struct conn_export *e)
{
	unsigned flags;
	int end = -1;

	e->src_known = false;
	e->start_us = e->sent = 0;
	if (sscanf(name, "conn.%u.%u%n", id, &flags, &end) != 2 || end < 0)
		return false;
	e->flags = flags;
	/* the parts: ".SRC", ".sSTART", ".bBYTES" */
	for (name += end; *name == '.'; ) {
		const char *p = name + 1;
		size_t len = strcspn(p, ".");

		if (len == 32 && strspn(p, "0123456789abcdef") >= 32 && !e->src_known) {
			for (unsigned k = 0; k < 16; k++) {
				unsigned v;

				sscanf(p + 2 * k, "%2x", &v);
				e->src[k] = (uint8_t)v;
			}
			e->src_known = true;
		} else if (*p == 's') {
			if (!parse_u64(p + 1, len - 1, &e->start_us))
				e->start_us = 0;
		} else if (*p == 'b') {
			if (!parse_u64(p + 1, len - 1, &e->sent))
				e->sent = 0;
		}
		name = p + len;
	}
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
		struct conn_export named = { .fd = -1 };
		unsigned id;
		int r;

		if (!handoff_parse_conn_name(h[i].name, &id, &named))
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
		x->flags = named.flags & CONN_EXPORTED_FLAGS;
		x->src_slot = PERSOURCE_NONE;        /* the worker that takes it counts it */
		x->src_known = named.src_known;
		memcpy(x->src, named.src, sizeof(x->src));
		x->start_us = named.start_us;        /* 0: counted from the import */
		x->sent = named.sent;
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
