"""``scribed status``: what the daemon is doing, read from its journal (works while it runs).

Contract: read-only; never blocks the daemon (SQLite WAL readers do not block the writer);
exit 0 when the daemon is running, 3 when it is not (like ``systemctl status``).
"""

from __future__ import annotations

import os
import time

from scribed.config import Config
from scribed.daemon.journal import Journal
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


def print_status(cfg: Config) -> int:
    path = cfg.service.journal_path
    if not path.exists():
        print(f"scribed has not run yet (no journal at {path})")
        return 3
    journal = Journal(path, readonly=True)
    try:
        meta = journal.meta()
        counts = journal.counts()
        running = _alive(meta.get("pid")) and time.time() - float(meta.get("heartbeat") or 0) < 60
        print(f"daemon:    {'running (pid ' + str(meta['pid']) + ')' if running else 'not running'}")
        print(f"model:     {meta.get('model')} on {meta.get('device', '?')}; worker {meta.get('worker', '?')}")
        print(f"{meta.get('network', 'network: unknown')}")
        for folder, mode in (meta.get("watch") or {}).items():  # type: ignore[union-attr]
            print(f"watching:  {folder} ({mode})")
        print(f"queue:     {counts['queued']} queued, {counts['working']} in progress")
        for job in journal.jobs("working"):
            pct = f"{job.progress_done}/{job.progress_total} chunks" if job.progress_total else "starting"
            print(f"current:   {job.path} ({pct})")
        print(f"totals:    {counts['done']} done, {counts['failed']} failed, {counts['skipped']} skipped, "
              f"{counts['gone']} vanished")
        speed = journal.throughput()
        backlog = journal.queued_audio_s()
        if backlog:
            eta = f"~{format_clock(backlog / speed)}" if speed else "unknown until the first file is done"
            print(f"backlog:   {format_clock(backlog)} of audio; estimated time {eta}")
        failures = journal.jobs("failed", 5)
        if failures:
            print("recent failures:")
            for job in failures:
                print(f"  {job.path}: {job.last_error}")
        return 0 if running else 3
    finally:
        journal.close()
