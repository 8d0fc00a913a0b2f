"""Runs of per-frame labels (who speaks in each 10 ms frame) turned into clean turns.

Contract: :func:`label_runs` takes one label per frame (``-1`` = nobody: not speech) and returns
the runs of equal labels, sorted and disjoint, with every run shorter than ``min_frames`` given to
a neighbour (the longer of the two that touch it; a run between pauses keeps its label, since no
one else spoke next to it). Frames labelled ``-1`` are never part of a run. numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Run:
    """Frames ``[start, end)`` spoken by ``label``."""

    start: int
    end: int
    label: int

    @property
    def length(self) -> int:
        return self.end - self.start


def _raw_runs(labels: np.ndarray) -> list[Run]:
    if labels.size == 0:
        return []
    edges = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [labels.size]])
    return [Run(int(a), int(b), int(labels[a])) for a, b in zip(starts, ends, strict=True) if labels[a] >= 0]


def label_runs(labels: np.ndarray, min_frames: int) -> list[Run]:
    """Runs of ``labels`` with runs under ``min_frames`` absorbed by a touching neighbour."""
    out: list[Run] = []
    group: list[Run] = []
    for run in _raw_runs(np.asarray(labels)):  # a group is runs that touch: speech between two pauses
        if group and group[-1].end != run.start:
            out += _smoothed(group, min_frames)
            group = []
        group.append(run)
    return out + _smoothed(group, min_frames)


def _smoothed(runs: list[Run], min_frames: int) -> list[Run]:
    """One group of touching runs, its short runs given to the longer neighbour, shortest first."""
    while len(runs) > 1:
        i = min(range(len(runs)), key=lambda k: runs[k].length)  # the shortest is the least certain
        if runs[i].length >= min_frames:
            break
        left = runs[i - 1] if i > 0 else None
        right = runs[i + 1] if i + 1 < len(runs) else None
        heir = left if right is None or (left is not None and left.length >= right.length) else right
        assert heir is not None
        runs[i] = Run(runs[i].start, runs[i].end, heir.label)
        runs = _merged(runs)
    return runs


def _merged(runs: list[Run]) -> list[Run]:
    out: list[Run] = []
    for r in runs:
        if out and out[-1].label == r.label:
            out[-1] = Run(out[-1].start, r.end, r.label)
        else:
            out.append(r)
    return out
