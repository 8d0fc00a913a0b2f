"""Outputs: names and atomic writes (rendering is tested in tests/unit/engine/test_render.py).

Written as a hostile co-writer of a shared folder would try it: planted links at output names,
files scribed did not write, folders swapped for links, names at the 255-byte limit, names that
are not UTF-8, and a umask stricter than the recording's mode.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from scribed import output
from scribed.errors import OutputTaken
from scribed.identity import FileIdentity


@pytest.fixture()
def umask() -> Iterator[None]:
    """Run the test under the unit's UMask=0077, restoring the previous one afterwards."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_copies_mode_and_leaves_no_temp(tmp_path: Path) -> None:
    src = tmp_path / "a.wav"
    src.write_bytes(b"x")
    os.chmod(src, 0o640)
    target = tmp_path / "a.txt"
    old = os.umask(0o022)
    try:
        ident = output.atomic_write(target, "héllo\n", mode_from=src)
    finally:
        os.umask(old)
    assert target.read_text() == "héllo\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert ident.same_file(target.stat())
    assert _names(tmp_path) == ["a.txt", "a.wav"]


def test_outputs_are_never_more_readable_than_the_umask_allows(tmp_path: Path, umask: None) -> None:
    src = tmp_path / "a.wav"
    src.write_bytes(b"x")
    os.chmod(src, 0o644)
    output.atomic_write(tmp_path / "a.txt", "text", mode_from=src)
    output.write_failure(tmp_path / "a.failed.txt", src, "bad")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "a.failed.txt").stat().st_mode) == 0o600


def test_output_mode_rule(tmp_path: Path, umask: None) -> None:
    assert output.output_mode(0o100640) == 0o600
    assert output.output_mode(0o100400) == 0o400  # never more readable than the recording
    assert output.output_mode(0o100755) == 0o600  # and never executable
    assert output.output_mode(None) == 0o600
    (tmp_path / "link.wav").symlink_to("/etc/hostname")
    assert output.output_mode(tmp_path / "link.wav") == 0o600  # a link's 0777 is not the recording's
    assert output.output_mode(tmp_path / "missing.wav") == 0o600
    os.umask(0o022)
    assert output.output_mode(0o100644) == 0o644 and output.output_mode(0o100600) == 0o600


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("name", ["x.txt", "x.failed.txt"])
def test_a_planted_link_at_an_output_name_is_never_followed_or_replaced(
    tmp_path: Path, name: str, overwrite: bool
) -> None:
    private = tmp_path / "home" / "diary.txt"
    private.parent.mkdir()
    private.write_text("owner's diary")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / name).symlink_to(private)
    src = inbox / "x.wav"
    src.write_bytes(b"audio")
    with pytest.raises(OutputTaken, match="symbolic link"):
        if name.endswith(".failed.txt"):
            output.write_failure(inbox / name, src, "bad", overwrite=overwrite)
        else:
            output.atomic_write(inbox / name, "transcript", mode_from=src, overwrite=overwrite)
    assert (inbox / name).is_symlink()
    assert private.read_text() == "owner's diary"
    assert _names(inbox) == sorted([name, "x.wav"])


def test_a_file_scribed_did_not_write_is_not_replaced(tmp_path: Path) -> None:
    note = tmp_path / "good.failed.txt"
    note.write_text("someone's own notes")
    with pytest.raises(OutputTaken, match="did not write"):
        output.write_failure(note, tmp_path / "good.wav", "bad")
    assert note.read_text() == "someone's own notes"
    ours = output.write_failure(tmp_path / "mine.failed.txt", tmp_path / "mine.wav", "first")
    again = output.write_failure(tmp_path / "mine.failed.txt", tmp_path / "mine.wav", "second", replaceable=ours)
    assert "second" in (tmp_path / "mine.failed.txt").read_text() and again != ours


def test_remove_output_removes_only_what_scribed_wrote(tmp_path: Path) -> None:
    ours = output.write_failure(tmp_path / "a.failed.txt", tmp_path / "a.wav", "bad")
    foreign = tmp_path / "b.failed.txt"
    foreign.write_text("not scribed's")
    stranger = FileIdentity.of(foreign.stat())
    assert output.remove_output(tmp_path / "a.failed.txt", ours) is True
    assert not (tmp_path / "a.failed.txt").exists()
    assert output.remove_output(foreign, ours) is False  # another file: left alone
    (tmp_path / "c.failed.txt").symlink_to(foreign)
    assert output.remove_output(tmp_path / "c.failed.txt", stranger) is False  # a link is not the file
    assert foreign.read_text() == "not scribed's" and (tmp_path / "c.failed.txt").is_symlink()
    assert output.remove_output(tmp_path / "gone.failed.txt", ours) is False


def test_a_folder_swapped_for_a_link_below_the_root_is_refused(tmp_path: Path) -> None:
    inbox, home = tmp_path / "inbox", tmp_path / "home"
    inbox.mkdir()
    (home / "team").mkdir(parents=True)
    (inbox / "team").symlink_to(home / "team")
    with pytest.raises(OutputTaken):
        output.atomic_write(inbox / "team" / "q3.txt", "transcript", root=inbox)
    assert list((home / "team").iterdir()) == []


def test_a_250_byte_recording_name_works(tmp_path: Path) -> None:
    src = tmp_path / ("m" * 246 + ".m4a")  # 250 bytes: the old temporary name was 273
    src.write_bytes(b"audio")
    paths = output.output_paths(src, ["txt", "json", "srt"])
    for path in paths.values():
        output.atomic_write(path, "text", mode_from=src)
        assert path.read_text() == "text"
    assert paths["txt"].name == "m" * 246 + ".txt"  # fits: unchanged
    note = output.failure_path(src)
    assert len(os.fsencode(note.name)) <= 255 and note.name.endswith(".failed.txt")
    output.write_failure(note, src, "bad")
    assert note.read_text().startswith("scribed could not transcribe")
    assert not any(output.is_scribed_temp(n) for n in _names(tmp_path))


def test_an_over_long_final_name_is_cut_keeping_the_extension(tmp_path: Path) -> None:
    twin_a, twin_b = tmp_path / ("é" * 123 + ".mp3"), tmp_path / ("é" * 123 + ".flac")
    twin_a.write_bytes(b"a")
    twin_b.write_bytes(b"b")  # twins: transcripts are named after the full file name
    a, b = output.output_paths(twin_a, ["json"])["json"], output.output_paths(twin_b, ["json"])["json"]
    assert a != b
    for path in (a, b):
        assert len(os.fsencode(path.name)) <= 255 and path.name.endswith(".json")
        os.fsencode(path.name).decode("utf-8")  # cut on a character boundary
        output.atomic_write(path, "{}")
    assert output.output_paths(twin_a, ["json"])["json"] == a  # the same name every time


def test_a_name_that_is_not_utf8_gets_a_failure_note(tmp_path: Path) -> None:
    src = tmp_path / os.fsdecode(b"caf\xe9 meeting.wav")  # Latin-1 bytes from an old sync client
    src.write_bytes(b"audio")
    note = output.failure_path(src)
    output.write_failure(note, src, "cannot read audio")
    text = note.read_bytes().decode("utf-8")  # valid UTF-8, the odd byte escaped
    assert "caf\\udce9 meeting.wav" in text


def test_output_paths_and_temp_names(tmp_path: Path) -> None:
    src = tmp_path / "inbox" / "proj" / "m.m4a"
    assert output.output_paths(src, ["txt", "json"]) == {"txt": src.with_suffix(".txt"),
                                                         "json": src.with_suffix(".json")}
    out = output.output_paths(src, ["txt"], tmp_path / "out", tmp_path / "inbox")
    assert out["txt"] == tmp_path / "out" / "proj" / "m.txt"
    assert output.failure_path(src) == src.with_name("m.failed.txt")
    assert output.failure_path(src, tmp_path / "out", tmp_path / "inbox") == tmp_path / "out" / "proj" / "m.failed.txt"
    assert output.is_scribed_temp(".m.txt.scribed-1a2b3c4d.tmp")
    assert not output.is_scribed_temp("m.txt")
