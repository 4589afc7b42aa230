#!/usr/bin/env python3
"""The shipped alerting rules and dashboard in a real Prometheus server
(Debian package prometheus) scraping a live echod (UDP on): the rules
load, every one healthy (/api/v1/rules); an idle, healthy echod fires
none; a reload of a broken configuration file fires EchodReloadFailed
with its labels, and a good reload ends it.  The rules are a copy of
contrib/prometheus/echod-alerts.yml with every for: cut to 1s (nothing
else changed), scraped and evaluated every second.  Every query of the
dashboard, its variables replaced, returns at least one series.  One
backend (the first of ECHOD_BACKENDS): the rules read the same families on
each (test_alert_rules checks that)."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import Daemon, Tap, _child_setup, _register, backends, free_port, poll_until  # noqa: E402
from promutil import DASHBOARD, RULES  # noqa: E402

tap = Tap(timeout=120)
prom = shutil.which("prometheus")


def api(port, path, **params):
    """The data of a Prometheus API answer, or None."""
    url = f"http://127.0.0.1:{port}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            data = json.load(r)
    except (OSError, ValueError):
        return None
    return data.get("data") if data.get("status") == "success" else None


def alerts(port, state="firing"):
    data = api(port, "alerts") or {}
    return [a for a in data.get("alerts", []) if a.get("state") == state]


def dashboard_queries(job, instance):
    with open(DASHBOARD) as f:
        dash = json.load(f)
    values = {"job": job, "instance": instance, "__rate_interval": "1m"}
    out = []

    def walk(panels):
        for p in panels:
            yield p
            yield from walk(p.get("panels", []))
    for p in walk(dash["panels"]):
        for t in p.get("targets", []):
            e = re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), t["expr"])
            out.append((f"{p['title']}/{t['refId']}", e))
    return out


be = backends()[0]
if not prom:
    tap.skip("the alerting rules in a real Prometheus", "prometheus not installed")
    tap.done()

tmp = tempfile.mkdtemp(prefix="echodtest.alerts.")
mport, pport = free_port(), free_port()
instance = f"127.0.0.1:{mport}"
with open(RULES) as f:
    rules = re.sub(r"^(\s+)for: \d+[smh]$", r"\1for: 1s", f.read(), flags=re.M)
with open(os.path.join(tmp, "echod-alerts.yml"), "w") as f:
    f.write(rules)
conf = os.path.join(tmp, "prometheus.yml")
with open(conf, "w") as f:
    f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "rule_files:\n  - echod-alerts.yml\n"
            "scrape_configs:\n  - job_name: echod\n    static_configs:\n"
            f"      - targets: ['{instance}']\n")
p = None
try:
    udp = {"enabled": True, "port": free_port(kind=socket.SOCK_DGRAM), "listen": ["127.0.0.1"]}
    with tap.guard(be), Daemon(be, udp=udp, metrics={"enabled": True, "address": "127.0.0.1",
                                                     "port": mport}) as d:
        log = open(os.path.join(tmp, "prometheus.log"), "wb")
        p = _register(subprocess.Popen(
            [prom, f"--config.file={conf}", f"--storage.tsdb.path={tmp}/data",
             f"--web.listen-address=127.0.0.1:{pport}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=_child_setup()))

        def plog():
            with open(os.path.join(tmp, "prometheus.log"), errors="replace") as f:
                return f.read()[-3000:]

        def evaluated():
            """The rules, once each has been evaluated (health no longer unknown)."""
            data = api(pport, "rules") or {}
            rs = [r for g in data.get("groups", []) for r in g.get("rules", [])]
            return rs if rs and all(r.get("health") != "unknown" for r in rs) else None
        rs = poll_until(evaluated, 30, 0.2) or []
        bad = [(r.get("name"), r.get("health"), r.get("lastError")) for r in rs
               if r.get("health") != "ok"]
        tap.ok(len(rs) == 9 and not bad,
               f"[{be}] Prometheus loads the {len(rs)} rules, every one evaluated, health ok",
               diag=f"{bad}\n{plog()}")
        up = poll_until(lambda: (api(pport, "query", query=f'up{{instance="{instance}"}}') or
                                 {}).get("result"), 20, 0.2)
        tap.ok(up and up[0]["value"][1] == "1", f"[{be}] the echod target is up", diag=plog())

        # a few evaluations of a healthy, idle echod: nothing fires, nothing pends
        time.sleep(3)
        quiet = alerts(pport, "firing") + alerts(pport, "pending")
        tap.ok(not quiet, f"[{be}] an idle, healthy echod fires no alert",
               diag=json.dumps(quiet, indent=1))

        # every query of the dashboard answers with data
        empty = []
        for name, q in dashboard_queries("echod", instance):
            res = api(pport, "query", query=q)
            if not res or not res.get("result"):
                empty.append(f"{name}: {q} -> {res}")
        tap.ok(not empty, f"[{be}] every query of the dashboard returns a series from echod",
               diag="\n".join(empty))

        # a broken file on reload: refused, and the alert fires
        mark = d.log_mark()
        d.write_raw_config(d.config() + "this is not = libconfig\n")
        d.signal(signal.SIGHUP)
        refused = d.wait_log(r"configuration file .* has errors", 10, since=mark)
        fired = poll_until(lambda: [a for a in alerts(pport)
                                    if a["labels"].get("alertname") == "EchodReloadFailed"], 20, 0.2)
        want = {"alertname": "EchodReloadFailed", "severity": "warning", "job": "echod",
                "instance": instance}
        labels = fired[0]["labels"] if fired else {}
        tap.ok(refused and fired and labels == want and
               instance in fired[0]["annotations"].get("summary", ""),
               f"[{be}] a broken configuration reloaded fires EchodReloadFailed "
               f"{{instance=\"{instance}\", severity=\"warning\"}}",
               diag=f"refused: {bool(refused)}\nalerts: {json.dumps(alerts(pport), indent=1)}"
                    f"\n{d.log_tail(10)}")

        # the file fixed and reloaded: it ends
        d.rewrite_config()
        d.signal(signal.SIGHUP)
        gone = poll_until(lambda: not [a for a in alerts(pport) + alerts(pport, "pending")
                                       if a["labels"].get("alertname") == "EchodReloadFailed"],
                          20, 0.2)
        tap.ok(gone, f"[{be}] the file fixed and reloaded: EchodReloadFailed ends",
               diag=json.dumps(alerts(pport), indent=1))
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
