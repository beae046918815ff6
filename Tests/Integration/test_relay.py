"""End-to-end tests of loomd as a transparent TCP proxy.

A client in pod namespace C connects to a server in pod namespace S by the
server's real address; nft in C redirects the connection to loomd's
listener (port 15001 in C), and loomd connects upstream to the original
destination with its socket mark (exempt from the redirect).

These tests share the default loomd; tests that need other flags are in
test_limits.py.
"""

import time

import pytest

import harness
from checks import (FAMILIES, GiB, MiB, accepted_delta, counter, cpu_ticks, ctx,
                    wait_idle, wait_socket_fds)
from harness import ECHO_PORT, S_V4

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
