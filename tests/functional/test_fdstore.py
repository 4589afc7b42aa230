#!/usr/bin/env python3
"""Restart without dropping clients, through the fd store protocol,
with this test playing systemd's part: echod --fd-store, on SIGTERM,
sends every established connection (FDSTORE=1, FDNAME=conn.ID.FLAGS[...],
and its unsent bytes as a memfd data.ID) over NOTIFY_SOCKET and exits 0;
a new echod started with those fds in LISTEN_FDS resumes them, asks for
their removal (FDSTOREREMOVE=1), and the clients, connected all along,
get every byte back.  Without a service manager, --fd-store drains as
usual."""
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (MiB, Daemon, Notify, Tap, backends, client_bg,  # noqa: E402
                       client_ok, client_wait, free_port)


tap = Tap(timeout=90 * len(backends()))
for be in backends():
    n = Notify()
    port = free_port()
    try:
        # shutdown_timeout 1: the stalled clients' bytes cannot all be
        # flushed in time, so they travel in memfds
        with tap.guard(be), Daemon(be, port=port, args=["--fd-store"], shutdown_timeout=1,
                                   env={"NOTIFY_SOCKET": n.path}) as d:
            time.sleep(0.2)
            tap.ok(n.wait(lambda msgs: any("READY=1" in m for m in msgs)),
                   f"[{be}] READY=1 sent")
            stream = client_bg(port, "-c", 6, "-n", "96M", "--no-read-ms", 1500, "-s", 111,
                               timeout=60)
            stalled = client_bg(port, "-c", 2, "-n", "16M", "--no-read-ms", 2500, "-s", 112,
                                timeout=60)
            time.sleep(0.8)
            d.signal(signal.SIGTERM)
            rc = d.wait(15)
            n.wait(lambda _: sum(x[0].startswith("conn.") for x in n.store) >= 8, timeout=5)
            conns = [x for x in n.store if x[0].startswith("conn.")]
            datas = [x for x in n.store if x[0].startswith("data.")]
            tap.ok(rc == 0 and n.wait(lambda msgs: any("STOPPING=1" in m for m in msgs)),
                   f"[{be}] SIGTERM: STOPPING=1, exit 0", diag=d.log_tail())
            tap.ok(len(conns) == 8 and len(datas) >= 2,
                   f"[{be}] 8 connections stored, {len(datas)} with unsent bytes in a memfd",
                   diag=f"{[x[0] for x in n.store]}\n{d.log_tail()}")
        # the next start gets them back, as systemd would pass them
        names = ":".join(x[0] for x in n.store)
        fds = [x[1] for x in n.store]
        n.msgs.clear()
        with tap.guard(be), Daemon(be, port=port, args=["--fd-store"], inherit_fds=fds,
                                   argv_prefix=["sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh"],
                                   env={"NOTIFY_SOCKET": n.path, "LISTEN_FDS": len(fds),
                                        "LISTEN_FDNAMES": names}) as d2:
            for _, fd in n.store:           # the daemon holds them now
                os.close(fd)
            n.store.clear()
            tap.ok(re.search(r"fd store: resuming 8 connection", d2.log()),
                   f"[{be}] the new echod resumes the 8 connections", diag=d2.log_tail())
            n.wait(lambda msgs: sum("FDSTOREREMOVE=1" in m for m in msgs) >= len(fds))
            removed = [m for m in n.msgs if "FDSTOREREMOVE=1" in m]
            tap.ok(len(removed) == len(fds), f"[{be}] FDSTOREREMOVE for each of the "
                   f"{len(fds)} stored fds", diag="\n".join(n.msgs))
            r1, r2 = client_wait(stream), client_wait(stalled)
            client_ok(tap, f"[{be}] 6 streaming clients, connected through the restart: "
                      f"byte-exact", r1, d2, total=6 * 96 * MiB)
            client_ok(tap, f"[{be}] 2 clients with unsent bytes through the restart: "
                      f"byte-exact", r2, d2, total=2 * 16 * MiB)
    finally:
        n.close()
    # no service manager: --fd-store drains as usual
    with tap.guard(be), Daemon(be, args=["--fd-store"], env={"NOTIFY_SOCKET": None}) as d:
        rc = d.stop()
        tap.ok(rc == 0 and "no service manager" in d.log(),
               f"[{be}] --fd-store without NOTIFY_SOCKET: drains and exits 0", diag=d.log_tail())
tap.done()
