"""Cluster mode, worker side: what a worker checks about one job before and after transcribing
it, broker aside.

Contract:
- :class:`PathMap` maps the coordinator's paths to this host's (``cluster.path_map``, longest
  coordinator prefix first; an empty map means this host's own ``watch.folders`` and
  ``output.dir`` under the same paths). A path that is not absolute and normalised, or outside
  every mapped root, is :class:`Refused`: a compromised broker cannot make a worker read or
  write anything else. An output must be named ``NAME.FORMAT`` for a known format.
- :func:`localize` turns a job into this host's terms: mapped paths; the recording's identity as
  this host sees it, checked against the coordinator's (same size and sha256, mtime within
  :data:`scribed.wire.MTIME_TOLERANCE_NS`), read through folder descriptors that follow no link
  below its root; ``replaceable`` translated the same way (what no longer matches is dropped,
  so it cannot be replaced). Another file raises :class:`~scribed.errors.RecordingChanged`, a
  missing one FileNotFoundError.
- The re-run rule (:func:`outputs_state`, :func:`written_since`): a job given again to a worker
  after the one holding it died may already have its transcripts written. An output that is a
  regular file now and was absent, or another file, when the first attempt started, is that
  attempt's (the daemon's own crash recovery trusts transcripts in the same way).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from scribed import text, wire
from scribed.config import OUTPUT_FORMATS, Config
from scribed.daemon.settle import sha256_fd
from scribed.errors import RecordingChanged, ScribedError
from scribed.identity import FileIdentity
from scribed.protocol import JobSpec
from scribed.system import files


class Refused(ScribedError):
    """A job names a path this worker may not touch (outside its mapped roots, or malformed)."""


class PathMap:
    """Coordinator path prefix -> this host's folder (see the module contract)."""

    def __init__(self, cfg: Config) -> None:
        mapping = dict(cfg.cluster.path_map) or {
            str(p): p for p in (*cfg.watch.folders, *([cfg.output.dir] if cfg.output.dir else []))}
        self.pairs = sorted(((Path(os.path.abspath(k)), Path(os.path.abspath(v))) for k, v in mapping.items()),
                            key=lambda kv: len(kv[0].parts), reverse=True)

    @property
    def roots(self) -> tuple[Path, ...]:
        return tuple(local for _, local in self.pairs)

    def local(self, path: Path) -> Path:
        """This host's path for the coordinator's ``path``; Refused if it maps nowhere."""
        text = str(path)
        if not path.is_absolute() or os.path.normpath(text) != text or "\0" in text:
            raise Refused(f"refused {text!r}: not an absolute, normalised path")
        for remote, local in self.pairs:
            if path.is_relative_to(remote):
                return local / path.relative_to(remote)
        raise Refused(f"refused {text!r}: outside this worker's cluster.path_map")

    def root_of(self, path: Path) -> Path:
        """The mapped root (a local folder) that holds the local ``path``."""
        for _, local in self.pairs:
            if path.is_relative_to(local):
                return local
        raise Refused(f"refused {str(path)!r}: outside this worker's mapped folders")


def localize(spec: JobSpec, paths: PathMap) -> JobSpec:
    """The job with this host's paths and identities (see the module contract). Its ``root`` and
    ``out_dir`` become the mapped folders holding them (this host's own configuration), so no
    link below those is followed, whatever the message says."""
    path, root = paths.local(spec.path), paths.local(spec.root)
    if not path.is_relative_to(root) or path == root:
        raise Refused(f"refused {str(spec.path)!r}: not inside its watched folder")
    anchor = paths.root_of(path)
    outputs = {fmt: paths.local(p) for fmt, p in spec.outputs.items()}
    note = paths.local(spec.failure_note)
    for fmt, out in outputs.items():
        if fmt not in OUTPUT_FORMATS or not out.name.endswith(f".{fmt}"):
            raise Refused(f"refused output {str(out)!r} for format {fmt!r}")
    out_dir = None if spec.out_dir is None else paths.root_of(paths.local(spec.out_dir))
    for out in (*outputs.values(), note):
        if not out.is_relative_to(anchor) and (out_dir is None or not out.is_relative_to(out_dir)):
            raise Refused(f"refused output {str(out)!r}: not beside its recording nor in its output folder")
    _check_options(spec)
    identity = verify_recording(path, anchor, spec.identity)
    replaceable = {}
    for fmt, ident in spec.replaceable.items():
        if fmt in outputs and (st := _lstat(outputs[fmt])) is not None and (mine := wire.local_identity(ident, st)):
            replaceable[fmt] = mine
    return replace(spec, path=path, root=anchor, identity=identity, outputs=outputs, failure_note=note,
                   replaceable=replaceable, out_dir=out_dir)


def _check_options(spec: JobSpec) -> None:
    options = spec.options
    try:
        text.language_name(str(options.language))
    except ValueError as exc:
        raise Refused(f"refused {str(spec.path)!r}: {exc}") from None
    if not isinstance(options.context, str) or not isinstance(options.timestamps, bool):
        raise Refused(f"refused {str(spec.path)!r}: malformed options")
    speakers = options.speakers
    if speakers not in ("off", "auto") and not (type(speakers) is int and 1 <= speakers <= 32):
        raise Refused(f"refused {str(spec.path)!r}: speakers {speakers!r}")


def verify_recording(path: Path, root: Path, expect: FileIdentity) -> FileIdentity:
    """This host's identity of the recording at ``path`` if it is the one the coordinator queued."""
    folder = files.open_dir(path.parent, root=root)
    try:
        fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
    finally:
        os.close(folder)
    try:
        before = os.fstat(fd)
        if wire.local_identity(expect, before) is None:
            raise RecordingChanged(path, f"this host sees {before.st_size} bytes, mtime {before.st_mtime_ns} "
                                         f"(queued: {expect.size} bytes, mtime {expect.mtime_ns})")
        digest = sha256_fd(fd, lambda: False)
        if not FileIdentity.of(before).same_file(os.fstat(fd)):
            raise RecordingChanged(path, "it changed while this worker hashed it")
    finally:
        os.close(fd)
    if expect.sha256 and digest != expect.sha256:
        raise RecordingChanged(path, "its content is not what was queued (sha256 differs)")
    return FileIdentity.of(before, digest)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def outputs_state(outputs: Mapping[str, Path]) -> dict[str, list[int] | None]:
    """What is at each output name now (``[size, mtime_ns]`` of a regular file, or None),
    recorded when a job's first attempt starts; hosts compare it by size and mtime."""
    state: dict[str, list[int] | None] = {}
    for fmt, path in outputs.items():
        st = _lstat(path)
        state[fmt] = [st.st_size, st.st_mtime_ns] if st is not None and stat.S_ISREG(st.st_mode) else None
    return state


def written_since(outputs: Mapping[str, Path], before: Mapping[str, object]) -> dict[str, FileIdentity]:
    """The outputs that are regular files now and were not there (or were another file) in
    ``before`` (the :func:`outputs_state` of the first attempt, maybe on another host)."""
    found = {}
    for fmt, path in outputs.items():
        st = _lstat(path)
        if st is None or not stat.S_ISREG(st.st_mode):
            continue
        was = before.get(fmt)
        if isinstance(was, list) and len(was) == 2 and all(type(v) is int for v in was) \
                and wire.local_identity(FileIdentity(0, 0, was[0], was[1]), st) is not None:
            continue  # the same file as before the first attempt: not written by it
        found[fmt] = FileIdentity.of(st)
    return found
