/* test_proxy.c - the PROXY protocol header parser (src/proxy.c): the
 * header matrix of versions 1 and 2, valid and not.  Every valid header is
 * also fed byte by byte (each shorter prefix must be undecided, the whole
 * one done with the right length) and followed by client bytes (never
 * consumed); every invalid one must be refused at the exact byte that
 * shows it (each shorter prefix undecided) and stay refused whatever
 * follows.  Also: CRC32C against its check value and a bitwise
 * reference, and the reasons' names. */
#include "proxy.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

#define BUF 2048

/* An address as 16 bytes, IPv4 as ::ffff:a.b.c.d. */
static void addr16(const char *text, uint8_t a[16])
{
	struct in_addr v4;

	if (inet_pton(AF_INET, text, &v4) == 1) {
		memset(a, 0, 10);
		a[10] = a[11] = 0xff;
		memcpy(a + 12, &v4, 4);
	} else if (inet_pton(AF_INET6, text, a) != 1) {
		tap_diag("bad address in the test: %s", text);
		memset(a, 0, 16);
	}
}

static const char *result_text(int r, char *buf, size_t size)
{
	if (r > 0)
		snprintf(buf, size, "done %d", r);
	else if (r == 0)
		snprintf(buf, size, "need more");
	else
		snprintf(buf, size, "%s", proxy_reason_name(-r));
	return buf;
}

/* A valid header of n bytes: src/dst NULL when the real peer is to be used. */
static void valid(const char *what, const uint8_t *hdr, size_t n, unsigned version,
		  const char *src, unsigned sport, const char *dst, unsigned dport)
{
	static const struct { const char *s; size_t n; } tails[] = {
		{ "", 0 },
		{ "hello\r\n", 7 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 32 },
		{ "\r\n\r\n\0\r\nQUIT\n", 12 },     /* another header's signature */
	};
	static uint8_t buf[BUF];
	struct proxy_header h;
	char got[64];
	int r, bad_prefix = -1, bad_tail = -1;
	bool fields = true;

	memset(&h, 0xa5, sizeof(h));
	r = proxy_parse(hdr, n, &h);
	if (r == (int)n) {
		uint8_t a[16];

		fields = h.version == version && h.has_source == (src != NULL);
		if (src) {
			addr16(src, a);
			fields = fields && !memcmp(h.src, a, 16) && h.src_port == sport;
			addr16(dst, a);
			fields = fields && !memcmp(h.dst, a, 16) && h.dst_port == dport;
		}
	}
	tap_ok(r == (int)n && fields, "%s: done, %zu bytes, %s", what, n,
	       src ? "source given" : "the real peer");
	if (r != (int)n || !fields)
		tap_diag("got %s, version %u, has_source %d, ports %u %u", result_text(r, got, sizeof(got)),
			 h.version, h.has_source, h.src_port, h.dst_port);

	for (size_t k = 0; k < n && bad_prefix < 0; k++) {
		struct proxy_header untouched;

		memset(&untouched, 0x5a, sizeof(untouched));
		h = untouched;
		if (proxy_parse(hdr, k, &h) != 0 || memcmp(&h, &untouched, sizeof(h)))
			bad_prefix = (int)k;
	}
	for (unsigned t = 0; t < sizeof(tails) / sizeof(tails[0]) + 1 && bad_tail < 0; t++) {
		size_t m = n;

		memcpy(buf, hdr, n);
		if (t < sizeof(tails) / sizeof(tails[0])) {
			memcpy(buf + m, tails[t].s, tails[t].n);
			m += tails[t].n;
		} else {
			/* more than the parser ever looks at */
			memset(buf + m, 'x', BUF - m);
			m = BUF;
		}
		for (size_t k = n; k <= m; k++)
			if (proxy_parse(buf, k, &h) != (int)n) {
				bad_tail = (int)t;
				break;
			}
	}
	tap_ok(bad_prefix < 0 && bad_tail < 0,
	       "%s: byte by byte, each prefix undecided; client bytes after it never consumed", what);
	if (bad_prefix >= 0)
		tap_diag("prefix of %d bytes: %s", bad_prefix,
			 result_text(proxy_parse(hdr, (size_t)bad_prefix, &h), got, sizeof(got)));
	if (bad_tail >= 0)
		tap_diag("wrong with client bytes #%d after it", bad_tail);
}

/* An invalid header: refused for reason why once it holds at bytes,
 * undecided before, and still refused for the same reason with any of
 * its further bytes and more. */
static void invalid(const char *what, const uint8_t *hdr, size_t n, enum proxy_reason why, size_t at)
{
	static uint8_t buf[BUF];
	struct proxy_header h, untouched;
	char got[64];
	size_t first = 0;
	int r = 0, wrong_after = -1;

	memset(&untouched, 0x5a, sizeof(untouched));
	h = untouched;
	for (first = 0; first <= n; first++)
		if ((r = proxy_parse(hdr, first, &h)) != 0)
			break;
	memcpy(buf, hdr, n);
	memset(buf + n, 'x', BUF - n);
	for (size_t k = first; k <= BUF && wrong_after < 0; k++)
		if (proxy_parse(buf, k, &h) != -(int)why)
			wrong_after = (int)k;
	tap_ok(r == -(int)why && first == at && wrong_after < 0 && !memcmp(&h, &untouched, sizeof(h)),
	       "%s: %s at byte %zu", what, proxy_reason_name((int)why), at);
	if (r != -(int)why || first != at)
		tap_diag("got %s at byte %zu", result_text(r, got, sizeof(got)), first);
	if (wrong_after >= 0)
		tap_diag("not refused the same way with %d bytes", wrong_after);
}

static void valid1(const char *what, const char *line, const char *src, unsigned sport,
		   const char *dst, unsigned dport)
{
	valid(what, (const uint8_t *)line, strlen(line), 1, src, sport, dst, dport);
}

static void invalid1(const char *what, const char *line, enum proxy_reason why, size_t at)
{
	invalid(what, (const uint8_t *)line, strlen(line), why, at);
}

static void test_v1(void)
{
	char line[256];

	valid1("v1 TCP4", "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n",
	       "192.0.2.1", 56324, "198.51.100.2", 443);
	valid1("v1 TCP4, zeros", "PROXY TCP4 0.0.0.0 10.0.0.0 0 0\r\n", "0.0.0.0", 0, "10.0.0.0", 0);
	valid1("v1 TCP4, longest (56 bytes)",
	       "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
	       "255.255.255.255", 65535, "255.255.255.255", 65535);
	valid1("v1 TCP6", "PROXY TCP6 2001:db8::1 2001:DB8:0:0:1::2 1 65535\r\n",
	       "2001:db8::1", 1, "2001:db8:0:0:1::2", 65535);
	valid1("v1 TCP6, v4-mapped as inet_ntop writes it",
	       "PROXY TCP6 ::ffff:192.0.2.1 :: 7 8\r\n", "192.0.2.1", 7, "::", 8);
	valid1("v1 TCP6, longest (104 bytes)",
	       "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	       "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe 65535 65535\r\n",
	       "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
	       "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535);
	valid1("v1 UNKNOWN, short form", "PROXY UNKNOWN\r\n", NULL, 0, NULL, 0);
	valid1("v1 UNKNOWN, with anything", "PROXY UNKNOWN what\tever \x01\xff\r\n", NULL, 0, NULL, 0);
	valid1("v1 UNKNOWN, longest (107 bytes)",
	       "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	       "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n", NULL, 0, NULL, 0);

	invalid1("not PROXY: HTTP", "GET / HTTP/1.1\r\n", PROXY_ERR_BAD_SIGNATURE, 1);
	invalid1("not PROXY: PROXZ", "PROXZ TCP4", PROXY_ERR_BAD_SIGNATURE, 5);
	invalid1("not PROXY: lower case", "Proxy TCP4", PROXY_ERR_BAD_SIGNATURE, 2);
	invalid1("v1: no space after PROXY", "PROXY\tTCP4", PROXY_ERR_MALFORMED, 6);
	invalid1("v1: two spaces after PROXY", "PROXY  TCP4", PROXY_ERR_MALFORMED, 7);
	invalid1("v1: UDP4", "PROXY UDP4 192.0.2.1 192.0.2.2 1 2\r\n", PROXY_ERR_UNSUPPORTED_FAMILY, 8);
	invalid1("v1: TCP5", "PROXY TCP5 192.0.2.1", PROXY_ERR_UNSUPPORTED_FAMILY, 10);
	invalid1("v1: TCP then CRLF", "PROXY TCP\r\n", PROXY_ERR_UNSUPPORTED_FAMILY, 10);
	invalid1("v1: UNKNOWNX", "PROXY UNKNOWNX\r\n", PROXY_ERR_UNSUPPORTED_FAMILY, 14);
	invalid1("v1: TCP4 without addresses", "PROXY TCP4\r\n", PROXY_ERR_MALFORMED, 11);
	invalid1("v1: two spaces after TCP4", "PROXY TCP4  192.0.2.1", PROXY_ERR_MALFORMED, 12);
	invalid1("v1: IPv4 leading zero", "PROXY TCP4 192.0.2.01 192.0.2.2 1 2\r\n",
		 PROXY_ERR_MALFORMED, 21);
	invalid1("v1: IPv4 number over 255", "PROXY TCP4 192.0.2.256 192.0.2.2 1 2\r\n",
		 PROXY_ERR_MALFORMED, 22);
	invalid1("v1: IPv4 of three numbers", "PROXY TCP4 192.0.2 192.0.2.2 1 2\r\n",
		 PROXY_ERR_MALFORMED, 19);
	invalid1("v1: IPv4 of five numbers", "PROXY TCP4 192.0.2.1.5 192.0.2.2 1 2\r\n",
		 PROXY_ERR_MALFORMED, 21);
	invalid1("v1: IPv4 empty number", "PROXY TCP4 192..2.1 192.0.2.2 1 2\r\n",
		 PROXY_ERR_MALFORMED, 16);
	invalid1("v1: IPv6 address in TCP4", "PROXY TCP4 2001:db8::1 2001:db8::2 1 2\r\n",
		 PROXY_ERR_MALFORMED, 15);
	invalid1("v1: IPv4 destination with an IPv6 one",
		 "PROXY TCP4 192.0.2.1 ::1 1 2\r\n", PROXY_ERR_MALFORMED, 22);
	invalid1("v1: IPv4 address in TCP6", "PROXY TCP6 192.0.2.1 192.0.2.2 1 2\r\n",
		 PROXY_ERR_MALFORMED, 21);
	invalid1("v1: IPv6 with :::", "PROXY TCP6 2001:db8:::1 ::1 1 2\r\n", PROXY_ERR_MALFORMED, 22);
	invalid1("v1: IPv6 group of 5", "PROXY TCP6 12345::1 ::1 1 2\r\n", PROXY_ERR_MALFORMED, 16);
	invalid1("v1: IPv6 not hex", "PROXY TCP6 2001:db8::g ::1 1 2\r\n", PROXY_ERR_MALFORMED, 22);
	invalid1("v1: IPv6 with two ::", "PROXY TCP6 1::2::3 ::1 1 2\r\n", PROXY_ERR_MALFORMED, 19);
	invalid1("v1: IPv6 of 9 groups", "PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n",
		 PROXY_ERR_MALFORMED, 29);
	invalid1("v1: port over 65535", "PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n",
		 PROXY_ERR_MALFORMED, 39);
	invalid1("v1: port 99999", "PROXY TCP4 192.0.2.1 198.51.100.2 443 99999\r\n",
		 PROXY_ERR_MALFORMED, 43);
	invalid1("v1: port leading zero", "PROXY TCP4 192.0.2.1 198.51.100.2 0443 443\r\n",
		 PROXY_ERR_MALFORMED, 36);
	invalid1("v1: port negative", "PROXY TCP4 192.0.2.1 198.51.100.2 -1 443\r\n",
		 PROXY_ERR_MALFORMED, 35);
	invalid1("v1: two spaces between ports", "PROXY TCP4 192.0.2.1 198.51.100.2 56324  443\r\n",
		 PROXY_ERR_MALFORMED, 41);
	invalid1("v1: one port only", "PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
		 PROXY_ERR_MALFORMED, 40);
	invalid1("v1: trailing space", "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443 \r\n",
		 PROXY_ERR_MALFORMED, 44);
	invalid1("v1: LF alone ends the line", "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\n",
		 PROXY_ERR_MALFORMED, 44);
	invalid1("v1: CR alone ends the line", "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\rGET",
		 PROXY_ERR_MALFORMED, 45);
	invalid1("v1: UNKNOWN with a lone LF", "PROXY UNKNOWN a\nb\r\n", PROXY_ERR_MALFORMED, 16);
	invalid1("v1: UNKNOWN with a lone CR", "PROXY UNKNOWN\rX", PROXY_ERR_MALFORMED, 15);

	/* no CRLF within 107 bytes: refused at the 107th, not later */
	snprintf(line, sizeof(line), "PROXY UNKNOWN %0*d\r\n", 92, 0);
	invalid1("v1: UNKNOWN of 108 bytes", line, PROXY_ERR_OVERSIZED, 107);
	memset(line, 'x', sizeof(line) - 1);
	line[sizeof(line) - 1] = '\0';
	memcpy(line, "PROXY UNKNOWN ", 14);
	invalid1("v1: UNKNOWN without CRLF", line, PROXY_ERR_OVERSIZED, 107);
	invalid1("v1: TCP6 with v4-mapped tails over 107 bytes",
		 "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
		 "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 65535 65535\r\n",
		 PROXY_ERR_OVERSIZED, 107);
}

/* ---- version 2 ---- */

static const uint8_t sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

/* A v2 header: ver_cmd, fam, body (addresses then TLVs); the length field
 * says len_field (-1: the body's size). */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *body, size_t n,
		 long len_field)
{
	size_t len = len_field < 0 ? n : (size_t)len_field;

	memcpy(out, sig, 12);
	out[12] = ver_cmd;
	out[13] = fam;
	out[14] = (uint8_t)(len >> 8);
	out[15] = (uint8_t)len;
	if (body)
		memcpy(out + 16, body, n);
	return 16 + n;
}

/* Fill the CRC32C TLV whose value starts at at (its 4 bytes zero now). */
static void v2_sign(uint8_t *h, size_t n, size_t at)
{
	uint32_t crc = proxy_crc32c(0, h, n);

	h[at] = (uint8_t)(crc >> 24);
	h[at + 1] = (uint8_t)(crc >> 16);
	h[at + 2] = (uint8_t)(crc >> 8);
	h[at + 3] = (uint8_t)crc;
}

static const uint8_t addr4[12] = { 192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb };

static void test_v2(void)
{
	static const uint8_t tlvs[] = {
		0x01, 0x00, 0x02, 'h', '2',                                     /* ALPN */
		0x02, 0x00, 0x0b, 'e', 'x', 'a', 'm', 'p', 'l', 'e', '.', 'c', 'o', 'm', /* AUTHORITY */
		0x04, 0x00, 0x00,                                               /* NOOP, empty */
		0x05, 0x00, 0x04, 1, 2, 3, 4,                                   /* UNIQUE_ID */
		0x20, 0x00, 0x0b, 0x01, 0, 0, 0, 0, 0x21, 0x00, 0x03, 'T', 'L', 'S', /* SSL + version */
		0x30, 0x00, 0x02, 'n', 's',                                     /* NETNS */
		0xe0, 0x00, 0x01, 0x42,                                         /* custom */
		0xf8, 0x00, 0x00,                                               /* future */
	};
	static uint8_t body[PROXY_HEADER_MAX], h[BUF];
	size_t n, b;

	n = v2(h, 0x21, 0x11, addr4, sizeof(addr4), -1);
	valid("v2 PROXY TCP4", h, n, 2, "192.0.2.1", 56324, "198.51.100.2", 443);

	memcpy(body, addr4, 12);
	memcpy(body + 12, tlvs, sizeof(tlvs));
	n = v2(h, 0x21, 0x11, body, 12 + sizeof(tlvs), -1);
	valid("v2 PROXY TCP4 with TLVs of every kind", h, n, 2, "192.0.2.1", 56324, "198.51.100.2", 443);

	addr16("2001:db8::1", body);
	addr16("2001:db8::2", body + 16);
	body[32] = 0x00, body[33] = 0x01, body[34] = 0xff, body[35] = 0xff;
	n = v2(h, 0x21, 0x21, body, 36, -1);
	valid("v2 PROXY TCP6", h, n, 2, "2001:db8::1", 1, "2001:db8::2", 65535);
	memcpy(body + 36, tlvs, sizeof(tlvs));
	n = v2(h, 0x21, 0x21, body, 36 + sizeof(tlvs), -1);
	valid("v2 PROXY TCP6 with TLVs", h, n, 2, "2001:db8::1", 1, "2001:db8::2", 65535);

	/* CRC32C, first and last among the TLVs */
	memcpy(body, addr4, 12);
	memcpy(body + 12, (const uint8_t[]){ 0x03, 0x00, 0x04, 0, 0, 0, 0 }, 7);
	memcpy(body + 19, tlvs, 5);
	n = v2(h, 0x21, 0x11, body, 24, -1);
	v2_sign(h, n, 16 + 15);
	valid("v2 PROXY TCP4, CRC32C good", h, n, 2, "192.0.2.1", 56324, "198.51.100.2", 443);
	h[16 + 15] ^= 0x01;
	invalid("v2 PROXY TCP4, CRC32C bad", h, n, PROXY_ERR_BAD_CHECKSUM, n);
	h[16 + 15] ^= 0x01;
	h[20] ^= 0x80;  /* the source address changed under a good CRC */
	invalid("v2 PROXY TCP4, CRC32C of other bytes", h, n, PROXY_ERR_BAD_CHECKSUM, n);
	memcpy(body + 12, tlvs, 5);
	memcpy(body + 17, (const uint8_t[]){ 0x03, 0x00, 0x04, 0, 0, 0, 0 }, 7);
	n = v2(h, 0x21, 0x11, body, 24, -1);
	v2_sign(h, n, 16 + 20);
	valid("v2 PROXY TCP4, CRC32C last", h, n, 2, "192.0.2.1", 56324, "198.51.100.2", 443);

	/* the real peer */
	n = v2(h, 0x20, 0x00, NULL, 0, -1);
	valid("v2 LOCAL", h, n, 2, NULL, 0, NULL, 0);
	memcpy(body, (const uint8_t[]){ 0x03, 0x00, 0x04, 0, 0, 0, 0 }, 7);
	n = v2(h, 0x20, 0x00, body, 7, -1);
	v2_sign(h, n, 19);
	valid("v2 LOCAL with CRC32C (a health check)", h, n, 2, NULL, 0, NULL, 0);
	n = v2(h, 0x20, 0x11, NULL, 0, -1);
	valid("v2 LOCAL, TCP4 family and no address", h, n, 2, NULL, 0, NULL, 0);
	n = v2(h, 0x20, 0x12, addr4, 12, -1);
	valid("v2 LOCAL, UDP4 family and addresses (ignored)", h, n, 2, NULL, 0, NULL, 0);
	n = v2(h, 0x21, 0x00, NULL, 0, -1);
	valid("v2 PROXY UNSPEC", h, n, 2, NULL, 0, NULL, 0);
	n = v2(h, 0x21, 0x00, tlvs, sizeof(tlvs), -1);
	valid("v2 PROXY UNSPEC with TLVs", h, n, 2, NULL, 0, NULL, 0);
	memset(body, 0, 216);
	memcpy(body, "/run/a.sock", 11);
	memcpy(body + 108, "/run/b.sock", 11);
	n = v2(h, 0x21, 0x31, body, 216, -1);
	valid("v2 PROXY UNIX stream", h, n, 2, NULL, 0, NULL, 0);

	/* the largest: a NOOP filling it to PROXY_HEADER_MAX */
	b = PROXY_HEADER_MAX - 16;
	memset(body, 0, b);
	memcpy(body, addr4, 12);
	body[12] = 0x04;
	body[13] = (uint8_t)((b - 15) >> 8);
	body[14] = (uint8_t)(b - 15);
	n = v2(h, 0x21, 0x11, body, b, -1);
	valid("v2 of PROXY_HEADER_MAX bytes", h, n, 2, "192.0.2.1", 56324, "198.51.100.2", 443);
	body[14]++;
	n = v2(h, 0x21, 0x11, body, b + 1, -1);
	invalid("v2 of PROXY_HEADER_MAX + 1 bytes", h, n, PROXY_ERR_OVERSIZED, 16);
	n = v2(h, 0x21, 0x11, addr4, 12, 0xffff);
	invalid("v2 length 65535", h, n, PROXY_ERR_OVERSIZED, 16);

	/* refused */
	n = v2(h, 0x21, 0x11, addr4, 12, -1);
	h[4] = 0x01;
	invalid("v2 signature wrong in its 5th byte", h, n, PROXY_ERR_BAD_SIGNATURE, 5);
	n = v2(h, 0x11, 0x11, addr4, 12, -1);
	invalid("v2 version 1", h, n, PROXY_ERR_UNKNOWN_VERSION, 13);
	n = v2(h, 0x31, 0x11, addr4, 12, -1);
	invalid("v2 version 3", h, n, PROXY_ERR_UNKNOWN_VERSION, 13);
	n = v2(h, 0x22, 0x11, addr4, 12, -1);
	invalid("v2 command 2", h, n, PROXY_ERR_UNKNOWN_COMMAND, 13);
	n = v2(h, 0x2f, 0x11, addr4, 12, -1);
	invalid("v2 command 15", h, n, PROXY_ERR_UNKNOWN_COMMAND, 13);
	n = v2(h, 0x21, 0x12, addr4, 12, -1);
	invalid("v2 PROXY UDP4", h, n, PROXY_ERR_UNSUPPORTED_FAMILY, 14);
	n = v2(h, 0x21, 0x22, body, 36, -1);
	invalid("v2 PROXY UDP6", h, n, PROXY_ERR_UNSUPPORTED_FAMILY, 14);
	n = v2(h, 0x21, 0x32, body, 216, -1);
	invalid("v2 PROXY UNIX datagram", h, n, PROXY_ERR_UNSUPPORTED_FAMILY, 14);
	n = v2(h, 0x21, 0x13, addr4, 12, -1);
	invalid("v2 PROXY family 0x13", h, n, PROXY_ERR_UNSUPPORTED_FAMILY, 14);
	n = v2(h, 0x20, 0x41, addr4, 12, -1);
	invalid("v2 LOCAL family 0x41", h, n, PROXY_ERR_UNSUPPORTED_FAMILY, 14);
	n = v2(h, 0x21, 0x10, addr4, 12, -1);
	invalid("v2 PROXY family 0x10", h, n, PROXY_ERR_UNSUPPORTED_FAMILY, 14);
	n = v2(h, 0x21, 0x11, addr4, 11, -1);
	invalid("v2 PROXY TCP4, length 11", h, n, PROXY_ERR_MALFORMED, 16);
	n = v2(h, 0x21, 0x21, addr4, 12, -1);
	invalid("v2 PROXY TCP6, length 12", h, n, PROXY_ERR_MALFORMED, 16);
	n = v2(h, 0x20, 0x11, addr4, 5, -1);
	invalid("v2 LOCAL TCP4, length 5", h, n, PROXY_ERR_MALFORMED, 16);

	memcpy(body, addr4, 12);
	memcpy(body + 12, (const uint8_t[]){ 0x05, 0x00, 0x05, 1, 2 }, 5);
	n = v2(h, 0x21, 0x11, body, 17, -1);
	invalid("v2 TLV longer than the header", h, n, PROXY_ERR_MALFORMED, 31);
	n = v2(h, 0x21, 0x11, body, 14, -1);
	invalid("v2 TLV header cut by the length", h, n, PROXY_ERR_MALFORMED, 16);
	memcpy(body + 12, (const uint8_t[]){ 0x04, 0x00, 0x00, 0x05, 0x00, 0x09 }, 6);
	n = v2(h, 0x21, 0x11, body, 18 + 8, -1);
	invalid("v2 second TLV longer than the header", h, n, PROXY_ERR_MALFORMED, 34);
	memcpy(body + 12, (const uint8_t[]){ 0x03, 0x00, 0x03, 0, 0, 0 }, 6);
	n = v2(h, 0x21, 0x11, body, 18, -1);
	invalid("v2 CRC32C TLV of 3 bytes", h, n, PROXY_ERR_MALFORMED, 31);
	memcpy(body + 12, (const uint8_t[]){ 0x03, 0x00, 0x04, 0, 0, 0, 0,
					     0x03, 0x00, 0x04, 0, 0, 0, 0 }, 14);
	n = v2(h, 0x21, 0x11, body, 26, -1);
	invalid("v2 two CRC32C TLVs", h, n, PROXY_ERR_MALFORMED, 38);
}

/* ---- CRC32C and the names ---- */

static uint32_t crc32c_bitwise(const uint8_t *p, size_t n)
{
	uint32_t crc = 0xffffffffu;

	for (size_t i = 0; i < n; i++) {
		crc ^= p[i];
		for (int k = 0; k < 8; k++)
			crc = crc & 1 ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
	}
	return ~crc;
}

static void test_crc(void)
{
	static uint8_t data[4096];
	unsigned bad = 0;

	tap_ok(proxy_crc32c(0, (const uint8_t *)"123456789", 9) == 0xe3069283u,
	       "CRC32C check value of \"123456789\" is 0xe3069283");
	srand(13);
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)rand();
	for (size_t n = 0; n < sizeof(data); n += 1 + n / 7) {
		size_t cut = n / 3;

		if (proxy_crc32c(0, data, n) != crc32c_bitwise(data, n) ||
		    proxy_crc32c(proxy_crc32c(0, data, cut), data + cut, n - cut) !=
			    proxy_crc32c(0, data, n))
			bad++;
	}
	tap_ok(bad == 0, "CRC32C agrees with a bitwise reference, whole and in two parts");
}

static void test_names(void)
{
	bool ok = true;

	for (int r = 1; r < PROXY_REASON_COUNT; r++) {
		const char *s = proxy_reason_name(r);

		ok = ok && strcmp(s, "invalid") && strspn(s, "abcdefghijklmnopqrstuvwxyz_") == strlen(s);
		for (int q = 1; q < r; q++)
			ok = ok && strcmp(s, proxy_reason_name(q));
	}
	tap_ok(ok, "every reason has its own name, a metrics label");
	tap_ok(!strcmp(proxy_reason_name(PROXY_ERR_BAD_SIGNATURE), "bad_signature") &&
		       !strcmp(proxy_reason_name(PROXY_ERR_TIMEOUT), "timeout") &&
		       !strcmp(proxy_reason_name(0), "invalid") &&
		       !strcmp(proxy_reason_name(PROXY_REASON_COUNT), "invalid") &&
		       !strcmp(proxy_reason_name(-1), "invalid"),
	       "reason names; a value outside the enum is \"invalid\"");
}

int main(void)
{
	test_v1();
	test_v2();
	test_crc();
	test_names();
	return tap_done();
}
