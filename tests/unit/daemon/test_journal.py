"""The journal's exactly-once rules, on a real SQLite file."""

from __future__ import annotations

import os
from pathlib import Path

from scribed.daemon.journal import Journal


def _journal(tmp_path: Path) -> Journal:
    clock = iter(range(1000, 100000, 10))
    return Journal(tmp_path / "state" / "journal.sqlite3", wall_clock=lambda: float(next(clock)))


def test_offer_new_known_touched_changed(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    rec = tmp_path / "a.wav"
    rec.write_bytes(b"one")
    assert j.offer(rec, tmp_path, audio_s=60) == "queued"
    assert j.offer(rec, tmp_path) == "known"
    os.utime(rec, ns=(1, 1))  # touched, same content: nothing to do
    assert j.offer(rec, tmp_path) == "known"
    rec.write_bytes(b"two")  # new content: transcribe again
    assert j.offer(rec, tmp_path) == "requeued"
    assert [job.path for job in j.queued()] == [rec]
    assert j.offer(tmp_path / "missing.wav", tmp_path) == "vanished"
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    j.close()


def test_existing_foreign_transcript_is_skipped_unless_overwrite(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    for name in ("x.wav", "y.wav"):
        (tmp_path / name).write_bytes(name.encode())
    assert j.offer(tmp_path / "x.wav", tmp_path, transcript_exists=True) == "skipped"
    assert j.offer(tmp_path / "y.wav", tmp_path, transcript_exists=True, overwrite=True) == "queued"
    assert j.counts()["skipped"] == 1


def test_attempts_recover_and_failure(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    rec = tmp_path / "a.wav"
    rec.write_bytes(b"a")
    j.offer(rec, tmp_path, audio_s=120)
    job = j.queued()[0]
    j.start([job.id])
    assert j.get(job.id).state == "working" and j.get(job.id).attempts == 1
    # A crash leaves it working; the next start requeues it with its attempt counted.
    j.close()
    j = Journal(tmp_path / "state" / "journal.sqlite3")
    assert [r.id for r in j.recover()] == [job.id]
    assert j.get(job.id).state == "queued" and j.get(job.id).attempts == 1
    j.start([job.id])
    assert j.failed(job.id, "worker died", max_attempts=3) is False
    assert j.get(job.id).state == "queued" and j.get(job.id).last_error == "worker died"
    j.start([job.id])
    j.start([job.id])
    assert j.failed(job.id, "worker died again", max_attempts=3) is True
    assert j.get(job.id).state == "failed"
    assert j.jobs("failed")[0].last_error == "worker died again"


def test_done_gone_counts_throughput_and_meta(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    paths = []
    for name in ("a.wav", "b.wav", "c.wav"):
        (tmp_path / name).write_bytes(name.encode())
        j.offer(tmp_path / name, tmp_path, audio_s=100)
        paths.append(tmp_path / name)
    a, b, _c = j.queued()
    j.start([a.id])
    j.done(a.id, {"txt": str(tmp_path / "a.txt")}, 100.0, "en")
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
