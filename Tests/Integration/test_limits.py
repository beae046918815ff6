"""loomd with special flags: limits, timeouts, budgets, shutdown, a second daemon.
Each test starts the loomd it needs (LoomManager restarts the shared one with other
flags, or the test starts its own)."""

import re
import time

import pytest

import harness
from checks import MiB, counter, ctx, wait_idle
from harness import ECHO_PORT, S_V4


def test_connection_limit(loom_manager, client, echo_server):
    """--max-connections 10: 10 work; the rest are not served while those
    are held (kept waiting or reset); loomd logs the limit and stays up;
    freeing 5 slots lets exactly 5 waiting ones in (if it keeps them
    waiting); later connections are served."""
    ld = loom_manager.ensure(["--max-connections", "10", "--loops", "1"])
    r = client.call("connect_echo_many", prefix="a", n=10, host=S_V4,
                    port=ECHO_PORT, nbytes=512, timeout=10)
    assert r["ok"] == 10, "first 10 connections: %s%s" % (r, ctx(ld))
    assert counter(ld.status(), "active") == 10

    extra = []
    for i in range(10):
        c = client.call("connect", name="b%d" % i, host=S_V4, port=ECHO_PORT, timeout=3)
        if c["ok"]:
            extra.append("b%d" % i)
    # same payload (seed) every time, so a late echo of it still matches
    futs = [client.submit("echo", name=b, nbytes=512, seed=9, timeout=1.5) for b in extra]
    res = [f.result(10) for f in futs]
    served = [b for b, e in zip(extra, res) if e["ok"]]
    assert not served, "connections beyond the limit were served: %s%s" % (served, ctx(ld))
    waiting = [b for b, e in zip(extra, res) if e["end"] == "timeout"]
    ld.assert_alive()
    assert counter(ld.status(), "active") == 10
    assert "limit" in ld.stderr_text(full=True).lower(), (
        "loomd logged nothing about the limit%s" % ctx(ld))

    for i in range(5):
        client.call("close", name="a%d" % i)
    for i in range(5, 10):
        e = client.call("echo", name="a%d" % i, nbytes=512, seed=i)
        assert e["ok"], "held connection a%d broke: %s" % (i, e)
    if waiting:
        # loomd kept them in the backlog: 5 freed slots admit exactly 5
        futs = [client.submit("echo", name=b, nbytes=512, seed=9, timeout=3) for b in waiting]
        now = [b for b, f in zip(waiting, futs) if f.result(10)["ok"]]
        assert len(now) == min(5, len(waiting)), (
            "after freeing 5 slots %d of %d waiting connections were served%s" % (
                len(now), len(waiting), ctx(ld)))
        assert counter(ld.status(), "active") <= 10

    client.call("close_prefix", prefix="")
    st = ld.wait_status(lambda s: counter(s, "active") == 0, 10)
    assert counter(st, "active") == 0, "closed connections still counted: %s" % st["raw"]
    r = client.call("connect_echo_many", prefix="n", n=10, host=S_V4,
                    port=ECHO_PORT, nbytes=512, timeout=5)
    assert r["ok"] == 10, "after freeing all slots: %s%s" % (r, ctx(ld))
    ld.assert_alive()
    client.call("close_prefix", prefix="")


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_connect_timeout(loom_manager, topo, client, fam):
    """Upstream SYNs are dropped in the router: with --connect-timeout 2 the
    client is reset after about 2 s."""
    ld = loom_manager.ensure(["--connect-timeout", "2"])
    dst = harness.BLACKHOLE_V4 if fam == "v4" else harness.BLACKHOLE_V6
    drops0 = topo.blackhole_drops()
    t0 = time.monotonic()
    r = client.call("connect", name="c", host=dst, port=80, timeout=10)
    if r["ok"]:
        p = client.call("probe", name="c", timeout=10)
        end = p["end"]
    else:
        end = r["error"]
    took = time.monotonic() - t0
    assert topo.blackhole_drops() > drops0, "router dropped nothing: the blackhole is not in the path"
    assert end in ("reset", "ECONNRESET", "ECONNREFUSED", "ETIMEDOUT"), (
        "client saw %r after %.1fs%s" % (end, took, ctx(ld)))
    assert 1.5 <= took <= 4.5, "reset came after %.2fs, expected ~2s%s" % (took, ctx(ld))
    st = ld.wait_status(lambda s: counter(s, "active") == 0, 5)
    assert counter(st, "active") == 0
    ld.assert_alive()


def test_client_reset_while_connecting(loom_manager, topo, client):
    """The client resets while loomd's upstream connect is still pending (a blackhole,
    --connect-timeout 30): loomd drops the attempt at once, not 30 s later."""
    ld = loom_manager.ensure(["--connect-timeout", "30"])
    assert client.call("connect", name="bh", host=harness.BLACKHOLE_V4, port=80, timeout=10)["ok"]
    st = ld.wait_status(lambda s: counter(s, "active") == 1, 5)
    assert counter(st, "active") == 1, "loomd is not holding the pending connection: %s" % st["raw"]
    client.call("close", name="bh", rst=True)
    t0 = time.monotonic()
    st = ld.wait_status(lambda s: counter(s, "active") == 0, 5)
    assert counter(st, "active") == 0, "pending upstream connect outlived the client's reset%s" % ctx(ld)
    assert time.monotonic() - t0 < 2
    ld.assert_alive()


def test_sigterm_stops_loomd(loom_manager, client, echo_server):
    """SIGTERM stops loomd: with one connection still open it exits within
    its drain timeout (--drain-timeout 2 here) plus slack, the open
    connection is ended, and its listeners go away."""
    ld = loom_manager.ensure(["--drain-timeout", "2"])
    assert client.call("connect", name="c", host=S_V4, port=ECHO_PORT)["ok"]
    assert client.call("echo", name="c", nbytes=100)["ok"]
    rc, took = ld.stop(timeout=10)
    loom_manager.current = None
    assert rc is not None, "loomd still running 10s after SIGTERM:\n" + ld.stderr_text()
    assert took < 5, "loomd took %.1fs to exit after SIGTERM (drain 2s)" % took
    assert rc in (0, -15), "loomd exit status %s after SIGTERM:\n%s" % (rc, ld.stderr_text())
    p = client.call("probe", name="c", timeout=3)
    assert p["end"] in ("eof", "reset"), "open connection not ended: %s" % p
    r = client.call("connect", name="d", host=S_V4, port=ECHO_PORT, timeout=3)
    assert not r["ok"] and r["error"] == "ECONNREFUSED", (
        "port 15001 still answers after loomd exited: %s" % r)


def test_low_fd_limit(loom_manager, topo, workdir, client, echo_server):
    """With only 256 fds, loomd sizes its connection limit to fit (it logs the
    budget), serves that many, holds the rest back instead of running out of
    fds, never crashes, and serves again once connections close."""
    loom_manager.shutdown()  # one loomd per pod: listeners share the port
    ld = harness.Loomd(topo.client, workdir, ["--loops", "1"],
                       prefix=["prlimit", "--nofile=256:256"]).start()
    try:
        m = re.search(r"budget: 256 fds = (\d+) reserved \+ (\d+) for \d+ pipes .* \+ 2 x (\d+) connections",
                      ld.stderr_text(full=True))
        assert m, "no budget line for 256 fds:%s" % ctx(ld)
        reserved, pipe_fds, conns = map(int, m.groups())
        assert reserved + pipe_fds + 2 * conns <= 256
        assert conns >= 16, "budget leaves only %d connections" % conns
        r = client.call("connect_echo_many", prefix="f", n=conns, host=S_V4,
                        port=ECHO_PORT, nbytes=4096, timeout=10)
        assert r["ok"] == conns, "%d of %d connections within the budget worked: %s%s" % (
            r["ok"], conns, r, ctx(ld))
        over = [client.call("connect", name="g%d" % i, host=S_V4, port=ECHO_PORT, timeout=3)
                for i in range(20)]
        futs = [client.submit("echo", name="g%d" % i, nbytes=64, seed=3, timeout=1.0)
                for i, c in enumerate(over) if c["ok"]]
        served = sum(1 for f in futs if f.result(10)["ok"])
        assert served == 0, "%d connections beyond the fd budget were served" % served
        ld.assert_alive()
        total, _, _ = ld.fds()
        assert total < 256, "loomd holds %d fds with a limit of 256" % total
        client.call("close_prefix", prefix="")
        st = ld.wait_status(lambda s: counter(s, "active") == 0, 10)
        assert counter(st, "active") == 0
        r = client.call("connect_echo_many", prefix="h", n=10, host=S_V4,
                        port=ECHO_PORT, nbytes=4096, timeout=10)
        assert r["ok"] == 10, "not served again after the load: %s%s" % (r, ctx(ld))
        ld.assert_alive()
    finally:
        client.call("close_prefix", prefix="")
        ld.stop()


def test_second_loomd_is_refused(loom, topo, workdir, client, echo_server):
    """A second loomd for the same pod must not silently share the port (SO_REUSEPORT
    would allow it): it exits with a clear error and the first keeps serving. A loomd
    that points at a live admin socket refuses too, instead of orphaning it."""
    second = harness.Loomd(topo.client, workdir, ["--loops", "1"])
    with pytest.raises(AssertionError) as e:
        second.start(ready_timeout=10)
    assert "holds the port" in str(e.value), str(e.value)
    second.stop()
    third = harness.Loomd(topo.server, workdir, ["--loops", "1"])
    third.admin = loom.admin
    with pytest.raises(AssertionError) as e:
        third.start(ready_timeout=10)
    assert "in use by a running loomd" in str(e.value), str(e.value)
    third.stop()
    loom.assert_alive()
    assert client.call("connect", name="s2", host=S_V4, port=ECHO_PORT)["ok"]
    assert client.call("echo", name="s2", nbytes=1024, seed=4)["ok"]
    client.call("close", name="s2")
    assert loom.status()["raw"]["pid"] == loom.pid


def test_pipe_budget_exhausted(loom_manager, topo, workdir, client, server, echo_server,
                               figure):
    """--pipe-pages 64 allows four 64 KiB pipes and no bulk growth. Four connections
    into a server that never reads pin all four pipes with bytes; a fifth connection
    then waits for a pipe (nothing is lost, nothing crashes) and is served as soon as
    the stuck ones are reset. Then six connections moving 16 MiB each way at once share
    the four pipes, never exceed them, and every byte arrives intact."""
    loom_manager.shutdown()  # one loomd per pod: listeners share the port
    ld = harness.Loomd(topo.client, workdir, ["--loops", "1", "--pipe-pages", "64"]).start()
    try:
        assert counter(ld.status(), "pipes_limit") == 4
        server.call("listen", name="ph", host=S_V4, port=7410)
        held = server.submit("accept_hold", lname="ph", prefix="hh", n=4)
        for i in range(4):
            assert client.call("connect", name="s%d" % i, host=S_V4, port=7410)["ok"]
        held.result(10)
        for i in range(4):
            r = client.call("fill", name="s%d" % i, max_bytes=256 * MiB, stall=1.0, timeout=60)
            assert r["end"] == "stalled", r
        st = ld.status()
        assert counter(st, "pipes_in_use") == 4, "stuck bytes should pin 4 pipes: %s" % st["raw"]

        assert client.call("connect", name="w", host=S_V4, port=ECHO_PORT)["ok"]
        e = client.call("echo", name="w", nbytes=512, seed=9, timeout=1.5)
        assert not e["ok"], "served without a pipe while the budget was used up: %s" % e
        st = ld.status()
        assert counter(st, "pipe_waiters") >= 1 and counter(st, "pipe_waits_total") >= 1, st["raw"]
        ld.assert_alive()

        server.call("close_prefix", prefix="hh")  # unread bytes: the server resets
        e = client.call("echo", name="w", nbytes=512, seed=9, timeout=5)
        assert e["ok"], "the waiting connection was not served after pipes freed: %s%s" % (
            e, ctx(ld))
        client.call("close_prefix", prefix="")
        server.call("unlisten", name="ph")
        wait_idle(ld)

        n, nbytes = 6, 16 * MiB
        with harness.Sampler(ld.pid, interval=0.02) as smp:
            srvs, clis = [], []
            for i in range(n):
                server.call("listen", name="pb%d" % i, host=S_V4, port=7400 + i)
                srvs.append(server.submit("xfer_server", lname="pb%d" % i, nbytes=nbytes,
                                          seed=20 + i, timeout=110))
            for i in range(n):
                clis.append(client.submit("xfer_client", host=S_V4, port=7400 + i,
                                          nbytes=nbytes, seed=40 + i, timeout=110))
            results = [(s.result(120), c.result(120)) for s, c in zip(srvs, clis)]
        figure("peak pipe fds with a 4-pipe budget", smp.peak_pipes)
        figure("times a direction waited for a pipe", counter(ld.status(), "pipe_waits_total"))
        for i, (s, c) in enumerate(results):
            assert s["recv"] == nbytes and c["recv"] == nbytes, (i, s, c, ctx(ld))
            assert s["recv_sha"] == c["sent_sha"] and c["recv_sha"] == s["sent_sha"], (
                "connection %d corrupted%s" % (i, ctx(ld)))
        assert smp.peak_pipes <= 8, "loomd held %d pipe fds with a budget of 4 pipes" % (
            smp.peak_pipes)
        ld.assert_alive()
        st = wait_idle(ld)
        assert counter(st, "pipe_waiters") == 0
    finally:
        client.call("close_prefix", prefix="")
        ld.stop()


def test_idle_timeout(loom_manager, client, server, echo_server):
    """--idle-timeout 2: a quiet connection is closed cleanly (the client reads EOF,
    nothing was in flight); a connection whose server never reads, with bytes stuck in
    loomd's pipe, is reset instead, never closed as if complete."""
    ld = loom_manager.ensure(["--idle-timeout", "2", "--loops", "1"])
    assert client.call("connect", name="q", host=S_V4, port=ECHO_PORT)["ok"]
    assert client.call("echo", name="q", nbytes=100, seed=1)["ok"]
    p = client.call("probe", name="q", timeout=6)
    assert p["end"] == "eof", "idle connection ended with %r, expected a clean EOF%s" % (p, ctx(ld))
    assert 1.5 <= p["elapsed"] <= 4.5, "closed after %.1fs with a 2 s idle timeout" % p["elapsed"]

    server.call("listen", name="it", host=S_V4, port=7420)
    held = server.submit("accept_hold", lname="it", prefix="ih", n=1)
    assert client.call("connect", name="stuck", host=S_V4, port=7420)["ok"]
    held.result(10)
    r = client.call("fill", name="stuck", max_bytes=256 * MiB, stall=1.0, timeout=60)
    assert r["end"] == "stalled", r
    assert counter(ld.status(), "pipes_in_use") >= 1, "no bytes stuck in loomd: nothing to show"
    p = client.call("probe", name="stuck", timeout=6)
    assert p["end"] == "reset", "stuck connection ended with %r, expected a reset%s" % (p, ctx(ld))
    assert "idle timeout" in ld.stderr_text(full=True), "no log line for the idle timeout%s" % ctx(ld)
    ld.assert_alive()
    wait_idle(ld)
    assert counter(ld.status(), "pipes_in_use") == 0
    client.call("close_prefix", prefix="")
    server.call("close_prefix", prefix="ih")
    server.call("unlisten", name="it")
