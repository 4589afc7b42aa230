#!/usr/bin/python3
"""Smoke test of the nspawn harness (TAP): boot a real systemd as PID 1 in a
container, check its state, socket activation reachable from the host over
the shared loopback, and a clean shutdown that leaves nothing behind.

Run as root:  python3 tests/system/test_boot.py
Env: ECHOD_SYSTEST_TIMEOUT (s, whole test incl. a root build; default 900),
     ECHOD_NSPAWN_MODE=overlay|copy, ECHOD_SYSTEST_NO_INSTALL=1.
"""

import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nspawn  # noqa: E402

BUILD_TIMEOUT = int(os.environ.get("ECHOD_SYSTEST_TIMEOUT", "900"))
RUN_TIMEOUT = 120        # once the root exists: boot + checks + shutdown

# Host sysctls the container must not change (it shares the network namespace).
SYSCTLS = [
    "net/ipv4/ip_local_port_range", "net/ipv4/ip_unprivileged_port_start",
    "net/ipv4/ping_group_range", "net/core/somaxconn", "net/ipv4/tcp_syncookies",
    "net/ipv4/ip_forward", "net/ipv4/conf/all/rp_filter", "net/ipv6/conf/all/disable_ipv6",
    "kernel/pid_max", "kernel/core_pattern", "kernel/sysrq", "kernel/io_uring_disabled",
    "fs/file-max", "fs/nr_open", "fs/inotify/max_user_instances", "vm/max_map_count",
]


def read_sysctls():
    vals = {}
    for k in SYSCTLS:
        try:
            with open("/proc/sys/" + k) as f:
                vals[k] = f.read().strip()
        except OSError:
            pass
    return vals


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def echo_roundtrip(port, payload, timeout=10):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            b = s.recv(65536)
            if not b:
                return got
            got += b


def host_listener():
    """A one-shot TCP server on the host's loopback; returns (port, thread)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(20)

    def serve():
        try:
            c, _ = srv.accept()
            c.sendall(b"hello-from-host\n")
            c.close()
        except OSError:
            pass
        finally:
            srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv.getsockname()[1], t


def main():
    tap = nspawn.Tap()
    reason = nspawn.begin_test(BUILD_TIMEOUT)
    if reason:
        nspawn.print_skip(reason)
        return 0

    c = None
    try:
        t0 = time.monotonic()
        root = nspawn.ensure_root()
        took = time.monotonic() - t0
        info = nspawn.root_info(root)
        tap.ok(True, "cached Debian 12 root available")
        tap.diag("root: %s (built %s in %.1f s; this run waited %.1f s for it)"
                 % (root, info["built_at"], info["build_seconds"], took))
        signal.alarm(RUN_TIMEOUT)

        sysctl_before = read_sysctls()
        port = free_port()
        payload = b"smoke test through socket activation\n" * 100
        with nspawn.Container(root) as c:
            tap.diag("run dir %s (%s, prepared in %.2f s)"
                     % (c.rundir, c.mode, c.prepare_seconds))
            # files added before boot: a socket-activated cat, enabled
            c.write_file("/etc/systemd/system/smoke.socket",
                         "[Unit]\nDescription=harness smoke socket\n"
                         "[Socket]\nListenStream=127.0.0.1:%d\nAccept=yes\n"
                         "[Install]\nWantedBy=sockets.target\n" % port)
            c.write_file("/etc/systemd/system/smoke@.service",
                         "[Unit]\nDescription=harness smoke echo\n"
                         "[Service]\nExecStart=/bin/cat\nStandardInput=socket\n"
                         "StandardError=journal\n")
            os.makedirs(c.path("/etc/systemd/system/sockets.target.wants"), exist_ok=True)
            os.symlink("/etc/systemd/system/smoke.socket",
                       c.path("/etc/systemd/system/sockets.target.wants/smoke.socket"))

            state = c.boot()
            tap.ok(state in ("running", "degraded"),
                   "systemd booted as PID 1: is-system-running = %s" % state)
            tap.diag("boot: %.2f s (nspawn pid %d, container init pid %d)"
                     % (c.boot_seconds, c.proc.pid, c.init_pid))
            r = c.run(["sh", "-c", "echo $$; cat /proc/1/comm"])
            tap.ok(r.ok and r.stdout.split()[-1] == "systemd",
                   "PID 1 inside is systemd", r.diag())
            r = c.systemctl("is-system-running")
            tap.ok(r.stdout.strip() in ("running", "degraded"),
                   "systemctl is-system-running via nsenter", r.diag())
            failed = c.systemctl("--failed", "--no-legend", "--plain").stdout.strip()
            tap.diag("failed units: " + (failed.replace("\n", "; ") or "none"))
            ver = c.run(["systemctl", "--version"]).stdout.splitlines()
            tap.diag("inside: " + (ver[0] if ver else "?"))

            tap.ok(os.readlink("/proc/%d/ns/net" % c.init_pid) ==
                   os.readlink("/proc/self/ns/net"),
                   "container shares the host network namespace")

            r = c.systemctl("is-active", "smoke.socket")
            tap.ok(r.stdout.strip() == "active", "smoke.socket (added before boot) is active",
                   r.diag() + "\n" + c.journal("smoke.socket"))
            try:
                got = echo_roundtrip(port, payload)
                err = ""
            except OSError as e:
                got, err = b"", str(e)
            tap.ok(got == payload,
                   "host 127.0.0.1:%d reaches the socket-activated service inside" % port,
                   "got %d of %d bytes %s\n%s" % (len(got), len(payload), err,
                                                  c.journal("smoke.socket")))
            j = c.journal("smoke@*")
            tap.ok("harness smoke echo" in j or "smoke@" in j,
                   "journal(unit) shows the activated instance", j or "(empty journal)")

            hport, th = host_listener()
            r = c.run(["python3", "-c",
                       "import socket;print(socket.create_connection(('127.0.0.1',%d),"
                       "timeout=10).recv(64).decode().strip())" % hport], timeout=20)
            th.join(5)
            tap.ok(r.stdout.strip() == "hello-from-host",
                   "inside reaches a host listener on 127.0.0.1", r.diag())

            c.copy_in(os.path.abspath(__file__), "/run/smoke/test_boot.py")
            r = c.run(["cmp", "/run/smoke/test_boot.py", "-"],
                      input=open(os.path.abspath(__file__), "rb").read())
            tap.ok(r.ok, "copy_in after boot (into the container's /run tmpfs)", r.diag())

            nspawn_pid, init_pid, init_start = c.proc.pid, c.init_pid, c.init_start
            rundir, cgroups = c.rundir, list(c.cgroups)
            c.poweroff()
            tap.ok(c.proc.returncode == 0,
                   "clean poweroff: nspawn exited with %s" % c.proc.returncode,
                   c.console_tail(20))
            tap.diag("shutdown: %.2f s" % c.shutdown_seconds)
        # the with block has removed the run dir, cgroups and mounts
        tap.ok(nspawn._starttime(init_pid) != init_start and
               nspawn._starttime(nspawn_pid) is None,
               "no container process left")
        left = [p for p in [rundir] + cgroups if os.path.exists(p)]
        tap.ok(not left and not nspawn._mounts_under(rundir),
               "run dir, overlay mount and cgroups removed", "left: %s" % left)
        after = read_sysctls()
        changed = {k: (sysctl_before[k], after.get(k)) for k in sysctl_before
                   if after.get(k) != sysctl_before[k]}
        tap.ok(not changed, "host sysctls unchanged", repr(changed))
    except BaseException as e:      # noqa: BLE001 - report, clean up, fail
        tap.harness_failed(e, c.console_tail(40) if c and c.log_path else "")
    finally:
        signal.alarm(0)
    tap.finish()


if __name__ == "__main__":
    main()
