"""No heap allocation per event in the relay's steady state.

loomd runs with an LD_PRELOAD allocation counter (malloc_count.c) that reports the
number of malloc/calloc/realloc/memalign calls on SIGURG. One connection moves a small
amount each way, then another moves 64 times as much. If the relay allocated per event
(per splice, per epoll wake-up), the second count would be thousands larger: 512 MiB
each way is at least 16,384 splices of 64 KiB. Allocations per connection (logging,
the first growth of tables) appear in both and cancel out.
"""

import os
import shutil
import signal
import subprocess
import time

import pytest

import harness

HERE = os.path.dirname(os.path.abspath(__file__))
MiB = 1 << 20


def build_counter(workdir):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler for the allocation counter (install gcc)")
    lib = os.path.join(workdir, "libmalloc_count.so")
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", lib,
                    os.path.join(HERE, "malloc_count.c"), "-ldl"], check=True)
    return lib


def allocations(ld, path):
    os.kill(ld.pid, signal.SIGURG)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                text = f.read().strip()
            if text:
                os.unlink(path)
                return int(text)
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise AssertionError("allocation counter did not answer SIGURG")


def transfer(client, server, nbytes, port):
    server.call("listen", name="a%d" % port, host=harness.S_V4, port=port)
    srv = server.submit("xfer_server", lname="a%d" % port, nbytes=nbytes, seed=5, timeout=110)
    cli = client.call("xfer_client", host=harness.S_V4, port=port, nbytes=nbytes, seed=6,
                      timeout=110)
    s = srv.result(120)
    assert s["recv_sha"] == cli["sent_sha"] and cli["recv_sha"] == s["sent_sha"]


def test_no_allocation_per_event(loom_manager, topo, workdir, client, server, figure):
    lib = build_counter(workdir)
    countfile = os.path.join(workdir, "malloc-count")
    env = dict(os.environ, LD_PRELOAD=lib, LOOM_MALLOC_COUNT_FILE=countfile)
    loom_manager.shutdown()  # one loomd per pod: its listeners share the port
    ld = harness.Loomd(topo.client, workdir, ["--loops", "1"], env=env).start()
    try:
        transfer(client, server, 1 * MiB, 7301)  # warm-up: tables and pools grow once
        base = allocations(ld, countfile)
        transfer(client, server, 8 * MiB, 7302)
        small = allocations(ld, countfile) - base
        transfer(client, server, 512 * MiB, 7303)
        large = allocations(ld, countfile) - base - small
        figure("allocations, 8 MiB each way", small)
        figure("allocations, 512 MiB each way", large)
        st = ld.status()
        assert st["bytes_up"] >= 521 * MiB, "the transfers did not go through loomd"
        # Per-connection allocations are equal for both; per-event ones would scale 64x.
        assert large <= small + 32, (
            "loomd allocated %d times for 512 MiB each way but %d for 8 MiB: "
            "something on the relay path allocates per event" % (large, small))
    finally:
        ld.stop()
