/* fuzz_proxy.c - the PROXY protocol header parser (proxy.c) on the bytes
 * a connection could start with.
 *
 * Input: the bytes, as received (a header, then the client's bytes).
 *
 * The oracle:
 *   - incremental: fed the input's prefixes in turn, the parser is
 *     undecided up to some length, then decided for good: done with
 *     exactly that length (every shorter prefix undecided, every longer
 *     one done the same with the same header), or one error that every
 *     longer prefix repeats; done's length never exceeds the bytes given;
 *   - bounded: never undecided at PROXY_HEADER_MAX bytes, nor at 107 for
 *     a v1 line; an error is never the caller's (partial, timeout);
 *   - what done says, checked independently: a v1 line ends in its first
 *     CRLF, its addresses and ports read back as the text had them
 *     (inet_ntop() gives an IPv4 field exactly, so no leading zero got
 *     through); a v2 header is 16 + its length field, and carries the
 *     addresses of its bytes for PROXY TCP4/TCP6 only;
 *   - CRC32C: against a bitwise reference; a header refused as
 *     bad_checksum is done once its checksum is set right.
 */
#include <arpa/inet.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "proxy.h"

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

/* The CRC32C TLV's value offset in a v2 header of total bytes whose
 * TLVs start at pos, or 0: a walk of its own. */
static size_t find_crc(const uint8_t *b, size_t pos, size_t total)
{
	while (pos + 3 <= total) {
		size_t vlen = (size_t)b[pos + 1] << 8 | b[pos + 2];

		if (b[pos] == 0x03 && vlen == 4 && pos + 7 <= total)
			return pos + 3;
		pos += 3 + vlen;
	}
	return 0;
}

static size_t v2_addr_len(uint8_t fam)
{
	return fam >> 4 == 1 ? 12 : fam >> 4 == 2 ? 36 : fam >> 4 == 3 ? 216 : 0;
}

static void check_v1(const uint8_t *b, int r, const struct proxy_header *h)
{
	char line[PROXY_V1_MAX + 1], *f[8], *save = NULL;
	unsigned nf = 0;

	FUZZ_CHECK(r <= PROXY_V1_MAX && b[r - 2] == '\r' && b[r - 1] == '\n', "v1 done with %d", r);
	FUZZ_CHECK(!memmem(b, (size_t)r - 2, "\r\n", 2), "v1 done past its first CRLF");
	memcpy(line, b, (size_t)r - 2);
	line[r - 2] = '\0';
	for (char *t = strtok_r(line, " ", &save); t && nf < 8; t = strtok_r(NULL, " ", &save))
		f[nf++] = t;
	FUZZ_CHECK(nf >= 2 && !strcmp(f[0], "PROXY"), "v1 line without PROXY");
	if (!strcmp(f[1], "UNKNOWN")) {
		FUZZ_CHECK(!h->has_source, "v1 UNKNOWN gave a source");
		return;
	}
	FUZZ_CHECK(h->has_source && nf == 6, "v1 %s: %u fields, has_source %d", f[1], nf, h->has_source);
	char again[PROXY_V1_MAX + 1];

	snprintf(again, sizeof(again), "%s %s %s %s %s %s\r\n", f[0], f[1], f[2], f[3], f[4], f[5]);
	FUZZ_CHECK(strlen(again) == (size_t)r && !memcmp(again, b, (size_t)r),
		   "v1 %s line not of single-spaced fields", f[1]);
	const uint8_t *addr[2] = { h->src, h->dst };
	for (int i = 0; i < 2; i++) {
		char text[INET6_ADDRSTRLEN];
		uint8_t a[16];

		if (!strcmp(f[1], "TCP4")) {
			static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

			FUZZ_CHECK(!memcmp(addr[i], mapped, 12), "v1 TCP4 address not v4-mapped");
			FUZZ_CHECK(inet_ntop(AF_INET, addr[i] + 12, text, sizeof(text)) &&
					   !strcmp(text, f[2 + i]),
				   "v1 TCP4 address '%s' read as %s", f[2 + i], text);
		} else {
			FUZZ_CHECK(!strcmp(f[1], "TCP6"), "v1 protocol '%s' accepted", f[1]);
			FUZZ_CHECK(inet_pton(AF_INET6, f[2 + i], a) == 1 && !memcmp(a, addr[i], 16),
				   "v1 TCP6 address '%s' misread", f[2 + i]);
		}
	}
	char port[8];

	snprintf(port, sizeof(port), "%u", h->src_port);
	FUZZ_CHECK(!strcmp(port, f[4]), "v1 source port '%s' read as %s", f[4], port);
	snprintf(port, sizeof(port), "%u", h->dst_port);
	FUZZ_CHECK(!strcmp(port, f[5]), "v1 destination port '%s' read as %s", f[5], port);
}

static void check_v2(const uint8_t *b, int r, const struct proxy_header *h)
{
	size_t total = 16 + ((size_t)b[14] << 8 | b[15]);
	uint8_t cmd = b[12] & 0x0f, fam = b[13];

	FUZZ_CHECK((size_t)r == total && total <= PROXY_HEADER_MAX, "v2 done with %d, length says %zu",
		   r, total);
	FUZZ_CHECK(b[12] >> 4 == 2 && cmd <= 1, "v2 done with version/command 0x%02x", b[12]);
	FUZZ_CHECK(h->has_source == (cmd == 1 && (fam == 0x11 || fam == 0x21)),
		   "v2 command %u family 0x%02x: has_source %d", cmd, fam, h->has_source);
	if (h->has_source) {
		size_t asz = fam == 0x11 ? 4 : 16;
		const uint8_t *p = b + 16;

		FUZZ_CHECK(!memcmp(h->src + 16 - asz, p, asz) && !memcmp(h->dst + 16 - asz, p + asz, asz) &&
				   h->src_port == (p[2 * asz] << 8 | p[2 * asz + 1]) &&
				   h->dst_port == (p[2 * asz + 2] << 8 | p[2 * asz + 3]),
			   "v2 addresses misread");
	}
	size_t alen = total == 16 && cmd == 0 ? 0 : v2_addr_len(fam);
	size_t at = find_crc(b, 16 + alen, total);

	if (at) {
		uint8_t copy[PROXY_HEADER_MAX];
		uint32_t want = (uint32_t)b[at] << 24 | (uint32_t)b[at + 1] << 16 |
				(uint32_t)b[at + 2] << 8 | b[at + 3];

		memcpy(copy, b, total);
		memset(copy + at, 0, 4);
		FUZZ_CHECK(crc32c_bitwise(copy, total) == want, "v2 done with a wrong CRC32C");
	}
}

/* A header refused as bad_checksum, its checksum set right: done. */
static void check_fixed_crc(const uint8_t *b, size_t size)
{
	static uint8_t copy[PROXY_HEADER_MAX];
	struct proxy_header h;
	size_t total = 16 + ((size_t)b[14] << 8 | b[15]);
	size_t alen = total == 16 && (b[12] & 0x0f) == 0 ? 0 : v2_addr_len(b[13]);
	size_t at;
	uint32_t crc;

	FUZZ_CHECK(b[0] == 0x0d && total <= size && total <= PROXY_HEADER_MAX, "bad_checksum, not v2");
	at = find_crc(b, 16 + alen, total);
	FUZZ_CHECK(at, "bad_checksum without a CRC32C TLV");
	memcpy(copy, b, total);
	memset(copy + at, 0, 4);
	crc = crc32c_bitwise(copy, total);
	copy[at] = (uint8_t)(crc >> 24);
	copy[at + 1] = (uint8_t)(crc >> 16);
	copy[at + 2] = (uint8_t)(crc >> 8);
	copy[at + 3] = (uint8_t)crc;
	FUZZ_CHECK(proxy_parse(copy, total, &h) == (int)total, "the CRC32C set right, still refused");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_header first_h, h;
	size_t lim = size < PROXY_HEADER_MAX + 1 ? size : PROXY_HEADER_MAX + 1;
	size_t at = 0;
	int first = 0, r;

	/* the first prefix that decides */
	for (at = 0; at <= lim; at++)
		if ((first = proxy_parse(data, at, &first_h)) != 0)
			break;
	if (first == 0) {
		FUZZ_CHECK(size < PROXY_HEADER_MAX, "undecided at %zu bytes", size);
		FUZZ_CHECK(size < PROXY_V1_MAX || data[0] != 'P', "v1 undecided at %zu bytes", size);
		FUZZ_CHECK(proxy_parse(data, size, &h) == 0, "undecided, then decided at the end");
		return 0;
	}
	FUZZ_CHECK(at <= PROXY_HEADER_MAX && (data[0] != 'P' || at <= PROXY_V1_MAX),
		   "decided only at %zu bytes", at);
	if (first > 0) {
		FUZZ_CHECK((size_t)first == at, "done with %d, first decided at %zu bytes", first, at);
		if (data[0] == 'P')
			check_v1(data, first, &first_h);
		else
			check_v2(data, first, &first_h);
	} else {
		FUZZ_CHECK(-first < PROXY_ERR_PARTIAL && -first > 0, "reason %d", -first);
		if (-first == PROXY_ERR_BAD_CHECKSUM)
			check_fixed_crc(data, at);
	}

	/* decided for good: the next prefix, the whole, more than the parser looks at */
	size_t later[3] = { at + 1, lim, size };

	for (int i = 0; i < 3; i++) {
		if (later[i] > size)
			continue;
		memset(&h, 0, sizeof(h));
		r = proxy_parse(data, later[i], &h);
		FUZZ_CHECK(r == first, "%d at %zu bytes, %d at %zu", first, at, r, later[i]);
		FUZZ_CHECK(r < 0 || !memcmp(&h, &first_h, sizeof(h)), "another header at %zu bytes",
			   later[i]);
	}
	return 0;
}
