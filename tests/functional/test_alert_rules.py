#!/usr/bin/env python3
"""contrib/prometheus/echod-alerts.yml, the alerting rules echod ships:
promtool check rules accepts them; every alert has for:, a severity and
annotations naming the instance; promtool test rules passes
echod-alerts.test.yml, which fires every alert and also holds a history
that must not fire it; every metric a rule reads is one a live echod
exports (on each backend, UDP on).  Skipped, with the reason, only when
promtool is not installed (Debian package prometheus)."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import Tap, backends  # noqa: E402
from promutil import (PROMTOOL, RULES, RULES_TEST, exported_families,  # noqa: E402
                      metric_names, promtool, rule_exprs, unknown_names)

ALERTS = ["EchodDown", "EchodReloadFailed", "EchodBufferExhaustion", "EchodCQOverflow",
          "EchodAcceptErrors", "EchodConnectionsNearLimit", "EchodDenialsSurging",
          "EchodUDPDropsSurging", "EchodUDPKernelDrops"]

tap = Tap()
with open(RULES) as f:
    rules_text = f.read()
exprs = rule_exprs(rules_text)

# the reading of expressions this test relies on, shown to work
cases = [
    ('sum without (worker) (rate(echod_cq_overflow_total{job="echod"}[5m])) > 0',
     {"echod_cq_overflow_total"}),
    ("sum by (instance) (a_total) / on (instance) group_left (version) b offset 5m > 1e3",
     {"a_total", "b"}),
    ('up{job=~"echod|x"} == 0 and ignoring (worker) c:rec > bool 0.5', {"up", "c:rec"}),
]
got = [(metric_names(e), want) for e, want in cases]
flagged = unknown_names("rate(echod_buffer_exhausted_total[5m]) + up + scrape_duration_seconds",
                        {"echod_buffer_exhaustion_total"})
tap.ok(all(g == w for g, w in got) and flagged == ["echod_buffer_exhausted_total"],
       "the metric names of an expression are read right; an unknown one is flagged",
       diag=f"{got}\nflagged: {flagged}")

if not PROMTOOL:
    for what in ("promtool check rules", "promtool test rules"):
        tap.skip(f"{what} contrib/prometheus", "promtool not installed (Debian package prometheus)")
else:
    rc, out = promtool("check", "rules", RULES)
    m = re.search(r"SUCCESS: (\d+) rules found", out)
    tap.ok(rc == 0 and m and int(m.group(1)) == len(exprs),
           f"promtool check rules echod-alerts.yml: {len(exprs)} rules, each expression read here",
           diag=out)
    # promtool reads rule_files relative to the test file's directory
    rc, out = promtool("test", "rules", os.path.basename(RULES_TEST), timeout=60,
                       cwd=os.path.dirname(RULES_TEST))
    tap.diag(out)
    tap.ok(rc == 0 and "SUCCESS" in out, "promtool test rules echod-alerts.test.yml", diag=out)

names = [n for n, _ in exprs]
tap.ok(sorted(names) == sorted(ALERTS),
       f"the rules are the {len(ALERTS)} alerts, each once", diag=f"found {names}")

# each alert: for:, severity, summary and description naming the instance
blocks = re.split(r"^\s*- alert: ", rules_text, flags=re.M)[1:]
for b in blocks:
    name = b.split()[0]
    problems = []
    if not re.search(r"^\s+for: \d+[smh]$", b, re.M):
        problems.append("no for:")
    if not re.search(r"^\s+severity: (critical|warning)$", b, re.M):
        problems.append("no severity: critical|warning")
    for ann in ("summary", "description"):
        a = re.search(rf"^(\s+){ann}: (.*(?:\n\1  .*)*)", b, re.M)
        if not a or "{{ $labels.instance }}" not in a.group(2):
            problems.append(f"{ann} does not name the instance")
    tap.ok(not problems, f"{name}: for:, severity, summary and description name the instance",
           diag="; ".join(problems))

# each alert: tested firing (exp_alerts with an alert) and not firing (exp_alerts: [])
with open(RULES_TEST) as f:
    test_text = f.read()
for name in ALERTS:
    evals = re.findall(rf"alertname: {name}\n\s+exp_alerts:( \[\])?", test_text)
    fires = sum(1 for e in evals if not e)
    quiet = sum(1 for e in evals if e)
    tap.ok(fires >= 1 and quiet >= 1,
           f"{name}: echod-alerts.test.yml fires it ({fires}) and holds it quiet ({quiet})")

# every metric the rules read is one echod exports
for be in backends():
    with tap.guard(be):
        fams, _ = exported_families(be)
        bad = {n: unknown_names(e, fams) for n, e in exprs}
        bad = {n: b for n, b in bad.items() if b}
        read = sorted(set().union(*(metric_names(e) for _, e in exprs)))
        tap.ok(len(fams) > 20 and not bad,
               f"[{be}] the rules read only families a live echod exports ({len(read)} names, "
               f"{len(fams)} families exported)", diag=f"unknown: {bad}")
tap.done()
