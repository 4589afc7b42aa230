#!/usr/bin/env python3
"""Bad input: what another protocol's client would send comes back
verbatim, each on its own connection closed by a half-close (the echo,
then EOF): every byte value (all 256 in one write, and each alone), runs
of NULs, a TLS ClientHello, HTTP requests, PROXY protocol v1 and v2
headers, telnet negotiation, a CRLF flood; 100,000 one-byte writes with
TCP_NODELAY come back byte-exact and in order (the integrity client);
connections opened and closed with no data (FIN, RST, or closed before
echod even accepts them), again and again, leave echod healthy: no fd,
connection or CLOSE_WAIT socket left behind.  The verbatim check itself
is shown to fail against a server that flips one byte."""
import os
import socket
import struct
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import MiB, Tap, backends, client, client_ok, wait_fds  # noqa: E402
from loadutil import (BrokenEchoServer, MetricsDaemon, fd_baseline, tcp_states,  # noqa: E402
                      wait_quiet)


def tls_client_hello(sni=b"echod.invalid"):
    """A TLS 1.2-framed ClientHello (TLS 1.3 offered), fixed bytes."""
    ext_sni = struct.pack("!HHHBH", 0x0000, len(sni) + 5, len(sni) + 3, 0, len(sni)) + sni
    ext_versions = bytes.fromhex("002b0005040304" "0303")
    ext_groups = bytes.fromhex("000a000400020017")
    ext_sigalgs = bytes.fromhex("000d000400020403")
    ext_alpn = bytes.fromhex("0010000e000c02683208687474702f312e31")
    exts = ext_sni + ext_versions + ext_groups + ext_sigalgs + ext_alpn
    body = (b"\x03\x03" + bytes(range(32)) + b"\x20" + bytes(range(32, 64)) +
            bytes.fromhex("0006130113021303") + b"\x01\x00" +
            struct.pack("!H", len(exts)) + exts)
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def proxy_v2(payload):
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    addrs = socket.inet_aton("192.0.2.1") + socket.inet_aton("198.51.100.1") + \
        struct.pack("!HH", 56324, 7)
    tlv = b"\x04" + struct.pack("!H", 8) + b"\x00" * 8          # PP2_TYPE_NOOP
    return sig + b"\x21\x11" + struct.pack("!H", len(addrs) + len(tlv)) + addrs + tlv + payload


CASES = [
    ("all 256 byte values, one write", bytes(range(256))),
    ("all 256 byte values x 256, descending", bytes(range(255, -1, -1)) * 256),
    ("1 NUL", b"\x00"),
    ("4096 NULs", b"\x00" * 4096),
    ("1 MiB of NULs", b"\x00" * MiB),
    ("NUL and 0xff runs", (b"\x00" * 1000 + b"\xff" * 1000) * 64),
    ("TLS ClientHello", tls_client_hello()),
    ("TLS ClientHello then garbage", tls_client_hello() + bytes(range(256)) * 4),
    ("HTTP GET request headers",
     b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: echodtest\r\n"
     b"Accept: */*\r\nConnection: keep-alive\r\n\r\n"),
    ("HTTP POST with a body and a 60 KiB header",
     b"POST /x HTTP/1.1\r\nHost: h\r\nX-Long: " + b"a" * (60 * 1024) +
     b"\r\nContent-Length: 5\r\n\r\nhello"),
    ("HTTP/2 connection preface and SETTINGS",
     b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"),
    ("PROXY v1 TCP4 header and payload",
     b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 7\r\nhello\n"),
    ("PROXY v1 UNKNOWN header", b"PROXY UNKNOWN\r\n"),
    ("PROXY v1 TCP6 header, 107 bytes", b"PROXY TCP6 " + b"f" * 39 + b" " + b"e" * 39 +
     b" 65535 65535\r\n"),
    ("PROXY v2 PROXY TCP4 header with a TLV, and payload", proxy_v2(b"hello\n")),
    ("PROXY v2 LOCAL header alone", b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"),
    ("telnet negotiation", b"\xff\xfd\x18\xff\xfd\x20\xff\xfb\x01\xff\xf4\xff\xfd\x06"),
    ("CRLF flood", b"\r\n" * 50000),
    ("lone CR and LF, invalid UTF-8",
     b"\r" * 100 + b"\n" * 100 + b"\xc3\x28\xa0\xa1\xf0\x28\x8c\x28"),
]


def echo_exact(port, data, timeout=10):
    """Send data (from a thread, so a large payload cannot deadlock),
    half-close, read to EOF; (ok, what came back, why)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    err = []

    def send():
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            err.append(e)
    t = threading.Thread(target=send, daemon=True)
    t.start()
    got = bytearray()
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
    except OSError as e:
        err.append(e)
    finally:
        t.join(timeout)
        s.close()
    if err:
        return False, bytes(got), f"error: {err[0]!r}"
    if bytes(got) != data:
        k = next((i for i in range(min(len(got), len(data))) if got[i] != data[i]),
                 min(len(got), len(data)))
        return False, bytes(got), f"{len(got)} of {len(data)} bytes back, first difference at {k}"
    return True, bytes(got), ""


tap = Tap(timeout=60 * len(backends()) + 60)

# the check can fail: a server that flips byte 100
with tap.guard("negative"), BrokenEchoServer("flip", at=100) as srv:
    ok, _, why = echo_exact(srv.port, bytes(range(256)))
    tap.ok(not ok and "first difference at 100" in why,
           "verbatim check: a byte flipped by a broken server is caught", diag=why)

for be in backends():
    with tap.guard(be), MetricsDaemon(be) as d:
        client(d.port, "-n", "64k")                         # warm up
        wait_quiet(d, d.port)                               # echod closed it too
        fd0 = fd_baseline(d)
        acc0 = d.metric("echod_connections_accepted_total")
        for name, data in CASES:
            ok, _, why = echo_exact(d.port, data)
            tap.ok(ok, f"[{be}] {name} ({len(data)} B): echoed verbatim, then EOF",
                   diag=f"{why}\n{d.log_tail(10)}")
        bad = [v for v in range(256) if echo_exact(d.port, bytes([v]))[0] is False]
        tap.ok(not bad, f"[{be}] each of the 256 byte values alone on its own connection",
               diag=f"failed for {bad}")
        ok, _, why = echo_exact(d.port, b"")
        tap.ok(ok, f"[{be}] a half-close with no data: EOF back, nothing else", diag=why)

        res = client(d.port, "-n", 100000, "--chunk", 1, "-s", 1100, timeout=60)
        client_ok(tap, f"[{be}] 100,000 one-byte writes (TCP_NODELAY) come back byte-exact, "
                  f"in order ({res.info.get('elapsed_ms')} ms)", res, d, total=100000)

        # connect and close, no data: FIN, RST, and before echod accepts
        res = client(d.port, "-c", 2000, "-n", 0, "--concurrency", 50,
                     "--bind", "127.0.0.1-127.0.0.8", "-s", 1101)
        tap.ok(res.ok and res.info.get("conns") == 2000,
               f"[{be}] 2000 connections opened and closed with no data", diag=res.diag())
        res = client(d.port, "-c", 2000, "--rst-after", 0, "-n", 0, "--concurrency", 50,
                     "--bind", "127.0.0.1-127.0.0.8", "-s", 1102)
        tap.ok(res.ok and res.info.get("conns") == 2000,
               f"[{be}] 2000 connections opened and reset with no data", diag=res.diag())
        errs = 0
        for i in range(500):
            try:
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", d.port))
                s.close()                 # maybe before the handshake finished
            except OSError:
                errs += 1
        tap.ok(errs == 0, f"[{be}] 500 connects closed at once, unanswered ({errs} errors)")

        cur, cw = wait_quiet(d, d.port)
        acc = d.metric("echod_connections_accepted_total") - acc0
        tap.diag(f"[{be}] accepted {acc} connections in all; sockets on the port: "
                 f"{tcp_states(d.port)}")
        tap.ok(cur == 0 and cw == 0, f"[{be}] afterwards: {cur} connections, {cw} CLOSE_WAIT")
        last = wait_fds(d, fd0, 5)
        tap.ok(last is not None and last <= fd0, f"[{be}] fd count back to baseline ({last})",
               diag=f"baseline {fd0}\n{d.log_tail()}")
        res = client(d.port, "-c", 10, "-n", "1M", "-s", 1103)
        client_ok(tap, f"[{be}] still healthy: 10 x 1 MiB byte-exact", res, d, total=10 * MiB)
        tap.ok(d.running(), f"[{be}] daemon still running", diag=d.log_tail())
        tap.ok(d.stop() == 0, f"[{be}] clean exit", diag=d.log_tail())
tap.done()
