#!/usr/bin/env python3
"""echod -t/--check-config on good and bad files: "configuration OK" and
exit 0, or every error as FILE:LINE: message and exit 1; and the daemon
refuses to start (exit 1, no crash) on the same bad files."""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import ECHOD, ECHOD_SRCDIR, Tap, backends  # noqa: E402

# name -> (text, [expected error lines, with {f} for the file's path])
BAD = {
    "syntax error": ("port = 7;\nlisten = [\"127.0.0.1\"\n", None),
    "port out of range": ("port = 70000;\n",
                          ["{f}:1: port: 70000 is out of range 1..65535"]),
    "unknown setting": ("port = 7;\nprot = 5;\n", ["{f}:2: unknown setting 'prot'"]),
    "wrapped integer": ("port = 7;\nmax_connections = 4294967297;\n",
                        ["{f}:2: integer 4294967297 out of range"]),
    "wrapped hex": ("idle_timeout = 0x100000001;\n",
                    ["{f}:1: integer 0x100000001 out of range"]),
    "include of a directory": ("@include \"{d}\"\n", ["{f}:1: @include \"{d}\": is a directory"]),
    "three errors": ("port = 0;\nbackend = \"kqueue\";\nlog_level = 7;\n",
                     ["{f}:1: port: 0 is out of range 1..65535",
                      "{f}:2: backend: unknown value 'kqueue' (expected auto, io_uring or epoll)",
                      None]),
}


def run(*args):
    p = subprocess.run([ECHOD] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=20)
    return p.returncode, p.stdout, p.stderr


tap = Tap()
tmp = tempfile.mkdtemp(prefix="echodtest.")
subdir = os.path.join(tmp, "a-directory")
os.mkdir(subdir)
for be in backends():
    bundled = os.path.join(ECHOD_SRCDIR, "etc", "echod.conf")
    rc, out, err = run("-t", "-c", bundled)
    tap.ok(rc == 0 and out.strip() == "configuration OK",
           f"[{be}] bundled etc/echod.conf: configuration OK", diag=f"rc={rc}\n{out}{err}")

    good = os.path.join(tmp, "good.conf")
    with open(good, "w") as f:
        f.write(f'backend = "{be}";\nport = 7007;\nlisten = ["127.0.0.1", "::1"];\n'
                f'core = [0];\nmetrics = {{ enabled = false; }};\n')
    rc, out, err = run("--check-config", "--config", good)
    tap.ok(rc == 0 and out.strip() == "configuration OK" and err == "",
           f"[{be}] a good file: configuration OK, nothing on stderr", diag=f"rc={rc}\n{out}{err}")

    for name, (text, expected) in BAD.items():
        path = os.path.join(tmp, name.replace(" ", "_") + ".conf")
        with open(path, "w") as f:
            f.write(text.format(d=subdir))
        rc, out, err = run("-t", "-c", path)
        lines = err.strip().splitlines()
        if expected is None:
            good_msg = len(lines) == 1 and lines[0].startswith(path + ":3: ")
        else:
            good_msg = len(lines) == len(expected) and all(
                e is None and l.startswith(path + ":") or l == (e or "").format(f=path, d=subdir)
                for l, e in zip(sorted(lines), sorted(expected, key=lambda e: e or "~")))
        tap.ok(rc == 1 and out == "" and good_msg,
               f"[{be}] -t on {name}: exit 1 with FILE:LINE: messages",
               diag=f"rc={rc}\nstdout: {out}\nstderr: {err}")
        # the daemon itself refuses to start on it, cleanly
        rc2, out2, err2 = run("-c", path)
        tap.ok(rc2 == 1 and "has errors, not starting" in err2,
               f"[{be}] start on {name}: refused with exit 1", diag=f"rc={rc2}\n{err2}")

    missing = os.path.join(tmp, "missing.conf")
    rc, out, err = run("-t", "-c", missing)
    tap.ok(rc == 1 and err.strip() == f"{missing}: open: No such file or directory",
           f"[{be}] -t on a missing file names the file and the errno", diag=f"rc={rc}\n{err}")
    rc, out, err = run("-t", "-c", subdir)
    tap.ok(rc == 1 and err.startswith(subdir + ": "),
           f"[{be}] -t on a directory: refused", diag=f"rc={rc}\n{err}")

rc, out, err = run("--version")
tap.ok(rc == 0 and out.startswith("echod "), "--version", diag=out + err)
rc, out, err = run("--help")
tap.ok(rc == 0 and "--check-config" in out and "--config" in out, "--help", diag=out + err)
rc, out, err = run("--no-such-option")
tap.ok(rc == 2 and "--help" in err, "an unknown option: exit 2", diag=f"rc={rc}\n{err}")
tap.done()
