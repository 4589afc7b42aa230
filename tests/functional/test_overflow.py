#!/usr/bin/env python3
"""io_uring CQ overflow: with a 16-entry completion queue
(ECHOD_URING_CQ_ENTRIES=16), 300 connections streaming at once overflow
it; the kernel keeps the overflowed completions, the daemon reaps them,
counts the overflow, and every byte comes back."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import KiB, Daemon, Tap, backends, client, client_ok  # noqa: E402

tap = Tap(timeout=120)
if "io_uring" not in backends():
    tap.skip("CQ overflow", "io_uring not among the backends tested")
else:
    with tap.guard("io_uring"), Daemon("io_uring", env={"ECHOD_URING_CQ_ENTRIES": 16}) as d:
        res = client(d.port, "-c", 300, "-n", "256k", "--random-chunks", "-s", 71, timeout=60)
        client_ok(tap, "[io_uring] 300 x 256 KiB byte-exact through a 16-entry CQ", res, d,
                  total=300 * 256 * KiB)
        tap.ok(d.stop() == 0, "[io_uring] clean exit", diag=d.log_tail())
        m = re.search(r"totals: .*bytes received (\d+), bytes sent (\d+), .*cq overflow (\d+)",
                      d.log())
        tap.diag(f"[io_uring] {m.group(0) if m else d.log_tail()}")
        tap.figure("[io_uring] cq overflow events", m.group(3) if m else "?")
        tap.ok(m and int(m.group(1)) == int(m.group(2)) == 300 * 256 * KiB,
               "[io_uring] byte counters exact", diag=d.log_tail())
        tap.ok(m and int(m.group(3)) > 0, f"[io_uring] CQ overflow counted "
               f"({m.group(3) if m else '?'})", diag=d.log_tail())
tap.done()
