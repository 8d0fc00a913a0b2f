"""Speaker turns and word timings end to end: `scribed transcribe` and `scribed run --once` on
meetings built from the shared clips (written to tmp_path, never into the repo), with the trained
tiny Qwen3-ASR, the real voice encoder and the tiny forced aligner (tests/fixtures/aligner.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from e2e_helpers import Env

from fixtures.aligner import tiny_aligner
from scribed.cli import main
from scribed.tools.meetings import build_meeting

FORMATS = ("txt", "srt", "vtt", "json")
LABEL = re.compile(r"^(?:\[\d\d:\d\d:\d\d\] )?Speaker (\d+): ")


def _meeting(speech_dir: Path, path: Path) -> Path:
    meeting = build_meeting(speech_dir, ["libri-1995", "meeting-zh"], seed=0)
    sf.write(path, meeting.samples, 16000, subtype="FLOAT")
    return path


def _call(speech_dir: Path, path: Path) -> Path:
    """A two-party call: each person on a channel, the other's voice faintly in it."""
    from scribed.media.audio import decode_audio

    a = decode_audio(speech_dir / "en-libritts" / "1089_134686_000007_000004.wav").samples[: 6 * 16000]
    b = decode_audio(speech_dir / "zh-kimi" / "asr_example.wav").samples[: 6 * 16000]
    gap = np.zeros(8000, np.float32)
    left = np.concatenate([gap, a[:48000], gap, np.zeros(48000), gap, a[48000:], gap, np.zeros(48000)])
    right = np.concatenate([gap, np.zeros(48000), gap, b[:48000], gap, np.zeros(48000), gap, b[48000:]])
    noise = np.random.default_rng(0).standard_normal((2, len(left))).astype(np.float32) * 1e-3
    stereo = np.stack([left + 0.05 * right, right + 0.05 * left]) + noise
    sf.write(path, stereo.T, 16000, subtype="FLOAT")
    return path


def _check_labelled(outputs: dict[str, Path], count: int | None) -> dict:
    """Every format carries the same speakers; returns the json."""
    data = json.loads(outputs["json"].read_text())
    labels = [s["label"] for s in data["speakers"]]
    if count is not None:
        assert len(labels) == count
    assert labels == [f"Speaker {i}" for i in range(1, len(labels) + 1)] and len(labels) >= 1
    assert {s["speaker"] for s in data["segments"]} == set(labels)
    paragraphs = [p for p in outputs["txt"].read_text().split("\n\n") if p.strip()]
    assert all(LABEL.match(p) for p in paragraphs)
    assert len(paragraphs) >= 2 if len(labels) > 1 else len(paragraphs) >= 1
    said = {f"Speaker {m[1]}" for m in map(LABEL.match, paragraphs) if m}
    assert said == set(labels)
    srt_cues = [b.splitlines()[2] for b in outputs["srt"].read_text().strip().split("\n\n")]
    assert all(re.match(r"Speaker \d+: ", c) for c in srt_cues)
    vtt = outputs["vtt"].read_text()
    assert vtt.startswith("WEBVTT") and set(re.findall(r"<v (Speaker \d+)>", vtt)) == set(labels)
    return data


@pytest.mark.parametrize("speakers", [2, "auto"])
def test_transcribe_labels_speakers_in_every_format(speakers: int | str, tiny_model: Path, speech_dir: Path,
                                                    tmp_path: Path) -> None:
    recording = _meeting(speech_dir, tmp_path / "meeting.wav")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model": {"id": str(tiny_model), "device": "cpu"},
                                      "transcription": {"speakers": speakers, "timestamps": True}}))
    assert main(["transcribe", "--config", str(config), "--format", ",".join(FORMATS), str(recording)]) == 0
    data = _check_labelled({f: tmp_path / f"meeting.{f}" for f in FORMATS}, 2)
    assert data["speaker_method"] == "voices"


def test_transcribe_word_timestamps_through_the_aligner(tiny_model: Path, tokenizer_dir: Path, speech_dir: Path,
                                                        tmp_path: Path) -> None:
    recording = _meeting(speech_dir, tmp_path / "meeting.wav")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"id": str(tiny_model), "device": "cpu", "aligner_id": str(tiny_aligner(tokenizer_dir, "random"))},
        "transcription": {"speakers": 2, "word_timestamps": True}}))
    assert main(["transcribe", "--config", str(config), "--format", "json,srt", str(recording)]) == 0
    data = json.loads((tmp_path / "meeting.json").read_text())
    assert data["word_timing"] == "aligned" and data["words"]
    segments = data["segments"]
    for w in data["words"]:  # each word inside a segment of its speaker
        assert any(s["start"] <= w["start"] <= w["end"] <= s["end"] and s["speaker"] == w["speaker"] for s in segments)
    starts = [w["start"] for w in data["words"]]
    assert starts == sorted(starts)
    assert len(data["words"]) == sum(len(s["text"].split()) for s in segments)  # "hello world": two words each
    for block in (tmp_path / "meeting.srt").read_text().strip().split("\n\n"):
        lines = block.splitlines()
        a, b = (sum(float(x) * f for x, f in zip(t.replace(",", ".").split(":"), (3600, 60, 1), strict=True))
                for t in lines[1].split(" --> "))
        assert b - a <= 7.0 and len(lines) <= 4 and all(len(x) <= 42 for x in lines[2:])


def test_missing_aligner_is_a_clear_error(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model": {"id": str(tiny_model), "device": "cpu", "cache_dir": str(tmp_path)},
                                      "transcription": {"word_timestamps": True}}))
    sf.write(tmp_path / "a.wav", np.zeros(16000, np.float32), 16000)
    assert main(["transcribe", "--config", str(config), str(tmp_path / "a.wav")]) == 2
    assert "scribed model pull Qwen/Qwen3-ForcedAligner-0.6B-hf" in capsys.readouterr().err


@pytest.fixture(params=[2, "auto"])
def env(request: pytest.FixtureRequest, tiny_model: Path, tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path, tiny_model, transcription={"speakers": request.param},
            output={"formats": list(FORMATS)})
    yield e
    e.stop_all()


def test_run_once_labels_meetings_and_splits_a_call_by_channel(env: Env, speech_dir: Path) -> None:
    _meeting(speech_dir, env.inbox / "meeting.wav")
    _call(speech_dir, env.inbox / "call.wav")
    result = env.run("run", "--once")
    assert result.returncode == 0, result.stderr
    meeting = _check_labelled({f: env.inbox / f"meeting.{f}" for f in FORMATS}, 2)
    assert meeting["speaker_method"] == "voices"
    call = _check_labelled({f: env.inbox / f"call.{f}" for f in FORMATS}, 2)
    assert call["speaker_method"] == "channels"
    assert {s["channel"] for s in call["speakers"]} == {"left", "right"}
    first = call["segments"][0]
    assert first["start"] < 1.0 and first["speaker"] == "Speaker 1"  # the left party speaks first
    assert "told apart by channel" in env.log() or "told apart by channel" in result.stderr
