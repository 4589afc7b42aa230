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
 *   - dgram_coalesce() (dgram_run_begin/_join): which consecutive echoes
 *     to one peer go out as one UDP_SEGMENT send although they came in
 *     apart (udp.coalesce), and dgram_coalesce_failed() when the kernel
 *     refuses such a send;
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

/* Coalescing (udp.coalesce): at most this many datagrams in one send (the
 * kernel's UDP_MAX_SEGMENTS is 64 before 6.9, 128 since), and at most the
 * payload one send may carry: IPv4 (an IPv4-mapped peer too) 65,535 - 20 -
 * 8; IPv6 65,535 - 8 (the payload length field excludes the IPv6 header;
 * a UDP_SEGMENT send is one skb of the largest size, GSO'd later). */
#define DGRAM_COALESCE_MAX  64
#define DGRAM_SEND_MAX_V4   65507
#define DGRAM_SEND_MAX_V6   65527

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
	bool coalesce;               /* udp.coalesce: echo runs of echoes in one send */
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
	/* coalescing per UDP socket slot: the largest segment size still
	 * coalesced (lowered when the kernel refused one, dgram_coalesce_failed),
	 * and whether that was logged */
	uint16_t seg_ceiling[DGRAM_MAX_SOCKETS];
	bool fallback_logged[DGRAM_MAX_SOCKETS];
	struct srclog log;           /* the log limiter: a line per source per minute */
};

/* An echo waiting to be sent, as coalescing sees it. */
struct dgram_desc {
	const struct sockaddr *peer; /* its destination (the datagram's source) */
	socklen_t peerlen;
	size_t len;                  /* its bytes */
	uint16_t gso;                /* its receive's GRO segment size (0: none) */
};

/* A run: echoes to one peer sent as one send, UDP_SEGMENT = seg. */
struct dgram_run {
	const struct sockaddr *peer;
	socklen_t peerlen;
	size_t seg;                  /* the first echo's length: every segment's but the last */
	size_t bytes;                /* the send's payload */
	size_t max_bytes;            /* DGRAM_SEND_MAX_V4 or _V6, by peer */
	unsigned n;                  /* echoes in it */
	bool closed;                 /* nothing may join: a shorter last, or not coalescible */
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

/* Apply the live settings: udp.gro, udp.coalesce, udp.loop_ports and the
 * allow/deny lists (policy: borrowed, valid until the next call). */
void dgram_set_params(struct dgram_ctx *dc, bool gro, bool coalesce, const uint16_t *loop_ports,
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

/* Start a run with echo d: r holds it alone.  Whether others may join:
 * not if d is empty (a 0-byte datagram is never coalesced: UDP_SEGMENT
 * cannot carry it), a GRO receive of several datagrams (it goes back with
 * its own segment size), longer than seg_max, or to a peer neither IPv4
 * nor IPv6. */
bool dgram_run_begin(struct dgram_run *r, const struct dgram_desc *d, size_t seg_max);

/* Whether echo d, the one after the run's last, joins r (r updated): to
 * the same peer (the same address bytes), not empty nor a GRO receive of
 * several, no longer than r's segment size (a shorter one is the run's
 * last), within DGRAM_COALESCE_MAX echoes and the run's max_bytes. */
bool dgram_run_join(struct dgram_run *r, const struct dgram_desc *d);

/* How many of the n echoes d[0..n) go out as the one send that starts
 * with d[0] (1: alone).  Runs are consecutive echoes, so coalescing never
 * reorders anything.  seg_max: dgram_coalesce_limit(). */
unsigned dgram_coalesce(const struct dgram_desc *d, unsigned n, size_t seg_max);

/* The largest segment size coalescing may use on the worker's UDP socket
 * slot sock_i now: 0 when udp.coalesce is off; below a size the kernel
 * refused on that socket. */
size_t dgram_coalesce_limit(const struct dgram_ctx *dc, unsigned sock_i);

/* The kernel refused a coalesced send (syscall, errno err) of n > 1
 * echoes with UDP_SEGMENT seg on slot sock_i (fd): true if that is
 * coalescing's fault (EINVAL, EMSGSIZE: a segment larger than the path's
 * MTU, e.g. IPV6_MTU, or no GSO; EIO: no checksum offload), and then the
 * caller sends those echoes one by one: the socket's ceiling drops below
 * seg (to 0 on EIO), so they never form that run again; counted
 * (udp_coalesce_fallbacks) and logged once per socket (the syscall and
 * errno).  false: an ordinary send error, for the caller to drop. */
bool dgram_coalesce_failed(struct dgram_ctx *dc, unsigned sock_i, int fd, const char *syscall,
			   size_t seg, unsigned n, int err);

/* Count a send that carried n > 1 echoes coalesced by echod (after
 * dgram_sent()). */
void dgram_coalesced(struct dgram_ctx *dc, unsigned n);

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
