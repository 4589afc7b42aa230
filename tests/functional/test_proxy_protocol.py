#!/usr/bin/env python3
"""The PROXY protocol (proxy_protocol.*), on each backend, over two event
loops, the proxy being 127.0.0.1 (trusted) and the clients' addresses
carried in the headers:
- the header matrix: v1 TCP4, TCP6, UNKNOWN, the longest v1 line; v2
  PROXY TCP4, TCP6, with TLVs (NOOP, AUTHORITY, a custom one, a good
  CRC32C), LOCAL, UNSPEC: the header is never echoed, every byte after it
  is (1 MiB, byte-exact), each header sent whole, split into one-byte
  sends, and glued to the first bytes of the stream;
- refused, reset, counted by reason (echod_proxy_refused_total): a peer
  not in trusted (untrusted), HTTP instead of a header (bad_signature),
  a bad v1 address and a truncated TLV (malformed), a v1 line without CRLF
  in 107 bytes and a v2 header over 1024 bytes (oversized), version 3
  (unknown_version), command 2 (unknown_command), a UDP4 family
  (unsupported_family), a bad CRC32C (bad_checksum), EOF halfway
  (partial), one byte a second (timeout, at proxy_protocol.timeout);
- the source the header names is the one judged: a deny prefix matching
  it resets the connection (reason list), per_source.max_connections
  counts it (two held by one header source, the third refused, another
  header source served);
- a reload turning the PROXY protocol off serves direct clients from then
  on while a proxied connection goes on echoing; a backend switch with a
  connection halfway through its header and two proxied connections at
  the per-source limit: the header completes after the switch and is
  served, and the limit still holds (a third refused);
- a restart through the fd store (this test as systemd): a proxied
  connection keeps its header's source (written in its fd name), so the
  per-source count holds in the next echod, and a connection halfway
  through its header at the restart completes it in the next echod and is
  served."""
import os
import random
import signal
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import Daemon, Notify, Tap, backends, free_port, poll_until  # noqa: E402
from metricsutil import scrape, value  # noqa: E402

tap = Tap(timeout=120 * len(backends()))
SIG = b"\r\n\r\n\x00\r\nQUIT\n"
PAYLOAD = random.Random(7).randbytes(1 << 20)


def crc32c(data):
    crc = 0xffffffff
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82f63b78 if crc & 1 else 0)
    return crc ^ 0xffffffff


def v2(cmd=1, fam=0x11, addrs=None, tlvs=b"", version=2, length=None, crc=None):
    if addrs is None:
        addrs = (socket.inet_aton("192.0.2.7") + socket.inet_aton("198.51.100.1")
                 + struct.pack("!HH", 51000, 7))
    body = addrs + tlvs
    if crc is not None:
        body += b"\x03\x00\x04" + b"\0\0\0\0"
    hdr = SIG + bytes([(version << 4) | cmd, fam]) + struct.pack(
        "!H", len(body) if length is None else length) + body
    if crc is not None:
        good = crc32c(hdr)
        hdr = hdr[:-4] + struct.pack("!I", good if crc else good ^ 1)
    return hdr


def tlv(t, v):
    return bytes([t]) + struct.pack("!H", len(v)) + v


V6ADDRS = (socket.inet_pton(socket.AF_INET6, "2001:db8::9")
           + socket.inet_pton(socket.AF_INET6, "2001:db8::1") + struct.pack("!HH", 50000, 7))
GOOD = {
    "v1 TCP4": b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 7\r\n",
    "v1 TCP6": b"PROXY TCP6 2001:db8::9 2001:db8::1 50000 7\r\n",
    "v1 UNKNOWN": b"PROXY UNKNOWN whatever comes here\r\n",
    "v1, 107 bytes": (b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                      b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
    "v2 TCP4": v2(),
    "v2 TCP6": v2(fam=0x21, addrs=V6ADDRS),
    "v2 + TLVs and CRC32C": v2(tlvs=tlv(0x04, b"\0" * 40) + tlv(0x02, b"echo.example")
                               + tlv(0xe1, b"vpc-123"), crc=True),
    "v2 LOCAL": v2(cmd=0, fam=0x00, addrs=b""),
    "v2 UNSPEC": v2(fam=0x00, addrs=b"\0" * 12),
}
BAD = {
    "bad_signature": b"GET / HTTP/1.0\r\n\r\n",
    "malformed": b"PROXY TCP4 192.0.2.777 198.51.100.1 51000 7\r\n",
    "oversized": b"PROXY UNKNOWN " + b"x" * 200,
    "unknown_version": v2(version=3),
    "unknown_command": v2(cmd=2),
    "unsupported_family": v2(fam=0x12),
    "bad_checksum": v2(crc=False),
}
BAD_MORE = {   # a second case of a reason
    "malformed": v2(tlvs=b"\x04\x00\x09abc"),                         # truncated TLV
    "oversized": SIG + b"\x21\x11" + struct.pack("!H", 2000) + b"\0" * 12,
}
assert len(GOOD["v1, 107 bytes"]) == 107


def connect(port, src="127.0.0.1", family=socket.AF_INET, host="127.0.0.1"):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(10)
    s.connect((host, port))
    return s


def echo_through(s, header, payload, split):
    """Send header + payload (split: header one byte at a time), read the
    echo until EOF: (echoed bytes, error or None)."""
    out = bytearray()
    try:
        if split:
            for b in header:
                s.send(bytes([b]))
                time.sleep(0.002)
            s.sendall(payload)
        else:
            s.sendall(header + payload)
        s.shutdown(socket.SHUT_WR)
        while True:
            d = s.recv(1 << 16)
            if not d:
                break
            out += d
        return bytes(out), None
    except OSError as e:
        return bytes(out), e.__class__.__name__
    finally:
        s.close()


def refused(port, data, src="127.0.0.1", fin=False):
    """data sent, then nothing more (fin: and EOF): True when echod resets
    the connection without echoing a byte."""
    s = None
    try:
        s = connect(port, src)        # the reset may come before connect() returns
        s.sendall(data)
        if fin:
            s.shutdown(socket.SHUT_WR)
        s.recv(100)
        return False                  # bytes or an orderly EOF: not a reset
    except ConnectionResetError:
        return True
    except OSError:
        return False
    finally:
        if s:
            s.close()


def counts(mport):
    """({reason: refusals}, headers accepted), summed over the loops."""
    m = scrape(mport)
    out = {}
    for (n, ls), v in m.items():
        if n == "echod_proxy_refused_total":
            reason = dict(ls)["reason"]
            out[reason] = out.get(reason, 0) + v
    return out, value(m, "echod_proxy_headers_total")


def held(port, header, n, src="127.0.0.1"):
    """n connections sending header + one byte: the served ones (echo came
    back), still open."""
    ok = []
    for _ in range(n):
        s = connect(port, src)
        try:
            s.sendall(header + b"p")
            if s.recv(1) == b"p":
                ok.append(s)
                continue
        except OSError:
            pass
        s.close()
    return ok


for backend in backends():
    with tap.guard(backend):
        mport = free_port()
        proxy = {"enabled": True, "trusted": ["127.0.0.1"], "timeout": 2}
        settings = dict(core=[0, 1], deny=["203.0.113.0/24"], proxy_protocol=proxy,
                        per_source={"max_connections": 2},
                        metrics={"enabled": True, "address": "127.0.0.1", "port": mport})
        with Daemon(backend, **settings) as d:
            # --- the matrix
            n_good = 0
            for name, hdr in GOOD.items():
                for how in ("whole", "split", "glued"):
                    payload = PAYLOAD if how != "split" else PAYLOAD[:65536]
                    if how == "glued":
                        hdr_send, payload = hdr + payload[:3], payload[3:]
                        want = PAYLOAD[:3] + payload
                        got, err = echo_through(connect(d.port), hdr_send, payload, False)
                    else:
                        want = payload
                        got, err = echo_through(connect(d.port), hdr, payload, how == "split")
                    n_good += 1
                    tap.ok(got == want and err is None,
                           f"[{backend}] {name} ({len(hdr)} B, {how}): the {len(want)} bytes "
                           "after it echoed exactly, the header never",
                           f"got {len(got)} bytes, error {err}")
            by_reason, headers = counts(mport)
            tap.ok(headers == n_good and not any(by_reason.values()),
                   f"[{backend}] echod_proxy_headers_total = {headers:.0f} = the {n_good} "
                   "headers sent, nothing refused", str(by_reason))

            # --- refused, by reason
            want = {}
            for reason, data in list(BAD.items()) + list(BAD_MORE.items()):
                tap.ok(refused(d.port, data), f"[{backend}] {reason} "
                       f"({data[:24]!r}...): reset, nothing echoed")
                want[reason] = want.get(reason, 0) + 1
            tap.ok(refused(d.port, GOOD["v1 TCP4"], src="127.0.0.2"),
                   f"[{backend}] a valid header from 127.0.0.2, not trusted: reset")
            want["untrusted"] = 1
            tap.ok(refused(d.port, GOOD["v2 TCP4"][:20], fin=True),
                   f"[{backend}] 20 bytes of a v2 header, then EOF: reset")
            want["partial"] = 1
            s = connect(d.port)
            t0 = time.monotonic()
            reset_at, sent = None, 0
            try:
                for b in GOOD["v1 TCP4"]:
                    s.send(bytes([b]))
                    sent += 1
                    s.settimeout(1.0)
                    try:
                        if s.recv(1) == b"":
                            break
                    except socket.timeout:
                        continue
            except ConnectionResetError:
                reset_at = time.monotonic() - t0
            finally:
                s.close()
            tap.ok(reset_at is not None and 1.9 <= reset_at <= 3.5,
                   f"[{backend}] a header at one byte a second: reset at "
                   f"{reset_at if reset_at is None else round(reset_at, 2)} s, after {sent} "
                   "bytes (timeout 2 s)")
            want["timeout"] = 1
            got_reasons = counts(mport)[0]
            got_reasons = {k: v for k, v in got_reasons.items() if v}
            tap.ok(got_reasons == want, f"[{backend}] echod_proxy_refused_total by reason: "
                   f"{dict(sorted(got_reasons.items()))}", f"want {want}")

            # --- the header's source is judged
            denied = b"PROXY TCP4 203.0.113.5 198.51.100.1 4000 7\r\n"
            tap.ok(refused(d.port, denied + b"x"),
                   f"[{backend}] a header naming 203.0.113.5 (deny 203.0.113.0/24): reset")
            m = scrape(mport)
            tap.ok(value(m, "echod_connections_denied_total", reason="list") == 1,
                   f"[{backend}] counted as denied by the lists")
            a_hdr = b"PROXY TCP4 192.0.2.50 198.51.100.1 4000 7\r\n"
            b_hdr = b"PROXY TCP4 192.0.2.51 198.51.100.1 4000 7\r\n"
            two = held(d.port, a_hdr, 3)
            other = held(d.port, b_hdr, 1)
            tap.ok(len(two) == 2 and len(other) == 1,
                   f"[{backend}] per_source.max_connections = 2 counts the header's source: "
                   f"192.0.2.50 got {len(two)} of 3, 192.0.2.51 {len(other)} of 1 (all from "
                   "the same proxy)")
            m = scrape(mport)
            tap.ok(value(m, "echod_connections_denied_total", reason="per_source_connections")
                   == 1, f"[{backend}] one refusal counted (per_source_connections)")

            # --- a backend switch: halfway header, connections at the limit
            half = connect(d.port)
            half.sendall(b_hdr[:10])
            time.sleep(0.2)
            other_backend = "epoll" if backend == "io_uring" else "io_uring"
            d.rewrite_config(**dict(settings, backend=other_backend))
            d.signal(1)
            d.wait_log(r"reload|configuration", timeout=10)
            ok_switch = poll_until(
                lambda: value(scrape(mport), "echod_reloads_total") >= 1, 10)
            half.sendall(b_hdr[10:] + b"after the switch")
            half.shutdown(socket.SHUT_WR)
            got = b""
            try:
                while True:
                    c = half.recv(100)
                    if not c:
                        break
                    got += c
            except OSError:
                pass
            half.close()
            tap.ok(ok_switch and got == b"after the switch",
                   f"[{backend}] a header begun before a reload to {other_backend} ends after "
                   f"it: served ({got!r})")
            third = held(d.port, a_hdr, 1)
            tap.ok(not third and all(s.send(b"q") == 1 and s.recv(1) == b"q" for s in two),
                   f"[{backend}] after the switch 192.0.2.50 still holds 2: a third refused, "
                   "the two echo")
            for s in two + other + third:
                s.close()

            # --- a reload turning it off
            keep = connect(d.port)
            keep.sendall(GOOD["v2 TCP4"] + b"a")
            first = keep.recv(1)
            d.rewrite_config(**dict(settings, backend=other_backend,
                                    proxy_protocol=dict(proxy, enabled=False)))
            d.signal(1)
            poll_until(lambda: value(scrape(mport), "echod_reloads_total") >= 2, 10)
            got, err = echo_through(connect(d.port), b"", b"direct client", False)
            keep.sendall(b"b")
            second = keep.recv(1)
            keep.close()
            tap.ok(first == b"a" and second == b"b" and got == b"direct client",
                   f"[{backend}] reload turning it off: a direct client served ({got!r}), the "
                   "proxied connection still echoes")



def test_fdstore(be):
    port, mport = free_port(), free_port()
    hdr = b"PROXY TCP4 192.0.2.60 198.51.100.1 4000 7\r\n"
    hdr2 = b"PROXY TCP4 192.0.2.61 198.51.100.1 4000 7\r\n"
    settings = dict(port=port, core=[0, 1], args=["--fd-store"], shutdown_timeout=1,
                    proxy_protocol={"enabled": True, "trusted": ["127.0.0.1"], "timeout": 3},
                    per_source={"max_connections": 1},
                    metrics={"enabled": True, "address": "127.0.0.1", "port": mport})
    n = Notify()
    try:
        with Daemon(be, env={"NOTIFY_SOCKET": n.path}, **settings) as d:
            one = held(port, hdr, 2)
            half = connect(port)
            half.sendall(hdr2[:12])
            time.sleep(0.2)
            d.signal(signal.SIGTERM)
            d.wait(15)
            time.sleep(0.3)
        names = [x[0] for x in n.store]
        fds = [x[1] for x in n.store]
        with Daemon(be, inherit_fds=fds, argv_prefix=["sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh"],
                    env={"NOTIFY_SOCKET": n.path, "LISTEN_FDS": len(fds),
                         "LISTEN_FDNAMES": ":".join(names)}, **settings) as d2:
            for fd in fds:
                os.close(fd)
            n.store.clear()
            resumed = d2.wait_log(r"fd store: resuming 2 connection", 5)
            again = held(port, hdr, 1)
            half.sendall(hdr2[12:] + b"resumed")
            half.shutdown(socket.SHUT_WR)
            got = b""
            try:
                while len(got) < 7:
                    c = half.recv(100)
                    if not c:
                        break
                    got += c
            except OSError:
                pass
            tap.ok(len(one) == 1 and resumed and not again and
                   one[0].send(b"z") == 1 and one[0].recv(1) == b"z",
                   f"[{be}] fd-store restart: the proxied connection of 192.0.2.60 resumed and "
                   "still counted under that source (one more refused at limit 1)",
                   diag=f"{names}\n{d2.log_tail()}")
            tap.ok(got == b"resumed",
                   f"[{be}] fd-store restart: a header halfway at the restart completes in the "
                   f"next echod: served ({got!r})", diag=f"{names}\n{d2.log_tail()}")
            for s in one + again + [half]:
                s.close()
    finally:
        n.close()


for backend in backends():
    with tap.guard(backend):
        test_fdstore(backend)
tap.done()
