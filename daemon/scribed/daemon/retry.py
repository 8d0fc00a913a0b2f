"""``scribed retry [PATH...] [--failed]``: queue recordings again, attempts and backoff forgotten.

Contract: works on the journal directly, so it works whether or not the daemon runs (a running
daemon picks the jobs up at its next dispatch; SQLite serialises the two writers). A PATH is a
recording or a folder (every job under it); ``--failed`` adds every failed job. Jobs in
progress are left alone; recordings that are gone or were skipped (a transcript scribed did
not write exists) are reported, not queued. Exit status: 0 when every named path matched a
job, 1 when some did not, 2 when nothing was asked for.
"""

from __future__ import annotations

import os
from pathlib import Path

from scribed.config import Config
from scribed.daemon.journal import Job, Journal
from scribed.daemon.journal_db import shown
from scribed.errors import UsageError

_RETRYABLE = ("failed", "done", "queued", "changed")


def retry_command(cfg: Config, paths: list[Path], failed: bool) -> int:
    if not paths and not failed:
        raise UsageError("retry: name recordings or folders, or use --failed")
    if not cfg.service.journal_path.exists():
        print(f"scribed has not run yet (no journal at {cfg.service.journal_path})")
        return 1
    journal = Journal(cfg.service.journal_path)
    try:
        chosen: dict[int, Job] = {}
        unmatched = []
        everything = journal.jobs() if paths else []
        for raw in paths:
            target = Path(os.path.abspath(raw))
            found = [j for j in everything if j.path == target or j.path.is_relative_to(target)]
            if not found:
                unmatched.append(target)
            chosen.update((j.id, j) for j in found)
        if failed:
            chosen.update((j.id, j) for j in journal.jobs("failed"))
        queued = 0
        for job in chosen.values():
            if job.state not in _RETRYABLE:
                why = {"working": "in progress now", "gone": "the recording is gone",
                       "skipped": "a transcript scribed did not write is in the way"}.get(job.state, job.state)
                print(f"not queued: {shown(job.path)} ({why})")
                continue
            journal.reset(job.id)
            queued += 1
            print(f"queued: {shown(job.path)}")
        for target in unmatched:
            print(f"no such recording in the journal: {shown(target)}")
        print(f"{queued} recording(s) queued again")
        return 1 if unmatched else 0
    finally:
        journal.close()
