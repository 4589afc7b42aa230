#!/usr/bin/env python3
"""Allocation failures after start-up: with tests/malloc_fail.so preloaded,
malloc, calloc, realloc, posix_memalign... fail at random (10% of calls,
seeded) while a flag file exists: first in the configuration parser's
child too, then (the second half) in the daemon only, so that reloads get
past the parser into starting workers and handing connections over.
For a few seconds of that, clients
stream, the configuration is reloaded (switching backend, so new workers
start and connections are handed over) and /metrics is scraped.  The daemon
must live through it: no crash, no abort; a reload that meets a failure
(in the parser child, libconfig, the new workers) is refused as a whole and
the running configuration serves on; a connection hit by a failure (a
hand-over that could not allocate) is closed, never corrupted: every
client either verified all its bytes or saw its connection closed.  Once
the flag is gone, everything works again: a reload applies, a scrape
answers, clients are served byte-exact, SIGTERM exits 0.  The shim's count
of failed allocations is reported.

ECHOD_MALLOC_FAIL_S (default 4) sets how long failures are injected per
backend, ECHOD_MALLOC_FAIL_PERCENT (default 10) their rate."""
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (MiB, Daemon, Tap, backends, client, client_bg,  # noqa: E402
                       client_ok, client_wait, free_port)
import metricsutil  # noqa: E402

if os.environ.get("ECHOD_SANITIZERS") == "1":
    # ASan replaces malloc itself: the LD_PRELOAD failing shim cannot sit beside it
    print("1..0 # SKIP built with --enable-sanitizers: ASan owns malloc, the "
          "LD_PRELOAD malloc_fail.so shim cannot run beside it", flush=True)
    sys.exit(0)

SO = os.environ.get("MALLOC_FAIL_SO") or os.path.join(
    os.path.dirname(os.environ.get("ECHOCLIENT", "")), "malloc_fail.so")
SECONDS = float(os.environ.get("ECHOD_MALLOC_FAIL_S", "4"))
PERCENT = int(os.environ.get("ECHOD_MALLOC_FAIL_PERCENT", "10"))
CLIENTS = 6                  # client processes kept running, 4 connections each
APPLIED = r"reload: configuration applied"
# a connection closed under it (EOF or reset) is "clean"; anything else
# (a wrong byte, extra bytes, a hang) is not
CLEAN_CLOSE = re.compile(r"FAIL conn=\d+ (early EOF|recv at .*(ECONNRESET|EPIPE)|"
                         r"send at .*(ECONNRESET|EPIPE))")


def counts(path):
    try:
        with open(path) as f:
            return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", f.read())}
    except FileNotFoundError:
        return {}


def classify(res, tally):
    if res.ok and res.info.get("bytes_received") == res.info.get("bytes_sent"):
        tally["ok"] += 1
    elif res.rc == 1 and CLEAN_CLOSE.search(res.out):
        tally["closed"] += 1
    else:
        tally["bad"] += 1
        tally["bad_diag"].append(res.diag())


tap = Tap(timeout=int(60 + 3 * SECONDS) * len(backends()))
for be in backends():
    other = "io_uring" if be == "epoll" else "epoll"
    mport = free_port()
    # the flag and the counts go into the daemon's temp dir
    d = Daemon(be, shutdown_timeout=2,
               metrics={"enabled": True, "address": "127.0.0.1", "port": mport})
    flag = os.path.join(d.dir, "fail.flag")
    report = os.path.join(d.dir, "malloc_fail.counts")
    d.env_extra = {"LD_PRELOAD": SO, "MALLOC_FAIL_FLAG": flag, "MALLOC_FAIL_FILE": report,
                   "MALLOC_FAIL_PERCENT": PERCENT, "MALLOC_FAIL_SEED": 4242}
    with tap.guard(be), d:
        res = client(d.port, "-c", 4, "-n", "1M", "-s", 140)
        client_ok(tap, f"[{be}] byte-exact before the failures", res, d, total=4 * MiB)

        tally = {"ok": 0, "closed": 0, "bad": 0, "bad_diag": []}
        scrapes = {"ok": 0, "failed": 0}
        signals = 0
        seed = 141
        running = []
        alive = True
        open(flag, "w").close()            # armed, the parser's child too
        t_half = time.monotonic() + SECONDS / 2
        t_end = time.monotonic() + SECONDS
        next_hup = time.monotonic()
        i = 0
        while time.monotonic() < t_end:
            for p in [p for p in running if p.poll() is not None]:
                running.remove(p)
                classify(client_wait(p), tally)
            while len(running) < CLIENTS:
                running.append(client_bg(d.port, "-c", 4, "-n", "2M", "--random-chunks",
                                         "-s", seed, timeout=20))
                seed += 1
            if t_half and time.monotonic() >= t_half:
                with open(flag + ".tmp", "w") as f:
                    f.write("parent-only")
                os.replace(flag + ".tmp", flag)
                t_half = None
            if time.monotonic() >= next_hup:
                # every other reload switches backend: new workers, hand-over
                i += 1
                d.rewrite_config(backend=other if i % 2 else be, max_pending=65536 + 1024 * i)
                d.signal(signal.SIGHUP)
                signals += 1
                next_hup = time.monotonic() + 0.25
            try:
                metricsutil.request(mport, timeout=1)
                scrapes["ok"] += 1
            except Exception:
                scrapes["failed"] += 1
            if not d.running():
                alive = False
                break
            time.sleep(0.05)
        os.unlink(flag)                    # disarmed (the shim looks every 2 ms)
        time.sleep(0.05)
        for p in running:
            classify(client_wait(p), tally)
        alive = alive and d.running()
        tap.ok(alive, f"[{be}] alive through {SECONDS:g} s of failed allocations",
               diag=d.log_tail(60))
        tap.figure(f"[{be}] clients byte-exact / closed by a failure / bad",
                   f"{tally['ok']} / {tally['closed']} / {tally['bad']}")
        tap.figure(f"[{be}] scrapes answered / failed during the failures",
                   f"{scrapes['ok']} / {scrapes['failed']}")
        tap.ok(tally["bad"] == 0 and tally["ok"] > 0,
               f"[{be}] every client byte-exact or closed cleanly ({tally['ok']} byte-exact, "
               f"{tally['closed']} closed)", diag="\n".join(tally["bad_diag"][:3]))

        # --- after: everything works again
        time.sleep(0.5)                    # a reload in progress finishes
        mark = d.log_mark()
        d.rewrite_config(backend=be, max_pending=65536)
        d.signal(signal.SIGHUP)
        tap.ok(d.wait_log(APPLIED, 10, since=mark),
               f"[{be}] a reload applies once the failures stop", diag=d.log_tail(30))
        try:
            series = metricsutil.scrape(mport)
        except Exception as e:
            series = None
            tap.diag(f"scrape: {e!r}")
        tap.ok(series is not None, f"[{be}] /metrics answers once the failures stop")
        if series is not None:
            applied = metricsutil.value(series, "echod_reloads_total")
            refused = metricsutil.value(series, "echod_reload_failures_total")
            tap.figure(f"[{be}] reloads signalled / applied / refused",
                       f"{signals + 1} / {applied:.0f} / {refused:.0f}")
            tap.figure(f"[{be}] connections refused at once",
                       f"{metricsutil.value(series, 'echod_connections_rejected_total'):.0f}")
            tap.ok(metricsutil.value(series, "echod_config_last_reload_successful") == 1,
                   f"[{be}] the last reload is reported successful")
        res = client(d.port, "-c", 10, "-n", "1M", "-s", 199)
        client_ok(tap, f"[{be}] byte-exact after the failures", res, d, total=10 * MiB)
        rc = d.stop()
        tap.ok(rc == 0, f"[{be}] clean exit (status {rc})", diag=d.log_tail(30))
        c = counts(report)
        tap.figure(f"[{be}] allocations failed", c.get("failed"))
        tap.figure(f"[{be}] allocation calls while armed / in all", f"{c.get('armed_calls')} / "
                   f"{c.get('calls')}")
        tap.ok(c.get("failed", 0) > 0, f"[{be}] the shim failed allocations ({c.get('failed')})",
               diag=str(c))
tap.done()
