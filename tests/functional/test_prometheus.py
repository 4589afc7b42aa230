#!/usr/bin/env python3
"""A real Prometheus server (Debian package prometheus) scrapes echod:
the target is reported up, and a counter read back through Prometheus's
HTTP API equals what the test client sent."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (MiB, Daemon, Tap, _child_setup, _register, backends,  # noqa: E402
                       client, client_ok, free_port, poll_until)

tap = Tap(timeout=90 * len(backends()))
prom = shutil.which("prometheus")


def query(port, q):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            data = json.load(r)
    except OSError:
        return None
    res = data.get("data", {}).get("result", [])
    return float(res[0]["value"][1]) if res else None


for be in backends():
    if not prom:
        tap.skip(f"[{be}] Prometheus scrapes echod", "prometheus not installed")
        continue
    mport, pport = free_port(), free_port()
    tmp = tempfile.mkdtemp(prefix="echodtest.prom.")
    conf = os.path.join(tmp, "prometheus.yml")
    with open(conf, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "scrape_configs:\n  - job_name: echod\n    static_configs:\n"
                f"      - targets: ['127.0.0.1:{mport}']\n")
    p = None
    try:
        with tap.guard(be), Daemon(be, metrics={"enabled": True, "address": "127.0.0.1",
                                                "port": mport}) as d:
            log = open(os.path.join(tmp, "prometheus.log"), "wb")
            p = _register(subprocess.Popen(
                [prom, f"--config.file={conf}", f"--storage.tsdb.path={tmp}/data",
                 f"--web.listen-address=127.0.0.1:{pport}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_child_setup()))
            up = poll_until(lambda: query(pport, 'up{job="echod"}') == 1.0, 30)
            with open(os.path.join(tmp, "prometheus.log"), errors="replace") as f:
                plog = f.read()[-2000:]
            tap.ok(up, f"[{be}] Prometheus reports the echod target up", diag=plog)
            res = client(d.port, "-c", 3, "-n", "1M", "-s", 91)
            client_ok(tap, f"[{be}] 3 x 1 MiB echoed", res, d, total=3 * MiB)
            q = 'sum(echod_received_bytes_total{job="echod"})'
            got = poll_until(lambda: query(pport, q) == 3 * MiB, 15)
            tap.ok(got, f"[{be}] {q} = {3 * MiB} through Prometheus's API",
                   diag=f"last value {query(pport, q)}")
            b = query(pport, f'echod_backend_info{{job="echod",backend="{be}"}}')
            tap.ok(b == 1.0, f"[{be}] echod_backend_info{{backend=\"{be}\"}} = 1 in Prometheus")
    finally:
        if p and p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
tap.done()
