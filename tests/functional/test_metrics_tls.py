#!/usr/bin/env python3
"""The metrics endpoint over HTTPS with basic auth (metrics.tls_certificate,
metrics.tls_key, metrics.basic_auth): curl without the CA fails, without
credentials or with wrong ones gets 401 with WWW-Authenticate, with the
right ones 200 and the metrics; plain HTTP to the TLS port gets no answer
while HTTPS scrapes and echo traffic go on; a real Prometheus scrapes it
with basic_auth and tls_config.ca_file and reports the target up; a
certificate rotated by reload is served to the next connection (also on a
socket-activated metrics socket, which is kept); a bad certificate file, a
missing file, a key that does not match and a non-bcrypt hash each refuse
the reload with FILE: message while the old certificate serves on; the
credential cache: N scrapes cost one bcrypt (counted from the debug log,
timed for the figure).  TLS lives in the endpoint's own thread, not in an
event loop: one backend is enough."""
import ctypes
import ctypes.util
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import (MiB, SYSTEMD_SOCKET_ACTIVATE, Daemon, Tap, _child_setup,  # noqa: E402
                       _register, backends, client, client_ok, free_port, poll_until)

tap = Tap(timeout=240)
OPENSSL = shutil.which("openssl")
CURL = shutil.which("curl")
PROM = shutil.which("prometheus")
BE = backends()[0]
tmp = tempfile.mkdtemp(prefix="echodtest.tls.")


def run(*argv, timeout=30):
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def openssl(*args):
    rc, out, err = run(OPENSSL, *args)
    if rc:
        raise RuntimeError(f"openssl {' '.join(map(str, args))}: {err}")
    return out


def make_cert(name, serial, cn, ca=True):
    """A P-256 key and a certificate for 127.0.0.1 signed by the test CA:
    (cert path, key path)."""
    key, csr, crt = (os.path.join(tmp, f"{name}.{x}") for x in ("key", "csr", "pem"))
    ext = os.path.join(tmp, "ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", csr, "-subj", f"/CN={cn}")
    openssl("x509", "-req", "-in", csr, "-CA", CA, "-CAkey", CA_KEY, "-set_serial", serial,
            "-days", "2", "-extfile", ext, "-out", crt)
    return crt, key


_crypt = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
_crypt.crypt_gensalt.restype = ctypes.c_char_p
_crypt.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
_crypt.crypt.restype = ctypes.c_char_p
_crypt.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]


def bcrypt(password, cost=10):
    """What `htpasswd -nBC 10` makes, through the system's libcrypt."""
    salt = _crypt.crypt_gensalt(b"$2y$", cost, None, 0)
    return _crypt.crypt(password.encode(), salt).decode()


def ctx():
    c = ssl.create_default_context(cafile=CA)
    return c


def scrape(port, user=None, password=None, path="/metrics", timeout=10):
    """(status, headers (lower-case), body) over HTTPS, verifying against the CA."""
    import base64
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx(), timeout=timeout)
    hdr = {}
    if user is not None:
        hdr["Authorization"] = "Basic " + base64.b64encode(
            f"{user}:{password}".encode()).decode()
    try:
        c.request("GET", path, headers=hdr)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def served_cert(port):
    """(serial as hex, subject CN) of the certificate the endpoint serves now."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx().wrap_socket(s, server_hostname="127.0.0.1") as t:
            c = t.getpeercert()
    cn = dict(x[0] for x in c["subject"]).get("commonName")
    return c["serialNumber"].lstrip("0"), cn


def curl(port, *args):
    """(exit status, HTTP status, headers text, body) of curl https://.../metrics."""
    hfile = os.path.join(tmp, "curl.headers")
    rc, out, err = run(CURL, "-sS", "-D", hfile, "-w", "\n%{http_code}", *args,
                       f"https://127.0.0.1:{port}/metrics", timeout=20)
    body, _, code = out.rpartition("\n")
    try:
        with open(hfile) as f:
            heads = f.read()
    except FileNotFoundError:
        heads = ""
    return rc, code, heads, body + err


def bcrypt_lines(d, since=0):
    return re.findall(r"metrics: basic auth: bcrypt check \d+: user '(\w+)' .* (accepted|refused)",
                      d.log()[since:])


def reload(d, expect):
    mark = d.log_mark()
    d.signal(signal.SIGHUP)
    return d.wait_log(expect, 10, since=mark), mark


missing = [n for n, p in (("openssl", OPENSSL), ("curl", CURL)) if not p]
if missing:
    tap.skip("metrics over HTTPS", f"{', '.join(missing)} not installed")
    tap.done()

CA_KEY = os.path.join(tmp, "ca.key")
CA = os.path.join(tmp, "ca.pem")
openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", CA_KEY, "-out", CA, "-days", "2", "-subj", "/CN=echod test CA")
CERT, KEY = os.path.join(tmp, "tls", "cert.pem"), os.path.join(tmp, "tls", "key.pem")
os.makedirs(os.path.dirname(CERT))
c1, k1 = make_cert("one", "0x1001", "echod one")
c2, k2 = make_cert("two", "0x2002", "echod two")
shutil.copy(c1, CERT)
shutil.copy(k1, KEY)
t0 = time.monotonic()
ALICE = bcrypt("s3cret")
t_hash = time.monotonic() - t0
BOB = bcrypt("hunter2")
tap.figure("bcrypt cost 10, one hash (the test's own libcrypt)", f"{t_hash * 1000:.0f} ms")

mport = free_port()
metrics = {"enabled": True, "address": "127.0.0.1", "port": mport,
           "tls_certificate": CERT, "tls_key": KEY,
           "basic_auth": [f"alice:{ALICE}", f"bob:{BOB}"]}
prom = None
try:
    with tap.guard(BE), Daemon(BE, metrics=dict(metrics)) as d:
        tap.ok(re.search(rf"metrics: serving https://127\.0\.0\.1:{mport}/metrics", d.log()) and
               re.search(r"metrics: TLS certificate subject CN=echod one, serial 1001", d.log()),
               "echod serves https:// and logs the certificate (subject, serial, validity)",
               diag=d.log_tail())

        # ---- curl: CA, credentials
        rc, code, heads, body = curl(mport, "-u", "alice:s3cret")
        tap.ok(rc == 60, "curl without --cacert: the certificate is refused (exit 60)",
               diag=f"rc {rc} {code} {body[-300:]}")
        rc, code, heads, body = curl(mport, "--cacert", CA)
        tap.ok(rc == 0 and code == "401" and
               re.search(r'(?im)^WWW-Authenticate: Basic realm="echod"\r?$', heads) and
               "echod_" not in body,
               "curl --cacert, no credentials: 401 with WWW-Authenticate: Basic realm=\"echod\"",
               diag=f"rc {rc} {code}\n{heads}{body[-300:]}")
        for who, cred in (("right user, wrong password", "alice:wrong"),
                          ("another user's password", "bob:s3cret"),
                          ("unknown user", "mallory:s3cret"),
                          ("empty password", "alice:")):
            rc, code, heads, body = curl(mport, "--cacert", CA, "-u", cred)
            tap.ok(rc == 0 and code == "401" and "WWW-Authenticate: Basic" in heads and
                   "echod_" not in body, f"curl, {who}: 401 with WWW-Authenticate",
                   diag=f"rc {rc} {code}\n{heads}{body[-300:]}")
        rc, code, heads, body = curl(mport, "--cacert", CA, "-u", "alice:s3cret")
        tap.ok(rc == 0 and code == "200" and "echod_build_info" in body and
               "text/plain; version=0.0.4" in heads,
               "curl --cacert -u alice:RIGHT: 200 with the metrics", diag=f"{rc} {code} {body[:300]}")
        tap.diag("$ curl -sS --cacert ca.pem -u alice:s3cret https://127.0.0.1:PORT/metrics | head -4")
        for line in body.splitlines()[:4]:
            tap.diag("  " + line)
        rc, code, heads, body = curl(mport, "--cacert", CA, "-u", "bob:hunter2")
        tap.ok(rc == 0 and code == "200" and "echod_build_info" in body,
               "curl -u bob:RIGHT: 200 (a second user)")
        st, hd, body = scrape(mport, "alice", "s3cret", path="/nope")
        tap.ok(st == 404, "an authorized request for another path: 404", diag=str(st))
        st, hd, body = scrape(mport, None, None, path="/nope")
        tap.ok(st == 401, "an unauthorized request for another path: 401 (auth first)",
               diag=str(st))
        refused = [u for u, r in bcrypt_lines(d) if r == "refused"]
        tap.ok(re.search(r"<5>metrics: basic auth: bcrypt check \d+: user 'mallory' from "
                         r"127\.0\.0\.1 refused", d.log()) and len(refused) == 4,
               "each refused credential is logged (notice) with user and source, "
               "after a bcrypt each (an unknown user too)", diag=d.log_tail(20))

        # ---- plain HTTP to the TLS port
        bad = []
        for payload in (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00" * 100,
                        b"\x16\x03\x01\x00\x05hello"):
            with socket.create_connection(("127.0.0.1", mport), timeout=5) as s:
                s.sendall(payload)
                try:
                    got = s.recv(4096)
                except (ConnectionResetError, socket.timeout) as e:
                    got = repr(e).encode()
                if b"HTTP/1." in got:
                    bad.append(got[:80])
        try:
            st = http.client.HTTPConnection("127.0.0.1", mport, timeout=5)
            st.request("GET", "/metrics")
            r = st.getresponse()
            bad.append(f"plain HTTP answered {r.status}".encode())
        except (http.client.HTTPException, OSError):
            pass
        tap.ok(not bad, "plain HTTP (and garbage) to the TLS port: no HTTP answer, closed",
               diag=repr(bad))
        st, _, body = scrape(mport, "alice", "s3cret")
        res = client(d.port, "-c", 2, "-n", "1M", "-s", 161)
        client_ok(tap, "after plain HTTP: echo traffic unaffected (2 x 1 MiB byte-exact)", res, d,
                  total=2 * MiB)
        tap.ok(st == 200 and b"echod_build_info" in body and d.running(),
               "after plain HTTP: the HTTPS scrape still works", diag=d.log_tail())
        tap.ok(not re.search(r"<[0-4]>metrics http: .*andshake", d.log()),
               "a failed TLS handshake is not logged as a warning", diag=d.log_tail(10))

        # ---- the credential cache: one bcrypt for N scrapes
        N = 50
        mark = d.log_mark()
        t0 = time.monotonic()
        ok = sum(scrape(mport, "alice", "s3cret")[0] == 200 for _ in range(N))
        t_cached = time.monotonic() - t0
        lines = bcrypt_lines(d, mark)
        tap.ok(ok == N and lines == [],
               f"{N} scrapes with a verified password: 200 each, no bcrypt at all (cached)",
               diag=f"{ok} ok, bcrypt lines {lines}")
        # one fresh verification, timed, for comparison: a reload that
        # changes the users starts with an empty cache
        BOB2 = bcrypt("hunter3")
        metrics["basic_auth"] = [f"alice:{ALICE}", f"bob:{BOB2}"]
        d.rewrite_config(metrics=dict(metrics))
        m, mark = reload(d, r"reload: configuration applied")
        t0 = time.monotonic()
        st1 = scrape(mport, "alice", "s3cret")[0]
        t_first = time.monotonic() - t0
        t0 = time.monotonic()
        st2 = [scrape(mport, "alice", "s3cret")[0] for _ in range(N - 1)]
        t_rest = time.monotonic() - t0
        lines = bcrypt_lines(d, mark)
        tap.ok(m and st1 == 200 and st2.count(200) == N - 1 and lines == [("alice", "accepted")],
               f"after a reload changing the users: the cache starts empty; {N} scrapes "
               "cost exactly 1 bcrypt", diag=f"{lines}\n{d.log_tail(10)}")
        tap.figure(f"{N} cached HTTPS scrapes (new TLS connection each)",
                   f"{t_cached * 1000:.0f} ms, {t_cached * 1000 / N:.1f} ms each")
        tap.figure("first scrape after the reload (bcrypt cost 10 in it)",
                   f"{t_first * 1000:.0f} ms")
        tap.figure(f"{N} scrapes with the cache vs {N} x bcrypt",
                   f"{(t_first + t_rest) * 1000:.0f} ms vs about "
                   f"{N * max(t_first - t_rest / (N - 1), 0) * 1000:.0f} ms")
        st, _, _ = scrape(mport, "bob", "hunter2")
        st3, _, _ = scrape(mport, "bob", "hunter3")
        tap.ok(st == 401 and st3 == 200, "bob's new hash applies live: old password 401, new 200")

        # ---- a real Prometheus over HTTPS with basic auth
        if not PROM:
            tap.skip("Prometheus scrapes over HTTPS with basic auth", "prometheus not installed")
        else:
            pport = free_port()
            pdir = os.path.join(tmp, "prom")
            os.makedirs(pdir)
            conf = os.path.join(pdir, "prometheus.yml")
            with open(conf, "w") as f:
                f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                        "scrape_configs:\n  - job_name: echod\n    scheme: https\n"
                        f"    basic_auth:\n      username: alice\n      password: s3cret\n"
                        f"    tls_config:\n      ca_file: {CA}\n"
                        f"    static_configs:\n      - targets: ['127.0.0.1:{mport}']\n")
            plog = open(os.path.join(pdir, "prometheus.log"), "wb")
            prom = _register(subprocess.Popen(
                [PROM, f"--config.file={conf}", f"--storage.tsdb.path={pdir}/data",
                 f"--web.listen-address=127.0.0.1:{pport}"],
                stdin=subprocess.DEVNULL, stdout=plog, stderr=subprocess.STDOUT,
                preexec_fn=_child_setup()))

            def target():
                try:
                    with urllib.request.urlopen(
                            f"http://127.0.0.1:{pport}/api/v1/targets", timeout=5) as r:
                        t = json.load(r)["data"]["activeTargets"]
                except (OSError, ValueError, KeyError):
                    return None
                return t[0] if t else None

            mark = d.log_mark()
            up = poll_until(lambda: (target() or {}).get("health") == "up", 40)
            t = target() or {}
            tap.ok(up and t.get("scrapeUrl") == f"https://127.0.0.1:{mport}/metrics",
                   "Prometheus (scheme https, basic_auth, tls_config.ca_file): target health "
                   "\"up\"", diag=json.dumps(t) + "\n" + open(plog.name, errors="replace").read()[-1500:])
            time.sleep(3)
            t = target() or {}
            tap.ok(t.get("health") == "up" and not bcrypt_lines(d, mark) and
                   not t.get("lastError"),
                   "Prometheus keeps scraping, still up, without a bcrypt (alice is cached)",
                   diag=json.dumps(t))

        # ---- a certificate rotated by reload
        tap.ok(served_cert(mport) == ("1001", "echod one"), "serial 1001 served before rotation",
               diag=str(served_cert(mport)))
        shutil.copy(c2, CERT + ".new")
        shutil.copy(k2, KEY + ".new")
        os.replace(KEY + ".new", KEY)
        os.replace(CERT + ".new", CERT)
        m, mark = reload(d, r"reload: configuration applied")
        tap.ok(m and served_cert(mport) == ("2002", "echod two") and
               re.search(r"metrics: TLS or basic auth changed: https on the same socket",
                         d.log()[mark:]),
               "a certificate rotated in place (config file unchanged) + SIGHUP: the next "
               "connection gets serial 2002", diag=f"{served_cert(mport)}\n{d.log_tail(10)}")
        st, _, body = scrape(mport, "alice", "s3cret")
        tap.ok(st == 200 and b"echod_reloads_total 2" in body,
               "scrapes work with the rotated certificate", diag=str(st))
        if prom:
            time.sleep(3)
            t = target() or {}
            tap.ok(t.get("health") == "up" and not t.get("lastError"),
                   "Prometheus still up after the rotation (it reconnected)", diag=json.dumps(t))

        # ---- refused reloads: the old endpoint serves on with the old certificate
        good = dict(metrics)
        ck, kk = make_cert("three", "0x3003", "echod three")   # a pair of its own
        cases = [
            ("a certificate file of garbage",
             lambda: open(CERT, "w").write("not a certificate\n"),
             rf"^<3>{re.escape(CERT)}: metrics\.tls_certificate: no PEM X\.509 certificate"),
            ("a key that does not match the certificate",
             lambda: shutil.copy(kk, KEY),
             rf"^<3>{re.escape(KEY)}: metrics\.tls_key: the key does not match the "
             rf"certificate: {re.escape(CERT)}$"),
            ("a key file of garbage",
             lambda: open(KEY, "w").write("-----BEGIN PRIVATE KEY-----\nAAAA\n"
                                          "-----END PRIVATE KEY-----\n"),
             rf"^<3>{re.escape(KEY)}: metrics\.tls_key: no unencrypted PEM private key"),
            ("a missing certificate file",
             lambda: os.unlink(CERT),
             rf"^<3>{re.escape(CERT)}: metrics\.tls_certificate: cannot open: No such file"),
            ("an empty key file",
             lambda: open(KEY, "w").close(),
             rf"^<3>{re.escape(KEY)}: metrics\.tls_key: empty file$"),
            ("a SHA-512 crypt hash in basic_auth",
             lambda: d.rewrite_config(metrics=dict(good, basic_auth=[
                 "alice:$6$rounds=5000$salt$" + "x" * 86])),
             rf"^<3>{re.escape(d.conf)}:\d+: metrics\.basic_auth\[0\]: the hash is not "
             r"bcrypt \(it starts with '\$6\$'\)"),
            ("a malformed basic_auth entry",
             lambda: d.rewrite_config(metrics=dict(good, basic_auth=["alice"])),
             rf"^<3>{re.escape(d.conf)}:\d+: metrics\.basic_auth\[0\]: expected "
             r"USER:BCRYPT-HASH"),
            ("a certificate without a key",
             lambda: d.rewrite_config(metrics=dict(good, tls_key="")),
             rf"^<3>{re.escape(d.conf)}:\d+: metrics\.tls_certificate: set without "
             r"metrics\.tls_key"),
            ("a relative path",
             lambda: d.rewrite_config(metrics=dict(good, tls_key="key.pem")),
             rf"^<3>{re.escape(d.conf)}:\d+: metrics\.tls_key: 'key\.pem' is not an "
             r"absolute path"),
        ]
        for what, breakit, rx in cases:
            shutil.copy(c2, CERT)
            shutil.copy(k2, KEY)
            d.rewrite_config(metrics=dict(good))
            breakit()
            m, mark = reload(d, r"reload: configuration file .* has errors, keeping the "
                                r"running one")
            err = re.search(rx, d.log()[mark:], re.M)
            st, _, _ = scrape(mport, "alice", "s3cret")
            tap.ok(m and err and served_cert(mport) == ("2002", "echod two") and st == 200,
                   f"{what}: reload refused with FILE: message; serial 2002 serves on",
                   diag=f"want /{rx}/\n{d.log()[mark:][-800:]}")
        shutil.copy(c2, CERT)
        shutil.copy(k2, KEY)
        d.rewrite_config(metrics=dict(good))
        m, mark = reload(d, r"reload: configuration applied")
        tap.ok(m and served_cert(mport) == ("2002", "echod two"),
               "the files repaired: the reload applies (same certificate, nothing restarted)",
               diag=d.log_tail(10))
        tap.ok(not re.search(r"TLS or basic auth changed", d.log()[mark:]),
               "an unchanged certificate and users: the endpoint is not restarted")

        # ---- TLS off, then on again, by reload
        d.rewrite_config(metrics=dict(good, tls_certificate="", tls_key="", basic_auth=[]))
        m, _ = reload(d, r"reload: configuration applied")
        c = http.client.HTTPConnection("127.0.0.1", mport, timeout=5)
        c.request("GET", "/metrics")
        st = c.getresponse().status
        c.close()
        tap.ok(m and st == 200, "TLS and auth removed by reload: plain HTTP 200 on the port")
        d.rewrite_config(metrics=dict(good))
        m, _ = reload(d, r"reload: configuration applied")
        tap.ok(m and served_cert(mport) == ("2002", "echod two") and
               scrape(mport)[0] == 401 and scrape(mport, "alice", "s3cret")[0] == 200,
               "and back by reload: HTTPS, 401 without credentials, 200 with")
        res = client(d.port, "-c", 4, "-n", "1M", "-s", 162)
        client_ok(tap, "echo traffic through all of it (4 x 1 MiB byte-exact)", res, d,
                  total=4 * MiB)
        tap.ok(d.stop() == 0, "exit 0 on SIGTERM", diag=d.log_tail())

    # ---- a socket-activated metrics socket: rotated on the same fd
    ssa = SYSTEMD_SOCKET_ACTIVATE or "/usr/bin/systemd-socket-activate"
    if not os.access(ssa, os.X_OK):
        tap.skip("socket-activated metrics socket with TLS", "systemd-socket-activate missing")
    else:
        shutil.copy(c1, CERT)
        shutil.copy(k1, KEY)
        p1, p2 = free_port(), free_port()
        with tap.guard(BE + " activated"), Daemon(
                BE, wait_ready=False, metrics=dict(metrics, port=free_port()),
                argv_prefix=[ssa, "-l", f"127.0.0.1:{p1}", "-l", f"127.0.0.1:{p2}",
                             "--fdname=echo:metrics"]) as d:
            d.wait_log(r"Listening on .*:%d" % p2, 5)
            res = client(p1, "-n", "64k", "-s", 163)
            d.wait_log(r"ready:", 10)
            fd_before = os.readlink(f"/proc/{d.pid}/fd/4")
            tap.ok(re.search(r"metrics: serving https://.*socket-activated", d.log()) and
                   served_cert(p2) == ("1001", "echod one") and
                   scrape(p2, "alice", "s3cret")[0] == 200,
                   "socket-activated metrics socket: HTTPS with basic auth", diag=d.log_tail())
            shutil.copy(c2, CERT)
            shutil.copy(k2, KEY)
            m, _ = reload(d, r"reload: configuration applied")
            tap.ok(m and served_cert(p2) == ("2002", "echod two") and
                   scrape(p2, "alice", "s3cret")[0] == 200 and
                   os.readlink(f"/proc/{d.pid}/fd/4") == fd_before,
                   "rotated by reload on the inherited socket (the same fd, kept)",
                   diag=d.log_tail())
finally:
    if prom and prom.poll() is None:
        prom.terminate()
        try:
            prom.wait(10)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait()
    shutil.rmtree(tmp, ignore_errors=True)
tap.done()
