#!/usr/bin/env python3
"""Per-source limits (the per_source group), on each backend, over two
event loops (core = [0, 1]: a source's connections land on both), with
clients bound to distinct 127.x.y.z sources:
- max_connections is exact: 200 connection attempts at once from one
  source leave exactly the limit served (each echoes), the rest reset and
  counted (per_source_connections, on both loops), echod_connections_current
  equal to the limit; another source is not affected; a place freed by a
  close is taken by exactly one new connection;
- connection_rate and datagram_rate: what a source gets through over a
  measured window is at most burst + rate x elapsed, and at least half the
  rate's share (the drops counted: per_source_rate, rate_limited);
- a table of 1024 entries against 100,000 distinct UDP sources and 5,000
  TCP sources: occupancy never above the table's size, every eviction
  counted (exactly: one per new source once the table is full), RSS and
  fds back to where they were, and a source holding connections at its
  limit throughout is never evicted: one more is still refused after the
  storm;
- reloads turning max_connections on, changing it and turning it off with
  connections open keep the counts exact, and so does a backend switch
  (every connection handed to new event loops);
- a restart through the fd store re-counts every connection it resumes by
  its source, over the limit or not, and a source written in the fd's name
  (conn.ID.FLAGS.SRC) counts instead of the peer address."""
import os
import signal
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import Daemon, Notify, Tap, backends, free_port, poll_until, wait_fds  # noqa: E402
from metricsutil import scrape, value  # noqa: E402

TABLE = 1024
tap = Tap(timeout=240 * len(backends()))


CPUS = sorted(os.sched_getaffinity(0))


def attempt(src, port, n):
    """n non-blocking connects from src at once, from each CPU in turn:
    the sockets.  (echod's listeners are pinned with SO_INCOMING_CPU: a
    loopback SYN goes to the event loop of the CPU that sent it, so a
    client on one CPU would reach one loop only.)"""
    socks = []
    try:
        for k in range(n):
            if len(CPUS) > 1:
                os.sched_setaffinity(0, {CPUS[k % 2]})
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.bind((src, 0))
            s.connect_ex(("127.0.0.1", port))
            socks.append(s)
    finally:
        os.sched_setaffinity(0, CPUS)
    return socks


def served(socks, settle=0.3):
    """The sockets echod serves (a byte comes back); the others (reset,
    or closed) are closed here."""
    time.sleep(settle)
    ok = []
    for s in socks:
        s.setblocking(True)
        s.settimeout(5)
        try:
            s.sendall(b"p")
            got = s.recv(1)
        except OSError:
            got = b""
        if got == b"p":
            ok.append(s)
        else:
            s.close()
    return ok


def open_n(src, port, n):
    """n connections from src, one after the other: the ones served."""
    return served(attempt(src, port, n))


def still_echo(socks):
    good = 0
    for s in socks:
        try:
            s.sendall(b"q")
            good += s.recv(1) == b"q"
        except OSError:
            pass
    return good


def close_all(socks):
    for s in socks:
        s.close()
    socks.clear()


def metric(mport, name, **labels):
    return value(scrape(mport), name, **labels)


def denied(mport, reason):
    return metric(mport, "echod_connections_denied_total", reason=reason)


def reload(d, mark_re=r"reload: configuration applied", **per_source):
    d.settings["per_source"] = dict(d.settings.get("per_source", {}), **per_source)
    d.rewrite_config()
    mark = d.log_mark()
    d.signal(signal.SIGHUP)
    return d.wait_log(mark_re, 15, since=mark)


def current(mport):
    return metric(mport, "echod_connections_current")


def wait_current(mport, n, timeout=5):
    return poll_until(lambda: current(mport) == n, timeout)


def test_concurrency(be, d, mport):
    a, b = "127.0.0.21", "127.0.0.22"
    before = denied(mport, "per_source_connections")
    got = served(attempt(a, d.port, 200), settle=0.5)
    poll_until(lambda: denied(mport, "per_source_connections") - before == 192, 5)
    m = scrape(mport)
    per_worker = [value(m, "echod_connections_denied_total", reason="per_source_connections",
                        worker=w) for w in (0, 1)]
    tap.ok(len(got) == 8, f"[{be}] 200 connection attempts at once from one source: exactly "
           f"the limit, 8, served ({len(got)})", diag=d.log_tail())
    tap.ok(sum(per_worker) - before == 192 and value(m, "echod_connections_current") == 8,
           f"[{be}] 192 reset and counted (per_source_connections), 8 open "
           f"(echod_connections_current {value(m, 'echod_connections_current'):.0f})",
           diag=str(per_worker))
    if len(CPUS) > 1:
        tap.ok(all(per_worker), f"[{be}] the source's connections landed on both event loops "
               f"(denials per loop {per_worker}): the limit holds across loops")
    else:
        tap.skip(f"[{be}] the source's connections landed on both event loops", "one CPU")
    other = open_n(b, d.port, 8)
    tap.ok(len(other) == 8 and still_echo(got) == 8,
           f"[{be}] another source opens its own 8, the first's 8 still echo")
    # a place freed is taken once
    got.pop().close()
    poll_until(lambda: current(mport) == 15, 5)
    again = served(attempt(a, d.port, 20), settle=0.5)
    tap.ok(len(again) == 1, f"[{be}] one closed, 20 more attempts: exactly 1 served "
           f"({len(again)})")
    close_all(got)
    close_all(again)
    close_all(other)
    wait_current(mport, 0)


def test_conn_rate(be, d, mport):
    rate, burst, src = 20, 5, "127.0.0.31"
    reload(d, max_connections=0, connection_rate=rate, connection_burst=burst)
    before = denied(mport, "per_source_rate")
    admitted = attempts = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.5:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        s.bind((src, 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        try:
            s.connect(("127.0.0.1", d.port))
            s.sendall(b"r")
            admitted += s.recv(1) == b"r"
        except OSError:
            pass
        attempts += 1
        s.close()
    elapsed = time.monotonic() - t0
    bound = burst + rate * elapsed
    poll_until(lambda: denied(mport, "per_source_rate") - before == attempts - admitted, 5)
    refused = denied(mport, "per_source_rate") - before
    tap.figure(f"[{be}] connection_rate {rate}/s burst {burst}: attempts", attempts)
    tap.ok(burst + rate * elapsed * 0.5 <= admitted <= bound + 1,
           f"[{be}] connection_rate {rate}/s, burst {burst}: {admitted} of {attempts} "
           f"connections in {elapsed:.2f} s (bound burst + rate x elapsed = {bound:.1f})")
    tap.ok(refused == attempts - admitted,
           f"[{be}] the {attempts - admitted} others reset and counted (per_source_rate "
           f"{refused:.0f})")
    reload(d, connection_rate=0)
    wait_current(mport, 0)


def test_dgram_rate(be, d, mport, up):
    rate, burst, src = 400, 20, "127.0.0.41"
    reload(d, datagram_rate=rate, datagram_burst=burst)
    m0 = scrape(mport)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.setblocking(False)
    sent = back = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:
        for _ in range(10):
            try:
                s.sendto(b"datagram %06d" % sent, ("127.0.0.1", up))
                sent += 1
            except BlockingIOError:
                pass
        time.sleep(0.001)
        try:
            while True:
                s.recv(64)
                back += 1
        except BlockingIOError:
            pass
    elapsed = time.monotonic() - t0
    s.settimeout(0.5)
    try:
        while True:
            s.recv(64)
            back += 1
    except (socket.timeout, BlockingIOError):
        pass
    s.close()
    bound = burst + rate * elapsed
    m1 = scrape(mport)

    def delta(name, **kw):
        return value(m1, name, **kw) - value(m0, name, **kw)
    limited = delta("echod_udp_dropped_datagrams_total", reason="rate_limited")
    kdrops = delta("echod_udp_kernel_drops_total")
    tap.ok(burst + rate * elapsed * 0.5 <= back <= bound + 1,
           f"[{be}] datagram_rate {rate}/s, burst {burst}: {back} of {sent} datagrams echoed "
           f"in {elapsed:.2f} s (bound burst + rate x elapsed = {bound:.1f})")
    tap.ok(limited + back + kdrops == sent,
           f"[{be}] the others dropped and counted (rate_limited {limited:.0f}, kernel "
           f"{kdrops:.0f})")


def udp_storm(up, first, n, mport, check_every=10000, spread=False):
    """One datagram from each of n sources 127.(1 + (first + i) / 65536).x.y
    (spread: from each CPU in turn, so that both event loops get half);
    the highest occupancy seen."""
    high = 0
    for i in range(first, first + n):
        if spread and len(CPUS) > 1:
            os.sched_setaffinity(0, {CPUS[i % 2]})
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.{1 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}", 0))
        s.sendto(b"s", ("127.0.0.1", up))
        s.close()
        if i % 1000 == 0:
            time.sleep(0.005)      # let echod keep up: no kernel drop
        if i % check_every == 0:
            high = max(high, metric(mport, "echod_per_source_table_entries"))
    if spread:
        os.sched_setaffinity(0, CPUS)
    return high


def tcp_storm(port, second, n):
    """One connection, one echo, then a reset (no TIME_WAIT) from each of n
    sources 127.SECOND.x.y, from each CPU in turn (a loopback connection
    reaches the event loop of the CPU it came from: each loop gets half,
    whatever CPU the scheduler would have kept this process on)."""
    try:
        for i in range(n):
            if len(CPUS) > 1:
                os.sched_setaffinity(0, {CPUS[i % 2]})
            tcp_one(port, f"127.{second}.{i >> 8}.{i & 255}")
    finally:
        os.sched_setaffinity(0, CPUS)


def tcp_one(port, src):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.settimeout(5)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(b"t")        # served (so counted) before it is reset
        s.recv(1)
    except OSError:
        pass
    s.close()


def test_storm(be, d, mport, up):
    holder = "127.0.0.51"
    reload(d, max_connections=4, datagram_rate=1000, datagram_burst=64)
    held = open_n(holder, d.port, 4)
    # fill the table, and cycle io_uring's buffer rings once (UDP and TCP:
    # their buffers are touched as first used), then measure from here
    udp_storm(up, 0, 20000, mport, spread=True)
    tcp_storm(d.port, 4, 10000)            # 4096 buffers a loop: 5,000 a loop touch all
    poll_until(lambda: metric(mport, "echod_udp_received_datagrams_total") >= 20000, 5)
    wait_current(mport, 4, 10)
    time.sleep(0.3)
    base_rss, base_fds = d.rss_kb(), d.fd_count()
    m0 = scrape(mport)
    t0 = time.monotonic()
    high = udp_storm(up, 20000, 100000, mport)
    elapsed = time.monotonic() - t0
    poll_until(lambda: metric(mport, "echod_udp_received_datagrams_total") -
               value(m0, "echod_udp_received_datagrams_total") >= 100000, 10)
    time.sleep(0.2)        # counted as received just before it is judged: let it be
    m1 = scrape(mport)
    def delta(name):
        return value(m1, name) - value(m0, name)
    got = delta("echod_udp_received_datagrams_total")
    kdrops = delta("echod_udp_kernel_drops_total")
    ev = delta("echod_per_source_evictions_total")
    # a client port that happens to be echod's own UDP port is a loop: dropped before
    loops = value(m1, "echod_udp_dropped_datagrams_total", reason="loop_port") - \
        value(m0, "echod_udp_dropped_datagrams_total", reason="loop_port")
    used = value(m1, "echod_per_source_table_entries")
    tap.figure(f"[{be}] 100,000 UDP sources: seconds", elapsed)
    tap.ok(used == TABLE and high <= TABLE and value(m1, "echod_per_source_table_size") == TABLE,
           f"[{be}] 100,000 UDP sources on a {TABLE}-entry table: occupancy {used:.0f}, "
           f"highest seen {high:.0f}, never above the size")
    tap.ok(got + kdrops == 100000 and got >= 90000 and ev == got - loops,
           f"[{be}] every one of the {got - loops:.0f} new sources judged evicted one idle "
           f"entry ({ev:.0f} evictions; {loops:.0f} from echod's own port, "
           f"{kdrops:.0f} kernel drops)")
    # TCP sources too: connect, one echo, reset (no TIME_WAIT), 5,000 of them
    tev0 = value(m1, "echod_per_source_evictions_total")
    tcp_storm(d.port, 3, 5000)
    wait_current(mport, 4, 10)
    tev = metric(mport, "echod_per_source_evictions_total") - tev0
    tap.ok(tev == 5000, f"[{be}] 5,000 TCP sources: {tev:.0f} evictions, one each")
    more = open_n(holder, d.port, 3)
    tap.ok(not more and still_echo(held) == 4,
           f"[{be}] the source holding 4 connections (its limit) throughout was never "
           f"evicted: its 4 still echo, one more is refused ({len(more)} served)")
    close_all(more)
    fds = wait_fds(d, base_fds)
    rss = d.rss_kb()
    tap.ok(fds <= base_fds, f"[{be}] fds back to {base_fds} ({fds})")
    tap.rss_ok(rss <= base_rss + 1024, f"[{be}] RSS {rss} kB after the storm, "
               f"{base_rss} kB before (1 MiB allowed)")
    close_all(held)
    reload(d, datagram_rate=0, max_connections=8)
    wait_current(mport, 0)


def test_reload(be, d, mport):
    src = "127.0.0.61"
    reload(d, max_connections=0)
    conns = open_n(src, d.port, 6)
    ok1 = len(conns) == 6
    reload(d, max_connections=4)
    r1 = open_n(src, d.port, 2)
    conns.pop().close()
    conns.pop().close()                    # 4 open: still at the limit
    wait_current(mport, 4)
    r2 = open_n(src, d.port, 2)
    conns.pop().close()                    # 3 open: one place
    wait_current(mport, 3)
    r3 = open_n(src, d.port, 3)
    tap.ok(ok1 and not r1 and not r2 and len(r3) == 1,
           f"[{be}] 6 open without a limit; limit 4 by reload: refused at 6 and 4, one "
           f"served at 3 ({len(r1)}, {len(r2)}, {len(r3)} served)")
    conns += r3
    reload(d, max_connections=0)
    r4 = open_n(src, d.port, 3)
    conns += r4
    reload(d, max_connections=5)           # 7 open now
    r5 = open_n(src, d.port, 1)
    tap.ok(len(r4) == 3 and not r5 and still_echo(conns) == 7,
           f"[{be}] limit off: 3 more served; limit 5 with 7 open: refused; all 7 echo")
    # a backend switch hands every connection to new event loops: counts go along
    other = "io_uring" if be == "epoll" else "epoll"
    d.settings["backend"] = other
    ok = reload(d, r"reload: 7 connection\(s\) handed over to 2 " + other)
    r6 = open_n(src, d.port, 1)
    for _ in range(3):
        conns.pop().close()                # 4 open: one place under 5
    wait_current(mport, 4)
    r7 = open_n(src, d.port, 3)
    tap.ok(ok and not r6 and len(r7) == 1 and still_echo(conns) == 4,
           f"[{be}] backend switch to {other} with 7 open: still refused; 3 closed, "
           f"exactly 1 more served ({len(r7)})", diag=d.log_tail())
    conns += r7
    close_all(conns)
    d.settings["backend"] = be
    reload(d, max_connections=8)
    wait_current(mport, 0)


def test_fdstore(be):
    src, named = "127.0.0.71", "127.0.0.72"
    port, mport = free_port(), free_port()
    n = Notify()
    ps = {"max_connections": 3, "table_size": TABLE}
    metrics = {"enabled": True, "address": "127.0.0.1", "port": mport}
    try:
        with Daemon(be, port=port, core=[0, 1], args=["--fd-store"], shutdown_timeout=1,
                    per_source=ps, metrics=metrics, env={"NOTIFY_SOCKET": n.path}) as d:
            conns = open_n(src, port, 3)
            d.signal(signal.SIGTERM)
            d.wait(15)
            time.sleep(0.3)
        stored = [x for x in n.store if x[0].startswith("conn.")]
        # one of them written with another source in its name, as a PROXY
        # header's source would be
        hexsrc = (b"\0" * 10 + b"\xff\xff" + socket.inet_aton(named)).hex()
        names = [x[0] for x in n.store]
        k = names.index(stored[0][0])
        names[k] += "." + hexsrc
        fds = [x[1] for x in n.store]
        with Daemon(be, port=port, core=[0, 1], args=["--fd-store"], inherit_fds=fds,
                    per_source=ps, metrics=metrics,
                    argv_prefix=["sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh"],
                    env={"NOTIFY_SOCKET": n.path, "LISTEN_FDS": len(fds),
                         "LISTEN_FDNAMES": ":".join(names)}) as d2:
            for _, fd in n.store:
                os.close(fd)
            n.store.clear()
            resumed = d2.wait_log(r"fd store: resuming 3 connection", 5)
            wait_current(mport, 3)
            more_src = open_n(src, port, 3)     # 2 counted under src: one place
            more_named = open_n(named, port, 3)  # 1 counted under named: two places
            tap.ok(len(stored) == 3 and resumed and still_echo(conns) == 3 and
                   len(more_src) == 1 and len(more_named) == 2,
                   f"[{be}] fd-store restart: the 3 resumed connections are re-counted by "
                   f"source (2 by peer address, 1 by the source in its fd name): "
                   f"{len(more_src)} and {len(more_named)} more served at limit 3",
                   diag=f"{names}\n{d2.log_tail()}")
            close_all(more_src)
            close_all(more_named)
            close_all(conns)
    finally:
        n.close()


for be in backends():
    up, mport = free_port("127.0.0.1", socket.SOCK_DGRAM), free_port()
    with tap.guard(be), Daemon(be, core=[0, 1], max_connections=100000,
                               per_source={"max_connections": 8, "table_size": TABLE},
                               udp={"enabled": True, "port": up, "listen": ["127.0.0.1"],
                                    "loop_ports": []},
                               metrics={"enabled": True, "address": "127.0.0.1",
                                        "port": mport}) as d:
        test_concurrency(be, d, mport)
        test_conn_rate(be, d, mport)
        test_dgram_rate(be, d, mport, up)
        test_storm(be, d, mport, up)
        test_reload(be, d, mport)
        log = d.log()
        lines = [l for l in log.splitlines() if "127.0.0.21 port" in l and "exceeded" in l]
        tap.ok(len(lines) == 1 and "limit 8" in lines[0],
               f"[{be}] 192 refusals of one source logged once, naming the limit",
               diag="\n".join(lines[:5]))
    with tap.guard(be):
        test_fdstore(be)
tap.done()
