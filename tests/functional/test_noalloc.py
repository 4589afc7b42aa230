#!/usr/bin/env python3
"""No allocation on the data path after start-up: with an LD_PRELOAD shim
counting the allocations made by echod's worker threads, a load run
(hundreds of connections, random payloads and short writes, half-closes,
resets, backpressure, buffer exhaustion) and UDP bursts beside it (same-size
datagrams echoed as coalesced UDP_SEGMENT runs, udp.coalesce) make none once
the daemon serves.  The shim is shown to count: a hand-over (a reload switching
backend while a client holds unsent bytes) allocates in a worker, and is
counted."""
import os
import re
import signal
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (MiB, Daemon, Tap, backends, client, client_bg,  # noqa: E402
                       client_ok, client_wait, free_port)
from metricsutil import scrape, value  # noqa: E402

if os.environ.get("ECHOD_SANITIZERS") == "1":
    # ASan replaces malloc itself: the LD_PRELOAD counting shim cannot sit beside it
    print("1..0 # SKIP built with --enable-sanitizers: ASan owns malloc, the "
          "LD_PRELOAD malloc_count.so shim cannot run beside it", flush=True)
    sys.exit(0)

SO = os.environ.get("MALLOC_COUNT_SO") or os.path.join(
    os.path.dirname(os.environ.get("ECHOCLIENT", "")), "malloc_count.so")
ARM_MS = 1500


def counts(path):
    with open(path) as f:
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", f.read())}


def udp_bursts(port, rounds=150, flows=4, burst=24, size=1000):
    """Bursts of same-size datagrams from a few flows: (datagrams sent,
    echoes back exact)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(flows)]
    sent = ok = 0
    for s in socks:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.settimeout(2)
    for r in range(rounds):
        for i, s in enumerate(socks):
            for k in range(burst):
                s.sendto(bytes([(r + i + k) & 255]) * size, ("127.0.0.1", port))
                sent += 1
        for i, s in enumerate(socks):
            for k in range(burst):
                try:
                    ok += s.recv(2048) == bytes([(r + i + k) & 255]) * size
                except socket.timeout:
                    break
    for s in socks:
        s.close()
    return sent, ok


def coalesced(mport):
    return value(scrape(mport), "echod_udp_coalesced_datagrams_total")


tap = Tap(timeout=90 * len(backends()))
for be in backends():
    out = tempfile.mktemp(prefix="echodtest.malloc.")
    env = {"LD_PRELOAD": SO, "MALLOC_COUNT_FILE": out, "MALLOC_COUNT_AFTER_MS": ARM_MS}
    up, mport = free_port("127.0.0.1", socket.SOCK_DGRAM), free_port()
    with tap.guard(be), Daemon(be, env=env, buffer_count=64,
                               udp={"enabled": True, "port": up, "listen": ["127.0.0.1"]},
                               metrics={"enabled": True, "address": "127.0.0.1",
                                        "port": mport}) as d:
        time.sleep(ARM_MS / 1000 + 0.2)          # past start-up: counting now
        loads = [client_bg(d.port, "-c", 300, "--min", "1", "--max", "256k", "--random-chunks",
                           "-s", 121, timeout=60),
                 client_bg(d.port, "-c", 50, "-n", "1M", "--half-close", "-s", 122, timeout=60),
                 client_bg(d.port, "-c", 50, "-n", "1M", "--rst-after", "100k", "-s", 123,
                           timeout=60),
                 client_bg(d.port, "-c", 4, "-n", "16M", "--no-read-ms", 1000, "-s", 124,
                           timeout=60)]
        c0 = coalesced(mport)
        sent, back = udp_bursts(up)
        c1 = coalesced(mport)
        results = [client_wait(p) for p in loads]
        tap.ok(all(r.ok for r in results), f"[{be}] load: 404 connections, every byte checked",
               diag="\n".join(r.diag() for r in results if not r.ok))
        tap.ok(back == sent and c1 > c0,
               f"[{be}] UDP beside it: {back} of {sent} datagrams back exact, "
               f"{c1 - c0:.0f} of them in coalesced sends")
        tap.ok(d.stop() == 0, f"[{be}] clean exit", diag=d.log_tail())
        c = counts(out)
        tap.diag(f"[{be}] worker-thread allocations: {c.get('startup_allocs')} at start-up, "
                 f"{c.get('worker_allocs')} during the load")
        tap.ok(c.get("startup_allocs", 0) > 0 and c.get("worker_allocs") == 0,
               f"[{be}] no allocation by the event loop during the load "
               f"({c.get('worker_allocs')} after start-up)", diag=str(c))
    os.unlink(out) if os.path.exists(out) else None

    # the shim does count: a hand-over allocates in the worker
    out = tempfile.mktemp(prefix="echodtest.malloc.")
    env = {"LD_PRELOAD": SO, "MALLOC_COUNT_FILE": out, "MALLOC_COUNT_AFTER_MS": ARM_MS}
    other = [b for b in ("epoll", "io_uring") if b != be][0]
    with tap.guard(be), Daemon(be, env=env, shutdown_timeout=1) as d:
        time.sleep(ARM_MS / 1000 + 0.2)
        held = client_bg(d.port, "-c", 2, "-n", "16M", "--no-read-ms", 1500, "-s", 125,
                         timeout=60)
        time.sleep(0.5)
        mark = d.log_mark()
        d.rewrite_config(backend=other)
        d.signal(signal.SIGHUP)
        d.wait_log(r"reload: configuration applied", 10, since=mark)
        client_ok(tap, f"[{be}] control: clients held through a hand-over to {other}",
                  client_wait(held), d, total=2 * 16 * MiB)
        d.stop()
        c = counts(out)
        tap.ok(c.get("worker_allocs", 0) > 0,
               f"[{be}] control: the hand-over's allocations are counted "
               f"({c.get('worker_allocs')})", diag=str(c))
    os.unlink(out) if os.path.exists(out) else None
tap.done()
