#!/usr/bin/env python3
"""Parsing and reporting helpers for scripts/bench.sh.

Subcommands (all print space-separated values on one line):
  iperf FILE.json             -> "<Gbit/s received> <bytes received>"
  sockperf FILE.txt           -> "<p50 usec> <p99 usec>"     (RTT, needs --full-rtt)
  wrk FILE.txt                -> "<req/s> <p99 ms> <errors> <non2xx>"
  median V1 V2 ...            -> median
  ticks PID                   -> utime+stime of the whole process (clock ticks)
  rss PID                     -> VmRSS in KiB
  table RESULTS.tsv           -> the human-readable comparison table
RESULTS.tsv lines: metric<TAB>mode<TAB>value (later lines override earlier ones).
"""
import json, re, statistics, sys

def iperf(path):
    with open(path) as f:
        d = json.load(f)
    if "error" in d:
        sys.exit("iperf3 error in %s: %s" % (path, d["error"]))
    r = d["end"]["sum_received"]
    print("%.4f %d" % (r["bits_per_second"] / 1e9, r["bytes"]))

def sockperf(path):
    txt = open(path, errors="replace").read()
    pct = {}
    for m in re.finditer(r"percentile\s+([\d.]+)\s*=\s*([\d.]+)", txt):
        pct[float(m.group(1))] = float(m.group(2))
    if 50.0 not in pct or 99.0 not in pct:
        sys.exit("no percentiles found in %s" % path)
    if "RTT" not in txt and "rtt" not in txt:
        print("warning: sockperf output does not mention RTT", file=sys.stderr)
    print("%.3f %.3f" % (pct[50.0], pct[99.0]))

def to_ms(v, unit):
    v = float(v)
    return {"us": v / 1000.0, "ms": v, "s": v * 1000.0, "m": v * 60000.0}[unit]

def wrk(path):
    txt = open(path, errors="replace").read()
    m = re.search(r"Requests/sec:\s*([\d.]+)", txt)
    if not m:
        sys.exit("no Requests/sec in %s" % path)
    rps = float(m.group(1))
    m = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m)\s*$", txt, re.M)
    p99 = to_ms(m.group(1), m.group(2)) if m else float("nan")
    errs = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", txt)
    if m:
        errs = sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", txt)
    non2xx = int(m.group(1)) if m else 0
    print("%.1f %.3f %d %d" % (rps, p99, errs, non2xx))

def ticks(pid):
    s = open("/proc/%s/stat" % pid).read()
    f = s[s.rindex(")") + 2:].split()
    # fields after ")" start at field 3 (state); utime=14, stime=15
    print(int(f[14 - 3]) + int(f[15 - 3]))

def rss(pid):
    for line in open("/proc/%s/status" % pid):
        if line.startswith("VmRSS:"):
            print(int(line.split()[1]))
            return
    sys.exit("no VmRSS for %s" % pid)

# (key, label, better) ; better: "hi" or "lo"
ROWS = [
    ("iperf1_gbps", "iperf3 1 stream, Gbit/s (median of runs)", "hi"),
    ("iperf8_gbps", "iperf3 8 streams, Gbit/s", "hi"),
    ("rtt_p50_us", "sockperf TCP RTT p50, us", "lo"),
    ("rtt_p99_us", "sockperf TCP RTT p99, us", "lo"),
    ("rtt_p50_added_us", "RTT p50 added over direct, us", "lo"),
    ("rtt_p99_added_us", "RTT p99 added over direct, us", "lo"),
    ("wrk_ka_rps", "wrk keep-alive, requests/s", "hi"),
    ("wrk_ka_p99_ms", "wrk keep-alive p99 latency, ms", "lo"),
    ("wrk_close_rps", "wrk Connection: close, req (=conn)/s", "hi"),
    ("wrk_close_p99_ms", "wrk Connection: close p99 latency, ms", "lo"),
    ("cpu_s_per_gb_1", "proxy CPU s per GB, 1 stream", "lo"),
    ("cpu_s_per_gb_8", "proxy CPU s per GB, 8 streams", "lo"),
    ("rss_kib_per_conn", "proxy RSS KiB per idle client conn", "lo"),
]

def fmt(v):
    if v is None:
        return "n/a"
    a = abs(v)
    if a >= 1000:
        return "%.0f" % v
    if a >= 100:
        return "%.1f" % v
    if a >= 10:
        return "%.2f" % v
    return "%.3f" % v

def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return "%.2f" % (a / b)

def table(path):
    vals, meta = {}, []
    for line in open(path):
        line = line.rstrip("\n")
        if not line or line.startswith("#"):
            if line.startswith("#"):
                meta.append(line[1:].strip())
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        k, mode, v = parts
        try:
            vals[(k, mode)] = float(v)
        except ValueError:
            pass
    hdr = ["metric", "better", "direct", "loom", "haproxy", "loom/haproxy", "loom/direct"]
    rows = []
    for key, label, better in ROWS:
        d, l, h = (vals.get((key, m)) for m in ("direct", "loom", "haproxy"))
        if d is None and l is None and h is None:
            continue
        rows.append([label, "higher" if better == "hi" else "LOWER", fmt(d), fmt(l), fmt(h),
                     ratio(l, h), ratio(l, d)])
    w = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
    out = []
    line = " | ".join(h.ljust(w[i]) if i == 0 else h.rjust(w[i]) for i, h in enumerate(hdr))
    out.append(line)
    out.append("-+-".join("-" * x for x in w))
    for r in rows:
        out.append(" | ".join(str(c).ljust(w[i]) if i <= 1 else str(c).rjust(w[i]) for i, c in enumerate(r)))
    print("\n".join(out))

def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "iperf":
        iperf(args[0])
    elif cmd == "sockperf":
        sockperf(args[0])
    elif cmd == "wrk":
        wrk(args[0])
    elif cmd == "median":
        print("%.4f" % statistics.median(float(x) for x in args))
    elif cmd == "ticks":
        ticks(args[0])
    elif cmd == "rss":
        rss(args[0])
    elif cmd == "table":
        table(args[0])
    else:
        sys.exit("unknown subcommand " + cmd)

if __name__ == "__main__":
    main()
