"""The worker process: keeps the model loaded and transcribes the jobs the daemon sends it.

Contract:
- :class:`WorkerHandle` lives in the daemon's main process (which never imports torch) and
  starts the worker with multiprocessing ``spawn``. They talk over one duplex pipe:
  main -> worker: ``("jobs", [(job_id, path, OutputSpec), ...])``, ``("stop",)``;
  worker -> main: ``("ready", info)``, ``("progress", job_id, done, total)``,
  ``("result", job_id, outcome_dict)``, ``("idle", info)``, ``("unloaded",)``, ``("fatal", message)``.
- A worker that dies (segfault, CUDA error, OOM kill) is seen as ``alive == False`` / EOF; the
  daemon decides about retries. Recordings are only ever read here.
- The worker applies the privacy policy to itself: network guard, no core dumps, temporary
  files only in the private temp dir.
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

from scribed.config import Config


class WorkerHandle:
    """The main process's view of one worker process."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_entry, args=(cfg, child), name="scribed-worker", daemon=True)
        self.process.start()
        child.close()
        self.ready = False
        self.busy: list[int] = []  # job ids in flight
        self.started_at = time.monotonic()
        self.last_message_at = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def send(self, *message: Any) -> bool:
        try:
            self.conn.send(message)
            return True
        except (OSError, BrokenPipeError, EOFError):
            return False

    def receive(self, timeout: float) -> list[tuple[Any, ...]]:
        """Messages available within ``timeout`` seconds (then whatever else is already there)."""
        messages = []
        try:
            if self.conn.poll(timeout):
                while True:
                    messages.append(self.conn.recv())
                    if not self.conn.poll(0):
                        break
        except (EOFError, OSError):
            pass
        if messages:
            self.last_message_at = time.monotonic()
        return messages

    def stop(self, timeout: float) -> list[tuple[Any, ...]]:
        """Ask the worker to finish and exit; kill it if it does not within ``timeout``.

        Returns the messages it sent before exiting (results of its last batch): the pipe
        closes here, so this is the caller's only chance to read them.
        """
        messages: list[tuple[Any, ...]] = []
        if self.alive:
            self.send("stop")
            deadline = time.monotonic() + timeout
            # Read while waiting: a worker blocked on a full pipe could never exit otherwise.
            while self.process.is_alive() and time.monotonic() < deadline:
                messages += self.receive(min(1.0, max(0.0, deadline - time.monotonic())))
        messages += self.receive(0)
        self.kill()
        return messages

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()




def _worker_entry(cfg: Config, conn: Any) -> None:
    """Spawn target. Imports the engine side by name, inside the child only: the daemon process
    itself never loads it (an import test checks this)."""
    import importlib

    importlib.import_module("scribed.engine.serve").worker_main(cfg, conn)
