/* conn.h - the echo logic, written once and shared by every backend.
 *
 * A connection holds a FIFO of pool buffers with the bytes received and
 * not yet sent back.  The backend does the I/O and reports it here
 * (conn_received, conn_sent, conn_eof, conn_fail); conn_next() then says
 * what the backend must do next.  The rules:
 *   - bytes go back exactly as received, in order, whatever the short
 *     reads and short sends; the backend keeps one send in flight;
 *   - backpressure: reading stops while the unsent bytes reach
 *     max_pending (or the connection holds max_bufs buffers, or holds any
 *     while the pool is down to its reserve), and resumes below it, so a
 *     client that does not read is throttled by TCP;
 *   - on EOF, the pending bytes are echoed, then the write side is shut
 *     and the connection closed;
 *   - when the worker drains (SIGTERM), reading stops, pending bytes are
 *     echoed, the write side is shut, and what the client still sends is
 *     read and discarded until its EOF (so the close sends no RST);
 *   - a connection that must open with a PROXY protocol header
 *     (CONN_PROXY_WAIT, set by the worker at accept) echoes nothing until
 *     the header is whole: after each read its first bytes go through
 *     proxy_parse(); a complete header is dropped from the queue's head
 *     (counted as discarded, never echoed) and the bytes after it are the
 *     client's; an invalid one, or EOF first, closes the connection.  The
 *     worker's proxy_done hook hears of each outcome (it judges the source
 *     the header names, counts, and arranges the RST).
 *
 * The logic knows nothing of the worker: it works on a struct conn_ctx
 * (the buffer pool, the counters, the clock, the limits and two hooks),
 * which the worker owns and a test can build alone.
 */
#ifndef ECHOD_CONN_H
#define ECHOD_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "bufpool.h"
#include "counters.h"
#include "proxy.h"
#include "persource.h"

/* Links of an intrusive list of connection slots (by index). */
#define ILIST_NONE UINT32_MAX
struct ilink {
	uint32_t prev, next;
};
struct ilist {
	uint32_t head, tail;
};

/* conn.flags */
#define CONN_EOF        (1u << 0)  /* peer shut its write side */
#define CONN_WR_SHUT    (1u << 1)  /* we shut our write side */
#define CONN_FAILED     (1u << 2)  /* error or abort: close, drop pending */
#define CONN_DRAIN      (1u << 3)  /* stop reading, flush, shut, discard */
#define CONN_PAUSED     (1u << 4)  /* reading stopped by backpressure */
#define CONN_IN_USE     (1u << 5)  /* slot is allocated */
#define CONN_FREEZE     (1u << 6)  /* being handed over: stop reading, keep sending */
#define CONN_SLOW       (1u << 7)  /* its client did not keep up (a send blocked):
				      never given the pool's reserve */
#define CONN_NOBUF      (1u << 8)  /* found no free buffer (counted once), and has
				      been given none since */
#define CONN_PROXY_WAIT (1u << 9)  /* its PROXY header is not whole yet: echo nothing */
#define CONN_PROXIED    (1u << 10) /* src holds the source its PROXY header named */
/* the state a connection keeps when handed to another worker or process */
#define CONN_EXPORTED_FLAGS (CONN_EOF | CONN_WR_SHUT | CONN_DRAIN | CONN_PROXY_WAIT)

/* conn_next() result bits */
#define CONN_NEXT_READ      (1u << 0)  /* read more (into the queue, or discard) */
#define CONN_NEXT_SEND      (1u << 1)  /* send the queue's head (conn_send_iov) */
#define CONN_NEXT_SHUTDOWN  (1u << 2)  /* shutdown(SHUT_WR), then conn_shut_done */
#define CONN_NEXT_CLOSE     (1u << 3)  /* close and conn_free */

/* Generations wrap at 24 bits: with the slot index they fit in an epoll
 * key or an io_uring user_data beside an op code. */
#define CONN_GEN_MASK 0xffffffu

struct conn {
	int fd;
	uint32_t flags;
	uint32_t gen;          /* bumped on free (CONN_GEN_MASK): stale events never match */
	uint32_t idx;          /* slot index in the worker's table */
	uint32_t q_head;       /* buffer queue (bufpool ids), BUF_NONE if empty */
	uint32_t q_tail;
	uint32_t pending;      /* bytes queued, not yet sent */
	uint32_t nbufs;        /* buffers held in the queue */
	struct ilink lru;      /* the worker's idle list, least recent first */
	struct ilink wait;     /* a backend's wait/ready list */
	uint32_t bstate;       /* backend's private state bits */
	uint32_t bdata;        /* backend's private datum (io_uring: bytes of the send in flight) */
	uint64_t last_active;  /* worker clock, ms */
	uint8_t *carry;        /* unsent bytes carried over from a hand-over (malloc'd), */
	uint32_t carry_off;    /* sent before the queue; NULL when none */
	uint32_t carry_len;
	struct ilink hdr;      /* CONN_PROXY_WAIT: the worker's list of connections
				  awaiting their header, oldest first */
	uint64_t hdr_since;    /* CONN_PROXY_WAIT: when the wait began, ms */
	uint8_t src[16];       /* CONN_PROXIED: the client's address (IPv4 as
				  ::ffff:a.b.c.d), which the peer's is not */
	uint32_t src_slot;     /* its source's entry in the per-source table, counted
				  until the connection closes (PERSOURCE_NONE: untracked) */
	uint64_t start_us;     /* when it was accepted (conn_now_us), for the duration
				  histogram; kept through hand-overs and the fd store */
	uint64_t sent;         /* bytes echoed to it, for the bytes histogram; kept too */
};

/* What the echo logic works with: owned by one worker (its thread). */
struct conn_ctx {
	struct bufpool pool;
	struct worker_counters *ctr;
	uint64_t now_ms;            /* the worker's clock, ms (monotonic) */
	uint32_t max_pending;       /* backpressure cap, bytes */
	uint32_t max_bufs;          /* buffers one connection may hold */
	uint32_t buf_reserve;       /* free buffers kept for connections holding none */
	/* A buffer goes back to the pool (set by the backend). */
	void (*buf_release)(struct conn_ctx *cc, uint32_t bid);
	/* c was active at now_ms, for the first time at that tick: move it
	 * to the idle list's tail (NULL: no idle list). */
	void (*touch)(struct conn_ctx *cc, struct conn *c);
	/* c's PROXY header is decided: n > 0, the header of n bytes h says
	 * (already dropped from the queue; c no longer CONN_PROXY_WAIT): the
	 * hook judges the source and may conn_fail() c; n < 0, -enum
	 * proxy_reason (invalid, or EOF first): c is failed after the hook
	 * returns, which counts it and may arrange an RST.  NULL: every
	 * complete header is accepted. */
	void (*proxy_done)(struct conn_ctx *cc, struct conn *c, int n,
			   const struct proxy_header *h);
};

/* A connection as handed from one worker (or process) to another: its
 * socket, its state and the bytes received but not yet echoed. */
struct conn_export {
	int fd;
	uint32_t flags;        /* CONN_EXPORTED_FLAGS bits */
	uint32_t len;
	uint8_t *data;         /* malloc'd, len bytes, or NULL */
	uint32_t src_slot;     /* between workers: its per-source entry, still counted
				  (PERSOURCE_NONE: not counted; the importer counts it) */
	bool src_known;        /* src holds its source (one the peer address does not
				  give, e.g. a PROXY header's), else the peer address is */
	uint8_t src[16];       /* IPv4 as ::ffff:a.b.c.d */
	uint64_t start_us;     /* when it was accepted (conn_now_us); 0: not known, the
				  importer counts its duration from the import */
	uint64_t sent;         /* bytes echoed to it so far */
};

/* Queue len bytes received into buffer bid at offset off.  Takes the
 * buffer (it returns to the pool once sent); if the tail buffer has room
 * for a small segment, the bytes are copied there and bid is released at
 * once.  Bytes read after the write side was shut are discarded.  c was
 * given a buffer: it is no longer starved. */
void conn_received(struct conn_ctx *cc, struct conn *c, uint32_t bid,
		   uint32_t off, uint32_t len);

/* Room after the tail buffer's bytes (for a backend that reads into
 * memory it chooses): sets *bid and *off and returns the bytes free, or 0
 * when a new buffer is needed. */
uint32_t conn_tail_room(struct conn_ctx *cc, struct conn *c, uint32_t *bid, uint32_t *off);

/* As conn_received(), for n bytes read straight into the tail room. */
void conn_received_tail(struct conn_ctx *cc, struct conn *c, uint32_t n);

/* Fill iov with the unsent bytes, head first, at most max entries.
 * Returns the number of entries (0 if nothing is pending). */
int conn_send_iov(struct conn_ctx *cc, const struct conn *c, struct iovec *iov, int max);

/* n bytes of the queue's head were sent: buffers fully sent go back to
 * the pool (through the backend's release hook).
 * conn_send_blocked: the socket took less than offered, or nothing (its
 * client is not keeping up): c is marked slow until its queue empties
 * through a send the socket took whole. */
void conn_sent(struct conn_ctx *cc, struct conn *c, uint32_t n);
void conn_send_blocked(struct conn_ctx *cc, struct conn *c);
/* A send the socket took whole: c is no longer slow once its queue is empty. */
void conn_send_whole(struct conn_ctx *cc, struct conn *c);

/* Buffer exhaustion, counted as events: c wanted to read and found no
 * free buffer.  Counted when c goes from able to read to starved; not
 * again while it stays starved (however often the backend looks for a
 * buffer for it), only once it has been given a buffer in between
 * (conn_got_buffer, or bytes received). */
void conn_no_buffer(struct conn_ctx *cc, struct conn *c);
static inline void conn_got_buffer(struct conn *c)
{
	c->flags &= ~CONN_NOBUF;
}

/* Whether c may take one of the pool's reserve buffers. */
static inline bool conn_may_use_reserve(const struct conn *c)
{
	return c->nbufs == 0 && !(c->flags & CONN_SLOW);
}

/* Activity on c: its idle time starts again (received and sent bytes
 * count as activity already). */
void conn_touch(struct conn_ctx *cc, struct conn *c);

/* The peer shut its write side (read returned 0). */
void conn_eof(struct conn_ctx *cc, struct conn *c);

/* The write side is shut (shutdown(SHUT_WR) done or failed). */
void conn_shut_done(struct conn_ctx *cc, struct conn *c);

/* An I/O error (-errno) or an abort: the connection is to be closed. */
void conn_fail(struct conn_ctx *cc, struct conn *c, int err);

/* What the backend must do next (CONN_NEXT_* bits). Also updates the
 * backpressure state and its counters. */
unsigned conn_next(struct conn_ctx *cc, struct conn *c);

/* Whether the connection may read now (part of conn_next). */
bool conn_want_read(struct conn_ctx *cc, struct conn *c);

/* Export c's state into e (fd, flags, the unsent bytes copied out, its
 * per-source slot, still counted; src unknown; start and bytes echoed).
 * 0 or -ENOMEM. */
int conn_export(struct conn_ctx *cc, const struct conn *c, struct conn_export *e);
/* Take e's state into a fresh slot c: e->data becomes c's carry, and
 * e->src_slot its per-source slot; its start (if known) and bytes echoed. */
void conn_import(struct conn_ctx *cc, struct conn *c, struct conn_export *e);
/* Release the carry, if any. */
void conn_carry_free(struct conn *c);

/* The clock of a connection's start and close: CLOCK_MONOTONIC in
 * microseconds (the same in every process until a reboot, so a start
 * survives the fd store). */
uint64_t conn_now_us(void);

/* A fresh connection on a new slot: nothing queued, active now, started
 * now (conn_now_us), nothing echoed yet. */
void conn_start(struct conn_ctx *cc, struct conn *c);
/* The connection ends: its queue's buffers go back to the pool and its
 * carry is freed (what was unsent is dropped). */
void conn_drop(struct conn_ctx *cc, struct conn *c);

#endif
