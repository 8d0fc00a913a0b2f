"""Tests for scribed.system.files on real files: no-follow folder walks, link()-style atomic writes
that never follow or replace a planted link, secure deletion that spares hard-linked copies, and a
stale-temporary wipe that no hostile tree can crash."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from pychild import run_python

from scribed.errors import OutputTaken, ScribedError
from scribed.identity import FileIdentity
from scribed.system import files
from scribed.system.files import secure_delete

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


# ------------------------------------------------------------------------------- secure delete


def test_overwrite_replaces_every_byte(tmp_path: Path) -> None:
    victim = tmp_path / "victim.wav"
    victim.write_bytes(SECRET)
    fd = os.open(victim, os.O_WRONLY)
    try:
        files.overwrite_fd(fd, len(SECRET), passes=1)
        after_random = victim.read_bytes()
        files.overwrite_fd(fd, len(SECRET), passes=2)  # pass 1 random, pass 2 zeros
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
            files.secure_delete_at(fd, "victim.wav", 1, expect=queued)
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
    assert files.wipe_stale_temporaries([inbox, out, tmp_path / "missing"], passes=1) == 3
    assert not any(p.exists() for p in stale)
    assert all(p.read_text() == "someone's file" for p in keep)


def test_wipe_stale_temporaries_overwrites_through_hard_links(tmp_path: Path) -> None:
    stale = tmp_path / ".meeting.txt.scribed-0badc0de.tmp"
    stale.write_bytes(SECRET)
    keep = tmp_path / "hardlink-to-stale"
    os.link(stale, keep)
    assert files.wipe_stale_temporaries([tmp_path], passes=1) == 1
    assert b"merger" not in keep.read_bytes()


def test_wipe_stale_temporaries_never_follows_links(tmp_path: Path) -> None:
    inbox, private = tmp_path / "inbox", tmp_path / "private"
    inbox.mkdir()
    private.mkdir()
    outside = private / ".notes.txt.scribed-12345678.tmp"  # looks like ours, is not below the root
    outside.write_text("owner's file")
    (inbox / "planted").symlink_to(private)
    (inbox / ".x.txt.scribed-87654321.tmp").symlink_to(outside)  # a link named like a temporary
    assert files.wipe_stale_temporaries([inbox], passes=1) == 1  # the link itself goes
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
    assert files.wipe_stale_temporaries([top], passes=1, max_depth=64) == 1  # no RecursionError
    assert not (top / "d" / ".near.txt.scribed-0000ffff.tmp").exists()
    assert files.wipe_stale_temporaries([top], passes=0, max_depth=64) == 0  # the bottom is out of reach
    shallower = deep("shallower", 200)
    assert files.wipe_stale_temporaries([shallower], passes=0, max_depth=200) == 1  # reached, iteratively


def test_wipe_stale_temporaries_survives_an_unlistable_folder(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "locked").mkdir(parents=True)
    (inbox / "locked" / ".x.txt.scribed-0badf00d.tmp").write_text("x")
    (inbox / ".y.txt.scribed-0badf00d.tmp").write_text("y")
    (inbox / "locked").chmod(0)
    try:
        count = files.wipe_stale_temporaries([inbox], passes=1)
    finally:
        (inbox / "locked").chmod(0o700)
    # As root the locked folder is listed anyway; as anyone else it is skipped, never fatal.
    assert count == (2 if os.geteuid() == 0 else 1)
