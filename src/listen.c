/* listen.c - see listen.h */
#include "listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
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
		ls->l[i].fd = -1;
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

static int adopt_check(const struct listen_set *ls, int n, char **names,
		       struct listener *tmp, int *metrics_fd)
{
	unsigned count = 0;

	*metrics_fd = -1;
	for (int i = 0; i < n; i++) {
		int fd = SD_LISTEN_FDS_START + i;
		const char *name = names && names[i] ? names[i] : "unknown";
		int r, family;

		if (handed_name(name))
			continue;          /* checked by the hand-off module */
		r = sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0);
		if (r < 0) {
			log_errno(LOG_ERR, r, "fd %d (%s): sd_is_socket_inet", fd, name);
			return r;
		}
		if (r == 0) {
			log_error("fd %d (%s): not a listening TCP socket", fd, name);
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
		if (ls->n + count >= LISTEN_MAX) {
			log_errno(LOG_ERR, EMFILE,
				  "fd %d (%s): more than %d echo listeners", fd,
				  name, LISTEN_MAX);
			return -EMFILE;
		}
		family = socket_family(fd);
		if (family < 0) {
			log_errno(LOG_ERR, family, "fd %d (%s): getsockname", fd, name);
			return family;
		}
		tmp[count].fd = fd;
		tmp[count].inherited = true;
		tmp[count].family = family;
		listen_sockname(fd, tmp[count].name, sizeof(tmp[count].name));
		count++;
	}
	return (int)count;
}

int listen_adopt(struct listen_set *ls)
{
	struct listener tmp[LISTEN_MAX];
	struct env_copy pid, fds;
	char **names = NULL;
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

	r = adopt_check(ls, n, names, tmp, &metrics_fd);
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
			 tmp[i].name, tmp[i].fd);
		ls->l[ls->n++] = tmp[i];
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

static int bind_one(const struct config_addr *a, int backlog, bool reuseport,
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

	fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		err = errno;
		log_errno(LOG_ERR, err, "socket %s", name);
		return -err;
	}
	r = set_int_opt(fd, SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR", name);
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
	if (listen(fd, backlog) < 0) {
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
	return bind_one(a, backlog, false, out);
}

int listen_bind(struct listen_set *ls, const struct echod_config *cfg, bool reuseport)
{
	unsigned first = ls->n;
	int backlog = cfg->backlog >= 1 && cfg->backlog <= CONFIG_BACKLOG_MAX
		      ? (int)cfg->backlog : SOMAXCONN;

	if (cfg->n_listen > CONFIG_MAX_LISTEN || ls->n + cfg->n_listen > LISTEN_MAX) {
		log_errno(LOG_ERR, EMFILE, "listen: %u addresses, %u listeners already, at most %d",
			  cfg->n_listen, ls->n, LISTEN_MAX);
		return -EMFILE;
	}
	for (unsigned i = 0; i < cfg->n_listen; i++) {
		int r = bind_one(&cfg->listen[i], backlog, reuseport, &ls->l[ls->n]);

		if (r < 0) {
			while (ls->n > first) {
				ls->n--;
				close(ls->l[ls->n].fd);
				memset(&ls->l[ls->n], 0, sizeof(ls->l[ls->n]));
				ls->l[ls->n].fd = -1;
			}
			return r;
		}
		log_info("listening on %s (fd %d)", ls->l[ls->n].name, ls->l[ls->n].fd);
		ls->n++;
	}
	return 0;
}

void listen_close_own(struct listen_set *ls)
{
	unsigned j = 0;

	for (unsigned i = 0; i < ls->n; i++) {
		if (ls->l[i].inherited) {
			ls->l[j++] = ls->l[i];
			continue;
		}
		if (ls->l[i].fd >= 0)
			close(ls->l[i].fd);
	}
	for (unsigned i = j; i < ls->n; i++) {
		memset(&ls->l[i], 0, sizeof(ls->l[i]));
		ls->l[i].fd = -1;
	}
	ls->n = j;
}
