"""The worker handle: state kept from the worker's own events; one real spawned worker."""

from __future__ import annotations

import time
from pathlib import Path

from scribed import protocol
from scribed.config import parse_config
from scribed.daemon.worker import Exited, HandleState, WorkerHandle
from scribed.identity import FileIdentity
from scribed.protocol import JobSpec


def _spec(job_id: int) -> JobSpec:
    return JobSpec(job_id, Path(f"/in/{job_id}.wav"), Path("/in"), FileIdentity(1, job_id, 1, 1, "x"),
                   {"txt": Path(f"/in/{job_id}.txt")}, Path(f"/in/{job_id}.failed.txt"))


def test_state_follows_the_workers_events() -> None:
    state = HandleState()
    assert not state.ready and state.busy == ()
    state._track([protocol.Ready("m", "cpu", 1.0, 1)])
    assert state.ready
    state._dispatched([_spec(1), _spec(2)])
    assert state.busy == (1, 2)
    state._track([protocol.Progress(1, 1, 2), protocol.Result(1, "done")])
    assert state.busy == (2,)
    events = state._track([Exited(-9, state.busy)])
    assert events == [Exited(-9, (2,))]
    assert (state.ready, state.busy, state.exited) == (False, (), True)


def test_a_real_worker_that_cannot_load_its_model_says_why_and_exits(tmp_path: Path) -> None:
    cfg = parse_config({"watch": {"folders": [str(tmp_path)]}, "model": {"id": str(tmp_path / "no-such-model")},
                        "service": {"state_dir": str(tmp_path / "state")}})
    handle = WorkerHandle(cfg)
    assert handle.pid and handle.alive
    assert not handle.send_jobs([_spec(1)])  # not ready: nothing is sent, nothing busy
    assert handle.busy == ()
    events: list[object] = []
    deadline = time.monotonic() + 120
    while not handle.exited and time.monotonic() < deadline:
        events += handle.poll(1.0)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Fatal", "Exited"], events
    assert "no-such-model" in events[0].message  # type: ignore[attr-defined]
    assert events[1] == Exited(0, ())
    assert not handle.alive and not handle.ready
    assert handle.poll(0) == []  # Exited is reported once
    assert handle.stop(1) == []
