"""Harness for Loom's integration tests: namespaces, agents, loomd.

Everything network-related lives in network namespaces created here, with
names carrying a per-run prefix; nothing is ever added to the root network
namespace.  loomd itself runs in the root namespace (as in production) and
enters the client pod namespace on its own.
"""

import atexit
import json
import os
import queue
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))

# ------------------------------------------------------------------ topology

C_V4, R_C_V4 = "10.89.1.2", "10.89.1.1"
S_V4, R_S_V4 = "10.89.2.2", "10.89.2.1"
C_V6, R_C_V6 = "fd89:1::2", "fd89:1::1"
S_V6, R_S_V6 = "fd89:2::2", "fd89:2::1"
BLACKHOLE_V4 = "10.89.3.3"          # routed to R, dropped there by nft
BLACKHOLE_V6 = "fd89:3::3"
OUTBOUND_PORT = 15001
ECHO_PORT = 7000                    # shared echo server in S
LOOM_MARK = 0x4C4F

PREFIX = "lt%dx" % (os.getpid() % 10000)

def client_rules(*args):
    """Loom's plan for the client pod as `nft` text (`loomctl rules`), loaded with the
    nft CLI before the first loomd starts and by test_rules.py. Outbound only: nothing
    connects into the client pod."""
    return run(loomctl_path(), "rules", "--outbound-only", "--outbound-port", str(OUTBOUND_PORT),
               *args).stdout


ROUTER_NFT = """
table inet loomtest {
  chain pre {
    type filter hook prerouting priority 0; policy accept;
    ip daddr %s counter drop
    ip6 daddr %s counter drop
  }
}
""" % (BLACKHOLE_V4, BLACKHOLE_V6)


def run(*cmd, check=True, input=None, timeout=30):
    p = subprocess.run(list(cmd), input=input, capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError("command failed (%d): %s\n%s%s" % (
            p.returncode, " ".join(cmd), p.stdout, p.stderr))
    return p


def expect_golden(text, name):
    """Compares text with Tests/Integration/golden/NAME (LOOM_UPDATE_GOLDEN=1 rewrites it)."""
    path = os.path.join(HERE, "golden", name)
    if os.environ.get("LOOM_UPDATE_GOLDEN") == "1":
        with open(path, "w") as f:
            f.write(text)
    with open(path) as f:
        assert text == f.read(), "differs from golden/%s (LOOM_UPDATE_GOLDEN=1 rewrites):\n%s" % (name, text)


def ns_exec(ns, *cmd, **kw):
    return run("ip", "netns", "exec", ns, *cmd, **kw)


_live_namespaces = []
_live_procs = []


def _cleanup_everything():
    for p in list(_live_procs):
        _stop_proc(p)
    for ns in list(_live_namespaces):
        _delete_ns(ns)


def _delete_ns(ns):
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    if ns in _live_namespaces:
        _live_namespaces.remove(ns)


def _stop_proc(p, sig=signal.SIGTERM, wait=5.0):
    """Stop one process we started, by its PID only."""
    if p.poll() is None:
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(wait)
        except subprocess.TimeoutExpired:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(5)
    if p in _live_procs:
        _live_procs.remove(p)


atexit.register(_cleanup_everything)


def _on_sigterm(signum, frame):
    # Turn SIGTERM into an exception so fixture finalizers and atexit run.
    raise KeyboardInterrupt("SIGTERM")


def install_signal_handlers():
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
        signal.signal(signal.SIGHUP, _on_sigterm)


class Topology:
    """client pod C -- router R -- server pod S, each its own netns."""

    def __init__(self, prefix=PREFIX):
        self.client = prefix + "C"
        self.router = prefix + "R"
        self.server = prefix + "S"
        self.names = [self.client, self.router, self.server]

    def create(self):
        existing = run("ip", "netns", "list").stdout
        for ns in self.names:
            if ns in existing.split():
                _delete_ns(ns)        # stale, same pid prefix: ours by name
        try:
            self._create()
        except Exception:
            self.destroy()
            raise
        return self

    def _create(self):
        C, R, S = self.names[0], self.names[1], self.names[2]
        for ns in self.names:
            run("ip", "netns", "add", ns)
            _live_namespaces.append(ns)
            # no duplicate address detection on links created in here, so
            # link-local addresses are usable at once (NDP, router paths)
            ns_exec(ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0")
            run("ip", "-n", ns, "link", "set", "lo", "up")
        # veths are created inside the namespaces directly (never in root)
        run("ip", "-n", C, "link", "add", "eth0", "type", "veth",
            "peer", "name", "toc", "netns", R)
        run("ip", "-n", S, "link", "add", "eth0", "type", "veth",
            "peer", "name", "tos", "netns", R)
        for ns, dev, v4, v6 in ((C, "eth0", C_V4, C_V6), (S, "eth0", S_V4, S_V6),
                                (R, "toc", R_C_V4, R_C_V6),
                                (R, "tos", R_S_V4, R_S_V6)):
            run("ip", "-n", ns, "addr", "add", v4 + "/24", "dev", dev)
            run("ip", "-n", ns, "-6", "addr", "add", v6 + "/64", "dev", dev, "nodad")
            run("ip", "-n", ns, "link", "set", dev, "up")
        run("ip", "-n", C, "route", "add", "default", "via", R_C_V4)
        run("ip", "-n", C, "-6", "route", "add", "default", "via", R_C_V6)
        run("ip", "-n", S, "route", "add", "default", "via", R_S_V4)
        run("ip", "-n", S, "-6", "route", "add", "default", "via", R_S_V6)
        # the router forwards; the blackhole prefix is routed out towards S
        # but dropped in R's prerouting hook before it gets anywhere
        ns_exec(R, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        ns_exec(R, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        ns_exec(R, "nft", "-f", "-", input=ROUTER_NFT)
        ns_exec(C, "nft", "-f", "-", input=client_rules())
        self.wait_paths()

    def wait_paths(self, timeout=10.0):
        """Wait until C reaches S over both families (fresh links drop or
        delay the first packets while NDP/carrier settle).  Probes a closed
        port with Loom's mark, so they bypass the redirect."""
        code = (
            "import socket,sys,time\n"
            "for a in sys.argv[1:]:\n"
            "  end=time.time()+%f\n"
            "  while True:\n"
            "    s=socket.socket(socket.AF_INET6 if ':' in a else socket.AF_INET)\n"
            "    s.setsockopt(socket.SOL_SOCKET,socket.SO_MARK,%d)\n"
            "    s.settimeout(0.3)\n"
            "    try: s.connect((a,9)); break\n"
            "    except ConnectionRefusedError: break\n"
            "    except OSError:\n"
            "      if time.time()>end: sys.exit('no path to '+a)\n"
            "    finally: s.close()\n") % (timeout, LOOM_MARK)
        ns_exec(self.client, sys.executable, "-c", code, S_V4, S_V6,
                timeout=timeout * 2 + 5)

    def destroy(self):
        for ns in list(self.names):
            _delete_ns(ns)

    def add_pod(self, name, index, v4=True, v6=True):
        """Another pod on the router: netns PREFIX+name, 10.89.INDEX.2/24 and
        fd89:INDEX::2/64 (either may be left out). Returns (netns, v4, v6)."""
        ns = self.router[:-1] + name
        if ns in run("ip", "netns", "list").stdout.split():
            _delete_ns(ns)
        run("ip", "netns", "add", ns)
        _live_namespaces.append(ns)
        self.names.append(ns)
        ns_exec(ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0")
        run("ip", "-n", ns, "link", "set", "lo", "up")
        peer = "to%d" % index
        run("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", peer,
            "netns", self.router)
        a4, a6 = "10.89.%d.2" % index, "fd89:%x::2" % index
        r4, r6 = "10.89.%d.1" % index, "fd89:%x::1" % index
        if v4:
            run("ip", "-n", ns, "addr", "add", a4 + "/24", "dev", "eth0")
            run("ip", "-n", self.router, "addr", "add", r4 + "/24", "dev", peer)
        if v6:
            run("ip", "-n", ns, "-6", "addr", "add", a6 + "/64", "dev", "eth0", "nodad")
            run("ip", "-n", self.router, "-6", "addr", "add", r6 + "/64", "dev", peer, "nodad")
        else:
            ns_exec(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        run("ip", "-n", self.router, "link", "set", peer, "up")
        if v4:
            run("ip", "-n", ns, "route", "add", "default", "via", r4)
        if v6:
            run("ip", "-n", ns, "-6", "route", "add", "default", "via", r6)
        return ns, (a4 if v4 else None), (a6 if v6 else None)

    def remove_pod(self, ns):
        _delete_ns(ns)
        if ns in self.names:
            self.names.remove(ns)

    def blackhole_drops(self):
        """Packets dropped by R's blackhole rules (proves the drop is real)."""
        out = ns_exec(self.router, "nft", "-j", "list", "table", "inet",
                      "loomtest").stdout
        total = 0
        for item in json.loads(out)["nftables"]:
            rule = item.get("rule")
            if not rule:
                continue
            for e in rule.get("expr", []):
                if "counter" in e:
                    total += e["counter"]["packets"]
        return total


# -------------------------------------------------------------------- agents

class AgentError(AssertionError):
    pass


class Future:
    def __init__(self, agent, rid, op):
        self.agent, self.rid, self.op = agent, rid, op
        self._q = queue.Queue(1)

    def done(self):
        """True once the answer has arrived (before result() takes it)."""
        return not self._q.empty()

    def result(self, timeout=60):
        try:
            r = self._q.get(timeout=timeout)
        except queue.Empty:
            raise AgentError("agent %s: op %s gave no answer in %ss" % (
                self.agent.ns, self.op, timeout)) from None
        if r is None:
            raise AgentError("agent %s died during op %s; stderr:\n%s" % (
                self.agent.ns, self.op, self.agent.stderr_text()))
        if not r["ok"]:
            raise AgentError("agent %s: op %s failed: %s\n%s" % (
                self.agent.ns, self.op, r["error"], r.get("trace", "")))
        return r["result"]


class Agent:
    """A netagent.py process inside a namespace, driven by JSON lines."""

    def __init__(self, ns, workdir, tag="agent"):
        self.ns = ns
        self._errpath = os.path.join(workdir, "%s-%s-%d.err" % (
            tag, ns, int(time.monotonic() * 1000)))
        self._err = open(self._errpath, "w")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-u",
             os.path.join(HERE, "netagent.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
            text=True, bufsize=1, preexec_fn=_die_with_parent)
        _live_procs.append(self.proc)
        self._lock = threading.Lock()
        self._next = 0
        self._pending = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.call("ping", rpc_timeout=20)

    def _read(self):
        for line in self.proc.stdout:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                f = self._pending.pop(r.get("id"), None)
            if f:
                f._q.put(r)
        with self._lock:
            pending, self._pending = self._pending, {}
        for f in pending.values():
            f._q.put(None)

    def submit(self, op, **args):
        with self._lock:
            self._next += 1
            rid = self._next
            f = Future(self, rid, op)
            self._pending[rid] = f
        try:
            self.proc.stdin.write(json.dumps({"id": rid, "op": op, "args": args}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            with self._lock:
                self._pending.pop(rid, None)
            f._q.put(None)
        return f

    def call(self, op, rpc_timeout=None, **args):
        """Run op in the agent and wait for its result.  `timeout` in args is
        the op's own bound; the RPC waits a little longer than that."""
        if rpc_timeout is None:
            rpc_timeout = float(args.get("timeout", 30)) + 20
        return self.submit(op, **args).result(rpc_timeout)

    def stderr_text(self):
        try:
            with open(self._errpath) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def close(self):
        try:
            self.proc.stdin.close()
        except Exception:
            pass
        try:
            self.proc.wait(3)
        except subprocess.TimeoutExpired:
            pass
        _stop_proc(self.proc)
        self._err.close()


# --------------------------------------------------------------------- loomd

def loomd_path():
    return os.environ.get("LOOMD") or os.path.join(REPO, ".build", "debug", "loomd")


def loomctl_path():
    return os.environ.get("LOOMCTL") or os.path.join(
        os.path.dirname(loomd_path()), "loomctl")


# Provisional `loomctl status --json` key paths, in one place.
STATUS_KEYS = {
    "active": ("connections", "active"),
    "accepted": ("connections", "accepted"),
    "refused": ("connections", "refused"),
    "pipes_in_use": ("pipes", "in_use"),
    "pipes_cached": ("pipes", "cached"),
    "pipe_waiters": ("pipes", "waiters"),
    "pipe_waits_total": ("pipes", "waits_total"),
    "pipes_limit": ("pipes", "limit"),
    "loops": ("loops",),
    "bytes_up": ("bytes", "client_to_upstream"),
    "bytes_down": ("bytes", "upstream_to_client"),
}


def status_fields(raw):
    """Flatten loomctl's JSON into the names the tests use (None if absent)."""
    out = {}
    for name, path in STATUS_KEYS.items():
        v = raw
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        out[name] = v
    out["raw"] = raw
    return out


def proc_fds(pid):
    """(total fds, pipe fds, socket fds) of a process."""
    d = "/proc/%d/fd" % pid
    total = pipes = socks = 0
    for name in os.listdir(d):
        total += 1
        try:
            link = os.readlink(os.path.join(d, name))
        except OSError:
            continue
        if link.startswith("pipe:"):
            pipes += 1
        elif link.startswith("socket:"):
            socks += 1
    return total, pipes, socks


def proc_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Sampler:
    """Samples a process's fd count and RSS in the background; keeps peaks."""

    def __init__(self, pid, interval=0.05):
        self.pid, self.interval = pid, interval
        self.peak_fds = self.peak_pipes = self.peak_socks = self.peak_rss = 0
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                t, p, s = proc_fds(self.pid)
                r = proc_rss_kib(self.pid)
            except (FileNotFoundError, ProcessLookupError):
                return
            self.peak_fds = max(self.peak_fds, t)
            self.peak_pipes = max(self.peak_pipes, p)
            self.peak_socks = max(self.peak_socks, s)
            self.peak_rss = max(self.peak_rss, r)
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(5)


def _die_with_parent():
    """In a child before exec: get SIGTERM if the test run dies (even by
    SIGKILL), so no loomd or agent outlives it."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)      # PR_SET_PDEATHSIG
    except Exception:
        pass


def _loomd_preexec():
    _die_with_parent()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Loomd:
    """One loomd process serving the client pod's namespace."""

    def __init__(self, netns, workdir, args=(), env=None, prefix=(), state_dir=None):
        self.prefix = list(prefix)   # e.g. ["prlimit", "--nofile=256:256"]
        self.netns = netns           # None: no --netns (pods come from loomctl)
        self.args = list(args)
        self.env = env
        self.dir = tempfile.mkdtemp(prefix="loomd-", dir=workdir)
        self.state_dir = state_dir or self.dir
        self.admin = os.path.join(self.dir, "admin.sock")
        self.errpath = os.path.join(self.dir, "stderr.log")
        self.proc = None

    def start(self, ready_timeout=20.0):
        pods = ["--netns", self.netns] if self.netns else []
        cmd = self.prefix + [loomd_path()] + pods + ["--admin-socket", self.admin,
               "--state-dir", self.state_dir, "--log-level", "info"] + self.args
        self._err = open(self.errpath, "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=self._err, stderr=self._err,
                                     env=self.env, preexec_fn=_loomd_preexec)
        _live_procs.append(self.proc)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if "] ready: " in self.stderr_text(full=True):
                return self
            if self.proc.poll() is not None:
                raise AssertionError("loomd exited (%s) before ready:\n%s" % (
                    self.proc.returncode, self.stderr_text()))
            time.sleep(0.05)
        self.stop()
        raise AssertionError("loomd printed no 'ready' within %ss:\n%s" % (
            ready_timeout, self.stderr_text()))

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def assert_alive(self):
        assert self.alive(), "loomd died (exit %s); stderr tail:\n%s" % (
            self.proc.returncode, self.stderr_text())

    def stderr_text(self, full=False):
        try:
            with open(self.errpath, errors="replace") as f:
                t = f.read()
        except OSError:
            return ""
        return t if full else t[-6000:]

    def ctl(self, *args, check=True, timeout=30):
        """Runs `loomctl ARGS --admin-socket ...` against this loomd."""
        return run(loomctl_path(), *args, "--admin-socket", self.admin, check=check,
                   timeout=timeout)

    def pods(self):
        """loomctl status --json's pod rows, by netns path."""
        out = json.loads(self.ctl("status", "--json").stdout)
        return {p["netns"]: p for p in out["pods"]}

    def status(self, timeout=10):
        p = run(loomctl_path(), "status", "--json", "--admin-socket", self.admin,
                check=False, timeout=timeout)
        if p.returncode != 0:
            raise AssertionError("loomctl status failed (%d): %s%s\nloomd stderr:\n%s" % (
                p.returncode, p.stdout, p.stderr, self.stderr_text()))
        try:
            return status_fields(json.loads(p.stdout))
        except ValueError:
            raise AssertionError("loomctl printed no JSON: %r" % p.stdout) from None

    def fds(self):
        return proc_fds(self.pid)

    def rss_kib(self):
        return proc_rss_kib(self.pid)

    def wait_status(self, pred, timeout=5.0):
        """Poll status until pred(status) holds; returns the last status."""
        deadline = time.monotonic() + timeout
        st = self.status()
        while not pred(st) and time.monotonic() < deadline:
            time.sleep(0.1)
            st = self.status()
        return st

    def kill(self):
        """SIGKILL, as a crash would: nothing of loomd's runs after this."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self.proc in _live_procs:
            _live_procs.remove(self.proc)
        self._err.close()

    def stop(self, timeout=10.0):
        """SIGTERM; returns (returncode, seconds taken)."""
        if self.proc is None:
            return None, 0.0
        t0 = time.monotonic()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        took = time.monotonic() - t0
        rc = self.proc.poll()
        _stop_proc(self.proc)      # SIGKILL if SIGTERM did not work
        self._err.close()
        return rc, took


class LoomManager:
    """Keeps at most one loomd per client pod; restarts it when a test needs
    different flags, so most tests share one instance."""

    def __init__(self, netns, workdir):
        self.netns, self.workdir = netns, workdir
        self.current = None

    def ensure(self, args=()):
        args = list(args)
        if self.current and self.current.alive() and self.current.args == args:
            return self.current
        self.shutdown()
        self.current = Loomd(self.netns, self.workdir, args).start()
        return self.current

    def shutdown(self):
        if self.current:
            self.current.stop()
            self.current = None


def tools_missing():
    """Reason the suite cannot run here, or None."""
    if os.geteuid() != 0:
        return "integration tests need root (network namespaces, nft)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return "`%s` not found in PATH" % tool
    return None


def start_peer_server(ns, logpath, *ports):
    """`peer.py serve PORTS` in netns `ns` (stderr to `logpath`), once it is serving.
    Returns (process, log file); stop with stop_peer_server."""
    log = open(logpath, "w")
    p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable,
                          os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer.py"), "serve",
                          *[str(port) for port in ports]],
                         stdout=subprocess.PIPE, stderr=log, text=True)
    _live_procs.append(p)
    assert p.stdout.readline().strip() == "serving"
    return p, log


def stop_peer_server(server):
    p, log = server
    _stop_proc(p)
    log.close()


# ------------------------------------------------------------------ tracing

def wait_for(pred, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


class Tracer:
    """`loomctl trace ARGS --json` in the background; lines read on demand."""

    def __init__(self, ld, *args):
        self.proc = subprocess.Popen([loomctl_path(), "trace", *args, "--json",
                                      "--admin-socket", ld.admin],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _live_procs.append(self.proc)
        self.records = []
        self.pending = b""

    def read_until(self, pred, timeout=10.0):
        """Reads records until pred(record) holds for one; returns it. Reads the pipe
        unbuffered (select() cannot see lines a buffered reader already took)."""
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            while b"\n" in self.pending:
                line, self.pending = self.pending.split(b"\n", 1)
                self.records.append(json.loads(line))
            for r in self.records[seen:]:
                if pred(r):
                    return r
            seen = len(self.records)
            if time.monotonic() >= deadline:
                break
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                if self.proc.poll() is not None:
                    break
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self.pending += chunk
        raise AssertionError("no matching trace record within %ss; got %s\nstderr: %s" % (
            timeout, json.dumps(self.records, indent=1), self.stderr()))

    def stderr(self):
        if self.proc.poll() is None:
            return "(running)"
        return self.proc.stderr.read()

    def stop(self):
        _stop_proc(self.proc, wait=3.0)
