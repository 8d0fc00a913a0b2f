"""Config: the documented example, defaults, and one-pass error reporting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from scribed import logs, text
from scribed.cli import main
from scribed.config import (
    FOLDER_KEYS,
    SCHEMA,
    Config,
    FolderSettings,
    default_config_path,
    expand_path,
    load_config,
    overlay,
    parse_config,
    to_dict,
)
from scribed.errors import ConfigError
from scribed.system.retention import HARDLINKED, STRATEGIES

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "scribed.yaml"


def test_example_documents_every_key_with_its_default() -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    for section, (cls, checkers) in SCHEMA.items():
        assert set(data[section]) == set(checkers), f"config/scribed.yaml section {section!r} is incomplete"
        loaded = getattr(load_config(EXAMPLE), section)
        assert loaded == cls(), f"example value differs from the default in {section!r}"


def test_example_has_a_comment_on_every_key() -> None:
    for line in EXAMPLE.read_text().splitlines():
        if line.startswith("  ") and ":" in line and not line.strip().startswith("#"):
            assert "#" in line, f"undocumented key line: {line!r}"


def test_three_mistakes_reported_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("watch:\n  settle_s: five\n  folderz: [/x]\nmodel:\n  batch_size: 0\n")
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "At 'watch.settle_s': expected a number, got 'five'" in err
    assert "At 'watch.folderz': unknown key (did you mean 'folders'?)" in err
    assert "At 'model.batch_size': expected an integer >= 1, got 0" in err
    assert "3 configuration problem(s)" in err


def test_check_config_prints_effective_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    printed = yaml.safe_load(out)
    assert printed["model"]["id"] == "Qwen/Qwen3-ASR-0.6B-hf"
    assert printed["watch"]["folders"] == [str(Path("~/Meetings/inbox").expanduser())]


def test_unknown_section_and_wrong_types() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"outptu": {}, "policy": {"source_after": "shred", "secure_delete_passes": 1.5},
                      "output": {"formats": ["txt", "docx"]}, "transcription": {"glossary": ["a"]}})
    text = "\n".join(err.value.problems)
    assert "At 'outptu': unknown section (did you mean 'output'?)" in text
    assert f"At 'policy.source_after': expected one of {', '.join(STRATEGIES)}, got 'shred'" in text
    assert "At 'policy.secure_delete_passes': expected an integer" in text
    assert "At 'output.formats': item 1: expected one of txt, srt, vtt, json" in text
    assert "At 'transcription.glossary'" in text
    assert len(err.value.problems) == 5


def test_archive_needs_archive_dir_outside_watch(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"policy\.archive_dir"):
        parse_config({"policy": {"source_after": "archive"}})
    with pytest.raises(ConfigError, match="outside the watched folder"):
        parse_config({"watch": {"folders": [str(tmp_path)]},
                      "policy": {"source_after": "archive", "archive_dir": str(tmp_path / "done")}})


def test_paths_expand_and_config_is_frozen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEET", str(tmp_path))
    cfg = parse_config({"watch": {"folders": ["$MEET/inbox", "~/x"]}, "service": {"log_level": "debug"}})
    assert cfg.watch.folders == (tmp_path / "inbox", Path.home() / "x")
    assert cfg.service.log_level == "DEBUG"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.watch.settle_s = 1  # type: ignore[misc]


def test_default_path_honours_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_config_path() == tmp_path / "scribed" / "config.yaml"
    assert load_config() == Config()  # missing default file: all defaults
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("watch:\n  folders: [a\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)


def _example_comment(key: str) -> str:
    (line,) = [ln for ln in EXAMPLE.read_text().splitlines() if ln.strip().startswith(f"{key}:")]
    return line.split("#", 1)[1]


def test_example_comments_list_every_choice() -> None:
    # The choices come from one definition each; the documented file must not fall behind them.
    assert all(level in _example_comment("log_level") for level in logs.LEVELS)
    assert all(strategy in _example_comment("source_after") for strategy in STRATEGIES)
    assert all(choice in _example_comment("hardlinked") for choice in HARDLINKED)


def test_language_is_checked_against_the_model() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"transcription": {"language": "klingon"}})
    (problem,) = err.value.problems
    assert problem.startswith("At 'transcription.language': expected a language the model knows")
    assert problem.endswith("got 'klingon'")
    assert all(code in problem for code in text.LANGUAGES) and "Cantonese" in problem  # the accepted values
    with pytest.raises(ConfigError, match="did you mean 'english'"):
        parse_config({"transcription": {"language": "Englsh"}})
    for ok in ("auto", "yue", "Cantonese", "zh-TW", " en "):
        assert parse_config({"transcription": {"language": ok}}).transcription.language == ok.strip()


@pytest.mark.parametrize("level", logs.LEVELS)
def test_every_log_level_is_kept(level: str) -> None:
    assert parse_config({"service": {"log_level": level.lower()}}).service.log_level == level


def test_log_level_choices_are_the_logging_levels() -> None:
    with pytest.raises(ConfigError, match="expected one of " + ", ".join(logs.LEVELS)):
        parse_config({"service": {"log_level": "LOUD"}})


def test_source_after_choices_come_from_retention() -> None:
    for strategy in STRATEGIES:
        data: dict = {"policy": {"source_after": strategy, "archive_dir": "/nonexistent/archive"}}
        assert parse_config(data).policy.source_after == strategy


def test_hardlinked_policy() -> None:
    assert Config().policy.hardlinked == "unlink"
    assert parse_config({"policy": {"hardlinked": "Refuse"}}).policy.hardlinked == "refuse"
    with pytest.raises(ConfigError, match=r"At .policy.hardlinked.: expected one of unlink, refuse, got .copy."):
        parse_config({"policy": {"hardlinked": "copy"}})


def test_max_depth() -> None:
    assert Config().watch.max_depth == 32
    assert parse_config({"watch": {"max_depth": 3}}).watch.max_depth == 3
    with pytest.raises(ConfigError, match=r"At .watch.max_depth.: expected an integer >= 1, got 0"):
        parse_config({"watch": {"max_depth": 0}})


def test_batch_size_is_auto_unless_a_number_caps_it() -> None:
    assert parse_config({}).model.batch_size == "auto"
    assert parse_config({"model": {"batch_size": " AUTO "}}).model.batch_size == "auto"
    assert parse_config({"model": {"batch_size": 64}}).model.batch_size == 64
    with pytest.raises(ConfigError) as err:
        parse_config({"model": {"batch_size": "big"}})
    assert err.value.problems == ["At 'model.batch_size': expected auto or an integer from 1 to 1024, got 'big'"]


def test_overlay_uses_the_same_rules() -> None:
    base = parse_config({"model": {"batch_size": 4}}, "file.yaml")
    with pytest.raises(ConfigError) as err:
        overlay(base, {"model": {"batch_size": 0, "device": "gpu"}, "transcription": {"language": "klingon"}})
    assert err.value.source == "command-line options"
    problems = "\n".join(err.value.problems)
    assert "At 'model.batch_size': expected an integer >= 1, got 0" in problems
    assert "At 'model.device': expected auto, cpu, cuda or cuda:N, got 'gpu'" in problems
    assert "At 'transcription.language'" in problems and len(err.value.problems) == 3
    with pytest.raises(ConfigError, match="unknown key \\(did you mean 'batch_size'\\?\\)"):
        overlay(base, {"model": {"batchsize": 2}})


def test_overlay_skips_missing_flags_and_converts_values(tmp_path: Path) -> None:
    base = parse_config({"model": {"batch_size": 4, "device": "cpu"}}, "file.yaml")
    cfg = overlay(base, {"model": {"batch_size": None, "device": "CUDA:1"},
                         "output": {"formats": "srt,txt,srt", "dir": str(tmp_path / "out")}})
    assert (cfg.model.batch_size, cfg.model.device) == (4, "cuda:1")
    assert cfg.output.formats == ("srt", "txt") and cfg.output.dir == tmp_path / "out"
    assert cfg.source == "file.yaml" and base.model.device == "cpu"
    assert overlay(base, {}) == base


def test_overlay_rechecks_rules_between_keys(tmp_path: Path) -> None:
    base = parse_config({"watch": {"folders": [str(tmp_path)]}})
    with pytest.raises(ConfigError, match="outside the watched folder"):
        overlay(base, {"policy": {"source_after": "archive", "archive_dir": str(tmp_path / "done")}})


def test_expand_path_is_the_one_expansion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SCRIBED_T", str(tmp_path))
    assert expand_path("$SCRIBED_T/a") == tmp_path / "a"
    assert expand_path(Path("~/b")) == Path.home() / "b"
    assert expand_path("rel/c") == Path("rel/c")  # not made absolute


# -- per-folder settings ----------------------------------------------------------------------------
def test_every_folder_key_is_a_key_of_its_section_and_a_setting() -> None:
    for key, section in FOLDER_KEYS.items():
        assert key in SCHEMA[section][1], f"{section}.{key}"
    assert [f.name for f in dataclasses.fields(FolderSettings)] == ["folder", *FOLDER_KEYS]
    assert _example_comment("folders").count("see below") == 1
    documented = "\n".join(ln for ln in EXAMPLE.read_text().splitlines() if ln.lstrip().startswith("#"))
    assert all(key in documented for key in FOLDER_KEYS)


def test_the_documented_folder_example_is_valid() -> None:
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("  # folders:")
    block = []
    for line in lines[start:]:
        if not line.startswith("  #"):
            break
        block.append(line[:2] + line[4:])  # "  #   - path: x" -> "    - path: x"
    cfg = parse_config({"watch": yaml.safe_load("\n".join(block))})
    assert len(cfg.watch.folders) == 3 and len(cfg.watch.overrides) == 2
    board = cfg.settings_for(Path("/srv/share/board/2024/q1.m4a"))
    assert (board.language, board.source_after, board.dir) == ("en", "archive", Path("/srv/transcripts/board"))
    assert cfg.settings_for(Path("/srv/share/china-team/a.wav")).formats == ("txt", "srt")


def _nested(tmp_path: Path) -> Config:
    return parse_config({
        "watch": {"folders": [
            {"path": str(tmp_path / "share"), "language": "zh", "glossary": {"ali": "Alibaba"}, "formats": ["srt"],
             "context": "Team China", "speakers": 2, "timestamps": True},
            str(tmp_path / "share" / "english"),
            {"path": str(tmp_path / "share" / "board"), "language": "en", "dir": str(tmp_path / "out"),
             "source_after": "delete"},
        ]},
        "transcription": {"glossary": {"open ai": "OpenAI", "ali": "ALI"}},
        "output": {"dir": str(tmp_path / "all")},
    })


def test_the_innermost_listed_folder_wins(tmp_path: Path) -> None:
    cfg = _nested(tmp_path)
    share = cfg.settings_for(tmp_path / "share" / "2024" / "deep" / "a.wav")
    assert share == FolderSettings(tmp_path / "share", "zh", "Team China", {"open ai": "OpenAI", "ali": "Alibaba"}, 2,
                                   True, ("srt",), tmp_path / "all", "keep", None)
    # A plain nested entry sets nothing: the sections' values, not the enclosing folder's.
    english = cfg.settings_for(tmp_path / "share" / "english" / "b.wav")
    assert english == FolderSettings(tmp_path / "share" / "english", "auto", "", {"open ai": "OpenAI", "ali": "ALI"},
                                     "off", False, ("txt",), tmp_path / "all", "keep", None)
    board = cfg.settings_for(tmp_path / "share" / "board" / "c.wav")
    assert (board.folder, board.language, board.dir, board.source_after, board.formats) == (
        tmp_path / "share" / "board", "en", tmp_path / "out", "delete", ("txt",))
    outside = cfg.settings_for(tmp_path / "elsewhere" / "d.wav")
    assert outside.folder is None and outside == dataclasses.replace(english, folder=None)
    assert cfg.settings_for(tmp_path / "share-2" / "e.wav").folder is None  # a prefix is not a folder


def test_a_recording_below_a_linked_folder_gets_its_settings(tmp_path: Path) -> None:
    real = tmp_path / "mnt" / "share"
    real.mkdir(parents=True)
    (tmp_path / "share").symlink_to(real)
    cfg = parse_config({"watch": {"folders": [{"path": str(tmp_path / "share"), "language": "yue"}]}})
    # The watcher reports recordings below the resolved folder.
    assert cfg.settings_for(real / "a.wav").language == "yue"
    assert cfg.settings_for(tmp_path / "share" / "a.wav").language == "yue"


def test_check_config_shows_each_folders_effective_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _nested(tmp_path)
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump(to_dict(cfg), allow_unicode=True))
    assert main(["check-config", str(file)]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    share, english, board = printed["watch"]["folders"]
    assert share == {"path": str(tmp_path / "share"), "language": "zh", "context": "Team China",
                     "glossary": {"open ai": "OpenAI", "ali": "Alibaba"}, "speakers": 2, "timestamps": True,
                     "formats": ["srt"], "dir": str(tmp_path / "all"), "source_after": "keep", "archive_dir": None}
    assert english == str(tmp_path / "share" / "english")
    assert board["language"] == "en" and board["source_after"] == "delete" and board["glossary"] == {
        "open ai": "OpenAI", "ali": "ALI"}
    assert "overrides" not in printed["watch"]
    # What it prints loads back into the same settings for every recording.
    again = load_config(file)
    for rec in ("share/x/a.wav", "share/english/b.wav", "share/board/c.wav", "d.wav"):
        assert again.settings_for(tmp_path / rec) == cfg.settings_for(tmp_path / rec), rec


def test_overlay_keeps_the_folders_settings(tmp_path: Path) -> None:
    cfg = overlay(_nested(tmp_path), {"transcription": {"language": "en", "timestamps": None}})
    assert cfg.settings_for(tmp_path / "share" / "a.wav").language == "zh"  # the folder's own
    assert cfg.settings_for(tmp_path / "share" / "english" / "a.wav").language == "en"  # the section's, overlaid
