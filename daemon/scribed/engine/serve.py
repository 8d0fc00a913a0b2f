"""The worker process's main: load the model once, transcribe the jobs the daemon sends, report back.

Contract:
- Runs only inside the ``spawn`` worker (started by :mod:`scribed.daemon.worker`); speaks the
  :mod:`scribed.protocol` messages: Ready once the model is loaded (or Fatal, then exit), a
  Result per job (classified by :func:`scribed.engine.runner.classify`), Progress per chunk,
  Idle after each batch, Unloaded when the idle limit frees the model.
- SIGINT and SIGHUP are ignored from the first instruction: a Ctrl-C in the terminal reaches
  the whole process group, and stopping is the daemon's decision (it sends Stop, or kills).
  The worker also dies with its parent (PR_SET_PDEATHSIG), so no orphan keeps the GPU.
- The process is hardened (:func:`scribed.system.harden.harden_process`) before anything else
  loads.
- Per-recording settings (language, context, glossary, speakers, timestamps, output folder) come
  with each :class:`~scribed.protocol.JobSpec`; this process's config gives the model, the
  engine-wide options and the limits.
"""

from __future__ import annotations

import os
import signal
import time
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from loguru import logger

from scribed.config import Config
from scribed.protocol import Fatal, Idle, Jobs, Progress, Ready, Result, Stop, Unloaded

if TYPE_CHECKING:
    from scribed.engine.pipeline import Pipeline


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker if the daemon dies, so no orphan keeps the GPU or a file."""
    from scribed.system.libc import libc

    try:
        libc().prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)
    except (OSError, AttributeError):
        pass


def worker_main(cfg: Config, conn: Connection) -> None:
    """Entry point of the spawned worker. Returns (exits) on Stop or when the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _die_with_parent()
    from scribed import logs
    from scribed.system import harden

    logs.setup(cfg.service.log_level, process="scribed-worker")
    harden.harden_process(cfg, "worker")
    from scribed.engine import runner

    try:
        pipeline = runner.open_pipeline(cfg)
    except Exception as exc:  # a model that cannot load is fatal: tell the daemon why, then exit
        conn.send(Fatal(str(exc)))
        return
    engine = pipeline.engine
    conn.send(Ready(cfg.model.id, engine.device_name, engine.load_seconds, os.getpid()))
    idle_limit = cfg.model.idle_unload_min * 60 if cfg.model.idle_unload_min > 0 else None
    last_work = time.monotonic()
    while True:
        if not conn.poll(1.0):
            if idle_limit and engine.loaded and time.monotonic() - last_work > idle_limit:
                pipeline.unload()  # the model and the aligner / voice encoder, if loaded
                logger.info("model unloaded after {:.0f} idle minutes; it reloads with the next file",
                            cfg.model.idle_unload_min)
                conn.send(Unloaded())
            continue
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the daemon is gone
        if isinstance(message, Stop):
            return
        if not isinstance(message, Jobs):
            continue
        for result in _run_batch(cfg, pipeline, message, conn):
            conn.send(result)
        last_work = time.monotonic()
        conn.send(Idle())


def _run_batch(cfg: Config, pipeline: Pipeline, message: Jobs, conn: Connection) -> list[Result]:
    from scribed.engine import runner

    engine = pipeline.engine
    try:
        if not engine.loaded:
            engine.load()
            logger.info("model reloaded in {:.1f} s", engine.load_seconds)
        return runner.run_jobs(pipeline, message.jobs, overwrite=cfg.output.overwrite,
                               max_duration_s=cfg.transcription.max_duration_s,
                               on_progress=lambda job_id, done, total: conn.send(Progress(job_id, done, total)))
    except Exception as exc:  # e.g. the model could not be loaded again: every job of the batch says why
        logger.error("batch failed: {}: {}", type(exc).__name__, exc)
        return [Result(j.job_id, runner.classify(exc), f"{type(exc).__name__}: {exc}") for j in message.jobs]
