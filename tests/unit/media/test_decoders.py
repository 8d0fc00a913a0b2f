"""Tests for scribed.media.decoders: the bounded resampling buffer and the header sniffers.

The decoders themselves are exercised through decode_audio in test_audio.py (every container).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from scribed.media.decoders import MonoResampler, TooLong, mp3_has_toc, wav_declared_seconds

SR = 16000


def test_resampler_output_matches_one_shot_resampling() -> None:
    import soxr

    rng = np.random.default_rng(0)
    x = (rng.standard_normal(44100 * 3) * 0.1).astype(np.float32)
    sink = MonoResampler()
    for start in range(0, x.size, 1000):  # codec-sized frames
        sink.add(x[start:start + 1000], 44100)
    out = sink.finish()
    ref = soxr.resample(x, 44100, SR, quality="HQ")
    assert out.dtype == np.float32 and out.flags.c_contiguous
    assert abs(out.size - ref.size) <= 2
    n = min(out.size, ref.size)
    assert np.max(np.abs(out[:n] - ref[:n])) < 1e-3


@pytest.mark.parametrize("hint", [None, 2.0, 10.0], ids=["unknown", "exact", "too-big"])
def test_buffer_grows_or_shrinks_to_exactly_what_was_decoded(hint: float | None) -> None:
    sink = MonoResampler(expect_seconds=hint)
    chunk = np.arange(1600, dtype=np.float32)
    for _ in range(20):  # 2 s at 16 kHz
        sink.add(chunk, SR)
    out = sink.finish()
    assert out.size == 32000 and np.array_equal(out[:1600], chunk) and np.array_equal(out[-1600:], chunk)


def test_the_limit_stops_decoding_as_soon_as_it_is_passed() -> None:
    sink = MonoResampler(max_samples=SR * 5)
    second = np.zeros(SR, np.float32)
    for _ in range(5):
        sink.add(second, SR)
    with pytest.raises(TooLong) as info:
        sink.add(second, SR)  # a whole second is resampled at once: the sixth passes the limit
    assert not info.value.declared and info.value.seconds == 6.0


def test_a_rate_change_mid_stream_is_handled() -> None:
    sink = MonoResampler()
    sink.add(np.zeros(8000, np.float32), 8000)
    sink.add(np.zeros(SR, np.float32), SR)
    assert sink.finish().size == pytest.approx(2 * SR, abs=64)


def _wav(frames: int, rate: int = 8000, patch_size: int | None = None) -> io.BytesIO:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(frames, np.int16), rate, format="WAV", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    if patch_size is not None:
        pos = data.index(b"data")
        data[pos + 4:pos + 8] = patch_size.to_bytes(4, "little")
    return io.BytesIO(bytes(data))


def test_wav_header_length_and_placeholders() -> None:
    assert wav_declared_seconds(_wav(8000 * 3)) == pytest.approx(3.0)
    assert wav_declared_seconds(_wav(800, patch_size=0xFFFFFFFF)) is None  # never patched by the recorder
    assert wav_declared_seconds(_wav(800, patch_size=0)) is None
    assert wav_declared_seconds(io.BytesIO(b"RIFF\0\0\0\0WAVE")) is None
    assert wav_declared_seconds(io.BytesIO(b"not a wav at all")) is None


def test_mp3_toc_detection() -> None:
    frame = b"\xff\xfb\x90\x00" + b"\0" * 32
    assert mp3_has_toc(io.BytesIO(frame + b"Xing" + b"\0" * 100))
    assert mp3_has_toc(io.BytesIO(b"ID3\x04\x00\x00\x00\x00\x00\x0a" + b"\0" * 10 + frame + b"Info"))
    assert not mp3_has_toc(io.BytesIO(frame + b"\0" * 300))
    assert not mp3_has_toc(io.BytesIO(b""))
