#!/usr/bin/env python3
"""4 connections x ECHOD_DUPLEX_BYTES each (default 256 MiB; the issue's
full size is 1G), full duplex: every connection writes while it reads its
echo, every byte is verified.  Reports MB/s per backend (bytes echoed per
second over the 4 connections, one way) and echod's RSS while it runs;
echod's byte counters equal what the clients sent, and its RSS stays
within its buffer pool of the baseline (backpressure holds, however fast
the clients write)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import MiB, Tap, backends, client_bg, client_ok, client_wait, fmt_size  # noqa: E402
from loadutil import MetricsDaemon, env_int  # noqa: E402

CONNS = 4
BYTES = env_int("ECHOD_DUPLEX_BYTES", 256 * MiB)
POOL = 4096 * 4096          # the default pool: buffer_count x buffer_size
# the client verifies about 0.3..1 GB/s here; allow 20 MB/s at worst
TIMEOUT = max(60, CONNS * BYTES // (20 * 1000 * 1000))

tap = Tap(timeout=(TIMEOUT + 30) * len(backends()) + 30)
for be in backends():
    with tap.guard(be), MetricsDaemon(be) as d:
        names = ("echod_received_bytes_total", "echod_sent_bytes_total")
        m0 = d.metrics(*names)
        rss0 = d.rss_kb()
        p = client_bg(d.port, "-c", CONNS, "-n", BYTES, "-s", 800, timeout=TIMEOUT)
        rss_peak = rss0
        while p.poll() is None:
            rss_peak = max(rss_peak, d.rss_kb() or 0)
            time.sleep(0.1)
        res = client_wait(p)
        client_ok(tap, f"[{be}] {CONNS} x {fmt_size(BYTES)} full duplex, byte-exact", res, d,
                  total=CONNS * BYTES)
        ms = max(1, res.info.get("elapsed_ms", 1))
        mbs = res.info.get("bytes_received", 0) / 1e6 / (ms / 1000)
        tap.diag(f"[{be}] duplex_bytes_per_conn: {BYTES}")
        tap.diag(f"[{be}] duplex_elapsed_ms: {ms}")
        tap.diag(f"[{be}] duplex_MB_per_s: {mbs:.0f}")
        mibs = res.info.get("bytes_received", 0) / MiB / (ms / 1000)
        tap.diag(f"[{be}] duplex_MiB_per_s: {mibs:.0f}")
        tap.diag(f"[{be}] rss_baseline_kb: {rss0}")
        tap.diag(f"[{be}] rss_peak_kb: {rss_peak}")
        m1 = d.metrics(*names)
        delta = {n: m1[n] - m0[n] for n in names}
        tap.ok(all(v == CONNS * BYTES for v in delta.values()),
               f"[{be}] echod counted {CONNS * BYTES} bytes in and out", diag=str(delta))
        tap.ok(rss_peak - rss0 <= POOL // 1024 + 4096,
               f"[{be}] RSS grew by {rss_peak - rss0} kB, within the pool "
               f"({POOL // 1024} kB) + 4 MiB", diag=f"{rss0} -> {rss_peak} kB")
        tap.ok(d.running(), f"[{be}] daemon still running", diag=d.log_tail())
tap.done()
