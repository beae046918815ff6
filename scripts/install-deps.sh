#!/usr/bin/env bash
# Installs the Debian packages Loom, its tests and its benchmark need. Idempotent: does
# nothing when everything is present. Needs root (apt-get). Swift itself is expected at
# /opt/swift (or on PATH); see README.md.
set -euo pipefail

PACKAGES=(
    # Build: C libraries the C modules link (netfilter, nf_tables, OpenSSL).
    libmnl-dev libnftnl-dev libnetfilter-queue-dev libssl-dev pkg-config
    # Run: nf_tables CLI (tests and dry runs compare against it), ip, conntrack helpers.
    nftables iproute2 iptables procps
    # Test and benchmark peers.
    python3 python3-pytest python3-yaml python3-prometheus-client tmux gcc libc6-dev curl nginx haproxy iperf3 wrk sockperf tcpdump
)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
    if [[ $EUID -ne 0 ]]; then
        echo "install-deps: missing packages: ${missing[*]}; run as root to install them" >&2
        exit 1
    fi
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Debian starts nginx/haproxy services on install where systemd runs; Loom's tests
    # start their own copies inside network namespaces, so keep the packaged ones off.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# pytest for the integration tier: the Debian package, or pip where python3 is not Debian's.
if ! python3 -c 'import pytest' 2>/dev/null; then
    python3 -m pip install -q pytest
fi
# The metrics tests parse the exposition with Prometheus' own client library.
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
    python3 -m pip install -q prometheus-client
fi

if ! command -v swift >/dev/null && [[ ! -x /opt/swift/usr/bin/swift ]]; then
    echo "install-deps: Swift 6 toolchain not found (expected on PATH or at /opt/swift)" >&2
    exit 1
fi
echo "install-deps: all present"
