#!/usr/bin/env python3
"""UDP across socket activation and reloads, on each backend: echod started
by systemd-socket-activate --datagram echoes the datagram that woke it,
serves the inherited socket from one event loop only (two would reorder a
flow) and binds no UDP socket of its own; a reload that switches the
backend (or, with one backend, restarts the event loops) under steady UDP
load loses, duplicates and reorders no datagram echod received: every one
the client sent comes back in order, or is in the kernel's drop count; and
SIGTERM in the middle of a stream echoes every datagram echod had received
before it exits."""
import os
import re
import signal
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import SYSTEMD_SOCKET_ACTIVATE, Daemon, Tap, backends, free_port  # noqa: E402
from metricsutil import scrape, value  # noqa: E402

tap = Tap(timeout=300)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)
ssa = SYSTEMD_SOCKET_ACTIVATE or "/usr/bin/systemd-socket-activate"


def udp_port():
    return free_port(kind=socket.SOCK_DGRAM)


def per_worker(mport, name):
    m = scrape(mport)
    return {dict(ls).get("worker"): v for (n, ls), v in m.items() if n == name}


for be in backends():
    # ---- socket activation with a datagram socket
    if not os.access(ssa, os.X_OK):
        tap.skip(f"[{be}] UDP socket activation", "systemd-socket-activate not installed")
    else:
        up, mport, other = udp_port(), free_port(), udp_port()
        with tap.guard(be), Daemon(be, wait_ready=False, core=[0, 1],
                                   udp={"enabled": True, "port": other,
                                        "listen": ["127.0.0.1"]},
                                   metrics={"enabled": True, "address": "127.0.0.1",
                                            "port": mport},
                                   argv_prefix=[ssa, "--datagram", "-l", f"127.0.0.1:{up}",
                                                "--fdname=echo-udp"]) as d:
            d.wait_log(r"Listening on", 5)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(10)
            s.sendto(b"wake up", ("127.0.0.1", up))
            try:
                first = s.recvfrom(2048)[0]
            except socket.timeout:
                first = None
            tap.ok(first == b"wake up", f"[{be}] the datagram that started echod is echoed",
                   diag=d.log_tail())
            d.wait_log(r"ready:", 10)
            tap.ok(re.search(r"socket activation: 1 UDP socket \(udp.enabled: binding none\)",
                             d.log()) and re.search(rf"UDP echo on 127\.0\.0\.1:{up} \(fd 3",
                                                    d.log()),
                   f"[{be}] adopts the datagram socket, binds none of its own",
                   diag=d.log_tail())
            ok = 0
            for i in range(200):
                data = struct.pack("!I", i) * 64
                s.sendto(data, ("127.0.0.1", up))
                try:
                    ok += s.recvfrom(4096)[0] == data
                except socket.timeout:
                    break
            tap.ok(ok == 200, f"[{be}] 200 datagrams echoed on the inherited socket ({ok})")
            rx = per_worker(mport, "echod_udp_received_datagrams_total")
            tap.ok(len(rx) == 2 and sorted(rx.values())[0] == 0 and
                   sorted(rx.values())[1] >= 201,
                   f"[{be}] two event loops, one reads the inherited socket: {rx}")
            q = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            q.settimeout(0.5)
            q.sendto(b"x", ("127.0.0.1", other))
            try:
                got = q.recvfrom(16)[0]
            except (socket.timeout, ConnectionRefusedError):
                got = None
            tap.ok(got is None, f"[{be}] udp.port of the config is not bound when activated")
            tap.ok(d.stop() == 0, f"[{be}] exit 0 on SIGTERM", diag=d.log_tail())

    # ---- a reload switching backend under UDP load
    target = [b for b in backends() if b != be] or [be]
    to = target[0]
    up, mport = udp_port(), free_port()
    settings = dict(core=[0, 1], udp={"enabled": True, "port": up, "listen": ["127.0.0.1"]},
                    metrics={"enabled": True, "address": "127.0.0.1", "port": mport})
    with tap.guard(be), Daemon(be, **settings) as d:
        flows = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
        for s in flows:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.setblocking(False)
        sent = [0] * len(flows)
        got = [[] for _ in flows]
        stop = threading.Event()

        def load():
            # steady load, well within what echod echoes: each flow sends
            # numbered datagrams and reads what came back
            while not stop.is_set():
                for i, s in enumerate(flows):
                    s.sendto(struct.pack("!II", i, sent[i]) + b"u" * 200, ("127.0.0.1", up))
                    sent[i] += 1
                    try:
                        while True:
                            got[i].append(struct.unpack("!II", s.recv(4096)[:8])[1])
                    except (socket.timeout, BlockingIOError):
                        pass
                time.sleep(0.0005)
        t = threading.Thread(target=load)
        t.start()
        time.sleep(1)
        # backend switch; with one backend, new buffers: new event loops either way
        d.rewrite_config(backend=to, buffer_count=2048)
        mark = d.log_mark()
        d.signal(signal.SIGHUP)
        applied = d.wait_log(r"reload: configuration applied", 10, since=mark)
        time.sleep(1.5)
        stop.set()
        t.join(10)
        for i, s in enumerate(flows):
            s.settimeout(2)
            try:
                while len(got[i]) < sent[i]:
                    got[i].append(struct.unpack("!II", s.recv(4096)[:8])[1])
            except socket.timeout:
                pass
            s.close()
        total = sum(sent)
        back = sum(len(g) for g in got)
        in_order = all(g == list(range(len(g))) for g in got)
        m = scrape(mport)
        drops = sum(value(m, "echod_udp_dropped_datagrams_total", reason=r)
                    for r in ("truncated", "loop_port", "bad_source", "send_error"))
        kern = value(m, "echod_udp_kernel_drops_total")
        tap.ok(applied and re.search(rf"reload: .* handed over to 2 {to} workers", d.log()),
               f"[{be}] reload to {to}: new event loops", diag=d.log_tail())
        tap.figure(f"[{be}->{to}] datagrams sent / echoed back", f"{total} / {back}")
        # what the kernel dropped (queue full while no loop read it) is
        # counted; echod itself loses nothing it received
        tap.ok(back + kern == total and in_order and drops == 0,
               f"[{be}] reload to {to} under UDP load: {back} of {total} datagrams back, "
               f"in order, none lost by echod (echod drops {drops:.0f}, kernel {kern:.0f})",
               diag=f"sent {sent}\nback {[len(g) for g in got]}\n{d.log_tail()}")
        tap.ok(value(m, "echod_udp_sent_datagrams_total") == back,
               f"[{be}] the counters go on across the reload (sent {back})")
        tap.ok(d.stop() == 0, f"[{be}] exit 0 on SIGTERM", diag=d.log_tail())

    # ---- SIGTERM in the middle of a UDP stream: echod stops reading and
    # sends back what it had received; its totals line says what that was
    up = udp_port()
    with tap.guard(be), Daemon(be, core=[0, 1],
                               udp={"enabled": True, "port": up, "listen": ["127.0.0.1"]}) as d:
        flows = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
        for s in flows:
            try:            # root: past net.core.rmem_max, so the client loses none
                s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            s.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
            s.settimeout(1.0)
        stop = threading.Event()
        sent = [0] * len(flows)

        def blast():
            # as fast as Python sends: echod's loops have echoes in hand
            while not stop.is_set():
                for i, s in enumerate(flows):
                    s.sendto(struct.pack("!II", i, sent[i]) + b"s" * 500, ("127.0.0.1", up))
                    sent[i] += 1
        t = threading.Thread(target=blast)
        t.start()
        time.sleep(0.3)
        d.signal(signal.SIGTERM)
        status = d.wait(10)
        stop.set()
        t.join(10)
        back = [[] for _ in flows]
        client_drops = 0
        for i, s in enumerate(flows):
            ovfl = 0
            try:
                while True:
                    data, anc, _f, _a = s.recvmsg(4096, socket.CMSG_SPACE(4))
                    back[i].append(struct.unpack("!II", data[:8])[1])
                    for level, kind, v in anc:
                        if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL:
                            ovfl = struct.unpack("I", v[:4])[0]
            except socket.timeout:
                pass
            client_drops += ovfl
            s.close()
        m = re.search(r"udp datagrams received (\d+), echoed (\d+), dropped (\d+)", d.log())
        rx, tx, dropped = (int(x) for x in m.groups()) if m else (-1, -1, -1)
        got = sum(len(b) for b in back)
        in_order = all(b == sorted(b) and len(set(b)) == len(b) for b in back)
        tap.figure(f"[{be}] SIGTERM mid-stream: sent / received by echod / echoed / dropped / "
                   f"back / lost in the client's own queue",
                   f"{sum(sent)} / {rx} / {tx} / {dropped} / {got} / {client_drops}")
        tap.ok(status == 0 and m and rx > 0 and rx == tx + dropped and dropped == 0 and
               got + client_drops == tx and in_order,
               f"[{be}] SIGTERM mid-stream: every datagram echod received ({rx}) was echoed "
               f"before it exited, and came back ({got}, {client_drops} lost in the client's "
               f"queue), in order",
               diag=f"status {status}; totals {m and m.group(0)}\n{d.log_tail()}")
tap.done()
