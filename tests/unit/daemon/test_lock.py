"""One daemon per state folder."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from scribed.daemon.lock import LOCK_NAME, DaemonRunning, hold


def test_a_second_holder_is_refused_with_exit_status_4(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with hold(state):
        assert (state / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        assert stat.S_IMODE(os.stat(state / LOCK_NAME).st_mode) == 0o600
        with pytest.raises(DaemonRunning, match=f"pid {os.getpid()}") as caught, hold(state):
            pass
        assert caught.value.exit_code == 4
    with hold(state):  # released when the holder is done
        pass


def test_the_lock_file_is_made_private_when_it_exists(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text("")
    os.chmod(tmp_path / LOCK_NAME, 0o644)
    with hold(tmp_path):
        assert stat.S_IMODE(os.stat(tmp_path / LOCK_NAME).st_mode) == 0o600
