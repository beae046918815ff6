"""Interception as users switch it on: loomctl enable/disable per pod and per namespace,
loomd programming `inet loom` over netlink inside each pod's netns, its listeners there,
exemptions, coexistence with other firewalls, fail policy across a SIGKILL, restart
adoption, deleted namespaces, uninstall, and bad input. Every pod here is a netns this
run creates (prefix harness.PREFIX) on the shared router; loomd runs in the root netns
and never changes it."""

import json
import os
import re
import subprocess
import sys
import time

import pytest

import harness
from harness import S_V4, S_V6, ns_exec, run

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "peer.py")
PORT = 7100            # peer server in S: answers with the peer address it sees
EXCLUDED_PORT = 7101   # same server, excluded from interception in some tests
REJECTED_PORT = 7102   # a port a pod's own iptables rule rejects


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def peer_server(topo, workdir):
    server = harness.start_peer_server(topo.server, os.path.join(workdir, "peer-server.log"), PORT, EXCLUDED_PORT, REJECTED_PORT)
    yield server[0]
    harness.stop_peer_server(server)


@pytest.fixture(autouse=True)
def _peer_running(peer_server):
    """Every test here talks to the peer server in S."""


def ask(ns, host, port=PORT, timeout=3.0):
    """(exit code, answer) of one connection from `ns` to the peer server."""
    p = run("ip", "netns", "exec", ns, sys.executable, PEER, "ask", host, str(port), str(timeout),
            check=False, timeout=timeout + 10)
    return p.returncode, p.stdout.strip()


def accepted(ld, ns):
    return ld.pods()["/var/run/netns/" + ns]["accepted"]


def listing(ns, json_format=False):
    # -t (terse): without a fail-open heartbeat element's ticking "expires" time
    args = ["nft", "-j", "list", "table", "inet", "loom"] if json_format else \
        ["nft", "-t", "list", "table", "inet", "loom"]
    return ns_exec(ns, *args, check=False).stdout


def ruleset(ns):
    return ns_exec(ns, "nft", "list", "ruleset").stdout


def listening_ports(ns):
    out = ns_exec(ns, "ss", "-Hltn").stdout
    return sorted({int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()})


def through_loom(ld, ns, host, port=PORT):
    """Connects via Loom and checks both views: Loom counted it, and the server saw
    the pod's own address (the upstream socket lives in the pod's netns)."""
    before = accepted(ld, ns)
    code, answer = ask(ns, host, port)
    assert code == 0, "connection from %s to %s:%d failed: %s\n%s" % (
        ns, host, port, answer, ld.stderr_text())
    assert accepted(ld, ns) == before + 1, "Loom did not relay %s -> %s:%d" % (ns, host, port)
    return answer.split()[0]


def direct(ld, ns, host, port=PORT):
    before = accepted(ld, ns)
    code, answer = ask(ns, host, port)
    assert code == 0, answer
    assert accepted(ld, ns) == before, "Loom relayed %s -> %s:%d, which should bypass it" % (ns, host, port)
    return answer.split()[0]


def normalized_json(text):
    """`nft -j list table` without handles and the metainfo line (they vary)."""
    items = json.loads(text)["nftables"]
    out = []
    for item in items:
        if "metainfo" in item:
            continue
        for body in item.values():
            body.pop("handle", None)
        out.append(item)
    return json.dumps(out, indent=1, sort_keys=True) + "\n"


def dry_run(ld, *args):
    out = ld.ctl("enable", *args, "--dry-run").stdout
    return "".join(line + "\n" for line in out.splitlines()
                   if not line.startswith("# ") and not line.startswith("dry run"))


# --------------------------------------------------------------------- tests

def test_enable_pod_installs_plan_and_relays(node, pod, topo, figure):
    """enable --netns: the kernel's table is the plan (JSON golden, and the text equals
    --dry-run), both capture ports listen in the pod, and a connection from the pod
    reaches the server through Loom with the pod's own address as its source."""
    ns, a4, a6 = pod("Pa")
    plan = dry_run(node, "--netns", ns)
    assert listing(ns) == "", "dry run changed the pod"
    node.ctl("enable", "--netns", ns)
    assert listing(ns) == plan
    harness.expect_golden(normalized_json(listing(ns, json_format=True)), "enable-default.json")
    assert listening_ports(ns) == [15001, 15006]
    row = node.pods()["/var/run/netns/" + ns]
    assert row["state"] == "intercepted" and row["generation"] == 1 and row["namespace"] == "default"
    assert row["listeners"] == 2 * 2 * 2, row      # loops x families x capture ports
    assert through_loom(node, ns, S_V4) == a4
    assert through_loom(node, ns, S_V6) == a6
    figure("enable one pod (loomd)", "%.2f ms" % row["changeMs"])
    # Inbound: a connection from S to an app in the pod goes through 15006; the app sees
    # the pod's own address as its peer (Loom connects from inside the pod).
    app = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, PEER, "serve", "8080"],
                           stdout=subprocess.PIPE, text=True)
    harness._live_procs.append(app)
    try:
        assert app.stdout.readline().strip() == "serving"
        for target, own in ((a4, a4), (a6, a6)):
            before = accepted(node, ns)
            code, answer = ask(topo.server, target, 8080)
            assert code == 0, answer
            assert answer.split()[0] == own, answer
            assert accepted(node, ns) == before + 1
    finally:
        harness._stop_proc(app)


def test_enable_twice_changes_nothing_and_disable_restores(node, pod):
    ns, a4, _ = pod("Pb")
    ns_exec(ns, "nft", "add", "table", "inet", "mine")
    ns_exec(ns, "nft", "add", "chain", "inet", "mine", "out",
            "{ type filter hook output priority 0; policy accept; }")
    ns_exec(ns, "nft", "add", "rule", "inet", "mine", "out", "tcp", "dport", str(PORT), "counter")
    before_rules, before_ports = ruleset(ns), listening_ports(ns)
    node.ctl("enable", "--netns", ns)
    first = listing(ns)
    node.ctl("enable", "--netns", ns)
    assert listing(ns) == first
    assert node.pods()["/var/run/netns/" + ns]["generation"] == 1
    # Other settings replace the table atomically: generation 2, still one table.
    node.ctl("enable", "--netns", ns, "--exclude-outbound-ports", str(EXCLUDED_PORT))
    assert node.pods()["/var/run/netns/" + ns]["generation"] == 2
    assert ruleset(ns).count("table inet loom") == 1
    through_loom(node, ns, S_V4)
    node.ctl("disable", "--netns", ns)
    after = ruleset(ns)
    # The user's counter moved; everything else is as it was before enable.
    strip = lambda t: re.sub(r"counter packets \d+ bytes \d+", "counter", t)
    assert strip(after) == strip(before_rules)
    assert listening_ports(ns) == before_ports
    assert node.pods()["/var/run/netns/" + ns]["state"] == "opted-out"
    assert direct(node, ns, S_V4) == a4


def test_excluded_ports_and_cidrs_go_direct(node, pod):
    ns, _, _ = pod("Pc")
    node.ctl("enable", "--netns", ns, "--exclude-outbound-ports", str(EXCLUDED_PORT),
             "--exclude-cidrs", S_V6 + "/128")
    through_loom(node, ns, S_V4, PORT)
    direct(node, ns, S_V4, EXCLUDED_PORT)
    direct(node, ns, S_V6, PORT)
    through_loom(node, ns, S_V4, PORT)


def test_excluded_inbound_port_goes_direct(node, pod, topo):
    """Inbound: an excluded port reaches the app directly (it sees the client's own
    address); another port goes through 15006 (the app sees the pod's address)."""
    ns, a4, _ = pod("Ps")
    app = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, PEER, "serve", "8080", "8081"],
                           stdout=subprocess.PIPE, text=True)
    harness._live_procs.append(app)
    try:
        assert app.stdout.readline().strip() == "serving"
        node.ctl("enable", "--netns", ns, "--exclude-inbound-ports", "8080")
        before = accepted(node, ns)
        code, answer = ask(topo.server, a4, 8080)
        assert code == 0 and answer.split()[0] == S_V4, answer
        assert accepted(node, ns) == before
        code, answer = ask(topo.server, a4, 8081)
        assert code == 0 and answer.split()[0] == a4, answer
        assert accepted(node, ns) == before + 1
    finally:
        harness._stop_proc(app)


def test_namespace_enable_applies_to_later_pods_and_opt_out(node, pod):
    ns1, _, _ = pod("Pd")
    node.ctl("pod", "add", "--netns", ns1, "--namespace", "team")
    assert node.pods()["/var/run/netns/" + ns1]["state"] == "off"
    node.ctl("enable", "--namespace", "team", "--fail", "open")
    row = node.pods()["/var/run/netns/" + ns1]
    assert row["state"] == "intercepted" and row["fail"] == "open"
    ns2, _, _ = pod("Pe")
    node.ctl("pod", "add", "--netns", ns2, "--namespace", "team")
    assert node.pods()["/var/run/netns/" + ns2]["state"] == "intercepted"
    through_loom(node, ns2, S_V4)
    node.ctl("disable", "--netns", ns2)                     # opt-out
    assert node.pods()["/var/run/netns/" + ns2]["state"] == "opted-out"
    direct(node, ns2, S_V4)
    through_loom(node, ns1, S_V4)
    node.ctl("disable", "--namespace", "team")
    assert listing(ns1) == "" and listing(ns2) == ""


def test_coexists_with_iptables_and_other_tables(node, pod):
    """A pod with its own iptables-nft, iptables-legacy and nft rules: they keep
    counting and rejecting (they apply to Loom's upstream connection as they did to the
    application's), and interception works."""
    ns, _, _ = pod("Pf")
    legacy = ns_exec(ns, "iptables-legacy", "-A", "OUTPUT", "-p", "tcp", "-d", S_V4, "--dport",
                     str(REJECTED_PORT), "-j", "REJECT", "--reject-with", "tcp-reset", check=False)
    if legacy.returncode != 0:
        pytest.skip("iptables-legacy unavailable here: %s" % legacy.stderr.strip())
    ns_exec(ns, "iptables-nft", "-A", "OUTPUT", "-p", "tcp", "-d", S_V4, "--dport", str(PORT))
    ns_exec(ns, "nft", "add", "table", "inet", "mine")
    ns_exec(ns, "nft", "add", "chain", "inet", "mine", "out",
            "{ type filter hook output priority 10; policy accept; }")
    ns_exec(ns, "nft", "add", "rule", "inet", "mine", "out", "ip", "daddr", S_V4, "tcp", "dport",
            str(PORT), "counter")
    node.ctl("enable", "--netns", ns)
    through_loom(node, ns, S_V4)
    code, answer = ask(ns, S_V4, REJECTED_PORT)
    assert code == 2, "iptables-legacy REJECT no longer applies: %s" % answer
    nft_counter = re.search(r"counter packets (\d+)", ns_exec(ns, "nft", "list", "table", "inet", "mine").stdout)
    assert nft_counter and int(nft_counter.group(1)) > 0
    ipt = ns_exec(ns, "iptables-nft", "-vnL", "OUTPUT").stdout
    assert re.search(r"^\s*[1-9]\d*\s+\d+\s.*dpt:%d" % PORT, ipt, re.M), ipt
    assert "REJECT" in ns_exec(ns, "iptables-legacy", "-nL", "OUTPUT").stdout
    node.ctl("disable", "--netns", ns)
    assert "table inet mine" in ruleset(ns) and "table ip filter" in ruleset(ns)


def test_sigkill_fail_policy_and_restart(workdir, pod, figure):
    """SIGKILL: the `closed` pod refuses new connections, the `open` pod connects
    directly within 5 s (the kernel expires loomd's heartbeat). A restarted loomd
    rebuilds both tables from its saved state (one table each, nothing duplicated) and
    interception works again."""
    closed, _, _ = pod("Pg")
    opened, a4, _ = pod("Ph")
    ld = harness.Loomd(None, workdir, ["--loops", "1", "--heartbeat", "2"]).start()
    try:
        ld.ctl("enable", "--netns", closed)
        ld.ctl("enable", "--netns", opened, "--fail", "open")
        through_loom(ld, opened, S_V4)
        tables = {ns: listing(ns) for ns in (closed, opened)}
        ld.kill()
        code, answer = ask(closed, S_V4)
        assert code == 2, "fail-closed pod connected without loomd: %s" % answer
        t0 = time.monotonic()
        while True:
            code, answer = ask(opened, S_V4, timeout=1.0)
            if code == 0:
                break
            assert time.monotonic() - t0 < 5.0, "fail-open pod still refused after 5 s: %s" % answer
            time.sleep(0.1)
        took = time.monotonic() - t0
        assert answer.split()[0] == a4
        figure("fail-open bypass after SIGKILL", "%.1f s" % took)
        code, _ = ask(closed, S_V4)
        assert code == 2

        ld2 = harness.Loomd(None, workdir, ["--loops", "1", "--heartbeat", "2"], state_dir=ld.state_dir)
        ld2.start()
        try:
            for ns in (closed, opened):
                assert ruleset(ns).count("table inet loom") == 1
                assert listing(ns) == tables[ns], "restarted loomd built a different table in %s" % ns
                through_loom(ld2, ns, S_V4)
        finally:
            ld2.stop()
    finally:
        ld.stop()


def test_deleted_netns_is_released(node, pod, topo):
    ns, _, _ = pod("Pi")
    fd_links = lambda: sorted(os.readlink("/proc/%d/fd/%s" % (node.pid, f))
                              for f in os.listdir("/proc/%d/fd" % node.pid))
    links_before = fd_links()
    fds_before = harness.proc_fds(node.pid)[0]
    node.ctl("enable", "--netns", ns)
    assert harness.proc_fds(node.pid)[0] > fds_before
    # A connection in flight: the pod's listeners and its connection must all go.
    holder = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c",
                               "import socket,time\ns=socket.create_connection(('%s',%d))\n"
                               "print('up',flush=True)\ntime.sleep(30)" % (S_V4, PORT)],
                              stdout=subprocess.PIPE, text=True)
    harness._live_procs.append(holder)
    try:
        assert holder.stdout.readline().strip() == "up"
        topo.remove_pod(ns)
        deadline = time.monotonic() + 5
        while "/var/run/netns/" + ns in node.pods() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "/var/run/netns/" + ns not in node.pods(), "loomd did not notice the deleted netns"
        # Pipes may stay in the loops' pool (reused, counted in status); nothing else may.
        total, pipes, _ = harness.proc_fds(node.pid)
        assert pipes == 2 * node.status()["pipes_cached"]
        assert total - pipes == fds_before, "before %s\nafter %s\n%s" % (links_before, fd_links(),
                                                                       node.stderr_text())
        assert "network namespace deleted" in node.stderr_text()
    finally:
        harness._stop_proc(holder)


def test_ipv6_only_pod(node, pod):
    ns, a4, a6 = pod("Pj", v4=False)
    node.ctl("enable", "--netns", ns)
    assert through_loom(node, ns, S_V6) == a6
    row = node.pods()["/var/run/netns/" + ns]
    assert row["listeners"] == 2 * 2 * 2, row   # [::] and 0.0.0.0 both bind with no IPv4 address


def test_enable_100_pods(workdir, topo, figure):
    """Time to enable 1 pod and 100 pods (rules + listeners), as loomd measures each."""
    names = ["%sB%03d" % (topo.router[:-1], i) for i in range(100)]
    ld = harness.Loomd(None, workdir, ["--loops", "2"]).start()
    try:
        for ns in names:
            run("ip", "netns", "add", ns)
            harness._live_namespaces.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        for ns in names:
            ld.ctl("pod", "add", "--netns", ns, "--namespace", "bulk")
        out = json.loads(ld.ctl("enable", "--namespace", "bulk", "--json").stdout)
        assert not out.get("error"), out
        times = [p["changeMs"] for p in out["pods"]]
        assert len(times) == 100 and all(p["state"] == "intercepted" for p in out["pods"])
        ordered = sorted(times)
        figure("enable 100 pods: loomd total", "%.1f ms" % out["elapsedMs"])
        figure("enable 100 pods: per pod median", "%.2f ms" % ordered[50])
        figure("enable 100 pods: first / 100th", "%.2f / %.2f ms" % (times[0], times[-1]))
        assert ordered[50] < 50, "enabling a pod took %.1f ms (median)" % ordered[50]
        for ns in (names[0], names[57], names[-1]):
            assert "redirect to :15001" in listing(ns)
        ld.ctl("uninstall")
        for ns in names:
            assert listing(ns) == "", ns
    finally:
        ld.stop()
        for ns in names:
            harness._delete_ns(ns)


def test_uninstall_leaves_nothing(loom_manager, workdir, pod):
    """uninstall removes every Loom table and listener on the node, even ones a dead
    loomd left behind."""
    loom_manager.shutdown()
    ns1, _, _ = pod("Pk")
    ns2, _, _ = pod("Pl")
    dead = harness.Loomd(None, workdir, ["--loops", "1"]).start()
    dead.ctl("enable", "--netns", ns2)
    dead.kill()                                  # ns2 keeps an orphan table
    ld = harness.Loomd(None, workdir, ["--loops", "1"]).start()
    try:
        ld.ctl("enable", "--netns", ns1)
        out = ld.ctl("uninstall").stdout
        assert "Loom table(s) removed" in out, out
        for ns in (ns1, ns2):
            assert listing(ns) == "" and 15001 not in listening_ports(ns)
        assert ld.pods() == {}
        # And without loomd at all.
        dead2 = harness.Loomd(None, workdir, ["--loops", "1"]).start()
        dead2.ctl("enable", "--netns", ns1)
        dead2.kill()
        out = run(harness.loomctl_path(), "uninstall", "--admin-socket", dead2.admin,
                  "--state-dir", dead2.state_dir).stdout
        assert "not running" in out and listing(ns1) == ""
        assert not os.path.exists(os.path.join(dead2.state_dir, "state.json"))
    finally:
        ld.stop()


@pytest.mark.parametrize("args,message", [
    (["enable", "--netns", "loom-no-such-netns"], "no such network namespace"),
    (["enable", "--namespace", "x", "--exclude-outbound-ports", "80,http"], "'http' is not a port"),
    (["enable", "--namespace", "x", "--exclude-cidrs", "10.1.2.3/8"], "did you mean 10.0.0.0/8"),
    (["enable", "--namespace", "x", "--fail", "sometimes"], "--fail must be 'closed' or 'open'"),
    (["enable"], "needs --namespace NS or --netns"),
    (["disable", "--netns", "loom-no-such-netns"], "not known to loomd"),
])
def test_bad_input_changes_nothing(node, args, message):
    before = node.pods()
    p = node.ctl(*args, check=False)
    assert p.returncode != 0
    assert message in p.stderr, p.stderr
    assert len([l for l in p.stderr.splitlines() if l.strip()]) <= 2, p.stderr
    assert node.pods() == before


def test_conflicting_selector_and_second_loomd(node, pod, workdir):
    ns, _, _ = pod("Pm")
    node.ctl("pod", "add", "--netns", ns, "--namespace", "a")
    p = node.ctl("enable", "--netns", ns, "--namespace", "b", check=False)
    assert p.returncode != 0 and "conflicting selector" in p.stderr and "'a'" in p.stderr, p.stderr
    assert node.pods()["/var/run/netns/" + ns]["namespace"] == "a"
    assert listing(ns) == ""
    # The same netns under another name (a PID inside it) is not a second pod.
    inside = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "30"])
    harness._live_procs.append(inside)
    try:
        time.sleep(0.3)
        p = node.ctl("enable", "--netns", str(inside.pid), check=False)
        assert p.returncode != 0 and "same network namespace as pod" in p.stderr, p.stderr
    finally:
        harness._stop_proc(inside)
    second = harness.Loomd(None, workdir, ["--loops", "1"], state_dir=node.state_dir)
    with pytest.raises(AssertionError) as e:
        second.start(ready_timeout=10)
    assert "another loomd is running on this node" in str(e.value)
    second.stop()
    node.assert_alive()


def test_config_file_lists_pods(workdir, pod):
    """Pods and namespaces from --config: the enabled namespace's pod is intercepted at
    start, the opted-out one is not, a configured pod whose netns appears later is
    picked up within a couple of seconds, and so is a pod added to the file."""
    ns1, _, _ = pod("Pn")
    ns2, _, _ = pod("Po")
    later = harness.PREFIX + "Pq"
    config = os.path.join(workdir, "loom-%s.yaml" % ns1)
    with open(config, "w") as f:
        f.write("namespaces:\n  shop: {intercept: true, fail: open, excludeOutboundPorts: [%d]}\n"
                "pods:\n  - {netns: %s, namespace: shop, serviceAccount: web}\n"
                "  - {netns: %s, namespace: shop, intercept: false}\n"
                "  - {netns: %s, namespace: shop}\n" % (EXCLUDED_PORT, ns1, ns2, later))
    ld = harness.Loomd(None, workdir, ["--loops", "1", "--config", config]).start()
    try:
        rows = ld.pods()
        assert rows["/var/run/netns/" + ns1]["state"] == "intercepted"
        assert rows["/var/run/netns/" + ns1]["fail"] == "open"
        assert rows["/var/run/netns/" + ns1]["serviceAccount"] == "web"
        assert rows["/var/run/netns/" + ns2]["state"] == "opted-out"
        assert rows["/var/run/netns/" + later]["state"] == "netns-missing"
        through_loom(ld, ns1, S_V4)
        direct(ld, ns1, S_V4, EXCLUDED_PORT)
        assert listing(ns2) == ""
        pod("Pq")
        deadline = time.monotonic() + 5
        while ld.pods()["/var/run/netns/" + later]["state"] != "intercepted":
            assert time.monotonic() < deadline, ld.pods()
            time.sleep(0.2)
        # A pod added to the file while loomd runs is taken in by the file watcher.
        ns3, _, _ = pod("Pr")
        with open(config, "a") as f:
            f.write("  - {netns: %s, namespace: shop}\n" % ns3)
        deadline = time.monotonic() + 5
        while ld.pods().get("/var/run/netns/" + ns3, {}).get("state") != "intercepted":
            assert time.monotonic() < deadline, (ld.pods(), ld.stderr_text())
            time.sleep(0.2)
        through_loom(ld, ns3, S_V4)
    finally:
        ld.stop()
