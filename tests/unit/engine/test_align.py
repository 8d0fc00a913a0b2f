"""Tests for scribed.engine.align: the real transformers aligner path with tiny offline checkpoints.

``fixed`` always predicts 0.4 s into the piece of audio it is given, so where each word lands in
the recording is known exactly; ``random`` predicts arbitrary times, which must still come out in
order and inside their segment (tests/fixtures/aligner.py).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest

from fixtures.aligner import FIXED_CLASS, tiny_aligner
from scribed.engine.align import AlignWords, WordAligner, place, supported, surface_words
from scribed.engine.types import AlignerSpec, Segment, Transcript
from scribed.errors import ModelError
from scribed.media.audio import SAMPLE_RATE, DecodedAudio


def _aligner(tokenizer_dir: Path, kind: str) -> WordAligner:
    return WordAligner(AlignerSpec(str(tiny_aligner(tokenizer_dir, kind)), device="cpu", dtype="float32"))


def _audio(seconds: float = 20.0) -> DecodedAudio:
    x = (np.random.default_rng(0).standard_normal(int(seconds * SAMPLE_RATE)) * 0.05).astype(np.float32)
    return DecodedAudio(x, SAMPLE_RATE, seconds, "/x/a.wav", SAMPLE_RATE, 1, "pcm", seconds)


def _transcript(segments: list[Segment]) -> Transcript:
    return Transcript("/x/a.wav", 20.0, "en", "m", tuple(segments), ())


SEGMENTS = [Segment(1.0, 6.0, "Hello, world. How are you?", "en", speaker=0),
            Segment(8.0, 12.5, "你好，世界。", "zh", speaker=1),
            Segment(13.0, 19.0, "Fine, thanks!", "en", speaker=0)]


def test_surface_words_keep_the_transcripts_punctuation() -> None:
    assert surface_words('"Hello," world. e-mail', ["Hello", "world", "email"]) == ['"Hello,"', "world.", "e-mail"]
    assert surface_words("你好，世界。AI模型", ["你", "好", "世", "界", "AI", "模", "型"]) == [
        "你", "好，", "世", "界。", "AI", "模", "型"]


def test_place_clamps_into_the_segment_and_keeps_order() -> None:
    seg = Segment(10.0, 12.0, "a b c d", "en")
    words = place([(0.5, 0.4, "a"), (0.3, 0.9, "b"), (1.5, 9.0, "c"), (9.0, 9.5, "d")], seg)
    assert [(w.start, w.end) for w in words] == [(10.5, 10.5), (10.5, 10.9), (11.5, 12.0), (12.0, 12.0)]


def test_supported_languages() -> None:
    assert supported("English") and supported("Chinese") and supported("Cantonese")
    assert not supported("Thai") and not supported(None)


def test_a_missing_aligner_names_the_pull_command(tmp_path: Path) -> None:
    aligner = WordAligner(AlignerSpec("Qwen/Qwen3-ForcedAligner-0.6B-hf", cache_dir=tmp_path))
    with pytest.raises(ModelError, match=re.escape("scribed model pull Qwen/Qwen3-ForcedAligner-0.6B-hf")):
        aligner.resolve()


def test_fixed_aligner_times_land_exactly_in_recording_time(tokenizer_dir: Path) -> None:
    out = AlignWords(_aligner(tokenizer_dir, "fixed"))(_audio(), _transcript(SEGMENTS))
    at = FIXED_CLASS * 0.08
    for seg in out.segments:
        assert seg.words and {(w.start, w.end) for w in seg.words} == {(round(seg.start + at, 3),) * 2}
    assert [w.text for w in out.segments[0].words] == ["Hello,", "world.", "How", "are", "you?"]
    assert [w.text for w in out.segments[1].words] == ["你", "好，", "世", "界。"]
    assert out.word_timing == "aligned" and out.notes == ()


def test_random_aligner_words_are_in_order_and_inside_their_segment(tokenizer_dir: Path) -> None:
    aligner = _aligner(tokenizer_dir, "random")
    out = AlignWords(aligner)(_audio(), _transcript(SEGMENTS))
    words = [w for seg in out.segments for w in seg.words]
    assert len(words) == 5 + 4 + 2
    for seg in out.segments:
        assert all(seg.start <= w.start <= w.end <= seg.end for w in seg.words)
    assert all(a.end <= b.start for a, b in itertools.pairwise(words))
    samples = _audio().samples
    pieces = [(samples[round(s.start * SAMPLE_RATE):round(s.end * SAMPLE_RATE)], s.text, "English")
              for s in (SEGMENTS[0], SEGMENTS[2])]
    together = aligner.align(pieces)
    assert [aligner.align([p])[0] for p in pieces] == together  # padding in a batch changes nothing


def test_unsupported_languages_keep_the_estimate_and_say_so(tokenizer_dir: Path) -> None:
    segments = [*SEGMENTS[:1], Segment(8.0, 12.0, "สวัสดีครับ", "th")]
    out = AlignWords(_aligner(tokenizer_dir, "fixed"))(_audio(), _transcript(segments))
    assert out.segments[0].words and not out.segments[1].words
    assert out.word_timing == "partial" and "Thai" in out.notes[0] and "1 of 2" in out.notes[0]
    only_thai = AlignWords(_aligner(tokenizer_dir, "fixed"))(_audio(), _transcript(segments[1:]))
    assert only_thai.word_timing == "estimated"
