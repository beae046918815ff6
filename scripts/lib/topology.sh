# Test-pod topology for Loom's scripts (sourced, bash). Everything lives in network
# namespaces named with a per-run prefix; nothing touches the root network namespace.
#
#   client pod  ${PFX}c  10.<N>.1.2/24  fd<N>:1::2/64
#   router      ${PFX}r  10.<N>.1.1 | 10.<N>.2.1  (forwarding on, inside this netns only)
#   server pod  ${PFX}s  10.<N>.2.2/24  fd<N>:2::2/64
#
# topo_up PFX N     creates it; topo_down PFX removes it (safe to call twice).

topo_up() {
    local p=$1 n=$2
    local c=${p}c r=${p}r s=${p}s
    for ns in "$c" "$r" "$s"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    ip link add "${p}ca" netns "$c" type veth peer name "${p}rc" netns "$r"
    ip link add "${p}sa" netns "$s" type veth peer name "${p}rs" netns "$r"
    ip -n "$c" addr add "10.$n.1.2/24" dev "${p}ca"
    ip -n "$c" addr add "fd$n:1::2/64" dev "${p}ca" nodad
    ip -n "$r" addr add "10.$n.1.1/24" dev "${p}rc"
    ip -n "$r" addr add "fd$n:1::1/64" dev "${p}rc" nodad
    ip -n "$r" addr add "10.$n.2.1/24" dev "${p}rs"
    ip -n "$r" addr add "fd$n:2::1/64" dev "${p}rs" nodad
    ip -n "$s" addr add "10.$n.2.2/24" dev "${p}sa"
    ip -n "$s" addr add "fd$n:2::2/64" dev "${p}sa" nodad
    ip -n "$c" link set "${p}ca" up
    ip -n "$s" link set "${p}sa" up
    ip -n "$r" link set "${p}rc" up
    ip -n "$r" link set "${p}rs" up
    ip -n "$c" route add default via "10.$n.1.1"
    ip -n "$c" -6 route add default via "fd$n:1::1"
    ip -n "$s" route add default via "10.$n.2.1"
    ip -n "$s" -6 route add default via "fd$n:2::1"
    ip netns exec "$r" sysctl -qw net.ipv4.ip_forward=1
    ip netns exec "$r" sysctl -qw net.ipv6.conf.all.forwarding=1
}

topo_down() {
    local p=$1
    for ns in "${p}c" "${p}r" "${p}s"; do
        ip netns del "$ns" 2>/dev/null || true
    done
}
