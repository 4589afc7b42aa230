#!/usr/bin/python3
"""System test of echod's Debian package under a real systemd (TAP).

Builds the package from the source tree (`dpkg-buildpackage -us -uc -b`
on a copy of the tracked files), or takes the one CI built (ECHOD_DEB_DIR),
makes a copy of it with a higher version (the same files, repacked with
dpkg-deb: an upgrade runs the maintainer scripts of both), boots a Debian 12
container (tests/system/nspawn.py) and, with the ports moved to free ones by
an operator's drop-ins, checks as an operator would:

  1. apt-get install ./echod_VERSION_ARCH.deb: files, conffile, the socket
     units enabled and active, echod.service waiting for its first client
  2. echo through the socket and a scrape of /metrics
  3. an edit of /etc/echod.conf applied by systemctl reload echod
  4. an upgrade to the higher version while clients stream through echod:
     every byte back, the same listening socket, no connection refused,
     a new MainPID, the operator's edit kept
  5. apt-get remove: the units stopped, the ports closed, the conffile kept
  6. apt-get purge: nothing the package created is left

Run as root:  python3 tests/system/test_package.py   (or via make check)
Env: ECHOD_SRCDIR, ECHOD_DEB_DIR (a directory holding echod_*.deb: no build),
     ECHOD_SYSTEST_TIMEOUT (s, while the package or the root may be built;
     default 900), ECHOD_SYSTEST_RUN_TIMEOUT (s, once both exist; default
     240), ECHOD_SYSTEST_NO_INSTALL=1 (never apt-get install on the host).
Prints "1..0 # SKIP reason" when it cannot run here.
"""

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("ECHOD_SRCDIR") or os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(SRCDIR, "tests", "functional"))
import nspawn        # noqa: E402
import echodtest     # noqa: E402
from systest import (Through, container_run, guarded, run_steps, echo_once,  # noqa: E402
                     free_port_dual, make_env, mval, port_closed, scrape)

wait_for = echodtest.poll_until

BUILD_TIMEOUT = int(os.environ.get("ECHOD_SYSTEST_TIMEOUT", "900"))
RUN_TIMEOUT = int(os.environ.get("ECHOD_SYSTEST_RUN_TIMEOUT", "240"))
BUILD_DEPS = ["debhelper", "dpkg-dev", "pkg-config", "libconfig-dev", "libsystemd-dev",
              "libmicrohttpd-dev", "liburing-dev", "libgnutls28-dev", "libcrypt-dev"]
DEBS_IN = "/srv/echod-debs"            # where the packages are copied in the container
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
# what an install, upgrade, remove and purge may leave behind: apt's and
# dpkg's own records and logs (the package's own paths must all be gone)
VOLATILE = re.compile(r"^/(var/lib/dpkg|var/lib/apt|var/cache|var/log|var/lib/systemd/"
                      r"(random-seed|timers|catalog|coredump)|etc/ld\.so\.cache)(/|$)")
SNAPSHOT_DIRS = ["/etc", "/lib", "/usr", "/var", "/srv", "/opt"]


def have(cmd):
    return shutil.which(cmd) is not None


def build_deps_missing():
    p = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Status}\\n"] + BUILD_DEPS,
                       capture_output=True, text=True)
    ok = {l.split()[0] for l in p.stdout.splitlines() if l.endswith(" installed")}
    return [d for d in BUILD_DEPS if d not in ok]


def ensure_build_deps():
    missing = build_deps_missing()
    if missing and not os.environ.get("ECHOD_SYSTEST_NO_INSTALL"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env=dict(os.environ, **APT_ENV), timeout=600)
        missing = build_deps_missing()
    return missing


def source_files(srcdir):
    """The files of the source tree: git's tracked files in a checkout,
    else every file (a distribution tarball's tree holds nothing else)."""
    if os.path.isdir(os.path.join(srcdir, ".git")) and have("git"):
        p = subprocess.run(["git", "-C", srcdir, "ls-files", "-z"], capture_output=True)
        if p.returncode == 0:
            return [f for f in p.stdout.decode().split("\0")
                    if f and os.path.lexists(os.path.join(srcdir, f))]
    out = []
    for d, _dirs, files in os.walk(srcdir):
        out += [os.path.relpath(os.path.join(d, f), srcdir) for f in files]
    return out


def build_package(tap, work):
    """dpkg-buildpackage on a copy of the source: the path of echod_*.deb."""
    tree = os.path.join(work, "echod")
    for rel in source_files(SRCDIR):
        dst = os.path.join(tree, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(os.path.join(SRCDIR, rel), dst, follow_symlinks=False)
    env = make_env()
    env["DEB_BUILD_OPTIONS"] = "nocheck parallel=2"     # make check runs the tests
    t0 = time.monotonic()
    with open(os.path.join(work, "build.log"), "w+") as logf:
        p = nspawn._run_group(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=tree,
                              timeout=600, stdin=subprocess.DEVNULL, stdout=logf,
                              stderr=subprocess.STDOUT, env=env)
        logf.seek(0)
        out = logf.read()
    debs = glob.glob(os.path.join(work, "echod_*.deb"))
    tap.ok(p.returncode == 0 and len(debs) == 1,
           "dpkg-buildpackage -us -uc -b builds echod_VERSION_ARCH.deb (%.0f s)"
           % (time.monotonic() - t0), out[-3000:])
    return debs[0] if p.returncode == 0 and len(debs) == 1 else None


def deb_field(deb, field):
    return subprocess.run(["dpkg-deb", "-f", deb, field], capture_output=True,
                          text=True, check=True).stdout.strip()


def repack(deb, version, work):
    """A copy of deb with a higher Version (same files and scripts)."""
    tree = os.path.join(work, "repack")
    subprocess.run(["dpkg-deb", "-R", deb, tree], check=True)
    ctl = os.path.join(tree, "DEBIAN", "control")
    with open(ctl) as f:
        text = f.read()
    with open(ctl, "w") as f:
        f.write(re.sub(r"^Version: .*$", "Version: " + version, text, flags=re.M))
    out = os.path.join(work, "echod_%s_%s.deb" % (version, deb_field(deb, "Architecture")))
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", tree, out], check=True,
                   stdout=subprocess.DEVNULL)
    shutil.rmtree(tree)
    return out


class PackageTest:
    def __init__(self, tap, c, echo_port, metrics_port):
        self.tap, self.c = tap, c
        self.echo_port, self.metrics_port = echo_port, metrics_port

    def apt(self, *args, timeout=180):
        return self.c.run(["apt-get", "-y", "-q", "-o", "Dpkg::Use-Pty=0"] + list(args),
                          timeout=timeout, env=APT_ENV)

    def status(self):
        r = self.c.run(["dpkg-query", "-W", "-f=${Status}|${Version}", "echod"])
        return r.stdout.strip() if r.ok else "not known to dpkg"

    def state(self, unit, what="is-active"):
        return self.c.systemctl(what, unit).stdout.strip()

    def states(self):
        return {u: self.state(u) for u in ("echod.socket", "echod-metrics.socket",
                                           "echod.service")}

    def main_pid(self):
        out = self.c.systemctl("show", "echod.service", "-p", "MainPID").stdout
        m = re.search(r"MainPID=(\d+)", out)
        return int(m.group(1)) if m else 0

    def listener(self):
        """The inode of the listening socket on the echo port (held by PID 1)."""
        r = self.c.run(["ss", "-Hltne", "sport = :%d" % self.echo_port])
        m = re.findall(r"\bino:(\d+)", r.stdout)
        return sorted(set(m)), r.stdout.strip()

    def snapshot(self):
        r = self.c.run(["find"] + SNAPSHOT_DIRS + ["-xdev"], timeout=120)
        return {p for p in r.stdout.splitlines() if not VOLATILE.match(p)}

    def journal(self, n=30):
        return "\n".join(self.c.journal("echod.service").splitlines()[-n:])

    # --- 1
    def check_install(self, deb, version):
        tap, c = self.tap, self.c
        r = self.apt("install", os.path.join(DEBS_IN, os.path.basename(deb)))
        st = self.status()
        tap.ok(r.ok and st == "install ok installed|" + version,
               "install: apt-get install ./%s (dpkg: %s)" % (os.path.basename(deb), st),
               r.diag())
        files = ["/usr/sbin/echod", "/usr/bin/echod-bench", "/etc/echod.conf",
                 "/lib/systemd/system/echod.service",
                 "/lib/systemd/system/echod.socket", "/lib/systemd/system/echod-metrics.socket",
                 "/usr/share/man/man8/echod.8.gz", "/usr/share/man/man5/echod.conf.5.gz",
                 "/usr/share/man/man1/echod-bench.1.gz",
                 "/usr/share/doc/echod/README.md.gz", "/usr/share/doc/echod/changelog.gz",
                 "/usr/share/doc/echod/copyright",
                 "/usr/share/doc/echod/examples/echod-alerts.yml",
                 "/usr/share/doc/echod/examples/echod-alerts.test.yml",
                 "/usr/share/doc/echod/examples/echod-dashboard.json"]
        missing = [f for f in files if not os.path.exists(c.path(f))]
        tap.ok(not missing, "install: /usr/sbin/echod, /usr/bin/echod-bench, /etc/echod.conf, the "
               "units, the man pages, README, changelog, alert rules and dashboard are installed",
               "missing: %s" % missing)
        conff = c.run(["dpkg-query", "-W", "-f=${Conffiles}", "echod"]).stdout
        tap.ok(re.search(r"^\s*/etc/echod\.conf [0-9a-f]{32}$", conff, re.M),
               "install: /etc/echod.conf is a conffile", conff)
        want = {"echod.socket": ("enabled", "active"),
                "echod-metrics.socket": ("enabled", "active")}
        got = {u: (self.state(u, "is-enabled"), self.state(u)) for u in want}
        svc = self.state("echod.service")
        tap.ok(got == want and svc == "inactive",
               "install: echod.socket and echod-metrics.socket enabled and started; "
               "echod.service waits for its first client (%s)" % svc,
               "units: %r, echod.service %s" % (got, svc))

    # --- 2
    def check_serve(self):
        tap = self.tap
        payload = os.urandom(256 * 1024)
        try:
            got = echo_once(self.echo_port, payload)
        except OSError as e:
            got = b"(%s)" % str(e).encode()
        tap.ok(got == payload, "serve: 256 KiB through the installed socket come back "
               "byte-exact (%d bytes)" % len(got), self.journal())
        s = wait_for(lambda: scrape(self.metrics_port), 10)
        tap.ok(mval(s, "echod_build_info") == 1 and self.state("echod.service") == "active",
               "serve: the socket started echod.service; :%d/metrics answers" % self.metrics_port,
               self.journal())

    # --- 3
    def check_reload(self):
        tap, c = self.tap, self.c
        path = c.path("/etc/echod.conf")
        with open(path) as f:
            text = f.read()
        edited, n = re.subn(r"^max_connections = \d+;", "max_connections = 1234;", text,
                            flags=re.M)
        with open(path, "w") as f:
            f.write(edited)
        r = c.systemctl("reload", "echod.service", timeout=60)
        got = wait_for(lambda: mval(scrape(self.metrics_port), "echod_max_connections") == 1234,
                       10)
        tap.ok(n == 1 and r.ok and got,
               "reload: max_connections = 1234 written into /etc/echod.conf is served after "
               "systemctl reload echod", "%s\n%s" % (r.diag(), self.journal()))

    # --- 4
    def check_upgrade(self, deb2, version2):
        tap, c = self.tap, self.c
        ino0, ss0 = self.listener()
        pid0 = self.main_pid()
        th = Through(self.echo_port,
                     lambda: self.apt("install", os.path.join(DEBS_IN, os.path.basename(deb2))),
                     lambda: wait_for(lambda: self.state("echod.service") == "active", 15))
        r = th.result
        pid1 = self.main_pid()
        ino1, ss1 = self.listener()
        st = self.status()
        tap.ok(r.ok and st == "install ok installed|" + version2,
               "upgrade: apt-get install ./%s over the running echod (dpkg: %s, %.1f s)"
               % (os.path.basename(deb2), st, th.t1 - th.t0), r.diag())
        tap.ok(pid1 not in (0, pid0) and self.state("echod.service") == "active",
               "upgrade: echod.service was restarted into the new package (MainPID %d -> %d)"
               % (pid0, pid1), self.journal())
        th.report(tap, "upgrade", self.journal())
        tap.ok(ino0 and ino0 == ino1, "upgrade: the same listening socket before and after "
               "(inode %s)" % ",".join(ino0), "before:\n%s\nafter:\n%s" % (ss0, ss1))
        with open(c.path("/etc/echod.conf")) as f:
            kept = "max_connections = 1234;" in f.read()
        served = mval(scrape(self.metrics_port), "echod_max_connections")
        tap.ok(kept and served == 1234, "upgrade: the operator's edit of /etc/echod.conf is "
               "kept and served (echod_max_connections %s)" % served)

    # --- 5
    def check_remove(self):
        tap, c = self.tap, self.c
        r = self.apt("remove", "echod")
        st = self.states()
        closed = port_closed(self.echo_port) and port_closed(self.metrics_port)
        tap.ok(r.ok and all(v == "inactive" for v in st.values()) and closed,
               "remove: apt-get remove echod stops echod.socket, echod-metrics.socket and "
               "echod.service; both ports refuse", "%s\nunits %r, closed %s" % (r.diag(), st,
                                                                               closed))
        with open(c.path("/etc/echod.conf")) if os.path.exists(c.path("/etc/echod.conf")) \
                else open(os.devnull) as f:
            kept = "max_connections = 1234;" in f.read()
        status = self.status()
        tap.ok(kept and status.startswith("deinstall ok config-files") and
               not os.path.exists(c.path("/usr/sbin/echod")),
               "remove: /etc/echod.conf kept with the operator's edit, the program gone "
               "(dpkg: %s)" % status)

    # --- 6
    def check_purge(self, before):
        tap = self.tap
        r = self.apt("purge", "echod")
        status = self.status()
        left = sorted(self.snapshot() - before)
        tap.ok(r.ok and "installed" not in status.split("|")[0].replace("not-installed", "")
               and not left,
               "purge: apt-get purge echod leaves nothing the package created (dpkg: %s)"
               % status, "%s\nleft: %s" % (r.diag(), "\n  ".join([""] + left[:40])))


def run(tap, deb_dir, work):
    """Build (or take) the package, make its successor, and drive both
    through a container: install, serve, reload, upgrade, remove, purge."""
    if deb_dir:
        deb = sorted(glob.glob(os.path.join(deb_dir, "echod_*.deb")))[-1]
        tap.diag("package from ECHOD_DEB_DIR: " + deb)
    else:
        deb = build_package(tap, work)
        if not deb:
            raise RuntimeError("no package to test")
    version = deb_field(deb, "Version")
    version2 = version + "+systest1"
    deb2 = repack(deb, version2, work)
    tap.diag("packages: %s, %s" % (os.path.basename(deb), os.path.basename(deb2)))

    root = nspawn.ensure_root()
    signal.alarm(RUN_TIMEOUT)
    echo_port, metrics_port = free_port_dual(), echodtest.free_port()
    while metrics_port == echo_port:
        metrics_port = echodtest.free_port()
    tap.diag("echo port %d, metrics port %d" % (echo_port, metrics_port))
    with nspawn.Container(root) as c, container_run(tap, c):
        for d in (deb, deb2):
            c.copy_in(d, os.path.join(DEBS_IN, os.path.basename(d)))
        # the operator's drop-ins: free ports instead of 7 and 9100
        c.write_file("/etc/systemd/system/echod.socket.d/port.conf",
                     "[Socket]\nListenStream=\nListenStream=%d\n" % echo_port)
        c.write_file("/etc/systemd/system/echod-metrics.socket.d/port.conf",
                     "[Socket]\nListenStream=\nListenStream=127.0.0.1:%d\n"
                     % metrics_port)
        state = c.boot()
        tap.diag("boot: %.2f s, state %s" % (c.boot_seconds, state))
        t = PackageTest(tap, c, echo_port, metrics_port)
        before = t.snapshot()
        steps = (("install", lambda: t.check_install(deb, version)),
                 ("serve", t.check_serve),
                 ("reload", t.check_reload),
                 ("upgrade", lambda: t.check_upgrade(deb2, version2)),
                 ("remove", t.check_remove),
                 ("purge", lambda: t.check_purge(before)))
        run_steps(tap, steps, t.journal)


def main():
    tap = nspawn.Tap()
    reason = nspawn.begin_test(BUILD_TIMEOUT)
    deb_dir = os.environ.get("ECHOD_DEB_DIR")
    if not reason and os.environ.get("ECHOD_SANITIZERS") == "1":
        reason = ("built with --enable-sanitizers: the package is the plain build's; "
                  "the plain build runs this test")
    if not reason and deb_dir and not glob.glob(os.path.join(deb_dir, "echod_*.deb")):
        reason = "ECHOD_DEB_DIR=%s holds no echod_*.deb" % deb_dir
    if not reason and not deb_dir:
        if not os.path.isfile(os.path.join(SRCDIR, "debian", "rules")):
            reason = "no debian/ in %s" % SRCDIR
        elif not have("dpkg-buildpackage"):
            reason = "dpkg-buildpackage not found (apt-get install dpkg-dev debhelper)"
        else:
            missing = ensure_build_deps()
            if missing:
                reason = "build dependencies missing: %s" % " ".join(missing)
    if reason:
        nspawn.print_skip(reason)
        return 0

    work = tempfile.mkdtemp(prefix="echod-pkg.")
    with guarded(tap):
        try:
            run(tap, deb_dir, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    tap.finish()

if __name__ == "__main__":
    main()
