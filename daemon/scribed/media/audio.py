"""Turn any recording into what the model eats: 16 kHz mono float32 samples, in memory.

:func:`decode_audio` reads lossless PCM containers (WAV, FLAC, AIFF, CAF, ...) with libsndfile
(``soundfile``) and everything else -- MP3, AAC/M4A, Opus, Vorbis, AMR, WMA and the audio track
of video files -- with FFmpeg (``av``). Channels are averaged, then the signal is resampled with
soxr. Nothing is written to disk. Every failure is one :class:`~scribed.errors.AudioError` that
names the file and says why in words; codec exceptions never escape.

The heavy libraries are imported inside the functions so that importing this module stays cheap
(and never pulls in torch).
"""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from scribed.errors import AudioError

SAMPLE_RATE = 16000

#: File name extensions (lower case, with the dot) of the audio and video containers we accept.
AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {
        # lossless / PCM
        ".wav", ".wave", ".flac", ".aiff", ".aif", ".aifc", ".caf", ".w64", ".rf64", ".au",
        # compressed audio
        ".mp3", ".mp2", ".m4a", ".m4b", ".aac", ".ogg", ".oga", ".opus", ".spx", ".amr", ".awb",
        ".wma", ".weba", ".mka", ".ac3", ".wv", ".ape",
        # video containers (we take their first audio track)
        ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".3gp", ".3g2", ".avi", ".wmv", ".asf", ".flv",
        ".ts", ".mts",
    }
)  # fmt: skip

# A file is "truncated" when it decodes to less than 99% of the length its container promises.
# The absolute slack keeps very short clips from tripping on codec framing (an AAC or WMA frame is
# up to ~0.25 s at 8 kHz), which can make an intact file decode a few frames short.
_TRUNCATION_TOLERANCE = 0.01
_FRAMING_SLACK_S = 0.25

# libsndfile is exact and fast for these. Its MP3 reader is deliberately not used: for a VBR MP3
# without a Xing header it trusts a bitrate guess and silently stops early.
_SOUNDFILE_FORMATS = frozenset({"WAV", "WAVEX", "FLAC", "AIFF", "CAF", "W64", "RF64"})
_SOUNDFILE_MAGIC = frozenset({b"RIFF", b"RF64", b"riff", b"FORM", b"fLaC", b"caff"})
_SOUNDFILE_CODECS = {
    "PCM_U8": "pcm_u8", "PCM_S8": "pcm_s8", "PCM_16": "pcm_s16le", "PCM_24": "pcm_s24le",
    "PCM_32": "pcm_s32le", "FLOAT": "pcm_f32le", "DOUBLE": "pcm_f64le", "ULAW": "pcm_mulaw",
    "ALAW": "pcm_alaw", "IMA_ADPCM": "adpcm_ima_wav", "MS_ADPCM": "adpcm_ms", "GSM610": "gsm_ms",
}  # fmt: skip

# FFmpeg demuxers whose duration is written by the muxer rather than guessed from the bitrate, so
# a shortfall really means missing data. (MP3 is trusted only with a Xing/Info/VBRI header.)
_EXACT_DURATION_DEMUXERS = frozenset(
    {"mov", "mp4", "matroska", "webm", "asf", "flac", "wav", "ogg", "aiff", "caf", "w64"}
)
_INT_SCALE = {"s16": 2.0**15, "s32": 2.0**31, "s64": 2.0**63}


@dataclass(frozen=True)
class DecodedAudio:
    """A decoded recording: ``samples`` is float32, mono, 16 kHz, C-contiguous, roughly in [-1, 1].

    ``duration_s`` is ``len(samples) / sample_rate``; ``container_duration_s`` is the length the
    file's header declares, or ``None`` where it declares none (or only a bitrate estimate).
    """

    samples: np.ndarray
    sample_rate: int
    duration_s: float
    source: str
    source_sample_rate: int
    source_channels: int
    codec: str
    container_duration_s: float | None


def decode_audio(path: str | os.PathLike[str]) -> DecodedAudio:
    """Decode the first audio track of ``path`` to 16 kHz mono float32, entirely in memory.

    Raises :class:`AudioError` (and nothing else) if the file is missing, unreadable, empty, not
    audio, has no audio track, is truncated (decodes to < 99% of its declared length), vanishes
    while being read, or decodes to no samples.
    """
    name = os.fspath(path)
    reader = _Reader(_open_checked(name))
    result: _Result | None = None
    try:
        result = _decode_soundfile(reader) or _decode_av(reader, name)
    except AudioError:
        if reader.error is None:
            raise
    except OSError as exc:  # raised by our own file object rather than by a codec
        raise _read_failure(name, exc) from exc
    except Exception as exc:  # a decoder bug or an exotic stream: still one clear error per file
        raise AudioError(name, f"decoder failed: {type(exc).__name__}: {exc}") from exc
    finally:
        reader.really_close()
    if reader.error is not None:  # the libraries took the failed read for an end of file
        raise _read_failure(name, reader.error) from reader.error
    assert result is not None  # _decode_av returns or raises

    samples, src_rate, src_channels, codec, declared, trusted = result
    if samples.size == 0:
        raise AudioError(name, "decodes to zero samples (no audio in the file)")
    duration = samples.size / SAMPLE_RATE
    if trusted and declared and declared - duration > max(_TRUNCATION_TOLERANCE * declared, _FRAMING_SLACK_S):
        raise AudioError(name, f"truncated: decoded {duration:.2f} s of {declared:.2f} s")
    if not np.isfinite(samples).all():  # float WAVs can hold NaN/inf, which would poison the model
        np.nan_to_num(samples, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
    return DecodedAudio(
        samples=np.ascontiguousarray(samples, dtype=np.float32),
        sample_rate=SAMPLE_RATE,
        duration_s=duration,
        source=name,
        source_sample_rate=src_rate,
        source_channels=src_channels,
        codec=codec,
        container_duration_s=declared if trusted else None,
    )


def probe_duration(path: str | os.PathLike[str]) -> float | None:
    """Duration in seconds from the container headers, without decoding (for ETAs).

    May be an estimate (e.g. from the bitrate); ``None`` if unknown. Never raises.
    """
    name = os.fspath(path)
    try:
        if not os.path.isfile(name):  # opening a FIFO would block forever
            return None
        with open(name, "rb") as fh:
            if fh.read(4) == b"RIFF":
                wav = _wav_declared_seconds(fh)
                if wav:
                    return wav
            fh.seek(0)
            import av

            with av.open(fh, mode="r", metadata_errors="replace") as container:
                streams = container.streams.audio
                if streams and streams[0].duration and streams[0].time_base:
                    return float(streams[0].duration * streams[0].time_base)
                if container.duration:
                    return container.duration / av.time_base
    except Exception:  # a probe is best effort: the real decode reports the real problem
        return None
    return None


# --------------------------------------------------------------------------------------- internals

# samples, source rate, source channels, codec, declared duration, whether that duration is exact
_Result = tuple[np.ndarray, int, int, str, float | None, bool]


class _Reader(io.RawIOBase):
    """File wrapper that remembers the first I/O error and reports it as end of file.

    soundfile's callbacks swallow exceptions and PyAV's re-raise them at odd places, so we record
    the error ourselves and turn it into one clear AudioError after decoding. ``close`` is a no-op
    because PyAV closes the file object it is given; :meth:`really_close` releases the handle.
    """

    def __init__(self, fh: BinaryIO) -> None:
        super().__init__()
        self._fh = fh
        self.error: OSError | None = None

    def readable(self) -> bool:  # PyAV and soundfile both ask
        return True

    seekable = readable

    def readinto(self, buffer: Any) -> int:
        if self.error is not None:
            return 0
        try:
            return self._fh.readinto(buffer)  # type: ignore[attr-defined]
        except OSError as exc:
            self.error = exc
            return 0

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def close(self) -> None:
        pass

    def really_close(self) -> None:
        self._fh.close()


def _open_file(name: str) -> BinaryIO:
    """Open ``name`` for reading (a seam so tests can make the file vanish mid-read)."""
    return open(name, "rb", buffering=1 << 16)


def _open_checked(name: str) -> BinaryIO:
    try:
        st = os.stat(name)
    except OSError as exc:
        raise AudioError(name, _os_reason(exc, missing="file not found")) from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioError(name, "is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise AudioError(name, "not a regular file")
    if st.st_size == 0:
        raise AudioError(name, "empty file (0 bytes)")
    try:
        return _open_file(name)
    except OSError as exc:  # it existed a moment ago
        raise AudioError(name, _os_reason(exc, missing="file vanished while reading")) from None


def _os_reason(exc: OSError, missing: str) -> str:
    if isinstance(exc, FileNotFoundError):
        return missing
    if isinstance(exc, PermissionError):
        return "permission denied"
    return f"cannot read file: {exc.strerror or exc}"


def _read_failure(name: str, exc: OSError) -> AudioError:
    if not os.path.exists(name):
        return AudioError(name, "file vanished while reading")
    return AudioError(name, f"read error: {exc.strerror or exc}")


class _MonoResampler:
    """Collects mono chunks at any source rate and streams them through soxr to 16 kHz."""

    def __init__(self) -> None:
        self._out: list[np.ndarray] = []
        self._pending: list[np.ndarray] = []
        self._pending_len = 0
        self._rate = 0
        self._stream: Any = None

    def add(self, mono: np.ndarray, rate: int) -> None:
        if rate != self._rate:  # a mid-stream rate change (rare, but FFmpeg allows it)
            self._drain(last=True)
            self._rate = rate
            if rate != SAMPLE_RATE:
                import soxr

                self._stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
            else:
                self._stream = None
        self._pending.append(mono)
        self._pending_len += len(mono)
        if self._pending_len >= rate:  # resample in ~1 s batches, not per tiny codec frame
            self._drain(last=False)

    def finish(self) -> np.ndarray:
        self._drain(last=True)
        return np.concatenate([np.zeros(0, np.float32), *self._out]).astype(np.float32, copy=False)

    def _drain(self, last: bool) -> None:
        chunk = np.concatenate([np.zeros(0, np.float32), *self._pending]).astype(np.float32, copy=False)
        self._pending, self._pending_len = [], 0
        if self._stream is not None:
            chunk = self._stream.resample_chunk(chunk, last=last)
        if chunk.size:
            self._out.append(chunk)


def _decode_soundfile(reader: _Reader) -> _Result | None:
    """Decode a lossless PCM container with libsndfile; ``None`` to let FFmpeg try instead."""
    reader.seek(0)
    magic = reader.read(4)
    if magic not in _SOUNDFILE_MAGIC:  # sniff first: libsndfile's MP3 path is noisy and unreliable
        return None
    wav_declared = _wav_declared_seconds(reader) if magic == b"RIFF" else None
    reader.seek(0)
    import soundfile as sf

    try:
        snd = sf.SoundFile(reader)
    except Exception:  # damaged header or unusual variant: FFmpeg gets its turn
        return None
    with snd:
        if snd.format not in _SOUNDFILE_FORMATS or snd.channels < 1 or snd.samplerate < 1:
            return None
        sink = _MonoResampler()
        try:
            for block in snd.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
                sink.add(block[:, 0] if snd.channels == 1 else block.mean(axis=1), snd.samplerate)
        except Exception:  # e.g. "flac decoder lost sync": FFmpeg skips bad frames and goes on
            return None
        declared = wav_declared or (snd.frames / snd.samplerate if snd.frames > 0 else None)
        codec = "flac" if snd.format == "FLAC" else _SOUNDFILE_CODECS.get(snd.subtype, snd.subtype.lower())
        if snd.format in ("AIFF", "CAF") and snd.endian != "LITTLE" and codec.endswith("le"):
            codec = codec[:-2] + "be"
        return sink.finish(), snd.samplerate, snd.channels, codec, declared, True


def _decode_av(reader: _Reader, name: str) -> _Result:
    """Decode the first audio stream with FFmpeg, skipping undecodable packets."""
    import av

    reader.seek(0)
    try:
        container = av.open(reader, mode="r", metadata_errors="replace")
    except av.FFmpegError as exc:
        raise AudioError(name, _unopenable_reason(reader)) from exc
    with container:
        if not container.streams.audio:
            raise AudioError(name, "no audio track")
        stream = container.streams.audio[0]
        codec_ctx = stream.codec_context
        if codec_ctx is None or codec_ctx.codec is None:
            raise AudioError(name, "unsupported audio codec")
        codec = codec_ctx.codec.canonical_name or codec_ctx.name
        sink = _MonoResampler()
        src_rate = src_channels = 0
        good = bad = 0
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.FFmpegError:  # one corrupt packet must not cost the whole recording
                    bad += 1
                    continue
                good += 1
                for frame in frames:
                    rate = frame.sample_rate or codec_ctx.sample_rate
                    src_rate, src_channels = src_rate or rate, src_channels or frame.layout.nb_channels
                    sink.add(_frame_to_mono(frame), rate)
        except av.FFmpegError:  # damaged container: keep what we have and judge the length below
            pass
        samples = sink.finish()
        declared = None
        if stream.duration and stream.time_base:
            declared = float(stream.duration * stream.time_base)
        elif container.duration:
            declared = container.duration / av.time_base
        demuxers = set(container.format.name.split(","))
    if samples.size == 0 and bad:
        raise AudioError(name, f"corrupt audio data ({bad} undecodable packets, nothing decoded)")
    if bad > good:
        raise AudioError(name, f"corrupt audio data ({bad} of {good + bad} packets undecodable)")
    trusted = bool(demuxers & _EXACT_DURATION_DEMUXERS) or ("mp3" in demuxers and _mp3_has_toc(reader))
    return samples, src_rate or codec_ctx.sample_rate, src_channels, codec, declared, trusted


def _frame_to_mono(frame: Any) -> np.ndarray:
    """Average the channels of one decoded frame into float32 in [-1, 1]."""
    fmt = frame.format
    channels = frame.layout.nb_channels or 1
    data = frame.to_ndarray()
    if not fmt.is_planar:  # packed frames come back as (1, samples * channels), interleaved
        data = data.reshape(-1, channels).T
    kind = fmt.name.rstrip("p")
    if kind in ("flt", "dbl"):
        data = data.astype(np.float32, copy=False)
    elif kind == "u8":
        data = (data.astype(np.float32) - 128.0) / 128.0
    else:
        data = (data / _INT_SCALE[kind]).astype(np.float32)
    return data[0] if channels == 1 else data.mean(axis=0)


def _unopenable_reason(reader: _Reader) -> str:
    reader.seek(0)
    head = reader.read(12)
    if head[4:8] == b"ftyp":  # an MP4 whose index (moov box) is missing, typically a partial copy
        return "truncated or damaged MP4/M4A file (no playable index)"
    return "not a recognised audio or video format (or the file is damaged)"


def _wav_declared_seconds(fh: Any) -> float | None:
    """Length a PCM RIFF/WAVE header promises; ``None`` when it says nothing usable.

    libsndfile and FFmpeg both quietly shrink the length to what is on disk, so the header is the
    only way to notice a half-copied WAV.
    """
    fh.seek(0)
    head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, rate, block_align, pcm = 12, 0, 0, False
    for _ in range(64):  # a real WAV has a handful of chunks; stop walking garbage quickly
        fh.seek(pos)
        chunk = fh.read(8)
        if len(chunk) < 8:
            return None
        size = int.from_bytes(chunk[4:8], "little")
        if chunk[:4] == b"fmt ":
            fmt = fh.read(16)
            if len(fmt) < 16:
                return None
            pcm = int.from_bytes(fmt[0:2], "little") in (1, 3, 0xFFFE)  # PCM, float, extensible
            rate = int.from_bytes(fmt[4:8], "little")
            block_align = int.from_bytes(fmt[12:14], "little")
        elif chunk[:4] == b"data":
            # 0 and ~4 GiB are placeholders written by recorders that never patched the header.
            if not (pcm and rate and block_align) or size == 0 or size >= 0xFFFF0000:
                return None
            return size / block_align / rate
        pos += 8 + size + (size & 1)
    return None


def _mp3_has_toc(reader: _Reader) -> bool:
    """Whether an MP3 carries a Xing/Info/VBRI header, i.e. an exact length rather than a guess."""
    reader.seek(0)
    head = reader.read(10)
    offset = 0
    if len(head) == 10 and head[:3] == b"ID3":  # skip the ID3v2 tag (synchsafe size)
        size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | head[9] & 0x7F
        offset = 10 + size + (10 if head[5] & 0x10 else 0)
    reader.seek(offset)
    data = reader.read(8192)
    for i in range(len(data) - 1):
        if data[i] == 0xFF and data[i + 1] & 0xE0 == 0xE0:  # first frame sync
            window = data[i : i + 200]
            return any(tag in window for tag in (b"Xing", b"Info", b"VBRI"))
    return False
