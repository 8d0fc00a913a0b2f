"""One daemon per state folder: an exclusive ``flock`` held for the daemon's whole life.

Contract: :func:`hold` takes the lock on ``STATE_DIR/daemon.lock`` (created 0600) or raises
:class:`DaemonRunning` (exit status 4) naming the running daemon's pid. The kernel releases the
lock when the process ends, however it ends, so a crash never leaves a stale lock. The file
descriptor is close-on-exec: the worker does not inherit (and so cannot keep) the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from scribed.errors import ScribedError

LOCK_NAME = "daemon.lock"


class DaemonRunning(ScribedError):
    """Another daemon holds this state folder (exit status 4)."""

    exit_code = 4


@contextlib.contextmanager
def hold(state_dir: Path) -> Iterator[None]:
    """Hold the state folder's lock for the ``with`` block."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise DaemonRunning(f"another scribed daemon (pid {holder}) is already running with the state folder "
                                f"{state_dir}; stop it first, or give this one its own service.state_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
