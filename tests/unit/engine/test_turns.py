"""Tests for scribed.engine.turns: chunks cut at speaker changes, each piece with one speaker."""

from __future__ import annotations

import numpy as np

from scribed.engine.turns import change_points, speaker_of, split_at_turns
from scribed.engine.types import SpeakerTurn
from scribed.media.segment import Chunk

SR = 16000


def test_a_change_in_a_pause_cuts_in_its_middle_and_inside_speech_at_the_quietest_point() -> None:
    samples = (np.random.default_rng(0).standard_normal(10 * SR) * 0.1).astype(np.float32)
    samples[round(4.08 * SR):round(4.14 * SR)] *= 0.01  # a dip near the change at 4.0 s
    turns = [SpeakerTurn(0.5, 2.0, 0), SpeakerTurn(3.0, 4.0, 1), SpeakerTurn(4.0, 6.0, 0), SpeakerTurn(6.5, 7.0, 0)]
    points = change_points(turns, samples)
    assert points[0] == round(2.5 * SR)
    assert abs(points[1] - round(4.11 * SR)) < 0.02 * SR
    assert len(points) == 2  # no change between the last two turns


def test_pieces_cover_the_chunk_exactly_and_carry_their_speaker() -> None:
    samples = np.zeros(12 * SR, np.float32)
    turns = [SpeakerTurn(0.2, 3.0, 0), SpeakerTurn(3.6, 5.0, 1), SpeakerTurn(5.4, 9.0, 0)]
    chunk = Chunk(0, 10 * SR, 0.7)
    pieces = split_at_turns([chunk], turns, samples)
    assert [(p.start, p.end) for p, _ in pieces] == [(0, round(3.3 * SR)), (round(3.3 * SR), round(5.2 * SR)),
                                                    (round(5.2 * SR), 10 * SR)]
    assert [who for _, who in pieces] == [0, 1, 0]
    assert [p.pause_before_s for p, _ in pieces] == [0.7, 0.0, 0.0]


def test_a_change_at_a_chunk_edge_does_not_cut_a_sliver() -> None:
    samples = np.zeros(6 * SR, np.float32)
    turns = [SpeakerTurn(0.0, 1.95, 0), SpeakerTurn(2.05, 5.0, 1)]  # change at 2.0 s
    pieces = split_at_turns([Chunk(round(1.9 * SR), 5 * SR, 0.0)], turns, samples)
    assert len(pieces) == 1 and pieces[0][1] == 1


def test_speaker_of_a_stretch_nobody_speaks_in_is_the_nearest_turn() -> None:
    turns = [SpeakerTurn(0.0, 1.0, 0), SpeakerTurn(5.0, 6.0, 1)]
    assert speaker_of(0.5, 5.5, turns) in (0, 1)
    assert speaker_of(4.0, 4.5, turns) == 1
    assert speaker_of(1.2, 1.4, turns) == 0
    assert speaker_of(0.0, 1.0, []) is None
