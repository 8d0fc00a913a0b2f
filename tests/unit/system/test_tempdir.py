"""Tests for scribed.system.tempdir: the private 0700 folder for temporary audio (tmpfs mode)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scribed.errors import ConfigError
from scribed.system.tempdir import PrivateTempDir

SECRET = b"board meeting: the merger closes on friday. " * 3000

def test_private_temp_dir_modes_and_files(tmp_path: Path) -> None:
    base = tmp_path / "private"
    base.mkdir(mode=0o755)
    base.chmod(0o755)
    tmp = PrivateTempDir(base, watched=[tmp_path / "inbox"], passes=1)
    assert tmp.path == base
    assert base.stat().st_mode & 0o777 == 0o700  # tightened even though it existed

    fd, path = tmp.create(".wav")
    try:
        os.write(fd, SECRET)
    finally:
        os.close(fd)
    assert path.parent == base and path.name.startswith("scribed-") and path.suffix == ".wav"
    assert path.stat().st_mode & 0o777 == 0o600
    fd2, path2 = tmp.create(".wav")
    os.close(fd2)
    assert path2 != path

    tmp.remove(path)
    assert not path.exists()
    with pytest.raises(ValueError):
        tmp.remove(tmp_path / "elsewhere.wav")
    with pytest.raises(ValueError):
        tmp.create("/../escape")


def test_private_temp_dir_refuses_watched_folders(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with pytest.raises(ConfigError, match=r"At 'policy.temp_dir'"):
        PrivateTempDir(inbox / "tmp", watched=[inbox], passes=1)
    with pytest.raises(ConfigError, match=r"At 'policy.temp_dir'"):
        PrivateTempDir(inbox, watched=[inbox], passes=1)
    with pytest.raises(ConfigError, match=r"At 'policy.temp_dir'"):
        PrivateTempDir(tmp_path, watched=[inbox], passes=1)  # would contain the inbox
    assert not (inbox / "tmp").exists()


def test_private_temp_dir_wipe_stale_only_touches_its_own_files(tmp_path: Path) -> None:
    tmp = PrivateTempDir(tmp_path / "private", watched=[], passes=1)
    leftovers = []
    for _ in range(3):
        fd, path = tmp.create(".pcm")
        os.write(fd, SECRET)
        os.close(fd)
        leftovers.append(path)
    foreign = tmp.path / "notes.txt"
    foreign.write_text("someone else's file")
    assert tmp.wipe_stale() == 3
    assert not any(p.exists() for p in leftovers)
    assert foreign.read_text() == "someone else's file"
    assert tmp.wipe_stale() == 0


def test_private_temp_dir_default_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    tmp = PrivateTempDir(None, watched=[], passes=0)
    assert tmp.path == tmp_path / "scribed"
    assert tmp.path.stat().st_mode & 0o777 == 0o700

    monkeypatch.delenv("XDG_RUNTIME_DIR")
    if Path(f"/run/user/{os.getuid()}").is_dir():
        pytest.skip("/run/user/<uid> exists here, so there is a fallback")
    with pytest.raises(ConfigError, match=r"At 'policy.temp_dir'.*XDG_RUNTIME_DIR"):
        PrivateTempDir(None, watched=[], passes=0)


def test_wipe_stale_never_writes_through_a_planted_link(tmp_path: Path) -> None:
    tmp = PrivateTempDir(tmp_path / "private", watched=[], passes=1)
    outside = tmp_path / "precious.wav"
    outside.write_bytes(SECRET)
    (tmp.path / "scribed-0000aaaa.pcm").symlink_to(outside)
    assert tmp.wipe_stale() == 1
    assert outside.read_bytes() == SECRET  # the link went, the file it pointed to is untouched
    assert list(tmp.path.iterdir()) == []


def test_a_symlink_as_temp_dir_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(ConfigError, match="not a symlink"):
        PrivateTempDir(tmp_path / "link", watched=[], passes=0)
