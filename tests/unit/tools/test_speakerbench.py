"""Tests for scribed.tools.speakerbench: the report's shape on a small run (numbers are not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scribed.tools import speakerbench

SPEECH = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "speech"


def test_a_missing_speech_folder_is_a_clear_exit(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="shared speech clips are not in"):
        speakerbench.speech_dir(str(tmp_path))


def test_the_report_covers_known_and_auto_counts_and_cost(capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    if not SPEECH.is_dir():
        pytest.skip("shared speech clips not present")
    monkeypatch.setattr(speakerbench, "VOICES", {k: speakerbench.VOICES[k] for k in ("jfk", "kimi-zh", "meeting-zh",
                                                                                    "libri-1995")})
    assert speakerbench.main(["--speech", str(SPEECH), "--meetings", "1", "--long-minutes", "0.5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    meetings = report["meetings"]
    assert meetings["meetings"] == 3 and meetings["single_voice"] == 4
    assert {"der_known_mean", "der_auto_mean", "count_auto_right", "single_voice_one_speaker",
            "cpu_s_per_audio_minute"} <= set(meetings)
    assert [r["speakers"] for r in meetings["rows"]] == [2, 3, 4, 1, 1, 1, 1]
    assert report["long"]["minutes"] == 0.5 and report["long"]["windows"] > 0
