#!/usr/bin/env python3
"""Payloads of every size come back byte-exact: stream, short writes,
pingpong, IPv6.  Runs once per backend (ECHOD_BACKENDS)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (KiB, MiB, Daemon, Tap, backends, client, client_ok,  # noqa: E402
                       fmt_size, have_ipv6_loopback)

SIZES = [1, 2, 1000, 64 * KiB, 1 * MiB, 4 * MiB]
VARIANTS = [
    ("stream", []),
    ("random short writes", ["--random-chunks", "--chunk", "8k"]),
]

tap = Tap()
for be in backends():
    with tap.guard(be), Daemon(be) as d:
        seed = 1000
        for variant, extra in VARIANTS:
            for size in SIZES:
                seed += 1
                res = client(d.port, "-n", size, "-s", seed, *extra)
                client_ok(tap, f"[{be}] {fmt_size(size)} payload byte-exact ({variant})",
                          res, d, total=size)
            seed += 1
            res = client(d.port, "-c", 10, "--min", 1, "--max", 4 * MiB, "-s", seed, *extra)
            client_ok(tap, f"[{be}] 10 connections, random sizes 1 B..4 MiB byte-exact ({variant})",
                      res, d)

        res = client(d.port, "--mode", "pingpong", "--chunk", "1k", "-n", "1M", "-s", 7)
        client_ok(tap, f"[{be}] pingpong, 1 KiB chunks, 1 MiB byte-exact", res, d, total=MiB)
        res = client(d.port, "--mode", "pingpong", "--chunk", "1k", "--random-chunks",
                     "-c", 10, "-n", "256k", "-s", 8)
        client_ok(tap, f"[{be}] pingpong, 10 connections, random chunks up to 1 KiB byte-exact",
                  res, d, total=10 * 256 * KiB)
        tap.ok(d.running(), f"[{be}] daemon still running after the payload tests",
               diag=d.log_tail())

    if not have_ipv6_loopback():
        tap.skip(f"[{be}] IPv6 ::1 1 MiB byte-exact", "no IPv6 loopback here")
        continue
    with tap.guard(be), Daemon(be, listen=["::1"]) as d:
        res = client(d.port, "-H", "::1", "-n", "1M", "-s", 9)
        client_ok(tap, f"[{be}] IPv6 ::1 1 MiB byte-exact", res, d, total=MiB)
        res = client(d.port, "-H", "::1", "-c", 10, "--min", 1, "--max", "256k",
                     "--random-chunks", "-s", 10)
        client_ok(tap, f"[{be}] IPv6 ::1 10 connections, random sizes, short writes", res, d)
tap.done()
