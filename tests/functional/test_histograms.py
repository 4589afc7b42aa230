#!/usr/bin/env python3
"""The connection histograms on each backend: echod_connection_duration_seconds,
echod_connection_bytes and echod_connection_rtt_seconds, observed when a
connection closes.  Real loopback connections with known byte counts
(none, 100, 5000 bytes echoed) and durations (at once, held open 0.3 s)
land in the buckets their figures name, exactly; the byte sum is exact
and equals echod_sent_bytes_total; with two event loops, connections
coming from each CPU in turn, each worker's _count of duration and bytes
equals its echod_connections_closed_total; the RTT histogram has a
sample per connection that exchanged bytes, all in the loopback's
buckets; the buckets are cumulative and end in +Inf = _count; README.md
lists each family's bounds, and echod(8) their range, as echod exports
them.  Through a restart by
the fd store (this test playing systemd's part), as through a reload
that hands the connections to new event loops, a connection keeps its
start and the bytes echoed: the new echod observes its whole life (0.6 s
open, 2000 + 3000 bytes), and its stored name carries them
(conn.ID.FLAGS.sSTART.bBYTES)."""
import os
import re
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (ECHOD_SRCDIR, Daemon, Notify, Tap, backends, free_port,  # noqa: E402
                       poll_until)
from metricsutil import request, scrape, value  # noqa: E402

DUR, BYTES, RTT = ("echod_connection_duration_seconds", "echod_connection_bytes",
                   "echod_connection_rtt_seconds")


def echo(port, nbytes, hold=0.0, cpu=None):
    """A connection that sends nbytes, reads every one back, stays open
    hold seconds, then closes; the bytes come back intact or it raises.
    cpu: connect from that CPU (a loopback connection reaches the event
    loop of the CPU it came from)."""
    allowed = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
    finally:
        os.sched_setaffinity(0, allowed)
    try:
        data = bytes((i * 7 + 3) % 251 for i in range(nbytes))
        if data:
            s.sendall(data)
        got = b""
        while len(got) < nbytes:
            d = s.recv(65536)
            if not d:
                raise RuntimeError(f"EOF after {len(got)} of {nbytes} bytes")
            got += d
        if got != data:
            raise RuntimeError("echo differs")
        time.sleep(hold)
    finally:
        s.close()


def buckets(series, name, **labels):
    """{le (float): cumulative count}, summed over the series matching labels."""
    out = {}
    want = set((k, str(v)) for k, v in labels.items())
    for (n, ls), v in series.items():
        if n != name + "_bucket" or not want <= set(ls):
            continue
        le = float(dict(ls)["le"])
        out[le] = out.get(le, 0) + v
    return out


def in_bucket(b, lo, hi):
    """Observations in (lo, hi] from cumulative buckets b."""
    return b.get(hi, 0) - (b.get(lo, 0) if lo is not None else 0)


def delta(after, before):
    return {k: v - before.get(k, 0) for k, v in after.items()}


def workers(series):
    return sorted({dict(ls)["worker"] for (n, ls) in series
                   if n == "echod_connections_closed_total"})


def man_ranges():
    """{family: (first le, last le)} from echod(8): "buckets A to B"."""
    with open(os.path.join(ECHOD_SRCDIR, "man", "echod.8.in")) as f:
        text = f.read()
    out = {}
    for m in re.finditer(r"^\.B (echod_connection_\w+)\{worker\}\n(.*?)(?=^\.TP)", text,
                         re.M | re.S):
        r = re.search(r"buckets ([0-9.]+) to ([0-9.]+)", m.group(2))
        if r:
            out[m.group(1)] = (r.group(1), r.group(2))
    return out


def readme_bounds():
    """{family: [le strings]} from README.md's list of bucket bounds."""
    with open(os.path.join(ECHOD_SRCDIR, "README.md")) as f:
        text = f.read()
    return {m.group(1): [x.strip() for x in m.group(2).split(",")]
            for m in re.finditer(r"^- `(echod_connection_\w+)`: le = ([0-9., ]+)$", text, re.M)}


tap = Tap(timeout=120 * len(backends()))
for be in backends():
    mport = free_port()
    # two event loops where two CPUs are allowed: the families per worker
    cores = sorted(os.sched_getaffinity(0))[:2]
    with tap.guard(be), Daemon(be, core=cores, metrics={"enabled": True, "address": "127.0.0.1",
                                                        "port": mport}) as d:
        st, _, body = request(mport)
        text = body.decode()
        exported = {}
        for fam in (DUR, BYTES, RTT):
            exported[fam] = re.findall(r'^%s_bucket\{worker="0",le="([^"]+)"\}' % fam, text, re.M)
        tap.ok(st == 200 and all(f"# TYPE {f} histogram" in text and f"# HELP {f} " in text
                                 for f in (DUR, BYTES, RTT)) and
               all(exported[f] and exported[f][-1] == "+Inf" for f in exported),
               f"[{be}] the three families exported as histograms, per worker, from start-up",
               diag=text[:400])
        doc = readme_bounds()
        tap.ok(all(doc.get(f) == exported[f][:-1] for f in exported),
               f"[{be}] README.md lists each family's bucket bounds as echod exports them",
               diag=f"README {doc}\nexported {exported}")
        man = man_ranges()
        tap.ok(all(man.get(f) == (exported[f][0], exported[f][-2]) for f in exported),
               f"[{be}] echod(8) gives each family's first and last bound as echod exports them",
               diag=f"echod(8) {man}")

        before = scrape(mport)
        # known connections: 2 that echo nothing, 5 of 100 bytes, 3 of 5000
        # bytes held open 0.3 s after their echo
        # from each CPU in turn: both event loops observe
        for i in range(2):
            echo(d.port, 0, cpu=cores[i % len(cores)])
        for i in range(5):
            echo(d.port, 100, cpu=cores[i % len(cores)])
        for i in range(3):
            echo(d.port, 5000, hold=0.3, cpu=cores[i % len(cores)])
        closed0 = value(before, "echod_connections_closed_total")
        poll_until(lambda: value(scrape(mport), "echod_connections_closed_total") >= closed0 + 10,
                   10)
        after = scrape(mport)
        closed = value(after, "echod_connections_closed_total") - closed0
        bd = delta(buckets(after, BYTES), buckets(before, BYTES))
        dd = delta(buckets(after, DUR), buckets(before, DUR))
        rd = delta(buckets(after, RTT), buckets(before, RTT))
        tap.ok(closed == 10, f"[{be}] 10 connections closed", diag=d.log_tail())
        tap.ok(in_bucket(bd, None, 0) == 2 and in_bucket(bd, 64, 256) == 5 and
               in_bucket(bd, 4096, 16384) == 3 and bd[float("inf")] == 10,
               f"[{be}] bytes: 2 in le=0, 5 of 100 in (64, 256], 3 of 5000 in (4096, 16384]",
               diag=str(sorted(bd.items())))
        bsum = value(after, BYTES + "_sum") - value(before, BYTES + "_sum")
        tap.ok(bsum == 2 * 0 + 5 * 100 + 3 * 5000 and
               value(after, BYTES + "_sum") == value(after, "echod_sent_bytes_total"),
               f"[{be}] bytes: _sum {bsum:.0f} exactly, and equals echod_sent_bytes_total "
               f"(every connection closed)")
        tap.ok(in_bucket(dd, 0.25, 0.5) == 3 and dd[0.25] == 7 and dd[float("inf")] == 10,
               f"[{be}] duration: the 3 held 0.3 s in (0.25, 0.5], the 7 others within 0.25 s",
               diag=str(sorted(dd.items())))
        dsum = value(after, DUR + "_sum") - value(before, DUR + "_sum")
        tap.ok(0.9 <= dsum < 1.5 + 7 * 0.25, f"[{be}] duration: _sum {dsum:.3f} s "
               f"(3 x 0.3 s and the short ones)")
        tap.figure(f"{be}_duration_sum_s", f"{dsum:.4f}")
        rcount = rd[float("inf")]
        rsum = value(after, RTT + "_sum") - value(before, RTT + "_sum")
        tap.ok(8 <= rcount <= 10 and rd.get(0.01, 0) == rcount and 0 < rsum < 0.01 * rcount,
               f"[{be}] rtt: {rcount:.0f} samples (every connection that exchanged bytes; "
               f"at most one per close), all within 10 ms on loopback, mean "
               f"{rsum / max(rcount, 1) * 1e6:.0f} us", diag=str(sorted(rd.items())))
        tap.figure(f"{be}_rtt_mean_us", f"{rsum / max(rcount, 1) * 1e6:.1f}")
        per = [(w, value(after, DUR + "_count", worker=w), value(after, BYTES + "_count", worker=w),
                value(after, RTT + "_count", worker=w),
                value(after, "echod_connections_closed_total", worker=w)) for w in workers(after)]
        tap.ok(len(per) == len(cores) and all(c > 0 for *_, c in per) and
               all(dc == bc == c and rc <= c for _, dc, bc, rc, c in per),
               f"[{be}] each of the {len(per)} workers closed some: duration and bytes _count "
               f"= its echod_connections_closed_total, rtt _count <= it", diag=str(per))
        tap.diag(f"per worker (worker, duration, bytes, rtt _count, closed): {per}")
        mono = all(all(a <= b for a, b in zip(v, v[1:]))
                   for f in (DUR, BYTES, RTT) for w in workers(after)
                   for v in [[c for _, c in sorted(buckets(after, f, worker=w).items())]])
        tap.ok(mono and all(buckets(after, f, worker=w)[float("inf")] ==
                            value(after, f + "_count", worker=w)
                            for f in (DUR, BYTES, RTT) for w in workers(after)),
               f"[{be}] buckets cumulative, le=\"+Inf\" = _count, each family and worker")
        st, _, body = request(mport)
        tap.diag("\n".join(ln for ln in body.decode().splitlines()
                           if ln.startswith(RTT) or
                           ln.startswith("echod_connections_closed_total")))

    # --- through a reload that hands the connections to new event loops
    mport = free_port()
    with tap.guard(be), Daemon(be, metrics={"enabled": True, "address": "127.0.0.1",
                                            "port": mport}) as d:
        echo(d.port, 100)                    # observed by the workers the reload replaces
        s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        try:
            for part in (1000, 2000):
                data = bytes(i % 239 for i in range(part))
                s.sendall(data)
                got = b""
                while len(got) < part:
                    got += s.recv(65536)
                time.sleep(0.3)
                if part == 1000:
                    mark = d.log_mark()
                    d.rewrite_config(buffer_count=512)
                    d.signal(signal.SIGHUP)
                    applied = d.wait_log(r"reload: configuration applied", 15, since=mark)
        finally:
            s.close()
        poll_until(lambda: value(scrape(mport), "echod_connections_closed_total") >= 2, 10)
        m = scrape(mport)
        bd, dd = buckets(m, BYTES), buckets(m, DUR)
        tap.ok(applied and got == data and value(m, "echod_connections_closed_total") == 2 and
               in_bucket(bd, 64, 256) == 1 and in_bucket(bd, 1024, 4096) == 1 and
               value(m, BYTES + "_sum") == 3100 and dd.get(0.5, 0) == 1 and
               dd[float("inf")] == 2 and value(m, DUR + "_sum") >= 0.6,
               f"[{be}] through a reload's hand-over to new event loops: the counts before it "
               f"kept, the connection handed over observed whole (1000 + 2000 bytes, "
               f"{value(m, DUR + '_sum'):.3f} s in all)",
               diag=f"{sorted(bd.items())}\n{sorted(dd.items())}\n{d.log_tail()}")

    # --- through a restart by the fd store
    n = Notify()
    port, mport = free_port(), free_port()
    metrics = {"enabled": True, "address": "127.0.0.1", "port": mport}
    try:
        payload1 = bytes(i % 253 for i in range(2000))
        payload2 = bytes(i % 241 for i in range(3000))
        s = None
        with tap.guard(be), Daemon(be, port=port, args=["--fd-store"], metrics=metrics,
                                   env={"NOTIFY_SOCKET": n.path}) as d:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(payload1)
            got = b""
            while len(got) < len(payload1):
                got += s.recv(65536)
            time.sleep(0.6)
            d.signal(signal.SIGTERM)
            rc = d.wait(15)
            time.sleep(0.2)
            names = [x[0] for x in n.store if x[0].startswith("conn.")]
            tap.ok(rc == 0 and got == payload1 and len(names) == 1 and
                   re.fullmatch(r"conn\.\d+\.\d+\.s\d+\.b2000", names[0]),
                   f"[{be}] fd store: the connection stored as conn.ID.FLAGS.sSTART.bBYTES "
                   f"({names[0] if names else None})", diag=f"{n.store}\n{d.log_tail()}")
        fds = [x[1] for x in n.store]
        with tap.guard(be), Daemon(be, port=port, args=["--fd-store"], metrics=metrics,
                                   inherit_fds=fds,
                                   argv_prefix=["sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh"],
                                   env={"NOTIFY_SOCKET": n.path, "LISTEN_FDS": len(fds),
                                        "LISTEN_FDNAMES": ":".join(x[0] for x in n.store)}) as d2:
            for _, fd in n.store:
                os.close(fd)
            n.store.clear()
            s.sendall(payload2)
            got = b""
            while len(got) < len(payload2):
                got += s.recv(65536)
            s.close()
            s = None
            poll_until(lambda: value(scrape(mport), "echod_connections_closed_total") >= 1, 10)
            m = scrape(mport)
            bd, dd = buckets(m, BYTES), buckets(m, DUR)
            dsum = value(m, DUR + "_sum")
            tap.ok(got == payload2 and value(m, "echod_connections_closed_total") == 1 and
                   in_bucket(bd, 4096, 16384) == 1 and value(m, BYTES + "_sum") == 5000,
                   f"[{be}] after the restart: the connection's 2000 + 3000 bytes echoed "
                   f"observed as 5000", diag=f"{sorted(bd.items())}\n{d2.log_tail()}")
            tap.ok(dd.get(0.5, 0) == 0 and dd[float("inf")] == 1 and 0.6 <= dsum < 10,
                   f"[{be}] after the restart: its duration from its first accept "
                   f"({dsum:.3f} s, not the time since the restart)",
                   diag=str(sorted(dd.items())))
    finally:
        if s is not None:
            s.close()
        n.close()
tap.done()
