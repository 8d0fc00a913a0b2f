"""The journal: one SQLite database (WAL) that makes "every recording exactly once" true across crashes.

Contract:
- A job is one recording path with the identity (dev, inode, size, mtime, sha256) it was
  offered with. :meth:`Journal.offer` takes a settled :class:`~scribed.daemon.watcher.Ready`
  (hashed off the main loop by the watcher; the journal never reads a recording) and decides:
  new -> queued (or skipped: a transcript scribed did not write exists); same content -> known;
  content changed -> queued again, or, while a worker transcribes it, flagged ``changed`` so its
  result is discarded and the new content transcribed.
- States: queued -> working -> done | failed | queued again | changed (the worker saw other
  content than was queued: waits for the watcher to report the new content) | gone (vanished
  before it was transcribed) | skipped.
- A job's output paths are decided once, at dispatch (:meth:`start`), and stored; ``written``
  holds the identity of every file scribed placed for it (transcripts, the failure note under
  ``"failed"``): the only files a later write may replace or a success may remove.
- Attempts count at dispatch; an attempt that was not the file's fault (stop, transient error,
  changed content) is given back. Transient errors wait until ``retry_at`` (wall clock).
- Done is written only after the transcript is on disk (the caller's order).
- Any name the file system accepts is stored exactly, and the database and its WAL files are
  0600 whatever the umask: the storage layer is :mod:`scribed.daemon.journal_db`.
- Safe to read from another process (``scribed status``) while the daemon writes; writes from
  another process (``scribed retry``) wait for the daemon's transaction.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from scribed.daemon.journal_db import connect, connect_readonly, decode_path, encode_path
from scribed.identity import FileIdentity

if TYPE_CHECKING:
    from scribed.daemon.settle import Ready

STATES = ("queued", "working", "done", "failed", "changed", "gone", "skipped")
_RESET = ("attempts=0, last_error=NULL, started_at=NULL, finished_at=NULL, progress_done=0, progress_total=0,"
          " changed=0, transient=0, transient_since=NULL, retry_at=NULL")


def _text(message: str | None) -> str | None:
    """A message SQLite can store: lone surrogates (undecodable file names) escaped."""
    return None if message is None else message.encode("utf-8", "backslashreplace").decode("utf-8")


def _identity_json(ids: dict[str, FileIdentity]) -> str:
    return json.dumps({k: [i.dev, i.ino, i.size, i.mtime_ns, i.sha256] for k, i in ids.items()})


def _identities(text: str | None) -> dict[str, FileIdentity]:
    return {k: FileIdentity(*v) for k, v in json.loads(text).items()} if text else {}


def _paths(text: str | None) -> dict[str, Path]:
    return {k: Path(v) for k, v in json.loads(text).items()} if text else {}


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
    identity: FileIdentity
    outputs: dict[str, Path] = field(default_factory=dict)  # decided at dispatch
    failure_note: Path | None = None
    written: dict[str, FileIdentity] = field(default_factory=dict)
    changed: bool = False  # the recording changed while this attempt ran
    transient: int = 0  # transient failures in a row
    transient_since: float | None = None
    retry_at: float | None = None


class Journal:
    """The daemon's state. One writer at a time (the daemon's main thread, or ``scribed retry``)."""

    def __init__(self, path: Path, *, readonly: bool = False, wall_clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._now = wall_clock
        self.db = connect_readonly(path) if readonly else connect(path)
        self.db.row_factory = sqlite3.Row

    def close(self) -> None:
        self.db.close()

    def now(self) -> float:
        """The journal's wall clock (stored times, transient backoff: they outlive a restart)."""
        return self._now()

    def _update(self, sql: str, *args: object) -> None:
        with self._tx() as db:
            db.execute(sql, args)

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
    def offer(self, ready: Ready, *, transcript_exists: bool = False, overwrite: bool = False) -> str:
        """Register a settled file. Returns "queued", "requeued", "changed", "known" or "skipped".

        The read and the write happen in one immediate transaction, so two writers cannot both
        insert the same path.
        """
        ident = ready.identity
        key = encode_path(ready.path)
        now = self._now()
        cols = "dev=?, inode=?, size=?, mtime_ns=?, sha256=?"
        values = (ident.dev, ident.ino, ident.size, ident.mtime_ns, ident.sha256 or "")
        with self._tx() as db:
            row = db.execute("SELECT * FROM jobs WHERE path=?", (key,)).fetchone()
            if row is None:
                state = "skipped" if transcript_exists and not overwrite else "queued"
                error = "a transcript scribed did not write already exists" if state == "skipped" else None
                db.execute(
                    "INSERT INTO jobs (path, root, dev, inode, size, mtime_ns, sha256, state, last_error, audio_s,"
                    " queued_at) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(path) DO NOTHING",
                    (key, encode_path(ready.root), *values, state, error, ready.audio_s, now))
                return state
            same_content = bool(ident.sha256) and row["sha256"] == ident.sha256
            if same_content and row["state"] not in ("gone", "changed"):
                db.execute(f"UPDATE jobs SET {cols} WHERE id=?", (*values, row["id"]))  # touched or copied
                return "known"
            if row["state"] == "working":  # the running attempt reads old content: its result is void
                db.execute(f"UPDATE jobs SET {cols}, changed=1, audio_s=? WHERE id=?",
                           (*values, ready.audio_s, row["id"]))
                return "changed"
            if row["state"] == "skipped" and transcript_exists and not overwrite:
                db.execute(f"UPDATE jobs SET {cols} WHERE id=?", (*values, row["id"]))
                return "known"
            db.execute(f"UPDATE jobs SET {cols}, state='queued', audio_s=?, queued_at=?, {_RESET} WHERE id=?",
                       (*values, ready.audio_s, now, row["id"]))
            return "requeued"

    def moved_candidates(self, identity: FileIdentity) -> list[Job]:
        """Done jobs that may be this recording under an earlier name: same file or same hash."""
        rows = self.db.execute("SELECT * FROM jobs WHERE state='done' AND ((dev=? AND inode=?) OR sha256=?)",
                               (identity.dev, identity.ino, identity.sha256 or "\0"))
        return [_job(r) for r in rows]

    def relocate(self, job_id: int, path: Path, root: Path, identity: FileIdentity, outputs: dict[str, Path],
                 written: dict[str, FileIdentity]) -> None:
        """The recording of a done job was moved to ``path``; its transcripts now are ``outputs``."""
        self._update("UPDATE jobs SET path=?, root=?, dev=?, inode=?, size=?, mtime_ns=?, sha256=?, outputs=?,"
                     " written=?, failure_note=NULL WHERE id=?", encode_path(path), encode_path(root), identity.dev,
                     identity.ino, identity.size, identity.mtime_ns, identity.sha256 or "",
                     json.dumps({k: str(v) for k, v in outputs.items()}), _identity_json(written), job_id)

    # -- work --------------------------------------------------------------------------------------
    def queued(self, limit: int = 1000) -> list[Job]:
        """Queued jobs that are due (not waiting out a transient error), oldest first."""
        rows = self.db.execute("SELECT * FROM jobs WHERE state='queued' AND (retry_at IS NULL OR retry_at <= ?)"
                               " ORDER BY queued_at, id LIMIT ?", (self._now(), limit))
        return [_job(r) for r in rows]

    def waiting(self) -> int:
        """Queued jobs waiting out a transient error."""
        return self.db.execute("SELECT COUNT(*) FROM jobs WHERE state='queued' AND retry_at > ?",
                               (self._now(),)).fetchone()[0]

    def jobs(self, state: str | None = None, limit: int = 100000) -> list[Job]:
        order = "finished_at DESC" if state in ("done", "failed") else "queued_at, id"
        where, args = ("WHERE state=?", (state,)) if state else ("", ())
        rows = self.db.execute(f"SELECT * FROM jobs {where} ORDER BY {order} LIMIT ?", (*args, limit))
        return [_job(r) for r in rows]

    def get(self, job_id: int) -> Job | None:
        row = self.db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _job(row) if row else None

    def find(self, path: Path) -> Job | None:
        row = self.db.execute("SELECT id FROM jobs WHERE path=?", (encode_path(path),)).fetchone()
        return self.get(row[0]) if row else None

    def start(self, plans: list[tuple[int, dict[str, Path], Path]]) -> None:
        """Jobs handed to the worker, each with its output paths and failure note (decided now)."""
        with self._tx() as db:
            db.executemany(
                "UPDATE jobs SET state='working', attempts=attempts+1, started_at=?, progress_done=0,"
                " progress_total=0, changed=0, outputs=?, failure_note=? WHERE id=?",
                [(self._now(), json.dumps({k: str(v) for k, v in outputs.items()}), encode_path(note), job_id)
                 for job_id, outputs, note in plans])

    def progress(self, job_id: int, done: int, total: int) -> None:
        self.db.execute("UPDATE jobs SET progress_done=?, progress_total=? WHERE id=?", (done, total, job_id))

    def done(self, job_id: int, written: dict[str, FileIdentity], audio_s: float | None,
             language: str | None) -> None:
        self._update("UPDATE jobs SET state='done', written=?, audio_s=COALESCE(?, audio_s), language=?, finished_at=?,"
                     " last_error=NULL, changed=0, transient=0, transient_since=NULL, retry_at=NULL WHERE id=?",
                     _identity_json(written), audio_s, language, self._now(), job_id)

    def record_written(self, job_id: int, written: dict[str, FileIdentity]) -> None:
        """Remember files scribed placed for a job that is not done (a failure note, a void result)."""
        job = self.get(job_id)
        if job is not None:
            self.db.execute("UPDATE jobs SET written=? WHERE id=?",
                            (_identity_json({**job.written, **written}), job_id))

    def failed(self, job_id: int, error: str, max_attempts: int, *, final: bool = False) -> bool:
        """Record a failed attempt; returns True when the job is now failed for good."""
        row = self.db.execute("SELECT attempts FROM jobs WHERE id=?", (job_id,)).fetchone()
        final = final or row is None or row["attempts"] >= max_attempts
        self._update("UPDATE jobs SET state=?, last_error=?, finished_at=?, retry_at=NULL WHERE id=?",
                     "failed" if final else "queued", _text(error), self._now(), job_id)
        return final

    def skipped(self, job_id: int, reason: str, written: dict[str, FileIdentity]) -> None:
        """Skipped after all: a transcript scribed did not write took an output name meanwhile.
        ``written``: what scribed placed for it that is still there (formats written before)."""
        self._update("UPDATE jobs SET state='skipped', last_error=?, written=?, finished_at=?, changed=0, transient=0,"
                     " transient_since=NULL, retry_at=NULL WHERE id=?", reason, _identity_json(written), self._now(),
                     job_id)

    def defer(self, job_id: int, error: str, retry_at: float, since: float) -> None:
        """A transient failure: queued again from ``retry_at``; the attempt is given back."""
        self._update("UPDATE jobs SET state='queued', attempts=MAX(attempts-1, 0), last_error=?, retry_at=?,"
                     " transient=transient+1, transient_since=COALESCE(transient_since, ?), progress_done=0"
                     " WHERE id=?", _text(error), retry_at, since, job_id)

    def interrupted(self, job_ids: list[int], *, state: str = "queued") -> None:
        """Attempts cut short through no fault of the file (a stop, changed content): given back."""
        with self._tx() as db:
            db.executemany("UPDATE jobs SET state=?, attempts=MAX(attempts-1, 0), changed=0, progress_done=0"
                           " WHERE id=? AND state='working'", [(state, i) for i in job_ids])

    def await_settle(self, job_id: int) -> None:
        """A queued recording that no longer matches its identity: wait for the watcher's new report."""
        self._update("UPDATE jobs SET state='changed' WHERE id=? AND state='queued'", job_id)

    def requeue(self, job_id: int) -> None:
        """A job a crash left ``working``: queued again (its attempt stays counted)."""
        self._update("UPDATE jobs SET state='queued', progress_done=0 WHERE id=?", job_id)

    def reset(self, job_id: int) -> None:
        """``scribed retry``: queued now, attempts and transient backoff forgotten."""
        self._update(f"UPDATE jobs SET state='queued', queued_at=?, {_RESET} WHERE id=?", self._now(), job_id)

    def gone(self, job_id: int) -> None:
        self._update("UPDATE jobs SET state='gone', finished_at=? WHERE id=?", self._now(), job_id)

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


def _job(row: sqlite3.Row) -> Job:
    keys = row.keys()

    def col(name: str, default: object = None) -> object:
        return row[name] if name in keys else default

    identity = FileIdentity(col("dev") or 0, row["inode"], row["size"], row["mtime_ns"], row["sha256"] or None)
    note = col("failure_note")
    return Job(row["id"], decode_path(row["path"]), decode_path(row["root"]), row["state"], row["attempts"],
               row["last_error"], row["audio_s"], row["started_at"], row["finished_at"], row["progress_done"],
               row["progress_total"], identity, _paths(row["outputs"]), decode_path(note) if note else None,
               _identities(col("written")), bool(col("changed", 0)), col("transient", 0) or 0,  # type: ignore[arg-type]
               col("transient_since"), col("retry_at"))  # type: ignore[arg-type]
