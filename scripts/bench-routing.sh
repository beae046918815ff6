#!/usr/bin/env bash
# Routing at scale: the cost of one routing decision with 10,000 services and 100,000
# endpoints (target: under 1 microsecond median), the memory of that snapshot, and how
# long loomd takes to reload it. A measurement, not a test; no network, no namespaces.
#   sudo scripts/bench-routing.sh          (SERVICES=10000 ENDPOINTS=10 DECISIONS=2000000)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

SERVICES=${SERVICES:-10000}
PER=${ENDPOINTS:-10}
DECISIONS=${DECISIONS:-2000000}
BIN=${BIN:-$PWD/.build/release}
[[ -x $BIN/loomd && -x $BIN/loomctl ]] || swift build -c release >/dev/null
work=$(mktemp -d /tmp/loom-bench-routing.XXXXXX)
loomd_pid=""
cleanup() {
    [[ -n $loomd_pid ]] && kill "$loomd_pid" 2>/dev/null && wait "$loomd_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

python3 - "$SERVICES" "$PER" > "$work/big.yaml" <<'PY'
import sys
services, per = int(sys.argv[1]), int(sys.argv[2])
print("services:")
for s in range(services):
    a, b = divmod(s, 250)
    print("  - name: svc-%d" % s)
    print("    namespace: ns-%d" % (s % 50))
    print("    vips: [10.%d.%d.%d, fd96::%x]" % (96 + a // 250, a % 250, b + 1, s + 1))
    print("    ports: [{port: 80, protocol: http, targetPort: 8080}, {port: 443, protocol: tls}]")
    print("    endpoints:")
    for e in range(per):
        n = s * per + e
        print("      - {address: 10.%d.%d.%d, weight: %d}" % (128 + n // 65536, (n // 256) % 256, n % 256, 1 + e % 3))
PY
echo "# $(wc -l < "$work/big.yaml") lines, $((SERVICES * PER)) endpoints, $SERVICES services"
"$BIN/loomctl" config validate "$work/big.yaml" --bench "$DECISIONS"

# The same file in loomd: resident memory with and without it, and reload times.
start_loomd() {
    "$BIN/loomd" --loops 1 --state-dir "$work/state" --admin-socket "$work/admin.sock" "$@" 2>"$work/loomd.log" &
    loomd_pid=$!
    for _ in $(seq 600); do grep -q "] ready: " "$work/loomd.log" && return; sleep 0.1; done
    echo "loomd did not start" >&2; cat "$work/loomd.log" >&2; exit 1
}
stop_loomd() { kill "$loomd_pid"; wait "$loomd_pid" 2>/dev/null || true; loomd_pid=""; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$loomd_pid/status"; }
start_loomd; empty=$(rss); stop_loomd
start_loomd --config "$work/big.yaml"; big=$(rss)
echo "loomd RSS: $empty KiB with no configuration, $big KiB with this one (+$(( (big - empty) / 1024 )) MiB)"
for i in 1 2 3; do
    "$BIN/loomctl" reload --admin-socket "$work/admin.sock" | sed -n 's/.*loaded in \(.*\)/reload '"$i"': \1/p'
done
stop_loomd
