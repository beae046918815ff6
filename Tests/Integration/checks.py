"""Checks shared by the integration tests: status counters, loomd's log tail for
assertion messages, waits, CPU ticks."""

import time

import harness
from harness import C_V4, C_V6, S_V4, S_V6

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
