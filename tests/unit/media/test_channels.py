"""Tests for scribed.media.channels: per-channel levels while decoding, and when to split by channel.

Two-party recordings are built from the shared clips (../shared/data/speech, never copied here):
speaker A on the left, B on the right, taking turns, each channel with faint crosstalk of the
other, as phone-call recorders store them. The counter-examples are the same sound on both
channels (a mono file stored as stereo, a microphone pair with delay and reverberation) and a
recording with one silent channel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import fftconvolve

from scribed.media.audio import decode_audio
from scribed.media.channels import ChannelPower, channel_turns

SR = 16000
SPEECH = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "speech"
A_CLIP = SPEECH / "en-libritts" / "1089_134686_000007_000004.wav"
B_CLIP = SPEECH / "zh-kimi" / "asr_example.wav"


def _clips() -> tuple[np.ndarray, np.ndarray]:
    if not (A_CLIP.exists() and B_CLIP.exists()):
        pytest.skip("shared speech clips not present")
    return decode_audio(A_CLIP).samples, decode_audio(B_CLIP).samples


def _power(stereo: np.ndarray, rate: int = SR, block: int = 4096) -> np.ndarray:
    acc = ChannelPower()
    for i in range(0, stereo.shape[1], block):
        acc.add(stereo[:, i:i + block], rate)
    return acc.finish()


def _two_party(crosstalk_db: float = -25.0) -> tuple[np.ndarray, list[tuple[float, float, int]]]:
    """(2, n) call: A, B, A, B turns of ~3 s with 0.5 s gaps; truth as (start, end, channel)."""
    a, b = _clips()
    rng = np.random.default_rng(0)
    turns = [(0, a[: 3 * SR]), (1, b[: 3 * SR]), (0, a[3 * SR: 6 * SR]), (1, b[3 * SR: 6 * SR])]
    gap = SR // 2
    n = sum(len(x) for _, x in turns) + gap * (len(turns) + 1)
    out = (rng.standard_normal((2, n)) * 1e-3).astype(np.float32)
    truth, pos = [], gap
    leak = 10 ** (crosstalk_db / 20)
    for channel, x in turns:
        out[channel, pos:pos + len(x)] += x
        out[1 - channel, pos:pos + len(x)] += leak * x
        truth.append((pos / SR, (pos + len(x)) / SR, channel))
        pos += len(x) + gap
    return out, truth


def test_power_matches_direct_computation_at_any_rate_and_block_size() -> None:
    rng = np.random.default_rng(1)
    for rate in (16000, 22050, 44100):
        x = rng.standard_normal((2, rate * 2)).astype(np.float32) * np.array([[1.0], [0.1]], np.float32)
        x[0] += 0.3  # a DC offset is not power
        power = _power(x, rate, block=1000)
        assert power.shape == (2, 200)
        for k in (0, 57, 199):
            a, b = rate * k // 100, rate * (k + 1) // 100
            np.testing.assert_allclose(power[:, k], x[:, a:b].var(axis=1), rtol=1e-4)


def test_decode_audio_reports_channel_power_for_stereo_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    stereo = (rng.standard_normal((SR * 2, 2)) * [0.2, 0.02]).astype(np.float32)
    sf.write(tmp_path / "s.wav", stereo, SR, subtype="FLOAT")  # libsndfile path
    sf.write(tmp_path / "s.ogg", stereo, SR, format="OGG")  # FFmpeg path
    sf.write(tmp_path / "m.wav", stereo[:, 0], SR)
    for name in ("s.wav", "s.ogg"):
        decoded = decode_audio(tmp_path / name)
        assert decoded.channel_power is not None and decoded.channel_power.shape[0] == 2
        assert abs(decoded.channel_power.shape[1] - 200) <= 2
        left, right = np.median(decoded.channel_power, axis=1)
        assert 10 * np.log10(left / right) == pytest.approx(20.0, abs=1.5)
    wav = decode_audio(tmp_path / "s.wav")
    np.testing.assert_allclose(wav.samples, stereo.mean(axis=1), atol=1e-6)  # the downmix is unchanged
    assert decode_audio(tmp_path / "m.wav").channel_power is None


def test_a_two_party_call_is_split_by_channel() -> None:
    call, truth = _two_party()
    runs = channel_turns(_power(call))
    assert runs is not None
    labels = np.full(round(call.shape[1] / SR * 100) + 1, -1)
    for r in runs:
        labels[r.start:r.end] = r.label
    for start, end, channel in truth:  # nearly all speech of each turn goes to its speaker's channel
        inside = labels[round(start * 100):round(end * 100)]
        spoken = inside[inside >= 0]
        assert spoken.size > 100 and np.mean(spoken == channel) > 0.95


def test_double_talk_of_two_people_is_still_two_parties() -> None:
    a, b = _clips()
    n = min(len(a), len(b))
    both = np.stack([a[:n], b[:n]])  # both talk at once the whole time, each on its own channel
    assert channel_turns(_power(both)) is not None


def test_the_same_sound_on_both_channels_is_not_split() -> None:
    call, _ = _two_party()
    mono = call.mean(axis=0)
    assert channel_turns(_power(np.stack([mono, mono]))) is None
    # a microphone pair: the right channel 1.5 ms later, 4 dB quieter, each with its own reverberation
    rng = np.random.default_rng(3)
    tails = [rng.standard_normal(4000) * np.exp(-np.arange(4000) / 800) * 0.05 for _ in range(2)]
    for tail in tails:
        tail[0] = 1.0
    left = fftconvolve(mono, tails[0])[: len(mono)]
    right = 0.63 * fftconvolve(np.concatenate([np.zeros(24), mono[:-24]]), tails[1])[: len(mono)]
    assert channel_turns(_power(np.stack([left, right]).astype(np.float32))) is None


def test_one_silent_channel_is_not_two_parties() -> None:
    call, _ = _two_party()
    mono = call.mean(axis=0)
    quiet = (np.random.default_rng(4).standard_normal(len(mono)) * 1e-4).astype(np.float32)
    assert channel_turns(_power(np.stack([mono, quiet]))) is None


def test_the_shared_stereo_recording_is_split() -> None:
    path = SPEECH / "en-stereo" / "stereo_diarization.wav"
    if not path.exists():
        pytest.skip("shared speech clips not present")
    runs = channel_turns(decode_audio(path).channel_power)
    assert runs is not None and {r.label for r in runs} == {0, 1}
    assert runs[-1].label == 0 and runs[-1].end > 450  # only the left speaker talks at the end
