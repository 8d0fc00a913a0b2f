"""The daemon's handle on its worker process (which keeps the model loaded and transcribes).

Contract:
- :class:`WorkerHandle` lives in the daemon's main process (which never imports torch) and
  starts the worker with multiprocessing ``spawn`` (the one process creation the daemon's
  hardening allows). They talk over one duplex pipe in :mod:`scribed.protocol` messages.
- The handle keeps the worker's state itself, from the worker's own messages: ``ready`` (the
  model is loaded), ``busy`` (job ids sent and not yet answered by a Result). :meth:`poll`
  returns typed events: the worker's messages, then :class:`Exited` once when the process is
  gone (segfault, OOM kill, a Fatal start), naming the jobs it never answered. The daemon
  decides about retries; it never writes the handle's state.
- :class:`HandleState` is that bookkeeping alone, shared with the tests' in-process fake.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loguru import logger

from scribed import protocol
from scribed.config import Config
from scribed.protocol import FromWorker, JobSpec


@dataclass(frozen=True)
class Exited:
    """The worker process is gone. ``unfinished``: jobs it took and never answered."""

    exitcode: int | None
    unfinished: tuple[int, ...]


Event = FromWorker | Exited
_FROM_WORKER = (protocol.Ready, protocol.Progress, protocol.Result, protocol.Idle, protocol.Unloaded,
                protocol.Fatal)


class HandleState:
    """What the daemon knows about one worker, updated only from that worker's events."""

    def __init__(self) -> None:
        self.ready = False
        self.busy: tuple[int, ...] = ()
        self.exited = False

    def _track(self, events: list[Event]) -> list[Event]:
        for event in events:
            if isinstance(event, protocol.Ready):
                self.ready = True
            elif isinstance(event, protocol.Result):
                self.busy = tuple(i for i in self.busy if i != event.job_id)
            elif isinstance(event, protocol.Fatal):
                self.ready = False
            elif isinstance(event, Exited):
                self.ready, self.busy, self.exited = False, (), True
        return events

    def _dispatched(self, jobs: Sequence[JobSpec]) -> None:
        self.busy = tuple(j.job_id for j in jobs)


class WorkerHandle(HandleState):
    """The main process's view of one worker process."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        from scribed.system import harden

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_entry, args=(cfg, child), name="scribed-worker", daemon=True)
        with harden.allow_process_creation():
            self.process.start()
        child.close()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return not self.exited and self.process.is_alive()

    def send_jobs(self, jobs: Sequence[JobSpec]) -> bool:
        """Hand a batch to the worker; False (and nothing busy) if it cannot be reached."""
        if not self.ready or self.busy or not self._send(protocol.Jobs(tuple(jobs))):
            return False
        self._dispatched(jobs)
        return True

    def request_stop(self) -> None:
        """Ask the worker to exit after its current batch; :class:`Exited` follows from :meth:`poll`."""
        self._send(protocol.Stop())

    def poll(self, timeout: float) -> list[Event]:
        """Events available within ``timeout`` seconds (then whatever else is already there)."""
        if self.exited:
            return []
        events: list[Event] = []
        gone = False
        try:
            more = self.conn.poll(timeout)
            while True:
                if not more:
                    if self.process.is_alive():
                        break
                    if not self.conn.poll(0):  # dead and drained (no EOF: another process holds the pipe)
                        gone = True
                        break
                message = self.conn.recv()  # a dead worker's last messages first, then EOF
                if isinstance(message, _FROM_WORKER):
                    events.append(message)
                else:
                    logger.debug("ignored unknown worker message {!r}", type(message).__name__)
                more = self.conn.poll(0)
        except (EOFError, OSError):
            gone = True
        if gone:
            self.process.join(5)
            events.append(Exited(self.process.exitcode, self.busy))
            self.conn.close()
        return self._track(events)

    def stop(self, timeout: float) -> list[Event]:
        """Ask the worker to exit, kill it if it has not within ``timeout``; returns every event
        it sent meanwhile (results of its last batch: this is the caller's last chance to read them)."""
        events: list[Event] = []
        if self.alive:
            self.request_stop()
            deadline = time.monotonic() + timeout
            # Read while waiting: a worker blocked on a full pipe could never exit otherwise.
            while not self.exited and time.monotonic() < deadline:
                events += self.poll(min(1.0, max(0.0, deadline - time.monotonic())))
        self.kill()
        return events + self.poll(0)

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)

    def _send(self, message: protocol.ToWorker) -> bool:
        try:
            self.conn.send(message)
            return True
        except (OSError, BrokenPipeError, EOFError, ValueError):  # ValueError: the pipe was closed
            return False


def _worker_entry(cfg: Config, conn: Any) -> None:
    """Spawn target. Imports the engine side by name, inside the child only: the daemon process
    itself never loads it (an import test checks this)."""
    import importlib

    importlib.import_module("scribed.engine.serve").worker_main(cfg, conn)
