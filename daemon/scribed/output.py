"""Transcript files: rendering (txt, srt, vtt, json) and atomic writes.

Contract:
- :func:`output_paths` decides where transcripts of a recording go (beside it, or under
  ``output.dir`` with the same sub-folder layout).
- :func:`atomic_write` never leaves a half-written file under the final name: it writes a hidden
  temporary in the same folder (``.NAME.scribed-XXXX.tmp``), fsyncs it, gives it the source's
  permission bits, renames it into place and fsyncs the folder. A sync client or a colleague
  sees either nothing or the whole transcript.
- The JSON layout is an interface: ``{"source", "duration_s", "language", "model",
  "segments": [{"start", "end", "text", "language"}], "text"}`` (+ ``"failures"``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import stat
from pathlib import Path

from scribed.media.audio import AUDIO_EXTENSIONS

TEMP_PREFIX = "."
TEMP_MARK = ".scribed-"
TEMP_SUFFIX = ".tmp"
FAILED_SUFFIX = ".failed.txt"
_TEMP_RE = re.compile(r"^\..+\.scribed-[A-Za-z0-9_]+\.tmp$")


def is_scribed_temp(name: str) -> bool:
    """True for scribed's own temporary files (ignored by the watcher, wiped after a crash)."""
    return bool(_TEMP_RE.match(name))


def output_paths(source: Path, formats: tuple[str, ...] | list[str], out_dir: Path | None = None,
                 root: Path | None = None) -> dict[str, Path]:
    """Transcript path per format: ``NAME.<fmt>`` beside the source, or in ``out_dir`` keeping the
    source's path relative to ``root`` (the watched folder) when it has one."""
    folder = source.parent
    if out_dir is not None:
        rel = source.parent.relative_to(root) if root and source.parent.is_relative_to(root) else Path()
        folder = out_dir / rel
    return {fmt: folder / f"{output_stem(source)}.{fmt}" for fmt in formats}


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
    return output_paths(source, ["x"], out_dir, root)["x"].with_name(output_stem(source) + FAILED_SUFFIX)


def atomic_write(path: Path, data: str, mode_from: Path | None = None) -> None:
    """Write ``data`` (UTF-8) to ``path`` atomically; permission bits copied from ``mode_from``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = 0o644
    if mode_from is not None:
        with contextlib.suppress(OSError):
            mode = stat.S_IMODE(os.stat(mode_from).st_mode) & 0o666
    tmp = path.with_name(f"{TEMP_PREFIX}{path.name}{TEMP_MARK}{os.urandom(4).hex()}{TEMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_failure(path: Path, source: Path, reason: str) -> None:
    atomic_write(path, f"scribed could not transcribe {source.name}:\n{reason}\n", mode_from=source)
