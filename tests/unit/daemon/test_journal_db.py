"""The journal's storage layer on real SQLite files: names stored exactly, migration in place,
private files, read-only opening."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from scribed.daemon.journal_db import (
    BYTES_MARK,
    COLUMNS,
    connect,
    connect_readonly,
    decode_path,
    encode_path,
    shown,
)


@pytest.mark.parametrize("raw", [b"/in/plain.wav", "/in/会议 粤语.flac".encode(), b"/in/r\xff\xfe.wav",
                                 BYTES_MARK.encode() + b"x.wav", b"/in/" + BYTES_MARK.encode() + b"y.wav"])
def test_every_name_round_trips_exactly(raw: bytes) -> None:
    path = Path(os.fsdecode(raw))
    text = encode_path(path)
    text.encode("utf-8")  # storable: no lone surrogates
    assert decode_path(text) == path
    assert os.fsencode(decode_path(text)) == raw


def test_valid_utf8_is_stored_as_is_and_only_the_rest_as_hex() -> None:
    assert encode_path("/in/会议.wav") == "/in/会议.wav"
    assert encode_path(os.fsdecode(b"/in/\xff.wav")) == BYTES_MARK + b"/in/\xff.wav".hex()
    # a real name that looks like the escape is escaped itself, so it cannot be misread
    assert encode_path(BYTES_MARK + "6869") == BYTES_MARK + (BYTES_MARK + "6869").encode().hex()
    assert shown(os.fsdecode(b"/in/\xff.wav")) == "/in/\\xff.wav"


def test_connect_creates_a_private_database_and_migrates_an_old_one(tmp_path: Path) -> None:
    path = tmp_path / "state" / "journal.sqlite3"
    path.parent.mkdir()
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, root TEXT NOT NULL,"
                " size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, sha256 TEXT NOT NULL,"
                " state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, audio_s REAL,"
                " outputs TEXT, language TEXT, queued_at REAL, started_at REAL, finished_at REAL,"
                " progress_done INTEGER NOT NULL DEFAULT 0, progress_total INTEGER NOT NULL DEFAULT 0)")
    old.commit()
    old.close()
    os.chmod(path, 0o644)
    for _ in range(2):  # migrating twice adds nothing twice
        db = connect(path)
        have = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
        assert set(COLUMNS) <= have
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.close()
    for name in os.listdir(path.parent):
        assert stat.S_IMODE(os.stat(path.parent / name).st_mode) == 0o600, name


def test_connect_refuses_a_symlink_at_the_database_name(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.sqlite3"
    elsewhere.write_bytes(b"")
    os.chmod(elsewhere, 0o644)
    link = tmp_path / "journal.sqlite3"
    link.symlink_to(elsewhere)
    with pytest.raises(OSError):
        connect(link)
    assert stat.S_IMODE(os.stat(elsewhere).st_mode) == 0o644 and elsewhere.read_bytes() == b""


def test_connect_readonly_reads_but_never_writes(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    connect(path).close()
    ro = connect_readonly(path)
    assert ro.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0
    with pytest.raises(sqlite3.OperationalError):
        ro.execute("INSERT INTO meta (key, value) VALUES ('k', 'v')")
    ro.close()
    with pytest.raises(sqlite3.OperationalError):
        connect_readonly(tmp_path / "missing.sqlite3").execute("SELECT 1 FROM jobs")
