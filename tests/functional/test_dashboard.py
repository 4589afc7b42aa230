#!/usr/bin/env python3
"""contrib/grafana/echod-dashboard.json, the Grafana dashboard echod
ships: valid JSON, schemaVersion 36 or later, a Prometheus data source
variable that every panel and query uses (no data source hard-coded), job
and instance variables; panels that do not overlap; every expression, its
template variables replaced by concrete values, parsed by promtool; every
metric it reads one a live echod exports (on each backend, UDP on), or
Prometheus's own up/scrape_*; and the families an operator looks for
(connections, traffic, denials, buffers, CQ, reloads, UDP; the connection
histograms' buckets, RTT, duration and bytes) all shown.
promtool's check is skipped, with the reason, only when it is not
installed."""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import Tap, backends  # noqa: E402
from promutil import (DASHBOARD, PROMTOOL, check_parses, exported_families,  # noqa: E402
                      metric_names, unknown_names)

# what each template variable stands for when the expressions are checked
VALUES = {"job": "echod", "instance": "127.0.0.1:9100", "__rate_interval": "1m",
          "__interval": "1m", "__range": "1h"}
# what the dashboard must show
WANTED = ["up", "echod_connections_current", "echod_max_connections",
          "echod_connections_accepted_total", "echod_connections_closed_total",
          "echod_received_bytes_total", "echod_sent_bytes_total",
          "echod_connections_denied_total", "echod_accept_errors_total",
          "echod_buffer_exhaustion_total", "echod_cq_overflow_total", "echod_reloads_total",
          "echod_reload_failures_total", "echod_config_last_reload_successful",
          "echod_udp_received_datagrams_total", "echod_udp_sent_datagrams_total",
          "echod_udp_dropped_datagrams_total", "echod_udp_kernel_drops_total",
          "echod_connection_rtt_seconds_bucket", "echod_connection_duration_seconds_bucket",
          "echod_connection_bytes_bucket"]


def substitute(expr):
    """expr with $var, ${var} and ${var:format} replaced from VALUES (an
    unknown variable is left, and fails the check)."""
    def one(m):
        name = m.group(1) or m.group(2)
        return VALUES.get(name, m.group(0))
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", one, expr)


tap = Tap()
with open(DASHBOARD) as f:
    text = f.read()
try:
    dash = json.loads(text)
except ValueError as e:
    tap.ok(False, "echod-dashboard.json is valid JSON", diag=str(e))
    tap.done()
tap.ok(isinstance(dash.get("schemaVersion"), int) and dash["schemaVersion"] >= 36 and
       dash.get("title") and dash.get("uid") and dash.get("id") is None,
       f"valid JSON, schemaVersion {dash.get('schemaVersion')}, a title and a uid, no id")

variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
ds = variables.get("datasource", {})
tap.ok(ds.get("type") == "datasource" and ds.get("query") == "prometheus",
       "a ${datasource} variable of Prometheus data sources", diag=json.dumps(ds))
DS = {"type": "prometheus", "uid": "${datasource}"}
inst = variables.get("instance", {})
tap.ok(all(variables.get(v, {}).get("type") == "query" and
           variables.get(v, {}).get("datasource") == DS for v in ("job", "instance")) and
       inst.get("multi") and inst.get("includeAll") and "$job" in json.dumps(inst.get("query")),
       "job and instance variables, queried from ${datasource}; instance multi-valued, "
       "within the job", diag=json.dumps([variables.get("job"), inst]))


def walk(panels):
    for p in panels:
        yield p
        yield from walk(p.get("panels", []))


panels = list(walk(dash.get("panels", [])))
graphs = [p for p in panels if p.get("type") != "row"]
wrong_ds = [p.get("title") for p in graphs
            if p.get("datasource") != DS or any(t.get("datasource") != DS
                                                 for t in p.get("targets", []))]
tap.ok(len(graphs) >= 10 and not wrong_ds,
       f"{len(graphs)} panels, each and every query on ${{datasource}}",
       diag=f"other data source: {wrong_ds}")
ids = [p.get("id") for p in panels]
cells, overlap = {}, []
for p in panels:
    g = p.get("gridPos", {})
    if g.get("x", 0) + g.get("w", 0) > 24:
        overlap.append(f"{p.get('title')}: wider than the grid")
    for x in range(g.get("x", 0), g.get("x", 0) + g.get("w", 0)):
        for y in range(g.get("y", 0), g.get("y", 0) + g.get("h", 0)):
            if (x, y) in cells:
                overlap.append(f"{p.get('title')} over {cells[(x, y)]}")
            cells[(x, y)] = p.get("title")
tap.ok(len(set(ids)) == len(ids) and None not in ids and not overlap,
       "panel ids unique; panels within the grid, none over another",
       diag="\n".join(sorted(set(overlap))[:10]))

# every expression: the panels' queries and the variables' label_values(EXPR, label)
exprs = []
for p in graphs:
    for t in p.get("targets", []):
        exprs.append((f"{p.get('title')}/{t.get('refId')}", t.get("expr", "")))
for name, v in variables.items():
    q = v.get("query")
    q = q.get("query", "") if isinstance(q, dict) else q
    m = re.match(r"^label_values\((.+),\s*\w+\)$", q or "")
    if v.get("type") == "query":
        exprs.append((f"variable {name}", m.group(1) if m else q))
concrete = [(n, substitute(e)) for n, e in exprs]
left = [(n, e) for n, e in concrete if "$" in e or not e.strip()]
tap.ok(len(exprs) > 20 and not left,
       f"{len(exprs)} expressions, every template variable replaced by a value",
       diag="\n".join(f"{n}: {e}" for n, e in left))
tap.diag("\n".join(f"{n}: {e}" for n, e in concrete[:3]) + "\n...")
if not PROMTOOL:
    tap.skip("every expression parses (promtool check rules)",
             "promtool not installed (Debian package prometheus)")
else:
    rc, out = check_parses(concrete)
    m = re.search(r"SUCCESS: (\d+) rules found", out)
    tap.ok(rc == 0 and m and int(m.group(1)) == len(concrete),
           f"every expression parses (promtool check rules on {len(concrete)} recordings)",
           diag=out)

read = set()
for _, e in concrete:
    read |= metric_names(e)
missing = [w for w in WANTED if w not in read]
tap.ok(not missing, f"the dashboard shows the {len(WANTED)} families an operator looks for",
       diag=f"not shown: {missing}")

for be in backends():
    with tap.guard(be):
        fams, _ = exported_families(be)
        bad = {n: unknown_names(e, fams) for n, e in concrete}
        bad = {n: b for n, b in bad.items() if b}
        tap.ok(len(fams) > 20 and not bad,
               f"[{be}] the dashboard reads only families a live echod exports "
               f"({len(read)} names, {len(fams)} families exported)", diag=f"unknown: {bad}")
tap.done()
