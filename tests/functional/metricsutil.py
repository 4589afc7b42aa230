"""Helpers for the metrics tests: scrape, parse and lint the exposition."""
import http.client
import re
import socket

SERIES = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def request(port, path="/metrics", method="GET", host="127.0.0.1", timeout=10, headers=None):
    """(status, headers dict (lower-case names), body bytes)."""
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        c.close()


def parse(text):
    """{(name, frozenset(labels)): float} and a list of problems (duplicate
    series, HELP/TYPE missing or repeated, families split, no final newline)."""
    series, problems = {}, []
    seen_family, current = set(), None
    helps, types = {}, {}
    if not text.endswith("\n"):
        problems.append("body does not end with a newline")
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            kind, name = line[2:6], line.split()[2]
            d = helps if kind == "HELP" else types
            if name in d:
                problems.append(f"{kind} {name} twice")
            d[name] = line
            if name != current:
                if name in seen_family:
                    problems.append(f"family {name} split")
                seen_family.add(name)
                current = name
            continue
        if not line or line.startswith("#"):
            continue
        m = SERIES.match(line)
        if not m:
            problems.append(f"unparsable line: {line!r}")
            continue
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        fam = re.sub(r"_(total|bucket|sum|count)$", "", name)
        if name not in types and fam not in types:
            problems.append(f"{name}: no TYPE")
        if current not in (name, fam) and not name.startswith(current or "\0"):
            problems.append(f"{name}: outside its family block")
        key = (name, frozenset(LABEL.findall(labels)))
        if key in series:
            problems.append(f"duplicate series {name}{labels}")
        series[key] = float(value)
    return series, problems


def value(series, name, **labels):
    """Sum of the series called name whose labels include labels."""
    want = set((k, str(v)) for k, v in labels.items())
    return sum(v for (n, ls), v in series.items() if n == name and want <= set(ls))


def scrape(port, **kw):
    status, headers, body = request(port, **kw)
    if status != 200:
        raise RuntimeError(f"scrape: HTTP {status}")
    return parse(body.decode())[0]


def raw_http(port, data, timeout=5):
    """Send raw bytes, return what comes back until close or timeout."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                d = s.recv(65536)
            except socket.timeout:
                break
            if not d:
                break
            out += d
        return out
    finally:
        s.close()
