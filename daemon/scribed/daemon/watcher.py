"""Drop-folder watching: turn file-system activity into "this recording is complete" notices.

Contract:
- Which names could be finished recordings (:func:`is_candidate`, re-exported here) and how a
  watched tree is walked: :mod:`scribed.daemon.scope`.
- :class:`FolderWatcher` runs one watchdog observer per configured folder (inotify, or polling for
  network file systems / on request / when inotify fails) plus full rescans, and calls
  ``on_ready(Ready(...))`` once per settled file. Observer threads only *record* paths; every
  decision happens in :meth:`FolderWatcher.poll` on the caller's thread, so ``on_ready`` is only
  ever called from ``poll()``, never concurrently. Hashing and probing run on the
  :class:`~scribed.daemon.settle.Examiner`'s threads: ``poll()`` never waits for them, and its
  other work per call is bounded: the settle queue's budget, and rescans a slice per call
  (:mod:`scribed.daemon.rescan`: at most 5000 files or 0.25 s; :meth:`FolderWatcher.scanning`
  says one is under way, and :meth:`FolderWatcher.pending` counts it), as is the walk of a folder
  that appeared (a tree moved in), and at most 5000 recorded events are looked at per call.
- A watched folder is untrusted: no symbolic link below a root is ever followed (walks and checks
  use lstat; a link is ignored with one INFO line), walks are iterative and look at most
  ``max_depth`` folder levels deep, and a file is examined through a path opened from the root
  without links. Names that are not valid UTF-8 work (surrogate-escaped ``str`` paths, shown
  with ``\\xNN`` in logs). Notices about many files at once (empty files, links, folders too
  deep) are aggregated into one line per kind and poll.
- Settle rule: see :mod:`scribed.daemon.settle`. A reported file is not reported again unless its
  identity (device, inode, size, mtime) changes (the daemon's journal gives exactly-once; this
  only avoids spamming it). If ``on_ready`` raises, the file is offered again at the next rescan.
- A missing folder is warned about once, re-checked at each rescan (every 60 s when rescans are
  off) and never created. A folder whose (st_dev, st_ino) changed (a share mounted over it, the
  folder replaced) gets a fresh observer. ``polling: never`` means never chosen up front: when
  inotify fails (or its thread dies, as watchdog's does on a very deep tree) the folder is
  polled, with one WARNING, rather than left blind.
"""

from __future__ import annotations

import itertools
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from loguru import logger

from scribed.config import WatchConfig
from scribed.daemon import rescan
from scribed.daemon.journal_db import shown
from scribed.daemon.observers import Observers
from scribed.daemon.scope import Scope, is_candidate
from scribed.daemon.settle import CHANGED, CLOSE_SETTLE_S, FAILED, GONE, Examiner, Ready, SettleQueue, Unsettled
from scribed.identity import FileIdentity

__all__ = ["CLOSE_SETTLE_S", "FolderWatcher", "Ready", "is_candidate"]

_MISSING_RETRY_S = 60.0  # with rescan_interval_s == 0, missing folders are still re-checked this often
# kind -> (level, line for one file, line for many: count and examples). Up to 3 get a line each.
_NOTES = {
    "waiting": ("INFO", "waiting for {} to settle", "{} files waiting to settle (e.g. {})"),
    "empty": ("INFO", "ignoring empty file {} until it has content",
              "ignoring {} empty files until they have content (e.g. {})"),
    "link": ("INFO", "ignoring symbolic link {} (links in a watched folder are never followed)",
             "ignoring {} symbolic links (links in a watched folder are never followed; e.g. {})"),
    "deep": ("WARNING", "not looking inside {}: deeper than watch.max_depth",
             "not looking inside {} folders deeper than watch.max_depth (e.g. {})"),
    "refused": ("INFO", "not taking {}", "not taking {} files (e.g. {})"),
    "failed": ("WARNING", "cannot examine {}; will try again at the next rescan",
               "cannot examine {} files; will try again at the next rescan (e.g. {})"),
    "unusable": ("WARNING", "cannot process {}", "cannot process {} files (e.g. {})"),
}  # fmt: skip


def _identity(path: Path) -> FileIdentity | os.stat_result | None:
    """The lstat identity of a regular file; the stat result of anything else; None if gone.
    Other errors (a path longer than PATH_MAX, no permission) raise OSError."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return FileIdentity.of(st) if stat.S_ISREG(st.st_mode) else st


def _regular(path: Path) -> FileIdentity | None:
    try:
        found = _identity(path)
    except OSError:
        return None
    return found if isinstance(found, FileIdentity) else None


class _Notes:
    """Log lines about files, one per kind per flush (see :data:`_NOTES`)."""

    def __init__(self) -> None:
        self._names: dict[str, list[str]] = {}

    def add(self, kind: str, path: Path, detail: str = "") -> None:
        self._names.setdefault(kind, []).append(shown(path) + (f": {detail}" if detail else ""))

    def flush(self) -> None:
        for kind, names in self._names.items():
            level, one, many = _NOTES[kind]
            if len(names) <= 3:
                for name in names:
                    logger.log(level, one, name)
            else:
                logger.log(level, many, len(names), ", ".join(names[:3]))
        self._names.clear()


class FolderWatcher:
    """Watches ``cfg.folders`` and calls ``on_ready`` for each complete new recording.

    ``clock`` times settling and rescans (inject a fake one in tests). ``exclude`` lists folders
    never looked inside (archive dir, state dir), even when they lie under a watched folder.
    ``examiner`` hashes and probes settled files (inject one with a fake digest in tests).
    Call :meth:`start`, then :meth:`poll` about every second from one thread, then :meth:`stop`.
    """

    def __init__(
        self,
        cfg: WatchConfig,
        on_ready: Callable[[Ready], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        exclude: Sequence[Path] = (),
        examiner: Examiner | None = None,
    ) -> None:
        self.cfg = cfg
        self._on_ready = on_ready
        self._clock = clock
        self._scope = Scope(cfg, exclude, self._note_once)
        self._examiner = examiner if examiner is not None else Examiner()  # (an idle one has len 0)
        self._queue = SettleQueue(cfg.settle_s)
        self._notes = _Notes()
        self._observers = Observers(cfg, self._scope.roots, self._record)
        self._lock = threading.Lock()
        self._touched: dict[Path, bool] = {}  # path -> closed-after-write seen; filled by observer threads
        self._new_dirs: set[Path] = set()
        self._reported: dict[Path, FileIdentity] = {}
        self._noted: set[Path] = set()  # links, deep folders, refused files already logged
        self._next_rescan = float("inf")
        self._next_missing = float("inf")
        self._scan = rescan.Rescan()
        self._event_backlog = False  # the last poll left recorded events for the next one
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start an observer per folder (a missing one is warned about and retried at each rescan),
        then scan every folder once. Never raises for an unwatchable folder."""
        if self._started:
            return
        self._started = True
        now = self._clock()
        self._rescan(now)
        self._advance_scan(now)
        self._notes.flush()

    def stop(self) -> None:
        """Stop and join every observer and the examiner's threads (each join bounded)."""
        self._observers.stop()
        self._examiner.stop()
        self._started = False

    def pending(self) -> int:
        """How many files are waiting to settle or being examined, plus one while a rescan or a
        backlog of events is under way (files not reached yet are not counted)."""
        return len(self._queue) + len(self._examiner) + int(self.scanning())

    def scanning(self) -> bool:
        """A rescan is under way, or more events wait than one poll takes (the caller may poll
        again without waiting)."""
        return self._scan.active or self._event_backlog

    def examining(self) -> int:
        """How many settled files are being hashed and probed (their results not yet collected)."""
        return len(self._examiner)

    def modes(self) -> dict[Path, str]:
        """Each folder's watch mode: "inotify", "polling" or "missing"."""
        return self._observers.modes()

    # -- the daemon-thread side ------------------------------------------------------------------

    def poll(self) -> None:
        """Rescan when due, take in what the observers recorded, hand settled files to the
        examiner and report what it finished. Never waits for a hash or a probe."""
        now = self._clock()
        dead = self._observers.dead()  # their folders are rescanned (events were lost): a new observer
        if dead:
            self._rescan(now, dead)
        if now >= self._next_rescan:
            self._rescan(now)
        elif now >= self._next_missing:
            self._rescan(now, [r for r, mode in self.modes().items() if mode == "missing"])
        with self._lock:
            if len(self._touched) <= rescan.MAX_FILES:
                touched, self._touched = self._touched, {}
            else:  # a tree moved in arrives as one event per file: a slice per poll, oldest first
                touched = {path: self._touched.pop(path)
                           for path in list(itertools.islice(self._touched, rescan.MAX_FILES))}
            self._event_backlog = bool(self._touched)  # not what arrives after this poll: normal traffic
            new_dirs, self._new_dirs = self._new_dirs, set()
        for folder in sorted(new_dirs):
            root = self._scope.root_of(folder)
            if root is not None and self._scope.wanted_dir(folder, root):
                self._scan.request_folder(folder, root)
        self._advance_scan(now)
        for path, closed in touched.items():
            self._consider(path, now, closed=closed)
        for path, root, identity in self._queue.tick(now, _regular):
            self._examiner.submit(path, root, identity)
        for result in self._examiner.collect():
            self._finish(result, now)
        self._notes.flush()

    def _record(self, raw: str, is_dir: bool, closed: bool) -> None:
        # Observer thread: no stat, no decisions, just remember the path.
        path = Path(raw)
        with self._lock:
            if is_dir:
                self._new_dirs.add(path)
            else:
                self._touched[path] = closed or self._touched.get(path, False)

    def _consider(self, path: Path, now: float, *, closed: bool = False) -> None:
        root = self._scope.root_of(path)
        if root is None or not self._scope.wanted_file(path, root) or path in self._examiner:
            return  # a file being examined is checked again when its result comes back
        try:
            found = _identity(path)
        except OSError as exc:  # e.g. ENAMETOOLONG: the full path exceeds PATH_MAX
            self._note_once("unusable", path, exc.strerror or str(exc))
            return
        if not isinstance(found, FileIdentity):
            self._queue.discard(path)  # gone, or no longer a regular file
            if found is not None and stat.S_ISLNK(found.st_mode):
                self._note_once("link", path)
            return
        if path not in self._queue and self._reported.get(path) == found:
            return  # already reported, unchanged: a late event or a rescan
        if self._queue.offer(path, root, found, now, closed=closed):
            self._notes.add("waiting" if found.size else "empty", path)

    def _finish(self, result: Ready | Unsettled, now: float) -> None:
        if isinstance(result, Unsettled):
            if result.kind == CHANGED:
                self._consider(result.path, now)  # settles again, with its new identity
            elif result.kind == FAILED:
                self._notes.add("failed", result.path, result.detail)
            elif result.kind != GONE:  # refused, or cancelled by stop()
                self._note_once("refused", result.path, result.detail)
            return
        current = _regular(result.path)
        if current is None or not result.identity.same_file(current):
            self._consider(result.path, now)  # gone, changed or replaced after it was hashed
            return
        self._reported[result.path] = current
        logger.info("ready: {} ({} bytes)", shown(result.path), result.identity.size)
        try:
            self._on_ready(result)
        except Exception:
            # Forget it was reported, so the next rescan offers it again instead of losing it.
            self._reported.pop(result.path, None)
            logger.exception("on_ready failed for {}; will retry at the next rescan", shown(result.path))

    def _note_once(self, kind: str, path: Path, detail: str = "") -> None:
        if path not in self._noted:
            self._noted.add(path)
            self._notes.add(kind, path, detail)

    # -- scanning --------------------------------------------------------------------------------

    def _rescan(self, now: float, only: Sequence[Path] | None = None) -> None:
        """Ask for a scan of ``only`` those folders (default: all, and re-arm the periodic rescan);
        :meth:`_advance_scan` walks them, a slice per poll."""
        self._scan.request(tuple(self._scope.roots if only is None else only))
        if only is None:
            interval = self.cfg.rescan_interval_s
            self._next_rescan = now + interval if interval > 0 else float("inf")
        self._next_missing = float("inf")  # set again once the walks know which folders are missing

    def _advance_scan(self, now: float) -> None:
        if not self._scan.active:
            return

        def start(folder: Path, root: Path, seen: set[Path]) -> Iterator[Path] | None:
            if folder != root:  # a folder that appeared: its root is watched already
                return self._scope.walk(folder, root, seen)
            return self._scope.walk(root, root, seen) if self._observers.ensure(root) else None

        def done(folder: Path, root: Path, seen: set[Path]) -> None:
            if folder != root:
                return
            # Forget what is gone (archived, deleted) so these stay as small as the tree.
            for path in [p for p in self._reported if p not in seen and self._scope.root_of(p) == root]:
                del self._reported[path]
            self._noted = {p for p in self._noted if p in seen or self._scope.root_of(p) != root}

        self._scan.step(start, lambda path, _root: self._consider(path, now), done, clock=self._clock,
                        max_files=rescan.MAX_FILES, max_s=rescan.MAX_S)
        if not self._scan.active:
            interval = self.cfg.rescan_interval_s
            missing = "missing" in self.modes().values()
            self._next_missing = now + (interval if interval > 0 else _MISSING_RETRY_S) if missing else float("inf")
