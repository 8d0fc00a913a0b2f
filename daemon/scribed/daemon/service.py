"""The daemon (``scribed run``): watch, queue in the journal, feed the worker, repeat.

Contract:
- The main process never imports the engine side (nor torch): the model lives in a ``spawn``
  worker (:mod:`scribed.daemon.worker`). The per-job rules live in :mod:`scribed.daemon.jobs`.
- One loop iteration is :meth:`Daemon.tick` (``now`` from the injected clock; huey's
  ``Consumer.loop(now)`` model): it returns None to go on or the exit status. Watcher, worker
  handle, notifier and clock are injected, so tests drive the daemon tick by tick.
- Signal handlers only set flags. SIGTERM/SIGINT: stop taking files, let the current batch
  finish (at most ``service.stop_timeout_s``), exit 0; a second signal aborts at once. A job a
  stop cuts short is requeued without counting an attempt. SIGHUP reloads the config (an
  invalid one is logged and the old one kept); a model/transcription/policy change restarts
  the worker once it is idle.
- A dead worker is restarted after 1, 3, 7 ... 60 s (:func:`jobs.restart_delay`); its unanswered
  jobs count an attempt. A worker that cannot start (Fatal) stops the daemon with exit 2.
- :func:`run_daemon` hardens the process, holds the state folder's lock (a second daemon exits
  4) and runs the loop.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from loguru import logger

from scribed import protocol
from scribed.config import Config, FolderSettings, load_config
from scribed.daemon import jobs, lock, status
from scribed.daemon.cluster import cluster_worker_factory  # loads no celery/redis until used
from scribed.daemon.journal import Journal
from scribed.daemon.journal_db import shown
from scribed.daemon.worker import Exited, WorkerHandle
from scribed.system import desktop, netguard, shred
from scribed.system.sdnotify import Notifier

HEARTBEAT_S = 2.0
HUNG_S = 600.0  # a busy worker silent this long gets no watchdog ping: systemd restarts us


def _folder_watcher(watch: Any, on_ready: Callable[[Any], None], *, clock: Callable[[], float],
                    exclude: list[Path]) -> Any:
    from scribed.daemon.watcher import FolderWatcher  # watchdog: only when the daemon really runs

    return FolderWatcher(watch, on_ready, clock=clock, exclude=exclude)


def _announce(cfg: Config, journal: Journal) -> None:
    net = netguard.network_self_test()
    logger.info("scribed starting (pid {}); {}", os.getpid(), net.detail)
    journal.set_meta(pid=os.getpid(), started=time.time(), network=net.detail, model=cfg.model.id,
                     worker="starting", config=cfg.source, heartbeat=time.time())


def _not_watched(cfg: Config) -> list[Path]:
    """Folders never looked inside even below a watched one: ours (state) and the archive."""
    return [cfg.service.resolved_state_dir, *([cfg.policy.archive_dir] if cfg.policy.archive_dir else [])]


def _reread(cfg: Config) -> Config | None:
    """The config file again, or None (logged) when it is now invalid: the old one stays."""
    try:
        return load_config(cfg.source)
    except Exception as exc:
        logger.error("config reload failed, keeping the running config: {}", exc)
        return None


def _written_folders(cfg: Config) -> list[Path]:
    """Everywhere scribed writes temporaries: watched, output and archive folders (per folder too).
    The archive counts: a cross-filesystem archive copy cut short is a temporary holding audio."""
    per_folder = [FolderSettings.of(cfg, f) for f in cfg.watch.folders]
    extra = (cfg.output.dir, cfg.policy.archive_dir, *(x.dir for x in per_folder), *(x.archive_dir for x in per_folder))
    return list(dict.fromkeys([*cfg.watch.folders, *(d for d in extra if d is not None)]))


class _Desktop:
    """Desktop notifications for jobs finished for good (``service.notify: desktop``): the file
    name only, never its text. A no-op when notifications are off."""

    def __init__(self, cfg: Config, journal: Journal) -> None:
        self.journal, self.cfg = journal, cfg
        self.notifier = desktop.from_config(cfg)

    def reconfigure(self, cfg: Config) -> None:
        if cfg.service.notify != self.cfg.service.notify:
            self.close()
            self.cfg, self.notifier = cfg, desktop.from_config(cfg)

    def finished(self, job_ids: Iterable[int]) -> None:
        for job_id in job_ids if self.notifier is not None else ():
            job = self.journal.get(job_id)
            if job is not None and job.state == "done":
                self.notifier.transcript_ready(job.path)
            elif job is not None and job.state == "failed":
                self.notifier.transcription_failed(job.path, job.last_error or "")

    def close(self) -> None:
        if self.notifier is not None:
            self.notifier.close()


class Daemon:
    def __init__(self, cfg: Config, *, journal: Journal | None = None,
                 watcher_factory: Callable[..., Any] = _folder_watcher,
                 worker_factory: Callable[[Config], Any] = WorkerHandle, notifier: Notifier | None = None,
                 clock: Callable[[], float] = time.monotonic, tick_s: float = 0.5) -> None:
        self.cfg, self.clock, self.tick_s = cfg, clock, tick_s
        self.journal = journal or Journal(cfg.service.journal_path)
        self.notifier = notifier or Notifier()
        self.desktop = _Desktop(cfg, self.journal)
        self._new_watcher, self._new_worker = watcher_factory, worker_factory
        self.watcher: Any = None
        self.worker: Any = None
        self.stops = 0  # stop signals seen
        self.reload_requested = False
        self.restart: str | None = None  # None | "pending" | "sent": a reload replaces the worker
        self.worker_failures = 0
        self.next_worker_start = 0.0
        self.stop_at: float | None = None
        self.exit_code = 0
        self.failed_this_run = 0
        self.heartbeat = status.Heartbeat(self.notifier, self.journal, HEARTBEAT_S, HUNG_S)
        self.last_heard = 0.0

    # -- signal handlers: flags only ---------------------------------------------------------------
    def request_stop(self, *_: object) -> None:
        self.stops += 1

    def request_reload(self, *_: object) -> None:
        self.reload_requested = True

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Recover, wipe stale temporaries, start watching and the worker."""
        _announce(self.cfg, self.journal)
        jobs.recover(self.cfg, self.journal)
        shred.wipe_stale_temporaries(_written_folders(self.cfg), self.cfg.policy.secure_delete_passes,
                                     max_depth=self.cfg.watch.max_depth)  # logs what it wiped
        self._watch()
        self._start_worker(now)

    def run(self, once: bool = False) -> int:
        self.start(self.clock())
        try:
            while (code := self.tick(self.clock(), wait=self.tick_s, once=once)) is None:
                pass
            return code
        finally:
            self.shutdown()

    def tick(self, now: float, *, wait: float = 0.0, once: bool = False) -> int | None:
        """One loop iteration; ``wait``: how long it may block for the worker. None: go on."""
        if self.stops >= 2:
            logger.warning("second stop signal: aborting now; the current job is retried at next start")
            return self.exit_code
        if self.reload_requested:
            self._reload()
        self.watcher.poll()
        # a rescan under way goes on at the next tick: no waiting for the worker in between
        self._supervise(now, 0.0 if self.watcher.scanning() else wait)
        self.heartbeat.beat(now, self.worker.busy if self.worker else (), self.last_heard, self.watcher.modes())
        if self.stops:
            return self._stopping(now)
        if once and self._drained():
            waiting = self.journal.waiting()
            logger.info("--once: nothing left to do ({} recording(s) wait for a temporary error to clear)", waiting)
            return 1 if self.failed_this_run or waiting else 0
        return None

    def _stopping(self, now: float) -> int | None:
        if self.stop_at is None:
            self.stop_at = now
            logger.info("stop requested: finishing the current job (at most {:.0f} s)", self.cfg.service.stop_timeout_s)
        if not (self.worker and self.worker.busy):
            logger.info("stopping: no job in progress")
            return self.exit_code
        if now - self.stop_at > self.cfg.service.stop_timeout_s:
            logger.warning("stop timeout reached; the current job is retried at next start")
            return self.exit_code
        return None

    def _drained(self) -> bool:
        idle = self.worker is None or (self.worker.ready and not self.worker.busy
                                       and not getattr(self.worker, "in_flight", ()))  # cluster jobs out
        return idle and self.watcher.pending() == 0 and not self.journal.queued(1)

    def shutdown(self) -> None:
        self.notifier.stopping()
        if self.watcher:
            self.watcher.stop()
        if self.worker:
            worker, self.worker = self.worker, None
            # Busy here means the stop timeout (or a second signal) cut the job short: don't wait more.
            for event in worker.stop(0 if worker.busy else 10):
                if isinstance(event, Exited):
                    jobs.interrupt(self.journal, event.unfinished)
                else:
                    self._on_event(event, self.clock())
        self.desktop.close()
        self.journal.set_meta(worker="stopped", pid=None)
        logger.info("scribed stopped")

    def _watch(self) -> None:
        self.watcher = self._new_watcher(self.cfg.watch, lambda ready: jobs.intake(self.cfg, self.journal, ready),
                                         clock=self.clock, exclude=_not_watched(self.cfg))
        self.watcher.start()

    def _reload(self) -> None:
        self.reload_requested = False
        self.notifier.reloading()
        new = _reread(self.cfg)
        if new is None:
            self.notifier.ready()
            return
        old, self.cfg = self.cfg, new
        if new.watch != old.watch:
            self.watcher.stop()
            self._watch()
        if (new.model, new.transcription, new.policy) != (old.model, old.transcription, old.policy) and self.worker:
            logger.info("model/transcription settings changed: restarting the worker after the current job")
            self.restart = "pending"
        self.desktop.reconfigure(new)
        logger.info("config reloaded from {}", new.source)
        self.notifier.ready()

    # -- the worker --------------------------------------------------------------------------------
    def _start_worker(self, now: float) -> None:
        self.worker = self._new_worker(self.cfg)
        self.last_heard = now
        self.journal.set_meta(worker="loading model", worker_pid=self.worker.pid)
        logger.info("worker started (pid {})", self.worker.pid)

    def _supervise(self, now: float, wait: float) -> None:
        worker = self.worker
        if worker is None:
            if not self.stops and now >= self.next_worker_start:
                self._start_worker(now)
            elif wait:
                time.sleep(wait)  # no worker pipe to block on
            return
        events = worker.poll(wait)
        if events:
            self.last_heard = now
        for event in events:
            self._on_event(event, now)
        if self.worker is not worker or worker.busy or self.stops:
            return
        if self.restart == "pending":
            worker.request_stop()  # idle now: Exited follows, then the new worker starts
            self.restart = "sent"
        if worker.ready and self.restart is None:
            self._dispatch(worker, now)

    def _dispatch(self, worker: Any, now: float) -> None:
        specs = jobs.plan_batch(self.cfg, self.journal)
        if not specs:
            return
        if not worker.send_jobs(specs):
            jobs.interrupt(self.journal, [s.job_id for s in specs])  # the worker is going: Exited follows
            return
        for spec in specs:
            logger.info("transcribing {}", shown(spec.path))
        self.journal.set_meta(worker="working")
        self.last_heard = now
        self.heartbeat.soon()  # tell systemd about the new current file now

    def _on_event(self, event: Any, now: float) -> None:
        if isinstance(event, protocol.Ready):
            self.worker_failures = 0
            logger.info("model {} ready on {} (loaded in {:.1f} s)", event.model, event.device, event.load_s)
            self.journal.set_meta(worker="ready", device=event.device, load_s=event.load_s, ready_pid=event.pid)
            self.notifier.ready(status="ready; waiting for recordings")
        elif isinstance(event, protocol.Fatal):
            logger.error("worker cannot start: {}", event.message)
            self.journal.set_meta(worker=f"failed: {event.message}")
            self.stops, self.exit_code, self.stop_at = max(self.stops, 1), 2, now
        elif isinstance(event, protocol.Progress):
            self.journal.progress(event.job_id, event.done, event.total)
        elif isinstance(event, protocol.Result):
            outcome = jobs.finish(self.cfg, self.journal, event)
            self.failed_this_run += outcome == "failed"
            self.desktop.finished([event.job_id])
        elif isinstance(event, protocol.Idle):
            self.journal.set_meta(worker="ready")
        elif isinstance(event, protocol.Unloaded):
            self.journal.set_meta(worker="idle (model unloaded)")
        elif isinstance(event, Exited):
            self._on_exit(event, now)

    def _on_exit(self, event: Exited, now: float) -> None:
        self.worker = None
        if self.restart == "sent":
            self.restart = None
            jobs.interrupt(self.journal, event.unfinished)
            self._start_worker(now)
            return
        self.restart = None
        if self.exit_code == 2:
            return  # it said why (Fatal); the daemon is stopping
        logger.error("worker died (exit code {}); restarting it", event.exitcode)
        reason = f"worker process died (exit code {event.exitcode})"
        self.failed_this_run += jobs.abandon(self.cfg, self.journal, event.unfinished, reason)
        self.desktop.finished(event.unfinished)  # only those now failed for good
        self.worker_failures += 1
        self.next_worker_start = now + jobs.restart_delay(self.worker_failures)


def run_daemon(cfg: Config, once: bool = False) -> int:
    """``scribed run``: harden this process, hold the state folder's lock, run the loop."""
    from scribed.system import harden

    harden.harden_process(cfg, "daemon")
    with lock.hold(cfg.service.resolved_state_dir):
        # Cluster mode: jobs go to the broker's workers instead of a local spawn worker.
        daemon = Daemon(cfg, worker_factory=cluster_worker_factory(cfg)) if cfg.cluster.broker else Daemon(cfg)
        signal.signal(signal.SIGTERM, daemon.request_stop)
        signal.signal(signal.SIGINT, daemon.request_stop)
        signal.signal(signal.SIGHUP, daemon.request_reload)
        try:
            return daemon.run(once=once)
        finally:
            daemon.journal.close()
