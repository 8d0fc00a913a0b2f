"""Tests for scribed.tools.meetings: synthetic meetings with exact truth, and the DER that scores turns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scribed.engine.types import SpeakerTurn
from scribed.tools.meetings import VOICES, build_meeting, der

SPEECH = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "speech"


def test_der_is_zero_for_the_truth_whatever_the_labels() -> None:
    truth = [SpeakerTurn(0.0, 2.0, 0), SpeakerTurn(2.5, 5.0, 1), SpeakerTurn(5.5, 7.0, 0)]
    assert der(truth, truth, 8.0) == 0.0
    renamed = [SpeakerTurn(t.start, t.end, {0: 7, 1: 3}[t.speaker]) for t in truth]
    assert der(truth, renamed, 8.0) == 0.0


def test_der_counts_missed_false_alarm_and_confusion() -> None:
    truth = [SpeakerTurn(0.0, 4.0, 0), SpeakerTurn(4.0, 8.0, 1)]
    assert der(truth, [], 8.0, collar_s=0.0) == 1.0
    assert der(truth, [SpeakerTurn(0.0, 8.0, 0)], 8.0, collar_s=0.0) == pytest.approx(0.5)  # half confused
    assert der(truth, [*truth, SpeakerTurn(9.0, 10.0, 0)], 10.0, collar_s=0.0) == pytest.approx(1 / 8)  # false alarm
    late = [SpeakerTurn(0.2, 4.0, 0), SpeakerTurn(4.0, 8.0, 1)]
    assert der(truth, late, 8.0) == 0.0 and der(truth, late, 8.0, collar_s=0.0) > 0  # inside the collar


def test_meetings_are_reproducible_and_their_truth_is_exact() -> None:
    if not (SPEECH / VOICES["jfk"][0]).exists():
        pytest.skip("shared speech clips not present")
    a = build_meeting(SPEECH, ["jfk", "kimi-zh", "libritts-1089"], seed=4)
    b = build_meeting(SPEECH, ["jfk", "kimi-zh", "libritts-1089"], seed=4)
    assert np.array_equal(a.samples, b.samples) and a.truth == b.truth
    assert {t.speaker for t in a.truth} == {0, 1, 2} and a.speakers == ("jfk", "kimi-zh", "libritts-1089")
    assert all(0 <= t.start < t.end <= a.duration_s for t in a.truth)
    assert all(x.end <= y.start for x, y in zip(a.truth, a.truth[1:], strict=False))
    changes = sum(x.speaker != y.speaker for x, y in zip(a.truth, a.truth[1:], strict=False))
    assert changes >= 4  # they take turns
    gaps = [y.start - x.end for x, y in zip(a.truth, a.truth[1:], strict=False) if x.speaker != y.speaker]
    assert min(gaps) > 0.2  # nobody talks over anybody
