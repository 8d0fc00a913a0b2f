"""Helpers for the end-to-end tests: a scribed config in a temp folder, the daemon as a process.

Holding a job deterministically (:meth:`Env.hold`): the daemon and its worker are started with a
``sitecustomize`` hook on their PYTHONPATH (test code, loaded by every Python process the test
starts, never part of scribed). In the worker it wraps ``runner.run_jobs``: a batch with a
recording whose name starts with ``held`` writes ``GATE.entered`` and then waits until the test
creates ``GATE``. With ``probe=True`` the hook also tries a loopback connection from inside the
running worker (while holding) and the daemon (when a recording named ``probe*`` settles) and
writes what happened to ``GATE.worker-probe`` / ``GATE.daemon-probe``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

ROOT = Path(__file__).resolve().parents[2]
SR = 16000


def wait_for(condition: Callable[[], object], timeout: float = 120, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)  # polling a condition with a deadline, not timing a race
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Env:
    def __init__(self, tmp: Path, model_path: Path, **sections: dict) -> None:
        self.tmp = tmp
        self.inbox = tmp / "inbox"
        self.inbox.mkdir()
        self.state = tmp / "state"
        data: dict = {
            "watch": {"folders": [str(self.inbox)], "settle_s": 0.5, "poll_interval_s": 0.3, "rescan_interval_s": 5},
            "model": {"id": str(model_path), "device": "cpu", "batch_size": 8},
            "service": {"state_dir": str(self.state), "stop_timeout_s": 60},
        }
        for name, values in sections.items():
            data.setdefault(name, {}).update(values)
        self.config = tmp / "config.yaml"
        self.config.write_text(yaml.safe_dump(data, allow_unicode=True))
        self.procs: list[subprocess.Popen] = []
        self.extra_env: dict[str, str] = {}
        self.python_path: list[str] = [str(ROOT / "daemon")]

    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "scribed.cli", *args, "--config", str(self.config)]

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, PYTHONPATH=os.pathsep.join(self.python_path), PYTHONUNBUFFERED="1", **self.extra_env)

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(*args), capture_output=True, text=True, timeout=timeout, env=self.env)

    def start(self, **popen: object) -> subprocess.Popen:
        if "stdout" not in popen:
            popen["stdout"] = open(self.tmp / f"daemon{len(self.procs)}.log", "w")  # noqa: SIM115 - closed with it
            popen["stderr"] = subprocess.STDOUT
        proc = subprocess.Popen(self.cmd("run"), env=self.env, **popen)  # type: ignore[call-overload]
        self.procs.append(proc)
        self.wait_ready(proc)
        return proc

    def wait_ready(self, proc: subprocess.Popen) -> None:
        def ready() -> bool:
            meta = self.meta()
            return proc.poll() is not None or (meta.get("pid") == proc.pid and meta.get("ready_pid") is not None
                                               and meta.get("ready_pid") == meta.get("worker_pid"))

        wait_for(ready, what="worker ready")
        assert proc.poll() is None, self.log()

    def hold(self, *, probe: bool = False) -> Gate:
        """Install the gate hook (see the module docstring) for every process started from now on."""
        hook = self.tmp / "hook"
        hook.mkdir(exist_ok=True)
        (hook / "sitecustomize.py").write_text(GATE_HOOK)
        self.python_path.insert(0, str(hook))
        gate = Gate(self.tmp / "gate")
        self.extra_env["SCRIBED_TEST_GATE"] = str(gate.path)
        if probe:
            self.extra_env["SCRIBED_TEST_NET_PROBE"] = "1"
        return gate

    def job(self, name: str) -> tuple[str, int, str | None]:
        """(state, attempts, last_error) of the job whose file is called ``name``."""
        with self.db() as db:
            rows = [r[1:] for r in db.execute("SELECT path, state, attempts, last_error FROM jobs")
                    if Path(r[0]).name == name]
        assert len(rows) == 1, rows
        return rows[0]

    def drop(self, name: str, seconds: float = 1.5, folder: Path | None = None) -> Path:
        """Deliver a recording the way sync clients do: written elsewhere, renamed into place."""
        staged = wav(self.tmp / "staging" / name, seconds=seconds)
        target = (folder or self.inbox) / name
        os.rename(staged, target)
        return target

    def log(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.tmp.glob("daemon*.log")))

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.state / 'journal.sqlite3'}?mode=ro", uri=True, timeout=5)

    def meta(self) -> dict:
        if not (self.state / "journal.sqlite3").exists():
            return {}
        try:
            with self.db() as db:
                return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
        except sqlite3.OperationalError:
            return {}

    def states(self) -> dict[str, str]:
        if not (self.state / "journal.sqlite3").exists():
            return {}
        try:
            with self.db() as db:
                return {Path(p).name: s for p, s in db.execute("SELECT path, state FROM jobs")}
        except sqlite3.OperationalError:
            return {}

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)


def wav(path: Path, seconds: float = 1.5, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = (0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
         + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, SR)
    return path




@dataclass(frozen=True)
class Gate:
    """The test's side of the gate hook."""

    path: Path

    def entered(self) -> str:
        """What the worker holding a batch wrote ("PID NAME..."); empty until one holds."""
        marker = self.path.with_name(self.path.name + ".entered")
        return marker.read_text() if marker.exists() else ""

    def release(self) -> None:
        self.path.touch()

    def probe(self, where: str) -> str:
        result = self.path.with_name(f"{self.path.name}.{where}-probe")
        return result.read_text() if result.exists() else ""


GATE_HOOK = """\
# Test hook (tests/e2e/e2e_helpers.py): holds jobs of recordings named held* until GATE exists.
import importlib.abc
import importlib.machinery
import os
import socket
import sys
import time

GATE = os.environ.get("SCRIBED_TEST_GATE", "")
PROBE = bool(os.environ.get("SCRIBED_TEST_NET_PROBE"))


def probe(where):
    try:
        socket.create_connection(("127.0.0.1", 9), timeout=1).close()
        outcome = "connected"
    except OSError as exc:
        outcome = type(exc).__name__
    with open(GATE + "." + where + "-probe", "w") as fh:
        fh.write(outcome)


def wrap_runner(runner):
    original = runner.run_jobs

    def run_jobs(pipeline, jobs, **kwargs):
        held = [j.path.name for j in jobs if j.path.name.startswith("held")]
        if held:
            if PROBE:
                probe("worker")
            with open(GATE + ".entered", "w") as fh:
                fh.write(str(os.getpid()) + " " + " ".join(held))
            deadline = time.monotonic() + 600
            while not os.path.exists(GATE) and time.monotonic() < deadline:
                time.sleep(0.05)  # polling the test's gate file, with a deadline
        return original(pipeline, jobs, **kwargs)

    runner.run_jobs = run_jobs


def wrap_jobs(jobs):
    original = jobs.intake

    def intake(cfg, journal, ready):
        if PROBE and ready.path.name.startswith("probe"):
            probe("daemon")
        return original(cfg, journal, ready)

    jobs.intake = intake


WRAP = {"scribed.engine.runner": wrap_runner, "scribed.daemon.jobs": wrap_jobs}


class After(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        wrap = WRAP.get(name)
        if wrap is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            wrap(module)

        spec.loader.exec_module = exec_module
        return spec


if GATE:
    sys.meta_path.insert(0, After())
"""
