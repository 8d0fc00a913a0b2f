"""Tests for scribed.media.runs: frame labels -> turns, short runs absorbed by a neighbour."""

from __future__ import annotations

import numpy as np

from scribed.media.runs import Run, label_runs


def _labels(*spans: tuple[int, int]) -> np.ndarray:
    """(label, length) pairs -> a frame array (label -1 is silence)."""
    return np.concatenate([np.full(n, label) for label, n in spans])


def test_runs_of_equal_labels_and_silence_is_no_run() -> None:
    runs = label_runs(_labels((0, 50), (-1, 20), (1, 40)), min_frames=30)
    assert runs == [Run(0, 50, 0), Run(70, 110, 1)]


def test_a_short_run_goes_to_its_longer_touching_neighbour() -> None:
    runs = label_runs(_labels((0, 40), (1, 10), (2, 100)), min_frames=30)
    assert runs == [Run(0, 40, 0), Run(40, 150, 2)]


def test_a_short_run_between_two_of_the_same_speaker_merges_them() -> None:
    runs = label_runs(_labels((0, 60), (1, 5), (0, 60)), min_frames=30)
    assert runs == [Run(0, 125, 0)]


def test_a_short_run_alone_between_pauses_keeps_its_label() -> None:
    runs = label_runs(_labels((0, 100), (-1, 50), (1, 10), (-1, 50), (0, 100)), min_frames=30)
    assert Run(150, 160, 1) in runs and len(runs) == 3


def test_shortest_first_so_a_flicker_does_not_split_a_turn() -> None:
    # 0 0 ... | 1 (3) | 0 (4) | 1 ... : the two tiny runs are resolved before the long ones move
    runs = label_runs(_labels((0, 80), (1, 3), (0, 4), (1, 80)), min_frames=30)
    assert [r.label for r in runs] == [0, 1]
    assert runs[0].start == 0 and runs[-1].end == 167
    assert all(r.length >= 30 for r in runs)


def test_empty_and_all_silent() -> None:
    assert label_runs(np.zeros(0, np.int64), 30) == []
    assert label_runs(np.full(100, -1), 30) == []
