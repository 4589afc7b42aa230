#!/usr/bin/env python3
"""batch_wait_us: under load an io_uring event loop waits up to that long
for more completions (a min-wait timeout, kernel 6.12) before it handles
them.  32 connections in ping-pong: with batch_wait_us = 0 each wake-up
handles a few completions; after a live reload to 2000 µs, several times
as many (echod_loop_events_total / echod_loop_wakeups_total), every byte
still echoed in order.  A lone connection is not held back: 400 round
trips with batch_wait_us = 10000 take well under the 4 s that holding
each for 10 ms would.  With epoll the setting has no effect, and the log
says so."""
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import KiB, Daemon, Tap, backends, client, client_ok, free_port  # noqa: E402
from metricsutil import scrape, value  # noqa: E402

tap = Tap(timeout=300)
CONNS, EACH = 32, 512 * KiB


def batch(mport, before):
    m = scrape(mport)
    w = value(m, "echod_loop_wakeups_total") - before[0]
    e = value(m, "echod_loop_events_total") - before[1]
    return (w, e), (value(m, "echod_loop_wakeups_total"), value(m, "echod_loop_events_total"))


for be in backends():
    mport = free_port()
    with tap.guard(be), Daemon(be, metrics={"enabled": True, "address": "127.0.0.1",
                                            "port": mport}) as d:
        supported = be == "io_uring" and ", min-wait timeouts," in d.log()
        _, mark = batch(mport, (0, 0))
        res = client(d.port, "--mode", "pingpong", "--chunk", "1k", "-c", CONNS, "-n", EACH,
                     "-s", 31)
        client_ok(tap, f"[{be}] batch_wait_us = 0: {CONNS} connections in ping-pong byte-exact",
                  res, d, total=CONNS * EACH)
        (w0, e0), mark = batch(mport, mark)
        r0 = e0 / w0 if w0 else 0
        tap.diag(f"[{be}] batch_wait_us = 0: {e0:.0f} events in {w0:.0f} wake-ups ({r0:.1f} each)")
        tap.ok(w0 > 0 and e0 >= w0, f"[{be}] echod_loop_wakeups_total and _events_total count "
               f"the wake-ups and their events ({w0:.0f}, {e0:.0f})")

        log_mark = d.log_mark()
        d.rewrite_config(batch_wait_us=2000)
        d.signal(signal.SIGHUP)
        m = d.wait_log(r"reload: configuration applied .*batch_wait_us 2000\b", since=log_mark)
        tap.ok(m is not None, f"[{be}] a reload to batch_wait_us = 2000 applies live",
               diag=d.log_tail())
        res = client(d.port, "--mode", "pingpong", "--chunk", "1k", "-c", CONNS, "-n", EACH,
                     "-s", 32)
        client_ok(tap, f"[{be}] batch_wait_us = 2000: {CONNS} connections in ping-pong "
                  "byte-exact", res, d, total=CONNS * EACH)
        (w1, e1), mark = batch(mport, mark)
        r1 = e1 / w1 if w1 else 0
        tap.diag(f"[{be}] batch_wait_us = 2000: {e1:.0f} events in {w1:.0f} wake-ups "
                 f"({r1:.1f} each)")
        if supported:
            tap.ok(r1 >= 2 * r0 and r1 >= 8, f"[{be}] under load each wake-up handles more "
                   f"completions: {r1:.1f} against {r0:.1f} (at least twice, and 8)")
        elif be == "io_uring":
            tap.skip(f"[{be}] under load each wake-up handles more completions",
                     "this kernel has no min-wait timeouts (before 6.12)")
        else:
            tap.ok(d.wait_log(r"batch_wait_us = 2000 has no effect with the epoll backend",
                              since=log_mark) is not None,
                   f"[{be}] the log says batch_wait_us has no effect with epoll",
                   diag=d.log_tail())

        if be == "io_uring" and supported:
            log_mark = d.log_mark()
            d.rewrite_config(batch_wait_us=10000)
            d.signal(signal.SIGHUP)
            d.wait_log(r"reload: configuration applied .*batch_wait_us 10000\b", since=log_mark)
            # warm: the first wake-ups after the load above may still batch
            client(d.port, "--mode", "pingpong", "--chunk", "1k", "-n", "8k", "-s", 33)
            res = client(d.port, "--mode", "pingpong", "--chunk", "1k", "-n", "400k", "-s", 34)
            ms = res.info.get("elapsed_ms", 1e9)
            client_ok(tap, f"[{be}] batch_wait_us = 10000: a lone connection's 400 round "
                      "trips byte-exact", res, d, total=400 * KiB)
            tap.ok(ms < 1500, f"[{be}] a lone connection is not held back: 400 round trips "
                   f"in {ms} ms (< 1500; held 10 ms each they would take 4000)")
        tap.ok(d.running(), f"[{be}] daemon still running", diag=d.log_tail())
tap.done()
