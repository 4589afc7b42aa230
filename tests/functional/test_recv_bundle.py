#!/usr/bin/env python3
"""io_uring recv bundles (kernel 6.10; echod uses them from 6.16): one
receive fills several buffers of the ring and its completion names the first; echod takes the rest
from the ring entries that follow it.  Run with bundles on (the default
where the kernel has them) and off (ECHOD_URING_BUNDLE=0: what a kernel
without them gets), each on the default pool and on a pool of 64 buffers
(bundles then meet a nearly empty ring, -ENOBUFS and the reserve): every
byte comes back in order (16 KiB ping-pong, 10 streams of 4 MiB written in
64 KiB pieces, 20 connections of random sizes in random short writes, a
1 MiB ping-pong of 1 KiB), the log names the choice, and
echod_recv_bundles_total counts bundles when on and stays 0 when off."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import MiB, Daemon, Tap, backends, client, client_ok, free_port  # noqa: E402
from metricsutil import scrape, value  # noqa: E402

tap = Tap(timeout=300)


def bundles(port):
    return value(scrape(port), "echod_recv_bundles_total")


if "io_uring" not in backends():
    tap.skip("io_uring recv bundles", "io_uring not among the backends tested")
    tap.done()

for on in (True, False):
    for count in (4096, 64):
        label = f"[io_uring, bundles {'on' if on else 'off'}, {count} buffers]"
        mport = free_port()
        with tap.guard(label), Daemon("io_uring", env={"ECHOD_URING_BUNDLE": "1" if on else "0"},
                                      buffer_count=count,
                                      metrics={"enabled": True, "address": "127.0.0.1",
                                               "port": mport}) as d:
            feature = "recv bundles" if on else "no recv bundles"
            kernel_has = ", recv bundles," in d.log() or not on
            tap.ok(f", {feature}," in d.log() or (on and ", no recv bundles," in d.log()),
                   f"{label} the log names the choice ({feature})", diag=d.log_tail())
            res = client(d.port, "--mode", "pingpong", "--chunk", "16k", "-n", "4M", "-s", 21)
            client_ok(tap, f"{label} ping-pong of 16 KiB requests, 4 MiB byte-exact", res, d,
                      total=4 * MiB)
            res = client(d.port, "-c", 10, "-n", "4M", "--chunk", "64k", "-s", 22)
            client_ok(tap, f"{label} 10 streams of 4 MiB in 64 KiB writes byte-exact", res, d,
                      total=10 * 4 * MiB)
            res = client(d.port, "-c", 20, "--min", 1, "--max", MiB, "--random-chunks",
                         "--chunk", "48k", "-s", 23)
            client_ok(tap, f"{label} 20 connections, random sizes up to 1 MiB, random short "
                      "writes, byte-exact", res, d)
            res = client(d.port, "--mode", "pingpong", "--chunk", "1k", "-n", "1M", "-s", 24)
            client_ok(tap, f"{label} ping-pong of 1 KiB, 1 MiB byte-exact", res, d,
                      total=MiB)
            n = bundles(mport)
            if not on:
                tap.ok(n == 0, f"{label} echod_recv_bundles_total stays 0 ({n:.0f})")
            elif kernel_has:
                tap.ok(n > 0, f"{label} echod_recv_bundles_total counts bundles ({n:.0f})")
            else:
                tap.skip(f"{label} echod_recv_bundles_total counts bundles",
                         "no recv bundles on this kernel (echod uses them from 6.16)")
            tap.ok(d.running(), f"{label} daemon still running", diag=d.log_tail())
tap.done()
