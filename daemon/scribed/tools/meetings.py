"""Synthetic meetings with exact ground truth, and the diarization error rate (DER) to score turns.

Contract:
- :data:`VOICES` names clips of the shared speech data (``../shared/data/speech``) by speaker:
  each entry is one person (clips of the same person are grouped; clips with several voices, such
  as the Apollo 11 radio, are left out). :func:`build_meeting` cuts each chosen speaker's speech
  into turns at pauses and interleaves them with short gaps of faint noise, reproducibly from its
  seed; the truth is every speech region (the same detector the pipeline uses, run on each turn
  alone) with its speaker. Nothing is written to disk.
- :func:`der` scores hypothesis turns against the truth on a 10 ms grid: (missed + false alarm +
  confusion) / reference speech, with the best one-to-one mapping of labels and a collar around
  each reference boundary that is not scored (the usual ±0.25 s).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scribed.engine.types import SpeakerTurn
from scribed.media import segment
from scribed.media.audio import SAMPLE_RATE, decode_audio

# speaker name -> clips (relative to the speech folder). One person each; several languages.
VOICES: dict[str, tuple[str, ...]] = {
    "jfk": ("en-jfk/jfk.flac",),
    "libri-1995": ("en-librispeech/librispeech-1995-1837-0001.wav",),
    "libri-1272": ("en-librispeech/1272-128104-0000.flac",),
    "libritts-1089": ("en-libritts/1089_134686_000007_000004.wav",),
    "aishell-0764": ("zh-firered/BAC009S0764W0121.wav",),
    "meeting-zh": ("zh-firered/TEST_MEETING_T0000000001_S00000.wav",),
    "aishell-0724": ("zh-aishell/aishell-BAC009S0724W0121.wav",),
    "funasr-zh": ("zh-funasr/asr_example.wav",),
    "kimi-zh": ("zh-kimi/asr_example.wav",),
    "yue-gd0046360": ("yue-wenetspeech-yue/gd0046360_472330_486480.wav",),
    "yue-xq0015072": ("yue-wenetspeech-yue/xq0015072_175450_190230.wav",),
    "yue-xg0054024": ("yue-wenetspeech-yue/xg0054024_52710_82710.wav",
                      "yue-wenetspeech-yue/xg0054024_2380_8540.wav"),
    "yue-xg0055639": ("yue-wenetspeech-yue/xg0055639_31550_45350.wav",),
    "yue-230636120099": ("yue-wenetspeech-yue/230636120099_7mx8A_25_13800.wav",),
    "yue-204826042729": ("yue-wenetspeech-yue/204826042729_IHpyB_28_13900.wav",),
    "yue-xg0011541": ("yue-wenetspeech-yue/xg0011541_258290_268600.wav",
                      "yue-wenetspeech-yue/xg0011541_133580_136570.wav"),
}

_HOP = SAMPLE_RATE // 100  # the 10 ms scoring grid


@dataclass(frozen=True)
class Meeting:
    samples: np.ndarray  # 16 kHz mono float32
    truth: tuple[SpeakerTurn, ...]  # every speech region, with its speaker (index into ``speakers``)
    speakers: tuple[str, ...]

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def load_voice(speech_dir: Path, name: str) -> np.ndarray:
    """One speaker's clips, decoded and joined (16 kHz mono)."""
    return np.concatenate([decode_audio(speech_dir / rel).samples for rel in VOICES[name]])


def _turn_pieces(x: np.ndarray, rng: np.random.Generator, turn_s: tuple[float, float]) -> list[np.ndarray]:
    """Cut one speaker's speech into turns of ``turn_s`` seconds (drawn anew for each turn): at a
    pause between speech regions when one is near, else at the quietest point (a gap between words)."""
    regions = segment.find_speech(x)
    if not regions:
        return []
    pad = SAMPLE_RATE // 20
    pieces: list[np.ndarray] = []
    start, end, previous = regions[0][0], regions[-1][1], 0
    while end - start > turn_s[1] * SAMPLE_RATE:
        lo, hi = start + int(turn_s[0] * SAMPLE_RATE * 0.8), end - SAMPLE_RATE
        if hi - lo < SAMPLE_RATE // 2:
            break
        target = min(max(start + int(rng.uniform(*turn_s) * SAMPLE_RATE), lo), hi)
        window = (max(lo, target - SAMPLE_RATE // 2), min(hi, target + SAMPLE_RATE // 2))
        pauses = [(b, c) for (_, b), (c, _) in itertools.pairwise(regions)
                  if window[0] <= b and c <= window[1]]
        if pauses:
            b, c = min(pauses, key=lambda p: abs(p[0] - target))
            cut = (b + c) // 2
        else:
            cut = segment.quietest_point(x, *window, search=(0.0, 1.0))
        pieces.append(x[max(start - pad, previous):cut])
        following = [a for a, _ in regions if a >= cut]
        start, previous = (following[0] if following and following[0] - cut > pad else cut), cut
    pieces.append(x[max(start - pad, previous):min(end + pad, len(x))])
    return [p for p in pieces if len(p) > SAMPLE_RATE // 2]


def build_meeting(speech_dir: Path, names: Sequence[str], *, seed: int = 0, turn_s: tuple[float, float] = (1.5, 5.0),
                  gap_s: tuple[float, float] = (0.3, 0.9), noise_db: float = -60.0) -> Meeting:
    """A meeting of ``names`` taking turns, over a bed of faint noise (a room is never silent).

    No speaker speaks twice in a row while another still has turns; each turn is scaled by a
    random gain of 0 to -4 dB. The truth is found on each turn alone, over the same noise bed.
    """
    rng = np.random.default_rng(seed)
    queues = [_turn_pieces(load_voice(speech_dir, n), rng, turn_s) for n in names]
    left = [len(q) for q in queues]
    order: list[int] = []
    while sum(left):
        choices = [i for i in range(len(names)) if left[i] and (not order or i != order[-1])]
        who = int(rng.choice(choices or [i for i in range(len(names)) if left[i]]))
        order.append(who)
        left[who] -= 1
    gaps = [int(rng.uniform(*gap_s) * SAMPLE_RATE) for _ in order] + [SAMPLE_RATE // 2]
    pieces = [queues[who].pop(0) * np.float32(10 ** (-rng.uniform(0, 4) / 20)) for who in order]
    total = sum(gaps) + sum(len(p) for p in pieces)
    out = (rng.standard_normal(total) * 10 ** (noise_db / 20)).astype(np.float32)
    truth: list[SpeakerTurn] = []
    pos = 0
    for who, gap, piece in zip(order, gaps, pieces, strict=False):
        pos += gap
        out[pos:pos + len(piece)] += piece
        truth += [SpeakerTurn((pos + a) / SAMPLE_RATE, (pos + b) / SAMPLE_RATE, who)
                  for a, b in segment.find_speech(out[pos:pos + len(piece)])]
        pos += len(piece)
    return Meeting(out, tuple(truth), tuple(names))


def _grid(turns: Sequence[SpeakerTurn], n: int, labels: dict[object, int]) -> np.ndarray:
    grid = np.full(n, -1, np.int32)
    for t in turns:
        grid[round(t.start * 100):round(t.end * 100)] = labels.setdefault(t.speaker, len(labels))
    return grid


def der(truth: Sequence[SpeakerTurn], hypothesis: Sequence[SpeakerTurn], duration_s: float,
        collar_s: float = 0.25) -> float:
    """Diarization error rate of ``hypothesis`` against ``truth`` (see the module contract)."""
    from scipy.optimize import linear_sum_assignment

    n = int(np.ceil(duration_s * 100)) + 1
    ref = _grid(truth, n, {})
    hyp = _grid(hypothesis, n, {})
    scored = np.ones(n, bool)
    collar = round(collar_s * 100)
    for t in truth:
        for edge in (round(t.start * 100), round(t.end * 100)):
            scored[max(edge - collar, 0):edge + collar] = False
    ref, hyp = ref[scored], hyp[scored]
    total = int((ref >= 0).sum())
    if total == 0:
        return 0.0
    both = (ref >= 0) & (hyp >= 0)
    overlap = np.zeros((ref.max() + 1, max(hyp.max() + 1, 1)), np.int64)
    np.add.at(overlap, (ref[both], hyp[both]), 1)
    rows, cols = linear_sum_assignment(-overlap)
    matched = int(overlap[rows, cols].sum())
    missed = int(((ref >= 0) & (hyp < 0)).sum())
    false_alarm = int(((ref < 0) & (hyp >= 0)).sum())
    confusion = int(both.sum()) - matched
    return (missed + false_alarm + confusion) / total
