/* listen.c - see listen.h */
#include "listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "log.h"


#define METRICS_FD_NAME "metrics"

/* A copy of an environment variable, taken before libsystemd unsets it. */
struct env_copy {
	bool set;
	bool too_long;
	char val[32];
};

static void env_copy(struct env_copy *e, const char *name)
{
	const char *v = getenv(name);

	memset(e, 0, sizeof(*e));
	if (!v)
		return;
	e->set = true;
	if (strlen(v) >= sizeof(e->val)) {
		e->too_long = true;
		snprintf(e->val, sizeof(e->val), "%.*s...",
			 (int)sizeof(e->val) - 4, v);
		return;
	}
	strcpy(e->val, v);
}

/* What systemd writes: a positive decimal number, no sign, no spaces, no
 * leading zero.  libsystemd also accepts " 3", "+3" and "0x3". */
static bool env_is_decimal(const struct env_copy *e)
{
	const char *p = e->val;

	if (e->too_long || *p < '1' || *p > '9')
		return false;
	while (*++p)
		if (*p < '0' || *p > '9')
			return false;
	return true;
}

/* Whether e is a plain decimal process id, not ours (one that does not
 * fit a pid is left to libsystemd, which refuses it: -ERANGE). */
static bool env_other_pid(const struct env_copy *e)
{
	long v;

	if (!env_is_decimal(e))
		return false;
	errno = 0;
	v = strtol(e->val, NULL, 10);
	return errno == 0 && v <= INT_MAX && v != (long)getpid();
}

static void strv_free_(char **l)
{
	if (!l)
		return;
	for (char **p = l; *p; p++)
		free(*p);
	free(l);
}

static void format_sockaddr(const struct sockaddr *sa, socklen_t salen,
			    char *buf, size_t len)
{
	char addr[INET6_ADDRSTRLEN];
	char scope[IF_NAMESIZE + 12] = "";

	if (!len)
		return;
	if (sa->sa_family == AF_INET && salen >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		if (inet_ntop(AF_INET, &sin->sin_addr, addr, sizeof(addr))) {
			snprintf(buf, len, "%s:%u", addr, ntohs(sin->sin_port));
			return;
		}
	} else if (sa->sa_family == AF_INET6 &&
		   salen >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
		char ifname[IF_NAMESIZE];

		if (sin6->sin6_scope_id) {
			if (if_indextoname(sin6->sin6_scope_id, ifname))
				snprintf(scope, sizeof(scope), "%%%s", ifname);
			else
				snprintf(scope, sizeof(scope), "%%%u",
					 sin6->sin6_scope_id);
		}
		if (inet_ntop(AF_INET6, &sin6->sin6_addr, addr, sizeof(addr))) {
			snprintf(buf, len, "[%s%s]:%u", addr, scope,
				 ntohs(sin6->sin6_port));
			return;
		}
	}
	snprintf(buf, len, "(address family %d)", sa->sa_family);
}

void listen_sockname(int fd, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);

	if (!len)
		return;
	memset(&ss, 0, sizeof(ss));
	if (getsockname(fd, (struct sockaddr *)&ss, &sslen) < 0) {
		snprintf(buf, len, "fd %d", fd);
		return;
	}
	format_sockaddr((const struct sockaddr *)&ss, sslen, buf, len);
}

void listen_set_init(struct listen_set *ls)
{
	memset(ls, 0, sizeof(*ls));
	ls->metrics_fd = -1;
	for (unsigned i = 0; i < LISTEN_MAX; i++)
		ls->l[i].fd = ls->udp[i].fd = -1;
}

static int socket_family(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);

	memset(&ss, 0, sizeof(ss));
	if (getsockname(fd, (struct sockaddr *)&ss, &sslen) < 0)
		return -errno;
	return ss.ss_family;
}

/* Add O_NONBLOCK and FD_CLOEXEC; neither changes the socket itself. */
static int fd_set_flags(int fd, const char *name)
{
	int fl;

	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)) {
		int err = errno;

		log_errno(LOG_ERR, err, "fd %d (%s): fcntl O_NONBLOCK", fd, name);
		return -err;
	}
	fl = fcntl(fd, F_GETFD);
	if (fl < 0 || (!(fl & FD_CLOEXEC) && fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0)) {
		int err = errno;

		log_errno(LOG_ERR, err, "fd %d (%s): fcntl FD_CLOEXEC", fd, name);
		return -err;
	}
	return 0;
}

/* Check every passed fd and fill tmp/metrics; touches neither ls nor the
 * fds.  Returns the number of echo listeners or -errno. */
static bool handed_name(const char *name)
{
	return strncmp(name, "conn.", 5) == 0 || strncmp(name, "data.", 5) == 0;
}

/* Whether fd is an inet datagram socket bound to a port: 1, 0, or -errno. */
static int bound_datagram(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	int r = sd_is_socket_inet(fd, AF_UNSPEC, SOCK_DGRAM, -1, 0);

	if (r <= 0)
		return r;
	memset(&ss, 0, sizeof(ss));
	if (getsockname(fd, (struct sockaddr *)&ss, &sslen) < 0)
		return -errno;
	return ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port != 0
				       : ((struct sockaddr_in6 *)&ss)->sin6_port != 0;
}

/* Note fd as an inherited socket in tmp[*count] (at most LISTEN_MAX). */
static int adopt_one(int fd, const char *name, const char *what, struct listener *tmp,
		     unsigned *count)
{
	int family;

	if (*count >= LISTEN_MAX) {
		log_errno(LOG_ERR, EMFILE, "fd %d (%s): more than %d %s", fd, name, LISTEN_MAX, what);
		return -EMFILE;
	}
	family = socket_family(fd);
	if (family < 0) {
		log_errno(LOG_ERR, family, "fd %d (%s): getsockname", fd, name);
		return family;
	}
	tmp[*count].fd = fd;
	tmp[*count].inherited = true;
	tmp[*count].family = family;
	listen_sockname(fd, tmp[*count].name, sizeof(tmp[*count].name));
	(*count)++;
	return 0;
}

/* Check every passed fd and fill tmp (stream listeners), udp (datagram
 * sockets) and metrics; touches neither ls nor the fds.  Returns the
 * number of echo listeners or -errno. */
static int adopt_check(const struct listen_set *ls, int n, char **names,
		       struct listener *tmp, struct listener *udp, unsigned *n_udp,
		       int *metrics_fd)
{
	unsigned count = ls->n;

	*metrics_fd = -1;
	*n_udp = ls->n_udp;
	for (int i = 0; i < n; i++) {
		int fd = SD_LISTEN_FDS_START + i;
		const char *name = names && names[i] ? names[i] : "unknown";
		int r, dgram;

		if (handed_name(name))
			continue;          /* checked by the hand-off module */
		dgram = strcmp(name, METRICS_FD_NAME) ? bound_datagram(fd) : 0;
		if (dgram > 0) {
			r = adopt_one(fd, name, "UDP echo sockets", udp, n_udp);
			if (r < 0)
				return r;
			continue;
		}
		r = dgram < 0 ? dgram : sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0);
		if (r < 0) {
			log_errno(LOG_ERR, r, "fd %d (%s): sd_is_socket_inet", fd, name);
			return r;
		}
		if (r == 0) {
			log_error("fd %d (%s): not a listening TCP socket (nor a bound UDP one)",
				  fd, name);
			return -EINVAL;
		}
		if (strcmp(name, METRICS_FD_NAME) == 0) {
			if (*metrics_fd >= 0) {
				log_error("fd %d (%s): a second metrics socket (the first is fd %d)",
					  fd, name, *metrics_fd);
				return -EINVAL;
			}
			*metrics_fd = fd;
			continue;
		}
		r = adopt_one(fd, name, "echo listeners", tmp, &count);
		if (r < 0)
			return r;
	}
	return (int)(count - ls->n);
}

int listen_adopt(struct listen_set *ls)
{
	struct listener tmp[LISTEN_MAX], udp[LISTEN_MAX];
	struct env_copy pid, fds;
	char **names = NULL;
	unsigned n_udp;
	int n, r, metrics_fd;

	env_copy(&pid, "LISTEN_PID");
	env_copy(&fds, "LISTEN_FDS");

	/* Variables for another process (or none) are not ours to judge:
	 * libsystemd parses LISTEN_FDNAMES before it looks at LISTEN_PID, and
	 * would fail a start on names meant for someone else. */
	if (!pid.set || env_other_pid(&pid)) {
		unsetenv("LISTEN_PID");
		unsetenv("LISTEN_FDS");
		unsetenv("LISTEN_FDNAMES");
		return 0;
	}

	/* Also unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES, whatever
	 * it returns, so that no child ever sees them. */
	n = sd_listen_fds_with_names(1, &names);
	if (n < 0) {
		log_errno(LOG_ERR, n,
			  "sd_listen_fds_with_names (LISTEN_PID=%s LISTEN_FDS=%s)",
			  pid.set ? pid.val : "(unset)",
			  fds.set ? fds.val : "(unset)");
		r = n;
		goto out;
	}
	if (pid.set && !env_is_decimal(&pid)) {
		log_errno(LOG_ERR, EINVAL, "LISTEN_PID=\"%s\": not a plain decimal process id", pid.val);
		r = -EINVAL;
		goto out;
	}
	if (n == 0) {
		r = 0;          /* not socket-activated, or not for us */
		goto out;
	}
	if (!env_is_decimal(&fds)) {
		log_errno(LOG_ERR, EINVAL, "LISTEN_FDS=\"%s\": not a plain decimal number of fds", fds.val);
		r = -EINVAL;
		goto out;
	}

	r = adopt_check(ls, n, names, tmp, udp, &n_udp, &metrics_fd);
	if (r < 0)
		goto out;
	for (int i = 0; i < n; i++) {
		int fd = SD_LISTEN_FDS_START + i;
		int err = fd_set_flags(fd, names && names[i] ? names[i] : "unknown");

		if (err < 0) {
			r = err;
			goto out;
		}
	}

	for (int i = 0; i < n; i++) {
		const char *name = names && names[i] ? names[i] : "unknown";
		struct handed_fd *m;

		if (!handed_name(name))
			continue;
		m = realloc(ls->handed, (ls->n_handed + 1) * sizeof(*m));
		if (!m) {
			r = -ENOMEM;
			goto out;
		}
		ls->handed = m;
		m[ls->n_handed].fd = SD_LISTEN_FDS_START + i;
		snprintf(m[ls->n_handed].name, sizeof(m[0].name), "%s", name);
		ls->n_handed++;
	}
	for (int i = 0; i < r; i++) {
		log_info("listening on %s (fd %d, from the service manager)",
			 tmp[ls->n].name, tmp[ls->n].fd);
		ls->l[ls->n] = tmp[ls->n];
		ls->n++;
	}
	for (unsigned i = ls->n_udp; i < n_udp; i++) {
		log_info("UDP echo on %s (fd %d, from the service manager)", udp[i].name, udp[i].fd);
		ls->udp[ls->n_udp++] = udp[i];
	}
	if (metrics_fd >= 0) {
		char name[64];

		listen_sockname(metrics_fd, name, sizeof(name));
		log_info("metrics socket %s (fd %d, from the service manager)",
			 name, metrics_fd);
		ls->metrics_fd = metrics_fd;
	}
	ls->activated = true;
out:
	strv_free_(names);
	return r;
}

static int set_int_opt(int fd, int level, int opt, const char *optname,
		       const char *name)
{
	int one = 1;

	if (setsockopt(fd, level, opt, &one, sizeof(one)) < 0) {
		int err = errno;

		log_errno(LOG_ERR, err, "setsockopt %s %s", optname, name);
		return -err;
	}
	return 0;
}

/* A socket of type SOCK_STREAM (listening, with backlog) or SOCK_DGRAM
 * bound to a. */
static int bind_one(const struct config_addr *a, int type, int backlog, bool reuseport,
		    struct listener *out)
{
	const struct sockaddr *sa = (const struct sockaddr *)&a->sa;
	int family = a->sa.ss_family;
	char name[sizeof(out->name)];
	int fd, r, err;

	format_sockaddr(sa, a->salen, name, sizeof(name));
	if ((family != AF_INET && family != AF_INET6) ||
	    a->salen < (family == AF_INET ? sizeof(struct sockaddr_in)
					  : sizeof(struct sockaddr_in6)) ||
	    a->salen > sizeof(a->sa)) {
		log_errno(LOG_ERR, EAFNOSUPPORT, "listen address %s", a->text);
		return -EAFNOSUPPORT;
	}

	fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		err = errno;
		log_errno(LOG_ERR, err, "socket %s", name);
		return -err;
	}
	/* (not on UDP: there it would let another socket share the port) */
	r = type == SOCK_STREAM ? set_int_opt(fd, SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR", name)
				: 0;
	if (!r && family == AF_INET6)
		r = set_int_opt(fd, IPPROTO_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY", name);
	if (!r && reuseport)
		r = set_int_opt(fd, SOL_SOCKET, SO_REUSEPORT, "SO_REUSEPORT", name);
	if (r < 0)
		goto fail;
	if (bind(fd, sa, a->salen) < 0) {
		r = -errno;
		log_errno(LOG_ERR, r, "bind %s", name);
		goto fail;
	}
	if (type == SOCK_STREAM && listen(fd, backlog) < 0) {
		r = -errno;
		log_errno(LOG_ERR, r, "listen %s", name);
		goto fail;
	}
	out->fd = fd;
	out->inherited = false;
	out->family = family;
	listen_sockname(fd, out->name, sizeof(out->name));
	return 0;
fail:
	close(fd);
	return r;
}

int listen_bind_addr(const struct config_addr *a, int backlog, struct listener *out)
{
	return bind_one(a, SOCK_STREAM, backlog, false, out);
}

/* Bind every address of addrs[0..naddrs) into l[*n...]; on error close
 * those bound here. */
static int bind_all(struct listener *l, unsigned *n, const struct config_addr *addrs,
		    unsigned naddrs, int type, int backlog, bool reuseport)
{
	const char *what = type == SOCK_STREAM ? "listening on" : "UDP echo on";
	unsigned first = *n;

	if (naddrs > CONFIG_MAX_LISTEN || *n + naddrs > LISTEN_MAX) {
		log_errno(LOG_ERR, EMFILE, "listen: %u addresses, %u sockets already, at most %d",
			  naddrs, *n, LISTEN_MAX);
		return -EMFILE;
	}
	for (unsigned i = 0; i < naddrs; i++) {
		int r = bind_one(&addrs[i], type, backlog, reuseport, &l[*n]);

		if (r < 0) {
			while (*n > first) {
				(*n)--;
				close(l[*n].fd);
				memset(&l[*n], 0, sizeof(l[*n]));
				l[*n].fd = -1;
			}
			return r;
		}
		log_info("%s %s (fd %d)", what, l[*n].name, l[*n].fd);
		(*n)++;
	}
	return 0;
}

int listen_bind(struct listen_set *ls, const struct echod_config *cfg, bool reuseport)
{
	int backlog = cfg->backlog >= 1 && cfg->backlog <= CONFIG_BACKLOG_MAX
		      ? (int)cfg->backlog : SOMAXCONN;

	return bind_all(ls->l, &ls->n, cfg->listen, cfg->n_listen, SOCK_STREAM, backlog,
			reuseport);
}

int listen_bind_udp(struct listen_set *ls, const struct echod_config *cfg, bool reuseport)
{
	return bind_all(ls->udp, &ls->n_udp, cfg->udp.listen, cfg->udp.n_listen, SOCK_DGRAM, 0,
			reuseport);
}

/* SO_RCVBUF per udp.receive_buffer: SO_RCVBUFFORCE (CAP_NET_ADMIN: past
 * net.core.rmem_max) first; a notice when the kernel gave less. */
static void set_rcvbuf(const struct listener *l, uint32_t want, bool *warned)
{
	int v = (int)want, got = 0;
	socklen_t len = sizeof(got);

	if (!want)
		return;
	if (setsockopt(l->fd, SOL_SOCKET, SO_RCVBUFFORCE, &v, sizeof(v)) < 0 &&
	    setsockopt(l->fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v)) < 0) {
		log_errno(LOG_WARNING, errno, "setsockopt SO_RCVBUF %u %s", want, l->name);
		return;
	}
	/* the kernel reports twice what it grants (its bookkeeping) */
	if (getsockopt(l->fd, SOL_SOCKET, SO_RCVBUF, &got, &len) == 0 && got / 2 < v &&
	    !*warned) {
		*warned = true;
		log_notice("UDP %s: receive buffer %d bytes, not %u (net.core.rmem_max; "
			   "CAP_NET_ADMIN or the socket unit's ReceiveBuffer= go past it)",
			   l->name, got / 2, want);
	}
}

int listen_udp_options(struct listen_set *sets, unsigned nsets, const struct echod_config *cfg)
{
	static bool gro_missing;         /* logged once */
	bool rcvbuf_warned = false;
	int one = 1, gro = cfg->udp.gro;
	const struct listener *first = NULL;
	unsigned n = 0;

	for (unsigned s = 0; s < nsets; s++) {
		for (unsigned i = 0; i < sets[s].n_udp; i++) {
			const struct listener *l = &sets[s].udp[i];

			if (setsockopt(l->fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof(one)) < 0) {
				int err = errno;

				log_errno(LOG_ERR, err, "setsockopt SO_RXQ_OVFL %s", l->name);
				return -err;
			}
			if (!gro_missing &&
			    setsockopt(l->fd, IPPROTO_UDP, UDP_GRO, &gro, sizeof(gro)) < 0) {
				if (errno != ENOPROTOOPT) {
					int err = errno;

					log_errno(LOG_ERR, err, "setsockopt UDP_GRO %s", l->name);
					return -err;
				}
				gro_missing = true;
				log_notice("UDP_GRO: not supported by this kernel (ENOPROTOOPT), "
					   "serving without it");
			}
			set_rcvbuf(l, cfg->udp.receive_buffer, &rcvbuf_warned);
			if (!n++)
				first = l;
		}
	}
	if (first) {
		int got = 0;
		socklen_t len = sizeof(got);

		if (getsockopt(first->fd, SOL_SOCKET, SO_RCVBUF, &got, &len) < 0)
			got = 0;
		log_info("UDP sockets: %u; SO_RXQ_OVFL on; UDP_GRO %s; receive buffer %d bytes",
			 n, gro_missing ? "not supported" : gro ? "on" : "off", got / 2);
	}
	return 0;
}

/* Close the sockets of l[0..*n) echod bound; keep the inherited ones. */
static void close_own(struct listener *l, unsigned *n)
{
	unsigned j = 0;

	for (unsigned i = 0; i < *n; i++) {
		if (l[i].inherited) {
			l[j++] = l[i];
			continue;
		}
		if (l[i].fd >= 0)
			close(l[i].fd);
	}
	for (unsigned i = j; i < *n; i++) {
		memset(&l[i], 0, sizeof(l[i]));
		l[i].fd = -1;
	}
	*n = j;
}

void listen_close_own(struct listen_set *ls)
{
	close_own(ls->l, &ls->n);
	close_own(ls->udp, &ls->n_udp);
}
