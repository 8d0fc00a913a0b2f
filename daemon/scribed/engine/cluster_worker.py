"""``scribed worker``: a Celery worker on a GPU host that transcribes the coordinator's jobs.

Contract:
- :func:`worker_command` hardens the process (role "worker": core dumps off, network guard with
  the broker as the one endpoint allowed, no child processes) before the model or Celery
  loads; loads the model once and keeps it warm (unloaded after ``model.idle_unload_min`` idle,
  reloaded with the next job); then runs a Celery worker with the solo pool (the model lives in
  this process; nothing forks) on ``cluster.queue``. It holds one message at a time (at most
  ``cluster.prefetch`` recordings, transcribed together), acknowledged late: a worker that dies
  leaves it to the broker, which hands it out again after ``cluster.visibility_timeout_s``.
  SIGTERM/SIGINT finish the current message, then exit 0; Celery's SIGHUP re-exec is disabled
  (it would be refused: restart through systemd). Exit status 2: config or model problem.
- Each job runs once however often its message is delivered (:mod:`scribed.engine.cluster_ledger`):
  a job with a result, or claimed by a live worker, is dropped; a claimed job's claim is renewed
  while this worker works on it. A job is checked (:func:`scribed.engine.cluster_jobs.localize`:
  mapped paths only, the recording's size, mtime and sha256), transcribed and written by
  :func:`scribed.engine.runner.run_jobs` (its identity checks and safe writes: the same rules
  as a local job; ``output.overwrite`` and the transcription settings come from this host's
  config), and its Result stored for the coordinator. A job given again after its worker died
  whose transcripts that attempt already wrote is reported done without writing them again.
  A message taken while the ledger cannot be reached goes back to the queue (never dropped).
- A background thread renews claims, publishes this worker's heartbeat (host, device, model,
  current recordings) and unloads an idle model.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from loguru import logger

from scribed import wire
from scribed.config import Config
from scribed.engine import cluster_jobs
from scribed.engine.cluster_ledger import Ledger, lease_s
from scribed.errors import RecordingChanged, ScribedError
from scribed.protocol import JobSpec, Result

PROGRESS_EVERY_S = 1.0


def _shown(path: Path) -> str:
    return os.fsencode(path).decode("utf-8", "backslashreplace")


class Runtime:
    """The worker's state between messages: the pipeline (model), its lock, the jobs in hand."""

    def __init__(self, cfg: Config, pipeline: Any, ledger: Ledger, paths: cluster_jobs.PathMap) -> None:
        self.cfg, self.pipeline, self.ledger, self.paths = cfg, pipeline, ledger, paths
        self.lock = threading.Lock()  # the model: a message or the idle unload, never both
        self.held: tuple[str, ...] = ()
        self.current: tuple[str, ...] = ()
        self.state = "starting"
        self.last_work = time.monotonic()

    def handle(self, payload: Any) -> None:
        """One message (the Celery task's body): never raises, so Celery acknowledges it."""
        try:
            task = wire.decode_task(payload)
        except wire.WireError as exc:
            logger.warning("dropped a message that is not a scribed job ({})", exc)
            return
        if task.skipped:
            logger.warning("dropped {} unreadable job(s) of a message", task.skipped)
        for key, job_id, reason in task.unreadable:
            if self.ledger.claim(key):
                logger.error("job {} cannot be read by this worker ({})", job_id, reason)
                self.ledger.store(key, task.coordinator, Result(job_id, "final", f"unreadable job: {reason}"))
        mine = []
        for key, spec in task.jobs:
            if self.ledger.done(key):
                logger.info("{}: already transcribed (a copy of its message); dropped", _shown(spec.path))
            elif not self.ledger.claim(key):
                logger.info("{}: another worker is transcribing it; dropped this copy", _shown(spec.path))
            else:
                mine.append((key, spec))
        if not mine:
            return
        self.held = tuple(k for k, _ in mine)
        try:
            for (key, _), result in zip(mine, self._work(mine), strict=True):
                if not self.ledger.store(key, task.coordinator, result):
                    logger.info("a result for {} was already there; this one is discarded", key)
        finally:
            self.ledger.release(self.held)
            self.held, self.current, self.state = (), (), "ready"
            self.last_work = time.monotonic()

    def _work(self, mine: Sequence[tuple[str, JobSpec]]) -> list[Result]:
        results: dict[str, Result] = {}
        ready: list[tuple[str, JobSpec, dict[str, Any] | None]] = []
        for key, spec in mine:
            try:
                local = cluster_jobs.localize(spec, self.paths)
            except Exception as exc:  # every problem is this job's answer, never the message's
                results[key] = _refusal(spec, exc)
                continue
            prior = self.ledger.first_attempt(key, cluster_jobs.outputs_state(local.outputs))
            if prior is not None:
                already = cluster_jobs.written_since(local.outputs, prior)
                if already and set(already) == set(local.outputs):
                    logger.info("{}: its transcript was written by an earlier attempt", _shown(local.path))
                    results[key] = Result(spec.job_id, "done", None, already)
                    continue
                local = replace(local, replaceable={**local.replaceable, **already})
            ready.append((key, local, prior))
        if ready:
            for (key, local, prior), result in zip(ready, self._transcribe(ready), strict=True):
                already = cluster_jobs.written_since(local.outputs, prior) if prior is not None else {}
                if result.outcome != "done" and already and set(already) == set(local.outputs):
                    result = Result(local.job_id, "done", None, already)  # another attempt wrote them meanwhile
                results[key] = result
        return [results[key] for key, _ in mine]

    def _transcribe(self, ready: Sequence[tuple[str, JobSpec, Any]]) -> list[Result]:
        from scribed.engine import runner

        keys = {local.job_id: key for key, local, _ in ready}
        last: dict[int, float] = {}

        def progress(job_id: int, done: int, total: int) -> None:
            now = time.monotonic()
            if done == total or now - last.get(job_id, -PROGRESS_EVERY_S) >= PROGRESS_EVERY_S:
                last[job_id] = now
                try:
                    self.ledger.progress(keys[job_id], done, total)
                except Exception as exc:  # progress is a courtesy; the job goes on
                    logger.debug("progress not sent: {}", exc)

        specs = [local for _, local, _ in ready]
        self.current, self.state = tuple(_shown(s.path) for s in specs), "working"
        for spec in specs:
            logger.info("transcribing {}", _shown(spec.path))
        with self.lock:
            engine = self.pipeline.engine
            try:
                if not engine.loaded:
                    engine.load()
                    logger.info("model reloaded in {:.1f} s", engine.load_seconds)
                return runner.run_jobs(self.pipeline, specs, overwrite=self.cfg.output.overwrite,
                                       max_duration_s=self.cfg.transcription.max_duration_s, on_progress=progress)
            except Exception as exc:  # e.g. the model could not be loaded again: each job says why
                logger.error("batch failed: {}: {}", type(exc).__name__, exc)
                return [Result(s.job_id, runner.classify(exc), f"{type(exc).__name__}: {exc}") for s in specs]

    def info(self) -> dict[str, Any]:
        engine = self.pipeline.engine
        return {"host": socket.gethostname(), "pid": os.getpid(), "model": self.cfg.model.id,
                "device": engine.device_name, "state": self.state if engine.loaded else "idle (model unloaded)",
                "current": list(self.current), "queue": self.ledger.keys.queue}

    def unload_if_idle(self) -> None:
        limit = self.cfg.model.idle_unload_min * 60
        engine = self.pipeline.engine
        if limit <= 0 or not engine.loaded or time.monotonic() - self.last_work < limit:
            return
        if self.lock.acquire(blocking=False):
            try:
                engine.unload()
                logger.info("model unloaded after {:.0f} idle minutes; it reloads with the next job",
                            self.cfg.model.idle_unload_min)
            finally:
                self.lock.release()


def _refusal(spec: JobSpec, exc: BaseException) -> Result:
    """The Result for a job this worker will not or cannot start."""
    from scribed.engine import runner

    if isinstance(exc, cluster_jobs.Refused):
        logger.warning("{}", exc)
        return Result(spec.job_id, "final", str(exc))
    if isinstance(exc, RecordingChanged):
        logger.info("{}", exc)
        return Result(spec.job_id, "changed", str(exc))
    if isinstance(exc, FileNotFoundError):
        message = f"this worker cannot find {_shown(spec.path)!r} (check cluster.path_map on {socket.gethostname()})"
        logger.warning("{}", message)
        return Result(spec.job_id, "retry", message)
    logger.error("{}: {}: {}", _shown(spec.path), type(exc).__name__, exc)
    return Result(spec.job_id, runner.classify(exc), f"{type(exc).__name__}: {exc}")


def task_body(runtime: Runtime) -> Callable[[Any], None]:
    """The Celery task: one message to :meth:`Runtime.handle`. If the ledger cannot be reached the
    message is given back to the queue (``Reject(requeue=True)``), never acknowledged unanswered."""

    def transcribe(payload: Any) -> None:
        from celery.exceptions import Reject
        from redis.exceptions import RedisError

        try:
            runtime.handle(payload)
        except (RedisError, OSError) as exc:
            logger.warning("broker unreachable while taking a message ({}); it goes back to the queue", exc)
            raise Reject(str(exc), requeue=True) from None

    return transcribe


class Lease(threading.Thread):
    """Renews the claims in hand, beats the heartbeat, unloads an idle model."""

    def __init__(self, runtime: Runtime, every_s: float) -> None:
        super().__init__(name="scribed-lease", daemon=True)
        self.runtime, self.every_s = runtime, every_s
        self.stopped = threading.Event()
        self._failing = False

    def run(self) -> None:
        self.tick()  # announce this worker at once: the coordinator sizes its window by live workers
        while not self.stopped.wait(self.every_s):
            self.tick()

    def tick(self) -> None:
        try:
            held = self.runtime.held
            if held and self.runtime.ledger.renew(held) < len(held):
                logger.warning("a claim lapsed while its job ran (was the broker away longer than {:.0f} s?)",
                               self.runtime.ledger.lease)
            self.runtime.ledger.beat(self.runtime.info())
            self._failing = False
        except Exception as exc:  # the broker is away: try again next tick
            if not self._failing:
                logger.warning("cannot reach the broker to renew claims ({}); retrying", exc)
            self._failing = True
        self.runtime.unload_if_idle()

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)


def worker_command(cfg: Config) -> int:
    """``scribed worker``: run until stopped (see the module contract). Returns the exit status."""
    from scribed.system import broker, harden

    if not cfg.cluster.broker:
        logger.error("scribed worker needs cluster.broker (the coordinator's Redis) in its config")
        return 2
    where = broker.address(cfg.cluster)
    secret = broker.password(cfg.cluster)
    broker.allow(where)
    harden.harden_process(cfg, "worker")
    from scribed.engine import runner

    try:
        pipeline = runner.open_pipeline(cfg)
    except ScribedError as exc:
        logger.error("{}", exc)
        return exc.exit_code
    name = f"scribed-{os.getpid()}@{socket.gethostname()}"
    keys = wire.Keys(cfg.cluster.queue)
    lease = lease_s(cfg.cluster.visibility_timeout_s)
    ledger = Ledger(broker.client(where, secret, timeout_s=5.0), keys, name, lease=lease)
    runtime = Runtime(cfg, pipeline, ledger, cluster_jobs.PathMap(cfg))
    app = broker.celery_app(cfg.cluster, where, secret, timeout_s=5.0)
    app.task(name=wire.TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)(task_body(runtime))
    beat = Lease(runtime, min(lease / 3, 5.0))
    worker = _celery_worker(app, name, keys.queue, runtime)
    logger.info("worker {} ({} on {}) takes jobs from {} queue {!r}", name, cfg.model.id,
                pipeline.engine.device_name, where.url, keys.queue)
    beat.start()
    try:
        worker.start()
    finally:
        beat.stop()
        try:
            ledger.goodbye()
        except Exception as exc:
            logger.debug("goodbye not sent: {}", exc)
        app.close()
    logger.info("worker {} stopped", name)
    return int(worker.exitcode or 0)


def _celery_worker(app: Any, name: str, queue: str, runtime: Runtime) -> Any:
    from celery.apps.worker import Worker
    from celery.exceptions import CPendingDeprecationWarning
    from celery.signals import worker_ready

    from scribed.system.sdnotify import Notifier

    class _Worker(Worker):  # type: ignore[misc]
        def install_platform_tweaks(self, worker: Any) -> None:
            super().install_platform_tweaks(worker)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # Celery re-execs on SIGHUP: refused once hardened

    notifier = Notifier()

    def on_ready(**_: Any) -> None:
        # After Celery's own logging setup (which sets this category to "always"). Chosen, not
        # overlooked: a job running when the broker connection drops finishes and stores its
        # result in the ledger; the copy the broker hands out again later is dropped.
        warnings.filterwarnings("ignore", category=CPendingDeprecationWarning,
                                message=r"(?s).*worker_cancel_long_running_tasks_on_connection_loss")
        runtime.state = "ready"
        notifier.ready(status=f"taking jobs from queue {queue!r}")
        logger.info("worker {} connected; waiting for jobs", name)

    worker_ready.connect(on_ready, weak=False)
    return _Worker(app=app, hostname=name, pool_cls="solo", concurrency=1, queues=[queue], loglevel="WARNING",
                   quiet=True, without_gossip=True, without_mingle=True, without_heartbeat=True,
                   optimization="fair")
