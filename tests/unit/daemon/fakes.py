"""In-process stand-ins for the daemon's collaborators, released step by step by a test.

- :class:`FakeWorker` keeps its state with the real :class:`~scribed.daemon.worker.HandleState`
  (the same bookkeeping as the real handle) and emits only what the test tells it to:
  ``load()`` (Ready), ``complete(spec)`` (writes the transcript files for real, then Result),
  ``answer(job_id, outcome)``, ``fatal(message)``, ``die(code)``.
- :class:`Workers` is the worker factory; it remembers every worker the daemon started.
- :class:`FakeWatcher` delivers the Ready notices a test gives it at the next ``poll()``.
- :class:`Notes` records what the daemon told systemd.
- :func:`settled` is what the watcher reports for a real file (identity with its hash).
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from scribed import protocol
from scribed.daemon.worker import Event, Exited, HandleState
from scribed.identity import FileIdentity
from scribed.protocol import JobSpec

_pids = itertools.count(50000)


@dataclass(frozen=True)
class Settled:
    """The watcher's Ready (path, root, identity with sha256, audio_s)."""

    path: Path
    root: Path
    identity: FileIdentity
    audio_s: float | None = None


def settled(path: Path, root: Path, audio_s: float | None = 1.0) -> Settled:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Settled(path, root, FileIdentity.of(os.lstat(path), digest), audio_s)


class FakeWorker(HandleState):
    def __init__(self, cfg: object) -> None:
        super().__init__()
        self.cfg = cfg
        self.pid = next(_pids)
        self.batches: list[tuple[JobSpec, ...]] = []
        self.stop_requested = False
        self.killed = False
        self._events: list[Event] = []

    # -- what the daemon calls (same contract as WorkerHandle) ----------------------------------
    @property
    def alive(self) -> bool:
        return not self.exited

    def send_jobs(self, jobs: list[JobSpec]) -> bool:
        if not self.ready or self.busy or self.exited:
            return False
        self.batches.append(tuple(jobs))
        self._dispatched(jobs)
        return True

    def request_stop(self) -> None:
        self.stop_requested = True

    def poll(self, timeout: float) -> list[Event]:
        events, self._events = self._events, []
        return self._track(events)

    def stop(self, timeout: float) -> list[Event]:
        self.stop_requested = True
        events = self.poll(0)
        if not self.exited:
            events += self._track([Exited(-9 if self.busy else 0, self.busy)])
        self.killed = True
        return events

    def kill(self) -> None:
        self.killed = True

    # -- what the test calls ----------------------------------------------------------------------
    @property
    def current(self) -> tuple[JobSpec, ...]:
        return self.batches[-1] if self.batches else ()

    def load(self) -> None:
        self._events.append(protocol.Ready("fake-model", "cpu", 0.1, self.pid))

    def complete(self, spec: JobSpec, text: str = "hello world\n") -> None:
        """Write the transcripts the way the worker does, then report done."""
        written = {}
        for fmt, path in spec.outputs.items():
            path.write_text(text)
            written[fmt] = FileIdentity.of(os.lstat(path))
        self._events.append(protocol.Result(spec.job_id, "done", None, written, 1.0, "en"))

    def answer(self, job_id: int, outcome: str, error: str = "it failed") -> None:
        self._events.append(protocol.Result(job_id, outcome, error))  # type: ignore[arg-type]

    def progress(self, job_id: int, done: int, total: int) -> None:
        self._events.append(protocol.Progress(job_id, done, total))

    def fatal(self, message: str) -> None:
        self._events += [protocol.Fatal(message), Exited(0, self.busy)]

    def die(self, code: int = -11) -> None:
        self._events.append(Exited(code, self.busy))

    def exit_after_stop(self) -> None:
        assert self.stop_requested
        self._events.append(Exited(0, self.busy))


class Workers:
    """Worker factory for the daemon; ``started`` lists every worker it made, in order."""

    def __init__(self) -> None:
        self.started: list[FakeWorker] = []

    def __call__(self, cfg: object) -> FakeWorker:
        worker = FakeWorker(cfg)
        self.started.append(worker)
        return worker

    @property
    def last(self) -> FakeWorker:
        return self.started[-1]


class FakeWatcher:
    def __init__(self, watch: object, on_ready: Callable[[object], object], *, clock: object,
                 exclude: list[Path]) -> None:
        self.watch, self.on_ready, self.exclude = watch, on_ready, exclude
        self.inbox: list[Settled] = []
        self.running = False
        self.decisions: list[object] = []

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False

    def poll(self) -> None:
        inbox, self.inbox = self.inbox, []
        for ready in inbox:
            self.decisions.append(self.on_ready(ready))

    def pending(self) -> int:
        return len(self.inbox)

    def scanning(self) -> bool:
        return False

    def modes(self) -> dict[Path, str]:
        return {}


@dataclass
class Notes:
    """A Notifier that records."""

    sent: list[str] = field(default_factory=list)

    def ready(self, status: str | None = None) -> bool:
        self.sent.append("READY")
        return True

    def reloading(self) -> bool:
        self.sent.append("RELOADING")
        return True

    def stopping(self) -> bool:
        self.sent.append("STOPPING")
        return True

    def watchdog(self) -> bool:
        self.sent.append("WATCHDOG")
        return True

    def status(self, text: str) -> bool:
        self.sent.append(f"STATUS={text}")
        return True
