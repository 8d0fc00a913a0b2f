"""Logging setup: the one list of levels, -v/-q steps, journald priorities."""

from __future__ import annotations

import pytest
from loguru import logger

from scribed import logs


@pytest.fixture(autouse=True)
def _restore_logging():
    yield
    logs.setup("INFO")


def test_levels_are_loguru_levels_in_severity_order() -> None:
    numbers = [logger.level(name).no for name in logs.LEVELS]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)


@pytest.mark.parametrize(("level", "steps", "expected"), [
    ("INFO", 0, "INFO"), ("INFO", -1, "DEBUG"), ("INFO", -2, "TRACE"), ("INFO", -9, "TRACE"),
    ("INFO", 2, "WARNING"), ("CRITICAL", 0, "CRITICAL"), ("CRITICAL", 3, "CRITICAL"), ("critical", -1, "ERROR"),
])  # fmt: skip
def test_shifted(level: str, steps: int, expected: str) -> None:
    assert logs.shifted(level, steps) == expected


def test_shifted_refuses_unknown_levels() -> None:
    with pytest.raises(ValueError):
        logs.shifted("LOUD", 0)


def test_setup_filters_by_level(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    logs.setup("ERROR", process="scribed-test")
    logger.warning("quiet please")
    logger.error("loud enough")
    err = capsys.readouterr().err
    assert "quiet please" not in err
    (line,) = err.splitlines()
    assert "ERROR" in line and "scribed-test[" in line and line.endswith("loud enough")


def test_journald_lines_carry_syslog_priorities(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    logs.setup("DEBUG")
    logger.debug("d")
    logger.warning("w")
    logger.critical("c")
    lines = capsys.readouterr().err.splitlines()
    assert [line[:3] for line in lines] == ["<7>", "<4>", "<2>"]
    assert all(":" in line and not line[3].isdigit() for line in lines)  # no timestamp: journald adds one


def test_setup_again_replaces_the_sink(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    logs.setup("INFO")
    logs.setup("INFO")  # SIGHUP: one sink, not two
    logger.info("once")
    assert capsys.readouterr().err.count("once") == 1
