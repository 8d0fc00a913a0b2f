"""FolderWatcher against real watchdog observers on real temp folders.

Synchronisation: never a bare sleep. Settle/rescan timing runs on a fake clock; waiting for the
observer threads is a bounded deadline loop on a condition. To prove that something did *not*
happen, a zero-byte "barrier" file is created after the action and waited for: one observer
delivers its events in order, so once the barrier is pending every earlier event was handled.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from loguru import logger
from watchdog.observers.inotify import InotifyEmitter
from watchdog.observers.inotify_c import InotifyFD

from scribed.config import WatchConfig
from scribed.daemon import watcher as watcher_mod
from scribed.daemon.watcher import CLOSE_SETTLE_S, FolderWatcher, Ready, is_candidate

SETTLE = 5.0
RESCAN = 60.0
_barrier_ids = itertools.count()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.01)  # polling a condition with a deadline, not synchronising on time


@dataclass
class Harness:
    watcher: FolderWatcher
    clock: FakeClock
    ready: list[Ready] = field(default_factory=list)

    def poll_until(self, condition: Callable[[], bool]) -> None:
        def step() -> bool:
            self.watcher.poll()
            return condition()

        wait_until(step)

    def advance(self, seconds: float) -> list[Ready]:
        """Move the fake clock, poll once, return what became ready in that poll."""
        before = len(self.ready)
        self.clock.now += seconds
        self.watcher.poll()
        return self.ready[before:]

    def barrier(self, folder: Path) -> None:
        marker = folder / f"zz-barrier-{next(_barrier_ids)}.wav"
        marker.touch()  # zero bytes: pending, never ready
        # The only peek at internals: pending() is a count, and other files may arrive alongside.
        self.poll_until(lambda: marker in self.watcher._pending)
        marker.unlink()
        self.watcher.poll()  # a vanished file is dropped
        assert marker not in self.watcher._pending


@pytest.fixture
def make() -> Iterator[Callable[..., Harness]]:
    harnesses: list[Harness] = []

    def build(*folders: Path, start: bool = True, exclude: tuple[Path, ...] = (), **overrides: object) -> Harness:
        settings: dict = {"settle_s": SETTLE, "rescan_interval_s": 0.0, "poll_interval_s": 0.2, **overrides}
        cfg = WatchConfig(folders=tuple(folders), **settings)
        clock = FakeClock()
        harness = Harness(watcher=None, clock=clock)  # type: ignore[arg-type]
        harness.watcher = FolderWatcher(cfg, harness.ready.append, clock=clock, exclude=exclude)
        harnesses.append(harness)
        if start:
            harness.watcher.start()
        return harness

    yield build
    for harness in harnesses:
        harness.watcher.stop()


@pytest.fixture
def warnings_seen() -> Iterator[list[str]]:
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="WARNING")
    yield messages
    logger.remove(sink)


# -- is_candidate ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "rec.m4a", "REC.WAV", "meeting 2024-05-21.mp3", "20240521_产品需求会_v2.m4a", "clip.mp4", "a.b.flac",
])  # fmt: skip
def test_candidate_accepts_recordings(name: str) -> None:
    assert is_candidate(Path("/in") / name)


@pytest.mark.parametrize("name", [
    "notes.txt", "rec.m4a.txt", "rec", ".rec.m4a", ".rec.m4a.Ab12Cd", ".syncthing.rec.wav.tmp",
    "~syncthing~rec.wav.tmp", "rec.mp3.part", ".~lock.rec.m4a#", "rec.~1a2b.m4a", ".dropbox.cache.m4a",
    "~$report.m4a", "rec.m4a.crdownload", "rec.m4a.download", "rec.m4a.partial", "rec.m4a.tmp",
    "rec.m4a.temp", ".rec.m4a.scribed-ab12.tmp", "rec.failed.txt", "rec.srt",
])  # fmt: skip
def test_candidate_rejects_temporaries_and_others(name: str) -> None:
    assert not is_candidate(Path("/in") / name)


def test_candidate_ignore_globs() -> None:
    assert not is_candidate(Path("/in/draft-rec.m4a"), ["draft-*", "*.x"])
    assert is_candidate(Path("/in/rec.m4a"), ["draft-*"])


# -- delivery styles --------------------------------------------------------------------------------


@pytest.mark.parametrize("temp_name", [".rec.m4a.Ab12Cd", ".syncthing.rec.m4a.tmp", "rec.m4a.part"])
def test_rename_into_place_reports_final_name_once(make, tmp_path: Path, temp_name: str) -> None:
    h = make(tmp_path)
    temp = tmp_path / temp_name
    temp.write_bytes(b"x" * 4096)
    h.barrier(tmp_path)
    assert h.watcher.pending() == 0  # the temporary is never considered
    temp.rename(tmp_path / "rec.m4a")
    h.poll_until(lambda: h.watcher.pending() == 1)
    assert h.advance(SETTLE - 0.1) == []
    (ready,) = h.advance(0.2)
    assert ready == Ready(tmp_path / "rec.m4a", tmp_path, 4096, (tmp_path / "rec.m4a").stat().st_mtime_ns)
    h.barrier(tmp_path)
    assert h.advance(SETTLE) == [] and len(h.ready) == 1


def test_slow_chunked_write_waits_for_settle(make, tmp_path: Path) -> None:
    h = make(tmp_path)
    target = tmp_path / "call.wav"
    with target.open("wb") as out:
        for chunk in range(5):
            out.write(b"c" * 1000)
            out.flush()
            os.fsync(out.fileno())
            if chunk == 0:
                h.poll_until(lambda: h.watcher.pending() == 1)
            assert h.advance(SETTLE * 0.6) == []  # the size changed since the last poll: re-timed
        assert h.advance(SETTLE - 0.1) == []
        (ready,) = h.advance(0.2)
    assert ready.size == 5000 and ready.path == target


def test_close_after_write_shortens_settle(make, tmp_path: Path) -> None:
    h = make(tmp_path, settle_s=30.0)
    (tmp_path / "copied.flac").write_bytes(b"f" * 2048)  # open, write, close: like cp
    h.barrier(tmp_path)  # the close event has been recorded
    assert h.advance(CLOSE_SETTLE_S - 0.1) == []
    (ready,) = h.advance(0.2)
    assert ready.path == tmp_path / "copied.flac"


def test_polling_folder_detects_file(make, tmp_path: Path) -> None:
    h = make(tmp_path, polling="always", poll_interval_s=0.1)
    assert h.watcher.modes() == {tmp_path: "polling"}
    (tmp_path / "nas.ogg").write_bytes(b"o" * 100)
    h.poll_until(lambda: h.watcher.pending() == 1)
    assert [r.path.name for r in h.advance(SETTLE)] == ["nas.ogg"]


def test_network_filesystem_polls_in_auto_mode_only(make, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(watcher_mod, "is_network_filesystem", lambda path: True)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert make(tmp_path / "a").watcher.modes() == {tmp_path / "a": "polling"}
    assert make(tmp_path / "b", polling="never").watcher.modes() == {tmp_path / "b": "inotify"}


@pytest.mark.parametrize("recursive", [True, False])
def test_nested_folders(make, tmp_path: Path, recursive: bool) -> None:
    h = make(tmp_path, recursive=recursive)
    deep = tmp_path / "2024" / "05 May"
    deep.mkdir(parents=True)  # created and written at once: the new-directory scan catches it
    (deep / "standup.m4a").write_bytes(b"s" * 10)
    (tmp_path / "top.m4a").write_bytes(b"t" * 10)
    h.barrier(tmp_path)
    names = sorted(r.path.relative_to(tmp_path).as_posix() for r in h.advance(SETTLE))
    assert names == (["2024/05 May/standup.m4a", "top.m4a"] if recursive else ["top.m4a"])


def test_directory_moved_in_is_scanned(make, tmp_path: Path) -> None:
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    (outside / "batch" / "sub").mkdir(parents=True)
    for name in ("one.mp3", "sub/two.mp3"):
        (outside / "batch" / name).write_bytes(b"m" * 10)
    inbox.mkdir()
    h = make(inbox)
    (outside / "batch").rename(inbox / "batch")
    h.poll_until(lambda: h.watcher.pending() == 2)
    assert sorted(r.path.name for r in h.advance(SETTLE)) == ["one.mp3", "two.mp3"]


def test_spaces_and_cjk_names(make, tmp_path: Path) -> None:
    folder = tmp_path / "会议 录音"
    folder.mkdir()
    h = make(folder)
    names = ["20240521_产品需求会_v2.m4a", "weekly sync (final).wav"]
    for name in names:
        (folder / name).write_bytes(b"u" * 10)
    h.poll_until(lambda: h.watcher.pending() == 2)
    assert sorted(r.path for r in h.advance(SETTLE)) == sorted(folder / n for n in names)


def test_file_deleted_while_pending_is_never_reported(make, tmp_path: Path) -> None:
    h = make(tmp_path)
    doomed = tmp_path / "doomed.wav"
    doomed.write_bytes(b"d" * 10)
    h.poll_until(lambda: h.watcher.pending() == 1)
    doomed.unlink()
    h.watcher.poll()
    assert h.watcher.pending() == 0
    assert h.advance(SETTLE) == [] and h.ready == []


def test_ignored_files_and_folders(make, tmp_path: Path) -> None:
    junk = [".hidden.m4a", ".~lock.rec.m4a#", "~$rec.m4a", "rec.m4a.part", ".rec.m4a.scribed-x1.tmp",
            "rec.failed.txt", "rec.txt", "draft-rec.m4a", ".git/obj.m4a", "archive/done.m4a",
            ".stversions/old.m4a", "page.download/inner.m4a"]  # fmt: skip

    def drop_junk(root: Path) -> None:
        for name in junk:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(b"j" * 10)

    before, after = tmp_path / "before", tmp_path / "after"
    before.mkdir()
    after.mkdir()
    drop_junk(before)  # seen by the initial scan
    h = make(before, after, ignore=("draft-*",), exclude=(before / "archive", after / "archive"))
    assert h.watcher.pending() == 0
    drop_junk(after)  # seen through events
    h.barrier(after)
    assert h.advance(SETTLE) == [] and h.watcher.pending() == 0


def test_missing_folder_is_picked_up_at_next_rescan(make, tmp_path: Path, warnings_seen: list[str]) -> None:
    later = tmp_path / "later"
    h = make(later, rescan_interval_s=RESCAN)
    assert h.watcher.modes() == {later: "missing"}
    assert any("does not exist" in m for m in warnings_seen)
    assert not later.exists()  # the watcher creates nothing
    h.advance(RESCAN)  # still missing: no second warning, no crash
    assert sum("does not exist" in m for m in warnings_seen) == 1
    later.mkdir()
    (later / "first.m4a").write_bytes(b"f" * 10)
    h.advance(RESCAN)
    assert h.watcher.modes() == {later: "inotify"} and h.watcher.pending() == 1
    (later / "second.m4a").write_bytes(b"s" * 10)  # and events flow from now on
    h.poll_until(lambda: h.watcher.pending() == 2)


def test_rescans_find_what_events_missed(make, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "early.wav").write_bytes(b"e" * 10)  # before start(): no observer saw it
    monkeypatch.setattr(FolderWatcher, "_record", lambda self, raw, is_dir, closed: None)  # drop events
    h = make(tmp_path, rescan_interval_s=RESCAN)
    assert h.watcher.pending() == 1  # the initial scan
    (tmp_path / "dropped.wav").write_bytes(b"d" * 10)
    assert [r.path.name for r in h.advance(SETTLE)] == ["early.wav"]
    assert h.watcher.pending() == 0
    h.advance(RESCAN - SETTLE)
    assert h.watcher.pending() == 1
    assert [r.path.name for r in h.advance(SETTLE)] == ["dropped.wav"]


def test_reported_file_is_reported_again_only_when_changed(make, tmp_path: Path) -> None:
    h = make(tmp_path, rescan_interval_s=RESCAN)
    rec = tmp_path / "rec.opus"
    rec.write_bytes(b"r" * 10)
    h.poll_until(lambda: h.watcher.pending() == 1)
    assert len(h.advance(SETTLE)) == 1
    h.barrier(tmp_path)  # late events (modify/close) of the first write are in
    assert h.advance(RESCAN) == [] and h.advance(RESCAN) == [] and h.watcher.pending() == 0
    with rec.open("ab") as out:
        out.write(b"more")
    h.poll_until(lambda: h.watcher.pending() == 1)
    (again,) = h.advance(SETTLE)
    assert again.path == rec and again.size == 14


def test_on_ready_failure_is_retried_at_next_rescan(tmp_path: Path) -> None:
    calls: list[Path] = []

    def flaky(ready: Ready) -> None:
        calls.append(ready.path)
        if len(calls) == 1:
            raise RuntimeError("journal busy")

    clock = FakeClock()
    (tmp_path / "r.wav").write_bytes(b"r" * 10)
    w = FolderWatcher(WatchConfig(folders=(tmp_path,), settle_s=SETTLE, rescan_interval_s=RESCAN), flaky, clock=clock)
    w.start()
    try:
        clock.now += SETTLE
        w.poll()
        clock.now += RESCAN
        w.poll()
        clock.now += SETTLE
        w.poll()
    finally:
        w.stop()
    assert calls == [tmp_path / "r.wav"] * 2


def _raise(err: int, text: str) -> Callable[..., None]:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(err, text)

    return fail


@pytest.mark.parametrize(("target", "attribute", "error"), [
    (watcher_mod.Observer, "schedule", OSError(28, "inotify watch limit reached")),  # as the brief asks
    (InotifyEmitter, "on_thread_start", OSError(28, "inotify watch limit reached")),  # where watchdog adds watches
    (InotifyFD, "_create_inotify_fd", OSError(24, "inotify instance limit reached")),  # inotify_init
])  # fmt: skip
def test_inotify_failure_falls_back_to_polling(
    make, tmp_path: Path, monkeypatch, warnings_seen: list[str], target: type, attribute: str, error: OSError
) -> None:
    monkeypatch.setattr(target, attribute, _raise(error.errno, error.strerror))
    h = make(tmp_path, polling="never", poll_interval_s=0.1)
    assert h.watcher.modes() == {tmp_path: "polling"}
    assert any("inotify unavailable" in m and error.strerror in m for m in warnings_seen)
    (tmp_path / "still.m4a").write_bytes(b"s" * 10)
    h.poll_until(lambda: h.watcher.pending() == 1)
    assert [r.path.name for r in h.advance(SETTLE)] == ["still.m4a"]
    # the leak guard (conftest) checks that the failed observer's threads were all stopped


def test_folder_removed_then_restored(make, tmp_path: Path) -> None:
    folder = tmp_path / "share"
    folder.mkdir()
    h = make(folder, rescan_interval_s=RESCAN)
    folder.rmdir()
    h.advance(RESCAN)
    assert h.watcher.modes() == {folder: "missing"}
    folder.mkdir()
    (folder / "back.m4a").write_bytes(b"b" * 10)
    h.advance(RESCAN)
    assert h.watcher.modes() == {folder: "inotify"} and h.watcher.pending() == 1


def test_folder_replaced_between_rescans_is_watched_again(make, tmp_path: Path, warnings_seen: list[str]) -> None:
    folder = tmp_path / "inbox"
    folder.mkdir()
    h = make(folder, rescan_interval_s=RESCAN)
    folder.rename(tmp_path / "old")  # like a share mounted over the folder: the old watch sees nothing new
    folder.mkdir()
    h.advance(RESCAN)
    assert h.watcher.modes() == {folder: "inotify"}
    assert any("replaced or its observer stopped" in m for m in warnings_seen)
    (folder / "new.wav").write_bytes(b"n" * 10)
    h.poll_until(lambda: h.watcher.pending() == 1)
