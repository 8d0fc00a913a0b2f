"""The journal: one SQLite database (WAL) that makes "every recording exactly once" true across crashes.

Contract:
- A recording's identity is (path, size, mtime, inode, sha256). :meth:`Journal.offer` decides
  what a newly seen/settled file means: new -> queued; same identity -> nothing; content changed
  -> queued again; same content touched -> nothing.
- States: queued -> working -> done | failed (| queued again while attempts remain) | gone (the
  file disappeared) | skipped (a transcript we did not write already exists).
- Done is written only after the transcript is on disk (the caller's order). On start,
  :meth:`recover` turns jobs left ``working`` by a crash back into queued ones.
- Safe to read from another process (``scribed status``) while the daemon writes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, queued_at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

STATES = ("queued", "working", "done", "failed", "gone", "skipped")


@dataclass(frozen=True)
class Job:
    id: int
    path: Path
    root: Path
    state: str
    attempts: int
    last_error: str | None
    audio_s: float | None
    started_at: float | None
    finished_at: float | None
    progress_done: int
    progress_total: int


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class Journal:
    """The daemon's state. One writer (the daemon's main thread); any number of readers."""

    def __init__(self, path: Path, *, readonly: bool = False, wall_clock=time.time) -> None:
        self.path = path
        self._now = wall_clock
        if readonly:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5, isolation_level=None)
        else:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")  # "done" must survive a power cut
            self.db.executescript(SCHEMA)
        self.db.row_factory = sqlite3.Row

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- intake ------------------------------------------------------------------------------------
    def offer(self, path: Path, root: Path, *, transcript_exists: bool = False, overwrite: bool = False,
              audio_s: float | None = None) -> str:
        """Register a settled file. Returns "queued", "requeued", "known", "skipped" or "vanished"."""
        try:
            st = path.stat()
            digest = None
            row = self.db.execute("SELECT * FROM jobs WHERE path=?", (str(path),)).fetchone()
            if row and (row["size"], row["mtime_ns"], row["inode"]) == (st.st_size, st.st_mtime_ns, st.st_ino):
                return "known"
            digest = file_sha256(path)
        except FileNotFoundError:
            return "vanished"
        now = self._now()
        with self._tx() as db:
            if row is None:
                state = "skipped" if transcript_exists and not overwrite else "queued"
                error = "a transcript scribed did not write already exists" if state == "skipped" else None
                db.execute(
                    "INSERT INTO jobs (path, root, size, mtime_ns, inode, sha256, state, last_error, audio_s,"
                    " queued_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (str(path), str(root), st.st_size, st.st_mtime_ns, st.st_ino, digest, state, error, audio_s, now))
                return state
            db.execute("UPDATE jobs SET size=?, mtime_ns=?, inode=? WHERE id=?",
                       (st.st_size, st.st_mtime_ns, st.st_ino, row["id"]))
            if digest == row["sha256"] and row["state"] != "gone":
                return "known"
            db.execute(
                "UPDATE jobs SET sha256=?, state='queued', attempts=0, last_error=NULL, audio_s=?, queued_at=?,"
                " started_at=NULL, finished_at=NULL, progress_done=0, progress_total=0 WHERE id=?",
                (digest, audio_s, now, row["id"]))
            return "requeued"

    def recover(self) -> list[Job]:
        """After a crash: jobs left ``working`` go back to the queue (their attempt stays counted)."""
        jobs = self.jobs("working")
        with self._tx() as db:
            db.execute("UPDATE jobs SET state='queued', progress_done=0 WHERE state='working'")
        return jobs

    # -- work --------------------------------------------------------------------------------------
    def queued(self, limit: int = 1000) -> list[Job]:
        return self.jobs("queued", limit)

    def jobs(self, state: str, limit: int = 100000) -> list[Job]:
        order = "finished_at DESC" if state in ("done", "failed") else "queued_at, id"
        rows = self.db.execute(f"SELECT * FROM jobs WHERE state=? ORDER BY {order} LIMIT ?", (state, limit))
        return [self._job(r) for r in rows]

    def get(self, job_id: int) -> Job | None:
        row = self.db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return self._job(row) if row else None

    def start(self, job_ids: list[int]) -> None:
        with self._tx() as db:
            db.executemany("UPDATE jobs SET state='working', attempts=attempts+1, started_at=?, progress_done=0"
                           " WHERE id=?", [(self._now(), i) for i in job_ids])

    def progress(self, job_id: int, done: int, total: int) -> None:
        self.db.execute("UPDATE jobs SET progress_done=?, progress_total=? WHERE id=?", (done, total, job_id))

    def done(self, job_id: int, outputs: dict[str, str], audio_s: float | None, language: str | None) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET state='done', outputs=?, audio_s=COALESCE(?, audio_s), language=?,"
                       " finished_at=?, last_error=NULL WHERE id=?",
                       (json.dumps(outputs), audio_s, language, self._now(), job_id))

    def failed(self, job_id: int, error: str, max_attempts: int, *, final: bool = False) -> bool:
        """Record a failed attempt; returns True when the job is now failed for good."""
        row = self.db.execute("SELECT attempts FROM jobs WHERE id=?", (job_id,)).fetchone()
        final = final or row is None or row["attempts"] >= max_attempts
        with self._tx() as db:
            db.execute("UPDATE jobs SET state=?, last_error=?, finished_at=? WHERE id=?",
                       ("failed" if final else "queued", error, self._now(), job_id))
        return final

    def gone(self, job_id: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET state='gone', finished_at=? WHERE id=?", (self._now(), job_id))

    # -- status ------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for row in self.db.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"):
            out[row["state"]] = row["n"]
        return out

    def throughput(self, last: int = 50) -> float | None:
        """Seconds of audio per second of work over recent jobs (for the ETA), or None."""
        row = self.db.execute(
            "SELECT SUM(audio_s) AS a, SUM(finished_at - started_at) AS w FROM (SELECT audio_s, started_at,"
            " finished_at FROM jobs WHERE state='done' AND audio_s > 0 ORDER BY finished_at DESC LIMIT ?)",
            (last,)).fetchone()
        return row["a"] / row["w"] if row["a"] and row["w"] and row["w"] > 0 else None

    def queued_audio_s(self) -> float:
        row = self.db.execute("SELECT SUM(COALESCE(audio_s, 0)) AS s FROM jobs WHERE state IN ('queued', 'working')")
        return float(row.fetchone()["s"] or 0.0)

    def set_meta(self, **values: object) -> None:
        with self._tx() as db:
            db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)"
                           " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                           [(k, json.dumps(v)) for k, v in values.items()])

    def meta(self) -> dict[str, object]:
        return {r["key"]: json.loads(r["value"]) for r in self.db.execute("SELECT key, value FROM meta")}

    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        return Job(row["id"], Path(row["path"]), Path(row["root"]), row["state"], row["attempts"], row["last_error"],
                   row["audio_s"], row["started_at"], row["finished_at"], row["progress_done"], row["progress_total"])
