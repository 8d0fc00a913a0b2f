"""``scribed status``: what the daemon is doing, read from its journal (works while it runs).

Contract: read-only; never blocks the daemon (SQLite WAL readers do not block the writer);
exit 0 when the daemon is running, 3 when it is not (like ``systemctl status``). Paths are
printed with undecodable bytes escaped, so any file name prints. :func:`heartbeat_line` is the
one-line summary the daemon sends to systemd and stores for this command (:class:`Heartbeat`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from scribed.config import Config
from scribed.daemon.journal import Journal, shown
from scribed.system.sdnotify import Notifier
from scribed.text import format_clock


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def heartbeat_line(journal: Journal, busy: Sequence[int]) -> str:
    """``N queued; transcribing NAME (d/t chunks)`` for each job in ``busy``."""
    line = f"{journal.counts()['queued']} queued"
    for job_id in busy:
        job = journal.get(job_id)
        if job:
            line += f"; transcribing {shown(job.path.name)} ({job.progress_done}/{job.progress_total or '?'} chunks)"
    return line


class Heartbeat:
    """Every ``every_s`` of loop time: systemd's watchdog ping, status line, and the journal's
    heartbeat (what ``scribed status`` reads). The watchdog is pinged only while the worker shows
    life: a busy worker silent for ``hung_s`` gets none, so systemd restarts a hung daemon."""

    def __init__(self, notifier: Notifier, journal: Journal, every_s: float, hung_s: float) -> None:
        self.notifier, self.journal, self.every_s, self.hung_s = notifier, journal, every_s, hung_s
        self.last = -math.inf

    def soon(self) -> None:
        """Beat at the next call (e.g. a new current file)."""
        self.last = -math.inf

    def beat(self, now: float, busy: Sequence[int], last_heard: float, modes: Mapping[Path, str]) -> None:
        if now - self.last < self.every_s:
            return
        self.last = now
        if not busy or now - last_heard < self.hung_s:
            self.notifier.watchdog()
        line = heartbeat_line(self.journal, busy)
        self.notifier.status(line)
        self.journal.set_meta(heartbeat=time.time(), status=line, watch={str(k): v for k, v in modes.items()})


def print_status(cfg: Config) -> int:
    path = cfg.service.journal_path
    if not path.exists():
        print(f"scribed has not run yet (no journal at {path})")
        return 3
    journal = Journal(path, readonly=True)
    try:
        meta = journal.meta()
        counts = journal.counts()
        running = _alive(meta.get("pid")) and time.time() - float(meta.get("heartbeat") or 0) < 60  # type: ignore[arg-type]
        print(f"daemon:    {'running (pid ' + str(meta['pid']) + ')' if running else 'not running'}")
        print(f"model:     {meta.get('model')} on {meta.get('device', '?')}; worker {meta.get('worker', '?')}")
        print(f"{meta.get('network', 'network: unknown')}")
        for folder, mode in (meta.get("watch") or {}).items():  # type: ignore[union-attr]
            print(f"watching:  {shown(folder)} ({mode})")
        waiting = journal.waiting()
        later = f" ({waiting} waiting for a temporary error to clear)" if waiting else ""
        print(f"queue:     {counts['queued']} queued{later}, {counts['working']} in progress")
        for job in journal.jobs("working"):
            pct = f"{job.progress_done}/{job.progress_total} chunks" if job.progress_total else "starting"
            print(f"current:   {shown(job.path)} ({pct})")
        print(f"totals:    {counts['done']} done, {counts['failed']} failed, {counts['skipped']} skipped, "
              f"{counts['gone']} vanished" + (f", {counts['changed']} changing" if counts["changed"] else ""))
        speed = journal.throughput()
        backlog = journal.queued_audio_s()
        if backlog:
            eta = f"~{format_clock(backlog / speed)}" if speed else "unknown until the first file is done"
            print(f"backlog:   {format_clock(backlog)} of audio; estimated time {eta}")
        failures = journal.jobs("failed", 5)
        if failures:
            print("recent failures:")
            for job in failures:
                print(f"  {shown(job.path)}: {job.last_error}")
        return 0 if running else 3
    finally:
        journal.close()
