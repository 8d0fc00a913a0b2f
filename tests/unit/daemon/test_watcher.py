"""FolderWatcher against real watchdog observers on real temp folders.

Synchronisation: never a bare sleep. Settle/rescan timing runs on a fake clock; waiting for the
observer and examiner threads is a bounded deadline loop on a condition. To prove that something
did *not* happen, a zero-byte "barrier" file is created after the action and waited for: one
observer delivers its events in order, so once the barrier is pending every earlier event was
handled.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from loguru import logger
from watchdog.observers.inotify import InotifyEmitter
from watchdog.observers.inotify_c import InotifyFD

from scribed.config import WatchConfig
from scribed.daemon import observers as observers_mod
from scribed.daemon import rescan
from scribed.daemon.settle import TICK_BUDGET, Examiner, sha256_fd
from scribed.daemon.watcher import CLOSE_SETTLE_S, FolderWatcher, Ready

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
        """Move the fake clock, poll, and return what became ready: what settled at this time,
        once the examiner threads have hashed it (polling again, the clock standing still)."""
        before = len(self.ready)
        self.clock.now += seconds
        self.watcher.poll()
        self.poll_until(lambda: self.watcher.examining() == 0)
        return self.ready[before:]

    def barrier(self, folder: Path) -> None:
        marker = folder / f"zz-barrier-{next(_barrier_ids)}.wav"
        marker.touch()  # zero bytes: pending, never ready
        # The only peek at internals: pending() is a count, and other files may arrive alongside.
        self.poll_until(lambda: marker in self.watcher._queue)
        marker.unlink()
        self.poll_until(lambda: marker not in self.watcher._queue)  # its deletion event drops it


@pytest.fixture
def make() -> Iterator[Callable[..., Harness]]:
    harnesses: list[Harness] = []

    def build(*folders: Path, start: bool = True, exclude: tuple[Path, ...] = (), examiner: Examiner | None = None,
              **overrides: object) -> Harness:  # fmt: skip
        settings: dict = {"settle_s": SETTLE, "rescan_interval_s": 0.0, "poll_interval_s": 0.2, **overrides}
        cfg = WatchConfig(folders=tuple(folders), **settings)
        clock = FakeClock()
        harness = Harness(watcher=None, clock=clock)  # type: ignore[arg-type]
        harness.watcher = FolderWatcher(cfg, harness.ready.append, clock=clock, exclude=exclude, examiner=examiner)
        harnesses.append(harness)
        if start:
            harness.watcher.start()
        return harness

    yield build
    for harness in harnesses:
        harness.watcher.stop()


def _logged(level: str) -> Iterator[list[str]]:
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level=level)
    yield messages
    logger.remove(sink)


@pytest.fixture
def warnings_seen() -> Iterator[list[str]]:
    yield from _logged("WARNING")


@pytest.fixture
def infos_seen() -> Iterator[list[str]]:
    yield from _logged("INFO")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
    assert (ready.path, ready.root) == (tmp_path / "rec.m4a", tmp_path)
    assert ready.identity.same_file(os.stat(tmp_path / "rec.m4a")) and ready.identity.size == 4096
    assert ready.identity.sha256 == sha256(b"x" * 4096)
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
    assert ready.identity.size == 5000 and ready.path == target


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
    monkeypatch.setattr(observers_mod, "is_network_filesystem", lambda path: True)
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
    assert again.path == rec and again.identity.size == 14 and again.identity.sha256 == sha256(b"r" * 10 + b"more")


def test_on_ready_failure_is_retried_at_next_rescan(tmp_path: Path) -> None:
    calls: list[Path] = []

    def flaky(ready: Ready) -> None:
        calls.append(ready.path)
        if len(calls) == 1:
            raise RuntimeError("journal busy")

    clock = FakeClock()
    (tmp_path / "r.wav").write_bytes(b"r" * 10)
    w = FolderWatcher(WatchConfig(folders=(tmp_path,), settle_s=SETTLE, rescan_interval_s=RESCAN), flaky, clock=clock)
    h = Harness(w, clock)
    w.start()
    try:
        h.advance(SETTLE)
        assert calls == [tmp_path / "r.wav"]
        h.advance(RESCAN)
        h.advance(SETTLE)
    finally:
        w.stop()
    assert calls == [tmp_path / "r.wav"] * 2


def _raise(err: int, text: str) -> Callable[..., None]:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(err, text)

    return fail


@pytest.mark.parametrize(("target", "attribute", "error"), [
    (observers_mod.Observer, "schedule", OSError(28, "inotify watch limit reached")),  # as the brief asks
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


# -- issue 10: hostile and huge folders --------------------------------------------------------------


class GatedDigest:
    """A hash that takes as long as the test wants: it waits for ``release`` (a deadline of 60 s
    only turns a hang into a failure). Records the threads it ran on."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.threads: list[int] = []
        self.timed_out = False

    def __call__(self, fd: int, cancelled: Callable[[], bool]) -> str | None:
        self.threads.append(threading.get_ident())
        self.started.set()
        deadline = time.monotonic() + 60
        while not self.release.wait(0.01):  # a bounded wait on a real condition
            if cancelled():
                return None
            if time.monotonic() > deadline:
                self.timed_out = True
                return None
        return sha256_fd(fd, cancelled)


def test_hashing_never_blocks_the_polling_loop(make, tmp_path: Path) -> None:
    digest = GatedDigest()
    h = make(tmp_path, examiner=Examiner(digest=digest))
    rec = tmp_path / "huge.wav"
    rec.write_bytes(b"h" * 2048)
    h.barrier(tmp_path)  # every event of the write is in
    h.clock.now += SETTLE
    h.watcher.poll()  # settles: handed to the examiner
    wait_until(digest.started.is_set)
    for _ in range(120):  # a minute of 0.5 s heartbeats while the hash is still running
        h.clock.now += 0.5
        h.watcher.poll()
    assert h.ready == [] and h.watcher.examining() == 1
    assert digest.threads and threading.get_ident() not in digest.threads
    digest.release.set()
    h.poll_until(lambda: len(h.ready) == 1)
    assert h.ready[0].identity.sha256 == sha256(b"h" * 2048) and not digest.timed_out


def test_content_changed_while_hashing_settles_again(make, tmp_path: Path) -> None:
    digest = GatedDigest()
    h = make(tmp_path, examiner=Examiner(digest=digest))
    rec = tmp_path / "growing.wav"
    rec.write_bytes(b"a" * 100)
    h.barrier(tmp_path)
    h.clock.now += SETTLE
    h.watcher.poll()
    wait_until(digest.started.is_set)
    with rec.open("ab") as out:  # the writer was only pausing
        out.write(b"b" * 100)
    digest.release.set()
    h.poll_until(lambda: h.watcher.examining() == 0)
    assert h.ready == [] and h.watcher.pending() == 1  # waiting to settle again, not reported
    (ready,) = h.advance(SETTLE)
    assert ready.identity.size == 200 and ready.identity.sha256 == sha256(b"a" * 100 + b"b" * 100)


def test_stop_cancels_a_hash_in_progress(make, tmp_path: Path) -> None:
    digest = GatedDigest()
    h = make(tmp_path, examiner=Examiner(digest=digest))
    (tmp_path / "big.wav").write_bytes(b"b" * 100)
    h.barrier(tmp_path)
    h.clock.now += SETTLE
    h.watcher.poll()
    wait_until(digest.started.is_set)
    h.watcher.stop()  # returns without release: the hash saw the cancel (the leak guard checks threads)
    assert not digest.timed_out and h.ready == []


def _make_chain(base: Path, name: str, depth: int, files_at: dict[int, str]) -> None:
    """``base/name/d/d/.../d`` (``depth`` folders) through directory fds, so no path is ever longer
    than one name; ``files_at`` puts a recording at some depths (1 = inside ``base/name``)."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(1, depth + 1):
            os.mkdir(name if level == 1 else "d", dir_fd=fd)
            child = os.open(name if level == 1 else "d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
            if level in files_at:
                out = os.open(files_at[level], os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
                os.write(out, b"r" * 64)
                os.close(out)
    finally:
        os.close(fd)


def _remove_chain(base: Path, name: str) -> None:
    """Remove what :func:`_make_chain` made, bottom up, without recursion (pytest's cleanup recurses)."""
    fds = [os.open(base, os.O_RDONLY | os.O_DIRECTORY)]
    names = [name]
    while True:
        try:
            fds.append(os.open(names[-1], os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        except FileNotFoundError:
            names.pop()
            break
        names.append("d")
    while len(fds) > 1:
        inner = fds.pop()
        for entry in os.listdir(inner):
            os.unlink(entry, dir_fd=inner)
        os.close(inner)
        os.rmdir(names.pop(), dir_fd=fds[-1])
    os.close(fds[0])


@pytest.fixture
def deep_tree(tmp_path: Path) -> Iterator[Path]:
    outside = tmp_path / "outside"
    outside.mkdir()
    _make_chain(outside, "tree", 1000, {3: "shallow.m4a", 40: "deep.m4a"})
    yield outside / "tree"
    for base in (outside, tmp_path / "inbox"):
        if (base / "tree").exists():
            _remove_chain(base, "tree")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # watchdog's thread dies
def test_deep_tree_moved_in_while_watching(make, tmp_path: Path, deep_tree: Path, warnings_seen: list[str]) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    h = make(inbox, poll_interval_s=0.1)
    assert h.watcher.modes() == {inbox: "inotify"}
    deep_tree.rename(inbox / "tree")  # watchdog's recursive walk of the new tree exhausts the stack
    h.poll_until(lambda: h.watcher.pending() == 1)
    (late := inbox / "after.m4a").write_bytes(b"a" * 10)  # still noticed: no blind folder
    h.poll_until(lambda: h.watcher.pending() == 2)
    names = sorted(r.path.name for r in h.advance(SETTLE))
    assert names == ["after.m4a", "shallow.m4a"]  # deep.m4a lies 40 levels down: beyond max_depth
    assert late.exists()
    if sys.version_info < (3, 12):  # os.walk recurses here, so watchdog's inotify thread died
        assert h.watcher.modes() == {inbox: "polling"}
        assert sum("polling that folder from now on" in m for m in warnings_seen) == 1
    h.advance(1.0)
    assert sum("polling that folder from now on" in m for m in warnings_seen) <= 1


def test_deep_tree_present_at_start(make, tmp_path: Path, deep_tree: Path, warnings_seen: list[str]) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    deep_tree.rename(inbox / "tree")
    h = make(inbox, polling="never")  # start() must not raise, whatever watchdog does with the tree
    if sys.version_info < (3, 12):  # watchdog's os.walk recursion fails in schedule(): polled instead
        assert h.watcher.modes() == {inbox: "polling"}
        assert any("inotify unavailable" in m and "too deep" in m for m in warnings_seen)
    assert [r.path.name for r in h.advance(SETTLE)] == ["shallow.m4a"]
    assert sum("deeper than watch.max_depth" in m for m in warnings_seen) == 1


def test_symlinks_are_never_followed(make, tmp_path: Path, infos_seen: list[str]) -> None:
    private, inbox = tmp_path / "home", tmp_path / "inbox"
    (private / "project").mkdir(parents=True)
    inbox.mkdir()
    (private / "secret.m4a").write_bytes(b"s" * 10)
    (private / "project" / "plan.m4a").write_bytes(b"p" * 10)
    (inbox / "x.m4a").symlink_to(private / "secret.m4a")
    (inbox / "linked").symlink_to(private / "project", target_is_directory=True)
    h = make(inbox, rescan_interval_s=RESCAN)
    (inbox / "later.m4a").symlink_to(private / "secret.m4a")  # planted while running: seen by an event
    (inbox / "real.m4a").write_bytes(b"r" * 10)
    h.poll_until(lambda: h.watcher.pending() == 1)
    h.barrier(inbox)
    assert [r.path.name for r in h.advance(SETTLE)] == ["real.m4a"]
    assert [r.path.name for r in h.advance(RESCAN)] == [] and h.watcher.pending() == 0
    links = [m for m in infos_seen if "symbolic link" in m]
    assert sorted(links) == sorted(f"ignoring symbolic link {inbox / n} (links in a watched folder are never followed)"
                                   for n in ("x.m4a", "linked", "later.m4a"))  # once each, not at every rescan


def test_a_rescan_of_a_big_tree_goes_a_slice_per_poll(make, tmp_path: Path, monkeypatch) -> None:
    """On a network share every lstat may be a round trip: a rescan stats at most a slice of
    files per poll (the daemon's loop answers its worker and systemd in between), counts as
    pending until it is through, and still finds every file, in every folder."""
    monkeypatch.setattr(rescan, "MAX_FILES", 7)
    names = [f"{d}/{i:02d}.m4a" for d in ("a", "b", "b/c") for i in range(10)]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * 10)
    calls = [0]
    real_consider = FolderWatcher._consider

    def counting_consider(self: FolderWatcher, path: Path, now: float, **kw: bool) -> None:
        calls[0] += 1  # a file met by the walk: its lstat (events are not expected here)
        real_consider(self, path, now, **kw)

    monkeypatch.setattr(FolderWatcher, "_consider", counting_consider)
    h = make(tmp_path)
    per_poll = [calls[0]]
    while h.watcher.scanning():
        assert h.watcher.pending() == len(h.watcher._queue) + 1  # the scan itself is pending
        calls[0] = 0
        h.watcher.poll()
        per_poll.append(calls[0])
    assert max(per_poll) <= 7 and sum(per_poll) == len(names) and len(per_poll) >= len(names) // 7
    assert h.watcher.pending() == len(names)
    assert sorted(str(r.path.relative_to(tmp_path)) for r in h.advance(SETTLE)) == sorted(names)


def test_a_big_tree_moved_in_is_walked_a_slice_per_poll(make, tmp_path: Path, monkeypatch) -> None:
    """A folder of recordings moved into the watched one is walked in slices, and the events
    watchdog makes for what is in it are taken a slice per poll as well (at most one slice of
    each per poll); every recording in it is found."""
    monkeypatch.setattr(rescan, "MAX_FILES", 5)
    inbox, outside = tmp_path / "inbox", tmp_path / "archive-2023"
    inbox.mkdir()
    names = [f"{d}/{i:02d}.m4a" for d in ("q1", "q2") for i in range(12)]
    for name in names:
        (outside / name).parent.mkdir(parents=True, exist_ok=True)
        (outside / name).write_bytes(b"x" * 10)
    h = make(inbox)
    calls = [0]
    real_consider = FolderWatcher._consider

    def counting_consider(self: FolderWatcher, path: Path, now: float, **kw: bool) -> None:
        calls[0] += 1
        real_consider(self, path, now, **kw)

    monkeypatch.setattr(FolderWatcher, "_consider", counting_consider)
    os.rename(outside, inbox / "archive-2023")
    per_poll: list[int] = []

    def walked() -> bool:
        calls[0] = 0
        h.watcher.poll()
        per_poll.append(calls[0])
        return not h.watcher.scanning() and h.watcher.pending() == len(names)

    wait_until(walked)
    assert max(per_poll) <= 2 * 5 and sum(per_poll) >= len(names)
    found = sorted(str(r.path.relative_to(inbox / "archive-2023")) for r in h.advance(SETTLE))
    assert found == sorted(names)


def test_ten_thousand_empty_files_cost_little(make, tmp_path: Path, infos_seen: list[str], monkeypatch) -> None:
    count = 10_000
    for i in range(count):
        (tmp_path / f"{i:05d}.wav").touch()
    h = make(tmp_path)
    polls = 0
    while h.watcher.scanning():  # the initial scan goes a slice per poll (rescan.MAX_FILES files)
        h.watcher.poll()
        polls += 1
    assert 1 <= polls <= count // rescan.MAX_FILES
    assert h.watcher.pending() == count
    lines = [m for m in infos_seen if str(tmp_path) in m]  # not 10,000 lines: one per slice
    assert lines[0] == f"watching {tmp_path} (inotify)" and len(lines) == 1 + count // rescan.MAX_FILES
    assert all(line.startswith(f"ignoring {rescan.MAX_FILES} empty files until they have content (e.g. {tmp_path}/")
               for line in lines[1:])

    main, calls = threading.get_ident(), [0]
    real_lstat = os.lstat

    def counting_lstat(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if threading.get_ident() == main and str(tmp_path) in os.fsdecode(path):
            calls[0] += 1
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", counting_lstat)
    per_tick = []
    for _ in range(400):  # 200 s of 0.5 s ticks
        calls[0] = 0
        h.clock.now += 0.5
        h.watcher.poll()
        per_tick.append(calls[0])
    assert max(per_tick) <= TICK_BUDGET  # was 10,000 a tick: every pending file, twice a second
    assert sum(per_tick[-120:]) <= count * 2  # the last minute: each empty file about once (backoff)
    (tmp_path / "00042.wav").write_bytes(b"x" * 10)  # content arrives: noticed through its event
    h.barrier(tmp_path)
    assert [r.path.name for r in h.advance(SETTLE)] == ["00042.wav"]


def test_names_that_are_not_utf8(make, tmp_path: Path) -> None:
    raw_dir = os.fsencode(tmp_path)
    before, during = b"caf\xe9 \xff before.wav", b"\xfe\xfe during.m4a"  # Latin-1 bytes, not UTF-8
    with open(raw_dir + b"/" + before, "wb") as out:
        out.write(b"1" * 10)
    lines: list[str] = []
    strict = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")  # as a log file would be

    def sink(message: object) -> None:
        strict.write(str(message))  # raises on a lone surrogate
        lines.append(str(message))

    handler = logger.add(sink, level="DEBUG", catch=False)
    try:
        h = make(tmp_path)
        with open(raw_dir + b"/" + during, "wb") as out:
            out.write(b"2" * 10)
        h.poll_until(lambda: h.watcher.pending() == 2)
        ready = h.advance(SETTLE)
    finally:
        logger.remove(handler)
    assert sorted(os.fsencode(r.path.name) for r in ready) == sorted([before, during])
    assert {r.identity.sha256 for r in ready} == {sha256(b"1" * 10), sha256(b"2" * 10)}
    assert any("caf\\xe9 \\xff before.wav" in line for line in lines)  # shown, escaped, in one line


def test_a_path_too_long_to_use_gets_one_clear_line(make, tmp_path: Path, warnings_seen: list[str]) -> None:
    name = "n" * 200
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(21):  # 21 * 201 bytes: more than PATH_MAX (4096), though every name is fine
        os.mkdir(name, dir_fd=fd)
        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(os.open("rec.wav", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    os.close(fd)
    h = make(tmp_path, rescan_interval_s=RESCAN)
    h.advance(RESCAN)
    h.advance(RESCAN)
    (line,) = [m for m in warnings_seen if m.startswith("cannot process")]
    assert line.endswith("rec.wav: File name too long") and h.watcher.pending() == 0
