"""Tests for scribed.engine.windows: a long recording transcribed window by window as it is decoded.

The real tiny Qwen3-ASR checkpoint runs (never a mocked model); recordings are real WAV files
decoded by scribed.media.audio, once whole and once in windows, and must give the same transcript.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fixtures.tinymodel import _speechlike
from scribed.engine.pipeline import Pipeline
from scribed.engine.qwen3 import AsrEngine
from scribed.engine.types import TranscribeOptions
from scribed.engine.windows import WindowFeed, windowed
from scribed.media.audio import SAMPLE_RATE, decode_audio


@pytest.fixture(scope="module")
def pipeline(tiny_model: Path) -> Pipeline:
    engine = AsrEngine(tiny_model, device="cpu", dtype="float32", name="tiny")
    engine.load()
    return Pipeline(engine, TranscribeOptions(max_chunk_s=6.0, batch_size=4))


def _meeting(path: Path, turns: int = 9, seed: int = 5) -> Path:
    """Speech runs of 3-5 s between pauses of 0.5-3 s (some long enough to always end a chunk)."""
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(turns):
        parts.append(_speechlike(rng, 3.0 + (i % 3)))
        parts.append((rng.standard_normal(int((0.5 + (i % 4) * 0.8) * SAMPLE_RATE)) * 1e-4).astype(np.float32))
    sf.write(path, np.concatenate(parts), SAMPLE_RATE, subtype="PCM_16")
    return path


def test_windows_give_the_transcript_of_the_whole_recording(pipeline: Pipeline, tmp_path: Path) -> None:
    path = _meeting(tmp_path / "long.wav")
    whole = decode_audio(path)
    want = pipeline.transcribe({0: whole})[0]
    feed = WindowFeed(pipeline, 0, str(path))
    audio = decode_audio(path, on_window=feed, window_s=12.0)
    got = feed.transcript(audio)
    assert audio.samples.size == 0 and audio.duration_s == pytest.approx(whole.duration_s)
    assert feed.windows >= 4  # it really was fed in pieces
    assert [(s.start, s.end, s.text) for s in got.segments] == [(s.start, s.end, s.text) for s in want.segments]
    assert got.text == want.text and got.duration_s == want.duration_s and got.language == want.language
    # one window plus the carried tail (at most a chunk and the pause after it), never the recording
    bound = (1.5 * 12.0 + pipeline.options.max_chunk_s + 3.0) * SAMPLE_RATE
    assert feed.peak_samples <= bound < whole.samples.size


def test_a_decoder_starting_over_drops_what_was_done(pipeline: Pipeline, tmp_path: Path) -> None:
    audio = decode_audio(_meeting(tmp_path / "m.wav", turns=4))
    samples = audio.samples
    feed = WindowFeed(pipeline, 0, "m.wav")
    half = samples.size // 2
    feed(0, samples[:half].copy(), False)
    again = feed(0, samples[:half].copy(), False)  # libsndfile gave up, FFmpeg starts from the beginning
    assert 0 < again < half
    feed(half - again, samples[half - again:].copy(), True)
    once = WindowFeed(pipeline, 0, "m.wav")
    assert once(0, samples[:half].copy(), False) == again
    once(half - again, samples[half - again:].copy(), True)
    got, want = feed.transcript(audio).segments, once.transcript(audio).segments
    assert [(s.start, s.end, s.text) for s in got] == [(s.start, s.end, s.text) for s in want] and want


def test_a_block_that_does_not_start_where_the_feed_asked_is_refused(pipeline: Pipeline, tmp_path: Path) -> None:
    samples = decode_audio(_meeting(tmp_path / "m.wav", turns=4)).samples
    feed = WindowFeed(pipeline, 0, "m.wav")
    half = samples.size // 2
    again = feed(0, samples[:half].copy(), False)
    with pytest.raises(ValueError, match="skipped or repeated"):
        feed(half, samples[half:].copy(), True)  # without the samples it asked to see again
    assert again > 0


def test_what_the_consumer_raises_comes_out_unchanged_and_nothing_falls_back(tmp_path: Path) -> None:
    path = _meeting(tmp_path / "boom.wav", turns=3)
    calls = []

    def consume(offset: int, block: np.ndarray, last: bool) -> None:
        calls.append(offset)
        raise RuntimeError("model ran out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        decode_audio(path, on_window=consume, window_s=2.0)
    assert calls == [0]  # not retried by the FFmpeg fallback


def test_the_last_window_waits_for_the_checks(tmp_path: Path) -> None:
    """A truncated file fails after its early windows, before its last one: nothing is kept."""
    from scribed.errors import AudioError

    path = _meeting(tmp_path / "cut.wav", turns=4)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # header still promises the whole length
    seen: list[bool] = []
    with pytest.raises(AudioError, match="truncated"):
        decode_audio(path, on_window=lambda offset, block, last: seen.append(last), window_s=2.0)
    assert seen and not any(seen)


def test_options_that_read_the_whole_recording_are_not_windowed(pipeline: Pipeline) -> None:
    assert windowed(TranscribeOptions())
    assert not windowed(TranscribeOptions(word_timestamps=True))
    assert not windowed(TranscribeOptions(speakers="auto"))
    with pytest.raises(ValueError, match="whole"):
        WindowFeed(pipeline.with_options(TranscribeOptions(speakers=2)), 0, "x.wav")
