"""Tests for scribed.engine.render: every format's layout, silence, and writing through atomic_write."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
from loguru import logger

from scribed.engine import render
from scribed.engine.types import ChunkFailure, Segment, Transcript, Word
from scribed.errors import OutputTaken
from scribed.identity import FileIdentity


def _transcript() -> Transcript:
    return Transcript(
        source="/x/meeting.m4a", duration_s=70.0, language="en", model="m",
        segments=[Segment(1.0, 10.0, "Hello there. How are you?", "en", 1.0),
                  Segment(12.0, 20.0, "Fine.", "en", 2.0),
                  Segment(30.0, 40.0, "Next topic. Budget first! Then the plan? Done.", "en", 10.0),
                  Segment(41.0, 45.0, "", None, 1.0),  # a chunk the model found nothing in
                  Segment(46.0, 52.5, "Last words, said slowly.", "en", 1.0)],
        failures=[ChunkFailure(55.0, 60.0, "model output hit its length limit")], paragraph_pause_s=3.0)


def _silence(duration: float = 300.0) -> Transcript:
    return Transcript(source="/x/quiet.wav", duration_s=duration, language=None, model="m",
                      segments=[Segment(0.0, 2.0, "", None, 0.0)], failures=[])


def _clock(text: str) -> float:
    h, m, s = text.replace(",", ".").split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def _parse_cues(rendered: str) -> list[tuple[float, float, str]]:
    """(start, end, text) of every cue in an srt or vtt document."""
    cues = []
    for block in rendered.strip().split("\n\n"):
        lines = block.splitlines()
        for i, line in enumerate(lines):
            found = re.fullmatch(r"(\S+) --> (\S+)", line)
            if found:
                cues.append((_clock(found[1]), _clock(found[2]), "\n".join(lines[i + 1:])))
                break
    return cues


def test_txt_paragraphs_timestamps_and_failures() -> None:
    t = _transcript()
    assert render.render_txt(t) == ("Hello there. How are you? Fine.\n\n"
                                    "Next topic. Budget first! Then the plan? Done. Last words, said slowly.\n\n"
                                    "[scribed: 00:00:55–00:01:00 model output hit its length limit]\n")
    assert render.render_txt(t, timestamps=True).startswith("[00:00:01] Hello there.")
    assert "\n\n[00:00:30] Next topic." in render.render_txt(t, timestamps=True)


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_every_cue_stays_inside_its_segment(fmt: str) -> None:
    t = _transcript()
    cues = _parse_cues(render.render(t, fmt))
    spoken = [s for s in t.segments if s.text]
    assert len(cues) == 2 + 1 + 4 + 1  # one cue per sentence of each non-empty segment
    previous_end = 0.0
    for seg in spoken:
        mine = [c for c in cues if seg.start - 1e-3 <= c[0] and c[1] <= seg.end + 1e-3]
        assert mine, f"no cue inside {seg}"
        assert mine[0][0] == pytest.approx(seg.start, abs=1e-3) and mine[-1][1] == pytest.approx(seg.end, abs=1e-3)
        assert " ".join(c[2] for c in mine) == seg.text  # every word, in order, nothing from elsewhere
        for start, end, _ in mine:
            assert previous_end - 1e-3 <= start < end
            previous_end = end
    assert sum(len([c for c in cues if s.start - 1e-3 <= c[0] and c[1] <= s.end + 1e-3]) for s in spoken) == len(cues)


def test_srt_and_vtt_layout() -> None:
    srt = render.render_srt(_transcript())
    assert srt.startswith("1\n00:00:01,000 --> 00:00:05,")
    assert "3\n00:00:12,000 --> 00:00:20,000\nFine.\n" in srt
    vtt = render.render_vtt(_transcript())
    assert vtt.startswith("WEBVTT\n\n00:00:01.000 --> ")
    arrow = Transcript("a.wav", 5.0, "en", "m", [Segment(0.0, 5.0, "a --> b", "en")], [])
    assert "a -> b" in render.render_vtt(arrow)  # "-->" inside a cue would end its timing line


def test_json_interface() -> None:
    data = json.loads(render.render_json(_transcript()))
    assert set(data) == {"source", "duration_s", "language", "model", "segments", "text", "failures", "no_speech",
                         "speakers", "speaker_method", "words", "word_timing", "notes"}
    assert data["source"] == "meeting.m4a" and data["no_speech"] is False
    assert data["segments"][0] == {"start": 1.0, "end": 10.0, "text": "Hello there. How are you?", "language": "en",
                                   "speaker": None}
    assert (data["speakers"], data["speaker_method"], data["words"], data["word_timing"], data["notes"]) == (
        [], None, [], None, [])  # speaker turns and word timestamps off
    assert len(data["segments"]) == 4  # the empty chunk is not listed
    assert data["failures"] == [{"start": 55.0, "end": 60.0, "reason": "model output hit its length limit"}]


def test_silence_says_no_speech_in_every_format() -> None:
    t = _silence()
    assert t.no_speech
    assert render.render_txt(t) == render.NO_SPEECH + "\n"
    assert render.render_txt(t, timestamps=True) == render.NO_SPEECH + "\n"
    data = json.loads(render.render_json(t))
    assert data["segments"] == [] and data["no_speech"] is True and data["text"] == ""
    assert _parse_cues(render.render_srt(t)) == [(0.0, 300.0, render.NO_SPEECH)]
    vtt = render.render_vtt(t)
    assert vtt.startswith("WEBVTT\n\nNOTE ") and "no speech detected" in vtt and "-->" not in vtt


def test_speech_that_failed_is_not_called_silence() -> None:
    t = Transcript("/x/a.wav", 30.0, None, "m", [Segment(0.0, 30.0, "", None)],
                   [ChunkFailure(0.0, 30.0, "model output hit its length limit")])
    assert not t.no_speech
    assert "no speech" not in render.render_txt(t) and "length limit" in render.render_txt(t)


def test_write_transcript_writes_every_format_and_returns_identities(tmp_path: Path) -> None:
    source = tmp_path / "meeting.m4a"
    source.write_bytes(b"x")
    source.chmod(0o640)
    paths = {fmt: tmp_path / f"meeting.{fmt}" for fmt in ("json", "txt", "srt")}
    written = render.write_transcript(_transcript(), paths, source=source, timestamps=True)
    assert set(written) == set(paths)
    for fmt, path in paths.items():
        assert written[fmt].same_file(path.stat()) and path.read_text() == render.render(_transcript(), fmt, True)
        assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0  # never more readable than the recording


def test_write_transcript_replaces_only_what_it_may(tmp_path: Path) -> None:
    source = tmp_path / "meeting.m4a"
    source.write_bytes(b"x")
    paths = {"txt": tmp_path / "meeting.txt"}
    first: dict[str, FileIdentity] = render.write_transcript(_transcript(), paths, source=source)
    # Not replaceable: scribed did not say it wrote this file, and overwrite is off.
    with pytest.raises(OutputTaken):
        render.write_transcript(_silence(), paths, source=source)
    assert "Hello there" in paths["txt"].read_text()
    second = render.write_transcript(_silence(), paths, source=source, replaceable=first)
    assert paths["txt"].read_text() == render.NO_SPEECH + "\n" and second["txt"].same_file(paths["txt"].stat())
    paths["txt"].write_text("a colleague's notes\n")  # not scribed's file any more
    with pytest.raises(OutputTaken):
        render.write_transcript(_transcript(), paths, source=source, replaceable=second)
    render.write_transcript(_transcript(), paths, source=source, overwrite=True)
    assert "Hello there" in paths["txt"].read_text()


def test_no_speech_is_logged_once_at_info(tmp_path: Path) -> None:
    source = tmp_path / "quiet.wav"
    source.write_bytes(b"x")
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(m.record["level"].name + " " + m.record["message"]), level="DEBUG")
    try:
        render.write_transcript(_silence(), {f: tmp_path / f"quiet.{f}" for f in ("txt", "json", "srt", "vtt")},
                                source=source)
    finally:
        logger.remove(sink)
    said = [m for m in messages if "no speech" in m]
    assert len(said) == 1 and said[0].startswith("INFO ")


def _turns() -> Transcript:
    words = (Word(1.2, 1.5, "Hello"), Word(1.6, 2.0, "there."), Word(2.4, 2.6, "How"), Word(2.7, 2.9, "are"),
             Word(3.0, 3.4, "you?"))
    return Transcript(
        source="/x/call.wav", duration_s=20.0, language="en", model="m", speaker_method="channels",
        channel_of={0: "left", 1: "right"}, word_timing="aligned",
        segments=[Segment(1.0, 4.0, "Hello there. How are you?", "en", 1.0, speaker=0, words=words),
                  Segment(4.0, 6.0, "Fine.", "en", 0.0, speaker=1, words=(Word(4.5, 5.0, "Fine."),)),
                  Segment(6.0, 9.0, "Good to hear.", "en", 0.0, speaker=0)],
        failures=[])


def test_speaker_turns_in_every_format() -> None:
    t = _turns()
    assert render.render_txt(t) == ("Speaker 1: Hello there. How are you?\n\nSpeaker 2: Fine.\n\n"
                                    "Speaker 1: Good to hear.\n")
    assert render.render_txt(t, timestamps=True).startswith("[00:00:01] Speaker 1: Hello there.")
    srt = _parse_cues(render.render_srt(t))
    assert [text for _, _, text in srt] == ["Speaker 1: Hello there.", "Speaker 1: How are you?", "Speaker 2: Fine.",
                                           "Speaker 1: Good to hear."]
    assert srt[0][:2] == (1.2, 2.2) and srt[2][:2] == (4.5, 5.5)  # from the words (short cues held to 1 s)
    vtt = _parse_cues(render.render_vtt(t))
    assert [text for _, _, text in vtt] == ["<v Speaker 1>Hello there.", "<v Speaker 1>How are you?",
                                           "<v Speaker 2>Fine.", "<v Speaker 1>Good to hear."]
    data = json.loads(render.render_json(t))
    assert [s["speaker"] for s in data["segments"]] == ["Speaker 1", "Speaker 2", "Speaker 1"]
    assert data["speakers"] == [{"label": "Speaker 1", "speaking_s": 6.0, "channel": "left"},
                                {"label": "Speaker 2", "speaking_s": 2.0, "channel": "right"}]
    assert data["speaker_method"] == "channels" and data["word_timing"] == "aligned"
    assert data["words"][0] == {"start": 1.2, "end": 1.5, "text": "Hello", "speaker": "Speaker 1"}
    assert [w["speaker"] for w in data["words"]] == ["Speaker 1"] * 5 + ["Speaker 2"]


def test_vtt_escapes_markup_in_cue_text() -> None:
    t = Transcript("a.wav", 5.0, "en", "m", [Segment(0.0, 5.0, "R&D <3 tags", "en", speaker=0)], [])
    assert "<v Speaker 1>R&amp;D &lt;3 tags" in render.render_vtt(t)
