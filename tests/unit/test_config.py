"""Config: the documented example, defaults, and one-pass error reporting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from scribed.cli import main
from scribed.config import SCHEMA, Config, default_config_path, load_config, parse_config
from scribed.errors import ConfigError

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
    assert "At 'policy.source_after': expected one of keep, archive, delete" in text
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
