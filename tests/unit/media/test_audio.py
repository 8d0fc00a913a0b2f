"""Tests for scribed.media.audio: every container we claim to read, and every way a file can be bad.

Real recordings come from ../shared/data/speech (never copied into the repo); every other format is
generated here with PyAV's encoders (or soundfile for WAV variants) into tmp_path.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

import av
import numpy as np
import pytest
import soundfile as sf
import soxr

from scribed.errors import AudioError
from scribed.identity import FileIdentity
from scribed.media import audio, decoders
from scribed.media.audio import AUDIO_EXTENSIONS, SAMPLE_RATE, DecodedAudio, decode_audio, probe_duration

REPO_ROOT = Path(__file__).resolve().parents[3]
SPEECH_DIR = REPO_ROOT.parent / "shared" / "data" / "speech"
CLIP_S = 6.0  # long enough that codec framing (<= ~50 ms) stays well under the 1% budget
LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}


# ----------------------------------------------------------------------------------------- helpers


def _signal(sr: int, seconds: float = CLIP_S, channels: int = 1) -> np.ndarray:
    """A speech-band test signal, (n, channels) float32 with identical channels, peak ~0.5."""
    t = np.arange(round(sr * seconds)) / sr
    tones = sum(np.sin(2 * np.pi * f * t + p) for f, p in ((220, 0.0), (470, 1.0), (990, 2.0)))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 1.3 * t)  # syllable-like amplitude modulation
    mono = (0.5 / 3 * tones * envelope).astype(np.float32)
    return np.repeat(mono[:, None], channels, axis=1)


def _reference(x: np.ndarray, sr: int) -> np.ndarray:
    """What decode_audio should return for the (n, channels) signal x at rate sr."""
    mono = x.mean(axis=1).astype(np.float32)
    return mono if sr == SAMPLE_RATE else soxr.resample(mono, sr, SAMPLE_RATE, quality="HQ")


def _best_correlation(a: np.ndarray, b: np.ndarray, max_lag: int = 2400) -> float:
    """Peak normalised cross-correlation over +-max_lag samples (codecs add delay and padding)."""
    size = 1 << (len(a) + len(b)).bit_length()
    xc = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    peak = max(xc[: max_lag + 1].max(), xc[-max_lag:].max())
    return float(peak / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _need_encoder(name: str) -> None:
    try:
        av.Codec(name, "w")
    except Exception:
        pytest.skip(f"this FFmpeg build has no {name!r} encoder")


def _encode(
    path: Path,
    x: np.ndarray | None,
    sr: int,
    codec: str | None,
    fmt: str,
    *,
    rate: int | None = None,
    video: str | None = None,
    seconds: float = CLIP_S,
    codec_options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    bit_rate: int | None = None,
    qscale: int | None = None,
) -> Path:
    """Encode the (n, channels) float signal x with PyAV (and/or a small video stream) into path."""
    for name in filter(None, (codec, video)):
        _need_encoder(name)
    with av.open(str(path), mode="w", format=fmt, options=container_options or {}) as out:
        vstream = None
        if video:
            vstream = out.add_stream(video, rate=10)
            vstream.width, vstream.height, vstream.pix_fmt = 64, 64, "yuv420p"
        if codec and x is not None:
            stream = out.add_stream(codec, rate=rate or sr, options=codec_options or {})
            stream.layout = LAYOUTS[x.shape[1]]
            if bit_rate:
                stream.bit_rate = bit_rate
            if qscale is not None:
                stream.codec_context.qscale = qscale
            formats = stream.codec_context.codec.audio_formats
            resampler = av.AudioResampler(
                format=formats[0].name if formats else "fltp", layout=LAYOUTS[x.shape[1]], rate=stream.rate
            )
            for start in range(0, len(x), 4096):
                planar = np.ascontiguousarray(x[start : start + 4096].T)
                frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=LAYOUTS[x.shape[1]])
                frame.sample_rate, frame.pts, frame.time_base = sr, start, Fraction(1, sr)
                for converted in resampler.resample(frame):
                    out.mux(stream.encode(converted))
            for converted in resampler.resample(None):
                out.mux(stream.encode(converted))
            out.mux(stream.encode(None))
        if vstream is not None:
            for i in range(round(seconds * 10)):
                picture = av.VideoFrame.from_ndarray(
                    np.full((64, 64, 3), i * 7 % 255, np.uint8), format="rgb24"
                )
                picture.pts = i
                out.mux(vstream.encode(picture))
            out.mux(vstream.encode(None))
    return path


def _check_decoded(
    result: DecodedAudio,
    path: Path,
    expected_s: float,
    reference: np.ndarray | None = None,
    slack_s: float = 0.0,
) -> None:
    """The contract every successful decode must meet, plus signal fidelity when we know the input.

    The decoded length must be within 1% of the container's declared length, and within 1% (plus
    ``slack_s`` of codec priming/padding) of the true length ``expected_s``.
    """
    x = result.samples
    assert isinstance(result, DecodedAudio)
    assert x.dtype == np.float32 and x.ndim == 1 and x.flags.c_contiguous
    assert result.sample_rate == SAMPLE_RATE and result.source == str(path)
    assert result.duration_s == pytest.approx(len(x) / SAMPLE_RATE)
    assert np.isfinite(x).all() and np.abs(x).max() < 1.5
    assert abs(result.duration_s - expected_s) <= 0.01 * expected_s + slack_s
    if result.container_duration_s is not None:
        assert result.duration_s == pytest.approx(result.container_duration_s, rel=0.01)
    if reference is not None:
        corr = _best_correlation(x, reference)
        assert corr > 0.9, f"signal lost in decoding: correlation {corr:.3f}"
        assert _rms(x) == pytest.approx(_rms(reference), rel=0.2), "level changed in decoding"


def _assert_audio_error(path: Path | str, keyword: str) -> AudioError:
    with pytest.raises(AudioError) as info:
        decode_audio(path)
    err = info.value
    assert err.path == str(path)
    assert Path(path).name in str(err)
    assert keyword in err.reason.lower(), err.reason
    return err


# ------------------------------------------------------------------------------ real recordings


def _manifest() -> list[Any]:
    path = SPEECH_DIR / "manifest.jsonl"
    if not path.is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no shared speech data at {SPEECH_DIR}"))]
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [pytest.param(e, id=e["file"]) for e in entries]


@pytest.mark.parametrize("entry", _manifest())
def test_real_recordings_decode(entry: dict[str, Any]) -> None:
    path = SPEECH_DIR.parent / entry["file"]
    if not path.is_file():
        pytest.skip(f"{path} listed in the manifest but absent")
    result = decode_audio(path)
    _check_decoded(result, path, entry["duration_s"])
    assert result.source_sample_rate == entry["sample_rate"]
    assert result.source_channels == entry["channels"]
    assert 0.001 < _rms(result.samples) < 0.7
    probed = probe_duration(path)
    assert probed is not None and probed == pytest.approx(entry["duration_s"], rel=0.01)


# ------------------------------------------------------------------------------- WAV and friends


@pytest.mark.parametrize(
    ("subtype", "codec"),
    [
        ("PCM_U8", "pcm_u8"),
        ("PCM_16", "pcm_s16le"),
        ("PCM_24", "pcm_s24le"),
        ("PCM_32", "pcm_s32le"),
        ("FLOAT", "pcm_f32le"),
        ("DOUBLE", "pcm_f64le"),
    ],
)
def test_wav_sample_formats(tmp_path: Path, subtype: str, codec: str) -> None:
    x = _signal(16000)
    path = tmp_path / f"{subtype}.wav"
    sf.write(path, x, 16000, subtype=subtype)
    result = decode_audio(path)
    _check_decoded(result, path, CLIP_S, _reference(x, 16000))
    assert result.codec == codec
    tolerance = 1e-2 if subtype == "PCM_U8" else 1e-4  # levels preserved exactly, not just roughly
    assert np.abs(result.samples - x[:, 0]).max() < tolerance


@pytest.mark.parametrize("sr", [8000, 11025, 22050, 24000, 44100, 48000, 96000])
def test_wav_sample_rates(tmp_path: Path, sr: int) -> None:
    x = _signal(sr)
    path = tmp_path / f"{sr}.wav"
    sf.write(path, x, sr, subtype="PCM_16")
    result = decode_audio(path)
    _check_decoded(result, path, CLIP_S, _reference(x, sr))
    assert result.source_sample_rate == sr
    assert len(result.samples) == pytest.approx(CLIP_S * SAMPLE_RATE, abs=2)


@pytest.mark.parametrize(("channels", "container"), [(1, "wav"), (2, "wav"), (6, "wav"), (8, "flac")])
def test_channels_downmix_keeps_level(tmp_path: Path, channels: int, container: str) -> None:
    x = _signal(48000, channels=channels)
    path = tmp_path / f"{channels}ch.{container}"
    sf.write(path, x, 48000, subtype="PCM_24")
    result = decode_audio(path)
    _check_decoded(result, path, CLIP_S, _reference(x, 48000))
    assert result.source_channels == channels
    # identical channels: the mean is the channel itself, so the level must not move
    assert _rms(result.samples) == pytest.approx(_rms(_reference(x[:, :1], 48000)), rel=0.01)


def test_downmix_is_mean_of_channels(tmp_path: Path) -> None:
    x = _signal(16000, channels=2)
    x[:, 1] = 0.0
    path = tmp_path / "left_only.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    assert np.allclose(decode_audio(path).samples, x[:, 0] / 2, atol=1e-6)


@pytest.mark.parametrize(
    ("subtype", "codec"),
    [
        ("ULAW", "pcm_mulaw"),
        ("ALAW", "pcm_alaw"),
        ("IMA_ADPCM", "adpcm_ima_wav"),
        ("MS_ADPCM", "adpcm_ms"),
        ("GSM610", "gsm_ms"),
    ],
)
def test_telephone_and_dictaphone_wavs(tmp_path: Path, subtype: str, codec: str) -> None:
    """8 kHz companded / ADPCM / GSM WAVs, as telephone systems and voice recorders write them."""
    x = _signal(8000)
    path = tmp_path / f"call_{subtype}.wav"
    sf.write(path, x, 8000, subtype=subtype)
    result = decode_audio(path)
    _check_decoded(result, path, CLIP_S, _reference(x, 8000), slack_s=0.05)
    assert result.codec == codec and result.source_sample_rate == 8000


@pytest.mark.parametrize(("suffix", "fmt"), [(".flac", "FLAC"), (".aiff", "AIFF"), (".caf", "CAF")])
def test_soundfile_containers(tmp_path: Path, suffix: str, fmt: str) -> None:
    x = _signal(44100, channels=2)
    path = tmp_path / f"clip{suffix}"
    sf.write(path, x, 44100, format=fmt, subtype="PCM_16")
    result = decode_audio(path)
    _check_decoded(result, path, CLIP_S, _reference(x, 44100))
    assert result.codec in {"flac", "pcm_s16le", "pcm_s16be"}


# --------------------------------------------------------------------- compressed audio and video

FASTSTART = {"container_options": {"movflags": "+faststart"}}  # MP4 index first, as phones write it
VBR_NO_XING = {"qscale": 6, "container_options": {"write_xing": "0"}}  # length unknowable w/o decoding
EXPERIMENTAL = {"codec_options": {"strict": "experimental"}}  # FFmpeg's own Vorbis encoder

# name: (file suffix, muxer, audio codec, source rate, channels, encode kwargs, expected codec)
ENCODED: dict[str, tuple[str, str, str | None, int, int, dict[str, Any], str]] = {
    "m4a-aac-voice-memo": (".m4a", "ipod", "aac", 48000, 1, {}, "aac"),
    "m4a-aac-faststart": (".m4a", "ipod", "aac", 44100, 2, FASTSTART, "aac"),
    "m4a-alac": (".m4a", "ipod", "alac", 44100, 2, {}, "alac"),
    "aac-adts": (".aac", "adts", "aac", 44100, 2, {}, "aac"),
    "mp3-cbr": (".mp3", "mp3", "libmp3lame", 44100, 2, {}, "mp3"),
    "mp3-vbr-no-xing": (".mp3", "mp3", "libmp3lame", 22050, 1, VBR_NO_XING, "mp3"),
    "ogg-opus": (".opus", "ogg", "libopus", 48000, 2, {}, "opus"),
    "ogg-vorbis": (".ogg", "ogg", "vorbis", 44100, 2, EXPERIMENTAL, "vorbis"),
    "webm-opus": (".webm", "webm", "libopus", 48000, 1, {}, "opus"),
    "amr-nb": (".amr", "amr", "libopencore_amrnb", 8000, 1, {"bit_rate": 12200}, "amr_nb"),
    "wma": (".wma", "asf", "wmav2", 44100, 2, {"bit_rate": 128000}, "wmav2"),
    "3gp-aac": (".3gp", "3gp", "aac", 16000, 1, {}, "aac"),
    "mp4-h264-aac": (".mp4", "mp4", "aac", 44100, 2, {"video": "libx264"}, "aac"),
    "mov-mpeg4-pcm": (".mov", "mov", "pcm_s16le", 48000, 2, {"video": "mpeg4"}, "pcm_s16le"),
    "mkv-h264-aac": (".mkv", "matroska", "aac", 48000, 2, {"video": "libx264"}, "aac"),
}  # fmt: skip


@pytest.mark.parametrize("case", ENCODED)
def test_encoded_formats(tmp_path: Path, case: str) -> None:
    suffix, muxer, codec, sr, channels, kwargs, expected_codec = ENCODED[case]
    x = _signal(sr, channels=channels)
    path = _encode(tmp_path / f"clip{suffix}", x, sr, codec, muxer, **kwargs)
    assert path.suffix in AUDIO_EXTENSIONS
    result = decode_audio(path)
    # lossy codecs may keep their priming and last-frame padding: up to 2048 samples at 16 kHz
    _check_decoded(result, path, CLIP_S, _reference(x, sr), slack_s=2048 / 16000)
    assert result.codec == expected_codec
    assert result.source_sample_rate == sr and result.source_channels == channels
    probed = probe_duration(path)
    assert probed is not None
    if case in ("aac-adts", "amr-nb", "mp3-vbr-no-xing"):
        # headerless streams: FFmpeg can only estimate their length from the bitrate, so neither
        # the truncation check nor container_duration_s relies on it
        assert result.container_duration_s is None
    else:
        assert result.container_duration_s is not None
        assert result.duration_s == pytest.approx(probed, rel=0.01)


def test_sample_rate_change_mid_stream(tmp_path: Path) -> None:
    """Two MP3s glued together (44.1 kHz then 22.05 kHz): both halves decoded at the right speed."""
    parts = []
    for sr in (44100, 22050):
        part = _encode(tmp_path / f"{sr}.mp3", _signal(sr), sr, "libmp3lame", "mp3", **VBR_NO_XING)
        parts.append(part.read_bytes())
    path = tmp_path / "glued.mp3"
    path.write_bytes(b"".join(parts))
    result = decode_audio(path)
    assert result.source_sample_rate == 44100 and result.container_duration_s is None
    # the decoder itself clicks at the seam, so only length and overall fidelity are checked
    assert abs(result.duration_s - 2 * CLIP_S) < 0.02 * 2 * CLIP_S
    halves = [_reference(_signal(sr), sr) for sr in (44100, 22050)]
    for half, decoded in zip(halves, np.array_split(result.samples, [len(halves[0])]), strict=True):
        assert _best_correlation(decoded, half) > 0.9


def test_content_not_extension_decides(tmp_path: Path) -> None:
    """An M4A misnamed .wav, in a folder and file name that FFmpeg could mistake for a URL."""
    folder = tmp_path / "http:"
    folder.mkdir()
    path = _encode(folder / "会议 10:30 (final).wav", _signal(44100), 44100, "aac", "ipod")
    result = decode_audio(path)
    _check_decoded(result, path, CLIP_S, _reference(_signal(44100), 44100), slack_s=0.13)
    assert result.codec == "aac"
    assert probe_duration(path) == pytest.approx(CLIP_S, rel=0.01)


def test_frame_conversion_all_sample_formats() -> None:
    """PyAV frames in every sample format, packed and planar, come out at the same level."""
    t = np.arange(1024) / 16000
    wave = 0.5 * np.sin(2 * np.pi * 440 * t)
    scaled: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "u8": lambda w: np.round(w * 128 + 128).astype(np.uint8),
        "s16": lambda w: np.round(w * 32767).astype(np.int16),
        "s32": lambda w: np.round(w * 2147483647).astype(np.int32),
        "flt": lambda w: w.astype(np.float32),
        "dbl": lambda w: w.astype(np.float64),
    }
    for kind, convert in scaled.items():
        channels = np.stack([wave, wave, wave])  # 3 identical channels
        for planar in (False, True):
            data = convert(channels) if planar else convert(channels.T.reshape(1, -1))
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(data), format=kind + ("p" if planar else ""), layout="2.1"
            )
            mono = decoders.frame_to_mono(frame)
            assert mono.dtype == np.float32
            assert np.abs(mono - wave).max() < 0.01, (kind, planar)


# ------------------------------------------------------------------------------------ bad inputs


def test_missing_file(tmp_path: Path) -> None:
    _assert_audio_error(tmp_path / "nope.wav", "not found")
    assert probe_duration(tmp_path / "nope.wav") is None


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "folder.wav").mkdir()
    _assert_audio_error(tmp_path / "folder.wav", "directory")


def test_fifo_is_not_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "pipe.wav"
    os.mkfifo(path)
    _assert_audio_error(path, "regular file")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.m4a"
    path.touch()
    _assert_audio_error(path, "empty")


@pytest.mark.parametrize("suffix", [".wav", ".mp3", ".m4a", ".ogg", ".flac", ".mp4"])
def test_random_bytes(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"noise{suffix}"
    path.write_bytes(np.random.default_rng(len(suffix)).bytes(50_000))
    _assert_audio_error(path, "not a recognised")
    assert probe_duration(path) is None


def test_permission_denied(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can read any file")
    path = tmp_path / "secret.wav"
    sf.write(path, _signal(16000, 1.0), 16000)
    path.chmod(0)
    _assert_audio_error(path, "permission")


def test_permission_denied_on_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same mapping, provoked even when running as root."""
    path = tmp_path / "locked.wav"
    sf.write(path, _signal(16000, 1.0), 16000)

    def deny(name: str, root: Any = None) -> Any:
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr(audio, "_open_file", deny)
    _assert_audio_error(path, "permission")


def test_zero_samples(tmp_path: Path) -> None:
    path = tmp_path / "header_only.wav"
    sf.write(path, np.zeros((0, 1), np.float32), 16000)
    _assert_audio_error(path, "zero samples")


def test_video_without_audio(tmp_path: Path) -> None:
    path = _encode(tmp_path / "silent_film.mp4", None, 0, None, "mp4", video="mpeg4")
    _assert_audio_error(path, "no audio track")


def _truncate(path: Path, keep: float = 0.3) -> Path:
    data = path.read_bytes()
    out = path.with_name("cut_" + path.name)
    out.write_bytes(data[: int(len(data) * keep)])
    return out


def _soundfile(path: Path) -> Path:
    sf.write(path, _signal(16000), 16000)
    return path


# Each makes an intact recording in a folder; the test cuts it to its first 30%.
TRUNCATABLE: dict[str, Callable[[Path], Path]] = {
    "m4a": lambda d: _encode(d / "memo.m4a", _signal(44100, channels=2), 44100, "aac", "ipod"),
    "m4a-faststart": lambda d: _encode(d / "memo.m4a", _signal(44100), 44100, "aac", "ipod", **FASTSTART),
    "mp3": lambda d: _encode(d / "talk.mp3", _signal(44100), 44100, "libmp3lame", "mp3"),
    "webm": lambda d: _encode(d / "call.webm", _signal(48000), 48000, "libopus", "webm"),
    "wav": lambda d: _soundfile(d / "talk.wav"),
    "flac": lambda d: _soundfile(d / "talk.flac"),
}


@pytest.mark.parametrize("kind", TRUNCATABLE)
def test_truncated(tmp_path: Path, kind: str) -> None:
    full = TRUNCATABLE[kind](tmp_path)
    decode_audio(full)  # the intact file is fine
    _assert_audio_error(_truncate(full), "truncated")


class _File(io.FileIO):
    """A real file opened as decode_audio opens it (no link followed), for tests to wrap reads."""

    def __init__(self, name: str) -> None:
        super().__init__(name, "rb", opener=lambda path, flags: os.open(path, flags | os.O_NOFOLLOW))


class _FailingFile(_File):
    """A file whose reads start failing after ``limit`` bytes, like a share that went away."""

    def __init__(self, path: str, limit: int, vanish: bool) -> None:
        super().__init__(path)
        self._path, self._limit, self._vanish = path, limit, vanish

    def readinto(self, buffer: Any) -> int:
        if self.tell() >= self._limit:
            if self._vanish and os.path.exists(self._path):
                os.unlink(self._path)
            raise OSError(5, "Input/output error")
        return super().readinto(memoryview(buffer)[: self._limit - self.tell()])


@pytest.mark.parametrize("suffix", [".wav", ".m4a"])
@pytest.mark.parametrize("vanish", [True, False], ids=["vanished", "io-error"])
def test_read_failure_mid_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, vanish: bool
) -> None:
    path = tmp_path / f"share{suffix}"
    if suffix == ".wav":
        sf.write(path, _signal(16000), 16000)
    else:
        _encode(path, _signal(44100), 44100, "aac", "ipod", **FASTSTART)
    limit = path.stat().st_size // 2
    monkeypatch.setattr(audio, "_open_file", lambda name, root=None: _FailingFile(name, limit, vanish))
    _assert_audio_error(path, "vanished" if vanish else "read error")


def test_vanished_before_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gone between the caller's listing and the open: judged on the open, so one clear reason."""
    path = tmp_path / "gone.wav"
    sf.write(path, _signal(16000, 1.0), 16000)
    real_open = audio._open_file

    def unlink_then_open(name: str, root: Any = None) -> Any:
        os.unlink(name)
        return real_open(name, root)

    monkeypatch.setattr(audio, "_open_file", unlink_then_open)
    _assert_audio_error(path, "not found")


# --------------------------------------------------------------------------------------- module


def test_extensions() -> None:
    required = ".wav .flac .ogg .oga .opus .mp3 .m4a .aac .amr .wma .webm .mp4 .mov .mkv .3gp .caf .aiff .aif"
    assert set(required.split()) <= AUDIO_EXTENSIONS
    assert all(e.startswith(".") and e == e.lower() for e in AUDIO_EXTENSIONS)


def test_import_is_light() -> None:
    code = (
        "import sys, scribed.media.audio\n"
        "heavy = [m for m in ('torch', 'av', 'soundfile', 'soxr', 'librosa', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "daemon"), *sys.path])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# ------------------------------------------------------------------------ untrusted folders, bombs


class _CountingFile(_File):
    """A real file that counts the bytes read through it (proves a decode stopped early)."""

    opened: ClassVar[list[_CountingFile]] = []

    def __init__(self, name: str, root: object = None) -> None:  # called as audio._open_file (no root here)
        super().__init__(name)
        self.read_bytes = 0
        _CountingFile.opened.append(self)

    def readinto(self, buffer: Any) -> int:
        n = super().readinto(buffer)
        self.read_bytes += n
        return n


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[_CountingFile]:
    _CountingFile.opened = []
    monkeypatch.setattr(audio, "_open_file", _CountingFile)
    return _CountingFile.opened


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The decompression bomb from the report: ~0.9 MB of FLAC holding 10 hours of digital silence."""
    path = tmp_path_factory.mktemp("bomb") / "ten_hours.flac"
    block = np.zeros(8000 * 600, np.int16)
    with sf.SoundFile(path, "w", samplerate=8000, channels=1, subtype="PCM_16", format="FLAC") as out:
        for _ in range(60):
            out.write(block)
    assert path.stat().st_size < 2_000_000
    return path


def _without_length(src: Path, dest: Path) -> Path:
    """The same FLAC with STREAMINFO's total-samples field zeroed ("unknown"), as streaming encoders write."""
    data = bytearray(src.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # the first metadata block is STREAMINFO
    packed = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)  # rate:20 channels:3 bits:5 total:36
    data[18:26] = packed.to_bytes(8, "big")
    dest.write_bytes(bytes(data))
    return dest


def test_a_bomb_is_refused_from_its_header_before_decoding(bomb: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _counting(monkeypatch)
    with pytest.raises(AudioError) as info:
        decode_audio(bomb, max_duration_s=6 * 3600)
    assert info.value.reason == "recording is 10.0 h long; the limit is transcription.max_duration_s = 6 h"
    assert files[0].read_bytes < 100_000  # the header, not the audio
    monkeypatch.undo()
    assert probe_duration(bomb) == pytest.approx(36000, abs=1)  # what the settle thread sees


def test_a_bomb_without_a_declared_length_stops_at_the_limit(bomb: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    sneaky = _without_length(bomb, tmp_path / "sneaky.flac")
    files = _counting(monkeypatch)
    with pytest.raises(AudioError, match=r"longer than 1 min \(decoding stopped there\); the limit is "
                                         r"transcription\.max_duration_s = 1 min"):
        decode_audio(sneaky, max_duration_s=60)
    # stopped near 60 s of the 10 h (one 64 KB read-ahead buffer), not at the end
    assert sum(f.read_bytes for f in files) < sneaky.stat().st_size // 4


def test_ffmpeg_path_enforces_the_limit_from_a_trusted_header_and_while_decoding(tmp_path: Path) -> None:
    m4a = _encode(tmp_path / "long.m4a", _signal(16000, 90.0), 16000, "aac", "ipod", seconds=90.0)
    limit = r"the limit is transcription\.max_duration_s = 1 min"
    with pytest.raises(AudioError, match=r"recording is 1\.5 min long; " + limit):
        decode_audio(m4a, max_duration_s=60)
    mp3 = _encode(tmp_path / "vbr.mp3", _signal(22050, 90.0), 22050, "libmp3lame", "mp3", seconds=90.0, **VBR_NO_XING)
    with pytest.raises(AudioError, match=r"longer than 30 s \(decoding stopped there\)"):
        decode_audio(mp3, max_duration_s=30)
    assert decode_audio(m4a, max_duration_s=120).duration_s == pytest.approx(90.0, abs=0.1)


def test_a_recording_within_the_limit_decodes_in_full(tmp_path: Path) -> None:
    path = tmp_path / "ok.flac"
    sf.write(path, _signal(16000), 16000)
    assert decode_audio(path, max_duration_s=CLIP_S + 0.5).duration_s == pytest.approx(CLIP_S, abs=0.01)


def test_symlinks_are_refused_never_followed(tmp_path: Path) -> None:
    private = tmp_path / "home" / "private.wav"
    private.parent.mkdir()
    sf.write(private, _signal(16000, 1.0), 16000)
    link = tmp_path / "inbox" / "x.wav"
    link.parent.mkdir()
    link.symlink_to(private)
    _assert_audio_error(link, "symbolic link")
    assert probe_duration(link) is None


def test_a_subfolder_swapped_for_a_link_is_refused_below_the_root(tmp_path: Path) -> None:
    """Queued as inbox/sub/x.wav; then sub is moved out and a link to where it went put in its
    place: the same file (same inode), now outside the root. With the root, no folder link below it
    is followed, for the decode and the probe alike; a path outside the root is refused."""
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    (inbox / "sub").mkdir(parents=True)
    outside.mkdir()
    path = inbox / "sub" / "x.wav"
    sf.write(path, _signal(16000, 1.0), 16000)
    queued = FileIdentity.of(os.stat(path))
    assert decode_audio(path, expect=queued, root=inbox).duration_s == pytest.approx(1.0, abs=0.01)
    assert probe_duration(path, root=inbox) == pytest.approx(1.0, abs=0.01)
    os.rename(inbox / "sub", outside / "sub")
    (inbox / "sub").symlink_to(outside / "sub")
    assert decode_audio(path, expect=queued).duration_s == pytest.approx(1.0, abs=0.01)  # no root: followed
    with pytest.raises(AudioError, match="a folder on its path") as info:
        decode_audio(path, expect=queued, root=inbox)
    assert info.value.path == str(path)
    assert probe_duration(path, root=inbox) is None
    with pytest.raises(AudioError, match="not inside its watched folder"):
        decode_audio(outside / "sub" / "x.wav", root=inbox)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "trap.wav"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    _assert_audio_error(fifo, "not a regular file")
    assert probe_duration(fifo) is None


def test_the_queued_identity_must_match(tmp_path: Path) -> None:
    from scribed.errors import RecordingChanged
    from scribed.identity import FileIdentity

    path = tmp_path / "memo.wav"
    sf.write(path, _signal(16000, 1.0), 16000)
    queued = FileIdentity.of(os.stat(path))
    assert decode_audio(path, expect=queued).duration_s == pytest.approx(1.0, abs=0.01)
    replacement = tmp_path / "other.wav"
    sf.write(replacement, _signal(16000, 2.0), 16000)
    os.replace(replacement, path)  # same name, another file
    with pytest.raises(RecordingChanged, match="another file now has its name"):
        decode_audio(path, expect=queued)
    now = FileIdentity.of(os.stat(path))
    with path.open("ab") as fh:
        fh.write(b"\0" * 64)  # same file, grown since it was queued
    with pytest.raises(RecordingChanged, match="size"):
        decode_audio(path, expect=now)


def test_a_recording_written_to_while_it_is_read_is_reported_as_changed(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from scribed.errors import RecordingChanged

    path = tmp_path / "growing.wav"
    sf.write(path, _signal(16000), 16000)

    class Appending(_CountingFile):
        def readinto(self, buffer: Any) -> int:
            if self.read_bytes == 0:  # the writer is still at it: more data lands after the open
                with open(path, "ab") as writer:
                    writer.write(b"\0" * 4096)
            return super().readinto(buffer)

    monkeypatch.setattr(audio, "_open_file", Appending)
    with pytest.raises(RecordingChanged, match="modified while it was read"):
        decode_audio(path)
