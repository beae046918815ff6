#!/usr/bin/env bash
# Quick start: installs dependencies, builds Loom, and shows it intercepting a real
# connection on its built-in default (no configuration: no pods, transparent
# pass-through). It creates a client pod, a router and a server pod as network
# namespaces, starts loomd, adds the client pod to namespace `demo` and enables
# interception there (loomd programs nf_tables in the pod and listens inside it),
# fetches a page from the server pod through Loom, prints what loomd saw, and removes
# everything it created.
#   sudo scripts/quickstart.sh          demo, then clean up
#   sudo scripts/quickstart.sh --keep   leave loomd and the pods running until Ctrl-C
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
. scripts/lib/topology.sh

keep=false
[[ ${1:-} == --keep ]] && keep=true
[[ $EUID -eq 0 ]] || { echo "quickstart needs root (network namespaces, nf_tables): sudo $0" >&2; exit 1; }

scripts/install-deps.sh
echo "== building loomd (release)"
swift build -c release --product loomd >/dev/null
swift build -c release --product loomctl >/dev/null
bin=$PWD/.build/release

pfx=lq$$
work=$(mktemp -d /tmp/loom-quickstart.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    topo_down "$pfx"
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "== creating pods: ${pfx}c (client 10.77.1.2) -> ${pfx}r (router) -> ${pfx}s (server 10.77.2.2)"
topo_up "$pfx" 77
echo "hello from the server pod" > "$work/index.html"
ip netns exec "${pfx}s" python3 -m http.server 8080 --bind 10.77.2.2 --directory "$work" >/dev/null 2>&1 &
pids+=($!)

echo "== starting loomd (built-in default: no pods, pass-through)"
"$bin/loomd" --admin-socket "$work/admin.sock" --state-dir "$work" 2> >(tee "$work/loomd.log" >&2) &
pids+=($!)
for _ in $(seq 100); do grep -q "] ready: " "$work/loomd.log" 2>/dev/null && break; sleep 0.1; done
for _ in $(seq 50); do ip netns exec "${pfx}s" bash -c '</dev/tcp/10.77.2.2/8080' 2>/dev/null && break; sleep 0.1; done
ctl() { "$bin/loomctl" "$@" --admin-socket "$work/admin.sock"; }

echo "== loomctl pod add --netns ${pfx}c --namespace demo; loomctl enable --namespace demo"
ctl pod add --netns "${pfx}c" --namespace demo
ctl enable --namespace demo
echo "== the table loomd installed in pod ${pfx}c (ip netns exec ${pfx}c nft list table inet loom)"
ip netns exec "${pfx}c" nft list table inet loom

echo "== loomctl trace --netns ${pfx}c (in the background) while the pod connects"
ctl trace --netns "${pfx}c" --count 3 --duration 15 > "$work/trace.txt" 2>&1 &
tracer=$!
for _ in $(seq 50); do ip netns exec "${pfx}c" nft list table inet loom_trace >/dev/null 2>&1 && break; sleep 0.1; done
echo "== curl from the client pod to http://10.77.2.2:8080/ (intercepted by nf_tables, relayed by Loom)"
ip netns exec "${pfx}c" curl -sS --max-time 5 http://10.77.2.2:8080/
echo "== a connection from the pod to its own loopback (the kernel lets it bypass Loom)"
ip netns exec "${pfx}c" bash -c '</dev/tcp/127.0.0.1/9' 2>/dev/null || true
wait "$tracer" || true
echo "== what the trace printed (kernel decision, then Loom's record)"
cat "$work/trace.txt"
echo "== loomctl status"
ctl status
relayed=$(ctl status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["connections"]["accepted"])')
if [[ $relayed -lt 1 ]]; then
    echo "quickstart: loomd did not see the connection" >&2
    exit 1
fi
echo "== Loom relayed $relayed connection(s)"

if $keep; then
    echo "loomd keeps running for pod ${pfx}c; try: sudo ip netns exec ${pfx}c curl http://10.77.2.2:8080/"
    echo "status: sudo $bin/loomctl status --admin-socket $work/admin.sock   (Ctrl-C to stop and clean up)"
    wait "${pids[1]}"
fi
echo "== loomctl disable --namespace demo (the pod's ruleset is as before)"
ctl disable --namespace demo
ip netns exec "${pfx}c" nft list ruleset
