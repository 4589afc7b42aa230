"""Shared by the system tests (test_systemd.py, test_package.py): small
socket and HTTP helpers, and the clients that run on the host while systemd
restarts echod in the container: Pinger (established connections doing
byte-checked round trips) and Prober (a new connection per 1-byte echo,
counting refusals and resets).  The TAP scaffolding is nspawn.py's."""

import contextlib
import errno
import os
import signal
import socket
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "functional"))
import echodtest     # noqa: E402
import metricsutil   # noqa: E402
import nspawn        # noqa: E402

MiB = 1024 * 1024


def free_port_dual():
    """A TCP port free on [::] (dual stack) and 127.0.0.1 right now."""
    for _ in range(20):
        try:
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind(("::", 0))
            port = s.getsockname()[1]
            s.close()
        except OSError:
            return echodtest.free_port()
        try:
            with socket.socket() as t:
                t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    return echodtest.free_port()


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(port, path="/metrics", timeout=10):
    """(status, body text) of GET http://127.0.0.1:port/path (no proxy)."""
    try:
        with _opener.open("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def scrape(port, timeout=10):
    """Parsed series, or None if the endpoint does not answer 200."""
    try:
        status, body = http_get(port, timeout=timeout)
    except OSError:
        return None
    if status != 200:
        return None
    return metricsutil.parse(body)[0]


def mval(series, name, **labels):
    if series is None:
        return None
    if not any(n == name for (n, _l) in series):
        return None
    return metricsutil.value(series, name, **labels)


def port_closed(port, host="127.0.0.1"):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((host, port))
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        s.close()


def echo_once(port, payload, timeout=10):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = bytearray()
        while True:
            b = s.recv(65536)
            if not b:
                return bytes(got)
            got += b


def err_name(e):
    if isinstance(e, socket.timeout):
        return "timeout"
    if isinstance(e, OSError) and e.errno:
        return errno.errorcode.get(e.errno, str(e.errno))
    return type(e).__name__ + (": " + str(e) if str(e) else "")


# ------------------------------------------------------------ test clients

_PATTERN = os.urandom(1 << 20)
_ACTIVE = set()          # running Pinger/Prober objects, aborted on any exit path


def abort_clients():
    for cl in list(_ACTIVE):
        cl.abort()


class Pinger:
    """conns connections doing round trips (1..16 KiB, every byte compared)
    until stop(); connected, and one round trip done, when start() returns."""

    def __init__(self, port, conns=4, timeout=15):
        self.port, self.nconns, self.timeout = port, conns, timeout
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.rounds = [0] * conns
        self.bytes = [0] * conns
        self.errors = []            # (t, conn, what)
        self.alive = [False] * conns
        self.threads = []
        self.socks = []

    def start(self):
        for i in range(self.nconns):
            s = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.socks.append(s)
        for i, s in enumerate(self.socks):
            self._round(i, s, 4096 + i)          # served before start() returns
            self.alive[i] = True
        _ACTIVE.add(self)
        for i, s in enumerate(self.socks):
            t = threading.Thread(target=self._run, args=(i, s), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def abort(self):
        """Stop at once (from the main thread, on a timeout or an error)."""
        self.stop_ev.set()
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        _ACTIVE.discard(self)

    def _round(self, i, s, n):
        off = (self.bytes[i] * 7919 + i * 104729) % (len(_PATTERN) - n)
        data = _PATTERN[off:off + n]
        s.sendall(data)
        got = bytearray()
        while len(got) < n:
            b = s.recv(n - len(got))
            if not b:
                raise EOFError("EOF after %d of %d bytes of round trip %d"
                               % (len(got), n, self.rounds[i] + 1))
            got += b
        if got != data:
            k = next(j for j in range(n) if got[j] != data[j])
            raise ValueError("round trip %d: byte %d of %d differs (stream offset %d)"
                             % (self.rounds[i] + 1, k, n, self.bytes[i] + k))
        with self.lock:
            self.rounds[i] += 1
            self.bytes[i] += n

    def _run(self, i, s):
        n = 1 + (i * 977) % 16384
        try:
            while not self.stop_ev.is_set():
                n = 1 + (n * 1103515245 + 12345) % 16384
                self._round(i, s, n)
        except BaseException as e:      # noqa: BLE001 - recorded, reported
            with self.lock:
                self.errors.append((time.monotonic(), i, err_name(e)))
                self.alive[i] = False
        finally:
            try:
                s.close()
            except OSError:
                pass

    def progress(self):
        with self.lock:
            return sum(self.rounds)

    def all_alive(self):
        with self.lock:
            return all(self.alive)

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(self.timeout + 5)
        _ACTIVE.discard(self)
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass

    def summary(self):
        with self.lock:
            return "%d connections, %d round trips, %.1f MiB echoed, errors: %s" % (
                self.nconns, sum(self.rounds), sum(self.bytes) / MiB,
                "; ".join("conn %d at +%.2f s: %s" % (i, t - nspawn.T_START, w)
                          for t, i, w in self.errors) or "none")


class Prober:
    """Connect, send 1 byte, read it back, close; repeatedly (nthreads loops,
    a pause s between probes) until stop()."""

    def __init__(self, port, nthreads=3, timeout=10, pause=0.002):
        self.port, self.nthreads, self.timeout, self.pause = port, nthreads, timeout, pause
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.results = []           # (t_start, t_end, error or None)
        self.threads = []

    def start(self):
        _ACTIVE.add(self)
        for i in range(self.nthreads):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def abort(self):
        self.stop_ev.set()
        _ACTIVE.discard(self)

    def _run(self, i):
        k = i
        while not self.stop_ev.is_set():
            k += self.nthreads
            b = bytes([k & 0xff])
            t0 = time.monotonic()
            err = None
            try:
                with socket.create_connection(("127.0.0.1", self.port),
                                              timeout=self.timeout) as s:
                    s.sendall(b)
                    got = s.recv(1)
                    if got != b:
                        err = "EOF instead of the echo" if not got else "wrong byte"
            except BaseException as e:      # noqa: BLE001
                err = err_name(e)
            with self.lock:
                self.results.append((t0, time.monotonic(), err))
            self.stop_ev.wait(self.pause)

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(self.timeout + 5)
        _ACTIVE.discard(self)

    def stats(self, t_from=None, t_to=None):
        with self.lock:
            res = list(self.results)
        if t_from is not None:
            res = [r for r in res if r[1] >= t_from and r[0] <= t_to]
        errs = {}
        for _t0, _t1, e in res:
            if e:
                errs[e] = errs.get(e, 0) + 1
        worst = max((t1 - t0 for t0, t1, _e in res), default=0.0)
        return len(res), errs, worst


def safe(fn):
    """fn() for diagnostics: its exception as text instead of raising."""
    try:
        return fn()
    except Exception as e:      # noqa: BLE001
        return "(%s: %s)" % (type(e).__name__, e)


def make_env():
    env = dict(os.environ)
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "GNUMAKEFLAGS"):
        env.pop(k, None)
    env["LC_ALL"] = "C"
    return env


class Through:
    """What the host's clients saw while action() restarted echod: a Pinger
    (4 established connections doing byte-checked round trips) and a Prober
    (a new connection per 1-byte echo) ran before, during and after it."""

    def __init__(self, port, action, settled, settle=1.0):
        """Run action() (its value in .result), then settled() (waits for
        the service to be back; its value in .state), then let the clients
        run settle s more (and until 20 round trips are done, 3 s at most)."""
        p = Pinger(port, conns=4).start()
        q = Prober(port).start()
        try:
            time.sleep(0.5)
            self.before = p.progress()
            self.t0 = time.monotonic()
            self.result = action()
            self.t1 = time.monotonic()
            self.state = settled()
            at = p.progress()
            time.sleep(settle)
            echodtest.poll_until(lambda: p.progress() > at + 20 or not p.all_alive(), 3, 0.1)
            self.after = p.progress() - at
            self.alive = p.all_alive()
        finally:
            q.stop()
            p.stop()
        self.pinger, self.prober = p, q

    def report(self, tap, what, context="", label=None):
        """Two points (named label: ..., what by default): the established
        connections stayed byte-exact through the action (the what), and no
        new connection was refused, reset or unanswered."""
        p = self.pinger
        tap.ok(self.alive and not p.errors and self.after > 0 and self.before > 0,
               "%s: 4 connections established before the %s stay connected and byte-exact "
               "through it (%d round trips after it)" % (label or what, what, self.after),
               "%s\n%s" % (p.summary(), context))
        tap.diag("client: " + p.summary())
        n, errs, worst = self.prober.stats()
        nw, _errs, _worst = self.prober.stats(self.t0, self.t1)
        tap.ok(n > 0 and nw > 0 and not errs,
               "%s: a client connecting repeatedly during the %s never sees ECONNREFUSED, a "
               "reset or a missing echo" % (label or what, what),
               "probes: %d (%d during the %s), errors: %r, slowest %.2f s"
               % (n, nw, what, errs, worst))
        tap.diag("probes: %d in all, %d during the %.2f s %s, errors %s, slowest %.3f s"
                 % (n, nw, self.t1 - self.t0, what, errs or "none", worst))


def run_steps(tap, steps, context):
    """Run each (name, fn) of steps in turn: an exception fails one point
    (with its traceback and context(), the journal say) and the next step
    still runs; the test clients a step started are killed after it."""
    for name, fn in steps:
        t0 = time.monotonic()
        try:
            fn()
        except Exception as e:      # noqa: BLE001 - one failed step, go on
            tap.ok(False, "%s: %s: %s" % (name, type(e).__name__,
                                          str(e).splitlines()[0] if str(e) else ""),
                   traceback.format_exc() + "\n" + safe(context))
        finally:
            echodtest.kill_children()
        tap.diag("[%s: %.1f s]" % (name, time.monotonic() - t0))


@contextlib.contextmanager
def container_run(tap, c):
    """Around the steps run in container c: on any exception, stop the host's
    clients and show the end of the container's console before it
    propagates (the container is then powered off by its own exit)."""
    try:
        yield
    except BaseException:
        abort_clients()
        echodtest.kill_children()
        if c.log_path:
            tap.diag(c.console_tail(30))
        raise


@contextlib.contextmanager
def guarded(tap):
    """The whole run of a system test: any exception (the alarm's Timeout
    too) fails a harness point; the alarm is cancelled and the host's
    clients stopped whatever happens."""
    try:
        yield
    except BaseException as e:      # noqa: BLE001 - report, clean up, fail
        tap.harness_failed(e)
    finally:
        signal.alarm(0)
        abort_clients()
        echodtest.kill_children()


class UdpStream:
    """Numbered datagrams of 1 KiB sent to 127.0.0.1:port at a steady pace
    from one socket, and their echoes collected by a second thread: what
    was lost, corrupted, duplicated or reordered, for a restart in between.
    start(), then stop(drain) returns the summary dict."""

    def __init__(self, port, interval=0.001, size=1024):
        self.port, self.interval, self.size = port, interval, size
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.s.connect(("127.0.0.1", port))
        self.s.settimeout(0.2)
        self.sent = 0
        self.got = []
        self.bad = 0
        self.stop_ev = threading.Event()
        self.done_ev = threading.Event()
        self.threads = []

    def payload(self, i):
        head = i.to_bytes(8, "big")
        return head + _PATTERN[(i * 7919) % 4096:][:self.size - 8]

    def _send(self):
        nxt = time.monotonic()
        while not self.stop_ev.is_set():
            try:
                self.s.send(self.payload(self.sent))
                self.sent += 1
            except OSError:
                pass
            nxt += self.interval
            self.stop_ev.wait(max(0.0, nxt - time.monotonic()))

    def _recv(self):
        while not self.done_ev.is_set():
            try:
                d = self.s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                continue
            i = int.from_bytes(d[:8], "big") if len(d) >= 8 else -1
            if i < 0 or d != self.payload(i):
                self.bad += 1
            else:
                self.got.append(i)

    def start(self):
        _ACTIVE.add(self)
        for fn in (self._send, self._recv):
            t = threading.Thread(target=fn, daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def abort(self):
        self.stop_ev.set()
        self.done_ev.set()
        _ACTIVE.discard(self)

    def stop(self, drain=3.0):
        self.stop_ev.set()
        self.threads[0].join(5)
        end = time.monotonic() + drain
        while len(self.got) + self.bad < self.sent and time.monotonic() < end:
            time.sleep(0.05)
        self.done_ev.set()
        self.threads[1].join(5)
        _ACTIVE.discard(self)
        self.s.close()
        got = self.got
        return {"sent": self.sent, "echoed": len(got), "lost": self.sent - len(set(got)),
                "corrupt": self.bad, "duplicated": len(got) - len(set(got)),
                "reordered": sum(1 for a, b in zip(got, got[1:]) if b < a)}


def udp_echo(port, payloads, host="127.0.0.1", timeout=5):
    """Each payload sent as one datagram and its echo awaited: the payloads
    whose echo did not come back whole (a list of their sizes)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    bad = []
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.connect((host, port))
        s.settimeout(timeout)
        for p in payloads:
            try:
                s.send(p)
                if s.recv(65536) != p:
                    bad.append(len(p))
            except OSError:
                bad.append(len(p))
    return bad
