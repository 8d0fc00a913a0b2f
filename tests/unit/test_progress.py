"""scribed.progress: audio time done / total, a measured rate, plain lines off a terminal, and
log lines above the bar on one. The clock is a counter the test moves (no timing)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from loguru import logger

from scribed import logs
from scribed.progress import TranscribeProgress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging():
    yield
    logs.setup("INFO")


A, B = Path("/in/a.wav"), Path("/in/b.wav")


def test_audio_done_follows_finished_chunks_and_the_rate_is_measured() -> None:
    clock = Clock()
    p = TranscribeProgress(io.StringIO(), tty=False, clock=clock)
    p("decoded", A, {"duration_s": 60.0})
    p("decoded", B, {"duration_s": 30.0})
    assert (p.total_s, p.done_s, p.rate()) == (90.0, 0.0, None)
    assert p.summary() == "00:00:00 / 00:01:30 audio, estimating time left"  # no rate measured over nothing
    clock.now += 10
    p("chunk", A, {"done": 1, "total": 4})
    assert p.done_s == 15.0 and p.rate() == 1.5
    assert p.summary() == "00:00:15 / 00:01:30 audio, 1.5x realtime, about 00:00:50 left"
    clock.now += 10
    p("chunk", B, {"done": 1, "total": 1})
    p("chunk", A, {"done": 2, "total": 5})  # a split chunk grew the plan: the fraction follows it
    assert p.done_s == 60 * 2 / 5 + 30.0
    p("written", B, {})
    p("unknown", A, {})  # other kinds are ignored
    assert p.percent() == pytest.approx(100 * 54 / 90)


def test_plain_lines_per_ten_percent_and_per_file() -> None:
    out = io.StringIO()
    clock = Clock()
    p = TranscribeProgress(out, tty=False, clock=clock, every_s=1e9)
    p("decoded", A, {"duration_s": 100.0})
    for done in range(1, 21):  # 20 chunks: 5 % each
        clock.now += 1
        p("chunk", A, {"done": done, "total": 20})
    p("written", A, {})
    lines = out.getvalue().splitlines()
    percents = [line.split()[1] for line in lines if line.startswith("progress: ") and "%" in line]
    # The first finished chunk, then one line per 10 % step: none for the 5 % ones in between.
    assert percents == ["5%,", *(f"{n}%," for n in range(10, 101, 10))]
    assert lines[-1] == "progress: written a.wav (1 of 1 files)"
    assert "\r" not in out.getvalue()


def test_plain_lines_also_come_after_every_s_without_a_new_step() -> None:
    out = io.StringIO()
    clock = Clock()
    p = TranscribeProgress(out, tty=False, clock=clock, every_s=30)
    p("decoded", A, {"duration_s": 1000.0})
    for done in (1, 2, 3):  # 0.1 % each: no 10 % step is crossed
        clock.now += 31
        p("chunk", A, {"done": done, "total": 1000})
    assert len(out.getvalue().splitlines()) == 3


def test_on_a_terminal_log_lines_go_above_the_bar_and_logging_is_restored() -> None:
    term = Tty()
    real_stderr = sys.stderr
    with TranscribeProgress(term, level="INFO", clock=Clock()) as p:
        p("decoded", A, {"duration_s": 60.0})
        assert sys.stderr is not real_stderr  # the bar-aware stream while the bar is shown
        logger.info("a log line")
        print("a partial", end="", file=sys.stderr)
        print(" line", file=sys.stderr)
        p("chunk", A, {"done": 1, "total": 2})
    assert sys.stderr is real_stderr
    text = term.getvalue()
    assert "50%" in text and "00:00:30 / 00:01:00 audio" in text
    segments = [seg.rsplit("\r", 1)[-1] for seg in text.split("\n")]  # what each line shows at its end
    logged = [seg for seg in segments if "a log line" in seg]
    assert len(logged) == 1 and "INFO" in logged[0] and "%|" not in logged[0]  # not printed onto the bar
    assert "a partial line" in segments  # written as one whole line
    captured = io.StringIO()
    handler = logger.add(captured, format="{message}")
    logger.info("after the bar")
    logger.remove(handler)
    assert "after the bar" in captured.getvalue() and "after the bar" not in term.getvalue()


def test_no_events_no_bar() -> None:
    term = Tty()
    with TranscribeProgress(term, clock=Clock()):
        pass
    assert term.getvalue() == ""
