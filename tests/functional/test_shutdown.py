#!/usr/bin/env python3
"""SIGTERM drain: accepting stops; idle connections read EOF at once; a
connection with unsent bytes gets every byte the daemon had received,
then EOF; the daemon exits 0 as soon as the clients have closed, or at
shutdown_timeout when a client never reads."""
import os
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import Daemon, Tap, backends, poll_until  # noqa: E402


def payload(n, seed):
    out = bytearray()
    x = seed
    while len(out) < n:
        x = (x * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
        out += x.to_bytes(8, "little")
    return bytes(out[:n])


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    return s


def read_until_eof(s, limit, timeout=10):
    """Read until EOF: (bytes, got_eof)."""
    s.settimeout(timeout)
    buf = bytearray()
    try:
        while len(buf) <= limit:
            d = s.recv(1 << 16)
            if not d:
                return bytes(buf), True
            buf += d
    except (socket.timeout, ConnectionResetError):
        pass
    return bytes(buf), False


def send_nonblocking(s, data):
    """Send as much as the socket takes now: bytes sent."""
    s.setblocking(False)
    sent = 0
    try:
        while sent < len(data):
            sent += s.send(data[sent:sent + 65536])
    except BlockingIOError:
        pass
    s.setblocking(True)
    return sent


tap = Tap(timeout=120 * len(backends()))
for be in backends():
    # --- drain with idle clients and a client holding unsent bytes
    with tap.guard(be), Daemon(be, shutdown_timeout=10) as d:
        idle = []
        for i in range(10):
            s = connect(d.port)
            s.sendall(b"ping%d" % i)
            got = s.recv(100)
            idle.append((s, got == b"ping%d" % i))
        tap.ok(all(ok for _, ok in idle), f"[{be}] 10 clients echo before SIGTERM")
        data = payload(8 << 20, 7)
        slow = connect(d.port)
        sent = send_nonblocking(slow, data)
        time.sleep(0.5)
        sent += send_nonblocking(slow, data[sent:])
        tap.diag(f"[{be}] the slow client sent {sent} bytes without reading")
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        eofs = 0
        for s, _ in idle:
            got, eof = read_until_eof(s, 0, timeout=3)
            eofs += eof and got == b""
            s.close()
        tap.ok(eofs == 10, f"[{be}] idle clients read EOF after SIGTERM ({eofs}/10)",
               diag=d.log_tail())
        late = None
        try:
            late = socket.create_connection(("127.0.0.1", d.port), timeout=2)
            late.sendall(b"late")
            late.settimeout(1)
            echoed = late.recv(10)
        except (socket.timeout, OSError):
            echoed = b""
        tap.ok(echoed in (b"",), f"[{be}] a connection made after SIGTERM is not served",
               diag=f"got {echoed!r}")
        got, eof = read_until_eof(slow, len(data), timeout=10)
        tap.ok(eof and len(got) > 0 and got == data[:len(got)],
               f"[{be}] the slow client gets a byte-exact prefix ({len(got)} of {sent} sent), then EOF",
               diag=f"eof={eof} len={len(got)} prefix ok={got == data[:len(got)]}\n{d.log_tail()}")
        slow.close()
        rc = d.wait(8)
        took = time.monotonic() - t0
        if late:
            late.close()
        tap.ok(rc == 0, f"[{be}] exit status 0 after the drain", diag=f"rc={rc}\n{d.log_tail()}")
        tap.ok(took < 5, f"[{be}] exited once the clients closed ({took:.2f} s, deadline 10 s)")
        tap.ok("stopped" in d.log(), f"[{be}] logs the stop", diag=d.log_tail())

    # --- a client that never reads nor closes: the deadline ends it
    with tap.guard(be), Daemon(be, shutdown_timeout=2) as d:
        stuck = connect(d.port)
        send_nonblocking(stuck, payload(4 << 20, 9))
        time.sleep(0.3)
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        rc = d.wait(15)
        took = time.monotonic() - t0
        tap.ok(rc == 0, f"[{be}] exit status 0 at the deadline", diag=f"rc={rc}\n{d.log_tail()}")
        tap.ok(2.0 <= took < 6.0, f"[{be}] a stuck client holds the exit until shutdown_timeout "
               f"+ grace ({took:.2f} s for 2 s)")
        tap.ok("deadline" in d.log(), f"[{be}] the deadline is logged", diag=d.log_tail())
        stuck.close()

    # --- SIGINT behaves as SIGTERM
    with tap.guard(be), Daemon(be) as d:
        d.signal(signal.SIGINT)
        rc = d.wait(5)
        tap.ok(rc == 0 and "SIGINT" in d.log(), f"[{be}] SIGINT: exit 0", diag=d.log_tail())
tap.done()
