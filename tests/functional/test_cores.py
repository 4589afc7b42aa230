#!/usr/bin/env python3
"""CPU pinning: core = N pins the event loop's thread to CPU N; a list
runs one pinned event loop per CPU, all serving; a core the machine does
not have is a clear start-up error."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import subprocess
from echodtest import ECHOCLIENT, Daemon, Tap, backends, client, client_ok, free_port  # noqa: E402
from metricsutil import scrape, value  # noqa: E402


def worker_affinity(pid):
    """{thread name: Cpus_allowed_list} for the daemon's echod-w* threads."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                cpus = re.search(r"^Cpus_allowed_list:\s*(\S+)", f.read(), re.M).group(1)
        except (FileNotFoundError, AttributeError):
            continue
        if name.startswith("echod-w"):
            out[name] = cpus
    return out


tap = Tap()
ncpu = len(os.sched_getaffinity(0))
last = max(os.sched_getaffinity(0))
for be in backends():
    with tap.guard(be), Daemon(be, core=last) as d:
        aff = worker_affinity(d.pid)
        tap.ok(aff == {"echod-w0": str(last)}, f"[{be}] core = {last}: the event loop runs on CPU {last}",
               diag=f"{aff}")
        res = client(d.port, "-c", 20, "-n", "1M", "-s", 41)
        client_ok(tap, f"[{be}] the pinned event loop serves", res, d, total=20 << 20)

    if ncpu < 2:
        tap.skip(f"[{be}] one event loop per core", "fewer than 2 CPUs")
    else:
        cores = sorted(os.sched_getaffinity(0))[:2]
        with tap.guard(be), Daemon(be, core=cores) as d:
            aff = worker_affinity(d.pid)
            tap.ok(aff == {"echod-w0": str(cores[0]), "echod-w1": str(cores[1])},
                   f"[{be}] core = {cores}: two event loops, each on its CPU", diag=f"{aff}")
            tap.ok(re.search(r"ready: backend \S+, 2 workers", d.log()),
                   f"[{be}] two workers announced", diag=d.log_tail())
            res = client(d.port, "-c", 200, "--min", "1", "--max", "256k", "-s", 42)
            client_ok(tap, f"[{be}] 200 connections served by two event loops", res, d)
        # SO_INCOMING_CPU: a connection goes to the worker pinned to the CPU
        # it arrives on (on loopback, the client's CPU), and stays there
        mport = free_port()
        with tap.guard(be), Daemon(be, core=cores,
                                   metrics={"enabled": True, "address": "127.0.0.1",
                                            "port": mport}) as d:
            procs = [subprocess.Popen(["taskset", "-c", str(cpu), ECHOCLIENT, "-p", str(d.port),
                                       "-c", str(k), "-n", "256k", "-s", str(43 + i)],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                     for i, (cpu, k) in enumerate(((cores[0], 30), (cores[1], 70)))]
            outs = [p.communicate(timeout=60)[0] for p in procs]
            s = scrape(mport)
            per = [value(s, "echod_connections_accepted_total", worker=i) for i in (0, 1)]
            byt = [value(s, "echod_received_bytes_total", worker=i) for i in (0, 1)]
            tap.ok(all(p.returncode == 0 for p in procs), f"[{be}] clients on CPU {cores[0]} and "
                   f"{cores[1]} served byte-exact", diag="\n".join(outs))
            tap.ok(per == [30, 70] and byt == [30 * 262144, 70 * 262144],
                   f"[{be}] connections spread by CPU: worker 0 took the 30 from CPU {cores[0]}, "
                   f"worker 1 the 70 from CPU {cores[1]} (accepted {per}, bytes {byt})")

    # a core the machine does not have: refused at start, clearly
    nconf = os.sysconf("SC_NPROCESSORS_CONF")
    with tap.guard(be):
        d = Daemon(be, core=nconf, wait_ready=False)
        try:
            d.start()
            rc = d.wait(10)
            tap.ok(rc == 1 and re.search(rf":\d+: core {nconf} does not exist \(this machine has "
                                         rf"{nconf} CPUs\)", d.log()),
                   f"[{be}] core {nconf} on a {nconf}-CPU machine: start-up refused, FILE:LINE",
                   diag=f"rc={rc}\n{d.log_tail()}")
        finally:
            d.cleanup()
tap.done()
