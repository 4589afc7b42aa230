/* handoff.h - established connections across a restart, through
 * systemd's file descriptor store (FileDescriptorStoreMax=).
 *
 * At stop, each connection's socket is stored as "conn.ID.FLAGS" and its
 * unsent bytes, if any, as a memfd "data.ID" (stored first: a connection
 * is never resumed without its bytes).  At start, systemd passes them
 * back with the listeners; they are paired, read, and removed from the
 * store (FDSTOREREMOVE=1), so closing them later really closes them. */
#ifndef ECHOD_HANDOFF_H
#define ECHOD_HANDOFF_H

#include "conn.h"
#include "listen.h"

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
