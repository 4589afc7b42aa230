#!/usr/bin/env python3
"""io_uring availability: with io_uring_setup made to fail by a seccomp
filter (EPERM, ENOSYS, EINVAL), backend "auto" runs on epoll and says why
in one log line, while backend "io_uring" refuses to start with a clear
error; without the filter, "auto" picks io_uring on this kernel."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import MiB, Daemon, Tap, client, client_ok  # noqa: E402

DENY = os.environ.get("SECCOMP_DENY") or os.path.join(
    os.path.dirname(os.environ.get("ECHOCLIENT", "")), "seccomp_deny")
STRERROR = {"EPERM": "Operation not permitted", "ENOSYS": "Function not implemented",
            "EINVAL": "Invalid argument"}

tap = Tap(timeout=120)
with tap.guard("auto"), Daemon("auto") as d:
    tap.ok(re.search(r"ready: backend io_uring", d.log()),
           "auto without a filter: io_uring on this kernel", diag=d.log_tail())
    m = re.search(r"io_uring: (.*)", d.log())
    tap.diag(f"io_uring features: {m.group(1) if m else '?'}")

for err, text in STRERROR.items():
    with tap.guard(f"auto {err}"), Daemon("auto", argv_prefix=[DENY, err]) as d:
        lines = [l for l in d.log().splitlines() if "io_uring unavailable" in l]
        tap.ok(re.search(r"ready: backend epoll", d.log()),
               f"auto, io_uring_setup -> {err}: runs on epoll", diag=d.log_tail())
        tap.ok(len(lines) == 1 and f"io_uring_queue_init: {text}" in lines[0]
               and lines[0].startswith("<4>backend auto: using epoll"),
               f"auto, {err}: one warning line says why", diag="\n".join(lines) or d.log_tail())
        tap.figure(f"auto, {err}: fallback", lines[0][3:] if lines else "(no line)")
        res = client(d.port, "-c", 10, "-n", "1M", "-s", 61)
        client_ok(tap, f"auto, {err}: serves byte-exact on epoll", res, d, total=10 * MiB)

    with tap.guard(f"io_uring {err}"):
        d = Daemon("io_uring", argv_prefix=[DENY, err], wait_ready=False)
        try:
            d.start()
            rc = d.wait(10)
            tap.ok(rc == 1 and re.search(rf"backend io_uring: io_uring unavailable: "
                                         rf"io_uring_queue_init: {text}", d.log())
                   and "ready" not in d.log(),
                   f"io_uring insisted on, {err}: start-up fails with a clear error",
                   diag=f"rc={rc}\n{d.log_tail()}")
        finally:
            d.cleanup()
# a reload to io_uring where it is refused: the whole reload is refused,
# the epoll workers go on serving their connections
with tap.guard("reload"), Daemon("epoll", argv_prefix=[DENY, "EPERM"]) as d:
    import signal as _signal
    import time as _time
    from echodtest import client_bg, client_wait
    bg = client_bg(d.port, "-c", 4, "-n", "64M", "--no-read-ms", 800, "-s", 62, timeout=60)
    _time.sleep(0.3)
    mark = d.log_mark()
    d.rewrite_config(backend="io_uring")
    d.signal(_signal.SIGHUP)
    m = d.wait_log(r"keeping the running one", 10, since=mark)
    tap.ok(m and re.search(r"reload: backend io_uring: io_uring unavailable", d.log()[mark:]),
           "reload to io_uring under the filter: refused, the reason logged", diag=d.log_tail())
    client_ok(tap, "the connected clients keep being served on epoll", client_wait(bg), d,
              total=4 * 64 * MiB)
    tap.ok(d.stop() == 0, "clean exit", diag=d.log_tail())
tap.done()
