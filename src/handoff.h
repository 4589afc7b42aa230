/* handoff.h - established connections across a restart, through
 * systemd's file descriptor store (FileDescriptorStoreMax=).
 *
 * At stop, each connection's socket is stored as
 * "conn.ID.FLAGS[.SRC][.sSTART][.bBYTES]" and its
 * unsent bytes, if any, as a memfd "data.ID" (stored first: a connection
 * is never resumed without its bytes).  At start, systemd passes them
 * back with the listeners; they are paired, read, and removed from the
 * store (FDSTOREREMOVE=1), so closing them later really closes them.  The
 * workers that take them count each by its source in the per-source table
 * (SRC, else the peer address), over the limits or not. */
#ifndef ECHOD_HANDOFF_H
#define ECHOD_HANDOFF_H

#include "conn.h"
#include "listen.h"

/* "conn.ID.FLAGS.SRC.sSTART.bBYTES" with NUL: 5 + 10 + 1 + 10 + 1 + 32 +
 * 2 + 20 + 2 + 20 + 1 = 104 (systemd's FDNAME: 255 at most) */
#define HANDOFF_NAME_MAX 128

/* A connection's fd-store name: "conn.ID.FLAGS", then ".SRC" (32 hex
 * digits: its 16-byte source) when e->src_known -- a source its peer
 * address does not give (a PROXY header's) survives the restart --, then
 * ".sSTART" (e->start_us, decimal: CLOCK_MONOTONIC, which a restart keeps)
 * and ".bBYTES" (e->sent), each when not 0, so the histograms see the
 * connection's whole life when it closes.  size >= HANDOFF_NAME_MAX. */
void handoff_conn_name(char *buf, size_t size, unsigned id, const struct conn_export *e);
/* Parse such a name into *id and e's flags, src_known and src, start_us
 * and sent (what it lacks: 0, not known), the rest of e untouched: false
 * if it is not a connection's.  A part malformed (a source not 32
 * lower-case hex digits, a number not all digits or over 64 bits) or
 * unknown is ignored; names of an echod without them ("conn.ID.FLAGS",
 * "conn.ID.FLAGS.SRC") parse as before. */
bool handoff_parse_conn_name(const char *name, unsigned *id, struct conn_export *e);

/* Whether a service manager listens (NOTIFY_SOCKET is set). */
bool handoff_available(void);

/* Store n connections; frees their data and closes echod's copies of
 * the fds.  A connection that cannot be stored is closed (logged).
 * Returns the number stored. */
unsigned handoff_push(struct conn_export *e, unsigned n);

/* Turn the fds a previous echod stored into exports (*out, malloc'd),
 * closing malformed ones.  Returns the number of connections. */
unsigned handoff_collect(struct handed_fd *h, unsigned n, struct conn_export **out);

#endif
