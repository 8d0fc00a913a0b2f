"""Tests for scribed.engine.pipeline with the real tiny Qwen3-ASR engine (never mocked).

A thin recording wrapper around the engine counts what the pipeline asks for; the model itself
runs through transformers' real generate path.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from fixtures.tinymodel import PHRASE_EN, PHRASE_ZH, _speechlike
from scribed.engine.pipeline import Analysers, Pipeline
from scribed.engine.qwen3 import AsrEngine
from scribed.engine.stages import CleanText
from scribed.engine.types import ChunkRequest, ChunkResult, TranscribeOptions, Transcript
from scribed.media.audio import SAMPLE_RATE, DecodedAudio


class Recording:
    """Passes every call to the real engine and keeps the requests it was sent."""

    def __init__(self, engine: AsrEngine) -> None:
        self.engine = engine
        self.name = engine.name
        self.requests: list[ChunkRequest] = []

    def run(self, requests: Sequence[ChunkRequest], batch_size: int, *,
            on_done: Callable[[int], None] | None = None) -> list[ChunkResult]:
        self.requests += requests
        return self.engine.run(requests, batch_size, on_done=on_done)


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> AsrEngine:
    e = AsrEngine(tiny_model, device="cpu", dtype="float32", name="tiny")
    e.load()
    return e


def _decoded(samples: np.ndarray, name: str) -> DecodedAudio:
    return DecodedAudio(samples.astype(np.float32), SAMPLE_RATE, samples.size / SAMPLE_RATE, name, SAMPLE_RATE, 1,
                        "pcm_s16le", samples.size / SAMPLE_RATE)


def _speech_with_pause(seed: int, pause_s: float = 4.0) -> DecodedAudio:
    rng = np.random.default_rng(seed)
    quiet = (rng.standard_normal(int(pause_s * SAMPLE_RATE)) * 1e-4).astype(np.float32)
    return _decoded(np.concatenate([_speechlike(rng, 3.0), quiet, _speechlike(rng, 3.0)]), f"/x/talk{seed}.wav")


def test_recordings_share_batches_and_each_gets_its_transcript(engine: AsrEngine) -> None:
    rec = Recording(engine)
    progress: list[tuple[object, int, int]] = []
    out = Pipeline(rec, TranscribeOptions(batch_size=8)).transcribe(
        {"a": _speech_with_pause(1), "b": _speech_with_pause(2)}, progress=lambda *p: progress.append(p))
    assert set(out) == {"a", "b"}
    for key, t in out.items():
        assert t.source == f"/x/talk{1 if key == 'a' else 2}.wav" and t.model == "tiny" and t.language == "en"
        assert len(t.segments) == 2 and [s.text for s in t.segments] == [PHRASE_EN, PHRASE_EN]
        assert t.segments[0].end <= t.segments[1].start and t.segments[1].pause_before > 2.0
        assert t.text == f"{PHRASE_EN}\n\n{PHRASE_EN}"  # the 4 s pause starts a paragraph
        assert [p[1:] for p in progress if p[0] == key] == [(1, 2), (2, 2)]
    assert len(rec.requests) == 4 and all(r.min_new_tokens == 0 for r in rec.requests)


def test_forced_language_goes_to_every_request(engine: AsrEngine) -> None:
    rec = Recording(engine)
    (t,) = Pipeline(rec, TranscribeOptions(language="Chinese", context="kick-off")).transcribe(
        {0: _speech_with_pause(3)}).values()
    assert {(r.language, r.prompt) for r in rec.requests} == {("Chinese", "kick-off")}
    assert t.language == "zh" and t.text == f"{PHRASE_ZH}\n\n{PHRASE_ZH}"


@dataclasses.dataclass
class Mark:
    mark: str
    seen: list[tuple[str, str, str]]
    name: str = "mark"

    def __call__(self, audio: DecodedAudio, transcript: Transcript) -> Transcript:
        self.seen.append((self.mark, audio.source, transcript.segments[0].text))
        return dataclasses.replace(transcript, segments=tuple(
            dataclasses.replace(s, text=f"{s.text} {self.mark}") for s in transcript.segments))


def test_stages_run_in_order_after_recognition(engine: AsrEngine) -> None:
    seen: list[tuple[str, str, str]] = []
    stages = [CleanText({"hello": "Hallo"}), Mark("[1]", seen), Mark("[2]", seen)]
    (t,) = Pipeline(engine, TranscribeOptions(), stages=stages).transcribe({0: _speech_with_pause(4)}).values()
    assert seen == [("[1]", "/x/talk4.wav", "Hallo world"), ("[2]", "/x/talk4.wav", "Hallo world [1]")]
    assert [s.text for s in t.segments] == ["Hallo world [1] [2]"] * 2


def test_default_stages_apply_the_glossary(engine: AsrEngine) -> None:
    pipeline = Pipeline(engine, TranscribeOptions(glossary={"world": "Welt"}))
    (t,) = pipeline.transcribe({0: _speech_with_pause(5)}).values()
    assert t.text == "hello Welt\n\nhello Welt"


def test_silence_asks_the_model_nothing_and_says_no_speech(engine: AsrEngine) -> None:
    rec = Recording(engine)
    rng = np.random.default_rng(6)
    silence = _decoded((rng.standard_normal(300 * SAMPLE_RATE) * 1e-5).astype(np.float32), "/x/quiet.wav")
    blip = _decoded(np.zeros(SAMPLE_RATE // 10, np.float32), "/x/blip.wav")  # 0.1 s
    out = Pipeline(rec, TranscribeOptions()).transcribe({"s": silence, "b": blip, "v": _speech_with_pause(7)})
    assert out["s"].no_speech and out["b"].no_speech and not out["v"].no_speech
    assert out["s"].duration_s == 300.0 and out["s"].language is None
    assert len(rec.requests) == 2  # only the speech was sent


def test_truncated_chunks_are_split_then_listed_as_failures(engine: AsrEngine) -> None:
    rec = Recording(engine)
    rng = np.random.default_rng(8)
    audio = _decoded(_speechlike(rng, 6.0), "/x/long.wav")
    # 2 tokens cannot hold "language English<asr_text>hello world"
    opts = TranscribeOptions(tokens_per_s=0.0, base_tokens=2, max_split_depth=1, min_split_s=1.0)
    (t,) = Pipeline(rec, opts).transcribe({0: audio}).values()
    assert len(rec.requests) == 3  # the chunk, then its two halves
    assert len(t.failures) == 2 and all("length limit" in f.reason for f in t.failures)
    assert t.failures[0].start == 0.0 and t.failures[1].end == pytest.approx(6.0, abs=0.01)
    assert not t.no_speech


SPEECH = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "speech"


def _meeting(names: list[str], seed: int) -> tuple[DecodedAudio, object]:
    from scribed.tools.meetings import VOICES, build_meeting

    if not (SPEECH / VOICES[names[0]][0]).exists():
        pytest.skip("shared speech clips not present")
    meeting = build_meeting(SPEECH, names, seed=seed, turn_s=(2.0, 4.0))
    return _decoded(meeting.samples, "/x/meeting.wav"), meeting


def test_speaker_turns_cut_chunks_so_no_segment_straddles_a_change(engine: AsrEngine) -> None:
    audio, meeting = _meeting(["libri-1995", "meeting-zh"], 0)
    (t,) = Pipeline(engine, TranscribeOptions(speakers=2)).transcribe({0: audio}).values()
    assert t.speaker_method == "voices" and t.speakers == [0, 1]
    spoken = [s for s in t.segments if s.text]
    assert all(s.speaker in (0, 1) for s in spoken)
    # every true turn's speech lies in segments of one speaker, and consecutive turns differ
    for turn in meeting.truth:  # type: ignore[attr-defined]
        inside = {s.speaker for s in spoken if s.start < turn.end - 0.3 and s.end > turn.start + 0.3}
        assert len(inside) == 1
    assert len(t.blocks) >= len({(tr.speaker, i) for i, tr in enumerate(meeting.truth)}) // 3  # type: ignore[attr-defined]
    assert all(a.speaker != b.speaker or b.start - a.end >= t.paragraph_pause_s
               for a, b in itertools.pairwise(t.blocks))


def test_one_known_speaker_needs_no_voice_model_and_off_means_no_labels(engine: AsrEngine) -> None:
    analysers = Analysers()
    (one,) = Pipeline(engine, TranscribeOptions(speakers=1), analysers=analysers).transcribe(
        {0: _speech_with_pause(9)}).values()
    assert {s.speaker for s in one.segments} == {0} and analysers.speakers._encoder is None
    (off,) = Pipeline(engine, TranscribeOptions()).transcribe({0: _speech_with_pause(9)}).values()
    assert off.speaker_method is None and {s.speaker for s in off.segments} == {None}


def test_pipelines_with_other_options_share_the_analysers(engine: AsrEngine) -> None:
    base = Pipeline(engine, TranscribeOptions())
    other = base.with_options(TranscribeOptions(speakers="auto"))
    assert other.analysers is base.analysers and other.engine is base.engine
    assert other.options.speakers == "auto"


def test_missing_models_fail_when_the_pipeline_is_made(engine: AsrEngine, monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    from importlib import metadata

    from scribed.engine import voice
    from scribed.engine.types import AlignerSpec
    from scribed.errors import ModelError

    with pytest.raises(ModelError, match=re.escape("scribed model pull Qwen/Qwen3-ForcedAligner-0.6B-hf")):
        Pipeline(engine, TranscribeOptions(word_timestamps=True, aligner=AlignerSpec(cache_dir=tmp_path)))

    def absent(name: str) -> None:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(voice.metadata, "distribution", absent)
    with pytest.raises(ModelError, match="resemblyzer"):
        Pipeline(engine, TranscribeOptions(speakers="auto"))
