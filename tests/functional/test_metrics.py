#!/usr/bin/env python3
"""The metrics endpoint: GET/HEAD /metrics (200, Prometheus content type),
404 and 405 elsewhere; promtool lints the output clean; no duplicate or
split series; counters equal what the test clients did (bytes exact,
connections, rejections, reloads); process_* figures present; abuse of
the endpoint does not stall the echo service or later scrapes; it
answers with more than 1024 fds open."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (KiB, MiB, Daemon, Tap, backends, client, client_bg,  # noqa: E402
                       client_ok, client_wait, free_port, poll_until)
from metricsutil import parse, raw_http, request, scrape, value  # noqa: E402

CT = "text/plain; version=0.0.4; charset=utf-8"
promtool = shutil.which("promtool")

tap = Tap(timeout=150 * len(backends()))
for be in backends():
    mport = free_port()
    with tap.guard(be), Daemon(be, max_connections=1200,
                               metrics={"enabled": True, "address": "127.0.0.1",
                                        "port": mport}) as d:
        # --- protocol
        st, hd, body = request(mport)
        tap.ok(st == 200 and hd.get("content-type") == CT,
               f"[{be}] GET /metrics: 200, {CT}", diag=f"{st} {hd}")
        st, hd, hbody = request(mport, method="HEAD")
        tap.ok(st == 200 and hd.get("content-type") == CT and hbody == b"",
               f"[{be}] HEAD /metrics: 200, no body", diag=f"{st} {hd} {len(hbody)}")
        for path in ("/", "/metricsx", "/metrics/", "/favicon.ico"):
            st, _, _ = request(mport, path=path)
            tap.ok(st == 404, f"[{be}] GET {path}: 404", diag=str(st))
        for method in ("POST", "PUT", "DELETE"):
            st, hd, _ = request(mport, method=method)
            tap.ok(st == 405 and "GET" in hd.get("allow", ""),
                   f"[{be}] {method} /metrics: 405 with Allow", diag=f"{st} {hd}")

        # --- lint
        text = body.decode()
        series, problems = parse(text)
        tap.ok(not problems, f"[{be}] no duplicate series, families contiguous, HELP/TYPE once",
               diag="\n".join(problems))
        if promtool:
            p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                               text=True, timeout=30)
            tap.ok(p.returncode == 0, f"[{be}] promtool check metrics: exit 0",
                   diag=f"exit {p.returncode}\n{p.stdout}{p.stderr}")
        else:
            tap.skip(f"[{be}] promtool check metrics", "promtool not installed (package prometheus)")
        tap.ok(value(series, "echod_backend_info", backend=be) == 1 and
               value(series, "echod_build_info") == 1,
               f"[{be}] echod_backend_info{{backend=\"{be}\"}} and echod_build_info")
        start = value(series, "process_start_time_seconds")
        tap.ok(value(series, "process_open_fds") > 3 and value(series, "process_max_fds") > 0
               and value(series, "process_resident_memory_bytes") > 100000
               and abs(start - time.time()) < 120,
               f"[{be}] process_* metrics (start {start:.0f}, now {time.time():.0f})")

        # --- exact counters
        res = client(d.port, "-c", 5, "-n", "3M", "--random-chunks", "-s", 81)
        client_ok(tap, f"[{be}] 5 x 3 MiB echoed", res, d, total=15 * MiB)
        poll_until(lambda: value(scrape(mport), "echod_connections_current") == 0, 5)
        s = scrape(mport)
        tap.ok(value(s, "echod_received_bytes_total") == 15 * MiB and
               value(s, "echod_sent_bytes_total") == 15 * MiB,
               f"[{be}] received/sent bytes exactly 15 MiB",
               diag=f"{value(s, 'echod_received_bytes_total')} {value(s, 'echod_sent_bytes_total')}")
        tap.ok(value(s, "echod_connections_accepted_total") == 5 and
               value(s, "echod_connections_closed_total") == 5 and
               value(s, "echod_connections_current") == 0,
               f"[{be}] 5 accepted, 5 closed, 0 current")
        # rejections at max_connections (live via reload)
        d.rewrite_config(max_connections=3, metrics={"enabled": True, "address": "127.0.0.1",
                                                      "port": mport})
        mark = d.log_mark()
        d.signal(signal.SIGHUP)
        d.wait_log(r"reload: configuration applied", 10, since=mark)
        hold = client_bg(d.port, "-c", 3, "-n", "10", "--hold", 2000, timeout=20)
        poll_until(lambda: value(scrape(mport), "echod_connections_current") == 3, 5)
        rej = client(d.port, "-c", 4, "--expect-close", timeout=10)
        client_wait(hold)
        s = scrape(mport)
        tap.ok(rej.ok and value(s, "echod_connections_rejected_total") == 4 and
               value(s, "echod_max_connections") == 3,
               f"[{be}] 4 rejected at max_connections 3",
               diag=f"rejected {value(s, 'echod_connections_rejected_total')}\n{rej.diag()}")
        tap.ok(value(s, "echod_reloads_total") == 1 and
               value(s, "echod_config_last_reload_successful") == 1 and
               abs(value(s, "echod_config_last_reload_success_timestamp_seconds") - time.time()) < 30,
               f"[{be}] a good reload: reloads_total 1, last successful, timestamp now")
        d.write_raw_config(d.config() + "\nport = \"x\";\n")
        mark = d.log_mark()
        d.signal(signal.SIGHUP)
        d.wait_log(r"has errors, keeping", 10, since=mark)
        s = scrape(mport)
        tap.ok(value(s, "echod_reload_failures_total") == 1 and
               value(s, "echod_config_last_reload_successful") == 0,
               f"[{be}] a bad reload: failures 1, last_reload_successful 0")
        d.rewrite_config(max_connections=1200, metrics={"enabled": True, "address": "127.0.0.1",
                                                         "port": mport})
        mark = d.log_mark()
        d.signal(signal.SIGHUP)
        d.wait_log(r"reload: configuration applied", 10, since=mark)

        # --- abuse does not stall echo or later scrapes
        t0 = time.monotonic()
        res = client(d.port, "-n", "2M", "--mode", "pingpong", "--chunk", "1k", "-s", 82)
        quiet = time.monotonic() - t0
        idle = []
        for _ in range(300):
            idle.append(socket.create_connection(("127.0.0.1", mport), timeout=5))
        stop = threading.Event()

        def slowloris():
            try:
                s = socket.create_connection(("127.0.0.1", mport), timeout=5)
                for ch in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
                    if stop.is_set():
                        break
                    s.send(bytes([ch]))
                    time.sleep(0.5)
                s.close()
            except OSError:
                pass
        slow = [threading.Thread(target=slowloris, daemon=True) for _ in range(20)]
        for t in slow:
            t.start()
        big = raw_http(mport, b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        tap.ok(big.startswith(b"HTTP/1.1 4"), f"[{be}] a 64 KiB URL: a 4xx answer",
               diag=big[:200])
        junk = raw_http(mport, b"\x16\x03\x01\x00\xa5garbage\r\n\r\n")
        tap.ok(junk == b"" or junk.startswith(b"HTTP/1.1 4"), f"[{be}] binary junk: 4xx or closed",
               diag=junk[:200])
        t0 = time.monotonic()
        st, _, _ = request(mport)
        took = time.monotonic() - t0
        tap.ok(st == 200, f"[{be}] scrape with 300 idle + 20 slow clients: 200 in {took:.3f} s")
        t0 = time.monotonic()
        res2 = client(d.port, "-n", "2M", "--mode", "pingpong", "--chunk", "1k", "-s", 83)
        busy = time.monotonic() - t0
        client_ok(tap, f"[{be}] echo ping-pong during the abuse (2048 round trips: {busy:.2f} s, "
                  f"{quiet:.2f} s before)", res2, d, total=2 * MiB)
        stop.set()
        for s_ in idle:
            s_.close()
        tap.ok(d.running(), f"[{be}] daemon alive after the abuse")

        # --- more than 1024 fds
        hold = client_bg(d.port, "-c", 1100, "-n", "16", "--hold", 4000, timeout=30)
        # not the fd count: the abuse's 300 metrics connections may still be
        # open, and count before all 1100 clients are accepted
        poll_until(lambda: value(scrape(mport), "echod_connections_current") == 1100, 10)
        st, _, body = request(mport)
        s, _ = parse(body.decode())
        tap.ok(st == 200 and value(s, "process_open_fds") > 1024 and
               value(s, "echod_connections_current") == 1100,
               f"[{be}] scrape with {value(s, 'process_open_fds'):.0f} fds open: 200, "
               f"1100 current connections")
        res = client_wait(hold)
        tap.ok(res.ok, f"[{be}] the 1100 held connections were served", diag=res.diag())
        tap.ok(d.stop() == 0, f"[{be}] clean exit", diag=d.log_tail())
tap.done()
