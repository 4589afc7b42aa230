#!/usr/bin/env python3
"""echod-bench --reconnect, the client of `make bench`'s connect/echo/close
cells: every request is a connection of its own.  Against echod (each
backend) with metrics on, the connections echod accepted over the run are
at least the requests echod-bench completed (one per request, not a few
reused), and no byte was wrong; against a server that corrupts one byte of
the third connection's echo, echod-bench exits 1 naming the wrong byte (so a
cell that echoes wrongly cannot pass); and --reconnect with --rate or --udp
is a usage error (exit 2)."""
import json
import os
import socket
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (_child_setup, _register, _unregister, Daemon, Tap,  # noqa: E402
                       backends, free_port)
from metricsutil import scrape, value  # noqa: E402

ECHOBENCH = os.environ.get("ECHOBENCH") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "bench", "echod-bench")

tap = Tap(timeout=120)


def echobench(port, *extra, pid=None):
    argv = [ECHOBENCH, "-p", str(port), "-c", "8", "-l", "64", "-w", "0.2", "-d", "1",
            "--reconnect", "--json", *extra]
    if pid:
        argv += ["--server-pid", str(pid)]
    p = _register(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, preexec_fn=_child_setup()))
    try:
        out, err = p.communicate(timeout=60)
    finally:
        _unregister(p)
    return p.returncode, out, err


def accepted(mport):
    return value(scrape(mport), "echod_connections_accepted_total")


def corrupting_server(lsock, stop):
    """Echoes each connection's bytes back; the third connection's first
    byte comes back flipped."""
    n = 0
    lsock.settimeout(0.2)
    while not stop.is_set():
        try:
            c, _ = lsock.accept()
        except socket.timeout:
            continue
        except OSError:
            return
        n += 1
        with c:
            c.settimeout(5)
            try:
                data = c.recv(64)
                while data and len(data) < 64:
                    more = c.recv(64 - len(data))
                    if not more:
                        break
                    data += more
                if n == 3 and data:
                    data = bytes([data[0] ^ 0x5a]) + data[1:]
                c.sendall(data)
            except OSError:
                pass


for backend in backends():
    with tap.guard(backend):
        mport = free_port()
        with Daemon(backend, metrics={"enabled": True, "port": mport,
                                      "address": "127.0.0.1"}) as d:
            before = accepted(mport)
            rc, out, err = echobench(d.port, pid=d.pid)
            tap.ok(rc == 0, f"[{backend}] echod-bench --reconnect exits 0", err.strip())
            r = json.loads(out) if rc == 0 else {}
            after = accepted(mport)
            done = r.get("requests", 0)
            tap.ok(r.get("mode") == "reconnect" and r.get("errors") == 0 and done > 100,
                   f"[{backend}] {done} requests, {r.get('req_s', 0):.0f} connections/s, "
                   "no connection lost", out)
            # warm-up requests and those in flight at the end also connected
            tap.ok(after - before >= done,
                   f"[{backend}] echod accepted {after - before} connections for {done} "
                   "requests: one connection each")

ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(64)
stop = threading.Event()
t = threading.Thread(target=corrupting_server, args=(ls, stop), daemon=True)
t.start()
try:
    rc, out, err = echobench(ls.getsockname()[1], "-c", "1")
finally:
    stop.set()
    t.join(5)
    ls.close()
tap.ok(rc == 1 and "request=2 " in err and "expected=" in err,
       "a byte flipped in the third connection's echo: exit 1 naming request 2",
       f"rc {rc}: {err.strip()}")

for extra in (["--rate", "100"], ["--udp"]):
    rc, out, err = echobench(free_port(), *extra)
    tap.ok(rc == 2 and "--reconnect" in err, f"--reconnect with {extra[0]}: usage error",
           f"rc {rc}: {err.strip()}")

tap.done()
