"""Privacy promises, end to end: no network, nothing left behind, retention only after success,
systemd notifications from the real daemon."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from e2e_helpers import Env, wait_for, wav


@pytest.fixture
def env(tiny_model: Path, tmp_path: Path):
    e = Env(tmp_path, tiny_model)
    yield e
    e.stop_all()


def test_pipeline_in_a_namespace_without_network(env: Env) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare not installed")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"network namespaces not permitted here: {probe.stderr.decode().strip()}")
    src = wav(env.inbox / "offline.wav")
    result = subprocess.run(["unshare", "-n", *env.cmd("transcribe", str(src))], capture_output=True, text=True,
                            env=env.env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (env.inbox / "offline.txt").read_text() == "hello world\n"
    assert "network blocked" not in result.stderr


def test_guard_refuses_and_reports_in_the_daemon(env: Env) -> None:
    """The in-process guard is on in the running daemon and in its worker: a connection tried from
    inside each (by the test hook, while the daemon runs) is refused with NetworkBlockedError and
    logged by that process's guard; the suite's own socket spy (conftest) saw nothing here."""
    gate = env.hold(probe=True)
    daemon = env.start()
    env.drop("probe.wav")
    env.drop("held.wav")
    wait_for(gate.entered, what="the worker holding held.wav")
    assert gate.probe("daemon") == gate.probe("worker") == "NetworkBlockedError"
    worker = env.meta()["worker_pid"]
    gate.release()
    wait_for(lambda: env.states() == {"probe.wav": "done", "held.wav": "done"}, what="both done")
    blocked = [line for line in env.log().splitlines() if "network blocked:" in line and "127.0.0.1" in line]
    assert any(f"scribed[{daemon.pid}]" in line for line in blocked), blocked
    assert any(f"scribed-worker[{worker}]" in line for line in blocked), blocked
    assert "network:   blocked in-process" in env.run("status").stdout
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(60) == 0
    assert "network: blocked in-process" in env.log()


def test_stale_temporaries_are_wiped_securely(env: Env) -> None:
    stale = env.inbox / ".meeting.txt.scribed-0badc0de.tmp"
    stale.write_text("SECRET TRANSCRIPT " * 100)
    keep = env.tmp / "hardlink-to-stale"
    os.link(stale, keep)
    wav(env.inbox / "meeting.wav")
    assert env.run("run", "--once").returncode == 0
    assert not stale.exists()
    assert b"SECRET" not in keep.read_bytes()  # content overwritten before unlinking
    assert not [p for p in env.inbox.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("action", ["delete", "archive"])
def test_source_after_only_after_success(tiny_model: Path, tmp_path: Path, action: str) -> None:
    archive = tmp_path / "archive"
    env = Env(tmp_path, tiny_model, policy={"source_after": action, "archive_dir": str(archive)})
    good = wav(env.inbox / "proj" / "good.wav")
    content = good.read_bytes()
    bad = env.inbox / "proj" / "bad.mp3"
    bad.write_bytes(os.urandom(2000))
    assert env.run("run", "--once").returncode == 1
    assert (env.inbox / "proj" / "good.txt").read_text() == "hello world\n"
    assert not good.exists()
    if action == "archive":
        assert (archive / "proj" / "good.wav").read_bytes() == content
    else:
        assert not archive.exists()
    assert bad.exists() and (env.inbox / "proj" / "bad.failed.txt").exists()  # failures untouched


def test_sd_notify_ready_watchdog_status(tiny_model: Path, tmp_path: Path) -> None:
    env = Env(tmp_path, tiny_model)
    gate = env.hold()  # the file stays in progress until the test has seen what it needs
    sock_path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(sock_path))
    server.settimeout(1.0)
    env.extra_env.update({"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "2000000"})
    messages: list[str] = []

    def drain() -> list[str]:
        try:
            while True:
                messages.append(server.recv(4096).decode())
        except TimeoutError:
            pass
        return messages

    try:
        daemon = subprocess.Popen(env.cmd("run"), stdout=open(env.tmp / "daemon0.log", "w"),  # noqa: SIM115
                                  stderr=subprocess.STDOUT, env=env.env)
        env.procs.append(daemon)

        def ready_seen() -> bool:
            if any("READY=1" in m for m in drain()):
                # READY=1 is sent only once the worker reported the model loaded (recorded first).
                assert env.meta().get("ready_pid") == env.meta().get("worker_pid") is not None
                return True
            return False

        wait_for(ready_seen, what="READY=1")
        env.drop("held.wav")
        wait_for(lambda: any("transcribing held.wav" in m for m in drain()), what="STATUS with current file")
        first = next(i for i, m in enumerate(messages) if "transcribing held.wav" in m)
        # While the file is provably still in progress, the watchdog keeps being pinged.
        wait_for(lambda: any("WATCHDOG=1" in m for m in drain()[first + 1:]), what="WATCHDOG=1 while busy")
        assert gate.entered() and env.states()["held.wav"] == "working"
        gate.release()

        def done_while_reading() -> bool:
            drain()  # keep the socket's queue empty, as systemd would
            return env.states().get("held.wav") == "done"

        wait_for(done_while_reading, timeout=300, what="held.wav done")
        daemon.send_signal(signal.SIGTERM)
        wait_for(lambda: drain() and daemon.poll() is not None, what="daemon exit")  # keep reading meanwhile
        assert daemon.wait() == 0
        assert any("STOPPING=1" in m for m in drain())

    finally:
        gate.release()
        server.close()
        env.stop_all()
