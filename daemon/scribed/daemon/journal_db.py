"""The journal's storage: its SQLite schema and migration, its files' mode, and how names are stored.

Contract:
- :func:`connect` opens (creating or migrating in place) the database for writing: WAL,
  ``synchronous=FULL`` (a "done" survives a power cut), columns added since the first release
  (:data:`COLUMNS`) added by ALTER TABLE; the database and its -wal/-shm files are 0600 whatever
  the umask or an existing state folder, and a symlink at the database's name is refused.
  :func:`connect_readonly` opens it read-only.
- Any name the file system accepts is stored: :func:`encode_path` keeps a valid UTF-8 name as
  is and stores any other (or one that starts with :data:`BYTES_MARK`) as the mark plus hex of
  its bytes; :func:`decode_path` gives the exact path back. :func:`shown` is a path for people.
Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    root TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    audio_s REAL,
    outputs TEXT,
    language TEXT,
    queued_at REAL,
    started_at REAL,
    finished_at REAL,
    progress_done INTEGER NOT NULL DEFAULT 0,
    progress_total INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Columns added after the first release: an existing journal gets them by ALTER TABLE.
COLUMNS = {
    "dev": "INTEGER",
    "failure_note": "TEXT",
    "written": "TEXT",
    "changed": "INTEGER NOT NULL DEFAULT 0",
    "transient": "INTEGER NOT NULL DEFAULT 0",
    "transient_since": "REAL",
    "retry_at": "REAL",
}
INDEXES = """
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, queued_at);
CREATE INDEX IF NOT EXISTS jobs_inode ON jobs(inode);
CREATE INDEX IF NOT EXISTS jobs_sha256 ON jobs(sha256);
"""

BYTES_MARK = "bytes:"


def encode_path(path: Path | str) -> str:
    """Text for ``path`` that SQLite can store and :func:`decode_path` turns back into it exactly.

    A name that is valid UTF-8 is stored as is; any other (invalid bytes, decoded by Python as
    surrogates), or one that happens to start with the mark, as the mark plus hex of its bytes.
    """
    raw = os.fsencode(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or text.startswith(BYTES_MARK):
        return BYTES_MARK + raw.hex()
    return text


def decode_path(text: str) -> Path:
    if text.startswith(BYTES_MARK):
        return Path(os.fsdecode(bytes.fromhex(text[len(BYTES_MARK):])))
    return Path(text)


def shown(path: Path | str) -> str:
    """``path`` for people (terminals, status lines): undecodable bytes as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def connect_readonly(path: Path) -> sqlite3.Connection:
    """Open the journal for reading only (``scribed status`` beside a running daemon)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5, isolation_level=None)


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating or migrating) the journal for writing; its files are 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _private_file(path)  # SQLite gives its -wal/-shm files the database's mode
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # "done" must survive a power cut
    db.executescript(SCHEMA)
    have = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    for name, decl in COLUMNS.items():
        if name not in have:
            db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")
    db.executescript(INDEXES)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{path}{suffix}", 0o600)
    return db


def _private_file(path: Path) -> None:
    """Create ``path`` 0600 if missing; make it 0600 if it exists (an older journal, a wide umask)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
