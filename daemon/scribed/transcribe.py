"""The transcription pipeline: recordings in, :class:`Transcript` out. Does not import torch.

Contract:
- :class:`Pipeline` takes an engine (``scribed.asr.AsrEngine`` or anything with the same
  ``run``/``name``) and any number of decoded recordings; all their chunks share batches of
  ``batch_size``, longest first so padding stays small.
- Speech is never dropped silently: a chunk whose output hit its token limit (truncation or a
  repetition loop) is split at its quietest point and both halves are transcribed again, up to
  ``max_split_depth`` times; what still fails is kept (collapsed) and listed in
  ``Transcript.failures`` so the outputs and the log can say so.
- Segment times are seconds of the original recording.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
from loguru import logger

from scribed import segment, text
from scribed.audio import SAMPLE_RATE, DecodedAudio

if TYPE_CHECKING:
    from scribed.config import Config


@dataclass(frozen=True)
class ChunkRequest:
    """One piece of audio for the model. ``language`` is a model name ("English") or None (detect)."""

    audio: np.ndarray
    max_new_tokens: int
    language: str | None = None
    prompt: str = ""


@dataclass(frozen=True)
class ChunkResult:
    """What the model said. ``hit_limit``: it stopped at max_new_tokens (truncated or looping)."""

    text: str
    language: str | None
    tokens: int
    hit_limit: bool


class Engine(Protocol):
    name: str

    def run(self, requests: Sequence[ChunkRequest], batch_size: int, *,
            on_done: Callable[[int], None] | None = None,
            fixed_tokens: int | None = None) -> list[ChunkResult]: ...


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = None  # model language name, None = detect per chunk
    context: str = ""
    glossary: Mapping[str, str] = field(default_factory=dict)
    max_chunk_s: float = 30.0
    paragraph_pause_s: float = 3.0
    batch_size: int = 16
    # Output budget per chunk: fast Mandarin runs ~6 tokens/s and English ~4, so 12 tokens per
    # second plus room for the "language X<asr_text>" header is twice what real speech needs.
    tokens_per_s: float = 12.0
    base_tokens: int = 24
    max_split_depth: int = 3
    min_split_s: float = 2.0
    fixed_tokens_per_s: float | None = None  # benchmarks: generate exactly this many tokens per second

    @classmethod
    def from_config(cls, cfg: Config, **overrides: object) -> TranscribeOptions:
        t = cfg.transcription
        values: dict[str, object] = dict(
            language=text.language_name(t.language), context=t.context, glossary=dict(t.glossary),
            max_chunk_s=t.max_chunk_s, paragraph_pause_s=t.paragraph_pause_s, batch_size=cfg.model.batch_size,
        )
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def token_budget(self, seconds: float) -> int:
        return self.base_tokens + math.ceil(seconds * self.tokens_per_s)


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    language: str | None  # ISO code ("en", "zh", "yue") or None
    pause_before: float = 0.0


@dataclass(frozen=True)
class ChunkFailure:
    start: float
    end: float
    reason: str


@dataclass
class Transcript:
    source: str
    duration_s: float
    language: str | None
    model: str
    segments: list[Segment]
    failures: list[ChunkFailure]
    paragraph_pause_s: float = 3.0

    @property
    def paragraphs(self) -> list[tuple[float, str]]:
        """(start time, text) per paragraph; a pause >= paragraph_pause_s starts a new one."""
        out: list[tuple[float, list[str]]] = []
        for seg in self.segments:
            if not seg.text:
                continue
            if not out or seg.pause_before >= self.paragraph_pause_s:
                out.append((seg.start, []))
            out[-1][1].append(seg.text)
        return [(start, text.join_texts(parts)) for start, parts in out]

    @property
    def text(self) -> str:
        return "\n\n".join(p for _, p in self.paragraphs)


@dataclass
class _Item:
    key: Hashable
    start: int
    end: int
    pause_before: float
    depth: int = 0


Progress = Callable[[Hashable, int, int], None]


class Pipeline:
    """Chunk, batch, generate and assemble. One instance per loaded engine; not thread-safe."""

    def __init__(self, engine: Engine, options: TranscribeOptions) -> None:
        self.engine = engine
        self.options = options

    def transcribe(self, recordings: Mapping[Hashable, DecodedAudio], *,
                   progress: Progress | None = None) -> dict[Hashable, Transcript]:
        """Transcribe several decoded recordings together; returns one Transcript per key."""
        opts = self.options
        seg_opts = segment.SegmentOptions(max_chunk_s=opts.max_chunk_s)
        pending: list[_Item] = []
        totals: dict[Hashable, int] = {}
        for key, audio in recordings.items():
            chunks = segment.plan_chunks(audio.samples, SAMPLE_RATE, seg_opts)
            totals[key] = len(chunks)
            pending += [_Item(key, c.start, c.end, c.pause_before_s) for c in chunks]
            logger.debug("{}: {} chunks planned", audio.source, len(chunks))
        done_count: Counter[Hashable] = Counter()
        finished: dict[Hashable, list[tuple[_Item, ChunkResult]]] = {k: [] for k in recordings}
        failures: dict[Hashable, list[ChunkFailure]] = {k: [] for k in recordings}
        while pending:
            # Longest first: similar lengths share a batch, and an OOM shows up on the first batch.
            pending.sort(key=lambda it: it.end - it.start, reverse=True)
            requests = [self._request(recordings[it.key].samples, it) for it in pending]
            retry: list[_Item] = []
            cursor = [0]  # engine batches finish in request order

            def tick(n: int, cursor: list[int] = cursor, pending: list[_Item] = pending) -> None:
                first = cursor[0]
                cursor[0] += n
                for it in pending[first:first + n]:
                    done_count[it.key] += 1
                    if progress:
                        progress(it.key, done_count[it.key], totals[it.key])

            fixed = None
            if opts.fixed_tokens_per_s:
                fixed = max(1, round(max(it.end - it.start for it in pending) / SAMPLE_RATE
                                     * opts.fixed_tokens_per_s))
            results = self.engine.run(requests, opts.batch_size, on_done=tick, fixed_tokens=fixed)
            for item, result in zip(pending, results, strict=True):
                if result.hit_limit and not fixed:
                    halves = self._split(recordings[item.key].samples, item)
                    if halves:
                        totals[item.key] += 1
                        retry += halves
                        logger.info("{}: chunk {}–{} hit its token limit; splitting it in two",
                                    recordings[item.key].source, text.format_clock(item.start / SAMPLE_RATE),
                                    text.format_clock(item.end / SAMPLE_RATE))
                        continue
                    reason = (f"model output hit its length limit ({result.tokens} tokens) even after "
                              f"{item.depth} split(s): possibly incomplete")
                    failures[item.key].append(ChunkFailure(item.start / SAMPLE_RATE, item.end / SAMPLE_RATE, reason))
                    logger.warning("{}: {}–{} {}", recordings[item.key].source,
                                   text.format_clock(item.start / SAMPLE_RATE),
                                   text.format_clock(item.end / SAMPLE_RATE), reason)
                finished[item.key].append((item, result))
            pending = retry
        return {key: self._assemble(recordings[key], finished[key], failures[key]) for key in recordings}

    # -- helpers -------------------------------------------------------------------------------
    def _request(self, samples: np.ndarray, item: _Item) -> ChunkRequest:
        seconds = (item.end - item.start) / SAMPLE_RATE
        return ChunkRequest(audio=samples[item.start:item.end], max_new_tokens=self.options.token_budget(seconds),
                            language=self.options.language, prompt=self.options.context)

    def _split(self, samples: np.ndarray, item: _Item) -> list[_Item] | None:
        """Two halves cut at the quietest point, or None when the depth/length limit is reached."""
        seconds = (item.end - item.start) / SAMPLE_RATE
        if item.depth >= self.options.max_split_depth or seconds < 2 * self.options.min_split_s:
            return None
        cut = segment.quietest_point(samples, item.start, item.end, SAMPLE_RATE)
        return [_Item(item.key, item.start, cut, item.pause_before, item.depth + 1),
                _Item(item.key, cut, item.end, 0.0, item.depth + 1)]

    def _assemble(self, audio: DecodedAudio, parts: list[tuple[_Item, ChunkResult]],
                  failures: list[ChunkFailure]) -> Transcript:
        segments = []
        weights: Counter[str] = Counter()
        for item, result in sorted(parts, key=lambda p: p[0].start):
            body, removed = text.collapse_repetitions(result.text)
            if removed:
                logger.info("{}: collapsed a repetition loop ({} repeated units removed)", audio.source, removed)
            body = text.apply_glossary(body, self.options.glossary)
            code = text.language_code(result.language)
            start, end = item.start / SAMPLE_RATE, item.end / SAMPLE_RATE
            if code and body:
                weights[code] += end - start
            segments.append(Segment(round(start, 3), round(end, 3), body, code, round(item.pause_before, 3)))
        forced = text.language_code(self.options.language)
        language = forced or (weights.most_common(1)[0][0] if weights else None)
        return Transcript(source=audio.source, duration_s=round(audio.duration_s, 3), language=language,
                          model=self.engine.name, segments=segments, failures=sorted(failures, key=lambda f: f.start),
                          paragraph_pause_s=self.options.paragraph_pause_s)
