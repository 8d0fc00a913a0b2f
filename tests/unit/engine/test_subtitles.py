"""Tests for scribed.engine.subtitles: cue conventions from word timings, and the estimate without them."""

from __future__ import annotations

import pytest

from scribed.engine.subtitles import MAX_CUE_S, MAX_LINE, cues, fits, width, wrap
from scribed.engine.types import Segment, Transcript, Word


def _words(text: str, start: float, step: float = 0.3, gaps: dict[int, float] | None = None) -> tuple[Word, ...]:
    out, t = [], start
    for i, token in enumerate(text.split()):
        t += (gaps or {}).get(i, 0.0)
        out.append(Word(round(t, 3), round(t + step * 0.8, 3), token))
        t += step
    return tuple(out)


def _transcript(*segments: Segment) -> Transcript:
    return Transcript("a.wav", 600.0, "en", "m", segments, ())


LONG = ("so the plan for the next quarter is to ship the new importer first and then spend two weeks on "
        "the reporting screens before anyone touches the billing code again")


def test_cues_from_words_keep_the_limits() -> None:
    seg = Segment(0.0, 40.0, LONG, "en", speaker=0, words=_words(LONG, 0.5))
    result = cues(_transcript(seg))
    assert len(result) > 2
    room = MAX_LINE - len("Speaker 1: ")
    for cue in result:
        assert cue.end - cue.start <= MAX_CUE_S + 1e-9
        assert 1 <= len(cue.lines) <= 2 and width(cue.lines[0]) <= room and all(width(x) <= MAX_LINE for x in cue.lines)
        assert cue.speaker == 0
    assert " ".join(" ".join(c.lines) for c in result) == LONG  # nothing lost or reordered


def test_cues_break_after_a_sentence_end_and_at_a_pause() -> None:
    text = "Yes. We agreed on Monday so let us go"
    seg = Segment(0.0, 10.0, text, "en", words=_words(text, 0.0, gaps={5: 0.8}))  # a pause before "so"
    assert [" ".join(c.lines) for c in cues(_transcript(seg))] == ["Yes.", "We agreed on Monday", "so let us go"]


def test_each_speaker_change_starts_a_cue() -> None:
    a = Segment(0.0, 2.0, "hello there", "en", speaker=0, words=_words("hello there", 0.1))
    b = Segment(2.0, 4.0, "hi", "en", speaker=1, words=_words("hi", 2.1))
    result = cues(_transcript(a, b))
    assert [(c.speaker, c.lines) for c in result] == [(0, ("hello there",)), (1, ("hi",))]
    assert result[0].end <= result[1].start  # a held cue never overlaps the next


def test_short_cues_are_held_for_a_second_when_there_is_room() -> None:
    seg = Segment(0.0, 9.0, "Yes.", "en", words=(Word(1.0, 1.2, "Yes."),))
    (cue,) = cues(_transcript(seg))
    assert (cue.start, cue.end) == (1.0, 2.0)


def test_wrap_balances_two_lines_and_counts_cjk_as_double_width() -> None:
    lines = wrap("the quick brown fox jumps over the lazy dog and keeps on running far")
    assert len(lines) == 2 and all(width(x) <= MAX_LINE for x in lines)
    assert abs(len(lines[0]) - len(lines[1])) < 12
    cjk = "我们下个季度先发布新的导入工具，然后花两周时间做报表页面"
    lines = wrap(cjk)
    assert len(lines) == 2 and "".join(lines) == cjk and all(width(x) <= MAX_LINE for x in lines)
    assert lines[0].endswith("，")  # after the comma near the middle
    assert fits("short") and not fits("x" * 90)


@pytest.mark.parametrize("speaker", [None, 2])
def test_estimated_cues_stay_inside_the_segment(speaker: int | None) -> None:
    seg = Segment(3.0, 30.0, LONG + ". " + LONG, "en", speaker=speaker)
    result = cues(_transcript(seg))
    assert result[0].start == 3.0 and result[-1].end <= 30.0
    assert all(len(c.lines) <= 2 for c in result) and {c.speaker for c in result} == {speaker}
