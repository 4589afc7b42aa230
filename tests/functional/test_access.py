#!/usr/bin/env python3
"""Who may use echod (allow and deny), on each backend, TCP and UDP, with a
10,000-prefix blocklist pulled in by @include: clients bound to distinct
127.0.0.x sources against an allow/deny matrix (allow /8, deny /24 inside,
allow /25 inside that, deny /32 inside that, the same /24 in both lists:
the most specific decides, a tie denies).  A denied TCP client gets EOF or
a reset and never a byte back, and echod resets it (no TIME_WAIT on the
server port for it); an allowed one gets every byte back.  A denied
datagram gets no reply.  Both are counted (echod_connections_denied_total,
echod_udp_dropped_datagrams_total{reason="denied"}) and logged at most once
a minute per source.  IPv6: ::1 against a deny of ::1/128.  A reload that
changes the lists applies from the next connection or datagram on, while an
established connection the new lists deny stays and goes on echoing."""
import os
import random
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import Daemon, Tap, backends, free_port, have_ipv6_loopback, poll_until  # noqa: E402
from echodtest import config_text  # noqa: E402
from metricsutil import scrape, value  # noqa: E402

tap = Tap(timeout=300)
v6 = have_ipv6_loopback()

MATRIX_ALLOW = ["127.0.0.0/8", "127.0.1.128/25", "127.0.2.0/24", "::/0"]
MATRIX_DENY = ["127.0.1.0/24", "127.0.1.200", "127.0.2.0/24", "::1/128"]
# source -> allowed by the matrix
SOURCES = {
    "127.0.0.11": True,        # allow /8
    "127.0.1.5": False,        # deny /24 beats allow /8
    "127.0.1.130": True,       # allow /25 beats deny /24
    "127.0.1.200": False,      # deny /32 beats allow /25
    "127.0.2.9": False,        # the same /24 in both: a tie denies
    "127.0.3.3": True,         # allow /8
}


def blocklist(n=10000):
    """n distinct prefixes no test source is in: 10.0.0.0/8 and 2001:db8::/32."""
    rnd = random.Random(13)
    out = set()
    while len(out) < n:
        if rnd.random() < 0.7:
            ln = rnd.randint(16, 32)
            a = (10 << 24) | rnd.getrandbits(24)
            a &= (0xffffffff << (32 - ln)) & 0xffffffff
            out.add(f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}/{ln}")
        else:
            ln = rnd.randint(48, 128)
            a = (0x20010db8 << 96) | rnd.getrandbits(96)
            a &= ((1 << 128) - 1) ^ ((1 << (128 - ln)) - 1)
            out.add(f"{socket.inet_ntop(socket.AF_INET6, a.to_bytes(16, 'big'))}/{ln}")
    return sorted(out)


BLOCK = blocklist()


def write_lists(d, allow, deny):
    """The main file with every setting but deny, which comes from an
    @include'd blocklist.conf (the matrix and the 10,000 prefixes)."""
    with open(os.path.join(d.dir, "blocklist.conf"), "w") as f:
        f.write("deny = [" + ", ".join(f'"{p}"' for p in deny + BLOCK) + "];\n")
    settings = dict(d.settings, allow=allow)
    d.write_raw_config(config_text(settings) + '@include "blocklist.conf"\n')


def tcp_try(port, src, data=b"access check " * 100, host="127.0.0.1", wait_first=False):
    """Connect from src, send data, read until EOF: the bytes back, or
    None if the connection was refused outright.  With wait_first, first
    wait a second for the server to end the connection before sending
    anything: the client then closes, so that a server-side close without
    RST would leave the server a TIME_WAIT (data sent to a closed socket
    would make the kernel reset it anyway)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(5)
    s.bind((src, 0))
    try:
        s.connect((host, port))
    except OSError:
        s.close()
        return None
    got = b""
    if wait_first:
        s.settimeout(1)
        try:
            if not s.recv(65536):
                s.close()
                return got
        except socket.timeout:
            pass
        except OSError:
            s.close()
            return got
        s.settimeout(5)
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
    except socket.timeout:
        got += b"<timeout>"
    except OSError:     # reset (ECONNRESET, EPIPE, or ENOTCONN at shutdown)
        pass
    s.close()
    return got


def udp_try(port, src, host="127.0.0.1"):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((src, 0))
    s.settimeout(0.5)
    msg = f"datagram from {src}".encode()
    s.sendto(msg, (host, port))
    try:
        got = s.recv(2048)
    except socket.timeout:
        got = None
    s.close()
    return got == msg, got


def time_wait(port, srcs):
    """Server-side TIME_WAIT sockets of port whose peer is one of srcs."""
    p = subprocess.run(["ss", "-tanH", "state", "time-wait", "sport", "=", f":{port}"],
                       capture_output=True, text=True, timeout=10)
    return [l for l in p.stdout.splitlines()
            if any(f" {s}:" in l or f"[{s}]:" in l for s in srcs)]


def denied_counts(mport):
    m = scrape(mport)
    return (value(m, "echod_connections_denied_total", reason="list"),
            value(m, "echod_udp_dropped_datagrams_total", reason="denied"))


for be in backends():
    up, mport = free_port("127.0.0.1", socket.SOCK_DGRAM), free_port()
    listen = ["127.0.0.1", "::1"] if v6 else ["127.0.0.1"]
    d = Daemon(be, core=[0, 1], listen=listen,
               udp={"enabled": True, "port": up, "listen": listen, "loop_ports": []},
               metrics={"enabled": True, "address": "127.0.0.1", "port": mport})
    write_lists(d, MATRIX_ALLOW, MATRIX_DENY)
    with tap.guard(be), d:
        port = d.port
        tap.ok("@include" in d.config(), f"[{be}] serving with {len(BLOCK)} blocklist prefixes "
               "from an @include")

        # ---- TCP: the matrix, twice (the second round is not logged again)
        wrong, denied_tcp = [], 0
        for rnd in range(2):
            for src, allowed in SOURCES.items():
                data = f"{src} round {rnd} ".encode() * 300
                got = tcp_try(port, src, data, wait_first=rnd == 1)
                if allowed and got != data:
                    wrong.append(f"{src}: allowed, got {None if got is None else len(got)} bytes")
                if not allowed:
                    denied_tcp += 1
                    if got:
                        wrong.append(f"{src}: denied, got {len(got)} bytes: {got[:40]!r}")
        tap.ok(not wrong, f"[{be}] TCP matrix: allowed sources get every byte back, denied ones "
               "none (most specific wins, a tie denies)", diag="\n".join(wrong) + d.log_tail())
        denied_srcs = [s for s, a in SOURCES.items() if not a]
        time.sleep(0.3)
        tw = time_wait(port, denied_srcs)
        tap.ok(not tw, f"[{be}] denied TCP clients were reset: no TIME_WAIT on port {port} for "
               "them", diag="\n".join(tw))
        ok = poll_until(lambda: denied_counts(mport)[0] == denied_tcp, 5)
        tap.ok(ok, f"[{be}] echod_connections_denied_total{{reason=\"list\"}} counts "
               f"{denied_tcp} denied connections", diag=str(denied_counts(mport)))
        # four more attempts each: 6 in all, over the 2 event loops (the
        # kernel spreads a source's connections over the SO_REUSEPORT
        # listeners), each loop logging a source at most once a minute
        for _ in range(4):
            for src in denied_srcs:
                tcp_try(port, src)
        poll_until(lambda: denied_counts(mport)[0] == denied_tcp + 4 * len(denied_srcs), 5)
        lines = {s: len([l for l in d.log().splitlines()
                         if f"TCP connection from {s} port" in l and "denied" in l])
                 for s in denied_srcs}
        tap.ok(all(1 <= n <= 2 for n in lines.values()),
               f"[{be}] each denied TCP source logged at most once per event loop (6 attempts "
               f"each, 2 loops: {sorted(lines.values())} lines)", diag=str(lines))

        # ---- UDP: the same matrix
        wrong, denied_udp = [], 0
        for src, allowed in SOURCES.items():
            ok_, got = udp_try(up, src)
            if ok_ != allowed:
                wrong.append(f"{src}: allowed={allowed}, reply {got!r}")
            denied_udp += not allowed
        tap.ok(not wrong, f"[{be}] UDP matrix: allowed sources get their datagram back, denied "
               "ones no reply", diag="\n".join(wrong))
        ok = poll_until(lambda: denied_counts(mport)[1] == denied_udp, 5)
        tap.ok(ok, f"[{be}] echod_udp_dropped_datagrams_total{{reason=\"denied\"}} counts "
               f"{denied_udp} datagrams", diag=str(denied_counts(mport)))
        tap.ok(d.wait_log(r"UDP datagram from 127\.0\.1\.5 port \d+ refused \(denied\)", 2),
               f"[{be}] a denied datagram is logged")

        # ---- IPv6: ::1 denied by ::1/128
        if v6:
            got = tcp_try(port, "::1", b"six" * 100, host="::1")
            ok_, _ = udp_try(up, "::1", host="::1")
            tap.ok(not got and not ok_, f"[{be}] IPv6: ::1 is denied by ::1/128 (TCP and UDP)",
                   diag=f"tcp {got!r}")
        else:
            tap.skip(f"[{be}] IPv6: ::1 is denied by ::1/128", "no IPv6 loopback")

        # ---- live reload: 127.0.3.0/24 denied from now on, ::1 allowed
        keep = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        keep.settimeout(5)
        keep.bind(("127.0.3.3", 0))
        keep.connect(("127.0.0.1", port))
        keep.sendall(b"before")
        before = keep.recv(100)
        mark = d.log_mark()
        write_lists(d, MATRIX_ALLOW, ["127.0.3.0/24", "127.0.1.0/24"])
        d.signal(signal.SIGHUP)
        tap.ok(d.wait_log(r"reload: configuration applied.*allow/deny 4/10002 prefixes", 15,
                          since=mark),
               f"[{be}] reload applied the new lists", diag=d.log_tail())
        keep.sendall(b"after the reload")
        after = b""
        end = time.monotonic() + 5
        while len(after) < 16 and time.monotonic() < end:
            after += keep.recv(100)
        tap.ok(before == b"before" and after == b"after the reload",
               f"[{be}] an established connection the new lists deny stays and echoes",
               diag=f"{before!r} {after!r}")
        keep.close()
        got = tcp_try(port, "127.0.3.3", b"new" * 100)
        ok_, _ = udp_try(up, "127.0.3.3")
        tap.ok(not got and not ok_, f"[{be}] after the reload a new connection and a datagram "
               "from 127.0.3.3 are denied", diag=f"tcp {got!r}")
        got = tcp_try(port, "127.0.2.9", b"tie gone" * 100)
        tap.ok(got == b"tie gone" * 100, f"[{be}] after the reload 127.0.2.9 (no longer denied) "
               "is served", diag=f"{got!r}")
        if v6:
            got = tcp_try(port, "::1", b"six" * 100, host="::1")
            ok_, _ = udp_try(up, "::1", host="::1")
            tap.ok(got == b"six" * 100 and ok_, f"[{be}] after the reload ::1 is served (TCP and "
                   "UDP)", diag=f"tcp {got!r} udp {ok_}")
        # ---- and back to no lists at all: everyone
        mark = d.log_mark()
        d.write_raw_config(config_text(d.settings))
        d.signal(signal.SIGHUP)
        d.wait_log(r"reload: configuration applied", 15, since=mark)
        got = tcp_try(port, "127.0.1.200", b"open" * 10)
        tap.ok(got == b"open" * 10, f"[{be}] with no lists, every source is served",
               diag=f"{got!r}\n{d.log_tail()}")

tap.done()
