/* clientlib.c - what echod's client tools share (see clientlib.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include <endian.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "clientlib.h"

const char *cl_prog = "?";

/* ------------------------------------------------------------ command line */

void cl_set_prog(const char *argv0, const char *fallback)
{
	const char *s;

	if (!argv0 || !argv0[0]) {
		cl_prog = fallback;
		return;
	}
	s = strrchr(argv0, '/');
	cl_prog = s ? s + 1 : argv0;
}

void cl_usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", cl_prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s --help'.\n", cl_prog);
	exit(2);
}

void cl_parse_options(int argc, char **argv, const char *shortopts,
		      const struct option *longopts, struct cl_target *t,
		      void (*usage)(FILE *), void (*option)(int ch, const char *arg))
{
	int ch;

	while ((ch = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
		switch (ch) {
		case 'H':
			t->host = optarg;
			break;
		case 'p':
			t->port = (int)cl_opt_long("port", optarg, 1, 65535);
			break;
		case 'c':
			t->conns = (unsigned long)cl_opt_long("connection count", optarg, 1,
							      (long)t->conns_max);
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case '?':
		case ':':
			/* getopt_long has said what is wrong */
			fprintf(stderr, "Try '%s --help'.\n", cl_prog);
			exit(2);
		default:
			option(ch, optarg);
			break;
		}
	}
	if (optind < argc)
		cl_usage_error("unexpected argument '%s'", argv[optind]);
	if (t->port < 0)
		cl_usage_error("--port is required");
}

int cl_parse_double(const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (end == s || *end != '\0')
		return -EINVAL;
	if (errno)
		return -errno;
	*out = v;
	return 0;
}

int cl_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	if (*s == '\0' || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (end == s)
		return -EINVAL;
	if (errno)
		return -errno;
	switch (*end) {
	case '\0': break;
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	default: return -EINVAL;
	}
	if (*end != '\0')
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = (uint64_t)v << shift;
	return 0;
}

long cl_opt_long(const char *name, const char *s, long lo, long hi)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end != '\0' || v < lo || v > hi)
		cl_usage_error("invalid %s '%s' (expected %ld..%ld)", name, s, lo, hi);
	return v;
}

double cl_opt_double(const char *name, const char *s, double lo, double hi)
{
	double v = 0;

	if (cl_parse_double(s, &v) < 0 || !(v >= lo) || !(v <= hi))
		cl_usage_error("invalid %s '%s' (expected %g..%g)", name, s, lo, hi);
	return v;
}

uint64_t cl_opt_size(const char *name, const char *s)
{
	uint64_t v;

	if (cl_parse_size(s, &v) < 0)
		cl_usage_error("invalid %s '%s' (expected a byte count, suffix k/m/g allowed)",
			       name, s);
	return v;
}

uint64_t cl_opt_seed(const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *end != '\0' || *s == '-')
		cl_usage_error("invalid seed '%s'", s);
	return v;
}

void cl_target_resolve(const struct cl_target *t, struct sockaddr_storage *ss, socklen_t *len)
{
	struct addrinfo hints, *res;
	char bare[256], portstr[16];
	const char *host = t->host, *h = host;
	size_t n = strlen(h);
	int rc;

	/* accept "[::1]" as well as "::1" */
	if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
		if (n - 2 >= sizeof(bare))
			cl_usage_error("invalid host '%s'", host);
		memcpy(bare, h + 1, n - 2);
		bare[n - 2] = '\0';
		h = bare;
	}
	snprintf(portstr, sizeof(portstr), "%d", t->port);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	rc = getaddrinfo(h, portstr, &hints, &res);
	if (rc != 0)
		cl_usage_error("invalid host '%s': %s (an IPv4 or IPv6 literal is expected)",
			       host, gai_strerror(rc));
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
}

/* ------------------------------------------------------------ process */

int cl_pin_cpu(int cpu)
{
	cpu_set_t set;

	if (cpu < 0 || cpu >= CPU_SETSIZE)
		return -EINVAL;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		return -errno;
	return 0;
}

int cl_raise_nofile(struct rlimit *now)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -errno;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);   /* a failure leaves the old limit */
		if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
			return -errno;
	}
	if (now)
		*now = rl;
	return 0;
}

const char *cl_errname(int e)
{
	const char *n = strerrorname_np(e);

	return n ? n : "E?";
}

int cl_socket_error(int fd)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return errno;
	return err;
}

/* ------------------------------------------------------------ payload */

uint64_t cl_seed_key(uint64_t seed)
{
	return cl_mix64(seed ^ UINT64_C(0x6a09e667f3bcc908));
}

uint64_t cl_conn_key(uint64_t base, uint64_t i)
{
	return cl_mix64(base + cl_mix64(i + CL_GOLDEN));
}

/* Word n of the stream, in the stream's byte order. */
static inline uint64_t stream_block(uint64_t key, uint64_t n)
{
	return htole64(cl_stream_word(key, n));
}

void cl_fill_stream(uint8_t *d, uint64_t key, uint64_t off, size_t len)
{
	uint64_t b = off >> 3;
	unsigned skip = (unsigned)(off & 7);
	uint64_t v;

	if (len == 0)
		return;
	if (skip) {
		size_t n = 8 - skip < len ? 8 - skip : len;

		v = stream_block(key, b++);
		memcpy(d, (uint8_t *)&v + skip, n);
		d += n;
		len -= n;
	}
	while (len >= 32) {
		uint64_t v0 = stream_block(key, b), v1 = stream_block(key, b + 1);
		uint64_t v2 = stream_block(key, b + 2), v3 = stream_block(key, b + 3);

		memcpy(d, &v0, 8);
		memcpy(d + 8, &v1, 8);
		memcpy(d + 16, &v2, 8);
		memcpy(d + 24, &v3, 8);
		b += 4;
		d += 32;
		len -= 32;
	}
	while (len >= 8) {
		v = stream_block(key, b++);
		memcpy(d, &v, 8);
		d += 8;
		len -= 8;
	}
	if (len) {
		v = stream_block(key, b);
		memcpy(d, &v, len);
	}
}
