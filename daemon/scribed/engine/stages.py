"""Post-recognition stages: what the pipeline does to a transcript after the model has spoken.

Contract: a :class:`Stage` takes the decoded recording and the :class:`Transcript` assembled from
the model's output and returns a (new) Transcript; the pipeline runs its stages in order, one
recording at a time. This is where speaker turns and word timings plug in (they need the audio
and the segment times). A stage never writes files and never logs transcript text above DEBUG.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from loguru import logger

from scribed import text

if TYPE_CHECKING:
    from scribed.engine.align import WordAligner
    from scribed.engine.types import AlignerSpec, TranscribeOptions, Transcript
    from scribed.media.audio import DecodedAudio


class Stage(Protocol):
    """One step after recognition. ``name`` appears in logs."""

    name: str

    def __call__(self, audio: DecodedAudio, transcript: Transcript) -> Transcript: ...


@dataclass(frozen=True)
class CleanText:
    """Collapse repetition loops (a model stuck on a phrase) and apply the glossary, per segment."""

    glossary: Mapping[str, str] = field(default_factory=dict)
    name: str = "clean-text"

    def __call__(self, audio: DecodedAudio, transcript: Transcript) -> Transcript:
        segments = []
        for seg in transcript.segments:
            body, removed = text.collapse_repetitions(seg.text)
            if removed:
                logger.info("{}: collapsed a repetition loop ({} repeated units removed)", audio.source, removed)
            segments.append(dataclasses.replace(seg, text=text.apply_glossary(body, self.glossary)))
        return dataclasses.replace(transcript, segments=tuple(segments))


def default_stages(options: TranscribeOptions,
                   aligner: Callable[[AlignerSpec], WordAligner] | None = None) -> tuple[Stage, ...]:
    """The stages every transcript goes through, in order: clean-up, then word timings when asked.

    ``aligner(spec)`` gives the (lazily loaded) forced aligner; without it a new one is made."""
    stages: list[Stage] = [CleanText(options.glossary)]
    if options.word_timestamps:
        from scribed.engine.align import AlignWords, WordAligner  # torch and transformers: only when used

        stages.append(AlignWords((aligner or WordAligner)(options.aligner)))
    return tuple(stages)


def run_stages(stages: Sequence[Stage], audio: DecodedAudio, transcript: Transcript) -> Transcript:
    for stage in stages:
        transcript = stage(audio, transcript)
    return transcript
