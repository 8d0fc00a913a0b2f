"""Tests for scribed.engine.types: requests, options from config, and the Transcript's derived views."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from scribed.config import parse_config
from scribed.engine.types import ChunkFailure, ChunkRequest, Engine, Segment, TranscribeOptions, Transcript


def test_requests_carry_no_forced_minimum_by_default() -> None:
    request = ChunkRequest(np.zeros(16000, np.float32), max_new_tokens=40)
    assert request.min_new_tokens == 0 and request.language is None and request.prompt == ""
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.min_new_tokens = 5  # type: ignore[misc]


def test_options_have_no_benchmark_knobs() -> None:
    names = {f.name for f in dataclasses.fields(TranscribeOptions)}
    assert not {n for n in names if "fixed" in n}


def test_options_from_config_and_overrides() -> None:
    cfg = parse_config({"transcription": {"language": "zh", "context": "Q3 review", "glossary": {"a": "b"},
                                           "max_chunk_s": 20, "paragraph_pause_s": 4},
                        "model": {"batch_size": 3}})
    opts = TranscribeOptions.from_config(cfg, base_tokens=7)
    assert (opts.language, opts.context, dict(opts.glossary)) == ("Chinese", "Q3 review", {"a": "b"})
    assert (opts.max_chunk_s, opts.paragraph_pause_s, opts.batch_size, opts.base_tokens) == (20, 4, 3, 7)
    assert TranscribeOptions.from_config(parse_config({})).language is None  # auto = detect per chunk
    assert TranscribeOptions.from_config(parse_config({})).batch_size is None  # auto = the engine's choice


def test_speaker_and_word_timing_options_from_config() -> None:
    cfg = parse_config({"transcription": {"speakers": "auto", "min_speakers": 2, "max_speakers": 5,
                                          "word_timestamps": True},
                        "model": {"aligner_id": "/models/aligner", "device": "cpu", "dtype": "float32"}})
    opts = TranscribeOptions.from_config(cfg)
    assert (opts.speakers, opts.min_speakers, opts.max_speakers, opts.word_timestamps) == ("auto", 2, 5, True)
    assert (opts.aligner.model_id, opts.aligner.device, opts.aligner.dtype) == ("/models/aligner", "cpu", "float32")
    off = TranscribeOptions.from_config(parse_config({}))
    assert (off.speakers, off.word_timestamps) == ("off", False)


def test_token_budget_grows_with_length() -> None:
    opts = TranscribeOptions(tokens_per_s=12.0, base_tokens=24)
    assert opts.token_budget(0.0) == 24
    assert opts.token_budget(10.0) == 144
    assert opts.token_budget(0.05) == 25  # rounded up: never less than the audio needs


def _t(segments: list[Segment], failures: list[ChunkFailure] | None = None) -> Transcript:
    return Transcript("a.wav", 60.0, "en", "m", segments, failures or [], paragraph_pause_s=3.0)


def test_paragraphs_split_at_long_pauses_and_skip_empty_segments() -> None:
    t = _t([Segment(0, 5, "One.", "en"), Segment(5.5, 9, "", None, 0.5), Segment(9, 12, "Two.", "en", 1.0),
            Segment(20, 25, "Three.", "en", 8.0)])
    assert t.paragraphs == [(0, "One. Two."), (20, "Three.")]
    assert t.text == "One. Two.\n\nThree."


def test_a_speaker_change_starts_a_paragraph_and_speakers_are_listed_in_order() -> None:
    t = _t([Segment(0, 5, "One.", "en", speaker=1), Segment(5, 9, "Two.", "en", 0.0, speaker=1),
            Segment(9, 12, "Three.", "en", 0.0, speaker=0), Segment(12, 13, "", None, 0.0, speaker=2),
            Segment(20, 25, "Four.", "en", 7.0, speaker=0)])
    assert [(b.start, b.end, b.text, b.speaker) for b in t.blocks] == [
        (0, 9, "One. Two.", 1), (9, 12, "Three.", 0), (20, 25, "Four.", 0)]
    assert t.speakers == [1, 0]  # a speaker with nothing said is not listed
    assert t.paragraphs == [(0, "One. Two."), (9, "Three."), (20, "Four.")]


def test_no_speech_only_when_nothing_was_said_and_nothing_failed() -> None:
    assert _t([]).no_speech
    assert _t([Segment(0, 2, "", None)]).no_speech
    assert not _t([Segment(0, 2, "hi", "en")]).no_speech
    assert not _t([], [ChunkFailure(0, 30, "model output hit its length limit")]).no_speech


def test_transcripts_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _t([]).language = "zh"  # type: ignore[misc]


def test_engine_protocol_declares_what_worker_and_bench_use() -> None:
    declared = set(dir(Engine)) | set(Engine.__annotations__)
    assert {"name", "loaded", "device_name", "load_seconds", "load", "unload", "peak_memory_bytes", "run"} <= declared
