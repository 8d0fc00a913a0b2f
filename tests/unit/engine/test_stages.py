"""Tests for scribed.engine.stages: the clean-up stage and running stages in order."""

from __future__ import annotations

import dataclasses

import numpy as np
from loguru import logger

from scribed.engine.stages import CleanText, default_stages, run_stages
from scribed.engine.types import Segment, TranscribeOptions, Transcript
from scribed.media.audio import DecodedAudio


def _audio() -> DecodedAudio:
    return DecodedAudio(np.zeros(16000, np.float32), 16000, 1.0, "/x/a.wav", 16000, 1, "pcm_s16le", 1.0)


def _transcript(*texts: str) -> Transcript:
    return Transcript("/x/a.wav", 1.0, "en", "m", tuple(Segment(i, i + 1.0, t, "en") for i, t in enumerate(texts)), ())


def test_clean_text_collapses_loops_and_applies_the_glossary() -> None:
    loop = " ".join(["thank you"] * 20)
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="INFO")
    try:
        out = CleanText({"kubernetes": "Kubernetes"})(_audio(), _transcript(f"we use kubernetes. {loop}", "fine"))
    finally:
        logger.remove(sink)
    assert out.segments[0].text == "we use Kubernetes. thank you"
    assert out.segments[1].text == "fine"
    assert [s.start for s in out.segments] == [0, 1]  # times untouched
    assert any("/x/a.wav" in m and "repetition loop" in m for m in messages)


def test_default_stages_come_from_the_options() -> None:
    (stage,) = default_stages(TranscribeOptions(glossary={"a": "b"}))
    assert isinstance(stage, CleanText) and dict(stage.glossary) == {"a": "b"}


def test_word_timestamps_add_the_alignment_stage_last() -> None:
    from scribed.engine.align import AlignWords
    from scribed.engine.types import AlignerSpec

    made: list[AlignerSpec] = []

    def aligner(spec: AlignerSpec) -> object:
        made.append(spec)
        return object()

    spec = AlignerSpec("/models/aligner")
    stages = default_stages(TranscribeOptions(word_timestamps=True, aligner=spec), aligner)  # type: ignore[arg-type]
    assert [type(s) for s in stages] == [CleanText, AlignWords] and made == [spec]


@dataclasses.dataclass
class Tag:
    """A stage that appends its mark to every segment and records the order it ran in."""

    mark: str
    calls: list[str]
    name: str = "tag"

    def __call__(self, audio: DecodedAudio, transcript: Transcript) -> Transcript:
        self.calls.append(self.mark)
        return dataclasses.replace(transcript, segments=tuple(
            dataclasses.replace(s, text=s.text + self.mark) for s in transcript.segments))


def test_stages_run_in_order_on_the_previous_result() -> None:
    calls: list[str] = []
    out = run_stages([Tag("1", calls), Tag("2", calls)], _audio(), _transcript("a", "b"))
    assert calls == ["1", "2"]
    assert [s.text for s in out.segments] == ["a12", "b12"]
    assert run_stages([], _audio(), _transcript("a")).segments[0].text == "a"
