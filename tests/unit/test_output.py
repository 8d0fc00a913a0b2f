"""Outputs: renderers and atomic writes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from scribed import output
from scribed.engine import render
from scribed.engine.types import ChunkFailure, Segment, Transcript


def _transcript() -> Transcript:
    return Transcript(
        source="/x/meeting.m4a", duration_s=70.0, language="en", model="m",
        segments=[Segment(1.0, 10.0, "Hello there. How are you?", "en", 1.0),
                  Segment(12.0, 20.0, "Fine.", "en", 2.0),
                  Segment(30.0, 40.0, "Next topic.", "en", 10.0)],
        failures=[ChunkFailure(50.0, 60.0, "model output hit its length limit")], paragraph_pause_s=3.0)


def test_txt_paragraphs_timestamps_and_failures() -> None:
    t = _transcript()
    assert render.render_txt(t) == ("Hello there. How are you? Fine.\n\nNext topic.\n\n"
                                    "[scribed: 00:00:50–00:01:00 model output hit its length limit]\n")
    assert render.render_txt(t, timestamps=True).startswith("[00:00:01] Hello there.")


def test_srt_vtt_cues_stay_inside_segments() -> None:
    srt = render.render_srt(_transcript())
    assert srt.startswith("1\n00:00:01,000 --> 00:00:05,")
    assert "3\n00:00:12,000 --> 00:00:20,000\nFine.\n" in srt
    vtt = render.render_vtt(_transcript())
    assert vtt.startswith("WEBVTT\n\n00:00:01.000 --> ")


def test_json_interface() -> None:
    data = json.loads(render.render_json(_transcript()))
    assert set(data) >= {"source", "duration_s", "language", "model", "segments", "text"}
    assert data["source"] == "meeting.m4a"
    assert data["segments"][0] == {"start": 1.0, "end": 10.0, "text": "Hello there. How are you?", "language": "en"}


def test_atomic_write_copies_mode_and_leaves_no_temp(tmp_path: Path) -> None:
    src = tmp_path / "a.wav"
    src.write_bytes(b"x")
    os.chmod(src, 0o640)
    target = tmp_path / "a.txt"
    output.atomic_write(target, "héllo\n", mode_from=src)
    assert target.read_text() == "héllo\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "a.wav"]


def test_output_paths_and_temp_names(tmp_path: Path) -> None:
    src = tmp_path / "inbox" / "proj" / "m.m4a"
    assert output.output_paths(src, ["txt", "json"]) == {"txt": src.with_suffix(".txt"),
                                                         "json": src.with_suffix(".json")}
    out = output.output_paths(src, ["txt"], tmp_path / "out", tmp_path / "inbox")
    assert out["txt"] == tmp_path / "out" / "proj" / "m.txt"
    assert output.failure_path(src) == src.with_name("m.failed.txt")
    assert output.is_scribed_temp(".m.txt.scribed-1a2b3c4d.tmp")
    assert not output.is_scribed_temp("m.txt")
