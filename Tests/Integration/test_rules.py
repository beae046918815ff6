"""`loomctl rules` against the real kernel: the `nft` text it prints (the same text
`loomctl enable --dry-run` shows) loads with `nft -f` as is, lists back as planned
(golden), and the fail-open heartbeat works as the kernel enforces it: no heartbeat
element, connections go direct; a live element, they are intercepted; the element
expires, they go direct again. Here the test plays loomd's heartbeat part with the nft
CLI; test_intercept.py shows loomd doing it over netlink (and a SIGKILL ending it)."""

import time

import harness
from harness import ECHO_PORT, S_V4, ns_exec, run



def listing(ns):
    return ns_exec(ns, "nft", "list", "table", "inet", "loom").stdout


def load(ns, *args):
    ns_exec(ns, "nft", "delete", "table", "inet", "loom", check=False)
    ns_exec(ns, "nft", "-f", "-", input=harness.client_rules(*args))


def echo_through(loom, client):
    before = loom.status()["accepted"]
    assert client.call("connect", name="hb", host=S_V4, port=ECHO_PORT)["ok"]
    assert client.call("echo", name="hb", nbytes=256, seed=2)["ok"]
    client.call("close", name="hb")
    return loom.status()["accepted"] - before


def test_default_plan_lists_as_planned(topo):
    load(topo.client)
    harness.expect_golden(listing(topo.client), "default.list")


def test_full_plan_loads_as_planned(topo):
    """Both chains (inbound capture too) with every kind of exemption: the kernel takes
    the text as is and lists it back as planned. Nothing connects into the client pod
    here, so the inbound redirect (no listener on 15006 yet) affects no test."""
    try:
        ns_exec(topo.client, "nft", "delete", "table", "inet", "loom")
        text = run(harness.loomctl_path(), "rules", "--fail", "open", "--exclude-inbound-ports", "9090,22",
                   "--exclude-outbound-ports", "53", "--exclude-cidrs", "10.96.0.0/12,fd00::/8").stdout
        ns_exec(topo.client, "nft", "-f", "-", input=text)
        harness.expect_golden(listing(topo.client), "full-open.list")
    finally:
        load(topo.client)


def test_fail_open_heartbeat(loom, topo, client, echo_server):
    try:
        load(topo.client, "--fail", "open", "--exclude-cidrs", "192.0.2.0/24,2001:db8::/32",
             "--exclude-outbound-ports", "9,13")
        harness.expect_golden(listing(topo.client), "open.list")
        assert echo_through(loom, client) == 0, "no heartbeat: the connection must go direct"
        ns_exec(topo.client, "nft", "add", "element", "inet", "loom", "heartbeat",
                "{ tcp timeout 3s }")
        assert echo_through(loom, client) == 1, "live heartbeat: the connection must go through Loom"
        time.sleep(3.5)
        assert echo_through(loom, client) == 0, "expired heartbeat: the connection must go direct"
    finally:
        load(topo.client)
    assert echo_through(loom, client) == 1, "default (fail closed) plan restored"
