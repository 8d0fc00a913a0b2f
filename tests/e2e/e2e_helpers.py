"""Helpers for the end-to-end tests: a scribed config in a temp folder, the daemon as a process."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
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

    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "scribed.cli", *args, "--config", str(self.config)]

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, PYTHONPATH=str(ROOT / "daemon"), PYTHONUNBUFFERED="1", **self.extra_env)

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(*args), capture_output=True, text=True, timeout=timeout, env=self.env)

    def start(self) -> subprocess.Popen:
        log = open(self.tmp / f"daemon{len(self.procs)}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(self.cmd("run"), stdout=log, stderr=subprocess.STDOUT, env=self.env)
        self.procs.append(proc)
        def ready() -> bool:
            meta = self.meta()
            return proc.poll() is not None or (meta.get("pid") == proc.pid and meta.get("ready_pid") is not None
                                               and meta.get("ready_pid") == meta.get("worker_pid"))

        wait_for(ready, what="worker ready")
        assert proc.poll() is None, self.log()
        return proc

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


