"""Tests for scribed.system.shred on real files: secure deletion that spares hard-linked copies
and checks identity, and a stale-temporary wipe that no hostile tree can crash."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scribed.errors import ScribedError
from scribed.identity import FileIdentity
from scribed.system import shred
from scribed.system.shred import secure_delete

SECRET = b"board meeting: the merger closes on friday. " * 3000  # ~130 kB, more than one page


# ------------------------------------------------------------------------------- secure delete


def test_overwrite_replaces_every_byte(tmp_path: Path) -> None:
    victim = tmp_path / "victim.wav"
    victim.write_bytes(SECRET)
    fd = os.open(victim, os.O_WRONLY)
    try:
        shred.overwrite_fd(fd, len(SECRET), passes=1)
        after_random = victim.read_bytes()
        shred.overwrite_fd(fd, len(SECRET), passes=2)  # pass 1 random, pass 2 zeros
        after_zeros = victim.read_bytes()
    finally:
        os.close(fd)
    assert len(after_random) == len(SECRET)
    assert b"merger" not in after_random
    assert sum(a == b for a, b in zip(after_random, SECRET, strict=True)) < len(SECRET) // 50
    assert after_zeros == bytes(len(SECRET))


def test_secure_delete_wipes_the_content(tmp_path: Path) -> None:
    victim = tmp_path / "victim.wav"
    victim.write_bytes(SECRET)
    fd = os.open(victim, os.O_RDONLY)  # an open descriptor still sees the inode after unlink
    try:
        assert secure_delete(victim, passes=2) is True
        assert not victim.exists()
        assert os.fstat(fd).st_size == 0
    finally:
        os.close(fd)


def test_a_hard_linked_file_is_unlinked_but_never_overwritten(tmp_path: Path) -> None:
    victim, backup = tmp_path / "victim.wav", tmp_path / "backup" / "victim.wav"
    victim.write_bytes(SECRET)
    backup.parent.mkdir()
    os.link(victim, backup)  # cp -al / rsnapshot style backup
    assert secure_delete(victim, passes=3, hardlinked="unlink") is True
    assert not victim.exists()
    assert backup.read_bytes() == SECRET  # the backup's copy survives intact


def test_scribed_own_files_are_overwritten_even_through_a_link(tmp_path: Path) -> None:
    """A temporary scribed wrote holds transcript text: a link someone made must not keep it."""
    temp, grabbed = tmp_path / ".a.txt.scribed-0badc0de.tmp", tmp_path / "grabbed"
    temp.write_bytes(SECRET)
    os.link(temp, grabbed)
    assert secure_delete(temp, passes=1) is True
    assert not temp.exists()
    assert b"merger" not in grabbed.read_bytes() and grabbed.stat().st_size == 0


def test_a_hard_linked_file_can_be_refused(tmp_path: Path) -> None:
    victim, backup = tmp_path / "victim.wav", tmp_path / "backup.wav"
    victim.write_bytes(SECRET)
    os.link(victim, backup)
    with pytest.raises(ScribedError, match="hard link"):
        secure_delete(victim, passes=1, hardlinked="refuse")
    assert victim.read_bytes() == SECRET and backup.read_bytes() == SECRET


def test_secure_delete_zero_passes_is_a_plain_unlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim.wav"
    victim.write_bytes(SECRET)
    fd = os.open(victim, os.O_RDONLY)
    try:
        secure_delete(victim, passes=0)
        assert not victim.exists()
        assert os.pread(fd, 100, 0) == SECRET[:100]
    finally:
        os.close(fd)


def test_secure_delete_checks_the_expected_identity(tmp_path: Path) -> None:
    victim = tmp_path / "victim.wav"
    victim.write_bytes(SECRET)
    queued = FileIdentity.of(victim.stat())
    victim.unlink()
    victim.write_bytes(b"a different recording, same name")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(ScribedError, match="not the file"):
            shred.secure_delete_at(fd, "victim.wav", 1, expect=queued)
    finally:
        os.close(fd)
    assert victim.read_bytes() == b"a different recording, same name"


def test_secure_delete_edge_cases(tmp_path: Path) -> None:
    assert secure_delete(tmp_path / "missing.wav", passes=3) is False
    assert secure_delete(tmp_path / "no-folder" / "missing.wav", passes=3) is False

    target = tmp_path / "other.txt"
    target.write_bytes(b"not ours to wipe")
    symlink = tmp_path / "symlink.wav"
    symlink.symlink_to(target)
    secure_delete(symlink, passes=1)
    assert not symlink.exists() and not symlink.is_symlink()
    assert target.read_bytes() == b"not ours to wipe"

    readonly = tmp_path / "readonly.wav"
    readonly.write_bytes(SECRET)
    readonly.chmod(0o400)
    secure_delete(readonly, passes=1)
    assert not readonly.exists()

    fifo = tmp_path / "fifo.wav"
    os.mkfifo(fifo)
    secure_delete(fifo, passes=1)  # unlinked, never opened (opening would block)
    assert not os.path.lexists(fifo)

    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError):
        secure_delete(tmp_path / "folder", passes=1)


# ---------------------------------------------------------------------------- stale temporaries


def _deep_tree(top: Path, levels: int) -> None:
    """``top/d/d/.../d`` ``levels`` deep, built through fds (a path that long defeats os.makedirs)."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(levels):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        leaf = os.open(".bottom.txt.scribed-00000000.tmp", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd)
        os.write(leaf, b"transcript text")
        os.close(leaf)
    finally:
        os.close(fd)


def test_wipe_stale_temporaries_removes_only_scribed_temporaries(tmp_path: Path) -> None:
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    (inbox / "team").mkdir(parents=True)
    out.mkdir()
    stale = [inbox / ".a.txt.scribed-1a2b3c4d.tmp", inbox / "team" / ".b.json.scribed-00ff00ff.tmp",
             out / ".c.txt.scribed-deadbeef.tmp"]
    for path in stale:
        path.write_text("half a transcript")
    keep = [inbox / "a.m4a", inbox / "team" / "b.txt", inbox / "a.txt.scribed-1a2b3c4d.tmp"]
    for path in keep:
        path.write_text("someone's file")
    assert shred.wipe_stale_temporaries([inbox, out, tmp_path / "missing"], passes=1) == 3
    assert not any(p.exists() for p in stale)
    assert all(p.read_text() == "someone's file" for p in keep)


def test_wipe_stale_temporaries_overwrites_through_hard_links(tmp_path: Path) -> None:
    stale = tmp_path / ".meeting.txt.scribed-0badc0de.tmp"
    stale.write_bytes(SECRET)
    keep = tmp_path / "hardlink-to-stale"
    os.link(stale, keep)
    assert shred.wipe_stale_temporaries([tmp_path], passes=1) == 1
    assert b"merger" not in keep.read_bytes()


def test_wipe_stale_temporaries_never_follows_links(tmp_path: Path) -> None:
    inbox, private = tmp_path / "inbox", tmp_path / "private"
    inbox.mkdir()
    private.mkdir()
    outside = private / ".notes.txt.scribed-12345678.tmp"  # looks like ours, is not below the root
    outside.write_text("owner's file")
    (inbox / "planted").symlink_to(private)
    (inbox / ".x.txt.scribed-87654321.tmp").symlink_to(outside)  # a link named like a temporary
    assert shred.wipe_stale_temporaries([inbox], passes=1) == 1  # the link itself goes
    assert outside.read_text() == "owner's file"
    assert (inbox / "planted").is_symlink()


def _remove_chain(top: Path) -> None:
    """Remove a tree made by :func:`_deep_tree` bottom-up (shutil.rmtree would recurse 1000 deep)."""
    fds = [os.open(top, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        while True:
            try:
                fds.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
            except FileNotFoundError:
                break
        for fd in reversed(fds):
            for name in os.listdir(fd):
                if name == "d":
                    os.rmdir(name, dir_fd=fd)
                else:
                    os.unlink(name, dir_fd=fd)
    finally:
        for fd in fds:
            os.close(fd)


@pytest.fixture()
def deep(tmp_path: Path):
    made: list[Path] = []

    def make(name: str, levels: int) -> Path:
        made.append(tmp_path / name)
        _deep_tree(tmp_path / name, levels)
        return tmp_path / name

    yield make
    for top in made:
        _remove_chain(top)


def test_a_thousand_level_tree_cannot_stop_start_up(tmp_path: Path, deep) -> None:
    top = deep("inbox", 1000)
    (top / "d" / ".near.txt.scribed-0000ffff.tmp").write_text("x")
    assert shred.wipe_stale_temporaries([top], passes=1, max_depth=64) == 1  # no RecursionError
    assert not (top / "d" / ".near.txt.scribed-0000ffff.tmp").exists()
    assert shred.wipe_stale_temporaries([top], passes=0, max_depth=64) == 0  # the bottom is out of reach
    shallower = deep("shallower", 200)
    assert shred.wipe_stale_temporaries([shallower], passes=0, max_depth=200) == 1  # reached, iteratively


def test_wipe_stale_temporaries_survives_an_unlistable_folder(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "locked").mkdir(parents=True)
    (inbox / "locked" / ".x.txt.scribed-0badf00d.tmp").write_text("x")
    (inbox / ".y.txt.scribed-0badf00d.tmp").write_text("y")
    (inbox / "locked").chmod(0)
    try:
        count = shred.wipe_stale_temporaries([inbox], passes=1)
    finally:
        (inbox / "locked").chmod(0o700)
    # As root the locked folder is listed anyway; as anyone else it is skipped, never fatal.
    assert count == (2 if os.geteuid() == 0 else 1)
