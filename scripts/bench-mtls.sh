#!/usr/bin/env bash
# Loom mTLS benchmark: node-to-node mutual TLS through two loomd "nodes", against the
# same two nodes in plaintext, HAProxy originating and terminating TLS, and no proxy.
#
# Topology (all network namespaces are created by this script, named with a per-run
# prefix "lm<PID>", and deleted on every exit path; nothing is added to the root
# network namespace: no rules, routes, addresses or forwarding):
#
#   C (client pod) 10.90.1.2/24 --veth-- R (router) 10.90.1.1 | 10.90.2.1 --veth-- S (server pod) 10.90.2.2/24
#
# S runs iperf3 -s (S_IP:5201) and nginx (S_IP:8080, 1 KiB static file). C reaches them
# through a service VIP (10.96.60.10, ports 5201 and 80 -> 8080) that only a proxy in C
# knows: C has just its default route, R has no route for the VIP. Modes (MODES):
#
#   direct               no proxy: C connects to S_IP:5201 / S_IP:8080 (the baseline).
#   loom-mtls            two loomd processes started from the root netns, both with
#                        --ca-dir (one CA from `loomctl ca init --trust-domain cluster.local`).
#                        Node A intercepts pod C (namespace front, serviceAccount client)
#                        and maps the VIP to ONE endpoint {S_IP, identity
#                        spiffe://cluster.local/ns/shop/sa/web}; node B intercepts pod S
#                        (namespace shop, serviceAccount web). A reaches S_IP:15008 with
#                        mTLS; B terminates it (its tunnel port in S) and connects to the
#                        app in S. The run fails unless A's status counts client handshakes.
#   loom-plain           the same two loomds without --ca-dir: plaintext through A's
#                        outbound capture in C and B's inbound capture in S.
#   haproxy-tls          HAProxy (the Debian package) in C behind nft redirect rules in C's
#                        own netns (one frontend per VIP port), `server` lines to
#                        S_IP:15443/15444 with `ssl crt client.pem ca-file ca.crt verify
#                        required`, and a second HAProxy in S binding S_IP:15443/15444 with
#                        `ssl crt server.pem ca-file ca.crt verify required`, forwarding to
#                        the app. HAProxy's default: the C side resumes TLS sessions (TLS 1.3
#                        tickets), so most connections skip the certificate exchange.
#   haproxy-tls-noreuse  the same with `no-ssl-reuse` on the server lines: every connection
#                        is a full handshake (Loom before commit 91051ef resumed no session;
#                        since then it resumes TLS 1.3 sessions between nodes, like the
#                        default column; its status does not say how many were resumed).
#
# Certificates come from `loomctl ca issue` (ECDSA P-256; identities .../ns/front/sa/client
# and .../ns/shop/sa/web). Same TLS parameters as Loom: TLS 1.3 only, ciphersuites
# TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256, groups
# X25519:P-256 (HAProxy 2.6 has no curves setting for server lines: the C side offers
# OpenSSL's default list, led by X25519, and the S side accepts X25519:P-256 only).
# Loom's loops = HAProxy's nbthread = LOOPS, on both sides.
#
# Metrics per mode: iperf3 one stream C->S and -R S->C through the VIP (median of
# IPERF_REPEAT runs of DURATION s each), wrk with "Connection: close" against nginx
# through the VIP (every request a new client connection, so with mTLS a new handshake
# between the proxies: req/s = handshakes/s), and the CPU time of both proxy processes
# per GB moved and per wrk connection. Evidence rows: connections arriving in S on
# Loom's tunnel port, on HAProxy's TLS ports and on the app ports (nft counters in S),
# and full TLS handshakes per wrk connection (loomctl status; HAProxy's show info).
#
# Usage:  sudo scripts/bench-mtls.sh        (must run as root; ~6-7 minutes with the defaults)
# Env:
#   LOOMD          loomd binary (default: <repo>/.build/release/loomd)
#   LOOMCTL        loomctl binary (default: loomctl next to LOOMD)
#   MODES          columns to measure (default: "direct loom-mtls loom-plain haproxy-tls haproxy-tls-noreuse")
#   LOOPS          loomd --loops and HAProxy nbthread, every proxy process (default 1)
#   DURATION       seconds per iperf3/wrk run (default 10)
#   IPERF_REPEAT   repetitions of each iperf3 direction, median taken (default 3)
#   NGINX_WORKERS  nginx worker_processes (default 1)
#   WRK_THREADS / WRK_CONNS   wrk -t / -c (default 2 / 64)
#   LOOMD_ARGS     extra arguments for both loomds (e.g. "--busy-poll 50")
#   HAPROXY_GLOBAL extra global lines for both HAProxies
#   BENCH_OUT      output directory (default /tmp/loom-bench-mtls-<date>-<pid>)
# Output: the tables on stdout, and in BENCH_OUT: results.tsv (raw numbers, one
#   "metric<TAB>mode<TAB>value" a line), table.txt, logs/ (tool outputs, loomd stderr
#   and status JSON, HAProxy configs and show info, nginx log). A client still running
#   5 s past DURATION gets a snapshot (ss in C and S, both loomds' status) in logs/
#   *-stalled*; a failed run still prints the table of what it measured.

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
HELPERS="$SCRIPT_DIR/bench"
# shellcheck source-path=SCRIPTDIR source=lib/topology.sh
. "$SCRIPT_DIR/lib/topology.sh"
# shellcheck source=lib/benchcommon.sh
. "$SCRIPT_DIR/lib/benchcommon.sh"

LOOMD=${LOOMD:-$REPO_DIR/.build/release/loomd}
LOOMCTL=${LOOMCTL:-$(dirname "$LOOMD")/loomctl}
LOOMD_ARGS=${LOOMD_ARGS:-}
HAPROXY_GLOBAL=${HAPROXY_GLOBAL:-}
MODES=${MODES:-"direct loom-mtls loom-plain haproxy-tls haproxy-tls-noreuse"}
LOOPS=${LOOPS:-1}
DURATION=${DURATION:-10}
IPERF_REPEAT=${IPERF_REPEAT:-3}
NGINX_WORKERS=${NGINX_WORKERS:-1}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNS=${WRK_CONNS:-64}
BENCH_OUT=${BENCH_OUT:-/tmp/loom-bench-mtls-$(date +%Y%m%d-%H%M%S)-$$}

TRUST_DOMAIN=cluster.local
CLIENT_ID=spiffe://$TRUST_DOMAIN/ns/front/sa/client
SERVER_ID=spiffe://$TRUST_DOMAIN/ns/shop/sa/web
S_IP=10.90.2.2
VIP=10.96.60.10
IPERF_PORT=5201          # in S, and the VIP's port
HTTP_PORT=80             # the VIP's port
NGINX_PORT=8080          # in S (the service's targetPort)
TUNNEL_PORT=15008        # Loom's mTLS tunnel port in the server pod
HAC_IPERF_PORT=15101     # HAProxy frontends in C (nft redirect targets)
HAC_HTTP_PORT=15102
HAS_IPERF_PORT=15443     # HAProxy TLS listeners in S
HAS_HTTP_PORT=15444
TLS_SUITES=TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256
TLS_GROUPS=X25519:P-256

PFX="lm$$"
NS_C="${PFX}c"
NS_R="${PFX}r"
NS_S="${PFX}s"

log() { printf '[bench-mtls %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- preflight
[[ $EUID -eq 0 ]] || die "must run as root (network namespaces, nft)"
missing=()
for t in ip nft haproxy nginx iperf3 wrk python3 timeout; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
if ((${#missing[@]})); then
    die "missing tools: ${missing[*]} -- run scripts/install-deps.sh"
fi
NEED_LOOMD=0 NEED_CA=0
for m in $MODES; do
    case $m in
    direct) ;;
    loom-mtls) NEED_LOOMD=1 NEED_CA=1 ;;
    loom-plain) NEED_LOOMD=1 ;;
    haproxy-tls | haproxy-tls-noreuse) NEED_CA=1 ;;
    *) die "unknown mode '$m' in MODES" ;;
    esac
done
if ((NEED_LOOMD)); then
    [[ -x $LOOMD ]] || die "loomd not found at $LOOMD (swift build -c release; or set LOOMD=...)"
fi
if ((NEED_LOOMD || NEED_CA)); then
    [[ -x $LOOMCTL ]] || die "loomctl not found at $LOOMCTL (it is expected next to loomd; or set LOOMCTL=...)"
fi
[[ " $MODES " != *" loom-mtls "* ]] || "$LOOMD" --help 2>&1 | grep -q -- '--ca-dir' ||
    die "$LOOMD has no --ca-dir option (built before the mTLS work?)"
id haproxy >/dev/null 2>&1 || die "user 'haproxy' does not exist (install the haproxy package)"
PY=$(python3 -c 'import sys; print(sys.executable)')

HARD_NOFILE=$(ulimit -Hn)
[[ $HARD_NOFILE == unlimited ]] && HARD_NOFILE=1048576
ulimit -n "$HARD_NOFILE"
HAPROXY_MAXCONN=$(((HARD_NOFILE - 1000) * 2 / 5))
((HAPROXY_MAXCONN > 20000)) && HAPROXY_MAXCONN=20000

TMP=$(mktemp -d /tmp/loombench-mtls.XXXXXX)
chmod 755 "$TMP"        # nginx workers (www-data) read $TMP/www
mkdir -p "$BENCH_OUT/logs"
RESULTS="$BENCH_OUT/results.tsv"
LOGS="$BENCH_OUT/logs"
: >"$RESULTS"

# ---------------------------------------------------------------- cleanup
PIDS=()          # every background process this script started
PROXY_PIDS=()    # the proxies of the current mode (client side first)
PROXY_NAMES=()

stop_pid() { # stop one of our processes by PID: TERM, then KILL after 5 s
    local pid=$1 i
    [[ -n $pid ]] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
}

forget_pid() { # stopped and reaped: not to be signalled again (the PID may be reused)
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

CLEANED=0
cleanup() {
    local rc=$?
    ((CLEANED)) && return
    CLEANED=1
    set +e
    log "cleaning up (exit code $rc)"
    local i ns pid
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[i]}"
    done
    # Safety net: anything still living in our private namespaces was started by this
    # script (e.g. nginx workers); end those by PID.
    for ns in "$NS_C" "$NS_S" "$NS_R"; do
        if ip netns list | grep -qw "^$ns"; then
            for pid in $(ip netns pids "$ns" 2>/dev/null); do
                kill -KILL "$pid" 2>/dev/null
            done
        fi
    done
    topo_down "$PFX"
    if [[ -d $TMP ]]; then
        cp -a "$TMP"/*.cfg "$TMP"/*.yaml "$TMP"/*.log "$LOGS"/ 2>/dev/null
        rm -rf "$TMP"
    fi
    for ns in "$NS_C" "$NS_S" "$NS_R"; do
        ip netns list | grep -qw "^$ns" && log "WARNING: namespace $ns still present"
    done
    if ((rc != 0)) && grep -q $'\t' "$RESULTS" 2>/dev/null; then
        echo "PARTIAL results (the run failed; see above and $LOGS):"
        "$PY" "$HELPERS/mtlslib.py" table "$RESULTS"
    fi
    return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

inC() { ip netns exec "$NS_C" "$@"; }
inS() { ip netns exec "$NS_S" "$@"; }

# ---------------------------------------------------------------- topology, servers
setup_topology() {
    log "creating namespaces $NS_C (client) $NS_R (router) $NS_S (server)"
    topo_up "$PFX" 90
    # Many short connections: ephemeral ports above every listening port used here, and
    # TIME_WAIT reuse; deep accept queues.
    local ns
    for ns in "$NS_C" "$NS_S"; do
        ip netns exec "$ns" sysctl -qw net.ipv4.ip_local_port_range="16000 65000" net.ipv4.tcp_tw_reuse=1 \
            net.core.somaxconn=8192 net.ipv4.tcp_max_syn_backlog=8192
    done
}

start_servers() {
    log "starting servers in $NS_S (iperf3 $S_IP:$IPERF_PORT, nginx $S_IP:$NGINX_PORT workers=$NGINX_WORKERS)"
    start_bg "$LOGS/iperf3-server.log" "$NS_S" iperf3 -s -B "$S_IP" -p "$IPERF_PORT"
    mkdir -p "$TMP/www" "$TMP/nginx-tmp"
    head -c 1024 /dev/zero | tr '\0' 'x' >"$TMP/www/1k.bin"
    chmod -R a+rX "$TMP/www"
    cat >"$TMP/nginx.cfg" <<EOF
worker_processes $NGINX_WORKERS;
worker_rlimit_nofile 16384;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path $TMP/nginx-tmp/body;
    proxy_temp_path $TMP/nginx-tmp/proxy;
    fastcgi_temp_path $TMP/nginx-tmp/fastcgi;
    uwsgi_temp_path $TMP/nginx-tmp/uwsgi;
    scgi_temp_path $TMP/nginx-tmp/scgi;
    server {
        listen $S_IP:$NGINX_PORT backlog=8192;
        root $TMP/www;
        location / { }
    }
}
EOF
    start_bg "$LOGS/nginx.log" "$NS_S" nginx -c "$TMP/nginx.cfg" -g 'daemon off;'
    wait_for 10 "iperf3 server" listening "$NS_S" "$IPERF_PORT"
    wait_for 10 "nginx" listening "$NS_S" "$NGINX_PORT"
    wait_for 10 "TCP connect from $NS_C to $S_IP:$NGINX_PORT" inC "$PY" -c \
        "import socket; socket.create_connection(('$S_IP', $NGINX_PORT), timeout=1).close()"
}

# ---------------------------------------------------------------- certificates
CA_DIR="$TMP/ca"
make_ca() {
    log "mesh CA: $LOOMCTL ca init --dir $CA_DIR --trust-domain $TRUST_DOMAIN"
    "$LOOMCTL" ca init --dir "$CA_DIR" --trust-domain "$TRUST_DOMAIN" >"$LOGS/ca-init.log" 2>&1 ||
        { cat "$LOGS/ca-init.log" >&2; die "loomctl ca init failed"; }
}

make_haproxy_certs() {
    local name id
    mkdir -m 700 "$TMP/hacerts"
    for name in client server; do
        if [[ $name == client ]]; then id=$CLIENT_ID; else id=$SERVER_ID; fi
        "$LOOMCTL" ca issue --dir "$CA_DIR" --identity "$id" --out "$TMP/hacerts/$name" >>"$LOGS/ca-issue.log" 2>&1 ||
            { cat "$LOGS/ca-issue.log" >&2; die "loomctl ca issue $id failed"; }
        cat "$TMP/hacerts/$name.crt" "$TMP/hacerts/$name.key" >"$TMP/hacerts/$name.pem"
        chmod 600 "$TMP/hacerts/$name.pem"
    done
    cp "$CA_DIR/ca.crt" "$TMP/hacerts/ca.crt"
    openssl x509 -in "$TMP/hacerts/client.crt" -noout -text >"$LOGS/haproxy-client-cert.txt" 2>&1 || true
}

# ---------------------------------------------------------------- nft counters
# In S, for every mode: connections arriving from the network (not the proxies' own
# connections to the app, which loop through lo) on the tunnel port, on
# HAProxy's TLS ports and on the app ports, counted as SYN packets in a filter chain (a
# nat chain would count connections, but on its own it does not turn conntrack on in a
# netns, so it sees nothing in direct mode; this adds no conntrack to any mode).
set_s_counters() {
    inS nft delete table inet mtlsbench 2>/dev/null || true
    inS nft -f - <<EOF
table inet mtlsbench {
    counter tunnel {}
    counter tls {}
    counter app {}
    chain pre {
        type filter hook prerouting priority -150; policy accept;
        iifname "lo" return
        tcp flags & (syn | ack) != syn return
        tcp dport $TUNNEL_PORT counter name "tunnel"
        tcp dport { $HAS_IPERF_PORT, $HAS_HTTP_PORT } counter name "tls"
        tcp dport { $IPERF_PORT, $NGINX_PORT } counter name "app"
    }
}
EOF
}

s_counter() { # name -> packets (= connections)
    inS nft list counter inet mtlsbench "$1" | sed -n 's/.*packets \([0-9]*\).*/\1/p' | head -1
}

# In C: HAProxy's redirect rules (priority -100, like bench.sh), or for Loom a chain
# counting SYNs to the VIP (loomd's own table redirects them); either counts the
# connections to the VIP.
set_c_rule() { # mode
    inC nft delete table inet mtlsbench 2>/dev/null || true
    case $1 in
    direct) ;;
    loom-*)
        inC nft -f - <<EOF
table inet mtlsbench {
    chain output {
        type filter hook output priority -150; policy accept;
        ip daddr $VIP tcp flags & (syn | ack) == syn counter
    }
}
EOF
        ;;
    haproxy-*)
        inC nft -f - <<EOF
table inet mtlsbench {
    chain output {
        type nat hook output priority -100; policy accept;
        meta l4proto tcp meta skuid "haproxy" return
        ip daddr $VIP tcp dport $IPERF_PORT counter redirect to :$HAC_IPERF_PORT
        ip daddr $VIP tcp dport $HTTP_PORT counter redirect to :$HAC_HTTP_PORT
    }
}
EOF
        ;;
    esac
}

c_vip_conns() {
    inC nft list table inet mtlsbench 2>/dev/null | sed -n 's/.*counter packets \([0-9]*\).*/\1/p' |
        awk '{n += $1} END {print n + 0}'
}

# ---------------------------------------------------------------- Loom
write_loom_configs() {
    cat >"$TMP/loom-a.yaml" <<EOF
# Node A: owns pod C (client). The VIP's one endpoint is pod S, reached through S's node.
namespaces:
  front: {intercept: true}
  shop: {intercept: false}
pods:
  - {netns: /var/run/netns/$NS_C, namespace: front, serviceAccount: client}
services:
  - name: web
    namespace: shop
    vips: [$VIP]
    ports: [{port: $IPERF_PORT}, {port: $HTTP_PORT, targetPort: $NGINX_PORT}]
    endpoints: [{address: $S_IP, identity: $SERVER_ID}]
EOF
    cat >"$TMP/loom-b.yaml" <<EOF
# Node B: owns pod S (server): its tunnel port and its inbound capture.
namespaces:
  shop: {intercept: true}
  front: {intercept: false}
pods:
  - {netns: /var/run/netns/$NS_S, namespace: shop, serviceAccount: web}
EOF
}

loom_status() { # node(a|b) outfile
    "$LOOMCTL" status --json --admin-socket "$TMP/loom-$1/admin.sock" >"$2" 2>&1
}

loom_intercepted() { # node
    loom_status "$1" "$TMP/status-$1.json" && "$PY" "$HELPERS/mtlslib.py" intercepted "$TMP/status-$1.json"
}

loom_tails() {
    local n
    for n in a b; do
        [[ -f $LOGS/loomd-$n-$MODE.err ]] || continue
        echo "---- loomd $n ($MODE) stderr, last 30 lines: $LOGS/loomd-$n-$MODE.err" >&2
        tail -30 "$LOGS/loomd-$n-$MODE.err" >&2
    done
}

start_loomd() { # node(a|b) mtls(0|1)
    local n=$1 err="$LOGS/loomd-$1-$MODE.err" pid i ca=()
    ((${2})) && ca=(--ca-dir "$CA_DIR")
    rm -rf "$TMP/loom-$n"
    mkdir -p "$TMP/loom-$n"
    # Started from the root netns; loomd enters the pods' namespaces itself.
    # shellcheck disable=SC2086 # LOOMD_ARGS is a list of words
    start_bg "$err" - "$LOOMD" --config "$TMP/loom-$n.yaml" "${ca[@]}" --state-dir "$TMP/loom-$n" \
        --admin-socket "$TMP/loom-$n/admin.sock" --loops "$LOOPS" $LOOMD_ARGS
    pid=$LAST_PID
    PROXY_PIDS+=("$pid")
    PROXY_NAMES+=("loomd-$n")
    for ((i = 0; i < 300; i++)); do
        grep -q "] ready: " "$err" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || { loom_tails; die "loomd $n exited before ready"; }
        sleep 0.1
    done
    grep -q "] ready: " "$err" || { loom_tails; die "loomd $n not ready after 30s"; }
}

# ---------------------------------------------------------------- HAProxy
haproxy_global() { # name
    cat <<EOF
global
    nbthread $LOOPS
    maxconn $HAPROXY_MAXCONN
    user haproxy
    group haproxy
    stats socket $TMP/haproxy-$1.sock mode 600 level admin
    ssl-default-bind-ciphersuites $TLS_SUITES
    ssl-default-bind-curves $TLS_GROUPS
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-server-ciphersuites $TLS_SUITES
    ssl-default-server-options ssl-min-ver TLSv1.3
    $HAPROXY_GLOBAL

defaults
    mode tcp
    timeout connect 10s
    timeout client 10m
    timeout server 10m
EOF
}

write_haproxy_cfgs() { # reuse(0|1)
    local reuse="" c=$TMP/hacerts
    (($1)) || reuse=" no-ssl-reuse"
    {
        haproxy_global c
        cat <<EOF

# Pod C: redirected connections to the VIP, TLS to the HAProxy in pod S.
frontend fe_iperf
    bind 0.0.0.0:$HAC_IPERF_PORT
    maxconn $HAPROXY_MAXCONN
    default_backend be_iperf
frontend fe_http
    bind 0.0.0.0:$HAC_HTTP_PORT
    maxconn $HAPROXY_MAXCONN
    default_backend be_http
backend be_iperf
    server s $S_IP:$HAS_IPERF_PORT ssl crt $c/client.pem ca-file $c/ca.crt verify required$reuse
backend be_http
    server s $S_IP:$HAS_HTTP_PORT ssl crt $c/client.pem ca-file $c/ca.crt verify required$reuse
EOF
    } >"$TMP/haproxy-c-$MODE.cfg"
    {
        haproxy_global s
        cat <<EOF

# Pod S: terminates TLS (client certificate required), plaintext to the app.
frontend fe_iperf
    bind $S_IP:$HAS_IPERF_PORT ssl crt $c/server.pem ca-file $c/ca.crt verify required
    maxconn $HAPROXY_MAXCONN
    default_backend be_iperf
frontend fe_http
    bind $S_IP:$HAS_HTTP_PORT ssl crt $c/server.pem ca-file $c/ca.crt verify required
    maxconn $HAPROXY_MAXCONN
    default_backend be_http
backend be_iperf
    server app $S_IP:$IPERF_PORT
backend be_http
    server app $S_IP:$NGINX_PORT
EOF
    } >"$TMP/haproxy-s-$MODE.cfg"
}

start_haproxy() { # side(c|s)
    local side=$1 ns pid p
    if [[ $side == c ]]; then ns=$NS_C; else ns=$NS_S; fi
    rm -f "$TMP/haproxy-$side.sock"
    start_bg "$LOGS/haproxy-$side-$MODE.log" "$ns" haproxy -f "$TMP/haproxy-$side-$MODE.cfg" -db
    pid=$LAST_PID
    PROXY_PIDS+=("$pid")
    PROXY_NAMES+=("haproxy-$side")
    for p in $([[ $side == c ]] && echo "$HAC_IPERF_PORT $HAC_HTTP_PORT" || echo "$HAS_IPERF_PORT $HAS_HTTP_PORT"); do
        wait_for 10 "haproxy-$side listening on $p" listening "$ns" "$p"
    done
    kill -0 "$pid" 2>/dev/null || { cat "$LOGS/haproxy-$side-$MODE.log" >&2; die "haproxy-$side exited"; }
    [[ $(cat "/proc/$pid/comm") == haproxy ]] || die "PID $pid is not haproxy"
}

haproxy_cmd() { # side command
    "$PY" - "$TMP/haproxy-$1.sock" "$2" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
out = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    out += d
sys.stdout.write(out.decode(errors="replace"))
EOF
}

# ---------------------------------------------------------------- modes
start_mode() {
    PROXY_PIDS=()
    PROXY_NAMES=()
    set_s_counters
    case $MODE in
    direct) ;;
    loom-mtls | loom-plain)
        local mtls=0
        [[ $MODE == loom-mtls ]] && mtls=1
        start_loomd b "$mtls"
        start_loomd a "$mtls"
        wait_for 15 "loomd a: pod $NS_C intercepted" loom_intercepted a
        wait_for 15 "loomd b: pod $NS_S intercepted" loom_intercepted b
        ((mtls)) && wait_for 10 "loomd b: tunnel port $TUNNEL_PORT in $NS_S" listening "$NS_S" "$TUNNEL_PORT"
        loom_status a "$LOGS/status-a-$MODE-start.json" || true
        loom_status b "$LOGS/status-b-$MODE-start.json" || true
        ;;
    haproxy-tls | haproxy-tls-noreuse)
        local reuse=1
        [[ $MODE == haproxy-tls-noreuse ]] && reuse=0
        write_haproxy_cfgs "$reuse"
        start_haproxy s
        start_haproxy c
        ;;
    esac
    set_c_rule "$MODE"
    log "mode=$MODE loops/threads=$LOOPS proxies: ${PROXY_NAMES[*]:-none} (${PROXY_PIDS[*]:-})"
}

stop_mode() {
    local i
    if [[ $MODE != direct ]]; then
        record vip_conns "$MODE" "$(c_vip_conns)"
    fi
    local tun tls app
    tun=$(s_counter tunnel) tls=$(s_counter tls) app=$(s_counter app)
    record s_conns_tunnel "$MODE" "$tun"
    record s_conns_tls "$MODE" "$tls"
    record s_conns_app "$MODE" "$app"
    log "  connections into S from the network: tunnel port $tun, HAProxy TLS ports $tls, app ports (plaintext) $app"
    case $MODE in
    loom-mtls) ((tun > 0 && app == 0)) || log "WARNING: loom-mtls: expected every connection on the tunnel port, none in plaintext" ;;
    haproxy-*) ((tls > 0 && app == 0)) || log "WARNING: $MODE: expected every connection on the TLS ports, none in plaintext" ;;
    *) ((tun == 0 && tls == 0)) || log "WARNING: $MODE: connections on TLS ports in a plaintext mode" ;;
    esac
    set_c_rule direct
    for ((i = ${#PROXY_PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PROXY_PIDS[i]}"
        forget_pid "${PROXY_PIDS[i]}"
    done
    # A stopped loomd leaves its tables (fail closed); the next mode needs the pods clear.
    if [[ $MODE == loom-* ]]; then
        inC nft delete table inet loom 2>/dev/null || true
        inS nft delete table inet loom 2>/dev/null || true
    fi
    PROXY_PIDS=()
    PROXY_NAMES=()
}

proxy_ticks() { # sum over the proxies of this mode
    local pid t n=0
    for pid in "${PROXY_PIDS[@]}"; do
        t=$("$PY" "$HELPERS/benchlib.py" ticks "$pid") || die "proxy PID $pid is gone"
        n=$((n + t))
    done
    echo "$n"
}

proxy_ticks_each() { # "name=ticks ..." for the proxies of this mode
    local i
    for i in "${!PROXY_PIDS[@]}"; do
        printf '%s=%s ' "${PROXY_NAMES[i]}" "$("$PY" "$HELPERS/benchlib.py" ticks "${PROXY_PIDS[i]}" 2>/dev/null || echo 0)"
    done
}

record_ticks_each() { # tag "before" "after": per proxy CPU ticks of a phase
    local b a name
    declare -A before=()
    for b in $2; do before[${b%%=*}]=${b#*=}; done
    for a in $3; do
        name=${a%%=*}
        record "cpu_ticks_${1}_$name" "$MODE" "$((${a#*=} - ${before[$name]:-0}))"
    done
}

proxies_alive() {
    local i
    for i in "${!PROXY_PIDS[@]}"; do
        kill -0 "${PROXY_PIDS[i]}" 2>/dev/null || { [[ $MODE == loom-* ]] && loom_tails; die "${PROXY_NAMES[i]} (PID ${PROXY_PIDS[i]}) died during $MODE"; }
    done
}

fail_tool() { # what logfile (its stderr: logfile.stderr)
    snapshot failed
    tail -20 "$2" "$2.stderr" >&2
    [[ $MODE == loom-* ]] && loom_tails
    [[ $MODE == haproxy-* ]] && tail -20 "$LOGS/haproxy-c-$MODE.log" "$LOGS/haproxy-s-$MODE.log" >&2
    die "$1 failed in mode $MODE (output: $2)"
}

TICK_HZ=$(getconf CLK_TCK)

snapshot() { # tag: sockets in C and S, and the loomds' status, into logs/ (diagnostics)
    inC ss -tnoiem >"$LOGS/ss-C-$MODE-$1.txt" 2>&1 || true
    inS ss -tnoiem >"$LOGS/ss-S-$MODE-$1.txt" 2>&1 || true
    if [[ $MODE == loom-* ]]; then
        loom_status a "$LOGS/status-a-$MODE-$1.json" || true
        loom_status b "$LOGS/status-b-$MODE-$1.json" || true
    fi
}

run_client() { # tag outfile cmd... : runs cmd in C (output to outfile) with a deadline of
    # DURATION+30 s; one still running 5 s after DURATION gets a snapshot of the sockets
    # and the loomds' status (logs/*-TAG-stalled*) before the deadline ends it.
    local tag=$1 out=$2 pid i rc=0 snapped=0
    shift 2
    ip netns exec "$NS_C" timeout $((DURATION + 30)) "$@" >"$out" 2>"$out.stderr" &
    pid=$!
    PIDS+=("$pid")
    for ((i = 0; ; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        if ((!snapped && i >= (DURATION + 5) * 10)); then
            snapped=1
            log "  $tag still running $((DURATION + 5)) s after its start: snapshot logs/*-$MODE-$tag-stalled*"
            snapshot "$tag-stalled"
        fi
        sleep 0.1
    done
    wait "$pid" || rc=$?
    forget_pid "$pid"
    return "$rc"
}

run_iperf_dir() { # fwd|rev
    local dir=$1 i r gbps bytes t0 t1 total=0 runs=() args=() host=$VIP out
    [[ $MODE == direct ]] && host=$S_IP
    [[ $dir == rev ]] && args=(-R)
    local each0 each1
    each0=$(proxy_ticks_each)
    t0=$(proxy_ticks)
    for ((i = 1; i <= IPERF_REPEAT; i++)); do
        out="$LOGS/iperf-$MODE-$dir-run$i.json"
        run_client "iperf-$dir-run$i" "$out" iperf3 -c "$host" -p "$IPERF_PORT" -t "$DURATION" "${args[@]}" -J ||
            fail_tool "iperf3 $dir run $i" "$out"
        r=$("$PY" "$HELPERS/benchlib.py" iperf "$out") || fail_tool "iperf3 $dir run $i" "$out"
        read -r gbps bytes <<<"$r"
        record "iperf_${dir}_gbps_run$i" "$MODE" "$gbps"
        runs+=("$gbps")
        total=$((total + bytes))
        log "  iperf3 $dir run $i: $gbps Gbit/s"
    done
    t1=$(proxy_ticks)
    each1=$(proxy_ticks_each)
    record_ticks_each "iperf_$dir" "$each0" "$each1"
    proxies_alive
    record "iperf_${dir}_gbps" "$MODE" "$("$PY" "$HELPERS/benchlib.py" median "${runs[@]}")"
    record "iperf_${dir}_bytes" "$MODE" "$total"
    if [[ $MODE != direct ]]; then
        record "proxy_cpu_ticks_$dir" "$MODE" "$((t1 - t0))"
        record "cpu_s_per_gb_$dir" "$MODE" "$(awk -v t=$((t1 - t0)) -v hz="$TICK_HZ" -v b="$total" 'BEGIN{printf "%.4f", (t/hz)/(b/1e9)}')"
    fi
}

run_wrk_close() {
    local out="$LOGS/wrk-$MODE-close.txt" url="http://$VIP:$HTTP_PORT/1k.bin" r rps p99 errs non2xx reqs t0 t1
    local hs0=0 hs1=0 sampler=""
    [[ $MODE == direct ]] && url="http://$S_IP:$NGINX_PORT/1k.bin"
    if [[ $MODE == loom-* ]]; then
        loom_status a "$LOGS/status-a-$MODE-prewrk.json" || true
        hs0=$("$PY" "$HELPERS/mtlslib.py" jget "$LOGS/status-a-$MODE-prewrk.json" mtls.handshakes_client)
    fi
    if [[ $MODE == haproxy-* ]]; then
        # Mid-run sample of the TLS rates (show info's rates are per second).
        (
            sleep $((DURATION / 2 + 1))
            haproxy_cmd s "show info" >"$LOGS/haproxy-s-info-during-wrk-$MODE.txt" 2>&1
            haproxy_cmd c "show info" >"$LOGS/haproxy-c-info-during-wrk-$MODE.txt" 2>&1
        ) &
        sampler=$!
        PIDS+=("$sampler")
    fi
    local each0 each1 v0=0 v1=0
    [[ $MODE == direct ]] || v0=$(c_vip_conns)
    each0=$(proxy_ticks_each)
    t0=$(proxy_ticks)
    run_client wrk "$out" wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${DURATION}s" --latency \
        -H 'Connection: close' "$url" || fail_tool "wrk" "$out"
    t1=$(proxy_ticks)
    each1=$(proxy_ticks_each)
    [[ $MODE == direct ]] || v1=$(c_vip_conns)
    record_ticks_each wrk "$each0" "$each1"
    if [[ -n $sampler ]]; then
        wait "$sampler" 2>/dev/null || true
        forget_pid "$sampler"
    fi
    proxies_alive
    r=$("$PY" "$HELPERS/mtlslib.py" wrk "$out")
    read -r rps p99 errs non2xx reqs <<<"$r"
    record wrk_close_rps "$MODE" "$rps"
    record wrk_close_p99_ms "$MODE" "$p99"
    record wrk_close_errors "$MODE" "$((errs + non2xx))"
    record wrk_close_requests "$MODE" "$reqs"
    log "  wrk Connection: close: $rps conn/s, p99 $p99 ms ($reqs requests, socket errors $errs, non-2xx $non2xx)"
    if [[ $MODE != direct ]] && ((reqs > 0)); then
        record proxy_cpu_ticks_wrk "$MODE" "$((t1 - t0))"
        record cpu_ms_per_conn "$MODE" "$(awk -v t=$((t1 - t0)) -v hz="$TICK_HZ" -v n="$reqs" 'BEGIN{printf "%.4f", 1000*(t/hz)/n}')"
    fi
    case $MODE in
    loom-*)
        loom_status a "$LOGS/status-a-$MODE-end.json" || true
        loom_status b "$LOGS/status-b-$MODE-end.json" || true
        hs1=$("$PY" "$HELPERS/mtlslib.py" jget "$LOGS/status-a-$MODE-end.json" mtls.handshakes_client)
        local hb acc_b
        hb=$("$PY" "$HELPERS/mtlslib.py" jget "$LOGS/status-b-$MODE-end.json" mtls.handshakes_server)
        acc_b=$("$PY" "$HELPERS/mtlslib.py" jget "$LOGS/status-b-$MODE-end.json" connections.accepted)
        record loom_a_handshakes_client_total "$MODE" "$hs1"
        record loom_b_handshakes_server_total "$MODE" "$hb"
        record loom_b_connections_accepted_total "$MODE" "$acc_b"
        log "  loomd a: mtls.handshakes_client=$hs1 (before wrk $hs0); loomd b: mtls.handshakes_server=$hb connections.accepted=$acc_b"
        if [[ $MODE == loom-mtls ]]; then
            [[ $hs1 =~ ^[0-9]+$ && $hs0 =~ ^[0-9]+$ ]] ||
                die "loomd a's status has no numeric mtls.handshakes_client ($LOGS/status-a-$MODE-end.json)"
            ((hs1 > 0)) || { loom_tails; die "loom-mtls: loomd a made no mTLS handshake (mtls.handshakes_client=0)"; }
            # Per connection C opened to the VIP during wrk (wrk's count of requests
            # leaves out the connections still open when it stops).
            if ((v1 > v0)); then
                record mtls_handshakes_per_conn "$MODE" "$(awk -v h=$((hs1 - hs0)) -v n=$((v1 - v0)) 'BEGIN{printf "%.3f", h/n}')"
            fi
        elif [[ $hs1 =~ ^[0-9]+$ ]] && ((hs1 > 0)); then
            die "loom-plain: loomd a made $hs1 mTLS handshakes without --ca-dir"
        fi
        ;;
    haproxy-*)
        local f="$LOGS/haproxy-s-info-during-wrk-$MODE.txt" key rate reuse
        haproxy_cmd s "show info" >"$LOGS/haproxy-s-info-end-$MODE.txt" 2>&1 || true
        haproxy_cmd c "show info" >"$LOGS/haproxy-c-info-end-$MODE.txt" 2>&1 || true
        key=$("$PY" "$HELPERS/mtlslib.py" hainfo "$f" SslFrontendKeyRate)
        rate=$("$PY" "$HELPERS/mtlslib.py" hainfo "$f" SslRate)
        reuse=$("$PY" "$HELPERS/mtlslib.py" hainfo "$f" SslFrontendSessionReuse_pct)
        record haproxy_s_ssl_rate_mid "$MODE" "$rate"
        record haproxy_s_ssl_key_rate_mid "$MODE" "$key"
        record haproxy_s_session_reuse_pct_mid "$MODE" "$reuse"
        log "  haproxy-s mid-wrk: SslRate=$rate/s SslFrontendKeyRate=$key/s (full handshakes) SslFrontendSessionReuse_pct=$reuse"
        if [[ $rate =~ ^[0-9]+$ && $key =~ ^[0-9]+$ ]] && ((rate > 0)); then
            record mtls_handshakes_per_conn "$MODE" "$(awk -v k="$key" -v r="$rate" 'BEGIN{printf "%.3f", k/r}')"
        fi
        ;;
    esac
}

run_mode() {
    MODE=$1
    log "==== $MODE"
    start_mode
    run_iperf_dir fwd
    run_iperf_dir rev
    run_wrk_close
    stop_mode
}

# ---------------------------------------------------------------- main
START=$(date +%s)
MODE=setup
{
    echo "# loom bench-mtls $(date -Is) host=$(uname -n) kernel=$(uname -r) cpus=$(nproc)"
    echo "# modes=$MODES loops=$LOOPS duration=${DURATION}s iperf_repeat=$IPERF_REPEAT nginx_workers=$NGINX_WORKERS wrk=-t$WRK_THREADS/-c$WRK_CONNS"
    echo "# haproxy: $(haproxy -v 2>/dev/null | head -1) maxconn=$HAPROXY_MAXCONN ${HAPROXY_GLOBAL:+global: $HAPROXY_GLOBAL}"
    ((NEED_LOOMD)) && echo "# loomd: $LOOMD ($(stat -c '%y' "$LOOMD" 2>/dev/null)) ${LOOMD_ARGS:+args: $LOOMD_ARGS}"
    echo "# repo: $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo no-commit)$(git -C "$REPO_DIR" diff --quiet HEAD -- Sources 2>/dev/null || echo ' (Sources/ modified)')"
} >>"$RESULTS"

setup_topology
start_servers
if ((NEED_CA)); then
    make_ca
    make_haproxy_certs
fi
((NEED_LOOMD)) && write_loom_configs

for m in $MODES; do run_mode "$m"; done
MODE=finished

echo "# elapsed_s=$(($(date +%s) - START))" >>"$RESULTS"
"$PY" "$HELPERS/mtlslib.py" table "$RESULTS" >"$BENCH_OUT/table.txt"
echo
echo "Loom mTLS bench: loops/nbthread=$LOOPS for every proxy process (2 per proxied mode); ${DURATION}s per run; iperf3 median of $IPERF_REPEAT; wrk -t$WRK_THREADS -c$WRK_CONNS; nginx workers=$NGINX_WORKERS; $(nproc) CPUs shared by all."
echo "haproxy-tls(reuse) = HAProxy's default (TLS session resumption between the HAProxies); haproxy-tls-noreuse = no-ssl-reuse (every connection a full handshake)."
echo "Ratios: first mode / second; on LOWER-is-better rows inverted (second / first), so >= 1.00 always means the first mode is better."
cat "$BENCH_OUT/table.txt"
echo
echo "raw results: $RESULTS"
echo "table:       $BENCH_OUT/table.txt"
echo "logs:        $LOGS"
