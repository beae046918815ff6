#!/usr/bin/env python3
"""Parsing and reporting helpers for scripts/bench-mtls.sh (iperf, median and ticks are
benchlib.py's).

Subcommands (all print space-separated values on one line):
  wrk FILE.txt                  -> "<req/s> <p99 ms> <socket errors> <non2xx> <requests>"
  jget FILE.json KEY.KEY...     -> the value at that path ("NA" if absent)
  intercepted FILE.json         -> exit 0 if the status has pods and all are "intercepted"
  hainfo FILE.txt KEY           -> the value of KEY in HAProxy's "show info" ("NA" if absent)
  table RESULTS.tsv             -> the values table and the ratios table
RESULTS.tsv lines: metric<TAB>mode<TAB>value (later lines override earlier ones).
"""
import json, os, re, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

MODES = ["direct", "loom-mtls", "loom-plain", "haproxy-tls", "haproxy-tls-noreuse"]
HEAD = {"direct": "direct", "loom-mtls": "loom-mtls", "loom-plain": "loom-plain",
        "haproxy-tls": "haproxy-tls(reuse)", "haproxy-tls-noreuse": "haproxy-tls-noreuse"}

# (key, label, better) ; better: "hi", "lo" or "" (evidence, no ratio)
ROWS = [
    ("iperf_fwd_gbps", "iperf3 C->S 1 stream, Gbit/s (median)", "hi"),
    ("iperf_rev_gbps", "iperf3 -R S->C 1 stream, Gbit/s (median)", "hi"),
    ("wrk_close_rps", "handshakes/s = wrk Connection: close, conn/s", "hi"),
    ("wrk_close_p99_ms", "wrk Connection: close p99 latency, ms", "lo"),
    ("cpu_s_per_gb_fwd", "proxies' CPU s per GB, C->S", "lo"),
    ("cpu_s_per_gb_rev", "proxies' CPU s per GB, S->C", "lo"),
    ("cpu_ms_per_conn", "proxies' CPU ms per connection (wrk)", "lo"),
    ("wrk_close_requests", "wrk requests (= client connections)", ""),
    ("wrk_close_errors", "wrk socket errors + non-2xx (should be 0)", ""),
    ("vip_conns", "conns C made to the VIP (nft counter in C)", ""),
    ("mtls_handshakes_per_conn", "TLS handshakes/conn (loom: all; haproxy: full)", ""),
    ("s_conns_tunnel", "conns into S on Loom's tunnel port 15008", ""),
    ("s_conns_tls", "conns into S on HAProxy's TLS ports", ""),
    ("s_conns_app", "conns into S on app ports (plaintext)", ""),
]

RATIOS = [
    ("loom-mtls", "haproxy-tls", "loom-mtls / haproxy-tls(reuse)"),
    ("loom-mtls", "haproxy-tls-noreuse", "loom-mtls / haproxy-tls-noreuse"),
    ("loom-mtls", "loom-plain", "loom-mtls / loom-plain"),
    ("haproxy-tls", "direct", "haproxy-tls(reuse) / direct"),
    ("loom-mtls", "direct", "loom-mtls / direct"),
]


def wrk(path):
    txt = open(path, errors="replace").read()
    m = re.search(r"Requests/sec:\s*([\d.]+)", txt)
    if not m:
        sys.exit("no Requests/sec in %s" % path)
    rps = float(m.group(1))
    m = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m)\s*$", txt, re.M)
    p99 = benchlib.to_ms(m.group(1), m.group(2)) if m else float("nan")
    errs = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", txt)
    if m:
        errs = sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", txt)
    non2xx = int(m.group(1)) if m else 0
    m = re.search(r"^\s*(\d+) requests in ", txt, re.M)
    reqs = int(m.group(1)) if m else 0
    print("%.1f %.3f %d %d %d" % (rps, p99, errs, non2xx, reqs))


def jget(path, dotted):
    try:
        v = json.load(open(path))
        for k in dotted.split("."):
            v = v[int(k)] if isinstance(v, list) else v[k]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        print("NA")
        return
    print(json.dumps(v) if isinstance(v, (dict, list)) else v)


def intercepted(path):
    try:
        pods = json.load(open(path)).get("pods", [])
    except (OSError, ValueError):
        sys.exit(1)
    sys.exit(0 if pods and all(p.get("state") == "intercepted" for p in pods) else 1)


def hainfo(path, key):
    for line in open(path, errors="replace"):
        k, _, v = line.partition(":")
        if k.strip() == key:
            print(v.strip())
            return
    print("NA")


def render(hdr, rows):
    w = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
    out = [" | ".join(h.ljust(w[i]) if i == 0 else h.rjust(w[i]) for i, h in enumerate(hdr)),
           "-+-".join("-" * x for x in w)]
    for r in rows:
        out.append(" | ".join(str(c).ljust(w[i]) if i <= 1 else str(c).rjust(w[i]) for i, c in enumerate(r)))
    return "\n".join(out)


def table(path):
    vals = {}
    for line in open(path):
        line = line.rstrip("\n")
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        try:
            vals[(parts[0], parts[1])] = float(parts[2])
        except ValueError:
            pass
    modes = [m for m in MODES if any(k[1] == m for k in vals)]
    hdr = ["metric", "better"] + [HEAD[m] for m in modes]
    rows = []
    for key, label, better in ROWS:
        vs = [vals.get((key, m)) for m in modes]
        if all(v is None for v in vs):
            continue
        rows.append([label, {"hi": "higher", "lo": "LOWER", "": "-"}[better]] +
                    [benchlib.fmt(v) for v in vs])
    print(render(hdr, rows))
    ratios = [(a, b, label) for a, b, label in RATIOS if a in modes and b in modes]
    if not ratios:
        return
    print()
    hdr = ["ratio (>= 1.00 is better for a)", "better"] + [label for _, _, label in ratios]
    rows = []
    for key, label, better in ROWS:
        if not better:
            continue
        cells = []
        for a, b, _ in ratios:
            va, vb = vals.get((key, a)), vals.get((key, b))
            if va is None or vb is None or va == 0 or vb == 0:
                cells.append("-")
            elif better == "hi":
                cells.append("%.2f" % (va / vb))
            else:   # lower is better: inverted, so >= 1.00 still means "a is better"
                cells.append("%.2f" % (vb / va))
        if any(c != "-" for c in cells):
            rows.append([label, "higher" if better == "hi" else "LOWER"] + cells)
    print(render(hdr, rows))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "wrk":
        wrk(args[0])
    elif cmd == "jget":
        jget(args[0], args[1])
    elif cmd == "intercepted":
        intercepted(args[0])
    elif cmd == "hainfo":
        hainfo(args[0], args[1])
    elif cmd == "table":
        table(args[0])
    else:
        sys.exit("unknown subcommand " + cmd)


if __name__ == "__main__":
    main()
