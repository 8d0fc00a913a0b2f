"""What lies inside the watched folders: which names could be finished recordings, and the walk.

Contract:
- :func:`is_candidate` says whether a file name could be a finished recording: an audio/video
  extension (:data:`scribed.media.audio.AUDIO_EXTENSIONS`, any case), not hidden, not a sync
  client's or browser's temporary (Syncthing, rsync, Nextcloud/ownCloud, Dropbox, Office lock
  files, partial downloads), not one of scribed's own outputs/temporaries, and not matching an
  ``ignore`` glob. :func:`is_temp_name` is the part of that which also prunes folders.
- :class:`Scope` holds the roots, exclusions and depth of a :class:`~scribed.config.WatchConfig`;
  its :meth:`Scope.walk` is iterative, opens every folder from its root without following links
  (:func:`scribed.system.files.open_dir`), looks at most ``max_depth`` levels deep and notes the
  links and too-deep folders it meets instead of entering them. Only names and lstat types are
  looked at here; the watcher decides by identity later.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from loguru import logger

from scribed.config import WatchConfig, expand_path
from scribed.daemon.journal_db import shown
from scribed.media.audio import AUDIO_EXTENSIONS
from scribed.output import FAILED_SUFFIX, is_scribed_temp
from scribed.system import files

# Suffixes of files still being written by someone (checked even though none is an audio extension,
# so a future AUDIO_EXTENSIONS change cannot let them through).
_TEMP_SUFFIXES = (".part", ".crdownload", ".download", ".partial", ".tmp", ".temp", FAILED_SUFFIX)
# "~$x" Office owner files, "~syncthing~x.tmp" Syncthing on Windows shares.
_TEMP_PREFIXES = ("~$", "~syncthing~")

def is_temp_name(name: str) -> bool:
    """True for a name someone is still writing, or hidden, or one of scribed's own temporaries."""
    low = name.lower()
    return (
        not name
        or name.startswith(".")  # hidden: rsync ".x.AbC123", ".syncthing.x.tmp", ".~lock.x#", ".dropbox*"
        or low.startswith(_TEMP_PREFIXES)
        or low.endswith(_TEMP_SUFFIXES)
        or ".~" in low  # Nextcloud/ownCloud "*.~*" transfer files
        or is_scribed_temp(name)
    )


def is_candidate(path: Path, ignore: Sequence[str] = ()) -> bool:
    """True if ``path``'s name could be a finished recording (see the module contract).

    Only the name is checked; :class:`Scope` also rejects hidden/temporary folders
    between the watched root and the file.
    """
    name = path.name
    if is_temp_name(name) or os.path.splitext(name)[1].lower() not in AUDIO_EXTENSIONS:
        return False
    return not any(fnmatch.fnmatch(name, pattern) for pattern in ignore)



class Scope:
    """What lies inside the watched folders: roots, exclusions, depth, names; and the walk.

    ``note(kind, path)`` receives the links and too-deep folders a walk meets (logged once each).
    """

    def __init__(self, cfg: WatchConfig, exclude: Sequence[Path], note: Callable[[str, Path], None]) -> None:
        self.cfg = cfg
        self.roots: tuple[Path, ...] = tuple(dict.fromkeys(expand_path(f).resolve() for f in cfg.folders))
        self.exclude = tuple(expand_path(p).resolve() for p in exclude)
        self._note = note

    def walk(self, folder: Path, root: Path, seen: set[Path] | None = None) -> Iterator[Path]:
        """Candidate files under ``folder`` (recursively if configured, at most ``max_depth`` levels
        below ``root``), pruning hidden, temporary and excluded folders. Iterative; every folder is
        opened from ``root`` without following links, and links inside are noted, never followed.
        ``seen`` (if given) also receives the links and deep folders met."""
        seen = set() if seen is None else seen
        stack = [folder]
        while stack:
            current = stack.pop()
            depth = len(current.relative_to(root).parts)
            try:
                fd = files.open_dir(current, root=root)
            except (OSError, ValueError) as exc:
                logger.debug("cannot list {}: {}", shown(current), exc)
                continue
            try:
                with os.scandir(fd) as entries:
                    items = [(e.name, e.is_symlink(), e.is_dir(follow_symlinks=False),
                              e.is_file(follow_symlinks=False)) for e in entries]  # fmt: skip
            except OSError as exc:
                logger.debug("cannot list {}: {}", shown(current), exc)
                continue
            finally:
                os.close(fd)
            for name, is_link, is_dir, is_file in items:
                path = current / name
                if is_link:
                    if is_candidate(path, self.cfg.ignore) or (self.cfg.recursive and not is_temp_name(name)):
                        self._note("link", path)
                        seen.add(path)
                elif is_dir:
                    if not self.cfg.recursive or is_temp_name(name) or self.excluded(path):
                        continue
                    if depth + 1 > self.cfg.max_depth:
                        self._note("deep", path)
                        seen.add(path)
                    else:
                        stack.append(path)
                elif is_file and is_candidate(path, self.cfg.ignore):
                    yield path

    def root_of(self, path: Path) -> Path | None:
        roots = [r for r in self.roots if path.is_relative_to(r)]
        return max(roots, key=lambda r: len(r.parts)) if roots else None

    def excluded(self, path: Path) -> bool:
        return any(path.is_relative_to(e) for e in self.exclude)

    def wanted_dir(self, folder: Path, root: Path) -> bool:
        parts = folder.relative_to(root).parts
        if (parts and not self.cfg.recursive) or len(parts) > self.cfg.max_depth:
            return False
        return not self.excluded(folder) and not any(is_temp_name(p) for p in parts)

    def wanted_file(self, path: Path, root: Path) -> bool:
        return is_candidate(path, self.cfg.ignore) and self.wanted_dir(path.parent, root)
