"""Subtitle cues (srt/vtt): from word timings when the aligner gave them, else estimated in segments.

Conventions (the usual subtitle guidelines): a cue lasts at most :data:`MAX_CUE_S` seconds and
holds at most two lines of at most :data:`MAX_LINE` characters (a CJK character counts as two, as
it is shown twice as wide); a speaker label, when there is one, counts on the first line. Cues
from word timings break after a sentence end, at a pause of :data:`PAUSE_S` or more between words,
at every speaker change, and wherever the next word would break the limits; a cue shown for less
than :data:`MIN_CUE_S` is held longer when the next one leaves room. A line breaks at the space
nearest its middle (CJK text anywhere, after punctuation if one is near). Segments without word
timings keep the estimate: split at sentence ends, time shared out by character count inside the
segment's true bounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scribed import text as textmod
from scribed.engine.types import Segment, Transcript, Word, speaker_label

MAX_CUE_S = 7.0
MAX_LINE = 42
PAUSE_S = 0.5
MIN_CUE_S = 1.0
_SENTENCE_END = tuple(".!?。！？…")
_SOFT_BREAK = tuple(",，、;；:：")


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]
    speaker: int | None = None


def width(text: str) -> int:
    return sum(2 if textmod.is_cjk(c) else 1 for c in text)


def wrap(text: str, first: int = MAX_LINE, rest: int = MAX_LINE) -> list[str]:
    """``text`` as one line if it fits in ``first``, else two lines split as evenly as they allow
    (``first`` is the room on line one: shorter when a label precedes it). May return lines that
    are too long when no split makes them fit (the caller keeps cues small enough)."""
    text = text.strip()
    if width(text) <= first:
        return [text]
    cjk = any(textmod.is_cjk(c) for c in text)
    cuts = [i for i in range(1, len(text)) if text[i] == " "] if not cjk or " " in text else []
    if not cuts:  # CJK: anywhere, preferring just after punctuation
        cuts = list(range(1, len(text)))
    total = width(text)

    def badness(i: int) -> tuple[int, float]:
        left, right = width(text[:i].strip()), width(text[i:].strip())
        over = max(left - first, 0) + max(right - rest, 0)
        soft = 0.5 if cjk and text[i - 1] in _SOFT_BREAK + _SENTENCE_END else 0.0
        return over, abs(left - total / 2) / max(total, 1) - soft

    best = min(cuts, key=badness)
    return [text[:best].strip(), text[best:].strip()]


def fits(text: str, first: int = MAX_LINE, rest: int = MAX_LINE) -> bool:
    lines = wrap(text, first, rest)
    return len(lines) <= 2 and width(lines[0]) <= first and all(width(x) <= rest for x in lines[1:])


def _label_room(speaker: int | None) -> int:
    return MAX_LINE - (len(speaker_label(speaker)) + 2 if speaker is not None else 0)


def _from_words(words: Sequence[Word], speaker: int | None) -> list[Cue]:
    room = _label_room(speaker)
    cues: list[list[Word]] = []
    for word in words:
        current = cues[-1] if cues else None
        if current is not None:
            last = current[-1]
            joined = textmod.join_texts([w.text for w in current] + [word.text])
            if not (last.text.endswith(_SENTENCE_END) or word.start - last.end >= PAUSE_S
                    or word.end - current[0].start > MAX_CUE_S or not fits(joined, room)):
                current.append(word)
                continue
        cues.append([word])
    return [Cue(c[0].start, c[-1].end, tuple(wrap(textmod.join_texts([w.text for w in c]), room)), speaker)
            for c in cues]


def _estimated(seg: Segment) -> list[Cue]:
    room = _label_room(seg.speaker)
    pieces = textmod.split_sentences(seg.text, max_chars=room + MAX_LINE)
    total = sum(len(p) for p in pieces) or 1
    cues, start = [], seg.start
    for piece in pieces:
        end = start + (seg.end - seg.start) * len(piece) / total
        cues.append(Cue(start, end, tuple(wrap(piece, room)), seg.speaker))
        start = end
    return cues


def _held(cues: list[Cue], duration_s: float) -> list[Cue]:
    """Short cues stay up to MIN_CUE_S when the next cue starts later (never overlapping it)."""
    out = []
    for cue, nxt in zip(cues, [*cues[1:], None], strict=True):
        limit = nxt.start if nxt is not None else max(duration_s, cue.end)
        end = max(cue.end, min(cue.start + MIN_CUE_S, limit))
        out.append(Cue(cue.start, round(end, 3), cue.lines, cue.speaker))
    return out


def cues(t: Transcript) -> list[Cue]:
    """Every cue of the transcript, in time order (see the module contract)."""
    out: list[Cue] = []
    for seg in t.segments:
        if not seg.text.strip():
            continue
        out += _from_words(seg.words, seg.speaker) if seg.words else _estimated(seg)
    return _held(out, t.duration_s)
