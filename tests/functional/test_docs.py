#!/usr/bin/env python3
"""The documentation says what the code does: the man pages render with
no groff warning; every metric family the daemon serves (on each
backend) is listed in echod(8) and in README.md; every setting of the
setting of the daemon's own table (as `echod -T` exports it: name,
default, range, live or restart) is in README.md's settings table,
echod.conf(5) and the bundled etc/echod.conf, with the same default, range
and reload class, and no other setting is; every test program (unit,
fuzz, functional, system) is listed in tests/README."""
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import ECHOD, ECHOD_SRCDIR, Daemon, Tap, backends, free_port  # noqa: E402
from metricsutil import request  # noqa: E402

BUILDDIR = os.path.dirname(os.path.dirname(ECHOD))
tap = Tap()
pages = {}
for name in ("echod.8", "echod.conf.5", "echod-bench.1"):
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

# The settings, as the daemon's own table exports them: `echod -T` of an
# empty file prints every setting, its default, range and reload class.
FACTS = re.compile(r"^\s*# default: (.+); range: (.+); reload: (live|restart)$")
ASSIGN = re.compile(r"^(\s*)([a-z_0-9]+) = (.+);$")


def settings_of(text):
    """[(dotted name, value, facts line or None, comment block)] of an
    echod.conf, in order; facts from the comment block above each."""
    out, group, block = [], "", []
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+) = \{$", line)
        if m:
            group, block = m.group(1) + ".", []
            continue
        if line.strip() == "};":
            group, block = "", []
            continue
        if line.lstrip().startswith("#"):
            block.append(line.strip())
            continue
        m = ASSIGN.match(line)
        if m:
            facts = [FACTS.match(c) for c in block if FACTS.match(c)]
            out.append((group + m.group(2), m.group(3), facts[-1] if facts else None, block))
        block = []
    return out


tmpdir = tempfile.mkdtemp(prefix="echodtest.")
empty = os.path.join(tmpdir, "empty.conf")
open(empty, "w").close()
p = subprocess.run([ECHOD, "-T", "-c", empty], capture_output=True, text=True, timeout=20)
table = {}
for name, value, facts, _ in settings_of(p.stdout):
    if facts:
        table[name] = {"value": value, "default": facts.group(1), "range": facts.group(2),
                       "reload": facts.group(3)}
tap.ok(p.returncode == 0 and len(table) >= 15 and
       all(t["value"] == t["default"] for t in table.values()),
       f"echod -T exports {len(table)} settings with default, range and reload",
       diag=p.stdout + p.stderr)


def same_names(what, names):
    missing = sorted(set(table) - set(names))
    extra = sorted(set(names) - set(table))
    tap.ok(not missing and not extra and len(names) == len(set(names)),
           f"{what}: every setting of the table, once, and no other",
           diag=f"missing: {missing} extra: {extra} listed: {names}")


# README.md's "Configuration summary" table
summary = readme[readme.index("## Configuration summary"):]
summary = summary[:summary.index("\n## ", 1)]
rows = re.findall(r"^\| `([a-z_0-9.]+)` \| (.+?) \| (.+?) \| (.+?) \|$", summary, re.M)
same_names("README.md settings table", [r[0] for r in rows])
for name, default, rng, reload in rows:
    t = table.get(name)
    if not t:
        continue
    first = re.match(r"^`([^`]+)`", default)
    want_reload = {"live": "live", "restart": "at restart"}[t["reload"]]
    tap.ok(first is not None and first.group(1) == t["default"] and
           t["range"] in rng.replace("`", "") and reload == want_reload,
           f"README.md: {name}: default, range and reload as the table",
           diag=f"README: {default} | {rng} | {reload}\ntable: {t}")

# echod.conf(5): one paragraph per setting
def man_text(lines):
    text = " ".join(re.sub(r"^\.[A-Z]+ ?", "", l) for l in lines if not l.startswith(".\\\""))
    text = text.replace("\\(dq", '"').replace("\\-", "-")
    text = re.sub(r"\\f[BIRP]", "", text)
    return re.sub(r"\s+", " ", text.replace('"" ', ""))


man5 = pages.get("echod.conf.5.src", "")
man5_lines = man5.splitlines()
sect = man5_lines[man5_lines.index(".SH SETTINGS") + 1:] if ".SH SETTINGS" in man5_lines else []
sect = sect[:next((i for i, l in enumerate(sect) if l.startswith(".SH")), len(sect))]
paras, cur = {}, None
names_in_man = []
for i, line in enumerate(sect):
    if line == ".TP" and i + 1 < len(sect):
        m = re.match(r"^\.B ([a-z_0-9.]+)$", sect[i + 1])
        cur = m.group(1) if m else None
        if cur:
            names_in_man.append(cur)
            paras[cur] = []
        continue
    if cur and not line.startswith(".B " + cur):
        paras[cur].append(line)
same_names("echod.conf(5) SETTINGS", names_in_man)
for name, lines in paras.items():
    t = table.get(name)
    if not t:
        continue
    text = man_text(lines)
    want_reload = f"Reload: {t['reload']}."
    has_default = re.search(r"(?i)\bdefault:? " + re.escape(t["default"]) + r"(?!\w|\.\d)", text)
    tap.ok(has_default is not None and t["range"] in text and want_reload in text,
           f"echod.conf(5): {name}: default, range and reload as the table",
           diag=f"man: {text}\ntable: {t}")

# the bundled etc/echod.conf: every setting at its default, after the exact
# facts line echod -T prints
with open(os.path.join(ECHOD_SRCDIR, "etc", "echod.conf")) as f:
    conf = settings_of(f.read())
same_names("etc/echod.conf", [c[0] for c in conf])
for name, value, facts, _ in conf:
    t = table.get(name)
    if not t:
        continue
    want = f"# default: {t['default']}; range: {t['range']}; reload: {t['reload']}"
    tap.ok(facts is not None and facts.group(0) == want and value == t["default"],
           f"etc/echod.conf: {name}: the value is the default, after the table's facts line",
           diag=f"value {value}, facts {facts.group(0) if facts else None}\nwant {want}")

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
