/* srclog.h - at most one log line per source per minute: the limiter the
 * UDP drops (dgram.c) and the TCP denials (worker_conns.c) share.
 *
 * A fixed table of SRCLOG_SLOTS sources, a source taking one of
 * SRCLOG_WAYS slots from its hash on: a source that finds its ways taken
 * by others logged within the minute is not logged (counted in
 * suppressed, which the next line logged reports), so a flood of spoofed
 * sources logs at most SRCLOG_SLOTS lines a minute.  Nothing allocates.
 */
#ifndef ECHOD_SRCLOG_H
#define ECHOD_SRCLOG_H

#include <stdbool.h>
#include <stdint.h>

#define SRCLOG_SLOTS       64        /* sources remembered */
#define SRCLOG_WAYS        4         /* slots a source may take (its hash, and on) */
#define SRCLOG_INTERVAL_MS 60000     /* one log line per source per minute */

struct srclog_slot {
	uint8_t addr[16];            /* IPv6, or IPv4 as ::ffff:a.b.c.d */
	uint64_t last_ms;            /* when it was last logged; 0: free */
};

struct srclog {
	struct srclog_slot slot[SRCLOG_SLOTS];
	uint64_t suppressed;         /* events not logged: the table was full */
};

/* Whether an event from source a may be logged at now_ms (the caller then
 * logs it, with srclog_take_suppressed()). */
bool srclog_may(struct srclog *l, const uint8_t a[16], uint64_t now_ms);

/* "; N WHAT from other sources not logged" into buf (or ""), and forget
 * that count; what: "drop(s)", "denial(s)". */
void srclog_take_suppressed(struct srclog *l, const char *what, char *buf, unsigned size);

#endif
