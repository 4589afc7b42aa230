"""nspawn - boot a real systemd (PID 1) in a systemd-nspawn container and drive it.

Python 3 stdlib only (Debian 12's /usr/bin/python3). Must run as root.

    import nspawn

    reason = nspawn.skip_reason()          # None, or why the system test cannot run
    root = nspawn.ensure_root()            # cached Debian 12 root (built once, ~1 min)
    with nspawn.Container(root) as c:      # per-run writable root, not booted yet
        c.write_file("/etc/systemd/system/x.service", "...")
        # or: make install DESTDIR=<c.root>, or c.copy_in(src, dst)
        c.boot()                           # waits for running/degraded (60 s)
        r = c.systemctl("start", "x.service")      # Result(rc, stdout, stderr)
        print(c.journal("x.service"))
    # on exit: clean poweroff, SIGKILL by PID after a deadline, copy removed

The container shares the host network namespace (no --private-network):
127.0.0.1 inside IS the host's loopback, so a socket unit listening inside is
reachable from the host. Pick free ports; never use fixed ones.

The system tests built on it (tests/system/test_*.py) share its TAP scaffolding:

    tap = nspawn.Tap()
    reason = nspawn.begin_test(timeout)    # alarm, signals, host tools: skip_reason()
    if reason:
        nspawn.print_skip(reason)
    try:
        ...
    except BaseException as e:
        tap.harness_failed(e)              # a failed point with the traceback
    tap.finish()                           # total time, plan, exit status

Nothing is ever killed by name: only the nspawn process we started and the
container's PID 1 (identity checked by start time), and processes left in
the per-run cgroup this module created.
"""

import ctypes
import errno
import fcntl
import glob
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import urllib.request

# ------------------------------------------------------------------ settings

SUITE = "bookworm"
CACHE_DIR = "/var/tmp"
ROOT_PREFIX = "echod-systemd-root"
RUN_PREFIX = "echod-systemd-run."
ROOT_FORMAT = 1           # bump when the root setup below changes

# Packages added to debootstrap's minbase. Changing this list changes the
# cache directory name (hash suffix), so a stale root is never reused.
PACKAGES = [
    "systemd", "systemd-sysv", "dbus",
    # runtime libraries echod links against
    "libconfig9", "libmicrohttpd12", "liburing2", "libsystemd0",
    # tools the system test uses inside
    "procps", "iproute2", "curl", "ca-certificates", "python3-minimal",
    "man-db", "groff-base",
]

# Units masked in the root: timers that could fire during a test, gettys
# (nothing logs in), and units that would wait for a network that is not ours.
MASKED_UNITS = [
    "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer",
    "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer", "man-db.timer",
    "systemd-tmpfiles-clean.timer",
    "console-getty.service", "getty@tty1.service", "getty@.service",
    "systemd-networkd-wait-online.service", "systemd-timesyncd.service",
]

HOSTNAME = "echod-test"
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def root_version():
    h = hashlib.sha256(json.dumps([ROOT_FORMAT, SUITE, sorted(PACKAGES),
                                   sorted(MASKED_UNITS)]).encode()).hexdigest()
    return "v%d-%s" % (ROOT_FORMAT, h[:8])


def default_root_path():
    return os.path.join(CACHE_DIR, "%s-%s" % (ROOT_PREFIX, root_version()))


class NspawnError(Exception):
    pass



class Result:
    """Outcome of a command run inside the container."""

    def __init__(self, cmd, rc, stdout, stderr):
        self.cmd, self.rc, self.stdout, self.stderr = cmd, rc, stdout, stderr

    @property
    def ok(self):
        return self.rc == 0

    def __repr__(self):
        return "Result(rc=%r, cmd=%r)" % (self.rc, self.cmd)

    def diag(self):
        return "cmd: %s\nrc: %s\nstdout: %s\nstderr: %s" % (
            " ".join(self.cmd), self.rc, self.stdout.rstrip(), self.stderr.rstrip())


def _log_default(msg):
    print("# " + msg, flush=True)


# ------------------------------------------------------------- host checks

def _host_env():
    env = dict(os.environ)
    env["PATH"] = CLEAN_PATH + ":" + env.get("PATH", "")
    env["LC_ALL"] = "C.UTF-8"
    env.pop("PYTHONPATH", None)
    return env


def _which(name):
    return shutil.which(name, path=CLEAN_PATH)


def _apt_config():
    """apt-config dump as a dict of the keys we care about."""
    out = {}
    try:
        text = subprocess.run(["apt-config", "dump"], capture_output=True, text=True,
                              timeout=30, env=_host_env()).stdout
    except (OSError, subprocess.SubprocessError):
        return out
    for line in text.splitlines():
        m = re.match(r'^(\S+)\s+"(.*)";$', line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def _apt_sources():
    """(uri, suites, components) of every enabled 'deb' source on the host."""
    found = []
    files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
    for f in files:
        try:
            lines = open(f).read().splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.split("#", 1)[0].strip()
            m = re.match(r"^deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
            if m:
                found.append((m.group(2), [m.group(3)], m.group(4).split()))
    for f in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        try:
            text = open(f).read()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            fields = {}
            key = None
            for line in stanza.splitlines():
                if line.startswith("#"):
                    continue
                if line[:1] in (" ", "\t") and key:
                    fields[key] += " " + line.strip()
                    continue
                if ":" in line:
                    key, val = line.split(":", 1)
                    key = key.strip().lower()
                    fields[key] = val.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                found.append((uri, fields.get("suites", "").split(),
                              fields.get("components", "").split()))
    return found


def apt_source():
    """How the host's apt reaches the Debian archive: {mirror, security, proxy}.

    ECHOD_DEBIAN_MIRROR overrides the mirror. The proxy comes from apt's
    Acquire::http::Proxy (or $http_proxy); debootstrap (wget) gets it as
    $http_proxy, and the root gets the same apt configuration.
    """
    mirror = os.environ.get("ECHOD_DEBIAN_MIRROR", "")
    security = ""
    for uri, suites, _comps in _apt_sources():
        if not uri.startswith(("http://", "https://")):
            continue
        if SUITE in suites and not mirror:
            mirror = uri
        if SUITE + "-security" in suites and not security:
            security = uri
    if not mirror:
        mirror = "http://deb.debian.org/debian"
    cfg = _apt_config()
    proxy = cfg.get("Acquire::http::Proxy", "") or os.environ.get("http_proxy", "")
    if proxy.upper() == "DIRECT":
        proxy = ""
    return {"mirror": mirror.rstrip("/"), "security": security.rstrip("/"),
            "proxy": proxy,
            "check_valid_until": cfg.get("Acquire::Check-Valid-Until", ""),
            "check_date": cfg.get("Acquire::Check-Date", "")}


def _archive_reachable(src, timeout=20):
    url = "%s/dists/%s/Release" % (src["mirror"], SUITE)
    handlers = []
    if src["proxy"]:
        handlers.append(urllib.request.ProxyHandler({"http": src["proxy"],
                                                     "https": src["proxy"]}))
    else:
        handlers.append(urllib.request.ProxyHandler({}))
    opener = urllib.request.build_opener(*handlers)
    try:
        req = urllib.request.Request(url, method="HEAD")
        with opener.open(req, timeout=timeout) as r:
            if r.status == 200:
                return None
            return "%s: HTTP %s" % (url, r.status)
    except Exception as e:     # noqa: BLE001 - any failure means "unreachable"
        return "%s: %s" % (url, e)


def ensure_host_tools(log=_log_default):
    """apt-get install debootstrap / systemd-container if missing (root only).

    Set ECHOD_SYSTEST_NO_INSTALL=1 to forbid installing anything.
    """
    want = []
    if not _which("debootstrap") and not os.path.isdir(default_root_path()):
        want.append("debootstrap")
    if not _which("systemd-nspawn"):
        want.append("systemd-container")
    if not want or os.geteuid() != 0 or os.environ.get("ECHOD_SYSTEST_NO_INSTALL"):
        return
    if not _which("apt-get"):
        return
    log("installing %s with apt-get" % " ".join(want))
    env = _host_env()
    env["DEBIAN_FRONTEND"] = "noninteractive"
    cmd = ["apt-get", "install", "-y", "--no-install-recommends"] + want
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0:
        # the package lists may be missing (docker-style image): update once
        subprocess.run(["apt-get", "update"], capture_output=True, env=env, timeout=600)
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0:
        log("apt-get install failed: " + r.stderr.strip().replace("\n", " | ")[-400:])


def skip_reason(root=None, check_network=True):
    """None if a system test can run here, else a one-line reason."""
    if os.geteuid() != 0:
        return "system test needs root (systemd-nspawn, nsenter, mount)"
    if not os.path.exists("/proc/self/ns/pid"):
        return "no namespace support in /proc"
    if not _which("systemd-nspawn"):
        return "systemd-nspawn not found (apt-get install systemd-container)"
    if not _which("nsenter"):
        return "nsenter not found (apt-get install util-linux)"
    root = root or default_root_path()
    if _root_valid(root):
        return None
    if not _which("debootstrap"):
        return "no cached root at %s and debootstrap not found " \
               "(apt-get install debootstrap)" % root
    if check_network:
        err = _archive_reachable(apt_source())
        if err:
            return "no cached root and debootstrap cannot reach the archive: " + err
    return None


# ----------------------------------------------------------- root building

STAMP = "etc/echod-test-root.json"


def _root_valid(path):
    return os.path.isfile(os.path.join(path, STAMP)) and \
        os.path.exists(os.path.join(path, "usr/lib/systemd/systemd"))


def root_info(path=None):
    """The stamp written when the root was built (build time, packages ...)."""
    path = path or default_root_path()
    with open(os.path.join(path, STAMP)) as f:
        return json.load(f)


def _mounts_under(path):
    path = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == path or mp.startswith(path + "/"):
                found.append(mp)
    return sorted(found, key=len, reverse=True)


def _remove_tree(path):
    """umount anything below path (deepest first), then rm -rf on one fs."""
    if not os.path.lexists(path):
        return
    for mp in _mounts_under(path):
        subprocess.run(["umount", mp], capture_output=True)
        if mp in _mounts_under(path):
            subprocess.run(["umount", "-l", mp], capture_output=True)
    subprocess.run(["rm", "-rf", "--one-file-system", "--", path], capture_output=True)


def _run_group(cmd, timeout=None, **kw):
    """subprocess.run in a new process group; on timeout, error or signal
    (exception) the whole group - our child and its descendants - is
    SIGKILLed by its id before the exception propagates."""
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def child_setup():
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)      # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    p = subprocess.Popen(cmd, start_new_session=True, preexec_fn=child_setup, **kw)
    try:
        p.wait(timeout=timeout)
    except BaseException:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
        raise
    return p


def _chroot(root, *cmd, timeout=300):
    env = {"PATH": CLEAN_PATH, "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
           "HOME": "/root"}
    r = subprocess.run(["chroot", root] + list(cmd), capture_output=True, text=True,
                       env=env, timeout=timeout)
    if r.returncode != 0:
        raise NspawnError("chroot %s: rc %d: %s" % (" ".join(cmd), r.returncode,
                                                   r.stderr.strip()[-2000:]))
    return r


def _configure_root(root, src):
    def w(rel, text, mode=0o644):
        p = os.path.join(root, rel.lstrip("/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if os.path.lexists(p):
            os.unlink(p)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, mode)

    w("/etc/hostname", HOSTNAME + "\n")
    w("/etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\t%s\n"
      "::1\t\tlocalhost ip6-localhost ip6-loopback\n" % HOSTNAME)
    # sources for a later apt-get inside (the test itself never needs network)
    lines = ["deb %s %s main" % (src["mirror"], SUITE),
             "deb %s %s-updates main" % (src["mirror"], SUITE)]
    if src["security"]:
        lines.append("deb %s %s-security main" % (src["security"], SUITE))
    w("/etc/apt/sources.list", "\n".join(lines) + "\n")
    conf = []
    if src["proxy"]:
        conf.append('Acquire::http::Proxy "%s";' % src["proxy"])
    if src["check_valid_until"]:
        conf.append('Acquire::Check-Valid-Until "%s";' % src["check_valid_until"])
    if src["check_date"]:
        conf.append('Acquire::Check-Date "%s";' % src["check_date"])
    if conf:
        w("/etc/apt/apt.conf.d/99echod-test", "\n".join(conf) + "\n")
    # nobody logs in, but an empty root password makes a console usable by hand
    _chroot(root, "passwd", "-d", "root")
    unitdir = os.path.join(root, "etc/systemd/system")
    for u in MASKED_UNITS:
        p = os.path.join(unitdir, u)
        if os.path.lexists(p):
            os.unlink(p)
        os.symlink("/dev/null", p)
    # the journal stays volatile (/run/log/journal): nothing to clean per run
    _chroot(root, "apt-get", "clean")


def ensure_root(path=None, log=_log_default):
    """Return the path of a cached, complete Debian 12 root; build it once.

    The build runs in <path>.tmp.<pid> and is renamed to <path> only when
    complete; a lock file (<path>.lock, fcntl) serialises concurrent builders.
    The build time is recorded in the root (root_info()["build_seconds"]).
    """
    path = os.path.abspath(path or default_root_path())
    if _root_valid(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lockf = open(path + ".lock", "a+")
    try:
        t_wait = time.monotonic()
        try:
            fcntl.flock(lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("another run is building %s; waiting for its lock" % path)
            fcntl.flock(lockf, fcntl.LOCK_EX)
            log("lock acquired after %.1f s" % (time.monotonic() - t_wait))
        if _root_valid(path):
            return path
        # anything left over is from an interrupted build: we hold the lock
        for stale in glob.glob(glob.escape(path) + ".tmp.*"):
            log("removing interrupted build " + stale)
            _remove_tree(stale)
        if os.path.lexists(path):          # exists but invalid (no stamp)
            _remove_tree(path)
        ensure_host_tools(log)
        if not _which("debootstrap"):
            raise NspawnError("debootstrap not found and could not be installed")
        src = apt_source()
        tmp = "%s.tmp.%d" % (path, os.getpid())
        log("building %s with debootstrap from %s%s" % (
            path, src["mirror"], " via proxy " + src["proxy"] if src["proxy"] else ""))
        t0 = time.monotonic()
        env = _host_env()
        env["DEBIAN_FRONTEND"] = "noninteractive"
        if src["proxy"]:
            env["http_proxy"] = env["https_proxy"] = src["proxy"]
        logfile = path + ".build.log"
        try:
            with open(logfile, "w") as lf:
                r = _run_group(
                    ["debootstrap", "--variant=minbase", "--merged-usr",
                     "--components=main", "--include=" + ",".join(PACKAGES),
                     SUITE, tmp, src["mirror"]],
                    stdout=lf, stderr=subprocess.STDOUT, env=env, timeout=1800,
                    # the build's processes hold the lock too: if this harness
                    # is SIGKILLed, no one removes the tree while they still run
                    pass_fds=(lockf.fileno(),))
            if r.returncode != 0:
                with open(logfile) as lf:
                    tail = lf.read()[-3000:]
                raise NspawnError("debootstrap failed (rc %d), log %s:\n%s"
                                  % (r.returncode, logfile, tail))
            _configure_root(tmp, src)
            took = time.monotonic() - t0
            with open(os.path.join(tmp, STAMP), "w") as f:
                json.dump({"version": root_version(), "suite": SUITE,
                           "packages": PACKAGES, "masked": MASKED_UNITS,
                           "mirror": src["mirror"], "proxy": src["proxy"],
                           "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "build_seconds": round(took, 1)}, f, indent=1)
            # debootstrap unmounts its /proc, /sys; be sure before renaming
            for mp in _mounts_under(tmp):
                subprocess.run(["umount", "-l", mp], capture_output=True)
            os.rename(tmp, path)
        except BaseException:
            _remove_tree(tmp)
            raise
        log("root built in %.1f s" % took)
        return path
    finally:
        lockf.close()


# ----------------------------------------------------------- process helpers

def _starttime(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    return int(data[data.rindex(")") + 2:].split()[19])


def _children_of(ppid):
    kids = []
    try:
        with open("/proc/%d/task/%d/children" % (ppid, ppid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        pass
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    data = f.read()
                if int(data[data.rindex(")") + 2:].split()[1]) == ppid:
                    kids.append(int(d))
            except (OSError, ValueError):
                pass
    return kids


def _comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return None


def _alive(pid, start):
    return pid is not None and start is not None and _starttime(pid) == start


def _kill_checked(pid, start, sig):
    """Signal pid only if it is still the process we recorded."""
    if _alive(pid, start):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _host_is_systemd():
    return os.path.isdir("/run/systemd/system") and _comm(1) == "systemd"


def _cgroup_roots():
    """Mount points of the cgroup hierarchies nspawn uses: v2 and name=systemd."""
    mounts = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, post = line.split(" - ", 1)
            mp = pre.split()[4]
            fstype, _src, opts = post.split()[:3]
            if fstype == "cgroup2":
                mounts.setdefault("v2", mp)
            elif fstype == "cgroup" and "name=systemd" in opts.split(","):
                mounts.setdefault("name=systemd", mp)
    own = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            hid, ctrl, path = line.rstrip("\n").split(":", 2)
            if hid == "0" and ctrl == "":
                own["v2"] = path
            elif ctrl == "name=systemd":
                own["name=systemd"] = path
    return [(mounts[k], own.get(k, "/")) for k in mounts]


def _sigsafe():
    """Block SIGALRM/SIGTERM/SIGINT/SIGHUP; returns the old mask."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGTERM,
                                                     signal.SIGINT, signal.SIGHUP})


# --------------------------------------------------------------- container

class Container:
    """A booted systemd container on a per-run writable copy of a cached root.

    mode: "overlay" (default; overlayfs over the cached root, instant) or
          "copy" (cp -a --reflink=auto, ~1.3 s for the 300 MB root on ext4).
    boot: if True, __enter__ also boots; else call boot() after adding files.
    log_path: where the console output goes (default: inside the run dir,
          removed on exit; pass a path to keep it).
    """

    def __init__(self, root=None, mode=None, boot=False, log_path=None,
                 boot_timeout=60, shutdown_timeout=30, nspawn_args=(), log=_log_default):
        self.base = os.path.abspath(root or default_root_path())
        self.mode = mode or os.environ.get("ECHOD_NSPAWN_MODE", "overlay")
        self.autoboot = boot
        self.boot_timeout = boot_timeout
        self.shutdown_timeout = shutdown_timeout
        self.extra_args = list(nspawn_args)
        self.log = log
        self.rundir = None
        self.root = None          # host path of the container's writable /
        self.machine = None
        self.log_path = log_path
        self.proc = None          # Popen of systemd-nspawn
        self.nspawn_start = None
        self.init_pid = None      # host PID of the container's systemd
        self.init_start = None
        self.cgroups = []
        self.boot_seconds = None
        self.shutdown_seconds = None
        self.prepare_seconds = None
        self.state = None
        self._logf = None
        self._mounted = False

    # ---- lifecycle

    def __enter__(self):
        try:
            self.prepare()
            if self.autoboot:
                self.boot()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def prepare(self):
        if not _root_valid(self.base):
            raise NspawnError("no valid root at %s (call ensure_root())" % self.base)
        _sweep_stale_runs(self.log)
        self.rundir = tempfile.mkdtemp(prefix=RUN_PREFIX, dir=CACHE_DIR)
        # a valid machine name: letters and digits only after the prefix
        # (the temp dir's suffix may hold '_', and a name may not end in '-')
        suffix = os.path.basename(self.rundir)[len(RUN_PREFIX):]
        self.machine = "echod-" + hashlib.sha1(suffix.encode()).hexdigest()[:12]
        self._write_owner()
        self.root = os.path.join(self.rundir, "root")
        t0 = time.monotonic()
        if self.mode == "overlay":
            up, wk = os.path.join(self.rundir, "upper"), os.path.join(self.rundir, "work")
            for d in (up, wk, self.root):
                os.mkdir(d)
            r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                                "lowerdir=%s,upperdir=%s,workdir=%s" % (self.base, up, wk),
                                self.root], capture_output=True, text=True)
            if r.returncode != 0:
                self.log("overlay mount failed (%s); falling back to a copy"
                         % r.stderr.strip())
                self.mode = "copy"
                os.rmdir(self.root)
            else:
                self._mounted = True
        if self.mode == "copy":
            r = subprocess.run(["cp", "-a", "--reflink=auto", self.base, self.root],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise NspawnError("cp -a failed: " + r.stderr.strip())
        elif self.mode != "overlay":
            raise NspawnError("unknown mode %r" % self.mode)
        self.prepare_seconds = time.monotonic() - t0
        if not self.log_path:
            self.log_path = os.path.join(self.rundir, "console.log")
        return self

    def _write_owner(self):
        with open(os.path.join(self.rundir, "owner.json"), "w") as f:
            json.dump({"pid": os.getpid(), "start": _starttime(os.getpid()),
                       "machine": self.machine, "cgroups": self.cgroups}, f)

    def _make_cgroups(self):
        """Put nspawn in a cgroup of its own (hosts without systemd as PID 1).

        With --keep-unit and no systemd on the host, nspawn splits the cgroup
        it starts in into 'supervisor' and 'payload'. Started from the root
        cgroup, two concurrent containers would share /payload; a per-run
        parent cgroup keeps them apart and lets us clean up afterwards.
        """
        if _host_is_systemd():
            return
        name = "echod-systemd-test." + self.machine
        for mp, own in _cgroup_roots():
            d = os.path.normpath(os.path.join(mp, own.lstrip("/"), name))
            try:
                os.mkdir(d)
            except FileExistsError:
                pass
            except OSError as e:
                self.log("cannot create cgroup %s: %s" % (d, e))
                continue
            self.cgroups.append(d)
        self._write_owner()

    def boot(self):
        """Start systemd-nspawn --boot and wait for running/degraded."""
        if self.proc:
            raise NspawnError("already booted")
        self._make_cgroups()
        nspawn = _which("systemd-nspawn")
        cmd = [nspawn, "--register=no", "--boot", "--directory=" + self.root,
               "--machine=" + self.machine, "--hostname=" + HOSTNAME,
               "--console=read-only", "--link-journal=no",
               "--setenv=SYSTEMD_LOG_COLOR=0", "--setenv=SYSTEMD_COLORS=0"]
        if not _host_is_systemd():
            cmd.insert(2, "--keep-unit")
        cmd += self.extra_args
        procs_files = [os.path.join(d, "cgroup.procs") for d in self.cgroups]

        libc = ctypes.CDLL(None, use_errno=True)
        parent = os.getpid()

        def child_setup():
            for p in procs_files:
                with open(p, "w") as f:
                    f.write("0")
            # if the harness dies, nspawn gets SIGTERM: it powers the container off
            libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)      # PR_SET_PDEATHSIG
            if os.getppid() != parent:
                os._exit(1)

        env = {"PATH": CLEAN_PATH, "LC_ALL": "C.UTF-8", "TERM": "dumb",
               "SYSTEMD_COLORS": "0", "SYSTEMD_LOG_COLOR": "0"}
        self._logf = open(self.log_path, "ab")
        t0 = time.monotonic()
        old = _sigsafe()
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._logf,
                                         stderr=subprocess.STDOUT, env=env,
                                         preexec_fn=child_setup,
                                         start_new_session=True)
            self.nspawn_start = _starttime(self.proc.pid)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        deadline = t0 + self.boot_timeout
        # 1. the container's PID 1: nspawn's child once it has exec'd systemd
        while self.init_pid is None:
            if self.proc.poll() is not None:
                raise NspawnError("systemd-nspawn exited with %s during boot\n%s"
                                  % (self.proc.returncode, self.console_tail()))
            for kid in _children_of(self.proc.pid):
                if _comm(kid) == "systemd":
                    self.init_pid, self.init_start = kid, _starttime(kid)
            if self.init_pid is None:
                if time.monotonic() > deadline:
                    raise NspawnError("container init did not start within %d s\n%s"
                                      % (self.boot_timeout, self.console_tail()))
                time.sleep(0.05)
        # 2. wait for the boot to finish
        state = ""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NspawnError("boot not finished within %d s (state %r)\n%s\n%s"
                                  % (self.boot_timeout, state, self._failed_units(),
                                     self.console_tail()))
            if self.proc.poll() is not None:
                raise NspawnError("systemd-nspawn exited with %s during boot\n%s"
                                  % (self.proc.returncode, self.console_tail()))
            try:
                r = self.run(["systemctl", "is-system-running", "--wait"],
                             timeout=max(1, left))
                state = r.stdout.strip()
            except subprocess.TimeoutExpired:
                continue
            if state in ("running", "degraded"):
                break
            if state in ("maintenance", "stopping"):
                raise NspawnError("boot ended in state %r\n%s\n%s"
                                  % (state, self._failed_units(), self.console_tail()))
            time.sleep(0.1)    # bus not up yet ("offline"/"unknown"): retry
        self.boot_seconds = time.monotonic() - t0
        self.state = state
        return state

    def _failed_units(self):
        try:
            return "failed units:\n" + self.systemctl("--failed", "--no-legend",
                                                      timeout=5).stdout
        except Exception:      # noqa: BLE001 - diagnostics only
            return ""

    def poweroff(self):
        """Clean shutdown; SIGKILL (by PID) after shutdown_timeout."""
        if not self.proc or self.proc.returncode is not None:
            return
        old = _sigsafe()
        try:
            t0 = time.monotonic()
            deadline = t0 + self.shutdown_timeout
            if self.proc.poll() is None:
                try:
                    r = self.run(["systemctl", "poweroff", "--no-block"], timeout=10)
                    asked = r.rc == 0
                except Exception:      # noqa: BLE001
                    asked = False
                if not asked:       # SIGRTMIN+4 = poweroff for systemd
                    _kill_checked(self.init_pid, self.init_start, signal.SIGRTMIN + 4)
            while self.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.proc.poll() is None:
                self.log("container did not power off within %d s: SIGKILL"
                         % self.shutdown_timeout)
                # killing the PID namespace's init kills everything inside
                _kill_checked(self.init_pid, self.init_start, signal.SIGKILL)
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
            self.shutdown_seconds = time.monotonic() - t0
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def close(self):
        """Power off (if booted) and remove everything this run created."""
        old = _sigsafe()
        try:
            try:
                self.poweroff()
            except Exception as e:     # noqa: BLE001 - cleanup must go on
                self.log("poweroff failed: %s" % e)
                if self.proc and self.proc.poll() is None:
                    _kill_checked(self.init_pid, self.init_start, signal.SIGKILL)
                    self.proc.kill()
                    self.proc.wait()
            # init may outlive nspawn only if nspawn was killed: be sure
            _kill_checked(self.init_pid, self.init_start, signal.SIGKILL)
            if self._logf:
                self._logf.close()
                self._logf = None
            _cleanup_run(self.rundir, self.machine, self.cgroups)
            self.rundir = None
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    # ---- files

    def path(self, p):
        """Host path of container path p in the writable root (use before boot)."""
        return os.path.join(self.root, p.lstrip("/"))

    def write_file(self, dst, data, mode=0o644):
        """Create dst (container path) with data (str or bytes)."""
        if isinstance(data, str):
            data = data.encode()
        if self.booted:
            d = os.path.dirname(dst)
            self.run(["sh", "-c", 'mkdir -p "$1" && cat > "$2" && chmod "$3" "$2"',
                      "sh", d, dst, "%o" % mode], input=data, check=True)
            return
        p = self.path(dst)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, mode)

    def copy_in(self, src, dst):
        """Copy a host file or directory tree to container path dst.

        A directory src is copied AS dst (like cp -a src dst with dst absent;
        its contents are merged into an existing dst). Before boot this writes
        into the root directly; after boot it streams a tar through nsenter,
        so tmpfs mounts inside (/run, /tmp) are reached too.
        """
        if not self.booted:
            target = self.path(dst)
            if os.path.isdir(src):
                shutil.copytree(src, target, symlinks=True, dirs_exist_ok=True)
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(src, target, follow_symlinks=False)
            return
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            t.add(src, arcname=os.path.basename(dst.rstrip("/")) or ".")
        parent = os.path.dirname(dst.rstrip("/")) or "/"
        self.run(["sh", "-c", 'mkdir -p "$1" && tar -x -p -f - -C "$1"', "sh", parent],
                 input=buf.getvalue(), check=True)

    # ---- commands

    @property
    def booted(self):
        return self.proc is not None and self.proc.poll() is None

    def run(self, cmd, input=None, timeout=60, check=False, env=None):
        """Run cmd (list, or str for sh -c) inside via nsenter -a.

        Returns Result(rc, stdout, stderr) (text, decoded leniently). The
        process joins all the container's namespaces but stays in the
        caller's cgroup (it is not part of the container's unit tree).
        Raises subprocess.TimeoutExpired after timeout seconds.
        """
        if self.init_pid is None:
            raise NspawnError("container not booted")
        if isinstance(cmd, str):
            cmd = ["sh", "-c", cmd]
        e = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8", "TERM": "dumb", "HOME": "/root",
             "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", "PAGER": "cat"}
        if env:
            e.update(env)
        if isinstance(input, str):
            input = input.encode()
        full = ["nsenter", "-t", str(self.init_pid), "-a", "-r", "-w", "--"] + list(cmd)
        p = subprocess.run(full, input=input, capture_output=True, timeout=timeout, env=e)
        res = Result(list(cmd), p.returncode, p.stdout.decode(errors="replace"),
                     p.stderr.decode(errors="replace"))
        if check and res.rc != 0:
            raise NspawnError("command failed inside the container\n" + res.diag())
        return res

    def systemctl(self, *args, timeout=60, check=False):
        return self.run(["systemctl", "--no-pager"] + list(args), timeout=timeout,
                        check=check)

    def journal(self, unit=None, timeout=30, args=()):
        """journalctl -u UNIT -o cat (the whole journal when unit is None)."""
        self.run(["journalctl", "--sync"], timeout=timeout)
        cmd = ["journalctl", "--no-pager", "-o", "cat"] + list(args)
        if unit:
            cmd += ["-u", unit]
        return self.run(cmd, timeout=timeout).stdout

    def console_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace").replace("\r\n", "\n")
        except (OSError, TypeError):
            return ""

    def console_tail(self, lines=60):
        text = self.console_log().splitlines()[-lines:]
        return "console log (%s, last %d lines):\n%s" % (
            self.log_path, len(text), "\n".join(text))


# ------------------------------------------------------------------ cleanup

def _cleanup_run(rundir, machine, cgroups):
    for d in cgroups or []:
        _remove_cgroup(d)
    if machine:
        prop = os.path.join("/run/systemd/nspawn/propagate", machine)
        if os.path.isdir(prop) and not os.path.islink(prop):
            shutil.rmtree(prop, ignore_errors=True)
    if rundir and os.path.basename(rundir).startswith(RUN_PREFIX):
        _remove_tree(rundir)


def _remove_cgroup(top):
    """rmdir a cgroup tree bottom-up, SIGKILLing processes still inside it."""
    if not os.path.isdir(top):
        return
    for attempt in range(50):
        busy = False
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda x: -len(x[0])):
            try:
                os.rmdir(dirpath)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno != errno.EBUSY:
                    continue
                busy = True
                try:
                    with open(os.path.join(dirpath, "cgroup.procs")) as f:
                        pids = [int(x) for x in f.read().split()]
                except OSError:
                    pids = []
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        if not busy or not os.path.isdir(top):
            return
        time.sleep(0.1)


def _sweep_stale_runs(log=_log_default):
    """Remove run dirs whose owner process is gone (killed with SIGKILL)."""
    for rd in glob.glob(os.path.join(CACHE_DIR, RUN_PREFIX + "*")):
        try:
            with open(os.path.join(rd, "owner.json")) as f:
                o = json.load(f)
        except (OSError, ValueError):
            # no owner file yet: only sweep if old (a run being set up has one
            # within milliseconds)
            try:
                if time.time() - os.stat(rd).st_mtime < 3600:
                    continue
            except OSError:
                continue
            o = {"pid": None, "start": None, "machine": None, "cgroups": []}
        if _alive(o.get("pid"), o.get("start")):
            continue
        log("removing stale run %s" % rd)
        # a container whose harness died may still run: its cgroups hold it
        _cleanup_run(rd, o.get("machine"), o.get("cgroups"))


# ------------------------------------------------------ system test scaffolding

T_START = time.monotonic()      # when the test (which imports this) started


class Tap:
    """TAP producer for the system tests: ok/diag, trailing plan in done()."""

    def __init__(self):
        self.n = 0
        self.failed = 0
        self.failures = []

    def ok(self, cond, desc, diag=None):
        self.n += 1
        cond = bool(cond)
        desc = desc.replace("#", "\\#")
        print("%sok %d - %s" % ("" if cond else "not ", self.n, desc), flush=True)
        if not cond:
            self.failed += 1
            self.failures.append(desc)
            if diag:
                self.diag(diag)
        return cond

    @staticmethod
    def diag(text):
        if text is None:
            return
        for line in str(text).rstrip().splitlines() or [""]:
            print("# " + line, flush=True)

    def harness_failed(self, e, extra=""):
        """The run itself broke (e caught by the test's outermost handler):
        cancel the alarm, fail a point with the traceback and extra."""
        signal.alarm(0)
        self.ok(False, "harness: %s: %s" % (type(e).__name__, str(e).splitlines()[0]
                                           if str(e) else ""),
                traceback.format_exc() + extra)

    def done(self):
        print("1..%d" % self.n, flush=True)
        sys.exit(1 if self.failed else 0)

    def finish(self):
        """The total time since the test started, then done()."""
        self.diag("total: %.1f s" % (time.monotonic() - T_START))
        self.done()


class Timeout(BaseException):
    """Whole-test alarm: not caught by a check's guard, ends the run."""


def _on_alarm(signum, frame):
    raise Timeout("test exceeded its time limit")


def _on_term(signum, frame):
    raise SystemExit("terminated by signal %d" % signum)


def begin_test(timeout):
    """Start a system test: Timeout raised after timeout s (signal.alarm()
    re-arms it), SystemExit on SIGTERM and SIGHUP, the host tools installed
    if missing.  Returns skip_reason(): None, or why the test cannot run."""
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGHUP, _on_term)
    signal.alarm(timeout)
    ensure_host_tools()
    return skip_reason()


def print_skip(reason):
    """The TAP plan of a test that cannot run here."""
    print("1..0 # SKIP " + reason, flush=True)
