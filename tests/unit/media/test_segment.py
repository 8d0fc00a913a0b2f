"""Tests for scribed.media.segment: chunk planning on synthetic signals and on real recordings.

Synthetic signals pin each rule (silence, bursts, long gaps, continuous speech, short pauses,
the quietest point). The real test concatenates the shared clips (../shared/data/speech, never
copied here) with known gaps, from 0.5 s to 10 minutes, silent or filled with hiss, pink-ish
noise or hum, and checks that every cut lands in a gap or at a quiet point and no speech is lost.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from scipy.signal import butter, sosfilt

from scribed.media.segment import Chunk, SegmentOptions, find_speech, plan_chunks, quietest_point

SR = 16000
SPEECH_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "speech"
EDGE_S = 0.3  # a clip's first and last 0.3 s need not be covered (the brief's definition)


# ----------------------------------------------------------------------------------------- helpers


def _babble(seconds: float, rng: np.random.Generator, level_db: float = -20.0) -> np.ndarray:
    """Speech-like noise: a 4 Hz syllable envelope that never goes quiet, so it has no pause."""
    n = round(seconds * SR)
    t = np.arange(n) / SR
    envelope = 0.35 + 0.65 * np.abs(np.sin(np.pi * 4.0 * t + rng.uniform(0, np.pi)))
    noise = rng.standard_normal(n) * envelope
    return (noise * 10 ** (level_db / 20) / np.sqrt(np.mean(noise**2))).astype(np.float32)


def _noise(seconds: float, rng: np.random.Generator, level_db: float) -> np.ndarray:
    return (rng.standard_normal(round(seconds * SR)) * 10 ** (level_db / 20)).astype(np.float32)


def _check_invariants(chunks: list[Chunk], samples: np.ndarray, options: SegmentOptions) -> None:
    """The contract of plan_chunks, for any input."""
    max_len = round(options.max_chunk_s * SR) + 1
    prev_end = 0
    for chunk in chunks:
        assert 0 <= prev_end <= chunk.start < chunk.end <= len(samples), chunks
        assert chunk.end - chunk.start <= max_len, chunk
        assert chunk.pause_before_s == pytest.approx((chunk.start - prev_end) / SR, abs=1e-9)
        prev_end = chunk.end
    covered = np.zeros(len(samples) + 1, dtype=np.int32)
    for chunk in chunks:
        covered[chunk.start] += 1
        covered[chunk.end] -= 1
    covered = np.cumsum(covered)[:-1]
    for start, end in find_speech(samples, options=options):
        assert np.all(covered[start:end] == 1), f"speech [{start}, {end}) not covered exactly once"


def _cut_points(chunks: list[Chunk]) -> list[tuple[int, int]]:
    """(end of one chunk, start of the next) for each cut."""
    return [(a.end, b.start) for a, b in itertools.pairwise(chunks)]


# --------------------------------------------------------------------------------------- synthetic


def test_silence_and_steady_noise_give_no_chunks() -> None:
    rng = np.random.default_rng(0)
    assert plan_chunks(np.zeros(0, np.float32)) == []
    assert plan_chunks(np.zeros(60 * SR, np.float32)) == []
    assert find_speech(np.zeros(60 * SR, np.float32)) == []
    hiss = _noise(60, rng, -50.0)  # room tone is not speech
    assert plan_chunks(hiss) == []


def test_single_burst_gives_one_padded_chunk() -> None:
    x = np.zeros(10 * SR, np.float32)
    x[4 * SR : 6 * SR] = _babble(2.0, np.random.default_rng(1))
    (chunk,) = plan_chunks(x)
    assert 3.7 <= chunk.start_s <= 4.0 and 6.0 <= chunk.end_s <= 6.5
    assert chunk.pause_before_s == pytest.approx(chunk.start_s)
    assert chunk.duration_s == pytest.approx(chunk.end_s - chunk.start_s)


def test_recording_shorter_than_min_chunk_gives_one_chunk() -> None:
    x = np.zeros(SR // 2, np.float32)
    x[SR // 10 : 4 * SR // 10] = _babble(0.3, np.random.default_rng(2))
    chunks = plan_chunks(x)
    assert len(chunks) == 1
    _check_invariants(chunks, x, SegmentOptions())


def test_ten_minute_pause_is_skipped() -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([_babble(3, rng), np.zeros(600 * SR, np.float32), _babble(3, rng)])
    first, second = plan_chunks(x)
    assert first.end_s < 4.0 and second.start_s > 602.0
    assert 599.0 < second.pause_before_s <= 600.0
    assert first.duration_s + second.duration_s < 8.0  # the silence costs nothing


def test_continuous_speech_is_cut_at_its_quietest_points() -> None:
    rng = np.random.default_rng(4)
    x = _babble(95, rng)
    dips = (22.0, 45.0, 68.0)  # 150 ms quieter stretches: too short to be pauses
    for at in dips:
        x[round(at * SR) : round((at + 0.15) * SR)] *= 0.03
    chunks = plan_chunks(x)
    _check_invariants(chunks, x, SegmentOptions())
    assert len(chunks) == 4
    assert chunks[0].start == 0 and chunks[-1].end == len(x)  # all of it is speech
    for (end, start), at in zip(_cut_points(chunks), dips, strict=True):
        assert end == start, "a cut inside speech skips nothing"
        assert at - 0.05 <= end / SR <= at + 0.2


def test_short_pauses_are_cut_only_when_needed() -> None:
    rng = np.random.default_rng(5)

    def speech_with_breaths(seconds: float) -> list[np.ndarray]:
        parts = []
        for _ in range(round(seconds / 2)):
            parts += [_babble(1.8, rng), np.zeros(SR // 5, np.float32)]  # 0.2 s < min_silence_s
        return parts

    short = np.concatenate(speech_with_breaths(24))
    assert len(plan_chunks(short)) == 1  # fits: no cut at all

    long = np.concatenate([*speech_with_breaths(24), np.zeros(SR * 8 // 10, np.float32), *speech_with_breaths(24)])
    chunks = plan_chunks(long)
    _check_invariants(chunks, long, SegmentOptions())
    ((end, start),) = _cut_points(chunks)  # one cut, in the only real pause (24.0 s to 24.8 s)
    assert 24.0 <= end / SR <= 24.8 and end == start  # a short pause is split, not skipped


def test_quietest_point_finds_a_planted_dip() -> None:
    rng = np.random.default_rng(6)
    x = _babble(20, rng)
    x[9 * SR : 9 * SR + SR // 10] *= 0.02  # inside the searched middle half (5 s to 15 s)
    x[2 * SR : 2 * SR + SR // 10] = 0.0  # quieter, but outside it
    assert 9 * SR <= quietest_point(x, 0, len(x)) <= 9 * SR + SR // 10
    assert 2 * SR <= quietest_point(x, 0, len(x), search=(0.05, 0.95)) <= 2 * SR + SR // 10
    assert 9 * SR <= quietest_point(x, 4 * SR, 14 * SR) <= 9 * SR + SR // 10
    assert 100 < quietest_point(x, 100, 104) < 104  # too short to search: the middle
    with pytest.raises(ValueError):
        quietest_point(x, 5, 6)


@pytest.mark.parametrize("seed", range(8))
def test_invariants_on_random_recordings(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    parts = []
    for _ in range(rng.integers(5, 30)):
        if rng.random() < 0.5:
            parts.append(_babble(rng.uniform(0.05, 40.0), rng, rng.uniform(-45, -10)))
        elif rng.random() < 0.5:
            parts.append(np.zeros(round(rng.uniform(0.05, 20) * SR), np.float32))
        else:
            parts.append(_noise(rng.uniform(0.05, 20), rng, rng.uniform(-70, -45)))
    x = np.concatenate(parts)
    options = SegmentOptions(
        max_chunk_s=float(rng.choice([30.0, 8.0, 3.0])),
        pad_s=float(rng.choice([0.0, 0.2, 0.5])),
        min_chunk_s=float(rng.choice([0.5, 1.0, 2.0])),
    )
    _check_invariants(plan_chunks(x, options=options), x, options)


# ------------------------------------------------------------------------------------- real audio


def _frames_db(x: np.ndarray, frame: int = 400, hop: int = 160) -> np.ndarray:
    """Power of 25 ms frames every 10 ms, in dB."""
    n = max(1 + (len(x) - frame) // hop, 0)
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    return 10 * np.log10(np.mean(x[idx].astype(np.float64) ** 2, axis=1) + 1e-12)


def _active(x: np.ndarray, top_db: float, min_gap_s: float) -> list[tuple[int, int]]:
    """Sample ranges within ``top_db`` of the clip's loudest frame, joined across shorter gaps.

    Measured above 100 Hz, where speech is: a clip that ends in a rumble (hello_en does) is
    not speech there.
    """
    db = _frames_db(sosfilt(_HIGH_PASS, x))
    loud = np.flatnonzero(db > db.max() - top_db)
    if loud.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(loud) * 160 > min_gap_s * SR)
    starts = np.concatenate([[loud[0]], loud[breaks + 1]])
    ends = np.concatenate([loud[breaks], [loud[-1]]])
    return [(int(a) * 160, min(int(b) * 160 + 400, len(x))) for a, b in zip(starts, ends, strict=True)]


_HIGH_PASS = butter(4, 100, "highpass", fs=SR, output="sos")


def _gap(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = round(seconds * SR)
    if kind == "silent":
        return np.zeros(n, np.float32)
    if kind == "hiss":  # white noise at -50 dBFS
        return _noise(seconds, rng, -50.0)
    if kind == "pink":  # 1/f noise above 20 Hz at -40 dBFS
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1 / SR)
        spectrum /= np.sqrt(np.maximum(freqs, 40.0))
        spectrum[freqs < 20] = 0
        pink = np.fft.irfft(spectrum, n)
        return (pink * 10 ** (-40 / 20) / pink.std()).astype(np.float32)
    t = np.arange(n) / SR  # "hum": 50 Hz and harmonics at -40 dBFS
    hum = sum(np.sin(2 * np.pi * 50 * k * t + k) / k for k in (1, 2, 3)) + 0.05 * rng.standard_normal(n)
    return (hum * 10 ** (-40 / 20) / hum.std()).astype(np.float32)


Recording = tuple[np.ndarray, list[tuple[int, int, str]], list[tuple[int, int, str]]]


@pytest.fixture(scope="module")
def long_recording() -> Recording:
    if not (SPEECH_DIR / "manifest.jsonl").is_file():
        pytest.skip(f"shared speech data not present at {SPEECH_DIR}")
    return build_long_recording()


def build_long_recording(seed: int = 2024) -> Recording:
    """The clips, trimmed, in random order with known gaps: (samples, clips, gaps)."""
    clips = []
    for line in (SPEECH_DIR / "manifest.jsonl").read_text().splitlines():
        entry = json.loads(line)
        x, sr = sf.read(SPEECH_DIR.parent / entry["file"], dtype="float32", always_2d=True)
        x = x.mean(axis=1)
        x = soxr.resample(x, sr, SR).astype(np.float32) if sr != SR else x
        # the clip's known interval is its audible part: leading and trailing room tone more
        # than 25 dB under its loudest frame is not speech, and is left out
        parts = _active(x, 25.0, 1e9)
        clips.append((entry["uttid"], x[parts[0][0] : parts[-1][1]]))
    rng = np.random.default_rng(seed)
    gap_s = [0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0]
    kinds = ["silent", "hiss", "pink", "hum"]
    pieces = [np.zeros(SR, np.float32)]
    where, gaps, pos = [], [], SR
    for i, k in enumerate(rng.permutation(len(clips))):
        name, x = clips[k]
        where.append((pos, pos + len(x), name))
        pos += len(x)
        seconds = 600.0 if i == len(clips) // 2 else gap_s[i % len(gap_s)]
        kind = "hiss" if seconds > 30 else kinds[i % len(kinds)]
        pieces += [x, _gap(kind, seconds, rng)]
        gaps.append((pos, pos + round(seconds * SR), kind))
        pos += round(seconds * SR)
    return np.concatenate(pieces), where, gaps


def test_real_recording_cuts_in_gaps_and_covers_speech(long_recording) -> None:
    samples, clips, gaps = long_recording
    assert len(samples) > 10 * 60 * SR
    options = SegmentOptions()
    chunks = plan_chunks(samples, options=options)  # its speed is measured by the bench, not asserted here
    _check_invariants(chunks, samples, options)

    covered = np.zeros(len(samples) + 1, dtype=np.int32)
    for chunk in chunks:
        covered[chunk.start] += 1
        covered[chunk.end] -= 1
    covered = np.cumsum(covered)[:-1] > 0
    edge = round(EDGE_S * SR)
    for start, end, name in clips:
        # each clip minus its first and last 0.3 s, and minus its own silences of 1 s or more
        # (apollo11's radio squelch between transmissions), must be covered
        for a, b in _active(samples[start:end], 30.0, 1.0):
            missed = np.count_nonzero(~covered[start + a + edge : start + b - edge])
            assert missed == 0, f"{name}: {missed / SR:.2f} s of speech in [{a / SR:.2f}, {b / SR:.2f}) not covered"

    cuts = _cut_points(chunks)
    in_short_clip = 0
    for end, start in cuts:
        split = [c for c in clips if c[0] + edge < end and start < c[1] - edge]
        if not split:
            continue  # in a known gap
        # inside a clip: only at a quiet point (20 dB under the clip's speech), and in a clip
        # short enough to fit one chunk only rarely: a clip's own pause (jfk's 1 s one) can be
        # longer than the 0.5 s gap next to it, and then it is the better cut
        (c_start, c_end, name) = split[0]
        around = samples[max(end - SR // 20, 0) : end + SR // 20]
        level = 10 * np.log10(np.mean(around.astype(np.float64) ** 2) + 1e-12)
        speech = np.percentile(_frames_db(samples[c_start:c_end]), 90)
        assert level < speech - 20, f"cut at {end / SR:.2f} s in {name} at {level:.0f} dB (speech {speech:.0f})"
        in_short_clip += c_end - c_start <= options.max_chunk_s * SR
    assert in_short_clip <= 0.1 * len(cuts), f"{in_short_clip} of {len(cuts)} cuts inside short clips"

    for start, end, kind in gaps:  # the gaps are (nearly) all skipped, noisy ones included
        inner = covered[start + SR // 2 : end - SR // 2]
        if inner.size > 5 * SR:
            assert np.mean(inner) < 0.05, f"{kind} gap of {(end - start) / SR:.0f} s mostly in chunks"
    ten_minutes = max(gaps, key=lambda g: g[1] - g[0])
    assert not covered[ten_minutes[0] + SR : ten_minutes[1] - SR].any()


def test_speech_frames_on_levels_agrees_with_find_speech() -> None:
    from scribed.media.segment import SILENT_DB, speech_frames

    rng = np.random.default_rng(7)
    x = np.concatenate([_noise(1.0, rng, -60), _babble(2.0, rng), _noise(1.5, rng, -60), _babble(1.0, rng)])
    frames = x[: len(x) // 160 * 160].reshape(-1, 160).astype(np.float64)
    power = np.convolve(frames.var(axis=1), np.ones(5) / 5, mode="same")
    power[:2], power[-2:] = frames.var(axis=1)[:3].mean(), frames.var(axis=1)[-3:].mean()  # edges as "nearest"
    db = np.maximum(10 * np.log10(np.maximum(power, 1e-30)), SILENT_DB)
    expected = [(a // 160, b // 160) for a, b in find_speech(x)]
    got = speech_frames(db)
    assert len(got) == len(expected) == 2
    for (a, b), (c, d) in zip(got, expected, strict=True):
        assert abs(a - c) <= 2 and abs(b - d) <= 2
