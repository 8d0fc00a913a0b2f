"""Settling: when a file in a watched folder is complete, and what exactly it is.

Contract:
- :class:`SettleQueue` (main thread only) holds the files waiting to settle. A file settles once
  it has a non-zero size and its identity (device, inode, size, mtime) has not changed for
  ``settle_s`` — ``min(settle_s, CLOSE_SETTLE_S)`` after a close-after-write event: the writer
  said it is done, the second is slack for one that reopens at once. :meth:`SettleQueue.tick`
  re-checks the files that are due, at most ``budget`` of them per call (the longest-waiting
  first), so the cost of one tick is bounded whatever the number of files. A non-empty file is
  due at every tick (a change re-times it); an empty one (recorders create the file first) with
  a backoff from 1 s to 60 s, and at once again when an event or a rescan shows it changed.
- :class:`Examiner` hashes (SHA-256) and probes (duration) settled files on background threads,
  never on the caller's: :meth:`Examiner.collect` never blocks, so a 20 GB file on a slow NAS
  cannot stall the daemon's loop or its watchdog heartbeat. :meth:`Examiner.stop` cancels a hash
  in progress between chunks and joins the threads.
- :func:`examine` opens the file from its watch root without following any symbolic link
  (:func:`scribed.system.files.open_dir`, then ``O_NOFOLLOW``), requires a regular file with the
  settled identity, hashes the open file and checks its identity again afterwards: a file that
  changed meanwhile comes back :data:`CHANGED` (it settles again), never as :class:`Ready`.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import os
import queue
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from scribed.daemon.journal_db import shown
from scribed.identity import FileIdentity
from scribed.media.audio import probe_duration
from scribed.system import files

__all__ = ["CLOSE_SETTLE_S", "Examiner", "Ready", "SettleQueue", "Unsettled", "examine"]

CLOSE_SETTLE_S = 1.0
TICK_BUDGET = 256  # identity checks per tick at most (the old every-file-every-tick cost was unbounded)
EMPTY_FIRST_S, EMPTY_MAX_S = 1.0, 60.0  # re-check backoff for empty files
_CHUNK = 1 << 20
_JOIN_TIMEOUT_S = 5.0
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO must not hang us

# Why a settled file did not become Ready (Unsettled.kind).
CHANGED, GONE, REFUSED, CANCELLED, FAILED = "changed", "gone", "refused", "cancelled", "failed"

Digest = Callable[[int, Callable[[], bool]], "str | None"]  # (open fd, cancelled) -> hex SHA-256, None if cancelled
Probe = Callable[[str], "float | None"]  # path -> duration in seconds, None if unknown
Settled = tuple[Path, Path, FileIdentity]  # (path, watch root, identity that settled)


@dataclass(frozen=True)
class Ready:
    """A settled recording: ``path`` (absolute, under the watch root ``root``) as it was hashed."""

    path: Path
    root: Path
    identity: FileIdentity  # sha256 always set
    audio_s: float | None  # duration from the container headers; None if unknown


@dataclass(frozen=True)
class Unsettled:
    """A settled file that did not become :class:`Ready`: ``kind`` is one of CHANGED, GONE,
    REFUSED (not a regular file reached without links), CANCELLED or FAILED (``detail`` says why)."""

    path: Path
    root: Path
    kind: str
    detail: str = ""


# -- the settle schedule (main thread) -----------------------------------------------------------


@dataclass
class _Entry:
    root: Path
    identity: FileIdentity
    since: float  # clock time of the last observed change
    closed: bool  # a close-after-write was seen since that change
    seq: int = 0  # of its live heap item (older items for the same path are stale)
    empty_checks: int = 0


class SettleQueue:
    """Files waiting to settle, re-checked on a schedule with a per-tick budget (see module contract)."""

    def __init__(self, settle_s: float, *, budget: int = TICK_BUDGET) -> None:
        self.settle_s = settle_s
        self.budget = budget
        self._entries: dict[Path, _Entry] = {}
        self._heap: list[tuple[float, int, Path]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return path in self._entries

    def offer(self, path: Path, root: Path, identity: FileIdentity, now: float, *, closed: bool = False) -> bool:
        """Note that ``path`` was seen with ``identity``; True if it was not waiting before."""
        entry = self._entries.get(path)
        if entry is None:
            entry = self._entries[path] = _Entry(root, identity, now, closed)
            self._schedule(path, entry, now if identity.size else now + EMPTY_FIRST_S)
            return True
        if entry.identity != identity:
            entry.identity, entry.since, entry.closed, entry.empty_checks = identity, now, closed, 0
            self._schedule(path, entry, now)
        elif closed and not entry.closed:
            entry.closed = True
            self._schedule(path, entry, now)
        return False

    def discard(self, path: Path) -> None:
        self._entries.pop(path, None)  # its heap items become stale

    def tick(self, now: float, identity_of: Callable[[Path], FileIdentity | None]) -> list[Settled]:
        """Re-check up to ``budget`` due files with ``identity_of`` (None: gone or no longer a
        regular file, dropped); return those that settled as ``(path, root, identity)``, removed."""
        settled: list[Settled] = []
        again: list[tuple[Path, _Entry, float]] = []
        checks = 0
        while self._heap and self._heap[0][0] <= now and checks < self.budget:
            _, seq, path = heapq.heappop(self._heap)
            entry = self._entries.get(path)
            if entry is None or entry.seq != seq:
                continue  # stale: rescheduled or discarded since
            checks += 1
            identity = identity_of(path)
            if identity is None:
                del self._entries[path]
                logger.debug("{} vanished before it settled", shown(path))
            elif identity != entry.identity:
                entry.identity, entry.since, entry.closed, entry.empty_checks = identity, now, False, 0
                again.append((path, entry, now))
            elif identity.size == 0:
                entry.empty_checks += 1
                again.append((path, entry, now + min(EMPTY_MAX_S, EMPTY_FIRST_S * 2 ** entry.empty_checks)))
            elif now - entry.since >= (min(self.settle_s, CLOSE_SETTLE_S) if entry.closed else self.settle_s):
                del self._entries[path]
                settled.append((path, entry.root, identity))
            else:
                again.append((path, entry, now))  # due again at the next tick
        for path, entry, due in again:  # after the loop: nothing is checked twice in one tick
            self._schedule(path, entry, due)
        return settled

    def _schedule(self, path: Path, entry: _Entry, due: float) -> None:
        entry.seq = next(self._seq)
        heapq.heappush(self._heap, (due, entry.seq, path))
        if len(self._heap) > 4 * len(self._entries) + 64:  # many reschedules: drop the stale items
            self._heap = [item for item in self._heap if (e := self._entries.get(item[2])) and e.seq == item[1]]
            heapq.heapify(self._heap)


# -- examining (background threads) -------------------------------------------------------------


def sha256_fd(fd: int, cancelled: Callable[[], bool]) -> str | None:
    """Hex SHA-256 of the open file ``fd`` from its start, read in 1 MiB chunks; None if
    ``cancelled()`` turns true between chunks."""
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, _CHUNK, offset):
        if cancelled():
            return None
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def _fd_path(fd: int, path: Path) -> str:
    """A name for the open file itself (Linux /proc), so the probe reads what was hashed."""
    proc = f"/proc/self/fd/{fd}"
    return proc if os.path.exists(proc) else str(path)


def examine(path: Path, root: Path, expect: FileIdentity, *, digest: Digest = sha256_fd, probe: Probe = probe_duration,
            cancelled: Callable[[], bool] = lambda: False) -> Ready | Unsettled:  # fmt: skip
    """Hash and probe the settled file ``path`` below ``root`` if it is still ``expect`` (see contract)."""
    try:
        folder = files.open_dir(path.parent, root=root)
    except FileNotFoundError:
        return Unsettled(path, root, GONE)
    except (OSError, ValueError) as exc:
        return Unsettled(path, root, REFUSED, f"its folder cannot be opened without following a link ({exc})")
    try:
        fd = os.open(path.name, _FILE_FLAGS, dir_fd=folder)
    except FileNotFoundError:
        return Unsettled(path, root, GONE)
    except OSError as exc:  # ELOOP: a symlink was put at the name
        return Unsettled(path, root, REFUSED, f"cannot be opened without following a link ({exc.strerror})")
    finally:
        os.close(folder)
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            return Unsettled(path, root, REFUSED, "not a regular file")
        if not expect.same_file(before):
            return Unsettled(path, root, CHANGED)
        sha256 = digest(fd, cancelled)
        if sha256 is None:
            return Unsettled(path, root, CANCELLED)
        after = os.fstat(fd)
        if not expect.same_file(after):
            return Unsettled(path, root, CHANGED)
        audio_s = probe(_fd_path(fd, path))
    finally:
        os.close(fd)
    return Ready(path, root, FileIdentity.of(after, sha256), audio_s)


class Examiner:
    """Runs :func:`examine` for submitted files on ``threads`` background threads.

    :meth:`submit`, :meth:`collect`, ``len()`` and ``in`` are for the one main thread; the
    threads start at the first :meth:`submit` and :meth:`stop` joins them (it may be started
    again afterwards).
    """

    def __init__(self, *, threads: int = 2, digest: Digest = sha256_fd, probe: Probe = probe_duration) -> None:
        self._size = threads
        self._digest, self._probe = digest, probe
        self._todo: queue.Queue[tuple[Path, Path, FileIdentity] | None] = queue.Queue()
        self._done: queue.SimpleQueue[Ready | Unsettled] = queue.SimpleQueue()
        self._cancel = threading.Event()
        self._threads: list[threading.Thread] = []
        self._in_flight: set[Path] = set()

    def __len__(self) -> int:
        """Files submitted and not yet collected."""
        return len(self._in_flight)

    def __contains__(self, path: object) -> bool:
        return path in self._in_flight

    def submit(self, path: Path, root: Path, identity: FileIdentity) -> None:
        if not self._threads:
            self._cancel = threading.Event()
            self._threads = [threading.Thread(target=self._run, args=(self._cancel,), name=f"scribed-settle-{i}",
                                              daemon=True) for i in range(self._size)]  # fmt: skip
            for thread in self._threads:
                thread.start()
        self._in_flight.add(path)
        self._todo.put((path, root, identity))

    def collect(self) -> list[Ready | Unsettled]:
        """Every result finished since the last call (never blocks)."""
        results: list[Ready | Unsettled] = []
        while True:
            try:
                result = self._done.get_nowait()
            except queue.Empty:
                return results
            self._in_flight.discard(result.path)
            results.append(result)

    def stop(self) -> None:
        """Cancel what is in progress, drop what is queued, and join the threads (bounded)."""
        self._cancel.set()
        for _ in self._threads:
            self._todo.put(None)
        for thread in self._threads:
            thread.join(_JOIN_TIMEOUT_S)
            if thread.is_alive():
                logger.warning("settle thread {} did not stop within {} s", thread.name, _JOIN_TIMEOUT_S)
        self._threads = []
        self._todo = queue.Queue()
        self._done = queue.SimpleQueue()
        self._in_flight.clear()

    def _run(self, cancel: threading.Event) -> None:
        todo, done = self._todo, self._done  # this generation's queues (stop() makes new ones)
        while (item := todo.get()) is not None:
            path, root, identity = item
            if cancel.is_set():
                continue
            try:
                result = examine(path, root, identity, digest=self._digest, probe=self._probe,
                                 cancelled=cancel.is_set)  # fmt: skip
            except Exception as exc:  # e.g. EIO on a flaky NAS: report it, keep the thread alive
                result = Unsettled(path, root, FAILED, f"{type(exc).__name__}: {exc}")
            done.put(result)
