#!/usr/bin/env python3
"""echod -T/--dump-config: the effective configuration printed as an
echod.conf, every default filled in, each setting after its generated
comment lines ("# default: D; range: R; reload: live|restart").  The dump
of the bundled file and of a file setting every setting to a value other
than its default passes -t and dumps again identically; the bundled file
dumps as the defaults (an empty file); a bad file gives every error as
FILE:LINE: message and exit 1, as -t does."""
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import ECHOD, ECHOD_SRCDIR, Tap  # noqa: E402

FACTS = re.compile(r"^\s*# default: (.+); range: (.+); reload: (live|restart)$")
VALUE = re.compile(r"^\s*([a-z_0-9]+) = (.+);$")


def run(*args):
    p = subprocess.run([ECHOD] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=20)
    return p.returncode, p.stdout, p.stderr


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def body(dump):
    """The dump without its first line (which names the file)."""
    return dump.split("\n", 1)[1] if "\n" in dump else ""


def values(dump):
    """{dotted name: value text} of the settings in a dump."""
    out, group = {}, ""
    for line in dump.splitlines():
        m = re.match(r"^([a-z_]+) = \{$", line)
        if m:
            group = m.group(1) + "."
            continue
        if line == "};":
            group = ""
            continue
        m = VALUE.match(line)
        if m:
            out[group + m.group(1)] = m.group(2)
    return out


def settings_described(dump):
    """Whether every "name = value;" comes right after a description line
    and a facts line; returns the names that do not."""
    lines, bad = dump.splitlines(), []
    for i, line in enumerate(lines):
        m = VALUE.match(line)
        if m and not (i >= 2 and FACTS.match(lines[i - 1]) and lines[i - 2].lstrip().startswith("# ")
                      and not FACTS.match(lines[i - 2])):
            bad.append(m.group(1))
    return bad


def round_trip(tap, what, path, tmp):
    """-T of path: exit 0, nothing on stderr; the dump passes -t and dumps
    again identically.  Returns the dump."""
    rc, dump, err = run("-T", "-c", path)
    tap.ok(rc == 0 and err == "" and dump.startswith(f"# echod configuration from {path},"),
           f"{what}: -T exits 0 and names the file", diag=f"rc={rc}\n{dump[:200]}{err}")
    again = write(os.path.join(tmp, re.sub(r"\W+", "_", what) + ".dump.conf"), dump)
    rc, out, err = run("-t", "-c", again)
    tap.ok(rc == 0 and out.strip() == "configuration OK",
           f"{what}: the dump passes -t", diag=f"rc={rc}\n{out}{err}")
    rc, dump2, err = run("--dump-config", "--config", again)
    tap.ok(rc == 0 and body(dump2) == body(dump) and len(body(dump)) > 500,
           f"{what}: the dump dumps again identically (--dump-config)",
           diag=f"rc={rc}\n{err}\n--- first\n{dump}\n--- again\n{dump2}")
    bad = settings_described(dump)
    tap.ok(not bad, f"{what}: every setting after its description and facts lines",
           diag=", ".join(bad))
    return dump


tap = Tap()
tmp = tempfile.mkdtemp(prefix="echodtest.")

bundled = round_trip(tap, "bundled etc/echod.conf", os.path.join(ECHOD_SRCDIR, "etc", "echod.conf"),
                     tmp)
empty = round_trip(tap, "an empty file", write(os.path.join(tmp, "empty.conf"), ""), tmp)
defaults = values(empty)
tap.ok(len(defaults) == 39 and body(bundled) == body(empty),
       f"the bundled file dumps as the defaults ({len(defaults)} settings)",
       diag=f"--- bundled\n{bundled}\n--- empty\n{empty}")

# defaults are filled in around what a file sets
partial = round_trip(tap, "a file setting two values",
                     write(os.path.join(tmp, "partial.conf"),
                           "port = 8;\nmetrics = { port = 9101; };\n"), tmp)
got = values(partial)
want = dict(defaults, **{"port": "8", "metrics.port": "9101"})
tap.ok(got == want, "a file setting two values: those two, every other the default",
       diag=f"got {got}\nwant {want}")

# every setting to a value other than its default (the TLS files: a
# throw-away self-signed pair, only loaded, never served)
TLS_CERT = """-----BEGIN CERTIFICATE-----
MIIBizCCATGgAwIBAgIUWuTb9eQ7bUzYv/6Rh21V/oZxquswCgYIKoZIzj0EAwIw
GjEYMBYGA1UEAwwPZWNob2QgZHVtcCB0ZXN0MCAXDTI2MTIwMTExMjMxNVoYDzIx
MjYxMTA3MTEyMzE1WjAaMRgwFgYDVQQDDA9lY2hvZCBkdW1wIHRlc3QwWTATBgcq
hkjOPQIBBggqhkjOPQMBBwNCAATBqC344muynHZx6TStVCkZ8aHoILybtEzEb395
8R22lgDxwylKeKe5ZPp4Kwb/52BQCDwLXDQ/50y1ojC868k4o1MwUTAdBgNVHQ4E
FgQUV36Rj/8Cb86WfmwvSK7/L4UPCQowHwYDVR0jBBgwFoAUV36Rj/8Cb86Wfmwv
SK7/L4UPCQowDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiEA9WSV
oh0F+uurvbxCXOCpBUzHCX/3w1sKDp5UvKIvGAkCIAlFGxFEvbQOOx2kqL6Yu1+n
bca96ApMK+iGXRg4zdik
-----END CERTIFICATE-----
"""
TLS_KEY = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgvLaHXJwf9U34Xq4v
Xxsbevt7EU9vsMpDd4qzvYwkmXihRANCAATBqC344muynHZx6TStVCkZ8aHoILyb
tEzEb3958R22lgDxwylKeKe5ZPp4Kwb/52BQCDwLXDQ/50y1ojC868k4
-----END PRIVATE KEY-----
"""
tls_cert = write(os.path.join(tmp, "cert.pem"), TLS_CERT)
tls_key = write(os.path.join(tmp, "key.pem"), TLS_KEY)
BCRYPT = "$2y$10$abcdefghijklmnopqrstuuj7m4XYqbm74SxoBcXyw8to0CQ061DVG"
cores = "[1, 0]" if (os.cpu_count() or 1) > 1 else "[0]"
every = ("backend = \"epoll\";\nport = 7007;\nlisten = [\"127.0.0.1\", \"::1\"];\n"
         "backlog = 128;\nbuffer_count = 64;\nbuffer_size = 1024;\nmax_pending = 2048;\n"
         f"core = {cores};\nmax_connections = 100;\nidle_timeout = 0;\nshutdown_timeout = 3;\nbusy_poll_us = 50;\nbatch_wait_us = 100;\n"
         "log_level = \"debug\";\n"
         "allow = [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.1\"];\n"
         "deny = \"::1\";\n"
         "metrics = {\n  enabled = false;\n  address = \"::1\";\n  port = 9200;\n"
         f"  tls_certificate = \"{tls_cert}\";\n  tls_key = \"{tls_key}\";\n"
         f"  basic_auth = [\"prometheus:{BCRYPT}\"];\n}};\n"
         "udp = {\n  enabled = true;\n  port = 7007;\n  listen = \"::1\";\n  gro = false;\n"
         "  coalesce = false;\n"
         "  loop_ports = [];\n  receive_buffer = 0;\n};\n"
         "per_source = {\n  max_connections = 5;\n  connection_rate = 20;\n"
         "  connection_burst = 3;\n  datagram_rate = 1000;\n  datagram_burst = 100;\n"
         "  ipv6_prefix = 56;\n  table_size = 1024;\n};\n"
         "proxy_protocol = {\n  enabled = true;\n  trusted = [\"10.1.2.3\"];\n"
         "  timeout = 10;\n};\n")
dump = round_trip(tap, "a file setting every setting", write(os.path.join(tmp, "every.conf"), every),
                  tmp)
got = values(dump)
same = [k for k in defaults if got.get(k) == defaults[k]]
tap.ok(set(got) == set(defaults) and not same,
       "a file setting every setting: every value differs from its default",
       diag=f"unchanged or missing: {same} {set(defaults) ^ set(got)}")
tap.ok(got.get("listen") == "[\"127.0.0.1\", \"::1\"]" and got.get("core") == cores and
       got.get("metrics.address") == "\"::1\"" and got.get("idle_timeout") == "0" and
       got.get("allow") == "[\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.1/32\"]" and
       got.get("deny") == "[\"::1/128\"]" and
       re.search(r"^metrics = \{$", dump, re.M) is not None and "\n\tenabled = false;\n" in dump,
       "a file setting every setting: lists and the metrics group as written",
       diag=dump)

# an @include is flattened into the dump
inc = write(os.path.join(tmp, "inc.conf"), "backlog = 5;\n")
main = write(os.path.join(tmp, "main.conf"), f"@include \"{inc}\"\nidle_timeout = 42;\n")
got = values(round_trip(tap, "a file with an @include", main, tmp))
tap.ok(got.get("backlog") == "5" and got.get("idle_timeout") == "42",
       "a file with an @include: the included value is dumped", diag=str(got))

# bad files: every error, as -t gives it, exit 1, nothing on stdout
bad = write(os.path.join(tmp, "bad.conf"), "port = 7;\nport2 = 5;\nbacklog = 70000;\n")
rc, out, err = run("-T", "-c", bad)
trc, tout, terr = run("-t", "-c", bad)
tap.ok(rc == 1 and out == "" and err.splitlines() == [
    f"{bad}:2: unknown setting 'port2'", f"{bad}:3: backlog: 70000 is out of range 1..65535"]
       and err == terr and trc == 1,
       "-T on a bad file: exit 1, every error as FILE:LINE: message, as -t",
       diag=f"rc={rc}\nstdout: {out}\nstderr: {err}\n-t: {terr}")
missing = os.path.join(tmp, "missing.conf")
rc, out, err = run("-T", "-c", missing)
tap.ok(rc == 1 and out == "" and err.strip() == f"{missing}: open: No such file or directory",
       "-T on a missing file: exit 1, names the file and the errno", diag=f"rc={rc}\n{err}")

rc, out, err = run("--help")
tap.ok(rc == 0 and "-T, --dump-config" in out, "--help lists -T, --dump-config", diag=out + err)
tap.done()
