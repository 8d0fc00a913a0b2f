"""Tests for scribed.system.files on real files: no-follow folder walks and link()-style atomic
writes that never follow or replace a planted link."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from pychild import run_python

from scribed.errors import OutputTaken
from scribed.identity import FileIdentity
from scribed.system import files

SECRET = b"board meeting: the merger closes on friday. " * 3000  # ~130 kB, more than one page


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------- folders


def test_open_dir_follows_the_root_but_no_link_below_it(tmp_path: Path) -> None:
    real_root, private = tmp_path / "real-inbox", tmp_path / "private"
    (real_root / "team").mkdir(parents=True)
    (private / "team").mkdir(parents=True)
    root = tmp_path / "inbox"
    root.symlink_to(real_root)  # the owner's own link to the inbox is fine
    fd = files.open_dir(root / "team", root=root)
    try:
        assert os.fstat(fd).st_ino == (real_root / "team").stat().st_ino
    finally:
        os.close(fd)
    (real_root / "swapped").symlink_to(private)
    with pytest.raises(OSError) as exc:
        files.open_dir(root / "swapped" / "team", root=root)
    assert exc.value.errno in (errno.ELOOP, errno.ENOTDIR)
    with pytest.raises(ValueError):
        files.open_dir(private, root=root)


def test_open_dir_creates_missing_folders(tmp_path: Path) -> None:
    fd = files.open_dir(tmp_path / "out" / "a" / "b", root=tmp_path / "out", create=True, mode=0o700)
    os.close(fd)
    assert (tmp_path / "out" / "a" / "b").is_dir()
    assert stat.S_IMODE((tmp_path / "out" / "a").stat().st_mode) == 0o700 & ~files.current_umask()


def test_open_dir_without_root_refuses_a_linked_last_folder(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    os.close(files.open_dir(tmp_path / "real"))
    with pytest.raises(OSError):
        files.open_dir(tmp_path / "link")


def test_runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert files.runtime_dir() == tmp_path
    fallback = Path(f"/run/user/{os.getuid()}")
    for bad in ("relative/dir", str(tmp_path / "missing"), ""):
        monkeypatch.setenv("XDG_RUNTIME_DIR", bad)
        assert files.runtime_dir() == (fallback if fallback.is_dir() else None)


def test_fsync_dir_takes_a_path_or_an_fd_and_never_raises(tmp_path: Path) -> None:
    files.fsync_dir(tmp_path)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        files.fsync_dir(fd)
    finally:
        os.close(fd)
    files.fsync_dir(tmp_path / "missing")


def test_current_umask_reads_without_changing_it() -> None:
    proc = run_python("""
        import os
        from scribed.system import files
        os.umask(0o027)
        print(oct(files.current_umask()), oct(files.current_umask()), oct(os.umask(0)))
        """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0o27", "0o27", "0o27"]


# --------------------------------------------------------------------------------- atomic write


def test_write_file_creates_and_reports_the_identity(tmp_path: Path) -> None:
    target = tmp_path / "out" / "a.txt"
    ident = files.write_file(target, b"hello\n", 0o640)
    assert target.read_bytes() == b"hello\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert ident.same_file(target.stat())
    assert _names(target.parent) == ["a.txt"]  # no temporary left


def test_write_file_replaces_only_what_it_may(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    first = files.write_file(target, b"first", 0o600)
    with pytest.raises(OutputTaken, match="did not write"):
        files.write_file(target, b"second", 0o600)  # exists, not declared replaceable
    assert target.read_bytes() == b"first"
    second = files.write_file(target, b"second", 0o600, replaceable=first)
    assert target.read_bytes() == b"second" and second.ino != first.ino
    with pytest.raises(OutputTaken):
        files.write_file(target, b"third", 0o600, replaceable=first)  # first is gone: not that file
    target.write_bytes(b"edited by a person")  # same inode, new content: no longer scribed's
    with pytest.raises(OutputTaken):
        files.write_file(target, b"third", 0o600, replaceable=second)
    files.write_file(target, b"forced", 0o600, overwrite=True)
    assert target.read_bytes() == b"forced"
    assert _names(tmp_path) == ["a.txt"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_symlink_at_the_name_is_never_followed_nor_replaced(tmp_path: Path, overwrite: bool) -> None:
    private = tmp_path / "private.txt"
    private.write_bytes(b"owner's secret")
    link = tmp_path / "inbox" / "x.txt"
    link.parent.mkdir()
    link.symlink_to(private)
    with pytest.raises(OutputTaken, match="symbolic link"):
        files.write_file(link, b"transcript", 0o644, overwrite=overwrite)
    assert link.is_symlink() and private.read_bytes() == b"owner's secret"
    assert _names(link.parent) == ["x.txt"]
    dangling = link.parent / "y.txt"
    dangling.symlink_to(tmp_path / "would-be-created.txt")
    with pytest.raises(OutputTaken):
        files.write_file(dangling, b"transcript", 0o644, overwrite=overwrite)
    assert not (tmp_path / "would-be-created.txt").exists()


def test_a_folder_swapped_for_a_link_is_refused(tmp_path: Path) -> None:
    root, private = tmp_path / "inbox", tmp_path / "home"
    root.mkdir()
    private.mkdir()
    (root / "team").symlink_to(private)
    with pytest.raises(OutputTaken, match="symbolic link"):
        files.write_file(root / "team" / "x.txt", b"text", 0o600, root=root)
    assert list(private.iterdir()) == []


def test_a_folder_at_the_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.txt").mkdir()
    with pytest.raises(OutputTaken, match="not a regular file"):
        files.write_file(tmp_path / "x.txt", b"t", 0o600, overwrite=True)


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(OutputTaken):
        files.write_file(tmp_path / ("n" * 256), b"t", 0o600)
    assert list(tmp_path.iterdir()) == []


def test_replacing_never_writes_into_the_old_file(tmp_path: Path) -> None:
    target, backup = tmp_path / "a.txt", tmp_path / "backup.txt"
    first = files.write_file(target, b"old transcript", 0o600)
    os.link(target, backup)  # someone's backup of the transcript
    files.write_file(target, b"new transcript", 0o600, replaceable=first)
    assert backup.read_bytes() == b"old transcript"
    assert target.read_bytes() == b"new transcript"


@pytest.mark.parametrize("hard_links", [True, False])
def test_place_noreplace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hard_links: bool) -> None:
    """With link(), and on file systems without it (vfat, exfat: check, then rename), the same answers."""
    if not hard_links:
        def no_link(*_args: object, **_kwargs: object) -> None:
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(files.os, "link", no_link)
    (tmp_path / "src").write_bytes(b"a")
    (tmp_path / "taken").write_bytes(b"b")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(FileExistsError):
            files.place_noreplace(fd, "src", fd, "taken")
        other = FileIdentity.of((tmp_path / "taken").stat())
        assert files.place_noreplace(fd, "src", fd, "free", expect=other) is False  # not the expected file
        assert _names(tmp_path) == ["src", "taken"]  # nothing moved (or moved back)
        assert files.place_noreplace(fd, "src", fd, "free") is True
        assert _names(tmp_path) == ["free", "taken"] and (tmp_path / "free").read_bytes() == b"a"
    finally:
        os.close(fd)
    ident = files.write_file(tmp_path / "new.txt", b"text", 0o600)
    assert ident.same_file((tmp_path / "new.txt").stat())
