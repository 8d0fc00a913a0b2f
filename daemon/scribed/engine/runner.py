"""Recordings on disk -> transcripts on disk. Shared by ``scribed transcribe`` and the daemon's worker.

Contract:
- :func:`transcribe_files` (the CLI) and :func:`run_jobs` (the worker, with the daemon's
  :class:`~scribed.protocol.JobSpec` s) decode each file (a bad one fails alone with a clear
  reason), transcribe the good ones together in cross-file batches (groups bounded by total
  audio length so memory stays flat; a longer recording alone, window by window while it is
  decoded, :mod:`scribed.engine.windows`), write every requested format atomically, and return one
  outcome per input, in input order. Recordings themselves are only ever read.
- Every failure is classified here, by exception type, never by message (:func:`classify`):
  ``final`` (the file is bad: AudioError, or an output path held by a link or a folder),
  ``skipped`` (an output path held by a regular file scribed did not write: another scribed on
  the same share, or a person, wrote a transcript meanwhile; logged at INFO, not an error),
  ``changed`` (the recording is not, or no longer, the file that was queued),
  ``transient`` (no space, I/O error, read-only or forbidden output, out of memory),
  ``retry`` (anything else).
- A job's recording is checked against its queued identity when it is opened, after it is
  decoded, and again after its transcript is written: a result for other content is "changed".
- Each job is transcribed with its own :class:`~scribed.protocol.JobOptions` (its folder's
  language, context, glossary, speakers; timestamps when rendering) laid over the pipeline's
  options (:func:`job_options`). Recordings with the same options share model batches; those
  with other options go through a pipeline with those options on the same engine (the engine
  never batches requests of different language or prompt together anyway).
"""

from __future__ import annotations

import dataclasses
import errno
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger

from scribed import errors, output, text
from scribed.config import Config
from scribed.engine import render
from scribed.engine.pipeline import Pipeline
from scribed.engine.types import TranscribeOptions, Transcript
from scribed.engine.windows import WINDOW_S, WindowFeed, windowed
from scribed.identity import FileIdentity
from scribed.media.audio import DecodedAudio, decode_audio, probe_duration
from scribed.protocol import JobOptions, JobSpec, Outcome, Result

# Decoded audio held at once, whatever the backlog: 20 minutes of 16 kHz float32 is ~77 MB and
# still fills batches of 16 x 30 s chunks. A recording its header says is longer is transcribed
# window by window as it is decoded (engine.windows) when its options allow.
MAX_GROUP_SECONDS = 20 * 60.0
# Errors of the output side that go away by themselves (space freed, disk back, permission fixed).
TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES})


@dataclass(frozen=True)
class OutputSpec:
    formats: tuple[str, ...] = ("txt",)
    out_dir: Path | None = None
    root: Path | None = None  # the watched folder a source lives under (keeps layout in out_dir)
    timestamps: bool = False
    overwrite: bool = True  # the CLI replaces its earlier outputs, as before


@dataclass
class FileOutcome:
    path: Path
    ok: bool = False
    error: str | None = None
    outputs: dict[str, Path] = field(default_factory=dict)
    duration_s: float = 0.0
    language: str | None = None
    failures: int = 0  # chunks reported as possibly incomplete
    outcome: Outcome = "retry"
    written: dict[str, FileIdentity] = field(default_factory=dict)


@dataclass(frozen=True)
class _Task:
    path: Path
    outputs: dict[str, Path]
    expect: FileIdentity | None
    replaceable: dict[str, FileIdentity]
    timestamps: bool
    overwrite: bool
    root: Path | None = None  # no symlink below it is followed when writing
    options: TranscribeOptions | None = None  # None: the pipeline's own
    source_root: Path | None = None  # the watched folder: no symlink below it is followed when reading


Event = Callable[[str, Path, dict[str, object]], None]


def classify(exc: BaseException) -> Outcome:
    """The outcome a failure means (see the module contract)."""
    if isinstance(exc, errors.RecordingChanged):
        return "changed"
    if isinstance(exc, errors.TranscriptTaken):
        return "skipped"
    if isinstance(exc, (errors.AudioError, errors.OutputTaken)):
        return "final"
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":  # torch's CUDA OOM
        return "transient"
    if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
        return "transient"
    return "retry"


def transcribe_files(pipeline: Pipeline, paths: Sequence[Path], spec: OutputSpec | Sequence[OutputSpec], *,
                     on_event: Event | None = None, max_duration_s: float | None = None) -> list[FileOutcome]:
    """Transcribe ``paths``; ``spec`` is one OutputSpec for all or one per path.

    ``on_event(kind, path, info)`` reports "decoded", "chunk" (info: done/total) and "written".
    """
    specs = list(spec) if isinstance(spec, Sequence) else [spec] * len(paths)
    tasks = [_Task(Path(p), output.output_paths(Path(p), s.formats, s.out_dir, s.root), None, {}, s.timestamps,
                   s.overwrite) for p, s in zip(paths, specs, strict=True)]
    return _run(pipeline, tasks, on_event, max_duration_s)


def run_jobs(pipeline: Pipeline, jobs: Sequence[JobSpec], *, overwrite: bool, max_duration_s: float | None,
             on_progress: Callable[[int, int, int], None] | None = None) -> list[Result]:
    """The worker's entry: one :class:`Result` per job, in order. ``on_progress(job_id, done, total)``.

    Outputs are written without following a symlink below the job's watched folder (or below
    its ``out_dir`` when they go there)."""
    tasks = [_Task(j.path, dict(j.outputs), j.identity, dict(j.replaceable), j.options.timestamps, overwrite,
                   _output_root(j), job_options(pipeline.options, j.options), j.root) for j in jobs]
    ids = {t.path: j.job_id for t, j in zip(tasks, jobs, strict=True)}

    def on_event(kind: str, path: Path, info: dict[str, object]) -> None:
        if kind == "chunk" and on_progress:
            on_progress(ids[path], int(info["done"]), int(info["total"]))  # type: ignore[call-overload]

    outcomes = _run(pipeline, tasks, on_event, max_duration_s)
    return [Result(j.job_id, o.outcome, o.error, o.written, o.duration_s, o.language, o.failures)
            for j, o in zip(jobs, outcomes, strict=True)]


def job_options(base: TranscribeOptions, options: JobOptions) -> TranscribeOptions:
    """``base`` with a job's own settings: every field the two have in common (so ``speakers``
    reaches the engine once TranscribeOptions has it), the language as the model names it."""
    common = {f.name for f in dataclasses.fields(base)} & {f.name for f in dataclasses.fields(options)}
    given = {name: getattr(options, name) for name in common}
    given.update(language=text.language_name(options.language), glossary=dict(options.glossary))
    return dataclasses.replace(base, **given)


def _output_root(job: JobSpec) -> Path | None:
    for root in (job.root, job.out_dir):
        if root is not None and all(p.is_relative_to(root) for p in (*job.outputs.values(), job.failure_note)):
            return root
    return None


def _run(pipeline: Pipeline, tasks: list[_Task], on_event: Event | None,
         max_duration_s: float | None) -> list[FileOutcome]:
    outcomes = [FileOutcome(t.path) for t in tasks]
    group: dict[int, DecodedAudio] = {}
    seconds = 0.0
    pipelines: list[Pipeline] = [pipeline]  # one per set of options met, all on the same engine

    def emit(kind: str, path: Path, **info: object) -> None:
        if on_event:
            on_event(kind, path, info)

    def with_options(options: TranscribeOptions | None) -> Pipeline:
        options = options or pipeline.options
        found = next((p for p in pipelines if p.options == options), None)
        if found is None:
            found = pipeline.with_options(options)  # shares the engine and the loaded analysers
            pipelines.append(found)
        return found

    def transcribe(chosen: Pipeline, part: dict[int, DecodedAudio]) -> None:
        try:
            results = chosen.transcribe(
                part, progress=lambda key, done, total: emit("chunk", tasks[key].path, done=done, total=total))
        except Exception as exc:  # the whole part failed (e.g. out of memory): each file says so
            for i in part:
                _fail(outcomes[i], exc, f"transcribing {str(tasks[i].path)!r} failed: {type(exc).__name__}: {exc}")
            results = {}
        for i, transcript in results.items():
            _write(outcomes[i], tasks[i], transcript)
            emit("written", outcomes[i].path, outputs=outcomes[i].outputs)

    def flush() -> None:
        nonlocal seconds
        parts: dict[int, dict[int, DecodedAudio]] = {}  # by the index of its pipeline
        for i, audio in group.items():
            chosen = with_options(tasks[i].options)
            parts.setdefault(pipelines.index(chosen), {})[i] = audio
        for index, part in parts.items():
            transcribe(pipelines[index], part)
        group.clear()
        seconds = 0.0

    def transcribe_windowed(i: int, chosen: Pipeline) -> None:
        task, outcome = tasks[i], outcomes[i]
        feed = WindowFeed(chosen, i, str(task.path),
                          progress=lambda key, done, total: emit("chunk", task.path, done=done, total=total))
        try:
            audio = decode_audio(task.path, expect=task.expect, max_duration_s=max_duration_s, on_window=feed,
                                 window_s=WINDOW_S, root=task.source_root)
            transcript = feed.transcript(audio)
        except (errors.ScribedError, OSError, MemoryError) as exc:
            _fail(outcome, exc, str(exc))
            return
        except Exception as exc:  # the model failed on a window: this file says so
            _fail(outcome, exc, f"transcribing {str(task.path)!r} failed: {type(exc).__name__}: {exc}")
            return
        outcome.duration_s = audio.duration_s
        emit("decoded", task.path, duration_s=audio.duration_s)
        _write(outcome, task, transcript)
        emit("written", outcome.path, outputs=outcome.outputs)

    for i, task in enumerate(tasks):
        chosen = with_options(task.options)
        if windowed(chosen.options) and (probe_duration(task.path, root=task.source_root) or 0.0) > MAX_GROUP_SECONDS:
            transcribe_windowed(i, chosen)
            continue
        try:
            audio = decode_audio(task.path, expect=task.expect, max_duration_s=max_duration_s, root=task.source_root)
        except (errors.ScribedError, OSError, MemoryError) as exc:
            _fail(outcomes[i], exc, str(exc))
            continue
        outcomes[i].duration_s = audio.duration_s
        emit("decoded", task.path, duration_s=audio.duration_s)
        if seconds + audio.duration_s > MAX_GROUP_SECONDS:
            flush()
        group[i] = audio
        seconds += audio.duration_s
    flush()
    return outcomes


def _fail(outcome: FileOutcome, exc: BaseException, message: str) -> None:
    outcome.outcome = classify(exc)
    outcome.error = message
    logger.log("INFO" if outcome.outcome == "skipped" else "ERROR", "{}", message)


def _write(outcome: FileOutcome, task: _Task, transcript: Transcript) -> None:
    try:
        written = render.write_transcript(transcript, task.outputs, source=task.path, timestamps=task.timestamps,
                                          replaceable=task.replaceable, overwrite=task.overwrite, root=task.root)
    except (OSError, errors.ScribedError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        _fail(outcome, exc, f"cannot write transcript for {str(outcome.path)!r}: {detail}")
        outcome.written = dict(getattr(exc, "written", {}))  # formats placed before it: scribed's own
        return
    outcome.written = dict(written)
    if task.expect is not None and not _unchanged(task.path, task.expect):
        outcome.outcome = "changed"
        outcome.error = f"recording {str(task.path)!r} changed while it was transcribed"
        logger.info("{}", outcome.error)
        return
    outcome.ok, outcome.outcome = True, "done"
    outcome.outputs = dict(task.outputs)
    outcome.language = transcript.language
    outcome.failures = len(transcript.failures)
    logger.info("transcribed {} ({:.1f} s audio, language {}) -> {}", outcome.path, transcript.duration_s,
                transcript.language or "unknown", ", ".join(p.name for p in task.outputs.values()))
    logger.debug("transcript of {}: {}", outcome.path, transcript.text)


def _unchanged(path: Path, expect: FileIdentity) -> bool:
    try:
        return expect.same_file(os.lstat(path))
    except OSError:
        return False


def open_pipeline(cfg: Config, **option_overrides: object) -> Pipeline:
    """Open the configured engine (offline; imports torch) and wrap it in a pipeline."""
    from scribed.engine.factory import open_engine

    if cfg.policy.block_network:  # idempotent: also when a process did not harden itself first
        from scribed.system.netguard import install_network_guard

        install_network_guard()
    return Pipeline(open_engine(cfg), TranscribeOptions.from_config(cfg, **option_overrides))
