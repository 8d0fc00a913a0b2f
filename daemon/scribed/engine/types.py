"""The engine's data types and the :class:`Engine` protocol. Pure data: no torch here.

Contract: options and results are frozen dataclasses; segment times are seconds of the original recording.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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
    result per request, in request order, batching up to ``batch_size`` requests at a time and
    calling ``on_done(n)`` after each batch with the number of requests it finished.
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

    def run(self, requests: Sequence[ChunkRequest], batch_size: int, *,
            on_done: Callable[[int], None] | None = None) -> list[ChunkResult]: ...


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
    """Audio from ``start`` to ``end`` (seconds) that may be incompletely transcribed, and why."""

    start: float
    end: float
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

    @property
    def no_speech(self) -> bool:
        return not self.failures and not any(seg.text for seg in self.segments)
