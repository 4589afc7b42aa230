#!/usr/bin/env python3
"""Backpressure: a client that writes 64 MiB and does not read for 3 s
must be throttled by TCP, not buffered by the daemon: with a 4 MiB
buffer pool, RSS stays within 8 MiB of its baseline, the daemon does not
spin, the pause is counted, and every byte comes back once the client
reads."""
import re
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (MiB, Daemon, Tap, backends, client, client_bg,  # noqa: E402
                       client_ok, client_wait)

TOTAL = 64 * MiB
STALL_MS = 3000

tap = Tap()
for be in backends():
    with tap.guard(be), Daemon(be, buffer_count=1024, buffer_size=4096) as d:
        client(d.port, "-n", "1M")              # warm up
        time.sleep(0.2)
        rss0 = d.rss_kb()
        p = client_bg(d.port, "-n", TOTAL, "--no-read-ms", STALL_MS, "-s", 64, timeout=45)
        t0 = time.monotonic()
        time.sleep(max(0, t0 + 1.0 - time.monotonic()))
        cpu1 = d.cpu_seconds()
        time.sleep(max(0, t0 + 2.0 - time.monotonic()))
        cpu2 = d.cpu_seconds()
        rss2 = d.rss_kb()
        stalled_running = p.poll() is None
        res = client_wait(p)
        stalled = res.info.get("stalled_sent")
        grow = rss2 - rss0
        cpu = cpu2 - cpu1
        tap.diag(f"[{be}] stalled_sent={stalled} ({(stalled or 0) / MiB:.1f} MiB of "
                 f"{TOTAL // MiB} MiB)")
        tap.diag(f"[{be}] RSS baseline {rss0} kB, during the stall {rss2} kB "
                 f"(+{grow} kB)")
        tap.diag(f"[{be}] daemon CPU from 1 s to 2 s into the stall: {cpu:.3f} s")
        tap.figure(f"[{be}] RSS delta kB while the client does not read", grow)
        tap.figure(f"[{be}] daemon CPU s/s while blocked", cpu)
        tap.ok(stalled_running, f"[{be}] client still stalled at the 2 s sample",
               diag=res.diag())
        tap.ok(grow < 8 * 1024,
               f"[{be}] RSS grows by less than 8 MiB (pool 4 MiB) while the client does not read",
               diag=f"baseline {rss0} kB, stalled {rss2} kB")
        tap.ok(cpu < 0.1, f"[{be}] daemon does not spin while the client does not read",
               diag=f"{cpu:.3f} s CPU in 1 s")
        tap.ok(stalled is not None and stalled < TOTAL,
               f"[{be}] client throttled by TCP (stalled_sent < 64 MiB)", diag=res.diag())
        client_ok(tap, f"[{be}] all 64 MiB come back byte-exact after the stall",
                  res, d, total=TOTAL)
        tap.ok(d.running(), f"[{be}] daemon still running", diag=d.log_tail())
        tap.ok(d.stop() == 0, f"[{be}] clean exit", diag=d.log_tail())
        m = re.search(r"totals: .*bytes received (\d+), bytes sent (\d+), .*backpressure pauses (\d+)",
                      d.log())
        tap.ok(m and int(m.group(1)) == int(m.group(2)) == TOTAL + MiB and int(m.group(3)) >= 1,
               f"[{be}] counters: {m.group(1) if m else '?'} bytes in and out, "
               f"{m.group(3) if m else '?'} backpressure pause(s)", diag=d.log_tail())
tap.done()
