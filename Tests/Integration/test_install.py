"""Installing Loom as a node daemon: scripts/install.sh into a scratch root (DESTDIR),
the files it puts there, the systemd unit (systemd-analyze verify when available), the
default configuration (valid, empty), uninstall keeping an edited configuration, and
loomd's sd_notify READY/STOPPING under Type=notify."""

import os
import shutil
import socket
import subprocess
import tempfile

import harness
from harness import run

REPO = harness.REPO


def install(destdir, *args):
    env = dict(os.environ, DESTDIR=destdir, BIN=os.path.dirname(harness.loomd_path()))
    p = subprocess.run(["bash", os.path.join(REPO, "scripts", "install.sh"), *args], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return p


def test_install_into_scratch_root_and_uninstall():
    root = tempfile.mkdtemp(prefix="loom-install-")
    try:
        out = install(root).stdout
        assert "Loom installed into" in out, out
        files = {os.path.relpath(os.path.join(d, f), root): os.stat(os.path.join(d, f)).st_mode & 0o777
                 for d, _, fs in os.walk(root) for f in fs}
        assert files == {
            "usr/local/bin/loomd": 0o755,
            "usr/local/bin/loomctl": 0o755,
            "etc/loom/loom.yaml": 0o644,
            "etc/systemd/system/loomd.service": 0o644,
            "usr/local/share/doc/loom/README.md": 0o644,
            "usr/local/share/doc/loom/ARCHITECTURE.md": 0o644,
        }, files
        unit = open(os.path.join(root, "etc/systemd/system/loomd.service")).read()
        assert "Type=notify" in unit and "--config /etc/loom/loom.yaml" in unit
        assert "CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_ADMIN CAP_SYS_PTRACE" in unit
        p = run(os.path.join(root, "usr/local/bin/loomctl"), "config", "validate",
                os.path.join(root, "etc/loom/loom.yaml"))
        assert "valid: 0 service(s)" in p.stdout
        if shutil.which("systemd-analyze"):
            # Verify against the installed binary (the unit's /usr/local path is not on
            # this machine).
            check = os.path.join(root, "verify")
            os.mkdir(check)
            with open(os.path.join(check, "loomd.service"), "w") as f:
                f.write(unit.replace("/usr/local/bin/loomd", os.path.join(root, "usr/local/bin/loomd")))
            v = run("systemd-analyze", "verify", os.path.join(check, "loomd.service"), check=False)
            assert v.returncode == 0, v.stderr
            shutil.rmtree(check)
        # An edited configuration survives install and uninstall.
        with open(os.path.join(root, "etc/loom/loom.yaml"), "a") as f:
            f.write("# edited\n")
        assert "keeping the existing" in install(root).stdout
        install(root, "--uninstall")
        left = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
        assert left == ["etc/loom/loom.yaml"], left
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_sd_notify_ready_and_stopping(workdir):
    """Under Type=notify systemd waits for READY=1: loomd sends it once it is ready, and
    STOPPING=1 when SIGTERM starts the drain."""
    path = os.path.join(tempfile.mkdtemp(prefix="loom-notify-", dir=workdir), "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(20)
    ld = harness.Loomd(None, workdir, ["--loops", "1"], env=dict(os.environ, NOTIFY_SOCKET=path))
    try:
        ld.start()
        ready = sock.recv(4096).decode()
        assert "READY=1" in ready and "MAINPID=%d" % ld.pid in ready, ready
        ld.stop()
        assert "STOPPING=1" in sock.recv(4096).decode()
    finally:
        ld.stop()
        sock.close()
