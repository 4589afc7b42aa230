#!/usr/bin/env python3
"""busy_poll_us: after a wait that brought events, an event loop polls
(waits with a zero timeout) for busy_poll_us before it sleeps again.
Read from the event loop's own CPU time (schedstat, in ns): off (the
default), an echo costs the loop next to nothing and it sleeps at once;
on, the loop keeps its CPU busy for about busy_poll_us after the echo and
then sleeps; traffic that keeps coming keeps it polling; a reload turns it
off live.  Every byte still comes back, on both backends."""
import os
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import Daemon, Tap, backends, client, client_ok  # noqa: E402

WINDOW_US = 100000       # the largest busy_poll_us: 100 ms of polling


def loop_cpu_ns(pid):
    """CPU time of the event loop thread (echod-w0), in ns."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() != "echod-w0":
                    continue
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                return int(f.read().split()[0])
        except FileNotFoundError:
            continue
    raise RuntimeError("no echod-w0 thread")


def echo_once(port, payload=b"ping"):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    return got == payload


def cpu_after_echo(d, settle=0.3, window=0.4):
    """(ok, ms of loop CPU in the window right after one echo, ms in the
    same length of time once the polling window has surely ended)."""
    time.sleep(settle)                 # whatever start-up or reload did is over
    c0 = loop_cpu_ns(d.pid)
    ok = echo_once(d.port)
    time.sleep(window)
    c1 = loop_cpu_ns(d.pid)
    time.sleep(window)
    c2 = loop_cpu_ns(d.pid)
    return ok, (c1 - c0) / 1e6, (c2 - c1) / 1e6


tap = Tap(timeout=120)
for be in backends():
    with tap.guard(be), Daemon(be, idle_timeout=0) as d:
        ok, busy, idle = cpu_after_echo(d)
        tap.ok(ok and busy < 10 and idle < 10,
               f"[{be}] busy_poll_us = 0 (default): the loop sleeps after an echo "
               f"({busy:.1f} ms, then {idle:.1f} ms of CPU in 0.4 s)")

    with tap.guard(be), Daemon(be, idle_timeout=0, busy_poll_us=WINDOW_US) as d:
        ok, busy, idle = cpu_after_echo(d)
        # 100 ms of polling: at least a fifth of it on a loaded machine,
        # never much more than the window; then asleep
        tap.ok(ok and 15 <= busy <= 200 and idle < 10,
               f"[{be}] busy_poll_us = {WINDOW_US}: the loop polls after an echo, then "
               f"sleeps ({busy:.1f} ms, then {idle:.1f} ms of CPU in 0.4 s)")

        # traffic every 50 ms (inside the window) keeps it polling
        c0 = loop_cpu_ns(d.pid)
        t0 = time.monotonic()
        good = True
        with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
            for i in range(20):
                msg = b"%04d" % i
                s.sendall(msg)
                got = b""
                while len(got) < len(msg):
                    got += s.recv(64)
                good = good and got == msg
                time.sleep(0.05)
        spent = time.monotonic() - t0
        cpu = (loop_cpu_ns(d.pid) - c0) / 1e6
        tap.ok(good and cpu >= 0.2 * spent * 1000,
               f"[{be}] traffic every 50 ms keeps the loop polling "
               f"({cpu:.0f} ms of CPU in {spent * 1000:.0f} ms)")

        res = client(d.port, "-c", 64, "--min", "1", "--max", "64k", "-s", 77)
        client_ok(tap, f"[{be}] busy polling: 64 connections, every byte back", res, d)

        mark = d.log_mark()
        d.rewrite_config(busy_poll_us=0)
        d.signal(signal.SIGHUP)
        m = d.wait_log(r"reload: configuration applied .*busy_poll_us 0\b", since=mark)
        ok, busy, idle = cpu_after_echo(d)
        tap.ok(m and ok and busy < 10 and idle < 10,
               f"[{be}] a reload to busy_poll_us = 0 applies live: the loop sleeps again "
               f"({busy:.1f} ms, then {idle:.1f} ms)", diag=d.log_tail())
        tap.ok(d.stop() == 0, f"[{be}] stops cleanly", diag=d.log_tail())
tap.done()
