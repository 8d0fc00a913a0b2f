"""Rendering transcripts (txt, srt, vtt, json) and writing them atomically beside the recording.

Contract: the JSON layout is an interface: ``{"source", "duration_s", "language", "model",
"segments": [{"start", "end", "text", "language"}], "text"}`` (+ ``"failures"``).
"""

from __future__ import annotations

import json
from pathlib import Path

from scribed import text as textmod
from scribed.engine.types import Transcript
from scribed.output import atomic_write


def _failure_note(t: Transcript) -> list[str]:
    return [f"[scribed: {textmod.format_clock(f.start)}–{textmod.format_clock(f.end)} {f.reason}]"
            for f in t.failures]


def render_txt(t: Transcript, timestamps: bool = False) -> str:
    paragraphs = [f"[{textmod.format_clock(start)}] {body}" if timestamps else body
                  for start, body in t.paragraphs]
    return "\n\n".join(paragraphs + _failure_note(t)) + "\n"


def _cues(t: Transcript) -> list[tuple[float, float, str]]:
    """Subtitle cues: each segment split at sentence ends, time shared out by character count
    (the model gives no word timings, so this is an estimate inside the segment's true bounds)."""
    cues = []
    for seg in t.segments:
        pieces = textmod.split_sentences(seg.text)
        total = sum(len(p) for p in pieces) or 1
        start = seg.start
        for piece in pieces:
            end = start + (seg.end - seg.start) * len(piece) / total
            cues.append((start, end, piece))
            start = end
    return cues


def render_srt(t: Transcript) -> str:
    blocks = [f"{i}\n{textmod.format_clock(a, millis=True, sep=',')} --> "
              f"{textmod.format_clock(b, millis=True, sep=',')}\n{body}\n"
              for i, (a, b, body) in enumerate(_cues(t), 1)]
    return "\n".join(blocks)


def render_vtt(t: Transcript) -> str:
    blocks = [f"{textmod.format_clock(a, millis=True)} --> {textmod.format_clock(b, millis=True)}\n"
              f"{body.replace('-->', '->')}\n" for a, b, body in _cues(t)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def transcript_dict(t: Transcript) -> dict[str, object]:
    return {
        "source": Path(t.source).name,
        "duration_s": t.duration_s,
        "language": t.language,
        "model": t.model,
        "segments": [{"start": s.start, "end": s.end, "text": s.text, "language": s.language}
                     for s in t.segments if s.text],
        "text": t.text,
        "failures": [{"start": f.start, "end": f.end, "reason": f.reason} for f in t.failures],
    }


def render_json(t: Transcript) -> str:
    return json.dumps(transcript_dict(t), ensure_ascii=False, indent=2) + "\n"


def render(t: Transcript, fmt: str, timestamps: bool = False) -> str:
    if fmt == "txt":
        return render_txt(t, timestamps)
    return {"srt": render_srt, "vtt": render_vtt, "json": render_json}[fmt](t)


def write_transcript(t: Transcript, paths: dict[str, Path], *, source: Path, timestamps: bool = False) -> None:
    """Write every requested format atomically; txt last, since its presence means "done" to people."""
    for fmt in sorted(paths, key=lambda f: f == "txt"):
        atomic_write(paths[fmt], render(t, fmt, timestamps), mode_from=source)


