#!/usr/bin/env bash
# What tracing costs: relay throughput, latency and connection setup of one pod with no
# trace, with a trace running on ANOTHER pod, and with a trace on the pod itself (the
# NFQUEUE round trip of each new connection's SYN plus the records), in one run.
#
# Topology (network namespaces created here with prefix "bt<PID>", deleted on every exit
# path; nothing is added to the root network namespace):
#
#   C  (measured pod) 10.91.1.2 --+
#                                 R (router) -- S (server) 10.91.2.2: iperf3, sockperf,
#   C2 (other pod)    10.91.3.2 --+                                   a connect-and-close server
#
# loomd (2 loops) intercepts C and C2. Conditions run interleaved for ROUNDS rounds:
#   none   no tracer
#   other  `loomctl trace --netns C2` reading all the time
#   self   `loomctl trace --netns C` reading all the time
# In every condition C2 makes BUSY_RATE connections/s (so `other` has records to make,
# and every condition carries the same background load).
# Each round: iperf3 1 stream (Gbit/s), sockperf ping-pong (p50 and p99 latency, us),
# CONNS sequential connect/answer/close through Loom (connections/s). Medians per
# condition; "noise" is the spread (max-min)/median of the `none` rounds.
#
# Usage: sudo scripts/bench-trace.sh   (~4 minutes)   Env: LOOMD, ROUNDS (3),
#        DURATION (5 s per tool run), CONNS (2000), BUSY_RATE (200), BENCH_OUT.
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
LOOMD=${LOOMD:-$REPO_DIR/.build/release/loomd}
LOOMCTL=${LOOMCTL:-$(dirname "$LOOMD")/loomctl}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
CONNS=${CONNS:-2000}
BUSY_RATE=${BUSY_RATE:-200}
BENCH_OUT=${BENCH_OUT:-/tmp/loom-bench-trace-$(date +%Y%m%d-%H%M%S)-$$}
PEER="$REPO_DIR/Tests/Integration/peer.py"
PFX="bt$$"
C="${PFX}c" C2="${PFX}d" R="${PFX}r" S="${PFX}s"
S_IP=10.91.2.2
ADMIN="$BENCH_OUT/admin.sock"
PIDS=()

log() { printf '[bench-trace %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ $EUID -eq 0 ]] || die "must run as root (network namespaces, nft)"
for t in ip nft iperf3 sockperf python3; do command -v "$t" >/dev/null || die "missing $t: run scripts/install-deps.sh"; done
[[ -x $LOOMD && -x $LOOMCTL ]] || die "no loomd/loomctl at $LOOMD (swift build -c release)"

stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    for ns in "$C" "$C2" "$R" "$S"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$BENCH_OUT/logs"

log "topology $PFX: C, C2, R, S"
for ns in "$C" "$C2" "$R" "$S"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
link() { # pod router-side-name pod-addr router-addr
    ip link add "${1}a" netns "$1" type veth peer name "$2" netns "$R"
    ip -n "$1" addr add "$3/24" dev "${1}a"
    ip -n "$R" addr add "$4/24" dev "$2"
    ip -n "$1" link set "${1}a" up
    ip -n "$R" link set "$2" up
    ip -n "$1" route add default via "$4"
}
link "$C" "${PFX}rc" 10.91.1.2 10.91.1.1
link "$S" "${PFX}rs" "$S_IP" 10.91.2.1
link "$C2" "${PFX}rd" 10.91.3.2 10.91.3.1
ip netns exec "$R" sysctl -qw net.ipv4.ip_forward=1

bg() { # logfile cmd...
    local out=$1; shift
    "$@" >"$out" 2>&1 &
    PIDS+=($!)
}
bg "$BENCH_OUT/logs/iperf3-server.log" ip netns exec "$S" iperf3 -s -B "$S_IP" -p 5201
bg "$BENCH_OUT/logs/sockperf-server.log" ip netns exec "$S" sockperf server --tcp -i "$S_IP" -p 11111
bg "$BENCH_OUT/logs/peer-server.log" ip netns exec "$S" python3 "$PEER" serve 7300
bg "$BENCH_OUT/logs/loomd.log" "$LOOMD" --loops 2 --netns "$C" --netns "$C2" --admin-socket "$ADMIN" \
    --state-dir "$BENCH_OUT/state" --log-level warning
for _ in $(seq 100); do [[ -S $ADMIN ]] && "$LOOMCTL" status --admin-socket "$ADMIN" >/dev/null 2>&1 && break; sleep 0.1; done
"$LOOMCTL" status --admin-socket "$ADMIN" >/dev/null || die "loomd did not start: $(tail -5 "$BENCH_OUT/logs/loomd.log")"
sleep 1

TRACER=""
BUSY=""
start_condition() { # none|other|self
    # The other pod's steady connections, in every condition.
    ip netns exec "$C2" python3 "$PEER" many "$S_IP" 7300 100000000 "$BUSY_RATE" >/dev/null 2>&1 &
    BUSY=$!
    case $1 in
    none) ;;
    other)
        "$LOOMCTL" trace --netns "$C2" --json --admin-socket "$ADMIN" >"$BENCH_OUT/logs/trace-other.jsonl" 2>&1 &
        TRACER=$!
        ;;
    self)
        "$LOOMCTL" trace --netns "$C" --json --admin-socket "$ADMIN" >"$BENCH_OUT/logs/trace-self.jsonl" 2>&1 &
        TRACER=$!
        ;;
    esac
    [[ -n $TRACER ]] && PIDS+=("$TRACER")
    [[ -n $BUSY ]] && PIDS+=("$BUSY")
    sleep 0.5
}
stop_condition() {
    [[ -n $BUSY ]] && stop_pid "$BUSY"
    [[ -n $TRACER ]] && stop_pid "$TRACER"
    TRACER="" BUSY=""
    sleep 0.5
}

RESULTS="$BENCH_OUT/results.tsv"
: >"$RESULTS"
for round in $(seq "$ROUNDS"); do
    for cond in none other self; do
        log "round $round: $cond"
        start_condition "$cond"
        gbps=$(ip netns exec "$C" iperf3 -c "$S_IP" -p 5201 -t "$DURATION" -J 2>/dev/null |
            python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))')
        ip netns exec "$C" sockperf ping-pong --tcp -i "$S_IP" -p 11111 -t "$DURATION" --full-rtt \
            >"$BENCH_OUT/logs/sockperf-$cond-$round.txt" 2>&1
        lat=$(python3 "$SCRIPT_DIR/bench/benchlib.py" sockperf "$BENCH_OUT/logs/sockperf-$cond-$round.txt")
        read -r n secs < <(ip netns exec "$C" python3 "$PEER" many "$S_IP" 7300 "$CONNS")
        [[ $n == "$CONNS" ]] || log "warning: $n of $CONNS connections answered"
        cps=$(python3 -c "print('%.0f' % ($n / $secs))")
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$cond" "$gbps" $lat "$cps" >>"$RESULTS"
        stop_condition
    done
done

python3 - "$RESULTS" <<'PY' | tee "$BENCH_OUT/table.txt"
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]) if l.strip()]
metrics = [("iperf3 1 stream (Gbit/s)", 2, True), ("sockperf p50 (us)", 3, False),
           ("sockperf p99 (us)", 4, False), ("connections/s (connect+close)", 5, True)]
print("%-32s %10s %10s %10s %8s %8s %7s" % ("", "none", "other", "self", "other/", "self/", "noise"))
for name, col, higher in metrics:
    med = {}
    for cond in ("none", "other", "self"):
        med[cond] = statistics.median(float(r[col]) for r in rows if r[1] == cond)
    base = [float(r[col]) for r in rows if r[1] == "none"]
    noise = (max(base) - min(base)) / med["none"] if med["none"] else 0
    print("%-32s %10.2f %10.2f %10.2f %8.3f %8.3f %6.1f%%" % (
        name, med["none"], med["other"], med["self"], med["other"] / med["none"], med["self"] / med["none"],
        100 * noise))
cps = {c: statistics.median(float(r[5]) for r in rows if r[1] == c) for c in ("none", "self")}
print("\ntraced pod: connection setup+teardown %.1f us -> %.1f us (+%.1f us per connection)" % (
    1e6 / cps["none"], 1e6 / cps["self"], 1e6 / cps["self"] - 1e6 / cps["none"]))
print("rounds: %d; noise = (max-min)/median of the untraced rounds" % (len(rows) // 3))
PY
log "raw numbers: $RESULTS"
