"""File primitives: durable folder fsync, overwriting and secure deletion."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

_CHUNK = 1 << 20


def _fsync_dir(path: Path) -> None:
    """Make a rename/unlink in ``path`` durable (best effort: some file systems refuse)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def overwrite_fd(fd: int, size: int, passes: int) -> None:
    """Overwrite bytes [0, size) of ``fd`` ``passes`` times: random on odd passes, zeros on even.

    Each pass is fsynced, so it reaches the device before the next one starts.
    """
    for n in range(1, passes + 1):
        block = os.urandom(_CHUNK) if n % 2 else bytes(_CHUNK)
        os.lseek(fd, 0, os.SEEK_SET)
        left = size
        while left > 0:
            written = os.write(fd, block[: min(left, _CHUNK)])
            left -= written
        os.fsync(fd)


def secure_delete(path: Path, passes: int) -> None:
    """Overwrite ``path`` ``passes`` times, truncate it to 0, fsync, then unlink it.

    ``passes=0`` is a plain unlink. A missing file is not an error. A symlink or a non-regular
    file (FIFO, socket) is unlinked without writing through it; a directory raises
    ``IsADirectoryError``. Other hard links to the file see the overwritten, then empty, content.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "secure_delete: is a directory", str(path))
    if passes > 0 and stat.S_ISREG(st.st_mode):
        flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            try:
                fd = os.open(path, flags)
            except PermissionError:
                if st.st_uid != os.getuid():
                    raise
                os.chmod(path, 0o600, follow_symlinks=False)  # a read-only recording we own
                fd = os.open(path, flags)
        except FileNotFoundError:
            return
        try:
            overwrite_fd(fd, os.fstat(fd).st_size, passes)
            os.ftruncate(fd, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    _fsync_dir(path.parent)


