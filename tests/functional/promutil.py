"""What test_alert_rules and test_dashboard share: promtool, the PromQL
expressions of a Prometheus rules file and the metric names an
expression reads (Python 3 stdlib only), and the metric families a live
echod exports."""
import os
import re
import shutil
import socket
import subprocess
import tempfile

from echodtest import ECHOD_SRCDIR, Daemon, free_port
from metricsutil import request

PROMTOOL = shutil.which("promtool")
CONTRIB = os.path.join(ECHOD_SRCDIR, "contrib")
RULES = os.path.join(CONTRIB, "prometheus", "echod-alerts.yml")
RULES_TEST = os.path.join(CONTRIB, "prometheus", "echod-alerts.test.yml")
DASHBOARD = os.path.join(CONTRIB, "grafana", "echod-dashboard.json")

# Series Prometheus itself adds to every target, not echod's.
PROMETHEUS_OWN = re.compile(r"^(up|scrape_[a-z_]+)$")


def promtool(*args, timeout=30, cwd=None):
    """(exit status, stdout + stderr) of promtool ARGS (run in cwd)."""
    p = subprocess.run([PROMTOOL] + list(args), capture_output=True, text=True,
                       timeout=timeout, cwd=cwd)
    return p.returncode, p.stdout + p.stderr


def rule_exprs(text):
    """[(rule name, expr)] of a rules file, for the YAML this project writes:
    "- alert: NAME" or "- record: NAME", then "expr: " followed by a one-line
    plain or quoted scalar, or ">-" / "|" and an indented block.  Callers
    check the count against promtool's "N rules found", so a rule this
    reading misses fails the test."""
    out, name = [], None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^\s*-\s*(alert|record):\s*(\S+)\s*$", line)
        if m:
            name = m.group(2)
        m = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if m:
            indent, rest = len(m.group(1)), m.group(2).strip()
            if rest in (">-", ">", "|", "|-"):
                block = []
                i += 1
                while i < len(lines) and (not lines[i].strip() or
                                          len(lines[i]) - len(lines[i].lstrip()) > indent):
                    block.append(lines[i].strip())
                    i += 1
                sep = " " if rest.startswith(">") else "\n"
                out.append((name, sep.join(block).strip()))
                continue
            if rest[:1] in "'\"":
                rest = rest[1:-1]
            out.append((name, rest))
        i += 1
    return out


_NOT_METRICS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
                "group_right", "bool", "offset", "inf", "nan"}


def metric_names(expr):
    """The metric names a PromQL expression selects: identifiers that are not
    functions or aggregations (followed by "("), keywords, label names
    (in {...} and in by/without/on/ignoring/group_x lists) or durations.
    A selector by {__name__=...} is refused (ValueError): it would hide a
    name from this check."""
    if "__name__" in expr:
        raise ValueError(f"__name__ selector in {expr!r}")
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"#[^\n]*", "", s)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", s):
        tok = m.group(0)
        before = s[m.start() - 1] if m.start() else " "
        if before.isdigit() or before == ".":
            continue                            # 5m, 1e3, 0x1f
        if s[m.end():].lstrip().startswith("("):
            continue                            # a function or an aggregation
        if tok.lower() in _NOT_METRICS:
            continue
        names.add(tok)
    return names


def unknown_names(expr, families):
    """Names expr reads that are neither an exported family (or a series of
    one: _total, _bucket, _sum, _count) nor Prometheus's own."""
    bad = []
    for n in sorted(metric_names(expr)):
        if PROMETHEUS_OWN.match(n) or n in families or \
                re.sub(r"_(total|bucket|sum|count)$", "", n) in families:
            continue
        bad.append(n)
    return bad


def check_parses(named_exprs):
    """promtool check rules on a temporary rules file recording each expr:
    (exit status, output).  promtool parses every expression offline."""
    tmp = tempfile.mkdtemp(prefix="echodtest.promql.")
    path = os.path.join(tmp, "exprs.yml")
    try:
        with open(path, "w") as f:
            f.write("groups:\n  - name: parse\n    rules:\n")
            for i, (_, e) in enumerate(named_exprs):
                quoted = e.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
                f.write(f'      - record: echodtest:expr_{i}\n        expr: "{quoted}"\n')
        return promtool("check", "rules", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def exported_families(backend):
    """(families, exposition text) of a live echod with UDP on: the names in
    its # TYPE lines, the one list of what it exports (every family is
    exported from start-up, zero-valued ones included)."""
    mport = free_port()
    udp = {"enabled": True, "port": free_port(kind=socket.SOCK_DGRAM),
           "listen": ["127.0.0.1"]}
    with Daemon(backend, udp=udp, metrics={"enabled": True, "address": "127.0.0.1",
                                           "port": mport}) as d:
        st, _, body = request(mport)
        if st != 200:
            raise RuntimeError(f"/metrics: HTTP {st}\n{d.log_tail()}")
    text = body.decode()
    return set(re.findall(r"^# TYPE (\S+)", text, re.M)), text
