"""The worker process's main: load the model once, transcribe the jobs the daemon sends, report back.

Runs only inside the ``spawn`` worker (started by :mod:`scribed.daemon.worker`).
"""

from __future__ import annotations

import os
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from loguru import logger

from scribed.config import Config


def _prepare_process(cfg: Config) -> None:
    """Privacy before anything else loads: guard, core dumps, where temporary files may go."""
    from scribed import logs
    from scribed.system import harden, netguard, tempdir

    logs.setup(cfg.service.log_level, process="scribed-worker")
    _die_with_parent()
    harden.disable_core_dumps()
    if cfg.policy.block_network:
        netguard.install_network_guard()
    if cfg.policy.intermediates == "tmpfs":
        temp = tempdir.PrivateTempDir(cfg.policy.temp_dir, cfg.watch.folders, cfg.policy.secure_delete_passes)
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
    from scribed.engine import runner

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
