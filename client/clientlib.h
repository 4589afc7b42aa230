/* clientlib.h - what echod's client tools share: tests/echoclient (the
 * integrity client), bench/echod-bench (the benchmark client) and
 * bench/refserver (the benchmark's reference server).
 *
 * Command line: the program's name, usage errors (exit 2, "Try --help"),
 * and parsers for numbers, byte counts and the server address.  The
 * cl_opt_* functions parse one option's value and exit 2 with a usage error
 * naming it when it is invalid; the cl_parse_* ones return 0 or -errno.
 *
 * Process set-up: CPU pinning, the open file limit.
 *
 * The seeded payload generator: a key per run and connection, and a stream
 * of bytes any offset of which can be regenerated (splitmix64).
 *
 * Errors and time: errno names, CLOCK_MONOTONIC in ns, us and ms.
 */
#ifndef ECHOD_CLIENTLIB_H
#define ECHOD_CLIENTLIB_H

#include <getopt.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

/* ------------------------------------------------------------ command line */

/* The program's name in messages: set by cl_set_prog(). */
extern const char *cl_prog;

/* cl_prog = the last component of argv0, or fallback when argv0 is NULL or empty. */
void cl_set_prog(const char *argv0, const char *fallback);

/* "PROG: message" and "Try 'PROG --help'." on stderr; exit 2. */
void cl_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* What every client is pointed at: -H/--host, -p/--port, -c/--conns. */
struct cl_target {
	const char *host;        /* an IPv4 or IPv6 literal, "[::1]" too */
	int port;                /* -1 until given */
	unsigned long conns;     /* connections */
	unsigned long conns_max; /* the most -c takes */
};

/* 127.0.0.1, no port yet, 1 connection, -c up to max. */
#define CL_TARGET_DEFAULT(max) { .host = "127.0.0.1", .port = -1, .conns = 1, .conns_max = (max) }

/* The options every client takes, in its getopt_long() table (with
 * "H:p:c:h" in its short options): first a struct cl_target's, last help. */
#define CL_TARGET_OPTIONS                                  \
	{ "host", required_argument, NULL, 'H' },          \
	{ "port", required_argument, NULL, 'p' },          \
	{ "conns", required_argument, NULL, 'c' }
#define CL_HELP_OPTION                                     \
	{ "help", no_argument, NULL, 'h' }

/* Parse the command line with getopt_long(): CL_TARGET_OPTIONS and
 * CL_HELP_OPTION here (-H, -p and -c into *t, -h writes usage(stdout) and
 * exits 0), every other option by option(ch, optarg); a getopt error, an
 * argument left over or no -p is a usage error. */
void cl_parse_options(int argc, char **argv, const char *shortopts,
		      const struct option *longopts, struct cl_target *t,
		      void (*usage)(FILE *), void (*option)(int ch, const char *arg));

/* A whole-string finite or infinite double (strtod) in *out: 0, -EINVAL, -ERANGE. */
int cl_parse_double(const char *s, double *out);

/* A byte count with an optional binary suffix k/m/g (no sign) in *out:
 * 0, -EINVAL (not a count), -ERANGE (does not fit 64 bits). */
int cl_parse_size(const char *s, uint64_t *out);

/* Option value name in lo..hi, or a usage error "invalid NAME 'S' (expected LO..HI)". */
long cl_opt_long(const char *name, const char *s, long lo, long hi);

/* The same for a double in lo..hi (both included). */
double cl_opt_double(const char *name, const char *s, double lo, double hi);

/* A byte count (suffix k/m/g), or a usage error naming the option. */
uint64_t cl_opt_size(const char *name, const char *s);

/* A seed: any unsigned 64-bit number, decimal, 0x hex or 0 octal. */
uint64_t cl_opt_seed(const char *s);

/* The address of t's server into *ss and *len; a usage error naming its
 * host if that is not an IPv4 or IPv6 literal. */
void cl_target_resolve(const struct cl_target *t, struct sockaddr_storage *ss, socklen_t *len);

/* ------------------------------------------------------------ process */

/* Pin the calling process to CPU cpu: 0 or -errno. */
int cl_pin_cpu(int cpu);

/* Raise the soft RLIMIT_NOFILE to the hard one (as far as allowed); the
 * limits then in force in *now (may be NULL): 0, or -errno of getrlimit. */
int cl_raise_nofile(struct rlimit *now);

/* errno's symbolic name ("ECONNRESET"), or "E?" for an unknown one. */
const char *cl_errname(int e);

/* The pending error of a socket (SO_ERROR), as an errno value; 0 if none. */
int cl_socket_error(int fd);

/* ------------------------------------------------------------ payload */

/* splitmix64's increment. */
#define CL_GOLDEN UINT64_C(0x9e3779b97f4a7c15)

/* splitmix64's output function. */
static inline uint64_t cl_mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* Word n of the splitmix64 stream of key (its output number n + 1). */
static inline uint64_t cl_stream_word(uint64_t key, uint64_t n)
{
	return cl_mix64(key + (n + 1) * CL_GOLDEN);
}

/* The key of a run's seed: the base of its connections' keys. */
uint64_t cl_seed_key(uint64_t seed);

/* The key of connection number i under base. */
uint64_t cl_conn_key(uint64_t base, uint64_t i);

/* Bytes [off, off + len) of the stream of key into d: the bytes at offsets
 * 8n..8n+7 are word n, little-endian. */
void cl_fill_stream(uint8_t *d, uint64_t key, uint64_t off, size_t len);

/* ------------------------------------------------------------ time */

/* CLOCK_MONOTONIC in nanoseconds. */
static inline uint64_t cl_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
}

/* CLOCK_MONOTONIC in microseconds. */
static inline uint64_t cl_now_us(void)
{
	return cl_now_ns() / 1000;
}

/* CLOCK_MONOTONIC in milliseconds. */
static inline uint64_t cl_now_ms(void)
{
	return cl_now_ns() / 1000000;
}

#endif
