#!/usr/bin/env python3
"""bench/run.py's headline (issue 15): per-round ratios of echod against
each peer, against the best peer of each round and against its A/A twin,
the median and min-max of them, on synthetic rounds (a failed run and a
round a peer missed count for nothing); BENCH_SERVERS' parser refuses
what it cannot run; the headline table's lines.  Then a tiny real run
(2 rounds of 0.3 s windows) of echod, its A/A twin (BENCH_AA=1) and a peer
that is echod itself under another name, with the fixed-load cells: exit
0, every headline figure against "best peer", the twin and the peer over
both rounds with ratios near 1, the fixed cells at the fixed rate, the
peer started with its open file limit raised to the hard limit; on
io_uring, BENCH_BATCH_WAIT's "io_uring+batch_wait" in the headline and
the variant table.  And
echod-bench's server CPU is counted in ns, not in 10 ms clock ticks."""
import contextlib
import importlib.util
import io
import json
import os
import re
import resource
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (_child_setup, _register, _unregister, ECHOD, Daemon, Tap,  # noqa: E402
                       backends)

SRCDIR = os.environ.get("ECHOD_SRCDIR") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
RUN_PY = os.path.join(SRCDIR, "bench", "run.py")
BUILDDIR = os.path.dirname(os.path.dirname(ECHOD))
BENCH = os.environ.get("ECHOBENCH") or os.path.join(BUILDDIR, "bench", "echod-bench")

tap = Tap(timeout=240)

# run.py reads its knobs at import: the defaults, no peers
for k in [k for k in os.environ if k.startswith("BENCH_")]:
    del os.environ[k]
spec = importlib.util.spec_from_file_location("benchrun", RUN_PY)
run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run)


# --- arithmetic on synthetic rounds
def res(proto, server, conns, rnd, errors=(), **fig):
    r = {"proto": proto, "server": server, "conns": conns, "payload": 1024, "round": rnd,
         "errors": list(errors)}
    if proto == "fixed":
        r["open"] = {"server_cpu_us_per_req": fig["srv"], "p99_us": fig["p99"],
                     "target_req_s": 100, "req_s": fig.get("got", 100)}
    else:
        r["closed"] = {"req_s": fig["rps"]}
    return r


SRV = {"io_uring": [2, 3, 4], "peer:a": [1, 2, 2], "peer:b": [4, 1.5, None],
       "aa:io_uring": [2, 2, 4], "epoll": [3, 3, 3]}
RPS = {"io_uring": [100, 200, 300], "peer:a": [50, 100, 400], "peer:b": [200, 100, 100],
       "aa:io_uring": [100, 100, 300], "epoll": [100, 100, 100]}
results = []
for server in SRV:
    for rnd in range(3):
        if SRV[server][rnd] is not None:       # peer:b missed round 3
            results.append(res("fixed", server, 64, rnd, srv=SRV[server][rnd],
                               p99=10 * SRV[server][rnd],
                               got=90 if (server, rnd) == ("peer:a", 2) else 99))
        results.append(res("tcp", server, 256, rnd, rps=RPS[server][rnd]))
# failed runs count for nothing, whatever they measured
results.append(res("fixed", "io_uring", 64, 1, errors=["boom"], srv=1000, p99=1))
results.append(res("tcp", "peer:a", 256, 0, errors=["boom"], rps=1e9))

tap.ok(run.per_round_ratios({0: 2, 1: 3, 2: 4}, {0: 1, 1: 2, 2: 2}) == [2, 1.5, 2]
       and run.per_round_ratios({0: 2, 1: 3, 2: 5}, {0: 1, 2: 0}) == [2],
       "per-round ratios: a / b of each round, rounds missing or zero on either side skipped")
tap.ok(run.best_of_round([{0: 1, 1: 2, 2: 2}, {0: 4, 1: 1.5}], "lower") == {0: 1, 1: 1.5, 2: 2}
       and run.best_of_round([{0: 50, 1: 100}, {0: 200, 1: 100, 2: 100}], "higher")
       == {0: 200, 1: 100, 2: 100},
       "best of round: the lowest (CPU, p99) or highest (req/s) of the servers measured that round")
tap.ok(run.spread([2, 1.5, 2]) == {"ratio": 2, "min": 1.5, "max": 2, "rounds": 3}
       and run.spread([0.5, 2, 0.75, 1])["ratio"] == 0.875
       and run.spread([])["ratio"] is None,
       "spread: median (of an even count, the mean of the middle two), min, max, rounds")

rows = run.headline(results, backends=["io_uring", "epoll"], peers=["peer:a", "peer:b"],
                    twin="aa:io_uring")
by = {(x["figure"], x["conns"], x["echod"], x["vs"]): x for x in rows}
want = {
    # srv: io_uring 2,3,4 (the failed 1000 ignored); best = 1, 1.5, 2 (b missed round 3)
    ("fixed_srv_us", 64, "io_uring", "best peer"): (2.0, 2.0, 2.0, 3),
    ("fixed_srv_us", 64, "io_uring", "a"): (2.0, 1.5, 2.0, 3),
    ("fixed_srv_us", 64, "io_uring", "b"): (1.25, 0.5, 2.0, 2),     # 2/4, 3/1.5
    ("fixed_srv_us", 64, "io_uring", "A/A: io_uring-aa"): (1.0, 1.0, 1.5, 3),
    ("fixed_p99_us", 64, "epoll", "best peer"): (2.0, 1.5, 3.0, 3),  # 30 / 10, 15, 20
    # req/s, higher is better: best = 200 (a's 1e9 failed), 100, 400
    ("sat_req_s", 256, "io_uring", "best peer"): (0.75, 0.5, 2.0, 3),
    ("sat_req_s", 256, "io_uring", "A/A: io_uring-aa"): (1.0, 1.0, 2.0, 3),
}
got = {k: (by[k]["ratio"], by[k]["min"], by[k]["max"], by[k]["rounds"]) if k in by else None
       for k in want}
tap.ok(got == want, "headline on synthetic rounds: echod / best peer of each round, / each "
       "peer, / the A/A twin: median, min-max, rounds", diag=f"got {got}")
unmet = {x["vs"]: x["rate_not_met"] for x in rows
         if x["figure"] == "fixed_srv_us" and x["echod"] == "io_uring"}
tap.ok(unmet == {"best peer": 1, "a": 1, "b": 0, "A/A: io_uring-aa": 0}
       and all(x["rate_not_met"] == 0 for x in rows if x["figure"] == "sat_req_s"),
       "fixed load not met (a: 90 of 100 req/s in round 3; 99 is met) is counted where a "
       "compared server missed it", diag=str(unmet))
tap.ok(not any(x["echod"] == "epoll" and x["vs"].startswith("A/A") for x in rows)
       and [x["vs"] for x in rows if x["figure"] == "fixed_srv_us" and x["echod"] == "io_uring"]
       == ["best peer", "A/A: io_uring-aa", "a", "b"]
       and {x["better"] for x in rows if x["figure"] == "sat_req_s"} == {"higher"},
       "headline rows: best peer, the A/A twin (its own backend only), then each peer; "
       "req/s marked higher-is-better")

out = io.StringIO()
with contextlib.redirect_stdout(out):
    run.print_headline(rows)
lines = out.getvalue().splitlines()
tap.ok(re.match(r"figure\s+conns\s+better\s+echod\s+vs\s+ratio\s+min-max\s+rounds\s+note$",
                lines[0])
       and any(re.match(r"srv µs/req at the fixed load\s+64\s+lower\s+io_uring\s+best peer\s+"
                        r"2\.00\s+2\.00-2\.00\s+3\s+rate not met in 1$", ln) for ln in lines)
       and any(re.match(r"req/s at saturation\s+256\s+higher\s+io_uring\s+A/A: io_uring-aa\s+"
                        r"1\.00\s+1\.00-2\.00\s+3$", ln) for ln in lines),
       "headline table: header, one aligned line per ratio with min-max, rounds and the note",
       diag=out.getvalue())

# --- BENCH_SERVERS
ok = run.parse_peers("a=/bin/a {PORT};b@udp = /bin/b -p {PORT} ; c@tcp=/bin/c {PORT} {CPU}")
tap.ok(ok == {("a", "tcp"): "/bin/a {PORT}", ("b", "udp"): "/bin/b -p {PORT}",
              ("c", "tcp"): "/bin/c {PORT} {CPU}"},
       "BENCH_SERVERS: name[@tcp|@udp]=command, ';'-separated, unmarked is TCP", diag=str(ok))
bad = ["a=/bin/a", "a@sctp=/bin/a {PORT}", "=/bin/a {PORT}", "a", "a=/bin/a {PORT};a=/bin/b {PORT}",
       "io_uring=/bin/a {PORT}", "reference=/bin/a {PORT}"]
refused = []
for text in bad:
    try:
        run.parse_peers(text)
    except ValueError as e:
        refused.append(str(e).startswith("BENCH_SERVERS: "))
tap.ok(refused == [True] * len(bad), "BENCH_SERVERS refused: no {PORT}, an unknown protocol, "
       "no name, no command, a name twice, a built-in server's name", diag=str(refused))
p = subprocess.run([sys.executable, RUN_PY], env={**os.environ, "BENCH_SERVERS": "x=/bin/x"},
                   capture_output=True, text=True, timeout=30)
tap.ok(p.returncode == 2 and "BENCH_SERVERS" in p.stderr and not p.stdout,
       "run.py with a bad BENCH_SERVERS: exit 2 before running anything, one line on stderr",
       diag=p.stderr)

# --- echod-bench counts the server's CPU in ns
d = Daemon(backend=backends()[0])
d.start()
totals = []
try:
    for _ in range(3):
        pr = _register(subprocess.Popen(
            [BENCH, "-p", str(d.port), "-c", "1", "-l", "64", "-w", "0.1", "-d", "0.2",
             "--rate", "500", "--server-pid", str(d.proc.pid), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_child_setup()))
        try:
            o, e = pr.communicate(timeout=30)
        finally:
            _unregister(pr)
        j = json.loads(o)
        totals.append(j["server_cpu_us_per_req"] * j["requests"] / 1e4)  # in 10 ms ticks
finally:
    d.stop()
tap.ok(all(t > 0 for t in totals) and any(abs(t - round(t)) > 0.02 for t in totals),
       "echod-bench --server-pid: the server's CPU over a 0.2 s window is not a whole number "
       "of 10 ms clock ticks (read from its CPU-time clock, in ns)",
       diag=f"CPU time in ticks: {totals}")

# --- a tiny real run: echod, its A/A twin, echod as a peer under another name
# (and on io_uring, echod with batch_wait_us as a server of its own)
backend = "io_uring" if "io_uring" in backends() else backends()[0]
batch = backend == "io_uring"
with tempfile.TemporaryDirectory(prefix="test_bench_run.") as tmp:
    conf = ('printf "port = {PORT}\\nlisten = [\\"127.0.0.1\\"]\\n'
            'metrics = { enabled = false }\\n" > ' + tmp + '/peer{PORT}.conf')
    peer = (f"echod-peer=/bin/sh -c '{conf} && ulimit -n > {tmp}/nofile && "
            f"exec {ECHOD} -c {tmp}/peer{{PORT}}.conf'")
    env = {**os.environ, "ECHOD": ECHOD, "ECHOBENCH": BENCH, "BENCH_ROUNDS": "2",
           "BENCH_DURATION": "0.3", "BENCH_WARMUP": "0.1", "BENCH_BACKENDS": backend,
           "BENCH_CONNS": "64", "BENCH_PAYLOADS": "1024", "BENCH_NO_REF": "1", "BENCH_CPS": "0",
           "BENCH_FIXED_RATE": "5000", "BENCH_AA": "1", "BENCH_SERVERS": peer,
           "BENCH_BATCH_WAIT": "100" if batch else "0",
           "BENCH_JSON": os.path.join(tmp, "r.json")}
    pr = _register(subprocess.Popen([sys.executable, RUN_PY], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True))
    try:
        o, e = pr.communicate(timeout=150)
    finally:
        _unregister(pr)
    tap.ok(pr.returncode == 0, f"run.py, 2 rounds, {backend} + A/A twin + echod as a peer: exit 0",
           diag=e[-3000:])
    try:
        with open(os.path.join(tmp, "r.json")) as f:
            j = json.load(f)
    except (OSError, ValueError):
        j = {"headline": [], "runs": []}
    head = {(x["figure"], x["vs"]): x for x in j["headline"] if x["echod"] == backend}
    keys = [(f, v) for f in ("fixed_srv_us", "fixed_p99_us", "sat_req_s")
            for v in ("best peer", f"A/A: {backend}-aa", "echod-peer")]
    tap.ok(all(k in head and head[k]["rounds"] == 2 for k in keys)
           and all(0.2 < head[k]["ratio"] < 5 for k in keys if k[0] != "fixed_p99_us"),
           "the headline: CPU, p99 at the fixed load and req/s at saturation, each against the "
           "best peer, the A/A twin and the peer, over both rounds (CPU, req/s: ratio 0.2-5)",
           diag=json.dumps(j["headline"], indent=0)[:3000])
    if batch:
        bw = {(x["figure"], x["vs"]): x for x in j["headline"]
              if x["echod"] == "io_uring+batch_wait"}
        var = [x for x in j.get("busy_poll_ratios", []) if x["variant"] == "batch_wait"]
        tap.ok(all((f, "best peer") in bw and bw[(f, "best peer")]["rounds"] == 2
                   for f in ("fixed_srv_us", "fixed_p99_us", "sat_req_s"))
               and len(var) == 1 and var[0]["rounds"] == 2 and var[0]["conns"] == 64
               and re.search(r"^echod\s+variant\s+conns\s+payload\s+p50 ratio", o, re.M)
               and "batch_wait_us = 100" in o,
               "BENCH_BATCH_WAIT: io_uring+batch_wait in the headline against the best peer "
               "over both rounds, and in the variant table over plain io_uring",
               diag=o[-3000:])
    fixed = [r for r in j["runs"] if r["proto"] == "fixed"]
    tap.ok(len(fixed) == (8 if batch else 6) and all(r.get("open", {}).get("target_req_s") == 5000
                                   and r["conns"] == 64 and r["payload"] == 1024 for r in fixed)
           and re.search(r"^figure\s+conns\s+better", o, re.M)
           and re.search(r"^server\s+conns\s+payload\s+rate/s\s+achieved", o, re.M),
           "fixed cells: each server once a round, open loop at BENCH_FIXED_RATE; the fixed "
           "and headline tables printed", diag=o[-3000:])
    try:
        with open(os.path.join(tmp, "nofile")) as f:
            nofile = f.read().strip()
    except OSError:
        nofile = "?"
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    tap.ok(nofile == ("unlimited" if hard == resource.RLIM_INFINITY else str(hard)),
           "a peer starts with its soft open file limit raised to the hard one",
           diag=f"peer's ulimit -n {nofile}, hard limit {hard}")

tap.done()
