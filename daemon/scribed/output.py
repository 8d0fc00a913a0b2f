"""Where transcripts and failure notes go, and how they are written.

Contract:
- :func:`output_paths` / :func:`failure_path` decide the names (beside the recording, or under
  ``output.dir`` keeping the sub-folder layout). Every name fits the 255-byte ``NAME_MAX``: when
  ``NAME.<fmt>`` would not, the stem is cut on a UTF-8 character boundary and gets ``~`` plus 8
  hex digits of the full name's hash, keeping the extension (:func:`scribed.system.names.fit_name`).
- :func:`atomic_write` never leaves a half-written file under the final name: it writes a hidden
  temporary (``.NAME.scribed-XXXXXXXX.tmp``) in the same folder, fsyncs it and links it into
  place (:func:`scribed.system.files.write_file`). A sync client or a colleague sees nothing or
  the whole transcript. It never follows or replaces a symlink at the name, and replaces an
  existing file only if it is ``replaceable`` (a file scribed wrote and nobody changed since) or
  ``overwrite`` is set and it is a regular file; otherwise :class:`~scribed.errors.OutputTaken`.
  With ``root`` (the watched folder or ``output.dir``), no symlink below it is followed either.
- Permissions: a transcript or failure note is never more readable than both the recording and
  the process umask allow: ``mode = recording_mode & 0o666 & ~umask`` (``0o600 & ~umask`` when
  the recording's mode cannot be read). Under the unit's ``UMask=0077`` that is owner-only.
"""

from __future__ import annotations

import glob
import os
import stat
from pathlib import Path

from loguru import logger

from scribed.identity import FileIdentity
from scribed.media.audio import AUDIO_EXTENSIONS  # a light import: codecs load lazily
from scribed.system import files
from scribed.system.names import fit_name, is_scribed_temp

__all__ = ["FAILED_SUFFIX", "atomic_write", "failure_path", "is_scribed_temp", "output_mode", "output_paths",
           "output_stem", "remove_output", "write_failure"]

FAILED_SUFFIX = ".failed.txt"


def output_paths(source: Path, formats: tuple[str, ...] | list[str], out_dir: Path | None = None,
                 root: Path | None = None) -> dict[str, Path]:
    """Transcript path per format: ``NAME.<fmt>`` beside the source, or in ``out_dir`` keeping the
    source's path relative to ``root`` (the watched folder) when it has one."""
    folder, stem = _output_folder(source, out_dir, root), output_stem(source)
    return {fmt: folder / fit_name(stem, f".{fmt}") for fmt in formats}


def _output_folder(source: Path, out_dir: Path | None, root: Path | None) -> Path:
    if out_dir is None:
        return source.parent
    return out_dir / (source.parent.relative_to(root) if root and source.parent.is_relative_to(root) else Path())


def output_stem(source: Path) -> str:
    """``NAME`` for ``NAME.m4a``; ``NAME.m4a`` when another recording ``NAME.*`` sits beside it,
    so ``talk.mp3`` and ``talk.flac`` never write over each other's transcript."""
    try:
        twins = [p for p in source.parent.glob(glob.escape(source.stem) + ".*")
                 if p.suffix.lower() in AUDIO_EXTENSIONS and p.name != source.name]
    except OSError:
        twins = []
    return source.name if twins else source.stem


def failure_path(source: Path, out_dir: Path | None = None, root: Path | None = None) -> Path:
    """``NAME.failed.txt`` where the transcripts of ``source`` would go."""
    return _output_folder(source, out_dir, root) / fit_name(output_stem(source), FAILED_SUFFIX)


def output_mode(mode_from: Path | int | None) -> int:
    """The permission bits of an output: ``recording_mode & 0o666 & ~umask``.

    ``mode_from`` is the recording (its mode read without following a link) or its ``st_mode``;
    None means "no recording" (``0o666 & ~umask``, as for any new file). A recording whose mode
    cannot be read (or that is not a regular file) counts as ``0o600``.
    """
    if mode_from is None:
        base = 0o666
    elif isinstance(mode_from, int):
        base = stat.S_IMODE(mode_from)
    else:
        try:
            st = os.stat(mode_from, follow_symlinks=False)
            base = stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else 0o600
        except OSError:
            base = 0o600
    return base & 0o666 & ~files.current_umask()


def atomic_write(path: Path, data: str, mode_from: Path | int | None = None, *,
                 replaceable: FileIdentity | None = None, overwrite: bool = False,
                 root: Path | None = None) -> FileIdentity:
    """Write ``data`` (UTF-8) to ``path`` atomically; returns the identity of the file placed.

    See the module contract for what may be replaced and the mode. Characters the file system
    name encoding smuggled in (undecodable bytes) are written as backslash escapes, so a strange
    recording name never makes a transcript or failure note fail.
    """
    payload = data.encode("utf-8", "backslashreplace")
    return files.write_file(Path(path), payload, output_mode(mode_from), root=root, replaceable=replaceable,
                            overwrite=overwrite)


def write_failure(path: Path, source: Path, reason: str, *, replaceable: FileIdentity | None = None,
                  overwrite: bool = False, root: Path | None = None,
                  mode_from: Path | int | None = None) -> FileIdentity:
    """Write the failure note ``path`` for ``source`` (mode from ``mode_from``, default ``source``)."""
    return atomic_write(path, f"scribed could not transcribe {source.name}:\n{reason}\n",
                        mode_from=source if mode_from is None else mode_from,
                        replaceable=replaceable, overwrite=overwrite, root=root)


def remove_output(path: Path, identity: FileIdentity, *, root: Path | None = None) -> bool:
    """Remove ``path`` only if it is still the file scribed wrote (``identity``): True if removed.

    A file someone else put at that name (or a symlink, or a changed file) is left alone and
    logged at DEBUG. Never follows a symlink below ``root``.
    """
    path = Path(path)
    try:
        dir_fd = files.open_dir(path.parent, root=root)
    except (OSError, ValueError) as exc:
        logger.debug("not removing {}: {}", path, exc)
        return False
    try:
        st = files.lstat_at(dir_fd, path.name)
        if st is None or not stat.S_ISREG(st.st_mode) or not identity.same_file(st):
            if st is not None:
                logger.debug("not removing {}: not the file scribed wrote", path)
            return False
        os.unlink(path.name, dir_fd=dir_fd)
        files.fsync_dir(dir_fd)
        return True
    finally:
        os.close(dir_fd)
