"""The daemon (``scribed run``): watch, queue in the journal, feed the worker, write, repeat.

Contract:
- The main process never imports torch: the model lives in a ``spawn`` worker (scribed.daemon.worker).
- Signal handlers only set flags; the loop wakes at least every ``tick_s`` (huey-style).
  SIGTERM/SIGINT: stop taking files, let the current batch finish (``service.stop_timeout_s``),
  exit 0; a second signal aborts at once and the job is requeued at next start. SIGHUP reloads
  the config (an invalid new config is logged and the old one kept).
- Exactly once: a job is marked done only after its transcript is written; jobs a crash left
  ``working`` are queued again at start unless their transcript was completed before the crash.
- A dead worker is restarted; its jobs count an attempt; after ``service.attempts`` the
  recording is marked failed (``NAME.failed.txt`` beside it when ``output.failure_marker``).
- Time comes from injected clocks so tests can drive it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

from scribed import output
from scribed.config import Config, load_config
from scribed.daemon.journal import Journal
from scribed.daemon.watcher import FolderWatcher, Ready
from scribed.daemon.worker import WorkerHandle
from scribed.engine.runner import OutputSpec
from scribed.media.audio import probe_duration
from scribed.system import files, netguard, retention
from scribed.system.sdnotify import Notifier

MAX_FILES_PER_BATCH = 8
MAX_AUDIO_PER_BATCH_S = 3600.0


class Daemon:
    def __init__(self, cfg: Config, *, clock: Callable[[], float] = time.monotonic, tick_s: float = 0.5,
                 notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.tick_s = tick_s
        self.notifier = notifier or Notifier()
        self.journal = Journal(cfg.service.journal_path)
        self.watcher: FolderWatcher | None = None
        self.worker: WorkerHandle | None = None
        self.stop_requested = 0  # number of stop signals seen
        self.reload_requested = False
        self.worker_failures = 0
        self.next_worker_start = 0.0
        self.last_ping = float("-inf")
        self.current: dict[int, tuple[int, int]] = {}
        self.failed_this_run = 0
        self.stop_at: float | None = None
        self.exit_code = 0

    # -- signals: flags only -----------------------------------------------------------------------
    def _on_stop(self, signum: int, _frame: Any) -> None:
        self.stop_requested += 1

    def _on_hup(self, _signum: int, _frame: Any) -> None:
        self.reload_requested = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    # -- lifecycle ---------------------------------------------------------------------------------
    def run(self, once: bool = False) -> int:
        if self.cfg.policy.block_network:
            netguard.install_network_guard()
        net = netguard.network_self_test()
        logger.info("scribed starting (pid {}); {}", os.getpid(), net.detail)
        self.journal.set_meta(pid=os.getpid(), started=time.time(), network=net.detail, model=self.cfg.model.id,
                              worker="starting", config=self.cfg.source, heartbeat=time.time())
        self._recover()
        self._wipe_stale_outputs()
        self.watcher = FolderWatcher(self.cfg.watch, self._on_ready, clock=self.clock, exclude=self._excluded())
        self.watcher.start()
        self._start_worker()
        try:
            while True:
                if self.stop_requested >= 2:
                    logger.warning("second stop signal: aborting now; the current job is retried at next start")
                    return 0
                if self.reload_requested:
                    self._reload()
                self.watcher.poll()
                self._service_worker()
                self._heartbeat()
                if self.stop_requested:
                    if self.stop_at is None:
                        self.stop_at = self.clock()
                        logger.info("stop requested: finishing the current job (at most {:.0f} s)",
                                    self.cfg.service.stop_timeout_s)
                    if not (self.worker and self.worker.busy):
                        logger.info("stopping: no job in progress")
                        return 0
                    if self.clock() - self.stop_at > self.cfg.service.stop_timeout_s:
                        logger.warning("stop timeout reached; the current job is retried at next start")
                        return 0
                if once and self._drained():
                    logger.info("--once: nothing left to do")
                    return 0 if not self.failed_this_run else 1
        finally:
            self._shutdown()

    def _drained(self) -> bool:
        assert self.watcher is not None
        idle = self.worker is None or (self.worker.ready and not self.worker.busy)
        return idle and self.watcher.pending() == 0 and not self.journal.queued(1)

    def _shutdown(self) -> None:
        self.notifier.stopping()
        if self.watcher:
            self.watcher.stop()
        if self.worker:
            # Busy here means the stop timeout (or a second signal) cut the job short: don't wait more.
            self._collect(self.worker.stop(0 if self.worker.busy else 10))
        self.journal.set_meta(worker="stopped", pid=None)
        self.journal.close()
        logger.info("scribed stopped")

    def _excluded(self) -> list[Path]:
        out = [self.cfg.service.resolved_state_dir]
        if self.cfg.policy.archive_dir:
            out.append(self.cfg.policy.archive_dir)
        return out

    def _recover(self) -> None:
        for job in self.journal.recover():
            # Crash between "transcript written" and "journal says done": the transcript is
            # complete (atomic rename), so finish the bookkeeping instead of transcribing again.
            paths = output.output_paths(job.path, self.cfg.output.formats, self.cfg.output.dir, job.root)
            if job.started_at and all(p.exists() and p.stat().st_mtime >= job.started_at for p in paths.values()):
                self.journal.done(job.id, {k: str(v) for k, v in paths.items()}, None, None)
                logger.info("{} was finished before the interruption; marked done", job.path)
                continue
            logger.info("requeued {} (interrupted by a stop or crash, attempt {})", job.path, job.attempts)

    def _wipe_stale_outputs(self) -> None:
        """Half-written transcript temporaries from a crash hold transcript text: wipe them."""
        for folder in self.cfg.watch.folders + ((self.cfg.output.dir,) if self.cfg.output.dir else ()):
            if not folder.is_dir():
                continue
            for dirpath, _dirs, names in os.walk(folder):
                for name in names:
                    if output.is_scribed_temp(name):
                        files.secure_delete(Path(dirpath) / name, self.cfg.policy.secure_delete_passes)
                        logger.info("wiped stale temporary {}", Path(dirpath) / name)

    def _reload(self) -> None:
        self.reload_requested = False
        self.notifier.reloading()
        try:
            new = load_config(self.cfg.source)
        except Exception as exc:
            logger.error("config reload failed, keeping the running config: {}", exc)
            self.notifier.ready()
            return
        old, self.cfg = self.cfg, new
        if new.watch != old.watch and self.watcher:
            self.watcher.stop()
            self.watcher = FolderWatcher(new.watch, self._on_ready, clock=self.clock, exclude=self._excluded())
            self.watcher.start()
        if (new.model, new.transcription, new.policy) != (old.model, old.transcription, old.policy) and self.worker:
            logger.info("model/transcription settings changed: restarting the worker after the current job")
            self._collect(self.worker.stop(self.cfg.service.stop_timeout_s))
            self._count_attempt(self.worker.busy, "worker restarted for a config reload")
            self._start_worker()
        logger.info("config reloaded from {}", new.source)
        self.notifier.ready()

    # -- intake ------------------------------------------------------------------------------------
    def _on_ready(self, ready: Ready) -> None:
        paths = output.output_paths(ready.path, self.cfg.output.formats, self.cfg.output.dir, ready.root)
        exists = any(p.exists() for p in paths.values())
        decision = self.journal.offer(ready.path, ready.root, transcript_exists=exists,
                                      overwrite=self.cfg.output.overwrite, audio_s=probe_duration(ready.path))
        if decision in ("queued", "requeued"):
            logger.info("{} {}", decision, ready.path)
        elif decision == "skipped":
            logger.info("skipped {}: a transcript not written by scribed exists (output.overwrite is false)",
                        ready.path)

    # -- the worker --------------------------------------------------------------------------------
    def _start_worker(self) -> None:
        self.worker = WorkerHandle(self.cfg)
        self.journal.set_meta(worker="loading model", worker_pid=self.worker.pid)
        logger.info("worker started (pid {})", self.worker.pid)

    def _service_worker(self) -> None:
        worker = self.worker
        if worker is None:
            if not self.stop_requested and self.clock() >= self.next_worker_start:
                self._start_worker()
            else:
                time.sleep(self.tick_s)  # nothing to wait on: no worker pipe to block on
            return
        self._collect(worker.receive(self.tick_s))
        if self.worker is None:
            return
        if not worker.alive:
            code = worker.process.exitcode
            logger.error("worker died (exit code {}); restarting it", code)
            worker.kill()
            self.worker = None
            self._count_attempt(worker.busy, f"worker process died (exit code {code})")
            self.worker_failures += 1
            self.next_worker_start = self.clock() + min(60.0, 2.0 ** min(self.worker_failures, 6) - 1)
            return
        if worker.ready and not worker.busy and not self.stop_requested:
            self._dispatch(worker)

    def _collect(self, messages: list[tuple[Any, ...]]) -> None:
        worker = self.worker
        for message in messages:
            kind = message[0]
            if kind == "ready" and worker:
                worker.ready = True
                self.worker_failures = 0
                info = message[1]
                logger.info("model {} ready on {} (loaded in {:.1f} s)", info["model"], info["device"], info["load_s"])
                self.journal.set_meta(worker="ready", device=info["device"], load_s=info["load_s"],
                                      ready_pid=info["pid"])
                self.notifier.ready(status="ready; waiting for recordings")
            elif kind == "fatal":
                logger.error("worker cannot start: {}", message[1])
                self.journal.set_meta(worker=f"failed: {message[1]}")
                self.stop_requested = max(self.stop_requested, 1)
                self.exit_code = 2
            elif kind == "progress":
                self.journal.progress(message[1], message[2], message[3])
                self.current[message[1]] = (message[2], message[3])
            elif kind == "result" and worker:
                self._finish(message[1], message[2])
                if message[1] in worker.busy:
                    worker.busy.remove(message[1])
            elif kind == "idle":
                self.journal.set_meta(worker="ready")
            elif kind == "unloaded":
                self.journal.set_meta(worker="idle (model unloaded)")

    def _dispatch(self, worker: WorkerHandle) -> None:
        batch, seconds = [], 0.0
        for job in self.journal.queued(MAX_FILES_PER_BATCH * 4):
            if not job.path.exists():
                self.journal.gone(job.id)
                logger.info("{} disappeared before it was transcribed; dropped", job.path)
                continue
            # A job that already crashed a worker goes alone, so it cannot take others down again.
            if job.attempts and batch:
                continue
            batch.append(job)
            seconds += job.audio_s or 0
            if job.attempts or len(batch) >= MAX_FILES_PER_BATCH or seconds >= MAX_AUDIO_PER_BATCH_S:
                break
        if not batch:
            return
        out = self.cfg.output
        jobs = [(j.id, str(j.path), OutputSpec(out.formats, out.dir, j.root, self.cfg.transcription.timestamps))
                for j in batch]
        self.journal.start([j.id for j in batch])
        if worker.send("jobs", jobs):
            worker.busy = [j.id for j in batch]
            for job in batch:
                logger.info("transcribing {}", job.path)
            self.journal.set_meta(worker="working")
            self.last_ping = float("-inf")  # tell systemd about the new current file now

    def _finish(self, job_id: int, result: dict[str, Any]) -> None:
        job = self.journal.get(job_id)
        self.current.pop(job_id, None)
        if job is None:
            return
        if result["ok"]:
            self.journal.done(job_id, result["outputs"], result["audio_s"], result["language"])
            logger.info("done {}", job.path)
            self._after_success(job.path, job.root, result)
            return
        # Decoding errors are properties of the file: retrying cannot help.
        final = self.journal.failed(job_id, result["error"], self.cfg.service.attempts,
                                    final=result["error"].startswith("cannot read audio"))
        self._report_failure(job.path, job.root, result["error"], final)

    def _after_success(self, path: Path, root: Path, result: dict[str, Any]) -> None:
        marker = output.failure_path(path, self.cfg.output.dir, root)
        marker.unlink(missing_ok=True)
        action = self.cfg.policy.source_after
        if action == "keep":
            return
        try:
            outputs = result["outputs"]
            transcript = Path(outputs.get("txt") or next(iter(outputs.values())))
            moved = retention.apply_source_after(path, transcript, action, archive_dir=self.cfg.policy.archive_dir,
                                              watch_root=root, passes=self.cfg.policy.secure_delete_passes)
            logger.info("{} {}{}", "archived" if action == "archive" else "deleted", path,
                        f" to {moved}" if moved else "")
        except Exception as exc:
            logger.error("could not {} {}: {}", action, path, exc)

    def _report_failure(self, path: Path, root: Path, error: str, final: bool) -> None:
        if not final:
            logger.warning("attempt failed for {}: {} (will retry)", path, error)
            return
        self.failed_this_run += 1
        logger.error("failed {}: {}", path, error)
        if self.cfg.output.failure_marker:
            try:
                output.write_failure(output.failure_path(path, self.cfg.output.dir, root), path, error)
            except OSError as exc:
                logger.error("cannot write failure note for {}: {}", path, exc)

    def _count_attempt(self, job_ids: list[int], reason: str) -> None:
        """Jobs a worker took but never finished: a failed attempt each (requeued or failed)."""
        for job_id in list(job_ids):
            job = self.journal.get(job_id)
            if job is None:
                continue
            final = self.journal.failed(job_id, reason, self.cfg.service.attempts)
            self._report_failure(job.path, job.root, reason, final)

    def _heartbeat(self) -> None:
        now = self.clock()
        if now - self.last_ping < 2.0:
            return
        self.last_ping = now
        worker = self.worker
        # Ping systemd's watchdog only while the worker shows life: a hung model must be restarted.
        if worker is None or not worker.busy or time.monotonic() - worker.last_message_at < 600:
            self.notifier.watchdog()
        status = f"{self.journal.counts()['queued']} queued"
        for job_id in worker.busy if worker else []:
            job = self.journal.get(job_id)
            done, total = self.current.get(job_id, (0, 0))
            if job:
                status += f"; transcribing {job.path.name} ({done}/{total or '?'} chunks)"
        self.notifier.status(status)
        self.journal.set_meta(heartbeat=time.time(), status=status,
                              watch={str(k): v for k, v in (self.watcher.modes() if self.watcher else {}).items()})


def run_daemon(cfg: Config, once: bool = False) -> int:
    daemon = Daemon(cfg)
    daemon.install_signal_handlers()
    code = daemon.run(once=once)
    return daemon.exit_code or code
