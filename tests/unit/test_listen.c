/* test_listen.c - listener adoption (socket activation) and binding.
 *
 * Socket activation is tested without systemd, as nbdkit and chrony do:
 * the test places sockets at fd 3, 4, ... with dup2() in its own process,
 * sets LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES and calls listen_adopt(). */
#include "autoconfig.h"    /* _GNU_SOURCE: memfd_create, pipe2 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fdutil.h"
#include "listen.h"
#include "log.h"
#include "tap.h"

#define HIGH_FD   200           /* test's own fds live above this */
#define LOW_LIMIT 200           /* fds 3 .. LOW_LIMIT-1 are for placing */

/* ---- helpers ---------------------------------------------------------- */

static uint16_t sock_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return 0;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* A blocking loopback socket (as the service manager passes them), bound
 * to an ephemeral port, listening if asked; returned above HIGH_FD. */
static int loop_socket(int family, int type, bool do_bind, bool do_listen)
{
	return fdu_move_above(fdu_loopback_socket(family, type, do_bind, do_listen), HIGH_FD);
}

/* Move fd to target (no FD_CLOEXEC, as after exec from systemd). */
static void place(int fd, int target)
{
	if (fd < 0 || dup2(fd, target) != target)
		tap_diag("place fd %d at %d: %s", fd, target, strerror(errno));
	if (fd >= 0 && fd != target)
		close(fd);
}

static void set_env(const char *pid, const char *fds, const char *names)
{
	char buf[32];

	if (pid && strcmp(pid, "self") == 0) {
		snprintf(buf, sizeof(buf), "%d", (int)getpid());
		pid = buf;
	}
	fdu_set_listen_env(pid, fds, names);
}

static bool fd_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

static int sockopt(int fd, int level, int opt)
{
	int v = -1;
	socklen_t len = sizeof(v);

	if (getsockopt(fd, level, opt, &v, &len) < 0)
		return -1;
	return v;
}

/* stderr capture, to check the log messages */
static int cap_fd = -1, saved_stderr = -1;
static char cap_buf[8192];

static void capture_start(void)
{
	cap_fd = fdu_move_above(memfd_create("stderr", MFD_CLOEXEC), HIGH_FD);
	saved_stderr = fdu_move_above(dup(STDERR_FILENO), HIGH_FD);
	if (cap_fd < 0 || saved_stderr < 0 || dup2(cap_fd, STDERR_FILENO) < 0)
		tap_diag("capture_start: %s", strerror(errno));
}

static const char *capture_end(void)
{
	ssize_t n;

	dup2(saved_stderr, STDERR_FILENO);
	n = pread(cap_fd, cap_buf, sizeof(cap_buf) - 1, 0);
	cap_buf[n > 0 ? n : 0] = '\0';
	close(cap_fd);
	close(saved_stderr);
	cap_fd = saved_stderr = -1;
	/* show what was logged */
	fputs(cap_buf, stderr);
	return cap_buf;
}

static bool set_unchanged(const struct listen_set *ls)
{
	struct listen_set empty;

	listen_set_init(&empty);
	return memcmp(ls, &empty, sizeof(empty)) == 0;
}

/* A port on which nothing listens, v4 or v6, on any address: bound first
 * as a dual-stack wildcard socket. */
static uint16_t free_port(void)
{
	struct sockaddr_in6 sin6;
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int zero = 0;
	uint16_t port = 0;

	if (fd < 0)
		return 0;
	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	sin6.sin6_addr = in6addr_any;
	if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) == 0 &&
	    bind(fd, (struct sockaddr *)&sin6, sizeof(sin6)) == 0)
		port = sock_port(fd);
	close(fd);
	return port;
}

static void cfg_add(struct echod_config *cfg, int family, const char *text,
		    uint16_t port)
{
	struct config_addr *a = &cfg->listen[cfg->n_listen++];

	memset(a, 0, sizeof(*a));
	snprintf(a->text, sizeof(a->text), "%s", text);
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&a->sa;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		inet_pton(AF_INET, text, &sin->sin_addr);
		a->salen = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->sa;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		inet_pton(AF_INET6, text, &sin6->sin6_addr);
		a->salen = sizeof(*sin6);
	}
}

static void cfg_init(struct echod_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->backlog = 16;
}

static bool connects(int family, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len = fdu_loopback(family, port, &ss);
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	if (fd < 0)
		return false;
	ok = connect(fd, (struct sockaddr *)&ss, len) == 0;
	close(fd);
	return ok;
}

/* ---- listen_adopt() --------------------------------------------------- */

/* Two blocking listeners at fd 3 (v4) and 4 (v6); their ports. */
static void place_two(uint16_t *p4, uint16_t *p6)
{
	int a = loop_socket(AF_INET, SOCK_STREAM, true, true);
	int b = loop_socket(AF_INET6, SOCK_STREAM, true, true);

	*p4 = sock_port(a);
	*p6 = sock_port(b);
	place(a, 3);
	place(b, 4);
}

static void test_not_activated(void)
{
	struct listen_set ls;
	int r;

	set_env(NULL, NULL, NULL);
	listen_set_init(&ls);
	r = listen_adopt(&ls);
	tap_ok(r == 0, "no LISTEN_* variables: 0 (got %d)", r);
	tap_ok(!ls.activated && set_unchanged(&ls), "no variables: nothing adopted");

	/* LISTEN_FDS without LISTEN_PID is not activation either */
	place(loop_socket(AF_INET, SOCK_STREAM, true, true), 3);
	set_env(NULL, "1", NULL);
	listen_set_init(&ls);
	r = listen_adopt(&ls);
	tap_ok(r == 0 && set_unchanged(&ls),
	       "LISTEN_FDS without LISTEN_PID: 0, nothing adopted (got %d)", r);
	tap_ok(fdu_listen_env_clean(), "LISTEN_FDS without LISTEN_PID: variables unset");
	fdu_close_range(3, LOW_LIMIT);
}

static void test_other_pid(void)
{
	struct listen_set ls;
	char pid[32];
	int r;

	place(loop_socket(AF_INET, SOCK_STREAM, true, true), 3);
	snprintf(pid, sizeof(pid), "%d", (int)getppid());
	set_env(pid, "1", NULL);
	listen_set_init(&ls);
	r = listen_adopt(&ls);
	tap_ok(r == 0, "LISTEN_PID of another process: 0 (got %d)", r);
	tap_ok(set_unchanged(&ls), "LISTEN_PID of another process: nothing adopted");
	tap_ok(fdu_listen_env_clean(), "LISTEN_PID of another process: variables unset");
	tap_ok(fd_open(3) && !fdu_nonblock(3), "LISTEN_PID of another process: fd 3 open and untouched");

	/* LISTEN_FDS is not ours to judge when LISTEN_PID is someone else's */
	set_env(pid, "abc", NULL);
	listen_set_init(&ls);
	r = listen_adopt(&ls);
	tap_ok(r == 0 && set_unchanged(&ls) && fdu_listen_env_clean(),
	       "LISTEN_PID of another process, LISTEN_FDS=abc: 0 (got %d)", r);

	/* nor LISTEN_FDNAMES, which libsystemd parses first (a trailing
	 * backslash is -EINVAL there), with LISTEN_PID someone else's or unset */
	set_env(pid, NULL, "echo\\");
	listen_set_init(&ls);
	r = listen_adopt(&ls);
	tap_ok(r == 0 && set_unchanged(&ls) && fdu_listen_env_clean(),
	       "LISTEN_PID of another process, LISTEN_FDNAMES malformed: 0 (got %d)", r);
	set_env(NULL, "1", "echo\\");
	listen_set_init(&ls);
	r = listen_adopt(&ls);
	tap_ok(r == 0 && set_unchanged(&ls) && fdu_listen_env_clean() && fd_open(3),
	       "LISTEN_PID unset, LISTEN_FDNAMES malformed: 0 (got %d)", r);
	fdu_close_range(3, LOW_LIMIT);
}

struct env_case {
	const char *val;
	int expect;             /* listen_adopt()'s return */
};

static void test_pid_garbage(void)
{
	char self[32], buf[40];
	/* libsystemd 252 rejects these itself (parse_pid) */
	static const struct env_case lib[] = {
		{ "abc", -EINVAL }, { "", -EINVAL }, { "12a", -EINVAL },
		{ "0", -ERANGE }, { "-1", -ERANGE }, { "1.5", -EINVAL },
		{ "99999999999999999999", -ERANGE },
	};
	/* libsystemd accepts these as our pid (or another one); echod does
	 * not: systemd writes plain decimal */
	static const char *strict[] = { " %s", "+%s", "0%s", "%s ", "0x%s" };

	snprintf(self, sizeof(self), "%d", (int)getpid());
	place(loop_socket(AF_INET, SOCK_STREAM, true, true), 3);
	for (size_t i = 0; i < sizeof(lib) / sizeof(lib[0]); i++) {
		struct listen_set ls;
		int r;

		set_env(lib[i].val, "1", NULL);
		listen_set_init(&ls);
		r = listen_adopt(&ls);
		tap_ok(r == lib[i].expect && set_unchanged(&ls) && fdu_listen_env_clean(),
		       "LISTEN_PID=\"%s\": %d, nothing adopted, unset (got %d)",
		       lib[i].val, lib[i].expect, r);
	}
	for (size_t i = 0; i < sizeof(strict) / sizeof(strict[0]); i++) {
		struct listen_set ls;
		int r;

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
		snprintf(buf, sizeof(buf), strict[i], self);
#pragma GCC diagnostic pop
		set_env(buf, "1", NULL);
		listen_set_init(&ls);
		r = listen_adopt(&ls);
		tap_ok(r == -EINVAL && set_unchanged(&ls) && fdu_listen_env_clean(),
		       "LISTEN_PID=\"%s\" (not plain decimal): -EINVAL, nothing adopted (got %d)",
		       buf, r);
	}
	fdu_close_range(3, LOW_LIMIT);
}

static void test_fds_garbage(void)
{
	/* libsystemd 252 rejects "0" and most garbage itself (safe_atoi);
	 * " 1", "+1", "0x1" and "01" it takes for 1, echod does not */
	static const struct env_case bad[] = {
		{ "0", -EINVAL }, { "abc", -EINVAL }, { "", -EINVAL },
		{ "1a", -EINVAL }, { "-1", -EINVAL }, { "1 ", -EINVAL },
		{ "99999999999999999999", -ERANGE },
		{ " 1", -EINVAL }, { "+1", -EINVAL }, { "0x1", -EINVAL },
		{ "01", -EINVAL },
	};

	place(loop_socket(AF_INET, SOCK_STREAM, true, true), 3);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct listen_set ls;
		int r;

		set_env("self", bad[i].val, NULL);
		listen_set_init(&ls);
		r = listen_adopt(&ls);
		tap_ok(r == bad[i].expect && set_unchanged(&ls) && fdu_listen_env_clean(),
		       "LISTEN_FDS=\"%s\": %d, nothing adopted, unset (got %d)",
		       bad[i].val, bad[i].expect, r);
	}
	{
		struct listen_set ls;
		int r;

		/* fd 3 is open, fds 4.. are not: libsystemd checks each */
		set_env("self", "99", NULL);
		listen_set_init(&ls);
		r = listen_adopt(&ls);
		tap_ok(r == -EBADF && set_unchanged(&ls) && fdu_listen_env_clean(),
		       "LISTEN_FDS=99 with one fd open: -EBADF, nothing adopted (got %d)", r);
	}
	fdu_close_range(3, LOW_LIMIT);
}

static void test_two(void)
{
	struct listen_set ls;
	char n4[64], n6[64];
	uint16_t p4, p6;
	int r;

	place_two(&p4, &p6);
	snprintf(n4, sizeof(n4), "127.0.0.1:%u", p4);
	snprintf(n6, sizeof(n6), "[::1]:%u", p6);
	tap_ok(!fdu_nonblock(3) && !fdu_nonblock(4) && !fdu_cloexec(3),
	       "placed fds start blocking, without FD_CLOEXEC");
	set_env("self", "2", NULL);
	listen_set_init(&ls);
	r = listen_adopt(&ls);
	tap_ok(r == 2 && ls.n == 2, "LISTEN_FDS=2: 2 adopted (got %d, n %u)", r, ls.n);
	tap_ok(ls.activated && ls.metrics_fd == -1, "activated, no metrics fd");
	tap_ok(ls.l[0].fd == 3 && ls.l[1].fd == 4, "fds 3 and 4 in order (%d, %d)",
	       ls.l[0].fd, ls.l[1].fd);
	tap_ok(ls.l[0].inherited && ls.l[1].inherited, "both inherited");
	tap_ok(ls.l[0].family == AF_INET && ls.l[1].family == AF_INET6,
	       "families AF_INET, AF_INET6 (%d, %d)", ls.l[0].family, ls.l[1].family);
	tap_ok(strcmp(ls.l[0].name, n4) == 0, "name %s (got %s)", n4, ls.l[0].name);
	tap_ok(strcmp(ls.l[1].name, n6) == 0, "name %s (got %s)", n6, ls.l[1].name);
	tap_ok(fdu_nonblock(3) && fdu_nonblock(4), "O_NONBLOCK set on adopted fds");
	tap_ok(fdu_cloexec(3) && fdu_cloexec(4), "FD_CLOEXEC set on adopted fds");
	tap_ok(sockopt(3, SOL_SOCKET, SO_ACCEPTCONN) == 1 &&
	       sockopt(4, SOL_SOCKET, SO_ACCEPTCONN) == 1 &&
	       connects(AF_INET, p4) && connects(AF_INET6, p6),
	       "adopted fds still listening");
	tap_ok(fdu_listen_env_clean(), "LISTEN_FDS=2: variables unset");

	/* a second call sees no variables: nothing more adopted */
	r = listen_adopt(&ls);
	tap_ok(r == 0 && ls.n == 2, "second listen_adopt(): 0, still 2 (got %d)", r);

	/* listen_close_own() with inherited fds and one of our own */
	{
		static struct echod_config cfg;   /* ~570 KB each: not on the stack */
		int own;

		cfg_init(&cfg);
		cfg_add(&cfg, AF_INET, "127.0.0.1", 0);
		r = listen_bind(&ls, &cfg, false);
		own = ls.n == 3 ? ls.l[2].fd : -1;
		tap_ok(r == 0 && own >= 0 && !ls.l[2].inherited,
		       "listen_bind() appends after adopted fds (r %d, n %u)", r, ls.n);
		listen_close_own(&ls);
		tap_ok(fd_open(3) && fd_open(4),
		       "listen_close_own(): inherited fds 3 and 4 still open");
		tap_ok(sockopt(3, SOL_SOCKET, SO_ACCEPTCONN) == 1 &&
		       sockopt(4, SOL_SOCKET, SO_ACCEPTCONN) == 1,
		       "listen_close_own(): inherited fds still listening (no shutdown)");
		tap_ok(own >= 0 && !fd_open(own), "listen_close_own(): own fd %d closed", own);
		tap_ok(ls.n == 2 && ls.l[0].fd == 3 && ls.l[1].fd == 4,
		       "listen_close_own(): the two inherited remain in the set (n %u)", ls.n);
	}
	fdu_close_range(3, LOW_LIMIT);
}

static void test_names(void)
{
	struct listen_set ls;
	uint16_t p4, p6;
	int r;

	place_two(&p4, &p6);
	set_env("self", "2", "echo:metrics");
	listen_set_init(&ls);
	r = listen_adopt(&ls);
	tap_ok(r == 1 && ls.n == 1 && ls.l[0].fd == 3,
	       "FDNAMES echo:metrics: one echo listener, fd 3 (got %d, n %u)", r, ls.n);
	tap_ok(ls.metrics_fd == 4, "FDNAMES echo:metrics: metrics_fd 4 (got %d)", ls.metrics_fd);
	tap_ok(ls.activated && fdu_listen_env_clean() && fdu_nonblock(4) && fdu_cloexec(4),
	       "FDNAMES echo:metrics: activated, unset, metrics fd non-blocking + cloexec");
	listen_close_own(&ls);
	tap_ok(fd_open(3) && fd_open(4) && ls.metrics_fd == 4,
	       "listen_close_own() leaves the metrics fd alone");
	fdu_close_range(3, LOW_LIMIT);

	place_two(&p4, &p6);
	set_env("self", "2", "metrics:echo");
	listen_set_init(&ls);
	r = listen_adopt(&ls);
	tap_ok(r == 1 && ls.n == 1 && ls.l[0].fd == 4 && ls.metrics_fd == 3,
	       "FDNAMES metrics:echo: metrics fd 3, echo fd 4 (got %d, metrics %d)",
	       r, ls.metrics_fd);
	fdu_close_range(3, LOW_LIMIT);

	place_two(&p4, &p6);
	set_env("self", "2", "metrics:metrics");
	listen_set_init(&ls);
	capture_start();
	r = listen_adopt(&ls);
	capture_end();
	tap_ok(r == -EINVAL && set_unchanged(&ls),
	       "two metrics fds: -EINVAL, nothing adopted (got %d)", r);
	tap_ok(strstr(cap_buf, "fd 4 (metrics)") != NULL,
	       "two metrics fds: error names fd 4 (metrics)");
	tap_ok(fdu_listen_env_clean() && !fdu_nonblock(3),
	       "two metrics fds: variables unset, fd 3 not modified");
	fdu_close_range(3, LOW_LIMIT);

	place_two(&p4, &p6);
	set_env("self", "2", "echo");
	listen_set_init(&ls);
	r = listen_adopt(&ls);
	tap_ok(r == -EINVAL && set_unchanged(&ls) && fdu_listen_env_clean(),
	       "one name for two fds: -EINVAL, nothing adopted (got %d)", r);
	fdu_close_range(3, LOW_LIMIT);

	/* more than LISTEN_MAX echo listeners; the metrics fd does not count */
	{
		int a = loop_socket(AF_INET, SOCK_STREAM, true, true);
		char fds[16];
		char *names = malloc(16 * (LISTEN_MAX + 1));
		size_t off = 0;

		for (int i = 0; i < LISTEN_MAX + 1; i++)
			if (dup2(a, 3 + i) < 0)
				tap_diag("dup2: %s", strerror(errno));
		/* metrics first, so it is seen before the echo count fills up */
		off += (size_t)sprintf(names + off, "metrics");
		for (int i = 0; i < LISTEN_MAX; i++)
			off += (size_t)sprintf(names + off, ":e%d", i);
		snprintf(fds, sizeof(fds), "%d", LISTEN_MAX + 1);
		set_env("self", fds, names);
		listen_set_init(&ls);
		r = listen_adopt(&ls);
		tap_ok(r == LISTEN_MAX && ls.n == LISTEN_MAX && ls.metrics_fd == 3 &&
		       ls.l[0].fd == 4 && ls.l[LISTEN_MAX - 1].fd == 3 + LISTEN_MAX,
		       "%d echo + 1 metrics fds: %d adopted (got %d)", LISTEN_MAX,
		       LISTEN_MAX, r);

		set_env("self", fds, NULL);
		listen_set_init(&ls);
		capture_start();
		r = listen_adopt(&ls);
		capture_end();
		tap_ok(r == -EMFILE && set_unchanged(&ls) && fdu_listen_env_clean(),
		       "%d echo fds: -EMFILE, nothing adopted (got %d)", LISTEN_MAX + 1, r);
		tap_ok(strstr(cap_buf, "more than") != NULL, "-EMFILE is logged");
		free(names);
		close(a);
		fdu_close_range(3, LOW_LIMIT);
	}
}

/* A bound UDP socket beside a TCP listener, and a metrics fd: the datagram
 * socket goes to ls.udp, whatever its name, and is made non-blocking. */
static void test_datagram(void)
{
	struct listen_set ls;
	int t = loop_socket(AF_INET, SOCK_STREAM, true, true);
	int u = loop_socket(AF_INET6, SOCK_DGRAM, true, false);
	uint16_t up = sock_port(u);
	char want[64];
	int r;

	place(t, 3);
	place(u, 4);
	set_env("self", "2", "echo:echo-udp");
	listen_set_init(&ls);
	capture_start();
	r = listen_adopt(&ls);
	capture_end();
	snprintf(want, sizeof(want), "UDP echo on [::1]:%u (fd 4", up);
	tap_ok(r == 1 && ls.n == 1 && ls.l[0].fd == 3 && ls.n_udp == 1 && ls.udp[0].fd == 4 &&
	       ls.udp[0].inherited && ls.udp[0].family == AF_INET6 && ls.activated,
	       "a TCP listener and a bound UDP socket: 1 listener, 1 UDP socket (got %d)", r);
	tap_ok(strstr(cap_buf, want) != NULL && fdu_nonblock(4) && fdu_listen_env_clean(),
	       "the UDP socket: logged \"%s...\", non-blocking, variables unset", want);
	fdu_close_range(3, LOW_LIMIT);

	/* a datagram socket alone (echod-udp.socket without echod.socket) */
	place(loop_socket(AF_INET, SOCK_DGRAM, true, false), 3);
	set_env("self", "1", "anything");
	listen_set_init(&ls);
	r = listen_adopt(&ls);
	tap_ok(r == 0 && ls.n == 0 && ls.n_udp == 1 && ls.udp[0].fd == 3 && ls.activated,
	       "a UDP socket alone: no listener, 1 UDP socket, activated (got %d)", r);
	fdu_close_range(3, LOW_LIMIT);
}

static void test_bad_fd(const char *what, int fd, int expect)
{
	struct listen_set ls;
	int a = loop_socket(AF_INET, SOCK_STREAM, true, true);
	char want[64];
	int r;

	place(a, 3);
	close(4);
	if (fd >= 0)
		place(fd, 4);
	set_env("self", "2", "echo:bad");
	listen_set_init(&ls);
	capture_start();
	r = listen_adopt(&ls);
	capture_end();
	tap_ok(r == expect, "fd 4 is %s: %d (got %d)", what, expect, r);
	tap_ok(set_unchanged(&ls) && fdu_listen_env_clean(),
	       "fd 4 is %s: nothing adopted, variables unset", what);
	tap_ok(fd_open(3) && !fdu_nonblock(3), "fd 4 is %s: fd 3 left as it was", what);
	if (expect == -EINVAL) {
		snprintf(want, sizeof(want), "fd 4 (bad): not a listening TCP socket");
		tap_ok(strstr(cap_buf, want) != NULL, "fd 4 is %s: logged \"%s\"", what, want);
	} else {
		tap_ok(strstr(cap_buf, "sd_listen_fds_with_names") != NULL &&
		       strstr(cap_buf, strerror(-expect)) != NULL,
		       "fd 4 is %s: logged the libsystemd error", what);
	}
	fdu_close_range(3, LOW_LIMIT);
}

static void test_bad_fds(void)
{
	struct sockaddr_un su;
	int p[2];
	int u;

	/* a bound UDP socket is a UDP echo socket (test_datagram); an unbound
	 * one is nothing echod could serve */
	test_bad_fd("an unbound UDP socket", loop_socket(AF_INET, SOCK_DGRAM, false, false),
		    -EINVAL);
	test_bad_fd("a bound, not listening TCP socket",
		    loop_socket(AF_INET6, SOCK_STREAM, true, false), -EINVAL);
	test_bad_fd("an unbound TCP socket",
		    loop_socket(AF_INET, SOCK_STREAM, false, false), -EINVAL);
	if (pipe2(p, O_CLOEXEC) == 0) {
		p[0] = fdu_move_above(p[0], HIGH_FD);
		p[1] = fdu_move_above(p[1], HIGH_FD);
		test_bad_fd("a pipe", p[0], -EINVAL);
		close(p[1]);
	} else {
		tap_ok(0, "pipe2: %s", strerror(errno));
	}
	/* a listening unix stream socket: a listener, but not inet */
	u = socket(AF_UNIX, SOCK_STREAM, 0);
	memset(&su, 0, sizeof(su));
	su.sun_family = AF_UNIX;    /* bind with only the family: autobind */
	if (u >= 0 && bind(u, (struct sockaddr *)&su, sizeof(sa_family_t)) == 0 &&
	    listen(u, 1) == 0) {
		test_bad_fd("a listening AF_UNIX socket", fdu_move_above(u, HIGH_FD), -EINVAL);
	} else {
		tap_ok(0, "unix socket: %s", strerror(errno));
		close(u);
	}
	test_bad_fd("closed", -1, -EBADF);
}

/* ---- listen_bind() ---------------------------------------------------- */

static void test_bind(void)
{
	struct listen_set ls, ls2;
	static struct echod_config cfg, cfg2;   /* ~570 KB each: not on the stack */
	char n4[64], n6[64], want[96];
	uint16_t p = free_port(), q = free_port();
	int before, after, r;

	tap_ok(p && q && p != q, "found free ports %u and %u", p, q);

	/* both loopbacks on one port */
	cfg_init(&cfg);
	cfg_add(&cfg, AF_INET, "127.0.0.1", p);
	cfg_add(&cfg, AF_INET6, "::1", p);
	listen_set_init(&ls);
	r = listen_bind(&ls, &cfg, false);
	tap_ok(r == 0 && ls.n == 2, "listen_bind 127.0.0.1 and ::1 on port %u: 0 (got %d, n %u)",
	       p, r, ls.n);
	snprintf(n4, sizeof(n4), "127.0.0.1:%u", p);
	snprintf(n6, sizeof(n6), "[::1]:%u", p);
	tap_ok(strcmp(ls.l[0].name, n4) == 0 && strcmp(ls.l[1].name, n6) == 0,
	       "names %s, %s (got %s, %s)", n4, n6, ls.l[0].name, ls.l[1].name);
	tap_ok(ls.l[0].family == AF_INET && ls.l[1].family == AF_INET6 &&
	       !ls.l[0].inherited && !ls.l[1].inherited && !ls.activated,
	       "families right, not inherited, not activated");
	tap_ok(sockopt(ls.l[0].fd, SOL_SOCKET, SO_ACCEPTCONN) == 1 &&
	       sockopt(ls.l[1].fd, SOL_SOCKET, SO_ACCEPTCONN) == 1,
	       "both sockets listening");
	tap_ok(connects(AF_INET, p), "connect to %s works", n4);
	tap_ok(connects(AF_INET6, p), "connect to %s works", n6);
	tap_ok(sockopt(ls.l[1].fd, IPPROTO_IPV6, IPV6_V6ONLY) == 1, "IPV6_V6ONLY set on the v6 socket");
	tap_ok(sockopt(ls.l[0].fd, SOL_SOCKET, SO_REUSEADDR) == 1 &&
	       sockopt(ls.l[1].fd, SOL_SOCKET, SO_REUSEADDR) == 1, "SO_REUSEADDR set");
	tap_ok(sockopt(ls.l[0].fd, SOL_SOCKET, SO_REUSEPORT) == 0, "SO_REUSEPORT not set");
	tap_ok(fdu_nonblock(ls.l[0].fd) && fdu_nonblock(ls.l[1].fd) &&
	       fdu_cloexec(ls.l[0].fd) && fdu_cloexec(ls.l[1].fd),
	       "bound sockets are non-blocking and close-on-exec");

	/* conflict on the second address: the first one is closed again */
	cfg_init(&cfg2);
	cfg_add(&cfg2, AF_INET, "127.0.0.1", q);
	cfg_add(&cfg2, AF_INET6, "::1", p);
	listen_set_init(&ls2);
	before = fdu_count();
	capture_start();
	r = listen_bind(&ls2, &cfg2, false);
	capture_end();
	after = fdu_count();
	tap_ok(r == -EADDRINUSE, "bind conflict: -EADDRINUSE (got %d)", r);
	tap_ok(set_unchanged(&ls2), "bind conflict: set left empty (n %u)", ls2.n);
	tap_ok(before > 0 && before == after, "bind conflict: no fd leaked (%d before, %d after)",
	       before, after);
	snprintf(want, sizeof(want), "bind [::1]:%u: %s", p, strerror(EADDRINUSE));
	tap_ok(strstr(cap_buf, want) != NULL, "logged \"%s\"", want);
	tap_ok(connects(AF_INET, p) && !connects(AF_INET, q),
	       "bind conflict: first set intact, %u released", q);

	/* 0.0.0.0 and :: on one port need IPV6_V6ONLY */
	listen_close_own(&ls);
	tap_ok(ls.n == 0, "listen_close_own(): all own listeners gone (n %u)", ls.n);
	cfg_init(&cfg);
	cfg_add(&cfg, AF_INET, "0.0.0.0", p);
	cfg_add(&cfg, AF_INET6, "::", p);
	r = listen_bind(&ls, &cfg, false);
	tap_ok(r == 0 && ls.n == 2, "0.0.0.0 and :: on one port: 0 (got %d)", r);
	listen_close_own(&ls);

	/* SO_REUSEPORT */
	cfg_init(&cfg);
	cfg_add(&cfg, AF_INET, "127.0.0.1", q);
	r = listen_bind(&ls, &cfg, true);
	tap_ok(r == 0, "reuseport: first bind 0 (got %d)", r);
	r = listen_bind(&ls, &cfg, true);
	tap_ok(r == 0 && ls.n == 2, "reuseport: second bind of the same address 0 (got %d, n %u)",
	       r, ls.n);
	tap_ok(ls.n == 2 && sockopt(ls.l[0].fd, SOL_SOCKET, SO_REUSEPORT) == 1 &&
	       sockopt(ls.l[1].fd, SOL_SOCKET, SO_REUSEPORT) == 1, "SO_REUSEPORT set on both");
	r = listen_bind(&ls, &cfg, false);
	tap_ok(r == -EADDRINUSE && ls.n == 2,
	       "without reuseport the same address: -EADDRINUSE (got %d)", r);
	listen_close_own(&ls);

	/* too many */
	listen_set_init(&ls2);
	ls2.n = LISTEN_MAX - 1;
	cfg_init(&cfg);
	cfg_add(&cfg, AF_INET, "127.0.0.1", q);
	cfg_add(&cfg, AF_INET6, "::1", q);
	before = fdu_count();
	r = listen_bind(&ls2, &cfg, false);
	tap_ok(r == -EMFILE && ls2.n == LISTEN_MAX - 1 && fdu_count() == before,
	       "more than LISTEN_MAX listeners: -EMFILE, nothing bound (got %d)", r);

	/* unknown family */
	cfg_init(&cfg);
	cfg_add(&cfg, AF_INET, "127.0.0.1", q);
	cfg.listen[0].sa.ss_family = AF_UNIX;
	listen_set_init(&ls2);
	r = listen_bind(&ls2, &cfg, false);
	tap_ok(r == -EAFNOSUPPORT && set_unchanged(&ls2),
	       "AF_UNIX address: -EAFNOSUPPORT (got %d)", r);
}

static void test_sockname(void)
{
	char buf[64];
	int p[2];

	if (pipe2(p, O_CLOEXEC) < 0) {
		tap_ok(0, "pipe2: %s", strerror(errno));
		return;
	}
	listen_sockname(p[0], buf, sizeof(buf));
	tap_ok(buf[0] != '\0' && strlen(buf) < sizeof(buf), "listen_sockname() of a pipe: \"%s\"", buf);
	close(p[0]);
	close(p[1]);

	p[0] = loop_socket(AF_INET6, SOCK_STREAM, true, false);
	memset(buf, 'x', sizeof(buf));
	listen_sockname(p[0], buf, 5);
	tap_ok(strcmp(buf, "[::1") == 0, "listen_sockname() truncates to the buffer (\"%s\")", buf);
	close(p[0]);
}

int main(void)
{
	int fd;

	/* fds 3.. are where the tests put sockets: nothing of ours lives there */
	fdu_close_range(3, LOW_LIMIT);
	setvbuf(stdout, NULL, _IOLBF, 0);

	fd = loop_socket(AF_INET6, SOCK_STREAM, true, false);
	if (fd < 0) {
		printf("1..0 # SKIP no IPv6 loopback\n");
		return 0;
	}
	close(fd);

	test_not_activated();
	test_other_pid();
	test_pid_garbage();
	test_fds_garbage();
	test_two();
	test_names();
	test_bad_fds();
	test_datagram();
	test_bind();
	test_sockname();
	return tap_done();
}
