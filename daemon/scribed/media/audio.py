"""Turn any recording into what the model eats: 16 kHz mono float32 samples, in memory.

:func:`decode_audio` reads lossless PCM containers (WAV, FLAC, AIFF, CAF, ...) with libsndfile
(``soundfile``) and everything else -- MP3, AAC/M4A, Opus, Vorbis, AMR, WMA and the audio track
of video files -- with FFmpeg (``av``); see :mod:`scribed.media.decoders`. Channels are averaged,
then the signal is resampled with soxr. Nothing is written to disk.

Contract:
- Every failure is one :class:`~scribed.errors.AudioError` that names the file and says why in
  words; codec exceptions never escape.
- A watched folder is untrusted: the file is opened with ``O_NOFOLLOW`` (a symbolic link is
  refused, never followed) and non-blocking (a FIFO cannot hang the reader), and everything about
  it is decided on the opened descriptor (``fstat``), not on the name. With ``root`` (the watched
  folder it was found in) every folder between ``root`` and the file is opened the same way
  (:func:`scribed.system.files.open_dir`), so a subfolder swapped for a link after the file was
  queued is refused instead of leading outside the root; a path outside ``root`` is refused.
- ``expect``: the identity (device, inode, size, mtime) the caller queued. The opened file is
  checked against it before decoding, and the file is checked again after decoding; a mismatch
  or a change while reading raises :class:`~scribed.errors.RecordingChanged` (not a failure of
  the recording: its new content is queued again).
- ``max_duration_s``: a longer recording is an AudioError, found from the container header
  before decoding where the header declares a length, and otherwise while decoding, which stops
  as soon as the limit is passed. Memory is bounded by the limit: 64 KB per second of audio
  (16 kHz float32), about 1.4 GB at the default 6 h, plus ~1 s of working buffers.
- ``on_window`` (with ``window_s``): a long recording is handed over while it is decoded, in
  consecutive blocks of ``window_s`` seconds, ``on_window(offset, block, last)`` (``offset`` in
  samples; a decoder that starts over begins again at offset 0), which returns how many samples
  at the block's end it wants to see again at the start of the next block (or None: none).
  ``block`` is the decoder's buffer, valid during the call only. Memory is one window. The last
  block is handed over only after every check above passed; the returned DecodedAudio then has
  no samples (its ``duration_s`` is the whole length). Whatever ``on_window`` raises is raised
  unchanged, and a check that fails after some blocks were handed over still raises, so a
  consumer keeps nothing until the last block.
- Importing this module is cheap: numpy and the codec libraries are imported inside the functions
  (the daemon side imports :data:`AUDIO_EXTENSIONS` from here).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from scribed.errors import AudioError, RecordingChanged
from scribed.identity import FileIdentity

if TYPE_CHECKING:
    import numpy as np

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
# O_NONBLOCK: opening a FIFO planted in a watched folder returns at once instead of waiting for a
# writer (fstat then refuses it); it has no effect on reads of regular files.
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True)
class DecodedAudio:
    """A decoded recording: ``samples`` is float32, mono, 16 kHz, C-contiguous, roughly in [-1, 1].

    ``duration_s`` is ``len(samples) / sample_rate`` (after a windowed decode, which leaves
    ``samples`` empty, the whole recording's length); ``container_duration_s`` is the length the
    file's header declares, or ``None`` where it declares none (or only a bitrate estimate).
    ``channel_power``: for a two-channel source, each channel's AC power per 10 ms frame (shape
    (2, frames), see :mod:`scribed.media.channels`), else ``None``.
    """

    samples: np.ndarray
    sample_rate: int
    duration_s: float
    source: str
    source_sample_rate: int
    source_channels: int
    codec: str
    container_duration_s: float | None
    channel_power: np.ndarray | None = None


WindowConsumer = Callable[[int, "np.ndarray", bool], "int | None"]


def decode_audio(path: str | os.PathLike[str], *, expect: FileIdentity | None = None,
                 max_duration_s: float | None = None, on_window: WindowConsumer | None = None,
                 window_s: float = 600.0, root: str | os.PathLike[str] | None = None) -> DecodedAudio:
    """Decode the first audio track of ``path`` to 16 kHz mono float32, entirely in memory.

    Raises :class:`AudioError` if the file is missing, a link, not a regular file, unreadable,
    empty, not audio, has no audio track, is truncated (decodes to < 99% of its declared length),
    is longer than ``max_duration_s``, vanishes while being read, or decodes to no samples; and
    :class:`RecordingChanged` if it is not ``expect`` or changes while being read; and
    AudioError if a folder between ``root`` and the file is a link (or ``path`` is outside it).
    """
    import numpy as np

    from scribed.media import decoders

    name = os.fspath(path)
    fh, before = _open_checked(name, root)
    if expect is not None and not expect.same_file(before):
        fh.close()
        raise RecordingChanged(name, f"it is no longer the file that was queued ({_describe(expect, before)})")
    reader = decoders.Reader(fh)
    windows = None if on_window is None else decoders.Windows(int(window_s * SAMPLE_RATE), on_window)
    try:
        try:
            result = _run_decoders(reader, name, max_duration_s, windows)
        except AudioError as exc:  # a file rewritten while it was read fails for that reason
            _check_unchanged(name, before, reader, cause=exc)
            raise
        except decoders.SinkFailed as exc:
            raise exc.cause from None
        _check_unchanged(name, before, reader)
    finally:
        reader.really_close()

    samples, src_rate, src_channels, codec, declared, trusted, channel_power = result
    total = samples.size + (windows.emitted if windows is not None else 0)
    if total == 0:
        raise AudioError(name, "decodes to zero samples (no audio in the file)")
    duration = total / SAMPLE_RATE
    if trusted and declared and declared - duration > max(_TRUNCATION_TOLERANCE * declared, _FRAMING_SLACK_S):
        raise AudioError(name, f"truncated: decoded {duration:.2f} s of {declared:.2f} s")
    if windows is None and not np.isfinite(samples).all():  # float WAVs can hold NaN/inf (poison for the model)
        np.nan_to_num(samples, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
    if windows is not None:  # Windows.emit replaces NaN/inf in the block it hands over
        try:
            windows.emit(np.ascontiguousarray(samples, dtype=np.float32), last=True)
        except decoders.SinkFailed as exc:
            raise exc.cause from None
        samples = np.zeros(0, np.float32)
    return DecodedAudio(
        samples=np.ascontiguousarray(samples, dtype=np.float32),
        sample_rate=SAMPLE_RATE,
        duration_s=duration,
        source=name,
        source_sample_rate=src_rate,
        source_channels=src_channels,
        codec=codec,
        container_duration_s=declared if trusted else None,
        channel_power=channel_power,
    )


def _run_decoders(reader: Any, name: str, max_duration_s: float | None, windows: Any = None) -> Any:
    """libsndfile, else FFmpeg; every failure mapped to one AudioError (a window consumer's
    failure passes through as ``decoders.SinkFailed``)."""
    from scribed.media import decoders

    max_samples = None if max_duration_s is None else int(max_duration_s * SAMPLE_RATE)
    try:
        result = (decoders.decode_soundfile(reader, max_samples, windows)
                  or decoders.decode_av(reader, name, max_samples, windows))
    except decoders.TooLong as exc:
        assert max_duration_s is not None
        length = (f"{_span(exc.seconds, 1)} long" if exc.declared
                  else f"longer than {_span(max_duration_s)} (decoding stopped there)")
        raise AudioError(name, f"recording is {length}; the limit is transcription.max_duration_s = "
                               f"{_span(max_duration_s)}") from None
    except AudioError:
        if reader.error is None:
            raise
        result = None
    except OSError as exc:  # raised by our own file object rather than by a codec
        raise _read_failure(name, exc) from exc
    except Exception as exc:  # a decoder bug or an exotic stream: still one clear error per file
        raise AudioError(name, f"decoder failed: {type(exc).__name__}: {exc}") from exc
    if reader.error is not None:  # the libraries took the failed read for an end of file
        raise _read_failure(name, reader.error) from reader.error
    return result


def _check_unchanged(name: str, before: os.stat_result, reader: Any, cause: Exception | None = None) -> None:
    """RecordingChanged if the opened file's size or mtime moved while it was read."""
    try:
        after = os.fstat(reader.fileno())
    except (OSError, ValueError):  # the descriptor is gone; the read error says what happened
        return
    if not FileIdentity.of(before).same_file(after):
        raise RecordingChanged(name, f"it was modified while it was read ({_describe(before, after)})") from cause


def probe_duration(path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None) -> float | None:
    """Duration in seconds from the container headers, without decoding (for ETAs and limits).

    May be an estimate (e.g. from the bitrate); ``None`` if unknown, and for anything that is not
    a regular file (links are not followed; with ``root``, no folder link below it either, as in
    :func:`decode_audio`). Never raises.
    """
    from scribed.media import decoders

    name = os.fspath(path)
    try:
        fh, _ = _open_checked(name, root)
        with fh:
            if fh.read(4) == b"RIFF":
                wav = decoders.wav_declared_seconds(fh)
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


class _FolderRefused(OSError):
    """A folder between the root and the file could not be opened without following a link."""


def _open_file(name: str, root: str | os.PathLike[str] | None = None) -> BinaryIO:
    """Open ``name`` for reading without following a link, nor one below ``root`` when given
    (a seam so tests can make reads fail)."""
    if root is None:
        return os.fdopen(os.open(name, _OPEN_FLAGS), "rb", buffering=1 << 16)
    from pathlib import Path

    from scribed.system import files

    target = Path(os.path.abspath(name))
    try:
        folder = files.open_dir(target.parent, root=Path(root))  # ValueError: not inside root
    except FileNotFoundError:
        raise
    except OSError as exc:  # ELOOP or ENOTDIR: a folder below the root is a link (or a file) now
        raise _FolderRefused(exc.errno, exc.strerror) from exc
    try:
        return os.fdopen(os.open(target.name, _OPEN_FLAGS, dir_fd=folder), "rb", buffering=1 << 16)
    finally:
        os.close(folder)


def _open_checked(name: str, root: str | os.PathLike[str] | None = None) -> tuple[BinaryIO, os.stat_result]:
    """The opened file and its fstat, or AudioError: everything is judged on the descriptor."""
    try:
        fh = _open_file(name, root)
    except ValueError:
        raise AudioError(name, f"not inside its watched folder {str(root)!r}") from None
    except OSError as exc:
        raise AudioError(name, _os_reason(exc, missing="file not found")) from None
    try:
        st = os.fstat(fh.fileno())
    except OSError as exc:
        fh.close()
        raise AudioError(name, _os_reason(exc, missing="file vanished while reading")) from None
    reason = None
    if stat.S_ISDIR(st.st_mode):
        reason = "is a directory, not a file"
    elif not stat.S_ISREG(st.st_mode):
        reason = "not a regular file"
    elif st.st_size == 0:
        reason = "empty file (0 bytes)"
    if reason:
        fh.close()
        raise AudioError(name, reason)
    return fh, st


def _describe(old: FileIdentity | os.stat_result, new: os.stat_result) -> str:
    old_id = old if isinstance(old, FileIdentity) else FileIdentity.of(old)
    new_id = FileIdentity.of(new)
    if (old_id.dev, old_id.ino) != (new_id.dev, new_id.ino):
        return "another file now has its name"
    return f"size {old_id.size} -> {new_id.size} bytes" if old_id.size != new_id.size else "modification time changed"


def _span(seconds: float, digits: int | None = None) -> str:
    """A length in the largest fitting unit: "10.0 h", "6 h", "90 s"."""
    value, unit = ((seconds / 3600, "h") if seconds >= 3600 else (seconds / 60, "min") if seconds >= 60
                   else (seconds, "s"))
    return f"{value:.{digits}f} {unit}" if digits is not None else f"{round(value, 2):g} {unit}"


def _os_reason(exc: OSError, missing: str) -> str:
    import errno

    if isinstance(exc, FileNotFoundError):
        return missing
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, _FolderRefused):
        return "a folder on its path is a symbolic link or no folder (scribed never follows links in a watched folder)"
    if exc.errno == errno.ELOOP:
        return "is a symbolic link (scribed never follows links in a watched folder)"
    return f"cannot read file: {exc.strerror or exc}"


def _read_failure(name: str, exc: OSError) -> AudioError:
    if not os.path.lexists(name):
        return AudioError(name, "file vanished while reading")
    return AudioError(name, f"read error: {exc.strerror or exc}")
