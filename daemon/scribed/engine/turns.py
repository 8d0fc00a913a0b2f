"""Speaker turns meet chunks: every chunk sent to the recognizer belongs to one speaker.

Contract: :func:`split_at_turns` cuts the planned chunks at each change of speaker (in the pause
between two turns, or at the quietest point within ``search_s`` of a change inside speech) and
gives each piece the speaker who talks most in it. The pieces cover exactly what the chunks
covered; a change closer than ``min_piece_s`` to a chunk edge does not cut (that sliver of speech
goes with its neighbour). numpy only.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from scribed.engine.types import SpeakerTurn
from scribed.media import segment
from scribed.media.segment import Chunk

SAMPLE_RATE = 16000


def change_points(turns: Sequence[SpeakerTurn], samples: np.ndarray, search_s: float = 0.2) -> list[int]:
    """Sample indices where the speaker changes, placed in the pause or at the quietest point."""
    points = []
    for a, b in itertools.pairwise(turns):
        if a.speaker == b.speaker:
            continue
        end, start = round(a.end * SAMPLE_RATE), round(b.start * SAMPLE_RATE)
        if start - end >= 2:
            points.append((end + start) // 2)
            continue
        lo = max(end - round(search_s * SAMPLE_RATE), 0)
        hi = min(end + round(search_s * SAMPLE_RATE), len(samples))
        points.append(segment.quietest_point(samples, lo, hi, SAMPLE_RATE, search=(0.0, 1.0)) if hi - lo >= 2 else end)
    return points


def speaker_of(start: float, end: float, turns: Sequence[SpeakerTurn]) -> int | None:
    """The speaker talking most in ``[start, end)`` seconds; the nearest turn's if nobody does."""
    if not turns:
        return None
    spoken: dict[int, float] = {}
    for t in turns:
        overlap = min(end, t.end) - max(start, t.start)
        if overlap > 0:
            spoken[t.speaker] = spoken.get(t.speaker, 0.0) + overlap
    if spoken:
        return max(spoken, key=lambda s: spoken[s])
    middle = (start + end) / 2
    return min(turns, key=lambda t: max(t.start - middle, middle - t.end)).speaker


def split_at_turns(chunks: Sequence[Chunk], turns: Sequence[SpeakerTurn], samples: np.ndarray, *,
                   min_piece_s: float = 0.2) -> list[tuple[Chunk, int | None]]:
    """The chunks cut at speaker changes, each piece with its speaker (see the module contract)."""
    points = np.array(change_points(turns, samples), dtype=np.int64)
    margin = round(min_piece_s * SAMPLE_RATE)
    out: list[tuple[Chunk, int | None]] = []
    for chunk in chunks:
        inside = points[(points > chunk.start + margin) & (points < chunk.end - margin)]
        edges = [chunk.start, *inside.tolist(), chunk.end]
        for i, (a, b) in enumerate(itertools.pairwise(edges)):
            piece = Chunk(a, b, chunk.pause_before_s if i == 0 else 0.0)
            out.append((piece, speaker_of(a / SAMPLE_RATE, b / SAMPLE_RATE, turns)))
    return out
