#!/usr/bin/env python3
"""Scale-out behind a real balancer (issue 13): the Debian package's haproxy
(TCP mode, balance roundrobin, no health checks) in front of two echod
instances (the first backend of ECHOD_BACKENDS and the last, one each),
each with the PROXY protocol on (trusted 127.0.0.1) and
per_source.max_connections = 2; haproxy sends the first a v2 header
(send-proxy-v2) and the second a v1 header (send-proxy).  Clients bound to
distinct 127.0.0.x sources:
- 10 sources x 2 connections held open at once (20 through haproxy), each
  streaming 256 KiB of seeded random data in 16 KiB chunks: every byte back,
  byte-exact, all 20 open on the instances at the same time;
- both instances served; echod_proxy_headers_total equals each instance's
  accepted connections, echod_proxy_refused_total is zero; the header bytes
  echod consumed (echod_discarded_bytes_total) are exactly 28 a connection
  on the first (v2, TCP4) and exactly the v1 text line of each connection
  haproxy logged to the second;
- the per-source limit judges the original client, not haproxy: the 20
  above were all served (seen as 127.0.0.1, at most 2 an instance would
  be), and one source opening 6 at once (alternated 3/3 by round robin)
  gets exactly sum(min(landed, 2)) = 4 served, the other 2 reset with no
  echo, counted as per_source_connections;
- a source that is not a trusted proxy connecting to an instance directly
  is reset and counted (untrusted).
Skipped if /usr/sbin/haproxy is missing (apt-get install haproxy)."""
import contextlib
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (Daemon, Tap, _child_setup, _register, _unregister,  # noqa: E402
                       backends, free_port, poll_until)
from metricsutil import scrape, value  # noqa: E402

HAPROXY = "/usr/sbin/haproxy"
LIMIT = 2                       # per_source.max_connections
SOURCES = [f"127.0.0.{i}" for i in range(10, 20)]
PER_SOURCE = 2                  # connections each source holds at once
SIZE = 256 * 1024
CHUNK = 16 * 1024
BURST_SRC, BURST_N = "127.0.0.30", 6
UNTRUSTED_SRC = "127.0.0.40"
V2_TCP4 = 16 + 12               # v2: signature, version, family, length; 2 addresses, 2 ports

tap = Tap(timeout=60)


def haproxy_config(fport, p1, p2):
    return f"""global
    log stdout format raw local0 info
    nbthread 1

defaults
    mode tcp
    log global
    log-format "conn %ci:%cp %s up=%U down=%B term=%ts"
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    # one server connection per client connection, never retried (a refused
    # one would otherwise come back and skew the counts)
    retries 0

frontend fe
    bind 127.0.0.1:{fport}
    default_backend echo

backend echo
    balance roundrobin
    server e1 127.0.0.1:{p1} send-proxy-v2
    server e2 127.0.0.1:{p2} send-proxy
"""


def listening(port):
    """A TCP socket listens on 127.0.0.1:port (from /proc/net/tcp: no
    connection made, so nothing reaches the balancer's servers)."""
    want = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            return any(l.split()[1] == want and l.split()[3] == "0A" for l in f.readlines()[1:])
    except OSError:
        return False


class Haproxy:
    def __init__(self, fport, p1, p2):
        self.dir = tempfile.mkdtemp(prefix="echodtest.haproxy.")
        self.cfg = os.path.join(self.dir, "haproxy.cfg")
        self.logpath = os.path.join(self.dir, "haproxy.log")
        self.text = haproxy_config(fport, p1, p2)
        self.port = fport
        with open(self.cfg, "w") as f:
            f.write(self.text)
        self.proc = None

    def __enter__(self):
        self._logf = open(self.logpath, "ab")
        self.proc = _register(subprocess.Popen(
            [HAPROXY, "-db", "-f", self.cfg], stdin=subprocess.DEVNULL, stdout=self._logf,
            stderr=subprocess.STDOUT, preexec_fn=_child_setup()))
        if not poll_until(lambda: listening(self.port) or self.proc.poll() is not None, 10) \
                or self.proc.poll() is not None:
            log = self.log()
            self.__exit__(None, None, None)
            raise RuntimeError(f"haproxy not listening on 127.0.0.1:{self.port}:\n{log}")
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            _unregister(self.proc)
        self._logf.close()
        if os.environ.get("ECHOD_KEEP_TMP") == "1":
            print(f"# kept {self.dir}", flush=True)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        return False

    def log(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def conns(self):
        """[(client ip, client port, server, bytes up, bytes down, state)]
        of the sessions haproxy logged (at their end)."""
        return [(m[0], int(m[1]), m[2], int(m[3]), int(m[4]), m[5]) for m in re.findall(
            r"^conn (\S+):(\d+) (\S+) up=(\d+) down=(\d+) term=(\S+)$", self.log(), re.M)]


def connect(src, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def recv_exact(s, n):
    got = bytearray()
    while len(got) < n:
        b = s.recv(n - len(got))
        if not b:
            break
        got += b
    return bytes(got)


def stream(s, data, held, results, k):
    """Send data in CHUNKs, reading each back; after the first, wait (held)
    until every connection has echoed its first chunk."""
    try:
        back = bytearray()
        for off in range(0, len(data), CHUNK):
            s.sendall(data[off:off + CHUNK])
            back += recv_exact(s, len(data[off:off + CHUNK]))
            if off == 0:
                held.wait()
        if back != data:
            bad = next((i for i in range(min(len(back), len(data))) if back[i] != data[i]),
                       min(len(back), len(data)))
            results[k] = f"{len(back)} of {len(data)} bytes back, first wrong at {bad}"
        else:
            results[k] = None
    except (OSError, threading.BrokenBarrierError) as e:
        results[k] = f"{type(e).__name__}: {e}"


def fate(s, settle_until):
    """'echo' if a byte comes back, 'reset' or 'eof' otherwise."""
    time.sleep(max(0.0, settle_until - time.monotonic()))
    try:
        s.sendall(b"p")
        got = s.recv(1)
    except ConnectionResetError:
        return "reset"
    except BrokenPipeError:
        return "reset"
    except OSError as e:
        return f"error {e}"
    return "echo" if got == b"p" else ("eof" if not got else f"got {got!r}")


def metrics(mport):
    m = scrape(mport)

    def v(name, **labels):
        return int(value(m, name, **labels))
    return {
        "accepted": v("echod_connections_accepted_total"),
        "current": v("echod_connections_current"),
        "headers": v("echod_proxy_headers_total"),
        "refused": v("echod_proxy_refused_total"),
        "untrusted": v("echod_proxy_refused_total", reason="untrusted"),
        "denied": v("echod_connections_denied_total"),
        "denied_ps": v("echod_connections_denied_total", reason="per_source_connections"),
        "received": v("echod_received_bytes_total"),
        "sent": v("echod_sent_bytes_total"),
        "discarded": v("echod_discarded_bytes_total"),
    }


def v1_len(cip, cport, fport):
    return len(f"PROXY TCP4 {cip} 127.0.0.1 {cport} {fport}\r\n")


def socks_src(k):
    return f"{SOURCES[k // PER_SOURCE]} #{k % PER_SOURCE}"


def run(insts, hp):
    (be1, d1, m1), (be2, d2, m2) = insts
    names = {"e1": f"e1 ({be1}, v2)", "e2": f"e2 ({be2}, v1)"}

    # ---- 1. 10 sources x 2 connections at once, 256 KiB each
    socks, datas = [], []
    for i, src in enumerate(SOURCES):
        for j in range(PER_SOURCE):
            socks.append(connect(src, hp.port))
            datas.append(random.Random(f"haproxy {i} {j}").randbytes(SIZE))
    n = len(socks)
    held = threading.Barrier(n + 1, timeout=15)
    results = ["no result"] * n
    threads = [threading.Thread(target=stream, args=(socks[k], datas[k], held, results, k),
                                daemon=True) for k in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    try:
        held.wait()                 # every connection echoed its first chunk
        open_now = [metrics(m1)["current"], metrics(m2)["current"]]
    except threading.BrokenBarrierError:
        open_now = None
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - t0
    for s in socks:
        s.close()
    bad = [f"{socks_src(k)}: {r}" for k, r in enumerate(results) if r]
    tap.figure("20 connections x 256 KiB through haproxy: seconds", elapsed)
    tap.ok(not bad and open_now is not None and sum(open_now) == n,
           f"{len(SOURCES)} sources x {PER_SOURCE} connections held at once through haproxy "
           f"({n} open on the instances together: {open_now}), {SIZE // 1024} KiB each in "
           f"{CHUNK // 1024} KiB chunks: {n - len(bad)} of {n} byte-exact",
           diag="\n".join(bad) + f"\n{d1.log_tail(10)}{d2.log_tail(10)}")

    # ---- 2. both served; v2 to e1, v1 to e2; headers = accepted; no refusal
    poll_until(lambda: metrics(m1)["current"] + metrics(m2)["current"] == 0, 5)
    poll_until(lambda: len(hp.conns()) >= n, 5)
    a, b = metrics(m1), metrics(m2)
    logged = hp.conns()
    on = {"e1": [c for c in logged if c[2] == "e1"], "e2": [c for c in logged if c[2] == "e2"]}
    want_v2 = V2_TCP4 * len(on["e1"])
    want_v1 = sum(v1_len(c[0], c[1], hp.port) for c in on["e2"])
    tap.diag(f"after check 1: {names['e1']} {a}")
    tap.diag(f"after check 1: {names['e2']} {b}")
    tap.ok(a["accepted"] > 0 and b["accepted"] > 0 and
           a["accepted"] + b["accepted"] == n and
           len(on["e1"]) == a["accepted"] and len(on["e2"]) == b["accepted"],
           f"both instances served: {a['accepted']} + {b['accepted']} = {n} accepted, as "
           f"haproxy logged them ({len(on['e1'])} to e1, {len(on['e2'])} to e2)",
           diag="\n".join(map(str, logged)))
    tap.ok(a["headers"] == a["accepted"] and b["headers"] == b["accepted"] and
           a["refused"] == 0 and b["refused"] == 0,
           f"echod_proxy_headers_total equals accepted on each ({a['headers']}, "
           f"{b['headers']}), echod_proxy_refused_total zero ({a['refused']}, {b['refused']})")
    tap.ok(a["discarded"] == want_v2 and b["discarded"] == want_v1 and
           a["received"] - a["sent"] == a["discarded"] and
           b["received"] - b["sent"] == b["discarded"],
           f"e1 consumed v2 headers ({a['discarded']} B = {V2_TCP4} x {len(on['e1'])}), e2 v1 "
           f"headers ({b['discarded']} B = the {len(on['e2'])} text lines, {want_v1} B); "
           f"every other byte echoed",
           diag=f"want e1 {want_v2}, e2 {want_v1}")

    # ---- 3. the per-source limit judges the original client
    tap.ok(a["denied"] == 0 and b["denied"] == 0 and not bad,
           f"per_source.max_connections = {LIMIT} judged the clients, not haproxy: all {n} "
           f"concurrent connections from {len(SOURCES)} sources served, none denied (seen "
           f"as haproxy's 127.0.0.1, at most {LIMIT} an instance, {2 * LIMIT} in all, would be)")
    burst = []
    for _ in range(BURST_N):
        burst.append(connect(BURST_SRC, hp.port))
    settle = time.monotonic() + 0.5
    fates = [fate(s, settle) for s in burst]
    for s in burst:
        s.close()
    poll_until(lambda: len(hp.conns()) >= n + BURST_N, 5)
    poll_until(lambda: metrics(m1)["current"] + metrics(m2)["current"] == 0, 5)
    a2, b2 = metrics(m1), metrics(m2)
    landed = [a2["headers"] - a["headers"], b2["headers"] - b["headers"]]
    logged_burst = [c for c in hp.conns() if c[0] == BURST_SRC]
    landed_log = [sum(c[2] == "e1" for c in logged_burst), sum(c[2] == "e2" for c in logged_burst)]
    expect = sum(min(x, LIMIT) for x in landed)
    served = fates.count("echo")
    denied = [a2["denied_ps"] - a["denied_ps"], b2["denied_ps"] - b["denied_ps"]]
    tap.diag(f"after check 3: {names['e1']} {a2}")
    tap.diag(f"after check 3: {names['e2']} {b2}")
    tap.figure(f"{BURST_N} at once from {BURST_SRC}: landed e1/e2", f"{landed[0]}/{landed[1]}")
    tap.figure(f"{BURST_N} at once from {BURST_SRC}: fates", " ".join(fates))
    tap.ok(landed == landed_log and sum(landed) == BURST_N and
           served == expect == 2 * LIMIT and
           fates.count("reset") + fates.count("eof") == BURST_N - expect,
           f"{BURST_N} at once from one source, alternated {landed[0]}/{landed[1]} by round "
           f"robin: exactly sum(min(landed, {LIMIT})) = {expect} served ({served}), the other "
           f"{BURST_N - served} reset or closed with no echo",
           diag=f"haproxy logged {landed_log}; fates {fates}\n{logged_burst}")
    tap.ok(denied == [max(0, x - LIMIT) for x in landed] and sum(denied) == BURST_N - expect and
           a2["refused"] == 0 and b2["refused"] == 0,
           f"echod_connections_denied_total{{reason=\"per_source_connections\"}}: "
           f"{denied[0]} + {denied[1]} = {sum(denied)}",
           diag=f"{d1.log_tail(10)}{d2.log_tail(10)}")

    # ---- 4. an untrusted peer straight to an instance
    got, counted = [], []
    for d, mp, before in ((d1, m1, a2), (d2, m2, b2)):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        s.bind((UNTRUSTED_SRC, 0))
        try:
            s.connect(("127.0.0.1", d.port))
            got.append(fate(s, time.monotonic() + 0.2))
        except ConnectionResetError:    # reset before connect() returned (the poll saw it)
            got.append("reset")
        s.close()
        poll_until(lambda: metrics(mp)["untrusted"] == before["untrusted"] + 1, 5)
        after = metrics(mp)
        counted.append((after["untrusted"] - before["untrusted"],
                        after["headers"] - before["headers"], after["denied"] - before["denied"]))
    tap.ok(got == ["reset", "reset"] and counted == [(1, 0, 0), (1, 0, 0)],
           f"{UNTRUSTED_SRC}, not a trusted proxy, straight to each instance: reset "
           f"({', '.join(got)}), counted as echod_proxy_refused_total{{reason=\"untrusted\"}} "
           f"(+{counted[0][0]}, +{counted[1][0]})", diag=str(counted))

    tap.diag("summary:")
    tap.diag(f"  haproxy {hp.port} -> {names['e1']} port {d1.port}, {names['e2']} port {d2.port}")
    tap.diag(f"  check 1: {n} connections from {len(SOURCES)} sources, {n * SIZE // 1024} KiB "
             f"echoed in {elapsed:.2f} s; split {a['accepted']}/{b['accepted']}")
    tap.diag(f"  headers consumed: e1 {a['discarded']} B (v2), e2 {b['discarded']} B (v1)")
    tap.diag(f"  check 3: {BURST_N} from {BURST_SRC} landed {landed[0]}/{landed[1]}: {served} "
             f"served, denied per_source_connections {denied[0]}+{denied[1]}")
    tap.diag(f"  check 4: untrusted {UNTRUSTED_SRC}: {got}")


if not os.access(HAPROXY, os.X_OK):
    tap.skip("haproxy in front of two echod instances",
             f"{HAPROXY} missing (apt-get install haproxy)")
    tap.done()

pair = [backends()[0], backends()[-1]]       # both backends, if two are tested
t_start = time.monotonic()
with tap.guard("haproxy"), contextlib.ExitStack() as stack:
    insts = []
    for be in pair:
        mport = free_port()
        d = stack.enter_context(Daemon(
            be, core=[0], per_source={"max_connections": LIMIT},
            proxy_protocol={"enabled": True, "trusted": ["127.0.0.1"], "timeout": 3},
            metrics={"enabled": True, "address": "127.0.0.1", "port": mport}))
        insts.append((be, d, mport))
    hp = Haproxy(free_port(), insts[0][1].port, insts[1][1].port)
    version = subprocess.run([HAPROXY, "-v"], capture_output=True, text=True,
                             timeout=10).stdout.splitlines()[0]
    tap.diag(f"{version}; config:")
    tap.diag(hp.text)
    with hp:
        run(insts, hp)
tap.figure("wall time, seconds", time.monotonic() - t_start)
tap.done()
