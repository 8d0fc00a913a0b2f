"""The config's rules: the watch.folders entries (every problem at once, at its own key path) and
the checks between keys, folder by folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from scribed import checks
from scribed.config import FOLDER_CHECKERS, parse_config
from scribed.errors import ConfigError


def _problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    return err.value.problems


def test_every_bad_folder_entry_is_reported_at_its_own_key_path(tmp_path: Path) -> None:
    problems = _problems({"watch": {"folders": [
        str(tmp_path / "a"),
        {"path": str(tmp_path / "b"), "language": "klingon", "formats": ["txt", "docx"], "langauge": "en"},
        3,
        {"language": "en"},
        {"path": str(tmp_path / "c"), "speakers": 0, "source_after": "shred", "max_chunk_s": 10},
        str(tmp_path / "a"),
        {"path": "  "},
    ]}, "model": {"batch_size": 0}})
    assert problems[0].startswith("At 'watch.folders[1].language': expected a language the model knows")
    assert problems[0].endswith("got 'klingon'")
    assert problems[1:] == [
        "At 'watch.folders[1].formats': item 1: expected one of txt, srt, vtt, json, got ['txt', 'docx']",
        "At 'watch.folders[1].langauge': unknown key (did you mean 'language'?)",
        "At 'watch.folders[2]': expected a path or a mapping with 'path', got 3",
        "At 'watch.folders[3]': expected a mapping with a 'path' key, got {'language': 'en'}",
        "At 'watch.folders[4].speakers': expected off, auto or a number of speakers from 1 to 32, got 0",
        "At 'watch.folders[4].source_after': expected one of keep, archive, delete, got 'shred'",
        "At 'watch.folders[4].max_chunk_s': unknown key (known keys: path, language, context, glossary, speakers,"
        " timestamps, formats, dir, source_after, archive_dir)",
        f"At 'watch.folders[5]': expected each folder once, got {str(tmp_path / 'a')!r} again (also entry [0])",
        "At 'watch.folders[6].path': expected a path, got '  '",
        "At 'model.batch_size': expected an integer >= 1, got 0",
    ]


def test_a_folder_key_takes_its_sections_checker() -> None:
    # One rule per key: the per-folder checker is the section's, not a copy of it.
    assert FOLDER_CHECKERS["language"] is checks.language
    assert FOLDER_CHECKERS["formats"] is checks.formats
    assert FOLDER_CHECKERS["glossary"] is checks.glossary


def test_folders_checker_fills_paths_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEAM", str(tmp_path))
    zh = {"path": "$TEAM/zh", "language": "zh", "formats": "srt,txt", "dir": None, "speakers": False}
    cfg = parse_config({"watch": {"folders": ["$TEAM/plain", zh]}})
    assert cfg.watch.folders == (tmp_path / "plain", tmp_path / "zh")
    assert cfg.watch.overrides == {tmp_path / "zh": {"language": "zh", "formats": ("srt", "txt"), "dir": None,
                                                     "speakers": "off"}}
    assert parse_config({"watch": {"folders": str(tmp_path)}}).watch.folders == (tmp_path,)  # one path
    assert _problems({"watch": {"folders": []}}) == ["At 'watch.folders': expected a non-empty list, got []"]
    assert _problems({"watch": {"folders": {"path": "/x"}}}) == [
        "At 'watch.folders': expected a list of folders, got {'path': '/x'}"]


def test_archive_needs_a_folder_for_every_folder_that_archives(tmp_path: Path) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    # The sections archive without a folder, but every watched folder has its own: nothing is missing.
    cfg = parse_config({"watch": {"folders": [{"path": a, "archive_dir": str(tmp_path / "arch-a")},
                                              {"path": b, "source_after": "keep"}]},
                        "policy": {"source_after": "archive"}})
    assert cfg.settings_for(tmp_path / "a" / "x.wav").archive_dir == tmp_path / "arch-a"
    # A plain folder uses the sections' settings: the sections' key is what is missing.
    assert _problems({"watch": {"folders": [a, {"path": b, "source_after": "keep"}]},
                      "policy": {"source_after": "archive"}}) == [
        "At 'policy.archive_dir': expected a path when policy.source_after is 'archive'"]
    # A folder that archives without an archive folder anywhere: reported at the folder.
    assert _problems({"watch": {"folders": [a, {"path": b, "source_after": "archive"}]}}) == [
        "At 'watch.folders[1].archive_dir': expected a path when source_after is 'archive' (here or in "
        "policy.archive_dir)"]
    assert _problems({"watch": {"folders": [{"path": a, "archive_dir": None}]},
                      "policy": {"source_after": "archive", "archive_dir": str(tmp_path / "arch")}}) == [
        "At 'watch.folders[0].archive_dir': expected a path when source_after is 'archive' (here or in "
        "policy.archive_dir)"]


def test_an_archive_inside_any_watched_folder_is_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    problems = _problems({"watch": {"folders": [str(a), {"path": str(b), "source_after": "archive",
                                                         "archive_dir": str(a / "done")}]}})
    assert problems == [f"At 'watch.folders[1].archive_dir': expected a folder outside the watched folder {str(a)!r}"
                        " (archived recordings would be picked up again)"]
    # Its own folder too, and the sections' archive folder for every watched folder.
    problems = _problems({"watch": {"folders": [{"path": str(a), "archive_dir": str(a)}]},
                          "policy": {"archive_dir": str(b / "x")}, "output": {}})
    assert problems == [f"At 'watch.folders[0].archive_dir': expected a folder outside the watched folder {str(a)!r}"
                        " (archived recordings would be picked up again)"]
    problems = _problems({"watch": {"folders": [str(a), str(b)]}, "policy": {"archive_dir": str(b / "x")}})
    assert problems == [f"At 'policy.archive_dir': expected a folder outside the watched folder {str(b)!r}"
                        " (archived recordings would be picked up again)"]


def test_without_recursion_only_the_folder_itself_is_watched(tmp_path: Path) -> None:
    a = tmp_path / "a"
    below = {"watch": {"recursive": False, "folders": [{"path": str(a), "archive_dir": str(a / "done")}]}}
    assert parse_config(below).settings_for(a / "x.wav").archive_dir == a / "done"
    same = {"watch": {"recursive": False, "folders": [{"path": str(a), "archive_dir": str(a)}]}}
    assert "outside the watched folder" in _problems(same)[0]


def test_the_same_folder_under_two_names_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    problems = _problems({"watch": {"folders": [str(real), {"path": str(tmp_path / "alias"), "language": "zh"}]}})
    assert problems == [f"At 'watch.folders[1]': expected each folder once, got {str(tmp_path / 'alias')!r}, the "
                        f"same folder as watch.folders[0] ({str(real)!r})"]
