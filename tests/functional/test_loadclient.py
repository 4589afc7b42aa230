#!/usr/bin/env python3
"""The integrity client's own checks can fail: against a deliberately
broken echo server (Python, no echod) it reports a flipped byte and a
dropped byte at their exact offsets, and a slow round trip in its RTT
figures; its load options do what they say (--bind spreads the source
addresses, --concurrency caps the connections open at once, --duration
keeps opening connections until the time is up).  Needs no backend: runs
once."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import Tap, client  # noqa: E402
from loadutil import BrokenEchoServer  # noqa: E402

tap = Tap(timeout=90)

with tap.guard("flip"), BrokenEchoServer("flip", at=777777) as srv:
    res = client(srv.port, "-n", "2M", "-s", 11, timeout=20)
    tap.ok(res.rc == 1 and "offset=777777" in res.out,
           "a byte flipped at offset 777777 is reported there", diag=res.diag())

with tap.guard("drop"), BrokenEchoServer("drop", at=4097) as srv:
    res = client(srv.port, "-n", "64k", "-s", 12, timeout=20)
    tap.ok(res.rc == 1 and "offset=4097" in res.out,
           "a byte dropped at offset 4097 is reported there", diag=res.diag())

with tap.guard("nodelay-flip"), BrokenEchoServer("flip", at=54321) as srv:
    res = client(srv.port, "-n", "100000", "--chunk", "1", "-s", 13, timeout=30)
    tap.ok(res.rc == 1 and "offset=54321" in res.out,
           "one-byte writes: a flipped byte at offset 54321 is reported there", diag=res.diag())

with tap.guard("delay"), BrokenEchoServer("delay", at=0.3) as srv:
    res = client(srv.port, "--mode", "pingpong", "--chunk", "64", "-n", "640",
                 "--interval", "20", timeout=20)
    rtt_max = res.info.get("rtt_max_us", 0)
    tap.diag(f"rtt_count={res.info.get('rtt_count')} rtt_max_us={rtt_max} "
             f"rtt_p50_us={res.info.get('rtt_p50_us')}")
    tap.ok(res.ok and res.info.get("rtt_count") == 10 and rtt_max >= 300000
           and res.info.get("rtt_p50_us", 10 ** 9) < 300000,
           "pingpong: a 300 ms reply shows in rtt_max_us, 10 round trips counted",
           diag=res.diag())
    t = res.info.get("elapsed_ms", 0)
    tap.ok(t >= 300 + 9 * 20, f"--interval 20 paces the chunks ({t} ms for 10)",
           diag=res.diag())

with tap.guard("bind"), BrokenEchoServer("echo") as srv:
    res = client(srv.port, "-c", 64, "-n", "100", "--bind", "127.0.0.1-127.0.0.16",
                 "-s", 14, timeout=20)
    tap.ok(res.ok and srv.peers == {f"127.0.0.{i}" for i in range(1, 17)},
           f"--bind 127.0.0.1-127.0.0.16 spreads 64 connections over {len(srv.peers)} "
           f"source addresses", diag=f"{sorted(srv.peers)}\n{res.diag()}")

with tap.guard("concurrency"), BrokenEchoServer("echo", done_after=4096) as srv:
    res = client(srv.port, "-c", 200, "-n", "4k", "--concurrency", 4, "-s", 15, timeout=20)
    tap.diag(f"server saw at most {srv.max_open} connections open at once")
    # a connection stops counting when its 4 KiB are in, before they go
    # back: the bound is exact, whatever the load on the machine (without
    # --concurrency, 200 connections at once show 13 here)
    tap.ok(res.ok and res.info.get("conns") == 200 and 1 <= srv.max_open <= 4,
           f"--concurrency 4: 200 connections, at most {srv.max_open} open at once "
           f"as the server saw it", diag=res.diag())

with tap.guard("duration"), BrokenEchoServer("echo") as srv:
    t0 = time.monotonic()
    res = client(srv.port, "-c", 2, "-n", "1k", "--duration", "1", "-s", 16, timeout=10)
    took = time.monotonic() - t0
    n = res.info.get("conns", 0)
    tap.ok(res.ok and n > 2 and 1.0 <= took < 5 and
           res.info.get("bytes_sent") == res.info.get("bytes_received") == n * 1024,
           f"--duration 1: {n} connections in {took:.2f} s, all bytes verified",
           diag=res.diag())

with tap.guard("usage"):
    res = client(1, "--interval", "5", timeout=5)
    tap.ok(res.rc == 2, "--interval without pingpong is a usage error", diag=res.diag())
    res = client(1, "--bind", "127.0.0.9-127.0.0.1", timeout=5)
    tap.ok(res.rc == 2, "a reversed --bind range is a usage error", diag=res.diag())
tap.done()
