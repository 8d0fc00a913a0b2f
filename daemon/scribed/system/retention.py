"""What happens to a recording after its transcript is written: a small table of strategies.

Contract:
- :data:`STRATEGIES` maps each valid ``policy.source_after`` value (config derives its choices
  from the keys) to a :class:`Strategy`: ``keep`` touches nothing; ``archive`` moves the
  recording under ``policy.archive_dir`` keeping its sub-folder layout, never overwriting
  (`` (2)``... instead); ``delete`` securely deletes it.
- :func:`apply_source_after` acts only on the file it was asked about: the recording's folder
  is opened from the watch root with ``O_NOFOLLOW`` for every component, and the file in it must
  be a regular file with the queued ``identity`` (dev, inode, size, mtime), checked again after
  every step; a folder swapped for a symlink, or a recording replaced mid-job, makes it refuse
  (ScribedError) with nothing outside the roots read, moved, written or deleted.
- A recording with other hard links is never overwritten (``policy.hardlinked``, valid values
  :data:`HARDLINKED`: ``unlink`` removes only this name and logs that another copy survives;
  ``refuse`` leaves it).
- Light: standard library, loguru and scribed's own light modules only (config imports this).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from loguru import logger

from scribed.errors import ScribedError
from scribed.identity import FileIdentity
from scribed.system import files, shred
from scribed.system.names import fit_name, temp_name
from scribed.system.shred import HARDLINKED  # config's policy.hardlinked choices, with STRATEGIES


@dataclass(frozen=True)
class Retained:
    """One recording, checked and held by its folder's fd, that a strategy acts on."""

    source: Path
    folder_fd: int
    name: str
    identity: FileIdentity  # what is at ``name`` now (and what was queued, when that was given)
    nlink: int
    relative: Path  # the recording's path below the watch root
    archive_dir: Path | None
    passes: int
    hardlinked: str


@dataclass(frozen=True)
class Strategy:
    """One ``policy.source_after`` choice. ``act`` is None for a strategy that touches nothing."""

    name: str
    act: Callable[[Retained], Path | None] | None
    summary: str


def _delete(job: Retained) -> None:
    shred.secure_delete_at(job.folder_fd, job.name, job.passes, expect=job.identity, hardlinked=job.hardlinked)
    logger.info("deleted recording {} (transcript written)", job.source)
    return None


def _archive(job: Retained) -> Path:
    if job.archive_dir is None:
        raise ScribedError(f"not archiving {str(job.source)!r}: policy.archive_dir is not set")
    archive = Path(os.path.abspath(Path(job.archive_dir).expanduser()))
    dest_dir = archive / job.relative.parent
    try:
        dest_fd = files.open_dir(dest_dir, root=archive, create=True, mode=0o700)
    except OSError as exc:
        raise ScribedError(f"not archiving {str(job.source)!r}: cannot open {str(dest_dir)!r}:"
                           f" {exc.strerror}") from None
    try:
        final = None
        if os.fstat(dest_fd).st_dev == job.identity.dev:
            final = _move(job, dest_fd)
        if final is None:  # another file system (or a bind mount of one): copy, verify, delete
            final = _copy_across(job, dest_fd)
        files.fsync_dir(dest_fd)
        files.fsync_dir(job.folder_fd)
    finally:
        os.close(dest_fd)
    logger.info("archived recording {} -> {}", job.source, dest_dir / final)
    return dest_dir / final


def _candidates(name: str) -> Iterator[str]:
    """``name``, then ``stem (2).ext``, ``stem (3).ext``... (each within NAME_MAX)."""
    stem, dot, ext = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
    yield name
    for n in range(2, 10_000):
        yield fit_name(f"{stem} ({n})", dot + ext)


def _move(job: Retained, dest_fd: int) -> str | None:
    """Link the recording into the archive folder under a free name; None if across devices."""
    for candidate in _candidates(job.name):
        try:
            placed = files.place_noreplace(job.folder_fd, job.name, dest_fd, candidate, expect=job.identity)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                return None
            raise
        if not placed:
            raise ScribedError(f"not archiving {str(job.source)!r}: it was replaced while it was being archived")
        return candidate
    raise ScribedError(f"not archiving {str(job.source)!r}: no free name in the archive")


def _copy_across(job: Retained, dest_fd: int) -> str:
    if job.nlink > 1 and job.hardlinked == "refuse":
        raise ScribedError(f"not archiving {str(job.source)!r}: it has other hard links and policy.hardlinked"
                           " is 'refuse'")
    src = os.open(job.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=job.folder_fd)
    partial = temp_name(job.name)  # a scribed temporary: wiped after a crash, ignored by watchers
    try:
        st = os.fstat(src)
        if not job.identity.same_file(st):
            raise ScribedError(f"not archiving {str(job.source)!r}: it changed before it could be copied")
        out = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                      dir_fd=dest_fd)
        try:
            copied = _copy_fd(src, out)
            if copied != st.st_size or not job.identity.same_file(os.fstat(src)):
                raise ScribedError(f"archiving {str(job.source)!r}: copied {copied} of {st.st_size} bytes")
            os.fchmod(out, stat.S_IMODE(st.st_mode))
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.fsync(out)
            copy = FileIdentity.of(os.fstat(out))
        finally:
            os.close(out)
        final = next((c for c in _candidates(job.name) if _placed(dest_fd, partial, c, copy)), None)
        if final is None:
            raise ScribedError(f"not archiving {str(job.source)!r}: no free name in the archive")
    except BaseException:
        with contextlib.suppress(OSError, ScribedError):  # a partial copy of the recording is still the recording
            shred.secure_delete_at(dest_fd, partial, job.passes, hardlinked="overwrite")
        raise
    finally:
        os.close(src)
    shred.secure_delete_at(job.folder_fd, job.name, job.passes, expect=job.identity, hardlinked=job.hardlinked)
    return final


def _placed(dest_fd: int, partial: str, candidate: str, copy: FileIdentity) -> bool:
    try:
        if not files.place_noreplace(dest_fd, partial, dest_fd, candidate, expect=copy):
            raise ScribedError("the archive copy was replaced while it was being placed")
    except FileExistsError:
        return False
    return True


def _copy_fd(src: int, out: int) -> int:
    total = 0
    while chunk := os.read(src, 1 << 20):
        files.write_all(out, chunk)
        total += len(chunk)
    return total


STRATEGIES: Mapping[str, Strategy] = MappingProxyType({
    "keep": Strategy("keep", None, "leave the recording where it is"),
    "archive": Strategy("archive", _archive, "move it under policy.archive_dir"),
    "delete": Strategy("delete", _delete, "securely delete it"),
})


def _inside(path: Path, root: Path, what: str, source: Path) -> Path:
    try:
        return Path(os.path.abspath(path)).relative_to(Path(os.path.abspath(root)))
    except ValueError:
        raise ScribedError(f"not touching {str(source)!r}: {what} is not inside {str(root)!r}") from None


def _open_folder(folder: Path, root: Path | None, source: Path, what: str) -> int:
    try:
        return files.open_dir(folder, root=root)
    except OSError as exc:
        raise ScribedError(f"not touching {str(source)!r}: {what} {str(folder)!r} is not a real folder"
                           f"{f' below {str(root)!r}' if root else ''} any more ({exc.strerror})") from None


def _check_transcript(transcript: Path, watch_root: Path, source: Path) -> os.stat_result:
    transcript = Path(os.path.abspath(transcript))
    root = watch_root if transcript.is_relative_to(os.path.abspath(watch_root)) else None
    fd = _open_folder(transcript.parent, root, source, "the transcript's folder")
    try:
        st = files.lstat_at(fd, transcript.name)
    finally:
        os.close(fd)
    if st is None or not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        raise ScribedError(f"not removing {str(source)!r}: transcript {str(transcript)!r} is not a non-empty file")
    return st


def apply_source_after(
    source: Path,
    transcript: Path,
    action: str,
    *,
    archive_dir: Path | None,
    watch_root: Path,
    passes: int,
    identity: FileIdentity | None = None,
    hardlinked: str = "unlink",
) -> Path | None:
    """Apply the ``action`` strategy to ``source`` once ``transcript`` has been written.

    ``keep`` returns None and touches nothing. For the others, ``transcript`` must be a regular,
    non-empty file distinct from the recording, ``source`` must lie below ``watch_root`` and
    (when given) still be ``identity``; otherwise ScribedError is raised and nothing is touched.
    ``archive`` returns the archived path (across file systems it copies, fsyncs, verifies and
    then securely deletes the original); ``delete`` returns None.
    """
    strategy = STRATEGIES.get(action)
    if strategy is None:
        raise ValueError(f"unknown policy.source_after action {action!r}")
    if strategy.act is None:
        return None
    if hardlinked not in HARDLINKED:
        raise ValueError(f"unknown policy.hardlinked value {hardlinked!r}")
    source = Path(os.path.abspath(source))
    relative = _inside(source, watch_root, "the recording", source)
    tst = _check_transcript(transcript, watch_root, source)
    folder_fd = _open_folder(source.parent, watch_root, source, "its folder")
    try:
        st = files.lstat_at(folder_fd, source.name)
        if st is None or not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) == (tst.st_dev, tst.st_ino):
            raise ScribedError(f"not touching {str(source)!r}: not a regular file distinct from its transcript")
        if identity is not None and not identity.same_file(st):
            raise ScribedError(f"not touching {str(source)!r}: it is not the recording that was transcribed")
        job = Retained(source, folder_fd, source.name, FileIdentity.of(st), st.st_nlink, relative,
                       archive_dir, passes, hardlinked)
        return strategy.act(job)
    finally:
        os.close(folder_fd)
