"""Rendering transcripts (txt, srt, vtt, json) and writing them atomically beside the recording.

Contract:
- The JSON layout is an interface: ``{"source", "duration_s", "language", "model", "segments":
  [{"start", "end", "text", "language"}], "text", "failures": [...], "no_speech"}``.
- A recording in which nothing was recognised (``Transcript.no_speech``) still gets every format,
  saying so: txt holds :data:`NO_SPEECH`, json has ``"segments": []`` and ``"no_speech": true``,
  srt one cue over the whole recording, vtt a ``NOTE``. :func:`write_transcript` logs it once.
- :func:`write_transcript` writes through :func:`scribed.output.atomic_write`, which replaces an
  existing file only if it is the one scribed wrote (``replaceable``) or ``overwrite`` is set.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from loguru import logger

from scribed import text as textmod
from scribed.engine.types import Transcript
from scribed.identity import FileIdentity
from scribed.output import atomic_write

NO_SPEECH = "[scribed: no speech detected]"


def _failure_note(t: Transcript) -> list[str]:
    return [f"[scribed: {textmod.format_clock(f.start)}–{textmod.format_clock(f.end)} {f.reason}]"
            for f in t.failures]


def render_txt(t: Transcript, timestamps: bool = False) -> str:
    if t.no_speech:
        return NO_SPEECH + "\n"
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
    # SubRip has no comments: silence is one cue over the whole recording
    cues = [(0.0, t.duration_s, NO_SPEECH)] if t.no_speech else _cues(t)
    blocks = [f"{i}\n{textmod.format_clock(a, millis=True, sep=',')} --> "
              f"{textmod.format_clock(b, millis=True, sep=',')}\n{body}\n"
              for i, (a, b, body) in enumerate(cues, 1)]
    return "\n".join(blocks)


def render_vtt(t: Transcript) -> str:
    if t.no_speech:
        return f"WEBVTT\n\nNOTE {NO_SPEECH.strip('[]')}\n"
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
        "no_speech": t.no_speech,
    }


def render_json(t: Transcript) -> str:
    return json.dumps(transcript_dict(t), ensure_ascii=False, indent=2) + "\n"


def render(t: Transcript, fmt: str, timestamps: bool = False) -> str:
    if fmt == "txt":
        return render_txt(t, timestamps)
    return {"srt": render_srt, "vtt": render_vtt, "json": render_json}[fmt](t)


def write_transcript(t: Transcript, paths: Mapping[str, Path], *, source: Path, timestamps: bool = False,
                     replaceable: Mapping[str, FileIdentity] | None = None, overwrite: bool = False,
                     root: Path | None = None) -> dict[str, FileIdentity]:
    """Write every requested format atomically; txt last, since its presence means "done" to people.

    ``replaceable[fmt]`` is the identity of the file scribed wrote earlier at ``paths[fmt]`` (the
    only existing file it may replace, unless ``overwrite``); with ``root`` (the watched folder or
    ``output.dir``) no symlink below it is followed. Returns the identity of each file written.
    Raises ``OutputTaken`` (something scribed may not replace is in the way) or OSError.
    """
    if t.no_speech:
        logger.info("{}: no speech detected ({:.1f} s); the transcript says so", source, t.duration_s)
    written: dict[str, FileIdentity] = {}
    for fmt in sorted(paths, key=lambda f: f == "txt"):
        written[fmt] = atomic_write(paths[fmt], render(t, fmt, timestamps), mode_from=source,
                                    replaceable=(replaceable or {}).get(fmt), overwrite=overwrite, root=root)
    return written
