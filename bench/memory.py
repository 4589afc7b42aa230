#!/usr/bin/env python3
"""bench/memory.py - memory at scale; `make bench-memory` runs it.

For each connection count N (BENCH_MEM_CONNS, default 10000 and 100000) and
each server (echod on each of BENCH_BACKENDS, and the TCP peers of
BENCH_SERVERS, as bench/run.py starts them: a fresh server confined to the
server CPU), two runs, each on a fresh server:

  idle    N connections from 127.0.0.1 .. 127.0.0.64 (echod-bench --sources
          64), held open with almost no traffic (open loop at 1 request/s
          in all: a handful of them send one request)
  active  the same N connections in closed loop, every one with a 1 KiB
          request in flight all the time

The figures, taken while the N connections are open: the server's VmRSS
over its VmRSS once ready, per connection; and the kernel's memory over the
same baseline, per connection, for both ends of each connection (client
and server sockets are both on this machine): the slab (/proc/meminfo
Slab: socket structures) and the TCP buffers (/proc/net/sockstat "TCP ...
mem", pages), sampled every 0.2 s, the largest value kept.  A server that
cannot hold N connections (refused, reset, a connect timeout, or fewer
than N descriptors held: connections left in the kernel's accept queue)
is shown as such, not measured.

Builds nothing; the paths come from the environment as for bench/run.py
(ECHOD, ECHOBENCH; the Makefile sets them).  It raises its own
RLIMIT_NOFILE as far as it may (to 2N + 4096 with CAP_SYS_RESOURCE, else to
the hard limit) so that the servers and the client it starts inherit room
for N connections; an N above what the limit allows (each side holds N
descriptors) is reported as not measurable here, with the limit.

Environment (besides bench/run.py's BENCH_BACKENDS, BENCH_SERVERS,
BENCH_SERVER_CPU, BENCH_CLIENT_CPU, BENCH_JSON):
  BENCH_MEM_CONNS        e.g. "10000 100000" (default)
  BENCH_MEM_DURATION     seconds each run holds its connections (default 3)
  BENCH_MEM_PAYLOAD      request size of the active runs (default 1024)

Exit status: 0; 1 if an echod run failed (a wrong byte, a server that would
not start or stop cleanly); 2 on a setup error.
"""

import json
import os
import resource
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (bench/run.py: the servers, the peers, the paths)

MEM_CONNS = [int(x) for x in run.env_list("BENCH_MEM_CONNS", ["10000", "100000"])]
MEM_DURATION = run.env_float("BENCH_MEM_DURATION", 3.0)
MEM_PAYLOAD = int(run.env_float("BENCH_MEM_PAYLOAD", 1024))
SOURCES = 64
JSON_OUT = run.env_path("BENCH_JSON", "/tmp/echod-bench-memory.json")


def kernel_mem():
    """(slab bytes, TCP buffer bytes) of the whole machine now."""
    slab = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Slab:"):
                slab = int(line.split()[1]) * 1024
    tcp = 0
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()
                tcp = int(fields[fields.index("mem") + 1]) * os.sysconf("SC_PAGE_SIZE")
    return slab, tcp


def vmrss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class Sampler(threading.Thread):
    """The largest kernel_mem() figures, and the largest number of
    descriptors the server held, while it runs."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.stop_ev = threading.Event()
        self.slab = self.tcp = self.fds = 0

    def run(self):
        while not self.stop_ev.is_set():
            slab, tcp = kernel_mem()
            self.slab, self.tcp = max(self.slab, slab), max(self.tcp, tcp)
            self.fds = max(self.fds, fd_count(self.pid))
            self.stop_ev.wait(0.2)

    def finish(self):
        self.stop_ev.set()
        self.join()


def client_argv(port, pid, conns, mode):
    argv = [run.ECHOBENCH, "-p", str(port), "-c", str(conns), "--sources", str(SOURCES),
            "--cpu", str(run.CLIENT_CPU), "--server-pid", str(pid), "--json",
            "--connect-timeout", "60", "-d", f"{MEM_DURATION:g}"]
    if mode == "idle":
        return argv + ["-l", "64", "-w", "0", "--rate", "1"]
    return argv + ["-l", str(MEM_PAYLOAD), "-w", "1"]


def measure(kind, conns, mode):
    """One run on a fresh server: a dict of figures, or of what failed."""
    res = {"server": run.display(kind.partition("+")[0] if not kind.startswith("peer:")
                                 else kind),
           "conns": conns, "mode": mode, "errors": []}
    # conns=1: echod's default buffer_count, whatever N (the figures are
    # those of the default configuration but max_connections)
    srv = run.Server(kind, 1, MEM_PAYLOAD)
    try:
        why = srv.wait_ready()
        if why:
            res["errors"].append(f"{why}: {srv.log_text()[-300:]}")
            return res
        time.sleep(0.3)
        base_rss = vmrss(srv.pid)
        base_slab, base_tcp = kernel_mem()
        base_fds = fd_count(srv.pid)
        sampler = Sampler(srv.pid)
        sampler.start()
        p = subprocess.Popen(client_argv(srv.port, srv.pid, conns, mode),
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        run._children[p.pid] = p
        try:
            out, err = p.communicate(timeout=MEM_DURATION + 180)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            err = "timed out"
        finally:
            run._children.pop(p.pid, None)
            sampler.finish()
        if p.returncode != 0:
            # exit 3: no measurement (refused, reset, connect timeout): a
            # server that cannot hold this many; anything else is a failure
            res["why"] = err.strip().splitlines()[-1] if err.strip() else ""
            if p.returncode == 3:
                res["cannot_hold"] = True
            else:
                res["errors"].append(f"echod-bench exit {p.returncode}: {res['why']}")
            return res
        # a server that stops accepting leaves the connections in the
        # kernel's accept queue, connected as far as the client knows:
        # holding N is owning N descriptors
        res["held"] = sampler.fds - base_fds
        if res["held"] < conns:
            res["cannot_hold"] = True
            res["why"] = f"held {res['held']} of {conns} connections"
            return res
        fig = json.loads(out)
        rss = fig.get("server_rss_kb")
        res.update({
            "req_s": fig.get("req_s"),
            "base_rss_mib": base_rss / 2**20,
            "rss_mib": rss / 1024 if rss else None,
            "rss_per_conn": (rss * 1024 - base_rss) / conns if rss else None,
            "kernel_slab_per_conn": (sampler.slab - base_slab) / conns,
            "kernel_tcp_per_conn": (sampler.tcp - base_tcp) / conns,
        })
        return res
    finally:
        if not srv.stop(timeout=30) and not srv.peer:
            res["errors"].append(f"did not exit 0 on SIGTERM: {srv.log_text()[-300:]}")
        srv.cleanup()


def main():
    if run.PEERS is None:
        run.log(f"memory.py: {run.PEERS_ERROR}")
        return 2
    for prog in (run.ECHOD, run.ECHOBENCH):
        if not os.access(prog, os.X_OK):
            run.log(f"memory.py: {prog} is missing: run `make bench-memory`")
            return 2
    want = 2 * max(MEM_CONNS) + 4096
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    servers = [b + "+scale" for b in run.BACKENDS] + \
        ["peer:" + n for (n, pr) in run.PEERS if pr == "tcp"]
    run.log(f"echod memory at scale: {len(servers)} server(s) x {MEM_CONNS} connections x "
            f"idle, active; {MEM_DURATION:g} s each; server on CPU {run.SERVER_CPU}, "
            f"client on CPU {run.CLIENT_CPU}")
    results, failed = [], False
    try:
        for conns in MEM_CONNS:
            if conns + 64 > limit:
                run.log(f"{conns} connections: not measurable here: RLIMIT_NOFILE is {limit} "
                        f"(hard), below {conns + 64} descriptors per process, and raising "
                        "the hard limit needs CAP_SYS_RESOURCE")
                results += [{"server": "*", "conns": conns, "mode": "-", "errors": [],
                             "not_measurable": f"RLIMIT_NOFILE {limit}"}]
                continue
            for kind in servers:
                for mode in ("idle", "active"):
                    r = measure(kind, conns, mode)
                    results.append(r)
                    if r["errors"]:
                        failed = failed or not kind.startswith("peer:")
                    run.log(f"{r['server']:16s} c={conns:<6d} {mode:6s} "
                            + ("cannot hold: " + r.get("why", "") if r.get("cannot_hold")
                               else "FAILED: " + "; ".join(r["errors"]) if r["errors"]
                               else f"RSS {r['rss_mib']:.1f} MiB, {r['rss_per_conn']:,.0f} B/conn; "
                               f"kernel slab {r['kernel_slab_per_conn']:,.0f} + TCP "
                               f"{r['kernel_tcp_per_conn']:,.0f} B/conn"))
    except KeyboardInterrupt:
        failed = True
    finally:
        run.kill_children()
    with open(JSON_OUT, "w") as f:
        json.dump({"conns": MEM_CONNS, "duration_s": MEM_DURATION, "payload": MEM_PAYLOAD,
                   "results": results}, f, indent=1)
    print()
    rows = []
    for r in results:
        if r.get("not_measurable"):
            rows.append(("(all)", str(r["conns"]), "-", "-", "-", "-", "-", "-",
                         "not measurable here: " + r["not_measurable"]))
            continue
        if r.get("cannot_hold") or r["errors"]:
            note = "cannot hold" if r.get("cannot_hold") else "FAILED"
            rows.append((r["server"], str(r["conns"]), r["mode"], "-", "-", "-", "-", "-", note))
            continue
        rows.append((r["server"], str(r["conns"]), r["mode"], f"{r['base_rss_mib']:.1f}",
                     f"{r['rss_mib']:.1f}", run.fmt_num(r["rss_per_conn"]),
                     run.fmt_num(r["kernel_slab_per_conn"]), run.fmt_num(r["kernel_tcp_per_conn"]), ""))
    run.print_rows(("server", "conns", "mode", "RSS0 MiB", "RSS MiB", "B/conn", "slab B/conn",
                    "tcp B/conn", "note"), rows, {0, 2, 8}, [f"{r['conns']}" for r in results])
    print()
    print("RSS0: the server's VmRSS once ready; RSS: with the connections open (at the end of "
          "the window); B/conn: (RSS - RSS0) / conns.  slab, tcp: the kernel's slab and TCP "
          "buffer memory over the baseline, per connection, both ends (client and server "
          "sockets).  idle: open, almost no traffic; active: a 1 KiB request in flight on "
          "every connection.  See bench/README.")
    print(f"raw results: {JSON_OUT}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        run.kill_children()
