/* dgram.c - the UDP echo logic: source checks, the log limiter, control
 * data in and out, counting; see dgram.h */
#include "dgram.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

_Static_assert(DGRAM_CMSG_SPACE >= CMSG_SPACE(sizeof(uint16_t)), "room for UDP_SEGMENT");

static const char *const drop_names[DDROP__COUNT] = {
	[DDROP_TRUNCATED] = "truncated", [DDROP_LOOP_PORT] = "loop_port",
	[DDROP_BAD_SOURCE] = "bad_source", [DDROP_SEND_ERROR] = "send_error",
	[DDROP_DENIED] = "denied", [DDROP_RATE_LIMITED] = "rate_limited",
	[DDROP_TABLE_FULL] = "table_full",
};

void dgram_init(struct dgram_ctx *dc, struct worker_counters *ctr, unsigned worker_id)
{
	memset(dc, 0, sizeof(*dc));
	dc->ctr = ctr;
	dc->worker_id = worker_id;
	for (unsigned i = 0; i < DGRAM_MAX_SOCKETS; i++)
		dc->seg_ceiling[i] = UINT16_MAX;
}

void dgram_set_params(struct dgram_ctx *dc, bool gro, bool coalesce, const uint16_t *loop_ports,
		      unsigned n_loop_ports, const struct policy *policy)
{
	dc->policy = policy;
	if (n_loop_ports > CONFIG_MAX_LOOP_PORTS)
		n_loop_ports = CONFIG_MAX_LOOP_PORTS;
	dc->gro = gro;
	dc->coalesce = coalesce;
	dc->n_loop_ports = n_loop_ports;
	if (n_loop_ports)
		memcpy(dc->loop_ports, loop_ports, n_loop_ports * sizeof(*loop_ports));
}

/* ---- source checks ---- */

static bool is_v4(const uint8_t a[16])
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	return memcmp(a, mapped, sizeof(mapped)) == 0;
}

/* Multicast, broadcast or unspecified: no reply may go there. */
static bool bad_address(const uint8_t a[16])
{
	static const uint8_t zero[16];

	if (is_v4(a))
		return a[12] == 0 ||                    /* 0.0.0.0/8: "this network" */
		       (a[12] & 0xf0) == 0xe0 ||        /* 224.0.0.0/4: multicast */
		       (a[12] == 255 && a[13] == 255 && a[14] == 255 && a[15] == 255);
	return a[0] == 0xff ||                           /* ff00::/8: multicast */
	       memcmp(a, zero, sizeof(zero)) == 0;      /* :: */
}

static bool loop_port(const struct dgram_ctx *dc, uint16_t port)
{
	for (unsigned i = 0; i < dc->n_loop_ports; i++)
		if (dc->loop_ports[i] == port)
			return true;
	for (unsigned i = 0; i < dc->n_own_ports; i++)
		if (dc->own_ports[i] == port)
			return true;
	return false;
}

static void log_drop(struct dgram_ctx *dc, const uint8_t a[16], uint16_t port,
		     enum dgram_drop why)
{
	char shown[48], more[80];

	if (!srclog_may(&dc->log, a, dc->now_ms))
		return;
	policy_source_text(a, shown, sizeof(shown));
	srclog_take_suppressed(&dc->log, "drop(s)", more, sizeof(more));
	log_warning("worker %u: UDP datagram from %s port %u refused (%s)%s",
		    dc->worker_id, shown, port, drop_names[why], more);
}

/* A source over its per-source datagram rate (or finding the table full):
 * logged once a minute per source, through the table's own memory of it
 * (a full table has none: the log limiter). */
static void log_limit(struct dgram_ctx *dc, const uint8_t a[16], uint16_t port,
		      enum dgram_drop why, const struct persource_refusal *r)
{
	char shown[48], more[80] = "";

	if (why == DDROP_TABLE_FULL ? !srclog_may(&dc->log, a, dc->now_ms) : !r->log)
		return;
	policy_source_text(a, shown, sizeof(shown));
	if (why == DDROP_TABLE_FULL) {
		srclog_take_suppressed(&dc->log, "drop(s)", more, sizeof(more));
		log_warning("worker %u: UDP datagram from %s port %u refused (table_full): "
			    "the per-source table's %u entries all hold connections%s",
			    dc->worker_id, shown, port, r->limit, more);
		return;
	}
	if (r->unlogged)
		snprintf(more, sizeof(more), "; %u refusal(s) of this source not logged", r->unlogged);
	log_warning("worker %u: UDP datagram from %s port %u refused (rate_limited): exceeded "
		    "%u datagrams/s (burst %u)%s", dc->worker_id, shown, port, r->limit, r->burst, more);
}

int dgram_check(struct dgram_ctx *dc, const struct sockaddr *src, socklen_t srclen,
		unsigned n)
{
	struct persource_refusal r = { 0 };
	enum persource_verdict v = PS_PASS;
	enum dgram_drop why;
	uint8_t a[16];
	uint16_t port;

	if (!policy_source(src, srclen, a, &port)) {
		memset(a, 0, sizeof(a));
		port = 0;
		why = DDROP_BAD_SOURCE;
	} else if (port == 0 || bad_address(a)) {
		why = DDROP_BAD_SOURCE;
	} else if (loop_port(dc, port)) {
		why = DDROP_LOOP_PORT;
	} else if (!policy_allows(dc->policy, a)) {
		why = DDROP_DENIED;
	} else if (!persource_dgram_metered(dc->persource) ||
		   (v = persource_dgram(dc->persource, a, n, dc->now_ms, &r)) == PS_PASS) {
		return 0;
	} else {
		why = v == PS_RATE ? DDROP_RATE_LIMITED : DDROP_TABLE_FULL;
		dgram_drop(dc, why, n);
		log_limit(dc, a, port, why, &r);
		return (int)why + 1;
	}
	dgram_drop(dc, why, n);
	log_drop(dc, a, port, why);
	return (int)why + 1;
}

int dgram_attach_socket(struct dgram_ctx *dc, unsigned sock_i, int fd)
{
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	uint32_t mem[SK_MEMINFO_VARS];
	socklen_t memlen = sizeof(mem);
	uint8_t a[16];
	uint16_t port = 0;
	bool known = false;
	int err;

	if (sock_i >= DGRAM_MAX_SOCKETS)
		return -EINVAL;
	if (getsockname(fd, (struct sockaddr *)&ss, &sslen) < 0) {
		err = errno;
		log_errno(LOG_WARNING, err, "worker %u: getsockname fd %d", dc->worker_id, fd);
		return -err;
	}
	if (!policy_source((const struct sockaddr *)&ss, sslen, a, &port))
		port = 0;
	for (unsigned i = 0; i < dc->n_own_ports; i++)
		known |= dc->own_ports[i] == port;
	if (port && !known && dc->n_own_ports < DGRAM_MAX_SOCKETS)
		dc->own_ports[dc->n_own_ports++] = port;
	memset(mem, 0, sizeof(mem));
	if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &memlen) < 0) {
		err = errno;
		log_errno(LOG_WARNING, err, "worker %u: getsockopt SO_MEMINFO fd %d",
			  dc->worker_id, fd);
		return -err;
	}
	if (memlen > SK_MEMINFO_DROPS * sizeof(uint32_t))
		dc->ovfl_seen[sock_i] = mem[SK_MEMINFO_DROPS];
	return 0;
}

/* ---- control data ---- */

void dgram_parse_cmsg(const struct msghdr *m, uint16_t *gso_size, uint32_t *ovfl,
		      bool *has_ovfl)
{
	struct cmsghdr *c;

	*gso_size = 0;
	*has_ovfl = false;
	for (c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR((struct msghdr *)m, c)) {
		if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO &&
		    c->cmsg_len >= CMSG_LEN(sizeof(int))) {
			int v;

			memcpy(&v, CMSG_DATA(c), sizeof(v));
			*gso_size = v > 0 && v <= UINT16_MAX ? (uint16_t)v : 0;
		} else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL &&
			   c->cmsg_len >= CMSG_LEN(sizeof(uint32_t))) {
			memcpy(ovfl, CMSG_DATA(c), sizeof(*ovfl));
			*has_ovfl = true;
		}
	}
}

void dgram_kernel_drops(struct dgram_ctx *dc, unsigned sock_i, uint32_t ovfl)
{
	uint32_t delta;

	if (sock_i >= DGRAM_MAX_SOCKETS)
		return;
	delta = ovfl - dc->ovfl_seen[sock_i];          /* the count wraps at 2^32 */
	if (delta && delta < UINT32_MAX / 2) {
		ctr_add(&dc->ctr->udp_kernel_drops, delta);
		dc->ovfl_seen[sock_i] = ovfl;
	}
}

size_t dgram_put_segment(const struct dgram_ctx *dc, void *cbuf, uint16_t gso_size,
			 size_t len)
{
	struct cmsghdr *c = cbuf;

	(void)dc;      /* whatever udp.gro says now: a coalesced receive goes back whole */
	if (!gso_size || len <= gso_size)
		return 0;
	memset(cbuf, 0, DGRAM_CMSG_SPACE);
	c->cmsg_level = SOL_UDP;
	c->cmsg_type = UDP_SEGMENT;
	c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
	memcpy(CMSG_DATA(c), &gso_size, sizeof(gso_size));
	return CMSG_SPACE(sizeof(uint16_t));
}

/* ---- coalescing ---- */

/* The payload one send to peer may carry; 0: neither IPv4 nor IPv6. */
static size_t send_max(const struct sockaddr *peer, socklen_t peerlen)
{
	uint8_t a[16];
	uint16_t port;

	if (!peer || !policy_source(peer, peerlen, a, &port))
		return 0;
	/* an IPv4-mapped peer of an IPv6 socket goes out as IPv4 */
	return is_v4(a) ? DGRAM_SEND_MAX_V4 : DGRAM_SEND_MAX_V6;
}

/* Several datagrams in one receive: echoed with their own segment size. */
static bool gro_batch(const struct dgram_desc *d)
{
	return d->gso && d->len > d->gso;
}

bool dgram_run_begin(struct dgram_run *r, const struct dgram_desc *d, size_t seg_max)
{
	r->peer = d->peer;
	r->peerlen = d->peerlen;
	r->seg = d->len;
	r->bytes = d->len;
	r->n = 1;
	r->max_bytes = send_max(d->peer, d->peerlen);
	r->closed = !d->len || gro_batch(d) || d->len > seg_max || !r->max_bytes;
	return !r->closed;
}

bool dgram_run_join(struct dgram_run *r, const struct dgram_desc *d)
{
	if (r->closed || !d->len || gro_batch(d) || d->len > r->seg ||
	    r->n >= DGRAM_COALESCE_MAX || d->len > r->max_bytes - r->bytes ||
	    d->peerlen != r->peerlen || memcmp(d->peer, r->peer, r->peerlen) != 0)
		return false;
	r->n++;
	r->bytes += d->len;
	r->closed = d->len < r->seg;
	return true;
}

unsigned dgram_coalesce(const struct dgram_desc *d, unsigned n, size_t seg_max)
{
	struct dgram_run r;

	if (!n)
		return 0;
	if (dgram_run_begin(&r, &d[0], seg_max))
		while (r.n < n && dgram_run_join(&r, &d[r.n]))
			;
	return r.n;
}

size_t dgram_coalesce_limit(const struct dgram_ctx *dc, unsigned sock_i)
{
	if (!dc->coalesce || sock_i >= DGRAM_MAX_SOCKETS)
		return 0;
	return dc->seg_ceiling[sock_i];
}

bool dgram_coalesce_failed(struct dgram_ctx *dc, unsigned sock_i, int fd, const char *syscall,
			   size_t seg, unsigned n, int err)
{
	uint16_t was;

	if (n < 2 || sock_i >= DGRAM_MAX_SOCKETS || (err != EINVAL && err != EMSGSIZE && err != EIO))
		return false;
	was = dc->seg_ceiling[sock_i];
	/* EIO: the route cannot take any (no checksum offload, xfrm) */
	dc->seg_ceiling[sock_i] = err == EIO || seg == 0 ? 0 :
				  (uint16_t)(seg - 1 < was ? seg - 1 : was);
	ctr_add(&dc->ctr->udp_coalesce_fallbacks, 1);
	log_errno(dc->fallback_logged[sock_i] ? LOG_DEBUG : LOG_WARNING, err,
		  "worker %u: UDP fd %d: %s of %u datagrams as one (UDP_SEGMENT %zu) refused; "
		  "sent one by one, and on this socket %s", dc->worker_id, fd, syscall, n, seg,
		  dc->seg_ceiling[sock_i] ? "only datagrams smaller than that are coalesced from now on"
					  : "none are coalesced any more");
	dc->fallback_logged[sock_i] = true;
	return true;
}

void dgram_coalesced(struct dgram_ctx *dc, unsigned n)
{
	ctr_add(&dc->ctr->udp_coalesced_sends, 1);
	ctr_add(&dc->ctr->udp_coalesced_datagrams, n);
}

/* ---- counting ---- */

unsigned dgram_count(size_t len, uint16_t gso_size)
{
	if (!gso_size || len <= gso_size)
		return 1;
	return (unsigned)((len + gso_size - 1) / gso_size);
}

void dgram_received(struct dgram_ctx *dc, size_t len, uint16_t gso_size)
{
	unsigned n = dgram_count(len, gso_size);

	ctr_add(&dc->ctr->udp_rx_datagrams, n);
	ctr_add(&dc->ctr->udp_rx_bytes, len);
	if (n > 1)
		ctr_add(&dc->ctr->udp_gro_receives, 1);
}

void dgram_sent(struct dgram_ctx *dc, size_t len, uint16_t gso_size)
{
	ctr_add(&dc->ctr->udp_tx_datagrams, dgram_count(len, gso_size));
	ctr_add(&dc->ctr->udp_tx_bytes, len);
}

void dgram_drop(struct dgram_ctx *dc, enum dgram_drop why, unsigned n)
{
	if ((unsigned)why < DDROP__COUNT)
		ctr_add(&dc->ctr->udp_drops[why], n);
}
