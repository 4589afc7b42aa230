/* dgram.h - the UDP echo logic, written once and shared by every backend.
 *
 * A backend receives datagrams and sends each back to its source, whole;
 * what it decides with these helpers:
 *   - dgram_check(): whether a source may be answered at all (loop and
 *     reflection protection: source port 0, udp.loop_ports, multicast,
 *     broadcast and unspecified sources; then the allow/deny lists; then
 *     the per-source datagram rate, persource.h) -- dropped, counted, and
 *     logged at most once a minute per source address (srclog.h);
 *   - dgram_parse_cmsg(): a receive's control data: the UDP_GRO segment
 *     size and the SO_RXQ_OVFL count;
 *   - dgram_put_segment(): an echo's control data: UDP_SEGMENT, so a
 *     coalesced receive goes back as the same datagrams in one send;
 *   - the counting: datagrams and bytes in and out, drops by reason, the
 *     kernel's receive-queue drops.
 * The rules a backend keeps (backend.h): a receive flagged MSG_TRUNC is
 * dropped as DDROP_TRUNCATED, never echoed short (receive buffers hold
 * DGRAM_MAX_PAYLOAD bytes: the largest datagram, and the largest GRO
 * receive); echoes of one socket leave in the order received; a send the
 * socket cannot take now waits, in order, while that socket is not read;
 * any other send error drops the echo as DDROP_SEND_ERROR.
 *
 * Nothing here knows io_uring or epoll, allocates, or blocks (but for the
 * per-source table's mutex, held for one lookup, and only while
 * per_source.datagram_rate is on): it works on a struct dgram_ctx
 * (counters, clock, the live settings, the log limiter), which the worker
 * owns and a test can build alone.
 */
#ifndef ECHOD_DGRAM_H
#define ECHOD_DGRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"
#include "counters.h"
#include "persource.h"
#include "policy.h"
#include "srclog.h"

#define DGRAM_MAX_PAYLOAD   65535     /* a receive buffer: any datagram, any GRO receive */
#define DGRAM_MAX_SOCKETS   64        /* UDP sockets of one worker (= LISTEN_MAX) */

/* Control data of an echo: one UDP_SEGMENT (uint16_t). */
#define DGRAM_CMSG_SPACE    CMSG_SPACE(sizeof(uint16_t))
/* Control data of a receive: UDP_GRO (int) and SO_RXQ_OVFL (uint32_t). */
/* Room for the control data of a receive: UDP_GRO (int) and SO_RXQ_OVFL
 * (uint32_t), and what an inherited socket may add (PassPacketInfo=,
 * Timestamping=, PassSecurity= ...); a receive whose control data is cut
 * (MSG_CTRUNC) may have lost its segment size: dropped as truncated. */
#define DGRAM_RX_CMSG_SPACE 256

struct dgram_ctx {
	struct worker_counters *ctr; /* the worker's (set by the main thread) */
	uint64_t now_ms;             /* the worker's clock, refreshed by the worker */
	unsigned worker_id;          /* for the log lines */
	/* the live settings (worker_params, applied by the worker) */
	bool gro;                    /* udp.gro: echo a coalesced receive with UDP_SEGMENT */
	unsigned n_loop_ports;
	uint16_t loop_ports[CONFIG_MAX_LOOP_PORTS];
	const struct policy *policy; /* allow/deny (the worker holds the reference) */
	struct persource *persource; /* the per-source table (shared; NULL: none) */
	/* kernel drops: the SO_RXQ_OVFL count last seen, per UDP socket slot */
	uint32_t ovfl_seen[DGRAM_MAX_SOCKETS];
	/* the ports echod's own UDP sockets are bound to: a datagram from one
	 * of them is another echo service answering (loop_port) */
	unsigned n_own_ports;
	uint16_t own_ports[DGRAM_MAX_SOCKETS];
	struct srclog log;           /* the log limiter: a line per source per minute */
};

/* Set up dc (everything zero but the counters and the worker id). */
void dgram_init(struct dgram_ctx *dc, struct worker_counters *ctr, unsigned worker_id);

/* A UDP socket the worker serves in slot sock_i, at the start of the
 * process: its port is refused as a source (two echo services on the same
 * port would bounce a datagram forever, whatever udp.loop_ports says), and
 * the kernel drops it counted before (SO_MEMINFO: the drops SO_RXQ_OVFL
 * reports are the socket's, since it was created, and an inherited socket
 * outlives a restart) are not counted again.  0 or -errno (logged). */
int dgram_attach_socket(struct dgram_ctx *dc, unsigned sock_i, int fd);

/* Apply the live settings: udp.gro, udp.loop_ports and the allow/deny
 * lists (policy: borrowed, valid until the next call). */
void dgram_set_params(struct dgram_ctx *dc, bool gro, const uint16_t *loop_ports,
		      unsigned n_loop_ports, const struct policy *policy);

/* Whether a receive of n datagrams (a GRO receive holds several) from src
 * may be echoed: 0, or a DDROP_* + 1 after counting the n drops and
 * logging them at most once a minute per source.
 * Drops source port 0 (bad_source), the ports of udp.loop_ports and
 * echod's own UDP ports (loop_port), and multicast, broadcast (255.255.255.255) and unspecified
 * (0.0.0.0/8, ::) sources (bad_source); an IPv4-mapped IPv6 source is
 * judged as IPv4; then a source the allow/deny lists refuse (denied);
 * then, with per_source.datagram_rate on, a source whose bucket holds
 * fewer than n datagrams (rate_limited: the n are dropped) or that finds
 * no entry in the per-source table (table_full).  This is where a UDP
 * source is judged. */
int dgram_check(struct dgram_ctx *dc, const struct sockaddr *src, socklen_t srclen,
		unsigned n);

/* Parse a received msghdr's control data: the GRO segment size (0 if
 * none) and the SO_RXQ_OVFL count (*ovfl set and *has_ovfl true if
 * present).  The kernel attaches the count only once it is nonzero, to
 * each datagram queued after the drops: a drop shows with the next one. */
void dgram_parse_cmsg(const struct msghdr *m, uint16_t *gso_size, uint32_t *ovfl,
		      bool *has_ovfl);

/* Kernel drops: ovfl is the cumulative SO_RXQ_OVFL count a receive on the
 * worker's UDP socket slot sock_i carried; adds the increase since the
 * last one seen on that slot to udp_kernel_drops. */
void dgram_kernel_drops(struct dgram_ctx *dc, unsigned sock_i, uint32_t ovfl);

/* Fill the control buffer of an echo of len bytes received with segment
 * size gso_size: UDP_SEGMENT = gso_size when len > gso_size > 0, else
 * nothing; whatever udp.gro says now (a receive coalesced before a reload
 * turned it off still goes back as its datagrams).  Returns msg_controllen (0: none; then
 * msg_control must be NULL).  cbuf holds DGRAM_CMSG_SPACE bytes, aligned
 * for struct cmsghdr. */
size_t dgram_put_segment(const struct dgram_ctx *dc, void *cbuf, uint16_t gso_size,
			 size_t len);

/* The datagrams in a receive (or an echo) of len bytes with segment size
 * gso_size: len / gso_size rounded up; 1 without segments (or len 0). */
unsigned dgram_count(size_t len, uint16_t gso_size);

/* Count a receive of len bytes (dgram_count() datagrams; a GRO receive
 * if it holds more than one), and an echo sent whole. */
void dgram_received(struct dgram_ctx *dc, size_t len, uint16_t gso_size);
void dgram_sent(struct dgram_ctx *dc, size_t len, uint16_t gso_size);

/* Count n datagrams dropped for why (dgram_check() counts its own). */
void dgram_drop(struct dgram_ctx *dc, enum dgram_drop why, unsigned n);

#endif
