"""The node daemon's lifecycle under load, as operators meet it: a hitless upgrade
(`loomd --takeover` while wrk and a long transfer run: no failed request, the transfer
completes with the same SHA-256), SIGTERM draining transfers in flight, and SIGKILL
followed by a restart (state recovered: one table, no duplicate listeners, interception
back at once; the time to READY measured). Pods are network namespaces this run creates
(prefix harness.PREFIX); loomd runs in the root netns and never changes it."""

import os
import re
import subprocess
import sys
import time

import pytest

import harness
from harness import S_V4, ns_exec, run

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "peer.py")
BACKEND = os.path.join(HERE, "backend.py")
HTTP_PORT = 7500
SLOW_PORT = 7501
ASK_PORT = 7502
NBYTES = 96 << 20          # the long transfer: 96 MiB ...
RATE = 16 << 20            # ... at 16 MiB/s: six seconds


@pytest.fixture(scope="module")
def servers(topo, workdir):
    procs = []
    log = open(os.path.join(workdir, "lifecycle-servers.log"), "w")
    try:
        http = subprocess.Popen(["ip", "netns", "exec", topo.server, sys.executable, BACKEND, "http",
                                 str(HTTP_PORT), "web"], stdout=subprocess.PIPE, stderr=log, text=True)
        procs.append(http)
        harness._live_procs.append(http)
        assert http.stdout.readline().strip() == "ready"
        slow = subprocess.Popen(["ip", "netns", "exec", topo.server, sys.executable, PEER, "slowserve",
                                 str(SLOW_PORT), str(NBYTES), str(RATE)],
                                stdout=subprocess.PIPE, stderr=log, text=True)
        procs.append(slow)
        harness._live_procs.append(slow)
        word, sha = slow.stdout.readline().split()
        assert word == "serving"
        ask = subprocess.Popen(["ip", "netns", "exec", topo.server, sys.executable, PEER, "serve",
                                str(ASK_PORT)], stdout=subprocess.PIPE, stderr=log, text=True)
        procs.append(ask)
        harness._live_procs.append(ask)
        assert ask.stdout.readline().strip() == "serving"
        yield sha
    finally:
        for p in procs:
            harness._stop_proc(p)
        log.close()


def start_in(ns, *cmd):
    p = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    harness._live_procs.append(p)
    return p


def finish(p, timeout=60):
    out = p.communicate(timeout=timeout)[0]
    if p in harness._live_procs:
        harness._live_procs.remove(p)
    return p.returncode, out


def wrk_ok(text):
    m = re.search(r"(\d+) requests in", text)
    return m and int(m.group(1)) > 0 and "Socket errors" not in text and "Non-2xx" not in text


def listeners(ns):
    """Listening sockets on Loom's capture ports in the pod."""
    out = ns_exec(ns, "ss", "-Hltn").stdout
    return sorted(line.split()[3] for line in out.splitlines()
                  if re.search(r":(15001|15006)$", line.split()[3]))


def tables(ns):
    return ns_exec(ns, "nft", "list", "tables").stdout.split("\n")


def accepted(ld, ns):
    return ld.pods()["/var/run/netns/" + ns]["accepted"]


def successor(old, workdir, args, state):
    """A loomd (not started yet) with `args`, on the state dir and admin socket of `old`."""
    new = harness.Loomd(None, workdir, args, state_dir=state)
    new.admin = old.admin
    return new


def through(ld, ns):
    before = accepted(ld, ns)
    p = run("ip", "netns", "exec", ns, sys.executable, PEER, "ask", S_V4, str(ASK_PORT), "3", check=False)
    return p.returncode == 0 and accepted(ld, ns) == before + 1


def test_takeover_under_load_refuses_nothing(workdir, pod, servers, figure):
    ns, _, _ = pod("La")
    state = os.path.join(workdir, "takeover-state-" + ns)
    args = ["--loops", "2", "--drain-timeout", "30"]
    old = harness.Loomd(None, workdir, args, state_dir=state).start()
    new = None
    try:
        old.ctl("enable", "--netns", ns)
        assert through(old, ns)
        before = listeners(ns)
        fetch = start_in(ns, sys.executable, PEER, "fetch", S_V4, str(SLOW_PORT))
        # wrk keeps its connections alive (they finish on the old loomd); new connections
        # keep arriving all through the takeover (300/s, each must be answered).
        wrk = start_in(ns, "wrk", "-t2", "-c8", "-d6s", "http://%s:%d/" % (S_V4, HTTP_PORT))
        fresh = start_in(ns, sys.executable, PEER, "many", S_V4, str(ASK_PORT), "1500", "300")
        time.sleep(1.5)
        new = successor(old, workdir, args + ["--takeover"], state)
        t0 = time.monotonic()
        new.start()
        figure("takeover: new loomd ready", "%.0f ms" % ((time.monotonic() - t0) * 1000))
        rc, text = finish(wrk)
        figure("wrk -c8 keep-alive across takeover", " ".join(text.split()[-4:]))
        assert rc == 0 and wrk_ok(text), text
        rc, out = finish(fresh)
        figure("new connections across takeover", "%s of 1500 answered" % out.split()[0])
        assert rc == 0 and out.split()[0] == "1500", "connections refused during the takeover: %s" % out
        rc, out = finish(fetch)
        assert rc == 0 and out.split() == [str(NBYTES), servers], "transfer across takeover: %s" % out
        # The old loomd finished its transfer and left; the new one serves alone.
        old.proc.wait(timeout=30)
        assert old.proc.returncode == 0, old.stderr_text()
        assert "handed over to the new loomd" in old.stderr_text(full=True)
        assert listeners(ns) == before, "listeners changed: %s -> %s" % (before, listeners(ns))
        assert tables(ns).count("table inet loom") == 1
        assert through(new, ns)
        assert new.pods()["/var/run/netns/" + ns]["state"] == "intercepted"
        # The new loomd can be taken over in turn.
        newer = successor(old, workdir, args + ["--takeover"], state)
        newer.start()
        new.proc.wait(timeout=35)
        assert through(newer, ns)
        new = newer
    finally:
        if new:
            new.ctl("uninstall", check=False)
            new.stop()
        old.stop()


def test_sigterm_lets_transfers_in_flight_finish(workdir, pod, servers, figure):
    ns, _, _ = pod("Lb")
    ld = harness.Loomd(None, workdir, ["--loops", "2", "--drain-timeout", "20"]).start()
    try:
        ld.ctl("enable", "--netns", ns)
        fetch = start_in(ns, sys.executable, PEER, "fetch", S_V4, str(SLOW_PORT))
        time.sleep(1.0)
        t0 = time.monotonic()
        os.kill(ld.pid, 15)
        rc, out = finish(fetch)
        assert rc == 0 and out.split() == [str(NBYTES), servers], "transfer across SIGTERM: %s" % out
        ld.proc.wait(timeout=25)
        took = time.monotonic() - t0
        figure("SIGTERM with a 6 s transfer in flight: exit after", "%.1f s" % took)
        assert ld.proc.returncode == 0, ld.stderr_text()
        assert took < 15, "loomd waited past the transfer's end: %.1f s" % took
    finally:
        ld.stop()


def test_sigkill_under_load_then_restart_recovers(workdir, pod, servers, figure):
    ns, _, _ = pod("Lc")
    state = os.path.join(workdir, "kill-state-" + ns)
    args = ["--loops", "2"]
    ld = harness.Loomd(None, workdir, args, state_dir=state).start()
    ld2 = None
    try:
        ld.ctl("enable", "--netns", ns)
        before = listeners(ns)
        wrk = start_in(ns, "wrk", "-t2", "-c8", "-d3s", "http://%s:%d/" % (S_V4, HTTP_PORT))
        time.sleep(1.0)
        ld.kill()
        finish(wrk)   # connections through the dead loomd fail: that is what SIGKILL means
        ld2 = successor(ld, workdir, args, state)
        t0 = time.monotonic()
        ld2.start()
        ready = time.monotonic() - t0
        first = None
        while time.monotonic() - t0 < ready + 1.0:
            if through(ld2, ns):
                first = time.monotonic() - t0 - ready
                break
        figure("SIGKILL, restart: READY after", "%.0f ms" % (ready * 1000))
        assert first is not None, "interception not back within 1 s of READY:\n" + ld2.stderr_text()
        figure("first relayed connection after READY", "%.0f ms" % (first * 1000))
        assert tables(ns).count("table inet loom") == 1
        assert listeners(ns) == before, "listeners after restart: %s (before %s)" % (listeners(ns), before)
    finally:
        if ld2:
            ld2.ctl("uninstall", check=False)
            ld2.stop()
        else:
            ld.stop()


def test_upgrade_socket_rejects_garbage_and_stays_usable(workdir, pod, servers):
    """Junk on the upgrade socket is answered with an error and changes nothing; a
    second loomd without --takeover is refused; a real takeover still works after."""
    import json
    import socket as so
    ns, _, _ = pod("Ld")
    state = os.path.join(workdir, "junk-state-" + ns)
    ld = harness.Loomd(None, workdir, ["--loops", "1"], state_dir=state).start()
    new = None
    try:
        ld.ctl("enable", "--netns", ns)
        path = os.path.join(state, "upgrade.sock")
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        for junk in (b"junk", b'{"takeover": "x"}', b"{}"):
            s = so.socket(so.AF_UNIX, so.SOCK_SEQPACKET)
            s.settimeout(10)
            s.connect(path)
            s.send(junk)
            answer = json.loads(s.recv(4096))
            s.close()
            assert "error" in answer, answer
        assert through(ld, ns), ld.stderr_text()
        second = harness.Loomd(None, workdir, ["--loops", "1"], state_dir=state)
        with pytest.raises(AssertionError, match="another loomd is running"):
            second.start(ready_timeout=5)
        new = successor(ld, workdir, ["--loops", "1", "--takeover"], state)
        new.start()
        ld.proc.wait(timeout=15)
        assert through(new, ns)
    finally:
        if new:
            new.ctl("uninstall", check=False)
            new.stop()
        ld.stop()


def test_sigusr2_starts_the_successor_itself(workdir, pod, servers):
    """SIGUSR2 (nginx-style binary upgrade): loomd starts its own binary again with
    --takeover; the child takes over, the parent finishes and exits 0."""
    ns, _, _ = pod("Le")
    state = os.path.join(workdir, "usr2-state-" + ns)
    ld = harness.Loomd(None, workdir, ["--loops", "1", "--drain-timeout", "10"], state_dir=state).start()
    child = None
    try:
        ld.ctl("enable", "--netns", ns)
        fresh = start_in(ns, sys.executable, PEER, "many", S_V4, str(ASK_PORT), "600", "200")
        time.sleep(0.5)
        os.kill(ld.pid, 12)   # SIGUSR2
        ld.proc.wait(timeout=20)
        assert ld.proc.returncode == 0, ld.stderr_text()
        log = ld.stderr_text(full=True)
        assert "SIGUSR2: started" in log and "handed over to the new loomd" in log, log
        import json
        # The child answers on the same admin socket.
        child = json.loads(run(harness.loomctl_path(), "status", "--json", "--admin-socket", ld.admin).stdout)["pid"]
        assert child != ld.pid
        rc, out = finish(fresh)
        assert rc == 0 and out.split()[0] == "600", "connections refused during the SIGUSR2 upgrade: %s" % out
        p = run("ip", "netns", "exec", ns, sys.executable, PEER, "ask", S_V4, str(ASK_PORT), "3", check=False)
        assert p.returncode == 0, p.stdout
    finally:
        if child:
            run(harness.loomctl_path(), "uninstall", "--admin-socket", ld.admin, check=False)
            os.kill(child, 15)
            for _ in range(100):
                if not os.path.exists("/proc/%d" % child):
                    break
                time.sleep(0.1)
        ld.stop()


def test_linger_after_handover_waits_for_sigterm(workdir, pod, servers):
    """--linger-after-handover (the Kubernetes DaemonSet's setting): the old loomd hands
    over, drains, and then stays until SIGTERM instead of exiting."""
    ns, _, _ = pod("Lf")
    state = os.path.join(workdir, "linger-state-" + ns)
    args = ["--loops", "1", "--takeover", "--linger-after-handover"]
    old = harness.Loomd(None, workdir, args, state_dir=state).start()
    new = None
    try:
        old.ctl("enable", "--netns", ns)
        new = successor(old, workdir, args, state)
        new.start()
        deadline = time.monotonic() + 10
        while "waiting for SIGTERM" not in old.stderr_text(full=True) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "waiting for SIGTERM" in old.stderr_text(full=True), old.stderr_text()
        time.sleep(1)
        assert old.alive(), "the old loomd exited instead of waiting for SIGTERM"
        assert through(new, ns)
        rc, took = old.stop()
        assert rc == 0 and took < 3, (rc, took)
    finally:
        if new:
            new.ctl("uninstall", check=False)
            new.stop()
        old.stop()


def test_takeover_with_other_capture_ports_is_refused_and_changes_nothing(workdir, pod, servers):
    """A new loomd with another --outbound-port cannot use the running one's listeners:
    it says so and exits; the running loomd carries on (admin socket included)."""
    ns, _, _ = pod("Lg")
    state = os.path.join(workdir, "ports-state-" + ns)
    old = harness.Loomd(None, workdir, ["--loops", "1"], state_dir=state).start()
    try:
        old.ctl("enable", "--netns", ns)
        table = ns_exec(ns, "nft", "list", "table", "inet", "loom").stdout
        new = successor(old, workdir, ["--loops", "1", "--takeover", "--outbound-port", "15011"], state)
        with pytest.raises(AssertionError, match="a takeover needs the same --outbound-port"):
            new.start(ready_timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "carries on" not in old.stderr_text(full=True):
            time.sleep(0.1)
        old.assert_alive()
        assert through(old, ns), old.stderr_text()
        assert ns_exec(ns, "nft", "list", "table", "inet", "loom").stdout == table
        # Its upgrade socket works again: a matching takeover succeeds.
        newer = successor(old, workdir, ["--loops", "1", "--takeover"], state)
        newer.start()
        old.proc.wait(timeout=15)
        assert through(newer, ns)
        newer.ctl("uninstall", check=False)
        newer.stop()
    finally:
        old.stop()


def test_unwritable_access_log_is_a_clear_error(workdir):
    p = run(harness.loomd_path(), "--access-log", "/nonexistent-dir/access.log", "--state-dir",
            os.path.join(workdir, "al-state"), "--admin-socket", os.path.join(workdir, "al.sock"),
            check=False, timeout=20)
    assert p.returncode != 0
    assert "cannot open the access log /nonexistent-dir/access.log" in p.stderr, p.stderr
