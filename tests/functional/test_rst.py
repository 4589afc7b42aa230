#!/usr/bin/env python3
"""Clients that reset their connections mid-transfer (SO_LINGER 0) at
various offsets: the daemon survives, still echoes byte-exact, and frees
every connection (fd count back to baseline)."""
import os
import random
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (MiB, Daemon, Tap, backends, client, client_bg,  # noqa: E402
                       client_ok, client_wait, free_port, wait_fds)
import metricsutil  # noqa: E402

# (connections, --rst-after): 200 connections of 1 MiB, reset at offsets
# from "at once" to well past max_pending, all batches running together,
# then 2000 more (ECHOD_RST_CONNS) in 40 batches at seeded random offsets.
BATCHES = [(20, "0"), (30, "1"), (30, "4097"), (40, "65537"), (40, "300k"), (40, "777777")]
MANY = int(os.environ.get("ECHOD_RST_CONNS", "2000"))
_rng = random.Random(7)
RANDOM_BATCHES = [(MANY // 40, str(_rng.randrange(0, 1 << 20))) for _ in range(40)]

tap = Tap(timeout=90 * len(backends()))
for be in backends():
    mport = free_port()
    with tap.guard(be), Daemon(be, metrics={"enabled": True, "address": "127.0.0.1",
                                            "port": mport}) as d:
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
        # 2000 more, 50 at a time per client, reset at random offsets
        t0 = time.monotonic()
        procs = [client_bg(d.port, "-c", n, "-n", "1M", "--rst-after", off, "-s", 400 + i,
                           timeout=60) for i, (n, off) in enumerate(RANDOM_BATCHES)]
        results = [client_wait(p) for p in procs]
        took = time.monotonic() - t0
        nconn = sum(n for n, _ in RANDOM_BATCHES)
        tap.ok(all(r.ok for r in results), f"[{be}] {nconn} connections reset at 40 random "
               f"offsets ({took:.1f} s)", diag="\n".join(r.diag() for r in results if not r.ok))
        last = wait_fds(d, base, 5)
        series = metricsutil.scrape(mport)
        cur = metricsutil.value(series, "echod_connections_current")
        errs = metricsutil.value(series, "echod_connection_errors_total")
        tap.figure(f"[{be}] fds baseline / after {nconn + 210} resets", f"{base} / {last}")
        tap.figure(f"[{be}] connections current / connection errors (metrics)",
                   f"{cur:.0f} / {errs:.0f}")
        tap.ok(last <= base and cur == 0,
               f"[{be}] after {nconn} more resets: fds back to {base}, 0 connections open",
               diag=f"fds {last}, current {cur}")
        # every op done: io_uring closes a connection's fd only once none of
        # its ops can complete, and a drain with nothing in flight is quick
        t0 = time.monotonic()
        rc = d.stop()
        drain = time.monotonic() - t0
        tap.figure(f"[{be}] SIGTERM to exit (s)", drain)
        tap.ok(rc == 0 and drain < 2.0, f"[{be}] SIGTERM exits 0 at once ({drain:.2f} s)",
               diag=d.log_tail())
tap.done()
