"""Tests for scribed.engine.voice: resemblyzer's GE2E weights through our own network code."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from scribed.engine import voice
from scribed.errors import ModelError

SPEECH = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "speech"


@pytest.fixture(scope="module")
def encoder() -> voice.VoiceEncoder:
    return voice.VoiceEncoder()


def test_missing_weights_name_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def absent(name: str) -> None:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(voice.metadata, "distribution", absent)
    with pytest.raises(ModelError, match=re.escape("pip install --no-deps resemblyzer==0.1.4")):
        voice.weights_path()


def test_weights_are_found_without_importing_resemblyzer() -> None:
    import sys

    assert voice.weights_path().name == "pretrained.pt"
    assert "resemblyzer" not in sys.modules  # its modules import webrtcvad; we never load them


def test_features_are_40_band_mels_every_10_ms(encoder: voice.VoiceEncoder) -> None:
    mel = encoder.features(np.zeros(16000, np.float32) + 0.01)
    assert mel.shape == (101, 40) and mel.dtype == np.float32


def test_embeddings_are_unit_vectors_in_input_order(encoder: voice.VoiceEncoder) -> None:
    rng = np.random.default_rng(0)
    windows = [rng.random((n, 40), dtype=np.float32) for n in (200, 120, 200, 80)]
    out = encoder.embed(windows)
    assert out.shape == (4, 256)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(encoder.embed([windows[1]])[0], out[1], atol=1e-5)  # batching changes nothing


def test_the_same_voice_is_closer_than_another_voice(encoder: voice.VoiceEncoder) -> None:
    from scribed.media.audio import decode_audio

    paths = [SPEECH / "en-libritts" / "1089_134686_000007_000004.wav", SPEECH / "zh-kimi" / "asr_example.wav"]
    if not all(p.exists() for p in paths):
        pytest.skip("shared speech clips not present")
    halves = []
    for path in paths:
        x = decode_audio(path).samples
        x = x * (0.0316 / np.sqrt(np.mean(x**2)))  # -30 dBFS
        mel = encoder.features(x)
        half = len(mel) // 2
        halves += [encoder.embed([mel[i:i + 200] for i in range(start, start + half - 200, 50)]).mean(axis=0)
                   for start in (0, half)]
    a1, a2, b1, b2 = (h / np.linalg.norm(h) for h in halves)
    assert a1 @ a2 > a1 @ b1 + 0.1 and b1 @ b2 > b1 @ a2 + 0.1
