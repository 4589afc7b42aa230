"""echodtest - shared harness for echod's functional tests (Python 3 stdlib).

Each test script speaks TAP (automake's tap-driver): build a Tap, run its
cases once per backend (backends()), call tap.done() at the end.

    from echodtest import Tap, Daemon, backends, client

    tap = Tap()
    for be in backends():
        with tap.guard(be), Daemon(be, max_pending=65536) as d:
            res = client(d.port, "-n", "1M")
            tap.ok(res.ok, f"[{be}] 1 MiB byte-exact", diag=res.diag())
    tap.done()

Environment: ECHOD, ECHOCLIENT, ECHOD_SRCDIR, SYSTEMD_SOCKET_ACTIVATE (set
by `make check`; by hand they default to the build tree two levels up from
this file), ECHOD_BACKENDS (comma or space separated, default "epoll"),
ECHOD_KEEP_TMP=1 keeps each daemon's temp dir (config and log).

Every process started here is registered and killed by PID (SIGKILL) when
the script exits, times out (Tap's alarm) or is interrupted, so no daemon
or client outlives its test.
"""

import array
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
_TOP = os.path.normpath(os.path.join(_HERE, "..", ".."))


def _path_from_env(name, default):
    v = os.environ.get(name, "")
    return v if v else default


ECHOD = _path_from_env("ECHOD", os.path.join(_TOP, "src", "echod"))
ECHOCLIENT = _path_from_env("ECHOCLIENT", os.path.join(_TOP, "tests", "echoclient"))
ECHOD_SRCDIR = _path_from_env("ECHOD_SRCDIR", _TOP)
# may legitimately be empty (configure did not find it)
SYSTEMD_SOCKET_ACTIVATE = os.environ.get("SYSTEMD_SOCKET_ACTIVATE",
                                         shutil.which("systemd-socket-activate") or "")

KiB = 1024
MiB = 1024 * 1024

# Under `./configure --enable-sanitizers` (make check sets ECHOD_SANITIZERS=1
# and ASAN_OPTIONS/UBSAN_OPTIONS with halt_on_error): every process started
# from here writes its sanitizer reports under SAN_DIR, and Tap.done() fails
# the script if there is any.
SANITIZERS = os.environ.get("ECHOD_SANITIZERS") == "1"
SAN_DIR = None
if SANITIZERS:
    SAN_DIR = tempfile.mkdtemp(prefix="echodtest.san.")
    for _var, _name in (("ASAN_OPTIONS", "asan"), ("UBSAN_OPTIONS", "ubsan")):
        _opts = os.environ.get(_var, "")
        os.environ[_var] = (_opts + ":" if _opts else "") + \
            f"log_path={os.path.join(SAN_DIR, _name)}"


def sanitizer_reports():
    """[(file name, text)] of the sanitizer reports written so far."""
    if not SAN_DIR or not os.path.isdir(SAN_DIR):
        return []
    out = []
    for name in sorted(os.listdir(SAN_DIR)):
        with open(os.path.join(SAN_DIR, name), errors="replace") as f:
            out.append((name, f.read()))
    return out

# ---------------------------------------------------------------- processes

_children = {}          # pid -> Popen, killed by PID on exit


def _register(p):
    _children[p.pid] = p
    return p


def _unregister(p):
    _children.pop(p.pid, None)


def kill_children():
    """SIGKILL every process this harness started and still runs; reap."""
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


_PR_SET_PDEATHSIG = 1
try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:       # pragma: no cover
    _libc = None


def _child_setup(extra=None):
    """preexec_fn: die with the harness (PDEATHSIG), then run extra()."""
    def fn():
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if extra is not None:
            extra()
    return fn


# ---------------------------------------------------------------------- TAP

class Tap:
    """TAP producer: ok/skip/diag, trailing plan in done().

    timeout: seconds for the whole script (default 60 per backend + 30);
    when it expires the script prints "Bail out!", kills its children and
    exits 1.
    """

    def __init__(self, timeout=None):
        self.n = 0
        self.failed = 0
        if timeout is None:
            timeout = 60 * len(backends()) + 30
        self.timeout = timeout
        signal.signal(signal.SIGALRM, self._on_alarm)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.alarm(int(timeout))

    def _on_alarm(self, signum, frame):
        self.bail(f"script timeout after {self.timeout} s")

    def _on_term(self, signum, frame):
        self.bail("terminated")

    def _check_sanitizers(self):
        if not SANITIZERS:
            return
        reports = sanitizer_reports()
        self.ok(not reports, f"no sanitizer report from any process of this script "
                f"({len(reports)} found)",
                diag="\n".join(f"--- {n}\n{t[:6000]}" for n, t in reports[:5]))
        shutil.rmtree(SAN_DIR, ignore_errors=True)

    def bail(self, reason):
        kill_children()
        for n, t in sanitizer_reports()[:5]:
            self.diag(f"sanitizer report {n}:\n{t[:6000]}")
        if SAN_DIR:
            shutil.rmtree(SAN_DIR, ignore_errors=True)
        print(f"Bail out! {reason}", flush=True)
        os._exit(1)

    def diag(self, text):
        if text is None:
            return
        for line in str(text).rstrip("\n").splitlines() or [""]:
            print(f"# {line}")
        sys.stdout.flush()

    def figure(self, name, value):
        """A measured figure, as a TAP diagnostic "# name: value" (floats
        with 3 decimals), printed whether or not a test point uses it."""
        if isinstance(value, float):
            value = f"{value:.3f}"
        self.diag(f"{name}: {value}")

    def ok(self, cond, name, diag=None):
        self.n += 1
        cond = bool(cond)
        name = name.replace("#", "\\#")
        print(f"{'ok' if cond else 'not ok'} {self.n} - {name}")
        if not cond:
            self.failed += 1
            self.diag(diag)
        sys.stdout.flush()
        return cond

    def skip(self, name, reason):
        self.n += 1
        print(f"ok {self.n} - {name} # SKIP {reason}", flush=True)

    def rss_ok(self, cond, name, diag=None):
        """An RSS bound on memory the daemon allocates and frees (reloads,
        scrapes): under ASan freed memory waits in its quarantine, so the
        bound means nothing there; LeakSanitizer checks leaks at exit."""
        if SANITIZERS:
            self.skip(name, "ASan's quarantine holds freed memory; LeakSanitizer checks leaks at exit")
        else:
            self.ok(cond, name, diag=diag)

    def done(self):
        signal.alarm(0)
        kill_children()
        self._check_sanitizers()
        print(f"1..{self.n}", flush=True)
        sys.exit(1 if self.failed else 0)

    def guard(self, label):
        """Context manager: an exception in the block (daemon did not
        start, a client hung...) becomes one failed test point instead of
        ending the script."""
        return _Guard(self, label)


class _Guard:
    def __init__(self, tap, label):
        self.tap = tap
        self.label = label

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is None:
            return False
        if issubclass(et, (KeyboardInterrupt, SystemExit)):
            return False
        self.tap.ok(False, f"[{self.label}] {et.__name__}: {str(ev).splitlines()[0] if str(ev) else ''}",
                    diag=str(ev))
        return True


# ------------------------------------------------------------------ helpers

def backends():
    """Backends to test, from ECHOD_BACKENDS (default: both)."""
    v = os.environ.get("ECHOD_BACKENDS", "").replace(",", " ").split()
    return v if v else ["epoll", "io_uring"]


def free_port(host="127.0.0.1", kind=socket.SOCK_STREAM):
    """A TCP (or, with kind=SOCK_DGRAM, UDP) port free right now on host
    (bind port 0, read, close)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def have_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def fmt_size(n):
    """1 B, 1000 B, 64 KiB, 4 MiB"""
    if n >= MiB and n % MiB == 0:
        return f"{n // MiB} MiB"
    if n >= KiB and n % KiB == 0:
        return f"{n // KiB} KiB"
    return f"{n} B"


def poll_until(fn, timeout, interval=0.05):
    """Call fn() until it returns a true value or timeout s pass; return
    the last value."""
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() >= end:
            return v
        time.sleep(interval)


def _conf_value(v, indent=""):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[ " + ", ".join(_conf_value(x) for x in v) + " ]"
    if isinstance(v, dict):
        inner = "".join(f"{indent}  {k} = {_conf_value(x, indent + '  ')};\n"
                        for k, x in v.items() if x is not None)
        return "{\n" + inner + indent + "}"
    raise TypeError(f"cannot write {v!r} to a libconfig file")


def config_text(settings):
    """libconfig text for a dict of settings (None values are left out)."""
    return "".join(f"{k} = {_conf_value(v)};\n"
                   for k, v in settings.items() if v is not None)


# ------------------------------------------------------------------- daemon

class DaemonError(Exception):
    pass


class Daemon:
    """Run echod on a temp config; a context manager.

    Daemon(backend, argv_prefix=[], env=None, preexec=None, args=[],
           wait_ready=True, ready_timeout=10, **settings)

    settings override the test defaults (backend, port = a free port,
    listen = ["127.0.0.1"], metrics = { enabled = false; }, log_level =
    "debug"); a value of None drops a setting.  int -> int, str ->
    quoted, bool -> true/false, list -> [ ... ], dict -> group.
    env is merged into os.environ (None values unset).  The daemon's
    stdout and stderr go to DIR/echod.log.
    """

    def __init__(self, backend="epoll", argv_prefix=(), env=None, preexec=None,
                 args=(), wait_ready=True, ready_timeout=10, inherit_fds=(), **settings):
        self.inherit_fds = list(inherit_fds)   # become fds 3, 4, ... in the daemon
        self.backend = backend
        self.argv_prefix = list(argv_prefix)
        self.args = list(args)
        self.env_extra = env or {}
        self.preexec = preexec
        self.wait_ready = wait_ready
        self.ready_timeout = ready_timeout
        self.settings = {
            "backend": backend,
            "port": None,
            "listen": ["127.0.0.1"],
            "metrics": {"enabled": False},
            "log_level": "debug",
        }
        self.settings.update(settings)
        if self.settings.get("port") is None and "port" not in settings:
            host = (self.settings.get("listen") or ["127.0.0.1"])[0]
            try:
                self.settings["port"] = free_port(host)
            except OSError:
                self.settings["port"] = free_port()
        self.dir = tempfile.mkdtemp(prefix="echodtest.")
        self.conf = os.path.join(self.dir, "echod.conf")
        self.logpath = os.path.join(self.dir, "echod.log")
        self.proc = None
        self._write(config_text(self.settings))

    # --- lifecycle
    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, et, ev, tb):
        self.cleanup()
        return False

    def argv(self):
        return self.argv_prefix + [ECHOD, "-c", self.conf] + self.args

    def start(self):
        env = dict(os.environ)
        for k, v in self.env_extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        self._logf = open(self.logpath, "ab")
        preexec = self.preexec
        if self.inherit_fds:
            fds, user = self.inherit_fds, self.preexec

            def preexec():
                # move them out of the way, then into place as 3, 4, ...
                import fcntl
                tmp = [fcntl.fcntl(fd, fcntl.F_DUPFD, 1000) for fd in fds]
                for i, fd in enumerate(tmp):
                    os.dup2(fd, 3 + i, inheritable=True)
                if user:
                    user()
        self.proc = _register(subprocess.Popen(
            self.argv(), stdin=subprocess.DEVNULL, stdout=self._logf,
            stderr=subprocess.STDOUT, env=env, close_fds=not self.inherit_fds,
            preexec_fn=_child_setup(preexec)))
        if not self.wait_ready:
            return self
        end = time.monotonic() + self.ready_timeout
        while True:
            if re.search(r"\bready\b", self.log()):
                return self
            if self.proc.poll() is not None:
                raise DaemonError(
                    f"echod exited with status {self.proc.returncode} before ready "
                    f"({' '.join(self.argv())})\n--- config:\n{self.config()}"
                    f"--- log:\n{self.log_tail()}")
            if time.monotonic() >= end:
                raise DaemonError(
                    f"echod not ready after {self.ready_timeout} s "
                    f"({' '.join(self.argv())})\n--- config:\n{self.config()}"
                    f"--- log:\n{self.log_tail()}")
            time.sleep(0.02)

    def cleanup(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.kill(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            _unregister(self.proc)
        if getattr(self, "_logf", None):
            self._logf.close()
            self._logf = None
        if os.environ.get("ECHOD_KEEP_TMP") == "1":
            print(f"# kept {self.dir}", flush=True)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout=15):
        """Wait for the process to exit; its status, or None on timeout."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def stop(self, timeout=15):
        """SIGTERM and wait: the exit status (negative = killed by that
        signal), or None if it did not exit in time (it is then killed)."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.signal(signal.SIGTERM)
        rc = self.wait(timeout)
        if rc is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        return rc

    # --- config
    @property
    def pid(self):
        return self.proc.pid

    @property
    def port(self):
        return self.settings["port"]

    def _write(self, text):
        tmp = self.conf + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.conf)

    def config(self):
        with open(self.conf) as f:
            return f.read()

    def rewrite_config(self, **settings):
        """Merge settings into the current ones (None drops one) and
        rewrite the file (the daemon reads it on SIGHUP)."""
        self.settings.update(settings)
        self._write(config_text(self.settings))

    def write_raw_config(self, text):
        self._write(text)

    # --- log
    def log(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_mark(self):
        """Current log length: pass as since= to wait_log to ignore what
        was logged before."""
        return len(self.log())

    def log_tail(self, lines=40):
        return "\n".join(self.log().splitlines()[-lines:]) + "\n"

    def wait_log(self, regex, timeout=10, since=0):
        """Wait until the log (from offset since) matches regex (multiline);
        the match, or None on timeout."""
        rx = re.compile(regex, re.M)
        end = time.monotonic() + timeout
        while True:
            m = rx.search(self.log(), since)
            if m or time.monotonic() >= end:
                return m
            time.sleep(0.02)

    # --- /proc figures
    def _status(self, field):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return None

    def rss_kb(self):
        return self._status("VmRSS")

    @property
    def threads(self):
        return self._status("Threads")

    def cpu_seconds(self):
        with open(f"/proc/{self.pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        # rest[0] is field 3 (state): utime is field 14, stime 15
        ticks = int(rest[11]) + int(rest[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def fd_count(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))


# ------------------------------------------------------------------- client

class ClientResult(tuple):
    """(returncode, stdout, stderr), plus .info: every key=value found on
    the client's stdout (the ok line's conns, bytes_sent, bytes_received,
    elapsed_ms; stalled_sent; hold_closed) as ints, .ok (exit 0 and an ok
    line) and .argv."""

    def __new__(cls, rc, out, err, argv):
        self = super().__new__(cls, (rc, out, err))
        self.rc, self.out, self.err, self.argv = rc, out, err, argv
        self.info = {}
        for line in out.splitlines():
            for k, v in re.findall(r"(\w+)=(-?\d+)", line):
                self.info[k] = int(v)
        self.ok_line = next((l for l in out.splitlines() if l.startswith("ok ")), None)
        self.ok = rc == 0 and self.ok_line is not None
        return self

    def diag(self):
        return (f"client: {' '.join(self.argv)}\nexit status {self.rc}\n"
                f"stdout: {self.out.strip()}\nstderr: {self.err.strip()}")


def _client_argv(port, args, timeout):
    argv = [ECHOCLIENT, "-p", str(port)] + [str(a) for a in args]
    if not any(a in ("-t", "--timeout") or str(a).startswith("--timeout=") for a in args):
        argv += ["-t", str(timeout)]
    return argv


def client(port, *args, timeout=30):
    """Run echoclient -p PORT ARGS (with -t timeout unless given) and wait;
    a ClientResult.  The process is killed by PID if it overruns."""
    argv = _client_argv(port, args, timeout)
    p = _register(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True,
                                   preexec_fn=_child_setup()))
    p.argv_list = argv
    return client_wait(p, timeout + 10)


def client_bg(port, *args, timeout=30):
    """Start echoclient in the background; a Popen (wait with
    client_wait)."""
    argv = _client_argv(port, args, timeout)
    p = _register(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True,
                                   preexec_fn=_child_setup()))
    p.argv_list = argv
    p.deadline = time.monotonic() + timeout + 10
    return p


def client_wait(p, timeout=None):
    """Wait for a client from client_bg(); a ClientResult (rc -9 and a
    note on stderr if it had to be killed)."""
    if timeout is None:
        timeout = max(1.0, getattr(p, "deadline", time.monotonic() + 40) - time.monotonic())
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        err += f"\n(harness: client killed after {timeout:.0f} s)"
    _unregister(p)
    return ClientResult(p.returncode, out, err, p.argv_list)


def client_ok(tap, name, res, daemon=None, total=None):
    """One test point: the client succeeded, got back what it sent (and
    total bytes, if given).  On failure the diagnostics show the client's
    output and the daemon's log tail."""
    info = res.info
    good = res.ok and info.get("bytes_received") == info.get("bytes_sent")
    if total is not None:
        good = good and info.get("bytes_sent") == total
    diag = res.diag()
    if total is not None:
        diag += f"\nexpected bytes_sent = bytes_received = {total}"
    if daemon is not None:
        diag += f"\ndaemon {'running' if daemon.running() else 'EXITED'}; log tail:\n"
        diag += daemon.log_tail(20)
    return tap.ok(good, name, diag=diag)


def wait_fds(daemon, baseline, timeout=5):
    """Poll until the daemon's fd count is back to baseline (or below);
    the last count seen."""
    last = [None]

    def back():
        last[0] = daemon.fd_count()
        return last[0] <= baseline
    poll_until(back, timeout)
    return last[0]


class Notify:
    """A NOTIFY_SOCKET playing systemd's part: collects messages and the
    fds they carry (the fd store: store = [(FDNAME, fd)])."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="echodtest.notify.")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.msgs, self.store = [], []     # store: [(name, fd)]
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(16 * 4))
            except socket.timeout:
                continue
            except OSError:
                return
            fds = array.array("i")
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
            text = data.decode(errors="replace")
            self.msgs.append(text)
            if "FDSTORE=1" in text:
                name = re.search(r"FDNAME=(\S+)", text).group(1)
                for fd in fds:
                    self.store.append((name, fd))

    def wait(self, pred, timeout=10):
        """Wait until pred(msgs) holds: the reader thread can lag behind
        what the daemon has already sent (a slow, sanitized run). Returns
        pred's last value."""
        end = time.monotonic() + timeout
        while not pred(self.msgs) and time.monotonic() < end:
            time.sleep(0.05)
        return pred(self.msgs)

    def close(self):
        self.stop = True
        self.t.join(2)
        self.sock.close()
        for _, fd in self.store:
            try:
                os.close(fd)
            except OSError:
                pass
