"""``scribed transcribe``'s progress as a person sees it: through a real pseudo-terminal, and as
plain lines when stderr is a pipe. The real CLI process with the trained tiny model (never mocked).

Each recording is five real speech clips separated by pauses long enough to always end a chunk,
so it has five chunks; with ``batch_size: 1`` each chunk is its own batch and so its own event.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from conftest import SHARED, speech_manifest

ROOT = Path(__file__).resolve().parents[2]
SR = 16000
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (INFO|DEBUG|WARNING|ERROR)\s+scribed\[\d+\] ")


@pytest.fixture
def setup(tiny_model: Path, speech_dir: Path, tmp_path: Path) -> tuple[Path, list[Path]]:
    from scribed.media.audio import decode_audio

    clips = [decode_audio(SHARED / e["file"]).samples for e in speech_manifest() if e["duration_s"] < 12][:5]
    assert len(clips) >= 3, "the shared speech set has too few short clips"
    pause = np.zeros(int(2.5 * SR), dtype=np.float32)
    recordings = []
    for name in ("first.wav", "second.wav"):
        path = tmp_path / name
        sf.write(path, np.concatenate([part for clip in clips for part in (clip, pause)]), SR)
        recordings.append(path)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model": {"id": str(tiny_model), "device": "cpu", "batch_size": 1},
                                      "service": {"state_dir": str(tmp_path / "state")}}))
    return config, recordings


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT / "daemon"), HF_HUB_OFFLINE="1", COLUMNS="120")


def _cmd(config: Path, recordings: list[Path]) -> list[str]:
    return [sys.executable, "-m", "scribed.cli", "transcribe", "-c", str(config), *map(str, recordings)]


def _read_all(fd: int, proc: subprocess.Popen, timeout: float = 300) -> bytes:
    """Everything the child writes to the terminal, until it exits and the terminal is drained."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: every slave end is closed
                break
            if not chunk:
                break
            data += chunk
        elif proc.poll() is not None:
            break
    return data


def test_the_bar_moves_per_chunk_and_log_lines_stay_whole_on_a_terminal(setup) -> None:
    config, recordings = setup
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(_cmd(config, recordings), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=slave, env=_env())
    os.close(slave)
    try:
        screen = _read_all(master, proc).decode("utf-8", "replace")
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(master)
    assert proc.returncode == 0, screen
    assert out.decode().split() == [str(r.with_suffix(".txt")) for r in recordings]
    text = ANSI.sub("", screen).replace("\r\n", "\n")
    percents = [int(p) for p in re.findall(r"(\d+)%\|", text)]
    assert len({p for p in percents if 0 < p < 100}) >= 2, text  # it moved while transcribing
    assert percents[-1] == 100
    assert re.search(r"\d\d:\d\d:\d\d / \d\d:\d\d:\d\d audio, [\d.]+x realtime, about \d\d:\d\d:\d\d left", text)
    # Each line as it finally shows on screen (the part after the last carriage return).
    shown = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]
    logged = [line for line in shown if "transcribed " in line or ("model " in line and " loaded " in line)]
    assert len(logged) == 3, text  # the model line and one line per recording
    assert all(LOG_LINE.match(line) for line in logged), logged  # whole, never printed onto the bar
    assert not any("%|" in line for line in logged)


def test_plain_progress_lines_when_stderr_is_not_a_terminal(setup) -> None:
    config, recordings = setup
    proc = subprocess.run(_cmd(config, recordings), capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "%|" not in proc.stderr
    lines = proc.stderr.splitlines()
    steps = [int(m.group(1)) for line in lines if (m := re.match(r"progress: (\d+)%, ", line))]
    assert len({s for s in steps if s < 100}) >= 2 and steps[-1] == 100, proc.stderr
    assert steps == sorted(steps)
    assert "progress: written first.wav (1 of 2 files)" in lines
    assert "progress: written second.wav (2 of 2 files)" in lines
