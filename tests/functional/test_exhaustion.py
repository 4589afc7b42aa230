#!/usr/bin/env python3
"""Buffer exhaustion: with 8 buffers for 100 clients, bursts of 64 KiB
come back byte-exact and the exhaustion is counted; when clients stop
reading and every buffer is held, the starved connections wait without
a CQE storm or a busy loop (CPU near idle), then resume as buffers come
back, byte-exact."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (KiB, MiB, Daemon, Tap, backends, client, client_bg,  # noqa: E402
                       client_ok, client_wait)


def totals(d):
    m = re.search(r"totals: (.*)", d.log())
    if not m:
        return {}
    return {k.strip(): int(v) for v, k in
            ((x.split()[-1], " ".join(x.split()[:-1])) for x in m.group(1).split(", "))}


tap = Tap(timeout=90 * len(backends()))
for be in backends():
    with tap.guard(be), Daemon(be, buffer_count=8, buffer_size=4096) as d:
        # bursts: 100 clients x 64 KiB at once, written in random pieces
        res = client(d.port, "-c", 100, "-n", "64k", "--random-chunks", "-s", 51, timeout=60)
        client_ok(tap, f"[{be}] 8 buffers, 100 clients x 64 KiB bursts: byte-exact", res, d,
                  total=100 * 64 * KiB)
        # blocked: 100 clients x 1 MiB that do not read for 3 s
        p = client_bg(d.port, "-c", 100, "-n", "1M", "--no-read-ms", 3000, "-s", 52, timeout=60)
        time.sleep(1.0)
        cpu1 = d.cpu_seconds()
        time.sleep(1.0)
        cpu = d.cpu_seconds() - cpu1
        blocked = p.poll() is None
        res = client_wait(p)
        tap.diag(f"[{be}] daemon CPU over 1 s with every client blocked: {cpu:.3f} s")
        tap.ok(blocked and cpu < 0.1,
               f"[{be}] starved connections wait without spinning ({cpu:.3f} s CPU in 1 s)")
        client_ok(tap, f"[{be}] 100 x 1 MiB byte-exact once the clients read", res, d,
                  total=100 * MiB)
        tap.ok(d.stop() == 0, f"[{be}] clean exit", diag=d.log_tail())
        t = totals(d)
        tap.diag(f"[{be}] totals: {t}")
        expect = 100 * 64 * KiB + 100 * MiB
        tap.ok(t.get("bytes received") == expect and t.get("bytes sent") == expect,
               f"[{be}] byte counters equal what the clients sent ({expect})", diag=str(t))
        if be == "io_uring":
            # the kernel fills ring buffers ahead of the sends: it runs dry
            tap.ok(t.get("buffer exhaustion", 0) > 0,
                   f"[{be}] buffer exhaustion counted ({t.get('buffer exhaustion')})",
                   diag=str(t))
        else:
            # epoll sends each buffer as soon as it is read, so 8 buffers
            # run dry only when the kernel's socket buffers are full
            tap.diag(f"[{be}] buffer exhaustion events: {t.get('buffer exhaustion')}")
tap.done()
