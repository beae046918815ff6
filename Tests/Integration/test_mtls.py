"""Transparent mutual TLS between two Loom "nodes": two loomd processes, each owning one
pod, with one mesh CA (`loomctl ca init`). The client pod's plaintext connection to a
service VIP is redirected to its node's loomd, which opens an mTLS tunnel to the server
pod's tunnel port (15008); the server pod's loomd verifies the client's certificate,
reads the tunnel header, applies the authorization policy and connects to the
application. Real OpenSSL on both ends, real captures between the nodes (tcpdump in the
router netns), real bad certificates (another CA, expired, wrong identity). Every pod is
a netns this run creates (prefix harness.PREFIX); loomd runs in the root netns and never
changes it."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

import harness
from harness import Tracer, ns_exec, run, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "peer.py")
PROBE = os.path.join(HERE, "tunnelprobe.py")
TD = "cluster.local"
CLIENT_ID = "spiffe://%s/ns/front/sa/client" % TD
SERVER_ID = "spiffe://%s/ns/shop/sa/web" % TD
ASK_PORT, SINK_PORT, SLOW_PORT, TRICKLE_PORT = 7600, 7601, 7602, 7603
TRICKLE, TRICKLE_RATE = 64 << 20, 4 << 20     # 16 s: long enough to span a rotation
VIP_WEB, VIP_BULK, VIP_PLAIN, VIP_WRONG = "10.96.50.10", "10.96.50.11", "10.96.50.12", "10.96.50.13"
BIG = 256 << 20
MARKER = "LOOM-PLAINTEXT-MARKER-4c4f"


def node_a_config(pod_a, b_ip):
    ep = lambda port, ident=SERVER_ID: "{address: %s, port: %d, identity: %s}" % (b_ip, port, ident)
    return """
namespaces:
  front: {intercept: true}
  shop: {intercept: false}
pods:
  - {netns: %s, namespace: front, serviceAccount: client}
services:
  - {name: web, namespace: shop, vips: [%s], ports: [{port: 80}], endpoints: [%s]}
  - name: bulk
    namespace: shop
    vips: [%s]
    ports: [{port: 80, targetPort: %d}, {port: 81, targetPort: %d}, {port: 82, targetPort: %d}]
    endpoints: [{address: %s, identity: %s}]
  - name: plain
    namespace: shop
    vips: [%s]
    ports: [{port: 80, targetPort: %d}, {port: 81, targetPort: %d}]
    endpoints: [{address: %s, identity: %s}]
    policy: {mtls: false}
  - {name: wrongid, namespace: shop, vips: [%s], ports: [{port: 80}], endpoints: [%s]}
""" % (pod_a, VIP_WEB, ep(ASK_PORT), VIP_BULK, SINK_PORT, SLOW_PORT, TRICKLE_PORT, b_ip, SERVER_ID,
       VIP_PLAIN, ASK_PORT, SINK_PORT, b_ip, SERVER_ID, VIP_WRONG, ep(ASK_PORT, "spiffe://%s/ns/shop/sa/other" % TD))


def node_b_config(pod_b, mode="permissive", policies=""):
    return """
namespaces:
  shop: {intercept: true, mtls: %s}
  front: {intercept: false}
  tools: {intercept: false}
pods:
  - {netns: %s, namespace: shop, serviceAccount: web}
%s
""" % (mode, pod_b, policies)


class Mesh:
    def __init__(self, topo, workdir):
        self.topo, self.workdir = topo, workdir
        self.a_ns, self.a_ip, _ = topo.add_pod("MA", 40)
        self.b_ns, self.b_ip, _ = topo.add_pod("MB", 41)
        self.x_ns, self.x_ip, _ = topo.add_pod("MX", 42)   # no loomd: a stranger
        self.dir = os.path.join(workdir, "mtls")
        os.makedirs(self.dir, exist_ok=True)
        self.ca = os.path.join(self.dir, "ca")
        run(harness.loomctl_path(), "ca", "init", "--dir", self.ca, "--trust-domain", TD)
        self.a_conf = os.path.join(self.dir, "a.yaml")
        self.b_conf = os.path.join(self.dir, "b.yaml")
        self.servers = []
        self.sha = {}
        self.a = self.b = None

    def start(self, a_args=(), b_args=(), mode="permissive"):
        with open(self.a_conf, "w") as f:
            f.write(node_a_config("/var/run/netns/" + self.a_ns, self.b_ip))
        self.write_b(mode)
        self.a = harness.Loomd(None, self.workdir, ["--config", self.a_conf, "--ca-dir", self.ca, "--loops", "1",
                                                      *a_args]).start()
        self.b = harness.Loomd(None, self.workdir, ["--config", self.b_conf, "--ca-dir", self.ca, "--loops", "1",
                                                      "--handshake-timeout", "2", *b_args]).start()
        for ld, ns in ((self.a, self.a_ns), (self.b, self.b_ns)):
            wait_for(lambda: ld.pods()["/var/run/netns/" + ns]["state"] == "intercepted", 10,
                     "pod %s intercepted" % ns)

    def write_b(self, mode="permissive", policies=""):
        with open(self.b_conf, "w") as f:
            f.write(node_b_config("/var/run/netns/" + self.b_ns, mode, policies))

    def reload_b(self, mode="permissive", policies=""):
        self.write_b(mode, policies)
        self.b.ctl("reload")

    def stop(self):
        for ld in (self.a, self.b):
            if ld is not None:
                ld.stop()
        self.a = self.b = None

    def serve(self):
        log = open(os.path.join(self.dir, "servers.log"), "a")
        for args in (["serve", str(ASK_PORT)], ["sink", str(SINK_PORT)],
                     ["slowserve", str(SLOW_PORT), str(BIG), "1e12"],
                     ["slowserve", str(TRICKLE_PORT), str(TRICKLE), str(TRICKLE_RATE)]):
            p = subprocess.Popen(["ip", "netns", "exec", self.b_ns, sys.executable, PEER, *args],
                                 stdout=subprocess.PIPE, stderr=log, text=True)
            harness._live_procs.append(p)
            self.servers.append(p)
            line = p.stdout.readline().split()
            if not line or line[0] != "serving":
                log.flush()
                raise AssertionError("peer.py %s did not start:\n%s" % (
                    " ".join(args), open(os.path.join(self.dir, "servers.log")).read()[-2000:]))
            if args[0] == "slowserve":
                self.sha[int(args[1])] = line[1]

    def close(self):
        self.stop()
        for p in self.servers:
            harness._stop_proc(p)

    def ask(self, host, port=80, ns=None, timeout=5.0):
        p = run("ip", "netns", "exec", ns or self.a_ns, sys.executable, PEER, "ask", host, str(port),
                str(timeout), check=False, timeout=timeout + 10)
        return p.returncode, p.stdout.strip()

    def probe(self, *args, ns=None, timeout=60):
        p = run("ip", "netns", "exec", ns or self.x_ns, sys.executable, PROBE, *args, check=False,
                timeout=timeout)
        return p.returncode, p.stdout.strip()

    def issue(self, name, identity, valid="1h", ca=None):
        prefix = os.path.join(self.dir, name)
        run(harness.loomctl_path(), "ca", "issue", "--dir", ca or self.ca, "--identity", identity,
            "--out", prefix, "--valid", valid)
        return prefix + ".crt", prefix + ".key"


@pytest.fixture(scope="module")
def mesh(topo, workdir):
    m = Mesh(topo, workdir)
    try:
        m.serve()
        m.start()
        yield m
    finally:
        m.close()
        for ns in (m.a_ns, m.b_ns, m.x_ns):
            topo.remove_pod(ns)


def close_record(tracer, pred, timeout=10):
    return tracer.read_until(lambda r: r["event"] == "close" and pred(r), timeout)


# --------------------------------------------------------------------- tests


def test_mtls_between_two_nodes_shows_both_identities(mesh):
    """App -> Loom A -> mTLS -> Loom B -> app: the answer arrives, and both traces show
    the tunnel with the identity each side verified."""
    ta = Tracer(mesh.a, "--namespace", "front")
    tb = Tracer(mesh.b, "--namespace", "shop")
    try:
        time.sleep(0.5)
        code, out = mesh.ask(VIP_WEB)
        assert code == 0, out
        # The app sees Loom B's connection from inside its own pod.
        assert out.split()[0] == mesh.b_ip, out
        ra = close_record(ta, lambda r: r.get("destination") == VIP_WEB + ":80")
        assert ra["tls"] == "mtls" and ra["end"] == "fin", ra
        assert ra["mtls"]["role"] == "client" and ra["mtls"]["local"] == CLIENT_ID, ra
        assert ra["mtls"]["peer"] == SERVER_ID and ra["mtls"]["version"] == "TLSv1.3", ra
        assert ra["mtls"]["data_path"] == "user", ra      # no kTLS on this kernel
        assert ra["endpoint"] == "%s:%d" % (mesh.b_ip, ASK_PORT), ra
        rb = close_record(tb, lambda r: r.get("destination") == "%s:%d" % (mesh.b_ip, ASK_PORT))
        assert rb["tls"] == "mtls" and rb["end"] == "fin", rb
        assert rb["mtls"]["role"] == "server" and rb["mtls"]["local"] == SERVER_ID, rb
        assert rb["mtls"]["peer"] == CLIENT_ID, rb
        # The original client, carried in the tunnel header.
        assert rb["client"].split(":")[0] == mesh.a_ip, rb
        # The next connection resumes the session (a ticket from the first one), and the
        # identities are still the verified ones.
        assert mesh.ask(VIP_WEB)[0] == 0
        ra2 = close_record(ta, lambda r: r.get("destination") == VIP_WEB + ":80" and r["client"] != ra["client"])
        assert ra2["mtls"]["resumed"] is True and ra2["mtls"]["peer"] == SERVER_ID, ra2
        rb2 = close_record(tb, lambda r: r.get("tls") == "mtls" and r["client"] == ra2["client"])
        assert rb2["mtls"]["resumed"] is True and rb2["mtls"]["peer"] == CLIENT_ID, rb2
    finally:
        ta.stop()
        tb.stop()
    st = json.loads(mesh.b.ctl("status", "--json").stdout)
    assert st["mtls"]["trust_domain"] == TD and st["mtls"]["handshakes_server"] >= 2, st["mtls"]
    assert st["mtls"]["handshakes_resumed"] >= 1, st["mtls"]
    metrics = mesh.b.ctl("metrics").stdout
    assert 'loom_tls_handshakes_total{role="server"}' in metrics and "loom_tls_handshakes_resumed_total" in metrics
    pod = st["pods"][0]
    assert pod["identity"] == SERVER_ID and pod["certificateSerial"], pod
    human = mesh.b.ctl("status").stdout
    assert SERVER_ID in human and "trust domain cluster.local" in human, human


def capture(mesh, what):
    """tcpdump on the router's link to node B's pod while `what()` runs; returns the raw
    capture bytes and tcpdump's summary lines."""
    capture.count = getattr(capture, "count", 0) + 1
    path = os.path.join(mesh.dir, "cap%d.pcap" % capture.count)
    dev = "to41"
    # -Z root: tcpdump would otherwise drop to its own user and fail to write here.
    p = subprocess.Popen(["ip", "netns", "exec", mesh.topo.router, "tcpdump", "--immediate-mode", "-Z", "root", "-i", dev, "-s", "0",
                          "-U", "-w", path, "-c", "40000", "tcp"], stdout=subprocess.DEVNULL,
                         stderr=open(path + ".log", "w"))
    harness._live_procs.append(p)
    time.sleep(1.0)
    try:
        try:
            result = what()
        except RuntimeError as e:
            raise AssertionError("%s\nloomd A:\n%s\nloomd B:\n%s" % (e, mesh.a.stderr_text()[-1500:],
                                                                  mesh.b.stderr_text()[-1500:])) from None
        time.sleep(0.5)
    finally:
        harness._stop_proc(p, wait=5)
    with open(path, "rb") as f:
        raw = f.read()
    summary = run("tcpdump", "-nn", "-r", path, check=False).stdout
    return result, raw, summary


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")
def test_256mib_each_way_sha_equal_and_no_plaintext_between_nodes(mesh, figure):
    """256 MiB up (with half-close and the answer after it) and 256 MiB down through the
    tunnel; SHA-256 equal both ways. A capture between the nodes has TLS to 15008 and
    none of the application's bytes; the same capture method on the plaintext service
    does see them (so the check can fail)."""
    def transfers():
        t0 = time.monotonic()
        up = run("ip", "netns", "exec", mesh.a_ns, sys.executable, PEER, "push", VIP_BULK, "80", str(BIG),
                 timeout=180).stdout.split("\n")
        t1 = time.monotonic()
        down = run("ip", "netns", "exec", mesh.a_ns, sys.executable, PEER, "fetch", VIP_BULK, "81",
                   timeout=180).stdout.split()
        t2 = time.monotonic()
        marker = run("ip", "netns", "exec", mesh.a_ns, sys.executable, "-c",
                     "import socket;s=socket.create_connection(('%s',80));s.sendall(b'%s'*64);"
                     "s.shutdown(socket.SHUT_WR);print(s.recv(100).decode().strip())" % (VIP_BULK, MARKER),
                     timeout=30).stdout
        return up, down, marker, t1 - t0, t2 - t1

    (up, down, _, up_s, down_s), raw, summary = capture(mesh, transfers)
    server_said, client_had = up[0].split(), up[1].split()
    assert server_said == client_had, up
    assert down[0] == str(BIG) and down[1] == mesh.sha[SLOW_PORT], down
    figure("mtls 256 MiB up MB/s", "%.0f" % (BIG / up_s / 1e6))
    figure("mtls 256 MiB down MB/s", "%.0f" % (BIG / down_s / 1e6))
    assert ".15008" in summary, summary[:2000]
    assert MARKER.encode() not in raw
    head = __import__("random").Random(1234).randbytes(4096)   # payload()'s first bytes
    assert head[:64] not in raw and head[1024:1088] not in raw
    # Control: the plaintext service through the same capture shows the marker.
    out, raw_plain, summary_plain = capture(mesh, lambda: run(
        "ip", "netns", "exec", mesh.a_ns, sys.executable, "-c",
        "import socket;s=socket.create_connection(('%s',81));s.sendall(b'%s');s.shutdown(socket.SHUT_WR);"
        "print(s.recv(100))" % (VIP_PLAIN, MARKER), timeout=30))
    assert MARKER.encode() in raw_plain, (out.stdout, summary_plain[:3000], open(os.path.join(mesh.dir, "cap2.pcap.log")).read())


def test_strict_refuses_plaintext_and_permissive_accepts_it(mesh):
    tb = Tracer(mesh.b, "--namespace", "shop")
    try:
        time.sleep(0.3)
        assert mesh.ask(VIP_PLAIN)[0] == 0          # permissive: plaintext accepted
        mesh.reload_b("strict")
        time.sleep(0.3)
        code, out = mesh.ask(VIP_PLAIN)
        assert code != 0, out
        r = close_record(tb, lambda r: r.get("end") == "denied_plaintext")
        assert "STRICT" in r["detail"], r
        code, out = mesh.ask(VIP_WEB)             # mTLS still fine under STRICT
        assert code == 0, out
    finally:
        tb.stop()
        mesh.reload_b("permissive")
    assert mesh.ask(VIP_PLAIN)[0] == 0


def test_bad_certificates_are_refused_with_the_reason_in_the_trace(mesh):
    other_ca = os.path.join(mesh.dir, "other-ca")
    if not os.path.exists(other_ca):
        run(harness.loomctl_path(), "ca", "init", "--dir", other_ca, "--trust-domain", TD)
    ca_crt = os.path.join(mesh.ca, "ca.crt")
    good = mesh.issue("debug", "spiffe://%s/ns/tools/sa/debug" % TD)
    foreign = mesh.issue("foreign", "spiffe://%s/ns/tools/sa/debug" % TD, ca=other_ca)
    expired = mesh.issue("expired", "spiffe://%s/ns/tools/sa/debug" % TD, valid="-1h")
    dst = (mesh.b_ip, str(ASK_PORT))
    tb = Tracer(mesh.b, "--namespace", "shop")
    try:
        time.sleep(0.3)
        # A good certificate from a non-Loom client (Python's OpenSSL) gets through.
        code, out = mesh.probe("mtls", mesh.b_ip, "15008", ca_crt, *good, *dst)
        assert code == 0 and out.startswith("handshake ok " + SERVER_ID), out
        r = close_record(tb, lambda r: r.get("tls") == "mtls" and r["mtls"].get("peer") == "spiffe://%s/ns/tools/sa/debug" % TD)
        assert r["end"] == "fin" and r["bytes_in"] > 0, r
        for name, cert, why in (("another CA", foreign, "unable to get local issuer certificate"),
                                ("expired", expired, "certificate has expired")):
            code, out = mesh.probe("mtls", mesh.b_ip, "15008", ca_crt, *cert)
            assert code != 0 and "handshake failed" in out, (name, out)
            r = close_record(tb, lambda r: r.get("end") == "tls_handshake_failed" and why in (r.get("detail") or ""))
            assert "peer" not in r["mtls"] and r["mtls"]["role"] == "server", r
        # A header naming another pod is refused: the tunnel is not an open relay.
        code, out = mesh.probe("mtls", mesh.b_ip, "15008", ca_crt, *good, mesh.x_ip, str(ASK_PORT))
        assert code != 0, out
        close_record(tb, lambda r: r.get("end") == "tunnel_header_invalid" and "not this pod" in r["detail"])
    finally:
        tb.stop()
    # A server with the wrong identity: Loom A refuses to talk to it.
    ta = Tracer(mesh.a, "--namespace", "front")
    try:
        time.sleep(0.3)
        code, out = mesh.ask(VIP_WRONG)
        assert code != 0, out
        r = close_record(ta, lambda r: r.get("end") == "tls_identity_mismatch")
        assert SERVER_ID in r["detail"] and "sa/other" in r["detail"], r
    finally:
        ta.stop()


def test_revoked_policy_refuses_new_connections(mesh):
    deny = "policies:\n  - {name: no-front, namespace: shop, action: deny, from: {namespaces: [front]}}\n"
    tb = Tracer(mesh.b, "--namespace", "shop")
    try:
        time.sleep(0.3)
        assert mesh.ask(VIP_WEB)[0] == 0
        mesh.reload_b("permissive", deny)
        time.sleep(0.3)
        code, out = mesh.ask(VIP_WEB)
        assert code != 0, out
        r = close_record(tb, lambda r: r.get("end") == "denied_policy")
        assert "no-front" in r["detail"] and r["mtls"]["peer"] == CLIENT_ID, r
        allow_tools = ("policies:\n  - {name: only-tools, namespace: shop, action: allow, "
                       "from: {namespaces: [tools]}, to: {ports: [%d]}}\n" % ASK_PORT)
        mesh.reload_b("permissive", allow_tools)
        time.sleep(0.3)
        assert mesh.ask(VIP_WEB)[0] != 0
        r = close_record(tb, lambda r: r.get("end") == "denied_policy" and "no allow policy" in r["detail"])
        assert r["mtls"]["peer"] == CLIENT_ID, r
    finally:
        tb.stop()
        mesh.reload_b("permissive")
    assert mesh.ask(VIP_WEB)[0] == 0


def test_garbage_truncated_and_slowloris_on_the_tunnel_port(mesh, figure):
    """Closed within the handshake timeout (2 s here); loomd keeps no fd or buffer."""
    base_fds = len(mesh.b.fds())
    code, out = mesh.probe("garbage", mesh.b_ip, "15008")
    how, took = out.split()
    assert how in ("closed", "reset") and float(took) < 1.0, out
    code, out = mesh.probe("truncated", mesh.b_ip, "15008")
    how, took = out.split()
    assert how in ("closed", "reset") and 1.5 <= float(took) < 4.0, out
    code, out = mesh.probe("slowloris", mesh.b_ip, "15008", "200")
    closed, last = out.split()[:2]
    assert int(closed) == 200 and float(last) < 5.0, out
    figure("slowloris 200 closed within s", last)
    wait_for(lambda: len(mesh.b.fds()) <= base_fds + 2, 5, "fds back to the baseline")
    st = json.loads(mesh.b.ctl("status", "--json").stdout)
    assert st["mtls"]["copy_buffers"] == 0 and st["connections"]["active"] == 0, st
    mesh.b.assert_alive()
    assert mesh.ask(VIP_WEB)[0] == 0


def test_rotation_during_a_long_transfer(mesh, topo, workdir):
    """Certificates living 20 s rotate after 10 s: a transfer that runs across the
    rotation completes with its SHA; new connections use the new certificate."""
    mesh.stop()
    mesh.start(a_args=["--cert-ttl", "20s"], b_args=["--cert-ttl", "20s"])
    try:
        serial = lambda ld: ld.pods()[next(iter(ld.pods()))]["certificateSerial"]
        a0, b0 = serial(mesh.a), serial(mesh.b)
        fetch = subprocess.Popen(["ip", "netns", "exec", mesh.a_ns, sys.executable, PEER, "fetch", VIP_BULK, "82"],
                                 stdout=subprocess.PIPE, text=True)
        harness._live_procs.append(fetch)
        wait_for(lambda: serial(mesh.a) != a0 and serial(mesh.b) != b0, 25, "both certificates rotated")
        assert fetch.poll() is None, "the transfer ended before the rotation"
        ta = Tracer(mesh.a, "--namespace", "front")
        try:
            time.sleep(0.3)
            assert mesh.ask(VIP_WEB)[0] == 0
            r = close_record(ta, lambda r: r.get("destination") == VIP_WEB + ":80")
            assert r["mtls"]["serial"] == serial(mesh.a), r
        finally:
            ta.stop()
        out = fetch.communicate(timeout=120)[0].split()
        assert out[0] == str(TRICKLE) and out[1] == mesh.sha[TRICKLE_PORT], out
    finally:
        mesh.stop()
        mesh.start()


def test_takeover_keeps_the_tunnel_port_answering(mesh, workdir):
    """A hitless upgrade of the server's node: the new loomd adopts the tunnel listeners
    (and issues its own certificates); mTLS connections made across it all succeed."""
    old = mesh.b
    load = subprocess.Popen(["ip", "netns", "exec", mesh.a_ns, sys.executable, PEER, "many", VIP_WEB, "80", "300",
                             "100"], stdout=subprocess.PIPE, text=True)
    harness._live_procs.append(load)
    time.sleep(1.0)
    new = harness.Loomd(None, workdir, old.args + ["--takeover"], state_dir=old.state_dir)
    new.admin = old.admin
    new.start()
    mesh.b = new
    answered, _ = load.communicate(timeout=60)[0].split()
    assert int(answered) == 300, answered
    rc, _ = old.stop(timeout=15)
    assert rc == 0, old.stderr_text()
    pod = new.pods()["/var/run/netns/" + mesh.b_ns]
    assert pod["identity"] == SERVER_ID and pod["certificateSerial"], pod
    listening = ns_exec(mesh.b_ns, "ss", "-Hltn").stdout
    assert ":15008" in listening, listening
    assert mesh.ask(VIP_WEB)[0] == 0


def test_bad_ca_and_policy_input_is_refused_at_load(mesh, workdir, topo):
    """Each a one-line error before anything is applied (the pod gets no table)."""
    pod, _, _ = topo.add_pod("MZ", 43, v6=False)
    try:
        conf = os.path.join(mesh.dir, "z.yaml")
        with open(conf, "w") as f:
            f.write("namespaces:\n  z: {intercept: true}\npods:\n  - {netns: /var/run/netns/%s, namespace: z}\n" % pod)
        def fresh(name):
            bad = os.path.join(mesh.dir, name)
            shutil.rmtree(bad, ignore_errors=True)
            run(harness.loomctl_path(), "ca", "init", "--dir", bad)
            return bad

        other = os.path.join(mesh.dir, "other-ca2")
        if not os.path.exists(other):
            run(harness.loomctl_path(), "ca", "init", "--dir", other)
        cases = []
        d = fresh("bad-key-mode")
        os.chmod(os.path.join(d, "ca.key"), 0o644)
        cases.append((["--ca-dir", d], "0644"))
        d = fresh("bad-dir-mode")
        os.chmod(d, 0o777)
        cases.append((["--ca-dir", d], "writable"))
        cases.append((["--ca-cert", os.path.join(mesh.ca, "ca.crt"), "--ca-key", os.path.join(other, "ca.key")],
                      "does not match"))
        cases.append((["--ca-dir", os.path.join(mesh.dir, "missing")], "missing"))
        for args, needle in cases:
            ld = harness.Loomd(None, workdir, ["--config", conf, *args])
            with pytest.raises(AssertionError) as e:
                ld.start(ready_timeout=10)
            assert needle in str(e.value), (args, str(e.value)[-800:])
            assert "loom" not in ns_exec(pod, "nft", "list", "tables").stdout
        with open(conf, "a") as f:
            f.write("policies:\n  - {name: p, namespace: nowhere, action: deny}\n")
        ld = harness.Loomd(None, workdir, ["--config", conf, "--ca-dir", mesh.ca])
        with pytest.raises(AssertionError) as e:
            ld.start(ready_timeout=10)
        assert "unknown namespace 'nowhere'" in str(e.value), str(e.value)[-800:]
        assert "loom" not in ns_exec(pod, "nft", "list", "tables").stdout
    finally:
        topo.remove_pod(pod)
