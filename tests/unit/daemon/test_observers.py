"""Observers: real watchdog observers on real temp folders (bounded waits on conditions, no sleeps)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import test_watcher

from scribed.config import WatchConfig
from scribed.daemon.observers import Observers, bounded_listdir, threads_alive

wait_until = test_watcher.wait_until
warnings_seen = test_watcher.warnings_seen  # the fixture, shared


class Recorded:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.paths: list[str] = []

    def __call__(self, path: str, is_dir: bool, closed: bool) -> None:
        with self.lock:
            self.paths.append(path)

    def saw(self, path: Path) -> bool:
        with self.lock:
            return str(path) in self.paths


@pytest.fixture
def observers() -> Iterator[Callable[..., tuple[Observers, Recorded]]]:
    made: list[Observers] = []

    def build(root: Path, **settings: object) -> tuple[Observers, Recorded]:
        recorded = Recorded()
        obs = Observers(WatchConfig(folders=(root,), **{"poll_interval_s": 0.1, **settings}), (root,), recorded)
        made.append(obs)
        return obs, recorded

    yield build
    for obs in made:
        obs.stop()


def test_missing_folder_is_not_created_and_warned_once(observers, tmp_path: Path, warnings_seen) -> None:
    obs, _ = observers(tmp_path / "later")
    assert obs.ensure(tmp_path / "later") is False and obs.ensure(tmp_path / "later") is False
    assert obs.modes() == {tmp_path / "later": "missing"} and not (tmp_path / "later").exists()
    assert sum("does not exist" in m for m in warnings_seen) == 1


@pytest.mark.parametrize("polling", ["never", "always"])
def test_events_reach_the_recorder(observers, tmp_path: Path, polling: str) -> None:
    obs, recorded = observers(tmp_path, polling=polling)
    assert obs.ensure(tmp_path)
    assert obs.modes() == {tmp_path: "inotify" if polling == "never" else "polling"}
    (tmp_path / "a.wav").write_bytes(b"a")
    wait_until(lambda: recorded.saw(tmp_path / "a.wav"))
    assert obs.ensure(tmp_path)  # alive and the same folder: kept


def test_polling_never_follows_a_linked_folder(observers, tmp_path: Path) -> None:
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    inbox.mkdir()
    outside.mkdir()
    (inbox / "link").symlink_to(outside, target_is_directory=True)
    obs, recorded = observers(inbox, polling="always")
    assert obs.ensure(inbox)
    (outside / "secret.wav").write_bytes(b"s")
    (inbox / "barrier.wav").write_bytes(b"b")  # polled after (or with) the file outside
    wait_until(lambda: recorded.saw(inbox / "barrier.wav"))
    assert not any("secret" in p for p in recorded.paths)


def test_bounded_listdir_stops_at_max_depth(tmp_path: Path) -> None:
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    listdir = bounded_listdir(tmp_path, 2)
    assert [e.name for e in listdir(str(tmp_path))] == ["a"]
    assert [e.name for e in listdir(str(tmp_path / "a" / "b"))] == ["c"]  # depth 2: listed
    assert list(listdir(str(tmp_path / "a" / "b" / "c"))) == []  # depth 3: not


def test_dead_inotify_thread_means_polling_from_then_on(observers, tmp_path: Path, warnings_seen) -> None:
    obs, recorded = observers(tmp_path, polling="never")
    assert obs.ensure(tmp_path) and obs.modes() == {tmp_path: "inotify"}
    assert obs.dead() == []
    observer = obs._observers[tmp_path]
    reader = observer._inotify_fd  # type: ignore[attr-defined]
    reader.stop()  # as when a deep tree kills it with RecursionError
    reader.join(10)
    assert not threads_alive(observer)
    assert obs.dead() == [tmp_path] and obs.modes() == {tmp_path: "missing"}
    assert obs.ensure(tmp_path) and obs.modes() == {tmp_path: "polling"}
    assert sum("polling that folder from now on" in m for m in warnings_seen) == 1
    (tmp_path / "after.wav").write_bytes(b"a")
    wait_until(lambda: recorded.saw(tmp_path / "after.wav"))
    assert obs.ensure(tmp_path) and obs.modes() == {tmp_path: "polling"}  # not back to inotify


def test_stop_joins_everything(observers, tmp_path: Path) -> None:
    obs, _ = observers(tmp_path)
    assert obs.ensure(tmp_path)
    observer = obs._observers[tmp_path]
    obs.stop()
    assert not observer.is_alive() and not any(t.is_alive() for t in observer.emitters)
