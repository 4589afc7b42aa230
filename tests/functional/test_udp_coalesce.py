#!/usr/bin/env python3
"""udp.coalesce on each backend: datagrams a client sends apart (no GSO)
that echod echoes as runs, one UDP_SEGMENT send each, still come back
exactly: every datagram, its length and bytes, in order, once.  A burst is
queued while echod is stopped (SIGSTOP), so that it arrives as one batch
(one recvmmsg, or one loop pass of multishot completions) whatever the
scheduler does.  Cases: same-size bursts (IPv4 and IPv6, 64 B to 8 KiB),
more than 64 in a row, a shorter last, mixed sizes, 0-byte datagrams (never
coalesced), the largest datagrams and runs at exactly the largest send,
flows interleaved and in turn; the coalesced counters move (sends fewer
than datagrams); udp.coalesce = false by reload stops them, true again
restarts them.  The fallback: an inherited IPv6 socket with IPV6_MTU 1280
(how a socket echod did not make can carry it; echod sets no such option
itself) refuses a run of 1400-byte segments (EMSGSIZE); those datagrams
still come back, one by one (fragmented and reassembled), the fallback is
counted and logged once naming the syscall and errno, and smaller runs
(1000 B) are still coalesced on that socket."""
import os
import signal
import socket
import struct
import sys
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import Daemon, Tap, backends, free_port, have_ipv6_loopback  # noqa: E402
from metricsutil import scrape, value  # noqa: E402

tap = Tap(timeout=600)
IPV6_MTU = 24


def payload(seq, n):
    """n bytes: (seq, length, crc of the rest) then a pattern of seq."""
    if n < 12:
        return bytes((seq * 31 + i) & 255 for i in range(n))
    body = bytes((seq * 7 + i) & 255 for i in range(n - 12))
    return struct.pack("!III", seq, n, zlib.crc32(body)) + body


def client(host):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    s.bind((host, 0))
    return s


def counters(mport):
    m = scrape(mport)
    return {"sends": value(m, "echod_udp_coalesced_sends_total"),
            "dgrams": value(m, "echod_udp_coalesced_datagrams_total"),
            "fallbacks": value(m, "echod_udp_coalesce_fallbacks_total"),
            "tx": value(m, "echod_udp_sent_datagrams_total"),
            "gro": value(m, "echod_udp_gro_receives_total"),
            "drops": value(m, "echod_udp_dropped_datagrams_total"),
            "kernel": value(m, "echod_udp_kernel_drops_total")}


def wait_stopped(pid, timeout=5.0):
    """SIGSTOP is delivered asynchronously: wait until every thread of pid
    is stopped (state T), so that no datagram of a burst is read early."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        states = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except FileNotFoundError:
                continue
        if states and all(st in ("T", "t") for st in states):
            return
        time.sleep(0.001)
    raise RuntimeError(f"echod (pid {pid}) did not stop within {timeout} s")


def burst(d, plan, dest):
    """Send plan [(socket, size), ...] in order while echod is stopped,
    then let it run; return {socket: [payloads sent]}."""
    sent = {}
    d.signal(signal.SIGSTOP)
    wait_stopped(d.pid)
    try:
        for k, (s, n) in enumerate(plan):
            data = payload(k, n)
            s.sendto(data, dest)
            sent.setdefault(s, []).append(data)
    finally:
        d.signal(signal.SIGCONT)
    return sent


def collect(sent, timeout=5.0):
    """Read each socket's replies: {socket: [replies]} (stops at the
    count sent, or after timeout; then a short wait for an extra one)."""
    got = {}
    for s, want in sent.items():
        got[s] = []
        end = time.monotonic() + timeout
        while len(got[s]) < len(want) and time.monotonic() < end:
            s.settimeout(max(0.01, end - time.monotonic()))
            try:
                got[s].append(s.recv(70000))
            except socket.timeout:
                break
        s.settimeout(0.1)
        try:
            got[s].append(s.recv(70000))
        except socket.timeout:
            pass
    return got


def exact(sent, got):
    """'' if every socket got exactly what it sent, in order; else why."""
    for s, want in sent.items():
        g = got.get(s, [])
        if g != want:
            return (f"sent {len(want)} {[len(w) for w in want][:80]}, got {len(g)} "
                    f"{[len(x) for x in g][:80]}; first difference at "
                    f"{next((i for i, (a, b) in enumerate(zip(want, g)) if a != b), min(len(want), len(g)))}")
    return ""


def run_case(d, mport, name, plan, dest, expect_coalesced=None):
    """One burst; checks exactness and (expect_coalesced: True: the
    counters moved, sends < datagrams; False: they did not move)."""
    before = counters(mport)
    sent = burst(d, plan, dest)
    got = collect(sent)
    after = counters(mport)
    why = exact(sent, got)
    total = sum(len(v) for v in sent.values())
    ds, dd = after["sends"] - before["sends"], after["dgrams"] - before["dgrams"]
    tap.ok(not why, f"{name}: {total} datagram(s) back exactly, in order, once", diag=why)
    if expect_coalesced is True:
        tap.ok(ds >= 1 and ds < dd <= total,
               f"{name}: coalesced ({dd:.0f} datagrams in {ds:.0f} sends)",
               diag=str((before, after)))
    elif expect_coalesced is False:
        tap.ok(ds == 0 and dd == 0, f"{name}: nothing coalesced ({dd:.0f} in {ds:.0f} sends)",
               diag=str((before, after)))
    tap.figure(f"{name}: coalesced datagrams / sends", f"{dd:.0f} / {ds:.0f}")
    return before, after


def reload(d, mark, **udp):
    d.rewrite_config(udp=dict(d.settings["udp"], **udp))
    d.signal(signal.SIGHUP)
    return d.wait_log(r"reload: configuration applied", 10, since=mark)


v6 = have_ipv6_loopback()
for be in backends():
    up, mport = free_port("127.0.0.1", socket.SOCK_DGRAM), free_port()
    hosts = ["127.0.0.1", "::1"] if v6 else ["127.0.0.1"]
    if not v6:
        tap.skip(f"[{be}] IPv6 cases", "no IPv6 loopback")
    with tap.guard(be), Daemon(be, udp={"enabled": True, "port": up, "listen": hosts},
                               metrics={"enabled": True, "address": "127.0.0.1",
                                        "port": mport}) as d:
        c0 = counters(mport)
        for host in hosts:
            dest, fam = (host, up), ("IPv6" if ":" in host else "IPv4")
            a, b, c, e = client(host), client(host), client(host), client(host)
            for size in (64, 1024, 1472, 8192):
                run_case(d, mport, f"[{be}] {fam}: 40 x {size} B from one flow",
                         [(a, size)] * 40, dest, True)
            run_case(d, mport, f"[{be}] {fam}: 150 x 100 B in a row (over 64 a send)",
                     [(a, 100)] * 150, dest, True)
            run_case(d, mport, f"[{be}] {fam}: 10 x 1000 B then a shorter last, twice",
                     ([(a, 1000)] * 10 + [(a, 333)]) * 2, dest, True)
            mixed = ([(a, 1000)] * 5 + [(a, 500), (a, 1000), (a, 2000)] + [(a, 2000)] * 3 +
                     [(a, 0), (a, 0), (a, 1), (a, 1), (a, 1)] + [(a, 1400)] * 4 + [(a, 7)] +
                     [(a, 65507 if fam == "IPv4" else 65527)] + [(a, 64)] * 6)
            run_case(d, mport, f"[{be}] {fam}: mixed sizes (0, 1, 7, 64 .. largest) in one "
                     "burst", mixed, dest, True)
            run_case(d, mport, f"[{be}] {fam}: 30 x 0 B (never coalesced)",
                     [(a, 0)] * 30, dest, False)
            big = 65507 if fam == "IPv4" else 65527
            run_case(d, mport, f"[{be}] {fam}: 4 x {big} B, the largest (each alone)",
                     [(a, big)] * 4, dest, False)
            half = (big + 1) // 2
            run_case(d, mport, f"[{be}] {fam}: {half} + {big - half} B, a run of exactly "
                     f"{big} B", [(a, half), (a, big - half)], dest, True)
            run_case(d, mport, f"[{be}] {fam}: {half} + {half} B, one byte over the largest "
                     "send (apart)", [(a, half), (a, half)] * 3, dest, False)
            run_case(d, mport, f"[{be}] {fam}: 4 flows interleaved datagram by datagram "
                     "(never joined)", [(s, 512) for _ in range(20) for s in (a, b, c, e)],
                     dest, False)
            run_case(d, mport, f"[{be}] {fam}: 4 flows in turn, 12 each, twice",
                     [(s, 512) for _ in range(2) for s in (a, b, c, e) for _ in range(12)],
                     dest, True)
            for s in (a, b, c, e):
                s.close()

        # ---- udp.coalesce off by reload: echoes exact, counters still; on again
        a = client("127.0.0.1")
        mark = d.log_mark()
        reload(d, mark, coalesce=False)
        run_case(d, mport, f"[{be}] udp.coalesce = false (reload): 40 x 1024 B",
                 [(a, 1024)] * 40, ("127.0.0.1", up), False)
        mark = d.log_mark()
        reload(d, mark, coalesce=True)
        run_case(d, mport, f"[{be}] udp.coalesce = true again (reload): 40 x 1024 B",
                 [(a, 1024)] * 40, ("127.0.0.1", up), True)
        a.close()
        c1 = counters(mport)
        tap.ok(c1["tx"] > c0["tx"] and c1["drops"] == c0["drops"] and
               c1["fallbacks"] == c0["fallbacks"] and c1["kernel"] == c0["kernel"] and
               c1["gro"] == c0["gro"],
               f"[{be}] no drop, no fallback, no GRO receive over all the cases",
               diag=str((c0, c1)))
        tap.ok(d.running(), f"[{be}] echod still running")

    # ---- the fallback: an inherited IPv6 socket with IPV6_MTU 1280
    if not v6:
        tap.skip(f"[{be}] IPV6_MTU 1280 fallback", "no IPv6 loopback")
        continue
    srv = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    srv.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU, 1280)
    srv.bind(("::1", 0))
    up6, mport = srv.getsockname()[1], free_port()
    # one event loop: the fallback is per socket and event loop, logged once by each
    with tap.guard(be), Daemon(be, inherit_fds=[srv.fileno()], core=[0],
                               argv_prefix=["sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh"],
                               env={"LISTEN_FDS": 1, "LISTEN_FDNAMES": "echo-udp"},
                               metrics={"enabled": True, "address": "127.0.0.1",
                                        "port": mport}) as d:
        srv.close()
        dest = ("::1", up6)
        a = client("::1")
        mark = d.log_mark()
        before, after = run_case(d, mport, f"[{be}] IPV6_MTU 1280: 20 x 1400 B (a run "
                                 "refused, sent one by one)", [(a, 1400)] * 20, dest, None)
        tap.ok(after["fallbacks"] > before["fallbacks"] and after["drops"] == before["drops"],
               f"[{be}] IPV6_MTU 1280: the refused run counted as a fallback "
               f"({after['fallbacks'] - before['fallbacks']:.0f}), nothing dropped",
               diag=str((before, after)))
        run_case(d, mport, f"[{be}] IPV6_MTU 1280: 20 x 1400 B again (not coalesced now)",
                 [(a, 1400)] * 20, dest, False)
        run_case(d, mport, f"[{be}] IPV6_MTU 1280: 20 x 1000 B (smaller: still coalesced)",
                 [(a, 1000)] * 20, dest, True)
        log = d.log()[mark:]
        lines = [x for x in log.splitlines() if "as one (UDP_SEGMENT 1400) refused" in x]
        tap.ok(len(lines) == 1 and ("sendmsg" in lines[0] or "sendmmsg" in lines[0]) and
               ("Message too long" in lines[0] or "Invalid argument" in lines[0]),
               f"[{be}] IPV6_MTU 1280: logged once, naming the syscall and errno",
               diag="\n".join(lines) or d.log_tail())
        a.close()
tap.done()
