"""Tests for scribed.system.retention on real files: keep, archive and delete act only on the
recording that was transcribed, through its folder reached without following links, and never
destroy another hard link's copy."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from pychild import run_python

from scribed.errors import ScribedError
from scribed.identity import FileIdentity
from scribed.system import retention
from scribed.system.retention import apply_source_after

SECRET = b"board meeting: the merger closes on friday. " * 3000
PRIVATE = b"the owner's private recording"


def test_strategies_table() -> None:
    assert tuple(retention.STRATEGIES) == ("keep", "archive", "delete")
    assert all(s.name == name and s.summary for name, s in retention.STRATEGIES.items())
    assert retention.STRATEGIES["keep"].act is None
    assert retention.HARDLINKED == ("unlink", "refuse")


def test_importing_retention_stays_light() -> None:
    proc = run_python("""
        import sys
        import scribed.system.retention
        print(*(m in sys.modules for m in ("scribed.config", "yaml", "numpy", "torch")))
        """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False"] * 4


def test_unknown_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="source_after"):
        apply_source_after(tmp_path / "a.wav", tmp_path / "a.txt", "shred", archive_dir=None, watch_root=tmp_path,
                           passes=1)
    with pytest.raises(ValueError, match="hardlinked"):
        apply_source_after(tmp_path / "a.wav", tmp_path / "a.txt", "delete", archive_dir=None, watch_root=tmp_path,
                           passes=1, hardlinked="maybe")


@pytest.fixture()
def recording(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(watch root, recording in a subfolder, its transcript)."""
    root = tmp_path / "inbox"
    (root / "board").mkdir(parents=True)
    source = root / "board" / "q3 meeting.wav"
    source.write_bytes(SECRET)
    transcript = source.with_suffix(".txt")
    transcript.write_text("Chair: the merger closes on Friday.\n")
    return root, source, transcript


def test_keep_touches_nothing(recording: tuple[Path, Path, Path]) -> None:
    root, source, transcript = recording
    transcript.unlink()  # keep does not even need a transcript
    assert apply_source_after(source, transcript, "keep", archive_dir=None, watch_root=root, passes=1) is None
    assert source.read_bytes() == SECRET


@pytest.mark.parametrize("action", ["delete", "archive"])
@pytest.mark.parametrize("problem", ["missing", "empty", "directory", "same-file"])
def test_no_transcript_no_removal(
    recording: tuple[Path, Path, Path], tmp_path: Path, action: str, problem: str
) -> None:
    root, source, transcript = recording
    if problem == "missing":
        transcript.unlink()
    elif problem == "empty":
        transcript.write_text("")
    elif problem == "directory":
        transcript.unlink()
        transcript.mkdir()
    else:
        transcript = source
    archive = tmp_path / "archive"
    with pytest.raises(ScribedError):
        apply_source_after(source, transcript, action, archive_dir=archive, watch_root=root, passes=1)
    assert source.read_bytes() == SECRET
    assert not archive.exists()


def test_delete_wipes_the_recording(recording: tuple[Path, Path, Path]) -> None:
    root, source, transcript = recording
    fd = os.open(source, os.O_RDONLY)  # still sees the inode after the unlink
    try:
        assert apply_source_after(source, transcript, "delete", archive_dir=None, watch_root=root, passes=1,
                                  identity=FileIdentity.of(source.stat())) is None
        assert not source.exists()
        assert os.fstat(fd).st_size == 0 and b"merger" not in os.pread(fd, len(SECRET), 0)
    finally:
        os.close(fd)
    assert transcript.exists()


def test_archive_keeps_the_tree_and_never_overwrites(recording: tuple[Path, Path, Path], tmp_path: Path) -> None:
    root, source, transcript = recording
    archive = tmp_path / "archive"
    first = apply_source_after(source, transcript, "archive", archive_dir=archive, watch_root=root, passes=1)
    assert first == archive / "board" / "q3 meeting.wav"
    assert first.read_bytes() == SECRET and not source.exists()

    source.write_bytes(b"second recording with the same name")
    second = apply_source_after(source, transcript, "archive", archive_dir=archive, watch_root=root, passes=1)
    assert second == archive / "board" / "q3 meeting (2).wav"
    assert second.read_bytes() == b"second recording with the same name"
    assert first.read_bytes() == SECRET

    source.write_bytes(b"third")
    third = apply_source_after(source, transcript, "archive", archive_dir=archive, watch_root=root, passes=1)
    assert third == archive / "board" / "q3 meeting (3).wav"


def test_archive_needs_an_archive_dir(recording: tuple[Path, Path, Path]) -> None:
    root, source, transcript = recording
    with pytest.raises(ScribedError, match="archive_dir"):
        apply_source_after(source, transcript, "archive", archive_dir=None, watch_root=root, passes=1)
    assert source.exists()


def test_archive_across_file_systems(recording: tuple[Path, Path, Path]) -> None:
    root, source, transcript = recording
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK) or shm.stat().st_dev == source.stat().st_dev:
        pytest.skip("needs /dev/shm on a different file system than tmp_path")
    archive = shm / f"scribed-test-archive-{os.getpid()}"
    try:
        moved = apply_source_after(source, transcript, "archive", archive_dir=archive, watch_root=root, passes=1)
        assert moved == archive / "board" / "q3 meeting.wav"
        assert moved.read_bytes() == SECRET
        assert not source.exists()
        assert [p.name for p in moved.parent.iterdir()] == ["q3 meeting.wav"]  # no partial file left
    finally:
        shutil.rmtree(archive, ignore_errors=True)


# ------------------------------------------------------------------------------ hostile writers


@pytest.fixture()
def private_home(tmp_path: Path) -> Path:
    """The owner's private folder, holding a file at the very path the swapped folder leads to."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "q3 meeting.wav").write_bytes(PRIVATE)
    (home / "q3 meeting.txt").write_text("owner's notes")
    return home


@pytest.mark.parametrize("action", ["delete", "archive"])
@pytest.mark.parametrize("with_identity", [True, False])
def test_a_folder_swapped_for_a_link_cannot_redirect_retention(
    recording: tuple[Path, Path, Path], tmp_path: Path, private_home: Path, action: str, with_identity: bool
) -> None:
    root, source, _transcript = recording
    queued = FileIdentity.of(source.stat())
    board = root / "board"
    board.rename(root / "board.moved")  # another writer swaps the folder for a link, mid-job
    board.symlink_to(private_home)
    archive = tmp_path / "archive"
    with pytest.raises(ScribedError):
        apply_source_after(source, private_home / "q3 meeting.txt", action, archive_dir=archive, watch_root=root,
                           passes=1, identity=queued if with_identity else None)
    assert (private_home / "q3 meeting.wav").read_bytes() == PRIVATE
    assert sorted(p.name for p in private_home.iterdir()) == ["q3 meeting.txt", "q3 meeting.wav"]
    assert not archive.exists() or not any(archive.rglob("*.wav"))


@pytest.mark.parametrize("action", ["delete", "archive"])
def test_a_recording_replaced_after_it_was_queued_is_left_alone(
    recording: tuple[Path, Path, Path], tmp_path: Path, action: str
) -> None:
    root, source, transcript = recording
    queued = FileIdentity.of(source.stat())
    source.unlink()
    source.write_bytes(b"a newer recording under the same name")
    with pytest.raises(ScribedError, match="not the recording"):
        apply_source_after(source, transcript, action, archive_dir=tmp_path / "archive", watch_root=root, passes=1,
                           identity=queued)
    assert source.read_bytes() == b"a newer recording under the same name"


def test_a_symlinked_recording_is_never_acted_on(recording: tuple[Path, Path, Path], private_home: Path) -> None:
    root, source, transcript = recording
    source.unlink()
    source.symlink_to(private_home / "q3 meeting.wav")
    with pytest.raises(ScribedError, match="regular file"):
        apply_source_after(source, transcript, "delete", archive_dir=None, watch_root=root, passes=1)
    assert (private_home / "q3 meeting.wav").read_bytes() == PRIVATE


def test_a_recording_outside_the_watch_root_is_refused(tmp_path: Path, private_home: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with pytest.raises(ScribedError, match="not inside"):
        apply_source_after(private_home / "q3 meeting.wav", private_home / "q3 meeting.txt", "delete",
                           archive_dir=None, watch_root=inbox, passes=1)
    assert (private_home / "q3 meeting.wav").read_bytes() == PRIVATE


def test_delete_spares_a_hard_linked_backup(recording: tuple[Path, Path, Path], tmp_path: Path) -> None:
    root, source, transcript = recording
    backup = tmp_path / "backup" / "q3 meeting.wav"
    backup.parent.mkdir()
    os.link(source, backup)  # rsnapshot / cp -al
    apply_source_after(source, transcript, "delete", archive_dir=None, watch_root=root, passes=2,
                       identity=FileIdentity.of(source.stat()))
    assert not source.exists()
    assert backup.read_bytes() == SECRET


def test_delete_can_refuse_a_hard_linked_recording(recording: tuple[Path, Path, Path], tmp_path: Path) -> None:
    root, source, transcript = recording
    os.link(source, tmp_path / "backup.wav")
    with pytest.raises(ScribedError, match="hard link"):
        apply_source_after(source, transcript, "delete", archive_dir=None, watch_root=root, passes=1,
                           hardlinked="refuse")
    assert source.read_bytes() == SECRET


def test_archive_of_a_hard_linked_recording_keeps_both(recording: tuple[Path, Path, Path], tmp_path: Path) -> None:
    root, source, transcript = recording
    backup = tmp_path / "backup.wav"
    os.link(source, backup)
    moved = apply_source_after(source, transcript, "archive", archive_dir=tmp_path / "archive", watch_root=root,
                               passes=1, hardlinked="refuse")  # moving destroys nothing, so no refusal
    assert moved is not None and moved.read_bytes() == SECRET and backup.read_bytes() == SECRET


def test_archive_names_stay_within_name_max(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    name = "é" * 123 + "x.wav"  # 251 bytes: "name (2).wav" would not fit
    archive = tmp_path / "archive"
    moved = []
    for content in (b"first", b"second"):
        source = root / name
        source.write_bytes(content)
        transcript = root / "t.txt"
        transcript.write_text("text")
        moved.append(apply_source_after(source, transcript, "archive", archive_dir=archive, watch_root=root,
                                        passes=0))
    assert moved[0] == archive / name and moved[0].read_bytes() == b"first"
    assert moved[1] is not None and moved[1].read_bytes() == b"second"
    assert len(os.fsencode(moved[1].name)) <= 255 and moved[1].name.endswith(".wav")
