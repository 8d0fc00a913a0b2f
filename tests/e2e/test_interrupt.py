"""Ctrl-C on `scribed run` in a terminal: the daemon runs in a pseudo-terminal as its session's
foreground process group, and the test types ^C into it, so the terminal driver signals the
whole group (daemon and worker) exactly as a user's Ctrl-C does. The job is held by the gate
hook (e2e_helpers), so it is provably in progress when the signal arrives."""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import subprocess
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import Env, Gate, wait_for


class Terminal:
    """A pty whose slave is the daemon's controlling terminal; output is copied to a log file."""

    def __init__(self, log: Path) -> None:
        self.master, self.slave = pty.openpty()
        self.log = log
        self._reader = threading.Thread(target=self._copy, name="pty-reader", daemon=True)

    def _copy(self) -> None:
        with open(self.log, "wb") as out:
            while True:
                try:
                    data = os.read(self.master, 4096)
                except OSError:  # EIO: every process holding the slave is gone
                    return
                if not data:
                    return
                out.write(data)
                out.flush()

    def popen(self) -> dict[str, object]:
        slave = self.slave

        def controlling_tty() -> None:  # runs in the child after setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self._reader.start()
        return {"stdin": slave, "stdout": slave, "stderr": slave, "start_new_session": True,
                "preexec_fn": controlling_tty}

    def ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def close(self) -> None:
        os.close(self.slave)
        self._reader.join(30)
        os.close(self.master)


@pytest.fixture
def held(tiny_model: Path, tmp_path: Path) -> Iterator[tuple[Env, Gate, Terminal]]:
    env = Env(tmp_path, tiny_model)
    gate = env.hold()
    terminal = Terminal(tmp_path / "daemon0.log")
    yield env, gate, terminal
    gate.release()
    env.stop_all()
    terminal.close()


def _running_with_a_held_job(env: Env, gate: Gate, terminal: Terminal) -> tuple[subprocess.Popen, int]:
    daemon = env.start(**terminal.popen())
    assert termios.tcgetattr(terminal.slave)[3] & termios.ISIG  # ^C means SIGINT on this terminal
    env.drop("held meeting.wav")
    wait_for(gate.entered, what="the worker holding the job")
    worker = int(gate.entered().split()[0])
    assert worker == env.meta()["worker_pid"] and os.getpgid(worker) == os.getpgid(daemon.pid) == daemon.pid
    assert env.job("held meeting.wav")[:2] == ("working", 1)
    return daemon, worker


def test_ctrl_c_finishes_the_current_file(held: tuple[Env, Gate, Terminal]) -> None:
    env, gate, terminal = held
    daemon, worker = _running_with_a_held_job(env, gate, terminal)
    terminal.ctrl_c()
    wait_for(lambda: "stop requested: finishing the current job" in env.log(), what="the stop noticed")
    os.kill(worker, 0)  # the worker got the same SIGINT and is still working
    assert daemon.poll() is None and env.job("held meeting.wav")[0] == "working"
    gate.release()
    assert daemon.wait(120) == 0
    assert env.job("held meeting.wav") == ("done", 1, None)
    assert (env.inbox / "held meeting.txt").read_text() == "hello world\n"
    assert not list(env.inbox.glob("*.failed.txt"))
    assert "worker died" not in env.log() and "KeyboardInterrupt" not in env.log()


def test_a_second_ctrl_c_requeues_without_counting_an_attempt(held: tuple[Env, Gate, Terminal]) -> None:
    env, gate, terminal = held
    daemon, _worker = _running_with_a_held_job(env, gate, terminal)
    terminal.ctrl_c()
    wait_for(lambda: "stop requested" in env.log(), what="the first stop noticed")
    terminal.ctrl_c()
    assert daemon.wait(60) == 0
    assert env.job("held meeting.wav") == ("queued", 0, None)  # requeued; not a failed attempt
    assert not list(env.inbox.glob("*.failed.txt")) and not (env.inbox / "held meeting.txt").exists()
    gate.release()
    again = env.start()  # the next start transcribes it, as its first attempt
    wait_for(lambda: env.states().get("held meeting.wav") == "done", what="done after restart")
    again.send_signal(signal.SIGTERM)
    assert again.wait(60) == 0
    assert env.job("held meeting.wav") == ("done", 1, None)
