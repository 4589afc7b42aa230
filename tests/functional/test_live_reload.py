#!/usr/bin/env python3
"""Live reload of what needs new event loops: the backend (io_uring <->
epoll), the buffers and the cores.  Connections are handed over to the
new workers: clients connected through the reloads, streaming or holding
unsent bytes, get every byte back, in order; the process stays the same;
the counters go on."""
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (MiB, Daemon, Tap, backends, client, client_bg,  # noqa: E402
                       client_ok, client_wait, free_port)
from metricsutil import scrape, value  # noqa: E402

APPLIED = r"reload: configuration applied"

tap = Tap(timeout=120)
bes = backends()
ncpu = len(os.sched_getaffinity(0))
cores = sorted(os.sched_getaffinity(0))
# the sequence of reloads: each changes what needs new workers
steps = []
for i in range(4):
    be = bes[i % len(bes)] if len(bes) > 1 else bes[0]
    steps.append({"backend": be, "buffer_count": [4096, 512, 2048, 64][i],
                  "core": [cores[0]] if i % 2 == 0 or ncpu < 2 else cores[:2]})
mport = free_port()
first = bes[-1]
with tap.guard("live"), Daemon(first, metrics={"enabled": True, "address": "127.0.0.1",
                                                "port": mport}) as d:
    pid = d.pid
    stream = client_bg(d.port, "-c", 8, "-n", "192M", "--random-chunks", "-s", 101, timeout=90)
    stalled = client_bg(d.port, "-c", 2, "-n", "24M", "--no-read-ms", 2500, "-s", 102,
                        timeout=90)
    half = client_bg(d.port, "-c", 4, "-n", "8M", "--half-close", "--random-chunks", "-s", 103,
                     timeout=90)
    time.sleep(0.3)
    applied = 0
    for st in steps:
        mark = d.log_mark()
        d.rewrite_config(**st)
        d.signal(signal.SIGHUP)
        m = d.wait_log(APPLIED, 15, since=mark)
        applied += bool(m)
        s = scrape(mport)
        tap.ok(m and value(s, "echod_backend_info", backend=st["backend"]) == 1 and
               value(s, "echod_workers") == len(st["core"]),
               f"reload to {st['backend']}, {st['buffer_count']} buffers, cores {st['core']}: "
               f"applied, {len(st['core'])} worker(s)", diag=d.log_tail())
        h = re.findall(r"reload: (\d+) connection\(s\) handed over", d.log()[mark:])
        tap.diag(f"{h[0] if h else '?'} connection(s) handed over")
        time.sleep(0.3)
    r1, r2, r3 = client_wait(stream), client_wait(stalled), client_wait(half)
    client_ok(tap, "8 streaming clients, connected through 4 reloads: byte-exact", r1, d,
              total=8 * 192 * MiB)
    client_ok(tap, "2 clients holding unsent bytes through the reloads: byte-exact", r2, d,
              total=2 * 24 * MiB)
    client_ok(tap, "4 half-closing clients through the reloads: every byte, then EOF", r3, d,
              total=4 * 8 * MiB)
    tap.diag(f"stalled clients had sent {r2.info.get('stalled_sent')} bytes before reading")
    tap.ok(d.pid == pid and d.running(), "the same process throughout")
    total = (8 * 192 + 2 * 24 + 4 * 8) * MiB
    # a client can have its last bytes before the worker has reaped the
    # send's completion (and counted it): give the counters a moment
    deadline = time.monotonic() + 5
    while True:
        s = scrape(mport)
        if value(s, "echod_sent_bytes_total") >= total or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    tap.ok(value(s, "echod_received_bytes_total") == total and
           value(s, "echod_sent_bytes_total") == total and
           value(s, "echod_connections_accepted_total") == 14,
           "counters go on across the reloads: bytes and connections exact",
           diag=f"{value(s, 'echod_received_bytes_total')} {value(s, 'echod_sent_bytes_total')} "
                f"{value(s, 'echod_connections_accepted_total')}")
    res = client(d.port, "-c", 20, "-n", "1M", "-s", 104)
    client_ok(tap, "new clients served after the reloads", res, d, total=20 * MiB)
    # the metrics endpoint moves live
    mport2 = free_port()
    mark = d.log_mark()
    d.rewrite_config(metrics={"enabled": True, "address": "127.0.0.1", "port": mport2})
    d.signal(signal.SIGHUP)
    d.wait_log(APPLIED, 15, since=mark)
    try:
        scrape(mport)
        old_closed = False
    except OSError:
        old_closed = True
    s2 = scrape(mport2)
    tap.ok(old_closed and value(s2, "echod_received_bytes_total") >= total,
           f"metrics moved live from port {mport} to {mport2}; the old port is closed",
           diag=d.log_tail())
    tap.ok(d.stop() == 0, "clean exit", diag=d.log_tail())
tap.done()
