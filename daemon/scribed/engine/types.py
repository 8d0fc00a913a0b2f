"""The engine's data types and the :class:`Engine` protocol. Pure data: no torch here.

Contract: options and results are frozen dataclasses; segment, turn and word times are seconds of
the original recording. Speakers are 0-based indices in order of first appearance, shown as
:func:`speaker_label` ("Speaker 1"). A segment never straddles a speaker change (the pipeline cuts
chunks at turn changes), so its words share its speaker.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from scribed import text

if TYPE_CHECKING:
    from scribed.config import Config


@dataclass(frozen=True)
class ChunkRequest:
    """One piece of audio for the model. ``language`` is a model name ("English") or None (detect).

    ``min_new_tokens`` forces at least that many generated tokens (benchmarks set it to make the
    work per chunk fixed; production requests leave it 0). The result is still cut at the first
    end-of-text token or at ``max_new_tokens``, whichever comes first.
    """

    audio: np.ndarray
    max_new_tokens: int
    language: str | None = None
    prompt: str = ""
    min_new_tokens: int = 0


@dataclass(frozen=True)
class ChunkResult:
    """What the model said. ``hit_limit``: it stopped at max_new_tokens (truncated or looping)."""

    text: str
    language: str | None
    tokens: int
    hit_limit: bool


class Engine(Protocol):
    """A speech recognizer the pipeline drives. Implementations: ``scribed.engine.qwen3.AsrEngine``.

    Contract: ``load()`` is idempotent and raises ``ModelError`` with the fix on failure;
    ``unload()`` frees the weights and a later ``run`` loads again; ``run`` returns exactly one
    result per request, in request order, batching up to ``batch_size`` requests at a time (None:
    as many as the engine picks for its device) and calling ``on_done(n)`` after each batch with
    the number of requests it finished.
    ``peak_memory_bytes()`` is the accelerator's peak allocation, or None where not measured (CPU).
    """

    name: str
    load_seconds: float

    @property
    def loaded(self) -> bool: ...

    @property
    def device_name(self) -> str: ...

    def load(self) -> None: ...

    def unload(self) -> None: ...

    def peak_memory_bytes(self) -> int | None: ...

    def run(self, requests: Sequence[ChunkRequest], batch_size: int | None, *,
            on_done: Callable[[int], None] | None = None) -> list[ChunkResult]: ...


@dataclass(frozen=True)
class AlignerSpec:
    """Where the forced aligner (word timestamps) is and how to run it; loaded only when used."""

    model_id: str = "Qwen/Qwen3-ForcedAligner-0.6B-hf"
    cache_dir: Path | None = None
    device: str = "auto"
    dtype: str = "auto"


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = None  # model language name, None = detect per chunk
    context: str = ""
    glossary: Mapping[str, str] = field(default_factory=dict)
    max_chunk_s: float = 30.0
    paragraph_pause_s: float = 3.0
    batch_size: int | None = None  # None: the engine's own choice for its device (model.batch_size: auto)
    # Output budget per chunk: fast Mandarin runs ~6 tokens/s and English ~4, so 12 tokens per
    # second plus room for the "language X<asr_text>" header is twice what real speech needs.
    tokens_per_s: float = 12.0
    base_tokens: int = 24
    max_split_depth: int = 3
    min_split_s: float = 2.0
    speakers: str | int = "off"  # off | auto | a known number of speakers
    min_speakers: int | None = None  # bounds for auto (None: 1 and 8)
    max_speakers: int | None = None
    word_timestamps: bool = False
    aligner: AlignerSpec = field(default_factory=AlignerSpec)

    @classmethod
    def from_config(cls, cfg: Config, **overrides: object) -> TranscribeOptions:
        t = cfg.transcription
        values: dict[str, object] = dict(
            language=text.language_name(t.language), context=t.context, glossary=dict(t.glossary),
            max_chunk_s=t.max_chunk_s, paragraph_pause_s=t.paragraph_pause_s,
            batch_size=None if cfg.model.batch_size == "auto" else int(cfg.model.batch_size),
            speakers=t.speakers, min_speakers=t.min_speakers, max_speakers=t.max_speakers,
            word_timestamps=t.word_timestamps,
            aligner=AlignerSpec(cfg.model.aligner_id, cfg.model.cache_dir, cfg.model.device, cfg.model.dtype),
        )
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def token_budget(self, seconds: float) -> int:
        return self.base_tokens + math.ceil(seconds * self.tokens_per_s)


def speaker_label(speaker: int) -> str:
    return f"Speaker {speaker + 1}"


@dataclass(frozen=True)
class Span:
    """A stretch of the original recording, in seconds (the base of every timed result)."""

    start: float
    end: float


@dataclass(frozen=True)
class SpeakerTurn(Span):
    """``speaker`` speaks from ``start`` to ``end`` (seconds)."""

    speaker: int


@dataclass(frozen=True)
class Word(Span):
    """One word (a character for CJK) as the aligner placed it; ``text`` keeps its punctuation."""

    text: str


@dataclass(frozen=True)
class Segment(Span):
    """One recognised chunk. ``words`` is empty unless the aligner timed them."""

    text: str
    language: str | None  # ISO code ("en", "zh", "yue") or None
    pause_before: float = 0.0
    speaker: int | None = None
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class Paragraph(Span):
    text: str
    speaker: int | None


@dataclass(frozen=True)
class ChunkFailure(Span):
    """Audio from ``start`` to ``end`` (seconds) that may be incompletely transcribed, and why."""

    reason: str


@dataclass(frozen=True)
class Transcript:
    """One recording's transcript. Stages derive new ones with ``dataclasses.replace``.

    ``no_speech``: nothing was recognised and nothing failed (silence, or a recording too short
    to hold speech); the outputs say so instead of being empty.
    """

    source: str
    duration_s: float
    language: str | None
    model: str
    segments: Sequence[Segment]
    failures: Sequence[ChunkFailure]
    paragraph_pause_s: float = 3.0
    speaker_method: str | None = None  # None: speakers off; "voices" or "channels"
    channel_of: Mapping[int, str] = field(default_factory=dict)  # speaker -> "left"/"right" (channels)
    word_timing: str | None = None  # None: off; "aligned", "partial" or "estimated"
    notes: tuple[str, ...] = ()  # what the reader should know (e.g. why words were not aligned)

    @property
    def blocks(self) -> list[Paragraph]:
        """Paragraphs: a speaker change or a pause >= paragraph_pause_s starts a new one."""
        out: list[tuple[Segment, Segment, list[str]]] = []
        for seg in self.segments:
            if not seg.text:
                continue
            if not out or seg.pause_before >= self.paragraph_pause_s or seg.speaker != out[-1][0].speaker:
                out.append((seg, seg, []))
            out[-1] = (out[-1][0], seg, out[-1][2] + [seg.text])
        return [Paragraph(first.start, last.end, text.join_texts(parts), first.speaker) for first, last, parts in out]

    @property
    def paragraphs(self) -> list[tuple[float, str]]:
        """(start time, text) per paragraph (see :attr:`blocks`)."""
        return [(p.start, p.text) for p in self.blocks]

    @property
    def speakers(self) -> list[int]:
        """The speakers heard, in order of first appearance (empty when speakers are off)."""
        return list(dict.fromkeys(s.speaker for s in self.segments if s.speaker is not None and s.text))

    @property
    def text(self) -> str:
        return "\n\n".join(p for _, p in self.paragraphs)

    @property
    def no_speech(self) -> bool:
        return not self.failures and not any(seg.text for seg in self.segments)
