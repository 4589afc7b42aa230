#!/usr/bin/env python3
"""Every kind of bad configuration sent on reload is refused, named in the
log as FILE:LINE: message (or FILE: message when the whole file is at
fault: too large, not a regular file, unreadable), and the running
configuration keeps serving: a client streams through all of them and a
short one is echoed after each; /metrics counts every refusal.

Root reads any file, so "unreadable" is made real by starting echod with
CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH out of its bounding set (setpriv):
then a mode 000 file is EACCES for it.  A FIFO and a directory in place of
the file are refused without blocking.  An empty file is valid by design
(every default): it is checked with -t, not applied (the defaults would
move /metrics to port 9100)."""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (ECHOD, MiB, Daemon, Tap, backends, client, client_bg,  # noqa: E402
                       client_ok, client_wait, free_port)
import metricsutil  # noqa: E402

REFUSED = r"reload: configuration file .* has errors, keeping the running one"
SETPRIV = shutil.which("setpriv")


def cases(base, incdir):
    """(name, how): how is text for the file, or a callable(conf) that
    puts something else in its place (and returns an undo)."""
    def as_dir(conf):
        os.unlink(conf)
        os.mkdir(conf)
        return lambda: os.rmdir(conf)

    def as_fifo(conf):
        os.unlink(conf)
        os.mkfifo(conf)
        return lambda: os.unlink(conf)

    def unreadable(conf):
        os.chmod(conf, 0)
        return lambda: os.chmod(conf, 0o644)

    out = [
        ("syntax error", base + "max_pending = ;\n", r":\d+: syntax error"),
        ("integer overflowing 64 bits", base + "max_pending = 99999999999999999999;\n",
         r":\d+: integer .* out of range"),
        ("integer overflowing 32 bits", base + "max_connections = 4294967297;\n",
         r":\d+: .*out of range"),
        ("negative value", base + "idle_timeout = -5;\n", r":\d+: idle_timeout: -5 is out of range"),
        ("wrong type", base + 'buffer_size = "big";\n', r":\d+: buffer_size"),
        ("unknown setting", base + "bogus = 1;\n", r":\d+: .*bogus"),
        ("@include of a directory", base + f'@include "{incdir}"\n', r":\d+: @include .*is a directory"),
        ("10 MB file", base + ("#" + "x" * 99 + "\n") * 100000, r": file too large"),
        ("deep nesting", base + "nest = " + "{ a = " * 5000 + "1" + "; }" * 5000 + ";\n",
         r":\d+: memory exhausted"),
        ("NUL bytes", base + "port = \0\0\0;\n", r":\d+: "),
        ("a directory in place of the file", as_dir, r": is a directory"),
        ("a FIFO in place of the file", as_fifo, r": not a regular file"),
    ]
    if SETPRIV:
        out.append(("unreadable file (mode 000, no CAP_DAC_*)", unreadable,
                    r": .*Permission denied"))
    return out


tap = Tap(timeout=90 * len(backends()))

# an empty file is valid: every default
with tempfile.NamedTemporaryFile(suffix=".conf") as f:
    r = subprocess.run([ECHOD, "-t", "-c", f.name], capture_output=True, text=True, timeout=10)
    tap.ok(r.returncode == 0 and "configuration OK" in r.stdout + r.stderr,
           "an empty file is valid (defaults), as documented", diag=r.stdout + r.stderr)

for be in backends():
    mport = free_port()
    prefix = [SETPRIV, "--bounding-set=-dac_override,-dac_read_search"] if SETPRIV else []
    incdir = tempfile.mkdtemp(prefix="echodtest.incdir.")
    with tap.guard(be), Daemon(be, argv_prefix=prefix, log_level="info",
                               metrics={"enabled": True, "address": "127.0.0.1",
                                        "port": mport}) as d:
        base = d.config()
        load = client_bg(d.port, "-c", 4, "-n", "96M", "--random-chunks", "-s", 81, timeout=80)
        refused = 0
        for i, (name, how, rx) in enumerate(cases(base, incdir)):
            undo = None
            if callable(how):
                undo = how(d.conf)
            else:
                d.write_raw_config(how)
            mark = d.log_mark()
            d.signal(signal.SIGHUP)
            m = d.wait_log(REFUSED, 10, since=mark)
            if undo:
                undo()
            d.write_raw_config(base)
            logged = d.log()[mark:]
            line = re.search(re.escape(d.conf) + rx, logged)
            refused += bool(m)
            first = next((ln for ln in logged.splitlines() if ln.startswith("<3>" + d.conf)), "")
            tap.figure(f"[{be}] {name}", first[3:][len(d.conf):].strip()[:100] or "(nothing)")
            res = client(d.port, "-n", "64k", "-s", 82 + i, timeout=10)
            tap.ok(m and line and d.running() and res.ok,
                   f"[{be}] {name}: refused, named in the log, the old configuration serves",
                   diag=logged[-2000:] + "\n" + res.diag())
        res = client_wait(load)
        client_ok(tap, f"[{be}] a client streamed 4 x 96 MiB byte-exact through every refusal",
                  res, d, total=4 * 96 * MiB)
        series = metricsutil.scrape(mport)
        failures = metricsutil.value(series, "echod_reload_failures_total")
        tap.figure(f"[{be}] reloads refused (metrics) / bad files sent",
                   f"{failures:.0f} / {len(cases(base, incdir))}")
        tap.ok(failures == refused == len(cases(base, incdir)) and
               metricsutil.value(series, "echod_config_last_reload_successful") == 0,
               f"[{be}] /metrics counts {failures:.0f} refused reloads and says the last failed")
        mark = d.log_mark()
        d.rewrite_config(idle_timeout=123)
        d.signal(signal.SIGHUP)
        tap.ok(d.wait_log(r"reload: configuration applied.*idle_timeout 123 s", 10, since=mark),
               f"[{be}] a good file after them all applies", diag=d.log_tail())
        tap.ok(d.stop() == 0, f"[{be}] clean exit", diag=d.log_tail())
    shutil.rmtree(incdir, ignore_errors=True)
tap.done()
