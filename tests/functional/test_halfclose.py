#!/usr/bin/env python3
"""Half-close: the client shuts its write side after sending; the daemon
echoes everything, then EOF.  8 MiB is well past max_pending (64 KiB), so
the daemon must resume reading as it flushes."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (MiB, Daemon, Tap, backends, client, client_ok,  # noqa: E402
                       fmt_size)

SIZES = [0, 1, 1 * MiB, 8 * MiB]
CONNS = 20

tap = Tap()
for be in backends():
    with tap.guard(be), Daemon(be) as d:
        for i, size in enumerate(SIZES):
            res = client(d.port, "--half-close", "-c", CONNS, "-n", size, "-s", 20 + i)
            client_ok(tap, f"[{be}] half-close, {CONNS} connections x {fmt_size(size)}: "
                      "all bytes then EOF", res, d, total=CONNS * size)
            tap.figure(f"[{be}] half-close {CONNS} x {fmt_size(size)} elapsed ms",
                       res.info.get("elapsed_ms"))
            if size == 0:
                el = res.info.get("elapsed_ms", 10 ** 9)
                tap.ok(res.ok and el < 1000,
                       f"[{be}] half-close with no data: EOF at once",
                       diag=f"elapsed_ms={el}\n{res.diag()}")
        res = client(d.port, "--half-close", "-c", CONNS, "--min", 0, "--max", 2 * MiB,
                     "--random-chunks", "-s", 29)
        client_ok(tap, f"[{be}] half-close, {CONNS} connections, random sizes, short writes",
                  res, d)
        tap.ok(d.running(), f"[{be}] daemon still running", diag=d.log_tail())
tap.done()
