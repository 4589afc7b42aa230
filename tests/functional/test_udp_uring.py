#!/usr/bin/env python3
"""The io_uring backend's UDP buffer ring run dry: with 8 UDP buffers
(ECHOD_URING_UDP_BUFFERS) and 8 flows keeping 32 datagrams each in flight,
the multishot recvmsg keeps ending with -ENOBUFS.  Every datagram still
comes back whole and in its flow's order (the kernel's receive queue holds
what the ring cannot), each exhaustion is counted once, the receive is
re-armed once per exhaustion (a receive never left unarmed: the flows would
stall), and the server's CPU time per datagram stays bounded.  (Whether a
re-arm waits for buffers to come back is not visible from outside on
loopback, where sends never block: the code's comments carry that.)"""
import os
import selectors
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import Daemon, Tap, backends, free_port  # noqa: E402
from metricsutil import scrape, value  # noqa: E402

tap = Tap(timeout=300)
FLOWS, WINDOW, PER_FLOW, SIZE = 8, 32, 1500, 200


def udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dgram(flow, seq):
    head = struct.pack("!II", flow, seq)
    return head + bytes((flow + seq + i) & 0xff for i in range(SIZE - len(head)))


if "io_uring" not in backends():
    tap.skip("io_uring UDP buffer exhaustion", "io_uring not among the backends tested")
else:
    up, mport = udp_port(), free_port()
    with tap.guard("io_uring"), Daemon("io_uring", env={"ECHOD_URING_UDP_BUFFERS": "8"},
                                       udp={"enabled": True, "port": up, "listen": ["127.0.0.1"]},
                                       metrics={"enabled": True, "address": "127.0.0.1",
                                                "port": mport}) as d:
        tap.ok("UDP 8 x " in d.log(), "[io_uring] the UDP ring has the 8 buffers asked for",
               diag=d.log_tail())
        cpu0 = d.cpu_seconds()
        sel = selectors.DefaultSelector()
        socks, sent, nxt = [], [0] * FLOWS, [0] * FLOWS
        bad = disorder = 0
        for f in range(FLOWS):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.connect(("127.0.0.1", up))
            s.setblocking(False)
            socks.append(s)
            sel.register(s, selectors.EVENT_READ, f)
            for _ in range(WINDOW):
                s.send(dgram(f, sent[f]))
                sent[f] += 1
        end = time.monotonic() + 60
        while sum(nxt) < FLOWS * PER_FLOW and time.monotonic() < end:
            for key, _ in sel.select(timeout=1):
                f, s = key.data, key.fileobj
                while True:
                    try:
                        data = s.recv(70000)
                    except BlockingIOError:
                        break
                    flow, seq = struct.unpack("!II", data[:8]) if len(data) >= 8 else (-1, -1)
                    if flow != f or data != dgram(f, seq):
                        bad += 1
                        continue
                    if seq != nxt[f]:
                        disorder += 1
                    nxt[f] = seq + 1
                    if sent[f] < PER_FLOW:
                        s.send(dgram(f, sent[f]))
                        sent[f] += 1
        cpu = d.cpu_seconds() - cpu0
        m = scrape(mport)
        for s in socks:
            s.close()
        got, total = sum(nxt), FLOWS * PER_FLOW
        exhausted = value(m, "echod_buffer_exhaustion_total")
        rearms = value(m, "echod_multishot_rearms_total")
        kernel = value(m, "echod_udp_kernel_drops_total")
        tap.ok(got == total and bad == 0 and disorder == 0 and kernel == 0,
               f"[io_uring] {got} of {total} datagrams back whole and in order on 8 buffers "
               f"({bad} wrong, {disorder} out of order, kernel drops {kernel:.0f})",
               diag=d.log_tail())
        tap.ok(exhausted > 0, f"[io_uring] the UDP ring ran dry: {exhausted:.0f} exhaustion(s) counted")
        tap.ok(exhausted <= rearms <= exhausted + 4,
               f"[io_uring] re-armed once per exhaustion: {rearms:.0f} re-arms "
               f"for {exhausted:.0f} exhaustions")
        tap.figure("server CPU per datagram (us)", cpu * 1e6 / max(got, 1))
        tap.ok(cpu * 1e6 / max(got, 1) < 500,
               f"[io_uring] server CPU {cpu:.2f} s for {got} datagrams (< 500 us each: no spin)")
tap.done()
