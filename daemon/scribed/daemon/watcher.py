"""Drop-folder watching: turn file-system activity into "this recording is complete" notices.

Contract:
- :func:`is_candidate` says whether a file name could be a finished recording: an audio/video
  extension (:data:`scribed.media.audio.AUDIO_EXTENSIONS`, any case), not hidden, not a sync client's or
  browser's temporary (Syncthing, rsync, Nextcloud/ownCloud, Dropbox, Office lock files, partial
  downloads), not one of scribed's own outputs/temporaries, and not matching an ``ignore`` glob.
- :class:`FolderWatcher` runs one watchdog observer per configured folder (inotify, or polling for
  network file systems / on request / when inotify fails) plus full rescans, and calls
  ``on_ready(Ready(...))`` once per settled file. Observer threads only *record* paths; every
  decision (stat, settle, report) happens in :meth:`FolderWatcher.poll` on the caller's thread, so
  ``on_ready`` is only ever called from ``poll()``, never concurrently (``start()`` only queues
  what its first scan finds).
- Settle rule (times from the injected clock): a pending file is ready once it has a non-zero size
  and its ``(size, mtime_ns)`` has not changed for ``settle_s``. A close-after-write event
  (inotify ``IN_CLOSE_WRITE``, local disks only) seen since the last change shortens the wait to
  ``min(settle_s, 1.0)``: the writer said it is done, the second is slack for a writer that
  reopens at once. Zero-byte files stay pending (recorders often create the file first).
- A reported file is not reported again unless its ``(size, mtime_ns)`` changes (the daemon's
  journal gives exactly-once; this only avoids spamming it). If ``on_ready`` raises, the file is
  offered again at the next rescan.
- A missing folder is warned about once, re-checked at each rescan (every 60 s when rescans are
  off) and never created. A folder whose (st_dev, st_ino) changed (a share mounted over it, the
  folder replaced) gets a fresh observer. ``polling: never`` means never chosen up front: when
  inotify fails the folder is still polled rather than left blind.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from loguru import logger
from watchdog import events as ev
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from scribed.config import WatchConfig
from scribed.media.audio import AUDIO_EXTENSIONS
from scribed.output import FAILED_SUFFIX, is_scribed_temp
from scribed.system.fstype import is_network_filesystem

__all__ = ["FolderWatcher", "Ready", "is_candidate"]

CLOSE_SETTLE_S = 1.0
_MISSING_RETRY_S = 60.0  # with rescan_interval_s == 0, missing folders are still re-checked this often
_JOIN_TIMEOUT_S = 5.0
# Everything else (opened, closed-no-write, deleted, attrib-only dir events) never changes a decision.
_EVENTS: list[type[ev.FileSystemEvent]] = [
    ev.FileCreatedEvent, ev.FileModifiedEvent, ev.FileMovedEvent, ev.FileClosedEvent, ev.DirCreatedEvent,
    ev.DirMovedEvent,
]  # fmt: skip
# Suffixes of files still being written by someone (checked even though none is an audio extension,
# so a future AUDIO_EXTENSIONS change cannot let them through).
_TEMP_SUFFIXES = (".part", ".crdownload", ".download", ".partial", ".tmp", ".temp", FAILED_SUFFIX)
# "~$x" Office owner files, "~syncthing~x.tmp" Syncthing on Windows shares.
_TEMP_PREFIXES = ("~$", "~syncthing~")

Sig = tuple[int, int]  # (size, mtime_ns)


def _is_temp_name(name: str) -> bool:
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

    Only the name is checked; :class:`FolderWatcher` also rejects hidden/temporary folders
    between the watched root and the file.
    """
    name = path.name
    if _is_temp_name(name) or os.path.splitext(name)[1].lower() not in AUDIO_EXTENSIONS:
        return False
    return not any(fnmatch.fnmatch(name, pattern) for pattern in ignore)


@dataclass(frozen=True)
class Ready:
    """A settled recording: ``path`` (absolute, under ``root``) with the size/mtime that settled."""

    path: Path
    root: Path
    size: int
    mtime_ns: int


@dataclass
class _Pending:
    root: Path
    sig: Sig
    since: float  # clock time of the last observed change
    closed: bool  # a close-after-write was seen since that change


class _Recorder(ev.FileSystemEventHandler):
    """Runs on observer threads: hands (path, is_dir, closed) to the watcher and nothing else."""

    def __init__(self, sink: Callable[[str, bool, bool], None]) -> None:
        self._sink = sink

    def on_any_event(self, event: ev.FileSystemEvent) -> None:
        path = event.dest_path if isinstance(event, ev.FileSystemMovedEvent) else event.src_path
        if path:
            self._sink(os.fsdecode(path), event.is_directory, isinstance(event, ev.FileClosedEvent))


class FolderWatcher:
    """Watches ``cfg.folders`` and calls ``on_ready`` for each complete new recording.

    ``clock`` times settling and rescans (inject a fake one in tests). ``exclude`` lists folders
    never looked inside (archive dir, state dir), even when they lie under a watched folder.
    Call :meth:`start`, then :meth:`poll` about every second from one thread, then :meth:`stop`.
    """

    def __init__(
        self,
        cfg: WatchConfig,
        on_ready: Callable[[Ready], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        exclude: Sequence[Path] = (),
    ) -> None:
        self.cfg = cfg
        self._on_ready = on_ready
        self._clock = clock
        roots = (Path(os.path.expandvars(os.path.expanduser(str(f)))).resolve() for f in cfg.folders)
        self._roots: tuple[Path, ...] = tuple(dict.fromkeys(roots))
        self._exclude = tuple(Path(os.path.expanduser(str(p))).resolve() for p in exclude)
        self._observers: dict[Path, BaseObserver] = {}
        self._modes: dict[Path, str] = dict.fromkeys(self._roots, "missing")
        self._lock = threading.Lock()
        self._touched: dict[Path, bool] = {}  # path -> closed-after-write seen; filled by observer threads
        self._new_dirs: set[Path] = set()
        self._pending: dict[Path, _Pending] = {}
        self._reported: dict[Path, Sig] = {}
        self._next_rescan = float("inf")
        self._next_missing = float("inf")
        self._started = False
        self._warned_missing: set[Path] = set()
        self._identity: dict[Path, tuple[int, int]] = {}  # (st_dev, st_ino) of each watched folder

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start an observer per folder (a missing one is warned about and retried at each rescan),
        then scan every folder once. Never raises for an unwatchable folder."""
        if self._started:
            return
        self._started = True
        self._rescan(self._clock())

    def stop(self) -> None:
        """Stop and join every observer (each join bounded by a few seconds)."""
        observers, self._observers = list(self._observers.values()), {}
        for observer in observers:
            observer.stop()
        for observer in observers:
            self._join(observer)
        self._started = False

    def pending(self) -> int:
        """How many files are waiting to settle."""
        return len(self._pending)

    def modes(self) -> dict[Path, str]:
        """Each folder's watch mode: "inotify", "polling" or "missing"."""
        return dict(self._modes)

    # -- the daemon-thread side ------------------------------------------------------------------

    def poll(self) -> None:
        """Rescan when due, take in what the observers recorded, and report settled files."""
        now = self._clock()
        if now >= self._next_rescan:
            self._rescan(now)
        elif now >= self._next_missing:
            self._rescan(now, [r for r, mode in self._modes.items() if mode == "missing"])
        with self._lock:
            touched, self._touched = self._touched, {}
            new_dirs, self._new_dirs = self._new_dirs, set()
        for folder in sorted(new_dirs):
            root = self._root_of(folder)
            if root is not None and self._wanted_dir(folder, root):
                for path in self._walk(folder, root):
                    self._consider(path, now)
        for path, closed in touched.items():
            self._consider(path, now, closed=closed)
        self._settle(now)

    def _record(self, raw: str, is_dir: bool, closed: bool) -> None:
        # Observer thread: no stat, no decisions, just remember the path.
        path = Path(raw)
        with self._lock:
            if is_dir:
                self._new_dirs.add(path)
            else:
                self._touched[path] = closed or self._touched.get(path, False)

    def _consider(self, path: Path, now: float, *, closed: bool = False) -> None:
        root = self._root_of(path)
        if root is None or not self._wanted_file(path, root):
            return
        sig = _stat_sig(path)
        if sig is None:
            return
        entry = self._pending.get(path)
        if entry is None:
            if self._reported.get(path) == sig:
                return  # already reported, unchanged: a late event or a rescan
            self._pending[path] = _Pending(root, sig, now, closed)
            logger.info("waiting for {} to settle", path)
        elif entry.sig != sig:
            entry.sig, entry.since, entry.closed = sig, now, closed
        elif closed:
            entry.closed = True

    def _settle(self, now: float) -> None:
        for path, entry in list(self._pending.items()):
            sig = _stat_sig(path)
            if sig is None:
                del self._pending[path]
                logger.debug("{} vanished before it settled", path)
                continue
            if sig != entry.sig:
                entry.sig, entry.since, entry.closed = sig, now, False
                continue
            wait = min(self.cfg.settle_s, CLOSE_SETTLE_S) if entry.closed else self.cfg.settle_s
            if sig[0] == 0 or now - entry.since < wait:
                continue
            del self._pending[path]
            self._reported[path] = sig
            logger.info("ready: {} ({} bytes)", path, sig[0])
            try:
                self._on_ready(Ready(path, entry.root, sig[0], sig[1]))
            except Exception:
                # Forget it was reported, so the next rescan offers it again instead of losing it.
                self._reported.pop(path, None)
                logger.exception("on_ready failed for {}; will retry at the next rescan", path)

    # -- scanning --------------------------------------------------------------------------------

    def _rescan(self, now: float, only: Sequence[Path] | None = None) -> None:
        """Scan ``only`` those folders (default: all, and re-arm the periodic rescan)."""
        for root in self._roots if only is None else only:
            if not self._ensure_watched(root):
                continue
            seen: set[Path] = set()
            for path in self._walk(root, root):
                seen.add(path)
                self._consider(path, now)
            # Forget reports of files that are gone (archived, deleted) so the map stays small.
            for path in [p for p in self._reported if p not in seen and self._root_of(p) == root]:
                del self._reported[path]
        interval = self.cfg.rescan_interval_s
        if only is None:
            self._next_rescan = now + interval if interval > 0 else float("inf")
        missing = any(mode == "missing" for mode in self._modes.values())
        self._next_missing = now + (interval if interval > 0 else _MISSING_RETRY_S) if missing else float("inf")

    def _walk(self, folder: Path, root: Path) -> Iterator[Path]:
        """Candidate files under ``folder`` (recursively if configured), pruning hidden, temporary,
        excluded and symlinked folders (symlinks could loop)."""
        stack = [folder]
        while stack:
            current = stack.pop()
            try:
                with os.scandir(current) as entries:
                    items = list(entries)
            except OSError as exc:
                logger.debug("cannot list {}: {}", current, exc)
                continue
            for item in items:
                path = Path(item.path)
                try:
                    if item.is_dir(follow_symlinks=False):
                        if self.cfg.recursive and not _is_temp_name(item.name) and not self._excluded(path):
                            stack.append(path)
                    elif item.is_file() and is_candidate(path, self.cfg.ignore):
                        yield path
                except OSError:
                    continue

    def _root_of(self, path: Path) -> Path | None:
        roots = [r for r in self._roots if path.is_relative_to(r)]
        return max(roots, key=lambda r: len(r.parts)) if roots else None

    def _excluded(self, path: Path) -> bool:
        return any(path.is_relative_to(e) for e in self._exclude)

    def _wanted_dir(self, folder: Path, root: Path) -> bool:
        parts = folder.relative_to(root).parts
        if parts and not self.cfg.recursive:
            return False
        return not self._excluded(folder) and not any(_is_temp_name(p) for p in parts)

    def _wanted_file(self, path: Path, root: Path) -> bool:
        return is_candidate(path, self.cfg.ignore) and self._wanted_dir(path.parent, root)

    # -- observers -------------------------------------------------------------------------------

    def _ensure_watched(self, root: Path) -> bool:
        """Make sure ``root`` has a live observer; False (mode "missing") if it cannot be watched."""
        try:
            st = os.stat(root)
        except OSError:
            st = None
        if st is None or not stat.S_ISDIR(st.st_mode):
            if root not in self._warned_missing:  # once per disappearance, not at every rescan
                self._warned_missing.add(root)
                logger.warning("watch folder {} does not exist; will check again at each rescan", root)
            self._drop_observer(root)
            return False
        identity = (st.st_dev, st.st_ino)
        observer = self._observers.get(root)
        if observer is not None:
            alive = observer.is_alive() and all(e.is_alive() for e in observer.emitters)
            if alive and self._identity.get(root) == identity:
                return True
            # A share mounted over the folder (or the folder replaced) leaves the old watch on the
            # old directory; a deleted folder stops its emitter. Start afresh, re-deciding the mode.
            logger.warning("watch folder {} was replaced or its observer stopped; restarting it", root)
            self._drop_observer(root)
        polling = self.cfg.polling == "always" or (self.cfg.polling == "auto" and is_network_filesystem(root))
        if not self._start_observer(root, polling=polling):
            return False
        self._identity[root] = identity
        return True

    def _start_observer(self, root: Path, *, polling: bool) -> bool:
        if not polling:
            try:
                return self._launch(root, Observer(), "polling" if Observer is PollingObserver else "inotify")
            except OSError as exc:
                # ENOSPC (max_user_watches) / EMFILE (max_user_instances): watch the folder anyway.
                # watchdog swallows ENOSPC for *subfolders* (only the root's reaches us): rescans
                # are what still find files there.
                logger.warning("inotify unavailable for {} ({}); falling back to polling", root, exc)
        try:
            return self._launch(root, PollingObserver(timeout=self.cfg.poll_interval_s), "polling")
        except OSError as exc:
            logger.warning("cannot watch {} ({}); will try again at the next rescan", root, exc)
            self._modes[root] = "missing"
            return False

    def _launch(self, root: Path, observer: BaseObserver, mode: str) -> bool:
        """Schedule and start ``observer`` on ``root``; on failure release it and re-raise."""
        try:
            observer.schedule(_Recorder(self._record), str(root), recursive=self.cfg.recursive, event_filter=_EVENTS)
            observer.start()
        except BaseException:
            self._dispose(observer)
            raise
        self._observers[root] = observer
        self._modes[root] = mode
        self._warned_missing.discard(root)
        logger.info("watching {} ({})", root, mode)
        return True

    def _drop_observer(self, root: Path) -> None:
        self._modes[root] = "missing"
        observer = self._observers.pop(root, None)
        if observer is not None:
            self._dispose(observer)

    def _dispose(self, observer: BaseObserver) -> None:
        # stop() also releases what a never-started observer holds (InotifyObserver starts its fd
        # reader thread in __init__); join() of a never-started thread raises RuntimeError.
        with contextlib.suppress(Exception):
            observer.stop()
        self._join(observer)

    @staticmethod
    def _join(observer: BaseObserver) -> None:
        with contextlib.suppress(RuntimeError):
            observer.join(_JOIN_TIMEOUT_S)
        if observer.is_alive():
            logger.warning("watch observer did not stop within {} s", _JOIN_TIMEOUT_S)


def _stat_sig(path: Path) -> Sig | None:
    """(size, mtime_ns) of a regular file, or None if it is gone or not a regular file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None
