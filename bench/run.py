#!/usr/bin/env python3
"""bench/run.py - echod's benchmark matrix; `make bench` runs it.

For each round, every cell once, in a shuffled order: backend (io_uring,
epoll) x connections (1, 64, 256, 1024) x payload (64, 1024, 16384 bytes),
plus the reference server (bench/refserver: blocking recv/send, one
connection) at 1 connection for each payload.  A cell starts a fresh server
pinned to the server CPU (echod: core = [N] and the whole process confined
to that CPU; refserver: --cpu N), waits for its "ready" line, runs
bench/echod-bench pinned to the client CPU twice - closed loop (saturation),
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

UDP (off by default; bench/README says what a UDP cell does):
  BENCH_UDP=1            add the UDP cells to the matrix; BENCH_UDP=only: UDP
                         cells only (no TCP cells)
  BENCH_UDP_BACKENDS     echod backends in UDP cells (default BENCH_BACKENDS)
  BENCH_UDP_FLOWS        e.g. "1 64" (quick: 64)
  BENCH_UDP_PAYLOADS     datagram sizes, e.g. "64 1024" (quick: 1024)
  BENCH_UDP_GSO          "no yes" (default both): the client sends its window as
                         one UDP_SEGMENT send and receives with UDP_GRO
  BENCH_UDP_WINDOW       datagrams in flight per flow (default 8); 1 at 1 flow
                         without GSO (a ping-pong, like TCP at 1 connection)
  BENCH_UDP_LOSS_TIMEOUT a datagram unanswered this long is lost (default 0.2 s)

Connect/echo/close (the accept path's cost; bench/README):
  BENCH_CPS              "1" (default), "0" (none) or "only": cells where every
                         request is a connection of its own (echod-bench
                         --reconnect: connect, 64 bytes there and back, close;
                         from 64 source addresses, 127.0.0.1-64, in turn)
  BENCH_CPS_CONNS        connections in flight (default 64)
  BENCH_CPS_VARIANTS     echod configurations measured against the plain one in
                         the same rounds (default "deny10k per_source": a deny
                         list of 10,000 prefixes, none matching the client;
                         every per-source limit on, none reached)

Busy polling (the busy_poll_us setting; bench/README):
  BENCH_BUSY_POLL        busy_poll_us of the "+busy_poll" cells (default 50; 0:
                         none): each echod backend at 1 connection (when 1 is in
                         BENCH_CONNS), every payload, beside the plain one; the
                         table of ratios gives its round trip (p50, p99) and its
                         server CPU per request over the plain configuration's

Batched waits (the batch_wait_us setting; bench/README):
  BENCH_BATCH_WAIT       batch_wait_us of the "io_uring+batch_wait" server (default
                         0: none): io_uring echod with that setting, run beside
                         the plain one in every TCP, fixed and UDP cell (when
                         io_uring is among the backends), in the headline as an
                         echod of its own, and in the variant table (its round
                         trip and CPU over the plain configuration's)

Peers, run in the same rounds with the same client:
  BENCH_SERVERS          'name@udp=command;name@tcp=command;...': {PORT} in the
                         command is replaced by a free port, {CPU} by the server
                         CPU; each is started confined to that CPU (as taskset
                         would) with its soft open file limit raised to the hard
                         one, ready when it echoes a probe on {PORT}, stopped
                         by PID (SIGTERM, then SIGKILL after 3 s).  @udp peers run
                         in UDP cells, @tcp (or unmarked) ones in TCP cells.
                         Their stdout goes to /dev/null, stderr to the cell's log.

The headline (issue 15): per-round ratios, echod / each TCP peer, echod / the
best peer of the round and (BENCH_AA) echod / its A/A twin, median and min-max
over the rounds, of three figures: server CPU per request and p99 at a fixed
open-loop load (the "fixed" cells: one run per TCP server and round, open loop
only), and req/s at saturation in the TCP cells of payload BENCH_FIXED_PAYLOAD
and more than one connection.
  BENCH_FIXED_RATE       the fixed load, requests/s (default 60000; 0: no fixed cells)
  BENCH_FIXED_CONNS      its connections (default 64)
  BENCH_FIXED_PAYLOAD    its request size, and the saturation cells' (default 1024)
  BENCH_AA=1             run echod on the first of BENCH_BACKENDS a second time,
                         as "<backend>-aa", in the fixed cells and the headline's
                         saturation cells: echod / twin is the ruler's resolution

Exit status: 0; 1 if a run failed (a wrong byte, a server that would not
start or stop cleanly, a client error); 2 on a setup error.
"""

import json
import os
import platform
import random
import resource
import shlex
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
ECHOBENCH = env_path("ECHOBENCH", os.path.join(TOP, "bench", "echod-bench"))
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
UDP = os.environ.get("BENCH_UDP", "").strip().lower()
WITH_UDP = UDP not in ("", "0", "no")
WITH_TCP = UDP != "only"
UDP_BACKENDS = env_list("BENCH_UDP_BACKENDS", BACKENDS)
UDP_FLOWS = [int(x) for x in env_list("BENCH_UDP_FLOWS", ["64"] if QUICK else ["1", "64"])]
UDP_PAYLOADS = [int(x) for x in env_list("BENCH_UDP_PAYLOADS", ["1024"] if QUICK
                                         else ["64", "1024"])]
UDP_GSO = [x in ("yes", "1", "on") for x in env_list("BENCH_UDP_GSO", ["no", "yes"])]
UDP_WINDOW = int(env_float("BENCH_UDP_WINDOW", 8))
UDP_LOSS_TIMEOUT = env_float("BENCH_UDP_LOSS_TIMEOUT", 0.2)
CPS = os.environ.get("BENCH_CPS", "1").strip().lower()
WITH_CPS = CPS not in ("0", "no")
if CPS == "only":
    WITH_TCP = WITH_UDP = False
CPS_CONNS = int(env_float("BENCH_CPS_CONNS", 64))
CPS_PAYLOAD = 64
CPS_SOURCES = 64                # client source addresses: ephemeral ports to spare
CPS_VARIANTS = env_list("BENCH_CPS_VARIANTS", ["deny10k", "per_source"])
BUSY_POLL_US = int(env_float("BENCH_BUSY_POLL", 50))
BATCH_WAIT_US = int(env_float("BENCH_BATCH_WAIT", 0))
FIXED_RATE = env_float("BENCH_FIXED_RATE", 60000)
FIXED_CONNS = int(env_float("BENCH_FIXED_CONNS", 64))
FIXED_PAYLOAD = int(env_float("BENCH_FIXED_PAYLOAD", 1024))
AA = os.environ.get("BENCH_AA", "") not in ("", "0")
AA_KIND = "aa:" + BACKENDS[0]   # echod's A/A twin: the same program under another name


def variant_conf(variant, directory):
    """The lines a CPS variant adds to echod's configuration (files it needs
    are written into directory)."""
    if variant == "deny10k":
        # 10,000 distinct IPv4 prefixes, /16 to /32 (17 lengths: a lookup
        # searches each), none in 127.0.0.0/8, host bits clear; seeded
        rng = random.Random(10000)
        seen = set()
        while len(seen) < 10000:
            plen = rng.randint(16, 32)
            first = rng.choice([x for x in range(1, 224) if x != 127])
            addr = (first << 24) | rng.getrandbits(24)
            addr &= (0xffffffff << (32 - plen)) & 0xffffffff
            seen.add((addr, plen))
        path = os.path.join(directory, "deny10k.conf")
        with open(path, "w") as f:
            f.write("deny = [\n" + ",\n".join(
                f'  "{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}/{n}"'
                for a, n in sorted(seen)) + "\n];\n")
        return f'@include "{path}"\n'
    if variant == "scale":
        # bench/memory.py: room for every connection
        return "max_connections = 1048576;\n"
    if variant == "busy_poll":
        return f"busy_poll_us = {BUSY_POLL_US};\n"
    if variant == "batch_wait":
        return f"batch_wait_us = {BATCH_WAIT_US};\n"
    if variant == "per_source":
        # every per-source limit on, none reached: the table's lock and
        # bucket arithmetic on every accept and close
        return ("per_source = { max_connections = 100000; connection_rate = 1000000; "
                "connection_burst = 1000000; };\n")
    raise ValueError(f"BENCH_CPS_VARIANTS: unknown variant '{variant}' "
                     "(known: deny10k, per_source)")


def parse_peers(text):
    """BENCH_SERVERS: {name: (proto, command)}; a setup error raises ValueError."""
    peers = {}
    for item in text.split(";"):
        item = item.strip()
        if not item:
            continue
        name, sep, cmd = item.partition("=")
        name, cmd = name.strip(), cmd.strip()
        proto = "tcp"
        if "@" in name:
            name, proto = name.rsplit("@", 1)
        if not sep or not name or not cmd or proto not in ("tcp", "udp") \
                or "{PORT}" not in cmd:
            raise ValueError(f"BENCH_SERVERS: '{item}' is not name@udp=command or "
                             "name@tcp=command with {PORT} in the command")
        if (name, proto) in peers or name in ("ref", "reference", *BACKENDS, *UDP_BACKENDS):
            raise ValueError(f"BENCH_SERVERS: '{name}@{proto}' named twice or as a "
                             "built-in server")
        peers[(name, proto)] = cmd
    return peers


try:
    PEERS = parse_peers(os.environ.get("BENCH_SERVERS", ""))
except ValueError as e:
    PEERS = None
    PEERS_ERROR = str(e)
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


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe(proto, port, timeout):
    """True once a server on 127.0.0.1:port echoes a probe (UDP: a datagram;
    TCP: a connection and a few bytes) within timeout seconds."""
    deadline = time.monotonic() + timeout
    data = b"echod-bench probe"
    while time.monotonic() < deadline:
        kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
        try:
            with socket.socket(socket.AF_INET, kind) as s:
                s.settimeout(0.1)
                s.connect(("127.0.0.1", port))
                s.sendall(data)
                got = b""
                while len(got) < len(data):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                    if proto == "udp":
                        break
                if got == data:
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


class Server:
    """echod (a temp config), refserver or a peer (BENCH_SERVERS), pinned to
    SERVER_CPU.  proto: the service measured, "tcp" or "udp"."""

    def __init__(self, kind, conns, payload, proto="tcp"):
        self.kind = kind
        self.proto = proto
        base, _, variant = kind.partition("+")
        if base.startswith("aa:"):
            base = base[3:]             # the A/A twin: echod on that backend
        self.peer = kind.startswith("peer:")
        self.port = free_udp_port() if proto == "udp" else free_port()
        self.dir = tempfile.mkdtemp(prefix="echod-bench.")
        self.logpath = os.path.join(self.dir, "server.log")
        self.buffer_count = None
        out = None
        if kind == "ref":
            argv = [REFSERVER, "-p", str(self.port), "--cpu", str(SERVER_CPU)]
            if proto == "udp":
                argv.append("--udp")
        elif self.peer:
            cmd = PEERS[(kind[5:], proto)]
            argv = shlex.split(cmd.replace("{PORT}", str(self.port))
                               .replace("{CPU}", str(SERVER_CPU)))
            out = subprocess.DEVNULL
        else:
            # room for every connection's request twice over, at least the default
            per_conn = -(-payload // BUFFER_SIZE)
            self.buffer_count = max(4096, min(32768, 2 * conns * per_conn))
            conf = os.path.join(self.dir, "echod.conf")
            # UDP cells: the UDP service on self.port, TCP on another free port
            tcp_port = free_port() if proto == "udp" else self.port
            extra = variant_conf(variant, self.dir) if variant else ""
            with open(conf, "w") as f:
                f.write(extra)
                f.write(f'backend = "{base}";\n'
                        f"port = {tcp_port};\n"
                        'listen = ["127.0.0.1"];\n'
                        f"core = [{SERVER_CPU}];\n"
                        f"buffer_count = {self.buffer_count};\n"
                        "metrics = { enabled = false; };\n"
                        'log_level = "info";\n')
                if proto == "udp":
                    f.write(f'udp = {{ enabled = true; port = {self.port}; '
                            'listen = ["127.0.0.1"]; };\n')
            argv = [ECHOD, "-c", conf]
        self.logf = open(self.logpath, "w+")
        cpu, peer = SERVER_CPU, self.peer

        def setup():
            os.sched_setaffinity(0, {cpu})
            if peer:            # echod raises its own; a peer may not (1024 connections)
                _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out or self.logf, stderr=self.logf,
                preexec_fn=setup)
        except OSError as e:
            self.logf.write(f"cannot start {argv}: {e}\n")
            self.logf.flush()
            self.proc = None
            self.pid = None
            return
        _children[self.proc.pid] = self.proc
        self.pid = self.proc.pid

    def log_text(self):
        try:
            with open(self.logpath) as f:
                return f.read()
        except OSError:
            return ""

    def wait_ready(self, timeout=10):
        """echod and refserver: their "ready" line, then (UDP) an echoed probe;
        a peer: an echoed probe.  None when ready, else what went wrong."""
        if self.proc is None:
            return "did not start"
        deadline = time.monotonic() + timeout
        while not self.peer and "ready" not in self.log_text():
            if self.proc.poll() is not None:
                return "exited"
            if time.monotonic() >= deadline:
                return "logged no ready line"
            time.sleep(0.02)
        if self.peer or self.proto == "udp":
            if not probe(self.proto, self.port, max(3.0, deadline - time.monotonic())):
                return (f"exited (status {self.proc.returncode})"
                        if self.proc.poll() is not None
                        else f"did not echo a {self.proto.upper()} probe on port {self.port}")
        return None

    def stop(self, timeout=15):
        """SIGTERM by PID; True when it exited 0 in time (a peer: when it
        exited at all: SIGKILL after 3 s)."""
        ok = False
        if self.proc is None:
            self.logf.close()
            return False
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=3 if self.peer else timeout)
            ok = rc == 0 or self.peer
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
            ok = self.peer
        _children.pop(self.pid, None)
        self.logf.close()
        return ok

    def cleanup(self):
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)


def udp_window(flows, gso):
    """Datagrams in flight per flow in a UDP cell."""
    return 1 if flows == 1 and not gso else UDP_WINDOW


def echobench(port, server_pid, conns, payload, rate=None, udp=None, reconnect=False):
    """udp: None (TCP) or (window, gso: bool); reconnect: a connection per
    request."""
    argv = [ECHOBENCH, "-p", str(port), "-c", str(conns), "-l", str(payload),
            "-d", str(DURATION), "-w", str(WARMUP), "--cpu", str(CLIENT_CPU),
            "--server-pid", str(server_pid), "--json"]
    if reconnect:
        argv += ["--reconnect", "--sources", str(CPS_SOURCES)]
    if rate:
        argv += ["--rate", f"{rate:.0f}"]
    if udp:
        window, gso = udp
        argv += ["--udp", "--window", str(window), "--loss-timeout", f"{UDP_LOSS_TIMEOUT:g}"]
        if gso:
            argv += ["--gso", str(window)]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    _children[p.pid] = p
    try:
        out, err = p.communicate(timeout=WARMUP + 2 * DURATION + 60)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        return None, f"echod-bench timed out: {' '.join(argv)}"
    finally:
        _children.pop(p.pid, None)
    if p.returncode != 0:
        return None, f"echod-bench exit {p.returncode}: {err.strip()} ({' '.join(argv)})"
    try:
        return json.loads(out), None
    except ValueError:
        return None, f"echod-bench printed no JSON: {out!r} {err!r}"


def run_cell(cell):
    """One cell: fresh server, closed loop, open loop, stop."""
    proto, kind, conns, payload, gso = cell
    res = {"proto": proto, "server": kind, "conns": conns, "payload": payload,
           "errors": []}
    udp = None
    if proto == "udp":
        udp = (udp_window(conns, gso), gso)
        res["window"], res["gso"] = udp
    srv = Server(kind, conns, payload, "tcp" if proto in ("cps", "fixed") else proto)
    res["buffer_count"] = srv.buffer_count
    try:
        why = srv.wait_ready()
        if why:
            res["errors"].append(f"{kind} ({proto}) {why}: {srv.log_text()[-500:]}")
            return res
        if proto == "fixed":            # open loop at the fixed load only
            opened, err = echobench(srv.port, srv.pid, conns, payload, rate=FIXED_RATE)
            if err:
                res["errors"].append(err)
            else:
                res["open"] = opened
            return res
        closed, err = echobench(srv.port, srv.pid, conns, payload, udp=udp,
                                reconnect=proto == "cps")
        if err:
            res["errors"].append(err)
            return res
        res["closed"] = closed
        if proto == "cps":
            return res                  # no open loop: the rate is the figure
        rate = RATE_FRACTION * closed["req_s"]
        rate = float(f"{rate:.3g}")          # a round number, 3 digits
        if rate > 0:
            opened, err = echobench(srv.port, srv.pid, conns, payload, rate=rate, udp=udp)
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
        if bad and not srv.peer:
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


def display(kind):
    """A server's name in the table: "reference", a peer's name, a backend,
    the A/A twin ("<backend>-aa")."""
    if kind == "ref":
        return "reference"
    if kind.startswith("peer:"):
        return kind[5:]
    if kind.startswith("aa:"):
        return kind[3:] + "-aa"
    return kind


def headline_sat_conns():
    """The connection counts of the headline's saturation figure: the TCP
    cells of payload FIXED_PAYLOAD with more than one connection."""
    return [c for c in CONNS if c > 1] if FIXED_PAYLOAD in PAYLOADS else []


def batch_kinds(backends):
    """The "+batch_wait" servers (BENCH_BATCH_WAIT) of these backends: io_uring's."""
    return [b + "+batch_wait" for b in backends if BATCH_WAIT_US and b == "io_uring"]


def cell_list():
    """Every cell of a round: (proto, server, conns or flows, payload, gso)."""
    cells = []
    if WITH_TCP:
        servers = (BACKENDS + batch_kinds(BACKENDS)
                   + ["peer:" + n for (n, pr) in PEERS if pr == "tcp"])
        cells += [("tcp", b, c, p, False) for b in servers for c in CONNS for p in PAYLOADS]
        if AA:
            cells += [("tcp", AA_KIND, c, FIXED_PAYLOAD, False) for c in headline_sat_conns()]
        if WITH_REF:
            cells += [("tcp", "ref", 1, p, False) for p in PAYLOADS]
        if BUSY_POLL_US and 1 in CONNS:
            cells += [("tcp", b + "+busy_poll", 1, p, False) for b in BACKENDS for p in PAYLOADS]
        if FIXED_RATE > 0:
            cells += [("fixed", b, FIXED_CONNS, FIXED_PAYLOAD, False)
                      for b in servers + ([AA_KIND] if AA else [])]
    if WITH_CPS:
        cells += [("cps", b + v, CPS_CONNS, CPS_PAYLOAD, False)
                  for b in BACKENDS for v in [""] + ["+" + x for x in CPS_VARIANTS]]
    if WITH_UDP:
        servers = (UDP_BACKENDS + batch_kinds(UDP_BACKENDS) + (["ref"] if WITH_REF else [])
                   + ["peer:" + n for (n, pr) in PEERS if pr == "udp"])
        cells += [("udp", b, f, p, g) for b in servers for f in UDP_FLOWS
                  for p in UDP_PAYLOADS for g in UDP_GSO]
    return cells


def cell_key(r):
    return (r["proto"], r["server"], r["conns"], r["payload"], bool(r.get("gso")))


def summarize(results, cells):
    by_cell = {}
    for r in results:
        by_cell.setdefault(cell_key(r), []).append(r)
    summary = []
    for key in cells:
        runs = by_cell.get(key, [])
        closed = [r["closed"] for r in runs if "closed" in r]
        opened = [r["open"] for r in runs if "open" in r]
        rps = [c["req_s"] for c in closed]
        m = med(rps)
        s = {
            "proto": key[0], "server": key[1], "conns": key[2], "payload": key[3],
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
            "fixed_srv_us": med([o["server_cpu_us_per_req"] for o in opened]),
            "fixed_srv_util": med([o["server_cpu_util"] for o in opened]),
            "server_cpu_util": med([c["server_cpu_util"] for c in closed]),
            "client_cpu_util": med([c["client_cpu_util"] for c in closed]),
            "client_cpu_us_per_req": med([c["client_cpu_us_per_req"] for c in closed]),
            "rss_mib": (med([c["server_rss_kb"] for c in closed]) or 0) / 1024.0 if closed else None,
            "conn_errors": sum(c.get("errors", 0) for c in closed + opened),
            "failures": sum(len(r["errors"]) for r in runs),
        }
        if key[0] == "udp":
            s.update({
                "gso": key[4], "window": udp_window(key[2], key[4]),
                "loss_pct": med([c["loss_pct"] for c in closed]),
                "lost": sum(c["lost"] for c in closed),
                "fixed_loss_pct": med([o["loss_pct"] for o in opened]),
                "fixed_lost": sum(o["lost"] for o in opened),
                "late": sum(c["late"] for c in closed + opened),
            })
        summary.append(s)
    return summary


def ratios(results, cells):
    """Per echod backend, cell and peer (the reference server and the
    BENCH_SERVERS of the protocol): the ratio of server CPU per request
    (datagram), echod / peer, of each round, and its median, min and max."""
    srv, loss = {}, {}
    for r in results:
        if "closed" in r:
            k = cell_key(r) + (r["round"],)
            srv[k] = r["closed"]["server_cpu_us_per_req"]
            loss[k] = r["closed"].get("loss_pct")
    out = []
    for (proto, b, c, p, g) in cells:
        if b == "ref" or b.startswith(("peer:", "aa:")) or proto == "fixed":
            continue            # the fixed cells and the A/A twin: in the headline
        if proto == "tcp" and not any(pr == "tcp" for (_, pr) in PEERS):
            continue            # TCP: against the reference only with peers
        for (proto2, q, c2, p2, g2) in cells:
            if (proto2, c2, p2, g2) != (proto, c, p, g) or not (q == "ref" or q.startswith("peer:")):
                continue
            per = [srv[(proto, b, c, p, g, rnd)] / srv[(proto, q, c, p, g, rnd)]
                   for rnd in range(ROUNDS)
                   if srv.get((proto, b, c, p, g, rnd)) and srv.get((proto, q, c, p, g, rnd))]
            out.append({
                "proto": proto, "server": b, "conns": c, "payload": p, "gso": g, "vs": q,
                "rounds": len(per), "srv_ratio": med(per),
                "srv_ratio_min": min(per) if per else None,
                "srv_ratio_max": max(per) if per else None,
                "loss_pct": med([loss.get((proto, b, c, p, g, rnd)) for rnd in range(ROUNDS)]),
                "vs_loss_pct": med([loss.get((proto, q, c, p, g, rnd)) for rnd in range(ROUNDS)]),
            })
    return out


# The headline: (key, figure, better) - key names the figure's values in
# headline_values; better: "lower" or "higher" (which way echod wins).
HEADLINE = (
    ("fixed_srv_us", "srv µs/req at the fixed load", "lower"),
    ("fixed_p99_us", "p99 µs at the fixed load", "lower"),
    ("sat_req_s", "req/s at saturation", "higher"),
)


def headline_values(results):
    """{(key, server, conns): {round: value}} of the headline's figures: from
    the fixed cells, server CPU per request and p99; from the TCP cells of
    payload FIXED_PAYLOAD and conns > 1, req/s (closed loop).  A run that
    failed counts for nothing.  And {("unmet", server, conns): {round: True}}
    where a fixed cell achieved < 97% of its rate (an overload's figures)."""
    out = {}
    for r in results:
        if r["errors"]:
            continue
        rnd, kind, c = r["round"], r["server"], r["conns"]
        if r["proto"] == "fixed" and "open" in r:
            o = r["open"]
            if o.get("server_cpu_us_per_req") is not None:
                out.setdefault(("fixed_srv_us", kind, c), {})[rnd] = o["server_cpu_us_per_req"]
            out.setdefault(("fixed_p99_us", kind, c), {})[rnd] = o["p99_us"]
            if o.get("target_req_s") and o.get("req_s", 0) < 0.97 * o["target_req_s"]:
                out.setdefault(("unmet", kind, c), {})[rnd] = True
        elif (r["proto"] == "tcp" and "closed" in r and r["payload"] == FIXED_PAYLOAD
              and c > 1):
            out.setdefault(("sat_req_s", kind, c), {})[rnd] = r["closed"]["req_s"]
    return out


def per_round_ratios(a, b):
    """a / b of each round both measured ({round: value} each), in round
    order; a round where either is missing or zero counts for nothing."""
    return [a[rnd] / b[rnd] for rnd in sorted(a) if a[rnd] and b.get(rnd)]


def best_of_round(series, better):
    """{round: the best value of that round} over series ({round: value}
    each): the lowest or, better="higher", the highest of the servers
    measured in that round."""
    pick = max if better == "higher" else min
    rounds = sorted({rnd for s in series for rnd, v in s.items() if v})
    return {rnd: pick(s[rnd] for s in series if s.get(rnd)) for rnd in rounds}


def spread(per):
    """The median, min and max of a list of per-round ratios (None if empty)."""
    if not per:
        return {"ratio": None, "min": None, "max": None, "rounds": 0}
    return {"ratio": statistics.median(per), "min": min(per), "max": max(per),
            "rounds": len(per)}


def headline(results, backends=None, peers=None, twin=None):
    """The headline rows: per figure, connection count and echod backend,
    echod / the best peer of each round, echod / its A/A twin (the first
    backend only), then echod / each peer; each the median and min-max of
    the per-round ratios, with the ratios themselves.  backends, peers
    (server kinds, "peer:name") and twin default to this run's."""
    vals = headline_values(results)
    backends = BACKENDS + batch_kinds(BACKENDS) if backends is None else backends
    if peers is None:
        peers = ["peer:" + n for (n, pr) in PEERS if pr == "tcp"]
    if twin is None:
        twin = AA_KIND if AA else ""
    rows = []
    for key, figure, better in HEADLINE:
        for c in sorted({k[2] for k in vals if k[0] == key}):
            for b in backends:
                mine = vals.get((key, b, c))
                if not mine:
                    continue
                theirs = [(q, vals[(key, q, c)]) for q in peers if vals.get((key, q, c))]
                vs = []
                if theirs:
                    vs.append(("best peer", best_of_round([t for _, t in theirs], better)))
                if twin and twin[3:] == b and vals.get((key, twin, c)):
                    vs.append(("A/A: " + display(twin), vals[(key, twin, c)]))
                vs += [(display(q), t) for q, t in theirs]
                # fixed load: the rounds where echod or a server compared missed the rate
                unmet = set(vals.get(("unmet", b, c), {}))
                for name, other in vs:
                    per = per_round_ratios(mine, other)
                    if name == "best peer":
                        peer_unmet = set().union(*(vals.get(("unmet", q, c), {})
                                                   for q, _ in theirs))
                    else:
                        q = next((q for q in peers + [twin]
                                  if q and display(q) == name.split(": ")[-1]), "")
                        peer_unmet = set(vals.get(("unmet", q, c), {}))
                    used = {rnd for rnd in mine if mine[rnd] and other.get(rnd)}
                    rows.append({"figure": key, "label": figure, "better": better, "conns": c,
                                 "echod": b, "vs": name, **spread(per),
                                 "per_round": [round(x, 4) for x in per],
                                 "rate_not_met": (len(used & (unmet | peer_unmet))
                                                  if key.startswith("fixed") else 0)})
    return rows


def print_headline(rows):
    """The headline table: one line per (figure, conns, echod, vs)."""
    def f(v):
        return "-" if v is None else f"{v:.2f}"
    out = [(x["label"], str(x["conns"]), x["better"], x["echod"], x["vs"], f(x["ratio"]),
            "-" if x["min"] is None else f"{f(x['min'])}-{f(x['max'])}", str(x["rounds"]),
            f"rate not met in {x['rate_not_met']}" if x["rate_not_met"] else "")
           for x in rows]
    print_rows(("figure", "conns", "better", "echod", "vs", "ratio", "min-max", "rounds", "note"),
               out, {0, 2, 3, 4, 8}, [(x["figure"], x["conns"], x["echod"]) for x in rows])


def variant_ratios(results, cells, which):
    """Per echod backend and variant ("backend+variant" cells of protocol
    which: the CPS variants, or the TCP busy_poll cells): the variant's
    figures over the plain configuration's of the same cell, of each round
    (the two ran in the same round), and their median, min and max: rate
    (req/s or connections/s), cpu (server CPU per request), p50 and p99
    (round trip, closed loop)."""
    by = {}
    for r in results:
        if r["proto"] == which and "closed" in r:
            by[(r["server"], r["conns"], r["payload"], r["round"])] = r["closed"]
    figures = (("rate", "req_s"), ("cpu", "server_cpu_us_per_req"),
               ("p50", "p50_us"), ("p99", "p99_us"))
    out = []
    for (proto, kind, c, p, g) in cells:
        base, _, variant = kind.partition("+")
        if proto != which or not variant:
            continue
        per = {name: [] for name, _ in figures}
        for rnd in range(ROUNDS):
            a, b = by.get((kind, c, p, rnd)), by.get((base, c, p, rnd))
            for name, field in figures:
                if a and b and a.get(field) is not None and b.get(field):
                    per[name].append(a[field] / b[field])
        x = {"backend": base, "variant": variant, "conns": c, "payload": p,
             "rounds": len(per["rate"])}
        for name, _ in figures:
            v = per[name]
            x.update({f"{name}_ratio": med(v), f"{name}_min": min(v) if v else None,
                      f"{name}_max": max(v) if v else None})
        out.append(x)
    return out


def print_cps(summary, rat):
    hdr = ("echod", "conns", "conn/s", "±%", "p50", "p99", "srv µs/conn", "srv%", "cli%",
           "note")
    names = ("server", "conns", "req_s", "spread", "sat_p50", "sat_p99", "srv_us", "srv",
             "cli", "note")
    print_rows(hdr, [cols(s, names) for s in summary], {0, 9},
               [s["server"].partition("+")[0] for s in summary])
    if not rat:
        return
    print()
    rows = [(x["backend"], x["variant"], str(x["conns"]), *fmt_ratio(x, "rate"),
             *fmt_ratio(x, "cpu"), str(x["rounds"])) for x in rat]
    print_rows(("echod", "variant", "conns", "conn/s ratio", "min-max", "srv µs ratio",
                "min-max", "rounds"), rows, {0, 1}, [x["backend"] for x in rat])


def fmt_ratio(x, name):
    """A ratio column and its min-max column, from variant_ratios()."""
    if x[f"{name}_ratio"] is None:
        return "-", "-"
    return (f"{x[f'{name}_ratio']:.3f}", f"{x[f'{name}_min']:.3f}-{x[f'{name}_max']:.3f}")


def print_variants(rat):
    rows = [(x["backend"], x["variant"], str(x["conns"]), str(x["payload"]),
             *fmt_ratio(x, "p50"), *fmt_ratio(x, "p99"), *fmt_ratio(x, "cpu"),
             *fmt_ratio(x, "rate"), str(x["rounds"])) for x in rat]
    print_rows(("echod", "variant", "conns", "payload", "p50 ratio", "min-max", "p99 ratio",
                "min-max", "srv µs ratio", "min-max", "req/s ratio", "min-max", "rounds"),
               rows, {0, 1}, [x["backend"] + x["variant"] for x in rat])


def notes(s):
    """The note column of a summary row."""
    out = []
    if s["failures"]:
        out.append(f"FAILED x{s['failures']}")
    if s["conn_errors"]:
        out.append(f"conn errors {s['conn_errors']}")
    if s["unfinished"]:
        out.append(f"unfinished {s['unfinished']}")
    if (s["rate"] and s["rate_achieved"] is not None
            and s["rate_achieved"] < 0.97 * s["rate"]):
        out.append("rate not met")
    if (s["client_lag_p99_us"] is not None and s["fixed_p99_us"]
            and s["client_lag_p99_us"] > s["fixed_p99_us"] / 3):
        out.append("client late")
    if (s["client_cpu_util"] is not None and s["server_cpu_util"] is not None
            and s["client_cpu_util"] >= 0.95 and s["server_cpu_util"] < 0.85):
        out.append("client-bound?")
    if s.get("late"):
        out.append(f"late {s['late']}")
    return out


def fmt_pct(v, digits=0):
    return "-" if v is None else f"{100 * v:.{digits}f}"


def print_rows(hdr, rows, left, groups):
    """An aligned table: columns in left are left-aligned, a blank line
    where groups (one value per row) changes."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(hdr)]

    def line(cols):
        return "  ".join(c.ljust(widths[i]) if i in left else c.rjust(widths[i])
                         for i, c in enumerate(cols)).rstrip()

    print(line(hdr))
    print(line(["-" * w for w in widths]))
    prev = None
    for g, r in zip(groups, rows):
        if prev is not None and g != prev:
            print()
        prev = g
        print(line(r))


def cols(s, names):
    """The formatted columns names of summary row s."""
    f = {
        "server": lambda: display(s["server"]),
        "conns": lambda: str(s["conns"]),
        "win": lambda: str(s["window"]),
        "gso": lambda: "yes" if s["gso"] else "no",
        "payload": lambda: str(s["payload"]),
        "req_s": lambda: fmt_num(s["req_s"]),
        "spread": lambda: ("-" if s["req_s_spread_pct"] is None
                           else f"{s['req_s_spread_pct']:.0f}"),
        "sat_p50": lambda: fmt_us(s["sat_p50_us"]),
        "sat_p99": lambda: fmt_us(s["sat_p99_us"]),
        "sat_p999": lambda: fmt_us(s["sat_p999_us"]),
        "loss": lambda: fmt_loss(s["loss_pct"]),
        "rate": lambda: fmt_num(s["rate"]),
        "fix_p50": lambda: fmt_us(s["fixed_p50_us"]),
        "fix_p99": lambda: fmt_us(s["fixed_p99_us"]),
        "fix_p999": lambda: fmt_us(s["fixed_p999_us"]),
        "fix_loss": lambda: fmt_loss(s["fixed_loss_pct"]),
        "srv_us": lambda: fmt_num(s["server_cpu_us_per_req"], 2),
        "srv": lambda: fmt_pct(s["server_cpu_util"]),
        "cli": lambda: fmt_pct(s["client_cpu_util"]),
        "rss": lambda: fmt_num(s["rss_mib"], 1),
        "note": lambda: ", ".join(notes(s)),
    }
    return tuple(f[n]() for n in names)


def print_table(summary):
    hdr = ("backend", "conns", "payload", "req/s", "±%", "sat p50", "p99", "p99.9",
           "rate/s", "fix p50", "p99", "p99.9", "srv µs/req", "srv%", "cli%", "RSS MiB", "note")
    names = ("server", "conns", "payload", "req_s", "spread", "sat_p50", "sat_p99", "sat_p999",
             "rate", "fix_p50", "fix_p99", "fix_p999", "srv_us", "srv", "cli", "rss", "note")
    print_rows(hdr, [cols(s, names) for s in summary], {0, 16}, [s["server"] for s in summary])


def print_fixed_table(summary):
    hdr = ("server", "conns", "payload", "rate/s", "achieved", "p50", "p99", "p99.9",
           "srv µs/req", "srv%", "note")
    rows = [(display(s["server"]), str(s["conns"]), str(s["payload"]), fmt_num(s["rate"]),
             fmt_num(s["rate_achieved"]), fmt_us(s["fixed_p50_us"]), fmt_us(s["fixed_p99_us"]),
             fmt_us(s["fixed_p999_us"]), fmt_num(s["fixed_srv_us"], 2),
             fmt_pct(s["fixed_srv_util"]), ", ".join(notes(s))) for s in summary]
    print_rows(hdr, rows, {0, 10}, [0] * len(rows))


def fmt_loss(v):
    return "-" if v is None else "0" if v == 0 else f"{v:.2g}" if v < 1 else f"{v:.1f}"


def print_udp_table(summary):
    hdr = ("server", "flows", "win", "gso", "payload", "dgram/s", "±%", "sat p50", "p99",
           "loss%", "rate/s", "fix p50", "p99", "loss%", "srv µs/dgram", "srv%", "cli%",
           "RSS MiB", "note")
    names = ("server", "conns", "win", "gso", "payload", "req_s", "spread", "sat_p50", "sat_p99",
             "loss", "rate", "fix_p50", "fix_p99", "fix_loss", "srv_us", "srv", "cli", "rss",
             "note")
    print_rows(hdr, [cols(s, names) for s in summary], {0, 18}, [s["server"] for s in summary])


def print_ratios(rat):
    hdr = ("proto", "echod", "conns", "gso", "payload", "vs", "srv µs ratio", "min-max",
           "rounds", "loss%", "vs loss%")
    rows = []
    for x in rat:
        rows.append((
            x["proto"], x["server"], str(x["conns"]),
            ("yes" if x["gso"] else "no") if x["proto"] == "udp" else "-",
            str(x["payload"]), display(x["vs"]),
            "-" if x["srv_ratio"] is None else f"{x['srv_ratio']:.2f}",
            "-" if x["srv_ratio_min"] is None
            else f"{x['srv_ratio_min']:.2f}-{x['srv_ratio_max']:.2f}",
            str(x["rounds"]), fmt_loss(x["loss_pct"]), fmt_loss(x["vs_loss_pct"]),
        ))
    print_rows(hdr, rows, {0, 1, 5}, [(x["proto"], x["server"], x["conns"], x["payload"],
                                       x["gso"]) for x in rat])


def main():
    if PEERS is None:
        log(f"run.py: {PEERS_ERROR}")
        return 2
    for prog in (ECHOD, ECHOBENCH) + ((REFSERVER,) if WITH_REF else ()):
        if not os.access(prog, os.X_OK):
            log(f"run.py: {prog} is missing: run `make bench` (it builds what it needs)")
            return 2
    ncpu = os.cpu_count() or 1
    if max(SERVER_CPU, CLIENT_CPU) >= ncpu or SERVER_CPU == CLIENT_CPU:
        log(f"run.py: needs two distinct CPUs (server {SERVER_CPU}, client {CLIENT_CPU}; "
            f"this machine has {ncpu})")
        return 2

    cells = cell_list()
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
            for i, cell in enumerate(order):
                proto, kind, conns, payload, gso = cell
                r = run_cell(cell)
                r["round"] = rnd
                results.append(r)
                c = r.get("closed")
                o = r.get("open")
                msg = (f"[round {rnd + 1}/{ROUNDS} {i + 1:2d}/{len(order)}] "
                       f"{display(kind):8s} c={conns:<4d} l={payload:<5d} ")
                if proto == "udp":
                    msg = msg.replace(" c=", f" udp{' gso' if gso else ''} c=")
                if proto == "cps":
                    msg = msg.replace(" c=", " cps c=")
                if proto == "fixed":
                    msg = msg.replace(" c=", " fixed c=")
                if c:
                    msg += (f"{c['req_s']:10,.0f} req/s p99 {fmt_us(c['p99_us']):>6s} "
                            f"srv {c['server_cpu_util'] * 100:3.0f}% "
                            f"cli {c['client_cpu_util'] * 100:3.0f}%")
                    if proto == "udp":
                        msg += f" loss {fmt_loss(c['loss_pct'])}%"
                if o:
                    msg += f" | {o['target_req_s']:,.0f}/s p99 {fmt_us(o['p99_us'])}"
                    if proto == "fixed" and o.get("server_cpu_us_per_req") is not None:
                        msg += (f" srv {o['server_cpu_us_per_req']:.2f} µs/req "
                                f"{o['server_cpu_util'] * 100:.0f}%")
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

    summary = summarize(results, cells)
    rat = ratios(results, cells)
    crat = variant_ratios(results, cells, "cps")
    brat = variant_ratios(results, cells, "tcp")
    head = headline(results)
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
        "udp": WITH_UDP, "udp_window": UDP_WINDOW, "udp_loss_timeout_s": UDP_LOSS_TIMEOUT,
        "peers": {f"{n}@{pr}": cmd for (n, pr), cmd in PEERS.items()},
        "fixed_rate": FIXED_RATE, "fixed_conns": FIXED_CONNS, "fixed_payload": FIXED_PAYLOAD,
        "aa": display(AA_KIND) if AA else None,
    }
    with open(JSON_OUT, "w") as f:
        json.dump({"meta": meta, "summary": summary, "headline": head, "ratios": rat,
                   "cps_ratios": crat, "busy_poll_ratios": brat, "runs": results}, f,
                  indent=1)

    print()
    print(f"echod benchmark - {meta['cpu_model']}, {ncpu} CPUs, Linux {meta['kernel']}; "
          f"server on CPU {SERVER_CPU}, client on CPU {CLIENT_CPU}, loopback")
    print(f"median of {ROUNDS} interleaved round(s); {WARMUP:g} s warm-up + {DURATION:g} s "
          f"per run; latency in µs; fixed rate = {RATE_FRACTION:g} x that round's "
          f"saturation req/s{'; QUICK mode (subset)' if QUICK else ''}")
    tcp = [s for s in summary if s["proto"] == "tcp"]
    udp = [s for s in summary if s["proto"] == "udp"]
    cps = [s for s in summary if s["proto"] == "cps"]
    fixed = [s for s in summary if s["proto"] == "fixed"]
    if tcp:
        print()
        print_table(tcp)
        print()
        print("req/s, sat: closed loop (one request in flight per connection).  ±%: spread "
              "of req/s over rounds.  fix: open loop at rate/s, latency from the intended send "
              "time.  srv µs/req, srv%, cli%, RSS: at saturation.  See bench/README.")
    if udp:
        print()
        print_udp_table(udp)
        print()
        print(f"UDP: flows x win datagrams in flight (closed loop), gso: the client sends them "
              f"as UDP_SEGMENT batches and receives with UDP_GRO.  loss%: datagrams not echoed "
              f"within {UDP_LOSS_TIMEOUT:g} s (sat, then fix).  srv µs/dgram: server CPU per "
              f"datagram at saturation.  See bench/README.")
    if cps:
        print()
        print_cps(cps, crat)
        print()
        print(f"connect/echo/close: every request ({CPS_PAYLOAD} bytes) on a connection of its "
              f"own, {CPS_CONNS} in flight (echod-bench --reconnect); p50/p99 include the "
              "connect.  Ratios: the variant over plain echod of the same backend, median of "
              "the per-round ratios (min-max).  See bench/README.")
    if brat:
        print()
        print_variants(brat)
        print()
        print(f"variants over the default configuration, same backend, connections and payload "
              f"(busy_poll: busy_poll_us = {BUSY_POLL_US}, 1 connection; batch_wait: "
              f"batch_wait_us = {BATCH_WAIT_US}): round trip (closed loop, p50 and p99), server "
              "CPU per request and req/s, median of the per-round ratios (min-max).  See "
              "bench/README.")
    if fixed:
        print()
        print_fixed_table(fixed)
        print()
        print(f"fixed load: open loop at {FIXED_RATE:,.0f} req/s over {FIXED_CONNS} connections "
              f"x {FIXED_PAYLOAD} bytes, the same for every server; latency from the intended "
              "send time; srv µs/req: server CPU per request answered.  See bench/README.")
    if head:
        print()
        print_headline(head)
        print()
        print(f"headline: echod / vs of each round, median over the rounds (min-max); fixed "
              f"load = {FIXED_RATE:,.0f} req/s, {FIXED_CONNS} connections x {FIXED_PAYLOAD} "
              f"bytes, open loop; saturation: closed loop at {FIXED_PAYLOAD} bytes.  better: "
              "which way a ratio favours echod (lower: < 1; higher: > 1).  best peer: the best "
              "peer of each round.  A/A: echod against itself under another name, the "
              "resolution of this ruler.  rate not met in N: in N of the rounds a server "
              "compared did not achieve 97% of the fixed load: its figures there are an "
              "overload's, not equal work.")
    if rat:
        print()
        print_ratios(rat)
        print()
        print("srv µs ratio: server CPU per request (datagram) at saturation, echod / vs, "
              "median of the per-round ratios (min-max over rounds); loss%: at saturation, "
              "median over rounds.")
    print(f"{elapsed:.0f} s; raw results: {JSON_OUT}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        kill_children()
