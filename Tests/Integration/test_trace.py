"""Observability as users meet it: `loomctl trace` joining the kernel's decision
(NFQUEUE in the traced pod) with the proxy's record, the trace table going away with the
tracer, bad filters, slow and many tracers, Prometheus metrics after known traffic, the
access log, `loomctl top` in a terminal (tmux), and the root-only admin API. Every pod
is a netns this run creates (prefix harness.PREFIX); loomd runs in the root netns and
never changes it."""

import json
import os
import re
import select
import socket
import subprocess
import sys
import time

import pytest

import harness
from harness import S_V4, Tracer, ns_exec, run, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "peer.py")
PORT = 7200            # peer server in S
EXCLUDED_PORT = 7201   # same server; excluded from interception
CLOSED_PORT = 7209     # nothing listens: Loom's upstream connect is refused


@pytest.fixture(scope="module")
def peer_server(topo, workdir):
    server = harness.start_peer_server(topo.server, os.path.join(workdir, "trace-peer.log"), PORT, EXCLUDED_PORT)
    yield server[0]
    harness.stop_peer_server(server)


@pytest.fixture(autouse=True)
def _peer_running(peer_server):
    """Every test here talks to the peer server in S."""


def ask(ns, host, port, timeout=3.0):
    p = run("ip", "netns", "exec", ns, sys.executable, PEER, "ask", host, str(port), str(timeout),
            check=False, timeout=timeout + 10)
    return p.returncode, p.stdout.strip()


def ruleset(ns):
    # Counters move with traffic; everything else must be as before.
    return re.sub(r"counter packets \d+ bytes \d+", "counter", ns_exec(ns, "nft", "list", "ruleset").stdout)


def trace_table(ns):
    return ns_exec(ns, "nft", "list", "table", "inet", "loom_trace", check=False).stdout


def to_port(port, event=None):
    def pred(r):
        return r.get("destination", "").endswith(":%d" % port) and (event is None or r["event"] == event)
    return pred


# --------------------------------------------------------------------- tests

def test_trace_joins_kernel_verdict_and_proxy_record(node, pod, figure):
    """One traced pod; a redirected connection, an excluded-port connection and a
    refused one: three records with the kernel's verdict and the deciding rule. After
    the tracer exits, the pod's ruleset is what it was before the trace."""
    ns, a4, _ = pod("Ta")
    node.ctl("enable", "--netns", ns, "--exclude-outbound-ports", str(EXCLUDED_PORT))
    before = ruleset(ns)
    assert trace_table(ns) == ""
    tracer = Tracer(node, "--netns", ns)
    try:
        wait_for(lambda: "queue" in trace_table(ns), what="the trace table in the pod")
        t0 = time.monotonic()
        code, answer = ask(ns, S_V4, PORT)
        assert code == 0, answer
        code, answer = ask(ns, S_V4, EXCLUDED_PORT)
        assert code == 0, answer
        code, answer = ask(ns, S_V4, CLOSED_PORT)
        assert code == 2, "a refused upstream must reach the client as a reset: %s" % answer

        r = tracer.read_until(to_port(PORT, "close"))
        assert r["kernel"]["verdict"] == "redirected", r
        assert r["kernel"]["rule"] == "outbound capture" and r["kernel"]["port"] == 15001, r
        assert r["kernel"]["chain"] == "output", r
        assert r["direction"] == "outbound" and r["client"].startswith(a4 + ":"), r
        assert r["endpoint"] == "%s:%d" % (S_V4, PORT), r
        assert r["end"] == "fin" and r["bytes_in"] > 0 and r["duration_ms"] >= 0, r
        assert r["pod"] == "/var/run/netns/" + ns, r
        opened = tracer.read_until(to_port(PORT, "open"))
        assert opened["connect_ms"] >= 0 and opened["kernel"]["verdict"] == "redirected", opened

        r = tracer.read_until(to_port(EXCLUDED_PORT))
        assert r["event"] == "bypass", r
        assert r["kernel"]["verdict"] == "bypassed", r
        assert r["kernel"]["rule"] == "excluded outbound port", r
        assert "tcp dport %d" % EXCLUDED_PORT in r["kernel"]["nft"], r
        assert r["client"].startswith(a4 + ":"), r

        r = tracer.read_until(to_port(CLOSED_PORT, "close"))
        assert r["kernel"]["verdict"] == "redirected", r
        assert r["end"] == "upstream_refused", r
        figure("trace: 3 records after", "%.2f s" % (time.monotonic() - t0))
    finally:
        tracer.stop()
    wait_for(lambda: trace_table(ns) == "", what="the trace table to go")
    assert ruleset(ns) == before
    # The human format on a pipe: no colour, the verdict and rule in words.
    p = subprocess.Popen([harness.loomctl_path(), "trace", "--netns", ns, "--count", "1",
                          "--duration", "10", "--admin-socket", node.admin],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    harness._live_procs.append(p)
    try:
        wait_for(lambda: "queue" in trace_table(ns), what="the trace table (human trace)")
        ask(ns, S_V4, EXCLUDED_PORT)
        out, err = p.communicate(timeout=15)
    finally:
        harness._stop_proc(p)
    assert p.returncode == 0, err
    assert "bypassed (excluded outbound port)" in out and "\x1b[" not in out, out
    wait_for(lambda: trace_table(ns) == "", what="the trace table to go (human trace)")


def test_trace_filters_by_service_and_port(node, pod, workdir):
    ns, _, _ = pod("Tb")
    node.ctl("enable", "--netns", ns)
    tracer = Tracer(node, "--netns", ns, "--port", str(PORT))
    try:
        wait_for(lambda: "queue" in trace_table(ns), what="the trace table")
        assert ask(ns, S_V4, EXCLUDED_PORT)[0] == 0      # redirected too, but filtered out
        assert ask(ns, S_V4, PORT)[0] == 0
        tracer.read_until(to_port(PORT, "close"))
        assert not [r for r in tracer.records if r.get("destination", "").endswith(":%d" % EXCLUDED_PORT)]
    finally:
        tracer.stop()


def test_trace_bad_filters_are_errors_and_change_nothing(node, pod):
    ns, _, _ = pod("Tc")
    node.ctl("pod", "add", "--netns", ns, "--namespace", "quiet")
    before = ruleset(ns)
    cases = [
        (["--namespace", "no-such-namespace"], "namespace no-such-namespace has no pods"),
        (["--netns", "lt-no-such-pod"], "no pod with netns lt-no-such-pod"),
        (["--netns", ns], "is not intercepted: nothing to trace"),
        (["--namespace", "quiet"], "no pod of namespace quiet is intercepted"),
        (["--service", "nosuch"], "no service nosuch"),
        (["--port", "0"], "--port must be 1-65535"),
    ]
    for args, message in cases:
        p = node.ctl("trace", *args, "--duration", "2", check=False, timeout=10)
        assert p.returncode != 0, (args, p.stdout)
        assert message in p.stderr, (args, p.stderr)
        assert len(p.stderr.strip().splitlines()) <= 3, p.stderr   # argument errors add the usage
    assert ruleset(ns) == before


def test_slow_tracer_drops_and_never_blocks_the_relay(workdir, pod, figure):
    """A tracer that stops reading: connections keep flowing at full speed, the trace
    loses events (counted in metrics), and the tracer is told how many when it reads."""
    ld = harness.Loomd(None, workdir, ["--loops", "2", "--trace-buffer", "32"]).start()
    try:
        ns, _, _ = pod("Td")
        ld.ctl("enable", "--netns", ns)
        s = socket.socket(socket.AF_UNIX)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(ld.admin)
        s.sendall(("GET /v1/trace?netns=%s HTTP/1.1\r\nHost: loom\r\n\r\n" % ns).encode())
        wait_for(lambda: "queue" in trace_table(ns), what="the trace table")
        n = 300
        t0 = time.monotonic()
        p = run("ip", "netns", "exec", ns, sys.executable, PEER, "many", S_V4, str(PORT), str(n),
                timeout=120)
        took = time.monotonic() - t0
        assert p.stdout.split()[0] == str(n), "every connection must succeed: %s" % p.stdout
        figure("%d connections, stalled tracer" % n, "%.2f s" % took)
        metrics = ld.ctl("metrics").stdout
        dropped = re.search(r'loom_trace_dropped_total\{where="tracer"\} (\d+)', metrics)
        assert dropped and int(dropped.group(1)) > 0, metrics
        # The tracer reads now: it hears how many it lost.
        s.settimeout(5)
        data = b""
        while b'"event":"dropped"' not in data:
            chunk = s.recv(65536)
            assert chunk, "stream ended without a dropped record"
            data += chunk
        s.close()
        wait_for(lambda: trace_table(ns) == "", what="the trace table to go after the tracer left")
        ld.assert_alive()
    finally:
        ld.stop()


def test_many_tracers_share_the_pod_and_clean_up(node, pod):
    ns, _, _ = pod("Te")
    node.ctl("enable", "--netns", ns)
    tracers = [Tracer(node, "--netns", ns) for _ in range(12)]
    try:
        wait_for(lambda: "queue" in trace_table(ns), what="the trace table")
        assert trace_table(ns).count("queue") == 2     # one rule per chain, however many tracers
        time.sleep(0.3)
        assert ask(ns, S_V4, PORT)[0] == 0
        for t in tracers:
            r = t.read_until(to_port(PORT, "close"))
            assert r["kernel"]["verdict"] == "redirected"
        for t in tracers[:-1]:
            t.stop()
        time.sleep(0.5)
        assert "queue" in trace_table(ns), "the last tracer still needs the table"
    finally:
        for t in tracers:
            t.stop()
    wait_for(lambda: trace_table(ns) == "", what="the trace table to go")
    m = node.ctl("metrics").stdout
    assert re.search(r"^loom_tracers 0$", m, re.M), m


def test_loomd_killed_mid_trace_leaves_traffic_unaffected(workdir, pod):
    """The queue rule carries `bypass`: with nobody reading, packets pass. A restarted
    loomd removes the trace table the dead one left."""
    state = os.path.join(workdir, "trace-kill-state")
    ld = harness.Loomd(None, workdir, ["--loops", "1", "--heartbeat", "1"], state_dir=state).start()
    ns, _, _ = pod("Tf")
    ld.ctl("enable", "--netns", ns, "--fail", "open", "--exclude-outbound-ports", str(EXCLUDED_PORT))
    tracer = Tracer(ld, "--netns", ns)
    try:
        wait_for(lambda: "queue" in trace_table(ns), what="the trace table")
        ld.kill()
        assert ask(ns, S_V4, EXCLUDED_PORT)[0] == 0, "excluded traffic must pass with loomd dead mid-trace"
        time.sleep(2.5)   # heartbeat expired: fail open
        assert ask(ns, S_V4, PORT)[0] == 0, "fail-open traffic must pass with loomd dead mid-trace"
    finally:
        tracer.stop()
    ld2 = harness.Loomd(None, workdir, ["--loops", "1"], state_dir=state).start()
    try:
        assert trace_table(ns) == "", "a restarted loomd must remove the dead one's trace table"
    finally:
        ld2.ctl("uninstall")
        ld2.stop()


def parse_metrics(text):
    from prometheus_client.parser import text_string_to_metric_families
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_count_known_traffic(workdir, pod):
    """After 3 relayed connections and 1 refused by the upstream, the exposition
    (parsed by the Prometheus client library) carries exactly those counts, over the
    admin socket and over the opt-in TCP listener."""
    port = 20000 + os.getpid() % 20000
    ld = harness.Loomd(None, workdir, ["--loops", "2", "--metrics-address", "127.0.0.1:%d" % port]).start()
    try:
        ns, _, _ = pod("Tg")
        ld.ctl("enable", "--netns", ns, "--namespace", "shop")
        for _ in range(3):
            assert ask(ns, S_V4, PORT)[0] == 0
        assert ask(ns, S_V4, CLOSED_PORT)[0] == 2
        pod_labels = (("namespace", "shop"), ("pod", "/var/run/netns/" + ns))
        def sample(name, *extra):
            return m.get((name, tuple(sorted(pod_labels + extra))))
        m = {}
        def settled():
            nonlocal m
            m = parse_metrics(run("curl", "-sf", "--unix-socket", ld.admin, "http://loom/metrics").stdout)
            return sample("loom_connections_closed_total", ("reason", "upstream_refused")) == 1 and \
                sample("loom_connections_closed_total", ("reason", "fin")) == 3
        wait_for(settled, what="closed counters")
        assert sample("loom_connections_opened_total") == 4
        assert sample("loom_connections_active") == 0
        assert sample("loom_bytes_total", ("direction", "upstream_to_client")) > 0
        assert m[("loom_upstream_connect_seconds_count", ())] == 3
        assert m[("loom_routing_decisions_total", (("decision", "passthrough"),))] == 4
        assert m[("loom_rule_programming_seconds_count", ())] >= 1
        assert m[("loom_pods_intercepted", ())] == 1
        # The same over TCP on loopback; nothing else is served there.
        tcp = parse_metrics(run("curl", "-sf", "http://127.0.0.1:%d/metrics" % port).stdout)
        assert tcp[("loom_connections_opened_total", tuple(sorted(pod_labels)))] == 4
        p = run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:%d/v1/status" % port)
        assert p.stdout == "404"
    finally:
        ld.stop()


def test_access_log_one_line_per_connection(workdir, pod):
    ns, _, _ = pod("Th")
    log = os.path.join(workdir, "access-%s.log" % ns)
    config = os.path.join(workdir, "access-%s.yaml" % ns)
    with open(config, "w") as f:
        f.write("namespaces:\n  logged:\n    intercept: true\n    accessLog: true\n"
                "pods:\n  - {netns: %s, namespace: logged}\n" % ns)
    ld = harness.Loomd(None, workdir, ["--loops", "1", "--config", config, "--access-log", log]).start()
    try:
        for _ in range(2):
            assert ask(ns, S_V4, PORT)[0] == 0
        assert ask(ns, S_V4, CLOSED_PORT)[0] == 2
        def lines():
            try:
                with open(log) as f:
                    return [json.loads(l) for l in f if l.strip()]
            except FileNotFoundError:
                return []
        got = wait_for(lambda: (lambda l: l if len(l) >= 3 else None)(lines()), what="3 access-log lines")
        assert len(got) == 3, got
        assert [r["end"] for r in got].count("fin") == 2, got
        assert [r["end"] for r in got].count("upstream_refused") == 1, got
        for r in got:
            assert r["event"] == "close" and r["namespace"] == "logged", r
        assert all(r["bytes_in"] > 0 for r in got if r["end"] == "fin"), got
    finally:
        ld.stop()


def test_top_in_a_terminal(node, pod):
    """`loomctl top` in tmux: the screen shows the pod row with its traffic."""
    if subprocess.run(["which", "tmux"], capture_output=True).returncode != 0:
        pytest.skip("tmux not installed")
    ns, _, _ = pod("Ti")
    node.ctl("enable", "--netns", ns)
    session = harness.PREFIX + "top"
    run("tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "30",
        "%s top --admin-socket %s" % (harness.loomctl_path(), node.admin))
    try:
        for _ in range(20):
            assert ask(ns, S_V4, PORT)[0] == 0
        def screen():
            text = run("tmux", "capture-pane", "-p", "-t", session).stdout
            return text if ns in text and re.search(r"%s\S*\s+\d+\.\d" % re.escape(ns), text) else None
        text = wait_for(screen, timeout=6, what="loomctl top's screen")
        assert "SERVICE" in text and "POD" in text and "NEW/s" in text, text
    finally:
        run("tmux", "kill-session", "-t", session, check=False)


def test_admin_api_is_root_only(node):
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    p = run(*nobody, harness.loomctl_path(), "status", "--admin-socket", node.admin, check=False)
    assert p.returncode != 0 and "root-only" in p.stderr, p.stderr
    # Even with the socket opened up, loomd checks the peer's uid.
    dirs = [os.path.dirname(node.admin), os.path.dirname(os.path.dirname(node.admin))]
    modes = [os.stat(d).st_mode & 0o7777 for d in dirs]
    os.chmod(node.admin, 0o666)
    for d in dirs:
        os.chmod(d, 0o711)
    try:
        p = run(*nobody, harness.loomctl_path(), "status", "--admin-socket", node.admin, check=False)
        assert p.returncode != 0 and "root-only (peer uid 65534)" in p.stderr, p.stderr
        p = run(*nobody, "curl", "-s", "--unix-socket", node.admin, "http://loom/metrics", check=False)
        assert "root-only" in p.stdout, p.stdout
    finally:
        for d, mode in zip(dirs, modes):
            os.chmod(d, mode)


def test_trace_names_service_route_endpoint_and_inbound(workdir, pod, topo):
    """A service VIP with a route to another service: the record names the service, the
    route, the service it sent the connection to, and the endpoint. An inbound
    connection to an app in the pod is decided by the prerouting chain (15006)."""
    ns, a4, _ = pod("Tj")
    config = os.path.join(workdir, "trace-svc-%s.yaml" % ns)
    with open(config, "w") as f:
        f.write("""namespaces:
  shop: {intercept: true}
pods:
  - {netns: %s, namespace: shop}
services:
  - name: web
    namespace: shop
    vips: [10.96.0.50]
    ports: [{port: 80}]
    endpoints: [{address: 10.255.255.1, port: 9}]
    routes:
      - {name: all-to-b, port: 80, to: [{service: web-b}]}
  - name: web-b
    namespace: shop
    ports: [{port: 80}]
    endpoints: [{address: %s, port: %d}]
""" % (ns, S_V4, PORT))
    ld = harness.Loomd(None, workdir, ["--loops", "1", "--config", config]).start()
    app = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, PEER, "serve", "8080"],
                           stdout=subprocess.PIPE, text=True)
    harness._live_procs.append(app)
    tracer = None
    try:
        assert app.stdout.readline().strip() == "serving"
        tracer = Tracer(ld, "--namespace", "shop", "--service", "web")
        wait_for(lambda: "queue" in trace_table(ns), what="the trace table")
        code, answer = ask(ns, "10.96.0.50", 80)
        assert code == 0, answer
        r = tracer.read_until(lambda r: r["event"] == "close")
        assert r["service"] == "shop/web" and r["route"] == "all-to-b" and r["target"] == "shop/web-b", r
        assert r["endpoint"] == "%s:%d" % (S_V4, PORT) and r["destination"] == "10.96.0.50:80", r
        assert r["kernel"]["verdict"] == "redirected" and r["end"] == "fin", r
        tracer.stop()
        tracer = Tracer(ld, "--netns", ns, "--port", "8080")
        wait_for(lambda: "queue" in trace_table(ns), what="the trace table (inbound)")
        time.sleep(0.2)
        code, answer = ask(topo.server, a4, 8080)
        assert code == 0, answer
        r = tracer.read_until(lambda r: r["event"] == "close")
        assert r["direction"] == "inbound" and r["client"].startswith(S_V4 + ":"), r
        assert r["kernel"] == {"chain": "prerouting", "nft": r["kernel"]["nft"], "port": 15006,
                               "rule": "inbound capture", "verdict": "redirected"}, r
        assert r["destination"] == "%s:8080" % a4 and r["end"] == "fin", r
    finally:
        if tracer:
            tracer.stop()
        harness._stop_proc(app)
        ld.ctl("uninstall", check=False)
        ld.stop()


def test_explain_answers_from_the_pods_rules(node, pod):
    """explain --netns: redirected or bypassed and by which rule, from the table loomd
    applied, after checking it is in the pod's netns (a table deleted by hand shows)."""
    ns, a4, _ = pod("Tk")
    node.ctl("pod", "add", "--netns", ns)
    def kernel(*args):
        return json.loads(node.ctl("explain", "--netns", ns, *args, "--json").stdout)["kernel"]
    k = kernel("--to", "%s:%d" % (S_V4, EXCLUDED_PORT))
    assert k["verdict"] == "bypassed" and k["rule"] == "not intercepted" and not k["tableInKernel"], k
    node.ctl("enable", "--netns", ns, "--exclude-outbound-ports", str(EXCLUDED_PORT))
    k = kernel("--to", "%s:%d" % (S_V4, EXCLUDED_PORT))
    assert k["verdict"] == "bypassed" and k["rule"] == "excluded outbound port", k
    assert "tcp dport %d" % EXCLUDED_PORT in k["nft"] and k["tableInKernel"], k
    k = kernel("--to", "%s:%d" % (S_V4, PORT))
    assert k["verdict"] == "redirected" and k["port"] == 15001 and k["rule"] == "outbound capture", k
    k = kernel("--to", "127.0.0.1:%d" % PORT)
    assert k["verdict"] == "bypassed" and k["rule"] == "loopback", k
    k = kernel("--to", "%s:8080" % a4, "--inbound")
    assert k["verdict"] == "redirected" and k["port"] == 15006 and k["chain"] == "prerouting", k
    out = node.ctl("explain", "--netns", ns, "--to", "%s:%d" % (S_V4, EXCLUDED_PORT)).stdout
    assert 'bypassed by rule "excluded outbound port"' in out, out
    # Someone deletes Loom's table by hand: explain says so instead of trusting its plan.
    ns_exec(ns, "nft", "delete", "table", "inet", "loom")
    k = kernel("--to", "%s:%d" % (S_V4, PORT))
    assert k["verdict"] == "bypassed" and not k["tableInKernel"] and "removed by hand" in k["note"], k
