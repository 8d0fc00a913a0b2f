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
import os
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from loguru import logger

from scribed.config import Config


class WorkerHandle:
    """The main process's view of one worker process."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=worker_main, args=(cfg, child), name="scribed-worker", daemon=True)
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


# -- inside the worker process ---------------------------------------------------------------------


def _prepare_process(cfg: Config) -> None:
    """Privacy before anything else loads: guard, core dumps, where temporary files may go."""
    from scribed import logs, policy

    logs.setup(cfg.service.log_level, process="scribed-worker")
    _die_with_parent()
    policy.disable_core_dumps()
    if cfg.policy.block_network:
        policy.install_network_guard()
    if cfg.policy.intermediates == "tmpfs":
        temp = policy.PrivateTempDir(cfg.policy.temp_dir, cfg.watch.folders, cfg.policy.secure_delete_passes)
        removed = temp.wipe_stale()
        if removed:
            logger.info("wiped {} stale temporary file(s) from {}", removed, temp.path)
        target = str(temp.path)
    else:
        # memory: nothing of ours is written; libraries that insist on a temp file still get a
        # private folder rather than the shared /tmp.
        target = os.environ.get("XDG_RUNTIME_DIR") or os.environ.get("TMPDIR") or "/tmp"
    for var in ("TMPDIR", "TEMP", "TMP", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        os.environ[var] = target


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker if the daemon dies, so no orphan keeps the GPU or a file."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)
    except (OSError, AttributeError):
        pass


def worker_main(cfg: Config, conn: Connection) -> None:
    """Entry point of the spawned worker. Returns (exits) on "stop" or when the pipe closes."""
    _prepare_process(cfg)
    from scribed import runner

    try:
        pipeline = runner.open_pipeline(cfg)
    except Exception as exc:  # a model that cannot load is fatal: tell the daemon why, then exit
        conn.send(("fatal", str(exc)))
        return
    engine = pipeline.engine
    conn.send(("ready", {"model": cfg.model.id, "device": engine.device_name, "load_s": engine.load_seconds,
                         "pid": os.getpid()}))
    idle_limit = cfg.model.idle_unload_min * 60 if cfg.model.idle_unload_min > 0 else None
    last_work = time.monotonic()
    while True:
        timeout = 1.0
        if not conn.poll(timeout):
            if idle_limit and engine.loaded and time.monotonic() - last_work > idle_limit:
                engine.unload()
                logger.info("model unloaded after {:.0f} idle minutes; it reloads with the next file",
                            cfg.model.idle_unload_min)
                conn.send(("unloaded",))
            continue
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the daemon is gone
        if message[0] == "stop":
            return
        if message[0] != "jobs":
            continue
        jobs: list[tuple[int, str, Any]] = message[1]
        if not engine.loaded:
            engine.load()
            logger.info("model reloaded in {:.1f} s", engine.load_seconds)
        ids = {Path(path): job_id for job_id, path, _ in jobs}

        def on_event(kind: str, path: Path, info: dict[str, object], ids: dict[Path, int] = ids) -> None:
            if kind == "chunk":
                conn.send(("progress", ids[path], info["done"], info["total"]))

        outcomes = runner.transcribe_files(pipeline, [Path(p) for _, p, _ in jobs], [s for _, _, s in jobs],
                                           on_event=on_event)
        for (job_id, _, _), outcome in zip(jobs, outcomes, strict=True):
            conn.send(("result", job_id, {
                "ok": outcome.ok, "error": outcome.error, "audio_s": outcome.duration_s,
                "language": outcome.language, "failures": outcome.failures,
                "outputs": {fmt: str(p) for fmt, p in outcome.outputs.items()},
            }))
        last_work = time.monotonic()
        conn.send(("idle", {}))
