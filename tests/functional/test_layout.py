#!/usr/bin/env python3
"""The source tree keeps its architecture: src/ has no include cycle
(a module is its .c and .h together), no file over 700 lines, every file
opens with a comment naming it and saying what it does, README.md's
"Source layout" names every file, and nothing outside a backend includes
liburing or sys/epoll.h (the backends implement one contract, backend.h;
nothing else knows which runs)."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from echodtest import ECHOD_SRCDIR, Tap  # noqa: E402

MAX_LINES = 700
SRC = os.path.join(ECHOD_SRCDIR, "src")
BACKEND_HEADERS = {
    "liburing.h": re.compile(r"^backend_uring(_\w+)?\.[ch]$"),
    "linux/io_uring.h": re.compile(r"^backend_uring(_\w+)?\.[ch]$"),
    "sys/epoll.h": re.compile(r"^backend_epoll\.c$"),
}

tap = Tap()
files = sorted(f for f in os.listdir(SRC) if re.match(r"^\w+\.[ch]$", f))
text = {}
for f in files:
    with open(os.path.join(SRC, f)) as fh:
        text[f] = fh.read()
modules = {f.rsplit(".", 1)[0] for f in files}


def includes(f):
    return re.findall(r'^\s*#\s*include\s+[<"]([^">]+)[">]', text[f], re.M)


# the module graph: X -> Y when X.c or X.h includes "Y.h"
graph = {m: set() for m in modules}
for f in files:
    m = f.rsplit(".", 1)[0]
    for inc in includes(f):
        dep = os.path.basename(inc)[:-2] if inc.endswith(".h") else None
        if dep in modules and dep != m:
            graph[m].add(dep)


def find_cycle():
    state = {}

    def visit(m, path):
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return path[path.index(d):] + [d]
            if d not in state:
                c = visit(d, path + [d])
                if c:
                    return c
        state[m] = 2
        return None
    for m in sorted(modules):
        if m not in state:
            c = visit(m, [m])
            if c:
                return c
    return None


cycle = find_cycle()
tap.ok(len(modules) > 15 and cycle is None,
       f"src/: {len(modules)} modules, {sum(len(v) for v in graph.values())} include edges, "
       "no include cycle", diag=" -> ".join(cycle or []))

sizes = {f: text[f].count("\n") for f in files}
big = {f: n for f, n in sizes.items() if n > MAX_LINES}
largest = max(sizes, key=sizes.get)
tap.ok(not big, f"src/: no file over {MAX_LINES} lines (largest {largest}, {sizes[largest]})",
       diag=", ".join(f"{f}: {n}" for f, n in sorted(big.items())))

unnamed = [f for f in files if not text[f].startswith(f"/* {f} - ")]
tap.ok(not unnamed, "src/: every file opens with '/* NAME - what it does'",
       diag=", ".join(unnamed))

# README's "Source layout": `src/X.c`, `src/X.h` or `src/X.[ch]` in its
# table, so that a newcomer's map of the tree names every file
with open(os.path.join(ECHOD_SRCDIR, "README.md")) as fh:
    readme = fh.read()
layout = re.search(r"^## Source layout\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
named = set()
for m in re.findall(r"`src/(\w+)\.(c|h|\[ch\])`", layout.group(1) if layout else ""):
    named.update([f"{m[0]}.c", f"{m[0]}.h"] if m[1] == "[ch]" else [f"{m[0]}.{m[1]}"])
unlisted = [f for f in files if f not in named]
tap.ok(layout and not unlisted,
       f"README.md's source layout names every file of src/ ({len(files)})",
       diag="not named: " + ", ".join(unlisted))

for hdr, allowed in BACKEND_HEADERS.items():
    users = [f for f in files if hdr in includes(f)]
    outside = [f for f in users if not allowed.match(f)]
    tap.ok(users and not outside if hdr != "linux/io_uring.h" else not outside,
           f"<{hdr}> is included by its backend only ({', '.join(users) or 'none'})",
           diag="outside the backend: " + ", ".join(outside))

tap.done()
