"""Tests for scribed.media.decoders: the bounded resampling buffer and the header sniffers.

The decoders themselves are exercised through decode_audio in test_audio.py (every container).
"""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import soundfile as sf

from scribed.media.decoders import MonoResampler, TooLong, Windows, mp3_has_toc, wav_declared_seconds

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


def _windowed(signal: np.ndarray, size: int, again: int, frame: int = 1000) -> list[tuple[int, np.ndarray, bool, int]]:
    """Feed ``signal`` through a windowed sink whose consumer asks for ``again`` samples again;
    returns (offset, copy of the block, last, address of the block's data) per block."""
    seen: list[tuple[int, np.ndarray, bool, int]] = []

    def consume(offset: int, block: np.ndarray, last: bool) -> int:
        seen.append((offset, block.copy(), last, block.__array_interface__["data"][0]))
        return again

    windows = Windows(size, consume)
    sink = MonoResampler(expect_seconds=signal.size / SR, windows=windows)
    for start in range(0, signal.size, frame):
        sink.add(signal[start:start + frame], SR)
    rest = sink.finish()
    assert windows.emitted + rest.size == signal.size  # what decode_audio reports as the length
    windows.emit(rest, last=True)
    return seen


@pytest.mark.parametrize("again", [0, 700, 5000])
def test_windows_overlap_by_what_the_consumer_asks_for_again(again: int) -> None:
    signal = np.arange(SR * 8 + 123, dtype=np.float32)  # resampled (appended) a second at a time
    seen = _windowed(signal, size=SR, again=again)
    assert len(seen) >= 5 and [last for _, _, last, _ in seen] == [False] * (len(seen) - 1) + [True]
    for (offset, block, _, _), (next_offset, _, _, _) in itertools.pairwise(seen):
        assert next_offset == offset + block.size - again  # the next block starts with those samples
        assert block.size - (again if offset else 0) >= SR  # each block brings a window of new audio
    for offset, block, _, _ in seen:
        assert np.array_equal(block, signal[offset:offset + block.size])  # nothing lost, moved or doubled
    assert seen[-1][0] + seen[-1][1].size == signal.size


def test_a_window_is_the_decoders_own_buffer_not_a_copy() -> None:
    """Every block is handed over in place: one buffer, reused, so a window is in memory once."""
    seen = _windowed(np.ones(SR * 4, np.float32), size=SR // 2, again=800)
    assert len({address for *_, address in seen}) == 1


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
