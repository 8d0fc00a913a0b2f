"""Settling: the settle schedule (fake identities, fake clock) and examining real files."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from scribed.daemon.settle import (
    CANCELLED,
    CHANGED,
    CLOSE_SETTLE_S,
    EMPTY_MAX_S,
    FAILED,
    GONE,
    REFUSED,
    Examiner,
    Ready,
    SettleQueue,
    Unsettled,
    examine,
    sha256_fd,
)
from scribed.identity import FileIdentity

ROOT = Path("/in")


def ident(size: int = 10, mtime: int = 1, ino: int = 7) -> FileIdentity:
    return FileIdentity(1, ino, size, mtime)


class Disk:
    """What ``identity_of`` sees, and how often it was asked."""

    def __init__(self) -> None:
        self.files: dict[Path, FileIdentity] = {}
        self.calls = 0

    def __call__(self, path: Path) -> FileIdentity | None:
        self.calls += 1
        return self.files.get(path)


# -- SettleQueue -------------------------------------------------------------------------------------


def test_settles_after_settle_s_unchanged() -> None:
    q, disk = SettleQueue(5.0), Disk()
    a = ROOT / "a.wav"
    disk.files[a] = ident()
    assert q.offer(a, ROOT, ident(), 100.0) is True
    assert q.offer(a, ROOT, ident(), 101.0) is False  # seen again, unchanged: not new
    assert q.tick(104.9, disk) == [] and a in q
    assert q.tick(105.0, disk) == [(a, ROOT, ident())] and a not in q and len(q) == 0


def test_a_change_restarts_the_wait() -> None:
    q, disk = SettleQueue(5.0), Disk()
    a = ROOT / "a.wav"
    disk.files[a] = ident()
    q.offer(a, ROOT, ident(), 100.0)
    disk.files[a] = ident(size=20, mtime=2)  # grown, seen only by the re-check
    assert q.tick(103.0, disk) == []
    assert q.tick(107.9, disk) == []
    assert q.tick(108.0, disk) == [(a, ROOT, ident(size=20, mtime=2))]


def test_replaced_file_with_same_size_and_mtime_is_a_change() -> None:
    q, disk = SettleQueue(5.0), Disk()
    a = ROOT / "a.wav"
    disk.files[a] = ident(ino=7)
    q.offer(a, ROOT, ident(ino=7), 100.0)
    disk.files[a] = ident(ino=8)  # renamed over it
    assert q.tick(104.0, disk) == []
    assert q.tick(108.5, disk) == []
    assert q.tick(109.0, disk) == [(a, ROOT, ident(ino=8))]


def test_close_after_write_shortens_the_wait() -> None:
    q, disk = SettleQueue(30.0), Disk()
    a = ROOT / "a.wav"
    disk.files[a] = ident()
    q.offer(a, ROOT, ident(), 100.0)
    q.offer(a, ROOT, ident(), 100.2, closed=True)
    assert q.tick(100.0 + CLOSE_SETTLE_S - 0.1, disk) == []
    assert q.tick(100.0 + CLOSE_SETTLE_S, disk) == [(a, ROOT, ident())]


def test_vanished_file_is_dropped_and_discard_works() -> None:
    q, disk = SettleQueue(5.0), Disk()
    a, b = ROOT / "a.wav", ROOT / "b.wav"
    q.offer(a, ROOT, ident(), 100.0)
    q.offer(b, ROOT, ident(ino=9), 100.0)
    disk.files[b] = ident(ino=9)
    q.discard(b)
    assert q.tick(110.0, disk) == [] and len(q) == 0


def test_empty_files_never_settle_and_back_off() -> None:
    q, disk = SettleQueue(5.0), Disk()
    a = ROOT / "empty.wav"
    disk.files[a] = ident(size=0)
    q.offer(a, ROOT, ident(size=0), 0.0)
    now = 0.0
    for _ in range(2 * 3600):  # two hours of 0.5 s ticks
        now += 0.5
        assert q.tick(now, disk) == []
    assert a in q
    assert disk.calls <= 7 + 2 * 3600 / EMPTY_MAX_S  # the doubling steps, then once a minute
    disk.files[a] = ident(size=10, mtime=2)
    q.offer(a, ROOT, ident(size=10, mtime=2), now)  # an event: content arrived
    assert q.tick(now + 5.0, disk) == [(a, ROOT, ident(size=10, mtime=2))]


@pytest.mark.parametrize("count", [10, 10_000])
def test_cost_per_tick_is_bounded_whatever_the_count(count: int) -> None:
    q, disk = SettleQueue(5.0, budget=100), Disk()
    for i in range(count):
        path = ROOT / f"{i}.wav"
        disk.files[path] = ident(ino=i, size=10)
        q.offer(path, ROOT, ident(ino=i, size=10), 0.0)
    settled: list[Path] = []
    now, ticks = 0.0, 0
    while len(settled) < count:
        now += 0.5
        ticks += 1
        before = disk.calls
        settled += [path for path, _, _ in q.tick(now, disk)]
        assert disk.calls - before <= 100
    assert sorted(settled) == sorted(disk.files)  # everyone settles: the oldest due go first
    assert ticks <= 10 + count // 100 + 1


def test_nothing_is_checked_twice_in_one_tick() -> None:
    q, disk = SettleQueue(5.0), Disk()
    a = ROOT / "a.wav"
    disk.files[a] = ident()
    q.offer(a, ROOT, ident(), 0.0)
    q.tick(1.0, disk)
    assert disk.calls == 1


def test_many_reschedules_do_not_grow_the_heap() -> None:
    q = SettleQueue(5.0)
    a = ROOT / "a.wav"
    for mtime in range(10_000):  # a writer touching the file over and over
        q.offer(a, ROOT, ident(size=0, mtime=mtime), float(mtime))
    assert len(q._heap) <= 4 * len(q) + 65


# -- examine -------------------------------------------------------------------------------------------


def _identity(path: Path) -> FileIdentity:
    return FileIdentity.of(os.lstat(path))


def test_examine_hashes_and_probes_the_open_file(tmp_path: Path) -> None:
    sub = tmp_path / "2024"
    sub.mkdir()
    rec = sub / "a.wav"
    rec.write_bytes(b"data" * 1000)
    probed: list[bytes] = []

    def probe(name: str) -> float:
        with open(name, "rb") as fh:  # the probe gets a name for the very file that was hashed
            probed.append(fh.read())
        return 12.5

    result = examine(rec, tmp_path, _identity(rec), probe=probe)
    assert isinstance(result, Ready)
    assert (result.path, result.root, result.audio_s) == (rec, tmp_path, 12.5)
    assert result.identity == _identity(rec).with_hash(hashlib.sha256(b"data" * 1000).hexdigest())
    assert probed == [b"data" * 1000]
    assert examine(rec, tmp_path, _identity(rec), cancelled=lambda: True) == Unsettled(rec, tmp_path, CANCELLED)


def test_examine_refuses_links_and_odd_files(tmp_path: Path) -> None:
    outside = tmp_path / "home"
    outside.mkdir()
    (outside / "secret.wav").write_bytes(b"s" * 10)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    link = inbox / "x.wav"
    link.symlink_to(outside / "secret.wav")
    result = examine(link, inbox, FileIdentity.of(os.stat(link)))
    assert isinstance(result, Unsettled) and result.kind == REFUSED
    (inbox / "sub").symlink_to(outside, target_is_directory=True)  # a folder swapped for a link
    via = inbox / "sub" / "secret.wav"
    result = examine(via, inbox, FileIdentity.of(os.stat(via)))
    assert isinstance(result, Unsettled) and result.kind == REFUSED
    fifo = inbox / "pipe.wav"
    os.mkfifo(fifo)
    result = examine(fifo, inbox, FileIdentity.of(os.lstat(fifo)))  # must not block on open
    assert isinstance(result, Unsettled) and result.kind == REFUSED


def test_examine_notices_change_and_absence(tmp_path: Path) -> None:
    rec = tmp_path / "a.wav"
    rec.write_bytes(b"a" * 10)
    old = _identity(rec)
    with rec.open("ab") as out:
        out.write(b"b")
    assert examine(rec, tmp_path, old) == Unsettled(rec, tmp_path, CHANGED)

    def grows(fd: int, cancelled: Callable[[], bool]) -> str | None:
        with rec.open("ab") as out:  # the writer comes back while the hash is read
            out.write(b"c")
        return sha256_fd(fd, cancelled)

    assert examine(rec, tmp_path, _identity(rec), digest=grows) == Unsettled(rec, tmp_path, CHANGED)
    gone = tmp_path / "gone.wav"
    assert examine(gone, tmp_path, old) == Unsettled(gone, tmp_path, GONE)
    assert examine(tmp_path / "no" / "x.wav", tmp_path, old).kind == GONE  # type: ignore[union-attr]


def test_sha256_fd_reads_everything_and_can_be_cancelled(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)
    (tmp_path / "f").write_bytes(data)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        assert sha256_fd(fd, lambda: False) == hashlib.sha256(data).hexdigest()
        assert sha256_fd(fd, lambda: True) is None
    finally:
        os.close(fd)


# -- Examiner --------------------------------------------------------------------------------------------


def _collect_all(examiner: Examiner, count: int) -> list[Ready | Unsettled]:
    import time

    results: list[Ready | Unsettled] = []
    deadline = time.monotonic() + 10
    while len(results) < count:
        assert time.monotonic() < deadline
        results += examiner.collect()
        time.sleep(0.01)  # polling a condition with a deadline
    return results


def test_examiner_runs_off_thread_and_reports_everything(tmp_path: Path) -> None:
    seen_threads: set[int] = set()

    def digest(fd: int, cancelled: Callable[[], bool]) -> str | None:
        seen_threads.add(threading.get_ident())
        return sha256_fd(fd, cancelled)

    examiner = Examiner(digest=digest, probe=lambda name: None)
    try:
        assert examiner.collect() == [] and len(examiner) == 0
        paths = []
        for i in range(5):
            (path := tmp_path / f"{i}.wav").write_bytes(bytes([i]) * 10)
            paths.append(path)
            examiner.submit(path, tmp_path, _identity(path))
        assert len(examiner) == 5 and paths[0] in examiner
        results = _collect_all(examiner, 5)
    finally:
        examiner.stop()
    assert sorted(r.path for r in results) == paths and all(isinstance(r, Ready) for r in results)
    assert threading.get_ident() not in seen_threads and len(examiner) == 0


def test_examiner_survives_a_failing_digest(tmp_path: Path) -> None:
    def broken(fd: int, cancelled: Callable[[], bool]) -> str | None:
        raise OSError(5, "Input/output error")

    (rec := tmp_path / "a.wav").write_bytes(b"a")
    examiner = Examiner(digest=broken, threads=1)
    try:
        examiner.submit(rec, tmp_path, _identity(rec))
        (result,) = _collect_all(examiner, 1)
        examiner.submit(rec, tmp_path, _identity(rec))  # the thread is still there
        (again,) = _collect_all(examiner, 1)
    finally:
        examiner.stop()
    assert isinstance(result, Unsettled) and result.kind == FAILED and "Input/output error" in result.detail
    assert again.kind == FAILED  # type: ignore[union-attr]


def test_examiner_stop_cancels_and_can_restart(tmp_path: Path) -> None:
    entered = threading.Event()

    def endless(fd: int, cancelled: Callable[[], bool]) -> str | None:
        entered.set()
        while not cancelled():
            entered.wait(0.01)  # a bounded wait: until cancelled
        return None

    (rec := tmp_path / "a.wav").write_bytes(b"a")
    examiner = Examiner(digest=endless, threads=1)
    examiner.submit(rec, tmp_path, _identity(rec))
    assert entered.wait(10)
    examiner.stop()  # joins: the leak guard would see a thread left behind
    assert len(examiner) == 0 and examiner.collect() == []
    examiner._digest = sha256_fd
    examiner.submit(rec, tmp_path, _identity(rec))
    try:
        (result,) = _collect_all(examiner, 1)
    finally:
        examiner.stop()
    assert isinstance(result, Ready)
