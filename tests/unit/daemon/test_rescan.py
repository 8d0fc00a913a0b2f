"""Rescan: walks in bounded slices, roots in request order, each root's end reported once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from scribed.daemon.rescan import Rescan

A, B = Path("/in/a"), Path("/in/b")


class Tree:
    """Fake walks: ``files[root]`` paths per root; records what the rescan did."""

    def __init__(self, files: dict[Path, int], missing: tuple[Path, ...] = ()) -> None:
        self.files = {root: [root / f"{i:03d}.wav" for i in range(n)] for root, n in files.items()}
        self.missing = missing
        self.met: list[Path] = []
        self.done: list[tuple[Path, int]] = []
        self.started: list[Path] = []

    def start(self, folder: Path, root: Path, seen: set[Path]) -> Iterator[Path] | None:
        self.started.append(folder)
        if folder in self.missing:
            return None
        seen.add(folder / "a-link")  # the walk may add what it met besides files (links, deep folders)
        return iter(list(self.files[folder]))

    def each(self, path: Path, root: Path) -> None:
        assert path.is_relative_to(root)
        self.met.append(path)

    def finished(self, folder: Path, root: Path, seen: set[Path]) -> None:
        assert folder.is_relative_to(root) and folder / "a-link" in seen and set(self.files[folder]) <= seen
        self.done.append((folder, len(seen)))

    def step(self, scan: Rescan, **kw: object) -> int:
        kw.setdefault("clock", lambda: 0.0)
        return scan.step(self.start, self.each, self.finished, **kw)  # type: ignore[arg-type]


def test_slices_of_at_most_max_files_until_every_root_is_walked() -> None:
    tree, scan = Tree({A: 7, B: 3}), Rescan()
    scan.request([A, B])
    assert scan.active
    assert [tree.step(scan, max_files=4) for _ in range(4)] == [4, 4, 2, 0]
    assert tree.met == tree.files[A] + tree.files[B]
    assert tree.done == [(A, 8), (B, 4)] and not scan.active
    assert tree.step(scan, max_files=4) == 0 and tree.started == [A, B]  # nothing left: nothing started


def test_a_slice_also_ends_when_its_time_is_up() -> None:
    tree, scan = Tree({A: 10}), Rescan()
    ticks = iter(range(100))
    scan.request([A])
    met = tree.step(scan, clock=lambda: float(next(ticks)), max_s=3.0)  # one clock tick per file
    assert met == 3 and scan.active
    assert tree.step(scan, clock=lambda: 0.0) == 7 and tree.done == [(A, 11)]


def test_a_root_asked_for_again_waits_once_and_is_walked_again_when_in_progress() -> None:
    tree, scan = Tree({A: 4, B: 1}), Rescan()
    scan.request([A, B])
    scan.request([B])  # already waiting: not twice
    assert tree.step(scan, max_files=2) == 2
    scan.request([A])  # being walked: what it already met may have changed
    while scan.active:
        tree.step(scan, max_files=2)
    assert tree.started == [A, B, A]
    assert [root for root, _ in tree.done] == [A, B, A]


def test_a_root_that_cannot_be_walked_is_skipped_without_an_end() -> None:
    tree, scan = Tree({A: 2, B: 2}, missing=(A,)), Rescan()
    scan.request([A, B])
    assert tree.step(scan) == 2 and not scan.active
    assert tree.started == [A, B] and tree.done == [(B, 3)]


def test_a_folder_below_a_root_is_walked_with_its_root_and_once_while_waiting() -> None:
    sub = A / "moved-in"
    tree, scan = Tree({A: 1, sub: 3}), Rescan()
    scan.request_folder(sub, A)
    scan.request_folder(sub, A)
    scan.request([A])
    while scan.active:
        tree.step(scan, max_files=2)
    assert tree.started == [sub, A] and [folder for folder, _ in tree.done] == [sub, A]
