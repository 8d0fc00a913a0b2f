"""Recordings on disk -> transcripts on disk. Shared by ``scribed transcribe`` and the daemon's worker.

Contract: :func:`transcribe_files` decodes each file (a bad one fails alone with a clear
reason), transcribes the good ones together in cross-file batches (groups bounded by total
audio length so memory stays flat), writes every requested format atomically, and returns one
:class:`FileOutcome` per input, in input order. Recordings themselves are only ever read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger

from scribed import output
from scribed.config import Config
from scribed.engine import render
from scribed.engine.pipeline import Pipeline
from scribed.engine.types import TranscribeOptions, Transcript
from scribed.errors import ScribedError
from scribed.media.audio import DecodedAudio, decode_audio

# Decoded audio held at once: 3 hours of 16 kHz float32 is ~700 MB.
MAX_GROUP_SECONDS = 3 * 3600.0


@dataclass(frozen=True)
class OutputSpec:
    formats: tuple[str, ...] = ("txt",)
    out_dir: Path | None = None
    root: Path | None = None  # the watched folder a source lives under (keeps layout in out_dir)
    timestamps: bool = False


@dataclass
class FileOutcome:
    path: Path
    ok: bool
    error: str | None = None
    outputs: dict[str, Path] = field(default_factory=dict)
    duration_s: float = 0.0
    language: str | None = None
    failures: int = 0  # chunks reported as possibly incomplete


Event = Callable[[str, Path, dict[str, object]], None]


def transcribe_files(pipeline: Pipeline, paths: Sequence[Path], spec: OutputSpec | Sequence[OutputSpec], *,
                     on_event: Event | None = None) -> list[FileOutcome]:
    """Transcribe ``paths``; ``spec`` is one OutputSpec for all or one per path.

    ``on_event(kind, path, info)`` reports "decoded", "chunk" (info: done/total) and "written".
    """
    specs = list(spec) if isinstance(spec, Sequence) else [spec] * len(paths)
    outcomes = {i: FileOutcome(Path(p), ok=False) for i, p in enumerate(paths)}
    group: dict[int, DecodedAudio] = {}
    seconds = 0.0

    def emit(kind: str, path: Path, **info: object) -> None:
        if on_event:
            on_event(kind, path, info)

    def flush() -> None:
        nonlocal seconds
        if not group:
            return
        results = pipeline.transcribe(
            group, progress=lambda key, done, total: emit("chunk", Path(paths[key]), done=done, total=total))
        for i, transcript in results.items():
            _write(outcomes[i], transcript, specs[i])
            emit("written", outcomes[i].path, outputs=outcomes[i].outputs)
        group.clear()
        seconds = 0.0

    for i, raw in enumerate(paths):
        path = Path(raw)
        try:
            audio = decode_audio(path)
        except ScribedError as exc:
            outcomes[i].error = str(exc)
            logger.error("{}", exc)
            continue
        outcomes[i].duration_s = audio.duration_s
        emit("decoded", path, duration_s=audio.duration_s)
        if seconds + audio.duration_s > MAX_GROUP_SECONDS:
            flush()
        group[i] = audio
        seconds += audio.duration_s
    flush()
    return [outcomes[i] for i in range(len(paths))]


def _write(outcome: FileOutcome, transcript: Transcript, spec: OutputSpec) -> None:
    paths = output.output_paths(outcome.path, spec.formats, spec.out_dir, spec.root)
    try:
        render.write_transcript(transcript, paths, source=outcome.path, timestamps=spec.timestamps)
    except OSError as exc:
        outcome.error = f"cannot write transcript for {str(outcome.path)!r}: {exc.strerror or exc}"
        logger.error("{}", outcome.error)
        return
    outcome.ok = True
    outcome.outputs = paths
    outcome.language = transcript.language
    outcome.failures = len(transcript.failures)
    logger.info("transcribed {} ({:.1f} s audio, language {}) -> {}", outcome.path, transcript.duration_s,
                transcript.language or "unknown", ", ".join(p.name for p in paths.values()))
    logger.debug("transcript of {}: {}", outcome.path, transcript.text)


def open_pipeline(cfg: Config, **option_overrides: object) -> Pipeline:
    """Resolve the model offline, guard the network per policy, load the engine (imports torch)."""
    from scribed.engine.models import resolve_model

    if cfg.policy.block_network:
        from scribed.system.netguard import install_network_guard

        install_network_guard()
    path = resolve_model(cfg.model.id, cfg.model.cache_dir)
    from scribed.engine.qwen3 import AsrEngine

    engine = AsrEngine(path, device=cfg.model.device, dtype=cfg.model.dtype, name=cfg.model.id)
    engine.load()
    logger.info("model {} loaded on {} in {:.1f} s", cfg.model.id, engine.device_name, engine.load_seconds)
    return Pipeline(engine, TranscribeOptions.from_config(cfg, **option_overrides))
