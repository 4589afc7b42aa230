/* proxy.h - the PROXY protocol header (haproxy's doc/proxy-protocol.txt,
 * versions 1 and 2) parsed from the first bytes of a connection.
 *
 * A pure function over a byte string: no allocation, no state kept
 * between calls, no system call.  It is called again with more bytes
 * (the same first ones and those received since) until it answers done
 * or an error, and it answers as soon as the bytes decide: a stream that
 * cannot become a valid header is an error at the first byte that shows
 * it (a first byte neither 'P' nor 0x0D, a v1 field out of its grammar,
 * a v1 line with no CRLF in its first 107 bytes, a v2 length taking the
 * header over PROXY_HEADER_MAX, a v2 TLV overrunning the header), so a
 * garbage sender is closed at its first bytes and a slow one holds its
 * slot no longer than the caller's timeout.
 *
 * How the connection path is meant to use it (on a listener configured
 * to expect the header: never guess whether one is present):
 *   - after each read, gather the first min(queued, PROXY_HEADER_MAX)
 *     bytes of the connection's queue into a PROXY_HEADER_MAX-byte buffer
 *     (on the stack: it is small) and call proxy_parse();
 *   - need more (0): keep reading, echo nothing, until the header timeout
 *     (the spec asks for at least 3 s, to cover a TCP retransmit); on
 *     timeout close with RST and count PROXY_ERR_TIMEOUT; on EOF first,
 *     close and count PROXY_ERR_PARTIAL;
 *   - done (> 0, the header's length): drop that many bytes from the
 *     queue's head (the bytes after them are the client's and are echoed),
 *     then judge the source (policy, limits) as at accept: the header's
 *     source if has_source, else the real peer;
 *   - error (< 0): close with RST at once and count by reason
 *     (proxy_reason_name() gives the metrics label and the log word).
 *
 * Version 1: "PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n" or "PROXY UNKNOWN
 * ...\r\n", at most 107 bytes with the CRLF, strictly: one space between
 * fields, IPv4 as four decimal numbers 0-255 without leading zeros, IPv6
 * as inet_pton() reads it (a v4-mapped tail included, as inet_ntop()
 * writes it), ports 0-65535 without leading zeros, a lone CR or LF never
 * ends the line.  UNKNOWN may carry anything before the CRLF but a lone
 * CR or LF, and means "use the real peer".
 *
 * Version 2: the 12-byte signature, version 2, command LOCAL (the real
 * peer, whatever family of the table below) or PROXY; then the family
 * byte:
 *   TCP4 0x11, TCP6 0x21   the source and destination given;
 *   UNSPEC 0x00, UNIX stream 0x31   the real peer (addresses ignored);
 *   UDP4 0x12, UDP6 0x22, UNIX datagram 0x32   unsupported_family: a
 *     datagram flow relayed over a stream has lost its boundaries, so a
 *     TCP echo cannot serve it as sent; a proxy sending it is
 *     misconfigured, and saying so beats judging the proxy's address;
 *   any other byte   unsupported_family (the spec: reject as invalid).
 * The length must cover the family's address block (12, 36, 216 bytes;
 * LOCAL may give 0 whatever the family); the TLVs after it are walked and
 * each must end exactly within the length (malformed otherwise).  A
 * CRC32C TLV (4 bytes, at most one) is verified over the whole header
 * with its value zeroed (bad_checksum); every other type (ALPN,
 * AUTHORITY, NOOP, UNIQUE_ID, SSL, NETNS, custom) is skipped unread.
 *
 * PROXY_HEADER_MAX is 1024 bytes: a v1 line (107) or a v2 header with
 * the largest address block (16 + 216, UNIX) and 792 bytes of TLVs: room
 * for what haproxy sends (UNIQUE_ID up to 128 bytes, AUTHORITY up to 255,
 * ALPN, the SSL TLV with version, cipher, CN and algorithms, CRC32C,
 * NETNS) and the cloud load balancers' custom TLVs (tens of bytes), yet a
 * stack buffer and less than one segment of a 1500-byte MTU path, so a
 * sender writing its header at once (as the spec asks) delivers it in
 * one read.  A longer header is refused as oversized.
 */
#ifndef ECHOD_PROXY_H
#define ECHOD_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROXY_HEADER_MAX 1024   /* bytes; see above */
#define PROXY_V1_MAX 107        /* the longest v1 line, CRLF included */

/* Why a header was refused: the metrics label and log word is
 * proxy_reason_name().  proxy_parse() returns the negated value. */
enum proxy_reason {
	PROXY_ERR_BAD_SIGNATURE = 1, /* neither "PROXY" nor the v2 signature */
	PROXY_ERR_MALFORMED,         /* v1 out of the grammar; v2 addresses or TLVs
					not fitting the length, a bad CRC32C TLV */
	PROXY_ERR_OVERSIZED,         /* v1 line over 107 bytes; v2 over PROXY_HEADER_MAX */
	PROXY_ERR_UNKNOWN_VERSION,   /* v2 signature, version not 2 */
	PROXY_ERR_UNKNOWN_COMMAND,   /* v2 command neither LOCAL nor PROXY */
	PROXY_ERR_UNSUPPORTED_FAMILY,/* v1 protocol not TCP4/TCP6/UNKNOWN; v2 family
					byte outside the spec's table, or datagrams */
	PROXY_ERR_BAD_CHECKSUM,      /* v2 CRC32C TLV does not match */
	PROXY_ERR_PARTIAL,           /* the caller's: EOF before the header ended */
	PROXY_ERR_TIMEOUT,           /* the caller's: no header within the timeout */
	PROXY_ERR_UNTRUSTED,         /* the caller's: the peer is not a trusted proxy */
	PROXY_REASON_COUNT           /* not a reason: the table's size */
};

/* What a complete header says. */
struct proxy_header {
	uint8_t version;      /* 1 or 2 */
	bool has_source;      /* false: LOCAL, UNKNOWN, UNSPEC or UNIX: use the real peer */
	uint8_t src[16];      /* if has_source: IPv4 as ::ffff:a.b.c.d (policy_source()'s form) */
	uint8_t dst[16];      /* the address the client connected to, same form */
	uint16_t src_port;    /* host order */
	uint16_t dst_port;
};

/* Parse the first len bytes received on a connection (contiguous; at
 * most PROXY_HEADER_MAX are ever looked at, so more may be passed).
 * Returns 0: not decided yet, call again with more bytes; > 0: a valid
 * header of that many bytes (<= len; the bytes after it are the
 * client's), *out filled; < 0: -enum proxy_reason, never a valid header
 * whatever follows.  *out is written only when done. */
int proxy_parse(const uint8_t *buf, size_t len, struct proxy_header *out);

/* The reason's name ("bad_signature", "malformed", ...): a metrics label
 * and log word; "invalid" for a value outside the enum. */
const char *proxy_reason_name(int reason);

/* CRC32C (Castagnoli, RFC 4960 appendix B) of n bytes, continuing from
 * crc (0 to start): proxy_crc32c(proxy_crc32c(0, a, na), b, nb) is the
 * CRC of a then b. */
uint32_t proxy_crc32c(uint32_t crc, const uint8_t *p, size_t n);

#endif
