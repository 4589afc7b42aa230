#!/usr/bin/env python3
"""echod-bench, the installed benchmark client, as an operator runs it.
Its --help and echod-bench(1) list the same options (short and long), and
the man page's OUTPUT lists every key a run prints.  Against echod on
each backend: TCP closed loop, TCP open loop, UDP with and without --gso
exit 0 with errors=0, the JSON parses and holds the documented keys, the
key=value line the same keys; -H takes a host name.  Against tiny Python
servers: one that flips the byte at stream offset 1000 fails it (exit 1
naming request 3 and offset 1000); one that resets one connection of four
leaves a result (exit 0, errors=1, first_error); a closed TCP or UDP port,
a server that resets every connection and one that never echoes end it
with exit 3 and one line naming the server.  `make install DESTDIR=`
installs the program and its man page."""
import glob
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (_child_setup, _register, _unregister, ECHOD, Daemon, Tap,  # noqa: E402
                       backends, free_port)

BUILDDIR = os.path.dirname(os.path.dirname(ECHOD))
BENCH = os.environ.get("ECHOBENCH") or os.path.join(BUILDDIR, "bench", "echod-bench")
MAN = os.path.join(BUILDDIR, "man", "echod-bench.1")

tap = Tap(timeout=60 * len(backends()) + 60)


def bench(*argv, timeout=60):
    p = _register(subprocess.Popen([BENCH, *argv], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True,
                                   preexec_fn=_child_setup()))
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        _unregister(p)
    return p.returncode, out, err


# --- the options: --help against the man page's OPTIONS
def help_options(text):
    """{long: short or None} from --help's option lines."""
    return {m.group(2): m.group(1) for m in
            re.finditer(r"^  (?:-(\w), |    )--([a-z][a-z-]*)", text, re.M)}


def man_section(src, name):
    lines = src.splitlines()
    start = lines.index(".SH " + name) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith(".SH ")), len(lines))
    return lines[start:end]


def man_tagged(lines):
    """The tag line after each .TP of a section."""
    return [lines[i + 1] for i, line in enumerate(lines[:-1]) if line == ".TP"]


rc, helptext, err = bench("--help")
with open(MAN) as f:
    man = f.read()
helpopts = help_options(helptext)
manopts = {}
for tag in man_tagged(man_section(man, "OPTIONS")):
    longs = re.findall(r"\\-\\-([a-z][a-z\\-]*)", tag)
    shorts = re.findall(r"(?<![\w\\-])\\-([A-Za-z])\b", tag)
    for lo in longs:
        manopts[lo.replace("\\-", "-")] = shorts[0] if shorts else None
tap.ok(rc == 0 and len(helpopts) >= 20 and "echod-bench(1)" in helptext,
       f"--help: exit 0, {len(helpopts)} options, names the man page", helptext + err)
tap.ok(helpopts == manopts,
       "echod-bench(1) OPTIONS lists every option of --help, with its short form, and no other",
       f"only in --help: {sorted(set(helpopts.items()) - set(manopts.items()))}\n"
       f"only in the man page: {sorted(set(manopts.items()) - set(helpopts.items()))}")
synopsis = man_section(man, "SYNOPSIS")
tap.ok(any(".B echod\\-bench" == line for line in synopsis) and
       man.startswith(".TH ECHOD\\-BENCH 1 "),
       "the man page is section 1 and its synopsis names echod-bench")

man_keys = set()
for tag in man_tagged(man_section(man, "OUTPUT")):
    man_keys |= set(re.findall(r"\b([a-z][a-z0-9_]*)\b", re.sub(r'"[^"]*"', " ", tag))) - {"B", "BR"}
man_keys.discard("br")
tap.diag(f"keys documented: {' '.join(sorted(man_keys))}")
ALWAYS = {"mode", "conns", "payload", "duration_s", "req_s", "target_req_s", "requests",
          "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "mean_us", "errors",
          "unfinished", "server_cpu_us_per_req", "server_cpu_util", "server_rss_kb",
          "client_cpu_us_per_req", "client_cpu_util"}
UDP_KEYS = {"proto", "window", "gso", "sent", "lost", "loss_pct", "late"}
OPEN_KEYS = {"client_lag_p50_us", "client_lag_p99_us"}
tap.ok(ALWAYS | UDP_KEYS | OPEN_KEYS | {"first_error"} <= man_keys,
       "echod-bench(1) OUTPUT documents every key",
       f"missing: {sorted((ALWAYS | UDP_KEYS | OPEN_KEYS | {'first_error'}) - man_keys)}")
seen_keys = set()


def check_run(label, rc, out, err, mode, extra_keys=()):
    """A run that should have measured: exit 0, errors=0, documented keys."""
    try:
        r = json.loads(out) if rc == 0 else {}
    except ValueError:
        r = {}
    keys = set(r)
    seen_keys.update(keys)
    want = ALWAYS | set(extra_keys)
    tap.ok(rc == 0 and r.get("mode") == mode and r.get("errors") == 0 and
           r.get("requests", 0) > 0 and want <= keys and keys <= man_keys,
           f"{label}: exit 0, errors=0, {r.get('requests', 0)} requests, "
           f"{r.get('req_s', 0):.0f}/s, p99 {r.get('p99_us', 0):.0f} us, the documented keys",
           f"rc {rc}\n{out}\n{err}\nmissing {sorted(want - keys)}, "
           f"undocumented {sorted(keys - man_keys)}")
    return r


COMMON = ["-w", "0.2", "-d", "1", "--json"]
for be in backends():
    up = free_port(kind=socket.SOCK_DGRAM)
    with tap.guard(be), Daemon(be, udp={"enabled": True, "port": up,
                                        "listen": ["127.0.0.1"]}) as d:
        pid = str(d.pid)
        rc, out, err = bench("-p", str(d.port), "-c", "8", "-l", "1k", "--server-pid", pid, *COMMON)
        r = check_run(f"[{be}] TCP closed loop, 8 x 1 KiB", rc, out, err, "closed")
        tap.figure(f"{be}_tcp_closed_req_s", r.get("req_s", 0.0))
        rc, out, err = bench("-p", str(d.port), "-c", "8", "-l", "1k", "--rate", "2000",
                             "--server-pid", pid, *COMMON)
        r = check_run(f"[{be}] TCP open loop at 2000/s", rc, out, err, "open", OPEN_KEYS)
        tap.ok(r.get("target_req_s") == 2000 and r.get("unfinished") == 0,
               f"[{be}] open loop: target 2000/s, nothing unfinished", out)
        for gso in (None, "8"):
            extra = ["--gso", gso] if gso else []
            rc, out, err = bench("--udp", "-p", str(up), "-c", "4", "-l", "512", "--window", "8",
                                 *extra, "--server-pid", pid, *COMMON)
            label = f"[{be}] UDP 4 flows x 8 in flight" + (", GSO 8" if gso else "")
            r = check_run(label, rc, out, err, "closed", UDP_KEYS)
            tap.ok(r.get("proto") == "udp" and r.get("gso") == (8 if gso else 0) and
                   0 <= r.get("lost", -1) <= r.get("sent", 0),
                   f"{label}: {r.get('sent')} sent, loss {r.get('loss_pct')}%", out)
        # the same figures as key=value, and a host name
        rc, out, err = bench("-H", "localhost", "-p", str(d.port), "-c", "2", "-w", "0.1", "-d",
                             "0.3", timeout=30)
        kv = dict(f.split("=", 1) for f in out.split()) if rc == 0 and "=" in out else {}
        tap.ok(rc == 0 and set(kv) == ALWAYS - {"server_cpu_us_per_req", "server_cpu_util",
                                                "server_rss_kb"} and kv.get("errors") == "0",
               f"[{be}] -H localhost: key=value line with the JSON's keys (the unmeasured left out)",
               f"rc {rc}\n{out}\n{err}")
tap.ok(ALWAYS | UDP_KEYS | OPEN_KEYS <= seen_keys,
       "the runs printed every documented key but first_error",
       f"not seen: {sorted((ALWAYS | UDP_KEYS | OPEN_KEYS) - seen_keys)}")


# --- servers that are not right
class Server(threading.Thread):
    """A TCP server on 127.0.0.1 running handle(conn_number, sock) for each
    connection in a thread of its own."""

    def __init__(self, handle):
        super().__init__(daemon=True)
        self.handle = handle
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.ls.settimeout(0.2)
        self.port = self.ls.getsockname()[1]
        self.stop = threading.Event()

    def run(self):
        n = 0
        while not self.stop.is_set():
            try:
                c, _ = self.ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self.serve, args=(n, c), daemon=True).start()
            n += 1

    def serve(self, n, c):
        try:
            self.handle(n, c)
        except OSError:
            pass
        finally:
            c.close()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join(5)
        self.ls.close()


def echo(c, flip_at=None):
    """Echo c's stream; with flip_at, the byte at that stream offset comes
    back flipped."""
    off = 0
    while True:
        data = c.recv(65536)
        if not data:
            return
        if flip_at is not None and off <= flip_at < off + len(data):
            i = flip_at - off
            data = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]
        c.sendall(data)
        off += len(data)


def reset(c):
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def silent(c):
    while c.recv(65536):
        pass


with Server(lambda n, c: echo(c, 1000 if n == 0 else None)) as s:
    rc, out, err = bench("-p", str(s.port), "-c", "1", "-l", "256", "-w", "0", "-d", "1")
tap.ok(rc == 1 and out == "" and "FAIL conn=0 request=3 offset=1000 " in err and
       err.count("\n") == 1,
       "a server flipping the byte at offset 1000: exit 1, one line naming request 3, offset 1000",
       f"rc {rc}: {out} {err}")

def reset_after_request(c):
    """Reset c once its first request came (connected, then lost)."""
    c.recv(65536)
    reset(c)


with Server(lambda n, c: reset_after_request(c) if n == 0 else echo(c)) as s:
    rc, out, err = bench("-p", str(s.port), "-c", "4", "-w", "0.1", "-d", "0.5", "--json")
r = json.loads(out) if rc == 0 else {}
tap.ok(rc == 0 and r.get("errors") == 1 and r.get("requests", 0) > 0 and
       re.match(r"^conn=\d+ (recv|send): E[A-Z]+$", r.get("first_error", "")) and
       set(r) <= man_keys,
       f"one connection of four reset: exit 0, errors=1, first_error {r.get('first_error')!r}",
       f"rc {rc}: {out} {err}")

closed = free_port()
rc, out, err = bench("-p", str(closed), "-d", "0.3", "-w", "0")
tap.ok(rc == 3 and out == "" and err == f"echod-bench: cannot connect to 127.0.0.1 port {closed}: "
       "ECONNREFUSED (Connection refused) (conn=0)\n",
       "a closed TCP port: exit 3, one line naming the server", f"rc {rc}: {out} {err}")

closed = free_port(kind=socket.SOCK_DGRAM)
rc, out, err = bench("--udp", "-p", str(closed), "-c", "2", "-d", "0.3", "-w", "0.1")
tap.ok(rc == 3 and out == "" and err.count("\n") == 1 and
       f"127.0.0.1 port {closed} refused the datagrams" in err,
       "a closed UDP port: exit 3, one line naming the server", f"rc {rc}: {out} {err}")

with Server(lambda n, c: reset_after_request(c)) as s:
    rc, out, err = bench("-p", str(s.port), "-c", "4", "-w", "0.1", "-d", "0.5")
tap.ok(rc == 3 and out == "" and err.count("\n") == 1 and
       f"every connection lost: 127.0.0.1 port {s.port} reset them" in err,
       "a server resetting every connection: exit 3, one line", f"rc {rc}: {out} {err}")

with Server(lambda n, c: silent(c)) as s:
    rc, out, err = bench("-p", str(s.port), "-c", "2", "-w", "0.1", "-d", "0.5")
tap.ok(rc == 3 and "requests=0 " in out and err.count("\n") == 1 and
       f"no echo: 127.0.0.1 port {s.port} answered none" in err,
       "a server that never echoes: the line, then exit 3 with one line", f"rc {rc}: {out} {err}")

rc, out, err = bench("-H", "no-such-host.invalid", "-d", "0.3")
tap.ok(rc == 3 and err.startswith("echod-bench: cannot resolve host 'no-such-host.invalid': "),
       "a host name not found: exit 3", f"rc {rc}: {err}")
rc, out, err = bench("-p", "0")
tap.ok(rc == 2 and err.startswith("echod-bench: invalid port '0'"), "a bad port: exit 2",
       f"rc {rc}: {err}")
rc, out, err = bench("--version")
tap.ok(rc == 0 and re.match(r"^echod-bench \(echod\) \S+\n$", out), f"--version: {out.strip()}",
       err)

# --- make install DESTDIR=: the program and the man page in place
dest = tempfile.mkdtemp(prefix="echodtest.install.")
try:
    p = subprocess.run(["make", "-s", "-C", BUILDDIR, "install-binPROGRAMS", "install-man",
                        "DESTDIR=" + dest], capture_output=True, text=True, timeout=120)
    progs = glob.glob(os.path.join(dest, "**", "bin", "echod-bench"), recursive=True)
    pages = glob.glob(os.path.join(dest, "**", "man1", "echod-bench.1"), recursive=True)
    tap.ok(p.returncode == 0 and len(progs) == 1 and os.access(progs[0], os.X_OK) and
           len(pages) == 1,
           "make install DESTDIR=: " + ", ".join(os.path.relpath(f, dest) for f in progs + pages),
           p.stdout + p.stderr)
finally:
    shutil.rmtree(dest, ignore_errors=True)
tap.done()
