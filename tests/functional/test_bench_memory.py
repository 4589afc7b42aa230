#!/usr/bin/env python3
"""bench/memory.py (make bench-memory), small: 300 connections on each
backend, idle and active, give figures (RSS before and with them, per
connection; the kernel's per connection); a peer that cannot hold them (an
echod with max_connections = 100, which leaves the rest in the accept
queue) is shown as such, not measured; a connection count above what
RLIMIT_NOFILE allows is reported as not measurable here, not tried."""
import json
import os
import resource
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import ECHOD, ECHOD_SRCDIR, Tap, backends  # noqa: E402

MEMORY = os.path.join(ECHOD_SRCDIR, "bench", "memory.py")
ECHOBENCH = os.environ.get("ECHOBENCH") or os.path.join(os.path.dirname(ECHOD), "..",
                                                         "bench", "echod-bench")
N = 300

tap = Tap(timeout=300)
if len(os.sched_getaffinity(0)) < 2:
    tap.skip("memory.py", "needs two CPUs (server and client)")
    tap.done()
cpus = sorted(os.sched_getaffinity(0))[:2]
tmp = tempfile.mkdtemp(prefix="echod-memtest.")
small = os.path.join(tmp, "small.sh")
with open(small, "w") as f:
    f.write("#!/bin/sh\n"
            "printf 'port = %s;\\nlisten = \"127.0.0.1\";\\nmax_connections = 100;\\n"
            "metrics = { enabled = false; };\\n' \"$1\" > " + tmp + "/small-$1.conf\n"
            f"exec {ECHOD} -c {tmp}/small-$1.conf\n")
os.chmod(small, 0o755)
too_many = 1 << 21           # above any RLIMIT_NOFILE (nr_open is at most 2^20 by default)
out_json = os.path.join(tmp, "memory.json")
env = dict(os.environ, ECHOD=ECHOD, ECHOBENCH=ECHOBENCH, BENCH_BACKENDS=" ".join(backends()),
           BENCH_SERVERS=f"small={small} {{PORT}}", BENCH_MEM_CONNS=f"{N} {too_many}",
           BENCH_MEM_DURATION="0.5", BENCH_JSON=out_json,
           BENCH_SERVER_CPU=str(cpus[0]), BENCH_CLIENT_CPU=str(cpus[1]))
p = subprocess.run([sys.executable, MEMORY], env=env, capture_output=True, text=True,
                   timeout=240)
tap.ok(p.returncode == 0, f"memory.py exits 0 ({p.returncode})", diag=p.stderr[-2000:])
try:
    with open(out_json) as f:
        res = json.load(f)["results"]
except (OSError, ValueError) as e:
    res = []
    tap.diag(f"no results: {e}")

for be in backends():
    for mode in ("idle", "active"):
        r = next((x for x in res if x["server"] == be and x["mode"] == mode and
                  x["conns"] == N), None)
        good = (r is not None and not r["errors"] and not r.get("cannot_hold") and
                r.get("held", 0) >= N and 0 < r["base_rss_mib"] <= r["rss_mib"] and
                r["rss_per_conn"] >= 0 and
                all(isinstance(r[k], float) for k in ("kernel_slab_per_conn",
                                                      "kernel_tcp_per_conn")))
        tap.ok(good, f"[{be}] {N} {mode} connections held and measured: "
               + (f"RSS {r['base_rss_mib']:.1f} -> {r['rss_mib']:.1f} MiB, "
                  f"{r['rss_per_conn']:.0f} B/conn" if good else "no figures"),
               diag=f"{r}")
for mode in ("idle", "active"):
    r = next((x for x in res if x["server"] == "small" and x["mode"] == mode), None)
    tap.ok(r is not None and r.get("cannot_hold") and "rss_mib" not in r and
           r.get("held", N) < N,
           f"a server that accepts 100 of {N} ({mode}): 'cannot hold', not measured "
           f"({r and r.get('why')})", diag=f"{r}")
r = next((x for x in res if x["conns"] == too_many), None)
tap.ok(r is not None and r.get("not_measurable") and
       f"{too_many}" in p.stderr and "RLIMIT_NOFILE" in p.stderr,
       f"{too_many} connections: not measurable here (RLIMIT_NOFILE), not tried",
       diag=p.stderr[-1000:])
tap.ok("not measurable here" in p.stdout and "cannot hold" in p.stdout and
       all(f"{be:8s}" in p.stdout or be in p.stdout for be in backends()),
       "the table shows every server, 'cannot hold' and 'not measurable here'",
       diag=p.stdout[-2000:])
tap.done()
