/* test_dgram.c - the UDP echo logic (dgram.c) with nothing but its context
 * (struct dgram_ctx): which sources are answered (IPv4, IPv6, IPv4-mapped,
 * loop ports, live changes), the per-source log limiter (once a minute per
 * source, a bounded table, no allocation), the control data built and
 * parsed (also through real loopback sockets: a UDP_SEGMENT send arrives as
 * one UDP_GRO receive; an overflowed socket reports SO_RXQ_OVFL), the
 * per-source datagram rate (rate_limited, logged once naming the limit),
 * coalescing (a table of echo sequences and the runs expected; the
 * fallback's ceiling, count and single log line; a run sent through
 * loopback arrives as its datagrams; IPV6_MTU 1280 refuses one), and the
 * counting. */
#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tap.h"
#include "counters.h"
#include "dgram.h"
#include "log.h"


static struct worker_counters ctr;
static struct dgram_ctx dc;

static void ctx_make(void)
{
	static const uint16_t loops[] = { 7, 9, 13, 19, 37 };

	memset(&ctr, 0, sizeof(ctr));
	dgram_init(&dc, &ctr, 0);
	dgram_set_params(&dc, true, true, loops, 5, NULL);
	dc.now_ms = 1000000;
}

static socklen_t addr(struct sockaddr_storage *ss, const char *text, uint16_t port)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		return sizeof(*sin);
	}
	if (inet_pton(AF_INET6, text, &sin6->sin6_addr) != 1)
		abort();
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(port);
	return sizeof(*sin6);
}

static int check(const char *text, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len = addr(&ss, text, port);

	return dgram_check(&dc, (struct sockaddr *)&ss, len, 1);
}

/* ---- stderr capture: the log lines ---- */

static int cap_fd = -1, saved_stderr = -1;

static void capture_start(void)
{
	cap_fd = memfd_create("stderr", MFD_CLOEXEC);
	saved_stderr = dup(STDERR_FILENO);
	if (cap_fd < 0 || saved_stderr < 0 || dup2(cap_fd, STDERR_FILENO) < 0)
		abort();
}

/* The lines logged since capture_start() containing what, into buf. */
static int capture_end(const char *what, char *buf, size_t size)
{
	ssize_t n;
	int lines = 0;
	char *p;

	dup2(saved_stderr, STDERR_FILENO);
	close(saved_stderr);
	n = pread(cap_fd, buf, size - 1, 0);
	close(cap_fd);
	buf[n > 0 ? n : 0] = '\0';
	for (p = buf; (p = strstr(p, what)); p++)
		lines++;
	return lines;
}

/* ---- the sources ---- */

static void test_sources(void)
{
	static const struct {
		const char *addr;
		uint16_t port;
		int want;
	} cases[] = {
		{ "127.0.0.1", 5000, 0 },
		{ "192.0.2.1", 40000, 0 },
		{ "10.0.0.255", 5000, 0 },                      /* a directed broadcast: not known here */
		{ "127.0.0.1", 0, DDROP_BAD_SOURCE + 1 },
		{ "127.0.0.1", 7, DDROP_LOOP_PORT + 1 },
		{ "127.0.0.1", 9, DDROP_LOOP_PORT + 1 },
		{ "127.0.0.1", 13, DDROP_LOOP_PORT + 1 },
		{ "127.0.0.1", 19, DDROP_LOOP_PORT + 1 },
		{ "127.0.0.1", 37, DDROP_LOOP_PORT + 1 },
		{ "127.0.0.1", 8, 0 },
		{ "0.0.0.0", 5000, DDROP_BAD_SOURCE + 1 },
		{ "0.1.2.3", 5000, DDROP_BAD_SOURCE + 1 },
		{ "224.0.0.1", 5000, DDROP_BAD_SOURCE + 1 },
		{ "239.255.255.250", 5000, DDROP_BAD_SOURCE + 1 },
		{ "255.255.255.255", 5000, DDROP_BAD_SOURCE + 1 },
		{ "::1", 5000, 0 },
		{ "2001:db8::1", 5000, 0 },
		{ "::1", 19, DDROP_LOOP_PORT + 1 },
		{ "::", 5000, DDROP_BAD_SOURCE + 1 },
		{ "ff02::1", 5000, DDROP_BAD_SOURCE + 1 },
		{ "::ffff:127.0.0.1", 5000, 0 },
		{ "::ffff:127.0.0.1", 7, DDROP_LOOP_PORT + 1 },
		{ "::ffff:224.0.0.1", 5000, DDROP_BAD_SOURCE + 1 },    /* mapped: judged as IPv4 */
		{ "::ffff:255.255.255.255", 5000, DDROP_BAD_SOURCE + 1 },
		{ "::ffff:0.0.0.0", 5000, DDROP_BAD_SOURCE + 1 },
	};
	struct sockaddr_un_like { sa_family_t f; char path[108]; } un = { AF_UNIX, "x" };
	struct sockaddr_storage ss;
	unsigned bad = 0, loop = 0;
	char buf[65536];

	ctx_make();
	capture_start();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int got = check(cases[i].addr, cases[i].port);

		tap_ok(got == cases[i].want, "dgram_check %s port %u -> %d (got %d)", cases[i].addr,
		       cases[i].port, cases[i].want, got);
		bad += cases[i].want == DDROP_BAD_SOURCE + 1;
		loop += cases[i].want == DDROP_LOOP_PORT + 1;
	}
	tap_ok(dgram_check(&dc, (struct sockaddr *)&un, sizeof(un), 1) == DDROP_BAD_SOURCE + 1,
	       "dgram_check: an AF_UNIX source is a bad source");
	bad++;
	tap_ok(dgram_check(&dc, (struct sockaddr *)&ss, (socklen_t)(addr(&ss, "::1", 5000) - 1), 1)
	       == DDROP_BAD_SOURCE + 1, "dgram_check: a short sockaddr_in6 is a bad source");
	bad++;
	capture_end("refused", buf, sizeof(buf));
	tap_ok(ctr.udp_drops[DDROP_BAD_SOURCE] == bad && ctr.udp_drops[DDROP_LOOP_PORT] == loop &&
	       ctr.udp_drops[DDROP_TRUNCATED] == 0 && ctr.udp_drops[DDROP_SEND_ERROR] == 0,
	       "dgram_check counts each drop by reason (bad_source %u, loop_port %u)", bad, loop);

	/* a GRO receive of 10 datagrams from a loop port: 10 drops */
	memset(&ctr, 0, sizeof(ctr));
	capture_start();
	tap_ok(dgram_check(&dc, (struct sockaddr *)&ss, addr(&ss, "127.0.0.1", 37), 10) ==
	       DDROP_LOOP_PORT + 1 && ctr.udp_drops[DDROP_LOOP_PORT] == 10,
	       "dgram_check counts every datagram of a coalesced receive");
	capture_end("refused", buf, sizeof(buf));

	/* udp.loop_ports applies live: [] answers every port but 0; [5000] */
	dgram_set_params(&dc, true, true, NULL, 0, NULL);
	tap_ok(check("127.0.0.1", 7) == 0 && check("127.0.0.1", 0) == DDROP_BAD_SOURCE + 1,
	       "loop_ports = []: port 7 is answered, port 0 still is not");
	{
		uint16_t p = 5000;

		dgram_set_params(&dc, true, true, &p, 1, NULL);
	}
	capture_start();
	tap_ok(check("127.0.0.1", 5000) == DDROP_LOOP_PORT + 1 && check("::1", 7) == 0,
	       "loop_ports = [5000]: 5000 is refused, 7 answered");
	capture_end("refused", buf, sizeof(buf));
}

/* ---- the log limiter ---- */

static size_t heap_in_use(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

static void test_log_limit(void)
{
	char buf[65536], text[64];
	size_t heap;
	int lines;

	ctx_make();
	heap = heap_in_use();
	capture_start();
	for (int i = 0; i < 1000; i++)
		check("127.0.0.1", 7);
	lines = capture_end("refused", buf, sizeof(buf));
	tap_ok(lines == 1 && strstr(buf, "127.0.0.1 port 7 refused (loop_port)"),
	       "1000 drops from one source in a minute: logged once (%d line(s))", lines);
	tap_diag("%.*s", (int)strcspn(buf, "\n"), buf);

	capture_start();
	dc.now_ms += SRCLOG_INTERVAL_MS - 1;
	check("127.0.0.1", 9);
	check("::ffff:127.0.0.1", 19);                  /* the same source, mapped */
	lines = capture_end("refused", buf, sizeof(buf));
	tap_ok(lines == 0, "...and not again within the minute, nor as IPv4-mapped (%d)", lines);

	capture_start();
	dc.now_ms += 1;
	check("127.0.0.1", 7);
	check("::1", 7);
	lines = capture_end("refused", buf, sizeof(buf));
	tap_ok(lines == 2 && strstr(buf, "[::1] port 7"),
	       "a minute later: logged again; another source logged too (%d)", lines);

	/* a flood from many sources: at most SRCLOG_SLOTS lines a minute */
	ctx_make();
	capture_start();
	for (int i = 0; i < 5000; i++) {
		snprintf(text, sizeof(text), "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
		check(text, 7);
	}
	lines = capture_end("refused", buf, sizeof(buf));
	tap_ok(lines > 0 && lines <= SRCLOG_SLOTS && dc.log.suppressed == 5000u - (unsigned)lines &&
	       ctr.udp_drops[DDROP_LOOP_PORT] == 5000,
	       "5000 sources in a minute: %d lines (at most %d), %llu not logged, all 5000 counted",
	       lines, SRCLOG_SLOTS, (unsigned long long)dc.log.suppressed);
	capture_start();
	dc.now_ms += SRCLOG_INTERVAL_MS;
	check("10.99.99.99", 7);
	lines = capture_end("refused", buf, sizeof(buf));
	tap_ok(lines == 1 && strstr(buf, "drop(s) from other sources not logged"),
	       "the next line says how many drops were not logged");
	tap_ok(heap_in_use() == heap, "no allocation by 6000 checks and their logging (%zu -> %zu)",
	       heap, heap_in_use());
}

/* ---- the per-source datagram rate ---- */

static void test_rate(void)
{
	struct persource_limits lim = { 0, 0, 1, 100, 4, 64 };
	struct persource *t = NULL;
	char buf[4096];
	int pass = 0, lines;
	size_t heap;

	ctx_make();
	if (persource_create(&t, 16) < 0)
		abort();
	dc.persource = t;
	tap_ok(check("192.0.2.7", 5000) == 0, "rate off: not metered, echoed");
	persource_set_limits(t, &lim);
	heap = heap_in_use();
	capture_start();
	for (int i = 0; i < 10; i++)
		pass += check("192.0.2.7", 5000) == 0;
	dc.now_ms += 20;                                /* 2 datagrams at 100/s */
	for (int i = 0; i < 10; i++)
		pass += check("192.0.2.7", 5000) == 0;
	lines = capture_end("refused (rate_limited)", buf, sizeof(buf));
	tap_ok(pass == 4 + 2 && ctr.udp_drops[DDROP_RATE_LIMITED] == 14,
	       "datagram_rate 100/s burst 4: 4 at once, 2 more 20 ms later, 14 dropped as "
	       "rate_limited (%d echoed)", pass);
	tap_ok(lines == 1 && strstr(buf, "192.0.2.7 port 5000 refused (rate_limited): exceeded "
				    "100 datagrams/s (burst 4)"),
	       "logged once, naming the limit (%d line(s))", lines);
	tap_diag("%.*s", (int)strcspn(buf, "\n"), buf);
	tap_ok(check("192.0.2.8", 5000) == 0 && check("127.0.0.1", 7) == DDROP_LOOP_PORT + 1 &&
	       ctr.udp_drops[DDROP_RATE_LIMITED] == 14,
	       "another source has its own bucket; a loop port is dropped before any bucket");
	tap_ok(heap_in_use() == heap, "no allocation by metered checks (%zu -> %zu)", heap,
	       heap_in_use());
	dc.persource = NULL;
	persource_destroy(t);
}

/* ---- control data ---- */

static void test_cmsg(void)
{
	union { char buf[DGRAM_CMSG_SPACE]; struct cmsghdr align; } cb;
	union { char buf[DGRAM_RX_CMSG_SPACE]; struct cmsghdr align; } rb;
	struct msghdr m = { .msg_control = cb.buf };
	struct cmsghdr *c;
	uint16_t gso, v16;
	uint32_t ovfl = 0, five = 5;
	bool has;
	int v;
	size_t n;

	ctx_make();
	n = dgram_put_segment(&dc, cb.buf, 1000, 3500);
	m.msg_controllen = n;
	c = CMSG_FIRSTHDR(&m);
	memcpy(&v16, c ? CMSG_DATA(c) : (unsigned char *)"", c ? sizeof(v16) : 0);
	tap_ok(n == CMSG_SPACE(sizeof(uint16_t)) && c && c->cmsg_level == IPPROTO_UDP &&
	       c->cmsg_type == UDP_SEGMENT && c->cmsg_len == CMSG_LEN(2) && v16 == 1000,
	       "dgram_put_segment: 3500 bytes of 1000-byte segments: UDP_SEGMENT 1000");
	tap_ok(dgram_put_segment(&dc, cb.buf, 1000, 1000) == 0 &&
	       dgram_put_segment(&dc, cb.buf, 0, 3500) == 0 &&
	       dgram_put_segment(&dc, cb.buf, 1000, 0) == 0,
	       "dgram_put_segment: nothing for one datagram (len <= size, or no size)");
	dgram_set_params(&dc, false, true, NULL, 0, NULL);
	tap_ok(dgram_put_segment(&dc, cb.buf, 1000, 3500) == CMSG_SPACE(sizeof(uint16_t)),
	       "dgram_put_segment: UDP_SEGMENT even once udp.gro is off (coalesced before)");

	/* a receive's: UDP_GRO then SO_RXQ_OVFL */
	memset(&rb, 0, sizeof(rb));
	m.msg_control = rb.buf;
	m.msg_controllen = CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(uint32_t));
	c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = IPPROTO_UDP;
	c->cmsg_type = UDP_GRO;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	v = 1472;
	memcpy(CMSG_DATA(c), &v, sizeof(v));
	c = CMSG_NXTHDR(&m, c);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SO_RXQ_OVFL;
	c->cmsg_len = CMSG_LEN(sizeof(uint32_t));
	memcpy(CMSG_DATA(c), &five, sizeof(five));
	dgram_parse_cmsg(&m, &gso, &ovfl, &has);
	tap_ok(gso == 1472 && has && ovfl == 5, "dgram_parse_cmsg: UDP_GRO 1472, SO_RXQ_OVFL 5");
	m.msg_controllen = 0;
	ovfl = 77;
	dgram_parse_cmsg(&m, &gso, &ovfl, &has);
	tap_ok(gso == 0 && !has && ovfl == 77, "dgram_parse_cmsg: no control data: 0, no count");
}

/* Through real sockets: a UDP_SEGMENT send arrives as one UDP_GRO receive
 * with its segment size; a socket whose queue overflowed says how many. */
static void test_sockets(void)
{
	union { char buf[DGRAM_CMSG_SPACE]; struct cmsghdr align; } cb;
	union { char buf[DGRAM_RX_CMSG_SPACE]; struct cmsghdr align; } rb;
	static char data[65536], in[65536];
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t tolen = sizeof(to);
	int rx = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0), tx = socket(AF_INET, SOCK_DGRAM, 0);
	int one = 1, small = 4096, sent = 0;
	struct iovec iov = { data, 3500 }, riov = { in, sizeof(in) };
	struct msghdr m = { .msg_name = &to, .msg_namelen = sizeof(to), .msg_iov = &iov,
			    .msg_iovlen = 1, .msg_control = cb.buf };
	struct msghdr r = { .msg_iov = &riov, .msg_iovlen = 1, .msg_control = rb.buf,
			    .msg_controllen = sizeof(rb.buf) };
	uint16_t gso;
	uint32_t ovfl = 0;
	bool has;
	ssize_t n;

	ctx_make();
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (char)(i * 7 + 1);
	if (rx < 0 || tx < 0 || bind(rx, (struct sockaddr *)&to, sizeof(to)) < 0 ||
	    getsockname(rx, (struct sockaddr *)&to, &tolen) < 0 ||
	    setsockopt(rx, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof(one)) < 0) {
		tap_ok(0, "loopback UDP sockets: %s", strerror(errno));
		return;
	}
	if (setsockopt(rx, IPPROTO_UDP, UDP_GRO, &one, sizeof(one)) == 0) {
		m.msg_controllen = dgram_put_segment(&dc, cb.buf, 1000, 3500);
		n = sendmsg(tx, &m, 0);
		r.msg_controllen = sizeof(rb.buf);
		ssize_t got = recvmsg(rx, &r, 0);

		dgram_parse_cmsg(&r, &gso, &ovfl, &has);
		tap_ok(n == 3500 && got == 3500 && gso == 1000 && dgram_count((size_t)got, gso) == 4 &&
		       !memcmp(in, data, 3500) && !has,
		       "loopback: a UDP_SEGMENT send of 3500/1000 is one UDP_GRO receive of 4 "
		       "(sent %zd, got %zd, size %u; no drops, no SO_RXQ_OVFL)", n, got, gso);
		dgram_received(&dc, (size_t)got, gso);
		tap_ok(ctr.udp_rx_datagrams == 4 && ctr.udp_rx_bytes == 3500 && ctr.udp_gro_receives == 1,
		       "dgram_received: 4 datagrams, 3500 bytes, one GRO receive");
	} else {
		tap_ok(1, "# SKIP UDP_GRO: %s", strerror(errno));
	}
	/* overflow a small receive queue and drain it; the kernel's count comes
	 * with the next datagram queued (none is attached while it is 0) */
	setsockopt(rx, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	m.msg_controllen = 0;
	m.msg_control = NULL;
	iov.iov_len = 1000;
	for (int i = 0; i < 200; i++)
		sent += sendmsg(tx, &m, 0) == 1000;
	{
		int queued = 0;

		while (recv(rx, in, sizeof(in), 0) >= 0)
			queued++;
		sent += sendmsg(tx, &m, 0) == 1000;
		r.msg_controllen = sizeof(rb.buf);
		n = recvmsg(rx, &r, 0);
		queued += n == 1000;
		dgram_parse_cmsg(&r, &gso, &ovfl, &has);
		if (has)
			dgram_kernel_drops(&dc, 0, ovfl);
		tap_ok(n == 1000 && has && ovfl > 0 && ctr.udp_kernel_drops == ovfl &&
		       queued + (int)ovfl == sent,
		       "loopback: %d sent into a 4 KiB queue: %d read, %u reported dropped "
		       "(SO_RXQ_OVFL of the next datagram), none unaccounted", sent, queued, ovfl);
	}
	/* a new process taking the same socket (a restart through systemd):
	 * the drops counted before are not counted again, new ones are; and a
	 * datagram from the socket's own port is another echo service's */
	ctx_make();
	tap_ok(dgram_attach_socket(&dc, 0, rx) == 0 && dc.ovfl_seen[0] == ovfl,
	       "dgram_attach_socket: the socket's earlier drops (%u) are its baseline", ovfl);
	dgram_kernel_drops(&dc, 0, ovfl);
	tap_ok(ctr.udp_kernel_drops == 0, "dgram_attach_socket: earlier drops not counted again");
	dgram_kernel_drops(&dc, 0, ovfl + 3);
	tap_ok(ctr.udp_kernel_drops == 3, "dgram_attach_socket: drops after it counted (3)");
	{
		struct sockaddr_in own = to;

		tap_ok(dgram_check(&dc, (const struct sockaddr *)&own, sizeof(own), 1) ==
		       DDROP_LOOP_PORT + 1 && ctr.udp_drops[DDROP_LOOP_PORT] == 1,
		       "dgram_check: a datagram from the socket's own port %u is a loop_port drop",
		       ntohs(to.sin_port));
		own.sin_port = htons((uint16_t)(ntohs(to.sin_port) + 1));
		tap_ok(dgram_check(&dc, (const struct sockaddr *)&own, sizeof(own), 1) == 0,
		       "dgram_check: the port next to it is answered");
	}
	close(rx);
	close(tx);
}

/* ---- counting ---- */

static void test_counting(void)
{
	ctx_make();
	tap_ok(dgram_count(0, 0) == 1 && dgram_count(0, 1000) == 1 && dgram_count(1, 0) == 1 &&
	       dgram_count(1000, 1000) == 1 && dgram_count(1001, 1000) == 2 &&
	       dgram_count(65535, 1472) == 45, "dgram_count: 0 bytes is a datagram; rounded up");
	dgram_received(&dc, 0, 0);
	dgram_received(&dc, 65507, 0);
	dgram_sent(&dc, 0, 0);
	dgram_sent(&dc, 4000, 1000);
	dgram_drop(&dc, DDROP_SEND_ERROR, 3);
	dgram_drop(&dc, DDROP_TRUNCATED, 1);
	tap_ok(ctr.udp_rx_datagrams == 2 && ctr.udp_rx_bytes == 65507 && ctr.udp_gro_receives == 0 &&
	       ctr.udp_tx_datagrams == 5 && ctr.udp_tx_bytes == 4000 &&
	       ctr.udp_drops[DDROP_SEND_ERROR] == 3 && ctr.udp_drops[DDROP_TRUNCATED] == 1,
	       "dgram_received/sent/drop: datagrams, bytes and drops");

	/* the kernel's cumulative count: the increase since the last seen, per socket */
	dgram_kernel_drops(&dc, 0, 5);
	dgram_kernel_drops(&dc, 0, 5);
	dgram_kernel_drops(&dc, 0, 7);
	dgram_kernel_drops(&dc, 1, 3);
	tap_ok(ctr.udp_kernel_drops == 10, "dgram_kernel_drops: 5, 5 (nothing new), 7, "
	       "another socket's 3: 10 (got %llu)", (unsigned long long)ctr.udp_kernel_drops);
	dc.ovfl_seen[2] = UINT32_MAX - 1;
	dgram_kernel_drops(&dc, 2, 1);
	dgram_kernel_drops(&dc, 2, 0);              /* older than the last seen: nothing */
	dgram_kernel_drops(&dc, DGRAM_MAX_SOCKETS, 100);
	tap_ok(ctr.udp_kernel_drops == 13, "dgram_kernel_drops: across the 2^32 wrap, never "
	       "backwards, a slot out of range ignored (got %llu)",
	       (unsigned long long)ctr.udp_kernel_drops);
}

/* ---- coalescing ---- */

enum { P_A, P_B, P_A2, P_V6, P_V6B, P_MAPPED, P_UNIX, P__N };

struct co_case {
	const char *what;
	size_t seg_max;
	unsigned n;
	struct { uint8_t peer; uint32_t len; uint16_t gso; } d[80];
	unsigned runs[80];          /* the expected runs, 0-terminated */
};

#define REP(k, p, l) [k] = { p, l, 0 }

static struct co_case co_cases[] = {
	{ "4 x 1024 to one peer: one run", 65535, 4,
	  { { P_A, 1024, 0 }, { P_A, 1024, 0 }, { P_A, 1024, 0 }, { P_A, 1024, 0 } }, { 4 } },
	{ "a shorter last closes the run", 65535, 4,
	  { { P_A, 1024, 0 }, { P_A, 1024, 0 }, { P_A, 500, 0 }, { P_A, 1024, 0 } }, { 3, 1 } },
	{ "a shorter one in the middle ends it there", 65535, 3,
	  { { P_A, 1024, 0 }, { P_A, 500, 0 }, { P_A, 500, 0 } }, { 2, 1 } },
	{ "a longer one never joins", 65535, 3,
	  { { P_A, 1024, 0 }, { P_A, 2048, 0 }, { P_A, 2048, 0 } }, { 1, 2 } },
	{ "interleaved flows: never reordered, never joined", 65535, 4,
	  { { P_A, 100, 0 }, { P_B, 100, 0 }, { P_A, 100, 0 }, { P_B, 100, 0 } }, { 1, 1, 1, 1 } },
	{ "flows in turn: a run each", 65535, 5,
	  { { P_A, 100, 0 }, { P_A, 100, 0 }, { P_B, 100, 0 }, { P_B, 100, 0 }, { P_B, 50, 0 } },
	  { 2, 3 } },
	{ "same address, another port: another peer", 65535, 2,
	  { { P_A, 100, 0 }, { P_A2, 100, 0 } }, { 1, 1 } },
	{ "0-byte datagrams are never coalesced", 65535, 6,
	  { { P_A, 0, 0 }, { P_A, 0, 0 }, { P_A, 100, 0 }, { P_A, 0, 0 }, { P_A, 100, 0 },
	    { P_A, 100, 0 } }, { 1, 1, 1, 1, 2 } },
	{ "1-byte datagrams coalesce", 65535, 3,
	  { { P_A, 1, 0 }, { P_A, 1, 0 }, { P_A, 1, 0 } }, { 3 } },
	{ "at most 64 a run", 65535, 70,
	  { REP(0, P_A, 64), REP(1, P_A, 64), REP(2, P_A, 64), REP(3, P_A, 64), REP(4, P_A, 64),
	    REP(5, P_A, 64), REP(6, P_A, 64), REP(7, P_A, 64), REP(8, P_A, 64), REP(9, P_A, 64),
	    REP(10, P_A, 64), REP(11, P_A, 64), REP(12, P_A, 64), REP(13, P_A, 64),
	    REP(14, P_A, 64), REP(15, P_A, 64), REP(16, P_A, 64), REP(17, P_A, 64),
	    REP(18, P_A, 64), REP(19, P_A, 64), REP(20, P_A, 64), REP(21, P_A, 64),
	    REP(22, P_A, 64), REP(23, P_A, 64), REP(24, P_A, 64), REP(25, P_A, 64),
	    REP(26, P_A, 64), REP(27, P_A, 64), REP(28, P_A, 64), REP(29, P_A, 64),
	    REP(30, P_A, 64), REP(31, P_A, 64), REP(32, P_A, 64), REP(33, P_A, 64),
	    REP(34, P_A, 64), REP(35, P_A, 64), REP(36, P_A, 64), REP(37, P_A, 64),
	    REP(38, P_A, 64), REP(39, P_A, 64), REP(40, P_A, 64), REP(41, P_A, 64),
	    REP(42, P_A, 64), REP(43, P_A, 64), REP(44, P_A, 64), REP(45, P_A, 64),
	    REP(46, P_A, 64), REP(47, P_A, 64), REP(48, P_A, 64), REP(49, P_A, 64),
	    REP(50, P_A, 64), REP(51, P_A, 64), REP(52, P_A, 64), REP(53, P_A, 64),
	    REP(54, P_A, 64), REP(55, P_A, 64), REP(56, P_A, 64), REP(57, P_A, 64),
	    REP(58, P_A, 64), REP(59, P_A, 64), REP(60, P_A, 64), REP(61, P_A, 64),
	    REP(62, P_A, 64), REP(63, P_A, 64), REP(64, P_A, 64), REP(65, P_A, 64),
	    REP(66, P_A, 64), REP(67, P_A, 64), REP(68, P_A, 64), REP(69, P_A, 64) },
	  { 64, 6 } },
	{ "IPv4: at most 65,507 bytes a send (47 x 1365)", 65535, 50, { { 0 } }, { 47, 3 } },
	{ "IPv6: at most 65,527 bytes a send (48 x 1365)", 65535, 50, { { 0 } }, { 48, 2 } },
	{ "IPv4-mapped peer: IPv4's limit (47 x 1365)", 65535, 50, { { 0 } }, { 47, 3 } },
	{ "IPv4: a shorter last up to exactly 65,507", 65535, 3,
	  { { P_A, 32753, 0 }, { P_A, 32753, 0 }, { P_A, 1, 0 } }, { 3 } },
	{ "IPv4: one byte over 65,507 starts the next", 65535, 3,
	  { { P_A, 32753, 0 }, { P_A, 32753, 0 }, { P_A, 2, 0 } }, { 2, 1 } },
	{ "IPv6: exactly 65,527", 65535, 2,
	  { { P_V6, 32764, 0 }, { P_V6, 32763, 0 } }, { 2 } },
	{ "the largest datagrams go alone", 65535, 3,
	  { { P_A, 65507, 0 }, { P_A, 65507, 0 }, { P_V6, 65527, 0 } }, { 1, 1, 1 } },
	{ "a GRO receive of several goes alone, with its own segment size", 65535, 4,
	  { { P_A, 1000, 0 }, { P_A, 3000, 1000 }, { P_A, 1000, 0 }, { P_A, 1000, 0 } },
	  { 1, 1, 2 } },
	{ "a GRO receive of one is a datagram like any", 65535, 2,
	  { { P_A, 1000, 1000 }, { P_A, 1000, 0 } }, { 2 } },
	{ "seg_max 1023: 1024-byte runs not formed, 600 still", 1023, 5,
	  { { P_A, 1024, 0 }, { P_A, 1024, 0 }, { P_A, 600, 0 }, { P_A, 600, 0 }, { P_A, 600, 0 } },
	  { 1, 1, 3 } },
	{ "seg_max 1024: the 1024-byte run formed", 1024, 3,
	  { { P_A, 1024, 0 }, { P_A, 1024, 0 }, { P_A, 1024, 0 } }, { 3 } },
	{ "seg_max 0 (udp.coalesce off): nothing coalesced", 0, 3,
	  { { P_A, 64, 0 }, { P_A, 64, 0 }, { P_A, 64, 0 } }, { 1, 1, 1 } },
	{ "a peer neither IPv4 nor IPv6: alone", 65535, 2,
	  { { P_UNIX, 64, 0 }, { P_UNIX, 64, 0 } }, { 1, 1 } },
	{ "IPv6 peers differ by address: apart", 65535, 3,
	  { { P_V6, 64, 0 }, { P_V6B, 64, 0 }, { P_V6B, 64, 0 } }, { 1, 2 } },
};

static void test_coalesce(void)
{
	struct sockaddr_storage peers[P__N];
	socklen_t plen[P__N];
	struct dgram_desc d[80];
	struct dgram_run r;
	char buf[4096];

	plen[P_A] = addr(&peers[P_A], "192.0.2.1", 5000);
	plen[P_B] = addr(&peers[P_B], "192.0.2.2", 5000);
	plen[P_A2] = addr(&peers[P_A2], "192.0.2.1", 5001);
	plen[P_V6] = addr(&peers[P_V6], "2001:db8::1", 5000);
	plen[P_V6B] = addr(&peers[P_V6B], "2001:db8::2", 5000);
	plen[P_MAPPED] = addr(&peers[P_MAPPED], "::ffff:192.0.2.1", 5000);
	memset(&peers[P_UNIX], 0, sizeof(peers[P_UNIX]));
	peers[P_UNIX].ss_family = AF_UNIX;
	plen[P_UNIX] = sizeof(sa_family_t) + 2;
	/* the size-limit cases: 50 x 1365 to one peer */
	for (unsigned c = 10; c <= 12; c++)
		for (unsigned k = 0; k < 50; k++) {
			co_cases[c].d[k].peer = c == 10 ? P_A : c == 11 ? P_V6 : P_MAPPED;
			co_cases[c].d[k].len = 1365;
		}
	for (size_t c = 0; c < sizeof(co_cases) / sizeof(co_cases[0]); c++) {
		const struct co_case *t = &co_cases[c];
		char got[400] = "", want[400] = "";
		unsigned k = 0, nr = 0;
		bool ok = true;

		for (unsigned i = 0; i < t->n; i++) {
			d[i].peer = (const struct sockaddr *)&peers[t->d[i].peer];
			d[i].peerlen = plen[t->d[i].peer];
			d[i].len = t->d[i].len;
			d[i].gso = t->d[i].gso;
		}
		while (k < t->n) {
			unsigned run = dgram_coalesce(&d[k], t->n - k, t->seg_max);

			snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%u", nr ? "," : "", run);
			ok &= run >= 1 && run == t->runs[nr];
			nr++;
			k += run ? run : t->n;
		}
		ok &= t->runs[nr] == 0;
		for (unsigned i = 0; t->runs[i]; i++)
			snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%u", i ? "," : "",
				 t->runs[i]);
		tap_ok(ok, "dgram_coalesce: %s: runs %s (want %s)", t->what, got, want);
	}
	tap_ok(dgram_coalesce(d, 0, 65535) == 0, "dgram_coalesce: no echoes, no run");
	d[0].peer = (const struct sockaddr *)&peers[P_A];
	d[0].peerlen = plen[P_A];
	d[0].len = 100;
	d[0].gso = 0;
	tap_ok(dgram_run_begin(&r, &d[0], 65535) && r.n == 1 && r.bytes == 100 && r.seg == 100 &&
	       r.max_bytes == DGRAM_SEND_MAX_V4 && dgram_run_join(&r, &d[0]) && r.n == 2 &&
	       r.bytes == 200 && !r.closed, "dgram_run_begin/join: the run's count, bytes, limit");

	/* the ceiling per socket, the fallback counted and logged once */
	ctx_make();
	tap_ok(dgram_coalesce_limit(&dc, 0) == UINT16_MAX && dgram_coalesce_limit(&dc, 5) == 65535,
	       "dgram_coalesce_limit: every size at first");
	capture_start();
	bool f1 = dgram_coalesce_failed(&dc, 0, 42, "sendmsg", 1400, 3, EINVAL);
	bool f2 = dgram_coalesce_failed(&dc, 0, 42, "sendmsg", 1300, 2, EMSGSIZE);
	bool f3 = dgram_coalesce_failed(&dc, 0, 42, "sendmsg", 1500, 2, EINVAL);
	bool f4 = dgram_coalesce_failed(&dc, 0, 42, "sendmsg", 1000, 2, EPERM);
	bool f5 = dgram_coalesce_failed(&dc, 0, 42, "sendmsg", 1000, 1, EINVAL);
	size_t lim0 = dgram_coalesce_limit(&dc, 0), lim1 = dgram_coalesce_limit(&dc, 1);
	bool f6 = dgram_coalesce_failed(&dc, 1, 43, "sendmmsg", 64, 5, EIO);
	bool f7 = dgram_coalesce_failed(&dc, DGRAM_MAX_SOCKETS, 44, "sendmsg", 64, 5, EINVAL);
	int lines = capture_end("refused", buf, sizeof(buf));

	tap_ok(f1 && f2 && f3 && !f4 && !f5 && !f7 && lim0 == 1299 && lim1 == 65535,
	       "dgram_coalesce_failed: EINVAL at 1400 then EMSGSIZE at 1300: ceiling 1299 "
	       "(a later refusal above it never raises it), that socket only; EPERM, a "
	       "lone datagram, a slot out of range: not coalescing's (got %zu, %zu)", lim0, lim1);
	tap_ok(f6 && dgram_coalesce_limit(&dc, 1) == 0 && ctr.udp_coalesce_fallbacks == 4,
	       "dgram_coalesce_failed: EIO: nothing coalesced any more on that socket; 4 "
	       "fallbacks counted (got %llu)", (unsigned long long)ctr.udp_coalesce_fallbacks);
	tap_ok(lines == 2 && strstr(buf, "fd 42: sendmsg of 3 datagrams as one (UDP_SEGMENT 1400)") &&
	       strstr(buf, "Invalid argument") && strstr(buf, "fd 43: sendmmsg of 5") &&
	       strstr(buf, "Input/output error"),
	       "dgram_coalesce_failed: logged once per socket, naming the syscall and errno "
	       "(%d lines)", lines);
	if (lines != 2)
		tap_diag("%s", buf);
	dgram_set_params(&dc, true, false, NULL, 0, NULL);
	tap_ok(dgram_coalesce_limit(&dc, 2) == 0, "dgram_coalesce_limit: 0 with udp.coalesce off");
	dgram_set_params(&dc, true, true, NULL, 0, NULL);
	tap_ok(dgram_coalesce_limit(&dc, 2) == 65535 && dgram_coalesce_limit(&dc, 0) == 1299,
	       "dgram_coalesce_limit: back on, the ceilings kept");
	dgram_sent(&dc, 2500, 1000);
	dgram_coalesced(&dc, 3);
	tap_ok(ctr.udp_tx_datagrams == 3 && ctr.udp_coalesced_sends == 1 &&
	       ctr.udp_coalesced_datagrams == 3, "dgram_coalesced: one send, 3 datagrams");
}

/* A model of the rules, written apart from dgram.c: may d[k] end the run
 * d[start..k)?  (true: it joins.) */
static bool model_joins(const struct dgram_desc *d, unsigned start, unsigned k, size_t seg_max)
{
	size_t seg = d[start].len, bytes = 0;
	bool v4 = d[start].peer->sa_family == AF_INET;
	size_t limit = v4 ? 65507 : 65527;

	if (seg == 0 || seg > seg_max || (d[start].gso && d[start].len > d[start].gso))
		return false;
	if (k - start >= 64)
		return false;
	for (unsigned j = start; j < k; j++) {
		bytes += d[j].len;
		if (j > start && d[j].len < seg)
			return false;            /* a shorter one closed it */
	}
	return d[k].len > 0 && d[k].len <= seg && !(d[k].gso && d[k].len > d[k].gso) &&
	       bytes + d[k].len <= limit && d[k].peerlen == d[start].peerlen &&
	       memcmp(d[k].peer, d[start].peer, d[k].peerlen) == 0;
}

/* 20,000 random sequences: the runs partition the echoes in order, and
 * each is exactly as long as the model says (greedy: the next one could
 * not have joined). */
static void test_coalesce_random(void)
{
	static const uint32_t sizes[] = { 0, 1, 64, 64, 64, 100, 1000, 1000, 1000, 1365, 1400,
					  20000, 32753, 32754, 65507, 65527 };
	struct sockaddr_storage peers[3];
	socklen_t plen[3];
	struct dgram_desc d[100];
	unsigned seed = 12345, bad = 0, runs = 0, multi = 0;
	char first[200] = "";

	plen[0] = addr(&peers[0], "192.0.2.1", 5000);
	plen[1] = addr(&peers[1], "192.0.2.1", 5001);
	plen[2] = addr(&peers[2], "2001:db8::1", 5000);
	for (unsigned it = 0; it < 20000; it++) {
		unsigned n = 1 + rand_r(&seed) % 100, flows = 1 + rand_r(&seed) % 3;
		size_t seg_max = rand_r(&seed) % 4 ? 65535 : rand_r(&seed) % 2000;
		uint32_t base = sizes[rand_r(&seed) % (sizeof(sizes) / sizeof(sizes[0]))];

		for (unsigned i = 0; i < n; i++) {
			unsigned p = rand_r(&seed) % 8 ? 0 : rand_r(&seed) % flows;
			uint32_t len = rand_r(&seed) % 6 ? base :
				       sizes[rand_r(&seed) % (sizeof(sizes) / sizeof(sizes[0]))];

			if (len > 65507 && p != 2)
				len = 65507;
			d[i].peer = (const struct sockaddr *)&peers[p];
			d[i].peerlen = plen[p];
			d[i].len = len;
			d[i].gso = rand_r(&seed) % 50 ? 0 : (uint16_t)(len / 2);
		}
		for (unsigned k = 0; k < n;) {
			unsigned run = dgram_coalesce(&d[k], n - k, seg_max), want = 1;

			while (k + want < n && model_joins(d, k, k + want, seg_max))
				want++;
			runs++;
			multi += run > 1;
			if (run != want || run == 0) {
				if (!bad++)
					snprintf(first, sizeof(first), "sequence %u at %u (len %zu, "
						 "seg_max %zu): run %u, the model %u", it, k, d[k].len,
						 seg_max, run, want);
				break;
			}
			k += run;
		}
	}
	tap_ok(!bad && multi > 1000, "dgram_coalesce: 20,000 random sequences (3 peers, 0 B to "
	       "65,527 B, GRO receives, ceilings) cut into %u runs (%u of several) exactly as an "
	       "independent model of the rules cuts them%s%s", runs, multi, bad ? ": " : "", first);
}

/* A run built as the backends build it, through loopback: an iovec per
 * datagram, UDP_SEGMENT = the first's length, arrives as its datagrams;
 * a socket whose IPV6_MTU is 1280 refuses a segment of 1400 (EINVAL), the
 * fallback's case (6.18 says EMSGSIZE). */
static void test_coalesce_sockets(void)
{
	union { char buf[DGRAM_CMSG_SPACE]; struct cmsghdr align; } cb;
	static char a[1000], b[1000], c[1000], in[2000];
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_in6 to6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	socklen_t tolen = sizeof(to), to6len = sizeof(to6);
	int rx = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0), tx = socket(AF_INET, SOCK_DGRAM, 0);
	int rx6 = socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK, 0), tx6 = socket(AF_INET6, SOCK_DGRAM, 0);
	int mtu = 1280;
	struct iovec iov[3] = { { a, 1000 }, { b, 1000 }, { c, 400 } };
	struct msghdr m = { .msg_name = &to, .msg_namelen = sizeof(to), .msg_iov = iov,
			    .msg_iovlen = 3, .msg_control = cb.buf };
	ssize_t n, got[4];
	bool same;

	memset(a, 'a', sizeof(a));
	memset(b, 'b', sizeof(b));
	memset(c, 'c', sizeof(c));
	if (rx < 0 || tx < 0 || bind(rx, (struct sockaddr *)&to, sizeof(to)) < 0 ||
	    getsockname(rx, (struct sockaddr *)&to, &tolen) < 0) {
		tap_ok(0, "loopback UDP sockets: %s", strerror(errno));
		return;
	}
	ctx_make();
	m.msg_controllen = dgram_put_segment(&dc, cb.buf, 1000, 2400);
	n = sendmsg(tx, &m, 0);
	got[0] = recv(rx, in, sizeof(in), 0);
	same = got[0] == 1000 && in[0] == 'a' && in[999] == 'a';
	got[1] = recv(rx, in, sizeof(in), 0);
	same &= got[1] == 1000 && in[0] == 'b' && in[999] == 'b';
	got[2] = recv(rx, in, sizeof(in), 0);
	same &= got[2] == 400 && in[0] == 'c' && in[399] == 'c';
	got[3] = recv(rx, in, sizeof(in), 0);
	tap_ok(n == 2400 && same && got[3] < 0,
	       "loopback: a run of 1000+1000+400 from three buffers, UDP_SEGMENT 1000, arrives as "
	       "those 3 datagrams (sent %zd; got %zd, %zd, %zd)", n, got[0], got[1], got[2]);
	close(rx);
	close(tx);

	if (rx6 < 0 || tx6 < 0 || bind(rx6, (struct sockaddr *)&to6, sizeof(to6)) < 0 ||
	    getsockname(rx6, (struct sockaddr *)&to6, &to6len) < 0) {
		tap_ok(1, "# SKIP no IPv6 loopback: %s", strerror(errno));
		return;
	}
	static char big[2800];
	struct iovec iov6[2] = { { big, 1400 }, { big + 1400, 1400 } };
	struct msghdr m6 = { .msg_name = &to6, .msg_namelen = sizeof(to6), .msg_iov = iov6,
			     .msg_iovlen = 2, .msg_control = cb.buf };
	int err;

	m6.msg_controllen = dgram_put_segment(&dc, cb.buf, 1400, 2800);
	if (setsockopt(tx6, IPPROTO_IPV6, IPV6_MTU, &mtu, sizeof(mtu)) < 0) {
		tap_ok(0, "setsockopt IPV6_MTU 1280: %s", strerror(errno));
		return;
	}
	n = sendmsg(tx6, &m6, 0);
	err = errno;
	m6.msg_iovlen = 1;
	m6.msg_control = NULL;
	m6.msg_controllen = 0;
	ssize_t one = sendmsg(tx6, &m6, 0);
	ssize_t back = recv(rx6, in, sizeof(in), 0);

	tap_ok(n < 0 && (err == EINVAL || err == EMSGSIZE) && one == 1400 && back == 1400,
	       "loopback: IPV6_MTU 1280 refuses a UDP_SEGMENT 1400 run (EINVAL or EMSGSIZE: "
	       "%s), the same datagram alone goes (fragmented; got %zd)",
	       n < 0 ? strerror(err) : "sent", back);
	close(rx6);
	close(tx6);
}

int main(void)
{
	log_set_prefix(0);
	test_sources();
	test_log_limit();
	test_rate();
	test_cmsg();
	test_sockets();
	test_counting();
	test_coalesce();
	test_coalesce_random();
	test_coalesce_sockets();
	return tap_done();
}
