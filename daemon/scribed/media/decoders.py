"""The two decoders behind :func:`scribed.media.audio.decode_audio`, and the header sniffing they share.

Contract:
- :func:`decode_soundfile` reads lossless PCM containers with libsndfile and returns ``None`` to
  let :func:`decode_av` (FFmpeg) try instead; :func:`decode_av` returns or raises ``AudioError``.
- Both stream into a :class:`MonoResampler` that averages channels, resamples to 16 kHz with soxr
  and holds the result in one buffer: memory is the decoded length at 16 kHz float32 (64 KB per
  second of audio) plus about one second of working buffers; a header's length pre-sizes it.
- ``max_samples`` bounds the output: a header that declares more raises :class:`TooLong` before
  any decoding, and decoding stops with :class:`TooLong` as soon as the output passes it, so a
  decompression bomb costs at most the limit.
- A two-channel source also yields each channel's power per 10 ms frame, measured before the
  downmix (:class:`~scribed.media.channels.ChannelPower`), so speaker turns can tell whether the
  channels carry different people; the mono samples are unchanged by it.
- ``windows`` (a :class:`Windows`): instead of one buffer for the whole recording, the 16 kHz
  output is handed to ``windows.emit`` as it is decoded, each block ``windows.size`` new samples
  after whatever the consumer asked to see again, and only the last, shorter block is returned;
  memory is then one buffer of one window (plus that overlap), whatever the length: the block
  handed over *is* the buffer, never a copy. A decoder that starts over (libsndfile gave up,
  FFmpeg tries) calls ``windows.restart``.
- Heavy libraries (soundfile, av, soxr) are imported inside the functions.
"""

from __future__ import annotations

import io
from typing import Any, BinaryIO

import numpy as np

from scribed.errors import AudioError
from scribed.media.audio import SAMPLE_RATE
from scribed.media.channels import ChannelPower

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

# samples, source rate, source channels, codec, declared duration, whether that duration is exact,
# per-channel power of 10 ms frames (stereo sources only; see scribed.media.channels)
Result = tuple[np.ndarray, int, int, str, float | None, bool, np.ndarray | None]


class TooLong(Exception):
    """The recording is longer than the limit: ``seconds`` is its declared length (``declared``)
    or the length decoded when decoding stopped."""

    def __init__(self, seconds: float, declared: bool) -> None:
        super().__init__(seconds)
        self.seconds = seconds
        self.declared = declared


class Reader(io.RawIOBase):
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

    def fileno(self) -> int:
        return self._fh.fileno()

    def close(self) -> None:
        pass

    def really_close(self) -> None:
        self._fh.close()


class SinkFailed(BaseException):
    """What the window consumer raised, carried through the decoders untouched.

    A ``BaseException`` on purpose: the decoders catch ``Exception`` to fall back from libsndfile
    to FFmpeg or to skip a corrupt packet, and a consumer's failure (the model ran out of memory)
    must be neither."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(cause)
        self.cause = cause


class Windows:
    """Where a windowed decode puts its output: ``consume(offset, block, last)`` is called with
    consecutive blocks of the 16 kHz mono signal (``offset``: the block's first sample in the
    recording) and returns how many samples at the block's end it wants again: the next block
    starts with them (so blocks overlap by that much; 0 for none). ``block`` is the decoder's own
    buffer, valid only during the call (it is reused; a consumer copies what it keeps), which is
    what keeps a window in memory once, not two or three times. ``emitted`` is where the
    decoder's buffer starts in the recording (the next block's offset) and ``blocks`` how many
    were handed over; :meth:`restart` (a decoder starting over) resets both and tells the
    consumer by an ``offset`` of 0 again. NaN/inf samples are replaced, as for a whole decode."""

    def __init__(self, size: int, consume: Any) -> None:
        self.size = max(1, int(size))
        self.consume = consume
        self.emitted = 0
        self.blocks = 0

    def restart(self) -> None:
        self.emitted = 0
        self.blocks = 0

    def emit(self, block: np.ndarray, last: bool = False) -> int:
        """Hand ``block`` over; returns the overlap the consumer asked for (0 after the last)."""
        if not np.isfinite(block).all():
            np.nan_to_num(block, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
        offset = self.emitted
        try:
            again = self.consume(offset, block, last) or 0
        except BaseException as exc:
            raise SinkFailed(exc) from exc
        again = 0 if last else min(max(0, int(again)), block.size)
        self.emitted += block.size - again
        self.blocks += 1
        return again


class MonoResampler:
    """Collects mono chunks at any source rate, streams them through soxr to 16 kHz, keeps the
    output in one growing buffer (pre-sized from ``expect_seconds``) and enforces ``max_samples``;
    with ``windows`` the buffer holds one window and full windows go to ``windows.emit``."""

    def __init__(self, max_samples: int | None = None, expect_seconds: float | None = None,
                 windows: Windows | None = None) -> None:
        self._max = max_samples
        self._windows = windows
        hint = int((expect_seconds or 0.0) * SAMPLE_RATE * 1.01) + SAMPLE_RATE  # codec padding
        if max_samples is not None:
            hint = min(hint, max_samples + SAMPLE_RATE)
        if windows is not None:
            windows.restart()
            hint = min(hint, windows.size + 2 * SAMPLE_RATE)
        self._buf = np.empty(hint, np.float32)
        self._n = 0
        self._again = 0  # samples at the buffer's start the window consumer is seeing again
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
        out = self._buf
        self._buf = np.empty(0, np.float32)
        if self._windows is not None:  # the last block: a view, as every block before it
            return out[: self._n]
        out.resize(self._n, refcheck=False)  # shrinks in place: no second copy of the recording
        return out

    def _drain(self, last: bool) -> None:
        if not self._pending and not last:
            return
        chunk = np.concatenate([np.zeros(0, np.float32), *self._pending]).astype(np.float32, copy=False)
        self._pending, self._pending_len = [], 0
        if self._stream is not None:
            chunk = self._stream.resample_chunk(chunk, last=last)
        if chunk.size:
            self._append(chunk)

    def _append(self, chunk: np.ndarray) -> None:
        end = self._n + chunk.size
        before = self._windows.emitted if self._windows is not None else 0
        if self._max is not None and before + end > self._max:
            raise TooLong((before + end) / SAMPLE_RATE, declared=False)
        if end > self._buf.size:
            grown = max(end, int(self._buf.size * 1.5))
            if self._max is not None:
                grown = min(grown, self._max + SAMPLE_RATE)
            if self._windows is None:  # in place (no second copy); no view of it was handed out
                self._buf.resize(max(grown, end), refcheck=False)
            else:  # blocks handed out were views of it: never move memory under one
                bigger = np.empty(max(grown, end), np.float32)
                bigger[: self._n] = self._buf[: self._n]
                self._buf = bigger
        self._buf[self._n:end] = chunk
        self._n = end
        if self._windows is not None and self._n - self._again >= self._windows.size:
            # the buffer itself goes out (no copy); what the consumer wants again moves to its start
            again = self._windows.emit(self._buf[: self._n])
            self._buf[:again] = self._buf[self._n - again:self._n]
            self._n = self._again = again


def _check_declared(declared: float | None, max_samples: int | None) -> None:
    if declared and max_samples is not None and declared * SAMPLE_RATE > max_samples:
        raise TooLong(declared, declared=True)


def decode_soundfile(reader: Reader, max_samples: int | None = None, windows: Windows | None = None) -> Result | None:
    """Decode a lossless PCM container with libsndfile; ``None`` to let FFmpeg try instead."""
    reader.seek(0)
    magic = reader.read(4)
    if magic not in _SOUNDFILE_MAGIC:  # sniff first: libsndfile's MP3 path is noisy and unreliable
        return None
    wav_declared = wav_declared_seconds(reader) if magic == b"RIFF" else None
    reader.seek(0)
    import soundfile as sf

    try:
        snd = sf.SoundFile(reader)
    except Exception:  # damaged header or unusual variant: FFmpeg gets its turn
        return None
    with snd:
        if snd.format not in _SOUNDFILE_FORMATS or snd.channels < 1 or snd.samplerate < 1:
            return None
        # libsndfile reports an unknown length as 0 or as a huge placeholder; only a sane one counts
        frames = snd.frames if 0 < snd.frames < 2**62 else 0
        declared = wav_declared or (frames / snd.samplerate if frames else None)
        _check_declared(declared, max_samples)
        sink = MonoResampler(max_samples, declared, windows)
        levels = ChannelPower() if snd.channels == 2 else None
        try:
            for block in snd.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
                if levels is not None:
                    levels.add(block.T, snd.samplerate)
                sink.add(block[:, 0] if snd.channels == 1 else block.mean(axis=1), snd.samplerate)
        except TooLong:
            raise
        except Exception:  # e.g. "flac decoder lost sync": FFmpeg skips bad frames and goes on
            return None
        codec = "flac" if snd.format == "FLAC" else _SOUNDFILE_CODECS.get(snd.subtype, snd.subtype.lower())
        if snd.format in ("AIFF", "CAF") and snd.endian != "LITTLE" and codec.endswith("le"):
            codec = codec[:-2] + "be"
        power = levels.finish() if levels is not None else None
        return sink.finish(), snd.samplerate, snd.channels, codec, declared, True, power


def decode_av(reader: Reader, name: str, max_samples: int | None = None, windows: Windows | None = None) -> Result:
    """Decode the first audio stream with FFmpeg, skipping undecodable packets."""
    import av

    has_toc = mp3_has_toc(reader)  # before FFmpeg owns the file position
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
        declared = None
        if stream.duration and stream.time_base:
            declared = float(stream.duration * stream.time_base)
        elif container.duration:
            declared = container.duration / av.time_base
        demuxers = set(container.format.name.split(","))
        trusted = bool(demuxers & _EXACT_DURATION_DEMUXERS) or ("mp3" in demuxers and has_toc)
        if trusted:  # a bitrate estimate is no reason to refuse; decoding enforces the limit anyway
            _check_declared(declared, max_samples)
        sink = MonoResampler(max_samples, declared if trusted else None, windows)
        levels: ChannelPower | None = None
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
                    data = frame_to_channels(frame)
                    if src_channels == 2 and data.shape[0] == 2:  # a stereo stream (from its first frame)
                        if levels is None:
                            levels = ChannelPower()
                        levels.add(data, rate)
                    sink.add(data[0] if data.shape[0] == 1 else data.mean(axis=0), rate)
        except av.FFmpegError:  # damaged container: keep what we have and judge the length below
            pass
        samples = sink.finish()
    if samples.size == 0 and bad and not (windows and windows.blocks):
        raise AudioError(name, f"corrupt audio data ({bad} undecodable packets, nothing decoded)")
    if bad > good:
        raise AudioError(name, f"corrupt audio data ({bad} of {good + bad} packets undecodable)")
    power = levels.finish() if levels is not None and src_channels == 2 else None
    return samples, src_rate or codec_ctx.sample_rate, src_channels, codec, declared, trusted, power


def frame_to_mono(frame: Any) -> np.ndarray:
    """Average the channels of one decoded frame into float32 in [-1, 1]."""
    data = frame_to_channels(frame)
    return data[0] if data.shape[0] == 1 else data.mean(axis=0)


def frame_to_channels(frame: Any) -> np.ndarray:
    """One decoded frame as (channels, samples) float32 in [-1, 1]."""
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
    return data


def _unopenable_reason(reader: Reader) -> str:
    reader.seek(0)
    head = reader.read(12)
    if head[4:8] == b"ftyp":  # an MP4 whose index (moov box) is missing, typically a partial copy
        return "truncated or damaged MP4/M4A file (no playable index)"
    return "not a recognised audio or video format (or the file is damaged)"


def wav_declared_seconds(fh: Any) -> float | None:
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


def mp3_has_toc(reader: Any) -> bool:
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
