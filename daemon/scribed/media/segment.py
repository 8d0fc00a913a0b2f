"""Cut a long recording into ASR-sized chunks at pauses, skipping silence, never dropping speech.

The method is an energy detector (see ``docs/segmentation.md`` for why and how it was measured):

1. AC power (variance) of 10 ms frames, computed on a reshaped *view* of the samples (no copy
   of the recording), smoothed over 50 ms and expressed in dBFS.
2. A noise floor that adapts to the surroundings: the larger of the minimum over the preceding
   and the minimum over the following ``floor_window_s``. A stretch of steady noise (hiss, hum,
   room tone) is its own floor on at least one side, so it is never taken for speech even when a
   quieter recording is next to it; speech always has quieter gaps between syllables nearby, so
   the floor under it stays low.
3. Hysteresis: a run of frames above ``floor + off_db`` is speech if at least one frame in it rises
   above ``floor + on_db``; it lasts ``hangover_s`` longer (soft word endings); runs closer than
   ``min_silence_s`` are joined, so short pauses are never cut candidates, and what is still
   shorter than ``min_speech_s`` (a click) is dropped.
4. Planning: a pause of ``max_pause_s`` or more always ends a chunk and is skipped but for
   ``pad_s`` of context on each side. Speech between such pauses is split only where it must be,
   to respect ``max_chunk_s``: a dynamic programme picks the cuts, preferring few cuts at long
   pauses; a cut pause is split in the middle, skipping nothing. Speech with no pause for longer
   than ``max_chunk_s`` is first cut at its quietest 100 ms in the second half of the window.

Everything here works on float32 mono 16 kHz arrays, in time and memory linear in their length
(a 2-hour recording takes well under a second); no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import minimum_filter1d, uniform_filter1d

SAMPLE_RATE = 16000
_HOP_S = 0.010  # frame hop and length: fine enough to place cuts, coarse enough to be fast
_SILENT_DB = -100.0  # floor for log of digital silence, so arithmetic on dB stays finite
SILENT_DB = _SILENT_DB


@dataclass(frozen=True)
class Chunk:
    """One piece of the recording to transcribe: samples ``[start, end)``.

    ``pause_before_s`` is the length of the audio skipped before ``start``: since the previous
    chunk's ``end``, or since the beginning of the recording for the first chunk.
    """

    start: int
    end: int
    pause_before_s: float

    @property
    def start_s(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.end / SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE


@dataclass(frozen=True)
class SegmentOptions:
    """Tuning of :func:`find_speech` and :func:`plan_chunks`; the defaults are the measured ones."""

    max_chunk_s: float = 30.0  # hard limit on a chunk's length (the ASR model's window)
    min_chunk_s: float = 1.0  # shorter chunks are merged into a neighbour when that fits
    min_silence_s: float = 0.3  # a pause shorter than this is not a cut candidate
    pad_s: float = 0.2  # context kept at a chunk edge on a long pause (a short one is split evenly)
    max_pause_s: float = 2.0  # a pause at least this long always ends a chunk
    min_fill: float = 0.5  # a cut inside speech goes after this fraction of max_chunk_s
    merge_pause_s: float = 5.0  # a chunk under min_chunk_s joins a neighbour at most this far away
    min_speech_s: float = 0.1  # isolated bursts shorter than this are clicks, not speech
    hangover_s: float = 0.1  # speech is taken to last this long after its energy drops (soft endings)
    on_db: float = 6.0  # a run of frames is speech only if it rises this far above the floor
    off_db: float = 3.0  # ... and it lasts while it stays this far above the floor
    floor_window_s: float = 1.5  # span of the one-sided minima that estimate the noise floor
    min_level_db: float = -65.0  # dBFS: quieter frames are never speech (inaudible)
    # dBFS: louder frames are always speech. The relative floor cannot see speech that fills its
    # whole window (a 2 s clip with no pause would otherwise be dropped entirely).
    loud_db: float = -35.0


_DEFAULTS = SegmentOptions()


def _frame_db(samples: np.ndarray, hop: int) -> np.ndarray:
    """AC power (variance, so a DC offset does not count) per ``hop``-sample frame in dBFS.

    Smoothed over 5 frames; a partial last frame counts. The frames are a reshaped *view* of
    the samples: the recording is not copied (unless it is not float32 to begin with).
    Measured and rejected: pre-emphasis, which would suppress hum, lost more speech in hiss.
    """
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected mono samples (a 1-D array), got shape {x.shape}")
    n_full = x.size // hop
    frames = x[: n_full * hop].reshape(n_full, hop)
    mean = frames.mean(axis=1, dtype=np.float64)
    power = np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / hop - mean * mean
    if x.size % hop:
        rest = x[n_full * hop :].astype(np.float64)
        power = np.append(power, rest.var())
    if power.size >= 5:
        # smoothing bridges stop closures and keeps single frames of noise from looking like onsets
        power = uniform_filter1d(power, 5, mode="nearest")
    return np.maximum(10.0 * np.log10(np.maximum(power, 1e-30)), _SILENT_DB)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and (exclusive) ends of the runs of True in a 1-D boolean array."""
    edges = np.diff(mask.astype(np.int8), prepend=0, append=0)
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _noise_floor(db: np.ndarray, width: int) -> np.ndarray:
    """Per frame, the larger of the minimum over the ``width`` frames before and after it."""
    half = max(width // 2, 1)
    centred = minimum_filter1d(db, 2 * half + 1, mode="nearest")
    idx = np.arange(db.size)
    before = centred[np.maximum(idx - half, 0)]
    after = centred[np.minimum(idx + half, db.size - 1)]
    return np.maximum(before, after)


def _speech_frames(db: np.ndarray, opt: SegmentOptions, hop_s: float) -> list[tuple[int, int]]:
    """Speech as ``[start, end)`` frame ranges, after hysteresis, click removal and pause joining."""
    if db.size == 0:
        return []
    floor = _noise_floor(db, round(opt.floor_window_s / hop_s))
    on = np.minimum(np.maximum(floor + opt.on_db, opt.min_level_db), opt.loud_db)
    # the absolute gates get the same hysteresis as the relative one
    off = np.minimum(np.maximum(floor + opt.off_db, opt.min_level_db - (opt.on_db - opt.off_db)),
                     opt.loud_db - (opt.on_db - opt.off_db))
    starts, ends = _runs(db > off)
    if starts.size == 0:
        return []
    # hysteresis: keep a run of "above off" frames only if it has a frame "above on"
    loud = np.add.reduceat((db > on).astype(np.int32), starts) > 0
    starts, ends = starts[loud], ends[loud]
    if starts.size == 0:
        return []
    # hangover: word endings (fricatives, decaying voicing) fade under the threshold early
    ends = np.minimum(ends + round(opt.hangover_s / hop_s), db.size)
    # join runs separated by less than min_silence_s: such pauses are not cut candidates
    min_gap = round(opt.min_silence_s / hop_s)
    keep = np.ones(starts.size, dtype=bool)
    keep[1:] = starts[1:] - ends[:-1] >= min_gap
    starts, ends = starts[keep], ends[np.append(keep[1:], True)]
    # drop clicks: joined runs that are still very short
    long_enough = ends - starts >= round(opt.min_speech_s / hop_s)
    return list(zip(starts[long_enough].tolist(), ends[long_enough].tolist(), strict=True))


def find_speech(
    samples: np.ndarray, sample_rate: int = SAMPLE_RATE, options: SegmentOptions = _DEFAULTS
) -> list[tuple[int, int]]:
    """Speech regions as sorted, disjoint ``(start, end)`` sample ranges (end exclusive).

    Pauses shorter than ``options.min_silence_s`` are inside a region, never between two; a
    region ends ``hangover_s`` after its energy drops, and no other padding is added. An empty
    or all-silent recording gives ``[]``; ``samples`` must be 1-D (ValueError otherwise).
    """
    hop = max(round(sample_rate * _HOP_S), 1)
    db = _frame_db(samples, hop)
    n = int(np.asarray(samples).size)
    return [(a * hop, min(b * hop, n)) for a, b in _speech_frames(db, options, hop / sample_rate)]


def speech_frames(db: np.ndarray, options: SegmentOptions = _DEFAULTS) -> list[tuple[int, int]]:
    """:func:`find_speech` on levels already measured: ``db`` is dBFS per 10 ms frame (AC power
    smoothed over 5 frames, floored at :data:`SILENT_DB`); returns ``[start, end)`` frame ranges.
    Used for the levels of each channel of a stereo recording (:mod:`scribed.media.channels`)."""
    return _speech_frames(np.asarray(db, dtype=np.float64), options, _HOP_S)


def quietest_point(
    samples: np.ndarray,
    start: int,
    end: int,
    sample_rate: int = SAMPLE_RATE,
    search: tuple[float, float] = (0.25, 0.75),
) -> int:
    """Sample index strictly inside ``(start, end)`` with the least short-time energy.

    Only the fraction ``search`` of the range is searched (the middle half by default), so both
    sides keep a useful length; energy is measured over 10 ms frames smoothed over 50 ms. Used
    to split a chunk in two (e.g. when the model's output for it was truncated). A range too
    short to search returns its midpoint; a range of fewer than 2 samples is a ValueError.
    """
    if not 0 <= start <= end - 2 or end > len(samples):
        raise ValueError(f"cannot split [{start}, {end}) of {len(samples)} samples")
    lo = start + int((end - start) * search[0])
    hi = start + int((end - start) * search[1])
    hop = max(round(sample_rate * _HOP_S), 1)
    if hi - lo < hop:
        return min(max((start + end) // 2, start + 1), end - 1)
    db = _frame_db(samples[lo:hi], hop)
    # np.argmin takes the first of equal minima; searching from the end prefers later cuts
    best = db.size - 1 - int(np.argmin(db[::-1]))
    return min(max(lo + best * hop + hop // 2, start + 1), end - 1)


def plan_chunks(
    samples: np.ndarray, sample_rate: int = SAMPLE_RATE, options: SegmentOptions = _DEFAULTS
) -> list[Chunk]:
    """Chunks to transcribe, covering every sample :func:`find_speech` judges to be speech.

    Guarantees: chunks are sorted, disjoint, non-empty, within ``[0, len(samples))`` and at most
    ``options.max_chunk_s`` long; each speech sample is in exactly one chunk. A pause of
    ``max_pause_s`` or more always ends a chunk and its silence is skipped, but for ``pad_s`` of
    context on each side; shorter pauses are cut only when the chunk would be too long, the
    fewest and longest first, and then split in the middle (nothing skipped); speech with no
    pause for ``max_chunk_s`` is cut at its quietest point near the limit. Chunks shorter than
    ``min_chunk_s`` join a neighbour when that fits. An all-silent recording gives ``[]``.
    """
    opt = options
    hop = max(round(sample_rate * _HOP_S), 1)
    n = int(np.asarray(samples).size)
    db = _frame_db(samples, hop)
    frames = _speech_frames(db, opt, hop / sample_rate)
    if not frames:
        return []
    # plan in frames (10 ms): cheap, and much finer than any pause worth cutting at
    per_s = sample_rate / hop
    limit = max(int(opt.max_chunk_s * per_s), 1)
    pad = min(round(opt.pad_s * per_s), limit // 4)
    min_len = round(opt.min_chunk_s * per_s)
    max_pause = max(round(opt.max_pause_s * per_s), 1)
    groups: list[list[tuple[int, int]]] = [[frames[0]]]
    for seg in frames[1:]:
        if seg[0] - groups[-1][-1][1] >= max_pause:
            groups.append([seg])  # a long pause: always cut, and skip the silence
        else:
            groups[-1].append(seg)
    spans: list[_Span] = []
    for group in groups:
        units, forced = _split_long(group, db, limit, limit - 2 * pad, min_len, opt.min_fill)
        spans.extend(_pack(units, forced, limit, pad, max_pause, min_len))
    spans = _merge_short(spans, limit, min_len, round(opt.merge_pause_s * per_s))
    return _to_chunks(spans, hop, n, sample_rate)


_Span = tuple[int, int, int, int]  # speech start, speech end (frames), context before, context after
_FORCED_CUT_COST = 5.0  # a cut inside speech costs as much as several cuts at pauses


def _split_long(
    segs: list[tuple[int, int]], db: np.ndarray, limit: int, piece: int, min_len: int, fill: float
) -> tuple[list[tuple[int, int]], list[bool]]:
    """Split speech runs longer than ``limit`` frames into pieces of at most ``piece`` frames.

    Each cut goes at the quietest 100 ms between ``fill`` of a piece and its full length, leaving
    at least ``min_len`` after it where possible. Returns the pieces and, for each boundary
    between consecutive pieces, whether it is such a forced cut (True) or a real pause (False).
    """
    units: list[tuple[int, int]] = []
    forced: list[bool] = []
    for a, b in segs:
        if units:
            forced.append(False)
        x = a
        while b - x > limit:
            hi = max(min(x + piece, b - min_len), x + 2)
            lo = min(x + round(fill * piece), hi - 1)
            window = _smooth(db[lo:hi])
            cut = lo + window.size - 1 - int(np.argmin(window[::-1]))  # the later of equal minima
            units.append((x, cut))
            forced.append(True)
            x = cut
        units.append((x, b))
    return units, forced


def _pack(
    units: list[tuple[int, int]],
    forced: list[bool],
    limit: int,
    pad: int,
    max_pause: int,
    min_len: int,
) -> list[_Span]:
    """Group consecutive ``units`` into spans of at most ``limit`` frames, cutting where it hurts least.

    Dynamic programming over the boundaries: each cut costs 1 (fewer, fuller chunks are better)
    plus up to 1.5 more the shorter its pause is, a forced cut costs ``_FORCED_CUT_COST``, and a
    span shorter than ``min_len`` costs 1. A greedy "fill up, then cut at the last pause" would
    often cut a sentence at a breath when a clear pause was a few seconds earlier.
    """
    m = len(units)
    left = [pad] * (m + 1)  # left[i]: context before unit i when a span starts there
    right = [pad] * m  # right[j]: context after unit j when a span ends there
    cut_cost = [0.0] * m
    for k in range(m - 1):
        pause = units[k + 1][0] - units[k][1]
        if forced[k]:
            right[k], left[k + 1], cut_cost[k] = 0, 0, _FORCED_CUT_COST
            continue
        # a pause shorter than max_pause is split in the middle and nothing is skipped: it is
        # cheap context, and whatever quiet speech the detector missed in it is still transcribed
        right[k] = (pause + 1) // 2
        left[k + 1] = pause - right[k]
        cut_cost[k] = 1.0 + 1.5 * (1.0 - min(pause, max_pause) / max_pause)
    best = [0.0] + [np.inf] * m  # best[j]: cost of the first j units
    back = [0] * (m + 1)
    for j in range(m):
        for i in range(j, -1, -1):
            length = units[j][1] - units[i][0]
            if length > limit:
                break
            cost = best[i] + (cut_cost[i - 1] if i else 0.0) + (1.0 if length < min_len else 0.0)
            if cost < best[j + 1]:
                best[j + 1], back[j + 1] = cost, i
    spans: list[_Span] = []
    j = m
    while j > 0:
        i = back[j]
        start, end = units[i][0], units[j - 1][1]
        spare = limit - (end - start)
        # pads give way to speech: shorten them if the span only fits without them
        after = min(right[j - 1], max(spare - left[i], spare // 2))
        spans.append((start, end, min(left[i], spare - after), after))
        j = i
    return spans[::-1]


def _smooth(db: np.ndarray) -> np.ndarray:
    """dB averaged over 100 ms, so a cut goes into a word gap rather than a single quiet frame."""
    return uniform_filter1d(db, 10, mode="nearest") if db.size >= 10 else db


def _merge_short(spans: list[_Span], limit: int, min_len: int, max_gap: int) -> list[_Span]:
    """Merge each span shorter than ``min_len`` into its nearer neighbour, if the result fits.

    A short utterance ("yes.") is better recognised with its neighbour as context, but not at
    the price of transcribing more than ``max_gap`` frames of silence in between.
    """
    out = list(spans)
    i = 0
    while i < len(out):
        s, e, _, _ = out[i]
        merges: list[tuple[int, int]] = []  # (pause between, index of the left span of the pair)
        if e - s < min_len:
            for j in (i - 1, i):
                if not 0 <= j < len(out) - 1:
                    continue
                gap = out[j + 1][0] - out[j][1]
                if gap <= max_gap and out[j + 1][1] + out[j + 1][3] - out[j][0] + out[j][2] <= limit:
                    merges.append((gap, j))
        if not merges:
            i += 1
            continue
        j = min(merges)[1]
        out[j : j + 2] = [(out[j][0], out[j + 1][1], out[j][2], out[j + 1][3])]
        i = j
    return out


def _to_chunks(spans: list[_Span], hop: int, n: int, sample_rate: int) -> list[Chunk]:
    """Frame spans to sample chunks: pads added, and cut short where two would overlap."""
    n_frames = -(-n // hop)
    edges = [[max(s - pl, 0), min(e + pr, n_frames)] for s, e, pl, pr in spans]
    for left, right, (_, e, _, _), (s, _, _, _) in zip(edges, edges[1:], spans, spans[1:], strict=False):
        if left[1] > right[0]:  # pads overlap: meet in the middle of the pause, shrinking both
            left[1] = right[0] = min(max((e + s) // 2, right[0], e), left[1], s)
    chunks: list[Chunk] = []
    prev_end = 0
    for a, b in edges:
        start, end = a * hop, min(b * hop, n)
        chunks.append(Chunk(start, end, (start - prev_end) / sample_rate))
        prev_end = end
    return chunks
