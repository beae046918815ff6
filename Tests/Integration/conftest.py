"""Fixtures for Loom's integration tests (see harness.py for the topology)."""

import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

ECHO_PORT = harness.ECHO_PORT

_figures = []


def pytest_terminal_summary(terminalreporter):
    if _figures:
        terminalreporter.section("loom integration figures")
        for test, name, value in _figures:
            terminalreporter.write_line("%-34s %-28s %s" % (test, name, value))


@pytest.fixture
def figure(request):
    """figure(name, value): recorded and printed in the run's summary."""
    def record(name, value):
        _figures.append((request.node.name, name, value))
        print("FIGURE %s = %s" % (name, value))
    return record


@pytest.fixture(scope="session")
def workdir():
    d = tempfile.mkdtemp(prefix="loomit-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def topo(workdir):
    why = harness.tools_missing()
    if why:
        pytest.skip(why)
    if not os.access(harness.loomd_path(), os.X_OK):
        pytest.skip("loomd not built: %s (build it or set LOOMD)" % harness.loomd_path())
    harness.install_signal_handlers()
    t = harness.Topology()
    try:
        t.create()
    except Exception as e:
        t.destroy()
        pytest.skip("cannot create network namespaces here: %s" % e)
    yield t
    t.destroy()


@pytest.fixture(scope="session")
def loom_manager(topo, workdir):
    m = harness.LoomManager(topo.client, workdir)
    yield m
    m.shutdown()


@pytest.fixture
def loom(loom_manager):
    """The shared loomd with default flags (restarted if another test changed
    them or it died)."""
    ld = loom_manager.ensure([])
    yield ld
    assert ld.alive(), "loomd died during the test (exit %s):\n%s" % (
        ld.proc.returncode, ld.stderr_text())


@pytest.fixture(scope="session")
def echo_server(topo, workdir):
    """Echo server in S on S_V4:7000 and [S_V6]:7000 (many connections)."""
    a = harness.Agent(topo.server, workdir, "echo")
    a.call("listen", name="e4", host=harness.S_V4, port=ECHO_PORT)
    a.call("listen", name="e6", host=harness.S_V6, port=ECHO_PORT)
    a.call("echo_server", lname="e4")
    a.call("echo_server", lname="e6")
    yield a
    a.close()


@pytest.fixture
def client(topo, workdir):
    a = harness.Agent(topo.client, workdir, "client")
    yield a
    a.close()


@pytest.fixture
def server(topo, workdir):
    a = harness.Agent(topo.server, workdir, "server")
    yield a
    a.close()


_pod_index = [20]


@pytest.fixture
def pod(topo):
    """Factory for fresh pods on the router (dual-stack unless told); deleted after the
    test: make(name, v4=True, v6=True) -> (netns, v4 address, v6 address)."""
    made = []

    def make(name, v4=True, v6=True):
        _pod_index[0] += 1
        ns, a4, a6 = topo.add_pod(name, _pod_index[0], v4=v4, v6=v6)
        made.append(ns)
        return ns, a4, a6
    yield make
    for ns in made:
        topo.remove_pod(ns)


@pytest.fixture
def node(workdir):
    """A loomd with no pods of its own (as on a fresh node), 2 loops."""
    ld = harness.Loomd(None, workdir, ["--loops", "2"]).start()
    yield ld
    ld.stop()
