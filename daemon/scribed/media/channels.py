"""Two-channel recordings whose channels carry different people (calls, two-microphone recorders).

While a stereo recording is decoded, :class:`ChannelPower` keeps each channel's power per 10 ms
frame (before the downmix; 8 bytes per frame and channel, ~6 MB for 2 hours), so the mono
samples the recognizer gets are unchanged. :func:`channel_turns` then decides whether the
channels are *clearly* two parties and, if so, who speaks when:

- each channel's speech is found by the pipeline's own detector, on that channel's levels;
- a frame where one channel is at least ``dominance_db`` louder belongs to that channel;
- frames where both carry speech at similar levels are double talk if the level difference
  between the channels jumps from syllable to syllable (two people speaking independently), and
  the same sound if it stays nearly constant (a room microphone pair, or a mono recording stored
  as stereo): the median over 0.5 s windows of its standard deviation is below
  ``same_source_db`` (measured: one source 0.1-1.8 dB with delay and reverberation, two talkers
  5.7 dB);
- the split is taken only when the channels are not the same sound and each channel has at least
  ``min_own_s`` (and ``min_own_share`` of all speech) of its own. Otherwise ``None``: the caller
  tells voices apart instead.

Turns: each speech frame goes to the louder channel, runs shorter than ``min_turn_s`` are
absorbed (:mod:`scribed.media.runs`); labels are channel indices (0 = left, 1 = right).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter1d

from scribed.media import segment
from scribed.media.runs import Run, label_runs

FRAMES_PER_S = 100


class ChannelPower:
    """Per-channel AC power of 10 ms frames, fed (channels, samples) blocks at any sample rate.

    Frame ``k`` covers ``[k * 10 ms, (k + 1) * 10 ms)`` of the recording, whatever the rate: at
    rates that are not a multiple of 100 Hz (22.05 kHz) the frames are cut on the exact pattern of
    ``rate * k // 100`` sample boundaries, which repeats every ``100 / gcd(rate, 100)`` frames.
    """

    def __init__(self) -> None:
        self._sums: list[np.ndarray] = []
        self._squares: list[np.ndarray] = []
        self._counts: list[np.ndarray] = []
        self._rate = 0
        self._carry: np.ndarray | None = None
        self._offsets = np.zeros(1, np.intp)
        self._period = 0

    def add(self, block: np.ndarray, rate: int) -> None:
        """``block``: (channels, samples) float32 at ``rate`` Hz, in stream order."""
        if rate != self._rate:
            self._flush()
            frames = FRAMES_PER_S // math.gcd(rate, FRAMES_PER_S)
            self._rate, self._period = rate, rate * frames // FRAMES_PER_S
            self._offsets = np.array([rate * j // FRAMES_PER_S for j in range(frames)], np.intp)
        x = block if self._carry is None else np.concatenate([self._carry, block], axis=1)
        whole = x.shape[1] // self._period * self._period
        if whole:
            self._reduce(x[:, :whole].reshape(x.shape[0], -1, self._period), self._offsets, self._period)
        self._carry = x[:, whole:]

    def _reduce(self, body: np.ndarray, offsets: np.ndarray, length: int) -> None:
        channels = body.shape[0]
        self._sums.append(np.add.reduceat(body, offsets, axis=2).reshape(channels, -1))
        self._squares.append(np.add.reduceat(body * body, offsets, axis=2).reshape(channels, -1))
        sizes = np.diff(np.append(offsets, length))
        self._counts.append(np.tile(sizes, body.shape[1]))

    def _flush(self) -> None:
        """The partial period left at the end of the stream (or of one sample rate)."""
        if self._carry is not None and self._carry.shape[1]:
            n = self._carry.shape[1]
            offsets = self._offsets[self._offsets < n]
            self._reduce(self._carry[:, None, :], offsets, n)
        self._carry = None

    def finish(self) -> np.ndarray:
        """(channels, frames) float32 AC power (mean square minus squared mean) of each frame."""
        self._flush()
        if not self._sums:
            return np.zeros((0, 0), np.float32)
        counts = np.concatenate(self._counts).astype(np.float32)
        mean = np.concatenate(self._sums, axis=1) / counts
        power = np.concatenate(self._squares, axis=1) / counts - mean * mean
        return np.maximum(power, 0.0).astype(np.float32)


@dataclass(frozen=True)
class SplitOptions:
    """Tuning of :func:`channel_turns`; the defaults are the measured ones."""

    dominance_db: float = 10.0
    same_source_db: float = 3.5
    min_own_s: float = 1.0
    min_own_share: float = 0.05
    min_turn_s: float = 0.3


def _levels_db(power: np.ndarray) -> np.ndarray:
    smoothed = uniform_filter1d(power.astype(np.float64), 5, axis=1, mode="nearest") if power.shape[1] >= 5 else power
    return np.maximum(10.0 * np.log10(np.maximum(smoothed, 1e-30)), segment.SILENT_DB)


def _speech_mask(db: np.ndarray) -> np.ndarray:
    mask = np.zeros(db.size, bool)
    for a, b in segment.speech_frames(db):
        mask[a:b] = True
    return mask


def _steady(diff: np.ndarray, window: int = FRAMES_PER_S // 2) -> float:
    """Median of the level difference's standard deviation over ``window`` frames."""
    mean = uniform_filter1d(diff, window, mode="nearest")
    square = uniform_filter1d(diff * diff, window, mode="nearest")
    return float(np.median(np.sqrt(np.maximum(square - mean * mean, 0.0))))


def channel_turns(power: np.ndarray, options: SplitOptions = SplitOptions()) -> list[Run] | None:
    """Turns by channel (frames; label 0 = left, 1 = right) if the channels are clearly two parties."""
    if power.ndim != 2 or power.shape[0] != 2 or power.shape[1] == 0:
        return None
    db = _levels_db(power)
    active = np.stack([_speech_mask(db[0]), _speech_mask(db[1])])
    union = active[0] | active[1]
    total = int(union.sum())
    if total < 2 * options.min_own_s * FRAMES_PER_S:
        return None
    diff = db[0] - db[1]
    dominant = [active[0] & (diff >= options.dominance_db), active[1] & (diff <= -options.dominance_db)]
    shared = active[0] & active[1] & (np.abs(diff) < options.dominance_db)
    if shared.sum() >= FRAMES_PER_S and _steady(diff[shared]) < options.same_source_db:
        return None  # a second or more of one sound on both channels: not two parties
    own = [int((dominant[c] | (shared & active[c])).sum()) for c in (0, 1)]
    needed = max(options.min_own_s * FRAMES_PER_S, options.min_own_share * total)
    if min(own) < needed:
        return None
    labels = np.where(union, np.where(diff >= 0, 0, 1), -1)
    return label_runs(labels, round(options.min_turn_s * FRAMES_PER_S))
