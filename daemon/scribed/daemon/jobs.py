"""The daemon's per-job rules, as functions over (config, journal): no process, no clock of their own.

Contract:
- :func:`intake`: a settled recording becomes a job (or is known, skipped, or, when it is a
  done recording moved or renamed inside the watched folders, its transcripts follow it).
- :func:`plan_batch`: the next batch for the worker: at most :data:`MAX_FILES_PER_BATCH` files
  and about :data:`MAX_AUDIO_PER_BATCH_S` of audio; a job that already failed an attempt (it
  may have crashed a worker) goes alone. Output paths are decided here, once, and stored; the
  recording's folder settings (:meth:`~scribed.config.Config.settings_for`) are resolved here,
  once, into its :class:`~scribed.protocol.JobOptions`.
- Every rule that depends on where a recording lives (formats, output folder, ``source_after``,
  archive folder, language, context, glossary, speakers, timestamps) takes its folder's settings.
- :func:`finish`: a worker's :class:`~scribed.protocol.Result` -> the journal, by its outcome:
  done (unless the recording changed meanwhile: then it is transcribed again), retry (an
  attempt), final (no more attempts), transient (backoff from :data:`TRANSIENT_FIRST_S`
  doubling to :data:`TRANSIENT_MAX_S`, attempts untouched, failed only after
  :data:`TRANSIENT_HORIZON_S`), changed (requeued for the new content, attempt given back),
  skipped (a transcript scribed did not write appeared meanwhile, e.g. another scribed on the
  same share finished first: skipped as at intake, no failure note, an earlier one removed).
- :func:`abandon`: jobs a dead worker never answered: an attempt each. :func:`interrupt`: jobs a
  stop cut short: requeued, attempt given back.
- :func:`recover`: at start, jobs a crash left ``working`` whose stored outputs were all
  completed after the attempt started (and whose recording is unchanged) are marked done;
  the others are queued again.
- Only files scribed wrote (by stored identity) are ever replaced, moved or removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import Protocol

from loguru import logger

from scribed import output
from scribed.config import Config, FolderSettings
from scribed.daemon.journal import Job, Journal
from scribed.daemon.journal_db import shown
from scribed.errors import ScribedError
from scribed.identity import FileIdentity
from scribed.protocol import JobOptions, JobSpec, Result
from scribed.system import files, retention

MAX_FILES_PER_BATCH = 8
MAX_AUDIO_PER_BATCH_S = 3600.0
TRANSIENT_FIRST_S = 30.0
TRANSIENT_MAX_S = 3600.0
TRANSIENT_HORIZON_S = 7 * 86400.0
FAILED = "failed"  # key of the failure note in Job.written


class Settled(Protocol):
    """What the watcher reports (:class:`scribed.daemon.watcher.Ready`)."""

    path: Path
    root: Path
    identity: FileIdentity
    audio_s: float | None


def restart_delay(failures: int) -> float:
    """Seconds before starting a worker again after ``failures`` deaths in a row: 1, 3, 7 ... 60."""
    return min(60.0, 2.0 ** min(failures, 6) - 1)


def transient_delay(failures: int) -> float:
    """Seconds before retrying after the ``failures``-th transient error in a row: 30, 60 ... 3600."""
    return min(TRANSIENT_MAX_S, TRANSIENT_FIRST_S * 2.0 ** (max(failures, 1) - 1))


# -- intake -----------------------------------------------------------------------------------------
def intake(cfg: Config, journal: Journal, ready: Settled) -> str:
    """Offer a settled recording to the journal; returns the journal's decision (or "moved")."""
    settings = cfg.settings_for(ready.path)
    if settings.source_after == "keep" and journal.find(ready.path) is None and _follow_move(settings, journal, ready):
        return "moved"
    paths = output.output_paths(ready.path, settings.formats, settings.dir, ready.root)
    # Only a regular file at an output name is a transcript somebody wrote (skipped unless
    # output.overwrite). A link or anything else there is an obstacle, not a transcript: the job
    # is queued and the write refuses it with a clear reason (a failed job, retryable by hand).
    exists = any(_regular(p) for p in paths.values())
    decision = journal.offer(ready, transcript_exists=exists, overwrite=cfg.output.overwrite)
    if decision in ("queued", "requeued"):
        logger.info("{} {}", decision, shown(ready.path))
    elif decision == "changed":
        logger.info("{} changed while it was transcribed; the new content is transcribed next", shown(ready.path))
    elif decision == "skipped":
        logger.info("skipped {}: a transcript not written by scribed exists (output.overwrite is false)",
                    shown(ready.path))
    return decision


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _follow_move(settings: FolderSettings, journal: Journal, ready: Settled) -> bool:
    """A done recording that now lives at ``ready.path`` (with ``settings``): move the transcripts
    scribed wrote for it."""
    for job in journal.moved_candidates(ready.identity):
        with contextlib.suppress(OSError):
            if job.identity.same_file(os.lstat(job.path)):
                continue  # still there: this is a copy, which gets its own transcript
        if job.identity.sha256 != ready.identity.sha256:
            continue  # same inode, other content: not the recording that was transcribed
        targets = output.output_paths(ready.path, settings.formats, settings.dir, ready.root)
        moved: dict[str, FileIdentity] = {}
        for fmt, ident in job.written.items():
            if fmt in targets and fmt in job.outputs:
                roots = [r for r in (settings.dir, ready.root, job.root) if r is not None]
                placed = _move_own(job.outputs[fmt], targets[fmt], ident, roots)
                if placed is not None:
                    moved[fmt] = placed
        if not moved:
            continue
        journal.relocate(job.id, ready.path, ready.root, ready.identity, targets, moved)
        logger.info("{} was moved to {}; its transcript followed ({})", shown(job.path), shown(ready.path),
                    ", ".join(shown(targets[f].name) for f in moved))
        return True
    return False


def _move_own(old: Path, new: Path, ident: FileIdentity, roots: list[Path]) -> FileIdentity | None:
    """Give the file scribed wrote at ``old`` (``ident``) the name ``new``, never replacing anything.

    Both folders are reached from a configured root without following any link below it (a
    folder swapped for a link cannot redirect the move), and the file must still be ``ident``."""
    old_root = next((r for r in roots if old.is_relative_to(r)), None)
    new_root = next((r for r in roots if new.is_relative_to(r)), None)
    if old_root is None or new_root is None:
        return None
    src_fd = dst_fd = -1
    try:
        src_fd = files.open_dir(old.parent, root=old_root)
        dst_fd = files.open_dir(new.parent, root=new_root, create=True)
        st = os.lstat(old.name, dir_fd=src_fd)
        if not stat.S_ISREG(st.st_mode) or not ident.same_file(st):
            return None  # not (any more) the file scribed wrote
        if not files.place_noreplace(src_fd, old.name, dst_fd, new.name, expect=ident):
            return None
        return FileIdentity.of(os.lstat(new.name, dir_fd=dst_fd))
    except (OSError, ValueError) as exc:
        if not isinstance(exc, OSError) or exc.errno not in (errno.ENOENT, errno.EEXIST, errno.EXDEV,
                                                                errno.EPERM, errno.EACCES):
            logger.warning("could not move transcript {} to {}: {}", shown(old), shown(new), exc)
        return None
    finally:
        for fd in (src_fd, dst_fd):
            if fd >= 0:
                os.close(fd)


# -- dispatch ---------------------------------------------------------------------------------------
def plan_batch(cfg: Config, journal: Journal) -> list[JobSpec]:
    """The next batch (possibly empty), marked working in the journal with its decided paths."""
    batch: list[Job] = []
    seconds = 0.0
    for job in journal.queued(MAX_FILES_PER_BATCH * 4):
        try:
            st = os.lstat(job.path)
        except FileNotFoundError:
            journal.gone(job.id)
            logger.info("{} disappeared before it was transcribed; dropped", shown(job.path))
            continue
        except OSError:
            st = None
        if st is None or not job.identity.same_file(st):
            journal.await_settle(job.id)
            logger.info("{} changed since it was queued; waiting for it to settle", shown(job.path))
            continue
        # A job that already failed an attempt (perhaps crashing a worker) goes alone, so it cannot take others down.
        if job.attempts and batch:
            continue
        batch.append(job)
        seconds += job.audio_s or 0.0
        if job.attempts or len(batch) >= MAX_FILES_PER_BATCH or seconds >= MAX_AUDIO_PER_BATCH_S:
            break
    specs = [job_spec(cfg, job) for job in batch]
    if specs:
        journal.start([(s.job_id, s.outputs, s.failure_note) for s in specs])
    return specs


def job_spec(cfg: Config, job: Job) -> JobSpec:
    """What the worker gets, with the settings of the recording's folder. Paths a job already has
    are kept while they fit the config, so a recording keeps its transcript's name when a
    same-named twin arrives later."""
    s = cfg.settings_for(job.path)
    fresh = output.output_paths(job.path, s.formats, s.dir, job.root)
    keep = set(job.outputs) == set(fresh) and all(job.outputs[f].parent == fresh[f].parent for f in fresh)
    outputs = dict(job.outputs) if keep else fresh
    note = job.failure_note if keep and job.failure_note else output.failure_path(job.path, s.dir, job.root)
    options = JobOptions(language=s.language, context=s.context, glossary=dict(s.glossary), speakers=s.speakers,
                         timestamps=s.timestamps)
    return JobSpec(job.id, job.path, job.root, job.identity, outputs, note, options,
                   {f: job.written[f] for f in outputs if f in job.written}, s.dir)


# -- results ----------------------------------------------------------------------------------------
def finish(cfg: Config, journal: Journal, result: Result) -> str:
    """Record a worker's result. Returns "done", "failed" (for good), "retry", "deferred",
    "requeued", "changed", "skipped" or "unknown" (no such job)."""
    job = journal.get(result.job_id)
    if job is None:
        return "unknown"
    if result.outputs:
        journal.record_written(job.id, dict(result.outputs))
        job = journal.get(job.id) or job
    if job.changed:  # the watcher saw new content while this attempt ran: whatever it says is void
        journal.interrupted([job.id])
        logger.info("{} changed while it was transcribed; transcribing the new content", shown(job.path))
        return "requeued"
    if result.outcome == "done":
        written = _drop_failure_note(cfg, job)
        journal.done(job.id, written, result.audio_s, result.language)
        logger.info("done {}", shown(job.path))
        _apply_retention(cfg, job, written)
        return "done"
    error = result.error or "unknown error"
    if result.outcome == "skipped":
        journal.skipped(job.id, "a transcript scribed did not write appeared while it was transcribed",
                        _drop_failure_note(cfg, job))
        logger.info("skipped {}: a transcript not written by scribed appeared while it was transcribed"
                    " (another scribed on this folder, or a person; output.overwrite is false)", shown(job.path))
        return "skipped"
    if result.outcome == "changed":
        if _matches(job):  # the journal already knows the file as it is now (e.g. touched): go again
            journal.interrupted([job.id])
            return "requeued"
        journal.interrupted([job.id], state="changed")
        logger.info("{} changed while it was transcribed ({}); waiting for the new content to settle",
                    shown(job.path), error)
        return "changed"
    if result.outcome == "transient":
        now = journal.now()
        since = job.transient_since if job.transient_since is not None else now
        if now - since < TRANSIENT_HORIZON_S:
            delay = transient_delay(job.transient + 1)
            journal.defer(job.id, error, now + delay, since)
            logger.warning("{}: {} (temporary; retrying in {:.0f} s)", shown(job.path), error, delay)
            return "deferred"
    final = journal.failed(job.id, error, cfg.service.attempts, final=result.outcome in ("final", "transient"))
    report_failure(cfg, journal, job, error, final)
    return "failed" if final else "retry"


def _matches(job: Job) -> bool:
    """The file at the job's path is the one the journal knows (its identity's cheap part)."""
    try:
        return job.identity.same_file(os.lstat(job.path))
    except OSError:
        return False


def abandon(cfg: Config, journal: Journal, job_ids: tuple[int, ...] | list[int], reason: str) -> int:
    """Jobs a worker took and never answered (it died): a failed attempt each. Returns how many
    are now failed for good."""
    failed = 0
    for job_id in job_ids:
        job = journal.get(job_id)
        if job is None:
            continue
        if job.changed:
            journal.interrupted([job_id])
            continue
        final = journal.failed(job_id, reason, cfg.service.attempts)
        report_failure(cfg, journal, job, reason, final)
        failed += final
    return failed


def interrupt(journal: Journal, job_ids: tuple[int, ...] | list[int]) -> None:
    """Jobs a stop cut short: queued again; the attempt was not the file's fault."""
    if job_ids:
        journal.interrupted(list(job_ids))
        logger.info("{} unfinished job(s) requeued for the next start", len(job_ids))


def report_failure(cfg: Config, journal: Journal, job: Job, error: str, final: bool) -> None:
    if not final:
        logger.warning("attempt failed for {}: {} (will retry)", shown(job.path), error)
        return
    logger.error("failed {}: {}", shown(job.path), error)
    if not (cfg.output.failure_marker and job.failure_note):
        return
    try:
        ident = output.write_failure(job.failure_note, job.path, error, replaceable=job.written.get(FAILED),
                                     root=_root_of(cfg, job, job.failure_note))
    except (OSError, ScribedError) as exc:
        logger.error("cannot write failure note for {}: {}", shown(job.path), exc)
        return
    journal.record_written(job.id, {FAILED: ident})


def _root_of(cfg: Config, job: Job, path: Path) -> Path | None:
    """The folder below which no symlink is followed for ``path``: the watched folder or the
    output folder in effect for the recording."""
    for root in (job.root, cfg.settings_for(job.path).dir):
        if root is not None and path.is_relative_to(root):
            return root
    return None


def _drop_failure_note(cfg: Config, job: Job) -> dict[str, FileIdentity]:
    """Remove the failure note of an earlier attempt, only if it is still the one scribed wrote."""
    written = dict(job.written)
    ident = written.pop(FAILED, None)
    if ident is not None and job.failure_note is not None:
        with contextlib.suppress(OSError):
            output.remove_output(job.failure_note, ident, root=_root_of(cfg, job, job.failure_note))
    return written


def _apply_retention(cfg: Config, job: Job, written: dict[str, FileIdentity]) -> None:
    """The recording's folder's ``source_after`` (and archive folder), once its transcript is written."""
    settings = cfg.settings_for(job.path)
    action = settings.source_after
    transcripts = [job.outputs[f] for f in ("txt", *job.outputs) if f in job.outputs and f in written]
    if action == "keep" or not transcripts:
        return
    try:
        retention.apply_source_after(job.path, transcripts[0], action, archive_dir=settings.archive_dir,
                                     watch_root=job.root, passes=cfg.policy.secure_delete_passes,
                                     identity=job.identity, hardlinked=cfg.policy.hardlinked)
    except Exception as exc:  # the transcript is safe; the recording stays where it is
        logger.error("could not {} {}: {}", action, shown(job.path), exc)


# -- start-up ---------------------------------------------------------------------------------------
def recover(cfg: Config, journal: Journal) -> None:
    """Jobs a crash left ``working``: done if finished before the crash, else queued again."""
    for job in journal.jobs("working"):
        written = _finished_before_crash(job)
        if written is not None:
            # Crash between "transcript written" and "journal says done": the transcript is complete
            # (atomic rename), so finish the bookkeeping instead of transcribing again.
            journal.done(job.id, {**job.written, **written}, None, None)
            logger.info("{} was finished before the interruption; marked done", shown(job.path))
            continue
        journal.requeue(job.id)
        logger.info("requeued {} (interrupted by a stop or crash, attempt {})", shown(job.path), job.attempts)


def _finished_before_crash(job: Job) -> dict[str, FileIdentity] | None:
    if not job.outputs or job.started_at is None:
        return None
    try:
        if not job.identity.same_file(os.lstat(job.path)):
            return None
        found = {fmt: os.lstat(path) for fmt, path in job.outputs.items()}
    except OSError:
        return None
    if all(stat.S_ISREG(st.st_mode) and st.st_mtime >= job.started_at for st in found.values()):
        return {fmt: FileIdentity.of(st) for fmt, st in found.items()}
    return None
