#!/usr/bin/env python3
"""The UDP echo service, on each backend: every size from 0 to the largest
IPv4 (65,507) and IPv6 (65,527) payload comes back byte-exact, one reply per
datagram; 1,000 flows at once; a client's GSO batch (UDP_SEGMENT) comes
back with the same boundaries and bytes (through UDP_GRO: one receive, one
send); loop ports (the classic services' source ports, and udp.loop_ports
live) get no reply and are counted; a flood beyond what echod can echo:
replies never corrupted, sent = received + kernel drops (SO_RXQ_OVFL) and
received = echoed + drops, echod's memory bounded."""
import os
import selectors
import socket
import struct
import sys
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (Daemon, Tap, backends, free_port, have_ipv6_loopback,  # noqa: E402
                       poll_until)
from metricsutil import scrape, value  # noqa: E402

UDP_SEGMENT = 103
SO_RXQ_OVFL = 40
tap = Tap(timeout=600)


def udp_port(host="127.0.0.1"):
    return free_port(host, socket.SOCK_DGRAM)


def payload(seq, n):
    """n bytes: a header (seq, length, crc of the rest) then a pattern of seq."""
    if n < 12:
        return bytes((seq + i) & 255 for i in range(n))
    body = bytes((seq * 7 + i) & 255 for i in range(n - 12))
    return struct.pack("!III", seq, n, zlib.crc32(body)) + body


def valid(data):
    if len(data) < 12:
        return True
    seq, n, crc = struct.unpack("!III", data[:12])
    return n == len(data) and zlib.crc32(data[12:]) == crc


def sock(host, timeout=3.0, bind=None):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    if bind:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(bind)
    s.settimeout(timeout)
    return s


def recv_or_none(s, timeout):
    s.settimeout(timeout)
    try:
        return s.recvfrom(70000)[0]
    except socket.timeout:
        return None


def drain(s, probe=b"probe"):
    """Read every reply waiting on non-blocking s: (replies, corrupt ones)."""
    n = bad = 0
    while True:
        try:
            r = s.recv(70000)
        except BlockingIOError:
            return n, bad
        n += 1
        bad += r != probe and (not valid(r) or len(r) != 1024)


def metrics(mport):
    m = scrape(mport)
    drops = {r: value(m, "echod_udp_dropped_datagrams_total", reason=r)
             for r in ("truncated", "loop_port", "bad_source", "send_error")}
    return {"rx": value(m, "echod_udp_received_datagrams_total"),
            "tx": value(m, "echod_udp_sent_datagrams_total"),
            "rx_bytes": value(m, "echod_udp_received_bytes_total"),
            "tx_bytes": value(m, "echod_udp_sent_bytes_total"),
            "gro": value(m, "echod_udp_gro_receives_total"),
            "kernel": value(m, "echod_udp_kernel_drops_total"), "drops": drops}


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


v6 = have_ipv6_loopback()
for be in backends():
    up, mport = udp_port(), free_port()
    listen = ["127.0.0.1", "::1"] if v6 else ["127.0.0.1"]
    with tap.guard(be), Daemon(be, core=[0, 1], udp={"enabled": True, "port": up, "listen": listen},
                               metrics={"enabled": True, "address": "127.0.0.1",
                                        "port": mport}) as d:
        # ---- sizes, byte-exact, one reply each
        for host, sizes in (("127.0.0.1", (0, 1, 1472, 8192, 65507)),
                            ("::1", (0, 1, 1472, 8192, 65527))):
            if host == "::1" and not v6:
                tap.skip(f"[{be}] IPv6 sizes", "no IPv6 loopback")
                continue
            s = sock(host)
            for i, n in enumerate(sizes):
                data = payload(i, n)
                s.sendto(data, (host, up))
                got = recv_or_none(s, 5)
                extra = recv_or_none(s, 0.2)
                tap.ok(got == data and extra is None,
                       f"[{be}] {host}: {n} bytes come back byte-exact, once",
                       diag=f"got {None if got is None else len(got)} bytes, extra "
                            f"{None if extra is None else len(extra)}\n{d.log_tail()}")
            s.close()

        # ---- 1,000 flows at once
        socks = [sock("127.0.0.1") for _ in range(1000)]
        sel = selectors.DefaultSelector()
        for i, s in enumerate(socks):
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, i)
        for i, s in enumerate(socks):
            s.sendto(payload(i, 100 + i % 900), ("127.0.0.1", up))
        good, bad, end = set(), 0, time.monotonic() + 20
        while len(good) + bad < 1000 and time.monotonic() < end:
            for key, _ in sel.select(timeout=1):
                try:
                    data = key.fileobj.recv(70000)
                except BlockingIOError:
                    continue
                i = key.data
                if data == payload(i, 100 + i % 900) and i not in good:
                    good.add(i)
                else:
                    bad += 1
        for s in socks:
            sel.unregister(s)
            s.close()
        tap.ok(len(good) == 1000 and bad == 0,
               f"[{be}] 1000 flows at once: {len(good)} echoed exactly, {bad} wrong",
               diag=d.log_tail())

        # ---- a GSO batch: same boundaries, same bytes, through one GRO receive
        before = metrics(mport)
        for host in (["127.0.0.1", "::1"] if v6 else ["127.0.0.1"]):
            for seg, count in ((1000, 4), (1400, 40), (1, 64)):
                s = sock(host)
                chunks = [payload(k, seg) for k in range(count)]
                last = payload(count, seg // 2) if seg > 1 else b""
                data = b"".join(chunks) + last
                s.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, seg)
                s.sendto(data, (host, up))
                s.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, 0)
                want = chunks + ([last] if last else [])
                got = []
                while len(got) < len(want):
                    r = recv_or_none(s, 3)
                    if r is None:
                        break
                    got.append(r)
                extra = recv_or_none(s, 0.2)
                tap.ok(got == want and extra is None,
                       f"[{be}] {host}: a GSO batch of {len(want)} x {seg} B comes back as the "
                       "same datagrams, in order",
                       diag=f"got {[len(g) for g in got]} want {[len(w) for w in want]}")
                s.close()
        after = metrics(mport)
        tap.ok(after["gro"] > before["gro"],
               f"[{be}] the batches arrived coalesced (GRO receives "
               f"{before['gro']:.0f} -> {after['gro']:.0f}) and went back with UDP_SEGMENT")

        # ---- loop ports: the classic services (root binds them), no reply, counted
        before = metrics(mport)
        mark = d.log_mark()
        refused = 0
        for port in (7, 9, 13, 19, 37):
            try:
                s = sock("127.0.0.1", bind=("127.0.0.2", port))
            except OSError as e:
                tap.skip(f"[{be}] source port {port}", f"cannot bind 127.0.0.2:{port}: {e}")
                continue
            for k in range(3):
                s.sendto(payload(k, 64), ("127.0.0.1", up))
            got = recv_or_none(s, 0.5)
            tap.ok(got is None, f"[{be}] a datagram from source port {port} gets no reply")
            refused += 3
            s.close()
        after = poll_until(lambda: (lambda m: m if m["drops"]["loop_port"] -
                                    before["drops"]["loop_port"] >= refused else None)(
                                        metrics(mport)), 5) or metrics(mport)
        tap.ok(after["drops"]["loop_port"] - before["drops"]["loop_port"] == refused and
               after["tx"] == before["tx"],
               f"[{be}] {refused} datagrams from loop ports counted as loop_port, none echoed",
               diag=f"{before}\n{after}")
        lines = [ln for ln in d.log()[mark:].splitlines() if "refused (loop_port)" in ln]
        # each event loop has its own table: at most one line per loop (2 here)
        tap.ok(1 <= len(lines) <= 2 and all("127.0.0.2" in ln for ln in lines),
               f"[{be}] logged once a minute per source and event loop: {len(lines)} line(s) "
               f"for {refused} drops", diag="\n".join(lines))

        # udp.loop_ports applies live: a high port added, 7 removed
        lp = udp_port()
        d.rewrite_config(backend=be, core=[0, 1],
                         udp={"enabled": True, "port": up, "listen": listen, "loop_ports": [lp]},
                         metrics={"enabled": True, "address": "127.0.0.1", "port": mport})
        mark = d.log_mark()
        d.signal(1)
        d.wait_log(r"reload: configuration applied", 10, since=mark)
        s = sock("127.0.0.1", bind=("127.0.0.1", lp))
        s.sendto(b"loop", ("127.0.0.1", up))
        got_lp = recv_or_none(s, 0.5)
        s.close()
        s = sock("127.0.0.1", bind=("127.0.0.2", 7))
        s.sendto(b"seven", ("127.0.0.1", up))
        got_7 = recv_or_none(s, 3)
        s.close()
        tap.ok(got_lp is None and got_7 == b"seven",
               f"[{be}] reload: udp.loop_ports = [{lp}]: {lp} refused, 7 answered",
               diag=f"{got_lp!r} {got_7!r}")

        # ---- a flood beyond what echod can echo: every datagram accounted for.
        # GSO sends of 60 datagrams a syscall, to sockets without UDP_GRO
        # (udp.gro off, live) and with the smallest receive buffer: the
        # client sends far faster than echod can receive one by one
        d.rewrite_config(udp={"enabled": True, "port": up, "listen": listen, "gro": False,
                              "receive_buffer": 65536})
        mark = d.log_mark()
        d.signal(1)
        d.wait_log(r"reload: configuration applied", 10, since=mark)
        before = metrics(mport)
        rss0 = rss_kib(d.pid)
        senders = [sock("127.0.0.1") for _ in range(4)]
        for s in senders:
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, 1024)
        blob = b"".join(payload(k, 1024) for k in range(60))
        sent, replies, corrupt, t0 = 0, 0, 0, time.monotonic()
        while time.monotonic() - t0 < 3:
            for j, s in enumerate(senders):
                for _ in range(4):
                    try:
                        s.sendto(blob, ("127.0.0.1", up))
                        sent += 60
                    except (BlockingIOError, OSError):
                        break
                n, bad = drain(s)
                replies += n
                corrupt += bad
        # the kernel's count shows with the next datagram queued on each
        # socket: probe until no new drop shows (both workers' sockets)
        time.sleep(0.5)
        for _ in range(20):
            for s in senders:
                s.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, 0)
                s.sendto(b"probe", ("127.0.0.1", up))
        sent += 20 * len(senders)
        time.sleep(0.5)
        for s in senders:
            n, bad = drain(s)
            replies += n
            corrupt += bad
            s.close()
        after = poll_until(lambda: (lambda m: m if m["rx"] + m["kernel"] - before["rx"] -
                                    before["kernel"] >= sent else None)(metrics(mport)), 5) \
            or metrics(mport)
        rx = after["rx"] - before["rx"]
        tx = after["tx"] - before["tx"]
        kern = after["kernel"] - before["kernel"]
        drops = {k: after["drops"][k] - before["drops"][k] for k in after["drops"]}
        tap.figure(f"[{be}] flood: sent", sent)
        tap.figure(f"[{be}] flood: echoed", tx)
        tap.figure(f"[{be}] flood: kernel drops", kern)
        tap.figure(f"[{be}] flood: echod drops", drops)
        tap.figure(f"[{be}] flood: replies read by the client", replies)
        tap.ok(corrupt == 0 and replies > 0,
               f"[{be}] flood: {replies} replies read, none corrupted or cut")
        tap.ok(rx + kern == sent and tx + sum(drops.values()) == rx,
               f"[{be}] flood: sent {sent} = received {rx:.0f} + kernel drops {kern:.0f}; "
               f"received = echoed {tx:.0f} + drops {sum(drops.values()):.0f}",
               diag=f"{before}\n{after}")
        rss1 = rss_kib(d.pid)
        tap.rss_ok(rss1 < 96 * 1024 and rss1 - rss0 < 32 * 1024,
                   f"[{be}] flood: echod's memory bounded (RSS {rss0} -> {rss1} KiB)")
        tap.ok(d.stop() == 0, f"[{be}] exit 0 on SIGTERM", diag=d.log_tail())
tap.done()
