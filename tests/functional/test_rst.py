#!/usr/bin/env python3
"""Clients that reset their connections mid-transfer (SO_LINGER 0) at
various offsets: the daemon survives, still echoes byte-exact, and frees
every connection (fd count back to baseline)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (MiB, Daemon, Tap, backends, client, client_bg,  # noqa: E402
                       client_ok, client_wait, wait_fds)

# (connections, --rst-after): 200 connections of 1 MiB, reset at offsets
# from "at once" to well past max_pending, all batches running together.
BATCHES = [(20, "0"), (30, "1"), (30, "4097"), (40, "65537"), (40, "300k"), (40, "777777")]

tap = Tap()
for be in backends():
    with tap.guard(be), Daemon(be) as d:
        client(d.port, "-n", "64k")                 # warm up
        base = d.fd_count()
        procs = [(n, off, client_bg(d.port, "-c", n, "-n", "1M", "--rst-after", off,
                                    "-s", 300 + i, timeout=30))
                 for i, (n, off) in enumerate(BATCHES)]
        for n, off, p in procs:
            res = client_wait(p)
            tap.ok(res.ok, f"[{be}] {n} connections reset after {off} bytes of 1 MiB",
                   diag=res.diag())
        tap.ok(d.running(), f"[{be}] daemon alive after 200 resets", diag=d.log_tail())
        res = client(d.port, "-c", 10, "-n", "1M", "-s", 399)
        client_ok(tap, f"[{be}] byte-exact transfer after the resets", res, d, total=10 * MiB)
        last = wait_fds(d, base, 5)
        tap.ok(last is not None and last <= base,
               f"[{be}] fd count back to baseline after the resets",
               diag=f"fd count {last}, baseline {base}\n{d.log_tail()}")
tap.done()
