#!/usr/bin/env python3
"""Socket activation through systemd-socket-activate: echod adopts the
passed listener (never binds its own), serves byte-exact, keeps the
inherited socket across reloads, tells a metrics fd from an echo fd by
name, and refuses malformed LISTEN_* variables with a clear error."""
import os
import re
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (MiB, SYSTEMD_SOCKET_ACTIVATE, Daemon, Tap, backends,  # noqa: E402
                       client, client_ok, free_port)
from metricsutil import request  # noqa: E402

tap = Tap()
ssa = SYSTEMD_SOCKET_ACTIVATE or "/usr/bin/systemd-socket-activate"
for be in backends():
    if not os.access(ssa, os.X_OK):
        tap.skip(f"[{be}] socket activation", "systemd-socket-activate not installed")
        continue
    port = free_port()
    # the config names another port: an activated echod must not bind it
    other = free_port()
    # systemd-socket-activate starts echod at the first connection, which
    # then waits in the inherited socket's backlog
    with tap.guard(be), Daemon(be, port=other, wait_ready=False,
                               argv_prefix=[ssa, "-l", f"127.0.0.1:{port}"]) as d:
        d.wait_log(r"Listening on", 5)
        res = client(port, "-n", "64k", "-s", 20)
        client_ok(tap, f"[{be}] the first connection starts echod and is served", res, d,
                  total=65536)
        d.wait_log(r"ready:", 10)
        tap.ok(re.search(r"socket activation: adopted 1 listener", d.log()),
               f"[{be}] adopts the socket passed as fd 3", diag=d.log_tail())
        tap.ok(re.search(rf"ready: .*listening on 127\.0\.0\.1:{port}", d.log()),
               f"[{be}] serves on the activated address", diag=d.log_tail())
        res = client(port, "-c", 8, "-n", "2M", "-s", 21)
        client_ok(tap, f"[{be}] byte-exact on the activated socket", res, d, total=16 * MiB)
        tap.ok(os.readlink(f"/proc/{d.pid}/fd/3").startswith("socket:"),
               f"[{be}] fd 3 is the inherited socket")
        mark = d.log_mark()
        d.signal(signal.SIGHUP)
        d.wait_log(r"reload: configuration applied", 10, since=mark)
        res = client(port, "-c", 2, "-n", "1M", "-s", 22)
        client_ok(tap, f"[{be}] the inherited socket still serves after a reload", res, d,
                  total=2 * MiB)
        r = client(other, "-n", "1", timeout=3)
        tap.ok(not r.ok, f"[{be}] the configured port is not bound when activated",
               diag=r.diag())
        tap.ok(d.stop() == 0, f"[{be}] exit 0 on SIGTERM", diag=d.log_tail())

    # a metrics socket by name, beside the echo socket
    p1, p2 = free_port(), free_port()
    with tap.guard(be), Daemon(be, wait_ready=False,
                               metrics={"enabled": True, "address": "127.0.0.1",
                                        "port": free_port()},
                               argv_prefix=[ssa, "-l", f"127.0.0.1:{p1}", "-l", f"127.0.0.1:{p2}",
                                            "--fdname=echo:metrics"]) as d:
        d.wait_log(r"Listening on .*:%d" % p2, 5)
        res = client(p1, "-n", "1M", "-s", 23)
        client_ok(tap, f"[{be}] echo on the socket named \"echo\"", res, d, total=MiB)
        d.wait_log(r"ready:", 10)
        tap.ok(re.search(r"adopted 1 listener", d.log()) and
               not re.search(rf"listening on .*:{p2}", d.log()),
               f"[{be}] a socket named \"metrics\" is not an echo listener", diag=d.log_tail())
        st, hd, body = request(p2)
        tap.ok(st == 200 and b"echod_received_bytes_total" in body and
               re.search(r"metrics: serving .*socket-activated", d.log()),
               f"[{be}] /metrics served on the socket-activated metrics socket",
               diag=f"{st}\n{d.log_tail()}")

    # malformed variables: refused at start, clearly
    for env, what in (({"LISTEN_PID": "abc", "LISTEN_FDS": "1"}, "LISTEN_PID=abc"),
                      ({"LISTEN_PID": str(os.getpid() + 10**6), "LISTEN_FDS": "1"},
                       "LISTEN_PID of another process")):
        with tap.guard(be):
            d = Daemon(be, env=env, wait_ready=False)
            try:
                d.start()
                rc = d.wait(10)
                if "another" in what:
                    # not for us: echod binds its own sockets and serves
                    ok = rc is None and d.wait_log(r"ready:", 5)
                    tap.ok(ok, f"[{be}] {what}: ignored, binds its own listener",
                           diag=d.log_tail())
                else:
                    tap.ok(rc == 1 and re.search(r"LISTEN|activation|listen", d.log()),
                           f"[{be}] {what}: refused with exit 1 and a message",
                           diag=f"rc={rc}\n{d.log_tail()}")
            finally:
                d.cleanup()
tap.done()
