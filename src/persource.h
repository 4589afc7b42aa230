/* persource.h - per-source limits: one table of sources shared by every
 * event loop, counting each source's open TCP connections and metering
 * its new connections and its datagrams with token buckets.
 *
 * A source is an address as 16 bytes (IPv4 as ::ffff:a.b.c.d, a whole
 * /32); an IPv6 source is aggregated to per_source.ipv6_prefix bits (one
 * customer's /64 is one source).  The table holds per_source.table_size
 * entries, allocated once at start-up (one mapping: the entries and the
 * hash index, pages touched as entries are taken) and never again; one
 * mutex guards it, so the limits are exact across event loops.
 *
 * An entry with no open connection sits on an idle list, least recently
 * used first; a new source takes a never-used entry, else the coldest idle
 * one (an eviction, counted: that source's buckets are forgotten).  An
 * entry with open connections is never evicted, so a connection's slot
 * stays its source's until it closes.  When every entry has open
 * connections, a new source is refused (PS_TABLE_FULL) if any per-source
 * limit is on, and admitted untracked (PERSOURCE_NONE) if none is.
 *
 * Connections are counted whenever the table exists, limits on or off, so
 * that per_source.max_connections turned on by a reload is exact for the
 * connections already open.  Every function takes t NULL (no table: every
 * source passes, nothing is counted) and slot PERSOURCE_NONE (untracked).
 */
#ifndef ECHOD_PERSOURCE_H
#define ECHOD_PERSOURCE_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

#define PERSOURCE_NONE UINT32_MAX          /* no slot: untracked */
#define PERSOURCE_LOG_INTERVAL_MS 60000    /* a log line per source per minute */

struct persource;

/* The live settings (per_source.*; 0 = off for the limits). */
struct persource_limits {
	uint32_t max_connections;   /* open TCP connections per source */
	uint32_t connection_rate;   /* new TCP connections per second per source */
	uint32_t connection_burst;  /* its bucket */
	uint32_t datagram_rate;     /* UDP datagrams per second per source */
	uint32_t datagram_burst;    /* its bucket */
	unsigned ipv6_prefix;       /* 1..128 */
};

enum persource_verdict {
	PS_PASS,                    /* admitted (and counted) */
	PS_CONNECTIONS,             /* max_connections reached */
	PS_RATE,                    /* its bucket is empty */
	PS_TABLE_FULL,              /* no entry for a new source: all hold connections */
};

/* A refusal, for the log: whether this one is to be logged (the source's
 * first in PERSOURCE_LOG_INTERVAL_MS; never for PS_TABLE_FULL, which has
 * no entry to remember it by), the limit (and burst) it exceeded, and the
 * refusals of this source not logged since its previous line. */
struct persource_refusal {
	bool log;
	uint32_t limit, burst;
	uint32_t unlogged;
};

/* Map a table of size entries.  0, or -errno (logged: mmap). */
int persource_create(struct persource **out, uint32_t size);
/* Unmap it (t may be NULL). */
void persource_destroy(struct persource *t);

/* Apply limits (from the next call on; the counts stay). */
void persource_set_limits(struct persource *t, const struct persource_limits *l);
/* The limits of a configuration's per_source group. */
void persource_limits_from_config(struct persource_limits *l, const struct echod_config *cfg);
/* Apply cfg's per_source limits (at start and at each reload). */
void persource_apply_config(struct persource *t, const struct echod_config *cfg);

/* A new TCP connection from a at now_ms: PS_PASS with *slot its source's
 * entry (or PERSOURCE_NONE: untracked) and the source's count raised, or
 * why not, with *r filled. */
enum persource_verdict persource_conn_open(struct persource *t, const uint8_t a[16],
					   uint64_t now_ms, uint32_t *slot,
					   struct persource_refusal *r);
/* An established connection from a taken over (a restart through the fd
 * store): counted whatever the limits say; its slot, or PERSOURCE_NONE. */
uint32_t persource_conn_adopt(struct persource *t, const uint8_t a[16], uint64_t now_ms);
/* The connection counted at slot closed (or was never served). */
void persource_conn_close(struct persource *t, uint32_t slot);

/* Whether datagrams are metered (datagram_rate on): a relaxed load, no lock. */
bool persource_dgram_metered(const struct persource *t);
/* A receive of n datagrams from a at now_ms: PS_PASS (n tokens taken), or
 * PS_RATE (fewer than n tokens: all n refused) or PS_TABLE_FULL, *r filled. */
enum persource_verdict persource_dgram(struct persource *t, const uint8_t a[16], unsigned n,
				       uint64_t now_ms, struct persource_refusal *r);

/* Figures for the metrics (relaxed loads, no lock): entries in use, the
 * table's size, evictions so far. */
uint32_t persource_used(const struct persource *t);
uint32_t persource_size(const struct persource *t);
uint64_t persource_evictions(const struct persource *t);

/* The open connections counted for a's source (tests, debugging). */
uint32_t persource_count(struct persource *t, const uint8_t a[16]);

/* The key of source a: a masked to prefix bits, unless it is IPv4. */
void persource_key(const uint8_t a[16], unsigned ipv6_prefix, uint8_t key[16]);

#endif
