#!/usr/bin/env python3
"""bench/run.py - echod's benchmark matrix; `make bench` runs it.

For each round, every cell once, in a shuffled order: backend (io_uring,
epoll) x connections (1, 64, 256, 1024) x payload (64, 1024, 16384 bytes),
plus the reference server (bench/refserver: blocking recv/send, one
connection) at 1 connection for each payload.  A cell starts a fresh server
pinned to the server CPU (echod: core = [N] and the whole process confined
to that CPU; refserver: --cpu N), waits for its "ready" line, runs
bench/echobench pinned to the client CPU twice - closed loop (saturation),
then open loop at a fixed rate (a fraction of the saturation req/s that cell
measured in the same round) - and stops the server with SIGTERM, by PID.
The table reports, per cell, the median of each figure over the rounds.

Builds nothing: the paths come from the environment (the Makefile sets them).

Environment:
  ECHOD, ECHOBENCH, REFSERVER   programs (default: the build tree around this file)
  BENCH_QUICK=1          one round, 1 s windows after 0.3 s warm-up, a subset
                         (conns 1, 64, 1024 x payload 64, 16384): under a minute
  BENCH_ROUNDS           rounds (default 3; quick 1)
  BENCH_DURATION         measured seconds per run (default 3; quick 1)
  BENCH_WARMUP           warm-up seconds per run (default 1; quick 0.3)
  BENCH_BACKENDS         e.g. "io_uring epoll" (default both)
  BENCH_CONNS            e.g. "1 64 256 1024"
  BENCH_PAYLOADS         e.g. "64 1024 16384"
  BENCH_RATE_FRACTION    open-loop rate as a fraction of saturation (default 0.5)
  BENCH_NO_REF=1         skip the reference server
  BENCH_SERVER_CPU       CPU for the server (default 0)
  BENCH_CLIENT_CPU       CPU for the client (default 1)
  BENCH_SEED             seed of the shuffles (default: the time)
  BENCH_JSON             where to write the raw results
                         (default /tmp/echod-bench-results.json)

Exit status: 0; 1 if a run failed (a wrong byte, a server that would not
start or stop cleanly, a client error); 2 on a setup error.
"""

import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)


def env_path(name, default):
    v = os.environ.get(name, "")
    return v if v else default


def env_list(name, default):
    v = os.environ.get(name, "").replace(",", " ").split()
    return v if v else default


def env_float(name, default):
    v = os.environ.get(name, "")
    return float(v) if v else default


ECHOD = env_path("ECHOD", os.path.join(TOP, "src", "echod"))
ECHOBENCH = env_path("ECHOBENCH", os.path.join(TOP, "bench", "echobench"))
REFSERVER = env_path("REFSERVER", os.path.join(TOP, "bench", "refserver"))
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
ROUNDS = int(env_float("BENCH_ROUNDS", 1 if QUICK else 3))
DURATION = env_float("BENCH_DURATION", 1.0 if QUICK else 3.0)
WARMUP = env_float("BENCH_WARMUP", 0.3 if QUICK else 1.0)
BACKENDS = env_list("BENCH_BACKENDS", ["io_uring", "epoll"])
CONNS = [int(x) for x in env_list("BENCH_CONNS", ["1", "64", "1024"] if QUICK
                                  else ["1", "64", "256", "1024"])]
PAYLOADS = [int(x) for x in env_list("BENCH_PAYLOADS", ["64", "16384"] if QUICK
                                     else ["64", "1024", "16384"])]
RATE_FRACTION = env_float("BENCH_RATE_FRACTION", 0.5)
WITH_REF = os.environ.get("BENCH_NO_REF", "") in ("", "0")
SERVER_CPU = int(env_float("BENCH_SERVER_CPU", 0))
CLIENT_CPU = int(env_float("BENCH_CLIENT_CPU", 1))
SEED = int(env_float("BENCH_SEED", int(time.time())))
JSON_OUT = env_path("BENCH_JSON", os.path.join(tempfile.gettempdir(),
                                               "echod-bench-results.json"))
BUFFER_SIZE = 4096              # echod's default buffer_size

_children = {}                  # pid -> Popen: killed by PID on the way out


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def kill_children():
    for pid, p in list(_children.items()):
        if p.poll() is None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        _children.pop(pid, None)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """echod (a temp config) or refserver, pinned to SERVER_CPU."""

    def __init__(self, kind, conns, payload):
        self.kind = kind
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="echod-bench.")
        self.logpath = os.path.join(self.dir, "server.log")
        self.buffer_count = None
        if kind == "ref":
            argv = [REFSERVER, "-p", str(self.port), "--cpu", str(SERVER_CPU)]
        else:
            # room for every connection's request twice over, at least the default
            per_conn = -(-payload // BUFFER_SIZE)
            self.buffer_count = max(4096, min(32768, 2 * conns * per_conn))
            conf = os.path.join(self.dir, "echod.conf")
            with open(conf, "w") as f:
                f.write(f'backend = "{kind}";\n'
                        f"port = {self.port};\n"
                        'listen = ["127.0.0.1"];\n'
                        f"core = [{SERVER_CPU}];\n"
                        f"buffer_count = {self.buffer_count};\n"
                        "metrics = { enabled = false; };\n"
                        'log_level = "info";\n')
            argv = [ECHOD, "-c", conf]
        self.logf = open(self.logpath, "w+")
        cpu = SERVER_CPU
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf,
            preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
        _children[self.proc.pid] = self.proc
        self.pid = self.proc.pid

    def log_text(self):
        try:
            with open(self.logpath) as f:
                return f.read()
        except OSError:
            return ""

    def wait_ready(self, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready" in self.log_text():
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.02)
        return False

    def stop(self, timeout=15):
        """SIGTERM by PID; True when it exited 0 in time."""
        ok = False
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
        try:
            ok = self.proc.wait(timeout=timeout) == 0
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        _children.pop(self.pid, None)
        self.logf.close()
        return ok

    def cleanup(self):
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)


def echobench(port, server_pid, conns, payload, rate=None):
    argv = [ECHOBENCH, "-p", str(port), "-c", str(conns), "-l", str(payload),
            "-d", str(DURATION), "-w", str(WARMUP), "--cpu", str(CLIENT_CPU),
            "--server-pid", str(server_pid), "--json"]
    if rate:
        argv += ["--rate", f"{rate:.0f}"]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    _children[p.pid] = p
    try:
        out, err = p.communicate(timeout=WARMUP + 2 * DURATION + 60)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        return None, f"echobench timed out: {' '.join(argv)}"
    finally:
        _children.pop(p.pid, None)
    if p.returncode != 0:
        return None, f"echobench exit {p.returncode}: {err.strip()} ({' '.join(argv)})"
    try:
        return json.loads(out), None
    except ValueError:
        return None, f"echobench printed no JSON: {out!r} {err!r}"


def run_cell(kind, conns, payload):
    """One cell: fresh server, closed loop, open loop, stop."""
    res = {"server": kind, "conns": conns, "payload": payload, "errors": []}
    srv = Server(kind, conns, payload)
    res["buffer_count"] = srv.buffer_count
    try:
        if not srv.wait_ready():
            res["errors"].append(f"{kind} did not become ready: {srv.log_text()[-500:]}")
            return res
        closed, err = echobench(srv.port, srv.pid, conns, payload)
        if err:
            res["errors"].append(err)
            return res
        res["closed"] = closed
        rate = RATE_FRACTION * closed["req_s"]
        rate = float(f"{rate:.3g}")          # a round number, 3 digits
        if rate > 0:
            opened, err = echobench(srv.port, srv.pid, conns, payload, rate=rate)
            if err:
                res["errors"].append(err)
            else:
                res["open"] = opened
        return res
    finally:
        if not srv.stop():
            res["errors"].append(f"{kind} did not exit 0 on SIGTERM: "
                                 f"{srv.log_text()[-500:]}")
        text = srv.log_text()
        bad = [ln for ln in text.splitlines() if ln.startswith(("<0>", "<1>", "<2>", "<3>"))]
        if bad:
            res["errors"].append(f"{kind} logged errors: " + " | ".join(bad[:3]))
        srv.cleanup()


# ------------------------------------------------------------------ table

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt_us(v):
    if v is None:
        return "-"
    if v < 10:
        return f"{v:.1f}"
    if v < 100000:
        return f"{v:.0f}"
    if v < 10000000:
        return f"{v / 1000:.0f}ms"
    return f"{v / 1e6:.1f}s"


def fmt_num(v, digits=0):
    return "-" if v is None else f"{v:,.{digits}f}"


def summarize(results):
    cells = {}
    for r in results:
        cells.setdefault((r["server"], r["conns"], r["payload"]), []).append(r)
    order = [(b, c, p) for b in BACKENDS for c in CONNS for p in PAYLOADS]
    if WITH_REF:
        order += [("ref", 1, p) for p in PAYLOADS]
    summary = []
    for key in order:
        runs = cells.get(key, [])
        closed = [r["closed"] for r in runs if "closed" in r]
        opened = [r["open"] for r in runs if "open" in r]
        rps = [c["req_s"] for c in closed]
        m = med(rps)
        s = {
            "server": key[0], "conns": key[1], "payload": key[2],
            "rounds": len(closed),
            "req_s": m,
            "req_s_spread_pct": (100.0 * (max(rps) - min(rps)) / m) if len(rps) > 1 and m else None,
            "sat_p50_us": med([c["p50_us"] for c in closed]),
            "sat_p99_us": med([c["p99_us"] for c in closed]),
            "sat_p999_us": med([c["p999_us"] for c in closed]),
            "rate": med([o["target_req_s"] for o in opened]),
            "rate_achieved": med([o["req_s"] for o in opened]),
            "fixed_p50_us": med([o["p50_us"] for o in opened]),
            "fixed_p99_us": med([o["p99_us"] for o in opened]),
            "fixed_p999_us": med([o["p999_us"] for o in opened]),
            "unfinished": sum(o.get("unfinished", 0) for o in opened),
            "client_lag_p99_us": med([o.get("client_lag_p99_us") for o in opened]),
            "server_cpu_us_per_req": med([c["server_cpu_us_per_req"] for c in closed]),
            "server_cpu_util": med([c["server_cpu_util"] for c in closed]),
            "client_cpu_util": med([c["client_cpu_util"] for c in closed]),
            "client_cpu_us_per_req": med([c["client_cpu_us_per_req"] for c in closed]),
            "rss_mib": (med([c["server_rss_kb"] for c in closed]) or 0) / 1024.0 if closed else None,
            "conn_errors": sum(c.get("errors", 0) for c in closed + opened),
            "failures": sum(len(r["errors"]) for r in runs),
        }
        summary.append(s)
    return summary


def print_table(summary):
    hdr = ("backend", "conns", "payload", "req/s", "±%", "sat p50", "p99", "p99.9",
           "rate/s", "fix p50", "p99", "p99.9", "srv µs/req", "srv%", "cli%", "RSS MiB", "note")
    rows = []
    for s in summary:
        notes = []
        if s["failures"]:
            notes.append(f"FAILED x{s['failures']}")
        if s["conn_errors"]:
            notes.append(f"conn errors {s['conn_errors']}")
        if s["unfinished"]:
            notes.append(f"unfinished {s['unfinished']}")
        if (s["rate"] and s["rate_achieved"] is not None
                and s["rate_achieved"] < 0.97 * s["rate"]):
            notes.append("rate not met")
        if (s["client_lag_p99_us"] is not None and s["fixed_p99_us"]
                and s["client_lag_p99_us"] > s["fixed_p99_us"] / 3):
            notes.append("client late")
        if (s["client_cpu_util"] is not None and s["server_cpu_util"] is not None
                and s["client_cpu_util"] >= 0.95 and s["server_cpu_util"] < 0.85):
            notes.append("client-bound?")
        rows.append((
            "reference" if s["server"] == "ref" else s["server"],
            str(s["conns"]), str(s["payload"]),
            fmt_num(s["req_s"]),
            "-" if s["req_s_spread_pct"] is None else f"{s['req_s_spread_pct']:.0f}",
            fmt_us(s["sat_p50_us"]), fmt_us(s["sat_p99_us"]), fmt_us(s["sat_p999_us"]),
            fmt_num(s["rate"]),
            fmt_us(s["fixed_p50_us"]), fmt_us(s["fixed_p99_us"]), fmt_us(s["fixed_p999_us"]),
            fmt_num(s["server_cpu_us_per_req"], 2),
            "-" if s["server_cpu_util"] is None else f"{100 * s['server_cpu_util']:.0f}",
            "-" if s["client_cpu_util"] is None else f"{100 * s['client_cpu_util']:.0f}",
            fmt_num(s["rss_mib"], 1),
            ", ".join(notes),
        ))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(hdr)]
    left = {0, 16}

    def line(cols):
        return "  ".join(c.ljust(widths[i]) if i in left else c.rjust(widths[i])
                         for i, c in enumerate(cols)).rstrip()

    print(line(hdr))
    print(line(["-" * w for w in widths]))
    prev = None
    for s, r in zip(summary, rows):
        if prev is not None and s["server"] != prev:
            print()
        prev = s["server"]
        print(line(r))


def main():
    for prog in (ECHOD, ECHOBENCH) + ((REFSERVER,) if WITH_REF else ()):
        if not os.access(prog, os.X_OK):
            log(f"run.py: {prog} is missing: run `make bench` (it builds what it needs)")
            return 2
    ncpu = os.cpu_count() or 1
    if max(SERVER_CPU, CLIENT_CPU) >= ncpu or SERVER_CPU == CLIENT_CPU:
        log(f"run.py: needs two distinct CPUs (server {SERVER_CPU}, client {CLIENT_CPU}; "
            f"this machine has {ncpu})")
        return 2

    cells = [(b, c, p) for b in BACKENDS for c in CONNS for p in PAYLOADS]
    if WITH_REF:
        cells += [("ref", 1, p) for p in PAYLOADS]
    rng = random.Random(SEED)
    per_run = 2 * (WARMUP + DURATION) + 0.6
    log(f"echod benchmark: {len(cells)} cells x {ROUNDS} round(s), {WARMUP:g} s warm-up + "
        f"{DURATION:g} s per run, closed then open loop at {RATE_FRACTION:g} x saturation; "
        f"server on CPU {SERVER_CPU}, client on CPU {CLIENT_CPU}; "
        f"about {len(cells) * ROUNDS * per_run / 60:.1f} min; seed {SEED}")
    t_start = time.monotonic()
    results = []
    failed = False
    try:
        for rnd in range(ROUNDS):
            order = cells[:]
            rng.shuffle(order)
            for i, (kind, conns, payload) in enumerate(order):
                r = run_cell(kind, conns, payload)
                r["round"] = rnd
                results.append(r)
                c = r.get("closed")
                o = r.get("open")
                msg = (f"[round {rnd + 1}/{ROUNDS} {i + 1:2d}/{len(order)}] "
                       f"{kind:8s} c={conns:<4d} l={payload:<5d} ")
                if c:
                    msg += (f"{c['req_s']:10,.0f} req/s p99 {fmt_us(c['p99_us']):>6s} "
                            f"srv {c['server_cpu_util'] * 100:3.0f}% "
                            f"cli {c['client_cpu_util'] * 100:3.0f}%")
                if o:
                    msg += f" | {o['target_req_s']:,.0f}/s p99 {fmt_us(o['p99_us'])}"
                if r["errors"]:
                    failed = True
                    msg += "  FAILED: " + "; ".join(r["errors"])
                log(msg)
    except KeyboardInterrupt:
        log("interrupted")
        failed = True
    finally:
        kill_children()
    elapsed = time.monotonic() - t_start

    summary = summarize(results)
    meta = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "kernel": platform.release(),
        "cpus": ncpu,
        "cpu_model": next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                           if ln.startswith("model name")), "?"),
        "quick": QUICK, "rounds": ROUNDS, "duration_s": DURATION, "warmup_s": WARMUP,
        "rate_fraction": RATE_FRACTION, "server_cpu": SERVER_CPU, "client_cpu": CLIENT_CPU,
        "seed": SEED, "elapsed_s": round(elapsed, 1),
        "echod": ECHOD, "echobench": ECHOBENCH, "refserver": REFSERVER,
    }
    with open(JSON_OUT, "w") as f:
        json.dump({"meta": meta, "summary": summary, "runs": results}, f, indent=1)

    print()
    print(f"echod benchmark - {meta['cpu_model']}, {ncpu} CPUs, Linux {meta['kernel']}; "
          f"server on CPU {SERVER_CPU}, client on CPU {CLIENT_CPU}, loopback")
    print(f"median of {ROUNDS} interleaved round(s); {WARMUP:g} s warm-up + {DURATION:g} s "
          f"per run; latency in µs; fixed rate = {RATE_FRACTION:g} x that round's "
          f"saturation req/s{'; QUICK mode (subset)' if QUICK else ''}")
    print()
    print_table(summary)
    print()
    print(f"req/s, sat: closed loop (one request in flight per connection).  ±%: spread "
          f"of req/s over rounds.  fix: open loop at rate/s, latency from the intended send "
          f"time.  srv µs/req, srv%, cli%, RSS: at saturation.  See bench/README.")
    print(f"{elapsed:.0f} s; raw results: {JSON_OUT}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        kill_children()
