"""Honest progress for ``scribed transcribe``: audio time done of the total, and an ETA from the
throughput measured so far.

Contract:
- A :class:`TranscribeProgress` is the runner's ``on_event`` (kinds "decoded" with
  ``duration_s``, "chunk" with ``done``/``total``, "written"; others are ignored). A file's audio
  done is its duration times chunks done / chunks planned, so the numbers move at every finished
  chunk. The rate (and so the ETA) is audio done / time since transcription began, shown only once
  a chunk has finished: never a rate measured over nothing.
- On a terminal (``stream.isatty()``): one bar, redrawn at every event, and while it is shown
  everything written to ``sys.stderr`` — loguru included — is printed above it, whole lines only.
- Anywhere else: plain ``progress:`` lines: at the first finished chunk, then one per 10 % step
  or per ``every_s`` (checked at events: no thread, no timer), and one per file written.
- Used as a context manager; :meth:`close` leaves the final bar state on screen.
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from scribed import logs
from scribed.text import format_clock

PLAIN_EVERY_S = 30.0
PLAIN_STEP = 10  # percent


class _AboveBar(io.TextIOBase):
    """What ``sys.stderr`` is while a bar is shown: each complete line goes out through
    ``tqdm.write`` (bar cleared, line written, bar redrawn), so no line lands on the bar."""

    def __init__(self, real: TextIO, write_line: Callable[[str], None]) -> None:
        self._real, self._write_line, self._partial = real, write_line, ""

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._write_line(line)
        return len(text)

    def flush(self) -> None:
        self._real.flush()

    def isatty(self) -> bool:  # loguru colours only a terminal
        return self._real.isatty()

    def fileno(self) -> int:
        return self._real.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._real, "encoding", "utf-8")

    def finish(self) -> None:
        if self._partial:
            self._write_line(self._partial)
            self._partial = ""


class TranscribeProgress:
    """The runner's ``on_event`` for the CLI; see the module contract."""

    def __init__(self, stream: TextIO | None = None, *, level: str = "INFO", tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, every_s: float = PLAIN_EVERY_S) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(self.stream.isatty()) if tty is None else tty
        self.level, self.clock, self.every_s = level, clock, every_s
        self.durations: dict[Path, float] = {}
        self.fractions: dict[Path, float] = {}
        self.written: set[Path] = set()
        self.began: float | None = None  # when transcription (not decoding) began
        self.chunked = False  # a chunk has finished: a measured rate exists
        self._bar: Any = None
        self._redirect: contextlib.ExitStack | None = None
        self._plain_step, self._plain_at = 0, -math.inf

    # -- numbers -------------------------------------------------------------------------------
    @property
    def total_s(self) -> float:
        return sum(self.durations.values())

    @property
    def done_s(self) -> float:
        return sum(d * self.fractions.get(p, 0.0) for p, d in self.durations.items())

    def rate(self) -> float | None:
        """Seconds of audio per second of work so far, or None before any chunk finished."""
        if not self.chunked or self.began is None:
            return None
        elapsed = self.clock() - self.began
        return self.done_s / elapsed if elapsed > 0 and self.done_s > 0 else None

    def summary(self) -> str:
        """``00:01:10 / 00:03:20 audio, 2.0x realtime, about 00:01:05 left``."""
        line = f"{format_clock(self.done_s)} / {format_clock(self.total_s)} audio"
        rate = self.rate()
        if rate is None:
            return line + ", estimating time left"
        return line + f", {rate:.1f}x realtime, about {format_clock((self.total_s - self.done_s) / rate)} left"

    def percent(self) -> float:
        return 100.0 * self.done_s / self.total_s if self.total_s > 0 else 0.0

    # -- events --------------------------------------------------------------------------------
    def __call__(self, kind: str, path: Path, info: dict[str, object]) -> None:
        if kind == "decoded":
            self.durations[path] = float(info["duration_s"])  # type: ignore[arg-type]
            self.fractions.setdefault(path, 0.0)
            if not self.chunked:
                self.began = self.clock()  # transcription starts after the last decode
        elif kind == "chunk":
            total = int(info["total"])  # type: ignore[call-overload]
            self.fractions[path] = min(1.0, int(info["done"]) / total) if total else 0.0  # type: ignore[call-overload]
            self.chunked = True
        elif kind == "written":
            self.fractions[path] = 1.0
            self.written.add(path)
        else:
            return
        if self.tty:
            self._draw()
        else:
            self._plain(kind, path)

    def _files(self) -> str:
        return f"{len(self.written)}/{len(self.durations)} files "

    def _draw(self) -> None:
        if self._bar is None:
            self._open_bar()
        bar = self._bar
        bar.total = max(self.total_s, 1e-9)
        bar.n = min(self.done_s, bar.total)
        bar.bar_format = self._format()
        bar.refresh()

    def _format(self) -> str:
        """The bar's format with our numbers in it (tqdm's own postfix would add a ", "); they
        hold digits, letters and ``/:.,`` only, never a format brace."""
        return f"{self._files()}{{percentage:3.0f}}%|{{bar}}| {self.summary()}"

    def _open_bar(self) -> None:
        from tqdm import tqdm

        tqdm.monitor_interval = 0  # no monitor thread
        self._bar = tqdm(total=max(self.total_s, 1e-9), file=self.stream, bar_format=self._format(),
                         dynamic_ncols=True, leave=True)
        above = _AboveBar(self.stream, lambda line: tqdm.write(line, file=self.stream))
        stack = contextlib.ExitStack()
        stack.callback(above.finish)
        stack.enter_context(contextlib.redirect_stderr(above))
        self._redirect = stack
        logs.setup(self.level)  # loguru's sink is now the bar-aware stream

    def _plain(self, kind: str, path: Path) -> None:
        percent = self.percent()
        step = int(percent // PLAIN_STEP)
        now = self.clock()
        if kind == "written":
            self._print(f"progress: written {path.name} ({len(self.written)} of {len(self.durations)} files)")
        elif kind == "chunk" and (step > self._plain_step or now - self._plain_at >= self.every_s):
            self._print(f"progress: {percent:.0f}%, {self.summary()}")
        else:
            return
        self._plain_step, self._plain_at = max(self._plain_step, step), now

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    # -- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        if self._bar is None:
            return
        bar, self._bar = self._bar, None
        bar.close()
        if self._redirect is not None:
            self._redirect.close()
            self._redirect = None
            logs.setup(self.level)  # back to the real stderr

    def __enter__(self) -> TranscribeProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
