"""Mesh routing with real servers in separate pods: a virtual IP spread over endpoints
(round robin, weights), HTTP Host/path routes, TLS SNI routes (passthrough: the client
sees the backend's own certificate), an endpoint killed under load, a reload under load,
an invalid file refused, and first-byte peeking that never stalls (server-speaks-first
ports and silent clients). Every pod is a netns this run creates on the shared router."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import harness
from harness import run

HERE = os.path.dirname(os.path.abspath(__file__))
BACKEND = os.path.join(HERE, "backend.py")
CLIENT = os.path.join(HERE, "meshclient.py")
VIP = "10.96.0.10"
VIP6 = "fd96::10"


class Backends:
    """Servers in pods; stopped (by PID) at the end."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = {}

    def start(self, ns, mode, port, name, *extra):
        p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, BACKEND, mode, str(port), name]
                             + list(extra), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        harness._live_procs.append(p)
        assert p.stdout.readline().strip() == "ready", "backend %s did not start" % name
        self.procs[name] = p
        return p

    def stop(self, name, sig=signal.SIGTERM):
        p = self.procs.pop(name)
        harness._stop_proc(p, sig=sig)

    def close(self):
        for name in list(self.procs):
            self.stop(name)


@pytest.fixture
def backends(workdir):
    b = Backends(workdir)
    yield b
    b.close()


def client(ns, *args, timeout=120):
    p = run("ip", "netns", "exec", ns, sys.executable, CLIENT, *[str(a) for a in args], timeout=timeout)
    return json.loads(p.stdout)


def write_config(path, services, namespaces=None):
    """YAML is a superset of JSON: the test writes JSON."""
    doc = {"services": services}
    if namespaces:
        doc["namespaces"] = namespaces
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)


def mesh_node(workdir, config, pods=(), loops=2):
    ld = harness.Loomd(None, workdir, ["--loops", str(loops), "--config", config]).start()
    for ns in pods:
        ld.ctl("enable", "--netns", ns, "--namespace", "shop")
    return ld


# A probe run in a pod: connect (optionally send bytes), print the first word the server
# says, "closed" on a clean close, or "reset" if the connection is refused or reset at
# any point (Loom refuses right after accept, so the reset may race the connect).
PROBE = (
    "import socket,sys\n"
    "try:\n"
    "    s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=5)\n"
    "    if len(sys.argv)>3: s.sendall(sys.argv[3].encode().decode('unicode_escape').encode('latin-1'))\n"
    "    print((s.recv(100).decode().split() or ['closed'])[0])\n"
    "except (ConnectionResetError, ConnectionRefusedError): print('reset')\n"
)


def probe(ns, host, port, send=None):
    args = [host, str(port)] + ([send] if send is not None else [])
    return run("ip", "netns", "exec", ns, sys.executable, "-c", PROBE, *args).stdout.strip()


def endpoint(addr, port=8080, weight=1):
    return {"address": addr, "port": port, "weight": weight}


def within(count, expected, fraction):
    return abs(count - expected) <= expected * fraction


# --------------------------------------------------------------------- tests

def test_round_robin_and_weighted_split(workdir, pod, backends, figure):
    """A VIP with 3 endpoints: 3,000 connections land within 5% of even (v4 VIP), and a
    route's 90/10 split lands within 3 points."""
    c, _, _ = pod("Ma")
    eps = []
    for i in range(3):
        ns, a4, _ = pod("Me%d" % i)
        backends.start(ns, "http", 8080, "e%d" % i)
        eps.append(a4)
    config = os.path.join(workdir, "mesh-rr.yaml")
    write_config(config, [
        {"name": "web", "namespace": "shop", "vips": [VIP], "ports": [{"port": 80, "protocol": "http"}],
         "endpoints": [endpoint(a) for a in eps]},
        {"name": "split", "namespace": "shop", "vips": ["10.96.0.11"], "ports": [{"port": 80, "protocol": "tcp"}],
         "routes": [{"name": "ninety-ten", "port": 80,
                     "to": [{"service": "v1", "weight": 90}, {"service": "v2", "weight": 10}]}]},
        {"name": "v1", "namespace": "shop", "ports": [{"port": 80, "targetPort": 8080}],
         "endpoints": [endpoint(eps[0])]},
        {"name": "v2", "namespace": "shop", "ports": [{"port": 80, "targetPort": 8080}],
         "endpoints": [endpoint(eps[1])]},
    ])
    ld = mesh_node(workdir, config, [c])
    try:
        mesh = ld.status()["raw"]["mesh"]
        assert mesh["services"] == 4 and mesh["source"] == config, mesh
        assert "4 service(s)" in ld.ctl("status").stdout
        out = client(c, "http", VIP, 80, 3000)
        assert out["error_count"] == 0, out
        counts = out["counts"]
        figure("round robin 3000 over 3", json.dumps(counts, sort_keys=True))
        assert sorted(counts) == ["e0", "e1", "e2"], counts
        assert all(within(n, 1000, 0.05) for n in counts.values()), counts
        out = client(c, "http", "10.96.0.11", 80, 1000)
        assert out["error_count"] == 0, out
        share = 100.0 * out["counts"].get("e0", 0) / 1000
        figure("90/10 split, share of v1", "%.1f%%" % share)
        assert abs(share - 90) <= 3, out
    finally:
        ld.stop()


def test_http_routes_and_tls_sni_routes(workdir, pod, backends):
    c, _, _ = pod("Mb")
    v1, v1a, _ = pod("Mv1")
    v2, v2a, _ = pod("Mv2")
    backends.start(v1, "http", 8080, "v1")
    backends.start(v2, "http", 8080, "v2")
    certs = {}
    for name, ns in (("a", v1), ("b", v2)):
        cert, key = os.path.join(workdir, "%s.crt" % name), os.path.join(workdir, "%s.key" % name)
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
            "/CN=%s.example" % name, "-keyout", key, "-out", cert)
        backends.start(ns, "tls", 8443, "tls-" + name, cert, key)
        certs[name] = cert
    config = os.path.join(workdir, "mesh-l7.yaml")
    write_config(config, [
        {"name": "web", "namespace": "shop", "vips": [VIP, VIP6],
         "ports": [{"port": 80, "protocol": "http"}, {"port": 443, "protocol": "tls"}],
         "endpoints": [endpoint(v1a)],
         "routes": [
             {"name": "beta-header", "port": 80, "match": {"headers": {"x-beta": "1"}}, "to": [{"service": "web-v2"}]},
             {"name": "v2-path", "port": 80, "match": {"host": "shop.example", "pathPrefix": "/v2"},
              "to": [{"service": "web-v2"}]},
             {"name": "sni-a", "port": 443, "match": {"sni": "a.example"}, "to": [{"service": "tls-a"}]},
             {"name": "sni-b", "port": 443, "match": {"sni": "*.b.example"}, "to": [{"service": "tls-b"}]},
         ]},
        {"name": "web-v2", "namespace": "shop", "ports": [{"port": 80, "targetPort": 8080}],
         "endpoints": [endpoint(v2a)]},
        {"name": "tls-a", "namespace": "shop", "ports": [{"port": 443, "targetPort": 8443}],
         "endpoints": [endpoint(v1a, 8443)]},
        {"name": "tls-b", "namespace": "shop", "ports": [{"port": 443, "targetPort": 8443}],
         "endpoints": [endpoint(v2a, 8443)]},
    ])
    ld = mesh_node(workdir, config, [c])
    try:
        assert client(c, "http", VIP, 80, 5, "--host", "shop.example", "--path", "/v2/cart")["counts"] == {"v2": 5}
        assert client(c, "http", VIP, 80, 5, "--host", "shop.example", "--path", "/v1/cart")["counts"] == {"v1": 5}
        assert client(c, "http", VIP, 80, 5, "--host", "other.example", "--path", "/v2")["counts"] == {"v1": 5}
        assert client(c, "http", VIP, 80, 5, "--header", "x-beta:1")["counts"] == {"v2": 5}
        assert client(c, "http", VIP6, 80, 5, "--host", "shop.example", "--path", "/v2")["counts"] == {"v2": 5}
        a = client(c, "tls", VIP, 443, 5, "a.example")
        b = client(c, "tls", VIP, 443, 5, "x.b.example")
        assert a["counts"] == {"tls-a": 5} and b["counts"] == {"tls-b": 5}, (a, b)
        # Passthrough: the client saw each backend's own certificate (one each).
        assert a["certs"] == 1 and b["certs"] == 1
        explain = ld.ctl("explain", "--netns", c, "--to", "%s:443" % VIP, "--sni", "x.b.example").stdout
        assert "sni-b" in explain and "tls-b" in explain, explain
    finally:
        ld.stop()


def test_endpoint_killed_under_load_is_ejected(workdir, pod, backends, figure):
    """wrk through Loom while one of three endpoints dies: once it is ejected the client
    sees no errors (connect failures are retried on another endpoint before the client
    notices: 300 new connections, then wrk), and the endpoint takes traffic again after
    it comes back."""
    c, _, _ = pod("Mc")
    eps = []
    for i in range(3):
        ns, a4, _ = pod("Mk%d" % i)
        backends.start(ns, "http", 8080, "k%d" % i)
        eps.append((ns, a4))
    config = os.path.join(workdir, "mesh-kill.yaml")
    write_config(config, [
        {"name": "web", "namespace": "shop", "vips": [VIP], "ports": [{"port": 80, "protocol": "tcp"}],
         "endpoints": [endpoint(a) for _, a in eps],
         "policy": {"outlier": {"consecutiveFailures": 2, "baseEjection": "2s"}, "retries": 2}},
    ])
    ld = mesh_node(workdir, config, [c])
    try:
        # Under load: wrk's kept-alive connections to k1 die with it (nothing can save
        # bytes already sent to a dead process); new connections are retried elsewhere.
        load = subprocess.Popen(["ip", "netns", "exec", c, "wrk", "-t2", "-c16", "-d3s", "http://%s/" % VIP],
                                stdout=subprocess.PIPE, text=True)
        harness._live_procs.append(load)
        time.sleep(1)
        backends.stop("k1", sig=signal.SIGKILL)
        during = load.communicate(timeout=30)[0]
        harness._live_procs.remove(load)
        figure("wrk while k1 is killed", " ".join(during.split()[-12:]))
        out = client(c, "http", VIP, 80, 300)
        assert out["error_count"] == 0 and "k1" not in out["counts"], out
        routes = json.loads(ld.ctl("routes", "--json").stdout)
        web = [s for s in routes["services"] if s["name"] == "web"][0]
        assert web["ejections"] >= 1 and web["connectFailures"] >= 2, web
        wrk = run("ip", "netns", "exec", c, "wrk", "-t2", "-c16", "-d3s", "http://%s/" % VIP, timeout=60).stdout
        figure("wrk after ejection", " ".join(wrk.split()[-8:]))
        assert "Socket errors" not in wrk and "Non-2xx" not in wrk, wrk
        backends.start(eps[1][0], "http", 8080, "k1")
        deadline = time.monotonic() + 15
        while True:
            out = client(c, "http", VIP, 80, 30)
            if out["counts"].get("k1", 0) > 0:
                break
            assert time.monotonic() < deadline, "endpoint k1 never came back: %s" % out
            time.sleep(0.5)
    finally:
        ld.stop()


def test_reload_under_load_and_invalid_file(workdir, pod, backends, figure):
    c, _, _ = pod("Md")
    v1, v1a, _ = pod("Mr1")
    v2, v2a, _ = pod("Mr2")
    backends.start(v1, "http", 8080, "r1")
    backends.start(v2, "http", 8080, "r2")
    config = os.path.join(workdir, "mesh-reload.yaml")

    def services(target):
        return [{"name": "web", "namespace": "shop", "vips": [VIP], "ports": [{"port": 80, "protocol": "http"}],
                 "endpoints": [endpoint(target)]}]
    write_config(config, services(v1a))
    ld = mesh_node(workdir, config, [c])
    try:
        assert client(c, "http", VIP, 80, 5)["counts"] == {"r1": 5}
        wrk = subprocess.Popen(["ip", "netns", "exec", c, "wrk", "-t2", "-c16", "-d4s", "http://%s/" % VIP],
                               stdout=subprocess.PIPE, text=True)
        harness._live_procs.append(wrk)
        time.sleep(1.5)
        write_config(config, services(v2a))
        out = ld.ctl("reload").stdout
        assert "version" in out, out
        assert client(c, "http", VIP, 80, 5)["counts"] == {"r2": 5}
        text = wrk.communicate(timeout=30)[0]
        harness._live_procs.remove(wrk)
        figure("wrk across a reload", " ".join(text.split()[-8:]))
        assert wrk.returncode == 0 and "Socket errors" not in text and "Non-2xx" not in text, text
        # An invalid file: refused with file, line, column and field; routing unchanged.
        with open(config, "w") as f:
            f.write('services:\n  - name: web\n    namespace: shop\n    vips: [%s]\n'
                    '    ports: [{port: 70000}]\n' % VIP)
        p = ld.ctl("reload", check=False)
        assert p.returncode != 0 and "%s:5:" % config in p.stderr and "port" in p.stderr, p.stderr
        assert client(c, "http", VIP, 80, 5)["counts"] == {"r2": 5}
        # The file watcher refuses it the same way (and logs it) without a command.
        assert "mesh-reload.yaml:5:" in ld.stderr_text()
        # SIGHUP reloads too: back to r1.
        write_config(config, services(v1a))
        os.kill(ld.pid, signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "reload (SIGHUP): configuration" not in ld.stderr_text():
            assert time.monotonic() < deadline, ld.stderr_text()
            time.sleep(0.1)
        assert client(c, "http", VIP, 80, 5)["counts"] == {"r1": 5}
    finally:
        ld.stop()


def test_peeking_never_stalls(workdir, pod, backends, figure):
    """Server-speaks-first on a `tcp` port: the banner arrives at once (no peek). On an
    `http` port with routes, a client that says nothing is routed after the peek timeout
    (0.5 s), not after 10 s; a client that speaks after 5 s still gets the banner at
    0.5 s. A first packet that is neither TLS nor HTTP goes to the default endpoints. A
    malformed or oversized head is passed through, or refused with `malformed: refuse`."""
    c, _, _ = pod("Mp")
    s, sa, _ = pod("Ms")
    backends.start(s, "banner", 2525, "banner")
    config = os.path.join(workdir, "mesh-peek.yaml")
    write_config(config, [
        {"name": "mail", "namespace": "shop", "vips": [VIP], "ports": [{"port": 25, "protocol": "tcp", "targetPort": 2525}],
         "endpoints": [{"address": sa}]},
        {"name": "web", "namespace": "shop", "vips": ["10.96.0.12"],
         "ports": [{"port": 80, "protocol": "http", "targetPort": 2525}],
         "endpoints": [{"address": sa}],
         "routes": [{"name": "never", "port": 80, "match": {"pathPrefix": "/never"}, "to": [{"service": "mail"}]}]},
        {"name": "strict", "namespace": "shop", "vips": ["10.96.0.13"],
         "ports": [{"port": 80, "protocol": "http", "targetPort": 2525}],
         "endpoints": [{"address": sa}], "policy": {"malformed": "refuse"},
         "routes": [{"name": "never", "port": 80, "match": {"pathPrefix": "/never"}, "to": [{"service": "mail"}]}]},
    ])
    ld = mesh_node(workdir, config, [c])
    try:
        out = client(c, "banner", VIP, 25)
        figure("server-first banner on a tcp port", "%.3f s" % out["seconds"])
        assert out["line"] == "banner" and out["seconds"] < 0.3, out
        out = client(c, "banner", "10.96.0.12", 80)
        figure("silent client on a peeked http port", "%.3f s" % out["seconds"])
        assert out["line"] == "banner" and 0.3 < out["seconds"] < 2.0, out
        out = client(c, "banner", "10.96.0.12", 80, "--send-after", "5")
        assert out["line"] == "banner", out
        # Bytes that are neither TLS nor HTTP: routed at once to the default endpoints.
        p = run("ip", "netns", "exec", c, sys.executable, "-c",
                "import socket,time;s=socket.create_connection(('10.96.0.12',80));t=time.time();"
                "s.sendall(b'\\x00\\x01binary');d=b''\n"
                "while d.count(b'\\n')<1: d+=s.recv(100)\n"
                "print(round(time.time()-t,3), d.decode().split()[0])")
        took, line = p.stdout.split()
        assert line == "banner" and float(took) < 0.3, p.stdout
        # A malformed HTTP head: passed through by default, refused with `malformed: refuse`.
        bad = "GET / HTTP/1.1\\r\\nno colon here\\r\\n\\r\\n"
        assert probe(c, "10.96.0.12", 80, bad) == "banner"
        assert probe(c, "10.96.0.13", 80, bad) == "reset"
        # An oversized head (20 KiB of headers, more than the 16 KiB peek): the same.
        big = "GET / HTTP/1.1\\r\\nx-pad: " + "a" * 20000 + "\\r\\n\\r\\n"
        assert probe(c, "10.96.0.12", 80, big) == "banner"
        assert probe(c, "10.96.0.13", 80, big) == "reset"
    finally:
        ld.stop()


@pytest.mark.parametrize("text,needle", [
    ("services: [\n  {name: web\n", "mesh-bad.yaml:"),
    ("services:\n  - name: web\n    namespace: shop\n    colour: blue\n", "mesh-bad.yaml:4:"),
    ("services:\n  - {name: a, namespace: s, vips: [10.96.0.1], ports: [{port: 80}]}\n"
     "  - {name: a, namespace: s, vips: [10.96.0.2], ports: [{port: 80}]}\n", "defined twice"),
    ("services:\n  - {name: a, namespace: s, vips: [10.96.0.1], ports: [{port: 80}]}\n"
     "  - {name: b, namespace: s, vips: [10.96.0.1], ports: [{port: 80}]}\n", "10.96.0.1"),
    ("services:\n  - {name: a, namespace: s, ports: [{port: 80}], endpoints: [{address: 10.1.1.1, weight: 0}]}\n",
     "weight"),
    ("services:\n  - {name: a, namespace: s, ports: [{port: 0}]}\n", "mesh-bad.yaml:2:"),
])
def test_config_validate_bad_input(workdir, text, needle):
    path = os.path.join(workdir, "mesh-bad.yaml")
    with open(path, "w") as f:
        f.write(text)
    p = run(harness.loomctl_path(), "config", "validate", path, check=False)
    assert p.returncode != 0, p.stdout
    assert needle in p.stderr, p.stderr


def test_circuit_breaker_and_ring_hash(workdir, pod, backends):
    """maxConnections 2: a third concurrent connection is refused and counted; ring hash
    sends one client to one endpoint every time; a namespace with `unmatched: refuse`
    refuses destinations that are no service (and explain says so)."""
    c, _, _ = pod("Mt")
    eps = []
    for i in range(3):
        ns, a4, _ = pod("Mh%d" % i)
        backends.start(ns, "banner", 2525, "h%d" % i)
        eps.append(a4)
    config = os.path.join(workdir, "mesh-breaker.yaml")
    write_config(config, [
        {"name": "small", "namespace": "shop", "vips": [VIP], "ports": [{"port": 25, "targetPort": 2525}],
         "endpoints": [{"address": eps[0]}], "policy": {"maxConnections": 2}},
        {"name": "sticky", "namespace": "shop", "vips": ["10.96.0.14"], "ports": [{"port": 25, "targetPort": 2525}],
         "endpoints": [{"address": a} for a in eps], "policy": {"loadBalancing": "ring-hash"}},
    ], namespaces={"shop": {"unmatched": "refuse"}})
    ld = mesh_node(workdir, config, [c])
    try:
        code = ("import socket\n"
                "held=[socket.create_connection(('%s',25),timeout=5) for _ in range(2)]\n"
                "print([h.recv(100).decode().strip() for h in held])\n"
                "input()\n") % VIP
        holder = subprocess.Popen(["ip", "netns", "exec", c, sys.executable, "-c", code],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        harness._live_procs.append(holder)
        try:
            assert holder.stdout.readline().strip() == "['h0', 'h0']"
            assert probe(c, VIP, 25) == "reset"
        finally:
            holder.communicate("\n", timeout=10)
            harness._live_procs.remove(holder)
        small = [s for s in json.loads(ld.ctl("routes", "--json").stdout)["services"] if s["name"] == "small"][0]
        assert small["rejected"] == 1, small
        names = set()
        for _ in range(30):
            names.add(client(c, "banner", "10.96.0.14", 25)["line"])
        assert len(names) == 1, names
        # The pod's namespace refuses destinations that are no service.
        assert probe(c, eps[1], 2525) == "reset"
        why = ld.ctl("explain", "--netns", c, "--to", "%s:2525" % eps[1]).stdout
        assert "refused" in why and "unmatched" in why, why
    finally:
        ld.stop()
