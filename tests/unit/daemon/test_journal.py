"""The journal's exactly-once rules, on a real SQLite file."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest
from fakes import settled

from scribed.daemon.journal import Job, Journal
from scribed.daemon.journal_db import BYTES_MARK, decode_path, encode_path, shown
from scribed.identity import FileIdentity


def _journal(tmp_path: Path) -> Journal:
    clock = iter(range(1000, 100000, 10))
    return Journal(tmp_path / "state" / "journal.sqlite3", wall_clock=lambda: float(next(clock)))


def _offered(j: Journal, path: Path, content: bytes = b"a") -> Job:
    path.write_bytes(content)
    j.offer(settled(path, path.parent))
    return j.find(path)


def _plan(job_id: int, folder: Path, name: str) -> tuple[int, dict[str, Path], Path]:
    return job_id, {"txt": folder / f"{name}.txt"}, folder / f"{name}.failed.txt"


def test_offer_new_known_touched_changed(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    rec = tmp_path / "a.wav"
    rec.write_bytes(b"one")
    assert j.offer(settled(rec, tmp_path, 60)) == "queued"
    assert j.offer(settled(rec, tmp_path)) == "known"
    os.utime(rec, ns=(1, 1))  # touched, same content: nothing to do, new identity remembered
    assert j.offer(settled(rec, tmp_path)) == "known"
    assert j.find(rec).identity.same_file(os.lstat(rec))
    rec.write_bytes(b"two")  # new content: transcribe again
    assert j.offer(settled(rec, tmp_path)) == "requeued"
    assert [job.path for job in j.queued()] == [rec]
    assert j.find(rec).identity.sha256 == settled(rec, tmp_path).identity.sha256
    j.close()


def test_offer_while_working_flags_the_attempt_void(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    rec = tmp_path / "a.wav"
    job = _offered(j, rec, b"partial")
    j.start([_plan(job.id, tmp_path, "a")])
    rec.write_bytes(b"partial and complete")
    assert j.offer(settled(rec, tmp_path)) == "changed"
    job = j.find(rec)
    assert job.state == "working" and job.changed
    j.interrupted([job.id])
    job = j.find(rec)
    assert (job.state, job.attempts, job.changed) == ("queued", 0, False)


def test_existing_foreign_transcript_is_skipped_unless_overwrite(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    for name in ("x.wav", "y.wav"):
        (tmp_path / name).write_bytes(name.encode())
    assert j.offer(settled(tmp_path / "x.wav", tmp_path), transcript_exists=True) == "skipped"
    assert j.offer(settled(tmp_path / "y.wav", tmp_path), transcript_exists=True, overwrite=True) == "queued"
    assert j.counts()["skipped"] == 1


def test_attempts_failure_defer_and_reset(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    rec = tmp_path / "a.wav"
    rec.write_bytes(b"a")
    j.offer(settled(rec, tmp_path, 120))
    job = j.queued()[0]
    j.start([_plan(job.id, tmp_path, "a")])
    assert j.get(job.id).state == "working" and j.get(job.id).attempts == 1
    assert j.get(job.id).outputs == {"txt": tmp_path / "a.txt"}
    assert j.get(job.id).failure_note == tmp_path / "a.failed.txt"
    j.requeue(job.id)  # a crash: queued again, its attempt stays counted
    assert j.get(job.id).state == "queued" and j.get(job.id).attempts == 1
    j.start([_plan(job.id, tmp_path, "a")])
    assert j.failed(job.id, "worker died", max_attempts=3) is False
    assert j.get(job.id).state == "queued" and j.get(job.id).last_error == "worker died"
    j.start([_plan(job.id, tmp_path, "a")])
    now = j.now()
    j.defer(job.id, "No space left on device", retry_at=now + 30, since=now)
    job2 = j.get(job.id)
    assert (job2.state, job2.attempts, job2.transient, job2.retry_at) == ("queued", 2, 1, now + 30)
    assert j.queued() == [] and j.waiting() == 1  # not due yet
    j.start([_plan(job.id, tmp_path, "a")])
    assert j.failed(job.id, "worker died again", max_attempts=3) is True
    assert j.get(job.id).state == "failed"
    j.reset(job.id)
    job3 = j.get(job.id)
    assert (job3.state, job3.attempts, job3.transient, job3.retry_at, job3.last_error) == ("queued", 0, 0, None, None)


def test_done_written_gone_counts_throughput_and_meta(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    for name in ("a.wav", "b.wav", "c.wav"):
        (tmp_path / name).write_bytes(name.encode())
        j.offer(settled(tmp_path / name, tmp_path, 100))
    a, b, _c = j.queued()
    j.start([_plan(a.id, tmp_path, "a")])
    (tmp_path / "a.txt").write_text("x")
    ident = FileIdentity.of(os.lstat(tmp_path / "a.txt"))
    j.done(a.id, {"txt": ident}, 100.0, "en")
    assert j.get(a.id).written == {"txt": ident}
    j.gone(b.id)
    counts = j.counts()
    assert (counts["done"], counts["gone"], counts["queued"]) == (1, 1, 1)
    assert j.throughput() == 100.0 / 10.0  # fake clock: 10 s of work for 100 s of audio
    assert j.queued_audio_s() == 100
    j.set_meta(worker="ready", pid=42)
    j.set_meta(worker="working")
    reader = Journal(tmp_path / "state" / "journal.sqlite3", readonly=True)
    assert reader.meta() == {"worker": "working", "pid": 42}
    assert reader.counts()["done"] == 1
    reader.close()


def test_an_old_journal_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE jobs (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, root TEXT NOT NULL,
            size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, sha256 TEXT NOT NULL,
            state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, audio_s REAL, outputs TEXT,
            language TEXT, queued_at REAL, started_at REAL, finished_at REAL,
            progress_done INTEGER NOT NULL DEFAULT 0, progress_total INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO jobs (path, root, size, mtime_ns, inode, sha256, state, outputs)
            VALUES ('/in/a.wav', '/in', 3, 5, 7, 'abc', 'done', '{"txt": "/in/a.txt"}');
    """)
    old.close()
    os.chmod(path, 0o644)
    j = Journal(path)
    (job,) = j.jobs("done")
    assert (job.path, job.outputs, job.identity) == (Path("/in/a.wav"), {"txt": Path("/in/a.txt")},
                                                    FileIdentity(0, 7, 3, 5, "abc"))
    assert job.written == {} and not job.changed and job.retry_at is None
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    j.close()


def test_journal_files_are_0600_even_in_an_existing_folder(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    old = os.umask(0o022)
    try:
        j = Journal(state / "journal.sqlite3")
        j.set_meta(x=1)
        rec = tmp_path / "a.wav"
        rec.write_bytes(b"a")
        j.offer(settled(rec, tmp_path))
    finally:
        os.umask(old)
    files = sorted(p.name for p in state.iterdir())
    assert "journal.sqlite3" in files and "journal.sqlite3-wal" in files
    for name in files:
        assert stat.S_IMODE(os.stat(state / name).st_mode) == 0o600, name
    j.close()


def test_names_that_are_not_utf8_are_stored_exactly(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    folder = tmp_path / os.fsdecode(b"caf\xe9")
    folder.mkdir()
    rec = folder / os.fsdecode(b"r\xff\xfe union.wav")
    rec.write_bytes(b"audio")
    tricky = tmp_path / f"{BYTES_MARK}plain.wav"  # a real name that looks like the escape
    tricky.write_bytes(b"other")
    assert j.offer(settled(rec, folder)) == "queued"
    assert j.offer(settled(tricky, tmp_path)) == "queued"
    assert j.offer(settled(rec, folder)) == "known"
    j.start([_plan(j.find(rec).id, folder, os.fsdecode(b"r\xff\xfe union"))])
    job = j.find(rec)
    assert job.path == rec and job.root == folder and os.path.exists(job.path)
    assert job.failure_note == folder / os.fsdecode(b"r\xff\xfe union.failed.txt")
    assert j.find(tricky).path == tricky
    j.failed(job.id, f"cannot read audio {rec}: broken", max_attempts=1)
    assert "\\udcff" in j.get(job.id).last_error
    for p in (rec, tricky, Path("/a/b.wav")):
        assert decode_path(encode_path(p)) == p
    assert shown(rec).endswith("r\\xff\\xfe union.wav")


def test_a_second_writer_cannot_slip_in_between_check_and_insert(tmp_path: Path) -> None:
    """The old offer read outside its transaction: another writer inserting the same path in
    between made the INSERT fail with ``UNIQUE constraint failed``. Now the read happens inside
    the immediate transaction, so the other writer has to wait."""
    j = _journal(tmp_path)
    other = sqlite3.connect(j.path, timeout=0.05, isolation_level=None)
    rec = tmp_path / "a.wav"
    rec.write_bytes(b"a")
    blocked: list[str] = []

    def interleave(statement: str) -> None:
        if statement.startswith("SELECT * FROM jobs WHERE path") and not blocked:
            try:
                other.execute("INSERT INTO jobs (path, root, size, mtime_ns, inode, sha256, state)"
                              " VALUES (?, '/', 1, 1, 1, 'x', 'queued')", (str(rec),))
                blocked.append("no")
            except sqlite3.OperationalError as exc:
                blocked.append(str(exc))

    j.db.set_trace_callback(interleave)
    assert j.offer(settled(rec, tmp_path)) == "queued"
    j.db.set_trace_callback(None)
    assert blocked == ["database is locked"]
    assert len(j.jobs()) == 1
    other.close()
    j.close()


def test_moved_candidates_by_inode_or_hash(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    rec = tmp_path / "a.wav"
    job = _offered(j, rec)
    assert j.moved_candidates(settled(rec, tmp_path).identity) == []  # only done jobs
    j.start([_plan(job.id, tmp_path, "a")])
    j.done(job.id, {}, 1.0, "en")
    moved = tmp_path / "b.wav"
    os.rename(rec, moved)
    assert [c.id for c in j.moved_candidates(settled(moved, tmp_path).identity)] == [job.id]
    copy = tmp_path / "c.wav"
    copy.write_bytes(b"a")  # other inode, same content
    assert [c.id for c in j.moved_candidates(settled(copy, tmp_path).identity)] == [job.id]
    j.relocate(job.id, moved, tmp_path, settled(moved, tmp_path).identity, {"txt": tmp_path / "b.txt"}, {})
    assert j.find(rec) is None and j.find(moved).outputs == {"txt": tmp_path / "b.txt"}


@pytest.mark.parametrize("state", ["gone", "changed"])
def test_a_job_that_was_gone_or_changing_is_queued_again(tmp_path: Path, state: str) -> None:
    j = _journal(tmp_path)
    rec = tmp_path / "a.wav"
    job = _offered(j, rec)
    if state == "gone":
        j.gone(job.id)
    else:
        j.await_settle(job.id)
    assert j.find(rec).state == state
    assert j.offer(settled(rec, tmp_path)) == "requeued"
