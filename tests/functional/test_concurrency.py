#!/usr/bin/env python3
"""Many concurrent connections, byte-exact: 500 with payloads up to 64 KiB,
then 1500 held open at once (well past 1024 fds); the daemon's fd count
returns to its baseline afterwards."""
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (KiB, Daemon, Tap, backends, client, client_bg,  # noqa: E402
                       client_ok, client_wait, poll_until, wait_fds)
from loadutil import tcp_states  # noqa: E402

N = 1500


def soft_1024():
    """Start the daemon with systemd's default soft fd limit (1024), the
    hard one unchanged: it must raise its own soft limit to serve 1500."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))


tap = Tap()
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
for be in backends():
    if hard != resource.RLIM_INFINITY and hard < N + 100:
        tap.skip(f"[{be}] {N} concurrent connections", f"hard fd limit {hard} is too low")
        continue
    with tap.guard(be), Daemon(be, preexec=soft_1024) as d:
        # warm up (lazy allocations), then take the fd baseline
        client(d.port, "-n", "64k")
        # echod closes the warm-up connection just after its client did
        poll_until(lambda: set(tcp_states(d.port)) <= {"LISTEN"}, 5)
        base = d.fd_count()
        tap.diag(f"[{be}] daemon fd baseline {base}, {d.threads} threads")

        res = client(d.port, "-c", 500, "--min", 1, "--max", 64 * KiB, "-s", 500)
        client_ok(tap, f"[{be}] 500 concurrent connections, random 1 B..64 KiB byte-exact",
                  res, d)

        # 1500 connections that all stay open together for 2 s
        n = N
        p = client_bg(d.port, "-c", n, "--min", 1, "--max", 2 * KiB, "-s", 1500,
                      "--hold", 2000, timeout=20)
        t0 = time.monotonic()
        peak = [0]

        def all_open():
            try:
                peak[0] = max(peak[0], d.fd_count())
            except OSError:
                return False
            return peak[0] >= base + n
        poll_until(lambda: all_open() or p.poll() is not None, 20, 0.02)
        tap.diag(f"[{be}] peak daemon fd count {peak[0]} "
                 f"({time.monotonic() - t0:.2f} s after the client started)")
        res = client_wait(p)
        client_ok(tap, f"[{be}] 1500 concurrent connections byte-exact", res, d)
        tap.ok(peak[0] >= base + n,
               f"[{be}] daemon held all 1500 connections at once",
               diag=f"peak fd count {peak[0]}, baseline {base}")
        tap.ok(res.info.get("hold_closed", -1) == 0,
               f"[{be}] no connection closed by the daemon while held",
               diag=res.diag())
        last = wait_fds(d, base, 5)
        tap.ok(last is not None and last <= base,
               f"[{be}] fd count back to baseline after 1500 connections",
               diag=f"fd count {last}, baseline {base}\n{d.log_tail()}")
        tap.ok(d.running(), f"[{be}] daemon still running", diag=d.log_tail())
tap.done()
