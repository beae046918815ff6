"""End-to-end tests of loomd as a transparent TCP proxy.

A client in pod namespace C connects to a server in pod namespace S by the
server's real address; nft in C redirects the connection to loomd's
listener (port 15001 in C), and loomd connects upstream to the original
destination with its socket mark (exempt from the redirect).

Tests that share the default loomd come first; tests needing special flags
restart it (see LoomManager) and come last.
"""

import time

import pytest

import harness
from harness import C_V4, C_V6, ECHO_PORT, S_V4, S_V6

MiB = 1 << 20
GiB = 1 << 30

FAMILIES = {
    "v4": (S_V4, C_V4, "127.0.0.1"),
    "v6": (S_V6, C_V6, "::1"),
}


def counter(st, key):
    v = st[key]
    assert v is not None, "loomctl status has no %r (keys %s); raw: %s" % (
        key, harness.STATUS_KEYS[key], st["raw"])
    return v


def accepted_delta(loom, st0):
    return counter(loom.status(), "accepted") - counter(st0, "accepted")


def cpu_ticks(pid):
    """utime + stime of a process, in clock ticks (1/100 s)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def ctx(loom):
    """Tail of loomd's stderr, for assertion messages."""
    return "\n--- loomd stderr (tail) ---\n" + loom.stderr_text()


def wait_idle(loom, timeout=10.0):
    st = loom.wait_status(lambda s: counter(s, "active") == 0, timeout)
    assert counter(st, "active") == 0, "loomd still reports %s active connections%s" % (
        st["active"], ctx(loom))
    return st


def wait_socket_fds(loom, at_most, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        total, pipes, socks = loom.fds()
        if socks <= at_most or time.monotonic() > deadline:
            return total, pipes, socks
        time.sleep(0.1)


# ----------------------------------------------------------- data integrity

@pytest.mark.parametrize("fam,nbytes", [("v4", GiB), ("v6", 64 * MiB)],
                         ids=["v4-1GiB", "v6-64MiB"])
def test_bidirectional_transfer(loom, client, server, figure, fam, nbytes):
    """nbytes each way at once on one connection; SHA-256 of both
    directions compared end to end."""
    dst, src, _ = FAMILIES[fam]
    port = 7101
    st0 = loom.status()
    server.call("listen", name="l", host=dst, port=port)
    srv = server.submit("xfer_server", lname="l", nbytes=nbytes, seed=2, timeout=110)
    t0 = time.monotonic()
    cli = client.call("xfer_client", host=dst, port=port, nbytes=nbytes, seed=1,
                      timeout=110, **{})
    s = srv.result(120)
    took = time.monotonic() - t0
    figure("%s transfer MiB/s (each way)" % fam, round(nbytes / MiB / took, 1))

    assert accepted_delta(loom, st0) >= 1, "connection did not go through loomd"
    st1 = loom.wait_status(lambda st: (
        counter(st, "bytes_up") - counter(st0, "bytes_up") >= nbytes and
        counter(st, "bytes_down") - counter(st0, "bytes_down") >= nbytes), 5)
    for k in ("bytes_up", "bytes_down"):
        d = st1[k] - st0[k]
        assert nbytes <= d < nbytes + MiB, "status %s grew by %d for %d bytes relayed" % (
            k, d, nbytes)
    assert s["peer"][0] == src, "server saw peer %s, expected the client pod" % s["peer"]
    assert "send_error" not in cli and "send_error" not in s, (cli, s, ctx(loom))
    assert cli["sent"] == nbytes and s["sent"] == nbytes
    assert s["recv"] == nbytes, "server got %d of %d bytes (%s)%s" % (
        s["recv"], nbytes, s["recv_end"], ctx(loom))
    assert cli["recv"] == nbytes, "client got %d of %d bytes (%s)%s" % (
        cli["recv"], nbytes, cli["recv_end"], ctx(loom))
    assert s["recv_sha"] == cli["sent_sha"], "client->server data corrupted"
    assert cli["recv_sha"] == s["sent_sha"], "server->client data corrupted"
    assert cli["recv_end"] == "eof" and s["recv_end"] == "eof"
    assert took < 60, "transfer took %.1fs" % took


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_half_close(loom, client, server, fam):
    """Client sends a request and SHUT_WR; server reads to EOF, answers
    10 MiB and closes; the client gets all of it, then EOF."""
    dst, src, _ = FAMILIES[fam]
    port = 7102
    server.call("listen", name="l", host=dst, port=port)
    srv = server.submit("serve_halfclose", lname="l", reply_bytes=10 * MiB, seed=5,
                        timeout=30)
    assert client.call("connect", name="c", host=dst, port=port)["ok"]
    req = client.call("send", name="c", nbytes=100 * 1024, seed=4)
    client.call("shutdown_wr", name="c")
    got = client.call("recv_to_end", name="c", timeout=30)
    s = srv.result(40)

    assert s["request"]["end"] == "eof", (
        "server never saw the client's FIN: %s%s" % (s["request"], ctx(loom)))
    assert s["request"]["len"] == 100 * 1024
    assert s["request"]["sha"] == req["sha"]
    assert s["peer"][0] == src
    assert got["len"] == 10 * MiB, "client got %d bytes, then %s%s" % (
        got["len"], got["end"], ctx(loom))
    assert got["sha"] == s["sha"]
    assert got["end"] == "eof"


# ---------------------------------------------------------------- failures

def test_upstream_reset_mid_stream(loom, client, server):
    """Server sends 4 MiB then aborts with RST: the client must see a reset,
    never a clean EOF."""
    port = 7103
    server.call("listen", name="l", host=S_V4, port=port)
    srv = server.submit("serve_rst", lname="l", nbytes=4 * MiB)
    assert client.call("connect", name="c", host=S_V4, port=port)["ok"]
    got = client.call("recv_to_end", name="c", timeout=20)
    s = srv.result(30)
    assert s["sent"] == 4 * MiB
    assert got["end"] == "reset", (
        "client saw %r after %d bytes instead of ECONNRESET%s" % (
            got["end"], got["len"], ctx(loom)))
    assert got["len"] <= 4 * MiB


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_upstream_port_closed(loom, client, fam):
    """Nothing listens on the destination port: connect fails or the
    connection is reset promptly; never a clean EOF."""
    dst = FAMILIES[fam][0]
    r = client.call("connect", name="c", host=dst, port=7999, timeout=5)
    if not r["ok"]:
        assert r["error"] in ("ECONNREFUSED", "ECONNRESET"), r
        return
    p = client.call("probe", name="c", timeout=5)
    assert p["end"] == "reset", "client saw %r instead of a reset%s" % (
        p["end"], ctx(loom))
    assert r["elapsed"] + p["elapsed"] < 2.0, "reset took %.2fs" % (
        r["elapsed"] + p["elapsed"])


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_no_self_loop(loom, client, fam):
    """Connecting straight to loomd's own listener (loopback is exempt from
    the redirect) is reset, not proxied back into loomd."""
    local = FAMILIES[fam][2]
    st0 = loom.status()
    base = loom.fds()
    r = client.call("connect", name="c", host=local, port=harness.OUTBOUND_PORT,
                    timeout=5)
    if r["ok"]:
        p = client.call("probe", name="c", timeout=3)
        assert p["end"] == "reset", (
            "connection to loomd's own listener ended with %r%s" % (p["end"], ctx(loom)))
    else:
        assert r["error"] in ("ECONNREFUSED", "ECONNRESET"), r
    client.call("close", name="c")
    time.sleep(0.3)
    d = accepted_delta(loom, st0)
    assert d <= 1, "loomd accepted %d connections: it proxied to itself%s" % (d, ctx(loom))
    total, pipes, socks = wait_socket_fds(loom, base[2])
    assert socks <= base[2], "loomd holds %d sockets, %d before%s" % (
        socks, base[2], ctx(loom))
    loom.assert_alive()


# ------------------------------------------------------------------- scale

def test_many_concurrent_echo(loom, client, echo_server, figure):
    """5,000 connections open at once, 64 KiB echoed on each."""
    n, size = 5000, 64 * 1024
    wait_idle(loom)
    base_total, base_pipes, base_socks = loom.fds()
    with harness.Sampler(loom.pid, interval=0.05) as smp:
        r = client.call("many_echo", host=S_V4, port=ECHO_PORT, n=n, nbytes=size,
                        timeout=150, max_connecting=256)
    budget = [l for l in loom.stderr_text(full=True).splitlines() if "budget" in l]
    figure("loomd budget line", budget[0].split("budget", 1)[1] if budget else None)
    figure("fds at rest", base_total)
    figure("peak fds (limit 20000)", smp.peak_fds)
    figure("peak socket fds", smp.peak_socks)
    figure("peak pipe fds", smp.peak_pipes)
    figure("fds per connection at peak", round((smp.peak_fds - base_total) / n, 2))
    figure("peak RSS MiB", round(smp.peak_rss / 1024, 1))
    figure("5000x64KiB elapsed s", round(r["elapsed"], 1))

    assert r["open_at_once"] == n, "only %d of %d connections opened: %s%s" % (
        r["open_at_once"], n, r["errors"], ctx(loom))
    assert r["mismatched"] == 0, "%d connections echoed wrong bytes" % r["mismatched"]
    assert r["completed"] == n, "%d of %d completed, errors %s, unfinished %d%s" % (
        r["completed"], n, r["errors"], r["unfinished"], ctx(loom))
    assert smp.samples > 0
    assert smp.peak_fds < 20000, "loomd peaked at %d fds" % smp.peak_fds
    loom.assert_alive()

    # everything is released afterwards
    wait_idle(loom, timeout=20)
    total, pipes, socks = wait_socket_fds(loom, base_socks, timeout=20)
    figure("fds after", total)
    assert socks <= base_socks, "loomd still holds %d sockets (%d before)" % (
        socks, base_socks)
    assert pipes <= 130, "loomd keeps %d pipe fds after the load" % pipes


def test_slow_reader_backpressure(loom, client, server, echo_server, figure):
    """Server never reads: the client must be blocked long before 1 GiB and
    loomd must not buffer the difference in memory."""
    port = 7104
    server.call("listen", name="l", host=S_V4, port=port)
    held = server.submit("accept_hold", lname="l", prefix="h", n=1)
    assert client.call("connect", name="c", host=S_V4, port=port)["ok"]
    held.result(10)
    rss0 = loom.rss_kib()
    with harness.Sampler(loom.pid, interval=0.05) as smp:
        r = client.call("fill", name="c", max_bytes=GiB, stall=2.0, timeout=120)
        rss_blocked = loom.rss_kib()
    growth = max(smp.peak_rss, rss_blocked) - rss0
    figure("written before stall MiB", round(r["written"] / MiB, 1))
    figure("RSS before/blocked/peak KiB", "%d/%d/%d" % (rss0, rss_blocked, smp.peak_rss))

    assert r["end"] == "stalled", "client was never blocked: %s%s" % (r, ctx(loom))
    assert r["written"] < 64 * MiB, "client wrote %.1f MiB into a non-reading server" % (
        r["written"] / MiB)
    assert r["written"] > 0
    assert growth < 32 * 1024, "loomd RSS grew by %d KiB" % growth
    # Stalled both ways (client blocked, server not reading): loomd must sleep, not spin.
    ticks0 = cpu_ticks(loom.pid)
    time.sleep(2.0)
    spent = cpu_ticks(loom.pid) - ticks0
    figure("loomd CPU ticks in 2 s while stalled", spent)
    assert spent <= 20, "loomd used %d ticks (1/100 s) in 2 s with nothing to do: it spins" % spent

    client.call("close", name="c")
    server.call("close_prefix", prefix="h")
    server.call("unlisten", name="l")
    loom.assert_alive()
    assert client.call("connect", name="n", host=S_V4, port=ECHO_PORT)["ok"]
    e = client.call("echo", name="n", nbytes=4096, seed=3)
    assert e["ok"], "loomd does not serve a new connection afterwards: %s%s" % (e, ctx(loom))


def test_idle_connections_hold_no_pipes(loom, client, echo_server, figure):
    """200 idle connections after one exchange each: no pipes in use, pipe
    fds bounded by the cache, about 2 socket fds per connection."""
    n = 200
    wait_idle(loom)
    base_total, base_pipes, base_socks = loom.fds()
    r = client.call("connect_echo_many", prefix="i", n=n, host=S_V4,
                    port=ECHO_PORT, nbytes=256, timeout=10)
    assert r["ok"] == n, "only %d of %d echo exchanges worked: %s%s" % (
        r["ok"], n, r["failures"], ctx(loom))
    time.sleep(0.5)
    st = loom.wait_status(lambda s: counter(s, "pipes_in_use") == 0, 5)
    total, pipes, socks = loom.fds()
    figure("idle: fds before/after", "%d/%d" % (base_total, total))
    figure("idle: pipe fds, status cached", "%d, %s" % (pipes, st["pipes_cached"]))
    figure("idle: socket fds added", socks - base_socks)

    assert counter(st, "active") == n, "status active=%s, expected %d" % (st["active"], n)
    assert counter(st, "pipes_in_use") == 0, "pipes in use while idle: %s" % st["raw"]
    assert pipes <= 130, "%d pipe fds held by %d idle connections" % (pipes, n)
    cached = counter(st, "pipes_cached")
    assert pipes <= 2 * cached + 2, (
        "%d pipe fds but status reports only %d cached pipes" % (pipes, cached))
    assert 2 * n - 2 <= socks - base_socks <= 2 * n + 4, (
        "%d idle connections added %d socket fds" % (n, socks - base_socks))
    assert total - base_total <= 2 * n + 130 + 4

    client.call("close_prefix", prefix="i")
    wait_idle(loom)
    total, pipes, socks = wait_socket_fds(loom, base_socks)
    assert socks <= base_socks, "sockets not released: %d, %d before" % (socks, base_socks)


# ------------------------------------------------------- special-flag loomd

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
    import re
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
    assert "already listening" in str(e.value), str(e.value)
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
