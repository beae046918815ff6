"""Least privilege: once set up, loomd keeps NET_ADMIN, SYS_ADMIN and SYS_PTRACE and
nothing else, in every thread (capabilities belong to threads, so the main thread's
/proc/PID/status alone proves little), with no_new_privs set; and it still does all of its
work with that set: a pod that appears after the drop is enabled (by name and by PID),
connections are relayed through it, `loomctl trace` joins the kernel's verdict (NFQUEUE),
and the pod is disabled. The admin socket is root's only. Every pod is a netns this run
creates; loomd runs in the root netns and never changes it."""

import os
import re
import stat
import subprocess
import sys
import time

import pytest

import harness
from harness import S_V4, S_V6, ns_exec, run

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "peer.py")
PORT = 7400            # peer server in S: answers with the peer address it sees

NET_ADMIN, SYS_PTRACE, SYS_ADMIN = 12, 19, 21
KEPT = (1 << NET_ADMIN) | (1 << SYS_PTRACE) | (1 << SYS_ADMIN)


@pytest.fixture(scope="module")
def peer_server(topo, workdir):
    server = harness.start_peer_server(topo.server, os.path.join(workdir, "privileges-peer.log"), PORT)
    yield server[0]
    harness.stop_peer_server(server)


def status_fields(path):
    out = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
                out[key] = int(value.strip(), 16)
            elif key in ("NoNewPrivs", "Name"):
                out[key] = value.strip()
    return out


def threads(pid):
    """{tid: status fields} for every thread of a process."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            out[int(tid)] = status_fields("/proc/%d/task/%s/status" % (pid, tid))
        except FileNotFoundError:
            pass            # it exited meanwhile
    return out


def assert_restricted(ld, kept):
    per_thread = threads(ld.pid)
    assert len(per_thread) > 3, per_thread      # main, a loop, the admin server, the trace hub...
    for tid, s in per_thread.items():
        where = "thread %d (%s) of loomd %d: %s" % (tid, s["Name"], ld.pid, s)
        assert s["CapEff"] == kept and s["CapPrm"] == kept, where
        assert s["CapBnd"] & ~kept == 0, where
        assert s["CapInh"] == 0 and s["CapAmb"] == 0, where
        assert s["NoNewPrivs"] == "1", where
    assert status_fields("/proc/%d/status" % ld.pid)["CapEff"] == kept


def ask(ns, host, port=PORT, timeout=3.0):
    p = run("ip", "netns", "exec", ns, sys.executable, PEER, "ask", host, str(port), str(timeout),
            check=False, timeout=timeout + 10)
    return p.returncode, p.stdout.strip()


def accepted(ld, netns_path):
    return ld.pods()[netns_path]["accepted"]


def through_loom(ld, ns, netns_path, host):
    """One connection from `ns` via Loom: it was relayed (counted), and the server saw
    the pod's own address (the upstream socket was made in the pod's netns: setns)."""
    before = accepted(ld, netns_path)
    code, answer = ask(ns, host)
    assert code == 0, "connection from %s to %s:%d failed: %s\n%s" % (ns, host, PORT, answer, ld.stderr_text())
    assert accepted(ld, netns_path) == before + 1, "Loom did not relay %s -> %s" % (ns, host)
    return answer.split()[0]


def wait_for(pred, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def trace_table(ns):
    return ns_exec(ns, "nft", "list", "table", "inet", "loom_trace", check=False).stdout


def loom_table(ns):
    return ns_exec(ns, "nft", "list", "table", "inet", "loom", check=False).stdout


def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return None


def own_caps():
    return status_fields("/proc/self/status")


def test_steady_state_keeps_three_capabilities_and_still_works(workdir, pod, peer_server):
    mine = own_caps()
    if mine["CapEff"] & KEPT != KEPT:
        pytest.skip("this test needs NET_ADMIN, SYS_ADMIN and SYS_PTRACE itself")
    ld = harness.Loomd(None, workdir, ["--loops", "1"]).start()
    try:
        dropped = bin(mine["CapPrm"] | mine["CapBnd"]).count("1") - 3
        assert "capabilities: kept net_admin, sys_admin, sys_ptrace; dropped %d others" % dropped \
            in ld.stderr_text(full=True)
        assert_restricted(ld, KEPT)

        # The admin socket: root's only, in a directory only root enters.
        st = os.stat(ld.admin)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0, oct(st.st_mode)
        st = os.stat(os.path.dirname(ld.admin))
        assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == 0, oct(st.st_mode)

        # A pod that did not exist when loomd dropped its capabilities, by name: nf_tables
        # over netlink in its netns (NET_ADMIN), listeners made there and upstream sockets
        # with SO_MARK made there by the relay loop (SYS_ADMIN, NET_ADMIN).
        ns, a4, a6 = pod("Va")
        named = "/var/run/netns/" + ns
        ld.ctl("enable", "--netns", ns)
        assert "redirect to :15001" in loom_table(ns)
        assert ld.pods()[named]["state"] == "intercepted"
        assert through_loom(ld, ns, named, S_V4) == a4
        assert through_loom(ld, ns, named, S_V6) == a6

        # loomctl trace: the trace table and an NFQUEUE socket in the pod (NET_ADMIN); the
        # record joins the kernel's verdict with the relay's.
        p = subprocess.Popen([harness.loomctl_path(), "trace", "--netns", ns, "--count", "1",
                              "--duration", "10", "--admin-socket", ld.admin],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        harness._live_procs.append(p)
        try:
            wait_for(lambda: "queue" in trace_table(ns), what="the trace table")
            assert ask(ns, S_V4)[0] == 0
            out, err = p.communicate(timeout=15)
        finally:
            harness._stop_proc(p)
        assert p.returncode == 0, err
        assert "redirected" in out and "%s:%d" % (S_V4, PORT) in out, out
        wait_for(lambda: trace_table(ns) == "", what="the trace table to go")

        # A pod by PID: /proc/PID/ns/net of a process of another user, and of a root
        # process with capabilities loomd no longer has (ptrace access: SYS_PTRACE).
        ns2, b4, _ = pod("Vb")
        for who in (["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"], []):
            sleeper = subprocess.Popen(["ip", "netns", "exec", ns2, *who, "sleep", "60"])
            harness._live_procs.append(sleeper)
            try:
                by_pid = "/proc/%d/ns/net" % sleeper.pid
                wait_for(lambda: comm(sleeper.pid) == "sleep", what="the sleeper in the pod's netns")
                assert os.stat(by_pid).st_ino == os.stat("/var/run/netns/" + ns2).st_ino
                ld.ctl("enable", "--netns", str(sleeper.pid))
                assert through_loom(ld, ns2, by_pid, S_V4) == b4
                ld.ctl("disable", "--netns", str(sleeper.pid))
                assert loom_table(ns2) == ""
            finally:
                harness._stop_proc(sleeper)

        # Disable: the table goes, traffic goes direct again.
        ld.ctl("disable", "--netns", ns)
        assert loom_table(ns) == ""
        code, answer = ask(ns, S_V4)
        assert code == 0 and answer.split()[0] == a4, answer

        ld.assert_alive()
        assert_restricted(ld, KEPT)       # threads made since (if any) inherited the set
    finally:
        ld.stop()


def test_keep_capabilities_leaves_them(workdir):
    mine = own_caps()
    ld = harness.Loomd(None, workdir, ["--loops", "1", "--keep-capabilities"]).start()
    try:
        assert "capabilities:" not in ld.stderr_text(full=True)
        for tid, s in threads(ld.pid).items():
            # Root exec'd by root: permitted is the bounding set it inherits from us.
            assert s["CapEff"] == mine["CapEff"] and s["CapBnd"] == mine["CapBnd"], (tid, s, mine)
            assert s["NoNewPrivs"] == mine["NoNewPrivs"], (tid, s)
    finally:
        ld.stop()


@pytest.mark.parametrize("bounding,kept", [
    # As deploy/systemd/loomd.service leaves it: nothing more to drop.
    ("-all,+net_admin,+sys_admin,+sys_ptrace", KEPT),
    # A capability already gone is not kept, and not an error.
    ("-all,+net_admin,+sys_admin", (1 << NET_ADMIN) | (1 << SYS_ADMIN)),
])
def test_starts_with_what_it_was_given(workdir, bounding, kept):
    if own_caps()["CapEff"] & KEPT != KEPT:
        pytest.skip("this test needs NET_ADMIN, SYS_ADMIN and SYS_PTRACE itself")
    ld = harness.Loomd(None, workdir, ["--loops", "1"], prefix=["setpriv", "--bounding-set", bounding]).start()
    try:
        names = ", ".join(n for n, bit in (("net_admin", NET_ADMIN), ("sys_admin", SYS_ADMIN),
                                           ("sys_ptrace", SYS_PTRACE)) if kept & (1 << bit))
        assert re.search(r"capabilities: kept %s; dropped 0 others" % names, ld.stderr_text(full=True)), \
            ld.stderr_text()
        assert_restricted(ld, kept)
        ld.ctl("status")
    finally:
        ld.stop()
