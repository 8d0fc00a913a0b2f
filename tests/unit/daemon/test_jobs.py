"""The per-job rules as functions over (config, journal), on real files and a real journal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fakes import settled
from loguru import logger

from scribed.config import Config, parse_config
from scribed.daemon import jobs
from scribed.daemon.journal import Journal
from scribed.identity import FileIdentity
from scribed.protocol import JobOptions, JobSpec, Result


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    (tmp_path / "inbox").mkdir()
    return tmp_path / "inbox"


def _cfg(tmp_path: Path, inbox: Path, **sections: dict) -> Config:
    data: dict = {"watch": {"folders": [str(inbox)]}, "model": {"id": "m"},
                  "service": {"state_dir": str(tmp_path / "state")}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return parse_config(data)


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    j = Journal(tmp_path / "state" / "journal.sqlite3")
    yield j
    j.close()


def _done(cfg: Config, journal: Journal, path: Path, root: Path) -> JobSpec:
    """Take ``path`` through intake, dispatch and a successful result, as the daemon would."""
    assert jobs.intake(cfg, journal, settled(path, root)) == "queued"
    (spec,) = jobs.plan_batch(cfg, journal)
    written = {}
    for fmt, out in spec.outputs.items():
        out.write_text("hello world\n")
        written[fmt] = FileIdentity.of(os.lstat(out))
    assert jobs.finish(cfg, journal, Result(spec.job_id, "done", None, written, 1.0, "en")) == "done"
    return spec


def test_delays() -> None:
    assert [jobs.restart_delay(n) for n in range(1, 8)] == [1, 3, 7, 15, 31, 60, 60]
    assert [jobs.transient_delay(n) for n in (1, 2, 3, 7, 8, 20)] == [30, 60, 120, 1920, 3600, 3600]


def test_a_moved_recording_takes_its_transcripts_along(tmp_path: Path, inbox: Path, journal: Journal) -> None:
    cfg = _cfg(tmp_path, inbox, output={"formats": ["txt", "json"]})
    old = inbox / "talk.wav"
    old.write_bytes(b"recording")
    _done(cfg, journal, old, inbox)
    (inbox / "2024").mkdir()
    new = inbox / "2024" / "talk renamed.wav"
    os.rename(old, new)
    assert jobs.intake(cfg, journal, settled(new, inbox)) == "moved"
    assert sorted(p.name for p in (inbox / "2024").iterdir()) == ["talk renamed.json", "talk renamed.txt",
                                                                  "talk renamed.wav"]
    assert not (inbox / "talk.txt").exists() and not (inbox / "talk.json").exists()
    job = journal.find(new)
    assert job.state == "done" and journal.find(old) is None
    assert job.written["txt"].same_file(os.lstat(inbox / "2024" / "talk renamed.txt"))
    assert jobs.plan_batch(cfg, journal) == []  # no second transcription


def test_a_copy_is_transcribed_and_a_replaced_transcript_stays(tmp_path: Path, inbox: Path, journal: Journal) -> None:
    cfg = _cfg(tmp_path, inbox)
    a = inbox / "a.wav"
    a.write_bytes(b"recording")
    _done(cfg, journal, a, inbox)
    copy = inbox / "copy.wav"
    copy.write_bytes(b"recording")  # the original is still there: a copy gets its own transcript
    _done(cfg, journal, copy, inbox)
    assert (inbox / "a.txt").exists() and (inbox / "copy.txt").exists()
    b = inbox / "b.wav"
    b.write_bytes(b"other recording")
    _done(cfg, journal, b, inbox)
    (inbox / "b.txt").unlink()
    (inbox / "b.txt").write_text("somebody else's notes\n")  # no longer the file scribed wrote
    moved = inbox / "b2.wav"
    os.rename(b, moved)
    assert jobs.intake(cfg, journal, settled(moved, inbox)) == "queued"
    assert (inbox / "b.txt").read_text() == "somebody else's notes\n"


def test_plan_batch_drops_gone_and_holds_changed(tmp_path: Path, inbox: Path, journal: Journal) -> None:
    cfg = _cfg(tmp_path, inbox)
    gone, changed, fine = (inbox / n for n in ("gone.wav", "changed.wav", "fine.wav"))
    for p in (gone, changed, fine):
        p.write_bytes(p.name.encode())
        jobs.intake(cfg, journal, settled(p, inbox))
    gone.unlink()
    changed.write_bytes(b"more data than before")
    specs = jobs.plan_batch(cfg, journal)
    assert [s.path for s in specs] == [fine]
    assert journal.find(gone).state == "gone" and journal.find(changed).state == "changed"


def test_output_paths_are_decided_once(tmp_path: Path, inbox: Path, journal: Journal) -> None:
    cfg = _cfg(tmp_path, inbox, service={"attempts": 3})
    talk = inbox / "talk.mp3"
    talk.write_bytes(b"mp3")
    jobs.intake(cfg, journal, settled(talk, inbox))
    (first,) = jobs.plan_batch(cfg, journal)
    assert first.outputs == {"txt": inbox / "talk.txt"}
    (inbox / "talk.flac").write_bytes(b"flac")  # a same-named twin arrives: new names would be talk.mp3.txt
    assert jobs.finish(cfg, journal, Result(first.job_id, "retry", "hiccup")) == "retry"
    (second,) = jobs.plan_batch(cfg, journal)
    assert second.outputs == first.outputs and second.failure_note == first.failure_note
    other = _cfg(tmp_path, inbox, output={"formats": ["txt", "srt"]})
    jobs.finish(other, journal, Result(second.job_id, "retry", "hiccup"))
    (third,) = jobs.plan_batch(other, journal)
    assert set(third.outputs) == {"txt", "srt"}  # the config changed: decided again


def test_out_dir_keeps_the_layout(tmp_path: Path, inbox: Path, journal: Journal) -> None:
    out = tmp_path / "out"
    cfg = _cfg(tmp_path, inbox, output={"dir": str(out)})
    (inbox / "sub").mkdir()
    rec = inbox / "sub" / "a.wav"
    rec.write_bytes(b"a")
    jobs.intake(cfg, journal, settled(rec, inbox))
    (spec,) = jobs.plan_batch(cfg, journal)
    assert spec.outputs == {"txt": out / "sub" / "a.txt"} and spec.failure_note == out / "sub" / "a.failed.txt"
    assert journal.find(rec).outputs == spec.outputs


def test_a_foreign_failure_note_is_never_removed(tmp_path: Path, inbox: Path, journal: Journal) -> None:
    cfg = _cfg(tmp_path, inbox)
    rec = inbox / "good.wav"
    rec.write_bytes(b"good")
    (inbox / "good.failed.txt").write_text("a colleague's note\n")
    spec = _done(cfg, journal, rec, inbox)
    assert (inbox / "good.failed.txt").read_text() == "a colleague's note\n"
    assert spec.failure_note == inbox / "good.failed.txt"


def _failed_then_retried(cfg: Config, journal: Journal, rec: Path, error: str) -> tuple[JobSpec, JobSpec]:
    """``rec`` queued, failed for good with ``error`` (its note written), then ``scribed retry``:
    the first attempt's spec and the retry's."""
    rec.write_bytes(rec.name.encode())
    jobs.intake(cfg, journal, settled(rec, rec.parent))
    (spec,) = jobs.plan_batch(cfg, journal)
    assert jobs.finish(cfg, journal, Result(spec.job_id, "final", error)) == "failed"
    assert error in spec.failure_note.read_text()
    journal.reset(spec.job_id)
    (again,) = jobs.plan_batch(cfg, journal)
    return spec, again


def test_final_failures_write_a_note_that_a_later_one_replaces(tmp_path: Path, inbox: Path, journal: Journal) -> None:
    cfg = _cfg(tmp_path, inbox)
    spec, again = _failed_then_retried(cfg, journal, inbox / "bad.wav", "not audio")
    assert jobs.finish(cfg, journal, Result(again.job_id, "final", "still not audio")) == "failed"
    assert "still not audio" in spec.failure_note.read_text()  # its own note: replaced


def test_a_transcript_that_appeared_meanwhile_skips_the_recording_without_a_note(
        tmp_path: Path, inbox: Path, journal: Journal) -> None:
    """Another scribed on the same share (or a person) wrote NAME.txt while this one transcribed:
    skipped, as if it had been there at intake -- no failure note, and an earlier attempt's note
    removed; a later rescan leaves it skipped."""
    cfg = _cfg(tmp_path, inbox)
    rec = inbox / "race.wav"
    spec, again = _failed_then_retried(cfg, journal, rec, "disk was unplugged")  # the first attempt's note
    (inbox / "race.txt").write_text("written by the other host\n")
    reason = f"cannot write transcript for {str(rec)!r}: a file scribed did not write is in the way"
    assert jobs.finish(cfg, journal, Result(again.job_id, "skipped", reason)) == "skipped"
    job = journal.find(rec)
    assert job.state == "skipped" and "appeared while it was transcribed" in job.last_error
    assert not spec.failure_note.exists() and "failed" not in job.written
    assert (inbox / "race.txt").read_text() == "written by the other host\n"
    assert jobs.intake(cfg, journal, settled(rec, inbox)) == "known"
    assert journal.find(rec).state == "skipped"


def test_abandon_counts_and_interrupt_gives_back(tmp_path: Path, inbox: Path, journal: Journal) -> None:
    cfg = _cfg(tmp_path, inbox, service={"attempts": 1})
    a, b = inbox / "a.wav", inbox / "b.wav"
    for p in (a, b):
        p.write_bytes(p.name.encode())
        jobs.intake(cfg, journal, settled(p, inbox))
    specs = jobs.plan_batch(cfg, journal)
    assert jobs.abandon(cfg, journal, [specs[0].job_id], "worker process died (exit code -9)") == 1
    jobs.interrupt(journal, [specs[1].job_id])
    assert (journal.find(a).state, journal.find(b).state, journal.find(b).attempts) == ("failed", "queued", 0)
    assert jobs.finish(cfg, journal, Result(12345, "done")) == "unknown"


def test_source_after_delete_runs_only_after_success(tmp_path: Path, inbox: Path, journal: Journal) -> None:
    cfg = _cfg(tmp_path, inbox, policy={"source_after": "delete"})
    rec = inbox / "a.wav"
    rec.write_bytes(b"a")
    _done(cfg, journal, rec, inbox)
    assert not rec.exists() and (inbox / "a.txt").exists()


def test_a_name_that_is_not_utf8_goes_all_the_way(tmp_path: Path, inbox: Path, journal: Journal) -> None:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), format="{message}")
    cfg = _cfg(tmp_path, inbox)
    rec = inbox / os.fsdecode(b"r\xe9union \xff.wav")
    rec.write_bytes(b"not audio")
    assert jobs.intake(cfg, journal, settled(rec, inbox)) == "queued"
    (spec,) = jobs.plan_batch(cfg, journal)
    assert spec.outputs == {"txt": inbox / os.fsdecode(b"r\xe9union \xff.txt")}
    assert jobs.finish(cfg, journal, Result(spec.job_id, "final", f"cannot read audio {str(rec)!r}")) == "failed"
    assert spec.failure_note.exists()
    logger.remove(sink)
    assert any(line.startswith("queued ") and line.endswith("r\\xe9union \\xff.wav\n") for line in lines), lines


def test_a_link_at_the_output_name_is_not_a_transcript(tmp_path: Path, inbox: Path, journal: Journal) -> None:
    """A planted link at NAME.txt must not make the recording be skipped forever: it is queued
    (the write then refuses the link), while a real file there is a transcript and is skipped."""
    cfg = _cfg(tmp_path, inbox)
    private = tmp_path / "private.txt"
    private.write_text("secret")
    linked, kept = inbox / "linked.wav", inbox / "kept.wav"
    for p in (linked, kept):
        p.write_bytes(p.name.encode())
    (inbox / "linked.txt").symlink_to(private)
    (inbox / "kept.txt").write_text("somebody's own notes")
    assert jobs.intake(cfg, journal, settled(linked, inbox)) == "queued"
    assert jobs.intake(cfg, journal, settled(kept, inbox)) == "skipped"
    assert private.read_text() == "secret"


# -- per-folder settings ----------------------------------------------------------------------------
def _team(tmp_path: Path) -> tuple[Config, Path, Path, Path]:
    """Three watched folders: Chinese (archived), English (own output folder, deleted), plain."""
    zh, en, plain = (tmp_path / n for n in ("zh", "en", "plain"))
    for folder in (zh, en, plain):
        folder.mkdir()
    cfg = parse_config({
        "watch": {"folders": [
            {"path": str(zh), "language": "zh", "context": "Team China", "glossary": {"ali": "Alibaba"},
             "speakers": 2, "timestamps": True, "formats": ["txt", "srt"], "source_after": "archive",
             "archive_dir": str(tmp_path / "archive-zh")},
            {"path": str(en), "language": "en", "formats": ["json"], "dir": str(tmp_path / "out-en"),
             "source_after": "delete"},
            str(plain)]},
        "model": {"id": "m"}, "service": {"state_dir": str(tmp_path / "state")},
        "transcription": {"glossary": {"open ai": "OpenAI"}},
    })
    return cfg, zh, en, plain


def test_each_job_is_dispatched_with_its_folders_settings(tmp_path: Path, journal: Journal) -> None:
    cfg, zh, en, plain = _team(tmp_path)
    (zh / "2024").mkdir()
    recs = [zh / "2024" / "a.wav", en / "b.wav", plain / "c.wav"]
    for rec, root in zip(recs, (zh, en, plain), strict=True):
        rec.write_bytes(rec.name.encode())
        assert jobs.intake(cfg, journal, settled(rec, root)) == "queued"
    a, b, c = jobs.plan_batch(cfg, journal)
    assert a.options == JobOptions("zh", "Team China", {"open ai": "OpenAI", "ali": "Alibaba"}, 2, True)
    assert a.outputs == {"txt": zh / "2024" / "a.txt", "srt": zh / "2024" / "a.srt"} and a.out_dir is None
    assert b.options == JobOptions("en", "", {"open ai": "OpenAI"}, "off", False)
    assert b.outputs == {"json": tmp_path / "out-en" / "b.json"} and b.out_dir == tmp_path / "out-en"
    assert b.failure_note == tmp_path / "out-en" / "b.failed.txt"
    assert c.options == JobOptions(glossary={"open ai": "OpenAI"}) and c.outputs == {"txt": plain / "c.txt"}
    assert [journal.find(r).outputs for r in recs] == [a.outputs, b.outputs, c.outputs]


def test_retention_follows_the_recordings_folder(tmp_path: Path, journal: Journal) -> None:
    cfg, zh, en, plain = _team(tmp_path)
    a, b, c = zh / "a.wav", en / "b.wav", plain / "c.wav"
    (tmp_path / "out-en").mkdir()  # the worker makes it; _done writes the outputs itself
    for rec, root in ((a, zh), (b, en), (c, plain)):
        rec.write_bytes(rec.name.encode())
        _done(cfg, journal, rec, root)
    assert not a.exists() and (tmp_path / "archive-zh" / "a.wav").read_bytes() == b"a.wav"
    assert not b.exists() and (tmp_path / "out-en" / "b.json").exists()
    assert c.read_bytes() == b"c.wav"  # the sections' keep


def test_intake_and_failure_notes_use_the_folders_outputs(tmp_path: Path, journal: Journal) -> None:
    cfg, _, en, _ = _team(tmp_path)
    # A foreign b.txt is not one of the English folder's outputs (json in out-en): no obstacle.
    (en / "b.txt").write_text("somebody's notes")
    b = en / "b.wav"
    b.write_bytes(b"b")
    assert jobs.intake(cfg, journal, settled(b, en)) == "queued"
    (tmp_path / "out-en").mkdir()
    (tmp_path / "out-en" / "d.json").write_text("{}")
    d = en / "d.wav"
    d.write_bytes(b"d")
    assert jobs.intake(cfg, journal, settled(d, en)) == "skipped"
    (spec,) = jobs.plan_batch(cfg, journal)
    assert jobs.finish(cfg, journal, Result(spec.job_id, "final", "not audio")) == "failed"
    assert "not audio" in (tmp_path / "out-en" / "b.failed.txt").read_text()
    assert b.exists()  # a failure never touches the recording, whatever its folder's source_after
