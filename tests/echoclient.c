/* echoclient.c - echod test client: many connections, every byte checked.
 *
 * Single-threaded, non-blocking sockets on one edge-triggered epoll set.
 * Connection I sends a deterministic byte stream: the bytes at offsets
 * 8b..8b+7 are the little-endian splitmix64 output for counter b under a
 * key derived from (seed, I).  The stream can be regenerated at any offset,
 * so the reader checks what comes back against freshly generated blocks
 * (memcmp) and the writer regenerates whatever a short write left unsent.
 * The generator, the option parsers and the other helpers it shares with
 * bench/echod-bench are in client/clientlib.c.
 *
 * Output: "ok conns=N bytes_sent=X bytes_received=Y elapsed_ms=Z" and exit
 * 0; "FAIL ..." and exit 1; usage errors exit 2.  With --no-read-ms a line
 * "stalled_sent=X" comes first, with --hold a line "holding=N" when the
 * hold starts and "hold_closed=N" (the connections the peer closed during
 * the hold) when it ends; in pingpong mode a line "rtt_count=N
 * rtt_p50_us=A rtt_p99_us=B rtt_max_us=C" (round trip of each chunk).
 * elapsed_ms does not include the hold.
 *
 * Load options: --bind spreads the connections over source addresses,
 * --concurrency caps how many are open at once (the others wait their
 * turn), --duration keeps every connection slot busy with new connections
 * until the time is up, --interval paces pingpong chunks.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client/clientlib.h"

#define RBUF_SIZE      (256 * 1024)      /* one read, checked at once */
#define STEP_BUDGET    (1024 * 1024)     /* bytes moved per turn, for fairness */
#define MAX_EVENTS     1024
#define BIND_MAX       65536             /* source addresses in a --bind range */
#define RTT_MAX        (4u << 20)        /* round trips recorded */

enum mode { MODE_STREAM, MODE_PINGPONG };

enum cstate {
	C_IDLE = 0,       /* not connected yet */
	C_CONNECTING,
	C_ACTIVE,
	C_DONE,           /* succeeded; fd still open while held */
	C_CLOSED,         /* succeeded, fd closed */
};

struct conn {
	int fd;
	uint8_t state;
	bool r_ready;      /* edge-triggered: readable until EAGAIN */
	bool w_ready;
	bool wr_shut;
	bool in_ready;     /* queued on the ready list */
	bool pacing;       /* pingpong --interval: waiting before the next chunk */
	uint32_t idx;
	uint32_t gen;      /* bumped when the slot takes a new connection */
	uint64_t serial;   /* connection number: payload key, source address */
	uint64_t key;      /* payload generator key */
	uint64_t total;    /* bytes to send */
	uint64_t limit;    /* bytes to send before stopping (--rst-after) */
	uint64_t sent;
	uint64_t received;
	uint64_t chunk_end;  /* pingpong: end of the chunk in flight */
	uint64_t chunk_t0;   /* pingpong: when its first byte was sent, us */
	uint64_t pace_due;   /* --interval: when the next chunk may go, ms */
	uint64_t rng;        /* chunk sizes */
};

static struct {
	struct cl_target target;
	uint64_t bytes;
	uint64_t min, max;
	bool have_bytes, have_min, have_max;
	uint64_t seed;
	uint64_t chunk;
	bool random_chunks;
	enum mode mode;
	bool mode_given;
	long no_read_ms;
	bool half_close;
	bool rst;
	uint64_t rst_after;
	bool expect_close;
	long hold_ms;
	unsigned long connect_rate;  /* per ms, 0 = unlimited */
	double timeout_s;
	const char *bind;            /* source address or IPv4 range */
	unsigned long concurrency;   /* open at once, 0 = all */
	double duration_s;           /* 0 = a fixed number of connections */
	long interval_ms;
	unsigned long rst_every;     /* every Nth closes with an RST */
} opt = {
	.target = CL_TARGET_DEFAULT(10000000),
	.seed = 1,
	.chunk = 64 * 1024,
	.mode = MODE_STREAM,
	.timeout_s = 60,
};

static struct conn *conns;
static int epfd;
static struct sockaddr_storage dst;
static socklen_t dstlen;
static uint8_t *wbuf, *rbuf, *ebuf;
/* file scope, as the buffers: fail() exit()s from anywhere, and
 * LeakSanitizer must still see them reachable */
static struct epoll_event *events;
static uint32_t *readyq;             /* ring of conn indices */
static size_t rq_head, rq_len;
static unsigned long n_started, n_finished;
static unsigned long n_first;         /* slots that took their first connection */
static uint64_t recycled_sent, recycled_received;   /* --duration: slots reused */
static uint64_t t_start, t_stall_end, t_deadline;
static bool stalled;
static unsigned long hold_closed;
static struct sockaddr_storage *srcs;   /* --bind */
static socklen_t srclen;
static size_t nsrcs;
static uint64_t t_end;                  /* --duration: no new connection after */
static uint32_t *pacq;                  /* --interval: FIFO of slots, by due time */
static size_t pq_head, pq_len;
static uint32_t *rtts;                  /* pingpong round trips, us */
static size_t n_rtts;
static sigset_t sig_wait_mask;          /* the hold's wait: SIGUSR1 unblocked */
static volatile sig_atomic_t hold_stop;

/* ---------------------------------------------------------------- utils */

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
	va_list ap;

	fputs("FAIL ", stdout);
	va_start(ap, fmt);
	vfprintf(stdout, fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
	exit(1);
}

/* ------------------------------------------------------------ generator */

/* xorshift64* for chunk sizes */
static inline uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * UINT64_C(0x2545f4914f6cdd1d);
}

/* ------------------------------------------------------------- options */

static void usage(FILE *f)
{
	fprintf(f,
"Usage: %s -p PORT [OPTION]...\n"
"Open connections to an RFC 862 echo server, send a deterministic payload on\n"
"each and check that every byte comes back.\n"
"\n"
"  -H, --host ADDR        server address, IPv4 or IPv6 literal (default 127.0.0.1)\n"
"  -p, --port N           server port (required)\n"
"  -c, --conns N          concurrent connections (default 1)\n"
"  -n, --bytes N          bytes each connection sends (suffix k/m/g; default 0)\n"
"      --min N --max N    random size per connection in [min,max] instead of -n\n"
"  -s, --seed N           payload and size seed (default 1)\n"
"      --chunk N          max bytes per write (default 64k)\n"
"      --random-chunks    random write sizes in [1,chunk]\n"
"      --mode MODE        stream (full duplex, default) or pingpong\n"
"                         (write one chunk, read it back, repeat)\n"
"      --no-read-ms MS    do not read during the first MS ms, only write; then\n"
"                         stream; prints stalled_sent=X\n"
"      --half-close       shutdown(SHUT_WR) after sending, then expect every\n"
"                         byte back followed by EOF\n"
"      --rst-after N      send up to N bytes (reading as it goes), then close\n"
"                         with an RST (SO_LINGER 0)\n"
"      --expect-close     expect the server to close each connection (EOF or\n"
"                         RST) without echoing anything\n"
"      --hold MS          after success keep the connections open MS ms (less\n"
"                         if the peer closes them all); prints holding=N\n"
"                         first, then hold_closed=N (closed by the peer)\n"
"      --connect-rate N   at most N connects per millisecond\n"
"      --bind ADDR        source address of every connection; FIRST-LAST (IPv4)\n"
"                         spreads them round-robin over a range (more ports)\n"
"      --concurrency K    at most K connections open at once (of -c N); the\n"
"                         next starts when one ends\n"
"      --duration S       -c N is the number of slots: each slot opens a new\n"
"                         connection when its last one ends, until S seconds\n"
"                         have passed; conns= counts every connection\n"
"      --interval MS      pingpong: wait MS ms after each chunk's echo\n"
"      --rst-every N      every Nth connection closes with an RST (SO_LINGER\n"
"                         0) once its echo is verified\n"
"  -t, --timeout S        overall deadline in seconds (default 60)\n"
"  -h, --help             this help\n"
"\n"
"Prints 'ok conns=N bytes_sent=X bytes_received=Y elapsed_ms=Z' and exits 0,\n"
"or prints 'FAIL ...' and exits 1; exits 2 on usage errors.  Pingpong adds\n"
"'rtt_count=N rtt_p50_us=A rtt_p99_us=B rtt_max_us=C'.  SIGUSR1 ends a --hold.\n", cl_prog);
}

enum {
	OPT_MIN = 256, OPT_MAX, OPT_CHUNK, OPT_RANDOM_CHUNKS, OPT_MODE,
	OPT_NO_READ_MS, OPT_HALF_CLOSE, OPT_RST_AFTER, OPT_EXPECT_CLOSE,
	OPT_HOLD, OPT_CONNECT_RATE, OPT_BIND, OPT_CONCURRENCY, OPT_DURATION,
	OPT_INTERVAL, OPT_RST_EVERY,
};

static const struct option longopts[] = {
	CL_TARGET_OPTIONS,
	{ "bytes",         required_argument, NULL, 'n' },
	{ "min",           required_argument, NULL, OPT_MIN },
	{ "max",           required_argument, NULL, OPT_MAX },
	{ "seed",          required_argument, NULL, 's' },
	{ "chunk",         required_argument, NULL, OPT_CHUNK },
	{ "random-chunks", no_argument,       NULL, OPT_RANDOM_CHUNKS },
	{ "mode",          required_argument, NULL, OPT_MODE },
	{ "no-read-ms",    required_argument, NULL, OPT_NO_READ_MS },
	{ "half-close",    no_argument,       NULL, OPT_HALF_CLOSE },
	{ "rst-after",     required_argument, NULL, OPT_RST_AFTER },
	{ "expect-close",  no_argument,       NULL, OPT_EXPECT_CLOSE },
	{ "hold",          required_argument, NULL, OPT_HOLD },
	{ "connect-rate",  required_argument, NULL, OPT_CONNECT_RATE },
	{ "bind",          required_argument, NULL, OPT_BIND },
	{ "concurrency",   required_argument, NULL, OPT_CONCURRENCY },
	{ "duration",      required_argument, NULL, OPT_DURATION },
	{ "interval",      required_argument, NULL, OPT_INTERVAL },
	{ "rst-every",     required_argument, NULL, OPT_RST_EVERY },
	{ "timeout",       required_argument, NULL, 't' },
	CL_HELP_OPTION,
	{ NULL, 0, NULL, 0 },
};

/* One of the program's own options (cl_parse_options() handles -H, -p, -h). */
static void on_option(int ch, const char *arg)
{
	switch (ch) {
	case 'n':
		opt.bytes = cl_opt_size("byte count", arg);
		opt.have_bytes = true;
		break;
	case OPT_MIN:
		opt.min = cl_opt_size("--min", arg);
		opt.have_min = true;
		break;
	case OPT_MAX:
		opt.max = cl_opt_size("--max", arg);
		opt.have_max = true;
		break;
	case 's':
		opt.seed = cl_opt_seed(arg);
		break;
	case OPT_CHUNK:
		opt.chunk = cl_opt_size("--chunk", arg);
		if (opt.chunk < 1 || opt.chunk > 64 * 1024 * 1024)
			cl_usage_error("--chunk must be in 1..64M");
		break;
	case OPT_RANDOM_CHUNKS:
		opt.random_chunks = true;
		break;
	case OPT_MODE:
		if (strcmp(arg, "stream") == 0)
			opt.mode = MODE_STREAM;
		else if (strcmp(arg, "pingpong") == 0)
			opt.mode = MODE_PINGPONG;
		else
			cl_usage_error("invalid mode '%s' (stream or pingpong)", arg);
		opt.mode_given = true;
		break;
	case OPT_NO_READ_MS:
		opt.no_read_ms = cl_opt_long("--no-read-ms", arg, 0, 86400000);
		break;
	case OPT_HALF_CLOSE:
		opt.half_close = true;
		break;
	case OPT_RST_AFTER:
		opt.rst_after = cl_opt_size("--rst-after", arg);
		opt.rst = true;
		break;
	case OPT_EXPECT_CLOSE:
		opt.expect_close = true;
		break;
	case OPT_HOLD:
		opt.hold_ms = cl_opt_long("--hold", arg, 0, 86400000);
		break;
	case OPT_CONNECT_RATE:
		opt.connect_rate = (unsigned long)cl_opt_long("--connect-rate", arg, 1, 10000000);
		break;
	case OPT_BIND:
		opt.bind = arg;
		break;
	case OPT_CONCURRENCY:
		opt.concurrency = (unsigned long)cl_opt_long("--concurrency", arg, 1, 10000000);
		break;
	case OPT_DURATION:
		if (cl_parse_double(arg, &opt.duration_s) < 0 || !(opt.duration_s > 0) ||
		    opt.duration_s > 86400 * 365)
			cl_usage_error("invalid duration '%s'", arg);
		break;
	case OPT_INTERVAL:
		opt.interval_ms = cl_opt_long("--interval", arg, 1, 86400000);
		break;
	case OPT_RST_EVERY:
		opt.rst_every = (unsigned long)cl_opt_long("--rst-every", arg, 1, 10000000);
		break;
	case 't':
		if (cl_parse_double(arg, &opt.timeout_s) < 0 || !(opt.timeout_s > 0) ||
		    opt.timeout_s > 86400 * 365)
			cl_usage_error("invalid timeout '%s'", arg);
		break;
	}
}

static void parse_args(int argc, char **argv)
{
	cl_parse_options(argc, argv, "H:p:c:n:s:t:h", longopts, &opt.target, usage, on_option);
	if (opt.have_min != opt.have_max)
		cl_usage_error("--min and --max go together");
	if (opt.have_min && opt.have_bytes)
		cl_usage_error("--bytes and --min/--max exclude each other");
	if (opt.have_min && opt.min > opt.max)
		cl_usage_error("--min is above --max");
	if (opt.no_read_ms && opt.mode == MODE_PINGPONG)
		cl_usage_error("--no-read-ms works in stream mode only");
	if (opt.half_close + opt.rst + opt.expect_close > 1)
		cl_usage_error("--half-close, --rst-after and --expect-close exclude each other");
	if (opt.interval_ms && opt.mode != MODE_PINGPONG)
		cl_usage_error("--interval works in pingpong mode only");
	if (opt.duration_s && (opt.hold_ms || opt.no_read_ms || opt.concurrency))
		cl_usage_error("--duration excludes --hold, --no-read-ms and --concurrency");
	if (opt.duration_s && opt.duration_s >= opt.timeout_s)
		cl_usage_error("--duration must be below --timeout");
	if (opt.rst_every && (opt.rst || opt.hold_ms))
		cl_usage_error("--rst-every excludes --rst-after and --hold");
}

/* --bind ADDR or FIRST-LAST (IPv4): the source addresses, in srcs. */
static void setup_bind(void)
{
	char first[INET6_ADDRSTRLEN], *dash;
	struct in_addr a, b;
	uint32_t lo, hi;

	if (!opt.bind)
		return;
	dash = strchr(opt.bind, '-');
	if (!dash) {
		struct in6_addr a6;

		srcs = calloc(1, sizeof(*srcs));
		if (!srcs)
			fail("out of memory");
		nsrcs = 1;
		if (inet_pton(AF_INET, opt.bind, &a) == 1) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&srcs[0];

			sin->sin_family = AF_INET;
			sin->sin_addr = a;
			srclen = sizeof(*sin);
		} else if (inet_pton(AF_INET6, opt.bind, &a6) == 1) {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&srcs[0];

			sin6->sin6_family = AF_INET6;
			sin6->sin6_addr = a6;
			srclen = sizeof(*sin6);
		} else {
			cl_usage_error("invalid --bind '%s' (an address or an IPv4 FIRST-LAST range)",
				    opt.bind);
		}
	} else {
		if ((size_t)(dash - opt.bind) >= sizeof(first))
			cl_usage_error("invalid --bind '%s'", opt.bind);
		memcpy(first, opt.bind, (size_t)(dash - opt.bind));
		first[dash - opt.bind] = '\0';
		if (inet_pton(AF_INET, first, &a) != 1 || inet_pton(AF_INET, dash + 1, &b) != 1)
			cl_usage_error("invalid --bind range '%s' (IPv4 FIRST-LAST)", opt.bind);
		lo = ntohl(a.s_addr);
		hi = ntohl(b.s_addr);
		if (lo > hi || hi - lo >= BIND_MAX)
			cl_usage_error("invalid --bind range '%s' (FIRST <= LAST, at most %u addresses)",
				    opt.bind, BIND_MAX);
		nsrcs = (size_t)(hi - lo) + 1;
		srcs = calloc(nsrcs, sizeof(*srcs));
		if (!srcs)
			fail("out of memory");
		for (size_t i = 0; i < nsrcs; i++) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&srcs[i];

			sin->sin_family = AF_INET;
			sin->sin_addr.s_addr = htonl(lo + (uint32_t)i);
		}
		srclen = sizeof(struct sockaddr_in);
	}
	if (srcs[0].ss_family != dst.ss_family)
		cl_usage_error("--bind '%s' and --host '%s' are not the same address family",
			    opt.bind, opt.target.host);
}

/* ---------------------------------------------------------- connections */

static void ready_push(struct conn *c)
{
	if (c->in_ready)
		return;
	c->in_ready = true;
	readyq[(rq_head + rq_len) % opt.target.conns] = c->idx;
	rq_len++;
}

static struct conn *ready_pop(void)
{
	struct conn *c = &conns[readyq[rq_head]];

	rq_head = (rq_head + 1) % opt.target.conns;
	rq_len--;
	c->in_ready = false;
	return c;
}

static void conn_start(struct conn *c);

/* Payload key, sizes and counters of connection number serial in slot c. */
static void conn_init(struct conn *c, uint64_t serial)
{
	c->fd = -1;
	c->state = C_IDLE;
	c->r_ready = c->w_ready = c->wr_shut = c->pacing = false;
	c->serial = serial;
	c->key = cl_conn_key(cl_seed_key(opt.seed), serial);
	c->rng = cl_mix64(c->key ^ UINT64_C(0xa54ff53a5f1d36f1)) | 1;
	if (opt.have_min) {
		uint64_t span = opt.max - opt.min;
		uint64_t r = cl_mix64(c->key + UINT64_C(0x510e527fade682d1));

		c->total = opt.min + (span == UINT64_MAX ? r : r % (span + 1));
	} else {
		c->total = opt.bytes;
	}
	if (opt.expect_close)
		c->total = opt.have_bytes || opt.have_min ? c->total : 0;
	c->limit = c->total;
	if (opt.rst && opt.rst_after < c->limit)
		c->limit = opt.rst_after;
	c->sent = c->received = 0;
	c->chunk_end = c->chunk_t0 = c->pace_due = 0;
}

/* c's socket is closed and its connection counted as finished: with
 * --duration, the slot takes a new connection while there is time. */
static void conn_closed(struct conn *c)
{
	c->fd = -1;
	c->state = C_CLOSED;
	n_finished++;
	if (opt.duration_s > 0 && cl_now_ms() < t_end) {
		recycled_sent += c->sent;
		recycled_received += c->received;
		c->gen++;
		conn_init(c, n_started);
		conn_start(c);
	}
}

static void conn_rst_close(struct conn *c)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	if (setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) < 0)
		fail("conn=%u setsockopt(SO_LINGER): %s (%s)", c->idx, cl_errname(errno), strerror(errno));
	close(c->fd);
	conn_closed(c);
}

static void conn_finish(struct conn *c)
{
	if (opt.hold_ms > 0 && c->fd >= 0) {
		n_finished++;
		c->state = C_DONE;
		return;
	}
	if (c->fd >= 0 && opt.rst_every && c->serial % opt.rst_every == opt.rst_every - 1) {
		conn_rst_close(c);
		return;
	}
	if (c->fd >= 0)
		close(c->fd);
	conn_closed(c);
}

static void conn_start(struct conn *c)
{
	struct epoll_event ev;
	int one = 1;
	int fd;

	fd = socket(dst.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		fail("conn=%u socket: %s (%s)", c->idx, cl_errname(errno), strerror(errno));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (nsrcs) {
		const struct sockaddr_storage *src = &srcs[c->serial % nsrcs];

		/* the port is chosen at connect(), for the whole 4-tuple */
		if (src->ss_family == AF_INET)
			(void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(fd, (const struct sockaddr *)src, srclen) < 0)
			fail("conn=%u bind: %s (%s)", c->idx, cl_errname(errno), strerror(errno));
	}
	c->fd = fd;
	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
	ev.data.u64 = (uint64_t)c->gen << 32 | c->idx;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		fail("conn=%u epoll_ctl: %s (%s)", c->idx, cl_errname(errno), strerror(errno));
	n_started++;
	if (connect(fd, (struct sockaddr *)&dst, dstlen) == 0) {
		c->state = C_ACTIVE;
		c->r_ready = c->w_ready = true;
		ready_push(c);
		return;
	}
	if (errno != EINPROGRESS)
		fail("conn=%u connect: %s (%s)", c->idx, cl_errname(errno), strerror(errno));
	c->state = C_CONNECTING;
}

/* Check n bytes just read into rbuf against the stream. */
static void check_bytes(struct conn *c, size_t n)
{
	size_t off = 0;

	while (off < n) {
		size_t len = n - off > RBUF_SIZE ? RBUF_SIZE : n - off;

		cl_fill_stream(ebuf, c->key, c->received + off, len);
		if (memcmp(rbuf + off, ebuf, len) != 0) {
			size_t k = 0;

			while (rbuf[off + k] == ebuf[k])
				k++;
			fail("conn=%u offset=%" PRIu64 " expected=0x%02x got=0x%02x",
			     c->idx, c->received + off + k, ebuf[k], rbuf[off + k]);
		}
		off += len;
	}
}

/* The peer closed (EOF or reset) while we were holding a finished conn. */
static void held_closed(struct conn *c)
{
	hold_closed++;
	close(c->fd);
	c->fd = -1;
	c->state = C_CLOSED;
}

/* A held connection got an event: anything but EOF/RST is an error. */
static void conn_held_event(struct conn *c)
{
	ssize_t n;

	if (c->fd < 0 || c->wr_shut)    /* half-closed conns already saw EOF */
		return;
	n = recv(c->fd, rbuf, RBUF_SIZE, 0);
	if (n > 0)
		fail("conn=%u extra bytes: %zd after all %" PRIu64 " came back",
		     c->idx, n, c->received);
	if (n == 0 || errno == ECONNRESET || errno == EPIPE)
		held_closed(c);
	else if (errno != EAGAIN && errno != EINTR)
		fail("conn=%u recv: %s (%s)", c->idx, cl_errname(errno), strerror(errno));
}

static void conn_connected(struct conn *c)
{
	int err = cl_socket_error(c->fd);

	if (err == 0) {
		c->state = C_ACTIVE;
		c->r_ready = c->w_ready = true;
		return;
	}
	if (opt.expect_close && (err == ECONNRESET || err == EPIPE)) {
		close(c->fd);
		conn_closed(c);
		return;
	}
	fail("conn=%u connect: %s (%s)", c->idx, cl_errname(err), strerror(err));
}

/* Pingpong: the chunk in flight came back whole.  Record its round trip
 * and, with --interval, hold the next chunk back. */
static void chunk_echoed(struct conn *c)
{
	if (n_rtts < RTT_MAX) {
		uint64_t us = cl_now_us() - c->chunk_t0;

		rtts[n_rtts++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
	}
	if (opt.interval_ms && c->received < c->limit) {
		c->pacing = true;
		c->pace_due = cl_now_ms() + (uint64_t)opt.interval_ms;
		pacq[(pq_head + pq_len) % opt.target.conns] = c->idx;   /* due times only grow */
		pq_len++;
	}
}

/* Paced connections whose wait is over may send again. */
static void pace_release(uint64_t now)
{
	while (pq_len) {
		struct conn *c = &conns[pacq[pq_head]];

		if (c->pacing && c->pace_due > now)
			return;
		pq_head = (pq_head + 1) % opt.target.conns;
		pq_len--;
		if (c->pacing) {
			c->pacing = false;
			ready_push(c);
		}
	}
}

/* Size of the next write. */
static uint64_t next_chunk(struct conn *c)
{
	if (opt.random_chunks)
		return 1 + rng_next(&c->rng) % opt.chunk;
	return opt.chunk;
}

/* Do what the connection can do until it would block or its turn ends. */
static void conn_step(struct conn *c)
{
	uint64_t budget = STEP_BUDGET;
	bool reading = !stalled;

	if (c->state == C_CONNECTING) {
		conn_connected(c);
		if (c->state != C_ACTIVE)
			return;
	}
	if (c->state == C_DONE) {
		conn_held_event(c);
		return;
	}
	if (c->state != C_ACTIVE)
		return;

	for (;;) {
		bool progress = false;

		/* --- write */
		if (c->w_ready && c->sent < c->limit && !c->pacing &&
		    !(opt.mode == MODE_PINGPONG && c->received < c->sent && c->sent == c->chunk_end)) {
			uint64_t want;
			ssize_t n;

			if (opt.mode == MODE_PINGPONG) {
				if (c->sent == c->chunk_end) {
					c->chunk_t0 = cl_now_us();
					c->chunk_end = c->sent + next_chunk(c);
					if (c->chunk_end > c->limit)
						c->chunk_end = c->limit;
				}
				want = c->chunk_end - c->sent;
			} else {
				want = next_chunk(c);
				if (want > c->limit - c->sent)
					want = c->limit - c->sent;
			}
			cl_fill_stream(wbuf, c->key, c->sent, want);
			n = send(c->fd, wbuf, want, MSG_NOSIGNAL);
			if (n > 0) {
				c->sent += (uint64_t)n;
				budget = (uint64_t)n > budget ? 0 : budget - (uint64_t)n;
				progress = true;
			} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				c->w_ready = false;
			} else if (n < 0 && errno == EINTR) {
				progress = true;
			} else if (opt.expect_close && (errno == EPIPE || errno == ECONNRESET)) {
				close(c->fd);
				conn_closed(c);
				return;
			} else {
				fail("conn=%u send at %" PRIu64 ": %s (%s)", c->idx, c->sent,
				     cl_errname(errno), strerror(errno));
			}
		}

		/* --- end of sending */
		if (c->sent == c->limit) {
			if (opt.rst) {
				conn_rst_close(c);
				return;
			}
			if (opt.half_close && !c->wr_shut) {
				/* ENOTCONN: the peer reset; the read below reports it */
				if (shutdown(c->fd, SHUT_WR) < 0 && errno != ENOTCONN)
					fail("conn=%u shutdown: %s (%s)", c->idx, cl_errname(errno),
					     strerror(errno));
				c->wr_shut = true;
				c->r_ready = true;
			}
		}

		/* --- read */
		if (reading && c->r_ready) {
			ssize_t n = recv(c->fd, rbuf, RBUF_SIZE, 0);

			if (n > 0) {
				uint64_t avail = c->sent - c->received;

				if (opt.expect_close)
					fail("conn=%u expected close, got %zd bytes", c->idx, n);
				if ((uint64_t)n > avail) {
					check_bytes(c, avail);
					fail("conn=%u extra bytes: received %" PRIu64 " of %" PRIu64
					     " sent (%s)", c->idx, c->received + (uint64_t)n, c->sent,
					     c->sent == c->total ? "all sent" : "more than sent so far");
				}
				check_bytes(c, (size_t)n);
				c->received += (uint64_t)n;
				budget = (uint64_t)n > budget ? 0 : budget - (uint64_t)n;
				progress = true;
				if (opt.mode == MODE_PINGPONG && c->received == c->chunk_end)
					chunk_echoed(c);
			} else if (n == 0) {
				if (opt.expect_close || (opt.half_close && c->received == c->total)) {
					conn_finish(c);
					return;
				}
				fail("conn=%u early EOF at %" PRIu64 " of %" PRIu64,
				     c->idx, c->received, c->total);
			} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
				c->r_ready = false;
			} else if (errno == EINTR) {
				progress = true;
			} else if (opt.expect_close && (errno == ECONNRESET || errno == EPIPE)) {
				close(c->fd);
				conn_closed(c);
				return;
			} else {
				fail("conn=%u recv at %" PRIu64 " of %" PRIu64 ": %s (%s)", c->idx,
				     c->received, c->total, cl_errname(errno), strerror(errno));
			}
		}

		/* --- done? */
		if (!opt.half_close && !opt.expect_close && !opt.rst && c->received == c->total) {
			conn_finish(c);
			return;
		}
		if (!progress)
			return;
		if (budget == 0) {
			ready_push(c);
			return;
		}
	}
}

static void handle_event(const struct epoll_event *ev)
{
	struct conn *c = &conns[(uint32_t)ev->data.u64];

	if (c->gen != (uint32_t)(ev->data.u64 >> 32))
		return;     /* for the slot's previous connection */
	if (ev->events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		c->r_ready = true;
	if (ev->events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		c->w_ready = true;
	conn_step(c);
}

static void fail_timeout(void)
{
	unsigned long i;

	for (i = 0; i < opt.target.conns; i++) {
		struct conn *c = &conns[i];

		if (c->state == C_IDLE || c->state == C_CONNECTING || c->state == C_ACTIVE)
			fail("timeout: conn %lu at sent=%" PRIu64 " received=%" PRIu64
			     " (of %" PRIu64 "%s)", i, c->sent, c->received, c->total,
			     c->state == C_IDLE ? ", not connected" :
			     c->state == C_CONNECTING ? ", connecting" : "");
	}
	fail("timeout");
}

/* ------------------------------------------------------------------ main */

static void on_usr1(int sig)
{
	(void)sig;
	hold_stop = 1;
}

/* SIGUSR1 ends a --hold early; it stays blocked except in the hold's wait. */
static void setup_hold_signal(void)
{
	struct sigaction sa;
	sigset_t set;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, &sig_wait_mask);
	sigdelset(&sig_wait_mask, SIGUSR1);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Pingpong: the chunks' round trips, sorted, as percentiles. */
static void print_rtts(void)
{
	uint32_t p50 = 0, p99 = 0, max = 0;

	if (n_rtts) {
		qsort(rtts, n_rtts, sizeof(*rtts), cmp_u32);
		p50 = rtts[(n_rtts - 1) / 2];
		p99 = rtts[(n_rtts * 99 + 99) / 100 - 1];   /* nearest rank */
		max = rtts[n_rtts - 1];
	}
	printf("rtt_count=%zu rtt_p50_us=%" PRIu32 " rtt_p99_us=%" PRIu32 " rtt_max_us=%" PRIu32 "\n",
	       n_rtts, p50, p99, max);
}

static void setup_conns(void)
{
	unsigned long i;

	conns = calloc(opt.target.conns, sizeof(*conns));
	readyq = calloc(opt.target.conns, sizeof(*readyq));
	pacq = calloc(opt.target.conns, sizeof(*pacq));
	if (!conns || !readyq || !pacq)
		fail("out of memory");
	if (opt.mode == MODE_PINGPONG) {
		rtts = malloc(RTT_MAX * sizeof(*rtts));
		if (!rtts)
			fail("out of memory");
	}
	for (i = 0; i < opt.target.conns; i++) {
		conns[i].idx = (uint32_t)i;
		conn_init(&conns[i], i);
	}
}

static void start_more(uint64_t now)
{
	unsigned long allowed = opt.target.conns;

	if (opt.connect_rate) {
		uint64_t a = (now - t_start + 1) * opt.connect_rate;

		allowed = a < opt.target.conns ? (unsigned long)a : opt.target.conns;
	}
	if (opt.concurrency && n_finished + opt.concurrency < allowed)
		allowed = n_finished + opt.concurrency;
	while (n_first < allowed)
		conn_start(&conns[n_first++]);
}

static int wait_timeout(uint64_t now, uint64_t until)
{
	int t;

	if (rq_len)
		return 0;
	if (until <= now)
		return 0;
	t = until - now > 1000 ? 1000 : (int)(until - now);
	if (opt.connect_rate && n_first < opt.target.conns && t > 1)
		t = 1;
	if (stalled && t_stall_end > now && t_stall_end - now < (uint64_t)t)
		t = (int)(t_stall_end - now);
	if (pq_len) {
		uint64_t due = conns[pacq[pq_head]].pace_due;

		if (due <= now)
			t = 0;
		else if (due - now < (uint64_t)t)
			t = (int)(due - now);
	}
	return t;
}

static void run_ready(void)
{
	size_t n = rq_len;

	while (n-- && rq_len)
		conn_step(ready_pop());
}

static void end_stall(void)
{
	uint64_t sum = 0;
	unsigned long i;

	stalled = false;
	for (i = 0; i < opt.target.conns; i++) {
		sum += conns[i].sent;
		if (conns[i].state == C_ACTIVE)
			ready_push(&conns[i]);
	}
	printf("stalled_sent=%" PRIu64 "\n", sum);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	uint64_t now, t_done, sent = 0, received = 0;
	unsigned long i;

	cl_set_prog(argv[0], "echoclient");
	parse_args(argc, argv);
	cl_target_resolve(&opt.target, &dst, &dstlen);
	setup_bind();
	signal(SIGPIPE, SIG_IGN);
	setup_hold_signal();
	(void)cl_raise_nofile(NULL);
	setup_conns();

	wbuf = malloc(opt.chunk);
	rbuf = malloc(RBUF_SIZE);
	ebuf = malloc(RBUF_SIZE);
	events = calloc(MAX_EVENTS, sizeof(*events));
	if (!wbuf || !rbuf || !ebuf || !events)
		fail("out of memory");
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		fail("epoll_create1: %s (%s)", cl_errname(errno), strerror(errno));

	t_start = cl_now_ms();
	t_deadline = t_start + (uint64_t)(opt.timeout_s * 1000.0);
	if (opt.no_read_ms > 0) {
		stalled = true;
		t_stall_end = t_start + (uint64_t)opt.no_read_ms;
	}

	t_end = t_start + (uint64_t)(opt.duration_s * 1000.0);
	start_more(t_start);
	run_ready();
	while (n_first < opt.target.conns || n_finished < n_started) {
		int n, k;

		now = cl_now_ms();
		if (now >= t_deadline)
			fail_timeout();
		n = epoll_wait(epfd, events, MAX_EVENTS, wait_timeout(now, t_deadline));
		if (n < 0 && errno != EINTR)
			fail("epoll_wait: %s (%s)", cl_errname(errno), strerror(errno));
		for (k = 0; k < n; k++)
			handle_event(&events[k]);
		now = cl_now_ms();
		if (stalled && now >= t_stall_end)
			end_stall();
		pace_release(now);
		run_ready();
		if (n_first < opt.target.conns)
			start_more(now);
	}
	t_done = cl_now_ms();
	if (stalled)          /* finished before the stall ended */
		end_stall();

	sent = recycled_sent;
	received = recycled_received;
	for (i = 0; i < opt.target.conns; i++) {
		sent += conns[i].sent;
		received += conns[i].received;
	}
	if (opt.mode == MODE_PINGPONG)
		print_rtts();

	if (opt.hold_ms > 0) {
		uint64_t t_hold_end = t_done + (uint64_t)opt.hold_ms;
		unsigned long held = 0, closed_before = hold_closed;

		for (i = 0; i < opt.target.conns; i++)
			held += conns[i].state == C_DONE;
		printf("holding=%lu\n", held);
		fflush(stdout);
		for (;;) {
			int n, k;

			now = cl_now_ms();
			if (now >= t_hold_end || hold_stop || hold_closed - closed_before == held)
				break;
			/* SIGUSR1 is blocked but here: it cannot slip in unseen */
			n = epoll_pwait(epfd, events, MAX_EVENTS, wait_timeout(now, t_hold_end),
					&sig_wait_mask);
			if (n < 0 && errno != EINTR)
				fail("epoll_wait: %s (%s)", cl_errname(errno), strerror(errno));
			for (k = 0; k < n; k++) {
				struct conn *c = &conns[(uint32_t)events[k].data.u64];

				if (c->state == C_DONE)
					conn_held_event(c);
			}
		}
		for (i = 0; i < opt.target.conns; i++) {
			if (conns[i].fd >= 0) {
				close(conns[i].fd);
				conns[i].fd = -1;
			}
		}
		printf("hold_closed=%lu\n", hold_closed);
	}

	printf("ok conns=%lu bytes_sent=%" PRIu64 " bytes_received=%" PRIu64
	       " elapsed_ms=%" PRIu64 "\n", n_finished, sent, received, t_done - t_start);
	fflush(stdout);
	close(epfd);
	free(events);
	free(ebuf);
	free(rbuf);
	free(wbuf);
	free(readyq);
	free(pacq);
	free(rtts);
	free(srcs);
	free(conns);
	return 0;
}
