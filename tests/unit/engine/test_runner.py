"""Recordings -> transcripts with the real tiny Qwen3-ASR model: jobs, classification of every
failure by type, identity checks, and the CLI entry."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from e2e_helpers import wav

from scribed import errors
from scribed.config import Config, parse_config
from scribed.engine import render, runner
from scribed.engine.pipeline import Pipeline
from scribed.engine.types import ChunkRequest, ChunkResult, TranscribeOptions
from scribed.identity import FileIdentity
from scribed.protocol import JobOptions, JobSpec


def _cfg(model: Path, tmp_path: Path) -> Config:
    return parse_config({"watch": {"folders": [str(tmp_path)]},
                         "model": {"id": str(model), "device": "cpu", "dtype": "float32", "batch_size": 4},
                         "service": {"state_dir": str(tmp_path / "state")},
                         "policy": {"block_network": False}})  # no irreversible guard in the test process


@pytest.fixture(scope="module")
def pipeline(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    return runner.open_pipeline(_cfg(tiny_model, tmp_path_factory.mktemp("cfg")))


class Wrapped:
    """The real engine, with something happening before each run (a failure, a file changed)."""

    def __init__(self, engine: object, before: Callable[[], None]) -> None:
        self.engine, self.before = engine, before
        self.name = engine.name  # type: ignore[attr-defined]

    def run(self, requests: Sequence[ChunkRequest], batch_size: int, *,
            on_done: Callable[[int], None] | None = None) -> list[ChunkResult]:
        self.before()
        return self.engine.run(requests, batch_size, on_done=on_done)  # type: ignore[attr-defined]


def _spec(job_id: int, path: Path, **kw: object) -> JobSpec:
    ident = FileIdentity.of(os.lstat(path)) if path.exists() else FileIdentity(0, 0, 0, 0)
    values: dict = {"identity": ident, "outputs": {"txt": path.with_suffix(".txt")},
                    "failure_note": path.with_suffix(".failed.txt")}
    values.update(kw)
    return JobSpec(job_id, path, path.parent, **values)


def test_jobs_are_transcribed_and_a_bad_file_fails_alone(pipeline: Pipeline, tmp_path: Path) -> None:
    a, b = wav(tmp_path / "a.wav"), wav(tmp_path / "b.wav", seed=2)
    bad = tmp_path / "bad.m4a"
    bad.write_bytes(os.urandom(3000))
    progress: list[tuple[int, int, int]] = []
    results = runner.run_jobs(pipeline, [_spec(1, a), _spec(2, bad), _spec(3, b, outputs={
        "txt": tmp_path / "b.txt", "json": tmp_path / "b.json"})], overwrite=False, max_duration_s=None,
        on_progress=lambda *p: progress.append(p))
    assert [(r.job_id, r.outcome) for r in results] == [(1, "done"), (2, "final"), (3, "done")]
    assert (tmp_path / "a.txt").read_text() == "hello world\n"
    assert results[0].outputs["txt"].same_file(os.lstat(tmp_path / "a.txt"))
    assert set(results[2].outputs) == {"txt", "json"} and results[0].language == "en"
    assert "not a recognised audio" in results[1].error and not results[1].outputs
    assert {p[0] for p in progress} == {1, 3} and all(done <= total for _, done, total in progress)


def test_too_long_is_final(pipeline: Pipeline, tmp_path: Path) -> None:
    a = wav(tmp_path / "a.wav", seconds=3.0)
    (result,) = runner.run_jobs(pipeline, [_spec(1, a)], overwrite=False, max_duration_s=1.0)
    assert result.outcome == "final" and "max_duration_s" in result.error


def test_a_recording_that_is_not_the_queued_file_is_changed(pipeline: Pipeline, tmp_path: Path) -> None:
    a = wav(tmp_path / "a.wav")
    spec = _spec(1, a)
    wav(tmp_path / "a.wav", seconds=2.0, seed=5)  # replaced after it was queued
    (result,) = runner.run_jobs(pipeline, [spec], overwrite=False, max_duration_s=None)
    assert result.outcome == "changed" and not (tmp_path / "a.txt").exists()


def test_a_recording_changed_while_transcribed_is_changed(pipeline: Pipeline, tmp_path: Path) -> None:
    a = wav(tmp_path / "a.wav")
    spec = _spec(1, a)

    def append() -> None:
        with open(a, "ab") as fh:
            fh.write(b"\0" * 64)

    (result,) = runner.run_jobs(Pipeline(Wrapped(pipeline.engine, append), pipeline.options), [spec],  # type: ignore[arg-type]
                                overwrite=False, max_duration_s=None)
    assert result.outcome == "changed"
    assert result.outputs["txt"].same_file(os.lstat(tmp_path / "a.txt"))  # written, and known to be scribed's


def test_out_of_memory_is_transient_for_the_whole_group(pipeline: Pipeline, tmp_path: Path) -> None:
    a, b = wav(tmp_path / "a.wav"), wav(tmp_path / "b.wav", seed=1)

    def oom() -> None:
        raise MemoryError("cannot allocate")

    results = runner.run_jobs(Pipeline(Wrapped(pipeline.engine, oom), pipeline.options),  # type: ignore[arg-type]
                              [_spec(1, a), _spec(2, b)], overwrite=False, max_duration_s=None)
    assert [r.outcome for r in results] == ["transient", "transient"]
    assert "MemoryError" in results[0].error


def test_only_scribeds_own_transcript_is_replaced(pipeline: Pipeline, tmp_path: Path) -> None:
    a = wav(tmp_path / "a.wav")
    (tmp_path / "a.txt").write_text("somebody's notes\n")
    (taken,) = runner.run_jobs(pipeline, [_spec(1, a)], overwrite=False, max_duration_s=None)
    assert taken.outcome == "skipped" and "cannot write transcript" in taken.error
    assert (tmp_path / "a.txt").read_text() == "somebody's notes\n"
    own = FileIdentity.of(os.lstat(tmp_path / "a.txt"))  # as if scribed had written it
    (replaced,) = runner.run_jobs(pipeline, [_spec(1, a, replaceable={"txt": own})], overwrite=False,
                                  max_duration_s=None)
    assert replaced.outcome == "done" and (tmp_path / "a.txt").read_text() == "hello world\n"


def test_a_transcript_written_by_someone_else_meanwhile_is_a_skip_not_an_error(pipeline: Pipeline,
                                                                               tmp_path: Path) -> None:
    """Another scribed on the same share finished first: NAME.txt appears while this one works.
    Nothing of theirs is replaced, and it is reported as a skip (INFO), not as an error."""
    from loguru import logger

    a = wav(tmp_path / "a.wav")
    spec = _spec(1, a, outputs={"json": tmp_path / "a.json", "txt": tmp_path / "a.txt"})

    def other_host_finishes() -> None:
        (tmp_path / "a.txt").write_text("the other host's transcript\n")

    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda m: lines.append((m.record["level"].name, m.record["message"])), format="{message}")
    try:
        (result,) = runner.run_jobs(Pipeline(Wrapped(pipeline.engine, other_host_finishes), pipeline.options),  # type: ignore[arg-type]
                                    [spec], overwrite=False, max_duration_s=None)
    finally:
        logger.remove(sink)
    assert result.outcome == "skipped" and "did not write" in result.error
    assert (tmp_path / "a.txt").read_text() == "the other host's transcript\n"
    # the .json went first and is scribed's own: reported, so the journal knows it is replaceable
    assert set(result.outputs) == {"json"} and result.outputs["json"].same_file(os.lstat(tmp_path / "a.json"))
    assert not [m for level, m in lines if level == "ERROR"], lines
    assert any(level == "INFO" and "cannot write transcript" in m for level, m in lines), lines


@pytest.mark.parametrize(("code", "outcome"), [(errno.ENOSPC, "transient"), (errno.EIO, "transient"),
                                               (errno.EROFS, "transient"), (errno.EACCES, "transient"),
                                               (errno.EPERM, "retry"), (errno.ENAMETOOLONG, "retry")])
def test_write_errors_are_classified_by_errno(pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              code: int, outcome: str) -> None:
    a = wav(tmp_path / "a.wav")

    def full(*_: object, **__: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(render, "write_transcript", full)
    (result,) = runner.run_jobs(pipeline, [_spec(1, a)], overwrite=False, max_duration_s=None)
    assert result.outcome == outcome and result.error.endswith(os.strerror(code))


def test_classify() -> None:
    assert runner.classify(errors.RecordingChanged("a", "b")) == "changed"
    assert runner.classify(errors.AudioError("a", "b")) == "final"
    assert runner.classify(errors.OutputTaken("a", "b")) == "final"
    assert runner.classify(MemoryError()) == "transient"
    assert runner.classify(type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory")) == "transient"
    assert runner.classify(OSError(errno.ENOSPC, "full")) == "transient"
    assert runner.classify(RuntimeError("cannot read audio: looks like a prefix")) == "retry"


def test_cli_entry_writes_and_rewrites_its_outputs(pipeline: Pipeline, tmp_path: Path) -> None:
    a = wav(tmp_path / "a.wav")
    events: list[str] = []
    spec = runner.OutputSpec(("txt", "srt"))
    (first,) = runner.transcribe_files(pipeline, [a], spec, on_event=lambda kind, *_: events.append(kind))
    assert first.ok and set(first.outputs) == {"txt", "srt"} and first.duration_s == pytest.approx(1.5)
    assert events[0] == "decoded" and events[-1] == "written" and "chunk" in events
    (second,) = runner.transcribe_files(pipeline, [a], spec)
    assert second.ok  # the CLI replaces its earlier outputs, as it always did
    (missing,) = runner.transcribe_files(pipeline, [tmp_path / "nope.wav"], spec)
    assert not missing.ok and missing.outcome == "final"


class Requests(Wrapped):
    """The real engine, keeping (language, prompt) of every request it was sent."""

    def __init__(self, engine: object) -> None:
        super().__init__(engine, lambda: None)
        self.seen: list[tuple[str | None, str]] = []

    def run(self, requests: Sequence[ChunkRequest], batch_size: int, *,
            on_done: Callable[[int], None] | None = None) -> list[ChunkResult]:
        self.seen += [(r.language, r.prompt) for r in requests]
        return super().run(requests, batch_size, on_done=on_done)


def test_each_job_is_transcribed_with_its_own_options(pipeline: Pipeline, tmp_path: Path) -> None:
    a, b, c = wav(tmp_path / "a.wav"), wav(tmp_path / "b.wav", seed=2), wav(tmp_path / "c.wav", seed=3)
    engine = Requests(pipeline.engine)
    progress: list[tuple[int, int, int]] = []
    results = runner.run_jobs(Pipeline(engine, pipeline.options), [  # type: ignore[arg-type]
        _spec(1, a, options=JobOptions(language="zh", glossary={"你好": "您好"}, timestamps=True)),
        _spec(2, b),
        _spec(3, c, options=JobOptions(language="English", context="Acme board", glossary={"world": "Welt"}),
              outputs={"json": tmp_path / "c.json"}),
    ], overwrite=False, max_duration_s=None, on_progress=lambda *p: progress.append(p))
    assert [(r.outcome, r.language) for r in results] == [("done", "zh"), ("done", "en"), ("done", "en")]
    assert (tmp_path / "a.txt").read_text() == "[00:00:00] 您好世界\n"
    assert (tmp_path / "b.txt").read_text() == "hello world\n"
    assert json.loads((tmp_path / "c.json").read_text())["text"] == "hello Welt"
    assert sorted(engine.seen, key=str) == sorted([("Chinese", ""), (None, ""), ("English", "Acme board")], key=str)
    assert {p[0] for p in progress} == {1, 2, 3}


def test_job_options_lay_a_jobs_settings_over_the_pipelines() -> None:
    base = TranscribeOptions(language="English", context="base", glossary={"a": "b"}, max_chunk_s=20, batch_size=4)
    mine = runner.job_options(base, JobOptions(language="yue", context="Team HK", glossary={"x": "y"}, speakers=2))
    assert mine == dataclasses.replace(base, language="Cantonese", context="Team HK", glossary={"x": "y"}, speakers=2)
    assert runner.job_options(base, JobOptions()).language is None  # auto: detected per chunk


def test_a_jobs_output_folder_is_a_root_no_link_below_is_followed(pipeline: Pipeline, tmp_path: Path) -> None:
    a = wav(tmp_path / "in" / "a.wav")
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    (elsewhere / "deep").mkdir(parents=True)
    (out / "sub").symlink_to(elsewhere)  # without the root, only the last folder would be opened link-free
    (result,) = runner.run_jobs(pipeline, [_spec(1, a, outputs={"txt": out / "sub" / "deep" / "a.txt"},
                                                 failure_note=out / "sub" / "deep" / "a.failed.txt", out_dir=out)],
                                overwrite=False, max_duration_s=None)
    assert result.outcome == "final" and "symbolic link" in result.error
    assert list((elsewhere / "deep").iterdir()) == []


def test_a_recording_is_read_with_no_link_below_its_watched_folder(pipeline: Pipeline, tmp_path: Path) -> None:
    """Its subfolder moved out of the watched folder after queueing and a link left in its place:
    the same file, outside the root now, is not read (the error is the read's, not the write's)."""
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    outside.mkdir()
    a = wav(inbox / "sub" / "a.wav")
    spec = dataclasses.replace(_spec(1, a, outputs={"txt": tmp_path / "out" / "a.txt"},
                                     failure_note=tmp_path / "out" / "a.failed.txt", out_dir=tmp_path / "out"),
                               root=inbox)
    os.rename(inbox / "sub", outside / "sub")
    (inbox / "sub").symlink_to(outside / "sub")
    (result,) = runner.run_jobs(pipeline, [spec], overwrite=False, max_duration_s=None)
    assert result.outcome == "final" and "a folder on its path" in result.error, result.error
    assert not (tmp_path / "out" / "a.txt").exists()
    os.unlink(inbox / "sub")
    os.rename(outside / "sub", inbox / "sub")  # back where it was queued: transcribed
    (result,) = runner.run_jobs(pipeline, [spec], overwrite=False, max_duration_s=None)
    assert result.outcome == "done" and (tmp_path / "out" / "a.txt").read_text() == "hello world\n"


def test_a_recording_longer_than_a_group_is_transcribed_in_windows_with_the_same_result(
        pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_windows import _meeting

    from scribed.engine import windows

    path = _meeting(tmp_path / "board.wav")
    (whole,) = runner.run_jobs(pipeline, [_spec(1, path)], overwrite=True, max_duration_s=None)
    want = path.with_suffix(".txt").read_text()
    fed: list[int] = []
    real = windows.WindowFeed.__call__

    def spy(self: windows.WindowFeed, offset: int, block: object, last: bool) -> int:
        fed.append(offset)
        return real(self, offset, block, last)  # type: ignore[arg-type]

    monkeypatch.setattr(windows.WindowFeed, "__call__", spy)
    monkeypatch.setattr(runner, "MAX_GROUP_SECONDS", 20.0)
    monkeypatch.setattr(runner, "WINDOW_S", 12.0)
    progress: list[tuple[int, int, int]] = []
    (result,) = runner.run_jobs(pipeline, [_spec(2, path)], overwrite=True, max_duration_s=None,
                                on_progress=lambda *p: progress.append(p))
    assert whole.outcome == result.outcome == "done" and len(fed) >= 4
    assert path.with_suffix(".txt").read_text() == want and want.strip()
    assert result.audio_s == pytest.approx(whole.audio_s) and whole.audio_s > 40 and progress


def test_a_windowed_recording_that_fails_its_checks_writes_nothing(
        pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_windows import _meeting

    path = _meeting(tmp_path / "cut.wav")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # the header still promises the whole length
    monkeypatch.setattr(runner, "MAX_GROUP_SECONDS", 20.0)
    monkeypatch.setattr(runner, "WINDOW_S", 12.0)
    (result,) = runner.run_jobs(pipeline, [_spec(1, path)], overwrite=True, max_duration_s=None)
    assert result.outcome == "final" and "truncated" in result.error
    assert not path.with_suffix(".txt").exists()
