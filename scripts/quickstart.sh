#!/usr/bin/env bash
# Quick start: installs dependencies, builds Loom, and shows it relaying a real
# intercepted connection on its built-in default (no configuration: transparent
# pass-through). It creates a client pod, a router and a server pod as network
# namespaces, redirects the client pod's outbound TCP to loomd, fetches a page from the
# server pod through Loom, prints what loomd saw, and removes everything it created.
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
topo_redirect "${pfx}c" "$bin/loomctl"

echo "== starting loomd for pod ${pfx}c (built-in default: pass-through)"
"$bin/loomd" --netns "${pfx}c" --admin-socket "$work/admin.sock" 2> >(tee "$work/loomd.log" >&2) &
pids+=($!)
for _ in $(seq 100); do grep -q "] ready: " "$work/loomd.log" 2>/dev/null && break; sleep 0.1; done
for _ in $(seq 50); do ip netns exec "${pfx}s" bash -c '</dev/tcp/10.77.2.2/8080' 2>/dev/null && break; sleep 0.1; done

echo "== curl from the client pod to http://10.77.2.2:8080/ (intercepted by nf_tables, relayed by Loom)"
ip netns exec "${pfx}c" curl -sS --max-time 5 http://10.77.2.2:8080/
echo "== loomctl status"
"$bin/loomctl" status --admin-socket "$work/admin.sock"
relayed=$("$bin/loomctl" status --json --admin-socket "$work/admin.sock" | python3 -c 'import json,sys; print(json.load(sys.stdin)["connections"]["accepted"])')
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
