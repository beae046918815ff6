#!/usr/bin/env bash
# Loom benchmark: direct vs Loom vs HAProxy as the transparent proxy of a pod.
#
# Topology (all network namespaces are created by this script, named with a
# per-run prefix "lb<PID>", and deleted on every exit path):
#
#   C (client pod) 10.90.1.2/24 --veth-- R (router) 10.90.1.1 | 10.90.2.1 --veth-- S (server pod) 10.90.2.2/24
#
# S runs iperf3 -s, sockperf server, nginx (1 KiB static file, keep-alive) and
# a small python idle-connection holder. The proxy under test intercepts the
# TCP connections that C makes, through an nft "redirect" rule inside C only.
# Nothing is added to the root network namespace (no rules, routes, addresses,
# forwarding); the veths are created directly inside the namespaces.
#
# Usage:  sudo scripts/bench.sh          (must run as root; ~6-7 minutes)
# Env:
#   LOOMD          loomd binary (default: <repo>/.build/release/loomd)
#   MODES          which columns to measure (default: "direct loom haproxy")
#   LOOPS_SINGLE   loops/nbthread for the 1-stream iperf3, sockperf (default 1)
#   LOOPS_MULTI    loops/nbthread for iperf3 -P8, wrk and idle RSS (default 2)
#   DURATION       seconds per iperf3/sockperf/wrk run (default 10)
#   IPERF_REPEAT   repetitions of the 1-stream iperf3 run, median taken (default 3)
#   IDLE_CONNS     idle connections for the RSS measurement (default 3000)
#   NGINX_WORKERS  nginx worker_processes (default 1)
#   WRK_THREADS / WRK_CONNS   wrk -t / -c (default 2 / 64)
#   LOOMD_ARGS     extra loomd arguments (e.g. "--busy-poll 50")
#   HAPROXY_GLOBAL extra HAProxy global lines (e.g. "busy-polling", the equivalent)
#   BENCH_OUT      output directory (default /tmp/loom-bench-<date>-<pid>)
# Output: the table on stdout, and in BENCH_OUT: results.tsv (raw numbers),
#   table.txt, logs/ (raw tool outputs, proxy logs, configs).

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
HELPERS="$SCRIPT_DIR/bench"
# shellcheck source=lib/topology.sh
. "$SCRIPT_DIR/lib/topology.sh"
# shellcheck source=lib/benchcommon.sh
. "$SCRIPT_DIR/lib/benchcommon.sh"

LOOMD=${LOOMD:-$REPO_DIR/.build/release/loomd}
LOOMD_ARGS=${LOOMD_ARGS:-}
HAPROXY_GLOBAL=${HAPROXY_GLOBAL:-}
MODES=${MODES:-"direct loom haproxy"}
LOOPS_SINGLE=${LOOPS_SINGLE:-1}
LOOPS_MULTI=${LOOPS_MULTI:-2}
DURATION=${DURATION:-10}
IPERF_REPEAT=${IPERF_REPEAT:-3}
IDLE_CONNS=${IDLE_CONNS:-3000}
NGINX_WORKERS=${NGINX_WORKERS:-1}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNS=${WRK_CONNS:-64}
BENCH_OUT=${BENCH_OUT:-/tmp/loom-bench-$(date +%Y%m%d-%H%M%S)-$$}

LOOM_PORT=15001
HAPROXY_PORT=15002
LOOM_MARK=0x4c4f
C_IP=10.90.1.2
S_IP=10.90.2.2
IPERF_PORT=5201
SOCKPERF_PORT=11111
HOLD_PORT=9000

PFX="lb$$"
NS_C="${PFX}c"
NS_R="${PFX}r"
NS_S="${PFX}s"

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- preflight
[[ $EUID -eq 0 ]] || die "must run as root (network namespaces, nft)"
missing=()
for t in ip nft haproxy nginx iperf3 wrk sockperf python3 timeout; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
if ((${#missing[@]})); then
    die "missing tools: ${missing[*]} -- run scripts/install-deps.sh (nftables iproute2 haproxy nginx iperf3 wrk sockperf python3)"
fi
for m in $MODES; do
    case $m in
    direct | haproxy) ;;
    loom) [[ -x $LOOMD ]] || die "loomd binary not found at $LOOMD (build: swift build -c release; or set LOOMD=...; or MODES=\"direct haproxy\")" ;;
    *) die "unknown mode '$m' in MODES" ;;
    esac
done
id haproxy >/dev/null 2>&1 || die "user 'haproxy' does not exist (install the haproxy package)"
# The real python binary (not a pyenv shim), so $! is the python process.
PY=$(python3 -c 'import sys; print(sys.executable)')

# Idle-connection test needs ~2 fds per connection in the proxy, 1 in client/server.
HARD_NOFILE=$(ulimit -Hn)
[[ $HARD_NOFILE == unlimited ]] && HARD_NOFILE=1048576
ulimit -n "$HARD_NOFILE"
if ((HARD_NOFILE < 2 * IDLE_CONNS + 200)); then
    die "RLIMIT_NOFILE hard limit $HARD_NOFILE too low for IDLE_CONNS=$IDLE_CONNS"
fi
# HAProxy reserves 2 fds per connection plus 2 per pipe (tune.maxpipes defaults
# to maxconn/4) and refuses to start above the fd hard limit: 2.5 fds/conn.
HAPROXY_MAXCONN=$(((HARD_NOFILE - 1000) * 2 / 5))
((HAPROXY_MAXCONN > 20000)) && HAPROXY_MAXCONN=20000

TMP=$(mktemp -d /tmp/loombench.XXXXXX)
chmod 755 "$TMP"
mkdir -p "$BENCH_OUT/logs"
RESULTS="$BENCH_OUT/results.tsv"
LOGS="$BENCH_OUT/logs"
: >"$RESULTS"

# ---------------------------------------------------------------- cleanup
PIDS=()     # every background process this script started
PROXY_PID=""

stop_pid() { # stop one of our processes by PID: TERM, then KILL after 5 s
    local pid=$1 i
    [[ -n $pid ]] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
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
    # Safety net: anything still living in our private namespaces was started
    # by this script (e.g. nginx workers); end those by PID.
    for ns in "$NS_C" "$NS_S" "$NS_R"; do
        if ip netns list | grep -qw "^$ns"; then
            for pid in $(ip netns pids "$ns" 2>/dev/null); do
                kill -KILL "$pid" 2>/dev/null
            done
            ip netns del "$ns" 2>/dev/null
        fi
    done
    if [[ -d $TMP ]]; then
        cp -a "$TMP"/*.cfg "$TMP"/*.conf "$TMP"/*.err "$TMP"/*.log "$LOGS"/ 2>/dev/null
        rm -rf "$TMP"
    fi
    # Verify nothing is left behind.
    for ns in "$NS_C" "$NS_S" "$NS_R"; do
        ip netns list | grep -qw "^$ns" && log "WARNING: namespace $ns still present"
    done
    return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

inC() { ip netns exec "$NS_C" "$@"; }
inS() { ip netns exec "$NS_S" "$@"; }
inR() { ip netns exec "$NS_R" "$@"; }

# ---------------------------------------------------------------- topology
setup_topology() {
    log "creating namespaces $NS_C (client) $NS_R (router) $NS_S (server)"
    topo_up "$PFX" 90
    # Per-namespace TCP knobs for the connection-rate test (many short conns). The
    # ephemeral range starts above the proxies' ports (15001, 15002): a connection that
    # happened to own one as its local port would stop the next proxy from binding it.
    inC sysctl -qw net.ipv4.ip_local_port_range="16000 65000" net.ipv4.tcp_tw_reuse=1
    inS sysctl -qw net.core.somaxconn=8192 net.ipv4.tcp_max_syn_backlog=8192
    inC sysctl -qw net.core.somaxconn=8192 net.ipv4.tcp_max_syn_backlog=8192
}

start_servers() {
    log "starting servers in $NS_S (iperf3, sockperf, nginx workers=$NGINX_WORKERS, idle holder)"
    start_bg "$TMP/iperf3-server.log" "$NS_S" iperf3 -s -B "$S_IP" -p "$IPERF_PORT"
    start_bg "$TMP/sockperf-server.log" "$NS_S" sockperf server --tcp -i "$S_IP" -p "$SOCKPERF_PORT"

    mkdir -p "$TMP/www" "$TMP/nginx-tmp"
    head -c 1024 /dev/zero | tr '\0' 'x' >"$TMP/www/1k.bin"
    chmod -R a+rX "$TMP/www"
    cat >"$TMP/nginx.conf" <<EOF
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
        listen $S_IP:80 backlog=8192;
        root $TMP/www;
        location / { }
    }
}
EOF
    start_bg "$TMP/nginx.log" "$NS_S" nginx -c "$TMP/nginx.conf" -g 'daemon off;'
    # Long enough for the whole run; killed by PID on exit anyway.
    start_bg "$TMP/hold-server.log" "$NS_S" "$PY" "$HELPERS/hold_server.py" "$S_IP" "$HOLD_PORT" "$TMP/hold.count" 1800

    wait_for 10 "iperf3 server" listening "$NS_S" "$IPERF_PORT"
    wait_for 10 "sockperf server" listening "$NS_S" "$SOCKPERF_PORT"
    wait_for 10 "nginx" listening "$NS_S" 80
    wait_for 10 "idle holder" listening "$NS_S" "$HOLD_PORT"
    # Routing sanity check (C -> R -> S), before any redirect rule exists.
    wait_for 10 "TCP connect from $NS_C to $S_IP:80" inC "$PY" -c \
        "import socket; socket.create_connection(('$S_IP', 80), timeout=1).close()"
}

# ---------------------------------------------------------------- proxies
set_rule() { # mode
    inC nft delete table inet bench 2>/dev/null || true
    case $1 in
    direct) ;;
    loom)
        # loomd installed its own table (inet loom, priority -100); this one runs
        # first and only counts the connections that table will redirect.
        inC nft -f - <<EOF
table inet bench {
    chain output {
        type nat hook output priority -150;
        meta l4proto tcp meta mark $LOOM_MARK return
        oif "lo" return
        meta l4proto tcp counter
    }
}
EOF
        ;;
    haproxy)
        inC nft -f - <<EOF
table inet bench {
    chain output {
        type nat hook output priority -100;
        meta l4proto tcp meta skuid "haproxy" return
        oif "lo" return
        meta l4proto tcp counter redirect to :$HAPROXY_PORT
    }
}
EOF
        ;;
    esac
}

redirect_count() { # number of connections redirected since the rule was added
    inC nft list table inet bench 2>/dev/null | sed -n 's/.*counter packets \([0-9]*\).*/\1/p' | head -1
}

write_haproxy_cfg() { # threads
    cat >"$TMP/haproxy-$1.cfg" <<EOF
global
    nbthread $1
    maxconn $HAPROXY_MAXCONN
    user haproxy
    group haproxy
    stats socket $TMP/haproxy.sock mode 600 level admin
    $HAPROXY_GLOBAL
    # splice is on by default when the options below are set; tune.pipesize
    # is left at its default (kernel pipe size).

defaults
    mode tcp
    option splice-request
    option splice-response
    timeout connect 10s
    timeout client 10m
    timeout server 10m

frontend fe
    bind 0.0.0.0:$HAPROXY_PORT
    maxconn $HAPROXY_MAXCONN
    default_backend be

backend be
    # 0.0.0.0:0 = connect to the original destination (SO_ORIGINAL_DST).
    server s 0.0.0.0:0
EOF
}

start_proxy() { # mode loops
    local mode=$1 n=$2
    PROXY_PID=""
    case $mode in
    direct) ;;
    loom)
        rm -f "$TMP/admin.sock"
        # Started from the root netns; loomd enters $NS_C itself.
        start_bg "$TMP/loomd-$n.err" - "$LOOMD" --netns "$NS_C" --loops "$n" --admin-socket "$TMP/admin.sock" \
            --state-dir "$TMP/loom-state" $LOOMD_ARGS
        PROXY_PID=$LAST_PID
        local i
        for ((i = 0; i < 300; i++)); do
            grep -q "] ready: " "$TMP/loomd-$n.err" 2>/dev/null && break
            kill -0 "$PROXY_PID" 2>/dev/null || { tail -20 "$TMP/loomd-$n.err" >&2; die "loomd exited before ready"; }
            sleep 0.1
        done
        grep -q "] ready: " "$TMP/loomd-$n.err" || { tail -20 "$TMP/loomd-$n.err" >&2; die "loomd not ready after 30s"; }
        wait_for 5 "loomd listening on $LOOM_PORT" listening "$NS_C" "$LOOM_PORT"
        ;;
    haproxy)
        write_haproxy_cfg "$n"
        rm -f "$TMP/haproxy.sock"
        start_bg "$TMP/haproxy-$n.log" "$NS_C" haproxy -f "$TMP/haproxy-$n.cfg" -db
        PROXY_PID=$LAST_PID
        wait_for 10 "haproxy listening on $HAPROXY_PORT" listening "$NS_C" "$HAPROXY_PORT"
        kill -0 "$PROXY_PID" 2>/dev/null || die "haproxy exited"
        [[ $(cat "/proc/$PROXY_PID/comm") == haproxy ]] || die "PID $PROXY_PID is not haproxy"
        ;;
    esac
    set_rule "$mode"
    log "mode=$mode loops/threads=$n proxy_pid=${PROXY_PID:-none}"
}

stop_proxy() { # mode phase
    local mode=$1
    if [[ $mode != direct ]]; then
        local nred
        nred=$(redirect_count)
        record "redirected_conns_$2" "$mode" "${nred:-0}"
        ((${nred:-0} > 0)) || log "WARNING: the nft redirect rule matched no connection in mode $mode ($2)"
    fi
    set_rule direct
    if [[ -n $PROXY_PID ]]; then
        stop_pid "$PROXY_PID"
    fi
    # A stopped loomd leaves its table (fail closed); the next mode needs the pod clear.
    if [[ $mode == loom ]]; then inC nft delete table inet loom 2>/dev/null || true; fi
    PROXY_PID=""
}

haproxy_cmd() { # stats socket command (haproxy only)
    "$PY" - "$TMP/haproxy.sock" "$1" <<'EOF'
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

proxy_ticks() { [[ -n $PROXY_PID ]] && "$PY" "$HELPERS/benchlib.py" ticks "$PROXY_PID" || echo 0; }
proxy_rss() { "$PY" "$HELPERS/benchlib.py" rss "$PROXY_PID"; }

# ---------------------------------------------------------------- measurements
TICK_HZ=$(getconf CLK_TCK)

run_iperf() { # mode streams tag ; prints "gbps bytes"
    local mode=$1 p=$2 tag=$3 out="$LOGS/iperf-$1-$3.json"
    inC timeout $((DURATION + 30)) iperf3 -c "$S_IP" -p "$IPERF_PORT" -t "$DURATION" -P "$p" -J >"$out" ||
        { cat "$out" >&2; die "iperf3 failed ($mode $tag)"; }
    "$PY" "$HELPERS/benchlib.py" iperf "$out"
}

phase_single() { # mode: 1-stream iperf3 x IPERF_REPEAT + sockperf, loops=LOOPS_SINGLE
    local mode=$1 i r gbps bytes t0 t1 total=0 runs=()
    start_proxy "$mode" "$LOOPS_SINGLE"
    # Splice sanity for haproxy: sample PipesUsed during a run.
    if [[ $mode == haproxy ]]; then
        (sleep $((DURATION / 2 + 1)); haproxy_cmd "show info" >"$LOGS/haproxy-info-during-iperf1.txt" 2>&1) &
        local sampler=$!
        PIDS+=("$sampler")
    fi
    t0=$(proxy_ticks)
    for ((i = 1; i <= IPERF_REPEAT; i++)); do
        r=$(run_iperf "$mode" 1 "1stream-run$i")
        read -r gbps bytes <<<"$r"
        record "iperf1_gbps_run$i" "$mode" "$gbps"
        runs+=("$gbps")
        total=$((total + bytes))
        log "  iperf3 1 stream run $i: $gbps Gbit/s"
    done
    t1=$(proxy_ticks)
    [[ $mode == haproxy ]] && wait "$sampler" 2>/dev/null || true
    record iperf1_gbps "$mode" "$("$PY" "$HELPERS/benchlib.py" median "${runs[@]}")"
    record iperf1_bytes "$mode" "$total"
    if [[ $mode != direct ]]; then
        record proxy_cpu_ticks_1 "$mode" "$((t1 - t0))"
        record cpu_s_per_gb_1 "$mode" "$(awk -v t=$((t1 - t0)) -v hz="$TICK_HZ" -v b="$total" 'BEGIN{printf "%.4f", (t/hz)/(b/1e9)}')"
    fi

    local out="$LOGS/sockperf-$mode.txt" p50 p99
    inC timeout $((DURATION + 30)) sockperf ping-pong --tcp -i "$S_IP" -p "$SOCKPERF_PORT" -t "$DURATION" --full-rtt >"$out" 2>&1 ||
        { tail -20 "$out" >&2; die "sockperf failed ($mode)"; }
    r=$("$PY" "$HELPERS/benchlib.py" sockperf "$out")
    read -r p50 p99 <<<"$r"
    record rtt_p50_us "$mode" "$p50"
    record rtt_p99_us "$mode" "$p99"
    log "  sockperf RTT p50=$p50 us p99=$p99 us"
    stop_proxy "$mode" single
}

run_wrk() { # mode tag extra-args...
    local mode=$1 tag=$2 out="$LOGS/wrk-$1-$2.txt" rps p99 errs non2xx r
    shift 2
    inC timeout $((DURATION + 30)) wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${DURATION}s" --latency "$@" "http://$S_IP/1k.bin" >"$out" 2>&1 ||
        { tail -20 "$out" >&2; die "wrk failed ($mode $tag)"; }
    r=$("$PY" "$HELPERS/benchlib.py" wrk "$out")
    read -r rps p99 errs non2xx <<<"$r"
    record "wrk_${tag}_rps" "$mode" "$rps"
    record "wrk_${tag}_p99_ms" "$mode" "$p99"
    record "wrk_${tag}_socket_errors" "$mode" "$errs"
    record "wrk_${tag}_non2xx" "$mode" "$non2xx"
    log "  wrk $tag: $rps req/s, p99 $p99 ms (socket errors $errs, non-2xx $non2xx)"
}

hold_count() { cat "$TMP/hold.count" 2>/dev/null || echo 0; }
holder_empty() { [[ $(hold_count) -eq 0 ]]; }

measure_idle_rss() { # mode
    local mode=$1 before after cpid i st
    wait_for 30 "holder to drain" holder_empty
    sleep 1
    before=$(proxy_rss)
    rm -f "$TMP/hold.ready"
    start_bg "$TMP/hold-client.log" "$NS_C" "$PY" "$HELPERS/hold_client.py" "$S_IP" "$HOLD_PORT" "$IDLE_CONNS" "$TMP/hold.ready" 300
    cpid=$LAST_PID
    wait_for 60 "idle client to open $IDLE_CONNS connections" test -s "$TMP/hold.ready"
    st=$(cat "$TMP/hold.ready")
    [[ $st == "$IDLE_CONNS" ]] || { stop_pid "$cpid"; die "idle client: $st"; }
    for ((i = 0; i < 300; i++)); do
        (($(hold_count) >= IDLE_CONNS)) && break
        sleep 0.1
    done
    (($(hold_count) >= IDLE_CONNS)) || { stop_pid "$cpid"; die "only $(hold_count)/$IDLE_CONNS upstream connections reached the server"; }
    sleep 2
    after=$(proxy_rss)
    stop_pid "$cpid"
    record rss_before_kib "$mode" "$before"
    record rss_after_kib "$mode" "$after"
    record rss_kib_per_conn "$mode" "$(awk -v a="$after" -v b="$before" -v n="$IDLE_CONNS" 'BEGIN{printf "%.3f", (a-b)/n}')"
    log "  idle RSS: $before KiB -> $after KiB with $IDLE_CONNS connections"
    wait_for 30 "holder to drain" holder_empty
}

phase_multi() { # mode: iperf3 -P8, wrk keep-alive / close, idle RSS; loops=LOOPS_MULTI
    local mode=$1 gbps bytes t0 t1 r
    start_proxy "$mode" "$LOOPS_MULTI"
    if [[ $mode != direct ]]; then
        measure_idle_rss "$mode"
    fi
    if [[ $mode == haproxy ]]; then
        (sleep $((DURATION / 2 + 1)); haproxy_cmd "show info" >"$LOGS/haproxy-info-during-iperf8.txt" 2>&1) &
        local sampler=$!
        PIDS+=("$sampler")
    fi
    t0=$(proxy_ticks)
    r=$(run_iperf "$mode" 8 "8streams")
    read -r gbps bytes <<<"$r"
    t1=$(proxy_ticks)
    [[ $mode == haproxy ]] && wait "$sampler" 2>/dev/null || true
    record iperf8_gbps "$mode" "$gbps"
    record iperf8_bytes "$mode" "$bytes"
    log "  iperf3 8 streams: $gbps Gbit/s"
    if [[ $mode != direct ]]; then
        record proxy_cpu_ticks_8 "$mode" "$((t1 - t0))"
        record cpu_s_per_gb_8 "$mode" "$(awk -v t=$((t1 - t0)) -v hz="$TICK_HZ" -v b="$bytes" 'BEGIN{printf "%.4f", (t/hz)/(b/1e9)}')"
    fi
    run_wrk "$mode" ka
    run_wrk "$mode" close -H 'Connection: close'
    if [[ $mode == haproxy ]]; then
        haproxy_cmd "show info" >"$LOGS/haproxy-info-end.txt" 2>&1 || true
        haproxy_cmd "show stat" >"$LOGS/haproxy-stat-end.csv" 2>&1 || true
        # Splice evidence: pipes are only allocated when haproxy splices.
        local pipes
        pipes=$(awk -F': ' '$1=="PipesUsed"||$1=="PipesFree"{n+=$2} END{print n+0}' "$LOGS/haproxy-info-end.txt")
        record haproxy_pipes_allocated "$mode" "$pipes"
        ((pipes > 0)) || log "WARNING: haproxy allocated no pipes: splice was not used"
    fi
    stop_proxy "$mode" multi
}

# ---------------------------------------------------------------- main
START=$(date +%s)
{
    echo "# loom bench $(date -Is) host=$(uname -n) kernel=$(uname -r) cpus=$(nproc)"
    echo "# modes=$MODES loops_single=$LOOPS_SINGLE loops_multi=$LOOPS_MULTI duration=${DURATION}s iperf_repeat=$IPERF_REPEAT idle_conns=$IDLE_CONNS nginx_workers=$NGINX_WORKERS wrk=-t$WRK_THREADS/-c$WRK_CONNS"
    echo "# haproxy: $(haproxy -v 2>/dev/null | head -1) maxconn=$HAPROXY_MAXCONN"
    [[ " $MODES " == *" loom "* ]] && echo "# loomd: $LOOMD ($(stat -c '%y' "$LOOMD" 2>/dev/null)) ${LOOMD_ARGS:+args: $LOOMD_ARGS}${HAPROXY_GLOBAL:+; haproxy global: $HAPROXY_GLOBAL}"
    echo "# repo: $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo no-commit)"
} >>"$RESULTS"

setup_topology
start_servers

log "phase 1: 1-stream iperf3 (x$IPERF_REPEAT) + sockperf, loops/threads=$LOOPS_SINGLE"
for m in $MODES; do phase_single "$m"; done
if [[ " $MODES " == *" direct "* ]]; then
    d50=$(awk -F'\t' '$1=="rtt_p50_us" && $2=="direct"{v=$3} END{print v}' "$RESULTS")
    d99=$(awk -F'\t' '$1=="rtt_p99_us" && $2=="direct"{v=$3} END{print v}' "$RESULTS")
    for m in $MODES; do
        v50=$(awk -F'\t' -v m="$m" '$1=="rtt_p50_us" && $2==m{v=$3} END{print v}' "$RESULTS")
        v99=$(awk -F'\t' -v m="$m" '$1=="rtt_p99_us" && $2==m{v=$3} END{print v}' "$RESULTS")
        record rtt_p50_added_us "$m" "$(awk -v a="$v50" -v b="$d50" 'BEGIN{printf "%.3f", a-b}')"
        record rtt_p99_added_us "$m" "$(awk -v a="$v99" -v b="$d99" 'BEGIN{printf "%.3f", a-b}')"
    done
fi

log "phase 2: iperf3 -P8, wrk keep-alive, wrk Connection: close, idle RSS; loops/threads=$LOOPS_MULTI"
for m in $MODES; do phase_multi "$m"; done

echo "# elapsed_s=$(($(date +%s) - START))" >>"$RESULTS"
"$PY" "$HELPERS/benchlib.py" table "$RESULTS" >"$BENCH_OUT/table.txt"
echo
echo "Loom bench: loops/threads ${LOOPS_SINGLE} for 1-stream iperf3, RTT; ${LOOPS_MULTI} for 8-stream iperf3, wrk, RSS. ${DURATION}s per run; nginx workers=$NGINX_WORKERS; $(nproc) CPUs shared by all."
echo "'better' column: higher = higher is better, LOWER = lower is better. Ratios are loom divided by the other column."
cat "$BENCH_OUT/table.txt"
echo
echo "raw results: $RESULTS"
echo "table:       $BENCH_OUT/table.txt"
echo "logs:        $LOGS"
