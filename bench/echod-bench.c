/* echod-bench.c - the benchmark client (echod-bench(1)): request/response load, every byte
 * checked, latency histogram, server CPU per request.
 *
 * Grown from tests/echoclient.c (seeded payloads, every byte checked, one
 * thread on one edge-triggered epoll set; the helpers both use are in
 * client/clientlib.c), but built for measurement:
 *
 *  - A request is L bytes; a connection sends one, waits until all L bytes
 *    have come back, and only then sends the next (one request in flight
 *    per connection, so the echo stream splits into responses exactly).
 *  - Payload: a 1 MiB table of splitmix64 noise made once at start-up.
 *    Request number s of connection i is the L bytes of the table at an
 *    offset hashed from (i's key, s): it is sent straight from the table and
 *    every byte received is memcmp'ed against the table, so checking costs
 *    no generation and no copy.  A byte from another connection, from an
 *    earlier request, shifted or reordered fails the check; the first wrong
 *    byte ends the run (exit 1) with its connection, request and offset.
 *  - Closed loop (default): every connection keeps one request in flight;
 *    latency = last byte received - first send.  req_s is saturation
 *    throughput for that connection count.
 *  - Open loop (--rate R): request k of connection i is due at
 *    t0 + (i + k*c)/R, so every connection runs at R/c and the total stream
 *    of requests is evenly spaced at 1/R.  Latency is measured from the due
 *    (intended) time: when a connection is still busy at its next due time,
 *    that request is sent as soon as the previous one completes and the
 *    wait is part of its latency (no coordinated omission).  Idle
 *    connections wait in a min-heap keyed by their next due time; the loop
 *    sleeps in epoll_pwait2 until the earliest (timer slack 1 ns; it polls
 *    when that is under 20 us away).  The client's own lateness (send time
 *    - due time for a connection that was idle) is reported as
 *    client_lag_p99_us.  Requests due in the window but still unanswered at
 *    the end of the drain are recorded with their latency so far and
 *    counted as "unfinished".
 *  - --reconnect (TCP, closed loop): every request on a connection of its
 *    own: connect, send, receive the L bytes, close (the client closes
 *    first, so TIME_WAIT stays on the client, where tcp_tw_reuse recycles
 *    it on loopback); latency runs from the connect.  req_s is then the
 *    server's connect/echo/close rate, the accept path's cost.  With
 *    --sources N the connections come from 127.0.0.1 .. 127.0.0.1+N-1 in
 *    turn (IP_BIND_ADDRESS_NO_PORT): one source address runs out of
 *    ephemeral ports at this rate (28k ports, each held by TIME_WAIT), and
 *    connect() then spends the client's CPU searching for a reusable one.
 *  - Histogram: log-linear buckets in ns (128 per power of two: relative
 *    error < 0.8%, 1 ns .. 2^40 ns), exact max.
 *  - Server: the CPU time of --server-pid (all threads, in ns: its process
 *    CPU-time clock, else /proc/PID/stat's clock ticks) at the start and
 *    end of the measured window, VmRSS from
 *    /proc/PID/status at the end.  The client's own CPU (getrusage) over the
 *    same window is reported too: client_cpu_util near 1.0 means the client,
 *    not the server, may be the bottleneck.
 *
 * One thread, non-blocking sockets, TCP_NODELAY, edge-triggered epoll with
 * 4096-event batches; a short recv (or send) means the socket is drained
 * (full), so a request costs one send and one recv in the common case.
 *
 * UDP (--udp): -c F flows, each one connected UDP socket with W datagrams
 * in flight (--window W).  Datagram k of a flow is an 8-byte sequence
 * number (little-endian) and L - 8 bytes of the table at an offset hashed
 * from (flow key, k), sent from the table with a two-piece iovec.  An echo
 * of the wrong length, with a wrong byte, of a datagram never sent, or that
 * comes after a later one of its flow (duplicated or reordered) stops the
 * run (exit 1).  A flow's echoes come back in order, so a datagram whose
 * successor was answered first is lost; one unanswered --loss-timeout after
 * it was sent is lost too (an echo of it that comes later is counted as
 * late and stays lost).  Lost datagrams leave the window (not an error):
 * lost / sent over the window is loss_pct.  A flow refills its window with
 * one sendmmsg; with --gso N the datagrams go N per message with
 * UDP_SEGMENT = L (one kernel pass per N), and the flow's socket has UDP_GRO
 * on so coalesced echoes come back as one receive, split by the UDP_GRO
 * segment size.  Receives are recvmmsg batches.  Open loop: datagram k of
 * flow i is due at t0 + (i + k*F)/R as above (with --gso N, in bursts of N
 * due at once, spread evenly, so a burst goes out in one send); a full
 * window delays a datagram (the wait is in its latency); datagrams due by
 * now go out together.
 *
 * Output: one line of key=value pairs (or one JSON object with --json) on
 * stdout; exit 0.  Exit 1: the server echoed wrongly (a wrong or extra byte,
 * a wrong, unsent, duplicated or reordered datagram), named; exit 2: usage;
 * exit 3: no measurement (the host not resolved, a connect refused or timed
 * out, every connection lost, no request answered in the window, a local
 * error).  The server: -H a literal or a name (getaddrinfo; over TCP the
 * first of its addresses that accepts a connection), -p (default 7).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
#include <arpa/inet.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "client/clientlib.h"

#define TABLE_BITS     20                    /* 1 MiB of payload noise */
#define TABLE_SIZE     (1u << TABLE_BITS)
#define MAX_PAYLOAD    (16u * 1024 * 1024)
#define RBUF_SIZE      (256 * 1024)
#define MAX_EVENTS     4096
#define UDP_HDR        8                     /* the sequence number */
#define UDP_MAX_V4     65507                 /* the largest UDP payloads */
#define UDP_MAX_V6     65527
#define UDP_MAX_BATCH  64                    /* datagrams per send call; GSO segments */
#define UDP_RX_BATCH   16                    /* receives per recvmmsg */
#define UDP_RX_BUF     65536                 /* one receive, GRO-coalesced ones too */
#define UDP_MAX_WINDOW 4096
#define NS             UINT64_C(1000000000)

/* ------------------------------------------------------------ histogram */

#define H_SUB_BITS     7
#define H_SUB          (1u << H_SUB_BITS)     /* buckets per power of two */
#define H_MAX_EXP      40                     /* 2^40 ns = 18 min */
#define H_BUCKETS      (H_SUB + (H_MAX_EXP - H_SUB_BITS + 1) * H_SUB)

struct hist {
	uint64_t count;
	uint64_t max;
	uint64_t min;
	long double sum;
	uint64_t b[H_BUCKETS];
};

static unsigned h_index(uint64_t v)
{
	unsigned e;

	if (v < H_SUB)
		return (unsigned)v;
	e = 63u - (unsigned)__builtin_clzll(v);
	if (e > H_MAX_EXP)
		return H_BUCKETS - 1;
	return H_SUB + (e - H_SUB_BITS) * H_SUB +
	       (unsigned)((v >> (e - H_SUB_BITS)) & (H_SUB - 1));
}

/* Midpoint of bucket i (its values are within 0.4% of it). */
static uint64_t h_value(unsigned i)
{
	unsigned e, m;
	uint64_t lo, width;

	if (i < H_SUB)
		return i;
	e = (i - H_SUB) / H_SUB + H_SUB_BITS;
	m = (i - H_SUB) % H_SUB;
	width = UINT64_C(1) << (e - H_SUB_BITS);
	lo = (UINT64_C(1) << e) + (uint64_t)m * width;
	return lo + width / 2;
}

static inline void h_record(struct hist *h, uint64_t v, uint64_t n)
{
	h->b[h_index(v)] += n;
	h->count += n;
	h->sum += (long double)v * n;
	if (v > h->max)
		h->max = v;
	if (v < h->min)
		h->min = v;
}

/* Smallest recorded value v such that at least q of the values are <= v. */
static uint64_t h_quantile(const struct hist *h, double q)
{
	uint64_t want, acc = 0;
	unsigned i;

	if (h->count == 0)
		return 0;
	want = (uint64_t)(q * (double)h->count);
	if ((double)want < q * (double)h->count)
		want++;                 /* ceil, without libm */
	if (want < 1)
		want = 1;
	for (i = 0; i < H_BUCKETS; i++) {
		acc += h->b[i];
		if (acc >= want) {
			uint64_t v = h_value(i);

			return v > h->max ? h->max : v < h->min ? h->min : v;
		}
	}
	return h->max;
}

/* ---------------------------------------------------------------- state */

enum cstate { C_CONNECTING, C_IDLE, C_BUSY, C_DEAD };

struct conn {
	int fd;
	uint8_t state;
	bool w_blocked;      /* a send came back short: wait for EPOLLOUT */
	uint32_t idx;
	uint32_t sent;       /* bytes of the request in flight sent */
	uint32_t got;        /* ... and received back */
	uint32_t off;        /* table offset of the request in flight */
	uint64_t key;
	uint64_t seq;        /* requests started */
	uint64_t next_due;   /* open loop, idle: due time of request seq */
	uint64_t t_req;      /* ns: send time (closed) or due time (open) */
	/* UDP: seq is the next datagram to send; lo..seq-1 are in flight */
	bool in_heap;        /* open loop: waiting in the heap for its next due time */
	uint64_t lo;         /* the oldest datagram in flight */
	uint64_t rx_next;    /* the lowest sequence number that may still come back */
	struct dslot *slot;  /* window: slot[k % window] is datagram k's */
};

/* UDP: one datagram in flight. */
struct dslot {
	uint64_t t_req;      /* send time (closed) or due time (open) */
	uint64_t t_sent;     /* for the loss timeout */
};

static struct {
	struct cl_target target;
	uint32_t payload;
	double duration;
	double warmup;
	double rate;          /* 0: closed loop */
	double drain;
	double connect_timeout;
	double spin_us;
	int cpu;
	long server_pid;
	bool json;
	bool nagle;
	uint64_t seed;
	bool udp;
	unsigned window;      /* UDP: datagrams in flight per flow */
	unsigned gso;         /* UDP: datagrams per UDP_SEGMENT send; 0: none */
	double loss_timeout;  /* UDP: s */
	bool reconnect;       /* TCP: a connection per request */
	unsigned sources;     /* TCP over IPv4 loopback: source addresses in turn */
} opt = {
	.target = CL_TARGET_DEFAULT(1000000),
	.payload = 64,
	.duration = 5,
	.warmup = 1,
	.drain = -1,
	.connect_timeout = 10,
	.spin_us = 50,
	.cpu = -1,
	.server_pid = -1,
	.seed = 1,
	.window = 1,
	.loss_timeout = 0.2,
};

static struct conn *conns;
static int epfd;
static struct sockaddr_storage dst;
static socklen_t dstlen;
static uint8_t *table, *rbuf;
static struct hist hist;
static unsigned long n_alive;
static uint64_t errors;
static char first_error[160];
static uint64_t spin_ns;

/* measurement window */
static uint64_t t0, w_start, w_end;    /* nominal, ns */
static bool measuring;
static uint64_t done_in_window;
static double interval_ns;             /* open loop: ns between requests */
static uint32_t *heap;                 /* open loop: idle conns by next_due */
static size_t heap_len;
static struct hist lag;                /* open loop: send time - due time */

/* UDP */
static uint64_t loss_timeout_ns;
static uint64_t udp_sent_w, udp_lost_w;   /* datagrams whose t_req is in the window */
static uint64_t udp_late;                 /* echoes that came after their loss timeout */
static uint64_t next_expiry;              /* next scan for timed-out datagrams */

/* ---------------------------------------------------------------- utils */

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "%s: FAIL ", cl_prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* No measurement (the server not reached or lost, a local error): one line
 * "echod-bench: message" on stderr, exit 3. */
#define EXIT_NO_RESULT 3
static void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fatal(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "%s: ", cl_prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(EXIT_NO_RESULT);
}

/* "HOST port P" or "NAME (ADDR) port P": the server, in messages. */
static char target_desc[384];

/* Table offset of request seq of a connection: any byte offset, so that a
 * stream shifted by a few bytes fails too. */
static inline uint32_t req_offset(uint64_t key, uint64_t seq)
{
	return (uint32_t)(cl_stream_word(key, seq) & (TABLE_SIZE - 1));
}

/* ------------------------------------------------------------- options */

static uint32_t parse_payload(const char *s)
{
	uint64_t v;

	if (cl_parse_size(s, &v) < 0 || v == 0 || v > MAX_PAYLOAD)
		cl_usage_error("invalid payload size '%s' (1..16M, suffix k/m allowed)", s);
	return (uint32_t)v;
}

static void usage(FILE *f)
{
	fprintf(f,
"Usage: %s [-H HOST] [-p PORT] [OPTION]...\n"
"Request/response load on an RFC 862 echo server (TCP or UDP): round-trip\n"
"latency percentiles, throughput, loss; every byte checked.\n"
"\n"
"  -H, --host HOST         server: an IPv4 or IPv6 address or a host name\n"
"                          (default 127.0.0.1)\n"
"  -p, --port N            server port (default 7)\n"
"  -c, --conns N           connections (default 1)\n"
"  -l, --payload N         request size in bytes, suffix k/m (default 64)\n"
"  -d, --duration S        measured window in seconds (default 5)\n"
"  -w, --warmup S          unmeasured warm-up before the window (default 1)\n"
"      --rate R            open loop: R requests/s in total, spread evenly over\n"
"                          the connections; latency from the intended send time\n"
"                          (default: closed loop, one request in flight per\n"
"                          connection)\n"
"      --drain S           open loop: after the window, wait up to S seconds for\n"
"                          the requests due in it (default max(1, duration))\n"
"      --cpu N             pin to CPU N\n"
"      --server-pid PID    report the server's CPU time per request (its CPU-time\n"
"                          clock, in ns, over the window) and its VmRSS\n"
"      --seed N            payload seed (default 1)\n"
"      --nagle             leave Nagle's algorithm on (default: TCP_NODELAY)\n"
"      --spin-us U         open loop: sleep until U microseconds before the next\n"
"                          due time, then poll (epoll_wait with no timeout), as\n"
"                          a timer wake-up comes late (default 50)\n"
"      --connect-timeout S\n"
"                          give up connecting after S seconds (default 10)\n"
"      --json              one JSON object instead of key=value\n"
"      --reconnect         TCP, closed loop: every request on a new connection\n"
"                          (connect, send, receive, close); latency includes\n"
"                          the connect: req_s is connections/s\n"
"      --sources N         connect from 127.0.0.1 .. 127.0.0.1+N-1 in turn\n"
"                          (the server on IPv4 loopback; 1..65536, default 1)\n"
"      --udp               UDP echo: -c flows (one connected socket each), -l the\n"
"                          datagram size (8..65507; 65527 on IPv6): an 8-byte\n"
"                          sequence number and seeded bytes\n"
"      --window W          UDP: datagrams in flight per flow (default 1)\n"
"      --gso N             UDP: send a flow's datagrams N per sendmsg with\n"
"                          UDP_SEGMENT, receive with UDP_GRO (default: off)\n"
"      --loss-timeout S    UDP: a datagram unanswered S seconds after it was sent\n"
"                          is lost (default 0.2)\n"
"  -V, --version           print the version and exit\n"
"  -h, --help              this help\n"
"\n"
"Prints one line: mode conns payload duration_s req_s target_req_s requests\n"
"p50_us p90_us p99_us p999_us max_us mean_us errors unfinished\n"
"server_cpu_us_per_req server_cpu_util server_rss_kb [client_lag_p50_us\n"
"client_lag_p99_us] client_cpu_us_per_req client_cpu_util [first_error] (times in\n"
"microseconds); with --udp also proto window gso (after payload) and sent lost\n"
"loss_pct late (after unfinished): a request is a datagram.\n"
"Exit 0; 1 when the server echoed wrongly (the offset printed); 2 on usage;\n"
"3 when there is no measurement (server unreachable, connections lost, no echo).\n"
"See echod-bench(1).\n", cl_prog);
}

enum { OPT_RATE = 256, OPT_CPU, OPT_SERVER_PID, OPT_JSON, OPT_SEED, OPT_DRAIN,
       OPT_NAGLE, OPT_CONNECT_TIMEOUT, OPT_SPIN_US, OPT_UDP, OPT_WINDOW, OPT_GSO,
       OPT_LOSS_TIMEOUT, OPT_RECONNECT, OPT_SOURCES };

static const struct option longopts[] = {
	CL_TARGET_OPTIONS,
	{ "payload",         required_argument, NULL, 'l' },
	{ "duration",        required_argument, NULL, 'd' },
	{ "warmup",          required_argument, NULL, 'w' },
	{ "rate",            required_argument, NULL, OPT_RATE },
	{ "drain",           required_argument, NULL, OPT_DRAIN },
	{ "cpu",             required_argument, NULL, OPT_CPU },
	{ "server-pid",      required_argument, NULL, OPT_SERVER_PID },
	{ "seed",            required_argument, NULL, OPT_SEED },
	{ "nagle",           no_argument,       NULL, OPT_NAGLE },
	{ "connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT },
	{ "spin-us",         required_argument, NULL, OPT_SPIN_US },
	{ "json",            no_argument,       NULL, OPT_JSON },
	{ "udp",             no_argument,       NULL, OPT_UDP },
	{ "window",          required_argument, NULL, OPT_WINDOW },
	{ "gso",             required_argument, NULL, OPT_GSO },
	{ "loss-timeout",    required_argument, NULL, OPT_LOSS_TIMEOUT },
	{ "reconnect",       no_argument,       NULL, OPT_RECONNECT },
	{ "sources",         required_argument, NULL, OPT_SOURCES },
	{ "version",         no_argument,       NULL, 'V' },
	CL_HELP_OPTION,
	{ NULL, 0, NULL, 0 },
};

/* One of the program's own options (cl_parse_options() handles -H, -p, -h). */
static void on_option(int ch, const char *arg)
{
	switch (ch) {
	case 'l': opt.payload = parse_payload(arg); break;
	case 'd': opt.duration = cl_opt_double("duration", arg, 0.01, 86400); break;
	case 'w': opt.warmup = cl_opt_double("warm-up", arg, 0, 86400); break;
	case OPT_RATE: opt.rate = cl_opt_double("rate", arg, 0.001, 1e9); break;
	case OPT_DRAIN: opt.drain = cl_opt_double("drain", arg, 0, 86400); break;
	case OPT_CPU: opt.cpu = (int)cl_opt_long("cpu", arg, 0, CPU_SETSIZE - 1); break;
	case OPT_SERVER_PID:
		opt.server_pid = cl_opt_long("server pid", arg, 1, 0x7fffffff);
		break;
	case OPT_SEED: opt.seed = cl_opt_seed(arg); break;
	case OPT_NAGLE: opt.nagle = true; break;
	case OPT_CONNECT_TIMEOUT:
		opt.connect_timeout = cl_opt_double("connect timeout", arg, 0.1, 3600);
		break;
	case OPT_SPIN_US: opt.spin_us = cl_opt_double("spin", arg, 0, 1e6); break;
	case OPT_JSON: opt.json = true; break;
	case OPT_UDP: opt.udp = true; break;
	case OPT_WINDOW:
		opt.window = (unsigned)cl_opt_long("window", arg, 1, UDP_MAX_WINDOW);
		break;
	case OPT_GSO: opt.gso = (unsigned)cl_opt_long("gso", arg, 1, UDP_MAX_BATCH); break;
	case OPT_LOSS_TIMEOUT:
		opt.loss_timeout = cl_opt_double("loss timeout", arg, 0.001, 3600);
		break;
	case OPT_RECONNECT: opt.reconnect = true; break;
	case 'V':
		printf("%s (echod) %s\n", cl_prog, PACKAGE_VERSION);
		exit(0);
	case OPT_SOURCES: opt.sources = (unsigned)cl_opt_long("sources", arg, 1, 65536); break;
	}
}

static void parse_args(int argc, char **argv)
{
	cl_parse_options(argc, argv, "H:p:c:l:d:w:Vh", longopts, &opt.target, usage, on_option);
	spin_ns = (uint64_t)(opt.spin_us * 1000.0);
	if (opt.drain < 0)
		opt.drain = opt.duration > 1 ? opt.duration : 1;
	if (!opt.udp && (opt.window != 1 || opt.gso))
		cl_usage_error("--window and --gso need --udp");
	if (opt.reconnect && (opt.udp || opt.rate > 0))
		cl_usage_error("--reconnect is TCP and closed loop: not with --udp or --rate");
	if (opt.udp && opt.payload < UDP_HDR)
		cl_usage_error("a UDP datagram carries an 8-byte sequence number: -l 8 or more");
	if (opt.gso > opt.window)
		opt.gso = opt.window;          /* a send carries at most a window */
	if (opt.gso && (uint64_t)opt.gso * opt.payload > UDP_MAX_V4)
		cl_usage_error("--gso %u x %u bytes is over one UDP send (%u bytes)",
			       opt.gso, opt.payload, UDP_MAX_V4);
	loss_timeout_ns = (uint64_t)(opt.loss_timeout * 1e9);
	if (opt.udp && opt.drain < opt.loss_timeout + 0.1)
		opt.drain = opt.loss_timeout + 0.1;    /* time for the last echoes or losses */
}

/* ------------------------------------------------------- process stats */

/* utime + stime of pid in clock ticks (all threads), or -1. */
static long long proc_cpu_ticks(long pid)
{
	char path[64], buf[2048], *p;
	unsigned long long ut, st;
	ssize_t n;
	int fd, i;

	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	p = strrchr(buf, ')');        /* comm may hold spaces and parens */
	if (!p)
		return -1;
	p++;
	/* after ')': field 3 (state) ... utime is field 14, stime 15 */
	for (i = 3; i < 14; i++) {
		p = strchr(p + 1, ' ');
		if (!p)
			return -1;
	}
	if (sscanf(p, " %llu %llu", &ut, &st) != 2)
		return -1;
	return (long long)(ut + st);
}

/*
 * CPU time of pid in ns, all its threads, the exited ones included, or -1:
 * its process CPU-time clock (clock_getcpuclockid), which counts the
 * scheduler's runtime in ns, where /proc/PID/stat rounds the same time to
 * clock ticks (10 ms: 1% of a 1 s window at full load, more at less).
 * Without that clock, /proc/PID/stat.
 */
static long long proc_cpu_ns(long pid)
{
	static long tck;
	struct timespec ts;
	clockid_t clk;
	long long t;

	if (clock_getcpuclockid((pid_t)pid, &clk) == 0 && clock_gettime(clk, &ts) == 0)
		return (long long)ts.tv_sec * (long long)NS + ts.tv_nsec;
	if (!tck)
		tck = sysconf(_SC_CLK_TCK);
	t = proc_cpu_ticks(pid);
	return t < 0 || tck <= 0 ? -1 : t * (long long)(NS / (uint64_t)tck);
}

/* VmRSS of pid in KiB, or -1. */
static long proc_rss_kb(long pid)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/status", pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static uint64_t self_cpu_ns(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * NS +
	       ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000;
}

/* --------------------------------------------------------- connections */

/* A connect of connection (flow) idx failed with err: exit 3. */
static void connect_failed(const char *what, uint32_t idx, int err) __attribute__((noreturn));
static void connect_failed(const char *what, uint32_t idx, int err)
{
	fatal("cannot connect to %s: %s (%s) (%s=%u)", target_desc, cl_errname(err),
	      strerror(err), what, idx);
}

static void conn_lost(struct conn *c, const char *what, int err)
{
	errors++;
	if (!first_error[0])
		snprintf(first_error, sizeof(first_error), "%s=%u %s: %s",
			 opt.udp ? "flow" : "conn", c->idx, what, err ? cl_errname(err) : "EOF");
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->state = C_DEAD;
	if (--n_alive == 0) {
		if (opt.udp && err == ECONNREFUSED)
			fatal("every flow lost: %s refused the datagrams (ICMP port unreachable:"
			      " nothing listens there?); first: %s", target_desc, first_error);
		fatal("every %s lost: %s %s; first: %s", opt.udp ? "flow" : "connection",
		      target_desc, err == ECONNRESET || err == EPIPE ? "reset them" :
		      err ? "failed" :
		      "closed them", first_error);
	}
}

/* A non-blocking socket of type for connection (flow) c, or fail. */
static int conn_socket(const struct conn *c, int type)
{
	int fd = socket(dst.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		fatal("%s=%u socket: %s (%s)", opt.udp ? "flow" : "conn", c->idx,
		     cl_errname(errno), strerror(errno));
	return fd;
}

/* Add c's socket to the epoll set (op EPOLL_CTL_ADD) or change its events. */
static void conn_watch(const struct conn *c, int op, uint32_t events)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.events = events;
	ev.data.u32 = c->idx;
	if (epoll_ctl(epfd, op, c->fd, &ev) < 0)
		fatal("%s=%u epoll_ctl: %s (%s)", opt.udp ? "flow" : "conn", c->idx,
		     cl_errname(errno), strerror(errno));
}

/* --sources: bind fd to the next of the source addresses, the port left
 * to connect() (which picks one free for the whole 4-tuple). */
static void bind_source(const struct conn *c, int fd)
{
	static unsigned next;
	struct sockaddr_in sin;
	int one = 1;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK + next);
	next = (next + 1) % opt.sources;
	if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
		fatal("conn=%u bind to a source address: %s (%s)", c->idx, cl_errname(errno),
		     strerror(errno));
}

static void conn_open(struct conn *c)
{
	int one = 1, fd;

	fd = conn_socket(c, SOCK_STREAM);
	if (opt.sources > 1)
		bind_source(c, fd);
	if (!opt.nagle)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->fd = fd;
	c->state = C_CONNECTING;
	conn_watch(c, EPOLL_CTL_ADD, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
	if (connect(fd, (struct sockaddr *)&dst, dstlen) < 0 && errno != EINPROGRESS)
		connect_failed("conn", c->idx, errno);
}

static void req_send(struct conn *c)
{
	while (c->sent < opt.payload) {
		ssize_t n = send(c->fd, table + c->off + c->sent, opt.payload - c->sent,
				 MSG_NOSIGNAL);

		if (n > 0) {
			c->sent += (uint32_t)n;
			if (c->sent < opt.payload) {      /* short: the buffer is full */
				c->w_blocked = true;
				return;
			}
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			c->w_blocked = true;
			return;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else {
			conn_lost(c, "send", errno);
			return;
		}
	}
	c->w_blocked = false;
}

/* Start request c->seq; t_req is its send time (closed) or due time (open). */
static void req_start(struct conn *c, uint64_t t_req)
{
	c->off = req_offset(c->key, c->seq);
	c->seq++;
	c->sent = c->got = 0;
	c->t_req = t_req;
	c->state = C_BUSY;
	req_send(c);
}

/* Open loop: due time of request k of connection i.  UDP with --gso N: the
 * datagrams of a flow are due in bursts of N at once, burst b of flow i at
 * t0 + (i + b*c)*N/R (the same mean rate, bursts evenly spread), so that a
 * burst can leave in one UDP_SEGMENT send. */
static inline uint64_t due_time(uint32_t i, uint64_t k)
{
	if (opt.udp && opt.gso > 1)
		return t0 + (uint64_t)(((double)i + (double)(k / opt.gso) *
					(double)opt.target.conns) * interval_ns * opt.gso);
	return t0 + (uint64_t)(((double)i + (double)k * (double)opt.target.conns) * interval_ns);
}

/* --- open loop: min-heap of idle connections by next_due */

static void heap_push(struct conn *c)
{
	size_t i = heap_len++;

	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (conns[heap[parent]].next_due <= c->next_due)
			break;
		heap[i] = heap[parent];
		i = parent;
	}
	heap[i] = c->idx;
}

static void heap_pop(void)
{
	uint32_t last = heap[--heap_len];
	uint64_t key = conns[last].next_due;
	size_t i = 0;

	for (;;) {
		size_t l = 2 * i + 1, m = i;

		if (l >= heap_len)
			break;
		m = l;
		if (l + 1 < heap_len && conns[heap[l + 1]].next_due < conns[heap[l]].next_due)
			m = l + 1;
		if (conns[heap[m]].next_due >= key)
			break;
		heap[i] = heap[m];
		i = m;
	}
	if (heap_len)
		heap[i] = last;
}

/* A request (TCP) or datagram (UDP) answered at now: its latency, if it
 * belongs to the window, and the count of the window. */
static void record_done(uint64_t t_req, uint64_t now)
{
	bool in_window;

	if (opt.rate > 0)
		in_window = t_req >= w_start && t_req < w_end;
	else
		in_window = measuring;
	if (in_window)
		h_record(&hist, now - t_req, 1);
	if (measuring)
		done_in_window++;
}

/* ------------------------------------------------------------------ UDP */

static struct mmsghdr udp_tx[UDP_MAX_BATCH];
static struct iovec udp_tx_iov[2 * UDP_MAX_BATCH];
static uint64_t udp_tx_hdr[UDP_MAX_BATCH];
static union {
	char buf[CMSG_SPACE(sizeof(uint16_t))];
	struct cmsghdr align;
} udp_tx_cmsg;
static struct mmsghdr udp_rx[UDP_RX_BATCH];
static struct iovec udp_rx_iov[UDP_RX_BATCH];
static union {
	char buf[CMSG_SPACE(sizeof(int))];
	struct cmsghdr align;
} udp_rx_cmsg[UDP_RX_BATCH];

static struct dslot *udp_slots;            /* flows x window */

/* The window slots and the receive buffers. */
static void udp_alloc(void)
{
	unsigned i;

	udp_slots = calloc(opt.target.conns * opt.window, sizeof(*udp_slots));
	free(rbuf);
	rbuf = malloc((size_t)UDP_RX_BATCH * UDP_RX_BUF);
	if (!udp_slots || !rbuf)
		fatal("out of memory");
	for (i = 0; i < UDP_RX_BATCH; i++) {
		udp_rx_iov[i].iov_base = rbuf + (size_t)i * UDP_RX_BUF;
		udp_rx_iov[i].iov_len = UDP_RX_BUF;
	}
}

static inline bool in_window(uint64_t t)
{
	return t >= w_start && t < w_end;
}

/* Another flow socket: connected to the server, UDP_GRO on with --gso. */
static void udp_open(struct conn *c)
{
	int one = 1, fd;

	fd = conn_socket(c, SOCK_DGRAM);
	if (opt.gso && setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof(one)) < 0)
		fatal("flow=%u UDP_GRO: %s (%s)", c->idx, cl_errname(errno), strerror(errno));
	if (connect(fd, (struct sockaddr *)&dst, dstlen) < 0)
		connect_failed("flow", c->idx, errno);
	c->fd = fd;
	c->state = C_IDLE;
	conn_watch(c, EPOLL_CTL_ADD, EPOLLIN | EPOLLET);  /* EPOLLOUT only while blocked */
}

static void udp_want_out(struct conn *c, bool on)
{
	conn_watch(c, EPOLL_CTL_MOD, EPOLLIN | EPOLLET | (on ? EPOLLOUT : 0));
	c->w_blocked = on;
}

/* Send datagrams c->seq .. c->seq + n - 1 (n <= UDP_MAX_BATCH) in one call:
 * one message each, or --gso of them per message.  t_req: their send time
 * (closed loop), or 0 for their due times (open loop).  What the socket does
 * not take now waits for EPOLLOUT. */
static void udp_send(struct conn *c, unsigned n, uint64_t t_req, uint64_t now)
{
	unsigned per = opt.gso ? opt.gso : 1, nmsg = 0, k, sent = 0;
	uint32_t body = opt.payload - UDP_HDR;
	int r;

	for (k = 0; k < n; k++) {
		uint64_t s = c->seq + k;

		udp_tx_hdr[k] = htole64(s);
		udp_tx_iov[2 * k].iov_base = &udp_tx_hdr[k];
		udp_tx_iov[2 * k].iov_len = UDP_HDR;
		udp_tx_iov[2 * k + 1].iov_base = table + req_offset(c->key, s);
		udp_tx_iov[2 * k + 1].iov_len = body;
	}
	for (k = 0; k < n; k += per) {
		struct msghdr *m = &udp_tx[nmsg++].msg_hdr;
		unsigned segs = n - k < per ? n - k : per;

		memset(m, 0, sizeof(*m));
		m->msg_iov = &udp_tx_iov[2 * k];
		m->msg_iovlen = 2 * segs;
		if (segs > 1) {
			struct cmsghdr *cm;
			uint16_t seg = (uint16_t)opt.payload;

			/* every message of a call has the same segment size */
			m->msg_control = udp_tx_cmsg.buf;
			m->msg_controllen = sizeof(udp_tx_cmsg.buf);
			cm = CMSG_FIRSTHDR(m);
			cm->cmsg_level = IPPROTO_UDP;
			cm->cmsg_type = UDP_SEGMENT;
			cm->cmsg_len = CMSG_LEN(sizeof(seg));
			memcpy(CMSG_DATA(cm), &seg, sizeof(seg));
		}
	}
	do {
		r = nmsg == 1 ? (sendmsg(c->fd, &udp_tx[0].msg_hdr, 0) < 0 ? -1 : 1)
			      : sendmmsg(c->fd, udp_tx, nmsg, 0);
	} while (r < 0 && errno == EINTR);
	if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS) {
		conn_lost(c, "send", errno);
		return;
	}
	if (r > 0)
		sent = (unsigned)r * per < n ? (unsigned)r * per : n;
	for (k = 0; k < sent; k++) {
		struct dslot *d = &c->slot[(c->seq + k) % opt.window];

		d->t_req = t_req ? t_req : due_time(c->idx, c->seq + k);
		d->t_sent = now;
		if (in_window(d->t_req))
			udp_sent_w++;
	}
	c->seq += sent;
	if (sent < n)
		udp_want_out(c, true);
}

/* Closed loop: fill the flow's window, until the window closes. */
static void udp_fill(struct conn *c, uint64_t now)
{
	while (c->state != C_DEAD && !c->w_blocked && now < w_end) {
		uint64_t room = opt.window - (c->seq - c->lo);

		if (room == 0)
			return;
		udp_send(c, room < UDP_MAX_BATCH ? (unsigned)room : UDP_MAX_BATCH, now, now);
	}
}

/* Open loop: send the flow's datagrams due by now that fit its window
 * (together), then wait in the heap for the next one if it has room. */
static void udp_open_next(struct conn *c, uint64_t now)
{
	for (;;) {
		uint64_t room;
		unsigned n = 0;

		if (c->state == C_DEAD || c->w_blocked || c->in_heap)
			return;
		room = opt.window - (c->seq - c->lo);
		if (room == 0)
			return;                 /* a slot that frees calls again */
		while (n < room && n < UDP_MAX_BATCH) {
			uint64_t t = due_time(c->idx, c->seq + n);

			if (t >= w_end || t > now)
				break;
			n++;
		}
		if (n == 0) {
			uint64_t t = due_time(c->idx, c->seq);

			if (t < w_end) {
				c->next_due = t;
				c->in_heap = true;
				heap_push(c);
			}
			return;
		}
		udp_send(c, n, 0, now);
	}
}

static void udp_more(struct conn *c, uint64_t now)
{
	if (opt.rate > 0)
		udp_open_next(c, now);
	else
		udp_fill(c, now);
}

/* Datagrams lo..upto-1 of a flow are lost: out of the window. */
static void udp_lose(struct conn *c, uint64_t upto)
{
	for (; c->lo < upto; c->lo++)
		if (in_window(c->slot[c->lo % opt.window].t_req))
			udp_lost_w++;
}

static void udp_mismatch(const struct conn *c, uint64_t s, const uint8_t *p)
	__attribute__((noreturn));
static void udp_mismatch(const struct conn *c, uint64_t s, const uint8_t *p)
{
	const uint8_t *want = table + req_offset(c->key, s);
	size_t k = 0;

	while (p[UDP_HDR + k] == want[k])
		k++;
	fail("flow=%u datagram=%" PRIu64 " offset=%zu expected=0x%02x got=0x%02x"
	     " (of a %u-byte datagram; bytes 0-7 are its sequence number)",
	     c->idx, s, UDP_HDR + k, want[k], p[UDP_HDR + k], opt.payload);
}

/* One echoed datagram of len bytes at p. */
static void udp_got(struct conn *c, const uint8_t *p, size_t len, uint64_t now)
{
	uint64_t s;

	if (len != opt.payload)
		fail("flow=%u a %zu-byte echo of %u-byte datagrams (after datagram %" PRIu64 ")",
		     c->idx, len, opt.payload, c->rx_next ? c->rx_next - 1 : 0);
	memcpy(&s, p, sizeof(s));
	s = le64toh(s);
	if (s >= c->seq)
		fail("flow=%u echo of datagram %" PRIu64 ", never sent (%" PRIu64 " sent)",
		     c->idx, s, c->seq);
	if (s < c->rx_next)
		fail("flow=%u datagram %" PRIu64 " came back after datagram %" PRIu64
		     ": duplicated or reordered", c->idx, s, c->rx_next - 1);
	if (memcmp(p + UDP_HDR, table + req_offset(c->key, s), opt.payload - UDP_HDR) != 0)
		udp_mismatch(c, s, p);
	c->rx_next = s + 1;
	if (s < c->lo) {                    /* timed out already: lost, and late */
		udp_late++;
		return;
	}
	udp_lose(c, s);                     /* the ones before it will not come */
	record_done(c->slot[s % opt.window].t_req, now);
	c->lo = s + 1;
}

/* Read every echo queued on the flow's socket, then send more. */
static void udp_recv(struct conn *c, uint64_t *now)
{
	for (;;) {
		int n, i;

		for (i = 0; i < UDP_RX_BATCH; i++) {
			struct msghdr *m = &udp_rx[i].msg_hdr;

			m->msg_iov = &udp_rx_iov[i];
			m->msg_iovlen = 1;
			m->msg_control = opt.gso ? udp_rx_cmsg[i].buf : NULL;
			m->msg_controllen = opt.gso ? sizeof(udp_rx_cmsg[i].buf) : 0;
			m->msg_flags = 0;
		}
		n = recvmmsg(c->fd, udp_rx, UDP_RX_BATCH, MSG_DONTWAIT, NULL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				conn_lost(c, "recv", errno);
			break;
		}
		*now = cl_now_ns();
		for (i = 0; i < n; i++) {
			struct msghdr *m = &udp_rx[i].msg_hdr;
			const uint8_t *p = udp_rx_iov[i].iov_base;
			size_t len = udp_rx[i].msg_len, seg = len;
			struct cmsghdr *cm;

			if (m->msg_flags & MSG_TRUNC)
				fail("flow=%u an echo over %d bytes (datagrams are %u)",
				     c->idx, UDP_RX_BUF, opt.payload);
			for (cm = CMSG_FIRSTHDR(m); cm; cm = CMSG_NXTHDR(m, cm)) {
				int g;

				if (cm->cmsg_level != IPPROTO_UDP || cm->cmsg_type != UDP_GRO)
					continue;
				memcpy(&g, CMSG_DATA(cm), sizeof(g));
				if (g > 0)
					seg = (size_t)g;
			}
			do {                /* seg == len but with GRO */
				size_t l = len < seg ? len : seg;

				udp_got(c, p, l, *now);
				p += l;
				len -= l;
			} while (len > 0);
		}
		if (n < UDP_RX_BATCH)
			break;
	}
	if (c->state != C_DEAD)
		udp_more(c, *now);
}

static void udp_event(struct conn *c, const struct epoll_event *ev, uint64_t *now)
{
	if (c->w_blocked && (ev->events & (EPOLLOUT | EPOLLERR))) {
		udp_want_out(c, false);
		udp_more(c, *now);
	}
	if (c->state != C_DEAD && (ev->events & (EPOLLIN | EPOLLERR)))
		udp_recv(c, now);
}

/* Datagrams unanswered loss_timeout after they were sent are lost (all in
 * flight with force); the flows whose window opened send more. */
static void udp_expire(uint64_t now, bool force)
{
	unsigned long i;

	if (!force && now < next_expiry)
		return;
	next_expiry = now + loss_timeout_ns / 8;
	for (i = 0; i < opt.target.conns; i++) {
		struct conn *c = &conns[i];
		uint64_t lo = c->lo;

		if (c->state == C_DEAD)
			continue;
		while (c->lo < c->seq &&
		       (force || c->slot[c->lo % opt.window].t_sent + loss_timeout_ns <= now))
			udp_lose(c, c->lo + 1);
		if (c->lo != lo && !force)
			udp_more(c, now);
	}
}

/* Open loop: the connection is idle; send its next request when due. */
static void open_next(struct conn *c, uint64_t now)
{
	uint64_t t = due_time(c->idx, c->seq);

	if (opt.udp) {
		udp_open_next(c, now);
		return;
	}
	if (t >= w_end)
		return;                 /* its schedule is over */
	if (t <= now) {
		/* already due, maybe long ago: its latency runs from then */
		req_start(c, t);
		return;
	}
	c->next_due = t;
	heap_push(c);
}

/* Open loop: start every idle connection's request that is due by now. */
static void schedule(uint64_t now)
{
	while (heap_len) {
		struct conn *c = &conns[heap[0]];
		uint64_t t = c->next_due;

		if (t > now)
			return;
		heap_pop();
		if (opt.udp)
			c->in_heap = false;
		else if (c->state != C_IDLE)
			continue;
		if (t >= w_start)
			h_record(&lag, now - t, 1);
		if (opt.udp)
			udp_open_next(c, now);
		else
			req_start(c, t);
	}
}

static void req_done(struct conn *c, uint64_t now)
{
	record_done(c->t_req, now);
	c->state = C_IDLE;
	if (opt.reconnect) {
		/* the next request on a new connection, timed from its connect */
		close(c->fd);
		c->fd = -1;
		if (now < w_end) {
			conn_open(c);
			c->t_req = now;
		}
	} else if (opt.rate > 0)
		open_next(c, now);
	else if (now < w_end)
		req_start(c, now);
}

/* The first wrong byte among the n just received: report and exit. */
static void mismatch(const struct conn *c, size_t n) __attribute__((noreturn));
static void mismatch(const struct conn *c, size_t n)
{
	const uint8_t *want = table + c->off + c->got;
	size_t k = 0;

	while (k < n && rbuf[k] == want[k])
		k++;
	fail("conn=%u request=%" PRIu64 " offset=%" PRIu64 " expected=0x%02x got=0x%02x"
	     " (byte %" PRIu64 " of a %u-byte request; offset counts from the start of the"
	     " connection's stream)", c->idx, c->seq - 1,
	     (c->seq - 1) * (uint64_t)opt.payload + c->got + k, want[k], rbuf[k],
	     (uint64_t)c->got + k, opt.payload);
}

static void conn_recv(struct conn *c, uint64_t *now)
{
	for (;;) {
		ssize_t n = recv(c->fd, rbuf, RBUF_SIZE, 0);

		if (n > 0) {
			uint32_t avail = c->state == C_BUSY ? c->sent - c->got : 0;

			if ((size_t)n > avail) {
				if (avail && memcmp(rbuf, table + c->off + c->got, avail) != 0)
					mismatch(c, avail);
				fail("conn=%u request=%" PRIu64 " extra bytes: %zd received, %u"
				     " outstanding (payload %u)", c->idx,
				     c->seq ? c->seq - 1 : 0, n, avail, opt.payload);
			}
			if (memcmp(rbuf, table + c->off + c->got, (size_t)n) != 0)
				mismatch(c, (size_t)n);
			c->got += (uint32_t)n;
			if (c->got == opt.payload) {
				*now = cl_now_ns();
				req_done(c, *now);
				return;     /* nothing more can be queued: one in flight */
			}
			if (n < RBUF_SIZE)
				return;     /* drained; the next arrival is a new edge */
		} else if (n == 0) {
			conn_lost(c, "recv", 0);
			return;
		} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
			return;
		} else if (errno != EINTR) {
			conn_lost(c, "recv", errno);
			return;
		}
	}
}

static void conn_connected(struct conn *c)
{
	int err = cl_socket_error(c->fd);

	if (err)
		connect_failed("conn", c->idx, err);
	c->state = C_IDLE;
	if (c->t_req)                   /* --reconnect: its request was waiting */
		req_start(c, c->t_req);
}

static void handle_event(const struct epoll_event *ev, uint64_t *now)
{
	struct conn *c = &conns[ev->data.u32];

	if (c->state == C_DEAD)
		return;
	if (opt.udp) {
		udp_event(c, ev, now);
		return;
	}
	if (c->state == C_CONNECTING) {
		if (!(ev->events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		conn_connected(c);
		return;
	}
	if (c->state == C_BUSY && c->w_blocked && (ev->events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
		req_send(c);
	if (c->state != C_DEAD && (ev->events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
		conn_recv(c, now);
}

/* ------------------------------------------------------------------- run */

/* Room for every connection (and a few more fds), or fail. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (cl_raise_nofile(&rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur < opt.target.conns + 16)
		fatal("RLIMIT_NOFILE is %llu, below the %lu connections asked for",
		     (unsigned long long)rl.rlim_cur, opt.target.conns);
}

static void pin(void)
{
	int r;

	if (opt.cpu >= 0 && (r = cl_pin_cpu(opt.cpu)) < 0)
		fatal("sched_setaffinity to CPU %d: %s (%s)", opt.cpu, cl_errname(-r), strerror(-r));
}

static void make_table(void)
{
	size_t len = (size_t)TABLE_SIZE + opt.payload;

	table = malloc(len);
	rbuf = malloc(RBUF_SIZE);
	if (!table || !rbuf)
		fatal("out of memory");
	cl_fill_stream(table, cl_seed_key(opt.seed), 0, len);
}

static int wait_events(struct epoll_event *events, uint64_t now, uint64_t until)
{
	struct timespec ts;
	uint64_t d;
	int n;

	d = until > now ? until - now : 0;
	/* wake spin_ns early, then poll: a timer wake-up is tens of us late */
	d = d > spin_ns ? d - spin_ns : 0;
	if (d > 100 * UINT64_C(1000000))
		d = 100 * UINT64_C(1000000);
	ts.tv_sec = (time_t)(d / NS);
	ts.tv_nsec = (long)(d % NS);
	n = epoll_pwait2(epfd, events, MAX_EVENTS, &ts, NULL);
	if (n < 0 && errno == ENOSYS)
		n = epoll_wait(epfd, events, MAX_EVENTS, (int)((d + 999999) / 1000000));
	if (n < 0 && errno != EINTR)
		fatal("epoll_wait: %s (%s)", cl_errname(errno), strerror(errno));
	return n < 0 ? 0 : n;
}

static uint64_t next_wakeup(uint64_t now)
{
	uint64_t t = measuring ? w_end : w_start;

	if (heap_len && conns[heap[0]].next_due < t)
		t = conns[heap[0]].next_due;
	if (opt.udp && next_expiry < t)
		t = next_expiry;
	return t > now ? t : now;
}

/* Requests due in the window and not answered by the end of the drain. */
static uint64_t record_unfinished(uint64_t now)
{
	uint64_t n = 0;
	unsigned long i;

	for (i = 0; i < opt.target.conns; i++) {
		struct conn *c = &conns[i];
		/* TCP: the request in flight; UDP: those in flight are lost */
		uint64_t k = !opt.udp && c->state == C_BUSY ? c->seq - 1 : c->seq;
		uint64_t t;

		if (c->state == C_DEAD)
			continue;
		for (; (t = due_time(c->idx, k)) < w_end; k++) {
			if (t >= w_start) {
				h_record(&hist, now > t ? now - t : 0, 1);
				n++;
			}
		}
	}
	return n;
}

static bool all_window_done(void)
{
	unsigned long i;

	for (i = 0; i < opt.target.conns; i++) {
		const struct conn *c = &conns[i];

		if (c->state == C_DEAD)
			continue;
		if (opt.udp && c->lo < c->seq)
			return false;
		if (opt.udp && opt.rate == 0)
			continue;
		if (c->state == C_BUSY || due_time(c->idx, c->seq) < w_end)
			return false;
	}
	return true;
}

/* ------------------------------------------------------------------ report */

/* What main() measured over the window, for the report. */
struct measured {
	double elapsed;          /* s */
	double srv_s;            /* server CPU time, s; < 0: not measured */
	long rss_kb;             /* server VmRSS at the end; < 0: not measured */
	uint64_t cli_ns;         /* client CPU time */
	uint64_t unfinished;
};

/* F_WORD is quoted in JSON only, F_TEXT in both formats. */
enum fig_kind { F_WORD, F_TEXT, F_U64, F_DOUBLE };

/* One figure of the result: computed once, written in either format. */
struct figure {
	const char *name;
	enum fig_kind kind;
	bool known;              /* false: null in JSON, left out of key=value */
	int prec, json_prec;     /* F_DOUBLE: decimals */
	union {
		const char *s;
		uint64_t u;
		double d;
	} v;
};

#define FIGURES_MAX 40

struct figures {
	struct figure f[FIGURES_MAX];
	unsigned n;
};

static struct figure *fig_add(struct figures *fs, const char *name, enum fig_kind kind)
{
	struct figure *f;

	if (fs->n == FIGURES_MAX)
		abort();
	f = &fs->f[fs->n++];
	memset(f, 0, sizeof(*f));
	f->name = name;
	f->kind = kind;
	f->known = true;
	return f;
}

static void fig_str(struct figures *fs, const char *name, const char *s, bool quoted)
{
	fig_add(fs, name, quoted ? F_TEXT : F_WORD)->v.s = s;
}

static void fig_u64(struct figures *fs, const char *name, uint64_t u)
{
	fig_add(fs, name, F_U64)->v.u = u;
}

static struct figure *fig_double(struct figures *fs, const char *name, double d, int prec)
{
	struct figure *f = fig_add(fs, name, F_DOUBLE);

	f->v.d = d;
	f->prec = f->json_prec = prec;
	return f;
}

/* A figure that was not measured this run. */
static void fig_unknown(struct figures *fs, const char *name)
{
	fig_add(fs, name, F_DOUBLE)->known = false;
}

/* One line of key=value pairs, or one JSON object. */
static void print_figures(const struct figures *fs, bool json)
{
	unsigned i, shown = 0;

	for (i = 0; i < fs->n; i++) {
		const struct figure *f = &fs->f[i];

		if (!json && !f->known)
			continue;
		if (json)
			printf("%s\"%s\": ", shown ? ", " : "{", f->name);
		else
			printf("%s%s=", shown ? " " : "", f->name);
		shown++;
		if (!f->known)
			printf("null");
		else if (f->kind == F_TEXT || (f->kind == F_WORD && json))
			printf("\"%s\"", f->v.s);
		else if (f->kind == F_WORD)
			printf("%s", f->v.s);
		else if (f->kind == F_U64)
			printf("%" PRIu64, f->v.u);
		else
			printf("%.*f", json ? f->json_prec : f->prec, f->v.d);
	}
	printf(json ? "}\n" : "\n");
}

/* Latency quantile q of h, in microseconds. */
static double quantile_us(const struct hist *h, double q)
{
	return (double)h_quantile(h, q) / 1000.0;
}

/* Every figure of the run, from what was measured, on stdout. */
static void report(const struct measured *m)
{
	struct figures fs = { .n = 0 };
	double done = (double)done_in_window;

	fig_str(&fs, "mode", opt.rate > 0 ? "open" : opt.reconnect ? "reconnect" : "closed", false);
	fig_u64(&fs, "conns", opt.target.conns);
	fig_u64(&fs, "payload", opt.payload);
	if (opt.udp) {
		fig_str(&fs, "proto", "udp", false);
		fig_u64(&fs, "window", opt.window);
		fig_u64(&fs, "gso", opt.gso);
	}
	fig_double(&fs, "duration_s", m->elapsed, 3)->json_prec = 6;
	fig_double(&fs, "req_s", done / m->elapsed, 1);
	fig_double(&fs, "target_req_s", opt.rate, 1);
	fig_u64(&fs, "requests", hist.count);
	fig_double(&fs, "p50_us", quantile_us(&hist, 0.5), 1);
	fig_double(&fs, "p90_us", quantile_us(&hist, 0.9), 1);
	fig_double(&fs, "p99_us", quantile_us(&hist, 0.99), 1);
	fig_double(&fs, "p999_us", quantile_us(&hist, 0.999), 1);
	fig_double(&fs, "max_us", (double)hist.max / 1000.0, 1);
	fig_double(&fs, "mean_us", hist.count ? (double)(hist.sum / hist.count) / 1000.0 : 0.0, 1);
	fig_u64(&fs, "errors", errors);
	fig_u64(&fs, "unfinished", m->unfinished);
	if (opt.udp) {
		fig_u64(&fs, "sent", udp_sent_w);
		fig_u64(&fs, "lost", udp_lost_w);
		fig_double(&fs, "loss_pct",
			   udp_sent_w ? 100.0 * (double)udp_lost_w / (double)udp_sent_w : 0.0, 3);
		fig_u64(&fs, "late", udp_late);
	}
	if (m->srv_s >= 0) {
		fig_double(&fs, "server_cpu_us_per_req",
			   done_in_window ? m->srv_s * 1e6 / done : 0.0, 3);
		fig_double(&fs, "server_cpu_util", m->srv_s / m->elapsed, 3);
	} else {
		fig_unknown(&fs, "server_cpu_us_per_req");
		fig_unknown(&fs, "server_cpu_util");
	}
	if (m->rss_kb >= 0)
		fig_u64(&fs, "server_rss_kb", (uint64_t)m->rss_kb);
	else
		fig_unknown(&fs, "server_rss_kb");
	if (opt.rate > 0) {
		fig_double(&fs, "client_lag_p50_us", quantile_us(&lag, 0.5), 1);
		fig_double(&fs, "client_lag_p99_us", quantile_us(&lag, 0.99), 1);
	}
	fig_double(&fs, "client_cpu_us_per_req",
		   done_in_window ? (double)m->cli_ns / 1e3 / done : 0.0, 3);
	fig_double(&fs, "client_cpu_util", (double)m->cli_ns / 1e9 / m->elapsed, 3);
	if (first_error[0])
		fig_str(&fs, "first_error", first_error, true);
	print_figures(&fs, opt.json);
}

/* ------------------------------------------------------------- the server */

/* 0, or the errno of a blocking connect to ai within the connect timeout. */
static int probe_connect(const struct addrinfo *ai)
{
	struct timeval tv;
	int fd, err = 0;

	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return errno;
	tv.tv_sec = (time_t)opt.connect_timeout;
	tv.tv_usec = (suseconds_t)((opt.connect_timeout - (double)tv.tv_sec) * 1e6);
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0)
		err = errno == EINPROGRESS ? ETIMEDOUT : errno;
	close(fd);
	return err;
}

/* -H and -p into dst: a literal ("[::1]" too), else a name looked up with
 * getaddrinfo(3): UDP takes its first address, TCP the first that accepts a
 * connection (one probe connection each, closed at once).  target_desc
 * names the server in messages.  A name not found: exit 3. */
static void resolve_target(void)
{
	struct addrinfo hints, *res, *ai, *pick = NULL;
	const char *host = opt.target.host;
	char bare[256], port[16], addr[INET6_ADDRSTRLEN];
	size_t n = strlen(host);
	int rc, err = 0;
	bool literal = true;

	if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof(bare)) {
		memcpy(bare, host + 1, n - 2);
		bare[n - 2] = '\0';
	} else if (n < sizeof(bare)) {
		memcpy(bare, host, n + 1);
	} else {
		cl_usage_error("invalid host '%s' (too long)", host);
	}
	snprintf(port, sizeof(port), "%d", opt.target.port);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = opt.udp ? SOCK_DGRAM : SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	rc = getaddrinfo(bare, port, &hints, &res);
	if (rc == EAI_NONAME) {
		literal = false;
		hints.ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG;
		rc = getaddrinfo(bare, port, &hints, &res);
	}
	if (rc != 0)
		fatal("cannot resolve host '%s': %s", host,
		      rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
	if (opt.udp || !res->ai_next) {
		pick = res;
	} else {
		for (ai = res; ai && !pick; ai = ai->ai_next)
			if ((rc = probe_connect(ai)) == 0)
				pick = ai;
			else if (!err)
				err = rc;
	}
	if (!pick || getnameinfo(pick->ai_addr, pick->ai_addrlen, addr, sizeof(addr), NULL, 0,
				 NI_NUMERICHOST) != 0)
		snprintf(addr, sizeof(addr), "?");
	if (literal)
		snprintf(target_desc, sizeof(target_desc), "%s%s%s port %d",
			 strchr(addr, ':') ? "[" : "", addr, strchr(addr, ':') ? "]" : "",
			 opt.target.port);
	else
		snprintf(target_desc, sizeof(target_desc), "%s (%s) port %d", bare,
			 pick ? addr : "every address", opt.target.port);
	if (!pick) {
		freeaddrinfo(res);
		fatal("cannot connect to %s: %s (%s)", target_desc, cl_errname(err),
		      strerror(err));
	}
	memcpy(&dst, pick->ai_addr, pick->ai_addrlen);
	dstlen = pick->ai_addrlen;
	freeaddrinfo(res);
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
	struct epoll_event *events;
	struct measured m = { .srv_s = -1, .rss_kb = -1 };
	uint64_t now, t_conn_deadline, t_meas0 = 0, t_meas1 = 0, cli0 = 0, cli1 = 0;
	uint64_t t_drain_end;
	long long srv0 = -1, srv1 = -1;
	unsigned long i, n_connected = 0;

	cl_prog = "echod-bench";          /* one name in messages, however it is run */
	opt.target.port = 7;              /* RFC 862's */
	parse_args(argc, argv);
	resolve_target();
	if (opt.sources > 1 && (opt.udp || dst.ss_family != AF_INET ||
				(ntohl(((struct sockaddr_in *)&dst)->sin_addr.s_addr) >> 24) != 127))
		cl_usage_error("--sources is for TCP to a server on IPv4 loopback (127.0.0.0/8)");
	if (opt.udp && opt.payload > (dst.ss_family == AF_INET6 ? UDP_MAX_V6 : UDP_MAX_V4))
		cl_usage_error("a UDP datagram holds at most %u bytes over IPv%c",
			       dst.ss_family == AF_INET6 ? UDP_MAX_V6 : UDP_MAX_V4,
			       dst.ss_family == AF_INET6 ? '6' : '4');
	signal(SIGPIPE, SIG_IGN);
	(void)prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);   /* ns-precise open-loop timers */
	raise_nofile();
	pin();
	make_table();
	hist.min = lag.min = UINT64_MAX;
	if (opt.server_pid > 0 && proc_cpu_ns(opt.server_pid) < 0)
		fatal("cannot read /proc/%ld/stat", opt.server_pid);

	conns = calloc(opt.target.conns, sizeof(*conns));
	events = calloc(MAX_EVENTS, sizeof(*events));
	if (!conns || !events)
		fatal("out of memory");
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		fatal("epoll_create1: %s (%s)", cl_errname(errno), strerror(errno));

	if (opt.udp)
		udp_alloc();

	/* --- connect everything first (UDP: at once) */
	for (i = 0; i < opt.target.conns; i++) {
		conns[i].idx = (uint32_t)i;
		conns[i].key = cl_conn_key(cl_mix64(opt.seed), i);
		if (opt.udp) {
			conns[i].slot = udp_slots + i * opt.window;
			udp_open(&conns[i]);
			n_connected++;
		} else {
			conn_open(&conns[i]);
		}
	}
	n_alive = opt.target.conns;
	t_conn_deadline = cl_now_ns() + (uint64_t)(opt.connect_timeout * 1e9);
	while (n_connected < opt.target.conns) {
		int n, k;

		now = cl_now_ns();
		if (now >= t_conn_deadline)
			fatal("cannot connect to %s: timed out after %g s (%lu of %lu connected)",
			      target_desc, opt.connect_timeout, n_connected, opt.target.conns);
		n = wait_events(events, now, t_conn_deadline);
		for (k = 0; k < n; k++) {
			struct conn *c = &conns[events[k].data.u32];

			if (c->state == C_CONNECTING) {
				handle_event(&events[k], &now);
				if (c->state == C_IDLE)
					n_connected++;
			}
		}
	}

	/* --- run */
	t0 = cl_now_ns();
	w_start = t0 + (uint64_t)(opt.warmup * 1e9);
	w_end = w_start + (uint64_t)(opt.duration * 1e9);
	if (opt.rate > 0) {
		interval_ns = 1e9 / opt.rate;
		heap = calloc(opt.target.conns, sizeof(*heap));
		if (!heap)
			fatal("out of memory");
		now = cl_now_ns();
		for (i = 0; i < opt.target.conns; i++)
			open_next(&conns[i], now);
	} else {
		for (i = 0; i < opt.target.conns; i++) {
			if (opt.udp)
				udp_fill(&conns[i], cl_now_ns());
			else
				req_start(&conns[i], cl_now_ns());
		}
	}
	if (w_start == t0) {
		measuring = true;
		t_meas0 = t0;
		cli0 = self_cpu_ns();
		if (opt.server_pid > 0)
			srv0 = proc_cpu_ns(opt.server_pid);
	}
	now = cl_now_ns();
	for (;;) {
		int n, k;

		n = wait_events(events, now, next_wakeup(now));
		now = cl_now_ns();
		for (k = 0; k < n; k++)
			handle_event(&events[k], &now);
		now = cl_now_ns();
		if (!measuring && t_meas0 == 0 && now >= w_start) {
			measuring = true;
			t_meas0 = now;
			cli0 = self_cpu_ns();
			if (opt.server_pid > 0)
				srv0 = proc_cpu_ns(opt.server_pid);
		}
		if (measuring && now >= w_end) {
			measuring = false;
			t_meas1 = now;
			cli1 = self_cpu_ns();
			if (opt.server_pid > 0) {
				srv1 = proc_cpu_ns(opt.server_pid);
				m.rss_kb = proc_rss_kb(opt.server_pid);
			}
			break;
		}
		if (opt.rate > 0)
			schedule(now);
		if (opt.udp)
			udp_expire(now, false);
	}

	/* --- open loop: let the requests due in the window finish; UDP: the
	 * datagrams in flight come back or time out */
	if (opt.rate > 0 || opt.udp) {
		t_drain_end = now + (uint64_t)(opt.drain * 1e9);
		for (;;) {
			uint64_t until = t_drain_end;
			int n, k;

			now = cl_now_ns();
			if (opt.rate > 0)
				schedule(now);
			if (opt.udp)
				udp_expire(now, false);
			if (all_window_done())
				break;
			if (now >= t_drain_end) {
				if (opt.rate > 0)
					m.unfinished = record_unfinished(now);
				if (opt.udp)
					udp_expire(now, true);
				break;
			}
			if (heap_len && conns[heap[0]].next_due < until)
				until = conns[heap[0]].next_due;
			if (opt.udp && next_expiry < until)
				until = next_expiry;
			n = wait_events(events, now, until);
			for (k = 0; k < n; k++)
				handle_event(&events[k], &now);
		}
	}
	for (i = 0; i < opt.target.conns; i++)
		if (conns[i].fd >= 0)
			close(conns[i].fd);

	/* --- report */
	m.elapsed = (double)(t_meas1 - t_meas0) / 1e9;
	if (srv0 >= 0 && srv1 >= 0)
		m.srv_s = (double)(srv1 - srv0) / 1e9;
	m.cli_ns = cli1 - cli0;
	report(&m);
	fflush(stdout);
	if (done_in_window == 0 && hist.count == m.unfinished)
		fatal("no echo: %s answered none of the %s due in the %g s window",
		      target_desc, opt.udp ? "datagrams" : "requests", opt.duration);
	close(epfd);
	free(events);
	free(heap);
	free(conns);
	free(udp_slots);
	free(rbuf);
	free(table);
	return 0;
}
