/* fdutil.c - file descriptors and sockets for the socket activation tests
 * (see fdutil.h). */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fdutil.h"

int fdu_move_above(int fd, int min)
{
	int nfd;

	if (fd < 0)
		return fd;
	nfd = fcntl(fd, F_DUPFD_CLOEXEC, min);
	close(fd);
	return nfd;
}

void fdu_close_range(int lo, int hi)
{
	for (int fd = lo; fd < hi; fd++)
		close(fd);
}

socklen_t fdu_loopback(int family, uint16_t port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		return sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		sin6->sin6_addr = in6addr_loopback;
		return sizeof(*sin6);
	}
}

int fdu_loopback_socket(int family, int type, bool do_bind, bool do_listen)
{
	struct sockaddr_storage ss;
	socklen_t len = fdu_loopback(family, 0, &ss);
	int fd = socket(family, type, 0);

	if (fd < 0)
		return -1;
	if ((do_bind && bind(fd, (struct sockaddr *)&ss, len) < 0) ||
	    (do_listen && listen(fd, 8) < 0)) {
		close(fd);
		return -1;
	}
	return fd;
}

/* name=value, or name unset when value is NULL. */
static void set_or_unset(const char *name, const char *value)
{
	if (value)
		setenv(name, value, 1);
	else
		unsetenv(name);
}

void fdu_set_listen_env(const char *pid, const char *fds, const char *names)
{
	set_or_unset("LISTEN_PID", pid);
	set_or_unset("LISTEN_FDS", fds);
	set_or_unset("LISTEN_FDNAMES", names);
}

bool fdu_listen_env_clean(void)
{
	return !getenv("LISTEN_PID") && !getenv("LISTEN_FDS") && !getenv("LISTEN_FDNAMES");
}

bool fdu_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl >= 0 && (fl & O_NONBLOCK);
}

bool fdu_cloexec(int fd)
{
	int fl = fcntl(fd, F_GETFD);

	return fl >= 0 && (fl & FD_CLOEXEC);
}

int fdu_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;   /* the DIR's own fd */
}
