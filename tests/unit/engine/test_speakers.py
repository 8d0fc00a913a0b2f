"""Tests for scribed.engine.speakers: turns found by voice on meetings built from the shared clips.

The meetings (scribed.tools.meetings) interleave turns of real speakers, so the truth is exact;
the clips stay in ../shared/data/speech (tests skip without them). Clustering and voting are
also pinned on synthetic embeddings.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest

from scribed.engine.speakers import SpeakerFinder, SpeakerOptions, Turns, cluster, vote
from scribed.media.audio import SAMPLE_RATE, DecodedAudio
from scribed.tools.meetings import VOICES, build_meeting, der

SPEECH = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "speech"
MEETINGS = {
    2: (["libri-1995", "meeting-zh"], 0),
    3: (["jfk", "kimi-zh", "yue-xg0055639"], 1),
    4: (["libritts-1089", "aishell-0724", "yue-xq0015072", "funasr-zh"], 2),
}


@pytest.fixture(scope="module")
def finder() -> SpeakerFinder:
    return SpeakerFinder()


@pytest.fixture(scope="module")
def speech() -> Path:
    if not (SPEECH / VOICES["jfk"][0]).exists():
        pytest.skip("shared speech clips not present")
    return SPEECH


def _blobs(sizes: list[int], spread: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(sizes), 256))
    x = np.concatenate([c + spread * np.linalg.norm(c) / 16 * rng.standard_normal((n, 256))
                        for c, n in zip(centres, sizes, strict=True)])
    truth = np.repeat(np.arange(len(sizes)), sizes)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), truth


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return len(set(zip(a.tolist(), b.tolist(), strict=True))) == len(set(a.tolist())) == len(set(b.tolist()))


def test_options_from_the_config_setting() -> None:
    assert SpeakerOptions.from_setting(3).count == 3
    auto = SpeakerOptions.from_setting("auto", 2, None)
    assert auto.count is None and (auto.min_speakers, auto.max_speakers) == (2, 8)
    assert SpeakerOptions.from_setting("auto", 5, 3).max_speakers == 5  # bounds never cross
    with pytest.raises(ValueError):
        SpeakerOptions.from_setting("off")


def test_cluster_recovers_known_and_counted_groups() -> None:
    x, truth = _blobs([40, 25, 60])
    weights = np.full(len(x), 0.5)
    assert _same_partition(cluster(x, weights, SpeakerOptions(count=3)), truth)
    auto = cluster(x, weights, SpeakerOptions.from_setting("auto"))
    assert _same_partition(auto, truth)


def test_a_tiny_outlier_cluster_does_not_take_a_speaker_slot() -> None:
    x, truth = _blobs([40, 40, 1], seed=1)  # two speakers and one odd window (a cough)
    labels = cluster(x, np.full(len(x), 0.5), SpeakerOptions(count=2))
    assert _same_partition(labels[:80], truth[:80])


def test_clustering_a_subsample_gives_the_same_answer() -> None:
    x, truth = _blobs([300, 200, 250], seed=2)
    weights = np.full(len(x), 0.5)
    capped = cluster(x, weights, SpeakerOptions(count=3, max_clustered=100))
    assert _same_partition(capped, truth)


def test_vote_takes_the_majority_per_frame_and_absorbs_short_runs() -> None:
    spans = [(0, 200), (50, 250), (100, 300), (280, 480), (300, 500)]
    labels = np.array([0, 0, 1, 1, 1])
    runs = vote(spans, labels, [(0, 500 * 160)], 500, min_turn_s=0.3)
    # frames 0-200: window 0 and 1 outvote 2; 200-250 a tie (the first speaker keeps it); then speaker 1
    assert [(r.label, r.start, r.end) for r in runs] == [(0, 0, 250), (1, 250, 500)]


@pytest.mark.parametrize("size", sorted(MEETINGS))
def test_known_count_meetings_have_der_under_5_percent(size: int, finder: SpeakerFinder, speech: Path) -> None:
    names, seed = MEETINGS[size]
    meeting = build_meeting(speech, names, seed=seed)
    turns = finder.by_voice(meeting.samples, SpeakerOptions.from_setting(size))
    assert len({t.speaker for t in turns}) == size
    assert der(meeting.truth, turns, meeting.duration_s) < 0.05
    assert all(a.end <= b.start for a, b in itertools.pairwise(turns))
    assert turns[0].speaker == 0  # numbered by first appearance


@pytest.mark.parametrize("voice", ["libritts-1089", "meeting-zh", "yue-xg0054024"])
def test_one_voice_is_one_speaker_in_auto_mode(voice: str, finder: SpeakerFinder, speech: Path) -> None:
    meeting = build_meeting(speech, [voice], seed=0)
    turns = finder.by_voice(meeting.samples, SpeakerOptions.from_setting("auto"))
    assert turns and {t.speaker for t in turns} == {0}


def test_auto_counts_a_two_person_meeting(finder: SpeakerFinder, speech: Path) -> None:
    names, seed = MEETINGS[2]
    meeting = build_meeting(speech, names, seed=seed)
    turns = finder.by_voice(meeting.samples, SpeakerOptions.from_setting("auto"))
    assert len({t.speaker for t in turns}) == 2
    assert der(meeting.truth, turns, meeting.duration_s) < 0.05
    bounded = finder.by_voice(meeting.samples, dataclasses.replace(SpeakerOptions.from_setting("auto"),
                                                                   min_speakers=3, max_speakers=3))
    assert len({t.speaker for t in bounded}) == 3  # the bounds win over the threshold


def test_find_splits_a_two_party_stereo_recording_by_channel(finder: SpeakerFinder, speech: Path) -> None:
    from scribed.media.audio import decode_audio

    stereo = decode_audio(speech / "en-stereo" / "stereo_diarization.wav")
    found = finder.find(stereo, SpeakerOptions.from_setting("auto"))
    assert isinstance(found, Turns) and found.method == "channels" and found.count == 2
    assert set(found.channel_of.values()) == {"left", "right"}
    three = finder.find(stereo, SpeakerOptions.from_setting(3))  # three people cannot be two channels
    assert three.method == "voices"


def test_silence_has_no_turns(finder: SpeakerFinder) -> None:
    quiet = DecodedAudio(np.zeros(SAMPLE_RATE * 3, np.float32), SAMPLE_RATE, 3.0, "q.wav", SAMPLE_RATE, 1, "pcm", 3.0)
    assert finder.find(quiet, SpeakerOptions.from_setting(2)).turns == ()
