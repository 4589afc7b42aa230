/* refserver.c - the least work an echo server can do per request.
 *
 * The floor for echod's single-connection numbers in `make bench`: one
 * connection at a time, blocking accept, blocking recv into one buffer,
 * send it all back (looping over short sends), TCP_NODELAY, optionally
 * pinned to one CPU.  No event loop, no buffer pool, no bookkeeping: the
 * cost per request is the two syscalls and the kernel's TCP work.  It
 * serves a second connection only once the first has closed, so it is
 * meaningful at one connection only.
 *
 * --buffer N --nagle reproduce the Nagle + delayed ACK stall: a 16 KiB
 * request read in 4 KiB pieces is echoed as 4 sends, and without
 * TCP_NODELAY each send after the first waits for the client's ACK of the
 * previous one, which the client delays (see bench/README).
 *
 * --udp: the inetd-style UDP echo (FreeBSD inetd's echo_dg): a blocking
 * recvfrom into a 64 KiB buffer, sendto the same bytes back to the source,
 * one datagram at a time, the kernel's default receive buffer.  The floor
 * of per-datagram work: two syscalls and the kernel's UDP path.
 *
 * Logs "refserver ready on ADDR port N" on stderr once listening; exits 0
 * on SIGTERM or SIGINT.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client/clientlib.h"

#define BUF_MAX (16 * 1024 * 1024)
#define UDP_BUF (64 * 1024)

static volatile sig_atomic_t stop;
static size_t buf_size = 256 * 1024;
static int nagle;
static int udp;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void die(const char *what)
{
	fprintf(stderr, "refserver: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void usage(FILE *f)
{
	fprintf(f,
"Usage: refserver -p PORT [-H ADDR] [--cpu N] [--buffer N] [--nagle] [--udp]\n"
"Reference echo server: one connection at a time, blocking recv/send.\n"
"      --udp         UDP instead: blocking recvfrom/sendto, one datagram at a time\n"
"  -H, --host ADDR   address to listen on (default 127.0.0.1)\n"
"  -p, --port N      TCP port (required; 0 picks a free one, printed)\n"
"      --cpu N       pin to CPU N\n"
"      --buffer N    bytes per recv (default 262144)\n"
"      --nagle       leave Nagle's algorithm on (default: TCP_NODELAY)\n"
"  -h, --help        this help\n");
}

static void serve(int fd, char *buf)
{
	int one = 1;

	if (!nagle)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	while (!stop) {
		ssize_t n = recv(fd, buf, buf_size, 0), off = 0;

		if (n == 0)
			return;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		while (off < n) {
			ssize_t w = send(fd, buf + off, (size_t)(n - off), MSG_NOSIGNAL);

			if (w < 0) {
				if (errno == EINTR && !stop)
					continue;
				return;
			}
			off += w;
		}
	}
}

/* UDP: each datagram back to its source, one at a time, until stopped. */
static void serve_udp(int fd)
{
	static char dbuf[UDP_BUF];

	while (!stop) {
		struct sockaddr_storage from;
		socklen_t fromlen = sizeof(from);
		ssize_t n = recvfrom(fd, dbuf, sizeof(dbuf), 0, (struct sockaddr *)&from,
				     &fromlen);

		if (n < 0)
			continue;       /* EINTR (stop), or an ICMP error of an earlier send */
		(void)sendto(fd, dbuf, (size_t)n, 0, (struct sockaddr *)&from, fromlen);
	}
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "host", required_argument, NULL, 'H' },
		{ "port", required_argument, NULL, 'p' },
		{ "cpu",  required_argument, NULL, 'C' },
		{ "buffer", required_argument, NULL, 'B' },
		{ "nagle", no_argument,      NULL, 'N' },
		{ "udp",  no_argument,       NULL, 'U' },
		{ "help", no_argument,       NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *host = "127.0.0.1";
	struct addrinfo hints, *res;
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	struct sigaction sa;
	char portstr[16], addr[INET6_ADDRSTRLEN];
	int port = -1;
	int cpu = -1, one = 1, lfd, ch, rc;
	char *buf;

	cl_set_prog(argv[0], "refserver");
	while ((ch = getopt_long(argc, argv, "H:p:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'H': host = optarg; break;
		case 'p': port = (int)cl_opt_long("port", optarg, 0, 65535); break;
		case 'C': cpu = (int)cl_opt_long("cpu", optarg, 0, CPU_SETSIZE - 1); break;
		case 'B': buf_size = (size_t)cl_opt_long("buffer size", optarg, 1, BUF_MAX); break;
		case 'N': nagle = 1; break;
		case 'U': udp = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (port < 0 || optind < argc) {
		usage(stderr);
		return 2;
	}
	if (cpu >= 0 && (rc = cl_pin_cpu(cpu)) < 0) {
		errno = -rc;
		die("sched_setaffinity");
	}

	/* no SA_RESTART: a blocked accept/recv returns EINTR on SIGTERM */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = udp ? SOCK_DGRAM : SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
	snprintf(portstr, sizeof(portstr), "%d", port);
	rc = getaddrinfo(host, portstr, &hints, &res);
	if (rc != 0) {
		fprintf(stderr, "refserver: invalid host '%s': %s\n", host, gai_strerror(rc));
		return 2;
	}
	lfd = socket(res->ai_family, hints.ai_socktype | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		die("socket");
	(void)setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, res->ai_addr, res->ai_addrlen) < 0)
		die("bind");
	freeaddrinfo(res);
	if (!udp && listen(lfd, 128) < 0)
		die("listen");
	if (getsockname(lfd, (struct sockaddr *)&ss, &sslen) < 0)
		die("getsockname");
	if (ss.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, addr, sizeof(addr));
	else
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, addr, sizeof(addr));
	fprintf(stderr, "refserver ready on %s %sport %u\n", addr, udp ? "UDP " : "",
		ntohs(((struct sockaddr_in *)&ss)->sin_port));
	if (udp) {
		serve_udp(lfd);
		close(lfd);
		return 0;
	}
	buf = malloc(buf_size);
	if (!buf)
		die("malloc");

	while (!stop) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			die("accept");
		}
		serve(fd, buf);
		close(fd);
	}
	close(lfd);
	free(buf);
	return 0;
}
