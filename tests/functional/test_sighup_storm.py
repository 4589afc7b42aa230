#!/usr/bin/env python3
"""A SIGHUP storm: 100 SIGHUP per second for 10 s (ECHOD_STORM_S) while
integrity clients stream back to back.  Every byte comes back, the daemon
lives, and afterwards its fd count and RSS are back near where they were.
Signals that arrive while a reload runs merge (signalfd keeps one pending
SIGHUP), so fewer reloads than signals are performed; both are reported."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (Daemon, Tap, backends, client, client_bg,  # noqa: E402
                       client_wait, free_port, poll_until)
import metricsutil  # noqa: E402

STORM_S = float(os.environ.get("ECHOD_STORM_S", "10"))
RATE = 100

tap = Tap(timeout=int(60 + 2 * STORM_S) * len(backends()))
for be in backends():
    mport = free_port()
    with tap.guard(be), Daemon(be, log_level="info",
                               metrics={"enabled": True, "address": "127.0.0.1",
                                        "port": mport}) as d:
        client(d.port, "-c", 8, "-n", "4M", "-s", 90)        # warm up
        metricsutil.scrape(mport)
        time.sleep(0.2)
        fd0, rss0 = d.fd_count(), d.rss_kb()
        results, running, seed = [], [], 91
        sent = 0
        t0 = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= t0 + STORM_S:
                break
            for p in [p for p in running if p.poll() is not None]:
                running.remove(p)
                results.append(client_wait(p))
            while len(running) < 2:
                running.append(client_bg(d.port, "-c", 8, "-n", "16M", "--random-chunks",
                                         "-s", seed, timeout=60))
                seed += 1
            # catch up to RATE per second since t0
            due = int((now - t0) * RATE) + 1
            while sent < due:
                d.signal(signal.SIGHUP)
                sent += 1
            time.sleep(max(0.0, t0 + sent / RATE - time.monotonic()))
        alive_storm = d.running()
        for p in running:
            results.append(client_wait(p))
        bad = [r for r in results if not (r.ok and r.info.get("bytes_sent") ==
                                          r.info.get("bytes_received"))]
        total = sum(r.info.get("bytes_received", 0) for r in results)
        tap.ok(alive_storm and d.running(), f"[{be}] alive through {sent} SIGHUP in {STORM_S:g} s",
               diag=d.log_tail())
        tap.ok(results and not bad, f"[{be}] {len(results)} client runs ({total // (1 << 20)} MiB) "
               "byte-exact through the storm", diag="\n".join(r.diag() for r in bad[:3]))
        time.sleep(0.5)                       # the last reload finishes
        series = metricsutil.scrape(mport)
        done = metricsutil.value(series, "echod_reloads_total")
        failed = metricsutil.value(series, "echod_reload_failures_total")
        tap.figure(f"[{be}] SIGHUP sent / reloads performed / refused",
                   f"{sent} / {done:.0f} / {failed:.0f}")
        tap.ok(done >= 1 and failed == 0 and done <= sent,
               f"[{be}] {done:.0f} reloads for {sent} signals, none refused")
        fd1 = poll_until(lambda: d.fd_count() <= fd0 and d.fd_count(), 5) or d.fd_count()
        rss1 = d.rss_kb()
        tap.figure(f"[{be}] fds before / after", f"{fd0} / {fd1}")
        tap.figure(f"[{be}] RSS kB before / after (delta)", f"{rss0} / {rss1} ({rss1 - rss0:+d})")
        tap.ok(fd1 <= fd0, f"[{be}] fd count back to {fd0}", diag=f"{fd1} fds")
        tap.rss_ok(rss1 - rss0 < 8 * 1024, f"[{be}] RSS within 8 MiB of before ({rss1 - rss0:+d} kB)")
        res = client(d.port, "-c", 4, "-n", "1M", "-s", 89)
        tap.ok(res.ok, f"[{be}] byte-exact after the storm", diag=res.diag())
        tap.ok(d.stop() == 0, f"[{be}] clean exit", diag=d.log_tail())
tap.done()
