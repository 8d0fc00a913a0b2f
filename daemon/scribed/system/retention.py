"""What happens to a recording after its transcript is written: keep, archive or delete."""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from pathlib import Path

from loguru import logger

from scribed.errors import ScribedError
from scribed.system.files import _CHUNK, _fsync_dir, secure_delete

SOURCE_ACTIONS = ("keep", "archive", "delete")


def _unique(dest: Path) -> Path:
    """``dest`` or the first free ``name (N).ext``."""
    candidate, n = dest, 2
    while os.path.lexists(candidate):
        candidate = dest.with_name(f"{dest.stem} ({n}){dest.suffix}")
        n += 1
    return candidate


def _place_without_overwrite(src: Path, dest: Path) -> Path:
    """Give ``src`` the name ``dest`` (or ``dest (N)``), never replacing a file; same fs only."""
    while True:
        final = _unique(dest)
        try:
            os.link(src, final)  # fails instead of overwriting, unlike rename
        except FileExistsError:
            continue  # somebody took the name between the check and the link
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            os.rename(src, final)  # no hard links here (vfat, exfat): check-then-rename
            return final
        os.unlink(src)
        return final


def _copy_across(source: Path, dest: Path, passes: int) -> Path:
    """Copy to the archive file system, fsync, verify the size, then securely delete the source."""
    size = os.stat(source).st_size
    partial = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.partial")
    fd = os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    try:
        with open(source, "rb") as src, os.fdopen(fd, "wb", closefd=True) as out:
            shutil.copyfileobj(src, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())
            copied = os.fstat(out.fileno()).st_size
        if copied != size:
            raise ScribedError(f"archiving {str(source)!r}: copied {copied} of {size} bytes")
        shutil.copystat(source, partial)
        final = _place_without_overwrite(partial, dest)
    except BaseException:
        secure_delete(partial, passes)  # a partial copy of the recording is still the recording
        raise
    _fsync_dir(final.parent)
    secure_delete(source, passes)
    return final


def apply_source_after(
    source: Path,
    transcript: Path,
    action: str,
    *,
    archive_dir: Path | None,
    watch_root: Path,
    passes: int,
) -> Path | None:
    """Keep, archive or securely delete ``source`` once ``transcript`` has been written.

    ``keep`` returns None and touches nothing. For ``archive`` and ``delete`` the transcript must be
    a regular, non-empty file (and not the recording itself), else ScribedError is raised and
    nothing is touched. ``archive`` moves the recording to ``archive_dir / source.relative_to
    (watch_root)``, adding `` (2)``... rather than overwriting, and returns the new path; across
    file systems it copies, fsyncs, verifies the size and then securely deletes the original.
    ``delete`` securely deletes the recording and returns None.
    """
    if action not in SOURCE_ACTIONS:
        raise ValueError(f"unknown policy.source_after action {action!r}")
    if action == "keep":
        return None
    source, transcript = Path(source), Path(transcript)
    try:
        tst = os.lstat(transcript)
        sst = os.lstat(source)
    except OSError as exc:
        raise ScribedError(f"not removing {str(source)!r}: {exc.strerror}: {exc.filename!r}") from None
    if not stat.S_ISREG(tst.st_mode) or tst.st_size == 0:
        raise ScribedError(f"not removing {str(source)!r}: transcript {str(transcript)!r} is not a non-empty file")
    if not stat.S_ISREG(sst.st_mode) or (tst.st_dev, tst.st_ino) == (sst.st_dev, sst.st_ino):
        raise ScribedError(f"not removing {str(source)!r}: not a regular file distinct from its transcript")
    if action == "delete":
        secure_delete(source, passes)
        logger.info("deleted recording {} (transcript written)", source)
        return None
    if archive_dir is None:
        raise ScribedError(f"not archiving {str(source)!r}: policy.archive_dir is not set")
    try:
        relative = source.absolute().relative_to(Path(watch_root).absolute())
    except ValueError:
        try:
            relative = source.resolve().relative_to(Path(watch_root).resolve())
        except ValueError:
            raise ScribedError(f"not archiving {str(source)!r}: not inside {str(watch_root)!r}") from None
    dest = Path(archive_dir).expanduser() / relative
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        final = _place_without_overwrite(source, dest)
        _fsync_dir(final.parent)
        _fsync_dir(source.parent)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        final = _copy_across(source, dest, passes)
    logger.info("archived recording {} -> {}", source, final)
    return final
