"""FileIdentity: which file (device, inode) with which content (size, mtime, hash)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from scribed.identity import FileIdentity


def test_of_stat_and_same_file(tmp_path: Path) -> None:
    rec = tmp_path / "a.wav"
    rec.write_bytes(b"abc")
    st = os.stat(rec)
    ident = FileIdentity.of(st)
    assert (ident.dev, ident.ino, ident.size, ident.mtime_ns, ident.sha256) == (
        st.st_dev, st.st_ino, 3, st.st_mtime_ns, None)
    assert ident.same_file(st) and ident.same_file(FileIdentity.of(os.stat(rec), "f" * 64))  # hash not compared


def test_a_change_or_another_file_is_not_the_same(tmp_path: Path) -> None:
    rec, other = tmp_path / "a.wav", tmp_path / "b.wav"
    rec.write_bytes(b"abc")
    other.write_bytes(b"abc")
    os.utime(other, ns=(os.stat(rec).st_atime_ns, os.stat(rec).st_mtime_ns))
    ident = FileIdentity.of(os.stat(rec))
    assert not ident.same_file(os.stat(other))  # same size and mtime, other inode
    with rec.open("ab") as out:
        out.write(b"d")
    assert not ident.same_file(os.stat(rec))
    replaced = tmp_path / "new.wav"
    replaced.write_bytes(b"abcd")
    os.replace(replaced, rec)
    assert not FileIdentity.of(os.stat(tmp_path / "b.wav")).same_file(os.stat(rec))


def test_with_hash_is_a_new_frozen_value(tmp_path: Path) -> None:
    rec = tmp_path / "a.wav"
    rec.write_bytes(b"abc")
    ident = FileIdentity.of(os.stat(rec))
    hashed = ident.with_hash("0" * 64)
    assert hashed.sha256 == "0" * 64 and ident.sha256 is None
    assert hashed != ident and hashed.same_file(ident)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ident.size = 1  # type: ignore[misc]
    assert {hashed, hashed.with_hash("0" * 64)} == {hashed}  # hashable, equal by value
