#!/usr/bin/env python3
"""The documentation says what the code does: both man pages render with
no groff warning; every metric family the daemon serves (on each
backend) is listed in echod(8) and in README.md; every setting of the
bundled configuration is described in echod.conf(5) and README.md; every
test program (unit, fuzz, functional, system) is listed in tests/README."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import ECHOD, ECHOD_SRCDIR, Daemon, Tap, backends, free_port  # noqa: E402
from metricsutil import request  # noqa: E402

BUILDDIR = os.path.dirname(os.path.dirname(ECHOD))
tap = Tap()
pages = {}
for name in ("echod.8", "echod.conf.5"):
    path = os.path.join(BUILDDIR, "man", name)
    if not os.path.exists(path):
        tap.ok(False, f"man page {name} built", diag=f"missing {path}")
        continue
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    p = subprocess.run(["man", "--warnings", "-l", path], capture_output=True, text=True,
                       env=env, timeout=30)
    tap.ok(p.returncode == 0 and p.stderr == "" and len(p.stdout) > 1000,
           f"man {name} renders with no warning", diag=p.stderr)
    pages[name] = p.stdout
    with open(path) as f:
        pages[name + ".src"] = f.read()
with open(os.path.join(ECHOD_SRCDIR, "README.md")) as f:
    readme = f.read()

for be in backends():
    mport = free_port()
    with tap.guard(be), Daemon(be, metrics={"enabled": True, "address": "127.0.0.1",
                                            "port": mport}) as d:
        st, _, body = request(mport)
        fams = sorted(set(re.findall(r"^# TYPE (\S+)", body.decode(), re.M)))
        tap.ok(st == 200 and len(fams) > 20, f"[{be}] {len(fams)} metric families served")
        man8 = pages.get("echod.8.src", "")
        missing_man = [f for f in fams if f.replace("_", "\\_") not in man8 and f not in man8]
        missing_readme = [f for f in fams if f"`{f}" not in readme]
        tap.ok(not missing_man, f"[{be}] every metric family is in echod(8)",
               diag=", ".join(missing_man))
        tap.ok(not missing_readme, f"[{be}] every metric family is in README.md",
               diag=", ".join(missing_readme))

with open(os.path.join(ECHOD_SRCDIR, "etc", "echod.conf")) as f:
    conf = f.read()
settings = sorted(set(re.findall(r"^\s*([a-z_]+)\s*=", conf, re.M)) - {"metrics"})
man5 = pages.get("echod.conf.5.src", "")
for s in settings:
    in_man = re.search(rf"^\.B (metrics\.)?{s}$", man5, re.M) is not None
    in_readme = re.search(rf"`(metrics\.)?{s}`", readme) is not None
    tap.ok(in_man and in_readme, f"setting {s} is described in echod.conf(5) and README.md",
           diag=f"man: {in_man} readme: {in_readme}")

# every test is listed in tests/README with what it proves
tdir = os.path.join(ECHOD_SRCDIR, "tests")
with open(os.path.join(tdir, "README")) as f:
    treadme = f.read()
tests = []
for sub, pat in (("unit", r"^test_\w+\.c$"), ("fuzz", r"^fuzz_\w+\.c$"),
                 ("functional", r"^test_\w+\.py$"), ("system", r"^test_\w+\.py$")):
    tests += [n for n in sorted(os.listdir(os.path.join(tdir, sub))) if re.match(pat, n)]
unlisted = [n for n in tests if not re.search(rf"^{re.escape(n)}\s", treadme, re.M)]
tap.ok(len(tests) > 30 and not unlisted,
       f"all {len(tests)} tests are listed in tests/README", diag=", ".join(unlisted))
tap.done()
