"""Help text of loomd and loomctl against golden files (LOOM_UPDATE_GOLDEN=1 rewrites
them), and the CLI's answers to bad input: one clear line, a non-zero exit."""

import os
import subprocess

import pytest

import harness

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = dict(os.environ, COLUMNS="100")


def run(*cmd):
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=30, env=ENV)


@pytest.mark.parametrize("tool,args,golden", [
    ("loomd", ["--help"], "loomd-help.txt"),
    ("loomctl", ["--help"], "loomctl-help.txt"),
    ("loomctl", ["status", "--help"], "loomctl-status-help.txt"),
    ("loomctl", ["rules", "--help"], "loomctl-rules-help.txt"),
    ("loomctl", ["enable", "--help"], "loomctl-enable-help.txt"),
    ("loomctl", ["disable", "--help"], "loomctl-disable-help.txt"),
    ("loomctl", ["uninstall", "--help"], "loomctl-uninstall-help.txt"),
    ("loomctl", ["routes", "--help"], "loomctl-routes-help.txt"),
    ("loomctl", ["explain", "--help"], "loomctl-explain-help.txt"),
    ("loomctl", ["reload", "--help"], "loomctl-reload-help.txt"),
    ("loomctl", ["config", "validate", "--help"], "loomctl-config-validate-help.txt"),
    ("loomctl", ["trace", "--help"], "loomctl-trace-help.txt"),
    ("loomctl", ["top", "--help"], "loomctl-top-help.txt"),
    ("loomctl", ["metrics", "--help"], "loomctl-metrics-help.txt"),
])
def test_help_text(tool, args, golden):
    binary = harness.loomd_path() if tool == "loomd" else harness.loomctl_path()
    if not os.access(binary, os.X_OK):
        pytest.skip("%s not built" % binary)
    out = run(binary, *args)
    assert out.returncode == 0, out.stderr
    path = os.path.join(HERE, "golden", golden)
    if os.environ.get("LOOM_UPDATE_GOLDEN") == "1":
        with open(path, "w") as f:
            f.write(out.stdout)
    with open(path) as f:
        assert out.stdout == f.read(), "help differs from golden/%s (LOOM_UPDATE_GOLDEN=1 rewrites)" % golden


@pytest.mark.parametrize("tool,args,message", [
    ("loomd", ["--loops", "0"], "--loops must be between 1 and 256"),
    ("loomd", ["--mark", "loom"], "--mark must be a 32-bit number"),
    ("loomd", ["--pipe-size", "4096"], "--pipe-size must be between 65536 and 1048576"),
    ("loomd", ["--netns", "loom-no-such-netns", "--admin-socket", "/tmp/loom-cli-test.sock"],
     "ip netns list"),
    ("loomctl", ["rules", "--exclude-cidrs", "10.1.2.3/8"], "did you mean 10.0.0.0/8"),
    ("loomctl", ["rules", "--exclude-outbound-ports", "80,http"], "'http' is not a port"),
    ("loomctl", ["rules", "--fail", "sometimes"], "--fail must be 'closed' or 'open'"),
    ("loomctl", ["rules", "--mark", "0xnope"], "--mark must be a 32-bit number"),
    ("loomctl", ["status", "--admin-socket", "/tmp/loom-cli-test-nothing.sock"], "is loomd running"),
    ("loomctl", ["explain", "--to", "10.96.0.10", "--admin-socket", "/tmp/loom-cli-test-nothing.sock"],
     "is not IP:PORT"),
    ("loomctl", ["explain", "--to", "10.96.0.10:80", "--sni", "a", "--host", "b"], "give one kind"),
    ("loomctl", ["config", "validate", "/nonexistent/loom.yaml"], "cannot read it"),
    ("loomd", ["--config", "/nonexistent/loom.yaml", "--admin-socket", "/tmp/loom-cli-test.sock",
               "--state-dir", "/tmp/loom-cli-test-state"], "cannot read it"),
])
def test_bad_input(tool, args, message):
    """One clear line naming the problem, a non-zero exit."""
    binary = harness.loomd_path() if tool == "loomd" else harness.loomctl_path()
    if not os.access(binary, os.X_OK):
        pytest.skip("%s not built" % binary)
    out = run(binary, *args)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr
