#!/usr/bin/env python3
"""20,000 connect/echo/close cycles (ECHOD_CYCLES), 32 connections at a
time, 1 B..4 KiB each, byte-exact; the client closes each connection once
its echo is verified, every 10th with an RST (SO_LINGER 0).  Afterwards
echod's metrics show exactly that many connections accepted and none
current, none of its sockets is in CLOSE_WAIT, and its fd count and RSS
are back to their baseline.

TIME_WAIT: the client closes first, so the TIME_WAIT sockets are the
client's; the cycles come from 32 source addresses (127.0.0.1-32, ports
picked per 4-tuple with IP_BIND_ADDRESS_NO_PORT), nearly a million
4-tuples for 20,000 connections, so ports never run short.

RSS tolerance, 256 KiB: the baseline is taken after a warm-up of the same
shape (same concurrency, so the same connection slots and buffers are
touched), so only a leak grows RSS; 20,000 cycles leaking 16 bytes each
would show 312 KiB."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import KiB, Tap, backends, client, client_ok, wait_fds  # noqa: E402
from loadutil import (MetricsDaemon, env_int, fd_baseline, tcp_states,  # noqa: E402
                      wait_quiet)

CYCLES = env_int("ECHOD_CYCLES", 20000)
CONC = 32
RSS_TOL_KB = 256


def cycles(d, n, seed):
    return client(d.port, "-c", n, "--concurrency", CONC, "--min", 1, "--max", 4 * KiB,
                  "--random-chunks", "--chunk", "1k", "--bind", "127.0.0.1-127.0.0.32",
                  "--rst-every", 10, "-s", seed, timeout=max(60, n // 200))


tap = Tap(timeout=(max(60, CYCLES // 200) + 40) * len(backends()) + 30)
for be in backends():
    with tap.guard(be), MetricsDaemon(be) as d:
        # warm-up: a stream through every buffer of the pool (io_uring's
        # buffer ring hands them out in turn), then cycles of the same shape
        res = client(d.port, "-n", "64M", "-s", 899)
        client_ok(tap, f"[{be}] warm-up: 64 MiB byte-exact", res, d)
        res = cycles(d, 2000, 900)
        client_ok(tap, f"[{be}] warm-up: 2000 cycles byte-exact", res, d)
        wait_quiet(d, d.port)
        d.metric("echod_connections_current")       # the scrape's own allocations
        acc0 = d.metric("echod_connections_accepted_total")
        fd0 = fd_baseline(d)
        time.sleep(0.2)
        rss0 = d.rss_kb()

        t0 = time.monotonic()
        res = cycles(d, CYCLES, 901)
        took = time.monotonic() - t0
        client_ok(tap, f"[{be}] {CYCLES} connect/echo/close cycles byte-exact ({took:.1f} s)",
                  res, d)
        tap.diag(f"[{be}] cycles_per_s: {CYCLES / took:.0f}")
        cur, cw = wait_quiet(d, d.port)
        acc = d.metric("echod_connections_accepted_total") - acc0
        tap.diag(f"[{be}] accepted: {acc}, current: {cur}, close_wait: {cw}")
        tap.diag(f"[{be}] server-side sockets on the port: {tcp_states(d.port)}")
        tap.ok(acc == CYCLES, f"[{be}] metrics: {acc} connections accepted",
               diag=f"expected {CYCLES}")
        tap.ok(cur == 0, f"[{be}] metrics: {cur} connections current")
        tap.ok(cw == 0, f"[{be}] {cw} sockets in CLOSE_WAIT on the port")
        last = wait_fds(d, fd0, 5)
        tap.ok(last is not None and last <= fd0, f"[{be}] fd count back to baseline ({last})",
               diag=f"baseline {fd0}\n{d.log_tail()}")
        time.sleep(0.2)
        rss1 = d.rss_kb()
        tap.diag(f"[{be}] rss_baseline_kb: {rss0}")
        tap.diag(f"[{be}] rss_after_cycles_kb: {rss1}")
        tap.rss_ok(rss1 - rss0 <= RSS_TOL_KB,
               f"[{be}] RSS back to baseline within {RSS_TOL_KB} KiB ({rss1 - rss0:+d} kB)",
               diag=f"{rss0} -> {rss1} kB")
        tap.ok(d.running(), f"[{be}] daemon still running", diag=d.log_tail())
tap.done()
