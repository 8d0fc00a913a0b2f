"""Tests for scribed.daemon.scope: candidate names and the walk of a watched tree (real folders)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scribed.config import WatchConfig
from scribed.daemon import watcher
from scribed.daemon.scope import Scope, is_candidate, is_temp_name

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


def test_the_watcher_still_exports_is_candidate() -> None:
    assert watcher.is_candidate is is_candidate


@pytest.mark.parametrize("name", [".hidden", "x.part", "~syncthing~dir.tmp", ".rec.m4a.scribed-ab12.tmp"])
def test_temporary_names_prune_folders_too(name: str) -> None:
    assert is_temp_name(name)
    assert not is_temp_name("Meetings 2024")


def _scope(root: Path, notes: list[tuple[str, str]], **cfg: object) -> Scope:
    return Scope(WatchConfig(folders=(root,), **cfg), (),  # type: ignore[arg-type]
                 lambda kind, path: notes.append((kind, path.name)))


def test_walk_finds_candidates_and_notes_links_and_deep_folders(tmp_path: Path) -> None:
    root = (tmp_path / "in").resolve()
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / ".sync").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.wav").write_bytes(b"x")
    for rel in ("top.wav", "a/one.m4a", "a/b/two.mp3", "a/b/c/deep.wav", ".sync/hidden.wav", "a/notes.txt"):
        (root / rel).write_bytes(b"x")
    os.symlink(outside, root / "a" / "elsewhere")
    os.symlink(outside / "secret.wav", root / "linked.wav")
    notes: list[tuple[str, str]] = []
    scope = _scope(root, notes, recursive=True, max_depth=2)
    seen: set[Path] = set()
    found = sorted(p.relative_to(root).as_posix() for p in scope.walk(root, root, seen))
    assert found == ["a/b/two.mp3", "a/one.m4a", "top.wav"]  # nothing hidden, too deep or behind a link
    assert sorted(notes) == [("deep", "c"), ("link", "elsewhere"), ("link", "linked.wav")]
    assert seen == {root / "a" / "b" / "c", root / "a" / "elsewhere", root / "linked.wav"}


def test_walk_without_recursion_stays_in_the_root(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    (root / "sub").mkdir()
    (root / "sub" / "inner.wav").write_bytes(b"x")
    (root / "top.wav").write_bytes(b"x")
    notes: list[tuple[str, str]] = []
    assert [p.name for p in _scope(root, notes, recursive=False).walk(root, root)] == ["top.wav"]
    assert notes == []


def test_a_folder_swapped_for_a_link_is_not_listed(tmp_path: Path) -> None:
    root = (tmp_path / "in").resolve()
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.wav").write_bytes(b"x")
    os.symlink(outside, root / "sub")
    # asked to walk "sub" itself (as after an event for it): opened from the root without links
    assert list(_scope(root, [], recursive=True).walk(root / "sub", root)) == []


def test_scope_roots_exclusions_and_wanted(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    (root / "skip").mkdir()
    scope = Scope(WatchConfig(folders=(root,), recursive=True, max_depth=2), (root / "skip",),
                  lambda kind, path: None)
    assert scope.root_of(root / "a" / "x.wav") == root
    assert scope.root_of(tmp_path.parent / "x.wav") is None
    assert scope.excluded(root / "skip" / "x.wav")
    assert scope.wanted_file(root / "a" / "b" / "x.wav", root)
    assert not scope.wanted_file(root / "a" / "b" / "c" / "x.wav", root)  # deeper than max_depth
    assert not scope.wanted_file(root / ".tmp" / "x.wav", root)
    assert not scope.wanted_file(root / "skip" / "x.wav", root)
