#!/usr/bin/python3
"""System test of echod under a real systemd (TAP, automake tap-driver).

Boots a Debian 12 container (tests/system/nspawn.py: systemd as PID 1,
sharing the host's network namespace), installs echod into it with
`make -C BUILDDIR install DESTDIR=<container root>`, moves echod.socket and
echod-metrics.socket to free ports with drop-ins, and drives the installed
units with systemctl while clients on the host (tests/echoclient, Python
sockets, urllib) check every byte:

  1. socket activation (echo socket, then the metrics socket alone)
  2. Type=notify state, status text, ready line, dynamic user, no capabilities
  3. systemctl reload: a good file is applied, a bad one is refused (FILE:LINE)
  4. live reloads (backend, buffer_count, core) under a connected client
  5. hardening: systemd-analyze security exposure; pinning + io_uring sandboxed
  6. man pages installed, warning-free, found by man
  7. systemctl restart without dropping or refusing clients (--fd-store)
  8. stop: ports closed, totals and stopped lines in the journal

Run as root:  python3 tests/system/test_systemd.py   (or via make check)
Env: ECHOD (built daemon; BUILDDIR = dirname(dirname($ECHOD))), ECHOCLIENT,
     ECHOD_SRCDIR, ECHOD_SYSTEST_TIMEOUT (s, while a root may be built;
     default 900), ECHOD_SYSTEST_RUN_TIMEOUT (s, the run once the root
     exists; default 170), ECHOD_NSPAWN_MODE, ECHOD_SYSTEST_NO_INSTALL=1.
Prints "1..0 # SKIP reason" when the harness cannot run here.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("ECHOD_SRCDIR") or os.path.normpath(os.path.join(HERE, "..", ".."))
ECHOD = os.environ.get("ECHOD") or os.path.join(SRCDIR, "src", "echod")
BUILDDIR = os.path.dirname(os.path.dirname(os.path.abspath(ECHOD)))
if not os.environ.get("ECHOCLIENT"):
    os.environ["ECHOCLIENT"] = os.path.join(BUILDDIR, "tests", "echoclient")

sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(SRCDIR, "tests", "functional"))
import nspawn        # noqa: E402
import echodtest     # noqa: E402
from systest import (MiB, Pinger, Through, UdpStream, container_run,  # noqa: E402
                     free_port_dual, guarded, http_get, make_env, mval, port_closed,
                     run_steps, scrape, udp_echo)

BUILD_TIMEOUT = int(os.environ.get("ECHOD_SYSTEST_TIMEOUT", "900"))
RUN_TIMEOUT = int(os.environ.get("ECHOD_SYSTEST_RUN_TIMEOUT", "170"))
UNIT_DIR = "/lib/systemd/system"
DYNAMIC_UIDS = range(61184, 65520)      # systemd's DynamicUser= range


# ------------------------------------------------------------------ helpers

def pairs(text, sep):
    """{key: value} of the lines of text that hold sep (split at the first)."""
    return dict(line.split(sep, 1) for line in text.splitlines() if sep in line)


def make_vars(builddir, names):
    """Values of the build's Makefile variables (${x} / $(x) expanded)."""
    with open(os.path.join(builddir, "Makefile")) as f:
        text = f.read()
    raw = {}
    for m in re.finditer(r"^([A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*(.*)$", text, re.M):
        raw.setdefault(m.group(1), m.group(2).strip())

    def expand(v, depth=0):
        if depth > 20:
            return v
        return re.sub(r"\$[({]([A-Za-z_][A-Za-z0-9_]*)[)}]",
                      lambda m: expand(raw.get(m.group(1), ""), depth + 1), v)
    return {n: expand(raw.get(n, "")) for n in names}


# ------------------------------------------------------------------- checks

class SystemTest:
    def __init__(self, tap, c, paths, echo_port, metrics_port, udp_port):
        self.tap, self.c = tap, c
        self.udp_port = udp_port
        self.conf = paths["conf"]
        self.unit_path = paths["unit"]
        self.man_env = paths["man_env"]
        self.mandir = paths["mandir"]
        self.echo_port, self.metrics_port = echo_port, metrics_port
        self.base = base_config(echo_port, metrics_port)
        self.cfg = dict(self.base)

    # --- container helpers
    def show(self, *props, unit="echod.service"):
        r = self.c.systemctl("show", unit, "-p", ",".join(props))
        return pairs(r.stdout, "=")

    def main_pid(self):
        try:
            return int(self.show("MainPID").get("MainPID", "0"))
        except ValueError:
            return 0

    def is_active(self, unit):
        return self.c.systemctl("is-active", unit).stdout.strip()

    def wait_active(self, unit, want, timeout=10):
        last = [None]

        def f():
            last[0] = self.is_active(unit)
            return last[0] == want
        echodtest.poll_until(f, timeout, 0.1)
        return last[0]

    def jlines(self):
        return self.c.journal("echod.service").splitlines()

    def jwait(self, mark, regex, timeout=8):
        """The first journal line after line mark matching regex, or None."""
        rx = re.compile(regex)

        def f():
            for line in self.jlines()[mark:]:
                if rx.search(line):
                    return line
            return None
        return echodtest.poll_until(f, timeout, 0.2)

    def jtail(self, mark=0, n=30):
        lines = self.jlines()[mark:]
        return "journal (-u echod, last %d lines):\n%s" % (
            min(n, len(lines)), "\n".join(lines[-n:]) or "(empty)")

    def write_config(self, text=None):
        if text is None:
            text = echodtest.config_text(self.cfg)
        self.c.write_file(self.conf, text)

    def reload(self, timeout=30):
        t0 = time.monotonic()
        r = self.c.systemctl("reload", "echod.service", timeout=timeout)
        return r, time.monotonic() - t0

    def threads(self, pid):
        """{comm: Cpus_allowed_list} of every thread of pid (inside)."""
        r = self.c.run(["sh", "-c", 'for t in /proc/%d/task/*; do '
                        'printf "%%s\\t%%s\\n" "$(cat $t/comm)" '
                        '"$(sed -n "s/^Cpus_allowed_list:[[:space:]]*//p" $t/status)"; '
                        'done' % pid])
        return pairs(r.stdout, "\t")

    def client_ok(self, res, total):
        return res.ok and res.info.get("bytes_sent") == total and \
            res.info.get("bytes_received") == total

    # --- 1
    def check_activation(self):
        tap, c = self.tap, self.c
        r = c.systemctl("start", "echod.socket")
        time.sleep(0.5)
        st = {u: self.is_active(u) for u in ("echod.socket", "echod-metrics.socket",
                                              "echod.service")}
        tap.ok(r.ok and st["echod.socket"] == "active" and
               st["echod-metrics.socket"] == "active" and st["echod.service"] == "inactive",
               "activation: systemctl start echod.socket alone: both sockets active, "
               "echod.service inactive until the first connection",
               r.diag() + "\nstates: %r" % st)
        tap.diag("listening: " + c.run(["sh", "-c", "systemctl show -p Listen echod.socket "
                                       "echod-metrics.socket | tr '\\n' ' '"]).stdout)

        res = echodtest.client(self.echo_port, "-c", "8", "-n", "1M", timeout=30)
        svc = self.wait_active("echod.service", "active", 10)
        tap.ok(self.client_ok(res, 8 * MiB) and svc == "active",
               "activation: the first connection starts echod.service; "
               "8 x 1 MiB echoed byte-exact",
               res.diag() + "\nechod.service: %s\n%s" % (svc, self.jtail()))
        if res.ok:
            ms = max(res.info.get("elapsed_ms", 0), 1)
            tap.diag("8 x 1 MiB in %d ms (%.0f MiB/s each way, incl. activation)"
                     % (ms, 8 * 1000.0 / ms))

        try:
            status, body = http_get(self.metrics_port)
        except OSError as e:
            status, body = None, str(e)
        names = sorted(set(re.findall(r"^(echod_[a-z_]+)", body, re.M)))
        tap.ok(status == 200 and "echod_build_info" in names and len(names) > 10,
               "activation: GET /metrics on the metrics socket: 200 with echod_ metrics",
               "status %s, %d echod_ families\n%s" % (status, len(names), body[:600]))
        tap.diag("metrics: %d echod_ families" % len(names))

        pid_before = self.main_pid()
        r = c.systemctl("stop", "echod.service")
        st_svc = self.wait_active("echod.service", "inactive", 15)
        st_sock = (self.is_active("echod.socket"), self.is_active("echod-metrics.socket"))
        try:
            status, body = http_get(self.metrics_port, timeout=15)
        except OSError as e:
            status, body = None, str(e)
        svc = self.wait_active("echod.service", "active", 10)
        pid_after = self.main_pid()
        tap.ok(r.ok and st_svc == "inactive" and st_sock == ("active", "active") and
               status == 200 and "echod_build_info" in body and svc == "active" and
               pid_after not in (0, pid_before),
               "activation: after systemctl stop echod.service, a first connection to "
               "the metrics socket alone starts it and gets 200",
               "%s\nafter stop: service %s, sockets %r; GET: %s %s; service %s, "
               "MainPID %d -> %d\n%s" % (r.diag(), st_svc, st_sock, status, body[:300],
                                         svc, pid_before, pid_after, self.jtail()))

    # --- 2
    def check_notify(self):
        tap, c = self.tap, self.c
        sh = self.show("Type", "ActiveState", "SubState", "StatusText", "MainPID",
                       "NotifyAccess")
        tap.diag("systemctl show: " + ", ".join("%s=%s" % kv for kv in sorted(sh.items())))
        tap.ok(sh.get("Type") == "notify" and sh.get("NotifyAccess") == "main" and
               sh.get("ActiveState") == "active" and sh.get("SubState") == "running",
               "notify: Type=notify, NotifyAccess=main, active/running", repr(sh))
        st = sh.get("StatusText", "")
        tap.ok(st and re.search(r"\bbackend (io_uring|epoll)\b", st),
               "notify: StatusText non-empty and names the backend: %r" % st)
        ready = [l for l in self.jlines() if re.search(r"\bready\b", l)]
        tap.ok(ready, "notify: the journal shows the ready line", self.jtail())
        if ready:
            tap.diag("journal: " + ready[-1])

        pid = self.main_pid()
        r = c.run(["cat", "/proc/%d/status" % pid])
        f = {}
        for line in r.stdout.splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                f[k] = v.split()
        uids = [int(x) for x in f.get("Uid", [])]
        gids = [int(x) for x in f.get("Gid", [])]
        capeff = f.get("CapEff", ["?"])[0]
        tap.diag("MainPID %d: Uid %s Gid %s CapEff %s CapBnd %s NoNewPrivs %s Seccomp %s"
                 % (pid, uids, gids, capeff, f.get("CapBnd", ["?"])[0],
                    f.get("NoNewPrivs", ["?"])[0], f.get("Seccomp", ["?"])[0]))
        tap.ok(len(uids) == 4 and all(u in DYNAMIC_UIDS for u in uids) and
               len(gids) == 4 and 0 not in gids and re.fullmatch(r"0+", capeff or ""),
               "sandbox: the main process runs as a dynamic user (not root) with CapEff 0",
               r.diag())

    # --- 3
    def check_reload(self):
        tap, c = self.tap, self.c
        pid0 = self.main_pid()
        m0 = mval(scrape(self.metrics_port), "echod_reloads_total")
        mark = len(self.jlines())
        self.cfg.update(log_level="debug", idle_timeout=120)
        self.write_config()
        r, took = self.reload()
        line = self.jwait(mark, r"reload: configuration applied")
        m1 = echodtest.poll_until(lambda: (lambda v: v if v is not None and m0 is not None and v > m0
                               else None)(mval(scrape(self.metrics_port),
                                               "echod_reloads_total")), 5, 0.2)
        tap.ok(r.ok and line and "idle_timeout 120" in line and m1,
               "reload: log_level/idle_timeout changed -> systemctl reload exits 0, journal "
               "'reload: configuration applied', echod_reloads_total increases",
               "%s\njournal line: %r\nechod_reloads_total %r -> %r\n%s"
               % (r.diag(), line, m0, m1, self.jtail(mark)))
        tap.diag("reload took %.2f s; %s; echod_reloads_total %s -> %s"
                 % (took, line, m0, m1))

        # a bad file: refused by ExecReload's --check-config, daemon untouched
        bad = dict(self.cfg, port=70000)
        text = echodtest.config_text(bad)
        lineno = next(i for i, l in enumerate(text.splitlines(), 1)
                      if l.startswith("port = 70000"))
        mark = len(self.jlines())
        f0 = mval(scrape(self.metrics_port), "echod_reloads_total")
        self.write_config(text)
        r, took = self.reload()
        want = re.escape("%s:%d:" % (self.conf, lineno))
        eline = self.jwait(mark, want, timeout=5)
        tap.ok(r.rc != 0 and eline,
               "reload: a bad file (port = 70000) -> systemctl reload exits non-zero and "
               "the journal shows %s:%d: message" % (self.conf, lineno),
               "%s\n%s" % (r.diag(), self.jtail(mark)))
        tap.diag("systemctl reload rc %d; journal: %s" % (r.rc, eline))
        res = echodtest.client(self.echo_port, "-c", "4", "-n", "1M", timeout=30)
        st = self.is_active("echod.service")
        pid1 = self.main_pid()
        f1 = mval(scrape(self.metrics_port), "echod_reloads_total")
        tap.ok(st == "active" and pid1 == pid0 and self.client_ok(res, 4 * MiB) and
               f1 == f0,
               "reload: after the refused reload the service stays active (same MainPID) "
               "and serving: 4 x 1 MiB byte-exact",
               "%s\nservice %s, MainPID %d -> %d, echod_reloads_total %r -> %r\n%s"
               % (res.diag(), st, pid0, pid1, f0, f1, self.jtail(mark)))
        # restore the good file
        self.cfg = dict(self.base)
        self.write_config()
        mark = len(self.jlines())
        r, _ = self.reload()
        line = self.jwait(mark, r"reload: configuration applied")
        tap.ok(r.ok and line, "reload: good file restored and applied",
               r.diag() + "\n" + self.jtail(mark))

    # --- 4
    def check_live_reload(self):
        tap, c = self.tap, self.c
        pid0 = self.main_pid()
        cpus = sorted(os.sched_getaffinity(0))
        steps = [("backend = \"epoll\"", {"backend": "epoll"},
                  lambda s, th: mval(s, "echod_backend_info", backend="epoll") == 1,
                  'echod_backend_info{backend="epoll"} 1'),
                 ("buffer_count = 1024", {"buffer_count": 1024}, None, None),
                 ("core = [0]", {"core": [0]},
                  lambda s, th: mval(s, "echod_workers") == 1 and th.get("echod-w0") == "0",
                  "echod_workers 1, echod-w0 on CPU 0")]
        if len(cpus) >= 2 and cpus[:2] == [0, 1]:
            steps.append(("core = [0, 1]", {"core": [0, 1]},
                          lambda s, th: mval(s, "echod_workers") == 2 and
                          th.get("echod-w0") == "0" and th.get("echod-w1") == "1",
                          "echod_workers 2, echod-w0 on CPU 0, echod-w1 on CPU 1"))
        else:
            tap.diag("only %d CPU(s) (%s): no core = [0, 1] step" % (len(cpus), cpus))
        steps.append(("backend = \"io_uring\"", {"backend": "io_uring"},
                      lambda s, th: mval(s, "echod_backend_info", backend="io_uring") == 1,
                      'echod_backend_info{backend="io_uring"} 1'))

        p = Pinger(self.echo_port, conns=4).start()
        try:
            tap.diag("client connected: 4 connections doing round trips of 1..16 KiB")
            for name, change, verify, what in steps:
                before = p.progress()
                mark = len(self.jlines())
                self.cfg.update(change)
                self.write_config()
                r, took = self.reload()
                line = self.jwait(mark, r"reload: configuration applied")
                applied = None
                seen = {}
                if verify:
                    def f():
                        s = scrape(self.metrics_port, timeout=5)
                        th = self.threads(self.main_pid())
                        seen["m"] = (mval(s, "echod_backend_info", backend="io_uring"),
                                     mval(s, "echod_backend_info", backend="epoll"),
                                     mval(s, "echod_workers"))
                        seen["threads"] = th
                        return verify(s, th)
                    applied = echodtest.poll_until(f, 5, 0.25)
                new = self.jlines()[mark:]
                later = [l for l in new if "next restart" in l]
                # the client keeps echoing after the reload (or dies: reported below)
                echodtest.poll_until(lambda: p.progress() > before + 20 or not p.all_alive(),
                                     3, 0.1)
                pid = self.main_pid()
                good = (r.ok and line and not later and (verify is None or applied) and
                        p.all_alive() and p.progress() > before and pid == pid0)
                tap.ok(good, "live reload %s: applied%s, client still echoing, MainPID "
                       "unchanged" % (name, " (%s)" % what if what else ""),
                       "%s\nreload took %.2f s; 'configuration applied': %r\n"
                       "journal lines naming a restart: %r\n"
                       "metrics (io_uring, epoll, workers): %r; threads: %r\n"
                       "client: %s; MainPID %d -> %d\n%s"
                       % (r.diag(), took, line, later, seen.get("m"), seen.get("threads"),
                          p.summary(), pid0, pid, "\n".join(["journal since the reload:"]
                                                              + new[-15:])))
                if good:
                    tap.diag("%s: reload %.2f s, client +%d round trips"
                             % (name, took, p.progress() - before))
            time.sleep(0.5)
        finally:
            p.stop()
        tap.ok(not p.errors and p.progress() > 0,
               "live reload: the client connected before the reloads completed byte-exact",
               p.summary())
        tap.diag("client: " + p.summary())

    # --- 5
    def check_hardening(self):
        tap, c = self.tap, self.c
        r = c.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                   self.unit_path], timeout=60)
        m = re.search(r"Overall exposure level for \S+:\s*([0-9.]+)\s*(\S*)", r.stdout)
        val = float(m.group(1)) if m else None
        tap.ok(val is not None and val <= 1.0,
               "hardening: systemd-analyze security --offline=yes exposure %s <= 1.0"
               % (m.group(1) + " " + m.group(2) if m else "?"),
               r.diag()[-3000:])
        if m:
            tap.diag("exposure %s %s" % (m.group(1), m.group(2)))
            weak = [l.strip() for l in r.stdout.splitlines() if l.lstrip().startswith("✗")]
            weak_pts = []
            for l in weak:
                mm = re.search(r"\s(\d+\.\d+)\s*$", l)
                if mm and float(mm.group(1)) > 0:
                    weak_pts.append(l)
            if weak_pts:
                tap.diag("options still scoring:")
                tap.diag("\n".join("  " + re.sub(r"\s{2,}", "  ", l) for l in weak_pts[:12]))

        # pinning and io_uring under the sandbox: core = [0], fresh start
        self.cfg = dict(self.base, core=[0])
        self.write_config()
        mark = len(self.jlines())
        r = c.systemctl("restart", "echod.service", timeout=60)
        st = self.wait_active("echod.service", "active", 15)
        pid = self.main_pid()
        th = echodtest.poll_until(lambda: (lambda t: t if "echod-w0" in t else None)(self.threads(pid)),
                      5, 0.2) or {}
        tap.diag("threads of MainPID %d: %s" % (pid, ", ".join(
            "%s=%s" % kv for kv in sorted(th.items()))))
        tap.ok(r.ok and st == "active" and th.get("echod-w0") == "0",
               "hardening: core = [0]: worker thread echod-w0 has Cpus_allowed_list 0 "
               "under the sandbox", "%s\nservice %s\n%s" % (r.diag(), st, self.jtail(mark)))
        s = scrape(self.metrics_port)
        be = [dict(ls).get("backend") for (n, ls), v in (s or {}).items()
              if n == "echod_backend_info" and v == 1]
        res = echodtest.client(self.echo_port, "-c", "2", "-n", "1M", timeout=30)
        tap.ok(be == ["io_uring"] and self.client_ok(res, 2 * MiB),
               "hardening: io_uring works under the sandbox "
               "(echod_backend_info{backend=\"io_uring\"} 1, 2 x 1 MiB byte-exact)",
               "backend: %r\n%s\n%s" % (be, res.diag(), self.jtail(mark)))
        tap.diag("backend in use: %s" % be)

    # --- 6
    def check_man(self):
        tap, c = self.tap, self.c
        env = dict(self.man_env, MANWIDTH="80")
        for page, title in (("man8/echod.8", "ECHOD(8)"),
                            ("man5/echod.conf.5", "ECHOD.CONF(5)")):
            path = os.path.join(self.mandir, page)
            r = c.run(["man", "--warnings", "-l", path], env=env, timeout=60)
            lines = r.stdout.splitlines()
            tap.ok(r.ok and not r.stderr.strip() and lines and title in lines[0] and
                   len(lines) > 20,
                   "man: man --warnings -l %s renders (%d lines) with no warning"
                   % (path, len(lines)),
                   "%s\nfirst lines:\n%s" % (r.diag()[:3000], "\n".join(lines[:5])))
            if r.stderr.strip():
                tap.diag("stderr: " + r.stderr.strip()[:2000])
        for args, title, page in ((["echod"], "ECHOD(8)", "man8/echod.8"),
                                  (["5", "echod.conf"], "ECHOD.CONF(5)", "man5/echod.conf.5")):
            w = c.run(["man", "-w"] + args, env=env, timeout=30)
            r = c.run(["man"] + args, env=env, timeout=60)
            first = (r.stdout.splitlines() or [""])[0]
            found = w.stdout.strip()
            want = os.path.join(self.mandir, page)
            # /usr/local/man -> share/man in Debian: compare the resolved paths
            rp = c.run(["readlink", "-f", found or "/nonexistent", want]).stdout.split()
            tap.ok(r.ok and title in first and len(rp) == 2 and rp[0] == rp[1],
                   "man: `man %s` finds %s" % (" ".join(args), found or "nothing"),
                   "%s\nman -w: %s\n%s" % (r.diag()[:1500], w.stdout.strip(),
                                            w.stderr.strip()))

    # --- 6b
    def check_udp(self):
        """echod-udp.socket turned on while echod runs: systemd starts a
        socket unit only while its service is stopped, so the way is enable
        + restart (WantedBy=echod.service starts the socket between the
        restart's stop and start; TCP connections survive through the fd
        store); datagrams of every size come back whole; a restart loses
        none (the socket's queue holds them meanwhile); disabled again."""
        tap, c = self.tap, self.c
        pid0 = self.main_pid()
        r0 = c.systemctl("enable", "echod-udp.socket")
        th = Through(self.echo_port,
                     lambda: c.systemctl("restart", "echod.service", timeout=60),
                     lambda: (self.wait_active("echod.service", "active", 15), self.main_pid()))
        r, (st, pid1) = th.result, th.state
        tap.ok(r0.ok and r.ok and st == "active" and pid1 not in (0, pid0) and
               self.is_active("echod-udp.socket") == "active",
               "udp: systemctl enable echod-udp.socket && systemctl restart echod: the socket "
               "is active and echod (MainPID %d -> %d) took it" % (pid0, pid1),
               r0.diag() + "\n" + r.diag() + "\n" + self.jtail())
        th.report(tap, "restart", self.jtail(), label="udp")
        sizes = [0, 1, 1472, 8192, 65507]
        bad = udp_echo(self.udp_port, [bytes((i * 131 + n) & 0xff for i in range(n))
                                       for n in sizes])
        tap.ok(not bad, "udp: datagrams of %s bytes come back whole through the activated "
               "socket" % ", ".join(map(str, sizes)), "not back whole: %r\n%s"
               % (bad, self.jtail()))
        got = mval(scrape(self.metrics_port), "echod_udp_received_datagrams_total")
        tap.ok(got is not None and got >= len(sizes),
               "udp: echod_udp_received_datagrams_total counts them (%s)" % got)
        mark = len(self.jlines())
        st = UdpStream(self.udp_port).start()
        time.sleep(0.5)
        r = c.systemctl("restart", "echod.service", timeout=60)
        self.wait_active("echod.service", "active", 15)
        time.sleep(0.5)
        res = st.stop()
        tap.diag("udp through a restart: %r" % res)
        tap.ok(r.ok and res["sent"] > 500 and res["lost"] == 0 and res["corrupt"] == 0 and
               res["duplicated"] == 0 and res["reordered"] == 0,
               "udp: %d datagrams sent across systemctl restart echod: none lost, corrupted, "
               "duplicated or reordered (the socket's queue holds them meanwhile)"
               % res["sent"], "%r\n%s" % (res, self.jtail(mark)))
        r = c.systemctl("disable", "--now", "echod-udp.socket")
        tap.ok(r.ok and self.is_active("echod-udp.socket") == "inactive",
               "udp: systemctl disable --now echod-udp.socket", r.diag())

    # --- 7
    def check_restart(self):
        tap, c = self.tap, self.c
        pid0 = self.main_pid()
        mark = len(self.jlines())
        th = Through(self.echo_port,
                     lambda: c.systemctl("restart", "echod.service", timeout=60),
                     lambda: (self.wait_active("echod.service", "active", 15), self.main_pid()))
        r, (st, pid1) = th.result, th.state
        tap.diag("systemctl restart took %.2f s; MainPID %d -> %d" % (th.t1 - th.t0, pid0, pid1))
        tap.ok(r.ok and st == "active" and pid1 not in (0, pid0),
               "restart: systemctl restart echod exits 0, MainPID changes (%d -> %d)"
               % (pid0, pid1), r.diag() + "\n" + self.jtail(mark))
        th.report(tap, "restart", self.jtail(mark, 40))
        tap.diag("\n".join(["journal of the restart:"] +
                           [l for l in self.jlines()[mark:]
                            if re.search(r"fd.store|FDSTORE|stor|handed|adopt|drain|"
                                         r"stopp|ready|totals", l, re.I)][:20]))

    # --- 8
    def check_stop(self):
        tap, c = self.tap, self.c
        # known traffic for this process, so its totals line cannot be all zero
        res = echodtest.client(self.echo_port, "-c", "2", "-n", "1M", timeout=30)
        if not self.client_ok(res, 2 * MiB):
            tap.diag("pre-stop client failed:\n" + res.diag())
        s = scrape(self.metrics_port)
        acc = mval(s, "echod_connections_accepted_total")
        rcv = mval(s, "echod_received_bytes_total")
        mark = len(self.jlines())
        r = c.systemctl("stop", "echod.socket", "echod-metrics.socket", "echod.service",
                        timeout=60)
        st = {u: self.is_active(u) for u in ("echod.socket", "echod-metrics.socket",
                                              "echod.service")}
        closed = {"127.0.0.1:%d" % self.echo_port: port_closed(self.echo_port),
                  "127.0.0.1:%d (metrics)" % self.metrics_port: port_closed(self.metrics_port)}
        if echodtest.have_ipv6_loopback():
            closed["[::1]:%d" % self.echo_port] = port_closed(self.echo_port, "::1")
        tap.ok(r.ok and all(v == "inactive" for v in st.values()) and all(closed.values()),
               "stop: systemctl stop echod.socket echod-metrics.socket echod.service: "
               "all inactive, ports closed",
               "%s\nstates %r\nclosed %r" % (r.diag(), st, closed))
        new = self.jlines()[mark:]
        totals = [l for l in new if l.startswith("totals:")]
        stopped = [l for l in new if l.strip() == "stopped"]
        tap.ok(totals and stopped, "stop: the journal shows the totals: and stopped lines",
               "\n".join(["journal since the stop:"] + new[-20:]))
        for l in totals:
            tap.diag(l)
        m = re.search(r"accepted (\d+),.*bytes received (\d+)", totals[-1] if totals else "")
        t_acc, t_rcv = (int(m.group(1)), int(m.group(2))) if m else (None, None)
        tap.ok(m and acc is not None and t_acc >= acc and t_rcv >= rcv and t_rcv >= 2 * MiB,
               "stop: the totals line counts what this process served (metrics before "
               "the stop: accepted %s, received %s bytes)"
               % (None if acc is None else int(acc), None if rcv is None else int(rcv)),
               "line: %s\naccepted %r, bytes received %r in the totals line"
               % (totals[-1] if totals else None, t_acc, t_rcv))


def base_config(echo_port, metrics_port):
    return {
        "backend": "auto",
        "port": echo_port,
        "buffer_count": 4096,
        "core": [],
        "log_level": "info",
        "idle_timeout": 300,
        "shutdown_timeout": 5,
        "metrics": {"enabled": True, "address": "127.0.0.1", "port": metrics_port},
    }


def install(tap, c):
    """make -C BUILDDIR install DESTDIR=<root> (retried once after a minute if
    the build fails: src/ may be mid-edit)."""
    cmd = ["make", "-C", BUILDDIR, "install", "DESTDIR=" + c.root,
           "systemdsystemunitdir=" + UNIT_DIR]
    for attempt in (1, 2):
        t0 = time.monotonic()
        with tempfile.TemporaryFile() as logf:
            p = nspawn._run_group(cmd, timeout=300, stdin=subprocess.DEVNULL,
                                  stdout=logf, stderr=subprocess.STDOUT, env=make_env())
            logf.seek(0)
            out = logf.read().decode(errors="replace")
        if p.returncode == 0:
            tap.diag("make install DESTDIR=<root>: %.1f s" % (time.monotonic() - t0))
            return True, out
        if attempt == 1 and time.monotonic() - nspawn.T_START < RUN_TIMEOUT / 3:
            tap.diag("make install failed (rc %d); retrying in 60 s" % p.returncode)
            time.sleep(60)
            continue
        return False, "make install failed (rc %d):\n%s" % (p.returncode, out[-3000:])
    return False, ""


def main():
    tap = nspawn.Tap()
    reason = nspawn.begin_test(BUILD_TIMEOUT)
    if not reason:
        for f in (ECHOD, os.environ["ECHOCLIENT"], os.path.join(BUILDDIR, "Makefile")):
            if not os.path.exists(f):
                reason = "%s not built (run make, or set ECHOD / ECHOCLIENT)" % f
                break
    if not reason and os.environ.get("ECHOD_SANITIZERS") == "1":
        reason = ("built with --enable-sanitizers: the container has no libasan/libubsan "
                  "and the hardened unit is not for an instrumented binary; the plain "
                  "build runs this test")
    mv = {}
    if not reason:
        mv = make_vars(BUILDDIR, ["prefix", "sbindir", "sysconfdir", "mandir"])
        # nspawn mounts a tmpfs on /tmp; the unit's PrivateTmp= and ProtectHome=
        # hide /tmp, /var/tmp, /home, /root and /run/user from the service
        for k in ("sbindir", "sysconfdir", "mandir"):
            if re.match(r"^/(tmp|var/tmp|home|root|run/user|dev/shm)(/|$)", mv[k] or "/"):
                reason = ("%s %s is hidden inside the container or from the hardened "
                          "service (configure with another --prefix)" % (k, mv[k]))
                break
    if reason:
        nspawn.print_skip(reason)
        return 0

    with guarded(tap):
        root = nspawn.ensure_root()
        signal.alarm(RUN_TIMEOUT)
        t_run = time.monotonic()
        mandir = mv["mandir"] or "/usr/local/share/man"
        paths = {
            "conf": os.path.join(mv["sysconfdir"] or "/usr/local/etc", "echod.conf"),
            "unit": os.path.join(UNIT_DIR, "echod.service"),
            "mandir": mandir,
            # man-db's manpath.config maps /usr/local/sbin to /usr/local/share/man
            "man_env": {} if mandir in ("/usr/local/share/man", "/usr/share/man")
            else {"MANPATH": mandir + ":"},
        }
        echo_port, metrics_port = free_port_dual(), echodtest.free_port()
        while metrics_port == echo_port:
            metrics_port = echodtest.free_port()
        udp_port = echodtest.free_port(kind=socket.SOCK_DGRAM)
        tap.diag("build dir %s (prefix %s); echo port %d, metrics port %d, UDP port %d"
                 % (BUILDDIR, mv["prefix"], echo_port, metrics_port, udp_port))

        with nspawn.Container(root) as c, container_run(tap, c):
            ok, out = install(tap, c)
            unit = c.path(paths["unit"])
            tap.ok(ok and os.path.isfile(unit) and
                   os.path.isfile(c.path(os.path.join(mv["sbindir"], "echod"))),
                   "echod installed into the container (make install DESTDIR=)", out)
            if not ok:
                raise nspawn.NspawnError("cannot test without an installed echod")
            with open(unit) as f:
                tap.diag("unit: " + next((l.strip() for l in f if l.startswith("ExecStart=")),
                                         "no ExecStart"))
            c.write_file("/etc/systemd/system/echod.socket.d/test.conf",
                         "[Socket]\nListenStream=\nListenStream=%d\n" % echo_port)
            c.write_file("/etc/systemd/system/echod-metrics.socket.d/test.conf",
                         "[Socket]\nListenStream=\nListenStream=127.0.0.1:%d\n"
                         % metrics_port)
            c.write_file("/etc/systemd/system/echod-udp.socket.d/test.conf",
                         "[Socket]\nListenDatagram=\nListenDatagram=127.0.0.1:%d\n" % udp_port)
            t = SystemTest(tap, c, paths, echo_port, metrics_port, udp_port)
            t.write_config()

            state = c.boot()
            tap.diag("boot: %.2f s, state %s" % (c.boot_seconds, state))
            r = c.systemctl("daemon-reload")
            if not r.ok:
                tap.diag(r.diag())
            v = c.run(["systemd-analyze", "verify", paths["unit"],
                       "/lib/systemd/system/echod.socket",
                       "/lib/systemd/system/echod-metrics.socket"], timeout=60)
            if v.stderr.strip():
                tap.diag("systemd-analyze verify: " + v.stderr.strip()[:1500])

            run_steps(tap, (("activation", t.check_activation),
                            ("notify", t.check_notify),
                            ("reload", t.check_reload),
                            ("live reload", t.check_live_reload),
                            ("hardening", t.check_hardening),
                            ("man", t.check_man),
                            ("udp", t.check_udp),
                            ("restart", t.check_restart),
                            ("stop", t.check_stop)),
                      lambda: t.jtail(n=20))
            failed = c.systemctl("--failed", "--no-legend", "--plain").stdout.strip()
            if failed:
                tap.diag("failed units: " + failed.replace("\n", "; "))
        tap.diag("run (install, boot, checks, poweroff): %.1f s"
                 % (time.monotonic() - t_run))
    tap.finish()


if __name__ == "__main__":
    main()
