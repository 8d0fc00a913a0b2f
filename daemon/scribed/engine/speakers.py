"""Speaker turns: who speaks when, told apart by voice or, in a two-party stereo recording, by channel.

Method (tuned on synthetic meetings with exact truth, :mod:`scribed.tools.meetings`; figures in
the README, reproduced by ``python -m scribed.tools.speakerbench``):

1. Speech regions come from the pipeline's own detector (:func:`scribed.media.segment.find_speech`);
   the recording's speech is scaled to -30 dBFS, the level the voice encoder was trained at.
2. Embedding windows of ``window_s`` every ``hop_s`` inside each region (slices of the region's
   spectrogram; a region shorter than a window, but at least ``min_window_s``, is one window).
3. Agglomerative clustering, cosine distance, average linkage (scipy). A known count cuts the
   tree into that many clusters, not counting clusters holding less than ``min_cluster_s`` of
   speech (a cough, a laugh, a door), which join their nearest real cluster; ``auto`` cuts at the
   distance ``threshold`` and bounds the count by ``min_speakers``/``max_speakers``. More than
   ``max_clustered`` windows: an even subsample is clustered and every window goes to the nearest
   cluster centre, so the cost of this step is bounded (O(max_clustered²)) however long the file.
4. Every window votes for its cluster on each of its frames; each 10 ms speech frame takes the
   majority; turns shorter than ``min_turn_s`` are absorbed by a neighbour; speakers are numbered
   in order of first appearance.

A stereo recording whose channels clearly carry two people (:func:`scribed.media.channels.channel_turns`)
is split by channel instead, when two speakers are allowed (``speakers`` auto or 2).

Contract: :meth:`SpeakerFinder.find` returns :class:`Turns`: sorted, disjoint
:class:`SpeakerTurn` s over the speech of the recording, and how they were found. The voice
encoder (torch) loads on first use; embeddings stay in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from loguru import logger

from scribed.engine.types import SpeakerTurn
from scribed.media import segment
from scribed.media.channels import FRAMES_PER_S, channel_turns
from scribed.media.runs import Run, label_runs

if TYPE_CHECKING:
    from scribed.engine.voice import VoiceEncoder
    from scribed.media.audio import DecodedAudio

SAMPLE_RATE = 16000
_HOP = SAMPLE_RATE // FRAMES_PER_S  # samples per 10 ms frame (the spectrogram hop)
_REGION_S = 60.0  # longer speech regions are embedded in pieces (bounded spectrogram memory)
_TARGET_DBFS = -30.0


@dataclass(frozen=True)
class SpeakerOptions:
    """How to find turns. ``count`` None means count the speakers (auto)."""

    count: int | None = None
    min_speakers: int = 1
    max_speakers: int = 8
    window_s: float = 2.0
    hop_s: float = 0.5
    min_window_s: float = 0.4
    threshold: float = 0.45  # auto: clusters closer than this (cosine distance, average linkage) merge
    min_cluster_s: float = 1.0
    min_turn_s: float = 0.3
    max_clustered: int = 3000

    @classmethod
    def from_setting(cls, speakers: str | int, min_speakers: int | None = None,
                     max_speakers: int | None = None) -> SpeakerOptions:
        """From the config's ``speakers`` (auto or N) and optional bounds for auto."""
        if speakers == "auto":
            low = min_speakers or 1
            return cls(None, low, max(max_speakers or 8, low), min_cluster_s=2.0)
        if not isinstance(speakers, int):
            raise ValueError(f"speakers must be 'auto' or a number, not {speakers!r}")
        return cls(speakers, speakers, speakers)


@dataclass(frozen=True)
class Turns:
    """Turns and how they were found: ``"voices"`` or ``"channels"`` (then ``channel_of`` names
    each speaker's channel, "left" or "right")."""

    method: str
    turns: tuple[SpeakerTurn, ...]
    channel_of: Mapping[int, str] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len({t.speaker for t in self.turns})


def speech_gain(samples: np.ndarray, regions: Sequence[tuple[int, int]]) -> float:
    """The gain that brings the speech to -30 dBFS RMS (applied per window: the recording is not copied)."""
    power = sum(float(np.dot(samples[a:b], samples[a:b])) for a, b in regions)
    count = sum(b - a for a, b in regions)
    rms = np.sqrt(power / max(count, 1))
    return float(10 ** (_TARGET_DBFS / 20) / max(rms, 1e-9))


def _pieces(regions: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    step = int(_REGION_S * SAMPLE_RATE)
    return [(s, min(s + step, b)) for a, b in regions for s in range(a, b, step)]


def windows(encoder_features: Callable[[np.ndarray], np.ndarray], samples: np.ndarray,
            regions: Sequence[tuple[int, int]], opt: SpeakerOptions,
            gain: float = 1.0) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Spectrogram windows and the 10 ms frames ``[start, end)`` of the recording each covers."""
    width = round(opt.window_s * FRAMES_PER_S)
    hop = max(round(opt.hop_s * FRAMES_PER_S), 1)
    shortest = round(opt.min_window_s * FRAMES_PER_S)
    mels: list[np.ndarray] = []
    spans: list[tuple[int, int]] = []
    for a, b in _pieces(regions):
        mel = encoder_features(samples[a:b] * np.float32(gain))
        n = len(mel)
        if n < shortest:
            continue
        w = min(width, n)
        starts = list(range(0, n - w + 1, hop))
        if starts[-1] + w < n:
            starts.append(n - w)  # the region's end is covered too
        mels += [mel[s:s + w] for s in starts]
        spans += [(a // _HOP + s, a // _HOP + s + w) for s in starts]
    return mels, spans


def cluster(embeddings: np.ndarray, weights: np.ndarray, opt: SpeakerOptions) -> np.ndarray:
    """A speaker index per window (see the module docstring, step 3)."""
    from scipy.cluster.hierarchy import fcluster, linkage

    n = len(embeddings)
    if n < 2:
        return np.zeros(n, np.int64)
    picked = np.arange(n) if n <= opt.max_clustered else np.linspace(0, n - 1, opt.max_clustered).round().astype(int)
    x, w = embeddings[picked], weights[picked]
    tree = linkage(x.astype(np.float64), method="average", metric="cosine")

    def significant(labels: np.ndarray) -> np.ndarray:
        mass = np.bincount(labels, weights=w)
        order = np.argsort(-mass)
        return order[mass[order] >= opt.min_cluster_s]

    if opt.count is not None:
        target = opt.count
    else:
        found = len(significant(fcluster(tree, opt.threshold, "distance") - 1))
        target = min(max(found, opt.min_speakers), opt.max_speakers)
    target = max(1, min(target, len(x)))
    for k in range(target, min(target + 10, len(x)) + 1):  # outlier clusters do not count
        labels = fcluster(tree, k, "maxclust") - 1
        keep = significant(labels)
        if len(keep) >= target:
            keep = keep[:target]
            break
    else:  # too little speech for that many real clusters: the plain cut, small clusters and all
        labels = fcluster(tree, target, "maxclust") - 1
        keep = np.argsort(-np.bincount(labels, weights=w))[:target]
    centres = np.stack([x[labels == c].mean(axis=0) for c in keep])
    centres /= np.linalg.norm(centres, axis=1, keepdims=True).clip(1e-12)
    return np.argmax(embeddings @ centres.T, axis=1)


def vote(spans: Sequence[tuple[int, int]], labels: np.ndarray, regions: Sequence[tuple[int, int]],
         n_frames: int, min_turn_s: float) -> list[Run]:
    """Frame-level majority of the windows, over speech frames only; short runs absorbed."""
    count = int(labels.max()) + 1 if len(labels) else 1
    votes = np.zeros((n_frames, count), np.float32)
    for (a, b), label in zip(spans, labels, strict=True):
        votes[a:b, label] += 1.0
    frame = np.full(n_frames, -1, np.int64)
    for a, b in regions:
        fa, fb = a // _HOP, min(-(-b // _HOP), n_frames)
        v = votes[fa:fb]
        best = np.argmax(v, axis=1)
        voted = v.max(axis=1) > 0
        if voted.any():  # frames no window reached (a tiny region) take the nearest voted frame
            idx = np.flatnonzero(voted)
            nearest = idx[np.clip(np.searchsorted(idx, np.arange(len(v))), 0, len(idx) - 1)]
            best = np.where(voted, best, best[nearest])
            frame[fa:fb] = best
    if (frame < 0).any() and (frame >= 0).any():  # a region no window reached: nearest labelled frame
        idx = np.flatnonzero(frame >= 0)
        for a, b in regions:
            fa, fb = a // _HOP, min(-(-b // _HOP), n_frames)
            if fb > fa and frame[fa] < 0:
                near = idx[np.clip(np.searchsorted(idx, fa), 0, len(idx) - 1)]
                frame[fa:fb] = frame[near]
    return label_runs(frame, round(min_turn_s * FRAMES_PER_S))


def _numbered(runs: Sequence[Run]) -> list[SpeakerTurn]:
    order: dict[int, int] = {}
    return [SpeakerTurn(r.start / FRAMES_PER_S, r.end / FRAMES_PER_S, order.setdefault(r.label, len(order)))
            for r in runs]


class SpeakerFinder:
    """Finds speaker turns; holds the voice encoder once it is needed (not thread-safe)."""

    def __init__(self, encoder: VoiceEncoder | None = None) -> None:
        self._encoder = encoder

    @property
    def encoder(self) -> VoiceEncoder:
        if self._encoder is None:
            from scribed.engine.voice import VoiceEncoder

            self._encoder = VoiceEncoder()
        return self._encoder

    def unload(self) -> None:
        self._encoder = None

    def find(self, audio: DecodedAudio, opt: SpeakerOptions) -> Turns:
        """By channel for a clear two-party stereo recording (when two speakers are allowed), else by voice."""
        if audio.channel_power is not None and opt.min_speakers <= 2 <= opt.max_speakers:
            runs = channel_turns(audio.channel_power)
            if runs:
                turns = _numbered(runs)
                sides = {t.speaker: ("left", "right")[r.label] for t, r in zip(turns, runs, strict=True)}
                return Turns("channels", tuple(turns), sides)
        return Turns("voices", tuple(self.by_voice(audio.samples, opt)))

    def by_voice(self, samples: np.ndarray, opt: SpeakerOptions) -> list[SpeakerTurn]:
        start = time.perf_counter()
        regions = segment.find_speech(samples)
        if not regions:
            return []
        mels, spans = windows(self.encoder.features, samples, regions, opt, speech_gain(samples, regions))
        if not mels:  # only fragments of speech: one speaker
            return _numbered([Run(a // _HOP, -(-b // _HOP), 0) for a, b in regions])
        embeddings = self.encoder.embed(mels)
        del mels
        weights = np.array([min(b - a, round(opt.hop_s * FRAMES_PER_S)) for a, b in spans], np.float64) / FRAMES_PER_S
        labels = cluster(embeddings, weights, opt)
        turns = _numbered(vote(spans, labels, regions, -(-len(samples) // _HOP), opt.min_turn_s))
        logger.debug("speaker turns: {} windows, {} speakers, {} turns in {:.1f} s", len(spans),
                     len({t.speaker for t in turns}), len(turns), time.perf_counter() - start)
        return turns
