#!/usr/bin/env python3
"""Soak: ECHOD_SOAK_SECONDS (default 20; 300 by hand) of mixed traffic,
every byte verified: 2 slots streaming 64 MiB connections, 8 slots of
pingpong, 8 slots of short connections (1 B..256 KiB, every 7th closed
with an RST) and 4 slots of half-closed ones, each slot opening a new
connection as soon as its last one is done; beside them a probe connection
does a 64-byte round trip every 100 ms.

The probe's round trip must never exceed PROBE_MAX_MS (200 ms): on a
2-core machine shared with the rest of the suite, echod's loop, the
clients and other tests take turns on the CPU (time slices of a few ms),
so a round trip of tens of ms is scheduling; 200 ms would mean the event
loop served one connection or one batch far too long (a loop that stayed
with one streaming connection until it had nothing left to read takes
seconds here).  Reports the probe's p50/p99/max, the daemon's RSS and fd
count over the soak; afterwards echod has no connection, no CLOSE_WAIT
socket, its baseline fd count, and does not spin."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import Tap, backends, client_bg, client_ok, client_wait, wait_fds  # noqa: E402
from loadutil import MetricsDaemon, env_float, fd_baseline, wait_quiet  # noqa: E402

SECONDS = env_float("ECHOD_SOAK_SECONDS", 20)
PROBE_MAX_MS = 200
PROBE_MS = 100
BIND = "127.0.0.1-127.0.0.16"

tap = Tap(timeout=(SECONDS + 60) * len(backends()) + 30)
for be in backends():
    with tap.guard(be), MetricsDaemon(be) as d:
        fd0 = fd_baseline(d)
        rss0 = d.rss_kb()
        t = SECONDS + 60
        s = f"{SECONDS:g}"
        mix = {
            "stream": client_bg(d.port, "-c", 2, "--duration", s, "-n", "64M", "-s", 1000,
                                timeout=t),
            "pingpong": client_bg(d.port, "-c", 8, "--duration", s, "--mode", "pingpong",
                                  "--chunk", "16k", "--random-chunks", "-n", "1M", "-s", 1001,
                                  timeout=t),
            "short": client_bg(d.port, "-c", 8, "--duration", s, "--min", 1, "--max", "256k",
                               "--random-chunks", "--rst-every", 7, "--bind", BIND,
                               "-s", 1002, timeout=t),
            "half-close": client_bg(d.port, "-c", 4, "--duration", s, "--half-close",
                                    "--min", 0, "--max", "64k", "--bind", BIND, "-s", 1003,
                                    timeout=t),
        }
        rounds = int(SECONDS * 1000 / PROBE_MS)
        probe = client_bg(d.port, "--mode", "pingpong", "--chunk", 64, "-n", 64 * rounds,
                          "--interval", PROBE_MS, "-s", 1004, timeout=t)
        rss_max, fd_max = rss0, fd0
        while probe.poll() is None or any(p.poll() is None for p in mix.values()):
            rss_max = max(rss_max, d.rss_kb() or 0)
            fd_max = max(fd_max, d.fd_count())
            time.sleep(0.5)
        for name, p in mix.items():
            res = client_wait(p)
            client_ok(tap, f"[{be}] soak {s} s: {name} clients byte-exact "
                      f"({res.info.get('conns')} connections, "
                      f"{res.info.get('bytes_sent', 0) >> 20} MiB)", res, d)
        res = client_wait(probe)
        client_ok(tap, f"[{be}] probe: {res.info.get('rtt_count')} round trips byte-exact",
                  res, d, total=64 * rounds)
        rmax = res.info.get("rtt_max_us", 10 ** 9) / 1000
        tap.diag(f"[{be}] soak_seconds: {s}")
        tap.diag(f"[{be}] probe_rtt_p50_ms: {res.info.get('rtt_p50_us', 0) / 1000:.3f}")
        tap.diag(f"[{be}] probe_rtt_p99_ms: {res.info.get('rtt_p99_us', 0) / 1000:.3f}")
        tap.diag(f"[{be}] probe_rtt_max_ms: {rmax:.3f}")
        tap.diag(f"[{be}] rss_baseline_kb: {rss0}")
        tap.diag(f"[{be}] rss_max_kb: {rss_max}")
        tap.diag(f"[{be}] fds_max: {fd_max}")
        tap.ok(res.info.get("rtt_count") == rounds and rmax <= PROBE_MAX_MS,
               f"[{be}] probe round trip never above {PROBE_MAX_MS} ms (max {rmax:.1f} ms)",
               diag=res.diag())
        cur, cw = wait_quiet(d, d.port)
        tap.ok(cur == 0 and cw == 0, f"[{be}] afterwards: {cur} connections, {cw} CLOSE_WAIT")
        last = wait_fds(d, fd0, 5)
        tap.ok(last is not None and last <= fd0, f"[{be}] fd count back to baseline ({last})",
               diag=f"baseline {fd0}")
        c0 = d.cpu_seconds()
        time.sleep(1.0)
        cpu = d.cpu_seconds() - c0
        tap.ok(cpu < 0.05, f"[{be}] idle afterwards: {cpu:.3f} s CPU in 1 s")
        tap.ok(d.running(), f"[{be}] daemon still running", diag=d.log_tail())
tap.done()
