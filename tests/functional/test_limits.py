#!/usr/bin/env python3
"""Limits: max_connections is exact (the extra clients are closed at once
and the allowed ones served); idle connections are closed after
idle_timeout and active ones are not; out of file descriptors (EMFILE)
the daemon neither spins nor dies, and accepts again once fds free up."""
import os
import resource
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (Daemon, Tap, backends, client, client_bg, client_ok,  # noqa: E402
                       client_wait, poll_until)


def low_nofile(n):
    def fn():
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return fn


tap = Tap(timeout=90 * len(backends()))
for be in backends():
    # --- max_connections exact
    with tap.guard(be), Daemon(be, max_connections=20) as d:
        base = d.fd_count()
        hold = client_bg(d.port, "-c", 20, "-n", "1k", "--hold", 2500, timeout=20)
        poll_until(lambda: d.fd_count() >= base + 20, 5)
        tap.ok(d.fd_count() == base + 20, f"[{be}] 20 of max_connections 20 open",
               diag=f"fds {d.fd_count()} base {base}")
        rej = client(d.port, "-c", 10, "--expect-close", timeout=10)
        tap.ok(rej.ok, f"[{be}] the 21st to 30th clients are closed at once", diag=rej.diag())
        res = client_wait(hold)
        tap.ok(res.ok and res.info.get("hold_closed") == 0,
               f"[{be}] the 20 admitted clients were served and kept open", diag=res.diag())
        poll_until(lambda: d.fd_count() <= base, 5)
        res = client(d.port, "-c", 20, "-n", "100k", "-s", 31)
        client_ok(tap, f"[{be}] 20 new clients served once the others left", res, d,
                  total=20 * 102400)

    # --- idle timeout
    with tap.guard(be), Daemon(be, idle_timeout=1) as d:
        t0 = time.monotonic()
        res = client(d.port, "-c", 10, "-n", "1k", "--hold", 3000, timeout=20)
        tap.ok(res.ok and res.info.get("hold_closed") == 10,
               f"[{be}] 10 idle connections closed by idle_timeout 1 s", diag=res.diag())
        # a connection that keeps talking is never idle: a byte every 0.4 s for 3 s
        s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        echoed = 0
        for i in range(8):
            s.sendall(bytes([i]))
            echoed += s.recv(1) == bytes([i])
            time.sleep(0.4)
        s.sendall(b"!")
        alive = s.recv(1) == b"!"
        s.close()
        tap.ok(echoed == 8 and alive,
               f"[{be}] a connection active every 0.4 s outlives idle_timeout 1 s (3.2 s)")

    # --- EMFILE: a daemon limited to 48 fds, 100 clients holding
    with tap.guard(be), Daemon(be, preexec=low_nofile(48)) as d:
        hold = client_bg(d.port, "-c", 100, "-n", "10", "--hold", 3000, timeout=15)
        seen = d.wait_log(r"accept4 failed.*Too many open files", 5)
        tap.ok(seen, f"[{be}] EMFILE on accept is logged, naming accept4", diag=d.log_tail())
        time.sleep(0.5)
        cpu0 = d.cpu_seconds()
        time.sleep(1.0)
        cpu = d.cpu_seconds() - cpu0
        tap.diag(f"[{be}] daemon CPU over 1 s while out of fds: {cpu:.3f} s")
        tap.ok(cpu < 0.2, f"[{be}] no spin while out of fds ({cpu:.3f} s CPU in 1 s)")
        tap.ok(d.running(), f"[{be}] alive while out of fds")
        client_wait(hold)     # the holders leave (some were never served)
        t0 = time.monotonic()
        res = client(d.port, "-c", 5, "-n", "256k", "-s", 33)
        took = time.monotonic() - t0
        client_ok(tap, f"[{be}] accepts again once fds are free ({took:.2f} s)", res, d,
                  total=5 * 256 * 1024)
        tap.ok(d.stop() == 0, f"[{be}] clean exit after EMFILE", diag=d.log_tail())
tap.done()
