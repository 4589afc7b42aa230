#!/usr/bin/env python3
"""SIGHUP: a good file is applied live (log_level, max_connections,
max_pending, idle_timeout), a bad one is refused with FILE:LINE: messages
and the running configuration keeps serving; reloads under load lose no
byte; a setting that needs a restart is named in the log."""
import os
import re
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (MiB, Daemon, Tap, backends, client, client_bg,  # noqa: E402
                       client_ok, client_wait, poll_until)

APPLIED = r"reload: configuration applied"
REFUSED = r"reload: configuration file .* has errors, keeping the running one"


def reload_and_wait(d, regex, timeout=10):
    mark = d.log_mark()
    d.signal(signal.SIGHUP)
    return d.wait_log(regex, timeout, since=mark)


tap = Tap(timeout=150 * len(backends()))
for be in backends():
    with tap.guard(be), Daemon(be, log_level="info") as d:
        # --- under load: 10 good and 10 bad reloads while 16 clients stream
        load = client_bg(d.port, "-c", 16, "-n", "48M", "--random-chunks", "-s", 11, timeout=90)
        good = bad = 0
        for i in range(20):
            if i % 2:
                d.write_raw_config(d.config() + "\nmax_pending = ;\n")     # syntax error
                bad += bool(reload_and_wait(d, REFUSED))
            else:
                d.rewrite_config(max_pending=32768 + 1024 * i, idle_timeout=100 + i)
                good += bool(reload_and_wait(d, APPLIED))
            time.sleep(0.05)
        res = client_wait(load)
        tap.ok(good == 10 and bad == 10, f"[{be}] 20 reloads under load: {good} applied, "
               f"{bad} refused", diag=d.log_tail())
        client_ok(tap, f"[{be}] 16 x 48 MiB streamed byte-exact through the reloads", res, d,
                  total=16 * 48 * MiB)
        tap.ok(re.search(r":\d+: ", d.log()) is not None and
               re.search(re.escape(d.conf) + r":\d+: ", d.log()),
               f"[{be}] refused reloads log FILE:LINE: messages", diag=d.log_tail())
        tap.ok(d.running(), f"[{be}] daemon alive after the reloads")

        # --- @include of a directory on reload: refused, daemon lives
        sub = tempfile.mkdtemp(prefix="echodtest.dir.")
        d.write_raw_config(d.config() + f'\n@include "{sub}"\n')
        m = reload_and_wait(d, REFUSED)
        tap.ok(m and d.running() and "is a directory" in d.log(),
               f"[{be}] @include of a directory on reload: refused, still running",
               diag=d.log_tail())
        os.rmdir(sub)
        res = client(d.port, "-c", 4, "-n", "1M", "-s", 12)
        client_ok(tap, f"[{be}] still echoing after the refused reloads", res, d, total=4 * MiB)

        # --- log_level applies live
        d.rewrite_config(log_level="error")
        reload_and_wait(d, APPLIED)
        mark = d.log_mark()
        d.rewrite_config(log_level="error", idle_timeout=301)
        d.signal(signal.SIGHUP)
        time.sleep(0.5)
        tap.ok("reload: reading" not in d.log()[mark:],
               f"[{be}] log_level \"error\" applied live: info lines no longer logged",
               diag=d.log()[mark:])
        d.rewrite_config(log_level="debug")
        tap.ok(reload_and_wait(d, APPLIED) is not None, f"[{be}] log_level back to debug")

        # --- max_connections applies live, exactly
        d.rewrite_config(max_connections=5)
        reload_and_wait(d, APPLIED)
        hold = client_bg(d.port, "-c", 5, "-n", "10", "--hold", 3000, timeout=20)
        poll_until(lambda: d.fd_count() >= 5 + 4, 5)
        rej = client(d.port, "-c", 3, "--expect-close", timeout=10)
        tap.ok(rej.ok, f"[{be}] max_connections 5 applied live: 3 more are closed at once",
               diag=rej.diag())
        res = client_wait(hold)
        tap.ok(res.ok and res.info.get("hold_closed") == 0,
               f"[{be}] the 5 allowed connections were served and kept", diag=res.diag())
        d.rewrite_config(max_connections=1000)
        reload_and_wait(d, APPLIED)
        res = client(d.port, "-c", 50, "-n", "64k", "-s", 13)
        client_ok(tap, f"[{be}] max_connections raised again: 50 clients served", res, d,
                  total=50 * 65536)

        # --- a setting that needs a restart is named, and the old one serves on
        old_port = d.port
        d.rewrite_config(port=old_port + 1 if old_port < 65535 else old_port - 1)
        m = reload_and_wait(d, APPLIED)
        tap.ok(m and re.search(r"reload: port changed; this takes effect at the next restart",
                               d.log()),
               f"[{be}] a port change is named as needing a restart", diag=d.log_tail())
        res = client(old_port, "-n", "100k", "-s", 14)
        client_ok(tap, f"[{be}] the running port keeps serving", res, d, total=100 * 1024)
        tap.ok(d.stop() == 0, f"[{be}] clean exit after the reloads", diag=d.log_tail())
tap.done()
