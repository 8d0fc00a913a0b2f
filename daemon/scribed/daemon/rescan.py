"""A rescan of watched folders, walked a bounded slice at a time so the daemon's loop stays live.

Contract:
- :class:`Rescan` keeps the folders still to walk, each with the root it lies in (a root itself,
  or a folder that appeared below one), in the order they were asked for: one asked for again
  while it waits is not added twice; asked for while it is being walked, it is walked once more
  afterwards (what was already walked may have changed: its events were lost).
- :meth:`Rescan.step` goes on with the walks and returns after at most ``max_files`` files, or
  once ``max_s`` seconds of ``clock`` have passed (checked after each file), or when every walk
  is done. ``start(folder, root, seen)`` begins a walk (None: skip it, e.g. a missing root);
  ``each(path, root)`` is called for every file met; ``done(folder, root, seen)`` when a walk
  ended, with every path it met (so what a whole root's walk did not meet can be forgotten).
  Returns the files met.
- A walk left between steps holds no open descriptor (:meth:`FolderWatcher`'s walk lists each
  folder whole, then yields), so the tree may change between steps: what is met is judged when
  it is met, and a file added behind the walk is found by its event or the next rescan.

Why: on a share mounted over SMB or NFS every ``lstat`` can be a network round trip (~0.2-1 ms),
so a tree of 100,000 files took one to several minutes in one ``poll()``; the loop then answered
neither the worker nor systemd (``WatchdogSec=120`` kills a daemon that long silent, and a killed
daemon rescans again at start: a restart loop). In slices, the worker's results, the heartbeat
and new events go on between them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

#: At most this many files per step (the watcher's per-poll bound; a local disk walks ~50,000/s).
MAX_FILES = 5000
#: ... and at most this long (a network share: a few hundred files).
MAX_S = 0.25


class Rescan:
    """Roots waiting to be walked and the walk in progress (see the module contract)."""

    def __init__(self) -> None:
        self._waiting: deque[tuple[Path, Path]] = deque()
        self._current: tuple[Path, Path, Iterator[Path], set[Path]] | None = None

    def request(self, roots: list[Path] | tuple[Path, ...]) -> None:
        """Walk each of ``roots`` whole (after what is already waiting)."""
        for root in roots:
            self.request_folder(root, root)

    def request_folder(self, folder: Path, root: Path) -> None:
        """Walk ``folder``, which lies in ``root`` (after what is already waiting)."""
        if (folder, root) not in self._waiting:
            self._waiting.append((folder, root))

    @property
    def active(self) -> bool:
        """A walk is in progress or waiting."""
        return self._current is not None or bool(self._waiting)

    def step(self, start: Callable[[Path, Path, set[Path]], Iterator[Path] | None],
             each: Callable[[Path, Path], None], done: Callable[[Path, Path, set[Path]], None], *,
             clock: Callable[[], float], max_files: int = MAX_FILES, max_s: float = MAX_S) -> int:
        """Walk on for at most ``max_files`` files or ``max_s`` seconds; returns the files met."""
        began = clock()
        met = 0
        while met < max_files:
            if self._current is None:
                if not self._waiting:
                    break
                folder, root = self._waiting.popleft()
                seen: set[Path] = set()
                walk = start(folder, root, seen)
                if walk is None:
                    continue
                self._current = (folder, root, walk, seen)
            folder, root, walk, seen = self._current
            path = next(walk, None)
            if path is None:
                self._current = None
                done(folder, root, seen)
                continue
            seen.add(path)
            each(path, root)
            met += 1
            if clock() - began >= max_s:
                break
        return met
