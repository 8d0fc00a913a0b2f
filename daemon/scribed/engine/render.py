"""Rendering transcripts (txt, srt, vtt, json) and writing them atomically beside the recording.

Contract:
- The JSON layout is an interface: ``{"source", "duration_s", "language", "model", "segments":
  [{"start", "end", "text", "language", "speaker"}], "text", "failures": [...], "no_speech",
  "speakers": [{"label", "speaking_s", "channel"?}], "speaker_method", "words": [{"start", "end",
  "text", "speaker"}], "word_timing", "notes"}``. Without speaker turns ``speaker`` is null,
  ``speakers`` empty and ``speaker_method`` null; without word timestamps ``words`` is empty and
  ``word_timing`` null ("aligned", "partial" or "estimated" when asked for: see ``notes``).
- With speaker turns, txt has one paragraph per turn starting ``Speaker N:`` (after the
  ``[hh:mm:ss]`` stamp when timestamps are on), each srt cue starts with ``Speaker N:``, and
  each vtt cue is a ``<v Speaker N>`` voice span. Cues follow :mod:`scribed.engine.subtitles`.
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
from scribed.engine.subtitles import Cue, cues
from scribed.engine.types import Transcript, speaker_label
from scribed.errors import OutputTaken
from scribed.identity import FileIdentity
from scribed.output import atomic_write

NO_SPEECH = "[scribed: no speech detected]"


def _failure_note(t: Transcript) -> list[str]:
    return [f"[scribed: {textmod.format_clock(f.start)}–{textmod.format_clock(f.end)} {f.reason}]"
            for f in t.failures]


def render_txt(t: Transcript, timestamps: bool = False) -> str:
    if t.no_speech:
        return NO_SPEECH + "\n"
    paragraphs = []
    for block in t.blocks:
        body = f"{speaker_label(block.speaker)}: {block.text}" if block.speaker is not None else block.text
        paragraphs.append(f"[{textmod.format_clock(block.start)}] {body}" if timestamps else body)
    return "\n\n".join(paragraphs + _failure_note(t)) + "\n"


def _srt_body(cue: Cue) -> str:
    lines = list(cue.lines)
    if cue.speaker is not None:
        lines[0] = f"{speaker_label(cue.speaker)}: {lines[0]}"
    return "\n".join(lines)


def render_srt(t: Transcript) -> str:
    # SubRip has no comments: silence is one cue over the whole recording
    timed = [(0.0, t.duration_s, NO_SPEECH)] if t.no_speech else [(c.start, c.end, _srt_body(c)) for c in cues(t)]
    blocks = [f"{i}\n{textmod.format_clock(a, millis=True, sep=',')} --> "
              f"{textmod.format_clock(b, millis=True, sep=',')}\n{body}\n"
              for i, (a, b, body) in enumerate(timed, 1)]
    return "\n".join(blocks)


def _vtt_escape(value: str) -> str:
    """Cue text: "-->" would end the timing line; "<" and "&" would start markup."""
    return value.replace("-->", "->").replace("&", "&amp;").replace("<", "&lt;")


def render_vtt(t: Transcript) -> str:
    if t.no_speech:
        return f"WEBVTT\n\nNOTE {NO_SPEECH.strip('[]')}\n"
    blocks = []
    for cue in cues(t):
        body = "\n".join(_vtt_escape(line) for line in cue.lines)
        if cue.speaker is not None:
            body = f"<v {speaker_label(cue.speaker)}>{body}"
        blocks.append(f"{textmod.format_clock(cue.start, millis=True)} --> "
                      f"{textmod.format_clock(cue.end, millis=True)}\n{body}\n")
    return "WEBVTT\n\n" + "\n".join(blocks)


def _speakers(t: Transcript) -> list[dict[str, object]]:
    spoken: dict[int, float] = {}
    for seg in t.segments:
        if seg.speaker is not None and seg.text:
            spoken[seg.speaker] = spoken.get(seg.speaker, 0.0) + seg.end - seg.start
    out: list[dict[str, object]] = []
    for who in t.speakers:
        entry: dict[str, object] = {"label": speaker_label(who), "speaking_s": round(spoken[who], 3)}
        if who in t.channel_of:
            entry["channel"] = t.channel_of[who]
        out.append(entry)
    return out


def _label(speaker: int | None) -> str | None:
    return speaker_label(speaker) if speaker is not None else None


def transcript_dict(t: Transcript) -> dict[str, object]:
    return {
        "source": Path(t.source).name,
        "duration_s": t.duration_s,
        "language": t.language,
        "model": t.model,
        "segments": [{"start": s.start, "end": s.end, "text": s.text, "language": s.language,
                      "speaker": _label(s.speaker)} for s in t.segments if s.text],
        "text": t.text,
        "failures": [{"start": f.start, "end": f.end, "reason": f.reason} for f in t.failures],
        "no_speech": t.no_speech,
        "speakers": _speakers(t),
        "speaker_method": t.speaker_method,
        "words": [{"start": w.start, "end": w.end, "text": w.text, "speaker": _label(s.speaker)}
                  for s in t.segments if s.text for w in s.words],
        "word_timing": t.word_timing,
        "notes": list(t.notes),
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
    Raises ``OutputTaken`` (something scribed may not replace is in the way) or OSError; either
    carries ``written``: the identities of the formats placed before it (scribed's own files, so
    that the caller can record them).
    """
    if t.no_speech:
        logger.info("{}: no speech detected ({:.1f} s); the transcript says so", source, t.duration_s)
    written: dict[str, FileIdentity] = {}
    try:
        for fmt in sorted(paths, key=lambda f: f == "txt"):
            written[fmt] = atomic_write(paths[fmt], render(t, fmt, timestamps), mode_from=source,
                                        replaceable=(replaceable or {}).get(fmt), overwrite=overwrite, root=root)
    except (OSError, OutputTaken) as exc:
        exc.written = dict(written)  # type: ignore[attr-defined]
        raise
    return written
