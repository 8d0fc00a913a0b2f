"""One watchdog observer per watched folder, kept alive: inotify where it works, polling otherwise.

Contract:
- :meth:`Observers.ensure` gives a folder a live observer, or says it cannot be watched (mode
  "missing": warned about once per disappearance, never created). Polling is chosen for
  ``polling: always``, for network file systems under ``polling: auto``, and whenever inotify
  fails (ENOSPC/EMFILE, or a tree too deep for watchdog's recursive walk) — even under
  ``polling: never``, which only means never chosen up front. A folder whose (st_dev, st_ino)
  changed (a share mounted over it, the folder replaced) gets a fresh observer.
- :meth:`Observers.dead` finds folders whose observer threads died (watchdog's inotify reader
  dies with RecursionError on a 1000-level tree) and drops those observers; a folder whose
  inotify thread died while the folder itself is intact is polled from then on, said once at
  WARNING. The caller rescans such folders (events were lost) which calls ``ensure`` again.
- Polling never follows links (lstat) and lists no folder deeper than ``max_depth``.
- Observer threads only hand ``(path, is_dir, closed_after_write)`` to the ``record`` callback.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from loguru import logger
from watchdog import events as ev
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver, PollingObserverVFS

from scribed.config import WatchConfig
from scribed.daemon.journal_db import shown
from scribed.system.fstype import is_network_filesystem

__all__ = ["Observers"]

_JOIN_TIMEOUT_S = 5.0
# Everything else (opened, closed-no-write, attrib-only dir events) never changes a decision.
_EVENTS: list[type[ev.FileSystemEvent]] = [
    ev.FileCreatedEvent, ev.FileModifiedEvent, ev.FileMovedEvent, ev.FileClosedEvent, ev.FileDeletedEvent,
    ev.DirCreatedEvent, ev.DirMovedEvent,
]  # fmt: skip

Record = Callable[[str, bool, bool], None]  # (path, is_dir, closed_after_write), on observer threads


class _Recorder(ev.FileSystemEventHandler):
    """Runs on observer threads: hands (path, is_dir, closed) to the watcher and nothing else."""

    def __init__(self, sink: Record) -> None:
        self._sink = sink

    def on_any_event(self, event: ev.FileSystemEvent) -> None:
        path = event.dest_path if isinstance(event, ev.FileSystemMovedEvent) else event.src_path
        if path:
            self._sink(os.fsdecode(path), event.is_directory, isinstance(event, ev.FileClosedEvent))


def bounded_listdir(root: Path, max_depth: int) -> Callable[[str], Iterator[os.DirEntry[str]]]:
    """A polling observer's listdir that lists no folder deeper than ``max_depth`` below ``root``
    (watchdog's snapshot recurses: an unbounded tree would exhaust Python's stack)."""
    base = str(root).rstrip(os.sep).count(os.sep)

    def listdir(path: str) -> Iterator[os.DirEntry[str]]:
        return iter(()) if path.rstrip(os.sep).count(os.sep) - base > max_depth else os.scandir(path)

    return listdir


def threads_alive(observer: BaseObserver) -> bool:
    """The observer, its emitters and (inotify) its event-reader thread all still run."""
    reader = getattr(observer, "_inotify_fd", None)  # watchdog's own thread, the one a deep tree kills
    threads = [observer, *observer.emitters, *([reader] if isinstance(reader, threading.Thread) else [])]
    return all(t.is_alive() for t in threads)


def _folder_id(root: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(root)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


class Observers:
    """The observers of a :class:`~scribed.daemon.watcher.FolderWatcher`'s folders (see contract)."""

    def __init__(self, cfg: WatchConfig, roots: tuple[Path, ...], record: Record) -> None:
        self.cfg = cfg
        self._record = record
        self._observers: dict[Path, BaseObserver] = {}
        self._modes: dict[Path, str] = dict.fromkeys(roots, "missing")
        self._ids: dict[Path, tuple[int, int]] = {}  # (st_dev, st_ino) of each watched folder
        self._degraded: set[Path] = set()  # inotify thread died: polled from then on
        self._warned_missing: set[Path] = set()

    def modes(self) -> dict[Path, str]:
        return dict(self._modes)

    def ensure(self, root: Path) -> bool:
        """Make sure ``root`` has a live observer; False (mode "missing") if it cannot be watched."""
        identity = _folder_id(root)
        if identity is None:
            if root not in self._warned_missing:  # once per disappearance, not at every rescan
                self._warned_missing.add(root)
                logger.warning("watch folder {} does not exist; will check again at each rescan", shown(root))
            self._drop(root)
            return False
        observer = self._observers.get(root)
        if observer is not None:
            if threads_alive(observer) and self._ids.get(root) == identity:
                return True
            # A share mounted over the folder (or the folder replaced) leaves the old watch on the
            # old directory; a deleted folder stops its emitter. Start afresh, re-deciding the mode.
            logger.warning("watch folder {} was replaced or its observer stopped; restarting it", shown(root))
            self._drop(root)
        polling = root in self._degraded or self.cfg.polling == "always" or (
            self.cfg.polling == "auto" and is_network_filesystem(root))  # fmt: skip
        if not self._start(root, polling=polling):
            return False
        self._ids[root] = identity
        return True

    def dead(self) -> list[Path]:
        """Folders whose observer threads died, their observers dropped (the caller rescans them)."""
        found = []
        for root, observer in list(self._observers.items()):
            if threads_alive(observer):
                continue
            if self._modes.get(root) == "inotify" and _folder_id(root) == self._ids.get(root):
                logger.warning("the inotify watch of {} stopped (its thread died); polling that folder from now on",
                               shown(root))  # fmt: skip
                self._degraded.add(root)
            self._drop(root)
            found.append(root)
        return found

    def stop(self) -> None:
        """Stop and join every observer (each join bounded by a few seconds)."""
        observers, self._observers = list(self._observers.values()), {}
        for observer in observers:
            observer.stop()
        for observer in observers:
            _join(observer)

    def _start(self, root: Path, *, polling: bool) -> bool:
        if not polling:
            try:
                return self._launch(root, Observer(), "polling" if Observer is PollingObserver else "inotify")
            except (OSError, RecursionError) as exc:
                # ENOSPC (max_user_watches) / EMFILE (max_user_instances), or a tree too deep for
                # watchdog's recursive walk: watch the folder anyway. watchdog swallows ENOSPC for
                # *subfolders* (only the root's reaches us): rescans are what still find files there.
                reason = exc if isinstance(exc, OSError) else "folder tree too deep"
                logger.warning("inotify unavailable for {} ({}); falling back to polling", shown(root), reason)
        try:
            observer = PollingObserverVFS(os.lstat, bounded_listdir(root, self.cfg.max_depth),
                                          polling_interval=self.cfg.poll_interval_s)  # fmt: skip
            return self._launch(root, observer, "polling")
        except OSError as exc:
            logger.warning("cannot watch {} ({}); will try again at the next rescan", shown(root), exc)
            self._modes[root] = "missing"
            return False

    def _launch(self, root: Path, observer: BaseObserver, mode: str) -> bool:
        """Schedule and start ``observer`` on ``root``; on failure release it and re-raise."""
        try:
            observer.schedule(_Recorder(self._record), str(root), recursive=self.cfg.recursive, event_filter=_EVENTS)
            observer.start()
        except BaseException:
            _dispose(observer)
            raise
        self._observers[root] = observer
        self._modes[root] = mode
        self._warned_missing.discard(root)
        logger.info("watching {} ({})", shown(root), mode)
        return True

    def _drop(self, root: Path) -> None:
        self._modes[root] = "missing"
        observer = self._observers.pop(root, None)
        if observer is not None:
            _dispose(observer)


def _dispose(observer: BaseObserver) -> None:
    # stop() also releases what a never-started observer holds (InotifyObserver starts its fd
    # reader thread in __init__); join() of a never-started thread raises RuntimeError.
    with contextlib.suppress(Exception):
        observer.stop()
    _join(observer)


def _join(observer: BaseObserver) -> None:
    with contextlib.suppress(RuntimeError):
        observer.join(_JOIN_TIMEOUT_S)
    if observer.is_alive():
        logger.warning("watch observer did not stop within {} s", _JOIN_TIMEOUT_S)
