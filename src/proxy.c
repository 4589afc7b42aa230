/* proxy.c - the PROXY protocol header parser (see proxy.h).
 *
 * Each call scans the bytes from the first, left to right, and stops at
 * the first that decides: a byte no valid header can have there is an
 * error, the end of the bytes before the header ended is "need more".
 * The scanners below share one convention: they return the position
 * after what they read (> 0), 0 when the bytes ran out first, or
 * -enum proxy_reason.
 */
#include "proxy.h"

#include <arpa/inet.h>
#include <string.h>

static const char *const reason_names[PROXY_REASON_COUNT] = {
	[PROXY_ERR_BAD_SIGNATURE] = "bad_signature",
	[PROXY_ERR_MALFORMED] = "malformed",
	[PROXY_ERR_OVERSIZED] = "oversized",
	[PROXY_ERR_UNKNOWN_VERSION] = "unknown_version",
	[PROXY_ERR_UNKNOWN_COMMAND] = "unknown_command",
	[PROXY_ERR_UNSUPPORTED_FAMILY] = "unsupported_family",
	[PROXY_ERR_BAD_CHECKSUM] = "bad_checksum",
	[PROXY_ERR_PARTIAL] = "partial",
	[PROXY_ERR_TIMEOUT] = "timeout",
	[PROXY_ERR_UNTRUSTED] = "untrusted",
};

const char *proxy_reason_name(int reason)
{
	if (reason <= 0 || reason >= PROXY_REASON_COUNT)
		return "invalid";
	return reason_names[reason];
}

/* ---- CRC32C: reflected polynomial 0x82f63b78, four bits at a time ---- */

static const uint32_t crc32c_nibble[16] = {
	0x00000000, 0x105ec76f, 0x20bd8ede, 0x30e349b1,
	0x417b1dbc, 0x5125dad3, 0x61c69362, 0x7198540d,
	0x82f63b78, 0x92a8fc17, 0xa24bb5a6, 0xb21572c9,
	0xc38d26c4, 0xd3d3e1ab, 0xe330a81a, 0xf36e6f75,
};

uint32_t proxy_crc32c(uint32_t crc, const uint8_t *p, size_t n)
{
	crc = ~crc;
	for (size_t i = 0; i < n; i++) {
		crc ^= p[i];
		crc = (crc >> 4) ^ crc32c_nibble[crc & 15];
		crc = (crc >> 4) ^ crc32c_nibble[crc & 15];
	}
	return ~crc;
}

/* ---- version 1 ---- */

#define ERR(r) (-(int)(r))

static const uint8_t ipv4_mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

static bool is_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

static bool is_hex(uint8_t c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* The literal s at b[pos...]; a mismatch is -why. */
static int v1_literal(const uint8_t *b, size_t len, size_t pos, const char *s,
		      enum proxy_reason why)
{
	for (; *s; s++, pos++) {
		if (pos == len)
			return 0;
		if (b[pos] != (uint8_t)*s)
			return ERR(why);
	}
	return (int)pos;
}

enum v1_proto { V1_TCP4, V1_TCP6, V1_UNKNOWN };

/* The protocol word, up to (not including) its delimiter, a space or a
 * CR: *proto says which.  A word that cannot become one of the three is
 * unsupported_family from its first wrong byte; an empty one (a second
 * space) is malformed. */
static int v1_proto(const uint8_t *b, size_t len, size_t pos, enum v1_proto *proto)
{
	static const char *const names[] = { "TCP4", "TCP6", "UNKNOWN" };
	size_t start = pos;

	for (;; pos++) {
		size_t n = pos - start;
		bool prefix = false;

		if (pos == len)
			return 0;
		if (b[pos] == ' ' || b[pos] == '\r') {
			if (n == 0)
				return ERR(PROXY_ERR_MALFORMED);
			for (unsigned i = 0; i < 3; i++)
				if (strlen(names[i]) == n && !memcmp(b + start, names[i], n)) {
					*proto = (enum v1_proto)i;
					return (int)pos;
				}
			return ERR(PROXY_ERR_UNSUPPORTED_FAMILY);
		}
		for (unsigned i = 0; i < 3 && !prefix; i++)
			prefix = n < strlen(names[i]) && !memcmp(b + start, names[i], n) &&
				 b[pos] == (uint8_t)names[i][n];
		if (!prefix)
			return ERR(PROXY_ERR_UNSUPPORTED_FAMILY);
	}
}

/* An IPv4 address ending at a space: four decimal numbers 0-255 without
 * leading zeros, three dots.  a gets it as ::ffff:a.b.c.d. */
static int v1_ipv4(const uint8_t *b, size_t len, size_t pos, uint8_t a[16])
{
	unsigned part = 0, digits = 0, value = 0;

	memcpy(a, ipv4_mapped, sizeof(ipv4_mapped));
	for (;; pos++) {
		if (pos == len)
			return 0;
		uint8_t c = b[pos];

		if (is_digit(c)) {
			if (digits == 1 && value == 0)
				return ERR(PROXY_ERR_MALFORMED);   /* a leading zero */
			value = value * 10 + (unsigned)(c - '0');
			if (value > 255)
				return ERR(PROXY_ERR_MALFORMED);
			digits++;
			continue;
		}
		if (digits == 0 || (c == '.' && part == 3) || (c == ' ' && part < 3) ||
		    (c != '.' && c != ' '))
			return ERR(PROXY_ERR_MALFORMED);
		a[12 + part++] = (uint8_t)value;
		if (c == ' ')
			return (int)pos;
		digits = value = 0;
	}
}

/* An IPv6 address ending at a space, as inet_pton() reads it.  Checked
 * byte by byte as far as cheap (hex digits, colons, dots; groups of at
 * most 4; no ":::"; at most 45 bytes), then whole by inet_pton(). */
static int v1_ipv6(const uint8_t *b, size_t len, size_t pos, uint8_t a[16])
{
	char text[INET6_ADDRSTRLEN];
	size_t start = pos, run = 0;

	for (;; pos++) {
		if (pos == len)
			return 0;
		uint8_t c = b[pos];
		size_t n = pos - start;

		if (c == ' ') {
			memcpy(text, b + start, n);
			text[n] = '\0';
			if (inet_pton(AF_INET6, text, a) != 1)
				return ERR(PROXY_ERR_MALFORMED);
			return (int)pos;
		}
		if (n == sizeof(text) - 1)
			return ERR(PROXY_ERR_MALFORMED);
		if (is_hex(c)) {
			if (++run > 4)
				return ERR(PROXY_ERR_MALFORMED);
		} else if (c == ':' || c == '.') {
			if (c == ':' && n >= 2 && b[pos - 1] == ':' && b[pos - 2] == ':')
				return ERR(PROXY_ERR_MALFORMED);
			run = 0;
		} else {
			return ERR(PROXY_ERR_MALFORMED);
		}
	}
}

/* A port ending at the byte end: 0-65535 without leading zeros. */
static int v1_port(const uint8_t *b, size_t len, size_t pos, uint8_t end, uint16_t *port)
{
	unsigned digits = 0, value = 0;

	for (;; pos++) {
		if (pos == len)
			return 0;
		uint8_t c = b[pos];

		if (c == end && digits > 0) {
			*port = (uint16_t)value;
			return (int)pos;
		}
		if (!is_digit(c) || (digits == 1 && value == 0))
			return ERR(PROXY_ERR_MALFORMED);
		value = value * 10 + (unsigned)(c - '0');
		if (value > 65535)
			return ERR(PROXY_ERR_MALFORMED);
		digits++;
	}
}

/* What UNKNOWN carries: anything to the first CRLF, but a lone CR or LF.
 * Returns the position of the CR. */
static int v1_rest(const uint8_t *b, size_t len, size_t pos)
{
	for (;; pos++) {
		if (pos == len)
			return 0;
		if (b[pos] == '\n')
			return ERR(PROXY_ERR_MALFORMED);
		if (b[pos] == '\r') {
			if (pos + 1 == len)
				return 0;
			if (b[pos + 1] != '\n')
				return ERR(PROXY_ERR_MALFORMED);
			return (int)pos;
		}
	}
}

/* The line, scanned within its first PROXY_V1_MAX bytes. */
static int v1_line(const uint8_t *b, size_t len, struct proxy_header *h)
{
	enum v1_proto proto;
	int r;

	if ((r = v1_literal(b, len, 0, "PROXY", PROXY_ERR_BAD_SIGNATURE)) <= 0 ||
	    (r = v1_literal(b, len, (size_t)r, " ", PROXY_ERR_MALFORMED)) <= 0 ||
	    (r = v1_proto(b, len, (size_t)r, &proto)) <= 0)
		return r;
	if (proto == V1_UNKNOWN) {
		if (b[r] == ' ' && (r = v1_rest(b, len, (size_t)r + 1)) <= 0)
			return r;
		return v1_literal(b, len, (size_t)r, "\r\n", PROXY_ERR_MALFORMED);
	}
	h->has_source = true;
	if ((r = v1_literal(b, len, (size_t)r, " ", PROXY_ERR_MALFORMED)) <= 0)
		return r;
	if (proto == V1_TCP4) {
		if ((r = v1_ipv4(b, len, (size_t)r, h->src)) <= 0 ||
		    (r = v1_ipv4(b, len, (size_t)r + 1, h->dst)) <= 0)
			return r;
	} else {
		if ((r = v1_ipv6(b, len, (size_t)r, h->src)) <= 0 ||
		    (r = v1_ipv6(b, len, (size_t)r + 1, h->dst)) <= 0)
			return r;
	}
	if ((r = v1_port(b, len, (size_t)r + 1, ' ', &h->src_port)) <= 0 ||
	    (r = v1_port(b, len, (size_t)r + 1, '\r', &h->dst_port)) <= 0)
		return r;
	return v1_literal(b, len, (size_t)r, "\r\n", PROXY_ERR_MALFORMED);
}

static int v1_parse(const uint8_t *b, size_t len, struct proxy_header *h)
{
	size_t scan = len < PROXY_V1_MAX ? len : PROXY_V1_MAX;
	int r = v1_line(b, scan, h);

	/* still undecided at 107 bytes: the CRLF is not within them */
	if (r == 0 && scan == PROXY_V1_MAX)
		return ERR(PROXY_ERR_OVERSIZED);
	h->version = 1;
	return r;
}

/* ---- version 2 ---- */

#define V2_FIXED 16             /* signature, version and command, family, length */
#define V2_CMD_LOCAL 0x0
#define V2_CMD_PROXY 0x1
#define V2_TLV_CRC32C 0x03

static const uint8_t v2_signature[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};

/* The address block's size for a family byte of the spec's table, or -1
 * for any other byte. */
static int v2_addr_len(uint8_t fam)
{
	switch (fam) {
	case 0x00:
		return 0;
	case 0x11:
	case 0x12:
		return 12;
	case 0x21:
	case 0x22:
		return 36;
	case 0x31:
	case 0x32:
		return 216;
	default:
		return -1;
	}
}

static int v2_parse(const uint8_t *b, size_t len, struct proxy_header *h)
{
	size_t n = len < sizeof(v2_signature) ? len : sizeof(v2_signature);

	if (memcmp(b, v2_signature, n))
		return ERR(PROXY_ERR_BAD_SIGNATURE);
	if (len < 13)
		return 0;
	if (b[12] >> 4 != 2)
		return ERR(PROXY_ERR_UNKNOWN_VERSION);
	uint8_t cmd = b[12] & 0x0f;

	if (cmd != V2_CMD_LOCAL && cmd != V2_CMD_PROXY)
		return ERR(PROXY_ERR_UNKNOWN_COMMAND);
	if (len < 14)
		return 0;
	uint8_t fam = b[13];
	int alen = v2_addr_len(fam);

	if (alen < 0 || (cmd == V2_CMD_PROXY && (fam & 0x0f) == 0x2))
		return ERR(PROXY_ERR_UNSUPPORTED_FAMILY);
	if (len < V2_FIXED)
		return 0;
	size_t plen = (size_t)b[14] << 8 | b[15];
	size_t total = V2_FIXED + plen;

	if (total > PROXY_HEADER_MAX)
		return ERR(PROXY_ERR_OVERSIZED);
	if (plen < (size_t)alen) {
		if (cmd != V2_CMD_LOCAL || plen != 0)
			return ERR(PROXY_ERR_MALFORMED);
		alen = 0;       /* LOCAL without addresses, whatever the family */
	}

	/* the TLVs: each header as soon as it is in, each within the length */
	size_t pos = V2_FIXED + (size_t)alen, crc_at = 0;

	while (pos < total) {
		if (total - pos < 3)
			return ERR(PROXY_ERR_MALFORMED);
		if (len < pos + 3)
			return 0;
		size_t vlen = (size_t)b[pos + 1] << 8 | b[pos + 2];

		if (vlen > total - pos - 3)
			return ERR(PROXY_ERR_MALFORMED);
		if (b[pos] == V2_TLV_CRC32C) {
			if (vlen != 4 || crc_at)
				return ERR(PROXY_ERR_MALFORMED);
			crc_at = pos + 3;
		}
		pos += 3 + vlen;
	}
	if (len < total)
		return 0;

	if (crc_at) {
		static const uint8_t zero[4];
		uint32_t want = (uint32_t)b[crc_at] << 24 | (uint32_t)b[crc_at + 1] << 16 |
				(uint32_t)b[crc_at + 2] << 8 | b[crc_at + 3];
		uint32_t crc = proxy_crc32c(0, b, crc_at);

		crc = proxy_crc32c(crc, zero, sizeof(zero));
		crc = proxy_crc32c(crc, b + crc_at + 4, total - crc_at - 4);
		if (crc != want)
			return ERR(PROXY_ERR_BAD_CHECKSUM);
	}

	h->version = 2;
	if (cmd == V2_CMD_PROXY && (fam == 0x11 || fam == 0x21)) {
		const uint8_t *p = b + V2_FIXED;
		size_t asz = fam == 0x11 ? 4 : 16;

		h->has_source = true;
		if (fam == 0x11) {
			memcpy(h->src, ipv4_mapped, sizeof(ipv4_mapped));
			memcpy(h->dst, ipv4_mapped, sizeof(ipv4_mapped));
		}
		memcpy(h->src + 16 - asz, p, asz);
		memcpy(h->dst + 16 - asz, p + asz, asz);
		h->src_port = (uint16_t)(p[2 * asz] << 8 | p[2 * asz + 1]);
		h->dst_port = (uint16_t)(p[2 * asz + 2] << 8 | p[2 * asz + 3]);
	}
	return (int)total;
}

int proxy_parse(const uint8_t *buf, size_t len, struct proxy_header *out)
{
	struct proxy_header h;
	int r;

	if (len == 0)
		return 0;
	memset(&h, 0, sizeof(h));
	if (buf[0] == 'P')
		r = v1_parse(buf, len, &h);
	else if (buf[0] == v2_signature[0])
		r = v2_parse(buf, len, &h);
	else
		r = ERR(PROXY_ERR_BAD_SIGNATURE);
	if (r > 0)
		*out = h;
	return r;
}
