"""loadutil - helpers for the load and bad-input tests (Python 3 stdlib).

Figures from /proc (CLOSE_WAIT sockets, socket memory), sizes scaled by
environment variables, clients whose first line is read while they run,
the daemon's metrics by scrape, and a deliberately broken echo server
that proves the integrity client notices what it must.
"""
import os
import select
import socket
import threading
import time

from echodtest import ClientResult, Daemon, client_wait, free_port
import metricsutil

TCP_STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}


def env_int(name, default):
    """An integer from the environment (suffix k/m/g: binary), or default."""
    v = os.environ.get(name, "").strip().lower()
    if not v:
        return default
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(v[-1], 1)
    return int(v[:-1] if mult > 1 else v) * mult


def env_float(name, default):
    v = os.environ.get(name, "").strip()
    return float(v) if v else default


def tcp_states(port):
    """{state name: count} of the sockets whose local port is port
    (the server's side), from /proc/net/tcp and tcp6."""
    counts = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if int(parts[1].rsplit(":", 1)[1], 16) != port:
                        continue
                    st = TCP_STATES.get(parts[3], parts[3])
                    counts[st] = counts.get(st, 0) + 1
        except FileNotFoundError:
            pass
    return counts


class MetricsDaemon(Daemon):
    """A Daemon with its metrics endpoint on a free loopback port, and
    counters read by scrape (summed over workers)."""

    def __init__(self, backend, **settings):
        settings.setdefault("metrics", {"enabled": True, "address": "127.0.0.1",
                                        "port": free_port()})
        settings.setdefault("log_level", "info")
        super().__init__(backend, **settings)

    def metric(self, name, **labels):
        series = metricsutil.scrape(self.settings["metrics"]["port"])
        return int(metricsutil.value(series, name, **labels))

    def metrics(self, *names):
        series = metricsutil.scrape(self.settings["metrics"]["port"])
        return {n: int(metricsutil.value(series, n)) for n in names}


def read_line(p, prefix, timeout):
    """Read p's stdout (a client_bg process) until a line starting with
    prefix, for at most timeout s; returns what was read (to hand to
    client_wait_after) and the line, or None if it did not come."""
    fd = p.stdout.fileno()
    got = b""
    end = time.monotonic() + timeout
    while True:
        for line in got.decode(errors="replace").splitlines(True):
            if line.startswith(prefix) and line.endswith("\n"):
                return got, line.strip()
        left = end - time.monotonic()
        if left <= 0:
            return got, None
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return got, None
        got += chunk


def client_wait_after(p, early):
    """client_wait for a client part of whose stdout read_line consumed."""
    res = client_wait(p)
    return ClientResult(res.rc, early.decode(errors="replace") + res.out, res.err, res.argv)


def wait_quiet(daemon, port, timeout=10):
    """Poll until echod has no client connection left (metrics), none of
    its sockets is in CLOSE_WAIT and its fd count is stable; returns
    (current connections, CLOSE_WAIT count)."""
    last = [None, None]

    def quiet():
        last[0] = daemon.metric("echod_connections_current")
        last[1] = tcp_states(port).get("CLOSE_WAIT", 0)
        return last[0] == 0 and last[1] == 0
    end = time.monotonic() + timeout
    while not quiet() and time.monotonic() < end:
        time.sleep(0.05)
    return last[0], last[1]


def fd_baseline(daemon, seconds=0.5):
    """echod's fd count at rest: the least seen over seconds (a scrape's
    own connection to the metrics endpoint closes a moment later)."""
    low = daemon.fd_count()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.05)
        low = min(low, daemon.fd_count())
    return low


class BrokenEchoServer:
    """An echo server on 127.0.0.1 that misbehaves on purpose, to show a
    check can fail.  mode: "flip" (byte number at is XORed with 0x01),
    "drop" (byte number at is left out), "delay" (the first reply waits
    at seconds), "echo" (behaves).  Serves each connection in a thread;
    counts peers and the most connections open at once.  With done_after,
    a connection stops counting as open once it has received that many
    bytes, before it sends the last of them back: its client cannot have
    them yet, so a client that opens a connection only after another has
    finished is never seen above its limit, however late the server's
    threads run."""

    def __init__(self, mode, at=0, done_after=None):
        self.mode, self.at, self.done_after = mode, at, done_after
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.peers = set()
        self.open = 0
        self.max_open = 0
        self.delayed = False
        self._lock = threading.Lock()
        self._stop = False
        self._t = threading.Thread(target=self._accept_loop, daemon=True)
        self._t.start()

    def _accept_loop(self):
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                s, peer = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.peers.add(peer[0])
                self.open += 1
                self.max_open = max(self.max_open, self.open)
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _done(self):
        with self._lock:
            self.open -= 1

    def _serve(self, s):
        off = 0
        counted = True
        try:
            s.settimeout(30)
            while True:
                d = s.recv(65536)
                if not d:
                    break
                out = bytearray(d)
                if self.mode in ("flip", "drop") and off <= self.at < off + len(d):
                    k = self.at - off
                    if self.mode == "flip":
                        out[k] ^= 0x01
                    else:
                        del out[k]
                if self.mode == "delay" and not self.delayed:
                    self.delayed = True
                    time.sleep(self.at)
                off += len(d)
                if counted and self.done_after is not None and off >= self.done_after:
                    counted = False
                    self._done()
                s.sendall(bytes(out))
        except OSError:
            pass
        finally:
            if counted:
                self._done()
            s.close()

    def close(self):
        self._stop = True
        self.sock.close()
        self._t.join(timeout=2)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
        return False
