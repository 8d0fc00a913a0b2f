"""The worker's main loop, run in this process over a real pipe with the real tiny model.

Process-wide effects of the worker's start (signal dispositions, hardening, die-with-parent,
logging) are recorded instead of applied: they belong to the worker process, not to pytest.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import pytest
from e2e_helpers import wav

from scribed import logs, protocol
from scribed.config import Config, parse_config
from scribed.engine import runner, serve
from scribed.engine.pipeline import Pipeline
from scribed.errors import ModelError
from scribed.identity import FileIdentity
from scribed.system import harden


@pytest.fixture(scope="module")
def pipeline(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    return runner.open_pipeline(_cfg(tiny_model, tmp_path_factory.mktemp("cfg")))


def _cfg(model: Path, tmp_path: Path) -> Config:
    return parse_config({"watch": {"folders": [str(tmp_path)]}, "model": {"id": str(model), "device": "cpu"},
                         "service": {"state_dir": str(tmp_path / "state")},
                         "policy": {"block_network": False}})  # no irreversible guard in the test process


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    calls: list[object] = []
    monkeypatch.setattr(serve.signal, "signal", lambda sig, handler: calls.append((sig, handler)))
    monkeypatch.setattr(serve, "_die_with_parent", lambda: calls.append("die-with-parent"))
    monkeypatch.setattr(harden, "harden_process", lambda cfg, role: calls.append(("harden", role)))
    monkeypatch.setattr(logs, "setup", lambda *a, **k: None)
    return calls


def _serve(cfg: Config, *messages: object) -> list[object]:
    ours, theirs = multiprocessing.Pipe(duplex=True)
    for message in messages:
        ours.send(message)
    serve.worker_main(cfg, theirs)
    received = []
    while ours.poll(0):
        received.append(ours.recv())
    ours.close()
    theirs.close()
    return received


def test_the_worker_ignores_terminal_signals_first_then_hardens(started: list[object], pipeline: Pipeline,
                                                                tiny_model: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "open_pipeline", lambda cfg: pipeline)
    rec = wav(tmp_path / "a.wav")
    spec = protocol.JobSpec(5, rec, tmp_path, FileIdentity.of(os.lstat(rec)), {"txt": tmp_path / "a.txt"},
                            tmp_path / "a.failed.txt")
    received = _serve(_cfg(tiny_model, tmp_path), protocol.Jobs((spec,)), protocol.Stop())
    assert started[:2] == [(signal.SIGINT, signal.SIG_IGN), (signal.SIGHUP, signal.SIG_IGN)]
    assert started[2:] == ["die-with-parent", ("harden", "worker")]
    kinds = [type(m).__name__ for m in received]
    assert kinds[0] == "Ready" and kinds[-2:] == ["Result", "Idle"] and set(kinds[1:-2]) == {"Progress"}
    assert received[0].pid == os.getpid()
    result = received[-2]
    assert (result.job_id, result.outcome, result.language) == (5, "done", "en")
    assert (tmp_path / "a.txt").read_text() == "hello world\n"


def test_a_model_that_cannot_load_is_fatal(started: list[object], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(cfg: Config) -> Pipeline:
        raise ModelError("model 'x' is not in the cache; run scribed fetch-model")

    monkeypatch.setattr(runner, "open_pipeline", missing)
    received = _serve(_cfg(tmp_path / "x", tmp_path))
    assert received == [protocol.Fatal("model 'x' is not in the cache; run scribed fetch-model")]


class Unloaded:
    """The real engine, unloaded, whose reload fails."""

    def __init__(self, engine: object) -> None:
        self.name, self.device_name, self.load_seconds = "tiny", "cpu", 0.0
        self.loaded = False

    def load(self) -> None:
        raise MemoryError("no memory to load the model again")


def test_a_batch_whose_model_cannot_reload_is_answered_job_by_job(started: list[object], pipeline: Pipeline,
                                                                  tiny_model: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    broken = Pipeline(Unloaded(pipeline.engine), pipeline.options)  # type: ignore[arg-type]
    monkeypatch.setattr(runner, "open_pipeline", lambda cfg: broken)
    specs = tuple(protocol.JobSpec(i, tmp_path / f"{i}.wav", tmp_path, FileIdentity(0, i, 0, 0), {}, tmp_path / "n")
                  for i in (1, 2))
    received = _serve(_cfg(tiny_model, tmp_path), protocol.Jobs(specs), protocol.Stop())
    results = [m for m in received if isinstance(m, protocol.Result)]
    assert [(r.job_id, r.outcome) for r in results] == [(1, "transient"), (2, "transient")]
    assert "no memory to load the model again" in results[0].error
